//! The core's side of persistence and memory: opening the store and
//! restoring durable state at start, the end-of-turn group commit that
//! releases publisher confirms, paging message contents out beyond the memory
//! budget and back in when due, and the memory/disk alarms that block
//! publishers (connection.blocked).

use std::io;
use std::time::Instant;

use bytes::Bytes;
use log::{error, info, warn};

use super::Engine;
use crate::broker::exchange::Dest;
use crate::broker::message::QueuedMsg;
use crate::broker::{ConnId, ExchangeSpec, QueueId, QueueSpec};
use crate::config::Config;
use crate::store::definitions::{
    BindingDef, DefChange, Definitions, DefsLog, ExchangeDef, ParamDef, QueueDef,
};
use crate::store::Store;

/// What an index of the store holds: durable messages by queue store id,
/// and the spilled queues (see [`Engine::index_state`]).
type IndexState = (
    Vec<(u64, crate::store::RecoveredMsg)>,
    Vec<(u64, crate::store::CleanQueue)>,
);

/// Queues measured per buffer scan (see [`Engine::measure_buffers`]).
const QUEUE_SCAN_BATCH: usize = 1024;

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

/// Put back the messages of a durable queue that had spilled at a clean
/// stop: those that were in memory at their places, before or behind its
/// spills, which are taken as they are (nothing spilled is read). Returns
/// the messages and bytes restored.
fn restore_spilled(
    msgs: &mut super::Messages,
    q: &mut crate::broker::queue::Queue,
    recovered: Vec<crate::store::RecoveredMsg>,
    clean: crate::store::CleanQueue,
) -> (u64, u64) {
    let levels = q.ready.levels().len();
    let mut heads: Vec<Vec<QueuedMsg>> = (0..levels).map(|_| Vec::new()).collect();
    let mut tails: Vec<Vec<QueuedMsg>> = (0..levels).map(|_| Vec::new()).collect();
    let mut next_seq = clean.next_seq;
    let (mut n, mut bytes) = (0u64, 0u64);
    for m in &recovered {
        let mut qm = QueuedMsg::recovered(&mut msgs.arena, m);
        let (seq, behind) = m.place.unwrap_or_else(|| {
            next_seq += 1;
            (next_seq - 1, true)
        });
        qm.seq = seq;
        qm.prio = q.args.max_priority.map_or(0, |p| m.priority.min(p));
        let ttl = match (q.args.message_ttl, m.ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        qm.set_expires_at(ttl.map(|t| m.timestamp.saturating_add(t)));
        if q.dedup.is_some() {
            if let Some(k) = msgs.key_of(&qm) {
                if let Some(d) = q.dedup.as_deref_mut() {
                    d.insert(k, seq, qm.expires_at());
                }
            }
        }
        let level = usize::from(qm.prio).min(levels - 1);
        let to = if behind { &mut tails } else { &mut heads };
        if let Some(v) = to.get_mut(level) {
            v.push(qm);
        }
        n += 1;
        bytes += m.size;
    }
    let mut spills: Vec<Option<crate::store::spill::Spill>> = (0..levels).map(|_| None).collect();
    for (level, mut sp) in clean.spills {
        n += sp.count;
        bytes += sp.bytes;
        if !clean.skip.is_empty() || !clean.seen.is_empty() {
            sp.skip = clean.skip.clone();
            sp.seen = clean.seen.clone();
        }
        if let Some(slot) = spills.get_mut(usize::from(level).min(levels - 1)) {
            *slot = Some(sp);
        }
    }
    if q.dedup.is_some() {
        for sp in spills.iter().flatten() {
            spilled_keys(msgs, q, sp);
        }
    }
    for (level, ((head, tail), spill)) in heads.into_iter().zip(tails).zip(spills).enumerate() {
        q.ready
            .restore(level, head, spill.unwrap_or_default(), tail);
    }
    q.restore_next_seq(next_seq);
    msgs.queued += n;
    (n, bytes)
}

/// A deduplication queue restored with spilled messages: their keys, read
/// from the spill files and the store without taking anything out (one
/// read per spilled message and per batch).
fn spilled_keys(
    msgs: &mut super::Messages,
    q: &mut crate::broker::queue::Queue,
    sp: &crate::store::spill::Spill,
) {
    let Some(st) = msgs.store.as_ref() else {
        return;
    };
    // The entries are parsed into a scratch arena, dropped afterwards.
    let mut scratch = crate::broker::message::Arena::default();
    let mut found = Vec::new();
    let peeked = st.spill.peek(sp, &mut |mut data| {
        while !data.is_empty() {
            let Some((m, used)) = QueuedMsg::from_spill(&mut scratch, data) else {
                break;
            };
            data = data.get(used..).unwrap_or_default();
            let at = m.stored();
            if sp.durable_only && !at.is_some_and(|r| r.durable) {
                continue;
            }
            if at.is_some_and(|r| sp.skip.contains(&r.msg_id)) {
                continue;
            }
            found.push(m);
        }
    });
    if let Err(e) = peeked {
        warn!(
            "queue '{}': cannot read its spilled messages for their deduplication keys: {e}",
            String::from_utf8_lossy(&q.name)
        );
    }
    for m in found {
        let key = msgs.key_of(&m);
        if let (Some(k), Some(d)) = (key, q.dedup.as_deref_mut()) {
            d.insert(k, m.seq, m.expires_at());
        }
    }
}

impl Engine {
    /// An engine with persistence: open the data directory, restore
    /// durable definitions and messages. In-memory when `config.data_dir`
    /// is None.
    pub fn open(config: Config) -> io::Result<Engine> {
        let dir = config.data_dir.clone();
        let seg_size = config.segment_size;
        let mut core = Engine::new(config);
        let Some(dir) = dir else {
            return Ok(core);
        };
        let started = Instant::now();
        let faults = core.config.faults.clone();
        let (store, recovered) = Store::open(&dir, seg_size, faults.clone())?;
        core.msgs.store = Some(store);
        core.broker.persistent = true;
        let (log, defs) = DefsLog::open(&dir, faults)?;
        core.defs = Some(log);
        core.restore(&defs);
        core.delayed = crate::store::delayed::DelayStore::open(&dir, core.config.faults.clone())?;
        // Restoring is not a change.
        core.broker.def_changes.clear();
        let mut messages = 0u64;
        let mut bytes = 0u64;
        let mut queues = 0usize;
        let mut recovered = recovered;
        for qid in recovered.spilled.keys() {
            recovered.queues.entry(*qid).or_default();
        }
        for (qid, msgs) in std::mem::take(&mut recovered.queues) {
            let Some(id) = core
                .broker
                .queues
                .iter()
                .find(|(_, q)| q.store_id == Some(qid))
                .map(|(_, q)| q.id)
            else {
                // Messages of a queue whose definition is gone: release them.
                if let Some(st) = core.msgs.store.as_mut() {
                    st.purge(qid);
                    msgs.iter().for_each(|m| st.release(&m.at));
                    for (_, sp) in recovered
                        .spilled
                        .remove(&qid)
                        .map(|c| c.spills)
                        .unwrap_or_default()
                    {
                        let runs = st.spill.discard(sp);
                        st.release_runs(&runs);
                    }
                }
                continue;
            };
            queues += 1;
            let Some(q) = core.broker.queue_mut(id) else {
                continue;
            };
            if let Some(clean) = recovered.spilled.remove(&qid) {
                let (n, b) = restore_spilled(&mut core.msgs, q, msgs, clean);
                messages += n;
                bytes += b;
                continue;
            }
            let now = core.clock.now;
            for m in msgs {
                messages += 1;
                bytes += m.size;
                let msg = QueuedMsg::recovered(&mut core.msgs.arena, &m);
                let level = usize::from(q.args.max_priority.map_or(0, |p| m.priority.min(p)));
                // A deduplication queue's keys are rebuilt: each message's
                // header is read back (one read per message of such a queue).
                let key = if q.dedup.is_some() {
                    core.msgs.key_of(&msg)
                } else {
                    None
                };
                match q.push(msg, m.ttl, m.timestamp) {
                    Ok(until) => {
                        let seq = q.next_seq().saturating_sub(1);
                        if let (Some(d), Some(k)) = (q.dedup.as_deref_mut(), key) {
                            d.insert(k, seq, until);
                        }
                        core.msgs.queued += 1;
                        core.msgs.spill_excess(&mut q.ready, level, now);
                    }
                    Err(msg) => core.msgs.forget(q.store_id, &msg),
                }
            }
            core.drop_over_limit(id);
        }
        // What recovery built and let go of (the log replayed after a
        // crash) goes back to the system.
        crate::sys::trim_heap();
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
        for p in &defs.params {
            let restored = serde_json::from_slice(&p.value)
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    self.broker
                        .runtime
                        .restore(&p.component, &p.owner, &p.name, &v)
                });
            if let Err(e) = restored {
                warn!(
                    "cannot restore {} '{}' of '{}': {e}",
                    p.component, p.name, p.owner
                );
            }
        }
        // The link manager starts the restored shovels and upstreams.
        self.announce_params();
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
            match self.broker.declare_exchange(&x.vhost, spec) {
                Ok(()) => self.choose_exchange_policy(&x.vhost, &x.name),
                Err(e) => warn!("cannot restore exchange {:?}: {e}", x.name),
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
                    if let Err(e) = self.open_stream(id) {
                        warn!("cannot open the log of stream {:?}: {e}", q.name);
                    }
                    self.choose_queue_policy(id);
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
        let mut d = Engine::auth_definitions(b);
        d.next_queue_id = b.next_store_id;
        for (component, owner, name, v) in b.runtime.params() {
            d.params.push(ParamDef {
                component: component.to_string(),
                owner,
                name,
                value: Bytes::from(v.to_string()),
            });
        }
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
                p.configure.to_string(),
                p.write.to_string(),
                p.read.to_string(),
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

    /// The group commit (the end of every turn, and the management API's
    /// after a request that changed something, `force`, so that its answer
    /// says whether the change is durable). Changed definitions are staged
    /// in the definitions log; if anyone waits for durability (`waiting`:
    /// publisher confirms, a reply that promises it; or this turn's
    /// tx.commit or management publish), the store and the log are written
    /// and fdatasynced once for all of them. Otherwise records are only
    /// written. Returns whether a commit was wanted, and its outcome: when
    /// it was wanted and failed, nothing that waited may be confirmed.
    pub fn group_commit(
        &mut self,
        now: Instant,
        force: bool,
        waiting: bool,
    ) -> (bool, io::Result<()>) {
        self.advance(now);
        if !self.broker.def_changes.is_empty() {
            self.stage_definitions();
        }
        if let Some(st) = self.msgs.store.as_mut() {
            if st.collect_garbage() {
                // Space came back: look at the disk again now.
                self.alarms.next_disk_check = now;
            }
        }
        let wanted = force
            || waiting
            || self.force_sync
            || self
                .msgs
                .store
                .as_ref()
                .is_some_and(|st| st.wants_sync(now))
            || self.defs.as_ref().is_some_and(|d| d.wants_commit(now))
            || self.delayed.wants_sync(now);
        let result = if wanted {
            self.commit(now)
        } else {
            match self.msgs.store.as_mut() {
                // Written, not synced: errors surface at the next commit.
                Some(st) => st.flush(now),
                None => Ok(()),
            }
            .and_then(|()| self.delayed.flush(false, now))
        };
        self.force_sync = false;
        (wanted, result)
    }

    /// Turn the recorded definition changes into log records.
    fn stage_definitions(&mut self) {
        let changes = std::mem::take(&mut self.broker.def_changes);
        if let Some(d) = self.defs.as_mut() {
            let b = &self.broker;
            d.stage(&changes, || Engine::auth_definitions(b));
        }
        // Reuse the allocation.
        self.broker.def_changes = changes;
        self.broker.def_changes.clear();
    }

    /// Make everything appended and staged durable: the store's records,
    /// then the definitions. Nothing is confirmed unless both worked.
    pub(crate) fn commit(&mut self, now: Instant) -> io::Result<()> {
        if !self.streams_pending.is_empty() {
            self.commit_streams()?;
        }
        if let Some(st) = self.msgs.store.as_mut() {
            st.sync(now)?;
        }
        if let Some(mut d) = self.defs.take() {
            let res = d.commit(now, || self.definitions());
            self.defs = Some(d);
            res?;
        }
        // After the store: a delayed message is marked routed, or its
        // file deleted, only once its routed copies are durable.
        self.delayed.flush(true, now)
    }

    /// What an index of the store holds (see `Store::close_clean`,
    /// `Store::checkpoint`): every durable message in memory (`held`: also
    /// those delivered and not yet acknowledged, by queue), each with its
    /// place when its queue has spilled; and the spills of durable queues.
    fn index_state<'a>(&self, held: impl Iterator<Item = (QueueId, &'a QueuedMsg)>) -> IndexState {
        let entry = |m: &QueuedMsg, place: Option<(u64, bool)>| {
            let at = m.stored().filter(|r| r.durable)?;
            let (timestamp, ttl) = m.times();
            Some(crate::store::RecoveredMsg {
                at,
                delivered: m.redelivered(),
                size: m.size(),
                exchange: m.exchange(),
                routing_key: m.routing_key(),
                timestamp,
                ttl,
                priority: m.priority(),
                place,
            })
        };
        let mut live = Vec::new();
        let mut spilled = Vec::new();
        for (_, q) in self.broker.queues.iter() {
            let Some(sid) = q.store_id else { continue };
            let keep_places = q.ready.spilled() > 0;
            let mut clean = crate::store::CleanQueue {
                next_seq: q.next_seq(),
                ..Default::default()
            };
            for (level, l) in q.ready.levels().iter().enumerate() {
                if !l.spill.is_empty() {
                    clean.spills.push((level as u8, l.spill.durable_view()));
                }
                let placed = l
                    .head
                    .iter()
                    .map(|m| (m, false))
                    .chain(l.tail.iter().map(|m| (m, true)));
                for (m, behind) in placed {
                    if let Some(e) = entry(m, keep_places.then_some((m.seq, behind))) {
                        live.push((sid, e));
                    }
                }
            }
            if keep_places {
                spilled.push((sid, clean));
            }
        }
        let mut out_of_queue = |qid: QueueId, m: &QueuedMsg, delivered: bool| {
            let Some(q) = self.broker.queue(qid) else {
                return;
            };
            let Some(sid) = q.store_id else { return };
            let place = (q.ready.spilled() > 0).then_some((m.seq, false));
            if let Some(mut e) = entry(m, place) {
                e.delivered |= delivered;
                live.push((sid, e));
            }
        };
        for (qid, m) in held {
            out_of_queue(qid, m, true);
        }
        // Messages waiting to be dead-lettered (their content could not be
        // read for now) are still their queue's.
        for (qid, m, _) in &self.dead_letter_later {
            out_of_queue(*qid, m, false);
        }
        (live, spilled)
    }

    /// Clean shutdown of the store: every connection is gone (their unacked
    /// messages are back in their queues); write the clean index. A queue
    /// with messages spilled keeps its spill files and the place of every
    /// message in memory (see `Store::close_clean`).
    pub fn close_store(&mut self) {
        let now = self.clock.now;
        if let Err(e) = self.delayed.flush(true, now) {
            error!("cannot write the delayed messages: {e}");
        }
        let (live, spilled) = self.index_state(std::iter::empty());
        let Some(st) = self.msgs.store.as_mut() else {
            return;
        };
        let kept: u64 = spilled
            .iter()
            .flat_map(|(_, c)| c.spills.iter())
            .map(|(_, s)| s.count)
            .sum();
        match st.close_clean(&live, &spilled) {
            Ok(()) => info!(
                "store closed cleanly ({} durable messages indexed, {kept} more in the spill files of {} queues)",
                live.len(),
                spilled.len()
            ),
            Err(e) => error!("cannot write the clean shutdown index: {e}"),
        }
    }

    /// True when the log has grown enough since the last checkpoint for
    /// another: `Config::checkpoint_bytes`, or twice what the last one
    /// wrote (so that checkpoints cost at most half the log's writes); or
    /// when the spill files it keeps take that much.
    pub(crate) fn wants_checkpoint(&self) -> bool {
        let every = self
            .config
            .checkpoint_bytes
            .max(2 * self.msgs.last_checkpoint);
        // Spill files read to their end wait for the next checkpoint to be
        // deleted: their space counts too.
        self.msgs.store.as_ref().is_some_and(|st| {
            st.healthy()
                && (st.since_checkpoint() >= every
                    || st.spill.retired_bytes() >= self.config.checkpoint_bytes)
        })
    }

    /// Write a checkpoint of the store (see `Store::checkpoint`): the
    /// durable messages in memory and `held` (delivered, not yet
    /// acknowledged: the front doors hold them), and the spills, so that
    /// recovery after a crash replays only the log written since. The
    /// front door calls it on its timer when [`Engine::wants_checkpoint`].
    pub(crate) fn checkpoint<'a>(&mut self, held: impl Iterator<Item = (QueueId, &'a QueuedMsg)>) {
        let started = std::time::Instant::now();
        let (live, spilled) = self.index_state(held);
        let Some(st) = self.msgs.store.as_mut() else {
            return;
        };
        match st.checkpoint(&live, &spilled) {
            Ok(()) => {
                self.msgs.last_checkpoint = live.len() as u64 * 64;
                info!(
                    "checkpoint: {} durable messages in memory, {} queues spilled, in {:?}",
                    live.len(),
                    spilled.len(),
                    started.elapsed()
                );
            }
            Err(e) => warn!(
                "cannot write a checkpoint: {e}; recovery after a crash scans more of the log"
            ),
        }
    }

    /// Measure the buffers messages and connections take besides the
    /// arena and large bodies (see [`Engine::memory_used`]): the queues'
    /// entry buffers (by capacity: a queue that held a long backlog keeps
    /// its buffer, whose pages were all touched; those mostly empty are
    /// shrunk here), deduplication queues' keys and streams' pending records,
    /// indexes and readers' read-ahead, plus what `front_doors`
    /// measures of theirs
    /// (connections' pending output and input buffers, channels' unacked
    /// lists). At most every [`super::BUFFER_SCAN_EVERY`]; the queues are
    /// measured [`QUEUE_SCAN_BATCH`] at a time, a round over all of them
    /// taking several scans, so that ten thousand idle queues do not cost
    /// the message path a scan of them every few milliseconds; the last
    /// complete round's total counts until the next one completes.
    pub(crate) fn measure_buffers(&mut self, now: Instant, front_doors: impl FnOnce() -> u64) {
        if now < self.alarms.buffers.2 + super::BUFFER_SCAN_EVERY {
            return;
        }
        let (mut next, mut partial, mut total) = self.alarms.queue_scan;
        let end = self.broker.queues.capacity();
        let stop = end.min(next + QUEUE_SCAN_BATCH);
        for idx in next..stop {
            if let Some(q) = self.broker.queues.get_mut(idx) {
                partial += q.ready.buffer_bytes();
                partial += q.dedup.as_deref().map_or(0, |d| d.memory());
                partial += q.stream.as_deref().map_or(0, |s| s.memory());
            }
        }
        next = stop;
        if next >= end {
            (next, total, partial) = (0, partial, 0);
        }
        self.alarms.queue_scan = (next, partial, total);
        let bytes = front_doors() + total;
        self.alarms.buffers = (bytes, self.msgs.queued, now);
    }

    /// Look at memory and disk. Returns the change, if any: Some(Some(why))
    /// when publishers must now be blocked, Some(None) when they may go on.
    pub(crate) fn check_alarms(&mut self, now: Instant) -> Option<Option<&'static str>> {
        let used = self.memory_used();
        let cfg = &self.config;
        let a = &mut self.alarms;
        // Hysteresis: raised at the budget, cleared below 90 % of it, so a
        // queue hovering at the limit does not flap blocked/unblocked.
        let mem = if a.blocked && !a.disk_alarm {
            used >= cfg.max_memory / 10 * 9
        } else {
            used >= cfg.max_memory
        };
        if let Some(st) = self.msgs.store.as_mut() {
            // Space is reserved a segment at a time: looking right after a
            // new segment was reserved (and twice a second) finds a filling
            // disk before a write can fail.
            if now >= a.next_disk_check || st.take_rolled() {
                a.next_disk_check = now + std::time::Duration::from_millis(500);
                a.disk_low = match st.free_space() {
                    Ok(free) => free < cfg.min_free_disk,
                    Err(_) => false,
                };
            }
            // Blocked too while the store cannot write or reserve its next
            // segment, or holds too much that is not yet durable.
            let backlog_limit = (cfg.max_memory / 8).max(8 << 20);
            a.disk_alarm = a.disk_low || st.space_short() || st.backlog() as u64 > backlog_limit;
        }
        let reason = (mem || a.disk_alarm).then(|| blocked_reason(a.disk_alarm));
        if reason.is_some() == a.blocked {
            return None;
        }
        a.blocked = reason.is_some();
        // A store that cannot write blocks publishers as the disk alarm
        // does (clients know no other reason), but the log says why.
        let store_failing = self.msgs.store.as_ref().is_some_and(|st| !st.healthy());
        let why = match reason {
            Some(_) if !mem && !a.disk_low && store_failing => {
                "the store cannot write (disk alarm)"
            }
            Some(r) => r,
            None => "",
        };
        match reason {
            Some(_) => warn!(
                "{why}: blocking publishers ({} bytes used: {} in content chunks, {} in stub chunks, {} in large bodies, {} messages)",
                used,
                self.msgs.arena.content_bytes(),
                self.msgs.arena.stub_bytes(),
                self.msgs.resident,
                self.msgs.queued
            ),
            None => info!("alarm cleared: unblocking publishers"),
        }
        Some(reason)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::broker::exchange::{Dest, ExchangeKind};
    use crate::codec::{FieldTable, FieldValue};

    /// The topology a RabbitMQ federation link declares here is durable:
    /// after a reopen (from the log, and from a snapshot) the
    /// x-federation-upstream exchange is there with its filter, and routes
    /// from the federated exchange to the link's queue as before.
    #[test]
    fn federation_upstream_exchange_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("warren-fedup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = crate::Config {
            data_dir: Some(dir.clone()),
            ..crate::Config::default()
        };
        let up = "federation: fed.x -> rabbit@down B";
        let qname = &b"federation: fed.x -> rabbit@down"[..];
        let spec = |name: &str, kind: &str, internal: bool, args: FieldTable| ExchangeSpec {
            name: Bytes::from(name.to_string()),
            kind: Bytes::from(kind.to_string()),
            passive: false,
            durable: true,
            auto_delete: internal,
            internal,
            arguments: args,
        };
        for snapshot in [false, true] {
            let mut e = Engine::open(cfg.clone()).unwrap();
            let mut args = FieldTable::new();
            args.insert("x-max-hops", FieldValue::I64(1));
            args.insert(
                "x-downstream-name",
                FieldValue::LongStr(Bytes::from_static(b"rabbit@down")),
            );
            args.insert(
                "x-downstream-vhost",
                FieldValue::LongStr(Bytes::from_static(b"/")),
            );
            e.declare_exchange(b"/", spec("fed.x", "topic", false, FieldTable::new()))
                .unwrap();
            e.declare_exchange(b"/", spec(up, "x-federation-upstream", true, args))
                .unwrap();
            let nobody = ConnId { idx: 0, gen: 0 };
            let qspec = QueueSpec {
                name: Bytes::from_static(qname),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: FieldTable::new(),
            };
            let (q, _) = e.declare_queue(b"/", qspec, nobody, 0).unwrap();
            e.bind(
                b"/",
                up.as_bytes(),
                Dest::Queue(q),
                Bytes::new(),
                FieldTable::new(),
            )
            .unwrap();
            let to_up = Dest::Exchange(Bytes::from(up));
            e.bind(
                b"/",
                b"fed.x",
                to_up,
                Bytes::from_static(b"a.#"),
                FieldTable::new(),
            )
            .unwrap();
            if snapshot {
                e.broker.def_changes.push(DefChange::All);
            }
            assert!(e.group_commit(Instant::now(), true, false).1.is_ok());
            e.close_store();
            drop(e);
            let e = Engine::open(cfg.clone()).unwrap();
            let x = &e.broker.vhost(b"/").unwrap().exchanges[up.as_bytes()];
            assert_eq!(x.kind, ExchangeKind::FederationUpstream);
            assert!(x.internal && x.auto_delete && x.durable);
            assert_eq!(x.hops.max_hops, 1);
            assert_eq!(x.hops.downstream_vhost.as_deref(), Some(&b"/"[..]));
            let q = e.find_queue(b"/", qname).expect("queue restored");
            let mut out = Vec::new();
            e.broker.route(b"/", b"fed.x", b"a.b", None, None, &mut out);
            assert_eq!(out, vec![q]);
            let mut h = FieldTable::new();
            h.insert("x-received-from", FieldValue::Array(vec![FieldValue::Void]));
            e.broker
                .route(b"/", b"fed.x", b"a.b", Some(&h), None, &mut out);
            assert!(out.is_empty());
            drop(e);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
