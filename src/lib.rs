//! Warren: a lightweight AMQP 0-9-1 message broker.
//!
//! Data path: socket bytes → [`codec`] frames → methods → connection state
//! machine → broker (exchanges, queues, consumers) → outgoing frames →
//! socket. The codec is sans-IO: it takes bytes and returns values, and back.

#![deny(unsafe_code)]

pub mod amqp;
pub mod broker;
pub mod codec;
pub mod config;
pub mod config_file;
pub mod engine;
pub mod host;
pub mod logging;
pub mod mgmt;

pub use config::Config;
pub mod server;

pub use server::{Handle, Running, Server};

pub mod store;
#[allow(unsafe_code)]
pub mod sys;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
