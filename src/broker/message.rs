//! A message as the broker keeps it: routing info, the publisher's raw
//! content header, and the body, all shared `Bytes` (cloning is a refcount).

use bytes::Bytes;

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
}

/// A message in a queue, with its position for in-order requeueing.
#[derive(Debug, Clone)]
pub struct QueuedMsg {
    /// Position in the queue (monotonic per queue); requeued messages go back
    /// to this position.
    pub seq: u64,
    /// Delivered before (sets basic.deliver's redelivered flag).
    pub redelivered: bool,
    /// The message.
    pub msg: Message,
}
