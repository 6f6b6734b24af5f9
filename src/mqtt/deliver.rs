//! Deliveries to MQTT subscribers: a message the dispatch pass took from
//! one of the session's queues becomes a PUBLISH (its QoS the lower of the
//! message's and the matching subscription's, its topic the routing key
//! mapped back, AMQP properties as MQTT 5 properties), written into the
//! connection's outbox like any delivery.

use bytes::{Bytes, BytesMut};

use super::codec::{self, Properties, Version};
use super::session::{Outbound, Session};
use super::topic;
use crate::amqp::Connection;
use crate::broker::message::QueuedMsg;
use crate::codec::properties::BasicProperties;
use crate::codec::reader::Reader;
use crate::codec::table::{FieldTable, FieldValue};
use crate::codec::Outbox;

/// Header naming the QoS a message was published with (RabbitMQ's).
pub const QOS_HEADER: &str = "x-mqtt-publish-qos";
/// Header set on a message published with the retain flag.
pub const RETAIN_HEADER: &str = "x-mqtt-retain";
/// Header set on a retained message's copy for a new subscription.
pub const RETAINED_HEADER: &str = "x-mqtt-retained";
/// Header naming the publishing client (only when it has a no-local
/// subscription: its own messages are not delivered back).
pub const PUBLISHER_HEADER: &str = "x-mqtt-publisher";
/// Header carrying an MQTT 5 payload format indicator.
pub const FORMAT_HEADER: &str = "x-mqtt-payload-format";
/// Header carrying MQTT 5 correlation data too long for `correlation_id`.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Sent at QoS 1 or 2 with this delivery tag: it waits for the client.
    Tracked(u64),
    /// Sent at QoS 0 (or dropped: no-local, over the client's maximum
    /// packet size): settled now.
    Settled,
    /// Not sent: no packet id is free (65,535 in flight): put it back.
    NoId,
}

/// The properties a delivery needs, read from its AMQP content header.
#[derive(Debug, Default)]
struct Meta {
    qos: u8,
    retain: bool,
    retained_copy: bool,
    publisher: Option<Bytes>,
    props: Properties,
}

/// Read what MQTT needs from a content header payload. The common case
/// (no properties but the delivery mode) is read without decoding.
fn meta(header: &[u8], v5: bool, wall_ms: u64, expires: Option<u64>) -> Meta {
    let flags = header
        .get(12..14)
        .and_then(|f| <[u8; 2]>::try_from(f).ok())
        .map_or(0, u16::from_be_bytes);
    if flags & !0x1000 == 0 {
        let persistent = flags != 0 && header.get(14) == Some(&2);
        return Meta {
            qos: u8::from(persistent),
            ..Meta::default()
        };
    }
    let owned = Bytes::copy_from_slice(header.get(12..).unwrap_or_default());
    let Ok(p) = BasicProperties::decode(&mut Reader::new(&owned)) else {
        return Meta::default();
    };
    let mut m = Meta {
        qos: u8::from(p.delivery_mode == Some(2)),
        ..Meta::default()
    };
    let headers = p.headers.unwrap_or_default();
    for (k, val) in headers.0 {
        match &k[..] {
            k if k == QOS_HEADER.as_bytes() => {
                if let Some(q) = val.as_i64() {
                    m.qos = q.clamp(0, 2) as u8;
                }
            }
            k if k == RETAIN_HEADER.as_bytes() => m.retain = true,
            k if k == RETAINED_HEADER.as_bytes() => m.retained_copy = true,
            k if k == PUBLISHER_HEADER.as_bytes() => m.publisher = val.as_bytes().cloned(),
            k if k == FORMAT_HEADER.as_bytes() && v5 => {
                m.props.payload_format_indicator = val.as_i64().map(|f| u8::from(f == 1))
            }
            k if k == CORRELATION_HEADER.as_bytes() && v5 => {
                m.props.correlation_data = val.as_bytes().cloned()
            }
            k if k.starts_with(b"x-mqtt-") => {}
            _ if v5 => {
                if let Some(s) = value_text(&val) {
                    m.props.user_properties.push((k, s));
                }
            }
            _ => {}
        }
    }
    if v5 {
        m.props.content_type = p.content_type;
        m.props.response_topic = p.reply_to.map(|r| topic::to_topic(&r));
        if m.props.correlation_data.is_none() {
            m.props.correlation_data = p.correlation_id;
        }
        if let Some(at) = expires {
            // MQTT-3.3.2-6: the interval minus the time it waited here.
            let left = at.saturating_sub(wall_ms).div_ceil(1000);
            m.props.message_expiry_interval = Some(left.min(u32::MAX as u64) as u32);
        }
    }
    m
}

/// An AMQP header value as an MQTT 5 user property value (strings and
/// numbers; other types are left out).
fn value_text(v: &FieldValue) -> Option<Bytes> {
    if let Some(b) = v.as_bytes() {
        return std::str::from_utf8(b).is_ok().then(|| b.clone());
    }
    match v {
        FieldValue::Bool(b) => Some(Bytes::from(b.to_string())),
        FieldValue::F32(f) => Some(Bytes::from(f.to_string())),
        FieldValue::F64(f) => Some(Bytes::from(f.to_string())),
        _ => v.as_i64().map(|i| Bytes::from(i.to_string())),
    }
}

/// MQTT 5 user properties as AMQP headers.
pub fn user_headers(props: &Properties, into: &mut FieldTable) {
    // Appended, not inserted: MQTT allows a name more than once, and the
    // order is kept (MQTT-3.3.2-18).
    for (k, v) in &props.user_properties {
        into.0.push((k.clone(), FieldValue::LongStr(v.clone())));
    }
}

/// Write a PUBLISH (with its WebSocket frame header on a WebSocket
/// connection) carrying `payload`.
#[allow(clippy::too_many_arguments)]
pub fn write_publish(
    out: &mut Outbox,
    ws: bool,
    v: Version,
    dup: bool,
    qos: u8,
    retain: bool,
    topic: &[u8],
    id: u16,
    props: &Properties,
    payload: &[u8],
    shared: Option<&Bytes>,
) {
    if ws {
        let total = codec::publish_size(v, topic.len(), qos, props, payload.len());
        crate::websocket::binary_header(out.buf(), total);
    }
    codec::encode_publish_head(
        out.buf(),
        v,
        dup,
        qos,
        retain,
        topic,
        id,
        props,
        payload.len(),
    );
    match shared {
        Some(b) => out.push_bytes(b),
        None => out.buf().extend_from_slice(payload),
    }
}

/// Encode any other packet for the session's version into the outbox.
pub fn write_packet(out: &mut Outbox, s: &Session, p: &codec::Packet) {
    if s.ws.is_some() {
        let mut tmp = BytesMut::new();
        codec::encode(p, s.v(), &mut tmp);
        if tmp.is_empty() {
            return;
        }
        crate::websocket::binary_header(out.buf(), tmp.len());
        out.buf().extend_from_slice(&tmp);
    } else {
        codec::encode(p, s.v(), out.buf());
    }
}

/// Deliver `m` (taken from queue `qid`; `queue_qos` 0 when its consumer
/// takes no acknowledgements, else 1) to the MQTT connection `c`
/// on its internal channel `ch`. `from_store`: its content, read back from
/// the store when it is paged out.
#[allow(clippy::too_many_arguments)]
pub fn deliver(
    c: &mut Connection,
    ch: u16,
    qid: crate::broker::QueueId,
    m: &QueuedMsg,
    from_store: Option<&(Bytes, Bytes)>,
    queue_qos: u8,
    shared: bool,
    wall_ms: u64,
) -> Sent {
    let Connection {
        mqtt,
        outbox,
        channels,
        ..
    } = c;
    let Some(s) = mqtt.as_deref_mut() else {
        return Sent::Settled;
    };
    let v = s.v();
    let p = m.parts();
    let header: &[u8] = from_store.map_or(p.header, |(h, _)| &h[..]);
    let big = m.big_body();
    let body: &[u8] = match (from_store, big) {
        (Some((_, b)), _) => b,
        (None, Some(b)) => b,
        (None, None) => p.inline_body,
    };
    let shared_body = match (from_store, big) {
        (Some((_, b)), _) | (None, Some(b)) if b.len() >= crate::codec::outbox::COPY_THRESHOLD => {
            Some(b)
        }
        _ => None,
    };
    let topic = topic::to_topic(p.routing_key);
    let mut meta = meta(header, v.is_v5(), wall_ms, m.expires_at());
    // The subscription's QoS and options: the queue's QoS for a session
    // whose subscriptions all look alike, else the matching ones'.
    let mut granted = s
        .subs
        .iter()
        .filter(|x| x.queue == qid)
        .map(|x| x.opts.qos)
        .max()
        .unwrap_or(queue_qos);
    let mut rap = false;
    if s.match_each && !shared {
        let mut any = false;
        let mut only_no_local = true;
        granted = 0;
        for sub in s.subs.iter().filter(|x| {
            topic::shared(&x.filter).is_none()
                && (x.opts.qos > 0) == (queue_qos > 0)
                && topic::matches(&x.matcher, &topic)
        }) {
            any = true;
            let own = sub.opts.no_local && meta.publisher.as_ref() == Some(&s.client_id);
            if own {
                continue;
            }
            only_no_local = false;
            granted = granted.max(sub.opts.qos);
            rap |= sub.opts.retain_as_published;
            if sub.id != 0 && v.is_v5() {
                meta.props.subscription_ids.push(sub.id);
            }
        }
        if any && only_no_local {
            return Sent::Settled;
        }
    }
    let qos = meta.qos.min(granted);
    let retain = meta.retained_copy || (rap && meta.retain);
    let size = codec::publish_size(v, topic.len(), qos, &meta.props, body.len());
    if size > s.max_packet_out as usize {
        // MQTT-3.1.2-25: a packet over the client's Maximum Packet Size
        // is discarded as if it had been sent.
        log::debug!(
            "MQTT client {}: a message of {size} bytes is over its maximum packet size; dropped",
            String::from_utf8_lossy(&s.client_id)
        );
        return Sent::Settled;
    }
    let ws = s.ws.is_some();
    if qos == 0 {
        write_publish(
            outbox,
            ws,
            v,
            false,
            0,
            retain,
            &topic,
            0,
            &meta.props,
            body,
            shared_body,
        );
        return Sent::Settled;
    }
    let Some(id) = s.alloc_id() else {
        return Sent::NoId;
    };
    let Some(chan) = channels.get_mut(ch) else {
        return Sent::Settled;
    };
    chan.last_tag += 1;
    let tag = chan.last_tag;
    s.outbound.insert(id, Outbound::Sent(tag));
    write_publish(
        outbox,
        ws,
        v,
        m.redelivered(),
        qos,
        retain,
        &topic,
        id,
        &meta.props,
        body,
        shared_body,
    );
    Sent::Tracked(tag)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::properties::ContentHeader;

    fn header(p: BasicProperties) -> Vec<u8> {
        let mut out = BytesMut::new();
        ContentHeader {
            class_id: 60,
            body_size: 3,
            properties: p,
        }
        .encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn the_delivery_mode_alone_is_read_without_decoding() {
        let h = header(BasicProperties {
            delivery_mode: Some(2),
            ..BasicProperties::default()
        });
        assert_eq!(meta(&h, true, 0, None).qos, 1);
        let h = header(BasicProperties::default());
        assert_eq!(meta(&h, true, 0, None).qos, 0);
    }

    #[test]
    fn headers_become_user_properties_and_qos() {
        let mut t = FieldTable::new();
        t.insert("x-mqtt-publish-qos", FieldValue::U8(2));
        t.insert("k", FieldValue::LongStr(Bytes::from_static(b"v")));
        t.insert("n", FieldValue::I32(5));
        let h = header(BasicProperties {
            delivery_mode: Some(2),
            headers: Some(t),
            content_type: Some(Bytes::from_static(b"text/plain")),
            reply_to: Some(Bytes::from_static(b"r.s")),
            ..BasicProperties::default()
        });
        let m = meta(&h, true, 1000, Some(5500));
        assert_eq!(m.qos, 2);
        assert_eq!(m.props.user_properties.len(), 2);
        assert_eq!(m.props.content_type.as_deref(), Some(&b"text/plain"[..]));
        assert_eq!(m.props.response_topic.as_deref(), Some(&b"r/s"[..]));
        assert_eq!(m.props.message_expiry_interval, Some(5));
        let m3 = meta(&h, false, 0, None);
        assert!(m3.props.user_properties.is_empty());
    }
}
