//! Settling a message taken off a queue (see [`Messages::take`]): it is
//! acknowledged and leaves, rejected (dead-lettered if the queue says so),
//! or requeued, where a quorum queue counts the return against its
//! delivery limit.
//!
//! [`Messages::take`]: super::Messages::take

use super::{Counters, Engine};
use crate::broker::message::QueuedMsg;
use crate::broker::queue::Queue;
use crate::broker::QueueId;

/// Count a message taken from `queue` for a consumer (`get`: for a
/// basic.get or the management API's get instead).
pub(crate) fn count_taken(queue: &mut Queue, counters: &mut Counters, m: &QueuedMsg, get: bool) {
    if get {
        queue.stats.get += 1;
        counters.get += 1;
    } else {
        queue.stats.deliver += 1;
        counters.deliver += 1;
    }
    if m.redelivered() {
        queue.stats.redeliver += 1;
        counters.redeliver += 1;
    }
}

impl Engine {
    /// A delivery from stream `q` is settled, however (its log keeps the
    /// message; a requeue does not deliver it again): it only gives
    /// credit back, and holds nothing to release.
    fn stream_settled(&mut self, q: QueueId) {
        if let Some(queue) = self.broker.queue_mut(q) {
            queue.unacked = queue.unacked.saturating_sub(1);
            queue.stats.ack += 1;
            self.counters.ack += 1;
        }
    }

    /// A taken message is acknowledged (or was taken without ack, `acked`
    /// false): it leaves the broker.
    pub(crate) fn ack(&mut self, q: QueueId, m: QueuedMsg, acked: bool) {
        if m.is_marker() {
            return self.stream_settled(q);
        }
        let Some(queue) = self.broker.queue_mut(q) else {
            self.msgs.forget(None, &m);
            return;
        };
        if acked {
            queue.unacked = queue.unacked.saturating_sub(1);
            queue.stats.ack += 1;
            self.counters.ack += 1;
        }
        queue.leave(&m);
        let sid = queue.store_id;
        self.msgs.forget(sid, &m);
    }

    /// A taken message is rejected without requeue (nack, reject): it is
    /// dead-lettered if its queue says so, else dropped.
    pub(crate) fn reject(&mut self, q: QueueId, m: QueuedMsg) {
        if m.is_marker() {
            return self.stream_settled(q);
        }
        let Some(queue) = self.broker.queue_mut(q) else {
            self.msgs.forget(None, &m);
            return;
        };
        queue.unacked = queue.unacked.saturating_sub(1);
        self.dead_letter(q, m, "rejected");
    }

    /// A taken message goes back to its queue, at its original position,
    /// marked redelivered (or is dead-lettered past a quorum queue's
    /// delivery limit).
    pub(crate) fn requeue(&mut self, q: QueueId, m: QueuedMsg) {
        if let Some((q, m)) = self.back(q, m) {
            if let Some(queue) = self.broker.queue_mut(q) {
                queue.requeue(m);
            }
            self.mark_queue(q);
        }
    }

    /// Requeue many taken messages at once (channel close, recover, nack
    /// with multiple), given in delivery order: handled in that order as
    /// one by one (which of them stay in memory is decided oldest first),
    /// but put back newest first: each then goes to the front of what is
    /// ready, O(1), where oldest first each went behind the last, shifting
    /// all that precede it (quadratic: 100,000 unacked before 300,000 ready
    /// took 8 s).
    pub(crate) fn requeue_many(&mut self, list: impl IntoIterator<Item = (QueueId, QueuedMsg)>) {
        let back: Vec<(QueueId, QueuedMsg)> = list
            .into_iter()
            .filter_map(|(q, m)| self.back(q, m))
            .collect();
        for (q, m) in back.into_iter().rev() {
            if let Some(queue) = self.broker.queue_mut(q) {
                queue.requeue(m);
            }
            self.mark_queue(q);
        }
    }

    /// A message on its way back to queue `q`: dropped if the queue is
    /// gone; a quorum queue counts it, and one returned more often than its
    /// delivery limit allows is dead-lettered (or dropped) instead
    /// (RabbitMQ: a limit of 2 means three deliveries; counts stop at 255,
    /// so a limit of 255 or more never applies). Otherwise held like a new
    /// one: beyond half the memory budget its content goes (back) to disk.
    fn back(&mut self, q: QueueId, mut m: QueuedMsg) -> Option<(QueueId, QueuedMsg)> {
        if m.is_marker() {
            self.stream_settled(q);
            return None;
        }
        let Some(queue) = self.broker.queue_mut(q) else {
            self.msgs.forget(None, &m);
            return None;
        };
        if queue.args.quorum {
            m.returned();
            let limit = queue.args.delivery_limit;
            if limit.is_some_and(|l| l < 255 && u64::from(m.returns()) > l) {
                queue.unacked = queue.unacked.saturating_sub(1);
                self.dead_letter(q, m, "delivery_limit");
                return None;
            }
        }
        self.msgs.hold_again(&mut m);
        Some((q, m))
    }
}
