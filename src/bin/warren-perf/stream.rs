//! `warren-perf stream`: a stream queue (`x-queue-type: stream`) over
//! AMQP 0-9-1, in two phases. Publish: `--publishers` connections publish
//! `--messages` messages (split between them) to the stream through the
//! default exchange with publisher confirms, at most `--confirm` awaiting
//! their ack each, written in 64 KiB batches; the rate counts confirmed
//! messages. Read: `--consumers` connections each consume the whole stream
//! from `x-stream-offset: first` with a `--prefetch` window, acking with
//! multiple=true every `--multi-ack` deliveries, until each has had every
//! message; each checks that the `x-stream-offset` headers it was given
//! are contiguous (no offset skipped, none twice) and reports its own rate.
//! With `--broker-pid`, the broker's CPU time per message and its resident
//! memory (VmRSS, RssAnon from `/proc/PID/status`, sampled every 50 ms) are
//! reported per phase: at the start, the peak and at the end.

use std::fmt::Write as _;
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren::codec::{
    BasicConsume, BasicQos, ConfirmSelect, FieldTable, FieldValue, Method, QueueDeclare,
    QueueDelete,
};

use super::client::{channel_closed, closed, is_timeout, Conn, PerfError, Result};
use super::cpu;
use super::msg::{AckFrame, Event, Scanner, Template};
use super::run::{json_str, per_sec, ConfirmTracker, ConfirmWait, Sender};
use super::uri::Uri;

/// Everything the command line decides.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Broker address and credentials.
    pub uri: Uri,
    /// The stream queue's name.
    pub queue: String,
    /// Publisher connections.
    pub publishers: usize,
    /// Messages to publish in all (publish phase), or the number the
    /// stream holds (read phase alone).
    pub messages: u64,
    /// Body size in bytes (>= 16).
    pub size: usize,
    /// Unconfirmed messages per publisher at most.
    pub confirm: u64,
    /// Consumer connections in the read phase.
    pub consumers: usize,
    /// basic.qos prefetch count of each consumer.
    pub prefetch: u16,
    /// Ack with multiple=true every this many deliveries.
    pub multi_ack: u64,
    /// Run the publish phase (the stream is deleted and declared afresh).
    pub publish: bool,
    /// Run the read phase.
    pub read: bool,
    /// Keep the stream at the end.
    pub keep: bool,
    /// A phase fails when nothing moves for this long.
    pub stall: Duration,
    /// The broker's process id (CPU time, memory).
    pub broker_pid: Option<u32>,
    /// Summary as one JSON line.
    pub json: bool,
}

/// Anomalies each consumer describes in detail (the rest are counted).
const SHOWN: usize = 5;

// ---------------------------------------------------------------- memory

/// Resident memory of a process, kB: VmRSS and RssAnon.
fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        line.get(name.len()..)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("RssAnon:").unwrap_or(0)))
}

/// Samples a process's memory every 50 ms on its own thread.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(u64, u64)>>,
    pid: u32,
    start: (u64, u64),
}

/// Start, peak and end of VmRSS and RssAnon over a phase, kB.
#[derive(Debug, Default, Clone, Copy)]
struct Rss {
    start: u64,
    peak: u64,
    end: u64,
    anon_start: u64,
    anon_peak: u64,
    anon_end: u64,
}

impl RssSampler {
    fn start(pid: Option<u32>) -> Option<RssSampler> {
        let pid = pid?;
        let start = rss_kb(pid)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("rss".into())
            .spawn(move || {
                let mut peak = start;
                while !s2.load(SeqCst) {
                    if let Some((v, a)) = rss_kb(pid) {
                        peak = (peak.0.max(v), peak.1.max(a));
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                peak
            })
            .ok();
        Some(RssSampler {
            stop,
            handle,
            pid,
            start,
        })
    }

    fn finish(mut self) -> Rss {
        self.stop.store(true, SeqCst);
        let peak = self
            .handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or(self.start);
        let end = rss_kb(self.pid).unwrap_or((0, 0));
        Rss {
            start: self.start.0,
            peak: peak.0.max(end.0),
            end: end.0,
            anon_start: self.start.1,
            anon_peak: peak.1.max(end.1),
            anon_end: end.1,
        }
    }
}

impl Rss {
    fn line(&self) -> String {
        let mib = |kb: u64| kb as f64 / 1024.0;
        format!(
            "broker RSS start {:.1} / peak {:.1} / end {:.1} MiB (anonymous {:.1} / {:.1} / {:.1} MiB)",
            mib(self.start),
            mib(self.peak),
            mib(self.end),
            mib(self.anon_start),
            mib(self.anon_peak),
            mib(self.anon_end)
        )
    }

    fn json(&self, prefix: &str) -> String {
        format!(
            "\"{prefix}rss_start_kb\":{},\"{prefix}rss_peak_kb\":{},\"{prefix}rss_end_kb\":{},\"{prefix}rss_anon_start_kb\":{},\"{prefix}rss_anon_peak_kb\":{},\"{prefix}rss_anon_end_kb\":{}",
            self.start, self.peak, self.end, self.anon_start, self.anon_peak, self.anon_end
        )
    }
}

// ------------------------------------------------------------ the phases

/// A summary line: on stdout, or on stderr when stdout is for the JSON line.
macro_rules! out {
    ($s:expr, $($a:tt)*) => {
        if $s.json {
            eprintln!($($a)*)
        } else {
            println!($($a)*)
        }
    };
}

fn say(s: &StreamSettings, line: &str) {
    if s.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// What every thread of a phase shares.
struct Phase {
    stop: AtomicBool,
    failed: AtomicBool,
    errors: Mutex<Vec<String>>,
}

impl Phase {
    fn new() -> Phase {
        Phase {
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            errors: Mutex::new(Vec::new()),
        }
    }

    fn fail(&self, who: &str, e: &dyn std::fmt::Display) {
        let line = format!("{who}: {e}");
        eprintln!("warren-perf stream: {line}");
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        self.failed.store(true, SeqCst);
        self.stop.store(true, SeqCst);
    }

    fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Default)]
struct PubStats {
    published: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    /// When the last of its messages was settled, ns since the phase began.
    done_ns: AtomicU64,
}

impl PubStats {
    fn settled(&self) -> u64 {
        self.confirmed.load(SeqCst) + self.nacked.load(SeqCst)
    }
}

fn stream_args() -> FieldTable {
    let mut t = FieldTable::new();
    t.insert(
        "x-queue-type",
        FieldValue::LongStr(Bytes::from_static(b"stream")),
    );
    t
}

fn declare(ctl: &mut Conn, s: &StreamSettings, fresh: bool) -> Result<()> {
    if fresh {
        ctl.rpc(
            1,
            &Method::QueueDelete(QueueDelete {
                queue: s.queue.clone().into(),
                ..Default::default()
            }),
            |m| matches!(m, Method::QueueDeleteOk(_)),
        )?;
    }
    ctl.rpc(
        1,
        &Method::QueueDeclare(QueueDeclare {
            queue: s.queue.clone().into(),
            durable: true,
            arguments: stream_args(),
            ..Default::default()
        }),
        |m| matches!(m, Method::QueueDeclareOk(_)),
    )?;
    Ok(())
}

fn pub_confirms(mut conn: Conn, st: &PubStats, cw: &ConfirmWait) -> Result<()> {
    let mut tracker = ConfirmTracker::new();
    loop {
        let (_, m) = conn.next_method()?;
        match m {
            Method::BasicAck(a) => {
                let n = tracker.settle(a.delivery_tag, a.multiple);
                st.confirmed.fetch_add(n, SeqCst);
                cw.notify();
            }
            Method::BasicNack(a) => {
                let n = tracker.settle(a.delivery_tag, a.multiple);
                st.nacked.fetch_add(n, SeqCst);
                cw.notify();
            }
            Method::ConnectionCloseOk(_) => return Ok(()),
            _ => {}
        }
    }
}

/// One publisher: `count` messages, at most `s.confirm` unconfirmed.
fn publisher(
    id: usize,
    count: u64,
    s: &StreamSettings,
    ph: &Arc<Phase>,
    st: &Arc<PubStats>,
    go: &Barrier,
    epoch: Instant,
) -> Result<()> {
    let connected = (|| -> Result<Conn> {
        let mut conn = Conn::open(&s.uri, &format!("warren-perf stream publisher {id}"))?;
        conn.open_channel(1)?;
        conn.rpc(
            1,
            &Method::ConfirmSelect(ConfirmSelect { nowait: false }),
            |m| matches!(m, Method::ConfirmSelectOk(_)),
        )?;
        Ok(conn)
    })();
    // Everyone passes the barrier, connected or not.
    go.wait();
    let conn = connected?;
    let tpl = Template::publish("", &s.queue, s.size, true, conn.frame_max);
    let mut w = conn.stream.try_clone()?;
    let cw = Arc::new(ConfirmWait::default());
    let reader = {
        let (ph, st, cw) = (Arc::clone(ph), Arc::clone(st), Arc::clone(&cw));
        thread::Builder::new()
            .name(format!("stream-pub-reader-{id}"))
            .spawn(move || {
                if let Err(e) = pub_confirms(conn, &st, &cw) {
                    if !cw.closing.load(SeqCst) {
                        ph.fail(&format!("publisher {id}"), &e);
                    }
                }
                cw.notify();
            })?
    };
    let mut tx = Sender::new(tpl, id);
    let now = || epoch.elapsed().as_nanos() as u64;
    let mut result = Ok(());
    while tx.seq < count && !ph.stop.load(Relaxed) {
        let outstanding = tx.seq - st.settled();
        if outstanding >= s.confirm {
            let seq = tx.seq;
            cw.wait_until(
                || seq - st.settled() < s.confirm || ph.stop.load(Relaxed),
                Duration::from_millis(100),
            );
            continue;
        }
        let n = tx
            .per_batch()
            .min(s.confirm - outstanding)
            .min(count - tx.seq);
        if let Err(e) = tx.send(&mut w, n, now) {
            thread::sleep(Duration::from_millis(200));
            result = Err(e.into());
            break;
        }
        st.published.fetch_add(n, SeqCst);
    }
    // Wait for the last confirms (the phase's stall watchdog ends this).
    while result.is_ok() && st.settled() < tx.seq && !ph.stop.load(Relaxed) {
        if reader.is_finished() {
            break;
        }
        let seq = tx.seq;
        cw.wait_until(|| st.settled() >= seq, Duration::from_millis(50));
    }
    st.done_ns.store(now(), SeqCst);
    cw.closing.store(true, SeqCst);
    let _ = w.write_all(&Conn::close_frame());
    let deadline = Instant::now() + Duration::from_secs(3);
    while !reader.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let _ = w.shutdown(Shutdown::Both);
    let _ = reader.join();
    result
}

struct PublishResult {
    published: u64,
    confirmed: u64,
    nacked: u64,
    secs: f64,
    broker_cpu: Option<f64>,
    client_cpu: Option<f64>,
    rss: Option<Rss>,
    errors: Vec<String>,
}

fn publish_phase(s: &Arc<StreamSettings>) -> Result<PublishResult> {
    let ph = Arc::new(Phase::new());
    let n = s.publishers as u64;
    let stats: Vec<Arc<PubStats>> = (0..s.publishers).map(|_| Arc::default()).collect();
    let go = Arc::new(Barrier::new(s.publishers + 1));
    let epoch = Instant::now();
    let mut handles = Vec::new();
    for (i, st) in stats.iter().enumerate() {
        let count = s.messages / n + u64::from((i as u64) < s.messages % n);
        let (s2, ph2, st2, go2) = (
            Arc::clone(s),
            Arc::clone(&ph),
            Arc::clone(st),
            Arc::clone(&go),
        );
        handles.push(
            thread::Builder::new()
                .name(format!("stream-pub-{i}"))
                .spawn(move || {
                    if let Err(e) = publisher(i, count, &s2, &ph2, &st2, &go2, epoch) {
                        ph2.fail(&format!("publisher {i}"), &e);
                    }
                })?,
        );
    }
    let sampler = RssSampler::start(s.broker_pid);
    let cpu0 = s.broker_pid.and_then(cpu::process);
    let self0 = cpu::this_process();
    go.wait();
    let t0 = epoch.elapsed().as_nanos() as u64;
    let sum = |f: fn(&PubStats) -> u64| stats.iter().map(|p| f(p)).sum::<u64>();
    let mut last = (0u64, Instant::now());
    let mut prev = (0u64, Instant::now());
    let mut next_report = Instant::now() + Duration::from_secs(1);
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(10));
        let settled = sum(|p| p.settled());
        let now = Instant::now();
        if settled != last.0 {
            last = (settled, now);
        } else if now.duration_since(last.1) > s.stall && !ph.stop.load(SeqCst) {
            ph.fail(
                "publish phase",
                &format!(
                    "stalled: no confirm for {:.0} s, {} of {} published messages confirmed",
                    s.stall.as_secs_f64(),
                    settled,
                    sum(|p| p.published.load(SeqCst))
                ),
            );
        }
        if now >= next_report {
            let dt = now.duration_since(prev.1).as_secs_f64();
            let rss = s
                .broker_pid
                .and_then(rss_kb)
                .map(|(v, _)| format!(" | broker RSS {:.1} MiB", v as f64 / 1024.0))
                .unwrap_or_default();
            say(
                s,
                &format!(
                    "publish {:>5.1} s | confirmed {:>9.0} msg/s | {} of {}{rss}",
                    (epoch.elapsed().as_nanos() as u64 - t0) as f64 / 1e9,
                    per_sec(settled - prev.0, dt),
                    settled,
                    s.messages
                ),
            );
            prev = (settled, now);
            next_report += Duration::from_secs(1);
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let end = stats
        .iter()
        .map(|p| p.done_ns.load(SeqCst))
        .max()
        .unwrap_or(t0);
    let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    Ok(PublishResult {
        published: sum(|p| p.published.load(SeqCst)),
        confirmed: sum(|p| p.confirmed.load(SeqCst)),
        nacked: sum(|p| p.nacked.load(SeqCst)),
        secs: end.saturating_sub(t0) as f64 / 1e9,
        broker_cpu: used(cpu0, s.broker_pid.and_then(cpu::process)),
        client_cpu: used(self0, cpu::this_process()),
        rss: sampler.map(RssSampler::finish),
        errors: ph.errors(),
    })
}

/// One consumer's findings.
#[derive(Default)]
struct ConStats {
    received: AtomicU64,
    /// Time of its last delivery, ns since the phase began.
    last_ns: AtomicU64,
    /// It has had `expected` messages.
    done: AtomicBool,
    check: Mutex<Check>,
}

/// The offsets a consumer was given, checked as they come.
#[derive(Default, Debug, Clone)]
struct Check {
    first: Option<u64>,
    /// The offset it should get next.
    next: u64,
    last: Option<u64>,
    /// Jumps forward: times, offsets skipped in all.
    gaps: u64,
    skipped: u64,
    /// Offsets at or below one already seen.
    repeats: u64,
    /// Deliveries without an integer `x-stream-offset` header.
    missing: u64,
    /// The first anomalies, described.
    shown: Vec<String>,
}

impl Check {
    fn see(&mut self, offset: Option<u64>, nth: u64) {
        let Some(o) = offset else {
            self.missing += 1;
            if self.shown.len() < SHOWN {
                self.shown
                    .push(format!("delivery #{nth} has no x-stream-offset header"));
            }
            return;
        };
        if self.first.is_none() {
            self.first = Some(o);
            self.next = o;
        }
        if o > self.next {
            self.gaps += 1;
            self.skipped += o - self.next;
            if self.shown.len() < SHOWN {
                self.shown.push(format!(
                    "delivery #{nth}: offset {o} after {}: {} offset(s) skipped",
                    self.next.wrapping_sub(1),
                    o - self.next
                ));
            }
        } else if o < self.next {
            self.repeats += 1;
            if self.shown.len() < SHOWN {
                self.shown.push(format!(
                    "delivery #{nth}: offset {o} again (or backwards) after {}",
                    self.next.wrapping_sub(1)
                ));
            }
            return;
        }
        self.next = o + 1;
        self.last = Some(o);
    }

    fn ok(&self, expected: u64, received: u64) -> bool {
        self.gaps == 0
            && self.repeats == 0
            && self.missing == 0
            && received == expected
            && (expected == 0 || self.first == Some(0))
    }
}

fn consumer(
    id: usize,
    expected: u64,
    s: &StreamSettings,
    ph: &Phase,
    st: &ConStats,
    go: &Barrier,
    epoch: Instant,
) -> Result<()> {
    let connected = (|| -> Result<Conn> {
        let mut conn = Conn::open(&s.uri, &format!("warren-perf stream consumer {id}"))?;
        conn.open_channel(1)?;
        conn.rpc(
            1,
            &Method::BasicQos(BasicQos {
                prefetch_size: 0,
                prefetch_count: s.prefetch,
                global: false,
            }),
            |m| matches!(m, Method::BasicQosOk(_)),
        )?;
        Ok(conn)
    })();
    go.wait();
    let mut conn = connected?;
    let mut args = FieldTable::new();
    args.insert(
        "x-stream-offset",
        FieldValue::LongStr(Bytes::from_static(b"first")),
    );
    conn.rpc(
        1,
        &Method::BasicConsume(BasicConsume {
            ticket: 0,
            queue: s.queue.clone().into(),
            consumer_tag: format!("warren-perf-stream-{id}").into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: args,
        }),
        |m| matches!(m, Method::BasicConsumeOk(_)),
    )?;
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut scanner = Scanner::default();
    let mut ack = AckFrame::default();
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut unacked = 0u64;
    let mut received = 0u64;
    let mut check = Check::default();
    // Deliveries may have come with basic.consume-ok.
    let mut first = !conn.rbuf.is_empty();
    while received < expected {
        if !std::mem::take(&mut first) {
            match conn.read_more() {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if ph.stop.load(Relaxed) {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let before = received;
        let mut err = None;
        loop {
            let ev = match scanner.next(&mut conn.rbuf, conn.frame_max) {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            };
            match ev {
                Event::Msg(m) if m.method_id == 60 => {
                    received += 1;
                    check.see(m.stream_offset, received);
                    unacked += 1;
                    if unacked >= s.multi_ack {
                        out.extend_from_slice(ack.encode(m.tag, true));
                        unacked = 0;
                    }
                }
                Event::Msg(_) => {}
                Event::Method(_, Method::ConnectionClose(c)) => {
                    err = Some(closed("connection", &c));
                    break;
                }
                Event::Method(_, Method::ChannelClose(c)) => {
                    err = Some(channel_closed(&c));
                    break;
                }
                Event::Method(_, Method::BasicCancel(_)) => {
                    err = Some(PerfError::Protocol(
                        "the broker cancelled the consumer".into(),
                    ));
                    break;
                }
                Event::Method(..) => {}
            }
        }
        if received > before {
            st.received.store(received, Relaxed);
            st.last_ns.store(epoch.elapsed().as_nanos() as u64, Relaxed);
        }
        if let Some(e) = err {
            *st.check.lock().unwrap_or_else(|e| e.into_inner()) = check;
            return Err(e);
        }
        if !out.is_empty() {
            conn.stream.write_all(&out)?;
            out.clear();
        }
        if ph.stop.load(Relaxed) {
            break;
        }
    }
    st.done.store(received >= expected, SeqCst);
    *st.check.lock().unwrap_or_else(|e| e.into_inner()) = check;
    conn.close(Duration::from_secs(2));
    Ok(())
}

struct ConsumerResult {
    received: u64,
    secs: f64,
    check: Check,
    ok: bool,
}

struct ReadResult {
    expected: u64,
    consumers: Vec<ConsumerResult>,
    secs: f64,
    broker_cpu: Option<f64>,
    client_cpu: Option<f64>,
    rss: Option<Rss>,
    errors: Vec<String>,
}

fn read_phase(s: &Arc<StreamSettings>, expected: u64) -> Result<ReadResult> {
    let ph = Arc::new(Phase::new());
    let stats: Vec<Arc<ConStats>> = (0..s.consumers).map(|_| Arc::default()).collect();
    let go = Arc::new(Barrier::new(s.consumers + 1));
    let epoch = Instant::now();
    let mut handles = Vec::new();
    for (i, st) in stats.iter().enumerate() {
        let (s2, ph2, st2, go2) = (
            Arc::clone(s),
            Arc::clone(&ph),
            Arc::clone(st),
            Arc::clone(&go),
        );
        handles.push(
            thread::Builder::new()
                .name(format!("stream-con-{i}"))
                .spawn(move || {
                    if let Err(e) = consumer(i, expected, &s2, &ph2, &st2, &go2, epoch) {
                        ph2.fail(&format!("consumer {i}"), &e);
                    }
                })?,
        );
    }
    let sampler = RssSampler::start(s.broker_pid);
    let cpu0 = s.broker_pid.and_then(cpu::process);
    let self0 = cpu::this_process();
    go.wait();
    let t0 = epoch.elapsed().as_nanos() as u64;
    let received = |i: usize| stats.get(i).map_or(0, |c| c.received.load(Relaxed));
    let total = || (0..stats.len()).map(received).sum::<u64>();
    let mut last = (0u64, Instant::now());
    let mut prev: Vec<u64> = vec![0; stats.len()];
    let mut prev_t = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(1);
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        let t = total();
        if t != last.0 {
            last = (t, now);
        } else if now.duration_since(last.1) > s.stall && !ph.stop.load(SeqCst) {
            let mut where_ = String::new();
            for (i, c) in stats.iter().enumerate() {
                let _ = write!(
                    where_,
                    "{}consumer {i} {} of {expected}",
                    if i > 0 { ", " } else { "" },
                    c.received.load(Relaxed)
                );
            }
            ph.fail(
                "read phase",
                &format!(
                    "stalled: no delivery for {:.0} s ({where_})",
                    s.stall.as_secs_f64()
                ),
            );
        }
        if now >= next_report {
            let dt = now.duration_since(prev_t).as_secs_f64();
            let mut rates = String::new();
            for (i, p) in prev.iter_mut().enumerate() {
                let r = received(i);
                let _ = write!(rates, " {:>9.0}", per_sec(r - *p, dt));
                *p = r;
            }
            let rss = s
                .broker_pid
                .and_then(rss_kb)
                .map(|(v, a)| {
                    format!(
                        " | broker RSS {:.1} MiB (anon {:.1})",
                        v as f64 / 1024.0,
                        a as f64 / 1024.0
                    )
                })
                .unwrap_or_default();
            say(
                s,
                &format!(
                    "read {:>5.1} s | msg/s per consumer{rates} | {:.1} % read{rss}",
                    (epoch.elapsed().as_nanos() as u64 - t0) as f64 / 1e9,
                    total() as f64 * 100.0 / (expected as f64 * stats.len() as f64).max(1.0),
                ),
            );
            prev_t = now;
            next_report += Duration::from_secs(1);
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let end = epoch.elapsed().as_nanos() as u64;
    let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let consumers = stats
        .iter()
        .map(|c| {
            let check = c.check.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let received = c.received.load(SeqCst);
            ConsumerResult {
                received,
                secs: c.last_ns.load(SeqCst).saturating_sub(t0) as f64 / 1e9,
                ok: check.ok(expected, received) && c.done.load(SeqCst),
                check,
            }
        })
        .collect();
    Ok(ReadResult {
        expected,
        consumers,
        secs: end.saturating_sub(t0) as f64 / 1e9,
        broker_cpu: used(cpu0, s.broker_pid.and_then(cpu::process)),
        client_cpu: used(self0, cpu::this_process()),
        rss: sampler.map(RssSampler::finish),
        errors: ph.errors(),
    })
}

// ---------------------------------------------------------------- report

fn opt(x: Option<f64>, prec: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.prec$}"),
        _ => "null".into(),
    }
}

fn per_msg_us(cpu: Option<f64>, n: u64) -> Option<f64> {
    cpu.filter(|_| n > 0).map(|c| c * 1e6 / n as f64)
}

/// Run the stream benchmark; returns the process exit code.
pub fn run(s: StreamSettings) -> i32 {
    let s = Arc::new(s);
    match run_inner(&s) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warren-perf stream: {e}");
            if s.json {
                println!(
                    "{{\"mode\":\"stream\",\"failed\":true,\"error\":{}}}",
                    json_str(&e.to_string())
                );
            }
            1
        }
    }
}

fn run_inner(s: &Arc<StreamSettings>) -> Result<i32> {
    say(
        s,
        &format!(
            "warren-perf stream: {} | stream '{}' | {} | {} consumer(s) from first, prefetch {}, ack ×{} (multiple)",
            s.uri,
            s.queue,
            if s.publish {
                format!(
                    "{} publisher(s), {} msgs of {} B, confirms ≤{} in flight each",
                    s.publishers, s.messages, s.size, s.confirm
                )
            } else {
                format!("no publishing, {} msgs expected in the stream", s.messages)
            },
            if s.read { s.consumers } else { 0 },
            s.prefetch,
            s.multi_ack
        ),
    );
    let mut ctl = Conn::open(&s.uri, "warren-perf stream control")?;
    ctl.open_channel(1)?;
    declare(&mut ctl, s, s.publish)?;
    let mut failed = false;
    let mut json = String::from("{\"mode\":\"stream\"");
    let _ = write!(
        json,
        ",\"uri\":{},\"queue\":{},\"publishers\":{},\"messages\":{},\"size\":{},\"confirm\":{},\"consumers\":{},\"prefetch\":{},\"multi_ack\":{}",
        json_str(&s.uri.to_string()),
        json_str(&s.queue),
        s.publishers,
        s.messages,
        s.size,
        s.confirm,
        s.consumers,
        s.prefetch,
        s.multi_ack
    );
    let mut expected = s.messages;
    if s.publish {
        let p = publish_phase(s)?;
        let ok = p.errors.is_empty() && p.confirmed == s.messages && p.nacked == 0;
        failed |= !ok;
        expected = p.confirmed;
        let cpu_us = per_msg_us(p.broker_cpu, p.confirmed + p.nacked);
        let rate = per_sec(p.confirmed + p.nacked, p.secs);
        out!(s, "--- publish ---");
        out!(s,
            "published {} | confirmed {} | nacked {} in {:.2} s = {:.0} msg/s confirmed ({:.2} MB/s of bodies)",
            p.published,
            p.confirmed,
            p.nacked,
            p.secs,
            rate,
            rate * s.size as f64 / 1e6
        );
        if let Some(c) = p.broker_cpu {
            out!(
                s,
                "broker CPU: {c:.2} s ({:.0}% of one core), {} µs per message",
                c / p.secs.max(1e-9) * 100.0,
                opt(cpu_us, 3)
            );
        }
        if let Some(c) = p.client_cpu {
            out!(s, "warren-perf CPU: {c:.2} s");
        }
        if let Some(r) = p.rss {
            out!(s, "{}", r.line());
            let _ = write!(json, ",{}", r.json("pub_"));
        }
        for e in &p.errors {
            out!(s, "FAILED: {e}");
        }
        let _ = write!(
            json,
            ",\"published\":{},\"confirmed\":{},\"nacked\":{},\"publish_s\":{:.3},\"publish_rate\":{:.1},\"pub_broker_cpu_s\":{},\"pub_broker_cpu_us_per_msg\":{},\"pub_client_cpu_s\":{},\"publish_ok\":{ok}",
            p.published,
            p.confirmed,
            p.nacked,
            p.secs,
            rate,
            opt(p.broker_cpu, 2),
            opt(cpu_us, 3),
            opt(p.client_cpu, 2),
        );
    }
    if s.read && !failed {
        let r = read_phase(s, expected)?;
        let deliveries: u64 = r.consumers.iter().map(|c| c.received).sum();
        let cpu_us = per_msg_us(r.broker_cpu, deliveries);
        let rates: Vec<f64> = r
            .consumers
            .iter()
            .map(|c| per_sec(c.received, c.secs))
            .collect();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let all_ok = r.errors.is_empty() && r.consumers.iter().all(|c| c.ok);
        failed |= !all_ok;
        out!(
            s,
            "--- read ({} consumers from first) ---",
            r.consumers.len()
        );
        for (i, (c, rate)) in r.consumers.iter().zip(&rates).enumerate() {
            let ck = &c.check;
            out!(
                s,
                "consumer {i}: {} of {} in {:.2} s = {rate:.0} msg/s | offsets {}..{} | {}",
                c.received,
                r.expected,
                c.secs,
                ck.first.map_or("-".into(), |o| o.to_string()),
                ck.last.map_or("-".into(), |o| o.to_string()),
                if c.ok {
                    "contiguous and complete".to_string()
                } else {
                    format!(
                        "NOT OK: {} gap(s) ({} offsets skipped), {} repeated, {} without offset",
                        ck.gaps, ck.skipped, ck.repeats, ck.missing
                    )
                }
            );
            for a in &ck.shown {
                out!(s, "    {a}");
            }
        }
        out!(s,
            "all consumers: {deliveries} deliveries in {:.2} s = {:.0} msg/s; slowest consumer {min:.0} msg/s",
            r.secs,
            per_sec(deliveries, r.secs)
        );
        if let Some(c) = r.broker_cpu {
            out!(
                s,
                "broker CPU: {c:.2} s ({:.0}% of one core), {} µs per delivery",
                c / r.secs.max(1e-9) * 100.0,
                opt(cpu_us, 3)
            );
        }
        if let Some(c) = r.client_cpu {
            out!(s, "warren-perf CPU: {c:.2} s");
        }
        if let Some(rss) = r.rss {
            out!(s, "{}", rss.line());
            let _ = write!(json, ",{}", rss.json("read_"));
        }
        for e in &r.errors {
            out!(s, "FAILED: {e}");
        }
        let list = |f: &dyn Fn(usize, &ConsumerResult) -> String| {
            r.consumers
                .iter()
                .enumerate()
                .map(|(i, c)| f(i, c))
                .collect::<Vec<_>>()
                .join(",")
        };
        let _ = write!(
            json,
            ",\"expected\":{},\"read_s\":{:.3},\"deliveries\":{deliveries},\"read_rates\":[{}],\"read_min_rate\":{},\"read_total_rate\":{:.1},\"read_broker_cpu_s\":{},\"read_broker_cpu_us_per_msg\":{},\"read_client_cpu_s\":{},\"read_gaps\":[{}],\"read_repeats\":[{}],\"read_ok\":{all_ok}",
            r.expected,
            r.secs,
            rates
                .iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(","),
            opt(Some(min), 1),
            per_sec(deliveries, r.secs),
            opt(r.broker_cpu, 2),
            opt(cpu_us, 3),
            opt(r.client_cpu, 2),
            list(&|_, c| c.check.gaps.to_string()),
            list(&|_, c| c.check.repeats.to_string()),
        );
        let errors: Vec<String> = r
            .errors
            .iter()
            .cloned()
            .chain(r.consumers.iter().enumerate().flat_map(|(i, c)| {
                c.check
                    .shown
                    .iter()
                    .map(move |a| format!("consumer {i}: {a}"))
            }))
            .collect();
        if !errors.is_empty() {
            let _ = write!(
                json,
                ",\"read_errors\":[{}]",
                errors
                    .iter()
                    .map(|e| json_str(e))
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    }
    if !s.keep {
        if let Err(e) = ctl.rpc(
            1,
            &Method::QueueDelete(QueueDelete {
                queue: s.queue.clone().into(),
                ..Default::default()
            }),
            |m| matches!(m, Method::QueueDeleteOk(_)),
        ) {
            eprintln!("warren-perf stream: cannot delete the stream: {e}");
        }
    }
    ctl.close(Duration::from_secs(2));
    let _ = write!(json, ",\"failed\":{failed}}}");
    if s.json {
        println!("{json}");
    }
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::Check;

    #[test]
    fn check_finds_gaps_and_repeats() {
        let mut c = Check::default();
        for (n, o) in [0u64, 1, 2, 3].into_iter().enumerate() {
            c.see(Some(o), n as u64 + 1);
        }
        assert!(c.ok(4, 4));
        assert!(!c.ok(5, 4));
        let mut c = Check::default();
        for (n, o) in [0u64, 1, 5, 5, 6].into_iter().enumerate() {
            c.see(Some(o), n as u64 + 1);
        }
        assert_eq!((c.gaps, c.skipped, c.repeats), (1, 3, 1));
        assert_eq!(c.last, Some(6));
        assert_eq!(c.shown.len(), 2);
        assert!(!c.ok(7, 5));
        let mut c = Check::default();
        c.see(None, 1);
        assert_eq!(c.missing, 1);
    }
}
