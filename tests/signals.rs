//! The binary's shutdown: SIGTERM (and SIGINT) close every connection with
//! 320 CONNECTION_FORCED, RabbitMQ's text, and the process exits cleanly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amqp_raw::Raw;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn shutdown_by(signal: i32) {
    let dir = common::temp_dir("signals");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--no-management", "--no-prometheus"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut a = Raw::open(addr);
    let mut b = Raw::open(addr);
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    for r in [&mut a, &mut b] {
        let close = r.expect_connection_close();
        assert_eq!(close.reply_code, 320);
        assert_eq!(
            &close.reply_text[..],
            b"CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "broker did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_closes_connections_with_320_and_exits() {
    shutdown_by(libc::SIGTERM);
}

#[test]
fn sigint_closes_connections_with_320_and_exits() {
    shutdown_by(libc::SIGINT);
}
