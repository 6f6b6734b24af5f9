//! `warren-perf stall`: how long one client's bulk consumer operations stall
//! everybody else. A load connection adds N consumers to one queue on one
//! channel (pipelined, like a client that does not wait for each
//! consume-ok), then removes them again in one of several ways (cancel each,
//! close the channel, delete the queue, close the connection); meanwhile a
//! separate ping connection sends one message at a time to itself and
//! records each round trip. A `publish` phase has a third connection send
//! messages to the queue while the consumers (with `--prefetch`) are full. Per phase it reports the wall time, the broker's
//! CPU time (with `--broker-pid`) and the ping round trips (max, p99): on a
//! broker whose consumer bookkeeping is linear per operation, the ping's
//! worst round trip grows with N.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren::codec::frame::{FRAME_BODY, FRAME_METHOD};
use warren::codec::{
    BasicCancel, BasicConsume, BasicQos, ChannelClose, Method, QueueDeclare, QueueDelete,
};

use super::client::{Conn, PerfError, Result};
use super::hist::Histogram;
use super::msg::Template;
use super::run::{json_str, LatencyUs};
use super::uri::Uri;

/// One step of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// basic.consume N times on channel 1 (declaring the queue first).
    Consume,
    /// basic.cancel every consumer.
    Cancel,
    /// channel.close of the consumers' channel.
    CloseChannel,
    /// queue.delete of their queue from another channel (the broker cancels
    /// every consumer).
    DeleteQueue,
    /// connection.close of the consumers' connection.
    CloseConnection,
    /// Another connection publishes `--messages` messages to their queue
    /// (and waits for a queue.declare round trip); the consumers' connection
    /// reads its deliveries and acknowledges none: with `--prefetch`, once
    /// every consumer has its fill, each further message finds them all
    /// full.
    Publish,
}

impl Phase {
    /// Parse a phase name.
    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "consume" => Phase::Consume,
            "cancel" => Phase::Cancel,
            "close-channel" => Phase::CloseChannel,
            "delete-queue" => Phase::DeleteQueue,
            "close-connection" => Phase::CloseConnection,
            "publish" => Phase::Publish,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Consume => "consume",
            Phase::Cancel => "cancel",
            Phase::CloseChannel => "close-channel",
            Phase::DeleteQueue => "delete-queue",
            Phase::CloseConnection => "close-connection",
            Phase::Publish => "publish",
        }
    }
}

/// What to run.
pub struct StallSettings {
    /// Broker.
    pub uri: Uri,
    /// Consumers added by each `consume` phase.
    pub consumers: usize,
    /// The steps, in order.
    pub phases: Vec<Phase>,
    /// Consume (or cancel) requests in flight at most.
    pub window: usize,
    /// basic.qos prefetch count of the consumers (0: unlimited).
    pub prefetch: u16,
    /// Messages sent by a `publish` phase.
    pub messages: u64,
    /// Report this process's CPU time per phase.
    pub broker_pid: Option<u32>,
    /// One JSON line instead of text.
    pub json: bool,
}

struct PhaseResult {
    phase: Phase,
    wall: Duration,
    cpu: Option<f64>,
    ping: Histogram,
}

/// Ping round trips, one histogram per phase (index 0: before the first).
struct Pinger {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Result<Vec<Histogram>>>,
}

impl Pinger {
    fn start(uri: &Uri, phases: usize) -> Result<Pinger> {
        let mut c = Conn::open(uri, "warren-perf stall ping")?;
        c.open_channel(1)?;
        let q = match c.rpc(
            1,
            &Method::QueueDeclare(QueueDeclare {
                exclusive: true,
                ..Default::default()
            }),
            |m| matches!(m, Method::QueueDeclareOk(_)),
        )? {
            Method::QueueDeclareOk(ok) => String::from_utf8_lossy(&ok.queue).into_owned(),
            _ => return Err(PerfError::Protocol("queue.declare".into())),
        };
        c.rpc(
            1,
            &Method::BasicConsume(BasicConsume {
                queue: Bytes::from(q.clone()),
                no_ack: true,
                ..Default::default()
            }),
            |m| matches!(m, Method::BasicConsumeOk(_)),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let (s, p) = (stop.clone(), phase.clone());
        let tpl = Template::publish("", &q, 16, false, c.frame_max);
        let thread = std::thread::Builder::new()
            .name("ping".into())
            .spawn(move || {
                let mut hists = vec![Histogram::new(); phases + 1];
                while !s.load(Ordering::Relaxed) {
                    let at = p.load(Ordering::Relaxed);
                    let t = Instant::now();
                    std::io::Write::write_all(&mut c.stream, &tpl.bytes)?;
                    loop {
                        let f = c.next_frame()?;
                        if f.kind == FRAME_BODY {
                            break;
                        }
                        if f.kind == FRAME_METHOD && f.payload.get(..4) == Some(&[0, 10, 0, 50]) {
                            return Err(PerfError::Protocol("ping connection closed".into()));
                        }
                    }
                    let rtt = t.elapsed().as_nanos() as u64;
                    // A round trip counts for the phase it began in and,
                    // if it straddles, for the one it ended in too.
                    let end = p.load(Ordering::Relaxed);
                    for h in hists.get_mut(at..=end).unwrap_or_default() {
                        h.record(rtt);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                c.close(Duration::from_secs(1));
                Ok(hists)
            })?;
        Ok(Pinger {
            stop,
            phase,
            thread,
        })
    }
}

/// The connection that adds and removes consumers.
struct Load {
    conn: Option<Conn>,
    uri: Uri,
    queue: String,
    /// Consumers currently subscribed (tags c0..cN).
    consumers: usize,
    channel_open: bool,
    window: usize,
    prefetch: u16,
    messages: u64,
}

impl Load {
    fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let mut c = Conn::open(&self.uri, "warren-perf stall load")?;
            c.open_channel(2)?;
            self.conn = Some(c);
            self.channel_open = false;
        }
        self.conn
            .as_mut()
            .ok_or_else(|| PerfError::Protocol("no connection".into()))
    }

    fn channel(&mut self) -> Result<&mut Conn> {
        if !self.channel_open {
            let q = self.queue.clone();
            let prefetch = self.prefetch;
            let c = self.conn()?;
            c.open_channel(1)?;
            if prefetch > 0 {
                c.rpc(
                    1,
                    &Method::BasicQos(BasicQos {
                        prefetch_count: prefetch,
                        ..Default::default()
                    }),
                    |m| matches!(m, Method::BasicQosOk(_)),
                )?;
            }
            c.rpc(
                1,
                &Method::QueueDeclare(QueueDeclare {
                    queue: Bytes::from(q),
                    ..Default::default()
                }),
                |m| matches!(m, Method::QueueDeclareOk(_)),
            )?;
            self.channel_open = true;
        }
        self.conn()
    }

    /// Send `n` requests built by `req`, at most `window` unanswered, and
    /// count the replies `is_reply` accepts.
    fn pipeline(
        &mut self,
        n: usize,
        req: impl Fn(usize) -> Method,
        is_reply: impl Fn(&Method) -> bool,
    ) -> Result<()> {
        let window = self.window.max(1);
        let c = self.channel()?;
        let (mut sent, mut got) = (0, 0);
        while got < n {
            while sent < n && sent - got < window {
                c.send(1, &req(sent))?;
                sent += 1;
            }
            let (ch, m) = c.next_method()?;
            if ch == 1 && is_reply(&m) {
                got += 1;
            }
        }
        Ok(())
    }

    fn run(&mut self, phase: Phase, n: usize) -> Result<()> {
        match phase {
            Phase::Consume => {
                let q = Bytes::from(self.queue.clone());
                let base = self.consumers;
                self.pipeline(
                    n,
                    |i| {
                        Method::BasicConsume(BasicConsume {
                            queue: q.clone(),
                            consumer_tag: Bytes::from(format!("c{}", base + i)),
                            ..Default::default()
                        })
                    },
                    |m| matches!(m, Method::BasicConsumeOk(_)),
                )?;
                self.consumers += n;
            }
            Phase::Cancel => {
                let n = self.consumers;
                self.pipeline(
                    n,
                    |i| {
                        Method::BasicCancel(BasicCancel {
                            consumer_tag: Bytes::from(format!("c{i}")),
                            nowait: false,
                        })
                    },
                    |m| matches!(m, Method::BasicCancelOk(_)),
                )?;
                self.consumers = 0;
            }
            Phase::CloseChannel => {
                let c = self.conn()?;
                c.rpc(
                    1,
                    &Method::ChannelClose(ChannelClose {
                        reply_code: 200,
                        reply_text: Bytes::from_static(b"bye"),
                        class_id: 0,
                        method_id: 0,
                    }),
                    |m| matches!(m, Method::ChannelCloseOk(_)),
                )?;
                self.channel_open = false;
                self.consumers = 0;
            }
            Phase::DeleteQueue => {
                let q = Bytes::from(self.queue.clone());
                let c = self.conn()?;
                c.rpc(
                    2,
                    &Method::QueueDelete(QueueDelete {
                        queue: q,
                        ..Default::default()
                    }),
                    |m| matches!(m, Method::QueueDeleteOk(_)),
                )?;
                // The consumers are gone; the next consume phase declares
                // the queue again on a fresh channel.
                c.rpc(
                    1,
                    &Method::ChannelClose(ChannelClose {
                        reply_code: 200,
                        reply_text: Bytes::from_static(b"bye"),
                        class_id: 0,
                        method_id: 0,
                    }),
                    |m| matches!(m, Method::ChannelCloseOk(_)),
                )?;
                self.channel_open = false;
                self.consumers = 0;
            }
            Phase::Publish => {
                let (uri, q, m) = (self.uri.clone(), self.queue.clone(), self.messages);
                let c = self.channel()?;
                let publisher = std::thread::spawn(move || publish(&uri, &q, m));
                // Read the deliveries meanwhile (without acknowledging).
                c.stream.set_read_timeout(Some(Duration::from_millis(50)))?;
                while !publisher.is_finished() {
                    match c.read_more() {
                        Ok(_) => c.rbuf.clear(),
                        Err(e) if super::client::is_timeout(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
                c.stream.set_read_timeout(None)?;
                c.rbuf.clear();
                publisher
                    .join()
                    .map_err(|_| PerfError::Protocol("publisher panicked".into()))??;
            }
            Phase::CloseConnection => {
                if let Some(c) = self.conn.take() {
                    c.close(Duration::from_secs(600));
                }
                self.channel_open = false;
                self.consumers = 0;
            }
        }
        Ok(())
    }
}

/// Publish `n` 16-byte messages to `queue` on a connection of its own,
/// then wait for a queue.declare round trip (all of them are routed by then).
fn publish(uri: &Uri, queue: &str, n: u64) -> Result<()> {
    let mut c = Conn::open(uri, "warren-perf stall publish")?;
    c.open_channel(1)?;
    let tpl = Template::publish("", queue, 16, false, c.frame_max);
    let mut batch = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        batch.clear();
        for _ in 0..k {
            batch.extend_from_slice(&tpl.bytes);
        }
        std::io::Write::write_all(&mut c.stream, &batch)?;
        left -= k;
    }
    c.rpc(
        1,
        &Method::QueueDeclare(QueueDeclare {
            queue: Bytes::copy_from_slice(queue.as_bytes()),
            passive: true,
            ..Default::default()
        }),
        |m| matches!(m, Method::QueueDeclareOk(_)),
    )?;
    c.close(Duration::from_secs(10));
    Ok(())
}

fn cpu(pid: Option<u32>) -> Option<f64> {
    pid.and_then(super::cpu::process)
}

/// Run the scenario; the exit status.
pub fn run(s: StallSettings) -> i32 {
    match run_inner(&s) {
        Ok(results) => {
            report(&s, &results);
            0
        }
        Err(e) => {
            eprintln!("warren-perf stall: {e}");
            1
        }
    }
}

fn run_inner(s: &StallSettings) -> Result<Vec<PhaseResult>> {
    let pinger = Pinger::start(&s.uri, s.phases.len())?;
    let mut load = Load {
        conn: None,
        uri: s.uri.clone(),
        queue: format!("stall-q-{}", std::process::id()),
        consumers: 0,
        channel_open: false,
        window: s.window,
        prefetch: s.prefetch,
        messages: s.messages,
    };
    load.conn()?;
    // A baseline before any load.
    std::thread::sleep(Duration::from_millis(500));
    let mut timing = Vec::new();
    for (i, &phase) in s.phases.iter().enumerate() {
        pinger.phase.store(i + 1, Ordering::Relaxed);
        let cpu0 = cpu(s.broker_pid);
        let t = Instant::now();
        load.run(phase, s.consumers)?;
        let wall = t.elapsed();
        let cpu1 = cpu(s.broker_pid);
        timing.push((phase, wall, cpu0.zip(cpu1).map(|(a, b)| b - a)));
        if !s.json {
            eprintln!("{}: {:.2} s", phase.name(), wall.as_secs_f64());
        }
    }
    // Let the last phase's pings finish.
    std::thread::sleep(Duration::from_millis(300));
    pinger.stop.store(true, Ordering::Relaxed);
    let hists = pinger
        .thread
        .join()
        .map_err(|_| PerfError::Protocol("ping thread panicked".into()))??;
    if load.channel_open {
        let q = Bytes::from(load.queue.clone());
        if let Ok(c) = load.conn() {
            let _ = c.rpc(
                2,
                &Method::QueueDelete(QueueDelete {
                    queue: q,
                    ..Default::default()
                }),
                |m| matches!(m, Method::QueueDeleteOk(_)),
            );
        }
    }
    if let Some(c) = load.conn.take() {
        c.close(Duration::from_secs(60));
    }
    let mut results = vec![PhaseResult {
        phase: Phase::Consume,
        wall: Duration::ZERO,
        cpu: None,
        ping: hists.first().cloned().unwrap_or_default(),
    }];
    for (i, (phase, wall, cpu)) in timing.into_iter().enumerate() {
        results.push(PhaseResult {
            phase,
            wall,
            cpu,
            ping: hists.get(i + 1).cloned().unwrap_or_default(),
        });
    }
    Ok(results)
}

fn report(s: &StallSettings, results: &[PhaseResult]) {
    let ms = |ns: u64| ns as f64 / 1e6;
    if s.json {
        let phases: Vec<String> = results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = if i == 0 { "idle" } else { r.phase.name() };
                format!(
                    "{{\"phase\":{},\"wall_s\":{:.3},\"broker_cpu_s\":{},\"ping_us\":{}}}",
                    json_str(name),
                    r.wall.as_secs_f64(),
                    r.cpu.map_or("null".into(), |c| format!("{c:.2}")),
                    LatencyUs::of(&r.ping).json()
                )
            })
            .collect();
        println!(
            "{{\"mode\":\"stall\",\"consumers\":{},\"phases\":[{}]}}",
            s.consumers,
            phases.join(",")
        );
        return;
    }
    println!("{} consumers on one channel and one queue", s.consumers);
    for (i, r) in results.iter().enumerate() {
        let name = if i == 0 { "idle" } else { r.phase.name() };
        let cpu = r
            .cpu
            .map_or(String::new(), |c| format!(", broker CPU {c:.2} s"));
        println!(
            "{name:>16}: {:7.2} s{cpu}; ping round trip max {:.1} ms, p99 {:.1} ms, p50 {:.2} ms ({} pings)",
            r.wall.as_secs_f64(),
            ms(r.ping.max()),
            ms(r.ping.quantile(0.99)),
            ms(r.ping.quantile(0.5)),
            r.ping.count()
        );
    }
}
