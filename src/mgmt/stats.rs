//! The management side's own state: who we are (node name, start time,
//! listeners), and samples of the core's counters from which message rates
//! are computed. The core only counts (an integer increment on the hot
//! path); rates are differences between the counters now and a sample taken
//! about five seconds earlier.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::amqp::Core;
use crate::broker::{ConnId, QueueId};
use crate::engine::Counters;

/// How often the global counters are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Rates are averaged over about this long.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

/// One queue's counters at a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueSample {
    /// Messages published into the queue.
    pub publish: u64,
    /// Deliveries to consumers.
    pub deliver: u64,
    /// basic.get deliveries.
    pub get: u64,
    /// Acknowledgements.
    pub ack: u64,
    /// Redeliveries.
    pub redeliver: u64,
    /// Ready + unacknowledged messages.
    pub messages: u64,
    /// Ready messages.
    pub ready: u64,
    /// Unacknowledged messages.
    pub unacked: u64,
}

impl QueueSample {
    /// The queue's counters now.
    pub fn of(q: &crate::broker::queue::Queue) -> QueueSample {
        // A stream's messages are those its log holds; its deliveries
        // hold none (RabbitMQ shows 0 unacknowledged).
        let (ready, unacked) = match &q.stream {
            Some(s) => (s.log.message_count(), 0),
            None => (q.ready.len(), q.unacked as u64),
        };
        QueueSample {
            publish: q.stats.publish,
            deliver: q.stats.deliver,
            get: q.stats.get,
            ack: q.stats.ack,
            redeliver: q.stats.redeliver,
            messages: ready + unacked,
            ready,
            unacked,
        }
    }
}

/// Global counters and queue totals at a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalSample {
    /// The core's counters.
    pub counters: Counters,
    /// Ready + unacked messages in all queues.
    pub messages: u64,
    /// Ready messages.
    pub ready: u64,
    /// Unacked messages.
    pub unacked: u64,
}

impl GlobalSample {
    /// The core's totals now (walks the queues once).
    pub fn of(core: &Core) -> GlobalSample {
        let (mut ready, mut unacked) = (0u64, 0u64);
        for (_, q) in core.engine.broker.queues.iter() {
            ready += q.ready.len();
            unacked += q.unacked as u64;
        }
        GlobalSample {
            counters: core.engine.counters,
            messages: ready + unacked,
            ready,
            unacked,
        }
    }
}

/// Rate per second of a counter between an old value and now.
pub fn per_sec(now: u64, old: u64, dt: Duration) -> f64 {
    if dt.is_zero() {
        return 0.0;
    }
    now as f64 / dt.as_secs_f64() - old as f64 / dt.as_secs_f64()
}

/// Management state kept by the server next to the core.
#[derive(Debug)]
pub struct Mgmt {
    /// When the broker started.
    pub started: Instant,
    /// RabbitMQ-style node name, `warren@host`.
    pub node: String,
    /// AMQP listener addresses.
    pub amqp_addrs: Vec<SocketAddr>,
    /// AMQPS (TLS) listener addresses.
    pub amqps_addrs: Vec<SocketAddr>,
    /// The management listener's address.
    pub http_addr: Option<SocketAddr>,
    /// The HTTPS management listener's address.
    pub https_addr: Option<SocketAddr>,
    /// The TLS configurations in use (AMQPS and HTTPS): the server starts
    /// new sessions with them, and `POST /api/reload-certificates` (as
    /// SIGHUP) reads the files again.
    pub tls: crate::tls::Certificates,
    /// Why the AMQP listeners cannot accept connections now (out of file
    /// descriptors, ...), set by the server while it lasts: the health
    /// checks fail with it.
    pub accept_error: Option<String>,
    /// `POST /api/shutdown` asked the broker to stop (the server loop then
    /// stops as on SIGTERM).
    pub shutdown_requested: bool,
    /// The Prometheus metrics listener's address.
    pub prometheus_addr: Option<SocketAddr>,
    /// Global samples, oldest first, spanning a little over the rate window.
    global: VecDeque<(Instant, GlobalSample)>,
    /// Per-queue samples taken at `queues_at` (the older of two).
    queues_old: HashMap<QueueId, QueueSample>,
    /// The newer per-queue samples, taken at `queues_new_at`.
    queues_new: HashMap<QueueId, QueueSample>,
    queues_at: Instant,
    queues_new_at: Instant,
    /// Per-connection (recv_oct, send_oct) samples, like the queues'.
    conns_old: HashMap<ConnId, (u64, u64)>,
    conns_new: HashMap<ConnId, (u64, u64)>,
    next_sample: Instant,
}

fn hostname() -> String {
    let name = crate::sys::hostname().unwrap_or_default();
    match name.split('.').next() {
        Some(short) if !short.is_empty() => short.to_string(),
        _ => "localhost".into(),
    }
}

impl Mgmt {
    /// Fresh state at start-up.
    pub fn new(amqp_addrs: Vec<SocketAddr>, http_addr: Option<SocketAddr>) -> Mgmt {
        let now = Instant::now();
        let hostname = hostname();
        Mgmt {
            started: now,
            node: format!("warren@{hostname}"),
            amqp_addrs,
            amqps_addrs: Vec::new(),
            http_addr,
            https_addr: None,
            tls: crate::tls::Certificates::default(),
            accept_error: None,
            shutdown_requested: false,
            prometheus_addr: None,
            global: VecDeque::new(),
            queues_old: HashMap::new(),
            queues_new: HashMap::new(),
            queues_at: now,
            queues_new_at: now.checked_sub(RATE_WINDOW).unwrap_or(now),
            conns_old: HashMap::new(),
            conns_new: HashMap::new(),
            next_sample: now,
        }
    }

    /// Take samples when due (called from the server loop's timer pass).
    pub fn tick(&mut self, core: &Core, now: Instant) {
        if now < self.next_sample {
            return;
        }
        self.next_sample = now + SAMPLE_EVERY;
        self.global.push_back((now, GlobalSample::of(core)));
        while self.global.len() > 2
            && self
                .global
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.global.pop_front();
        }
        if now.saturating_duration_since(self.queues_new_at) >= RATE_WINDOW {
            self.queues_old = std::mem::take(&mut self.queues_new);
            self.queues_at = self.queues_new_at;
            self.queues_new = core
                .engine
                .broker
                .queues
                .iter()
                .map(|(_, q)| (q.id, QueueSample::of(q)))
                .collect();
            self.conns_old = std::mem::take(&mut self.conns_new);
            self.conns_new = core
                .conns
                .iter()
                .map(|(_, c)| (c.id, (c.recv_oct, c.send_oct)))
                .collect();
            self.queues_new_at = now;
        }
    }

    /// The oldest global sample within the rate window, and its age.
    pub fn global_base(&self, now: Instant) -> Option<(&GlobalSample, Duration)> {
        self.global
            .front()
            .map(|(t, s)| (s, now.saturating_duration_since(*t)))
    }

    /// A queue's older sample and its age.
    pub fn queue_base(&self, id: QueueId, now: Instant) -> Option<(&QueueSample, Duration)> {
        let (map, at) = if self.queues_old.contains_key(&id) {
            (&self.queues_old, self.queues_at)
        } else {
            (&self.queues_new, self.queues_new_at)
        };
        map.get(&id).map(|s| (s, now.saturating_duration_since(at)))
    }

    /// A connection's older byte counts and their age.
    pub fn conn_base(&self, id: ConnId, now: Instant) -> Option<((u64, u64), Duration)> {
        let (map, at) = if self.conns_old.contains_key(&id) {
            (&self.conns_old, self.queues_at)
        } else {
            (&self.conns_new, self.queues_new_at)
        };
        map.get(&id)
            .map(|s| (*s, now.saturating_duration_since(at)))
    }

    /// Milliseconds since start.
    pub fn uptime_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }
}

/// Resident set size of this process in bytes (from /proc/self/statm).
pub fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * crate::sys::page_size()
}

/// Resident set size and its peak (VmRSS, VmHWM) of process `pid` in
/// bytes, from /proc/PID/status; zeros if it cannot be read.
pub fn rss_and_peak(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Open file descriptors of this process.
pub fn fd_used() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// The process's file descriptor limit.
pub fn fd_total() -> u64 {
    crate::sys::nofile_limit().unwrap_or(1024)
}
