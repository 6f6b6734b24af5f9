//! One AMQP connection's protocol state: handshake progress, negotiated
//! limits, input buffer, pending output, and its channels.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::channel::{Channel, Channels};
use crate::broker::{ConnId, QueueId};
use crate::codec::{FieldTable, Outbox};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Waiting for the 8-byte protocol header.
    Header,
    /// connection.start sent; waiting for start-ok.
    StartOk,
    /// connection.tune sent; waiting for tune-ok.
    TuneOk,
    /// Tuned; waiting for connection.open.
    Open,
    /// Open: channels may be used.
    Running,
    /// We sent connection.close; waiting for close-ok (or the deadline).
    Closing,
    /// Done: close the socket once the output is flushed.
    Dead,
}

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    /// Own id.
    pub id: ConnId,
    /// Peer address.
    pub peer: SocketAddr,
    /// Protocol state.
    pub state: ConnState,
    /// Bytes read and not yet parsed.
    pub inbuf: BytesMut,
    /// The input stopped being valid frames (a frame error): the stream
    /// cannot be re-synchronised, so whatever arrives is dropped unparsed
    /// until the peer closes or the close timeout.
    pub discard_input: bool,
    /// Size of the last body frame received if it was large, else 0 (see
    /// [`crate::amqp::Core::read_hint`]).
    pub large_body: u32,
    /// Bytes to write.
    pub outbox: Outbox,
    /// Largest frame either side may send (4096 until tuned).
    pub frame_max: u32,
    /// Highest channel number allowed.
    pub channel_max: u16,
    /// Negotiated heartbeat interval in seconds (0 = off).
    pub heartbeat: u16,
    /// When the connection was accepted.
    pub accepted_at: Instant,
    /// When we last received anything.
    pub last_recv: Instant,
    /// When we last queued output.
    pub last_send: Instant,
    /// When the peer last took bytes from us (a socket write succeeded).
    pub last_write: Instant,
    /// When to give up waiting for close-ok.
    pub close_deadline: Option<Instant>,
    /// Virtual host (after connection.open).
    pub vhost: Bytes,
    /// Authenticated user name.
    pub user: Bytes,
    /// Client properties from start-ok.
    pub client_properties: FieldTable,
    /// Client announced `consumer_cancel_notify`.
    pub cap_cancel_notify: bool,
    /// Client announced `connection.blocked`.
    pub cap_blocked: bool,
    /// Channels by number.
    pub channels: Channels,
    /// Exclusive queues this connection declared.
    pub exclusive_queues: Vec<QueueId>,
    /// Already listed in the core's flush list this turn.
    pub in_flush_list: bool,
    /// Has published (blocked by memory/disk alarms).
    pub published: bool,
    /// Local address of the socket (set by the server; management API).
    pub local: Option<SocketAddr>,
    /// The TLS session's facts (set by the server once its handshake is
    /// done, before any AMQP input): SASL EXTERNAL and the management API.
    pub tls: Option<Box<crate::tls::TlsInfo>>,
    /// The SASL mechanism it logged in with.
    pub auth_mechanism: Option<crate::config::AuthMechanism>,
    /// Bytes received.
    pub recv_oct: u64,
    /// Bytes sent.
    pub send_oct: u64,
    /// Deliveries were held back because the outbox was full.
    pub held_back: bool,
    /// The consumers (queue, key in the queue) blocked because the outbox
    /// was full: unblocked when it drains.
    pub held: Vec<(QueueId, u32)>,
    /// The user's permissions in the connection's vhost (cached).
    pub perm: Option<crate::broker::auth::Permission>,
    /// The user's topic permissions in the connection's vhost (cached).
    pub topic_checks: Vec<crate::broker::auth::TopicCheck>,
    /// The exchange the last publish was allowed to (write permission),
    /// forgotten when permissions change.
    pub write_ok: Option<Bytes>,
    /// A connection from inside the broker (a link's end): the user it
    /// is logged in as, without a password.
    pub internal: Option<Bytes>,
    /// An MQTT connection: its session (see `crate::mqtt`).
    pub mqtt: Option<Box<crate::mqtt::Session>>,
}

impl Connection {
    /// List it in `flush_list` (the core's), once a turn: its output is
    /// written when the turn ends.
    pub(crate) fn flush_later(&mut self, flush_list: &mut Vec<ConnId>) {
        if !self.in_flush_list {
            self.in_flush_list = true;
            flush_list.push(self.id);
        }
    }

    /// A new connection waiting for the protocol header.
    pub fn new(id: ConnId, peer: SocketAddr, now: Instant) -> Connection {
        Connection {
            id,
            peer,
            state: ConnState::Header,
            inbuf: BytesMut::with_capacity(4096),
            discard_input: false,
            large_body: 0,
            outbox: Outbox::new(),
            frame_max: crate::codec::frame::FRAME_MIN_SIZE,
            channel_max: 0,
            heartbeat: 0,
            accepted_at: now,
            last_recv: now,
            last_send: now,
            last_write: now,
            close_deadline: None,
            vhost: Bytes::new(),
            user: Bytes::new(),
            client_properties: FieldTable::new(),
            cap_cancel_notify: false,
            cap_blocked: false,
            channels: Channels::default(),
            exclusive_queues: Vec::new(),
            in_flush_list: false,
            published: false,
            local: None,
            tls: None,
            auth_mechanism: None,
            recv_oct: 0,
            send_oct: 0,
            held_back: false,
            held: Vec::new(),
            perm: None,
            topic_checks: Vec::new(),
            write_ok: None,
            internal: None,
            mqtt: None,
        }
    }

    /// The channel with this number, if open or closing.
    pub fn channel(&self, ch: u16) -> Option<&Channel> {
        self.channels.get(ch)
    }

    /// The channel with this number, mutable.
    pub fn channel_mut(&mut self, ch: u16) -> Option<&mut Channel> {
        self.channels.get_mut(ch)
    }

    /// A name for logs: the peer's address, `127.0.0.1:54321` (RabbitMQ's
    /// names add ` -> ` and the local address).
    pub fn name(&self) -> String {
        format!("{}", self.peer)
    }
}
