//! One client must never stall everyone: what one connection does in bulk
//! (100,000 consumers added and removed) leaves other clients' round trips
//! short; a blocked publisher is not disconnected for heartbeats it cannot
//! send; garbage after a frame error is not parsed. Real sockets against the
//! embedded broker (or `WARREN_TEST_ADDR`, with fewer consumers: RabbitMQ
//! 3.10 itself takes minutes for 100,000 on one channel), and against the
//! real binary where its log or its process limits matter.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use amqp_raw::{unique, Raw};
use bytes::{Bytes, BytesMut};
use warren::codec::frame::{write_method, Frame};
use warren::codec::*;

fn s(v: &str) -> Bytes {
    Bytes::from(v.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The broker binary in a child process, logging at info to a file, with
/// its management API on a port of its own; killed when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
    mgmt: SocketAddr,
    dir: PathBuf,
}

impl Proc {
    /// Start it, with at most `nofile` open file descriptors if given.
    fn start(nofile: Option<u64>) -> Proc {
        let dir = common::temp_dir("stalls-proc");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mgmt: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let conf = dir.join("warren.conf");
        std::fs::write(
            &conf,
            format!(
                "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {}\n",
                mgmt.port()
            ),
        )
        .expect("config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.arg("--config")
            .arg(&conf)
            .arg("--no-prometheus")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log file"));
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut p = Proc {
            child: cmd.spawn().expect("spawn warren"),
            addr,
            mgmt,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(mgmt).is_err() {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("warren exited at start ({st}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "warren did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client that sends itself one message at a time until stopped, and
/// returns its slowest round trip.
fn pinger(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<Duration> {
    let mut r = Raw::open(addr);
    r.open_channel(1);
    let q = match r.rpc(
        1,
        QueueDeclare {
            exclusive: true,
            ..Default::default()
        },
    ) {
        Method::QueueDeclareOk(ok) => String::from_utf8_lossy(&ok.queue).into_owned(),
        other => panic!("queue.declare: {other:?}"),
    };
    match r.rpc(
        1,
        BasicConsume {
            queue: s(&q),
            no_ack: true,
            ..Default::default()
        },
    ) {
        Method::BasicConsumeOk(_) => {}
        other => panic!("basic.consume: {other:?}"),
    }
    std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            r.publish(1, "", &q, false, b"ping", BasicProperties::default());
            match r.recv_any() {
                (1, Method::BasicDeliver(_), Some(_)) => {}
                other => panic!("expected the ping back, got {other:?}"),
            }
            worst = worst.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(2));
        }
        worst
    })
}

/// Send `n` requests (pipelined, at most 5,000 unanswered) and wait for
/// their `n` replies on channel 1.
fn pipeline(r: &mut Raw, n: usize, req: impl Fn(usize) -> Method, ok: impl Fn(&Method) -> bool) {
    let (mut sent, mut got) = (0, 0);
    let mut out = BytesMut::new();
    while got < n {
        out.clear();
        while sent < n && sent - got < 5000 && out.len() < 64 * 1024 {
            write_method(&mut out, 1, &req(sent));
            sent += 1;
        }
        if !out.is_empty() {
            r.send_bytes(&out);
        }
        match r.recv() {
            Some(Frame::Method(1, m)) if ok(&m) => got += 1,
            Some(Frame::Method(_, m)) => panic!("unexpected {m:?}"),
            Some(_) => {}
            None => panic!("connection closed after {got} replies"),
        }
    }
}

fn consumers() -> usize {
    if let Ok(n) = std::env::var("WARREN_TEST_CONSUMERS") {
        n.parse().expect("WARREN_TEST_CONSUMERS")
    } else if std::env::var("WARREN_TEST_ADDR").is_ok() {
        2_000
    } else {
        100_000
    }
}

/// Add `n` consumers to `q` on channel 1 (tags c0..).
fn add_consumers(r: &mut Raw, q: &str, n: usize) {
    let q = s(q);
    pipeline(
        r,
        n,
        |i| {
            BasicConsume {
                queue: q.clone(),
                consumer_tag: s(&format!("c{i}")),
                ..Default::default()
            }
            .into()
        },
        |m| matches!(m, Method::BasicConsumeOk(_)),
    );
}

fn declare(r: &mut Raw, ch: u16, q: &str) {
    match r.rpc(
        ch,
        QueueDeclare {
            queue: s(q),
            ..Default::default()
        },
    ) {
        Method::QueueDeclareOk(_) => {}
        other => panic!("queue.declare: {other:?}"),
    }
}

/// Others' round trips stay short while one client adds 100,000 consumers
/// to one queue on one channel, cancels them, adds them again and closes
/// the channel, adds them again and deletes the queue. (Each was quadratic:
/// adding them stalled every client for 25 s, closing the channel for 10 s.)
#[test]
fn many_consumers_on_one_channel_do_not_stall_other_clients() {
    let b = common::start();
    let n = consumers();
    let stop = Arc::new(AtomicBool::new(false));
    let ping = pinger(b.addr, stop.clone());
    let mut r = Raw::open(b.addr);
    let q = unique("many-consumers");
    r.open_channel(1);
    r.open_channel(2);
    declare(&mut r, 1, &q);
    add_consumers(&mut r, &q, n);
    pipeline(
        &mut r,
        n,
        |i| {
            BasicCancel {
                consumer_tag: s(&format!("c{i}")),
                nowait: false,
            }
            .into()
        },
        |m| matches!(m, Method::BasicCancelOk(_)),
    );
    add_consumers(&mut r, &q, n);
    r.close_channel(1);
    r.open_channel(1);
    add_consumers(&mut r, &q, n);
    match r.rpc(
        2,
        QueueDelete {
            queue: s(&q),
            ..Default::default()
        },
    ) {
        Method::QueueDeleteOk(_) => {}
        other => panic!("queue.delete: {other:?}"),
    }
    // The broker cancels every consumer (consumer_cancel_notify); some of
    // the cancels came while waiting for delete-ok (RabbitMQ: maybe after).
    let is_cancel = |ch: u16, m: &Method| ch == 1 && matches!(m, Method::BasicCancel(_));
    let mut cancels = r
        .stash
        .iter()
        .filter(|(ch, m, _)| is_cancel(*ch, m))
        .count();
    while cancels < n {
        match r.recv_any() {
            (ch, m, _) if is_cancel(ch, &m) => cancels += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let worst = ping.join().unwrap();
    assert!(worst < Duration::from_secs(1), "a ping took {worst:?}");
}

/// With every consumer's prefetch window full, each further message must
/// not look at all of them (it did, and looked each up by tag: 10,000 full
/// consumers made each message cost 10^8 steps).
#[test]
fn messages_for_a_queue_whose_many_consumers_are_full_do_not_stall_others() {
    let b = common::start();
    let n = consumers() / 10;
    let stop = Arc::new(AtomicBool::new(false));
    let ping = pinger(b.addr, stop.clone());
    let mut r = Raw::open(b.addr);
    let q = unique("full-consumers");
    r.open_channel(1);
    match r.rpc(
        1,
        BasicQos {
            prefetch_count: 1,
            ..Default::default()
        },
    ) {
        Method::BasicQosOk(_) => {}
        other => panic!("basic.qos: {other:?}"),
    }
    declare(&mut r, 1, &q);
    add_consumers(&mut r, &q, n);
    let mut p = Raw::open(b.addr);
    p.open_channel(1);
    let mut delivered = 0;
    for _ in 0..n + 1000 {
        p.publish(1, "", &q, false, b"m", BasicProperties::default());
    }
    // Everyone gets one; the rest wait.
    while delivered < n {
        match r.recv_any() {
            (1, Method::BasicDeliver(_), _) => delivered += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // All routed (at once for warren; RabbitMQ's queue may lag behind).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match p.rpc(
            1,
            QueueDeclare {
                queue: s(&q),
                passive: true,
                ..Default::default()
            },
        ) {
            Method::QueueDeclareOk(ok) if ok.message_count == 1000 => break,
            Method::QueueDeclareOk(ok) => assert!(
                Instant::now() < deadline,
                "{} messages ready",
                ok.message_count
            ),
            other => panic!("queue.declare: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let worst = ping.join().unwrap();
    assert!(worst < Duration::from_secs(1), "a ping took {worst:?}");
    match p.rpc(
        1,
        QueueDelete {
            queue: s(&q),
            ..Default::default()
        },
    ) {
        Method::QueueDeleteOk(_) => {}
        other => panic!("queue.delete: {other:?}"),
    }
}

/// A publisher blocked by the memory alarm is not read, so its heartbeats
/// wait unread: it must not be disconnected for missing them (RabbitMQ
/// pauses the heartbeat monitor of blocked connections; warren closed it two
/// heartbeat intervals into the alarm). When the alarm clears, it is served.
#[test]
fn blocked_publisher_outlives_heartbeat_timeouts_and_is_served_after_the_alarm() {
    if std::env::var("WARREN_TEST_ADDR").is_ok() {
        return; // needs a tiny memory budget
    }
    let b = common::start_with(|c| {
        c.max_memory = 1 << 20;
        c.data_dir = None;
    });
    let mut p = Raw::tcp(b.addr);
    p.heartbeat = 1;
    p.handshake("guest", "guest", "/").expect("handshake");
    p.open_channel(1);
    let q = unique("blocked");
    declare(&mut p, 1, &q);
    let body = vec![b'x'; 100 * 1024];
    for _ in 0..12 {
        p.publish(1, "", &q, false, &body, BasicProperties::default());
    }
    // Over the budget: blocked, and what it sends now is not read.
    std::thread::sleep(Duration::from_millis(300));
    p.publish(1, "", &q, false, b"late", BasicProperties::default());
    // Four heartbeat intervals: it sends heartbeats (unread), the broker
    // sends its own, the connection stays.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        p.send_bytes(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
        if p.poll_frame(Duration::from_millis(500)).is_err() {
            panic!("closed {:?} into the alarm", t.elapsed());
        }
    }
    let mut o = Raw::open(b.addr);
    o.open_channel(1);
    let routed = match o.rpc(
        1,
        QueuePurge {
            queue: s(&q),
            ..Default::default()
        },
    ) {
        Method::QueuePurgeOk(ok) => ok.message_count,
        other => panic!("queue.purge: {other:?}"),
    };
    assert!((11..=12).contains(&routed), "{routed} routed while blocked");
    // The alarm is clear: the rest of its messages go through, and it is
    // answered.
    match p.rpc(
        1,
        QueueDeclare {
            queue: s(&q),
            passive: true,
            ..Default::default()
        },
    ) {
        Method::QueueDeclareOk(ok) => assert_eq!(ok.message_count, 13 - routed),
        other => panic!("queue.declare: {other:?}"),
    }
}

/// After a frame error the rest of the input is dropped unparsed: a MiB of
/// garbage gets one connection.close and one log line (it got one per read
/// of garbage, 17 per MiB), and the broker serves others.
#[test]
fn garbage_after_a_frame_error_is_logged_once() {
    let b = Proc::start(None);
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    // A method frame whose end octet is wrong, then frames with bad ends.
    let mut out = vec![1, 0, 1, 0, 0, 0, 4, 0, 60, 0, 10, 0xFF];
    let pattern = [1u8, 0, 1, 0, 0, 0, 1, b'x', 0];
    out.extend(pattern.iter().copied().cycle().take(1 << 20));
    r.send_bytes(&out);
    assert_eq!(r.expect_connection_close().reply_code, 501);
    let mut other = Raw::open(b.addr);
    other.open_channel(1);
    declare(&mut other, 1, &unique("after-garbage"));
    std::thread::sleep(Duration::from_millis(200));
    let log = b.log();
    let errors = log
        .lines()
        .filter(|l| l.contains("frame end octet"))
        .count();
    assert_eq!(errors, 1, "{log}");
}

/// GET `path` from the management API as guest: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response {out:?}"));
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

/// The broker has accepted this connection: connection.start came.
fn started(s: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(1))
}

/// Out of file descriptors, the broker kept failing to accept and stopped
/// trying: connections waiting in the listen backlog got no new readiness
/// event, and the AMQP listener was dead for good while the management API
/// said all was well. Now it retries, the health checks fail while it lasts
/// (a descriptor held in reserve lets the management API answer), the log
/// says so once a second, and once descriptors free up the waiting
/// connections are served.
#[test]
fn out_of_file_descriptors_the_listener_recovers() {
    use std::io::Write;
    let b = Proc::start(Some(64));
    let t0 = Instant::now();
    let mut socks = Vec::new();
    for _ in 0..60 {
        let mut s = std::net::TcpStream::connect(b.addr).expect("connect");
        s.write_all(warren::codec::frame::PROTOCOL_HEADER)
            .expect("header");
        socks.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (mut served, mut waiting) = (Vec::new(), Vec::new());
    for mut s in socks {
        if started(&mut s, Duration::from_millis(20)) {
            served.push(s);
        } else {
            waiting.push(s);
        }
    }
    assert!(!waiting.is_empty(), "not out of descriptors");
    assert!(
        served.len() > waiting.len() + 5,
        "{} served, {} waiting",
        served.len(),
        waiting.len()
    );
    // The health checks say why.
    let (code, body) = http_get(b.mgmt, "/api/health/checks/alarms");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("\"status\":\"failed\"") && body.contains("Too many open files"),
        "{body}\n{}",
        b.log()
    );
    let port = format!("/api/health/checks/port-listener/{}", b.addr.port());
    assert_eq!(http_get(b.mgmt, &port).0, 503);
    assert_eq!(
        http_get(b.mgmt, "/api/health/checks/protocol-listener/amqp").0,
        503
    );
    // Retried ten times a second, reported once a second.
    std::thread::sleep(Duration::from_secs(2));
    let fails = |log: &str| {
        log.lines()
            .filter(|l| l.contains("AMQP accept failed"))
            .count()
    };
    let failed = fails(&b.log());
    assert!(
        failed >= 2 && failed as u64 <= t0.elapsed().as_secs() + 1,
        "{failed} lines:\n{}",
        b.log()
    );
    // Descriptors free up: those waiting in the backlog are served.
    served.truncate(served.len() - waiting.len() - 5);
    for s in &mut waiting {
        assert!(
            started(s, Duration::from_secs(5)),
            "a waiting connection was not served"
        );
    }
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    declare(&mut r, 1, &unique("after-emfile"));
    assert_eq!(http_get(b.mgmt, "/api/health/checks/alarms").0, 200);
    assert_eq!(http_get(b.mgmt, &port).0, 200);
    // And the end is reported.
    let log = b.log();
    let end = log.rfind("AMQP accepting connections again").unwrap_or(0);
    assert!(end > log.rfind("AMQP accept failed").unwrap_or(0), "{log}");
}

/// An in-memory core whose channel 1 holds `unacked` of `total` messages
/// (bodies: their index) unacknowledged, delivered to two consumers.
fn pair_with_unacked(total: u32, unacked: u32) -> warren::testing::Pair {
    use warren::codec::frame::{write_method, Frame};
    let mut p = warren::testing::Pair::new(warren::Config {
        data_dir: None,
        max_memory: 1 << 34,
        ..warren::Config::default()
    });
    p.handshake(0);
    p.send(
        1,
        QueueDeclare {
            queue: s("q"),
            ..Default::default()
        },
    );
    let mut out = BytesMut::new();
    for i in 0..total {
        write_method(
            &mut out,
            1,
            &BasicPublish {
                routing_key: s("q"),
                ..Default::default()
            }
            .into(),
        );
        Frame::Header(
            1,
            Box::new(ContentHeader {
                class_id: 60,
                body_size: 4,
                properties: BasicProperties::default(),
            }),
        )
        .encode(&mut out);
        Frame::Body(1, Bytes::copy_from_slice(&i.to_be_bytes())).encode(&mut out);
    }
    p.send_raw(&out);
    p.send(
        1,
        BasicQos {
            prefetch_count: u16::try_from(unacked / 2).expect("prefetch"),
            ..Default::default()
        },
    );
    for tag in ["a", "b"] {
        p.send(
            1,
            BasicConsume {
                queue: s("q"),
                consumer_tag: s(tag),
                ..Default::default()
            },
        );
    }
    while !p.core.take_output(p.id).is_empty() {}
    p
}

/// Closing a channel puts its unacknowledged messages back in front of
/// what is ready. Oldest first, each went behind the last one, shifting all
/// of them: 100,000 unacked before 300,000 ready took seconds, during which
/// nobody was served. (In memory, without sockets.)
#[test]
fn closing_a_channel_with_many_unacked_messages_is_quick() {
    let mut p = pair_with_unacked(400_000, 100_000);
    let t = Instant::now();
    p.send(
        1,
        ChannelClose {
            reply_code: 200,
            ..Default::default()
        },
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "channel close took {took:?}");
    // Back in their places, marked redelivered.
    let (_, q) = p.core.engine.broker.queues.iter().next().unwrap();
    assert_eq!(q.ready.len(), 400_000);
    for (i, m) in q.ready.iter_memory().enumerate().step_by(997) {
        assert_eq!(m.body()[..], (i as u32).to_be_bytes());
        assert_eq!(m.redelivered(), i < 100_000);
    }
    p.core.check_invariants().unwrap();
}

/// Acks in random order: each took its delivery out of the middle of the
/// channel's list, shifting all before or after it (100,000 took 8 s).
#[test]
fn acking_many_deliveries_in_random_order_is_quick() {
    use warren::codec::frame::write_method;
    let mut p = pair_with_unacked(100_000, 100_000);
    let mut tags: Vec<u64> = (1..=100_000).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..tags.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tags.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut out = BytesMut::new();
    for &t in &tags {
        write_method(
            &mut out,
            1,
            &BasicAck {
                delivery_tag: t,
                multiple: false,
            }
            .into(),
        );
    }
    let t = Instant::now();
    p.send_raw(&out);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "100,000 acks took {took:?}");
    assert!(p.recv().is_empty(), "an ack was refused");
    let (_, q) = p.core.engine.broker.queues.iter().next().unwrap();
    assert_eq!((q.ready.len(), q.unacked), (0, 0));
    p.core.check_invariants().unwrap();
}
