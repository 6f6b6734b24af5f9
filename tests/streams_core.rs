//! Streams (`x-queue-type: stream`) on the core with simulated time: many
//! consumers read the same log from their own offsets, acks give credit
//! back, the log survives a crash (a torn tail cut, a flipped byte
//! skipped), retention drops whole segments, filters are exact, a failed
//! fdatasync nacks and the records are written again. RabbitMQ's texts
//! for bad input are checked by the pika suite (`tests/streams.rs`); here
//! the codes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use warren::codec::frame::Frame;
use warren::codec::*;
use warren::testing::{DiskOp, Faults, Pair};
use warren::Config;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("warren-streams-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn on_disk(dir: &Path, faults: Option<Arc<Faults>>) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        min_free_disk: 0,
        faults,
        ..Config::default()
    }
}

fn s(v: &str) -> FieldValue {
    FieldValue::LongStr(Bytes::from(v.to_string()))
}

fn declare_stream(p: &mut Pair, name: &str, extra: &[(&str, FieldValue)]) {
    let mut args = FieldTable::new();
    args.insert("x-queue-type", s("stream"));
    for (k, v) in extra {
        args.insert(k.to_string(), v.clone());
    }
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from(name.to_string()),
            durable: true,
            arguments: args,
            ..Default::default()
        },
    );
    let got = p.recv_methods();
    assert!(
        got.iter()
            .any(|(_, m)| matches!(m, Method::QueueDeclareOk(_))),
        "{got:?}"
    );
}

fn publish_n(p: &mut Pair, q: &str, from: usize, n: usize, props: &BasicProperties) {
    for i in from..from + n {
        p.publish(1, "", q, props.clone(), format!("m{i}").as_bytes());
    }
}

fn open_channel(p: &mut Pair, ch: u16, prefetch: u16) {
    p.send(ch, ChannelOpen::default());
    p.send(
        ch,
        BasicQos {
            prefetch_count: prefetch,
            ..Default::default()
        },
    );
    let got = p.recv_methods();
    assert!(
        got.iter().any(|(_, m)| matches!(m, Method::BasicQosOk(_))),
        "{got:?}"
    );
}

fn consume(p: &mut Pair, ch: u16, q: &str, tag: &str, offset: Option<FieldValue>) {
    let mut args = FieldTable::new();
    if let Some(o) = offset {
        args.insert("x-stream-offset", o);
    }
    p.send(
        ch,
        BasicConsume {
            queue: Bytes::from(q.to_string()),
            consumer_tag: Bytes::from(tag.to_string()),
            arguments: args,
            ..Default::default()
        },
    );
}

/// Deliveries in the frames: (channel, delivery tag, stream offset, body).
fn deliveries(frames: Vec<Frame>) -> Vec<(u16, u64, i64, Vec<u8>)> {
    let mut out: Vec<(u16, u64, i64, Vec<u8>)> = Vec::new();
    for f in frames {
        match f {
            Frame::Method(ch, Method::BasicDeliver(d)) => {
                out.push((ch, d.delivery_tag, -1, Vec::new()));
                assert!(!d.redelivered);
            }
            Frame::Header(_, h) => {
                let off = h
                    .properties
                    .headers
                    .as_ref()
                    .and_then(|t| t.get("x-stream-offset"))
                    .cloned();
                match (off, out.last_mut()) {
                    (Some(FieldValue::I64(o)), Some(last)) => last.2 = o,
                    other => panic!("no x-stream-offset long: {other:?}"),
                }
            }
            Frame::Body(_, b) => {
                if let Some(last) = out.last_mut() {
                    last.3.extend_from_slice(&b);
                }
            }
            _ => {}
        }
    }
    out
}

fn offsets(d: &[(u16, u64, i64, Vec<u8>)], ch: u16) -> Vec<i64> {
    d.iter().filter(|x| x.0 == ch).map(|x| x.2).collect()
}

fn ack_all(p: &mut Pair, ch: u16) {
    p.send(
        ch,
        BasicAck {
            delivery_tag: 0,
            multiple: true,
        },
    );
}

/// Read everything consumers on `chans` get, acking as they go, until
/// nothing more comes.
fn drain(p: &mut Pair, chans: &[u16]) -> Vec<(u16, u64, i64, Vec<u8>)> {
    let mut all = Vec::new();
    loop {
        let got = deliveries(p.recv());
        if got.is_empty() {
            return all;
        }
        all.extend(got);
        for &ch in chans {
            ack_all(p, ch);
        }
    }
}

fn close_code(frames: &[Frame]) -> Option<(u16, u16)> {
    frames.iter().find_map(|f| match f {
        Frame::Method(ch, Method::ChannelClose(c)) => Some((*ch, c.reply_code)),
        Frame::Method(ch, Method::ConnectionClose(c)) => Some((*ch, c.reply_code)),
        _ => None,
    })
}

#[test]
fn two_consumers_read_the_same_log_from_first_with_credit() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    declare_stream(&mut p, "s", &[]);
    publish_n(&mut p, "s", 0, 1000, &BasicProperties::default());
    open_channel(&mut p, 2, 10);
    open_channel(&mut p, 3, 7);
    consume(&mut p, 2, "s", "a", Some(s("first")));
    consume(&mut p, 3, "s", "b", Some(FieldValue::I64(0)));
    // Credit: only the prefetch arrives until acks.
    let first = deliveries(p.recv());
    assert_eq!(offsets(&first, 2), (0..10).collect::<Vec<_>>());
    assert_eq!(offsets(&first, 3), (0..7).collect::<Vec<_>>());
    for &ch in &[2, 3] {
        ack_all(&mut p, ch);
    }
    let rest = drain(&mut p, &[2, 3]);
    let all: Vec<_> = first.into_iter().chain(rest).collect();
    for ch in [2, 3] {
        assert_eq!(
            offsets(&all, ch),
            (0..1000).collect::<Vec<_>>(),
            "channel {ch}"
        );
    }
    let bodies: Vec<_> = all
        .iter()
        .filter(|d| d.0 == 2)
        .map(|d| d.3.clone())
        .collect();
    assert_eq!(bodies[999], b"m999");
    p.core.check_invariants().unwrap();
    // A new message reaches both at once; the log still holds everything.
    publish_n(&mut p, "s", 1000, 1, &BasicProperties::default());
    let got = deliveries(p.recv());
    assert_eq!(offsets(&got, 2), vec![1000]);
    assert_eq!(offsets(&got, 3), vec![1000]);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"s"),
            passive: true,
            ..Default::default()
        },
    );
    let n = p.recv_methods().into_iter().find_map(|(_, m)| match m {
        Method::QueueDeclareOk(ok) => Some((ok.message_count, ok.consumer_count)),
        _ => None,
    });
    assert_eq!(n, Some((1001, 0)));
    p.core.check_invariants().unwrap();
}

#[test]
fn attach_points_next_last_offset_and_time() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    declare_stream(&mut p, "s", &[]);
    publish_n(&mut p, "s", 0, 5, &BasicProperties::default());
    p.advance(std::time::Duration::from_secs(3));
    // One turn, one chunk.
    let mut batch = bytes::BytesMut::new();
    for i in 5..8 {
        let pm = BasicPublish {
            routing_key: Bytes::from_static(b"s"),
            ..Default::default()
        };
        warren::codec::frame::write_method(&mut batch, 1, &pm.into());
        Frame::Header(
            1,
            Box::new(ContentHeader {
                class_id: 60,
                body_size: 2,
                properties: BasicProperties::default(),
            }),
        )
        .encode(&mut batch);
        Frame::Body(1, Bytes::from(format!("m{i}"))).encode(&mut batch);
    }
    p.send_raw(&batch);
    let wall_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cases: Vec<(Option<FieldValue>, Vec<i64>)> = vec![
        (None, vec![]),
        (Some(s("next")), vec![]),
        (Some(s("last")), vec![5, 6, 7]),
        (Some(FieldValue::I64(6)), vec![6, 7]),
        (Some(FieldValue::I64(-1)), (0..8).collect()),
        (Some(FieldValue::Timestamp(0)), (0..8).collect()),
        (Some(FieldValue::Timestamp(wall_now + 3600)), vec![]),
        (Some(s("1h")), (0..8).collect()),
    ];
    for (i, (at, want)) in cases.into_iter().enumerate() {
        let ch = 10 + i as u16;
        open_channel(&mut p, ch, 100);
        consume(&mut p, ch, "s", &format!("c{ch}"), at.clone());
        let got = drain(&mut p, &[ch]);
        assert_eq!(offsets(&got, ch), want, "{at:?}");
    }
    // An offset beyond the end waits for it.
    open_channel(&mut p, 30, 100);
    consume(&mut p, 30, "s", "far", Some(FieldValue::I64(10)));
    publish_n(&mut p, "s", 8, 4, &BasicProperties::default());
    let got = drain(&mut p, &(10..31).collect::<Vec<u16>>());
    assert_eq!(offsets(&got, 30), vec![10, 11]);
    // `next` and the default got the new ones.
    assert_eq!(offsets(&got, 10), vec![8, 9, 10, 11]);
    assert_eq!(offsets(&got, 11), vec![8, 9, 10, 11]);
    p.core.check_invariants().unwrap();
}

#[test]
fn filters_are_exact() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    declare_stream(&mut p, "s", &[]);
    for (i, v) in ["red", "blue", "", "red", "green", ""].iter().enumerate() {
        let mut h = FieldTable::new();
        if !v.is_empty() {
            h.insert("x-stream-filter-value", s(v));
        }
        let props = BasicProperties {
            headers: Some(h),
            ..Default::default()
        };
        p.publish(1, "", "s", props, format!("m{i}").as_bytes());
    }
    let run = |p: &mut Pair, ch: u16, filter: FieldValue, unfiltered: bool| {
        open_channel(p, ch, 100);
        let mut args = FieldTable::new();
        args.insert("x-stream-offset", s("first"));
        args.insert("x-stream-filter", filter);
        args.insert("x-stream-match-unfiltered", FieldValue::Bool(unfiltered));
        p.send(
            ch,
            BasicConsume {
                queue: Bytes::from_static(b"s"),
                consumer_tag: Bytes::from(format!("f{ch}")),
                arguments: args,
                ..Default::default()
            },
        );
        offsets(&drain(p, &[ch]), ch)
    };
    assert_eq!(run(&mut p, 2, s("red"), false), vec![0, 3]);
    assert_eq!(run(&mut p, 3, s("red"), true), vec![0, 2, 3, 5]);
    let both = FieldValue::Array(vec![s("blue"), s("green")]);
    assert_eq!(run(&mut p, 4, both, false), vec![1, 4]);
}

#[test]
fn bad_input_gets_rabbitmqs_codes_and_the_broker_goes_on() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    declare_stream(&mut p, "s", &[]);
    publish_n(&mut p, "s", 0, 3, &BasicProperties::default());
    // No prefetch: 406 (channel).
    p.send(2, ChannelOpen::default());
    consume(&mut p, 2, "s", "x", None);
    assert_eq!(close_code(&p.recv()), Some((2, 406)));
    // A bad offset: 406.
    open_channel(&mut p, 3, 10);
    consume(&mut p, 3, "s", "x", Some(s("1X")));
    assert_eq!(close_code(&p.recv()), Some((3, 406)));
    // Declared exclusive, or with a classic-only argument: 406.
    let mut args = FieldTable::new();
    args.insert("x-queue-type", s("stream"));
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"s2"),
            durable: true,
            exclusive: true,
            arguments: args.clone(),
            ..Default::default()
        },
    );
    assert_eq!(close_code(&p.recv()), Some((1, 406)));
    p.send(1, ChannelCloseOk::default());
    p.send(1, ChannelOpen::default());
    args.insert("x-message-ttl", FieldValue::I32(5));
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"s2"),
            durable: true,
            arguments: args,
            ..Default::default()
        },
    );
    let f = p.recv();
    assert_eq!(close_code(&f), Some((1, 406)), "{f:?}");
    // basic.get: 540, the connection closes.
    p.send(1, ChannelCloseOk::default());
    p.send(1, ChannelOpen::default());
    p.send(
        1,
        BasicGet {
            queue: Bytes::from_static(b"s"),
            ..Default::default()
        },
    );
    assert_eq!(close_code(&p.recv()), Some((0, 540)));
    p.core.check_invariants().unwrap();
    // Another client reads the stream as before.
    let mut q = p;
    q.reconnect();
    q.handshake(0);
    open_channel(&mut q, 2, 10);
    consume(&mut q, 2, "s", "y", Some(s("first")));
    assert_eq!(offsets(&drain(&mut q, &[2]), 2), vec![0, 1, 2]);
    // Auto-ack: 540.
    open_channel(&mut q, 3, 10);
    q.send(
        3,
        BasicConsume {
            queue: Bytes::from_static(b"s"),
            no_ack: true,
            ..Default::default()
        },
    );
    assert_eq!(close_code(&q.recv()), Some((0, 540)));
}

#[test]
fn the_log_and_its_offsets_survive_a_crash_and_a_torn_tail() {
    let dir = temp_dir("crash");
    {
        let mut p = Pair::open(on_disk(&dir, None)).unwrap();
        p.handshake(0);
        declare_stream(&mut p, "s", &[]);
        publish_n(&mut p, "s", 0, 50, &BasicProperties::default());
        publish_n(&mut p, "s", 50, 10, &BasicProperties::default());
        // Dropped without a clean stop: a crash.
    }
    // A torn tail: half a record after the last.
    let sdir = std::fs::read_dir(dir.join("streams"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let seg = std::fs::read_dir(&sdir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(&[0, 0, 0, 60, 9, 9, 9]);
    std::fs::write(&seg, &bytes).unwrap();
    let mut p = Pair::open(on_disk(&dir, None)).unwrap();
    p.handshake(0);
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, good);
    open_channel(&mut p, 2, 100);
    consume(&mut p, 2, "s", "a", Some(s("first")));
    let got = drain(&mut p, &[2]);
    assert_eq!(offsets(&got, 2), (0..60).collect::<Vec<_>>());
    assert_eq!(got[59].3, b"m59");
    // New messages go on from the recovered end.
    publish_n(&mut p, "s", 60, 2, &BasicProperties::default());
    assert_eq!(offsets(&drain(&mut p, &[2]), 2), vec![60, 61]);
    drop(p);
    // A flipped byte inside a record: skipped (logged), never delivered.
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let mut p = Pair::open(on_disk(&dir, None)).unwrap();
    p.handshake(0);
    open_channel(&mut p, 2, 100);
    consume(&mut p, 2, "s", "a", Some(s("first")));
    assert_eq!(
        offsets(&drain(&mut p, &[2]), 2),
        (0..61).collect::<Vec<_>>()
    );
    // Deleting the stream deletes its files.
    p.send(
        1,
        QueueDelete {
            queue: Bytes::from_static(b"s"),
            ..Default::default()
        },
    );
    p.recv();
    assert!(!sdir.exists());
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retention_drops_whole_segments_and_readers_move_to_the_new_first() {
    let dir = temp_dir("retention");
    let mut p = Pair::open(on_disk(&dir, None)).unwrap();
    p.handshake(0);
    declare_stream(
        &mut p,
        "s",
        &[
            ("x-stream-max-segment-size-bytes", FieldValue::I32(1000)),
            ("x-max-length-bytes", FieldValue::I32(5000)),
        ],
    );
    let body = vec![b'x'; 100];
    for _ in 0..200 {
        p.publish(1, "", "s", BasicProperties::default(), &body);
    }
    let segs = std::fs::read_dir(dir.join("streams").join("1"))
        .unwrap()
        .filter(|e| {
            let p = e.as_ref().unwrap().path();
            p.extension().is_some_and(|x| x == "seg")
        })
        .count();
    assert!((5..=8).contains(&segs), "{segs} segments");
    open_channel(&mut p, 2, 1000);
    consume(&mut p, 2, "s", "a", Some(FieldValue::I64(0)));
    let got = offsets(&drain(&mut p, &[2]), 2);
    let first = got[0];
    assert!(first > 100, "{first}");
    assert_eq!(got, (first..200).collect::<Vec<_>>());
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_fdatasync_nacks_and_the_records_are_written_again() {
    let dir = temp_dir("fsync");
    let faults = Faults::with_free(u64::MAX / 4);
    let mut p = Pair::open(on_disk(&dir, Some(faults.clone()))).unwrap();
    p.handshake(0);
    declare_stream(&mut p, "s", &[]);
    p.send(1, ConfirmSelect::default());
    p.recv();
    faults.fail(DiskOp::SyncData, 1);
    publish_n(&mut p, "s", 0, 1, &BasicProperties::default());
    let got = p.recv_methods();
    assert!(
        got.iter().any(|(_, m)| matches!(m, Method::BasicNack(_))),
        "{got:?}"
    );
    publish_n(&mut p, "s", 1, 1, &BasicProperties::default());
    let got = p.recv_methods();
    assert!(
        got.iter().any(|(_, m)| matches!(m, Method::BasicAck(_))),
        "{got:?}"
    );
    drop(p);
    // Both are in the log (the nacked one was written again with the
    // next commit: a nack means "may not have been kept").
    let mut p = Pair::open(on_disk(&dir, None)).unwrap();
    p.handshake(0);
    open_channel(&mut p, 2, 10);
    consume(&mut p, 2, "s", "a", Some(s("first")));
    assert_eq!(offsets(&drain(&mut p, &[2]), 2), vec![0, 1]);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn policies_set_a_streams_retention_and_classic_keys_do_not_apply() {
    use warren::testing::{PolicyKind, PolicySpec};
    let dir = temp_dir("policy");
    let mut p = Pair::open(on_disk(&dir, None)).unwrap();
    p.handshake(0);
    declare_stream(
        &mut p,
        "s",
        &[("x-stream-max-segment-size-bytes", FieldValue::I32(1000))],
    );
    let def = |v: serde_json::Value| v.as_object().unwrap().clone();
    // A policy with a key streams do not take does not apply to them.
    p.core
        .engine
        .set_policy(
            PolicyKind::User,
            PolicySpec {
                vhost: "/",
                name: "ttl",
                pattern: "^s$",
                apply_to: "queues",
                priority: 5,
                definition: def(serde_json::json!({"message-ttl": 1, "max-length-bytes": 10})),
            },
        )
        .unwrap();
    p.core
        .engine
        .set_policy(
            PolicyKind::User,
            PolicySpec {
                vhost: "/",
                name: "retention",
                pattern: "^s$",
                apply_to: "streams",
                priority: 1,
                definition: def(serde_json::json!({"max-length-bytes": 3000, "max-age": "1D"})),
            },
        )
        .unwrap();
    let body = vec![b'x'; 100];
    for _ in 0..100 {
        p.publish(1, "", "s", BasicProperties::default(), &body);
    }
    open_channel(&mut p, 2, 1000);
    consume(&mut p, 2, "s", "a", Some(s("first")));
    let got = offsets(&drain(&mut p, &[2]), 2);
    assert!(got[0] > 50, "{}", got[0]);
    assert_eq!(*got.last().unwrap(), 99);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
