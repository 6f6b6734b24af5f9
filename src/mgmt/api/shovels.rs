//! `/api/shovels` and `/api/shovels/VHOST`: every dynamic shovel and its
//! state (`starting`, `running`, `terminated` with its reason), as
//! RabbitMQ's shovel management plugin shows them, plus warren's
//! counters (messages forwarded and in flight, the last error); and
//! `/api/federation-links`, the federation links, as RabbitMQ's
//! federation management plugin shows them.

use super::{not_found, Ctx};
use crate::mgmt::Response;

pub(super) fn list_shovels(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    c.list(c.core.links.status(vhost))
}

/// `/api/federation-links` and `/api/federation-links/VHOST`.
pub(super) fn list_federation_links(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| !c.vhost_exists(v)) {
        return not_found();
    }
    c.list(c.core.links.federation_status(vhost))
}
