//! Packets → bytes. Every packet body is written through a [`Sink`] twice:
//! once into a [`Count`] for the remaining length, then into the output, so
//! the two can never disagree and nothing is built in a scratch buffer.
//!
//! What the encoder writes is always canonical: minimal variable byte
//! integers, properties in identifier order, MQTT 5 acknowledgements and
//! DISCONNECT/AUTH in their shortest form. It does not check its input: the
//! caller passes values the target version can carry (strings of at most
//! 65,535 bytes — longer ones are cut there —, QoS 0 to 2, packet
//! identifiers non-zero where required).

use bytes::BytesMut;

use super::props::{self, Kind};
use super::{Ack, Connect, Packet, Properties, Version};

/// Where encoded bytes go: the output buffer, or a [`Count`] of them.
pub(super) trait Sink {
    /// Appends raw bytes.
    fn put(&mut self, b: &[u8]);

    /// One byte.
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    /// A big-endian two byte integer.
    fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    /// A big-endian four byte integer.
    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    /// A variable byte integer, in the fewest bytes ([MQTT-1.5.5-1] "The
    /// encoded value MUST use the minimum number of bytes necessary to
    /// represent the value").
    fn varint(&mut self, mut n: usize) {
        loop {
            let low = u8::try_from(n & 0x7F).unwrap_or(0);
            n >>= 7;
            if n == 0 {
                self.u8(low);
                return;
            }
            self.u8(low | 0x80);
        }
    }

    /// Binary data or a UTF-8 string: two byte length, bytes (at most
    /// 65,535 of them).
    fn binary(&mut self, b: &[u8]) {
        let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.u16(n);
        self.put(b.get(..usize::from(n)).unwrap_or(b));
    }
}

impl Sink for BytesMut {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// A [`Sink`] that only counts.
pub(super) struct Count(pub(super) usize);

impl Sink for Count {
    fn put(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
}

/// Encode any packet for `version` (3.1.1 encoding for V31/V311: reason
/// codes other than the 3.1.1 ones and properties are dropped; for V311 a
/// SUBACK failure is 0x80, CONNACK codes must already be 3.1.1 ones 0..=5;
/// a Disconnect/Auth is not sent to a 3.1.1 peer: encode nothing). A CONNECT
/// is encoded for its own `version` field (protocol name and level).
pub fn encode(p: &Packet, version: Version, out: &mut BytesMut) {
    let version = match p {
        Packet::Connect(c) => c.version,
        _ => version,
    };
    let Some(first) = first_byte(p, version) else {
        return;
    };
    let mut count = Count(0);
    body(p, version, &mut count);
    out.reserve(5 + count.0);
    out.u8(first);
    out.varint(count.0);
    body(p, version, out);
}

/// A PUBLISH's fixed header + variable header (topic, packet id, properties)
/// only, with remaining length covering `payload_len` more bytes the caller
/// appends itself (so a large payload goes out as a shared `Bytes`, no
/// copy). Returns the bytes written.
#[allow(clippy::too_many_arguments)]
pub fn encode_publish_head(
    out: &mut BytesMut,
    version: Version,
    dup: bool,
    qos: u8,
    retain: bool,
    topic: &[u8],
    packet_id: u16,
    props: &Properties,
    payload_len: usize,
) -> usize {
    let before = out.len();
    let head = publish_head_len(version, topic.len(), qos, props);
    out.reserve(5 + head);
    out.u8(publish_first_byte(dup, qos, retain));
    out.varint(head + payload_len);
    publish_head(out, version, topic, qos, packet_id, props);
    out.len() - before
}

/// The whole encoded size of a PUBLISH (for the peer's Maximum Packet Size
/// check).
pub fn publish_size(
    version: Version,
    topic_len: usize,
    qos: u8,
    props: &Properties,
    payload_len: usize,
) -> usize {
    let remaining = publish_head_len(version, topic_len, qos, props) + payload_len;
    1 + props::varint_len(remaining) + remaining
}

/// PUBLISH's first byte: type 3, DUP, QoS, RETAIN. DUP is only written with
/// QoS > 0 ([MQTT-3.3.1-2] "The DUP flag MUST be set to 0 for all QoS 0
/// messages").
fn publish_first_byte(dup: bool, qos: u8, retain: bool) -> u8 {
    let qos = qos & 3;
    0x30 | (u8::from(dup && qos > 0) << 3) | (qos << 1) | u8::from(retain)
}

/// The size of a PUBLISH variable header.
fn publish_head_len(version: Version, topic_len: usize, qos: u8, props: &Properties) -> usize {
    let mut n = 2 + topic_len.min(usize::from(u16::MAX));
    if qos & 3 > 0 {
        n += 2;
    }
    if version.is_v5() {
        n += props::encoded_len(props, Kind::Publish);
    }
    n
}

/// A PUBLISH variable header: topic, packet identifier (QoS > 0 only,
/// [MQTT-2.2.1-2] "A PUBLISH packet MUST NOT contain a Packet Identifier if
/// its QoS value is set to 0"), MQTT 5 properties.
fn publish_head<S: Sink>(
    s: &mut S,
    version: Version,
    topic: &[u8],
    qos: u8,
    packet_id: u16,
    props: &Properties,
) {
    s.binary(topic);
    if qos & 3 > 0 {
        s.u16(packet_id);
    }
    if version.is_v5() {
        props::write(props, Kind::Publish, s);
    }
}

/// The fixed header's first byte, or None when `version` has no such packet.
fn first_byte(p: &Packet, version: Version) -> Option<u8> {
    Some(match p {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => publish_first_byte(p.dup, p.qos, p.retain),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        // [MQTT-3.6.1-1] PUBREL, [MQTT-3.8.1-1] SUBSCRIBE, [MQTT-3.10.1-1]
        // UNSUBSCRIBE: "Bits 3,2,1 and 0 of the fixed header ... MUST be set
        // to 0,0,1 and 0 respectively".
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        // 3.1.1 has AUTH not at all, and DISCONNECT only from the client,
        // without a body (a server must not send one: the session's rule).
        Packet::Auth(_) if !version.is_v5() => return None,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    })
}

/// Everything after the fixed header.
fn body<S: Sink>(p: &Packet, v: Version, s: &mut S) {
    match p {
        Packet::Connect(c) => connect(c, s),
        Packet::ConnAck(c) => {
            s.u8(u8::from(c.session_present));
            s.u8(c.code);
            if v.is_v5() {
                props::write(&c.props, Kind::ConnAck, s);
            }
        }
        Packet::Publish(p) => {
            publish_head(s, v, &p.topic, p.qos, p.packet_id, &p.props);
            s.put(&p.payload);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ack(a, v, s)
        }
        Packet::Subscribe(sub) => {
            s.u16(sub.packet_id);
            if v.is_v5() {
                props::write(&sub.props, Kind::Subscribe, s);
            }
            for (filter, o) in &sub.filters {
                s.binary(filter);
                let mut b = o.qos & 3;
                if v.is_v5() {
                    b |= u8::from(o.no_local) << 2;
                    b |= u8::from(o.retain_as_published) << 3;
                    b |= (o.retain_handling & 3) << 4;
                }
                s.u8(b);
            }
        }
        Packet::SubAck(a) => {
            s.u16(a.packet_id);
            if v.is_v5() {
                props::write(&a.props, Kind::SubAck, s);
                s.put(&a.codes);
            } else {
                // [MQTT-3.9.3-2] "SUBACK return codes other than 0x00, 0x01,
                // 0x02 and 0x80 are reserved and MUST NOT be used".
                for &c in &a.codes {
                    s.u8(if c <= 2 { c } else { 0x80 });
                }
            }
        }
        Packet::Unsubscribe(u) => {
            s.u16(u.packet_id);
            if v.is_v5() {
                props::write(&u.props, Kind::Unsubscribe, s);
            }
            for filter in &u.filters {
                s.binary(filter);
            }
        }
        Packet::UnsubAck(a) => {
            s.u16(a.packet_id);
            if v.is_v5() {
                props::write(&a.props, Kind::UnsubAck, s);
                s.put(&a.codes);
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) if v.is_v5() => code_and_props(d.code, &d.props, Kind::Disconnect, s),
        Packet::Disconnect(_) => {}
        Packet::Auth(a) => code_and_props(a.code, &a.props, Kind::Auth, s),
    }
}

/// CONNECT's variable header and payload, for its own version.
fn connect<S: Sink>(c: &Connect, s: &mut S) {
    let v = c.version;
    s.binary(if v == Version::V31 {
        b"MQIsdp"
    } else {
        b"MQTT"
    });
    s.u8(v.level());
    // [MQTT-3.1.2-22] (3.1.1) "If the User Name Flag is set to 0, the
    // Password Flag MUST be set to 0": a password without a user name is
    // left out before MQTT 5.
    let password = match (&c.password, &c.username) {
        (Some(_), None) if !v.is_v5() => None,
        (pw, _) => pw.as_ref(),
    };
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos & 3) << 3) | (u8::from(w.retain) << 5);
    }
    if password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    s.u8(flags);
    s.u16(c.keep_alive);
    if v.is_v5() {
        props::write(&c.props, Kind::Connect, s);
    }
    s.binary(&c.client_id);
    if let Some(w) = &c.will {
        if v.is_v5() {
            props::write(&w.props, Kind::Will, s);
        }
        s.binary(&w.topic);
        s.binary(&w.payload);
    }
    if let Some(u) = &c.username {
        s.binary(u);
    }
    if let Some(p) = password {
        s.binary(p);
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: the packet identifier; in MQTT 5 the
/// reason code and properties, left out when they are the defaults
/// (§3.4.2.1: "The Reason Code and Property Length can be omitted if the
/// Reason Code is 0x00 (Success) and there are no Properties").
fn ack<S: Sink>(a: &Ack, v: Version, s: &mut S) {
    s.u16(a.packet_id);
    if v.is_v5() {
        code_and_props(a.code, &a.props, Kind::Ack, s);
    }
}

/// A reason code and properties that may be left out: nothing for code 0
/// without properties, the code alone without properties.
fn code_and_props<S: Sink>(code: u8, p: &Properties, kind: Kind, s: &mut S) {
    let n = props::body_len(p, kind);
    if code == 0 && n == 0 {
        return;
    }
    s.u8(code);
    if n > 0 {
        props::write(p, kind, s);
    }
}
