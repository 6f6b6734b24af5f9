//! Protocol violations and error replies, over a raw socket with
//! hand-encoded frames (`warren::codec`), so every reply code is checked
//! exactly. Each test passes against RabbitMQ
//! (`WARREN_TEST_ADDR=127.0.0.1:5672`) and against the embedded broker.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use amqp_raw::{unique, Raw};
use bytes::Bytes;
use warren::codec::frame::PROTOCOL_HEADER;
use warren::codec::*;

fn s(v: &str) -> Bytes {
    Bytes::from(v.to_string())
}

fn declare_queue(r: &mut Raw, ch: u16, name: &str) {
    match r.rpc(
        ch,
        QueueDeclare {
            ticket: 0,
            queue: s(name),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::new(),
        },
    ) {
        Method::QueueDeclareOk(_) => {}
        other => panic!("queue.declare: {other:?}"),
    }
}

fn delete_queue(r: &mut Raw, ch: u16, name: &str) {
    match r.rpc(
        ch,
        QueueDelete {
            ticket: 0,
            queue: s(name),
            if_unused: false,
            if_empty: false,
            nowait: false,
        },
    ) {
        Method::QueueDeleteOk(_) => {}
        other => panic!("queue.delete: {other:?}"),
    }
}

fn consume(r: &mut Raw, ch: u16, queue: &str, tag: &str, exclusive: bool) -> Method {
    r.rpc(
        ch,
        BasicConsume {
            ticket: 0,
            queue: s(queue),
            consumer_tag: s(tag),
            no_local: false,
            no_ack: false,
            exclusive,
            nowait: false,
            arguments: FieldTable::new(),
        },
    )
}

// ---------------------------------------------------------------- handshake

#[test]
fn server_properties_and_capabilities() {
    let b = common::start();
    let r = Raw::open(b.addr);
    let start = r.start.as_ref().expect("connection.start");
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechs = String::from_utf8_lossy(&start.mechanisms).to_string();
    assert!(mechs.split(' ').any(|m| m == "PLAIN"), "mechanisms {mechs}");
    let props = &start.server_properties;
    for key in ["product", "version", "platform"] {
        match props.get(key) {
            Some(FieldValue::LongStr(v)) => assert!(!v.is_empty(), "{key} empty"),
            other => panic!("server property {key}: {other:?}"),
        }
    }
    let Some(FieldValue::Table(caps)) = props.get("capabilities") else {
        panic!("no capabilities table in {props:?}");
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            caps.get(cap),
            Some(&FieldValue::Bool(true)),
            "capability {cap}"
        );
    }
}

#[test]
fn tune_offers_rabbitmq_defaults() {
    let b = common::start();
    let r = Raw::open(b.addr);
    let t = r.tune.as_ref().expect("connection.tune");
    assert_eq!(t.frame_max, 131_072);
    assert_eq!(t.channel_max, 2047);
    assert_eq!(t.heartbeat, 60);
}

#[test]
fn bad_credentials_access_refused() {
    let b = common::start();
    let mut r = Raw::tcp(b.addr);
    let close = r
        .handshake("guest", "not-the-password", "/")
        .expect_err("login must be refused");
    assert_eq!(close.reply_code, 403, "{close:?}");
    let mut r = Raw::tcp(b.addr);
    let close = r
        .handshake("nobody-such", "guest", "/")
        .expect_err("login must be refused");
    assert_eq!(close.reply_code, 403, "{close:?}");
}

#[test]
fn unknown_vhost_not_allowed() {
    let b = common::start();
    let mut r = Raw::tcp(b.addr);
    let close = r
        .handshake("guest", "guest", "no-such-vhost-here")
        .expect_err("open must be refused");
    assert_eq!(close.reply_code, 530, "{close:?}");
}

#[test]
fn bad_protocol_header_gets_supported_header() {
    let b = common::start();
    let mut r = Raw::tcp(b.addr);
    r.send_bytes(b"AMQP\x00\x00\x08\x00");
    let back = r.read_to_close();
    assert_eq!(&back[..], &PROTOCOL_HEADER[..]);
}

// ---------------------------------------------------------------- channels

/// The negotiated channel_max (2047) bounds the channels a connection may
/// have open: the spec reads it as the highest channel number, RabbitMQ
/// counts open channels. Channels 1..=2047 all open; one more is refused
/// with 530 NOT_ALLOWED either way.
#[test]
fn channel_above_channel_max_rejected() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    let max = r.tune.as_ref().expect("tune").channel_max;
    assert_eq!(max, 2047);
    // Pipeline the opens, then read the open-oks.
    let mut out = bytes::BytesMut::new();
    for ch in 1..=max {
        frame::write_method(
            &mut out,
            ch,
            &ChannelOpen {
                out_of_band: Bytes::new(),
            }
            .into(),
        );
    }
    r.send_bytes(&out);
    // RabbitMQ runs a process per channel: the open-oks may come out of order.
    let mut opened = std::collections::BTreeSet::new();
    for _ in 1..=max {
        match r.recv_method() {
            (c, Method::ChannelOpenOk(_)) => assert!(opened.insert(c), "open-ok twice on {c}"),
            other => panic!("channel.open: {other:?}"),
        }
    }
    assert_eq!(opened, (1..=max).collect());
    r.send(
        max + 1,
        ChannelOpen {
            out_of_band: Bytes::new(),
        },
    );
    assert_eq!(r.connection_close_code(), 530);
}

#[test]
fn second_channel_open_is_channel_error() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(5);
    r.send(
        5,
        ChannelOpen {
            out_of_band: Bytes::new(),
        },
    );
    assert_eq!(r.connection_close_code(), 504);
}

#[test]
fn method_on_unopened_channel_is_channel_error() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.send(
        7,
        QueueDeclare {
            ticket: 0,
            queue: s(&unique("unopened")),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: true,
            nowait: false,
            arguments: FieldTable::new(),
        },
    );
    assert_eq!(r.connection_close_code(), 504);
}

#[test]
fn unknown_method_not_implemented() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    // basic (60) method 999 does not exist.
    let mut f = vec![1u8, 0, 1, 0, 0, 0, 4];
    f.extend_from_slice(&60u16.to_be_bytes());
    f.extend_from_slice(&999u16.to_be_bytes());
    f.push(0xCE);
    r.send_bytes(&f);
    if let Some(code) = r.connection_close_code_or_drop() {
        assert_eq!(code, 540);
    }
}

#[test]
fn unknown_class_not_implemented() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    let mut f = vec![1u8, 0, 1, 0, 0, 0, 4];
    f.extend_from_slice(&4242u16.to_be_bytes());
    f.extend_from_slice(&10u16.to_be_bytes());
    f.push(0xCE);
    r.send_bytes(&f);
    if let Some(code) = r.connection_close_code_or_drop() {
        assert_eq!(code, 540);
    }
}

#[test]
fn content_header_without_publish_unexpected_frame() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.send_bytes(&Raw::header_frame(1, 3));
    assert_eq!(r.connection_close_code(), 505);
}

#[test]
fn body_without_header_unexpected_frame() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.send(
        1,
        BasicPublish {
            ticket: 0,
            exchange: Bytes::new(),
            routing_key: s("x"),
            mandatory: false,
            immediate: false,
        },
    );
    r.send_bytes(&Raw::body_frame(1, b"abc"));
    assert_eq!(r.connection_close_code(), 505);
}

#[test]
fn method_instead_of_content_header_unexpected_frame() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.send(
        1,
        BasicPublish {
            ticket: 0,
            exchange: Bytes::new(),
            routing_key: s("x"),
            mandatory: false,
            immediate: false,
        },
    );
    r.send(
        1,
        BasicQos {
            prefetch_size: 0,
            prefetch_count: 1,
            global: false,
        },
    );
    assert_eq!(r.connection_close_code(), 505);
}

#[test]
fn bad_frame_end_frame_error() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    let mut out = bytes::BytesMut::new();
    frame::write_method(
        &mut out,
        1,
        &BasicQos {
            prefetch_size: 0,
            prefetch_count: 1,
            global: false,
        }
        .into(),
    );
    let last = out.len() - 1;
    out[last] = 0x00;
    r.send_bytes(&out);
    assert_eq!(r.connection_close_code(), 501);
}

#[test]
fn frame_above_frame_max_frame_error() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.send(
        1,
        BasicPublish {
            ticket: 0,
            exchange: Bytes::new(),
            routing_key: s("x"),
            mandatory: false,
            immediate: false,
        },
    );
    let big = vec![0u8; 300_000];
    r.send_bytes(&Raw::header_frame(1, big.len() as u64));
    r.send_bytes(&Raw::body_frame(1, &big));
    assert_eq!(r.connection_close_code(), 501);
}

/// Before tune-ok the limit is 4096 bytes. RabbitMQ closes such a peer
/// silently (after a delay) because it is still in the handshake; warren
/// may say 501 first. Either way: no handshake progress, socket closed.
#[test]
fn frame_too_large_before_tune() {
    let b = common::start();
    let mut r = Raw::tcp(b.addr);
    r.send_bytes(PROTOCOL_HEADER);
    match r.recv_method() {
        (0, Method::ConnectionStart(_)) => {}
        other => panic!("expected connection.start, got {other:?}"),
    }
    let mut props = FieldTable::new();
    props.insert(
        "padding",
        FieldValue::LongStr(Bytes::from(vec![b'x'; 20_000])),
    );
    r.send(
        0,
        ConnectionStartOk {
            client_properties: props,
            mechanism: s("PLAIN"),
            response: s("\0guest\0guest"),
            locale: s("en_US"),
        },
    );
    match r.recv() {
        None => {}
        Some(frame::Frame::Method(0, Method::ConnectionClose(c))) => {
            assert_eq!(c.reply_code, 501, "{c:?}")
        }
        Some(f) => panic!("expected a close, got {f:?}"),
    }
}

/// RabbitMQ answers a heartbeat on a non-zero channel with 505
/// UNEXPECTED_FRAME (the spec would say 501).
#[test]
fn heartbeat_on_nonzero_channel_unexpected_frame() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.send_bytes(&[8, 0, 1, 0, 0, 0, 0, 0xCE]);
    assert_eq!(r.connection_close_code(), 505);
}

// ------------------------------------------------------- soft/hard errors

#[test]
fn publish_to_missing_exchange_not_found() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.publish(
        1,
        &unique("no-such-exchange"),
        "k",
        false,
        b"x",
        BasicProperties::default(),
    );
    let c = r.expect_channel_close(1);
    assert_eq!(c.reply_code, 404, "{c:?}");
    assert_eq!((c.class_id, c.method_id), (60, 40));
    // The connection survives; the channel number can be reused.
    r.open_channel(1);
    r.close_channel(1);
}

#[test]
fn duplicate_consumer_tag_not_allowed() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    let q = unique("duptag");
    declare_queue(&mut r, 1, &q);
    assert!(matches!(
        consume(&mut r, 1, &q, "tag-1", false),
        Method::BasicConsumeOk(_)
    ));
    r.send(
        1,
        BasicConsume {
            ticket: 0,
            queue: s(&q),
            consumer_tag: s("tag-1"),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::new(),
        },
    );
    assert_eq!(r.connection_close_code(), 530);
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    delete_queue(&mut r, 1, &q);
}

#[test]
fn exclusive_consume_when_others_exist_access_refused() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.open_channel(2);
    let q = unique("exclcons");
    declare_queue(&mut r, 1, &q);
    assert!(matches!(
        consume(&mut r, 1, &q, "a", false),
        Method::BasicConsumeOk(_)
    ));
    r.send(
        2,
        BasicConsume {
            ticket: 0,
            queue: s(&q),
            consumer_tag: s("b"),
            no_local: false,
            no_ack: false,
            exclusive: true,
            nowait: false,
            arguments: FieldTable::new(),
        },
    );
    let c = r.expect_channel_close(2);
    assert_eq!(c.reply_code, 403, "{c:?}");
    // And the other way round: an exclusive consumer keeps others out.
    let q2 = unique("exclcons2");
    declare_queue(&mut r, 1, &q2);
    assert!(matches!(
        consume(&mut r, 1, &q2, "x", true),
        Method::BasicConsumeOk(_)
    ));
    r.open_channel(3);
    r.send(
        3,
        BasicConsume {
            ticket: 0,
            queue: s(&q2),
            consumer_tag: s("y"),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::new(),
        },
    );
    let c = r.expect_channel_close(3);
    assert_eq!(c.reply_code, 403, "{c:?}");
    delete_queue(&mut r, 1, &q);
    delete_queue(&mut r, 1, &q2);
}

#[test]
fn unknown_delivery_tag_precondition_failed() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.send(
        1,
        BasicAck {
            delivery_tag: 99,
            multiple: false,
        },
    );
    let c = r.expect_channel_close(1);
    assert_eq!(c.reply_code, 406, "{c:?}");
    r.open_channel(1);
    r.send(
        1,
        BasicReject {
            delivery_tag: 5,
            requeue: true,
        },
    );
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
    r.open_channel(1);
    r.send(
        1,
        BasicNack {
            delivery_tag: 5,
            multiple: true,
            requeue: true,
        },
    );
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
}

#[test]
fn double_ack_precondition_failed() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    let q = unique("doubleack");
    declare_queue(&mut r, 1, &q);
    r.publish(1, "", &q, false, b"m", BasicProperties::default());
    r.send(
        1,
        BasicGet {
            ticket: 0,
            queue: s(&q),
            no_ack: false,
        },
    );
    let (_, m, _) = r.recv_any();
    let Method::BasicGetOk(ok) = m else {
        panic!("{m:?}")
    };
    for _ in 0..2 {
        r.send(
            1,
            BasicAck {
                delivery_tag: ok.delivery_tag,
                multiple: false,
            },
        );
    }
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
    r.open_channel(1);
    delete_queue(&mut r, 1, &q);
}

#[test]
fn exchange_declare_errors() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    let x = unique("xerr");
    let decl = |name: &str, kind: &str, passive: bool| ExchangeDeclare {
        ticket: 0,
        exchange: s(name),
        kind: s(kind),
        passive,
        durable: false,
        auto_delete: false,
        internal: false,
        nowait: false,
        arguments: FieldTable::new(),
    };
    r.open_channel(1);
    // Passive on a missing exchange: 404.
    r.send(1, decl(&x, "direct", true));
    assert_eq!(r.expect_channel_close(1).reply_code, 404);
    // Re-declare with another type: 406.
    r.open_channel(1);
    assert!(matches!(
        r.rpc(1, decl(&x, "direct", false)),
        Method::ExchangeDeclareOk(_)
    ));
    r.send(1, decl(&x, "fanout", false));
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
    // Reserved prefix: 403.
    r.open_channel(1);
    r.send(1, decl(&format!("amq.{x}"), "direct", false));
    assert_eq!(r.expect_channel_close(1).reply_code, 403);
    // Unknown type: a connection error (503 command invalid).
    r.open_channel(1);
    assert!(matches!(
        r.rpc(
            1,
            ExchangeDelete {
                ticket: 0,
                exchange: s(&x),
                if_unused: false,
                nowait: false,
            }
        ),
        Method::ExchangeDeleteOk(_)
    ));
    r.send(1, decl(&x, "no-such-type", false));
    assert_eq!(r.connection_close_code(), 503);
}

#[test]
fn default_exchange_is_protected() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    for passive in [true, false] {
        r.send(
            1,
            ExchangeDeclare {
                ticket: 0,
                exchange: Bytes::new(),
                kind: s("direct"),
                passive,
                durable: true,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::new(),
            },
        );
        let c = r.expect_channel_close(1);
        assert_eq!(c.reply_code, 403, "passive={passive}: {c:?}");
        assert_eq!((c.class_id, c.method_id), (40, 10));
        r.open_channel(1);
    }
    // But it routes: a queue is reachable by its name.
    let q = unique("defx");
    declare_queue(&mut r, 1, &q);
    r.publish(1, "", &q, false, b"hi", BasicProperties::default());
    r.send(
        1,
        BasicGet {
            ticket: 0,
            queue: s(&q),
            no_ack: true,
        },
    );
    let (_, m, c) = r.recv_any();
    let Method::BasicGetOk(ok) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&ok.exchange[..], b"");
    assert_eq!(&ok.routing_key[..], q.as_bytes());
    assert_eq!(&c.expect("content").body[..], b"hi");
    delete_queue(&mut r, 1, &q);
}

#[test]
fn standard_exchanges_exist() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    for (name, kind) in [
        ("amq.direct", "direct"),
        ("amq.fanout", "fanout"),
        ("amq.topic", "topic"),
        ("amq.headers", "headers"),
        ("amq.match", "headers"),
    ] {
        let m = r.rpc(
            1,
            ExchangeDeclare {
                ticket: 0,
                exchange: s(name),
                kind: s(kind),
                passive: true,
                durable: true,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::new(),
            },
        );
        assert!(matches!(m, Method::ExchangeDeclareOk(_)), "{name}: {m:?}");
    }
}

#[test]
fn exchange_delete_if_unused_when_bound() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    let x = unique("xdel");
    let q = unique("xdelq");
    assert!(matches!(
        r.rpc(
            1,
            ExchangeDeclare {
                ticket: 0,
                exchange: s(&x),
                kind: s("fanout"),
                passive: false,
                durable: false,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::new(),
            }
        ),
        Method::ExchangeDeclareOk(_)
    ));
    declare_queue(&mut r, 1, &q);
    assert!(matches!(
        r.rpc(
            1,
            QueueBind {
                ticket: 0,
                queue: s(&q),
                exchange: s(&x),
                routing_key: Bytes::new(),
                nowait: false,
                arguments: FieldTable::new(),
            }
        ),
        Method::QueueBindOk(_)
    ));
    let del = |if_unused| ExchangeDelete {
        ticket: 0,
        exchange: s(&x),
        if_unused,
        nowait: false,
    };
    r.send(1, del(true));
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
    r.open_channel(1);
    assert!(matches!(r.rpc(1, del(false)), Method::ExchangeDeleteOk(_)));
    delete_queue(&mut r, 1, &q);
}

#[test]
fn queue_declare_errors() {
    let b = common::start();
    let mut a = Raw::open(b.addr);
    let mut other = Raw::open(b.addr);
    a.open_channel(1);
    other.open_channel(1);
    let q = unique("qerr");
    let decl = |name: &str, passive: bool, durable: bool, exclusive: bool| QueueDeclare {
        ticket: 0,
        queue: s(name),
        passive,
        durable,
        exclusive,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::new(),
    };
    a.send(1, decl(&q, true, false, false));
    assert_eq!(a.expect_channel_close(1).reply_code, 404);
    a.open_channel(1);
    assert!(matches!(
        a.rpc(1, decl(&q, false, false, false)),
        Method::QueueDeclareOk(_)
    ));
    a.send(1, decl(&q, false, true, false));
    assert_eq!(a.expect_channel_close(1).reply_code, 406);
    // Exclusive queue of another connection: 405, passive or not.
    a.open_channel(1);
    let ex = unique("qexcl");
    assert!(matches!(
        a.rpc(1, decl(&ex, false, false, true)),
        Method::QueueDeclareOk(_)
    ));
    other.send(1, decl(&ex, false, false, true));
    assert_eq!(other.expect_channel_close(1).reply_code, 405);
    other.open_channel(1);
    other.send(1, decl(&ex, true, false, false));
    assert_eq!(other.expect_channel_close(1).reply_code, 405);
    other.open_channel(1);
    other.publish(1, "", &ex, false, b"x", BasicProperties::default());
    other.send(
        1,
        BasicConsume {
            ticket: 0,
            queue: s(&ex),
            consumer_tag: Bytes::new(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::new(),
        },
    );
    assert_eq!(other.expect_channel_close(1).reply_code, 405);
    // Reserved prefix for queue names: 403.
    other.open_channel(1);
    other.send(1, decl(&format!("amq.{q}"), false, false, false));
    assert_eq!(other.expect_channel_close(1).reply_code, 403);
    delete_queue(&mut a, 1, &q);
}

#[test]
fn queue_delete_if_unused_and_if_empty() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.open_channel(2);
    let q = unique("qdelif");
    declare_queue(&mut r, 1, &q);
    let del = |if_unused, if_empty| QueueDelete {
        ticket: 0,
        queue: s(&q),
        if_unused,
        if_empty,
        nowait: false,
    };
    // Has a message: if-empty refuses.
    r.publish(1, "", &q, false, b"m", BasicProperties::default());
    r.send(1, del(false, true));
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
    // Has a consumer: if-unused refuses.
    assert!(matches!(
        consume(&mut r, 2, &q, "c", false),
        Method::BasicConsumeOk(_)
    ));
    r.open_channel(1);
    r.send(1, del(true, false));
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
    r.close_channel(2);
    r.open_channel(1);
    match r.rpc(1, del(true, false)) {
        Method::QueueDeleteOk(ok) => assert_eq!(ok.message_count, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tx_errors() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.send(1, TxCommit {});
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
    r.open_channel(1);
    r.send(1, TxRollback {});
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
    r.open_channel(1);
    assert!(matches!(
        r.rpc(1, ConfirmSelect { nowait: false }),
        Method::ConfirmSelectOk(_)
    ));
    r.send(1, TxSelect {});
    assert_eq!(r.expect_channel_close(1).reply_code, 406);
}

#[test]
fn unroutable_mandatory_return_comes_before_confirm() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    assert!(matches!(
        r.rpc(1, ConfirmSelect { nowait: false }),
        Method::ConfirmSelectOk(_)
    ));
    let key = unique("nobody-bound");
    r.publish(
        1,
        "amq.direct",
        &key,
        true,
        b"lost",
        BasicProperties::default(),
    );
    let (ch, m, content) = r.recv_any();
    assert_eq!(ch, 1);
    let Method::BasicReturn(ret) = m else {
        panic!("expected basic.return first, got {m:?}")
    };
    assert_eq!(ret.reply_code, 312);
    assert_eq!(&ret.reply_text[..], b"NO_ROUTE");
    assert_eq!(&ret.exchange[..], b"amq.direct");
    assert_eq!(&ret.routing_key[..], key.as_bytes());
    assert_eq!(&content.expect("content").body[..], b"lost");
    match r.recv_method() {
        (1, Method::BasicAck(a)) => assert_eq!(a.delivery_tag, 1),
        other => panic!("expected the confirm, got {other:?}"),
    }
    // Not mandatory: no return, just the confirm.
    r.publish(
        1,
        "amq.direct",
        &key,
        false,
        b"lost",
        BasicProperties::default(),
    );
    match r.recv_method() {
        (1, Method::BasicAck(a)) => assert_eq!(a.delivery_tag, 2),
        other => panic!("expected the confirm, got {other:?}"),
    }
}

#[test]
fn publisher_confirms_ten_thousand() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    let q = unique("confirms");
    declare_queue(&mut r, 1, &q);
    assert!(matches!(
        r.rpc(1, ConfirmSelect { nowait: false }),
        Method::ConfirmSelectOk(_)
    ));
    const N: u64 = 10_000;
    let mut confirmed = 0u64;
    let mut acks = 0u64;
    let mut multiples = 0u64;
    let mut sent = 0u64;
    while confirmed < N {
        // Publish in batches of 500, reading confirms in between.
        while sent < N && sent < confirmed + 500 {
            sent += 1;
            r.publish(
                1,
                "",
                &q,
                false,
                format!("{sent}").as_bytes(),
                BasicProperties::default(),
            );
        }
        match r.recv_method() {
            (1, Method::BasicAck(a)) => {
                acks += 1;
                if a.multiple {
                    multiples += 1;
                    assert!(a.delivery_tag > confirmed, "{a:?} after {confirmed}");
                } else {
                    assert_eq!(a.delivery_tag, confirmed + 1, "single ack out of order");
                }
                assert!(a.delivery_tag <= sent);
                confirmed = a.delivery_tag;
            }
            other => panic!("expected basic.ack, got {other:?}"),
        }
    }
    assert_eq!(confirmed, N);
    assert!((1..=N).contains(&acks));
    eprintln!("{N} publishes confirmed by {acks} acks ({multiples} multiple)");
    match r.rpc(
        1,
        QueueDelete {
            ticket: 0,
            queue: s(&q),
            if_unused: false,
            if_empty: false,
            nowait: false,
        },
    ) {
        Method::QueueDeleteOk(ok) => assert_eq!(ok.message_count as u64, N),
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_cancels_consumer_when_queue_deleted() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    r.open_channel(2);
    let q = unique("cancelnotify");
    declare_queue(&mut r, 1, &q);
    assert!(matches!(
        consume(&mut r, 1, &q, "ctag", false),
        Method::BasicConsumeOk(_)
    ));
    r.send(
        2,
        QueueDelete {
            ticket: 0,
            queue: s(&q),
            if_unused: false,
            if_empty: false,
            nowait: false,
        },
    );
    let mut got_cancel = false;
    let mut got_delete_ok = false;
    while !(got_cancel && got_delete_ok) {
        match r.recv_method() {
            (1, Method::BasicCancel(c)) => {
                assert_eq!(&c.consumer_tag[..], b"ctag");
                got_cancel = true;
            }
            (2, Method::QueueDeleteOk(_)) => got_delete_ok = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The channel stays usable.
    r.close_channel(1);
}

#[test]
fn many_channels_with_chosen_numbers() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    let nums: Vec<u16> = (1..=100).map(|i| i * 20).collect();
    for &n in &nums {
        r.open_channel(n);
    }
    for &n in &nums {
        match r.rpc(
            n,
            BasicQos {
                prefetch_size: 0,
                prefetch_count: n,
                global: false,
            },
        ) {
            Method::BasicQosOk(_) => {}
            other => panic!("{other:?}"),
        }
    }
    for &n in &nums {
        r.close_channel(n);
    }
    // Reopen after close works.
    r.open_channel(20);
}

/// The rest of a large frame is read straight into the connection's input
/// buffer: a body frame cut off midway (the publisher goes away) queues
/// nothing and leaves the broker serving others.
#[test]
fn large_body_frame_cut_off_midway_is_not_queued() {
    let b = common::start();
    let q = unique("cut");
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    declare_queue(&mut r, 1, &q);
    r.send(
        1,
        BasicPublish {
            ticket: 0,
            exchange: Bytes::new(),
            routing_key: s(&q),
            mandatory: false,
            immediate: false,
        },
    );
    let big = vec![9u8; 100_000];
    r.send_bytes(&Raw::header_frame(1, big.len() as u64));
    let frame = Raw::body_frame(1, &big);
    r.send_bytes(&frame[..frame.len() / 2]);
    drop(r);
    let mut r2 = Raw::open(b.addr);
    r2.open_channel(1);
    match r2.rpc(
        1,
        QueueDeclare {
            queue: s(&q),
            passive: true,
            ..Default::default()
        },
    ) {
        Method::QueueDeclareOk(ok) => assert_eq!(ok.message_count, 0),
        other => panic!("queue.declare: {other:?}"),
    }
    delete_queue(&mut r2, 1, &q);
}

/// A large body frame that arrives in many small pieces (each read goes
/// straight into the input buffer) is delivered intact.
#[test]
fn large_body_frame_in_small_pieces_arrives_intact() {
    let b = common::start();
    let q = unique("trickle");
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    declare_queue(&mut r, 1, &q);
    r.send(
        1,
        BasicPublish {
            ticket: 0,
            exchange: Bytes::new(),
            routing_key: s(&q),
            mandatory: false,
            immediate: false,
        },
    );
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    r.send_bytes(&Raw::header_frame(1, big.len() as u64));
    let frame = Raw::body_frame(1, &big);
    for (i, piece) in frame.chunks(4096).enumerate() {
        r.send_bytes(piece);
        if i < 8 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    r.send(
        1,
        BasicGet {
            ticket: 0,
            queue: s(&q),
            no_ack: true,
        },
    );
    match r.recv_any() {
        (1, Method::BasicGetOk(_), Some(c)) => assert!(c.body[..] == big[..], "body differs"),
        other => panic!("basic.get: {:?}", other.1),
    }
    delete_queue(&mut r, 1, &q);
}

/// A MiB of garbage after a frame error gets exactly one connection.close
/// (501) — the rest is not parsed into more errors — and the broker serves
/// others meanwhile.
#[test]
fn garbage_after_a_frame_error_gets_one_close() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    // basic.qos with a bad end octet, then frame headers with bad end octets.
    let mut out = bytes::BytesMut::new();
    frame::write_method(
        &mut out,
        1,
        &BasicQos {
            prefetch_size: 0,
            prefetch_count: 1,
            global: false,
        }
        .into(),
    );
    let last = out.len() - 1;
    out[last] = 0x00;
    let pattern = [1u8, 0, 1, 0, 0, 0, 1, b'x', 0];
    out.extend(pattern.iter().copied().cycle().take(1 << 20));
    r.send_bytes(&out);
    let mut codes = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert!(std::time::Instant::now() < deadline, "socket not closed");
        match r.poll_frame(std::time::Duration::from_millis(500)) {
            Ok(Some(Frame::Method(0, Method::ConnectionClose(c)))) => {
                codes.push(c.reply_code);
                r.send(0, ConnectionCloseOk {});
            }
            Ok(Some(Frame::Heartbeat(_))) => {}
            Ok(Some(f)) => panic!("unexpected {f:?}"),
            Ok(None) if codes.is_empty() => {}
            // Closed, or quiet after the close.
            Ok(None) | Err(()) => break,
        }
    }
    assert_eq!(codes, [ReplyCode::FRAME_ERROR]);
    let mut other = Raw::open(b.addr);
    other.open_channel(1);
    let q = unique("after-garbage");
    declare_queue(&mut other, 1, &q);
    delete_queue(&mut other, 1, &q);
}

// ------------------------------------------------------------ invalid UTF-8

const NOT_UTF8: &[u8] = b"bad\xff\xfename";

fn b(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

/// Names and other shortstr arguments that are not UTF-8 are refused when
/// the method is decoded: 501 FRAME_ERROR "Malformed UTF-8 in shortstr",
/// class and method 0 (RabbitMQ 3.10's exact answer), before anything is
/// looked up or created.
#[test]
fn malformed_utf8_in_shortstr_arguments_is_501() {
    let b_ = common::start();
    let q = unique("utf8");
    let cases: Vec<(&str, Method)> = vec![
        (
            "queue.declare",
            QueueDeclare {
                queue: b(NOT_UTF8),
                ..Default::default()
            }
            .into(),
        ),
        (
            "queue.declare passive",
            QueueDeclare {
                queue: b(NOT_UTF8),
                passive: true,
                ..Default::default()
            }
            .into(),
        ),
        (
            "exchange.declare",
            ExchangeDeclare {
                exchange: b(NOT_UTF8),
                kind: s("direct"),
                ..Default::default()
            }
            .into(),
        ),
        (
            "exchange.declare type",
            ExchangeDeclare {
                exchange: s(&q),
                kind: b(b"dir\xffect"),
                ..Default::default()
            }
            .into(),
        ),
        (
            "queue.bind routing key",
            QueueBind {
                queue: s(&q),
                exchange: s("amq.direct"),
                routing_key: b(NOT_UTF8),
                ..Default::default()
            }
            .into(),
        ),
        (
            "queue.bind exchange",
            QueueBind {
                queue: s(&q),
                exchange: b(NOT_UTF8),
                routing_key: s("k"),
                ..Default::default()
            }
            .into(),
        ),
        (
            "queue.unbind routing key",
            QueueUnbind {
                queue: s(&q),
                exchange: s("amq.direct"),
                routing_key: b(NOT_UTF8),
                ..Default::default()
            }
            .into(),
        ),
        (
            "exchange.bind destination",
            ExchangeBind {
                destination: b(NOT_UTF8),
                source: s("amq.direct"),
                routing_key: s("k"),
                ..Default::default()
            }
            .into(),
        ),
        (
            "basic.consume queue",
            BasicConsume {
                queue: b(NOT_UTF8),
                ..Default::default()
            }
            .into(),
        ),
        (
            "basic.consume tag",
            BasicConsume {
                queue: s(&q),
                consumer_tag: b(NOT_UTF8),
                ..Default::default()
            }
            .into(),
        ),
        (
            "basic.get",
            BasicGet {
                queue: b(NOT_UTF8),
                ..Default::default()
            }
            .into(),
        ),
        (
            "queue.purge",
            QueuePurge {
                queue: b(NOT_UTF8),
                ..Default::default()
            }
            .into(),
        ),
        (
            "queue.delete",
            QueueDelete {
                queue: b(NOT_UTF8),
                ..Default::default()
            }
            .into(),
        ),
        (
            "exchange.delete",
            ExchangeDelete {
                exchange: b(NOT_UTF8),
                ..Default::default()
            }
            .into(),
        ),
        (
            "basic.cancel",
            BasicCancel {
                consumer_tag: b(NOT_UTF8),
                nowait: false,
            }
            .into(),
        ),
        (
            "channel.close reply text",
            ChannelClose {
                reply_code: 200,
                reply_text: b(NOT_UTF8),
                class_id: 0,
                method_id: 0,
            }
            .into(),
        ),
    ];
    let mut setup = Raw::open(b_.addr);
    setup.open_channel(1);
    declare_queue(&mut setup, 1, &q);
    for (what, m) in cases {
        let mut r = Raw::open(b_.addr);
        r.open_channel(1);
        r.send(1, m);
        let close = r.expect_connection_close();
        assert_eq!(
            (
                close.reply_code,
                &close.reply_text[..],
                close.class_id,
                close.method_id
            ),
            (501, &b"FRAME_ERROR - Malformed UTF-8 in shortstr"[..], 0, 0),
            "{what}"
        );
    }
    // Nothing was created.
    match setup.rpc(
        1,
        ExchangeDeclare {
            exchange: s(&q),
            kind: s("direct"),
            passive: true,
            ..Default::default()
        },
    ) {
        Method::ChannelClose(c) => {
            assert_eq!(c.reply_code, 404);
            setup.send(1, ChannelCloseOk {});
        }
        other => panic!("exchange.declare passive: {other:?}"),
    }
    setup.open_channel(1);
    delete_queue(&mut setup, 1, &q);
}

/// basic.publish is not checked (RabbitMQ passes its exchange and routing
/// key through): an exchange name that is not UTF-8 names no exchange
/// (404), a routing key that is not UTF-8 routes nowhere (no queue or
/// binding can have such a name) and comes back with basic.return.
#[test]
fn malformed_utf8_in_basic_publish_is_not_a_frame_error() {
    let b_ = common::start();
    let mut r = Raw::open(b_.addr);
    r.open_channel(1);
    let publish = |r: &mut Raw, exchange: &[u8], key: &[u8]| {
        let mut out = bytes::BytesMut::new();
        frame::write_method(
            &mut out,
            1,
            &BasicPublish {
                exchange: b(exchange),
                routing_key: b(key),
                mandatory: true,
                ..Default::default()
            }
            .into(),
        );
        out.extend_from_slice(&Raw::header_frame(1, 1));
        out.extend_from_slice(&Raw::body_frame(1, b"m"));
        r.send_bytes(&out);
    };
    publish(&mut r, b"amq.topic", NOT_UTF8);
    match r.next_async() {
        (1, Method::BasicReturn(ret), Some(_)) => {
            assert_eq!(ret.reply_code, 312);
            assert_eq!(&ret.routing_key[..], NOT_UTF8);
        }
        other => panic!("expected basic.return, got {other:?}"),
    }
    publish(&mut r, NOT_UTF8, b"k");
    assert_eq!(r.expect_channel_close(1).reply_code, 404);
}

/// Does `bytes` hold a connection.close-ok frame?
fn has_close_ok(bytes: &[u8]) -> bool {
    let frame = [1u8, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, 0xCE];
    bytes.windows(frame.len()).any(|w| w == frame)
}

/// A client that closes while its publishes are still being written (Node's
/// amqplib sends connection.close ahead of a channel's pending frames) gets
/// close-ok and then a clean end of stream: the server half-closes and
/// reads what still arrives until the client closes. It used to close both
/// ways at once, and the frames still in flight turned that into a reset
/// that could destroy the close-ok.
#[test]
fn close_with_publishes_in_flight_ends_with_close_ok_and_a_clean_eof() {
    let b = common::start();
    let q = unique("linger");
    for round in 0..5 {
        let mut r = Raw::open(b.addr);
        r.open_channel(1);
        declare_queue(&mut r, 1, &q);
        r.send(
            0,
            ConnectionClose {
                reply_code: 200,
                reply_text: s("bye"),
                class_id: 0,
                method_id: 0,
            },
        );
        // Odd rounds: the server has answered (and used to have closed)
        // by the time the publishes arrive.
        if round % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let body = vec![b'x'; 1024];
        for _ in 0..200 {
            let p = Raw::publish_bytes(1, "", &q, false, &body, BasicProperties::default());
            r.write_bytes(&p)
                .unwrap_or_else(|e| panic!("round {round}: writing after close: {e}"));
        }
        let got = r
            .read_to_eof()
            .unwrap_or_else(|e| panic!("round {round}: not a clean close: {e}"));
        assert!(has_close_ok(&got), "round {round}: no close-ok");
    }
    // What followed the close was dropped (as RabbitMQ drops it).
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    match r.rpc(
        1,
        QueueDeclare {
            queue: s(&q),
            passive: true,
            ..Default::default()
        },
    ) {
        Method::QueueDeclareOk(ok) => assert_eq!(ok.message_count, 0),
        m => panic!("{m:?}"),
    }
}

/// After a server-sent connection.close (an error), frames the client
/// still sends are dropped until its close-ok; then the server closes
/// cleanly, without a reset.
#[test]
fn error_close_drops_what_follows_until_close_ok_then_ends_cleanly() {
    let b = common::start();
    let mut r = Raw::open(b.addr);
    r.open_channel(1);
    // A body frame with no publish: 505, a connection error.
    r.send_bytes(&Raw::body_frame(1, b"abc"));
    let body = vec![b'x'; 1024];
    for _ in 0..1000 {
        r.publish(1, "", "nowhere", false, &body, BasicProperties::default());
    }
    assert_eq!(r.expect_connection_close().reply_code, 505);
    r.send(0, ConnectionCloseOk {});
    r.read_to_eof().expect("a clean close after close-ok");
}
