//! End-to-end protocol behaviour through a real AMQP client (lapin): the
//! handshake, channels, exchanges and routing, queues, consumers, acks,
//! prefetch, requeueing, publisher confirms and transactions. Every test
//! passes against RabbitMQ (`WARREN_TEST_ADDR=127.0.0.1:5672`) and against
//! the embedded broker; names are unique so a shared broker works too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use amqp_raw::unique;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for something that should arrive.
const ARRIVE: Duration = Duration::from_secs(5);
/// How long to wait to be sure that something does not arrive.
const QUIET: Duration = Duration::from_millis(200);

/// Run a test body on a tokio runtime with a timeout, so a hang fails.
fn run<F: Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, f)
            .await
            .expect("test timed out")
    });
}

async fn connect(b: &common::TestBroker) -> Connection {
    Connection::connect(&b.uri(), ConnectionProperties::default())
        .await
        .expect("connect")
}

async fn channel(c: &Connection) -> Channel {
    c.create_channel().await.expect("channel")
}

/// The AMQP reply code carried by a lapin error.
fn code(e: &lapin::Error) -> u16 {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(a) => a.get_id(),
        other => panic!("expected an AMQP error, got {other:?}"),
    }
}

fn sh(s: &str) -> ShortString {
    s.into()
}

fn no_args() -> FieldTable {
    FieldTable::default()
}

async fn declare(ch: &Channel, name: &str) -> lapin::Queue {
    ch.queue_declare(sh(name), QueueDeclareOptions::default(), no_args())
        .await
        .expect("queue.declare")
}

async fn passive(ch: &Channel, name: &str) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(
        sh(name),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        no_args(),
    )
    .await
}

async fn delete(ch: &Channel, name: &str) -> u32 {
    ch.queue_delete(sh(name), QueueDeleteOptions::default())
        .await
        .expect("queue.delete")
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    publish_with(ch, exchange, key, body, BasicProperties::default()).await
}

async fn publish_with(ch: &Channel, exchange: &str, key: &str, body: &[u8], p: BasicProperties) {
    let confirm = ch
        .basic_publish(
            sh(exchange),
            sh(key),
            BasicPublishOptions::default(),
            body,
            p,
        )
        .await
        .expect("publish");
    // On a confirm channel this waits until the broker has routed it.
    let c = confirm.await.expect("confirm");
    assert!(!c.is_nack(), "nacked: {c:?}");
}

/// A channel in confirm mode: publishes through it are routed once
/// `publish` returns.
async fn confirm_channel(c: &Connection) -> Channel {
    let ch = channel(c).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    ch
}

async fn get(ch: &Channel, q: &str, no_ack: bool) -> Option<lapin::message::BasicGetMessage> {
    ch.basic_get(sh(q), BasicGetOptions { no_ack })
        .await
        .expect("basic.get")
}

/// Every body in the queue, in order (no-ack gets until get-empty).
async fn drain(ch: &Channel, q: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, q, true).await {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

async fn consume(ch: &Channel, q: &str, tag: &str, no_ack: bool) -> Consumer {
    ch.basic_consume(
        sh(q),
        sh(tag),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        no_args(),
    )
    .await
    .expect("basic.consume")
}

async fn next(c: &mut Consumer) -> Delivery {
    tokio::time::timeout(ARRIVE, c.next())
        .await
        .expect("no delivery in time")
        .expect("consumer ended")
        .expect("delivery error")
}

/// True if the consumer gets nothing for [`QUIET`].
async fn quiet(c: &mut Consumer) -> bool {
    tokio::time::timeout(QUIET, c.next()).await.is_err()
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

/// Poll until `f` is true (RabbitMQ cleans up some things asynchronously).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + ARRIVE;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn queue_gone(c: &Connection, q: &str) -> bool {
    let ch = channel(c).await;
    match passive(&ch, q).await {
        Ok(_) => {
            let _ = ch.close(200, sh("ok")).await;
            false
        }
        Err(e) => {
            assert_eq!(code(&e), 404, "{e:?}");
            true
        }
    }
}

// ---------------------------------------------------------------- handshake

#[test]
fn lapin_negotiates_tune() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let cfg = c.configuration();
        assert_eq!(cfg.frame_max(), 131_072);
        assert_eq!(cfg.channel_max(), 2047);
        assert_eq!(cfg.heartbeat(), 60);
        c.close(200, sh("bye")).await.expect("close");
    });
}

#[test]
fn lapin_bad_credentials_and_vhost() {
    run(async {
        let b = common::start();
        let uri = format!("amqp://guest:wrong@{}/%2f", b.addr);
        let e = Connection::connect(&uri, ConnectionProperties::default())
            .await
            .expect_err("bad password must fail");
        assert_eq!(code(&e), 403, "{e:?}");
        let uri = format!("amqp://guest:guest@{}/no-such-vhost", b.addr);
        let e = Connection::connect(&uri, ConnectionProperties::default())
            .await
            .expect_err("unknown vhost must fail");
        assert_eq!(code(&e), 530, "{e:?}");
    });
}

// ---------------------------------------------------------------- channels

#[test]
fn hundred_channels_per_connection() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let mut chans = Vec::new();
        for _ in 0..100 {
            chans.push(channel(&c).await);
        }
        let ids: BTreeSet<u16> = chans.iter().map(|ch| ch.id()).collect();
        assert_eq!(ids.len(), 100);
        let q = unique("chans");
        declare(&chans[0], &q).await;
        // Every channel publishes one message; all arrive.
        for (i, ch) in chans.iter().enumerate() {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirm.select");
            publish(ch, "", &q, format!("{i}").as_bytes()).await;
        }
        assert_eq!(passive(&chans[1], &q).await.unwrap().message_count(), 100);
        for ch in &chans[50..] {
            ch.close(200, sh("bye")).await.expect("channel.close");
        }
        // The rest still work.
        assert_eq!(passive(&chans[2], &q).await.unwrap().message_count(), 100);
        assert_eq!(delete(&chans[3], &q).await, 100);
        c.close(200, sh("bye")).await.expect("close");
    });
}

#[test]
fn soft_error_closes_only_the_channel() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = channel(&c).await;
        let other = channel(&c).await;
        let e = passive(&ch, &unique("missing")).await.expect_err("404");
        assert_eq!(code(&e), 404);
        assert!(passive(&ch, "x").await.is_err(), "channel must be closed");
        // The connection and its other channels are fine.
        let q = unique("alive");
        declare(&other, &q).await;
        let fresh = channel(&c).await;
        assert_eq!(delete(&fresh, &q).await, 0);
    });
}

// ---------------------------------------------------------------- exchanges

/// Declare `n` queues, bind each with `bind(i)` to `x`, publish each
/// message and report which queues received it.
struct Router {
    ch: Channel,
    x: String,
    queues: Vec<String>,
}

impl Router {
    async fn new(c: &Connection, kind: ExchangeKind, n: usize) -> Router {
        let ch = confirm_channel(c).await;
        let x = unique("x");
        ch.exchange_declare(
            sh(&x),
            kind,
            ExchangeDeclareOptions {
                auto_delete: false,
                ..Default::default()
            },
            no_args(),
        )
        .await
        .expect("exchange.declare");
        let mut queues = Vec::new();
        for i in 0..n {
            let q = unique(&format!("rq{i}"));
            declare(&ch, &q).await;
            queues.push(q);
        }
        Router { ch, x, queues }
    }

    async fn bind(&self, i: usize, key: &str, args: FieldTable) {
        self.ch
            .queue_bind(
                sh(&self.queues[i]),
                sh(&self.x),
                sh(key),
                QueueBindOptions::default(),
                args,
            )
            .await
            .expect("queue.bind");
    }

    async fn route(&self, key: &str, headers: Option<FieldTable>) -> Vec<usize> {
        let mut p = BasicProperties::default();
        if let Some(h) = headers {
            p = p.with_headers(h);
        }
        publish_with(&self.ch, &self.x, key, b"m", p).await;
        let mut hit = Vec::new();
        for (i, q) in self.queues.iter().enumerate() {
            let n = drain(&self.ch, q).await.len();
            assert!(n <= 1, "queue {i} got the message {n} times");
            if n == 1 {
                hit.push(i);
            }
        }
        hit
    }

    async fn cleanup(&self) {
        for q in &self.queues {
            delete(&self.ch, q).await;
        }
        self.ch
            .exchange_delete(sh(&self.x), ExchangeDeleteOptions::default())
            .await
            .expect("exchange.delete");
    }
}

#[test]
fn direct_routing() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let r = Router::new(&c, ExchangeKind::Direct, 4).await;
        r.bind(0, "red", no_args()).await;
        r.bind(1, "red", no_args()).await;
        r.bind(1, "green", no_args()).await;
        r.bind(2, "", no_args()).await;
        // Binding twice is idempotent: still one copy.
        r.bind(0, "red", no_args()).await;
        assert_eq!(r.route("red", None).await, vec![0, 1]);
        assert_eq!(r.route("green", None).await, vec![1]);
        assert_eq!(r.route("", None).await, vec![2]);
        assert_eq!(r.route("RED", None).await, Vec::<usize>::new());
        assert_eq!(r.route("blue", None).await, Vec::<usize>::new());
        r.cleanup().await;
    });
}

#[test]
fn fanout_routing() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let r = Router::new(&c, ExchangeKind::Fanout, 3).await;
        r.bind(0, "", no_args()).await;
        r.bind(1, "ignored", no_args()).await;
        assert_eq!(r.route("anything", None).await, vec![0, 1]);
        assert_eq!(r.route("", None).await, vec![0, 1]);
        r.cleanup().await;
    });
}

#[test]
fn topic_routing() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let patterns = [
            "a.*.c", "a.#", "#", "*.b.*", "a.b.c", "#.c", "a.*.#", "*", "a.#.c", "#.b.#",
        ];
        let r = Router::new(&c, ExchangeKind::Topic, patterns.len()).await;
        for (i, p) in patterns.iter().enumerate() {
            r.bind(i, p, no_args()).await;
        }
        let cases: &[(&str, &[usize])] = &[
            ("a.b.c", &[0, 1, 2, 3, 4, 5, 6, 8, 9]),
            ("a", &[1, 2, 7]),
            ("a.x.y.c", &[1, 2, 5, 6, 8]),
            ("b.b.b", &[2, 3, 9]),
            ("c", &[2, 5, 7]),
            ("a.b", &[1, 2, 6, 9]),
            ("a.c", &[1, 2, 5, 6, 8]),
            ("x.y", &[2]),
            ("b", &[2, 7, 9]),
        ];
        for (key, want) in cases {
            assert_eq!(&r.route(key, None).await, want, "routing key {key:?}");
        }
        r.cleanup().await;
    });
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(sh(k), v.clone());
    }
    t
}

fn ls(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

#[test]
fn headers_routing() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let r = Router::new(&c, ExchangeKind::Headers, 8).await;
        let one = AMQPValue::LongInt(1);
        let two = AMQPValue::LongInt(2);
        r.bind(
            0,
            "",
            table(&[("x-match", ls("all")), ("a", one.clone()), ("b", ls("x"))]),
        )
        .await;
        r.bind(
            1,
            "",
            table(&[("x-match", ls("any")), ("a", one.clone()), ("b", ls("x"))]),
        )
        .await;
        // No x-match: "all".
        r.bind(2, "", table(&[("a", one.clone())])).await;
        r.bind(
            3,
            "",
            table(&[("x-match", ls("all-with-x")), ("x-foo", ls("bar"))]),
        )
        .await;
        r.bind(
            4,
            "",
            table(&[
                ("x-match", ls("any-with-x")),
                ("x-foo", ls("bar")),
                ("a", two.clone()),
            ]),
        )
        .await;
        // "all" with no arguments matches every message.
        r.bind(5, "", table(&[("x-match", ls("all"))])).await;
        // "any" with no arguments matches none.
        r.bind(6, "", table(&[("x-match", ls("any"))])).await;
        // Plain "all" ignores x- arguments.
        r.bind(
            7,
            "",
            table(&[("x-match", ls("all")), ("x-foo", ls("bar"))]),
        )
        .await;
        let cases: Vec<(Option<FieldTable>, Vec<usize>)> = vec![
            (
                Some(table(&[("a", one.clone()), ("b", ls("x"))])),
                vec![0, 1, 2, 5, 7],
            ),
            (Some(table(&[("a", one.clone())])), vec![1, 2, 5, 7]),
            (Some(table(&[("b", ls("x"))])), vec![1, 5, 7]),
            (
                Some(table(&[("a", one.clone()), ("b", ls("y"))])),
                vec![1, 2, 5, 7],
            ),
            (Some(table(&[("x-foo", ls("bar"))])), vec![3, 4, 5, 7]),
            (Some(table(&[("a", two.clone())])), vec![4, 5, 7]),
            (None, vec![5, 7]),
        ];
        for (h, want) in cases {
            let got = r.route("ignored", h.clone()).await;
            assert_eq!(got, want, "headers {h:?}");
        }
        r.cleanup().await;
    });
}

#[test]
fn exchange_to_exchange_bind_unbind() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let src = unique("e2e-src");
        let dst = unique("e2e-dst");
        let q = unique("e2e-q");
        ch.exchange_declare(
            sh(&src),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            no_args(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            sh(&dst),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            no_args(),
        )
        .await
        .unwrap();
        declare(&ch, &q).await;
        ch.queue_bind(
            sh(&q),
            sh(&dst),
            sh(""),
            QueueBindOptions::default(),
            no_args(),
        )
        .await
        .unwrap();
        ch.exchange_bind(
            sh(&dst),
            sh(&src),
            sh("stock.#"),
            ExchangeBindOptions::default(),
            no_args(),
        )
        .await
        .expect("exchange.bind");
        publish(&ch, &src, "stock.nyse.ibm", b"in").await;
        publish(&ch, &src, "weather.paris", b"out").await;
        assert_eq!(drain(&ch, &q).await, vec!["in"]);
        // The source cannot be deleted if-unused while bound.
        let e = ch
            .exchange_delete(
                sh(&src),
                ExchangeDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await
            .expect_err("if-unused on a bound exchange");
        assert_eq!(code(&e), 406);
        let ch = confirm_channel(&c).await;
        ch.exchange_unbind(
            sh(&dst),
            sh(&src),
            sh("stock.#"),
            ExchangeUnbindOptions::default(),
            no_args(),
        )
        .await
        .expect("exchange.unbind");
        publish(&ch, &src, "stock.nyse.ibm", b"after").await;
        assert!(drain(&ch, &q).await.is_empty());
        // Now unused: if-unused deletes it.
        ch.exchange_delete(
            sh(&src),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .expect("exchange.delete if-unused");
        ch.exchange_delete(sh(&dst), ExchangeDeleteOptions::default())
            .await
            .unwrap();
        delete(&ch, &q).await;
    });
}

#[test]
fn exchange_declare_errors_through_lapin() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = channel(&c).await;
        for x in [
            "amq.direct",
            "amq.fanout",
            "amq.topic",
            "amq.headers",
            "amq.match",
        ] {
            ch.exchange_declare(
                sh(x),
                ExchangeKind::Custom("ignored-when-passive".into()),
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                no_args(),
            )
            .await
            .unwrap_or_else(|e| panic!("{x}: {e:?}"));
        }
        let missing = unique("missing-x");
        let e = ch
            .exchange_declare(
                sh(&missing),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                no_args(),
            )
            .await
            .expect_err("passive on a missing exchange");
        assert_eq!(code(&e), 404);
        let ch = channel(&c).await;
        let e = ch
            .exchange_declare(
                sh("amq.direct"),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                no_args(),
            )
            .await
            .expect_err("other type");
        assert_eq!(code(&e), 406);
        let ch = channel(&c).await;
        let e = ch
            .exchange_declare(
                sh(&format!("amq.{missing}")),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                no_args(),
            )
            .await
            .expect_err("reserved prefix");
        assert_eq!(code(&e), 403);
    });
}

// ---------------------------------------------------------------- queues

#[test]
fn queue_declare_errors_through_lapin() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let c2 = connect(&b).await;
        let ch = channel(&c).await;
        let q = unique("q-errs");
        let e = passive(&ch, &q).await.expect_err("missing");
        assert_eq!(code(&e), 404);
        let ch = channel(&c).await;
        declare(&ch, &q).await;
        let e = ch
            .queue_declare(
                sh(&q),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                no_args(),
            )
            .await
            .expect_err("flag mismatch");
        assert_eq!(code(&e), 406);
        let ch = channel(&c).await;
        let ex = unique("q-excl");
        ch.queue_declare(
            sh(&ex),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            no_args(),
        )
        .await
        .unwrap();
        let ch2 = channel(&c2).await;
        let e = passive(&ch2, &ex).await.expect_err("locked");
        assert_eq!(code(&e), 405);
        delete(&ch, &q).await;
    });
}

#[test]
fn server_named_queue() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = ch
            .queue_declare(
                sh(""),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                no_args(),
            )
            .await
            .unwrap();
        let name = q.name().as_str().to_string();
        assert!(name.starts_with("amq.gen-"), "{name}");
        assert!(name.len() > "amq.gen-".len());
        let q2 = ch
            .queue_declare(
                sh(""),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                no_args(),
            )
            .await
            .unwrap();
        assert_ne!(q2.name().as_str(), name);
        publish(&ch, "", &name, b"hello").await;
        assert_eq!(drain(&ch, &name).await, vec!["hello"]);
    });
}

#[test]
fn exclusive_queue_deleted_with_its_connection() {
    run(async {
        let b = common::start();
        let owner = connect(&b).await;
        let other = connect(&b).await;
        let q = unique("excl-gone");
        let ch = channel(&owner).await;
        ch.queue_declare(
            sh(&q),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            no_args(),
        )
        .await
        .unwrap();
        let och = channel(&other).await;
        assert_eq!(code(&passive(&och, &q).await.expect_err("locked")), 405);
        // Closing a channel does not delete it.
        ch.close(200, sh("bye")).await.unwrap();
        let ch = channel(&owner).await;
        assert_eq!(passive(&ch, &q).await.unwrap().message_count(), 0);
        owner.close(200, sh("bye")).await.unwrap();
        eventually("exclusive queue deleted", || queue_gone(&other, &q)).await;
    });
}

#[test]
fn auto_delete_when_last_consumer_goes() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let watcher = connect(&b).await;
        let ch = channel(&c).await;
        let q = unique("autodel");
        ch.queue_declare(
            sh(&q),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            no_args(),
        )
        .await
        .unwrap();
        // Never consumed: stays.
        let wch = channel(&watcher).await;
        assert!(passive(&wch, &q).await.is_ok());
        let c1 = consume(&ch, &q, "one", false).await;
        let c2 = consume(&ch, &q, "two", false).await;
        assert_eq!(passive(&wch, &q).await.unwrap().consumer_count(), 2);
        ch.basic_cancel(c1.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        assert_eq!(passive(&wch, &q).await.unwrap().consumer_count(), 1);
        ch.basic_cancel(c2.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        eventually("auto-delete queue deleted", || queue_gone(&watcher, &q)).await;
    });
}

#[test]
fn queue_bind_unbind() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("bindq");
        declare(&ch, &q).await;
        ch.queue_bind(
            sh(&q),
            sh("amq.direct"),
            sh(&q),
            QueueBindOptions::default(),
            no_args(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            sh(&q),
            sh("amq.topic"),
            sh("t.*"),
            QueueBindOptions::default(),
            no_args(),
        )
        .await
        .unwrap();
        publish(&ch, "amq.direct", &q, b"1").await;
        publish(&ch, "amq.topic", "t.x", b"2").await;
        publish(&ch, "amq.topic", "t.x.y", b"no").await;
        assert_eq!(drain(&ch, &q).await, vec!["1", "2"]);
        ch.queue_unbind(sh(&q), sh("amq.direct"), sh(&q), no_args())
            .await
            .unwrap();
        // Unbinding what is not bound is fine.
        ch.queue_unbind(sh(&q), sh("amq.direct"), sh("nope"), no_args())
            .await
            .unwrap();
        publish(&ch, "amq.direct", &q, b"3").await;
        publish(&ch, "amq.topic", "t.z", b"4").await;
        assert_eq!(drain(&ch, &q).await, vec!["4"]);
        delete(&ch, &q).await;
    });
}

#[test]
fn purge_and_delete_report_counts() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("counts");
        declare(&ch, &q).await;
        for i in 0..5 {
            publish(&ch, "", &q, format!("{i}").as_bytes()).await;
        }
        let d = passive(&ch, &q).await.unwrap();
        assert_eq!((d.message_count(), d.consumer_count()), (5, 0));
        let n = ch
            .queue_purge(sh(&q), QueuePurgeOptions::default())
            .await
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(passive(&ch, &q).await.unwrap().message_count(), 0);
        for i in 0..3 {
            publish(&ch, "", &q, format!("{i}").as_bytes()).await;
        }
        // An unacked message is not counted (nor purged).
        let held = get(&ch, &q, false).await.expect("message");
        assert_eq!(held.message_count, 2);
        let n = ch
            .queue_purge(sh(&q), QueuePurgeOptions::default())
            .await
            .unwrap();
        assert_eq!(n, 2);
        ch.basic_reject(
            held.delivery.delivery_tag,
            BasicRejectOptions { requeue: true },
        )
        .await
        .unwrap();
        publish(&ch, "", &q, b"x").await;
        assert_eq!(delete(&ch, &q).await, 2);
        assert!(queue_gone(&c, &q).await);
    });
}

// ---------------------------------------------------------------- basic

#[test]
fn consume_with_server_and_client_tags() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("tags");
        declare(&ch, &q).await;
        let mut server_tagged = consume(&ch, &q, "", true).await;
        assert!(
            server_tagged.tag().as_str().starts_with("amq.ctag-"),
            "{}",
            server_tagged.tag()
        );
        let mut mine = consume(&ch, &q, "my-tag", true).await;
        assert_eq!(mine.tag().as_str(), "my-tag");
        assert_eq!(passive(&ch, &q).await.unwrap().consumer_count(), 2);
        publish(&ch, "", &q, b"a").await;
        publish(&ch, "", &q, b"b").await;
        let mut got = vec![body(&next(&mut server_tagged).await)];
        got.push(body(&next(&mut mine).await));
        got.sort();
        assert_eq!(got, vec!["a", "b"]);
        delete(&ch, &q).await;
    });
}

#[test]
fn cancel_stops_deliveries() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("cancel");
        declare(&ch, &q).await;
        let mut k = consume(&ch, &q, "k", false).await;
        publish(&ch, "", &q, b"1").await;
        let d = next(&mut k).await;
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        ch.basic_cancel(sh("k"), BasicCancelOptions::default())
            .await
            .unwrap();
        assert_eq!(passive(&ch, &q).await.unwrap().consumer_count(), 0);
        publish(&ch, "", &q, b"2").await;
        assert_eq!(drain(&ch, &q).await, vec!["2"]);
        delete(&ch, &q).await;
    });
}

#[test]
fn server_cancel_when_queue_deleted() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = channel(&c).await;
        let q = unique("srvcancel");
        declare(&ch, &q).await;
        let mut k = consume(&ch, &q, "doomed", false).await;
        let other = channel(&c).await;
        delete(&other, &q).await;
        let end = tokio::time::timeout(ARRIVE, k.next())
            .await
            .expect("basic.cancel in time");
        assert!(end.is_none(), "consumer must end, got {end:?}");
        // The channel itself is still open.
        let q2 = unique("srvcancel2");
        declare(&ch, &q2).await;
        delete(&ch, &q2).await;
    });
}

#[test]
fn prefetch_per_consumer() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("qos");
        declare(&ch, &q).await;
        let cch = channel(&c).await;
        cch.basic_qos(2, BasicQosOptions { global: false })
            .await
            .unwrap();
        let mut a = consume(&cch, &q, "a", false).await;
        for i in 0..5 {
            publish(&ch, "", &q, format!("{i}").as_bytes()).await;
        }
        let d0 = next(&mut a).await;
        let d1 = next(&mut a).await;
        assert_eq!((body(&d0), body(&d1)), ("0".into(), "1".into()));
        assert!(quiet(&mut a).await, "a third message beyond prefetch 2");
        d0.acker.ack(BasicAckOptions::default()).await.unwrap();
        assert_eq!(body(&next(&mut a).await), "2");
        assert!(quiet(&mut a).await);
        // A second consumer on the channel gets its own window of 2.
        let mut b2 = consume(&cch, &q, "b", false).await;
        let x = next(&mut b2).await;
        let y = next(&mut b2).await;
        assert_eq!((body(&x), body(&y)), ("3".into(), "4".into()));
        let d = passive(&ch, &q).await.unwrap();
        assert_eq!((d.message_count(), d.consumer_count()), (0, 2));
        delete(&ch, &q).await;
    });
}

#[test]
fn prefetch_global_per_channel() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q1 = unique("gqos1");
        let q2 = unique("gqos2");
        declare(&ch, &q1).await;
        declare(&ch, &q2).await;
        let cch = channel(&c).await;
        cch.basic_qos(3, BasicQosOptions { global: true })
            .await
            .unwrap();
        let mut a = consume(&cch, &q1, "a", false).await;
        let mut bb = consume(&cch, &q2, "b", false).await;
        for i in 0..4 {
            publish(&ch, "", &q1, format!("a{i}").as_bytes()).await;
            publish(&ch, "", &q2, format!("b{i}").as_bytes()).await;
        }
        let mut held = Vec::new();
        loop {
            tokio::select! {
                Some(d) = a.next() => held.push(d.expect("delivery")),
                Some(d) = bb.next() => held.push(d.expect("delivery")),
                _ = tokio::time::sleep(QUIET * 2) => break,
            }
        }
        assert_eq!(held.len(), 3, "channel-wide prefetch of 3");
        let d1 = passive(&ch, &q1).await.unwrap().message_count();
        let d2 = passive(&ch, &q2).await.unwrap().message_count();
        assert_eq!(d1 + d2, 5);
        // Acking everything frees the window for three more.
        cch.basic_ack(0, BasicAckOptions { multiple: true })
            .await
            .unwrap();
        let mut more = 0;
        loop {
            tokio::select! {
                Some(_) = a.next() => more += 1,
                Some(_) = bb.next() => more += 1,
                _ = tokio::time::sleep(QUIET * 2) => break,
            }
        }
        assert_eq!(more, 3);
        delete(&ch, &q1).await;
        delete(&ch, &q2).await;
    });
}

#[test]
fn round_robin_over_consumers() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("rr");
        declare(&ch, &q).await;
        let mut consumers = Vec::new();
        for i in 0..3 {
            let cch = channel(&c).await;
            consumers.push((cch.clone(), consume(&cch, &q, &format!("c{i}"), true).await));
        }
        for i in 0..9 {
            publish(&ch, "", &q, format!("{i}").as_bytes()).await;
        }
        let mut seen = BTreeSet::new();
        for (_, k) in consumers.iter_mut() {
            let mut mine = Vec::new();
            for _ in 0..3 {
                mine.push(body(&next(k).await).parse::<u32>().unwrap());
            }
            assert!(quiet(k).await, "more than its share");
            // Each consumer sees every third message, in order.
            assert!(mine.windows(2).all(|w| w[1] == w[0] + 3), "{mine:?}");
            seen.extend(mine);
        }
        assert_eq!(seen, (0..9).collect());
        delete(&ch, &q).await;
    });
}

#[test]
fn ack_nack_reject_multiple_and_requeue() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("acks");
        declare(&ch, &q).await;
        for i in 0..8 {
            publish(&ch, "", &q, format!("{i}").as_bytes()).await;
        }
        let mut tags = Vec::new();
        for i in 0..8 {
            let m = get(&ch, &q, false).await.expect("message");
            assert_eq!(body(&m.delivery), format!("{i}"));
            assert!(!m.delivery.redelivered);
            tags.push(m.delivery.delivery_tag);
        }
        // ack 0..=1 with multiple
        ch.basic_ack(tags[1], BasicAckOptions { multiple: true })
            .await
            .unwrap();
        // nack 2..=3 with multiple and requeue
        ch.basic_nack(
            tags[3],
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .await
        .unwrap();
        // reject 4 without requeue (dropped), 5 with requeue
        ch.basic_reject(tags[4], BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        ch.basic_reject(tags[5], BasicRejectOptions { requeue: true })
            .await
            .unwrap();
        // nack 6 without requeue (dropped); 7 stays unacked
        ch.basic_nack(
            tags[6],
            BasicNackOptions {
                multiple: false,
                requeue: false,
            },
        )
        .await
        .unwrap();
        // Settlements have no reply: wait for the requeues to land.
        eventually("3 requeued", || async {
            passive(&ch, &q).await.unwrap().message_count() == 3
        })
        .await;
        let mut back = Vec::new();
        for _ in 0..3 {
            let m = get(&ch, &q, false).await.expect("requeued");
            assert!(m.delivery.redelivered, "requeued must be redelivered");
            back.push(body(&m.delivery));
        }
        assert_eq!(back, vec!["2", "3", "5"]);
        assert!(get(&ch, &q, false).await.is_none());
        // ack everything outstanding (tag 0 + multiple = all)
        ch.basic_ack(0, BasicAckOptions { multiple: true })
            .await
            .unwrap();
        ch.close(200, sh("bye")).await.unwrap();
        let ch = channel(&c).await;
        let d = passive(&ch, &q).await.unwrap();
        assert_eq!(d.message_count(), 0, "everything was settled");
        delete(&ch, &q).await;
    });
}

#[test]
fn recover_requeues_unacked() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("recover");
        declare(&ch, &q).await;
        let cch = channel(&c).await;
        let mut k = consume(&cch, &q, "k", false).await;
        for i in 0..3 {
            publish(&ch, "", &q, format!("{i}").as_bytes()).await;
        }
        for i in 0..3 {
            let d = next(&mut k).await;
            assert_eq!(body(&d), format!("{i}"));
            assert!(!d.redelivered);
        }
        cch.basic_recover(BasicRecoverOptions { requeue: true })
            .await
            .unwrap();
        let mut again = Vec::new();
        for _ in 0..3 {
            let d = next(&mut k).await;
            assert!(d.redelivered, "{d:?}");
            again.push(body(&d));
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
        again.sort();
        assert_eq!(again, vec!["0", "1", "2"]);
        assert!(quiet(&mut k).await);
        delete(&ch, &q).await;
    });
}

#[test]
fn get_ok_and_get_empty_with_message_count() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("get");
        declare(&ch, &q).await;
        assert!(get(&ch, &q, true).await.is_none());
        for i in 0..3 {
            publish_with(
                &ch,
                "",
                &q,
                format!("{i}").as_bytes(),
                BasicProperties::default()
                    .with_content_type(sh("text/plain"))
                    .with_message_id(sh(&format!("id-{i}"))),
            )
            .await;
        }
        for i in 0..3u32 {
            let m = get(&ch, &q, true).await.expect("get-ok");
            assert_eq!(m.message_count, 2 - i);
            assert_eq!(body(&m.delivery), format!("{i}"));
            assert_eq!(m.delivery.exchange.as_str(), "");
            assert_eq!(m.delivery.routing_key.as_str(), q);
            assert_eq!(
                m.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str()),
                Some(format!("id-{i}").as_str())
            );
            assert_eq!(
                m.delivery
                    .properties
                    .content_type()
                    .as_ref()
                    .map(|s| s.as_str()),
                Some("text/plain")
            );
        }
        assert!(get(&ch, &q, true).await.is_none());
        delete(&ch, &q).await;
    });
}

/// Publish "0".."n-1" to a fresh queue through a confirm channel.
async fn filled_queue(c: &Connection, prefix: &str, n: usize) -> (Channel, String) {
    let ch = confirm_channel(c).await;
    let q = unique(prefix);
    declare(&ch, &q).await;
    for i in 0..n {
        publish(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    (ch, q)
}

/// Get every message left; bodies with an `r` prefix when redelivered.
async fn drain_marked(ch: &Channel, q: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, q, true).await {
        let r = if m.delivery.redelivered { "r" } else { "" };
        out.push(format!("{r}{}", body(&m.delivery)));
    }
    out
}

#[test]
fn unacked_return_in_place_when_channel_closes() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let (ch, q) = filled_queue(&c, "requeue-ch", 5).await;
        let cch = channel(&c).await;
        cch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
        let mut k = consume(&cch, &q, "k", false).await;
        assert_eq!(body(&next(&mut k).await), "0");
        assert_eq!(body(&next(&mut k).await), "1");
        cch.close(200, sh("bye")).await.unwrap();
        assert_eq!(drain_marked(&ch, &q).await, vec!["r0", "r1", "2", "3", "4"]);
        delete(&ch, &q).await;
    });
}

#[test]
fn unacked_return_in_place_when_connection_closes() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let (ch, q) = filled_queue(&c, "requeue-conn", 6).await;
        let consumer_conn = connect(&b).await;
        let cch = channel(&consumer_conn).await;
        // Take the middle ones: 0 and 1 by get-and-ack, 2 and 3 unacked.
        for _ in 0..2 {
            let m = get(&cch, &q, false).await.unwrap();
            cch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
                .await
                .unwrap();
        }
        let a = get(&cch, &q, false).await.unwrap();
        let bm = get(&cch, &q, false).await.unwrap();
        assert_eq!(
            (body(&a.delivery), body(&bm.delivery)),
            ("2".into(), "3".into())
        );
        consumer_conn.close(200, sh("bye")).await.unwrap();
        eventually("requeued after connection close", || async {
            passive(&ch, &q).await.unwrap().message_count() == 4
        })
        .await;
        assert_eq!(drain_marked(&ch, &q).await, vec!["r2", "r3", "4", "5"]);
        delete(&ch, &q).await;
    });
}

#[test]
fn nack_requeue_returns_in_place() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let (ch, q) = filled_queue(&c, "requeue-nack", 5).await;
        let cch = channel(&c).await;
        let m0 = get(&cch, &q, false).await.unwrap();
        let m1 = get(&cch, &q, false).await.unwrap();
        let m2 = get(&cch, &q, false).await.unwrap();
        // Requeue the middle one, then the first.
        cch.basic_nack(
            m1.delivery.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        )
        .await
        .unwrap();
        cch.basic_reject(
            m0.delivery.delivery_tag,
            BasicRejectOptions { requeue: true },
        )
        .await
        .unwrap();
        cch.basic_ack(m2.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        assert_eq!(drain_marked(&cch, &q).await, vec!["r0", "r1", "3", "4"]);
        delete(&ch, &q).await;
    });
}

// ------------------------------------------------- confirms, returns, tx

#[test]
fn publisher_confirms_ten_thousand_through_lapin() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let q = unique("confirm10k");
        declare(&ch, &q).await;
        const N: usize = 10_000;
        let mut pending = Vec::with_capacity(N);
        for i in 0..N {
            pending.push(
                ch.basic_publish(
                    sh(""),
                    sh(&q),
                    BasicPublishOptions::default(),
                    format!("{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("publish"),
            );
        }
        let mut acked = 0;
        for p in pending {
            match p.await.expect("confirm") {
                Confirmation::Ack(None) => acked += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(acked, N);
        assert!(ch.wait_for_confirms().await.unwrap().is_empty());
        assert_eq!(passive(&ch, &q).await.unwrap().message_count() as usize, N);
        assert_eq!(delete(&ch, &q).await as usize, N);
    });
}

#[test]
fn mandatory_unroutable_is_returned_before_its_confirm() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let ch = confirm_channel(&c).await;
        let key = unique("unroutable");
        let confirm = ch
            .basic_publish(
                sh("amq.direct"),
                sh(&key),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"nobody home",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        // lapin attaches a basic.return to the confirm only when the return
        // arrived first.
        let Confirmation::Ack(Some(ret)) = confirm else {
            panic!("expected an ack carrying the return, got {confirm:?}");
        };
        assert_eq!(ret.reply_code, 312);
        assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
        assert_eq!(ret.delivery.routing_key.as_str(), key);
        assert_eq!(ret.delivery.data, b"nobody home");
        // Routable mandatory: no return.
        let q = unique("routable");
        declare(&ch, &q).await;
        let confirm = ch
            .basic_publish(
                sh(""),
                sh(&q),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"x",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(matches!(confirm, Confirmation::Ack(None)), "{confirm:?}");
        delete(&ch, &q).await;
    });
}

#[test]
fn transactions_commit_and_rollback() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let plain = channel(&c).await;
        let q = unique("tx");
        declare(&plain, &q).await;
        let tx = channel(&c).await;
        tx.tx_select().await.unwrap();
        publish(&tx, "", &q, b"rolled-back").await;
        assert_eq!(passive(&plain, &q).await.unwrap().message_count(), 0);
        tx.tx_rollback().await.unwrap();
        assert_eq!(passive(&plain, &q).await.unwrap().message_count(), 0);
        publish(&tx, "", &q, b"committed-1").await;
        publish(&tx, "", &q, b"committed-2").await;
        assert_eq!(passive(&plain, &q).await.unwrap().message_count(), 0);
        tx.tx_commit().await.unwrap();
        assert_eq!(passive(&plain, &q).await.unwrap().message_count(), 2);
        // Acks are transactional too.
        let m = get(&tx, &q, false).await.unwrap();
        assert_eq!(body(&m.delivery), "committed-1");
        tx.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        tx.tx_rollback().await.unwrap();
        // Still unacked: ack again and commit.
        tx.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        tx.tx_commit().await.unwrap();
        tx.close(200, sh("bye")).await.unwrap();
        assert_eq!(drain(&plain, &q).await, vec!["committed-2"]);
        delete(&plain, &q).await;
    });
}

#[test]
fn tx_rollback_of_ack_keeps_message_unacked() {
    run(async {
        let b = common::start();
        let c = connect(&b).await;
        let (plain, q) = filled_queue(&c, "tx-ack", 1).await;
        let tx = channel(&c).await;
        tx.tx_select().await.unwrap();
        let m = get(&tx, &q, false).await.unwrap();
        tx.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        tx.tx_rollback().await.unwrap();
        // Closing the channel requeues the still-unacked message.
        tx.close(200, sh("bye")).await.unwrap();
        assert_eq!(drain_marked(&plain, &q).await, vec!["r0"]);
        delete(&plain, &q).await;
    });
}
