//! The routes: `(method, path, body, credentials)` → `(status, headers,
//! body)`, against `&mut Core`. JSON shapes and status codes follow
//! RabbitMQ 3.10's management plugin (checked against a running RabbitMQ),
//! so rabbitmqadmin and monitoring tools read them unchanged.
//!
//! Access: HTTP basic auth against the broker's users. `administrator` may
//! do everything; `management`, `policymaker` and `monitoring` may only
//! read (GET), and not users, permissions, definitions or parameters (nodes:
//! monitoring only), as in RabbitMQ. Missing or wrong credentials: 401 with
//! a `WWW-Authenticate` challenge; a user without the needed tag: 403
//! (RabbitMQ answers 401 there too).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::definitions::{self, builtin_exchange, user_json, COMPAT_VERSION};
use super::json::{
    get_bool, get_int, get_str, json_to_properties, list_bytes, parse_query, percent_decode,
    percent_encode, rate, select_object_columns, table_to_json,
};
use super::ops::AckMode;
use super::stats::{fd_total, fd_used, per_sec, rss_bytes, GlobalSample, Mgmt, QueueSample};
use super::{Request, Response};
use crate::amqp::Core;
use crate::amqp::{ConnState, Connection};
use crate::broker::auth::{base64_decode, base64_encode};
use crate::broker::exchange::{Dest, Exchange};
use crate::broker::message::Message;
use crate::broker::queue::Queue;
use crate::broker::ConnId;
use crate::codec::{ContentHeader, Error, FieldTable, ReplyCode};

/// Tags that may use the management API at all.
const MGMT_TAGS: [&str; 4] = ["administrator", "management", "policymaker", "monitoring"];

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A field of a JSON object (null if absent).
fn at<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&Value::Null)
}

/// A list response rendered item by item (see [`list_bytes`]).
fn list_with<T>(query: &[(String, String)], items: &[T], render: impl Fn(&T) -> Value) -> Response {
    match list_bytes(items, render, query) {
        Ok(body) => Response {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body,
        },
        Err(e) => bad_request(e),
    }
}

fn ok(v: Value) -> Response {
    Response::json(200, &v)
}

fn not_found() -> Response {
    Response::json(
        404,
        &json!({"error": "Object Not Found", "reason": "Not Found"}),
    )
}

fn bad_request(reason: impl Into<String>) -> Response {
    Response::json(
        400,
        &json!({"error": "bad_request", "reason": reason.into()}),
    )
}

fn unauthorized(reason: &str) -> Response {
    let mut r = Response::json(401, &json!({"error": "not_authorized", "reason": reason}));
    r.headers.push((
        "www-authenticate",
        "Basic realm=\"RabbitMQ Management\"".into(),
    ));
    r
}

fn forbidden(reason: &str) -> Response {
    Response::json(403, &json!({"error": "not_authorised", "reason": reason}))
}

fn from_amqp(e: &Error) -> Response {
    if e.code == ReplyCode::NOT_FOUND {
        not_found()
    } else {
        bad_request(e.text.to_string())
    }
}

/// 201 for a created object, 204 for an updated one.
fn created_or_updated(created: bool) -> Response {
    Response::empty(if created { 201 } else { 204 })
}

/// The request body as JSON (empty: `{}`).
fn body_json(req: &Request) -> Result<Value, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(&req.body).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

/// The request's context for the handlers.
struct Ctx<'a> {
    core: &'a mut Core,
    mgmt: &'a mut Mgmt,
    now: Instant,
    query: Vec<(String, String)>,
    req: &'a Request,
    user: String,
    tags: Vec<String>,
}

impl Ctx<'_> {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(q, _)| q == k)
            .map(|(_, v)| v.as_str())
    }

    fn list(&self, items: Vec<Value>) -> Response {
        list_with(&self.query, &items, Value::clone)
    }

    fn object(&self, v: Value) -> Response {
        ok(select_object_columns(v, &self.query))
    }

    fn vhost_exists(&self, v: &str) -> bool {
        self.core.engine.broker.vhost(v.as_bytes()).is_some()
    }
}

/// Serve one request.
pub fn handle(req: &Request, core: &mut Core, mgmt: &mut Mgmt, now: Instant) -> Response {
    // Empty segments inside the path are names too: `/api/exchanges/%2F//publish`
    // is the default exchange (as RabbitMQ reads it). One trailing slash is
    // ignored.
    let path = req.path.strip_prefix('/').unwrap_or(&req.path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let segs: Vec<String> = path.split('/').map(|s| percent_decode(s, false)).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        // Kept here for warren's earlier users; RabbitMQ serves these on
        // the Prometheus port only.
        ["metrics", ..] => return super::metrics::handle(req, core, mgmt, now),
        ["api", ..] => {}
        _ => return not_found(),
    }
    let rest = segs.get(1..).unwrap_or(&[]);
    let Some((user, pass)) = &req.auth else {
        return unauthorized("Login failed");
    };
    let Some(u) = core
        .engine
        .broker
        .auth
        .login(user.as_bytes(), pass.as_bytes())
    else {
        return unauthorized("Login failed");
    };
    if core.engine.config.loopback_users.iter().any(|l| l == user)
        && !req.peer.ip().to_canonical().is_loopback()
    {
        return unauthorized("User can only log in via localhost");
    }
    let tags = u.tags.clone();
    let has = |t: &str| tags.iter().any(|x| x == t);
    if !MGMT_TAGS.iter().any(|t| has(t)) {
        return forbidden("Not management user");
    }
    let admin = has("administrator");
    // As RabbitMQ: users, permissions, definitions and parameters are for
    // administrators only, even to read; nodes need monitoring.
    let admin_only = matches!(
        rest.first().copied(),
        Some(
            "users"
                | "permissions"
                | "definitions"
                | "parameters"
                | "global-parameters"
                | "topic-permissions"
                | "user-limits"
        )
    ) || matches!(rest, [_, _, "permissions"] | [_, _, "topic-permissions"]);
    if (req.method != "GET" || admin_only) && !admin {
        return forbidden("Not administrator user");
    }
    if rest.first() == Some(&"nodes") && !admin && !has("monitoring") {
        return forbidden("Not monitor user");
    }
    core.engine.advance(now);
    let mut ctx = Ctx {
        core,
        mgmt,
        now,
        query: parse_query(&req.query),
        req,
        user: user.clone(),
        tags,
    };
    route(&mut ctx, req.method.as_str(), rest)
}

fn route(c: &mut Ctx<'_>, method: &str, p: &[&str]) -> Response {
    match (method, p) {
        ("GET", ["overview"]) => {
            let v = overview(c.core, c.mgmt, c.now);
            c.object(v)
        }
        ("GET", ["whoami"]) => ok(json!({"name": c.user, "tags": c.tags})),
        ("GET", ["nodes"]) => {
            let n = node(c.core, c.mgmt, c.now);
            c.list(vec![n])
        }
        ("GET", ["nodes", name]) if *name == c.mgmt.node => {
            let n = node(c.core, c.mgmt, c.now);
            c.object(n)
        }
        ("GET", ["connections"]) => c.list(connections(c.core, c.mgmt, c.now, None)),
        ("GET", ["vhosts", v, "connections"]) => {
            if !c.vhost_exists(v) {
                return not_found();
            }
            c.list(connections(c.core, c.mgmt, c.now, Some(v)))
        }
        ("GET", ["connections", name]) => {
            match connections(c.core, c.mgmt, c.now, None)
                .into_iter()
                .find(|x| *at(x, "name") == *name)
            {
                Some(v) => c.object(v),
                None => not_found(),
            }
        }
        ("DELETE", ["connections", name]) => close_connection(c, name),
        ("GET", ["connections", name, "channels"]) => {
            let chans = channels(c.core, c.mgmt, None)
                .into_iter()
                .filter(|x| *at(at(x, "connection_details"), "name") == *name)
                .collect();
            c.list(chans)
        }
        ("GET", ["channels"]) => c.list(channels(c.core, c.mgmt, None)),
        ("GET", ["vhosts", v, "channels"]) => {
            if !c.vhost_exists(v) {
                return not_found();
            }
            c.list(channels(c.core, c.mgmt, Some(v)))
        }
        ("GET", ["channels", name]) => {
            match channels(c.core, c.mgmt, None)
                .into_iter()
                .find(|x| *at(x, "name") == *name)
            {
                Some(v) => c.object(v),
                None => not_found(),
            }
        }
        ("GET", ["consumers"]) => c.list(consumers(c.core, c.mgmt, None)),
        ("GET", ["consumers", v]) => {
            if !c.vhost_exists(v) {
                return not_found();
            }
            c.list(consumers(c.core, c.mgmt, Some(v)))
        }
        ("GET", ["exchanges"]) => c.list(exchanges(c.core, None)),
        ("GET", ["exchanges", v]) => {
            if !c.vhost_exists(v) {
                return not_found();
            }
            c.list(exchanges(c.core, Some(v)))
        }
        ("GET", ["exchanges", v, x]) => {
            let x = exchange_name(x);
            match c
                .core
                .engine
                .broker
                .vhost(v.as_bytes())
                .and_then(|vh| vh.exchanges.get(x.as_bytes()))
            {
                Some(e) => {
                    let v = exchange_json(v, e);
                    c.object(v)
                }
                None => not_found(),
            }
        }
        ("PUT", ["exchanges", v, x]) => put_exchange(c, v, x),
        ("DELETE", ["exchanges", v, x]) => delete_exchange(c, v, x),
        ("GET", ["exchanges", v, x, "bindings", dir @ ("source" | "destination")]) => {
            let x = exchange_name(x);
            if !c.vhost_exists(v) {
                return not_found();
            }
            let list = bindings(c.core, Some(v))
                .into_iter()
                .filter(|b| {
                    if *dir == "source" {
                        *at(b, "source") == *x
                    } else {
                        *at(b, "destination") == *x && *at(b, "destination_type") == "exchange"
                    }
                })
                .collect();
            c.list(list)
        }
        ("POST", ["exchanges", v, x, "publish"]) => publish(c, v, x),
        ("GET", ["queues"]) => {
            let qs = sorted_queues(c.core, None);
            list_with(&c.query, &qs, |q| {
                queue_json(c.core, c.mgmt, q, c.now, false)
            })
        }
        ("GET", ["queues", v]) => {
            if !c.vhost_exists(v) {
                return not_found();
            }
            let qs = sorted_queues(c.core, Some(v));
            list_with(&c.query, &qs, |q| {
                queue_json(c.core, c.mgmt, q, c.now, false)
            })
        }
        ("GET", ["queues", v, name]) => match c.core.api_queue(v.as_bytes(), name.as_bytes()) {
            Some(id) => match c.core.engine.broker.queue(id) {
                Some(q) => {
                    let v = queue_json(c.core, c.mgmt, q, c.now, true);
                    c.object(v)
                }
                None => not_found(),
            },
            None => not_found(),
        },
        ("PUT", ["queues", v, name]) => put_queue(c, v, name),
        ("DELETE", ["queues", v, name]) => delete_queue(c, v, name),
        ("DELETE", ["queues", v, name, "contents"]) => {
            match c.core.api_queue(v.as_bytes(), name.as_bytes()) {
                Some(id) => {
                    c.core.api_purge(id);
                    Response::empty(204)
                }
                None => not_found(),
            }
        }
        ("POST", ["queues", v, name, "get"]) => get_messages(c, v, name),
        ("GET", ["queues", v, name, "bindings"]) => {
            if c.core.api_queue(v.as_bytes(), name.as_bytes()).is_none() {
                return not_found();
            }
            let list = bindings(c.core, Some(v))
                .into_iter()
                .filter(|b| *at(b, "destination") == *name && *at(b, "destination_type") == "queue")
                .collect();
            c.list(list)
        }
        ("GET", ["bindings"]) => c.list(bindings(c.core, None)),
        ("GET", ["bindings", v]) => {
            if !c.vhost_exists(v) {
                return not_found();
            }
            c.list(bindings(c.core, Some(v)))
        }
        ("GET", ["bindings", v, "e", src, t @ ("q" | "e"), dest]) => {
            let Some(list) = bindings_between(c.core, v, src, t, dest) else {
                return not_found();
            };
            c.list(list)
        }
        ("POST", ["bindings", v, "e", src, t @ ("q" | "e"), dest]) => {
            add_binding(c, v, src, t, dest)
        }
        ("GET", ["bindings", v, "e", src, t @ ("q" | "e"), dest, props]) => {
            match bindings_between(c.core, v, src, t, dest)
                .unwrap_or_default()
                .into_iter()
                .find(|b| {
                    at(b, "properties_key")
                        .as_str()
                        .is_some_and(|k| same_key(k, props))
                }) {
                Some(b) => c.object(b),
                None => not_found(),
            }
        }
        ("DELETE", ["bindings", v, "e", src, t @ ("q" | "e"), dest, props]) => {
            delete_binding(c, v, src, t, dest, props)
        }
        ("GET", ["vhosts"]) => c.list(vhosts(c.core, c.mgmt, None)),
        ("GET", ["vhosts", v]) => match vhosts(c.core, c.mgmt, Some(v)).into_iter().next() {
            Some(x) => c.object(x),
            None => not_found(),
        },
        ("PUT", ["vhosts", v]) => {
            if let Err(r) = body_json(c.req) {
                return r;
            }
            let existed = c.vhost_exists(v);
            c.core.engine.add_vhost(v);
            if !existed {
                // As RabbitMQ: the creator gets full permissions on it.
                let user = c.user.clone();
                if let Err(e) = c.core.engine.set_permissions(&user, v, ".*", ".*", ".*") {
                    log::warn!("vhost '{v}': cannot grant permissions to {user}: {e}");
                }
            }
            created_or_updated(!existed)
        }
        ("DELETE", ["vhosts", v]) => {
            if c.core.delete_vhost(v, c.now) {
                Response::empty(204)
            } else {
                not_found()
            }
        }
        ("GET", ["vhosts", v, "permissions"]) => {
            if !c.vhost_exists(v) {
                return not_found();
            }
            c.list(permissions(c.core, |_, vh| vh == *v))
        }
        ("GET", ["users"]) => {
            let list = c
                .core
                .engine
                .broker
                .auth
                .users
                .values()
                .map(user_json)
                .collect();
            c.list(list)
        }
        ("GET", ["users", u]) => match c.core.engine.broker.auth.users.get(*u) {
            Some(user) => {
                let v = user_json(user);
                c.object(v)
            }
            None => not_found(),
        },
        ("PUT", ["users", u]) => {
            let body = match body_json(c.req) {
                Ok(b) => b,
                Err(r) => return r,
            };
            match definitions::put_user(&mut c.core.engine, u, &body) {
                Ok(created) => created_or_updated(created),
                Err(e) => bad_request(e),
            }
        }
        ("DELETE", ["users", u]) => {
            if c.core.delete_user(u, c.now) {
                Response::empty(204)
            } else {
                not_found()
            }
        }
        ("GET", ["users", u, "permissions"]) => {
            if !c.core.engine.broker.auth.users.contains_key(*u) {
                return not_found();
            }
            c.list(permissions(c.core, |user, _| user == *u))
        }
        ("GET", ["permissions"]) => c.list(permissions(c.core, |_, _| true)),
        ("GET", ["permissions", v, u]) => {
            match permissions(c.core, |user, vh| user == *u && vh == *v)
                .into_iter()
                .next()
            {
                Some(p) => c.object(p),
                None => not_found(),
            }
        }
        ("PUT", ["permissions", v, u]) => {
            let body = match body_json(c.req) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let existed = c.core.engine.broker.auth.permission(u, v).is_some();
            let s = |k: &str| get_str(&body, k).unwrap_or("").to_string();
            match c
                .core
                .engine
                .set_permissions(u, v, &s("configure"), &s("write"), &s("read"))
            {
                Ok(()) => created_or_updated(!existed),
                Err(e) => bad_request(e),
            }
        }
        ("DELETE", ["permissions", v, u]) => {
            if c.core.engine.clear_permissions(u, v) {
                Response::empty(204)
            } else {
                not_found()
            }
        }
        ("GET", ["topic-permissions"]) => c.list(topic_permissions(c.core, |_, _| true)),
        ("GET", ["vhosts", v, "topic-permissions"]) => {
            if !c.vhost_exists(v) {
                return not_found();
            }
            c.list(topic_permissions(c.core, |_, vh| vh == *v))
        }
        ("GET", ["users", u, "topic-permissions"]) => {
            if !c.core.engine.broker.auth.users.contains_key(*u) {
                return not_found();
            }
            c.list(topic_permissions(c.core, |user, _| user == *u))
        }
        ("GET", ["topic-permissions", v, u]) => {
            if !c.vhost_exists(v) || !c.core.engine.broker.auth.users.contains_key(*u) {
                return not_found();
            }
            c.list(topic_permissions(c.core, |user, vh| user == *u && vh == *v))
        }
        ("PUT", ["topic-permissions", v, u]) => {
            let body = match body_json(c.req) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(x) = get_str(&body, "exchange") else {
                return bad_request(String::from("key_missing: exchange"));
            };
            let key = (u.to_string(), v.to_string(), x.to_string());
            let existed = c
                .core
                .engine
                .broker
                .auth
                .topic_permissions
                .contains_key(&key);
            let s = |k: &str| get_str(&body, k).unwrap_or("").to_string();
            match c
                .core
                .engine
                .set_topic_permissions(u, v, x, &s("write"), &s("read"))
            {
                Ok(()) => created_or_updated(!existed),
                Err(e) => bad_request(e),
            }
        }
        ("DELETE", ["topic-permissions", v, u]) => {
            let exchange = c.q("exchange").map(str::to_string);
            if c.core
                .engine
                .clear_topic_permissions(u, v, exchange.as_deref())
            {
                Response::empty(204)
            } else {
                not_found()
            }
        }
        ("GET", ["definitions"]) => match definitions::export(&c.core.engine, None) {
            Some(d) => ok(d),
            None => not_found(),
        },
        ("GET", ["definitions", v]) => match definitions::export(&c.core.engine, Some(v)) {
            Some(d) => ok(d),
            None => not_found(),
        },
        ("POST", ["definitions"]) => import(c, None),
        ("POST", ["definitions", v]) => import(c, Some(v)),
        (
            "GET",
            ["policies", ..]
            | ["operator-policies", ..]
            | ["parameters", ..]
            | ["global-parameters", ..]
            | ["vhost-limits", ..]
            | ["user-limits", ..]
            | ["extensions"]
            | ["feature-flags"],
        ) => ok(json!([])),
        ("GET", ["aliveness-test", v]) => aliveness(c, v),
        ("GET", ["healthchecks", "node", ..]) => ok(json!({"status": "ok"})),
        // Running out of file descriptors is reported like a resource
        // alarm (RabbitMQ has none for it): nothing can connect meanwhile.
        ("GET", ["health", "checks", "alarms" | "local-alarms"]) => {
            if c.core.engine.alarms.blocked {
                Response::json(
                    503,
                    &json!({"status": "failed", "reason": "resource alarm(s) in effect"}),
                )
            } else if let Some(e) = &c.mgmt.accept_error {
                Response::json(
                    503,
                    &json!({"status": "failed", "reason": format!("AMQP listeners cannot accept connections: {e}")}),
                )
            } else {
                ok(json!({"status": "ok"}))
            }
        }
        ("GET", ["health", "checks", "port-listener", port]) => {
            let amqp = c
                .mgmt
                .amqp_addrs
                .iter()
                .any(|a| a.port().to_string() == *port);
            let listening = amqp
                || c.mgmt
                    .http_addr
                    .is_some_and(|a| a.port().to_string() == *port);
            match &c.mgmt.accept_error {
                Some(e) if amqp => Response::json(
                    503,
                    &json!({"status": "failed", "reason": format!("Listener on port {port} cannot accept connections: {e}")}),
                ),
                _ if listening => ok(json!({"status": "ok", "port": port})),
                _ => Response::json(
                    503,
                    &json!({"status": "failed", "reason": format!("No active listener on port {port}")}),
                ),
            }
        }
        ("GET", ["health", "checks", "protocol-listener", proto])
            if matches!(*proto, "amqp" | "amqp091" | "amqp0-9-1" | "amqp0.9.1") =>
        {
            match &c.mgmt.accept_error {
                Some(e) => Response::json(
                    503,
                    &json!({"status": "failed", "reason": format!("Listener for protocol {proto} cannot accept connections: {e}")}),
                ),
                None => ok(json!({"status": "ok", "protocol": proto})),
            }
        }
        ("GET", ["health", "checks", ..]) => ok(json!({"status": "ok"})),
        ("GET", _) => not_found(),
        _ => Response::json(
            405,
            &json!({"error": "method_not_allowed", "reason": "Method Not Allowed"}),
        ),
    }
}

// ---------------------------------------------------------------------------
// Rendering

fn details(now: u64, old: u64, dt: Duration) -> Value {
    rate(per_sec(now, old, dt))
}

/// Name of a connection as RabbitMQ shows it: `peer -> local`.
pub fn conn_name(c: &Connection) -> String {
    match c.local {
        Some(l) => format!("{} -> {}", c.peer, l),
        None => c.peer.to_string(),
    }
}

fn conn_state(core: &Core, c: &Connection) -> &'static str {
    match c.state {
        ConnState::Header | ConnState::StartOk | ConnState::TuneOk | ConnState::Open => "starting",
        ConnState::Running if core.engine.alarms.blocked && c.published => "blocked",
        ConnState::Running => "running",
        ConnState::Closing => "closing",
        ConnState::Dead => "closed",
    }
}

fn live_conns(core: &Core) -> impl Iterator<Item = &Connection> {
    core.conns
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.state != ConnState::Dead)
}

fn connections(core: &Core, mgmt: &Mgmt, now: Instant, vhost: Option<&str>) -> Vec<Value> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for c in live_conns(core) {
        if vhost.is_some_and(|v| c.vhost != v.as_bytes()) {
            continue;
        }
        let name = conn_name(c);
        let ((r0, s0), dt) = mgmt
            .conn_base(c.id, now)
            .unwrap_or(((c.recv_oct, c.send_oct), Duration::ZERO));
        let local = c.local.or_else(|| mgmt.amqp_addrs.first().copied());
        let age = core
            .engine
            .clock
            .now
            .saturating_duration_since(c.accepted_at)
            .as_millis() as u64;
        let user = lossy(&c.user);
        let v = json!({
            "name": name,
            "node": mgmt.node,
            "vhost": lossy(&c.vhost),
            "user": user,
            "user_who_performed_action": user,
            "state": conn_state(core, c),
            "channels": c.channels.len(),
            "channel_max": c.channel_max,
            "frame_max": c.frame_max,
            "timeout": c.heartbeat,
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
            "host": local.map(|a| a.ip().to_string()),
            "port": local.map(|a| a.port()),
            "protocol": "AMQP 0-9-1",
            "type": "network",
            "auth_mechanism": "PLAIN",
            "ssl": false,
            "recv_oct": c.recv_oct,
            "recv_oct_details": details(c.recv_oct, r0, dt),
            "send_oct": c.send_oct,
            "send_oct_details": details(c.send_oct, s0, dt),
            "client_properties": table_to_json(&c.client_properties),
            "connected_at": core.engine.wall_ms().saturating_sub(age),
        });
        out.push((name, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, v)| v).collect()
}

fn close_connection(c: &mut Ctx<'_>, name: &str) -> Response {
    let Some(id) = live_conns(c.core)
        .find(|x| conn_name(x) == name)
        .map(|x| x.id)
    else {
        return not_found();
    };
    let reason = c
        .req
        .reason
        .clone()
        .unwrap_or_else(|| "Closed via management plugin".into());
    c.core.close_connection(id, &reason, c.now);
    Response::empty(204)
}

fn channel_details(core: &Core, mgmt: &Mgmt, id: ConnId, ch: u16) -> Value {
    match core.conn(id) {
        Some(c) => {
            let cname = conn_name(c);
            json!({
                "name": format!("{cname} ({ch})"),
                "number": ch,
                "connection_name": cname,
                "peer_host": c.peer.ip().to_string(),
                "peer_port": c.peer.port(),
                "user": lossy(&c.user),
                "node": mgmt.node,
            })
        }
        None => json!({}),
    }
}

fn channels(core: &Core, mgmt: &Mgmt, vhost: Option<&str>) -> Vec<Value> {
    use crate::amqp::channel::{ChanState, TxOp};
    let mut out = Vec::new();
    let mut conns: Vec<&Connection> = live_conns(core)
        .filter(|c| vhost.is_none_or(|v| c.vhost == v.as_bytes()))
        .collect();
    conns.sort_by_key(|c| conn_name(c));
    for c in conns {
        let cname = conn_name(c);
        for ch in c.channels.iter() {
            let (pubs, acks) = ch.tx.as_ref().map_or((0, 0), |ops| {
                let p = ops
                    .iter()
                    .filter(|o| matches!(o, TxOp::Publish(..)))
                    .count();
                (p, ops.len() - p)
            });
            out.push(json!({
                "name": format!("{cname} ({})", ch.id),
                "number": ch.id,
                "node": mgmt.node,
                "user": lossy(&c.user),
                "user_who_performed_action": lossy(&c.user),
                "vhost": lossy(&c.vhost),
                "state": if ch.state == ChanState::Open { "running" } else { "closing" },
                "connection_details": {
                    "name": cname,
                    "peer_host": c.peer.ip().to_string(),
                    "peer_port": c.peer.port(),
                },
                "consumer_count": ch.consumers.len(),
                "messages_unacknowledged": ch.unacked.len(),
                "messages_unconfirmed": if ch.confirm { ch.publish_seq.saturating_sub(ch.confirm_sent) } else { 0 },
                "messages_uncommitted": pubs,
                "acks_uncommitted": acks,
                "prefetch_count": ch.prefetch_count,
                "global_prefetch_count": ch.global_prefetch,
                "confirm": ch.confirm,
                "transactional": ch.tx.is_some(),
            }));
        }
    }
    out
}

fn sorted_queues<'a>(core: &'a Core, vhost: Option<&str>) -> Vec<&'a Queue> {
    let mut qs: Vec<&Queue> = core
        .engine
        .broker
        .queues
        .iter()
        .map(|(_, q)| q)
        .filter(|q| vhost.is_none_or(|v| q.vhost == v.as_bytes()))
        .collect();
    qs.sort_unstable_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    qs
}

fn queue_consumers(core: &Core, mgmt: &Mgmt, q: &Queue) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, (_, r)) in q.consumers.iter().enumerate() {
        let k = core
            .conn(r.conn)
            .and_then(|c| c.channel(r.channel))
            .and_then(|ch| ch.consumers.get(r.slot))
            .filter(|k| k.tag == r.tag);
        let active = !q.args.single_active_consumer || i == 0;
        let mut args = Map::new();
        if r.priority != 0 {
            args.insert("x-priority".into(), json!(r.priority));
        }
        out.push(json!({
            "consumer_tag": lossy(&r.tag),
            "queue": {"name": lossy(&q.name), "vhost": lossy(&q.vhost)},
            "channel_details": channel_details(core, mgmt, r.conn, r.channel),
            "ack_required": k.is_some_and(|k| !k.no_ack),
            "prefetch_count": k.map_or(0, |k| k.prefetch),
            "exclusive": q.exclusive_consumer,
            "arguments": args,
            "active": active,
            "activity_status": if active { "up" } else { "waiting" },
            // RabbitMQ's default delivery acknowledgement timeout (30 min);
            // newer clients expect the field.
            "consumer_timeout": 1_800_000,
        }));
    }
    out
}

fn consumers(core: &Core, mgmt: &Mgmt, vhost: Option<&str>) -> Vec<Value> {
    sorted_queues(core, vhost)
        .into_iter()
        .flat_map(|q| queue_consumers(core, mgmt, q))
        .collect()
}

/// A queue as `/api/queues` shows it; `detail` adds its consumers.
fn queue_json(core: &Core, mgmt: &Mgmt, q: &Queue, now: Instant, detail: bool) -> Value {
    let s = QueueSample::of(q);
    let (b, dt) = mgmt
        .queue_base(q.id, now)
        .map_or((s, Duration::ZERO), |(b, dt)| (*b, dt));
    let stats = counters_json(
        &[
            ("publish", s.publish, b.publish),
            ("deliver", s.deliver, b.deliver),
            ("get", s.get, b.get),
            ("deliver_get", s.deliver + s.get, b.deliver + b.get),
            ("ack", s.ack, b.ack),
            ("redeliver", s.redeliver, b.redeliver),
        ],
        dt,
    );
    let first_tag = q.consumers.first().map(|r| lossy(&r.tag));
    let mut v = json!({
        "name": lossy(&q.name),
        "vhost": lossy(&q.vhost),
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": table_to_json(&q.arguments),
        "node": mgmt.node,
        "type": if q.args.quorum { "quorum" } else { "classic" },
        "state": "running",
        "policy": null,
        "operator_policy": null,
        "effective_policy_definition": {},
        "consumers": q.consumers.len(),
        "exclusive_consumer_tag": if q.exclusive_consumer { first_tag.clone() } else { None },
        "single_active_consumer_tag": if q.args.single_active_consumer { first_tag } else { None },
        "messages": s.messages,
        "messages_details": details(s.messages, b.messages, dt),
        "messages_ready": s.ready,
        "messages_ready_details": details(s.ready, b.ready, dt),
        "messages_unacknowledged": s.unacked,
        "messages_unacknowledged_details": details(s.unacked, b.unacked, dt),
        "message_bytes": q.ready_bytes,
        "message_bytes_ready": q.ready_bytes,
        "memory": 1024 + q.ready.len() as u64 * crate::engine::PER_MESSAGE_OVERHEAD + q.ready_bytes,
        "head_message_timestamp": null,
        "message_stats": stats,
    });
    if let (Some(owner), Some(m)) = (q.exclusive_owner, v.as_object_mut()) {
        if let Some(c) = core.conn(owner) {
            m.insert(
                "owner_pid_details".into(),
                json!({"name": conn_name(c), "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()}),
            );
        }
    }
    if let (true, Some(m)) = (detail, v.as_object_mut()) {
        m.insert(
            "consumer_details".into(),
            Value::Array(queue_consumers(core, mgmt, q)),
        );
        m.insert("deliveries".into(), json!([]));
        m.insert("incoming".into(), json!([]));
    }
    v
}

/// The default exchange is `amq.default` in paths.
fn exchange_name(x: &str) -> &str {
    if x == "amq.default" {
        ""
    } else {
        x
    }
}

fn exchange_json(vhost: &str, x: &Exchange) -> Value {
    json!({
        "name": lossy(&x.name),
        "vhost": vhost,
        "type": x.kind.name(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_to_json(&x.arguments),
        "user_who_performed_action": if builtin_exchange(&x.name) { "rmq-internal" } else { "" },
        "policy": null,
    })
}

fn sorted_vhost_names(core: &Core, vhost: Option<&str>) -> Vec<Bytes> {
    let mut v: Vec<Bytes> = core
        .engine
        .broker
        .vhosts
        .keys()
        .filter(|k| vhost.is_none_or(|o| k.as_ref() == o.as_bytes()))
        .cloned()
        .collect();
    v.sort();
    v
}

fn exchanges(core: &Core, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for vn in sorted_vhost_names(core, vhost) {
        let Some(vh) = core.engine.broker.vhost(&vn) else {
            continue;
        };
        let mut xs: Vec<&Exchange> = vh.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        let vs = lossy(&vn);
        out.extend(xs.into_iter().map(|x| exchange_json(&vs, x)));
    }
    out
}

/// RabbitMQ's `properties_key` of a binding: the percent-encoded routing key
/// (`~` if empty) when there are no arguments, else that, `~` and a hash of
/// them.
pub fn props_key(routing_key: &[u8], args: &FieldTable) -> String {
    let rk = percent_encode(&lossy(routing_key));
    if args.is_empty() {
        return if rk.is_empty() { "~".into() } else { rk };
    }
    let enc = serde_json::to_vec(&table_to_json(args)).unwrap_or_default();
    let digest = Sha256::digest(&enc);
    let h: String = base64_encode(digest.get(..6).unwrap_or(&[]))
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .filter(|c| *c != '=')
        .collect();
    format!("{rk}~{h}")
}

/// Does a properties key from a path match a binding's? Clients pass the
/// listed key either as is or decoded once more (RabbitMQ accepts both).
fn same_key(key: &str, given: &str) -> bool {
    key == given || percent_decode(key, false) == percent_decode(given, false)
}

fn binding_json(
    vhost: &str,
    source: &[u8],
    dest: &str,
    dtype: &str,
    rk: &[u8],
    args: &FieldTable,
) -> Value {
    json!({
        "source": lossy(source),
        "vhost": vhost,
        "destination": dest,
        "destination_type": dtype,
        "routing_key": lossy(rk),
        "arguments": table_to_json(args),
        "properties_key": props_key(rk, args),
    })
}

fn bindings(core: &Core, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for vn in sorted_vhost_names(core, vhost) {
        let Some(vh) = core.engine.broker.vhost(&vn) else {
            continue;
        };
        let vs = lossy(&vn);
        // The default exchange's implicit binding of every queue.
        let mut names: Vec<&Bytes> = vh.queues.keys().collect();
        names.sort();
        for n in names {
            out.push(binding_json(
                &vs,
                b"",
                &lossy(n),
                "queue",
                n,
                &FieldTable::new(),
            ));
        }
        let mut xs: Vec<&Exchange> = vh.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in xs {
            for bd in &x.bindings {
                let (dest, dtype) = match &bd.dest {
                    Dest::Queue(id) => match core.engine.broker.queue(*id) {
                        Some(q) => (lossy(&q.name), "queue"),
                        None => continue,
                    },
                    Dest::Exchange(n) => (lossy(n), "exchange"),
                };
                out.push(binding_json(
                    &vs,
                    &x.name,
                    &dest,
                    dtype,
                    &bd.routing_key,
                    &bd.arguments,
                ));
            }
        }
    }
    out
}

/// Bindings from exchange `src` to queue (`q`) or exchange (`e`) `dest`;
/// None if either end does not exist.
fn bindings_between(core: &Core, v: &str, src: &str, t: &str, dest: &str) -> Option<Vec<Value>> {
    let vh = core.engine.broker.vhost(v.as_bytes())?;
    let src = exchange_name(src);
    vh.exchanges.get(src.as_bytes())?;
    let dtype = if t == "q" {
        core.api_queue(v.as_bytes(), dest.as_bytes())?;
        "queue"
    } else {
        vh.exchanges.get(exchange_name(dest).as_bytes())?;
        "exchange"
    };
    let dest = if t == "e" { exchange_name(dest) } else { dest };
    Some(
        bindings(core, Some(v))
            .into_iter()
            .filter(|b| {
                *at(b, "source") == *src
                    && *at(b, "destination") == *dest
                    && *at(b, "destination_type") == dtype
            })
            .collect(),
    )
}

fn add_binding(c: &mut Ctx<'_>, v: &str, src: &str, t: &str, dest: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if bindings_between(c.core, v, src, t, dest).is_none() {
        return not_found();
    }
    let src = exchange_name(src);
    let dest = if t == "e" { exchange_name(dest) } else { dest };
    match definitions::bind(&mut c.core.engine, v, src, t, dest, &body) {
        Ok(()) => {
            let rk = get_str(&body, "routing_key").unwrap_or("");
            let args = super::json::get_table(&body, "arguments").unwrap_or_default();
            let mut r = Response::empty(201);
            let key = props_key(rk.as_bytes(), &args);
            r.headers
                .push(("location", format!("{}/{key}", percent_encode(dest))));
            r
        }
        Err(e) => bad_request(e),
    }
}

fn delete_binding(
    c: &mut Ctx<'_>,
    v: &str,
    src: &str,
    t: &str,
    dest: &str,
    props: &str,
) -> Response {
    let src = exchange_name(src);
    let dest_name = if t == "e" { exchange_name(dest) } else { dest };
    let d = if t == "q" {
        match c.core.api_queue(v.as_bytes(), dest.as_bytes()) {
            Some(id) => Dest::Queue(id),
            None => return not_found(),
        }
    } else {
        Dest::Exchange(Bytes::from(dest_name.to_string()))
    };
    let found = c
        .core
        .engine
        .broker
        .vhost(v.as_bytes())
        .and_then(|vh| vh.exchanges.get(src.as_bytes()))
        .and_then(|x| {
            x.bindings
                .iter()
                .find(|b| b.dest == d && same_key(&props_key(&b.routing_key, &b.arguments), props))
                .map(|b| (b.routing_key.clone(), b.arguments.clone()))
        });
    let Some((rk, args)) = found else {
        return not_found();
    };
    match c
        .core
        .engine
        .broker
        .unbind(v.as_bytes(), src.as_bytes(), d, rk, args)
    {
        Ok(()) => Response::empty(204),
        Err(e) => from_amqp(&e),
    }
}

fn vhosts(core: &Core, mgmt: &Mgmt, only: Option<&str>) -> Vec<Value> {
    let names = sorted_vhost_names(core, only);
    let mut totals: std::collections::HashMap<&[u8], (u64, u64)> = Default::default();
    for (_, q) in core.engine.broker.queues.iter() {
        let t = totals.entry(&q.vhost[..]).or_default();
        t.0 += q.ready.len() as u64;
        t.1 += q.unacked as u64;
    }
    names
        .iter()
        .map(|n| {
            let (ready, unacked) = totals.get(&n[..]).copied().unwrap_or_default();
            let mut cluster_state = Map::new();
            cluster_state.insert(mgmt.node.clone(), json!("running"));
            json!({
                "name": lossy(n),
                "description": "",
                "tags": [],
                "metadata": {"description": "", "tags": []},
                "default_queue_type": "classic",
                "tracing": false,
                "cluster_state": cluster_state,
                "messages": ready + unacked,
                "messages_ready": ready,
                "messages_unacknowledged": unacked,
            })
        })
        .collect()
}

fn topic_permissions(core: &Core, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    core.engine
        .broker
        .auth
        .topic_permissions
        .iter()
        .filter(|((u, v, _), _)| keep(u, v))
        .map(|(k, p)| definitions::topic_permission_json(k, p))
        .collect()
}

fn permissions(core: &Core, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    core.engine.broker
        .auth
        .permissions
        .iter()
        .filter(|((u, v), _)| keep(u, v))
        .map(|((u, v), p)| {
            json!({"user": u, "vhost": v, "configure": p.configure, "write": p.write, "read": p.read})
        })
        .collect()
}

fn message_stats(cur: &GlobalSample, base: &GlobalSample, dt: Duration) -> Value {
    let (c, b) = (&cur.counters, &base.counters);
    counters_json(
        &[
            ("publish", c.publish, b.publish),
            ("deliver", c.deliver, b.deliver),
            ("get", c.get, b.get),
            ("deliver_get", c.deliver + c.get, b.deliver + b.get),
            ("ack", c.ack, b.ack),
            ("redeliver", c.redeliver, b.redeliver),
            ("drop_unroutable", c.drop_unroutable, b.drop_unroutable),
            (
                "return_unroutable",
                c.return_unroutable,
                b.return_unroutable,
            ),
        ],
        dt,
    )
}

/// RabbitMQ's message_stats shape: for each (name, now, at the rate base),
/// `name` with the count and `name_details` with its rate.
fn counters_json(fields: &[(&str, u64, u64)], dt: Duration) -> Value {
    let mut m = serde_json::Map::new();
    for &(name, now, then) in fields {
        m.insert(name.to_string(), now.into());
        m.insert(format!("{name}_details"), details(now, then, dt));
    }
    Value::Object(m)
}

fn exchange_types() -> Value {
    json!([
        {"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": true},
        {"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": true},
        {"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": true},
        {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": true},
    ])
}

fn overview(core: &Core, mgmt: &Mgmt, now: Instant) -> Value {
    let cur = GlobalSample::of(core);
    let (base, dt) = mgmt
        .global_base(now)
        .map_or((cur, Duration::ZERO), |(b, dt)| (*b, dt));
    let channels: usize = live_conns(core).map(|c| c.channels.len()).sum();
    let consumers = core.engine.broker.consumer_count();
    let exchanges: usize = core
        .engine
        .broker
        .vhosts
        .values()
        .map(|v| v.exchanges.len())
        .sum();
    let mut listeners: Vec<Value> = mgmt
        .amqp_addrs
        .iter()
        .map(|a| json!({"node": mgmt.node, "protocol": "amqp", "ip_address": a.ip().to_string(), "port": a.port()}))
        .collect();
    if let Some(a) = mgmt.http_addr {
        listeners.push(json!({"node": mgmt.node, "protocol": "http", "ip_address": a.ip().to_string(), "port": a.port()}));
    }
    if let Some(a) = mgmt.prometheus_addr {
        listeners.push(json!({"node": mgmt.node, "protocol": "http/prometheus", "ip_address": a.ip().to_string(), "port": a.port()}));
    }
    json!({
        "management_version": COMPAT_VERSION,
        "rabbitmq_version": COMPAT_VERSION,
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]},
        "exchange_types": exchange_types(),
        "cluster_name": mgmt.node,
        "node": mgmt.node,
        "disable_stats": false,
        "enable_queue_totals": false,
        "statistics_db_event_queue": 0,
        "listeners": listeners,
        "contexts": mgmt.http_addr.map(|a| vec![json!({"node": mgmt.node, "description": "RabbitMQ Management", "path": "/", "port": a.port().to_string()})]).unwrap_or_default(),
        "object_totals": {
            "connections": live_conns(core).count(),
            "channels": channels,
            "exchanges": exchanges,
            "queues": core.engine.broker.queues.len(),
            "consumers": consumers,
        },
        "queue_totals": {
            "messages": cur.messages,
            "messages_details": details(cur.messages, base.messages, dt),
            "messages_ready": cur.ready,
            "messages_ready_details": details(cur.ready, base.ready, dt),
            "messages_unacknowledged": cur.unacked,
            "messages_unacknowledged_details": details(cur.unacked, base.unacked, dt),
        },
        "message_stats": message_stats(&cur, &base, dt),
    })
}

fn node(core: &Core, mgmt: &Mgmt, now: Instant) -> Value {
    let disk_free = core
        .engine
        .config
        .data_dir
        .as_deref()
        .and_then(|d| crate::store::free_disk(d).ok());
    let (syncs, sync_time, written, store_bytes) = match &core.engine.msgs.store {
        Some(st) => (
            st.stats.syncs,
            st.stats.sync_time,
            st.stats.bytes_written,
            st.disk_bytes(),
        ),
        None => (0, Duration::ZERO, 0, 0),
    };
    let fds = fd_total();
    let channels: usize = live_conns(core).map(|c| c.channels.len()).sum();
    let conns = live_conns(core).count();
    json!({
        "name": mgmt.node,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "mem_used": rss_bytes(),
        "mem_limit": core.engine.config.max_memory,
        "mem_alarm": core.engine.alarms.blocked && !core.engine.alarms.disk_alarm,
        "mem_calculation_strategy": "rss",
        "disk_free": disk_free,
        "disk_free_limit": core.engine.config.min_free_disk,
        "disk_free_alarm": core.engine.alarms.disk_alarm,
        "fd_used": fd_used(),
        "fd_total": fds,
        "sockets_used": conns,
        "sockets_total": fds,
        // RabbitMQ's process count; warren's analogue: one per connection,
        // channel and queue.
        "proc_used": conns + channels + core.engine.broker.queues.len() + 1,
        "proc_total": 1_048_576,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "run_queue": 0,
        "uptime": mgmt.uptime_ms(now),
        "rates_mode": "basic",
        "net_ticktime": 60,
        "partitions": [],
        "applications": [],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
        "exchange_types": exchange_types(),
        "auth_mechanisms": [{"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
                            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true}],
        "config_files": [],
        "log_files": [],
        "db_dir": core.engine.config.data_dir.as_ref().map(|d| d.display().to_string()),
        "io_sync_count": syncs,
        "io_sync_avg_time": if syncs > 0 { sync_time.as_secs_f64() * 1000.0 / syncs as f64 } else { 0.0 },
        "io_write_bytes": written,
        "message_store_bytes": store_bytes,
        "message_resident_bytes": core.engine.memory_used(),
    })
}

// ---------------------------------------------------------------------------
// Changes

fn put_exchange(c: &mut Ctx<'_>, v: &str, x: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !c.vhost_exists(v) {
        return not_found();
    }
    match definitions::declare_exchange(&mut c.core.engine, v, exchange_name(x), &body) {
        Ok(created) => created_or_updated(created),
        Err(e) => bad_request(e),
    }
}

fn delete_exchange(c: &mut Ctx<'_>, v: &str, x: &str) -> Response {
    let x = exchange_name(x);
    let exists = c
        .core
        .engine
        .broker
        .vhost(v.as_bytes())
        .is_some_and(|vh| vh.exchanges.contains_key(x.as_bytes()));
    if !exists {
        return not_found();
    }
    let if_unused = c.q("if-unused") == Some("true");
    match c
        .core
        .engine
        .broker
        .delete_exchange(v.as_bytes(), x.as_bytes(), if_unused)
    {
        Ok(()) => Response::empty(204),
        Err(e) => from_amqp(&e),
    }
}

fn put_queue(c: &mut Ctx<'_>, v: &str, name: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !c.vhost_exists(v) {
        return not_found();
    }
    match definitions::declare_queue(&mut c.core.engine, v, name, &body) {
        Ok(created) => created_or_updated(created),
        Err(e) => bad_request(e),
    }
}

fn delete_queue(c: &mut Ctx<'_>, v: &str, name: &str) -> Response {
    let Some(id) = c.core.api_queue(v.as_bytes(), name.as_bytes()) else {
        return not_found();
    };
    if let Some(q) = c.core.engine.broker.queue(id) {
        if c.q("if-unused") == Some("true") && !q.consumers.is_empty() {
            return bad_request(format!("queue '{name}' in vhost '{v}' in use"));
        }
        if c.q("if-empty") == Some("true") && (!q.ready.is_empty() || q.unacked > 0) {
            return bad_request(format!("queue '{name}' in vhost '{v}' not empty"));
        }
    }
    c.core.delete_queue(id);
    c.core.run_dispatch();
    Response::empty(204)
}

fn publish(c: &mut Ctx<'_>, v: &str, x: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !c.vhost_exists(v) {
        return not_found();
    }
    let Some(rk) = get_str(&body, "routing_key") else {
        return bad_request("key_missing: routing_key");
    };
    let Some(payload) = get_str(&body, "payload") else {
        return bad_request("key_missing: payload");
    };
    let data = match get_str(&body, "payload_encoding").unwrap_or("string") {
        "string" => payload.as_bytes().to_vec(),
        "base64" => match base64_decode(payload) {
            Some(d) => d,
            None => return bad_request("payload is not valid base64"),
        },
        other => return bad_request(format!("unknown payload_encoding '{other}'")),
    };
    if data.len() as u64 > c.core.engine.config.max_message_size {
        return bad_request("message too large");
    }
    let props = match json_to_properties(body.get("properties").unwrap_or(&Value::Null)) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let ttl = match &props.expiration {
        None => None,
        Some(e) => match std::str::from_utf8(e)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(t) => Some(t),
            None => return bad_request(format!("invalid expiration '{}'", lossy(e))),
        },
    };
    let (persistent, priority) = (props.persistent(), props.priority.unwrap_or(0));
    let mut header = BytesMut::new();
    ContentHeader {
        class_id: crate::codec::properties::BASIC_CLASS,
        body_size: data.len() as u64,
        properties: props,
    }
    .encode(&mut header);
    let mut msg = Message::new(
        Bytes::from(exchange_name(x).to_string()),
        Bytes::from(rk.to_string()),
        header.freeze(),
        Bytes::from(data),
        persistent,
    );
    msg.priority = priority;
    msg.ttl = ttl;
    match c.core.api_publish(v.as_bytes(), msg) {
        Ok(routed) => ok(json!({"routed": routed})),
        Err(e) => from_amqp(&e),
    }
}

fn get_messages(c: &mut Ctx<'_>, v: &str, name: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let count = match get_int(&body, "count") {
        Ok(n) => n.unwrap_or(1).clamp(0, 100_000) as usize,
        Err(e) => return bad_request(e),
    };
    let mode = match get_str(&body, "ackmode") {
        Some(m) => match AckMode::parse(m) {
            Some(m) => m,
            None => return bad_request(format!("unknown ackmode '{m}'")),
        },
        // Before 3.7: `requeue`.
        None => match get_bool(&body, "requeue", true) {
            Ok(true) => AckMode::AckRequeue,
            Ok(false) => AckMode::Ack,
            Err(e) => return bad_request(e),
        },
    };
    let base64 = match get_str(&body, "encoding").unwrap_or("auto") {
        "auto" => false,
        "base64" => true,
        other => return bad_request(format!("unknown encoding '{other}'")),
    };
    let truncate = match get_int(&body, "truncate") {
        Ok(t) => t.map(|t| t.max(0) as usize),
        Err(e) => return bad_request(e),
    };
    let got = match c.core.api_get(v.as_bytes(), name.as_bytes(), count, mode) {
        Ok(g) => g,
        Err(e) => return from_amqp(&e),
    };
    let list = got
        .into_iter()
        .map(|m| {
            let props = ContentHeader::decode(&m.header)
                .map(|h| super::json::properties_to_json(&h.properties))
                .unwrap_or_else(|_| json!({}));
            let bytes = truncate
                .and_then(|t| m.body.get(..t.min(m.body.len())))
                .unwrap_or(&m.body);
            let (payload, enc) = match (base64, std::str::from_utf8(bytes)) {
                (false, Ok(s)) => (s.to_string(), "string"),
                _ => (base64_encode(bytes), "base64"),
            };
            json!({
                "payload_bytes": m.body.len(),
                "redelivered": m.redelivered,
                "exchange": lossy(&m.exchange),
                "routing_key": lossy(&m.routing_key),
                "message_count": m.message_count,
                "properties": props,
                "payload": payload,
                "payload_encoding": enc,
            })
        })
        .collect();
    ok(Value::Array(list))
}

fn import(c: &mut Ctx<'_>, vhost: Option<&str>) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(v) = vhost {
        if !c.vhost_exists(v) {
            return not_found();
        }
    }
    match definitions::import(&mut c.core.engine, &body, vhost) {
        Ok(rep) if rep.errors.is_empty() && rep.skipped.is_empty() => Response::empty(204),
        // Applied, with what was skipped listed.
        Ok(rep) if rep.errors.is_empty() => Response::json(200, &rep.to_json()),
        Ok(rep) => {
            let mut body = rep.to_json();
            if let Some(o) = body.as_object_mut() {
                o.insert("error".into(), json!("bad_request"));
                o.insert("reason".into(), json!(rep.error_text()));
            }
            Response::json(400, &body)
        }
        Err(e) => bad_request(e),
    }
}

/// RabbitMQ's aliveness test: declare `aliveness-test`, publish to it and
/// get the message back.
fn aliveness(c: &mut Ctx<'_>, v: &str) -> Response {
    if !c.vhost_exists(v) {
        return not_found();
    }
    let failed =
        |reason: String| Response::json(503, &json!({"status": "failed", "reason": reason}));
    if let Err(e) = definitions::declare_queue(
        &mut c.core.engine,
        v,
        "aliveness-test",
        &json!({"durable": false}),
    ) {
        return failed(e);
    }
    let mut header = BytesMut::new();
    ContentHeader {
        class_id: crate::codec::properties::BASIC_CLASS,
        body_size: 12,
        properties: Default::default(),
    }
    .encode(&mut header);
    let msg = Message::new(
        Bytes::new(),
        Bytes::from_static(b"aliveness-test"),
        header.freeze(),
        Bytes::from_static(b"test_message"),
        false,
    );
    if let Err(e) = c.core.api_publish(v.as_bytes(), msg) {
        return failed(e.text.to_string());
    }
    match c
        .core
        .api_get(v.as_bytes(), b"aliveness-test", 1, AckMode::Ack)
    {
        Ok(m) if !m.is_empty() => ok(json!({"status": "ok"})),
        Ok(_) => failed("aliveness-test message not received".into()),
        Err(e) => failed(e.text.to_string()),
    }
}
