//! The AMQP 0-9-1 front door: the handshake, connection and channel
//! state, method dispatch, deliveries to consumers and publisher confirms.
//! It turns methods into engine actions (`crate::engine`), adding AMQP's
//! permission checks and replies. Sans-IO like the engine: [`Core`] takes
//! bytes and time, and gives back bytes to write.
//!
//! | file | what |
//! |---|---|
//! | `conns.rs` | [`Core`]: every connection over the engine; input, timers |
//! | `connection.rs` | one connection's state |
//! | `handshake.rs` | protocol header, connection class |
//! | `dispatch.rs` | channel methods to the class handlers; permission checks |
//! | `exchange.rs`, `queue.rs`, `basic.rs`, `tx.rs` | one AMQP class each |
//! | `publish.rs` | basic.publish into the engine; basic.return; confirms |
//! | `deliver.rs` | deliveries to consumers, acks, releases |
//! | `commit.rs` | confirms and replies that wait for the group commit; alarms |
//! | `admin.rs` | operator actions that close connections |
//! | `reply_to.rs` | direct reply-to |
//! | `channel.rs` | one channel's state |

mod admin;
mod basic;
pub mod channel;
mod commit;
mod connection;
mod conns;
mod deliver;
mod dispatch;
mod exchange;
mod handshake;
mod publish;
mod queue;
mod reply_to;
mod stream;
mod tx;

pub(crate) use basic::Consume;
pub use connection::{ConnState, Connection};
pub use conns::{Core, ReadHint};
