//! The owner of queued messages' memory and disk: the store, the arena
//! their entries are packed into, the account of what they take, and the
//! one way a message leaves a queue's ready list ([`Messages::take`]).

use bytes::Bytes;
use log::{error, warn};

use crate::broker::message::{Arena, Message, QueuedMsg};
use crate::broker::queue::Queue;
use crate::broker::QueueId;
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
        loop {
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
                    self.resident = self.resident.saturating_sub(m.resident());
                    self.queued = self.queued.saturating_sub(1);
                }
            }
        }
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
            && self.arena.content_bytes() + self.resident + more > self.max_memory / 2
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
        let at = match m.stored() {
            Some(r) => r,
            None => st.append_paged(&m.meta()),
        };
        m.page_out(&mut self.arena, at);
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
