//! JSON conversions the API needs: AMQP field tables and content properties
//! to and from JSON (the way RabbitMQ's management plugin maps them), lenient
//! readers for request bodies (rabbitmqadmin sends `"true"` and `"5"` as
//! strings), percent-decoding of path segments and query strings, and the
//! list query options (`columns`, `sort`, `page`, `name` filters).

use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

use crate::codec::{BasicProperties, FieldTable, FieldValue};

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A field value as JSON: strings as strings, numbers as numbers, tables as
/// objects, arrays as lists, void as null.
pub fn value_to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::I8(x) => json!(x),
        FieldValue::U8(x) => json!(x),
        FieldValue::I16(x) => json!(x),
        FieldValue::U16(x) => json!(x),
        FieldValue::I32(x) => json!(x),
        FieldValue::U32(x) => json!(x),
        FieldValue::I64(x) => json!(x),
        FieldValue::F32(x) => json!(x),
        FieldValue::F64(x) => json!(x),
        FieldValue::Decimal(scale, n) => json!(*n as f64 / 10f64.powi(*scale as i32)),
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => Value::String(lossy(b)),
        FieldValue::Array(a) => Value::Array(a.iter().map(value_to_json).collect()),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Void => Value::Null,
    }
}

/// A field table as a JSON object.
pub fn table_to_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in &t.0 {
        m.insert(lossy(k), value_to_json(v));
    }
    Value::Object(m)
}

/// JSON as a field value, with RabbitMQ's type choices: integers are `long`,
/// other numbers `double`, strings `longstr`.
pub fn json_to_value(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongStr(Bytes::from(s.clone())),
        Value::Array(a) => FieldValue::Array(a.iter().map(json_to_value).collect()),
        Value::Object(_) => FieldValue::Table(json_to_table(v)),
    }
}

/// A JSON object as a field table (anything else: an empty table).
pub fn json_to_table(v: &Value) -> FieldTable {
    let mut t = FieldTable::new();
    if let Value::Object(m) = v {
        for (k, x) in m {
            t.insert(Bytes::from(k.clone()), json_to_value(x));
        }
    }
    t
}

/// A boolean field: `true`/`false`, or the strings rabbitmqadmin sends.
pub fn get_bool(body: &Value, key: &str, default: bool) -> Result<bool, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(format!("{key} must be a boolean, got {other}")),
    }
}

/// A string field.
pub fn get_str<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(|v| v.as_str())
}

/// An integer field, from a number or a numeric string.
pub fn get_int(body: &Value, key: &str) -> Result<Option<i64>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{key} must be an integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{key} must be an integer, got '{s}'")),
        Some(other) => Err(format!("{key} must be an integer, got {other}")),
    }
}

/// Deepest nesting accepted in arguments and headers (the codec reads at
/// most 32 levels back from the definitions file and the wire).
const MAX_NESTING: usize = 16;

fn nesting(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(nesting).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// An `arguments` field: an object, or a JSON object inside a string.
pub fn get_table(body: &Value, key: &str) -> Result<FieldTable, String> {
    if body.get(key).is_some_and(|v| nesting(v) > MAX_NESTING) {
        return Err(format!("{key} nested too deeply"));
    }
    match body.get(key) {
        None | Some(Value::Null) => Ok(FieldTable::new()),
        Some(v @ Value::Object(_)) => Ok(json_to_table(v)),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(FieldTable::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(json_to_table(&v)),
            _ => Err(format!("{key} must be an object")),
        },
        // RabbitMQ renders an empty proplist as [] and accepts it back.
        Some(Value::Array(a)) if a.is_empty() => Ok(FieldTable::new()),
        Some(_) => Err(format!("{key} must be an object")),
    }
}

/// Content properties as RabbitMQ's management API shows them.
pub fn properties_to_json(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: &Option<Bytes>| {
        if let Some(b) = v {
            m.insert(k.to_string(), Value::String(lossy(b)));
        }
    };
    s("content_type", &p.content_type);
    s("content_encoding", &p.content_encoding);
    s("correlation_id", &p.correlation_id);
    s("reply_to", &p.reply_to);
    s("expiration", &p.expiration);
    s("message_id", &p.message_id);
    s("type", &p.kind);
    s("user_id", &p.user_id);
    s("app_id", &p.app_id);
    s("cluster_id", &p.cluster_id);
    if let Some(h) = &p.headers {
        m.insert("headers".into(), table_to_json(h));
    }
    if let Some(d) = p.delivery_mode {
        m.insert("delivery_mode".into(), json!(d));
    }
    if let Some(d) = p.priority {
        m.insert("priority".into(), json!(d));
    }
    if let Some(t) = p.timestamp {
        m.insert("timestamp".into(), json!(t));
    }
    Value::Object(m)
}

/// Content properties from a publish request's `properties` object.
pub fn json_to_properties(v: &Value) -> Result<BasicProperties, String> {
    let mut p = BasicProperties::default();
    let Some(m) = v.as_object() else {
        return match v {
            Value::Null => Ok(p),
            Value::Array(a) if a.is_empty() => Ok(p),
            _ => Err("properties must be an object".into()),
        };
    };
    for (k, x) in m {
        let text = || -> Result<Option<Bytes>, String> {
            match x {
                Value::String(s) => Ok(Some(Bytes::from(s.clone()))),
                Value::Number(n) => Ok(Some(Bytes::from(n.to_string()))),
                _ => Err(format!("property {k} must be a string")),
            }
        };
        let int = |max: u64| -> Result<u64, String> {
            let n = match x {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            n.filter(|n| *n <= max)
                .ok_or_else(|| format!("property {k} must be an integer up to {max}"))
        };
        match k.as_str() {
            "content_type" => p.content_type = text()?,
            "content_encoding" => p.content_encoding = text()?,
            "correlation_id" => p.correlation_id = text()?,
            "reply_to" => p.reply_to = text()?,
            "expiration" => p.expiration = text()?,
            "message_id" => p.message_id = text()?,
            "type" => p.kind = text()?,
            "user_id" => p.user_id = text()?,
            "app_id" => p.app_id = text()?,
            "cluster_id" => p.cluster_id = text()?,
            "delivery_mode" => p.delivery_mode = Some(int(255)? as u8),
            "priority" => p.priority = Some(int(255)? as u8),
            "timestamp" => p.timestamp = Some(int(u64::MAX)?),
            "headers" => match x {
                Value::Object(_) if nesting(x) > MAX_NESTING => {
                    return Err("headers nested too deeply".into())
                }
                Value::Object(_) => p.headers = Some(json_to_table(x)),
                Value::Null => {}
                Value::Array(a) if a.is_empty() => {}
                _ => return Err("headers must be an object".into()),
            },
            other => return Err(format!("unknown property '{other}'")),
        }
    }
    Ok(p)
}

/// Percent-decode a path segment or query component (`+` is kept as is in
/// paths; query strings pass `plus_is_space`). A `%` not followed by two
/// hex digits stays as it is; bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    if plus_is_space && s.contains('+') {
        // Literal `+` only: an encoded one (`%2B`) stays a plus.
        let spaced = s.replace('+', " ");
        return percent_decode_str(&spaced).decode_utf8_lossy().into_owned();
    }
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Every byte but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`).
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode for a `Location` header or a properties key.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}

/// Query string parameters, decoded.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// A value at a dotted path (`message_stats.publish_details.rate`).
fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// Keep only the given (dotted) columns of an object, as RabbitMQ does.
fn select_columns(v: &Value, cols: &[&str]) -> Value {
    let mut out = Value::Object(Map::new());
    for c in cols {
        let Some(x) = at_path(v, c) else { continue };
        let mut slot = &mut out;
        let parts: Vec<&str> = c.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            let Some(m) = slot.as_object_mut() else { break };
            if i + 1 == parts.len() {
                m.insert(p.to_string(), x.clone());
                break;
            }
            slot = m
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    out
}

/// Apply a `columns` query option to a single object.
pub fn select_object_columns(v: Value, query: &[(String, String)]) -> Value {
    match query
        .iter()
        .find(|(k, _)| k == "columns")
        .map(|(_, c)| c.as_str())
        .filter(|c| !c.is_empty())
    {
        Some(cols) => {
            let cols: Vec<&str> = cols.split(',').map(str::trim).collect();
            select_columns(&v, &cols)
        }
        None => v,
    }
}

fn cmp_json(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// Apply a list request's query options and serialize the list: `sort` /
/// `sort_reverse`, `columns`, and pagination (`page`, `page_size`, with a
/// `name` filter: substring, or a regex with `use_regex=true`), which wraps
/// the list in RabbitMQ's paging object. Items are rendered one at a time
/// and written out at once, so a list of 10,000 queues never exists as one
/// JSON tree (sorting or filtering renders each item once more, keeping
/// only its key).
pub fn list_bytes<T>(
    items: &[T],
    render: impl Fn(&T) -> Value,
    query: &[(String, String)],
) -> Result<Vec<u8>, String> {
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let total = items.len();
    let paged = get("page").is_some();
    // As RabbitMQ: the name filter applies to paginated requests only.
    let name = get("name").filter(|n| paged && !n.is_empty());
    let re = match (name, get("use_regex") == Some("true")) {
        (Some(n), true) => Some(fancy_regex::Regex::new(n).map_err(|e| format!("bad regex: {e}"))?),
        _ => None,
    };
    let sort = get("sort").filter(|s| !s.is_empty());
    let mut order: Vec<usize> = (0..items.len()).collect();
    if name.is_some() || sort.is_some() {
        let mut keyed: Vec<(usize, Option<Value>)> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let v = render(item);
            if let Some(n) = name {
                let item_name = v.get("name").and_then(Value::as_str).unwrap_or("");
                let keep = match &re {
                    Some(re) => re.is_match(item_name).unwrap_or(false),
                    None => item_name.contains(n),
                };
                if !keep {
                    continue;
                }
            }
            keyed.push((i, sort.and_then(|s| at_path(&v, s)).cloned()));
        }
        if sort.is_some() {
            keyed.sort_by(|a, b| cmp_json(a.1.as_ref(), b.1.as_ref()));
        }
        order = keyed.into_iter().map(|(i, _)| i).collect();
    }
    if get("sort_reverse") == Some("true") {
        order.reverse();
    }
    let cols: Option<Vec<&str>> = get("columns")
        .filter(|c| !c.is_empty())
        .map(|c| c.split(',').map(str::trim).collect());
    let filtered = order.len();
    let mut page_info = None;
    if let Some(page) = get("page") {
        let page: usize = page
            .parse()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or("page must be a positive integer")?;
        let page_size: usize = match get("page_size") {
            None => 100,
            Some(s) => s
                .parse()
                .ok()
                .filter(|p| (1..=500).contains(p))
                .ok_or("page_size must be between 1 and 500")?,
        };
        let page_count = filtered.div_ceil(page_size).max(1);
        if page > page_count {
            return Err("page out of range".into());
        }
        order = order
            .into_iter()
            .skip((page - 1) * page_size)
            .take(page_size)
            .collect();
        page_info = Some((page, page_size, page_count));
    }
    let mut out = Vec::with_capacity(64 + order.len() * 256);
    out.push(b'[');
    for (n, i) in order.iter().enumerate() {
        let Some(item) = items.get(*i) else { continue };
        if n > 0 {
            out.push(b',');
        }
        let v = render(item);
        let v = match &cols {
            Some(c) => select_columns(&v, c),
            None => v,
        };
        serde_json::to_writer(&mut out, &v).map_err(|e| e.to_string())?;
    }
    out.push(b']');
    let Some((page, page_size, page_count)) = page_info else {
        return Ok(out);
    };
    // The paging object, with the items spliced in as they are.
    let head = json!({
        "filtered_count": filtered,
        "item_count": order.len(),
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total,
    });
    let mut obj = serde_json::to_vec(&head).map_err(|e| e.to_string())?;
    obj.pop(); // the closing brace
    obj.extend_from_slice(b",\"items\":");
    obj.extend_from_slice(&out);
    obj.push(b'}');
    Ok(obj)
}

#[cfg(test)]
/// [`list_bytes`] over ready values, parsed back (tests).
pub fn list_response(items: Vec<Value>, query: &[(String, String)]) -> Result<Value, String> {
    let bytes = list_bytes(&items, Value::clone, query)?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// `{"rate": r}`, with rates rounded like RabbitMQ's (one decimal).
pub fn rate(r: f64) -> Value {
    json!({ "rate": (r * 10.0).round() / 10.0 })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip() {
        let v = json!({"x-max-length": 10, "x-dead-letter-exchange": "dlx", "f": 1.5, "b": true,
                       "l": [1, "a"], "t": {"n": null}});
        let t = json_to_table(&v);
        assert_eq!(t.get("x-max-length"), Some(&FieldValue::I64(10)));
        assert_eq!(table_to_json(&t), v);
    }

    #[test]
    fn lenient_fields() {
        let v = json!({"durable": "false", "count": "5", "arguments": "{\"a\":1}"});
        assert!(!get_bool(&v, "durable", true).unwrap());
        assert!(get_bool(&v, "missing", true).unwrap());
        assert_eq!(get_int(&v, "count").unwrap(), Some(5));
        assert_eq!(get_table(&v, "arguments").unwrap().len(), 1);
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("%2F", false), "/");
        assert_eq!(percent_decode("a+b%20c", false), "a+b c");
        assert_eq!(percent_decode("a+b", true), "a b");
        assert_eq!(percent_decode("bad%zz%", false), "bad%zz%");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode("%+é?#"), "%25%2B%C3%A9%3F%23");
        assert_eq!(percent_decode("%C3%A9%2b%2B", true), "é++");
        assert_eq!(percent_decode("a%2Bb+c", true), "a+b c");
        assert_eq!(percent_decode("%ff", false), "\u{FFFD}");
        assert_eq!(percent_decode("%2", false), "%2");
        for s in ["/", "a b/c?d#e%f+g", "ünï", "%%41"] {
            assert_eq!(percent_decode(&percent_encode(s), false), s);
        }
    }

    #[test]
    fn list_options() {
        let items = vec![
            json!({"name": "b", "messages": 2, "x": {"y": 1}}),
            json!({"name": "a", "messages": 5, "x": {"y": 2}}),
            json!({"name": "c", "messages": 1, "x": {"y": 3}}),
        ];
        let q = parse_query("sort=messages&sort_reverse=true&columns=name,x.y");
        let out = list_response(items.clone(), &q).unwrap();
        assert_eq!(
            out,
            json!([{"name":"a","x":{"y":2}},{"name":"b","x":{"y":1}},{"name":"c","x":{"y":3}}])
        );
        let q = parse_query("page=2&page_size=2&sort=name");
        let out = list_response(items.clone(), &q).unwrap();
        assert_eq!(out["items"], json!([{"name":"c","messages":1,"x":{"y":3}}]));
        assert_eq!(out["page_count"], 2);
        assert_eq!(out["total_count"], 3);
        // Name filters apply to paginated requests (as RabbitMQ's do).
        let q = parse_query("page=1&name=%5E%5Bab%5D%24&use_regex=true&sort=name");
        let out = list_response(items.clone(), &q).unwrap();
        assert_eq!(out["filtered_count"], 2);
        assert_eq!(out["items"][1]["name"], "b");
        let q = parse_query("name=a");
        assert_eq!(
            list_response(items.clone(), &q)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert!(list_response(items, &parse_query("page=9")).is_err());
    }

    #[test]
    fn properties() {
        let v = json!({"delivery_mode": 2, "headers": {"h": 1}, "content_type": "text/plain",
                       "priority": "3"});
        let p = json_to_properties(&v).unwrap();
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(p.priority, Some(3));
        let back = properties_to_json(&p);
        assert_eq!(back["headers"]["h"], 1);
        assert_eq!(back["content_type"], "text/plain");
        assert!(json_to_properties(&json!({"bogus": 1})).is_err());
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "a": deep });
        }
        assert!(json_to_properties(&json!({ "headers": deep })).is_err());
        assert!(get_table(&json!({ "arguments": deep }), "arguments").is_err());
    }
}
