//! The owner of queued messages' memory and disk: the store, the arena
//! their entries are packed into, the account of what they take, and the
//! one way a message leaves a queue's ready list ([`Messages::take`]).

use std::time::Instant;

use bytes::Bytes;
use log::{error, warn};

use crate::broker::message::{Arena, Message, QueuedMsg};
use crate::broker::queue::Queue;
use crate::broker::ready::Ready;
use crate::broker::QueueId;
use crate::store::spill::{push_run, Batch, ReadError, Runs, Spill, NO_SEGMENT};
use crate::store::{Store, StoreRef};

/// A queue level's head window: below half of it, the next spilled batch
/// is read back.
pub(crate) const HEAD_WINDOW: usize = 2048;
/// A queue level's tail window: beyond it (while something is spilled),
/// the tail is spilled as one batch; with nothing spilled yet, the head
/// spills beyond both windows.
pub(crate) const TAIL_WINDOW: usize = 2048;
/// The windows while content is paged out (memory is short).
const SMALL_WINDOW: usize = 256;
/// Batches read back per refill at most.
const REFILL_BATCHES: usize = 4;
/// Refills one take tries at most while they bring back nothing (every
/// message read was acknowledged since the checkpoint) before it lets the
/// timer come back to the queue.
const MAX_REFILLS: usize = 64;
/// Messages spilled per call at most (one batch).
const SPILL_BATCH: usize = 8192;

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

/// A paged-out message's content read back from the store: (header, body).
pub(crate) type Content = (Bytes, Bytes);

/// What [`Messages::take`] found at the head of a queue.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The head message, and its content if it is paged out and content
    /// was asked for (it stays paged out: what is unacknowledged costs
    /// only its stub).
    Msg(QueuedMsg, Option<Content>),
    /// Nothing ready.
    Empty,
    /// The head cannot be read for now (logged): it stays at the head and
    /// the queue is served again at the next tick.
    Later,
}

/// Queued messages' memory and disk.
#[derive(Debug, Default)]
pub struct Messages {
    /// The message store (None: everything in memory).
    pub store: Option<Store>,
    /// Where queued messages are packed.
    pub(crate) arena: Arena,
    /// Bytes held in memory by messages (ready and unacked) outside the
    /// arena: their large bodies (see [`QueuedMsg::resident`]).
    pub resident: u64,
    /// Messages in queues or unacknowledged, paged or not.
    pub queued: u64,
    /// Queues whose next message could not be read back for now (out of
    /// file descriptors): served again at the next tick.
    pub(crate) read_later: Vec<QueueId>,
    /// The memory budget (bytes); beyond half of it content goes to disk.
    pub(crate) max_memory: u64,
    /// Spilled messages of purged queues (with their queue's store id)
    /// still to be acknowledged, a batch at a time (see
    /// [`Messages::settle_purged`]).
    pub(crate) purged: Vec<(Option<u64>, Spill)>,
    /// Bytes the last checkpoint wrote, roughly (see
    /// `Engine::wants_checkpoint`).
    pub(crate) last_checkpoint: u64,
}

impl Messages {
    #[cfg(any(test, feature = "testing"))]
    /// Where queued messages are packed (its account of chunks).
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// The one way a message leaves a queue's ready list (delivery,
    /// basic.get, the management API's get, expiry): pop the head and, if
    /// `content` is asked for and the message is paged out, read its
    /// content back. A damaged record is logged and dropped (its accounting
    /// released) and the next message taken instead; one that cannot be
    /// read for now goes back to the head ([`Taken::Later`]).
    pub(crate) fn take(&mut self, queue: &mut Queue, content: bool) -> Taken {
        let mut refills = 0;
        loop {
            let low = self.windows().0 / 2;
            if let Some(level) = queue.ready.wants_refill(low) {
                refills += 1;
                let later = self.refill(&mut queue.ready, level) == Loaded::Later;
                // A refill may bring nothing back: after a crash, the
                // batches it read can hold only messages acknowledged
                // since the checkpoint. More spilled batches follow, so
                // this is not empty: read on (for a while; then the timer
                // comes back to it, and the loop serves others meanwhile).
                let more = !later && queue.ready.wants_refill(low).is_some();
                if queue.ready.front().is_none() && (later || (more && refills >= MAX_REFILLS)) {
                    if !self.read_later.contains(&queue.id) {
                        self.read_later.push(queue.id);
                    }
                    return Taken::Later;
                }
                if queue.ready.front().is_none() && more {
                    continue;
                }
            }
            let Some(m) = queue.pop() else {
                return Taken::Empty;
            };
            if !content || !m.is_paged() {
                return Taken::Msg(m, None);
            }
            match self.read_back(&m) {
                Ok(c) => return Taken::Msg(m, Some(c)),
                Err(Loaded::Later) => {
                    queue.unpop(m);
                    if !self.read_later.contains(&queue.id) {
                        self.read_later.push(queue.id);
                    }
                    return Taken::Later;
                }
                Err(_) => {
                    queue.leave(&m);
                    self.resident = self.resident.saturating_sub(m.resident());
                    self.queued = self.queued.saturating_sub(1);
                }
            }
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// Spilled messages of purged queues still to be acknowledged.
    pub fn purge_pending(&self) -> u64 {
        self.purged.iter().map(|(_, s)| s.count).sum()
    }

    /// The head and tail windows of a queue level, in messages: smaller
    /// while memory is short.
    pub(crate) fn windows(&self) -> (usize, usize) {
        if self.should_page(0) {
            (SMALL_WINDOW, SMALL_WINDOW)
        } else {
            (HEAD_WINDOW, TAIL_WINDOW)
        }
    }

    /// Spill what lies beyond the windows of `ready`'s level `level` (after
    /// a message was added to it): what lies beyond the head's window,
    /// once that is twice the tail's window (with nothing spilled yet, it
    /// is split off the head), the front of it as one batch: the newest
    /// tail-window's worth stays. At most [`SPILL_BATCH`] messages go per
    /// call. A small message in memory goes whole into its entry (see
    /// [`QueuedMsg::spills_whole`]: reading it back takes no read of its
    /// own); the content of another goes to the log first if it is not
    /// there. When writing fails the messages stay in memory (paged out)
    /// and spilling pauses for a while.
    pub(crate) fn spill_excess(&mut self, ready: &mut Ready, level: usize, now: Instant) {
        let (head, tail) = self.windows();
        let Some(l) = ready.level_mut(level) else {
            return;
        };
        let first = l.spill.is_empty();
        let in_memory = l.head.len() + l.tail.len();
        if (first && in_memory < head + 2 * tail) || (!first && l.tail.len() < 2 * tail) {
            return;
        }
        let Some(st) = self.store.as_mut().filter(|st| st.healthy()) else {
            return;
        };
        if !st.spill.ready(now) {
            return;
        }
        if first {
            // What lies beyond the head's window, oldest first; it goes
            // back if nothing could be spilled.
            let mut rest = l.head.split_off(head);
            rest.append(&mut l.tail);
            l.tail = rest;
        }
        let n = (l.tail.len() - tail).min(SPILL_BATCH);
        let spilled = spill_front(st, &mut self.arena, &mut self.resident, l, n, now);
        if !spilled && l.spill.is_empty() {
            l.head.append(&mut l.tail);
        }
    }

    /// Read `ready`'s level `level` back from disk until its head holds
    /// half its window (a few batches at most); when nothing is spilled any
    /// more, the tail joins the head. A batch that cannot be read for now
    /// is [`Loaded::Later`]; one that is damaged or gone is logged and its
    /// messages are dropped (their references released: a durable one is
    /// still in the message log, and comes back after a restart that
    /// scans it).
    pub(crate) fn refill(&mut self, ready: &mut Ready, level: usize) -> Loaded {
        let low = self.windows().0 / 2;
        let Some(st) = self.store.as_mut() else {
            return Loaded::Lost;
        };
        let mut lost = (0u64, 0u64);
        let mut res = Loaded::Yes;
        {
            let Some(l) = ready.level_mut(level) else {
                return Loaded::Lost;
            };
            for _ in 0..REFILL_BATCHES {
                if l.spill.is_empty() || l.head.len() >= low.max(1) {
                    break;
                }
                let durable_only = l.spill.durable_only;
                match st.spill.read(&mut l.spill) {
                    Ok(b) => {
                        let mut data = &b.entries[..];
                        let mut n = 0u64;
                        let mut got = 0u64;
                        while !data.is_empty() {
                            let Some((m, used)) = QueuedMsg::from_spill(&mut self.arena, data)
                            else {
                                error!(
                                    "spill: an entry does not parse; the {} messages after it in its batch are dropped",
                                    u64::from(b.count).saturating_sub(n)
                                );
                                break;
                            };
                            data = data.get(used..).unwrap_or_default();
                            let at = m.stored();
                            if durable_only && !at.is_some_and(|r| r.durable) {
                                continue;
                            }
                            let id = at.map_or(u64::MAX, |r| r.msg_id);
                            if !l.spill.skip.is_empty() && l.spill.skip.remove(&id) {
                                // Acknowledged after the checkpoint it was
                                // restored from: gone (counted as lost
                                // below, its reference released).
                                if let Some(r) = at {
                                    st.release(&r);
                                }
                                continue;
                            }
                            let mut m = m;
                            if !l.spill.seen.is_empty() && l.spill.seen.remove(&id) {
                                m.set_redelivered(true);
                            }
                            // Back whole while memory is short: its content
                            // goes to disk, as a held message's does (see
                            // `Messages::hold`), so that what is delivered
                            // and not acknowledged stays a stub.
                            // (A failing store takes no new copy.)
                            if !m.is_paged()
                                && content_over_half(&self.arena, self.resident, self.max_memory)
                                && (at.is_some() || st.healthy())
                            {
                                page_out_to(st, &mut self.arena, &mut m);
                            }
                            n += 1;
                            got += m.size();
                            l.head.push_back(m);
                        }
                        if n < u64::from(b.count) {
                            lost.0 += u64::from(b.count) - n;
                            lost.1 += b.bytes.saturating_sub(got);
                        }
                    }
                    Err(ReadError::Later(e)) => {
                        warn!("spill: cannot read back for now: {e}; the queue waits");
                        res = Loaded::Later;
                        break;
                    }
                    Err(ReadError::Lost {
                        error: e,
                        count,
                        bytes,
                        refs,
                    }) => {
                        error!("spill: a batch of {count} messages cannot be read back: {e}; they are dropped");
                        st.release_runs(&refs);
                        lost.0 += count;
                        lost.1 += bytes;
                    }
                }
            }
            if l.spill.is_empty() && !l.tail.is_empty() {
                let tail = std::mem::take(&mut l.tail);
                l.head.extend(tail);
            }
        }
        if lost.0 > 0 {
            ready.lost(lost.0, lost.1);
            self.queued = self.queued.saturating_sub(lost.0);
        }
        res
    }

    /// Drop the spilled messages of a deleted queue (or of a purged one
    /// whose deletion the store records as a whole): their files go, their
    /// references are released. Returns how many.
    pub(crate) fn discard_spill(&mut self, spill: Spill) -> u64 {
        let n = spill.count;
        self.queued = self.queued.saturating_sub(n);
        if let Some(st) = self.store.as_mut() {
            let runs = st.spill.discard(spill);
            st.release_runs(&runs);
        }
        n
    }

    /// Acknowledge a batch of the spilled messages of purged queues (their
    /// durable ones need an ack each); true while more remain.
    pub(crate) fn settle_purged(&mut self) -> bool {
        let Some((sid, mut spill)) = self.purged.pop() else {
            return false;
        };
        let mut ready = Ready::new(1);
        ready.restored(spill.count, spill.bytes);
        if let Some(l) = ready.level_mut(0) {
            l.spill = spill;
        }
        // Those read back are settled here; `refill` counts those lost.
        self.refill(&mut ready, 0);
        let (msgs, rest) = ready.take_all();
        for m in &msgs {
            self.forget(sid, m);
        }
        spill = rest.into_iter().next().unwrap_or_default();
        if !spill.is_empty() {
            self.purged.push((sid, spill));
        }
        !self.purged.is_empty()
    }

    /// A message leaves the broker for good (acked, dropped, rejected,
    /// purged): release its memory and its store reference.
    pub(crate) fn forget(&mut self, queue_store_id: Option<u64>, m: &QueuedMsg) {
        self.resident = self.resident.saturating_sub(m.resident());
        self.queued = self.queued.saturating_sub(1);
        if let (Some(r), Some(st)) = (m.stored(), self.store.as_mut()) {
            match queue_store_id {
                Some(q) if r.durable => st.ack(q, &r),
                _ => st.release(&r),
            }
        }
    }

    /// Make a queued message's content available in memory (read it back
    /// and page it in if paged). [`Loaded::Lost`] if its record is damaged:
    /// logged, and its memory accounting and store reference released (the
    /// caller drops it; no ack is recorded, so if the record is readable
    /// after all a crash-restart brings it back). [`Loaded::Later`] if it
    /// cannot be read for now: the caller puts it back where it was.
    pub(crate) fn load(&mut self, m: &mut QueuedMsg) -> Loaded {
        if !m.is_paged() {
            return Loaded::Yes;
        }
        match self.read_back(m) {
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

    /// A paged-out message's content, read from the store; the message
    /// stays paged out. Err([`Loaded::Lost`]) if its record is damaged
    /// (logged, its store reference released: the caller drops it);
    /// Err([`Loaded::Later`]) if it cannot be read for now.
    fn read_back(&mut self, m: &QueuedMsg) -> Result<Content, Loaded> {
        let (Some(st), Some(r)) = (self.store.as_mut(), m.stored()) else {
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

    /// A queued message's deduplication key (`x-deduplication-header`), its
    /// header read back from the store if it is paged out (a record that
    /// cannot be read has none: it is dropped when it is taken).
    pub(crate) fn key_of(&mut self, m: &QueuedMsg) -> Option<Bytes> {
        let header = if m.is_paged() {
            let (st, r) = (self.store.as_mut()?, m.stored()?);
            st.read(&r).ok()?.0
        } else {
            m.header()
        };
        let h = crate::codec::ContentHeader::decode(&header).ok()?;
        crate::broker::dedup::key_in(h.properties.headers.as_ref())
    }

    /// Store a persistent message for the durable queues among its targets.
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
            && content_over_half(&self.arena, self.resident + more, self.max_memory)
    }

    /// A message held again (requeued) or newly held: beyond half the
    /// memory budget its content goes to disk (a copy is stored if it is
    /// not stored yet), else it is counted as resident.
    pub(crate) fn hold(&mut self, m: &mut QueuedMsg) {
        if !self.should_page(m.resident()) {
            self.resident += m.resident();
            return;
        }
        // A failing store keeps what it is given in memory anyway.
        let Some(st) = self.store.as_mut().filter(|st| st.healthy()) else {
            self.resident += m.resident();
            return;
        };
        page_out_to(st, &mut self.arena, m);
    }

    /// A message coming back to a queue: held like a new one (see
    /// [`Messages::hold`]).
    pub(crate) fn hold_again(&mut self, m: &mut QueuedMsg) {
        if !m.is_paged() {
            self.resident = self.resident.saturating_sub(m.resident());
            self.hold(m);
        }
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

    /// A delivered (or fetched) message that will wait for an ack: the
    /// store notes its first delivery, so that a restart marks it
    /// redelivered.
    pub(crate) fn delivered(&mut self, queue_store_id: Option<u64>, m: &QueuedMsg) {
        if let (Some(sid), Some(sr), Some(st)) = (queue_store_id, m.stored(), self.store.as_mut()) {
            if !m.redelivered() {
                st.delivered(sid, &sr);
            }
        }
    }
}

/// Spill the first `n` messages of `l`'s tail as one batch (their content
/// to disk first where it is not there). False when nothing was spilled:
/// writing failed, or a message has no stored copy.
fn spill_front(
    st: &mut Store,
    arena: &mut Arena,
    resident: &mut u64,
    l: &mut crate::broker::ready::Level,
    n: usize,
    now: Instant,
) -> bool {
    let mut entries = Vec::with_capacity(n * 80);
    let mut runs = Runs::new();
    let mut bytes = 0u64;
    let mut durable = (0u32, 0u64);
    for m in l.tail.range_mut(..n) {
        let whole = m.spills_whole();
        if !whole && !m.is_paged() {
            *resident = resident.saturating_sub(m.resident());
            page_out_to(st, arena, m);
        }
        bytes += m.size();
        match m.stored() {
            Some(at) => {
                push_run(&mut runs, at.seg, at.durable);
                if at.durable {
                    durable.0 += 1;
                    durable.1 += m.size();
                }
            }
            // Paged out, it has one; without, nothing is spilled.
            None if !whole => return false,
            // A transient message whole in its entry: not in the log.
            None => push_run(&mut runs, NO_SEGMENT, false),
        }
        m.spill_entry(&mut entries);
    }
    let batch = Batch {
        len: 0,
        count: n as u32,
        bytes,
        durable,
    };
    if st
        .spill
        .write(&mut l.spill, &entries, batch, &runs, now)
        .is_err()
    {
        return false;
    }
    l.tail.drain(..n);
    true
}

/// True when content in memory (the arena's content chunks and
/// `resident`, large bodies) is over half the memory budget: beyond it,
/// content goes to disk (see [`Messages::should_page`]).
fn content_over_half(arena: &Arena, resident: u64, max_memory: u64) -> bool {
    arena.content_bytes() + resident > max_memory / 2
}

/// Page `m` out: its content to the log unless a copy is there already,
/// then only its stub stays in memory.
fn page_out_to(st: &mut Store, arena: &mut Arena, m: &mut QueuedMsg) {
    let at = match m.stored() {
        Some(r) => r,
        None => st.append_paged(&m.meta()),
    };
    m.page_out(arena, at);
}
