//! Channel-level methods: one handler per spec method. A handler returns an
//! `Error`; soft errors close the channel, hard errors the connection.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use log::warn;

use super::channel::{Assembly, ChanConsumer, ChanState, Channel, TxOp};
use super::persist::Loaded;
use super::ConnState;
use crate::broker::args::{self, parse_expiration};
use crate::broker::auth::Access;
use crate::broker::exchange::Dest;
use crate::broker::queue::ConsumerRef;
use crate::broker::{ConnId, ExchangeSpec, QueueSpec};
use crate::codec::frame::{RawFrame, FRAME_BODY};
use crate::codec::*;
use crate::core::Core;

fn err(code: u16, text: impl Into<String>) -> Error {
    Error::new(code, text.into())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Core {
    /// A method on a non-zero channel.
    pub(crate) fn channel_method(&mut self, id: ConnId, ch: u16, m: Method, now: Instant) {
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

    fn reply(&mut self, id: ConnId, ch: u16, m: Method) {
        if let Some(c) = self.conn_mut(id) {
            c.outbox.method(ch, &m);
        }
    }

    fn chan(&mut self, id: ConnId, ch: u16) -> Option<&mut Channel> {
        self.conn_mut(id).and_then(|c| c.channel_mut(ch))
    }

    fn vhost_of(&self, id: ConnId) -> Bytes {
        self.conn(id).map(|c| c.vhost.clone()).unwrap_or_default()
    }

    fn channel_method_inner(&mut self, id: ConnId, ch: u16, m: Method) -> Result<(), Error> {
        let vhost = self.vhost_of(id);
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
            Method::ExchangeDeclare(d) => {
                if !d.passive {
                    self.check_access(id, Access::Configure, "exchange", &d.exchange)?;
                    if let Some(ae) = d
                        .arguments
                        .get("alternate-exchange")
                        .and_then(|v| v.as_bytes())
                    {
                        self.check_access(id, Access::Write, "exchange", ae)?;
                        self.check_access(id, Access::Read, "exchange", &d.exchange)?;
                    }
                }
                let nowait = d.nowait;
                self.broker.declare_exchange(
                    &vhost,
                    ExchangeSpec {
                        name: d.exchange,
                        kind: d.kind,
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: d.arguments,
                    },
                )?;
                if !nowait {
                    self.reply(id, ch, ExchangeDeclareOk {}.into());
                }
                Ok(())
            }
            Method::ExchangeDelete(d) => {
                self.check_access(id, Access::Configure, "exchange", &d.exchange)?;
                self.broker
                    .delete_exchange(&vhost, &d.exchange, d.if_unused)?;
                if !d.nowait {
                    self.reply(id, ch, ExchangeDeleteOk {}.into());
                }
                Ok(())
            }
            Method::ExchangeBind(b) => {
                self.check_access(id, Access::Write, "exchange", &b.destination)?;
                self.check_access(id, Access::Read, "exchange", &b.source)?;
                self.check_topic(id, Access::Read, &vhost, &b.source, &b.routing_key)?;
                self.broker.bind(
                    &vhost,
                    &b.source,
                    Dest::Exchange(b.destination),
                    b.routing_key,
                    b.arguments,
                )?;
                if !b.nowait {
                    self.reply(id, ch, ExchangeBindOk {}.into());
                }
                Ok(())
            }
            Method::ExchangeUnbind(b) => {
                self.check_access(id, Access::Write, "exchange", &b.destination)?;
                self.check_access(id, Access::Read, "exchange", &b.source)?;
                self.check_topic(id, Access::Read, &vhost, &b.source, &b.routing_key)?;
                self.broker.unbind(
                    &vhost,
                    &b.source,
                    Dest::Exchange(b.destination),
                    b.routing_key,
                    b.arguments,
                )?;
                if !b.nowait {
                    self.reply(id, ch, ExchangeUnbindOk {}.into());
                }
                Ok(())
            }
            Method::QueueDeclare(d) => self.queue_declare(id, ch, &vhost, d),
            Method::QueueBind(b) => {
                let qn = self.queue_name(id, ch, &b.queue);
                self.check_access(id, Access::Write, "queue", &qn)?;
                self.check_access(id, Access::Read, "exchange", &b.exchange)?;
                self.check_topic(id, Access::Read, &vhost, &b.exchange, &b.routing_key)?;
                let q = self.resolve_queue(id, ch, &vhost, &b.queue)?;
                self.broker.bind(
                    &vhost,
                    &b.exchange,
                    Dest::Queue(q),
                    b.routing_key,
                    b.arguments,
                )?;
                if !b.nowait {
                    self.reply(id, ch, QueueBindOk {}.into());
                }
                Ok(())
            }
            Method::QueueUnbind(b) => {
                let qn = self.queue_name(id, ch, &b.queue);
                self.check_access(id, Access::Write, "queue", &qn)?;
                self.check_access(id, Access::Read, "exchange", &b.exchange)?;
                self.check_topic(id, Access::Read, &vhost, &b.exchange, &b.routing_key)?;
                // Unbinding a missing queue succeeds (RabbitMQ).
                match self.resolve_queue(id, ch, &vhost, &b.queue) {
                    Ok(q) => self.broker.unbind(
                        &vhost,
                        &b.exchange,
                        Dest::Queue(q),
                        b.routing_key,
                        b.arguments,
                    )?,
                    Err(e) if e.code == ReplyCode::NOT_FOUND => {}
                    Err(e) => return Err(e),
                }
                self.reply(id, ch, QueueUnbindOk {}.into());
                Ok(())
            }
            Method::QueuePurge(p) => {
                let qn = self.queue_name(id, ch, &p.queue);
                self.check_access(id, Access::Read, "queue", &qn)?;
                let q = self.resolve_queue(id, ch, &vhost, &p.queue)?;
                let (gone, sid) = match self.broker.queue_mut(q) {
                    Some(q) => (q.purge(), q.store_id),
                    None => Default::default(),
                };
                let n = gone.len() as u32;
                for m in &gone {
                    self.forget(sid, m);
                }
                if sid.is_some() && n > 0 {
                    // purge-ok says the messages are gone for good.
                    self.depend_on_commit(id);
                }
                if !p.nowait {
                    self.reply(id, ch, QueuePurgeOk { message_count: n }.into());
                }
                Ok(())
            }
            Method::QueueDelete(d) => {
                let qn = self.queue_name(id, ch, &d.queue);
                self.check_access(id, Access::Configure, "queue", &qn)?;
                // Deleting a missing queue succeeds with a count of 0 (RabbitMQ).
                let q = match self.resolve_queue(id, ch, &vhost, &d.queue) {
                    Ok(q) => q,
                    Err(e) if e.code == ReplyCode::NOT_FOUND => {
                        if !d.nowait {
                            self.reply(id, ch, QueueDeleteOk { message_count: 0 }.into());
                        }
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                if let Some(qq) = self.broker.queue(q) {
                    if d.if_unused && !qq.consumers.is_empty() {
                        return Err(err(
                            ReplyCode::PRECONDITION_FAILED,
                            format!(
                                "queue '{}' in vhost '{}' in use",
                                lossy(&d.queue),
                                lossy(&vhost)
                            ),
                        ));
                    }
                    if d.if_empty && !qq.ready.is_empty() {
                        return Err(err(
                            ReplyCode::PRECONDITION_FAILED,
                            format!(
                                "queue '{}' in vhost '{}' not empty",
                                lossy(&d.queue),
                                lossy(&vhost)
                            ),
                        ));
                    }
                }
                let n = self.delete_queue(q);
                if !d.nowait {
                    self.reply(id, ch, QueueDeleteOk { message_count: n }.into());
                }
                Ok(())
            }
            Method::BasicQos(q) => {
                if q.prefetch_size != 0 {
                    return Err(err(
                        ReplyCode::NOT_IMPLEMENTED,
                        format!("prefetch_size!=0 ({})", q.prefetch_size),
                    ));
                }
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                if q.global {
                    c.global_prefetch = q.prefetch_count;
                } else {
                    c.prefetch_count = q.prefetch_count;
                }
                // New limits: every consumer of the channel may take
                // messages again.
                c.global_blocked.clear();
                let consumers: Vec<_> =
                    c.consumers.iter().map(|(_, k)| (k.queue, k.qkey)).collect();
                self.reply(id, ch, BasicQosOk {}.into());
                for (q, key) in consumers {
                    super::deliver::unblock_consumer(
                        &mut self.broker,
                        &mut self.dirty_queues,
                        q,
                        key,
                    );
                }
                Ok(())
            }
            Method::BasicConsume(bc) => self.basic_consume(id, ch, &vhost, bc),
            Method::BasicCancel(bc) => {
                if let Some(c) = self.chan(id, ch) {
                    if c.reply_consumer.as_ref() == Some(&bc.consumer_tag) {
                        c.reply_consumer = None;
                    }
                }
                self.cancel_consumer(id, ch, &bc.consumer_tag);
                if !bc.nowait {
                    self.reply(
                        id,
                        ch,
                        BasicCancelOk {
                            consumer_tag: bc.consumer_tag,
                        }
                        .into(),
                    );
                }
                Ok(())
            }
            Method::BasicPublish(p) => {
                if p.immediate {
                    return Err(err(ReplyCode::NOT_IMPLEMENTED, "immediate=true"));
                }
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                c.assembly = Some(Assembly {
                    exchange: p.exchange,
                    routing_key: p.routing_key,
                    mandatory: p.mandatory,
                    header: None,
                    persistent: false,
                    priority: 0,
                    ttl: None,
                    body_size: 0,
                    body: BytesMut::new(),
                    single: None,
                });
                Ok(())
            }
            Method::BasicGet(g) => self.basic_get(id, ch, &vhost, g),
            Method::BasicAck(a) => self.basic_ack(id, ch, a.delivery_tag, a.multiple),
            Method::BasicNack(n) => self.basic_nack(id, ch, n.delivery_tag, n.multiple, n.requeue),
            Method::BasicReject(r) => self.basic_nack(id, ch, r.delivery_tag, false, r.requeue),
            Method::BasicRecover(r) => {
                self.recover(id, ch, r.requeue)?;
                self.reply(id, ch, BasicRecoverOk {}.into());
                Ok(())
            }
            Method::BasicRecoverAsync(r) => self.recover(id, ch, r.requeue),
            Method::ConfirmSelect(s) => {
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                if c.tx.is_some() {
                    return Err(err(
                        ReplyCode::PRECONDITION_FAILED,
                        "cannot switch from tx to confirm mode",
                    ));
                }
                c.confirm = true;
                if !s.nowait {
                    self.reply(id, ch, ConfirmSelectOk {}.into());
                }
                Ok(())
            }
            Method::TxSelect(_) => {
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                if c.confirm {
                    return Err(err(
                        ReplyCode::PRECONDITION_FAILED,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if c.tx.is_none() {
                    c.tx = Some(Vec::new());
                }
                self.reply(id, ch, TxSelectOk {}.into());
                Ok(())
            }
            Method::TxCommit(_) => {
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                let Some(ops) = c.tx.replace(Vec::new()) else {
                    return Err(err(
                        ReplyCode::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                };
                // commit-ok says the persistent publishes are on disk: it
                // depends on this turn's commit if the transaction stored any.
                let earlier = std::mem::take(&mut self.force_sync);
                let res = self.tx_commit(id, ch, ops);
                let stored = self.force_sync;
                self.force_sync |= earlier;
                res?;
                if stored {
                    self.depend_on_commit(id);
                }
                self.reply(id, ch, TxCommitOk {}.into());
                Ok(())
            }
            Method::TxRollback(_) => {
                let Some(c) = self.chan(id, ch) else {
                    return Ok(());
                };
                let Some(ops) = c.tx.replace(Vec::new()) else {
                    return Err(err(
                        ReplyCode::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                };
                self.tx_rollback(ops, id, ch);
                self.reply(id, ch, TxRollbackOk {}.into());
                Ok(())
            }
            m => Err(err(
                ReplyCode::COMMAND_INVALID,
                format!(
                    "method {} is not valid from a client on a channel",
                    m.name()
                ),
            )),
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
    fn queue_name(&mut self, id: ConnId, ch: u16, name: &Bytes) -> Bytes {
        if name.is_empty() {
            self.chan(id, ch)
                .map(|c| c.last_queue.clone())
                .unwrap_or_default()
        } else {
            name.clone()
        }
    }

    /// `""` names the channel's last declared queue (spec queue-name rule).
    fn resolve_queue(
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
        self.broker.find_queue(vhost, &name, id)
    }

    fn queue_declare(
        &mut self,
        id: ConnId,
        ch: u16,
        vhost: &Bytes,
        d: QueueDeclare,
    ) -> Result<(), Error> {
        if d.queue == super::reply_to::REPLY_TO {
            // The direct reply-to pseudo-queue always "exists", empty.
            if !d.nowait {
                let ok = QueueDeclareOk {
                    queue: d.queue,
                    message_count: 0,
                    consumer_count: 0,
                };
                self.reply(id, ch, ok.into());
            }
            return Ok(());
        }
        if !d.passive && !d.queue.is_empty() {
            self.check_access(id, Access::Configure, "queue", &d.queue)?;
            if let Some(x) = d
                .arguments
                .get("x-dead-letter-exchange")
                .and_then(|v| v.as_bytes())
            {
                self.check_access(id, Access::Write, "exchange", x)?;
                self.check_access(id, Access::Read, "queue", &d.queue)?;
            }
        }
        let salt = (id.idx as u64) << 32 | ch as u64;
        let (q, created) = self.broker.declare_queue(
            vhost,
            QueueSpec {
                name: d.queue,
                passive: d.passive,
                durable: d.durable,
                exclusive: d.exclusive,
                auto_delete: d.auto_delete,
                arguments: d.arguments,
            },
            id,
            salt,
        )?;
        if created && d.exclusive {
            if let Some(c) = self.conn_mut(id) {
                c.exclusive_queues.push(q);
            }
        }
        let (name, messages, consumers) = match self.broker.queue(q) {
            Some(qq) => (
                qq.name.clone(),
                qq.message_count(),
                qq.consumers.len() as u32,
            ),
            None => return Ok(()),
        };
        if let Some(c) = self.chan(id, ch) {
            c.last_queue = name.clone();
        }
        self.expire_queue(q);
        self.touch_queue(q);
        let (messages, consumers) = match self.broker.queue(q) {
            Some(qq) => (qq.message_count(), qq.consumers.len() as u32),
            None => (messages, consumers),
        };
        if !d.nowait {
            let ok = QueueDeclareOk {
                queue: name,
                message_count: messages,
                consumer_count: consumers,
            };
            self.reply(id, ch, ok.into());
        }
        Ok(())
    }

    fn basic_consume(
        &mut self,
        id: ConnId,
        ch: u16,
        vhost: &Bytes,
        bc: BasicConsume,
    ) -> Result<(), Error> {
        if bc.queue == super::reply_to::REPLY_TO {
            let tag = if bc.consumer_tag.is_empty() {
                self.broker
                    .gen_name("amq.ctag-", (id.idx as u64) << 16 | ch as u64)
            } else {
                bc.consumer_tag.clone()
            };
            return self.consume_reply_to(id, ch, tag, bc.no_ack, bc.nowait);
        }
        let qn = self.queue_name(id, ch, &bc.queue);
        self.check_access(id, Access::Read, "queue", &qn)?;
        let q = self.resolve_queue(id, ch, vhost, &bc.queue)?;
        let priority = args::consumer_priority(&bc.arguments).map_err(|e| {
            let name = self.broker.queue(q).map(|x| x.name.clone());
            e.into_error(&name.unwrap_or_default(), vhost)
        })?;
        let tag = if bc.consumer_tag.is_empty() {
            self.broker
                .gen_name("amq.ctag-", (id.idx as u64) << 16 | ch as u64)
        } else {
            bc.consumer_tag.clone()
        };
        let Some(c) = self.chan(id, ch) else {
            return Ok(());
        };
        if c.consumers.contains(&tag) {
            return Err(err(
                ReplyCode::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{}'", lossy(&tag)),
            ));
        }
        let prefetch = c.prefetch_count;
        let Some(queue) = self.broker.queue_mut(q) else {
            return Ok(());
        };
        // RabbitMQ refuses exclusive consumers on single-active-consumer queues.
        let shared = !queue.consumers.is_empty() || queue.args.single_active_consumer;
        if queue.exclusive_consumer || (bc.exclusive && shared) {
            return Err(err(
                ReplyCode::ACCESS_REFUSED,
                format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    lossy(&queue.name),
                    lossy(vhost)
                ),
            ));
        }
        queue.exclusive_consumer = bc.exclusive;
        let Some(c) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) else {
            return Ok(());
        };
        let slot = c.consumers.insert(ChanConsumer {
            tag: tag.clone(),
            queue: q,
            qkey: u32::MAX,
            no_ack: bc.no_ack,
            prefetch,
            unacked: 0,
        });
        let qkey = self.broker.queue_mut(q).map(|queue| {
            queue.add_consumer(ConsumerRef {
                conn: id,
                channel: ch,
                tag: tag.clone(),
                priority,
                slot,
            })
        });
        if let Some(k) = self.chan(id, ch).and_then(|c| c.consumers.get_mut(slot)) {
            k.qkey = qkey.unwrap_or(u32::MAX);
        }
        self.touch_queue(q);
        if !bc.nowait {
            self.reply(id, ch, BasicConsumeOk { consumer_tag: tag }.into());
        }
        self.mark_queue(q);
        Ok(())
    }

    fn get_empty(&mut self, id: ConnId, ch: u16) -> Result<(), Error> {
        let empty = BasicGetEmpty {
            cluster_id: Bytes::new(),
        };
        self.reply(id, ch, empty.into());
        Ok(())
    }

    fn basic_get(&mut self, id: ConnId, ch: u16, vhost: &Bytes, g: BasicGet) -> Result<(), Error> {
        let qn = self.queue_name(id, ch, &g.queue);
        self.check_access(id, Access::Read, "queue", &qn)?;
        let q = self.resolve_queue(id, ch, vhost, &g.queue)?;
        self.expire_queue(q);
        self.touch_queue(q);
        let frame_max = self.conn(id).map(|c| c.frame_max).unwrap_or(0);
        let Some(queue) = self.broker.queue(q) else {
            return Ok(());
        };
        let sid = queue.store_id;
        let quorum = queue.args.quorum;
        // The head, or the first one after those that cannot be read
        // (damaged records: logged and dropped).
        let m = loop {
            let Some(mut m) = self.broker.queue_mut(q).and_then(|queue| queue.pop()) else {
                return self.get_empty(id, ch);
            };
            match self.load_msg(&mut m) {
                Loaded::Yes => break m,
                Loaded::Lost => {}
                Loaded::Later => {
                    // Cannot be read for now (logged): it stays at the
                    // head, and the queue answers as if empty until it can.
                    if let Some(queue) = self.broker.queue_mut(q) {
                        queue.unpop(m);
                    }
                    return self.get_empty(id, ch);
                }
            }
        };
        let Some(queue) = self.broker.queue_mut(q) else {
            return Ok(());
        };
        let remaining = queue.message_count();
        if !g.no_ack {
            queue.unacked += 1;
        }
        queue.stats.get += 1;
        queue.stats.redeliver += u64::from(m.redelivered());
        self.counters.get += 1;
        self.counters.redeliver += u64::from(m.redelivered());
        match (sid, m.stored(), self.store.as_mut()) {
            (Some(s), Some(r), Some(st)) if !g.no_ack && !m.redelivered() => st.delivered(s, &r),
            _ => {}
        }
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let Some(chan) = c.channels.get_mut(ch) else {
            return Ok(());
        };
        chan.last_tag += 1;
        let tag = chan.last_tag;
        let ok = BasicGetOk {
            delivery_tag: tag,
            redelivered: m.redelivered(),
            exchange: m.exchange(),
            routing_key: m.routing_key(),
            message_count: remaining,
        };
        c.outbox.method(ch, &ok.into());
        let count = quorum.then(|| m.returns());
        m.write_delivery(&mut c.outbox, ch, frame_max, None, count);
        if g.no_ack {
            self.forget(sid, &m);
        } else {
            chan.unacked.push_back(super::channel::Unacked {
                tag,
                queue: q,
                msg: m,
                consumer: None,
                consumer_slot: u32::MAX,
            });
        }
        Ok(())
    }

    /// Content header and body frames for the channel's pending publish.
    pub(crate) fn content_frame(&mut self, id: ConnId, raw: RawFrame, now: Instant) {
        let max_size = self.config.max_message_size;
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

    /// True when the connection is open for channel work.
    pub fn is_running(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(|c| c.state == ConnState::Running)
    }
}
