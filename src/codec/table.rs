//! Field tables and field arrays: every type RabbitMQ and its clients use
//! (`t b B s u U i I l L f d D S x A T F V`). Keys are shortstrs; string
//! values are `Bytes` slices of the frame. Nesting is capped at
//! [`MAX_DEPTH`] so a hostile frame cannot drive unbounded recursion.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{Error, Result};
use super::reader::Reader;
use super::writer::{patch_len, put_longstr, put_shortstr, reserve_u32};

/// Deepest nesting of tables/arrays accepted (the outermost table is depth 1).
pub const MAX_DEPTH: usize = 32;

/// One field value. Decoding maps the spec's and RabbitMQ's aliases onto one
/// variant each (`U`/`s` → `I16`, `L`/`l` → `I64`); encoding uses RabbitMQ's
/// tags, which every client reads.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t` boolean.
    Bool(bool),
    /// `b` signed 8-bit.
    I8(i8),
    /// `B` unsigned 8-bit.
    U8(u8),
    /// `s` (RabbitMQ) or `U` (spec) signed 16-bit.
    I16(i16),
    /// `u` unsigned 16-bit.
    U16(u16),
    /// `I` signed 32-bit.
    I32(i32),
    /// `i` unsigned 32-bit.
    U32(u32),
    /// `l` (RabbitMQ) or `L` (spec) signed 64-bit.
    I64(i64),
    /// `f` 32-bit float.
    F32(f32),
    /// `d` 64-bit float.
    F64(f64),
    /// `D` decimal: scale, unscaled value.
    Decimal(u8, u32),
    /// `S` long string.
    LongStr(Bytes),
    /// `x` byte array (RabbitMQ extension).
    Bytes(Bytes),
    /// `A` field array.
    Array(Vec<FieldValue>),
    /// `T` timestamp (seconds since the epoch).
    Timestamp(u64),
    /// `F` nested table.
    Table(FieldTable),
    /// `V` void.
    Void,
}

/// A field table: ordered (key, value) pairs, as on the wire.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldTable(pub Vec<(Bytes, FieldValue)>);

impl FieldTable {
    /// An empty table.
    pub fn new() -> FieldTable {
        FieldTable(Vec::new())
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// Append an entry (replacing an existing one with the same key).
    pub fn insert(&mut self, key: impl Into<Bytes>, value: FieldValue) {
        let key = key.into();
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.0.push((key, value));
        }
    }

    /// Remove and return the value under `key`.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let i = self
            .0
            .iter()
            .position(|(k, _)| k.as_ref() == key.as_bytes())?;
        Some(self.0.remove(i).1)
    }

    /// Decode a table (u32 byte length then entries).
    pub fn decode(r: &mut Reader<'_>) -> Result<FieldTable> {
        decode_table(r, 1)
    }

    /// Encode a table with its u32 length prefix.
    pub fn encode(&self, out: &mut BytesMut) {
        let at = reserve_u32(out);
        for (k, v) in &self.0 {
            put_shortstr(out, k);
            v.encode(out);
        }
        patch_len(out, at);
    }
}

impl FieldValue {
    /// Integer view of any integer-typed value (RabbitMQ accepts every integer
    /// type for numeric arguments such as `x-message-ttl`).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(v) => v as i64,
            FieldValue::U8(v) => v as i64,
            FieldValue::I16(v) => v as i64,
            FieldValue::U16(v) => v as i64,
            FieldValue::I32(v) => v as i64,
            FieldValue::U32(v) => v as i64,
            FieldValue::I64(v) => v,
            _ => return None,
        })
    }

    /// String view of `S` and `x` values.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            FieldValue::LongStr(b) | FieldValue::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// Encode the type tag and value.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            FieldValue::Bool(v) => {
                out.put_u8(b't');
                out.put_u8(*v as u8);
            }
            FieldValue::I8(v) => {
                out.put_u8(b'b');
                out.put_i8(*v);
            }
            FieldValue::U8(v) => {
                out.put_u8(b'B');
                out.put_u8(*v);
            }
            FieldValue::I16(v) => {
                out.put_u8(b's');
                out.put_i16(*v);
            }
            FieldValue::U16(v) => {
                out.put_u8(b'u');
                out.put_u16(*v);
            }
            FieldValue::I32(v) => {
                out.put_u8(b'I');
                out.put_i32(*v);
            }
            FieldValue::U32(v) => {
                out.put_u8(b'i');
                out.put_u32(*v);
            }
            FieldValue::I64(v) => {
                out.put_u8(b'l');
                out.put_i64(*v);
            }
            FieldValue::F32(v) => {
                out.put_u8(b'f');
                out.put_f32(*v);
            }
            FieldValue::F64(v) => {
                out.put_u8(b'd');
                out.put_f64(*v);
            }
            FieldValue::Decimal(scale, v) => {
                out.put_u8(b'D');
                out.put_u8(*scale);
                out.put_u32(*v);
            }
            FieldValue::LongStr(v) => {
                out.put_u8(b'S');
                put_longstr(out, v);
            }
            FieldValue::Bytes(v) => {
                out.put_u8(b'x');
                put_longstr(out, v);
            }
            FieldValue::Array(items) => {
                out.put_u8(b'A');
                let at = reserve_u32(out);
                for item in items {
                    item.encode(out);
                }
                patch_len(out, at);
            }
            FieldValue::Timestamp(v) => {
                out.put_u8(b'T');
                out.put_u64(*v);
            }
            FieldValue::Table(t) => {
                out.put_u8(b'F');
                t.encode(out);
            }
            FieldValue::Void => out.put_u8(b'V'),
        }
    }
}

/// A sub-reader over the next `u32`-length-prefixed region.
fn sized<'a>(r: &mut Reader<'_>, holder: &'a mut Bytes) -> Result<Reader<'a>> {
    let n = r.u32()? as usize;
    if n > r.remaining() {
        return Err(Error::syntax("table or array longer than its frame"));
    }
    *holder = r.take(n)?;
    Ok(Reader::new(holder))
}

fn decode_table(r: &mut Reader<'_>, depth: usize) -> Result<FieldTable> {
    if depth > MAX_DEPTH {
        return Err(Error::syntax("field table nested too deeply"));
    }
    let mut holder = Bytes::new();
    let mut sub = sized(r, &mut holder)?;
    let mut entries = Vec::new();
    while sub.remaining() > 0 {
        let key = sub.shortstr()?;
        let value = decode_value(&mut sub, depth)?;
        entries.push((key, value));
    }
    Ok(FieldTable(entries))
}

fn decode_array(r: &mut Reader<'_>, depth: usize) -> Result<Vec<FieldValue>> {
    if depth > MAX_DEPTH {
        return Err(Error::syntax("field array nested too deeply"));
    }
    let mut holder = Bytes::new();
    let mut sub = sized(r, &mut holder)?;
    let mut items = Vec::new();
    while sub.remaining() > 0 {
        items.push(decode_value(&mut sub, depth)?);
    }
    Ok(items)
}

fn decode_value(r: &mut Reader<'_>, depth: usize) -> Result<FieldValue> {
    let tag = r.u8()?;
    Ok(match tag {
        b't' => FieldValue::Bool(r.u8()? != 0),
        b'b' => FieldValue::I8(r.u8()? as i8),
        b'B' => FieldValue::U8(r.u8()?),
        b's' | b'U' => FieldValue::I16(r.u16()? as i16),
        b'u' => FieldValue::U16(r.u16()?),
        b'I' => FieldValue::I32(r.u32()? as i32),
        b'i' => FieldValue::U32(r.u32()?),
        b'l' | b'L' => FieldValue::I64(r.u64()? as i64),
        b'f' => FieldValue::F32(f32::from_bits(r.u32()?)),
        b'd' => FieldValue::F64(f64::from_bits(r.u64()?)),
        b'D' => {
            let scale = r.u8()?;
            FieldValue::Decimal(scale, r.u32()?)
        }
        b'S' => FieldValue::LongStr(r.longstr()?),
        b'x' => FieldValue::Bytes(r.longstr()?),
        b'A' => FieldValue::Array(decode_array(r, depth + 1)?),
        b'T' => FieldValue::Timestamp(r.u64()?),
        b'F' => FieldValue::Table(decode_table(r, depth + 1)?),
        b'V' => FieldValue::Void,
        other => {
            return Err(Error::syntax(format!(
                "unknown field type {:?} in table",
                other as char
            )))
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn every_type() -> FieldTable {
        let mut inner = FieldTable::new();
        inner.insert("nested", FieldValue::LongStr(Bytes::from_static(b"yes")));
        FieldTable(vec![
            (Bytes::from_static(b"t"), FieldValue::Bool(true)),
            (Bytes::from_static(b"b"), FieldValue::I8(-5)),
            (Bytes::from_static(b"B"), FieldValue::U8(250)),
            (Bytes::from_static(b"s"), FieldValue::I16(-300)),
            (Bytes::from_static(b"u"), FieldValue::U16(60000)),
            (Bytes::from_static(b"I"), FieldValue::I32(-70000)),
            (Bytes::from_static(b"i"), FieldValue::U32(4_000_000_000)),
            (Bytes::from_static(b"l"), FieldValue::I64(-1 << 40)),
            (Bytes::from_static(b"f"), FieldValue::F32(1.5)),
            (Bytes::from_static(b"d"), FieldValue::F64(-2.25)),
            (Bytes::from_static(b"D"), FieldValue::Decimal(2, 12345)),
            (
                Bytes::from_static(b"S"),
                FieldValue::LongStr(Bytes::from_static("héllo".as_bytes())),
            ),
            (
                Bytes::from_static(b"x"),
                FieldValue::Bytes(Bytes::from_static(&[0, 1, 2, 255])),
            ),
            (
                Bytes::from_static(b"A"),
                FieldValue::Array(vec![
                    FieldValue::I32(1),
                    FieldValue::LongStr(Bytes::from_static(b"two")),
                    FieldValue::Array(vec![FieldValue::Void]),
                ]),
            ),
            (
                Bytes::from_static(b"T"),
                FieldValue::Timestamp(1_700_000_000),
            ),
            (Bytes::from_static(b"F"), FieldValue::Table(inner)),
            (Bytes::from_static(b"V"), FieldValue::Void),
        ])
    }

    fn roundtrip(t: &FieldTable) -> FieldTable {
        let mut out = BytesMut::new();
        t.encode(&mut out);
        let b = out.freeze();
        let mut r = Reader::new(&b);
        let back = FieldTable::decode(&mut r).expect("decode");
        assert_eq!(r.remaining(), 0);
        back
    }

    #[test]
    fn every_field_type_round_trips() {
        let t = every_type();
        assert_eq!(roundtrip(&t), t);
    }

    #[test]
    fn golden_bytes() {
        let t = FieldTable(vec![
            (Bytes::from_static(b"a"), FieldValue::Bool(true)),
            (Bytes::from_static(b"n"), FieldValue::I32(7)),
        ]);
        let mut out = BytesMut::new();
        t.encode(&mut out);
        assert_eq!(
            &out[..],
            &[0, 0, 0, 11, 1, b'a', b't', 1, 1, b'n', b'I', 0, 0, 0, 7]
        );
    }

    #[test]
    fn aliases_decode() {
        // spec 'U' (signed 16) and 'L' (signed 64)
        let b = Bytes::from_static(&[
            0, 0, 0, 15, 1, b'a', b'U', 0xff, 0xfe, 1, b'b', b'L', 0, 0, 0, 0, 0,
        ]);
        let mut r = Reader::new(&b);
        assert_eq!(
            FieldTable::decode(&mut r).unwrap_err().code,
            502,
            "truncated L must be a syntax error"
        );
        let b = Bytes::from_static(&[
            0, 0, 0, 16, 1, b'a', b'U', 0xff, 0xfe, 1, b'b', b'L', 0, 0, 0, 0, 0, 0, 0, 9,
        ]);
        let mut r = Reader::new(&b);
        let t = FieldTable::decode(&mut r).unwrap();
        assert_eq!(t.get("a"), Some(&FieldValue::I16(-2)));
        assert_eq!(t.get("b"), Some(&FieldValue::I64(9)));
    }

    #[test]
    fn errors_are_syntax_errors() {
        let cases: &[&[u8]] = &[
            &[0, 0, 0, 3, 1, b'a', b'?'],                // unknown type
            &[0, 0, 0, 9, 1, b'a'],                      // length beyond input
            &[0, 0, 0, 2, 5, b'a'],                      // key beyond table
            &[0, 0, 0, 7, 1, b'a', b'S', 0, 0, 0],       // longstr len truncated
            &[0, 0, 0, 8, 1, b'a', b'S', 0, 0, 0, 9, 1], // longstr beyond table
        ];
        for c in cases {
            let b = Bytes::copy_from_slice(c);
            let mut r = Reader::new(&b);
            assert_eq!(FieldTable::decode(&mut r).unwrap_err().code, 502, "{:?}", c);
        }
    }

    #[test]
    fn depth_is_limited() {
        let mut v = FieldValue::Void;
        for _ in 0..(MAX_DEPTH + 5) {
            v = FieldValue::Array(vec![v]);
        }
        let t = FieldTable(vec![(Bytes::from_static(b"deep"), v)]);
        let mut out = BytesMut::new();
        t.encode(&mut out);
        let b = out.freeze();
        let err = FieldTable::decode(&mut Reader::new(&b)).unwrap_err();
        assert_eq!(err.code, 502);
        // just within the limit decodes
        let mut v = FieldValue::Void;
        for _ in 0..(MAX_DEPTH - 1) {
            v = FieldValue::Array(vec![v]);
        }
        let t = FieldTable(vec![(Bytes::from_static(b"ok"), v)]);
        assert_eq!(roundtrip(&t), t);
    }
}
