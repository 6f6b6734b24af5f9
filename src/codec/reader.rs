//! `Reader`: a cursor over one complete frame payload. Every read is bounds
//! checked; running short of bytes inside a complete frame is 502
//! SYNTAX_ERROR (a *partial frame* is handled one level up, in `frame.rs`).
//! Strings come back as `Bytes` slices of the frame: no copy, no allocation.

use bytes::Bytes;

use super::error::{Error, Result};

/// A bounds-checked cursor over a frame payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a Bytes) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Current offset from the start of the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn need(&self, n: usize) -> Result<()> {
        if self.remaining() < n {
            Err(Error::syntax("truncated arguments"))
        } else {
            Ok(())
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.need(N)?;
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        Ok(out)
    }

    /// One octet.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// Big-endian u16.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Big-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Big-endian u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// `n` raw bytes as a shared slice of the frame.
    pub fn take(&mut self, n: usize) -> Result<Bytes> {
        self.need(n)?;
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// A shortstr: u8 length then bytes.
    pub fn shortstr(&mut self) -> Result<Bytes> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    /// A longstr: u32 length then bytes.
    pub fn longstr(&mut self) -> Result<Bytes> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos.min(self.buf.len())..);
        self.pos = self.buf.len();
        b
    }
}
