//! One MQTT connection's state (held by its `Connection`, beside the AMQP
//! fields it shares: outbox, user, vhost, permissions, the internal channel
//! its subscriptions consume on), and the front door's state shared by
//! every MQTT connection: who holds which client id, what detached
//! persistent sessions remember, retained messages and delayed wills.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::codec::{SubOptions, Version, Will};
use crate::broker::{ConnId, QueueId};

/// The channel an MQTT connection's subscriptions consume on (its AMQP
/// machinery: unacknowledged deliveries, prefetch, requeue on close).
pub const MQTT_CHANNEL: u16 = 1;

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sub {
    /// The filter as the client sent it (`$share/...` included).
    pub filter: Bytes,
    /// The filter without a `$share/{group}/` prefix (what topics match).
    pub matcher: Bytes,
    /// Its options (granted QoS among them).
    pub opts: SubOptions,
    /// MQTT 5 subscription identifier (0: none).
    pub id: u32,
    /// The queue it is a binding of.
    pub queue: QueueId,
}

/// A WebSocket connection's layer under MQTT.
#[derive(Debug, Default)]
pub struct Ws {
    /// The upgrade handshake is done.
    pub open: bool,
    /// Frame decoder state.
    pub decoder: crate::websocket::Decoder,
    /// MQTT bytes taken out of WebSocket frames, not parsed yet.
    pub stream: BytesMut,
}

/// An outbound QoS 1 or 2 delivery waiting for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// Sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2): the delivery
    /// tag on the internal channel.
    Sent(u64),
    /// QoS 2: PUBREC came, PUBREL sent (the message is settled); waiting
    /// for PUBCOMP.
    Released,
}

/// One MQTT connection.
#[derive(Debug)]
pub struct Session {
    /// Protocol version (after CONNECT).
    pub version: Option<Version>,
    /// WebSocket layer (a connection on the WebSocket listener).
    pub ws: Option<Box<Ws>>,
    /// Client identifier.
    pub client_id: Bytes,
    /// Clean session (3.1.1) / clean start with session expiry 0 (5.0):
    /// the session ends with the connection.
    pub clean: bool,
    /// Session expiry interval in seconds (u32::MAX: never).
    pub expiry: u32,
    /// Keep-alive in seconds (0: none).
    pub keep_alive: u16,
    /// The last will, published unless the client disconnects normally.
    pub will: Option<Box<Will>>,
    /// Subscriptions.
    pub subs: Vec<Sub>,
    /// Unacknowledged deliveries the client takes at most (its Receive
    /// Maximum, or `mqtt.prefetch`): the internal channel's prefetch,
    /// once it exists (at the first subscription).
    pub receive_max: u16,
    /// A subscription has options that need a match per delivery
    /// (no-local, retain-as-published, identifiers, or QoS 1 and 2 sharing
    /// the QoS 1 queue).
    pub match_each: bool,
    /// Outbound QoS 1/2 deliveries by packet id.
    pub outbound: HashMap<u16, Outbound>,
    /// Inbound QoS 2 packet ids received (PUBREC sent), waiting for PUBREL.
    pub inbound: HashSet<u16>,
    /// Next outbound packet id to try.
    pub next_id: u16,
    /// Inbound topic aliases (MQTT 5).
    pub aliases: HashMap<u16, Bytes>,
    /// The client's maximum packet size (MQTT 5; u32::MAX: none).
    pub max_packet_out: u32,
    /// Acknowledgements (PUBACK/PUBREC) waiting for the store's sync:
    /// (packet type, packet id, reason code).
    pub acks_after_sync: Vec<(u8, u16, u8)>,
    /// Listed in the core's sync waiters.
    pub waiting_sync: bool,
    /// Scratch for content headers of published messages (split off per
    /// message: no allocation per message).
    pub hdr: BytesMut,
    /// The client disconnected normally: no will.
    pub clean_disconnect: bool,
    /// Takeover or an error already told the client (a DISCONNECT sent).
    pub closing: bool,
}

impl Session {
    /// A connection before its CONNECT (`ws`: on the WebSocket listener).
    pub fn new(ws: bool) -> Session {
        Session {
            version: None,
            ws: ws.then(Box::default),
            client_id: Bytes::new(),
            clean: true,
            expiry: 0,
            keep_alive: 0,
            will: None,
            subs: Vec::new(),
            receive_max: 0,
            match_each: false,
            outbound: HashMap::new(),
            inbound: HashSet::new(),
            next_id: 1,
            aliases: HashMap::new(),
            max_packet_out: u32::MAX,
            acks_after_sync: Vec::new(),
            waiting_sync: false,
            hdr: BytesMut::new(),
            clean_disconnect: false,
            closing: false,
        }
    }

    /// The protocol version (3.1.1 before CONNECT says otherwise).
    pub fn v(&self) -> Version {
        self.version.unwrap_or(Version::V311)
    }

    /// A free outbound packet id (None: 65,535 in flight).
    pub fn alloc_id(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if id != 0 && !self.outbound.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Recompute [`Session::match_each`].
    pub fn update_match_each(&mut self) {
        let q1: Vec<u8> = self
            .subs
            .iter()
            .filter(|s| s.opts.qos > 0)
            .map(|s| s.opts.qos)
            .collect();
        let mixed = q1.iter().any(|&q| q != q1.first().copied().unwrap_or(0));
        self.match_each = mixed
            || self
                .subs
                .iter()
                .any(|s| s.opts.no_local || s.opts.retain_as_published || s.id != 0);
    }
}

/// What a persistent session keeps while no connection holds it.
#[derive(Debug, Default)]
pub struct Detached {
    /// Inbound QoS 2 packet ids waiting for PUBREL.
    pub inbound: HashSet<u16>,
    /// Outbound QoS 2 packet ids released (PUBREL to send again).
    pub released: Vec<u16>,
    /// When it ends (MQTT 5 session expiry; None: never).
    pub until: Option<Instant>,
}

/// A will waiting for its delay (MQTT 5 will delay interval).
#[derive(Debug)]
pub struct PendingWill {
    /// Vhost and client id of the session it belongs to.
    pub key: (Bytes, Bytes),
    /// The will.
    pub will: Will,
    /// When to publish it.
    pub at: Instant,
}

/// A retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// QoS it was published with.
    pub qos: u8,
    /// When its MQTT 5 message expiry runs out (wall-clock milliseconds);
    /// then it is retained no longer (MQTT-3.3.2-5).
    pub expires: Option<u64>,
    /// AMQP content header payload (properties as published).
    pub header: Bytes,
    /// Payload.
    pub payload: Bytes,
}

/// Message counters of one MQTT version (`/metrics`, per protocol).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProtoStats {
    /// Messages received from publishers.
    pub received: u64,
    /// Deliveries to subscribers.
    pub delivered: u64,
    /// Deliveries acknowledged (PUBACK, PUBREC).
    pub acknowledged: u64,
    /// Deliveries of messages delivered before (DUP).
    pub redelivered: u64,
    /// Messages that matched no subscription.
    pub unroutable: u64,
}

/// The MQTT front door's state.
#[derive(Debug, Default)]
pub struct MqttState {
    /// Connected sessions: (vhost, client id) → connection.
    pub clients: HashMap<(Bytes, Bytes), ConnId>,
    /// Persistent sessions without a connection.
    pub detached: HashMap<(Bytes, Bytes), Detached>,
    /// Retained messages: vhost → topic → message.
    pub retained: HashMap<Bytes, HashMap<Bytes, Retained>>,
    /// Retained messages changed since they were last written.
    pub retained_dirty: bool,
    /// Wills waiting for their delay.
    pub wills: Vec<PendingWill>,
    /// Counter for generated client ids.
    pub generated: u64,
    /// Counters for MQTT 3.1/3.1.1 (`[0]`) and 5.0 (`[1]`).
    pub stats: [ProtoStats; 2],
}

impl MqttState {
    /// The counters of a version.
    pub fn stats_of(&mut self, v: super::codec::Version) -> &mut ProtoStats {
        let [v3, v5] = &mut self.stats;
        if v.is_v5() {
            v5
        } else {
            v3
        }
    }
}
