//! The core's side of persistence and memory: opening the store and
//! restoring durable state at start, the end-of-turn group commit that
//! releases publisher confirms, paging message contents out beyond the memory
//! budget and back in when due, and the memory/disk alarms that block
//! publishers (connection.blocked).

use std::io;
use std::time::Instant;

use bytes::Bytes;
use log::{error, info, warn};

use super::channel::ChanState;
use super::{ConnState, Connection};
use crate::broker::exchange::Dest;
use crate::broker::message::{Message, QueuedMsg};
use crate::broker::{ConnId, ExchangeSpec, QueueSpec};
use crate::codec::{BasicAck, BasicNack, ConnectionBlocked, ConnectionUnblocked, Error, ReplyCode};
use crate::config::Config;
use crate::core::Core;
use crate::store::definitions::{
    BindingDef, DefChange, Definitions, DefsLog, ExchangeDef, QueueDef,
};
use crate::store::{Store, StoreRef};

/// What became of reading a paged-out message's content back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loaded {
    /// In memory now.
    Yes,
    /// Its record is damaged or gone: the message is dropped.
    Lost,
    /// Not readable for now (out of file descriptors): it stays queued and
    /// its queue is served again at the next tick.
    Later,
}

pub use crate::store::free_disk;

/// Bytes a ring buffer takes; one mostly empty is shrunk first.
pub(crate) fn ring_bytes<T>(v: &mut std::collections::VecDeque<T>) -> u64 {
    if v.capacity() >= 1024 && v.len() < v.capacity() / 4 {
        v.shrink_to(v.len() * 2);
    }
    (v.capacity() * std::mem::size_of::<T>()) as u64
}

/// The reason `connection.blocked` gives, RabbitMQ's text for the alarm in
/// effect; with both, the disk alarm's (one rule wherever it is sent).
pub(crate) fn blocked_reason(disk_alarm: bool) -> &'static str {
    if disk_alarm {
        "low on disk space"
    } else {
        "low on memory"
    }
}

impl Core {
    /// A core with persistence: open the data directory, restore durable
    /// definitions and messages. In-memory when `config.data_dir` is None.
    pub fn open(config: Config) -> io::Result<Core> {
        let dir = config.data_dir.clone();
        let seg_size = config.segment_size;
        let mut core = Core::new(config);
        let Some(dir) = dir else {
            core.load_definitions_file()?;
            return Ok(core);
        };
        let started = Instant::now();
        let faults = core.config.faults.clone();
        let (store, recovered) = Store::open(&dir, seg_size, faults.clone())?;
        core.store = Some(store);
        core.broker.persistent = true;
        let (log, defs) = DefsLog::open(&dir, faults)?;
        core.defs = Some(log);
        core.restore(&defs);
        // Restoring is not a change.
        core.broker.def_changes.clear();
        let mut messages = 0u64;
        let mut bytes = 0u64;
        let mut queues = 0usize;
        for (qid, msgs) in recovered.queues {
            let Some(id) = core
                .broker
                .queues
                .iter()
                .find(|(_, q)| q.store_id == Some(qid))
                .map(|(_, q)| q.id)
            else {
                // Messages of a queue whose definition is gone: release them.
                if let Some(st) = core.store.as_mut() {
                    st.purge(qid);
                    msgs.iter().for_each(|m| st.release(&m.at));
                }
                continue;
            };
            queues += 1;
            let Some(q) = core.broker.queue_mut(id) else {
                continue;
            };
            for m in msgs {
                messages += 1;
                bytes += m.size;
                let msg = QueuedMsg::recovered(&mut core.arena, &m);
                let mut dropped = Vec::new();
                if q.push(msg, m.ttl, m.timestamp, &mut dropped).is_ok() {
                    core.queued += 1;
                }
            }
        }
        // First boot: save the default user and its permissions.
        if defs.users.is_empty() {
            core.broker.def_changes.push(DefChange::All);
        }
        info!(
            "recovered {} durable queues, {} exchanges, {} bindings; {} messages ({} bytes) in {} queues, in {:?}",
            defs.queues.len(),
            defs.exchanges.len(),
            defs.bindings.len(),
            messages,
            bytes,
            queues,
            started.elapsed()
        );
        core.load_definitions_file()?;
        Ok(core)
    }

    fn restore(&mut self, defs: &Definitions) {
        if !defs.users.is_empty() {
            let mut auth = crate::broker::auth::Auth::default();
            for (name, hash, tags) in &defs.users {
                auth.users.insert(
                    name.clone(),
                    crate::broker::auth::User {
                        name: name.clone(),
                        password_hash: hash.clone(),
                        tags: tags.clone(),
                    },
                );
            }
            for [user, vhost, c, w, r] in &defs.permissions {
                match crate::broker::auth::Permission::new(c, w, r) {
                    Ok(p) => auth.set_permission(user, vhost, p),
                    Err(e) => warn!("cannot restore permissions of {user} on {vhost}: {e}"),
                }
            }
            for [user, vhost, x, w, r] in &defs.topic_permissions {
                match crate::broker::auth::TopicPermission::new(w, r) {
                    Ok(p) => {
                        auth.topic_permissions
                            .insert((user.clone(), vhost.clone(), x.clone()), p);
                    }
                    Err(e) => {
                        warn!("cannot restore topic permissions of {user} on {x} in {vhost}: {e}")
                    }
                }
            }
            self.broker.auth = auth;
        }
        for v in &defs.vhosts {
            if self.broker.vhost(v).is_none() {
                self.broker.add_vhost(v);
            }
        }
        for x in &defs.exchanges {
            let spec = ExchangeSpec {
                name: x.name.clone(),
                kind: x.kind.clone(),
                passive: false,
                durable: true,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
            };
            if let Err(e) = self.broker.declare_exchange(&x.vhost, spec) {
                warn!("cannot restore exchange {:?}: {e}", x.name);
            }
        }
        let nobody = ConnId {
            idx: u32::MAX,
            gen: 0,
        };
        for q in &defs.queues {
            let spec = QueueSpec {
                name: q.name.clone(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            };
            match self.broker.declare_queue(&q.vhost, spec, nobody, 0) {
                Ok((id, _)) => {
                    if let Some(qq) = self.broker.queue_mut(id) {
                        qq.store_id = Some(q.id);
                    }
                }
                Err(e) => warn!("cannot restore queue {:?}: {e}", q.name),
            }
        }
        self.broker.next_store_id = self
            .broker
            .next_store_id
            .max(defs.next_queue_id)
            .max(defs.queues.iter().map(|q| q.id + 1).max().unwrap_or(1));
        for b in &defs.bindings {
            let dest = if b.to_queue {
                match self.broker.find_queue(&b.vhost, &b.dest, nobody) {
                    Ok(id) => Dest::Queue(id),
                    Err(_) => continue,
                }
            } else {
                Dest::Exchange(b.dest.clone())
            };
            if let Err(e) = self.broker.bind(
                &b.vhost,
                &b.source,
                dest,
                b.routing_key.clone(),
                b.arguments.clone(),
            ) {
                warn!("cannot restore binding {:?} -> {:?}: {e}", b.source, b.dest);
            }
        }
    }

    /// The durable definitions as they stand.
    pub fn definitions(&self) -> Definitions {
        let b = &self.broker;
        let mut d = Core::auth_definitions(b);
        d.next_queue_id = b.next_store_id;
        for (vname, vh) in &b.vhosts {
            d.vhosts.push(vname.clone());
            for x in vh.exchanges.values() {
                let builtin = x.name.is_empty() || x.name.starts_with(b"amq.");
                if x.durable && !builtin {
                    d.exchanges.push(ExchangeDef {
                        vhost: vname.clone(),
                        name: x.name.clone(),
                        kind: Bytes::from_static(x.kind.name().as_bytes()),
                        auto_delete: x.auto_delete,
                        internal: x.internal,
                        arguments: x.arguments.clone(),
                    });
                }
            }
            for id in vh.queues.values() {
                if let Some(q) = b.queue(*id) {
                    if let Some(sid) = q.store_id {
                        d.queues.push(QueueDef {
                            vhost: vname.clone(),
                            name: q.name.clone(),
                            id: sid,
                            auto_delete: q.auto_delete,
                            arguments: q.arguments.clone(),
                        });
                    }
                }
            }
            for x in vh.exchanges.values() {
                if !x.durable || x.name.is_empty() {
                    continue;
                }
                for bd in &x.bindings {
                    let (to_queue, dest) = match &bd.dest {
                        Dest::Queue(q) => match b.queue(*q) {
                            Some(qq) if qq.store_id.is_some() => (true, qq.name.clone()),
                            _ => continue,
                        },
                        Dest::Exchange(n) => match vh.exchanges.get(n) {
                            Some(e) if e.durable => (false, n.clone()),
                            _ => continue,
                        },
                    };
                    d.bindings.push(BindingDef {
                        vhost: vname.clone(),
                        source: x.name.clone(),
                        to_queue,
                        dest,
                        routing_key: bd.routing_key.clone(),
                        arguments: bd.arguments.clone(),
                    });
                }
            }
        }
        d
    }

    /// The users and permissions part of the definitions.
    fn auth_definitions(b: &crate::broker::Broker) -> Definitions {
        let mut d = Definitions::default();
        for u in b.auth.users.values() {
            d.users
                .push((u.name.clone(), u.password_hash.clone(), u.tags.clone()));
        }
        for ((user, vhost), p) in &b.auth.permissions {
            d.permissions.push([
                user.clone(),
                vhost.clone(),
                p.configure.clone(),
                p.write.clone(),
                p.read.clone(),
            ]);
        }
        for ((user, vhost, x), p) in &b.auth.topic_permissions {
            d.topic_permissions.push([
                user.clone(),
                vhost.clone(),
                x.clone(),
                p.write.clone(),
                p.read.clone(),
            ]);
        }
        d
    }

    /// A message leaves the broker for good (acked, dropped, rejected,
    /// purged): release its memory and its store reference.
    pub(crate) fn forget(&mut self, queue_store_id: Option<u64>, m: &QueuedMsg) {
        super::deliver::forget_in(
            &mut self.store,
            &mut self.resident,
            &mut self.queued,
            queue_store_id,
            m,
        );
    }

    /// Make a queued message's content available (read it back if paged).
    /// [`Loaded::Lost`] if its record is damaged: logged, and its memory
    /// accounting and store reference released (the caller drops it; no ack
    /// is recorded, so if the record is readable after all a crash-restart
    /// brings it back). [`Loaded::Later`] if it cannot be read for now (out
    /// of file descriptors): the caller puts it back where it was.
    pub(crate) fn load_msg(&mut self, m: &mut QueuedMsg) -> Loaded {
        if !m.is_paged() {
            return Loaded::Yes;
        }
        match Core::read_back(&mut self.store, m) {
            Ok((h, b)) => {
                m.page_in(&mut self.arena, &h, b);
                self.resident += m.resident();
                Loaded::Yes
            }
            Err(Loaded::Lost) => {
                self.resident = self.resident.saturating_sub(m.resident());
                self.queued = self.queued.saturating_sub(1);
                Loaded::Lost
            }
            Err(other) => other,
        }
    }

    /// A paged-out message's content (header, body), read from the store
    /// for delivery; the message stays paged out. Err([`Loaded::Lost`]) if
    /// its record is damaged (logged, its store reference released: the
    /// caller drops it); Err([`Loaded::Later`]) if it cannot be read for now.
    pub(crate) fn read_back(
        store: &mut Option<Store>,
        m: &QueuedMsg,
    ) -> Result<(Bytes, Bytes), Loaded> {
        let (Some(st), Some(r)) = (store.as_mut(), m.stored()) else {
            return Err(Loaded::Lost);
        };
        match st.read(&r) {
            Ok(content) => Ok(content),
            Err(e) if crate::store::read_error_is_passing(&e) => {
                warn!(
                    "cannot read message {} back from the store for now: {e}; it stays queued",
                    r.msg_id
                );
                Err(Loaded::Later)
            }
            Err(e) => {
                error!(
                    "cannot read message {} back from the store: {e}; dropped ({} unreadable so far)",
                    r.msg_id, st.stats.unreadable
                );
                st.release(&r);
                Err(Loaded::Lost)
            }
        }
    }

    /// Store a persistent message for the durable queues among `targets`.
    pub(crate) fn store_message(
        &mut self,
        msg: &Message,
        durable_queues: &[u64],
    ) -> Option<StoreRef> {
        let st = self.store.as_mut()?;
        if durable_queues.is_empty() || !msg.persistent {
            return None;
        }
        Some(st.append_msg(durable_queues, &msg.meta()))
    }

    /// True when content taking `more` bytes outside the arena should go to
    /// disk: beyond half the memory budget, when there is a store. Content
    /// is the arena's content chunks and large bodies (stubs are not
    /// content: paging cannot make them smaller).
    pub(crate) fn should_page(&self, more: u64) -> bool {
        self.store.is_some()
            && self.arena.content_bytes() + self.resident + more > self.config.max_memory / 2
    }

    /// Beyond half the memory budget, new messages go to disk: store a copy if
    /// the message is not stored yet and drop its content from memory.
    pub(crate) fn maybe_page_out(&mut self, m: &mut QueuedMsg) {
        if !self.should_page(m.resident()) {
            self.resident += m.resident();
            return;
        }
        // A failing store keeps what it is given in memory anyway.
        let Some(st) = self.store.as_mut().filter(|st| st.healthy()) else {
            self.resident += m.resident();
            return;
        };
        let at = match m.stored() {
            Some(r) => r,
            None => st.append_paged(&m.meta()),
        };
        m.page_out(&mut self.arena, at);
    }

    /// A routed message's copy for a queue (`durable_queue`: one that has
    /// the message `stored`), packed straight out to the store (see
    /// [`QueuedMsg::pack_paged`]): the content is already on disk for a
    /// durable queue, or appended as a paged copy.
    pub(crate) fn pack_paged(
        &mut self,
        msg: &Message,
        stored: Option<StoreRef>,
        durable_queue: bool,
    ) -> QueuedMsg {
        let at = match (stored.filter(|_| durable_queue), self.store.as_mut()) {
            (Some(r), _) => r,
            (None, Some(st)) => st.append_paged(&msg.meta()),
            (None, None) => {
                // Nowhere to page to (see `should_page`): keep it in memory.
                let mut m = QueuedMsg::pack(&mut self.arena, msg, stored);
                m.set_stored(durable_queue);
                self.resident += m.resident();
                return m;
            }
        };
        QueuedMsg::pack_paged(&mut self.arena, msg, stored, at)
    }

    /// End of a loop turn: the group commit. Changed definitions are staged
    /// in the definitions log; if anyone waits for durability (publisher
    /// confirms, tx.commit, a durable declare, delete or purge), the store
    /// and the log are written and fdatasynced once for all of them, and then
    /// the confirms that waited are sent. If the commit fails nothing that
    /// depended on it is confirmed: waiting publishes are nacked and
    /// connections whose replies depended on it are closed with 541 (see
    /// [`Core::commit_failed`]). Otherwise records are only written.
    pub fn end_turn(&mut self, now: Instant) {
        let _ = self.group_commit(now, false);
        self.check_alarms(now);
    }

    /// The commit of [`Core::end_turn`], also run by the management API
    /// after a request that changed something (`force`), so that its answer
    /// says whether the change is durable.
    pub fn group_commit(&mut self, now: Instant, force: bool) -> io::Result<()> {
        self.now = self.now.max(now);
        if !self.broker.def_changes.is_empty() {
            self.stage_definitions();
        }
        if let Some(st) = self.store.as_mut() {
            if st.collect_garbage() {
                // Space came back: look at the disk again now.
                self.next_disk_check = now;
            }
        }
        let wanted = force
            || !self.sync_waiters.is_empty()
            || self.force_sync
            || !self.commit_dependents.is_empty()
            || self.store.as_ref().is_some_and(|st| st.wants_sync(now))
            || self.defs.as_ref().is_some_and(|d| d.wants_commit(now));
        let result = if wanted {
            self.commit(now)
        } else {
            match self.store.as_mut() {
                // Written, not synced: errors surface at the next commit.
                Some(st) => st.flush(now),
                None => Ok(()),
            }
        };
        self.force_sync = false;
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

    /// Turn the recorded definition changes into log records (and refresh
    /// the permissions open connections check against: users or
    /// permissions may have changed).
    fn stage_definitions(&mut self) {
        let changes = std::mem::take(&mut self.broker.def_changes);
        let Core { conns, broker, .. } = self;
        for (_, c) in conns.iter_mut().filter(|(_, c)| !c.vhost.is_empty()) {
            let user = String::from_utf8_lossy(&c.user);
            let vhost = String::from_utf8_lossy(&c.vhost);
            c.perm = broker.auth.permission(&user, &vhost).cloned();
            c.topic_checks = broker.auth.topic_checks(&user, &vhost);
            c.write_ok = None;
        }
        if let Some(d) = self.defs.as_mut() {
            let b = &self.broker;
            d.stage(&changes, || Core::auth_definitions(b));
        }
        // Reuse the allocation.
        self.broker.def_changes = changes;
        self.broker.def_changes.clear();
    }

    /// Make everything appended and staged durable: the store's records,
    /// then the definitions. Nothing is confirmed unless both worked.
    pub(crate) fn commit(&mut self, now: Instant) -> io::Result<()> {
        if let Some(st) = self.store.as_mut() {
            st.sync(now)?;
        }
        let Some(mut d) = self.defs.take() else {
            return Ok(());
        };
        let res = d.commit(now, || self.definitions());
        self.defs = Some(d);
        res
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

    /// Clean shutdown of the store: every connection is gone (their unacked
    /// messages are back in their queues); write the clean index.
    pub fn close_store(&mut self) {
        let Some(st) = self.store.as_mut() else {
            return;
        };
        let mut live = Vec::new();
        for (_, q) in self.broker.queues.iter() {
            let Some(sid) = q.store_id else { continue };
            for m in &q.ready {
                if let Some(at) = m.stored().filter(|r| r.durable) {
                    let (timestamp, ttl) = m.times();
                    live.push((
                        sid,
                        crate::store::RecoveredMsg {
                            at,
                            delivered: m.redelivered(),
                            size: m.size(),
                            exchange: m.exchange(),
                            routing_key: m.routing_key(),
                            timestamp,
                            ttl,
                            priority: m.priority(),
                        },
                    ));
                }
            }
        }
        match st.close_clean(&live) {
            Ok(()) => info!(
                "store closed cleanly ({} durable messages indexed)",
                live.len()
            ),
            Err(e) => error!("cannot write the clean shutdown index: {e}"),
        }
    }

    /// Resolve the confirms that waited for a sync: acked when it worked
    /// (`ok`), nacked (multiple, after acking what did not wait) when it
    /// failed.
    pub(crate) fn release_sync_waiters(&mut self, ok: bool) {
        let waiters = std::mem::take(&mut self.sync_waiters);
        for (id, ch) in waiters {
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
        let now = self.now;
        match self.commit(now) {
            Ok(()) => self.release_sync_waiters(true),
            Err(e) => self.commit_failed(&e, now),
        }
    }

    /// Measure the buffers messages and connections take besides the
    /// arena and large bodies (see [`Core::memory_used`]): the queues' and
    /// channels' entry buffers (by capacity: a queue that held a long
    /// backlog keeps its buffer, whose pages were all touched; those mostly
    /// empty are shrunk here), and the connections' pending output and
    /// input buffers. O(queues + connections + channels), at most every
    /// [`crate::core::BUFFER_SCAN_EVERY`].
    fn measure_buffers(&mut self, now: Instant) {
        if now < self.buffers.2 + crate::core::BUFFER_SCAN_EVERY {
            return;
        }
        let mut bytes = 0;
        for (_, q) in self.broker.queues.iter_mut() {
            bytes += ring_bytes(&mut q.ready);
        }
        for (_, c) in self.conns.iter_mut() {
            bytes += (c.outbox.len() + c.inbuf.capacity()) as u64;
            for ch in c.channels.iter_mut() {
                bytes += ch.unacked.measure();
            }
        }
        self.buffers = (bytes, self.queued, now);
    }

    fn check_alarms(&mut self, now: Instant) {
        self.measure_buffers(now);
        let used = self.memory_used();
        // Hysteresis: raised at the budget, cleared below 90 % of it, so a
        // queue hovering at the limit does not flap blocked/unblocked.
        let mem = if self.blocked && !self.disk_alarm {
            used >= self.config.max_memory / 10 * 9
        } else {
            used >= self.config.max_memory
        };
        if let Some(st) = self.store.as_mut() {
            // Space is reserved a segment at a time: looking right after a
            // new segment was reserved (and twice a second) finds a filling
            // disk before a write can fail.
            if now >= self.next_disk_check || st.take_rolled() {
                self.next_disk_check = now + std::time::Duration::from_millis(500);
                self.disk_low = match st.free_space() {
                    Ok(free) => free < self.config.min_free_disk,
                    Err(_) => false,
                };
            }
            // Blocked too while the store cannot write or reserve its next
            // segment, or holds too much that is not yet durable.
            let backlog_limit = (self.config.max_memory / 8).max(8 << 20);
            self.disk_alarm =
                self.disk_low || st.space_short() || st.backlog() as u64 > backlog_limit;
        }
        let reason = (mem || self.disk_alarm).then(|| blocked_reason(self.disk_alarm));
        if reason.is_some() == self.blocked {
            return;
        }
        self.blocked = reason.is_some();
        // A store that cannot write blocks publishers as the disk alarm
        // does (clients know no other reason), but the log says why.
        let store_failing = self.store.as_ref().is_some_and(|st| !st.healthy());
        let why = match reason {
            Some(_) if !mem && !self.disk_low && store_failing => {
                "the store cannot write (disk alarm)"
            }
            Some(r) => r,
            None => "",
        };
        match reason {
            Some(_) => warn!(
                "{why}: blocking publishers ({} bytes used: {} in content chunks, {} in stub chunks, {} in large bodies, {} messages)",
                self.memory_used(),
                self.arena.content_bytes(),
                self.arena.stub_bytes(),
                self.resident,
                self.queued
            ),
            None => info!("alarm cleared: unblocking publishers"),
        }
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
