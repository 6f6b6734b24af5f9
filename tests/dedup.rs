//! Message deduplication, as the `rabbitmq-message-deduplication`
//! plugin's users use it: an exchange of type `x-message-deduplication`
//! routes (like fanout) only messages whose `x-deduplication-header` value
//! it has not seen within `x-cache-ttl` (argument or header); duplicates
//! are dropped and still confirmed; an exchange bound to it (e2e) routes
//! through its check. A queue declared with `x-message-deduplication:
//! true` does not enqueue a message whose key a message still in it has,
//! until that message leaves (ack, no-ack delivery, reject, expiry,
//! drop-head, purge); a restart rebuilds the keys. On the in-memory core
//! (and a temporary store) with simulated time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use bytes::Bytes;
use warren::codec::*;
use warren::testing::Pair;
use warren::Config;

fn declare(p: &mut Pair, args: FieldTable) -> Vec<(u16, Method)> {
    p.send(
        1,
        ExchangeDeclare {
            exchange: Bytes::from_static(b"dedup"),
            kind: Bytes::from_static(b"x-message-deduplication"),
            arguments: args,
            ..Default::default()
        },
    );
    p.recv_methods()
}

fn with(key: &str, ttl: Option<i64>) -> BasicProperties {
    let mut h = FieldTable::new();
    h.insert(
        "x-deduplication-header",
        FieldValue::LongStr(Bytes::from(key.to_string())),
    );
    if let Some(t) = ttl {
        h.insert("x-cache-ttl", FieldValue::I64(t));
    }
    BasicProperties {
        headers: Some(h),
        ..Default::default()
    }
}

fn depth(p: &mut Pair, q: &str) -> u32 {
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from(q.to_string()),
            passive: true,
            ..Default::default()
        },
    );
    p.recv_methods()
        .into_iter()
        .find_map(|(_, m)| match m {
            Method::QueueDeclareOk(ok) => Some(ok.message_count),
            _ => None,
        })
        .expect("declare-ok")
}

#[test]
fn duplicates_are_dropped_and_still_confirmed_and_forgotten_after_their_ttl() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    let mut args = FieldTable::new();
    args.insert("x-cache-size", FieldValue::I32(100));
    args.insert("x-cache-ttl", FieldValue::I32(1000));
    let got = declare(&mut p, args);
    assert!(
        got.iter()
            .any(|(_, m)| matches!(m, Method::ExchangeDeclareOk(_))),
        "{got:?}"
    );
    for q in ["a", "b"] {
        p.send(
            1,
            QueueDeclare {
                queue: Bytes::from_static(q.as_bytes()),
                ..Default::default()
            },
        );
        p.send(
            1,
            QueueBind {
                queue: Bytes::from_static(q.as_bytes()),
                exchange: Bytes::from_static(b"dedup"),
                routing_key: Bytes::from_static(b"ignored"),
                ..Default::default()
            },
        );
    }
    p.send(1, ConfirmSelect { nowait: false });
    let _ = p.recv_methods();
    // Routed like fanout; the second "k1" and the third are duplicates.
    for key in ["k1", "k1", "k2", "k1"] {
        p.publish(1, "dedup", "any.key", with(key, None), b"body");
    }
    p.publish(1, "dedup", "x", BasicProperties::default(), b"no key");
    let acks: Vec<u64> = p
        .recv_methods()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Method::BasicAck(a) => Some(a.delivery_tag),
            _ => None,
        })
        .collect();
    assert_eq!(acks.last(), Some(&5), "every publish confirmed: {acks:?}");
    assert_eq!(depth(&mut p, "a"), 3);
    assert_eq!(depth(&mut p, "b"), 3);
    // After the exchange's ttl the key is new again; a message's own
    // x-cache-ttl header wins over the argument.
    p.advance(Duration::from_millis(1100));
    p.publish(1, "dedup", "", with("k1", Some(60_000)), b"again");
    p.publish(1, "dedup", "", with("k2", None), b"again");
    p.advance(Duration::from_millis(1100));
    p.publish(1, "dedup", "", with("k1", None), b"still a duplicate");
    p.publish(1, "dedup", "", with("k2", None), b"new again");
    assert_eq!(depth(&mut p, "a"), 6);
}

#[test]
fn the_arguments_are_checked_as_the_plugin_checks_them() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    let got = declare(&mut p, FieldTable::new());
    let close = got.iter().find_map(|(_, m)| match m {
        Method::ChannelClose(c) => Some(c.clone()),
        _ => None,
    });
    let close = close.expect("channel.close");
    assert_eq!(close.reply_code, 406);
    assert!(
        String::from_utf8_lossy(&close.reply_text).contains("'x-cache-size' must be an integer"),
        "{close:?}"
    );
    // The type is listed in the management API's overview and kept with
    // its arguments; a well-formed declare works.
    p.send(1, ChannelCloseOk {});
    p.send(
        2,
        ChannelOpen {
            ..Default::default()
        },
    );
    let _ = p.recv_methods();
    let mut args = FieldTable::new();
    args.insert(
        "x-cache-size",
        FieldValue::LongStr(Bytes::from_static(b"5")),
    );
    p.send(
        2,
        ExchangeDeclare {
            exchange: Bytes::from_static(b"dedup2"),
            kind: Bytes::from_static(b"x-message-deduplication"),
            arguments: args,
            ..Default::default()
        },
    );
    let got = p.recv_methods();
    assert!(
        got.iter()
            .any(|(_, m)| matches!(m, Method::ExchangeDeclareOk(_))),
        "{got:?}"
    );
}

#[test]
fn a_duplicate_goes_to_the_alternate_exchange_as_an_unroutable_message() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    let mut args = FieldTable::new();
    args.insert("x-cache-size", FieldValue::I32(10));
    args.insert(
        "alternate-exchange",
        FieldValue::LongStr(Bytes::from_static(b"ae")),
    );
    declare(&mut p, args);
    p.send(
        1,
        ExchangeDeclare {
            exchange: Bytes::from_static(b"ae"),
            kind: Bytes::from_static(b"fanout"),
            ..Default::default()
        },
    );
    for (q, x) in [("first", "dedup"), ("dups", "ae")] {
        p.send(
            1,
            QueueDeclare {
                queue: Bytes::from_static(q.as_bytes()),
                ..Default::default()
            },
        );
        p.send(
            1,
            QueueBind {
                queue: Bytes::from_static(q.as_bytes()),
                exchange: Bytes::from_static(x.as_bytes()),
                ..Default::default()
            },
        );
    }
    let _ = p.recv_methods();
    for _ in 0..3 {
        p.publish(1, "dedup", "", with("same", None), b"m");
    }
    assert_eq!(depth(&mut p, "first"), 1);
    assert_eq!(depth(&mut p, "dups"), 2);
}

fn dedup_queue(p: &mut Pair, name: &str, durable: bool, more: &[(&'static str, FieldValue)]) {
    let mut args = FieldTable::new();
    args.insert("x-message-deduplication", FieldValue::Bool(true));
    for (k, v) in more {
        args.insert(*k, v.clone());
    }
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from(name.to_string()),
            durable,
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

/// basic.get: the delivery tag and body, None when empty.
fn get(p: &mut Pair, q: &str, no_ack: bool) -> Option<(u64, Vec<u8>)> {
    p.send(
        1,
        BasicGet {
            queue: Bytes::from(q.to_string()),
            no_ack,
            ..Default::default()
        },
    );
    let frames = p.recv();
    let tag = frames.iter().find_map(|f| match f {
        Frame::Method(_, Method::BasicGetOk(ok)) => Some(ok.delivery_tag),
        _ => None,
    })?;
    let body = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Body(_, b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    Some((tag, body))
}

fn acks(p: &mut Pair) -> Vec<u64> {
    p.recv_methods()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Method::BasicAck(a) => Some(a.delivery_tag),
            _ => None,
        })
        .collect()
}

#[test]
fn a_deduplication_queue_holds_a_key_until_its_message_is_settled() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    dedup_queue(&mut p, "dq", false, &[]);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"plain"),
            ..Default::default()
        },
    );
    for q in ["dq", "plain"] {
        p.send(
            1,
            QueueBind {
                queue: Bytes::from_static(q.as_bytes()),
                exchange: Bytes::from_static(b"amq.fanout"),
                ..Default::default()
            },
        );
    }
    p.send(1, ConfirmSelect { nowait: false });
    let _ = p.recv_methods();
    p.publish(1, "amq.fanout", "", with("k", None), b"1");
    p.publish(1, "amq.fanout", "", with("k", None), b"2");
    p.publish(1, "amq.fanout", "", BasicProperties::default(), b"no key");
    p.publish(1, "amq.fanout", "", BasicProperties::default(), b"no key");
    assert_eq!(acks(&mut p).last(), Some(&4), "a duplicate is confirmed");
    assert_eq!(depth(&mut p, "dq"), 3, "the duplicate is not queued");
    assert_eq!(depth(&mut p, "plain"), 4, "other queues get it");
    p.send(
        1,
        QueuePurge {
            queue: Bytes::from_static(b"plain"),
            ..Default::default()
        },
    );
    p.send(
        1,
        QueuePurge {
            queue: Bytes::from_static(b"dq"),
            ..Default::default()
        },
    );
    let _ = p.recv_methods();
    // Delivered and not yet acknowledged: still held.
    p.publish(1, "", "dq", with("k", None), b"a");
    let (tag, body) = get(&mut p, "dq", false).unwrap();
    assert_eq!(body, b"a");
    p.publish(1, "", "dq", with("k", None), b"b");
    assert_eq!(depth(&mut p, "dq"), 0);
    // Requeued: still held.
    p.send(
        1,
        BasicReject {
            delivery_tag: tag,
            requeue: true,
        },
    );
    p.publish(1, "", "dq", with("k", None), b"c");
    assert_eq!(depth(&mut p, "dq"), 1);
    // Acknowledged: free.
    let (tag, body) = get(&mut p, "dq", false).unwrap();
    assert_eq!(body, b"a");
    p.send(
        1,
        BasicAck {
            delivery_tag: tag,
            multiple: false,
        },
    );
    p.publish(1, "", "dq", with("k", None), b"d");
    // Taken without ack: free at once.
    let (_, body) = get(&mut p, "dq", true).unwrap();
    assert_eq!(body, b"d");
    p.publish(1, "", "dq", with("k", None), b"e");
    // Rejected without requeue: free.
    let (tag, body) = get(&mut p, "dq", false).unwrap();
    assert_eq!(body, b"e");
    p.send(
        1,
        BasicReject {
            delivery_tag: tag,
            requeue: false,
        },
    );
    p.publish(1, "", "dq", with("k", None), b"f");
    // A no-ack consumer: free as it is delivered.
    p.send(
        1,
        BasicConsume {
            queue: Bytes::from_static(b"dq"),
            consumer_tag: Bytes::from_static(b"c"),
            no_ack: true,
            ..Default::default()
        },
    );
    let _ = p.recv();
    p.publish(1, "", "dq", with("k", None), b"g");
    let bodies: Vec<Vec<u8>> = p
        .recv()
        .into_iter()
        .filter_map(|f| match f {
            Frame::Body(_, b) => Some(b.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec![b"g".to_vec()]);
    let acked = acks(&mut p);
    assert!(acked.is_empty(), "{acked:?}");
    p.core.check_invariants().unwrap();
}

#[test]
fn expiry_drop_head_purge_and_delete_free_a_key() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    dedup_queue(
        &mut p,
        "ttl",
        false,
        &[("x-message-ttl", FieldValue::I32(1000))],
    );
    p.publish(1, "", "ttl", with("k", None), b"1");
    p.publish(1, "", "ttl", with("k", None), b"2");
    assert_eq!(depth(&mut p, "ttl"), 1);
    p.advance(Duration::from_millis(1100));
    assert_eq!(depth(&mut p, "ttl"), 0, "expired");
    p.publish(1, "", "ttl", with("k", None), b"3");
    assert_eq!(depth(&mut p, "ttl"), 1);
    // A message's own expiration too.
    dedup_queue(&mut p, "own", false, &[]);
    let mut props = with("k", None);
    props.expiration = Some(Bytes::from_static(b"500"));
    p.publish(1, "", "own", props, b"1");
    p.publish(1, "", "own", with("k", None), b"2");
    assert_eq!(depth(&mut p, "own"), 1);
    p.advance(Duration::from_millis(600));
    p.publish(1, "", "own", with("k", None), b"3");
    assert_eq!(get(&mut p, "own", true).unwrap().1, b"3");

    // drop-head: the dropped message's key is free (the plugin's test).
    dedup_queue(
        &mut p,
        "max1",
        false,
        &[("x-max-length", FieldValue::I32(1))],
    );
    p.publish(1, "", "max1", with("this", None), b"this");
    p.publish(1, "", "max1", with("that", None), b"that");
    p.publish(1, "", "max1", with("this", None), b"this again");
    assert_eq!(get(&mut p, "max1", true).unwrap().1, b"this again");

    // A message refused by a full queue (reject-publish-dlx) frees
    // nothing of the messages in it.
    dedup_queue(
        &mut p,
        "full",
        false,
        &[
            ("x-max-length", FieldValue::I32(1)),
            (
                "x-overflow",
                FieldValue::LongStr(Bytes::from_static(b"reject-publish-dlx")),
            ),
        ],
    );
    p.publish(1, "", "full", with("first", None), b"first");
    p.publish(1, "", "full", with("refused", None), b"refused");
    let (tag, body) = get(&mut p, "full", false).unwrap();
    assert_eq!(body, b"first");
    p.publish(1, "", "full", with("first", None), b"first again");
    assert_eq!(depth(&mut p, "full"), 0, "the first still holds its key");
    p.send(
        1,
        BasicAck {
            delivery_tag: tag,
            multiple: false,
        },
    );

    // Dead-lettered (rejected) into another deduplication queue: checked
    // there too.
    dedup_queue(&mut p, "dead", false, &[]);
    dedup_queue(
        &mut p,
        "src",
        false,
        &[
            (
                "x-dead-letter-exchange",
                FieldValue::LongStr(Bytes::from_static(b"")),
            ),
            (
                "x-dead-letter-routing-key",
                FieldValue::LongStr(Bytes::from_static(b"dead")),
            ),
        ],
    );
    for body in [b"1", b"2"] {
        p.publish(1, "", "src", with("k", None), body);
        let (tag, _) = get(&mut p, "src", false).unwrap();
        p.send(
            1,
            BasicReject {
                delivery_tag: tag,
                requeue: false,
            },
        );
    }
    assert_eq!(
        depth(&mut p, "dead"),
        1,
        "the second one is a duplicate there"
    );
    assert_eq!(depth(&mut p, "src"), 0);

    // Purge frees what was ready, not what is out.
    dedup_queue(&mut p, "pq", false, &[]);
    p.publish(1, "", "pq", with("out", None), b"out");
    let (tag, _) = get(&mut p, "pq", false).unwrap();
    p.publish(1, "", "pq", with("ready", None), b"ready");
    p.send(
        1,
        QueuePurge {
            queue: Bytes::from_static(b"pq"),
            ..Default::default()
        },
    );
    let _ = p.recv_methods();
    p.publish(1, "", "pq", with("ready", None), b"ready");
    p.publish(1, "", "pq", with("out", None), b"out");
    assert_eq!(depth(&mut p, "pq"), 1);
    p.send(
        1,
        BasicAck {
            delivery_tag: tag,
            multiple: false,
        },
    );
    p.publish(1, "", "pq", with("out", None), b"out");
    assert_eq!(depth(&mut p, "pq"), 2);

    // A queue declared again after a delete starts with no keys.
    p.send(
        1,
        QueueDelete {
            queue: Bytes::from_static(b"pq"),
            ..Default::default()
        },
    );
    let _ = p.recv_methods();
    dedup_queue(&mut p, "pq", false, &[]);
    p.publish(1, "", "pq", with("ready", None), b"ready");
    assert_eq!(depth(&mut p, "pq"), 1);
    p.core.check_invariants().unwrap();
}

#[test]
fn an_exchange_bound_to_a_deduplication_exchange_routes_through_its_check() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    let mut args = FieldTable::new();
    args.insert("x-cache-size", FieldValue::I32(10));
    declare(&mut p, args);
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"out"),
            ..Default::default()
        },
    );
    p.send(
        1,
        QueueBind {
            queue: Bytes::from_static(b"out"),
            exchange: Bytes::from_static(b"dedup"),
            ..Default::default()
        },
    );
    p.send(
        1,
        ExchangeBind {
            destination: Bytes::from_static(b"dedup"),
            source: Bytes::from_static(b"amq.topic"),
            routing_key: Bytes::from_static(b"#"),
            ..Default::default()
        },
    );
    p.send(1, ConfirmSelect { nowait: false });
    let _ = p.recv_methods();
    p.publish(1, "amq.topic", "a.b", with("k", None), b"1");
    p.publish(1, "amq.topic", "a.c", with("k", None), b"2");
    p.publish(1, "dedup", "", with("k", None), b"3");
    p.publish(1, "amq.topic", "a.b", with("other", None), b"4");
    p.publish(1, "amq.topic", "a.b", BasicProperties::default(), b"5");
    assert_eq!(acks(&mut p).last(), Some(&5));
    assert_eq!(depth(&mut p, "out"), 3);
}

#[test]
fn a_restart_rebuilds_the_keys_of_the_recovered_messages() {
    let dir = std::env::temp_dir().join(format!("warren-dedupq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    let persistent = |key: &str| {
        let mut p = with(key, None);
        p.delivery_mode = Some(2);
        p
    };
    {
        let mut p = Pair::open(config()).unwrap();
        p.handshake(0);
        dedup_queue(&mut p, "dq", true, &[]);
        p.send(1, ConfirmSelect { nowait: false });
        let _ = p.recv_methods();
        p.publish(1, "", "dq", persistent("a"), b"a");
        p.publish(1, "", "dq", persistent("b"), b"b");
        p.publish(1, "", "dq", persistent("a"), b"a2");
        assert_eq!(acks(&mut p).last(), Some(&3));
        assert_eq!(depth(&mut p, "dq"), 2);
    }
    let mut p = Pair::open(config()).unwrap();
    p.handshake(0);
    assert_eq!(depth(&mut p, "dq"), 2);
    p.publish(1, "", "dq", persistent("a"), b"a3");
    p.publish(1, "", "dq", persistent("b"), b"b3");
    assert_eq!(depth(&mut p, "dq"), 2, "recovered messages hold their keys");
    let (tag, body) = get(&mut p, "dq", false).unwrap();
    assert_eq!(body, b"a");
    p.send(
        1,
        BasicAck {
            delivery_tag: tag,
            multiple: false,
        },
    );
    p.publish(1, "", "dq", persistent("a"), b"a4");
    assert_eq!(depth(&mut p, "dq"), 2);
    p.core.check_invariants().unwrap();
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A deduplication queue that had spilled at a clean stop: the keys of the
/// spilled messages are read back too (without taking them out of the
/// spill); those of transient messages, gone with the restart, are free.
#[test]
fn a_restart_rebuilds_the_keys_of_spilled_messages_too() {
    let dir = std::env::temp_dir().join(format!("warren-dedupq-spill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || Config {
        data_dir: Some(dir.clone()),
        max_memory: 1 << 20,
        max_outbox: 256 << 20,
        ..Config::default()
    };
    let props = |i: usize| {
        let mut p = with(&format!("k{i}"), None);
        p.delivery_mode = Some(if i.is_multiple_of(3) { 1 } else { 2 });
        p
    };
    let spilled = |p: &Pair| {
        p.core
            .engine
            .broker
            .queues
            .iter()
            .map(|(_, q)| (q.ready.len(), q.ready.spilled()))
            .next()
            .unwrap()
    };
    const N: usize = 12_000;
    {
        let mut p = Pair::open(config()).unwrap();
        p.handshake(0);
        dedup_queue(&mut p, "dq", true, &[]);
        // 500 publishes a turn (one sync each).
        let mut out = bytes::BytesMut::new();
        for i in 0..N {
            let body = format!("message {i:07}");
            let publish = BasicPublish {
                routing_key: Bytes::from_static(b"dq"),
                ..Default::default()
            };
            warren::codec::frame::write_method(&mut out, 1, &publish.into());
            Frame::Header(
                1,
                Box::new(ContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties: props(i),
                }),
            )
            .encode(&mut out);
            Frame::Body(1, Bytes::from(body)).encode(&mut out);
            if i % 500 == 499 {
                p.send_raw(&out.split());
                p.advance(Duration::from_millis(1));
            }
        }
        p.send_raw(&out.split());
        p.advance(Duration::from_millis(1));
        let (n, sp) = spilled(&p);
        assert_eq!(n, N as u64);
        assert!(sp > 0, "spilled");
        p.core.check_invariants().unwrap();
        p.core.engine.close_store();
    }
    let mut p = Pair::open(config()).unwrap();
    p.handshake(0);
    let (n, sp) = spilled(&p);
    let kept = (0..N).filter(|i| !i.is_multiple_of(3)).count() as u64;
    assert_eq!(n, kept);
    assert!(sp > 0, "still spilled");
    let st = p.core.engine.msgs.store.as_ref().unwrap();
    assert_eq!(st.spill.read, 0, "nothing taken out of the spill");
    // Duplicates of persistent messages anywhere in the queue are dropped;
    // the transient ones' keys are free.
    let persistent = |from: usize| (from..N).find(|i| !i.is_multiple_of(3)).unwrap();
    let last = (0..N).rev().find(|i| !i.is_multiple_of(3)).unwrap();
    for i in [1, 2, persistent(N / 2), last] {
        p.publish(1, "", "dq", props(i), b"duplicate");
        p.advance(Duration::from_millis(1));
        assert_eq!(spilled(&p).0, kept, "k{i}");
    }
    let transient = (N / 2..N).find(|i| i.is_multiple_of(3)).unwrap();
    p.publish(1, "", "dq", props(transient), b"transient before");
    p.advance(Duration::from_millis(1));
    assert_eq!(spilled(&p).0, kept + 1);
    p.core.check_invariants().unwrap();
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
