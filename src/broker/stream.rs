//! A stream queue (`x-queue-type: stream`), as RabbitMQ serves one over
//! AMQP 0-9-1: publishing appends to its log ([`crate::store::stream`]);
//! every consumer reads the log from its own position, attached where its
//! `x-stream-offset` says (default `next`); acknowledgements only give
//! credit back. A consumer may read only messages whose
//! `x-stream-filter-value` is among its `x-stream-filter` values (and,
//! with `x-stream-match-unfiltered`, those without one): warren filters
//! each message exactly, where RabbitMQ's per-chunk Bloom filter lets some
//! others through.

use std::collections::HashMap;

use bytes::Bytes;

use crate::codec::{FieldTable, FieldValue};
use crate::store::stream::{Attach, Cursor, StreamLog};

/// The publish header carrying a message's filter value.
pub const FILTER_VALUE: &str = "x-stream-filter-value";

/// One consumer's reading state.
#[derive(Debug)]
pub struct Reader {
    /// Where it reads next.
    pub cursor: Cursor,
    /// `x-stream-filter` values (empty: no filter).
    pub filter: Vec<Bytes>,
    /// `x-stream-match-unfiltered`.
    pub match_unfiltered: bool,
    /// Messages below this offset are passed over (a numeric
    /// `x-stream-offset` beyond the end waits for that offset).
    pub min_offset: u64,
}

impl Reader {
    /// Does a message with filter value `v` go to this reader?
    pub fn wants(&self, v: Option<&[u8]>) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        match v {
            Some(v) => self.filter.iter().any(|f| f[..] == *v),
            None => self.match_unfiltered,
        }
    }
}

/// A stream: its log and its consumers' positions (by their key among
/// the queue's consumers).
#[derive(Debug)]
pub struct Stream {
    /// The log.
    pub log: StreamLog,
    /// Readers by consumer key.
    pub readers: HashMap<u32, Reader>,
}

impl Stream {
    /// Memory it holds: the log's pending records and indexes, and the
    /// readers' read-ahead blocks.
    pub fn memory(&self) -> u64 {
        self.log.memory()
            + self
                .readers
                .values()
                .map(|r| r.cursor.buffered() as u64 + 64)
                .sum::<u64>()
    }

    /// A stream over `log`.
    pub fn new(log: StreamLog) -> Stream {
        Stream {
            log,
            readers: HashMap::new(),
        }
    }
}

/// What is wrong with a consumer's stream arguments (the text of a 406).
pub type ArgText = String;

/// Parse an interval such as `"30m"`, `"1h"`, `"7D"` into milliseconds:
/// digits then one unit of `Y M D h m s` (RabbitMQ's `x-max-age` and
/// `x-stream-offset` intervals).
pub fn interval_ms(s: &[u8]) -> Option<u64> {
    let (unit, digits) = s.split_last()?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let secs: u64 = match unit {
        b'Y' => 365 * 86_400,
        b'M' => 30 * 86_400,
        b'D' => 86_400,
        b'h' => 3_600,
        b'm' => 60,
        b's' => 1,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1000)
}

/// A consumer's `x-stream-offset` (absent: `next`) at wall-clock time
/// `now` (ms since the epoch).
pub fn attach_point(args: &FieldTable, now: u64) -> Result<Attach, ArgText> {
    let Some(v) = args.get("x-stream-offset") else {
        return Ok(Attach::Next);
    };
    let bad = || format!("Invalid value for  x-stream-offset: {}", show(v));
    match v {
        FieldValue::LongStr(s) | FieldValue::Bytes(s) => match &s[..] {
            b"first" => Ok(Attach::First),
            b"last" => Ok(Attach::Last),
            b"next" => Ok(Attach::Next),
            other => interval_ms(other)
                .filter(|&ms| ms > 0)
                .map(|ms| Attach::Time(now.saturating_sub(ms)))
                .ok_or_else(bad),
        },
        FieldValue::Timestamp(secs) => Ok(Attach::Time(secs.saturating_mul(1000))),
        // A negative offset is the first (RabbitMQ).
        v => match v.as_i64() {
            Some(n) => Ok(u64::try_from(n).map_or(Attach::First, Attach::Offset)),
            None => Err(bad()),
        },
    }
}

fn show(v: &FieldValue) -> String {
    match v {
        FieldValue::LongStr(s) | FieldValue::Bytes(s) => String::from_utf8_lossy(s).into_owned(),
        other => match other.as_i64() {
            Some(n) => n.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// A consumer's `x-stream-filter` (a string or an array of strings) and
/// `x-stream-match-unfiltered`.
pub fn filter_of(args: &FieldTable) -> Result<(Vec<Bytes>, bool), ArgText> {
    let filter = match args.get("x-stream-filter") {
        None => Vec::new(),
        Some(FieldValue::LongStr(s)) | Some(FieldValue::Bytes(s)) => vec![s.clone()],
        Some(FieldValue::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for v in a {
                match v.as_bytes() {
                    Some(s) => out.push(s.clone()),
                    None => return Err(format!("Invalid value for x-stream-filter: {}", show(v))),
                }
            }
            out
        }
        Some(v) => return Err(format!("Invalid value for x-stream-filter: {}", show(v))),
    };
    let unfiltered = match args.get("x-stream-match-unfiltered") {
        None => false,
        Some(FieldValue::Bool(b)) => *b,
        Some(v) => {
            return Err(format!(
                "Invalid value for x-stream-match-unfiltered: {}",
                show(v)
            ))
        }
    };
    Ok((filter, unfiltered))
}

/// The filter value a published message carries in its headers.
pub fn filter_value(headers: Option<&FieldTable>) -> Option<Bytes> {
    headers?.get(FILTER_VALUE)?.as_bytes().cloned()
}

/// `header` (a raw content header payload) with `x-stream-offset` =
/// `offset` (a long) first in its headers table, written to `out`; false
/// if the header does not parse (then `out` is left empty).
pub fn header_with_offset(header: &[u8], offset: u64, out: &mut Vec<u8>) -> bool {
    out.clear();
    let done = splice_offset(header, offset, out).is_some();
    if !done {
        out.clear();
    }
    done
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn splice_offset(header: &[u8], offset: u64, out: &mut Vec<u8>) -> Option<()> {
    const KEY: &[u8] = b"\x0fx-stream-offset";
    // class u16, weight u16, body size u64, flags u16 (one word: no
    // continuation bit in AMQP 0-9-1's basic class), then the properties.
    let flags = be_u16(header, 12)?;
    let mut at = 14;
    // content-type (bit 15) and content-encoding (bit 14) are shortstrs
    // before the headers table (bit 13).
    for bit in [15u16, 14] {
        if flags & (1 << bit) != 0 {
            at += 1 + usize::from(*header.get(at)?);
        }
    }
    let head = header.get(..at)?;
    let has_table = flags & (1 << 13) != 0;
    let (table, rest) = if has_table {
        let len = be_u32(header, at)? as usize;
        (header.get(at + 4..at + 4 + len)?, at + 4 + len)
    } else {
        (&[][..], at)
    };
    if table.windows(KEY.len()).any(|w| w == KEY) {
        // The publisher set one: replaced (rare; decoded and encoded).
        let mut h = crate::codec::ContentHeader::decode(&Bytes::copy_from_slice(header)).ok()?;
        h.properties
            .headers
            .get_or_insert_with(FieldTable::new)
            .insert("x-stream-offset", FieldValue::I64(offset as i64));
        let mut b = bytes::BytesMut::new();
        h.encode(&mut b);
        out.extend_from_slice(&b);
        return Some(());
    }
    out.extend_from_slice(head);
    out.get_mut(12..14)?
        .copy_from_slice(&(flags | 1 << 13).to_be_bytes());
    let entry = KEY.len() + 1 + 8;
    out.extend_from_slice(&((table.len() + entry) as u32).to_be_bytes());
    out.extend_from_slice(KEY);
    out.push(b'l');
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(table);
    out.extend_from_slice(header.get(rest..)?);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BasicProperties, ContentHeader};

    fn encode(p: BasicProperties) -> Vec<u8> {
        let h = ContentHeader {
            class_id: 60,
            body_size: 3,
            properties: p,
        };
        let mut b = bytes::BytesMut::new();
        h.encode(&mut b);
        b.to_vec()
    }

    #[test]
    fn offset_header_is_spliced_in() {
        let mut t = FieldTable::new();
        t.insert("a", FieldValue::I32(1));
        let cases = [
            BasicProperties::default(),
            BasicProperties {
                content_type: Some(Bytes::from_static(b"text/plain")),
                correlation_id: Some(Bytes::from_static(b"c")),
                ..BasicProperties::default()
            },
            BasicProperties {
                content_encoding: Some(Bytes::from_static(b"gzip")),
                headers: Some(t.clone()),
                delivery_mode: Some(2),
                ..BasicProperties::default()
            },
        ];
        for p in cases {
            let raw = encode(p.clone());
            let mut out = Vec::new();
            assert!(header_with_offset(&raw, 42, &mut out));
            let h = ContentHeader::decode(&Bytes::from(out.clone())).unwrap();
            let hs = h.properties.headers.clone().unwrap();
            assert_eq!(hs.get("x-stream-offset"), Some(&FieldValue::I64(42)));
            let mut want = p.clone();
            let mut wt = want.headers.take().unwrap_or_default();
            wt.insert("x-stream-offset", FieldValue::I64(42));
            let mut got = h.properties.clone();
            let gt = got.headers.take().unwrap();
            assert_eq!(got, want);
            for (k, v) in &wt.0 {
                assert_eq!(gt.get(std::str::from_utf8(k).unwrap()), Some(v));
            }
            assert_eq!(h.body_size, 3);
        }
        assert!(!header_with_offset(b"\x00\x3c", 1, &mut Vec::new()));
        // A publisher's own x-stream-offset is replaced.
        let mut own = FieldTable::new();
        own.insert(
            "x-stream-offset",
            FieldValue::LongStr(Bytes::from_static(b"mine")),
        );
        let raw = encode(BasicProperties {
            headers: Some(own),
            ..BasicProperties::default()
        });
        let mut out = Vec::new();
        assert!(header_with_offset(&raw, 9, &mut out));
        let h = ContentHeader::decode(&Bytes::from(out.clone()))
            .unwrap()
            .properties
            .headers
            .unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("x-stream-offset"), Some(&FieldValue::I64(9)));
    }

    #[test]
    fn attach_points() {
        let mut a = FieldTable::new();
        assert_eq!(attach_point(&a, 0), Ok(Attach::Next));
        for (v, want) in [
            (
                FieldValue::LongStr(Bytes::from_static(b"first")),
                Attach::First,
            ),
            (
                FieldValue::LongStr(Bytes::from_static(b"last")),
                Attach::Last,
            ),
            (FieldValue::I64(7), Attach::Offset(7)),
            (FieldValue::I8(3), Attach::Offset(3)),
            (FieldValue::Timestamp(5), Attach::Time(5000)),
            (
                FieldValue::LongStr(Bytes::from_static(b"1m")),
                Attach::Time(40_000),
            ),
        ] {
            a.insert("x-stream-offset", v);
            assert_eq!(attach_point(&a, 100_000), Ok(want));
        }
        for v in [
            FieldValue::LongStr(Bytes::from_static(b"foo")),
            FieldValue::F64(1.5),
        ] {
            a.insert("x-stream-offset", v);
            assert!(attach_point(&a, 0).is_err());
        }
        assert_eq!(interval_ms(b"7D"), Some(7 * 86_400_000));
        assert_eq!(interval_ms(b"h"), None);
        assert_eq!(interval_ms(b"1x"), None);
    }
}
