//! Shared helpers for integration tests: an embedded broker on an ephemeral
//! port (or an external one via `WARREN_TEST_ADDR`, e.g. a real RabbitMQ
//! for checking that a test encodes RabbitMQ's behaviour).

#![allow(dead_code)]

use std::net::SocketAddr;

use warren::{Config, Running, Server};

/// A broker for one test; stopped when dropped.
pub struct TestBroker {
    /// Where it listens.
    pub addr: SocketAddr,
    running: Option<Running>,
}

impl TestBroker {
    /// `amqp://guest:guest@host:port/%2f`.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }
}

/// Start a broker with the default config on 127.0.0.1:0.
pub fn start() -> TestBroker {
    start_with(|_| {})
}

/// Start a broker after adjusting its config.
pub fn start_with(f: impl FnOnce(&mut Config)) -> TestBroker {
    let _ = env_logger::builder().is_test(true).try_init();
    if let Ok(addr) = std::env::var("WARREN_TEST_ADDR") {
        return TestBroker {
            addr: addr.parse().expect("WARREN_TEST_ADDR must be host:port"),
            running: None,
        };
    }
    let mut cfg = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..Config::default()
    };
    f(&mut cfg);
    let server = Server::bind(cfg).expect("bind");
    let running = server.spawn().expect("spawn");
    TestBroker {
        addr: running.local_addrs()[0],
        running: Some(running),
    }
}
