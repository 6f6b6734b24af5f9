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
    /// When it was delivered ([`crate::engine::Engine::stamp`]), for the
    /// consumer timeout.
    pub at: u32,
}

/// An entry of [`UnackedList`]: a delivery, or the hole it left.
#[derive(Debug)]
enum Slot {
    Live(Unacked),
    /// Settled out of order; keeps its tag so the list stays searchable.
    Hole(u64),
}

impl Slot {
    fn tag(&self) -> u64 {
        match self {
            Slot::Live(u) => u.tag,
            Slot::Hole(t) => *t,
        }
    }
}

/// A channel's unacknowledged deliveries, ascending by tag. Settling one
/// out of order leaves a hole instead of shifting all that follow it (a
/// client acking 100,000 deliveries in random order took seconds); holes
/// at either end are dropped at once, and the list is compacted when they
/// outnumber the deliveries, so each settle costs O(log n) amortized.
#[derive(Debug, Default)]
pub struct UnackedList {
    /// Never starts or ends with a hole.
    slots: VecDeque<Slot>,
    live: usize,
}

impl UnackedList {
    /// Bytes its ring takes; a ring mostly empty is shrunk first.
    pub fn measure(&mut self) -> u64 {
        crate::engine::ring_bytes(&mut self.slots)
    }

    /// Deliveries not settled.
    pub fn len(&self) -> usize {
        self.live
    }

    #[cfg(any(test, feature = "testing"))]
    /// None unsettled.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The deliveries, ascending by tag.
    pub fn iter(&self) -> impl Iterator<Item = &Unacked> + '_ {
        self.slots.iter().filter_map(|s| match s {
            Slot::Live(u) => Some(u),
            Slot::Hole(_) => None,
        })
    }

    /// The oldest delivery.
    pub fn front(&self) -> Option<&Unacked> {
        match self.slots.front() {
            Some(Slot::Live(u)) => Some(u),
            _ => None,
        }
    }

    /// Add a delivery with a tag above all others.
    pub fn push_back(&mut self, u: Unacked) {
        self.slots.push_back(Slot::Live(u));
        self.live += 1;
    }

    /// Put back a delivery taken earlier (tx.rollback), in tag order.
    pub fn insert(&mut self, u: Unacked) {
        let at = self.slots.partition_point(|s| s.tag() < u.tag);
        match self.slots.get_mut(at) {
            Some(s @ Slot::Hole(_)) if s.tag() == u.tag => *s = Slot::Live(u),
            _ => self.slots.insert(at, Slot::Live(u)),
        }
        self.live += 1;
    }

    /// Is there a delivery with a tag of `tag` or below?
    pub fn has_through(&self, tag: u64) -> bool {
        self.slots.front().is_some_and(|s| s.tag() <= tag)
    }

    /// Take the oldest delivery if its tag is `tag` or below.
    pub fn pop_through(&mut self, tag: u64) -> Option<Unacked> {
        if !self.has_through(tag) {
            return None;
        }
        let Some(Slot::Live(u)) = self.slots.pop_front() else {
            return None;
        };
        self.live -= 1;
        self.trim();
        Some(u)
    }

    /// Take the delivery with this tag.
    pub fn take(&mut self, tag: u64) -> Option<Unacked> {
        let i = self.slots.binary_search_by_key(&tag, Slot::tag).ok()?;
        let slot = self.slots.get_mut(i)?;
        if matches!(slot, Slot::Hole(_)) {
            return None;
        }
        let Slot::Live(u) = std::mem::replace(slot, Slot::Hole(tag)) else {
            return None;
        };
        self.live -= 1;
        self.trim();
        if self.slots.len() > 2 * self.live + 32 {
            self.slots.retain(|s| matches!(s, Slot::Live(_)));
        }
        Some(u)
    }

    /// Take every delivery.
    pub fn take_all(&mut self) -> Vec<Unacked> {
        self.live = 0;
        self.slots
            .drain(..)
            .filter_map(|s| match s {
                Slot::Live(u) => Some(u),
                Slot::Hole(_) => None,
            })
            .collect()
    }

    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(Slot::Hole(_))) {
            self.slots.pop_front();
        }
        while matches!(self.slots.back(), Some(Slot::Hole(_))) {
            self.slots.pop_back();
        }
    }
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
    /// Its own consumer timeout in milliseconds (`x-consumer-timeout`).
    pub timeout: Option<u64>,
    /// Its consume arguments, if any.
    pub arguments: Option<Box<crate::codec::FieldTable>>,
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

    #[cfg(any(test, feature = "testing"))]
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
    pub unacked: UnackedList,
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
            unacked: UnackedList::default(),
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

    /// A delivery to its consumer (`u.consumer_slot`) now waits for the
    /// client's acknowledgement: counted against the consumer's window
    /// and kept in the unacked list.
    pub fn hold(&mut self, u: Unacked) {
        if let Some(consumer) = self.consumers.get_mut(u.consumer_slot) {
            consumer.unacked += 1;
        }
        self.unacked.push_back(u);
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
    /// unknown, or `multiple` names nothing.
    pub fn take_unacked(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        if !multiple {
            return self.unacked.take(tag).map(|u| vec![u]);
        }
        if tag == 0 {
            return Some(self.unacked.take_all());
        }
        if !self.unacked.has_through(tag) {
            return None;
        }
        Some(std::iter::from_fn(|| self.unacked.pop_through(tag)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::{Arena, Message};

    fn u(tag: u64) -> Unacked {
        let m = Message::new(
            Bytes::new(),
            Bytes::new(),
            Bytes::new(),
            Bytes::new(),
            false,
        );
        Unacked {
            tag,
            queue: QueueId { idx: 0, gen: 0 },
            msg: QueuedMsg::pack(&mut Arena::default(), &m, None),
            consumer: None,
            consumer_slot: 0,
            at: 0,
        }
    }

    fn tags(l: &UnackedList) -> Vec<u64> {
        l.iter().map(|u| u.tag).collect()
    }

    #[test]
    fn unacked_list_settles_out_of_order_without_shifting() {
        let mut l = UnackedList::default();
        for t in 1..=10 {
            l.push_back(u(t));
        }
        assert_eq!(l.take(5).map(|u| u.tag), Some(5));
        assert!(l.take(5).is_none(), "settled twice");
        assert!(l.take(11).is_none());
        assert_eq!(l.len(), 9);
        assert_eq!(tags(&l), [1, 2, 3, 4, 6, 7, 8, 9, 10]);
        // Holes at the ends go at once.
        assert_eq!(l.take(1).map(|u| u.tag), Some(1));
        assert!(!l.has_through(1) && l.has_through(2));
        // multiple: up to 6 takes 2, 3, 4, 6 (5 is settled).
        let got: Vec<u64> = std::iter::from_fn(|| l.pop_through(6))
            .map(|u| u.tag)
            .collect();
        assert_eq!(got, [2, 3, 4, 6]);
        // A rolled-back delivery goes back to its place (into a hole, too).
        l.take(8);
        l.insert(u(8));
        l.insert(u(4));
        assert_eq!(tags(&l), [4, 7, 8, 9, 10]);
        assert_eq!(l.len(), 5);
        assert_eq!(l.take_all().len(), 5);
        assert!(l.is_empty() && l.slots.is_empty());
    }

    #[test]
    fn unacked_list_holes_stay_bounded() {
        // The oldest delivery is never settled; every later one is.
        let mut l = UnackedList::default();
        l.push_back(u(1));
        for t in 2..10_000 {
            l.push_back(u(t));
            if t > 2 {
                assert!(l.take(t - 1).is_some());
                assert!(l.slots.len() <= 2 * l.len() + 33, "{} slots", l.slots.len());
            }
        }
        assert_eq!(tags(&l), [1, 9_999]);
    }
}

/// Channel numbers below this are kept in a vector indexed by number; the
/// rare higher ones (a client may open channel 65535 first) in a short list.
const DENSE: u16 = 256;

/// A connection's open (and closing) channels by number. Lookups of the
/// usual low numbers are an index; a high number does not make the
/// connection allocate a slot for every number below it.
#[derive(Debug, Default)]
pub struct Channels {
    /// Channels 0..DENSE by number.
    dense: Vec<Option<Box<Channel>>>,
    /// Channels DENSE and above, in no order.
    sparse: Vec<Channel>,
    /// How many there are.
    count: usize,
}

impl Channels {
    /// The channel with this number.
    pub fn get(&self, ch: u16) -> Option<&Channel> {
        if ch < DENSE {
            self.dense.get(ch as usize).and_then(|c| c.as_deref())
        } else {
            self.sparse.iter().find(|c| c.id == ch)
        }
    }

    /// The channel with this number, mutable.
    pub fn get_mut(&mut self, ch: u16) -> Option<&mut Channel> {
        if ch < DENSE {
            self.dense
                .get_mut(ch as usize)
                .and_then(|c| c.as_deref_mut())
        } else {
            self.sparse.iter_mut().find(|c| c.id == ch)
        }
    }

    /// Add a channel (its number must be free).
    pub fn insert(&mut self, chan: Channel) {
        let ch = chan.id;
        if ch < DENSE {
            let i = ch as usize;
            if self.dense.len() <= i {
                self.dense.resize_with(i + 1, || None);
            }
            if let Some(slot) = self.dense.get_mut(i) {
                self.count += usize::from(slot.is_none());
                *slot = Some(Box::new(chan));
            }
        } else {
            self.sparse.retain(|c| c.id != ch);
            self.sparse.push(chan);
            self.count = self.sparse.len() + self.dense.iter().flatten().count();
        }
    }

    /// Remove a channel; true if it was there.
    pub fn remove(&mut self, ch: u16) -> bool {
        let gone = if ch < DENSE {
            self.dense
                .get_mut(ch as usize)
                .is_some_and(|slot| slot.take().is_some())
        } else {
            let before = self.sparse.len();
            self.sparse.retain(|c| c.id != ch);
            self.sparse.len() != before
        };
        self.count -= usize::from(gone);
        gone
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.count
    }

    #[cfg(any(test, feature = "testing"))]
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every channel.
    pub fn iter(&self) -> impl Iterator<Item = &Channel> {
        self.dense
            .iter()
            .flatten()
            .map(|c| &**c)
            .chain(self.sparse.iter())
    }

    /// Every channel, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Channel> {
        self.dense
            .iter_mut()
            .flatten()
            .map(|c| &mut **c)
            .chain(self.sparse.iter_mut())
    }
}

#[cfg(test)]
mod channels_tests {
    use super::*;

    #[test]
    fn channel_numbers_low_and_high() {
        let mut t = Channels::default();
        for ch in [1, 65535, 255, 256, 2] {
            t.insert(Channel::new(ch));
        }
        assert_eq!(t.len(), 5);
        assert_eq!(t.get(65535).map(|c| c.id), Some(65535));
        assert_eq!(t.get(256).map(|c| c.id), Some(256));
        assert!(t.get(3).is_none() && t.get(1000).is_none());
        // A high number does not allocate a slot per lower number.
        assert!(t.dense.len() <= DENSE as usize);
        assert!(t.remove(65535) && !t.remove(65535));
        assert!(t.remove(1));
        let mut ids: Vec<u16> = t.iter().map(|c| c.id).collect();
        ids.sort();
        assert_eq!(ids, vec![2, 255, 256]);
        assert_eq!(t.len(), 3);
        t.iter_mut().for_each(|c| c.confirm = true);
        assert!(t.iter().all(|c| c.confirm));
    }
}
