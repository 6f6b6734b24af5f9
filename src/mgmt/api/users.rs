//! `/api/whoami`, `/api/users`, `/api/permissions` and
//! `/api/topic-permissions`.

use serde_json::{json, Value};

use super::{bad_request, body_json, created_or_updated, not_found, ok, Ctx};
use crate::amqp::Core;
use crate::mgmt::definitions::{self, user_json};
use crate::mgmt::json::get_str;
use crate::mgmt::Response;

pub(super) fn whoami(c: &Ctx<'_>) -> Response {
    ok(json!({"name": c.user, "tags": c.tags}))
}

pub(super) fn list_users(c: &Ctx<'_>) -> Response {
    let list = c
        .core
        .engine
        .broker
        .auth
        .users
        .values()
        .map(|u| user_json(&c.core.engine, u))
        .collect();
    c.list(list)
}

pub(super) fn get_user(c: &Ctx<'_>, u: &str) -> Response {
    match c.core.engine.broker.auth.users.get(u) {
        Some(user) => {
            let v = user_json(&c.core.engine, user);
            c.object(v)
        }
        None => not_found(),
    }
}

pub(super) fn put_user(c: &mut Ctx<'_>, u: &str) -> Response {
    let body = match body_json(c.req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match definitions::put_user(&mut c.core.engine, u, &body) {
        Ok(created) => created_or_updated(created),
        Err(e) => bad_request(e),
    }
}

pub(super) fn delete_user(c: &mut Ctx<'_>, u: &str) -> Response {
    if c.core.delete_user(u, c.now) {
        Response::empty(204)
    } else {
        not_found()
    }
}

pub(super) fn list_vhost_permissions(c: &Ctx<'_>, v: &str) -> Response {
    if !c.vhost_exists(v) {
        return not_found();
    }
    c.list(permissions(c.core, |_, vh| vh == v))
}

pub(super) fn list_user_permissions(c: &Ctx<'_>, u: &str) -> Response {
    if !c.core.engine.broker.auth.users.contains_key(u) {
        return not_found();
    }
    c.list(permissions(c.core, |user, _| user == u))
}

pub(super) fn list_permissions(c: &Ctx<'_>) -> Response {
    c.list(permissions(c.core, |_, _| true))
}

pub(super) fn get_permission(c: &Ctx<'_>, v: &str, u: &str) -> Response {
    match permissions(c.core, |user, vh| user == u && vh == v)
        .into_iter()
        .next()
    {
        Some(p) => c.object(p),
        None => not_found(),
    }
}

pub(super) fn put_permission(c: &mut Ctx<'_>, v: &str, u: &str) -> Response {
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

pub(super) fn delete_permission(c: &mut Ctx<'_>, v: &str, u: &str) -> Response {
    if c.core.engine.clear_permissions(u, v) {
        Response::empty(204)
    } else {
        not_found()
    }
}

pub(super) fn list_topic_permissions(c: &Ctx<'_>) -> Response {
    c.list(topic_permissions(c.core, |_, _| true))
}

pub(super) fn list_vhost_topic_permissions(c: &Ctx<'_>, v: &str) -> Response {
    if !c.vhost_exists(v) {
        return not_found();
    }
    c.list(topic_permissions(c.core, |_, vh| vh == v))
}

pub(super) fn list_user_topic_permissions(c: &Ctx<'_>, u: &str) -> Response {
    if !c.core.engine.broker.auth.users.contains_key(u) {
        return not_found();
    }
    c.list(topic_permissions(c.core, |user, _| user == u))
}

pub(super) fn get_topic_permissions(c: &Ctx<'_>, v: &str, u: &str) -> Response {
    if !c.vhost_exists(v) || !c.core.engine.broker.auth.users.contains_key(u) {
        return not_found();
    }
    c.list(topic_permissions(c.core, |user, vh| user == u && vh == v))
}

pub(super) fn put_topic_permission(c: &mut Ctx<'_>, v: &str, u: &str) -> Response {
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

pub(super) fn delete_topic_permission(c: &mut Ctx<'_>, v: &str, u: &str) -> Response {
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
            json!({"user": u, "vhost": v, "configure": &*p.configure, "write": &*p.write, "read": &*p.read})
        })
        .collect()
}
