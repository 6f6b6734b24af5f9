//! Frame entry point and the connection-level methods: start / start-ok
//! (PLAIN, AMQPLAIN), tune / tune-ok, open, close, and the limits that apply
//! before the connection is tuned.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use log::{info, warn};

use super::ConnState;
use crate::amqp::Core;
use crate::broker::ConnId;
use crate::codec::frame::{
    RawFrame, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE,
};
use crate::codec::reader::Reader;
use crate::codec::{
    ConnectionOpenOk, ConnectionStart, ConnectionTune, Error, FieldTable, FieldValue, Method,
    ReplyCode,
};
use crate::config::AuthMechanism;
use crate::tls::TlsInfo;

fn server_properties() -> FieldTable {
    let s = |v: &str| FieldValue::LongStr(Bytes::from(v.to_string()));
    let mut caps = FieldTable::new();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(cap, FieldValue::Bool(true));
    }
    let mut t = FieldTable::new();
    t.insert("capabilities", FieldValue::Table(caps));
    t.insert("cluster_name", s("warren"));
    t.insert("copyright", s("Copyright (c) the warren authors"));
    t.insert("information", s("Warren, a lightweight AMQP 0-9-1 broker"));
    t.insert("platform", s(&format!("Rust / {}", std::env::consts::OS)));
    t.insert("product", s("Warren"));
    t.insert("version", s(env!("CARGO_PKG_VERSION")));
    t
}

fn unexpected(what: &str) -> Error {
    Error::new(ReplyCode::COMMAND_INVALID, what.to_string())
}

/// Parse SASL credentials: PLAIN is `authzid\0user\0pass`; AMQPLAIN is a
/// field table without its length prefix holding LOGIN and PASSWORD.
fn credentials(mechanism: &[u8], response: &Bytes) -> Option<(Bytes, Bytes)> {
    match mechanism {
        b"PLAIN" => {
            let mut parts = response.split(|&b| b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            if parts.next().is_some() {
                return None;
            }
            Some((Bytes::copy_from_slice(user), Bytes::copy_from_slice(pass)))
        }
        b"AMQPLAIN" => {
            let mut framed = BytesMut::with_capacity(response.len() + 4);
            framed.put_u32(response.len() as u32);
            framed.extend_from_slice(response);
            let framed = framed.freeze();
            let t = FieldTable::decode(&mut Reader::new(&framed)).ok()?;
            let user = t.get("LOGIN")?.as_bytes()?.clone();
            let pass = t.get("PASSWORD")?.as_bytes()?.clone();
            Some((user, pass))
        }
        _ => None,
    }
}

/// The mechanisms connection.start offers to a connection: those
/// configured that can work on it (EXTERNAL only over TLS with a verified
/// client certificate).
fn offered(mechanisms: &[AuthMechanism], tls: Option<&TlsInfo>) -> Vec<AuthMechanism> {
    let verified = tls.is_some_and(|t| t.peer.is_some());
    mechanisms
        .iter()
        .copied()
        .filter(|&m| m != AuthMechanism::External || verified)
        .collect()
}

fn refused(mechanism: &str) -> Error {
    Error::new(
        ReplyCode::ACCESS_REFUSED,
        format!(
            "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
        ),
    )
}

impl Core {
    /// Send connection.start (after a valid protocol header).
    pub(crate) fn send_start(&mut self, id: ConnId) {
        let mechanisms = self.engine.config.auth_mechanisms.clone();
        let Some(c) = self.conn_mut(id) else { return };
        let names: Vec<&str> = offered(&mechanisms, c.tls.as_deref())
            .into_iter()
            .map(AuthMechanism::name)
            .collect();
        let start = ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: Bytes::from(names.join(" ")),
            locales: Bytes::from_static(b"en_US"),
        };
        c.outbox.method(0, &start.into());
        c.state = ConnState::StartOk;
        self.mark_flush(id);
    }

    /// Handle one raw frame according to the connection state.
    pub(crate) fn handle_frame(&mut self, id: ConnId, raw: RawFrame, now: Instant) {
        let Some(c) = self.conn(id) else { return };
        let state = c.state;
        if state == ConnState::Closing {
            // Spec 4.2.6 / connection.close: after sending close, discard
            // everything but close and close-ok.
            if raw.kind == FRAME_METHOD {
                if let Ok(m) = Method::decode(&raw.payload) {
                    match m {
                        Method::ConnectionCloseOk(_) => self.set_dead(id),
                        Method::ConnectionClose(_) => {
                            if let Some(c) = self.conn_mut(id) {
                                c.outbox
                                    .method(0, &crate::codec::ConnectionCloseOk {}.into());
                            }
                            self.set_dead(id);
                        }
                        _ => {}
                    }
                }
            }
            return;
        }
        match raw.kind {
            FRAME_HEARTBEAT => {
                if raw.channel != 0 {
                    // RabbitMQ: 505, not the spec's 501.
                    let e = Error::new(
                        ReplyCode::UNEXPECTED_FRAME,
                        format!("heartbeat frame on channel {}", raw.channel),
                    );
                    self.connection_error(id, e, now);
                } else if !raw.payload.is_empty() {
                    self.connection_error(id, Error::frame("heartbeat frame with a payload"), now);
                }
            }
            FRAME_METHOD => {
                let m = match Method::decode_from_client(&raw.payload) {
                    Ok(m) => m,
                    Err(e) => return self.connection_error(id, e, now),
                };
                if state != ConnState::Running {
                    let (cl, me) = m.ids();
                    if let Err(e) = self.handshake_method(id, raw.channel, m, now) {
                        // RabbitMQ names no method in a login refusal.
                        let e = if e.class_id == 0 && e.code != ReplyCode::ACCESS_REFUSED {
                            e.with_method(cl, me)
                        } else {
                            e
                        };
                        self.connection_error(id, e, now);
                    }
                } else if raw.channel == 0 {
                    let (cl, me) = m.ids();
                    if let Err(e) = self.connection_method(id, m) {
                        self.connection_error(id, e.with_method(cl, me), now);
                    }
                } else {
                    self.channel_method(id, raw.channel, m, now);
                }
            }
            FRAME_HEADER | FRAME_BODY => {
                if state != ConnState::Running || raw.channel == 0 {
                    let e = Error::new(
                        ReplyCode::UNEXPECTED_FRAME,
                        format!(
                            "content frame (type {}) on channel {} outside a publish",
                            raw.kind, raw.channel
                        ),
                    );
                    return self.connection_error(id, e, now);
                }
                self.content_frame(id, raw, now);
            }
            other => {
                self.connection_error(id, Error::frame(format!("unknown frame type {other}")), now);
            }
        }
    }

    fn set_dead(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id) {
            c.state = ConnState::Dead;
        }
        self.mark_flush(id);
    }

    fn handshake_method(
        &mut self,
        id: ConnId,
        channel: u16,
        m: Method,
        now: Instant,
    ) -> Result<(), Error> {
        if channel != 0 {
            return Err(Error::new(
                ReplyCode::CHANNEL_ERROR,
                format!("expected channel 0 during the handshake, got {channel}"),
            ));
        }
        let config_frame_max = self.engine.config.frame_max;
        let config_channel_max = self.engine.config.channel_max;
        let config_heartbeat = self.engine.config.heartbeat;
        let mechanisms = self.engine.config.auth_mechanisms.clone();
        let cert_login = self.engine.config.ssl_cert_login_from;
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        match (c.state, m) {
            (ConnState::StartOk, Method::ConnectionStartOk(so)) => {
                let caps = match so.client_properties.get("capabilities") {
                    Some(FieldValue::Table(t)) => t.clone(),
                    _ => FieldTable::new(),
                };
                let on = |k: &str| matches!(caps.get(k), Some(FieldValue::Bool(true)));
                c.cap_cancel_notify = on("consumer_cancel_notify");
                c.cap_blocked = on("connection.blocked");
                c.client_properties = so.client_properties;
                let name = String::from_utf8_lossy(&so.mechanism).into_owned();
                let tune = ConnectionTune {
                    channel_max: config_channel_max,
                    frame_max: config_frame_max,
                    heartbeat: config_heartbeat,
                };
                if let Some(user) = c.internal.clone() {
                    // A link's end inside the broker: no password to check.
                    c.user = user;
                    c.outbox.method(0, &tune.into());
                    c.state = ConnState::TuneOk;
                    return Ok(());
                }
                let Some(mechanism) = AuthMechanism::from_name(&so.mechanism) else {
                    return Err(Error::new(
                        ReplyCode::COMMAND_INVALID,
                        format!("unknown authentication mechanism '{name}'"),
                    ));
                };
                let tls = c.tls.clone();
                let tls = tls.as_deref();
                if !offered(&mechanisms, tls).contains(&mechanism) {
                    let why = match mechanism {
                        AuthMechanism::External => {
                            " (EXTERNAL needs a TLS connection with a verified client certificate)"
                        }
                        _ => " (not in auth_mechanisms)",
                    };
                    return Err(Error::new(
                        ReplyCode::COMMAND_INVALID,
                        format!("invalid authentication mechanism '{name}'{why}"),
                    ));
                }
                let peer = c.peer;
                // RabbitMQ (rabbit_net:is_loopback) judges the address the
                // client connected to, not the one it came from.
                let to = c.local.unwrap_or(peer).ip();
                let user = if mechanism == AuthMechanism::External {
                    // RabbitMQ's rabbitmq_auth_mechanism_ssl: the verified
                    // certificate names the user, who must exist; there is
                    // no password, and the response is not looked at.
                    let Some(user) = tls.and_then(|t| crate::tls::login_name(t, cert_login)) else {
                        warn!("{peer}: EXTERNAL login refused: the client certificate has no {cert_login:?} to take a user name from");
                        return Err(refused(&name));
                    };
                    let known = self.engine.broker.auth.users.contains_key(user);
                    if !known || !self.engine.config.may_login_from(user.as_bytes(), to) {
                        warn!(
                            "{peer}: EXTERNAL login refused: user '{user}' {}",
                            if known {
                                "may only connect over a loopback address"
                            } else {
                                "does not exist"
                            }
                        );
                        return Err(refused(&name));
                    }
                    Bytes::copy_from_slice(user.as_bytes())
                } else {
                    let Some((user, pass)) = credentials(&so.mechanism, &so.response) else {
                        return Err(refused(&name));
                    };
                    if !self.authenticate(&user, &pass, to) {
                        warn!(
                            "{}: user '{}' failed to authenticate with {}",
                            peer,
                            String::from_utf8_lossy(&user),
                            name
                        );
                        return Err(refused(&name));
                    }
                    user
                };
                let Some(c) = self.conn_mut(id) else {
                    return Ok(());
                };
                c.auth_mechanism = Some(mechanism);
                c.user = user;
                c.outbox.method(0, &tune.into());
                c.state = ConnState::TuneOk;
                Ok(())
            }
            (ConnState::TuneOk, Method::ConnectionTuneOk(t)) => {
                if t.frame_max != 0 && t.frame_max < FRAME_MIN_SIZE {
                    return Err(Error::new(
                        ReplyCode::NOT_ALLOWED,
                        format!("frame_max={} < {} min size", t.frame_max, FRAME_MIN_SIZE),
                    ));
                }
                if t.frame_max > config_frame_max || (t.frame_max == 0 && config_frame_max != 0) {
                    return Err(Error::new(
                        ReplyCode::NOT_ALLOWED,
                        format!("frame_max={} > {} max size", t.frame_max, config_frame_max),
                    ));
                }
                if t.channel_max > config_channel_max
                    || (t.channel_max == 0 && config_channel_max != 0)
                {
                    return Err(Error::new(
                        ReplyCode::NOT_ALLOWED,
                        format!("channel_max={} > {} max", t.channel_max, config_channel_max),
                    ));
                }
                c.frame_max = t.frame_max;
                c.channel_max = t.channel_max;
                c.heartbeat = t.heartbeat;
                c.last_recv = now;
                c.state = ConnState::Open;
                Ok(())
            }
            (ConnState::Open, Method::ConnectionOpen(o)) => {
                let vhost = o.virtual_host.clone();
                let user = String::from_utf8_lossy(&c.user).into_owned();
                if self.engine.broker.vhost(&vhost).is_none() {
                    return Err(Error::new(
                        ReplyCode::NOT_ALLOWED,
                        format!("vhost {} not found", String::from_utf8_lossy(&vhost)),
                    ));
                }
                let vname = String::from_utf8_lossy(&vhost).into_owned();
                self.connection_limits(&user, &vhost)?;
                // As RabbitMQ: the node's, the vhost's and the user's limits,
                // then the user's access to the vhost.
                if !self.engine.broker.auth.may_open(&user, &vname) {
                    return Err(Error::new(
                        ReplyCode::NOT_ALLOWED,
                        format!("access to vhost '{vname}' refused for user '{user}'"),
                    ));
                }
                let perm = self.engine.broker.auth.permission(&user, &vname).cloned();
                let topic_checks = self.engine.broker.auth.topic_checks(&user, &vname);
                let Some(c) = self.conn_mut(id) else {
                    return Ok(());
                };
                c.vhost = vhost;
                c.perm = perm;
                c.topic_checks = topic_checks;
                c.outbox.method(
                    0,
                    &ConnectionOpenOk {
                        known_hosts: Bytes::new(),
                    }
                    .into(),
                );
                c.state = ConnState::Running;
                info!(
                    "connection {}: user '{}' authenticated and granted access to vhost '{}'",
                    c.peer,
                    String::from_utf8_lossy(&c.user),
                    String::from_utf8_lossy(&c.vhost)
                );
                Ok(())
            }
            (_, Method::ConnectionClose(_)) => {
                c.outbox
                    .method(0, &crate::codec::ConnectionCloseOk {}.into());
                c.state = ConnState::Dead;
                Ok(())
            }
            (state, m) => Err(unexpected(&format!(
                "expected the next handshake method in state {:?}, got {}",
                state,
                m.name()
            ))),
        }
    }

    /// The node's, the vhost's and the user's connection limits, as every
    /// front door checks them before a connection may open (RabbitMQ's
    /// order): 530 NOT_ALLOWED with RabbitMQ's text when one is reached.
    pub(crate) fn connection_limits(&self, user: &str, vhost: &[u8]) -> Result<(), Error> {
        let vname = String::from_utf8_lossy(vhost);
        if let Some(max) = self.engine.config.max_connections {
            let open = self
                .conns
                .iter()
                .filter(|(_, c)| c.state == ConnState::Running)
                .count();
            if open >= max {
                warn!("connection of user '{user}' refused: connection_max ({max}) reached");
                return Err(Error::new(
                    ReplyCode::NOT_ALLOWED,
                    format!("connection refused: node connection limit ({max}) is reached"),
                ));
            }
        }
        let rt = &self.engine.broker.runtime;
        let running = || {
            self.conns
                .iter()
                .filter(|(_, c)| c.state == ConnState::Running)
        };
        if let Some(max) = rt.vhost_limit(vhost, "max-connections") {
            if running().filter(|(_, c)| c.vhost == vhost).count() as u64 >= max {
                warn!("connection of user '{user}' to vhost '{vname}' refused: vhost connection limit ({max}) reached");
                return Err(Error::new(
                    ReplyCode::NOT_ALLOWED,
                    format!("access to vhost '{vname}' refused for user '{user}': connection limit ({max}) is reached"),
                ));
            }
        }
        if let Some(max) = rt.user_limit(user.as_bytes(), "max-connections") {
            if running().filter(|(_, c)| c.user == user.as_bytes()).count() as u64 >= max {
                warn!("connection of user '{user}' refused: user connection limit ({max}) reached");
                return Err(Error::new(
                    ReplyCode::NOT_ALLOWED,
                    format!("connection refused for user '{user}': user connection limit ({max}) is reached"),
                ));
            }
        }
        Ok(())
    }

    fn authenticate(&self, user: &[u8], pass: &[u8], to: std::net::IpAddr) -> bool {
        if self.engine.broker.auth.login(user, pass).is_none() {
            return false;
        }
        // RabbitMQ's loopback_users: these may only connect to a loopback
        // address (`Config::loopback_addresses`).
        self.engine.config.may_login_from(user, to)
    }

    /// Methods on channel 0 once the connection is open.
    fn connection_method(&mut self, id: ConnId, m: Method) -> Result<(), Error> {
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        match m {
            Method::ConnectionClose(cl) => {
                info!(
                    "closing AMQP connection {} (client: {} {})",
                    c.peer,
                    cl.reply_code,
                    String::from_utf8_lossy(&cl.reply_text)
                );
                c.outbox
                    .method(0, &crate::codec::ConnectionCloseOk {}.into());
                c.state = ConnState::Dead;
                self.release_connection(id);
                Ok(())
            }
            Method::ConnectionCloseOk(_) => {
                c.state = ConnState::Dead;
                Ok(())
            }
            Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => Ok(()),
            Method::ConnectionUpdateSecret(_) => {
                c.outbox
                    .method(0, &crate::codec::ConnectionUpdateSecretOk {}.into());
                Ok(())
            }
            m => Err(Error::new(
                ReplyCode::COMMAND_INVALID,
                format!("method {} is not valid on channel 0", m.name()),
            )),
        }
    }
}
