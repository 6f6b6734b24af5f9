//! Client certificates, SASL EXTERNAL, SNI, certificate reload and the
//! management API over HTTPS, over real sockets with certificates the test
//! makes with the `openssl` CLI (`tests/common`): what the client sees in
//! each case, and that other clients keep being served.

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
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_raw::Raw;
use bytes::Bytes;
use common::{TlsCerts, CLIENT_EXT};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use warren::codec::frame::PROTOCOL_HEADER;
use warren::{AuthMechanism, CertLogin};

/// A rustls client trusting the test CA, presenting `client` (cert, key)
/// if given.
fn client_config(certs: &TlsCerts, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&certs.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
                .unwrap()
        }
    })
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` asking for (and verifying) `name`.
fn connect(config: Arc<rustls::ClientConfig>, addr: SocketAddr, name: &str) -> Tls {
    let conn =
        rustls::ClientConnection::new(config, ServerName::try_from(name.to_string()).unwrap())
            .unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Over TLS with `client`'s certificate: send the protocol header and
/// read connection.start. `Ok(mechanisms)`, or `Err` with what the client
/// saw (a TLS alert, the socket closed) when the broker refused.
fn start_mechanisms(
    certs: &TlsCerts,
    addr: SocketAddr,
    client: Option<(&Path, &Path)>,
) -> Result<String, String> {
    let mut tls = connect(client_config(certs, client), addr, "localhost");
    tls.write_all(PROTOCOL_HEADER).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut raw = Raw::over(tls);
    match raw.poll_frame(Duration::from_secs(5)) {
        Ok(Some(warren::codec::Frame::Method(0, warren::codec::Method::ConnectionStart(s)))) => {
            Ok(String::from_utf8_lossy(&s.mechanisms).into_owned())
        }
        other => Err(format!("{other:?}")),
    }
}

/// An AMQP connection over TLS with `client`'s certificate, logged in
/// with `mechanism` (EXTERNAL: an empty response).
fn tls_login(
    certs: &TlsCerts,
    addr: SocketAddr,
    client: Option<(&Path, &Path)>,
    mechanism: &str,
    response: &str,
) -> Result<Raw, warren::codec::ConnectionClose> {
    let tls = connect(client_config(certs, client), addr, "localhost");
    let mut raw = Raw::over(tls);
    raw.handshake_with(mechanism, Bytes::from(response.to_string()), "/")
        .map(|()| raw)
}

fn plain_served(broker: &common::TestBroker) {
    let mut plain = Raw::open(broker.addr);
    plain.open_channel(1);
    plain.close_channel(1);
}

#[test]
fn verify_peer_checks_a_presented_certificate_and_offers_external() {
    let certs = common::tls_certs();
    let good = certs.client("good", "/O=Warren Test/CN=alice");
    let rogue = certs.issue("rogue", "/CN=alice", CLIENT_EXT, 2, true);
    let expired = certs.issue("expired", "/CN=alice", CLIENT_EXT, -1, false);
    let server_only = certs.issue(
        "server-only",
        "/CN=alice",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
        2,
        false,
    );
    let broker = common::start_tls(&certs, |c| c.tls.ca = Some(certs.ca.clone()));
    let addr = broker.tls_addr.unwrap();
    // No certificate: served (fail_if_no_peer_cert is false), no EXTERNAL.
    assert_eq!(
        start_mechanisms(&certs, addr, None).unwrap(),
        "PLAIN AMQPLAIN"
    );
    // A verified one: EXTERNAL offered too.
    let pair = |p: &(std::path::PathBuf, std::path::PathBuf)| (p.0.clone(), p.1.clone());
    let (c, k) = pair(&good);
    assert_eq!(
        start_mechanisms(&certs, addr, Some((&c, &k))).unwrap(),
        "PLAIN AMQPLAIN EXTERNAL"
    );
    // Untrusted, expired, or not for client authentication: the
    // handshake fails, and nobody else notices.
    for (what, (c, k)) in [
        ("untrusted", pair(&rogue)),
        ("expired", pair(&expired)),
        ("serverAuth only", pair(&server_only)),
    ] {
        let r = start_mechanisms(&certs, addr, Some((&c, &k)));
        assert!(r.is_err(), "{what}: {r:?}");
        plain_served(&broker);
        assert!(start_mechanisms(&certs, addr, None).is_ok(), "{what}");
    }
}

#[test]
fn fail_if_no_peer_cert_refuses_clients_without_one() {
    let certs = common::tls_certs();
    let (c, k) = certs.client("good", "/CN=alice");
    let rogue = certs.issue("rogue", "/CN=alice", CLIENT_EXT, 2, true);
    let expired = certs.issue("expired", "/CN=alice", CLIENT_EXT, -1, false);
    let broker = common::start_tls(&certs, |c| {
        c.tls.ca = Some(certs.ca.clone());
        c.tls.fail_if_no_peer_cert = true;
    });
    let addr = broker.tls_addr.unwrap();
    let r = start_mechanisms(&certs, addr, None);
    assert!(r.is_err(), "{r:?}");
    plain_served(&broker);
    for (what, (bc, bk)) in [("untrusted", rogue), ("expired", expired)] {
        let r = start_mechanisms(&certs, addr, Some((&bc, &bk)));
        assert!(r.is_err(), "{what}: {r:?}");
        plain_served(&broker);
    }
    assert!(start_mechanisms(&certs, addr, Some((&c, &k))).is_ok());
}

#[test]
fn a_tls_option_without_what_it_needs_stops_the_start() {
    let certs = common::tls_certs();
    for (f, want) in [
        (
            (|c: &mut warren::Config| c.tls.verify_peer = Some(true)) as fn(&mut warren::Config),
            "needs a CA file",
        ),
        (
            |c: &mut warren::Config| c.tls.fail_if_no_peer_cert = true,
            "fail_if_no_peer_cert",
        ),
        (
            |c: &mut warren::Config| c.tls.ciphers = vec!["RC4-MD5".into()],
            "'RC4-MD5' is not implemented",
        ),
    ] {
        let mut cfg = warren::Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            tls_listen: vec!["127.0.0.1:0".parse().unwrap()],
            data_dir: None,
            management_listen: None,
            prometheus_listen: None,
            ..warren::Config::default()
        };
        cfg.tls.cert = Some(certs.cert.clone());
        cfg.tls.key = Some(certs.key.clone());
        f(&mut cfg);
        let e = warren::Server::bind(cfg)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn external_takes_the_user_from_the_verified_certificate() {
    let certs = common::tls_certs();
    let alice = certs.client("alice", "/O=Warren Test/CN=alice");
    let mallory = certs.client("mallory", "/O=Warren Test/CN=mallory");
    let dn = "CN=alice,O=Warren Test";
    let broker = common::start_tls(&certs, |c| {
        c.tls.ca = Some(certs.ca.clone());
        c.default_user = dn.into();
    });
    let addr = broker.tls_addr.unwrap();
    // The distinguished name is the user (RabbitMQ's default); the
    // response is not looked at.
    let mut raw = tls_login(&certs, addr, Some((&alice.0, &alice.1)), "EXTERNAL", "")
        .unwrap_or_else(|c| panic!("EXTERNAL refused: {c:?}"));
    raw.open_channel(1);
    raw.close_channel(1);
    // The same user with its password over PLAIN still works.
    let mut p = tls_login(
        &certs,
        addr,
        Some((&alice.0, &alice.1)),
        "PLAIN",
        &format!("\0{dn}\0guest"),
    )
    .unwrap_or_else(|c| panic!("PLAIN refused: {c:?}"));
    p.open_channel(1);
    // A verified certificate whose user does not exist: 403, as RabbitMQ.
    let close = tls_login(&certs, addr, Some((&mallory.0, &mallory.1)), "EXTERNAL", "")
        .err()
        .expect("refused");
    assert_eq!(close.reply_code, 403);
    assert_eq!(
        String::from_utf8_lossy(&close.reply_text),
        "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."
    );
    // EXTERNAL without a certificate (over TLS) and on the plain port:
    // not offered, so 503 COMMAND_INVALID, as RabbitMQ.
    for close in [
        tls_login(&certs, addr, None, "EXTERNAL", "")
            .err()
            .expect("refused"),
        {
            let mut r = Raw::tcp(broker.addr);
            r.handshake_with("EXTERNAL", Bytes::new(), "/")
                .expect_err("refused")
        },
    ] {
        assert_eq!(close.reply_code, 503);
        let text = String::from_utf8_lossy(&close.reply_text).into_owned();
        assert!(
            text.starts_with("COMMAND_INVALID - invalid authentication mechanism 'EXTERNAL'"),
            "{text}"
        );
    }
    // A mechanism warren does not have.
    let close = Raw::tcp(broker.addr)
        .handshake_with("CRAM-MD5", Bytes::new(), "/")
        .expect_err("refused");
    assert_eq!(close.reply_code, 503);
    // Everyone else is still served.
    raw.open_channel(2);
    let mut again = tls_login(&certs, addr, Some((&alice.0, &alice.1)), "EXTERNAL", "").unwrap();
    again.open_channel(1);
}

#[test]
fn external_by_common_name_and_a_narrowed_mechanism_list() {
    let certs = common::tls_certs();
    let alice = certs.client("alice", "/O=Warren Test/CN=alice");
    let nocn = certs.client("nocn", "/O=Warren Test/OU=no common name");
    let broker = common::start_tls(&certs, |c| {
        c.tls.ca = Some(certs.ca.clone());
        c.default_user = "alice".into();
        c.ssl_cert_login_from = CertLogin::CommonName;
    });
    let addr = broker.tls_addr.unwrap();
    let mut raw = tls_login(&certs, addr, Some((&alice.0, &alice.1)), "EXTERNAL", "")
        .unwrap_or_else(|c| panic!("EXTERNAL refused: {c:?}"));
    raw.open_channel(1);
    // No CN to take a name from: refused.
    let close = tls_login(&certs, addr, Some((&nocn.0, &nocn.1)), "EXTERNAL", "")
        .err()
        .expect("refused");
    assert_eq!(close.reply_code, 403);
    drop(broker);
    let broker = common::start_tls(&certs, |c| {
        c.tls.ca = Some(certs.ca.clone());
        c.auth_mechanisms = vec![AuthMechanism::Plain];
    });
    let addr = broker.tls_addr.unwrap();
    assert_eq!(
        start_mechanisms(&certs, addr, Some((&alice.0, &alice.1))).unwrap(),
        "PLAIN"
    );
}

#[test]
fn sni_chooses_the_certificate_by_server_name() {
    let certs = common::tls_certs();
    let (mq_cert, mq_key) = certs.server("mq", "mq.example.test");
    let broker = common::start_tls(&certs, |c| {
        c.tls.sni = vec![warren::SniCert {
            name: "MQ.example.test".into(),
            cert: mq_cert.clone(),
            key: mq_key.clone(),
        }];
    });
    let addr = broker.tls_addr.unwrap();
    let leaf = |tls: &Tls| tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    let mq_der = CertificateDer::from_pem_file(&mq_cert)
        .unwrap()
        .as_ref()
        .to_vec();
    let default_der = CertificateDer::from_pem_file(&certs.cert)
        .unwrap()
        .as_ref()
        .to_vec();
    for (name, want) in [("mq.example.test", &mq_der), ("localhost", &default_der)] {
        let mut tls = connect(client_config(&certs, None), addr, name);
        tls.write_all(PROTOCOL_HEADER).unwrap();
        let mut head = [0u8; 7];
        tls.read_exact(&mut head)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&leaf(&tls), want, "{name}");
    }
}

/// The leaf certificate the broker at `addr` serves now.
fn served_leaf(certs: &TlsCerts, addr: SocketAddr) -> Vec<u8> {
    let mut tls = connect(client_config(certs, None), addr, "localhost");
    tls.write_all(PROTOCOL_HEADER).unwrap();
    let mut head = [0u8; 7];
    tls.read_exact(&mut head).unwrap();
    tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// A request over plain HTTP (guest/guest), Connection: close.
fn http(addr: SocketAddr, method: &str, path: &str) -> warren::support::HttpResponse {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).unwrap();
    warren::support::parse_http_response(&raw).unwrap()
}

#[test]
fn certificates_reload_for_new_connections_and_a_bad_file_keeps_the_old() {
    let certs = common::tls_certs();
    // The broker's files are copies the test replaces.
    let (cert, key) = (certs.dir.join("live.pem"), certs.dir.join("live.key"));
    std::fs::copy(&certs.cert, &cert).unwrap();
    std::fs::copy(&certs.key, &key).unwrap();
    let broker = common::start_with(|c| {
        c.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls.cert = Some(cert.clone());
        c.tls.key = Some(key.clone());
        c.management_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let addr = broker.tls_addr.unwrap();
    assert_eq!(served_leaf(&certs, addr), der(&certs.cert));
    let mut old = tls_login(&certs, addr, None, "PLAIN", "\0guest\0guest").unwrap();
    old.open_channel(1);

    let wait_for = |want: &[u8]| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while served_leaf(&certs, addr) != want {
            assert!(
                Instant::now() < deadline,
                "the new certificate was not served"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // SIGHUP's way: a new certificate for the same name.
    let (new_cert, new_key) = certs.server("second", "localhost");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    broker.reload_certificates();
    wait_for(&der(&new_cert));
    // The connection made before goes on with its session.
    old.open_channel(2);
    old.close_channel(2);

    // A broken file: the reload fails (400 with the reason) and the
    // certificate in use stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let mgmt = broker.mgmt_addr.unwrap();
    let r = http(mgmt, "POST", "/api/reload-certificates");
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        String::from_utf8_lossy(&r.body).contains("live.pem"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    broker.reload_certificates();
    assert_eq!(served_leaf(&certs, addr), der(&new_cert));
    // Fixed again, through the API (warren ctl reload_certificates).
    std::fs::copy(&certs.cert, &cert).unwrap();
    std::fs::copy(&certs.key, &key).unwrap();
    assert_eq!(http(mgmt, "POST", "/api/reload-certificates").status, 204);
    assert_eq!(served_leaf(&certs, addr), der(&certs.cert));
    old.open_channel(3);
}

/// A request over HTTPS (guest/guest), Connection: close.
fn https(
    certs: &TlsCerts,
    addr: SocketAddr,
    path: &str,
) -> Result<warren::support::HttpResponse, String> {
    let mut tls = connect(client_config(certs, None), addr, "localhost");
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    warren::support::parse_http_response(&raw)
}

#[test]
fn management_over_https_shows_tls_connections() {
    let certs = common::tls_certs();
    let alice = certs.client("alice", "/O=Warren Test/CN=alice");
    let broker = common::start_tls(&certs, |c| {
        c.tls.ca = Some(certs.ca.clone());
        c.management_tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.management_tls.cert = Some(certs.cert.clone());
        c.management_tls.key = Some(certs.key.clone());
    });
    let https_addr = broker.https_addr.unwrap();
    let r = https(&certs, https_addr, "/api/overview").unwrap();
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let https_ports: Vec<u64> = v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["protocol"] == "https")
        .map(|l| l["port"].as_u64().unwrap())
        .collect();
    assert_eq!(https_ports, vec![u64::from(https_addr.port())]);
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut sock = TcpStream::connect(https_addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = sock.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP"), "{got:?}");

    // A TLS connection with a client certificate, and a plain one, as
    // the API shows them.
    let addr = broker.tls_addr.unwrap();
    let _tls_plain = tls_login(
        &certs,
        addr,
        Some((&alice.0, &alice.1)),
        "PLAIN",
        "\0guest\0guest",
    )
    .unwrap();
    let _plain = Raw::open(broker.addr);
    let r = https(&certs, https_addr, "/api/connections").unwrap();
    assert_eq!(r.status, 200);
    let conns: Vec<serde_json::Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(conns.len(), 2, "{conns:?}");
    let tls_conn = conns.iter().find(|c| c["ssl"] == true).expect("a TLS one");
    assert_eq!(tls_conn["auth_mechanism"], "PLAIN");
    assert!(
        tls_conn["ssl_protocol"] == "tlsv1.3" || tls_conn["ssl_protocol"] == "tlsv1.2",
        "{tls_conn}"
    );
    assert!(tls_conn["ssl_cipher"].as_str().unwrap().starts_with("TLS_"));
    assert_eq!(tls_conn["peer_cert_subject"], "CN=alice,O=Warren Test");
    assert_eq!(tls_conn["port"], addr.port());
    let plain_conn = conns
        .iter()
        .find(|c| c["ssl"] == false)
        .expect("a plain one");
    assert!(plain_conn["peer_cert_subject"].is_null());
}

#[test]
fn a_client_that_closes_mid_record_is_dropped_alone() {
    let certs = common::tls_certs();
    let broker = common::start_tls(&certs, |c| {
        c.management_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let addr = broker.tls_addr.unwrap();
    let mgmt = broker.mgmt_addr.unwrap();
    let mut other = tls_login(&certs, addr, None, "PLAIN", "\0guest\0guest").unwrap();
    // A session through the handshake, then half of a record.
    let mut conn = rustls::ClientConnection::new(
        client_config(&certs, None),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.writer().write_all(PROTOCOL_HEADER).unwrap();
    let mut record = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut record).unwrap();
    }
    sock.write_all(&record[..record.len() / 2]).unwrap();
    sock.shutdown(std::net::Shutdown::Both).unwrap();
    drop(sock);
    // Its connection goes; the other stays, and new ones are served.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http(mgmt, "GET", "/api/connections");
        let conns: Vec<serde_json::Value> = serde_json::from_slice(&r.body).unwrap();
        if conns.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {conns:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    other.open_channel(1);
    plain_served(&broker);
    assert!(start_mechanisms(&certs, addr, None).is_ok());
}
