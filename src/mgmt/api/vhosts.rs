//! `/api/vhosts`.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{body_json, created_or_updated, lossy, not_found, Ctx};
use crate::amqp::Core;
use crate::mgmt::stats::Mgmt;
use crate::mgmt::Response;

pub(super) fn list_vhosts(c: &Ctx<'_>) -> Response {
    c.list(vhosts(c.core, c.mgmt, None))
}

pub(super) fn get_vhost(c: &Ctx<'_>, v: &str) -> Response {
    match vhosts(c.core, c.mgmt, Some(v)).into_iter().next() {
        Some(x) => c.object(x),
        None => not_found(),
    }
}

pub(super) fn put_vhost(c: &mut Ctx<'_>, v: &str) -> Response {
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

pub(super) fn delete_vhost(c: &mut Ctx<'_>, v: &str) -> Response {
    if c.core.delete_vhost(v, c.now) {
        Response::empty(204)
    } else {
        not_found()
    }
}

pub(super) fn sorted_vhost_names(core: &Core, vhost: Option<&str>) -> Vec<Bytes> {
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

fn vhosts(core: &Core, mgmt: &Mgmt, only: Option<&str>) -> Vec<Value> {
    let names = sorted_vhost_names(core, only);
    let mut totals: std::collections::HashMap<&[u8], (u64, u64)> = Default::default();
    for (_, q) in core.engine.broker.queues.iter() {
        let t = totals.entry(&q.vhost[..]).or_default();
        t.0 += q.ready.len();
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
