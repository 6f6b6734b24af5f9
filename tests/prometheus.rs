//! Prometheus metrics as RabbitMQ's `rabbitmq_prometheus` plugin serves
//! them, on their own listener: every output is read by a real Prometheus
//! text-format parser (`prometheus_client`'s, in a venv under
//! `target/pyvenv-prom`), and the names, types and labels warren serves as
//! `rabbitmq_*` are checked against a real RabbitMQ 3.10 node with the
//! plugin enabled (Debian's `rabbitmq-server`, installed on first use).
//! `warren ctl` refuses that node's management API.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One HTTP/1.1 request (Connection: close); status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = warren::support::parse_http_response(&raw).expect("HTTP response");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn get_ok(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http(addr, "GET", path, None);
    assert_eq!(status, 200, "GET {path} on {addr}: {body}");
    body
}

/// The families of a text exposition, as the real parser reads it.
struct Families(BTreeMap<String, Value>);

impl Families {
    fn parse(text: &str) -> Families {
        let python = common::venv_python("pyvenv-prom", "tests/python_prom/requirements.txt");
        let mut child = Command::new(python)
            .arg(common::root().join("tests/python_prom/parse.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run parse.py");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the Prometheus parser refused the output: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout).expect("JSON");
        Families(v)
    }

    fn kind(&self, family: &str) -> Option<&str> {
        self.0.get(family).and_then(|f| f["type"].as_str())
    }

    /// Every sample: (sample name, labels, value as text).
    fn samples(&self) -> Vec<(String, BTreeMap<String, String>, String)> {
        let mut out = Vec::new();
        for f in self.0.values() {
            for s in f["samples"].as_array().unwrap() {
                let labels = s[1]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                out.push((
                    s[0].as_str().unwrap().to_string(),
                    labels,
                    s[2].as_str().unwrap().to_string(),
                ));
            }
        }
        out
    }

    /// The value of the sample `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples()
            .into_iter()
            .find(|(n, l, _)| n == name && *l == want)
            .and_then(|(_, _, v)| v.parse().ok())
    }

    /// Label-name sets of the samples called `name`.
    fn label_sets(&self, name: &str) -> BTreeSet<Vec<String>> {
        self.samples()
            .into_iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l.into_keys().collect())
            .collect()
    }
}

const FAMILIES: &str =
    "family=node_coarse_metrics&family=node_metrics&family=node_persister_metrics\
&family=queue_coarse_metrics&family=queue_consumer_count&family=queue_metrics";

/// The same objects through either broker's management API: two durable
/// queues in `/`, three messages in one of them.
fn populate(mgmt: SocketAddr) {
    for q in ["prom-a", "prom-b"] {
        let (s, b) = http(
            mgmt,
            "PUT",
            &format!("/api/queues/%2F/{q}"),
            Some(&json!({"durable": true})),
        );
        assert!(s == 201 || s == 204, "declare {q}: {s} {b}");
    }
    for i in 0..3 {
        let (s, b) = http(
            mgmt,
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            Some(
                &json!({"properties": {}, "routing_key": "prom-a", "payload": format!("m{i}"), "payload_encoding": "string"}),
            ),
        );
        assert_eq!(s, 200, "publish: {b}");
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn broker() -> common::TestBroker {
    common::start_with(|cfg| {
        cfg.management_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.prometheus_listen = Some("127.0.0.1:0".parse().unwrap());
    })
}

#[test]
fn prometheus_listener_serves_rabbitmqs_views() {
    let b = broker();
    let (mgmt, prom) = (b.mgmt_addr.unwrap(), b.prom_addr.unwrap());
    assert_ne!(mgmt.port(), prom.port());
    populate(mgmt);
    let (s, _) = http(mgmt, "PUT", "/api/vhosts/other", Some(&json!({})));
    assert_eq!(s, 201);
    let (s, _) = http(mgmt, "PUT", "/api/queues/other/prom-c", Some(&json!({})));
    assert_eq!(s, 201);

    // Aggregated: queue metrics are one unlabelled total.
    let agg = Families::parse(&get_ok(prom, "/metrics"));
    assert_eq!(agg.value("rabbitmq_queue_messages_ready", &[]), Some(3.0));
    assert_eq!(agg.value("rabbitmq_queues", &[]), Some(3.0));
    assert_eq!(
        agg.value(
            "rabbitmq_global_messages_received_total",
            &[("protocol", "amqp091")]
        ),
        Some(3.0)
    );
    assert_eq!(agg.kind("rabbitmq_identity_info"), Some("unknown"));
    let identity = agg.label_sets("rabbitmq_identity_info");
    assert_eq!(
        identity.into_iter().collect::<Vec<_>>(),
        vec![vec![
            "rabbitmq_cluster".to_string(),
            "rabbitmq_cluster_permanent_id".into(),
            "rabbitmq_node".into()
        ]]
    );
    let build = agg
        .samples()
        .into_iter()
        .find(|(n, _, _)| n == "rabbitmq_build_info")
        .expect("rabbitmq_build_info");
    assert_eq!(build.1["rabbitmq_version"], "3.10.8");
    assert!(agg.label_sets("rabbitmq_queue_messages_ready") == BTreeSet::from([vec![]]));

    // Per object: one series per queue, labelled vhost and queue.
    let po = Families::parse(&get_ok(prom, "/metrics/per-object"));
    for (vhost, q, ready) in [
        ("/", "prom-a", 3.0),
        ("/", "prom-b", 0.0),
        ("other", "prom-c", 0.0),
    ] {
        let l = [("vhost", vhost), ("queue", q)];
        assert_eq!(
            po.value("rabbitmq_queue_messages_ready", &l),
            Some(ready),
            "{q}"
        );
        assert_eq!(po.value("rabbitmq_queue_messages", &l), Some(ready), "{q}");
        assert_eq!(po.value("rabbitmq_queue_consumers", &l), Some(0.0), "{q}");
        let published = if q == "prom-a" { 3.0 } else { 0.0 };
        assert_eq!(
            po.value("warren_queue_messages_published_total", &l),
            Some(published)
        );
    }
    assert!(po.value("rabbitmq_queue_messages_ready", &[]).is_none());

    // Detailed: only the families asked for, of the vhosts asked for.
    let d = Families::parse(&get_ok(
        prom,
        "/metrics/detailed?family=queue_coarse_metrics&vhost=other",
    ));
    let names: BTreeSet<String> = d.0.keys().cloned().collect();
    let want = [
        "rabbitmq_build_info",
        "rabbitmq_identity_info",
        "rabbitmq_detailed_queue_messages_ready",
        "rabbitmq_detailed_queue_messages_unacked",
        "rabbitmq_detailed_queue_messages",
    ];
    assert_eq!(names, BTreeSet::from(want.map(String::from)));
    assert_eq!(
        d.label_sets("rabbitmq_detailed_queue_messages_ready"),
        BTreeSet::from([vec!["queue".to_string(), "vhost".into()]])
    );
    assert_eq!(
        d.value(
            "rabbitmq_detailed_queue_messages",
            &[("vhost", "other"), ("queue", "prom-c")]
        ),
        Some(0.0)
    );
    assert!(d
        .value(
            "rabbitmq_detailed_queue_messages",
            &[("vhost", "/"), ("queue", "prom-a")]
        )
        .is_none());
    let all = Families::parse(&get_ok(prom, &format!("/metrics/detailed?{FAMILIES}")));
    assert!(all.kind("rabbitmq_detailed_process_open_fds") == Some("gauge"));
    assert!(all.kind("rabbitmq_detailed_io_sync_ops") == Some("counter"));

    // The management port serves the same (warren's earlier users).
    let on_mgmt = Families::parse(&get_ok(mgmt, "/metrics"));
    assert_eq!(
        on_mgmt.0.keys().collect::<Vec<_>>(),
        agg.0.keys().collect::<Vec<_>>()
    );
    // The Prometheus port serves nothing else, and needs no credentials.
    assert_eq!(http(prom, "GET", "/api/overview", None).0, 404);
    assert_eq!(http(prom, "GET", "/", None).0, 404);
    let mut s = TcpStream::connect(prom).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let r = warren::support::parse_http_response(&raw).unwrap();
    assert_eq!(r.status, 200);
    // The management API lists the listener as RabbitMQ does.
    let (_, ov) = http(mgmt, "GET", "/api/overview", None);
    let ov: Value = serde_json::from_str(&ov).unwrap();
    assert!(
        ov["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["protocol"] == "http/prometheus" && l["port"] == prom.port()),
        "{ov}"
    );

    // prometheus.return_per_object_metrics = true: /metrics is per object.
    let b2 = common::start_with(|cfg| {
        cfg.prometheus_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.prometheus_per_object = true;
    });
    let po2 = Families::parse(&get_ok(b2.prom_addr.unwrap(), "/metrics"));
    assert!(po2.value("rabbitmq_queue_messages_ready", &[]).is_none());
}

/// Every `rabbitmq_*` family warren serves exists in RabbitMQ 3.10's output
/// of the same path with the same type, and its samples carry one of the
/// label sets RabbitMQ's do. Run against a real node with the plugin.
#[test]
fn names_types_and_labels_are_rabbitmqs() {
    let (rprom, rmgmt) = (common::rabbitmq::free_port(), common::rabbitmq::free_port());
    let rmq = common::rabbitmq::RabbitMq::start_with(
        "prom",
        &["rabbitmq_prometheus", "rabbitmq_management"],
        &format!(
            "prometheus.tcp.port = {rprom}\nprometheus.tcp.ip = 127.0.0.1\n\
             management.tcp.port = {rmgmt}\nmanagement.tcp.ip = 127.0.0.1\n"
        ),
    );
    let rprom: SocketAddr = ([127, 0, 0, 1], rprom).into();
    let rmgmt: SocketAddr = ([127, 0, 0, 1], rmgmt).into();
    eventually("RabbitMQ's plugins", || {
        TcpStream::connect(rprom).is_ok() && TcpStream::connect(rmgmt).is_ok()
    });
    let b = broker();
    let (wmgmt, wprom) = (b.mgmt_addr.unwrap(), b.prom_addr.unwrap());
    populate(rmgmt);
    populate(wmgmt);
    // RabbitMQ's queue metrics are collected every few seconds.
    eventually("RabbitMQ's per-queue metrics", || {
        get_ok(rprom, "/metrics/per-object").contains("queue=\"prom-a\"")
    });

    let mut checked = 0;
    for path in [
        "/metrics".to_string(),
        "/metrics/per-object".into(),
        format!("/metrics/detailed?{FAMILIES}&vhost=%2F"),
    ] {
        let w = Families::parse(&get_ok(wprom, &path));
        let r = Families::parse(&get_ok(rprom, &path));
        for (name, fam) in &w.0 {
            if !name.starts_with("rabbitmq_") {
                assert!(name.starts_with("warren_"), "{path}: {name}");
                continue;
            }
            let rkind = r
                .kind(name)
                .unwrap_or_else(|| panic!("{path}: RabbitMQ has no {name}"));
            assert_eq!(fam["type"].as_str(), Some(rkind), "{path}: type of {name}");
            for s in fam["samples"].as_array().unwrap() {
                let sname = s[0].as_str().unwrap();
                let labels: Vec<String> = s[1].as_object().unwrap().keys().cloned().collect();
                let theirs = r.label_sets(sname);
                assert!(
                    theirs.is_empty() || theirs.contains(&labels),
                    "{path}: {sname} labelled {labels:?}, RabbitMQ's {theirs:?}"
                );
                checked += 1;
            }
        }
        for must in ["rabbitmq_identity_info", "rabbitmq_build_info"] {
            assert!(w.0.contains_key(must), "{path}: no {must}");
        }
    }
    assert!(checked > 40, "only {checked} samples compared");

    // `warren ctl` will not act on this node's management API...
    let ctl = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "ctl",
                "--host",
                "127.0.0.1",
                "--port",
                &rmgmt.port().to_string(),
            ])
            .args(extra)
            .args(["-q", "list_queues"])
            .output()
            .expect("warren ctl")
    };
    let out = ctl(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains(&format!(
            "the management API at 127.0.0.1:{} is RabbitMQ 3.10.8 (node {}), not warren",
            rmgmt.port(),
            rmq.node
        )),
        "{err}"
    );
    // ... unless told to.
    let out = ctl(&["--any-broker"]);
    assert!(out.status.success(), "{out:?}");
    // (RabbitMQ's message counts lag by its stats interval: names only.)
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\nprom-a\t"), "{stdout}");
}
