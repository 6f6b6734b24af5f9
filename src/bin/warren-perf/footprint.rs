//! `warren-perf footprint -- BROKER [ARGS...]`: the memory and start-up
//! numbers of a broker binary, measured from outside the process:
//!
//! - start-up to listening with an empty data directory (spawn to the first
//!   accepted TCP connection, polled every 100 µs; best and median of 5);
//! - idle RSS;
//! - RSS per idle connection with one open channel, N connections held;
//! - RSS with M queued 16-byte transient messages (no consumer), and after
//!   the queue is deleted.
//!
//! The broker is started as `BROKER ARGS... --listen 127.0.0.1:PORT
//! --data-dir DIR` (warren's options) with a fresh temporary directory.
//! With `--tls-port`, `--tls-listen 127.0.0.1:TLSPORT` is added too (the
//! certificate and key are up to `ARGS`) and every connection is made over
//! TLS there: the RSS per idle TLS connection.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren::codec::{Method, QueueDeclare, QueueDelete};
use warren::support::rss_and_peak as rss;

use super::client::{Conn, Result};
use super::msg::Template;
use super::uri::{self, Uri};

/// What to measure.
pub struct FootprintSettings {
    /// Broker command line (program first).
    pub broker: Vec<String>,
    /// Port to run it on.
    pub port: u16,
    /// `--tls-port`: connect over TLS with this `amqps://` URI (its port is
    /// the broker's TLS listener).
    pub tls: Option<Uri>,
    /// Idle connections to hold.
    pub connections: usize,
    /// Messages to queue.
    pub messages: u64,
    /// One JSON line instead of text.
    pub json: bool,
}

struct Broker {
    child: Child,
    started: Duration,
}

impl Broker {
    fn start(f: &FootprintSettings, dir: &std::path::Path) -> std::io::Result<Broker> {
        let _ = std::fs::remove_dir_all(dir);
        let (prog, args) = f.broker.split_first().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no broker command")
        })?;
        let t = Instant::now();
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", f.port));
        if let Some(u) = &f.tls {
            cmd.arg("--tls-listen").arg(format!("127.0.0.1:{}", u.port));
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        loop {
            if TcpStream::connect(("127.0.0.1", f.port)).is_ok() {
                return Ok(Broker {
                    child,
                    started: t.elapsed(),
                });
            }
            if let Some(status) = child.try_wait()? {
                return Err(std::io::Error::other(format!("broker exited: {status}")));
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return Err(std::io::Error::other("broker not listening after 20 s"));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

fn declare(c: &mut Conn, name: &str, passive: bool) -> Result<u32> {
    let m = c.rpc(
        1,
        &Method::QueueDeclare(QueueDeclare {
            queue: Bytes::copy_from_slice(name.as_bytes()),
            passive,
            ..Default::default()
        }),
        |m| matches!(m, Method::QueueDeclareOk(_)),
    )?;
    Ok(match m {
        Method::QueueDeclareOk(ok) => ok.message_count,
        _ => 0,
    })
}

/// Publish `n` 16-byte transient messages to queue `name` (default exchange)
/// in batches, then wait until the broker has queued them all.
fn fill(c: &mut Conn, name: &str, n: u64) -> Result<()> {
    declare(c, name, false)?;
    let t = Template::publish("", name, 16, false, c.frame_max);
    let batch: Vec<u8> = t.bytes.repeat(1000);
    let mut left = n;
    while left > 0 {
        let k = left.min(1000) as usize;
        c.stream
            .write_all(batch.get(..k * t.bytes.len()).unwrap_or(&batch))?;
        left -= k as u64;
    }
    // queue.declare is answered after every earlier publish on the channel
    // has been queued.
    let got = declare(c, name, true)?;
    if u64::from(got) != n {
        return Err(super::client::PerfError::Protocol(format!(
            "queue holds {got} messages, expected {n}"
        )));
    }
    Ok(())
}

/// Run it; returns the exit code.
pub fn run(f: FootprintSettings) -> i32 {
    match measure(&f) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("warren-perf footprint: {e}");
            1
        }
    }
}

fn measure(f: &FootprintSettings) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("warren-footprint-{}", std::process::id()));
    let mb = |b: u64| b as f64 / 1e6;
    let mut starts = Vec::new();
    for _ in 0..5 {
        let b = Broker::start(f, &dir)?;
        starts.push(b.started);
        b.stop();
    }
    starts.sort();
    let best = starts.first().copied().unwrap_or_default();
    let median = starts.get(starts.len() / 2).copied().unwrap_or_default();

    let b = Broker::start(f, &dir)?;
    let pid = b.pid();
    settle();
    let (idle, _) = rss(pid);

    let u = match &f.tls {
        Some(u) => u.clone(),
        None => uri::parse(&format!("amqp://guest:guest@127.0.0.1:{}/%2f", f.port))
            .map_err(super::client::PerfError::Protocol)?,
    };
    let t = Instant::now();
    let mut held = Vec::with_capacity(f.connections);
    for i in 0..f.connections {
        let mut c = Conn::open(&u, &format!("footprint-{i}"))?;
        c.open_channel(1)?;
        held.push(c.into_stream());
    }
    let open_time = t.elapsed();
    settle();
    let (with_conns, _) = rss(pid);
    let per_conn = with_conns.saturating_sub(idle) as f64 / f.connections.max(1) as f64;
    drop(held);
    b.stop();

    // A fresh broker for the queue: what the connections left in its heap
    // would otherwise be reused by the messages.
    let b = Broker::start(f, &dir)?;
    let pid = b.pid();
    settle();
    let mut c = Conn::open(&u, "footprint-fill")?;
    c.open_channel(1)?;
    let (before_fill, _) = rss(pid);
    let t = Instant::now();
    fill(&mut c, "footprint", f.messages)?;
    let fill_time = t.elapsed();
    settle();
    let (queued, hwm) = rss(pid);
    c.rpc(
        1,
        &Method::QueueDelete(QueueDelete {
            queue: Bytes::from_static(b"footprint"),
            ..Default::default()
        }),
        |m| matches!(m, Method::QueueDeleteOk(_)),
    )?;
    settle();
    let (after_delete, _) = rss(pid);
    c.close(Duration::from_secs(2));
    b.stop();
    let _ = std::fs::remove_dir_all(&dir);

    let per_msg = queued.saturating_sub(before_fill) as f64 / f.messages.max(1) as f64;
    if f.json {
        println!(
            "{{\"mode\":\"footprint\",\"tls\":{},\"startup_ms\":{{\"best\":{:.2},\"median\":{:.2}}},\"idle_rss\":{idle},\"connections\":{},\"rss_with_connections\":{with_conns},\"rss_per_connection\":{per_conn:.0},\"messages\":{},\"rss_with_messages\":{queued},\"rss_per_message\":{per_msg:.1},\"hwm\":{hwm},\"rss_after_delete\":{after_delete}}}",
            f.tls.is_some(),
            best.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            f.connections,
            f.messages,
        );
    } else {
        println!(
            "start-up to listening (empty data dir): best {:.1} ms, median {:.1} ms of 5",
            best.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3
        );
        println!("idle RSS: {:.2} MB", mb(idle));
        println!(
            "{} idle {}connections with one channel each (opened in {:.1} s): RSS {:.1} MB, {:.1} KB per connection",
            f.connections,
            if f.tls.is_some() { "TLS " } else { "" },
            open_time.as_secs_f64(),
            mb(with_conns),
            per_conn / 1e3
        );
        println!(
            "{} queued 16 B transient messages (published in {:.1} s): RSS {:.1} MB ({:.0} bytes per message), peak {:.1} MB; {:.1} MB after deleting the queue",
            f.messages,
            fill_time.as_secs_f64(),
            mb(queued),
            per_msg,
            mb(hwm),
            mb(after_delete)
        );
    }
    Ok(())
}
