//! Message operations the API performs on the core without a channel:
//! publishing through an exchange (the broker's routing and enqueue path),
//! getting messages from a queue with RabbitMQ's ack modes, purging, and
//! queue lookup that ignores exclusivity (an operator may look at anything).

use bytes::Bytes;

use crate::broker::message::{Message, QueuedMsg};
use crate::broker::QueueId;
use crate::codec::{ContentHeader, Error, ReplyCode};
use crate::conn::persist::Loaded;
use crate::core::Core;

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
        let id = *self.broker.vhost(vhost)?.queues.get(name)?;
        self.broker.queue(id).map(|q| q.id)
    }

    /// Publish a message through `exchange` as a channel would (routing,
    /// alternate exchanges, store, length limits, dispatch). True if it
    /// reached a queue.
    pub fn api_publish(&mut self, vhost: &[u8], msg: Message) -> Result<bool, Error> {
        self.broker.check_publish(vhost, &msg.exchange)?;
        let headers = ContentHeader::decode(&msg.header)
            .ok()
            .and_then(|h| h.properties.headers);
        let mut out = std::mem::take(&mut self.route_scratch);
        self.broker.route(
            vhost,
            &msg.exchange,
            &msg.routing_key,
            headers.as_ref(),
            &mut out,
        );
        self.counters.publish += 1;
        let routed = !out.is_empty();
        if routed {
            let (_, stored) = self.enqueue(msg, &out);
            // Written before this turn ends, like a confirmed publish.
            self.force_sync |= stored;
        } else {
            self.counters.drop_unroutable += 1;
        }
        self.route_scratch = out;
        self.run_dispatch();
        Ok(routed)
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
        self.expire_queue(q);
        self.touch_queue(q);
        let mut got = Vec::new();
        let mut taken: Vec<QueuedMsg> = Vec::new();
        while got.len() < count {
            let Some(queue) = self.broker.queue_mut(q) else {
                break;
            };
            let sid = queue.store_id;
            let Some(mut m) = queue.pop() else { break };
            let loaded = self.load_msg(&mut m);
            let Some(queue) = self.broker.queue_mut(q) else {
                break;
            };
            match loaded {
                Loaded::Yes => {}
                Loaded::Lost => continue,
                // Not readable for now (logged): it stays at the head.
                Loaded::Later => {
                    queue.unpop(m);
                    break;
                }
            }
            queue.unacked += 1;
            queue.stats.get += 1;
            self.counters.get += 1;
            if m.redelivered() {
                queue.stats.redeliver += 1;
                self.counters.redeliver += 1;
            }
            let remaining = queue.message_count();
            if let (Some(s), Some(r), Some(st)) = (sid, m.stored(), self.store.as_mut()) {
                if !m.redelivered() {
                    st.delivered(s, &r);
                }
            }
            got.push(GotMessage {
                exchange: m.exchange(),
                routing_key: m.routing_key(),
                header: m.header(),
                body: m.body(),
                redelivered: m.redelivered(),
                message_count: remaining,
            });
            taken.push(m);
        }
        for m in taken {
            let Some(queue) = self.broker.queue_mut(q) else {
                self.forget(None, &m);
                continue;
            };
            match mode {
                AckMode::AckRequeue | AckMode::RejectRequeue => queue.requeue(m),
                AckMode::Ack => {
                    queue.unacked = queue.unacked.saturating_sub(1);
                    queue.stats.ack += 1;
                    self.counters.ack += 1;
                    let sid = queue.store_id;
                    self.forget(sid, &m);
                }
                AckMode::Reject => {
                    queue.unacked = queue.unacked.saturating_sub(1);
                    self.dead_letter(q, m, "rejected");
                }
            }
        }
        self.mark_queue(q);
        self.run_dispatch();
        Ok(got)
    }

    /// Remove a queue's ready messages; returns how many.
    pub fn api_purge(&mut self, q: QueueId) -> u32 {
        let (gone, sid) = match self.broker.queue_mut(q) {
            Some(queue) => (queue.purge(), queue.store_id),
            None => return 0,
        };
        for m in &gone {
            self.forget(sid, m);
        }
        gone.len() as u32
    }
}
