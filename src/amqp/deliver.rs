//! Deliveries and their settlement: the dispatch pass that hands the
//! messages the engine's queues hold to AMQP consumers with room (round
//! robin, prefetch, backpressure), basic.ack / nack / reject / recover and
//! transactions, consumers told of deleted queues, and releasing a
//! channel's or connection's holdings when it closes.

use super::channel::{ChanState, Room, TxOp, Unacked};
use super::{ConnState, Connection, Core};
use crate::broker::queue::ConsumerRef;
use crate::broker::{ConnId, QueueId};
use crate::codec::{BasicCancel, Error, ReplyCode};
use crate::engine::{count_taken, Taken};

/// May consumer `r` (key `key` of queue `qid`) on connection `c` take a
/// delivery now? If not, the caller blocks it, and this notes what is to
/// unblock it: its connection's output draining, the channel's window (a
/// settle on the channel), or its own window (a settle of one of its
/// deliveries, which knows it).
pub(super) fn has_room(
    c: &mut Connection,
    r: &ConsumerRef,
    qid: QueueId,
    key: u32,
    max_outbox: usize,
) -> bool {
    let room = if c.outbox.len() >= max_outbox {
        Room::OutboxFull
    } else {
        c.channel(r.channel)
            .map_or(Room::Gone, |ch| ch.room(r.slot, &r.tag))
    };
    match room {
        Room::Yes => return true,
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
    false
}

impl Core {
    /// Deliver from every queue that may deliver, and tell the consumers of
    /// deleted queues.
    pub(crate) fn run_dispatch(&mut self) {
        if self.engine.has_cancelled() {
            self.tell_cancelled();
        }
        while let Some(q) = self.engine.next_dirty() {
            self.dispatch_queue(q);
            self.engine.after_dispatch(q);
        }
    }

    /// Tell the consumers of deleted queues (basic.cancel, to clients that
    /// announced consumer_cancel_notify), and forget them.
    pub(crate) fn tell_cancelled(&mut self) {
        for ConsumerRef {
            conn,
            channel,
            tag,
            slot,
            ..
        } in self.engine.take_cancelled()
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
    }

    /// Hand `qid`'s ready messages to its consumers: the one whose turn it
    /// is in the highest priority with an active consumer (single active
    /// consumer: the first subscribed, or nobody). A consumer that cannot
    /// take a message is blocked — left out until what holds it back
    /// changes (an ack, its connection's output draining) — so that each
    /// message costs O(1) however many consumers are full.
    fn dispatch_queue(&mut self, qid: QueueId) {
        let Core {
            engine,
            conns,
            flush_list,
            mqtt,
            ..
        } = self;
        let max_outbox = engine.config.max_outbox;
        let stamp = engine.stamp();
        let wall = engine.wall_ms();
        let Some(queue) = engine.broker.queue_mut(qid) else {
            return;
        };
        if queue.stream.is_some() {
            return self.dispatch_stream(qid);
        }
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
            if !has_room(c, r, qid, key, max_outbox) {
                queue.consumers.block(key);
                continue;
            }
            let (channel, slot) = (r.channel, r.slot);
            let ctag = r.tag.clone();
            queue.consumers.delivered(key);
            // A paged-out message is delivered straight from the store and
            // stays paged out while unacknowledged: what the consumer has
            // not acknowledged yet (its socket buffers may hold many
            // megabytes of deliveries) takes no memory but its stub.
            let (m, from_store) = match engine.msgs.take(queue, true) {
                Taken::Msg(m, content) => (m, content),
                Taken::Empty | Taken::Later => return,
            };
            // The delivery goes out in the connection's protocol; `tracked`
            // is its tag when it waits for an acknowledgement.
            let tracked = if c.mqtt.is_some() {
                let Some(no_ack) = c
                    .channel(channel)
                    .and_then(|ch| ch.consumers.get(slot))
                    .map(|k| k.no_ack)
                else {
                    queue.unpop(m);
                    return;
                };
                let shared = ctag.starts_with(b"mqtt-shared:");
                if let Some(v) = c.mqtt.as_deref().and_then(|s| s.version) {
                    let st = mqtt.stats_of(v);
                    st.delivered += 1;
                    st.redelivered += u64::from(m.redelivered());
                }
                let queue_qos = u8::from(!no_ack);
                let from = from_store.as_ref();
                match crate::mqtt::deliver::deliver(
                    c, channel, qid, &m, from, queue_qos, shared, wall,
                ) {
                    crate::mqtt::deliver::Sent::NoId => {
                        queue.unpop(m);
                        queue.consumers.block(key);
                        continue;
                    }
                    crate::mqtt::deliver::Sent::Settled => None,
                    crate::mqtt::deliver::Sent::Tracked(tag) => Some(tag),
                }
            } else {
                let frame_max = c.frame_max;
                let Connection {
                    channels, outbox, ..
                } = &mut *c;
                let Some(chan) = channels.get_mut(channel) else {
                    queue.unpop(m);
                    return;
                };
                let Some(no_ack) = chan.consumers.get(slot).map(|k| k.no_ack) else {
                    queue.unpop(m);
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
                let count = queue.args.quorum.then(|| m.returns()).filter(|&n| n > 0);
                m.write_delivery(outbox, channel, frame_max, from_store.as_ref(), count);
                (!no_ack).then_some(tag)
            };
            count_taken(queue, &mut engine.counters, &m, false);
            match tracked {
                None => {
                    queue.leave(&m);
                    engine.msgs.forget(store_id, &m);
                }
                Some(tag) => {
                    engine.msgs.delivered(store_id, &m);
                    queue.unacked += 1;
                    if let Some(chan) = c.channel_mut(channel) {
                        chan.hold(Unacked {
                            tag,
                            queue: qid,
                            msg: m,
                            consumer: Some(ctag),
                            consumer_slot: slot,
                            at: stamp,
                        });
                    }
                }
            }
            c.flush_later(flush_list);
        }
    }

    /// A delivery is settled (acked, or nacked/rejected): fix the counters.
    fn settle(&mut self, id: ConnId, ch: u16, u: &Unacked) {
        let Core { conns, engine, .. } = self;
        engine.mark_queue(u.queue);
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
                engine.unblock_consumer(q, key);
            }
        }
        // A channel-wide prefetch window is shared: room freed by this
        // settlement may go to any consumer of the channel that found it
        // full.
        if chan.global_prefetch != 0 {
            for (q, key) in chan.global_blocked.drain(..) {
                engine.unblock_consumer(q, key);
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
        if requeue {
            self.engine.requeue(u.queue, u.msg);
        } else if rejected {
            self.engine.reject(u.queue, u.msg);
        } else {
            self.engine.ack(u.queue, u.msg, true);
        }
    }

    /// Requeue many deliveries at once (channel close, recover, nack with
    /// multiple), in delivery order (see [`crate::engine::Engine::requeue_many`]).
    fn requeue_all(&mut self, id: ConnId, ch: u16, list: Vec<Unacked>) {
        for u in &list {
            self.settle(id, ch, u);
        }
        self.engine
            .requeue_many(list.into_iter().map(|u| (u.queue, u.msg)));
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
        if let Some((name, vh)) = taken.iter().find_map(|u| self.stream_name(u.queue)) {
            return Err(super::stream::not_supported(
                "basic.nack and basic.reject",
                &name,
                &vh,
            ));
        }
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
        if let Some((name, vh)) = taken.iter().find_map(|u| self.stream_name(u.queue)) {
            // RabbitMQ 3.10's channel crashes here (541); a stream cannot
            // deliver again what it delivered: refused as basic.nack is.
            return Err(super::stream::not_supported("basic.recover", &name, &vh));
        }
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
        let Some(queue) = self.engine.broker.queue_mut(q) else {
            return;
        };
        queue.remove_consumer(qkey, id, ch, slot);
        let auto_delete = queue.auto_delete && queue.had_consumers && queue.consumers.is_empty();
        if auto_delete {
            self.delete_queue(q);
        } else {
            self.engine.touch_queue(q);
            // With a single active consumer, the next one takes over now.
            self.engine.mark_queue(q);
        }
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
                .engine
                .broker
                .queue(q)
                .is_some_and(|qq| qq.exclusive_owner == Some(id))
            {
                self.delete_queue(q);
            }
        }
    }
}
