//! Policies, operator policies and limits: RabbitMQ's runtime configuration.
//!
//! A policy names a vhost, a regular expression over queue or exchange
//! names, what it applies to, a priority and a definition (`message-ttl`,
//! `max-length`, `dead-letter-exchange`, ...). Of the policies matching a
//! queue the highest priority one applies (ties: the name that sorts first),
//! and likewise of the operator policies; the queue's effective settings
//! combine its arguments, its policy and its operator policy the way RabbitMQ
//! combines them ([`effective`]). Definitions are validated with RabbitMQ's
//! texts; keys RabbitMQ knows that warren does not act on (`ha-mode`,
//! `federation-upstream`, ...) are kept, exported and reported as inert.
//!
//! This module is data and rules only; `crate::engine` applies them to
//! queues and exchanges when a policy or an entity changes.

use std::collections::BTreeMap;

use bytes::Bytes;
use fancy_regex::Regex;
use serde_json::{Map, Value};

use super::args::{Overflow, QueueArgs, MAX_EXPIRY_MS};

/// What a policy applies to (`apply-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Queues and exchanges.
    All,
    /// Every queue type.
    Queues,
    /// Classic queues.
    ClassicQueues,
    /// Quorum queues.
    QuorumQueues,
    /// Streams.
    Streams,
    /// Exchanges.
    Exchanges,
}

impl ApplyTo {
    /// The `apply-to` value of this name.
    pub fn parse(s: &str) -> Option<ApplyTo> {
        Some(match s {
            "all" => ApplyTo::All,
            "queues" => ApplyTo::Queues,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "streams" => ApplyTo::Streams,
            "exchanges" => ApplyTo::Exchanges,
            _ => return None,
        })
    }

    /// Its name in the API.
    pub fn name(self) -> &'static str {
        match self {
            ApplyTo::All => "all",
            ApplyTo::Queues => "queues",
            ApplyTo::ClassicQueues => "classic_queues",
            ApplyTo::QuorumQueues => "quorum_queues",
            ApplyTo::Streams => "streams",
            ApplyTo::Exchanges => "exchanges",
        }
    }

    /// Does it apply to `target`?
    pub fn covers(self, target: Target) -> bool {
        match (self, target) {
            (ApplyTo::All, _) => true,
            (ApplyTo::Exchanges, t) => t == Target::Exchange,
            (_, Target::Exchange) => false,
            (ApplyTo::Queues, _) => true,
            (ApplyTo::ClassicQueues, t) => t == Target::ClassicQueue,
            (ApplyTo::QuorumQueues, t) => t == Target::QuorumQueue,
            (ApplyTo::Streams, t) => t == Target::Stream,
        }
    }
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A classic queue.
    ClassicQueue,
    /// A quorum queue.
    QuorumQueue,
    /// A stream.
    Stream,
    /// An exchange.
    Exchange,
}

/// The definition keys warren acts on, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyKeys {
    /// `message-ttl`.
    pub message_ttl: Option<u64>,
    /// `expires`.
    pub expires: Option<u64>,
    /// `max-length`.
    pub max_length: Option<u64>,
    /// `max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `overflow`.
    pub overflow: Option<Overflow>,
    /// `dead-letter-exchange`.
    pub dead_letter_exchange: Option<Bytes>,
    /// `dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<Bytes>,
    /// `alternate-exchange` (exchanges).
    pub alternate_exchange: Option<Bytes>,
    /// `delivery-limit` (quorum queues; negative: no limit).
    pub delivery_limit: Option<i64>,
    /// `consumer-timeout` in milliseconds.
    pub consumer_timeout: Option<u64>,
    /// `max-age` (streams), milliseconds.
    pub max_age: Option<u64>,
    /// `stream-max-segment-size-bytes` (streams).
    pub stream_max_segment: Option<u64>,
    /// `x-message-deduplication` (the deduplication plugin's policy key):
    /// wins over the queue argument, as with the plugin.
    pub dedup: Option<bool>,
}

/// Keys RabbitMQ accepts in a policy that warren keeps without acting on
/// them (classic mirroring, federation, stream and quorum placement ...).
pub const INERT_KEYS: [&str; 13] = [
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "ha-sync-batch-size",
    "queue-master-locator",
    "queue-leader-locator",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "initial-cluster-size",
    "target-group-size",
    "dead-letter-strategy",
];

/// Keys RabbitMQ's federation plugin adds (kept for the federation links).
pub const FEDERATION_KEYS: [&str; 2] = ["federation-upstream", "federation-upstream-set"];

/// Keys an operator policy may set (RabbitMQ's operator policy validators).
pub const OPERATOR_KEYS: [&str; 10] = [
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
    "queue-version",
    "overflow",
    "target-group-size",
];

/// Keys a classic queue does not take: a policy with one of them does not
/// apply to classic queues at all (RabbitMQ 4).
const NOT_CLASSIC_KEYS: [&str; 9] = [
    "delivery-limit",
    "dead-letter-strategy",
    "max-age",
    "stream-max-segment-size-bytes",
    "queue-leader-locator",
    "initial-cluster-size",
    "target-group-size",
    "max-in-memory-length",
    "max-in-memory-bytes",
];

/// Keys a quorum queue does not take (the policy does not apply to it).
const NOT_QUORUM_KEYS: [&str; 9] = [
    "queue-mode",
    "max-age",
    "stream-max-segment-size-bytes",
    "queue-master-locator",
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
];

/// Keys a stream does not take (the policy does not apply to it).
const NOT_STREAM_KEYS: [&str; 19] = [
    "message-ttl",
    "expires",
    "max-length",
    "overflow",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "delivery-limit",
    "queue-mode",
    "queue-version",
    "queue-master-locator",
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "target-group-size",
];

/// How Erlang's `~tp` prints a JSON value RabbitMQ decoded: strings as
/// binaries (`<<"x">>`), lists in brackets, objects as maps.
pub fn erl(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("<<\"{s}\">>"),
        Value::Array(a) => format!("[{}]", a.iter().map(erl).collect::<Vec<_>>().join(",")),
        Value::Object(m) => format!(
            "#{{{}}}",
            m.iter()
                .map(|(k, v)| format!("<<\"{k}\">> => {}", erl(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn int_in(v: &Value, min: i64, max: i64) -> Option<i64> {
    v.as_i64().filter(|n| (min..=max).contains(n))
}

/// A stream's `max-age`: a number and a unit (`Y`, `M`, `D`, `h`, `m`, `s`).
fn valid_max_age(s: &str) -> bool {
    let digits = s.trim_end_matches(['Y', 'M', 'D', 'h', 'm', 's']);
    let unit = s.len() - digits.len();
    unit == 1 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn string(v: &Value) -> Option<Bytes> {
    v.as_str().map(|s| Bytes::copy_from_slice(s.as_bytes()))
}

/// Validate one key of a definition into `keys`; the error is RabbitMQ's.
fn parse_key(k: &str, v: &Value, keys: &mut PolicyKeys) -> Result<(), String> {
    let bad = |what: &str| Err(format!("{} is not a valid {what}", erl(v)));
    let max_expiry = MAX_EXPIRY_MS as i64;
    match k {
        "alternate-exchange" => match string(v) {
            Some(s) => keys.alternate_exchange = Some(s),
            None => return bad("alternate exchange name"),
        },
        "dead-letter-exchange" => match string(v) {
            Some(s) => keys.dead_letter_exchange = Some(s),
            None => return bad("dead letter exchange name"),
        },
        "dead-letter-routing-key" => match string(v) {
            Some(s) => keys.dead_letter_routing_key = Some(s),
            None => return bad("dead letter routing key"),
        },
        "message-ttl" => match int_in(v, 0, max_expiry) {
            Some(n) => keys.message_ttl = Some(n as u64),
            None => return bad("message TTL"),
        },
        "expires" => match int_in(v, 1, max_expiry) {
            Some(n) => keys.expires = Some(n as u64),
            None => return bad("queue expiry"),
        },
        "max-length" => match int_in(v, 0, i64::MAX) {
            Some(n) => keys.max_length = Some(n as u64),
            None => return bad("maximum length"),
        },
        "max-length-bytes" => match int_in(v, 0, i64::MAX) {
            Some(n) => keys.max_length_bytes = Some(n as u64),
            None => return bad("maximum length in bytes"),
        },
        "overflow" => match v.as_str().and_then(|s| Overflow::parse(s.as_bytes())) {
            Some(o) => keys.overflow = Some(o),
            None => return bad("overflow value"),
        },
        // RabbitMQ 4.x: any integer (negative: no limit).
        "delivery-limit" => match v.as_i64() {
            Some(n) => keys.delivery_limit = Some(n),
            None => return bad("delivery limit"),
        },
        "consumer-timeout" => match int_in(v, 0, i64::MAX) {
            Some(n) => keys.consumer_timeout = Some(n as u64),
            None => return bad("consumer timeout"),
        },
        "queue-mode" => {
            if !matches!(v.as_str(), Some("default" | "lazy")) {
                return bad("queue-mode value");
            }
        }
        "queue-version" => {
            if !matches!(v.as_i64(), Some(1 | 2)) {
                return bad("queue-version value");
            }
        }
        "max-in-memory-length" | "max-in-memory-bytes" => {
            if int_in(v, 0, i64::MAX).is_none() {
                return bad("maximum memory in bytes");
            }
        }
        "initial-cluster-size" => {
            if int_in(v, 0, i64::MAX).is_none() {
                return bad("cluster size");
            }
        }
        "stream-max-segment-size-bytes" => match int_in(v, 0, i64::MAX) {
            Some(n) => keys.stream_max_segment = Some((n as u64).max(1)),
            None => return bad("segment size"),
        },
        "target-group-size" => {
            if int_in(v, 1, i64::MAX).is_none() {
                return bad("qq target count value");
            }
        }
        "max-age" => match v.as_str().filter(|s| valid_max_age(s)) {
            Some(s) => {
                keys.max_age = super::stream::interval_ms(s.as_bytes()).filter(|&ms| ms > 0);
                if keys.max_age.is_none() {
                    return bad("max age");
                }
            }
            None => return bad("max age"),
        },
        "queue-leader-locator" => {
            if !matches!(
                v.as_str(),
                Some("client-local" | "balanced" | "random" | "least-leaders")
            ) {
                return bad("queue leader locator value");
            }
        }
        "dead-letter-strategy" => {
            if !matches!(v.as_str(), Some("at-most-once" | "at-least-once")) {
                return bad("dead letter strategy");
            }
        }
        // The deduplication plugin's policy validators (its texts). Only
        // `x-message-deduplication` acts (on queues); the plugin's exchanges
        // read their cache settings from their arguments alone.
        "x-message-deduplication" => match v.as_bool() {
            Some(b) => keys.dedup = Some(b),
            None => {
                return Err(format!(
                    "'x-message-deduplication' must be a boolean, got {}",
                    erl(v)
                ))
            }
        },
        "x-cache-size" | "x-cache-ttl" => {
            if int_in(v, 1, i64::MAX).is_none() {
                return Err(format!(
                    "'{k}' must be an integer greater than 0, got {}",
                    erl(v)
                ));
            }
        }
        "x-cache-persistence" => {
            if !matches!(v.as_str(), Some("disk" | "memory")) {
                return Err(format!(
                    "'x-cache-persistence' must be either 'disk' or 'memory', got {}",
                    erl(v)
                ));
            }
        }
        "federation-upstream" | "federation-upstream-set" => {
            if v.as_str().is_none_or(str::is_empty) {
                return Err(format!("{} must be a non-empty binary", erl(v)));
            }
        }
        _ if INERT_KEYS.contains(&k) => {}
        _ => return Err(format!("[<<\"{k}\">>] are not recognised policy settings")),
    }
    Ok(())
}

/// A policy or an operator policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Virtual host.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// The regular expression over names, as given.
    pub pattern: String,
    regex: Regex,
    /// What every name it matches starts with, if the pattern says.
    prefix: Option<String>,
    /// Whether classic queues, quorum queues and streams take all its
    /// keys (a policy with a key the queue type does not take does not
    /// apply to it).
    fits: (bool, bool, bool),
    /// What it applies to.
    pub apply_to: ApplyTo,
    /// Priority: the highest matching policy applies.
    pub priority: i64,
    /// The definition, as given.
    pub definition: Map<String, Value>,
    /// The keys warren acts on.
    pub keys: PolicyKeys,
}

impl PartialEq for Policy {
    fn eq(&self, o: &Policy) -> bool {
        (
            &self.vhost,
            &self.name,
            &self.pattern,
            self.apply_to,
            self.priority,
            &self.definition,
        ) == (
            &o.vhost,
            &o.name,
            &o.pattern,
            o.apply_to,
            o.priority,
            &o.definition,
        )
    }
}

/// "Validation failed" and RabbitMQ's reason, as the API answers a bad policy.
pub fn validation_failed(why: &str) -> String {
    format!("Validation failed\n\n{why}\n")
}

impl Policy {
    /// A policy (`operator`: an operator policy, which takes fewer keys),
    /// validated as RabbitMQ validates it. The error is the reason alone
    /// (see [`validation_failed`]).
    pub fn new(
        vhost: &str,
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: Map<String, Value>,
        operator: bool,
    ) -> Result<Policy, String> {
        let regex = Regex::new(pattern)
            .map_err(|e| format!("pattern should be regular expression but is invalid: {e}"))?;
        let apply = ApplyTo::parse(apply_to).ok_or_else(|| {
            format!(
                "apply-to '{apply_to}' unrecognised; should be one of: 'queues', 'classic_queues',  \
                 'quorum_queues', 'streams', 'exchanges', or 'all'"
            )
        })?;
        if definition.is_empty() {
            return Err("no policy provided".into());
        }
        let allowed = |k: &str| {
            if operator {
                OPERATOR_KEYS.contains(&k)
            } else {
                known_key(k)
            }
        };
        // As RabbitMQ: the known keys first, in key order (the first
        // error wins), then the unknown ones, all named.
        let mut keys = PolicyKeys::default();
        for (k, v) in definition.iter().filter(|(k, _)| allowed(k)) {
            parse_key(k, v, &mut keys)?;
        }
        let unknown: Vec<String> = definition
            .iter()
            .filter(|(k, _)| !allowed(k))
            .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erl(v)))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "[{}] are not recognised policy settings",
                unknown.join(",")
            ));
        }

        let takes = |not: &[&str]| !definition.keys().any(|k| not.contains(&k.as_str()));
        let fits = (
            takes(&NOT_CLASSIC_KEYS),
            takes(&NOT_QUORUM_KEYS),
            takes(&NOT_STREAM_KEYS),
        );
        Ok(Policy {
            vhost: vhost.to_string(),
            name: name.to_string(),
            pattern: pattern.to_string(),
            prefix: literal_prefix(pattern),
            fits,
            regex,
            apply_to: apply,
            priority,
            definition,
            keys,
        })
    }

    /// Does it apply to `name` of kind `target`? As RabbitMQ 4, a policy
    /// with a key the queue type does not take does not apply to it.
    pub fn matches(&self, name: &[u8], target: Target) -> bool {
        self.matches_text(&String::from_utf8_lossy(name), target)
    }

    fn matches_text(&self, name: &str, target: Target) -> bool {
        if !self.apply_to.covers(target) {
            return false;
        }
        if self
            .prefix
            .as_ref()
            .is_some_and(|p| !name.starts_with(p.as_str()))
        {
            return false;
        }
        let fits = match target {
            Target::ClassicQueue => self.fits.0,
            Target::QuorumQueue => self.fits.1,
            Target::Stream => self.fits.2,
            Target::Exchange => true,
        };
        fits && self.regex.is_match(name).unwrap_or(false)
    }

    /// Keys of its definition that warren keeps without acting on.
    pub fn inert_keys(&self) -> Vec<&str> {
        self.definition
            .keys()
            .map(String::as_str)
            .filter(|k| INERT_KEYS.contains(k) || FEDERATION_KEYS.contains(k))
            .collect()
    }

    /// As `/api/policies` lists it.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "vhost": self.vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to.name(),
            "definition": self.definition,
            "priority": self.priority,
        })
    }

    /// Ranks before `o`: higher priority, then the name that sorts first.
    fn outranks(&self, o: &Policy) -> bool {
        (std::cmp::Reverse(self.priority), &self.name) < (std::cmp::Reverse(o.priority), &o.name)
    }
}

/// A key a (user) policy may set.
pub fn known_key(k: &str) -> bool {
    matches!(
        k,
        "alternate-exchange"
            | "dead-letter-exchange"
            | "dead-letter-routing-key"
            | "message-ttl"
            | "expires"
            | "max-length"
            | "max-length-bytes"
            | "overflow"
            | "delivery-limit"
            | "consumer-timeout"
            | "queue-mode"
            | "queue-version"
            | "max-age"
            | "stream-max-segment-size-bytes"
            | "x-message-deduplication"
            | "x-cache-size"
            | "x-cache-ttl"
            | "x-cache-persistence"
    ) || INERT_KEYS.contains(&k)
        || FEDERATION_KEYS.contains(&k)
}

/// The literal text every name a pattern matches starts with, when the
/// pattern is anchored (`^app-1-`, `^jobs$`): names without it are
/// rejected without running the regular expression. Conservative: a
/// pattern with an alternation anywhere has none, and a literal made
/// optional by a quantifier after it is left out.
fn literal_prefix(pattern: &str) -> Option<String> {
    let rest = pattern.strip_prefix('^')?;
    if pattern.contains('|') {
        return None;
    }
    let mut out = String::new();
    for c in rest.chars() {
        match c {
            '*' | '?' | '{' => {
                out.pop();
                break;
            }
            '\\' | '.' | '[' | ']' | '(' | ')' | '}' | '+' | '^' | '$' => break,
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// One vhost's policies: ranked (highest priority first, then by name),
/// with indexes so that finding the one that applies to a name looks only
/// at the policies whose literal prefix the name has (and those without
/// one), and finding one by name is a hash lookup.
#[derive(Debug, Clone, Default)]
struct Ranked {
    list: Vec<Policy>,
    by_name: std::collections::HashMap<String, usize>,
    /// Positions in `list` of the policies without a literal prefix.
    unprefixed: Vec<usize>,
    /// Positions in `list` by literal prefix.
    by_prefix: std::collections::HashMap<String, Vec<usize>>,
    /// The lengths (in bytes) of those prefixes.
    prefix_lens: Vec<usize>,
}

impl Ranked {
    fn reindex(&mut self) {
        self.by_name.clear();
        self.unprefixed.clear();
        self.by_prefix.clear();
        self.prefix_lens.clear();
        for (i, p) in self.list.iter().enumerate() {
            self.by_name.insert(p.name.clone(), i);
            match &p.prefix {
                None => self.unprefixed.push(i),
                Some(x) => {
                    self.by_prefix.entry(x.clone()).or_default().push(i);
                    if !self.prefix_lens.contains(&x.len()) {
                        self.prefix_lens.push(x.len());
                    }
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<&Policy> {
        self.by_name.get(name).and_then(|&i| self.list.get(i))
    }

    fn best(&self, name: &[u8], target: Target) -> Option<&Policy> {
        let text = String::from_utf8_lossy(name);
        // The candidates' positions, best rank first.
        let mut candidates: Vec<usize> = self.unprefixed.clone();
        for &n in &self.prefix_lens {
            if let Some(ps) = text.get(..n).and_then(|p| self.by_prefix.get(p)) {
                candidates.extend_from_slice(ps);
            }
        }
        candidates.sort_unstable();
        candidates
            .into_iter()
            .filter_map(|i| self.list.get(i))
            .find(|p| p.matches_text(&text, target))
    }
}

/// The policies of one kind in every vhost, each vhost's sorted by rank
/// (highest priority first), so the first match is the one that applies.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    by_vhost: BTreeMap<String, Ranked>,
}

impl PolicySet {
    /// Add or replace a policy. Returns the one it replaced.
    pub fn put(&mut self, p: Policy) -> Option<Policy> {
        let r = self.by_vhost.entry(p.vhost.clone()).or_default();
        let old = r.by_name.get(&p.name).map(|&i| r.list.remove(i));
        let at = r.list.partition_point(|x| x.outranks(&p));
        r.list.insert(at, p);
        r.reindex();
        old
    }

    /// Remove a policy; returns it.
    pub fn remove(&mut self, vhost: &str, name: &str) -> Option<Policy> {
        let r = self.by_vhost.get_mut(vhost)?;
        let i = *r.by_name.get(name)?;
        let p = r.list.remove(i);
        if r.list.is_empty() {
            self.by_vhost.remove(vhost);
        } else {
            r.reindex();
        }
        Some(p)
    }

    /// Remove every policy of a vhost.
    pub fn remove_vhost(&mut self, vhost: &str) {
        self.by_vhost.remove(vhost);
    }

    /// One policy.
    pub fn get(&self, vhost: &str, name: &str) -> Option<&Policy> {
        self.by_vhost.get(vhost)?.get(name)
    }

    /// The policies of a vhost (or all), by vhost then rank.
    pub fn iter<'a>(&'a self, vhost: Option<&'a str>) -> impl Iterator<Item = &'a Policy> + 'a {
        self.by_vhost
            .iter()
            .filter(move |(v, _)| vhost.is_none_or(|x| x == v.as_str()))
            .flat_map(|(_, r)| r.list.iter())
    }

    /// The policy that applies to `name` of kind `target` in `vhost`.
    pub fn best(&self, vhost: &[u8], name: &[u8], target: Target) -> Option<&Policy> {
        let vhost = std::str::from_utf8(vhost).ok()?;
        self.by_vhost.get(vhost)?.best(name, target)
    }

    /// Would `p` (one of these) win over the policy named `current` for
    /// an entity it matches?
    pub fn outranks(&self, p: &Policy, current: Option<&str>) -> bool {
        match current.and_then(|c| self.get(&p.vhost, c)) {
            None => true,
            Some(c) => p.outranks(c),
        }
    }
}

fn min(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Two delivery limits combined as RabbitMQ 4 combines them: if either is
/// negative (no limit) the higher, else the lower.
fn delivery_limit(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) if x < 0 || y < 0 => Some(x.max(y)),
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// A queue's effective settings: its arguments (`declared`), its policy
/// and its operator policy combined as RabbitMQ combines them. Limits
/// (`message-ttl`, `expires`, `max-length`, `max-length-bytes`,
/// `consumer-timeout`) take the lowest value set by any of the three,
/// `delivery-limit` the rule of [`delivery_limit`]; dead-lettering takes
/// the argument, else the policy; `overflow` as commented below.
pub fn effective(declared: &QueueArgs, policy: Option<&Policy>, op: Option<&Policy>) -> QueueArgs {
    let none = PolicyKeys::default();
    let p = policy.map_or(&none, |p| &p.keys);
    let o = op.map_or(&none, |p| &p.keys);
    let mut out = declared.clone();
    out.message_ttl = min(declared.message_ttl, min(p.message_ttl, o.message_ttl));
    out.expires = min(declared.expires, min(p.expires, o.expires));
    out.max_length = min(declared.max_length, min(p.max_length, o.max_length));
    out.max_length_bytes = min(
        declared.max_length_bytes,
        min(p.max_length_bytes, o.max_length_bytes),
    );
    out.consumer_timeout = min(
        declared.consumer_timeout,
        min(p.consumer_timeout, o.consumer_timeout),
    );
    if declared.stream {
        // The lower of the argument and the policies', as for lengths; a
        // segment size given as an argument wins.
        out.max_age = min(declared.max_age, min(p.max_age, o.max_age));
        out.max_segment = declared
            .max_segment
            .or(p.stream_max_segment)
            .or(o.stream_max_segment);
    }
    if declared.quorum {
        let policies = delivery_limit(p.delivery_limit, o.delivery_limit);
        let limit = delivery_limit(declared.delivery_limit_arg, policies);
        out.delivery_limit = limit.and_then(|n| u64::try_from(n).ok());
    }
    // The operator policy's overflow wins over the policy's; the argument
    // wins over both for classic queues, the policies for quorum queues.
    if let Some(x) = o.overflow.or(p.overflow) {
        if declared.quorum || !declared.overflow_set {
            out.overflow = x;
        }
    }
    if declared.dead_letter_exchange.is_none() {
        out.dead_letter_exchange = p.dead_letter_exchange.clone();
    }
    if declared.dead_letter_routing_key.is_none() {
        out.dead_letter_routing_key = p.dead_letter_routing_key.clone();
    }
    if let Some(d) = p.dedup {
        out.dedup = d;
    }
    out
}

/// The definition that applies to a queue: its policy's, with the operator
/// policy's keys merged in (the lower value where both set one).
pub fn effective_definition(policy: Option<&Policy>, op: Option<&Policy>) -> Map<String, Value> {
    let mut out = policy.map(|p| p.definition.clone()).unwrap_or_default();
    if let Some(op) = op {
        for (k, v) in &op.definition {
            let merged = match (out.get(k).and_then(Value::as_i64), v.as_i64()) {
                (Some(a), Some(b)) if k == "delivery-limit" => {
                    Value::from(delivery_limit(Some(a), Some(b)).unwrap_or(b))
                }
                (Some(a), Some(b)) if k == "target-group-size" => Value::from(a.max(b)),
                (Some(a), Some(b)) => Value::from(a.min(b)),
                _ => v.clone(),
            };
            out.insert(k.clone(), merged);
        }
    }
    out
}

/// Whose limits: a vhost's or a user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsOf {
    /// A vhost's (`max-connections`, `max-queues`).
    Vhost,
    /// A user's (`max-connections`, `max-channels`).
    User,
}

impl LimitsOf {
    /// The limits it may have.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            LimitsOf::Vhost => &VHOST_LIMITS,
            LimitsOf::User => &USER_LIMITS,
        }
    }

    /// The runtime parameter component they are stored under.
    pub fn component(self) -> &'static str {
        match self {
            LimitsOf::Vhost => VHOST_LIMITS_PARAM,
            LimitsOf::User => USER_LIMITS_PARAM,
        }
    }

    /// The API's name for the owner (`vhost`, `user`).
    pub fn owner_key(self) -> &'static str {
        match self {
            LimitsOf::Vhost => "vhost",
            LimitsOf::User => "user",
        }
    }
}

/// A vhost's or a user's limits (`max-connections`, `max-queues`,
/// `max-channels`); a negative value or none is no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits(pub BTreeMap<String, i64>);

/// Limits a vhost may have.
pub const VHOST_LIMITS: [&str; 2] = ["max-connections", "max-queues"];
/// Limits a user may have.
pub const USER_LIMITS: [&str; 2] = ["max-connections", "max-channels"];

impl Limits {
    /// The limit `name`, if one is in force.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).and_then(|n| u64::try_from(*n).ok())
    }

    /// Parse `{"max-connections": N, ...}` for a vhost (`keys` =
    /// [`VHOST_LIMITS`]) or a user ([`USER_LIMITS`]), with RabbitMQ's texts.
    pub fn parse(v: &Value, keys: &[&str]) -> Result<Limits, String> {
        let Some(m) = v.as_object() else {
            return Err(format!("{} is not a valid limits definition", erl(v)));
        };
        let unknown: Vec<String> = m
            .iter()
            .filter(|(k, _)| !keys.contains(&k.as_str()))
            .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erl(v)))
            .collect();
        if !unknown.is_empty() {
            let what = if keys == USER_LIMITS {
                "user-limits"
            } else {
                "limits"
            };
            return Err(format!(
                "Unrecognised terms [{}] in {what}",
                unknown.join(",")
            ));
        }
        let mut out = BTreeMap::new();
        for (k, v) in m {
            out.insert(k.clone(), limit_value(k, v)?);
        }
        Ok(Limits(out))
    }

    /// As the API shows it.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(*v)))
                .collect(),
        )
    }
}

/// One limit's value: an integer (negative: no limit).
pub fn limit_value(name: &str, v: &Value) -> Result<i64, String> {
    v.as_i64()
        .ok_or_else(|| format!("{name} should be a number, actually was {}", erl(v)))
}

/// Runtime configuration: policies, operator policies, vhost and user
/// limits, and the parameters of the components `shovel`,
/// `federation-upstream` and `federation-upstream-set`. Durable item by
/// item, as runtime parameters in the definitions store
/// ([`Runtime::params`], [`Runtime::restore`]).
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    /// Policies.
    pub policies: PolicySet,
    /// Operator policies.
    pub operator_policies: PolicySet,
    /// Limits by vhost.
    pub vhost_limits: BTreeMap<String, Limits>,
    /// Limits by user.
    pub user_limits: BTreeMap<String, Limits>,
    /// Shovels and federation upstreams (and upstream sets), validated
    /// (`super::params`) and kept as given: (component, vhost, name) → the
    /// parameter's `value`. The component is one of
    /// [`super::params::COMPONENTS`].
    pub parameters: BTreeMap<(&'static str, String, String), Value>,
}

/// The component names runtime parameters are stored under.
pub const POLICY: &str = "policy";
/// Operator policies.
pub const OPERATOR_POLICY: &str = "operator_policy";
/// A vhost's limits (name `limits`), as RabbitMQ names the parameter.
pub const VHOST_LIMITS_PARAM: &str = "vhost-limits";
/// A user's limits (name `limits`).
pub const USER_LIMITS_PARAM: &str = "user-limits";

impl Runtime {
    /// The stored form of one item, if it exists: (component, owner,
    /// name) → its JSON.
    pub fn param(&self, component: &str, owner: &str, name: &str) -> Option<Value> {
        match component {
            POLICY => self.policies.get(owner, name).map(Policy::to_json),
            OPERATOR_POLICY => self.operator_policies.get(owner, name).map(Policy::to_json),
            VHOST_LIMITS_PARAM => self.vhost_limits.get(owner).map(Limits::to_json),
            USER_LIMITS_PARAM => self.user_limits.get(owner).map(Limits::to_json),
            other => self.parameter(other, owner, name).cloned(),
        }
    }

    /// A shovel's, upstream's or upstream set's value, if it exists.
    pub fn parameter(&self, component: &str, vhost: &str, name: &str) -> Option<&Value> {
        let c = super::params::component(component)?;
        self.parameters
            .get(&(c, vhost.to_string(), name.to_string()))
    }

    /// The shovels, upstreams and upstream sets (of `component` and in
    /// `vhost`, where given): (component, vhost, name, value), in that
    /// order.
    pub fn parameters_in<'a>(
        &'a self,
        component: Option<&'a str>,
        vhost: Option<&'a str>,
    ) -> impl Iterator<Item = (&'static str, &'a str, &'a str, &'a Value)> + 'a {
        self.parameters
            .iter()
            .filter(move |((c, v, _), _)| {
                component.is_none_or(|x| x == *c) && vhost.is_none_or(|x| x == v)
            })
            .map(|((c, v, n), value)| (*c, v.as_str(), n.as_str(), value))
    }

    /// Every item, as the definitions store keeps them.
    pub fn params(&self) -> Vec<(&'static str, String, String, Value)> {
        let mut out = Vec::new();
        for (component, set) in [
            (POLICY, &self.policies),
            (OPERATOR_POLICY, &self.operator_policies),
        ] {
            for p in set.iter(None) {
                out.push((component, p.vhost.clone(), p.name.clone(), p.to_json()));
            }
        }
        for (component, m) in [
            (VHOST_LIMITS_PARAM, &self.vhost_limits),
            (USER_LIMITS_PARAM, &self.user_limits),
        ] {
            for (owner, l) in m {
                out.push((component, owner.clone(), "limits".into(), l.to_json()));
            }
        }
        for ((component, vhost, name), v) in &self.parameters {
            out.push((component, vhost.clone(), name.clone(), v.clone()));
        }
        out
    }

    /// Put back one stored item.
    pub fn restore(
        &mut self,
        component: &str,
        owner: &str,
        name: &str,
        v: &Value,
    ) -> Result<(), String> {
        let get = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
        match component {
            POLICY | OPERATOR_POLICY => {
                let def = v
                    .get("definition")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let priority = v.get("priority").and_then(Value::as_i64).unwrap_or(0);
                let apply = match get("apply-to") {
                    "" => "all",
                    a => a,
                };
                let operator = component == OPERATOR_POLICY;
                let p = Policy::new(owner, name, get("pattern"), apply, priority, def, operator)?;
                if operator {
                    self.operator_policies.put(p);
                } else {
                    self.policies.put(p);
                }
            }
            VHOST_LIMITS_PARAM => {
                let l = Limits::parse(v, &VHOST_LIMITS)?;
                self.vhost_limits.insert(owner.to_string(), l);
            }
            USER_LIMITS_PARAM => {
                let l = Limits::parse(v, &USER_LIMITS)?;
                self.user_limits.insert(owner.to_string(), l);
            }
            other => {
                let Some(c) = super::params::component(other) else {
                    return Err(format!("unknown component '{other}'"));
                };
                super::params::validate(c, name, v)?;
                self.parameters
                    .insert((c, owner.to_string(), name.to_string()), v.clone());
            }
        }
        Ok(())
    }

    /// The limits of vhosts or of users, by owner.
    pub fn limits(&self, of: LimitsOf) -> &BTreeMap<String, Limits> {
        match of {
            LimitsOf::Vhost => &self.vhost_limits,
            LimitsOf::User => &self.user_limits,
        }
    }

    /// The same, to change.
    pub fn limits_mut(&mut self, of: LimitsOf) -> &mut BTreeMap<String, Limits> {
        match of {
            LimitsOf::Vhost => &mut self.vhost_limits,
            LimitsOf::User => &mut self.user_limits,
        }
    }

    /// The policy and operator policy that apply to a queue.
    pub fn of_queue(&self, q: &super::queue::Queue) -> (Option<&Policy>, Option<&Policy>) {
        let v = String::from_utf8_lossy(&q.vhost);
        let p = q.policy.as_deref().and_then(|n| self.policies.get(&v, n));
        let o = q
            .operator_policy
            .as_deref()
            .and_then(|n| self.operator_policies.get(&v, n));
        (p, o)
    }

    /// A vhost's limit `name`, if one is in force.
    pub fn vhost_limit(&self, vhost: &[u8], name: &str) -> Option<u64> {
        let v = std::str::from_utf8(vhost).ok()?;
        self.vhost_limits.get(v)?.get(name)
    }

    /// A user's limit `name`, if one is in force.
    pub fn user_limit(&self, user: &[u8], name: &str) -> Option<u64> {
        let u = std::str::from_utf8(user).ok()?;
        self.user_limits.get(u)?.get(name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn pol(name: &str, pattern: &str, prio: i64, d: Value) -> Policy {
        Policy::new("/", name, pattern, "queues", prio, def(d), false).unwrap()
    }

    #[test]
    fn validation_texts() {
        let bad = |d: Value| Policy::new("/", "p", ".*", "all", 0, def(d), false).unwrap_err();
        assert_eq!(
            bad(json!({"foo": 1, "bar": "x"})),
            "[{<<\"bar\">>,<<\"x\">>},{<<\"foo\">>,1}] are not recognised policy settings"
        );
        // Known keys first, in key order.
        assert_eq!(
            bad(json!({"foo": 1, "message-ttl": -1, "max-length": -1})),
            "-1 is not a valid maximum length"
        );
        assert_eq!(
            bad(json!({"message-ttl": -1})),
            "-1 is not a valid message TTL"
        );
        assert_eq!(
            bad(json!({"max-length": "x"})),
            "<<\"x\">> is not a valid maximum length"
        );
        assert_eq!(bad(json!({"expires": 0})), "0 is not a valid queue expiry");
        assert_eq!(
            bad(json!({"overflow": "bad"})),
            "<<\"bad\">> is not a valid overflow value"
        );
        assert_eq!(bad(json!({})), "no policy provided");
        let op = Policy::new(
            "/",
            "o",
            ".*",
            "queues",
            0,
            def(json!({"dead-letter-exchange": "x"})),
            true,
        );
        assert!(op.is_err());
        assert!(Policy::new(
            "/",
            "p",
            "(",
            "all",
            0,
            def(json!({"max-length": 1})),
            false
        )
        .is_err());
        assert!(Policy::new(
            "/",
            "p",
            ".*",
            "bad",
            0,
            def(json!({"max-length": 1})),
            false
        )
        .is_err());
    }

    #[test]
    fn literal_prefixes_are_conservative() {
        assert_eq!(literal_prefix("^app-1-").as_deref(), Some("app-1-"));
        assert_eq!(literal_prefix("^jobs$").as_deref(), Some("jobs"));
        assert_eq!(literal_prefix("^abc?d").as_deref(), Some("ab"));
        assert_eq!(literal_prefix("^ab+").as_deref(), Some("ab"));
        assert_eq!(literal_prefix("^a*"), None);
        assert_eq!(literal_prefix("^a\\.b").as_deref(), Some("a"));
        assert_eq!(literal_prefix("^a|b"), None);
        assert_eq!(literal_prefix("(?i)^abc"), None);
        assert_eq!(literal_prefix("abc"), None);
        assert_eq!(literal_prefix(".*"), None);
        // The prefix never changes what matches.
        let p = pol("p", "^ab?c", 0, json!({"max-length": 1}));
        assert!(p.matches(b"ac", Target::ClassicQueue));
        assert!(p.matches(b"abc", Target::ClassicQueue));
        assert!(!p.matches(b"bc", Target::ClassicQueue));
    }

    #[test]
    fn highest_priority_wins_then_name() {
        let mut s = PolicySet::default();
        s.put(pol("low", "^q", 1, json!({"max-length": 1})));
        s.put(pol("high", "^q", 5, json!({"max-length": 2})));
        s.put(pol("b", "^x", 5, json!({"max-length": 3})));
        s.put(pol("a", "^x", 5, json!({"max-length": 4})));
        let best = |s: &PolicySet, n: &str| {
            s.best(b"/", n.as_bytes(), Target::ClassicQueue)
                .map(|p| p.name.clone())
        };
        assert_eq!(best(&s, "q1").as_deref(), Some("high"));
        assert_eq!(best(&s, "x1").as_deref(), Some("a"));
        assert_eq!(best(&s, "z"), None);
        assert!(s.best(b"/", b"q1", Target::Exchange).is_none());
        s.put(pol("high", "^nothing", 5, json!({"max-length": 2})));
        assert_eq!(best(&s, "q1").as_deref(), Some("low"));
    }

    #[test]
    fn lower_limit_wins_argument_wins_otherwise() {
        let declared = QueueArgs {
            max_length: Some(10),
            dead_letter_exchange: Some(Bytes::from_static(b"arg-dlx")),
            ..QueueArgs::default()
        };
        let p = pol(
            "p",
            ".*",
            0,
            json!({"max-length": 20, "message-ttl": 500, "dead-letter-exchange": "pol-dlx",
                   "dead-letter-routing-key": "rk"}),
        );
        let o = Policy::new(
            "/",
            "o",
            ".*",
            "queues",
            0,
            def(json!({"message-ttl": 100})),
            true,
        )
        .unwrap();
        let e = effective(&declared, Some(&p), Some(&o));
        assert_eq!(e.max_length, Some(10));
        assert_eq!(e.message_ttl, Some(100));
        assert_eq!(e.dead_letter_exchange.as_deref(), Some(&b"arg-dlx"[..]));
        assert_eq!(e.dead_letter_routing_key.as_deref(), Some(&b"rk"[..]));
        let d = effective_definition(Some(&p), Some(&o));
        assert_eq!(d["message-ttl"], 100);
        assert_eq!(d["max-length"], 20);
    }
}
