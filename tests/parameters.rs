//! Runtime parameters of the components `shovel`, `federation-upstream`
//! and `federation-upstream-set` over the management API
//! (`/api/parameters`, as RabbitMQ's management plugin serves it) and
//! `warren ctl set_parameter` / `list_parameters` / `clear_parameter`,
//! against an embedded broker: round trips, RabbitMQ's "Validation failed"
//! 400s, 404s, who may (administrator, policymaker in its vhosts), the
//! definitions log across a restart, and definitions export/import.
//!
//! The shovels here point at `127.0.0.1:1` (nothing listens there), so
//! whatever runs them only retries: the tests look at the parameters only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

/// A response: status and body.
struct Resp {
    status: u16,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One management API user.
struct Api {
    addr: SocketAddr,
    auth: Option<(String, String)>,
}

impl Api {
    fn new(b: &common::TestBroker) -> Api {
        Api {
            addr: b.mgmt_addr.expect("management listener"),
            auth: Some(("guest".into(), "guest".into())),
        }
    }

    fn as_user(&self, user: &str, pass: &str) -> Api {
        Api {
            addr: self.addr,
            auth: Some((user.into(), pass.into())),
        }
    }

    fn anonymous(&self) -> Api {
        Api {
            addr: self.addr,
            auth: None,
        }
    }

    /// One request on its own connection (`Connection: close`).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some((u, p)) = &self.auth {
            let cred = warren::support::base64_encode(format!("{u}:{p}").as_bytes());
            req.push_str(&format!("Authorization: Basic {cred}\r\n"));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let mut s = TcpStream::connect(self.addr).expect("connect mgmt");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read response");
        let r = warren::support::parse_http_response(&raw).expect("an HTTP response");
        Resp {
            status: r.status,
            body: r.body,
        }
    }

    fn get(&self, path: &str) -> Value {
        let r = self.call("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    fn put(&self, path: &str, body: Value) -> Resp {
        self.call("PUT", path, Some(&body))
    }

    fn delete(&self, path: &str) -> u16 {
        self.call("DELETE", path, None).status
    }
}

/// Binding port 0 and a broker's restart (which binds its old ports
/// again) take turns, so that a restart's ports do not go to another
/// test's bind in between.
static PORTS: Mutex<()> = Mutex::new(());

fn ports() -> std::sync::MutexGuard<'static, ()> {
    PORTS.lock().unwrap_or_else(|e| e.into_inner())
}

fn start() -> (common::TestBroker, Api) {
    let _ports = ports();
    let b = common::start_with(|cfg| cfg.management_listen = Some("127.0.0.1:0".parse().unwrap()));
    let api = Api::new(&b);
    (b, api)
}

/// A shovel from queue `src` to queue `dest` of a broker nobody runs.
fn shovel(src: &str, dest: &str) -> Value {
    json!({
        "src-protocol": "amqp091", "src-uri": "amqp://guest:guest@127.0.0.1:1/%2f",
        "src-queue": src,
        "dest-protocol": "amqp091", "dest-uri": ["amqp://127.0.0.1:1", "amqps://127.0.0.1:1"],
        "dest-queue": dest,
        "ack-mode": "on-confirm", "src-prefetch-count": 100, "src-delete-after": "never",
        "dest-add-forward-headers": true, "reconnect-delay": 30
    })
}

fn upstream() -> Value {
    json!({"uri": "amqp://127.0.0.1:1", "max-hops": 2, "ack-mode": "on-publish",
           "trust-user-id": false, "expires": 3_600_000, "prefetch-count": 500})
}

/// A 400 with RabbitMQ's shape, its reason containing `why`.
fn assert_invalid(r: &Resp, why: &str) {
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "bad_request");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Validation failed\n\n"),
        "reason: {reason:?}"
    );
    assert!(reason.contains(why), "{why:?} not in {reason:?}");
}

#[test]
fn shovel_and_upstream_round_trip() {
    let (_b, api) = start();
    // Nothing yet (the list answers, empty).
    assert_eq!(api.get("/api/parameters/shovel"), json!([]));
    assert_eq!(api.get("/api/parameters/shovel/%2F"), json!([]));

    let path = "/api/parameters/shovel/%2F/move-jobs";
    // RabbitMQ's clients send the component, vhost and name too.
    let body = json!({"component": "shovel", "vhost": "/", "name": "move-jobs",
                      "value": shovel("jobs", "jobs-copy")});
    let r = api.put(path, body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        api.get(path),
        json!({"vhost": "/", "component": "shovel", "name": "move-jobs",
               "value": shovel("jobs", "jobs-copy")})
    );
    // Replaced: 204, and the new value is what GET shows.
    let r = api.put(path, json!({"value": shovel("jobs", "elsewhere")}));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(api.get(path)["value"]["dest-queue"], "elsewhere");
    // The value may come as a JSON string (older tools).
    let r = api.put(
        "/api/parameters/shovel/%2F/as-text",
        json!({"value": shovel("a", "b").to_string()}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        api.get("/api/parameters/shovel/%2F/as-text")["value"],
        shovel("a", "b")
    );

    // An upstream and an upstream set.
    let up = "/api/parameters/federation-upstream/%2F/origin";
    assert_eq!(api.put(up, json!({"value": upstream()})).status, 201);
    assert_eq!(api.get(up)["value"], upstream());
    let set = "/api/parameters/federation-upstream-set/%2F/all";
    let members = json!([{"upstream": "origin"}, {"upstream": "other", "max-hops": 1}]);
    assert_eq!(api.put(set, json!({"value": members})).status, 201);
    assert_eq!(api.get(set)["value"], members);

    // Lists: every component, one component, one vhost.
    let all = api.get("/api/parameters");
    let names: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["component"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("federation-upstream", "origin"),
            ("federation-upstream-set", "all"),
            ("shovel", "as-text"),
            ("shovel", "move-jobs"),
        ]
    );
    assert!(all.as_array().unwrap().iter().all(|p| p["vhost"] == "/"));
    assert_eq!(
        api.get("/api/parameters/shovel").as_array().unwrap().len(),
        2
    );
    assert_eq!(
        api.get("/api/parameters/federation-upstream/%2F"),
        json!([{"vhost": "/", "component": "federation-upstream", "name": "origin",
                "value": upstream()}])
    );
    // Columns, as for every list.
    assert_eq!(
        api.get("/api/parameters/shovel/%2F?columns=name"),
        json!([{"name": "as-text"}, {"name": "move-jobs"}])
    );

    // Deleted: 204, then 404.
    assert_eq!(api.delete(path), 204);
    assert_eq!(api.call("GET", path, None).status, 404);
    assert_eq!(api.delete(path), 404);
    assert_eq!(api.delete(up), 204);
    assert_eq!(api.delete(set), 204);
    assert_eq!(api.delete("/api/parameters/shovel/%2F/as-text"), 204);
    assert_eq!(api.get("/api/parameters"), json!([]));
}

#[test]
fn bad_values_are_refused_with_rabbitmqs_reasons() {
    let (_b, api) = start();
    let path = "/api/parameters/shovel/%2F/bad";
    let with = |k: &str, v: Value| {
        let mut s = shovel("a", "b");
        s.as_object_mut().unwrap().insert(k.into(), v);
        api.put(path, json!({ "value": s }))
    };
    let mut no_dest = shovel("a", "b");
    no_dest.as_object_mut().unwrap().remove("dest-uri");
    assert_invalid(
        &api.put(path, json!({ "value": no_dest })),
        "Key \"dest-uri\" not found in bad",
    );
    assert_invalid(
        &with("src-exchange", json!("x")),
        "Cannot specify 'src-exchange' and 'src-queue'",
    );
    assert_invalid(
        &with("ack-mode", json!("eventually")),
        "ack-mode should be one of [<<\"no-ack\">>,<<\"on-publish\">>,<<\"on-confirm\">>], \
         actually was <<\"eventually\">>",
    );
    assert_invalid(
        &with("src-uri", json!("http://127.0.0.1:15672")),
        "\"http://127.0.0.1:15672\" not a valid URI",
    );
    assert_invalid(
        &with("dest-uri", json!(["amqp://127.0.0.1:1", "mqtt://x"])),
        "\"mqtt://x\" not a valid URI",
    );
    assert_invalid(
        &with("colour", json!("blue")),
        "Unrecognised terms [{<<\"colour\">>,<<\"blue\">>}] in bad",
    );
    assert_invalid(
        &with("src-prefetch-count", json!(-5)),
        "src-prefetch-count should be an integer of at least 0",
    );
    assert_invalid(&with("dest-protocol", json!("amqp10")), "dest-protocol");
    // Several faults: each on its own line.
    let r = api.put(
        path,
        json!({"value": {"src-uri": "amqp://127.0.0.1:1", "src-queue": "a",
                         "src-exchange": "x", "bogus": 1}}),
    );
    assert_invalid(&r, "Cannot specify 'src-exchange' and 'src-queue'\n");
    assert_invalid(&r, "Unrecognised terms [{<<\"bogus\">>,1}] in bad\n");
    assert_invalid(&r, "Key \"dest-uri\" not found in bad\n");
    // Upstreams and sets.
    let up = "/api/parameters/federation-upstream/%2F/u";
    assert_invalid(
        &api.put(up, json!({"value": {"max-hops": 1}})),
        "Key \"uri\" not found in u",
    );
    assert_invalid(
        &api.put(up, json!({"value": {"uri": "amqp://h", "max-hops": 0}})),
        "max-hops",
    );
    assert_invalid(
        &api.put(
            "/api/parameters/federation-upstream-set/%2F/s",
            json!({"value": [{"max-hops": 1}]}),
        ),
        "Key \"upstream\" not found in s",
    );
    // A component warren does not know; one changed elsewhere.
    assert_invalid(
        &api.put("/api/parameters/widget/%2F/w", json!({"value": {"a": 1}})),
        "component widget not found",
    );
    assert_invalid(
        &api.put(
            "/api/parameters/operator_policy/%2F/o",
            json!({"value": {"pattern": ".*", "definition": {"max-length": 1}}}),
        ),
        "/api/operator-policies",
    );
    // No value, or not JSON.
    let r = api.put(path, json!({"component": "shovel"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "[{key_missing,value}]");
    let r = api.call("PUT", path, None);
    assert_eq!(r.status, 400);
    // None of it was stored.
    assert_eq!(api.get("/api/parameters"), json!([]));
}

#[test]
fn missing_things_are_404() {
    let (_b, api) = start();
    assert_eq!(
        api.call("GET", "/api/parameters/shovel/%2F/nope", None)
            .status,
        404
    );
    assert_eq!(api.delete("/api/parameters/shovel/%2F/nope"), 404);
    // An unknown vhost: list, get, put, delete.
    assert_eq!(
        api.call("GET", "/api/parameters/shovel/no-such-vhost", None)
            .status,
        404
    );
    assert_eq!(
        api.call("GET", "/api/parameters/shovel/no-such-vhost/s", None)
            .status,
        404
    );
    let r = api.put(
        "/api/parameters/shovel/no-such-vhost/s",
        json!({"value": shovel("a", "b")}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(api.delete("/api/parameters/shovel/no-such-vhost/s"), 404);
    // Too deep a path.
    assert_eq!(
        api.call("GET", "/api/parameters/shovel/%2F/s/extra", None)
            .status,
        404
    );
    // Deleting a vhost deletes its parameters.
    assert_eq!(
        api.put("/api/vhosts/temp", json!({})).status,
        201,
        "vhost created"
    );
    let p = "/api/parameters/shovel/temp/s";
    assert_eq!(api.put(p, json!({"value": shovel("a", "b")})).status, 201);
    assert_eq!(api.delete("/api/vhosts/temp"), 204);
    assert_eq!(api.put("/api/vhosts/temp", json!({})).status, 201);
    assert_eq!(api.call("GET", p, None).status, 404);
    assert_eq!(api.get("/api/parameters"), json!([]));
}

#[test]
fn only_policymakers_and_administrators_in_their_vhosts() {
    let (_b, api) = start();
    let p = "/api/parameters/shovel/%2F/s";
    assert_eq!(api.put(p, json!({"value": shovel("a", "b")})).status, 201);
    // No credentials, wrong password: 401.
    assert_eq!(
        api.anonymous().call("GET", "/api/parameters", None).status,
        401
    );
    assert_eq!(
        api.as_user("guest", "wrong").call("GET", p, None).status,
        401
    );
    // Users with other management tags: 403, even to read.
    for tag in ["management", "monitoring"] {
        let user = format!("{tag}-user");
        let r = api.put(
            &format!("/api/users/{user}"),
            json!({"password": "pw", "tags": tag}),
        );
        assert_eq!(r.status, 201);
        let r = api.put(
            &format!("/api/permissions/%2F/{user}"),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        );
        assert_eq!(r.status, 201);
        let who = api.as_user(&user, "pw");
        assert_eq!(who.call("GET", "/api/parameters", None).status, 403);
        assert_eq!(who.call("GET", p, None).status, 403);
        assert_eq!(who.put(p, json!({"value": shovel("a", "c")})).status, 403);
        assert_eq!(who.delete(p), 403);
    }
    // A policymaker without permissions in the vhost: 403, and lists
    // leave that vhost out.
    assert_eq!(
        api.put(
            "/api/users/pm",
            json!({"password": "pw", "tags": "policymaker"})
        )
        .status,
        201
    );
    assert_eq!(api.put("/api/vhosts/pmv", json!({})).status, 201);
    let pm = api.as_user("pm", "pw");
    assert_eq!(pm.call("GET", p, None).status, 403);
    assert_eq!(pm.put(p, json!({"value": shovel("a", "c")})).status, 403);
    assert_eq!(pm.delete(p), 403);
    assert_eq!(
        pm.call("GET", "/api/parameters/shovel/%2F", None).status,
        403
    );
    assert_eq!(pm.get("/api/parameters"), json!([]));
    // With permissions in its own vhost it manages the parameters there.
    let r = api.put(
        "/api/permissions/pmv/pm",
        json!({"configure": ".*", "write": ".*", "read": ".*"}),
    );
    assert_eq!(r.status, 201);
    let mine = "/api/parameters/federation-upstream/pmv/up";
    assert_eq!(pm.put(mine, json!({"value": upstream()})).status, 201);
    assert_eq!(pm.get(mine)["value"], upstream());
    let listed = pm.get("/api/parameters");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["vhost"], "pmv");
    // A URI without a host is this broker: only vhosts the user may use.
    let local = json!({"src-uri": "amqp:///pmv", "src-queue": "a",
                       "dest-uri": "amqp://", "dest-queue": "b"});
    assert_invalid(
        &pm.put(
            "/api/parameters/shovel/pmv/steal",
            json!({ "value": local }),
        ),
        "user \"pm\" may not connect to vhost \"/\"",
    );
    assert_invalid(
        &api.put(
            "/api/parameters/shovel/%2F/nowhere",
            json!({"value": {"src-uri": "amqp:///no-such-vhost", "src-queue": "a",
                             "dest-uri": "amqp://127.0.0.1:1"}}),
        ),
        "user \"guest\" may not connect to vhost \"no-such-vhost\"",
    );
    assert_eq!(pm.delete(mine), 204);
    // The administrator sees and changes everything.
    assert_eq!(api.get("/api/parameters").as_array().unwrap().len(), 1);
    assert_eq!(api.delete(p), 204);
}

#[test]
fn parameters_survive_a_restart() {
    let (mut b, api) = start();
    let s = "/api/parameters/shovel/%2F/durable";
    let u = "/api/parameters/federation-upstream/%2F/origin";
    let gone = "/api/parameters/shovel/%2F/gone";
    assert_eq!(api.put(s, json!({"value": shovel("a", "b")})).status, 201);
    assert_eq!(api.put(s, json!({"value": shovel("a", "c")})).status, 204);
    assert_eq!(api.put(u, json!({"value": upstream()})).status, 201);
    assert_eq!(
        api.put(gone, json!({"value": shovel("x", "y")})).status,
        201
    );
    assert_eq!(api.delete(gone), 204);
    {
        let _ports = ports();
        b.restart();
    }
    let api = Api::new(&b);
    assert_eq!(api.get(s)["value"], shovel("a", "c"));
    assert_eq!(api.get(u)["value"], upstream());
    assert_eq!(api.call("GET", gone, None).status, 404);
    assert_eq!(api.get("/api/parameters").as_array().unwrap().len(), 2);
}

#[test]
fn definitions_export_and_import_carry_parameters() {
    let (_b, api) = start();
    assert_eq!(api.put("/api/vhosts/defs", json!({})).status, 201);
    let s = "/api/parameters/shovel/defs/s";
    let u = "/api/parameters/federation-upstream/defs/u";
    let set = "/api/parameters/federation-upstream-set/%2F/set";
    assert_eq!(api.put(s, json!({"value": shovel("a", "b")})).status, 201);
    assert_eq!(api.put(u, json!({"value": upstream()})).status, 201);
    let members = json!([{"upstream": "u"}]);
    assert_eq!(api.put(set, json!({"value": members})).status, 201);
    let out = api.get("/api/definitions");
    let params = out["parameters"].as_array().unwrap();
    assert!(
        params.contains(&json!({"vhost": "defs", "component": "shovel", "name": "s",
                                    "value": shovel("a", "b")}))
    );
    assert!(
        params.contains(&json!({"vhost": "defs", "component": "federation-upstream",
                                    "name": "u", "value": upstream()}))
    );
    assert!(params.contains(
        &json!({"vhost": "/", "component": "federation-upstream-set",
                                    "name": "set", "value": members})
    ));
    // Per vhost: that vhost's, without the vhost field.
    let one = api.get("/api/definitions/defs");
    let mut in_one: Vec<&str> = one["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p.get("vhost").is_none(), "{p}");
            p["name"].as_str().unwrap()
        })
        .collect();
    in_one.sort_unstable();
    assert_eq!(in_one, vec!["s", "u"]);
    // Gone, then imported back from the export.
    for p in [s, u, set] {
        assert_eq!(api.delete(p), 204);
    }
    assert_eq!(api.get("/api/parameters"), json!([]));
    let r = api.call("POST", "/api/definitions", Some(&out));
    assert!(r.status / 100 == 2, "{} {}", r.status, r.text());
    assert_eq!(api.get(s)["value"], shovel("a", "b"));
    assert_eq!(api.get(u)["value"], upstream());
    assert_eq!(api.get(set)["value"], members);
    // The per-vhost export goes into another vhost.
    assert_eq!(api.put("/api/vhosts/copy", json!({})).status, 201);
    let r = api.call("POST", "/api/definitions/copy", Some(&one));
    assert!(r.status / 100 == 2, "{} {}", r.status, r.text());
    assert_eq!(
        api.get("/api/parameters/shovel/copy/s")["value"],
        shovel("a", "b")
    );
    // A bad one in an import is an error; the rest is applied.
    let bad = json!({"parameters": [
        {"vhost": "/", "component": "shovel", "name": "broken",
         "value": {"src-uri": "amqp://127.0.0.1:1", "src-queue": "a"}},
        {"vhost": "/", "component": "federation-upstream", "name": "fine",
         "value": upstream()}
    ]});
    let r = api.call("POST", "/api/definitions", Some(&bad));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("broken"), "{}", r.text());
    assert_eq!(
        api.call("GET", "/api/parameters/shovel/%2F/broken", None)
            .status,
        404
    );
    assert_eq!(
        api.get("/api/parameters/federation-upstream/%2F/fine")["value"],
        upstream()
    );
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl(port: u16, args: &[&str]) -> Out {
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

fn ctl_ok(port: u16, args: &[&str]) -> Out {
    let o = ctl(port, args);
    assert_eq!(o.code, 0, "ctl {args:?}: {}{}", o.stdout, o.stderr);
    o
}

/// `warren ctl set_parameter` / `list_parameters` / `clear_parameter` with
/// rabbitmqctl's arguments, messages and table.
#[test]
fn ctl_sets_lists_and_clears_parameters() {
    let (_b, api) = start();
    let port = api.addr.port();
    let value = r#"{"src-uri": "amqp://127.0.0.1:1", "src-queue": "jobs", "dest-uri": "amqp://127.0.0.1:1", "dest-exchange": "x"}"#;
    let o = ctl_ok(port, &["set_parameter", "shovel", "my-shovel", value]);
    assert!(
        o.stderr.contains(&format!(
            "Setting runtime parameter \"my-shovel\" for component \"shovel\" to \"{value}\" in vhost \"/\" ..."
        )),
        "{}",
        o.stderr
    );
    assert_eq!(
        api.get("/api/parameters/shovel/%2F/my-shovel")["value"]["dest-exchange"],
        "x"
    );
    ctl_ok(port, &["add_vhost", "up"]);
    ctl_ok(
        port,
        &[
            "set_parameter",
            "-p",
            "up",
            "federation-upstream",
            "origin",
            r#"{"uri": "amqp://127.0.0.1:1", "max-hops": 1}"#,
        ],
    );
    ctl_ok(
        port,
        &[
            "set_parameter",
            "federation-upstream-set",
            "everything",
            r#"[{"upstream": "origin"}]"#,
        ],
    );
    // The vhost's parameters, as rabbitmqctl prints them.
    let o = ctl_ok(port, &["list_parameters"]);
    assert_eq!(
        o.stdout,
        "component\tname\tvalue\n\
         federation-upstream-set\teverything\t[{\"upstream\":\"origin\"}]\n\
         shovel\tmy-shovel\t{\"dest-exchange\":\"x\",\"dest-uri\":\"amqp://127.0.0.1:1\",\
         \"src-queue\":\"jobs\",\"src-uri\":\"amqp://127.0.0.1:1\"}\n"
    );
    assert!(
        o.stderr
            .contains("Listing runtime parameters for vhost \"/\" ..."),
        "{}",
        o.stderr
    );
    assert_eq!(
        ctl_ok(
            port,
            &["-q", "--no-table-headers", "-p", "up", "list_parameters"]
        )
        .stdout,
        "federation-upstream\torigin\t{\"max-hops\":1,\"uri\":\"amqp://127.0.0.1:1\"}\n"
    );
    let json_out = ctl_ok(port, &["-q", "--json", "-p", "up", "list_parameters"]).stdout;
    let rows: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(rows[0]["component"], "federation-upstream");
    assert_eq!(rows[0]["name"], "origin");
    // Refusals: the broker's reason (exit 70), bad JSON (64), a vhost
    // that does not exist (69).
    let bad = ctl(
        port,
        &[
            "set_parameter",
            "shovel",
            "bad",
            r#"{"src-uri": "amqp://127.0.0.1:1", "src-queue": "a", "ack-mode": "maybe"}"#,
        ],
    );
    assert_eq!(bad.code, 70, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("Validation failed\n\n")
            && bad.stderr.contains("Key \"dest-uri\" not found in bad")
            && bad.stderr.contains("ack-mode should be one of"),
        "{}",
        bad.stderr
    );
    let bad = ctl(port, &["set_parameter", "shovel", "bad", "{not json"]);
    assert_eq!(bad.code, 64, "{}", bad.stderr);
    let bad = ctl(
        port,
        &["set_parameter", "-p", "nowhere", "shovel", "s", value],
    );
    assert_eq!(bad.code, 69, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("virtual host 'nowhere' does not exist"),
        "{}",
        bad.stderr
    );
    let bad = ctl(port, &["-p", "nowhere", "list_parameters"]);
    assert_eq!(bad.code, 69, "{}", bad.stderr);
    let bad = ctl(port, &["set_parameter", "shovel", "only-a-name"]);
    assert_eq!(bad.code, 64, "{}", bad.stderr);
    // Cleared; clearing again is an error, as in rabbitmqctl.
    let o = ctl_ok(port, &["clear_parameter", "shovel", "my-shovel"]);
    assert!(
        o.stderr.contains(
            "Clearing runtime parameter \"my-shovel\" for component \"shovel\" on vhost \"/\" ..."
        ),
        "{}",
        o.stderr
    );
    let again = ctl(port, &["clear_parameter", "shovel", "my-shovel"]);
    assert_eq!(again.code, 70, "{}", again.stderr);
    assert!(
        again.stderr.contains("Parameter does not exist"),
        "{}",
        again.stderr
    );
    ctl_ok(
        port,
        &["clear_parameter", "federation-upstream-set", "everything"],
    );
    assert_eq!(
        ctl_ok(port, &["-q", "list_parameters"]).stdout,
        "component\tname\tvalue\n"
    );
    assert_eq!(api.get("/api/parameters").as_array().unwrap().len(), 1);
}
