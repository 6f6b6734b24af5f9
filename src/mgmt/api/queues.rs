//! `/api/queues`, with getting messages from one and purging it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::connections::{conn_name, queue_consumers};
use super::{
    bad_request, body_json, counters_json, created_or_updated, details, from_amqp, list_with,
    lossy, not_found, ok, Ctx,
};
use crate::amqp::Core;
use crate::broker::auth::base64_encode;
use crate::broker::policy::effective_definition;
use crate::broker::queue::Queue;
use crate::codec::ContentHeader;
use crate::mgmt::definitions;
use crate::mgmt::json::{get_bool, get_int, get_str, properties_to_json, table_to_json};
use crate::mgmt::ops::AckMode;
use crate::mgmt::stats::{Mgmt, QueueSample};
use crate::mgmt::Response;

pub(super) fn list_queues(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    let qs = sorted_queues(c.core, vhost);
    list_with(&c.query, &qs, |q| {
        queue_json(c.core, c.mgmt, q, c.now, false)
    })
}

pub(super) fn get_queue(c: &Ctx<'_>, v: &str, name: &str) -> Response {
    match c.core.api_queue(v.as_bytes(), name.as_bytes()) {
        Some(id) => match c.core.engine.broker.queue(id) {
            Some(q) => {
                let v = queue_json(c.core, c.mgmt, q, c.now, true);
                c.object(v)
            }
            None => not_found(),
        },
        None => not_found(),
    }
}

pub(super) fn purge_queue(c: &mut Ctx<'_>, v: &str, name: &str) -> Response {
    match c.core.api_queue(v.as_bytes(), name.as_bytes()) {
        Some(id) => {
            c.core.api_purge(id);
            Response::empty(204)
        }
        None => not_found(),
    }
}

pub(super) fn sorted_queues<'a>(core: &'a Core, vhost: Option<&str>) -> Vec<&'a Queue> {
    let mut qs: Vec<&Queue> = core
        .engine
        .broker
        .queues
        .iter()
        .map(|(_, q)| q)
        .filter(|q| vhost.is_none_or(|v| q.vhost == v.as_bytes()))
        .collect();
    qs.sort_unstable_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    qs
}

/// A queue as `/api/queues` shows it; `detail` adds its consumers.
fn queue_json(core: &Core, mgmt: &Mgmt, q: &Queue, now: Instant, detail: bool) -> Value {
    let s = QueueSample::of(q);
    let (b, dt) = mgmt
        .queue_base(q.id, now)
        .map_or((s, Duration::ZERO), |(b, dt)| (*b, dt));
    let stats = counters_json(
        &[
            ("publish", s.publish, b.publish),
            ("deliver", s.deliver, b.deliver),
            ("get", s.get, b.get),
            ("deliver_get", s.deliver + s.get, b.deliver + b.get),
            ("ack", s.ack, b.ack),
            ("redeliver", s.redeliver, b.redeliver),
        ],
        dt,
    );
    let first_tag = q.consumers.first().map(|r| lossy(&r.tag));
    let (pol, op) = core.engine.broker.runtime.of_queue(q);
    let mut v = json!({
        "name": lossy(&q.name),
        "vhost": lossy(&q.vhost),
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": table_to_json(&q.arguments),
        "node": mgmt.node,
        "type": if q.args.stream { "stream" } else if q.args.quorum { "quorum" } else { "classic" },
        "state": "running",
        "policy": pol.map(|p| p.name.as_str()),
        "operator_policy": op.map(|p| p.name.as_str()),
        "effective_policy_definition": effective_definition(pol, op),
        "consumers": q.consumers.len(),
        "exclusive_consumer_tag": if q.exclusive_consumer { first_tag.clone() } else { None },
        "single_active_consumer_tag": if q.args.single_active_consumer { first_tag } else { None },
        "messages": s.messages,
        "messages_details": details(s.messages, b.messages, dt),
        "messages_ready": s.ready,
        "messages_ready_details": details(s.ready, b.ready, dt),
        "messages_unacknowledged": s.unacked,
        "messages_unacknowledged_details": details(s.unacked, b.unacked, dt),
        "message_bytes": q.ready_bytes(),
        "message_bytes_ready": q.ready_bytes(),
        "messages_paged_out": q.ready.spilled(),
        "memory": 1024 + (q.ready.len() - q.ready.spilled()) * crate::engine::PER_MESSAGE_OVERHEAD + q.ready.levels().iter().map(|l| l.spill.memory()).sum::<u64>(),
        "head_message_timestamp": null,
        "message_stats": stats,
    });
    if let (Some(s), Some(m)) = (q.stream.as_deref(), v.as_object_mut()) {
        // What `rabbitmq-streams stream_status` shows, and each reader's
        // next offset (warren's own fields).
        let log = &s.log;
        m.insert("message_bytes".into(), json!(log.bytes()));
        m.insert("message_bytes_ready".into(), json!(log.bytes()));
        m.insert("memory".into(), json!(1024 + log.memory()));
        m.insert("segments".into(), json!(log.segment_count()));
        m.insert("first_offset".into(), json!(log.first_offset()));
        m.insert(
            "committed_offset".into(),
            json!(log.committed().checked_sub(1)),
        );
        let mut offsets: Vec<(String, u64)> = q
            .consumers
            .iter()
            .filter_map(|(key, r)| Some((lossy(&r.tag), s.readers.get(&key)?.cursor.offset)))
            .collect();
        offsets.sort();
        m.insert(
            "consumer_offsets".into(),
            Value::Array(
                offsets
                    .into_iter()
                    .map(|(tag, offset)| json!({"consumer_tag": tag, "offset": offset}))
                    .collect(),
            ),
        );
    }
    if let (Some(owner), Some(m)) = (q.exclusive_owner, v.as_object_mut()) {
        if let Some(c) = core.conn(owner) {
            m.insert(
                "owner_pid_details".into(),
                json!({"name": conn_name(c), "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()}),
            );
        }
    }
    if let (true, Some(m)) = (detail, v.as_object_mut()) {
        m.insert(
            "consumer_details".into(),
            Value::Array(queue_consumers(core, mgmt, q)),
        );
        m.insert("deliveries".into(), json!([]));
        m.insert("incoming".into(), json!([]));
    }
    v
}

pub(super) fn put_queue(c: &mut Ctx<'_>, v: &str, name: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !c.vhost_exists(v) {
        return not_found();
    }
    match definitions::declare_queue(&mut c.core.engine, v, name, &body) {
        Ok(created) => created_or_updated(created),
        Err(e) => bad_request(e),
    }
}

pub(super) fn delete_queue(c: &mut Ctx<'_>, v: &str, name: &str) -> Response {
    let Some(id) = c.core.api_queue(v.as_bytes(), name.as_bytes()) else {
        return not_found();
    };
    if let Some(q) = c.core.engine.broker.queue(id) {
        if c.q("if-unused") == Some("true") && !q.consumers.is_empty() {
            return bad_request(format!("queue '{name}' in vhost '{v}' in use"));
        }
        if c.q("if-empty") == Some("true") && (!q.ready.is_empty() || q.unacked > 0) {
            return bad_request(format!("queue '{name}' in vhost '{v}' not empty"));
        }
    }
    c.core.delete_queue(id);
    c.core.run_dispatch();
    Response::empty(204)
}

pub(super) fn get_messages(c: &mut Ctx<'_>, v: &str, name: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let count = match get_int(&body, "count") {
        Ok(n) => n.unwrap_or(1).clamp(0, 100_000) as usize,
        Err(e) => return bad_request(e),
    };
    let mode = match get_str(&body, "ackmode") {
        Some(m) => match AckMode::parse(m) {
            Some(m) => m,
            None => return bad_request(format!("unknown ackmode '{m}'")),
        },
        // Before 3.7: `requeue`.
        None => match get_bool(&body, "requeue", true) {
            Ok(true) => AckMode::AckRequeue,
            Ok(false) => AckMode::Ack,
            Err(e) => return bad_request(e),
        },
    };
    let base64 = match get_str(&body, "encoding").unwrap_or("auto") {
        "auto" => false,
        "base64" => true,
        other => return bad_request(format!("unknown encoding '{other}'")),
    };
    let truncate = match get_int(&body, "truncate") {
        Ok(t) => t.map(|t| t.max(0) as usize),
        Err(e) => return bad_request(e),
    };
    let got = match c.core.api_get(v.as_bytes(), name.as_bytes(), count, mode) {
        Ok(g) => g,
        Err(e) => return from_amqp(&e),
    };
    let list = got
        .into_iter()
        .map(|m| {
            let props = ContentHeader::decode(&m.header)
                .map(|h| properties_to_json(&h.properties))
                .unwrap_or_else(|_| json!({}));
            let bytes = truncate
                .and_then(|t| m.body.get(..t.min(m.body.len())))
                .unwrap_or(&m.body);
            let (payload, enc) = match (base64, std::str::from_utf8(bytes)) {
                (false, Ok(s)) => (s.to_string(), "string"),
                _ => (base64_encode(bytes), "base64"),
            };
            json!({
                "payload_bytes": m.body.len(),
                "redelivered": m.redelivered,
                "exchange": lossy(&m.exchange),
                "routing_key": lossy(&m.routing_key),
                "message_count": m.message_count,
                "properties": props,
                "payload": payload,
                "payload_encoding": enc,
            })
        })
        .collect();
    ok(Value::Array(list))
}
