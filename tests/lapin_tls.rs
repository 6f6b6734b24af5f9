//! The Rust client lapin over AMQPS (TLS, rustls with the ring provider)
//! against the broker's TLS listener, with certificates made for each test
//! by the `openssl` CLI: publisher confirms and consuming through TLS, a
//! client that does not trust the broker's CA failing its handshake while
//! the broker goes on serving, and mutual TLS with a PKCS#12 client
//! identity (and one from an unknown CA refused).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::future::Future;
use std::time::Duration;

use common::{TestBroker, TlsCerts};
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a delivery that should arrive.
const ARRIVE: Duration = Duration::from_secs(10);

/// Run a test body on a tokio runtime with a timeout, so a hang fails.
fn run<F: Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, f)
            .await
            .expect("test timed out")
    });
}

/// `amqps://guest:guest@localhost:PORT/%2f` for the broker's TLS listener
/// (`localhost`: the name the client checks the certificate against).
fn amqps_uri(b: &TestBroker) -> String {
    let port = b.tls_addr.expect("a TLS listener").port();
    format!("amqps://guest:guest@localhost:{port}/%2f")
}

/// A TLS configuration trusting the test CA, with an optional client
/// identity.
fn trusting(certs: &TlsCerts, identity: Option<OwnedIdentity>) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity,
        cert_chain: Some(std::fs::read_to_string(&certs.ca).expect("read CA")),
    }
}

async fn connect_tls(b: &TestBroker, tls: OwnedTLSConfig) -> lapin::Result<Connection> {
    Connection::connect_with_config(
        &amqps_uri(b),
        ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime().expect("tokio runtime"),
    )
    .await
}

/// The rustls error under a lapin connection error, if there is one.
fn rustls_error(e: &lapin::Error) -> Option<&rustls::Error> {
    match e.kind() {
        lapin::ErrorKind::IOError(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// Declare a fresh queue and check a round trip on `c` (the broker works).
async fn round_trip(c: &Connection, q: &str) {
    let ch = c.create_channel().await.expect("channel");
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue.declare");
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        b"hello over tls",
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    let deadline = tokio::time::Instant::now() + ARRIVE;
    loop {
        let got = ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        if let Some(m) = got {
            assert_eq!(m.delivery.data, b"hello over tls");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "message never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Closed here: a channel only dropped is still closing when the
    // connection is closed, and lapin's connection.close then fails.
    ch.close(200, "bye".into()).await.expect("channel close");
}

/// A client certificate (CN `name`) signed by the test CA (or, `rogue`,
/// by a CA nobody trusts), exported with its key as PKCS#12 under
/// `password`: the DER bytes.
fn client_p12(certs: &common::TlsCerts, rogue: bool, name: &str, password: &str) -> Vec<u8> {
    let (pem, key) = certs.issue(name, &format!("/CN={name}"), common::CLIENT_EXT, 2, rogue);
    let p12 = certs.dir.join(format!("{name}.p12"));
    common::openssl_in(
        &certs.dir,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            key.to_str().unwrap(),
            "-in",
            pem.to_str().unwrap(),
            "-name",
            name,
            "-passout",
            &format!("pass:{password}"),
            "-out",
            p12.to_str().unwrap(),
        ],
    );
    std::fs::read(p12).expect("read p12")
}

#[test]
fn lapin_publishes_with_confirms_and_consumes_over_tls() {
    run(async {
        let certs = common::tls_certs();
        let b = common::start_tls(&certs, |_| {});
        let c = connect_tls(&b, trusting(&certs, None))
            .await
            .expect("connect over TLS");
        assert!(c.status().connected());
        let ch = c.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        let q = "lapin-tls-confirms";
        let declared = ch
            .queue_declare(
                q.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("queue.declare");
        assert_eq!(declared.message_count(), 0);

        // 1000 bodies, one of them 256 KiB (many frames, many TLS records).
        const N: usize = 1000;
        const BIG: usize = 500;
        let bodies: Vec<Vec<u8>> = (0..N)
            .map(|i| {
                if i == BIG {
                    (0..256 * 1024).map(|j| (j % 251) as u8).collect()
                } else {
                    format!("message {i}").into_bytes()
                }
            })
            .collect();
        let mut pending = Vec::with_capacity(N);
        for body in &bodies {
            pending.push(
                ch.basic_publish(
                    "".into(),
                    q.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .expect("publish"),
            );
        }
        let mut acked = 0;
        for p in pending {
            match p.await.expect("confirm") {
                Confirmation::Ack(None) => acked += 1,
                other => panic!("not acked: {other:?}"),
            }
        }
        assert_eq!(acked, N);
        assert!(ch.wait_for_confirms().await.expect("confirms").is_empty());

        let declared = ch
            .queue_declare(
                q.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
        assert_eq!(declared.message_count() as usize, N);

        // Consume them all on another channel, in order, acking each.
        let cch = c.create_channel().await.expect("channel");
        cch.basic_qos(100, BasicQosOptions::default())
            .await
            .expect("basic.qos");
        let mut consumer = cch
            .basic_consume(
                q.into(),
                "lapin-tls".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("basic.consume");
        for (i, want) in bodies.iter().enumerate() {
            let d = tokio::time::timeout(ARRIVE, consumer.next())
                .await
                .unwrap_or_else(|_| panic!("delivery {i} never came"))
                .expect("consumer ended")
                .expect("delivery");
            assert!(!d.redelivered);
            assert_eq!(d.data.len(), want.len(), "body {i} length");
            assert!(d.data == *want, "body {i} differs");
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
        cch.basic_cancel("lapin-tls".into(), BasicCancelOptions::default())
            .await
            .expect("basic.cancel");
        let deleted = ch
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await
            .expect("queue.delete");
        assert_eq!(deleted, 0, "every message was consumed and acked");

        cch.close(200, "bye".into()).await.expect("channel close");
        ch.close(200, "bye".into()).await.expect("channel close");
        c.close(200, "bye".into()).await.expect("connection close");
        assert!(!c.status().connected());
    });
}

#[test]
fn lapin_without_the_ca_fails_its_handshake_and_the_broker_goes_on() {
    run(async {
        let certs = common::tls_certs();
        let b = common::start_tls(&certs, |_| {});
        // No CA given, and only the bundled public roots: the broker's
        // certificate is not trusted.
        let err = connect_tls(&b, OwnedTLSConfig::default())
            .await
            .expect_err("an untrusted broker certificate must fail");
        assert!(
            matches!(
                rustls_error(&err),
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "expected an unknown-issuer TLS error, got {err:?}"
        );
        // The broker still serves TLS clients (the trusted one works) and
        // plain ones.
        let c = connect_tls(&b, trusting(&certs, None))
            .await
            .expect("a trusting client connects");
        round_trip(&c, "lapin-tls-after-failure").await;
        c.close(200, "bye".into()).await.expect("close");
        let plain = Connection::connect(
            &format!("amqp://guest:guest@{}/%2f", b.addr),
            ConnectionProperties::default(),
        )
        .await
        .expect("plain connect");
        round_trip(&plain, "lapin-plain-after-failure").await;
        plain.close(200, "bye".into()).await.expect("close");
    });
}

#[test]
fn lapin_mutual_tls_with_a_pkcs12_identity() {
    run(async {
        let certs = common::tls_certs();
        // The broker verifies the client certificates presented.
        let b = common::start_tls(&certs, |c| c.tls.ca = Some(certs.ca.clone()));
        let dir = &certs.dir;
        let good = client_p12(&certs, false, "lapin-client", "s3cret");
        let c = connect_tls(
            &b,
            trusting(
                &certs,
                Some(OwnedIdentity::PKCS12 {
                    der: good,
                    password: "s3cret".into(),
                }),
            ),
        )
        .await
        .expect("connect with a client certificate");
        round_trip(&c, "lapin-mtls").await;
        c.close(200, "bye".into()).await.expect("close");

        // A client certificate from a CA the broker does not know is
        // refused.
        let rogue = client_p12(&certs, true, "rogue-client", "s3cret");
        let err = connect_tls(
            &b,
            trusting(
                &certs,
                Some(OwnedIdentity::PKCS12 {
                    der: rogue,
                    password: "s3cret".into(),
                }),
            ),
        )
        .await
        .expect_err("a client certificate from an unknown CA must be refused");
        // The broker's verdict, as a TLS alert (this also shows that the
        // good identity above was really sent: none is required).
        assert!(
            matches!(
                rustls_error(&err),
                Some(rustls::Error::AlertReceived(
                    rustls::AlertDescription::UnknownCA
                ))
            ),
            "expected an unknown-CA alert, got {err:?}"
        );

        // And the broker goes on: the good identity connects again.
        let good = std::fs::read(dir.join("lapin-client.p12")).expect("read p12");
        let c = connect_tls(
            &b,
            trusting(
                &certs,
                Some(OwnedIdentity::PKCS12 {
                    der: good,
                    password: "s3cret".into(),
                }),
            ),
        )
        .await
        .expect("reconnect with the good client certificate");
        round_trip(&c, "lapin-mtls-again").await;
        c.close(200, "bye".into()).await.expect("close");
    });
}
