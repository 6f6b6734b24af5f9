//! `warren-perf floor`: the machine's zero-logic floor. A thread relays
//! bytes from a publisher socket to a consumer socket without parsing them
//! (the "broker" that does nothing: a mio loop with a buffer), while the same
//! publisher and consumer code as the broker benchmark pushes AMQP-framed
//! messages of the same size through it: once flat out (throughput), once one
//! message at a time (round-trip latency). A broker has strictly more work
//! to do per byte, so these are the numbers to compare it with.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::client::READ_CHUNK;
use super::cpu;
use super::hist::Histogram;
use super::msg::{Event, Scanner, Template};
use super::run::{per_sec, LatencyUs, Sender};

/// Bytes the relay reads at once (as warren's server loop does).
const RELAY_CHUNK: usize = 64 * 1024;
/// Most bytes the relay holds when the consumer is slower than the publisher.
const RELAY_BUFFER: usize = 16 * 1024 * 1024;
/// Reads before the relay writes what it has.
const RELAY_READS_PER_TURN: usize = 4;

/// Floor options.
pub struct FloorSettings {
    /// Body size.
    pub size: usize,
    /// Length of each of the two phases.
    pub duration: Duration,
    /// One JSON line instead of text.
    pub json: bool,
}

struct Phase {
    sent: u64,
    received: u64,
    bytes: u64,
    send_secs: f64,
    recv_secs: f64,
    hist: Histogram,
    /// CPU seconds the relay thread used.
    relay_cpu: Option<f64>,
}

/// A publisher socket and a consumer socket joined by a relay thread.
type Relay = thread::JoinHandle<io::Result<(u64, Option<f64>)>>;

fn relay_pair() -> io::Result<(TcpStream, TcpStream, Relay)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let p = TcpStream::connect(addr)?;
    let (from, _) = l.accept()?;
    let c = TcpStream::connect(addr)?;
    let (to, _) = l.accept()?;
    for s in [&p, &c, &from, &to] {
        s.set_nodelay(true)?;
    }
    let relay = thread::Builder::new().name("relay".into()).spawn(move || {
        let cpu0 = cpu::this_thread();
        let n = relay(from, to)?;
        Ok((n, cpu::this_thread().zip(cpu0).map(|(b, a)| b - a)))
    })?;
    Ok((p, c, relay))
}

/// The do-nothing broker: one mio loop, like warren's, that reads up to
/// 64 KiB at a time from `from` into a buffer (up to `RELAY_BUFFER` bytes
/// held, standing in for a queue) and writes whatever `to` accepts. No
/// parsing, no routing. Returns the bytes relayed.
fn relay(from: TcpStream, to: TcpStream) -> io::Result<u64> {
    use mio::net::TcpStream as MioStream;
    use mio::{Events, Interest, Poll, Token};

    from.set_nonblocking(true)?;
    to.set_nonblocking(true)?;
    let (mut from, mut to) = (MioStream::from_std(from), MioStream::from_std(to));
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut from, Token(0), Interest::READABLE)?;
    poll.registry()
        .register(&mut to, Token(1), Interest::WRITABLE)?;
    let mut events = Events::with_capacity(8);
    // Held bytes are buf[head..tail]; the buffer is zeroed once, never again.
    let mut buf = vec![0u8; RELAY_BUFFER];
    let (mut head, mut tail, mut total) = (0usize, 0usize, 0u64);
    let mut eof = false;
    loop {
        let mut progress = false;
        // Read while there is data and room (edge-triggered: until
        // WouldBlock), at most a few chunks before writing, as warren caps
        // its reads per turn: the bytes are written out while still in cache.
        let mut reads = 0;
        while !eof && reads < RELAY_READS_PER_TURN {
            reads += 1;
            // Move the held bytes to the front only once at least half the
            // buffer has been written out, so each byte moves at most once.
            if RELAY_BUFFER - tail < RELAY_CHUNK && head >= RELAY_BUFFER / 2 {
                buf.copy_within(head..tail, 0);
                tail -= head;
                head = 0;
            }
            let room = (RELAY_BUFFER - tail).min(RELAY_CHUNK);
            if room == 0 {
                break;
            }
            match from.read(buf.get_mut(tail..tail + room).unwrap_or_default()) {
                Ok(0) => eof = true,
                Ok(n) => {
                    tail += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while head < tail {
            match to.write(buf.get(head..tail).unwrap_or_default()) {
                Ok(n) => {
                    head += n;
                    total += n as u64;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if head == tail {
            head = 0;
            tail = 0;
            if eof {
                to.shutdown(Shutdown::Write)?;
                return Ok(total);
            }
        }
        if !progress {
            poll.poll(&mut events, None)?;
        }
    }
}

fn phase(size: usize, duration: Duration, one_at_a_time: bool) -> io::Result<Phase> {
    let epoch = Instant::now();
    let now_ns = move || epoch.elapsed().as_nanos() as u64;
    let (mut p, c, relay) = relay_pair()?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));

    let publisher = {
        let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
        thread::Builder::new().name("floor-pub".into()).spawn(
            move || -> io::Result<(u64, u64)> {
                let tpl = Template::publish("", "floor", size, false, 131_072);
                let mut tx = Sender::new(tpl, 0);
                let n = if one_at_a_time { 1 } else { tx.per_batch() };
                let mut end = now_ns();
                while !stop.load(SeqCst) {
                    tx.send(&mut p, n, now_ns)?;
                    end = now_ns();
                    if one_at_a_time {
                        while received.load(SeqCst) < tx.seq && !stop.load(SeqCst) {
                            thread::park_timeout(Duration::from_millis(50));
                        }
                    }
                }
                p.shutdown(Shutdown::Write)?;
                Ok((tx.seq, end))
            },
        )?
    };
    let waker = publisher.thread().clone();
    let consumer = {
        let received = Arc::clone(&received);
        thread::Builder::new().name("floor-con".into()).spawn(
            move || -> io::Result<(Histogram, u64, u64)> {
                let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
                let mut scanner = Scanner::default();
                let mut hist = Histogram::new();
                let (mut bytes, mut last) = (0u64, 0u64);
                loop {
                    if warren::support::read_into(&c, &mut rbuf, READ_CHUNK)? == 0 {
                        break;
                    }
                    let now = now_ns();
                    let mut k = 0;
                    while let Some(ev) = scanner
                        .next(&mut rbuf, 131_072)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                    {
                        if let Event::Msg(m) = ev {
                            k += 1;
                            bytes += m.size;
                            if let Some((t, _)) = m.stamp {
                                hist.record(now.saturating_sub(t));
                            }
                        }
                    }
                    if k > 0 {
                        last = now;
                        received.fetch_add(k, SeqCst);
                        if one_at_a_time {
                            waker.unpark();
                        }
                    }
                }
                Ok((hist, bytes, last))
            },
        )?
    };
    thread::sleep(duration);
    stop.store(true, SeqCst);
    let join_err = |_| io::Error::other("floor thread panicked");
    let (sent, send_end) = publisher.join().map_err(join_err)??;
    let (hist, bytes, recv_end) = consumer.join().map_err(join_err)??;
    let (_, relay_cpu) = relay
        .join()
        .map_err(join_err)?
        .map_err(|e| io::Error::new(e.kind(), format!("relay: {e}")))?;
    Ok(Phase {
        sent,
        received: received.load(SeqCst),
        bytes,
        send_secs: send_end as f64 / 1e9,
        recv_secs: recv_end as f64 / 1e9,
        hist,
        relay_cpu,
    })
}

/// Relay CPU time per relayed message, in µs.
fn relay_cpu_us(p: &Phase) -> Option<f64> {
    let c = p.relay_cpu?;
    (p.received > 0).then(|| c * 1e6 / p.received as f64)
}

fn cpu_note(us: Option<f64>) -> String {
    us.map(|u| format!(", relay CPU {u:.2} µs/msg"))
        .unwrap_or_default()
}

/// Run both phases and print the result; returns the exit code.
pub fn run(f: FloorSettings) -> i32 {
    let wire = Template::publish("", "floor", f.size, false, 131_072)
        .bytes
        .len();
    let say = |s: &str| {
        if f.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    say(&format!(
        "warren-perf floor: in-process TCP relay, {} B bodies ({wire} B per message on the wire), {:.1} s per phase",
        f.size,
        f.duration.as_secs_f64()
    ));
    let tp = match phase(f.size, f.duration, false) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warren-perf floor: {e}");
            return 1;
        }
    };
    let tl = LatencyUs::of(&tp.hist);
    let (send_rate, recv_rate) = (
        per_sec(tp.sent, tp.send_secs),
        per_sec(tp.received, tp.recv_secs),
    );
    let mb = per_sec(tp.bytes, tp.recv_secs) / 1e6;
    let tp_cpu = relay_cpu_us(&tp);
    say(&format!(
        "throughput:    sent {send_rate:.0} msg/s, received {recv_rate:.0} msg/s ({mb:.2} MB/s of bodies){}\n               latency under load: {}",
        cpu_note(tp_cpu),
        tl.line()
    ));
    let lp = match phase(f.size, f.duration, true) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warren-perf floor: {e}");
            return 1;
        }
    };
    let ll = LatencyUs::of(&lp.hist);
    let rt_rate = per_sec(lp.received, lp.recv_secs);
    let lp_cpu = relay_cpu_us(&lp);
    say(&format!(
        "one at a time: {rt_rate:.0} msg/s{}\n               latency: {}",
        cpu_note(lp_cpu),
        ll.line()
    ));
    let opt = |x: Option<f64>| x.map_or("null".to_string(), |v| format!("{v:.3}"));
    if f.json {
        println!(
            "{{\"mode\":\"floor\",\"size\":{},\"wire_bytes\":{wire},\"throughput\":{{\"sent\":{},\"received\":{},\"publish_rate\":{send_rate:.1},\"consume_rate\":{recv_rate:.1},\"consume_mb_s\":{mb:.3},\"latency_us\":{},\"relay_cpu_us_per_msg\":{}}},\"latency\":{{\"received\":{},\"rate\":{rt_rate:.1},\"latency_us\":{},\"relay_cpu_us_per_msg\":{}}}}}",
            f.size,
            tp.sent,
            tp.received,
            tl.json(),
            opt(tp_cpu),
            lp.received,
            ll.json(),
            opt(lp_cpu)
        );
    }
    0
}
