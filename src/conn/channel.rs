//! A channel's state: content assembly for basic.publish, unacknowledged
//! deliveries by tag, consumers, prefetch limits, confirm and tx modes.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use slab::Slab;

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
    /// That consumer's key in [`Channel::consumers`].
    pub consumer_slot: u32,
}

/// A consumer's channel-side state.
#[derive(Debug)]
pub struct ChanConsumer {
    /// Tag.
    pub tag: Bytes,
    /// Queue consumed from.
    pub queue: QueueId,
    /// Its key among the queue's consumers.
    pub qkey: u32,
    /// Deliveries need no ack.
    pub no_ack: bool,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u16,
    /// Unacked deliveries to this consumer.
    pub unacked: u32,
}

/// A channel's consumers: by key (which the queue's side keeps, so a
/// delivery finds its consumer without a search) and by tag.
#[derive(Debug, Default)]
pub struct ChanConsumers {
    slots: Slab<ChanConsumer>,
    by_tag: HashMap<Bytes, u32>,
}

impl ChanConsumers {
    /// Number of consumers.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No consumers.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every consumer with its key (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &ChanConsumer)> + '_ {
        self.slots.iter().map(|(k, c)| (k as u32, c))
    }

    /// Is there a consumer with this tag?
    pub fn contains(&self, tag: &[u8]) -> bool {
        self.by_tag.contains_key(tag)
    }

    /// The key of the consumer with this tag.
    pub fn key_of(&self, tag: &[u8]) -> Option<u32> {
        self.by_tag.get(tag).copied()
    }

    /// The consumer with this key.
    pub fn get(&self, key: u32) -> Option<&ChanConsumer> {
        self.slots.get(key as usize)
    }

    /// The consumer with this key, mutable.
    pub fn get_mut(&mut self, key: u32) -> Option<&mut ChanConsumer> {
        self.slots.get_mut(key as usize)
    }

    /// Add a consumer whose tag is not in use (see [`ChanConsumers::contains`]);
    /// returns its key.
    pub fn insert(&mut self, c: ChanConsumer) -> u32 {
        let tag = c.tag.clone();
        let key = self.slots.insert(c) as u32;
        self.by_tag.insert(tag, key);
        key
    }

    /// Remove the consumer with this tag.
    pub fn remove(&mut self, tag: &[u8]) -> Option<ChanConsumer> {
        let key = self.by_tag.remove(tag)?;
        self.slots.try_remove(key as usize)
    }

    /// Remove every consumer; each with its key.
    pub fn take_all(&mut self) -> Vec<(u32, ChanConsumer)> {
        self.by_tag = HashMap::new();
        std::mem::take(&mut self.slots)
            .into_iter()
            .map(|(k, c)| (k as u32, c))
            .collect()
    }
}

/// See [`Channel::room`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// It may take a message.
    Yes,
    /// The channel-wide prefetch window is full.
    ChannelFull,
    /// Its own prefetch window is full.
    ConsumerFull,
    /// Its connection's output is backed up (the dispatch pass checks
    /// that; [`Channel::room`] does not).
    OutboxFull,
    /// The channel or connection is closing, or the consumer is gone.
    Gone,
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
    pub consumers: ChanConsumers,
    /// Consumers (queue, key in the queue) that could not take a message
    /// because the channel-wide prefetch window was full: unblocked when
    /// it opens.
    pub global_blocked: Vec<(QueueId, u32)>,
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
            consumers: ChanConsumers::default(),
            global_blocked: Vec::new(),
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

    /// May another message go to the consumer with key `slot` (and tag
    /// `tag`) now? If not, what holds it back.
    pub fn room(&self, slot: u32, tag: &[u8]) -> Room {
        if self.state != ChanState::Open {
            return Room::Gone;
        }
        if self.global_prefetch != 0 && self.unacked.len() >= self.global_prefetch as usize {
            return Room::ChannelFull;
        }
        match self.consumers.get(slot).filter(|c| c.tag == tag) {
            Some(c) if c.no_ack || c.prefetch == 0 || c.unacked < c.prefetch as u32 => Room::Yes,
            Some(_) => Room::ConsumerFull,
            None => Room::Gone,
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
