//! A queue: its ready messages in order and its consumers in round-robin
//! order. Unacknowledged messages live in the channels that hold them and come
//! back here, at their original position, when they are requeued.

use bytes::Bytes;

use super::args::{Overflow, QueueArgs};
pub use super::consumers::ConsumerRef;
use super::consumers::Consumers;
use super::dedup::QueueDedup;
use super::message::QueuedMsg;
use super::ready::Ready;
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
    /// Ready messages: in memory at the head and tail, the middle of a
    /// deep queue spilled to disk.
    pub ready: Ready,
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
    /// A stream's log and readers (`x-queue-type: stream`; opened by the
    /// engine, which knows where logs live).
    pub stream: Option<Box<super::stream::Stream>>,
    /// The keys of its messages, if it deduplicates
    /// (`x-message-deduplication`).
    pub dedup: Option<Box<QueueDedup>>,
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
        let levels = args.max_priority.map_or(1, |p| usize::from(p) + 1);
        Queue {
            dedup: args.dedup.then(Box::default),
            declared: args.clone(),
            args,
            policy: None,
            operator_policy: None,
            id,
            name,
            vhost,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            ready: Ready::new(levels),
            next_seq: 0,
            consumers: Consumers::default(),
            exclusive_consumer: false,
            had_consumers: false,
            unacked: 0,
            dirty: false,
            store_id: None,
            last_used: std::time::Instant::now(),
            stats: QueueStats::default(),
            stream: None,
        }
    }

    /// What policies see it as.
    pub fn target(&self) -> super::policy::Target {
        if self.declared.stream {
            super::policy::Target::Stream
        } else if self.declared.quorum {
            super::policy::Target::QuorumQueue
        } else {
            super::policy::Target::ClassicQueue
        }
    }

    /// Over its length limits (`x-max-length`, `x-max-length-bytes`)?
    /// With drop-head, the engine then takes messages off the head.
    pub fn over_limit(&self) -> bool {
        self.over_limit_by(0, 0)
    }

    /// Would `extra_msgs` more messages of `extra_bytes` exceed the limits?
    fn over_limit_by(&self, extra_msgs: u64, extra_bytes: u64) -> bool {
        let n = self.ready.len() + extra_msgs;
        let b = self.ready.bytes() + extra_bytes;
        self.args.max_length.is_some_and(|m| n > m)
            || self.args.max_length_bytes.is_some_and(|m| b > m)
    }

    /// Append a newly routed message (published at `timestamp` with its own
    /// TTL `ttl`, if any); returns its expiry time, if it has one. Returns
    /// the message back when the queue refuses it (`x-overflow` =
    /// reject-publish and the queue is full); with drop-head, the engine
    /// then drops the oldest messages to make room (see
    /// [`Queue::over_limit`]).
    // The refused message is handed back by value, without boxing it.
    #[allow(clippy::result_large_err)]
    pub fn push(
        &mut self,
        mut m: QueuedMsg,
        ttl: Option<u64>,
        timestamp: u64,
    ) -> Result<Option<u64>, QueuedMsg> {
        let len = m.size();
        if self.args.overflow != Overflow::DropHead && self.over_limit_by(1, len) {
            // No place in the queue: no sequence number of its messages
            // (whatever leaves with it frees nothing of theirs).
            m.seq = u64::MAX;
            return Err(m);
        }
        m.seq = self.next_seq;
        self.next_seq += 1;
        m.prio = self.args.max_priority.map_or(0, |p| m.priority().min(p));
        let ttl = match (self.args.message_ttl, ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        m.set_expires_at(ttl.map(|t| timestamp.saturating_add(t)));
        let expires = m.expires_at();
        self.ready.push(m);
        Ok(expires)
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Restored at start: sequence numbers go on from `seq`.
    pub fn restore_next_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// Take the head message for delivery (None also when it is spilled:
    /// see `engine::Messages::take`, which reads it back first).
    pub fn pop(&mut self) -> Option<QueuedMsg> {
        let m = self.ready.pop()?;
        if let Some(d) = self.dedup.as_deref_mut() {
            d.set_out(m.seq, true);
        }
        Some(m)
    }

    /// A message of this queue leaves it for good (acknowledged, taken
    /// without ack, rejected, expired, dropped): its deduplication key, if
    /// it has one, is free again.
    pub fn leave(&mut self, m: &QueuedMsg) {
        if let Some(d) = self.dedup.as_deref_mut() {
            d.release(m.seq);
        }
    }

    /// Put back a message just popped and not delivered after all (it could
    /// not be read for now): at the head again, unchanged.
    pub fn unpop(&mut self, m: QueuedMsg) {
        if let Some(d) = self.dedup.as_deref_mut() {
            d.set_out(m.seq, false);
        }
        self.ready.unpop(m);
    }

    /// Put a delivered message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMsg) {
        m.set_redelivered(true);
        self.unacked = self.unacked.saturating_sub(1);
        if let Some(d) = self.dedup.as_deref_mut() {
            d.set_out(m.seq, false);
        }
        self.ready.requeue(m);
    }

    /// The head message has expired at `now_ms`.
    pub fn head_expired(&self, now_ms: u64) -> bool {
        self.ready
            .front()
            .and_then(|m| m.expires_at())
            .is_some_and(|t| t < now_ms)
    }

    /// Number of ready messages (a stream's: the messages its log holds).
    pub fn message_count(&self) -> u32 {
        let n = match &self.stream {
            Some(s) => s.log.message_count(),
            None => self.ready.len(),
        };
        n.min(u64::from(u32::MAX)) as u32
    }

    /// Body bytes of the ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready.bytes()
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
        if let Some(s) = self.stream.as_deref_mut() {
            s.readers.remove(&key);
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
            assert!(q.push(msg(), None, 0).is_ok());
        }
        let a = q.pop().unwrap();
        let b = q.pop().unwrap();
        q.unacked = 2;
        q.requeue(b);
        q.requeue(a);
        let all: Vec<&QueuedMsg> = q.ready.iter_memory().collect();
        let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        assert!(all[0].redelivered() && all[1].redelivered() && !all[2].redelivered());
        assert_eq!(q.unacked, 0);
    }
}
