//! Headers-exchange matching: owns the rules that decide whether a message's
//! `headers` property matches a binding's arguments, and the validation of
//! the binding's `x-match` argument.
//!
//! This follows RabbitMQ's `rabbit_exchange_type_headers` (3.13/4.x):
//!
//! * `x-match` is `all` (the default when absent), `any`, `all-with-x` or
//!   `any-with-x`; any other value is refused at bind time with 406
//!   PRECONDITION_FAILED (see [`parse_x_match`]).
//! * The binding argument `x-match` itself is never matched. In `all`/`any`
//!   every argument whose key starts with `x-` is ignored; in
//!   `all-with-x`/`any-with-x` those are matched like any other.
//! * An argument with a void value matches when the header is present, with
//!   any value (void included). Any other argument matches when the header
//!   is present with an equal value (see below).
//! * `all` matches when every considered argument matches, so a binding
//!   with none matches every message, even one without headers; `any`
//!   matches when at least one does, so a binding with none matches nothing.
//! * A message without a `headers` property has no headers.
//!
//! Value equality is RabbitMQ's: it turns the headers into a map from key to
//! *untyped* value and compares with `=:=`. So at the top level the field
//! type does not matter beyond the kind of value: every integer type
//! (`b B s u I i l` and the timestamp `T`) compares by numeric value (`I32(1)`
//! equals `I64(1)` and `U8(1)`), `f` and `d` compare as floats, `S` and `x`
//! compare as byte strings, and an integer never equals a float, a boolean
//! or a string. Arrays and nested tables keep their element types in Erlang,
//! so they compare element by element with types (`[I32(1)]` ≠ `[I64(1)]`),
//! in order. When a message carries a header key more than once the last
//! occurrence wins (RabbitMQ folds the list into a map); when binding
//! arguments repeat a key each occurrence is checked, and `x-match` is read
//! from the first.
//!
//! One deliberate difference: RabbitMQ 4.x converts a message's timestamp
//! header to milliseconds for routing (but not the binding's), so a
//! timestamp argument never matches the same timestamp header; here
//! timestamps compare in seconds, as RabbitMQ 3.x did.

use std::fmt::Write as _;

use super::args::type_name;
use crate::codec::table::{FieldTable, FieldValue};

/// The `x-match` mode of a headers binding, parsed from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XMatch {
    /// Every non-`x-` argument must match (the default).
    #[default]
    All,
    /// At least one non-`x-` argument must match.
    Any,
    /// Every argument except `x-match` must match.
    AllWithX,
    /// At least one argument other than `x-match` must match.
    AnyWithX,
}

/// Parse the `x-match` binding argument (the first one, if repeated).
/// Absent means [`XMatch::All`]. Any other value than the four long strings
/// `all`, `any`, `all-with-x`, `any-with-x` is an error carrying RabbitMQ's
/// reply text, for a 406 PRECONDITION_FAILED channel close.
pub fn parse_x_match(args: &FieldTable) -> Result<XMatch, String> {
    match args.get("x-match") {
        None => Ok(XMatch::All),
        Some(FieldValue::LongStr(v)) => match v.as_ref() {
            b"all" => Ok(XMatch::All),
            b"any" => Ok(XMatch::Any),
            b"all-with-x" => Ok(XMatch::AllWithX),
            b"any-with-x" => Ok(XMatch::AnyWithX),
            other => Err(format!(
                "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                erlang_binary(other)
            )),
        },
        Some(other) => Err(format!(
            "Invalid x-match field type {} (value {}); expected longstr",
            type_name(other),
            erlang_term(other)
        )),
    }
}

/// Does a message with `headers` (`None`: no headers property) match a
/// binding with arguments `args`? An invalid `x-match` (refused at bind time
/// anyway) counts as `all`, as in RabbitMQ.
pub fn matches(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = parse_x_match(args).unwrap_or_default();
    let with_x = matches!(mode, XMatch::AllWithX | XMatch::AnyWithX);
    let mut results = args
        .0
        .iter()
        .filter(|(k, _)| {
            if with_x {
                k.as_ref() != b"x-match"
            } else {
                !k.starts_with(b"x-")
            }
        })
        .map(|(k, v)| arg_matches(k, v, headers));
    match mode {
        XMatch::All | XMatch::AllWithX => results.all(|m| m),
        XMatch::Any | XMatch::AnyWithX => results.any(|m| m),
    }
}

/// One binding argument against the headers.
fn arg_matches(key: &[u8], want: &FieldValue, headers: Option<&FieldTable>) -> bool {
    let Some(got) = header(headers, key) else {
        return false;
    };
    matches!(want, FieldValue::Void) || routing_eq(want, got)
}

/// The value of header `key`: the last occurrence wins.
fn header<'a>(headers: Option<&'a FieldTable>, key: &[u8]) -> Option<&'a FieldValue> {
    headers?
        .0
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == key)
        .map(|(_, v)| v)
}

/// RabbitMQ's `=:=` on the untyped values of a binding argument and a
/// header. Nested arrays and tables compare with their types, as Erlang
/// keeps `{Type, Value}` inside them; their depth is bounded by the codec's
/// `MAX_DEPTH`.
fn routing_eq(a: &FieldValue, b: &FieldValue) -> bool {
    use FieldValue as V;
    if let (Some(x), Some(y)) = (integer(a), integer(b)) {
        return x == y;
    }
    match (a, b) {
        (V::F32(_) | V::F64(_), V::F32(_) | V::F64(_)) => float(a) == float(b),
        (V::LongStr(x) | V::Bytes(x), V::LongStr(y) | V::Bytes(y)) => x == y,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Decimal(s, x), V::Decimal(t, y)) => s == t && x == y,
        (V::Array(x), V::Array(y)) => x == y,
        (V::Table(x), V::Table(y)) => x == y,
        (V::Void, V::Void) => true,
        _ => false,
    }
}

/// The value of any integer-typed field, timestamps included.
fn integer(v: &FieldValue) -> Option<i128> {
    match *v {
        FieldValue::Timestamp(t) => Some(i128::from(t)),
        _ => v.as_i64().map(i128::from),
    }
}

fn float(v: &FieldValue) -> Option<f64> {
    match *v {
        FieldValue::F32(f) => Some(f64::from(f)),
        FieldValue::F64(f) => Some(f),
        _ => None,
    }
}

/// A field value printed roughly as Erlang's `~tp` prints it (nested arrays
/// and tables are elided).
fn erlang_term(v: &FieldValue) -> String {
    match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::F32(f) => erlang_float(f64::from(*f)),
        FieldValue::F64(f) => erlang_float(*f),
        FieldValue::Decimal(scale, value) => format!("{{{scale},{value}}}"),
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => erlang_binary(b),
        FieldValue::Array(items) if items.is_empty() => "[]".to_owned(),
        FieldValue::Table(t) if t.is_empty() => "[]".to_owned(),
        FieldValue::Array(_) | FieldValue::Table(_) => "[...]".to_owned(),
        FieldValue::Void => "undefined".to_owned(),
        FieldValue::Timestamp(t) => t.to_string(),
        other => integer(other).map_or_else(String::new, |i| i.to_string()),
    }
}

/// Erlang prints floats with a fraction even in exponent form (`1.0e20`).
fn erlang_float(f: f64) -> String {
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) if !mantissa.contains('.') => format!("{mantissa}.0e{exp}"),
        _ => s,
    }
}

/// A binary printed as Erlang's `~tp` does: `<<"text">>` when it is
/// printable UTF-8 (with `/utf8` when not ASCII), else `<<1,2,3>>`.
fn erlang_binary(b: &[u8]) -> String {
    let printable = |c: char| {
        !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0b' | '\x08' | '\x0c' | '\x1b')
    };
    match std::str::from_utf8(b) {
        Ok(s) if !s.is_empty() && s.chars().all(printable) => {
            let mut out = String::with_capacity(s.len() + 8);
            out.push_str("<<\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\x0b' => out.push_str("\\v"),
                    '\x08' => out.push_str("\\b"),
                    '\x0c' => out.push_str("\\f"),
                    '\x1b' => out.push_str("\\e"),
                    c => out.push(c),
                }
            }
            out.push('"');
            if !s.is_ascii() {
                out.push_str("/utf8");
            }
            out.push_str(">>");
            out
        }
        _ => {
            let mut out = String::from("<<");
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{byte}");
            }
            out.push_str(">>");
            out
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        FieldTable(
            entries
                .iter()
                .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), v.clone()))
                .collect(),
        )
    }

    fn with_mode(mode: &str, entries: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = table(&[("x-match", s(mode))]);
        t.0.extend(table(entries).0);
        t
    }

    #[test]
    fn parse_modes() {
        assert_eq!(parse_x_match(&FieldTable::new()), Ok(XMatch::All));
        assert_eq!(parse_x_match(&table(&[("a", s("b"))])), Ok(XMatch::All));
        for (text, mode) in [
            ("all", XMatch::All),
            ("any", XMatch::Any),
            ("all-with-x", XMatch::AllWithX),
            ("any-with-x", XMatch::AnyWithX),
        ] {
            assert_eq!(parse_x_match(&with_mode(text, &[])), Ok(mode));
        }
        // the first x-match wins
        let t = table(&[("x-match", s("any")), ("x-match", s("bogus"))]);
        assert_eq!(parse_x_match(&t), Ok(XMatch::Any));
    }

    #[test]
    fn parse_errors_carry_rabbitmq_text() {
        let cases: &[(FieldValue, &str)] = &[
            (
                s("ALL"),
                "Invalid x-match field value <<\"ALL\">>; expected all, any, all-with-x, or any-with-x",
            ),
            (
                s(""),
                "Invalid x-match field value <<>>; expected all, any, all-with-x, or any-with-x",
            ),
            (
                s("qu\"o\\te\n"),
                "Invalid x-match field value <<\"qu\\\"o\\\\te\\n\">>; expected all, any, all-with-x, or any-with-x",
            ),
            (
                s("héllo"),
                "Invalid x-match field value <<\"héllo\"/utf8>>; expected all, any, all-with-x, or any-with-x",
            ),
            (
                FieldValue::LongStr(Bytes::from_static(&[0xff, 0, 7])),
                "Invalid x-match field value <<255,0,7>>; expected all, any, all-with-x, or any-with-x",
            ),
            (
                FieldValue::Bytes(Bytes::from_static(b"any")),
                "Invalid x-match field type binary (value <<\"any\">>); expected longstr",
            ),
            (
                FieldValue::I32(1),
                "Invalid x-match field type signedint (value 1); expected longstr",
            ),
            (
                FieldValue::Bool(true),
                "Invalid x-match field type bool (value true); expected longstr",
            ),
            (
                FieldValue::F64(1e20),
                "Invalid x-match field type double (value 1.0e20); expected longstr",
            ),
            (
                FieldValue::Decimal(2, 150),
                "Invalid x-match field type decimal (value {2,150}); expected longstr",
            ),
            (
                FieldValue::Void,
                "Invalid x-match field type void (value undefined); expected longstr",
            ),
            (
                FieldValue::Array(vec![]),
                "Invalid x-match field type array (value []); expected longstr",
            ),
            (
                FieldValue::Table(table(&[("a", s("b"))])),
                "Invalid x-match field type table (value [...]); expected longstr",
            ),
        ];
        for (value, want) in cases {
            let args = table(&[("x-match", value.clone()), ("a", s("b"))]);
            assert_eq!(parse_x_match(&args), Err(want.to_string()));
            // an invalid mode (refused at bind time) matches as `all`
            let h = table(&[("a", s("b"))]);
            assert!(matches(&args, Some(&h)));
            assert!(!matches(&args, None));
        }
    }

    #[test]
    fn all_needs_every_argument() {
        let args = with_mode("all", &[("a", FieldValue::I32(1)), ("b", s("x"))]);
        let full = table(&[("b", s("x")), ("a", FieldValue::I32(1)), ("c", s("extra"))]);
        assert!(matches(&args, Some(&full)));
        assert!(!matches(&args, Some(&table(&[("a", FieldValue::I32(1))]))));
        assert!(!matches(
            &args,
            Some(&table(&[("a", FieldValue::I32(1)), ("b", s("y"))]))
        ));
        assert!(!matches(&args, Some(&FieldTable::new())));
        assert!(!matches(&args, None));
        // default mode is all
        let args = table(&[("a", FieldValue::I32(1)), ("b", s("x"))]);
        assert!(matches(&args, Some(&full)));
        assert!(!matches(&args, Some(&table(&[("a", FieldValue::I32(1))]))));
    }

    #[test]
    fn any_needs_one_argument() {
        let args = with_mode("any", &[("a", FieldValue::I32(1)), ("b", s("x"))]);
        assert!(matches(&args, Some(&table(&[("b", s("x"))]))));
        assert!(matches(&args, Some(&table(&[("a", FieldValue::I32(1))]))));
        assert!(matches(
            &args,
            Some(&table(&[("a", FieldValue::I32(2)), ("b", s("x"))]))
        ));
        assert!(!matches(
            &args,
            Some(&table(&[("a", FieldValue::I32(2)), ("b", s("y"))]))
        ));
        assert!(!matches(&args, Some(&table(&[("c", s("x"))]))));
        assert!(!matches(&args, Some(&FieldTable::new())));
        assert!(!matches(&args, None));
    }

    #[test]
    fn no_considered_arguments() {
        let h = table(&[("a", s("b")), ("x-foo", s("bar"))]);
        for args in [
            FieldTable::new(),
            with_mode("all", &[]),
            with_mode("all", &[("x-foo", s("bar"))]),
            with_mode("all-with-x", &[]),
        ] {
            assert!(matches(&args, Some(&h)), "{args:?}");
            assert!(matches(&args, Some(&FieldTable::new())), "{args:?}");
            assert!(matches(&args, None), "{args:?}");
        }
        for args in [
            with_mode("any", &[]),
            with_mode("any", &[("x-foo", s("bar"))]),
            with_mode("any-with-x", &[]),
        ] {
            assert!(!matches(&args, Some(&h)), "{args:?}");
            assert!(!matches(&args, None), "{args:?}");
        }
    }

    #[test]
    fn void_argument_means_present() {
        for mode in ["all", "any"] {
            let args = with_mode(mode, &[("k", FieldValue::Void)]);
            for value in [
                s("anything"),
                FieldValue::I32(0),
                FieldValue::Void,
                FieldValue::Table(FieldTable::new()),
            ] {
                assert!(matches(&args, Some(&table(&[("k", value)]))), "{mode}");
            }
            assert!(!matches(&args, Some(&table(&[("j", FieldValue::Void)]))));
            assert!(!matches(&args, None));
        }
        // a void header is not equal to a non-void argument
        let args = table(&[("k", s(""))]);
        assert!(!matches(&args, Some(&table(&[("k", FieldValue::Void)]))));
    }

    #[test]
    fn x_arguments_ignored_unless_with_x() {
        let entries = [("a", FieldValue::I32(1)), ("x-foo", s("bar"))];
        let only_a = table(&[("a", FieldValue::I32(1))]);
        let both = table(&[("a", FieldValue::I32(1)), ("x-foo", s("bar"))]);
        let only_x = table(&[("x-foo", s("bar"))]);

        assert!(matches(&with_mode("all", &entries), Some(&only_a)));
        assert!(matches(&table(&entries), Some(&only_a)));
        assert!(!matches(&with_mode("any", &entries), Some(&only_x)));

        assert!(!matches(&with_mode("all-with-x", &entries), Some(&only_a)));
        assert!(matches(&with_mode("all-with-x", &entries), Some(&both)));
        assert!(matches(&with_mode("any-with-x", &entries), Some(&only_x)));
        assert!(matches(&with_mode("any-with-x", &entries), Some(&only_a)));
        assert!(!matches(
            &with_mode("any-with-x", &entries),
            Some(&table(&[("x-foo", s("baz"))]))
        ));
        // x-match itself is never matched, even in with-x modes
        let args = with_mode("all-with-x", &[("a", FieldValue::I32(1))]);
        assert!(matches(&args, Some(&only_a)));
        let args = with_mode("any-with-x", &[]);
        assert!(!matches(
            &args,
            Some(&table(&[("x-match", s("any-with-x"))]))
        ));
        // a key that merely starts with "x" is an ordinary argument
        let args = table(&[("xa", FieldValue::I32(1))]);
        assert!(!matches(&args, Some(&FieldTable::new())));
    }

    #[test]
    fn value_equality_follows_rabbitmq() {
        use FieldValue as V;
        let b = |x: &'static [u8]| V::Bytes(Bytes::from_static(x));
        let cases: &[(V, V, bool)] = &[
            // integers compare by value whatever their width or sign
            (V::I32(1), V::I32(1), true),
            (V::I32(1), V::I64(1), true),
            (V::U8(1), V::I16(1), true),
            (V::I8(-1), V::I64(-1), true),
            (V::I8(-1), V::U8(255), false),
            (V::U32(u32::MAX), V::I64(4_294_967_295), true),
            (V::U16(7), V::Timestamp(7), true),
            (
                V::Timestamp(1_700_000_000),
                V::Timestamp(1_700_000_000),
                true,
            ),
            (V::I64(2), V::I64(3), false),
            // floats compare as floats, never equal to integers
            (V::F32(1.5), V::F64(1.5), true),
            (V::F64(0.1), V::F32(0.1), false),
            (V::F64(1.0), V::I32(1), false),
            (V::F64(f64::NAN), V::F64(f64::NAN), false),
            // strings and byte arrays are both binaries
            (s("abc"), s("abc"), true),
            (s("abc"), b(b"abc"), true),
            (s("abc"), s("abd"), false),
            (s("1"), V::I32(1), false),
            (V::Bool(true), V::Bool(true), true),
            (V::Bool(true), V::Bool(false), false),
            (V::Bool(true), V::I8(1), false),
            (V::Decimal(2, 150), V::Decimal(2, 150), true),
            (V::Decimal(1, 15), V::Decimal(2, 150), false),
            // arrays and tables keep element types
            (
                V::Array(vec![V::I32(1), s("a")]),
                V::Array(vec![V::I32(1), s("a")]),
                true,
            ),
            (V::Array(vec![V::I32(1)]), V::Array(vec![V::I64(1)]), false),
            (V::Array(vec![s("a")]), V::Array(vec![b(b"a")]), false),
            (V::Array(vec![]), V::Table(FieldTable::new()), false),
            (
                V::Table(table(&[("p", V::I32(1)), ("q", s("x"))])),
                V::Table(table(&[("p", V::I32(1)), ("q", s("x"))])),
                true,
            ),
            (
                V::Table(table(&[("p", V::I32(1)), ("q", s("x"))])),
                V::Table(table(&[("q", s("x")), ("p", V::I32(1))])),
                false,
            ),
            (
                V::Table(table(&[("p", V::I32(1))])),
                V::Table(table(&[("p", V::I64(1))])),
                false,
            ),
        ];
        for (arg, hdr, want) in cases {
            for mode in ["all", "any"] {
                let args = with_mode(mode, &[("k", arg.clone())]);
                let h = table(&[("k", hdr.clone())]);
                assert_eq!(
                    matches(&args, Some(&h)),
                    *want,
                    "{mode}: {arg:?} vs {hdr:?}"
                );
                // symmetric
                let args = with_mode(mode, &[("k", hdr.clone())]);
                let h = table(&[("k", arg.clone())]);
                assert_eq!(
                    matches(&args, Some(&h)),
                    *want,
                    "{mode}: {hdr:?} vs {arg:?}"
                );
            }
        }
    }

    #[test]
    fn repeated_keys() {
        // the last header with a key wins
        let h = table(&[("k", s("old")), ("k", s("new"))]);
        assert!(matches(&table(&[("k", s("new"))]), Some(&h)));
        assert!(!matches(&table(&[("k", s("old"))]), Some(&h)));
        // every repeated argument is checked
        let h = table(&[("k", s("a"))]);
        let args = table(&[("k", s("a")), ("k", s("b"))]);
        assert!(!matches(&args, Some(&h)));
        let args = with_mode("any", &[("k", s("b")), ("k", s("a"))]);
        assert!(matches(&args, Some(&h)));
    }
}
