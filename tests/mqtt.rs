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

/// MQTT over TLS (RabbitMQ's 8883): mosquitto_sub and mosquitto_pub with
/// the CA the test made, through the broker's MQTTS listener, which uses
/// the AMQPS certificate; a client that does not trust the CA fails its
/// handshake, and the broker goes on serving.
#[test]
fn mqtt_over_tls() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_mosquitto_clients();
    let certs = common::tls_certs();
    let mut cfg = warren::Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        data_dir: None,
        management_listen: None,
        prometheus_listen: None,
        ..warren::Config::default()
    };
    cfg.mqtt.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.tls.cert = Some(certs.cert.clone());
    cfg.tls.key = Some(certs.key.clone());
    let running = warren::Server::bind(cfg).unwrap().spawn().unwrap();
    let port = running.mqtt_addrs().tls[0].port().to_string();
    let ca = certs.ca.to_str().unwrap();
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &port, "--cafile", ca])
        .args(["-t", "secure/#", "-C", "1", "-W", "10", "-v", "-q", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let publish = |cafile: &str| {
        Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port, "--cafile", cafile])
            .args(["-t", "secure/a", "-m", "over tls", "-q", "1"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    // A client that trusts another CA: its handshake fails.
    let other = common::tls_certs();
    assert!(!publish(other.ca.to_str().unwrap()).success());
    assert!(publish(ca).success());
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "secure/a over tls"
    );
    running.shutdown().unwrap();
}
