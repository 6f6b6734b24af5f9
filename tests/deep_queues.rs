//! Deep queues, in simulated time with the real store: queues spill
//! beyond their windows and read back, and every feature that works on a
//! queue keeps working on a spilled one: order, priorities, requeue to the
//! original position, TTL expiry, max-length drop-head, dead-lettering,
//! basic.get, purge and delete, counts, and a restart. The bookkeeping
//! invariants hold at every step.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use bytes::Bytes;
use warren::codec::frame::Frame;
use warren::codec::*;
use warren::testing::Pair;
use warren::Config;

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("warren-deep-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        max_memory: 4 << 20,
        max_outbox: 256 << 20,
        ..Config::default()
    }
}

/// A pair on the store in `dir`, handshaken.
fn open(dir: &std::path::Path) -> Pair {
    let mut p = Pair::open(config(dir)).expect("open");
    p.handshake(0);
    p
}

/// The invariants hold at the end; the store goes.
fn finish(p: Pair, dir: &std::path::Path) {
    p.core.check_invariants().unwrap();
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

fn s(v: &str) -> Bytes {
    Bytes::copy_from_slice(v.as_bytes())
}

fn declare(p: &mut Pair, name: &str, durable: bool, args: FieldTable) {
    p.send(
        1,
        QueueDeclare {
            queue: s(name),
            durable,
            arguments: args,
            ..Default::default()
        },
    );
    let _ = p.recv();
}

fn body(i: usize) -> Vec<u8> {
    format!("message {i:07}").into_bytes()
}

fn props(persistent: bool, priority: u8) -> BasicProperties {
    BasicProperties {
        delivery_mode: Some(if persistent { 2 } else { 1 }),
        priority: Some(priority),
        ..Default::default()
    }
}

/// Publish `n` messages; every 200 the turn ends and time moves on.
fn publish_many(p: &mut Pair, key: &str, n: usize, mut f: impl FnMut(usize) -> BasicProperties) {
    for i in 0..n {
        p.publish(1, "", key, f(i), &body(i));
        if i % 200 == 199 {
            p.advance(Duration::from_millis(1));
            p.core.end_turn(p.now);
        }
    }
    p.advance(Duration::from_millis(1));
    p.core.end_turn(p.now);
    p.core.check_invariants().unwrap();
}

/// Deliveries and get-oks in `frames`: (delivery tag, redelivered, body).
fn deliveries(frames: Vec<Frame>) -> Vec<(u64, bool, Vec<u8>)> {
    let mut out: Vec<(u64, bool, Vec<u8>)> = Vec::new();
    for f in frames {
        match f {
            Frame::Method(_, Method::BasicDeliver(d)) => {
                out.push((d.delivery_tag, d.redelivered, Vec::new()))
            }
            Frame::Method(_, Method::BasicGetOk(g)) => {
                out.push((g.delivery_tag, g.redelivered, Vec::new()))
            }
            Frame::Body(_, b) => {
                if let Some(last) = out.last_mut() {
                    last.2.extend_from_slice(&b);
                }
            }
            _ => {}
        }
    }
    out
}

/// A queue's ready messages and how many of them are spilled.
fn counts(p: &Pair, name: &str) -> (u64, u64) {
    p.core
        .engine
        .broker
        .queues
        .iter()
        .map(|(_, q)| q)
        .find(|q| q.name == name.as_bytes())
        .map(|q| (q.ready.len(), q.ready.spilled()))
        .expect("queue")
}

fn spill_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("spill"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Set `channel`'s prefetch and subscribe to `queue` as `tag`.
fn subscribe(p: &mut Pair, channel: u16, queue: &str, tag: &str, prefetch: u16) {
    p.send(
        channel,
        BasicQos {
            prefetch_count: prefetch,
            ..Default::default()
        },
    );
    p.send(
        channel,
        BasicConsume {
            queue: s(queue),
            consumer_tag: s(tag),
            ..Default::default()
        },
    );
}

/// Consume everything from `name` with a consumer, acking as it goes;
/// returns the bodies in delivery order with their redelivered flags.
fn drain(p: &mut Pair, name: &str, ch: u16) -> Vec<(bool, Vec<u8>)> {
    p.send(ch, ChannelOpen::default());
    let _ = p.recv();
    subscribe(p, ch, name, "drain", 500);
    let mut out = Vec::new();
    loop {
        let got = deliveries(p.recv());
        if got.is_empty() {
            break;
        }
        let last = got.last().map(|g| g.0).unwrap_or(0);
        out.extend(got.into_iter().map(|(_, r, b)| (r, b)));
        p.send(
            ch,
            BasicAck {
                delivery_tag: last,
                multiple: true,
            },
        );
        p.core.check_invariants().unwrap();
    }
    p.send(
        ch,
        BasicCancel {
            consumer_tag: s("drain"),
            nowait: false,
        },
    );
    let _ = p.recv();
    out
}

/// Order, priorities and requeue: a priority queue (persistent and
/// transient messages mixed) spills per level; a consumer takes some
/// without acking and its channel closes, so they go back to their
/// places, marked redelivered; then everything comes out highest priority
/// first, in publish order within a priority.
#[test]
fn a_spilled_priority_queue_keeps_its_order_and_requeues_in_place() {
    let d = dir("order");
    let mut p = open(&d);
    let mut args = FieldTable::new();
    args.insert("x-max-priority", FieldValue::I32(3));
    declare(&mut p, "pq", true, args);
    const N: usize = 40_000;
    publish_many(&mut p, "pq", N, |i| props(i % 3 != 0, (i % 4) as u8));
    let (n, spilled) = counts(&p, "pq");
    assert_eq!(n, N as u64);
    // Each level keeps its head window (2,048) and up to twice its tail
    // window in memory.
    assert!(spilled > N as u64 / 3, "{spilled} spilled");
    assert!(spill_files(&d) >= 4, "one spill per level at least");
    // Take 3000 without acking, then close the channel: back in place.
    p.send(2, ChannelOpen::default());
    subscribe(&mut p, 2, "pq", "c", 3000);
    assert_eq!(deliveries(p.recv()).len(), 3000);
    p.send(
        2,
        ChannelClose {
            reply_code: 200,
            ..Default::default()
        },
    );
    let _ = p.recv();
    p.core.check_invariants().unwrap();
    let mut want: Vec<usize> = (0..N).collect();
    want.sort_by_key(|i| (3 - i % 4, *i));
    let got = drain(&mut p, "pq", 3);
    assert_eq!(got.len(), N);
    for (k, (i, (redelivered, b))) in want.iter().zip(got.iter()).enumerate() {
        assert_eq!(b, &body(*i), "delivery {k}");
        assert_eq!(*redelivered, k < 3000, "delivery {k}");
    }
    assert_eq!(counts(&p, "pq").0 as u32, 0);
    assert_eq!(spill_files(&d), 0, "spill files left behind");
    finish(p, &d);
}

/// TTL expiry and max-length drop-head on spilled queues, both
/// dead-lettering into one queue in order; basic.get from the middle.
#[test]
fn spilled_queues_expire_overflow_and_dead_letter_in_order() {
    let d = dir("ttl");
    let mut p = open(&d);
    declare(&mut p, "dlq", false, FieldTable::new());
    let mut dl = FieldTable::new();
    dl.insert("x-dead-letter-exchange", FieldValue::LongStr(Bytes::new()));
    dl.insert("x-dead-letter-routing-key", FieldValue::LongStr(s("dlq")));
    let mut ttl = dl.clone();
    ttl.insert("x-message-ttl", FieldValue::I32(60_000));
    declare(&mut p, "ttl", true, ttl);
    // More than one call expires (16,384): the rest goes in the next turns.
    const N: usize = 20_000;
    publish_many(&mut p, "ttl", N, |i| props(i % 2 == 0, 0));
    assert!(counts(&p, "ttl").1 > 0);
    // Past the TTL: every message leaves, in order, to the dead-letter queue.
    p.advance(Duration::from_secs(61));
    for _ in 0..20 {
        p.advance(Duration::from_millis(10));
        p.core.end_turn(p.now);
    }
    p.core.check_invariants().unwrap();
    assert_eq!(counts(&p, "ttl").0 as u32, 0);
    assert_eq!(counts(&p, "dlq").0 as u32, N as u32);

    let mut maxlen = dl.clone();
    maxlen.insert("x-max-length", FieldValue::I32(5000));
    declare(&mut p, "short", true, maxlen);
    publish_many(&mut p, "short", N, |_| props(true, 0));
    assert_eq!(counts(&p, "short").0 as u32, 5000);
    assert_eq!(counts(&p, "dlq").0 as u32, (2 * N - 5000) as u32);
    // basic.get reads a spilled head back.
    p.send(
        1,
        BasicGet {
            queue: s("short"),
            no_ack: true,
            ..Default::default()
        },
    );
    let got = deliveries(p.recv());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, body(N - 5000));
    let got = drain(&mut p, "dlq", 2);
    let want: Vec<Vec<u8>> = (0..N).chain(0..N - 5000).map(body).collect();
    assert_eq!(got.len(), want.len());
    for (k, ((_, b), w)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(b, w, "dead-lettered {k}");
    }
    finish(p, &d);
}

/// Purge and delete of spilled queues: counts come back at once, files
/// and store references go (with unacknowledged messages about, the
/// spilled ones are acknowledged in the background), and the message log
/// is collected once nothing refers to it.
#[test]
fn spilled_queues_purge_and_delete_without_reading_them() {
    let d = dir("purge");
    let mut p = open(&d);
    for name in ["a", "b", "c"] {
        declare(&mut p, name, true, FieldTable::new());
    }
    const N: usize = 15_000;
    for name in ["a", "b", "c"] {
        publish_many(&mut p, name, N, |_| props(true, 0));
        assert!(counts(&p, name).1 > 0);
    }
    // a: purged with nothing unacknowledged (one purge record).
    p.send(
        1,
        QueuePurge {
            queue: s("a"),
            ..Default::default()
        },
    );
    let m = p.recv_methods();
    assert!(
        m.iter()
            .any(|(_, m)| matches!(m, Method::QueuePurgeOk(ok) if ok.message_count == N as u32)),
        "{m:?}"
    );
    // b: one message unacknowledged, then purged: acks in the background.
    p.send(
        1,
        BasicGet {
            queue: s("b"),
            ..Default::default()
        },
    );
    assert_eq!(deliveries(p.recv()).len(), 1);
    p.send(
        1,
        QueuePurge {
            queue: s("b"),
            ..Default::default()
        },
    );
    let m = p.recv_methods();
    assert!(
        m.iter().any(
            |(_, m)| matches!(m, Method::QueuePurgeOk(ok) if ok.message_count == N as u32 - 1)
        ),
        "{m:?}"
    );
    p.core.check_invariants().unwrap();
    for _ in 0..200 {
        p.advance(Duration::from_millis(5));
        p.core.end_turn(p.now);
    }
    assert!(
        p.core.engine.msgs.purge_pending() == 0,
        "background acks done"
    );
    p.core.check_invariants().unwrap();
    // c: deleted.
    p.send(
        1,
        QueueDelete {
            queue: s("c"),
            ..Default::default()
        },
    );
    let m = p.recv_methods();
    assert!(
        m.iter()
            .any(|(_, m)| matches!(m, Method::QueueDeleteOk(ok) if ok.message_count == N as u32)),
        "{m:?}"
    );
    assert_eq!(spill_files(&d), 0, "spill files left behind");
    p.send(
        1,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    p.advance(Duration::from_millis(5));
    p.core.end_turn(p.now);
    p.core.check_invariants().unwrap();
    assert_eq!(p.core.engine.msgs.queued, 0);
    let st = p.core.engine.msgs.store.as_ref().expect("store");
    assert!(st.segments() <= 2, "{} segments kept", st.segments());
    drop(p);
    // Nothing comes back.
    let mut p = Pair::open(config(&d)).expect("reopen");
    for name in ["a", "b"] {
        assert_eq!(counts(&p, name).0, 0, "{name}");
    }
    p.handshake(0);
    finish(p, &d);
}

/// A restart without a clean stop: every persistent message of a spilled
/// durable queue comes back, in order (transient ones do not).
#[test]
fn a_spilled_durable_queue_survives_a_crash() {
    let d = dir("crash");
    let mut p = open(&d);
    declare(&mut p, "dq", true, FieldTable::new());
    const N: usize = 30_000;
    publish_many(&mut p, "dq", N, |i| props(i % 5 != 0, 0));
    assert!(counts(&p, "dq").1 > 0);
    // Some delivered and acked, some delivered and not acked (the ack of
    // 500 lets 500 more out: 1,500 delivered).
    subscribe(&mut p, 1, "dq", "c", 1000);
    let got = deliveries(p.recv());
    assert_eq!(got.len(), 1000);
    p.send(
        1,
        BasicAck {
            delivery_tag: 500,
            multiple: true,
        },
    );
    let _ = p.recv();
    p.advance(Duration::from_millis(5));
    p.core.end_turn(p.now);
    drop(p);
    let mut p = Pair::open(config(&d)).expect("reopen");
    p.handshake(0);
    p.core.check_invariants().unwrap();
    let want: Vec<usize> = (500..N).filter(|i| i % 5 != 0).collect();
    assert_eq!(counts(&p, "dq").0 as u32, want.len() as u32);
    let got = drain(&mut p, "dq", 2);
    assert_eq!(got.len(), want.len());
    for (k, ((redelivered, b), i)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(b, &body(*i), "message {k}");
        assert_eq!(*redelivered, *i < 1500, "message {k}");
    }
    finish(p, &d);
}

/// A clean stop keeps a spilled durable queue as it is: the next start
/// takes its spill files without reading them (nothing is spilled again)
/// and puts the messages that were in memory back at their places; every
/// persistent message comes out in order, highest priority first, those
/// delivered before marked redelivered; transient ones are gone.
#[test]
fn a_spilled_durable_queue_restarts_cleanly_without_reading_it() {
    let d = dir("clean");
    let mut p = open(&d);
    let mut args = FieldTable::new();
    args.insert("x-max-priority", FieldValue::I32(3));
    declare(&mut p, "cq", true, args);
    const N: usize = 40_000;
    publish_many(&mut p, "cq", N, |i| props(i % 3 != 0, (i % 4) as u8));
    // 3000 taken and not acked: requeued when the connection goes.
    subscribe(&mut p, 1, "cq", "c", 3000);
    let taken = deliveries(p.recv());
    assert_eq!(taken.len(), 3000);
    p.core.peer_closed(p.id);
    p.advance(Duration::from_millis(5));
    p.core.end_turn(p.now);
    let spilled_before = counts(&p, "cq").1;
    // The top level was read back whole to serve the 3000; the others
    // stay spilled.
    let spilled_levels = p
        .core
        .engine
        .broker
        .queues
        .iter()
        .flat_map(|(_, q)| q.ready.levels())
        .filter(|l| l.spill.count > 0)
        .count();
    assert!(spilled_levels >= 3, "{spilled_levels} levels spilled");
    assert!(spilled_before > 0);
    p.core.engine.close_store();
    drop(p);
    let files = spill_files(&d);
    assert!(files >= spilled_levels, "{files} spill files kept");

    let mut p = Pair::open(config(&d)).expect("reopen");
    p.handshake(0);
    p.core.check_invariants().unwrap();
    let st = p.core.engine.msgs.store.as_ref().expect("store");
    assert_eq!(st.spill.written, 0, "nothing spilled again");
    assert_eq!(st.spill.read, 0, "nothing read back at start");
    let mut want: Vec<usize> = (0..N).filter(|i| i % 3 != 0).collect();
    want.sort_by_key(|i| (3 - i % 4, *i));
    assert_eq!(counts(&p, "cq").0, want.len() as u64);
    // The 3000 taken were the first 3000 in queue order, transient ones
    // among them: of those, the persistent ones come back redelivered.
    let mut all: Vec<usize> = (0..N).collect();
    all.sort_by_key(|i| (3 - i % 4, *i));
    let first: std::collections::HashSet<usize> = all.iter().take(3000).copied().collect();
    let got = drain(&mut p, "cq", 2);
    assert_eq!(got.len(), want.len());
    for (k, (i, (redelivered, b))) in want.iter().zip(got.iter()).enumerate() {
        assert_eq!(b, &body(*i), "delivery {k}");
        assert_eq!(
            *redelivered,
            first.contains(i),
            "delivery {k} (message {i})"
        );
    }
    p.core.check_invariants().unwrap();
    assert_eq!(spill_files(&d), 0, "spill files left behind");
    finish(p, &d);
}

/// A crash with checkpoints: the restart loads the last checkpoint (the
/// durable messages that were in memory or unacknowledged, and the
/// spills) and replays only the log written since, not the backlog. What
/// was acknowledged after the checkpoint (spilled messages read back and
/// acked included) stays gone, unacknowledged deliveries come back
/// redelivered, and every other persistent message comes back in order.
#[test]
fn a_crash_replays_only_the_log_since_the_last_checkpoint() {
    let d = dir("checkpoint");
    let cfg = Config {
        checkpoint_bytes: 1 << 20,
        ..config(&d)
    };
    let mut p = Pair::open(cfg.clone()).expect("open");
    p.handshake(0);
    declare(&mut p, "dq", true, FieldTable::new());
    const N: usize = 60_000;
    publish_many(&mut p, "dq", N, |i| props(i % 7 != 0, 0));
    assert!(counts(&p, "dq").1 > 0);
    // 5000 delivered and acked, then 1000 delivered and left unacked.
    subscribe(&mut p, 1, "dq", "c", 1000);
    let mut taken = 0;
    while taken < 5000 {
        let got = deliveries(p.recv());
        let last = got.last().expect("deliveries").0;
        taken += got.len();
        p.send(
            1,
            BasicAck {
                delivery_tag: last,
                multiple: true,
            },
        );
    }
    let unacked = deliveries(p.recv()).len();
    assert_eq!(unacked, 1000);
    // More published after the last checkpoint, then a crash.
    // (No tick since publish_many's last: no checkpoint since then.)
    for i in N..N + 2000 {
        p.publish(1, "", "dq", props(true, 0), &body(i));
    }
    p.core.end_turn(p.now);
    let log = p
        .core
        .engine
        .msgs
        .store
        .as_ref()
        .expect("store")
        .disk_bytes();
    drop(p);

    let mut p = Pair::open(cfg).expect("reopen");
    let scanned = p
        .core
        .engine
        .msgs
        .store
        .as_ref()
        .expect("store")
        .stats
        .recovery_scanned;
    assert!(
        scanned > 0 && scanned < log / 4,
        "{scanned} of {log} log bytes replayed"
    );
    p.handshake(0);
    p.core.check_invariants().unwrap();
    let acked = taken;
    // The first `acked` deliveries were acknowledged (transient messages
    // among them); of the rest, the persistent ones come back.
    let want: Vec<usize> = (acked..N + 2000)
        .filter(|i| i % 7 != 0 || *i >= N)
        .collect();
    let got = drain(&mut p, "dq", 2);
    assert_eq!(got.len(), want.len(), "messages after the crash");
    for (k, ((redelivered, b), i)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(b, &body(*i), "message {k}");
        assert_eq!(*redelivered, *i < acked + unacked, "message {k} ({i})");
    }
    finish(p, &d);
}

/// Small messages in memory spill whole: transient ones never touch the
/// message log (nothing is written to it to spill them), persistent ones
/// are in it once (their own record, nothing more to spill them), and
/// both come back from their entries, in order and intact.
#[test]
fn small_messages_spill_whole_and_transient_ones_skip_the_log() {
    let d = dir("whole");
    let mut p = open(&d);
    declare(&mut p, "tq", false, FieldTable::new());
    declare(&mut p, "pq", true, FieldTable::new());
    const N: usize = 30_000;
    let logged = |p: &Pair| {
        let st = p.core.engine.msgs.store.as_ref().expect("store");
        (st.stats.bytes_written, st.spill.written)
    };
    let (log0, spill0) = logged(&p);
    publish_many(&mut p, "tq", N, |_| props(false, 0));
    let (log1, spill1) = logged(&p);
    assert!(counts(&p, "tq").1 > N as u64 / 2, "spilled");
    assert!(spill1 > spill0, "the spill files were written");
    assert_eq!(log1, log0, "transient messages written to the log");
    publish_many(&mut p, "pq", N, |_| props(true, 0));
    assert!(counts(&p, "pq").1 > N as u64 / 2, "spilled");
    let (log2, _) = logged(&p);
    // The persistent ones are in the log once each (their own records),
    // not again to be spilled.
    let per_msg = (log2 - log1) as f64 / N as f64;
    assert!(per_msg < 200.0, "{per_msg} bytes of log per message");
    let want: Vec<usize> = (0..N).collect();
    for (q, ch) in [("tq", 2), ("pq", 3)] {
        let got = drain(&mut p, q, ch);
        assert_eq!(got.len(), N, "{q}");
        for (k, (i, (redelivered, b))) in want.iter().zip(got.iter()).enumerate() {
            assert_eq!(b, &body(*i), "{q}: delivery {k}");
            assert!(!redelivered, "{q}: delivery {k}");
        }
    }
    let st = p.core.engine.msgs.store.as_ref().expect("store");
    assert_eq!(st.stats.unreadable, 0);
    assert_eq!(spill_files(&d), 0, "spill files left behind");
    finish(p, &d);
}
