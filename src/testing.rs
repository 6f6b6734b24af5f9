//! In-memory harness over [`Core`]: a scripted client that speaks frames to
//! the core without sockets, with time as an argument. Used by the
//! simulated-time tests and the `session` fuzz target. Built only with the
//! cargo feature `testing` (see `Cargo.toml`).
//!
//! A test harness: a broken invariant or unparsable output is reported by
//! panicking, as tests do.
#![allow(clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use crate::amqp::{Core, ReadHint};
use crate::broker::ConnId;
use crate::codec::frame::{parse_frame, Frame, PROTOCOL_HEADER};
use crate::codec::*;
use crate::config::Config;
pub use crate::engine::{Engine, PolicyKind, PolicySpec};
pub use crate::mgmt::{HttpConn, Mgmt};
pub use crate::store::crc::crc32c;
pub use crate::store::stream::fuzzing::{
    fuzz_segment as fuzz_stream_log, seeds as stream_log_seeds,
};
pub use crate::store::{free_disk, DiskOp, Faults, FORMAT_VERSION};
pub use crate::tls::x509::{subject as x509_subject, Subject, X509Error};
pub use crate::tls::{server_config as tls_server_config, TlsConn, TlsRead};
pub use tls::{fuzz_tls, fuzz_x509};

mod mqtt;
mod tls;
pub use mqtt::{fuzz_mqtt_session, Mqtt};
/// The MQTT harness's helpers and packet types.
pub mod mqtt_client {
    pub use super::mqtt::*;
}

/// A core plus one scripted client connection.
pub struct Pair {
    /// The broker core.
    pub core: Core,
    /// The client's connection id.
    pub id: ConnId,
    /// Simulated current time.
    pub now: Instant,
    /// Output not yet parsed into frames.
    pending: BytesMut,
}

impl Pair {
    /// A fresh core with one accepted (not yet handshaken) connection.
    pub fn new(config: Config) -> Pair {
        Pair::with_core(Core::new(config))
    }

    fn with_core(mut core: Core) -> Pair {
        let now = Instant::now();
        let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
        let id = core.accept(peer, now);
        Pair {
            core,
            id,
            now,
            pending: BytesMut::new(),
        }
    }

    /// Like [`Pair::new`] with persistence: the core opens (and recovers)
    /// `config.data_dir`.
    pub fn open(config: Config) -> std::io::Result<Pair> {
        let mut engine = crate::engine::Engine::open(config)?;
        crate::mgmt::definitions::load_file(&mut engine)?;
        Ok(Pair::with_core(Core::with_engine(engine)))
    }

    /// Go on as a new client of the same core (the old connection, if
    /// still open, is left as it is; closed ones are gone).
    pub fn reconnect(&mut self) {
        let peer: SocketAddr = ([127, 0, 0, 1], 40001).into();
        self.id = self.core.accept(peer, self.now);
        self.pending.clear();
    }

    /// Advance simulated time and run the core's timers.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.core.tick(self.now);
    }

    /// Send raw bytes.
    pub fn send_raw(&mut self, data: &[u8]) {
        self.core.handle_bytes(self.id, data, self.now);
        self.core.end_turn(self.now);
    }

    /// Send a method frame.
    pub fn send(&mut self, channel: u16, m: impl Into<Method>) {
        let mut out = BytesMut::new();
        crate::codec::frame::write_method(&mut out, channel, &m.into());
        self.send_raw(&out);
    }

    /// Publish a message (method, header, one body frame).
    pub fn publish(
        &mut self,
        channel: u16,
        exchange: &str,
        key: &str,
        props: BasicProperties,
        body: &[u8],
    ) {
        let mut out = BytesMut::new();
        let p = BasicPublish {
            exchange: Bytes::copy_from_slice(exchange.as_bytes()),
            routing_key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        };
        crate::codec::frame::write_method(&mut out, channel, &p.into());
        Frame::Header(
            channel,
            Box::new(ContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: props,
            }),
        )
        .encode(&mut out);
        if !body.is_empty() {
            Frame::Body(channel, Bytes::copy_from_slice(body)).encode(&mut out);
        }
        self.send_raw(&out);
    }

    /// Every frame the core has written since the last call. Panics if the
    /// output does not parse (an invariant: the broker only sends valid frames).
    pub fn recv(&mut self) -> Vec<Frame> {
        let out = self.core.take_output(self.id);
        self.pending.extend_from_slice(&out);
        if self.pending.starts_with(PROTOCOL_HEADER) {
            let _ = self.pending.split_to(8);
        }
        let mut frames = Vec::new();
        while let Some(f) = parse_frame(&mut self.pending, 0).expect("broker output must parse") {
            frames.push(f);
        }
        frames
    }

    /// Methods received since the last call (content frames dropped).
    pub fn recv_methods(&mut self) -> Vec<(u16, Method)> {
        self.recv()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Method(ch, m) => Some((ch, m)),
                _ => None,
            })
            .collect()
    }

    /// Perform the whole handshake as guest on vhost `/` with this heartbeat,
    /// and open channel 1.
    pub fn handshake(&mut self, heartbeat: u16) {
        self.send_raw(PROTOCOL_HEADER);
        let m = self.recv_methods();
        assert!(
            matches!(m.first(), Some((0, Method::ConnectionStart(_)))),
            "{m:?}"
        );
        let mut caps = FieldTable::new();
        caps.insert("consumer_cancel_notify", FieldValue::Bool(true));
        let mut props = FieldTable::new();
        props.insert("capabilities", FieldValue::Table(caps));
        self.send(
            0,
            ConnectionStartOk {
                client_properties: props,
                mechanism: Bytes::from_static(b"PLAIN"),
                response: Bytes::from_static(b"\0guest\0guest"),
                locale: Bytes::from_static(b"en_US"),
            },
        );
        let m = self.recv_methods();
        assert!(
            matches!(m.first(), Some((0, Method::ConnectionTune(_)))),
            "{m:?}"
        );
        self.send(
            0,
            ConnectionTuneOk {
                channel_max: 2047,
                frame_max: 131072,
                heartbeat,
            },
        );
        self.send(
            0,
            ConnectionOpen {
                virtual_host: Bytes::from_static(b"/"),
                ..Default::default()
            },
        );
        self.send(1, ChannelOpen::default());
        let m = self.recv_methods();
        assert!(
            matches!(m.first(), Some((0, Method::ConnectionOpenOk(_)))),
            "{m:?}"
        );
        assert!(
            matches!(m.get(1), Some((1, Method::ChannelOpenOk(_)))),
            "{m:?}"
        );
    }
}

impl Core {
    /// Check the bookkeeping invariants: the memory account matches what
    /// the messages hold (large bodies, arena chunks), every queue's unacked
    /// count equals the unacked entries channels hold for it, and every
    /// consumer a queue lists exists on an open channel (and vice versa).
    pub fn check_invariants(&self) -> Result<(), String> {
        // Every message the memory accounting counts is somewhere: ready in
        // a queue, unacked on a channel, or held by an open transaction.
        let ready: u64 = self
            .engine
            .broker
            .queues
            .iter()
            .map(|(_, q)| q.ready.len())
            .sum::<u64>()
            + self
                .engine
                .msgs
                .purged
                .iter()
                .map(|(_, s)| s.count)
                .sum::<u64>();
        for (_, q) in self.engine.broker.queues.iter() {
            q.ready
                .check()
                .map_err(|e| format!("queue {}: {e}", String::from_utf8_lossy(&q.name)))?;
            // A deduplication queue holds keys only for messages it has
            // (ready, or taken and not settled).
            if let Some(d) = q.dedup.as_deref() {
                let (keys, seqs) = d.sizes();
                if keys > seqs || seqs as u64 > q.ready.len() + q.unacked as u64 {
                    return Err(format!(
                        "queue {}: {keys} deduplication keys, {seqs} keyed messages, {} ready, {} unacked",
                        String::from_utf8_lossy(&q.name),
                        q.ready.len(),
                        q.unacked
                    ));
                }
            }
        }
        let dedup = self
            .engine
            .broker
            .queues
            .iter()
            .filter(|(_, q)| q.dedup.is_some())
            .count();
        if dedup != self.engine.broker.dedup_queues {
            return Err(format!(
                "{dedup} deduplication queues, {} counted",
                self.engine.broker.dedup_queues
            ));
        }
        let held: usize = self
            .conns
            .iter()
            .flat_map(|(_, c)| c.channels.iter())
            .map(|ch| {
                let in_tx: usize = ch
                    .tx
                    .iter()
                    .flatten()
                    .map(|op| match op {
                        crate::amqp::channel::TxOp::Ack(v)
                        | crate::amqp::channel::TxOp::Nack(v, _) => {
                            v.iter().filter(|u| !u.msg.is_marker()).count()
                        }
                        crate::amqp::channel::TxOp::Publish(..) => 0,
                    })
                    .sum();
                // A stream's deliveries hold no message.
                ch.unacked.iter().filter(|u| !u.msg.is_marker()).count() + in_tx
            })
            .sum();
        // The bytes the memory accounting counts are the bytes those
        // messages hold in memory.
        let mut bytes: u64 = self
            .engine
            .broker
            .queues
            .iter()
            .flat_map(|(_, q)| q.ready.iter_memory())
            .map(|m| m.resident())
            .sum();
        for ch in self.conns.iter().flat_map(|(_, c)| c.channels.iter()) {
            bytes += ch.unacked.iter().map(|u| u.msg.resident()).sum::<u64>();
            for op in ch.tx.iter().flatten() {
                if let crate::amqp::channel::TxOp::Ack(v) | crate::amqp::channel::TxOp::Nack(v, _) =
                    op
                {
                    bytes += v.iter().map(|u| u.msg.resident()).sum::<u64>();
                }
            }
        }
        if bytes != self.engine.msgs.resident {
            return Err(format!(
                "{} resident bytes counted, but the messages hold {bytes}",
                self.engine.msgs.resident
            ));
        }
        // The arena's account is the chunks the messages are packed in (and
        // the chunks being written): no chunk is counted that nothing
        // holds, none held is not counted.
        let mut chunks: Vec<(usize, u64)> = self.engine.msgs.arena.current_chunks().collect();
        for (_, q) in self.engine.broker.queues.iter() {
            chunks.extend(q.ready.iter_memory().filter_map(|m| m.chunk()));
        }
        for ch in self.conns.iter().flat_map(|(_, c)| c.channels.iter()) {
            chunks.extend(ch.unacked.iter().filter_map(|u| u.msg.chunk()));
            for op in ch.tx.iter().flatten() {
                if let crate::amqp::channel::TxOp::Ack(v) | crate::amqp::channel::TxOp::Nack(v, _) =
                    op
                {
                    chunks.extend(v.iter().filter_map(|u| u.msg.chunk()));
                }
            }
        }
        chunks.sort_unstable();
        chunks.dedup();
        let in_chunks: u64 = chunks.iter().map(|c| c.1).sum();
        if in_chunks != self.engine.msgs.arena.bytes() {
            return Err(format!(
                "the arena counts {} bytes of chunks, but the messages and writers hold {in_chunks} in {} chunks",
                self.engine.msgs.arena.bytes(),
                chunks.len()
            ));
        }
        if ready + held as u64 != self.engine.msgs.queued {
            return Err(format!(
                "{} messages counted, but {ready} ready and {held} unacked",
                self.engine.msgs.queued
            ));
        }
        for (_, q) in self.engine.broker.queues.iter() {
            let held: usize = self
                .conns
                .iter()
                .flat_map(|(_, c)| c.channels.iter())
                .map(|ch| {
                    // Acks and nacks inside an open transaction hold their
                    // deliveries until commit or rollback.
                    let in_tx = ch.tx.iter().flatten().map(|op| match op {
                        crate::amqp::channel::TxOp::Ack(v)
                        | crate::amqp::channel::TxOp::Nack(v, _) => {
                            v.iter().filter(|u| u.queue == q.id).count()
                        }
                        crate::amqp::channel::TxOp::Publish(..) => 0,
                    });
                    ch.unacked.iter().filter(|u| u.queue == q.id).count() + in_tx.sum::<usize>()
                })
                .sum();
            if held != q.unacked {
                return Err(format!(
                    "queue {:?}: unacked count {} but channels hold {}",
                    q.name, q.unacked, held
                ));
            }
            q.consumers
                .check()
                .map_err(|e| format!("queue {:?}: consumers: {e}", q.name))?;
            for (key, r) in q.consumers.iter() {
                let ok = self
                    .conn(r.conn)
                    .and_then(|c| c.channel(r.channel))
                    .and_then(|ch| ch.consumers.get(r.slot))
                    .is_some_and(|k| k.tag == r.tag && k.queue == q.id && k.qkey == key);
                if !ok {
                    return Err(format!(
                        "queue {:?} lists a consumer its channel does not have: {r:?}",
                        q.name
                    ));
                }
            }
        }
        for (_, c) in self.conns.iter() {
            for ch in c.channels.iter() {
                for (slot, k) in ch.consumers.iter() {
                    let listed = self
                        .engine
                        .broker
                        .queue(k.queue)
                        .and_then(|q| q.consumers.get(k.qkey))
                        .is_some_and(|r| {
                            r.conn == c.id && r.channel == ch.id && r.tag == k.tag && r.slot == slot
                        });
                    if !listed || ch.consumers.key_of(&k.tag) != Some(slot) {
                        return Err(format!(
                            "channel consumer {:?} not listed by its queue",
                            k.tag
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Fuzz entry: handshake, then arbitrary bytes as the client's frames, fed
/// in chunks with time advancing; checks output validity and invariants.
pub fn fuzz_session(data: &[u8]) {
    let mut p = Pair::new(Config::default());
    p.handshake(0);
    // A queue and a consumer so acks/deliveries have something to act on.
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    p.publish(1, "", "q", BasicProperties::default(), b"hello");
    p.send(
        1,
        BasicConsume {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        },
    );
    let _ = p.recv();
    for chunk in data.chunks(97) {
        p.send_raw(chunk);
        let _ = p.recv();
        if let Err(e) = p.core.check_invariants() {
            panic!("invariant broken: {e}");
        }
        p.advance(Duration::from_millis(300));
    }
    p.core.peer_closed(p.id);
    assert_settled(&p.core);
}

/// After every connection closed: the bookkeeping holds and no queue
/// counts a delivery as unacknowledged (the fuzz targets' last check).
pub fn assert_settled(core: &Core) {
    if let Err(e) = core.check_invariants() {
        panic!("invariant broken after close: {e}");
    }
    assert!(core
        .engine
        .broker
        .queues
        .iter()
        .all(|(_, q)| q.unacked == 0));
}
