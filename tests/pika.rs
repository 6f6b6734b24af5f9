//! Runs the pika suite in `tests/python/` against an embedded broker. The
//! first run creates a venv under `target/pyvenv` and installs
//! `tests/python/requirements.txt` into it (re-installed when that file
//! changes); nothing but python3 needs to be on the machine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;

use common::{root, run};
use std::process::Command;

fn pytest(python: &Path, port: u16, args: &[&str]) {
    pytest_env(python, port, args, &[]);
}

fn pytest_env(python: &Path, port: u16, args: &[&str], env: &[(&str, String)]) {
    let mut cmd = Command::new(python);
    cmd.current_dir(root())
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python",
        ])
        .args(args)
        .env("WARREN_AMQP_PORT", port.to_string())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    run(&mut cmd);
}

/// `tests/python/test_tls.py`: pika over TLS with an `ssl.SSLContext`
/// that verifies the broker against the CA the test made, with a client
/// certificate (mutual TLS), and SASL EXTERNAL with
/// `pika.credentials.ExternalCredentials` (the suite skips these without a
/// TLS listener).
#[test]
fn pika_over_tls() {
    let python = common::venv_python("pyvenv", "tests/python/requirements.txt");
    let certs = common::tls_certs();
    let (client_cert, client_key) = certs.client("client", "/O=Warren Test/CN=guest");
    let broker = common::start_tls(&certs, |c| {
        c.tls.ca = Some(certs.ca.clone());
        c.ssl_cert_login_from = warren::CertLogin::CommonName;
    });
    let tls_port = broker.tls_addr.unwrap().port();
    pytest_env(
        &python,
        broker.addr.port(),
        &["-k", "test_tls"],
        &[
            ("WARREN_AMQPS_PORT", tls_port.to_string()),
            ("WARREN_TLS_CA", certs.ca.display().to_string()),
            ("WARREN_TLS_CLIENT_CERT", client_cert.display().to_string()),
            ("WARREN_TLS_CLIENT_KEY", client_key.display().to_string()),
        ],
    );
}

#[test]
fn pika_suite() {
    let python = common::venv_python("pyvenv", "tests/python/requirements.txt");
    let broker = common::start();
    pytest(&python, broker.addr.port(), &[]);
}
