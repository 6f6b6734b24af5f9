//! `/api/connections`, `/api/channels` and `/api/consumers`: the AMQP
//! clients and what they hold.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::queues::sorted_queues;
use super::{at, details, lossy, not_found, Ctx};
use crate::amqp::Core;
use crate::amqp::{ConnState, Connection};
use crate::broker::queue::Queue;
use crate::broker::ConnId;
use crate::mgmt::json::table_to_json;
use crate::mgmt::stats::Mgmt;
use crate::mgmt::Response;

pub(super) fn list_connections(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    c.list(connections(c.core, c.mgmt, c.now, vhost))
}

pub(super) fn get_connection(c: &Ctx<'_>, name: &str) -> Response {
    match connections(c.core, c.mgmt, c.now, None)
        .into_iter()
        .find(|x| *at(x, "name") == *name)
    {
        Some(v) => c.object(v),
        None => not_found(),
    }
}

pub(super) fn list_connection_channels(c: &Ctx<'_>, name: &str) -> Response {
    let chans = channels(c.core, c.mgmt, None)
        .into_iter()
        .filter(|x| *at(at(x, "connection_details"), "name") == *name)
        .collect();
    c.list(chans)
}

pub(super) fn list_channels(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    c.list(channels(c.core, c.mgmt, vhost))
}

pub(super) fn get_channel(c: &Ctx<'_>, name: &str) -> Response {
    match channels(c.core, c.mgmt, None)
        .into_iter()
        .find(|x| *at(x, "name") == *name)
    {
        Some(v) => c.object(v),
        None => not_found(),
    }
}

pub(super) fn list_consumers(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    c.list(consumers(c.core, c.mgmt, vhost))
}

/// Name of a connection as RabbitMQ shows it: `peer -> local`.
pub fn conn_name(c: &Connection) -> String {
    if c.internal.is_some() {
        // A link's end inside the broker: no socket, so a name of its own,
        // shaped like RabbitMQ's for its direct connections.
        return format!("<warren@localhost.{}.{}>", c.id.idx, c.id.gen);
    }
    match c.local {
        Some(l) => format!("{} -> {}", c.peer, l),
        None => c.peer.to_string(),
    }
}

fn conn_state(core: &Core, c: &Connection) -> &'static str {
    match c.state {
        ConnState::Header | ConnState::StartOk | ConnState::TuneOk | ConnState::Open => "starting",
        ConnState::Running if core.engine.alarms.blocked && c.published => "blocked",
        ConnState::Running => "running",
        ConnState::Closing => "closing",
        ConnState::Dead => "closed",
    }
}

pub(super) fn live_conns(core: &Core) -> impl Iterator<Item = &Connection> {
    core.conns
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.state != ConnState::Dead)
}

fn connections(core: &Core, mgmt: &Mgmt, now: Instant, vhost: Option<&str>) -> Vec<Value> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for c in live_conns(core) {
        if vhost.is_some_and(|v| c.vhost != v.as_bytes()) {
            continue;
        }
        let name = conn_name(c);
        let ((r0, s0), dt) = mgmt
            .conn_base(c.id, now)
            .unwrap_or(((c.recv_oct, c.send_oct), Duration::ZERO));
        let local = c.local.or_else(|| mgmt.amqp_addrs.first().copied());
        let age = core
            .engine
            .clock
            .now
            .saturating_duration_since(c.accepted_at)
            .as_millis() as u64;
        let user = lossy(&c.user);
        let v = json!({
            "name": name,
            "node": mgmt.node,
            "vhost": lossy(&c.vhost),
            "user": user,
            "user_who_performed_action": user,
            "state": conn_state(core, c),
            "channels": c.channels.len(),
            "channel_max": c.channel_max,
            "frame_max": c.frame_max,
            "timeout": c.heartbeat,
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
            "host": local.map(|a| a.ip().to_string()),
            "port": local.map(|a| a.port()),
            "protocol": crate::mqtt::protocol_name(c),
            "type": if c.internal.is_some() { "direct" } else { "network" },
            "auth_mechanism": c.auth_mechanism.map(|m| m.name()),
            "ssl": c.tls.is_some(),
            "ssl_protocol": c.tls.as_ref().map(|t| t.protocol),
            "ssl_cipher": c.tls.as_ref().map(|t| t.cipher.clone()),
            "peer_cert_subject": c.tls.as_deref().and_then(crate::tls::peer_subject),
            "recv_oct": c.recv_oct,
            "recv_oct_details": details(c.recv_oct, r0, dt),
            "send_oct": c.send_oct,
            "send_oct_details": details(c.send_oct, s0, dt),
            "client_properties": match c.mqtt.as_deref() {
                // RabbitMQ's MQTT plugin shows the client id here.
                Some(s) => json!({ "client_id": lossy(&s.client_id) }),
                None => table_to_json(&c.client_properties),
            },
            "connected_at": core.engine.wall_ms().saturating_sub(age),
        });
        out.push((name, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, v)| v).collect()
}

pub(super) fn close_connection(c: &mut Ctx<'_>, name: &str) -> Response {
    let Some(id) = live_conns(c.core)
        .find(|x| conn_name(x) == name)
        .map(|x| x.id)
    else {
        return not_found();
    };
    let reason = c
        .req
        .reason
        .clone()
        .unwrap_or_else(|| "Closed via management plugin".into());
    c.core.close_connection(id, &reason, c.now);
    Response::empty(204)
}

fn channel_details(core: &Core, mgmt: &Mgmt, id: ConnId, ch: u16) -> Value {
    match core.conn(id) {
        Some(c) => {
            let cname = conn_name(c);
            json!({
                "name": format!("{cname} ({ch})"),
                "number": ch,
                "connection_name": cname,
                "peer_host": c.peer.ip().to_string(),
                "peer_port": c.peer.port(),
                "user": lossy(&c.user),
                "node": mgmt.node,
            })
        }
        None => json!({}),
    }
}

fn channels(core: &Core, mgmt: &Mgmt, vhost: Option<&str>) -> Vec<Value> {
    use crate::amqp::channel::{ChanState, TxOp};
    let mut out = Vec::new();
    let mut conns: Vec<&Connection> = live_conns(core)
        .filter(|c| vhost.is_none_or(|v| c.vhost == v.as_bytes()))
        .collect();
    conns.sort_by_key(|c| conn_name(c));
    for c in conns {
        let cname = conn_name(c);
        for ch in c.channels.iter() {
            let (pubs, acks) = ch.tx.as_ref().map_or((0, 0), |ops| {
                let p = ops
                    .iter()
                    .filter(|o| matches!(o, TxOp::Publish(..)))
                    .count();
                (p, ops.len() - p)
            });
            out.push(json!({
                "name": format!("{cname} ({})", ch.id),
                "number": ch.id,
                "node": mgmt.node,
                "user": lossy(&c.user),
                "user_who_performed_action": lossy(&c.user),
                "vhost": lossy(&c.vhost),
                "state": if ch.state == ChanState::Open { "running" } else { "closing" },
                "connection_details": {
                    "name": cname,
                    "peer_host": c.peer.ip().to_string(),
                    "peer_port": c.peer.port(),
                },
                "consumer_count": ch.consumers.len(),
                "messages_unacknowledged": ch.unacked.len(),
                "messages_unconfirmed": if ch.confirm { ch.publish_seq.saturating_sub(ch.confirm_sent) } else { 0 },
                "messages_uncommitted": pubs,
                "acks_uncommitted": acks,
                "prefetch_count": ch.prefetch_count,
                "global_prefetch_count": ch.global_prefetch,
                "confirm": ch.confirm,
                "transactional": ch.tx.is_some(),
            }));
        }
    }
    out
}

pub(super) fn queue_consumers(core: &Core, mgmt: &Mgmt, q: &Queue) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, (_, r)) in q.consumers.iter().enumerate() {
        let k = core
            .conn(r.conn)
            .and_then(|c| c.channel(r.channel))
            .and_then(|ch| ch.consumers.get(r.slot))
            .filter(|k| k.tag == r.tag);
        let active = !q.args.single_active_consumer || i == 0;
        let mut args = match k.and_then(|k| k.arguments.as_deref()) {
            Some(t) => match crate::mgmt::json::table_to_json(t) {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            None => Map::new(),
        };
        if r.priority != 0 {
            args.insert("x-priority".into(), json!(r.priority));
        }
        out.push(json!({
            "consumer_tag": lossy(&r.tag),
            "queue": {"name": lossy(&q.name), "vhost": lossy(&q.vhost)},
            "channel_details": channel_details(core, mgmt, r.conn, r.channel),
            "ack_required": k.is_some_and(|k| !k.no_ack),
            "prefetch_count": k.map_or(0, |k| k.prefetch),
            "exclusive": q.exclusive_consumer,
            "arguments": args,
            "active": active,
            "activity_status": if active { "up" } else { "waiting" },
            // The delivery acknowledgement timeout in force for it.
            "consumer_timeout": k.and_then(|k| k.timeout)
                .or(q.args.consumer_timeout)
                .or(core.engine.config.consumer_timeout.map(|d| d.as_millis() as u64)),
        }));
    }
    out
}

fn consumers(core: &Core, mgmt: &Mgmt, vhost: Option<&str>) -> Vec<Value> {
    sorted_queues(core, vhost)
        .into_iter()
        .flat_map(|q| queue_consumers(core, mgmt, q))
        .collect()
}
