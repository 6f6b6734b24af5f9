//! A queue's consumers, arranged so that every operation is O(1) or
//! O(log p) (p: distinct priorities), whatever their number:
//!
//! - consumers live in a slab; a consumer's key stays its own until it is
//!   removed (its channel keeps the key, so cancelling needs no search);
//! - each priority has a group holding its consumers in subscription order
//!   (a linked list: single active consumer takes the first of the
//!   highest-priority group) and a round-robin ring of those that are
//!   *active*, that may take a message now, with a cursor on the next to
//!   try;
//! - a consumer found unable to take a message (prefetch window full, its
//!   connection's output backed up) is *blocked*: taken out of its ring, so
//!   later messages do not look at it again, until whatever held it back
//!   changes and [`Consumers::unblock`] puts it back at the end of the
//!   rotation;
//! - the groups with active consumers sit in a max-heap by priority (a
//!   vector that only grows to the number of groups: no allocation per
//!   message), so the next consumer to try is found in O(1).
//!
//! Round robin: the consumer under the cursor gets the message, then the
//! cursor moves on; new and unblocked consumers join just before the cursor,
//! as the last of the current rotation (RabbitMQ's order).

use std::collections::BTreeMap;

use bytes::Bytes;
use slab::Slab;

use super::ConnId;

/// No entry (end of a list, empty ring, not in the heap).
const NIL: u32 = u32::MAX;

/// A consumer as the queue sees it; its state lives in its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRef {
    /// Owning connection.
    pub conn: ConnId,
    /// Channel number.
    pub channel: u16,
    /// Consumer tag.
    pub tag: Bytes,
    /// `x-priority` consume argument (higher gets messages first).
    pub priority: i32,
    /// Its key among its channel's consumers.
    pub slot: u32,
}

#[derive(Debug)]
struct Entry {
    r: ConsumerRef,
    group: u32,
    /// Subscription order within the group.
    prev: u32,
    next: u32,
    /// The group's ring of active consumers (valid while `active`).
    ring_prev: u32,
    ring_next: u32,
    active: bool,
}

#[derive(Debug)]
struct Group {
    priority: i32,
    /// Subscription order: oldest and newest.
    first: u32,
    last: u32,
    /// The active consumer to try next (NIL: none is active).
    cursor: u32,
    /// Position in the heap (NIL: not in it).
    heap_pos: u32,
}

/// A queue's consumers (see the module documentation).
#[derive(Debug, Default)]
pub struct Consumers {
    entries: Slab<Entry>,
    groups: Slab<Group>,
    by_priority: BTreeMap<i32, u32>,
    /// Groups with an active consumer, max-heap by priority.
    heap: Vec<u32>,
}

fn idx(k: u32) -> usize {
    k as usize
}

impl Consumers {
    /// Number of consumers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No consumers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The consumer with this key.
    pub fn get(&self, key: u32) -> Option<&ConsumerRef> {
        self.entries.get(idx(key)).map(|e| &e.r)
    }

    /// Add a consumer (active, last in its priority's rotation); returns its key.
    pub fn add(&mut self, r: ConsumerRef) -> u32 {
        let priority = r.priority;
        let g = match self.by_priority.get(&priority) {
            Some(&g) => g,
            None => {
                let g = self.groups.insert(Group {
                    priority,
                    first: NIL,
                    last: NIL,
                    cursor: NIL,
                    heap_pos: NIL,
                }) as u32;
                self.by_priority.insert(priority, g);
                g
            }
        };
        let last = self.groups.get(idx(g)).map_or(NIL, |x| x.last);
        let key = self.entries.insert(Entry {
            r,
            group: g,
            prev: last,
            next: NIL,
            ring_prev: NIL,
            ring_next: NIL,
            active: false,
        }) as u32;
        if let Some(e) = self.entries.get_mut(idx(last)) {
            e.next = key;
        }
        if let Some(grp) = self.groups.get_mut(idx(g)) {
            if grp.first == NIL {
                grp.first = key;
            }
            grp.last = key;
        }
        self.unblock(key);
        key
    }

    /// Remove the consumer with this key if it is the one `is_it` accepts.
    pub fn remove(
        &mut self,
        key: u32,
        is_it: impl Fn(&ConsumerRef) -> bool,
    ) -> Option<ConsumerRef> {
        if !self.entries.get(idx(key)).is_some_and(|e| is_it(&e.r)) {
            return None;
        }
        self.block(key);
        let e = self.entries.try_remove(idx(key))?;
        if let Some(p) = self.entries.get_mut(idx(e.prev)) {
            p.next = e.next;
        }
        if let Some(n) = self.entries.get_mut(idx(e.next)) {
            n.prev = e.prev;
        }
        let empty = match self.groups.get_mut(idx(e.group)) {
            Some(grp) => {
                if grp.first == key {
                    grp.first = e.next;
                }
                if grp.last == key {
                    grp.last = e.prev;
                }
                grp.first == NIL
            }
            None => false,
        };
        if empty {
            self.groups.try_remove(idx(e.group));
            self.by_priority.remove(&e.r.priority);
        }
        Some(e.r)
    }

    /// The first consumer of the highest priority (single active consumer).
    pub fn first_key(&self) -> Option<u32> {
        let (_, &g) = self.by_priority.last_key_value()?;
        self.groups
            .get(idx(g))
            .map(|grp| grp.first)
            .filter(|&k| k != NIL)
    }

    /// The first consumer of the highest priority.
    pub fn first(&self) -> Option<&ConsumerRef> {
        self.first_key().and_then(|k| self.get(k))
    }

    /// The active consumer of the highest priority whose turn it is.
    pub fn next_active(&self) -> Option<u32> {
        let g = *self.heap.first()?;
        self.groups
            .get(idx(g))
            .map(|grp| grp.cursor)
            .filter(|&k| k != NIL)
    }

    /// The consumer may take a message now (not blocked).
    pub fn is_active(&self, key: u32) -> bool {
        self.entries.get(idx(key)).is_some_and(|e| e.active)
    }

    /// `key` got a message: the next in its ring has the next turn.
    pub fn delivered(&mut self, key: u32) {
        let Some(e) = self.entries.get(idx(key)).filter(|e| e.active) else {
            return;
        };
        let next = e.ring_next;
        if let Some(grp) = self.groups.get_mut(idx(e.group)) {
            grp.cursor = next;
        }
    }

    /// Take the consumer out of its rotation until [`Consumers::unblock`].
    pub fn block(&mut self, key: u32) {
        let Some(e) = self.entries.get_mut(idx(key)).filter(|e| e.active) else {
            return;
        };
        e.active = false;
        let (p, n, g) = (e.ring_prev, e.ring_next, e.group);
        let alone = n == key;
        if !alone {
            if let Some(x) = self.entries.get_mut(idx(p)) {
                x.ring_next = n;
            }
            if let Some(x) = self.entries.get_mut(idx(n)) {
                x.ring_prev = p;
            }
        }
        if let Some(grp) = self.groups.get_mut(idx(g)) {
            if alone {
                grp.cursor = NIL;
            } else if grp.cursor == key {
                grp.cursor = n;
            }
        }
        if alone {
            self.heap_remove(g);
        }
    }

    /// Put a blocked consumer back, as the last of its rotation (no-op if
    /// it is active or gone).
    pub fn unblock(&mut self, key: u32) {
        let Some(e) = self.entries.get(idx(key)).filter(|e| !e.active) else {
            return;
        };
        let g = e.group;
        let Some(cursor) = self.groups.get(idx(g)).map(|grp| grp.cursor) else {
            return;
        };
        let (p, n) = if cursor == NIL {
            (key, key)
        } else {
            let p = self
                .entries
                .get(idx(cursor))
                .map_or(cursor, |c| c.ring_prev);
            (p, cursor)
        };
        if let Some(e) = self.entries.get_mut(idx(key)) {
            e.active = true;
            e.ring_prev = p;
            e.ring_next = n;
        }
        if cursor == NIL {
            if let Some(grp) = self.groups.get_mut(idx(g)) {
                grp.cursor = key;
            }
            self.heap_push(g);
        } else {
            if let Some(x) = self.entries.get_mut(idx(p)) {
                x.ring_next = key;
            }
            if let Some(x) = self.entries.get_mut(idx(n)) {
                x.ring_prev = key;
            }
        }
    }

    /// Every consumer with its key: by priority (highest first), then in
    /// subscription order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &ConsumerRef)> + '_ {
        self.by_priority.values().rev().flat_map(move |&g| {
            let mut k = self.groups.get(idx(g)).map_or(NIL, |grp| grp.first);
            std::iter::from_fn(move || {
                let e = self.entries.get(idx(k))?;
                let key = k;
                k = e.next;
                Some((key, &e.r))
            })
        })
    }

    /// Every consumer, taken out (the queue is going).
    pub fn take_all(&mut self) -> Vec<ConsumerRef> {
        let out = self.iter().map(|(_, r)| r.clone()).collect();
        *self = Consumers::default();
        out
    }

    fn priority(&self, g: u32) -> i32 {
        self.groups.get(idx(g)).map_or(i32::MIN, |grp| grp.priority)
    }

    fn heap_set(&mut self, i: usize, g: u32) {
        if let Some(slot) = self.heap.get_mut(i) {
            *slot = g;
        }
        if let Some(grp) = self.groups.get_mut(idx(g)) {
            grp.heap_pos = i as u32;
        }
    }

    fn heap_at(&self, i: usize) -> u32 {
        self.heap.get(i).copied().unwrap_or(NIL)
    }

    fn heap_push(&mut self, g: u32) {
        if self
            .groups
            .get(idx(g))
            .is_none_or(|grp| grp.heap_pos != NIL)
        {
            return;
        }
        self.heap.push(g);
        let i = self.heap.len() - 1;
        self.heap_set(i, g);
        self.sift_up(i);
    }

    fn heap_remove(&mut self, g: u32) {
        let Some(pos) = self.groups.get(idx(g)).map(|grp| grp.heap_pos) else {
            return;
        };
        if pos == NIL {
            return;
        }
        let i = idx(pos);
        let Some(last) = self.heap.pop() else {
            return;
        };
        if let Some(grp) = self.groups.get_mut(idx(g)) {
            grp.heap_pos = NIL;
        }
        if i < self.heap.len() {
            self.heap_set(i, last);
            self.sift_up(i);
            let i = idx(self.groups.get(idx(last)).map_or(pos, |grp| grp.heap_pos));
            self.sift_down(i);
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            let (a, b) = (self.heap_at(i), self.heap_at(parent));
            if self.priority(a) <= self.priority(b) {
                break;
            }
            self.heap_set(i, b);
            self.heap_set(parent, a);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut top = i;
            for c in [l, r] {
                if c < self.heap.len()
                    && self.priority(self.heap_at(c)) > self.priority(self.heap_at(top))
                {
                    top = c;
                }
            }
            if top == i {
                break;
            }
            let (a, b) = (self.heap_at(i), self.heap_at(top));
            self.heap_set(i, b);
            self.heap_set(top, a);
            i = top;
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// Check the links (tests).
    #[doc(hidden)]
    pub fn check(&self) -> Result<(), String> {
        let mut n = 0;
        for (&p, &g) in &self.by_priority {
            let grp = self.groups.get(idx(g)).ok_or("group missing")?;
            if grp.priority != p {
                return Err(format!("group {g} has priority {} not {p}", grp.priority));
            }
            let mut active = 0;
            let mut k = grp.first;
            let mut prev = NIL;
            while k != NIL {
                let e = self.entries.get(idx(k)).ok_or("entry missing")?;
                if e.prev != prev || e.group != g || e.r.priority != p {
                    return Err(format!("entry {k}: bad links"));
                }
                active += usize::from(e.active);
                n += 1;
                prev = k;
                k = e.next;
            }
            if grp.last != prev {
                return Err(format!("group {g}: last is {} not {prev}", grp.last));
            }
            let mut ring = 0;
            if grp.cursor != NIL {
                let mut k = grp.cursor;
                loop {
                    let e = self.entries.get(idx(k)).ok_or("ring entry missing")?;
                    let next = self.entries.get(idx(e.ring_next)).ok_or("ring broken")?;
                    if !e.active || next.ring_prev != k || e.group != g {
                        return Err(format!("ring of group {g} broken at {k}"));
                    }
                    ring += 1;
                    k = e.ring_next;
                    if k == grp.cursor || ring > self.entries.len() {
                        break;
                    }
                }
            }
            if ring != active {
                return Err(format!("group {g}: {active} active, ring of {ring}"));
            }
            let in_heap = grp.heap_pos != NIL;
            if in_heap != (active > 0) || (in_heap && self.heap_at(idx(grp.heap_pos)) != g) {
                return Err(format!("group {g}: heap position {} wrong", grp.heap_pos));
            }
        }
        if n != self.entries.len() || self.by_priority.len() != self.groups.len() {
            return Err("entries or groups not all listed".into());
        }
        for i in 1..self.heap.len() {
            if self.priority(self.heap_at(i)) > self.priority(self.heap_at((i - 1) / 2)) {
                return Err("heap order".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(tag: &str, priority: i32) -> ConsumerRef {
        ConsumerRef {
            conn: ConnId { idx: 0, gen: 0 },
            channel: 1,
            tag: Bytes::copy_from_slice(tag.as_bytes()),
            priority,
            slot: 0,
        }
    }

    fn tag(c: &Consumers, k: u32) -> String {
        String::from_utf8_lossy(&c.get(k).unwrap().tag).into_owned()
    }

    /// Deliver `n` times to whoever's turn it is.
    fn turns(c: &mut Consumers, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let k = c.next_active().unwrap();
                c.delivered(k);
                tag(c, k)
            })
            .collect()
    }

    #[test]
    fn round_robin_in_subscription_order() {
        let mut c = Consumers::default();
        for t in ["a", "b", "c"] {
            c.add(r(t, 0));
        }
        c.check().unwrap();
        assert_eq!(turns(&mut c, 7), ["a", "b", "c", "a", "b", "c", "a"]);
        // A newcomer is last of the current rotation.
        c.add(r("d", 0));
        assert_eq!(turns(&mut c, 5), ["b", "c", "a", "d", "b"]);
        c.check().unwrap();
    }

    #[test]
    fn higher_priority_first_blocked_ones_skipped() {
        let mut c = Consumers::default();
        let lo = c.add(r("lo", -1));
        let a = c.add(r("a", 5));
        let b = c.add(r("b", 5));
        let mid = c.add(r("mid", 0));
        assert_eq!(turns(&mut c, 3), ["a", "b", "a"]);
        c.block(a);
        c.check().unwrap();
        assert_eq!(turns(&mut c, 2), ["b", "b"]);
        c.block(b);
        assert_eq!(turns(&mut c, 2), ["mid", "mid"]);
        c.block(mid);
        assert_eq!(turns(&mut c, 1), ["lo"]);
        c.block(lo);
        assert_eq!(c.next_active(), None);
        c.check().unwrap();
        c.unblock(mid);
        c.unblock(b);
        assert_eq!(turns(&mut c, 2), ["b", "b"]);
        c.unblock(a);
        assert_eq!(turns(&mut c, 3), ["b", "a", "b"]);
        c.check().unwrap();
        // Single active consumer: the first subscribed of the top priority.
        assert_eq!(c.first().unwrap().tag, "a");
        c.remove(a, |_| true).unwrap();
        assert_eq!(c.first().unwrap().tag, "b");
        assert!(c.remove(b, |x| x.tag == "nope").is_none());
        c.remove(b, |_| true).unwrap();
        assert_eq!(c.first().unwrap().tag, "mid");
        let order: Vec<_> = c.iter().map(|(_, r)| r.tag.clone()).collect();
        assert_eq!(order, ["mid", "lo"]);
        c.check().unwrap();
    }

    #[test]
    fn many_priorities_and_removals_keep_the_structure() {
        let mut c = Consumers::default();
        let mut keys = Vec::new();
        for i in 0..200 {
            keys.push(c.add(r(&format!("c{i}"), i * 7919 % 13 - 6)));
        }
        c.check().unwrap();
        for (n, &k) in keys.iter().enumerate() {
            match n % 3 {
                0 => c.block(k),
                1 => {
                    c.remove(k, |_| true);
                }
                _ => {}
            }
            if n % 17 == 0 {
                c.check().unwrap();
            }
        }
        c.check().unwrap();
        // The top active group is the highest priority with an active consumer.
        let top = c.get(c.next_active().unwrap()).unwrap().priority;
        let best = c
            .iter()
            .filter(|&(k, _)| c.is_active(k))
            .map(|(_, r)| r.priority)
            .max()
            .unwrap();
        assert_eq!(top, best);
        for &k in &keys {
            c.unblock(k);
        }
        c.check().unwrap();
        for &k in &keys {
            c.remove(k, |_| true);
        }
        assert!(c.is_empty() && c.next_active().is_none() && c.first().is_none());
        c.check().unwrap();
    }
}
