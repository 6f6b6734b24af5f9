//! Runtime parameters of the components `shovel`, `federation-upstream` and
//! `federation-upstream-set`: RabbitMQ's dynamic shovels and federation
//! upstreams. A parameter is (component, vhost, name) → a JSON value; the
//! broker keeps the value as given (`policy::Runtime::parameters`), durable
//! in the definitions log like policies, after these checks.
//!
//! Validation follows RabbitMQ 3.x (`rabbit_shovel_parameters`,
//! `rabbit_federation_parameters`, `rabbit_parameter_validation`) with its
//! texts: every error is collected, one per line, and the API answers them
//! under "Validation failed" (`policy::validation_failed`). Unknown keys are
//! "Unrecognised terms [...] in NAME", a missing one `Key "K" not found in
//! NAME`. Shovels speak AMQP 0-9-1 only (`src-protocol`/`dest-protocol`, if
//! given, must be `amqp091`).
//!
//! Pure functions over `serde_json::Value`; nothing here starts a link.

use serde_json::Value;

use super::policy::erl;

/// Dynamic shovels.
pub const SHOVEL: &str = "shovel";
/// Federation upstreams.
pub const FEDERATION_UPSTREAM: &str = "federation-upstream";
/// Federation upstream sets.
pub const FEDERATION_UPSTREAM_SET: &str = "federation-upstream-set";
/// The components kept as generic runtime parameters.
pub const COMPONENTS: [&str; 3] = [SHOVEL, FEDERATION_UPSTREAM, FEDERATION_UPSTREAM_SET];

/// `ack-mode` values.
pub const ACK_MODES: [&str; 3] = ["no-ack", "on-publish", "on-confirm"];

/// The component's static name, if it is one of [`COMPONENTS`].
pub fn component(name: &str) -> Option<&'static str> {
    COMPONENTS.iter().copied().find(|c| *c == name)
}

/// What a key's value must be.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// An `amqp://` or `amqps://` URI, or a non-empty list of them.
    Uris,
    /// A string.
    Str,
    /// A string of at most 255 bytes (an AMQP 0-9-1 queue name).
    QueueName,
    /// `true` or `false`.
    Bool,
    /// An integer at least this.
    Int(i64),
    /// A non-negative number.
    Number,
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// `never`, `queue-length` or a non-negative integer.
    DeleteAfter,
    /// A JSON object (queue and consumer arguments).
    Object,
    /// Message properties to set (`dest-publish-properties`).
    Properties,
}

/// A key: its name, rule, and whether it is mandatory.
type Spec = (&'static str, Rule, bool);

/// A shovel's keys ("shovel protocol 0-9-1").
const SHOVEL_KEYS: &[Spec] = &[
    ("src-uri", Rule::Uris, true),
    ("dest-uri", Rule::Uris, true),
    ("src-protocol", Rule::Enum(&["amqp091"]), false),
    ("dest-protocol", Rule::Enum(&["amqp091"]), false),
    ("src-exchange", Rule::Str, false),
    ("src-exchange-key", Rule::Str, false),
    ("src-queue", Rule::QueueName, false),
    ("src-queue-args", Rule::Object, false),
    ("src-consumer-args", Rule::Object, false),
    ("src-prefetch-count", Rule::Int(0), false),
    ("src-delete-after", Rule::DeleteAfter, false),
    ("dest-exchange", Rule::Str, false),
    ("dest-exchange-key", Rule::Str, false),
    ("dest-queue", Rule::QueueName, false),
    ("dest-queue-args", Rule::Object, false),
    ("dest-add-forward-headers", Rule::Bool, false),
    ("dest-add-timestamp-header", Rule::Bool, false),
    ("dest-publish-properties", Rule::Properties, false),
    ("ack-mode", Rule::Enum(&ACK_MODES), false),
    ("reconnect-delay", Rule::Number, false),
    // The pre-3.7 names RabbitMQ still accepts; the new name wins where
    // both are given (see `shovel_setting`).
    ("prefetch-count", Rule::Int(0), false),
    ("delete-after", Rule::DeleteAfter, false),
    ("add-forward-headers", Rule::Bool, false),
    ("add-timestamp-header", Rule::Bool, false),
    ("publish-properties", Rule::Properties, false),
];

/// A shovel key's pre-3.7 name.
const SHOVEL_ALIASES: [(&str, &str); 5] = [
    ("src-prefetch-count", "prefetch-count"),
    ("src-delete-after", "delete-after"),
    ("dest-add-forward-headers", "add-forward-headers"),
    ("dest-add-timestamp-header", "add-timestamp-header"),
    ("dest-publish-properties", "publish-properties"),
];

/// The keys an upstream and the members of an upstream set share.
const UPSTREAM_KEYS: &[Spec] = &[
    ("exchange", Rule::Str, false),
    ("queue", Rule::Str, false),
    ("consumer-tag", Rule::Str, false),
    ("prefetch-count", Rule::Int(0), false),
    ("reconnect-delay", Rule::Number, false),
    ("max-hops", Rule::Int(1), false),
    ("expires", Rule::Int(1), false),
    ("message-ttl", Rule::Int(0), false),
    ("trust-user-id", Rule::Bool, false),
    ("ack-mode", Rule::Enum(&ACK_MODES), false),
    ("ha-policy", Rule::Str, false),
    ("queue-type", Rule::Enum(&["classic", "quorum"]), false),
    ("bind-nowait", Rule::Bool, false),
    (
        "channel-use-mode",
        Rule::Enum(&["multiple", "single"]),
        false,
    ),
    (
        "resource-cleanup-mode",
        Rule::Enum(&["default", "never"]),
        false,
    ),
];

/// An upstream's own key.
const UPSTREAM_URI: &[Spec] = &[("uri", Rule::Uris, true)];
/// An upstream set member's own key.
const SET_MEMBER: &[Spec] = &[("upstream", Rule::Str, true)];

/// The properties `dest-publish-properties` may set.
const PROPERTY_KEYS: &[Spec] = &[
    ("content_type", Rule::Str, false),
    ("content_encoding", Rule::Str, false),
    ("delivery_mode", Rule::Int(0), false),
    ("priority", Rule::Int(0), false),
    ("correlation_id", Rule::Str, false),
    ("reply_to", Rule::Str, false),
    ("expiration", Rule::Str, false),
    ("message_id", Rule::Str, false),
    ("timestamp", Rule::Int(0), false),
    ("type", Rule::Str, false),
    ("user_id", Rule::Str, false),
    ("app_id", Rule::Str, false),
    ("cluster_id", Rule::Str, false),
];

/// Validate a parameter's value for its component. The error is every
/// reason, one per line (without "Validation failed").
pub fn validate(component: &str, name: &str, value: &Value) -> Result<(), String> {
    match component {
        SHOVEL => validate_shovel(name, value),
        FEDERATION_UPSTREAM => validate_upstream(name, value),
        FEDERATION_UPSTREAM_SET => validate_upstream_set(name, value),
        other => Err(format!("component {other} not found")),
    }
}

/// A dynamic shovel (AMQP 0-9-1 on both sides).
pub fn validate_shovel(name: &str, value: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    if let Some(m) = value.as_object() {
        let has = |k: &str| m.contains_key(k);
        match (has("src-exchange"), has("src-queue")) {
            (false, false) => errors.push("Must specify 'src-exchange' or 'src-queue'".into()),
            (true, true) => errors.push("Cannot specify 'src-exchange' and 'src-queue'".into()),
            _ => {}
        }
        if has("src-exchange-key") && !has("src-exchange") {
            errors.push("Cannot specify 'src-exchange-key' without 'src-exchange'".into());
        }
        let delete_after = shovel_setting(value, "src-delete-after");
        if delete_after.is_some_and(Value::is_number)
            && m.get("ack-mode").and_then(Value::as_str) == Some("no-ack")
        {
            errors.push("Cannot specify 'no-ack' and numerical 'delete-after'".into());
        }
        if has("dest-exchange") && has("dest-queue") {
            errors.push("Cannot specify 'dest-exchange' and 'dest-queue'".into());
        }
    }
    proplist(name, value, &[SHOVEL_KEYS], &mut errors);
    done(errors)
}

/// A federation upstream.
pub fn validate_upstream(name: &str, value: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    proplist(name, value, &[UPSTREAM_URI, UPSTREAM_KEYS], &mut errors);
    done(errors)
}

/// A federation upstream set: a list of `{"upstream": NAME, ...}`.
pub fn validate_upstream_set(name: &str, value: &Value) -> Result<(), String> {
    let Some(members) = value.as_array() else {
        return Err(format!(
            "{name} should be list, actually was {}",
            erl(value)
        ));
    };
    let mut errors = Vec::new();
    for m in members {
        proplist(name, m, &[SET_MEMBER, UPSTREAM_KEYS], &mut errors);
    }
    done(errors)
}

/// A shovel's setting `key` by its current name, else by its pre-3.7 name
/// (`src-prefetch-count` or `prefetch-count`, `src-delete-after` or
/// `delete-after`, `dest-add-forward-headers` or `add-forward-headers`,
/// `dest-add-timestamp-header` or `add-timestamp-header`,
/// `dest-publish-properties` or `publish-properties`), as RabbitMQ reads it.
pub fn shovel_setting<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.get(key).or_else(|| {
        let (_, old) = SHOVEL_ALIASES.iter().find(|(new, _)| *new == key)?;
        value.get(*old)
    })
}

/// The URIs of a `src-uri`, `dest-uri` or `uri` value: the string, or the
/// strings of the list.
pub fn uris(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The vhosts of this broker a parameter's URIs name: those of URIs without
/// a host (`amqp://`, `amqp:///vhost`), which mean the local broker.
pub fn local_vhosts(component: &str, value: &Value) -> Vec<String> {
    let keys: &[&str] = match component {
        SHOVEL => &["src-uri", "dest-uri"],
        FEDERATION_UPSTREAM => &["uri"],
        _ => &[],
    };
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        for u in value.get(*k).map(uris).unwrap_or_default() {
            if let Ok(p) = AmqpUri::parse(u) {
                if p.host.is_none() && !out.contains(&p.vhost) {
                    out.push(p.vhost);
                }
            }
        }
    }
    out
}

/// An AMQP URI as RabbitMQ's `amqp_uri` reads it:
/// `amqp[s]://[user[:password]@][host][:port][/vhost][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUri {
    /// `amqps`.
    pub tls: bool,
    /// User name, percent-decoded.
    pub user: Option<String>,
    /// Password, percent-decoded.
    pub password: Option<String>,
    /// Host (brackets of an IPv6 address removed); None: the local broker.
    pub host: Option<String>,
    /// Port, if given.
    pub port: Option<u16>,
    /// Virtual host, percent-decoded: `/` when the URI has no path,
    /// empty for a lone `/`.
    pub vhost: String,
    /// Query parameters, as given (not decoded).
    pub query: Vec<(String, String)>,
}

impl AmqpUri {
    /// Parse a URI; the error is RabbitMQ's reason (Erlang terms, e.g.
    /// `{unexpected_uri_scheme,"http"}`).
    pub fn parse(uri: &str) -> Result<AmqpUri, String> {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Err("{unable_to_parse_uri,no_scheme}".into());
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "amqp" => false,
            "amqps" => true,
            other => return Err(format!("{{unexpected_uri_scheme,\"{other}\"}}")),
        };
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(unescape(n)?), Some(unescape(p)?)),
                None => (Some(unescape(u)?), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(format!(
                    "{{unable_to_parse_uri,{{bad_host,\"{hostport}\"}}}}"
                ));
            };
            match after {
                "" => (h, ""),
                p => match p.strip_prefix(':') {
                    Some(p) => (h, p),
                    None => {
                        return Err(format!(
                            "{{unable_to_parse_uri,{{bad_host,\"{hostport}\"}}}}"
                        ))
                    }
                },
            }
        } else {
            hostport.split_once(':').unwrap_or((hostport, ""))
        };
        let port = match port {
            "" => None,
            p => match p.parse::<u64>() {
                Ok(n) if (1..=65535).contains(&n) => u16::try_from(n).ok(),
                Ok(n) => return Err(format!("{{port_out_of_range,{n}}}")),
                Err(_) => return Err(format!("{{unable_to_parse_uri,{{invalid_port,\"{p}\"}}}}")),
            },
        };
        let host = match host {
            "" => None,
            h => Some(unescape(h)?),
        };
        if host.is_none() && port.is_some() {
            return Err("port_requires_host".into());
        }
        let vhost = match path.map(|p| p.strip_prefix('/').unwrap_or(p)) {
            None => "/".to_string(),
            Some(v) if v.contains('/') => return Err(format!("{{invalid_vhost,\"{v}\"}}")),
            Some(v) => unescape(v)?,
        };
        let query = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.to_string(), String::new()),
            })
            .collect();
        Ok(AmqpUri {
            tls,
            user,
            password,
            host,
            port,
            vhost,
            query,
        })
    }
}

/// Percent-decode one URI part.
fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3).unwrap_or("");
            match u8::from_str_radix(hex, 16) {
                Ok(n) if hex.len() == 2 => out.push(n),
                _ => {
                    let bad = s.get(i..).unwrap_or("");
                    return Err(format!("{{invalid_entity,\"{bad}\"}}"));
                }
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{{invalid_utf8,\"{s}\"}}"))
}

fn done(errors: Vec<String>) -> Result<(), String> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// RabbitMQ's `rabbit_parameter_validation:proplist`: `value` must be an
/// object of the keys in `specs`, each valid, the mandatory ones present.
fn proplist(name: &str, value: &Value, specs: &[&[Spec]], errors: &mut Vec<String>) {
    let Some(m) = value.as_object() else {
        errors.push(format!("{name} not a list {}", erl(value)));
        return;
    };
    let all = || specs.iter().flat_map(|s| s.iter());
    let unknown: Vec<String> = m
        .iter()
        .filter(|(k, _)| !all().any(|(n, _, _)| n == k))
        .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erl(v)))
        .collect();
    if !unknown.is_empty() {
        errors.push(format!(
            "Unrecognised terms [{}] in {name}",
            unknown.join(",")
        ));
    }
    for (key, rule, mandatory) in all() {
        match m.get(*key) {
            Some(v) => check(key, *rule, v, errors),
            None if *mandatory => errors.push(format!("Key \"{key}\" not found in {name}")),
            None => {}
        }
    }
}

/// One key's value against its rule.
fn check(key: &str, rule: Rule, v: &Value, errors: &mut Vec<String>) {
    let was = erl(v);
    let err = match rule {
        Rule::Uris => match v {
            Value::String(s) => uri_error(s),
            Value::Array(a) if a.is_empty() => {
                Some(format!("{key} should be a non-empty list of URIs"))
            }
            Value::Array(a) => a.iter().find_map(|u| match u {
                Value::String(s) => uri_error(s),
                other => Some(format!(
                    "{key} should be binary, actually was {}",
                    erl(other)
                )),
            }),
            _ => Some(format!("{key} should be list, actually was {was}")),
        },
        Rule::Str => {
            (!v.is_string()).then(|| format!("{key} should be binary, actually was {was}"))
        }
        Rule::QueueName => match v.as_str() {
            None => Some(format!("{key} should be binary, actually was {was}")),
            Some(s) if s.len() > 255 => Some(format!(
                "{key} should be less than 255 bytes, actually was {}",
                s.len()
            )),
            Some(_) => None,
        },
        Rule::Bool => {
            (!v.is_boolean()).then(|| format!("{key} should be boolean, actually was {was}"))
        }
        Rule::Int(min) => match v.as_i64() {
            _ if !v.is_number() => Some(format!("{key} should be a number, actually was {was}")),
            Some(n) if n >= min => None,
            _ => Some(format!(
                "{key} should be an integer of at least {min}, actually was {was}"
            )),
        },
        Rule::Number => match v.as_f64() {
            _ if !v.is_number() => Some(format!("{key} should be a number, actually was {was}")),
            Some(n) if n >= 0.0 => None,
            _ => Some(format!(
                "{key} should be a non-negative number, actually was {was}"
            )),
        },
        Rule::Enum(options) => match v.as_str() {
            None => Some(format!("{key} should be binary, actually was {was}")),
            Some(s) if options.contains(&s) => None,
            Some(_) => {
                let opts: Vec<String> = options.iter().map(|o| format!("<<\"{o}\">>")).collect();
                Some(format!(
                    "{key} should be one of [{}], actually was {was}",
                    opts.join(",")
                ))
            }
        },
        Rule::DeleteAfter => match v {
            Value::String(s) if s == "never" || s == "queue-length" => None,
            Value::Number(n) if n.as_u64().is_some() => None,
            _ => Some(format!(
                "{key} should be number, \"never\" or \"queue-length\", actually was {was}"
            )),
        },
        Rule::Object => {
            (!v.is_object()).then(|| format!("{key} should be an object, actually was {was}"))
        }
        Rule::Properties => {
            proplist(key, v, &[PROPERTY_KEYS], errors);
            None
        }
    };
    errors.extend(err);
}

/// Why `uri` is not a URI a shovel or an upstream can use, if it is not.
fn uri_error(uri: &str) -> Option<String> {
    AmqpUri::parse(uri)
        .err()
        .map(|e| format!("\"{uri}\" not a valid URI: {{{e},\"{uri}\"}}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shovel(v: Value) -> Result<(), String> {
        validate(SHOVEL, "s", &v)
    }

    #[test]
    fn a_minimal_and_a_full_shovel_are_valid() {
        shovel(json!({"src-uri": "amqp://", "src-queue": "a",
                      "dest-uri": "amqp://", "dest-queue": "b"}))
        .unwrap();
        shovel(json!({
            "src-protocol": "amqp091", "dest-protocol": "amqp091",
            "src-uri": ["amqp://u:p@h1:5672/%2f", "amqps://h2"], "src-exchange": "x",
            "src-exchange-key": "k.#", "src-prefetch-count": 10, "src-delete-after": 5,
            "src-consumer-args": {"x-priority": 1}, "src-queue-args": {},
            "dest-uri": "amqp://remote", "dest-exchange": "y", "dest-exchange-key": "z",
            "dest-add-forward-headers": true, "dest-add-timestamp-header": false,
            "dest-publish-properties": {"delivery_mode": 2, "app_id": "shovel"},
            "dest-queue-args": {"x-queue-type": "quorum"},
            "ack-mode": "on-publish", "reconnect-delay": 2.5
        }))
        .unwrap();
        // Neither dest-queue nor dest-exchange: messages keep their key.
        shovel(json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://"})).unwrap();
        // The pre-3.7 names RabbitMQ still takes.
        let old = json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://",
                         "prefetch-count": 5, "delete-after": "queue-length",
                         "add-forward-headers": true});
        shovel(old.clone()).unwrap();
        assert_eq!(shovel_setting(&old, "src-prefetch-count"), Some(&json!(5)));
        assert_eq!(
            shovel_setting(&old, "dest-add-forward-headers"),
            Some(&json!(true))
        );
        assert_eq!(shovel_setting(&old, "src-queue"), Some(&json!("a")));
        assert_eq!(shovel_setting(&old, "ack-mode"), None);
    }

    #[test]
    fn shovel_errors_have_rabbitmqs_texts() {
        let base = || json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://"});
        let with = |k: &str, v: Value| {
            let mut b = base();
            b.as_object_mut().unwrap().insert(k.into(), v);
            shovel(b).unwrap_err()
        };
        let without = |k: &str| {
            let mut b = base();
            b.as_object_mut().unwrap().remove(k);
            shovel(b).unwrap_err()
        };
        assert_eq!(without("dest-uri"), "Key \"dest-uri\" not found in s");
        assert_eq!(
            without("src-queue"),
            "Must specify 'src-exchange' or 'src-queue'"
        );
        assert_eq!(
            with("src-exchange", json!("x")),
            "Cannot specify 'src-exchange' and 'src-queue'"
        );
        assert_eq!(
            with("src-exchange-key", json!("k")),
            "Cannot specify 'src-exchange-key' without 'src-exchange'"
        );
        assert_eq!(
            shovel(
                json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://",
                          "dest-queue": "b", "dest-exchange": "x"})
            )
            .unwrap_err(),
            "Cannot specify 'dest-exchange' and 'dest-queue'"
        );
        assert_eq!(
            with("ack-mode", json!("sometimes")),
            "ack-mode should be one of [<<\"no-ack\">>,<<\"on-publish\">>,<<\"on-confirm\">>], \
             actually was <<\"sometimes\">>"
        );
        assert_eq!(
            with("dest-uri", json!("http://example.com")),
            "\"http://example.com\" not a valid URI: \
             {{unexpected_uri_scheme,\"http\"},\"http://example.com\"}"
        );
        assert!(with("dest-uri", json!([])).contains("non-empty list"));
        assert!(with("dest-uri", json!(["amqp://", "localhost"])).contains("not a valid URI"));
        assert_eq!(
            with("dest-uri", json!(5)),
            "dest-uri should be list, actually was 5"
        );
        assert_eq!(
            with("foo", json!(1)),
            "Unrecognised terms [{<<\"foo\">>,1}] in s"
        );
        assert_eq!(
            with("src-prefetch-count", json!(-1)),
            "src-prefetch-count should be an integer of at least 0, actually was -1"
        );
        assert_eq!(
            with("src-prefetch-count", json!("10")),
            "src-prefetch-count should be a number, actually was <<\"10\">>"
        );
        assert!(with("src-delete-after", json!("sometime")).contains("\"queue-length\""));
        assert!(with("src-delete-after", json!(-1)).contains("should be number"));
        assert!(with("reconnect-delay", json!(-0.5)).contains("non-negative"));
        assert!(with("dest-add-forward-headers", json!("yes")).contains("should be boolean"));
        assert!(with("src-protocol", json!("amqp10")).contains("[<<\"amqp091\">>]"));
        assert!(
            with("dest-publish-properties", json!({"colour": "red"})).contains(
                "Unrecognised terms [{<<\"colour\">>,<<\"red\">>}] in dest-publish-properties"
            )
        );
        assert!(with("src-consumer-args", json!([])).contains("should be an object"));
        assert!(with("src-queue", json!("q".repeat(256))).contains("less than 255 bytes"));
        let mut no_ack = base();
        let m = no_ack.as_object_mut().unwrap();
        m.insert("ack-mode".into(), json!("no-ack"));
        m.insert("src-delete-after".into(), json!(10));
        assert_eq!(
            shovel(no_ack).unwrap_err(),
            "Cannot specify 'no-ack' and numerical 'delete-after'"
        );
        assert_eq!(shovel(json!([1])).unwrap_err(), "s not a list [1]");
        // Every error, one per line.
        let e = shovel(json!({"src-queue": "a", "src-exchange": "x", "bogus": true})).unwrap_err();
        assert_eq!(
            e.lines().collect::<Vec<_>>(),
            vec![
                "Cannot specify 'src-exchange' and 'src-queue'",
                "Unrecognised terms [{<<\"bogus\">>,true}] in s",
                "Key \"src-uri\" not found in s",
                "Key \"dest-uri\" not found in s",
            ]
        );
    }

    #[test]
    fn upstreams_and_sets() {
        let up = |v: Value| validate(FEDERATION_UPSTREAM, "u", &v);
        up(json!({"uri": "amqp://remote"})).unwrap();
        up(
            json!({"uri": ["amqp://a", "amqps://b:5671"], "prefetch-count": 0,
                  "reconnect-delay": 1, "ack-mode": "no-ack", "trust-user-id": true,
                  "max-hops": 2, "expires": 1000, "message-ttl": 0, "exchange": "x",
                  "queue": "q", "consumer-tag": "t", "ha-policy": "all",
                  "queue-type": "quorum", "bind-nowait": false,
                  "channel-use-mode": "single"}),
        )
        .unwrap();
        assert_eq!(up(json!({})).unwrap_err(), "Key \"uri\" not found in u");
        assert!(up(json!({"uri": "amqp://", "max-hops": 0}))
            .unwrap_err()
            .contains("max-hops"));
        assert!(up(json!({"uri": "amqp://", "expires": 0}))
            .unwrap_err()
            .contains("expires"));
        assert!(up(json!({"uri": "amqp://", "src-queue": "x"}))
            .unwrap_err()
            .contains("Unrecognised terms"));
        assert!(up(json!({"uri": "amqp://", "queue-type": "stream"})).is_err());
        let set = |v: Value| validate(FEDERATION_UPSTREAM_SET, "s", &v);
        set(json!([{"upstream": "a"}, {"upstream": "b", "max-hops": 3}])).unwrap();
        set(json!([])).unwrap();
        assert_eq!(
            set(json!([{"max-hops": 3}])).unwrap_err(),
            "Key \"upstream\" not found in s"
        );
        assert!(set(json!([{"upstream": "a", "uri": "amqp://"}])).is_err());
        assert_eq!(
            set(json!({"upstream": "a"})).unwrap_err(),
            "s should be list, actually was #{<<\"upstream\">> => <<\"a\">>}"
        );
        assert_eq!(
            validate("nope", "n", &json!({})).unwrap_err(),
            "component nope not found"
        );
    }

    #[test]
    fn uris_parse_as_amqp_uri_does() {
        let p = AmqpUri::parse("amqps://us%40er:p%3Aw@example.com:5671/v%2Fh?heartbeat=5").unwrap();
        assert!(p.tls);
        assert_eq!(p.user.as_deref(), Some("us@er"));
        assert_eq!(p.password.as_deref(), Some("p:w"));
        assert_eq!(p.host.as_deref(), Some("example.com"));
        assert_eq!(p.port, Some(5671));
        assert_eq!(p.vhost, "v/h");
        assert_eq!(p.query, vec![("heartbeat".into(), "5".into())]);
        let local = AmqpUri::parse("amqp://").unwrap();
        assert_eq!((local.host, local.vhost.as_str()), (None, "/"));
        assert_eq!(AmqpUri::parse("amqp:///").unwrap().vhost, "");
        assert_eq!(AmqpUri::parse("amqp:///other").unwrap().vhost, "other");
        let v6 = AmqpUri::parse("AMQP://[::1]:5673").unwrap();
        assert_eq!((v6.host.as_deref(), v6.port), (Some("::1"), Some(5673)));
        assert_eq!(
            AmqpUri::parse("amqp://h:0").unwrap_err(),
            "{port_out_of_range,0}"
        );
        assert!(AmqpUri::parse("amqp://h:x").is_err());
        assert_eq!(
            AmqpUri::parse("amqp://:5672").unwrap_err(),
            "port_requires_host"
        );
        assert!(AmqpUri::parse("amqp://h/a/b").is_err());
        assert!(AmqpUri::parse("amqp://h/%zz").is_err());
        assert!(AmqpUri::parse("localhost").is_err());
        assert_eq!(
            local_vhosts(
                SHOVEL,
                &json!({"src-uri": ["amqp://", "amqp://remote/x"], "dest-uri": "amqp:///b"})
            ),
            vec!["/".to_string(), "b".to_string()]
        );
        assert!(local_vhosts(FEDERATION_UPSTREAM, &json!({"uri": "amqp://h"})).is_empty());
        assert!(local_vhosts(FEDERATION_UPSTREAM_SET, &json!([])).is_empty());
    }
}
