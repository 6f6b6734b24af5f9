//! The delayed message plugin's exchange type, `x-delayed-message`: its
//! declare argument `x-delayed-type` names how it routes (direct, fanout,
//! topic or headers here), and a message whose `x-delay` header is a
//! positive number of milliseconds (at most 2^32 - 1) is held that long
//! and then routed as that type would route it, with the bindings of that
//! moment; `x-delay` is then rewritten to the negated delay, as the plugin
//! does. Absent, zero, negative, too large or of another type (a boolean,
//! a table): routed at once. A string is read as an integer, a float
//! truncated, as the plugin reads them. Where the held messages live is
//! `crate::store::delayed`; when they are routed, `crate::engine`.

use crate::codec::{FieldTable, FieldValue};

use super::exchange::ExchangeKind;

/// The declare argument naming the routing type.
pub const DELAYED_TYPE: &str = "x-delayed-type";
/// The message header with the delay in milliseconds.
pub const DELAY_HEADER: &str = "x-delay";
/// The longest delay the plugin holds a message for (an Erlang timer's
/// limit, 2^32 - 1 ms); a longer one is routed at once.
pub const MAX_DELAY: u64 = 4_294_967_295;

/// The routing type an `x-delayed-message` exchange's arguments name
/// (None: missing or not one warren routes as).
pub fn delayed_type(args: &FieldTable) -> Option<ExchangeKind> {
    let t = args.get(DELAYED_TYPE)?.as_bytes()?;
    match ExchangeKind::parse(t)? {
        k @ (ExchangeKind::Direct
        | ExchangeKind::Fanout
        | ExchangeKind::Topic
        | ExchangeKind::Headers) => Some(k),
        _ => None,
    }
}

/// Why an `x-delayed-message` declare is refused: (reply code, text), the
/// plugin's and RabbitMQ's (`rabbit_exchange:check_type/1`).
pub fn check_args(args: &FieldTable) -> Result<(), (u16, String)> {
    use crate::codec::ReplyCode;
    let missing = || {
        (
            ReplyCode::PRECONDITION_FAILED,
            format!("Invalid argument, '{DELAYED_TYPE}' must be an existing exchange type"),
        )
    };
    let t = args
        .get(DELAYED_TYPE)
        .and_then(FieldValue::as_bytes)
        .ok_or_else(missing)?;
    let name = String::from_utf8_lossy(t);
    match ExchangeKind::parse(t) {
        None => Err((
            ReplyCode::COMMAND_INVALID,
            format!("unknown exchange type '{name}'"),
        )),
        Some(ExchangeKind::Delayed) => Err((
            ReplyCode::PRECONDITION_FAILED,
            format!("Invalid argument, 'x-delayed-message' can't be used for '{DELAYED_TYPE}'"),
        )),
        Some(_) if delayed_type(args).is_none() => Err((
            ReplyCode::PRECONDITION_FAILED,
            format!(
                "Invalid argument, '{DELAYED_TYPE}' '{name}' is not supported by warren (use direct, fanout, topic or headers)"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// A message's delay as the plugin reads its `x-delay` header:
/// `Ok(Some(ms))` to hold it, `Ok(None)` to route it now, `Err(())` for a
/// string that is not an integer (the plugin's channel crashes on it:
/// 541 INTERNAL_ERROR closes the connection).
#[allow(clippy::result_unit_err)]
pub fn delay_of(headers: Option<&FieldTable>) -> Result<Option<u64>, ()> {
    let Some(v) = headers.and_then(|h| h.get(DELAY_HEADER)) else {
        return Ok(None);
    };
    let ms: i128 = match v {
        FieldValue::LongStr(s) => {
            let t = std::str::from_utf8(s).map_err(|_| ())?;
            parse_erlang_integer(t).ok_or(())?
        }
        FieldValue::F32(f) => f.trunc() as i128,
        FieldValue::F64(f) => f.trunc() as i128,
        FieldValue::Decimal(scale, v) => {
            i128::from(*v) / 10i128.checked_pow(u32::from(*scale)).unwrap_or(i128::MAX)
        }
        other => match other.as_i64() {
            Some(n) => i128::from(n),
            None => return Ok(None),
        },
    };
    Ok(u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0 && ms <= MAX_DELAY))
}

/// An integer as Erlang's `binary_to_integer/1` reads it: an optional sign
/// and decimal digits, nothing else (no blanks, no point).
fn parse_erlang_integer(t: &str) -> Option<i128> {
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Longer than any delay: saturate rather than overflow.
    let n: i128 = digits.parse().unwrap_or(i128::MAX);
    Some(if t.starts_with('-') { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn h(v: FieldValue) -> FieldTable {
        let mut t = FieldTable::new();
        t.insert(DELAY_HEADER, v);
        t
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(Bytes::from(v.to_string()))
    }

    #[test]
    fn delays_read_as_the_plugin_reads_them() {
        assert_eq!(delay_of(None), Ok(None));
        assert_eq!(delay_of(Some(&FieldTable::new())), Ok(None));
        assert_eq!(delay_of(Some(&h(FieldValue::I32(1500)))), Ok(Some(1500)));
        assert_eq!(delay_of(Some(&h(FieldValue::I64(0)))), Ok(None));
        assert_eq!(delay_of(Some(&h(FieldValue::I64(-5)))), Ok(None));
        assert_eq!(
            delay_of(Some(&h(FieldValue::I64(4_294_967_295)))),
            Ok(Some(4_294_967_295))
        );
        assert_eq!(delay_of(Some(&h(FieldValue::I64(4_294_967_296)))), Ok(None));
        assert_eq!(delay_of(Some(&h(s("250")))), Ok(Some(250)));
        assert_eq!(delay_of(Some(&h(s("-250")))), Ok(None));
        assert_eq!(delay_of(Some(&h(s("abc")))), Err(()));
        assert_eq!(delay_of(Some(&h(s(" 5")))), Err(()));
        assert_eq!(delay_of(Some(&h(s("1.5")))), Err(()));
        assert_eq!(delay_of(Some(&h(FieldValue::F64(99.9)))), Ok(Some(99)));
        assert_eq!(delay_of(Some(&h(FieldValue::F64(0.5)))), Ok(None));
        assert_eq!(delay_of(Some(&h(FieldValue::Bool(true)))), Ok(None));
        assert_eq!(
            delay_of(Some(&h(FieldValue::Decimal(1, 125)))),
            Ok(Some(12))
        );
    }

    #[test]
    fn declare_arguments_are_checked_with_the_plugins_codes() {
        let mut a = FieldTable::new();
        assert_eq!(check_args(&a).map_err(|e| e.0), Err(406));
        a.insert(DELAYED_TYPE, FieldValue::I32(1));
        assert_eq!(check_args(&a).map_err(|e| e.0), Err(406));
        a.insert(DELAYED_TYPE, s("nonesuch"));
        assert_eq!(
            check_args(&a),
            Err((503, "unknown exchange type 'nonesuch'".to_string()))
        );
        a.insert(DELAYED_TYPE, s("x-delayed-message"));
        assert_eq!(check_args(&a).map_err(|e| e.0), Err(406));
        for t in ["direct", "fanout", "topic", "headers"] {
            a.insert(DELAYED_TYPE, s(t));
            assert_eq!(check_args(&a), Ok(()));
        }
    }
}
