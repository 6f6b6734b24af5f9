//! `/api/overview` and `/api/nodes`: the broker as a whole.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::connections::live_conns;
use super::{counters_json, details, Ctx};
use crate::amqp::Core;
use crate::mgmt::definitions::COMPAT_VERSION;
use crate::mgmt::stats::{fd_total, fd_used, rss_bytes, GlobalSample, Mgmt};
use crate::mgmt::Response;

pub(super) fn get_overview(c: &Ctx<'_>) -> Response {
    let v = overview(c.core, c.mgmt, c.now);
    c.object(v)
}

pub(super) fn list_nodes(c: &Ctx<'_>) -> Response {
    let n = node(c.core, c.mgmt, c.now);
    c.list(vec![n])
}

pub(super) fn get_node(c: &Ctx<'_>) -> Response {
    let n = node(c.core, c.mgmt, c.now);
    c.object(n)
}

fn message_stats(cur: &GlobalSample, base: &GlobalSample, dt: Duration) -> Value {
    let (c, b) = (&cur.counters, &base.counters);
    counters_json(
        &[
            ("publish", c.publish, b.publish),
            ("deliver", c.deliver, b.deliver),
            ("get", c.get, b.get),
            ("deliver_get", c.deliver + c.get, b.deliver + b.get),
            ("ack", c.ack, b.ack),
            ("redeliver", c.redeliver, b.redeliver),
            ("drop_unroutable", c.drop_unroutable, b.drop_unroutable),
            (
                "return_unroutable",
                c.return_unroutable,
                b.return_unroutable,
            ),
        ],
        dt,
    )
}

fn exchange_types() -> Value {
    json!([
        {"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": true},
        {"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": true},
        {"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": true},
        {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": true},
        {"name": "x-federation-upstream", "description": "Federation upstream helper exchange", "internal_purpose": "federation", "enabled": true},
        {"name": "x-message-deduplication", "description": "Message Deduplication Exchange.", "enabled": true},
    ])
}

fn overview(core: &Core, mgmt: &Mgmt, now: Instant) -> Value {
    let cur = GlobalSample::of(core);
    let (base, dt) = mgmt
        .global_base(now)
        .map_or((cur, Duration::ZERO), |(b, dt)| (*b, dt));
    let channels: usize = live_conns(core).map(|c| c.channels.len()).sum();
    let consumers = core.engine.broker.consumer_count();
    let exchanges: usize = core
        .engine
        .broker
        .vhosts
        .values()
        .map(|v| v.exchanges.len())
        .sum();
    let mut listeners: Vec<Value> = mgmt
        .amqp_addrs
        .iter()
        .map(|a| json!({"node": mgmt.node, "protocol": "amqp", "ip_address": a.ip().to_string(), "port": a.port()}))
        .collect();
    listeners.extend(mgmt.amqps_addrs.iter().map(|a| {
        json!({"node": mgmt.node, "protocol": "amqp/ssl", "ip_address": a.ip().to_string(), "port": a.port()})
    }));
    if let Some(a) = mgmt.http_addr {
        listeners.push(json!({"node": mgmt.node, "protocol": "http", "ip_address": a.ip().to_string(), "port": a.port()}));
    }
    if let Some(a) = mgmt.https_addr {
        listeners.push(json!({"node": mgmt.node, "protocol": "https", "ip_address": a.ip().to_string(), "port": a.port()}));
    }
    if let Some(a) = mgmt.prometheus_addr {
        listeners.push(json!({"node": mgmt.node, "protocol": "http/prometheus", "ip_address": a.ip().to_string(), "port": a.port()}));
    }
    json!({
        "management_version": COMPAT_VERSION,
        "rabbitmq_version": COMPAT_VERSION,
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]},
        "exchange_types": exchange_types(),
        "cluster_name": mgmt.node,
        "node": mgmt.node,
        "disable_stats": false,
        "enable_queue_totals": false,
        "statistics_db_event_queue": 0,
        "listeners": listeners,
        "contexts": mgmt.http_addr.map(|a| vec![json!({"node": mgmt.node, "description": "RabbitMQ Management", "path": "/", "port": a.port().to_string()})]).unwrap_or_default(),
        "object_totals": {
            "connections": live_conns(core).count(),
            "channels": channels,
            "exchanges": exchanges,
            "queues": core.engine.broker.queues.len(),
            "consumers": consumers,
        },
        "queue_totals": {
            "messages": cur.messages,
            "messages_details": details(cur.messages, base.messages, dt),
            "messages_ready": cur.ready,
            "messages_ready_details": details(cur.ready, base.ready, dt),
            "messages_unacknowledged": cur.unacked,
            "messages_unacknowledged_details": details(cur.unacked, base.unacked, dt),
        },
        "message_stats": message_stats(&cur, &base, dt),
    })
}

fn node(core: &Core, mgmt: &Mgmt, now: Instant) -> Value {
    let disk_free = core
        .engine
        .msgs
        .store
        .as_ref()
        .and_then(|st| st.free_space().ok());
    let (syncs, sync_time, written, store_bytes) = match &core.engine.msgs.store {
        Some(st) => (
            st.stats.syncs,
            st.stats.sync_time,
            st.stats.bytes_written,
            st.disk_bytes(),
        ),
        None => (0, Duration::ZERO, 0, 0),
    };
    let fds = fd_total();
    let channels: usize = live_conns(core).map(|c| c.channels.len()).sum();
    let conns = live_conns(core).count();
    json!({
        "name": mgmt.node,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "mem_used": rss_bytes(),
        "mem_limit": core.engine.config.max_memory,
        "mem_alarm": core.engine.alarms.blocked && !core.engine.alarms.disk_alarm,
        "mem_calculation_strategy": "rss",
        "disk_free": disk_free,
        "disk_free_limit": core.engine.config.min_free_disk,
        "disk_free_alarm": core.engine.alarms.disk_alarm,
        "fd_used": fd_used(),
        "fd_total": fds,
        "sockets_used": conns,
        "sockets_total": fds,
        // RabbitMQ's process count; warren's analogue: one per connection,
        // channel and queue.
        "proc_used": conns + channels + core.engine.broker.queues.len() + 1,
        "proc_total": 1_048_576,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "run_queue": 0,
        "uptime": mgmt.uptime_ms(now),
        "rates_mode": "basic",
        "net_ticktime": 60,
        "partitions": [],
        "applications": [],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
        "exchange_types": exchange_types(),
        "auth_mechanisms": [{"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
                            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true}],
        "config_files": [],
        "log_files": [],
        "db_dir": core.engine.config.data_dir.as_ref().map(|d| d.display().to_string()),
        "io_sync_count": syncs,
        "io_sync_avg_time": if syncs > 0 { sync_time.as_secs_f64() * 1000.0 / syncs as f64 } else { 0.0 },
        "io_write_bytes": written,
        "message_store_bytes": store_bytes,
        "message_resident_bytes": core.engine.memory_used(),
    })
}

/// `POST /api/shutdown` (warren's own, administrators only; `warren ctl
/// stop`): stop the broker gracefully, as SIGTERM does. Answered (202)
/// before the broker closes its connections and stops.
pub(super) fn shutdown(c: &mut Ctx<'_>) -> Response {
    log::info!(
        "shutdown requested through the management API by '{}'",
        c.user
    );
    c.mgmt.shutdown_requested = true;
    Response::json(202, &json!({"status": "stopping", "node": c.mgmt.node}))
}

/// `POST /api/reload-certificates` (warren's own; SIGHUP does the same):
/// read the TLS certificate and key files again. New connections use them,
/// existing ones keep theirs; a bad file leaves those in use (400, with
/// the reason).
pub(super) fn reload_certificates(c: &mut Ctx<'_>) -> Response {
    if !c.mgmt.tls.any() {
        return Response::json(
            400,
            &json!({"error": "bad_request", "reason": "no TLS listener is configured"}),
        );
    }
    match c.mgmt.tls.reload() {
        Ok(()) => Response::empty(204),
        Err(e) => Response::json(400, &json!({"error": "bad_request", "reason": e})),
    }
}
