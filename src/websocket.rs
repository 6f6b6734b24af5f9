//! MQTT over WebSocket: the server side of RFC 6455, sans-IO.
//!
//! RabbitMQ's web-mqtt plugin serves MQTT over WebSocket on port 15675, path
//! `/ws`, subprotocol `mqtt`. [`upgrade`] reads a client's opening handshake
//! and answers it; [`Decoder::decode`] turns the client's masked frames into
//! the MQTT byte stream (message boundaries mean nothing to MQTT), answers
//! Pings and reports a Close; [`binary_header`] frames what the server sends.
//! No extension is ever negotiated, so no reserved bit may be set. Nothing
//! here does IO or panics on any input (the `websocket` fuzz target checks).

use bytes::{Buf, BufMut, BytesMut};
use sha1::{Digest, Sha1};

use crate::broker::auth::{base64_decode, base64_encode};

/// The port RabbitMQ's web-mqtt plugin listens on.
pub const WEB_MQTT_PORT: u16 = 15675;
/// The path RabbitMQ's web-mqtt plugin serves WebSocket connections on.
pub const WEB_MQTT_PATH: &str = "/ws";
/// The subprotocols MQTT clients ask for (the first of the client's list found here wins).
pub const MQTT_PROTOCOLS: &[&str] = &["mqtt", "mqttv3.1", "mqttv3.1.1"];
/// The largest opening handshake (request line and header fields) read.
pub const MAX_REQUEST: usize = 8192;

/// Close status (RFC 6455 §7.4.1): normal closure.
pub const NORMAL_CLOSURE: u16 = 1000;
/// Close status: protocol error.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Close status: a type of data the endpoint cannot accept (text, for MQTT).
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Close status: data inconsistent with its type (a Close reason not UTF-8).
pub const INVALID_PAYLOAD: u16 = 1007;
/// Close status: a message too big to process.
pub const MESSAGE_TOO_BIG: u16 = 1009;

/// Header fields read from a request; more is a 431.
const MAX_HEADERS: usize = 64;
/// RFC 6455 §1.3: the GUID appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// RFC 6455 §5.2: the frame header's bits and opcodes.
const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const OPCODE: u8 = 0x0F;
const MASK: u8 = 0x80;
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Opcodes 0x8 and up are control frames (RFC 6455 §5.5).
const CONTROL: u8 = 0x8;
/// RFC 6455 §5.5: the longest control frame payload.
const MAX_CONTROL: u8 = 125;

/// The result of feeding the HTTP upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// More bytes needed (nothing consumed).
    Partial,
    /// A valid upgrade: write `response` (101 Switching Protocols with Sec-WebSocket-Accept and the chosen Sec-WebSocket-Protocol),
    /// `consumed` bytes of the input were the request (anything after them is already WebSocket frames), `protocol` the chosen one.
    Accept {
        /// The 101 response to write.
        response: Vec<u8>,
        /// Length of the request at the front of the input.
        consumed: usize,
        /// The chosen subprotocol, one of the `protocols` passed in.
        protocol: &'static str,
    },
    /// Not a valid upgrade for us: write `response` (400 Bad Request / 404 Not Found for another path / 426 Upgrade Required with
    /// `Sec-WebSocket-Version: 13` for a wrong version, 400 when no acceptable subprotocol), then close. `reason` for the log.
    Reject {
        /// The error response to write before closing.
        response: Vec<u8>,
        /// What was wrong, for the log.
        reason: String,
    },
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64 of the
/// SHA-1 of the key followed by the GUID (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(key.as_bytes());
    hash.update(GUID.as_bytes());
    base64_encode(&hash.finalize())
}

/// Parse the client's opening handshake from `input` with httparse (the crate is already a dependency): GET, HTTP/1.1, Host,
/// `Upgrade: websocket` (case-insensitive token), `Connection` containing the `Upgrade` token (comma list), `Sec-WebSocket-Version: 13`,
/// a `Sec-WebSocket-Key` that is base64 of 16 bytes, path equal to `path` (ignore a query string), and a subprotocol from `protocols`
/// (the client's `Sec-WebSocket-Protocol` header(s), comma-separated, first one we support wins). Requests larger than 8 KiB without
/// completing → Reject 431/400. Never panics.
pub fn upgrade(input: &[u8], path: &str, protocols: &[&'static str]) -> Upgrade {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // The limit applies to the request however it arrives: a complete request
    // over it is refused as one still incomplete at that size would be.
    let consumed = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_REQUEST => n,
        Ok(httparse::Status::Partial) if input.len() <= MAX_REQUEST => return Upgrade::Partial,
        Ok(_) => {
            return reject(
                431,
                "request header too large",
                format!("over {MAX_REQUEST} bytes"),
            )
        }
        Err(httparse::Error::TooManyHeaders) => {
            return reject(431, "too many header fields", format!("over {MAX_HEADERS}"))
        }
        Err(e) => return reject(400, "malformed HTTP request", e.to_string()),
    };
    match check(&req, path, protocols) {
        Ok((key, protocol)) => {
            // RFC 6455 §4.2.2: the server's handshake is a 101 with
            // `Upgrade: websocket`, `Connection: Upgrade`, the accept hash and
            // the chosen subprotocol.
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\n\
                 Upgrade: websocket\r\n\
                 Connection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\
                 Sec-WebSocket-Protocol: {protocol}\r\n\
                 \r\n",
                accept_key(key)
            );
            Upgrade::Accept {
                response: response.into_bytes(),
                consumed,
                protocol,
            }
        }
        Err(rejected) => rejected,
    }
}

/// The checks of a complete request: its key and the chosen subprotocol, or
/// the answer refusing it.
fn check<'b>(
    req: &httparse::Request<'_, 'b>,
    path: &str,
    protocols: &[&'static str],
) -> Result<(&'b str, &'static str), Upgrade> {
    // RFC 6455 §4.1: "The method of the request MUST be GET, and the HTTP
    // version MUST be at least 1.1."
    let method = req.method.unwrap_or_default();
    if method != "GET" {
        return Err(reject(400, "not a GET request", shown(method.as_bytes())));
    }
    if req.version != Some(1) {
        return Err(reject(400, "not HTTP/1.1", "HTTP/1.0".into()));
    }
    let target = req.path.unwrap_or_default();
    if resource(target) != path {
        return Err(reject(
            404,
            "no WebSocket endpoint at this path",
            shown(target.as_bytes()),
        ));
    }

    let mut hosts: Vec<&[u8]> = Vec::new();
    let mut upgrade = false;
    let mut connection = false;
    let mut body = false;
    let mut versions: Vec<&[u8]> = Vec::new();
    let mut keys: Vec<&'b [u8]> = Vec::new();
    let mut offered: Vec<&[u8]> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value.trim_ascii();
        if name.eq_ignore_ascii_case("host") {
            hosts.push(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            versions.push(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            keys.push(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            offered.extend(tokens(value));
        } else if name.eq_ignore_ascii_case("content-length") {
            body |= value != b"0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            body = true;
        }
    }
    // RFC 6455 §4.2.1: "If the server, while reading the handshake, finds
    // that the client did not send a handshake that matches the description
    // below [...], the server MUST stop processing the client's handshake and
    // return an HTTP response with an appropriate error code (such as 400 Bad
    // Request)." The description: a Host header field with the server's
    // authority, Upgrade containing "websocket" and Connection containing
    // "Upgrade" (both ASCII case-insensitive), a Sec-WebSocket-Key, a
    // Sec-WebSocket-Version of 13.
    if !matches!(hosts.as_slice(), [host] if !host.is_empty()) {
        return Err(reject(400, "no single Host header field", String::new()));
    }
    if !upgrade {
        return Err(reject(
            400,
            "not a WebSocket upgrade (no Upgrade: websocket)",
            String::new(),
        ));
    }
    if !connection {
        return Err(reject(
            400,
            "not a WebSocket upgrade (no Connection: Upgrade)",
            String::new(),
        ));
    }
    // Anything after the header fields is read as frames: no body allowed.
    if body {
        return Err(reject(400, "an upgrade request with a body", String::new()));
    }
    // RFC 6455 §4.4: "If this version does not match a version understood
    // by the server, the server MUST abort the WebSocket handshake [...] and
    // instead send an appropriate HTTP error code (such as 426 Upgrade
    // Required) and a |Sec-WebSocket-Version| header field indicating the
    // version(s) the server is capable of understanding."
    if versions != [b"13"] {
        let detail = versions.iter().map(|v| shown(v)).collect::<Vec<_>>();
        return Err(reject(
            426,
            "unsupported WebSocket version (13 only)",
            detail.join(", "),
        ));
    }
    // RFC 6455 §4.2.1: "A |Sec-WebSocket-Key| header field with a
    // base64-encoded [...] value that, when decoded, is 16 bytes in length."
    let key = match *keys.as_slice() {
        [key] => std::str::from_utf8(key).ok().filter(|k| is_key(k)),
        _ => None,
    };
    let Some(key) = key else {
        let detail = keys.iter().map(|k| shown(k)).collect::<Vec<_>>();
        return Err(reject(
            400,
            "no single valid Sec-WebSocket-Key",
            detail.join(", "),
        ));
    };
    // RFC 6455 §4.2.2: the subprotocol "MUST be derived from the client's
    // handshake, specifically by selecting one of the values from the
    // |Sec-WebSocket-Protocol| field that the server is willing to use".
    // The client's order is its preference. (MQTT 3.1.1 §6.0 names only
    // "mqtt"; older clients ask for "mqttv3.1", which RabbitMQ accepts.)
    let chosen = offered
        .iter()
        .find_map(|o| protocols.iter().find(|p| p.as_bytes() == *o).copied());
    let Some(protocol) = chosen else {
        let detail = offered.iter().map(|o| shown(o)).collect::<Vec<_>>();
        return Err(reject(
            400,
            "no acceptable Sec-WebSocket-Protocol",
            detail.join(", "),
        ));
    };
    Ok((key, protocol))
}

/// A request target's path: an absolute-form target loses its scheme and
/// authority, any target its query.
fn resource(target: &str) -> &str {
    let scheme = ["http://", "https://"].into_iter().find(|s| {
        target
            .get(..s.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(s))
    });
    let path = match scheme {
        Some(s) => {
            let rest = target.get(s.len()..).unwrap_or_default();
            rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/")
        }
        None => target,
    };
    path.split('?').next().unwrap_or(path)
}

/// The non-empty elements of a comma-separated header field value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a `Sec-WebSocket-Key` is the canonical base64 of 16 bytes.
fn is_key(key: &str) -> bool {
    key.len() == 24
        && base64_decode(key).is_some_and(|raw| raw.len() == 16 && base64_encode(&raw) == key)
}

/// A client's bytes, quoted and cut short, for a log line.
fn shown(value: &[u8]) -> String {
    format!(
        "{:?}",
        String::from_utf8_lossy(value.get(..64).unwrap_or(value))
    )
}

/// An error response to a handshake: `status` with `what` as the body;
/// `detail` (client values) goes to the log only.
fn reject(status: u16, what: &str, detail: String) -> Upgrade {
    let (phrase, extra) = match status {
        404 => ("Not Found", ""),
        // RFC 7231 §6.5.15: "The server MUST send an Upgrade header field
        // in a 426 response"; RFC 7230 §6.7: a sender of Upgrade MUST also
        // send the "upgrade" connection option.
        426 => (
            "Upgrade Required",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        ),
        431 => ("Request Header Fields Too Large", ""),
        _ => ("Bad Request", ""),
    };
    let connection = if status == 426 {
        "Upgrade, close"
    } else {
        "close"
    };
    let body = format!("{what}\n");
    let response = format!(
        "HTTP/1.1 {status} {phrase}\r\n\
         {extra}Connection: {connection}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         \r\n\
         {body}",
        body.len()
    );
    let reason = if detail.is_empty() {
        format!("{status}: {what}")
    } else {
        format!("{status}: {what}: {detail}")
    };
    Upgrade::Reject {
        response: response.into_bytes(),
        reason,
    }
}

/// Incoming frame decoder state for one connection (server side: client frames MUST be masked).
#[derive(Debug, Default)]
pub struct Decoder {
    /// Inside a fragmented binary message (its last frame so far had FIN clear).
    in_message: bool,
    /// The peer's Close was decoded: nothing after it is read.
    closed: bool,
}

/// What decoding produced besides payload bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing more to do for now (input exhausted or incomplete frame; partial frames stay in `input`).
    None,
    /// The peer sent Close: the caller writes `reply` (our Close frame echoing the code) and closes after flushing.
    Close {
        /// Our Close frame in reply.
        reply: Vec<u8>,
        /// The peer's status code, if its Close had one.
        code: Option<u16>,
    },
}

/// A protocol violation: `close` is the Close frame to send (status 1002 protocol error, 1003 unsupported data (text frames for MQTT),
/// 1007, or 1009 message too big), then close the socket. `text` for the log.
#[derive(Debug, PartialEq, Eq)]
pub struct WsError {
    /// The Close frame to send before closing.
    pub close: Vec<u8>,
    /// What the peer did wrong, for the log.
    pub text: String,
}

impl WsError {
    fn new(code: u16, text: impl Into<String>) -> Self {
        WsError {
            close: close_frame(code),
            text: text.into(),
        }
    }

    /// The status code in the Close frame.
    pub fn code(&self) -> u16 {
        match self.close.as_slice() {
            [_, _, hi, lo] => u16::from_be_bytes([*hi, *lo]),
            _ => 0,
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (close {})", self.text, self.code())
    }
}

impl std::error::Error for WsError {}

/// A frame header read and checked.
struct Head {
    fin: bool,
    opcode: u8,
    /// Payload length.
    len: u64,
    key: [u8; 4],
    /// Header length (6, 8 or 14: client frames carry a masking key).
    size: usize,
}

impl Decoder {
    /// Decode as many complete frames from the front of `input` as are there, consuming them: binary (and continuation) payloads,
    /// unmasked, are appended to `out` (the MQTT byte stream — message boundaries do not matter to MQTT); Ping frames produce a Pong
    /// frame appended to `control` (bytes to write to the socket, ahead of other output); Pong is ignored; Close returns Event::Close.
    /// Errors: unmasked client frame, reserved bits set (no extensions negotiated), unknown opcode, control frame > 125 bytes or
    /// fragmented, continuation without a start, new data frame inside a fragmented message, text frame (1003), a frame whose
    /// payload length exceeds `max_frame` (1009), 64-bit length with the top bit set.
    /// Never panics; the unmask should be reasonably fast (word-at-a-time or chunked XOR, no per-byte allocation).
    /// A frame is consumed only once it is all in `input`, so `input` may need `max_frame` + 14 bytes.
    /// Once a Close has been decoded, nothing more is: later calls return `Event::None` and leave `input` alone.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        control: &mut Vec<u8>,
        max_frame: u64,
    ) -> Result<Event, WsError> {
        while !self.closed {
            let Some(head) = self.head(input, max_frame)? else {
                break;
            };
            // `size` ≤ 14 and `len` < 2^63: no overflow; a frame not all in
            // `input` stays there.
            let end = head.len + head.size as u64;
            let end = usize::try_from(end).unwrap_or(usize::MAX);
            // Unmasked in place, then consumed (`advance` keeps `input`'s
            // buffer its own, to be reused for the next read).
            let Some(payload) = input.get_mut(head.size..end) else {
                break;
            };
            unmask(payload, head.key);
            let payload = &*payload;
            match head.opcode {
                OP_PING => {
                    // RFC 6455 §5.5.2: "Upon receipt of a Ping frame, an
                    // endpoint MUST send a Pong frame in response"; §5.5.3:
                    // it "must have identical Application data". ≤ 125
                    // bytes (checked in `head`): a one-byte length.
                    control.extend_from_slice(&[FIN | OP_PONG, payload.len() as u8]);
                    control.extend_from_slice(payload);
                }
                OP_PONG => {} // RFC 6455 §5.5.3: an unsolicited Pong needs no response
                OP_CLOSE => {
                    self.closed = true;
                    let event = close_event(payload);
                    input.advance(end);
                    return event;
                }
                _ => {
                    out.extend_from_slice(payload);
                    self.in_message = !head.fin;
                }
            }
            input.advance(end);
        }
        Ok(Event::None)
    }

    /// The header at the front of `input` once it is all there, checked as
    /// far as it has arrived (an error needs no more bytes than show it).
    fn head(&self, input: &[u8], max_frame: u64) -> Result<Option<Head>, WsError> {
        let [b0, b1, rest @ ..] = input else {
            return Ok(None);
        };
        let (fin, opcode, masked, len7) = (b0 & FIN != 0, b0 & OPCODE, b1 & MASK != 0, b1 & !MASK);
        // RFC 6455 §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated
        // that defines meanings for non-zero values. If a nonzero value is
        // received and none of the negotiated extensions defines the meaning
        // of such a nonzero value, the receiving endpoint MUST _Fail the
        // WebSocket Connection_." We negotiate none.
        if b0 & RSV != 0 {
            let text = format!("reserved bits {:#04x} set", b0 & RSV);
            return Err(WsError::new(PROTOCOL_ERROR, text));
        }
        // RFC 6455 §5.2: "If an unknown opcode is received, the receiving
        // endpoint MUST _Fail the WebSocket Connection_."
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            let text = format!("unknown opcode {opcode:#x}");
            return Err(WsError::new(PROTOCOL_ERROR, text));
        }
        // RFC 6455 §5.1: "The server MUST close the connection upon receiving
        // a frame that is not masked. In this case, a server MAY send a Close
        // frame with a status code of 1002 (protocol error)".
        if !masked {
            return Err(WsError::new(PROTOCOL_ERROR, "unmasked client frame"));
        }
        if opcode & CONTROL != 0 {
            // RFC 6455 §5.5: "All control frames MUST have a payload length
            // of 125 bytes or less and MUST NOT be fragmented."
            if !fin {
                return Err(WsError::new(PROTOCOL_ERROR, "fragmented control frame"));
            }
            if len7 > MAX_CONTROL {
                return Err(WsError::new(
                    PROTOCOL_ERROR,
                    "control frame longer than 125 bytes",
                ));
            }
        }
        match opcode {
            // MQTT 3.1.1 §6.0: "MQTT Control Packets MUST be sent in
            // WebSocket binary data frames. If any other type of data frame
            // is received the recipient MUST close the Network Connection
            // [MQTT-6.0.0-1]."
            OP_TEXT => {
                return Err(WsError::new(
                    UNSUPPORTED_DATA,
                    "text frame (MQTT is binary frames only)",
                ))
            }
            // RFC 6455 §5.4: a fragmented message is a first frame with FIN
            // clear and an opcode, then continuation frames, the last with
            // FIN set; "The fragments of one message MUST NOT be interleaved
            // between the fragments of another message".
            OP_CONTINUATION if !self.in_message => {
                return Err(WsError::new(
                    PROTOCOL_ERROR,
                    "continuation frame outside a fragmented message",
                ))
            }
            OP_BINARY if self.in_message => {
                return Err(WsError::new(
                    PROTOCOL_ERROR,
                    "new data frame inside a fragmented message",
                ))
            }
            _ => {}
        }
        // RFC 6455 §5.2: a 7-bit length, or 126 and a 16-bit length, or 127
        // and a 64-bit length whose "most significant bit MUST be 0". (That
        // the sender MUST use the fewest bytes is not checked: a longer form
        // of a short length is harmless.)
        let (len, rest) = match len7 {
            126 => {
                let Some((n, rest)) = rest.split_first_chunk::<2>() else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes(*n)), rest)
            }
            127 => {
                let Some((n, rest)) = rest.split_first_chunk::<8>() else {
                    return Ok(None);
                };
                let len = u64::from_be_bytes(*n);
                if len >> 63 != 0 {
                    return Err(WsError::new(
                        PROTOCOL_ERROR,
                        "64-bit payload length with the top bit set",
                    ));
                }
                (len, rest)
            }
            n => (u64::from(n), rest),
        };
        if len > max_frame {
            let text = format!("{len}-byte frame over the {max_frame}-byte limit");
            return Err(WsError::new(MESSAGE_TOO_BIG, text));
        }
        let Some((key, rest)) = rest.split_first_chunk::<4>() else {
            return Ok(None);
        };
        Ok(Some(Head {
            fin,
            opcode,
            len,
            key: *key,
            size: input.len() - rest.len(),
        }))
    }
}

/// The event for a Close frame's unmasked payload.
fn close_event(payload: &[u8]) -> Result<Event, WsError> {
    // RFC 6455 §5.5.1: "If there is a body, the first two bytes of the body
    // MUST be a 2-byte unsigned integer (in network byte order) representing
    // a status code [...]. Following the 2-byte integer, the body MAY contain
    // UTF-8-encoded data".
    let (code, reason) = match payload.split_first_chunk::<2>() {
        Some((code, reason)) => (u16::from_be_bytes(*code), reason),
        None if payload.is_empty() => {
            // RFC 6455 §5.5.1: "If an endpoint receives a Close frame and did
            // not previously send a Close frame, the endpoint MUST send a
            // Close frame in response." No code, none echoed.
            return Ok(Event::Close {
                reply: vec![FIN | OP_CLOSE, 0],
                code: None,
            });
        }
        None => {
            return Err(WsError::new(
                PROTOCOL_ERROR,
                "close frame with a 1-byte body",
            ))
        }
    };
    if !valid_close_code(code) {
        let text = format!("close frame with status {code}, not one a peer may send");
        return Err(WsError::new(PROTOCOL_ERROR, text));
    }
    // RFC 6455 §8.1: "When an endpoint is to interpret a byte stream as
    // UTF-8 but finds that the byte stream is not, in fact, a valid UTF-8
    // stream, that endpoint MUST _Fail the WebSocket Connection_."
    if std::str::from_utf8(reason).is_err() {
        return Err(WsError::new(INVALID_PAYLOAD, "close reason is not UTF-8"));
    }
    // RFC 6455 §5.5.1: "When sending a Close frame in response, the endpoint
    // typically echos the status code it received."
    Ok(Event::Close {
        reply: close_frame(code),
        code: Some(code),
    })
}

/// Whether a peer may send `code` in a Close frame (RFC 6455 §7.4): the
/// defined codes except 1004 (reserved) and 1005, 1006 and 1015 (which "MUST
/// NOT be set as a status code in a Close control frame by an endpoint"),
/// IANA's 1012-1014, and 3000-4999 (registered and private use); 0-999 are
/// not used and 1016-2999 are reserved.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XOR `data` with the masking key (RFC 6455 §5.3: byte i with key byte i
/// mod 4), eight bytes at a time.
fn unmask(data: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let (words, tail) = data.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ wide).to_ne_bytes();
    }
    // a multiple of 8 bytes came before: the tail starts at key byte 0
    for (byte, k) in tail.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Write the header of one unmasked binary frame (FIN set) carrying `len` payload bytes that the caller appends itself
/// (so a large payload goes out as a shared Bytes). Returns header length (2, 4 or 10).
pub fn binary_header(out: &mut BytesMut, len: usize) -> usize {
    // RFC 6455 §5.1: "A server MUST NOT mask any frames that it sends to the
    // client." §5.2: "the minimal number of bytes MUST be used to encode the
    // length".
    out.put_u8(FIN | OP_BINARY);
    if len < 126 {
        out.put_u8(len as u8);
        2
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(len);
        4
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
        10
    }
}

/// A Close frame with a status code (and empty reason) as bytes.
pub fn close_frame(code: u16) -> Vec<u8> {
    let [hi, lo] = code.to_be_bytes();
    vec![FIN | OP_CLOSE, 2, hi, lo]
}

/// The `websocket` fuzz target's entry point, and frame builders its seeds
/// and the tests share.
#[doc(hidden)]
pub mod fuzzing {
    // As in `codec::fuzzing`: a broken invariant is meant to panic here.
    #![allow(clippy::expect_used)]

    use bytes::BytesMut;

    use super::{
        close_frame, unmask, upgrade, Decoder, Event, Upgrade, WsError, FIN, MASK, MAX_REQUEST,
        MQTT_PROTOCOLS, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
        WEB_MQTT_PATH,
    };

    /// An opening handshake as mqtt.js sends it in a browser, with the
    /// RFC 6455 §1.3 example key.
    pub const REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\n\
        Host: localhost:15675\r\n\
        Connection: Upgrade\r\n\
        Pragma: no-cache\r\n\
        Upgrade: websocket\r\n\
        Origin: http://localhost:8080\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\
        \r\n";

    /// An MQTT 3.1.1 CONNECT (clean session, keep-alive 60, empty client id).
    pub const MQTT_CONNECT: &[u8] = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";

    /// A client frame: first header byte `first` (FIN, RSV, opcode), the
    /// shortest length form, masked with `key`.
    pub fn masked_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(MASK | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            out.push(MASK | 126);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.push(MASK | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&key);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(body) = out.get_mut(start..) {
            unmask(body, key);
        }
        out
    }

    /// The named seeds of the `websocket` target (`fuzz/corpus/websocket/`).
    #[allow(clippy::indexing_slicing)] // slices of the constants above, in range
    pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let f = |first: u8, payload: &[u8]| masked_frame(first, payload, key);
        let binary = |payload: &[u8]| f(FIN | OP_BINARY, payload);
        let request = |replace: &str, with: &str| {
            let text = String::from_utf8_lossy(REQUEST).replace(replace, with);
            text.into_bytes()
        };
        // The first byte picks the piece size and the frame limit (see
        // `fuzz_websocket`): 0xc0 | n is pieces of n + 1 bytes, no limit.
        let seed = |cfg: u8, parts: &[&[u8]]| {
            let mut v = vec![cfg];
            for p in parts {
                v.extend_from_slice(p);
            }
            v
        };
        let close_1000 = f(FIN | OP_CLOSE, &1000u16.to_be_bytes());
        let mut len64 = vec![FIN | OP_BINARY, MASK | 127];
        len64.extend_from_slice(&5u64.to_be_bytes());
        len64.extend_from_slice(&key);
        len64.extend_from_slice(&f(0, b"hello")[6..]);
        let mut top_bit = vec![FIN | OP_BINARY, MASK | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        top_bit.extend_from_slice(&key);
        let mut unmasked = f(FIN | OP_BINARY, MQTT_CONNECT);
        if let Some(b) = unmasked.get_mut(1) {
            *b &= !MASK;
        }
        let long_16: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        vec![
            ("handshake", seed(0xc0, &[REQUEST])),
            (
                "handshake-connect",
                seed(0xc3, &[REQUEST, &binary(MQTT_CONNECT)]),
            ),
            (
                "handshake-mqttv3.1",
                seed(
                    0xcf,
                    &[
                        &request("Protocol: mqtt", "Protocol: mqttv3.1, mqtt"),
                        &binary(MQTT_CONNECT),
                    ],
                ),
            ),
            (
                "fragmented-ping-close",
                seed(
                    0xc2,
                    &[
                        REQUEST,
                        &f(OP_BINARY, &MQTT_CONNECT[..4]),
                        &f(FIN | OP_PING, b"ping"),
                        &f(OP_CONTINUATION, &MQTT_CONNECT[4..9]),
                        &f(FIN | OP_PONG, b""),
                        &f(FIN | OP_CONTINUATION, &MQTT_CONNECT[9..]),
                        &close_1000,
                    ],
                ),
            ),
            (
                "frames-only",
                seed(
                    0xc7,
                    &[&binary(MQTT_CONNECT), &f(FIN | OP_PING, b""), &close_1000],
                ),
            ),
            ("len16", seed(0xff, &[&binary(&long_16)])),
            ("len64-non-minimal", seed(0xc5, &[&len64])),
            ("len64-top-bit", seed(0xc0, &[&top_bit])),
            ("too-big", seed(0x3f, &[&binary(&long_16)])),
            ("close-empty", seed(0xc0, &[&f(FIN | OP_CLOSE, b"")])),
            ("close-1-byte", seed(0xc0, &[&f(FIN | OP_CLOSE, b"\x03")])),
            ("close-1005", seed(0xc0, &[&f(FIN | OP_CLOSE, b"\x03\xed")])),
            (
                "close-reason-not-utf8",
                seed(0xc0, &[&f(FIN | OP_CLOSE, b"\x03\xe8bye\xff")]),
            ),
            ("text-frame", seed(0xc0, &[&f(FIN | OP_TEXT, b"hi")])),
            ("unmasked", seed(0xc0, &[&unmasked])),
            ("rsv1-set", seed(0xc0, &[&f(0x40 | FIN | OP_BINARY, b"x")])),
            ("opcode-3", seed(0xc0, &[&f(FIN | 0x3, b"x")])),
            ("ping-fragmented", seed(0xc0, &[&f(OP_PING, b"x")])),
            ("ping-126", seed(0xc0, &[&f(FIN | OP_PING, &[7; 126])])),
            (
                "continuation-first",
                seed(0xc0, &[&f(FIN | OP_CONTINUATION, b"x")]),
            ),
            (
                "binary-inside-message",
                seed(0xc0, &[&f(OP_BINARY, b"x"), &binary(b"y")]),
            ),
            (
                "bad-version",
                seed(0xc0, &[&request("Version: 13", "Version: 8")]),
            ),
            (
                "wrong-path",
                seed(0xc0, &[&request("GET /ws", "GET /mqtt")]),
            ),
            (
                "query-string",
                seed(0xc0, &[&request("GET /ws", "GET /ws?token=1")]),
            ),
            (
                "no-protocol",
                seed(0xc0, &[&request("Protocol: mqtt", "Protocol: chat")]),
            ),
            ("bad-key", seed(0xc0, &[&request("Key: dGhl", "Key: dGh")])),
            ("post", seed(0xc0, &[&request("GET", "POST")])),
            ("partial-request", seed(0xc0, &[&REQUEST[..100]])),
        ]
    }

    /// One run of the decoder over a byte stream.
    #[derive(Debug, PartialEq, Eq)]
    struct Run {
        out: Vec<u8>,
        control: Vec<u8>,
        result: Result<Event, WsError>,
        /// What was not consumed (fed or not).
        rest: Vec<u8>,
    }

    /// Fuzz the handshake and the frame decoder. `data` is one byte choosing
    /// the piece size (low 6 bits + 1) and the frame limit (top 2 bits: 125,
    /// 1024, 65536 or none), then a request and frames. A request must answer
    /// the same when cut right after it and be Partial before its end; frames
    /// after an accepted request (or the whole input when not accepted) must
    /// decode the same fed at once as in pieces, never give more output than
    /// they consumed, and error and close only with well-formed Close frames.
    pub fn fuzz_websocket(data: &[u8]) {
        let Some((&cfg, stream)) = data.split_first() else {
            return;
        };
        let piece = usize::from(cfg & 0x3f) + 1;
        let max_frame = match cfg >> 6 {
            0 => 125,
            1 => 1024,
            2 => 65_536,
            _ => u64::MAX,
        };
        let frames = match upgrade(stream, WEB_MQTT_PATH, MQTT_PROTOCOLS) {
            Upgrade::Accept {
                response,
                consumed,
                protocol,
            } => {
                let request = stream.get(..consumed).expect("consumed within the input");
                assert!(consumed <= MAX_REQUEST);
                assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
                assert!(MQTT_PROTOCOLS.contains(&protocol));
                let line = format!("\r\nSec-WebSocket-Protocol: {protocol}\r\n");
                assert!(response.windows(line.len()).any(|w| w == line.as_bytes()));
                let again = upgrade(request, WEB_MQTT_PATH, MQTT_PROTOCOLS);
                assert_eq!(
                    again,
                    Upgrade::Accept {
                        response,
                        consumed,
                        protocol
                    }
                );
                for cut in [consumed / 2, consumed.saturating_sub(1)] {
                    let prefix = stream.get(..cut).expect("a prefix");
                    assert_eq!(
                        upgrade(prefix, WEB_MQTT_PATH, MQTT_PROTOCOLS),
                        Upgrade::Partial
                    );
                }
                stream.get(consumed..).unwrap_or_default()
            }
            Upgrade::Reject { response, reason } => {
                assert!(response.starts_with(b"HTTP/1.1 4"));
                assert!(!reason.is_empty());
                stream
            }
            Upgrade::Partial => {
                assert!(stream.len() <= MAX_REQUEST);
                stream
            }
        };
        let whole = decode_whole(frames, max_frame);
        let pieces = decode_pieces(frames, piece, max_frame);
        assert_eq!(whole, pieces, "decoding at once and in {piece}-byte pieces");
    }

    /// Decode `frames` handed over at once.
    fn decode_whole(frames: &[u8], max_frame: u64) -> Run {
        let mut decoder = Decoder::default();
        let mut input = BytesMut::from(frames);
        let (mut out, mut control) = (BytesMut::new(), Vec::new());
        let result = step(&mut decoder, &mut input, &mut out, &mut control, max_frame);
        Run {
            out: out.to_vec(),
            control,
            result,
            rest: input.to_vec(),
        }
    }

    /// Decode `frames` handed over `piece` bytes at a time.
    fn decode_pieces(frames: &[u8], piece: usize, max_frame: u64) -> Run {
        let mut decoder = Decoder::default();
        let mut input = BytesMut::new();
        let (mut out, mut control) = (BytesMut::new(), Vec::new());
        let mut result = Ok(Event::None);
        let mut fed = 0;
        for chunk in frames.chunks(piece) {
            input.extend_from_slice(chunk);
            fed += chunk.len();
            result = step(&mut decoder, &mut input, &mut out, &mut control, max_frame);
            if result != Ok(Event::None) {
                break;
            }
        }
        input.extend_from_slice(frames.get(fed..).unwrap_or_default());
        Run {
            out: out.to_vec(),
            control,
            result,
            rest: input.to_vec(),
        }
    }

    /// One `decode` call, checked.
    fn step(
        decoder: &mut Decoder,
        input: &mut BytesMut,
        out: &mut BytesMut,
        control: &mut Vec<u8>,
        max_frame: u64,
    ) -> Result<Event, WsError> {
        let (before, out_before, control_before) = (input.len(), out.len(), control.len());
        let result = decoder.decode(input, out, control, max_frame);
        let consumed = before
            .checked_sub(input.len())
            .expect("decode only consumes");
        let produced = (out.len() - out_before) + (control.len() - control_before);
        assert!(
            produced <= consumed,
            "{produced} bytes out of {consumed} in"
        );
        match &result {
            Ok(Event::None) => {
                // nothing more comes out of the same bytes
                let again = decoder.decode(input, out, control, max_frame);
                assert_eq!(again, Ok(Event::None));
                assert_eq!(input.len() + consumed, before);
                assert_eq!(
                    out.len() + control.len() - out_before - control_before,
                    produced
                );
            }
            Ok(Event::Close { reply, code }) => match code {
                Some(code) => assert_eq!(reply, &close_frame(*code)),
                None => assert_eq!(reply, &[FIN | OP_CLOSE, 0]),
            },
            Err(e) => {
                assert!([1002, 1003, 1007, 1009].contains(&e.code()), "{e}");
                assert_eq!(e.close, close_frame(e.code()));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::fuzzing::{fuzz_websocket, masked_frame, seeds, MQTT_CONNECT, REQUEST};
    use super::*;

    const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    fn ws(input: &[u8]) -> Upgrade {
        upgrade(input, WEB_MQTT_PATH, MQTT_PROTOCOLS)
    }

    /// A request from header lines.
    fn request(lines: &[&str]) -> Vec<u8> {
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text.into_bytes()
    }

    const GOOD: &[&str] = &[
        "GET /ws HTTP/1.1",
        "Host: localhost:15675",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: mqtt",
    ];

    /// The good request with the line starting `prefix` replaced by `with`
    /// (or removed when `with` is empty).
    fn changed(prefix: &str, with: &str) -> Vec<u8> {
        assert!(GOOD.iter().any(|l| l.starts_with(prefix)), "{prefix}");
        let lines: Vec<&str> = GOOD
            .iter()
            .map(|l| if l.starts_with(prefix) { with } else { l })
            .filter(|l| !l.is_empty())
            .collect();
        request(&lines)
    }

    fn status(u: &Upgrade) -> u16 {
        let response = match u {
            Upgrade::Accept { response, .. } | Upgrade::Reject { response, .. } => response,
            Upgrade::Partial => panic!("partial"),
        };
        let text = std::str::from_utf8(response).unwrap();
        text[9..12].parse().unwrap()
    }

    fn header<'a>(response: &'a [u8], name: &str) -> Option<&'a str> {
        let text = std::str::from_utf8(response).unwrap();
        text.split("\r\n").find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_the_good_request() {
        let req = request(GOOD);
        let Upgrade::Accept {
            response,
            consumed,
            protocol,
        } = ws(&req)
        else {
            panic!("{:?}", ws(&req));
        };
        assert_eq!(consumed, req.len());
        assert_eq!(protocol, "mqtt");
        assert_eq!(
            std::str::from_utf8(&response).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        // a browser's request, and lenient spellings
        assert!(matches!(ws(REQUEST), Upgrade::Accept { .. }));
        for (prefix, with) in [
            ("Upgrade", "upgrade: WebSocket"),
            ("Connection", "Connection: keep-alive, Upgrade"),
            ("Connection", "connection: keep-alive,upgrade"),
            ("GET", "GET /ws?x=1&y=2 HTTP/1.1"),
            ("GET", "GET http://localhost:15675/ws HTTP/1.1"),
            ("Sec-WebSocket-Version", "Sec-WebSocket-Version:   13  "),
        ] {
            let u = ws(&changed(prefix, with));
            assert!(matches!(u, Upgrade::Accept { .. }), "{with}: {u:?}");
        }
    }

    #[test]
    fn chooses_the_first_protocol_of_the_clients_that_we_know() {
        for (offer, chosen) in [
            ("mqtt", "mqtt"),
            ("mqttv3.1", "mqttv3.1"),
            ("mqttv3.1.1", "mqttv3.1.1"),
            ("mqttv3.1, mqtt", "mqttv3.1"),
            ("chat, mqtt, mqttv3.1", "mqtt"),
            ("chat,,mqttv3.1.1", "mqttv3.1.1"),
        ] {
            let line = format!("Sec-WebSocket-Protocol: {offer}");
            let Upgrade::Accept {
                response, protocol, ..
            } = ws(&changed("Sec-WebSocket-Protocol", &line))
            else {
                panic!("{offer}");
            };
            assert_eq!(protocol, chosen, "{offer}");
            assert_eq!(header(&response, "Sec-WebSocket-Protocol"), Some(chosen));
        }
        // several header fields: their values in order
        let mut lines = GOOD.to_vec();
        lines.pop();
        lines.push("Sec-WebSocket-Protocol: chat");
        lines.push("Sec-WebSocket-Protocol: mqttv3.1");
        lines.push("Sec-WebSocket-Protocol: mqtt");
        let u = ws(&request(&lines));
        assert!(matches!(
            u,
            Upgrade::Accept {
                protocol: "mqttv3.1",
                ..
            }
        ));
        // only what the caller supports
        let u = upgrade(&request(GOOD), "/ws", &["mqttv3.1"]);
        assert_eq!(status(&u), 400);
    }

    #[test]
    fn rejects_each_bad_header() {
        let cases: &[(&str, &str, u16)] = &[
            ("GET", "POST /ws HTTP/1.1", 400),
            ("GET", "GET /ws HTTP/1.0", 400),
            ("GET", "GET /mqtt HTTP/1.1", 404),
            ("GET", "GET / HTTP/1.1", 404),
            ("GET", "GET /ws/ HTTP/1.1", 404),
            ("GET", "GET http://localhost/other HTTP/1.1", 404),
            ("Host", "", 400),
            ("Host", "Host:", 400),
            ("Upgrade", "", 400),
            ("Upgrade", "Upgrade: h2c", 400),
            ("Upgrade", "Upgrade: websockets", 400),
            ("Connection", "", 400),
            ("Connection", "Connection: keep-alive", 400),
            ("Connection", "Connection: Upgraded", 400),
            ("Sec-WebSocket-Key", "", 400),
            (
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j",
                400,
            ),
            (
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",
                400,
            ),
            (
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==",
                400,
            ),
            (
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!=",
                400,
            ),
            (
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZWVl",
                400,
            ),
            ("Sec-WebSocket-Version", "", 426),
            ("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8", 426),
            ("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13, 8", 426),
            ("Sec-WebSocket-Protocol", "", 400),
            (
                "Sec-WebSocket-Protocol",
                "Sec-WebSocket-Protocol: chat",
                400,
            ),
            (
                "Sec-WebSocket-Protocol",
                "Sec-WebSocket-Protocol: MQTT",
                400,
            ),
            ("Sec-WebSocket-Protocol", "Sec-WebSocket-Protocol:", 400),
        ];
        for (prefix, with, want) in cases {
            let u = ws(&changed(prefix, with));
            let Upgrade::Reject { response, reason } = &u else {
                panic!("{with:?} accepted");
            };
            assert_eq!(status(&u), *want, "{with:?}: {reason}");
            assert!(reason.starts_with(&want.to_string()), "{reason}");
            assert_eq!(
                header(response, "Connection").map(|c| c.contains("close")),
                Some(true)
            );
            let body_at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let len: usize = header(response, "Content-Length").unwrap().parse().unwrap();
            assert_eq!(response.len() - body_at, len);
            if *want == 426 {
                assert_eq!(header(response, "Sec-WebSocket-Version"), Some("13"));
                assert_eq!(header(response, "Upgrade"), Some("websocket"));
            }
        }
        // duplicated fields that must be single
        for dup in [
            "Host: other",
            "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==",
            "Sec-WebSocket-Version: 13",
        ] {
            let mut lines = GOOD.to_vec();
            lines.push(dup);
            let u = ws(&request(&lines));
            assert!(matches!(status(&u), 400 | 426), "{dup}: {u:?}");
        }
        // a body would be read as frames
        for extra in ["Content-Length: 5", "Transfer-Encoding: chunked"] {
            let mut lines = GOOD.to_vec();
            lines.push(extra);
            assert_eq!(status(&ws(&request(&lines))), 400, "{extra}");
        }
        let mut lines = GOOD.to_vec();
        lines.push("Content-Length: 0");
        assert!(matches!(ws(&request(&lines)), Upgrade::Accept { .. }));
        // not HTTP at all
        assert_eq!(
            status(&ws(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")),
            400
        );
        assert_eq!(status(&ws(b"GET /ws HTTP/1.1\r\nHo st: x\r\n\r\n")), 400);
    }

    #[test]
    fn oversized_requests_are_refused() {
        // incomplete past the limit
        let mut big = b"GET /ws HTTP/1.1\r\nX-Filler: ".to_vec();
        big.resize(MAX_REQUEST, b'a');
        assert_eq!(ws(&big), Upgrade::Partial);
        big.push(b'a');
        assert_eq!(status(&ws(&big)), 431);
        // complete but past the limit: refused just the same
        let mut lines = GOOD.to_vec();
        let filler = format!("X-Filler: {}", "a".repeat(MAX_REQUEST));
        lines.push(&filler);
        assert_eq!(status(&ws(&request(&lines))), 431);
        // too many header fields
        let mut lines = GOOD.to_vec();
        let many: Vec<String> = (0..MAX_HEADERS).map(|i| format!("X-{i}: y")).collect();
        lines.extend(many.iter().map(String::as_str));
        assert_eq!(status(&ws(&request(&lines))), 431);
    }

    #[test]
    fn partial_request_then_frames_in_the_same_buffer() {
        let req = request(GOOD);
        for n in 0..req.len() {
            assert_eq!(ws(&req[..n]), Upgrade::Partial, "{n} bytes");
        }
        let frame = masked_frame(FIN | OP_BINARY, MQTT_CONNECT, KEY);
        let mut both = req.clone();
        both.extend_from_slice(&frame);
        let Upgrade::Accept { consumed, .. } = ws(&both) else {
            panic!()
        };
        assert_eq!(consumed, req.len());
        let mut input = BytesMut::from(&both[consumed..]);
        let (mut out, mut control) = (BytesMut::new(), Vec::new());
        let ev = Decoder::default().decode(&mut input, &mut out, &mut control, u64::MAX);
        assert_eq!(ev, Ok(Event::None));
        assert_eq!(&out[..], MQTT_CONNECT);
        assert!(input.is_empty() && control.is_empty());
    }

    /// Decode `input` at once: (result, out, control, bytes left).
    fn decode(input: &[u8], max_frame: u64) -> (Result<Event, WsError>, Vec<u8>, Vec<u8>, usize) {
        let mut d = Decoder::default();
        let mut input = BytesMut::from(input);
        let (mut out, mut control) = (BytesMut::new(), Vec::new());
        let r = d.decode(&mut input, &mut out, &mut control, max_frame);
        (r, out.to_vec(), control, input.len())
    }

    fn error_code(input: &[u8], max_frame: u64) -> u16 {
        match decode(input, max_frame).0 {
            Err(e) => e.code(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn masked_frames_of_every_length_form() {
        for (len, header) in [
            (0, 6),
            (1, 6),
            (125, 6),
            (126, 8),
            (65535, 8),
            (65536, 14),
            (70000, 14),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + i / 256) as u8).collect();
            let frame = masked_frame(FIN | OP_BINARY, &payload, KEY);
            assert_eq!(frame.len(), header + len, "{len}");
            match header {
                6 => assert_eq!(frame[1], MASK | len as u8),
                8 => {
                    assert_eq!(frame[1], MASK | 126);
                    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]) as usize, len);
                }
                _ => {
                    assert_eq!(frame[1], MASK | 127);
                    assert_eq!(
                        u64::from_be_bytes(frame[2..10].try_into().unwrap()),
                        len as u64
                    );
                }
            }
            assert_eq!(&frame[header - 4..header], &KEY);
            let (r, out, control, left) = decode(&frame, u64::MAX);
            assert_eq!(r, Ok(Event::None));
            assert_eq!(out, payload, "{len}");
            assert!(control.is_empty());
            assert_eq!(left, 0);
            // exactly at the limit is fine, one over is 1009
            assert_eq!(decode(&frame, len as u64).1, payload);
            if len > 0 {
                assert_eq!(error_code(&frame, len as u64 - 1), MESSAGE_TOO_BIG);
            }
        }
    }

    #[test]
    fn unmask_matches_bytewise_xor_at_every_length() {
        let key = [0xa1, 0x02, 0xff, 0x5c];
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x3c).collect();
            let mut fast = data.clone();
            unmask(&mut fast, key);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow, "{len}");
        }
    }

    #[test]
    fn rfc_6455_section_5_7_examples() {
        // "A single-frame masked text message" ("Hello"), sent as binary
        let hello = [
            0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(decode(&hello, 125).1, b"Hello");
        let mut text = hello;
        text[0] = 0x81;
        assert_eq!(error_code(&text, 125), UNSUPPORTED_DATA);
        // a masked Ping "Hello": the Pong is "Unmasked Ping response" with
        // the Pong opcode, 0x8a 0x05 "Hello"
        let mut ping = hello;
        ping[0] = 0x89;
        let (r, out, control, left) = decode(&ping, 125);
        assert_eq!((r, out, left), (Ok(Event::None), vec![], 0));
        assert_eq!(control, b"\x8a\x05Hello");
        // "256 bytes binary message in a single unmasked frame" and "64KiB
        // binary message in a single unmasked frame": the server's headers
        let mut out = BytesMut::new();
        binary_header(&mut out, 256);
        binary_header(&mut out, 65_536);
        assert_eq!(
            &out[..],
            b"\x82\x7e\x01\x00\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"
        );
    }

    #[test]
    fn longer_length_forms_than_needed_are_read() {
        let mut frame = vec![FIN | OP_BINARY, MASK | 127];
        frame.extend_from_slice(&3u64.to_be_bytes());
        frame.extend_from_slice(&KEY);
        frame.extend_from_slice(&masked_frame(0, b"abc", KEY)[6..]);
        let mut frame16 = vec![FIN | OP_BINARY, MASK | 126, 0, 3];
        frame16.extend_from_slice(&frame[10..]);
        for f in [frame, frame16] {
            assert_eq!(decode(&f, u64::MAX).1, b"abc");
        }
    }

    #[test]
    fn fragments_with_interleaved_ping_and_pong() {
        let mut input = Vec::new();
        input.extend(masked_frame(OP_BINARY, &MQTT_CONNECT[..3], KEY));
        input.extend(masked_frame(FIN | OP_PING, b"are you there", [9, 8, 7, 6]));
        input.extend(masked_frame(OP_CONTINUATION, &MQTT_CONNECT[3..8], KEY));
        input.extend(masked_frame(FIN | OP_PONG, b"unsolicited", KEY));
        input.extend(masked_frame(OP_CONTINUATION, b"", KEY));
        input.extend(masked_frame(FIN | OP_CONTINUATION, &MQTT_CONNECT[8..], KEY));
        // a second message, unfragmented, then an empty ping
        input.extend(masked_frame(FIN | OP_BINARY, b"\xc0\x00", KEY));
        input.extend(masked_frame(FIN | OP_PING, b"", KEY));
        let (r, out, control, left) = decode(&input, 1024);
        assert_eq!(r, Ok(Event::None));
        let mut want = MQTT_CONNECT.to_vec();
        want.extend_from_slice(b"\xc0\x00");
        assert_eq!(out, want);
        let mut pongs = vec![FIN | OP_PONG, 13];
        pongs.extend_from_slice(b"are you there");
        pongs.extend_from_slice(&[FIN | OP_PONG, 0]);
        assert_eq!(control, pongs);
        assert_eq!(left, 0);
    }

    #[test]
    fn every_error() {
        let f = |first: u8, payload: &[u8]| masked_frame(first, payload, KEY);
        let cat = |frames: &[Vec<u8>]| frames.concat();
        let mut unmasked = f(FIN | OP_BINARY, b"abc");
        unmasked[1] &= !MASK;
        let mut top_bit = vec![FIN | OP_BINARY, MASK | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        top_bit.extend_from_slice(&KEY);
        let mut ping_126 = vec![FIN | OP_PING, MASK | 126, 0, 126];
        ping_126.extend_from_slice(&KEY);
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked", unmasked, 1002),
            ("rsv1", f(0x40 | FIN | OP_BINARY, b"x"), 1002),
            ("rsv2", f(0x20 | FIN | OP_BINARY, b"x"), 1002),
            ("rsv3", f(0x10 | FIN | OP_PING, b"x"), 1002),
            ("opcode 3", f(FIN | 0x3, b""), 1002),
            ("opcode 7", f(FIN | 0x7, b""), 1002),
            ("opcode 0xb", f(FIN | 0xb, b""), 1002),
            ("opcode 0xf", f(FIN | 0xf, b""), 1002),
            ("ping 126", f(FIN | OP_PING, &[0; 126]), 1002),
            ("ping 126, header only", ping_126, 1002),
            (
                "close 126",
                f(FIN | OP_CLOSE, &[0x03, 0xe8].repeat(63)),
                1002,
            ),
            ("fragmented ping", f(OP_PING, b""), 1002),
            ("fragmented pong", f(OP_PONG, b""), 1002),
            ("fragmented close", f(OP_CLOSE, b""), 1002),
            ("continuation first", f(FIN | OP_CONTINUATION, b"x"), 1002),
            (
                "continuation after a whole message",
                cat(&[f(FIN | OP_BINARY, b"x"), f(OP_CONTINUATION, b"y")]),
                1002,
            ),
            (
                "binary inside a message",
                cat(&[f(OP_BINARY, b"x"), f(FIN | OP_BINARY, b"y")]),
                1002,
            ),
            (
                "text inside a message",
                cat(&[f(OP_BINARY, b"x"), f(FIN | OP_TEXT, b"y")]),
                1003,
            ),
            ("text", f(FIN | OP_TEXT, b"{}"), 1003),
            ("text fragment", f(OP_TEXT, b"{"), 1003),
            ("64-bit top bit", top_bit, 1002),
            ("too big", f(FIN | OP_BINARY, &[0; 200]), 1009),
            (
                "too big continuation",
                cat(&[f(OP_BINARY, b""), f(OP_CONTINUATION, &[0; 101])]),
                1009,
            ),
            ("close 1 byte", f(FIN | OP_CLOSE, b"\x03"), 1002),
            ("close 0", f(FIN | OP_CLOSE, b"\x00\x00"), 1002),
            ("close 999", f(FIN | OP_CLOSE, &999u16.to_be_bytes()), 1002),
            (
                "close 1004",
                f(FIN | OP_CLOSE, &1004u16.to_be_bytes()),
                1002,
            ),
            (
                "close 1005",
                f(FIN | OP_CLOSE, &1005u16.to_be_bytes()),
                1002,
            ),
            (
                "close 1006",
                f(FIN | OP_CLOSE, &1006u16.to_be_bytes()),
                1002,
            ),
            (
                "close 1015",
                f(FIN | OP_CLOSE, &1015u16.to_be_bytes()),
                1002,
            ),
            (
                "close 2999",
                f(FIN | OP_CLOSE, &2999u16.to_be_bytes()),
                1002,
            ),
            (
                "close 5000",
                f(FIN | OP_CLOSE, &5000u16.to_be_bytes()),
                1002,
            ),
            (
                "close reason not UTF-8",
                f(FIN | OP_CLOSE, b"\x03\xe8ok\xc3"),
                1007,
            ),
        ];
        for (what, input, code) in cases {
            let (r, ..) = decode(&input, 100);
            let e = r.expect_err(what);
            assert_eq!(e.code(), code, "{what}: {e}");
            assert_eq!(e.close, close_frame(code));
            assert!(!e.text.is_empty());
        }
        // an error shows with its header, before the payload arrives
        let big = f(FIN | OP_BINARY, &[0; 70_000]);
        assert_eq!(error_code(&big[..10], 65_536), MESSAGE_TOO_BIG);
        assert_eq!(
            error_code(&f(FIN | OP_TEXT, b"abc")[..2], 100),
            UNSUPPORTED_DATA
        );
    }

    #[test]
    fn frames_before_an_error_are_delivered() {
        let mut input = masked_frame(FIN | OP_BINARY, b"ok", KEY);
        input.extend(masked_frame(FIN | OP_PING, b"p", KEY));
        input.extend(masked_frame(FIN | OP_TEXT, b"no", KEY));
        let (r, out, control, _) = decode(&input, 100);
        assert_eq!(r.unwrap_err().code(), UNSUPPORTED_DATA);
        assert_eq!(out, b"ok");
        assert_eq!(control, [FIN | OP_PONG, 1, b'p']);
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        for frame in [
            masked_frame(FIN | OP_BINARY, b"", KEY),
            masked_frame(FIN | OP_BINARY, MQTT_CONNECT, KEY),
            masked_frame(FIN | OP_BINARY, &[5; 300], KEY),
            masked_frame(FIN | OP_BINARY, &[6; 65_536], KEY),
            masked_frame(FIN | OP_PING, b"hi", KEY),
            masked_frame(FIN | OP_CLOSE, b"\x03\xe8", KEY),
        ] {
            let mut d = Decoder::default();
            let (mut out, mut control) = (BytesMut::new(), Vec::new());
            let mut input = BytesMut::new();
            // byte by byte for small frames; in big steps for the large one
            let step = if frame.len() > 1000 { 997 } else { 1 };
            let mut fed = 0;
            while fed + step < frame.len() {
                input.extend_from_slice(&frame[fed..fed + step]);
                fed += step;
                let r = d.decode(&mut input, &mut out, &mut control, u64::MAX);
                assert_eq!(r, Ok(Event::None));
                assert_eq!(input.len(), fed, "nothing consumed");
                assert!(out.is_empty() && control.is_empty());
            }
            input.extend_from_slice(&frame[fed..]);
            let r = d.decode(&mut input, &mut out, &mut control, u64::MAX);
            assert!(input.is_empty());
            assert!(r.is_ok());
        }
        // a whole frame then a partial one: the first goes, the rest stays
        let mut input = masked_frame(FIN | OP_BINARY, b"one", KEY);
        let second = masked_frame(FIN | OP_BINARY, b"two", KEY);
        input.extend_from_slice(&second[..5]);
        let (r, out, _, left) = decode(&input, 100);
        assert_eq!((r, out, left), (Ok(Event::None), b"one".to_vec(), 5));
    }

    #[test]
    fn close_is_echoed_and_ends_decoding() {
        for (payload, code) in [
            (b"".to_vec(), None),
            (b"\x03\xe8".to_vec(), Some(1000)),
            (b"\x03\xe9going away".to_vec(), Some(1001)),
            ([&b"\x0b\xb8"[..], "ça va".as_bytes()].concat(), Some(3000)),
            (b"\x13\x87".to_vec(), Some(4999)),
            (b"\x03\xf4".to_vec(), Some(1012)),
        ] {
            let mut input = masked_frame(FIN | OP_CLOSE, &payload, KEY);
            let close_len = input.len();
            input.extend(masked_frame(FIN | OP_BINARY, b"after", KEY));
            let mut d = Decoder::default();
            let mut buf = BytesMut::from(&input[..]);
            let (mut out, mut control) = (BytesMut::new(), Vec::new());
            let r = d.decode(&mut buf, &mut out, &mut control, 100);
            let reply = match code {
                Some(c) => close_frame(c),
                None => vec![0x88, 0],
            };
            assert_eq!(r, Ok(Event::Close { reply, code }));
            assert_eq!(buf.len(), input.len() - close_len);
            assert!(out.is_empty());
            // nothing after a Close is read
            let r = d.decode(&mut buf, &mut out, &mut control, 100);
            assert_eq!(r, Ok(Event::None));
            assert_eq!(buf.len(), input.len() - close_len);
            assert!(out.is_empty() && control.is_empty());
        }
    }

    #[test]
    fn server_frame_headers() {
        for (len, want) in [
            (0, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65_535, vec![0x82, 126, 0xff, 0xff]),
            (65_536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = BytesMut::new();
            let n = binary_header(&mut out, len);
            assert_eq!(&out[..], &want[..], "{len}");
            assert_eq!(n, want.len());
        }
        assert_eq!(close_frame(1002), [0x88, 2, 0x03, 0xea]);
        assert_eq!(close_frame(NORMAL_CLOSURE), [0x88, 2, 0x03, 0xe8]);
    }

    #[test]
    fn fuzz_seeds_reach_what_they_name() {
        let seeds: std::collections::BTreeMap<_, _> = seeds().into_iter().collect();
        let stream = |name: &str| &seeds[name][1..];
        for name in [
            "handshake",
            "handshake-connect",
            "handshake-mqttv3.1",
            "fragmented-ping-close",
            "query-string",
        ] {
            assert!(matches!(ws(stream(name)), Upgrade::Accept { .. }), "{name}");
        }
        for (name, code) in [
            ("bad-version", 426),
            ("wrong-path", 404),
            ("no-protocol", 400),
            ("bad-key", 400),
            ("post", 400),
        ] {
            assert_eq!(status(&ws(stream(name))), code, "{name}");
        }
        assert_eq!(ws(stream("partial-request")), Upgrade::Partial);
        let Upgrade::Accept { consumed, .. } = ws(stream("fragmented-ping-close")) else {
            panic!()
        };
        let (r, out, control, _) = decode(&stream("fragmented-ping-close")[consumed..], 125);
        assert_eq!(
            r.unwrap(),
            Event::Close {
                reply: close_frame(1000),
                code: Some(1000)
            }
        );
        assert_eq!(
            (&out[..], &control[..]),
            (MQTT_CONNECT, &b"\x8a\x04ping"[..])
        );
        let (r, out, ..) = decode(stream("frames-only"), 125);
        assert_eq!(
            (r.unwrap(), &out[..]),
            (
                Event::Close {
                    reply: close_frame(1000),
                    code: Some(1000)
                },
                MQTT_CONNECT
            )
        );
        assert_eq!(
            decode(stream("close-empty"), 125).0.unwrap(),
            Event::Close {
                reply: vec![0x88, 0],
                code: None
            }
        );
        assert_eq!(decode(stream("len16"), u64::MAX).1.len(), 300);
        assert_eq!(decode(stream("len64-non-minimal"), u64::MAX).1, b"hello");
        for (name, code) in [
            ("len64-top-bit", 1002),
            ("too-big", 1009),
            ("close-1-byte", 1002),
            ("close-1005", 1002),
            ("close-reason-not-utf8", 1007),
            ("text-frame", 1003),
            ("unmasked", 1002),
            ("rsv1-set", 1002),
            ("opcode-3", 1002),
            ("ping-fragmented", 1002),
            ("ping-126", 1002),
            ("continuation-first", 1002),
            ("binary-inside-message", 1002),
        ] {
            assert_eq!(error_code(stream(name), 125), code, "{name}");
        }
    }

    #[test]
    fn fuzz_seeds_pass() {
        let seeds = seeds();
        assert!(seeds.len() >= 5);
        for (name, data) in seeds {
            let r = std::panic::catch_unwind(|| fuzz_websocket(&data));
            assert!(r.is_ok(), "{name}");
        }
        fuzz_websocket(b"");
        fuzz_websocket(b"\x00");
    }
}
