//! `/api/exchanges`, and publishing through one.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::vhosts::sorted_vhost_names;
use super::{bad_request, body_json, created_or_updated, from_amqp, lossy, not_found, ok, Ctx};
use crate::amqp::Core;
use crate::broker::auth::base64_decode;
use crate::broker::exchange::Exchange;
use crate::broker::message::Message;
use crate::codec::ContentHeader;
use crate::mgmt::definitions::{self, builtin_exchange};
use crate::mgmt::json::{get_str, json_to_properties, table_to_json};
use crate::mgmt::Response;

pub(super) fn list_exchanges(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    c.list(exchanges(c.core, vhost))
}

pub(super) fn get_exchange(c: &Ctx<'_>, v: &str, x: &str) -> Response {
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

/// The default exchange is `amq.default` in paths.
pub(super) fn exchange_name(x: &str) -> &str {
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
        "policy": x.policy,
    })
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

pub(super) fn put_exchange(c: &mut Ctx<'_>, v: &str, x: &str) -> Response {
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

pub(super) fn delete_exchange(c: &mut Ctx<'_>, v: &str, x: &str) -> Response {
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

pub(super) fn publish(c: &mut Ctx<'_>, v: &str, x: &str) -> Response {
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
