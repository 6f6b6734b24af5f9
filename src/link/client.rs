//! A sans-IO AMQP 0-9-1 client connection with one channel, as shovels
//! and federation links need it: the handshake (PLAIN), heartbeats,
//! synchronous calls one at a time, publishing (with publisher confirms),
//! consuming and acknowledging, `connection.blocked`. Bytes in, bytes out,
//! time as an argument; the same codec as the broker's side. What happens
//! comes back as [`Event`]s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::codec::frame::{
    parse_raw_frame, write_heartbeat, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD,
    PROTOCOL_HEADER,
};
use crate::codec::{
    BasicAck, BasicNack, BasicPublish, ChannelCloseOk, ChannelOpen, ConnectionClose,
    ConnectionCloseOk, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, ContentHeader,
    FieldTable, FieldValue, Method, Outbox, ReplyCode,
};

/// The channel every link uses.
const CH: u16 = 1;
/// The largest frame a link asks for.
const FRAME_MAX: u32 = 131_072;

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Protocol header sent, connection.start awaited.
    Start,
    /// connection.tune awaited.
    Tune,
    /// connection.open-ok awaited.
    OpenOk,
    /// channel.open-ok awaited.
    ChannelOk,
    /// Open: calls, publishes, deliveries.
    Ready,
    /// connection.close sent, close-ok awaited.
    Closing,
    /// Over (see [`Event::Closed`]).
    Closed,
}

/// What the peer did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// The connection and its channel are open.
    Ready,
    /// The answer to the oldest outstanding [`Client::call`].
    Reply(Method),
    /// A message delivered to a consumer of this channel.
    Deliver(Delivery),
    /// Publisher confirms: `nack` false for basic.ack.
    Confirm {
        tag: u64,
        multiple: bool,
        nack: bool,
    },
    /// connection.blocked (true) or unblocked (false).
    Blocked(bool),
    /// The consumer was cancelled by the peer (its queue deleted).
    Cancelled,
    /// The connection is over: the peer closed it (its reply code and
    /// text), it closed the channel, or a protocol error or timeout here.
    Closed { code: u16, text: String },
}

/// A delivered message: its raw content header payload is kept, so it can
/// be published on unchanged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Delivery {
    pub tag: u64,
    pub redelivered: bool,
    pub exchange: Bytes,
    pub routing_key: Bytes,
    pub header: Bytes,
    pub body: Bytes,
}

/// A delivery whose content is still arriving.
#[derive(Debug)]
struct Assembling {
    d: Delivery,
    size: u64,
    parts: BytesMut,
    have_header: bool,
}

/// One outbound connection.
#[derive(Debug)]
pub(crate) struct Client {
    state: State,
    user: String,
    pass: String,
    vhost: String,
    name: String,
    /// Heartbeat asked for (seconds; 0: the server's).
    want_heartbeat: Option<u16>,
    heartbeat: u16,
    frame_max: u32,
    input: BytesMut,
    out: Outbox,
    last_recv: Instant,
    last_send: Instant,
    /// Calls not sent yet, and whether one awaits its reply.
    calls: VecDeque<Method>,
    awaiting: bool,
    assembling: Option<Assembling>,
    /// The next publish's confirm sequence number (after confirm.select).
    next_seq: u64,
    events: VecDeque<Event>,
    /// The peer sent connection.blocked.
    pub blocked: bool,
    /// The peer's `cluster_name` server property.
    pub cluster_name: String,
}

impl Client {
    /// A connection that logs in as `user` into `vhost`; `name` goes into
    /// its client properties (`connection_name`), as RabbitMQ's shovel does.
    pub(crate) fn new(
        user: &str,
        pass: &str,
        vhost: &str,
        name: &str,
        heartbeat: Option<u16>,
        now: Instant,
    ) -> Client {
        let mut out = Outbox::new();
        out.buf().extend_from_slice(PROTOCOL_HEADER);
        Client {
            state: State::Start,
            user: user.into(),
            pass: pass.into(),
            vhost: vhost.into(),
            name: name.into(),
            want_heartbeat: heartbeat,
            heartbeat: 0,
            frame_max: FRAME_MAX,
            input: BytesMut::new(),
            out,
            last_recv: now,
            last_send: now,
            calls: VecDeque::new(),
            awaiting: false,
            assembling: None,
            next_seq: 1,
            events: VecDeque::new(),
            blocked: false,
            cluster_name: String::new(),
        }
    }

    /// True once the channel is open and until the connection ends.
    pub(crate) fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// True when the connection is over.
    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes to write.
    pub(crate) fn output(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// The next event, if any.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes read from the peer: frames are handled, events queued.
    pub(crate) fn input(&mut self, data: &[u8], now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.input.extend_from_slice(data);
        self.process(now);
    }

    /// Where a transport reads to; [`Client::process`] then handles it.
    pub(crate) fn input_buffer(&mut self) -> &mut BytesMut {
        &mut self.input
    }

    /// Handle the frames read into [`Client::input_buffer`] at `now`.
    pub(crate) fn process(&mut self, now: Instant) {
        self.last_recv = now;
        loop {
            if self.state == State::Closed {
                self.input.clear();
                return;
            }
            let frame = match parse_raw_frame(&mut self.input, self.frame_max) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => return self.fail(e.code, &e.text),
            };
            let res = match frame.kind {
                FRAME_METHOD => match Method::decode(&frame.payload) {
                    Ok(m) => self.method(frame.channel, m),
                    Err(e) => Err((e.code, e.text.to_string())),
                },
                FRAME_HEADER | FRAME_BODY => self.content(frame.kind, frame.payload),
                FRAME_HEARTBEAT => Ok(()),
                _ => Err((ReplyCode::FRAME_ERROR, "unknown frame type".into())),
            };
            if let Err((code, text)) = res {
                return self.fail(code, &text);
            }
        }
    }

    /// The transport is gone (read EOF, error, connect failure).
    pub(crate) fn transport_closed(&mut self, why: &str) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.events.push_back(Event::Closed {
                code: ReplyCode::CONNECTION_FORCED,
                text: why.to_string(),
            });
        }
    }

    /// A protocol error here: close the connection with `code`.
    fn fail(&mut self, code: u16, text: &str) {
        if self.state == State::Closed {
            return;
        }
        let close = ConnectionClose {
            reply_code: code,
            reply_text: Bytes::from(text.to_string()),
            class_id: 0,
            method_id: 0,
        };
        self.out.method(0, &close.into());
        self.state = State::Closed;
        self.events.push_back(Event::Closed {
            code,
            text: text.to_string(),
        });
    }

    /// Close the connection normally (200); no more events but its end.
    pub(crate) fn close(&mut self) {
        if matches!(self.state, State::Closed | State::Closing) {
            return;
        }
        let close = ConnectionClose {
            reply_code: ReplyCode::REPLY_SUCCESS,
            reply_text: Bytes::from_static(b"shutdown"),
            class_id: 0,
            method_id: 0,
        };
        self.out.method(0, &close.into());
        self.state = State::Closing;
    }

    /// Heartbeats: send one when due; a peer silent for two intervals is
    /// gone. Returns when to call again.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<Instant> {
        if self.heartbeat == 0 || matches!(self.state, State::Closed | State::Start | State::Tune) {
            return None;
        }
        let hb = Duration::from_secs(u64::from(self.heartbeat));
        if now.saturating_duration_since(self.last_recv) > hb * 2 {
            self.transport_closed(&format!(
                "missed heartbeats from the peer ({} s)",
                self.heartbeat
            ));
            return None;
        }
        if now.saturating_duration_since(self.last_send) >= hb / 2 {
            write_heartbeat(self.out.buf());
            self.last_send = now;
        }
        Some((self.last_send + hb / 2).min(self.last_recv + hb * 2 + Duration::from_millis(1)))
    }

    /// Output was written at `now` (heartbeats count from it).
    pub(crate) fn wrote(&mut self, now: Instant) {
        self.last_send = now;
    }

    /// A synchronous method on the channel: sent when the ones before it
    /// are answered; its answer comes as [`Event::Reply`].
    pub(crate) fn call(&mut self, m: Method) {
        self.calls.push_back(m);
        self.send_call();
    }

    fn send_call(&mut self) {
        if self.state != State::Ready || self.awaiting {
            return;
        }
        if let Some(m) = self.calls.pop_front() {
            self.out.method(CH, &m);
            self.awaiting = true;
        }
    }

    /// Publish a message; returns its confirm sequence number (meaningful
    /// after confirm.select).
    pub(crate) fn publish(
        &mut self,
        exchange: &[u8],
        routing_key: &[u8],
        header: &[u8],
        body: &Bytes,
    ) -> u64 {
        let p = BasicPublish {
            ticket: 0,
            exchange: Bytes::copy_from_slice(exchange),
            routing_key: Bytes::copy_from_slice(routing_key),
            mandatory: false,
            immediate: false,
        };
        self.out.method(CH, &p.into());
        self.out.content(CH, header, body, self.frame_max);
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Acknowledge deliveries (up to `tag` with `multiple`).
    pub(crate) fn ack(&mut self, tag: u64, multiple: bool) {
        let a = BasicAck {
            delivery_tag: tag,
            multiple,
        };
        self.out.method(CH, &a.into());
    }

    /// Reject deliveries back to their queue.
    pub(crate) fn nack(&mut self, tag: u64, multiple: bool) {
        let n = BasicNack {
            delivery_tag: tag,
            multiple,
            requeue: true,
        };
        self.out.method(CH, &n.into());
    }

    /// Send a method that has no answer (basic.qos with nowait does not
    /// exist; this is for those that never answer).
    fn send(&mut self, ch: u16, m: Method) {
        self.out.method(ch, &m);
    }

    fn method(&mut self, ch: u16, m: Method) -> Result<(), (u16, String)> {
        if self.assembling.is_some() {
            return Err((
                ReplyCode::UNEXPECTED_FRAME,
                format!("{} while a message's content was expected", m.name()),
            ));
        }
        match (self.state, m) {
            (State::Start, Method::ConnectionStart(s)) => {
                if let Some(n) = s
                    .server_properties
                    .get("cluster_name")
                    .and_then(|v| v.as_bytes())
                {
                    self.cluster_name = String::from_utf8_lossy(n).into_owned();
                }
                let plain = s.mechanisms.split(|&b| b == b' ').any(|m| m == b"PLAIN");
                if !plain {
                    return Err((
                        ReplyCode::ACCESS_REFUSED,
                        "the server does not offer PLAIN authentication".into(),
                    ));
                }
                let mut response = vec![0u8];
                response.extend_from_slice(self.user.as_bytes());
                response.push(0);
                response.extend_from_slice(self.pass.as_bytes());
                let ok = ConnectionStartOk {
                    client_properties: client_properties(&self.name),
                    mechanism: Bytes::from_static(b"PLAIN"),
                    response: Bytes::from(response),
                    locale: Bytes::from_static(b"en_US"),
                };
                self.send(0, ok.into());
                self.state = State::Tune;
            }
            (State::Tune, Method::ConnectionTune(t)) => {
                self.frame_max = match t.frame_max {
                    0 => FRAME_MAX,
                    n => n.min(FRAME_MAX),
                };
                self.heartbeat = match self.want_heartbeat {
                    None => t.heartbeat,
                    Some(0) => 0,
                    Some(h) if t.heartbeat == 0 => h,
                    Some(h) => h.min(t.heartbeat),
                };
                let ok = ConnectionTuneOk {
                    channel_max: if t.channel_max == 0 {
                        2
                    } else {
                        t.channel_max.min(2)
                    },
                    frame_max: self.frame_max,
                    heartbeat: self.heartbeat,
                };
                self.send(0, ok.into());
                let open = ConnectionOpen {
                    virtual_host: Bytes::from(self.vhost.clone()),
                    capabilities: Bytes::new(),
                    insist: false,
                };
                self.send(0, open.into());
                self.state = State::OpenOk;
            }
            (State::OpenOk, Method::ConnectionOpenOk(_)) => {
                self.send(CH, ChannelOpen::default().into());
                self.state = State::ChannelOk;
            }
            (State::ChannelOk, Method::ChannelOpenOk(_)) => {
                self.state = State::Ready;
                self.events.push_back(Event::Ready);
                self.send_call();
            }
            (_, Method::ConnectionClose(c)) => {
                self.send(0, ConnectionCloseOk {}.into());
                self.state = State::Closed;
                self.events.push_back(Event::Closed {
                    code: c.reply_code,
                    text: String::from_utf8_lossy(&c.reply_text).into_owned(),
                });
            }
            (State::Closing, Method::ConnectionCloseOk(_)) => {
                self.state = State::Closed;
                self.events.push_back(Event::Closed {
                    code: ReplyCode::REPLY_SUCCESS,
                    text: "closed".into(),
                });
            }
            (State::Closing, _) => {}
            (_, Method::ConnectionBlocked(_)) => {
                self.blocked = true;
                self.events.push_back(Event::Blocked(true));
            }
            (_, Method::ConnectionUnblocked(_)) => {
                self.blocked = false;
                self.events.push_back(Event::Blocked(false));
            }
            (State::Ready, Method::ChannelClose(c)) if ch == CH => {
                // The channel is gone: so is this link's use of the
                // connection. Answer, then close it.
                self.send(CH, ChannelCloseOk {}.into());
                let text = String::from_utf8_lossy(&c.reply_text).into_owned();
                self.close();
                self.state = State::Closed;
                self.events.push_back(Event::Closed {
                    code: c.reply_code,
                    text,
                });
            }
            (State::Ready, Method::BasicDeliver(d)) if ch == CH => {
                self.assembling = Some(Assembling {
                    d: Delivery {
                        tag: d.delivery_tag,
                        redelivered: d.redelivered,
                        exchange: d.exchange,
                        routing_key: d.routing_key,
                        header: Bytes::new(),
                        body: Bytes::new(),
                    },
                    size: 0,
                    parts: BytesMut::new(),
                    have_header: false,
                });
            }
            (State::Ready, Method::BasicAck(a)) if ch == CH => {
                self.events.push_back(Event::Confirm {
                    tag: a.delivery_tag,
                    multiple: a.multiple,
                    nack: false,
                });
            }
            (State::Ready, Method::BasicNack(n)) if ch == CH => {
                self.events.push_back(Event::Confirm {
                    tag: n.delivery_tag,
                    multiple: n.multiple,
                    nack: true,
                });
            }
            (State::Ready, Method::BasicCancel(_)) if ch == CH => {
                self.events.push_back(Event::Cancelled);
            }
            (State::Ready, m) if ch == CH && self.awaiting && is_reply(&m) => {
                self.awaiting = false;
                self.events.push_back(Event::Reply(m));
                self.send_call();
            }
            (State::Ready, Method::BasicConsumeOk(_)) if ch == CH => {}
            (_, m) => {
                return Err((
                    ReplyCode::COMMAND_INVALID,
                    format!("unexpected {} on channel {ch}", m.name()),
                ))
            }
        }
        Ok(())
    }

    fn content(&mut self, kind: u8, payload: Bytes) -> Result<(), (u16, String)> {
        let Some(a) = self.assembling.as_mut() else {
            return Err((
                ReplyCode::UNEXPECTED_FRAME,
                "content frame without a delivery".into(),
            ));
        };
        if kind == FRAME_HEADER {
            if a.have_header {
                return Err((
                    ReplyCode::UNEXPECTED_FRAME,
                    "a second content header".into(),
                ));
            }
            let h = ContentHeader::decode(&payload).map_err(|e| (e.code, e.text.to_string()))?;
            a.size = h.body_size;
            a.have_header = true;
            a.d.header = payload;
        } else {
            if !a.have_header {
                return Err((
                    ReplyCode::UNEXPECTED_FRAME,
                    "a body before its header".into(),
                ));
            }
            let have = a.parts.len() as u64 + a.d.body.len() as u64;
            if have + payload.len() as u64 > a.size {
                return Err((
                    ReplyCode::FRAME_ERROR,
                    "body larger than its header said".into(),
                ));
            }
            if a.d.body.is_empty() && a.parts.is_empty() {
                // One frame: kept as the slice of the input it is.
                a.d.body = payload;
            } else {
                if !a.d.body.is_empty() {
                    let first = std::mem::take(&mut a.d.body);
                    a.parts.extend_from_slice(&first);
                }
                a.parts.extend_from_slice(&payload);
            }
        }
        let have = a.parts.len() as u64 + a.d.body.len() as u64;
        if a.have_header && have == a.size {
            if let Some(mut a) = self.assembling.take() {
                if !a.parts.is_empty() {
                    a.d.body = a.parts.freeze();
                }
                self.events.push_back(Event::Deliver(a.d));
            }
        }
        Ok(())
    }
}

/// Methods that answer a synchronous call.
fn is_reply(m: &Method) -> bool {
    matches!(
        m,
        Method::QueueDeclareOk(_)
            | Method::QueueBindOk(_)
            | Method::QueueDeleteOk(_)
            | Method::QueueUnbindOk(_)
            | Method::ExchangeDeclareOk(_)
            | Method::ExchangeBindOk(_)
            | Method::ExchangeDeleteOk(_)
            | Method::BasicQosOk(_)
            | Method::BasicConsumeOk(_)
            | Method::BasicCancelOk(_)
            | Method::ConfirmSelectOk(_)
    )
}

fn client_properties(name: &str) -> FieldTable {
    let s = |v: &str| FieldValue::LongStr(Bytes::from(v.to_string()));
    let mut caps = FieldTable::new();
    for cap in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "connection.blocked",
        "basic.nack",
        "authentication_failure_close",
    ] {
        caps.insert(cap, FieldValue::Bool(true));
    }
    let mut t = FieldTable::new();
    t.insert("capabilities", FieldValue::Table(caps));
    t.insert("product", s("warren"));
    t.insert("version", s(env!("CARGO_PKG_VERSION")));
    t.insert("connection_name", s(name));
    t
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::amqp::Core;
    use crate::codec::{BasicConsume, BasicProperties, ConfirmSelect, QueueDeclare};

    /// Move bytes between a client and its connection inside a core until
    /// neither has more; returns the client's events.
    fn pump(
        core: &mut Core,
        id: crate::broker::ConnId,
        c: &mut Client,
        now: Instant,
    ) -> Vec<Event> {
        for _ in 0..100 {
            let mut moved = false;
            if !c.output().is_empty() {
                let b = c.output().take_all();
                core.feed(id, &b, now);
                moved = true;
            }
            core.end_turn(now);
            let out = core.take_output(id);
            if !out.is_empty() {
                c.input(&out, now);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    #[test]
    fn publishes_with_confirms_and_consumes_through_a_core() {
        let now = Instant::now();
        let mut core = Core::new(crate::config::Config::default());
        let id = core.accept_internal("guest", now);
        let mut c = Client::new("guest", "ignored", "/", "test", Some(0), now);
        assert_eq!(pump(&mut core, id, &mut c, now), vec![Event::Ready]);
        c.call(ConfirmSelect { nowait: false }.into());
        c.call(
            QueueDeclare {
                queue: Bytes::from_static(b"q"),
                ..QueueDeclare::default()
            }
            .into(),
        );
        let ev = pump(&mut core, id, &mut c, now);
        assert!(matches!(ev[0], Event::Reply(Method::ConfirmSelectOk(_))));
        assert!(matches!(ev[1], Event::Reply(Method::QueueDeclareOk(_))));
        let mut header = BytesMut::new();
        ContentHeader {
            class_id: 60,
            body_size: 300_000,
            properties: BasicProperties::default(),
        }
        .encode(&mut header);
        let body = Bytes::from(vec![7u8; 300_000]);
        assert_eq!(c.publish(b"", b"q", &header, &body), 1);
        assert_eq!(c.publish(b"", b"q", &header, &body), 2);
        let ev = pump(&mut core, id, &mut c, now);
        let confirmed: u64 = ev
            .iter()
            .map(|e| match e {
                Event::Confirm {
                    tag,
                    multiple: true,
                    ..
                } => *tag,
                Event::Confirm { .. } => 1,
                _ => 0,
            })
            .max()
            .unwrap();
        assert_eq!(confirmed, 2, "{ev:?}");
        c.call(
            BasicConsume {
                queue: Bytes::from_static(b"q"),
                ..BasicConsume::default()
            }
            .into(),
        );
        let ev = pump(&mut core, id, &mut c, now);
        let delivered: Vec<&Delivery> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Deliver(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(delivered.len(), 2, "{ev:?}");
        assert_eq!(delivered[1].body, body);
        assert_eq!(delivered[1].tag, 2);
        c.ack(2, true);
        pump(&mut core, id, &mut c, now);
        c.close();
        let ev = pump(&mut core, id, &mut c, now);
        assert!(
            matches!(ev.last(), Some(Event::Closed { code: 200, .. })),
            "{ev:?}"
        );
        assert!(c.is_closed());
    }
}
