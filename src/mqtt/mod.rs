//! The MQTT 3.1, 3.1.1 and 5.0 front door, beside AMQP and over the same
//! engine: topics are routing keys on `mqtt.exchange` (`amq.topic`), a
//! subscription is a queue bound to it (RabbitMQ's mapping, so AMQP and
//! MQTT clients see each other's messages), and an MQTT connection is a
//! connection of the core whose subscriptions consume on an internal
//! channel: deliveries, acknowledgements, prefetch, requeue on close and
//! backpressure are the ones AMQP uses. Sans-IO like the rest.
//!
//! | file | what |
//! |---|---|
//! | `codec/` | packets ⇄ bytes, 3.1, 3.1.1 and 5.0 (fuzzed: `fuzz/fuzz_targets/mqtt.rs`) |
//! | `door.rs` | CONNECT, PUBLISH, SUBSCRIBE, acks, keep-alive, wills, retained |
//! | `deliver.rs` | a queued message as a PUBLISH to a subscriber |
//! | `session.rs` | one connection's session; the front door's shared state |
//! | `topic.rs` | topics ⇄ routing keys; filter matching |

pub mod codec;
pub(crate) mod deliver;
pub(crate) mod door;
pub(crate) mod session;
pub(crate) mod topic;

pub(crate) use session::{MqttState, Session};

/// The protocol a connection speaks, as the management API names it.
pub(crate) fn protocol_name(c: &crate::amqp::Connection) -> &'static str {
    match c.mqtt.as_deref().map(|s| s.version) {
        None => "AMQP 0-9-1",
        Some(Some(codec::Version::V5)) => "MQTT 5.0",
        Some(Some(codec::Version::V31)) => "MQTT 3.1",
        Some(_) => "MQTT 3.1.1",
    }
}
