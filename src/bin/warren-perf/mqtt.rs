//! `warren-perf mqtt`: MQTT 3.1.1 load against any broker, with the
//! hand-written client in [`client`]. One thread per connection (the idle
//! scenario: a few threads open them all); every publisher writes a
//! pre-encoded batch of PUBLISH packets (64 KiB) at a time, every
//! subscriber reads 1 MiB at a time and only splits packets.
//!
//! Scenarios:
//! - `fanin`: `--publishers` connections publish QoS 0 to `bench/<i>` as
//!   fast as the broker reads; one subscriber on `bench/#` counts what
//!   arrives. QoS 0 may be dropped, so the subscriber's rate is the
//!   headline.
//! - `qos1`: one publisher keeps `--inflight` QoS 1 PUBLISHes waiting for
//!   their PUBACK; one QoS 1 subscriber acknowledges each delivery.
//!   Payloads carry their send time: end-to-end latency.
//! - `idle`: `--connections` sessions CONNECT (keep-alive 600 s) and sit
//!   idle for `--duration`; at the end each is pinged, and those answering
//!   are counted. The broker's memory is measured from outside (see
//!   `benches/mqtt.sh`), while the line "N of M connections open" on
//!   stderr says they are all held.

mod client;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use self::client::{
    header, packet_id, publish_parts, put_puback, put_publish, Conn, ConnectOptions, BIG_BUFFER,
    DISCONNECT_PACKET, PINGREQ_PACKET, PINGRESP, PUBACK, PUBLISH,
};
use super::client::{PerfError, Result};
use super::cpu;
use super::hist::Histogram;
use super::run::{json_str, per_sec, LatencyUs};

/// How long CONNECT and SUBSCRIBE may take.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(20);
/// Bytes of PUBLISH packets a fanin publisher writes at once.
const BATCH_BYTES: usize = 64 * 1024;
/// fanin: batches a publisher may have written whose PINGREQ the broker
/// has not answered yet.
const PING_WINDOW: usize = 4;
/// Bytes of a payload's send-time stamp (qos1).
const STAMP: usize = 8;

/// Which load to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Many QoS 0 publishers, one subscriber.
    Fanin,
    /// One QoS 1 publisher with a window, one QoS 1 subscriber.
    Qos1,
    /// Many idle connections.
    Idle,
}

impl Scenario {
    /// From its name.
    pub fn parse(s: &str) -> Option<Scenario> {
        match s {
            "fanin" => Some(Scenario::Fanin),
            "qos1" => Some(Scenario::Qos1),
            "idle" => Some(Scenario::Idle),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::Fanin => "fanin",
            Scenario::Qos1 => "qos1",
            Scenario::Idle => "idle",
        }
    }
}

/// What to run.
pub struct MqttSettings {
    /// The scenario.
    pub scenario: Scenario,
    /// The broker's MQTT address.
    pub addr: SocketAddr,
    /// fanin: publisher connections.
    pub publishers: usize,
    /// Payload bytes.
    pub size: usize,
    /// How long to publish (idle: to hold the connections).
    pub duration: Duration,
    /// qos1: PUBLISHes awaiting their PUBACK at most.
    pub inflight: usize,
    /// idle: connections to open.
    pub connections: usize,
    /// idle: threads opening them.
    pub threads: usize,
    /// idle: local addresses 127.0.0.1 to 127.0.0.N to connect from (1:
    /// let the kernel choose).
    pub source_addrs: usize,
    /// Keep-alive sent in CONNECT, seconds.
    pub keepalive: u16,
    /// User name and password, if any.
    pub credentials: Option<(String, String)>,
    /// Topic prefix: publishers use PREFIX/..., the subscription PREFIX/#.
    pub topic: String,
    /// Report this process's CPU time per message.
    pub broker_pid: Option<u32>,
    /// One JSON line on stdout instead of text.
    pub json: bool,
}

impl MqttSettings {
    fn connect_options(&self, client_id: String) -> ConnectOptions {
        ConnectOptions {
            client_id,
            keepalive: self.keepalive,
            credentials: self.credentials.clone(),
        }
    }

    /// A client identifier unique to this run, at most 23 characters (the
    /// length every broker must accept).
    fn client_id(&self, role: char, i: usize) -> String {
        format!("wp{}{role}{i}", std::process::id())
    }

    /// How often an otherwise silent client pings.
    fn ping_every(&self) -> Duration {
        Duration::from_secs(u64::from(self.keepalive.max(2)) / 2)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State the threads of a publish/subscribe run share.
struct Shared {
    epoch: Instant,
    go: AtomicBool,
    stop_publishing: AtomicBool,
    stop_subscribing: AtomicBool,
    failed: AtomicBool,
    ready: AtomicUsize,
    finished: AtomicUsize,
    /// PUBLISHes written completely.
    published: AtomicU64,
    /// When the last publisher knew the broker had handled all it sent
    /// (ns since `epoch`).
    handled_ns: AtomicU64,
    /// Publishers that gave up waiting for the broker to handle what they
    /// sent (the PINGRESP or the PUBACKs) after the end.
    unanswered: AtomicUsize,
    /// qos1: PUBACKs received.
    acked: AtomicU64,
    /// PUBLISHes the subscriber received.
    received: AtomicU64,
    /// ... of them with the DUP flag.
    duplicates: AtomicU64,
    /// When the subscriber last received one (ns since `epoch`).
    last_received_ns: AtomicU64,
    latency: Mutex<Histogram>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            go: AtomicBool::new(false),
            stop_publishing: AtomicBool::new(false),
            stop_subscribing: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            handled_ns: AtomicU64::new(0),
            unanswered: AtomicUsize::new(0),
            acked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            last_received_ns: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new()),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn fail(&self, who: &str, e: &PerfError) {
        eprintln!("warren-perf mqtt: {who}: {e}");
        self.failed.store(true, SeqCst);
        self.stop_publishing.store(true, SeqCst);
        self.stop_subscribing.store(true, SeqCst);
    }

    /// Count this thread ready and wait for the start; false if the run
    /// failed meanwhile.
    fn ready_and_wait(&self) -> bool {
        self.ready.fetch_add(1, SeqCst);
        while !self.go.load(SeqCst) {
            if self.failed.load(SeqCst) {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

fn spawn<F: FnOnce() -> Result<()> + Send + 'static>(
    name: String,
    sh: &Arc<Shared>,
    f: F,
) -> io::Result<JoinHandle<()>> {
    let sh = Arc::clone(sh);
    thread::Builder::new().name(name.clone()).spawn(move || {
        if let Err(e) = f() {
            sh.fail(&name, &e);
        }
        sh.finished.fetch_add(1, SeqCst);
    })
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Write some of `buf`; 0 when the write timed out.
fn write_some(sock: &mut TcpStream, buf: &[u8]) -> Result<usize> {
    match sock.write(buf) {
        Ok(0) if !buf.is_empty() => Err(PerfError::Io(io::Error::new(
            io::ErrorKind::WriteZero,
            "the broker closed the connection",
        ))),
        Ok(n) => Ok(n),
        Err(e) if is_timeout(&e) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// How long publishers may take, after the end of the run, until the
/// broker has read what they wrote.
fn finish_within(s: &MqttSettings) -> Duration {
    s.duration.max(Duration::from_secs(10))
}

/// fanin: publish QoS 0 to PREFIX/<i> as fast as the broker reads. Each
/// batch of 64 KiB of PUBLISH packets ends with a PINGREQ, and at most
/// [`PING_WINDOW`] of them go unanswered: a broker answers a PINGREQ after
/// it has handled what came before it on the connection, so the client
/// cannot run ahead of the broker by more than a few batches (the socket
/// buffers on loopback would otherwise take hundreds of megabytes, and the
/// publish rate would count what the broker never read). At the end the
/// last batch is completed and its PINGRESP awaited: then the broker has
/// handled every PUBLISH counted.
fn fanin_publisher(i: usize, s: &MqttSettings, sh: &Shared) -> Result<()> {
    let mut c = Conn::open(
        s.addr,
        None,
        &s.connect_options(s.client_id('p', i)),
        4096,
        HANDSHAKE_WAIT,
    )?;
    let topic = format!("{}/{i}", s.topic);
    let mut one = Vec::new();
    put_publish(&mut one, topic.as_bytes(), 0, 0, &vec![b'x'; s.size])?;
    let plen = one.len();
    let per_batch = (BATCH_BYTES / plen).max(1);
    let publish_bytes = per_batch * plen;
    let mut batch = one.repeat(per_batch);
    batch.extend_from_slice(&PINGREQ_PACKET);
    // Reads and writes time out so that a broker which stops reading
    // cannot keep this thread from seeing the end of the run.
    c.sock.set_write_timeout(Some(Duration::from_millis(100)))?;
    c.sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    if !sh.ready_and_wait() {
        return Ok(());
    }
    let mut pos = 0usize;
    let mut pings = 0usize;
    let mut finish_by: Option<Instant> = None;
    loop {
        if finish_by.is_none() && sh.stop_publishing.load(Relaxed) {
            if sh.failed.load(Relaxed) {
                return Ok(());
            }
            finish_by = Some(Instant::now() + finish_within(s));
        }
        let may_write = match finish_by {
            None => pings < PING_WINDOW,
            Some(_) if pos == 0 && pings == 0 => break,
            // The broker is that far behind: the summary says so.
            Some(t) if Instant::now() > t => {
                sh.unanswered.fetch_add(1, SeqCst);
                break;
            }
            // Complete the batch under way, then wait for the answers.
            Some(_) => pos > 0,
        };
        if may_write {
            let n = write_some(&mut c.sock, batch.get(pos..).unwrap_or_default())?;
            // Whole PUBLISH packets completed by this write.
            let done = (pos + n).min(publish_bytes) / plen - pos.min(publish_bytes) / plen;
            sh.published.fetch_add(done as u64, Relaxed);
            pos += n;
            if pos >= batch.len() {
                pos = 0;
                pings += 1;
            }
        } else {
            c.fill()?;
            let mut pongs = 0;
            c.drain(|first, _| {
                if first >> 4 == PINGRESP {
                    pongs += 1;
                }
                Ok(())
            })?;
            pings = pings.saturating_sub(pongs);
        }
    }
    sh.handled_ns.fetch_max(sh.now_ns(), SeqCst);
    let _ = c.sock.write_all(&DISCONNECT_PACKET);
    Ok(())
}

/// qos1: keep `inflight` QoS 1 PUBLISHes unacknowledged, stamped with
/// their send time.
fn qos1_publisher(s: &MqttSettings, sh: &Shared) -> Result<()> {
    let mut c = Conn::open(
        s.addr,
        None,
        &s.connect_options(s.client_id('p', 0)),
        1 << 16,
        HANDSHAKE_WAIT,
    )?;
    c.sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let topic = format!("{}/qos1", s.topic);
    let mut payload = vec![b'x'; s.size];
    let mut outstanding = vec![false; 1 << 16];
    let mut inflight = 0usize;
    let mut next_id = 0u16;
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut wbuf = Vec::with_capacity(s.inflight * (payload.len() + topic.len() + 8));
    if !sh.ready_and_wait() {
        return Ok(());
    }
    let mut stopped: Option<Instant> = None;
    loop {
        if stopped.is_none() && sh.stop_publishing.load(Relaxed) {
            stopped = Some(Instant::now());
        }
        match stopped {
            None if inflight < s.inflight => {
                if let Some(stamp) = payload.get_mut(..STAMP) {
                    stamp.copy_from_slice(&sh.now_ns().to_be_bytes());
                }
                while inflight < s.inflight {
                    // The next identifier not in flight (there is one: the
                    // window is smaller than the identifier space).
                    loop {
                        next_id = next_id.wrapping_add(1);
                        if next_id != 0 && outstanding.get(usize::from(next_id)) == Some(&false) {
                            break;
                        }
                    }
                    put_publish(&mut wbuf, topic.as_bytes(), 1, next_id, &payload)?;
                    if let Some(o) = outstanding.get_mut(usize::from(next_id)) {
                        *o = true;
                    }
                    inflight += 1;
                    sent += 1;
                }
                c.sock.write_all(&wbuf)?;
                wbuf.clear();
                sh.published.store(sent, Relaxed);
            }
            Some(_) if inflight == 0 => break,
            Some(t) if t.elapsed() > finish_within(s) => {
                sh.unanswered.fetch_add(1, SeqCst);
                break;
            }
            _ => {}
        }
        c.fill()?;
        c.drain(|first, body| {
            if first >> 4 == PUBACK {
                let id = packet_id(body)?;
                match outstanding.get_mut(usize::from(id)) {
                    Some(o) if *o => {
                        *o = false;
                        inflight -= 1;
                        acked += 1;
                    }
                    _ => {
                        return Err(PerfError::Protocol(format!(
                            "PUBACK for packet {id}, which is not in flight"
                        )))
                    }
                }
            }
            Ok(())
        })?;
        sh.acked.store(acked, Relaxed);
    }
    sh.handled_ns.fetch_max(sh.now_ns(), SeqCst);
    let _ = c.sock.write_all(&DISCONNECT_PACKET);
    Ok(())
}

/// The subscriber on PREFIX/#: counts PUBLISHes, acknowledges QoS 1 ones
/// (all those of one read in one write) and, with `stamped`, records the
/// latency from the send time in the payload.
fn subscriber(s: &MqttSettings, sh: &Shared, qos: u8, stamped: bool) -> Result<()> {
    let mut c = Conn::open(
        s.addr,
        None,
        &s.connect_options(s.client_id('s', 0)),
        BIG_BUFFER,
        HANDSHAKE_WAIT,
    )?;
    let filter = format!("{}/#", s.topic);
    let granted = c.subscribe(&filter, qos, HANDSHAKE_WAIT)?;
    if granted != qos {
        return Err(PerfError::Protocol(format!(
            "asked for QoS {qos} on {filter}, the broker granted QoS {granted}"
        )));
    }
    c.sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    if !sh.ready_and_wait() {
        return Ok(());
    }
    let mut hist = Histogram::new();
    let mut acks = Vec::with_capacity(1 << 16);
    let mut last_write = Instant::now();
    let ping_every = s.ping_every();
    let mut any_pub = false;
    while !sh.stop_subscribing.load(Relaxed) {
        if c.fill()? > 0 {
            let now = sh.now_ns();
            let (mut got, mut dups) = (0u64, 0u64);
            c.drain(|first, body| {
                if first >> 4 != PUBLISH {
                    return Ok(());
                }
                got += 1;
                if first & 0x08 != 0 {
                    dups += 1;
                }
                if qos > 0 || stamped {
                    let (q, id, payload) = publish_parts(first, body)?;
                    if q > 0 {
                        put_puback(&mut acks, id);
                    }
                    if stamped {
                        if let Some(Ok(t)) = payload.get(..STAMP).map(<[u8; STAMP]>::try_from) {
                            hist.record(now.saturating_sub(u64::from_be_bytes(t)));
                        }
                    }
                }
                Ok(())
            })?;
            if !acks.is_empty() {
                c.sock.write_all(&acks)?;
                acks.clear();
                last_write = Instant::now();
            }
            if got > 0 {
                any_pub = true;
                sh.received.fetch_add(got, Relaxed);
                sh.duplicates.fetch_add(dups, Relaxed);
                sh.last_received_ns.store(now, Relaxed);
            }
        }
        if last_write.elapsed() >= ping_every {
            c.sock.write_all(&PINGREQ_PACKET)?;
            last_write = Instant::now();
        }
    }
    lock(&sh.latency).merge(&hist);
    if !any_pub {
        eprintln!("warren-perf mqtt: the subscriber received nothing");
    }
    let _ = c.sock.write_all(&DISCONNECT_PACKET);
    Ok(())
}

/// Run a scenario; returns the process exit code.
pub fn run(s: MqttSettings) -> i32 {
    let r = match s.scenario {
        Scenario::Fanin | Scenario::Qos1 => pubsub(Arc::new(s)),
        Scenario::Idle => idle(&s),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warren-perf mqtt: {e}");
            1
        }
    }
}

/// Ctrl-C: a first one ends the run (with a summary), a second one exits.
fn sigint_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        Arc::clone(&flag),
    );
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&flag));
    flag
}

/// 130 after a Ctrl-C (the summary was still printed: a script running
/// the tool learns it was interrupted, as if it had been killed), 1 after
/// a failure.
fn exit_code(failed: bool, sigint: &AtomicBool) -> i32 {
    if sigint.load(SeqCst) {
        130
    } else if failed {
        1
    } else {
        0
    }
}

fn pubsub(s: Arc<MqttSettings>) -> Result<i32> {
    let qos1 = s.scenario == Scenario::Qos1;
    let stamped = qos1 && s.size >= STAMP;
    let sigint = sigint_flag();
    let sh = Arc::new(Shared::new());
    let publishers = if qos1 { 1 } else { s.publishers };
    eprintln!(
        "warren-perf mqtt {}: {} | {publishers} publisher(s) → {}/# → 1 subscriber | {} B, QoS {} | {} s{}",
        s.scenario.name(),
        s.addr,
        s.topic,
        s.size,
        u8::from(qos1),
        s.duration.as_secs_f64(),
        if qos1 { format!(" | ≤{} in flight", s.inflight) } else { String::new() }
    );

    // The subscription exists before anyone publishes.
    let mut handles = Vec::new();
    {
        let (s2, sh2) = (Arc::clone(&s), Arc::clone(&sh));
        handles.push(spawn("subscriber".into(), &sh, move || {
            subscriber(&s2, &sh2, u8::from(qos1), stamped)
        })?);
    }
    while sh.ready.load(SeqCst) < 1 && !sh.failed.load(SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    for i in 0..publishers {
        let (s2, sh2) = (Arc::clone(&s), Arc::clone(&sh));
        handles.push(spawn(format!("publisher {i}"), &sh, move || {
            if qos1 {
                qos1_publisher(&s2, &sh2)
            } else {
                fanin_publisher(i, &s2, &sh2)
            }
        })?);
    }
    let nthreads = handles.len();
    while sh.ready.load(SeqCst) < nthreads && !sh.failed.load(SeqCst) {
        if sh.finished.load(SeqCst) > 0 || sigint.load(SeqCst) {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    let start_ns = sh.now_ns();
    let broker_cpu0 = s.broker_pid.and_then(cpu::process);
    let self_cpu0 = cpu::this_process();
    sh.go.store(true, SeqCst);

    let mut publish_end: Option<Instant> = None;
    // When the subscriber was stopped before all had arrived.
    let mut cut: Option<Instant> = None;
    let mut last_progress = (0u64, start);
    let mut next_report = start + Duration::from_secs(1);
    let mut prev = (0u64, 0u64, start);
    loop {
        thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        if sh.failed.load(SeqCst) || sigint.load(SeqCst) {
            sh.stop_publishing.store(true, SeqCst);
            sh.stop_subscribing.store(true, SeqCst);
            publish_end.get_or_insert(now);
            break;
        }
        let received = sh.received.load(Relaxed);
        if received != last_progress.0 {
            last_progress = (received, now);
        }
        match publish_end {
            None => {
                if now >= start + s.duration {
                    sh.stop_publishing.store(true, SeqCst);
                    publish_end = Some(now);
                }
            }
            Some(end) => {
                // Once the publishers know the broker has handled all
                // they sent, the subscriber gets everything (or, QoS 0,
                // until nothing arrives for 2 s) to drain; in all at most
                // as long as the publishers may take to finish, plus 2 s.
                let publishers_done = sh.finished.load(SeqCst) >= publishers;
                let target = if qos1 {
                    sh.acked.load(Relaxed)
                } else {
                    sh.published.load(Relaxed)
                };
                let idle = now.duration_since(last_progress.1) > Duration::from_secs(2);
                let too_long = now.duration_since(end) > finish_within(&s) + Duration::from_secs(2);
                let all_in = publishers_done && received >= target;
                if all_in || (publishers_done && idle) || too_long {
                    // Stopped while deliveries were still coming in.
                    if !all_in && !idle {
                        cut = Some(now);
                    }
                    sh.stop_subscribing.store(true, SeqCst);
                    break;
                }
            }
        }
        if now >= next_report {
            let dt = now.duration_since(prev.2).as_secs_f64();
            let published = sh.published.load(Relaxed);
            eprintln!(
                "time {:>5.1} s | sent {:>10.0} msg/s | received {:>10.0} msg/s",
                now.duration_since(start).as_secs_f64(),
                per_sec(published.saturating_sub(prev.0), dt),
                per_sec(received.saturating_sub(prev.1), dt),
            );
            prev = (published, received, now);
            next_report += Duration::from_secs(1);
        }
    }

    crate::run::join_within(
        handles,
        &sh.finished,
        Duration::from_secs(15),
        "warren-perf mqtt",
    );

    let publish_s = publish_end
        .map(|e| e.duration_since(start))
        .unwrap_or_default()
        .as_secs_f64();
    let published = sh.published.load(SeqCst);
    let acked = sh.acked.load(SeqCst);
    let received = sh.received.load(SeqCst);
    let duplicates = sh.duplicates.load(SeqCst);
    // Until the last delivery; if the subscriber was stopped while
    // deliveries were missing, until then.
    let receive_s = match cut {
        Some(t) => t.duration_since(start).as_secs_f64(),
        None => sh.last_received_ns.load(SeqCst).saturating_sub(start_ns) as f64 / 1e9,
    };
    let unanswered = sh.unanswered.load(SeqCst);
    // Until the broker had handled all that was published (fanin: the
    // PINGRESP after the last PUBLISH; qos1: the last PUBACK), or the
    // publishers stopped waiting for it (`unanswered`).
    let handled_s = match sh.handled_ns.load(SeqCst) {
        0 => publish_s,
        ns => ns.saturating_sub(start_ns) as f64 / 1e9,
    };
    let publish_rate = per_sec(if qos1 { acked } else { published }, handled_s);
    let receive_rate = per_sec(received, receive_s);
    let lat = stamped.then(|| LatencyUs::of(&lock(&sh.latency)));
    let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let broker_cpu = used(broker_cpu0, s.broker_pid.and_then(cpu::process));
    let self_cpu = used(self_cpu0, cpu::this_process());
    let broker_us = broker_cpu.and_then(|c| (received > 0).then(|| c * 1e6 / received as f64));
    let failed = sh.failed.load(SeqCst);
    let opt = |x: Option<f64>, prec: usize| match x {
        Some(v) => format!("{v:.prec$}"),
        None => "null".into(),
    };

    if s.json {
        println!(
            "{{\"mode\":\"mqtt\",\"scenario\":{},\"broker\":{},\"publishers\":{publishers},\"size\":{},\"qos\":{},\"inflight\":{},\
\"publish_s\":{publish_s:.3},\"handled_s\":{handled_s:.3},\"published\":{published},\"acked\":{acked},\"publish_rate\":{publish_rate:.1},\
\"receive_s\":{receive_s:.3},\"received\":{received},\"receive_rate\":{receive_rate:.1},\"duplicates\":{duplicates},\"latency_us\":{},\
\"unanswered\":{unanswered},\"cut_short\":{},\"broker_cpu_s\":{},\"broker_cpu_us_per_msg\":{},\"client_cpu_s\":{},\"failed\":{failed}}}",
            json_str(s.scenario.name()),
            json_str(&s.addr.to_string()),
            s.size,
            u8::from(qos1),
            if qos1 { s.inflight } else { 0 },
            lat.as_ref().map(LatencyUs::json).unwrap_or_else(|| "null".into()),
            cut.is_some(),
            opt(broker_cpu, 2),
            opt(broker_us, 3),
            opt(self_cpu, 2),
        );
    } else {
        let share = if published > 0 {
            format!(
                " ({:.1}% of published)",
                received as f64 * 100.0 / published as f64
            )
        } else {
            String::new()
        };
        println!(
            "mqtt {} {}: published {published}{}, {} {handled_s:.1} s = {}{publish_rate:.0} msg/s | received {received} in {receive_s:.1} s = {receive_rate:.0} msg/s{share}{}{}{}{}{}{}",
            s.scenario.name(),
            s.addr,
            if qos1 { format!(", acked {acked}") } else { String::new() },
            if unanswered > 0 { "not all handled by the broker after" } else { "handled by the broker in" },
            if unanswered > 0 { "≤ " } else { "" },
            if duplicates > 0 { format!(", {duplicates} duplicates") } else { String::new() },
            lat.as_ref()
                .map(|l| format!(" | latency p50 {:.0} p99 {:.0} max {:.0} µs", l.p50, l.p99, l.max))
                .unwrap_or_default(),
            broker_us.map(|u| format!(" | broker CPU {u:.2} µs/msg")).unwrap_or_default(),
            if unanswered > 0 {
                format!(" | {unanswered} publisher(s) still waiting for the broker {} s after the end", finish_within(&s).as_secs())
            } else {
                String::new()
            },
            if cut.is_some() { " | the subscriber was stopped before all arrived" } else { "" },
            if failed { " | FAILED" } else { "" },
        );
    }
    Ok(exit_code(failed, &sigint))
}

/// idle: the local address connection `i` comes from, when spreading them
/// over several (a loopback broker only).
fn source_for(s: &MqttSettings, i: usize) -> Option<Ipv4Addr> {
    if s.source_addrs <= 1 || !matches!(s.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()) {
        return None;
    }
    Some(Ipv4Addr::new(127, 0, 0, 1 + (i % s.source_addrs) as u8))
}

/// Write PINGREQ on every connection; returns those that took it.
fn ping_all(conns: &mut [Option<TcpStream>]) -> usize {
    let mut ok = 0;
    for slot in conns.iter_mut() {
        if let Some(c) = slot {
            if c.write_all(&PINGREQ_PACKET).is_ok() {
                ok += 1;
            } else {
                *slot = None;
            }
        }
    }
    ok
}

/// Read the PINGRESPs of `pings` PINGREQs on every connection, waiting at
/// most until `deadline` in all; drops the connections that close or do not
/// answer, returns how many remain.
fn check_pongs(conns: &mut [Option<TcpStream>], pings: usize, deadline: Instant) -> usize {
    let mut alive = 0;
    let mut buf = [0u8; 256];
    for slot in conns.iter_mut() {
        let Some(c) = slot else { continue };
        let mut pongs = 0;
        let mut held = 0usize;
        let ok = loop {
            if pongs >= pings {
                break true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || c.set_read_timeout(Some(left)).is_err() {
                break false;
            }
            let room = buf.get_mut(held..).unwrap_or_default();
            match c.read(room) {
                Ok(0) | Err(_) => break false,
                Ok(n) => held += n,
            }
            // Count whole packets, keep a partial one.
            let mut at = 0;
            while let Ok(Some((first, hlen, len))) = header(buf.get(at..held).unwrap_or_default()) {
                if at + hlen + len > held {
                    break;
                }
                if first >> 4 == PINGRESP {
                    pongs += 1;
                }
                at += hlen + len;
            }
            buf.copy_within(at..held, 0);
            held -= at;
            if held == buf.len() {
                break false;
            }
        };
        if ok {
            alive += 1;
        } else {
            *slot = None;
        }
    }
    alive
}

fn idle(s: &MqttSettings) -> Result<i32> {
    let sigint = sigint_flag();
    eprintln!(
        "warren-perf mqtt idle: {} | {} connections, keep-alive {} s, {} opening thread(s){} | held {} s",
        s.addr,
        s.connections,
        s.keepalive,
        s.threads,
        if source_for(s, 0).is_some() {
            format!(", from 127.0.0.1-{}", s.source_addrs)
        } else {
            String::new()
        },
        s.duration.as_secs_f64()
    );
    let opened = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let start = Instant::now();
    let mut handles = Vec::new();
    for k in 0..s.threads {
        let ids: Vec<usize> = (k..s.connections).step_by(s.threads).collect();
        let jobs: Vec<(String, Option<Ipv4Addr>)> = ids
            .iter()
            .map(|&i| (s.client_id('i', i), source_for(s, i)))
            .collect();
        let opts = s.connect_options(String::new());
        let addr = s.addr;
        let (opened, stop, first_error) = (
            Arc::clone(&opened),
            Arc::clone(&stop),
            Arc::clone(&first_error),
        );
        handles.push(
            thread::Builder::new()
                .name(format!("opener {k}"))
                .spawn(move || {
                    let mut held = Vec::with_capacity(jobs.len());
                    for (id, source) in jobs {
                        if stop.load(Relaxed) {
                            break;
                        }
                        let o = ConnectOptions {
                            client_id: id,
                            ..opts.clone()
                        };
                        match Conn::open(addr, source, &o, 64, HANDSHAKE_WAIT) {
                            Ok(c) => {
                                held.push(Some(c.into_socket()));
                                opened.fetch_add(1, Relaxed);
                            }
                            Err(e) => {
                                lock(&first_error).get_or_insert_with(|| e.to_string());
                                stop.store(true, SeqCst);
                                break;
                            }
                        }
                    }
                    held
                })?,
        );
    }
    let mut next_report = start + Duration::from_secs(1);
    while handles.iter().any(|h| !h.is_finished()) {
        thread::sleep(Duration::from_millis(10));
        if sigint.load(SeqCst) {
            stop.store(true, SeqCst);
        }
        if Instant::now() >= next_report {
            eprintln!(
                "time {:>5.1} s | {} connections open",
                start.elapsed().as_secs_f64(),
                opened.load(Relaxed)
            );
            next_report += Duration::from_secs(1);
        }
    }
    let mut conns: Vec<Option<TcpStream>> = Vec::with_capacity(s.connections);
    for h in handles {
        if let Ok(held) = h.join() {
            conns.extend(held);
        }
    }
    let open_s = start.elapsed().as_secs_f64();
    let open = conns.len();
    let error = lock(&first_error).take();
    if let Some(e) = &error {
        eprintln!("warren-perf mqtt idle: opening stopped at the first error: {e}");
    }
    // benches/mqtt.sh waits for this line before it measures the broker.
    eprintln!(
        "warren-perf mqtt idle: {open} of {} connections open in {open_s:.1} s; holding them for {} s",
        s.connections,
        s.duration.as_secs_f64()
    );

    let hold_start = Instant::now();
    let mut pings = 0usize;
    let mut last_ping = hold_start;
    while hold_start.elapsed() < s.duration && !sigint.load(SeqCst) {
        thread::sleep(Duration::from_millis(50));
        if last_ping.elapsed() >= s.ping_every() {
            ping_all(&mut conns);
            pings += 1;
            last_ping = Instant::now();
        }
    }
    ping_all(&mut conns);
    let alive = check_pongs(
        &mut conns,
        pings + 1,
        Instant::now() + Duration::from_secs(30),
    );
    let held_s = hold_start.elapsed().as_secs_f64();
    for c in conns.iter_mut().flatten() {
        let _ = c.write_all(&DISCONNECT_PACKET);
    }
    drop(conns);

    let ok = alive == s.connections;
    if s.json {
        println!(
            "{{\"mode\":\"mqtt\",\"scenario\":\"idle\",\"broker\":{},\"connections\":{},\"keepalive\":{},\"opened\":{open},\"open_s\":{open_s:.3},\"open_rate\":{:.1},\"held_s\":{held_s:.3},\"connected\":{alive},\"error\":{},\"failed\":{}}}",
            json_str(&s.addr.to_string()),
            s.connections,
            s.keepalive,
            per_sec(open as u64, open_s),
            error.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
            !ok,
        );
    } else {
        println!(
            "mqtt idle {}: opened {open} of {} connections in {open_s:.1} s = {:.0}/s, held {held_s:.1} s (keep-alive {} s) | connected at the end: {alive}{}",
            s.addr,
            s.connections,
            per_sec(open as u64, open_s),
            s.keepalive,
            if ok { "" } else { " | FAILED" },
        );
    }
    Ok(exit_code(!ok, &sigint))
}
