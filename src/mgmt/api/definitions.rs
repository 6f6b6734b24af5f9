//! `/api/definitions`: export and import (the work is in
//! [`crate::mgmt::definitions`]).

use serde_json::json;

use super::{bad_request, body_json, not_found, ok, Ctx};
use crate::mgmt::definitions;
use crate::mgmt::Response;

pub(super) fn export(c: &Ctx<'_>, vhost: Option<&str>) -> Response {
    match definitions::export(&c.core.engine, vhost) {
        Some(d) => ok(d),
        None => not_found(),
    }
}

pub(super) fn import(c: &mut Ctx<'_>, vhost: Option<&str>) -> Response {
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
        Ok(rep) if rep.errors.is_empty() && rep.skipped.is_empty() && rep.warnings.is_empty() => {
            Response::empty(204)
        }
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
