//! The AMQP front door's state: every AMQP connection, over the engine
//! (`crate::engine`) they drive. Sans-IO: the server feeds it bytes and the
//! current time and takes back bytes to write; tests and the `session` fuzz
//! target drive it the same way, without sockets, with simulated time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use log::{info, warn};
use slab::Slab;

use super::{ConnState, Connection};
use crate::broker::ConnId;
use crate::codec::frame::{
    parse_protocol_header, parse_raw_frame, ProtocolHeader, PROTOCOL_HEADER,
};
use crate::codec::{ConnectionClose, Error, Outbox, ReplyCode};
#[cfg(any(test, feature = "testing"))]
use crate::config::Config;
use crate::engine::Engine;

/// Frames at least this large are read without a copy (see [`Core::read_hint`]).
const LARGE_FRAME: usize = 16 * 1024;

/// See [`Core::read_hint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadHint {
    /// Read at most this many bytes straight into [`Core::input_buffer`].
    Direct(usize),
    /// Read at most this many bytes into a scratch buffer, then append them.
    Scratch(usize),
}

/// How long we wait for connection.close-ok after sending connection.close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Every AMQP connection, and the engine they drive.
///
/// # Calling order
///
/// The server, each loop turn: [`Core::accept`] new sockets; for readable
/// ones [`Core::read_hint`], read into [`Core::input_buffer`], then
/// [`Core::process`] (frames → methods → engine actions → replies in the
/// connection's outbox); on its timer [`Core::tick`]; at the end of the
/// turn [`Core::end_turn`] (group commit, alarms), then write what
/// [`Core::take_flush_list`] names from [`Core::outbox`], telling
/// [`Core::wrote`] / [`Core::output_drained`]; close what
/// [`Core::is_dead`] says and [`Core::remove`] it.
#[derive(Debug)]
pub struct Core {
    /// The broker engine.
    pub engine: Engine,
    /// Connections by slab index.
    pub conns: Slab<Connection>,
    /// Generation counter for connection ids.
    next_gen: u32,
    /// Connections with new output since the server last looked.
    pub(crate) flush_list: Vec<ConnId>,
    /// Connections sent a reply this turn whose truth depends on this turn's
    /// commit (a durable declare or delete, a purge, tx.commit), with the
    /// length their output had before it: if the commit fails, what follows
    /// that mark is dropped and the connection closed with 541.
    pub(crate) commit_dependents: Vec<(ConnId, usize)>,
    /// Channels whose confirms wait for the next store sync.
    pub(crate) sync_waiters: Vec<(ConnId, u16)>,
    /// Outbound links (shovels): their ends to this broker are
    /// connections here, made with [`Core::accept_internal`].
    pub(crate) links: crate::link::Links,
    /// The MQTT front door's state (client ids, detached sessions,
    /// retained messages, delayed wills).
    pub(crate) mqtt: crate::mqtt::MqttState,
    /// Scratch buffer for a stream delivery's content header (see
    /// `amqp/stream.rs`).
    pub(crate) stream_header: Vec<u8>,
}

impl Core {
    #[cfg(any(test, feature = "testing"))]
    /// AMQP over an in-memory engine with the default vhost.
    pub fn new(config: Config) -> Core {
        Core::with_engine(Engine::new(config))
    }

    /// AMQP over `engine`.
    pub fn with_engine(engine: Engine) -> Core {
        Core {
            engine,
            conns: Slab::new(),
            next_gen: 0,
            flush_list: Vec::new(),
            commit_dependents: Vec::new(),
            sync_waiters: Vec::new(),
            links: crate::link::Links::default(),
            mqtt: crate::mqtt::MqttState::default(),
            stream_header: Vec::new(),
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// Settings.
    pub fn config(&self) -> &Config {
        &self.engine.config
    }

    /// The connection with this id, if it is still there.
    pub fn conn(&self, id: ConnId) -> Option<&Connection> {
        self.conns.get(id.idx as usize).filter(|c| c.id == id)
    }

    /// Mutable access to a connection.
    pub fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.conns.get_mut(id.idx as usize).filter(|c| c.id == id)
    }

    /// Register a newly accepted connection.
    pub fn accept(&mut self, peer: SocketAddr, now: Instant) -> ConnId {
        info!("accepting AMQP connection {peer}");
        self.new_conn(peer, now)
    }

    /// A new connection (of any protocol) in the slab.
    pub(crate) fn new_conn(&mut self, peer: SocketAddr, now: Instant) -> ConnId {
        self.next_gen = self.next_gen.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        let id = ConnId {
            idx: entry.key() as u32,
            gen: self.next_gen,
        };
        entry.insert(Connection::new(id, peer, now));
        id
    }

    /// A connection from inside the broker (a link's end with no host):
    /// no socket, logged in as `user` without a password (the link's
    /// definition chose the user), its bytes moved by the server.
    pub(crate) fn accept_internal(&mut self, user: &str, now: Instant) -> ConnId {
        self.next_gen = self.next_gen.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        let id = ConnId {
            idx: entry.key() as u32,
            gen: self.next_gen,
        };
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut c = Connection::new(id, peer, now);
        c.internal = Some(Bytes::from(user.to_string()));
        entry.insert(c);
        id
    }

    /// Bytes for a connection from inside the broker, processed at once.
    pub(crate) fn feed(&mut self, id: ConnId, data: &[u8], now: Instant) {
        if let Some(c) = self.conn_mut(id) {
            c.inbuf.extend_from_slice(data);
        }
        self.process(id, now);
    }

    /// The connection's TLS handshake is done: what it was (before its
    /// first AMQP bytes are processed).
    pub fn set_tls(&mut self, id: ConnId, info: crate::tls::TlsInfo) {
        if let Some(c) = self.conn_mut(id) {
            info!(
                "connection {}: {} {}{}{}",
                c.peer,
                info.protocol,
                info.cipher,
                info.server_name
                    .as_deref()
                    .map_or_else(String::new, |n| format!(", server name {n}")),
                if info.peer.is_some() {
                    ", verified client certificate"
                } else {
                    ""
                }
            );
            c.tls = Some(Box::new(info));
        }
    }

    /// The input buffer to read socket bytes into (then call [`Core::process`]).
    pub fn input_buffer(&mut self, id: ConnId) -> Option<&mut BytesMut> {
        self.conn_mut(id).map(|c| &mut c.inbuf)
    }

    /// How the server should read this connection's next input. The rest
    /// of a large frame that has begun to arrive is read straight into the
    /// input buffer ([`ReadHint::Direct`], exactly its missing bytes), not
    /// copied through the server's scratch buffer; while a publisher sends
    /// large bodies, each read asks for one more message of that size.
    pub fn read_hint(&self, id: ConnId) -> ReadHint {
        let Some(c) = self.conn(id) else {
            return ReadHint::Scratch(usize::MAX);
        };
        if c.state == ConnState::Header || c.state == ConnState::Dead {
            return ReadHint::Scratch(usize::MAX);
        }
        let size = c.inbuf.get(3..7).and_then(|h| <[u8; 4]>::try_from(h).ok());
        if let Some(size) = size {
            let size = u32::from_be_bytes(size) as usize;
            // A frame over frame_max is an error the parser reports; with no
            // negotiated limit, nothing is reserved ahead.
            if size >= LARGE_FRAME && c.frame_max != 0 && size <= c.frame_max as usize {
                let missing = (size + 8).saturating_sub(c.inbuf.len());
                if missing > 0 {
                    return ReadHint::Direct(missing);
                }
            }
        }
        if c.large_body > 0 {
            // Expect another message like the last: its method and header
            // frames and a body of the same size, read in one go.
            ReadHint::Direct(c.large_body as usize + 1024)
        } else {
            ReadHint::Scratch(usize::MAX)
        }
    }

    /// The socket had nothing more to read: if the input buffer is empty,
    /// let go of a large one (an idle connection keeps a small buffer).
    pub fn input_idle(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id) {
            // An MQTT connection lets go of any (many are idle sensors).
            let keep = if c.mqtt.is_some() { 0 } else { 4096 };
            if c.inbuf.is_empty() && c.inbuf.capacity() > keep {
                c.inbuf = BytesMut::new();
            }
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// Append bytes and process them (tests and fuzzing; the server reads
    /// straight into [`Core::input_buffer`]).
    pub fn handle_bytes(&mut self, id: ConnId, data: &[u8], now: Instant) {
        if let Some(c) = self.conn_mut(id) {
            c.inbuf.extend_from_slice(data);
        }
        self.process(id, now);
    }

    /// The pending output of a connection.
    pub fn outbox(&mut self, id: ConnId) -> Option<&mut Outbox> {
        self.conn_mut(id).map(|c| &mut c.outbox)
    }

    #[cfg(any(test, feature = "testing"))]
    /// Take everything a connection has to write (tests).
    pub fn take_output(&mut self, id: ConnId) -> Vec<u8> {
        let now = self.engine.now();
        let out = self
            .conn_mut(id)
            .map(|c| {
                c.last_write = now;
                c.outbox.take_all()
            })
            .unwrap_or_default();
        self.output_drained(id);
        // The next turn's dispatch, as the server's loop would run it.
        self.run_dispatch();
        out
    }

    /// True when a connection has output to flush (left from a turn whose
    /// write budget ran out: the next turn comes at once).
    pub fn has_flush(&self) -> bool {
        !self.flush_list.is_empty()
    }

    /// Connections that got output since the last call.
    pub fn take_flush_list(&mut self, out: &mut Vec<ConnId>) {
        out.clear();
        std::mem::swap(out, &mut self.flush_list);
        for id in out.iter() {
            if let Some(c) = self.conns.get_mut(id.idx as usize) {
                c.in_flush_list = false;
            }
        }
    }

    /// Note that a connection has output to flush.
    pub(crate) fn mark_flush(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id.idx as usize) {
            if c.id == id {
                c.flush_later(&mut self.flush_list);
            }
        }
    }

    /// True when the connection is finished and its socket should close once
    /// its output is written.
    pub fn is_dead(&self, id: ConnId) -> bool {
        self.conn(id).is_none_or(|c| c.state == ConnState::Dead)
    }

    /// True when the server should read from this connection now: not dead,
    /// and its output is not backed up (a peer that does not read its
    /// deliveries is not read from either).
    pub fn wants_read(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(|c| {
            c.state != ConnState::Dead
                && c.outbox.len() < self.engine.config.max_outbox
                && !(self.engine.alarms.blocked && c.published && c.state != ConnState::Closing)
        })
    }

    /// The server wrote some output; deliveries held back by a full outbox
    /// may resume: their consumers are unblocked, and their queues
    /// dispatch when the server says so ([`Core::run_dispatch`], while the
    /// connection's write budget for the turn lasts) or at the end of the
    /// next turn ([`Core::end_turn`]), after the connections were read.
    /// (Dispatching here without a budget kept the outbox of a consumer
    /// that reads fast full for as long as its queue had messages: it was
    /// never read, and its acks waited while its unacknowledged deliveries
    /// piled up.)
    pub fn output_drained(&mut self, id: ConnId) {
        let half = self.engine.config.max_outbox / 2;
        let Core { conns, engine, .. } = self;
        let Some(c) = conns.get_mut(id.idx as usize).filter(|c| c.id == id) else {
            return;
        };
        if !c.held_back || c.outbox.len() >= half {
            return;
        }
        c.held_back = false;
        for (q, key) in c.held.drain(..) {
            engine.unblock_consumer(q, key);
        }
    }

    /// True when a queue may deliver (the loop must turn again at once).
    pub fn has_dispatch(&self) -> bool {
        self.engine.has_dirty()
    }

    /// The peer closed the socket (or it failed): clean up and forget it.
    pub fn peer_closed(&mut self, id: ConnId) {
        if let Some(c) = self.conn(id).filter(|c| c.mqtt.is_some()) {
            if c.state != ConnState::Dead {
                info!("MQTT connection {}: the client closed the socket", c.peer);
            }
            let now = self.engine.now();
            self.mqtt_gone(id, now);
        } else if let Some(c) = self.conn(id) {
            if !matches!(c.state, ConnState::Dead | ConnState::Closing) {
                info!(
                    "closing AMQP connection {} (peer closed the socket)",
                    c.name()
                );
            }
        }
        self.release_connection(id);
        if self.conn(id).is_some() {
            self.conns.remove(id.idx as usize);
        }
        self.run_dispatch();
    }

    /// Forget a dead connection whose socket the server has closed.
    pub fn remove(&mut self, id: ConnId) {
        self.peer_closed(id)
    }

    /// Parse and handle every complete frame in the connection's input.
    pub fn process(&mut self, id: ConnId, now: Instant) {
        self.engine.advance(now);
        let Some(c) = self.conn_mut(id) else { return };
        if c.mqtt.is_some() {
            return self.mqtt_process(id, now);
        }
        if !c.inbuf.is_empty() {
            c.last_recv = now;
        }
        if c.discard_input {
            c.inbuf.clear();
            return;
        }
        if c.state == ConnState::Header {
            match parse_protocol_header(&c.inbuf) {
                None => return,
                Some(ProtocolHeader::Mismatch) => {
                    // Spec 4.2.2: answer with the header we support, then close.
                    warn!("closing connection {}: bad protocol header", c.peer);
                    c.outbox.buf().extend_from_slice(PROTOCOL_HEADER);
                    c.inbuf.clear();
                    c.state = ConnState::Dead;
                    self.mark_flush(id);
                    return;
                }
                Some(ProtocolHeader::Ok) => {
                    let _ = c.inbuf.split_to(8);
                    self.send_start(id);
                }
            }
        }
        while let Some(c) = self.conn_mut(id) {
            if c.state == ConnState::Dead {
                c.inbuf.clear();
                break;
            }
            let frame_max = c.frame_max;
            match parse_raw_frame(&mut c.inbuf, frame_max) {
                Ok(None) => break,
                Ok(Some(raw)) => {
                    if raw.kind == crate::codec::frame::FRAME_BODY {
                        let n = raw.payload.len();
                        c.large_body = if n >= LARGE_FRAME { n as u32 } else { 0 };
                    }
                    let mark = c.outbox.len();
                    let changes = self.engine.broker.def_changes.len();
                    self.handle_frame(id, raw, now);
                    if self.engine.broker.def_changes.len() > changes {
                        self.depend_on_commit_at(id, mark);
                    }
                }
                Err(e) => {
                    // Not frames any more: close with this error and drop
                    // everything that follows unparsed (one error, not one
                    // per read of garbage).
                    if let Some(c) = self.conn_mut(id) {
                        c.inbuf.clear();
                        c.discard_input = true;
                    }
                    self.connection_error(id, e, now);
                    break;
                }
            }
        }
        self.flush_confirms(id);
        self.run_dispatch();
        if let Some(c) = self.conn(id) {
            if !c.outbox.is_empty() {
                self.mark_flush(id);
            }
        }
    }

    /// The reply about to be queued for `id` depends on this turn's commit
    /// (see `commit_dependents`).
    pub(crate) fn depend_on_commit(&mut self, id: ConnId) {
        let mark = self.conn(id).map_or(0, |c| c.outbox.len());
        self.depend_on_commit_at(id, mark);
    }

    fn depend_on_commit_at(&mut self, id: ConnId, mark: usize) {
        if self.engine.msgs.store.is_some() && !self.commit_dependents.iter().any(|(c, _)| *c == id)
        {
            self.commit_dependents.push((id, mark));
        }
    }

    /// Close the connection with a hard error: send connection.close, drop
    /// its channels, and wait for close-ok.
    pub fn connection_error(&mut self, id: ConnId, e: Error, now: Instant) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.mqtt.is_some() {
            // An operator's close or a shutdown (MQTT 5: DISCONNECT 0x8B
            // server shutting down, 0x98 administrative action).
            let code = if e.code == ReplyCode::CONNECTION_FORCED {
                crate::mqtt::codec::reason::SERVER_SHUTTING_DOWN
            } else {
                crate::mqtt::codec::reason::UNSPECIFIED
            };
            let why = format!("{} {}", e.code, e.reply_text());
            return self.mqtt_close(id, code, &why, now);
        }
        if matches!(c.state, ConnState::Closing | ConnState::Dead) {
            // Closing already: the first error was logged and answered.
            log::debug!(
                "connection {} (closing): {} {}",
                c.peer,
                e.code,
                e.reply_text()
            );
            return;
        }
        warn!(
            "closing AMQP connection {} with {} {} (class {} method {})",
            c.peer,
            e.code,
            e.reply_text(),
            e.class_id,
            e.method_id
        );
        if c.state == ConnState::Header {
            c.state = ConnState::Dead;
            self.mark_flush(id);
            return;
        }
        let close = ConnectionClose {
            reply_code: e.code,
            reply_text: Bytes::from(e.reply_text()),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        c.outbox.method(0, &close.into());
        c.state = ConnState::Closing;
        c.close_deadline = Some(now + CLOSE_TIMEOUT);
        self.release_connection(id);
        self.mark_flush(id);
    }

    /// Close every connection with 320 CONNECTION_FORCED (shutdown).
    pub fn close_all(&mut self, reason: &str, now: Instant) {
        let ids: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in ids {
            let running = self.conn(id).is_some_and(|c| {
                !matches!(
                    c.state,
                    ConnState::Header | ConnState::Dead | ConnState::Closing
                )
            });
            if running {
                self.connection_error(
                    id,
                    Error::new(ReplyCode::CONNECTION_FORCED, reason.to_string()),
                    now,
                );
            } else if let Some(c) = self.conn_mut(id) {
                c.state = ConnState::Dead;
                self.mark_flush(id);
            }
        }
        self.run_dispatch();
    }

    /// Rough bytes of heap in use for messages and connections.
    pub fn memory_estimate(&self) -> u64 {
        self.engine.memory_used() + self.conns.len() as u64 * 8192
    }

    /// True when much of the memory in use at the last peak has been freed
    /// since (see [`Engine::should_trim`]). Cheap; call it every loop turn.
    pub fn should_trim(&mut self) -> bool {
        let in_use = self.memory_estimate();
        self.engine.should_trim(in_use)
    }

    /// Timers: heartbeats, handshake timeout, close timeout.
    pub fn tick(&mut self, now: Instant) {
        self.engine.tick(now);
        if self.engine.wants_checkpoint() {
            let Core { engine, conns, .. } = self;
            let held = conns
                .iter()
                .flat_map(|(_, c)| c.channels.iter())
                .flat_map(|ch| {
                    let in_tx = ch.tx.iter().flatten().flat_map(|op| match op {
                        super::channel::TxOp::Ack(v) | super::channel::TxOp::Nack(v, _) => {
                            v.as_slice()
                        }
                        super::channel::TxOp::Publish(..) => &[],
                    });
                    ch.unacked.iter().chain(in_tx)
                })
                .map(|u| (u.queue, &u.msg));
            engine.checkpoint(held);
        }
        let ids: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        let handshake_timeout = self.engine.config.handshake_timeout;
        let (blocked, max_outbox) = (self.engine.alarms.blocked, self.engine.config.max_outbox);
        for id in ids {
            let Some(c) = self.conn_mut(id) else { continue };
            match c.state {
                ConnState::Dead => {}
                ConnState::Closing => {
                    if c.close_deadline.is_some_and(|d| now >= d) {
                        c.state = ConnState::Dead;
                        self.mark_flush(id);
                    }
                }
                ConnState::Header | ConnState::StartOk | ConnState::TuneOk | ConnState::Open
                    if now.duration_since(c.accepted_at) >= handshake_timeout =>
                {
                    warn!("closing connection {}: handshake timeout", c.peer);
                    c.state = ConnState::Dead;
                    self.release_connection(id);
                    self.mark_flush(id);
                }
                _ => {
                    if c.heartbeat == 0 {
                        continue;
                    }
                    let hb = Duration::from_secs(c.heartbeat as u64);
                    // A connection the server does not read (a publisher
                    // blocked by an alarm, a peer whose output is backed
                    // up: see `wants_read`) has its heartbeats waiting
                    // unread in the socket. Its receive monitor is paused,
                    // as RabbitMQ pauses it for blocked connections, and
                    // starts afresh when reading resumes. A backed-up peer
                    // must still take our output to count as alive.
                    let backed_up = c.outbox.len() >= max_outbox;
                    if backed_up || (blocked && c.published) {
                        c.last_recv = now;
                    }
                    let silent = now.duration_since(c.last_recv) >= hb * 2;
                    let stuck = backed_up && now.duration_since(c.last_write) >= hb * 2;
                    if silent || stuck {
                        if silent {
                            warn!(
                                "closing AMQP connection {}: missed heartbeats from client, timeout: {}s",
                                c.peer, c.heartbeat
                            );
                        } else {
                            warn!(
                                "closing AMQP connection {}: client reads nothing while its output is backed up, timeout: {}s",
                                c.peer,
                                c.heartbeat * 2
                            );
                        }
                        c.state = ConnState::Dead;
                        self.release_connection(id);
                        self.mark_flush(id);
                    } else if now.duration_since(c.last_send) >= hb / 2 {
                        crate::codec::frame::write_heartbeat(c.outbox.buf());
                        c.last_send = now;
                        self.mark_flush(id);
                    }
                }
            }
        }
        self.mqtt_tick(now);
        self.check_consumer_timeouts();
        self.run_dispatch();
    }

    /// Close the channels whose oldest unacknowledged delivery is older
    /// than its consumer timeout: the consumer's `x-consumer-timeout`, else
    /// its queue's (argument or policy), else the global one. As RabbitMQ,
    /// only each channel's oldest delivery is looked at, once per tick: no
    /// cost per message beyond its delivery time.
    fn check_consumer_timeouts(&mut self) {
        let stamp = self.engine.stamp();
        let global = self
            .engine
            .config
            .consumer_timeout
            .map(|d| d.as_millis() as u64);
        let mut expired = Vec::new();
        for (_, c) in self.conns.iter() {
            if c.state != ConnState::Running {
                continue;
            }
            for chan in c.channels.iter() {
                let Some(u) = chan.unacked.front() else {
                    continue;
                };
                if chan.state != crate::amqp::channel::ChanState::Open {
                    continue;
                }
                let own = chan.consumers.get(u.consumer_slot).and_then(|x| x.timeout);
                let queue = self
                    .engine
                    .broker
                    .queue(u.queue)
                    .and_then(|q| q.args.consumer_timeout);
                let Some(ms) = own.or(queue).or(global) else {
                    continue;
                };
                let age_ms = u64::from(stamp.saturating_sub(u.at)) * 100;
                if ms > 0 && age_ms >= ms {
                    expired.push((c.id, chan.id, ms));
                }
            }
        }
        for (id, ch, ms) in expired {
            let e = Error::new(
                ReplyCode::PRECONDITION_FAILED,
                format!(
                    "delivery acknowledgement on channel {ch} timed out. Timeout value used: {ms} ms. \
                     This timeout value can be configured, see consumers doc guide to learn more"
                ),
            );
            self.channel_error(id, ch, e);
            self.mark_flush(id);
        }
    }

    /// The next time [`Core::tick`] has something to do.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        self.engine.next_deadline(now)
    }

    /// When [`Core::tick`] must run before its regular interval.
    pub fn wake_hint(&self) -> Option<Instant> {
        self.engine.wake_hint()
    }

    /// The server read `read` and wrote `written` bytes on a connection.
    pub fn count_io(&mut self, id: ConnId, read: usize, written: usize) {
        self.engine.counters.bytes_in += read as u64;
        self.engine.counters.bytes_out += written as u64;
        if let Some(c) = self.conns.get_mut(id.idx as usize) {
            c.recv_oct += read as u64;
            c.send_oct += written as u64;
        }
    }

    /// The server wrote output to the connection (heartbeat bookkeeping).
    pub fn wrote(&mut self, id: ConnId, now: Instant) {
        if let Some(c) = self.conn_mut(id) {
            c.last_send = now;
            c.last_write = now;
        }
    }
}
