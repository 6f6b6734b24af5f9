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
mod tests {
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
