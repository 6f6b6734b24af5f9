//! The publish action: route a complete message (its exchange's bindings,
//! alternate exchanges, sender-selected CC/BCC keys) and queue it: stored
//! once for the durable queues if persistent, paged out beyond the memory
//! budget, length limits applied.

use bytes::Bytes;

use super::{Engine, Taken};
use crate::broker::args::Overflow;
use crate::broker::message::{Message, QueuedMsg};
use crate::broker::QueueId;
use crate::codec::{ContentHeader, Error, FieldTable, FieldValue};

/// What became of a published message.
#[derive(Debug, Default)]
pub struct Routed {
    /// It reached at least one queue (or a direct reply-to consumer).
    pub routed: bool,
    /// A queue refused it (`x-overflow: reject-publish`): a confirm must
    /// be a nack.
    pub rejected: bool,
    /// It was written to the store: a confirm waits for the next sync.
    pub stored: bool,
    /// It was unroutable and published as mandatory: handed back for the
    /// front door to return to its publisher.
    pub returned: Option<Message>,
}

/// True when the raw content header's property flags include `headers`.
pub(crate) fn has_headers(header: &[u8]) -> bool {
    header.get(12).is_some_and(|f| f & 0x20 != 0)
}

impl Engine {
    /// Publish `msg` to its exchange in `vhost`: 404 if the exchange does
    /// not exist, 403 if it is internal. Unroutable messages are counted as
    /// returned (`mandatory`: the front door returns them) or dropped.
    pub fn publish(
        &mut self,
        vhost: &[u8],
        mut msg: Message,
        mandatory: bool,
    ) -> Result<Routed, Error> {
        self.broker.check_publish(vhost, &msg.exchange)?;
        self.counters.publish += 1;
        let headers = if has_headers(&msg.header) {
            ContentHeader::decode(&msg.header)
                .ok()
                .and_then(|h| h.properties.headers)
        } else {
            None
        };
        // An `x-delayed-message` exchange holds a message with an x-delay.
        if let Some(h) = &headers {
            if h.get(crate::broker::delayed::DELAY_HEADER).is_some() {
                if let Some(r) = self.hold_delayed(vhost, &msg, h, mandatory)? {
                    return Ok(r);
                }
            }
        }
        let mut out = std::mem::take(&mut self.route_scratch);
        self.route_message(vhost, &mut msg, headers.as_ref(), &mut out);
        let mut r = Routed {
            routed: !out.is_empty(),
            ..Routed::default()
        };
        if out.is_empty() {
            self.counters.return_unroutable += u64::from(mandatory);
            self.counters.drop_unroutable += u64::from(!mandatory);
            r.returned = mandatory.then_some(msg);
        } else {
            (r.rejected, r.stored) = self.enqueue(msg, &out);
        }
        self.route_scratch = out;
        Ok(r)
    }

    /// The queues `msg` goes to from its exchange in `vhost`, into `out`:
    /// its bindings (exchange to exchange too, alternate exchanges), the
    /// CC and BCC keys of its `headers`. `x-message-deduplication`
    /// exchanges on the way check a message with a key (see
    /// `Broker::route`); a duplicate is unroutable there (still
    /// confirmed), as with the plugin.
    pub(crate) fn route_message(
        &mut self,
        vhost: &[u8],
        msg: &mut Message,
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueId>,
    ) {
        out.clear();
        let keyed = headers.is_some_and(|h| h.get(crate::broker::dedup::DEDUP_HEADER).is_some());
        let dedup_at = keyed.then(|| self.wall_ms());
        self.broker.route(
            vhost,
            &msg.exchange,
            &msg.routing_key,
            headers,
            dedup_at,
            out,
        );
        if let Some(h) = headers {
            self.route_cc_bcc(vhost, msg, h, out);
        }
    }

    /// Put a routed message into its queues: store it once for the durable
    /// ones (if persistent), page it out beyond the memory budget, apply
    /// length limits (dead-lettering what overflows). Returns whether a queue
    /// refused it (reject-publish) and whether it was written to the store.
    pub(crate) fn enqueue(&mut self, mut msg: Message, targets: &[QueueId]) -> (bool, bool) {
        msg.timestamp = self.wall_ms();
        // Streams append to their logs (every message, persistent or not,
        // as RabbitMQ's streams keep them); the other queues follow.
        let mut appended = false;
        let mut others = targets.len();
        if self.broker.streams > 0 {
            for &q in targets {
                if self.stream_append(q, &msg) {
                    appended = true;
                    others -= 1;
                }
            }
            if others == 0 {
                return (false, appended);
            }
        }
        // Deduplication queues (`x-message-deduplication`) among the
        // targets: looked for only when there are some and the message has
        // headers, and its key read only then.
        let mut kept = Vec::new();
        let key = if self.broker.dedup_queues > 0
            && has_headers(&msg.header)
            && targets
                .iter()
                .any(|q| self.broker.queue(*q).is_some_and(|q| q.dedup.is_some()))
        {
            self.dedup_targets(&msg, targets, &mut kept)
        } else {
            None
        };
        let targets = if key.is_some() { &kept[..] } else { targets };
        if targets.is_empty() {
            // Only deduplication queues holding its key: dropped (a
            // confirm is an ack, as with the plugin).
            return (false, appended);
        }
        let mut durable = std::mem::take(&mut self.store_scratch);
        durable.clear();
        if msg.persistent && self.msgs.store.is_some() {
            durable.extend(targets.iter().filter_map(|q| {
                self.broker
                    .queue(*q)
                    .filter(|q| q.stream.is_none())
                    .and_then(|q| q.store_id)
            }));
        }
        let stored = self.msgs.store_message(&msg, &durable);
        self.store_scratch = durable;
        // Beyond half the memory budget the content goes (straight) to disk.
        let big = msg.body.len() >= crate::broker::message::INLINE_BODY;
        let more = if big {
            msg.body.len() as u64 + crate::broker::message::BIG_OVERHEAD
        } else {
            0
        };
        let packed = (!self.msgs.should_page(more))
            .then(|| QueuedMsg::pack(&mut self.msgs.arena, &msg, stored));
        let mut rejected = false;
        for &q in targets {
            let Some((sid, overflow)) = self
                .broker
                .queue(q)
                .filter(|q| q.stream.is_none())
                .map(|q| (q.store_id, q.args.overflow))
            else {
                continue;
            };
            let m = match &packed {
                Some(p) => {
                    let mut m = p.clone();
                    m.set_stored(sid.is_some());
                    self.msgs.resident += m.resident();
                    m
                }
                None => self.msgs.pack_paged(&msg, stored, sid.is_some()),
            };
            self.msgs.queued += 1;
            let Some(queue) = self.broker.queue_mut(q) else {
                continue;
            };
            let level = usize::from(queue.args.max_priority.map_or(0, |p| msg.priority.min(p)));
            let pushed = queue.push(m, msg.ttl, msg.timestamp);
            queue.stats.publish += u64::from(pushed.is_ok());
            let seq = queue.next_seq().saturating_sub(1);
            if let (Ok(until), Some(d), Some(k)) = (&pushed, queue.dedup.as_deref_mut(), &key) {
                d.insert(k.clone(), seq, *until);
            }
            let expiry = match pushed {
                Ok(expiry) => {
                    let now = self.clock.now;
                    self.msgs.spill_excess(&mut queue.ready, level, now);
                    expiry
                }
                Err(m) => {
                    rejected = true;
                    if overflow == Overflow::RejectPublishDlx {
                        self.dead_letter(q, m, "maxlen");
                    } else {
                        self.msgs.forget(sid, &m);
                    }
                    None
                }
            };
            self.drop_over_limit(q);
            if let Some(t) = expiry {
                let now_ms = self.wall_ms();
                let at =
                    self.clock.now + std::time::Duration::from_millis(t.saturating_sub(now_ms) + 1);
                self.wake_at(at);
            }
            self.mark_queue(q);
        }
        (rejected, stored.is_some() || appended)
    }

    /// The message's deduplication key, if it has one, and in `kept` the
    /// targets that take it: all but the deduplication queues holding a
    /// message with that key.
    fn dedup_targets(
        &self,
        msg: &Message,
        targets: &[QueueId],
        kept: &mut Vec<QueueId>,
    ) -> Option<Bytes> {
        let headers = ContentHeader::decode(&msg.header)
            .ok()
            .and_then(|h| h.properties.headers);
        let key = crate::broker::dedup::key_in(headers.as_ref())?;
        let now = msg.timestamp;
        kept.extend(targets.iter().copied().filter(|q| {
            self.broker
                .queue(*q)
                .is_some_and(|q| q.dedup.as_deref().is_none_or(|d| !d.holds(&key, now)))
        }));
        Some(key)
    }

    /// With `x-overflow` drop-head, drop (dead-letter) messages from the
    /// head of queue `q` until its length limits hold: at most
    /// [`super::LEAVE_BATCH`] in one call (a policy that lowers the limit
    /// of a deep queue is worked off over several turns).
    pub(crate) fn drop_over_limit(&mut self, q: QueueId) {
        for _ in 0..super::LEAVE_BATCH {
            let Some(queue) = self.broker.queue_mut(q) else {
                return;
            };
            if queue.args.overflow != Overflow::DropHead || !queue.over_limit() {
                return;
            }
            match self.msgs.take(queue, false) {
                Taken::Msg(m, _) => self.dead_letter(q, m, "maxlen"),
                Taken::Empty | Taken::Later => return,
            }
        }
        if !self.trim_later.contains(&q) {
            self.trim_later.push(q);
        }
        let now = self.clock.now;
        self.wake_at(now);
    }

    /// Sender-selected distribution (RabbitMQ): the routing keys listed in
    /// the `CC` and `BCC` headers route the message too; `BCC` is removed
    /// before the message is queued.
    pub(crate) fn route_cc_bcc(
        &mut self,
        vhost: &[u8],
        msg: &mut Message,
        headers: &FieldTable,
        out: &mut Vec<QueueId>,
    ) {
        let keys = |k: &str| -> Vec<Bytes> {
            match headers.get(k) {
                Some(FieldValue::Array(a)) => {
                    a.iter().filter_map(|v| v.as_bytes().cloned()).collect()
                }
                _ => Vec::new(),
            }
        };
        let (cc, bcc) = (keys("CC"), keys("BCC"));
        if cc.is_empty() && bcc.is_empty() && headers.get("BCC").is_none() {
            return;
        }
        let mut more = Vec::new();
        for k in cc.iter().chain(bcc.iter()) {
            self.broker
                .route(vhost, &msg.exchange, k, Some(headers), None, &mut more);
            out.append(&mut more);
        }
        out.sort_unstable();
        out.dedup();
        if headers.get("BCC").is_some() {
            if let Ok(mut h) = ContentHeader::decode(&msg.header) {
                if let Some(t) = h.properties.headers.as_mut() {
                    t.remove("BCC");
                }
                let mut buf = bytes::BytesMut::new();
                h.encode(&mut buf);
                msg.header = buf.freeze();
            }
        }
    }
}
