//! Users, vhosts, permissions and loopback-only users, end to end with pika:
//! the suite in `tests/python_auth/` runs against brokers started here with
//! `tests/python_auth/definitions.json` (a RabbitMQ 3.10 export written by
//! hand; its password hashes are RabbitMQ's sha256 scheme and were checked
//! by importing the file into RabbitMQ and logging in). The python venv is
//! the one `tests/pika.rs` provisions (`target/pyvenv`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::root;

use std::path::{Path, PathBuf};
use std::process::Command;

use warren::{Config, Server};

fn definitions() -> PathBuf {
    root().join("tests/python_auth/definitions.json")
}

fn pytest(file: &str, args: &[&str], env: &[(&str, String)]) {
    let mut cmd = Command::new(common::venv_python(
        "pyvenv",
        "tests/python/requirements.txt",
    ));
    cmd.current_dir(root())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(Path::new("tests/python_auth").join(file))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let st = cmd.status().expect("run pytest");
    assert!(st.success(), "pytest {file} failed: {st}");
}

/// Imported users log in with their passwords; a user without permissions
/// on a vhost is refused at connection.open (530); configure / write / read
/// are each refused with 403 where RabbitMQ refuses them; one queue name in
/// two vhosts holds two sets of messages; wrong passwords are pika's
/// ProbableAuthenticationError. Then the broker restarts (the imported
/// definitions are durable and imported again on top) and it all holds.
#[test]
fn users_vhosts_permissions_pika() {
    let mut broker = common::start_with(|cfg| cfg.definitions = Some(definitions()));
    let env = [("WARREN_AMQP_PORT", broker.addr.port().to_string())];
    pytest("test_auth.py", &[], &env);
    broker.restart();
    let env = [("WARREN_AMQP_PORT", broker.addr.port().to_string())];
    pytest("test_auth.py", &[], &env);
}

/// Without the definitions file on the second start, what was imported is
/// still there: users, permissions and durable queues were saved.
#[test]
fn imported_definitions_survive_a_restart_without_the_file() {
    let mut broker = common::start_with(|cfg| cfg.definitions = Some(definitions()));
    broker.stop();
    broker.config.definitions = None;
    broker.restart();
    let env = [("WARREN_AMQP_PORT", broker.addr.port().to_string())];
    pytest(
        "test_auth.py",
        &["-k", "log_in or refused or arguments"],
        &env,
    );
}

/// guest over a connection to 127.0.0.2, which `loopback_addresses =
/// 127.0.0.1` makes non-loopback, is refused like a wrong password; over
/// 127.0.0.1 it is accepted (also from a 127.0.0.2 source: RabbitMQ judges
/// the address connected to); alice may log in over either.
#[test]
fn guest_only_over_loopback_pika() {
    let conf = common::temp_dir("loopback-conf").join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!(
            "# two listeners; only the first counts as loopback\n\
             listeners.tcp.local  = 127.0.0.1:0\n\
             listeners.tcp.remote = 127.0.0.2:0\n\
             loopback_addresses = 127.0.0.1\n\
             load_definitions = {}\n\
             management.tcp.port = 0\n",
            definitions().display()
        ),
    )
    .expect("write config");
    let mut cfg = Config {
        data_dir: None,
        ..Config::default()
    };
    warren::config_file::load(&conf, &mut cfg).expect("config");
    cfg.management_listen = None;
    cfg.prometheus_listen = None;
    let server = Server::bind(cfg).expect("bind (is 127.0.0.2 available?)");
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let running = server.spawn().expect("spawn");
    pytest(
        "test_loopback.py",
        &[],
        &[
            ("WARREN_AMQP_HOST", addrs[0].ip().to_string()),
            ("WARREN_AMQP_PORT", addrs[0].port().to_string()),
            ("WARREN_REMOTE_HOST", addrs[1].ip().to_string()),
            ("WARREN_REMOTE_PORT", addrs[1].port().to_string()),
        ],
    );
    running.shutdown().expect("shutdown");
}
