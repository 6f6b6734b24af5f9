//! Entry point of the `mqtt` cargo-fuzz target (and of the test that
//! replays its corpus). It checks the codec's invariants and panics only
//! when one is broken.

#![allow(clippy::expect_used, clippy::panic)]

use bytes::BytesMut;

use super::{
    decode, encode, encode_publish_head, publish_size, reason, Packet, Version,
    MAX_REMAINING_LENGTH,
};

/// The first input byte picks the connection's version (bits 0-1: none yet,
/// 3.1.1, 5, none yet) and the maximum packet size (bits 2-3); the rest is
/// the byte stream from the peer. Decodes packets until an error or need
/// more; a CONNECT read before any version sets it, as a session would.
/// For each packet: nothing is consumed on Ok(None) and every shorter
/// prefix of it is Ok(None); encoding it for the same version gives no more
/// bytes than it came in (encoding is canonical), and decoding those gives
/// the same packet back, which encodes to the same bytes again;
/// `publish_size` and `encode_publish_head` agree with `encode`.
pub fn fuzz_mqtt(data: &[u8]) {
    let Some((&select, input)) = data.split_first() else {
        return;
    };
    let mut version = match select & 3 {
        1 => Some(Version::V311),
        2 => Some(Version::V5),
        _ => None,
    };
    let max_size = match (select >> 2) & 3 {
        0 => MAX_REMAINING_LENGTH + 5,
        1 => 16,
        2 => 128,
        _ => 4096,
    };
    let mut buf = BytesMut::from(input);
    let mut at = 0;
    loop {
        let before = buf.len();
        match decode(&mut buf, version, max_size) {
            Ok(Some(p)) => {
                let used = before - buf.len();
                let raw = input.get(at..at + used).expect("decode consumed input");
                at += used;
                check_packet(&p, raw, version, max_size);
                if let (None, Packet::Connect(c)) = (version, &p) {
                    version = Some(c.version);
                }
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) must not consume");
                break;
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.reason,
                        reason::MALFORMED
                            | reason::PROTOCOL_ERROR
                            | reason::PACKET_TOO_LARGE
                            | reason::UNSUPPORTED_VERSION
                    ),
                    "unexpected reason {e:?}"
                );
                break;
            }
        }
    }
}

/// The invariants of one decoded packet `p`, read from `raw`.
fn check_packet(p: &Packet, raw: &[u8], version: Option<Version>, max_size: usize) {
    assert!(raw.len() >= 2 && raw.len() <= max_size);
    for cut in [raw.len() - 1, raw.len() / 2, 1] {
        let mut part = BytesMut::from(raw.get(..cut).expect("cut inside"));
        assert_eq!(
            decode(&mut part, version, max_size),
            Ok(None),
            "a prefix of {} bytes of a {}-byte packet",
            cut,
            raw.len()
        );
        assert_eq!(part.len(), cut);
    }

    let (enc_version, dec_version) = match p {
        Packet::Connect(c) => (c.version, None),
        _ => {
            let v = version.expect("only CONNECT decodes without a version");
            (v, Some(v))
        }
    };
    let mut enc = BytesMut::new();
    encode(p, enc_version, &mut enc);
    if enc.is_empty() {
        assert!(
            matches!(p, Packet::Disconnect(_) | Packet::Auth(_)) && !enc_version.is_v5(),
            "{} encodes to nothing",
            p.name()
        );
        return;
    }
    assert!(
        enc.len() <= raw.len(),
        "{} re-encoded to {} bytes from {}",
        p.name(),
        enc.len(),
        raw.len()
    );
    let first = enc.clone().freeze();
    let again = decode(&mut enc, dec_version, max_size)
        .expect("re-encoded packet decodes")
        .expect("re-encoded packet is whole");
    assert!(enc.is_empty(), "re-encoded packet has trailing bytes");
    assert_eq!(&again, p);
    let mut second = BytesMut::new();
    encode(&again, enc_version, &mut second);
    assert_eq!(second, first);

    if let Packet::Publish(m) = p {
        let size = publish_size(enc_version, m.topic.len(), m.qos, &m.props, m.payload.len());
        assert_eq!(size, first.len(), "publish_size");
        let mut head = BytesMut::new();
        let n = encode_publish_head(
            &mut head,
            enc_version,
            m.dup,
            m.qos,
            m.retain,
            &m.topic,
            m.packet_id,
            &m.props,
            m.payload.len(),
        );
        assert_eq!(n, head.len());
        head.extend_from_slice(&m.payload);
        assert_eq!(head, first, "encode_publish_head");
    }
}
