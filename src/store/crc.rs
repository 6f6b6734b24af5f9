//! CRC-32C (Castagnoli): the per-record checksum of the store, from the
//! `crc32c` crate. It picks the CPU's CRC instruction at run time (SSE 4.2
//! on x86-64, the CRC extension on ARMv8) and runs three independent
//! streams through it at once, combining them at the end, so the
//! instruction's latency is hidden; elsewhere it falls back to
//! slicing-by-8 tables. The values are the standard CRC-32C ones
//! (reflected polynomial 0x82F63B78, initial value and final XOR all ones),
//! so records written by earlier versions verify unchanged.

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

#[cfg(test)]
mod tests {
    use super::crc32c;

    /// The definition, one bit at a time: the reference the crate is
    /// checked against.
    fn bitwise(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // RFC 3720 B.4: 32 bytes of zeros, of ones, ascending, descending.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let up: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&up), 0x46DD_794E);
        let down: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&down), 0x113F_DB5C);
    }

    #[test]
    fn agrees_with_the_definition_at_every_length_and_alignment() {
        // Long enough for the crate's three-stream path (blocks of several
        // KiB), with every start offset and short and odd tails.
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for start in 0..9 {
            for end in [0, 1, 7, 8, 9, 100, 999, 1000, 4095, 8193, 24_577, 39_990] {
                let d = &data[start..(start + end).min(data.len())];
                assert_eq!(crc32c(d), bitwise(d), "{start}+{end}");
            }
        }
    }

    /// Checked-in stream logs (fuzz seeds written by the earlier, hand-made
    /// CRC code): every whole record still verifies.
    #[test]
    fn checked_in_records_verify() {
        for (name, log) in [
            (
                "chunks",
                &include_bytes!("../../fuzz/corpus/stream_log/chunks")[..],
            ),
            (
                "one-large",
                &include_bytes!("../../fuzz/corpus/stream_log/one-large")[..],
            ),
        ] {
            let mut rest = log;
            let mut records = 0;
            while rest.len() >= 8 {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                let crc = u32::from_be_bytes(rest[4..8].try_into().unwrap());
                let payload = &rest[8..8 + len];
                assert_eq!(crc32c(payload), crc, "{name}: record {records}");
                rest = &rest[8 + len..];
                records += 1;
            }
            assert!(records > 0 && rest.is_empty(), "{name}");
        }
    }
}
