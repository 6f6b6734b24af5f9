//! Prometheus metrics as RabbitMQ 3.10's `rabbitmq_prometheus` plugin
//! serves them (text exposition format 0.0.4), on the Prometheus listener
//! (RabbitMQ's port 15692) and, for warren's earlier users, on the
//! management listener too:
//!
//! - `GET /metrics`: aggregated; queue metrics are one unlabelled total
//!   (or per-object with `prometheus.return_per_object_metrics = true`).
//! - `GET /metrics/per-object`: one series per queue (`vhost`, `queue`).
//! - `GET /metrics/detailed?family=F&vhost=V`: only the families asked for,
//!   per object, named `rabbitmq_detailed_*`, queues of the vhosts asked
//!   for (all without `vhost=`).
//!
//! Every `rabbitmq_*` name, type and label set is one RabbitMQ 3.10.8
//! serves (checked against a real node in `tests/prometheus.rs`), filled
//! only where warren has the number: what it does not measure is left out,
//! not faked. What is warren's own is named `warren_*`. Per-connection and
//! per-channel series (RabbitMQ labels them with Erlang process ids) are
//! not served; the aggregated view has their totals.
//! `rabbitmq_identity_info` and `rabbitmq_build_info` are always there, so
//! the Grafana dashboards published for RabbitMQ work.

use std::fmt::{Display, Write};
use std::time::Instant;

use super::definitions::COMPAT_VERSION;
use super::json::parse_query;
use super::stats::{fd_total, fd_used, rss_bytes, Mgmt};
use super::{Request, Response};
use crate::amqp::ConnState;
use crate::amqp::Core;
use crate::broker::queue::Queue;

/// Which series to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// `/metrics`: queue metrics summed over all queues.
    Aggregated,
    /// `/metrics/per-object`: one series per queue.
    PerObject,
    /// `/metrics/detailed`: the families asked for, per object, of the
    /// vhosts asked for (`None`: all).
    Detailed {
        /// `family=` values.
        families: Vec<String>,
        /// `vhost=` values.
        vhosts: Option<Vec<String>>,
    },
}

/// Serve a metrics path (`/metrics`, `/metrics/per-object`,
/// `/metrics/detailed`); anything else is 404. No credentials, as RabbitMQ.
pub fn handle(req: &Request, core: &Core, mgmt: &Mgmt, now: Instant) -> Response {
    let path = req.path.trim_end_matches('/');
    let view = match path {
        "/metrics" if core.engine.config.prometheus_per_object => View::PerObject,
        "/metrics" => View::Aggregated,
        "/metrics/per-object" => View::PerObject,
        "/metrics/detailed" => {
            let q = parse_query(&req.query);
            let values = |k: &str| -> Vec<String> {
                q.iter()
                    .filter(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .collect()
            };
            let vhosts = values("vhost");
            View::Detailed {
                families: values("family"),
                vhosts: (!vhosts.is_empty()).then_some(vhosts),
            }
        }
        _ => {
            return Response {
                status: 404,
                headers: vec![("content-type", "text/plain".into())],
                body: b"Not Found".to_vec(),
            }
        }
    };
    if req.method != "GET" {
        let mut r = Response::empty(405);
        r.headers.push(("allow", "GET, HEAD".into()));
        return r;
    }
    Response {
        status: 200,
        headers: vec![("content-type", "text/plain; version=0.0.4".into())],
        body: render(core, mgmt, now, &view).into_bytes(),
    }
}

/// Escape a label value (backslash, double quote, newline).
fn esc(s: &[u8]) -> String {
    let s = String::from_utf8_lossy(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The text being written, and the prefix of RabbitMQ's names in this
/// view (`rabbitmq_` or `rabbitmq_detailed_`).
struct Out {
    text: String,
    prefix: &'static str,
}

impl Out {
    /// `# TYPE` and `# HELP` of `prefix` + `name`, RabbitMQ's order.
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let p = self.prefix;
        let _ = writeln!(self.text, "# TYPE {p}{name} {kind}");
        let _ = writeln!(self.text, "# HELP {p}{name} {help}");
    }

    /// One sample; `labels` without braces (empty: none).
    fn sample(&mut self, name: &str, labels: &str, v: impl Display) {
        let p = self.prefix;
        if labels.is_empty() {
            let _ = writeln!(self.text, "{p}{name} {v}");
        } else {
            let _ = writeln!(self.text, "{p}{name}{{{labels}}} {v}");
        }
    }

    /// A metric with one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl Display) {
        self.head(name, kind, help);
        self.sample(name, "", v);
    }

    /// A metric of warren's own (no prefix).
    fn own(&mut self, name: &str, kind: &str, help: &str, v: impl Display) {
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "{name} {v}");
    }
}

/// A per-queue metric: one series per queue, or their total.
struct QueueMetric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Queue) -> u64,
}

const QUEUE_COARSE: [QueueMetric; 3] = [
    QueueMetric {
        name: "queue_messages_ready",
        kind: "gauge",
        help: "Messages ready to be delivered to consumers",
        value: |q| q.ready.len(),
    },
    QueueMetric {
        name: "queue_messages_unacked",
        kind: "gauge",
        help: "Messages delivered to consumers but not yet acknowledged",
        value: |q| q.unacked as u64,
    },
    QueueMetric {
        name: "queue_messages",
        kind: "gauge",
        help: "Sum of ready and unacknowledged messages - total queue depth",
        value: |q| q.ready.len() + q.unacked as u64,
    },
];

const QUEUE_CONSUMERS: QueueMetric = QueueMetric {
    name: "queue_consumers",
    kind: "gauge",
    help: "Consumers on a queue",
    value: |q| q.consumers.len() as u64,
};

const QUEUE_READY_BYTES: QueueMetric = QueueMetric {
    name: "queue_messages_ready_bytes",
    kind: "gauge",
    help: "Size in bytes of ready messages",
    value: |q| q.ready_bytes(),
};

/// warren's per-queue counters (RabbitMQ counts these per channel).
const WARREN_QUEUE: [QueueMetric; 3] = [
    QueueMetric {
        name: "warren_queue_messages_published_total",
        kind: "counter",
        help: "Messages published into a queue",
        value: |q| q.stats.publish,
    },
    QueueMetric {
        name: "warren_queue_messages_delivered_total",
        kind: "counter",
        help: "Messages delivered from a queue to consumers and basic.get",
        value: |q| q.stats.deliver + q.stats.get,
    },
    QueueMetric {
        name: "warren_queue_messages_acked_total",
        kind: "counter",
        help: "Messages acknowledged from a queue",
        value: |q| q.stats.ack,
    },
];

fn queue_labels(q: &Queue) -> String {
    format!("vhost=\"{}\",queue=\"{}\"", esc(&q.vhost), esc(&q.name))
}

/// Write `m` per queue, or as one total.
fn queue_metric(out: &mut Out, m: &QueueMetric, qs: &[&Queue], per_object: bool) {
    out.head(m.name, m.kind, m.help);
    if per_object {
        for q in qs {
            out.sample(m.name, &queue_labels(q), (m.value)(q));
        }
    } else {
        out.sample(m.name, "", qs.iter().map(|q| (m.value)(q)).sum::<u64>());
    }
}

/// Render `view`.
pub fn render(core: &Core, mgmt: &Mgmt, now: Instant, view: &View) -> String {
    let (detailed, per_object) = match view {
        View::Aggregated => (false, false),
        View::PerObject => (false, true),
        View::Detailed { .. } => (true, true),
    };
    let want = |family: &str| match view {
        View::Detailed { families, .. } => families.iter().any(|f| f == family),
        _ => true,
    };
    let mut out = Out {
        text: String::with_capacity(8192 + core.engine.broker.queues.len() * 400),
        prefix: if detailed {
            "rabbitmq_detailed_"
        } else {
            "rabbitmq_"
        },
    };
    let c = &core.engine.counters;
    let mut qs: Vec<&Queue> = core
        .engine
        .broker
        .queues
        .iter()
        .map(|(_, q)| q)
        .filter(|q| match view {
            View::Detailed {
                vhosts: Some(vs), ..
            } => vs.iter().any(|v| v.as_bytes() == &q.vhost[..]),
            _ => true,
        })
        .collect();
    qs.sort_unstable_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));

    // RabbitMQ serves the alarms in the aggregated view only.
    if !per_object {
        out.one(
            "alarms_free_disk_space_watermark",
            "untyped",
            "is 1 if free disk space watermark alarm is in effect",
            u8::from(core.engine.alarms.disk_alarm),
        );
        out.one(
            "alarms_memory_used_watermark",
            "untyped",
            "is 1 if VM memory watermark alarm is in effect",
            u8::from(core.engine.alarms.blocked && !core.engine.alarms.disk_alarm),
        );
    }
    if want("node_coarse_metrics") {
        out.one(
            "process_open_fds",
            "gauge",
            "Open file descriptors",
            fd_used(),
        );
        out.one(
            "process_resident_memory_bytes",
            "gauge",
            "Memory used in bytes",
            rss_bytes(),
        );
        let free = core
            .engine
            .msgs
            .store
            .as_ref()
            .and_then(|st| st.free_space().ok());
        if let Some(free) = free {
            out.one(
                "disk_space_available_bytes",
                "gauge",
                "Disk space available in bytes",
                free,
            );
        }
    }
    if want("node_metrics") {
        out.one(
            "process_max_fds",
            "gauge",
            "Open file descriptors limit",
            fd_total(),
        );
        out.one(
            "resident_memory_limit_bytes",
            "gauge",
            "Memory high watermark in bytes",
            core.engine.config.max_memory,
        );
        out.one(
            "disk_space_available_limit_bytes",
            "gauge",
            "Free disk space low watermark in bytes",
            core.engine.config.min_free_disk,
        );
        out.one(
            "erlang_uptime_seconds",
            "gauge",
            "Node uptime",
            mgmt.uptime_ms(now) as f64 / 1000.0,
        );
    }
    if want("node_persister_metrics") {
        if let Some(st) = &core.engine.msgs.store {
            out.one(
                "io_write_bytes_total",
                "counter",
                "Total number of I/O bytes written",
                st.stats.bytes_written,
            );
            out.one(
                "io_sync_ops_total",
                "counter",
                "Total number of I/O sync operations",
                st.stats.syncs,
            );
            out.one(
                "io_sync_time_seconds_total",
                "counter",
                "Total I/O sync time",
                st.stats.sync_time.as_secs_f64(),
            );
        }
    }
    if want("queue_coarse_metrics") {
        for m in &QUEUE_COARSE {
            queue_metric(&mut out, m, &qs, per_object);
        }
    }
    if want("queue_consumer_count") || want("queue_metrics") {
        queue_metric(&mut out, &QUEUE_CONSUMERS, &qs, per_object);
    }
    if want("queue_metrics") {
        queue_metric(&mut out, &QUEUE_READY_BYTES, &qs, per_object);
    }
    if !detailed {
        let live = core
            .conns
            .iter()
            .filter(|(_, c)| c.state != ConnState::Dead)
            .count();
        let channels: usize = core.conns.iter().map(|(_, c)| c.channels.len()).sum();
        let consumers = core.engine.broker.consumer_count();
        let unacked: u64 = qs.iter().map(|q| q.unacked as u64).sum();
        if !per_object {
            // RabbitMQ's per-object view labels these by connection or
            // channel process; the aggregated view is their total.
            let totals: [(&str, &str, &str, u64); 10] = [
                (
                    "connection_incoming_bytes_total",
                    "counter",
                    "Total number of bytes received on a connection",
                    c.bytes_in,
                ),
                (
                    "connection_outgoing_bytes_total",
                    "counter",
                    "Total number of bytes sent on a connection",
                    c.bytes_out,
                ),
                (
                    "connection_channels",
                    "gauge",
                    "Channels on a connection",
                    channels as u64,
                ),
                (
                    "channel_consumers",
                    "gauge",
                    "Consumers on a channel",
                    consumers as u64,
                ),
                (
                    "channel_messages_unacked",
                    "gauge",
                    "Delivered but not yet acknowledged messages",
                    unacked,
                ),
                (
                    "channel_messages_published_total",
                    "counter",
                    "Total number of messages published into an exchange on a channel",
                    c.publish,
                ),
                (
                    "channel_messages_unroutable_returned_total",
                    "counter",
                    "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
                    c.return_unroutable,
                ),
                (
                    "channel_messages_unroutable_dropped_total",
                    "counter",
                    "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
                    c.drop_unroutable,
                ),
                (
                    "channel_messages_redelivered_total",
                    "counter",
                    "Total number of messages redelivered to consumers",
                    c.redeliver,
                ),
                (
                    "channel_messages_acked_total",
                    "counter",
                    "Total number of messages acknowledged by consumers",
                    c.ack,
                ),
            ];
            for (name, kind, help, v) in totals {
                out.one(name, kind, help, v);
            }
            out.one(
                "queue_messages_published_total",
                "counter",
                "Total number of messages published to queues",
                qs.iter().map(|q| q.stats.publish).sum::<u64>(),
            );
        }
        out.one("connections", "gauge", "Connections currently open", live);
        out.one("channels", "gauge", "Channels currently open", channels);
        out.one(
            "consumers",
            "gauge",
            "Consumers currently connected",
            consumers,
        );
        out.one(
            "queues",
            "gauge",
            "Queues available",
            core.engine.broker.queues.len(),
        );
        global(&mut out, core, consumers);
    }
    // Identity and build info: in every view, without the detailed prefix.
    let p = std::mem::replace(&mut out.prefix, "rabbitmq_");
    out.head(
        "build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
    );
    out.sample(
        "build_info",
        &format!(
            "rabbitmq_version=\"{COMPAT_VERSION}\",prometheus_plugin_version=\"{COMPAT_VERSION}\",\
             prometheus_client_version=\"warren-{}\",erlang_version=\"\"",
            env!("CARGO_PKG_VERSION")
        ),
        1,
    );
    out.head(
        "identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
    );
    let node = esc(mgmt.node.as_bytes());
    out.sample(
        "identity_info",
        &format!(
            "rabbitmq_node=\"{node}\",rabbitmq_cluster=\"{node}\",rabbitmq_cluster_permanent_id=\"{node}\""
        ),
        1,
    );
    out.prefix = p;
    if !detailed {
        warren_own(&mut out, core, mgmt, &qs, per_object);
    }
    out.text
}

/// RabbitMQ's `rabbitmq_global_*` counters, per protocol (`amqp091`,
/// `mqtt311`, `mqtt50`, as RabbitMQ labels them) and for classic queues
/// (the only queue type warren has).
fn global(out: &mut Out, core: &Core, consumers: usize) {
    let c = &core.engine.counters;
    let m = &core.mqtt.stats;
    let mqtt = |f: fn(&crate::mqtt::session::ProtoStats) -> u64| m.iter().map(f).sum::<u64>();
    // Per protocol: consumers, acknowledged, delivered, received,
    // redelivered, unroutable dropped, unroutable returned.
    let mqtt_consumers = |v5: bool| {
        core.conns
            .iter()
            .filter(|(_, x)| {
                x.mqtt
                    .as_deref()
                    .and_then(|s| s.version)
                    .is_some_and(|v| v.is_v5() == v5)
            })
            .map(|(_, x)| {
                x.channels
                    .iter()
                    .map(|ch| ch.consumers.len())
                    .sum::<usize>()
            })
            .sum::<usize>() as u64
    };
    let (c311, c50) = (mqtt_consumers(false), mqtt_consumers(true));
    let protos: [(&str, [u64; 7]); 3] = [
        (
            "amqp091",
            [
                (consumers as u64).saturating_sub(c311 + c50),
                c.ack.saturating_sub(mqtt(|s| s.acknowledged)),
                (c.deliver + c.get).saturating_sub(mqtt(|s| s.delivered)),
                c.publish.saturating_sub(mqtt(|s| s.received)),
                c.redeliver.saturating_sub(mqtt(|s| s.redelivered)),
                c.drop_unroutable.saturating_sub(mqtt(|s| s.unroutable)),
                c.return_unroutable,
            ],
        ),
        (
            "mqtt311",
            [
                c311,
                m[0].acknowledged,
                m[0].delivered,
                m[0].received,
                m[0].redelivered,
                m[0].unroutable,
                0,
            ],
        ),
        (
            "mqtt50",
            [
                c50,
                m[1].acknowledged,
                m[1].delivered,
                m[1].received,
                m[1].redelivered,
                m[1].unroutable,
                0,
            ],
        ),
    ];
    let rows: [(&str, &str, &str, bool); 7] = [
        ("global_consumers", "gauge", "Current number of consumers", false),
        (
            "global_messages_acknowledged_total",
            "counter",
            "Total number of messages acknowledged by consumers",
            true,
        ),
        (
            "global_messages_delivered_total",
            "counter",
            "Total number of messages delivered to consumers",
            true,
        ),
        (
            "global_messages_received_total",
            "counter",
            "Total number of messages received from publishers",
            false,
        ),
        (
            "global_messages_redelivered_total",
            "counter",
            "Total number of messages redelivered to consumers",
            true,
        ),
        (
            "global_messages_unroutable_dropped_total",
            "counter",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            false,
        ),
        (
            "global_messages_unroutable_returned_total",
            "counter",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            false,
        ),
    ];
    for (i, (name, kind, help, per_queue_type)) in rows.into_iter().enumerate() {
        out.head(name, kind, help);
        for (proto, values) in &protos {
            let labels = if per_queue_type {
                format!("protocol=\"{proto}\",queue_type=\"rabbit_classic_queue\"")
            } else {
                format!("protocol=\"{proto}\"")
            };
            out.sample(name, &labels, values.get(i).copied().unwrap_or(0));
        }
    }
}

/// What is warren's own: its message store, resident contents, the split
/// of deliveries that RabbitMQ counts by ack mode, and per-queue counters.
fn warren_own(out: &mut Out, core: &Core, mgmt: &Mgmt, qs: &[&Queue], per_object: bool) {
    let c = &core.engine.counters;
    out.own(
        "warren_global_messages_delivered_consume_total",
        "counter",
        "Messages delivered to consumers",
        c.deliver,
    );
    out.own(
        "warren_global_messages_delivered_get_total",
        "counter",
        "Messages delivered to basic.get",
        c.get,
    );
    out.own(
        "warren_message_resident_bytes",
        "gauge",
        "Bytes of memory in use as the memory alarm counts them (messages ready and unacknowledged, queue and connection buffers)",
        core.engine.memory_used(),
    );
    let (disk, syncs, sync_secs, written) = match &core.engine.msgs.store {
        Some(st) => (
            st.disk_bytes(),
            st.stats.syncs,
            st.stats.sync_time.as_secs_f64(),
            st.stats.bytes_written,
        ),
        None => (0, 0, 0.0, 0),
    };
    out.own(
        "warren_store_disk_bytes",
        "gauge",
        "Size of the message store's segment files",
        disk,
    );
    out.own(
        "warren_store_fsyncs_total",
        "counter",
        "fdatasync calls of the message store",
        syncs,
    );
    out.own(
        "warren_store_fsync_seconds_total",
        "counter",
        "Time spent in message store fdatasync calls",
        sync_secs,
    );
    out.own(
        "warren_store_written_bytes_total",
        "counter",
        "Bytes appended to the message store",
        written,
    );
    if per_object {
        let p = std::mem::take(&mut out.prefix);
        for m in &WARREN_QUEUE {
            queue_metric(out, m, qs, true);
        }
        out.prefix = p;
    }
    let _ = writeln!(out.text, "# TYPE warren_build_info untyped");
    let _ = writeln!(out.text, "# HELP warren_build_info Build information");
    let _ = writeln!(
        out.text,
        "warren_build_info{{version=\"{}\",node=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        esc(mgmt.node.as_bytes())
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn get(core: &Core, path: &str) -> (u16, String) {
        let mgmt = Mgmt::new(Vec::new(), None);
        let peer = "127.0.0.1:1".parse().unwrap();
        let r = handle(
            &Request::new("GET", path, b"", peer),
            core,
            &mgmt,
            Instant::now(),
        );
        (r.status, String::from_utf8(r.body).unwrap())
    }

    #[test]
    fn views() {
        let mut core = Core::new(crate::Config {
            data_dir: None,
            ..crate::Config::default()
        });
        let mut mgmt = Mgmt::new(Vec::new(), None);
        for q in ["a", "b"] {
            let mut req = Request::new(
                "PUT",
                &format!("/api/queues/%2F/{q}"),
                b"{}",
                "127.0.0.1:1".parse().unwrap(),
            );
            req.auth = Some(("guest".into(), "guest".into()));
            let r = super::super::api::handle(&req, &mut core, &mut mgmt, Instant::now());
            assert_eq!(r.status, 201);
        }
        let (s, agg) = get(&core, "/metrics");
        assert_eq!(s, 200);
        assert!(agg.contains("\nrabbitmq_queue_messages_ready 0\n"), "{agg}");
        assert!(agg.contains("\nrabbitmq_queues 2\n"));
        assert!(agg.contains("rabbitmq_identity_info{rabbitmq_node=\"warren@"));
        assert!(!agg.contains("queue=\"a\""));
        let (_, po) = get(&core, "/metrics/per-object");
        assert!(po.contains("\nrabbitmq_queue_messages_ready{vhost=\"/\",queue=\"a\"} 0\n"));
        assert!(po.contains("\nwarren_queue_messages_published_total{vhost=\"/\",queue=\"b\"} 0\n"));
        assert!(!po.contains("rabbitmq_channel_messages_published_total"));
        let (_, d) = get(&core, "/metrics/detailed");
        let names: Vec<&str> = d
            .lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(|l| l.split(' ').nth(2).unwrap())
            .collect();
        assert_eq!(names, ["rabbitmq_build_info", "rabbitmq_identity_info"]);
        let (_, d) = get(
            &core,
            "/metrics/detailed?family=queue_coarse_metrics&vhost=%2F",
        );
        assert!(d.contains("\nrabbitmq_detailed_queue_messages{vhost=\"/\",queue=\"b\"} 0\n"));
        assert!(!d.contains("rabbitmq_detailed_queue_consumers"));
        let (_, d) = get(
            &core,
            "/metrics/detailed?family=queue_coarse_metrics&vhost=x",
        );
        assert!(!d.contains("queue=\""));
        assert_eq!(get(&core, "/metrics/nope").0, 404);
        assert_eq!(get(&core, "/api/overview").0, 404);
    }
}
