//! `warren ctl` (the binary) against an embedded broker's management
//! listener, and against the `warren` binary started with `--config` and
//! `--definitions`. Tables are compared exactly: header line, then
//! tab-separated rows, as `rabbitmqctl` prints them. HTTPS (`--https`,
//! `--tls-ca`, `--config` with `management.ssl.*`) and
//! `reload_certificates` against a small rustls server in the test; against
//! the broker itself in `tests/ctl_https.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_raw::Raw;
use bytes::Bytes;
use warren::codec::{
    BasicProperties, ExchangeDeclare, FieldTable, FieldValue, QueueBind, QueueDeclare, ReplyCode,
};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl_at(port: u16, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("ctl")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .output()
        .expect("run warren ctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run and require success; returns stdout.
fn ok(port: u16, args: &[&str]) -> String {
    let o = ctl_at(port, args);
    assert_eq!(o.code, 0, "ctl {args:?}: {}{}", o.stdout, o.stderr);
    o.stdout
}

/// Binding port 0 and a broker's restart (which binds its old ports
/// again) take turns: the ports a restart frees for a moment could
/// otherwise go to another test's bind(0) in between (AddrInUse).
static PORTS: Mutex<()> = Mutex::new(());

fn ports() -> std::sync::MutexGuard<'static, ()> {
    PORTS.lock().unwrap_or_else(|e| e.into_inner())
}

fn mgmt_broker() -> common::TestBroker {
    let _ports = ports();
    common::start_with(|cfg| cfg.management_listen = Some("127.0.0.1:0".parse().unwrap()))
}

fn mgmt_port(b: &common::TestBroker) -> u16 {
    b.mgmt_addr.expect("management listener").port()
}

fn declare(r: &mut Raw, queue: &str, args: FieldTable) {
    r.rpc(
        1,
        QueueDeclare {
            queue: Bytes::from(queue.to_string()),
            durable: true,
            arguments: args,
            ..QueueDeclare::default()
        },
    );
}

fn publish(r: &mut Raw, exchange: &str, key: &str, n: usize) {
    for i in 0..n {
        r.publish(
            1,
            exchange,
            key,
            false,
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        );
    }
    // A round trip: everything published before it has been routed.
    declare(r, "sync-point", FieldTable::new());
}

#[test]
fn ctl_manages_vhosts_users_and_permissions() {
    let broker = mgmt_broker();
    let p = mgmt_port(&broker);
    assert_eq!(ok(p, &["-q", "list_vhosts"]), "name\n/\n");
    ok(p, &["add_vhost", "staging"]);
    assert_eq!(ok(p, &["-q", "list_vhosts"]), "name\n/\nstaging\n");

    ok(p, &["add_user", "bob", "pw 1"]);
    let again = ctl_at(p, &["add_user", "bob", "pw 1"]);
    assert_eq!(again.code, 70);
    assert!(
        again.stderr.contains("Error: user \"bob\" already exists"),
        "{}",
        again.stderr
    );
    ok(p, &["set_user_tags", "bob", "management", "monitoring"]);
    assert_eq!(
        ok(p, &["-q", "list_users"]),
        "user\ttags\nbob\t[management, monitoring]\nguest\t[administrator]\n"
    );
    ok(
        p,
        &[
            "-p",
            "staging",
            "set_permissions",
            "bob",
            "^bob-",
            ".*",
            ".*",
        ],
    );
    assert_eq!(
        ok(p, &["-q", "--vhost", "staging", "list_permissions"]),
        "user\tconfigure\twrite\tread\nbob\t^bob-\t.*\t.*\nguest\t.*\t.*\t.*\n"
    );
    assert_eq!(
        ok(
            p,
            &["-q", "--no-table-headers", "list_user_permissions", "bob"]
        ),
        "staging\t^bob-\t.*\t.*\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(p, &["--json", "list_users"])).expect("JSON");
    assert_eq!(
        j,
        serde_json::json!([
            {"user": "bob", "tags": ["management", "monitoring"]},
            {"user": "guest", "tags": ["administrator"]}
        ])
    );

    // The user logs in, with the new password after change_password.
    Raw::tcp(broker.addr)
        .handshake("bob", "pw 1", "staging")
        .expect("bob logs in");
    ok(p, &["change_password", "bob", "pw-2"]);
    let e = Raw::tcp(broker.addr)
        .handshake("bob", "pw 1", "staging")
        .unwrap_err();
    assert_eq!(e.reply_code, ReplyCode::ACCESS_REFUSED);
    Raw::tcp(broker.addr)
        .handshake("bob", "pw-2", "staging")
        .expect("new password");
    // The tags survived the password change.
    assert!(ok(p, &["-q", "list_users"]).contains("bob\t[management, monitoring]\n"));
    // ctl as bob (monitoring may read, not write).
    let as_bob = ["--user", "bob", "--password", "pw-2"];
    assert!(ok(p, &[&as_bob[..], &["-q", "list_vhosts"]].concat()).starts_with("name\n"));
    let refused = ctl_at(p, &[&as_bob[..], &["add_vhost", "x"]].concat());
    assert_eq!(refused.code, 77, "{}", refused.stderr);

    ok(p, &["-p", "staging", "clear_permissions", "bob"]);
    let e = Raw::tcp(broker.addr)
        .handshake("bob", "pw-2", "staging")
        .unwrap_err();
    assert_eq!(e.reply_code, ReplyCode::NOT_ALLOWED);

    ok(p, &["delete_user", "bob"]);
    let gone = ctl_at(p, &["delete_user", "bob"]);
    assert_eq!(gone.code, 67);
    assert!(gone.stderr.contains("user \"bob\" does not exist"));
    ok(p, &["delete_vhost", "staging"]);
    assert_eq!(ctl_at(p, &["delete_vhost", "staging"]).code, 69);
    assert_eq!(ctl_at(p, &["-p", "staging", "list_queues"]).code, 69);

    // Wrong credentials, unknown command, missing argument.
    let bad = ctl_at(p, &["--password", "nope", "list_users"]);
    assert_eq!(bad.code, 77);
    assert!(bad.stderr.contains("HTTP 401"), "{}", bad.stderr);
    assert_eq!(ctl_at(p, &["frobnicate"]).code, 64);
    assert_eq!(ctl_at(p, &["add_user", "only-name"]).code, 64);
}

#[test]
fn ctl_queues_connections_and_definitions() {
    let broker = mgmt_broker();
    let p = mgmt_port(&broker);
    let mut r = Raw::open(broker.addr);
    r.open_channel(1);
    let mut args = FieldTable::new();
    args.insert("x-max-length", FieldValue::I32(10));
    declare(&mut r, "jobs", args);
    r.rpc(
        1,
        ExchangeDeclare {
            exchange: Bytes::from_static(b"ev"),
            kind: Bytes::from_static(b"topic"),
            durable: true,
            ..ExchangeDeclare::default()
        },
    );
    r.rpc(
        1,
        QueueBind {
            queue: Bytes::from_static(b"jobs"),
            exchange: Bytes::from_static(b"ev"),
            routing_key: Bytes::from_static(b"job.#"),
            ..QueueBind::default()
        },
    );
    publish(&mut r, "ev", "job.a", 3);

    assert_eq!(
        ok(
            p,
            &[
                "-q",
                "list_queues",
                "name",
                "messages",
                "durable",
                "arguments"
            ]
        ),
        "name\tmessages\tdurable\targuments\n\
         jobs\t3\ttrue\t[{\"x-max-length\",10}]\n\
         sync-point\t0\ttrue\t[]\n"
    );
    let xs = ok(p, &["-q", "list_exchanges"]);
    assert!(xs.starts_with("name\ttype\n"), "{xs}");
    assert!(xs.contains("\nev\ttopic\n"), "{xs}");
    assert!(xs.contains("\namq.topic\ttopic\n"), "{xs}");
    let bs = ok(p, &["-q", "list_bindings"]);
    assert!(
        bs.starts_with(
            "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments\n"
        ),
        "{bs}"
    );
    assert!(bs.contains("\n\texchange\tjobs\tqueue\tjobs\t[]\n"), "{bs}");
    assert!(
        bs.contains("\nev\texchange\tjobs\tqueue\tjob.#\t[]\n"),
        "{bs}"
    );

    // Definitions out of this broker and into a fresh one.
    let dir = common::temp_dir("ctl-defs");
    let file = dir.join("defs.json");
    ok(p, &["export_definitions", file.to_str().unwrap()]);
    let defs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).expect("JSON");
    assert!(defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "jobs" && q["arguments"]["x-max-length"] == 10));
    let other = mgmt_broker();
    let p2 = mgmt_port(&other);
    assert!(ok(p2, &["import_definitions", file.to_str().unwrap()])
        .contains("Successfully started definition import."));
    assert!(ok(p2, &["-q", "list_queues", "name", "arguments"])
        .contains("\njobs\t[{\"x-max-length\",10}]\n"));
    assert!(ok(p2, &["-q", "list_bindings"]).contains("\nev\texchange\tjobs\tqueue\tjob.#\t[]\n"));
    let stdout = ok(p2, &["-q", "export_definitions", "-"]);
    let again: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(again["queues"], defs["queues"]);
    assert_eq!(again["bindings"], defs["bindings"]);

    // purge_queue, then delete_queue reporting the messages it dropped.
    ok(p, &["purge_queue", "jobs"]);
    assert!(ok(p, &["-q", "list_queues"]).contains("\njobs\t0\n"));
    publish(&mut r, "", "jobs", 2);
    assert_eq!(
        ok(p, &["delete_queue", "jobs"]),
        "Queue was successfully deleted with 2 messages\n"
    );
    assert_eq!(ctl_at(p, &["delete_queue", "jobs"]).code, 69);
    assert_eq!(ctl_at(p, &["purge_queue", "jobs"]).code, 69);

    // list_connections, then close_connection by the name it shows.
    let conns = ok(
        p,
        &["-q", "list_connections", "name", "user", "vhost", "state"],
    );
    let rows: Vec<&str> = conns.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{conns}");
    let cols: Vec<&str> = rows[0].split('\t').collect();
    assert_eq!(&cols[1..], ["guest", "/", "running"], "{conns}");
    ok(p, &["close_connection", cols[0], "maintenance window"]);
    let close = r.expect_connection_close();
    assert_eq!(close.reply_code, ReplyCode::CONNECTION_FORCED);
    assert_eq!(
        &close.reply_text[..],
        &b"CONNECTION_FORCED - maintenance window"[..]
    );
    assert_eq!(ctl_at(p, &["close_connection", cols[0]]).code, 69);

    let status = ok(p, &["status"]);
    assert!(status.contains("Product: Warren"), "{status}");
    assert!(
        status.contains(&format!("port {}, protocol amqp", broker.addr.port())),
        "{status}"
    );
}

fn free_port() -> u16 {
    let _ports = ports();
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary with `--config` (listeners, management port, data dir, log
/// level) and `--definitions`; `warren ctl` and an AMQP client see it all.
#[test]
fn binary_with_config_and_definitions() {
    let dir = common::temp_dir("ctl-bin");
    let (amqp, http) = (free_port(), free_port());
    let conf = dir.join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!(
            "listeners.tcp.default = 127.0.0.1:{amqp}\n\
             management.tcp.ip = 127.0.0.1\n\
             management.tcp.port = {http}\n\
             prometheus.tcp.port = 0\n\
             data_dir = {}\n\
             log.console.level = warning\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let defs =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_auth/definitions.json");
    let child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--config")
        .arg(&conf)
        .arg("--definitions")
        .arg(&defs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start warren");
    let _guard = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctl_at(http, &["-q", "status"]).code != 0 {
        assert!(Instant::now() < deadline, "warren did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        ok(
            http,
            &["-q", "-p", "auth-test", "list_queues", "name", "durable"]
        ),
        "name\tdurable\naudit.log\ttrue\norders\ttrue\norders.dead\ttrue\nshared\ttrue\n"
    );
    assert!(ok(http, &["-q", "list_users"]).contains("\nalice\t[administrator]\n"));
    assert_eq!(
        ok(http, &["-q", "list_vhosts"]),
        "name\n/\nauth-other\nauth-test\n"
    );
    let addr: SocketAddr = format!("127.0.0.1:{amqp}").parse().unwrap();
    Raw::tcp(addr)
        .handshake("alice", "alice-Secr3t", "auth-test")
        .expect("alice logs in with her password");
    Raw::tcp(addr)
        .handshake("carol", "pässwörd✓", "auth-test")
        .expect("carol logs in with her UTF-8 password");
    // alice is an administrator: ctl works as her too.
    assert!(ok(
        http,
        &[
            "--user",
            "alice",
            "--password",
            "alice-Secr3t",
            "-q",
            "list_users"
        ]
    )
    .contains("\ncarol\t[]\n"));
}

/// Topic permissions through `warren ctl`: set, listed, enforced on a
/// publish (403 with RabbitMQ's text), kept across a restart (the
/// definitions log), exported with the definitions, and cleared.
#[test]
fn ctl_topic_permissions_limit_routing_keys_and_survive_a_restart() {
    let mut broker = mgmt_broker();
    let p = mgmt_port(&broker);
    ok(p, &["add_user", "tina", "tina-pw"]);
    ok(p, &["set_permissions", "tina", ".*", ".*", ".*"]);
    ok(
        p,
        &[
            "set_topic_permissions",
            "tina",
            "amq.topic",
            "^{username}\\.",
            "^public\\.",
        ],
    );
    assert_eq!(
        ok(p, &["-q", "list_topic_permissions"]),
        "user\texchange\twrite\tread\ntina\tamq.topic\t^{username}\\.\t^public\\.\n"
    );
    let publish_as_tina = |addr: SocketAddr, key: &str| -> Option<u16> {
        let mut r = Raw::tcp(addr);
        r.handshake("tina", "tina-pw", "/").expect("tina logs in");
        r.open_channel(1);
        r.publish(1, "amq.topic", key, false, b"x", BasicProperties::default());
        // A round trip after the publish: its refusal arrives first.
        r.send(
            1,
            QueueDeclare {
                queue: Bytes::from_static(b"tina-sync"),
                exclusive: true,
                ..QueueDeclare::default()
            },
        );
        match r.recv_method() {
            (1, warren::codec::Method::ChannelClose(c)) => {
                assert_eq!(
                    String::from_utf8_lossy(&c.reply_text),
                    format!(
                        "ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic' in vhost '/' refused for user 'tina'"
                    )
                );
                Some(c.reply_code)
            }
            _ => None,
        }
    };
    assert_eq!(publish_as_tina(broker.addr, "tina.x"), None);
    assert_eq!(publish_as_tina(broker.addr, "payroll.x"), Some(403));
    {
        let _ports = ports();
        broker.restart();
    }
    let p = mgmt_port(&broker);
    assert_eq!(publish_as_tina(broker.addr, "payroll.x"), Some(403));
    let defs: serde_json::Value =
        serde_json::from_str(&ok(p, &["export_definitions", "-"])).expect("JSON");
    assert_eq!(
        defs["topic_permissions"],
        serde_json::json!([{"user": "tina", "vhost": "/", "exchange": "amq.topic",
                            "write": "^{username}\\.", "read": "^public\\."}])
    );
    ok(p, &["clear_topic_permissions", "tina", "amq.topic"]);
    assert_eq!(
        ok(p, &["-q", "list_topic_permissions"]),
        "user\texchange\twrite\tread\n"
    );
    assert_eq!(publish_as_tina(broker.addr, "payroll.x"), None);
    // Nothing left to clear is not an error.
    ok(p, &["clear_topic_permissions", "tina"]);
}

/// A one-thread HTTP server that answers every request with `status`,
/// `server` and `body`, as long as the returned listener's port is wanted.
fn fake_http(status: &'static str, server: &'static str, body: &'static str) -> u16 {
    let l = {
        let _ports = ports();
        TcpListener::bind("127.0.0.1:0").expect("bind")
    };
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let resp = format!(
                "HTTP/1.1 {status}\r\nserver: {server}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut s, resp.as_bytes());
        }
    });
    port
}

/// What owns the management port is not warren (another broker took
/// 15672): `warren ctl` refuses to act on it (69), naming what it found,
/// unless `--any-broker`.
#[test]
fn ctl_refuses_a_management_api_that_is_not_warrens() {
    // RabbitMQ 3.10's /api/overview, abridged.
    let rabbit = fake_http(
        "200 OK",
        "Cowboy",
        r#"{"management_version":"3.10.8","rabbitmq_version":"3.10.8","product_name":"RabbitMQ","product_version":"3.10.8","node":"rabbit@otherhost","cluster_name":"rabbit@otherhost"}"#,
    );
    for cmd in [
        &["list_queues"][..],
        &["add_user", "bob", "pw"],
        &["status"],
    ] {
        let o = ctl_at(rabbit, cmd);
        assert_eq!(o.code, 69, "{cmd:?}: {}", o.stderr);
        assert!(
            o.stderr.contains(&format!(
                "Error: the management API at 127.0.0.1:{rabbit} is RabbitMQ 3.10.8 \
                 (node rabbit@otherhost), not warren: refusing to act on it"
            )),
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains("--any-broker"), "{}", o.stderr);
    }
    // Usage errors are still usage errors (nothing is asked).
    assert_eq!(ctl_at(rabbit, &["add_user", "bob"]).code, 64);
    // With --any-broker the command goes ahead (and here fails on what
    // the fake answers, not on who it is).
    let o = ctl_at(rabbit, &["--any-broker", "list_queues"]);
    assert_eq!(o.code, 70, "{}", o.stderr);
    assert!(o.stderr.contains("expected a JSON list"), "{}", o.stderr);
    // Credentials refused by something that is not warren: refused too.
    let other = fake_http(
        "401 Unauthorized",
        "Cowboy",
        r#"{"error":"not_authorized","reason":"Login failed"}"#,
    );
    let o = ctl_at(other, &["list_vhosts"]);
    assert_eq!(o.code, 69, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("a server that answered HTTP 401 to /api/overview (server: Cowboy)"),
        "{}",
        o.stderr
    );
    // Any other HTTP service.
    let web = fake_http("200 OK", "nginx", r#"{"hello":"world"}"#);
    let o = ctl_at(web, &["list_vhosts"]);
    assert_eq!(o.code, 69, "{}", o.stderr);
    assert!(o.stderr.contains("no product_name"), "{}", o.stderr);
    // Warren refusing the credentials is warren's refusal (77).
    let broker = mgmt_broker();
    let o = ctl_at(mgmt_port(&broker), &["--password", "nope", "list_vhosts"]);
    assert_eq!(o.code, 77, "{}", o.stderr);
}

fn ctl(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("ctl")
        .args(args)
        .output()
        .expect("run warren ctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An HTTPS server (rustls, the test CA's certificate for localhost and
/// 127.0.0.1) answering as warren's management API would: `/api/overview`,
/// `/api/vhosts`, and `POST /api/reload-certificates` (204 the first time,
/// then 400 with warren's JSON error). Every request's head is recorded.
fn fake_https(certs: &common::TlsCerts) -> (u16, Arc<Mutex<Vec<String>>>) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&certs.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&certs.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let l = {
        let _ports = ports();
        TcpListener::bind("127.0.0.1:0").unwrap()
    };
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut reloads = 0;
        for s in l.incoming() {
            let Ok(sock) = s else { return };
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // A bad handshake (a client that does not trust us) ends here.
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            if req.is_empty() {
                continue;
            }
            let head = String::from_utf8_lossy(&req).into_owned();
            let line = head.lines().next().unwrap_or("").to_string();
            log.lock().unwrap().push(head);
            let (status, body) = if line.starts_with("GET /api/overview ") {
                (
                    "200 OK",
                    r#"{"product_name":"Warren","product_version":"0.1.0","node":"warren@test"}"#,
                )
            } else if line.starts_with("GET /api/vhosts ") {
                ("200 OK", r#"[{"name":"/"}]"#)
            } else if line.starts_with("POST /api/reload-certificates ") {
                reloads += 1;
                if reloads == 1 {
                    ("204 No Content", "")
                } else {
                    (
                        "400 Bad Request",
                        r#"{"error":"bad_request","reason":"TLS certificate file /etc/warren/server.pem: no certificate in the file"}"#,
                    )
                }
            } else {
                (
                    "404 Not Found",
                    r#"{"error":"Object Not Found","reason":"Not Found"}"#,
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nserver: warren\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(resp.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (port, seen)
}

/// `--https --tls-ca` (and `--tls-ca` alone): lists and
/// `reload_certificates` over TLS, its refusal shown with the reason;
/// `--config` with `management.ssl.port` and `.cacertfile` finds the same;
/// a wrong CA, a wrong name, HTTP to the HTTPS port and HTTPS to an HTTP
/// port are errors that say so.
#[test]
fn ctl_speaks_https() {
    let certs = common::tls_certs();
    let (port, seen) = fake_https(&certs);
    let p = port.to_string();
    let ca = certs.ca.to_str().unwrap();
    let https = [
        "--host",
        "localhost",
        "--port",
        &p,
        "--https",
        "--tls-ca",
        ca,
    ];

    let o = ctl(&[&https[..], &["-q", "list_vhosts"]].concat());
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "name\n/\n"),
        "{}",
        o.stderr
    );
    // By IP address (the certificate names 127.0.0.1 too), --tls-ca alone.
    let o = ctl(&[
        "--host",
        "127.0.0.1",
        "--port",
        &p,
        "--tls-ca",
        ca,
        "-q",
        "list_vhosts",
    ]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "name\n/\n"),
        "{}",
        o.stderr
    );

    let o = ctl(&[&https[..], &["reload_certificates"]].concat());
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "TLS certificates reloaded.\n");
    assert!(
        o.stderr.contains("Reloading TLS certificates"),
        "{}",
        o.stderr
    );
    {
        let seen = seen.lock().unwrap();
        let reload = seen
            .iter()
            .find(|h| h.starts_with("POST /api/reload-certificates HTTP/1.1\r\n"))
            .expect("the reload request");
        assert!(reload.contains("\r\nContent-Length: 0\r\n"), "{reload}");
        assert!(
            reload.contains("\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"),
            "{reload}"
        );
        // warren's API was checked first.
        assert!(seen[0].starts_with("GET /api/overview "), "{seen:?}");
    }
    let o = ctl(&[&https[..], &["reload_certificates"]].concat());
    assert_eq!(o.code, 70, "{}", o.stderr);
    assert!(
        o.stderr.contains(
            "Error: POST /api/reload-certificates: HTTP 400: TLS certificate file \
             /etc/warren/server.pem: no certificate in the file"
        ),
        "{}",
        o.stderr
    );

    // The broker's rabbitmq.conf says where (HTTPS wins over HTTP).
    let dir = common::temp_dir("ctl-https");
    let conf = dir.join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!(
            "listeners.ssl.default = 5671\n\
             management.tcp.port = {}\n\
             management.ssl.port = {port}\n\
             management.ssl.ip = 127.0.0.1   # the HTTPS API\n\
             management.ssl.certfile = {}\n\
             management.ssl.keyfile = {}\n\
             management.ssl.cacertfile = {ca}\n",
            free_port(),
            certs.cert.display(),
            certs.key.display(),
        ),
    )
    .unwrap();
    let o = ctl(&["--config", conf.to_str().unwrap(), "-q", "list_vhosts"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "name\n/\n"),
        "{}",
        o.stderr
    );

    // Another CA (named alike: its signature fails), another name.
    let other = common::tls_certs();
    let o = ctl(&[
        "--host",
        "localhost",
        "--port",
        &p,
        "--tls-ca",
        other.ca.to_str().unwrap(),
        "list_vhosts",
    ]);
    assert_eq!(o.code, 69, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "Error: cannot reach the management API at https://localhost:{port}: \
             TLS handshake failed: invalid peer certificate"
        )),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("is --tls-ca the CA that signed"),
        "{}",
        o.stderr
    );
    let o = ctl(&[
        &https[..],
        &["--tls-server-name", "broker.example", "list_vhosts"],
    ]
    .concat());
    assert_eq!(o.code, 69, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("certificate not valid for name \"broker.example\""),
        "{}",
        o.stderr
    );

    // Plain HTTP to the HTTPS port: the TLS alert it gets back is named.
    let o = ctl(&["--host", "127.0.0.1", "--port", &p, "list_vhosts"]);
    assert_ne!(o.code, 0, "{}", o.stdout);
    assert!(
        o.stderr.contains("use --https and --tls-ca"),
        "{}",
        o.stderr
    );
    // HTTPS to a plain HTTP port.
    let web = fake_http("200 OK", "warren", "{}");
    let o = ctl(&[
        "--host",
        "127.0.0.1",
        "--port",
        &web.to_string(),
        "--tls-ca",
        ca,
        "list_vhosts",
    ]);
    assert_eq!(o.code, 69, "{}", o.stderr);
    assert!(o.stderr.contains("TLS handshake failed"), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("is this the management API's HTTPS port?"),
        "{}",
        o.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Policies, operator policies and limits through `warren ctl` with
/// rabbitmqctl's argument order: set, listed (and in `list_queues name
/// policy`), applied to a queue that exists, kept across a restart (the
/// definitions log) with the queue's effective settings, and cleared.
#[test]
fn ctl_policies_and_limits_survive_a_restart() {
    let mut broker = mgmt_broker();
    let p = mgmt_port(&broker);
    let mut r = Raw::tcp(broker.addr);
    r.handshake("guest", "guest", "/").expect("login");
    r.open_channel(1);
    declare(&mut r, "capped", FieldTable::new());
    publish(&mut r, "", "capped", 5);
    ok(
        p,
        &[
            "set_policy",
            "--priority",
            "2",
            "--apply-to",
            "queues",
            "cap",
            "^capped$",
            r#"{"max-length": 2}"#,
        ],
    );
    assert_eq!(
        ok(p, &["-q", "list_policies"]),
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority\n\
         /\tcap\t^capped$\tqueues\t{\"max-length\":2}\t2\n"
    );
    let queues = ok(p, &["-q", "list_queues", "name", "policy", "messages"]);
    assert!(queues.contains("capped\tcap\t2\n"), "{queues}");
    assert!(queues.contains("sync-point\t\t0\n"), "{queues}");
    let bad = ctl_at(p, &["set_policy", "x", ".*", r#"{"max-length": -1}"#]);
    assert_eq!(bad.code, 70);
    assert!(
        bad.stderr
            .contains("Validation failed\n\n-1 is not a valid maximum length"),
        "{}",
        bad.stderr
    );
    ok(
        p,
        &["set_operator_policy", "opcap", ".*", r#"{"max-length": 1}"#],
    );
    assert!(ok(p, &["-q", "list_operator_policies"]).contains("opcap"));
    ok(
        p,
        &[
            "set_vhost_limits",
            r#"{"max-connections": 5, "max-queues": 10}"#,
        ],
    );
    ok(p, &["set_user_limits", "guest", r#"{"max-channels": 100}"#]);
    {
        let _ports = ports();
        broker.restart();
    }
    let p = mgmt_port(&broker);
    assert_eq!(
        ok(p, &["-q", "--no-table-headers", "list_vhost_limits"]),
        "/\t{\"max-connections\":5,\"max-queues\":10}\n"
    );
    assert_eq!(
        ok(
            p,
            &["-q", "--no-table-headers", "list_user_limits", "guest"]
        ),
        "guest\t{\"max-channels\":100}\n"
    );
    // The queue came back with its policies in force (the operator
    // policy's 1 beats the policy's 2).
    let mut r = Raw::tcp(broker.addr);
    r.handshake("guest", "guest", "/").expect("login");
    r.open_channel(1);
    publish(&mut r, "", "capped", 3);
    let queues = ok(p, &["-q", "list_queues", "name", "policy", "messages"]);
    assert!(queues.contains("capped\tcap\t1\n"), "{queues}");
    ok(p, &["clear_operator_policy", "opcap"]);
    ok(p, &["clear_policy", "cap"]);
    let gone = ctl_at(p, &["clear_policy", "cap"]);
    assert_eq!(gone.code, 70, "{}", gone.stderr);
    assert_eq!(
        ok(p, &["-q", "list_policies"]),
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority\n"
    );
    ok(p, &["clear_vhost_limits"]);
    ok(p, &["clear_user_limits", "guest", "all"]);
    assert_eq!(
        ok(p, &["-q", "--no-table-headers", "list_vhost_limits"]),
        ""
    );
    assert_eq!(ok(p, &["-q", "--no-table-headers", "list_user_limits"]), "");
}

/// `await_startup` returns once the broker binary answers; `stop` stops it
/// gracefully (the process exits 0, its durable queue and messages are
/// there after a restart); `stop` refuses a non-administrator (77); and
/// `await_startup` against nothing times out with 75 (EX_TEMPFAIL).
#[test]
fn ctl_await_startup_and_stop_a_broker_binary() {
    let dir = common::temp_dir("ctl-stop");
    let (amqp, http) = (free_port(), free_port());
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["--listen", &format!("127.0.0.1:{amqp}")])
            .args(["--management-listen", &format!("127.0.0.1:{http}")])
            .arg("--no-prometheus")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start warren")
    };
    let mut broker = Proc(start());
    let o = ctl_at(http, &["--timeout", "20", "await_startup"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("is running"), "{}", o.stderr);
    let addr: SocketAddr = format!("127.0.0.1:{amqp}").parse().unwrap();
    let mut r = Raw::tcp(addr);
    r.handshake("guest", "guest", "/").expect("log in");
    r.open_channel(1);
    declare(&mut r, "kept", FieldTable::new());
    for _ in 0..3 {
        r.publish(
            1,
            "",
            "kept",
            false,
            b"m",
            BasicProperties {
                delivery_mode: Some(2),
                ..BasicProperties::default()
            },
        );
    }
    declare(&mut r, "sync-point", FieldTable::new());
    // Only administrators may stop it.
    ok(http, &["-q", "add_user", "mon", "pw"]);
    ok(http, &["-q", "set_user_tags", "mon", "monitoring"]);
    let o = ctl_at(http, &["-u", "mon", "-w", "pw", "stop"]);
    assert_eq!(o.code, 77, "{}{}", o.stdout, o.stderr);
    let t = Instant::now();
    let o = ctl_at(http, &["--timeout", "20", "stop"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("Stopping and halting node warren@"),
        "{}",
        o.stderr
    );
    // Gone when stop returns: the process exits 0, as after SIGTERM.
    let status = loop {
        if let Some(s) = broker.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "warren still runs");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert_ne!(ctl_at(http, &["-q", "status"]).code, 0);
    // The client was closed with 320 CONNECTION_FORCED and the data kept.
    drop(r);
    let _ports = ports();
    broker = Proc(start());
    drop(_ports);
    assert_eq!(ctl_at(http, &["-q", "-t", "20", "await_startup"]).code, 0);
    assert!(
        ok(http, &["-q", "list_queues"]).contains("\nkept\t3\n"),
        "the queue and its messages were kept"
    );
    assert_eq!(ok(http, &["-q", "stop"]), "");
    assert_eq!(broker.0.wait().unwrap().code(), Some(0));
    // Nothing there: a timeout, 75.
    let nothing = free_port();
    let t = Instant::now();
    let o = ctl_at(nothing, &["--timeout", "1", "await_startup"]);
    assert_eq!(o.code, 75, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("did not start within 1 seconds"),
        "{}",
        o.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // And stop, with nothing to stop: unreachable, 69.
    assert_eq!(ctl_at(nothing, &["stop"]).code, 69);
}
