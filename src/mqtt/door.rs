//! The MQTT front door: packets in, engine actions out. CONNECT logs in
//! (the broker's users, `vhost:user` or `mqtt.vhost`) and opens the
//! session; PUBLISH is the engine's publish to `mqtt.exchange` with the
//! topic mapped to a routing key; SUBSCRIBE declares the session's queue
//! and binds it; acknowledgements settle deliveries as basic.ack does.
//! Every step checks the same permissions AMQP checks.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use log::{debug, info, warn};

use super::codec::{
    self, reason, Ack, ConnAck, Connect, Disconnect, Packet, Properties, Publish, SubAck,
    SubOptions, Subscribe, UnsubAck, Unsubscribe, Version, Will,
};
use super::deliver::{self, write_packet, PUBLISHER_HEADER, QOS_HEADER, RETAIN_HEADER};
use super::session::{Detached, Outbound, PendingWill, Retained, Session, Sub, MQTT_CHANNEL};
use super::topic;
use crate::amqp::channel::Channel;
use crate::amqp::{ConnState, Core};
use crate::broker::auth::Access;
use crate::broker::exchange::Dest;
use crate::broker::message::Message;
use crate::broker::{ConnId, QueueId, QueueSpec};
use crate::codec::properties::{BasicProperties, ContentHeader};
use crate::codec::table::{FieldTable, FieldValue};

/// A 3.1.1 CONNACK return code for an MQTT 5 reason code.
fn v3_connack(code: u8) -> u8 {
    match code {
        0 => 0,
        reason::UNSUPPORTED_VERSION => 1,
        reason::CLIENT_ID_NOT_VALID => 2,
        reason::SERVER_UNAVAILABLE | reason::SERVER_BUSY | reason::QUOTA_EXCEEDED => 3,
        reason::BAD_USER_OR_PASSWORD => 4,
        _ => 5,
    }
}

/// Binding argument keys that record a subscription's options (so a
/// persistent session's subscriptions survive restarts with its queue).
const ARG_FILTER: &str = "x-mqtt-filter";
const ARG_QOS: &str = "x-mqtt-qos";
const ARG_NO_LOCAL: &str = "x-mqtt-no-local";
const ARG_RAP: &str = "x-mqtt-retain-as-published";
const ARG_ID: &str = "x-mqtt-subscription-id";

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Core {
    /// Register a connection accepted on an MQTT listener (`ws`: the
    /// WebSocket one).
    pub fn accept_mqtt(&mut self, peer: std::net::SocketAddr, now: Instant, ws: bool) -> ConnId {
        info!(
            "accepting MQTT{} connection {peer}",
            if ws { " over WebSocket" } else { "" }
        );
        let id = self.new_conn(peer, now);
        if let Some(c) = self.conn_mut(id) {
            c.mqtt = Some(Box::new(Session::new(ws)));
            // An idle MQTT connection keeps no input buffer (see
            // `Core::input_idle`): thousands of idle sensors cost little.
            c.inbuf = BytesMut::new();
        }
        id
    }

    /// The vhost and client id key of a connected session.
    fn session_key(&self, id: ConnId) -> Option<(Bytes, Bytes)> {
        let c = self.conn(id)?;
        let s = c.mqtt.as_deref()?;
        s.version?;
        Some((c.vhost.clone(), s.client_id.clone()))
    }

    /// Parse and handle the MQTT packets in a connection's input (after the
    /// WebSocket layer, on a WebSocket connection).
    pub(crate) fn mqtt_process(&mut self, id: ConnId, now: Instant) {
        let path = self.engine.config.mqtt.ws_path.clone();
        let (max_auth, max_unauth) = (
            self.engine.config.mqtt.max_packet,
            self.engine.config.mqtt.max_packet_unauth,
        );
        let Some(c) = self.conn_mut(id) else { return };
        if !c.inbuf.is_empty() {
            c.last_recv = now;
        }
        if c.discard_input || c.state == ConnState::Dead {
            c.inbuf.clear();
            return;
        }
        // The WebSocket layer: the upgrade, then frames to MQTT bytes.
        if let Some(ws) = c.mqtt.as_deref_mut().and_then(|s| s.ws.as_deref_mut()) {
            if !ws.open {
                match crate::websocket::upgrade(
                    &c.inbuf,
                    &path,
                    &["mqtt", "mqttv3.1", "mqttv3.1.1"],
                ) {
                    crate::websocket::Upgrade::Partial => return,
                    crate::websocket::Upgrade::Reject { response, reason } => {
                        warn!("MQTT over WebSocket from {}: {reason}; refused", c.peer);
                        c.outbox.buf().extend_from_slice(&response);
                        c.inbuf.clear();
                        c.discard_input = true;
                        c.state = ConnState::Dead;
                        self.mark_flush(id);
                        return;
                    }
                    crate::websocket::Upgrade::Accept {
                        response, consumed, ..
                    } => {
                        c.outbox.buf().extend_from_slice(&response);
                        let _ = c.inbuf.split_to(consumed.min(c.inbuf.len()));
                        ws.open = true;
                    }
                }
            }
            let mut control = Vec::new();
            let max = max_auth as u64 + 16;
            let r = ws
                .decoder
                .decode(&mut c.inbuf, &mut ws.stream, &mut control, max);
            c.outbox.buf().extend_from_slice(&control);
            match r {
                Ok(crate::websocket::Event::None) => {}
                Ok(crate::websocket::Event::Close { reply, .. }) => {
                    c.outbox.buf().extend_from_slice(&reply);
                    c.inbuf.clear();
                    c.discard_input = true;
                    info!("MQTT over WebSocket {}: the client closed", c.peer);
                    self.mqtt_gone(id, now);
                    if let Some(c) = self.conn_mut(id) {
                        c.state = ConnState::Dead;
                    }
                    self.release_connection(id);
                    self.mark_flush(id);
                    return;
                }
                Err(e) => {
                    warn!("MQTT over WebSocket {}: {}; closing", c.peer, e.text);
                    c.outbox.buf().extend_from_slice(&e.close);
                    c.inbuf.clear();
                    c.discard_input = true;
                    self.mqtt_drop(id, now);
                    return;
                }
            }
        }
        loop {
            let Some(c) = self.conn_mut(id) else { return };
            if c.state == ConnState::Dead || c.discard_input {
                c.inbuf.clear();
                break;
            }
            let crate::amqp::Connection { mqtt, inbuf, .. } = c;
            let Some(s) = mqtt.as_deref_mut() else { return };
            let version = s.version;
            let max = if version.is_some() {
                max_auth
            } else {
                max_unauth
            };
            let buf = match s.ws.as_deref_mut() {
                Some(ws) => &mut ws.stream,
                None => inbuf,
            };
            match codec::decode(buf, version, max) {
                Ok(None) => break,
                Ok(Some(p)) => self.mqtt_packet(id, p, now),
                Err(e) => {
                    self.mqtt_decode_error(id, e, now);
                    break;
                }
            }
        }
        self.run_dispatch();
        if self.conn(id).is_some_and(|c| !c.outbox.is_empty()) {
            self.mark_flush(id);
        }
    }

    /// Input that is not valid MQTT: the answer the spec requires, then
    /// the connection is closed.
    fn mqtt_decode_error(&mut self, id: ConnId, e: codec::DecodeError, now: Instant) {
        let Some(c) = self.conn_mut(id) else { return };
        c.discard_input = true;
        c.inbuf.clear();
        let connected = c.mqtt.as_deref().is_some_and(|s| s.version.is_some());
        if !connected && e.reason == reason::UNSUPPORTED_VERSION {
            // MQTT-3.1.2-2: CONNACK 0x01 (unacceptable protocol level),
            // then close. A 3.1.1 CONNACK: the client's version is not one
            // we speak.
            warn!(
                "MQTT connection {}: {}; refused with CONNACK 0x01",
                c.peer, e.text
            );
            let ws = c.mqtt.as_deref().is_some_and(|s| s.ws.is_some());
            if ws {
                crate::websocket::binary_header(c.outbox.buf(), 4);
            }
            c.outbox.buf().extend_from_slice(&[0x20, 0x02, 0x00, 0x01]);
            c.state = ConnState::Dead;
            self.mark_flush(id);
            return;
        }
        let why = format!("{} (reason 0x{:02X})", e.text, e.reason);
        self.mqtt_close(id, e.reason, &why, now);
    }

    /// Close an MQTT connection because of an error: an MQTT 5 client that
    /// completed CONNECT is sent DISCONNECT with `code` first.
    pub(crate) fn mqtt_close(&mut self, id: ConnId, code: u8, why: &str, now: Instant) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.state == ConnState::Dead {
            return;
        }
        warn!("closing MQTT connection {}: {why}", c.peer);
        let crate::amqp::Connection { mqtt, outbox, .. } = c;
        if let Some(s) = mqtt.as_deref() {
            if s.version == Some(Version::V5) && !s.closing {
                let d = Packet::Disconnect(Disconnect {
                    code,
                    props: Properties::default(),
                });
                write_packet(outbox, s, &d);
            }
        }
        self.mqtt_drop(id, now);
    }

    /// End the connection: its session is released (will, detached
    /// state), then it is dead (the server closes its socket once the
    /// output is written).
    fn mqtt_drop(&mut self, id: ConnId, now: Instant) {
        self.mqtt_gone(id, now);
        if let Some(c) = self.conn_mut(id) {
            c.state = ConnState::Dead;
            c.discard_input = true;
        }
        self.release_connection(id);
        self.mark_flush(id);
    }

    /// The connection of an MQTT session ends (any way: error, DISCONNECT,
    /// socket closed, takeover): publish its will unless it disconnected
    /// normally, keep what a persistent session must remember, and forget
    /// the client id. Runs once per connection.
    pub(crate) fn mqtt_gone(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conn_mut(id) else { return };
        let vhost = c.vhost.clone();
        let Some(s) = c.mqtt.as_deref_mut() else {
            return;
        };
        if s.version.is_none() || s.closing {
            return;
        }
        s.closing = true;
        let key = (vhost.clone(), s.client_id.clone());
        let will = if s.clean_disconnect {
            None
        } else {
            s.will.take()
        };
        let persistent = !s.clean;
        let expiry = s.expiry;
        let inbound = std::mem::take(&mut s.inbound);
        let released: Vec<u16> = s
            .outbound
            .iter()
            .filter(|(_, o)| **o == Outbound::Released)
            .map(|(k, _)| *k)
            .collect();
        if self.mqtt.clients.get(&key) == Some(&id) {
            self.mqtt.clients.remove(&key);
        }
        if persistent {
            let until = (expiry != u32::MAX).then(|| now + Duration::from_secs(u64::from(expiry)));
            self.mqtt.detached.insert(
                key.clone(),
                Detached {
                    inbound,
                    released,
                    until,
                },
            );
        }
        if let Some(w) = will {
            let delay = w.props.will_delay_interval.unwrap_or(0);
            // MQTT-3.1.3-9: the will waits for its delay, or the session's
            // end if that comes first.
            let delay = if persistent { delay.min(expiry) } else { 0 };
            if delay == 0 {
                self.publish_will(&vhost, *w);
            } else {
                self.mqtt.wills.push(PendingWill {
                    key,
                    will: *w,
                    at: now + Duration::from_secs(u64::from(delay)),
                });
            }
        }
    }

    /// Publish a will (its permission was checked at CONNECT).
    fn publish_will(&mut self, vhost: &[u8], w: Will) {
        let exchange = Bytes::from(self.engine.config.mqtt.exchange.clone());
        let mut hdr = BytesMut::new();
        let msg = build_message(
            exchange,
            &w.topic,
            w.qos,
            w.retain,
            &w.props,
            w.payload.clone(),
            &mut hdr,
            None,
        );
        if w.retain {
            self.retain(vhost, &w.topic, w.qos, &msg);
        }
        info!(
            "MQTT: publishing a will to '{}' in vhost '{}'",
            lossy(&w.topic),
            lossy(vhost)
        );
        if let Err(e) = self.publish_message(vhost, msg, false) {
            warn!("MQTT: a will could not be published: {}", e.reply_text());
        }
    }

    /// One packet from a client.
    fn mqtt_packet(&mut self, id: ConnId, p: Packet, now: Instant) {
        let connected = self
            .conn(id)
            .and_then(|c| c.mqtt.as_deref())
            .is_some_and(|s| s.version.is_some());
        match p {
            Packet::Connect(c) if !connected => self.mqtt_connect(id, *c, now),
            Packet::Connect(_) => {
                // MQTT-3.1.0-2: a second CONNECT is a protocol violation.
                self.mqtt_close(id, reason::PROTOCOL_ERROR, "a second CONNECT", now)
            }
            _ if !connected => {
                self.mqtt_close(id, reason::PROTOCOL_ERROR, "a packet before CONNECT", now)
            }
            Packet::Publish(p) => self.mqtt_publish(id, p, now),
            Packet::PubAck(a) => self.mqtt_puback(id, a),
            Packet::PubRec(a) => self.mqtt_pubrec(id, a),
            Packet::PubRel(a) => self.mqtt_pubrel(id, a),
            Packet::PubComp(a) => self.mqtt_pubcomp(id, a),
            Packet::Subscribe(s) => self.mqtt_subscribe(id, s),
            Packet::Unsubscribe(u) => self.mqtt_unsubscribe(id, u),
            Packet::PingReq => self.mqtt_send(id, &Packet::PingResp),
            Packet::Disconnect(d) => {
                if let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) {
                    // MQTT-3.14.4-3: a normal DISCONNECT discards the will;
                    // MQTT 5's 0x04 asks for it.
                    s.clean_disconnect = d.code != reason::DISCONNECT_WITH_WILL;
                    if let Some(e) = d.props.session_expiry_interval {
                        if s.expiry == 0 && e != 0 {
                            // MQTT-3.14.2-2: 0 at CONNECT cannot become
                            // non-zero at DISCONNECT.
                            return self.mqtt_close(
                                id,
                                reason::PROTOCOL_ERROR,
                                "DISCONNECT sets a session expiry after CONNECT set none",
                                now,
                            );
                        }
                        s.expiry = e;
                        s.clean = e == 0;
                    }
                    s.closing = false;
                }
                debug!("MQTT connection {id:?}: DISCONNECT");
                self.mqtt_gone(id, now);
                if let Some(c) = self.conn_mut(id) {
                    c.state = ConnState::Dead;
                    c.discard_input = true;
                }
                self.release_connection(id);
                if self
                    .conn(id)
                    .and_then(|c| c.mqtt.as_deref())
                    .is_some_and(|s| s.clean)
                {
                    self.drop_session_queues(id);
                }
                self.mark_flush(id);
            }
            Packet::Auth(_) => self.mqtt_close(
                id,
                reason::BAD_AUTH_METHOD,
                "AUTH without an authentication method",
                now,
            ),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.mqtt_close(id, reason::PROTOCOL_ERROR, "a server-only packet", now)
            }
        }
    }

    /// Queue a packet for the client.
    pub(crate) fn mqtt_send(&mut self, id: ConnId, p: &Packet) {
        let Some(c) = self.conn_mut(id) else { return };
        let crate::amqp::Connection { mqtt, outbox, .. } = c;
        if let Some(s) = mqtt.as_deref() {
            write_packet(outbox, s, p);
        }
        self.mark_flush(id);
    }

    /// Refuse a CONNECT with `code` (an MQTT 5 reason code; a 3.1.1 client
    /// gets the matching return code) and close.
    fn connack_refuse(&mut self, id: ConnId, v: Version, code: u8, why: &str) {
        let code = if v.is_v5() { code } else { v3_connack(code) };
        if let Some(c) = self.conn_mut(id) {
            warn!(
                "MQTT connection {} refused (CONNACK 0x{code:02X}): {why}",
                c.peer
            );
            let crate::amqp::Connection { mqtt, outbox, .. } = c;
            if let Some(s) = mqtt.as_deref_mut() {
                s.version = Some(v);
                let p = Packet::ConnAck(ConnAck {
                    session_present: false,
                    code,
                    props: Properties::default(),
                });
                write_packet(outbox, s, &p);
                // Not a session: nothing to release.
                s.version = None;
            }
            c.state = ConnState::Dead;
            c.discard_input = true;
        }
        self.mark_flush(id);
    }

    /// CONNECT: log in, pick the vhost, take over or resume the session.
    fn mqtt_connect(&mut self, id: ConnId, cn: Connect, now: Instant) {
        let v = cn.version;
        let cfg = self.engine.config.mqtt.clone();
        // RabbitMQ: `vhost:user` names the vhost; else the port's vhost;
        // else `mqtt.vhost`.
        let port = self.conn(id).and_then(|c| c.local).map(|a| a.port());
        let default_vhost = cfg
            .port_vhosts
            .iter()
            .find(|(p, _)| Some(*p) == port)
            .map_or(cfg.vhost.clone(), |(_, v)| v.clone());
        let (user, pass) = match (&cn.username, &cn.password) {
            (Some(u), p) => (u.clone(), p.clone().unwrap_or_default()),
            (None, _) if cfg.allow_anonymous => (
                Bytes::from(cfg.default_user.clone()),
                Bytes::from(cfg.default_pass.clone()),
            ),
            (None, _) => {
                return self.connack_refuse(
                    id,
                    v,
                    reason::NOT_AUTHORIZED,
                    "no credentials, and anonymous logins are off",
                )
            }
        };
        let (vhost, user) = match user.iter().position(|&b| b == b':') {
            Some(i) => (user.slice(..i), user.slice(i + 1..)),
            None => (Bytes::from(default_vhost), user),
        };
        let Some(c) = self.conn(id) else { return };
        let to = c.local.unwrap_or(c.peer).ip();
        let known = self.engine.broker.auth.login(&user, &pass).is_some();
        if !known || !self.engine.config.may_login_from(&user, to) {
            let why = format!(
                "user '{}' failed to authenticate{}",
                lossy(&user),
                if known {
                    " (may only connect over a loopback address)"
                } else {
                    ""
                }
            );
            return self.connack_refuse(id, v, reason::BAD_USER_OR_PASSWORD, &why);
        }
        let (uname, vname) = (lossy(&user), lossy(&vhost));
        if self.engine.broker.vhost(&vhost).is_none()
            || !self.engine.broker.auth.may_open(&uname, &vname)
        {
            let why = format!("access to vhost '{vname}' refused for user '{uname}'");
            return self.connack_refuse(id, v, reason::NOT_AUTHORIZED, &why);
        }
        if let Err(e) = self.connection_limits(&uname, &vhost) {
            return self.connack_refuse(id, v, reason::QUOTA_EXCEEDED, &e.reply_text());
        }
        // The client id: an empty one gets a generated id, unless a 3.1.1
        // client wants its session kept (MQTT-3.1.3-8: 0x02).
        let mut assigned = None;
        let client_id = if cn.client_id.is_empty() {
            if !v.is_v5() && !cn.clean_start {
                return self.connack_refuse(
                    id,
                    v,
                    reason::CLIENT_ID_NOT_VALID,
                    "an empty client id with a persistent session",
                );
            }
            self.mqtt.generated += 1;
            let g = self
                .engine
                .broker
                .gen_name("warren-mqtt-", self.mqtt.generated);
            assigned = Some(g.clone());
            g
        } else {
            cn.client_id.clone()
        };
        let perm = self.engine.broker.auth.permission(&uname, &vname).cloned();
        let topic_checks = self.engine.broker.auth.topic_checks(&uname, &vname);
        if let Some(c) = self.conn_mut(id) {
            c.user = user.clone();
            c.vhost = vhost.clone();
            c.perm = perm;
            c.topic_checks = topic_checks;
        }
        // The will's topic must be one this user may publish to.
        if let Some(w) = &cn.will {
            let exchange = cfg.exchange.as_bytes();
            let ok = codec::valid_topic_name(&w.topic)
                && self
                    .check_access(id, Access::Write, "exchange", exchange)
                    .is_ok()
                && self
                    .check_topic(
                        id,
                        Access::Write,
                        &vhost,
                        exchange,
                        &topic::to_key(&w.topic),
                    )
                    .is_ok();
            if !ok {
                let why = format!("may not publish its will to '{}'", lossy(&w.topic));
                return self.connack_refuse(id, v, reason::NOT_AUTHORIZED, &why);
            }
        }
        let key = (vhost.clone(), client_id.clone());
        // MQTT-3.1.4-3: the session of a client already connected is taken
        // over: that connection is closed (MQTT 5: DISCONNECT 0x8E).
        if let Some(&old) = self.mqtt.clients.get(&key) {
            if old != id {
                info!(
                    "MQTT client id '{}' connected again: closing its previous connection",
                    lossy(&client_id)
                );
                self.mqtt_close(old, reason::SESSION_TAKEN_OVER, "session taken over", now);
            }
        }
        let expiry = if v.is_v5() {
            cn.props.session_expiry_interval.unwrap_or(0)
        } else if cn.clean_start {
            0
        } else {
            u32::MAX
        };
        let persistent = expiry != 0;
        // The previous session: gone if the client starts clean, if it
        // expired, or if it was never persistent.
        let old = self.mqtt.detached.remove(&key);
        let expired = old
            .as_ref()
            .and_then(|d| d.until)
            .is_some_and(|until| now >= until);
        self.mqtt.wills.retain(|w| w.key != key);
        let resume = !cn.clean_start && !expired;
        let queues = self.session_queues(&vhost, &client_id);
        if !resume {
            for q in queues.iter().flatten() {
                self.delete_queue(*q);
            }
        }
        let (subs, present) = if resume {
            let subs = self.restore_subs(&vhost, &queues);
            let present = queues.iter().any(Option::is_some) || old.is_some();
            (subs, present)
        } else {
            (Vec::new(), false)
        };
        let receive_max = cn.props.receive_maximum.unwrap_or(cfg.prefetch);
        let receive_max = if v.is_v5() { receive_max } else { cfg.prefetch };
        let Some(c) = self.conn_mut(id) else { return };
        let peer = c.peer;
        c.state = ConnState::Running;
        c.heartbeat = 0;
        let crate::amqp::Connection { mqtt, outbox, .. } = c;
        let Some(s) = mqtt.as_deref_mut() else { return };
        s.version = Some(v);
        s.client_id = client_id.clone();
        s.clean = !persistent;
        s.expiry = expiry;
        s.keep_alive = cn.keep_alive;
        s.will = cn.will.map(Box::new);
        s.receive_max = receive_max;
        s.subs = subs;
        s.update_match_each();
        s.max_packet_out = cn.props.maximum_packet_size.unwrap_or(u32::MAX);
        let mut props = Properties::default();
        if v.is_v5() {
            props.assigned_client_id = assigned;
            props.topic_alias_maximum = Some(cfg.topic_alias_max);
            props.maximum_packet_size = Some(cfg.max_packet.min(268_435_455) as u32);
        }
        let ack = Packet::ConnAck(ConnAck {
            session_present: present,
            code: 0,
            props,
        });
        write_packet(outbox, s, &ack);
        // MQTT-4.4.0-1: a resumed session resends PUBREL for what the
        // client received but had not completed; unacknowledged PUBLISHes
        // come again from the queue (requeued when the old connection
        // went), with DUP set.
        if let Some(d) = old.filter(|_| resume) {
            s.inbound = d.inbound;
            for pid in d.released {
                s.outbound.insert(pid, Outbound::Released);
                let rel = Packet::PubRel(Ack {
                    packet_id: pid,
                    code: 0,
                    props: Properties::default(),
                });
                write_packet(outbox, s, &rel);
            }
        }
        info!(
            "MQTT connection {peer}: client '{}' ({}) user '{}' vhost '{}'{}",
            lossy(&client_id),
            match v {
                Version::V31 => "MQTT 3.1",
                Version::V311 => "MQTT 3.1.1",
                Version::V5 => "MQTT 5.0",
            },
            uname,
            vname,
            if present { ", session resumed" } else { "" }
        );
        self.mqtt.clients.insert(key, id);
        // Consume from the session's queues again.
        for (i, q) in queues.into_iter().enumerate() {
            if let Some(q) = q {
                let qos = i as u8;
                if let Err(e) = self.mqtt_consume(id, &vhost, q, qos_tag(qos), qos == 0) {
                    warn!("MQTT client '{}': {}", lossy(&client_id), e.reply_text());
                }
            }
        }
        let shared: Vec<(QueueId, u8)> = self
            .conn(id)
            .and_then(|c| c.mqtt.as_deref())
            .map(|s| {
                s.subs
                    .iter()
                    .filter(|x| topic::shared(&x.filter).is_some())
                    .map(|x| (x.queue, x.opts.qos))
                    .collect()
            })
            .unwrap_or_default();
        for (q, qos) in shared {
            let tag = shared_tag(self, q);
            let _ = self.mqtt_consume(id, &vhost, q, tag, qos == 0);
        }
        self.mark_flush(id);
    }

    /// The session's own queues (QoS 0, QoS 1) if they exist.
    fn session_queues(&self, vhost: &[u8], client_id: &[u8]) -> [Option<QueueId>; 2] {
        [0, 1].map(|qos| self.engine.find_queue(vhost, &queue_name(client_id, qos)))
    }

    /// A persistent session's subscriptions, read back from its queues'
    /// bindings (their arguments hold the options).
    fn restore_subs(&self, vhost: &[u8], queues: &[Option<QueueId>; 2]) -> Vec<Sub> {
        let exchange = self.engine.config.mqtt.exchange.as_bytes();
        let Some(x) = self
            .engine
            .broker
            .vhost(vhost)
            .and_then(|v| v.exchanges.get(exchange))
        else {
            return Vec::new();
        };
        let mut subs = Vec::new();
        for b in &x.bindings {
            let Dest::Queue(q) = b.dest else { continue };
            if !queues.contains(&Some(q)) {
                continue;
            }
            if let Some(sub) = sub_from_args(&b.arguments, q) {
                subs.push(sub);
            }
        }
        subs
    }

    /// Consume from `q` on the internal channel (if not already).
    fn mqtt_consume(
        &mut self,
        id: ConnId,
        vhost: &[u8],
        q: QueueId,
        tag: Bytes,
        no_ack: bool,
    ) -> Result<(), crate::codec::Error> {
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        if c.channel(MQTT_CHANNEL).is_none() {
            // The internal channel, made at the first subscription.
            let receive_max = c.mqtt.as_deref().map_or(0, |s| s.receive_max);
            let mut chan = Channel::new(MQTT_CHANNEL);
            chan.prefetch_count = receive_max;
            chan.global_prefetch = receive_max;
            c.channels.insert(chan);
        }
        if c.channel(MQTT_CHANNEL)
            .is_some_and(|ch| ch.consumers.contains(&tag))
        {
            return Ok(());
        }
        let c = crate::amqp::Consume {
            tag,
            no_ack,
            exclusive: false,
            priority: 0,
            timeout: None,
            arguments: None,
        };
        self.add_consumer(id, MQTT_CHANNEL, vhost, q, c)
    }

    /// A clean session's queues go with it (a persistent one's stay).
    fn drop_session_queues(&mut self, id: ConnId) {
        let Some((vhost, client)) = self.session_key(id) else {
            return;
        };
        for q in self.session_queues(&vhost, &client).into_iter().flatten() {
            self.delete_queue(q);
        }
    }

    /// PUBLISH from the client.
    fn mqtt_publish(&mut self, id: ConnId, mut p: Publish, now: Instant) {
        let alias_max = self.engine.config.mqtt.topic_alias_max;
        let exchange = Bytes::from(self.engine.config.mqtt.exchange.clone());
        let Some(c) = self.conn_mut(id) else { return };
        let vhost = c.vhost.clone();
        let Some(s) = c.mqtt.as_deref_mut() else {
            return;
        };
        let v = s.v();
        // MQTT 5 topic aliases (MQTT-3.3.2-7..12).
        if let Some(a) = p.props.topic_alias.take() {
            if a == 0 || a > alias_max {
                return self.mqtt_close(
                    id,
                    reason::TOPIC_ALIAS_INVALID,
                    "topic alias out of range",
                    now,
                );
            }
            if p.topic.is_empty() {
                match s.aliases.get(&a) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return self.mqtt_close(
                            id,
                            reason::PROTOCOL_ERROR,
                            "an unknown topic alias",
                            now,
                        )
                    }
                }
            } else {
                s.aliases.insert(a, p.topic.clone());
            }
        }
        if !codec::valid_topic_name(&p.topic) {
            // MQTT-3.3.2-2: no wildcards in a topic name.
            let why = format!("invalid topic name '{}'", lossy(&p.topic));
            return self.mqtt_close(id, reason::TOPIC_NAME_INVALID, &why, now);
        }
        // An exactly-once message already received: acknowledge it again,
        // do not route it twice (MQTT-4.3.3-10).
        if p.qos == 2 && s.inbound.contains(&p.packet_id) {
            let rec = Packet::PubRec(Ack {
                packet_id: p.packet_id,
                code: 0,
                props: Properties::default(),
            });
            return self.mqtt_send(id, &rec);
        }
        let no_local = s.subs.iter().any(|x| x.opts.no_local);
        let publisher = no_local.then(|| s.client_id.clone());
        let key = topic::to_key(&p.topic);
        let mut hdr = std::mem::take(&mut s.hdr);
        c.published = true;
        let allowed = self
            .check_access(id, Access::Write, "exchange", &exchange)
            .and_then(|()| self.check_topic(id, Access::Write, &vhost, &exchange, &key));
        if let Err(e) = allowed {
            if let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) {
                s.hdr = hdr;
            }
            if v.is_v5() && p.qos > 0 {
                warn!("MQTT publish refused: {}", e.reply_text());
                return self.mqtt_puback_now(id, p.qos, p.packet_id, reason::NOT_AUTHORIZED);
            }
            return self.mqtt_close(id, reason::NOT_AUTHORIZED, &e.reply_text(), now);
        }
        let msg = build_message(
            exchange,
            &p.topic,
            p.qos,
            p.retain,
            &p.props,
            p.payload.clone(),
            &mut hdr,
            publisher.as_ref(),
        );
        if let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) {
            s.hdr = hdr;
        }
        if p.retain {
            self.retain(&vhost, &p.topic, p.qos, &msg);
        }
        let stats = self.mqtt.stats_of(v);
        stats.received += 1;
        let routed = match self.publish_message(&vhost, msg, false) {
            Ok(r) => r,
            Err(e) => {
                return self.mqtt_close(id, reason::IMPLEMENTATION_SPECIFIC, &e.reply_text(), now)
            }
        };
        if !routed.routed {
            self.mqtt.stats_of(v).unroutable += 1;
        }
        if p.qos == 0 {
            return;
        }
        // A queue that refuses it (x-overflow reject-publish) is MQTT 5's
        // quota exceeded; a 3.1.1 client cannot be told.
        let code = if routed.rejected {
            reason::QUOTA_EXCEEDED
        } else if routed.routed {
            0
        } else {
            reason::NO_MATCHING_SUBSCRIBERS
        };
        if p.qos == 2 {
            if let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) {
                s.inbound.insert(p.packet_id);
            }
        }
        if routed.stored {
            // Acknowledged once the store has it on disk.
            self.engine.force_sync = true;
            if let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) {
                s.acks_after_sync.push((p.qos, p.packet_id, code));
                if !s.waiting_sync {
                    s.waiting_sync = true;
                    self.sync_waiters.push((id, MQTT_CHANNEL));
                }
            }
        } else {
            self.mqtt_puback_now(id, p.qos, p.packet_id, code);
        }
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2) now.
    fn mqtt_puback_now(&mut self, id: ConnId, qos: u8, pid: u16, code: u8) {
        let a = Ack {
            packet_id: pid,
            code,
            props: Properties::default(),
        };
        let p = if qos == 2 {
            Packet::PubRec(a)
        } else {
            Packet::PubAck(a)
        };
        self.mqtt_send(id, &p);
    }

    /// The store synced (`ok`) or failed: send the acknowledgements that
    /// waited for it (a failed sync closes the connection: the client
    /// publishes again what was not acknowledged).
    pub(crate) fn mqtt_release_acks(&mut self, id: ConnId, ok: bool) {
        let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) else {
            return;
        };
        s.waiting_sync = false;
        let acks = std::mem::take(&mut s.acks_after_sync);
        if !ok {
            let now = self.engine.now();
            return self.mqtt_close(
                id,
                reason::UNSPECIFIED,
                "the message store failed to sync",
                now,
            );
        }
        for (qos, pid, code) in acks {
            self.mqtt_puback_now(id, qos, pid, code);
        }
    }

    /// PUBACK: a QoS 1 delivery is settled.
    fn mqtt_puback(&mut self, id: ConnId, a: Ack) {
        let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) else {
            return;
        };
        match s.outbound.get(&a.packet_id) {
            Some(Outbound::Sent(tag)) => {
                let tag = *tag;
                s.outbound.remove(&a.packet_id);
                let v = s.v();
                self.mqtt.stats_of(v).acknowledged += 1;
                let _ = self.basic_ack(id, MQTT_CHANNEL, tag, false);
            }
            _ => debug!("MQTT: PUBACK for unknown packet id {}", a.packet_id),
        }
    }

    /// PUBREC: a QoS 2 delivery arrived; the message is settled here and
    /// PUBREL sent.
    fn mqtt_pubrec(&mut self, id: ConnId, a: Ack) {
        let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) else {
            return;
        };
        let tag = match s.outbound.get(&a.packet_id) {
            Some(Outbound::Sent(tag)) => Some(*tag),
            Some(Outbound::Released) => None,
            None => {
                // MQTT 5: PUBREL with 0x92 for an id not in use.
                let rel = Packet::PubRel(Ack {
                    packet_id: a.packet_id,
                    code: reason::PACKET_ID_NOT_FOUND,
                    props: Properties::default(),
                });
                return self.mqtt_send(id, &rel);
            }
        };
        if a.code >= 0x80 {
            // The client refused it: settled, no PUBREL (MQTT-4.3.3-4).
            s.outbound.remove(&a.packet_id);
        } else {
            s.outbound.insert(a.packet_id, Outbound::Released);
        }
        if let Some(tag) = tag {
            let v = s.v();
            self.mqtt.stats_of(v).acknowledged += 1;
            let _ = self.basic_ack(id, MQTT_CHANNEL, tag, false);
        }
        if a.code < 0x80 {
            let rel = Packet::PubRel(Ack {
                packet_id: a.packet_id,
                code: 0,
                props: Properties::default(),
            });
            self.mqtt_send(id, &rel);
        }
    }

    /// PUBREL: the client releases an exactly-once message it sent.
    fn mqtt_pubrel(&mut self, id: ConnId, a: Ack) {
        let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) else {
            return;
        };
        let known = s.inbound.remove(&a.packet_id);
        if !known {
            debug!("MQTT: PUBREL for unknown packet id {}", a.packet_id);
        }
        let comp = Packet::PubComp(Ack {
            packet_id: a.packet_id,
            code: if known {
                0
            } else {
                reason::PACKET_ID_NOT_FOUND
            },
            props: Properties::default(),
        });
        self.mqtt_send(id, &comp);
    }

    /// PUBCOMP: an outbound exactly-once delivery is complete.
    fn mqtt_pubcomp(&mut self, id: ConnId, a: Ack) {
        if let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) {
            if s.outbound.get(&a.packet_id) == Some(&Outbound::Released) {
                s.outbound.remove(&a.packet_id);
            }
        }
    }

    /// SUBSCRIBE: per filter, the session's queue for its QoS (or the
    /// shared subscription's queue), bound to the exchange with the
    /// filter's key; then its retained messages.
    fn mqtt_subscribe(&mut self, id: ConnId, sub: Subscribe) {
        let cfg_exchange = self.engine.config.mqtt.exchange.clone();
        let exchange = Bytes::from(cfg_exchange);
        let Some(c) = self.conn(id) else { return };
        let vhost = c.vhost.clone();
        let Some(s) = c.mqtt.as_deref() else { return };
        let (client, persistent, expiry) = (s.client_id.clone(), !s.clean, s.expiry);
        let sub_id = sub.props.subscription_ids.first().copied().unwrap_or(0);
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut retained_for = Vec::new();
        for (filter, opts) in sub.filters {
            let shared = topic::shared(&filter)
                .map(|(g, f)| (Bytes::copy_from_slice(g), Bytes::copy_from_slice(f)));
            if !codec::valid_topic_filter(&filter) || (shared.is_some() && opts.no_local) {
                // MQTT-3.8.3-4: no-local on a shared subscription is a
                // protocol error; an invalid filter fails alone.
                warn!("MQTT SUBSCRIBE: invalid topic filter '{}'", lossy(&filter));
                codes.push(reason::TOPIC_FILTER_INVALID);
                continue;
            }
            let granted = opts.qos.min(2);
            let matcher = shared.as_ref().map_or(filter.clone(), |(_, f)| f.clone());
            let key = topic::to_key(&matcher);
            let qname = match &shared {
                Some((g, f)) => shared_queue_name(g, &topic::to_key(f)),
                None => queue_name(&client, u8::from(granted > 0)),
            };
            let r = self.mqtt_bind(
                id,
                &vhost,
                &exchange,
                &qname,
                &key,
                persistent && shared.is_none(),
                expiry,
            );
            let q = match r {
                Ok(q) => q,
                Err(e) => {
                    warn!(
                        "MQTT SUBSCRIBE to '{}' refused: {}",
                        lossy(&filter),
                        e.reply_text()
                    );
                    codes.push(if e.code == crate::codec::ReplyCode::ACCESS_REFUSED {
                        reason::NOT_AUTHORIZED
                    } else {
                        reason::IMPLEMENTATION_SPECIFIC
                    });
                    continue;
                }
            };
            let new = Sub {
                filter: filter.clone(),
                matcher: matcher.clone(),
                opts: SubOptions {
                    qos: granted,
                    ..opts
                },
                id: sub_id,
                queue: q,
            };
            // A subscription to the same filter replaces the old one
            // (MQTT-3.8.4-3); its binding (and maybe queue) changes.
            let existed = self.mqtt_unsubscribe_one(id, &vhost, &exchange, &filter);
            if let Err(e) = self.engine.bind(
                &vhost,
                &exchange,
                Dest::Queue(q),
                key.clone(),
                sub_args(&new),
            ) {
                warn!("MQTT SUBSCRIBE: {}", e.reply_text());
                codes.push(reason::IMPLEMENTATION_SPECIFIC);
                continue;
            }
            let tag = if shared.is_some() {
                shared_tag(self, q)
            } else {
                qos_tag(u8::from(granted > 0))
            };
            if let Err(e) = self.mqtt_consume(id, &vhost, q, tag, granted == 0) {
                warn!("MQTT SUBSCRIBE: {}", e.reply_text());
            }
            if shared.is_none()
                && (opts.retain_handling == 0 || (opts.retain_handling == 1 && !existed))
            {
                retained_for.push((matcher.clone(), q));
            }
            if let Some(s) = self.conn_mut(id).and_then(|c| c.mqtt.as_deref_mut()) {
                s.subs.push(new);
                s.update_match_each();
            }
            self.drop_unused_queues(id);
            codes.push(granted);
        }
        let ack = Packet::SubAck(SubAck {
            packet_id: sub.packet_id,
            props: Properties::default(),
            codes,
        });
        self.mqtt_send(id, &ack);
        // MQTT-3.3.1-9: matching retained messages, after the SUBACK.
        for (matcher, q) in retained_for {
            self.send_retained(&vhost, &matcher, q);
        }
    }

    /// Declare (if need be) the queue named `qname` and check the
    /// permissions a binding of `key` to `exchange` takes (RabbitMQ's:
    /// configure on the queue, write on the queue, read on the exchange,
    /// and the topic read permission).
    #[allow(clippy::too_many_arguments)]
    fn mqtt_bind(
        &mut self,
        id: ConnId,
        vhost: &Bytes,
        exchange: &Bytes,
        qname: &Bytes,
        key: &Bytes,
        durable: bool,
        expiry: u32,
    ) -> Result<QueueId, crate::codec::Error> {
        let existing = self.engine.find_queue(vhost, qname);
        if existing.is_none() {
            self.check_access(id, Access::Configure, "queue", qname)?;
        }
        self.check_access(id, Access::Write, "queue", qname)?;
        self.check_access(id, Access::Read, "exchange", exchange)?;
        self.check_topic(id, Access::Read, vhost, exchange, key)?;
        if let Some(q) = existing {
            return Ok(q);
        }
        let mut arguments = FieldTable::new();
        if durable && expiry != u32::MAX {
            // MQTT 5's session expiry is the queue's expiry (RabbitMQ
            // 3.13 does the same).
            arguments.insert(
                "x-expires",
                FieldValue::I64(i64::from(expiry.max(1)) * 1000),
            );
        }
        let spec = QueueSpec {
            name: qname.clone(),
            passive: false,
            durable,
            exclusive: false,
            auto_delete: !durable,
            arguments,
        };
        let (q, created) = self.engine.declare_queue(vhost, spec, id, 0)?;
        if created && durable {
            self.depend_on_commit(id);
        }
        Ok(q)
    }

    /// Stop consuming from the session's own queues no subscription uses
    /// any more (an auto-delete one goes with its consumer).
    fn drop_unused_queues(&mut self, id: ConnId) {
        let Some(c) = self.conn(id) else { return };
        let Some(s) = c.mqtt.as_deref() else { return };
        let used: Vec<QueueId> = s.subs.iter().map(|x| x.queue).collect();
        let unused: Vec<Bytes> = c
            .channel(MQTT_CHANNEL)
            .map(|ch| {
                ch.consumers
                    .iter()
                    .filter(|(_, k)| !used.contains(&k.queue))
                    .map(|(_, k)| k.tag.clone())
                    .collect()
            })
            .unwrap_or_default();
        for tag in unused {
            self.cancel_consumer(id, MQTT_CHANNEL, &tag);
        }
    }

    /// UNSUBSCRIBE.
    fn mqtt_unsubscribe(&mut self, id: ConnId, u: Unsubscribe) {
        let exchange = Bytes::from(self.engine.config.mqtt.exchange.clone());
        let Some(c) = self.conn(id) else { return };
        let vhost = c.vhost.clone();
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in u.filters {
            let existed = self.mqtt_unsubscribe_one(id, &vhost, &exchange, &filter);
            codes.push(if existed {
                0
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.drop_unused_queues(id);
        let ack = Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            props: Properties::default(),
            codes,
        });
        self.mqtt_send(id, &ack);
    }

    /// Remove the session's subscription to `filter` and its binding;
    /// false if it had none.
    fn mqtt_unsubscribe_one(
        &mut self,
        id: ConnId,
        vhost: &[u8],
        exchange: &[u8],
        filter: &[u8],
    ) -> bool {
        let old = self
            .conn_mut(id)
            .and_then(|c| c.mqtt.as_deref_mut())
            .and_then(|s| {
                let i = s.subs.iter().position(|x| x.filter == filter)?;
                let old = s.subs.remove(i);
                s.update_match_each();
                Some(old)
            });
        let Some(old) = old else {
            return false;
        };
        let _ = self.engine.unbind(
            vhost,
            exchange,
            Dest::Queue(old.queue),
            topic::to_key(&old.matcher),
            sub_args(&old),
        );
        true
    }

    /// Store (or, with an empty payload, clear) the retained message of a
    /// topic.
    fn retain(&mut self, vhost: &[u8], topic_name: &[u8], qos: u8, msg: &Message) {
        let expires = msg.ttl.map(|t| self.engine.wall_ms().saturating_add(t));
        let map = self
            .mqtt
            .retained
            .entry(Bytes::copy_from_slice(vhost))
            .or_default();
        if msg.body.is_empty() {
            // MQTT-3.3.1-10: an empty retained message clears the topic's.
            map.remove(topic_name);
        } else {
            map.insert(
                Bytes::copy_from_slice(topic_name),
                Retained {
                    qos,
                    expires,
                    header: msg.header.clone(),
                    payload: msg.body.clone(),
                },
            );
        }
        self.mqtt.retained_dirty = true;
    }

    /// Put copies of the retained messages matching `filter` into queue
    /// `q` (marked, so they go out with the retain flag set).
    fn send_retained(&mut self, vhost: &[u8], filter: &[u8], q: QueueId) {
        let now = self.engine.wall_ms();
        let Some(map) = self.mqtt.retained.get_mut(vhost) else {
            return;
        };
        // MQTT-3.3.2-5: an expired retained message is retained no longer.
        let before = map.len();
        map.retain(|_, r| r.expires.is_none_or(|e| e > now));
        if map.len() != before {
            self.mqtt.retained_dirty = true;
        }
        let exchange = Bytes::from(self.engine.config.mqtt.exchange.clone());
        let copies: Vec<Message> = map
            .iter()
            .filter(|(t, _)| topic::matches(filter, t))
            .map(|(t, r)| retained_copy(&exchange, t, r, now))
            .collect();
        for m in copies {
            self.engine.enqueue(m, &[q]);
        }
        self.engine.mark_queue(q);
    }

    /// Write the retained messages (they changed this turn).
    pub(crate) fn mqtt_save_retained(&mut self) {
        self.mqtt.retained_dirty = false;
        let Some(dir) = self.engine.config.data_dir.clone() else {
            return;
        };
        let entries: Vec<crate::store::retained::Entry> = self
            .mqtt
            .retained
            .iter()
            .flat_map(|(v, m)| {
                m.iter().map(move |(t, r)| {
                    (
                        v.clone(),
                        t.clone(),
                        r.qos,
                        r.expires,
                        r.header.clone(),
                        r.payload.clone(),
                    )
                })
            })
            .collect();
        if let Err(e) = crate::store::retained::save(&dir, &entries) {
            // Tried again with the next change.
            log::error!("MQTT retained messages could not be written: {e}");
        }
    }

    /// Read the retained messages back at start.
    pub(crate) fn mqtt_load_retained(&mut self) {
        let Some(dir) = self.engine.config.data_dir.clone() else {
            return;
        };
        match crate::store::retained::load(&dir) {
            Ok(entries) => {
                let n = entries.len();
                for (vhost, topic_name, qos, expires, header, payload) in entries {
                    self.mqtt.retained.entry(vhost).or_default().insert(
                        topic_name,
                        Retained {
                            qos,
                            expires,
                            header,
                            payload,
                        },
                    );
                }
                if n > 0 {
                    info!("MQTT: {n} retained messages restored");
                }
            }
            Err(e) => log::error!("MQTT retained messages not restored: {e}"),
        }
    }

    /// Timers: keep-alive (MQTT-3.1.2-24: 1.5 times the interval), wills
    /// whose delay is over, detached sessions that expired.
    pub(crate) fn mqtt_tick(&mut self, now: Instant) {
        let mut late = Vec::new();
        let (blocked, max_outbox) = (self.engine.alarms.blocked, self.engine.config.max_outbox);
        for (_, c) in self.conns.iter_mut() {
            let Some(s) = c.mqtt.as_deref() else { continue };
            if c.state != ConnState::Running || s.keep_alive == 0 {
                continue;
            }
            // A connection the server does not read (a publisher blocked
            // by an alarm, a subscriber whose output is backed up) has its
            // packets waiting unread: its keep-alive is paused, as AMQP's
            // heartbeat monitor is.
            if (blocked && c.published) || c.outbox.len() >= max_outbox {
                c.last_recv = now;
                continue;
            }
            let limit = Duration::from_millis(u64::from(s.keep_alive) * 1500);
            if now.duration_since(c.last_recv) >= limit {
                late.push((c.id, s.keep_alive));
            }
        }
        for (id, ka) in late {
            let why = format!("no packet within 1.5 times its keep-alive of {ka} s");
            self.mqtt_close(id, reason::KEEP_ALIVE_TIMEOUT, &why, now);
        }
        if self.mqtt.wills.iter().any(|w| now >= w.at) {
            let (due, wait): (Vec<PendingWill>, Vec<PendingWill>) =
                std::mem::take(&mut self.mqtt.wills)
                    .into_iter()
                    .partition(|w| now >= w.at);
            self.mqtt.wills = wait;
            for w in due {
                self.publish_will(&w.key.0, w.will);
            }
        }
        self.mqtt
            .detached
            .retain(|_, d| d.until.is_none_or(|u| now < u));
    }
}

/// The session queue of a client for QoS 0 or 1 (RabbitMQ's names).
pub fn queue_name(client_id: &[u8], qos: u8) -> Bytes {
    let mut n = BytesMut::with_capacity(client_id.len() + 24);
    n.extend_from_slice(b"mqtt-subscription-");
    n.extend_from_slice(client_id);
    n.extend_from_slice(if qos == 0 { b"qos0" } else { b"qos1" });
    n.freeze()
}

/// The queue of a shared subscription (`$share/{group}/{filter}`): one
/// per group and filter, its subscribers competing consumers.
fn shared_queue_name(group: &[u8], key: &[u8]) -> Bytes {
    let mut n = BytesMut::new();
    n.extend_from_slice(b"mqtt-shared-");
    n.extend_from_slice(group);
    n.extend_from_slice(b"-");
    n.extend_from_slice(key);
    n.truncate(255);
    n.freeze()
}

/// Consumer tag for the session's own queue.
fn qos_tag(qos: u8) -> Bytes {
    Bytes::from_static(if qos == 0 { b"mqtt-qos0" } else { b"mqtt-qos1" })
}

/// Consumer tag for a shared subscription's queue.
fn shared_tag(core: &Core, q: QueueId) -> Bytes {
    let name = core
        .engine
        .broker
        .queue(q)
        .map(|x| x.name.clone())
        .unwrap_or_default();
    let mut t = BytesMut::from(&b"mqtt-shared:"[..]);
    t.extend_from_slice(&name);
    t.truncate(255);
    t.freeze()
}

/// A subscription's binding arguments.
fn sub_args(s: &Sub) -> FieldTable {
    let mut t = FieldTable::new();
    t.insert(ARG_FILTER, FieldValue::LongStr(s.filter.clone()));
    t.insert(ARG_QOS, FieldValue::U8(s.opts.qos));
    if s.opts.no_local {
        t.insert(ARG_NO_LOCAL, FieldValue::Bool(true));
    }
    if s.opts.retain_as_published {
        t.insert(ARG_RAP, FieldValue::Bool(true));
    }
    if s.id != 0 {
        t.insert(ARG_ID, FieldValue::U32(s.id));
    }
    t
}

/// A subscription from its binding's arguments.
fn sub_from_args(args: &FieldTable, queue: QueueId) -> Option<Sub> {
    let filter = args.get(ARG_FILTER)?.as_bytes()?.clone();
    let qos = args.get(ARG_QOS)?.as_i64()?.clamp(0, 2) as u8;
    let flag = |k: &str| matches!(args.get(k), Some(FieldValue::Bool(true)));
    let matcher = topic::shared(&filter)
        .map(|(_, f)| Bytes::copy_from_slice(f))
        .unwrap_or_else(|| filter.clone());
    Some(Sub {
        filter,
        matcher,
        opts: SubOptions {
            qos,
            no_local: flag(ARG_NO_LOCAL),
            retain_as_published: flag(ARG_RAP),
            retain_handling: 0,
        },
        id: args
            .get(ARG_ID)
            .and_then(|v| v.as_i64())
            .map_or(0, |i| i.clamp(0, u32::MAX as i64) as u32),
        queue,
    })
}

/// A copy of a retained message for a new subscription's queue (`now`:
/// wall-clock ms; it expires when the retained message would).
fn retained_copy(exchange: &Bytes, topic_name: &Bytes, r: &Retained, now: u64) -> Message {
    let props = Bytes::copy_from_slice(r.header.get(12..).unwrap_or_default());
    let mut p =
        BasicProperties::decode(&mut crate::codec::reader::Reader::new(&props)).unwrap_or_default();
    let mut headers = p.headers.take().unwrap_or_default();
    headers.insert(deliver::RETAINED_HEADER, FieldValue::Bool(true));
    headers.insert(QOS_HEADER, FieldValue::U8(r.qos));
    p.headers = Some(headers);
    let mut out = BytesMut::new();
    ContentHeader {
        class_id: 60,
        body_size: r.payload.len() as u64,
        properties: p,
    }
    .encode(&mut out);
    let mut m = Message::new(
        exchange.clone(),
        topic::to_key(topic_name),
        out.freeze(),
        r.payload.clone(),
        r.qos > 0,
    );
    m.ttl = r.expires.map(|e| e.saturating_sub(now));
    m
}

/// The message an MQTT PUBLISH (or will) becomes: RabbitMQ's mapping
/// (persistent for QoS 1 and 2; the QoS in `x-mqtt-publish-qos` when it
/// is 2; MQTT 5 properties as AMQP properties and headers).
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_message(
    exchange: Bytes,
    topic_name: &[u8],
    qos: u8,
    retain: bool,
    props: &Properties,
    payload: Bytes,
    hdr: &mut BytesMut,
    publisher: Option<&Bytes>,
) -> Message {
    let mut headers = FieldTable::new();
    if qos == 2 {
        headers.insert(QOS_HEADER, FieldValue::U8(2));
    }
    if retain {
        headers.insert(RETAIN_HEADER, FieldValue::Bool(true));
    }
    if let Some(p) = publisher {
        headers.insert(PUBLISHER_HEADER, FieldValue::LongStr(p.clone()));
    }
    if props.payload_format_indicator == Some(1) {
        headers.insert(deliver::FORMAT_HEADER, FieldValue::U8(1));
    }
    deliver::user_headers(props, &mut headers);
    let mut correlation_id = None;
    if let Some(cd) = &props.correlation_data {
        if cd.len() <= 255 {
            correlation_id = Some(cd.clone());
        } else {
            headers.insert(deliver::CORRELATION_HEADER, FieldValue::LongStr(cd.clone()));
        }
    }
    let ttl = props.message_expiry_interval.map(|s| u64::from(s) * 1000);
    let p = BasicProperties {
        content_type: props.content_type.clone().filter(|t| t.len() <= 255),
        headers: (!headers.is_empty()).then_some(headers),
        delivery_mode: Some(if qos > 0 { 2 } else { 1 }),
        correlation_id,
        reply_to: props
            .response_topic
            .as_ref()
            .filter(|t| t.len() <= 255)
            .map(|t| topic::to_key(t)),
        expiration: ttl.map(|t| Bytes::from(t.to_string())),
        ..BasicProperties::default()
    };
    ContentHeader {
        class_id: 60,
        body_size: payload.len() as u64,
        properties: p,
    }
    .encode(hdr);
    if hdr.capacity() - hdr.len() < 64 {
        hdr.reserve(4096);
    }
    let header = hdr.split().freeze();
    let mut m = Message::new(
        exchange,
        topic::to_key(topic_name),
        header,
        payload,
        qos > 0,
    );
    m.ttl = ttl;
    m
}
