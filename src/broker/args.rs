//! Queue arguments (`x-…`) parsed and validated the way RabbitMQ does:
//! a wrong type or value is 406 PRECONDITION_FAILED naming the argument.

use bytes::Bytes;

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
    /// `x-message-ttl` in milliseconds.
    pub message_ttl: Option<u64>,
    /// `x-expires`: delete the queue after this many unused milliseconds.
    pub expires: Option<u64>,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<Bytes>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<Bytes>,
    /// `x-max-priority` (1..=255).
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
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

fn string(key: &str, v: &FieldValue) -> Result<Bytes, (String, String)> {
    v.as_bytes().cloned().ok_or_else(|| {
        (
            key.to_string(),
            format!("{{unacceptable_type,{}}}", type_name(v)),
        )
    })
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
                "x-message-ttl" => out.message_ttl = Some(non_negative(&key, v)?),
                "x-expires" => {
                    let n = non_negative(&key, v)?;
                    if n == 0 {
                        return Err((key.to_string(), "{value_zero,0}".into()));
                    }
                    out.expires = Some(n);
                }
                "x-max-priority" => {
                    let n = non_negative(&key, v)?;
                    if n > 255 {
                        return Err((key.to_string(), format!("{{value_too_big,{n}}}")));
                    }
                    // RabbitMQ treats 0 as "not a priority queue".
                    out.max_priority = (n > 0).then_some(n as u8);
                }
                "x-dead-letter-exchange" => out.dead_letter_exchange = Some(string(&key, v)?),
                "x-dead-letter-routing-key" => out.dead_letter_routing_key = Some(string(&key, v)?),
                "x-single-active-consumer" => match v {
                    FieldValue::Bool(b) => out.single_active_consumer = *b,
                    other => {
                        return Err((
                            key.to_string(),
                            format!("{{unacceptable_type,{}}}", type_name(other)),
                        ))
                    }
                },
                "x-queue-type" => match v.as_bytes().map(|b| &b[..]) {
                    // Quorum and stream queues are served as classic queues.
                    Some(b"classic" | b"quorum" | b"stream") => {}
                    Some(other) => {
                        return Err((
                            key.to_string(),
                            format!(
                                "{{unsupported_queue_type,<<\"{}\">>}}",
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
                },
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
        if out.dead_letter_routing_key.is_some() && out.dead_letter_exchange.is_none() {
            return Err((
                "x-dead-letter-routing-key".into(),
                "Key x-dead-letter-exchange should be present".into(),
            ));
        }
        Ok(out)
    }
}
