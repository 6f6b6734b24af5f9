//! A message as the broker keeps it: routing info, the publisher's raw
//! content header, and the body, all shared `Bytes` (cloning is a refcount).

use bytes::Bytes;

use crate::store::StoreRef;

/// A published message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: Bytes,
    /// Routing key it was published with.
    pub routing_key: Bytes,
    /// The content header payload exactly as the publisher sent it.
    pub header: Bytes,
    /// The body.
    pub body: Bytes,
    /// delivery_mode = 2.
    pub persistent: bool,
    /// Body size (kept when the body is paged out).
    pub size: u64,
    /// Where the store holds it, if it does.
    pub stored: Option<StoreRef>,
    /// `priority` property (0 when absent).
    pub priority: u8,
    /// Per-message TTL from the `expiration` property, in milliseconds.
    pub ttl: Option<u64>,
    /// Wall-clock publish time, milliseconds since the epoch (TTL base).
    pub timestamp: u64,
}

impl Message {
    /// A message with its content in memory and not stored.
    pub fn new(
        exchange: Bytes,
        routing_key: Bytes,
        header: Bytes,
        body: Bytes,
        persistent: bool,
    ) -> Message {
        Message {
            exchange,
            routing_key,
            header,
            size: body.len() as u64,
            body,
            persistent,
            stored: None,
            priority: 0,
            ttl: None,
            timestamp: 0,
        }
    }

    /// True when header and body live only on disk.
    pub fn is_paged(&self) -> bool {
        self.header.is_empty() && self.stored.is_some()
    }

    /// Bytes of content held in memory.
    pub fn resident(&self) -> u64 {
        (self.header.len() + self.body.len()) as u64
    }

    /// Drop the in-memory content (the store has it).
    pub fn page_out(&mut self) {
        self.header = Bytes::new();
        self.body = Bytes::new();
    }
}

/// A message in a queue, with its position for in-order requeueing.
#[derive(Debug, Clone)]
pub struct QueuedMsg {
    /// Position in the queue (monotonic per queue); requeued messages go back
    /// to this position.
    pub seq: u64,
    /// Delivered before (sets basic.deliver's redelivered flag).
    pub redelivered: bool,
    /// Effective priority in this queue (0 unless a priority queue).
    pub prio: u8,
    /// Wall-clock expiry in milliseconds since the epoch, if any TTL applies.
    pub expires_at: Option<u64>,
    /// The message.
    pub msg: Message,
}

impl QueuedMsg {
    /// Queue order: higher priority first, then publish order.
    pub fn key(&self) -> (u8, u64) {
        (255 - self.prio, self.seq)
    }
}
