//! `warren-perf` itself, end to end against warren: the load generator's
//! counts add up (published = consumed, nothing out of order), over plain
//! AMQP and over AMQPS (with and without a client certificate; a wrong CA
//! or none at all is a clear error), the floor relay runs, and `footprint`
//! measures a real broker binary (which gives the memory of a deleted queue
//! back), also over TLS.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn perf_output(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren-perf"))
        .args(args)
        .output()
        .expect("run warren-perf")
}

fn json_line(out: &Output, args: &[&str]) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "warren-perf {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn perf(args: &[&str]) -> Value {
    json_line(&perf_output(args), args)
}

/// A failing run: its exit code and stderr.
fn perf_fails(args: &[&str]) -> (i32, String) {
    let out = perf_output(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "warren-perf {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code().unwrap_or(-1), stderr)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// GET a management API path as guest; the body as JSON.
fn mgmt_get(addr: SocketAddr, path: &str) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = warren::support::parse_http_response(&raw).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("no number {k} in {v}"))
}

#[test]
fn load_generator_counts_add_up() {
    let broker = common::start();
    let uri = broker.uri();
    for extra in [
        &["--size", "16"][..],
        &["--size", "70000", "--ack", "--prefetch", "50"][..],
        &[
            "--confirm",
            "100",
            "--exchange-type",
            "fanout",
            "--queues",
            "3",
            "--consumers",
            "3",
        ][..],
    ] {
        let mut args = vec!["--uri", uri.as_str(), "--count", "5000", "--json"];
        args.extend_from_slice(extra);
        let j = perf(&args);
        assert_eq!(j["failed"], false, "{j}");
        assert_eq!(num(&j, "published"), 5000.0, "{j}");
        assert_eq!(num(&j, "consumed"), num(&j, "expected"), "{j}");
        assert_eq!(num(&j, "out_of_order"), 0.0, "{j}");
        assert!(num(&j, "consume_rate") > 0.0, "{j}");
    }
}

#[test]
fn floor_relay_runs() {
    let j = perf(&["floor", "--duration", "0.5", "--json"]);
    assert_eq!(j["mode"], "floor", "{j}");
    assert!(
        j["throughput"]["consume_rate"].as_f64().unwrap_or(0.0) > 0.0,
        "{j}"
    );
    assert!(
        j["latency"]["latency_us"]["p99"].as_f64().unwrap_or(0.0) > 0.0,
        "{j}"
    );
}

#[test]
fn footprint_measures_a_broker_binary() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let j = perf(&[
        "footprint",
        "--port",
        &port,
        "--connections",
        "200",
        "--messages",
        "200000",
        "--json",
        "--",
        env!("CARGO_BIN_EXE_warren"),
        "--no-management",
        "--no-prometheus",
    ]);
    assert_eq!(j["mode"], "footprint", "{j}");
    assert!(num(&j["startup_ms"], "best") > 0.0, "{j}");
    let idle = num(&j, "idle_rss");
    assert!(idle > 1e6, "{j}");
    assert!(num(&j, "rss_with_connections") > idle, "{j}");
    assert!(num(&j, "rss_with_messages") > idle, "{j}");
    assert_eq!(num(&j, "messages"), 200000.0, "{j}");
    // Queued messages beyond a queue's windows are spilled to disk: 200,000
    // take a few MiB (the windows, the store's write buffer), not 64 bytes
    // each; deleting the queue keeps it there.
    let queued = num(&j, "rss_with_messages");
    let after = num(&j, "rss_after_delete");
    assert!(
        queued - idle < 12.0 * 1048576.0 && after <= queued + 1048576.0,
        "RSS idle {idle}, with messages {queued}, after deleting the queue {after}"
    );
}

/// Over AMQPS with the CA given as a flag (verifying `localhost`) and as
/// the URI's `cacertfile` (verifying the IP address): the counts add up,
/// with confirms and acks too (the publisher's TLS stream is split between
/// its writing and its confirm-reading thread). The broker lists the
/// connections on its TLS port while they run, and plain AMQP on that port
/// gets nowhere.
#[test]
fn load_generator_over_amqps() {
    let certs = common::tls_certs();
    let broker = common::start_tls(&certs, |c| {
        c.management_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let tls = broker.tls_addr.unwrap();
    let by_name = format!("amqps://guest:guest@localhost:{}/%2f", tls.port());
    let by_ip = format!(
        "amqps://guest:guest@127.0.0.1:{}/%2f?cacertfile={}",
        tls.port(),
        path(&certs.ca)
    );
    for (uri, extra) in [
        (&by_name, &["--tls-ca", path(&certs.ca), "--size", "16"][..]),
        (
            &by_ip,
            &[
                "--size",
                "70000",
                "--ack",
                "--prefetch",
                "50",
                "--confirm",
                "20",
            ][..],
        ),
        (
            &by_name,
            &[
                "--tls-ca",
                path(&certs.ca),
                "--confirm",
                "100",
                "--exchange-type",
                "fanout",
                "--queues",
                "2",
                "--consumers",
                "2",
                "--publishers",
                "2",
                "--multi-ack",
                "10",
            ][..],
        ),
    ] {
        let mut args = vec!["--uri", uri.as_str(), "--count", "5000", "--json"];
        args.extend_from_slice(extra);
        let j = perf(&args);
        assert_eq!(j["failed"], false, "{j}");
        assert!(j["uri"].as_str().unwrap().starts_with("amqps://"), "{j}");
        assert!(num(&j, "published") >= 5000.0, "{j}");
        assert_eq!(num(&j, "consumed"), num(&j, "expected"), "{j}");
        assert!(num(&j, "consumed") > 0.0, "{j}");
        assert_eq!(num(&j, "out_of_order"), 0.0, "{j}");
    }

    // A longer run: meanwhile the broker lists warren-perf's connections,
    // accepted on its TLS listener.
    let child = Command::new(env!("CARGO_BIN_EXE_warren-perf"))
        .args([
            "--uri",
            &by_ip,
            "--duration",
            "4",
            "--rate",
            "500",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mgmt = broker.mgmt_addr.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let conns = mgmt_get(mgmt, "/api/connections");
        let perf: Vec<&Value> = conns
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["client_properties"]["product"] == "warren-perf")
            .collect();
        if perf.len() >= 2 {
            for c in &perf {
                assert_eq!(c["ssl"], true, "{c}");
            }
            break perf
                .iter()
                .map(|c| c["port"].as_u64().unwrap())
                .collect::<Vec<_>>();
        }
        assert!(
            Instant::now() < deadline,
            "no warren-perf connections: {conns}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        seen.iter().all(|&p| p == u64::from(tls.port())),
        "{seen:?} vs {tls}"
    );
    let out = child.wait_with_output().unwrap();
    let j = json_line(&out, &["--duration", "4"]);
    assert_eq!(j["failed"], false, "{j}");
    assert!(num(&j, "consumed") > 0.0, "{j}");
    assert_eq!(num(&j, "consumed"), num(&j, "expected"), "{j}");

    // The TLS port does not speak plain AMQP.
    let plain = format!("amqp://guest:guest@127.0.0.1:{}/%2f", tls.port());
    let (code, err) = perf_fails(&["--uri", &plain, "--count", "10"]);
    assert_eq!(code, 1, "{err}");
}

/// The broker's certificate checked against another CA, amqps without a
/// CA, and TLS options with a plain URI: refused, saying why.
#[test]
fn amqps_errors_are_clear() {
    let certs = common::tls_certs();
    let other = common::tls_certs();
    let broker = common::start_tls(&certs, |_| {});
    let tls = broker.tls_addr.unwrap();
    let uri = format!("amqps://guest:guest@localhost:{}/%2f", tls.port());

    let (code, err) = perf_fails(&["--uri", &uri, "--tls-ca", path(&other.ca), "--count", "10"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "TLS handshake with localhost:{} failed",
            tls.port()
        )),
        "{err}"
    );
    assert!(err.contains("invalid peer certificate"), "{err}");
    // Both test CAs are named alike: the signature is what fails.
    assert!(
        err.contains("UnknownIssuer") || err.contains("BadSignature"),
        "{err}"
    );
    assert!(err.contains(path(&other.ca)), "{err}");
    // The same in the other modes, which share the client.
    let (_, err) = perf_fails(&[
        "declare",
        "--uri",
        &uri,
        "--tls-ca",
        path(&other.ca),
        "--count",
        "1",
    ]);
    assert!(err.contains("invalid peer certificate"), "{err}");

    // A certificate for localhost and 127.0.0.1 is not one for another name.
    let wrong_name = format!(
        "amqps://guest:guest@127.0.0.1:{}/%2f?server_name_indication=broker.example",
        tls.port()
    );
    let (_, err) = perf_fails(&[
        "--uri",
        &wrong_name,
        "--tls-ca",
        path(&certs.ca),
        "--count",
        "1",
    ]);
    assert!(
        err.contains("certificate not valid for name \"broker.example\""),
        "{err}"
    );
    assert!(err.contains("'broker.example'"), "{err}");

    let (code, err) = perf_fails(&["--uri", &uri, "--count", "10"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("amqps:// needs the CA certificate"), "{err}");
    assert!(err.contains("--tls-ca FILE"), "{err}");

    let (code, err) = perf_fails(&["--uri", &broker.uri(), "--tls-ca", path(&certs.ca)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-ca is for amqps:// URIs"), "{err}");

    let missing = certs.dir.join("nope.pem");
    let (code, err) = perf_fails(&["--uri", &uri, "--tls-ca", path(&missing)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("TLS CA file {}", missing.display())),
        "{err}"
    );

    // A plain port answered with TLS.
    let on_plain = format!("amqps://guest:guest@localhost:{}/%2f", broker.addr.port());
    let (code, err) = perf_fails(&[
        "--uri",
        &on_plain,
        "--tls-ca",
        path(&certs.ca),
        "--count",
        "1",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("TLS handshake with localhost"), "{err}");
}

/// A `warren` binary, killed when dropped.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Mutual TLS: a broker with a CA (the `warren` binary's `--tls-ca`)
/// verifies the client certificate that `--tls-cert`/`--tls-key` present;
/// one from another CA is refused.
#[test]
fn amqps_with_a_client_certificate() {
    let certs = common::tls_certs();
    let (cert, key) = certs.client("client", "/CN=perf-client");
    let (plain, tls) = (free_port(), free_port());
    let data = common::temp_dir("perf-mtls");
    let child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--listen", &format!("127.0.0.1:{plain}")])
        .args(["--tls-listen", &format!("127.0.0.1:{tls}")])
        .args([
            "--tls-cert",
            path(&certs.cert),
            "--tls-key",
            path(&certs.key),
        ])
        .args(["--tls-ca", path(&certs.ca), "--data-dir", path(&data)])
        .args(["--no-management", "--no-prometheus"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start warren");
    let mut broker = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", plain)).is_err() {
        assert!(
            broker.0.try_wait().unwrap().is_none(),
            "warren exited at start"
        );
        assert!(Instant::now() < deadline, "warren is not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let uri = format!("amqps://guest:guest@localhost:{tls}/%2f");
    let j = perf(&[
        "--uri",
        &uri,
        "--tls-ca",
        path(&certs.ca),
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&key),
        "--count",
        "2000",
        "--json",
    ]);
    assert_eq!(num(&j, "consumed"), 2000.0, "{j}");
    // The same through the URI's query.
    let with_query = format!(
        "{uri}?cacertfile={}&certfile={}&keyfile={}",
        path(&certs.ca),
        path(&cert),
        path(&key)
    );
    let j = perf(&["--uri", &with_query, "--count", "2000", "--json"]);
    assert_eq!(num(&j, "consumed"), 2000.0, "{j}");

    let stranger = common::tls_certs();
    let (bad_cert, bad_key) = stranger.client("client", "/CN=perf-client");
    let (code, err) = perf_fails(&[
        "--uri",
        &uri,
        "--tls-ca",
        path(&certs.ca),
        "--tls-cert",
        path(&bad_cert),
        "--tls-key",
        path(&bad_key),
        "--count",
        "10",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("TLS: received fatal alert"), "{err}");
    assert!(
        err.contains("the broker refused the client certificate"),
        "{err}"
    );
    let (code, err) = perf_fails(&[
        "--uri",
        &uri,
        "--tls-ca",
        path(&certs.ca),
        "--tls-cert",
        path(&cert),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--tls-cert (certfile) needs --tls-key"),
        "{err}"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&data);
}

/// `footprint --tls-port`: the broker gets a TLS listener and the idle
/// connections are held over TLS.
#[test]
fn footprint_over_tls() {
    let certs = common::tls_certs();
    let (port, tls_port) = (free_port().to_string(), free_port().to_string());
    let j = perf(&[
        "footprint",
        "--port",
        &port,
        "--tls-port",
        &tls_port,
        "--tls-ca",
        path(&certs.ca),
        "--connections",
        "100",
        "--messages",
        "20000",
        "--json",
        "--",
        env!("CARGO_BIN_EXE_warren"),
        "--no-management",
        "--no-prometheus",
        "--tls-cert",
        path(&certs.cert),
        "--tls-key",
        path(&certs.key),
    ]);
    assert_eq!(j["mode"], "footprint", "{j}");
    assert_eq!(j["tls"], true, "{j}");
    let idle = num(&j, "idle_rss");
    assert!(num(&j, "rss_with_connections") > idle, "{j}");
    assert!(num(&j, "rss_per_connection") > 0.0, "{j}");
    assert_eq!(num(&j, "messages"), 20000.0, "{j}");

    let (code, err) = perf_fails(&["footprint", "--tls-ca", path(&certs.ca), "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-ca needs --tls-port"), "{err}");
}

/// `warren-perf delayed`: a small run of the delayed-message benchmark
/// (the numbers in README come from a million).
#[test]
fn delayed_measures_pending_delayed_messages() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let j = perf(&[
        "delayed",
        "--port",
        &port,
        "--messages",
        "2000",
        "--min-delay",
        "1500",
        "--spread",
        "500",
        "--json",
        "--",
        env!("CARGO_BIN_EXE_warren"),
        "--no-management",
        "--no-prometheus",
    ]);
    assert_eq!(j["mode"], "delayed", "{j}");
    assert_eq!(num(&j, "messages"), 2000.0, "{j}");
    assert!(num(&j, "rss_pending") > 1e6, "{j}");
    assert!(num(&j, "delayed_dir_bytes") > 2000.0 * 16.0, "{j}");
    assert!(num(&j, "early_max_ms") < 1.0, "{j}");
    assert!(num(&j, "deliver_secs") > 0.0, "{j}");
}
