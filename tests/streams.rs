//! Streams over AMQP 0-9-1 (issue 20): the pika suite in
//! `tests/python_streams/` against the warren binary, which its conftest
//! starts as a child process on free ports (AMQP and the management API)
//! with its data directory under `target/python_streams/`, so that tests
//! can restart it (SIGTERM) or kill it with -9 on the same data. The venv
//! is `target/pyvenv-streams` (created on first use from
//! `tests/python_streams/requirements.txt`).
//!
//! The suite was written against RabbitMQ 3.10 first and encodes its exact
//! behaviour (`tests/python_streams/RABBITMQ_FACTS.md`); run it against
//! RabbitMQ with the ignored test `streams_against_rabbitmq` (`cargo test
//! --test streams -- --ignored`), where only the RabbitMQ 3.13 filtering
//! tests are skipped. Against warren nothing is skipped.
//!
//! One suite file per test, one at a time (the 10,000-message and the
//! restart tests share two cores with everything else).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{root, run};
use std::process::Command;
use std::sync::Mutex;

/// One suite at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn suite_on(target: &str, files: &[&str]) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let python = common::venv_python("pyvenv-streams", "tests/python_streams/requirements.txt");
    run(Command::new(&python)
        .current_dir(root().join("tests/python_streams"))
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .args(files)
        .env("STREAM_TARGET", target)
        .env("WARREN_BIN", env!("CARGO_BIN_EXE_warren"))
        .env(
            "STREAM_TEST_BASE",
            root().join("target").join("python_streams"),
        )
        .env_remove("WARREN_AMQP_PORT"));
}

fn suite(file: &str) {
    suite_on("warren", &[file]);
}

#[test]
fn streams_declare() {
    suite("test_declare.py");
}

#[test]
fn streams_consume() {
    suite("test_consume.py");
}

#[test]
fn streams_offsets() {
    suite("test_offsets.py");
}

#[test]
fn streams_retention() {
    suite("test_retention.py");
}

#[test]
fn streams_restart() {
    suite("test_restart.py");
}

#[test]
fn streams_management() {
    suite("test_mgmt.py");
}

#[test]
fn streams_filtering() {
    suite("test_filtering.py");
}

/// The whole suite against a private RabbitMQ 3.10 node (Debian's
/// rabbitmq-server, installed when missing, as `tests/common/rabbitmq.rs`
/// does), to check that the tests encode RabbitMQ's behaviour.
#[test]
#[ignore = "checks the suite itself against RabbitMQ 3.10 (slow; needs rabbitmq-server)"]
fn streams_against_rabbitmq() {
    // Installs rabbitmq-server when it is not there yet.
    let _ = common::rabbitmq::rabbitmqadmin();
    suite_on("rabbitmq", &["."]);
}
