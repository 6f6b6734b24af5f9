//! The MQTT packet codec: bytes ⇄ [`Packet`]s for MQTT 3.1, 3.1.1 and 5.0,
//! sans-IO and zero-copy.
//!
//! Grammar: every packet is a fixed header `type<<4 | flags` and a remaining
//! length (a variable byte integer of 1 to 4 bytes), then a variable header
//! and a payload that depend on the type. 3.1 and 3.1.1 share the wire format
//! except the CONNECT header (protocol name `MQIsdp` level 3, or `MQTT`
//! level 4); MQTT 5 (`MQTT` level 5) adds properties and reason codes.
//!
//! [`decode`] takes one packet off the front of a buffer and checks every
//! rule the specs put on its bytes (each check quotes the spec's normative
//! statement, `[MQTT-x.y.z-n]`, where it has one); what needs connection
//! state (topic aliases, packet identifiers in flight, a second CONNECT,
//! which side may send what) is the session's. The decoded `Bytes` fields
//! are slices of the packet's own bytes: no copy. [`encode`] writes any
//! packet for a protocol version, dropping what that version cannot carry;
//! [`encode_publish_head`] writes a PUBLISH without its payload, so a large
//! payload goes out as a shared `Bytes`. Nothing here touches sockets,
//! clocks or logs, and no input can make it panic (see `fuzz/`).

use bytes::Bytes;

mod decode;
mod encode;
mod props;
mod read;
pub mod reason;
mod topic;

#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests;

pub use decode::{decode, fixed_header};
pub use encode::{encode, encode_publish_head, publish_size};
pub use props::Properties;
pub use topic::{valid_topic_filter, valid_topic_name, SHARE_PREFIX};

/// The largest remaining length a variable byte integer can carry
/// (268,435,455: four 7-bit groups).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// An MQTT protocol version, as a CONNECT names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1: protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1: protocol name "MQTT", level 4.
    V311,
    /// MQTT 5.0: protocol name "MQTT", level 5.
    V5,
}

impl Version {
    /// The protocol level byte of a CONNECT for this version.
    pub fn level(self) -> u8 {
        match self {
            Version::V31 => 3,
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }

    /// True for MQTT 5 (properties and reason codes on the wire).
    pub fn is_v5(self) -> bool {
        self == Version::V5
    }
}

/// A CONNECT's will message (sent when the connection ends without a
/// DISCONNECT, or per its reason code in MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The will topic (UTF-8).
    pub topic: Bytes,
    /// The will payload (binary).
    pub payload: Bytes,
    /// The will QoS, 0 to 2.
    pub qos: u8,
    /// The will retain flag.
    pub retain: bool,
    /// MQTT 5 will properties.
    pub props: Properties,
}

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the CONNECT names (and is encoded for).
    pub version: Version,
    /// The client identifier (UTF-8; may be empty).
    pub client_id: Bytes,
    /// Clean Session (3.1.1) / Clean Start (5).
    pub clean_start: bool,
    /// Keep alive in seconds (0: none).
    pub keep_alive: u16,
    /// The user name (UTF-8).
    pub username: Option<Bytes>,
    /// The password (binary).
    pub password: Option<Bytes>,
    /// The will message.
    pub will: Option<Will>,
    /// MQTT 5 CONNECT properties.
    pub props: Properties,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// The return code (3.1.1: 0 to 5) or reason code (5).
    pub code: u8,
    /// MQTT 5 CONNACK properties.
    pub props: Properties,
}

/// PUBLISH: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The DUP flag (a redelivery; only with QoS > 0).
    pub dup: bool,
    /// QoS 0 to 2.
    pub qos: u8,
    /// The RETAIN flag.
    pub retain: bool,
    /// The topic name (UTF-8; empty in MQTT 5 when a topic alias stands in).
    pub topic: Bytes,
    /// The packet identifier; 0 when QoS is 0.
    pub packet_id: u16,
    /// MQTT 5 PUBLISH properties.
    pub props: Properties,
    /// The payload (binary).
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (which one is the [`Packet`] variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The packet identifier acknowledged.
    pub packet_id: u16,
    /// MQTT 5 reason code (0 for 3.1.1).
    pub code: u8,
    /// MQTT 5 properties (reason string, user properties).
    pub props: Properties,
}

/// One SUBSCRIBE topic filter's options byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    /// Maximum QoS, 0 to 2.
    pub qos: u8,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 Retain Handling, 0 to 2.
    pub retain_handling: u8,
}

/// SUBSCRIBE: topic filters with their options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The packet identifier (non-zero).
    pub packet_id: u16,
    /// MQTT 5 SUBSCRIBE properties (subscription identifier, user properties).
    pub props: Properties,
    /// The topic filters (UTF-8), at least one.
    pub filters: Vec<(Bytes, SubOptions)>,
}

/// SUBACK: one return/reason code per SUBSCRIBE filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// MQTT 5 SUBACK properties.
    pub props: Properties,
    /// The codes, one per filter.
    pub codes: Vec<u8>,
}

/// UNSUBSCRIBE: topic filters to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The packet identifier (non-zero).
    pub packet_id: u16,
    /// MQTT 5 UNSUBSCRIBE properties (user properties).
    pub props: Properties,
    /// The topic filters (UTF-8), at least one.
    pub filters: Vec<Bytes>,
}

/// UNSUBACK: the answer to UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// MQTT 5 UNSUBACK properties.
    pub props: Properties,
    /// MQTT 5 reason codes, one per filter (empty for 3.1.1).
    pub codes: Vec<u8>,
}

/// DISCONNECT (its reason code and properties are MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The reason code (0: normal disconnection).
    pub code: u8,
    /// MQTT 5 DISCONNECT properties.
    pub props: Properties,
}

/// AUTH: an MQTT 5 authentication exchange step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The reason code: 0 success, 0x18 continue, 0x19 re-authenticate.
    pub code: u8,
    /// AUTH properties (method, data, reason string, user properties).
    pub props: Properties,
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (boxed: by far the largest).
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK (QoS 1 acknowledgement).
    PubAck(Ack),
    /// PUBREC (QoS 2, part 1).
    PubRec(Ack),
    /// PUBREL (QoS 2, part 2).
    PubRel(Ack),
    /// PUBCOMP (QoS 2, part 3).
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// The packet type's name as the specs write it ("CONNECT", "PUBACK", …).
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// A decode failure: the MQTT 5 reason code that fits (0x81 malformed
/// packet, 0x82 protocol error, 0x95 packet too large, 0x84 unsupported
/// protocol version, …), and a short text for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The MQTT 5 reason code for the DISCONNECT (or CONNACK) that answers it.
    pub reason: u8,
    /// What was wrong, for the log.
    pub text: &'static str,
}

impl DecodeError {
    /// A Malformed Packet (0x81).
    pub fn malformed(text: &'static str) -> DecodeError {
        DecodeError {
            reason: reason::MALFORMED,
            text,
        }
    }

    /// A Protocol Error (0x82).
    pub fn protocol(text: &'static str) -> DecodeError {
        DecodeError {
            reason: reason::PROTOCOL_ERROR,
            text,
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (reason 0x{:02X})", self.text, self.reason)
    }
}

impl std::error::Error for DecodeError {}
