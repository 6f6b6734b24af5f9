//! Soak: 100 connections × 10 channels (5 publishing with confirms, 5
//! consuming with acks) for about 3 seconds over 10 queues, with channels
//! and connections closed and reopened at random (a deterministic PRNG per
//! connection). Then every queue is drained and checked:
//!
//! - no loss: every confirmed message was delivered or is still queued;
//! - no phantom: everything delivered was published;
//! - no duplicate beyond redelivery: each message is delivered at most once
//!   with `redelivered=false`;
//! - nothing left behind: no consumers, no messages after the drain.
//!
//! Each connection is one thread driving the raw codec client
//! (`amqp_raw`), so 1000 channels cost 100 threads and no client library's
//! scheduling gets in the way. Passes against RabbitMQ
//! (`WARREN_TEST_ADDR=127.0.0.1:5672`) and warren.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_raw::Raw;
use bytes::Bytes;
use warren::codec::frame::Frame;
use warren::codec::*;

const CONNECTIONS: u64 = 100;
const CHANNELS: u16 = 10;
const QUEUES: usize = 10;
const RUN_FOR: Duration = Duration::from_secs(3);

/// splitmix64: a small deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Ledger {
    /// Every message id handed to basic.publish.
    attempted: HashSet<u64>,
    /// Ids the broker confirmed.
    confirmed: HashSet<u64>,
    /// Per id: (deliveries with redelivered=false, with redelivered=true).
    delivered: HashMap<u64, (u32, u32)>,
}

impl Ledger {
    fn delivery(&mut self, id: u64, redelivered: bool) {
        let e = self.delivered.entry(id).or_default();
        if redelivered {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
}

#[derive(Default)]
struct Stats {
    connects: AtomicU64,
    channel_closes: AtomicU64,
    deliveries: AtomicU64,
    nacks: AtomicU64,
}

struct Shared {
    addr: SocketAddr,
    queues: Vec<String>,
    ledger: Mutex<Ledger>,
    stats: Stats,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// channel.open sent.
    Opening,
    /// Publisher: confirm.select sent.
    Selecting,
    /// Usable.
    Ready,
    /// channel.close sent.
    Closing,
}

struct Chan {
    num: u16,
    publisher: bool,
    queue: usize,
    state: State,
    /// Publisher: sequence numbers of this incarnation → message ids.
    unconfirmed: BTreeMap<u64, u64>,
    seq: u64,
    /// Consumer: the delivery whose content is being read.
    delivering: Option<(u64, bool)>,
}

fn s(v: &str) -> Bytes {
    Bytes::from(v.to_string())
}

fn id_of(body: &[u8]) -> u64 {
    u64::from_be_bytes(body.try_into().expect("8-byte body"))
}

struct Client {
    sh: Arc<Shared>,
    c: u64,
    rng: Rng,
    /// Distinguishes message ids across connection incarnations.
    generation: u64,
    /// Messages published by this incarnation (the low bits of their ids).
    published: u64,
    raw: Raw,
    chans: Vec<Chan>,
}

impl Client {
    fn connect(sh: &Arc<Shared>, c: u64, rng: Rng, generation: u64) -> Client {
        let mut raw = Raw::open(sh.addr);
        sh.stats.connects.fetch_add(1, Ordering::Relaxed);
        let mut chans = Vec::new();
        for k in 0..CHANNELS {
            let num = k + 1;
            raw.send(
                num,
                ChannelOpen {
                    out_of_band: Bytes::new(),
                },
            );
            chans.push(Chan {
                num,
                publisher: k % 2 == 0,
                // Publisher 2j and consumer 2j+1 share a queue.
                queue: ((c * CHANNELS as u64 / 2 + k as u64 / 2) % QUEUES as u64) as usize,
                state: State::Opening,
                unconfirmed: BTreeMap::new(),
                seq: 0,
                delivering: None,
            });
        }
        Client {
            sh: sh.clone(),
            c,
            rng,
            generation,
            published: 0,
            raw,
            chans,
        }
    }

    fn chan(&mut self, num: u16) -> &mut Chan {
        &mut self.chans[(num - 1) as usize]
    }

    fn close_channel(&mut self, num: u16) {
        self.raw.send(
            num,
            ChannelClose {
                reply_code: 200,
                reply_text: s("random close"),
                class_id: 0,
                method_id: 0,
            },
        );
        let ch = self.chan(num);
        ch.state = State::Closing;
        ch.unconfirmed.clear();
        ch.delivering = None;
        self.sh.stats.channel_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// Publish a batch on every ready publisher channel with room.
    fn publish(&mut self) {
        for i in 0..self.chans.len() {
            let (num, ready) = {
                let ch = &self.chans[i];
                (
                    ch.num,
                    ch.publisher && ch.state == State::Ready && ch.unconfirmed.len() < 16,
                )
            };
            if !ready {
                continue;
            }
            if self.rng.below(100) < 2 {
                self.close_channel(num);
                continue;
            }
            let n = 1 + self.rng.below(8);
            for _ in 0..n {
                self.published += 1;
                // connection slot: 8 bits | generation: 16 | counter: 40
                let id = self.c << 56 | self.generation << 40 | self.published;
                let ch = &mut self.chans[i];
                ch.seq += 1;
                ch.unconfirmed.insert(ch.seq, id);
                let queue = self.sh.queues[ch.queue].clone();
                self.sh.ledger.lock().unwrap().attempted.insert(id);
                self.raw.publish(
                    num,
                    "",
                    &queue,
                    false,
                    &id.to_be_bytes(),
                    BasicProperties::default(),
                );
            }
        }
    }

    fn confirm(&mut self, num: u16, tag: u64, multiple: bool, ack: bool) {
        let ch = self.chan(num);
        let settled: Vec<u64> = if multiple {
            let rest = ch.unconfirmed.split_off(&(tag + 1));
            let done = std::mem::replace(&mut ch.unconfirmed, rest);
            done.into_values().collect()
        } else {
            ch.unconfirmed.remove(&tag).into_iter().collect()
        };
        if ack {
            let mut l = self.sh.ledger.lock().unwrap();
            l.confirmed.extend(settled);
        }
    }

    /// Handle one frame. `closing`: the connection is being closed, so
    /// nothing new is started.
    fn handle(&mut self, f: Frame, closing: bool) {
        match f {
            Frame::Heartbeat(_) => {}
            Frame::Method(0, Method::ConnectionClose(c)) => {
                panic!("client {}: server closed the connection: {c:?}", self.c)
            }
            Frame::Method(0, m) => panic!("unexpected {m:?}"),
            Frame::Method(num, m) => self.method(num, m, closing),
            Frame::Header(num, h) => {
                assert_eq!(h.body_size, 8, "channel {num}");
            }
            Frame::Body(num, body) => {
                let Some((tag, redelivered)) = self.chan(num).delivering.take() else {
                    panic!("body without basic.deliver on {num}");
                };
                let id = id_of(&body);
                self.sh.ledger.lock().unwrap().delivery(id, redelivered);
                self.sh.stats.deliveries.fetch_add(1, Ordering::Relaxed);
                if closing || self.chan(num).state != State::Ready {
                    // Left unacked: requeued when the channel goes.
                    return;
                }
                match self.rng.below(100) {
                    0..=2 => self.close_channel(num),
                    3..=7 => {
                        self.sh.stats.nacks.fetch_add(1, Ordering::Relaxed);
                        self.raw.send(
                            num,
                            BasicNack {
                                delivery_tag: tag,
                                multiple: false,
                                requeue: true,
                            },
                        );
                    }
                    _ => self.raw.send(
                        num,
                        BasicAck {
                            delivery_tag: tag,
                            multiple: false,
                        },
                    ),
                }
            }
        }
    }

    fn method(&mut self, num: u16, m: Method, closing: bool) {
        match m {
            Method::ChannelOpenOk(_) => {
                let publisher = self.chan(num).publisher;
                if publisher {
                    self.raw.send(num, ConfirmSelect { nowait: false });
                    self.chan(num).state = State::Selecting;
                } else {
                    let prefetch = 1 + self.rng.below(10) as u16;
                    let qi = self.chan(num).queue;
                    let queue = self.sh.queues[qi].clone();
                    self.raw.send(
                        num,
                        BasicQos {
                            prefetch_size: 0,
                            prefetch_count: prefetch,
                            global: false,
                        },
                    );
                    self.raw.send(
                        num,
                        BasicConsume {
                            ticket: 0,
                            queue: s(&queue),
                            consumer_tag: Bytes::new(),
                            no_local: false,
                            no_ack: false,
                            exclusive: false,
                            nowait: false,
                            arguments: FieldTable::new(),
                        },
                    );
                    self.chan(num).state = State::Ready;
                }
            }
            Method::ConfirmSelectOk(_) => {
                let ch = self.chan(num);
                ch.state = State::Ready;
                ch.seq = 0;
            }
            Method::BasicQosOk(_) | Method::BasicConsumeOk(_) => {}
            Method::BasicAck(a) => self.confirm(num, a.delivery_tag, a.multiple, true),
            Method::BasicNack(n) => self.confirm(num, n.delivery_tag, n.multiple, false),
            Method::BasicDeliver(d) => {
                self.chan(num).delivering = Some((d.delivery_tag, d.redelivered));
            }
            Method::ChannelCloseOk(_) => {
                if closing {
                    return;
                }
                self.raw.send(
                    num,
                    ChannelOpen {
                        out_of_band: Bytes::new(),
                    },
                );
                let ch = self.chan(num);
                ch.state = State::Opening;
                ch.unconfirmed.clear();
            }
            Method::ChannelClose(c) => panic!("client {}: channel {num} closed: {c:?}", self.c),
            other => panic!("client {}: unexpected {other:?} on {num}", self.c),
        }
    }

    /// Run until `until`: publish, read, settle.
    fn run(&mut self, until: Instant) {
        while Instant::now() < until {
            self.publish();
            let turn_end = Instant::now() + Duration::from_millis(5);
            loop {
                let wait = turn_end.saturating_duration_since(Instant::now());
                match self.raw.poll_frame(wait) {
                    Ok(Some(f)) => self.handle(f, false),
                    Ok(None) => break,
                    Err(()) => panic!("client {}: socket closed", self.c),
                }
                if Instant::now() >= turn_end {
                    break;
                }
            }
        }
    }

    /// connection.close and wait for close-ok.
    fn close(mut self) {
        self.raw.send(
            0,
            ConnectionClose {
                reply_code: 200,
                reply_text: s("bye"),
                class_id: 0,
                method_id: 0,
            },
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "client {}: no close-ok", self.c);
            match self.raw.poll_frame(Duration::from_millis(100)) {
                Ok(Some(Frame::Method(0, Method::ConnectionCloseOk(_)))) | Err(()) => return,
                Ok(Some(f)) => self.handle(f, true),
                Ok(None) => {}
            }
        }
    }
}

/// One connection slot: connect, run for a random while, close, again.
fn client(sh: Arc<Shared>, c: u64) {
    let mut rng = Rng::new(c);
    let mut generation = 0;
    while Instant::now() < sh.deadline {
        generation += 1;
        let life = Duration::from_millis(200 + rng.below(3500));
        let until = (Instant::now() + life).min(sh.deadline);
        let mut client = Client::connect(&sh, c, Rng::new(c << 16 | generation), generation);
        client.run(until);
        client.close();
    }
}

#[test]
fn soak_many_connections_and_channels() {
    let b = common::start();
    let started = Instant::now();
    let mut admin = Raw::open(b.addr);
    admin.open_channel(1);
    let queues: Vec<String> = (0..QUEUES)
        .map(|i| amqp_raw::unique(&format!("soak{i}")))
        .collect();
    let declare = |name: &str, passive: bool| QueueDeclare {
        ticket: 0,
        queue: s(name),
        passive,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::new(),
    };
    for q in &queues {
        assert!(matches!(
            admin.rpc(1, declare(q, false)),
            Method::QueueDeclareOk(_)
        ));
    }
    let sh = Arc::new(Shared {
        addr: b.addr,
        queues: queues.clone(),
        ledger: Mutex::new(Ledger::default()),
        stats: Stats::default(),
        deadline: Instant::now() + RUN_FOR,
    });
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let sh = sh.clone();
            std::thread::Builder::new()
                .name(format!("soak-{c}"))
                .stack_size(256 * 1024)
                .spawn(move || client(sh, c))
                .expect("spawn")
        })
        .collect();
    for t in threads {
        t.join().expect("client thread panicked");
    }
    let ran = started.elapsed();

    // Every consumer is gone once its connection is closed; then drain.
    let mut drained = 0u64;
    for q in &queues {
        let deadline = Instant::now() + Duration::from_secs(5);
        let count = loop {
            match admin.rpc(1, declare(q, true)) {
                Method::QueueDeclareOk(ok) if ok.consumer_count == 0 => break ok.message_count,
                Method::QueueDeclareOk(_) => {}
                other => panic!("{other:?}"),
            }
            assert!(Instant::now() < deadline, "{q}: consumers left behind");
            std::thread::sleep(Duration::from_millis(20));
        };
        if count > 0 {
            assert!(matches!(
                admin.rpc(
                    1,
                    BasicConsume {
                        ticket: 0,
                        queue: s(q),
                        consumer_tag: s("drain"),
                        no_local: false,
                        no_ack: true,
                        exclusive: false,
                        nowait: false,
                        arguments: FieldTable::new(),
                    }
                ),
                Method::BasicConsumeOk(_)
            ));
            for _ in 0..count {
                let (_, m, content) = admin.next_async();
                let Method::BasicDeliver(d) = m else {
                    panic!("drain: {m:?}")
                };
                let body = content.expect("content").body;
                sh.ledger
                    .lock()
                    .unwrap()
                    .delivery(id_of(&body), d.redelivered);
                drained += 1;
            }
            assert!(matches!(
                admin.rpc(
                    1,
                    BasicCancel {
                        consumer_tag: s("drain"),
                        nowait: false,
                    }
                ),
                Method::BasicCancelOk(_)
            ));
        }
        match admin.rpc(1, declare(q, true)) {
            Method::QueueDeclareOk(ok) => {
                assert_eq!((ok.message_count, ok.consumer_count), (0, 0), "{q}")
            }
            other => panic!("{other:?}"),
        }
        match admin.rpc(
            1,
            QueueDelete {
                ticket: 0,
                queue: s(q),
                if_unused: false,
                if_empty: false,
                nowait: false,
            },
        ) {
            Method::QueueDeleteOk(ok) => assert_eq!(ok.message_count, 0, "{q}"),
            other => panic!("{other:?}"),
        }
    }

    let l = sh.ledger.lock().unwrap();
    let st = &sh.stats;
    eprintln!(
        "soak: ran {:?}, total {:?}; {} connects, {} channel closes, {} published, \
         {} confirmed, {} deliveries ({} nacked), {} drained",
        ran,
        started.elapsed(),
        st.connects.load(Ordering::Relaxed),
        st.channel_closes.load(Ordering::Relaxed),
        l.attempted.len(),
        l.confirmed.len(),
        st.deliveries.load(Ordering::Relaxed),
        st.nacks.load(Ordering::Relaxed),
        drained
    );
    assert!(l.confirmed.len() > 1000, "too little traffic to mean much");
    assert!(st.channel_closes.load(Ordering::Relaxed) > 10);
    assert!(st.connects.load(Ordering::Relaxed) > CONNECTIONS);
    assert!(st.deliveries.load(Ordering::Relaxed) > 1000);
    let lost: Vec<_> = l
        .confirmed
        .iter()
        .filter(|id| !l.delivered.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost, e.g. {:x?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let phantom: Vec<_> = l
        .delivered
        .keys()
        .filter(|id| !l.attempted.contains(id))
        .collect();
    assert!(
        phantom.is_empty(),
        "delivered but never published: {phantom:x?}"
    );
    let dup: Vec<_> = l
        .delivered
        .iter()
        .filter(|(_, &(fresh, _))| fresh > 1)
        .collect();
    assert!(
        dup.is_empty(),
        "{} messages delivered twice without the redelivered flag, e.g. {:x?}",
        dup.len(),
        &dup[..dup.len().min(5)]
    );
}
