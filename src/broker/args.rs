//! Queue arguments (`x-…`) parsed and validated the way RabbitMQ 3.10 does:
//! a wrong type or value is 406 PRECONDITION_FAILED naming the argument, with
//! RabbitMQ's texts, checked in RabbitMQ's order; re-declaring a queue with
//! other arguments is 406 naming the first difference (in the same order).
//! The `expiration` property and the `x-priority` consume argument are
//! checked here too.

use bytes::Bytes;

use crate::codec::{Error, FieldTable, FieldValue, ReplyCode};

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

impl Overflow {
    /// The `x-overflow` argument's or `overflow` policy key's value.
    pub fn parse(s: &[u8]) -> Option<Overflow> {
        Some(match s {
            b"drop-head" => Overflow::DropHead,
            b"reject-publish" => Overflow::RejectPublish,
            b"reject-publish-dlx" => Overflow::RejectPublishDlx,
            _ => return None,
        })
    }
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
    /// `x-overflow` was given (a policy's applies otherwise).
    pub overflow_set: bool,
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
    /// `x-queue-type` = quorum: deliveries carry `x-delivery-count`.
    pub quorum: bool,
    /// `x-delivery-limit` of a quorum queue: a message returned more often
    /// is dead-lettered (reason `delivery_limit`) or dropped.
    pub delivery_limit: Option<u64>,
    /// `x-delivery-limit` as given, if an integer (negative: no limit; a
    /// policy's limit combines with it).
    pub delivery_limit_arg: Option<i64>,
    /// `x-consumer-timeout`: a delivery not acknowledged in this many
    /// milliseconds closes its channel.
    pub consumer_timeout: Option<u64>,
    /// `x-queue-type` = stream: a log read by every consumer.
    pub stream: bool,
    /// A stream's `x-max-age`, milliseconds.
    pub max_age: Option<u64>,
    /// A stream's `x-stream-max-segment-size-bytes`.
    pub max_segment: Option<u64>,
    /// `x-message-deduplication` (the deduplication plugin's): a message
    /// whose `x-deduplication-header` value a message still in the queue
    /// has is not enqueued.
    pub dedup: bool,
}

/// Longest TTL or expiry RabbitMQ accepts (ten years, in milliseconds).
pub const MAX_EXPIRY_MS: u64 = 315_360_000_000;

/// Arguments compared when a queue is re-declared, in RabbitMQ's order
/// (`x-queue-type` is compared separately, absent meaning "classic").
const COMPARED: [&str; 13] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-master-locator",
];

/// Arguments of quorum queues and streams, refused for classic queues.
const NOT_CLASSIC: [&str; 8] = [
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-delivery-limit",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-quorum-initial-group-size",
    "x-queue-leader-locator",
];

/// Largest `x-stream-max-segment-size-bytes` (RabbitMQ's 3 GB).
const MAX_SEGMENT: u64 = 3_000_000_000;

/// Arguments compared when a stream is re-declared (the others are not
/// looked at, as RabbitMQ's streams do).
const COMPARED_STREAM: [&str; 3] = [
    "x-max-length-bytes",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
];

/// Arguments a stream refuses (RabbitMQ 3.10's `rabbit_stream_queue`).
const NOT_STREAM: [&str; 14] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-quorum-initial-group-size",
    "x-queue-master-locator",
];

/// What is wrong with a queue's arguments; [`ArgError::into_error`] turns it
/// into the 406 RabbitMQ sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgError {
    /// `invalid arg 'KEY' for queue 'Q' in vhost 'V': DETAIL`.
    Invalid(&'static str, String),
    /// `invalid type 'TYPE' for arg 'KEY' in queue …` (an exchange name
    /// argument that is not a string).
    InvalidType(&'static str, &'static str),
    /// `invalid arg 'KEY' for queue … of queue type rabbit_classic_queue`.
    NotClassic(&'static str),
    /// `invalid arg 'KEY' for queue … of queue type rabbit_stream_queue`.
    NotStream(&'static str),
    /// A text of its own.
    Text(String),
    /// `inequivalent arg 'KEY' for queue 'Q' in vhost 'V': DETAIL`.
    Inequivalent(&'static str, String),
}

impl ArgError {
    /// The 406 for queue `name` in `vhost`.
    pub fn into_error(self, name: &[u8], vhost: &[u8]) -> Error {
        self.into_error_for("queue", name, vhost)
    }

    /// The 406 for `what` ("queue" or "exchange") `name` in `vhost`.
    pub fn into_error_for(self, what: &str, name: &[u8], vhost: &[u8]) -> Error {
        let (q, v) = (
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(vhost),
        );
        let text = match self {
            ArgError::Invalid(k, d) => {
                format!("invalid arg '{k}' for {what} '{q}' in vhost '{v}': {d}")
            }
            ArgError::InvalidType(k, t) => {
                format!("invalid type '{t}' for arg '{k}' in {what} '{q}' in vhost '{v}'")
            }
            ArgError::NotClassic(k) => format!(
                "invalid arg '{k}' for {what} '{q}' in vhost '{v}' of queue type rabbit_classic_queue"
            ),
            ArgError::NotStream(k) => format!(
                "invalid arg '{k}' for {what} '{q}' in vhost '{v}' of queue type rabbit_stream_queue"
            ),
            ArgError::Text(t) => t,
            ArgError::Inequivalent(k, d) => {
                format!("inequivalent arg '{k}' for {what} '{q}' in vhost '{v}': {d}")
            }
        };
        Error::new(ReplyCode::PRECONDITION_FAILED, text)
    }
}

/// RabbitMQ's name for a field value's type.
pub fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal(..) => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::Bytes(_) => "binary",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
    }
}

fn longstr(v: &FieldValue) -> Option<&Bytes> {
    match v {
        FieldValue::LongStr(b) => Some(b),
        _ => None,
    }
}

fn unacceptable(key: &'static str, v: &FieldValue) -> ArgError {
    ArgError::Invalid(key, format!("{{unacceptable_type,{}}}", type_name(v)))
}

/// An integer of any width, or `"expected integer, got TYPE"`.
fn int(key: &'static str, v: &FieldValue) -> Result<i64, ArgError> {
    v.as_i64().ok_or_else(|| {
        ArgError::Invalid(key, format!("\"expected integer, got {}\"", type_name(v)))
    })
}

fn non_negative(key: &'static str, v: &FieldValue) -> Result<u64, ArgError> {
    match int(key, v)? {
        n if n < 0 => Err(ArgError::Invalid(key, format!("{{value_negative,{n}}}"))),
        n => Ok(n as u64),
    }
}

/// A TTL or expiry: 0..=[`MAX_EXPIRY_MS`].
fn expiry(key: &'static str, n: i64) -> Result<u64, ArgError> {
    if n < 0 {
        Err(ArgError::Invalid(key, format!("{{value_negative,{n}}}")))
    } else if n as u64 > MAX_EXPIRY_MS {
        Err(ArgError::Invalid(key, format!("{{value_too_large,{n}}}")))
    } else {
        Ok(n as u64)
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl QueueArgs {
    /// Parse and validate the arguments of a new queue, in RabbitMQ's order:
    /// the dead-letter exchange's type, the queue type, the classic-queue
    /// arguments, then arguments classic queues do not take.
    pub fn parse(args: &FieldTable) -> Result<QueueArgs, ArgError> {
        let mut out = QueueArgs::default();
        if let Some(v) = args.get("x-dead-letter-exchange") {
            let name = longstr(v).ok_or(ArgError::InvalidType(
                "x-dead-letter-exchange",
                type_name(v),
            ))?;
            out.dead_letter_exchange = Some(name.clone());
        }
        let mut classic = true;
        if let Some(v) = args.get("x-queue-type") {
            let t = longstr(v).ok_or_else(|| unacceptable("x-queue-type", v))?;
            match &t[..] {
                b"classic" => {}
                // A quorum queue on one node: a classic queue that counts
                // deliveries (x-delivery-count, x-delivery-limit).
                b"quorum" => {
                    classic = false;
                    out.quorum = true;
                }
                b"stream" => {
                    classic = false;
                    out.stream = true;
                    if let Some(k) = NOT_STREAM.iter().find(|k| args.get(k).is_some()) {
                        return Err(ArgError::NotStream(k));
                    }
                }
                other => {
                    return Err(ArgError::Invalid(
                        "x-queue-type",
                        format!("\"unsupported queue type '{}'\"", lossy(other)),
                    ))
                }
            }
        }
        if let Some(v) = args.get("x-expires") {
            let n = int("x-expires", v)?;
            if n == 0 {
                return Err(ArgError::Invalid("x-expires", "{value_zero,0}".into()));
            }
            out.expires = Some(expiry("x-expires", n)?);
        }
        if let Some(v) = args.get("x-message-ttl") {
            out.message_ttl = Some(expiry("x-message-ttl", int("x-message-ttl", v)?)?);
        }
        if let Some(v) = args.get("x-dead-letter-routing-key") {
            let key = "x-dead-letter-routing-key";
            let rk = longstr(v).ok_or_else(|| unacceptable(key, v))?;
            if out.dead_letter_exchange.is_none() {
                return Err(ArgError::Invalid(
                    key,
                    "routing_key_but_no_dlx_defined".into(),
                ));
            }
            out.dead_letter_routing_key = Some(rk.clone());
        }
        if let Some(v) = args.get("x-max-length") {
            out.max_length = Some(non_negative("x-max-length", v)?);
        }
        if let Some(v) = args.get("x-max-length-bytes") {
            out.max_length_bytes = Some(non_negative("x-max-length-bytes", v)?);
        }
        if let Some(v) = args.get("x-max-priority") {
            let n = non_negative("x-max-priority", v)?;
            if n > 255 {
                return Err(ArgError::Invalid(
                    "x-max-priority",
                    format!("{{max_value_exceeded,{n}}}"),
                ));
            }
            // RabbitMQ treats 0 as "not a priority queue".
            out.max_priority = (n > 0).then_some(n as u8);
        }
        if let Some(v) = args.get("x-overflow") {
            let o = longstr(v).ok_or_else(|| unacceptable("x-overflow", v))?;
            out.overflow = Overflow::parse(o)
                .ok_or_else(|| ArgError::Invalid("x-overflow", "invalid_overflow".into()))?;
            out.overflow_set = true;
        }
        // As RabbitMQ, any value is taken; a non-negative integer applies.
        out.consumer_timeout = args
            .get("x-consumer-timeout")
            .and_then(|v| v.as_i64())
            .and_then(|n| u64::try_from(n).ok());
        if let Some(v) = args.get("x-queue-mode") {
            // Lazy queues are not different here: paging is by memory budget.
            let m = longstr(v).ok_or_else(|| unacceptable("x-queue-mode", v))?;
            if !matches!(&m[..], b"default" | b"lazy") {
                return Err(ArgError::Invalid(
                    "x-queue-mode",
                    format!("\"unsupported queue mode '{}'\"", lossy(m)),
                ));
            }
        }
        if let Some(v) = args.get("x-single-active-consumer") {
            match v {
                FieldValue::Bool(b) => out.single_active_consumer = *b,
                other => return Err(unacceptable("x-single-active-consumer", other)),
            }
        }
        // The plugin takes any value; all but false (and void) enable it.
        out.dedup = args
            .get("x-message-deduplication")
            .is_some_and(super::dedup::queue_enabled);
        if classic {
            if let Some(k) = NOT_CLASSIC.iter().find(|k| args.get(k).is_some()) {
                return Err(ArgError::NotClassic(k));
            }
        }
        if out.stream {
            if let Some(v) = args.get("x-max-age") {
                let s = longstr(v).ok_or_else(|| unacceptable("x-max-age", v))?;
                let age = super::stream::interval_ms(s)
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| ArgError::Invalid("x-max-age", "invalid_max_age".into()))?;
                out.max_age = Some(age);
            }
            if let Some(v) = args.get("x-stream-max-segment-size-bytes") {
                let key = "x-stream-max-segment-size-bytes";
                let n = non_negative(key, v)?;
                if n > MAX_SEGMENT {
                    return Err(ArgError::Text(format!("Exceeded max value for {key}")));
                }
                out.max_segment = Some(n.max(1));
            }
            if let Some(v) = args.get("x-initial-cluster-size") {
                if int("x-initial-cluster-size", v)? <= 0 {
                    return Err(ArgError::Invalid(
                        "x-initial-cluster-size",
                        format!("{{value_zero,{}}}", show(v)),
                    ));
                }
            }
        }
        // RabbitMQ takes any value here; a non-negative integer limits.
        out.delivery_limit_arg = args.get("x-delivery-limit").and_then(|v| v.as_i64());
        out.delivery_limit = out.delivery_limit_arg.and_then(|n| u64::try_from(n).ok());
        Ok(out)
    }
}

/// RabbitMQ's rendering of an argument value in "inequivalent arg" texts.
fn show(v: &FieldValue) -> String {
    match v {
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => lossy(b),
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::F32(f) => format!("{f:?}"),
        FieldValue::F64(f) => format!("{f:?}"),
        FieldValue::Timestamp(t) => t.to_string(),
        FieldValue::Decimal(scale, n) => format!("{{{scale},{n}}}"),
        FieldValue::Void => "undefined".into(),
        other => match other.as_i64() {
            Some(i) => i.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// Same value for RabbitMQ: equal values of the same type class (integers of
/// any width are one class, as are float and double).
fn equivalent(a: &FieldValue, b: &FieldValue) -> bool {
    let float = |v: &FieldValue| match v {
        FieldValue::F32(f) => Some(*f as f64),
        FieldValue::F64(f) => Some(*f),
        _ => None,
    };
    a == b
        || a.as_i64().is_some_and(|x| b.as_i64() == Some(x))
        || float(a).is_some_and(|x| float(b) == Some(x))
}

/// Re-declaring a queue: the first argument (in RabbitMQ's order) whose
/// value differs is a 406; arguments RabbitMQ does not compare are ignored.
pub fn check_equivalent(cur: &FieldTable, got: &FieldTable) -> Result<(), ArgError> {
    let classic = FieldValue::LongStr(Bytes::from_static(b"classic"));
    let (ct, gt) = (cur.get("x-queue-type"), got.get("x-queue-type"));
    if ct.unwrap_or(&classic) != gt.unwrap_or(&classic) {
        return Err(inequivalent("x-queue-type", gt, ct));
    }
    let stream = ct
        .and_then(|t| t.as_bytes())
        .is_some_and(|t| &t[..] == b"stream");
    let keys: &[&'static str] = if stream { &COMPARED_STREAM } else { &COMPARED };
    for &key in keys {
        let (a, b) = (got.get(key), cur.get(key));
        let same = match (a, b) {
            (None, None) => true,
            (Some(x), Some(y)) => equivalent(x, y),
            _ => false,
        };
        if !same {
            return Err(inequivalent(key, a, b));
        }
    }
    Ok(())
}

fn inequivalent(key: &'static str, got: Option<&FieldValue>, cur: Option<&FieldValue>) -> ArgError {
    let detail = match (got, cur) {
        (Some(x), Some(y)) => format!("received '{}' but current is '{}'", show(x), show(y)),
        (None, Some(y)) => format!(
            "received none but current is the value '{}' of type '{}'",
            show(y),
            type_name(y)
        ),
        (Some(x), None) => format!(
            "received the value '{}' of type '{}' but current is none",
            show(x),
            type_name(x)
        ),
        (None, None) => "received none but current is none".into(),
    };
    ArgError::Inequivalent(key, detail)
}

/// A new exchange's arguments: `alternate-exchange`, if given, is a string.
pub fn check_exchange_args(args: &FieldTable) -> Result<(), ArgError> {
    match args.get("alternate-exchange") {
        Some(v) if longstr(v).is_none() => {
            Err(ArgError::InvalidType("alternate-exchange", type_name(v)))
        }
        _ => Ok(()),
    }
}

/// Re-declaring an exchange: RabbitMQ compares `alternate-exchange` only.
pub fn check_exchange_equivalent(cur: &FieldTable, got: &FieldTable) -> Result<(), ArgError> {
    check_key_equivalent("alternate-exchange", cur, got)
}

/// Re-declaring an `x-federation-upstream` exchange: the federation
/// plugin's type compares `x-max-hops`, and then RabbitMQ's exchange
/// arguments of the current exchange with themselves (so nothing else).
pub fn check_upstream_equivalent(cur: &FieldTable, got: &FieldTable) -> Result<(), ArgError> {
    check_key_equivalent("x-max-hops", cur, got)
}

fn check_key_equivalent(
    key: &'static str,
    cur: &FieldTable,
    got: &FieldTable,
) -> Result<(), ArgError> {
    match (got.get(key), cur.get(key)) {
        (None, None) => Ok(()),
        (Some(x), Some(y)) if equivalent(x, y) => Ok(()),
        (a, b) => Err(inequivalent(key, a, b)),
    }
}

/// The `expiration` property: a TTL in milliseconds, as RabbitMQ reads it
/// (Erlang's `string:to_integer`, then 0..=[`MAX_EXPIRY_MS`]); the error is
/// the 406 text.
pub fn parse_expiration(s: &[u8]) -> Result<u64, String> {
    let text = lossy(s);
    let fail = |why: String| Err(format!("invalid expiration '{text}': {why}"));
    let (neg, rest) = match s.first() {
        Some(b'-') => (true, s.get(1..).unwrap_or_default()),
        Some(b'+') => (false, s.get(1..).unwrap_or_default()),
        _ => (false, s),
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return fail("no_integer".into());
    }
    let (num, left) = rest.split_at(digits);
    if !left.is_empty() {
        return fail(format!("{{leftover_string,\"{}\"}}", lossy(left)));
    }
    let num = std::str::from_utf8(num)
        .unwrap_or("0")
        .trim_start_matches('0');
    let num = if num.is_empty() { "0" } else { num };
    match num.parse::<u64>() {
        Ok(0) => Ok(0),
        Ok(_) | Err(_) if neg => fail(format!("{{value_negative,-{num}}}")),
        Ok(n) if n <= MAX_EXPIRY_MS => Ok(n),
        _ => fail(format!("{{value_too_large,{num}}}")),
    }
}

/// The `x-priority` consume argument (0 when absent).
pub fn consumer_priority(args: &FieldTable) -> Result<i32, ArgError> {
    match args.get("x-priority") {
        None => Ok(0),
        Some(v) => {
            let p = int("x-priority", v)?;
            Ok(p.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
        }
    }
}

/// The `x-consumer-timeout` consume argument (milliseconds), if given.
pub fn consumer_timeout(args: &FieldTable) -> Result<Option<u64>, ArgError> {
    args.get("x-consumer-timeout")
        .map(|v| non_negative("x-consumer-timeout", v))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(kv: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::new();
        for (k, v) in kv {
            t.insert(Bytes::copy_from_slice(k.as_bytes()), v.clone());
        }
        t
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(Bytes::copy_from_slice(v.as_bytes()))
    }

    #[test]
    fn rabbitmq_order_decides_which_argument_is_named() {
        let t = table(&[
            ("x-max-length", FieldValue::I32(-1)),
            ("x-dead-letter-routing-key", s("k")),
        ]);
        assert_eq!(
            QueueArgs::parse(&t),
            Err(ArgError::Invalid(
                "x-dead-letter-routing-key",
                "routing_key_but_no_dlx_defined".into()
            ))
        );
        let t = table(&[("x-delivery-limit", FieldValue::I32(5))]);
        assert_eq!(
            QueueArgs::parse(&t),
            Err(ArgError::NotClassic("x-delivery-limit"))
        );
        let t = table(&[
            ("x-delivery-limit", FieldValue::I32(5)),
            ("x-queue-type", s("quorum")),
        ]);
        assert!(QueueArgs::parse(&t).is_ok());
    }

    #[test]
    fn expiration_texts() {
        assert_eq!(parse_expiration(b"60000"), Ok(60000));
        assert_eq!(parse_expiration(b"0"), Ok(0));
        assert_eq!(parse_expiration(b"-0"), Ok(0));
        let e = |s: &[u8]| parse_expiration(s).unwrap_err();
        assert_eq!(e(b"abc"), "invalid expiration 'abc': no_integer");
        assert_eq!(e(b""), "invalid expiration '': no_integer");
        assert_eq!(e(b"-1"), "invalid expiration '-1': {value_negative,-1}");
        assert_eq!(
            e(b"1.5"),
            "invalid expiration '1.5': {leftover_string,\".5\"}"
        );
        assert_eq!(
            e(b"315360000001"),
            "invalid expiration '315360000001': {value_too_large,315360000001}"
        );
        assert_eq!(
            e(b"99999999999999999999999"),
            "invalid expiration '99999999999999999999999': {value_too_large,99999999999999999999999}"
        );
    }

    #[test]
    fn equivalence_ignores_unknown_arguments_and_queue_type_classic() {
        let a = table(&[
            ("x-foo", FieldValue::I32(1)),
            ("x-message-ttl", FieldValue::I32(5)),
        ]);
        let b = table(&[
            ("x-message-ttl", FieldValue::I64(5)),
            ("x-queue-type", s("classic")),
        ]);
        assert_eq!(check_equivalent(&a, &b), Ok(()));
        let c = table(&[
            ("x-message-ttl", FieldValue::I64(5)),
            ("x-queue-type", s("quorum")),
        ]);
        assert_eq!(
            check_equivalent(&a, &c),
            Err(ArgError::Inequivalent(
                "x-queue-type",
                "received the value 'quorum' of type 'longstr' but current is none".into()
            ))
        );
    }
}
