//! `Reader`: a bounds-checked cursor over one whole packet's bytes. Running
//! short inside a complete packet is a Malformed Packet (an incomplete packet
//! never gets here: `decode` waits for all of it). Strings and binary data
//! come back as `Bytes` slices of the packet: no copy.

use bytes::{Buf, Bytes};

use super::DecodeError;

/// A cursor over the bytes of one packet (or one part of it).
#[derive(Debug, Clone)]
pub(super) struct Reader {
    buf: Bytes,
}

/// The result of every read.
pub(super) type Result<T> = std::result::Result<T, DecodeError>;

fn truncated() -> DecodeError {
    DecodeError::malformed("packet shorter than its content")
}

impl Reader {
    /// A reader over all of `buf`.
    pub(super) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    /// True when everything has been read.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes not yet read.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Malformed unless everything has been read: trailing bytes inside a
    /// packet after its content.
    pub(super) fn end(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::malformed("bytes after the end of the packet"))
        }
    }

    /// One byte.
    pub(super) fn u8(&mut self) -> Result<u8> {
        if self.buf.is_empty() {
            return Err(truncated());
        }
        Ok(self.buf.get_u8())
    }

    /// A big-endian two byte integer.
    pub(super) fn u16(&mut self) -> Result<u16> {
        if self.buf.len() < 2 {
            return Err(truncated());
        }
        Ok(self.buf.get_u16())
    }

    /// A big-endian four byte integer.
    pub(super) fn u32(&mut self) -> Result<u32> {
        if self.buf.len() < 4 {
            return Err(truncated());
        }
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer: 1 to 4 bytes, 7 bits each, least
    /// significant first. A fifth byte is malformed (MQTT 5.0 §1.5.5: "The
    /// maximum number of bytes in the Variable Byte Integer field is four").
    /// Non-minimal encodings are accepted.
    pub(super) fn varint(&mut self) -> Result<u32> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// The next `n` bytes, as a shared slice.
    pub(super) fn take(&mut self, n: usize) -> Result<Bytes> {
        if self.buf.len() < n {
            return Err(truncated());
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything left, as a shared slice.
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary data: a two byte length, then that many bytes.
    pub(super) fn binary(&mut self) -> Result<Bytes> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 encoded string: as binary data, and the bytes must be
    /// well-formed UTF-8 without U+0000.
    pub(super) fn utf8(&mut self) -> Result<Bytes> {
        let s = self.binary()?;
        if !valid_utf8(&s) {
            return Err(DecodeError::malformed("string not UTF-8, or with U+0000"));
        }
        Ok(s)
    }
}

/// A string the specs accept: well-formed UTF-8 (no surrogates, no overlong
/// forms) and no U+0000. MQTT 3.1.1 [MQTT-1.5.3-1] "The character data in a
/// UTF-8 encoded string MUST be well-formed UTF-8 ... If a Server or Client
/// receives a Control Packet containing ill-formed UTF-8 it MUST close the
/// Network Connection"; [MQTT-1.5.3-2] "A UTF-8 encoded string MUST NOT
/// include an encoding of the null character U+0000" (MQTT 5.0:
/// [MQTT-1.5.4-1], [MQTT-1.5.4-2], a Malformed Packet).
pub(super) fn valid_utf8(s: &[u8]) -> bool {
    !s.contains(&0) && std::str::from_utf8(s).is_ok()
}
