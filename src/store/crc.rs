//! CRC-32C (Castagnoli): the per-record checksum of the store. The CPU's
//! instruction where there is one (`sys::crc`), else table driven.

// `i` runs over 0..256, the table's indices (`get_mut` is not const).
#[allow(clippy::indexing_slicing)]
const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    if let Some(c) = crate::sys::crc::crc32c_update(!0, data) {
        return !c;
    }
    table_crc32c(data)
}

fn table_crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        let entry = TABLE.get(usize::from(c as u8 ^ b)).copied().unwrap_or(0);
        c = entry ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(super::crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn instruction_and_table_agree() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for start in 0..9 {
            for end in [start, start + 1, start + 7, start + 8, 100, 999, 1000] {
                let d = &data[start..end.max(start)];
                assert_eq!(super::crc32c(d), super::table_crc32c(d), "{start}..{end}");
            }
        }
    }
}
