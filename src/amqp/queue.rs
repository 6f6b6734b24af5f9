//! AMQP class `queue`: declare, bind, unbind, purge, delete, each the
//! engine's action behind this connection's permission checks, and the
//! channel's "last declared queue" for empty queue names.

use bytes::Bytes;

use super::dispatch::not_on_channel;
use super::Core;
use crate::broker::auth::Access;
use crate::broker::exchange::Dest;
use crate::broker::{ConnId, QueueSpec};
use crate::codec::*;

impl Core {
    /// queue.* on an open channel.
    pub(super) fn queue_method(
        &mut self,
        id: ConnId,
        ch: u16,
        vhost: Bytes,
        m: Method,
    ) -> Result<(), Error> {
        match m {
            Method::QueueDeclare(d) => self.queue_declare(id, ch, &vhost, d),
            Method::QueueBind(b) => {
                let qn = self.queue_name(id, ch, &b.queue);
                self.check_access(id, Access::Write, "queue", &qn)?;
                self.check_access(id, Access::Read, "exchange", &b.exchange)?;
                self.check_topic(id, Access::Read, &vhost, &b.exchange, &b.routing_key)?;
                let q = self.resolve_queue(id, ch, &vhost, &b.queue)?;
                self.engine.bind(
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
                    Ok(q) => self.engine.unbind(
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
                if let Some((name, vh)) = self.stream_name(q) {
                    return Err(super::stream::not_supported("queue.purge", &name, &vh));
                }
                let (n, durable) = self.engine.purge(q);
                if durable && n > 0 {
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
                let n = self.engine.delete_queue_if(q, d.if_unused, d.if_empty)?;
                self.tell_cancelled();
                if !d.nowait {
                    self.reply(id, ch, QueueDeleteOk { message_count: n }.into());
                }
                Ok(())
            }
            m => Err(not_on_channel(&m)),
        }
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
        let (q, created) = self.engine.declare_queue(
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
        let (name, messages, consumers) = match self.engine.broker.queue(q) {
            Some(qq) => (
                qq.name.clone(),
                qq.message_count(),
                // RabbitMQ's declare-ok counts no consumers of a stream.
                if qq.stream.is_some() {
                    0
                } else {
                    qq.consumers.len() as u32
                },
            ),
            None => return Ok(()),
        };
        if let Some(c) = self.chan(id, ch) {
            c.last_queue = name.clone();
        }
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
}
