//! The AMQP 0-9-1 codec: bytes ⇄ frames ⇄ methods, sans-IO.
//!
//! Grammar: a connection starts with the 8-byte protocol header
//! `AMQP 0 0 9 1`; then frames `type u8 | channel u16 | size u32 |
//! payload | 0xCE`. A method payload is `class u16 | method u16 | arguments`;
//! a content header is `class u16 | weight u16 | body-size u64 | flags |
//! properties`; bodies are raw bytes. Nothing here touches sockets, clocks or
//! logs, and no input can make it panic (see `fuzz/`).

pub mod error;
pub mod frame;
pub mod method;
pub mod outbox;
pub mod properties;
pub mod reader;
pub mod table;
pub mod writer;

#[doc(hidden)]
pub mod fuzzing;

pub use error::{Error, ReplyCode, Result};
pub use frame::{parse_frame, parse_raw_frame, Frame, RawFrame};
pub use method::*;
pub use outbox::Outbox;
pub use properties::{BasicProperties, ContentHeader};
pub use table::{FieldTable, FieldValue};
