//! What AMQP clients are told when the engine's group commit and alarms
//! decide: publisher confirms released (or nacked) after the sync,
//! replies that promised durability withdrawn with 541 when it failed,
//! and connection.blocked / unblocked.

use std::io;
use std::time::Instant;

use bytes::Bytes;

use super::channel::ChanState;
use super::{ConnState, Connection, Core};
use crate::broker::ConnId;
use crate::codec::{BasicAck, BasicNack, ConnectionBlocked, ConnectionUnblocked, Error, ReplyCode};

impl Core {
    /// End of a loop turn: the group commit (see [`Core::group_commit`]),
    /// then the alarms.
    pub fn end_turn(&mut self, now: Instant) {
        self.engine.resume_readers();
        // Queues whose consumers got room back as their output drained.
        self.run_dispatch();
        if self.mqtt.retained_dirty {
            // Before the commit that releases the acknowledgements.
            self.mqtt_save_retained();
        }
        let _ = self.group_commit(now, false);
        if self.engine.take_stream_wakeup() {
            // Stream messages this commit made readable go out now.
            self.run_dispatch();
        }
        let Core { engine, conns, .. } = self;
        engine.measure_buffers(now, || {
            let mut bytes = 0;
            for (_, c) in conns.iter_mut() {
                bytes += (c.outbox.len() + c.inbuf.capacity()) as u64;
                for ch in c.channels.iter_mut() {
                    bytes += ch.unacked.measure();
                }
            }
            bytes
        });
        if let Some(reason) = self.engine.check_alarms(now) {
            self.tell_blocked(reason);
        }
    }

    /// The engine's group commit (see [`crate::engine::Engine::group_commit`]), also run
    /// by the management API after a request that changed something
    /// (`force`). Then the confirms that waited are sent; if the commit
    /// failed nothing that depended on it is confirmed: waiting publishes
    /// are nacked and connections whose replies depended on it are closed
    /// with 541 (see [`Core::commit_failed`]).
    pub fn group_commit(&mut self, now: Instant, force: bool) -> io::Result<()> {
        if !self.engine.broker.def_changes.is_empty() {
            self.refresh_permissions();
        }
        let waiting = !self.sync_waiters.is_empty() || !self.commit_dependents.is_empty();
        let (wanted, result) = self.engine.group_commit(now, force, waiting);
        match &result {
            Ok(()) => {
                self.commit_dependents.clear();
                self.release_sync_waiters(true);
            }
            Err(e) if wanted => self.commit_failed(e, now),
            Err(_) => {}
        }
        result
    }

    /// Users or permissions may have changed: refresh the permissions open
    /// connections check against.
    fn refresh_permissions(&mut self) {
        let Core { conns, engine, .. } = self;
        for (_, c) in conns.iter_mut().filter(|(_, c)| !c.vhost.is_empty()) {
            let user = String::from_utf8_lossy(&c.user);
            let vhost = String::from_utf8_lossy(&c.vhost);
            c.perm = engine.broker.auth.permission(&user, &vhost).cloned();
            c.topic_checks = engine.broker.auth.topic_checks(&user, &vhost);
            c.write_ok = None;
        }
    }

    /// A commit failed: publishes waiting for it are nacked (after the
    /// confirms that did not depend on it), and every connection that was
    /// sent a reply depending on it this turn (declare-ok of a durable
    /// queue, tx.commit-ok, ...) loses that reply and what followed it and
    /// is closed with 541 INTERNAL_ERROR, as RabbitMQ closes on an internal
    /// error. What was staged stays staged and is written by a later commit.
    pub(crate) fn commit_failed(&mut self, e: &io::Error, now: Instant) {
        self.release_sync_waiters(false);
        let dependents = std::mem::take(&mut self.commit_dependents);
        for (id, mark) in dependents {
            let Some(c) = self.conn_mut(id) else { continue };
            if matches!(c.state, ConnState::Closing | ConnState::Dead) {
                continue;
            }
            c.outbox.truncate(mark);
            let err = Error::new(
                ReplyCode::INTERNAL_ERROR,
                format!("cannot make the change durable: {e}"),
            );
            self.connection_error(id, err, now);
        }
    }

    /// Resolve the confirms that waited for a sync: acked when it worked
    /// (`ok`), nacked (multiple, after acking what did not wait) when it
    /// failed.
    pub(crate) fn release_sync_waiters(&mut self, ok: bool) {
        let waiters = std::mem::take(&mut self.sync_waiters);
        for (id, ch) in waiters {
            if self.conn(id).is_some_and(|c| c.mqtt.is_some()) {
                self.mqtt_release_acks(id, ok);
                self.mark_flush(id);
                continue;
            }
            if let Some(c) = self.conn_mut(id) {
                let Connection {
                    channels, outbox, ..
                } = c;
                if let Some(chan) = channels.get_mut(ch) {
                    let upto = chan.confirm_after_sync;
                    if !ok && upto > chan.confirm_ready && chan.state == ChanState::Open {
                        if chan.confirm_ready > chan.confirm_sent {
                            let ack = BasicAck {
                                delivery_tag: chan.confirm_ready,
                                multiple: chan.confirm_ready - chan.confirm_sent > 1,
                            };
                            outbox.method(ch, &ack.into());
                        }
                        let nack = BasicNack {
                            delivery_tag: upto,
                            multiple: upto - chan.confirm_ready > 1,
                            requeue: false,
                        };
                        outbox.method(ch, &nack.into());
                        chan.confirm_sent = upto;
                    }
                    chan.confirm_ready = chan.confirm_ready.max(upto);
                    chan.confirm_after_sync = 0;
                    chan.waiting_sync = false;
                }
            }
            self.flush_confirms(id);
            self.mark_flush(id);
        }
    }

    /// Sync now (a nack must not overtake earlier confirms that wait for it).
    pub(crate) fn sync_now(&mut self) {
        let now = self.engine.now();
        match self.engine.commit(now) {
            Ok(()) => self.release_sync_waiters(true),
            Err(e) => self.commit_failed(&e, now),
        }
    }

    /// The channel's confirms from now on wait for the next store sync (and
    /// a transaction commit syncs before it answers).
    pub(crate) fn wait_for_sync(&mut self, id: ConnId, ch: u16) {
        self.engine.force_sync = true;
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

    /// The alarms changed: tell the publishers that asked to be told
    /// (`Some(reason)`: blocked; `None`: unblocked).
    fn tell_blocked(&mut self, reason: Option<&'static str>) {
        let ids: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in ids {
            let Some(c) = self.conn_mut(id) else { continue };
            if !c.cap_blocked || !c.published {
                continue;
            }
            match reason {
                Some(r) => c.outbox.method(
                    0,
                    &ConnectionBlocked {
                        reason: Bytes::from_static(r.as_bytes()),
                    }
                    .into(),
                ),
                None => c.outbox.method(0, &ConnectionUnblocked {}.into()),
            }
            self.mark_flush(id);
        }
    }
}
