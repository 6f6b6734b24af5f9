//! MQTT 3.1.1 and 5.0 (and MQTT over WebSocket): the paho-mqtt and pika
//! suites in `tests/python_mqtt/` drive the warren binary, which their
//! conftest starts as a child process on free ports (MQTT, WebSocket,
//! AMQP, management API) so that the tests can restart it, or kill it with
//! -9, on the same data directory. Debian's `mosquitto-clients` (for the
//! `mosquitto_pub`/`mosquitto_sub` round trip) is installed with apt-get
//! when it is missing, as `tests/common/rabbitmq.rs` installs
//! rabbitmq-server. One test per suite file; they run one at a time, since
//! several of them time keep-alives and will delays.
//!
//! The suites were checked against mosquitto 2.x first
//! (`MQTT_TARGET=mosquitto python -m pytest tests/python_mqtt`) and the
//! AMQP parts against RabbitMQ 3.10 (`MQTT_TARGET=rabbitmq`); here they run
//! against warren with nothing skipped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{root, run};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One suite at a time (timing-sensitive tests share two cores).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Install Debian's mosquitto-clients unless `mosquitto_pub` is there.
fn require_mosquitto_clients() {
    let found = |tool: &str| {
        Command::new(tool)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if found("mosquitto_pub") && found("mosquitto_sub") {
        return;
    }
    for args in [
        &["apt-get", "update", "-q"][..],
        &["apt-get", "install", "-y", "-q", "mosquitto-clients"],
    ] {
        let st = Command::new(args[0])
            .args(&args[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "{args:?} failed: the MQTT tests need mosquitto_pub and mosquitto_sub"
        );
    }
}

fn suite(file: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_mosquitto_clients();
    let python = common::venv_python("pyvenv-mqtt", "tests/python_mqtt/requirements.txt");
    run(Command::new(&python)
        .current_dir(root().join("tests/python_mqtt"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", file])
        .env("MQTT_TARGET", "warren")
        .env("WARREN_BIN", env!("CARGO_BIN_EXE_warren")));
}

#[test]
fn mqtt_basics() {
    suite("test_basics.py");
}

#[test]
fn mqtt_sessions() {
    suite("test_sessions.py");
}

#[test]
fn mqtt_qos2() {
    suite("test_qos2.py");
}

#[test]
fn mqtt_retained_and_will() {
    suite("test_retained_will.py");
}

#[test]
fn mqtt_v5() {
    suite("test_v5.py");
}

#[test]
fn mqtt_with_amqp() {
    suite("test_amqp_mixed.py");
}

#[test]
fn mqtt_bad_input() {
    suite("test_bad_input.py");
}

#[test]
fn mqtt_websocket() {
    suite("test_websocket.py");
}
