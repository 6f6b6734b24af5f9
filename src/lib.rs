//! Warren: a lightweight AMQP 0-9-1 message broker.
//!
//! Data path: socket bytes → [`codec`] frames → methods → connection state
//! machine → broker (exchanges, queues, consumers) → outgoing frames →
//! socket. The codec is sans-IO: it takes bytes and returns values, and back.
//! MQTT 3.1, 3.1.1 and 5.0 ([`mqtt`], with its own sans-IO packet codec
//! [`mqtt::codec`]) drive the same engine beside AMQP, also over WebSocket
//! ([`websocket`]: the sans-IO RFC 6455 server layer).

#![deny(unsafe_code)]

// The public surface: the server and its configuration, the codec, the
// MQTT codec, the WebSocket layer, the file-based configuration and
// logging the `warren` binary uses, the binaries' option table (`cli`), and the few helpers the binaries share
// (`support`). Everything else is the
// crate's own (the test harness re-exports what the tests look at).
pub mod cli;
pub mod codec;
pub mod config_file;
pub mod logging;
pub mod mqtt;
pub mod websocket;
pub use config::{AuthMechanism, CertLogin, Config, SniCert, TlsOptions, TlsVersion};
pub use server::{Handle, MqttAddrs, Running, Server};

pub(crate) mod amqp;
pub(crate) mod broker;
pub(crate) mod config;
pub(crate) mod engine;
pub(crate) mod host;
pub(crate) mod link;
pub(crate) mod mgmt;
pub(crate) mod server;
pub(crate) mod store;
#[allow(unsafe_code)]
pub(crate) mod sys;
pub(crate) mod tls;

#[doc(hidden)]
pub mod support;

#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
