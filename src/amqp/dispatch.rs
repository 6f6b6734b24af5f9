//! Channel-level methods: one handler per spec method. A handler returns an
//! `Error`; soft errors close the channel, hard errors the connection.

use std::time::Instant;

use bytes::Bytes;
use log::warn;

use super::channel::{ChanState, Channel, TxOp};
#[cfg(any(test, feature = "testing"))]
use super::ConnState;
use crate::amqp::Core;
use crate::broker::args::parse_expiration;
use crate::broker::auth::Access;
use crate::broker::ConnId;
use crate::codec::frame::{RawFrame, FRAME_BODY};
use crate::codec::*;

pub(super) fn err(code: u16, text: impl Into<String>) -> Error {
    Error::new(code, text.into())
}

pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// 503 COMMAND_INVALID: a method a client may not send on a channel.
pub(super) fn not_on_channel(m: &Method) -> Error {
    err(
        ReplyCode::COMMAND_INVALID,
        format!(
            "method {} is not valid from a client on a channel",
            m.name()
        ),
    )
}

impl Core {
    /// The error for a channel.open beyond its user's `max-channels` limit
    /// (counted over all the user's connections), if it is.
    fn user_channel_limit(&self, id: ConnId, ch: u16) -> Option<Error> {
        let c = self.conn(id)?;
        if c.channel(ch).is_some() {
            return None;
        }
        let max = self
            .engine
            .broker
            .runtime
            .user_limit(&c.user, "max-channels")?;
        let open: usize = self
            .conns
            .iter()
            .filter(|(_, o)| o.user == c.user)
            .map(|(_, o)| o.channels.len())
            .sum();
        (open as u64 >= max).then(|| {
            let user = String::from_utf8_lossy(&c.user);
            warn!("channel.open of user '{user}' refused: user channel limit ({max}) reached");
            err(
                ReplyCode::NOT_ALLOWED,
                format!("number of channels opened for user '{user}' has reached the maximum allowed user limit of ({max})"),
            )
        })
    }

    /// A method on a non-zero channel.
    pub(crate) fn channel_method(&mut self, id: ConnId, ch: u16, m: Method, now: Instant) {
        if let Method::ChannelOpen(_) = m {
            if let Some(e) = self.user_channel_limit(id, ch) {
                let (cl, me) = m.ids();
                return self.connection_error(id, e.with_method(cl, me), now);
            }
        }
        let Some(c) = self.conn_mut(id) else { return };
        let (cl, me) = m.ids();
        // Channel not open: only channel.open is valid; a closing channel
        // discards everything until close-ok (spec channel.close).
        match c.channel(ch).map(|x| x.state) {
            None => {
                if let Method::ChannelOpen(_) = m {
                    // RabbitMQ counts channels: any number may be opened
                    // while fewer than channel_max are open.
                    let open = c.channels.len();
                    if c.channel_max != 0 && open >= c.channel_max as usize {
                        let e = err(
                            ReplyCode::NOT_ALLOWED,
                            format!(
                                "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                                c.channel_max
                            ),
                        );
                        return self.connection_error(id, e.with_method(cl, me), now);
                    }
                    c.channels.insert(Channel::new(ch));
                    c.outbox.method(
                        ch,
                        &ChannelOpenOk {
                            channel_id: Bytes::new(),
                        }
                        .into(),
                    );
                    return;
                }
                let e = err(
                    ReplyCode::CHANNEL_ERROR,
                    format!("expected 'channel.open' on channel {ch}"),
                );
                return self.connection_error(id, e.with_method(cl, me), now);
            }
            Some(ChanState::Closing) => {
                if let Method::ChannelCloseOk(_) = m {
                    self.drop_channel(id, ch);
                } else if let Method::ChannelClose(_) = m {
                    c.outbox.method(ch, &ChannelCloseOk {}.into());
                }
                return;
            }
            Some(ChanState::Open) => {}
        }
        if c.channel(ch).is_some_and(|x| x.assembly.is_some()) {
            let e = err(
                ReplyCode::UNEXPECTED_FRAME,
                format!("expected content header for class 60, got non content header frame instead ({})", m.name()),
            );
            return self.connection_error(id, e.with_method(cl, me), now);
        }
        if let Err(e) = self.channel_method_inner(id, ch, m) {
            let e = if e.class_id == 0 {
                e.with_method(cl, me)
            } else {
                e
            };
            if e.is_hard() {
                self.connection_error(id, e, now);
            } else {
                self.channel_error(id, ch, e);
            }
        }
    }

    /// Close a channel with a soft error.
    pub(crate) fn channel_error(&mut self, id: ConnId, ch: u16, e: Error) {
        if self.conn(id).is_some_and(|c| c.mqtt.is_some()) {
            // The internal channel of an MQTT connection (a consumer
            // timeout): the connection goes.
            let now = self.engine.now();
            let why = format!("{} {}", e.code, e.reply_text());
            return self.mqtt_close(id, crate::mqtt::codec::reason::UNSPECIFIED, &why, now);
        }
        let Some(c) = self.conn_mut(id) else { return };
        warn!(
            "channel error on connection {}, channel {}: {} {}",
            c.peer,
            ch,
            e.code,
            e.reply_text()
        );
        let close = ChannelClose {
            reply_code: e.code,
            reply_text: Bytes::from(e.reply_text()),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        c.outbox.method(ch, &close.into());
        self.release_channel(id, ch);
        if let Some(x) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) {
            x.state = ChanState::Closing;
        }
    }

    fn drop_channel(&mut self, id: ConnId, ch: u16) {
        self.release_channel(id, ch);
        if let Some(c) = self.conn_mut(id) {
            c.channels.remove(ch);
        }
    }

    pub(super) fn reply(&mut self, id: ConnId, ch: u16, m: Method) {
        if let Some(c) = self.conn_mut(id) {
            c.outbox.method(ch, &m);
        }
    }

    pub(super) fn chan(&mut self, id: ConnId, ch: u16) -> Option<&mut Channel> {
        self.conn_mut(id).and_then(|c| c.channel_mut(ch))
    }

    pub(super) fn vhost_of(&self, id: ConnId) -> Bytes {
        self.conn(id).map(|c| c.vhost.clone()).unwrap_or_default()
    }

    /// An open channel's method, to its class's handler.
    fn channel_method_inner(&mut self, id: ConnId, ch: u16, m: Method) -> Result<(), Error> {
        let vhost = self.vhost_of(id);
        match m.ids().0 {
            40 => self.exchange_method(id, ch, vhost, m),
            50 => self.queue_method(id, ch, vhost, m),
            60 => self.basic_method(id, ch, vhost, m),
            85 | 90 => self.tx_method(id, ch, m),
            _ => self.channel_class(id, ch, m),
        }
    }

    /// channel.* (and access.request) on an open channel.
    fn channel_class(&mut self, id: ConnId, ch: u16, m: Method) -> Result<(), Error> {
        match m {
            Method::ChannelOpen(_) => Err(err(
                ReplyCode::CHANNEL_ERROR,
                format!("second 'channel.open' seen on channel {ch}"),
            )),
            Method::ChannelClose(_) => {
                self.drop_channel(id, ch);
                self.reply(id, ch, ChannelCloseOk {}.into());
                Ok(())
            }
            Method::ChannelCloseOk(_) => Ok(()),
            Method::ChannelFlow(f) => {
                // RabbitMQ no longer lets clients pause deliveries.
                if !f.active {
                    return Err(err(ReplyCode::NOT_IMPLEMENTED, "active=false"));
                }
                self.reply(id, ch, ChannelFlowOk { active: true }.into());
                Ok(())
            }
            Method::ChannelFlowOk(_) => Ok(()),
            Method::AccessRequest(_) => {
                self.reply(id, ch, AccessRequestOk { ticket: 1 }.into());
                Ok(())
            }
            m => Err(not_on_channel(&m)),
        }
    }

    /// 403 ACCESS_REFUSED unless the connection's user has `access` to the
    /// named resource in its vhost.
    pub(crate) fn check_access(
        &self,
        id: ConnId,
        access: Access,
        kind: &str,
        name: &[u8],
    ) -> Result<(), Error> {
        let Some(c) = self.conn(id) else {
            return Ok(());
        };
        // The connection's permissions, resolved at connection.open and
        // refreshed when users or permissions change: no lookup (and no
        // allocation) per publish.
        let name = String::from_utf8_lossy(name);
        let resource = if name.is_empty() {
            "amq.default"
        } else {
            &name
        };
        if c.perm.as_ref().is_some_and(|p| p.allows(access, resource)) {
            return Ok(());
        }
        let user = String::from_utf8_lossy(&c.user);
        let vhost = String::from_utf8_lossy(&c.vhost);
        let shown = if name.is_empty() && kind == "exchange" {
            "amq.default"
        } else {
            &name
        };
        Err(err(
            ReplyCode::ACCESS_REFUSED,
            format!("access to {kind} '{shown}' in vhost '{vhost}' refused for user '{user}'"),
        ))
    }

    /// Topic authorisation (RabbitMQ's topic permissions): on a topic
    /// exchange for which the user has a topic permission, the routing key
    /// of a publish must match its write pattern, the binding key of a bind
    /// or unbind its read pattern. Free when the user has none.
    pub(crate) fn check_topic(
        &self,
        id: ConnId,
        access: Access,
        vhost: &[u8],
        exchange: &[u8],
        routing_key: &[u8],
    ) -> Result<(), Error> {
        let Some(c) = self.conn(id) else {
            return Ok(());
        };
        let Some(t) = c.topic_checks.iter().find(|t| t.exchange == exchange) else {
            return Ok(());
        };
        let topic = self
            .engine
            .broker
            .vhost(vhost)
            .and_then(|v| v.exchanges.get(exchange))
            .is_some_and(|x| x.kind == crate::broker::exchange::ExchangeKind::Topic);
        let key = String::from_utf8_lossy(routing_key);
        if !topic || t.allows(access, &key) {
            return Ok(());
        }
        Err(err(
            ReplyCode::ACCESS_REFUSED,
            format!(
                "access to topic '{key}' in exchange '{}' in vhost '{}' refused for user '{}'",
                lossy(exchange),
                lossy(vhost),
                lossy(&c.user)
            ),
        ))
    }

    /// A queue name as given, or the channel's last declared queue for `""`.
    pub(super) fn queue_name(&mut self, id: ConnId, ch: u16, name: &Bytes) -> Bytes {
        if name.is_empty() {
            self.chan(id, ch)
                .map(|c| c.last_queue.clone())
                .unwrap_or_default()
        } else {
            name.clone()
        }
    }

    /// `""` names the channel's last declared queue (spec queue-name rule).
    pub(super) fn resolve_queue(
        &mut self,
        id: ConnId,
        ch: u16,
        vhost: &[u8],
        name: &Bytes,
    ) -> Result<crate::broker::QueueId, Error> {
        let name = if name.is_empty() {
            self.chan(id, ch)
                .map(|c| c.last_queue.clone())
                .unwrap_or_default()
        } else {
            name.clone()
        };
        if name.is_empty() {
            return Err(err(ReplyCode::NOT_FOUND, "no previously declared queue"));
        }
        self.engine.broker.find_queue(vhost, &name, id)
    }

    /// Content header and body frames for the channel's pending publish.
    pub(crate) fn content_frame(&mut self, id: ConnId, raw: RawFrame, now: Instant) {
        let max_size = self.engine.config.max_message_size;
        let Some(c) = self.conn_mut(id) else { return };
        let ch = raw.channel;
        let Some(chan) = c.channel_mut(ch) else {
            let e = err(
                ReplyCode::CHANNEL_ERROR,
                format!("content frame on channel {ch}, which is not open"),
            );
            return self.connection_error(id, e, now);
        };
        if chan.state == ChanState::Closing {
            return;
        }
        let Some(asm) = chan.assembly.as_mut() else {
            let e = err(
                ReplyCode::UNEXPECTED_FRAME,
                format!("content frame on channel {ch} without basic.publish"),
            );
            return self.connection_error(id, e, now);
        };
        if raw.kind == FRAME_BODY {
            if asm.header.is_none() {
                let e = err(
                    ReplyCode::UNEXPECTED_FRAME,
                    "expected content header for class 60, got content body frame instead",
                );
                return self.connection_error(id, e.with_method(60, 40), now);
            }
            let got = asm.body.len() as u64 + asm.single.as_ref().map_or(0, |b| b.len() as u64);
            if got + raw.payload.len() as u64 > asm.body_size {
                let e = err(
                    ReplyCode::FRAME_ERROR,
                    "content body larger than the size in its header",
                );
                return self.connection_error(id, e.with_method(60, 40), now);
            }
            if got == 0 && raw.payload.len() as u64 == asm.body_size {
                asm.single = Some(raw.payload);
            } else {
                if let Some(first) = asm.single.take() {
                    asm.body.extend_from_slice(&first);
                }
                asm.body.extend_from_slice(&raw.payload);
            }
        } else {
            if asm.header.is_some() {
                let e = err(
                    ReplyCode::UNEXPECTED_FRAME,
                    "expected content body, got content header",
                );
                return self.connection_error(id, e.with_method(60, 40), now);
            }
            let h = match ContentHeader::decode(&raw.payload) {
                Ok(h) => h,
                Err(e) => return self.connection_error(id, e.with_method(60, 40), now),
            };
            if h.body_size > max_size {
                chan.assembly = None;
                let e = err(
                    ReplyCode::PRECONDITION_FAILED,
                    format!(
                        "message size {} is larger than configured max size {}",
                        h.body_size, max_size
                    ),
                );
                return self.channel_error(id, ch, e.with_method(60, 40));
            }
            asm.body_size = h.body_size;
            asm.persistent = h.properties.persistent();
            asm.priority = h.properties.priority.unwrap_or(0);
            asm.ttl = match h.properties.expiration.as_deref().map(parse_expiration) {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(text)) => {
                    chan.assembly = None;
                    let e = err(ReplyCode::PRECONDITION_FAILED, text);
                    return self.channel_error(id, ch, e.with_method(60, 40));
                }
            };
            asm.header = Some(raw.payload);
        }
        let got = asm.body.len() as u64 + asm.single.as_ref().map_or(0, |b| b.len() as u64);
        if asm.header.is_some() && got == asm.body_size {
            if let Some(asm) = chan.assembly.take() {
                let body = match asm.single {
                    Some(b) => b,
                    None => asm.body.freeze(),
                };
                let mut msg = crate::broker::message::Message::new(
                    asm.exchange,
                    asm.routing_key,
                    asm.header.unwrap_or_default(),
                    body,
                    asm.persistent,
                );
                msg.priority = asm.priority;
                msg.ttl = asm.ttl;
                if let Some(ops) = chan.tx.as_mut() {
                    ops.push(TxOp::Publish(msg, asm.mandatory));
                    return;
                }
                if let Err(e) = self.publish(id, ch, msg, asm.mandatory) {
                    let e = e.with_method(60, 40);
                    if e.is_hard() {
                        self.connection_error(id, e, now);
                    } else {
                        self.channel_error(id, ch, e);
                    }
                }
            }
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// True when the connection is open for channel work.
    pub fn is_running(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(|c| c.state == ConnState::Running)
    }
}
