//! The delayed message plugin's exchange type, `x-delayed-message`, on the
//! in-memory core with simulated time, and with the real store on a
//! temporary directory for restarts: a message with a positive `x-delay`
//! arrives once its delay has passed, in delay order, routed as the
//! `x-delayed-type` routes with the bindings of that moment; the plugin's
//! codes for bad input; `mandatory` returned at once (as the plugin does);
//! confirms; held messages survive a crash, overdue ones are routed at
//! once, and a damaged bucket file loses only what is damaged.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use warren::codec::frame::Frame;
use warren::codec::*;
use warren::testing::Pair;
use warren::Config;

fn s(v: &str) -> Bytes {
    Bytes::from(v.to_string())
}

fn args(kind: &str) -> FieldTable {
    let mut a = FieldTable::new();
    a.insert("x-delayed-type", FieldValue::LongStr(s(kind)));
    a
}

fn declare_exchange(p: &mut Pair, name: &str, arguments: FieldTable, durable: bool) {
    p.send(
        1,
        ExchangeDeclare {
            exchange: s(name),
            kind: s("x-delayed-message"),
            durable,
            arguments,
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

fn queue(p: &mut Pair, q: &str, durable: bool) {
    p.send(
        1,
        QueueDeclare {
            queue: s(q),
            durable,
            ..Default::default()
        },
    );
    let _ = p.recv_methods();
}

fn bind(p: &mut Pair, q: &str, x: &str, key: &str, arguments: FieldTable) {
    p.send(
        1,
        QueueBind {
            queue: s(q),
            exchange: s(x),
            routing_key: s(key),
            arguments,
            ..Default::default()
        },
    );
    let got = p.recv_methods();
    assert!(
        got.iter().any(|(_, m)| matches!(m, Method::QueueBindOk(_))),
        "{got:?}"
    );
}

fn delayed(delay: Option<FieldValue>) -> BasicProperties {
    let mut h = FieldTable::new();
    h.insert("other", FieldValue::LongStr(s("kept")));
    if let Some(d) = delay {
        h.insert("x-delay", d);
    }
    BasicProperties {
        headers: Some(h),
        ..Default::default()
    }
}

fn ms(n: i64) -> Option<FieldValue> {
    Some(FieldValue::I64(n))
}

/// basic.get every message of `q`: (body, x-delay header).
fn drain(p: &mut Pair, q: &str) -> Vec<(String, Option<FieldValue>)> {
    let mut out = Vec::new();
    loop {
        p.send(
            1,
            BasicGet {
                queue: s(q),
                no_ack: true,
                ..Default::default()
            },
        );
        let frames = p.recv();
        let mut header = None;
        let mut body = Vec::new();
        let mut empty = false;
        for f in frames {
            match f {
                Frame::Method(_, Method::BasicGetEmpty(_)) => empty = true,
                Frame::Header(_, h) => header = Some(h),
                Frame::Body(_, b) => body.extend_from_slice(&b),
                _ => {}
            }
        }
        if empty {
            return out;
        }
        let h = header.expect("content header");
        let delay = h
            .properties
            .headers
            .as_ref()
            .and_then(|t| t.get("x-delay").cloned());
        out.push((String::from_utf8(body).unwrap(), delay));
    }
}

fn bodies(got: &[(String, Option<FieldValue>)]) -> Vec<&str> {
    got.iter().map(|(b, _)| b.as_str()).collect()
}

fn depth(p: &mut Pair, q: &str) -> u32 {
    p.send(
        1,
        QueueDeclare {
            queue: s(q),
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

fn setup(kind: &str) -> Pair {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    declare_exchange(&mut p, "dx", args(kind), false);
    queue(&mut p, "q", false);
    p
}

#[test]
fn messages_arrive_after_their_delay_in_delay_order() {
    let mut p = setup("direct");
    bind(&mut p, "q", "dx", "k", FieldTable::new());
    p.publish(1, "dx", "k", delayed(ms(3000)), b"3000");
    p.publish(1, "dx", "k", delayed(ms(1000)), b"1000");
    p.publish(1, "dx", "k", delayed(ms(2000)), b"2000");
    p.publish(1, "dx", "k", delayed(ms(1000)), b"1000b");
    p.publish(1, "dx", "k", delayed(None), b"none");
    p.publish(1, "dx", "k", delayed(ms(-50)), b"negative");
    p.publish(1, "dx", "k", delayed(ms(0)), b"zero");
    p.publish(1, "dx", "k", BasicProperties::default(), b"no headers");
    p.publish(
        1,
        "dx",
        "k",
        delayed(Some(FieldValue::LongStr(s("1500")))),
        b"string 1500",
    );
    p.publish(1, "dx", "k", delayed(ms(4_294_967_296)), b"too long");
    let now = drain(&mut p, "q");
    assert_eq!(
        bodies(&now),
        ["none", "negative", "zero", "no headers", "too long"]
    );
    // Routed now, the header is left as it was.
    assert_eq!(now[1].1, ms(-50));
    p.advance(Duration::from_millis(999));
    assert_eq!(depth(&mut p, "q"), 0);
    p.advance(Duration::from_millis(1));
    let got = drain(&mut p, "q");
    assert_eq!(bodies(&got), ["1000", "1000b"]);
    // The plugin negates x-delay on the way out.
    assert_eq!(got[0].1, Some(FieldValue::I32(-1000)));
    p.advance(Duration::from_millis(500));
    assert_eq!(bodies(&drain(&mut p, "q")), ["string 1500"]);
    p.advance(Duration::from_millis(1499));
    assert_eq!(bodies(&drain(&mut p, "q")), ["2000"]);
    p.advance(Duration::from_millis(1));
    assert_eq!(bodies(&drain(&mut p, "q")), ["3000"]);
    // The core asks to be woken for the next one.
    p.publish(1, "dx", "k", delayed(ms(250)), b"later");
    let wake = p.core.engine.next_deadline(p.now);
    assert!(wake <= p.now + Duration::from_millis(250), "{wake:?}");
}

#[test]
fn routes_as_its_delayed_type_with_the_bindings_of_the_due_time() {
    // topic
    let mut p = setup("topic");
    bind(&mut p, "q", "dx", "a.*", FieldTable::new());
    p.publish(1, "dx", "a.b", delayed(ms(100)), b"match");
    p.publish(1, "dx", "b.b", delayed(ms(100)), b"no match");
    p.advance(Duration::from_millis(100));
    assert_eq!(bodies(&drain(&mut p, "q")), ["match"]);
    // fanout
    let mut p = setup("fanout");
    bind(&mut p, "q", "dx", "ignored", FieldTable::new());
    p.publish(1, "dx", "any", delayed(ms(100)), b"fan");
    p.advance(Duration::from_millis(100));
    assert_eq!(bodies(&drain(&mut p, "q")), ["fan"]);
    // headers (x-delay itself is a header the binding does not ask for)
    let mut p = setup("headers");
    let mut b = FieldTable::new();
    b.insert("x-match", FieldValue::LongStr(s("all")));
    b.insert("other", FieldValue::LongStr(s("kept")));
    bind(&mut p, "q", "dx", "", b);
    p.publish(1, "dx", "", delayed(ms(100)), b"headers");
    p.publish(1, "dx", "", BasicProperties::default(), b"not matched");
    p.advance(Duration::from_millis(100));
    assert_eq!(bodies(&drain(&mut p, "q")), ["headers"]);
    // direct, the queue bound only after the publish: routed with the
    // bindings there are when it is due.
    let mut p = setup("direct");
    p.publish(1, "dx", "k", delayed(ms(100)), b"bound later");
    bind(&mut p, "q", "dx", "k", FieldTable::new());
    p.advance(Duration::from_millis(100));
    assert_eq!(bodies(&drain(&mut p, "q")), ["bound later"]);
}

#[test]
fn unroutable_when_due_goes_to_the_alternate_exchange() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    p.send(
        1,
        ExchangeDeclare {
            exchange: s("ae"),
            kind: s("fanout"),
            ..Default::default()
        },
    );
    queue(&mut p, "lost", false);
    bind(&mut p, "lost", "ae", "", FieldTable::new());
    let mut a = args("direct");
    a.insert("alternate-exchange", FieldValue::LongStr(s("ae")));
    declare_exchange(&mut p, "dx", a, false);
    p.publish(1, "dx", "nobody", delayed(ms(100)), b"x");
    assert_eq!(depth(&mut p, "lost"), 0, "not before it is due");
    p.advance(Duration::from_millis(100));
    assert_eq!(bodies(&drain(&mut p, "lost")), ["x"]);
}

fn close_of(p: &mut Pair) -> (u16, u16, String) {
    p.recv_methods()
        .into_iter()
        .find_map(|(ch, m)| match m {
            Method::ChannelClose(c) => Some((
                ch,
                c.reply_code,
                String::from_utf8_lossy(&c.reply_text).into_owned(),
            )),
            Method::ConnectionClose(c) => Some((
                ch,
                c.reply_code,
                String::from_utf8_lossy(&c.reply_text).into_owned(),
            )),
            _ => None,
        })
        .expect("a close")
}

fn declare_raw(p: &mut Pair, arguments: FieldTable) {
    p.send(
        1,
        ExchangeDeclare {
            exchange: s("bad"),
            kind: s("x-delayed-message"),
            arguments,
            ..Default::default()
        },
    );
}

#[test]
fn bad_declare_arguments_get_the_plugins_codes_and_texts() {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    declare_raw(&mut p, FieldTable::new());
    assert_eq!(
        close_of(&mut p),
        (
            1,
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"
                .into()
        )
    );
    p.send(1, ChannelCloseOk {});
    p.send(1, ChannelOpen::default());
    let _ = p.recv_methods();
    declare_raw(&mut p, args("x-delayed-message"));
    assert_eq!(
        close_of(&mut p),
        (
            1,
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"
                .into()
        )
    );
    p.send(1, ChannelCloseOk {});
    p.send(1, ChannelOpen::default());
    let _ = p.recv_methods();
    // An unknown type is RabbitMQ's check_type: a connection error.
    declare_raw(&mut p, args("nonesuch"));
    assert_eq!(
        close_of(&mut p),
        (
            0,
            503,
            "COMMAND_INVALID - unknown exchange type 'nonesuch'".into()
        )
    );
}

#[test]
fn a_non_numeric_delay_closes_the_connection_with_541() {
    let mut p = setup("direct");
    p.publish(
        1,
        "dx",
        "k",
        delayed(Some(FieldValue::LongStr(s("soon")))),
        b"x",
    );
    assert_eq!(close_of(&mut p), (0, 541, "INTERNAL_ERROR".into()));
}

#[test]
fn mandatory_is_returned_at_once_and_still_routed_when_due() {
    let mut p = setup("direct");
    bind(&mut p, "q", "dx", "k", FieldTable::new());
    p.send(1, ConfirmSelect { nowait: false });
    let _ = p.recv_methods();
    let mut out = bytes::BytesMut::new();
    warren::codec::frame::write_method(
        &mut out,
        1,
        &BasicPublish {
            exchange: s("dx"),
            routing_key: s("k"),
            mandatory: true,
            ..Default::default()
        }
        .into(),
    );
    Frame::Header(
        1,
        Box::new(ContentHeader {
            class_id: 60,
            body_size: 1,
            properties: delayed(ms(100)),
        }),
    )
    .encode(&mut out);
    Frame::Body(1, Bytes::from_static(b"m")).encode(&mut out);
    p.send_raw(&out);
    let got = p.recv_methods();
    let ret = got
        .iter()
        .find_map(|(_, m)| match m {
            Method::BasicReturn(r) => Some(r.clone()),
            _ => None,
        })
        .expect("returned at once");
    assert_eq!(ret.reply_code, 312);
    assert_eq!(&ret.reply_text[..], b"NO_ROUTE");
    assert!(
        got.iter()
            .any(|(_, m)| matches!(m, Method::BasicAck(a) if a.delivery_tag == 1)),
        "{got:?}"
    );
    p.advance(Duration::from_millis(100));
    assert_eq!(bodies(&drain(&mut p, "q")), ["m"]);
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("warren-delayed-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn open(dir: &Path) -> Pair {
    let mut p = Pair::open(Config {
        data_dir: Some(dir.to_path_buf()),
        min_free_disk: 0,
        ..Config::default()
    })
    .unwrap();
    p.handshake(0);
    p
}

fn persistent(delay: i64) -> BasicProperties {
    BasicProperties {
        delivery_mode: Some(2),
        ..delayed(ms(delay))
    }
}

fn bucket_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("delayed"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn held_messages_survive_a_crash_and_arrive_after_their_delay() {
    let dir = temp_dir("crash");
    let mut p = open(&dir);
    declare_exchange(&mut p, "dx", args("direct"), true);
    queue(&mut p, "q", true);
    bind(&mut p, "q", "dx", "k", FieldTable::new());
    p.send(1, ConfirmSelect { nowait: false });
    let _ = p.recv_methods();
    p.publish(1, "dx", "k", persistent(2000), b"2000");
    p.publish(1, "dx", "k", persistent(1000), b"1000");
    p.publish(1, "dx", "k", persistent(1500), b"1500");
    let acks: Vec<u64> = p
        .recv_methods()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Method::BasicAck(a) => Some(a.delivery_tag),
            _ => None,
        })
        .collect();
    assert_eq!(acks.last(), Some(&3), "confirmed once on disk: {acks:?}");
    assert!(bucket_files(&dir) >= 1);
    // A crash (no clean close). The restarted broker's clock is the real
    // one again: the delays run from the publish.
    drop(p);
    let mut p = open(&dir);
    assert_eq!(depth(&mut p, "q"), 0);
    assert_eq!(p.core.engine.delayed_pending(), 3);
    p.advance(Duration::from_millis(1600));
    assert_eq!(bodies(&drain(&mut p, "q")), ["1000", "1500"]);
    p.advance(Duration::from_millis(500));
    let got = drain(&mut p, "q");
    assert_eq!(bodies(&got), ["2000"]);
    assert_eq!(got[0].1, Some(FieldValue::I32(-2000)));
    // Routed and committed: the files go.
    p.advance(Duration::from_millis(1500));
    assert_eq!(depth(&mut p, "q"), 0);
    assert_eq!(bucket_files(&dir), 0);
    drop(p);
    // Nothing comes twice after another restart.
    let mut p = open(&dir);
    assert_eq!(p.core.engine.delayed_pending(), 0);
    p.advance(Duration::from_millis(5000));
    assert_eq!(depth(&mut p, "q"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_partly_routed_bucket_does_not_route_twice_after_a_crash() {
    let dir = temp_dir("partial");
    let mut p = open(&dir);
    declare_exchange(&mut p, "dx", args("direct"), true);
    queue(&mut p, "q", true);
    bind(&mut p, "q", "dx", "k", FieldTable::new());
    // All in one second of due time, whatever the clock's phase.
    p.publish(1, "dx", "k", persistent(5000), b"a");
    p.publish(1, "dx", "k", persistent(5001), b"b");
    p.advance(Duration::from_millis(5000));
    // The end of the loop turn commits the routed copy, then the marker.
    assert_eq!(depth(&mut p, "q"), 1);
    drop(p);
    let mut p = open(&dir);
    assert_eq!(p.core.engine.delayed_pending(), 1);
    p.advance(Duration::from_millis(5010));
    assert_eq!(bodies(&drain(&mut p, "q")), ["a", "b"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn overdue_messages_are_routed_at_once_in_due_order_after_a_restart() {
    let dir = temp_dir("overdue");
    let mut p = open(&dir);
    declare_exchange(&mut p, "dx", args("fanout"), true);
    queue(&mut p, "q", true);
    bind(&mut p, "q", "dx", "", FieldTable::new());
    p.publish(1, "dx", "", persistent(300), b"300");
    p.publish(1, "dx", "", persistent(100), b"100");
    p.publish(1, "dx", "", persistent(200), b"200");
    drop(p);
    // Down for longer than every delay (the restarted broker's clock is
    // the real one).
    std::thread::sleep(Duration::from_millis(400));
    let mut p = open(&dir);
    p.advance(Duration::ZERO);
    assert_eq!(bodies(&drain(&mut p, "q")), ["100", "200", "300"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_bucket_file_loses_only_the_damaged_records() {
    let dir = temp_dir("damaged");
    let mut p = open(&dir);
    declare_exchange(&mut p, "dx", args("fanout"), true);
    queue(&mut p, "q", true);
    bind(&mut p, "q", "dx", "", FieldTable::new());
    // Same second of due time: one file, equal record sizes.
    p.publish(1, "dx", "", persistent(60_000), b"a");
    p.publish(1, "dx", "", persistent(60_000), b"b");
    p.publish(1, "dx", "", persistent(60_000), b"c");
    p.publish(1, "dx", "", persistent(60_000), b"d");
    p.advance(Duration::from_millis(1));
    drop(p);
    let files: Vec<PathBuf> = std::fs::read_dir(dir.join("delayed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let mut raw = std::fs::read(&files[0]).unwrap();
    let one = raw.len() / 4;
    raw[one + one / 2] ^= 0x10; // inside b
    raw.truncate(raw.len() - 5); // d torn
    std::fs::write(&files[0], &raw).unwrap();
    let mut p = open(&dir);
    assert_eq!(p.core.engine.delayed_pending(), 2);
    p.advance(Duration::from_millis(61_000));
    assert_eq!(bodies(&drain(&mut p, "q")), ["a", "c"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn held_messages_count_for_the_memory_alarm_without_a_data_dir() {
    let mut p = Pair::new(Config {
        max_memory: 1 << 20,
        ..Config::default()
    });
    p.handshake(0);
    declare_exchange(&mut p, "dx", args("fanout"), false);
    let before = p.core.engine.memory_used();
    let body = vec![b'x'; 200];
    for _ in 0..8_000 {
        p.publish(1, "dx", "", delayed(ms(60_000)), &body);
    }
    assert_eq!(p.core.engine.delayed_pending(), 8_000);
    assert!(
        p.core.engine.memory_used() >= before + 8_000 * 200,
        "{} {}",
        before,
        p.core.engine.memory_used()
    );
    assert!(p.core.engine.alarms.blocked, "the memory alarm is on");
}
