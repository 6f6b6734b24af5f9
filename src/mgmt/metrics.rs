//! `GET /metrics`: Prometheus text exposition format (version 0.0.4), with
//! the names of RabbitMQ's `rabbitmq_prometheus` plugin where one exists
//! and `warren_` names for what is ours (message store, resident contents).

use std::fmt::Write;

use super::stats::{fd_used, rss_bytes, Mgmt};
use crate::conn::ConnState;
use crate::core::Core;

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

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Render every metric.
pub fn render(core: &Core, mgmt: &Mgmt, now: std::time::Instant) -> String {
    let mut out = String::with_capacity(4096 + core.broker.queues.len() * 160);
    let live = core
        .conns
        .iter()
        .filter(|(_, c)| c.state != ConnState::Dead)
        .count();
    let channels: usize = core.conns.iter().map(|(_, c)| c.channels.len()).sum();
    let consumers = core.broker.consumer_count();
    let c = &core.counters;
    metric(
        &mut out,
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        live,
    );
    metric(
        &mut out,
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        channels,
    );
    metric(
        &mut out,
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        core.broker.queues.len(),
    );
    metric(
        &mut out,
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        consumers,
    );
    let counters: [(&str, &str, u64); 8] = [
        (
            "rabbitmq_global_messages_received_total",
            "Messages received from publishers",
            c.publish,
        ),
        (
            "rabbitmq_global_messages_delivered_consume_total",
            "Messages delivered to consumers",
            c.deliver,
        ),
        (
            "rabbitmq_global_messages_delivered_get_total",
            "Messages delivered to basic.get",
            c.get,
        ),
        (
            "rabbitmq_global_messages_delivered_total",
            "Messages delivered to consumers and basic.get",
            c.deliver + c.get,
        ),
        (
            "rabbitmq_global_messages_acknowledged_total",
            "Messages acknowledged by consumers",
            c.ack,
        ),
        (
            "rabbitmq_global_messages_redelivered_total",
            "Messages redelivered to consumers",
            c.redeliver,
        ),
        (
            "rabbitmq_global_messages_unroutable_dropped_total",
            "Messages published as non-mandatory that could not be routed and were dropped",
            c.drop_unroutable,
        ),
        (
            "rabbitmq_global_messages_unroutable_returned_total",
            "Messages published as mandatory that could not be routed and were returned",
            c.return_unroutable,
        ),
    ];
    for (name, help, v) in counters {
        metric(&mut out, name, "counter", help, v);
    }
    metric(
        &mut out,
        "rabbitmq_connection_incoming_bytes_total",
        "counter",
        "Bytes received from AMQP clients",
        c.bytes_in,
    );
    metric(
        &mut out,
        "rabbitmq_connection_outgoing_bytes_total",
        "counter",
        "Bytes sent to AMQP clients",
        c.bytes_out,
    );
    let (mut ready, mut unacked) = (0u64, 0u64);
    for (_, q) in core.broker.queues.iter() {
        ready += q.ready.len() as u64;
        unacked += q.unacked as u64;
    }
    metric(
        &mut out,
        "rabbitmq_queue_messages_ready_total",
        "gauge",
        "Messages ready to be delivered, in all queues",
        ready,
    );
    metric(
        &mut out,
        "rabbitmq_queue_messages_unacked_total",
        "gauge",
        "Messages delivered and not yet acknowledged, in all queues",
        unacked,
    );
    // Per-queue series, sorted for stable output.
    let mut qs: Vec<_> = core.broker.queues.iter().map(|(_, q)| q).collect();
    qs.sort_unstable_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    let per_queue: [(&str, &str, &str); 6] = [
        (
            "rabbitmq_queue_messages_ready",
            "gauge",
            "Messages ready to be delivered",
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "gauge",
            "Messages delivered and not yet acknowledged",
        ),
        ("rabbitmq_queue_consumers", "gauge", "Consumers on a queue"),
        (
            "rabbitmq_queue_messages_published_total",
            "counter",
            "Messages published into a queue",
        ),
        (
            "rabbitmq_queue_messages_delivered_total",
            "counter",
            "Messages delivered from a queue (consumers and basic.get)",
        ),
        (
            "rabbitmq_queue_messages_acked_total",
            "counter",
            "Messages acknowledged from a queue",
        ),
    ];
    for (i, (name, kind, help)) in per_queue.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for q in &qs {
            let v = match i {
                0 => q.ready.len() as u64,
                1 => q.unacked as u64,
                2 => q.consumers.len() as u64,
                3 => q.stats.publish,
                4 => q.stats.deliver + q.stats.get,
                _ => q.stats.ack,
            };
            let _ = writeln!(
                out,
                "{name}{{vhost=\"{}\",queue=\"{}\"}} {v}",
                esc(&q.vhost),
                esc(&q.name)
            );
        }
    }
    metric(
        &mut out,
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes (resident set size)",
        rss_bytes(),
    );
    metric(
        &mut out,
        "rabbitmq_process_open_fds",
        "gauge",
        "Open file descriptors",
        fd_used(),
    );
    metric(
        &mut out,
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory budget for message contents; publishers are blocked at it",
        core.config.max_memory,
    );
    metric(
        &mut out,
        "rabbitmq_alarms_memory_used_watermark",
        "gauge",
        "1 if the memory alarm is in effect",
        u8::from(core.blocked && !core.disk_alarm),
    );
    metric(
        &mut out,
        "rabbitmq_alarms_free_disk_space_watermark",
        "gauge",
        "1 if the free disk space alarm is in effect",
        u8::from(core.disk_alarm),
    );
    metric(
        &mut out,
        "warren_message_resident_bytes",
        "gauge",
        "Bytes of memory in use as the memory alarm counts them (messages ready and unacknowledged, queue and connection buffers)",
        core.memory_used(),
    );
    let (disk, syncs, sync_secs, written) = match &core.store {
        Some(st) => (
            st.disk_bytes(),
            st.stats.syncs,
            st.stats.sync_time.as_secs_f64(),
            st.stats.bytes_written,
        ),
        None => (0, 0, 0.0, 0),
    };
    metric(
        &mut out,
        "warren_store_disk_bytes",
        "gauge",
        "Size of the message store's segment files",
        disk,
    );
    metric(
        &mut out,
        "warren_store_fsyncs_total",
        "counter",
        "fdatasync calls of the message store",
        syncs,
    );
    metric(
        &mut out,
        "warren_store_fsync_seconds_total",
        "counter",
        "Time spent in message store fdatasync calls",
        sync_secs,
    );
    metric(
        &mut out,
        "warren_store_written_bytes_total",
        "counter",
        "Bytes appended to the message store",
        written,
    );
    metric(
        &mut out,
        "rabbitmq_erlang_uptime_seconds",
        "gauge",
        "Broker uptime in seconds",
        mgmt.uptime_ms(now) as f64 / 1000.0,
    );
    let _ = writeln!(out, "# HELP warren_build_info Build information");
    let _ = writeln!(out, "# TYPE warren_build_info untyped");
    let _ = writeln!(
        out,
        "warren_build_info{{version=\"{}\",node=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        esc(mgmt.node.as_bytes())
    );
    out
}
