//! Message TTL, queue expiry (`x-expires`) and dead-lettering, as RabbitMQ
//! does them: expired messages leave from the head of their queue, a queue
//! unused for its `x-expires` is deleted, and messages that are rejected,
//! expire or overflow go to the queue's dead-letter exchange with an
//! `x-death` history (cycles are broken as RabbitMQ breaks them).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use log::{info, warn};

use super::{Engine, Loaded, Taken};
use crate::broker::message::{Message, QueuedMsg};
use crate::broker::QueueId;
use crate::codec::{ContentHeader, FieldTable, FieldValue};

fn s(b: &[u8]) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(b))
}

fn field_str<'a>(t: &'a FieldTable, k: &str) -> Option<&'a [u8]> {
    t.get(k).and_then(|v| v.as_bytes()).map(|b| &b[..])
}

/// True when dead-lettering to `target` would close a cycle: the queue is
/// already in the message's death history and no death since then (this one
/// included) was a rejection. `deaths` is most recent first.
fn is_cycle(target: &[u8], deaths: &[FieldValue]) -> bool {
    for d in deaths {
        let FieldValue::Table(t) = d else { continue };
        if field_str(t, "reason") == Some(b"rejected") {
            return false;
        }
        if field_str(t, "queue") == Some(target) {
            return true;
        }
    }
    false
}

impl Engine {
    /// Remove expired messages from the head of a queue (dead-lettering
    /// them). A message is expired once its expiry time has come: a TTL of 0
    /// leaves nothing for a later look (see [`Engine::expire_overdue`]).
    pub(crate) fn expire_queue(&mut self, qid: QueueId) {
        self.expire_head(qid, self.wall_ms() + 1);
    }

    /// Remove the head messages whose expiry time is already past, not those
    /// due this very millisecond: a dispatch pass right after a publish can
    /// still hand a message with TTL 0 to a waiting consumer, as RabbitMQ does.
    pub(crate) fn expire_overdue(&mut self, qid: QueueId) {
        self.expire_head(qid, self.wall_ms());
    }

    /// Remove head messages expiring before `before_ms`: at most
    /// [`super::LEAVE_BATCH`] in one call (a deep queue whose backlog
    /// expired at once is worked off over several turns).
    fn expire_head(&mut self, qid: QueueId, before_ms: u64) {
        for _ in 0..super::LEAVE_BATCH {
            let Some(q) = self.broker.queue_mut(qid) else {
                return;
            };
            if !q.head_expired(before_ms) {
                return;
            }
            // Its content is read only if it is dead-lettered.
            let Taken::Msg(m, _) = self.msgs.take(q, false) else {
                return;
            };
            self.dead_letter(qid, m, "expired");
        }
        // More may be due: the next tick comes at once.
        let now = self.clock.now;
        self.wake_at(now);
    }

    /// A message leaves queue `qid` for `reason` ("rejected", "expired",
    /// "maxlen"): republish it to the queue's dead-letter exchange, or drop it.
    pub(crate) fn dead_letter(&mut self, qid: QueueId, mut qm: QueuedMsg, reason: &'static str) {
        if let Some(q) = self.broker.queue_mut(qid) {
            q.leave(&qm);
        }
        let Some(q) = self.broker.queue(qid) else {
            self.msgs.forget(None, &qm);
            return;
        };
        let sid = q.store_id;
        let Some(dlx) = q.args.dead_letter_exchange.clone() else {
            self.msgs.forget(sid, &qm);
            return;
        };
        let dlrk = q.args.dead_letter_routing_key.clone();
        let qname = q.name.clone();
        let vhost = q.vhost.clone();
        match self.msgs.load(&mut qm) {
            Loaded::Yes => {}
            Loaded::Lost => return,
            Loaded::Later => {
                // Its content cannot be read for now: dead-lettered at the
                // next tick instead (it is not lost).
                self.dead_letter_later.push((qid, qm, reason));
                return;
            }
        }
        let old = qm.to_message();
        let Ok(mut h) = ContentHeader::decode(&old.header) else {
            self.msgs.forget(sid, &qm);
            return;
        };
        let props = &mut h.properties;
        let mut headers = props.headers.take().unwrap_or_default();
        let original_expiration = props.expiration.take();
        let mut deaths = match headers.remove("x-death") {
            Some(FieldValue::Array(a)) => a,
            _ => Vec::new(),
        };
        let same = deaths.iter().position(|d| {
            matches!(d, FieldValue::Table(t)
                if field_str(t, "queue") == Some(&qname[..]) && field_str(t, "reason") == Some(reason.as_bytes()))
        });
        let now_s = self.wall_ms() / 1000;
        let entry = match same.map(|i| deaths.remove(i)) {
            Some(FieldValue::Table(mut t)) => {
                let n = t.get("count").and_then(|v| v.as_i64()).unwrap_or(0);
                t.insert("count", FieldValue::I64(n + 1));
                t.insert("time", FieldValue::Timestamp(now_s));
                t
            }
            _ => {
                let mut t = FieldTable::new();
                t.insert("count", FieldValue::I64(1));
                t.insert("reason", s(reason.as_bytes()));
                t.insert("queue", s(&qname));
                t.insert("time", FieldValue::Timestamp(now_s));
                t.insert("exchange", s(&old.exchange));
                // The routing keys it was published with: its own and any
                // sender-selected (CC) ones, as RabbitMQ records them.
                let mut keys = vec![s(&old.routing_key)];
                if let Some(FieldValue::Array(cc)) = headers.get("CC") {
                    keys.extend(cc.iter().filter(|v| v.as_bytes().is_some()).cloned());
                }
                t.insert("routing-keys", FieldValue::Array(keys));
                if let Some(e) = &original_expiration {
                    t.insert("original-expiration", s(e));
                }
                t
            }
        };
        deaths.insert(0, FieldValue::Table(entry));
        if headers.get("x-first-death-reason").is_none() {
            headers.insert("x-first-death-reason", s(reason.as_bytes()));
            headers.insert("x-first-death-queue", s(&qname));
            headers.insert("x-first-death-exchange", s(&old.exchange));
        }
        headers.insert("x-death", FieldValue::Array(deaths.clone()));
        // RabbitMQ writes the table sorted by key.
        headers.0.sort_by(|a, b| a.0.cmp(&b.0));
        props.headers = Some(headers);
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        let header = buf.freeze();
        let rk = dlrk.unwrap_or_else(|| old.routing_key.clone());
        let mut out = std::mem::take(&mut self.route_scratch);
        let keyed = h
            .properties
            .headers
            .as_ref()
            .is_some_and(|t| t.get(crate::broker::dedup::DEDUP_HEADER).is_some());
        let dedup_at = keyed.then(|| self.wall_ms());
        self.broker.route(
            &vhost,
            &dlx,
            &rk,
            h.properties.headers.as_ref(),
            dedup_at,
            &mut out,
        );
        if reason != "rejected" {
            let broker = &self.broker;
            out.retain(|t| {
                broker
                    .queue(*t)
                    .is_none_or(|tq| !is_cycle(&tq.name, &deaths))
            });
        }
        let mut msg = Message::new(dlx, rk, header, old.body.clone(), old.persistent);
        msg.priority = old.priority;
        // Publish the dead-lettered copy before acknowledging the original, so
        // that a crash in between can duplicate but never lose it.
        let targets = std::mem::take(&mut out);
        if !targets.is_empty() {
            self.enqueue(msg, &targets);
        }
        self.route_scratch = targets;
        self.msgs.forget(sid, &qm);
    }

    /// Expire messages and unused queues whose time has come.
    pub(crate) fn run_timers(&mut self, now: Instant) {
        let now_ms = self.wall_ms();
        let mut expired_queues = Vec::new();
        let mut ttl_queues = Vec::new();
        for (_, q) in self.broker.queues.iter() {
            if q.head_expired(now_ms) {
                ttl_queues.push(q.id);
            }
            if let Some(ms) = q.args.expires {
                if q.consumers.is_empty()
                    && now.saturating_duration_since(q.last_used) >= Duration::from_millis(ms)
                {
                    expired_queues.push(q.id);
                }
            }
        }
        for q in ttl_queues {
            self.expire_queue(q);
        }
        for q in expired_queues {
            if let Some(qq) = self.broker.queue(q) {
                info!(
                    "queue '{}' in vhost '{}' expired (x-expires), deleting it",
                    String::from_utf8_lossy(&qq.name),
                    String::from_utf8_lossy(&qq.vhost)
                );
            }
            self.delete_queue(q);
        }
    }

    /// The earliest message expiry or queue expiry still to come.
    pub(crate) fn next_timer(&self, now: Instant) -> Option<Instant> {
        let now_ms = self.wall_ms();
        let mut best: Option<Instant> = None;
        let mut consider = |t: Instant| best = Some(best.map_or(t, |b: Instant| b.min(t)));
        if let Some(t) = self.next_delayed() {
            consider(t);
        }
        for (_, q) in self.broker.queues.iter() {
            if let Some(t) = q.ready.front().and_then(|m| m.expires_at()) {
                consider(now + Duration::from_millis(t.saturating_sub(now_ms) + 1));
            }
            if let Some(ms) = q.args.expires {
                if q.consumers.is_empty() {
                    consider(q.last_used + Duration::from_millis(ms));
                }
            }
        }
        best
    }

    /// Mark a queue as used now (declare, get, consume, cancel) for `x-expires`.
    pub(crate) fn touch_queue(&mut self, qid: QueueId) {
        let now = self.clock.now;
        let Some(q) = self.broker.queue_mut(qid) else {
            warn!("touch of a missing queue");
            return;
        };
        q.last_used = now;
        if let (Some(ms), true) = (q.args.expires, q.consumers.is_empty()) {
            self.wake_at(now + Duration::from_millis(ms));
        }
    }
}
