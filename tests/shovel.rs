//! Dynamic shovels against a real RabbitMQ: `tests/python_links/` (pika)
//! drives warren (the release binary, as a child it can kill with -9) and
//! a private RabbitMQ node started here (its own name, ports and
//! directories under `target/rabbitmq/`), which the scenarios stop and
//! start with `rabbitmqctl stop_app` / `start_app`; and a shovel over TLS
//! to a second warren, with the CA and server certificate made here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::rabbitmq::RabbitMq;
use common::{root, run};
use std::process::Command;

#[test]
fn shovels_to_and_from_rabbitmq() {
    let python = common::venv_python("pyvenv-links", "tests/python_links/requirements.txt");
    let rabbit = RabbitMq::start("shovel");
    let data = common::temp_dir("shovel");
    let certs = common::tls_certs();
    run(Command::new(&python)
        .current_dir(root().join("tests/python_links"))
        .args([
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "test_shovel.py",
        ])
        .env("WARREN_BIN", env!("CARGO_BIN_EXE_warren"))
        .env("RABBIT_PORT", rabbit.addr.port().to_string())
        .env("RABBITMQCTL", "/usr/lib/rabbitmq/bin/rabbitmqctl")
        .env("RABBIT_NODE", &rabbit.node)
        .env("WARREN_DATA", &data)
        .env("TLS_CA", &certs.ca)
        .env("TLS_CERT", &certs.cert)
        .env("TLS_KEY", &certs.key));
    let _ = std::fs::remove_dir_all(&data);
}
