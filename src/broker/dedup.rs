//! Message deduplication, as the `rabbitmq-message-deduplication` plugin
//! does it for an exchange of type `x-message-deduplication`: a message
//! whose `x-deduplication-header` value was seen within its time to live
//! is not routed. The cache holds at most `x-cache-size` values; when it
//! is full the oldest goes. An entry lives `x-cache-ttl` milliseconds (the
//! message's header of that name, else the exchange's argument, else
//! until it is pushed out).
//!
//! A queue declared with `x-message-deduplication: true` ([`QueueDedup`])
//! does not enqueue a message whose key is the key of a message it still
//! holds (ready or delivered and not yet acknowledged); the key is free
//! again once that message has left the queue (acknowledged, taken without
//! ack, rejected, expired, dropped, dead-lettered or purged) or its time to
//! live has run out.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::codec::table::{FieldTable, FieldValue};

/// The header naming a message's deduplication key.
pub const DEDUP_HEADER: &str = "x-deduplication-header";
/// The cache size argument (required).
pub const CACHE_SIZE: &str = "x-cache-size";
/// The time-to-live argument and header, in milliseconds.
pub const CACHE_TTL: &str = "x-cache-ttl";
/// The persistence argument (`memory`; `disk` is refused).
pub const CACHE_PERSISTENCE: &str = "x-cache-persistence";

/// An exchange's deduplication cache.
#[derive(Debug, Default)]
pub struct DedupCache {
    /// Most entries kept.
    size: usize,
    /// Default time to live, milliseconds.
    ttl: Option<u64>,
    /// Key → (expiry in wall-clock ms, u64::MAX: none; insertion number).
    entries: HashMap<Bytes, (u64, u64)>,
    /// Keys in insertion order with their insertion number (an entry
    /// inserted again leaves a stale pair behind, skipped on eviction).
    order: VecDeque<(Bytes, u64)>,
    /// Insertions so far.
    seq: u64,
}

/// A positive integer argument (any integer type, or a numeric string,
/// as the plugin's clients send them).
fn positive(v: &FieldValue) -> Option<u64> {
    let n = match v.as_i64() {
        Some(n) => n,
        None => std::str::from_utf8(v.as_bytes()?)
            .ok()?
            .trim()
            .parse()
            .ok()?,
    };
    u64::try_from(n).ok().filter(|&n| n > 0)
}

/// Check an `x-message-deduplication` exchange's arguments (the plugin's
/// texts; 406 PRECONDITION_FAILED).
pub fn check_args(args: &FieldTable) -> Result<(), String> {
    if args.get(CACHE_SIZE).and_then(positive).is_none() {
        return Err(format!(
            "Missing or invalid argument, '{CACHE_SIZE}' must be an integer greater than 0"
        ));
    }
    if args.get(CACHE_TTL).is_some_and(|v| positive(v).is_none()) {
        return Err(format!(
            "Invalid argument, '{CACHE_TTL}' must be an integer greater than 0"
        ));
    }
    match args.get(CACHE_PERSISTENCE).map(|v| v.as_bytes().map(|b| &b[..])) {
        None | Some(Some(b"memory")) => Ok(()),
        Some(Some(b"disk")) => Err(format!(
            "Invalid argument, '{CACHE_PERSISTENCE}' 'disk' is not supported by warren (use 'memory')"
        )),
        Some(_) => Err(format!(
            "Invalid argument, '{CACHE_PERSISTENCE}' must be either 'disk' or 'memory'"
        )),
    }
}

/// The deduplication key of a message with these headers, if it has one.
pub fn key_in(headers: Option<&FieldTable>) -> Option<Bytes> {
    headers?.get(DEDUP_HEADER).map(key_of)
}

/// True for a queue argument `x-message-deduplication` that enables it:
/// the plugin takes any value but `false` (and an absent or void one).
pub fn queue_enabled(v: &FieldValue) -> bool {
    !matches!(v, FieldValue::Bool(false) | FieldValue::Void)
}

/// The keys of a deduplication queue's messages, by the messages'
/// sequence numbers in the queue (so that nothing is read back to free a
/// key): memory only for messages that carry a key.
#[derive(Debug, Default)]
pub struct QueueDedup {
    /// Key → the sequence number of the message holding it.
    keys: HashMap<Bytes, u64>,
    /// Sequence number → (its key, when it stops counting (wall-clock ms,
    /// u64::MAX: never), taken from the queue and not yet settled).
    seqs: HashMap<u64, (Bytes, u64, bool)>,
    /// Bytes of the keys held.
    key_bytes: u64,
}

impl QueueDedup {
    /// True when a message holding `key` is still in the queue (and its
    /// time to live, if any, has not run out at `now` ms).
    pub fn holds(&self, key: &[u8], now: u64) -> bool {
        self.keys
            .get(key)
            .and_then(|s| self.seqs.get(s))
            .is_some_and(|&(_, until, _)| now < until)
    }

    /// The message `seq` (expiring at `until` ms, if ever) holds `key`.
    pub fn insert(&mut self, key: Bytes, seq: u64, until: Option<u64>) {
        match self.keys.insert(key.clone(), seq) {
            // A message whose time ran out while it was still queued: its
            // key is the new one's now.
            Some(old) => {
                self.seqs.remove(&old);
            }
            None => self.key_bytes += key.len() as u64,
        }
        self.seqs
            .insert(seq, (key, until.unwrap_or(u64::MAX), false));
    }

    /// The message `seq` left the queue: its key is free.
    pub fn release(&mut self, seq: u64) {
        if let Some((key, _, _)) = self.seqs.remove(&seq) {
            if self.keys.get(&key) == Some(&seq) {
                self.keys.remove(&key);
                self.key_bytes = self.key_bytes.saturating_sub(key.len() as u64);
            }
        }
    }

    /// The message `seq` was taken for delivery (`out`), or came back.
    pub fn set_out(&mut self, seq: u64, out: bool) {
        if let Some(e) = self.seqs.get_mut(&seq) {
            e.2 = out;
        }
    }

    /// Keys held, and keyed messages (one key each; a message whose time to
    /// live ran out may have lost its key to a later one).
    #[cfg(any(test, feature = "testing"))]
    pub fn sizes(&self) -> (usize, usize) {
        (self.keys.len(), self.seqs.len())
    }

    /// The queue's ready messages were purged: only the keys of messages
    /// taken and not yet settled stay.
    pub fn purge(&mut self) {
        self.seqs.retain(|_, e| e.2);
        let seqs = &self.seqs;
        self.keys.retain(|_, s| seqs.contains_key(s));
        self.key_bytes = self.keys.keys().map(|k| k.len() as u64).sum();
    }

    /// Bytes of memory it takes, about: its tables as allocated and the
    /// keys.
    pub fn memory(&self) -> u64 {
        let k = std::mem::size_of::<(Bytes, u64)>() + 8;
        let s = std::mem::size_of::<(u64, (Bytes, u64, bool))>() + 8;
        (self.keys.capacity() * k + self.seqs.capacity() * s) as u64 + self.key_bytes
    }
}

/// A header value as a cache key (strings as they are, other values by
/// their text). A copy: a slice would keep the buffer the header was
/// decoded from (a socket read's) alive as long as the key.
fn key_of(v: &FieldValue) -> Bytes {
    match v.as_bytes() {
        Some(b) => Bytes::copy_from_slice(b),
        None => match v.as_i64() {
            Some(i) => Bytes::from(i.to_string()),
            None => Bytes::from(format!("{v:?}")),
        },
    }
}

impl DedupCache {
    /// The cache an exchange's (checked) arguments describe.
    pub fn from_args(args: &FieldTable) -> DedupCache {
        DedupCache {
            size: args.get(CACHE_SIZE).and_then(positive).unwrap_or(1) as usize,
            ttl: args.get(CACHE_TTL).and_then(positive),
            ..DedupCache::default()
        }
    }

    /// Is the message with these headers a duplicate (at wall-clock `now`
    /// ms)? If not, and it has a key, the key is remembered from now on.
    pub fn is_duplicate(&mut self, headers: Option<&FieldTable>, now: u64) -> bool {
        let Some(h) = headers else { return false };
        let Some(v) = h.get(DEDUP_HEADER) else {
            return false;
        };
        let key = key_of(v);
        if let Some(&(expires, _)) = self.entries.get(&key) {
            if now < expires {
                return true;
            }
        }
        let ttl = h.get(CACHE_TTL).and_then(positive).or(self.ttl);
        let expires = ttl.map_or(u64::MAX, |t| now.saturating_add(t));
        self.seq += 1;
        self.entries.insert(key.clone(), (expires, self.seq));
        self.order.push_back((key, self.seq));
        while self.entries.len() > self.size {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|&(_, s)| s == seq) {
                self.entries.remove(&old);
            }
        }
        // Stale pairs of keys inserted again: keep the queue from growing
        // past twice the cache.
        if self.order.len() > 2 * self.size.max(1) {
            let entries = &self.entries;
            self.order
                .retain(|(k, s)| entries.get(k).is_some_and(|&(_, x)| x == *s));
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(key: &str, ttl: Option<i64>) -> FieldTable {
        let mut t = FieldTable::new();
        t.insert(
            DEDUP_HEADER,
            FieldValue::LongStr(Bytes::from(key.to_string())),
        );
        if let Some(ttl) = ttl {
            t.insert(CACHE_TTL, FieldValue::I64(ttl));
        }
        t
    }

    fn args(size: i64, ttl: Option<i64>) -> FieldTable {
        let mut a = FieldTable::new();
        a.insert(CACHE_SIZE, FieldValue::I64(size));
        if let Some(t) = ttl {
            a.insert(CACHE_TTL, FieldValue::I64(t));
        }
        a
    }

    #[test]
    fn a_repeated_key_is_a_duplicate_until_its_ttl() {
        let mut c = DedupCache::from_args(&args(10, Some(1000)));
        assert!(!c.is_duplicate(Some(&h("a", None)), 0));
        assert!(c.is_duplicate(Some(&h("a", None)), 999));
        assert!(!c.is_duplicate(Some(&h("b", None)), 5));
        assert!(!c.is_duplicate(Some(&h("a", None)), 1000), "expired");
        // The message's own ttl wins.
        assert!(!c.is_duplicate(Some(&h("c", Some(50))), 0));
        assert!(!c.is_duplicate(Some(&h("c", None)), 50));
        // No key, no check.
        assert!(!c.is_duplicate(None, 0));
        assert!(!c.is_duplicate(Some(&FieldTable::new()), 0));
    }

    #[test]
    fn a_full_cache_lets_the_oldest_go() {
        let mut c = DedupCache::from_args(&args(2, None));
        for k in ["a", "b", "c"] {
            assert!(!c.is_duplicate(Some(&h(k, None)), 0));
        }
        assert_eq!(c.entries.len(), 2);
        assert!(c.is_duplicate(Some(&h("c", None)), 0));
        assert!(!c.is_duplicate(Some(&h("a", None)), 0), "pushed out");
        for i in 0..100 {
            let k = format!("k{}", i % 3);
            c.is_duplicate(Some(&h(&k, Some(1))), i * 10);
        }
        assert!(c.order.len() <= 4 + 1);
    }

    #[test]
    fn a_queue_key_is_held_until_its_message_leaves() {
        let mut d = QueueDedup::default();
        let a = Bytes::from_static(b"a");
        assert!(!d.holds(&a, 0));
        d.insert(a.clone(), 1, None);
        assert!(d.holds(&a, 0));
        d.release(2);
        assert!(d.holds(&a, 0));
        d.release(1);
        assert!(!d.holds(&a, 0) && d.keys.is_empty());
        // A time to live: the key counts until then; a later message takes
        // it over, and the first one leaving does not free it.
        d.insert(a.clone(), 3, Some(100));
        assert!(d.holds(&a, 99) && !d.holds(&a, 100));
        d.insert(a.clone(), 4, None);
        d.release(3);
        assert!(d.holds(&a, 1000));
        // A purge keeps the keys of taken messages only.
        let b = Bytes::from_static(b"b");
        d.insert(b.clone(), 5, None);
        d.set_out(5, true);
        d.purge();
        assert!(!d.holds(&a, 0) && d.holds(&b, 0));
        assert_eq!(d.key_bytes, 1);
        assert!(d.memory() > 1);
        d.set_out(5, false);
        d.purge();
        assert!(d.keys.is_empty());
        assert_eq!(d.key_bytes, 0);
        assert!(queue_enabled(&FieldValue::Bool(true)));
        assert!(!queue_enabled(&FieldValue::Bool(false)));
    }

    #[test]
    fn arguments_are_checked_with_the_plugins_texts() {
        assert!(check_args(&FieldTable::new())
            .unwrap_err()
            .contains("x-cache-size"));
        assert!(check_args(&args(0, None)).is_err());
        assert!(check_args(&args(5, Some(-1)))
            .unwrap_err()
            .contains("x-cache-ttl"));
        assert!(check_args(&args(5, Some(10))).is_ok());
        let mut a = args(5, None);
        a.insert(CACHE_SIZE, FieldValue::LongStr(Bytes::from_static(b"5")));
        assert!(
            check_args(&a).is_ok(),
            "a numeric string, as the plugin's examples send"
        );
        a.insert(
            CACHE_PERSISTENCE,
            FieldValue::LongStr(Bytes::from_static(b"disk")),
        );
        assert!(check_args(&a).is_err());
        a.insert(
            CACHE_PERSISTENCE,
            FieldValue::LongStr(Bytes::from_static(b"memory")),
        );
        assert!(check_args(&a).is_ok());
    }
}
