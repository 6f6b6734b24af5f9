//! A queue: its ready messages in order and its consumers in round-robin
//! order. Unacknowledged messages live in the channels that hold them and come
//! back here, at their original position, when they are requeued.

use std::collections::VecDeque;

use bytes::Bytes;

use super::args::{Overflow, QueueArgs};
pub use super::consumers::ConsumerRef;
use super::consumers::Consumers;
use super::message::QueuedMsg;
use super::{ConnId, QueueId, QueueSpec};
use crate::codec::FieldTable;

/// A queue's message counters since it was declared.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueueStats {
    /// Messages enqueued.
    pub publish: u64,
    /// Deliveries to consumers.
    pub deliver: u64,
    /// basic.get deliveries.
    pub get: u64,
    /// Acknowledgements.
    pub ack: u64,
    /// Deliveries of messages delivered before.
    pub redeliver: u64,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Own id.
    pub id: QueueId,
    /// Name.
    pub name: Bytes,
    /// Virtual host name.
    pub vhost: Bytes,
    /// Survives restarts.
    pub durable: bool,
    /// Connection that declared it exclusive, if any.
    pub exclusive_owner: Option<ConnId>,
    /// Deleted when its last consumer goes (after having had one).
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Its effective settings: the `x-` arguments combined with its
    /// policy and operator policy (see `broker::policy::effective`).
    pub args: QueueArgs,
    /// The `x-` arguments alone, parsed.
    pub declared: QueueArgs,
    /// The policy that applies to it.
    pub policy: Option<String>,
    /// The operator policy that applies to it.
    pub operator_policy: Option<String>,
    /// Ready messages, in `seq` order.
    pub ready: VecDeque<QueuedMsg>,
    /// Body bytes of the ready messages.
    pub ready_bytes: u64,
    /// Next sequence number.
    next_seq: u64,
    /// Consumers: by priority, in subscription order, with the rotation
    /// of those that may take a message now.
    pub consumers: Consumers,
    /// The one consumer that subscribed with exclusive=true, if any.
    pub exclusive_consumer: bool,
    /// Has ever had a consumer (auto-delete triggers only after that).
    pub had_consumers: bool,
    /// Messages delivered and not yet acknowledged, across all channels.
    pub unacked: usize,
    /// Listed in the core's dirty-queue list.
    pub dirty: bool,
    /// Id in the message store (durable queues with persistence on).
    pub store_id: Option<u64>,
    /// Last declare, get, consume or cancel (for `x-expires`).
    pub last_used: std::time::Instant,
    /// Message counters.
    pub stats: QueueStats,
}

impl Queue {
    /// An empty queue.
    pub fn new(
        id: QueueId,
        vhost: Bytes,
        spec: QueueSpec,
        owner: Option<ConnId>,
        args: QueueArgs,
    ) -> Queue {
        let QueueSpec {
            name,
            durable,
            auto_delete,
            arguments,
            ..
        } = spec;
        let exclusive_owner = owner;
        Queue {
            declared: args.clone(),
            args,
            policy: None,
            operator_policy: None,
            ready_bytes: 0,
            id,
            name,
            vhost,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            ready: VecDeque::new(),
            next_seq: 0,
            consumers: Consumers::default(),
            exclusive_consumer: false,
            had_consumers: false,
            unacked: 0,
            dirty: false,
            store_id: None,
            last_used: std::time::Instant::now(),
            stats: QueueStats::default(),
        }
    }

    /// What policies see it as.
    pub fn target(&self) -> super::policy::Target {
        if self.declared.quorum {
            super::policy::Target::QuorumQueue
        } else {
            super::policy::Target::ClassicQueue
        }
    }

    /// With `x-overflow` drop-head, drop messages from the head until the
    /// length limits hold (after the limits were lowered by a policy).
    pub fn drop_over_limit(&mut self, dropped: &mut Vec<QueuedMsg>) {
        if self.args.overflow != Overflow::DropHead {
            return;
        }
        while self.over_limit(0, 0) {
            match self.pop() {
                Some(m) => dropped.push(m),
                None => break,
            }
        }
    }

    /// Would a message of `len` body bytes exceed the length limits?
    fn over_limit(&self, extra_msgs: u64, extra_bytes: u64) -> bool {
        let n = self.ready.len() as u64 + extra_msgs;
        let b = self.ready_bytes + extra_bytes;
        self.args.max_length.is_some_and(|m| n > m)
            || self.args.max_length_bytes.is_some_and(|m| b > m)
    }

    /// Append a newly routed message (published at `timestamp` with its own
    /// TTL `ttl`, if any). Returns the message back when the queue refuses
    /// it (`x-overflow` = reject-publish and the queue is full); with
    /// drop-head, the oldest messages are dropped to make room and returned
    /// in `dropped`.
    // The refused message is handed back by value, without boxing it.
    #[allow(clippy::result_large_err)]
    pub fn push(
        &mut self,
        mut m: QueuedMsg,
        ttl: Option<u64>,
        timestamp: u64,
        dropped: &mut Vec<QueuedMsg>,
    ) -> Result<(), QueuedMsg> {
        let len = m.size();
        if self.args.overflow != Overflow::DropHead && self.over_limit(1, len) {
            return Err(m);
        }
        m.seq = self.next_seq;
        self.next_seq += 1;
        self.ready_bytes += len;
        m.prio = self.args.max_priority.map_or(0, |p| m.priority().min(p));
        let ttl = match (self.args.message_ttl, ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        m.set_expires_at(ttl.map(|t| timestamp.saturating_add(t)));
        self.insert(m);
        while self.over_limit(0, 0) {
            match self.pop() {
                Some(m) => dropped.push(m),
                None => break,
            }
        }
        Ok(())
    }

    /// Take the head message for delivery.
    pub fn pop(&mut self) -> Option<QueuedMsg> {
        let m = self.ready.pop_front()?;
        self.ready_bytes = self.ready_bytes.saturating_sub(m.size());
        Some(m)
    }

    /// Put back a message just popped and not delivered after all (it could
    /// not be read for now): at the head again, unchanged.
    pub fn unpop(&mut self, m: QueuedMsg) {
        self.ready_bytes += m.size();
        self.ready.push_front(m);
    }

    /// Put a delivered message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMsg) {
        m.set_redelivered(true);
        self.unacked = self.unacked.saturating_sub(1);
        self.ready_bytes += m.size();
        self.insert(m);
    }

    /// Insert in queue order (priority, then position); appending is the
    /// common case.
    fn insert(&mut self, m: QueuedMsg) {
        match self.ready.back() {
            Some(last) if last.key() > m.key() => {
                let k = m.key();
                let at = self.ready.partition_point(|x| x.key() < k);
                self.ready.insert(at, m);
            }
            _ => self.ready.push_back(m),
        }
    }

    /// The head message has expired at `now_ms`.
    pub fn head_expired(&self, now_ms: u64) -> bool {
        self.ready
            .front()
            .and_then(|m| m.expires_at())
            .is_some_and(|t| t < now_ms)
    }

    /// Number of ready messages.
    pub fn message_count(&self) -> u32 {
        self.ready.len().min(u32::MAX as usize) as u32
    }

    /// Remove every ready message and hand them back.
    pub fn purge(&mut self) -> VecDeque<QueuedMsg> {
        self.ready_bytes = 0;
        std::mem::take(&mut self.ready)
    }

    /// Add a consumer, last in the rotation of its priority; returns its
    /// key among the queue's consumers.
    pub fn add_consumer(&mut self, c: ConsumerRef) -> u32 {
        self.had_consumers = true;
        self.consumers.add(c)
    }

    /// Remove the consumer with key `key` if it is `slot` of `conn`'s
    /// channel `channel`; true if it was there.
    pub fn remove_consumer(&mut self, key: u32, conn: ConnId, channel: u16, slot: u32) -> bool {
        let gone = self
            .consumers
            .remove(key, |r| {
                r.conn == conn && r.channel == channel && r.slot == slot
            })
            .is_some();
        if self.consumers.is_empty() {
            self.exclusive_consumer = false;
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::{Arena, Message};

    fn msg() -> QueuedMsg {
        let m = Message::new(
            Bytes::new(),
            Bytes::new(),
            Bytes::new(),
            Bytes::new(),
            false,
        );
        QueuedMsg::pack(&mut Arena::default(), &m, None)
    }

    #[test]
    fn requeue_goes_back_to_original_position() {
        let spec = QueueSpec {
            name: Bytes::from_static(b"q"),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        let mut q = Queue::new(
            QueueId { idx: 0, gen: 0 },
            Bytes::from_static(b"/"),
            spec,
            None,
            QueueArgs::default(),
        );
        for _ in 0..5 {
            assert!(q.push(msg(), None, 0, &mut Vec::new()).is_ok());
        }
        let a = q.pop().unwrap();
        let b = q.pop().unwrap();
        q.unacked = 2;
        q.requeue(b);
        q.requeue(a);
        let seqs: Vec<u64> = q.ready.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        assert!(q.ready[0].redelivered() && q.ready[1].redelivered() && !q.ready[2].redelivered());
        assert_eq!(q.unacked, 0);
    }
}
