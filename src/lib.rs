//! Warren: a lightweight AMQP 0-9-1 message broker.
//!
//! Data path: socket bytes → [`codec`] frames → methods → connection state
//! machine → broker (exchanges, queues, consumers) → outgoing frames →
//! socket. The codec is sans-IO: it takes bytes and returns values, and back.

pub mod codec;
