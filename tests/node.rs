//! Runs the amqplib (Node.js) tests in `tests/node/` against an embedded
//! broker. Without `node` or `npm` on the PATH it installs Debian's
//! `nodejs` and `npm` packages (apt-get, as `tests/common/rabbitmq.rs`
//! installs rabbitmq-server: the test machines are root and reach Debian's
//! package registry); if that fails, the test fails (it does not skip).
//! Dependencies are installed with `npm ci` into
//! `tests/node/node_modules` (git-ignored) on first use and again whenever
//! `package-lock.json` changes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

fn found(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Install Debian's nodejs and npm unless both are there; fail loudly if
/// they still are not.
fn require_node() {
    if !(found("node") && found("npm")) {
        for args in [
            &["apt-get", "update", "-q"][..],
            &["apt-get", "install", "-y", "-q", "nodejs", "npm"],
        ] {
            let st = Command::new(args[0])
                .args(&args[1..])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(std::process::Stdio::null())
                .status();
            assert!(
                st.is_ok_and(|s| s.success()),
                "{args:?} failed: the amqplib tests in tests/node need node and npm"
            );
        }
    }
    for tool in ["node", "npm"] {
        assert!(
            found(tool),
            "`{tool}` is not installed (or not on PATH): the amqplib tests in tests/node \
             need node and npm"
        );
    }
}

/// `npm ci` unless node_modules already holds what package-lock.json names.
fn install() {
    // The tests run in parallel: one `npm ci` at a time.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = node_dir();
    let lock = std::fs::read_to_string(dir.join("package-lock.json")).expect("package-lock.json");
    let stamp = dir.join("node_modules").join(".warren-installed-lock");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(lock.as_str()) {
        return;
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir));
    std::fs::write(&stamp, lock).expect("write install stamp");
}

/// Run `script` (in tests/node) against a broker of its own.
fn run_script(script: &str) {
    require_node();
    install();
    let broker = common::start();
    run(Command::new("node")
        .arg(script)
        .current_dir(node_dir())
        .env("WARREN_AMQP_HOST", broker.addr.ip().to_string())
        .env("WARREN_AMQP_PORT", broker.addr.port().to_string()));
}

/// `tls.js`: amqplib over amqps://, with a client certificate and SASL
/// EXTERNAL, against a broker with certificates made by the openssl CLI.
#[test]
fn amqplib_over_tls() {
    require_node();
    install();
    let certs = common::tls_certs();
    let (cert, key) = certs.client("client", "/O=Warren Test/CN=guest");
    let broker = common::start_tls(&certs, |c| {
        c.tls.ca = Some(certs.ca.clone());
        c.ssl_cert_login_from = warren::CertLogin::CommonName;
    });
    run(Command::new("node")
        .arg("tls.js")
        .current_dir(node_dir())
        .env("WARREN_AMQP_HOST", "127.0.0.1")
        .env(
            "WARREN_AMQPS_PORT",
            broker.tls_addr.unwrap().port().to_string(),
        )
        .env("WARREN_TLS_CA", &certs.ca)
        .env("WARREN_TLS_CLIENT_CERT", &cert)
        .env("WARREN_TLS_CLIENT_KEY", &key));
}

#[test]
fn amqplib_ttl_and_dead_lettering() {
    run_script("ttl_dlx.js");
}

/// Publish a burst and close at once, as amqplib programs do: close() must
/// resolve without EPIPE or a reset, and every message must be queued
/// (10, 100 and 1000 messages, plain and confirm channels, five rounds).
#[test]
fn amqplib_close_right_after_publishing() {
    run_script("close.js");
}
