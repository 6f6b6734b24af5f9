//! Content header frames: class id, weight, body size, and the basic class's
//! 14 properties selected by flag bits (bit 15 = content-type … bit 2 =
//! cluster-id; bit 0 = "another flag word follows").

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{Error, Result};
use super::reader::Reader;
use super::table::FieldTable;
use super::writer::put_shortstr;

/// Class id of `basic`, the only class with content.
pub const BASIC_CLASS: u16 = 60;

/// The 14 basic content properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BasicProperties {
    /// MIME content type.
    pub content_type: Option<Bytes>,
    /// MIME content encoding.
    pub content_encoding: Option<Bytes>,
    /// Application headers.
    pub headers: Option<FieldTable>,
    /// 1 = transient, 2 = persistent.
    pub delivery_mode: Option<u8>,
    /// Priority 0..9 (up to 255 for RabbitMQ priority queues).
    pub priority: Option<u8>,
    /// Application correlation id.
    pub correlation_id: Option<Bytes>,
    /// Reply address.
    pub reply_to: Option<Bytes>,
    /// Per-message TTL in milliseconds, as a decimal string.
    pub expiration: Option<Bytes>,
    /// Application message id.
    pub message_id: Option<Bytes>,
    /// Timestamp (seconds).
    pub timestamp: Option<u64>,
    /// Message type name.
    pub kind: Option<Bytes>,
    /// Publishing user id (validated by RabbitMQ).
    pub user_id: Option<Bytes>,
    /// Publishing application id.
    pub app_id: Option<Bytes>,
    /// Deprecated cluster id.
    pub cluster_id: Option<Bytes>,
}

/// A decoded content header frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentHeader {
    /// Class id; must be 60 (basic).
    pub class_id: u16,
    /// Body size in bytes, carried by the body frames that follow.
    pub body_size: u64,
    /// The properties.
    pub properties: BasicProperties,
}

const F_CONTENT_TYPE: u16 = 1 << 15;
const F_CONTENT_ENCODING: u16 = 1 << 14;
const F_HEADERS: u16 = 1 << 13;
const F_DELIVERY_MODE: u16 = 1 << 12;
const F_PRIORITY: u16 = 1 << 11;
const F_CORRELATION_ID: u16 = 1 << 10;
const F_REPLY_TO: u16 = 1 << 9;
const F_EXPIRATION: u16 = 1 << 8;
const F_MESSAGE_ID: u16 = 1 << 7;
const F_TIMESTAMP: u16 = 1 << 6;
const F_TYPE: u16 = 1 << 5;
const F_USER_ID: u16 = 1 << 4;
const F_APP_ID: u16 = 1 << 3;
const F_CLUSTER_ID: u16 = 1 << 2;
const F_CONTINUATION: u16 = 1;

/// Longest chain of property flag words accepted (only the first carries
/// basic's properties; RabbitMQ skips further words).
const MAX_FLAG_WORDS: usize = 8;

impl BasicProperties {
    /// True for `delivery_mode = 2`.
    pub fn persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }

    fn flags(&self) -> u16 {
        let mut f = 0;
        let mut set = |present: bool, bit: u16| {
            if present {
                f |= bit
            }
        };
        set(self.content_type.is_some(), F_CONTENT_TYPE);
        set(self.content_encoding.is_some(), F_CONTENT_ENCODING);
        set(self.headers.is_some(), F_HEADERS);
        set(self.delivery_mode.is_some(), F_DELIVERY_MODE);
        set(self.priority.is_some(), F_PRIORITY);
        set(self.correlation_id.is_some(), F_CORRELATION_ID);
        set(self.reply_to.is_some(), F_REPLY_TO);
        set(self.expiration.is_some(), F_EXPIRATION);
        set(self.message_id.is_some(), F_MESSAGE_ID);
        set(self.timestamp.is_some(), F_TIMESTAMP);
        set(self.kind.is_some(), F_TYPE);
        set(self.user_id.is_some(), F_USER_ID);
        set(self.app_id.is_some(), F_APP_ID);
        set(self.cluster_id.is_some(), F_CLUSTER_ID);
        f
    }

    /// Decode the flag word(s) and property list.
    pub fn decode(r: &mut Reader<'_>) -> Result<BasicProperties> {
        let flags = r.u16()?;
        let mut more = flags & F_CONTINUATION != 0;
        let mut words = 1;
        while more {
            words += 1;
            if words > MAX_FLAG_WORDS {
                return Err(Error::syntax("too many property flag words"));
            }
            more = r.u16()? & F_CONTINUATION != 0;
        }
        let str_if = |r: &mut Reader<'_>, bit: u16| -> Result<Option<Bytes>> {
            if flags & bit != 0 {
                r.shortstr().map(Some)
            } else {
                Ok(None)
            }
        };
        let content_type = str_if(r, F_CONTENT_TYPE)?;
        let content_encoding = str_if(r, F_CONTENT_ENCODING)?;
        let headers = if flags & F_HEADERS != 0 {
            Some(FieldTable::decode(r)?)
        } else {
            None
        };
        let delivery_mode = if flags & F_DELIVERY_MODE != 0 {
            Some(r.u8()?)
        } else {
            None
        };
        let priority = if flags & F_PRIORITY != 0 {
            Some(r.u8()?)
        } else {
            None
        };
        let correlation_id = str_if(r, F_CORRELATION_ID)?;
        let reply_to = str_if(r, F_REPLY_TO)?;
        let expiration = str_if(r, F_EXPIRATION)?;
        let message_id = str_if(r, F_MESSAGE_ID)?;
        let timestamp = if flags & F_TIMESTAMP != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let kind = str_if(r, F_TYPE)?;
        let user_id = str_if(r, F_USER_ID)?;
        let app_id = str_if(r, F_APP_ID)?;
        let cluster_id = str_if(r, F_CLUSTER_ID)?;
        Ok(BasicProperties {
            content_type,
            content_encoding,
            headers,
            delivery_mode,
            priority,
            correlation_id,
            reply_to,
            expiration,
            message_id,
            timestamp,
            kind,
            user_id,
            app_id,
            cluster_id,
        })
    }

    /// Encode the flag word and property list.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.flags());
        let s = |out: &mut BytesMut, v: &Option<Bytes>| {
            if let Some(v) = v {
                put_shortstr(out, v)
            }
        };
        s(out, &self.content_type);
        s(out, &self.content_encoding);
        if let Some(h) = &self.headers {
            h.encode(out);
        }
        if let Some(v) = self.delivery_mode {
            out.put_u8(v);
        }
        if let Some(v) = self.priority {
            out.put_u8(v);
        }
        s(out, &self.correlation_id);
        s(out, &self.reply_to);
        s(out, &self.expiration);
        s(out, &self.message_id);
        if let Some(v) = self.timestamp {
            out.put_u64(v);
        }
        s(out, &self.kind);
        s(out, &self.user_id);
        s(out, &self.app_id);
        s(out, &self.cluster_id);
    }
}

impl ContentHeader {
    /// Decode a content header frame payload.
    pub fn decode(payload: &Bytes) -> Result<ContentHeader> {
        let mut r = Reader::new(payload);
        let class_id = r.u16()?;
        if class_id != BASIC_CLASS {
            return Err(Error::frame(format!(
                "content header for class {class_id}, only basic (60) carries content"
            )));
        }
        let _weight = r.u16()?;
        let body_size = r.u64()?;
        let properties = BasicProperties::decode(&mut r)?;
        if r.remaining() != 0 {
            return Err(Error::syntax("trailing bytes after content properties"));
        }
        Ok(ContentHeader {
            class_id,
            body_size,
            properties,
        })
    }

    /// Encode a content header payload (without frame header/end).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.class_id);
        out.put_u16(0);
        out.put_u64(self.body_size);
        self.properties.encode(out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::codec::table::FieldValue;

    fn full() -> BasicProperties {
        let mut h = FieldTable::new();
        h.insert("x-k", FieldValue::I32(3));
        BasicProperties {
            content_type: Some(Bytes::from_static(b"text/plain")),
            content_encoding: Some(Bytes::from_static(b"utf-8")),
            headers: Some(h),
            delivery_mode: Some(2),
            priority: Some(7),
            correlation_id: Some(Bytes::from_static(b"corr")),
            reply_to: Some(Bytes::from_static(b"amq.gen-x")),
            expiration: Some(Bytes::from_static(b"60000")),
            message_id: Some(Bytes::from_static(b"m1")),
            timestamp: Some(1_700_000_000),
            kind: Some(Bytes::from_static(b"t")),
            user_id: Some(Bytes::from_static(b"guest")),
            app_id: Some(Bytes::from_static(b"app")),
            cluster_id: Some(Bytes::from_static(b"c")),
        }
    }

    #[test]
    fn all_properties_round_trip() {
        for props in [BasicProperties::default(), full()] {
            let h = ContentHeader {
                class_id: 60,
                body_size: 12345,
                properties: props,
            };
            let mut out = BytesMut::new();
            h.encode(&mut out);
            assert_eq!(ContentHeader::decode(&out.freeze()).unwrap(), h);
        }
    }

    #[test]
    fn golden_delivery_mode_only() {
        let h = ContentHeader {
            class_id: 60,
            body_size: 5,
            properties: BasicProperties {
                delivery_mode: Some(2),
                ..Default::default()
            },
        };
        let mut out = BytesMut::new();
        h.encode(&mut out);
        assert_eq!(
            &out[..],
            &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x10, 0x00, 2]
        );
    }

    #[test]
    fn continuation_words_are_skipped() {
        let b = Bytes::from_static(&[
            0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0x01, 0x00, 0x00, 1,
        ]);
        let h = ContentHeader::decode(&b).unwrap();
        assert_eq!(h.properties.delivery_mode, Some(1));
    }

    #[test]
    fn bad_headers() {
        // wrong class
        let b = Bytes::from_static(&[0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(ContentHeader::decode(&b).unwrap_err().code, 501);
        // truncated property
        let b = Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0, 5, b'a']);
        assert_eq!(ContentHeader::decode(&b).unwrap_err().code, 502);
        // endless continuation
        let mut v = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        for _ in 0..20 {
            v.extend_from_slice(&[0, 1]);
        }
        assert_eq!(
            ContentHeader::decode(&Bytes::from(v)).unwrap_err().code,
            502
        );
        // trailing garbage
        let b = Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 9]);
        assert_eq!(ContentHeader::decode(&b).unwrap_err().code, 502);
    }
}
