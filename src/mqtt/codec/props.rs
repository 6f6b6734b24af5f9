//! MQTT 5 properties (MQTT 5.0 §2.2.2): a property length (variable byte
//! integer), then properties, each an identifier (variable byte integer) and
//! a value of the identifier's type. Which identifiers a packet may carry is
//! fixed per packet type (§2.2.2.2 Table 2-4): "A Control Packet which
//! contains an Identifier which is not valid for its packet type, or
//! contains a value not of the specified data type, is a Malformed Packet."

use bytes::Bytes;

use super::encode::{Count, Sink};
use super::read::{Reader, Result};
use super::topic::valid_topic_name;
use super::DecodeError;

/// MQTT 5 properties; absent = None / empty. Used for every packet type
/// (only the ones the spec allows for that packet are decoded/encoded; a
/// property not allowed in that packet is malformed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01 Payload Format Indicator: 0 unspecified bytes, 1 UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type (UTF-8).
    pub content_type: Option<Bytes>,
    /// 0x08 Response Topic (UTF-8 topic name).
    pub response_topic: Option<Bytes>,
    /// 0x09 Correlation Data (binary).
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifiers (1 to 268,435,455; several in a
    /// PUBLISH to a client, at most one in a SUBSCRIBE).
    pub subscription_ids: Vec<u32>,
    /// 0x11 Session Expiry Interval, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier (UTF-8).
    pub assigned_client_id: Option<Bytes>,
    /// 0x13 Server Keep Alive, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method (UTF-8).
    pub authentication_method: Option<Bytes>,
    /// 0x16 Authentication Data (binary).
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information, 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x18 Will Delay Interval, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information, 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x1A Response Information (UTF-8).
    pub response_information: Option<Bytes>,
    /// 0x1C Server Reference (UTF-8).
    pub server_reference: Option<Bytes>,
    /// 0x1F Reason String (UTF-8).
    pub reason_string: Option<Bytes>,
    /// 0x21 Receive Maximum (non-zero).
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias (non-zero).
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS, 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available, 0 or 1.
    pub retain_available: Option<u8>,
    /// 0x26 User Properties (UTF-8 name, value), in order; may repeat.
    pub user_properties: Vec<(Bytes, Bytes)>,
    /// 0x27 Maximum Packet Size (non-zero).
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available, 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 Subscription Identifiers Available, 0 or 1.
    pub subscription_ids_available: Option<u8>,
    /// 0x2A Shared Subscription Available, 0 or 1.
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// Which property block is being read or written: what the spec allows
/// differs by packet (and the will's properties are their own set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Connect,
    ConnAck,
    Publish,
    Will,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl Kind {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

const CONNECT: u16 = 1 << (Kind::Connect as u16);
const CONNACK: u16 = 1 << (Kind::ConnAck as u16);
const PUBLISH: u16 = 1 << (Kind::Publish as u16);
const WILL: u16 = 1 << (Kind::Will as u16);
const ACK: u16 = 1 << (Kind::Ack as u16);
const SUBSCRIBE: u16 = 1 << (Kind::Subscribe as u16);
const SUBACK: u16 = 1 << (Kind::SubAck as u16);
const UNSUBSCRIBE: u16 = 1 << (Kind::Unsubscribe as u16);
const UNSUBACK: u16 = 1 << (Kind::UnsubAck as u16);
const DISCONNECT: u16 = 1 << (Kind::Disconnect as u16);
const AUTH: u16 = 1 << (Kind::Auth as u16);

/// The property blocks identifier `id` may appear in (MQTT 5.0 Table 2-4);
/// 0 for an unknown identifier.
fn allowed(id: u32) -> u16 {
    match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => PUBLISH | WILL,
        0x0B => PUBLISH | SUBSCRIBE,
        0x11 => CONNECT | CONNACK | DISCONNECT,
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => CONNACK,
        0x15 | 0x16 => CONNECT | CONNACK | AUTH,
        0x17 | 0x19 => CONNECT,
        0x18 => WILL,
        0x1C => CONNACK | DISCONNECT,
        0x1F => CONNACK | ACK | SUBACK | UNSUBACK | DISCONNECT | AUTH,
        0x21 | 0x22 | 0x27 => CONNECT | CONNACK,
        0x23 => PUBLISH,
        0x26 => {
            CONNECT
                | CONNACK
                | PUBLISH
                | WILL
                | ACK
                | SUBSCRIBE
                | SUBACK
                | UNSUBSCRIBE
                | UNSUBACK
                | DISCONNECT
                | AUTH
        }
        _ => 0,
    }
}

/// Stores a property that may appear once: "It is a Protocol Error to
/// include the <property> more than once" (every property but User Property
/// and, in PUBLISH, Subscription Identifier).
fn once<T>(slot: &mut Option<T>, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(DecodeError::protocol("property given more than once"));
    }
    *slot = Some(value);
    Ok(())
}

/// A byte property whose only values are 0 and 1 ("It is a Protocol Error
/// ... to have a value other than 0 or 1": Request Problem Information,
/// Request Response Information, Maximum QoS, Retain Available, Wildcard /
/// Subscription Identifier / Shared Subscription Available; Payload Format
/// Indicator has only the two values defined too).
fn flag(r: &mut Reader) -> Result<u8> {
    let v = r.u8()?;
    if v > 1 {
        return Err(DecodeError::protocol("property value other than 0 or 1"));
    }
    Ok(v)
}

/// A two byte property that must not be 0 (Receive Maximum: "It is a
/// Protocol Error ... for it to have the value 0"; Topic Alias: "A Topic
/// Alias of 0 is not permitted" [MQTT-3.3.2-8]).
fn nonzero_u16(r: &mut Reader) -> Result<u16> {
    match r.u16()? {
        0 => Err(DecodeError::protocol("property value 0 not allowed")),
        v => Ok(v),
    }
}

/// Reads a property block (length and properties) for a packet of `kind`.
pub(super) fn decode(r: &mut Reader, kind: Kind) -> Result<Properties> {
    let len = r.varint()?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > r.remaining() {
        return Err(DecodeError::malformed("property length past the packet"));
    }
    let mut r = Reader::new(r.take(len)?);
    let mut p = Properties::default();
    while !r.is_empty() {
        let id = r.varint()?;
        let mask = allowed(id);
        if mask == 0 {
            return Err(DecodeError::malformed("unknown property identifier"));
        }
        if mask & kind.bit() == 0 {
            return Err(DecodeError::malformed(
                "property not allowed in this packet",
            ));
        }
        match id {
            0x01 => once(&mut p.payload_format_indicator, flag(&mut r)?)?,
            0x02 => once(&mut p.message_expiry_interval, r.u32()?)?,
            0x03 => once(&mut p.content_type, r.utf8()?)?,
            0x08 => {
                let t = r.utf8()?;
                // [MQTT-3.3.2-14] "The Response Topic MUST NOT contain
                // wildcard characters" (and a topic name is never empty).
                if !valid_topic_name(&t) {
                    return Err(DecodeError::protocol("response topic not a topic name"));
                }
                once(&mut p.response_topic, t)?;
            }
            0x09 => once(&mut p.correlation_data, r.binary()?)?,
            0x0B => {
                let v = r.varint()?;
                // "It is a Protocol Error if the Subscription Identifier
                // has a value of 0" (§3.8.2.1.2).
                if v == 0 {
                    return Err(DecodeError::protocol("subscription identifier 0"));
                }
                // "It is a Protocol Error to include the Subscription
                // Identifier more than once" (in SUBSCRIBE; a PUBLISH to a
                // client carries one per matching subscription).
                if kind == Kind::Subscribe && !p.subscription_ids.is_empty() {
                    return Err(DecodeError::protocol("property given more than once"));
                }
                p.subscription_ids.push(v);
            }
            0x11 => once(&mut p.session_expiry_interval, r.u32()?)?,
            0x12 => once(&mut p.assigned_client_id, r.utf8()?)?,
            0x13 => once(&mut p.server_keep_alive, r.u16()?)?,
            0x15 => once(&mut p.authentication_method, r.utf8()?)?,
            0x16 => once(&mut p.authentication_data, r.binary()?)?,
            0x17 => once(&mut p.request_problem_information, flag(&mut r)?)?,
            0x18 => once(&mut p.will_delay_interval, r.u32()?)?,
            0x19 => once(&mut p.request_response_information, flag(&mut r)?)?,
            0x1A => once(&mut p.response_information, r.utf8()?)?,
            0x1C => once(&mut p.server_reference, r.utf8()?)?,
            0x1F => once(&mut p.reason_string, r.utf8()?)?,
            0x21 => once(&mut p.receive_maximum, nonzero_u16(&mut r)?)?,
            0x22 => once(&mut p.topic_alias_maximum, r.u16()?)?,
            0x23 => once(&mut p.topic_alias, nonzero_u16(&mut r)?)?,
            0x24 => once(&mut p.maximum_qos, flag(&mut r)?)?,
            0x25 => once(&mut p.retain_available, flag(&mut r)?)?,
            0x26 => {
                let name = r.utf8()?;
                let value = r.utf8()?;
                p.user_properties.push((name, value));
            }
            0x27 => {
                // "It is a Protocol Error to include the Maximum Packet Size
                // more than once, or for the value to be set to zero."
                let v = r.u32()?;
                if v == 0 {
                    return Err(DecodeError::protocol("maximum packet size 0"));
                }
                once(&mut p.maximum_packet_size, v)?;
            }
            0x28 => once(&mut p.wildcard_subscription_available, flag(&mut r)?)?,
            0x29 => once(&mut p.subscription_ids_available, flag(&mut r)?)?,
            0x2A => once(&mut p.shared_subscription_available, flag(&mut r)?)?,
            _ => return Err(DecodeError::malformed("unknown property identifier")),
        }
    }
    // "It is a Protocol Error to include Authentication Data if there is no
    // Authentication Method" (§3.1.2.11.10).
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::protocol("authentication data without method"));
    }
    Ok(p)
}

/// The size of a property block for `kind` (length field included), as
/// [`write`] writes it.
pub(super) fn encoded_len(p: &Properties, kind: Kind) -> usize {
    let n = body_len(p, kind);
    varint_len(n) + n
}

/// Writes a property block (length and properties) for a packet of `kind`:
/// the properties that packet may carry, in identifier order; others are
/// left out.
pub(super) fn write<S: Sink>(p: &Properties, kind: Kind, s: &mut S) {
    s.varint(body_len(p, kind));
    body(p, kind, s);
}

/// The size of the properties without their length field.
pub(super) fn body_len(p: &Properties, kind: Kind) -> usize {
    let mut c = Count(0);
    body(p, kind, &mut c);
    c.0
}

/// The bytes of a variable byte integer of `n`.
pub(super) fn varint_len(n: usize) -> usize {
    let mut c = Count(0);
    c.varint(n);
    c.0
}

fn body<S: Sink>(p: &Properties, kind: Kind, s: &mut S) {
    let k = kind.bit();
    let on = |id: u8| allowed(u32::from(id)) & k != 0;
    let byte = |s: &mut S, id: u8, v: Option<u8>| {
        if let (Some(v), true) = (v, on(id)) {
            s.u8(id);
            s.u8(v);
        }
    };
    let two = |s: &mut S, id: u8, v: Option<u16>| {
        if let (Some(v), true) = (v, on(id)) {
            s.u8(id);
            s.u16(v);
        }
    };
    let four = |s: &mut S, id: u8, v: Option<u32>| {
        if let (Some(v), true) = (v, on(id)) {
            s.u8(id);
            s.u32(v);
        }
    };
    let bin = |s: &mut S, id: u8, v: &Option<Bytes>| {
        if let (Some(v), true) = (v, on(id)) {
            s.u8(id);
            s.binary(v);
        }
    };
    byte(s, 0x01, p.payload_format_indicator);
    four(s, 0x02, p.message_expiry_interval);
    bin(s, 0x03, &p.content_type);
    bin(s, 0x08, &p.response_topic);
    bin(s, 0x09, &p.correlation_data);
    if on(0x0B) {
        // a SUBSCRIBE carries at most one
        let n = if kind == Kind::Subscribe {
            1
        } else {
            usize::MAX
        };
        for &id in p.subscription_ids.iter().take(n) {
            s.u8(0x0B);
            s.varint(usize::try_from(id).unwrap_or(usize::MAX));
        }
    }
    four(s, 0x11, p.session_expiry_interval);
    bin(s, 0x12, &p.assigned_client_id);
    two(s, 0x13, p.server_keep_alive);
    bin(s, 0x15, &p.authentication_method);
    bin(s, 0x16, &p.authentication_data);
    byte(s, 0x17, p.request_problem_information);
    four(s, 0x18, p.will_delay_interval);
    byte(s, 0x19, p.request_response_information);
    bin(s, 0x1A, &p.response_information);
    bin(s, 0x1C, &p.server_reference);
    bin(s, 0x1F, &p.reason_string);
    two(s, 0x21, p.receive_maximum);
    two(s, 0x22, p.topic_alias_maximum);
    two(s, 0x23, p.topic_alias);
    byte(s, 0x24, p.maximum_qos);
    byte(s, 0x25, p.retain_available);
    if on(0x26) {
        for (name, value) in &p.user_properties {
            s.u8(0x26);
            s.binary(name);
            s.binary(value);
        }
    }
    four(s, 0x27, p.maximum_packet_size);
    byte(s, 0x28, p.wildcard_subscription_available);
    byte(s, 0x29, p.subscription_ids_available);
    byte(s, 0x2A, p.shared_subscription_available);
}
