//! Federated exchanges and queues, warren downstream. Exchanges: an exchange whose policy has
//! `federation-upstream` (one upstream parameter's name) or
//! `federation-upstream-set` (a set's name, or `all`) gets one link per
//! upstream. A link is a [`Shovel`] with a [`Fed`] part: on the upstream
//! it declares the durable queue `federation: X -> NODE` (with the
//! upstream's `expires` and `message-ttl`), binds it to the upstream
//! exchange (the upstream's `exchange`, else X) with X's binding keys
//! here, kept in step as bindings change, and consumes from it; each
//! message is published to X here with the link appended to its
//! `x-received-from` header, unless it has crossed `max-hops` links
//! already (then it is acknowledged and dropped). Upstreams that run
//! RabbitMQ's federation the other way find warren's
//! `x-federation-upstream` exchange type. A queue with such a policy gets
//! a link that moves messages from the upstream's queue (its `queue`,
//! else the same name) into it, consuming only while the local queue has
//! consumers and nothing ready for them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::shovel::{redact, AckMode, Def, DeleteAfter, Fed, Phase, Shovel};
use crate::engine::Engine;

/// The upstream parameter component.
pub(crate) const UPSTREAM: &str = "federation-upstream";
/// The upstream set parameter component.
pub(crate) const UPSTREAM_SET: &str = "federation-upstream-set";

/// A link's key: vhost, exchange, upstream.
pub(crate) type Key = (String, String, String);

/// This node's name in queue names and status, as RabbitMQ's
/// `rabbit@host`.
pub(crate) const NODE: &str = "warren@localhost";

/// Every link the policies and upstreams ask for now, with its
/// definition.
pub(crate) fn wanted(engine: &Engine) -> BTreeMap<Key, Def> {
    let mut out = BTreeMap::new();
    let rt = &engine.broker.runtime;
    if rt.parameters_in(Some(UPSTREAM), None).next().is_none() {
        // No upstream anywhere: no link, whatever the policies say (the
        // scan every second costs nothing then).
        return out;
    }
    for (vname, vhost) in &engine.broker.vhosts {
        let v = String::from_utf8_lossy(vname).into_owned();
        for x in vhost.exchanges.values() {
            let Some(policy) = x.policy.as_deref().and_then(|p| rt.policies.get(&v, p)) else {
                continue;
            };
            let upstreams = upstream_names(engine, &v, &policy.definition);
            if upstreams.is_empty() {
                continue;
            }
            let exchange = String::from_utf8_lossy(&x.name).into_owned();
            let keys: Vec<String> = x
                .bindings
                .iter()
                .map(|b| String::from_utf8_lossy(&b.routing_key).into_owned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for (name, overrides) in upstreams {
                let Some(up) = rt.parameter(UPSTREAM, &v, &name) else {
                    continue;
                };
                let mut up = up.as_object().cloned().unwrap_or_default();
                up.extend(overrides);
                if let Some(def) = link_def(&v, &exchange, &name, &up, keys.clone()) {
                    out.insert((v.clone(), exchange.clone(), name), def);
                }
            }
        }
    }
    for (_, q) in engine.broker.queues.iter() {
        let Some(p) = q.policy.as_deref() else {
            continue;
        };
        let v = String::from_utf8_lossy(&q.vhost).into_owned();
        let Some(policy) = rt.policies.get(&v, p) else {
            continue;
        };
        let queue = String::from_utf8_lossy(&q.name).into_owned();
        for (name, overrides) in upstream_names(engine, &v, &policy.definition) {
            let Some(up) = rt.parameter(UPSTREAM, &v, &name) else {
                continue;
            };
            let mut up = up.as_object().cloned().unwrap_or_default();
            up.extend(overrides);
            if let Some(def) = queue_link_def(&v, &queue, &name, &up) {
                out.insert((v.clone(), format!("queue {queue}"), name), def);
            }
        }
    }
    out
}

/// A federated queue's link: from the upstream's queue (its `queue`, else
/// the same name) into the local queue, through the default exchange.
fn queue_link_def(vhost: &str, queue: &str, upstream: &str, v: &Map<String, Value>) -> Option<Def> {
    let mut def = link_def(vhost, queue, upstream, v, Vec::new())?;
    let upstream_queue = v.get("queue").and_then(Value::as_str).unwrap_or(queue);
    def.src_queue = Some(upstream_queue.to_string());
    def.src_queue_args = crate::codec::FieldTable::new();
    def.dest_exchange = Some(String::new());
    def.dest_exchange_key = Some(queue.to_string());
    if let Some(f) = def.fed.as_mut() {
        f.queue = true;
        f.upstream_exchange = upstream_queue.to_string();
    }
    Some(def)
}

/// The upstreams a policy names: (name, keys of the set entry that
/// override the upstream's).
fn upstream_names(
    engine: &Engine,
    vhost: &str,
    def: &Map<String, Value>,
) -> Vec<(String, Map<String, Value>)> {
    let rt = &engine.broker.runtime;
    if let Some(name) = def.get(UPSTREAM).and_then(Value::as_str) {
        return vec![(name.to_string(), Map::new())];
    }
    let Some(set) = def.get(UPSTREAM_SET).and_then(Value::as_str) else {
        return Vec::new();
    };
    if set == "all" {
        return rt
            .parameters_in(Some(UPSTREAM), Some(vhost))
            .map(|(_, _, n, _)| (n.to_string(), Map::new()))
            .collect();
    }
    let Some(Value::Array(items)) = rt.parameter(UPSTREAM_SET, vhost, set) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| {
            let mut m = i.as_object()?.clone();
            let name = m.remove("upstream")?.as_str()?.to_string();
            Some((name, m))
        })
        .collect()
}

/// A link's definition from its upstream's value.
fn link_def(
    vhost: &str,
    exchange: &str,
    upstream: &str,
    v: &Map<String, Value>,
    keys: Vec<String>,
) -> Option<Def> {
    let uris: Vec<String> = match v.get("uri")? {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|u| u.as_str().map(String::from))
            .collect(),
        _ => return None,
    };
    let int = |k: &str| v.get(k).and_then(Value::as_i64);
    let upstream_exchange = v
        .get("exchange")
        .and_then(Value::as_str)
        .unwrap_or(exchange)
        .to_string();
    let mut args = crate::codec::FieldTable::new();
    if let Some(ms) = int("expires") {
        args.insert("x-expires", crate::codec::FieldValue::I64(ms));
    }
    if let Some(ms) = int("message-ttl") {
        args.insert("x-message-ttl", crate::codec::FieldValue::I64(ms));
    }
    let ack_mode = match v.get("ack-mode").and_then(Value::as_str) {
        Some("on-publish") => AckMode::OnPublish,
        Some("no-ack") => AckMode::NoAck,
        _ => AckMode::OnConfirm,
    };
    let local = if vhost == "/" {
        "amqp://".to_string()
    } else {
        format!("amqp:///{}", crate::mgmt::json::percent_encode(vhost))
    };
    let node = if vhost == "/" {
        NODE.to_string()
    } else {
        format!("{NODE}:{vhost}")
    };
    Some(Def {
        src_uris: uris,
        dest_uris: vec![local],
        src_queue: Some(format!("federation: {exchange} -> {node}")),
        src_exchange: None,
        src_exchange_key: String::new(),
        dest_queue: None,
        dest_exchange: Some(exchange.to_string()),
        dest_exchange_key: None,
        ack_mode,
        prefetch: int("prefetch-count").map_or(1000, |n| n.clamp(0, 65_535) as u16),
        delete_after: DeleteAfter::Never,
        forward_headers: false,
        timestamp_header: false,
        reconnect_delay: std::time::Duration::from_secs_f64(
            v.get("reconnect-delay")
                .and_then(Value::as_f64)
                .unwrap_or(5.0)
                .clamp(0.0, 86_400.0),
        ),
        publish_properties: None,
        src_queue_args: args,
        dest_queue_args: crate::codec::FieldTable::new(),
        consumer_args: crate::codec::FieldTable::new(),
        fed: Some(Fed {
            upstream: upstream.to_string(),
            upstream_exchange,
            exchange: exchange.to_string(),
            keys,
            max_hops: int("max-hops").map_or(1, |n| n.max(1) as usize),
            queue: false,
        }),
    })
}

/// A federated queue's demand: the local queue has consumers and nothing
/// ready for them.
pub(crate) fn demand(engine: &Engine, vhost: &str, queue: &str) -> bool {
    engine
        .broker
        .vhost(vhost.as_bytes())
        .and_then(|v| v.queues.get(queue.as_bytes()))
        .and_then(|&id| engine.broker.queue(id))
        .is_some_and(|q| !q.consumers.is_empty() && q.ready.is_empty())
}

/// True when two definitions differ in more than their binding keys
/// (which a running link follows without starting again).
pub(crate) fn differs(a: &Def, b: &Def) -> bool {
    let strip = |d: &Def| {
        let mut d = d.clone();
        if let Some(f) = d.fed.as_mut() {
            f.keys.clear();
        }
        format!("{d:?}")
    };
    strip(a) != strip(b)
}

/// `/api/federation-links`: RabbitMQ's fields for one link.
pub(crate) fn status(s: &Shovel) -> Option<Value> {
    let fed = s.def.fed.as_ref()?;
    let (src, _) = s.uris();
    let mut m = Map::new();
    m.insert("node".into(), NODE.into());
    m.insert("vhost".into(), s.vhost.clone().into());
    if fed.queue {
        m.insert("type".into(), "queue".into());
        m.insert("queue".into(), fed.exchange.clone().into());
        m.insert(
            "upstream_queue".into(),
            fed.upstream_exchange.clone().into(),
        );
    } else {
        m.insert("type".into(), "exchange".into());
        m.insert("exchange".into(), fed.exchange.clone().into());
        m.insert(
            "upstream_exchange".into(),
            fed.upstream_exchange.clone().into(),
        );
    }
    m.insert("upstream".into(), fed.upstream.clone().into());
    m.insert("uri".into(), redact(src).into());
    m.insert(
        "id".into(),
        format!("{}:{}:{}", s.vhost, fed.exchange, fed.upstream).into(),
    );
    let status = match s.phase {
        Phase::Running => "running",
        Phase::Starting => "starting",
        Phase::Waiting { .. } | Phase::Finished => "error",
    };
    m.insert("status".into(), status.into());
    if let Some((at, why)) = &s.last_error {
        m.insert("error".into(), why.clone().into());
        m.insert("last_error_at".into(), (*at).into());
    }
    m.insert("messages_forwarded".into(), s.forwarded.into());
    m.insert("messages_dropped_max_hops".into(), s.dropped.into());
    m.insert(
        "local_connection".into(),
        format!(
            "Federation link (upstream: {}, policy applied)",
            fed.upstream
        )
        .into(),
    );
    Some(Value::Object(m))
}
