//! The broker benchmark: topology setup, publisher and consumer threads
//! (one connection each), the once-a-second report and the final summary.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren::codec::{
    BasicConsume, BasicQos, ConfirmSelect, ExchangeDeclare, ExchangeDelete, FieldTable, Method,
    QueueBind, QueueDeclare, QueueDelete, QueuePurge,
};

use super::client::{channel_closed, closed, is_timeout, Conn, PerfError, Result};
use super::cpu;
use super::hist::Histogram;
use super::msg::{AckFrame, Event, Scanner, Template, SEQ_ID_SHIFT};
use super::uri::Uri;

/// Publishers fill a buffer of about this size before each `write`.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Everything the command line decides.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker address and credentials.
    pub uri: Uri,
    /// Publisher threads/connections.
    pub publishers: usize,
    /// Consumer threads/connections.
    pub consumers: usize,
    /// Queues `<prefix><i>`.
    pub queues: usize,
    /// Queue name prefix.
    pub queue_prefix: String,
    /// Exchange name ("" = the default exchange).
    pub exchange: String,
    /// direct, fanout or topic.
    pub exchange_type: String,
    /// Fixed routing/binding key, if given.
    pub routing_key: Option<String>,
    /// Body size in bytes (>= 16).
    pub size: usize,
    /// delivery-mode 2.
    pub persistent: bool,
    /// Publisher confirms with at most this many outstanding (0 = off).
    pub confirm: u64,
    /// Manual acks.
    pub ack: bool,
    /// basic.qos prefetch count (0 = none).
    pub prefetch: u16,
    /// Ack every N messages with multiple=true (1 = each one).
    pub multi_ack: u64,
    /// Messages per publisher (0 = unlimited).
    pub count: u64,
    /// Publishing time limit.
    pub duration: Option<Duration>,
    /// Messages per second per publisher (0 = unlimited).
    pub rate: f64,
    /// Declare queues (and the exchange) durable.
    pub durable_queues: bool,
    /// Queue arguments (`--queue-arg x-max-priority=10`).
    pub queue_args: FieldTable,
    /// One message in flight at a time.
    pub latency: bool,
    /// Final summary as one JSON line.
    pub json: bool,
    /// Do not delete queues and exchange at the end.
    pub keep: bool,
    /// Messages already queued to consume (the queues are not purged).
    pub drain: u64,
    /// Process id of the broker, to report its CPU time.
    pub broker_pid: Option<u32>,
}

impl Settings {
    /// Name of queue `i`.
    pub fn queue_name(&self, i: usize) -> String {
        format!("{}{}", self.queue_prefix, i)
    }

    fn fanout(&self) -> bool {
        self.exchange_type == "fanout"
    }

    /// True when each message reaches every queue.
    fn broadcast(&self) -> bool {
        !self.exchange.is_empty() && (self.fanout() || self.routing_key.is_some())
    }

    /// Routing key publisher `p` uses.
    pub fn publish_key(&self, p: usize) -> String {
        let q = self.queue_name(p % self.queues);
        if self.exchange.is_empty() {
            q
        } else if let Some(k) = &self.routing_key {
            k.clone()
        } else if self.fanout() {
            String::new()
        } else if self.exchange_type == "topic" {
            format!("{q}.msg")
        } else {
            q
        }
    }

    /// Binding key of queue `i`.
    pub fn binding_key(&self, i: usize) -> String {
        let q = self.queue_name(i);
        if let Some(k) = &self.routing_key {
            k.clone()
        } else if self.fanout() {
            String::new()
        } else if self.exchange_type == "topic" {
            format!("{q}.*")
        } else {
            q
        }
    }

    /// Deliveries the consumers should get: what was queued before
    /// (`--drain`) and each publisher's messages times its fan-out.
    fn expected(&self, pstats: &[Arc<PubStats>]) -> u64 {
        self.drain
            + pstats
                .iter()
                .enumerate()
                .map(|(i, p)| p.published.load(Relaxed) * self.fan(i))
                .sum::<u64>()
    }

    /// How many consumed deliveries one message from publisher `p` makes.
    fn fan(&self, p: usize) -> u64 {
        let consumed = |q: usize| self.consumers > q || self.consumers >= self.queues;
        if self.broadcast() {
            (0..self.queues).filter(|&q| consumed(q)).count() as u64
        } else {
            consumed(p % self.queues) as u64
        }
    }

    fn declares_exchange(&self) -> bool {
        !self.exchange.is_empty() && !self.exchange.starts_with("amq.")
    }
}

/// State all threads share.
pub struct Shared {
    /// Timestamps in bodies are nanoseconds since this instant.
    pub epoch: Instant,
    stop_publishing: AtomicBool,
    stop_consuming: AtomicBool,
    failed: AtomicBool,
    ready: AtomicUsize,
    go: Mutex<bool>,
    go_cv: Condvar,
    finished: AtomicUsize,
    publishers_done: AtomicUsize,
    /// Latency mode: messages the consumer has received.
    lat_received: AtomicU64,
    lat_publisher: Mutex<Option<Thread>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            stop_publishing: AtomicBool::new(false),
            stop_consuming: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            go: Mutex::new(false),
            go_cv: Condvar::new(),
            finished: AtomicUsize::new(0),
            publishers_done: AtomicUsize::new(0),
            lat_received: AtomicU64::new(0),
            lat_publisher: Mutex::new(None),
        }
    }

    /// Nanoseconds since the epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn fail(&self, who: &str, e: &PerfError) {
        eprintln!("warren-perf: {who}: {e}");
        self.failed.store(true, SeqCst);
        self.stop_publishing.store(true, SeqCst);
        self.stop_consuming.store(true, SeqCst);
        self.go();
    }

    fn ready_and_wait(&self) {
        self.ready.fetch_add(1, SeqCst);
        let mut g = lock(&self.go);
        while !*g {
            g = self.go_cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn go(&self) {
        *lock(&self.go) = true;
        self.go_cv.notify_all();
    }

    fn lat_notify(&self, n: u64) {
        self.lat_received.fetch_add(n, SeqCst);
        if let Some(t) = lock(&self.lat_publisher).as_ref() {
            t.unpark();
        }
    }
}

/// Per-publisher counters (own cache lines).
#[repr(align(128))]
#[derive(Default)]
pub struct PubStats {
    published: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    /// Time of the last write, ns since the epoch.
    end_ns: AtomicU64,
}

/// Per-consumer counters and latency histogram.
#[repr(align(128))]
#[derive(Default)]
pub struct ConStats {
    consumed: AtomicU64,
    bytes: AtomicU64,
    out_of_order: AtomicU64,
    /// Deliveries with the redelivered bit set.
    redelivered: AtomicU64,
    /// Deliveries whose tag was not the previous one + 1.
    tag_gaps: AtomicU64,
    /// Deliveries beyond the prefetch window.
    over_prefetch: AtomicU64,
    /// Time of the last delivery, ns since the epoch.
    last_ns: AtomicU64,
    /// Latencies since the reporter last emptied it.
    hist: Mutex<Histogram>,
}

/// Copies a template into a write buffer, numbers and stamps the copies.
pub struct Sender {
    tpl: Template,
    one: Vec<u8>,
    buf: Vec<u8>,
    per_batch: u64,
    seq_base: u64,
    /// Messages sent so far.
    pub seq: u64,
}

impl Sender {
    /// A sender for publisher `id`.
    pub fn new(tpl: Template, id: usize) -> Sender {
        let per_batch = (BATCH_BYTES / tpl.bytes.len()).max(1) as u64;
        Sender {
            one: tpl.bytes.clone(),
            buf: Vec::with_capacity(BATCH_BYTES + tpl.bytes.len()),
            tpl,
            per_batch,
            seq_base: (id as u64) << SEQ_ID_SHIFT,
            seq: 0,
        }
    }

    /// Most messages one write carries.
    pub fn per_batch(&self) -> u64 {
        self.per_batch
    }

    /// Send `n` (<= per_batch) messages in one write, stamped `now()` just
    /// before the write.
    pub fn send(
        &mut self,
        w: &mut impl Write,
        n: u64,
        now: impl Fn() -> u64,
    ) -> std::io::Result<()> {
        if n <= 1 {
            self.tpl.set_seq(&mut self.one, self.seq_base | self.seq);
            self.tpl.set_time(&mut self.one, now());
            self.seq += 1;
            return w.write_all(&self.one);
        }
        let len = self.tpl.bytes.len();
        self.buf.clear();
        for k in 0..n {
            self.buf.extend_from_slice(&self.tpl.bytes);
            let at = k as usize * len;
            if let Some(m) = self.buf.get_mut(at..) {
                self.tpl.set_seq(m, self.seq_base | (self.seq + k));
            }
        }
        let t = now();
        for m in self.buf.chunks_exact_mut(len) {
            self.tpl.set_time(m, t);
        }
        self.seq += n;
        w.write_all(&self.buf)
    }
}

/// Publisher confirms bookkeeping: tags below `base` are all settled;
/// `above` holds settled tags above it (individual out-of-order acks).
#[derive(Default)]
pub(super) struct ConfirmTracker {
    base: u64,
    above: BTreeSet<u64>,
}

impl ConfirmTracker {
    pub(super) fn new() -> ConfirmTracker {
        ConfirmTracker {
            base: 1,
            above: BTreeSet::new(),
        }
    }

    /// Settle `tag` (and all before it if `multiple`); returns how many tags
    /// this newly settled.
    pub(super) fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        if tag < self.base {
            return 0;
        }
        let n = if multiple {
            let rest = self.above.split_off(&(tag + 1));
            let already = std::mem::replace(&mut self.above, rest).len() as u64;
            let n = tag + 1 - self.base - already;
            self.base = tag + 1;
            n
        } else if self.above.insert(tag) {
            1
        } else {
            0
        };
        while self.above.first() == Some(&self.base) {
            self.above.pop_first();
            self.base += 1;
        }
        n
    }
}

#[derive(Default)]
pub(super) struct ConfirmWait {
    lock: Mutex<()>,
    cv: Condvar,
    waiting: AtomicBool,
    pub(super) closing: AtomicBool,
}

impl ConfirmWait {
    /// Block until `ok()` or the timeout.
    pub(super) fn wait_until(&self, ok: impl Fn() -> bool, timeout: Duration) {
        let g = lock(&self.lock);
        self.waiting.store(true, SeqCst);
        if !ok() {
            let _ = self.cv.wait_timeout(g, timeout);
        }
    }

    pub(super) fn notify(&self) {
        if self.waiting.swap(false, SeqCst) {
            let _g = lock(&self.lock);
            self.cv.notify_all();
        }
    }
}

fn pub_reader(id: usize, conn: Conn, sh: Arc<Shared>, st: Arc<PubStats>, cw: Arc<ConfirmWait>) {
    if let Err(e) = pub_confirms(conn, &st, &cw) {
        if !cw.closing.load(SeqCst) {
            sh.fail(&format!("publisher {id}"), &e);
        }
    }
    cw.notify();
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

fn publisher(id: usize, s: &Settings, sh: &Arc<Shared>, st: &Arc<PubStats>) -> Result<()> {
    let mut conn = Conn::open(&s.uri, &format!("warren-perf publisher {id}"))?;
    conn.open_channel(1)?;
    if s.confirm > 0 {
        conn.rpc(
            1,
            &Method::ConfirmSelect(ConfirmSelect { nowait: false }),
            |m| matches!(m, Method::ConfirmSelectOk(_)),
        )?;
    }
    let tpl = Template::publish(
        &s.exchange,
        &s.publish_key(id),
        s.size,
        s.persistent,
        conn.frame_max,
    );
    let mut w = conn.stream.try_clone()?;
    let cw = Arc::new(ConfirmWait::default());
    let reader = {
        let (sh, st, cw) = (Arc::clone(sh), Arc::clone(st), Arc::clone(&cw));
        thread::Builder::new()
            .name(format!("pub-reader-{id}"))
            .spawn(move || pub_reader(id, conn, sh, st, cw))?
    };
    if s.latency {
        *lock(&sh.lat_publisher) = Some(thread::current());
    }
    let mut tx = Sender::new(tpl, id);
    let settled = || st.confirmed.load(SeqCst) + st.nacked.load(SeqCst);

    sh.ready_and_wait();
    let t0 = Instant::now();
    let result = loop {
        if sh.stop_publishing.load(Relaxed) || (s.count > 0 && tx.seq >= s.count) {
            break Ok(());
        }
        let mut n = tx.per_batch();
        if s.count > 0 {
            n = n.min(s.count - tx.seq);
        }
        if s.latency {
            n = 1;
        }
        if s.rate > 0.0 {
            let due = (t0.elapsed().as_secs_f64() * s.rate) as u64 + 1;
            if tx.seq >= due {
                let at = t0 + Duration::from_secs_f64(tx.seq as f64 / s.rate);
                let wait = at.saturating_duration_since(Instant::now());
                thread::sleep(wait.min(Duration::from_millis(50)));
                continue;
            }
            n = n.min(due - tx.seq);
        }
        if s.confirm > 0 {
            let outstanding = tx.seq - settled();
            if outstanding >= s.confirm {
                let seq = tx.seq;
                cw.wait_until(
                    || seq - settled() < s.confirm || sh.stop_publishing.load(Relaxed),
                    Duration::from_millis(100),
                );
                continue;
            }
            n = n.min(s.confirm - outstanding);
        }
        if let Err(e) = tx.send(&mut w, n, || sh.now_ns()) {
            // Give the reader a moment to report the broker's reason.
            thread::sleep(Duration::from_millis(200));
            break Err(e.into());
        }
        st.published.fetch_add(n, Relaxed);
        st.end_ns.store(sh.now_ns(), Relaxed);
        if s.latency {
            while sh.lat_received.load(SeqCst) < tx.seq && !sh.stop_publishing.load(Relaxed) {
                thread::park_timeout(Duration::from_millis(50));
            }
        }
    };
    if result.is_ok() && s.confirm > 0 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while settled() < tx.seq && Instant::now() < deadline && !reader.is_finished() {
            let seq = tx.seq;
            cw.wait_until(|| settled() >= seq, Duration::from_millis(50));
        }
    }
    sh.publishers_done.fetch_add(1, SeqCst);
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

fn consumer(id: usize, s: &Settings, sh: &Shared, st: &ConStats) -> Result<()> {
    let mut conn = Conn::open(&s.uri, &format!("warren-perf consumer {id}"))?;
    conn.open_channel(1)?;
    if s.prefetch > 0 {
        conn.rpc(
            1,
            &Method::BasicQos(BasicQos {
                prefetch_size: 0,
                prefetch_count: s.prefetch,
                global: false,
            }),
            |m| matches!(m, Method::BasicQosOk(_)),
        )?;
    }
    conn.rpc(
        1,
        &Method::BasicConsume(BasicConsume {
            ticket: 0,
            queue: s.queue_name(id % s.queues).into(),
            consumer_tag: format!("warren-perf-{id}").into(),
            no_local: false,
            no_ack: !s.ack,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::new(),
        }),
        |m| matches!(m, Method::BasicConsumeOk(_)),
    )?;
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut scanner = Scanner::default();
    let mut ack = AckFrame::default();
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut unacked = 0u64;
    // Sanity checks on the broker: delivery tags on a channel are 1, 2, 3…;
    // with a prefetch, no more than that many unacked at a time (counted
    // against the acks already written, so never a false alarm).
    let (mut last_tag, mut acked_written, mut acked_pending) = (0u64, 0u64, 0u64);
    let mut next_seq = vec![0u64; s.publishers.max(1)];
    let seq_mask = (1u64 << SEQ_ID_SHIFT) - 1;

    sh.ready_and_wait();
    // Deliveries may have come with basic.consume-ok (read with it): scan
    // them before waiting for more.
    let mut first = !conn.rbuf.is_empty();
    loop {
        if !std::mem::take(&mut first) {
            match conn.read_more() {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if sh.stop_consuming.load(Relaxed) {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let now = sh.now_ns();
        let (mut n, mut bytes, mut ooo, mut tag_gaps, mut over) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut redelivered = 0u64;
        let mut err = None;
        {
            let mut h = lock(&st.hist);
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
                    Event::Msg(m) => {
                        n += 1;
                        bytes += m.size;
                        if m.redelivered {
                            redelivered += 1;
                        }
                        if let Some((t, seq)) = m.stamp {
                            h.record(now.saturating_sub(t));
                            let p = (seq >> SEQ_ID_SHIFT) as usize;
                            if let Some(e) = next_seq.get_mut(p) {
                                if seq & seq_mask < *e {
                                    // a requeued message may legitimately
                                    // come back late
                                    ooo += !m.redelivered as u64;
                                } else {
                                    *e = (seq & seq_mask) + 1;
                                }
                            }
                        }
                        if m.method_id == 60 {
                            if m.tag != last_tag + 1 {
                                tag_gaps += 1;
                            }
                            last_tag = m.tag;
                            if s.ack && s.prefetch > 0 && m.tag - acked_written > s.prefetch.into()
                            {
                                over += 1;
                            }
                            if s.ack {
                                unacked += 1;
                                if unacked >= s.multi_ack {
                                    out.extend_from_slice(ack.encode(m.tag, s.multi_ack > 1));
                                    acked_pending = m.tag;
                                    unacked = 0;
                                }
                            }
                        }
                    }
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
        }
        if n > 0 {
            st.consumed.fetch_add(n, Relaxed);
            st.bytes.fetch_add(bytes, Relaxed);
            st.last_ns.store(now, Relaxed);
            if ooo > 0 {
                st.out_of_order.fetch_add(ooo, Relaxed);
            }
            if redelivered > 0 {
                st.redelivered.fetch_add(redelivered, Relaxed);
            }
            if tag_gaps > 0 {
                st.tag_gaps.fetch_add(tag_gaps, Relaxed);
            }
            if over > 0 {
                st.over_prefetch.fetch_add(over, Relaxed);
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        if !out.is_empty() {
            conn.stream.write_all(&out)?;
            out.clear();
            acked_written = acked_pending;
        }
        if n > 0 && s.latency {
            sh.lat_notify(n);
        }
        if sh.stop_consuming.load(Relaxed) {
            break;
        }
    }
    conn.close(Duration::from_secs(2));
    Ok(())
}

fn declare(ctl: &mut Conn, s: &Settings) -> Result<()> {
    if s.declares_exchange() {
        ctl.rpc(
            1,
            &Method::ExchangeDeclare(ExchangeDeclare {
                exchange: s.exchange.clone().into(),
                kind: s.exchange_type.clone().into(),
                durable: s.durable_queues,
                ..Default::default()
            }),
            |m| matches!(m, Method::ExchangeDeclareOk(_)),
        )?;
    }
    for i in 0..s.queues {
        let queue: Bytes = s.queue_name(i).into();
        ctl.rpc(
            1,
            &Method::QueueDeclare(QueueDeclare {
                queue: queue.clone(),
                durable: s.durable_queues,
                arguments: s.queue_args.clone(),
                ..Default::default()
            }),
            |m| matches!(m, Method::QueueDeclareOk(_)),
        )?;
        if s.drain == 0 {
            ctl.rpc(
                1,
                &Method::QueuePurge(QueuePurge {
                    ticket: 0,
                    queue: queue.clone(),
                    nowait: false,
                }),
                |m| matches!(m, Method::QueuePurgeOk(_)),
            )?;
        }
        if !s.exchange.is_empty() {
            ctl.rpc(
                1,
                &Method::QueueBind(QueueBind {
                    queue,
                    exchange: s.exchange.clone().into(),
                    routing_key: s.binding_key(i).into(),
                    ..Default::default()
                }),
                |m| matches!(m, Method::QueueBindOk(_)),
            )?;
        }
    }
    Ok(())
}

fn teardown(ctl: &mut Conn, s: &Settings) -> Result<()> {
    for i in 0..s.queues {
        ctl.rpc(
            1,
            &Method::QueueDelete(QueueDelete {
                queue: s.queue_name(i).into(),
                ..Default::default()
            }),
            |m| matches!(m, Method::QueueDeleteOk(_)),
        )?;
    }
    if s.declares_exchange() {
        ctl.rpc(
            1,
            &Method::ExchangeDelete(ExchangeDelete {
                exchange: s.exchange.clone().into(),
                ..Default::default()
            }),
            |m| matches!(m, Method::ExchangeDeleteOk(_)),
        )?;
    }
    Ok(())
}

/// Latency summary in microseconds.
pub struct LatencyUs {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl LatencyUs {
    /// Summarise a nanosecond histogram.
    pub fn of(h: &Histogram) -> LatencyUs {
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencyUs {
            count: h.count(),
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.quantile(0.5)),
            p95: us(h.quantile(0.95)),
            p99: us(h.quantile(0.99)),
            p999: us(h.quantile(0.999)),
            max: us(h.max()),
        }
    }

    /// As a JSON object.
    pub fn json(&self) -> String {
        format!(
            "{{\"count\":{},\"min\":{:.1},\"mean\":{:.1},\"p50\":{:.1},\"p95\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}}",
            self.count, self.min, self.mean, self.p50, self.p95, self.p99, self.p999, self.max
        )
    }

    /// As one human-readable line.
    pub fn line(&self) -> String {
        format!(
            "min {:.0} | p50 {:.0} | p95 {:.0} | p99 {:.0} | p99.9 {:.0} | max {:.0} µs ({} samples, mean {:.0} µs)",
            self.min, self.p50, self.p95, self.p99, self.p999, self.max, self.count, self.mean
        )
    }
}

/// Escape a string for JSON.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A rate, tolerating a zero interval.
pub fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    published: u64,
    confirmed: u64,
    nacked: u64,
    consumed: u64,
    bytes: u64,
}

fn totals(ps: &[Arc<PubStats>], cs: &[Arc<ConStats>]) -> Totals {
    let mut t = Totals::default();
    for p in ps {
        t.published += p.published.load(Relaxed);
        t.confirmed += p.confirmed.load(Relaxed);
        t.nacked += p.nacked.load(Relaxed);
    }
    for c in cs {
        t.consumed += c.consumed.load(Relaxed);
        t.bytes += c.bytes.load(Relaxed);
    }
    t
}

fn spawn<F: FnOnce() -> Result<()> + Send + 'static>(
    name: String,
    sh: &Arc<Shared>,
    f: F,
) -> std::io::Result<JoinHandle<()>> {
    let sh = Arc::clone(sh);
    thread::Builder::new().name(name.clone()).spawn(move || {
        if let Err(e) = f() {
            sh.fail(&name, &e);
        }
        sh.finished.fetch_add(1, SeqCst);
    })
}

/// Run the benchmark; returns the process exit code.
pub fn run(s: Settings) -> i32 {
    match run_inner(s) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warren-perf: {e}");
            1
        }
    }
}

fn describe(s: &Settings) -> String {
    let ex = if s.exchange.is_empty() {
        "default exchange".to_string()
    } else {
        format!("{} exchange '{}'", s.exchange_type, s.exchange)
    };
    let limit = match (s.count, s.duration) {
        (0, None) => "until Ctrl-C".to_string(),
        (0, Some(d)) => format!("{} s", d.as_secs_f64()),
        (c, None) => format!("{c} msgs/publisher"),
        (c, Some(d)) => format!("{c} msgs/publisher or {} s", d.as_secs_f64()),
    };
    format!(
        "warren-perf: {} | {} publisher(s) → {ex} → {} queue(s) → {} consumer(s) | {} B{}{}{} | {}{}{} | {limit}",
        s.uri,
        s.publishers,
        s.queues,
        s.consumers,
        s.size,
        if s.persistent { ", persistent" } else { "" },
        if s.durable_queues { ", durable queues" } else { "" },
        if s.confirm > 0 { format!(", confirms ≤{} in flight", s.confirm) } else { String::new() },
        if s.ack {
            if s.multi_ack > 1 { format!("manual ack ×{} (multiple)", s.multi_ack) } else { "manual ack".into() }
        } else {
            "no-ack".into()
        },
        if s.prefetch > 0 { format!(", prefetch {}", s.prefetch) } else { String::new() },
        if s.latency { ", latency mode (1 in flight)".to_string() } else if s.rate > 0.0 { format!(", {} msg/s/publisher", s.rate) } else { String::new() },
    )
}

fn run_inner(s: Settings) -> Result<i32> {
    let s = Arc::new(s);
    let sh = Arc::new(Shared::new());
    let sigint = Arc::new(AtomicBool::new(false));
    // A first Ctrl-C ends the run (with a summary), a second one exits.
    let _ = signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        Arc::clone(&sigint),
    );
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&sigint));
    let say = |line: &str| {
        if s.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(&describe(&s));

    let mut ctl = Conn::open(&s.uri, "warren-perf control")?;
    ctl.open_channel(1)?;
    declare(&mut ctl, &s)?;

    let pstats: Vec<Arc<PubStats>> = (0..s.publishers).map(|_| Arc::default()).collect();
    let cstats: Vec<Arc<ConStats>> = (0..s.consumers).map(|_| Arc::default()).collect();
    let mut handles = Vec::new();
    for (i, st) in cstats.iter().enumerate() {
        let (s2, sh2, st) = (Arc::clone(&s), Arc::clone(&sh), Arc::clone(st));
        handles.push(spawn(format!("consumer {i}"), &sh, move || {
            consumer(i, &s2, &sh2, &st)
        })?);
    }
    for (i, st) in pstats.iter().enumerate() {
        let (s2, sh2, st) = (Arc::clone(&s), Arc::clone(&sh), Arc::clone(st));
        handles.push(spawn(format!("publisher {i}"), &sh, move || {
            publisher(i, &s2, &sh2, &st)
        })?);
    }
    let nthreads = handles.len();
    while sh.ready.load(SeqCst) < nthreads && !sh.failed.load(SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    let t_start = Instant::now();
    let start_ns = sh.now_ns();
    let broker_cpu0 = s.broker_pid.and_then(cpu::process);
    let self_cpu0 = cpu::this_process();
    sh.go();

    let mut interval = Histogram::new();
    let mut total_hist = Histogram::new();
    let harvest = |interval: &mut Histogram, total: &mut Histogram| {
        interval.clear();
        for c in &cstats {
            let mut h = lock(&c.hist);
            interval.merge(&h);
            h.clear();
        }
        total.merge(interval);
    };
    let mut prev = Totals::default();
    let mut prev_t = t_start;
    let mut next_report = t_start + Duration::from_secs(1);
    let mut draining_since: Option<Instant> = None;
    let mut last_progress = (0u64, t_start);
    loop {
        thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        if sh.failed.load(SeqCst) {
            break;
        }
        if sigint.load(SeqCst) {
            sh.stop_publishing.store(true, SeqCst);
            sh.stop_consuming.store(true, SeqCst);
            break;
        }
        let t = totals(&pstats, &cstats);
        if t.consumed != last_progress.0 {
            last_progress = (t.consumed, now);
        }
        match draining_since {
            None => {
                if let Some(d) = s.duration {
                    if now >= t_start + d {
                        sh.stop_publishing.store(true, SeqCst);
                    }
                }
                if s.publishers > 0 && sh.publishers_done.load(SeqCst) == s.publishers
                    || s.publishers == 0 && (s.drain > 0 || sh.stop_publishing.load(SeqCst))
                {
                    draining_since = Some(now);
                }
            }
            Some(since) => {
                let expected = s.expected(&pstats);
                // Consumers get until nothing arrives for 2 s; in a timed
                // run also at most the run's length (min 2 s) to drain.
                let idle = now.duration_since(last_progress.1) > Duration::from_secs(2);
                let too_long = s
                    .duration
                    .is_some_and(|d| now.duration_since(since) > d.max(Duration::from_secs(2)));
                if s.consumers == 0 || t.consumed >= expected || idle || too_long {
                    sh.stop_consuming.store(true, SeqCst);
                    break;
                }
            }
        }
        if now >= next_report {
            let dt = now.duration_since(prev_t).as_secs_f64();
            harvest(&mut interval, &mut total_hist);
            let lat = if interval.count() > 0 {
                format!(
                    " | latency p50 {:.0} p99 {:.0} max {:.0} µs",
                    interval.quantile(0.5) as f64 / 1e3,
                    interval.quantile(0.99) as f64 / 1e3,
                    interval.max() as f64 / 1e3
                )
            } else {
                String::new()
            };
            let confirmed = if s.confirm > 0 {
                format!(
                    " | confirmed {:>9.0} msg/s",
                    per_sec(t.confirmed + t.nacked - prev.confirmed - prev.nacked, dt)
                )
            } else {
                String::new()
            };
            say(&format!(
                "time {:>5.1} s | sent {:>9.0} msg/s{confirmed} | received {:>9.0} msg/s{lat}",
                now.duration_since(t_start).as_secs_f64(),
                per_sec(t.published - prev.published, dt),
                per_sec(t.consumed - prev.consumed, dt),
            ));
            prev = t;
            prev_t = now;
            next_report += Duration::from_secs(1);
        }
    }

    // Let every thread finish (they poll the stop flags), but never hang.
    join_within(
        handles,
        &sh.finished,
        Duration::from_secs(10),
        "warren-perf",
    );
    harvest(&mut interval, &mut total_hist);
    let t = totals(&pstats, &cstats);
    let elapsed = t_start.elapsed().as_secs_f64();
    let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let broker_cpu = used(broker_cpu0, s.broker_pid.and_then(cpu::process));
    let self_cpu = used(self_cpu0, cpu::this_process());
    // Per delivered message, or per published one when nothing is consumed.
    let per_msg = |c: f64| {
        let n = if t.consumed > 0 {
            t.consumed
        } else {
            t.published
        };
        (n > 0).then(|| c * 1e6 / n as f64)
    };
    let broker_us = broker_cpu.and_then(per_msg);
    let opt = |x: Option<f64>, prec: usize| match x {
        Some(v) => format!("{v:.prec$}"),
        None => "null".into(),
    };
    let pub_end = pstats
        .iter()
        .map(|p| p.end_ns.load(Relaxed))
        .max()
        .unwrap_or(start_ns);
    let con_end = cstats
        .iter()
        .map(|c| c.last_ns.load(Relaxed))
        .max()
        .unwrap_or(start_ns);
    let secs = |end: u64| end.saturating_sub(start_ns) as f64 / 1e9;
    let (pub_secs, con_secs) = (secs(pub_end), secs(con_end));
    let ooo: u64 = cstats.iter().map(|c| c.out_of_order.load(Relaxed)).sum();
    let redelivered: u64 = cstats.iter().map(|c| c.redelivered.load(Relaxed)).sum();
    let tag_gaps: u64 = cstats.iter().map(|c| c.tag_gaps.load(Relaxed)).sum();
    let over_prefetch: u64 = cstats.iter().map(|c| c.over_prefetch.load(Relaxed)).sum();
    let expected = s.expected(&pstats);
    let lat = LatencyUs::of(&total_hist);
    let body = s.size as f64;

    if s.json {
        println!(
            "{{\"mode\":\"broker\",\"uri\":{},\"publishers\":{},\"consumers\":{},\"queues\":{},\"exchange_type\":{},\"size\":{},\"persistent\":{},\"durable\":{},\"confirm\":{},\"ack\":{},\"prefetch\":{},\"multi_ack\":{},\"rate\":{},\"latency_mode\":{},\
\"elapsed_s\":{:.3},\"publish_s\":{:.3},\"consume_s\":{:.3},\"published\":{},\"confirmed\":{},\"nacked\":{},\"consumed\":{},\"expected\":{},\"redelivered\":{},\"out_of_order\":{},\"tag_gaps\":{},\"over_prefetch\":{},\
\"publish_rate\":{:.1},\"confirm_rate\":{:.1},\"consume_rate\":{:.1},\"publish_mb_s\":{:.3},\"consume_mb_s\":{:.3},\"latency_us\":{},\"broker_cpu_s\":{},\"broker_cpu_us_per_msg\":{},\"client_cpu_s\":{},\"failed\":{}}}",
            json_str(&s.uri.to_string()),
            s.publishers,
            s.consumers,
            s.queues,
            json_str(&s.exchange_type),
            s.size,
            s.persistent,
            s.durable_queues,
            s.confirm,
            s.ack,
            s.prefetch,
            s.multi_ack,
            s.rate,
            s.latency,
            elapsed,
            pub_secs,
            con_secs,
            t.published,
            t.confirmed,
            t.nacked,
            t.consumed,
            expected,
            redelivered,
            ooo,
            tag_gaps,
            over_prefetch,
            per_sec(t.published, pub_secs),
            per_sec(t.confirmed + t.nacked, pub_secs),
            per_sec(t.consumed, con_secs),
            per_sec(t.published, pub_secs) * body / 1e6,
            per_sec(t.bytes, con_secs) / 1e6,
            lat.json(),
            opt(broker_cpu, 2),
            opt(broker_us, 3),
            opt(self_cpu, 2),
            sh.failed.load(SeqCst),
        );
    } else {
        println!("--- summary ({elapsed:.1} s) ---");
        println!(
            "published: {} msgs in {pub_secs:.2} s = {:.0} msg/s ({:.2} MB/s)",
            t.published,
            per_sec(t.published, pub_secs),
            per_sec(t.published, pub_secs) * body / 1e6
        );
        if s.confirm > 0 {
            println!(
                "confirmed: {} acked + {} nacked = {:.0} msg/s",
                t.confirmed,
                t.nacked,
                per_sec(t.confirmed + t.nacked, pub_secs)
            );
        }
        println!(
            "consumed:  {} of {} expected deliveries in {con_secs:.2} s = {:.0} msg/s ({:.2} MB/s)",
            t.consumed,
            expected,
            per_sec(t.consumed, con_secs),
            per_sec(t.bytes, con_secs) / 1e6
        );
        if redelivered > 0 {
            println!(
                "redelivered: {redelivered} (requeued when another consumer's channel closed)"
            );
        }
        if ooo > 0 {
            println!("BROKER ANOMALY: {ooo} deliveries out of order or duplicated");
        }
        if tag_gaps > 0 {
            println!("BROKER ANOMALY: {tag_gaps} delivery tags not consecutive");
        }
        if over_prefetch > 0 {
            println!("BROKER ANOMALY: {over_prefetch} deliveries beyond the prefetch window");
        }
        println!("latency:   {}", lat.line());
        if let Some(c) = broker_cpu {
            println!(
                "broker CPU: {c:.2} s ({:.0}% of one core){}",
                c / elapsed * 100.0,
                broker_us
                    .map(|u| format!(", {u:.2} µs per message"))
                    .unwrap_or_default()
            );
        }
        if let Some(c) = self_cpu {
            println!(
                "warren-perf CPU: {c:.2} s ({:.0}% of one core)",
                c / elapsed * 100.0
            );
        }
    }

    if !s.keep {
        if let Err(e) = teardown(&mut ctl, &s) {
            eprintln!("warren-perf: cleanup failed: {e}");
        }
    }
    ctl.close(Duration::from_secs(2));
    Ok(if sh.failed.load(SeqCst) { 1 } else { 0 })
}

/// Join the connection threads once all of them have said they finished
/// (`finished` counts them), waiting at most `within`; a thread that does
/// not finish in time is left behind with a message (never a hang).
pub(crate) fn join_within<T>(
    handles: Vec<thread::JoinHandle<T>>,
    finished: &std::sync::atomic::AtomicUsize,
    within: Duration,
    who: &str,
) {
    let n = handles.len();
    let deadline = Instant::now() + within;
    while finished.load(SeqCst) < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let stragglers = n.saturating_sub(finished.load(SeqCst));
    if stragglers == 0 {
        for h in handles {
            let _ = h.join();
        }
    } else {
        eprintln!("{who}: {stragglers} connection thread(s) did not finish in time");
    }
}
