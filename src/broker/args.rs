//! Queue arguments (`x-…`) parsed and validated the way RabbitMQ does:
//! a wrong type or value is 406 PRECONDITION_FAILED naming the argument.

use crate::codec::{FieldTable, FieldValue};

/// What a full queue does with a new message (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready message.
    #[default]
    DropHead,
    /// Refuse the new message (publisher gets basic.nack under confirms).
    RejectPublish,
    /// Refuse and dead-letter the new message.
    RejectPublishDlx,
}

/// Parsed queue arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueArgs {
    /// `x-max-length`: most ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: most ready body bytes.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
}

fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::LongStr(_) | FieldValue::Bytes(_) => "longstr",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal(..) => "decimal",
        FieldValue::Array(_) => "array",
        FieldValue::Table(_) => "table",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Void => "void",
        _ => "long",
    }
}

fn non_negative(key: &str, v: &FieldValue) -> Result<u64, (String, String)> {
    match v.as_i64() {
        Some(n) if n >= 0 => Ok(n as u64),
        Some(n) => Err((key.to_string(), format!("{{value_negative,{n}}}"))),
        None => Err((
            key.to_string(),
            format!("{{unacceptable_type,{}}}", type_name(v)),
        )),
    }
}

impl QueueArgs {
    /// Parse and validate; `Err` holds the argument name and what is wrong
    /// with it, for the 406 text.
    pub fn parse(args: &FieldTable) -> Result<QueueArgs, (String, String)> {
        let mut out = QueueArgs::default();
        for (k, v) in &args.0 {
            let key = String::from_utf8_lossy(k);
            match &*key {
                "x-max-length" => out.max_length = Some(non_negative(&key, v)?),
                "x-max-length-bytes" => out.max_length_bytes = Some(non_negative(&key, v)?),
                "x-overflow" => {
                    out.overflow = match v.as_bytes().map(|b| &b[..]) {
                        Some(b"drop-head") => Overflow::DropHead,
                        Some(b"reject-publish") => Overflow::RejectPublish,
                        Some(b"reject-publish-dlx") => Overflow::RejectPublishDlx,
                        Some(other) => {
                            return Err((
                                key.to_string(),
                                format!(
                                    "{{unknown_overflow_type,<<\"{}\">>}}",
                                    String::from_utf8_lossy(other)
                                ),
                            ))
                        }
                        None => {
                            return Err((
                                key.to_string(),
                                format!("{{unacceptable_type,{}}}", type_name(v)),
                            ))
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
