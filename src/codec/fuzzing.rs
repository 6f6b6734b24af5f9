//! Entry points for the cargo-fuzz targets in `fuzz/` (and the test that
//! replays their corpora). Each checks the codec's invariants and panics only
//! when one is broken.

#![allow(clippy::expect_used)]

use bytes::{Bytes, BytesMut};

use super::frame::{parse_raw_frame, Frame};
use super::method::Method;
use super::properties::ContentHeader;
use super::reader::Reader;
use super::table::FieldTable;

/// Largest frame the fuzz targets allow.
const FUZZ_FRAME_MAX: u32 = 131_072;

/// Split arbitrary bytes into frames until an error or need-more.
pub fn frame(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(raw)) = parse_raw_frame(&mut buf, FUZZ_FRAME_MAX) {
        assert!(raw.payload.len() + 8 <= FUZZ_FRAME_MAX as usize);
        if let Ok(f) = raw.decode() {
            roundtrip_frame(&f);
        }
    }
}

/// Decode a method payload; whatever decodes must re-encode to a payload
/// that decodes to the same value.
pub fn method(data: &[u8]) {
    let b = Bytes::copy_from_slice(data);
    if let Ok(m) = Method::decode(&b) {
        let mut out = BytesMut::new();
        m.encode(&mut out);
        let again = Method::decode(&out.freeze()).expect("re-encoded method must decode");
        // Compare via Debug so NaN floats in tables compare equal to themselves.
        assert_eq!(format!("{again:?}"), format!("{m:?}"));
        // The check of a client's strings only refuses, never changes.
        if let Ok(strict) = Method::decode_from_client(&b) {
            assert_eq!(format!("{strict:?}"), format!("{m:?}"));
        }
    } else {
        assert!(Method::decode_from_client(&b).is_err());
    }
}

/// Decode a field table; round trip as for methods.
pub fn table(data: &[u8]) {
    let b = Bytes::copy_from_slice(data);
    if let Ok(t) = FieldTable::decode(&mut Reader::new(&b)) {
        let mut out = BytesMut::new();
        t.encode(&mut out);
        let out = out.freeze();
        let again =
            FieldTable::decode(&mut Reader::new(&out)).expect("re-encoded table must decode");
        assert_eq!(format!("{again:?}"), format!("{t:?}"));
    }
}

/// Decode a content header payload; round trip as for methods.
pub fn properties(data: &[u8]) {
    let b = Bytes::copy_from_slice(data);
    if let Ok(h) = ContentHeader::decode(&b) {
        let mut out = BytesMut::new();
        h.encode(&mut out);
        let again = ContentHeader::decode(&out.freeze()).expect("re-encoded header must decode");
        assert_eq!(format!("{again:?}"), format!("{h:?}"));
    }
}

/// Frames of any kind: decode, encode, decode again, compare.
pub fn roundtrip(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(raw)) = parse_raw_frame(&mut buf, 0) {
        if let Ok(f) = raw.decode() {
            roundtrip_frame(&f);
        }
    }
}

fn roundtrip_frame(f: &Frame) {
    let mut out = BytesMut::new();
    f.encode(&mut out);
    let again = parse_raw_frame(&mut out, 0)
        .expect("re-encoded frame must split")
        .expect("re-encoded frame must be complete")
        .decode()
        .expect("re-encoded frame must decode");
    // Compare via Debug so NaN floats in tables compare equal to themselves.
    assert_eq!(format!("{again:?}"), format!("{f:?}"));
    assert!(out.is_empty());
}
