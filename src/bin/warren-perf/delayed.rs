//! `warren-perf delayed -- BROKER [ARGS...]`: an `x-delayed-message`
//! exchange with N pending delayed messages, measured from outside the
//! broker process:
//!
//! - publish N small messages (persistent unless `--transient`, with
//!   publisher confirms) to an
//!   `x-delayed-message` exchange (`x-delayed-type: direct`), each with an
//!   `x-delay` of `--min-delay` plus a share of `--spread` (a permutation
//!   of the publish order, so due order is not publish order);
//! - the broker's RSS (and peak) with all of them pending, and the size of
//!   its `delayed/` directory;
//! - a consumer on the bound queue receives them as they come due: the
//!   broker's CPU time from before the first is due until the last is
//!   delivered, per delivered message, and how late each arrived after its
//!   due time (p50, p99, max: the client's clock; each body carries its due
//!   time).
//!
//! The broker is started as `BROKER ARGS... --listen 127.0.0.1:PORT
//! --data-dir DIR` with a fresh temporary directory.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren::codec::frame::{write_method, Frame};
use warren::codec::{
    BasicConsume, BasicProperties, BasicPublish, ConfirmSelect, ContentHeader, ExchangeDeclare,
    FieldTable, FieldValue, Method, QueueBind, QueueDeclare,
};
use warren::support::rss_and_peak as rss;

use super::client::{Conn, PerfError, Result};
use super::msg::{Event, Scanner};
use super::uri;

/// What to run.
pub struct DelayedSettings {
    /// Broker command line (program first).
    pub broker: Vec<String>,
    /// Port to run it on.
    pub port: u16,
    /// Messages to hold.
    pub messages: u64,
    /// Shortest delay (ms).
    pub min_delay: u64,
    /// Delays spread over this many ms beyond the shortest.
    pub spread: u64,
    /// Body size (at least 16).
    pub size: usize,
    /// Transient messages (delivery mode 1) instead of persistent.
    pub transient: bool,
    /// One JSON line instead of text.
    pub json: bool,
}

fn start(s: &DelayedSettings, dir: &std::path::Path) -> Result<Child> {
    let _ = std::fs::remove_dir_all(dir);
    let (prog, args) = s
        .broker
        .split_first()
        .ok_or_else(|| PerfError::Protocol("no broker command".into()))?;
    let mut child = Command::new(prog)
        .args(args)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", s.port))
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let t = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            return Err(PerfError::Protocol(format!("broker exited: {status}")));
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            return Err(PerfError::Protocol(
                "broker not listening after 20 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stop(mut child: Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// One encoded publish with its `x-delay` and a body stamped with its due
/// time (ns since `epoch`) and sequence number.
fn encode(
    out: &mut BytesMut,
    s: &DelayedSettings,
    delay_ms: u64,
    due_ns: u64,
    seq: u64,
    frame_max: u32,
) {
    let size = s.size;
    write_method(
        out,
        1,
        &Method::BasicPublish(BasicPublish {
            ticket: 0,
            exchange: Bytes::from_static(b"perf-delayed"),
            routing_key: Bytes::from_static(b"k"),
            mandatory: false,
            immediate: false,
        }),
    );
    let mut h = FieldTable::new();
    h.insert("x-delay", FieldValue::I64(delay_ms as i64));
    Frame::Header(
        1,
        Box::new(ContentHeader {
            class_id: 60,
            body_size: size as u64,
            properties: BasicProperties {
                delivery_mode: Some(if s.transient { 1 } else { 2 }),
                headers: Some(h),
                ..Default::default()
            },
        }),
    )
    .encode(out);
    let mut body = vec![0u8; size];
    if let Some(b) = body.get_mut(..8) {
        b.copy_from_slice(&due_ns.to_be_bytes());
    }
    if let Some(b) = body.get_mut(8..16) {
        b.copy_from_slice(&seq.to_be_bytes());
    }
    let chunk = if frame_max == 0 {
        size.max(1)
    } else {
        (frame_max as usize).saturating_sub(8).max(1)
    };
    for c in body.chunks(chunk) {
        Frame::Body(1, Bytes::copy_from_slice(c)).encode(out);
    }
}

fn ok(c: &mut Conn, m: Method, want: fn(&Method) -> bool) -> Result<()> {
    c.rpc(1, &m, want).map(|_| ())
}

fn pct(v: &[u64], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0) as f64 / 1e6
}

fn measure(s: &DelayedSettings) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("warren-delayed-perf-{}", std::process::id()));
    let child = start(s, &dir)?;
    let pid = child.id();
    let u = uri::parse(&format!("amqp://guest:guest@127.0.0.1:{}/%2f", s.port))
        .map_err(PerfError::Protocol)?;
    let mut c = Conn::open(&u, "warren-perf delayed")?;
    c.open_channel(1)?;
    let mut args = FieldTable::new();
    args.insert(
        "x-delayed-type",
        FieldValue::LongStr(Bytes::from_static(b"direct")),
    );
    ok(
        &mut c,
        ExchangeDeclare {
            exchange: Bytes::from_static(b"perf-delayed"),
            kind: Bytes::from_static(b"x-delayed-message"),
            durable: true,
            arguments: args,
            ..Default::default()
        }
        .into(),
        |m| matches!(m, Method::ExchangeDeclareOk(_)),
    )?;
    ok(
        &mut c,
        QueueDeclare {
            queue: Bytes::from_static(b"perf-delayed-q"),
            durable: true,
            ..Default::default()
        }
        .into(),
        |m| matches!(m, Method::QueueDeclareOk(_)),
    )?;
    ok(
        &mut c,
        QueueBind {
            queue: Bytes::from_static(b"perf-delayed-q"),
            exchange: Bytes::from_static(b"perf-delayed"),
            routing_key: Bytes::from_static(b"k"),
            ..Default::default()
        }
        .into(),
        |m| matches!(m, Method::QueueBindOk(_)),
    )?;
    ok(&mut c, ConfirmSelect::default().into(), |m| {
        matches!(m, Method::ConfirmSelectOk(_))
    })?;
    let (rss_before, _) = rss(pid);
    let cpu_before = super::cpu::process(pid).unwrap_or(0.0);
    let n = s.messages;
    let epoch = Instant::now();
    // A permutation of 0..n (a stride coprime with n) spreads the dues.
    let stride = (1..)
        .map(|k| 7919u64 * k + 1)
        .find(|&k| gcd(k, n.max(1)) == 1)
        .unwrap_or(1);
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut sent = 0u64;
    let mut acked = 0u64;
    let batch = 1_000u64;
    while sent < n {
        buf.clear();
        let upto = (sent + batch).min(n);
        for i in sent..upto {
            let slot = (i.wrapping_mul(stride)) % n;
            let delay = s.min_delay + slot * s.spread / n.max(1);
            let due = epoch.elapsed().as_nanos() as u64 + delay * 1_000_000;
            encode(&mut buf, s, delay, due, i, c.frame_max);
        }
        c.stream.write_all(&buf)?;
        sent = upto;
        while acked < sent {
            match c.next_method()? {
                (_, Method::BasicAck(a)) => acked = acked.max(a.delivery_tag),
                (_, Method::BasicNack(a)) => {
                    return Err(PerfError::Protocol(format!(
                        "publish {} nacked",
                        a.delivery_tag
                    )))
                }
                _ => {}
            }
        }
    }
    let publish_secs = epoch.elapsed().as_secs_f64();
    let cpu_published = super::cpu::process(pid).unwrap_or(0.0);
    std::thread::sleep(Duration::from_secs(1));
    let (rss_pending, hwm_pending) = rss(pid);
    let disk = dir_bytes(&dir.join("delayed"));
    let first_due = Duration::from_millis(s.min_delay);
    if epoch.elapsed() + Duration::from_millis(500) > first_due {
        eprintln!(
            "warren-perf delayed: publishing took {publish_secs:.1} s, longer than --min-delay: the CPU per delivery includes publishing"
        );
    }
    c.rpc(
        1,
        &Method::BasicConsume(BasicConsume {
            queue: Bytes::from_static(b"perf-delayed-q"),
            no_ack: true,
            ..Default::default()
        }),
        |m| matches!(m, Method::BasicConsumeOk(_)),
    )?;
    if let Some(wait) = first_due.checked_sub(epoch.elapsed() + Duration::from_millis(200)) {
        std::thread::sleep(wait);
    }
    let cpu_start = super::cpu::process(pid).unwrap_or(0.0);
    let t_start = Instant::now();
    let mut scanner = Scanner::default();
    let mut late = Vec::with_capacity(n as usize);
    let mut early = 0u64;
    let mut early_max = 0u64;
    let mut got = 0u64;
    while got < n {
        match scanner.next(&mut c.rbuf, c.frame_max)? {
            Some(Event::Msg(m)) => {
                got += 1;
                if let Some((due, _)) = m.stamp {
                    let now = epoch.elapsed().as_nanos() as u64;
                    match now.checked_sub(due) {
                        Some(l) => late.push(l),
                        None => {
                            early += 1;
                            early_max = early_max.max(due - now);
                        }
                    }
                }
            }
            Some(Event::Method(..)) => {}
            None => {
                c.read_more()?;
            }
        }
    }
    let deliver_secs = t_start.elapsed().as_secs_f64();
    let cpu_end = super::cpu::process(pid).unwrap_or(0.0);
    let (rss_after, hwm_after) = rss(pid);
    c.close(Duration::from_secs(2));
    stop(child);
    let _ = std::fs::remove_dir_all(&dir);
    late.sort_unstable();
    let per_msg_us = (cpu_end - cpu_start) * 1e6 / n.max(1) as f64;
    let publish_us = (cpu_published - cpu_before) * 1e6 / n.max(1) as f64;
    let mb = |b: u64| b as f64 / 1e6;
    if s.json {
        println!(
            "{{\"mode\":\"delayed\",\"messages\":{n},\"size\":{},\"transient\":{},\"min_delay_ms\":{},\"spread_ms\":{},\"publish_secs\":{publish_secs:.2},\"broker_cpu_us_per_publish\":{publish_us:.2},\"rss_before\":{rss_before},\"rss_pending\":{rss_pending},\"hwm_pending\":{hwm_pending},\"delayed_dir_bytes\":{disk},\"deliver_secs\":{deliver_secs:.2},\"broker_cpu_us_per_delivery\":{per_msg_us:.2},\"late_ms\":{{\"p50\":{:.2},\"p99\":{:.2},\"max\":{:.2}}},\"early\":{early},\"early_max_ms\":{:.2},\"rss_after\":{rss_after},\"hwm_after\":{hwm_after}}}",
            s.size,
            s.transient,
            s.min_delay,
            s.spread,
            pct(&late, 0.5),
            pct(&late, 0.99),
            pct(&late, 1.0),
            early_max as f64 / 1e6,
        );
    } else {
        println!(
            "{n} delayed {} B {} messages published and confirmed in {publish_secs:.1} s (broker CPU {publish_us:.2} µs per publish)",
            s.size,
            if s.transient { "transient" } else { "persistent" }
        );
        println!(
            "RSS with all {n} pending: {:.1} MB (before publishing {:.1} MB, peak {:.1} MB); delayed/ on disk {:.1} MB",
            mb(rss_pending),
            mb(rss_before),
            mb(hwm_pending),
            mb(disk)
        );
        println!(
            "delivered as they came due over {deliver_secs:.1} s: broker CPU {per_msg_us:.2} µs per delivered delayed message; late after due p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({early} early, by {:.2} ms at most); RSS after {:.1} MB, peak {:.1} MB",
            pct(&late, 0.5),
            pct(&late, 0.99),
            pct(&late, 1.0),
            early_max as f64 / 1e6,
            mb(rss_after),
            mb(hwm_after)
        );
    }
    Ok(())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Run it; returns the exit code.
pub fn run(s: DelayedSettings) -> i32 {
    match measure(&s) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("warren-perf delayed: {e}");
            1
        }
    }
}
