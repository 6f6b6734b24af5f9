//! `/api/policies`, `/api/operator-policies`, `/api/vhost-limits` and
//! `/api/user-limits` (the work is in `crate::engine`; bodies are read by
//! [`crate::mgmt::definitions`], shared with the definitions import).

use serde_json::{json, Value};

use super::{bad_request, body_json, created_or_updated, not_found, Ctx};
use crate::broker::policy::{Limits, USER_LIMITS, VHOST_LIMITS};
use crate::engine::PolicyKind;
use crate::mgmt::definitions::put_policy;
use crate::mgmt::Response;

fn policies<'a>(c: &'a Ctx<'_>, kind: PolicyKind) -> &'a crate::broker::policy::PolicySet {
    let rt = &c.core.engine.broker.runtime;
    match kind {
        PolicyKind::User => &rt.policies,
        PolicyKind::Operator => &rt.operator_policies,
    }
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

/// `/api/vhost-limits[/VHOST]`: `[{"vhost": V, "value": {...}}]`.
pub(super) fn list_vhost_limits(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    let items = c
        .core
        .engine
        .broker
        .runtime
        .vhost_limits
        .iter()
        .filter(|(v, _)| vhost.is_none_or(|x| x == v.as_str()))
        .map(|(v, l)| json!({"vhost": v, "value": l.to_json()}))
        .collect();
    c.list(items)
}

/// `/api/user-limits[/USER]`: `[{"user": U, "value": {...}}]`.
pub(super) fn list_user_limits(c: &Ctx<'_>, user: Option<&str>) -> Response {
    if user.is_some_and(|u| !c.core.engine.broker.auth.users.contains_key(u)) {
        return not_found();
    }
    let items = c
        .core
        .engine
        .broker
        .runtime
        .user_limits
        .iter()
        .filter(|(u, _)| user.is_none_or(|x| x == u.as_str()))
        .map(|(u, l)| json!({"user": u, "value": l.to_json()}))
        .collect();
    c.list(items)
}

/// PUT (`set`: the body's `value`) or DELETE one limit of a vhost or a user.
fn change_limit(c: &mut Ctx<'_>, user: bool, owner: &str, name: &str, set: bool) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rt = &c.core.engine.broker.runtime;
    let (exists, current, keys) = if user {
        let e = c.core.engine.broker.auth.users.contains_key(owner);
        (e, rt.user_limits.get(owner), &USER_LIMITS[..])
    } else {
        (
            c.vhost_exists(owner),
            rt.vhost_limits.get(owner),
            &VHOST_LIMITS[..],
        )
    };
    if !exists {
        return not_found();
    }
    let mut limits = current.cloned().unwrap_or_default();
    if set {
        let Some(value) = body.get("value") else {
            return bad_request("key_missing: value");
        };
        let one = json!({ name: value });
        match Limits::parse(&one, keys) {
            Ok(l) => limits.0.extend(l.0),
            Err(e) => return bad_request(crate::broker::policy::validation_failed(&e)),
        }
    } else if limits.0.remove(name).is_none() {
        return not_found();
    }
    let engine = &mut c.core.engine;
    let r = if user {
        engine.set_user_limits(owner, limits)
    } else {
        engine.set_vhost_limits(owner, limits)
    };
    match r {
        Ok(()) => Response::empty(204),
        Err(e) => bad_request(e),
    }
}

pub(super) fn put_vhost_limit(c: &mut Ctx<'_>, vhost: &str, name: &str) -> Response {
    change_limit(c, false, vhost, name, true)
}

pub(super) fn delete_vhost_limit(c: &mut Ctx<'_>, vhost: &str, name: &str) -> Response {
    change_limit(c, false, vhost, name, false)
}

pub(super) fn put_user_limit(c: &mut Ctx<'_>, user: &str, name: &str) -> Response {
    change_limit(c, true, user, name, true)
}

pub(super) fn delete_user_limit(c: &mut Ctx<'_>, user: &str, name: &str) -> Response {
    change_limit(c, true, user, name, false)
}
