//! The binary's shutdown: SIGTERM (and SIGINT) close every connection with
//! 320 CONNECTION_FORCED, RabbitMQ's text, and the process exits cleanly;
//! SIGHUP reloads the TLS certificates.

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

/// The tests here pick free ports for a child process to bind: one at a
/// time, or two of them may pick the same port.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn shutdown_by(signal: i32) {
    let _one = one_at_a_time();
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

/// The leaf certificate a TLS listener serves now.
fn served_leaf(certs: &common::TlsCerts, port: u16) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&certs.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        rustls_pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(warren::codec::frame::PROTOCOL_HEADER)
        .unwrap();
    let mut head = [0u8; 7];
    tls.read_exact(&mut head).unwrap();
    tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// SIGHUP reads the TLS certificate files again: new connections get the
/// new certificate, the broker goes on (and a bad file keeps the old one).
#[test]
fn sighup_reloads_the_tls_certificates() {
    use rustls_pki_types::pem::PemObject;
    let _one = one_at_a_time();
    let certs = common::tls_certs();
    let (cert, key) = (certs.dir.join("live.pem"), certs.dir.join("live.key"));
    std::fs::copy(&certs.cert, &cert).unwrap();
    std::fs::copy(&certs.key, &key).unwrap();
    let dir = common::temp_dir("sighup");
    let (port, tls_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--no-management", "--no-prometheus"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--tls-listen", &format!("127.0.0.1:{tls_port}")])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let der = |p: &std::path::Path| {
        rustls_pki_types::CertificateDer::from_pem_file(p)
            .unwrap()
            .as_ref()
            .to_vec()
    };
    assert_eq!(served_leaf(&certs, tls_port), der(&certs.cert));
    let hup = || {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    };
    let (new_cert, new_key) = certs.server("second", "localhost");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_leaf(&certs, tls_port) != der(&new_cert) {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&key, "garbage\n").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(served_leaf(&certs, tls_port), der(&new_cert));
    Raw::open(format!("127.0.0.1:{port}").parse().unwrap()).open_channel(1);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the broker is still up"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
