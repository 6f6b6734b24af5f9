//! Storage faults driven in the simulated core: a simulated disk
//! (`warren::testing::Faults`: its free space, and any disk operation of the
//! store failing, `DiskOp`) under the real store on a temporary directory,
//! with simulated time. What
//! must hold: a confirm (or tx.commit-ok, declare-ok of a durable queue,
//! purge-ok) only for what was written and synced; waiting publishes are
//! nacked when a commit fails; a change whose commit failed is closed with
//! 541 and retried; a short or failed write never duplicates bytes in a
//! segment; and everything confirmed is there after a restart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use warren::codec::frame::Frame;
use warren::codec::*;
use warren::testing::Pair;
use warren::testing::{DiskOp, Faults};
use warren::Config;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("warren-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(dir: &Path, faults: &Arc<Faults>) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        segment_size: 64 * 1024,
        // The simulated disk is small: the free-space limit is not what is
        // tested here, the store's own reservations are.
        min_free_disk: 0,
        faults: Some(faults.clone()),
        ..Config::default()
    }
}

fn persistent() -> BasicProperties {
    BasicProperties {
        delivery_mode: Some(2),
        ..Default::default()
    }
}

fn body(i: u64) -> Vec<u8> {
    format!("msg-{i:06}-").bytes().cycle().take(1000).collect()
}

fn seq_of(b: &[u8]) -> u64 {
    std::str::from_utf8(&b[4..10]).unwrap().parse().unwrap()
}

/// Publisher-confirm bookkeeping: tag → acked (true) or nacked (false).
#[derive(Default)]
struct Confirms {
    next_tag: u64,
    settled: std::collections::BTreeMap<u64, bool>,
    /// Message seq published with each tag.
    seq_of_tag: std::collections::BTreeMap<u64, u64>,
}

impl Confirms {
    fn published(&mut self, seq: u64) {
        self.next_tag += 1;
        self.seq_of_tag.insert(self.next_tag, seq);
    }

    fn absorb(&mut self, frames: &[Frame]) {
        for f in frames {
            let (tag, multiple, ok) = match f {
                Frame::Method(_, Method::BasicAck(a)) => (a.delivery_tag, a.multiple, true),
                Frame::Method(_, Method::BasicNack(n)) => (n.delivery_tag, n.multiple, false),
                _ => continue,
            };
            let lo = if multiple { 1 } else { tag };
            for t in lo..=tag {
                if let Some(prev) = self.settled.insert(t, ok) {
                    assert_eq!(prev, ok, "tag {t} confirmed twice, differently");
                    if !multiple {
                        panic!("tag {t} confirmed twice");
                    }
                }
            }
        }
    }

    fn acked(&self) -> BTreeSet<u64> {
        self.settled
            .iter()
            .filter(|(_, ok)| **ok)
            .map(|(t, _)| self.seq_of_tag[t])
            .collect()
    }

    fn nacked(&self) -> usize {
        self.settled.values().filter(|ok| !**ok).count()
    }
}

fn open(dir: &Path, faults: &Arc<Faults>) -> Pair {
    let mut p = Pair::open(config(dir, faults)).expect("open");
    p.handshake(0);
    p
}

fn declare(p: &mut Pair, queue: &str) -> Vec<Frame> {
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::copy_from_slice(queue.as_bytes()),
            durable: true,
            ..Default::default()
        },
    );
    p.recv()
}

fn publish(p: &mut Pair, c: &mut Confirms, queue: &str, seq: u64) {
    p.publish(1, "", queue, persistent(), &body(seq));
    c.published(seq);
    let f = p.recv();
    c.absorb(&f);
}

/// Everything in `queue` (basic.get, then acked), as message seqs.
fn drain(p: &mut Pair, queue: &str) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        p.send(
            1,
            BasicGet {
                queue: Bytes::copy_from_slice(queue.as_bytes()),
                no_ack: true,
                ..Default::default()
            },
        );
        let frames = p.recv();
        if frames
            .iter()
            .any(|f| matches!(f, Frame::Method(_, Method::BasicGetEmpty(_))))
        {
            return out;
        }
        let body: Vec<u8> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Body(_, b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(body.len(), 1000, "body of a recovered message: {frames:?}");
        let seq = seq_of(&body);
        assert_eq!(body, self::body(seq), "body of {seq}");
        out.push(seq);
    }
}

/// Walk every segment file: each must be a sequence of whole records with
/// matching CRCs, ending exactly at the end of the file (no duplicated or
/// stray bytes). Returns the number of records.
fn check_segments(dir: &Path) -> usize {
    let mut n = 0;
    let mut names: Vec<_> = std::fs::read_dir(dir.join("msgs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    names.sort();
    for path in names {
        let data = std::fs::read(&path).unwrap();
        let mut off = 0;
        while off < data.len() {
            assert!(off + 8 <= data.len(), "{path:?}: partial header at {off}");
            let len = u32::from_be_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            let crc = u32::from_be_bytes(data[off + 4..off + 8].try_into().unwrap());
            let end = off + 8 + len;
            assert!(
                len > 0 && end <= data.len(),
                "{path:?}: bad length at {off}"
            );
            assert_eq!(
                warren::testing::crc32c(&data[off + 8..end]),
                crc,
                "{path:?}: record at {off} fails its CRC"
            );
            off = end;
            n += 1;
        }
    }
    n
}

fn setup(tag: &str, free: u64) -> (PathBuf, Arc<Faults>, Pair, Confirms) {
    let dir = temp_dir(tag);
    let faults = Faults::with_free(free);
    let mut p = open(&dir, &faults);
    let f = declare(&mut p, "q");
    assert!(
        f.iter()
            .any(|f| matches!(f, Frame::Method(1, Method::QueueDeclareOk(_)))),
        "{f:?}"
    );
    p.send(1, ConfirmSelect::default());
    let _ = p.recv();
    (dir, faults, p, Confirms::default())
}

#[test]
fn a_failed_fsync_nacks_what_waited_and_later_publishes_are_confirmed() {
    let (dir, faults, mut p, mut c) = setup("fsync", 1 << 30);
    for seq in 0..3 {
        publish(&mut p, &mut c, "q", seq);
    }
    assert_eq!(c.acked().len(), 3);
    faults.fail_syncs(1);
    publish(&mut p, &mut c, "q", 3);
    assert_eq!(c.nacked(), 1, "the publish whose sync failed is nacked");
    // Until the retry time nothing new is confirmed.
    publish(&mut p, &mut c, "q", 4);
    assert_eq!(c.nacked(), 2);
    assert!(p
        .core
        .engine
        .msgs
        .store
        .as_ref()
        .is_some_and(|s| !s.healthy()));
    assert!(
        p.core.engine.alarms.blocked,
        "a failing store blocks publishers"
    );
    p.advance(Duration::from_millis(600));
    publish(&mut p, &mut c, "q", 5);
    assert!(c.acked().contains(&5), "confirmed once a retry works");
    p.core.end_turn(p.now);
    assert!(
        !p.core.engine.alarms.blocked,
        "the alarm clears once the store writes again"
    );
    drop(p);
    // The rewritten records sit at their offsets: no duplicated bytes.
    check_segments(&dir);
    let mut p = open(&dir, &faults);
    let got = drain(&mut p, "q");
    for seq in c.acked() {
        assert!(got.contains(&seq), "confirmed {seq} lost: {got:?}");
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "order {got:?}");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_short_write_is_written_again_without_duplicating_bytes() {
    let (dir, faults, mut p, mut c) = setup("short", 1 << 30);
    publish(&mut p, &mut c, "q", 0);
    faults.fail_writes(1);
    publish(&mut p, &mut c, "q", 1);
    assert_eq!(c.nacked(), 1);
    // The segment holds exactly what was synced before the failure.
    let records = check_segments(&dir);
    assert_eq!(records, 1, "only the first message is on disk");
    p.advance(Duration::from_millis(600));
    for seq in 2..200 {
        publish(&mut p, &mut c, "q", seq);
    }
    assert_eq!(c.nacked(), 1);
    drop(p);
    let records = check_segments(&dir);
    assert!(records >= 200, "{records} records");
    let mut p = open(&dir, &faults);
    let got = drain(&mut p, "q");
    // The nacked message was written by the retry: it may come back (a
    // nack promises nothing either way); every confirmed one must.
    let acked = c.acked();
    assert!(acked.iter().all(|s| got.contains(s)), "{got:?}");
    assert_eq!(got.len(), 200);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Room for the definitions log's reservation, four 64 KiB segments and a
/// little more: the fifth segment cannot be reserved.
const TIGHT: u64 = (1 << 20) + 4 * 64 * 1024 + 40 * 1024;

#[test]
fn a_full_disk_blocks_and_nacks_and_everything_confirmed_survives() {
    let (dir, faults, mut p, mut c) = setup("full", TIGHT);
    let mut seq = 0;
    // The sim does not stop reading a blocked publisher: it keeps
    // publishing into the full disk, which must nack, never confirm.
    while c.nacked() < 20 {
        publish(&mut p, &mut c, "q", seq);
        seq += 1;
        assert!(seq < 10_000, "the disk never filled");
    }
    assert!(
        p.core.engine.alarms.blocked,
        "publishers are blocked on a full disk"
    );
    let acked = c.acked();
    assert!(
        acked.len() > 50,
        "{} confirmed before the disk filled",
        acked.len()
    );
    // Confirms are ordered: nothing after the first nack was confirmed
    // while the disk stayed full.
    let first_nack = *c.settled.iter().find(|(_, ok)| !**ok).unwrap().0;
    assert!(
        c.settled.range(first_nack..).all(|(_, ok)| !*ok),
        "a confirm after a failed write"
    );
    drop(p);
    check_segments(&dir);
    // Crash-restart on the same full disk: it starts, and holds every
    // confirmed message.
    let mut p = open(&dir, &faults);
    let got = drain(&mut p, "q");
    for s in &acked {
        assert!(got.contains(s), "confirmed {s} lost");
    }
    // Draining freed the segments: publishing works again.
    p.advance(Duration::from_millis(600));
    p.core.end_turn(p.now);
    assert!(
        !p.core.engine.alarms.blocked,
        "alarm cleared after the queue was drained"
    );
    p.send(1, ConfirmSelect::default());
    let _ = p.recv();
    let mut c2 = Confirms::default();
    publish(&mut p, &mut c2, "q", 50_000);
    assert_eq!(c2.acked().len(), 1, "a publish after space came back");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn purging_frees_space_and_clears_the_alarm_at_once() {
    let (dir, faults, mut p, mut c) = setup("purge", TIGHT);
    let mut seq = 0;
    while !p.core.engine.alarms.blocked {
        publish(&mut p, &mut c, "q", seq);
        seq += 1;
        assert!(seq < 10_000, "the disk never filled");
    }
    let free_before = faults.free();
    p.send(
        1,
        QueuePurge {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    let f = p.recv();
    assert!(
        f.iter()
            .any(|f| matches!(f, Frame::Method(1, Method::QueuePurgeOk(_)))),
        "{f:?}"
    );
    // Same turn: the dead segments went, the next one is reserved, and the
    // alarm is off without waiting for a timer.
    assert!(faults.free() > free_before, "purge gave space back");
    assert!(
        !p.core.engine.alarms.blocked,
        "alarm still on after the purge"
    );
    let before = c.acked().len();
    publish(&mut p, &mut c, "q", seq);
    assert_eq!(c.acked().len(), before + 1);
    drop(p);
    let mut p = open(&dir, &faults);
    assert_eq!(drain(&mut p, "q"), vec![seq], "the purge is durable");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

fn close_code(frames: &[Frame]) -> Option<u16> {
    frames.iter().find_map(|f| match f {
        Frame::Method(0, Method::ConnectionClose(c)) => Some(c.reply_code),
        _ => None,
    })
}

#[test]
fn a_durable_declare_that_cannot_be_written_gets_541_and_is_written_later() {
    let dir = temp_dir("defs");
    let faults = Faults::with_free(1 << 30);
    let mut p = open(&dir, &faults);
    faults.fail_syncs(1);
    let f = declare(&mut p, "d");
    assert_eq!(close_code(&f), Some(541), "{f:?}");
    assert!(
        !f.iter()
            .any(|f| matches!(f, Frame::Method(_, Method::QueueDeclareOk(_)))),
        "declare-ok sent for a change that is not durable: {f:?}"
    );
    p.send(0, ConnectionCloseOk {});
    // The change stays staged and is written by a later commit.
    p.advance(Duration::from_millis(600));
    p.core.end_turn(p.now);
    drop(p);
    let mut p = open(&dir, &faults);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"d"),
            passive: true,
            ..Default::default()
        },
    );
    let f = p.recv();
    assert!(
        f.iter()
            .any(|f| matches!(f, Frame::Method(1, Method::QueueDeclareOk(_)))),
        "queue lost after its definition was retried: {f:?}"
    );
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_queue_deleted_while_writes_fail_stays_deleted() {
    let (dir, faults, mut p, mut c) = setup("delete", 1 << 30);
    for seq in 0..100 {
        publish(&mut p, &mut c, "q", seq);
    }
    faults.fail_syncs(1);
    p.send(
        1,
        QueueDelete {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    let f = p.recv();
    assert_eq!(close_code(&f), Some(541), "{f:?}");
    p.send(0, ConnectionCloseOk {});
    p.advance(Duration::from_millis(600));
    p.core.end_turn(p.now);
    drop(p);
    let mut p = open(&dir, &faults);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"q"),
            passive: true,
            ..Default::default()
        },
    );
    let f = p.recv();
    assert!(
        f.iter().any(|f| matches!(
            f,
            Frame::Method(1, Method::ChannelClose(c)) if c.reply_code == 404
        )),
        "deleted queue came back: {f:?}"
    );
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tx_commit_of_persistent_publishes_that_cannot_be_synced_gets_541() {
    let dir = temp_dir("tx");
    let faults = Faults::with_free(1 << 30);
    let mut p = open(&dir, &faults);
    declare(&mut p, "q");
    p.send(1, TxSelect {});
    let _ = p.recv();
    p.publish(1, "", "q", persistent(), &body(1));
    faults.fail_syncs(1);
    p.send(1, TxCommit {});
    let f = p.recv();
    assert_eq!(close_code(&f), Some(541), "{f:?}");
    assert!(
        !f.iter()
            .any(|f| matches!(f, Frame::Method(_, Method::TxCommitOk(_)))),
        "commit-ok for what is not on disk: {f:?}"
    );
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Many durable declares and bindings: each one appends a record to the
/// definitions log (no snapshot rewrite per change), the log is folded into
/// a snapshot as it grows, and all of it is there after a restart.
#[test]
fn thousands_of_durable_declares_are_logged_and_recovered() {
    let dir = temp_dir("many");
    let faults = Faults::with_free(1 << 30);
    let mut p = open(&dir, &faults);
    const N: usize = 5000;
    p.send(
        1,
        ExchangeDeclare {
            exchange: Bytes::from_static(b"x"),
            kind: Bytes::from_static(b"direct"),
            durable: true,
            ..Default::default()
        },
    );
    // Pipelined, a hundred operations a turn (one commit each), as a
    // definitions import or a client that does not wait would send them.
    let mut batch = bytes::BytesMut::new();
    for i in 0..N {
        let q = Bytes::from(format!("queue-{i:05}"));
        let mut ops: Vec<Method> = vec![
            QueueDeclare {
                queue: q.clone(),
                durable: true,
                ..Default::default()
            }
            .into(),
            QueueBind {
                queue: q.clone(),
                exchange: Bytes::from_static(b"x"),
                routing_key: q,
                ..Default::default()
            }
            .into(),
        ];
        if i % 3 == 0 && i > 0 {
            // Deletes and unbinds are logged too.
            let old = Bytes::from(format!("queue-{:05}", i - 1));
            ops.push(
                QueueUnbind {
                    queue: old.clone(),
                    exchange: Bytes::from_static(b"x"),
                    routing_key: old,
                    ..Default::default()
                }
                .into(),
            );
        }
        for m in ops {
            warren::codec::frame::write_method(&mut batch, 1, &m);
        }
        if i % 100 == 99 {
            p.send_raw(&batch);
            batch.clear();
            let f = p.recv();
            assert!(close_code(&f).is_none(), "{f:?}");
        }
    }
    p.send(
        1,
        QueueDelete {
            queue: Bytes::from_static(b"queue-00007"),
            ..Default::default()
        },
    );
    let _ = p.recv();
    let before = p.core.engine.definitions();
    drop(p);
    let log = std::fs::metadata(dir.join("definitions.log"))
        .unwrap()
        .len();
    let snap = std::fs::metadata(dir.join("definitions")).unwrap().len();
    assert!(
        snap > 100_000 && log < snap * 2,
        "log {log} bytes, snapshot {snap}: the log was never folded into a snapshot"
    );
    let p = open(&dir, &faults);
    let mut after = p.core.engine.definitions();
    let mut before = before;
    for d in [&mut before, &mut after] {
        d.queues.sort_by(|a, b| a.name.cmp(&b.name));
        d.bindings.sort_by(|a, b| a.dest.cmp(&b.dest));
        d.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        d.vhosts.sort();
        d.users.sort();
        d.permissions.sort();
    }
    assert_eq!(after.queues.len(), N - 1);
    assert_eq!(after.bindings.len(), N - 1 - (N - 1) / 3);
    assert_eq!(before, after, "definitions after a restart");
    eprintln!("{N} durable queues: log {log} bytes, snapshot {snap} bytes");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A management API change whose commit fails is answered 500, not 2xx.
#[test]
fn the_management_api_answers_500_when_a_change_cannot_be_made_durable() {
    use warren::testing::{HttpConn, Mgmt};
    let dir = temp_dir("http");
    let faults = Faults::with_free(1 << 30);
    let mut p = open(&dir, &faults);
    let mut mgmt = Mgmt::new(Vec::new(), None);
    let peer = "127.0.0.1:5555".parse().unwrap();
    let put = |h: &mut HttpConn, name: &str| {
        let body = br#"{"durable":true}"#;
        let req = format!(
            "PUT /api/queues/%2F/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        h.inbuf.extend_from_slice(req.as_bytes());
        h.inbuf.extend_from_slice(body);
    };
    let mut h = HttpConn::new(peer, p.now);
    put(&mut h, "web1");
    h.process(&mut p.core, &mut mgmt, p.now);
    let out = String::from_utf8_lossy(h.output()).into_owned();
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    let mut h = HttpConn::new(peer, p.now);
    faults.fail_syncs(1);
    put(&mut h, "web2");
    h.process(&mut p.core, &mut mgmt, p.now);
    let out = String::from_utf8_lossy(h.output()).into_owned();
    assert!(out.starts_with("HTTP/1.1 500"), "{out}");
    assert!(out.contains("could not be made durable"), "{out}");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bodies of the deliveries among `frames`, as message seqs.
fn delivered_seqs(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Body(_, b) if b.len() == 1000 => Some(seq_of(b)),
            _ => None,
        })
        .collect()
}

/// Out of file descriptors, a paged-out message cannot be read back from
/// its segment: it used to be dropped as unreadable. Now it stays at the
/// head of its queue (basic.get answers get-empty meanwhile, a consumer
/// waits), and once segments can be opened again every message is
/// delivered, in order, none lost.
#[test]
fn out_of_descriptors_paged_messages_wait_instead_of_being_dropped() {
    let dir = temp_dir("emfile");
    let faults = Faults::with_free(1 << 30);
    let mut p = Pair::open(Config {
        // Beyond half of it, contents are paged out to their segments.
        max_memory: 256 * 1024,
        ..config(&dir, &faults)
    })
    .expect("open");
    p.handshake(0);
    declare(&mut p, "q");
    p.send(1, ConfirmSelect::default());
    let _ = p.recv();
    let mut c = Confirms::default();
    const N: u64 = 200;
    for seq in 0..N {
        publish(&mut p, &mut c, "q", seq);
    }
    p.advance(Duration::from_millis(10));
    c.absorb(&p.recv());
    assert_eq!(c.acked().len() as u64, N, "confirmed");

    // basic.get: the resident messages come, then get-empty at the first
    // paged-out one; nothing is dropped.
    faults.fail_opens(u32::MAX);
    let first = drain(&mut p, "q");
    assert!(
        !first.is_empty() && (first.len() as u64) < N,
        "{} of {N} got before the first paged-out message",
        first.len()
    );
    assert_eq!(first, (0..first.len() as u64).collect::<Vec<_>>());
    p.core.check_invariants().unwrap();

    // A consumer waits while segments cannot be opened...
    p.send(
        1,
        BasicConsume {
            queue: Bytes::from_static(b"q"),
            consumer_tag: Bytes::from_static(b"c"),
            no_ack: true,
            ..Default::default()
        },
    );
    let mut got = delivered_seqs(&p.recv());
    p.advance(Duration::from_millis(600));
    got.extend(delivered_seqs(&p.recv()));
    assert!(got.is_empty(), "delivered while unreadable: {got:?}");
    // ... and gets every message once they can: no new input needed, the
    // next tick serves the queue again.
    faults.fail_opens(0);
    for _ in 0..3 {
        p.advance(Duration::from_millis(600));
        got.extend(delivered_seqs(&p.recv()));
    }
    assert_eq!(got, (first.len() as u64..N).collect::<Vec<_>>());
    p.core.check_invariants().unwrap();
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// basic.get skips unreadable messages in a loop: with thousands of
/// damaged records in a row it used to call itself once per record and
/// overflowed the stack. Every damaged message is dropped (logged), the
/// readable ones come, then get-empty, and the accounts are right.
#[test]
fn basic_get_past_many_damaged_records_does_not_recurse() {
    let dir = temp_dir("damaged-get");
    let faults = Faults::with_free(1 << 30);
    let mut p = Pair::open(Config {
        // Beyond 1 MiB of content, messages are paged out to disk.
        max_memory: 2 << 20,
        ..config(&dir, &faults)
    })
    .expect("open");
    p.handshake(0);
    declare(&mut p, "q");
    const N: u64 = 8_000;
    for seq in 0..N {
        p.publish(1, "", "q", persistent(), &body(seq));
    }
    p.advance(Duration::from_millis(10));
    let _ = p.recv();
    // Damage every record on disk: the paged-out messages cannot be read.
    for e in std::fs::read_dir(dir.join("msgs")).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "seg") {
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            std::fs::write(&path, vec![0xA5u8; len]).unwrap();
        }
    }
    // On a small stack, which the recursion overflowed.
    let got = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let got = drain(&mut p, "q");
            p.core.check_invariants().unwrap();
            got
        })
        .unwrap()
        .join()
        .expect("basic.get past damaged records");
    assert!(
        !got.is_empty() && (got.len() as u64) < N - 2_000,
        "{} of {N} readable",
        got.len()
    );
    // What is readable (what was in memory, and what was spilled whole
    // from memory: small messages published before content was paged out)
    // comes in order; the rest is dropped.
    assert_eq!(got[0], 0);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn passive_declare_ok(p: &mut Pair, queue: &str) -> bool {
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::copy_from_slice(queue.as_bytes()),
            passive: true,
            ..Default::default()
        },
    );
    p.recv()
        .iter()
        .any(|f| matches!(f, Frame::Method(1, Method::QueueDeclareOk(_))))
}

/// The first start writes the definitions as a snapshot (temporary file,
/// fdatasync, rename over `definitions`, fsync of the directory). When any
/// step fails, the durable declare that waited for that commit gets 541,
/// no temporary file is left, and the snapshot is written by a later commit.
#[test]
fn a_definitions_snapshot_that_cannot_be_written_gets_541_and_is_written_later() {
    for op in [
        DiskOp::Rename,
        DiskOp::Write,
        DiskOp::SyncData,
        DiskOp::SyncDir,
        DiskOp::Create,
    ] {
        let dir = temp_dir(&format!("snapshot-{op:?}"));
        let faults = Faults::with_free(1 << 30);
        let mut p = Pair::open(config(&dir, &faults)).expect("open");
        // The first commit (during the handshake) fails on the rename and
        // is retried 500 ms later: the declare below meets the retry.
        faults.fail(DiskOp::Rename, 1);
        p.handshake(0);
        assert!(!dir.join("definitions").exists(), "{op:?}");
        assert!(!dir.join("definitions.tmp").exists(), "{op:?}");
        p.advance(Duration::from_millis(600));
        faults.fail(op, 1);
        let f = declare(&mut p, "d");
        assert_eq!(close_code(&f), Some(541), "{op:?}: {f:?}");
        assert!(
            !f.iter()
                .any(|f| matches!(f, Frame::Method(_, Method::QueueDeclareOk(_)))),
            "{op:?}: declare-ok for a change that is not durable: {f:?}"
        );
        assert!(!dir.join("definitions.tmp").exists(), "{op:?}");
        p.send(0, ConnectionCloseOk {});
        p.advance(Duration::from_millis(600));
        p.core.end_turn(p.now);
        assert!(dir.join("definitions").exists(), "{op:?}: not retried");
        drop(p);
        let mut p = open(&dir, &faults);
        assert!(
            passive_declare_ok(&mut p, "d"),
            "{op:?}: queue lost after its definition was retried"
        );
        drop(p);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A new segment's directory entry is synced with the first commit after
/// it is started: when that fsync of the directory fails, the publish that
/// waited is nacked, nothing is confirmed until a retry works, and every
/// confirmed message is there after a restart.
#[test]
fn a_failed_directory_sync_at_a_segment_roll_does_not_confirm() {
    let (dir, faults, mut p, mut c) = setup("rolldir", 1 << 30);
    let segments = |p: &Pair| p.core.engine.msgs.store.as_ref().unwrap().segments();
    let before = segments(&p);
    // The directory was synced when the queue was declared; the next
    // directory sync is the roll's.
    faults.fail(DiskOp::SyncDir, 1);
    let mut seq = 0;
    while c.nacked() == 0 {
        publish(&mut p, &mut c, "q", seq);
        seq += 1;
        assert!(seq < 1_000, "never rolled");
    }
    assert_eq!(segments(&p), before + 1, "the nack came with the roll");
    assert_eq!(c.acked().len() as u64, seq - 1, "only the last one nacked");
    assert!(p
        .core
        .engine
        .msgs
        .store
        .as_ref()
        .is_some_and(|s| !s.healthy()));
    publish(&mut p, &mut c, "q", seq);
    assert_eq!(c.nacked(), 2, "nothing confirmed before the retry");
    p.advance(Duration::from_millis(600));
    publish(&mut p, &mut c, "q", seq + 1);
    assert!(
        c.acked().contains(&(seq + 1)),
        "confirmed once a retry works"
    );
    drop(p);
    check_segments(&dir);
    let mut p = open(&dir, &faults);
    let got = drain(&mut p, "q");
    assert!(c.acked().iter().all(|s| got.contains(s)), "{got:?}");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A segment whose space cannot be reserved (fallocate fails) blocks
/// publishers (disk alarm) while records go on into the current segment,
/// nothing lost and nothing nacked; the reservation is tried again and the
/// alarm clears when it works.
#[test]
fn a_failed_reservation_blocks_publishers_until_a_retry_works() {
    let (dir, faults, mut p, mut c) = setup("reserve", 1 << 30);
    faults.fail(DiskOp::Reserve, 1);
    let mut seq = 0;
    while !p.core.engine.alarms.blocked {
        publish(&mut p, &mut c, "q", seq);
        seq += 1;
        assert!(seq < 1_000, "never blocked");
    }
    let segments = p.core.engine.msgs.store.as_ref().unwrap().segments();
    assert!(p.core.engine.msgs.store.as_ref().unwrap().space_short());
    // The sim keeps reading a blocked publisher: its messages are stored
    // and confirmed in the segment that has no successor yet.
    for _ in 0..5 {
        publish(&mut p, &mut c, "q", seq);
        seq += 1;
    }
    assert_eq!(c.nacked(), 0);
    assert_eq!(c.acked().len() as u64, seq);
    p.advance(Duration::from_millis(600));
    p.core.end_turn(p.now);
    assert!(
        !p.core.engine.alarms.blocked,
        "the alarm stays on after a retry worked"
    );
    assert_eq!(
        p.core.engine.msgs.store.as_ref().unwrap().segments(),
        segments + 1,
        "rolled"
    );
    drop(p);
    check_segments(&dir);
    let mut p = open(&dir, &faults);
    assert_eq!(drain(&mut p, "q"), (0..seq).collect::<Vec<_>>());
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The free space the disk alarm looks at comes from the same simulated
/// disk: another program filling it blocks publishers, emptying it clears
/// the alarm, and asking for it can fail.
#[test]
fn the_disk_alarm_follows_the_simulated_free_space() {
    let dir = temp_dir("free");
    let faults = Faults::with_free(1 << 30);
    let mut p = Pair::open(Config {
        min_free_disk: 256 << 20,
        ..config(&dir, &faults)
    })
    .expect("open");
    p.handshake(0);
    declare(&mut p, "q");
    assert!(!p.core.engine.alarms.blocked);
    faults.set_free(1 << 20);
    p.advance(Duration::from_millis(600));
    p.core.end_turn(p.now);
    assert!(p.core.engine.alarms.blocked, "not blocked with 1 MiB free");
    faults.set_free(1 << 30);
    p.advance(Duration::from_millis(600));
    p.core.end_turn(p.now);
    assert!(
        !p.core.engine.alarms.blocked,
        "still blocked with 1 GiB free"
    );
    faults.fail(DiskOp::FreeSpace, 1);
    let st = p.core.engine.msgs.store.as_ref().unwrap();
    assert_eq!(st.free_space().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(st.free_space().unwrap(), 1 << 30);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Start-up reads go through the same disk: a data directory that cannot
/// be read refuses to start (rather than starting without its messages),
/// and starts with everything once it can.
#[test]
fn a_start_that_cannot_read_the_disk_fails_and_loses_nothing() {
    let (dir, faults, mut p, mut c) = setup("startread", 1 << 30);
    for seq in 0..10 {
        publish(&mut p, &mut c, "q", seq);
    }
    drop(p);
    for op in [DiskOp::Read, DiskOp::Open, DiskOp::Dir] {
        faults.fail(op, 1);
        assert!(Pair::open(config(&dir, &faults)).is_err(), "{op:?}");
    }
    let mut p = open(&dir, &faults);
    assert_eq!(drain(&mut p, "q"), (0..10).collect::<Vec<_>>());
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
