//! The message path inside the core: publish → route → queues, the dispatch
//! pass that hands ready messages to consumers with room (round robin,
//! prefetch, backpressure), acknowledgements, requeues, and releasing a
//! channel's or connection's holdings when it closes.

use bytes::Bytes;

use super::channel::{ChanState, Room, TxOp, Unacked};
use super::persist::Loaded;
use super::ConnState;
use crate::broker::args::Overflow;
use crate::broker::auth::Access;
use crate::broker::message::{Message, QueuedMsg};
use crate::broker::queue::ConsumerRef;
use crate::broker::{ConnId, QueueId};
use crate::codec::{
    BasicAck, BasicCancel, BasicNack, BasicReturn, ConnectionBlocked, ContentHeader, Error,
    FieldTable, FieldValue, ReplyCode,
};
use crate::core::Core;

/// True when the raw content header's property flags include `headers`.
fn has_headers(header: &[u8]) -> bool {
    header.get(12).is_some_and(|f| f & 0x20 != 0)
}

impl Core {
    /// Route a complete message and queue it (or return it). Persistent
    /// messages for durable queues are appended to the store; their confirm
    /// waits for the end-of-turn sync.
    pub(crate) fn publish(
        &mut self,
        id: ConnId,
        ch: u16,
        mut msg: Message,
        mandatory: bool,
    ) -> Result<(), Error> {
        self.rewrite_reply_to(id, ch, &mut msg)?;
        let (blocked, disk_alarm) = (self.blocked, self.disk_alarm);
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let vhost = c.vhost.clone();
        if !c.published {
            c.published = true;
            if blocked && c.cap_blocked {
                let reason = super::persist::blocked_reason(disk_alarm);
                c.outbox.method(
                    0,
                    &ConnectionBlocked {
                        reason: Bytes::from_static(reason.as_bytes()),
                    }
                    .into(),
                );
            }
        }
        // The write permission is checked once per exchange a connection
        // publishes to in a row (a pattern, look-around and all, per publish
        // would cost more than the rest of the publish).
        if self
            .conn(id)
            .is_none_or(|c| c.write_ok.as_ref() != Some(&msg.exchange))
        {
            self.check_access(id, Access::Write, "exchange", &msg.exchange)?;
            if let Some(c) = self.conn_mut(id) {
                c.write_ok = Some(msg.exchange.clone());
            }
        }
        self.broker.check_publish(&vhost, &msg.exchange)?;
        self.check_topic(id, Access::Write, &vhost, &msg.exchange, &msg.routing_key)?;
        self.counters.publish += 1;
        let headers = if has_headers(&msg.header) {
            ContentHeader::decode(&msg.header)
                .ok()
                .and_then(|h| h.properties.headers)
        } else {
            None
        };
        let mut out = std::mem::take(&mut self.route_scratch);
        // A direct reply-to reply goes straight to the requester's channel.
        let direct = msg.exchange.is_empty()
            && msg.routing_key.starts_with(super::reply_to::REPLY_PREFIX)
            && self.deliver_reply(&msg);
        let mut rejected = false;
        out.clear();
        if !direct {
            self.broker.route(
                &vhost,
                &msg.exchange,
                &msg.routing_key,
                headers.as_ref(),
                &mut out,
            );
            if let Some(h) = &headers {
                self.route_cc_bcc(&vhost, &mut msg, h, &mut out);
            }
        }
        if direct {
            // Delivered already.
        } else if out.is_empty() {
            self.counters.return_unroutable += u64::from(mandatory);
            self.counters.drop_unroutable += u64::from(!mandatory);
            if mandatory {
                let frame_max = self.conn(id).map_or(0, |c| c.frame_max);
                if let Some(c) = self.conn_mut(id) {
                    let ret = BasicReturn {
                        reply_code: ReplyCode::NO_ROUTE,
                        reply_text: Bytes::from_static(b"NO_ROUTE"),
                        exchange: msg.exchange.clone(),
                        routing_key: msg.routing_key.clone(),
                    };
                    c.outbox.method(ch, &ret.into());
                    c.outbox.content(ch, &msg.header, &msg.body, frame_max);
                }
            }
        } else {
            let (rej, stored) = self.enqueue(msg, &out);
            rejected = rej;
            if stored {
                self.wait_for_sync(id, ch);
            }
        }
        self.route_scratch = out;
        let waiting = self
            .conn(id)
            .and_then(|c| c.channel(ch))
            .is_some_and(|c| c.confirm && c.waiting_sync);
        if rejected && waiting {
            // A nack must not overtake the acks that wait for the sync.
            self.sync_now();
        }
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let Connection {
            channels, outbox, ..
        } = c;
        if let Some(chan) = channels.get_mut(ch) {
            if chan.confirm {
                chan.publish_seq += 1;
                if rejected {
                    // Confirms go out in order: ack what precedes, then nack this one.
                    if chan.confirm_ready > chan.confirm_sent {
                        let ack = BasicAck {
                            delivery_tag: chan.confirm_ready,
                            multiple: chan.confirm_ready - chan.confirm_sent > 1,
                        };
                        outbox.method(ch, &ack.into());
                    }
                    let nack = BasicNack {
                        delivery_tag: chan.publish_seq,
                        multiple: false,
                        requeue: false,
                    };
                    outbox.method(ch, &nack.into());
                    chan.confirm_sent = chan.publish_seq;
                    chan.confirm_ready = chan.publish_seq;
                } else if chan.waiting_sync {
                    chan.confirm_after_sync = chan.publish_seq;
                } else {
                    chan.confirm_ready = chan.publish_seq;
                }
            }
        }
        Ok(())
    }

    /// Put a routed message into its queues: store it once for the durable
    /// ones (if persistent), page it out beyond the memory budget, apply
    /// length limits (dead-lettering what overflows). Returns whether a queue
    /// refused it (reject-publish) and whether it was written to the store.
    pub(crate) fn enqueue(&mut self, mut msg: Message, targets: &[QueueId]) -> (bool, bool) {
        msg.timestamp = self.wall_ms();
        let mut durable = std::mem::take(&mut self.store_scratch);
        durable.clear();
        if msg.persistent && self.store.is_some() {
            durable.extend(
                targets
                    .iter()
                    .filter_map(|q| self.broker.queue(*q).and_then(|q| q.store_id)),
            );
        }
        let stored = self.store_message(&msg, &durable);
        self.store_scratch = durable;
        // Beyond half the memory budget the content goes (straight) to disk.
        let big = msg.body.len() >= crate::broker::message::INLINE_BODY;
        let more = if big {
            msg.body.len() as u64 + crate::broker::message::BIG_OVERHEAD
        } else {
            0
        };
        let packed =
            (!self.should_page(more)).then(|| QueuedMsg::pack(&mut self.arena, &msg, stored));
        let mut rejected = false;
        let mut dropped = Vec::new();
        for &q in targets {
            let Some((sid, overflow)) = self.broker.queue(q).map(|q| (q.store_id, q.args.overflow))
            else {
                continue;
            };
            let m = match &packed {
                Some(p) => {
                    let mut m = p.clone();
                    m.set_stored(sid.is_some());
                    self.resident += m.resident();
                    m
                }
                None => self.pack_paged(&msg, stored, sid.is_some()),
            };
            self.queued += 1;
            let Some(queue) = self.broker.queue_mut(q) else {
                continue;
            };
            let pushed = queue.push(m, msg.ttl, msg.timestamp, &mut dropped);
            queue.stats.publish += u64::from(pushed.is_ok());
            if let Err(m) = pushed {
                rejected = true;
                if overflow == Overflow::RejectPublishDlx {
                    self.dead_letter(q, m, "maxlen");
                } else {
                    self.forget(sid, &m);
                }
            }
            for d in std::mem::take(&mut dropped) {
                self.dead_letter(q, d, "maxlen");
            }
            let expiry = self
                .broker
                .queue(q)
                .and_then(|q| q.ready.back())
                .and_then(|m| m.expires_at());
            if let Some(t) = expiry {
                let now_ms = self.wall_ms();
                let at = self.now + std::time::Duration::from_millis(t.saturating_sub(now_ms) + 1);
                self.wake_at(at);
            }
            self.mark_queue(q);
        }
        (rejected, stored.is_some())
    }

    /// Sender-selected distribution (RabbitMQ): the routing keys listed in
    /// the `CC` and `BCC` headers route the message too; `BCC` is removed
    /// before the message is queued.
    fn route_cc_bcc(
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
                .route(vhost, &msg.exchange, k, Some(headers), &mut more);
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

    /// The channel's confirms from now on wait for the next store sync (and
    /// a transaction commit syncs before it answers).
    fn wait_for_sync(&mut self, id: ConnId, ch: u16) {
        self.force_sync = true;
        if let Some(chan) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) {
            if chan.confirm && !chan.waiting_sync {
                chan.waiting_sync = true;
                self.sync_waiters.push((id, ch));
            }
        }
    }

    /// Send the publisher confirms that became ready, coalesced with `multiple`.
    pub(crate) fn flush_confirms(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id) else { return };
        let Connection {
            channels, outbox, ..
        } = c;
        for chan in channels.iter_mut() {
            if chan.confirm
                && chan.confirm_ready > chan.confirm_sent
                && chan.state == ChanState::Open
            {
                let ack = BasicAck {
                    delivery_tag: chan.confirm_ready,
                    multiple: chan.confirm_ready - chan.confirm_sent > 1,
                };
                outbox.method(chan.id, &ack.into());
                chan.confirm_sent = chan.confirm_ready;
            }
        }
    }

    /// Note that a queue may be able to deliver.
    pub(crate) fn mark_queue(&mut self, q: QueueId) {
        if let Some(queue) = self.broker.queue_mut(q) {
            if !queue.dirty {
                queue.dirty = true;
                self.dirty_queues.push(q);
            }
        }
    }

    /// Deliver from every queue marked dirty.
    pub(crate) fn run_dispatch(&mut self) {
        while let Some(q) = self.dirty_queues.pop() {
            if let Some(queue) = self.broker.queue_mut(q) {
                queue.dirty = false;
            }
            self.expire_overdue(q);
            self.dispatch_queue(q);
            // What is due now and found nobody to take it expires now (TTL 0).
            self.expire_queue(q);
        }
    }

    /// Hand `qid`'s ready messages to its consumers: the one whose turn it
    /// is in the highest priority with an active consumer (single active
    /// consumer: the first subscribed, or nobody). A consumer that cannot
    /// take a message is blocked — left out until what holds it back
    /// changes (an ack, its connection's output draining) — so that each
    /// message costs O(1) however many consumers are full.
    fn dispatch_queue(&mut self, qid: QueueId) {
        let max_outbox = self.config.max_outbox;
        let Some(queue) = self
            .broker
            .queues
            .get_mut(qid.idx as usize)
            .filter(|q| q.id == qid)
        else {
            return;
        };
        let conns = &mut self.conns;
        let store = &mut self.store;
        let resident = &mut self.resident;
        let queued = &mut self.queued;
        let counters = &mut self.counters;
        let read_later = &mut self.read_later;
        let store_id = queue.store_id;
        let single = queue.args.single_active_consumer;
        while !queue.ready.is_empty() {
            let key = if single {
                queue
                    .consumers
                    .first_key()
                    .filter(|&k| queue.consumers.is_active(k))
            } else {
                queue.consumers.next_active()
            };
            let Some(key) = key else {
                return;
            };
            let Some(r) = queue.consumers.get(key) else {
                return;
            };
            let conn = conns
                .get_mut(r.conn.idx as usize)
                .filter(|c| c.id == r.conn && c.state == ConnState::Running);
            let Some(c) = conn else {
                queue.consumers.block(key);
                continue;
            };
            let room = if c.outbox.len() >= max_outbox {
                Room::OutboxFull
            } else {
                c.channel(r.channel)
                    .map_or(Room::Gone, |ch| ch.room(r.slot, &r.tag))
            };
            // Block it until something reopens what holds it back: its
            // connection's output draining, the channel's window (a
            // settle on the channel), its own window (a settle of one of
            // its deliveries, which knows it).
            match room {
                Room::Yes => {}
                Room::OutboxFull => {
                    c.held_back = true;
                    c.held.push((qid, key));
                }
                Room::ChannelFull => {
                    if let Some(ch) = c.channel_mut(r.channel) {
                        ch.global_blocked.push((qid, key));
                    }
                }
                Room::ConsumerFull | Room::Gone => {}
            }
            if room != Room::Yes {
                queue.consumers.block(key);
                continue;
            }
            let (channel, slot) = (r.channel, r.slot);
            let ctag = r.tag.clone();
            queue.consumers.delivered(key);
            let Some(m) = queue.pop() else {
                return;
            };
            // A paged-out message is delivered straight from the store and
            // stays paged out while unacknowledged: what the consumer has
            // not acknowledged yet (its socket buffers may hold many
            // megabytes of deliveries) takes no memory but its stub.
            let from_store = if m.is_paged() {
                match Core::read_back(store, &m) {
                    Ok(content) => Some(content),
                    Err(Loaded::Later) => {
                        queue.unpop(m);
                        read_later.push(qid);
                        return;
                    }
                    Err(_) => {
                        *queued = queued.saturating_sub(1);
                        continue;
                    }
                }
            } else {
                None
            };
            queue.stats.deliver += 1;
            counters.deliver += 1;
            if m.redelivered() {
                queue.stats.redeliver += 1;
                counters.redeliver += 1;
            }
            let frame_max = c.frame_max;
            let super::Connection {
                channels,
                outbox,
                in_flush_list,
                id: conn_id,
                ..
            } = c;
            let Some(chan) = channels.get_mut(channel) else {
                return;
            };
            chan.last_tag += 1;
            let tag = chan.last_tag;
            let p = m.parts();
            outbox.deliver(
                channel,
                &ctag,
                tag,
                m.redelivered(),
                p.exchange,
                p.routing_key,
            );
            let count = queue.args.quorum.then(|| m.returns());
            m.write_delivery(outbox, channel, frame_max, from_store.as_ref(), count);
            let Some(consumer) = chan.consumers.get_mut(slot) else {
                return;
            };
            if consumer.no_ack {
                forget_in(store, resident, queued, store_id, &m);
            } else {
                if let (Some(sid), Some(sr), Some(st)) = (store_id, m.stored(), store.as_mut()) {
                    if !m.redelivered() {
                        st.delivered(sid, &sr);
                    }
                }
                consumer.unacked += 1;
                queue.unacked += 1;
                chan.unacked.push_back(Unacked {
                    tag,
                    queue: qid,
                    msg: m,
                    consumer: Some(ctag),
                    consumer_slot: slot,
                });
            }
            if !*in_flush_list {
                *in_flush_list = true;
                self.flush_list.push(*conn_id);
            }
        }
    }

    /// A delivery is settled (acked, or nacked/rejected): fix the counters.
    fn settle(&mut self, id: ConnId, ch: u16, u: &Unacked) {
        let Core {
            conns,
            broker,
            dirty_queues,
            ..
        } = self;
        if let Some(queue) = broker.queue_mut(u.queue) {
            if !queue.dirty {
                queue.dirty = true;
                dirty_queues.push(u.queue);
            }
        }
        let Some(chan) = conns
            .get_mut(id.idx as usize)
            .filter(|c| c.id == id)
            .and_then(|c| c.channel_mut(ch))
        else {
            return;
        };
        if let Some(tag) = &u.consumer {
            if let Some(k) = chan
                .consumers
                .get_mut(u.consumer_slot)
                .filter(|k| k.tag == tag)
            {
                k.unacked = k.unacked.saturating_sub(1);
                // Its prefetch window has room again.
                let (q, key) = (k.queue, k.qkey);
                unblock_consumer(broker, dirty_queues, q, key);
            }
        }
        // A channel-wide prefetch window is shared: room freed by this
        // settlement may go to any consumer of the channel that found it
        // full.
        if chan.global_prefetch != 0 {
            for (q, key) in chan.global_blocked.drain(..) {
                unblock_consumer(broker, dirty_queues, q, key);
            }
        }
    }

    fn ack_one(&mut self, id: ConnId, ch: u16, u: Unacked) {
        self.settle_one(id, ch, u, false, false)
    }

    /// Settle one delivery: requeue it, or let it go (ack, or reject
    /// without requeue). A message whose queue is gone is let go.
    fn nack_one(&mut self, id: ConnId, ch: u16, u: Unacked, requeue: bool) {
        self.settle_one(id, ch, u, requeue, true)
    }

    /// Settle one delivery: requeue it, dead-letter it (`rejected`: nack or
    /// reject without requeue), or let it go (ack).
    fn settle_one(&mut self, id: ConnId, ch: u16, u: Unacked, requeue: bool, rejected: bool) {
        self.settle(id, ch, &u);
        let Some(q) = self.broker.queue_mut(u.queue) else {
            self.forget(None, &u.msg);
            return;
        };
        if requeue {
            let m = u.msg;
            let Some(mut m) = self.returned(u.queue, m) else {
                return;
            };
            self.hold_again(&mut m);
            if let Some(q) = self.broker.queue_mut(u.queue) {
                q.requeue(m);
            }
            return;
        }
        q.unacked = q.unacked.saturating_sub(1);
        if rejected {
            self.dead_letter(u.queue, u.msg, "rejected");
        } else {
            q.stats.ack += 1;
            let sid = q.store_id;
            self.counters.ack += 1;
            self.forget(sid, &u.msg);
        }
    }

    /// A delivery coming back to its queue: a quorum queue counts it, and
    /// one returned more often than its delivery limit allows is
    /// dead-lettered (or dropped) instead (RabbitMQ: a limit of 2 means
    /// three deliveries). Counts stop at 255: a limit of 255 or more never
    /// applies. None: it is not going back.
    fn returned(&mut self, queue: QueueId, mut m: QueuedMsg) -> Option<QueuedMsg> {
        let q = self.broker.queue_mut(queue)?;
        if !q.args.quorum {
            return Some(m);
        }
        m.returned();
        let limit = q.args.delivery_limit;
        if limit.is_some_and(|l| l < 255 && u64::from(m.returns()) > l) {
            q.unacked = q.unacked.saturating_sub(1);
            self.dead_letter(queue, m, "delivery_limit");
            return None;
        }
        Some(m)
    }

    /// Back in its queue, a message is held like a new one: beyond half the
    /// memory budget its content goes (back) to disk.
    fn hold_again(&mut self, m: &mut QueuedMsg) {
        if !m.is_paged() {
            self.resident = self.resident.saturating_sub(m.resident());
            self.maybe_page_out(m);
        }
    }

    /// Requeue many deliveries at once (channel close, recover, nack with
    /// multiple), in delivery order as one by one (which of them stay in
    /// memory is decided oldest first), but put back in their queues newest
    /// first: each then goes to the front of what is ready, O(1), where
    /// oldest first each went behind the last, shifting all that precede
    /// it (quadratic: 100,000 unacked before 300,000 ready took 8 s).
    fn requeue_all(&mut self, id: ConnId, ch: u16, list: Vec<Unacked>) {
        let mut back = Vec::with_capacity(list.len());
        for u in list {
            self.settle(id, ch, &u);
            if self.broker.queue(u.queue).is_none() {
                self.forget(None, &u.msg);
                continue;
            }
            let Some(mut m) = self.returned(u.queue, u.msg) else {
                continue;
            };
            self.hold_again(&mut m);
            back.push((u.queue, m));
        }
        for (q, m) in back.into_iter().rev() {
            if let Some(q) = self.broker.queue_mut(q) {
                q.requeue(m);
            }
        }
    }

    fn take_unacked(
        &mut self,
        id: ConnId,
        ch: u16,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<Unacked>, Error> {
        let Some(chan) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) else {
            return Ok(Vec::new());
        };
        chan.take_unacked(tag, multiple).ok_or_else(|| {
            Error::new(
                ReplyCode::PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            )
        })
    }

    fn in_tx(&mut self, id: ConnId, ch: u16) -> bool {
        self.conn_mut(id)
            .and_then(|c| c.channel_mut(ch))
            .is_some_and(|c| c.tx.is_some())
    }

    fn push_tx(&mut self, id: ConnId, ch: u16, op: TxOp) {
        if let Some(ops) = self
            .conn_mut(id)
            .and_then(|c| c.channel_mut(ch))
            .and_then(|c| c.tx.as_mut())
        {
            ops.push(op);
        }
    }

    /// basic.ack.
    pub(crate) fn basic_ack(
        &mut self,
        id: ConnId,
        ch: u16,
        tag: u64,
        multiple: bool,
    ) -> Result<(), Error> {
        if self.in_tx(id, ch) {
            let taken = self.take_unacked(id, ch, tag, multiple)?;
            self.push_tx(id, ch, TxOp::Ack(taken));
            return Ok(());
        }
        // The hot path: settle in place, no intermediate vector.
        let Some(chan) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) else {
            return Ok(());
        };
        let unknown = || {
            Error::new(
                ReplyCode::PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            )
        };
        if !multiple {
            let u = chan.unacked.take(tag).ok_or_else(unknown)?;
            self.ack_one(id, ch, u);
            return Ok(());
        }
        let through = if tag == 0 { u64::MAX } else { tag };
        if tag != 0 && !chan.unacked.has_through(tag) {
            return Err(unknown());
        }
        while let Some(u) = self
            .conn_mut(id)
            .and_then(|c| c.channel_mut(ch))
            .and_then(|c| c.unacked.pop_through(through))
        {
            self.ack_one(id, ch, u);
        }
        Ok(())
    }

    /// basic.nack / basic.reject.
    pub(crate) fn basic_nack(
        &mut self,
        id: ConnId,
        ch: u16,
        tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), Error> {
        let taken = self.take_unacked(id, ch, tag, multiple)?;
        if self.in_tx(id, ch) {
            self.push_tx(id, ch, TxOp::Nack(taken, requeue));
            return Ok(());
        }
        if requeue {
            self.requeue_all(id, ch, taken);
        } else {
            for u in taken {
                self.nack_one(id, ch, u, false);
            }
        }
        Ok(())
    }

    /// basic.recover / recover-async: requeue everything unacked.
    pub(crate) fn recover(&mut self, id: ConnId, ch: u16, requeue: bool) -> Result<(), Error> {
        if !requeue {
            return Err(Error::new(ReplyCode::NOT_IMPLEMENTED, "requeue=false"));
        }
        let taken = self.take_unacked(id, ch, 0, true)?;
        self.requeue_all(id, ch, taken);
        Ok(())
    }

    /// tx.commit: apply the channel's deferred operations in order.
    pub(crate) fn tx_commit(&mut self, id: ConnId, ch: u16, ops: Vec<TxOp>) -> Result<(), Error> {
        for op in ops {
            match op {
                TxOp::Publish(msg, mandatory) => self.publish(id, ch, msg, mandatory)?,
                TxOp::Ack(v) => v.into_iter().for_each(|u| self.ack_one(id, ch, u)),
                TxOp::Nack(v, requeue) => v
                    .into_iter()
                    .for_each(|u| self.nack_one(id, ch, u, requeue)),
            }
        }
        Ok(())
    }

    /// tx.rollback: drop deferred publishes; deferred acks return to the
    /// unacked list.
    pub(crate) fn tx_rollback(&mut self, ops: Vec<TxOp>, id: ConnId, ch: u16) {
        let Some(chan) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) else {
            return;
        };
        for op in ops {
            if let TxOp::Ack(v) | TxOp::Nack(v, _) = op {
                for u in v {
                    chan.unacked.insert(u);
                }
            }
        }
    }

    /// basic.cancel from the client (or a closing channel).
    pub(crate) fn cancel_consumer(&mut self, id: ConnId, ch: u16, tag: &[u8]) {
        let Some(chan) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) else {
            return;
        };
        let Some(slot) = chan.consumers.key_of(tag) else {
            return;
        };
        let Some(k) = chan.consumers.remove(tag) else {
            return;
        };
        self.detach_consumer(k.queue, k.qkey, id, ch, slot);
    }

    /// Remove a consumer (key `qkey` in queue `q`, `slot` on channel `ch`)
    /// from its queue; auto-delete the queue if it was the last.
    fn detach_consumer(&mut self, q: QueueId, qkey: u32, id: ConnId, ch: u16, slot: u32) {
        let Some(queue) = self.broker.queue_mut(q) else {
            return;
        };
        queue.remove_consumer(qkey, id, ch, slot);
        let auto_delete = queue.auto_delete && queue.had_consumers && queue.consumers.is_empty();
        if auto_delete {
            self.delete_queue(q);
        } else {
            self.touch_queue(q);
            // With a single active consumer, the next one takes over now.
            self.mark_queue(q);
        }
    }

    /// Delete a queue and tell its consumers (basic.cancel for clients that
    /// announced consumer_cancel_notify). Returns the ready messages dropped.
    pub(crate) fn delete_queue(&mut self, q: QueueId) -> u32 {
        let gone = self.broker.delete_queue(q);
        for ConsumerRef {
            conn,
            channel,
            tag,
            slot,
            ..
        } in gone.consumers
        {
            let Some(c) = self.conn_mut(conn) else {
                continue;
            };
            let notify = c.cap_cancel_notify;
            let Some(chan) = c.channel_mut(channel) else {
                continue;
            };
            if chan.consumers.get(slot).is_some_and(|k| k.tag == tag) {
                chan.consumers.remove(&tag);
            }
            if notify && chan.state == ChanState::Open {
                let cancel = BasicCancel {
                    consumer_tag: tag,
                    nowait: true,
                };
                c.outbox.method(channel, &cancel.into());
                self.mark_flush(conn);
            }
        }
        if let (Some(sid), Some(st)) = (gone.store_id, self.store.as_mut()) {
            st.purge(sid);
        }
        let n = gone.ready.len() as u32;
        for m in &gone.ready {
            // The purge record covers the durable ones: only release them.
            self.forget(None, m);
        }
        n
    }

    /// A channel is closing: requeue its unacked messages, drop its consumers.
    pub(crate) fn release_channel(&mut self, id: ConnId, ch: u16) {
        let Some(chan) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) else {
            return;
        };
        let unacked = chan.unacked.take_all();
        let consumers = chan.consumers.take_all();
        chan.global_blocked = Vec::new();
        chan.assembly = None;
        let tx = chan.tx.take();
        if let Some(ops) = tx {
            self.tx_rollback(ops, id, ch);
            if let Some(chan) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) {
                let more = chan.unacked.take_all();
                self.requeue_all(id, ch, more);
            }
        }
        self.requeue_all(id, ch, unacked);
        for (slot, k) in consumers {
            self.detach_consumer(k.queue, k.qkey, id, ch, slot);
        }
    }

    /// A connection is closing: release every channel, delete its exclusive queues.
    pub(crate) fn release_connection(&mut self, id: ConnId) {
        let Some(c) = self.conn(id) else { return };
        let chans: Vec<u16> = c.channels.iter().map(|ch| ch.id).collect();
        for ch in chans {
            self.release_channel(id, ch);
        }
        let excl = self
            .conn_mut(id)
            .map(|c| std::mem::take(&mut c.exclusive_queues))
            .unwrap_or_default();
        for q in excl {
            if self
                .broker
                .queue(q)
                .is_some_and(|qq| qq.exclusive_owner == Some(id))
            {
                self.delete_queue(q);
            }
        }
    }
}

use super::Connection;

/// Put a blocked consumer (key `key` of queue `q`) back into its queue's
/// rotation and have the queue dispatch; a no-op for a consumer that is
/// active or gone. (A free function for call sites that hold other borrows
/// of the core.)
pub(crate) fn unblock_consumer(
    broker: &mut crate::broker::Broker,
    dirty_queues: &mut Vec<QueueId>,
    q: QueueId,
    key: u32,
) {
    if let Some(queue) = broker.queue_mut(q) {
        queue.consumers.unblock(key);
        if !queue.dirty {
            queue.dirty = true;
            dirty_queues.push(q);
        }
    }
}

/// Release a message's memory and store reference (see [`Core::forget`]);
/// a free function for call sites that hold other borrows of the core.
pub(crate) fn forget_in(
    store: &mut Option<crate::store::Store>,
    resident: &mut u64,
    queued: &mut u64,
    queue_store_id: Option<u64>,
    m: &QueuedMsg,
) {
    *resident = resident.saturating_sub(m.resident());
    *queued = queued.saturating_sub(1);
    if let (Some(r), Some(st)) = (m.stored(), store.as_mut()) {
        match queue_store_id {
            Some(q) if r.durable => st.ack(q, &r),
            _ => st.release(&r),
        }
    }
}
