//! `/api/parameters`: runtime parameters as RabbitMQ's management plugin
//! serves them. Shovels, federation upstreams and upstream sets are set and
//! cleared here (the work is in `crate::engine`, the checks in
//! `crate::broker::params`); operator policies and vhost limits are listed
//! too but changed through their own resources.
//!
//! Access (`mod.rs` lets only `administrator` and `policymaker` in, as
//! RabbitMQ's `is_authorized_policies`): a policymaker must have
//! permissions in the vhost it names, and sees only the parameters of such
//! vhosts in lists; an administrator sees and changes them all. A shovel or
//! upstream URI without a host (`amqp://`, `amqp:///VHOST`: this broker)
//! must name a vhost the user may use, whoever sets it.

use serde_json::Value;

use super::{bad_request, body_json, created_or_updated, forbidden, not_found, Ctx};
use crate::broker::params;
use crate::broker::policy::{validation_failed, OPERATOR_POLICY, POLICY, VHOST_LIMITS_PARAM};
use crate::mgmt::definitions::{param_value, parameter_items};
use crate::mgmt::Response;

impl Ctx<'_> {
    fn is_admin(&self) -> bool {
        self.tags.iter().any(|t| t == "administrator")
    }

    /// May the user see and change the parameters of `vhost`?
    fn may_use_vhost(&self, vhost: &str) -> bool {
        self.is_admin() || self.core.engine.broker.auth.may_open(&self.user, vhost)
    }
}

/// 404 for a vhost that does not exist, 403 for one the user may not use.
fn check_vhost(c: &Ctx<'_>, vhost: &str) -> Option<Response> {
    if !c.vhost_exists(vhost) {
        return Some(not_found());
    }
    if !c.may_use_vhost(vhost) {
        return Some(forbidden("User not authorised to access object"));
    }
    None
}

/// The components listed here but changed elsewhere.
fn elsewhere(component: &str) -> Option<Response> {
    let resource = match component {
        POLICY => "/api/policies",
        OPERATOR_POLICY => "/api/operator-policies",
        VHOST_LIMITS_PARAM => "/api/vhost-limits",
        _ => return None,
    };
    Some(bad_request(validation_failed(&format!(
        "{component} parameters may not be set using this method; use {resource}"
    ))))
}

/// `GET /api/parameters[/COMPONENT[/VHOST]]`.
pub(super) fn list(c: &Ctx<'_>, component: Option<&str>, vhost: Option<&str>) -> Response {
    if let Some(r) = vhost.and_then(|v| check_vhost(c, v)) {
        return r;
    }
    let items: Vec<Value> = parameter_items(&c.core.engine, component, vhost)
        .into_iter()
        .filter(|p| {
            p.get("vhost")
                .and_then(Value::as_str)
                .is_some_and(|v| c.may_use_vhost(v))
        })
        .collect();
    c.list(items)
}

/// `GET /api/parameters/COMPONENT/VHOST/NAME`.
pub(super) fn get(c: &Ctx<'_>, component: &str, vhost: &str, name: &str) -> Response {
    if let Some(r) = check_vhost(c, vhost) {
        return r;
    }
    let found = parameter_items(&c.core.engine, Some(component), Some(vhost))
        .into_iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name));
    match found {
        Some(p) => c.object(p),
        None => not_found(),
    }
}

/// `PUT /api/parameters/COMPONENT/VHOST/NAME` with `{"value": ...}` (the
/// body's `component`, `vhost` and `name`, which RabbitMQ's clients also
/// send, are ignored: the path says).
pub(super) fn put(c: &mut Ctx<'_>, component: &str, vhost: &str, name: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(r) = check_vhost(c, vhost) {
        return r;
    }
    if let Some(r) = elsewhere(component) {
        return r;
    }
    let Some(value) = body.get("value") else {
        return bad_request("[{key_missing,value}]");
    };
    let value = param_value(value);
    // Validate first: the URIs read below are then well formed.
    if let Err(e) = params::validate(component, name, &value) {
        return bad_request(validation_failed(&e));
    }
    for v in params::local_vhosts(component, &value) {
        let auth = &c.core.engine.broker.auth;
        if !c.vhost_exists(&v) || !auth.may_open(&c.user, &v) {
            return bad_request(validation_failed(&format!(
                "user \"{}\" may not connect to vhost \"{v}\"",
                c.user
            )));
        }
    }
    match c.core.engine.set_param(component, vhost, name, value) {
        Ok(created) => created_or_updated(created),
        Err(e) if e.starts_with("no vhost") => not_found(),
        Err(e) => bad_request(validation_failed(&e)),
    }
}

/// `DELETE /api/parameters/COMPONENT/VHOST/NAME`.
pub(super) fn delete(c: &mut Ctx<'_>, component: &str, vhost: &str, name: &str) -> Response {
    if let Some(r) = check_vhost(c, vhost) {
        return r;
    }
    if let Some(r) = elsewhere(component) {
        return r;
    }
    if c.core.engine.clear_param(component, vhost, name) {
        Response::empty(204)
    } else {
        not_found()
    }
}
