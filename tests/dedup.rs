//! Message deduplication, as the `rabbitmq-message-deduplication`
//! plugin's users use it: an exchange of type `x-message-deduplication`
//! routes (like fanout) only messages whose `x-deduplication-header` value
//! it has not seen within `x-cache-ttl` (argument or header); duplicates
//! are dropped and still confirmed. On the in-memory core with simulated
//! time.

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
