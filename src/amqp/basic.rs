//! AMQP class `basic`: qos, consume, cancel, publish (the start of a
//! message; its content frames are assembled in `dispatch.rs`), get, ack,
//! nack, reject, recover.

use bytes::{Bytes, BytesMut};

use super::channel::{Assembly, ChanConsumer};
use super::dispatch::{err, lossy, not_on_channel};
use super::Core;
use crate::broker::args;
use crate::broker::auth::Access;
use crate::broker::queue::ConsumerRef;
use crate::broker::{ConnId, QueueId};
use crate::codec::*;
use crate::engine::{count_taken, Taken};

/// A consumer to add (see [`Core::add_consumer`]).
#[derive(Debug)]
pub(crate) struct Consume {
    /// Consumer tag (unique on its channel).
    pub tag: Bytes,
    /// Deliveries need no acknowledgement.
    pub no_ack: bool,
    /// The queue's only consumer.
    pub exclusive: bool,
    /// `x-priority`.
    pub priority: i32,
    /// `x-consumer-timeout` in milliseconds.
    pub timeout: Option<u64>,
    /// Its consume arguments, when it had some (the management API shows
    /// them).
    pub arguments: Option<Box<FieldTable>>,
}

impl Core {
    /// basic.* on an open channel.
    pub(super) fn basic_method(
        &mut self,
        id: ConnId,
        ch: u16,
        vhost: Bytes,
        m: Method,
    ) -> Result<(), Error> {
        match m {
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
                    self.engine.unblock_consumer(q, key);
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
            m => Err(not_on_channel(&m)),
        }
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
                self.engine
                    .broker
                    .gen_name("amq.ctag-", (id.idx as u64) << 16 | ch as u64)
            } else {
                bc.consumer_tag.clone()
            };
            return self.consume_reply_to(id, ch, tag, bc.no_ack, bc.nowait);
        }
        let qn = self.queue_name(id, ch, &bc.queue);
        self.check_access(id, Access::Read, "queue", &qn)?;
        let q = self.resolve_queue(id, ch, vhost, &bc.queue)?;
        let reader = self.stream_consume_checks(id, ch, q, &bc)?;
        let arg_error = |e: args::ArgError| {
            let name = self.engine.broker.queue(q).map(|x| x.name.clone());
            e.into_error(&name.unwrap_or_default(), vhost)
        };
        let priority = args::consumer_priority(&bc.arguments).map_err(arg_error)?;
        let timeout = args::consumer_timeout(&bc.arguments).map_err(arg_error)?;
        let tag = if bc.consumer_tag.is_empty() {
            self.engine
                .broker
                .gen_name("amq.ctag-", (id.idx as u64) << 16 | ch as u64)
        } else {
            bc.consumer_tag.clone()
        };
        let c = Consume {
            tag: tag.clone(),
            no_ack: bc.no_ack,
            // Every reader of a stream reads it all: none is exclusive.
            exclusive: bc.exclusive && reader.is_none(),
            priority,
            timeout,
            arguments: (!bc.arguments.is_empty()).then(|| Box::new(bc.arguments.clone())),
        };
        self.add_consumer(id, ch, vhost, q, c)?;
        if let Some(r) = reader {
            self.attach_reader(id, ch, q, &tag, r);
        }
        if !bc.nowait {
            self.reply(id, ch, BasicConsumeOk { consumer_tag: tag }.into());
        }
        Ok(())
    }

    /// The consume action as every front door takes it: consumer `c` on
    /// queue `q` for channel `ch` of connection `id` (a tag in use there is
    /// 530, an exclusive consumer where another is 403), then the queue
    /// may deliver to it.
    pub(crate) fn add_consumer(
        &mut self,
        id: ConnId,
        ch: u16,
        vhost: &[u8],
        q: QueueId,
        c: Consume,
    ) -> Result<(), Error> {
        let Consume {
            tag,
            no_ack,
            exclusive,
            priority,
            timeout,
            arguments,
        } = c;
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
        let Some(queue) = self.engine.broker.queue_mut(q) else {
            return Ok(());
        };
        // RabbitMQ refuses exclusive consumers on single-active-consumer queues.
        let shared = !queue.consumers.is_empty() || queue.args.single_active_consumer;
        if queue.exclusive_consumer || (exclusive && shared) {
            return Err(err(
                ReplyCode::ACCESS_REFUSED,
                format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    lossy(&queue.name),
                    lossy(vhost)
                ),
            ));
        }
        queue.exclusive_consumer = exclusive;
        let Some(c) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) else {
            return Ok(());
        };
        let slot = c.consumers.insert(ChanConsumer {
            tag: tag.clone(),
            queue: q,
            qkey: u32::MAX,
            no_ack,
            prefetch,
            unacked: 0,
            timeout,
            arguments,
        });
        let qkey = self.engine.broker.queue_mut(q).map(|queue| {
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
        self.engine.touch_queue(q);
        self.engine.mark_queue(q);
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
        if let Some((name, vh)) = self.stream_name(q) {
            return Err(super::stream::not_supported("basic.get", &name, &vh));
        }
        self.engine.expire_queue(q);
        self.engine.touch_queue(q);
        let Core { engine, conns, .. } = self;
        let Some(c) = conns.get_mut(id.idx as usize).filter(|c| c.id == id) else {
            return Ok(());
        };
        let stamp = engine.stamp();
        let Some(queue) = engine.broker.queue_mut(q) else {
            return Ok(());
        };
        // The head, or the first one after those that cannot be read
        // (damaged records: logged and dropped). One that cannot be read
        // for now stays at the head, and the queue answers as if empty
        // until it can.
        let (m, from_store) = match engine.msgs.take(queue, true) {
            Taken::Msg(m, content) => (m, content),
            Taken::Empty | Taken::Later => return self.get_empty(id, ch),
        };
        let Some(chan) = c.channels.get_mut(ch) else {
            queue.unpop(m);
            return Ok(());
        };
        count_taken(queue, &mut engine.counters, &m, true);
        let remaining = queue.message_count();
        let (sid, quorum) = (queue.store_id, queue.args.quorum);
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
        let count = quorum.then(|| m.returns()).filter(|&n| n > 0);
        m.write_delivery(&mut c.outbox, ch, c.frame_max, from_store.as_ref(), count);
        if g.no_ack {
            queue.leave(&m);
            engine.msgs.forget(sid, &m);
        } else {
            queue.unacked += 1;
            engine.msgs.delivered(sid, &m);
            chan.unacked.push_back(super::channel::Unacked {
                tag,
                queue: q,
                msg: m,
                consumer: None,
                consumer_slot: u32::MAX,
                at: stamp,
            });
        }
        Ok(())
    }
}
