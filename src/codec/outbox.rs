//! `Outbox`: a connection's pending output as an ordered list of byte chunks.
//! Small frames are encoded straight into a tail `BytesMut`; large message
//! bodies are appended as shared `Bytes` (no copy), so one vectored write can
//! send a burst of deliveries. Sans-IO: the server asks for slices and reports
//! how many bytes the socket took.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::frame::{begin_frame, end_frame, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_METHOD};
use super::method::Method;
use super::writer::put_shortstr;

/// Bodies shorter than this are copied into the tail buffer; longer ones are
/// queued as shared chunks (an iovec entry costs more than copying a few
/// hundred bytes).
pub const COPY_THRESHOLD: usize = 2048;

/// Pending output of one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Sealed chunks, oldest first.
    queued: VecDeque<Bytes>,
    /// Total length of `queued`.
    queued_len: usize,
    /// Bytes being appended to (after `queued`).
    tail: BytesMut,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.queued_len + self.tail.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer small frames are encoded into (appended after everything
    /// queued so far).
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let b = self.tail.split().freeze();
            self.queued_len += b.len();
            self.queued.push_back(b);
        }
    }

    /// Append shared bytes: copied when small, queued by reference otherwise.
    pub fn push_bytes(&mut self, b: &Bytes) {
        if b.len() < COPY_THRESHOLD {
            self.tail.extend_from_slice(b);
        } else {
            self.seal();
            self.queued_len += b.len();
            self.queued.push_back(b.clone());
        }
    }

    /// Append a method frame.
    pub fn method(&mut self, channel: u16, m: &Method) {
        super::frame::write_method(&mut self.tail, channel, m);
    }

    /// Append a basic.deliver method frame without building a `Method`.
    pub fn deliver(
        &mut self,
        channel: u16,
        consumer_tag: &[u8],
        delivery_tag: u64,
        redelivered: bool,
        exchange: &[u8],
        routing_key: &[u8],
    ) {
        let out = &mut self.tail;
        let at = begin_frame(out, FRAME_METHOD, channel);
        out.put_u16(60);
        out.put_u16(60);
        put_shortstr(out, consumer_tag);
        out.put_u64(delivery_tag);
        out.put_u8(redelivered as u8);
        put_shortstr(out, exchange);
        put_shortstr(out, routing_key);
        end_frame(out, at);
    }

    /// Append a content header (from its raw encoded payload) and the body,
    /// split into body frames of at most `frame_max` bytes (0 = no limit).
    pub fn content(&mut self, channel: u16, header_payload: &[u8], body: &Bytes, frame_max: u32) {
        self.content_from(channel, header_payload, body, Some(body), frame_max);
    }

    /// Like [`Outbox::content`] for a body that is copied (a small one).
    pub fn content_copied(
        &mut self,
        channel: u16,
        header_payload: &[u8],
        body: &[u8],
        frame_max: u32,
    ) {
        self.content_from(channel, header_payload, body, None, frame_max);
    }

    fn content_from(
        &mut self,
        channel: u16,
        header_payload: &[u8],
        body: &[u8],
        shared: Option<&Bytes>,
        frame_max: u32,
    ) {
        let at = begin_frame(&mut self.tail, FRAME_HEADER, channel);
        self.tail.extend_from_slice(header_payload);
        end_frame(&mut self.tail, at);
        let max = if frame_max == 0 {
            usize::MAX
        } else {
            (frame_max as usize).saturating_sub(8).max(1)
        };
        let mut off = 0;
        while off < body.len() {
            let n = (body.len() - off).min(max);
            self.tail.put_u8(FRAME_BODY);
            self.tail.put_u16(channel);
            self.tail.put_u32(n as u32);
            match shared {
                Some(b) if n >= COPY_THRESHOLD => self.push_bytes(&b.slice(off..off + n)),
                _ => self
                    .tail
                    .extend_from_slice(body.get(off..off + n).unwrap_or_default()),
            }
            self.tail.put_u8(FRAME_END);
            off += n;
        }
    }

    /// Fill `dst` with slices of the pending output, oldest first; returns how
    /// many entries were filled.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let chunks = self
            .queued
            .iter()
            .map(|b| &b[..])
            .chain(std::iter::once(&self.tail[..]))
            .filter(|s| !s.is_empty());
        for (slot, chunk) in dst.iter_mut().zip(chunks) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// Drop the first `n` bytes (what the socket accepted).
    pub fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queued.front_mut() else {
                let k = n.min(self.tail.len());
                self.tail.advance(k);
                return;
            };
            if front.len() <= n {
                n -= front.len();
                self.queued_len -= front.len();
                self.queued.pop_front();
            } else {
                front.advance(n);
                self.queued_len -= n;
                n = 0;
            }
        }
    }

    /// Drop everything after the first `len` bytes (output queued after a
    /// point that must not reach the peer after all).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.queued_len {
            self.tail.truncate(len - self.queued_len);
            return;
        }
        self.tail.clear();
        while self.queued_len > len {
            let Some(back) = self.queued.back_mut() else {
                break;
            };
            let excess = self.queued_len - len;
            if back.len() <= excess {
                self.queued_len -= back.len();
                self.queued.pop_back();
            } else {
                back.truncate(back.len() - excess);
                self.queued_len = len;
            }
        }
    }

    /// Everything pending, concatenated (for tests and the in-memory core).
    pub fn take_all(&mut self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for b in &self.queued {
            v.extend_from_slice(b);
        }
        v.extend_from_slice(&self.tail);
        self.queued.clear();
        self.queued_len = 0;
        self.tail.clear();
        v
    }
}
