//! The routes: `(method, path, body, credentials)` → `(status, headers,
//! body)`, against `&mut Core`. JSON shapes and status codes follow
//! RabbitMQ 3.10's management plugin (checked against a running RabbitMQ),
//! so rabbitmqadmin and monitoring tools read them unchanged.
//!
//! Access: HTTP basic auth against the broker's users. `administrator` may
//! do everything; `management`, `policymaker` and `monitoring` may only
//! read (GET), and not users, permissions or definitions (nodes:
//! monitoring only), as in RabbitMQ. `policymaker` also manages policies
//! and runtime parameters (`/api/parameters`, which only it and
//! `administrator` may read, in the vhosts it has permissions in). Missing
//! or wrong credentials: 401 with a `WWW-Authenticate` challenge; a user
//! without the needed tag: 403 (RabbitMQ answers 401 there too).
//!
//! This file authenticates a request and routes it ([`handle`], `route`) and
//! holds the helpers every handler shares; the handlers and the JSON they
//! render live in one file per resource:
//!
//! | file | resources |
//! | --- | --- |
//! | `overview.rs` | `/api/overview`, `/api/nodes` |
//! | `health.rs` | `/api/aliveness-test`, `/api/health/checks` |
//! | `connections.rs` | `/api/connections`, `/api/channels`, `/api/consumers` |
//! | `exchanges.rs` | `/api/exchanges` (with publish) |
//! | `queues.rs` | `/api/queues` (with get and purge) |
//! | `bindings.rs` | `/api/bindings` and the bindings of one exchange or queue |
//! | `vhosts.rs` | `/api/vhosts` |
//! | `users.rs` | `/api/whoami`, `/api/users`, `/api/permissions`, `/api/topic-permissions` |
//! | `definitions.rs` | `/api/definitions` (export, import) |
//! | `policies.rs` | `/api/policies`, `/api/operator-policies`, `/api/vhost-limits`, `/api/user-limits` |
//! | `params.rs` | `/api/parameters` (shovels, federation upstreams and upstream sets; operator policies and vhost limits listed) |

mod bindings;
mod connections;
mod definitions;
mod exchanges;
mod health;
mod overview;
mod params;
mod policies;
mod queues;
mod shovels;
mod users;
mod vhosts;

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::json::{list_bytes, parse_query, percent_decode, rate, select_object_columns};
use super::stats::{per_sec, Mgmt};
use super::{Request, Response};
use crate::amqp::Core;
use crate::broker::policy::LimitsOf;
use crate::codec::{Error, ReplyCode};
use crate::engine::PolicyKind;

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

/// 401, with a Basic challenge unless a script asked (see
/// [`Request::scripted`]).
fn unauthorized(req: &Request, reason: &str) -> Response {
    let mut r = Response::json(401, &json!({"error": "not_authorized", "reason": reason}));
    if !req.scripted {
        r.headers.push((
            "www-authenticate",
            "Basic realm=\"RabbitMQ Management\"".into(),
        ));
    }
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
    if let Some(page) = super::ui::handle(req, path) {
        return page;
    }
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
        return unauthorized(req, "Login failed");
    };
    let Some(u) = core
        .engine
        .broker
        .auth
        .login(user.as_bytes(), pass.as_bytes())
    else {
        return unauthorized(req, "Login failed");
    };
    if core.engine.config.loopback_users.iter().any(|l| l == user)
        && !req.peer.ip().to_canonical().is_loopback()
    {
        return unauthorized(req, "User can only log in via localhost");
    }
    let tags = u.tags.clone();
    let has = |t: &str| tags.iter().any(|x| x == t);
    if !MGMT_TAGS.iter().any(|t| has(t)) {
        return forbidden("Not management user");
    }
    let admin = has("administrator");
    // As RabbitMQ: users, permissions, definitions and global parameters
    // are for administrators only, even to read; nodes need monitoring.
    let admin_only = matches!(
        rest.first().copied(),
        Some(
            "users"
                | "permissions"
                | "definitions"
                | "global-parameters"
                | "topic-permissions"
                | "user-limits"
                | "operator-policies"
                | "reload-certificates"
                | "shutdown"
        )
    ) || matches!(rest, [_, _, "permissions"] | [_, _, "topic-permissions"]);
    // As RabbitMQ: policymakers manage policies (not operator policies)
    // and runtime parameters; parameters are theirs and administrators'
    // only, even to read (the vhost is checked in `params.rs`).
    let policymaker =
        has("policymaker") && matches!(rest.first().copied(), Some("policies" | "parameters"));
    let policymakers_only = rest.first() == Some(&"parameters");
    if (req.method != "GET" || admin_only || policymakers_only) && !admin && !policymaker {
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
        ("GET", ["overview"]) => overview::get_overview(c),
        ("GET", ["whoami"]) => users::whoami(c),
        ("POST", ["reload-certificates"]) => overview::reload_certificates(c),
        ("POST", ["shutdown"]) => overview::shutdown(c),
        ("GET", ["nodes"]) => overview::list_nodes(c),
        ("GET", ["nodes", name]) if *name == c.mgmt.node => overview::get_node(c),
        ("GET", ["connections"]) => connections::list_connections(c, None),
        ("GET", ["vhosts", v, "connections"]) => connections::list_connections(c, Some(v)),
        ("GET", ["connections", name]) => connections::get_connection(c, name),
        ("DELETE", ["connections", name]) => connections::close_connection(c, name),
        ("GET", ["connections", name, "channels"]) => {
            connections::list_connection_channels(c, name)
        }
        ("GET", ["channels"]) => connections::list_channels(c, None),
        ("GET", ["vhosts", v, "channels"]) => connections::list_channels(c, Some(v)),
        ("GET", ["channels", name]) => connections::get_channel(c, name),
        ("GET", ["consumers"]) => connections::list_consumers(c, None),
        ("GET", ["consumers", v]) => connections::list_consumers(c, Some(v)),
        ("GET", ["exchanges"]) => exchanges::list_exchanges(c, None),
        ("GET", ["exchanges", v]) => exchanges::list_exchanges(c, Some(v)),
        ("GET", ["exchanges", v, x]) => exchanges::get_exchange(c, v, x),
        ("PUT", ["exchanges", v, x]) => exchanges::put_exchange(c, v, x),
        ("DELETE", ["exchanges", v, x]) => exchanges::delete_exchange(c, v, x),
        ("GET", ["exchanges", v, x, "bindings", dir @ ("source" | "destination")]) => {
            bindings::list_exchange_bindings(c, v, x, dir)
        }
        ("POST", ["exchanges", v, x, "publish"]) => exchanges::publish(c, v, x),
        ("GET", ["queues"]) => queues::list_queues(c, None),
        ("GET", ["queues", v]) => queues::list_queues(c, Some(v)),
        ("GET", ["queues", v, name]) => queues::get_queue(c, v, name),
        ("PUT", ["queues", v, name]) => queues::put_queue(c, v, name),
        ("DELETE", ["queues", v, name]) => queues::delete_queue(c, v, name),
        ("DELETE", ["queues", v, name, "contents"]) => queues::purge_queue(c, v, name),
        ("POST", ["queues", v, name, "get"]) => queues::get_messages(c, v, name),
        ("GET", ["queues", v, name, "bindings"]) => bindings::list_queue_bindings(c, v, name),
        ("GET", ["bindings"]) => bindings::list_bindings(c, None),
        ("GET", ["bindings", v]) => bindings::list_bindings(c, Some(v)),
        ("GET", ["bindings", v, "e", src, t @ ("q" | "e"), dest]) => {
            bindings::list_bindings_between(c, v, src, t, dest)
        }
        ("POST", ["bindings", v, "e", src, t @ ("q" | "e"), dest]) => {
            bindings::add_binding(c, v, src, t, dest)
        }
        ("GET", ["bindings", v, "e", src, t @ ("q" | "e"), dest, props]) => {
            bindings::get_binding(c, v, src, t, dest, props)
        }
        ("DELETE", ["bindings", v, "e", src, t @ ("q" | "e"), dest, props]) => {
            bindings::delete_binding(c, v, src, t, dest, props)
        }
        ("GET", ["vhosts"]) => vhosts::list_vhosts(c),
        ("GET", ["vhosts", v]) => vhosts::get_vhost(c, v),
        ("PUT", ["vhosts", v]) => vhosts::put_vhost(c, v),
        ("DELETE", ["vhosts", v]) => vhosts::delete_vhost(c, v),
        ("GET", ["vhosts", v, "permissions"]) => users::list_vhost_permissions(c, v),
        ("GET", ["users"]) => users::list_users(c),
        ("GET", ["users", u]) => users::get_user(c, u),
        ("PUT", ["users", u]) => users::put_user(c, u),
        ("DELETE", ["users", u]) => users::delete_user(c, u),
        ("GET", ["users", u, "permissions"]) => users::list_user_permissions(c, u),
        ("GET", ["permissions"]) => users::list_permissions(c),
        ("GET", ["permissions", v, u]) => users::get_permission(c, v, u),
        ("PUT", ["permissions", v, u]) => users::put_permission(c, v, u),
        ("DELETE", ["permissions", v, u]) => users::delete_permission(c, v, u),
        ("GET", ["topic-permissions"]) => users::list_topic_permissions(c),
        ("GET", ["vhosts", v, "topic-permissions"]) => users::list_vhost_topic_permissions(c, v),
        ("GET", ["users", u, "topic-permissions"]) => users::list_user_topic_permissions(c, u),
        ("GET", ["topic-permissions", v, u]) => users::get_topic_permissions(c, v, u),
        ("PUT", ["topic-permissions", v, u]) => users::put_topic_permission(c, v, u),
        ("DELETE", ["topic-permissions", v, u]) => users::delete_topic_permission(c, v, u),
        ("GET", ["definitions"]) => definitions::export(c, None),
        ("GET", ["definitions", v]) => definitions::export(c, Some(v)),
        ("POST", ["definitions"]) => definitions::import(c, None),
        ("POST", ["definitions", v]) => definitions::import(c, Some(v)),
        ("GET", ["policies"]) => policies::list(c, PolicyKind::User, None),
        ("GET", ["policies", v]) => policies::list(c, PolicyKind::User, Some(v)),
        ("GET", ["policies", v, n]) => policies::get(c, PolicyKind::User, v, n),
        ("PUT", ["policies", v, n]) => policies::put(c, PolicyKind::User, v, n),
        ("DELETE", ["policies", v, n]) => policies::delete(c, PolicyKind::User, v, n),
        ("GET", ["operator-policies"]) => policies::list(c, PolicyKind::Operator, None),
        ("GET", ["operator-policies", v]) => policies::list(c, PolicyKind::Operator, Some(v)),
        ("GET", ["operator-policies", v, n]) => policies::get(c, PolicyKind::Operator, v, n),
        ("PUT", ["operator-policies", v, n]) => policies::put(c, PolicyKind::Operator, v, n),
        ("DELETE", ["operator-policies", v, n]) => policies::delete(c, PolicyKind::Operator, v, n),
        ("GET", ["vhost-limits"]) => policies::list_limits(c, LimitsOf::Vhost, None),
        ("GET", ["vhost-limits", v]) => policies::list_limits(c, LimitsOf::Vhost, Some(v)),
        ("PUT", ["vhost-limits", v, n]) => policies::put_limit(c, LimitsOf::Vhost, v, n),
        ("DELETE", ["vhost-limits", v, n]) => policies::delete_limit(c, LimitsOf::Vhost, v, n),
        ("GET", ["user-limits"]) => policies::list_limits(c, LimitsOf::User, None),
        ("GET", ["user-limits", u]) => policies::list_limits(c, LimitsOf::User, Some(u)),
        ("PUT", ["user-limits", u, n]) => policies::put_limit(c, LimitsOf::User, u, n),
        ("DELETE", ["user-limits", u, n]) => policies::delete_limit(c, LimitsOf::User, u, n),
        ("GET", ["parameters"]) => params::list(c, None, None),
        ("GET", ["parameters", comp]) => params::list(c, Some(comp), None),
        ("GET", ["parameters", comp, v]) => params::list(c, Some(comp), Some(v)),
        ("GET", ["parameters", comp, v, n]) => params::get(c, comp, v, n),
        ("PUT", ["parameters", comp, v, n]) => params::put(c, comp, v, n),
        ("DELETE", ["parameters", comp, v, n]) => params::delete(c, comp, v, n),
        ("GET", ["global-parameters", ..] | ["extensions"] | ["feature-flags"]) => ok(json!([])),
        ("GET", ["shovels"]) => shovels::list_shovels(c, None),
        ("GET", ["shovels", v]) => shovels::list_shovels(c, Some(v)),
        ("GET", ["federation-links"]) => shovels::list_federation_links(c, None),
        ("GET", ["federation-links", v]) => shovels::list_federation_links(c, Some(v)),
        ("GET", ["aliveness-test", v]) => health::aliveness(c, v),
        ("GET", ["healthchecks", "node", ..]) => ok(json!({"status": "ok"})),
        ("GET", ["health", "checks", "alarms" | "local-alarms"]) => health::alarms(c),
        ("GET", ["health", "checks", "port-listener", port]) => health::port_listener(c, port),
        ("GET", ["health", "checks", "protocol-listener", proto])
            if matches!(*proto, "amqp" | "amqp091" | "amqp0-9-1" | "amqp0.9.1") =>
        {
            health::protocol_listener(c, proto)
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
// Rendering shared by the resources

fn details(now: u64, old: u64, dt: Duration) -> Value {
    rate(per_sec(now, old, dt))
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
