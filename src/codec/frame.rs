//! Frames: `type u8 | channel u16 | size u32 | payload[size] | 0xCE`.
//! Parsing is incremental (httparse style): `Ok(None)` means "need more
//! bytes" and is never an error; a frame larger than the negotiated
//! `frame_max` is rejected from its 7-byte header alone, before any payload is
//! buffered, so a peer cannot make the broker allocate more than `frame_max`.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{Error, Result};
use super::method::Method;
use super::properties::ContentHeader;

/// The protocol header a 0-9-1 client sends first, and the one the server
/// answers with when the client asks for anything else.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Frame type: method.
pub const FRAME_METHOD: u8 = 1;
/// Frame type: content header.
pub const FRAME_HEADER: u8 = 2;
/// Frame type: content body.
pub const FRAME_BODY: u8 = 3;
/// Frame type: heartbeat.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Frame header (type, channel, size) length.
pub const FRAME_HEADER_SIZE: usize = 7;
/// Header + frame-end: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD: usize = 8;
/// The spec's FRAME-MIN-SIZE; also the limit before connection.tune-ok
/// (RabbitMQ enforces 4096 until the client has tuned).
pub const FRAME_MIN_SIZE: u32 = 4096;

/// Most a partial frame makes [`parse_raw_frame`] reserve ahead of the bytes
/// that have arrived; a larger frame's buffer grows as its bytes come in.
const RESERVE_MAX: usize = 131_072 + FRAME_OVERHEAD;

/// Outcome of checking the protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHeader {
    /// `AMQP 0 0 9 1`: proceed with connection.start.
    Ok,
    /// Anything else: reply with [`PROTOCOL_HEADER`] and close the socket.
    Mismatch,
}

/// Check the first 8 bytes of a connection: `None` while fewer than 8 have
/// arrived and all of them match.
pub fn parse_protocol_header(buf: &[u8]) -> Option<ProtocolHeader> {
    // Fail fast on the first byte that differs, even before 8 have arrived.
    if buf.iter().zip(PROTOCOL_HEADER.iter()).any(|(a, b)| a != b) {
        // AMQP 0-9-1 also accepts "AMQP\x01\x01\x00\x09" from some old
        // clients; RabbitMQ refuses it too, so the answer is the same.
        return Some(ProtocolHeader::Mismatch);
    }
    if buf.len() < 8 {
        None
    } else {
        Some(ProtocolHeader::Ok)
    }
}

/// A frame split off the input buffer, payload not yet decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFrame {
    /// Frame type octet.
    pub kind: u8,
    /// Channel number.
    pub channel: u16,
    /// Payload (a shared slice of the input; no copy).
    pub payload: Bytes,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method frame.
    Method(u16, Method),
    /// A content header frame.
    Header(u16, Box<ContentHeader>),
    /// A content body frame (a shared slice of the input).
    Body(u16, Bytes),
    /// A heartbeat frame (channel should be 0).
    Heartbeat(u16),
}

impl Frame {
    /// The channel the frame is on.
    pub fn channel(&self) -> u16 {
        match *self {
            Frame::Method(c, _) | Frame::Header(c, _) | Frame::Body(c, _) | Frame::Heartbeat(c) => {
                c
            }
        }
    }

    /// Encode the whole frame (header, payload, frame-end) into `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Method(ch, m) => write_method(out, *ch, m),
            Frame::Header(ch, h) => {
                let at = begin_frame(out, FRAME_HEADER, *ch);
                h.encode(out);
                end_frame(out, at);
            }
            Frame::Body(ch, b) => {
                out.reserve(b.len() + FRAME_OVERHEAD);
                out.put_u8(FRAME_BODY);
                out.put_u16(*ch);
                out.put_u32(b.len() as u32);
                out.put_slice(b);
                out.put_u8(FRAME_END);
            }
            Frame::Heartbeat(ch) => {
                out.put_u8(FRAME_HEARTBEAT);
                out.put_u16(*ch);
                out.put_u32(0);
                out.put_u8(FRAME_END);
            }
        }
    }
}

impl RawFrame {
    /// Decode the payload according to the frame type.
    pub fn decode(self) -> Result<Frame> {
        match self.kind {
            FRAME_METHOD => Ok(Frame::Method(self.channel, Method::decode(&self.payload)?)),
            FRAME_HEADER => Ok(Frame::Header(
                self.channel,
                Box::new(ContentHeader::decode(&self.payload)?),
            )),
            FRAME_BODY => Ok(Frame::Body(self.channel, self.payload)),
            FRAME_HEARTBEAT => {
                if !self.payload.is_empty() {
                    return Err(Error::frame("heartbeat frame with a payload"));
                }
                Ok(Frame::Heartbeat(self.channel))
            }
            other => Err(Error::frame(format!("unknown frame type {other}"))),
        }
    }
}

/// Split one complete frame off the front of `buf`.
///
/// `Ok(None)`: not enough bytes yet (nothing consumed). `Err`: 501
/// FRAME_ERROR for an unknown type, a frame over `frame_max`, or a missing
/// frame-end octet; the connection must be closed.
pub fn parse_raw_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<RawFrame>> {
    let Some(&[kind, c0, c1, s0, s1, s2, s3]) = buf.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let channel = u16::from_be_bytes([c0, c1]);
    let size = u32::from_be_bytes([s0, s1, s2, s3]) as usize;
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(Error::frame(format!("unknown frame type {kind}")));
    }
    // Spec 4.2.3: a peer MUST NOT send frames larger than the agreed size;
    // frame_max counts the whole frame, header and end octet included.
    if frame_max != 0 && size.saturating_add(FRAME_OVERHEAD) > frame_max as usize {
        return Err(Error::frame(format!(
            "frame size {} exceeds frame_max {frame_max}",
            size.saturating_add(FRAME_OVERHEAD)
        )));
    }
    let total = FRAME_HEADER_SIZE + size + 1;
    if buf.len() < total {
        // Make room for the rest, but never more than `RESERVE_MAX` ahead of
        // the data: with frame_max 0 (no limit) a 7-byte header announcing a
        // 4 GiB frame must not allocate 4 GiB (found by fuzz/roundtrip).
        buf.reserve((total - buf.len()).min(RESERVE_MAX));
        return Ok(None);
    }
    if buf.get(total - 1) != Some(&FRAME_END) {
        return Err(Error::frame("frame end octet missing (expected 0xCE)"));
    }
    let frame = buf.split_to(total).freeze();
    Ok(Some(RawFrame {
        kind,
        channel,
        payload: frame.slice(FRAME_HEADER_SIZE..total - 1),
    }))
}

/// Split and decode one frame: [`parse_raw_frame`] then [`RawFrame::decode`].
pub fn parse_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>> {
    match parse_raw_frame(buf, frame_max)? {
        Some(raw) => raw.decode().map(Some),
        None => Ok(None),
    }
}

/// Start a frame of `kind` on `channel` with a size slot to back-patch;
/// returns the slot offset for [`end_frame`].
pub fn begin_frame(out: &mut BytesMut, kind: u8, channel: u16) -> usize {
    out.put_u8(kind);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

/// Back-patch the size started by [`begin_frame`] and append the frame end.
pub fn end_frame(out: &mut BytesMut, at: usize) {
    super::writer::patch_len(out, at);
    out.put_u8(FRAME_END);
}

/// Encode a method frame.
pub fn write_method(out: &mut BytesMut, channel: u16, method: &Method) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    method.encode(out);
    end_frame(out, at);
}

/// Encode a heartbeat frame.
pub fn write_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}
