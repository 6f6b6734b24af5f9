//! A dynamic shovel: consume from a queue at one end, publish at the
//! other, acknowledge at the source as its `ack-mode` says (on-confirm:
//! only once the destination confirmed). Each end is an AMQP client
//! connection ([`super::client::Client`]), remote or to this broker itself;
//! the server gives it a transport ([`super::End::io`]). When either end
//! fails both are closed, what the source had delivered and not
//! acknowledged goes back to its queue there, and the shovel starts again
//! after its reconnect delay (doubling on each failure in a row).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};

use super::client::{Client, Delivery, Event};
use super::uri::{self, Uri};
use super::End;
use crate::codec::{
    BasicCancel, BasicConsume, BasicQos, ConfirmSelect, ContentHeader, FieldTable, FieldValue,
    Method, QueueBind, QueueDeclare, QueueUnbind,
};

/// Longest wait between attempts, unless the reconnect delay is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// When the source is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckMode {
    OnConfirm,
    OnPublish,
    NoAck,
}

/// `src-delete-after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeleteAfter {
    Never,
    QueueLength,
    Count(u64),
}

/// A shovel's parameter value, read.
#[derive(Debug, Clone)]
pub(crate) struct Def {
    pub src_uris: Vec<String>,
    pub dest_uris: Vec<String>,
    pub src_queue: Option<String>,
    pub src_exchange: Option<String>,
    pub src_exchange_key: String,
    pub dest_queue: Option<String>,
    pub dest_exchange: Option<String>,
    pub dest_exchange_key: Option<String>,
    pub ack_mode: AckMode,
    pub prefetch: u16,
    pub delete_after: DeleteAfter,
    pub forward_headers: bool,
    pub timestamp_header: bool,
    pub reconnect_delay: Duration,
    pub publish_properties: Option<Value>,
    pub src_queue_args: FieldTable,
    pub dest_queue_args: FieldTable,
    pub consumer_args: FieldTable,
    /// A federation link instead of a shovel (see `super::federation`).
    pub fed: Option<Fed>,
}

/// What makes a link a federation link: its source queue (named, on the
/// upstream) is bound to the upstream exchange with the downstream
/// exchange's binding keys, and messages carry `x-received-from`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fed {
    /// The upstream parameter's name.
    pub upstream: String,
    /// The exchange on the upstream.
    pub upstream_exchange: String,
    /// The downstream (local) exchange.
    pub exchange: String,
    /// Binding keys to bind the upstream queue with.
    pub keys: Vec<String>,
    /// Messages that crossed this many links already are not forwarded.
    pub max_hops: usize,
    /// A federated queue's link (`exchange` is then the local queue): it
    /// consumes from the upstream queue only while the local queue has
    /// consumers and nothing ready, and adds no header.
    pub queue: bool,
}

fn uris(v: &Value, key: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = match v.get(key) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|u| u.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{key} must be a string or a list of strings"))?,
        _ => return Err(format!("{key} is missing")),
    };
    if list.is_empty() {
        return Err(format!("{key} is empty"));
    }
    for u in &list {
        uri::parse(u)?;
    }
    Ok(list)
}

fn table(v: &Value, key: &str) -> FieldTable {
    v.get(key)
        .map(crate::mgmt::json::json_to_table)
        .unwrap_or_default()
}

impl Def {
    /// Read a `shovel` parameter's value (validated when it was set; this
    /// only reads it).
    pub(crate) fn parse(v: &Value) -> Result<Def, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        let ack_mode = match s("ack-mode").as_deref() {
            None | Some("on-confirm") => AckMode::OnConfirm,
            Some("on-publish") => AckMode::OnPublish,
            Some("no-ack") => AckMode::NoAck,
            Some(other) => return Err(format!("bad ack-mode '{other}'")),
        };
        let setting = |k: &str| crate::broker::params::shovel_setting(v, k);
        let delete_after = match setting("src-delete-after") {
            None => DeleteAfter::Never,
            Some(Value::String(x)) if x == "never" => DeleteAfter::Never,
            Some(Value::String(x)) if x == "queue-length" => DeleteAfter::QueueLength,
            Some(n) => DeleteAfter::Count(
                n.as_u64()
                    .ok_or_else(|| format!("bad src-delete-after {n}"))?,
            ),
        };
        let secs = v
            .get("reconnect-delay")
            .and_then(Value::as_f64)
            .unwrap_or(5.0)
            .max(0.0);
        let d = Def {
            src_uris: uris(v, "src-uri")?,
            dest_uris: uris(v, "dest-uri")?,
            src_queue: s("src-queue"),
            src_exchange: s("src-exchange"),
            src_exchange_key: s("src-exchange-key").unwrap_or_else(|| "#".into()),
            dest_queue: s("dest-queue"),
            dest_exchange: s("dest-exchange"),
            dest_exchange_key: s("dest-exchange-key"),
            ack_mode,
            prefetch: setting("src-prefetch-count")
                .and_then(Value::as_u64)
                .map_or(1000, |n| n.min(u64::from(u16::MAX)) as u16),
            delete_after,
            forward_headers: setting("dest-add-forward-headers") == Some(&Value::Bool(true)),
            timestamp_header: setting("dest-add-timestamp-header") == Some(&Value::Bool(true)),
            reconnect_delay: Duration::from_secs_f64(secs.min(86_400.0)),
            publish_properties: setting("dest-publish-properties").cloned(),
            src_queue_args: table(v, "src-queue-args"),
            dest_queue_args: table(v, "dest-queue-args"),
            consumer_args: table(v, "src-consumer-args"),
            fed: None,
        };
        if d.src_queue.is_none() == d.src_exchange.is_none() {
            return Err("exactly one of src-queue and src-exchange is needed".into());
        }
        Ok(d)
    }
}

/// Where a shovel is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    /// Connecting and setting up both ends.
    Starting,
    Running,
    /// Failed; starts again at `until` (None: never, reconnect-delay 0).
    Waiting {
        until: Option<Instant>,
    },
    /// Done (src-delete-after reached): its parameter is to be removed.
    Finished,
}

/// One shovel.
#[derive(Debug)]
pub(crate) struct Shovel {
    pub vhost: String,
    pub name: String,
    pub def: Def,
    pub phase: Phase,
    /// The last failure: when, and what.
    pub last_error: Option<(u64, String)>,
    pub src: Option<End>,
    pub dest: Option<End>,
    /// Which of the URI lists' entries the next attempt uses.
    attempt: usize,
    /// Failures in a row (the backoff's exponent).
    failures: u32,
    /// The source queue (a server-named one for src-exchange).
    src_queue: Bytes,
    src_set_up: bool,
    dest_set_up: bool,
    consuming: bool,
    /// Deliveries waiting for the destination (blocked, or not set up).
    held: VecDeque<Delivery>,
    /// Published, awaiting the destination's confirm: (seq, source tag).
    inflight: VecDeque<(u64, u64)>,
    /// Messages forwarded (acknowledged at the source, or published for
    /// no-ack) since the shovel was declared; and those still allowed by
    /// src-delete-after.
    pub forwarded: u64,
    remaining: Option<u64>,
    /// When the current run started (success resets the backoff).
    running_since: Option<Instant>,
    /// Federation: the keys the upstream queue is bound with now.
    bound: Vec<String>,
    /// Federation: messages not forwarded for having crossed max-hops.
    pub dropped: u64,
    /// A federated queue's demand: consume only while true.
    demand: bool,
    /// A federated queue's link is set up but not consuming (no demand).
    consuming_ready: bool,
    /// The source consumer's tag (to cancel it when demand stops).
    consumer_tag: Bytes,
}

impl Shovel {
    pub(crate) fn new(vhost: &str, name: &str, def: Def) -> Shovel {
        let remaining = match def.delete_after {
            DeleteAfter::Count(n) => Some(n),
            _ => None,
        };
        Shovel {
            vhost: vhost.into(),
            name: name.into(),
            def,
            phase: Phase::Waiting {
                until: Some(Instant::now() - Duration::from_secs(1)),
            },
            last_error: None,
            src: None,
            dest: None,
            attempt: 0,
            failures: 0,
            src_queue: Bytes::new(),
            src_set_up: false,
            dest_set_up: false,
            consuming: false,
            held: VecDeque::new(),
            inflight: VecDeque::new(),
            forwarded: 0,
            remaining,
            running_since: None,
            bound: Vec::new(),
            dropped: 0,
            demand: false,
            consuming_ready: false,
            consumer_tag: Bytes::new(),
        }
    }

    /// The URIs the current (or next) attempt uses.
    pub(crate) fn uris(&self) -> (&str, &str) {
        fn pick(l: &[String], attempt: usize) -> &str {
            l.get(attempt % l.len().max(1)).map_or("", String::as_str)
        }
        (
            pick(&self.def.src_uris, self.attempt),
            pick(&self.def.dest_uris, self.attempt),
        )
    }

    /// Start an attempt: both ends' clients, for the server to connect.
    fn start(&mut self, now: Instant) {
        let (s, d) = self.uris();
        let (s, d) = (uri::parse(s), uri::parse(d));
        let (s, d) = match (s, d) {
            (Ok(s), Ok(d)) => (s, d),
            (Err(e), _) | (_, Err(e)) => return self.fail(&e, now),
        };
        let label = format!("Shovel {}", self.name);
        let end = |u: Uri| {
            let client = Client::new(
                u.user.as_deref().unwrap_or("guest"),
                &u.pass,
                &u.vhost,
                &label,
                if u.host.is_none() {
                    Some(0)
                } else {
                    u.heartbeat
                },
                now,
            );
            End {
                uri: u,
                client,
                io: None,
                connect_by: None,
            }
        };
        self.src = Some(end(s));
        self.dest = Some(end(d));
        self.src_set_up = false;
        self.dest_set_up = false;
        self.consuming = false;
        self.consuming_ready = false;
        self.held.clear();
        self.inflight.clear();
        self.phase = Phase::Starting;
        self.running_since = None;
    }

    /// Give up the current attempt: close both ends, wait, try again.
    pub(crate) fn fail(&mut self, why: &str, now: Instant) {
        log::warn!("{}: {why}", self.label());
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_error = Some((wall, why.to_string()));
        for end in [self.src.as_mut(), self.dest.as_mut()]
            .into_iter()
            .flatten()
        {
            end.client.close();
            end.client.transport_closed(why);
        }
        if self
            .running_since
            .is_some_and(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
        {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.attempt = self.attempt.wrapping_add(1);
        let base = self.def.reconnect_delay;
        let until = if base.is_zero() {
            None
        } else {
            let cap = MAX_BACKOFF.max(base);
            let exp = self.failures.saturating_sub(1).min(16);
            Some(now + base.saturating_mul(1 << exp).min(cap))
        };
        self.phase = Phase::Waiting { until };
        self.held.clear();
        self.inflight.clear();
        self.running_since = None;
    }

    /// When the shovel needs [`Shovel::step`] for time's sake.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { until } => until,
            _ => None,
        }
    }

    /// Handle what both ends did; start an attempt when it is time.
    pub(crate) fn step(&mut self, now: Instant) {
        if let Phase::Waiting { until: Some(t) } = self.phase {
            let ends_gone = self.src.is_none() && self.dest.is_none();
            if now >= t && ends_gone {
                self.start(now);
            }
            return;
        }
        if matches!(self.phase, Phase::Waiting { .. } | Phase::Finished) {
            return;
        }
        for end in [self.src.as_mut(), self.dest.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(by) = end.connect_by {
                if now >= by && !end.client.is_ready() {
                    end.client.transport_closed("timed out connecting");
                }
            }
        }
        // Destination first: its confirms free the source.
        while let Some(ev) = self.dest.as_mut().and_then(|e| e.client.poll_event()) {
            if let Err(e) = self.dest_event(ev, now) {
                return self.fail(&format!("destination: {e}"), now);
            }
        }
        while let Some(ev) = self.src.as_mut().and_then(|e| e.client.poll_event()) {
            if let Err(e) = self.src_event(ev, now) {
                return self.fail(&format!("source: {e}"), now);
            }
        }
        self.forward_held();
        if self.phase == Phase::Starting
            && (self.consuming || self.consuming_ready)
            && self.dest_set_up
        {
            log::info!("{} is running", self.label());
            self.phase = Phase::Running;
            self.running_since = Some(now);
        }
        if self.remaining == Some(0) && self.inflight.is_empty() && self.held.is_empty() {
            log::info!("{}: src-delete-after reached; removing it", self.label());
            for end in [self.src.as_mut(), self.dest.as_mut()]
                .into_iter()
                .flatten()
            {
                end.client.close();
            }
            self.phase = Phase::Finished;
        }
    }

    fn dest_event(&mut self, ev: Event, _now: Instant) -> Result<(), String> {
        let Some(dest) = self.dest.as_mut() else {
            return Ok(());
        };
        match ev {
            Event::Ready => {
                if self.def.ack_mode == AckMode::OnConfirm {
                    dest.client.call(ConfirmSelect { nowait: false }.into());
                }
                if let Some(q) = &self.def.dest_queue {
                    dest.client.call(declare(q, &self.def.dest_queue_args));
                }
                if self.def.ack_mode != AckMode::OnConfirm && self.def.dest_queue.is_none() {
                    self.dest_set_up = true;
                    self.consume();
                }
            }
            Event::Reply(Method::ConfirmSelectOk(_)) if self.def.dest_queue.is_none() => {
                self.dest_set_up = true;
                self.consume();
            }
            Event::Reply(Method::ConfirmSelectOk(_)) => {}
            Event::Reply(Method::QueueDeclareOk(_)) => {
                self.dest_set_up = true;
                self.consume();
            }
            Event::Reply(_) | Event::Deliver(_) | Event::Cancelled => {}
            Event::Confirm {
                tag,
                multiple,
                nack,
            } => self.confirmed(tag, multiple, nack),
            Event::Blocked(_) => {}
            Event::Closed { code, text } => return Err(format!("{code} {text}")),
        }
        Ok(())
    }

    fn src_event(&mut self, ev: Event, _now: Instant) -> Result<(), String> {
        let Some(src) = self.src.as_mut() else {
            return Ok(());
        };
        match ev {
            Event::Ready => match &self.def.src_queue {
                Some(q) if self.def.fed.as_ref().is_some_and(|f| f.queue) => src.client.call(
                    QueueDeclare {
                        queue: Bytes::from(q.clone()),
                        passive: true,
                        ..QueueDeclare::default()
                    }
                    .into(),
                ),
                Some(q) => src.client.call(declare(q, &self.def.src_queue_args)),
                None => src.client.call(
                    QueueDeclare {
                        exclusive: true,
                        ..QueueDeclare::default()
                    }
                    .into(),
                ),
            },
            Event::Reply(Method::QueueDeclareOk(ok)) => {
                self.src_queue = ok.queue.clone();
                if self.def.delete_after == DeleteAfter::QueueLength && self.remaining.is_none() {
                    self.remaining = Some(u64::from(ok.message_count));
                }
                if let Some(fed) = &self.def.fed {
                    for key in &fed.keys {
                        src.client
                            .call(bind(&ok.queue, &fed.upstream_exchange, key));
                    }
                    self.bound = fed.keys.clone();
                }
                if let Some(x) = &self.def.src_exchange {
                    src.client.call(
                        QueueBind {
                            queue: ok.queue,
                            exchange: Bytes::from(x.clone()),
                            routing_key: Bytes::from(self.def.src_exchange_key.clone()),
                            ..QueueBind::default()
                        }
                        .into(),
                    );
                }
                let prefetch = match self.remaining {
                    Some(n) => self
                        .def
                        .prefetch
                        .min(n.clamp(1, u64::from(u16::MAX)) as u16),
                    None => self.def.prefetch,
                };
                src.client.call(
                    BasicQos {
                        prefetch_size: 0,
                        prefetch_count: prefetch,
                        global: false,
                    }
                    .into(),
                );
            }
            Event::Reply(Method::BasicQosOk(_)) => {
                self.src_set_up = true;
                self.consume();
            }
            Event::Reply(Method::BasicConsumeOk(ok)) => self.consumer_tag = ok.consumer_tag,
            Event::Reply(_) | Event::Confirm { .. } | Event::Blocked(_) => {}
            Event::Deliver(d) => {
                self.held.push_back(d);
            }
            Event::Cancelled => return Err("the source queue was deleted".into()),
            Event::Closed { code, text } => return Err(format!("{code} {text}")),
        }
        Ok(())
    }

    /// Both ends are set up: consume from the source.
    fn consume(&mut self) {
        if self.consuming || !self.src_set_up || !self.dest_set_up {
            return;
        }
        if self.def.fed.as_ref().is_some_and(|f| f.queue) && !self.demand {
            // Running, idle until the local queue wants messages.
            self.consuming_ready = true;
            return;
        }
        let Some(src) = self.src.as_mut() else {
            return;
        };
        self.consuming = true;
        src.client.call(
            BasicConsume {
                queue: self.src_queue.clone(),
                consumer_tag: Bytes::new(),
                no_ack: self.def.ack_mode == AckMode::NoAck,
                arguments: self.def.consumer_args.clone(),
                ..BasicConsume::default()
            }
            .into(),
        );
    }

    /// Publish what the source delivered, unless the destination is
    /// blocked (then the source's prefetch window bounds what waits).
    fn forward_held(&mut self) {
        let (Some(src), Some(dest)) = (self.src.as_mut(), self.dest.as_mut()) else {
            return;
        };
        if !self.dest_set_up || dest.client.blocked {
            return;
        }
        while let Some(d) = self.held.pop_front() {
            if self.remaining == Some(0) {
                // Past src-delete-after: left unacknowledged, so it goes
                // back to its queue when the source connection closes.
                continue;
            }
            let (exchange, key) = match (&self.def.dest_exchange, &self.def.dest_queue) {
                (Some(x), _) => (
                    Bytes::from(x.clone()),
                    self.def
                        .dest_exchange_key
                        .as_ref()
                        .map_or_else(|| d.routing_key.clone(), |k| Bytes::from(k.clone())),
                ),
                (None, Some(q)) => (Bytes::new(), Bytes::from(q.clone())),
                (None, None) => (d.exchange.clone(), d.routing_key.clone()),
            };
            let header = match self.def.fed.as_ref().filter(|f| !f.queue) {
                Some(fed) => match received_from(fed, &src.uri, &src.client.cluster_name, &d) {
                    Some(h) => h,
                    None => {
                        // Crossed max-hops: settled here, not forwarded.
                        self.dropped += 1;
                        if self.def.ack_mode != AckMode::NoAck {
                            src.client.ack(d.tag, false);
                        }
                        continue;
                    }
                },
                None if self.def.fed.is_some() => d.header.clone(),
                None => rewrite_header(&self.def, &self.name, &self.vhost, &d, &self.src_queue),
            };
            let seq = dest.client.publish(&exchange, &key, &header, &d.body);
            if let Some(r) = self.remaining.as_mut() {
                *r -= 1;
            }
            match self.def.ack_mode {
                AckMode::OnConfirm => self.inflight.push_back((seq, d.tag)),
                AckMode::OnPublish => {
                    src.client.ack(d.tag, false);
                    self.forwarded += 1;
                }
                AckMode::NoAck => self.forwarded += 1,
            }
        }
    }

    /// The destination confirmed (or refused) up to `tag`: settle those
    /// deliveries at the source.
    fn confirmed(&mut self, tag: u64, multiple: bool, nack: bool) {
        let Some(src) = self.src.as_mut() else {
            return;
        };
        let mut last_prefix = None;
        if multiple {
            while self.inflight.front().is_some_and(|&(s, _)| s <= tag) {
                if let Some((_, t)) = self.inflight.pop_front() {
                    last_prefix = Some(t);
                    self.forwarded += u64::from(!nack);
                }
            }
        } else if let Some(i) = self.inflight.iter().position(|&(s, _)| s == tag) {
            if let Some((_, t)) = self.inflight.remove(i) {
                self.forwarded += u64::from(!nack);
                if i == 0 {
                    last_prefix = Some(t);
                } else if nack {
                    src.client.nack(t, false);
                } else {
                    src.client.ack(t, false);
                }
            }
        }
        // Everything up to the prefix's last tag is settled: one frame.
        if let Some(t) = last_prefix {
            if nack {
                src.client.nack(t, true);
            } else {
                src.client.ack(t, true);
            }
        }
    }

    /// Federation: the downstream exchange's binding keys changed; bind
    /// the upstream queue to the new ones and unbind it from the old.
    pub(crate) fn rebind(&mut self, keys: Vec<String>) {
        let Some(fed) = self.def.fed.as_mut() else {
            return;
        };
        if fed.keys == keys {
            return;
        }
        fed.keys = keys;
        let Some(src) = self.src.as_mut().filter(|s| s.client.is_ready()) else {
            return;
        };
        if self.src_queue.is_empty() {
            return;
        }
        for key in fed.keys.iter().filter(|k| !self.bound.contains(k)) {
            src.client
                .call(bind(&self.src_queue, &fed.upstream_exchange, key));
        }
        for key in self.bound.iter().filter(|k| !fed.keys.contains(k)) {
            src.client.call(
                QueueUnbind {
                    queue: self.src_queue.clone(),
                    exchange: Bytes::from(fed.upstream_exchange.clone()),
                    routing_key: Bytes::from(key.clone()),
                    ..QueueUnbind::default()
                }
                .into(),
            );
        }
        self.bound = fed.keys.clone();
    }

    /// A federated queue's demand changed: start or stop consuming from
    /// the upstream queue.
    pub(crate) fn set_demand(&mut self, demand: bool) {
        if self.demand == demand {
            return;
        }
        self.demand = demand;
        if demand {
            self.consume();
            return;
        }
        if !self.consuming {
            return;
        }
        if let Some(src) = self.src.as_mut().filter(|s| s.client.is_ready()) {
            src.client.call(
                BasicCancel {
                    consumer_tag: self.consumer_tag.clone(),
                    nowait: false,
                }
                .into(),
            );
            self.consuming = false;
            self.consuming_ready = true;
        }
    }

    /// What it is, for the log.
    fn label(&self) -> String {
        let what = if self.def.fed.is_some() {
            "federation link"
        } else {
            "shovel"
        };
        format!("{what} '{}' in vhost '{}'", self.name, self.vhost)
    }

    /// For status: the state as RabbitMQ names it.
    pub(crate) fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Waiting { .. } | Phase::Finished => "terminated",
        }
    }
}

fn bind(queue: &Bytes, exchange: &str, key: &str) -> Method {
    QueueBind {
        queue: queue.clone(),
        exchange: Bytes::from(exchange.to_string()),
        routing_key: Bytes::from(key.to_string()),
        ..QueueBind::default()
    }
    .into()
}

fn declare(q: &str, args: &FieldTable) -> Method {
    QueueDeclare {
        queue: Bytes::from(q.to_string()),
        durable: true,
        arguments: args.clone(),
        ..QueueDeclare::default()
    }
    .into()
}

/// The content header to publish: the source's unchanged, unless the
/// shovel adds headers or sets properties.
fn rewrite_header(def: &Def, name: &str, vhost: &str, d: &Delivery, src_queue: &Bytes) -> Bytes {
    if !def.forward_headers && !def.timestamp_header && def.publish_properties.is_none() {
        return d.header.clone();
    }
    let Ok(mut h) = ContentHeader::decode(&d.header) else {
        return d.header.clone();
    };
    let p = &mut h.properties;
    if let Some(pp) = &def.publish_properties {
        if let Ok(set) = crate::mgmt::json::json_to_properties(pp) {
            macro_rules! over {
                ($($f:ident),*) => { $( if set.$f.is_some() { p.$f = set.$f.clone(); } )* };
            }
            over!(
                content_type,
                content_encoding,
                delivery_mode,
                priority,
                correlation_id,
                reply_to,
                expiration,
                message_id,
                timestamp,
                kind,
                user_id,
                app_id
            );
        }
    }
    if def.forward_headers || def.timestamp_header {
        let headers = p.headers.get_or_insert_with(FieldTable::new);
        if def.forward_headers {
            let s = |v: &str| FieldValue::LongStr(Bytes::from(v.to_string()));
            let mut t = FieldTable::new();
            t.insert("shovel-name", s(name));
            t.insert("shovel-type", s("dynamic"));
            t.insert("shovel-vhost", s(vhost));
            let (su, du) = (
                def.src_uris.first().map_or("", String::as_str),
                def.dest_uris.first().map_or("", String::as_str),
            );
            t.insert("src-uri", s(&redact(su)));
            t.insert("dest-uri", s(&redact(du)));
            match &def.src_exchange {
                Some(x) => {
                    t.insert("src-exchange", s(x));
                    t.insert("src-exchange-key", s(&def.src_exchange_key));
                }
                None => t.insert("src-queue", FieldValue::LongStr(src_queue.clone())),
            }
            if let Some(q) = &def.dest_queue {
                t.insert("dest-queue", s(q));
            }
            if let Some(x) = &def.dest_exchange {
                t.insert("dest-exchange", s(x));
            }
            let mut list = match headers.remove("x-shovelled") {
                Some(FieldValue::Array(a)) => a,
                _ => Vec::new(),
            };
            list.push(FieldValue::Table(t));
            headers.insert("x-shovelled", FieldValue::Array(list));
        }
        if def.timestamp_header {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            headers.insert("x-shovelled-timestamp", FieldValue::Timestamp(secs));
        }
    }
    let mut out = BytesMut::new();
    h.encode(&mut out);
    out.freeze()
}

/// Federation: the content header with this link put at the front of the
/// message's `x-received-from` (RabbitMQ's table: uri, exchange,
/// redelivered, cluster-name, vhost); None when the message has crossed
/// `max-hops` links already.
fn received_from(fed: &Fed, upstream: &Uri, cluster: &str, d: &Delivery) -> Option<Bytes> {
    let Ok(mut h) = ContentHeader::decode(&d.header) else {
        return Some(d.header.clone());
    };
    let headers = h.properties.headers.get_or_insert_with(FieldTable::new);
    let mut list = match headers.remove("x-received-from") {
        Some(FieldValue::Array(a)) => a,
        _ => Vec::new(),
    };
    if list.len() >= fed.max_hops {
        return None;
    }
    let s = |v: &str| FieldValue::LongStr(Bytes::from(v.to_string()));
    let mut t = FieldTable::new();
    t.insert("uri", s(&upstream.redacted()));
    t.insert("exchange", s(&fed.upstream_exchange));
    t.insert("redelivered", FieldValue::Bool(d.redelivered));
    t.insert("cluster-name", s(cluster));
    t.insert("vhost", s(&upstream.vhost));
    // Newest first, as RabbitMQ's links add themselves.
    list.insert(0, FieldValue::Table(t));
    headers.insert("x-received-from", FieldValue::Array(list));
    let mut out = BytesMut::new();
    h.encode(&mut out);
    Some(out.freeze())
}

/// A URI without its password.
pub(crate) fn redact(u: &str) -> String {
    uri::parse(u).map_or_else(|_| u.to_string(), |p| p.redacted())
}

/// The status RabbitMQ's `/api/shovels` shows, plus warren's counters.
pub(crate) fn status(s: &Shovel) -> Value {
    let (su, du) = s.uris();
    let mut m = Map::new();
    m.insert("name".into(), s.name.clone().into());
    m.insert("vhost".into(), s.vhost.clone().into());
    m.insert("type".into(), "dynamic".into());
    m.insert("state".into(), s.state_name().into());
    m.insert("src_uri".into(), redact(su).into());
    m.insert("dest_uri".into(), redact(du).into());
    m.insert("src_protocol".into(), "amqp091".into());
    m.insert("dest_protocol".into(), "amqp091".into());
    if let Some(q) = &s.def.src_queue {
        m.insert("src_queue".into(), q.clone().into());
    }
    if let Some(x) = &s.def.src_exchange {
        m.insert("src_exchange".into(), x.clone().into());
        m.insert(
            "src_exchange_key".into(),
            s.def.src_exchange_key.clone().into(),
        );
    }
    if let Some(q) = &s.def.dest_queue {
        m.insert("dest_queue".into(), q.clone().into());
    }
    if let Some(x) = &s.def.dest_exchange {
        m.insert("dest_exchange".into(), x.clone().into());
    }
    let blocked = s.dest.as_ref().is_some_and(|d| d.client.blocked);
    m.insert(
        "blocked_status".into(),
        if blocked { "blocked" } else { "running" }.into(),
    );
    m.insert("messages_forwarded".into(), s.forwarded.into());
    m.insert(
        "messages_in_flight".into(),
        (s.inflight.len() as u64).into(),
    );
    if let Some((at, why)) = &s.last_error {
        m.insert("last_error".into(), why.clone().into());
        m.insert("last_error_at".into(), (*at).into());
        if s.state_name() == "terminated" {
            m.insert("reason".into(), why.clone().into());
        }
    }
    m.insert("node".into(), "warren@localhost".into());
    Value::Object(m)
}
