//! The broker core driven in memory with simulated time: heartbeats,
//! handshake timeout, and protocol errors, without sockets or sleeping.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use bytes::Bytes;
use warren::codec::frame::{Frame, PROTOCOL_HEADER};
use warren::codec::*;
use warren::testing::Pair;
use warren::Config;

fn close_code(frames: &[Frame]) -> Option<u16> {
    frames.iter().find_map(|f| match f {
        Frame::Method(0, Method::ConnectionClose(c)) => Some(c.reply_code),
        _ => None,
    })
}

#[test]
fn heartbeats_are_sent_when_idle_and_silence_closes() {
    let mut p = Pair::new(Config::default());
    p.handshake(10);
    p.advance(Duration::from_secs(6));
    let f = p.recv();
    assert!(f.iter().any(|f| matches!(f, Frame::Heartbeat(0))), "{f:?}");
    assert!(!p.core.is_dead(p.id));
    // The client stays silent for two intervals: the broker gives up.
    p.advance(Duration::from_secs(15));
    assert!(p.core.is_dead(p.id));
}

#[test]
fn client_heartbeats_keep_the_connection_alive() {
    let mut p = Pair::new(Config::default());
    p.handshake(2);
    for _ in 0..20 {
        p.advance(Duration::from_secs(1));
        p.send_raw(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    }
    assert!(!p.core.is_dead(p.id));
}

#[test]
fn heartbeat_zero_disables() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.advance(Duration::from_secs(3600));
    assert!(p.recv().is_empty());
    assert!(!p.core.is_dead(p.id));
}

#[test]
fn unfinished_handshake_times_out() {
    let mut p = Pair::new(Config::default());
    p.send_raw(PROTOCOL_HEADER);
    let _ = p.recv();
    p.advance(Duration::from_secs(9));
    assert!(!p.core.is_dead(p.id));
    p.advance(Duration::from_secs(2));
    assert!(p.core.is_dead(p.id));
}

#[test]
fn wrong_protocol_header_gets_ours_back() {
    let mut p = Pair::new(Config::default());
    p.send_raw(b"HTTP/1.1 GET /");
    assert_eq!(p.core.take_output(p.id), PROTOCOL_HEADER.to_vec());
    assert!(p.core.is_dead(p.id));
}

#[test]
fn frames_over_4096_before_tune_are_frame_errors() {
    let mut p = Pair::new(Config::default());
    p.send_raw(PROTOCOL_HEADER);
    let _ = p.recv();
    // A method frame header announcing 1 MiB: refused from the header alone.
    p.send_raw(&[1, 0, 0, 0, 0x10, 0, 0]);
    assert_eq!(close_code(&p.recv()), Some(ReplyCode::FRAME_ERROR));
}

#[test]
fn bad_credentials_are_refused_with_403() {
    let mut p = Pair::new(Config::default());
    p.send_raw(PROTOCOL_HEADER);
    let _ = p.recv();
    p.send(
        0,
        ConnectionStartOk {
            mechanism: Bytes::from_static(b"PLAIN"),
            response: Bytes::from_static(b"\0guest\0wrong"),
            ..Default::default()
        },
    );
    assert_eq!(close_code(&p.recv()), Some(ReplyCode::ACCESS_REFUSED));
}

#[test]
fn amqplain_is_accepted() {
    let mut p = Pair::new(Config::default());
    p.send_raw(PROTOCOL_HEADER);
    let _ = p.recv();
    let mut t = FieldTable::new();
    t.insert("LOGIN", FieldValue::LongStr(Bytes::from_static(b"guest")));
    t.insert(
        "PASSWORD",
        FieldValue::LongStr(Bytes::from_static(b"guest")),
    );
    let mut enc = bytes::BytesMut::new();
    t.encode(&mut enc);
    p.send(
        0,
        ConnectionStartOk {
            mechanism: Bytes::from_static(b"AMQPLAIN"),
            response: enc.freeze().slice(4..),
            ..Default::default()
        },
    );
    let m = p.recv_methods();
    assert!(
        matches!(m.first(), Some((0, Method::ConnectionTune(_)))),
        "{m:?}"
    );
}

#[test]
fn unknown_vhost_is_530() {
    let mut p = Pair::new(Config::default());
    p.send_raw(PROTOCOL_HEADER);
    let _ = p.recv();
    p.send(
        0,
        ConnectionStartOk {
            mechanism: Bytes::from_static(b"PLAIN"),
            response: Bytes::from_static(b"\0guest\0guest"),
            ..Default::default()
        },
    );
    p.send(
        0,
        ConnectionTuneOk {
            channel_max: 2047,
            frame_max: 131072,
            heartbeat: 0,
        },
    );
    p.send(
        0,
        ConnectionOpen {
            virtual_host: Bytes::from_static(b"nope"),
            ..Default::default()
        },
    );
    assert_eq!(close_code(&p.recv()), Some(ReplyCode::NOT_ALLOWED));
}

#[test]
fn unacked_messages_return_in_order_when_the_connection_drops() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    for i in 0..5 {
        p.publish(
            1,
            "",
            "q",
            BasicProperties::default(),
            format!("m{i}").as_bytes(),
        );
    }
    p.send(
        1,
        BasicConsume {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    let delivered = p
        .recv()
        .iter()
        .filter(|f| matches!(f, Frame::Method(1, Method::BasicDeliver(_))))
        .count();
    assert_eq!(delivered, 5);
    p.send(
        1,
        BasicAck {
            delivery_tag: 2,
            multiple: false,
        },
    );
    p.core.check_invariants().unwrap();
    p.core.peer_closed(p.id);
    p.core.check_invariants().unwrap();
    let (_, q) = p.core.engine.broker.queues.iter().next().unwrap();
    let bodies: Vec<(Bytes, bool)> = q
        .ready
        .iter_memory()
        .map(|m| (m.body(), m.redelivered()))
        .collect();
    assert_eq!(
        bodies,
        vec![
            (Bytes::from_static(b"m0"), true),
            (Bytes::from_static(b"m2"), true),
            (Bytes::from_static(b"m3"), true),
            (Bytes::from_static(b"m4"), true),
        ]
    );
}

#[test]
fn method_on_unopened_channel_is_504() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.send(7, QueueDeclare::default());
    assert_eq!(close_code(&p.recv()), Some(ReplyCode::CHANNEL_ERROR));
}

#[test]
fn content_without_publish_is_505() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.send_raw(&[3, 0, 1, 0, 0, 0, 1, b'x', 0xCE]);
    assert_eq!(close_code(&p.recv()), Some(ReplyCode::UNEXPECTED_FRAME));
}

#[test]
fn unknown_method_is_540() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.send_raw(&[1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE]);
    assert_eq!(close_code(&p.recv()), Some(ReplyCode::NOT_IMPLEMENTED));
}

#[test]
fn frames_are_discarded_after_channel_close_until_close_ok() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"missing"),
            passive: true,
            ..Default::default()
        },
    );
    let m = p.recv_methods();
    assert!(
        matches!(&m[..], [(1, Method::ChannelClose(c))] if c.reply_code == 404),
        "{m:?}"
    );
    // Ignored: the channel is closing.
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"x"),
            ..Default::default()
        },
    );
    assert!(p.recv().is_empty());
    p.send(1, ChannelCloseOk {});
    p.send(1, ChannelOpen::default());
    let m = p.recv_methods();
    assert!(matches!(&m[..], [(1, Method::ChannelOpenOk(_))]), "{m:?}");
}

#[test]
fn global_prefetch_refills_after_ack_multiple_zero() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    for q in ["q1", "q2"] {
        p.send(
            1,
            QueueDeclare {
                queue: Bytes::copy_from_slice(q.as_bytes()),
                ..Default::default()
            },
        );
        for i in 0..5 {
            p.publish(
                1,
                "",
                q,
                BasicProperties::default(),
                format!("{q}-{i}").as_bytes(),
            );
        }
    }
    let _ = p.recv();
    p.send(
        1,
        BasicQos {
            prefetch_count: 3,
            global: true,
            ..Default::default()
        },
    );
    p.send(
        1,
        BasicConsume {
            queue: Bytes::from_static(b"q1"),
            consumer_tag: Bytes::from_static(b"c1"),
            ..Default::default()
        },
    );
    p.send(
        1,
        BasicConsume {
            queue: Bytes::from_static(b"q2"),
            consumer_tag: Bytes::from_static(b"c2"),
            ..Default::default()
        },
    );
    let deliveries = |f: &[Frame]| {
        f.iter()
            .filter(|f| matches!(f, Frame::Method(1, Method::BasicDeliver(_))))
            .count()
    };
    assert_eq!(deliveries(&p.recv()), 3);
    p.send(
        1,
        BasicAck {
            delivery_tag: 0,
            multiple: true,
        },
    );
    assert_eq!(deliveries(&p.recv()), 3);
    p.core.check_invariants().unwrap();
}

/// Seeds for the `session` fuzz target: frame sequences a client sends after
/// the handshake (the target declares queue `q`, publishes one message and
/// consumes it first). Run with `cargo test --test sim -- --ignored`.
#[test]
#[ignore]
fn write_session_seed_corpus() {
    use bytes::BytesMut;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session");
    std::fs::create_dir_all(&dir).unwrap();
    let q = || Bytes::from_static(b"q");
    let publish = |out: &mut BytesMut, ch: u16, props: BasicProperties, body: &'static [u8]| {
        warren::codec::frame::write_method(
            out,
            ch,
            &BasicPublish {
                routing_key: q(),
                ..Default::default()
            }
            .into(),
        );
        Frame::Header(
            ch,
            Box::new(ContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: props,
            }),
        )
        .encode(out);
        Frame::Body(ch, Bytes::from_static(body)).encode(out);
    };
    let m =
        |out: &mut BytesMut, ch: u16, m: Method| warren::codec::frame::write_method(out, ch, &m);
    let mut seeds: Vec<(&str, BytesMut)> = Vec::new();
    let mut b = BytesMut::new();
    m(
        &mut b,
        1,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        }
        .into(),
    );
    seeds.push(("ack", b));
    let mut b = BytesMut::new();
    m(
        &mut b,
        1,
        BasicNack {
            delivery_tag: 1,
            multiple: true,
            requeue: true,
        }
        .into(),
    );
    seeds.push(("nack-requeue", b));
    let mut b = BytesMut::new();
    m(
        &mut b,
        1,
        BasicReject {
            delivery_tag: 1,
            requeue: false,
        }
        .into(),
    );
    seeds.push(("reject", b));
    let mut b = BytesMut::new();
    publish(
        &mut b,
        1,
        BasicProperties {
            delivery_mode: Some(2),
            priority: Some(3),
            ..Default::default()
        },
        b"again",
    );
    m(
        &mut b,
        1,
        BasicAck {
            delivery_tag: 0,
            multiple: true,
        }
        .into(),
    );
    seeds.push(("publish-ack-all", b));
    let mut b = BytesMut::new();
    m(&mut b, 1, TxSelect {}.into());
    publish(&mut b, 1, BasicProperties::default(), b"tx");
    m(
        &mut b,
        1,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        }
        .into(),
    );
    m(&mut b, 1, TxRollback {}.into());
    m(&mut b, 1, TxCommit {}.into());
    seeds.push(("tx", b));
    let mut b = BytesMut::new();
    m(&mut b, 1, ConfirmSelect { nowait: false }.into());
    publish(
        &mut b,
        1,
        BasicProperties {
            expiration: Some(Bytes::from_static(b"0")),
            ..Default::default()
        },
        b"c",
    );
    seeds.push(("confirm", b));
    let mut b = BytesMut::new();
    m(&mut b, 2, ChannelOpen::default().into());
    m(
        &mut b,
        2,
        BasicQos {
            prefetch_count: 1,
            global: true,
            ..Default::default()
        }
        .into(),
    );
    m(
        &mut b,
        2,
        BasicConsume {
            queue: q(),
            consumer_tag: Bytes::from_static(b"c2"),
            ..Default::default()
        }
        .into(),
    );
    m(&mut b, 1, ChannelClose::default().into());
    seeds.push(("second-channel", b));
    let mut b = BytesMut::new();
    m(
        &mut b,
        1,
        BasicGet {
            queue: q(),
            ..Default::default()
        }
        .into(),
    );
    m(&mut b, 1, BasicRecover { requeue: true }.into());
    m(
        &mut b,
        1,
        QueuePurge {
            queue: q(),
            ..Default::default()
        }
        .into(),
    );
    m(
        &mut b,
        1,
        QueueDelete {
            queue: q(),
            ..Default::default()
        }
        .into(),
    );
    seeds.push(("get-recover-purge-delete", b));
    let mut b = BytesMut::new();
    let mut args = FieldTable::new();
    args.insert(
        "x-dead-letter-exchange",
        FieldValue::LongStr(Bytes::from_static(b"dlx")),
    );
    args.insert("x-message-ttl", FieldValue::I32(0));
    args.insert("x-max-length", FieldValue::I32(1));
    m(
        &mut b,
        1,
        ExchangeDeclare {
            exchange: Bytes::from_static(b"dlx"),
            kind: Bytes::from_static(b"fanout"),
            ..Default::default()
        }
        .into(),
    );
    m(
        &mut b,
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"ttl"),
            arguments: args,
            ..Default::default()
        }
        .into(),
    );
    m(
        &mut b,
        1,
        QueueBind {
            queue: q(),
            exchange: Bytes::from_static(b"dlx"),
            ..Default::default()
        }
        .into(),
    );
    publish(&mut b, 1, BasicProperties::default(), b"x");
    seeds.push(("dlx-ttl", b));
    let mut b = BytesMut::new();
    m(
        &mut b,
        1,
        BasicCancel {
            consumer_tag: Bytes::from_static(b"amq.ctag-x"),
            nowait: false,
        }
        .into(),
    );
    m(&mut b, 0, ConnectionClose::default().into());
    seeds.push(("cancel-close", b));
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), &bytes[..]).unwrap();
    }
}

/// Found by the `session` fuzzer: an ack inside a transaction holds its
/// delivery until commit or rollback; the bookkeeping must count it.
#[test]
fn acks_held_by_an_open_transaction_keep_the_books_balanced() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    p.publish(1, "", "q", BasicProperties::default(), b"m");
    p.send(
        1,
        BasicGet {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    p.send(1, TxSelect {});
    p.send(
        1,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    p.core.check_invariants().unwrap();
    p.send(1, TxRollback {});
    p.core.check_invariants().unwrap();
    p.send(
        1,
        BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    p.send(1, TxCommit {});
    p.core.check_invariants().unwrap();
    let (_, q) = p.core.engine.broker.queues.iter().next().unwrap();
    assert_eq!((q.ready.len(), q.unacked), (0, 0));
}

/// Permissions are cached per connection; a change reaches open connections.
#[test]
fn permission_changes_reach_open_connections() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"mine"),
            ..Default::default()
        },
    );
    assert!(matches!(
        &p.recv_methods()[..],
        [(1, Method::QueueDeclareOk(_))]
    ));
    p.core
        .engine
        .set_permissions("guest", "/", "^other$", ".*", ".*")
        .unwrap();
    p.core.end_turn(p.now);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"mine2"),
            ..Default::default()
        },
    );
    let m = p.recv_methods();
    assert!(
        matches!(&m[..], [(1, Method::ChannelClose(c))] if c.reply_code == ReplyCode::ACCESS_REFUSED),
        "{m:?}"
    );
}

/// The server reads the rest of a large frame straight into the input
/// buffer: the core says how many bytes are missing, and the message that
/// arrives that way is delivered intact.
#[test]
fn read_hint_asks_for_the_rest_of_large_frames() {
    use warren::testing::ReadHint;
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    assert_eq!(p.core.read_hint(p.id), ReadHint::Scratch(usize::MAX));
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"big"),
            ..Default::default()
        },
    );
    let _ = p.recv();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut out = bytes::BytesMut::new();
    warren::codec::frame::write_method(
        &mut out,
        1,
        &BasicPublish {
            routing_key: Bytes::from_static(b"big"),
            ..Default::default()
        }
        .into(),
    );
    Frame::Header(
        1,
        Box::new(ContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: BasicProperties::default(),
        }),
    )
    .encode(&mut out);
    Frame::Body(1, Bytes::copy_from_slice(&body)).encode(&mut out);
    // Everything up to 1,000 bytes into the body frame.
    let body_frame_at = out.len() - body.len() - 8;
    let cut = body_frame_at + 7 + 1000;
    p.send_raw(&out[..cut]);
    assert_eq!(
        p.core.read_hint(p.id),
        ReadHint::Direct(out.len() - cut),
        "the missing part of the body frame"
    );
    p.send_raw(&out[cut..]);
    // The next read asks for a message like the last one.
    assert_eq!(p.core.read_hint(p.id), ReadHint::Direct(100_000 + 1024));
    // Reserve that much, as the server does, then find the socket empty:
    // the large, empty buffer is let go.
    p.core.input_buffer(p.id).unwrap().reserve(100_000 + 1024);
    p.core.input_idle(p.id);
    assert!(p.core.input_buffer(p.id).unwrap().capacity() <= 4096);
    p.send(
        1,
        BasicGet {
            queue: Bytes::from_static(b"big"),
            no_ack: true,
            ..Default::default()
        },
    );
    let got: Vec<u8> = p
        .recv()
        .into_iter()
        .filter_map(|f| match f {
            Frame::Body(_, b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(got, body);
}

/// Deliveries and get-oks with their bodies, in order, from `frames`.
fn contents(frames: Vec<Frame>) -> Vec<(Method, Vec<u8>)> {
    let mut out: Vec<(Method, Vec<u8>)> = Vec::new();
    for f in frames {
        match f {
            Frame::Method(_, m @ (Method::BasicDeliver(_) | Method::BasicGetOk(_))) => {
                out.push((m, Vec::new()))
            }
            Frame::Body(_, b) => {
                if let Some(last) = out.last_mut() {
                    last.1.extend_from_slice(&b);
                }
            }
            _ => {}
        }
    }
    out
}

fn body_of(i: usize) -> Vec<u8> {
    let size = [5, 100, 3000, 70_000][i % 4];
    format!("m{i:04}-").bytes().cycle().take(size).collect()
}

/// Packed queue entries through every path that moves them, with a memory
/// budget so small that most contents are paged to disk: fanout to a
/// durable and a transient queue, basic.get, consume, requeue, reject to a
/// dead-letter queue, and a restart. Bodies arrive intact and the memory
/// accounting matches the messages at every step.
#[test]
fn packed_messages_survive_paging_requeue_and_dead_lettering() {
    let dir = std::env::temp_dir().join(format!("warren-sim-pack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = Config {
        data_dir: Some(dir.clone()),
        max_memory: 64 * 1024,
        ..Config::default()
    };
    let mut p = Pair::open(config.clone()).expect("open");
    p.handshake(0);
    let mut dl_args = FieldTable::new();
    dl_args.insert("x-dead-letter-exchange", FieldValue::LongStr(Bytes::new()));
    dl_args.insert(
        "x-dead-letter-routing-key",
        FieldValue::LongStr(Bytes::from_static(b"dlq")),
    );
    for (name, durable, args) in [
        ("dlq", false, FieldTable::new()),
        ("work", true, dl_args),
        ("plain", false, FieldTable::new()),
    ] {
        p.send(
            1,
            QueueDeclare {
                queue: Bytes::from(name),
                durable,
                arguments: args,
                ..Default::default()
            },
        );
    }
    p.send(
        1,
        ExchangeDeclare {
            exchange: Bytes::from_static(b"fan"),
            kind: Bytes::from_static(b"fanout"),
            durable: true,
            ..Default::default()
        },
    );
    for q in ["work", "plain"] {
        p.send(
            1,
            QueueBind {
                queue: Bytes::from(q),
                exchange: Bytes::from_static(b"fan"),
                ..Default::default()
            },
        );
    }
    let _ = p.recv();
    const N: usize = 120;
    for i in 0..N {
        let props = BasicProperties {
            delivery_mode: Some(if i % 2 == 0 { 2 } else { 1 }),
            ..Default::default()
        };
        p.publish(1, "fan", "", props, &body_of(i));
        p.core.end_turn(p.now);
        p.core.check_invariants().unwrap();
    }
    assert!(
        p.core
            .engine
            .msgs
            .store
            .as_ref()
            .is_some_and(|s| s.stats.bytes_written > 0),
        "contents went to the store"
    );
    // basic.get everything from the transient queue.
    for i in 0..N {
        p.send(
            1,
            BasicGet {
                queue: Bytes::from_static(b"plain"),
                no_ack: true,
                ..Default::default()
            },
        );
        let got = contents(p.recv());
        assert_eq!(got.len(), 1, "get {i}");
        assert_eq!(got[0].1, body_of(i), "get {i}");
        p.core.check_invariants().unwrap();
    }
    // Consume the durable queue: requeue the first ten, then ack two of
    // every three and reject the third (dead-lettered to dlq).
    p.send(
        1,
        BasicQos {
            prefetch_count: 10,
            ..Default::default()
        },
    );
    p.send(
        1,
        BasicConsume {
            queue: Bytes::from_static(b"work"),
            consumer_tag: Bytes::from_static(b"c"),
            ..Default::default()
        },
    );
    let first = contents(p.recv());
    assert_eq!(first.len(), 10);
    // (basic.get used delivery tags 1..=N on this channel.)
    let Some((Method::BasicDeliver(last), _)) = first.last() else {
        panic!("{first:?}")
    };
    assert_eq!(last.delivery_tag, N as u64 + 10);
    p.send(
        1,
        BasicNack {
            delivery_tag: last.delivery_tag,
            multiple: true,
            requeue: true,
        },
    );
    p.core.check_invariants().unwrap();
    let mut seen = 0;
    let mut rejected = Vec::new();
    while seen < N {
        let batch = contents(p.recv());
        assert!(!batch.is_empty(), "deliveries stopped after {seen}");
        for (m, body) in batch {
            let Method::BasicDeliver(d) = m else {
                panic!("{m:?}")
            };
            assert_eq!(body, body_of(seen), "delivery {seen}");
            assert_eq!(d.redelivered, seen < 10, "delivery {seen}");
            if seen % 3 == 2 {
                rejected.push(seen);
                p.send(
                    1,
                    BasicReject {
                        delivery_tag: d.delivery_tag,
                        requeue: false,
                    },
                );
            } else {
                p.send(
                    1,
                    BasicAck {
                        delivery_tag: d.delivery_tag,
                        multiple: false,
                    },
                );
            }
            p.core.end_turn(p.now);
            p.core.check_invariants().unwrap();
            seen += 1;
        }
    }
    // The rejected ones are in the dead-letter queue, in order.
    for &i in &rejected {
        p.send(
            1,
            BasicGet {
                queue: Bytes::from_static(b"dlq"),
                no_ack: true,
                ..Default::default()
            },
        );
        let got = contents(p.recv());
        assert_eq!(got.len(), 1, "dead-lettered {i}");
        assert_eq!(got[0].1, body_of(i), "dead-lettered {i}");
        p.core.check_invariants().unwrap();
    }
    // Twenty more persistent ones (paged out), then a restart: the durable
    // queue gives them back from the store, in order, intact.
    p.send(
        1,
        BasicCancel {
            consumer_tag: Bytes::from_static(b"c"),
            nowait: false,
        },
    );
    for i in N..N + 20 {
        let props = BasicProperties {
            delivery_mode: Some(2),
            ..Default::default()
        };
        p.publish(1, "fan", "", props, &body_of(i));
    }
    p.core.end_turn(p.now);
    p.core.check_invariants().unwrap();
    drop(p);
    let mut p = Pair::open(config).expect("reopen");
    p.handshake(0);
    p.core.check_invariants().unwrap();
    for i in N..N + 20 {
        p.send(
            1,
            BasicGet {
                queue: Bytes::from_static(b"work"),
                no_ack: false,
                ..Default::default()
            },
        );
        let got = contents(p.recv());
        assert_eq!(got.len(), 1, "recovered {i}");
        assert_eq!(got[0].1, body_of(i), "recovered {i}");
        p.core.check_invariants().unwrap();
    }
    p.send(
        1,
        BasicAck {
            delivery_tag: 0,
            multiple: true,
        },
    );
    p.core.check_invariants().unwrap();
    assert_eq!(rejected.len(), N / 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The memory account with a 1 MiB budget: beyond half of it contents go to
/// disk, and beyond a window at its head and tail a queue spills its
/// entries to disk too, so that twenty times the budget is queued without
/// raising the alarm, and what memory holds does not grow with the depth.
/// A consumer then gets every message in order (read back from the spill
/// files and the store); once they are acknowledged the chunks and buffers
/// are given back. The account matches the messages at every step.
#[test]
fn memory_account_follows_chunks_and_buffers() {
    let dir = std::env::temp_dir().join(format!("warren-sim-account-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    const BUDGET: u64 = 1 << 20;
    const N: usize = 20_000;
    let mut p = Pair::open(Config {
        data_dir: Some(dir.clone()),
        max_memory: BUDGET,
        max_outbox: 64 << 20,
        ..Config::default()
    })
    .expect("open");
    p.handshake(0);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    let _ = p.recv();
    let body = |i: usize| format!("{i:06}").repeat(170).into_bytes(); // 1020 bytes
    let mut peak = 0;
    for n in 0..N {
        p.publish(1, "", "q", BasicProperties::default(), &body(n));
        if n % 100 == 99 {
            p.advance(Duration::from_millis(20));
            p.core.end_turn(p.now);
            p.core.check_invariants().unwrap();
            assert!(!p.core.engine.alarms.blocked, "blocked after {n} messages");
            peak = peak.max(p.core.engine.memory_used());
        }
    }
    let arena = p.core.engine.msgs.arena();
    let (content, stubs) = (arena.content_bytes(), arena.stub_bytes());
    // Content stops at half the budget (and the chunk being written).
    assert!(
        content <= BUDGET / 2 + 32 * 1024,
        "{content} bytes of content chunks"
    );
    // Stubs of the windows only, not of every message.
    assert!(
        stubs < 256 * 1024,
        "{stubs} bytes of stub chunks for {N} messages"
    );
    assert!(peak < BUDGET, "{peak} bytes in use at the peak");
    let (_, q) = p.core.engine.broker.queues.iter().next().unwrap();
    assert_eq!(q.ready.len(), N as u64);
    assert!(
        q.ready.spilled() > N as u64 * 9 / 10,
        "{} spilled",
        q.ready.spilled()
    );

    // A consumer takes everything, in order, and acknowledges nothing.
    p.send(
        1,
        BasicConsume {
            queue: Bytes::from_static(b"q"),
            consumer_tag: Bytes::from_static(b"c"),
            ..Default::default()
        },
    );
    let got = contents(p.recv());
    assert_eq!(got.len(), N, "deliveries");
    for (i, (_, b)) in got.iter().enumerate() {
        assert_eq!(b, &body(i), "delivery {i}");
    }
    p.core.check_invariants().unwrap();
    // Read back (small ones come whole from their spill entries), they
    // are paged out again beyond half the budget: what is unacknowledged
    // is not kept in memory past it (give or take the chunks being
    // written).
    let after = p.core.engine.msgs.arena().content_bytes();
    assert!(
        after <= BUDGET / 2 + 2 * 32 * 1024,
        "unacknowledged deliveries read back from disk are kept in memory: {after} bytes of content (before: {content})"
    );

    // Acknowledged: chunks and buffers given back, no alarm.
    p.send(
        1,
        BasicAck {
            delivery_tag: 0,
            multiple: true,
        },
    );
    p.advance(Duration::from_millis(20));
    p.core.end_turn(p.now);
    p.core.check_invariants().unwrap();
    assert!(!p.core.engine.alarms.blocked, "blocked");
    let left = p.core.engine.memory_used();
    assert!(
        left < 256 * 1024,
        "{left} bytes in use with nothing queued (was {peak})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The consumer tags of the deliveries among `frames`, in order.
fn delivered_to(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Method(_, Method::BasicDeliver(d)) => {
                Some(String::from_utf8_lossy(&d.consumer_tag).into_owned())
            }
            _ => None,
        })
        .collect()
}

/// The delivery tags of the deliveries among `frames`, by consumer tag.
fn delivery_tags(frames: &[Frame]) -> Vec<(String, u64)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Method(_, Method::BasicDeliver(d)) => Some((
                String::from_utf8_lossy(&d.consumer_tag).into_owned(),
                d.delivery_tag,
            )),
            _ => None,
        })
        .collect()
}

fn declare(p: &mut Pair, q: &str, arguments: FieldTable) {
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::copy_from_slice(q.as_bytes()),
            arguments,
            ..Default::default()
        },
    );
}

fn consume(p: &mut Pair, q: &str, tag: &str, no_ack: bool) {
    p.send(
        1,
        BasicConsume {
            queue: Bytes::copy_from_slice(q.as_bytes()),
            consumer_tag: Bytes::copy_from_slice(tag.as_bytes()),
            no_ack,
            ..Default::default()
        },
    );
}

fn ack(p: &mut Pair, delivery_tag: u64, multiple: bool) {
    p.send(
        1,
        BasicAck {
            delivery_tag,
            multiple,
        },
    );
}

#[test]
fn consumers_with_full_windows_are_skipped_until_they_ack() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    declare(&mut p, "q", FieldTable::new());
    p.send(
        1,
        BasicQos {
            prefetch_count: 1,
            ..Default::default()
        },
    );
    for i in 0..50 {
        consume(&mut p, "q", &format!("c{i}"), false);
    }
    let _ = p.recv();
    for i in 0..60 {
        p.publish(
            1,
            "",
            "q",
            BasicProperties::default(),
            format!("{i}").as_bytes(),
        );
    }
    // One each, in subscription order; the other ten wait.
    let first = delivery_tags(&p.recv());
    let want: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
    assert_eq!(
        first.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>(),
        want
    );
    p.core.check_invariants().unwrap();
    // Whoever acks gets the next one; nobody else.
    let mut seen = first;
    for c in ["c7", "c3", "c7"] {
        let (_, tag) = seen.iter().rev().find(|(t, _)| t == c).cloned().unwrap();
        ack(&mut p, tag, false);
        let got = delivery_tags(&p.recv());
        assert_eq!(got.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), [c]);
        seen.extend(got);
        p.core.check_invariants().unwrap();
    }
    // Everybody acks: the last seven go round.
    ack(&mut p, 0, true);
    assert_eq!(delivered_to(&p.recv()).len(), 7);
    p.core.check_invariants().unwrap();
}

#[test]
fn a_full_channel_window_blocks_every_consumer_of_the_channel_until_acks() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    for q in ["q1", "q2"] {
        declare(&mut p, q, FieldTable::new());
    }
    p.send(
        1,
        BasicQos {
            prefetch_count: 2,
            global: true,
            ..Default::default()
        },
    );
    for i in 0..5 {
        consume(
            &mut p,
            if i % 2 == 0 { "q1" } else { "q2" },
            &format!("c{i}"),
            false,
        );
    }
    for i in 0..20 {
        let q = if i % 2 == 0 { "q1" } else { "q2" };
        p.publish(1, "", q, BasicProperties::default(), b"m");
    }
    let mut seen = delivery_tags(&p.recv());
    assert_eq!(seen.len(), 2);
    let mut total = seen.len();
    // One ack, one more delivery, for as long as there are messages.
    while total < 20 {
        let (_, tag) = seen.remove(0);
        ack(&mut p, tag, false);
        let got = delivery_tags(&p.recv());
        assert_eq!(got.len(), 1, "after {total}");
        total += 1;
        seen.extend(got);
        p.core.check_invariants().unwrap();
    }
    // Lifting the limit lets the rest go (none left here: publish more).
    for _ in 0..6 {
        p.publish(1, "", "q1", BasicProperties::default(), b"m");
    }
    assert!(delivered_to(&p.recv()).is_empty());
    p.send(
        1,
        BasicQos {
            prefetch_count: 0,
            global: true,
            ..Default::default()
        },
    );
    assert_eq!(delivered_to(&p.recv()).len(), 6);
    p.core.check_invariants().unwrap();
}

#[test]
fn consumers_held_back_by_a_full_outbox_resume_when_it_drains() {
    let mut p = Pair::new(Config {
        max_outbox: 8192,
        ..Config::default()
    });
    p.handshake(0);
    declare(&mut p, "q", FieldTable::new());
    for i in 0..3 {
        consume(&mut p, "q", &format!("c{i}"), true);
    }
    let _ = p.recv();
    let body = vec![b'x'; 2000];
    for _ in 0..40 {
        p.publish(1, "", "q", BasicProperties::default(), &body);
    }
    // Deliveries stop at the outbox limit; each drain lets more go.
    let ready = |p: &Pair| {
        p.core
            .engine
            .broker
            .queues
            .iter()
            .next()
            .map_or(0, |(_, q)| q.ready.len())
    };
    assert!(ready(&p) > 20, "{}", ready(&p));
    let mut got = Vec::new();
    for _ in 0..40 {
        got.extend(delivered_to(&p.recv()));
        p.core.check_invariants().unwrap();
    }
    assert_eq!(got.len(), 40);
    assert_eq!(ready(&p), 0);
    // Round robin throughout.
    for (i, c) in got.iter().enumerate() {
        assert_eq!(*c, format!("c{}", i % 3));
    }
}

#[test]
fn single_active_consumer_with_a_full_window_holds_the_queue() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    let mut args = FieldTable::new();
    args.insert("x-single-active-consumer", FieldValue::Bool(true));
    declare(&mut p, "sac", args);
    p.send(
        1,
        BasicQos {
            prefetch_count: 1,
            ..Default::default()
        },
    );
    for c in ["a", "b"] {
        consume(&mut p, "sac", c, false);
    }
    for _ in 0..3 {
        p.publish(1, "", "sac", BasicProperties::default(), b"m");
    }
    let got = delivery_tags(&p.recv());
    assert_eq!(
        got.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    ack(&mut p, got[0].1, false);
    let got = delivery_tags(&p.recv());
    assert_eq!(
        got.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    p.core.check_invariants().unwrap();
    // The active consumer goes (its delivery stays unacked): the next takes over.
    p.send(
        1,
        BasicCancel {
            consumer_tag: Bytes::from_static(b"a"),
            nowait: false,
        },
    );
    let got = delivered_to(&p.recv());
    assert_eq!(got, ["b"]);
    p.core.check_invariants().unwrap();
}

/// A publisher blocked by the memory alarm is not read, so its heartbeats
/// are not seen: it must not be disconnected for missing them (RabbitMQ
/// pauses the heartbeat monitor of blocked connections). Once the alarm
/// clears it is served, and monitored again from a fresh start.
#[test]
fn blocked_publisher_is_not_disconnected_for_missed_heartbeats() {
    let mut p = Pair::new(Config {
        max_memory: 256 * 1024,
        data_dir: None,
        ..Config::default()
    });
    let publisher = p.id;
    p.handshake(1);
    declare(&mut p, "q", FieldTable::new());
    let body = vec![b'x'; 100 * 1024];
    for _ in 0..3 {
        p.publish(1, "", "q", BasicProperties::default(), &body);
    }
    let _ = p.recv();
    assert!(p.core.engine.alarms.blocked);
    assert!(!p.core.wants_read(publisher));
    // Five seconds of silence (the server does not read it): alive, and
    // sent heartbeats all along.
    let mut beats = 0;
    for _ in 0..10 {
        p.advance(Duration::from_millis(500));
        beats += p
            .recv()
            .iter()
            .filter(|f| matches!(f, Frame::Heartbeat(0)))
            .count();
    }
    assert!(!p.core.is_dead(publisher));
    assert!(beats >= 5, "{beats} heartbeats");
    // Another connection purges the queue: the alarm clears.
    let other = p.core.accept(([127, 0, 0, 1], 40001).into(), p.now);
    p.id = other;
    p.handshake(0);
    p.send(
        1,
        QueuePurge {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    let _ = p.recv();
    p.id = publisher;
    assert!(!p.core.engine.alarms.blocked);
    assert!(p.core.wants_read(publisher));
    // Monitored again from a fresh start: 1.5 s of silence is fine...
    p.advance(Duration::from_millis(1500));
    assert!(!p.core.is_dead(publisher));
    p.publish(1, "", "q", BasicProperties::default(), b"served");
    assert_eq!(
        p.core
            .engine
            .broker
            .queues
            .iter()
            .next()
            .map(|(_, q)| q.ready.len()),
        Some(1)
    );
    // ... two intervals without a heartbeat are not.
    p.advance(Duration::from_millis(2500));
    assert!(p.core.is_dead(publisher));
}

/// A peer whose output is backed up is not read either: it counts as alive
/// while it takes our output, and is closed when it stops.
#[test]
fn backed_up_peer_is_alive_while_it_reads_and_closed_when_it_stops() {
    let mut p = Pair::new(Config {
        max_outbox: 8192,
        ..Config::default()
    });
    p.handshake(1);
    declare(&mut p, "q", FieldTable::new());
    consume(&mut p, "q", "c", true);
    let body = vec![b'x'; 2000];
    for _ in 0..200 {
        p.publish(1, "", "q", BasicProperties::default(), &body);
    }
    // It reads (slowly) and sends nothing for four seconds: the output is
    // backed up all along, so it is not read and that is not its fault.
    let mut got = 0;
    for _ in 0..8 {
        p.advance(Duration::from_millis(500));
        got += delivered_to(&p.recv()).len();
        assert!(!p.core.wants_read(p.id));
    }
    assert!(!p.core.is_dead(p.id));
    assert!(got > 20 && got < 200, "{got}");
    // It stops reading: two heartbeat intervals later it is gone.
    p.advance(Duration::from_millis(1500));
    assert!(!p.core.is_dead(p.id));
    p.advance(Duration::from_millis(1000));
    assert!(p.core.is_dead(p.id));
}

/// After a frame error the input cannot be re-synchronised: what follows is
/// dropped unparsed (it was parsed, and each read of garbage raised and
/// logged another error), even what looks like connection.close-ok.
#[test]
fn input_after_a_frame_error_is_dropped_unparsed() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    // A method frame whose end octet is wrong.
    p.send_raw(&[1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 40, 0xFF]);
    assert_eq!(close_code(&p.recv()), Some(ReplyCode::FRAME_ERROR));
    // A MiB of frame headers with bad end octets.
    let pattern = [1u8, 0, 1, 0, 0, 0, 1, b'x', 0];
    let garbage: Vec<u8> = pattern.iter().copied().cycle().take(1 << 20).collect();
    for chunk in garbage.chunks(65536) {
        p.send_raw(chunk);
        assert!(p.recv().is_empty());
        assert!(p.core.conn(p.id).is_some_and(|c| c.inbuf.is_empty()));
    }
    p.send(0, ConnectionCloseOk {});
    assert!(!p.core.is_dead(p.id));
    // The close timeout ends it.
    p.advance(Duration::from_secs(3));
    assert!(p.core.is_dead(p.id));
}

/// A connection error raised by a method leaves the stream well-framed: the
/// client's connection.close-ok is still seen.
#[test]
fn close_ok_ends_a_connection_closed_for_a_method_error() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.send(7, QueueDeclare::default());
    assert_eq!(close_code(&p.recv()), Some(ReplyCode::CHANNEL_ERROR));
    // Frames other than close-ok are ignored, not errors.
    p.send(1, QueueDeclare::default());
    assert!(p.recv().is_empty());
    assert!(!p.core.is_dead(p.id));
    p.send(0, ConnectionCloseOk {});
    assert!(p.core.is_dead(p.id));
}
