//! `/api/aliveness-test` and `/api/health/checks`.

use bytes::{Bytes, BytesMut};
use serde_json::json;

use super::{not_found, ok, Ctx};
use crate::broker::message::Message;
use crate::codec::ContentHeader;
use crate::mgmt::definitions;
use crate::mgmt::ops::AckMode;
use crate::mgmt::Response;

/// Running out of file descriptors is reported like a resource alarm
/// (RabbitMQ has none for it): nothing can connect meanwhile.
pub(super) fn alarms(c: &Ctx<'_>) -> Response {
    if c.core.engine.alarms.blocked {
        Response::json(
            503,
            &json!({"status": "failed", "reason": "resource alarm(s) in effect"}),
        )
    } else if let Some(e) = &c.mgmt.accept_error {
        Response::json(
            503,
            &json!({"status": "failed", "reason": format!("AMQP listeners cannot accept connections: {e}")}),
        )
    } else {
        ok(json!({"status": "ok"}))
    }
}

pub(super) fn port_listener(c: &Ctx<'_>, port: &str) -> Response {
    let amqp = c
        .mgmt
        .amqp_addrs
        .iter()
        .chain(&c.mgmt.amqps_addrs)
        .any(|a| a.port().to_string() == *port);
    let listening = amqp
        || c.mgmt
            .http_addr
            .iter()
            .chain(&c.mgmt.https_addr)
            .any(|a| a.port().to_string() == *port);
    match &c.mgmt.accept_error {
        Some(e) if amqp => Response::json(
            503,
            &json!({"status": "failed", "reason": format!("Listener on port {port} cannot accept connections: {e}")}),
        ),
        _ if listening => ok(json!({"status": "ok", "port": port})),
        _ => Response::json(
            503,
            &json!({"status": "failed", "reason": format!("No active listener on port {port}")}),
        ),
    }
}

pub(super) fn protocol_listener(c: &Ctx<'_>, proto: &str) -> Response {
    match &c.mgmt.accept_error {
        Some(e) => Response::json(
            503,
            &json!({"status": "failed", "reason": format!("Listener for protocol {proto} cannot accept connections: {e}")}),
        ),
        None => ok(json!({"status": "ok", "protocol": proto})),
    }
}

/// RabbitMQ's aliveness test: declare `aliveness-test`, publish to it and
/// get the message back.
pub(super) fn aliveness(c: &mut Ctx<'_>, v: &str) -> Response {
    if !c.vhost_exists(v) {
        return not_found();
    }
    let failed =
        |reason: String| Response::json(503, &json!({"status": "failed", "reason": reason}));
    if let Err(e) = definitions::declare_queue(
        &mut c.core.engine,
        v,
        "aliveness-test",
        &json!({"durable": false}),
    ) {
        return failed(e);
    }
    let mut header = BytesMut::new();
    ContentHeader {
        class_id: crate::codec::properties::BASIC_CLASS,
        body_size: 12,
        properties: Default::default(),
    }
    .encode(&mut header);
    let msg = Message::new(
        Bytes::new(),
        Bytes::from_static(b"aliveness-test"),
        header.freeze(),
        Bytes::from_static(b"test_message"),
        false,
    );
    if let Err(e) = c.core.api_publish(v.as_bytes(), msg) {
        return failed(e.text.to_string());
    }
    match c
        .core
        .api_get(v.as_bytes(), b"aliveness-test", 1, AckMode::Ack)
    {
        Ok(m) if !m.is_empty() => ok(json!({"status": "ok"})),
        Ok(_) => failed("aliveness-test message not received".into()),
        Err(e) => failed(e.text.to_string()),
    }
}
