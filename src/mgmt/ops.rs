//! Message operations the API performs on the core without a channel:
//! publishing through an exchange (the broker's routing and enqueue path),
//! getting messages from a queue with RabbitMQ's ack modes, purging, and
//! queue lookup that ignores exclusivity (an operator may look at anything).

use bytes::Bytes;

use crate::amqp::Core;
use crate::broker::message::{Message, QueuedMsg};
use crate::broker::QueueId;
use crate::codec::{Error, ReplyCode};
use crate::engine::{count_taken, Taken};

/// A message taken by [`Core::api_get`].
#[derive(Debug, Clone)]
pub struct GotMessage {
    /// Exchange it was published to.
    pub exchange: Bytes,
    /// Its routing key.
    pub routing_key: Bytes,
    /// The raw content header.
    pub header: Bytes,
    /// The body.
    pub body: Bytes,
    /// Delivered before.
    pub redelivered: bool,
    /// Ready messages left in the queue after it.
    pub message_count: u32,
}

/// What happens to messages taken by the API (RabbitMQ's `ackmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// `ack_requeue_true`: look, and put back (marked redelivered).
    AckRequeue,
    /// `ack_requeue_false`: take them away.
    Ack,
    /// `reject_requeue_true`: put back.
    RejectRequeue,
    /// `reject_requeue_false`: reject (dead-letter if configured).
    Reject,
}

impl AckMode {
    /// Parse RabbitMQ's name.
    pub fn parse(s: &str) -> Option<AckMode> {
        Some(match s {
            "ack_requeue_true" => AckMode::AckRequeue,
            "ack_requeue_false" => AckMode::Ack,
            "reject_requeue_true" => AckMode::RejectRequeue,
            "reject_requeue_false" => AckMode::Reject,
            _ => return None,
        })
    }
}

fn not_found_queue(vhost: &[u8], name: &[u8]) -> Error {
    Error::new(
        ReplyCode::NOT_FOUND,
        format!(
            "no queue '{}' in vhost '{}'",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(vhost)
        ),
    )
}

impl Core {
    /// A queue by vhost and name, exclusive or not.
    pub fn api_queue(&self, vhost: &[u8], name: &[u8]) -> Option<QueueId> {
        self.engine.find_queue(vhost, name)
    }

    /// Publish a message through `exchange` as a channel would: the same
    /// publish action (direct reply-to, routing incl. CC/BCC and alternate
    /// exchanges, store, length limits), then dispatch. True if it reached
    /// a queue.
    pub fn api_publish(&mut self, vhost: &[u8], msg: Message) -> Result<bool, Error> {
        let r = self.publish_message(vhost, msg, false)?;
        // Written before this turn ends, like a confirmed publish.
        self.engine.force_sync |= r.stored;
        self.run_dispatch();
        Ok(r.routed)
    }

    /// Take up to `count` messages from a queue and settle them per `mode`.
    pub fn api_get(
        &mut self,
        vhost: &[u8],
        name: &[u8],
        count: usize,
        mode: AckMode,
    ) -> Result<Vec<GotMessage>, Error> {
        let q = self
            .api_queue(vhost, name)
            .ok_or_else(|| not_found_queue(vhost, name))?;
        if self
            .engine
            .broker
            .queue(q)
            .is_some_and(|x| x.stream.is_some())
        {
            return Err(Error::new(
                crate::codec::ReplyCode::NOT_IMPLEMENTED,
                format!(
                    "basic.get not supported by stream queues queue '{}' in vhost '{}'",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(vhost)
                ),
            ));
        }
        let e = &mut self.engine;
        e.expire_queue(q);
        e.touch_queue(q);
        let mut got = Vec::new();
        let mut taken: Vec<QueuedMsg> = Vec::new();
        while got.len() < count {
            let Some(queue) = e.broker.queue_mut(q) else {
                break;
            };
            let (m, content) = match e.msgs.take(queue, true) {
                Taken::Msg(m, content) => (m, content),
                Taken::Empty | Taken::Later => break,
            };
            count_taken(queue, &mut e.counters, &m, true);
            queue.unacked += 1;
            let remaining = queue.message_count();
            let sid = queue.store_id;
            e.msgs.delivered(sid, &m);
            let (header, body) = content.unwrap_or_else(|| (m.header(), m.body()));
            got.push(GotMessage {
                exchange: m.exchange(),
                routing_key: m.routing_key(),
                header,
                body,
                redelivered: m.redelivered(),
                message_count: remaining,
            });
            taken.push(m);
        }
        let requeue = matches!(mode, AckMode::AckRequeue | AckMode::RejectRequeue);
        if requeue {
            e.requeue_many(taken.into_iter().map(|m| (q, m)));
        } else {
            for m in taken {
                match mode {
                    AckMode::Reject => e.reject(q, m),
                    _ => e.ack(q, m, true),
                }
            }
        }
        e.mark_queue(q);
        self.run_dispatch();
        Ok(got)
    }

    /// Remove a queue's ready messages; returns how many.
    pub fn api_purge(&mut self, q: QueueId) -> u32 {
        self.engine.purge(q).0
    }
}
