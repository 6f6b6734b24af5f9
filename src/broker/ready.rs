//! A queue's ready messages: one [`Level`] per priority (one for a queue
//! without `x-max-priority`), each a window in memory at its head, the
//! spilled middle on disk (`store::spill`) and a window at its tail. The
//! head holds the oldest messages: every key in the head is lower than
//! every spilled one, and those lower than every key in the tail; the tail
//! is empty while nothing is spilled. Requeued messages (taken from a head)
//! go back to the head, at their position. What moves between memory and
//! disk is decided by the engine (`engine::messages`), which owns the
//! store; this is the pure state.

use std::collections::VecDeque;

use super::message::QueuedMsg;
use crate::store::spill::Spill;

/// One priority level's messages.
#[derive(Debug, Default)]
pub struct Level {
    /// The oldest messages, in memory, in `seq` order.
    pub head: VecDeque<QueuedMsg>,
    /// The middle, on disk.
    pub spill: Spill,
    /// The newest messages, in memory, while something is spilled.
    pub tail: VecDeque<QueuedMsg>,
}

impl Level {
    #[cfg(any(test, feature = "testing"))]
    /// Messages in it.
    pub fn len(&self) -> u64 {
        (self.head.len() + self.tail.len()) as u64 + self.spill.count
    }

    /// Nothing in it.
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty() && self.spill.is_empty()
    }
}

/// A queue's ready messages (see the module docs).
#[derive(Debug)]
pub struct Ready {
    levels: Vec<Level>,
    len: u64,
    bytes: u64,
}

impl Default for Ready {
    fn default() -> Ready {
        Ready::new(1)
    }
}

impl Ready {
    /// Empty, with `levels` priority levels (at least one).
    pub fn new(levels: usize) -> Ready {
        Ready {
            levels: (0..levels.max(1)).map(|_| Level::default()).collect(),
            len: 0,
            bytes: 0,
        }
    }

    /// Ready messages, spilled ones included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// No ready message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Body bytes of the ready messages.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages spilled to disk.
    pub fn spilled(&self) -> u64 {
        self.levels.iter().map(|l| l.spill.count).sum()
    }

    /// The levels, lowest priority first.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// A level, to move messages between memory and disk (the caller keeps
    /// the order: see the module docs; counts do not change).
    pub fn level_mut(&mut self, i: usize) -> Option<&mut Level> {
        self.levels.get_mut(i)
    }

    fn level_of(&self, m: &QueuedMsg) -> usize {
        usize::from(m.prio).min(self.levels.len() - 1)
    }

    /// Append a new message (the newest of its level); returns its level.
    pub fn push(&mut self, m: QueuedMsg) -> usize {
        let i = self.level_of(&m);
        self.len += 1;
        self.bytes += m.size();
        let Some(l) = self.levels.get_mut(i) else {
            return i;
        };
        if l.spill.is_empty() && l.tail.is_empty() {
            insert(&mut l.head, m);
        } else {
            l.tail.push_back(m);
        }
        i
    }

    /// Put a message taken from a head back at its position.
    pub fn requeue(&mut self, m: QueuedMsg) {
        let i = self.level_of(&m);
        self.len += 1;
        self.bytes += m.size();
        if let Some(l) = self.levels.get_mut(i) {
            insert(&mut l.head, m);
        }
    }

    /// Put back a message just popped, unchanged, at the head.
    pub fn unpop(&mut self, m: QueuedMsg) {
        let i = self.level_of(&m);
        self.len += 1;
        self.bytes += m.size();
        if let Some(l) = self.levels.get_mut(i) {
            l.head.push_front(m);
        }
    }

    /// The level the next message comes from: the highest with messages.
    pub fn front_level(&self) -> Option<usize> {
        self.levels.iter().rposition(|l| !l.is_empty())
    }

    /// The front level, if its head must be read back from disk before
    /// its next message can be taken (its head is empty, or below `low`
    /// with more spilled).
    pub fn wants_refill(&self, low: usize) -> Option<usize> {
        let i = self.front_level()?;
        let l = self.levels.get(i)?;
        (!l.spill.is_empty() && l.head.len() < low.max(1)).then_some(i)
    }

    /// The next message, if it is in memory.
    pub fn front(&self) -> Option<&QueuedMsg> {
        self.levels.get(self.front_level()?)?.head.front()
    }

    /// Take the next message; None when there is none, or when it is
    /// spilled (see [`Ready::wants_refill`]).
    pub fn pop(&mut self) -> Option<QueuedMsg> {
        let i = self.front_level()?;
        let l = self.levels.get_mut(i)?;
        let m = match l.head.pop_front() {
            Some(m) => m,
            // Nothing spilled: the tail follows the head directly.
            None if l.spill.is_empty() => l.tail.pop_front()?,
            None => return None,
        };
        self.len -= 1;
        self.bytes = self.bytes.saturating_sub(m.size());
        Some(m)
    }

    /// Take every message: those in memory, and the spills (for the caller
    /// to release).
    pub fn take_all(&mut self) -> (Vec<QueuedMsg>, Vec<Spill>) {
        let mut msgs = Vec::new();
        let mut spills = Vec::new();
        for l in &mut self.levels {
            msgs.extend(l.head.drain(..));
            msgs.extend(l.tail.drain(..));
            if !l.spill.is_empty() {
                spills.push(std::mem::take(&mut l.spill));
            }
        }
        self.len = 0;
        self.bytes = 0;
        (msgs, spills)
    }

    #[cfg(any(test, feature = "testing"))]
    /// The messages in memory, level by level.
    pub fn iter_memory(&self) -> impl Iterator<Item = &QueuedMsg> {
        self.levels
            .iter()
            .rev()
            .flat_map(|l| l.head.iter().chain(l.tail.iter()))
    }

    /// Restore level `level` at start: `head` and `tail` (in memory, in
    /// any order) around `spill`.
    pub fn restore(
        &mut self,
        level: usize,
        mut head: Vec<QueuedMsg>,
        spill: Spill,
        mut tail: Vec<QueuedMsg>,
    ) {
        let Some(l) = self.levels.get_mut(level) else {
            return;
        };
        head.sort_by_key(|m| m.seq);
        tail.sort_by_key(|m| m.seq);
        for m in head.iter().chain(tail.iter()) {
            self.len += 1;
            self.bytes += m.size();
        }
        self.len += spill.count;
        self.bytes += spill.bytes;
        l.head.extend(head);
        if spill.is_empty() {
            l.head.extend(tail);
        } else {
            l.spill = spill;
            l.tail.extend(tail);
        }
    }

    /// A spilled batch lost (unreadable): forget it in the counts.
    pub fn lost(&mut self, count: u64, bytes: u64) {
        self.len = self.len.saturating_sub(count);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Counts of a spill restored at start (its messages were not pushed).
    pub fn restored(&mut self, count: u64, bytes: u64) {
        self.len += count;
        self.bytes += bytes;
    }

    /// Bytes of memory the buffers take (by capacity; mostly empty ones
    /// are shrunk first), with the spill summaries.
    pub fn buffer_bytes(&mut self) -> u64 {
        let mut n = (self.levels.capacity() * std::mem::size_of::<Level>()) as u64;
        for l in &mut self.levels {
            n += crate::engine::ring_bytes(&mut l.head)
                + crate::engine::ring_bytes(&mut l.tail)
                + l.spill.memory();
        }
        n
    }
}

impl Ready {
    #[cfg(any(test, feature = "testing"))]
    /// Check the counts and the order (see the module docs).
    pub fn check(&self) -> Result<(), String> {
        let mut len = 0;
        let mut bytes = 0;
        for (i, l) in self.levels.iter().enumerate() {
            len += l.len();
            bytes += l.spill.bytes;
            bytes += l
                .head
                .iter()
                .chain(l.tail.iter())
                .map(|m| m.size())
                .sum::<u64>();
            let seqs: Vec<u64> = l.head.iter().chain(l.tail.iter()).map(|m| m.seq).collect();
            if seqs.iter().zip(seqs.iter().skip(1)).any(|(a, b)| a >= b) {
                return Err(format!("level {i} is out of order"));
            }
            if l.spill.is_empty() && !l.tail.is_empty() {
                return Err(format!("level {i} has a tail and nothing spilled"));
            }
            if l.head
                .iter()
                .chain(l.tail.iter())
                .any(|m| usize::from(m.prio).min(self.levels.len() - 1) != i)
            {
                return Err(format!("level {i} holds a message of another level"));
            }
        }
        if (len, bytes) != (self.len, self.bytes) {
            return Err(format!(
                "{} messages of {} bytes counted, {len} of {bytes} held",
                self.len, self.bytes
            ));
        }
        Ok(())
    }
}

/// Insert in `seq` order; appending is the common case.
fn insert(v: &mut VecDeque<QueuedMsg>, m: QueuedMsg) {
    match v.back() {
        Some(last) if last.seq > m.seq => {
            let at = v.partition_point(|x| x.seq < m.seq);
            v.insert(at, m);
        }
        _ => v.push_back(m),
    }
}
