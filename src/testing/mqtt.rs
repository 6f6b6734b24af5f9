//! MQTT clients over an in-memory [`Core`], with simulated time: the
//! harness of the MQTT session tests and the `mqtt_session` fuzz target.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::Core;
use crate::broker::ConnId;
use crate::config::Config;
pub use crate::mqtt::codec::{
    self as mqtt_codec, Ack, ConnAck, Connect, Disconnect, Packet, Properties, Publish, SubAck,
    SubOptions, Subscribe, UnsubAck, Unsubscribe, Version, Will,
};

/// One scripted MQTT client.
#[derive(Debug)]
pub struct Client {
    /// Its connection.
    pub id: ConnId,
    /// Its protocol version.
    pub version: Version,
    /// Output not yet parsed into packets.
    pending: BytesMut,
    /// Packets that came with the CONNACK, for the next `recv`.
    backlog: Vec<Packet>,
}

/// A core with MQTT clients.
pub struct Mqtt {
    /// The broker core.
    pub core: Core,
    /// Simulated current time.
    pub now: Instant,
}

impl Mqtt {
    /// A fresh in-memory core.
    pub fn new(config: Config) -> Mqtt {
        Mqtt {
            core: Core::new(config),
            now: Instant::now(),
        }
    }

    /// A core over `config.data_dir` (opened and recovered), with its
    /// retained messages read back.
    pub fn open(config: Config) -> std::io::Result<Mqtt> {
        let mut engine = crate::engine::Engine::open(config)?;
        crate::mgmt::definitions::load_file(&mut engine)?;
        let mut core = Core::with_engine(engine);
        core.mqtt_load_retained();
        Ok(Mqtt {
            core,
            now: Instant::now(),
        })
    }

    /// A new TCP connection (no CONNECT yet).
    pub fn accept(&mut self, version: Version) -> Client {
        let peer: SocketAddr = ([127, 0, 0, 1], 41000).into();
        let id = self.core.accept_mqtt(peer, self.now, false);
        Client {
            id,
            version,
            pending: BytesMut::new(),
            backlog: Vec::new(),
        }
    }

    /// Connect a client: CONNECT with these settings, and its CONNACK.
    pub fn connect(
        &mut self,
        version: Version,
        client_id: &str,
        clean: bool,
        keep_alive: u16,
        props: Properties,
    ) -> (Client, ConnAck) {
        let mut c = self.accept(version);
        let connect = Packet::Connect(Box::new(Connect {
            version,
            client_id: Bytes::copy_from_slice(client_id.as_bytes()),
            clean_start: clean,
            keep_alive,
            username: None,
            password: None,
            will: None,
            props,
        }));
        self.send(&c, &connect);
        let mut got = self.recv(&mut c);
        let ack = match got.first() {
            Some(Packet::ConnAck(a)) => a.clone(),
            _ => panic!("CONNACK expected first, got {got:?}"),
        };
        got.remove(0);
        c.backlog = got;
        (c, ack)
    }

    /// Send a packet (and end the turn, as the server's loop would).
    pub fn send(&mut self, c: &Client, p: &Packet) {
        let mut out = BytesMut::new();
        mqtt_codec::encode(p, c.version, &mut out);
        self.send_raw(c, &out);
    }

    /// Send raw bytes.
    pub fn send_raw(&mut self, c: &Client, data: &[u8]) {
        if let Some(buf) = self.core.input_buffer(c.id) {
            buf.extend_from_slice(data);
        }
        self.core.process(c.id, self.now);
        self.core.end_turn(self.now);
    }

    /// Everything the client has been sent since the last call, as packets.
    pub fn recv(&mut self, c: &mut Client) -> Vec<Packet> {
        let out = self.core.take_output(c.id);
        c.pending.extend_from_slice(&out);
        let mut packets = std::mem::take(&mut c.backlog);
        loop {
            match mqtt_codec::decode(&mut c.pending, Some(c.version), usize::MAX) {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => break,
                Err(e) => panic!("unparsable output: {e:?}"),
            }
        }
        packets
    }

    /// Advance simulated time and run the core's timers.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.core.tick(self.now);
        self.core.end_turn(self.now);
    }

    /// True when the core has closed the client's connection (or is
    /// closing it).
    pub fn closed(&self, c: &Client) -> bool {
        self.core.is_dead(c.id)
    }

    /// The socket went away.
    pub fn drop_client(&mut self, c: &Client) {
        self.core.peer_closed(c.id);
        self.core.end_turn(self.now);
    }
}

/// Subscribe options with this QoS.
pub fn qos(q: u8) -> SubOptions {
    SubOptions {
        qos: q,
        ..SubOptions::default()
    }
}

/// A PUBLISH.
pub fn publish(topic: &str, qos: u8, id: u16, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        packet_id: id,
        props: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// A SUBSCRIBE of one filter.
pub fn subscribe(id: u16, filter: &str, opts: SubOptions) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: id,
        props: Properties::default(),
        filters: vec![(Bytes::copy_from_slice(filter.as_bytes()), opts)],
    })
}

/// An acknowledgement packet's fields.
pub fn ack(id: u16) -> Ack {
    Ack {
        packet_id: id,
        code: 0,
        props: Properties::default(),
    }
}

/// Fuzz an MQTT session: two clients (3.1.1 and 5.0) connect, one
/// subscribes and one publishes, then `data` arrives as the 5.0 client's
/// input in pieces, with time passing; the core must not panic and its
/// bookkeeping must hold, and every close must leave nothing
/// unacknowledged.
pub fn fuzz_mqtt_session(data: &[u8]) {
    let mut m = Mqtt::new(Config::default());
    let (mut sub, _) = m.connect(Version::V311, "sub", true, 0, Properties::default());
    m.send(&sub, &subscribe(1, "a/#", qos(1)));
    let (mut c, _) = m.connect(Version::V5, "fuzz", true, 30, Properties::default());
    m.send(&c, &subscribe(1, "a/+", qos(2)));
    m.send(&c, &publish("a/b", 1, 1, b"hello"));
    let _ = m.recv(&mut sub);
    for chunk in data.chunks(61) {
        m.send_raw(&c, chunk);
        let out = m.core.take_output(c.id);
        c.pending.clear();
        drop(out);
        let _ = m.recv(&mut sub);
        if let Err(e) = m.core.check_invariants() {
            panic!("invariant broken: {e}");
        }
        m.advance(Duration::from_millis(700));
    }
    m.drop_client(&c);
    m.drop_client(&sub);
    super::assert_settled(&m.core);
}
