//! A channel's state: content assembly for basic.publish, unacknowledged
//! deliveries by tag, consumers, prefetch limits, confirm and tx modes.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::broker::message::{Message, QueuedMsg};
use crate::broker::QueueId;

/// Channel life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChanState {
    /// Usable.
    Open,
    /// We sent channel.close; frames are discarded until close-ok.
    Closing,
}

/// A publish waiting for its content header and body frames.
#[derive(Debug)]
pub struct Assembly {
    /// Exchange from basic.publish.
    pub exchange: Bytes,
    /// Routing key from basic.publish.
    pub routing_key: Bytes,
    /// mandatory flag.
    pub mandatory: bool,
    /// Raw content header payload, once received.
    pub header: Option<Bytes>,
    /// delivery_mode = 2.
    pub persistent: bool,
    /// `priority` property.
    pub priority: u8,
    /// Per-message TTL from `expiration`.
    pub ttl: Option<u64>,
    /// Declared body size.
    pub body_size: u64,
    /// Body received so far when it spans several frames.
    pub body: BytesMut,
    /// The body when it arrived in one frame (zero copy).
    pub single: Option<Bytes>,
}

/// A delivered, not yet acknowledged message.
#[derive(Debug)]
pub struct Unacked {
    /// Delivery tag.
    pub tag: u64,
    /// Queue it came from.
    pub queue: QueueId,
    /// The message (goes back to the queue on requeue).
    pub msg: QueuedMsg,
    /// Consumer it went to (None for basic.get).
    pub consumer: Option<Bytes>,
}

/// A consumer's channel-side state.
#[derive(Debug)]
pub struct ChanConsumer {
    /// Tag.
    pub tag: Bytes,
    /// Queue consumed from.
    pub queue: QueueId,
    /// Deliveries need no ack.
    pub no_ack: bool,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u16,
    /// Unacked deliveries to this consumer.
    pub unacked: u32,
}

/// A deferred operation in a transactional channel.
#[derive(Debug)]
pub enum TxOp {
    /// basic.publish.
    Publish(Message, bool),
    /// basic.ack: the entries it took off the unacked list.
    Ack(Vec<Unacked>),
    /// basic.nack / basic.reject: the entries, and whether to requeue.
    Nack(Vec<Unacked>, bool),
}

/// One channel.
#[derive(Debug)]
pub struct Channel {
    /// Channel number.
    pub id: u16,
    /// Open or closing.
    pub state: ChanState,
    /// Publish being assembled.
    pub assembly: Option<Assembly>,
    /// Last delivery tag used.
    pub last_tag: u64,
    /// Unacked deliveries, ascending by tag.
    pub unacked: VecDeque<Unacked>,
    /// Consumers on this channel.
    pub consumers: Vec<ChanConsumer>,
    /// Prefetch for consumers created from now on (basic.qos global=false).
    pub prefetch_count: u16,
    /// Channel-wide prefetch (basic.qos global=true; 0 = unlimited).
    pub global_prefetch: u16,
    /// In confirm mode.
    pub confirm: bool,
    /// Last publish sequence number.
    pub publish_seq: u64,
    /// Highest sequence number ready to be confirmed.
    pub confirm_ready: u64,
    /// Highest sequence number confirmed to the client.
    pub confirm_sent: u64,
    /// Highest sequence number that becomes ready after the next store sync.
    pub confirm_after_sync: u64,
    /// Listed in the core's sync waiters.
    pub waiting_sync: bool,
    /// In tx mode: the operations since the last commit/rollback.
    pub tx: Option<Vec<TxOp>>,
    /// Name of the last queue declared on this channel (for `""` names).
    pub last_queue: Bytes,
    /// Consumer tag of this channel's direct reply-to consumer.
    pub reply_consumer: Option<Bytes>,
}

impl Channel {
    /// A fresh open channel.
    pub fn new(id: u16) -> Channel {
        Channel {
            id,
            state: ChanState::Open,
            assembly: None,
            last_tag: 0,
            unacked: VecDeque::new(),
            consumers: Vec::new(),
            prefetch_count: 0,
            global_prefetch: 0,
            confirm: false,
            publish_seq: 0,
            confirm_ready: 0,
            confirm_sent: 0,
            confirm_after_sync: 0,
            waiting_sync: false,
            tx: None,
            last_queue: Bytes::new(),
            reply_consumer: None,
        }
    }

    /// The consumer with this tag.
    pub fn consumer_mut(&mut self, tag: &[u8]) -> Option<&mut ChanConsumer> {
        self.consumers.iter_mut().find(|c| c.tag == tag)
    }

    /// May another message go to consumer `tag` now?
    pub fn can_deliver(&self, tag: &[u8]) -> bool {
        if self.state != ChanState::Open {
            return false;
        }
        if self.global_prefetch != 0 && self.unacked.len() >= self.global_prefetch as usize {
            return false;
        }
        match self.consumers.iter().find(|c| c.tag == tag) {
            Some(c) => c.no_ack || c.prefetch == 0 || c.unacked < c.prefetch as u32,
            None => false,
        }
    }

    /// Remove the unacked entries an ack/nack names: one tag, or every tag up
    /// to it with `multiple` (tag 0 + multiple = all). None if a single tag is
    /// unknown.
    pub fn take_unacked(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        let (start, count) = self.ack_range(tag, multiple)?;
        Some(self.unacked.drain(start..start + count).collect())
    }

    /// Where in `unacked` the entries an ack/nack names are: (start, count).
    /// None if a single tag is unknown, or `multiple` names nothing.
    pub fn ack_range(&self, tag: u64, multiple: bool) -> Option<(usize, usize)> {
        if multiple {
            let n = if tag == 0 {
                self.unacked.len()
            } else {
                self.unacked.partition_point(|u| u.tag <= tag)
            };
            if n == 0 && tag != 0 {
                return None;
            }
            Some((0, n))
        } else {
            let i = self.unacked.binary_search_by_key(&tag, |u| u.tag).ok()?;
            Some((i, 1))
        }
    }
}
