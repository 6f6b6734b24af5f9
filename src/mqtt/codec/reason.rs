//! MQTT 5 reason codes (MQTT 5.0 §2.4, Table 2-6), the MQTT 3.1.1 CONNACK
//! return codes, and which reason codes each packet type may carry.

/// Success / normal disconnection / granted QoS 0.
pub const SUCCESS: u8 = 0x00;
/// DISCONNECT: normal disconnection (same value as [`SUCCESS`]).
pub const NORMAL_DISCONNECTION: u8 = 0x00;
/// SUBACK: granted QoS 0 (same value as [`SUCCESS`]).
pub const GRANTED_QOS_0: u8 = 0x00;
/// SUBACK: granted QoS 1.
pub const GRANTED_QOS_1: u8 = 0x01;
/// SUBACK: granted QoS 2.
pub const GRANTED_QOS_2: u8 = 0x02;
/// DISCONNECT: disconnect with will message.
pub const DISCONNECT_WITH_WILL: u8 = 0x04;
/// PUBACK/PUBREC: accepted, but nobody subscribes.
pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
/// UNSUBACK: there was no such subscription.
pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
/// AUTH: continue authentication.
pub const CONTINUE_AUTHENTICATION: u8 = 0x18;
/// AUTH: re-authenticate.
pub const RE_AUTHENTICATE: u8 = 0x19;
/// Unspecified error (also the 3.1.1 SUBACK failure code).
pub const UNSPECIFIED: u8 = 0x80;
/// Malformed packet.
pub const MALFORMED: u8 = 0x81;
/// Protocol error.
pub const PROTOCOL_ERROR: u8 = 0x82;
/// Implementation specific error.
pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
/// CONNACK: unsupported protocol version.
pub const UNSUPPORTED_VERSION: u8 = 0x84;
/// CONNACK: client identifier not valid.
pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
/// CONNACK: bad user name or password.
pub const BAD_USER_OR_PASSWORD: u8 = 0x86;
/// Not authorized.
pub const NOT_AUTHORIZED: u8 = 0x87;
/// CONNACK: server unavailable.
pub const SERVER_UNAVAILABLE: u8 = 0x88;
/// Server busy.
pub const SERVER_BUSY: u8 = 0x89;
/// CONNACK: banned.
pub const BANNED: u8 = 0x8A;
/// DISCONNECT: server shutting down.
pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
/// Bad authentication method.
pub const BAD_AUTH_METHOD: u8 = 0x8C;
/// DISCONNECT: keep alive timeout.
pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
/// DISCONNECT: session taken over.
pub const SESSION_TAKEN_OVER: u8 = 0x8E;
/// Topic filter invalid.
pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
/// Topic name invalid.
pub const TOPIC_NAME_INVALID: u8 = 0x90;
/// Packet identifier in use.
pub const PACKET_ID_IN_USE: u8 = 0x91;
/// Packet identifier not found.
pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
/// DISCONNECT: receive maximum exceeded.
pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
/// DISCONNECT: topic alias invalid.
pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
/// Packet too large.
pub const PACKET_TOO_LARGE: u8 = 0x95;
/// DISCONNECT: message rate too high.
pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
/// Quota exceeded.
pub const QUOTA_EXCEEDED: u8 = 0x97;
/// DISCONNECT: administrative action.
pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
/// Payload format invalid.
pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
/// Retain not supported.
pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
/// QoS not supported.
pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
/// Use another server.
pub const USE_ANOTHER_SERVER: u8 = 0x9C;
/// Server moved.
pub const SERVER_MOVED: u8 = 0x9D;
/// Shared subscriptions not supported.
pub const SHARED_SUBS_NOT_SUPPORTED: u8 = 0x9E;
/// Connection rate exceeded.
pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
/// DISCONNECT: maximum connect time.
pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;
/// Subscription identifiers not supported.
pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: u8 = 0xA1;
/// Wildcard subscriptions not supported.
pub const WILDCARD_SUBS_NOT_SUPPORTED: u8 = 0xA2;

/// MQTT 3.1.1 CONNACK return code: connection accepted.
pub const V311_ACCEPTED: u8 = 0x00;
/// MQTT 3.1.1 CONNACK return code: unacceptable protocol version.
pub const V311_UNACCEPTABLE_VERSION: u8 = 0x01;
/// MQTT 3.1.1 CONNACK return code: identifier rejected.
pub const V311_IDENTIFIER_REJECTED: u8 = 0x02;
/// MQTT 3.1.1 CONNACK return code: server unavailable.
pub const V311_SERVER_UNAVAILABLE: u8 = 0x03;
/// MQTT 3.1.1 CONNACK return code: bad user name or password.
pub const V311_BAD_USER_OR_PASSWORD: u8 = 0x04;
/// MQTT 3.1.1 CONNACK return code: not authorized.
pub const V311_NOT_AUTHORIZED: u8 = 0x05;

/// The MQTT 3.1.1 CONNACK return code closest to an MQTT 5 CONNACK reason
/// code (what a 3.1/3.1.1 client is answered with).
pub fn v311_connack_code(v5: u8) -> u8 {
    match v5 {
        SUCCESS => V311_ACCEPTED,
        UNSUPPORTED_VERSION => V311_UNACCEPTABLE_VERSION,
        CLIENT_ID_NOT_VALID => V311_IDENTIFIER_REJECTED,
        BAD_USER_OR_PASSWORD | BAD_AUTH_METHOD => V311_BAD_USER_OR_PASSWORD,
        NOT_AUTHORIZED | BANNED => V311_NOT_AUTHORIZED,
        _ => V311_SERVER_UNAVAILABLE,
    }
}

/// True when `code` is an MQTT 5 CONNACK reason code (§3.2.2.2).
pub fn valid_connack(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
    )
}

/// True when `code` is an MQTT 5 PUBACK or PUBREC reason code (§3.4.2.1).
pub fn valid_puback(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
    )
}

/// True when `code` is an MQTT 5 PUBREL or PUBCOMP reason code (§3.6.2.1).
pub fn valid_pubrel(code: u8) -> bool {
    matches!(code, 0x00 | 0x92)
}

/// True when `code` is an MQTT 5 SUBACK reason code (§3.9.3).
pub fn valid_suback(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x01 | 0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
    )
}

/// True when `code` is an MQTT 5 UNSUBACK reason code (§3.11.3).
pub fn valid_unsuback(code: u8) -> bool {
    matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91)
}

/// True when `code` is an MQTT 5 DISCONNECT reason code (§3.14.2.1).
pub fn valid_disconnect(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2
    )
}

/// True when `code` is an MQTT 5 AUTH reason code (§3.15.2.1).
pub fn valid_auth(code: u8) -> bool {
    matches!(code, 0x00 | 0x18 | 0x19)
}
