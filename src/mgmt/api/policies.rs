//! `/api/policies`, `/api/operator-policies`, `/api/vhost-limits` and
//! `/api/user-limits` (the work is in `crate::engine`; bodies are read by
//! [`crate::mgmt::definitions`], shared with the definitions import).

use serde_json::{json, Value};

use super::{bad_request, body_json, created_or_updated, not_found, Ctx};
use crate::broker::policy::{Limits, LimitsOf};
use crate::engine::PolicyKind;
use crate::mgmt::definitions::put_policy;
use crate::mgmt::Response;

fn policies<'a>(c: &'a Ctx<'_>, kind: PolicyKind) -> &'a crate::broker::policy::PolicySet {
    kind.set(&c.core.engine.broker.runtime)
}

pub(super) fn list(c: &Ctx<'_>, kind: PolicyKind, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    let items: Vec<Value> = policies(c, kind).iter(vhost).map(|p| p.to_json()).collect();
    c.list(items)
}

pub(super) fn get(c: &Ctx<'_>, kind: PolicyKind, vhost: &str, name: &str) -> Response {
    match policies(c, kind).get(vhost, name) {
        Some(p) => c.object(p.to_json()),
        None => not_found(),
    }
}

pub(super) fn put(c: &mut Ctx<'_>, kind: PolicyKind, vhost: &str, name: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !c.vhost_exists(vhost) {
        return not_found();
    }
    match put_policy(&mut c.core.engine, kind, vhost, name, &body) {
        Ok(created) => created_or_updated(created),
        Err(e) => bad_request(e),
    }
}

pub(super) fn delete(c: &mut Ctx<'_>, kind: PolicyKind, vhost: &str, name: &str) -> Response {
    if c.core.engine.clear_policy(kind, vhost, name) {
        Response::empty(204)
    } else {
        not_found()
    }
}

/// `/api/vhost-limits[/VHOST]` (`[{"vhost": V, "value": {...}}]`) and
/// `/api/user-limits[/USER]` (`[{"user": U, "value": {...}}]`).
pub(super) fn list_limits(c: &Ctx<'_>, of: LimitsOf, owner: Option<&str>) -> Response {
    if owner.is_some_and(|o| !exists(c, of, o)) {
        return not_found();
    }
    let items = c
        .core
        .engine
        .broker
        .runtime
        .limits(of)
        .iter()
        .filter(|(o, _)| owner.is_none_or(|x| x == o.as_str()))
        .map(|(o, l)| json!({of.owner_key(): o, "value": l.to_json()}))
        .collect();
    c.list(items)
}

fn exists(c: &Ctx<'_>, of: LimitsOf, owner: &str) -> bool {
    match of {
        LimitsOf::Vhost => c.vhost_exists(owner),
        LimitsOf::User => c.core.engine.broker.auth.users.contains_key(owner),
    }
}

/// PUT (`set`: the body's `value`) or DELETE one limit of a vhost or a user.
fn change_limit(c: &mut Ctx<'_>, of: LimitsOf, owner: &str, name: &str, set: bool) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !exists(c, of, owner) {
        return not_found();
    }
    let current = c.core.engine.broker.runtime.limits(of).get(owner);
    let mut limits = current.cloned().unwrap_or_default();
    if set {
        let Some(value) = body.get("value") else {
            return bad_request("[{key_missing,value}]");
        };
        let one = json!({ name: value });
        match Limits::parse(&one, of.keys()) {
            Ok(l) => limits.0.extend(l.0),
            Err(e) => return bad_request(crate::broker::policy::validation_failed(&e)),
        }
    } else if limits.0.remove(name).is_none() {
        // As RabbitMQ: removing a limit that is not set is not an error.
        return Response::empty(204);
    }
    match c.core.engine.set_limits(of, owner, limits) {
        Ok(()) => Response::empty(204),
        Err(e) => bad_request(e),
    }
}

pub(super) fn put_limit(c: &mut Ctx<'_>, of: LimitsOf, owner: &str, name: &str) -> Response {
    change_limit(c, of, owner, name, true)
}

pub(super) fn delete_limit(c: &mut Ctx<'_>, of: LimitsOf, owner: &str, name: &str) -> Response {
    change_limit(c, of, owner, name, false)
}
