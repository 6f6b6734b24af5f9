//! Bytes → packets. [`decode`] checks the fixed header as soon as its bytes
//! are there (type, flags, size), waits for the whole packet, then reads it
//! with a bounds-checked [`Reader`]. Every rule the specs put on a packet's
//! bytes alone is checked here; each check quotes its normative statement.

use bytes::{Buf, BytesMut};

use super::props::{self, Kind};
use super::read::{Reader, Result};
use super::reason;
use super::{
    Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, Packet, Properties, Publish, SubAck,
    SubOptions, Subscribe, UnsubAck, Unsubscribe, Version, Will,
};

/// Only the fixed header: Ok(Some((type_and_flags byte, header_len,
/// remaining_len))) / Ok(None) incomplete / Err malformed varint (5th byte).
pub fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for (i, &b) in rest.iter().take(4).enumerate() {
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((first, i + 2, len)));
        }
    }
    if rest.len() >= 4 {
        // MQTT 5.0 §1.5.5 / 3.1.1 §2.2.3: at most four bytes.
        return Err(DecodeError::malformed(
            "remaining length longer than 4 bytes",
        ));
    }
    Ok(None)
}

/// Decode one packet from the front of `buf`. `version`: None before
/// CONNECT (then only a CONNECT is accepted: anything else is a protocol
/// error), else the connection's version (3.1 and 3.1.1 share the wire
/// format except the CONNECT header; MQTT 5 adds properties and reason
/// codes). A CONNECT is read per the version it names, whatever `version`
/// says (a second CONNECT is the session's to refuse). `max_size`: the
/// largest whole packet (fixed header included) accepted; larger is
/// Err(0x95) as soon as the fixed header says so (before the rest arrives).
/// Ok(None): incomplete, nothing consumed. Ok(Some(p)): the packet's bytes
/// were split off the front of `buf` and frozen, and p's Bytes fields are
/// slices of them (no copy). After an Err the connection must be closed
/// (`buf` may or may not have lost the bad packet).
pub fn decode(
    buf: &mut BytesMut,
    version: Option<Version>,
    max_size: usize,
) -> Result<Option<Packet>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, version)?;
    let Some((_, header_len, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    if header_len.saturating_add(remaining) > max_size {
        return Err(DecodeError {
            reason: reason::PACKET_TOO_LARGE,
            text: "packet larger than the maximum packet size",
        });
    }
    if buf.len() < header_len + remaining {
        return Ok(None);
    }
    let mut bytes = buf.split_to(header_len + remaining).freeze();
    bytes.advance(header_len);
    let r = Reader::new(bytes);
    // Only a CONNECT gets here without a version.
    let v = version.unwrap_or(Version::V311);
    let flags = first & 0x0F;
    Ok(Some(match first >> 4 {
        1 => Packet::Connect(Box::new(connect(r)?)),
        2 => Packet::ConnAck(connack(r, v)?),
        3 => Packet::Publish(publish(r, v, flags)?),
        4 => Packet::PubAck(ack(r, v, reason::valid_puback)?),
        5 => Packet::PubRec(ack(r, v, reason::valid_puback)?),
        6 => Packet::PubRel(ack(r, v, reason::valid_pubrel)?),
        7 => Packet::PubComp(ack(r, v, reason::valid_pubrel)?),
        8 => Packet::Subscribe(subscribe(r, v)?),
        9 => Packet::SubAck(suback(r, v)?),
        10 => Packet::Unsubscribe(unsubscribe(r, v)?),
        11 => Packet::UnsubAck(unsuback(r, v)?),
        12 => {
            r.end()?;
            Packet::PingReq
        }
        13 => {
            r.end()?;
            Packet::PingResp
        }
        14 => {
            let (code, props) = code_and_props(r, v, Kind::Disconnect, reason::valid_disconnect)?;
            Packet::Disconnect(Disconnect { code, props })
        }
        _ => {
            let (code, props) = code_and_props(r, v, Kind::Auth, reason::valid_auth)?;
            Packet::Auth(Auth { code, props })
        }
    }))
}

/// The checks the first byte alone allows: packet type and flags.
fn check_first_byte(first: u8, version: Option<Version>) -> Result<()> {
    let (kind, flags) = (first >> 4, first & 0x0F);
    // [MQTT-3.1.0-1] "After a Network Connection is established by a Client
    // to a Server, the first Packet sent from the Client to the Server MUST
    // be a CONNECT Packet".
    if version.is_none() && kind != 1 {
        return Err(DecodeError::protocol("first packet is not CONNECT"));
    }
    let v5 = version.is_some_and(Version::is_v5);
    match kind {
        0 => return Err(DecodeError::malformed("reserved packet type 0")),
        15 if !v5 => return Err(DecodeError::malformed("AUTH before MQTT 5")),
        _ => {}
    }
    if kind == 3 {
        let qos = (flags >> 1) & 3;
        // [MQTT-3.3.1-4] "A PUBLISH Packet MUST NOT have both QoS bits set to
        // 1. If a Server or Client receives a PUBLISH Packet which has both
        // QoS bits set to 1 it MUST close the Network Connection" (MQTT 5: a
        // Malformed Packet).
        if qos == 3 {
            return Err(DecodeError::malformed("PUBLISH with QoS 3"));
        }
        // [MQTT-3.3.1-2] "The DUP flag MUST be set to 0 for all QoS 0
        // messages".
        if qos == 0 && flags & 0x08 != 0 {
            return Err(DecodeError::malformed("PUBLISH QoS 0 with DUP"));
        }
        return Ok(());
    }
    // [MQTT-2.2.2-1] (MQTT 5: [MQTT-2.1.3-1]) "Where a flag bit is marked as
    // "Reserved" in Table 2.2 - Flag Bits, it is reserved for future use and
    // MUST be set to the value listed in that table"; [MQTT-2.2.2-2] "If
    // invalid flags are received, the receiver MUST close the Network
    // Connection" (MQTT 5: "it is a Malformed Packet"). PUBREL, SUBSCRIBE
    // and UNSUBSCRIBE have 0b0010 ([MQTT-3.6.1-1], [MQTT-3.8.1-1],
    // [MQTT-3.10.1-1]), every other type 0.
    let want = if matches!(kind, 6 | 8 | 10) { 2 } else { 0 };
    if flags != want {
        return Err(DecodeError::malformed("reserved fixed header flags"));
    }
    Ok(())
}

/// A packet identifier that must not be 0: [MQTT-2.3.1-1] (3.1.1)
/// "SUBSCRIBE, UNSUBSCRIBE, and PUBLISH (in cases where QoS > 0) Control
/// Packets MUST contain a non-zero 16-bit Packet Identifier"; MQTT 5
/// [MQTT-2.2.1-3]; an acknowledgement carries the identifier it answers, so
/// 0 is never valid there either.
fn packet_id(r: &mut Reader) -> Result<u16> {
    match r.u16()? {
        0 => Err(DecodeError::protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// The properties of an MQTT 5 packet; none before MQTT 5.
fn props_for(r: &mut Reader, v: Version, kind: Kind) -> Result<Properties> {
    if v.is_v5() {
        props::decode(r, kind)
    } else {
        Ok(Properties::default())
    }
}

fn connect(mut r: Reader) -> Result<Connect> {
    let name = r.binary()?;
    let level = r.u8()?;
    // [MQTT-3.1.2-1] "If the protocol name is incorrect the Server MAY
    // disconnect the Client"; [MQTT-3.1.2-2] "The Server MUST respond to the
    // CONNECT Packet with a CONNACK return code 0x01 (unacceptable protocol
    // level) and then disconnect the Client if the Protocol Level is not
    // supported by the Server" (MQTT 5: reason 0x84).
    let version = match (&name[..], level) {
        (b"MQIsdp", 3) => Version::V31,
        (b"MQTT", 4) => Version::V311,
        (b"MQTT", 5) => Version::V5,
        (b"MQIsdp" | b"MQTT", _) => {
            return Err(DecodeError {
                reason: reason::UNSUPPORTED_VERSION,
                text: "unsupported protocol level",
            })
        }
        _ => return Err(DecodeError::malformed("unknown protocol name")),
    };
    let v5 = version.is_v5();
    let flags = r.u8()?;
    // [MQTT-3.1.2-3] "The Server MUST validate that the reserved flag in the
    // CONNECT Control Packet is set to zero and disconnect the Client if it
    // is not zero" (MQTT 5: a Malformed Packet).
    if flags & 0x01 != 0 {
        return Err(DecodeError::malformed("CONNECT reserved flag set"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 3;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    // 3.1.1 [MQTT-3.1.2-13] "If the Will Flag is set to 0, then the Will QoS
    // MUST be set to 0"; [MQTT-3.1.2-15] "If the Will Flag is set to 0, then
    // the Will Retain Flag MUST be set to 0" (MQTT 5: [MQTT-3.1.2-11],
    // [MQTT-3.1.2-13]).
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::malformed("will QoS or retain without will"));
    }
    // 3.1.1 [MQTT-3.1.2-14] "If the Will Flag is set to 1, the value of Will
    // QoS can be 0, 1, or 2. It MUST NOT be 3" (MQTT 5: [MQTT-3.1.2-12]).
    if will_qos == 3 {
        return Err(DecodeError::malformed("will QoS 3"));
    }
    // 3.1.1 [MQTT-3.1.2-22] "If the User Name Flag is set to 0, the Password
    // Flag MUST be set to 0" (MQTT 5 lets a password come alone).
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let props = props_for(&mut r, version, Kind::Connect)?;
    // [MQTT-3.1.3-4] (MQTT 5: [MQTT-3.1.3-3]) the Client Identifier "MUST
    // be a UTF-8 encoded string"; an empty one is the session's to accept
    // or refuse.
    let client_id = r.utf8()?;
    let will = if will_flag {
        let props = props_for(&mut r, version, Kind::Will)?;
        // [MQTT-3.1.3-10] (MQTT 5: [MQTT-3.1.3-11]) "The Will Topic MUST be
        // a UTF-8 encoded string".
        let topic = r.utf8()?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            props,
        })
    } else {
        None
    };
    // [MQTT-3.1.3-11] (MQTT 5: [MQTT-3.1.3-12]) "The User Name MUST be a
    // UTF-8 encoded string"; the password is binary data.
    let username = if username_flag { Some(r.utf8()?) } else { None };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    r.end()?;
    Ok(Connect {
        version,
        client_id,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        username,
        password,
        will,
        props,
    })
}

fn connack(mut r: Reader, v: Version) -> Result<ConnAck> {
    let flags = r.u8()?;
    // 3.1.1 §3.2.2.1 / MQTT 5 §3.2.2.1: "Bits 7-1 are reserved and MUST be
    // set to 0" (MQTT 5: "If any of the bits are set, it is a Malformed
    // Packet").
    if flags & 0xFE != 0 {
        return Err(DecodeError::malformed("CONNACK reserved flags set"));
    }
    let session_present = flags & 1 != 0;
    let code = r.u8()?;
    let known = if v.is_v5() {
        reason::valid_connack(code)
    } else {
        // 3.1.1 Table 3.1: return codes 6-255 are "Reserved for future use".
        code <= 5
    };
    if !known {
        return Err(DecodeError::protocol("unknown CONNACK code"));
    }
    // 3.1.1 [MQTT-3.2.2-4] "If a server sends a CONNACK packet containing a
    // non-zero return code it MUST set Session Present to 0" (MQTT 5
    // [MQTT-3.2.2-6]: a reason code of 128 or greater).
    if session_present && code != 0 {
        return Err(DecodeError::protocol("session present with an error code"));
    }
    let props = props_for(&mut r, v, Kind::ConnAck)?;
    r.end()?;
    Ok(ConnAck {
        session_present,
        code,
        props,
    })
}

fn publish(mut r: Reader, v: Version, flags: u8) -> Result<Publish> {
    let qos = (flags >> 1) & 3;
    // [MQTT-3.3.2-1] "The Topic Name MUST be present as the first field in
    // the PUBLISH Packet Variable header. It MUST be a UTF-8 encoded string"
    // (whether it is a valid topic name — no wildcards, non-empty without a
    // topic alias — is the session's to answer, see `valid_topic_name`).
    let topic = r.utf8()?;
    let packet_id = if qos > 0 { packet_id(&mut r)? } else { 0 };
    let props = props_for(&mut r, v, Kind::Publish)?;
    Ok(Publish {
        dup: flags & 0x08 != 0,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        props,
        payload: r.rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. 3.1.1: the packet identifier alone.
/// MQTT 5 (§3.4.2.1): "The Reason Code and Property Length can be omitted
/// if the Reason Code is 0x00 (Success) and there are no Properties. In
/// this case the PUBACK has a Remaining Length of 2"; "If the Remaining
/// Length is less than 4 there is no Property Length and the value of 0 is
/// used".
fn ack(mut r: Reader, v: Version, valid: fn(u8) -> bool) -> Result<Ack> {
    let packet_id = packet_id(&mut r)?;
    let (code, props) = code_and_props(r, v, Kind::Ack, valid)?;
    Ok(Ack {
        packet_id,
        code,
        props,
    })
}

/// A reason code and properties that may be left out (MQTT 5 acks,
/// DISCONNECT, AUTH); nothing at all before MQTT 5. A reason code not
/// listed for the packet is a protocol error (e.g. [MQTT-3.15.2-1] "The
/// sender of the AUTH Packet MUST use one of the Authenticate Reason
/// Codes").
fn code_and_props(
    mut r: Reader,
    v: Version,
    kind: Kind,
    valid: fn(u8) -> bool,
) -> Result<(u8, Properties)> {
    if !v.is_v5() || r.is_empty() {
        r.end()?;
        return Ok((0, Properties::default()));
    }
    let code = r.u8()?;
    if !valid(code) {
        return Err(DecodeError::protocol(
            "reason code not valid for the packet",
        ));
    }
    let props = if r.is_empty() {
        Properties::default()
    } else {
        props::decode(&mut r, kind)?
    };
    r.end()?;
    Ok((code, props))
}

fn subscribe(mut r: Reader, v: Version) -> Result<Subscribe> {
    let packet_id = packet_id(&mut r)?;
    let props = props_for(&mut r, v, Kind::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        // [MQTT-3.8.3-1] "The Topic Filters in a SUBSCRIBE packet payload
        // MUST be UTF-8 encoded strings"; whether each is a valid filter is
        // answered per filter in the SUBACK.
        let filter = r.utf8()?;
        let b = r.u8()?;
        let qos = b & 3;
        let options = if v.is_v5() {
            // [MQTT-3.8.3-5] "The Server MUST treat a SUBSCRIBE packet as
            // malformed if any of Reserved bits in the Payload are non-zero".
            if b & 0xC0 != 0 {
                return Err(DecodeError::malformed("subscription options reserved bits"));
            }
            // §3.8.3.1 "It is a Protocol Error if the Maximum QoS field has
            // the value 3"; "It is a Protocol Error to send a Retain
            // Handling value of 3".
            let retain_handling = (b >> 4) & 3;
            if qos == 3 || retain_handling == 3 {
                return Err(DecodeError::protocol(
                    "subscription QoS or retain handling 3",
                ));
            }
            let no_local = b & 0x04 != 0;
            // [MQTT-3.8.3-4] "It is a Protocol Error to set the No Local bit
            // to 1 on a Shared Subscription".
            if no_local && filter.starts_with(super::topic::SHARE_PREFIX) {
                return Err(DecodeError::protocol("no local on a shared subscription"));
            }
            SubOptions {
                qos,
                no_local,
                retain_as_published: b & 0x08 != 0,
                retain_handling,
            }
        } else {
            // 3.1.1 [MQTT-3-8.3-4] "The Server MUST treat a SUBSCRIBE packet
            // as malformed and close the Network Connection if any of
            // Reserved bits in the payload are non-zero, or QoS is not 0,1
            // or 2".
            if b & 0xFC != 0 || qos == 3 {
                return Err(DecodeError::malformed("SUBSCRIBE QoS byte invalid"));
            }
            SubOptions {
                qos,
                ..SubOptions::default()
            }
        };
        filters.push((filter, options));
    }
    // [MQTT-3.8.3-3] (3.1.1) "The payload of a SUBSCRIBE packet MUST contain
    // at least one Topic Filter / QoS pair. A SUBSCRIBE packet with no
    // payload is a protocol violation" (MQTT 5 [MQTT-3.8.3-2]).
    if filters.is_empty() {
        return Err(DecodeError::protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        props,
        filters,
    })
}

fn suback(mut r: Reader, v: Version) -> Result<SubAck> {
    let packet_id = packet_id(&mut r)?;
    let props = props_for(&mut r, v, Kind::SubAck)?;
    let codes = r.rest().to_vec();
    let valid = if v.is_v5() {
        codes.iter().all(|&c| reason::valid_suback(c))
    } else {
        // [MQTT-3.9.3-2] "SUBACK return codes other than 0x00, 0x01, 0x02
        // and 0x80 are reserved and MUST NOT be used".
        codes.iter().all(|&c| matches!(c, 0 | 1 | 2 | 0x80))
    };
    if !valid {
        return Err(DecodeError::protocol("SUBACK code not valid"));
    }
    // one code per filter of the SUBSCRIBE, which has at least one
    if codes.is_empty() {
        return Err(DecodeError::protocol("SUBACK without codes"));
    }
    Ok(SubAck {
        packet_id,
        props,
        codes,
    })
}

fn unsubscribe(mut r: Reader, v: Version) -> Result<Unsubscribe> {
    let packet_id = packet_id(&mut r)?;
    let props = props_for(&mut r, v, Kind::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        // [MQTT-3.10.3-1] "The Topic Filters in an UNSUBSCRIBE packet MUST be
        // UTF-8 encoded strings".
        filters.push(r.utf8()?);
    }
    // [MQTT-3.10.3-2] "The Payload of an UNSUBSCRIBE packet MUST contain at
    // least one Topic Filter. An UNSUBSCRIBE packet with no payload is a
    // protocol violation".
    if filters.is_empty() {
        return Err(DecodeError::protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        props,
        filters,
    })
}

fn unsuback(mut r: Reader, v: Version) -> Result<UnsubAck> {
    let packet_id = packet_id(&mut r)?;
    if !v.is_v5() {
        r.end()?;
        return Ok(UnsubAck {
            packet_id,
            props: Properties::default(),
            codes: Vec::new(),
        });
    }
    let props = props::decode(&mut r, Kind::UnsubAck)?;
    let codes = r.rest().to_vec();
    if !codes.iter().all(|&c| reason::valid_unsuback(c)) {
        return Err(DecodeError::protocol("UNSUBACK code not valid"));
    }
    if codes.is_empty() {
        return Err(DecodeError::protocol("UNSUBACK without codes"));
    }
    Ok(UnsubAck {
        packet_id,
        props,
        codes,
    })
}
