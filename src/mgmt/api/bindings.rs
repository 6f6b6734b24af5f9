//! `/api/bindings`, and the bindings of one exchange or queue.

use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::exchanges::exchange_name;
use super::vhosts::sorted_vhost_names;
use super::{at, bad_request, body_json, from_amqp, lossy, not_found, Ctx};
use crate::amqp::Core;
use crate::broker::auth::base64_encode;
use crate::broker::exchange::{Dest, Exchange};
use crate::codec::FieldTable;
use crate::mgmt::definitions;
use crate::mgmt::json::{get_str, get_table, percent_decode, percent_encode, table_to_json};
use crate::mgmt::Response;

pub(super) fn list_bindings(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    c.list(bindings(c.core, vhost))
}

/// The bindings with exchange `x` as their source or as their destination.
pub(super) fn list_exchange_bindings(c: &Ctx<'_>, v: &str, x: &str, dir: &str) -> Response {
    let x = exchange_name(x);
    if !c.vhost_exists(v) {
        return not_found();
    }
    let list = bindings(c.core, Some(v))
        .into_iter()
        .filter(|b| {
            if dir == "source" {
                *at(b, "source") == *x
            } else {
                *at(b, "destination") == *x && *at(b, "destination_type") == "exchange"
            }
        })
        .collect();
    c.list(list)
}

pub(super) fn list_queue_bindings(c: &Ctx<'_>, v: &str, name: &str) -> Response {
    if c.core.api_queue(v.as_bytes(), name.as_bytes()).is_none() {
        return not_found();
    }
    let list = bindings(c.core, Some(v))
        .into_iter()
        .filter(|b| *at(b, "destination") == *name && *at(b, "destination_type") == "queue")
        .collect();
    c.list(list)
}

pub(super) fn list_bindings_between(
    c: &Ctx<'_>,
    v: &str,
    src: &str,
    t: &str,
    dest: &str,
) -> Response {
    let Some(list) = bindings_between(c.core, v, src, t, dest) else {
        return not_found();
    };
    c.list(list)
}

pub(super) fn get_binding(
    c: &Ctx<'_>,
    v: &str,
    src: &str,
    t: &str,
    dest: &str,
    props: &str,
) -> Response {
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

pub(super) fn add_binding(c: &mut Ctx<'_>, v: &str, src: &str, t: &str, dest: &str) -> Response {
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
            let args = get_table(&body, "arguments").unwrap_or_default();
            let mut r = Response::empty(201);
            let key = props_key(rk.as_bytes(), &args);
            r.headers
                .push(("location", format!("{}/{key}", percent_encode(dest))));
            r
        }
        Err(e) => bad_request(e),
    }
}

pub(super) fn delete_binding(
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
