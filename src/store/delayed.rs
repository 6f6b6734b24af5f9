//! Messages held by `x-delayed-message` exchanges until their delay has
//! passed (see `crate::broker::delayed` for the semantics).
//!
//! # Design
//!
//! A million pending delays must not cost a million messages of memory,
//! so with a data directory the messages live in time-bucketed,
//! append-only files, `data_dir/delayed/<N>.dly`, one per second of due
//! time (`N` = due wall-clock ms / [`BUCKET_MS`]). In memory there is:
//!
//! - per bucket that still has messages, a few counters (messages still
//!   to route, bytes written, records not yet written, the last routed
//!   message): about a hundred bytes per second of due time in use,
//!   whatever the number of messages in it;
//! - the messages of the buckets coming due (the current second and the
//!   next, [`LOOKAHEAD_MS`]), read back whole when their bucket comes
//!   within the look-ahead, ordered exactly by due time, then publish
//!   order (a sequence number).
//!
//! A message held for a bucket already read is added to both. Records are
//! buffered per bucket and written at the end of the loop turn; the group
//! commit syncs them (after the message store: see `Engine::commit`), so
//! a publisher confirm of a persistent delayed message comes once its
//! record is on disk. Up to [`SYNC_EACH`] files are synced one by one,
//! more with one `syncfs` (a batch of publishes with delays spread over a
//! minute touches sixty files: one `syncfs` instead of sixty
//! `fdatasync`s made publishing ten times faster here). When a bucket has
//! been routed completely and its second has passed, its file is deleted
//! after the next commit (which made the routed copies durable); a bucket
//! routed in part gets a marker record (the last routed message) at the
//! next commit, so a restart does not route those again. Routing asks for
//! such a commit at most every [`MARK_EVERY`]: a crash may route again
//! what was routed in the last 200 ms (at least once, never lost). All of
//! this is for persistent messages: records of transient ones are written
//! to the same files but never synced, their routing asks for no commit,
//! and a file that only ever held transient messages is deleted without
//! one (a deletion is never synced: a file that comes back after a crash
//! says, by its synced markers, that it was routed).
//!
//! Each record is `len u32 | crc32c u32 | payload` (CRC-32C of the
//! payload). Payload: `kind u8` (1 message, 2 marker) `| due u64 | seq
//! u64`, then for a message `delay u32 | flags u8 (1: persistent) |
//! priority u8 | ttl u64 (u64::MAX: none) | vhost u16-prefixed | exchange
//! u8-prefixed | routing key u8-prefixed | header u32-prefixed | body
//! u32-prefixed`. At start every file is read once to count its messages
//! (nothing of them is kept): a record running past the end of its file
//! (a torn write) is cut off, one whose checksum fails is skipped and
//! logged, and what the markers say was routed is not counted. Messages
//! whose time passed while the broker was down are routed at once, in
//! due order.
//!
//! Without a data directory everything is held in memory, in the same
//! ordered map.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use log::{error, info, warn};

use super::crc::crc32c;
use super::disk::{Disk, Faults};

/// Width of a bucket of due times, milliseconds.
pub const BUCKET_MS: u64 = 1000;
/// How far ahead of its start a bucket is read into memory.
pub const LOOKAHEAD_MS: u64 = 1000;
/// Files written and not yet synced kept open at most; beyond, the next
/// sync is one `syncfs`.
const MAX_OPEN: usize = 64;
/// How long routed messages may wait for a commit to record them (and to
/// delete finished files) when nothing else asks for one: a commit per
/// loop turn would hold every turn's output behind its syncs.
const MARK_EVERY: Duration = Duration::from_millis(200);
/// Messages read ahead into memory at most (a bucket is read whole, so
/// this is exceeded by at most one bucket).
const NEAR_CAP: usize = 65_536;
/// Files synced one by one at most; more are synced with one `syncfs`.
const SYNC_EACH: usize = 8;
/// Memory a message in `near` takes besides its bytes: its map entry.
const NEAR_ENTRY: u64 = 160;
/// Longest record accepted when reading back (a damaged length beyond it
/// ends the file).
const MAX_RECORD: usize = 1 << 30;

/// A message held until its due time.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// Its vhost.
    pub vhost: Bytes,
    /// The delay it was published with (ms).
    pub delay: u32,
    /// Exchange published to.
    pub exchange: Bytes,
    /// Routing key.
    pub routing_key: Bytes,
    /// Raw content header.
    pub header: Bytes,
    /// Body.
    pub body: Bytes,
    /// delivery_mode 2.
    pub persistent: bool,
    /// Priority property.
    pub priority: u8,
    /// Per-message TTL (ms).
    pub ttl: Option<u64>,
}

impl Held {
    /// Its bytes (header, body, names).
    fn size(&self) -> u64 {
        (self.vhost.len()
            + self.exchange.len()
            + self.routing_key.len()
            + self.header.len()
            + self.body.len()) as u64
    }
}

/// One bucket's bookkeeping.
#[derive(Debug, Default)]
struct Bucket {
    /// Messages in it not yet routed.
    count: u64,
    /// Bytes of its file written.
    len: u64,
    /// Records not yet written.
    buf: Vec<u8>,
    /// The last message routed from it (due, seq), when a marker for it
    /// is still to be written.
    marker: Option<(u64, u64)>,
    /// Routed completely and its second passed: in `done`.
    retiring: bool,
    /// It held a persistent message: its file is synced, and deleted only
    /// after a commit.
    durable: bool,
    /// Records of persistent messages (or their markers) not yet synced.
    unsynced: bool,
}

/// The held messages (see the module documentation).
#[derive(Debug)]
pub struct DelayStore {
    /// `data_dir/delayed` (None: in memory).
    dir: Option<PathBuf>,
    disk: Disk,
    /// Buckets with messages, or with something to write.
    buckets: BTreeMap<u64, Bucket>,
    /// Every bucket below this one has been read into `near`.
    loaded_below: u64,
    /// The messages of the read buckets: (due, seq) → message.
    near: BTreeMap<(u64, u64), Held>,
    /// The next sequence number.
    seq: u64,
    /// Messages held in all.
    pending: u64,
    /// Bytes of the messages in `near` (headers, bodies, names).
    near_bytes: u64,
    /// Buckets with records or a marker to write.
    dirty: Vec<u64>,
    /// Files written since the last sync.
    unsynced: Vec<File>,
    /// More files were written than kept open: sync the file system.
    sync_all: bool,
    /// Files created or removed since the last sync of the directory.
    dir_changed: bool,
    /// Buckets routed completely: their files go after the next sync.
    done: Vec<u64>,
    /// Persistent messages were routed since the last sync (markers to
    /// write and sync).
    marked: bool,
    /// A bucket in `done` held persistent messages.
    done_durable: bool,
    /// When the last sync was.
    last_sync: Option<Instant>,
}

fn file_name(dir: &Path, bucket: u64) -> PathBuf {
    dir.join(format!("{bucket}.dly"))
}

/// Append one record (`payload` after its length and checksum).
fn put_record(out: &mut Vec<u8>, payload: &[u8]) {
    out.put_u32(payload.len() as u32);
    out.put_u32(crc32c(payload));
    out.extend_from_slice(payload);
}

fn message_payload(due: u64, seq: u64, h: &Held) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + h.header.len() + h.body.len());
    p.put_u8(1);
    p.put_u64(due);
    p.put_u64(seq);
    p.put_u32(h.delay);
    p.put_u8(u8::from(h.persistent));
    p.put_u8(h.priority);
    p.put_u64(h.ttl.unwrap_or(u64::MAX));
    let vhost = h.vhost.get(..u16::MAX as usize).unwrap_or(&h.vhost);
    p.put_u16(vhost.len() as u16);
    p.extend_from_slice(vhost);
    for s in [&h.exchange, &h.routing_key] {
        let s = s.get(..255).unwrap_or(s);
        p.put_u8(s.len() as u8);
        p.extend_from_slice(s);
    }
    for s in [&h.header, &h.body] {
        p.put_u32(s.len() as u32);
        p.extend_from_slice(s);
    }
    p
}

/// What a record holds.
#[derive(Debug)]
enum Record {
    Message(u64, u64, Held),
    Marker(u64, u64),
}

fn parse_payload(p: Bytes) -> Option<Record> {
    let mut p = p;
    let take = |p: &mut Bytes, n: usize| -> Option<Bytes> { (p.len() >= n).then(|| p.split_to(n)) };
    if p.len() < 17 {
        return None;
    }
    let kind = p.get_u8();
    let due = p.get_u64();
    let seq = p.get_u64();
    if kind == 2 {
        return Some(Record::Marker(due, seq));
    }
    if kind != 1 || p.len() < 4 + 1 + 1 + 8 + 2 {
        return None;
    }
    let delay = p.get_u32();
    let persistent = p.get_u8() & 1 != 0;
    let priority = p.get_u8();
    let ttl = Some(p.get_u64()).filter(|&t| t != u64::MAX);
    let n = usize::from(p.get_u16());
    let vhost = take(&mut p, n)?;
    let n = usize::from(*p.first()?);
    p.advance(1);
    let exchange = take(&mut p, n)?;
    let n = usize::from(*p.first()?);
    p.advance(1);
    let routing_key = take(&mut p, n)?;
    if p.len() < 4 {
        return None;
    }
    let n = p.get_u32() as usize;
    let header = take(&mut p, n)?;
    if p.len() < 4 {
        return None;
    }
    let n = p.get_u32() as usize;
    let body = take(&mut p, n)?;
    Some(Record::Message(
        due,
        seq,
        Held {
            vhost,
            delay,
            exchange,
            routing_key,
            header,
            body,
            persistent,
            priority,
            ttl,
        },
    ))
}

/// The records of a bucket file: the valid ones, the length up to the end
/// of the last whole record (what follows is torn), and how many records
/// failed their checksum.
fn parse_file(data: Bytes) -> (Vec<Record>, usize, usize) {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut bad = 0usize;
    let be32 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    while let (Some(len), Some(crc)) = (be32(at), be32(at + 4)) {
        let len = len as usize;
        let end = at + 8 + len;
        if len > MAX_RECORD || end > data.len() {
            break;
        }
        let payload = data.slice(at + 8..end);
        match (crc32c(&payload) == crc)
            .then(|| parse_payload(payload))
            .flatten()
        {
            Some(r) => out.push(r),
            None => bad += 1,
        }
        at = end;
    }
    (out, at, bad)
}

/// The messages of a bucket not yet routed (after its last marker), in
/// order.
fn unrouted(records: Vec<Record>) -> Vec<(u64, u64, Held)> {
    let routed = records
        .iter()
        .filter_map(|r| match r {
            Record::Marker(d, s) => Some((*d, *s)),
            Record::Message(..) => None,
        })
        .max();
    records
        .into_iter()
        .filter_map(|r| match r {
            Record::Message(d, s, h) if routed.is_none_or(|m| (d, s) > m) => Some((d, s, h)),
            _ => None,
        })
        .collect()
}

impl DelayStore {
    /// Everything in memory.
    pub fn in_memory() -> DelayStore {
        DelayStore {
            dir: None,
            disk: Disk::default(),
            buckets: BTreeMap::new(),
            loaded_below: u64::MAX,
            near: BTreeMap::new(),
            seq: 0,
            pending: 0,
            near_bytes: 0,
            dirty: Vec::new(),
            unsynced: Vec::new(),
            sync_all: false,
            dir_changed: false,
            done: Vec::new(),
            marked: false,
            done_durable: false,
            last_sync: None,
        }
    }

    /// Open `data_dir/delayed` (created if missing) and count what its
    /// files hold (see the module documentation).
    pub fn open(data_dir: &Path, faults: Option<Arc<Faults>>) -> io::Result<DelayStore> {
        let dir = data_dir.join("delayed");
        let disk = Disk::new(faults);
        disk.create_dir_all(&dir)?;
        let mut s = DelayStore {
            dir: Some(dir.clone()),
            disk,
            loaded_below: 0,
            ..DelayStore::in_memory()
        };
        let mut names: Vec<(u64, u64)> = s
            .disk
            .list(&dir)?
            .into_iter()
            .filter_map(|(n, len)| Some((n.strip_suffix(".dly")?.parse().ok()?, len)))
            .collect();
        names.sort_unstable();
        let (mut cut, mut skipped) = (0u64, 0usize);
        for (b, size) in names {
            let path = file_name(&dir, b);
            let data = Bytes::from(s.disk.read(&path)?);
            let (records, good, bad) = parse_file(data);
            skipped += bad;
            let max_seq = records
                .iter()
                .map(|r| match r {
                    Record::Message(_, q, _) | Record::Marker(_, q) => *q,
                })
                .max();
            if let Some(q) = max_seq {
                s.seq = s.seq.max(q + 1);
            }
            let count = unrouted(records).len() as u64;
            if count == 0 {
                s.disk.remove(&path, size)?;
                s.dir_changed = true;
                continue;
            }
            if (good as u64) < size {
                cut += size - good as u64;
                let f = s.disk.open_rw(&path)?;
                s.disk.truncate(&f, good as u64, size - good as u64)?;
                s.disk.sync_data(&f)?;
            }
            s.pending += count;
            s.buckets.insert(
                b,
                Bucket {
                    count,
                    len: good as u64,
                    ..Bucket::default()
                },
            );
        }
        if cut > 0 {
            warn!("delayed messages: cut {cut} bytes of torn records at the ends of their files");
        }
        if skipped > 0 {
            error!("delayed messages: {skipped} damaged records skipped (checksum)");
        }
        if s.pending > 0 {
            info!(
                "delayed messages: {} held in {} files",
                s.pending,
                s.buckets.len()
            );
        }
        Ok(s)
    }

    /// Messages held.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Bytes of memory the held messages take (those read ahead, or all of
    /// them without a data directory), for the memory alarm.
    pub fn memory(&self) -> u64 {
        self.near_bytes + self.near.len() as u64 * NEAR_ENTRY
    }

    /// Nothing held, nothing to retire.
    pub fn is_idle(&self) -> bool {
        self.pending == 0 && self.buckets.is_empty() && self.near.is_empty()
    }

    /// Messages held in memory (those coming due, or all of them without
    /// a data directory).
    #[cfg(test)]
    pub fn in_memory_count(&self) -> usize {
        self.near.len()
    }

    /// Hold a message until `due` (wall-clock ms). True when it goes to a
    /// file (written at the end of the turn, synced by the group commit).
    pub fn hold(&mut self, due: u64, h: Held) -> bool {
        let seq = self.seq;
        self.seq += 1;
        self.pending += 1;
        if self.dir.is_none() {
            self.near_bytes += h.size();
            self.near.insert((due, seq), h);
            return false;
        }
        let b = due / BUCKET_MS;
        let bucket = self.buckets.entry(b).or_default();
        if bucket.buf.is_empty() && bucket.marker.is_none() {
            self.dirty.push(b);
        }
        bucket.count += 1;
        bucket.durable |= h.persistent;
        bucket.unsynced |= h.persistent;
        put_record(&mut bucket.buf, &message_payload(due, seq, &h));
        if b < self.loaded_below {
            self.near_bytes += h.size();
            self.near.insert((due, seq), h);
        }
        true
    }

    /// When (wall-clock ms) [`DelayStore::take_due`] has something to do:
    /// the first message's due time, or a bucket's to read ahead.
    pub fn next_due(&self) -> Option<u64> {
        let first = self.near.keys().next().map(|k| k.0);
        if self.near.len() >= NEAR_CAP {
            // Nothing more is read ahead until these have gone.
            return first;
        }
        let read = self
            .buckets
            .range(self.loaded_below..)
            .next()
            .map(|(b, _)| (b * BUCKET_MS).saturating_sub(LOOKAHEAD_MS));
        match (first, read) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next message due at `now` (wall-clock ms), in due order, then
    /// publish order (call [`DelayStore::read_ahead`] first). Every message
    /// in memory is due before any of a bucket not read yet, so a bucket
    /// is read here only when memory has nothing due: a backlog (after a
    /// restart) is read one bucket at a time.
    pub fn take_due(&mut self, now: u64) -> Option<Held> {
        loop {
            match self.near.first_key_value() {
                Some((k, _)) if k.0 <= now => break,
                Some(_) => return None,
                None => {
                    if !self.read_next(now / BUCKET_MS + 1) {
                        return None;
                    }
                }
            }
        }
        let ((due, seq), h) = self.near.pop_first()?;
        self.pending = self.pending.saturating_sub(1);
        self.near_bytes = self.near_bytes.saturating_sub(h.size());
        if self.dir.is_none() {
            return Some(h);
        }
        let b = due / BUCKET_MS;
        if let Some(bucket) = self.buckets.get_mut(&b) {
            bucket.count = bucket.count.saturating_sub(1);
            if bucket.buf.is_empty() && bucket.marker.is_none() {
                self.dirty.push(b);
            }
            bucket.marker = Some((due, seq));
            bucket.unsynced |= h.persistent;
        }
        // Only a persistent message's routing asks for a commit.
        self.marked |= h.persistent;
        Some(h)
    }

    /// Read the next bucket not read yet if it is below bucket `below`.
    fn read_next(&mut self, below: u64) -> bool {
        let Some(dir) = self.dir.clone() else {
            return false;
        };
        if self.loaded_below >= below {
            return false;
        }
        let Some((&b, _)) = self.buckets.range(self.loaded_below..below).next() else {
            return false;
        };
        self.load(&dir, b);
        self.loaded_below = b + 1;
        true
    }

    /// Read the buckets that come within the look-ahead into memory (while
    /// fewer than [`NEAR_CAP`] messages are there), and retire those routed
    /// completely whose second has passed. Once per timer run, before
    /// [`DelayStore::take_due`].
    pub fn read_ahead(&mut self, now: u64) {
        if self.dir.is_none() {
            return;
        }
        let horizon = (now + LOOKAHEAD_MS) / BUCKET_MS + 1;
        while self.near.len() < NEAR_CAP && self.read_next(horizon) {}
        if self
            .buckets
            .range(self.loaded_below..horizon)
            .next()
            .is_none()
        {
            self.loaded_below = self.loaded_below.max(horizon);
        }
        let over: Vec<u64> = self
            .buckets
            .range(..now / BUCKET_MS)
            .filter(|(_, k)| k.count == 0 && !k.retiring)
            .map(|(b, _)| *b)
            .collect();
        for b in over {
            if let Some(k) = self.buckets.get_mut(&b) {
                if !k.retiring {
                    k.retiring = true;
                    self.done_durable |= k.durable;
                    self.done.push(b);
                }
            }
        }
    }

    /// Read one bucket's messages (its file and what is not written yet).
    fn load(&mut self, dir: &Path, b: u64) {
        let Some(bucket) = self.buckets.get(&b) else {
            return;
        };
        let mut data = if bucket.len > 0 {
            match self.disk.read(&file_name(dir, b)) {
                Ok(d) => d,
                Err(e) => {
                    error!("delayed messages: cannot read bucket {b}: {e}; its messages are lost");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        data.truncate(bucket.len as usize);
        data.extend_from_slice(&bucket.buf);
        let (records, _, bad) = parse_file(Bytes::from(data));
        if bad > 0 {
            error!("delayed messages: {bad} damaged records skipped in bucket {b}");
        }
        let msgs = unrouted(records);
        let lost = bucket.count.saturating_sub(msgs.len() as u64);
        if lost > 0 {
            self.pending = self.pending.saturating_sub(lost);
        }
        if let Some(k) = self.buckets.get_mut(&b) {
            k.count = msgs.len() as u64;
        }
        for (d, s, h) in msgs {
            self.near_bytes += h.size();
            self.near.insert((d, s), h);
        }
    }

    /// True when a sync is due to retire files or record routed messages
    /// (at most every [`MARK_EVERY`]; a commit asked for by anything else
    /// records them too).
    pub fn wants_sync(&self, now: Instant) -> bool {
        (self.done_durable || self.marked)
            && self
                .last_sync
                .is_none_or(|t| now.saturating_duration_since(t) >= MARK_EVERY)
    }

    /// Write what was held since the last call. With `sync` (the group
    /// commit, after the message store was synced): also the markers of
    /// routed messages, then sync, then delete the files of buckets routed
    /// completely.
    pub fn flush(&mut self, sync: bool, now: Instant) -> io::Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let mut result = Ok(());
        let mut again = Vec::new();
        for b in std::mem::take(&mut self.dirty) {
            let Some(bucket) = self.buckets.get_mut(&b) else {
                continue;
            };
            if sync {
                if let Some((d, s)) = bucket.marker.take() {
                    let mut p = Vec::with_capacity(17);
                    p.put_u8(2);
                    p.put_u64(d);
                    p.put_u64(s);
                    put_record(&mut bucket.buf, &p);
                }
            }
            if bucket.buf.is_empty() {
                if bucket.marker.is_some() {
                    again.push(b);
                }
                continue;
            }
            let path = file_name(&dir, b);
            let written = (|| {
                let f = self.disk.open_or_create(&path)?;
                let (n, r) = self.disk.write_at(&f, &bucket.buf, bucket.len, bucket.len);
                r?;
                if n < bucket.buf.len() {
                    return Err(io::Error::from(io::ErrorKind::WriteZero));
                }
                Ok(f)
            })();
            match written {
                Ok(f) => {
                    // Only what a persistent message needs is synced (a
                    // transient one has no promise to keep).
                    if bucket.unsynced {
                        bucket.unsynced = false;
                        if bucket.len == 0 {
                            self.dir_changed = true;
                        }
                        if self.unsynced.len() < MAX_OPEN {
                            self.unsynced.push(f);
                        } else {
                            self.sync_all = true;
                        }
                    }
                    bucket.len += bucket.buf.len() as u64;
                    bucket.buf = Vec::new();
                    if bucket.marker.is_some() {
                        again.push(b);
                    }
                }
                Err(e) => {
                    // Written again, at the same offset, next time.
                    again.push(b);
                    result = Err(e);
                }
            }
        }
        self.dirty = again;
        result?;
        if !sync {
            // Files of transient messages alone go without a commit.
            self.remove_done(&dir, false);
            return Ok(());
        }
        if self.sync_all || self.unsynced.len() > SYNC_EACH {
            let d = self.disk.open_dir(&dir)?;
            self.disk.sync_fs(&d)?;
        } else {
            for f in &self.unsynced {
                self.disk.sync_data(f)?;
            }
        }
        self.unsynced.clear();
        self.sync_all = false;
        self.marked = false;
        self.last_sync = Some(now);
        if self.dir_changed {
            let d = self.disk.open_dir(&dir)?;
            self.disk.sync_dir(&d)?;
            self.dir_changed = false;
        }
        self.remove_done(&dir, true);
        Ok(())
    }

    /// Delete the files of the buckets routed completely (`durable`: also
    /// those that held persistent messages, after a commit). A deletion is
    /// not synced: a file that comes back after a crash has its markers
    /// synced, says it was routed, and is deleted at the start.
    fn remove_done(&mut self, dir: &Path, durable: bool) {
        let mut keep = Vec::new();
        for b in std::mem::take(&mut self.done) {
            let Some(k) = self.buckets.get(&b) else {
                continue;
            };
            if k.durable && !durable {
                keep.push(b);
                continue;
            }
            let len = k.len;
            self.buckets.remove(&b);
            if len > 0 {
                match self.disk.remove(&file_name(dir, b), len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => warn!("delayed messages: cannot remove bucket {b}: {e}"),
                }
            }
        }
        self.done_durable = !keep.is_empty();
        self.done = keep;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn held(body: &str) -> Held {
        Held {
            vhost: Bytes::from_static(b"/"),
            delay: 10,
            exchange: Bytes::from_static(b"x"),
            routing_key: Bytes::from_static(b"k"),
            header: Bytes::from_static(b"hdr"),
            body: Bytes::from(body.to_string()),
            persistent: true,
            priority: 3,
            ttl: Some(5),
        }
    }

    fn drain(s: &mut DelayStore, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        s.read_ahead(now);
        while let Some(h) = s.take_due(now) {
            out.push(String::from_utf8(h.body.to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn buckets_come_back_in_order_after_a_reopen_and_are_removed_when_routed() {
        let d = std::env::temp_dir().join(format!("warren-delayed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut s = DelayStore::open(&d, None).unwrap();
        let t = 1_000_000u64;
        assert!(s.hold(t + 5_500, held("c")));
        assert!(s.hold(t + 2_000, held("a")));
        assert!(s.hold(t + 5_400, held("b")));
        assert!(s.hold(t + 9_000, held("d")));
        s.flush(true, Instant::now()).unwrap();
        assert_eq!(s.in_memory_count(), 0, "nothing read before it comes due");
        assert_eq!(drain(&mut s, t + 2_000), ["a"]);
        s.flush(true, Instant::now()).unwrap();
        drop(s);
        let mut s = DelayStore::open(&d, None).unwrap();
        assert_eq!(s.pending(), 3);
        assert_eq!(drain(&mut s, t + 5_450), ["b"]);
        s.flush(true, Instant::now()).unwrap();
        let mut s = DelayStore::open(&d, None).unwrap();
        assert_eq!(s.pending(), 2, "the marker keeps b from coming again");
        assert_eq!(drain(&mut s, t + 20_000), ["c", "d"]);
        assert!(drain(&mut s, t + 20_000).is_empty());
        s.flush(true, Instant::now()).unwrap();
        assert!(drain(&mut s, t + 21_000).is_empty());
        s.flush(true, Instant::now()).unwrap();
        assert_eq!(std::fs::read_dir(d.join("delayed")).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_backlog_is_read_a_bucket_at_a_time_in_order() {
        let d = std::env::temp_dir().join(format!("warren-delayed-backlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut s = DelayStore::open(&d, None).unwrap();
        let t = 3_000_000u64;
        let n = 100_000u64;
        for i in 0..n {
            // Four buckets, published out of due order.
            let due = t + (i * 7_919) % n / 25;
            let mut h = held("");
            h.body = Bytes::from(due.to_be_bytes().to_vec());
            s.hold(due, h);
        }
        s.flush(true, Instant::now()).unwrap();
        drop(s);
        let mut s = DelayStore::open(&d, None).unwrap();
        assert_eq!(s.pending(), n);
        let now = t + 60_000;
        s.read_ahead(now);
        assert!(
            s.in_memory_count() <= NEAR_CAP + 25_000,
            "{}",
            s.in_memory_count()
        );
        let mut last = 0u64;
        let mut most = 0usize;
        for _ in 0..n {
            most = most.max(s.in_memory_count());
            let h = s.take_due(now).unwrap();
            let due = u64::from_be_bytes(h.body[..8].try_into().unwrap());
            assert!(due >= last);
            last = due;
        }
        assert!(most <= NEAR_CAP + 25_000, "{most}");
        assert_eq!(s.take_due(now), None);
        assert_eq!(s.pending(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn transient_messages_ask_for_no_commit() {
        let d =
            std::env::temp_dir().join(format!("warren-delayed-transient-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut s = DelayStore::open(&d, None).unwrap();
        let t = 4_000_000u64;
        let now = Instant::now();
        let mut h = held("t");
        h.persistent = false;
        s.hold(t + 10, h);
        s.flush(false, now).unwrap();
        assert_eq!(drain(&mut s, t + 10), ["t"]);
        assert!(!s.wants_sync(now));
        assert!(drain(&mut s, t + 2_000).is_empty());
        assert!(!s.wants_sync(now));
        s.flush(false, now).unwrap();
        assert_eq!(std::fs::read_dir(d.join("delayed")).unwrap().count(), 0);
        // A persistent one asks for a commit once routed, and its file
        // goes only with one.
        s.hold(t + 3_010, held("p"));
        s.flush(false, now).unwrap();
        assert_eq!(drain(&mut s, t + 3_010), ["p"]);
        assert!(s.wants_sync(now));
        assert!(drain(&mut s, t + 5_000).is_empty());
        s.flush(false, now).unwrap();
        assert_eq!(std::fs::read_dir(d.join("delayed")).unwrap().count(), 1);
        s.flush(true, now).unwrap();
        assert_eq!(std::fs::read_dir(d.join("delayed")).unwrap().count(), 0);
        assert!(!s.wants_sync(now + MARK_EVERY));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn memory_counts_what_is_in_memory() {
        let mut s = DelayStore::in_memory();
        assert_eq!(s.memory(), 0);
        s.hold(10, held("abc"));
        s.hold(20, held("de"));
        let one = held("abc").size() + NEAR_ENTRY;
        assert_eq!(s.memory(), one + held("de").size() + NEAR_ENTRY);
        s.read_ahead(10);
        assert_eq!(
            s.take_due(10).map(|h| h.body),
            Some(Bytes::from_static(b"abc"))
        );
        assert_eq!(s.memory(), held("de").size() + NEAR_ENTRY);
        assert!(s.take_due(20).is_some());
        assert_eq!(s.memory(), 0);
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_flipped_byte_skips_one_record() {
        let d = std::env::temp_dir().join(format!("warren-delayed-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut s = DelayStore::open(&d, None).unwrap();
        let t = 2_000_000u64;
        for (i, b) in ["a", "b", "c"].iter().enumerate() {
            s.hold(t + 100 + i as u64, held(b));
        }
        s.flush(true, Instant::now()).unwrap();
        drop(s);
        let path = d.join("delayed").join(format!("{}.dly", t / BUCKET_MS));
        let mut raw = std::fs::read(&path).unwrap();
        let one = raw.len() / 3;
        raw[one + 20] ^= 0x40; // inside b's payload
        raw.truncate(raw.len() - 3); // c torn
        std::fs::write(&path, &raw).unwrap();
        let mut s = DelayStore::open(&d, None).unwrap();
        assert_eq!(s.pending(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * one as u64);
        assert_eq!(drain(&mut s, t + 1_000), ["a"]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
