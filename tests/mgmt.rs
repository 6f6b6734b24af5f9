//! The management HTTP API and `/metrics`, end to end over TCP against an
//! embedded broker: every endpoint, the JSON fields rabbitmqadmin and
//! monitoring tools read, auth, errors, keep-alive and limits.
//!
//! With `WARREN_TEST_ADDR=127.0.0.1:5672 WARREN_TEST_MGMT_ADDR=127.0.0.1:15672`
//! the same tests run against a real RabbitMQ (management plugin enabled),
//! which is how their expectations were checked; warren-only checks are
//! skipped there.

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
use std::time::{Duration, Instant};

use amqp_raw::{unique, Raw};
use serde_json::{json, Value};
use warren::codec::{
    BasicConsume, BasicProperties, BasicQos, ConfirmSelect, FieldTable, Method, QueueDeclare,
};

/// A response: status, headers (lower-case names), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read one response from a stream (content-length framed).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = r.parse(buf) {
            let status = r.code.unwrap_or(0);
            let hs: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = hs
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            if status == 100 {
                buf.drain(..n);
                continue;
            }
            if buf.len() >= n + len {
                let body = buf[n..n + len].to_vec();
                buf.drain(..n + len);
                return Resp {
                    status,
                    headers: hs,
                    body,
                };
            }
        }
        assert!(Instant::now() < deadline, "response timed out");
        let mut chunk = [0u8; 65536];
        let k = s.read(&mut chunk).expect("read");
        assert!(k > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..k]);
    }
}

fn raw_request(method: &str, path: &str, auth: Option<(&str, &str)>, body: Option<&str>) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if let Some((u, p)) = auth {
        let cred = warren::support::base64_encode(format!("{u}:{p}").as_bytes());
        req.push_str(&format!("Authorization: Basic {cred}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    req
}

/// A tiny management API client: one keep-alive connection per call.
struct Api {
    addr: SocketAddr,
    user: String,
    pass: String,
    /// Talking to the real RabbitMQ (skip warren-only checks).
    rabbit: bool,
}

impl Api {
    fn new(b: &common::TestBroker) -> Api {
        Api {
            addr: b.mgmt_addr.expect("management listener"),
            user: "guest".into(),
            pass: "guest".into(),
            rabbit: std::env::var("WARREN_TEST_ADDR").is_ok(),
        }
    }

    fn as_user(&self, user: &str, pass: &str) -> Api {
        Api {
            addr: self.addr,
            user: user.into(),
            pass: pass.into(),
            rabbit: self.rabbit,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let body = body.map(|b| b.to_string());
        let req = raw_request(
            method,
            path,
            Some((&self.user, &self.pass)),
            body.as_deref(),
        );
        let mut s = TcpStream::connect(self.addr).expect("connect mgmt");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        read_response(&mut s, &mut Vec::new())
    }

    fn get(&self, path: &str) -> Value {
        let r = self.call("GET", path, None);
        assert_eq!(
            r.status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    fn put(&self, path: &str, body: Value) -> u16 {
        let r = self.call("PUT", path, Some(&body));
        r.status
    }

    fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(&body))
    }

    fn delete(&self, path: &str) -> u16 {
        self.call("DELETE", path, None).status
    }
}

fn start() -> (common::TestBroker, Api) {
    let b = common::start_with(|cfg| cfg.management_listen = Some("127.0.0.1:0".parse().unwrap()));
    let api = Api::new(&b);
    (b, api)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn find<'a>(list: &'a Value, key: &str, name: &str) -> Option<&'a Value> {
    list.as_array()
        .expect("a list")
        .iter()
        .find(|x| x[key] == name)
}

/// Wait until `f` holds (stats in RabbitMQ are collected every few seconds).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn declare(raw: &mut Raw, ch: u16, q: &str) {
    match raw.rpc(
        ch,
        QueueDeclare {
            ticket: 0,
            queue: q.to_string().into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::new(),
        },
    ) {
        Method::QueueDeclareOk(_) => {}
        other => panic!("queue.declare: {other:?}"),
    }
}

#[test]
fn auth_errors_and_http_behaviour() {
    let (b, api) = start();
    // No credentials / wrong password: 401 with the challenge.
    let mut s = TcpStream::connect(api.addr).unwrap();
    s.write_all(raw_request("GET", "/api/overview", None, None).as_bytes())
        .unwrap();
    let r = read_response(&mut s, &mut Vec::new());
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"RabbitMQ Management\"")
    );
    let r = api
        .as_user("guest", "nope")
        .call("GET", "/api/overview", None);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());

    // A monitoring user may read but not change; a user without a
    // management tag may not use the API.
    let mon = unique("mon");
    assert_eq!(
        api.put(
            &format!("/api/users/{mon}"),
            json!({"password": "pw", "tags": "monitoring"})
        ),
        201
    );
    let plain = unique("plain");
    assert_eq!(
        api.put(
            &format!("/api/users/{plain}"),
            json!({"password": "pw", "tags": ""})
        ),
        201
    );
    let m = api.as_user(&mon, "pw");
    assert_eq!(m.get("/api/whoami")["name"], mon.as_str());
    assert_eq!(m.call("GET", "/api/queues", None).status, 200);
    assert_eq!(m.call("GET", "/api/nodes", None).status, 200);
    // Users, permissions and definitions are for administrators only.
    for p in ["/api/users", "/api/permissions", "/api/definitions"] {
        let s = m.call("GET", p, None).status;
        assert!(s == 401 || s == 403, "{p}: {s}");
    }
    let denied = m.put("/api/vhosts/nope", json!({}));
    if api.rabbit {
        assert_eq!(denied, 401);
    } else {
        assert_eq!(denied, 403);
    }
    let r = api.as_user(&plain, "pw").call("GET", "/api/overview", None);
    assert!(r.status == 401 || r.status == 403, "{}", r.status);
    assert_eq!(api.delete(&format!("/api/users/{mon}")), 204);
    assert_eq!(api.delete(&format!("/api/users/{plain}")), 204);

    // Unknown objects: 404 with RabbitMQ's body.
    let r = api.call("GET", "/api/queues/%2F/no-such-queue", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "Object Not Found");
    assert_eq!(
        api.call("GET", "/api/vhosts/no-such-vhost", None).status,
        404
    );

    if api.rabbit {
        return;
    }
    // Keep-alive: several requests on one connection, pipelined.
    let mut s = TcpStream::connect(api.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let one = raw_request("GET", "/api/whoami", Some(("guest", "guest")), None);
    s.write_all(format!("{one}{one}{one}").as_bytes()).unwrap();
    let mut buf = Vec::new();
    for _ in 0..3 {
        let r = read_response(&mut s, &mut buf);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["name"], "guest");
    }
    // Oversized headers: 431 and the connection is closed.
    let mut s = TcpStream::connect(api.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = format!(
        "GET /api/overview HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = s.write_all(big.as_bytes());
    let r = read_response(&mut s, &mut Vec::new());
    assert_eq!(r.status, 431);
    // Oversized body: 413 without reading it.
    let mut s = TcpStream::connect(api.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /api/definitions HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut Vec::new());
    assert_eq!(r.status, 413);
    // Garbage: 400.
    let mut s = TcpStream::connect(api.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x16\x03\x01\x00\xff\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut Vec::new());
    assert_eq!(r.status, 400);
    // A chunked body (what `requests` sends for a generator), written in
    // pieces: decoded and served, and the connection kept for the next
    // request; a chunk size over the body limit: 413; bad chunk syntax: 400.
    let cred = warren::support::base64_encode(b"guest:guest");
    let mut s = TcpStream::connect(api.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "PUT /api/queues/%2F/chunked-q HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cred}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for piece in [
        head.as_bytes(),
        b"a;note=\"first\"\r\n{\"durabl",
        b"e\"\r\n",
        b"9\r\n:false,\"a\r\n",
        b"11\r\nrguments\":{}}    \r\n0\r\nX-Checksum: none\r\n\r\n",
    ] {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf);
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    s.write_all(
        raw_request(
            "GET",
            "/api/queues/%2F/chunked-q",
            Some(("guest", "guest")),
            None,
        )
        .as_bytes(),
    )
    .unwrap();
    let r = read_response(&mut s, &mut buf);
    assert_eq!(
        (r.status, r.json()["durable"].clone()),
        (200, Value::Bool(false))
    );
    for (chunk, status) in [("1000001\r\n", 413), ("1\r\nab\r\n", 400), ("g\r\n", 400)] {
        let mut s = TcpStream::connect(api.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{head}{chunk}").as_bytes()).unwrap();
        let r = read_response(&mut s, &mut Vec::new());
        assert_eq!(r.status, status, "{chunk:?}");
    }
    // The AMQP side still works.
    let mut raw = Raw::open(b.addr);
    raw.open_channel(1);
}

#[test]
fn overview_nodes_and_metrics() {
    let (b, api) = start();
    let mut raw = Raw::open(b.addr);
    raw.open_channel(1);
    let q = unique("ov");
    declare(&mut raw, 1, &q);
    for _ in 0..3 {
        raw.publish(1, "", &q, false, b"hello", BasicProperties::default());
    }
    eventually("queue totals", || {
        api.get("/api/overview")["queue_totals"]["messages"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    let ov = api.get("/api/overview");
    for k in [
        "management_version",
        "rabbitmq_version",
        "product_name",
        "product_version",
        "node",
        "cluster_name",
        "exchange_types",
        "listeners",
    ] {
        assert!(ov.get(k).is_some(), "overview.{k} missing: {ov}");
    }
    let t = &ov["object_totals"];
    for k in [
        "connections",
        "channels",
        "exchanges",
        "queues",
        "consumers",
    ] {
        assert!(t[k].is_u64(), "object_totals.{k}: {t}");
    }
    eventually("connection counted", || {
        api.get("/api/overview")["object_totals"]["connections"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    let qt = &ov["queue_totals"];
    assert!(qt["messages_ready"].as_u64().unwrap() >= 3);
    assert!(qt["messages_unacknowledged"].is_u64());
    assert!(qt["messages_details"]["rate"].is_number());
    eventually("publish stats", || {
        api.get("/api/overview")["message_stats"]["publish"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    let ms = &api.get("/api/overview")["message_stats"];
    assert!(ms["publish_details"]["rate"].is_number(), "{ms}");
    if !api.rabbit {
        assert_eq!(ov["product_name"], "Warren");
        assert_eq!(ov["product_version"], env!("CARGO_PKG_VERSION"));
        assert!(ms["deliver_get"].is_u64() && ms["ack"].is_u64());
    }
    // rabbitmqadmin's `show overview` asks for columns.
    let cols = api.get("/api/overview?columns=rabbitmq_version,object_totals.queues");
    assert!(cols["object_totals"]["queues"].is_u64());

    let nodes = api.get("/api/nodes");
    let n = &nodes[0];
    assert_eq!(n["type"], "disc");
    assert_eq!(n["running"], true);
    for k in [
        "name",
        "mem_used",
        "fd_used",
        "sockets_used",
        "proc_used",
        "disk_free",
        "uptime",
        "mem_limit",
        "disk_free_limit",
    ] {
        assert!(n.get(k).is_some(), "nodes[0].{k} missing");
    }
    assert!(n["mem_used"].as_u64().unwrap() > 0);
    let name = n["name"].as_str().unwrap().to_string();
    assert_eq!(
        api.get(&format!("/api/nodes/{}", enc(&name)))["name"],
        name.as_str()
    );

    if api.rabbit {
        return;
    }
    // /metrics (and /metrics/per-object, as on the Prometheus port) needs
    // no credentials.
    let metrics = |path: &str| {
        let mut s = TcpStream::connect(api.addr).unwrap();
        s.write_all(raw_request("GET", path, None, None).as_bytes())
            .unwrap();
        let r = read_response(&mut s, &mut Vec::new());
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        String::from_utf8(r.body).unwrap()
    };
    let per_object = metrics("/metrics/per-object");
    for m in [
        &format!("rabbitmq_queue_messages_ready{{vhost=\"/\",queue=\"{q}\"}} 3"),
        &format!("rabbitmq_queue_messages_unacked{{vhost=\"/\",queue=\"{q}\"}} 0"),
    ] {
        assert!(per_object.contains(m), "metrics lack {m:?}:\n{per_object}");
    }
    let text = metrics("/metrics");
    for m in [
        "rabbitmq_connections 1",
        "rabbitmq_channels 1",
        "# TYPE rabbitmq_global_messages_received_total counter",
        "rabbitmq_global_messages_received_total{protocol=\"amqp091\"} 3",
        "rabbitmq_queue_messages_ready 3\n",
        "rabbitmq_process_resident_memory_bytes ",
        "warren_message_resident_bytes ",
        "warren_store_disk_bytes ",
        "warren_store_fsyncs_total ",
        "warren_store_fsync_seconds_total ",
        "rabbitmq_connection_incoming_bytes_total ",
    ] {
        assert!(text.contains(m), "metrics lack {m:?}:\n{text}");
    }
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let v = line.rsplit(' ').next().unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
}

#[test]
fn vhosts_users_permissions() {
    let (_b, api) = start();
    let vh = unique("vh");
    let p = format!("/api/vhosts/{}", enc(&vh));
    assert_eq!(api.put(&p, json!({})), 201);
    assert_eq!(api.put(&p, json!({})), 204);
    let v = api.get(&p);
    assert_eq!(v["name"], vh.as_str());
    assert!(v.get("tracing").is_some());
    assert!(find(&api.get("/api/vhosts"), "name", &vh).is_some());
    assert!(find(&api.get("/api/vhosts"), "name", "/").is_some());
    // A new vhost has the standard exchanges.
    let xs = api.get(&format!("/api/exchanges/{}", enc(&vh)));
    assert!(find(&xs, "name", "amq.topic").is_some());

    let user = unique("user");
    let up = format!("/api/users/{}", enc(&user));
    assert_eq!(
        api.put(
            &up,
            json!({"password": "s3cret", "tags": "management,monitoring"})
        ),
        201
    );
    let u = api.get(&up);
    assert_eq!(u["name"], user.as_str());
    assert_eq!(u["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert_eq!(u["tags"], json!(["management", "monitoring"]));
    let hash = u["password_hash"].as_str().unwrap().to_string();
    // Tags as a list; password_hash kept when re-put with it.
    assert_eq!(
        api.put(
            &up,
            json!({"password_hash": hash, "tags": ["administrator"]})
        ),
        204
    );
    assert_eq!(api.get(&up)["tags"], json!(["administrator"]));
    assert_eq!(
        api.as_user(&user, "s3cret").get("/api/whoami")["name"],
        user.as_str()
    );
    assert!(find(&api.get("/api/users"), "name", &user).is_some());

    let pp = format!("/api/permissions/{}/{}", enc(&vh), enc(&user));
    assert_eq!(
        api.put(&pp, json!({"configure": "^a", "write": ".*", "read": ""})),
        201
    );
    assert_eq!(
        api.put(&pp, json!({"configure": ".*", "write": ".*", "read": ".*"})),
        204
    );
    let perm = api.get(&pp);
    assert_eq!(perm["user"], user.as_str());
    assert_eq!(perm["vhost"], vh.as_str());
    assert_eq!(perm["configure"], ".*");
    let all = api.get("/api/permissions");
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["user"] == user.as_str() && p["vhost"] == vh.as_str()));
    // Creating a vhost gave its creator (guest) full permissions on it.
    let vperms = api.get(&format!("/api/vhosts/{}/permissions", enc(&vh)));
    assert_eq!(vperms.as_array().unwrap().len(), 2);
    let g = find(&vperms, "user", "guest").unwrap();
    assert_eq!(
        (&g["configure"], &g["write"], &g["read"]),
        (&json!(".*"), &json!(".*"), &json!(".*"))
    );
    assert_eq!(
        api.get(&format!("/api/users/{}/permissions", enc(&user)))
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The user can now open an AMQP connection to the vhost.
    if !api.rabbit {
        let mut raw = Raw::tcp(_b.addr);
        raw.handshake(&user, "s3cret", &vh).expect("login");
    }

    assert_eq!(api.delete(&pp), 204);
    assert_eq!(api.delete(&pp), 404);
    assert_eq!(api.delete(&up), 204);
    assert_eq!(api.delete(&up), 404);
    assert_eq!(api.delete(&p), 204);
    assert_eq!(api.delete(&p), 404);
}

#[test]
fn exchanges_queues_bindings() {
    let (_b, api) = start();
    let x = unique("x");
    let q = unique("q");
    let xp = format!("/api/exchanges/%2F/{}", enc(&x));
    let qp = format!("/api/queues/%2F/{}", enc(&q));
    assert_eq!(
        api.put(&xp, json!({"type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}})),
        201
    );
    assert_eq!(api.put(&xp, json!({"type": "topic", "durable": true})), 204);
    let r = api.call("PUT", &xp, Some(&json!({"type": "direct"})));
    assert_eq!(r.status, 400);
    assert!(r.json()["reason"]
        .as_str()
        .unwrap()
        .contains("inequivalent"));
    let xv = api.get(&xp);
    for (k, v) in [
        ("name", json!(x)),
        ("vhost", json!("/")),
        ("type", json!("topic")),
        ("durable", json!(true)),
        ("auto_delete", json!(false)),
        ("internal", json!(false)),
        ("arguments", json!({})),
    ] {
        assert_eq!(xv[k], v, "exchange.{k}");
    }
    assert!(find(&api.get("/api/exchanges"), "name", &x).is_some());
    assert!(find(&api.get("/api/exchanges/%2F"), "name", "").is_some());

    // rabbitmqadmin sends booleans as strings.
    assert_eq!(
        api.put(
            &qp,
            json!({"durable": "false", "auto_delete": "false", "arguments": {"x-max-length": 10}})
        ),
        201
    );
    assert_eq!(
        api.put(
            &qp,
            json!({"durable": false, "arguments": {"x-max-length": 10}})
        ),
        204
    );
    let r = api.call("PUT", &qp, Some(&json!({"durable": true})));
    assert_eq!(r.status, 400);
    assert!(r.json()["reason"]
        .as_str()
        .unwrap()
        .contains("inequivalent arg 'durable'"));
    let qv = api.get(&qp);
    for (k, v) in [
        ("name", json!(q)),
        ("vhost", json!("/")),
        ("durable", json!(false)),
        ("auto_delete", json!(false)),
        ("exclusive", json!(false)),
        ("arguments", json!({"x-max-length": 10})),
    ] {
        assert_eq!(qv[k], v, "queue.{k}");
    }
    if !api.rabbit {
        assert_eq!(qv["state"], "running");
        assert_eq!(qv["messages"], 0);
        assert_eq!(qv["consumers"], 0);
        assert!(qv["memory"].is_u64());
    }

    // Bindings: create, list (three ways), get by properties key, delete.
    let bp = format!("/api/bindings/%2F/e/{}/q/{}", enc(&x), enc(&q));
    let r = api.post(&bp, json!({"routing_key": "a.*", "arguments": {}}));
    assert_eq!(r.status, 201);
    assert!(r.header("location").is_some());
    let r = api.post(
        &bp,
        json!({"routing_key": "k", "arguments": {"x-any": "v"}}),
    );
    assert_eq!(r.status, 201);
    let between = api.get(&bp);
    assert_eq!(between.as_array().unwrap().len(), 2);
    let b0 = find(&between, "routing_key", "a.*").unwrap().clone();
    for k in [
        "source",
        "vhost",
        "destination",
        "destination_type",
        "routing_key",
        "arguments",
        "properties_key",
    ] {
        assert!(b0.get(k).is_some(), "binding.{k} missing: {b0}");
    }
    assert_eq!(b0["destination_type"], "queue");
    // RabbitMQ percent-encodes the routing key in the properties key.
    assert_eq!(b0["properties_key"], "a.%2A");
    let all = api.get("/api/bindings/%2F");
    assert!(all.as_array().unwrap().iter().any(|b| b["source"] == ""
        && b["destination"] == q.as_str()
        && b["routing_key"] == q.as_str()));
    assert_eq!(
        api.get(&format!("{qp}/bindings")).as_array().unwrap().len(),
        3
    );
    assert_eq!(
        api.get(&format!("{xp}/bindings/source"))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let with_args = find(&between, "routing_key", "k").unwrap();
    let key = with_args["properties_key"].as_str().unwrap().to_string();
    assert_eq!(api.get(&format!("{bp}/{}", enc(&key)))["routing_key"], "k");

    // Exchange-to-exchange.
    let x2 = unique("x2");
    let x2p = format!("/api/exchanges/%2F/{}", enc(&x2));
    assert_eq!(
        api.put(&x2p, json!({"type": "fanout", "durable": false})),
        201
    );
    let ep = format!("/api/bindings/%2F/e/{}/e/{}", enc(&x), enc(&x2));
    assert_eq!(api.post(&ep, json!({"routing_key": "#"})).status, 201);
    assert_eq!(
        api.get(&format!("{x2p}/bindings/destination"))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(api.delete(&format!("{ep}/%23")), 204);

    // Publish through the exchange and get back through the queue.
    let r = api.post(
        &format!("{xp}/publish"),
        json!({"routing_key": "a.b", "payload": "hello", "payload_encoding": "string",
               "properties": {"delivery_mode": 2, "headers": {"h": 1}, "content_type": "text/plain"}}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"routed": true}));
    let r = api.post(
        &format!("{xp}/publish"),
        json!({"routing_key": "k", "payload": "AAEC/w==", "payload_encoding": "base64", "properties": {}}),
    );
    assert_eq!(r.json(), json!({"routed": true}));
    let r = api.post(
        &format!("{xp}/publish"),
        json!({"routing_key": "nothing", "payload": "x", "payload_encoding": "string", "properties": {}}),
    );
    assert_eq!(r.json(), json!({"routed": false}));
    // The default exchange is amq.default in paths.
    let r = api.post(
        "/api/exchanges/%2F/amq.default/publish",
        json!({"routing_key": q, "payload": "third", "payload_encoding": "string", "properties": {}}),
    );
    assert_eq!(r.json(), json!({"routed": true}));

    let get = |count: u32, ackmode: &str| {
        let r = api.post(
            &format!("{qp}/get"),
            json!({"count": count, "ackmode": ackmode, "encoding": "auto", "truncate": 50000}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let msgs = get(5, "ack_requeue_true");
    let msgs = msgs.as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    let m0 = &msgs[0];
    assert_eq!(m0["payload"], "hello");
    assert_eq!(m0["payload_encoding"], "string");
    assert_eq!(m0["payload_bytes"], 5);
    assert_eq!(m0["redelivered"], false);
    assert_eq!(m0["exchange"], x.as_str());
    assert_eq!(m0["routing_key"], "a.b");
    assert_eq!(m0["message_count"], 2);
    assert_eq!(m0["properties"]["delivery_mode"], 2);
    assert_eq!(m0["properties"]["headers"]["h"], 1);
    assert_eq!(m0["properties"]["content_type"], "text/plain");
    assert_eq!(msgs[1]["payload_encoding"], "base64");
    assert_eq!(msgs[1]["payload"], "AAEC/w==");
    assert_eq!(msgs[2]["payload"], "third");
    // Requeued, now redelivered; take one away for good.
    let one = get(1, "ack_requeue_false");
    assert_eq!(one[0]["redelivered"], true);
    assert_eq!(one[0]["payload"], "hello");
    assert_eq!(one[0]["message_count"], 2);
    // rabbitmqadmin sends the count as a string.
    let r = api.post(
        &format!("{qp}/get"),
        json!({"count": "1", "ackmode": "reject_requeue_true", "encoding": "base64"}),
    );
    assert_eq!(r.json()[0]["payload_encoding"], "base64");
    eventually("queue depth", || api.get(&qp)["messages"] == 2);
    // Purge.
    assert_eq!(api.delete(&format!("{qp}/contents")), 204);
    eventually("purged", || api.get(&qp)["messages"] == 0);
    assert_eq!(get(1, "ack_requeue_false").as_array().unwrap().len(), 0);

    // Delete a binding by its properties key, then the entities.
    assert_eq!(api.delete(&format!("{bp}/{}", enc("a.%2A"))), 204);
    assert_eq!(api.delete(&format!("{bp}/{}", enc("a.%2A"))), 404);
    assert_eq!(api.get(&bp).as_array().unwrap().len(), 1);
    assert_eq!(api.delete(&qp), 204);
    assert_eq!(api.delete(&qp), 404);
    assert_eq!(api.delete(&xp), 204);
    assert_eq!(api.delete(&x2p), 204);
    assert_eq!(api.delete(&xp), 404);
    assert_eq!(api.delete("/api/exchanges/%2F/amq.direct") / 100, 4);
}

#[test]
fn connections_channels_consumers() {
    let (b, api) = start();
    let q = unique("cq");
    let mut raw = Raw::open(b.addr);
    raw.open_channel(1);
    raw.open_channel(2);
    declare(&mut raw, 1, &q);
    match raw.rpc(
        1,
        BasicQos {
            prefetch_size: 0,
            prefetch_count: 5,
            global: false,
        },
    ) {
        Method::BasicQosOk(_) => {}
        other => panic!("{other:?}"),
    }
    match raw.rpc(
        1,
        BasicConsume {
            ticket: 0,
            queue: q.clone().into(),
            consumer_tag: "ctag-1".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::new(),
        },
    ) {
        Method::BasicConsumeOk(_) => {}
        other => panic!("{other:?}"),
    }
    match raw.rpc(2, ConfirmSelect { nowait: false }) {
        Method::ConfirmSelectOk(_) => {}
        other => panic!("{other:?}"),
    }
    for _ in 0..3 {
        raw.publish(2, "", &q, false, b"0123456789", BasicProperties::default());
    }
    // Three deliveries (unacked) and three confirms.
    let mut delivered = 0;
    while delivered < 3 {
        if let (_, Method::BasicDeliver(_), _) = raw.next_async() {
            delivered += 1;
        }
    }

    eventually("connection listed with its channels", || {
        api.get("/api/connections")
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["channels"] == 2)
    });
    let conns = api.get("/api/connections");
    let c = &conns[0];
    for k in [
        "name",
        "vhost",
        "user",
        "state",
        "channels",
        "peer_host",
        "peer_port",
        "host",
        "port",
        "protocol",
        "client_properties",
        "node",
        "connected_at",
        "timeout",
        "frame_max",
    ] {
        assert!(c.get(k).is_some(), "connection.{k} missing: {c}");
    }
    assert_eq!(c["protocol"], "AMQP 0-9-1");
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["state"], "running");
    assert_eq!(c["channels"], 2);
    assert_eq!(c["client_properties"]["product"], "raw");
    assert_eq!(c["port"], b.addr.port());
    eventually("byte counts", || {
        api.get("/api/connections")[0]["recv_oct"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    let name = c["name"].as_str().unwrap().to_string();
    assert_eq!(
        api.get(&format!("/api/connections/{}", enc(&name)))["name"],
        name.as_str()
    );
    assert_eq!(
        api.get("/api/vhosts/%2F/connections")
            .as_array()
            .unwrap()
            .len(),
        1
    );

    eventually("channels listed", || {
        api.get("/api/channels")
            .as_array()
            .is_some_and(|a| a.len() == 2)
    });
    let chans = api.get("/api/channels");
    let ch1 = chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["number"] == 1)
        .unwrap();
    for k in [
        "name",
        "number",
        "user",
        "vhost",
        "connection_details",
        "consumer_count",
        "messages_unacknowledged",
        "prefetch_count",
        "confirm",
        "transactional",
        "state",
    ] {
        assert!(ch1.get(k).is_some(), "channel.{k} missing: {ch1}");
    }
    assert_eq!(ch1["consumer_count"], 1);
    assert_eq!(ch1["messages_unacknowledged"], 3);
    assert_eq!(ch1["prefetch_count"], 5);
    assert_eq!(ch1["connection_details"]["name"], name.as_str());
    let ch2 = chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["number"] == 2)
        .unwrap();
    assert_eq!(ch2["confirm"], true);
    assert_eq!(
        api.get(&format!("/api/connections/{}/channels", enc(&name)))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let chname = ch1["name"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/api/channels/{}", enc(chname)))["number"],
        1
    );

    let cons = api.get("/api/consumers");
    let k = find(&cons, "consumer_tag", "ctag-1").expect("consumer listed");
    assert_eq!(k["queue"]["name"], q.as_str());
    assert_eq!(k["queue"]["vhost"], "/");
    assert_eq!(k["ack_required"], true);
    assert_eq!(k["prefetch_count"], 5);
    assert_eq!(k["channel_details"]["connection_name"], name.as_str());
    assert_eq!(k["channel_details"]["number"], 1);
    assert!(find(&api.get("/api/consumers/%2F"), "consumer_tag", "ctag-1").is_some());

    let qp = format!("/api/queues/%2F/{}", enc(&q));
    eventually("queue stats", || {
        let v = api.get(&qp);
        v["messages_unacknowledged"] == 3 && v["message_stats"]["deliver_get"] == 3
    });
    let qv = api.get(&qp);
    assert_eq!(qv["consumers"], 1);
    assert_eq!(qv["messages"], 3);
    assert_eq!(qv["messages_ready"], 0);
    assert_eq!(qv["message_stats"]["publish"], 3);
    assert!(qv["message_stats"]["publish_details"]["rate"].is_number());
    assert!(qv["message_stats"]["deliver_get_details"]["rate"].is_number());
    let details = qv["consumer_details"].as_array().unwrap();
    assert_eq!(details[0]["consumer_tag"], "ctag-1");
    // Listing with rabbitmqadmin's query options.
    let listed = api.get("/api/queues/%2F?columns=name,messages,message_stats.publish&sort=name");
    let obj = find(&listed, "name", &q).unwrap().as_object().unwrap();
    assert_eq!(obj.len(), 3, "{obj:?}");
    assert_eq!(obj["messages"], 3);
    assert_eq!(obj["message_stats"]["publish"], 3);
    // Pagination (the web UI's), with a name filter.
    let page = api.get(&format!(
        "/api/queues?page=1&page_size=100&sort=name&name={}",
        enc(&q)
    ));
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["filtered_count"], 1);
    assert!(page["total_count"].as_u64().unwrap() >= 1);
    assert_eq!(page["page"], 1);

    // Closing the connection through the API: 320 to the client.
    assert_eq!(api.delete(&format!("/api/connections/{}", enc(&name))), 204);
    let code = raw.connection_close_code();
    assert_eq!(code, 320);
    eventually("connection gone", || {
        api.get("/api/connections").as_array().unwrap().is_empty()
    });
    // Its unacked messages went back to the queue.
    eventually("requeued", || api.get(&qp)["messages_ready"] == 3);
    assert_eq!(api.delete(&qp), 204);
}

#[test]
fn definitions_export_and_import() {
    let (mut b, api) = start();
    let vh = unique("dvh");
    let defs = json!({
        "rabbit_version": "3.8.9",
        "users": [{"name": format!("{vh}-ops"),
                   "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
                   "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": "administrator"}],
        "vhosts": [{"name": vh}],
        "permissions": [{"user": format!("{vh}-ops"), "vhost": vh, "configure": ".*", "write": ".*", "read": ".*"}],
        "policies": [{"vhost": vh, "name": "p", "pattern": ".*", "apply-to": "queues", "definition": {"max-length": 5}, "priority": 0}],
        "queues": [{"name": "jobs", "vhost": vh, "durable": true, "auto_delete": false, "arguments": {"x-max-length": 100}},
                   {"name": "scratch", "vhost": vh, "durable": false, "auto_delete": false, "arguments": {}}],
        "exchanges": [{"name": "events", "vhost": vh, "type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}],
        "bindings": [{"source": "events", "vhost": vh, "destination": "jobs", "destination_type": "queue", "routing_key": "job.#", "arguments": {}}]
    });
    let r = api.post("/api/definitions", defs);
    assert!(
        r.status == 204 || r.status == 201,
        "{} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    // The policy came in and applies to the queues it matches.
    let p = api.get(&format!("/api/policies/{}/p", enc(&vh)));
    assert_eq!(p["definition"], json!({"max-length": 5}));
    let jobs = api.get(&format!("/api/queues/{}/jobs", enc(&vh)));
    assert_eq!(jobs["policy"], "p");
    let out = api.get("/api/definitions");
    for k in [
        "rabbit_version",
        "users",
        "vhosts",
        "permissions",
        "queues",
        "exchanges",
        "bindings",
        "policies",
        "parameters",
    ] {
        assert!(out.get(k).is_some(), "definitions.{k} missing");
    }
    let u = find(&out["users"], "name", &format!("{vh}-ops")).unwrap();
    assert_eq!(
        u["password_hash"],
        "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    );
    assert_eq!(u["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert!(find(&out["vhosts"], "name", &vh).is_some());
    let qs: Vec<&Value> = out["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["vhost"] == vh.as_str())
        .collect();
    assert_eq!(qs.len(), 2);
    let jobs = qs.iter().find(|q| q["name"] == "jobs").unwrap();
    assert_eq!(jobs["durable"], true);
    assert_eq!(jobs["arguments"]["x-max-length"], 100);
    let bd = out["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["vhost"] == vh.as_str())
        .unwrap();
    assert_eq!(bd["source"], "events");
    assert_eq!(bd["destination"], "jobs");
    assert_eq!(bd["destination_type"], "queue");
    assert_eq!(bd["routing_key"], "job.#");
    // Imported entities route.
    let r = api.post(
        &format!("/api/exchanges/{}/events/publish", enc(&vh)),
        json!({"routing_key": "job.1", "payload": "x", "payload_encoding": "string", "properties": {}}),
    );
    assert_eq!(r.json()["routed"], true);
    // Per-vhost export and import.
    let v = api.get(&format!("/api/definitions/{}", enc(&vh)));
    assert_eq!(v["queues"].as_array().unwrap().len(), 2);
    let vh2 = unique("dvh2");
    assert_eq!(
        api.put(&format!("/api/vhosts/{}", enc(&vh2)), json!({})),
        201
    );
    let r = api.post(&format!("/api/definitions/{}", enc(&vh2)), v);
    assert!(r.status / 100 == 2, "{}", String::from_utf8_lossy(&r.body));
    assert!(find(
        &api.get(&format!("/api/queues/{}", enc(&vh2))),
        "name",
        "jobs"
    )
    .is_some());
    // Bad documents: 400.
    assert_eq!(
        api.post(
            "/api/definitions",
            json!({"queues": [{"name": "q", "vhost": "no-such-vhost"}]})
        )
        .status,
        400
    );
    let r = api.call("POST", "/api/definitions", None);
    assert!(r.status / 100 == 2 || r.status == 400 || r.status == 415);

    if !api.rabbit {
        // Durable definitions survive a restart (imported through the
        // broker's paths, so they were saved).
        b.restart();
        let api = Api::new(&b);
        let jobs = api.get(&format!("/api/queues/{}/jobs", enc(&vh)));
        assert_eq!(jobs["durable"], true);
        assert!(find(&api.get("/api/users"), "name", &format!("{vh}-ops")).is_some());
        assert_eq!(
            api.get(&format!("/api/bindings/{}/e/events/q/jobs", enc(&vh)))
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    assert_eq!(api.delete(&format!("/api/vhosts/{}", enc(&vh))), 204);
    assert_eq!(api.delete(&format!("/api/vhosts/{}", enc(&vh2))), 204);
    assert_eq!(
        api.delete(&format!("/api/users/{}", enc(&format!("{vh}-ops")))),
        204
    );
}

#[test]
fn misc_endpoints() {
    let (_b, api) = start();
    assert_eq!(api.get("/api/aliveness-test/%2F")["status"], "ok");
    assert!(api.get("/api/policies").is_array());
    assert!(api.get("/api/parameters").is_array());
    assert_eq!(api.get("/api/health/checks/alarms")["status"], "ok");
    let w = api.get("/api/whoami");
    assert_eq!(w["name"], "guest");
    assert!(w["tags"].to_string().contains("administrator"));
    // An empty path segment names the default exchange (rabbitmqadmin v2
    // publishes so); a trailing slash is ignored.
    let q = unique("dflt");
    let qp = format!("/api/queues/%2F/{}", enc(&q));
    assert_eq!(api.put(&qp, json!({"durable": false})), 201);
    let r = api.post(
        "/api/exchanges/%2F//publish",
        json!({"routing_key": q, "payload": "x", "payload_encoding": "string", "properties": {}}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"routed": true}));
    assert!(find(&api.get("/api/exchanges/%2F/"), "name", "amq.direct").is_some());
    assert_eq!(api.delete(&qp), 204);
}

/// `rabbitmqctl export_definitions` from a real RabbitMQ 3.10 while a client
/// holds a server-named (`amq.gen-*`) queue: warren imports it over HTTP
/// (200, the skipped queue and its binding listed) and at start-up with
/// `--definitions` (it used to refuse to start), as RabbitMQ itself skips
/// such queues with a warning.
#[test]
fn a_real_rabbitmq_export_with_server_named_queues_imports() {
    let rmq = common::rabbitmq::RabbitMq::start("export");
    let mut r = Raw::open(rmq.addr);
    r.open_channel(1);
    r.rpc(
        1,
        warren::codec::ExchangeDeclare {
            exchange: "events".into(),
            kind: "fanout".into(),
            durable: true,
            ..Default::default()
        },
    );
    let mut names = Vec::new();
    for (name, durable) in [("work", true), ("", false)] {
        let ok = r.rpc(
            1,
            QueueDeclare {
                queue: name.to_string().into(),
                durable,
                ..Default::default()
            },
        );
        let Method::QueueDeclareOk(ok) = ok else {
            panic!("{ok:?}")
        };
        names.push(String::from_utf8_lossy(&ok.queue).into_owned());
        r.rpc(
            1,
            warren::codec::QueueBind {
                queue: ok.queue.clone(),
                exchange: "events".into(),
                ..Default::default()
            },
        );
    }
    let generated = names[1].clone();
    assert!(generated.starts_with("amq.gen-"), "{generated}");
    let path = rmq.base.join("export.json");
    let out = rmq.ctl(&["export_definitions", path.to_str().unwrap()]);
    assert!(out.status.success(), "export_definitions: {out:?}");
    drop(r);
    let text = std::fs::read_to_string(&path).expect("export file");
    let defs: Value = serde_json::from_str(&text).expect("export is JSON");
    assert!(
        defs["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == generated.as_str()),
        "the export lists the server-named queue: {text}"
    );
    // Over HTTP: applied, with what was skipped listed.
    let (_b, api) = start();
    let resp = api.call("POST", "/api/definitions", Some(&defs));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let rep = resp.json();
    assert_eq!(rep["applied"]["queues"], 1, "{rep}");
    assert_eq!(rep["applied"]["exchanges"], 1, "{rep}");
    let skipped = rep["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .filter(|s| s.as_str().unwrap().contains(&generated))
            .count()
            == 2,
        "the queue and its binding are skipped: {rep}"
    );
    // At start-up.
    let b = common::start_with(|cfg| {
        cfg.definitions = Some(path.clone());
        cfg.management_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let api = Api::new(&b);
    let q = api.get("/api/queues/%2F/work");
    assert_eq!(q["durable"], true, "{q}");
    let missing = api.call("GET", &format!("/api/queues/%2F/{}", enc(&generated)), None);
    assert_eq!(missing.status, 404);
}

/// `/api/topic-permissions` as RabbitMQ's: PUT one per exchange, listed
/// globally, per vhost, per user and per (vhost, user); DELETE all of a
/// user's in a vhost; a bad pattern is 400; definitions carry them.
#[test]
fn topic_permissions_api() {
    let (_b, api) = start();
    assert_eq!(
        api.put("/api/users/tom", json!({"password": "p", "tags": ""})),
        201
    );
    let body = json!({"exchange": "amq.topic", "write": "^tom\\.", "read": ".*"});
    assert_eq!(api.put("/api/topic-permissions/%2F/tom", body.clone()), 201);
    assert_eq!(api.put("/api/topic-permissions/%2F/tom", body), 204);
    let other = json!({"exchange": "events", "write": "", "read": "^(?!secret\\.)"});
    assert_eq!(api.put("/api/topic-permissions/%2F/tom", other), 201);
    let bad = json!({"exchange": "x", "write": "(", "read": ""});
    assert_eq!(api.put("/api/topic-permissions/%2F/tom", bad), 400);
    let missing = json!({"write": "", "read": ""});
    assert_eq!(api.put("/api/topic-permissions/%2F/tom", missing), 400);
    let want = json!([
        {"user": "tom", "vhost": "/", "exchange": "amq.topic", "write": "^tom\\.", "read": ".*"},
        {"user": "tom", "vhost": "/", "exchange": "events", "write": "", "read": "^(?!secret\\.)"}
    ]);
    for path in [
        "/api/topic-permissions",
        "/api/vhosts/%2F/topic-permissions",
        "/api/users/tom/topic-permissions",
        "/api/topic-permissions/%2F/tom",
    ] {
        assert_eq!(api.get(path), want, "{path}");
    }
    assert_eq!(api.get("/api/definitions")["topic_permissions"], want);
    assert_eq!(
        api.call("GET", "/api/topic-permissions/%2F/nobody", None)
            .status,
        404
    );
    assert_eq!(api.delete("/api/topic-permissions/%2F/tom"), 204);
    assert_eq!(api.get("/api/topic-permissions"), json!([]));
    assert_eq!(api.delete("/api/topic-permissions/%2F/tom"), 404);
}

/// A quorum queue says so (`type`), as RabbitMQ's API does.
#[test]
fn quorum_queues_show_their_type() {
    let (_b, api) = start();
    let body =
        json!({"durable": true, "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5}});
    assert_eq!(api.put("/api/queues/%2F/qq", body), 201);
    assert_eq!(api.put("/api/queues/%2F/cq", json!({"durable": true})), 201);
    assert_eq!(api.get("/api/queues/%2F/qq")["type"], "quorum");
    assert_eq!(api.get("/api/queues/%2F/cq")["type"], "classic");
}

/// The web UI's files come from the binary on the management port (the
/// page, its script and stylesheet, with a content security policy); other
/// paths outside `/api` stay 404. A failed login from a script
/// (`X-Requested-With: XMLHttpRequest`, as the UI sends) gets its 401
/// without the Basic challenge that would make a browser open its own
/// login dialog; other clients keep the challenge.
#[test]
fn web_ui_files_and_scripted_logins() {
    let (b, api) = start();
    if api.rabbit {
        return; // RabbitMQ serves its own UI
    }
    let get = |req: String| {
        let mut s = TcpStream::connect(api.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        read_response(&mut s, &mut Vec::new())
    };
    for (path, kind, needle) in [
        ("/", "text/html", "<title>warren management</title>"),
        ("/ui/app.js", "text/javascript", "function api("),
        ("/ui/app.css", "text/css", ":root"),
    ] {
        let r = get(raw_request("GET", path, None, None));
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(r
            .header("content-security-policy")
            .unwrap()
            .contains("default-src 'self'"));
        assert!(String::from_utf8_lossy(&r.body).contains(needle), "{path}");
    }
    assert_eq!(
        get(raw_request("GET", "/ui/other.js", None, None)).status,
        404
    );
    assert_eq!(
        get(raw_request("GET", "/elsewhere", None, None)).status,
        404
    );
    assert_eq!(get(raw_request("POST", "/", None, Some("{}"))).status, 405);
    let plain = get(raw_request(
        "GET",
        "/api/whoami",
        Some(("guest", "nope")),
        None,
    ));
    assert_eq!(plain.status, 401);
    assert!(plain.header("www-authenticate").is_some());
    let scripted = raw_request("GET", "/api/whoami", Some(("guest", "nope")), None).replacen(
        "\r\n",
        "\r\nX-Requested-With: XMLHttpRequest\r\n",
        1,
    );
    let r = get(scripted);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_none());
    drop(b);
}

/// An `x-delayed-message` exchange through the API: declared with its
/// `x-delayed-type`, listed with its type and arguments, among the
/// overview's exchange types; a publish with `x-delay` is not routed at
/// once (`routed: false`, as with the plugin) and arrives after its delay.
#[test]
fn delayed_message_exchange() {
    let (_b, api) = start();
    let x = unique("delayed");
    let q = unique("q");
    let xp = format!("/api/exchanges/%2F/{}", enc(&x));
    let qp = format!("/api/queues/%2F/{}", enc(&q));
    let r = api.call(
        "PUT",
        &xp,
        Some(&json!({"type": "x-delayed-message", "durable": true, "arguments": {}})),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("'x-delayed-type' must be an existing exchange type"),
        "{:?}",
        r.json()
    );
    assert_eq!(
        api.put(
            &xp,
            json!({"type": "x-delayed-message", "durable": true, "arguments": {"x-delayed-type": "direct"}})
        ),
        201
    );
    let xv = api.get(&xp);
    assert_eq!(xv["type"], "x-delayed-message");
    assert_eq!(xv["arguments"]["x-delayed-type"], "direct");
    let types = api.get("/api/overview")["exchange_types"].clone();
    assert!(
        find(&types, "name", "x-delayed-message").is_some(),
        "{types}"
    );
    assert_eq!(api.put(&qp, json!({"durable": true})), 201);
    let bp = format!("/api/bindings/%2F/e/{}/q/{}", enc(&x), enc(&q));
    assert_eq!(api.post(&bp, json!({"routing_key": "k"})).status, 201);
    let r = api.post(
        &format!("{xp}/publish"),
        json!({"routing_key": "k", "payload": "later", "payload_encoding": "string",
               "properties": {"headers": {"x-delay": 300}}}),
    );
    assert_eq!(r.json()["routed"], false);
    assert_eq!(api.get(&qp)["messages"], 0);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let got = api.post(
        &format!("{qp}/get"),
        json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}),
    );
    assert_eq!(got.json()[0]["payload"], "later", "{:?}", got.json());
    assert_eq!(got.json()[0]["properties"]["headers"]["x-delay"], -300);
    assert_eq!(api.delete(&qp), 204);
    assert_eq!(api.delete(&xp), 204);
}
