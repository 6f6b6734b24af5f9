//! MQTT 3.1, 3.1.1 and 5.0: the packet codec (sans-IO, zero-copy, in
//! [`codec`]); the session layer on top of it lives here as well.

pub mod codec;
