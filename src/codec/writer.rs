//! Encoding primitives on `BytesMut`. Sizes that are only known after the
//! content is written (frame payloads, tables) are back-patched, so nothing is
//! encoded twice and no temporary buffer is allocated.

use bytes::{BufMut, BytesMut};

/// Append a shortstr. Strings longer than 255 bytes are cut at 255 (callers
/// validate names before they get here; the codec must never panic).
pub fn put_shortstr(out: &mut BytesMut, s: &[u8]) {
    let s = s.get(..255).unwrap_or(s);
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

/// Append a longstr.
pub fn put_longstr(out: &mut BytesMut, s: &[u8]) {
    out.put_u32(s.len() as u32);
    out.put_slice(s);
}

/// Reserve a big-endian u32 length slot; returns its offset for [`patch_u32`].
pub fn reserve_u32(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.put_u32(0);
    at
}

/// Write the number of bytes written since the slot at `at` (excluding the
/// slot itself) into the slot.
pub fn patch_len(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at - 4) as u32;
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Pack up to 8 consecutive bit arguments into one octet (first bit = bit 0).
pub fn pack_bits(bits: &[bool]) -> u8 {
    bits.iter()
        .enumerate()
        .fold(0u8, |acc, (i, &b)| acc | ((b as u8) << i))
}
