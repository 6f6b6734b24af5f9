//! Integration tests of the AMQP 0-9-1 codec through its public API
//! (`warren::codec::*`): round trips of every method, golden bytes captured
//! from a real client (pika), every error class with its reply code,
//! incremental parsing at every split point, the outbox, and a replay of the
//! fuzz corpora in `fuzz/corpus/` (so `cargo test` re-checks every seed and
//! every crash regression).
//!
//! `cargo test --test codec -- --ignored write_fuzz_seed_corpus` regenerates
//! the named seed files in `fuzz/corpus/` (crash regressions are kept).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::io::IoSlice;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use warren::codec::frame::{
    parse_protocol_header, write_heartbeat, write_method, ProtocolHeader, FRAME_MIN_SIZE,
    PROTOCOL_HEADER,
};
use warren::codec::outbox::COPY_THRESHOLD;
use warren::codec::reader::Reader;
use warren::codec::table::MAX_DEPTH;
use warren::codec::*;

// ---------------------------------------------------------------------------
// helpers

fn s(v: &str) -> Bytes {
    Bytes::copy_from_slice(v.as_bytes())
}

fn table(entries: Vec<(&str, FieldValue)>) -> FieldTable {
    FieldTable(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
}

/// A table holding every field type, nested tables and arrays included.
fn every_type_table() -> FieldTable {
    use FieldValue::*;
    let inner = table(vec![
        ("depth", U8(2)),
        ("leaf", Table(table(vec![("k", LongStr(s("v")))]))),
    ]);
    table(vec![
        ("bool", Bool(true)),
        ("i8", I8(-128)),
        ("u8", U8(255)),
        ("i16", I16(-32768)),
        ("u16", U16(65535)),
        ("i32", I32(i32::MIN)),
        ("u32", U32(u32::MAX)),
        ("i64", I64(i64::MIN)),
        ("f32", F32(-0.5)),
        ("f64", F64(1e300)),
        ("decimal", Decimal(3, 123_456)),
        ("longstr", LongStr(s("héllo wörld"))),
        (
            "bytes",
            Bytes(bytes::Bytes::from_static(&[0, 1, 0xfe, 0xff])),
        ),
        (
            "array",
            Array(vec![
                I32(1),
                LongStr(s("two")),
                Bool(false),
                Array(vec![]),
                Table(FieldTable::new()),
                Void,
            ]),
        ),
        ("timestamp", Timestamp(1_700_000_000)),
        ("table", Table(inner)),
        ("void", Void),
    ])
}

/// Queue arguments as a RabbitMQ client would send them, plus every type.
fn queue_arguments() -> FieldTable {
    let mut t = table(vec![
        ("x-message-ttl", FieldValue::I32(60_000)),
        ("x-max-length", FieldValue::I64(1_000_000)),
        ("x-queue-type", FieldValue::LongStr(s("classic"))),
        ("x-dead-letter-exchange", FieldValue::LongStr(s("dlx"))),
    ]);
    t.insert("all", FieldValue::Table(every_type_table()));
    t
}

fn server_properties() -> FieldTable {
    table(vec![
        (
            "capabilities",
            FieldValue::Table(table(vec![
                ("publisher_confirms", FieldValue::Bool(true)),
                ("exchange_exchange_bindings", FieldValue::Bool(true)),
                ("basic.nack", FieldValue::Bool(true)),
                ("consumer_cancel_notify", FieldValue::Bool(true)),
                ("connection.blocked", FieldValue::Bool(true)),
                ("per_consumer_qos", FieldValue::Bool(true)),
                ("direct_reply_to", FieldValue::Bool(true)),
            ])),
        ),
        ("product", FieldValue::LongStr(s("warren"))),
        ("version", FieldValue::LongStr(s("0.1.0"))),
        ("platform", FieldValue::LongStr(s("Rust"))),
        ("cluster_name", FieldValue::LongStr(s("warren@localhost"))),
    ])
}

fn encode_method(m: &Method) -> Bytes {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    out.freeze()
}

/// Parse every complete frame in `bytes`; panics on an error or a leftover.
fn parse_all(bytes: &[u8], frame_max: u32) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(f) = parse_frame(&mut buf, frame_max).unwrap() {
        frames.push(f);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

/// Parse exactly one complete frame.
fn parse_one(bytes: &[u8], frame_max: u32) -> Result<Frame> {
    let mut buf = BytesMut::from(bytes);
    let f = parse_frame(&mut buf, frame_max)?.expect("a complete frame");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(f)
}

fn frame_err(bytes: &[u8], frame_max: u32) -> Error {
    let mut buf = BytesMut::from(bytes);
    parse_frame(&mut buf, frame_max).expect_err("must be rejected")
}

fn method_err(payload: &[u8]) -> Error {
    Method::decode(&Bytes::copy_from_slice(payload)).expect_err("must be rejected")
}

/// A frame with the given type, channel and payload, and a correct frame end.
fn raw_frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(0xCE);
    v
}

/// xorshift64*: a tiny deterministic PRNG (no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------
// round trips of every method

/// Every method with realistic, non-default values. Bit arguments take the
/// bits of `mask` in order (bit 0 for a method's first bit argument, …), so
/// calling this with every mask in 0..32 covers every bit combination of
/// every method (the most bits any method has is 5).
fn realistic_methods(mask: u32) -> Vec<Method> {
    let b = |i: u32| mask & (1 << i) != 0;
    vec![
        ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: s("PLAIN AMQPLAIN"),
            locales: s("en_US"),
        }
        .into(),
        ConnectionStartOk {
            client_properties: every_type_table(),
            mechanism: s("PLAIN"),
            response: Bytes::from_static(b"\0guest\0guest"),
            locale: s("en_US"),
        }
        .into(),
        ConnectionSecure {
            challenge: Bytes::from_static(&[1, 2, 3, 0, 255]),
        }
        .into(),
        ConnectionSecureOk {
            response: s("token=abc"),
        }
        .into(),
        ConnectionTune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        }
        .into(),
        ConnectionTuneOk {
            channel_max: 65535,
            frame_max: u32::MAX,
            heartbeat: 580,
        }
        .into(),
        ConnectionOpen {
            virtual_host: s("/prod"),
            capabilities: s("legacy"),
            insist: b(0),
        }
        .into(),
        ConnectionOpenOk {
            known_hosts: s("host-a:5672"),
        }
        .into(),
        ConnectionClose {
            reply_code: 320,
            reply_text: s("CONNECTION_FORCED - broker forced connection closure"),
            class_id: 60,
            method_id: 40,
        }
        .into(),
        ConnectionCloseOk {}.into(),
        ConnectionBlocked {
            reason: s("low on memory"),
        }
        .into(),
        ConnectionUnblocked {}.into(),
        ConnectionUpdateSecret {
            new_secret: s("eyJhbGciOiJIUzI1NiJ9.e30.sig"),
            reason: s("token refresh"),
        }
        .into(),
        ConnectionUpdateSecretOk {}.into(),
        ChannelOpen {
            out_of_band: s("oob"),
        }
        .into(),
        ChannelOpenOk {
            channel_id: s("channel-7"),
        }
        .into(),
        ChannelFlow { active: b(0) }.into(),
        ChannelFlowOk { active: b(0) }.into(),
        ChannelClose {
            reply_code: 404,
            reply_text: s("NOT_FOUND - no queue 'jobs' in vhost '/'"),
            class_id: 50,
            method_id: 10,
        }
        .into(),
        ChannelCloseOk {}.into(),
        AccessRequest {
            realm: s("/data"),
            exclusive: b(0),
            passive: b(1),
            active: b(2),
            write: b(3),
            read: b(4),
        }
        .into(),
        AccessRequestOk { ticket: 1 }.into(),
        ExchangeDeclare {
            ticket: 7,
            exchange: s("logs"),
            kind: s("topic"),
            passive: b(0),
            durable: b(1),
            auto_delete: b(2),
            internal: b(3),
            nowait: b(4),
            arguments: table(vec![("alternate-exchange", FieldValue::LongStr(s("ae")))]),
        }
        .into(),
        ExchangeDeclareOk {}.into(),
        ExchangeDelete {
            ticket: 7,
            exchange: s("logs"),
            if_unused: b(0),
            nowait: b(1),
        }
        .into(),
        ExchangeDeleteOk {}.into(),
        ExchangeBind {
            ticket: 7,
            destination: s("dst"),
            source: s("src"),
            routing_key: s("rk.#"),
            nowait: b(0),
            arguments: every_type_table(),
        }
        .into(),
        ExchangeBindOk {}.into(),
        ExchangeUnbind {
            ticket: 7,
            destination: s("dst"),
            source: s("src"),
            routing_key: s("rk.#"),
            nowait: b(0),
            arguments: table(vec![("x-match", FieldValue::LongStr(s("any")))]),
        }
        .into(),
        ExchangeUnbindOk {}.into(),
        QueueDeclare {
            ticket: 7,
            queue: s("jobs"),
            passive: b(0),
            durable: b(1),
            exclusive: b(2),
            auto_delete: b(3),
            nowait: b(4),
            arguments: queue_arguments(),
        }
        .into(),
        QueueDeclareOk {
            queue: s("amq.gen-JzTY20BRgKO-HjmUJj0wLg"),
            message_count: 12_345,
            consumer_count: 3,
        }
        .into(),
        QueueBind {
            ticket: 7,
            queue: s("jobs"),
            exchange: s("amq.topic"),
            routing_key: s("jobs.*"),
            nowait: b(0),
            arguments: table(vec![("x-match", FieldValue::LongStr(s("all")))]),
        }
        .into(),
        QueueBindOk {}.into(),
        QueuePurge {
            ticket: 7,
            queue: s("jobs"),
            nowait: b(0),
        }
        .into(),
        QueuePurgeOk { message_count: 99 }.into(),
        QueueDelete {
            ticket: 7,
            queue: s("jobs"),
            if_unused: b(0),
            if_empty: b(1),
            nowait: b(2),
        }
        .into(),
        QueueDeleteOk {
            message_count: 4_000_000_000,
        }
        .into(),
        QueueUnbind {
            ticket: 7,
            queue: s("jobs"),
            exchange: s("amq.topic"),
            routing_key: s("jobs.*"),
            arguments: every_type_table(),
        }
        .into(),
        QueueUnbindOk {}.into(),
        BasicQos {
            prefetch_size: 65_536,
            prefetch_count: 250,
            global: b(0),
        }
        .into(),
        BasicQosOk {}.into(),
        BasicConsume {
            ticket: 7,
            queue: s("jobs"),
            consumer_tag: s("ctag-1"),
            no_local: b(0),
            no_ack: b(1),
            exclusive: b(2),
            nowait: b(3),
            arguments: table(vec![
                ("x-priority", FieldValue::I32(10)),
                ("x-stream-offset", FieldValue::LongStr(s("first"))),
            ]),
        }
        .into(),
        BasicConsumeOk {
            consumer_tag: s("amq.ctag-abc"),
        }
        .into(),
        BasicCancel {
            consumer_tag: s("ctag-1"),
            nowait: b(0),
        }
        .into(),
        BasicCancelOk {
            consumer_tag: s("ctag-1"),
        }
        .into(),
        BasicPublish {
            ticket: 7,
            exchange: s("amq.direct"),
            routing_key: s("jobs"),
            mandatory: b(0),
            immediate: b(1),
        }
        .into(),
        BasicReturn {
            reply_code: 312,
            reply_text: s("NO_ROUTE"),
            exchange: s("amq.direct"),
            routing_key: s("nowhere"),
        }
        .into(),
        BasicDeliver {
            consumer_tag: s("ctag-1"),
            delivery_tag: u64::MAX - 1,
            redelivered: b(0),
            exchange: s("amq.direct"),
            routing_key: s("jobs"),
        }
        .into(),
        BasicGet {
            ticket: 7,
            queue: s("jobs"),
            no_ack: b(0),
        }
        .into(),
        BasicGetOk {
            delivery_tag: 42,
            redelivered: b(0),
            exchange: s(""),
            routing_key: s("jobs"),
            message_count: 7,
        }
        .into(),
        BasicGetEmpty {
            cluster_id: s("legacy"),
        }
        .into(),
        BasicAck {
            delivery_tag: 1 << 40,
            multiple: b(0),
        }
        .into(),
        BasicReject {
            delivery_tag: 42,
            requeue: b(0),
        }
        .into(),
        BasicRecoverAsync { requeue: b(0) }.into(),
        BasicRecover { requeue: b(0) }.into(),
        BasicRecoverOk {}.into(),
        BasicNack {
            delivery_tag: 42,
            multiple: b(0),
            requeue: b(1),
        }
        .into(),
        ConfirmSelect { nowait: b(0) }.into(),
        ConfirmSelectOk {}.into(),
        TxSelect {}.into(),
        TxSelectOk {}.into(),
        TxCommit {}.into(),
        TxCommitOk {}.into(),
        TxRollback {}.into(),
        TxRollbackOk {}.into(),
    ]
}

/// The realistic method called `name`.
fn realistic(name: &str, mask: u32) -> Method {
    realistic_methods(mask)
        .into_iter()
        .find(|m| m.name() == name)
        .unwrap()
}

#[test]
fn realistic_methods_cover_every_method() {
    let defaults: Vec<&str> = Method::all_defaults().iter().map(Method::name).collect();
    let realistic: Vec<&str> = realistic_methods(0).iter().map(Method::name).collect();
    let set: BTreeSet<&str> = realistic.iter().copied().collect();
    assert_eq!(set.len(), realistic.len(), "a method is listed twice");
    assert_eq!(set, defaults.iter().copied().collect::<BTreeSet<_>>());
    // 66 methods: the 0-9-1 spec plus RabbitMQ's extensions.
    assert_eq!(defaults.len(), 66);
    for (m, d) in realistic_methods(1).iter().zip(Method::all_defaults()) {
        // (methods without arguments have nothing but defaults)
        if encode_method(&d).len() > 4 {
            assert_ne!(m, &d, "{} has only default values", m.name());
        }
    }
}

#[test]
fn every_method_round_trips_with_every_bit_combination() {
    let mut seen = BTreeSet::new();
    for mask in 0..32 {
        for m in realistic_methods(mask) {
            let payload = encode_method(&m);
            let back = Method::decode(&payload).unwrap();
            assert_eq!(back, m, "{} mask {mask:05b}", m.name());
            assert_eq!(back.ids(), m.ids());
            // bits never change the length of the encoding
            let plain = encode_method(&realistic(m.name(), 0));
            assert_eq!(payload.len(), plain.len(), "{}", m.name());
            seen.insert((m.name(), payload));
            // and the same method framed on a channel
            let mut out = BytesMut::new();
            write_method(&mut out, 9, &m);
            assert_eq!(parse_one(&out, 0).unwrap(), Frame::Method(9, m));
        }
    }
    // Every bit is really carried: a method with n bit arguments has 2^n
    // distinct encodings over the 32 masks (n = its `field: true` count with
    // every bit set).
    for m in realistic_methods(0b11111) {
        let n = format!("{m:?}").matches(": true").count();
        let distinct = seen.iter().filter(|(name, _)| *name == m.name()).count();
        assert_eq!(distinct, 1 << n, "{}", m.name());
    }
    let total_bits: usize = realistic_methods(0b11111)
        .iter()
        .map(|m| format!("{m:?}").matches(": true").count())
        .sum();
    assert_eq!(total_bits, 45, "bit arguments in amqp-rabbitmq-0.9.1.json");
}

#[test]
fn default_methods_round_trip() {
    for m in Method::all_defaults() {
        let payload = encode_method(&m);
        assert_eq!(Method::decode(&payload).unwrap(), m, "{}", m.name());
        let mut out = BytesMut::new();
        Frame::Method(0, m.clone()).encode(&mut out);
        assert_eq!(
            parse_one(&out, FRAME_MIN_SIZE).unwrap(),
            Frame::Method(0, m)
        );
    }
}

#[test]
fn method_metadata() {
    let names: Vec<&str> = Method::all_defaults().iter().map(Method::name).collect();
    for (m, name) in Method::all_defaults().iter().zip(&names) {
        let payload = encode_method(m);
        let (c, id) = m.ids();
        assert_eq!(
            &payload[..4],
            &[(c >> 8) as u8, c as u8, (id >> 8) as u8, id as u8]
        );
        assert_eq!(
            m.has_content(),
            [
                "basic.publish",
                "basic.return",
                "basic.deliver",
                "basic.get-ok"
            ]
            .contains(name),
            "{name}"
        );
    }
    assert_eq!(BasicPublish::CLASS_ID, 60);
    assert_eq!(BasicPublish::METHOD_ID, 40);
    assert_eq!(ExchangeUnbindOk::METHOD_ID, 51);
    assert_eq!(Method::from(TxSelect {}).ids(), (90, 10));
}

#[test]
fn field_table_with_every_type_round_trips() {
    for t in [
        every_type_table(),
        queue_arguments(),
        server_properties(),
        FieldTable::new(),
    ] {
        let mut out = BytesMut::new();
        t.encode(&mut out);
        let b = out.freeze();
        let mut r = Reader::new(&b);
        assert_eq!(FieldTable::decode(&mut r).unwrap(), t);
        assert_eq!(r.remaining(), 0);
    }
}

fn full_properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(s("application/json")),
        content_encoding: Some(s("gzip")),
        headers: Some(every_type_table()),
        delivery_mode: Some(2),
        priority: Some(9),
        correlation_id: Some(s("7f1c0d2e")),
        reply_to: Some(s("amq.rabbitmq.reply-to")),
        expiration: Some(s("60000")),
        message_id: Some(s("msg-0001")),
        timestamp: Some(1_700_000_000),
        kind: Some(s("order.created")),
        user_id: Some(s("guest")),
        app_id: Some(s("shop")),
        cluster_id: Some(s("c1")),
    }
}

/// `full_properties()` with only the properties whose bit is set in `mask`
/// (bit 0 = content-type … bit 13 = cluster-id).
fn some_properties(mask: u32) -> BasicProperties {
    let f = full_properties();
    let k = |i: u32| mask & (1 << i) != 0;
    BasicProperties {
        content_type: f.content_type.filter(|_| k(0)),
        content_encoding: f.content_encoding.filter(|_| k(1)),
        headers: f.headers.filter(|_| k(2)),
        delivery_mode: f.delivery_mode.filter(|_| k(3)),
        priority: f.priority.filter(|_| k(4)),
        correlation_id: f.correlation_id.filter(|_| k(5)),
        reply_to: f.reply_to.filter(|_| k(6)),
        expiration: f.expiration.filter(|_| k(7)),
        message_id: f.message_id.filter(|_| k(8)),
        timestamp: f.timestamp.filter(|_| k(9)),
        kind: f.kind.filter(|_| k(10)),
        user_id: f.user_id.filter(|_| k(11)),
        app_id: f.app_id.filter(|_| k(12)),
        cluster_id: f.cluster_id.filter(|_| k(13)),
    }
}

#[test]
fn content_header_round_trips_for_every_property_subset() {
    for mask in 0..(1u32 << 14) {
        let h = ContentHeader {
            class_id: 60,
            body_size: u64::from(mask) * 1_000_003,
            properties: some_properties(mask),
        };
        let mut out = BytesMut::new();
        h.encode(&mut out);
        // flag bits: property i is bit 15 - i of the flag word
        let flags = u16::from_be_bytes([out[12], out[13]]);
        let want = (0..14)
            .filter(|i| mask & (1 << i) != 0)
            .fold(0u16, |f, i| f | 1 << (15 - i));
        assert_eq!(flags, want);
        let back = ContentHeader::decode(&out.freeze()).unwrap();
        assert_eq!(back, h);
    }
}

// ---------------------------------------------------------------------------
// golden bytes from a real client
//
// Captured once with pika 1.4.4 (Python 3.11.7): a throwaway fake server on
// 127.0.0.1 answered pika's BlockingConnection with connection.start, tune,
// open-ok, channel.open-ok and queue.declare-ok (frames built with pika's own
// `pika.frame.Method(...).marshal()`) and recorded every frame pika sent for
//
//     conn = pika.BlockingConnection(pika.ConnectionParameters(host, port, heartbeat=60))
//     ch = conn.channel()
//     ch.queue_declare('orders', durable=True, arguments={'x-message-ttl': 60000,
//         'x-max-length': 1000, 'x-queue-type': 'classic',
//         'x-dead-letter-exchange': 'dlx', 'x-single-active-consumer': True})
//     ch.basic_publish('shop', 'order.created', b'{"id": 1}', pika.BasicProperties(
//         content_type='application/json', content_encoding='utf-8',
//         headers={'retries': 3, 'origin': 'eu-west', 'trace': True},
//         delivery_mode=2, priority=5, correlation_id='c-42',
//         reply_to='amq.rabbitmq.reply-to', expiration='30000', message_id='m-0001',
//         timestamp=1700000000, type='order.created', user_id='guest', app_id='shop'),
//         mandatory=True)
//
// PIKA_TABLE is `pika.data.encode_table` of every type pika can encode (it
// has no float encoder); PIKA_BITS_* are `pika.frame.Method(1, m).marshal()`
// for every method with bit arguments, for three bit masks (the same values
// as `bit_methods` below). pika's encoding is canonical for warren (same
// type tags, same bit packing), so re-encoding must give the same bytes.

const PIKA_START_OK: &[u8] =
    b"\x01\x00\x00\x00\x00\x01@\x00\x0a\x00\x0b\x00\x00\x01\x1c\x07productS\
      \x00\x00\x00\x1aPika Python Client Library\x08platformS\x00\x00\x00\x0dP\
      ython 3.11.7\x0ccapabilitiesF\x00\x00\x00\x8c\x1cauthentication_failure_\
      closet\x01\x0abasic.nackt\x01\x12connection.blockedt\x01\x16consumer_can\
      cel_notifyt\x01\x1aexchange_exchange_bindingst\x01\x12publisher_confirms\
      t\x01\x0binformationS\x00\x00\x00\x19See https://pika.rtfd.org\x07versio\
      nS\x00\x00\x00\x051.4.4\x05PLAIN\x00\x00\x00\x0c\x00guest\x00guest\x05en\
      _US\xce";
const PIKA_TUNE_OK: &[u8] =
    b"\x01\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x1f\x07\xff\x00\x02\x00\x00\x00\
      <\xce";
const PIKA_OPEN: &[u8] = b"\x01\x00\x00\x00\x00\x00\x08\x00\x0a\x00(\x01/\x00\x01\xce";
const PIKA_CHANNEL_OPEN: &[u8] = b"\x01\x00\x01\x00\x00\x00\x05\x00\x14\x00\x0a\x00\xce";
const PIKA_QUEUE_DECLARE: &[u8] =
    b"\x01\x00\x01\x00\x00\x00\x8a\x002\x00\x0a\x00\x00\x06orders\x02\x00\x00\
      \x00x\x0dx-message-ttlI\x00\x00\xea`\x0cx-max-lengthI\x00\x00\x03\xe8\
      \x0cx-queue-typeS\x00\x00\x00\x07classic\x16x-dead-letter-exchangeS\x00\
      \x00\x00\x03dlx\x18x-single-active-consumert\x01\xce";
const PIKA_PUBLISH: &[u8] =
    b"\x01\x00\x01\x00\x00\x00\x1a\x00<\x00(\x00\x00\x04shop\x0dorder.created\
      \x01\xce";
const PIKA_HEADER: &[u8] = b"\x02\x00\x01\x00\x00\x00\x9c\x00<\x00\x00\x00\x00\x00\x00\x00\x00\x00\
      \x09\xff\xf8\x10application/json\x05utf-8\x00\x00\x00(\x07retriesI\x00\
      \x00\x00\x03\x06originS\x00\x00\x00\x07eu-west\x05tracet\x01\x02\x05\x04\
      c-42\x15amq.rabbitmq.reply-to\x0530000\x06m-0001\x00\x00\x00\x00eS\xf1\
      \x00\x0dorder.created\x05guest\x04shop\xce";
const PIKA_BODY: &[u8] = b"\x03\x00\x01\x00\x00\x00\x09{\x22id\x22: 1}\xce";
const PIKA_TABLE: &[u8] = b"\x00\x00\x00\x80\x04boolt\x00\x03intI\xff\xff\xff\xf9\x04longl\x00\x00\
      \x01\x00\x00\x00\x00\x00\x03decD\x02\x00\x00\x01:\x02tsT\x00\x00\x00\x00\
      eS\xf1\x00\x03strS\x00\x00\x00\x06h\xc3\xa9llo\x03binx\x00\x00\x00\x02\
      \x00\xff\x04listA\x00\x00\x00\x0eI\x00\x00\x00\x01S\x00\x00\x00\x03twoV\
      \x06nestedF\x00\x00\x00\x08\x01kS\x00\x00\x00\x01v\x04voidV";

/// pika's encoding of `bit_methods(0b11111)`, in the same order.
const PIKA_BITS_ALL: [&[u8]; 25] = [
    b"\x01\x00\x01\x00\x00\x00\x0c\x00\x0a\x00(\x05/prod\x00\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00\x14\x00\x14\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00\x14\x00\x15\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x0b\x00\x1e\x00\x0a\x05/data\x1f\xce",
    b"\x01\x00\x01\x00\x00\x00\x16\x00(\x00\x0a\x00\x00\x04logs\x05topic\x1f\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x00(\x00\x14\x00\x00\x04logs\x03\xce",
    b"\x01\x00\x01\x00\x00\x00\x18\x00(\x00\x1e\x00\x00\x03dst\x03src\x04rk.#\x01\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x18\x00(\x00(\x00\x00\x03dst\x03src\x04rk.#\x01\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x10\x002\x00\x0a\x00\x00\x04jobs\x1f\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00!\x002\x00\x14\x00\x00\x04jobs\x09amq.topic\x06jobs.*\x01\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x002\x00\x1e\x00\x00\x04jobs\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x002\x00(\x00\x00\x04jobs\x07\xce",
    b"\x01\x00\x01\x00\x00\x00\x0b\x00<\x00\x0a\x00\x00\x00\x00\x00\xfa\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x17\x00<\x00\x14\x00\x00\x04jobs\x06ctag-1\x0f\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x00<\x00\x1e\x06ctag-1\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x17\x00<\x00(\x00\x00\x0aamq.direct\x04jobs\x03\xce",
    b"\x01\x00\x01\x00\x00\x00$\x00<\x00<\x06ctag-1\x00\x00\x00\x00\x00\x00\x00*\x01\x0aamq.direct\x04jobs\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x00<\x00F\x00\x00\x04jobs\x01\xce",
    b"\x01\x00\x01\x00\x00\x00!\x00<\x00G\x00\x00\x00\x00\x00\x00\x00*\x01\x0aamq.direct\x04jobs\x00\x00\x00\x07\xce",
    b"\x01\x00\x01\x00\x00\x00\x0d\x00<\x00P\x00\x00\x00\x00\x00\x00\x00*\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x0d\x00<\x00Z\x00\x00\x00\x00\x00\x00\x00*\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00<\x00d\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00<\x00n\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x0d\x00<\x00x\x00\x00\x00\x00\x00\x00\x00*\x03\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00U\x00\x0a\x01\xce",
];
/// pika's encoding of `bit_methods(0b10101)`, in the same order.
const PIKA_BITS_EVEN: [&[u8]; 25] = [
    b"\x01\x00\x01\x00\x00\x00\x0c\x00\x0a\x00(\x05/prod\x00\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00\x14\x00\x14\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00\x14\x00\x15\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x0b\x00\x1e\x00\x0a\x05/data\x15\xce",
    b"\x01\x00\x01\x00\x00\x00\x16\x00(\x00\x0a\x00\x00\x04logs\x05topic\x15\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x00(\x00\x14\x00\x00\x04logs\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x18\x00(\x00\x1e\x00\x00\x03dst\x03src\x04rk.#\x01\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x18\x00(\x00(\x00\x00\x03dst\x03src\x04rk.#\x01\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x10\x002\x00\x0a\x00\x00\x04jobs\x15\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00!\x002\x00\x14\x00\x00\x04jobs\x09amq.topic\x06jobs.*\x01\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x002\x00\x1e\x00\x00\x04jobs\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x002\x00(\x00\x00\x04jobs\x05\xce",
    b"\x01\x00\x01\x00\x00\x00\x0b\x00<\x00\x0a\x00\x00\x00\x00\x00\xfa\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x17\x00<\x00\x14\x00\x00\x04jobs\x06ctag-1\x05\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x00<\x00\x1e\x06ctag-1\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x17\x00<\x00(\x00\x00\x0aamq.direct\x04jobs\x01\xce",
    b"\x01\x00\x01\x00\x00\x00$\x00<\x00<\x06ctag-1\x00\x00\x00\x00\x00\x00\x00*\x01\x0aamq.direct\x04jobs\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x00<\x00F\x00\x00\x04jobs\x01\xce",
    b"\x01\x00\x01\x00\x00\x00!\x00<\x00G\x00\x00\x00\x00\x00\x00\x00*\x01\x0aamq.direct\x04jobs\x00\x00\x00\x07\xce",
    b"\x01\x00\x01\x00\x00\x00\x0d\x00<\x00P\x00\x00\x00\x00\x00\x00\x00*\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x0d\x00<\x00Z\x00\x00\x00\x00\x00\x00\x00*\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00<\x00d\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00<\x00n\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x0d\x00<\x00x\x00\x00\x00\x00\x00\x00\x00*\x01\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00U\x00\x0a\x01\xce",
];
/// pika's encoding of `bit_methods(0b01010)`, in the same order.
const PIKA_BITS_ODD: [&[u8]; 25] = [
    b"\x01\x00\x01\x00\x00\x00\x0c\x00\x0a\x00(\x05/prod\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00\x14\x00\x14\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00\x14\x00\x15\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0b\x00\x1e\x00\x0a\x05/data\x0a\xce",
    b"\x01\x00\x01\x00\x00\x00\x16\x00(\x00\x0a\x00\x00\x04logs\x05topic\x0a\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x00(\x00\x14\x00\x00\x04logs\x02\xce",
    b"\x01\x00\x01\x00\x00\x00\x18\x00(\x00\x1e\x00\x00\x03dst\x03src\x04rk.#\x00\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x18\x00(\x00(\x00\x00\x03dst\x03src\x04rk.#\x00\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x10\x002\x00\x0a\x00\x00\x04jobs\x0a\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00!\x002\x00\x14\x00\x00\x04jobs\x09amq.topic\x06jobs.*\x00\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x002\x00\x1e\x00\x00\x04jobs\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x002\x00(\x00\x00\x04jobs\x02\xce",
    b"\x01\x00\x01\x00\x00\x00\x0b\x00<\x00\x0a\x00\x00\x00\x00\x00\xfa\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x17\x00<\x00\x14\x00\x00\x04jobs\x06ctag-1\x0a\x00\x00\x00\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x00<\x00\x1e\x06ctag-1\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x17\x00<\x00(\x00\x00\x0aamq.direct\x04jobs\x02\xce",
    b"\x01\x00\x01\x00\x00\x00$\x00<\x00<\x06ctag-1\x00\x00\x00\x00\x00\x00\x00*\x00\x0aamq.direct\x04jobs\xce",
    b"\x01\x00\x01\x00\x00\x00\x0c\x00<\x00F\x00\x00\x04jobs\x00\xce",
    b"\x01\x00\x01\x00\x00\x00!\x00<\x00G\x00\x00\x00\x00\x00\x00\x00*\x00\x0aamq.direct\x04jobs\x00\x00\x00\x07\xce",
    b"\x01\x00\x01\x00\x00\x00\x0d\x00<\x00P\x00\x00\x00\x00\x00\x00\x00*\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0d\x00<\x00Z\x00\x00\x00\x00\x00\x00\x00*\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00<\x00d\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00<\x00n\x00\xce",
    b"\x01\x00\x01\x00\x00\x00\x0d\x00<\x00x\x00\x00\x00\x00\x00\x00\x00*\x02\xce",
    b"\x01\x00\x01\x00\x00\x00\x05\x00U\x00\x0a\x00\xce",
];

/// The values behind `PIKA_BITS_*`.
fn bit_methods(mask: u32) -> Vec<Method> {
    let b = |i: u32| mask & (1 << i) != 0;
    let e = FieldTable::new;
    vec![
        ConnectionOpen {
            virtual_host: s("/prod"),
            capabilities: s(""),
            insist: b(0),
        }
        .into(),
        ChannelFlow { active: b(0) }.into(),
        ChannelFlowOk { active: b(0) }.into(),
        AccessRequest {
            realm: s("/data"),
            exclusive: b(0),
            passive: b(1),
            active: b(2),
            write: b(3),
            read: b(4),
        }
        .into(),
        ExchangeDeclare {
            ticket: 0,
            exchange: s("logs"),
            kind: s("topic"),
            passive: b(0),
            durable: b(1),
            auto_delete: b(2),
            internal: b(3),
            nowait: b(4),
            arguments: e(),
        }
        .into(),
        ExchangeDelete {
            ticket: 0,
            exchange: s("logs"),
            if_unused: b(0),
            nowait: b(1),
        }
        .into(),
        ExchangeBind {
            ticket: 0,
            destination: s("dst"),
            source: s("src"),
            routing_key: s("rk.#"),
            nowait: b(0),
            arguments: e(),
        }
        .into(),
        ExchangeUnbind {
            ticket: 0,
            destination: s("dst"),
            source: s("src"),
            routing_key: s("rk.#"),
            nowait: b(0),
            arguments: e(),
        }
        .into(),
        QueueDeclare {
            ticket: 0,
            queue: s("jobs"),
            passive: b(0),
            durable: b(1),
            exclusive: b(2),
            auto_delete: b(3),
            nowait: b(4),
            arguments: e(),
        }
        .into(),
        QueueBind {
            ticket: 0,
            queue: s("jobs"),
            exchange: s("amq.topic"),
            routing_key: s("jobs.*"),
            nowait: b(0),
            arguments: e(),
        }
        .into(),
        QueuePurge {
            ticket: 0,
            queue: s("jobs"),
            nowait: b(0),
        }
        .into(),
        QueueDelete {
            ticket: 0,
            queue: s("jobs"),
            if_unused: b(0),
            if_empty: b(1),
            nowait: b(2),
        }
        .into(),
        BasicQos {
            prefetch_size: 0,
            prefetch_count: 250,
            global: b(0),
        }
        .into(),
        BasicConsume {
            ticket: 0,
            queue: s("jobs"),
            consumer_tag: s("ctag-1"),
            no_local: b(0),
            no_ack: b(1),
            exclusive: b(2),
            nowait: b(3),
            arguments: e(),
        }
        .into(),
        BasicCancel {
            consumer_tag: s("ctag-1"),
            nowait: b(0),
        }
        .into(),
        BasicPublish {
            ticket: 0,
            exchange: s("amq.direct"),
            routing_key: s("jobs"),
            mandatory: b(0),
            immediate: b(1),
        }
        .into(),
        BasicDeliver {
            consumer_tag: s("ctag-1"),
            delivery_tag: 42,
            redelivered: b(0),
            exchange: s("amq.direct"),
            routing_key: s("jobs"),
        }
        .into(),
        BasicGet {
            ticket: 0,
            queue: s("jobs"),
            no_ack: b(0),
        }
        .into(),
        BasicGetOk {
            delivery_tag: 42,
            redelivered: b(0),
            exchange: s("amq.direct"),
            routing_key: s("jobs"),
            message_count: 7,
        }
        .into(),
        BasicAck {
            delivery_tag: 42,
            multiple: b(0),
        }
        .into(),
        BasicReject {
            delivery_tag: 42,
            requeue: b(0),
        }
        .into(),
        BasicRecoverAsync { requeue: b(0) }.into(),
        BasicRecover { requeue: b(0) }.into(),
        BasicNack {
            delivery_tag: 42,
            multiple: b(0),
            requeue: b(1),
        }
        .into(),
        ConfirmSelect { nowait: b(0) }.into(),
    ]
}

#[test]
fn golden_pika_bit_packing() {
    // every method with bit arguments is in the golden lists
    let with_bits: BTreeSet<&str> = realistic_methods(0b11111)
        .iter()
        .filter(|m| format!("{m:?}").contains(": true"))
        .map(Method::name)
        .collect();
    for (mask, golden) in [
        (0b11111, PIKA_BITS_ALL),
        (0b10101, PIKA_BITS_EVEN),
        (0b01010, PIKA_BITS_ODD),
    ] {
        let methods = bit_methods(mask);
        let names: BTreeSet<&str> = methods.iter().map(Method::name).collect();
        assert_eq!(names, with_bits);
        assert_eq!(methods.len(), golden.len());
        for (expected, bytes) in methods.into_iter().zip(golden) {
            let name = expected.name();
            assert_eq!(
                parse_one(bytes, FRAME_MIN_SIZE).unwrap(),
                Frame::Method(1, expected.clone()),
                "{name} {mask:05b}"
            );
            let mut out = BytesMut::new();
            write_method(&mut out, 1, &expected);
            assert_eq!(&out[..], bytes, "{name} {mask:05b}");
        }
    }
}

#[test]
fn golden_bit_octets_by_hand() {
    // queue.declare durable + auto-delete: bits 1 and 3 of one octet
    let m: Method = QueueDeclare {
        queue: s("q"),
        durable: true,
        auto_delete: true,
        ..Default::default()
    }
    .into();
    assert_eq!(
        &encode_method(&m)[..],
        b"\x00\x32\x00\x0a\x00\x00\x01q\x0a\x00\x00\x00\x00"
    );
    // basic.nack multiple + requeue share one octet
    let m: Method = BasicNack {
        delivery_tag: 5,
        multiple: true,
        requeue: true,
    }
    .into();
    assert_eq!(
        &encode_method(&m)[..],
        b"\x00\x3c\x00\x78\x00\x00\x00\x00\x00\x00\x00\x05\x03"
    );
    // basic.deliver: a bit between a longlong and a shortstr takes its own octet
    let m: Method = BasicDeliver {
        consumer_tag: s("c"),
        delivery_tag: 1,
        redelivered: true,
        exchange: s("e"),
        routing_key: s("r"),
    }
    .into();
    assert_eq!(
        &encode_method(&m)[..],
        b"\x00\x3c\x00\x3c\x01c\x00\x00\x00\x00\x00\x00\x00\x01\x01\x01e\x01r"
    );
    // a method with no arguments is just the ids
    assert_eq!(&encode_method(&TxCommit {}.into())[..], b"\x00\x5a\x00\x14");
}

fn pika_client_properties() -> FieldTable {
    use FieldValue::*;
    table(vec![
        ("product", LongStr(s("Pika Python Client Library"))),
        ("platform", LongStr(s("Python 3.11.7"))),
        (
            "capabilities",
            Table(table(vec![
                ("authentication_failure_close", Bool(true)),
                ("basic.nack", Bool(true)),
                ("connection.blocked", Bool(true)),
                ("consumer_cancel_notify", Bool(true)),
                ("exchange_exchange_bindings", Bool(true)),
                ("publisher_confirms", Bool(true)),
            ])),
        ),
        ("information", LongStr(s("See https://pika.rtfd.org"))),
        ("version", LongStr(s("1.4.4"))),
    ])
}

fn pika_properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(s("application/json")),
        content_encoding: Some(s("utf-8")),
        headers: Some(table(vec![
            ("retries", FieldValue::I32(3)),
            ("origin", FieldValue::LongStr(s("eu-west"))),
            ("trace", FieldValue::Bool(true)),
        ])),
        delivery_mode: Some(2),
        priority: Some(5),
        correlation_id: Some(s("c-42")),
        reply_to: Some(s("amq.rabbitmq.reply-to")),
        expiration: Some(s("30000")),
        message_id: Some(s("m-0001")),
        timestamp: Some(1_700_000_000),
        kind: Some(s("order.created")),
        user_id: Some(s("guest")),
        app_id: Some(s("shop")),
        cluster_id: None,
    }
}

/// The frames pika sent, in order, with the values they must decode to.
fn pika_session() -> Vec<(&'static [u8], Frame)> {
    vec![
        (
            PIKA_START_OK,
            Frame::Method(
                0,
                ConnectionStartOk {
                    client_properties: pika_client_properties(),
                    mechanism: s("PLAIN"),
                    response: Bytes::from_static(b"\0guest\0guest"),
                    locale: s("en_US"),
                }
                .into(),
            ),
        ),
        (
            PIKA_TUNE_OK,
            Frame::Method(
                0,
                ConnectionTuneOk {
                    channel_max: 2047,
                    frame_max: 131_072,
                    heartbeat: 60,
                }
                .into(),
            ),
        ),
        (
            PIKA_OPEN,
            Frame::Method(
                0,
                ConnectionOpen {
                    virtual_host: s("/"),
                    capabilities: s(""),
                    insist: true,
                }
                .into(),
            ),
        ),
        (
            PIKA_CHANNEL_OPEN,
            Frame::Method(1, ChannelOpen::default().into()),
        ),
        (
            PIKA_QUEUE_DECLARE,
            Frame::Method(
                1,
                QueueDeclare {
                    ticket: 0,
                    queue: s("orders"),
                    durable: true,
                    arguments: table(vec![
                        ("x-message-ttl", FieldValue::I32(60_000)),
                        ("x-max-length", FieldValue::I32(1000)),
                        ("x-queue-type", FieldValue::LongStr(s("classic"))),
                        ("x-dead-letter-exchange", FieldValue::LongStr(s("dlx"))),
                        ("x-single-active-consumer", FieldValue::Bool(true)),
                    ]),
                    ..Default::default()
                }
                .into(),
            ),
        ),
        (
            PIKA_PUBLISH,
            Frame::Method(
                1,
                BasicPublish {
                    ticket: 0,
                    exchange: s("shop"),
                    routing_key: s("order.created"),
                    mandatory: true,
                    immediate: false,
                }
                .into(),
            ),
        ),
        (
            PIKA_HEADER,
            Frame::Header(
                1,
                Box::new(ContentHeader {
                    class_id: 60,
                    body_size: 9,
                    properties: pika_properties(),
                }),
            ),
        ),
        (
            PIKA_BODY,
            Frame::Body(1, Bytes::from_static(b"{\"id\": 1}")),
        ),
    ]
}

#[test]
fn golden_pika_frames_decode_and_reencode() {
    for (bytes, expected) in pika_session() {
        // pika negotiated frame_max 131072, but every one of these frames
        // also fits the pre-tune limit
        let f = parse_one(bytes, FRAME_MIN_SIZE).unwrap();
        assert_eq!(f, expected);
        let mut out = BytesMut::new();
        f.encode(&mut out);
        assert_eq!(&out[..], bytes, "{expected:?}");
    }
    // the whole capture as one stream
    let stream: Vec<u8> = pika_session()
        .iter()
        .flat_map(|(b, _)| b.to_vec())
        .collect();
    let expected: Vec<Frame> = pika_session().into_iter().map(|(_, f)| f).collect();
    assert_eq!(parse_all(&stream, 131_072), expected);
}

#[test]
fn golden_pika_start_ok_accessors() {
    let Frame::Method(0, Method::ConnectionStartOk(m)) = parse_one(PIKA_START_OK, 4096).unwrap()
    else {
        panic!("not a start-ok");
    };
    let Some(FieldValue::Table(caps)) = m.client_properties.get("capabilities") else {
        panic!("no capabilities");
    };
    assert_eq!(
        caps.get("publisher_confirms"),
        Some(&FieldValue::Bool(true))
    );
    assert_eq!(caps.len(), 6);
    assert_eq!(
        m.client_properties
            .get("product")
            .and_then(FieldValue::as_bytes),
        Some(&s("Pika Python Client Library"))
    );
}

#[test]
fn golden_pika_table() {
    use FieldValue::*;
    let b = bytes::Bytes::from_static(PIKA_TABLE);
    let mut r = Reader::new(&b);
    let t = FieldTable::decode(&mut r).unwrap();
    assert_eq!(r.remaining(), 0);
    assert_eq!(
        t,
        table(vec![
            ("bool", Bool(false)),
            ("int", I32(-7)),
            ("long", I64(1 << 40)),
            ("dec", Decimal(2, 314)),
            ("ts", Timestamp(1_700_000_000)),
            ("str", LongStr(s("héllo"))),
            ("bin", Bytes(bytes::Bytes::from_static(&[0, 255]))),
            ("list", Array(vec![I32(1), LongStr(s("two")), Void])),
            ("nested", Table(table(vec![("k", LongStr(s("v")))]))),
            ("void", Void),
        ])
    );
    assert_eq!(t.get("long").and_then(FieldValue::as_i64), Some(1 << 40));
    let mut out = BytesMut::new();
    t.encode(&mut out);
    assert_eq!(&out[..], PIKA_TABLE);
}

#[test]
fn golden_table_aliases_decode_to_one_variant() {
    // spec tags 'U' (short-int) and 'L' (long-long-int) decode like
    // RabbitMQ's 's' and 'l'; re-encoding uses RabbitMQ's tags
    let b =
        Bytes::from_static(b"\x00\x00\x00\x10\x01aU\xff\xfe\x01bL\x00\x00\x00\x00\x00\x00\x00\x09");
    let t = FieldTable::decode(&mut Reader::new(&b)).unwrap();
    assert_eq!(
        t,
        table(vec![("a", FieldValue::I16(-2)), ("b", FieldValue::I64(9))])
    );
    let mut out = BytesMut::new();
    t.encode(&mut out);
    assert_eq!(
        &out[..],
        b"\x00\x00\x00\x10\x01as\xff\xfe\x01bl\x00\x00\x00\x00\x00\x00\x00\x09"
    );
}

#[test]
fn golden_heartbeat_and_protocol_header() {
    let mut out = BytesMut::new();
    write_heartbeat(&mut out);
    assert_eq!(&out[..], b"\x08\x00\x00\x00\x00\x00\x00\xce");
    assert_eq!(
        parse_one(&out, FRAME_MIN_SIZE).unwrap(),
        Frame::Heartbeat(0)
    );
    let mut out2 = BytesMut::new();
    Frame::Heartbeat(0).encode(&mut out2);
    assert_eq!(out, out2);

    assert_eq!(PROTOCOL_HEADER, b"AMQP\x00\x00\x09\x01");
    assert_eq!(
        parse_protocol_header(PROTOCOL_HEADER),
        Some(ProtocolHeader::Ok)
    );
    assert_eq!(
        parse_protocol_header(b"AMQP\x00\x00\x09\x01extra"),
        Some(ProtocolHeader::Ok)
    );
    for n in 0..8 {
        assert_eq!(parse_protocol_header(&PROTOCOL_HEADER[..n]), None, "{n}");
    }
    for bad in [
        &b"AMQP\x00\x00\x09\x00"[..],
        b"AMQP\x01\x01\x00\x09",
        b"AMQP\x00\x00\x08\x00",
        b"GET / HTTP/1.1\r\n",
        b"\x01\x00\x00",
        b"X",
    ] {
        assert_eq!(
            parse_protocol_header(bad),
            Some(ProtocolHeader::Mismatch),
            "{bad:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// errors, each with its reply code

/// A valid queue.declare payload with `arguments` spliced in raw.
fn queue_declare_with_raw_arguments(args: &[u8]) -> Vec<u8> {
    let mut p = b"\x00\x32\x00\x0a\x00\x00\x04jobs\x02".to_vec();
    p.extend_from_slice(args);
    p
}

/// A table nested `depth` levels deep (outermost = 1), encoded; built
/// without recursion so that very deep inputs are cheap to make.
fn nested_table_bytes(depth: usize) -> Vec<u8> {
    // level k (counting the empty innermost table as 0) is 4 + 7k bytes:
    // length, then one entry: key "n", tag 'F', level k - 1
    let mut out = Vec::with_capacity(7 * depth + 4);
    for k in (1..depth).rev() {
        out.extend_from_slice(&(7 * k as u32).to_be_bytes());
        out.extend_from_slice(b"\x01nF");
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

#[test]
fn errors_501_frame_error() {
    let hb = b"\x08\x00\x00\x00\x00\x00\x00\xce";
    let mut bad_end = hb.to_vec();
    bad_end[7] = 0;
    assert_eq!(frame_err(&bad_end, 0).code, ReplyCode::FRAME_ERROR);
    // the end octet is checked on every type
    let mut m = PIKA_PUBLISH.to_vec();
    *m.last_mut().unwrap() = 0xCD;
    assert_eq!(frame_err(&m, 0).code, 501);

    // over the negotiated frame_max: rejected from the 7-byte header alone,
    // before any payload has arrived
    let fm = 131_072u32;
    let mut big = vec![3, 0, 1];
    big.extend_from_slice(&(fm - 7).to_be_bytes());
    assert_eq!(frame_err(&big, fm).code, 501);
    let mut max = vec![3, 0, 1];
    max.extend_from_slice(&(fm - 8).to_be_bytes());
    assert_eq!(
        parse_frame(&mut BytesMut::from(&max[..]), fm).unwrap(),
        None
    );
    let mut huge = vec![1, 0, 0, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(frame_err(&huge, fm).code, 501);
    huge[0] = 8;
    assert_eq!(frame_err(&huge, u32::MAX).code, 501);

    // over the 4096-byte limit in force before connection.tune-ok
    let body = vec![b'x'; FRAME_MIN_SIZE as usize - 8];
    let ok = raw_frame(3, 1, &body);
    assert_eq!(ok.len(), FRAME_MIN_SIZE as usize);
    assert_eq!(
        parse_one(&ok, FRAME_MIN_SIZE).unwrap(),
        Frame::Body(1, Bytes::from(body.clone()))
    );
    let mut body = body;
    body.push(b'x');
    let over = raw_frame(3, 1, &body);
    let e = frame_err(&over, FRAME_MIN_SIZE);
    assert_eq!(e.code, 501);
    assert!(e.is_hard());
    assert!(e.text.contains("frame_max"), "{}", e.text);
    // header only, over the limit: same answer
    assert_eq!(frame_err(&over[..7], FRAME_MIN_SIZE).code, 501);

    // unknown frame types, also from the header alone
    for kind in [0u8, 4, 5, 7, 9, 65, 255] {
        let f = raw_frame(kind, 0, b"");
        assert_eq!(frame_err(&f, 0).code, 501, "type {kind}");
        assert_eq!(frame_err(&f[..7], 0).code, 501, "type {kind}");
    }
    // 'A' of a protocol header arriving in frame state
    assert_eq!(frame_err(b"AMQP\x00\x00\x09\x01", 0).code, 501);

    // heartbeat with a payload
    let e = frame_err(&raw_frame(8, 0, b"\x00"), 0);
    assert_eq!(e.code, 501);

    // content header for a class other than basic
    for class in [0u16, 10, 50, 61, 85, 90] {
        let mut p = class.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        let e = frame_err(&raw_frame(2, 1, &p), 0);
        assert_eq!(e.code, 501, "class {class}");
        assert_eq!(
            ContentHeader::decode(&Bytes::from(p)).unwrap_err().code,
            ReplyCode::FRAME_ERROR
        );
    }
}

#[test]
fn errors_502_syntax_error() {
    // truncated arguments: every proper prefix of every realistic method
    // (past the 4 id bytes) is a syntax error carrying the method's ids
    for m in realistic_methods(0b10101) {
        let p = encode_method(&m);
        for cut in 4..p.len() {
            let e = method_err(&p[..cut]);
            assert_eq!(e.code, ReplyCode::SYNTAX_ERROR, "{} cut at {cut}", m.name());
            assert_eq!((e.class_id, e.method_id), m.ids());
        }
        // trailing bytes after the arguments
        let mut long = p.to_vec();
        long.push(0);
        let e = method_err(&long);
        assert_eq!(e.code, 502, "{}", m.name());
        assert_eq!((e.class_id, e.method_id), m.ids());
        // the same errors arrive through the frame parser
        let e = frame_err(&raw_frame(1, 3, &long), 0);
        assert_eq!(
            (e.code, e.class_id, e.method_id),
            (502, m.ids().0, m.ids().1)
        );
    }
    // fewer than the 4 id bytes
    for p in [&b""[..], b"\x00", b"\x00\x3c", b"\x00\x3c\x00"] {
        assert_eq!(method_err(p).code, 502, "{p:?}");
    }

    // bad field type in a table
    let e = method_err(&queue_declare_with_raw_arguments(b"\x00\x00\x00\x03\x01aZ"));
    assert_eq!((e.code, e.class_id, e.method_id), (502, 50, 10));
    assert!(e.is_hard());
    for tag in (0u8..=255).filter(|t| !b"tbBsUuIilLfdDSxATFV".contains(t)) {
        let raw = [0, 0, 0, 3, 1, b'a', tag];
        let e = method_err(&queue_declare_with_raw_arguments(&raw));
        assert_eq!(e.code, 502, "tag {tag}");
    }

    // table too deep: MAX_DEPTH levels decode, one more does not; the same
    // through arrays
    let ok = queue_declare_with_raw_arguments(&nested_table_bytes(MAX_DEPTH));
    assert!(Method::decode(&Bytes::from(ok)).is_ok());
    let deep = queue_declare_with_raw_arguments(&nested_table_bytes(MAX_DEPTH + 1));
    let e = method_err(&deep);
    assert_eq!((e.code, e.class_id, e.method_id), (502, 50, 10));
    let mut v = FieldValue::Void;
    for _ in 0..MAX_DEPTH {
        v = FieldValue::Array(vec![v]);
    }
    let mut out = BytesMut::new();
    table(vec![("a", v)]).encode(&mut out);
    assert_eq!(
        method_err(&queue_declare_with_raw_arguments(&out)).code,
        502
    );
    // a very deep table (far past the limit) is refused without recursing
    let deep = queue_declare_with_raw_arguments(&nested_table_bytes(10_000));
    assert_eq!(method_err(&deep).code, 502);

    // table (and array, and longstr) length beyond the frame
    for raw in [
        &b"\x00\x00\x00\x20\x01at\x01"[..],
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x09\x01aA\x00\x00\x00\x10\x00",
        b"\x00\x00\x00\x09\x01aS\x00\x00\x01\x00\x00",
        b"\x00\x00\x00\x0a\x01aF\x00\x00\x00\x04\x01b",
        b"\x00\x00\x00\x03\x05ab",
    ] {
        let e = method_err(&queue_declare_with_raw_arguments(raw));
        assert_eq!((e.code, e.class_id, e.method_id), (502, 50, 10), "{raw:?}");
    }
    // shortstr length beyond the frame
    assert_eq!(method_err(b"\x00\x14\x00\x0a\x05ab").code, 502);
    // longstr length beyond the frame
    assert_eq!(method_err(b"\x00\x0a\x00\x15\xff\xff\xff\xffab").code, 502);

    // content headers: truncated, trailing, bad header table, endless flag words
    let mut out = BytesMut::new();
    ContentHeader {
        class_id: 60,
        body_size: 3,
        properties: full_properties(),
    }
    .encode(&mut out);
    for cut in 0..out.len() {
        let e = ContentHeader::decode(&Bytes::copy_from_slice(&out[..cut])).unwrap_err();
        assert_eq!(e.code, 502, "cut at {cut}");
    }
    let mut long = out.to_vec();
    long.push(1);
    assert_eq!(frame_err(&raw_frame(2, 1, &long), 0).code, 502);
    let bad_headers =
        b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x20\x00\x00\x00\x00\x03\x01aZ";
    assert_eq!(frame_err(&raw_frame(2, 1, bad_headers), 0).code, 502);
    let mut words = b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01".to_vec();
    for _ in 0..100 {
        words.extend_from_slice(&[0, 1]);
    }
    words.extend_from_slice(&[0, 0]);
    assert_eq!(frame_err(&raw_frame(2, 1, &words), 0).code, 502);
}

#[test]
fn errors_540_not_implemented() {
    // unknown class
    for class in [0u16, 1, 11, 70, 80, 100, 65535] {
        let p = [(class >> 8) as u8, class as u8, 0, 10];
        let e = method_err(&p);
        assert_eq!(e.code, ReplyCode::NOT_IMPLEMENTED, "class {class}");
        assert_eq!((e.class_id, e.method_id), (class, 10));
        assert!(e.is_hard());
    }
    // unknown method of a known class
    for (class, method) in [
        (10u16, 0u16),
        (10, 12),
        (10, 99),
        (40, 50),
        (50, 60),
        (60, 0),
        (60, 121),
        (85, 20),
        (90, 40),
    ] {
        let mut p = class.to_be_bytes().to_vec();
        p.extend_from_slice(&method.to_be_bytes());
        let e = method_err(&p);
        assert_eq!(e.code, 540, "{class}.{method}");
        assert_eq!((e.class_id, e.method_id), (class, method));
        // through the frame parser too, with arguments that would be garbage
        p.extend_from_slice(b"\xff\xff");
        let e = frame_err(&raw_frame(1, 1, &p), 0);
        assert_eq!((e.code, e.class_id, e.method_id), (540, class, method));
    }
    let e = method_err(b"\x00\x63\x00\x0a");
    assert!(
        e.reply_text().starts_with("NOT_IMPLEMENTED - "),
        "{}",
        e.reply_text()
    );
}

// ---------------------------------------------------------------------------
// partial input

/// A stream of many frames: pika's handshake, methods on several channels, a
/// content header, a body split over several frames, heartbeats.
fn mixed_stream() -> (Vec<u8>, Vec<Frame>) {
    let mut bytes: Vec<u8> = pika_session()
        .iter()
        .flat_map(|(b, _)| b.to_vec())
        .collect();
    let mut out = Outbox::new();
    out.method(2, &realistic("queue.declare", 0b00110)); // every field type
    write_heartbeat(out.buf());
    out.method(2, &BasicPublish::default().into());
    let body: Bytes = (0..2500u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut header = BytesMut::new();
    ContentHeader {
        class_id: 60,
        body_size: body.len() as u64,
        properties: full_properties(),
    }
    .encode(&mut header);
    out.content(2, &header.freeze(), &body, 1024);
    out.deliver(3, b"ctag", 7, true, b"amq.direct", b"rk");
    out.method(3, &ChannelClose::default().into());
    write_heartbeat(out.buf());
    bytes.extend(out.take_all());
    let frames = parse_all(&bytes, FRAME_MIN_SIZE);
    (bytes, frames)
}

/// Feed `chunks` one after the other, parsing as far as possible after
/// each; a `None` must leave the buffer exactly as it was.
fn parse_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.clone();
            match parse_frame(&mut buf, FRAME_MIN_SIZE).unwrap() {
                Some(f) => frames.push(f),
                None => {
                    assert_eq!(buf, before, "Ok(None) consumed input");
                    break;
                }
            }
        }
    }
    assert!(buf.is_empty());
    frames
}

#[test]
fn mixed_stream_has_every_frame_kind() {
    let (bytes, frames) = mixed_stream();
    assert_eq!(frames.len(), 18);
    assert!(bytes.len() > 4000, "{}", bytes.len());
    let count = |p: fn(&Frame) -> bool| frames.iter().filter(|f| p(f)).count();
    assert_eq!(count(|f| matches!(f, Frame::Heartbeat(0))), 2);
    assert_eq!(count(|f| matches!(f, Frame::Header(..))), 2);
    assert_eq!(count(|f| matches!(f, Frame::Body(..))), 4);
    assert_eq!(count(|f| matches!(f, Frame::Method(..))), 10);
    assert!(matches!(
        &frames[8],
        Frame::Method(2, Method::QueueDeclare(_))
    ));
    assert!(matches!(&frames[15], Frame::Method(3, Method::BasicDeliver(d)) if d.redelivered));
}

#[test]
fn split_at_every_point_parses_the_same() {
    let (bytes, whole) = mixed_stream();
    for at in 0..=bytes.len() {
        let (a, b) = bytes.split_at(at);
        assert_eq!(parse_chunks([a, b]), whole, "split at {at}");
    }
}

#[test]
fn random_multi_chunk_splits_parse_the_same() {
    let (bytes, whole) = mixed_stream();
    // one byte at a time
    assert_eq!(parse_chunks(bytes.chunks(1)), whole);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..400 {
        let max_chunk = [2, 7, 64, 500, 3000][round % 5];
        let mut chunks = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(max_chunk)).min(rest.len());
            let (a, b) = rest.split_at(n);
            chunks.push(a);
            rest = b;
        }
        assert_eq!(parse_chunks(chunks), whole, "round {round}");
    }
}

#[test]
fn partial_frame_is_none_and_consumes_nothing() {
    let (bytes, _) = mixed_stream();
    let mut buf = BytesMut::from(&bytes[..]);
    let mut offsets = vec![0];
    while parse_raw_frame(&mut buf, 0).unwrap().is_some() {
        offsets.push(bytes.len() - buf.len());
    }
    for w in offsets.windows(2) {
        let frame = &bytes[w[0]..w[1]];
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(parse_raw_frame(&mut buf, 0).unwrap(), None);
            assert_eq!(&buf[..], &frame[..cut]);
            assert_eq!(parse_frame(&mut buf, FRAME_MIN_SIZE).unwrap(), None);
            assert_eq!(&buf[..], &frame[..cut]);
        }
        let mut buf = BytesMut::from(frame);
        assert!(parse_raw_frame(&mut buf, 0).unwrap().is_some());
        assert!(buf.is_empty());
    }
}

/// Regression (fuzz/roundtrip, `crash-huge-frame-size-oom-regression`):
/// with frame_max 0 (no limit), a 7-byte header announcing a 3.5 GB frame
/// made `parse_raw_frame` reserve the whole frame up front.
#[test]
fn regression_partial_huge_frame_does_not_reserve_its_size() {
    let input = b"\x01\x25\x00\xd2\x01\x00\xd2\x00\x00\x05\x00\xce";
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(parse_raw_frame(&mut buf, 0).unwrap(), None);
    assert_eq!(&buf[..], input);
    assert!(
        buf.capacity() < 1 << 20,
        "reserved {} bytes",
        buf.capacity()
    );
    for size in [u32::MAX, 1 << 30, 200_000] {
        let mut header = vec![3, 0, 1];
        header.extend_from_slice(&size.to_be_bytes());
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(parse_raw_frame(&mut buf, 0).unwrap(), None);
        assert!(
            buf.capacity() < 1 << 20,
            "reserved {} bytes",
            buf.capacity()
        );
    }
    // the same frame size under a frame_max is refused outright
    assert_eq!(frame_err(input, 131_072).code, 501);
    // and a big frame within the limit still parses when its bytes arrive
    let body = pattern(1_000_000);
    let frame = raw_frame(3, 1, &body);
    let mut buf = BytesMut::new();
    let mut got = None;
    for chunk in frame.chunks(65_536) {
        buf.extend_from_slice(chunk);
        if let Some(f) = parse_frame(&mut buf, 0).unwrap() {
            got = Some(f);
        }
    }
    assert_eq!(got, Some(Frame::Body(1, body)));
}

/// Regression (fuzz/method, `crash-nan-float-in-table-regression`): a
/// NaN float in a method's table made the method round-trip check fail,
/// since NaN != NaN; the check compares like the other targets now.
#[test]
fn regression_nan_in_method_table() {
    for value in [FieldValue::F32(f32::NAN), FieldValue::F64(f64::NAN)] {
        let m: Method = QueueDeclare {
            queue: s("q"),
            arguments: table(vec![("x", value)]),
            ..Default::default()
        }
        .into();
        let payload = encode_method(&m);
        warren::codec::fuzzing::method(&payload);
        warren::codec::fuzzing::frame(&raw_frame(1, 1, &payload));
        warren::codec::fuzzing::roundtrip(&raw_frame(1, 1, &payload));
        // the NaN's bits survive the round trip
        assert_eq!(encode_method(&Method::decode(&payload).unwrap()), payload);
    }
}

// ---------------------------------------------------------------------------
// outbox

fn header_payload(body_size: usize) -> Bytes {
    let mut out = BytesMut::new();
    ContentHeader {
        class_id: 60,
        body_size: body_size as u64,
        properties: pika_properties(),
    }
    .encode(&mut out);
    out.freeze()
}

fn pattern(n: usize) -> Bytes {
    (0..n)
        .map(|i| (i * 7 % 256) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn slices(out: &Outbox) -> Vec<Vec<u8>> {
    let mut dst = [IoSlice::new(&[]); 64];
    let n = out.io_slices(&mut dst);
    dst[..n].iter().map(|s| s.to_vec()).collect()
}

#[test]
fn outbox_content_splits_by_frame_max() {
    for (len, frame_max, expect) in [
        (0usize, 4096u32, vec![]),
        (1, 4096, vec![1]),
        (4088, 4096, vec![4088]),
        (4089, 4096, vec![4088, 1]),
        (10_000, 4096, vec![4088, 4088, 1824]),
        (100_000, 0, vec![100_000]),
        (5, 9, vec![1, 1, 1, 1, 1]),
        (300_000, 131_072, vec![131_064, 131_064, 37_872]),
    ] {
        let body = pattern(len);
        let mut out = Outbox::new();
        out.content(5, &header_payload(len), &body, frame_max);
        let bytes = out.take_all();
        assert!(out.is_empty());
        // (frame_max below 4096 is only for exercising the split; the header
        // frame itself is larger)
        let frames = parse_all(
            &bytes,
            if frame_max >= FRAME_MIN_SIZE {
                frame_max
            } else {
                0
            },
        );
        let Frame::Header(5, h) = &frames[0] else {
            panic!("no header first");
        };
        assert_eq!(h.body_size, len as u64);
        assert_eq!(h.properties, pika_properties());
        let sizes: Vec<usize> = frames[1..]
            .iter()
            .map(|f| match f {
                Frame::Body(5, b) => b.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, expect, "{len} bytes, frame_max {frame_max}");
        let joined: Vec<u8> = frames[1..]
            .iter()
            .flat_map(|f| match f {
                Frame::Body(_, b) => b.to_vec(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(joined, &body[..]);
        // every frame fits frame_max, header and end octet included
        if frame_max != 0 {
            assert!(sizes.iter().all(|n| n + 8 <= frame_max as usize));
        }
    }
}

#[test]
fn outbox_queues_large_bodies_as_shared_chunks() {
    let big = pattern(50_000);
    let small = pattern(COPY_THRESHOLD - 1);
    let mut out = Outbox::new();
    out.method(1, &BasicDeliver::default().into());
    out.content(1, &header_payload(big.len()), &big, 131_072);
    out.deliver(1, b"c", 2, false, b"", b"q");
    out.content(1, &header_payload(small.len()), &small, 131_072);
    out.method(1, &BasicAck::default().into());
    let chunks = slices(&out);
    assert!(chunks.len() > 1, "{} slices", chunks.len());
    // the big body is one slice of its own, by reference: no copy
    let mut dst = [IoSlice::new(&[]); 16];
    let n = out.io_slices(&mut dst);
    assert!(dst[..n]
        .iter()
        .any(|s| s.as_ptr() == big.as_ptr() && s.len() == big.len()));
    // the small body was copied into the buffer
    assert!(!dst[..n].iter().any(|s| s.as_ptr() == small.as_ptr()));
    // the slices concatenated are the frames, in order
    let all: Vec<u8> = chunks.concat();
    assert_eq!(all.len(), out.len());
    let frames = parse_all(&all, 131_072);
    assert_eq!(frames.len(), 7);
    assert_eq!(frames[2], Frame::Body(1, big.clone()));
    assert_eq!(frames[5], Frame::Body(1, small.clone()));
    assert_eq!(
        frames[3],
        Frame::Method(
            1,
            BasicDeliver {
                consumer_tag: s("c"),
                delivery_tag: 2,
                redelivered: false,
                exchange: s(""),
                routing_key: s("q"),
            }
            .into()
        )
    );
    // a short iovec array is filled as far as it goes
    let mut two = [IoSlice::new(&[]); 2];
    assert_eq!(out.io_slices(&mut two), 2);
    assert_eq!(&two[0][..], &chunks[0][..]);
    assert_eq!(out.take_all(), all);
    let mut after = [IoSlice::new(&[]); 4];
    assert_eq!(out.io_slices(&mut after), 0);
}

#[test]
fn outbox_deliver_matches_the_method_encoding() {
    let mut a = Outbox::new();
    a.deliver(7, b"amq.ctag-1", u64::MAX, true, b"amq.topic", b"a.b.c");
    let mut b = Outbox::new();
    b.method(
        7,
        &BasicDeliver {
            consumer_tag: s("amq.ctag-1"),
            delivery_tag: u64::MAX,
            redelivered: true,
            exchange: s("amq.topic"),
            routing_key: s("a.b.c"),
        }
        .into(),
    );
    assert_eq!(a.take_all(), b.take_all());
}

#[test]
fn outbox_consume_partial_advances() {
    let mut rng = Rng(42);
    for round in 0..50 {
        let mut out = Outbox::new();
        out.method(1, &realistic_methods(0)[0]);
        out.content(1, &header_payload(9000), &pattern(9000), 4096);
        out.push_bytes(&pattern(3000));
        out.content(1, &header_payload(100), &pattern(100), 4096);
        out.content(2, &header_payload(70_000), &pattern(70_000), 0);
        write_heartbeat(out.buf());
        let expected = slices(&out).concat();
        assert_eq!(expected.len(), out.len());
        let mut done = 0;
        while !out.is_empty() {
            let step = match round % 3 {
                0 => 1 + rng.below(17),
                1 => 1 + rng.below(5000),
                // exactly to the end of the first slice, or past it
                _ => slices(&out)[0].len() + rng.below(3),
            };
            out.consume(step);
            done = (done + step).min(expected.len());
            assert_eq!(out.len(), expected.len() - done);
            assert_eq!(slices(&out).concat(), &expected[done..], "round {round}");
        }
        // consuming more than is there is harmless
        out.consume(10);
        assert!(out.is_empty());
        assert_eq!(slices(&out).len(), 0);
        // and the outbox is usable afterwards
        out.method(1, &TxSelect {}.into());
        assert_eq!(
            parse_all(&out.take_all(), 0),
            vec![Frame::Method(1, TxSelect {}.into())]
        );
    }
}

// ---------------------------------------------------------------------------
// fuzz corpora: replay, and the generator of the named seeds

/// A fuzz target's entry point.
type FuzzTarget = fn(&[u8]);

/// Every fuzz target's entry point, by its `fuzz/corpus/` directory name.
/// A corpus directory without an entry here fails `fuzz_corpora_replay`:
/// add the target's function when adding a target (the planned `session`
/// target goes here).
const FUZZ_TARGETS: &[(&str, FuzzTarget)] = &[
    ("frame", warren::codec::fuzzing::frame),
    ("method", warren::codec::fuzzing::method),
    ("table", warren::codec::fuzzing::table),
    ("properties", warren::codec::fuzzing::properties),
    ("roundtrip", warren::codec::fuzzing::roundtrip),
    ("session", warren::testing::fuzz_session),
    ("x509", warren::testing::fuzz_x509),
    ("tls", warren::testing::fuzz_tls),
    ("websocket", warren::websocket::fuzzing::fuzz_websocket),
    ("mqtt", warren::mqtt::codec::fuzzing::fuzz_mqtt),
    ("mqtt_session", warren::testing::fuzz_mqtt_session),
    ("stream_log", warren::testing::fuzz_stream_log),
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
}

#[test]
fn fuzz_corpora_replay() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus_root())
        .expect("fuzz/corpus exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut targets_seen = BTreeSet::new();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some(&(_, run)) = FUZZ_TARGETS.iter().find(|(n, _)| *n == name) else {
            panic!("fuzz/corpus/{name} has no entry in FUZZ_TARGETS (tests/codec.rs)");
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(
            files.len() >= 5,
            "fuzz/corpus/{name} has only {} seeds",
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let res = std::panic::catch_unwind(|| run(&data));
            assert!(res.is_ok(), "fuzz/corpus/{name}/{} fails", file.display());
        }
        targets_seen.insert(name);
    }
    for (name, _) in FUZZ_TARGETS {
        assert!(
            targets_seen.contains(*name),
            "no corpus for fuzz target {name}"
        );
    }
}

/// Frames from a stream of whole frames, as separate byte strings.
fn split_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    let mut at = 0;
    while parse_raw_frame(&mut buf, 0).unwrap().is_some() {
        let end = bytes.len() - buf.len();
        out.push(bytes[at..end].to_vec());
        at = end;
    }
    out
}

/// The named seed inputs of every fuzz target.
fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let pika_names = [
        "connection.start-ok",
        "connection.tune-ok",
        "connection.open",
        "channel.open",
        "queue.declare",
        "basic.publish",
        "content-header",
        "content-body",
    ];

    // method: payloads of every method, default and realistic, and pika's
    for m in Method::all_defaults() {
        seeds.push((
            "method",
            format!("default-{}", m.name()),
            encode_method(&m).to_vec(),
        ));
    }
    for m in realistic_methods(0b10101) {
        seeds.push(("method", m.name().to_string(), encode_method(&m).to_vec()));
    }
    for ((bytes, _), name) in pika_session().iter().zip(pika_names).take(6) {
        seeds.push((
            "method",
            format!("pika-{name}"),
            bytes[7..bytes.len() - 1].to_vec(),
        ));
    }

    // table: every type, real client tables, aliases, depth at the limit
    let enc = |t: &FieldTable| {
        let mut out = BytesMut::new();
        t.encode(&mut out);
        out.to_vec()
    };
    seeds.push(("table", "every-type".into(), enc(&every_type_table())));
    seeds.push(("table", "empty".into(), enc(&FieldTable::new())));
    seeds.push(("table", "queue-arguments".into(), enc(&queue_arguments())));
    seeds.push((
        "table",
        "server-properties".into(),
        enc(&server_properties()),
    ));
    seeds.push(("table", "pika-all-types".into(), PIKA_TABLE.to_vec()));
    seeds.push((
        "table",
        "pika-client-properties".into(),
        enc(&pika_client_properties()),
    ));
    seeds.push((
        "table",
        "aliases-U-L".into(),
        b"\x00\x00\x00\x10\x01aU\xff\xfe\x01bL\x00\x00\x00\x00\x00\x00\x00\x09".to_vec(),
    ));
    seeds.push((
        "table",
        "nested-at-max-depth".into(),
        nested_table_bytes(MAX_DEPTH),
    ));
    seeds.push((
        "table",
        "array-of-every-type".into(),
        enc(&table(vec![(
            "a",
            FieldValue::Array(every_type_table().0.into_iter().map(|(_, v)| v).collect()),
        )])),
    ));

    // properties: content header payloads with none, all, each property
    let header = |props: BasicProperties, body_size: u64| {
        let mut out = BytesMut::new();
        ContentHeader {
            class_id: 60,
            body_size,
            properties: props,
        }
        .encode(&mut out);
        out.to_vec()
    };
    let prop_names = [
        "content-type",
        "content-encoding",
        "headers",
        "delivery-mode",
        "priority",
        "correlation-id",
        "reply-to",
        "expiration",
        "message-id",
        "timestamp",
        "type",
        "user-id",
        "app-id",
        "cluster-id",
    ];
    seeds.push((
        "properties",
        "none".into(),
        header(BasicProperties::default(), 0),
    ));
    seeds.push((
        "properties",
        "all".into(),
        header(full_properties(), 1 << 20),
    ));
    seeds.push((
        "properties",
        "pika-publish".into(),
        header(pika_properties(), 9),
    ));
    for (i, name) in prop_names.iter().enumerate() {
        seeds.push((
            "properties",
            format!("only-{name}"),
            header(some_properties(1 << i), 5),
        ));
    }
    seeds.push((
        "properties",
        "persistent-text".into(),
        header(some_properties(0b1001), u64::MAX),
    ));
    seeds.push((
        "properties",
        "continuation-word".into(),
        b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x10\x01\x00\x00\x02".to_vec(),
    ));

    // frame and roundtrip: whole frames and streams
    let mut frames: Vec<(String, Vec<u8>)> = Vec::new();
    for m in realistic_methods(0b01011) {
        let mut out = BytesMut::new();
        write_method(&mut out, 1, &m);
        frames.push((format!("method-{}", m.name()), out.to_vec()));
    }
    for ((bytes, _), name) in pika_session().iter().zip(pika_names) {
        frames.push((format!("pika-{name}"), bytes.to_vec()));
    }
    frames.push((
        "pika-session".into(),
        pika_session()
            .iter()
            .flat_map(|(b, _)| b.to_vec())
            .collect(),
    ));
    let (mixed, _) = mixed_stream();
    for (i, f) in split_frames(&mixed).iter().enumerate().skip(8).take(4) {
        frames.push((format!("mixed-{i}"), f.clone()));
    }
    frames.push(("mixed-stream".into(), mixed));
    frames.push((
        "heartbeat".into(),
        b"\x08\x00\x00\x00\x00\x00\x00\xce".to_vec(),
    ));
    frames.push((
        "bad-frame-end".into(),
        b"\x08\x00\x00\x00\x00\x00\x00\x00".to_vec(),
    ));
    frames.push(("unknown-frame-type".into(), raw_frame(4, 0, b"")));
    frames.push(("heartbeat-with-payload".into(), raw_frame(8, 0, b"x")));
    frames.push((
        "header-wrong-class".into(),
        raw_frame(
            2,
            1,
            b"\x00\x32\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00",
        ),
    ));
    frames.push((
        "unknown-method".into(),
        raw_frame(1, 1, b"\x00\x3c\x00\x63"),
    ));
    for (name, bytes) in frames {
        seeds.push(("frame", name.clone(), bytes.clone()));
        seeds.push(("roundtrip", name, bytes));
    }

    // websocket: handshakes good and bad, frames of every kind and error
    for (name, bytes) in warren::websocket::fuzzing::seeds() {
        seeds.push(("websocket", name.to_string(), bytes));
    }
    // mqtt: whole packet streams of both versions
    for (name, bytes) in mqtt_seeds() {
        seeds.push(("mqtt", name, bytes));
    }
    // stream_log: stream segments, whole and damaged
    for (name, bytes) in warren::testing::stream_log_seeds() {
        seeds.push(("stream_log", name.to_string(), bytes));
    }
    // mqtt_session: what an MQTT 5 client sends once connected
    for (name, bytes) in mqtt_session_seeds() {
        seeds.push(("mqtt_session", name, bytes));
    }
    seeds
}

/// Every `mqtt` seed is a stream of whole, valid packets for its selector
/// (the size-limited one ends in a packet over the limit), so the fuzzer
/// starts from inputs that reach past the first check.
#[test]
fn mqtt_seeds_decode_whole() {
    use warren::mqtt::codec::{decode, reason, Packet, Version};
    for (name, bytes) in mqtt_seeds() {
        let mut version = match bytes[0] & 3 {
            1 => Some(Version::V311),
            2 => Some(Version::V5),
            _ => None,
        };
        let max = if bytes[0] & 0b1100 == 0b0100 {
            16
        } else {
            usize::MAX
        };
        let mut buf = BytesMut::from(&bytes[1..]);
        let mut count = 0;
        loop {
            match decode(&mut buf, version, max) {
                Ok(Some(p)) => {
                    count += 1;
                    if let Packet::Connect(c) = p {
                        version = Some(c.version);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(e.reason, reason::PACKET_TOO_LARGE, "{name}: {e}");
                    assert!(max == 16, "{name}: {e}");
                    break;
                }
            }
        }
        assert!(count > 0, "{name}");
        if max != 16 {
            assert!(buf.is_empty(), "{name}: bytes left");
        }
    }
}

/// The `mqtt` target's named seeds: a selector byte (bits 0-1: no version
/// yet, 3.1.1, 5; bits 2-3: maximum packet size, 0 = none, 1 = 16 bytes),
/// then packets as a client or a server sends them.
fn mqtt_seeds() -> Vec<(String, Vec<u8>)> {
    use warren::mqtt::codec::{
        encode, Ack, ConnAck, Connect, Disconnect, Packet, Properties, Publish, SubAck, SubOptions,
        Subscribe, UnsubAck, Unsubscribe, Version, Will,
    };
    const NO_VERSION: u8 = 0;
    const V311: u8 = 1;
    const V5: u8 = 2;
    const MAX_16: u8 = 1 << 2;
    let s = |x: &'static [u8]| Bytes::from_static(x);
    let seed = |select: u8, version: Version, packets: &[Packet]| {
        let mut out = BytesMut::new();
        out.extend_from_slice(&[select]);
        for p in packets {
            encode(p, version, &mut out);
        }
        out.to_vec()
    };
    let connect = |version, props: Properties, will: Option<Will>| {
        Packet::Connect(Box::new(Connect {
            version,
            client_id: s(b"mosq-client"),
            clean_start: true,
            keep_alive: 60,
            username: Some(s(b"guest")),
            password: Some(s(b"guest")),
            will,
            props,
        }))
    };
    let publish = |qos, packet_id, props: Properties| {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: qos == 1,
            topic: s(b"sensors/kitchen/temperature"),
            packet_id,
            props,
            payload: s(b"21.5"),
        })
    };
    let ack = |packet_id, code| Ack {
        packet_id,
        code,
        props: Properties::default(),
    };
    let user = vec![(s(b"origin"), s(b"test"))];
    let v5_will = Will {
        topic: s(b"status/mosq-client"),
        payload: s(b"offline"),
        qos: 1,
        retain: true,
        props: Properties {
            will_delay_interval: Some(5),
            payload_format_indicator: Some(1),
            content_type: Some(s(b"text/plain")),
            user_properties: user.clone(),
            ..Properties::default()
        },
    };
    let v5_connect_props = Properties {
        session_expiry_interval: Some(3600),
        receive_maximum: Some(20),
        maximum_packet_size: Some(1 << 20),
        topic_alias_maximum: Some(10),
        request_problem_information: Some(1),
        user_properties: user.clone(),
        ..Properties::default()
    };
    let publish_props = Properties {
        message_expiry_interval: Some(30),
        topic_alias: Some(1),
        response_topic: Some(s(b"replies/1")),
        correlation_data: Some(s(b"\x00\x01")),
        user_properties: user.clone(),
        ..Properties::default()
    };
    let subscribe = |props: Properties| {
        Packet::Subscribe(Subscribe {
            packet_id: 3,
            props,
            filters: vec![
                (
                    s(b"sensors/+/temperature"),
                    SubOptions {
                        qos: 1,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: 1,
                    },
                ),
                (
                    s(b"$share/group/alerts/#"),
                    SubOptions {
                        qos: 2,
                        ..SubOptions::default()
                    },
                ),
            ],
        })
    };
    let bye = Packet::Disconnect(Disconnect {
        code: 0,
        props: Properties::default(),
    });
    vec![
        (
            "v311-connect-mosquitto".into(),
            seed(
                NO_VERSION,
                Version::V311,
                &[
                    connect(Version::V311, Properties::default(), None),
                    publish(1, 1, Properties::default()),
                    Packet::PingReq,
                    bye.clone(),
                ],
            ),
        ),
        (
            "v31-connect".into(),
            seed(
                NO_VERSION,
                Version::V31,
                &[connect(Version::V31, Properties::default(), None)],
            ),
        ),
        (
            "v5-connect-will-props".into(),
            seed(
                NO_VERSION,
                Version::V5,
                &[
                    connect(Version::V5, v5_connect_props, Some(v5_will)),
                    publish(0, 0, publish_props.clone()),
                    bye.clone(),
                ],
            ),
        ),
        (
            "v311-publish-qos1".into(),
            seed(V311, Version::V311, &[publish(1, 7, Properties::default())]),
        ),
        (
            "v311-publish-qos2-flow".into(),
            seed(
                V311,
                Version::V311,
                &[
                    publish(2, 8, Properties::default()),
                    Packet::PubRec(ack(8, 0)),
                    Packet::PubRel(ack(8, 0)),
                    Packet::PubComp(ack(8, 0)),
                ],
            ),
        ),
        (
            "v5-publish-qos1-props".into(),
            seed(
                V5,
                Version::V5,
                &[
                    publish(1, 9, publish_props.clone()),
                    Packet::PubAck(ack(9, 0x10)),
                ],
            ),
        ),
        (
            "v5-publish-qos2".into(),
            seed(
                V5,
                Version::V5,
                &[
                    publish(2, 10, Properties::default()),
                    Packet::PubRec(ack(10, 0)),
                    Packet::PubRel(ack(10, 0x92)),
                    Packet::PubComp(ack(10, 0)),
                ],
            ),
        ),
        (
            "v311-subscribe".into(),
            seed(
                V311,
                Version::V311,
                &[
                    subscribe(Properties::default()),
                    Packet::Unsubscribe(Unsubscribe {
                        packet_id: 4,
                        props: Properties::default(),
                        filters: vec![s(b"sensors/+/temperature")],
                    }),
                ],
            ),
        ),
        (
            "v5-subscribe".into(),
            seed(
                V5,
                Version::V5,
                &[subscribe(Properties {
                    subscription_ids: vec![12],
                    user_properties: user.clone(),
                    ..Properties::default()
                })],
            ),
        ),
        (
            "v5-server-packets".into(),
            seed(
                V5,
                Version::V5,
                &[
                    Packet::ConnAck(ConnAck {
                        session_present: false,
                        code: 0,
                        props: Properties {
                            assigned_client_id: Some(s(b"auto-42")),
                            maximum_qos: Some(1),
                            retain_available: Some(1),
                            server_keep_alive: Some(30),
                            ..Properties::default()
                        },
                    }),
                    Packet::SubAck(SubAck {
                        packet_id: 3,
                        props: Properties::default(),
                        codes: vec![1, 0x9E],
                    }),
                    Packet::UnsubAck(UnsubAck {
                        packet_id: 4,
                        props: Properties::default(),
                        codes: vec![0x11],
                    }),
                    Packet::PingResp,
                ],
            ),
        ),
        (
            "v311-max-size-16".into(),
            seed(
                V311 | MAX_16,
                Version::V311,
                &[Packet::PingReq, publish(1, 11, Properties::default())],
            ),
        ),
    ]
}

#[test]
fn seed_corpus_is_valid_and_checked_in() {
    // the named seeds are what `write_fuzz_seed_corpus` writes; they must be
    // in the repository unchanged (regenerate after changing this file)
    for (target, name, bytes) in seed_corpus() {
        let path = corpus_root().join(target).join(&name);
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run write_fuzz_seed_corpus", path.display()));
        assert_eq!(
            on_disk,
            bytes,
            "{} is stale; run write_fuzz_seed_corpus",
            path.display()
        );
    }
}

/// `cargo test --test codec -- --ignored write_fuzz_seed_corpus` writes the
/// named seeds into `fuzz/corpus/<target>/` (other files there are kept).
#[test]
#[ignore]
fn write_fuzz_seed_corpus() {
    for (target, name, bytes) in seed_corpus() {
        let dir = corpus_root().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A client's shortstr arguments must be UTF-8 (RabbitMQ: 501 "Malformed
/// UTF-8 in shortstr", no class or method), except basic.publish's; a
/// client decoding what a broker sends takes strings as bytes.
#[test]
fn client_shortstrs_must_be_utf8_except_in_basic_publish() {
    let bad = Bytes::from_static(b"q\xff");
    let declare = encode_method(
        &QueueDeclare {
            queue: bad.clone(),
            ..Default::default()
        }
        .into(),
    );
    let e = Method::decode_from_client(&declare).unwrap_err();
    assert_eq!(
        (e.code, e.reply_text().as_str(), e.class_id, e.method_id),
        (501, "FRAME_ERROR - Malformed UTF-8 in shortstr", 0, 0)
    );
    assert!(Method::decode(&declare).is_ok());
    let publish: Method = BasicPublish {
        exchange: bad.clone(),
        routing_key: bad.clone(),
        ..Default::default()
    }
    .into();
    assert_eq!(
        Method::decode_from_client(&encode_method(&publish)).unwrap(),
        publish
    );
    let close: Method = ChannelClose {
        reply_code: 404,
        reply_text: bad,
        class_id: 60,
        method_id: 40,
    }
    .into();
    assert_eq!(Method::decode(&encode_method(&close)).unwrap(), close);
    assert!(Method::decode_from_client(&encode_method(&close)).is_err());
}

/// The `mqtt_session` target's named seeds: packets an MQTT 5 client sends
/// after its CONNECT (the harness connects it first).
fn mqtt_session_seeds() -> Vec<(String, Vec<u8>)> {
    use warren::mqtt::codec::{
        encode, Ack, Disconnect, Packet, Properties, Publish, SubOptions, Subscribe, Unsubscribe,
        Version,
    };
    let s = |x: &'static [u8]| Bytes::from_static(x);
    let stream = |packets: &[Packet]| {
        let mut out = BytesMut::new();
        for p in packets {
            encode(p, Version::V5, &mut out);
        }
        out.to_vec()
    };
    let publish = |qos: u8, id: u16, topic: &'static [u8], props: Properties| {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: qos == 1,
            topic: s(topic),
            packet_id: id,
            props,
            payload: s(b"payload"),
        })
    };
    let ack = |id: u16| Ack {
        packet_id: id,
        code: 0,
        props: Properties::default(),
    };
    let alias = Properties {
        topic_alias: Some(1),
        ..Properties::default()
    };
    vec![
        (
            "publish-qos0-1-2".to_string(),
            stream(&[
                publish(0, 0, b"a/b", Properties::default()),
                publish(1, 1, b"a/c", Properties::default()),
                publish(2, 2, b"a/d", Properties::default()),
                Packet::PubRel(ack(2)),
            ]),
        ),
        (
            "subscribe-unsubscribe".to_string(),
            stream(&[
                Packet::Subscribe(Subscribe {
                    packet_id: 3,
                    props: Properties {
                        subscription_ids: vec![7],
                        ..Properties::default()
                    },
                    filters: vec![
                        (
                            s(b"x/#"),
                            SubOptions {
                                qos: 2,
                                no_local: true,
                                retain_as_published: true,
                                retain_handling: 1,
                            },
                        ),
                        (s(b"$share/g/y/+"), SubOptions::default()),
                    ],
                }),
                publish(1, 4, b"x/1", Properties::default()),
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: 5,
                    props: Properties::default(),
                    filters: vec![s(b"x/#"), s(b"nope")],
                }),
            ]),
        ),
        (
            "acks-for-deliveries".to_string(),
            stream(&[
                Packet::PubAck(ack(1)),
                Packet::PubRec(ack(1)),
                Packet::PubComp(ack(1)),
                Packet::PingReq,
            ]),
        ),
        (
            "topic-alias".to_string(),
            stream(&[
                publish(0, 0, b"a/alias", alias.clone()),
                publish(0, 0, b"", alias),
            ]),
        ),
        (
            "disconnect-with-will".to_string(),
            stream(&[Packet::Disconnect(Disconnect {
                code: 4,
                props: Properties::default(),
            })]),
        ),
    ]
}
