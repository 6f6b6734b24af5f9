//! The wire side of a test message: a pre-encoded basic.publish (method,
//! content header and body frames) whose body starts with a 16-byte stamp
//! (send time in nanoseconds since the run's epoch, then a sequence number),
//! and a scanner that splits incoming frames with `parse_raw_frame`, reads
//! only the body size out of content headers and the stamp out of the first
//! body frame, and decodes nothing else on the delivery path.

use bytes::{BufMut, Bytes, BytesMut};
use warren::codec::frame::{
    begin_frame, end_frame, parse_raw_frame, write_method, FRAME_BODY, FRAME_END, FRAME_HEADER,
    FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
};
use warren::codec::{BasicAck, BasicProperties, BasicPublish, ContentHeader, Method};

use super::client::{PerfError, Result};

/// Bytes at the start of every body: timestamp (u64 BE), sequence (u64 BE).
pub const STAMP_LEN: usize = 16;
/// The sequence number's high bits carry the publisher id.
pub const SEQ_ID_SHIFT: u32 = 40;

/// Frame size used to split bodies when the broker sets no limit.
const DEFAULT_FRAME_MAX: u32 = 131_072;

/// One encoded message, ready to copy and stamp.
#[derive(Clone)]
pub struct Template {
    /// Method + header + body frames.
    pub bytes: Vec<u8>,
    /// Offset of the first body byte within `bytes`.
    pub body_at: usize,
}

impl Template {
    /// basic.publish on channel 1 to `exchange`/`routing_key` with a
    /// zero-filled body of `size` (>= 16) bytes split to `frame_max`.
    pub fn publish(
        exchange: &str,
        routing_key: &str,
        size: usize,
        persistent: bool,
        frame_max: u32,
    ) -> Template {
        let mut out = BytesMut::with_capacity(size + 256);
        write_method(
            &mut out,
            1,
            &Method::BasicPublish(BasicPublish {
                ticket: 0,
                exchange: Bytes::copy_from_slice(exchange.as_bytes()),
                routing_key: Bytes::copy_from_slice(routing_key.as_bytes()),
                mandatory: false,
                immediate: false,
            }),
        );
        let at = begin_frame(&mut out, FRAME_HEADER, 1);
        ContentHeader {
            class_id: 60,
            body_size: size as u64,
            properties: BasicProperties {
                delivery_mode: Some(if persistent { 2 } else { 1 }),
                ..Default::default()
            },
        }
        .encode(&mut out);
        end_frame(&mut out, at);
        let fm = if frame_max == 0 {
            DEFAULT_FRAME_MAX
        } else {
            frame_max
        };
        let chunk = fm as usize - FRAME_OVERHEAD;
        let body_at = out.len() + 7;
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk);
            out.put_u8(FRAME_BODY);
            out.put_u16(1);
            out.put_u32(n as u32);
            out.put_bytes(0, n);
            out.put_u8(FRAME_END);
            left -= n;
        }
        Template {
            bytes: out.to_vec(),
            body_at,
        }
    }

    /// Write the sequence number into the copy of this template at `msg`.
    #[inline]
    pub fn set_seq(&self, msg: &mut [u8], seq: u64) {
        if let Some(s) = msg.get_mut(self.body_at + 8..self.body_at + 16) {
            s.copy_from_slice(&seq.to_be_bytes());
        }
    }

    /// Write the send time into the copy of this template at `msg`.
    #[inline]
    pub fn set_time(&self, msg: &mut [u8], nanos: u64) {
        if let Some(s) = msg.get_mut(self.body_at..self.body_at + 8) {
            s.copy_from_slice(&nanos.to_be_bytes());
        }
    }
}

/// A pre-encoded basic.ack frame on channel 1 whose tag and `multiple` bit
/// are patched in place.
pub struct AckFrame([u8; 21]);

impl Default for AckFrame {
    fn default() -> AckFrame {
        let mut out = BytesMut::with_capacity(21);
        write_method(
            &mut out,
            1,
            &Method::BasicAck(BasicAck {
                delivery_tag: 0,
                multiple: false,
            }),
        );
        let mut a = [0u8; 21];
        a.copy_from_slice(&out);
        AckFrame(a)
    }
}

impl AckFrame {
    /// The frame acknowledging `tag` (and, if `multiple`, all before it).
    #[inline]
    pub fn encode(&mut self, tag: u64, multiple: bool) -> &[u8] {
        self.0[11..19].copy_from_slice(&tag.to_be_bytes());
        self.0[19] = multiple as u8;
        &self.0
    }
}

/// A complete message seen by [`Scanner`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    /// The content method's id: 60 deliver, 40 publish (relay), 50 return,
    /// 71 get-ok.
    pub method_id: u16,
    /// Delivery tag (basic.deliver only, else 0).
    pub tag: u64,
    /// The redelivered bit (basic.deliver only).
    pub redelivered: bool,
    /// Send time and sequence from the body, if it carried them.
    pub stamp: Option<(u64, u64)>,
    /// Body size.
    pub size: u64,
    /// The `x-stream-offset` header (a stream's delivery), if present.
    pub stream_offset: Option<u64>,
}

/// What the scanner found.
#[derive(Debug)]
pub enum Event {
    /// A whole message (method, header and all body frames).
    Msg(Msg),
    /// Any other method, decoded.
    Method(u16, Method),
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Idle,
    Header,
    Body,
}

/// Splits frames off a read buffer and reassembles messages cheaply.
#[derive(Default)]
pub struct Scanner {
    state: State,
    cur: Msg,
    remaining: u64,
}

fn be64(b: Option<&[u8]>) -> Option<u64> {
    b.and_then(|s| s.try_into().ok()).map(u64::from_be_bytes)
}

/// The integer `x-stream-offset` in a content header's headers table
/// (payload: class, weight, body size, property flags, properties), found
/// without decoding the table: the key's bytes, its type and value.
pub fn stream_offset(p: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\x0fx-stream-offset";
    let flags = u16::from_be_bytes(p.get(12..14)?.try_into().ok()?);
    if flags & (1 << 13) == 0 {
        return None;
    }
    let mut at = 14;
    // content-type and content-encoding (shortstrs) come before headers.
    for bit in [15u16, 14] {
        if flags & (1 << bit) != 0 {
            at += 1 + usize::from(*p.get(at)?);
        }
    }
    let len = u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
    let table = p.get(at + 4..at + 4 + len)?;
    let k = table.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let v = table.get(k + 1..)?;
    let int = |n: usize| -> Option<u64> {
        let b = v.get(..n)?;
        let mut x = [0u8; 8];
        x.get_mut(8 - n..)?.copy_from_slice(b);
        Some(u64::from_be_bytes(x))
    };
    match table.get(k)? {
        b'l' | b'L' | b'T' => int(8),
        b'I' | b'i' => int(4),
        b's' | b'u' | b'U' => int(2),
        b'b' | b'B' => int(1),
        _ => None,
    }
}

impl Scanner {
    /// The next event in `buf`, or `None` when more bytes are needed.
    pub fn next(&mut self, buf: &mut BytesMut, frame_max: u32) -> Result<Option<Event>> {
        loop {
            let Some(f) = parse_raw_frame(buf, frame_max)? else {
                return Ok(None);
            };
            let p = &f.payload;
            match f.kind {
                FRAME_METHOD => {
                    if self.state != State::Idle {
                        return Err(PerfError::Protocol(
                            "method frame in the middle of a message".into(),
                        ));
                    }
                    if let Some(&[0, 60, m0, m1]) = p.get(..4) {
                        let method_id = u16::from_be_bytes([m0, m1]);
                        if matches!(method_id, 40 | 50 | 60 | 71) {
                            let (tag, redelivered) = if method_id == 60 {
                                // consumer-tag shortstr, delivery tag, then
                                // the redelivered bit
                                let l = p.get(4).copied().unwrap_or(0) as usize;
                                (
                                    be64(p.get(5 + l..13 + l)).unwrap_or(0),
                                    p.get(13 + l).is_some_and(|b| b & 1 != 0),
                                )
                            } else {
                                (0, false)
                            };
                            self.cur = Msg {
                                method_id,
                                tag,
                                redelivered,
                                stamp: None,
                                size: 0,
                                stream_offset: None,
                            };
                            self.state = State::Header;
                            continue;
                        }
                    }
                    return Ok(Some(Event::Method(f.channel, Method::decode(p)?)));
                }
                FRAME_HEADER => {
                    if self.state != State::Header {
                        return Err(PerfError::Protocol("unexpected content header".into()));
                    }
                    let size = be64(p.get(4..12))
                        .ok_or_else(|| PerfError::Protocol("content header too short".into()))?;
                    self.cur.size = size;
                    self.cur.stream_offset = stream_offset(p);
                    self.remaining = size;
                    if size == 0 {
                        self.state = State::Idle;
                        return Ok(Some(Event::Msg(self.cur)));
                    }
                    self.state = State::Body;
                }
                FRAME_BODY => {
                    if self.state != State::Body {
                        return Err(PerfError::Protocol("unexpected body frame".into()));
                    }
                    if self.remaining == self.cur.size && p.len() >= STAMP_LEN {
                        if let (Some(t), Some(s)) = (be64(p.get(0..8)), be64(p.get(8..16))) {
                            self.cur.stamp = Some((t, s));
                        }
                    }
                    let n = p.len() as u64;
                    if n > self.remaining {
                        return Err(PerfError::Protocol("body larger than announced".into()));
                    }
                    self.remaining -= n;
                    if self.remaining == 0 {
                        self.state = State::Idle;
                        return Ok(Some(Event::Msg(self.cur)));
                    }
                }
                FRAME_HEARTBEAT => {}
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_round_trips_through_scanner() {
        for (size, fm) in [(16, 131_072), (100_000, 4096), (200_000, 0)] {
            let t = Template::publish("x", "rk", size, true, fm);
            let mut m = t.bytes.clone();
            t.set_seq(&mut m, 7);
            t.set_time(&mut m, 99);
            let mut buf = BytesMut::from(&m[..]);
            let mut s = Scanner::default();
            let ev = s.next(&mut buf, fm).unwrap();
            match ev {
                Some(Event::Msg(msg)) => {
                    assert_eq!(msg.method_id, 40);
                    assert_eq!(msg.stamp, Some((99, 7)));
                    assert_eq!(msg.size, size as u64);
                }
                other => panic!("{other:?}"),
            }
            assert!(buf.is_empty());
            // And the codec agrees with the hand-made frames.
            let mut buf = BytesMut::from(&t.bytes[..]);
            let mut n = 0;
            while let Some(f) = warren::codec::parse_frame(&mut buf, fm).unwrap() {
                n += 1;
                if let warren::codec::Frame::Header(_, h) = f {
                    assert_eq!(h.body_size, size as u64);
                    assert!(h.properties.persistent());
                }
            }
            assert!(n >= 3);
        }
    }

    #[test]
    fn ack_frame_matches_codec() {
        let mut a = AckFrame::default();
        let bytes = a.encode(0x0102_0304_0506_0708, true).to_vec();
        let mut out = BytesMut::new();
        write_method(
            &mut out,
            1,
            &Method::BasicAck(BasicAck {
                delivery_tag: 0x0102_0304_0506_0708,
                multiple: true,
            }),
        );
        assert_eq!(&bytes[..], &out[..]);
    }

    #[test]
    fn stream_offset_is_read() {
        use warren::codec::{FieldTable, FieldValue};
        for (ct, offset) in [(None, 0u64), (Some("text/plain"), 123_456_789_012)] {
            let mut headers = FieldTable::new();
            headers.insert("a", FieldValue::I32(7));
            headers.insert("x-stream-offset", FieldValue::I64(offset as i64));
            let h = ContentHeader {
                class_id: 60,
                body_size: 16,
                properties: BasicProperties {
                    content_type: ct.map(|c| Bytes::copy_from_slice(c.as_bytes())),
                    headers: Some(headers),
                    delivery_mode: Some(2),
                    ..Default::default()
                },
            };
            let mut out = BytesMut::new();
            h.encode(&mut out);
            assert_eq!(stream_offset(&out), Some(offset));
        }
        let mut out = BytesMut::new();
        ContentHeader {
            class_id: 60,
            body_size: 16,
            properties: BasicProperties::default(),
        }
        .encode(&mut out);
        assert_eq!(stream_offset(&out), None);
    }

    #[test]
    fn deliver_tag_is_read() {
        let mut out = BytesMut::new();
        write_method(
            &mut out,
            1,
            &Method::BasicDeliver(warren::codec::BasicDeliver {
                consumer_tag: Bytes::from_static(b"ctag"),
                delivery_tag: 42,
                redelivered: true,
                exchange: Bytes::new(),
                routing_key: Bytes::from_static(b"q"),
            }),
        );
        let t = Template::publish("", "q", 16, false, 131_072);
        // the template minus its basic.publish frame: header + body
        let mut tail = BytesMut::from(&t.bytes[..]);
        let _ = parse_raw_frame(&mut tail, 0).unwrap();
        out.extend_from_slice(&tail);
        let mut s = Scanner::default();
        match s.next(&mut out, 0).unwrap() {
            Some(Event::Msg(m)) => {
                assert_eq!((m.method_id, m.tag, m.redelivered), (60, 42, true));
                assert_eq!(m.stamp, Some((0, 0)));
            }
            other => panic!("{other:?}"),
        }
    }
}
