//! CRC-32C with the CPU's instruction (SSE 4.2 on x86-64), checked at run
//! time; `store::crc` falls back to its table elsewhere.

/// Continue the CRC-32C register `crc` (not inverted) over `data`; None
/// when this CPU has no CRC-32C instruction.
#[cfg(target_arch = "x86_64")]
pub fn crc32c_update(crc: u32, data: &[u8]) -> Option<u32> {
    if !std::is_x86_feature_detected!("sse4.2") {
        return None;
    }
    // SAFETY: the CPU has SSE 4.2 (checked above).
    Some(unsafe { update_sse42(crc, data) })
}

/// Continue the CRC-32C register `crc` (not inverted) over `data`; None
/// when this CPU has no CRC-32C instruction.
#[cfg(not(target_arch = "x86_64"))]
pub fn crc32c_update(_crc: u32, _data: &[u8]) -> Option<u32> {
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn update_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(crc);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        c = _mm_crc32_u64(c, u64::from_le_bytes(b));
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    c
}
