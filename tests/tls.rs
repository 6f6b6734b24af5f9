//! AMQPS beside plain AMQP, over real sockets, with certificates the test
//! makes with the `openssl` CLI: a TLS client gets connection.start;
//! plain AMQP, garbage and a truncated ClientHello on the TLS port close
//! that socket alone while a plain client goes on; a ClientHello on the
//! plain port gets the AMQP protocol header back, as any garbage does; a
//! stalled TLS handshake is closed by the handshake timeout. (pika over
//! TLS: `tests/pika.rs`, `pika_over_tls`.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_raw::Raw;
use common::TlsCerts;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use warren::codec::frame::PROTOCOL_HEADER;

fn client_config(certs: &TlsCerts) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&certs.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS client to `addr` (verifying the broker as `localhost`) that sends
/// the protocol header and returns the first frame's type, channel and
/// method id (class, method).
fn tls_connection_start(certs: &TlsCerts, addr: SocketAddr) -> (u8, u16, u16, u16) {
    let conn = rustls::ClientConnection::new(
        client_config(certs),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(PROTOCOL_HEADER).unwrap();
    let mut head = [0u8; 11];
    tls.read_exact(&mut head).unwrap();
    (
        head[0],
        u16::from_be_bytes([head[1], head[2]]),
        u16::from_be_bytes([head[7], head[8]]),
        u16::from_be_bytes([head[9], head[10]]),
    )
}

/// A ClientHello as a TLS client would send it first.
fn client_hello(certs: &TlsCerts) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(
        client_config(certs),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(out[0], 0x16, "a handshake record");
    out
}

/// Send `bytes` to `addr` and read until the broker closes the socket
/// (EOF or a reset); what it sent, and how long it took. A read timeout
/// fails the test.
fn send_and_read_to_close(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let t = Instant::now();
    sock.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the broker did not close the socket: {e} (got {got:?})"),
        }
    }
    (got, t.elapsed())
}

#[test]
fn amqps_and_amqp_side_by_side() {
    let certs = common::tls_certs();
    let broker = common::start_tls(&certs, |_| {});
    let tls_addr = broker.tls_addr.unwrap();
    assert_ne!(tls_addr, broker.addr);
    // connection.start (10, 10) on channel 0, in a method frame.
    assert_eq!(tls_connection_start(&certs, tls_addr), (1, 0, 10, 10));
    let mut plain = Raw::open(broker.addr);
    plain.open_channel(1);
    assert_eq!(tls_connection_start(&certs, tls_addr), (1, 0, 10, 10));
}

#[test]
fn plain_amqp_and_garbage_on_the_tls_port_close_that_socket_only() {
    let certs = common::tls_certs();
    let broker = common::start_tls(&certs, |_| {});
    let tls_addr = broker.tls_addr.unwrap();
    let mut plain = Raw::open(broker.addr);
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    // A whole ClientHello record with garbage after its headers.
    let mut bad_hello = client_hello(&certs);
    for b in &mut bad_hello[9..] {
        *b = 0xff;
    }
    let cases: [(&str, &[u8]); 3] = [
        ("plain AMQP", PROTOCOL_HEADER),
        ("garbage", &garbage),
        ("corrupted ClientHello", &bad_hello),
    ];
    for (what, bytes) in cases {
        let (got, took) = send_and_read_to_close(tls_addr, bytes);
        assert!(
            !got.windows(4).any(|w| w == b"AMQP"),
            "{what}: no AMQP on the TLS port: {got:?}"
        );
        // At most a TLS alert record before the close.
        assert!(got.is_empty() || got[0] == 0x15, "{what}: {got:?}");
        assert!(took < Duration::from_secs(3), "{what}: took {took:?}");
        // The plain client is still served, and TLS still works.
        plain.open_channel(2);
        plain.close_channel(2);
        assert_eq!(tls_connection_start(&certs, tls_addr), (1, 0, 10, 10));
    }
}

#[test]
fn tls_on_the_plain_port_gets_the_protocol_header() {
    let certs = common::tls_certs();
    let broker = common::start_tls(&certs, |_| {});
    let (got, _) = send_and_read_to_close(broker.addr, &client_hello(&certs));
    assert_eq!(got, PROTOCOL_HEADER, "as for any bad protocol header");
    Raw::open(broker.addr).open_channel(1);
}

#[test]
fn a_stalled_tls_handshake_is_closed_by_the_handshake_timeout() {
    let certs = common::tls_certs();
    let broker = common::start_tls(&certs, |c| {
        c.handshake_timeout = Duration::from_millis(500);
    });
    let tls_addr = broker.tls_addr.unwrap();
    let hello = client_hello(&certs);
    // Nothing at all, and half a ClientHello.
    for (what, bytes) in [
        ("nothing", &[][..]),
        ("half a ClientHello", &hello[..hello.len() / 2]),
    ] {
        let (got, took) = send_and_read_to_close(tls_addr, bytes);
        assert!(got.is_empty() || got[0] == 0x15, "{what}: {got:?}");
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(5),
            "{what}: closed after {took:?}"
        );
    }
    // A complete handshake in time is served.
    assert_eq!(tls_connection_start(&certs, tls_addr), (1, 0, 10, 10));
}

#[test]
fn a_tls_listener_without_certificate_does_not_start() {
    let cfg = warren::Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        tls_listen: vec!["127.0.0.1:0".parse().unwrap()],
        data_dir: None,
        management_listen: None,
        prometheus_listen: None,
        ..warren::Config::default()
    };
    let e = warren::Server::bind(cfg)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("certfile and keyfile"), "{e}");
    let certs = common::tls_certs();
    let cfg = warren::Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        tls_listen: vec!["127.0.0.1:0".parse().unwrap()],
        tls: warren::TlsOptions {
            cert: Some(certs.cert.clone()),
            key: Some(certs.dir.join("missing.key")),
            ..warren::TlsOptions::default()
        },
        data_dir: None,
        management_listen: None,
        prometheus_listen: None,
        ..warren::Config::default()
    };
    let e = warren::Server::bind(cfg)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("missing.key"), "{e}");
}

#[test]
fn the_management_api_lists_the_tls_listener() {
    let certs = common::tls_certs();
    let broker = common::start_tls(&certs, |c| {
        c.management_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let tls_port = broker.tls_addr.unwrap().port();
    let mut sock = TcpStream::connect(broker.mgmt_addr.unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(
        b"GET /api/overview HTTP/1.1\r\nHost: x\r\n\
          Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).unwrap();
    let resp = warren::support::parse_http_response(&raw).unwrap();
    assert_eq!(resp.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let listeners = v["listeners"].as_array().unwrap();
    let find = |proto: &str| {
        listeners
            .iter()
            .filter(|l| l["protocol"] == proto)
            .map(|l| l["port"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(find("amqp/ssl"), vec![u64::from(tls_port)], "{listeners:?}");
    assert_eq!(find("amqp"), vec![u64::from(broker.addr.port())]);
}

/// `openssl s_client` with `-verify_return_error`: the handshake verifies
/// against the test CA and the protocol header gets connection.start
/// back, whose mechanisms list EXTERNAL only when the client presented a
/// certificate.
#[test]
fn openssl_s_client_gets_connection_start() {
    use std::process::{Command, Stdio};
    let certs = common::tls_certs();
    let (cert, key) = certs.client("client", "/CN=guest");
    let broker = common::start_tls(&certs, |c| {
        c.tls.ca = Some(certs.ca.clone());
        // The broker ends the unfinished AMQP handshake soon, which ends
        // s_client (it ignores the end of its input).
        c.handshake_timeout = Duration::from_millis(1500);
    });
    let addr = broker.tls_addr.unwrap();
    for client in [None, Some((&cert, &key))] {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(["-verify_return_error", "-quiet", "-ign_eof", "-CAfile"])
        .arg(&certs.ca);
        if let Some((c, k)) = client {
            cmd.arg("-cert").arg(c).arg("-key").arg(k);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl s_client");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(PROTOCOL_HEADER)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = out.stdout;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("verify return:1"), "{stderr}");
        // A method frame on channel 0: connection.start (10, 10).
        assert!(stdout.len() > 11, "{stdout:?} {stderr}");
        assert_eq!(&stdout[..3], &[1, 0, 0]);
        assert_eq!(&stdout[7..11], &[0, 10, 0, 10]);
        let text = String::from_utf8_lossy(&stdout);
        if client.is_some() {
            assert!(text.contains("PLAIN AMQPLAIN EXTERNAL"), "{text}");
        } else {
            assert!(
                text.contains("PLAIN AMQPLAIN") && !text.contains("EXTERNAL"),
                "{text}"
            );
        }
    }
}
