//! Recovery: rebuild the live messages of every durable queue from the
//! segment files (a full scan), or from the index a clean shutdown left; and
//! claiming the data directory (lock, format `VERSION`).
//!
//! Damage versus torn tails. A record is `len u32 | crc32c u32 | payload`,
//! with no marker between records. When the record at some offset is not
//! valid (implausible length, runs past the end, checksum mismatch), the
//! scan looks for the next valid record after it in the same segment:
//! - found: the bytes in between are damage. They are skipped, a copy goes
//!   to `msgs/quarantine/NNNNNNNN.seg.OFFSET`, and everything from the valid
//!   record on is kept (an error is logged);
//! - not found: it is the segment's tail (what a crash leaves: a partial
//!   header, a record running past the end, zeros, a half-written last
//!   record). Only the newest segment's tail is truncated, and only after
//!   any non-zero bytes in it are safely copied to the quarantine.
//!
//! Resynchronising tries every later offset, cheapest tests first: the
//! length must fit the segment and suit the kind byte after the header
//! (most garbage fails here), and only then is the checksum computed. A
//! long candidate must also be followed by something that looks like a
//! record boundary, or else it is checked only while a per-segment budget
//! lasts, so garbage inside a large message body cannot make the scan
//! quadratic. A checksum that matches by chance is a 2^-32 event per
//! candidate that gets that far.
//!
//! No record marker was added to the format: a marker can occur inside a
//! message body as well (so the checksum would still decide), it would only
//! make rejecting garbage offsets cheaper, which the length and kind tests
//! already do for all but about one offset in 2^16 of random data; and it
//! would cost a format version with a reader for the old one, and 4 bytes
//! on every record (a sixth more for acks). What a marker cannot fix either:
//! a message body crafted to contain valid records is taken for records if,
//! and only if, the length field of the record holding it is damaged.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{error, warn};

use super::crc::crc32c;
use super::disk::Disk;
use super::spill::{path as spill_path, Batch, Spill, SpillFile};
use super::{
    header, parse_msg, seg_path, CleanQueue, MsgRecord, Recovered, RecoveredMsg, StoreRef,
    FORMAT_VERSION, MAX_RECORD, REC_ACK, REC_DELIVERED, REC_HEADER, REC_MSG, REC_PAGED, REC_PURGE,
};
use crate::codec::reader::Reader;

#[cfg(test)]
mod tests;

/// Live messages per durable queue, by message id.
pub(super) type LiveMap = BTreeMap<u64, BTreeMap<u64, RecoveredMsg>>;

/// Subdirectory of `msgs/` holding copies of damaged bytes.
pub(super) const QUARANTINE: &str = "quarantine";

/// Smallest message record payload: kind, id, queue count, timestamp, TTL,
/// priority, two empty short strings, two empty long strings.
pub(super) const MIN_MSG: usize = 1 + 8 + 2 + 8 + 8 + 1 + 1 + 1 + 4 + 4;

/// Candidates longer than this need a plausible successor (or budget)
/// before their checksum is computed while resynchronising.
const SMALL: usize = 64 << 10;

/// Whether a payload of `len` bytes suits a record of `kind`. Only such
/// offsets are considered while resynchronising: a new record kind must be
/// added here.
fn kind_fits(kind: u8, len: usize) -> bool {
    match kind {
        REC_MSG | REC_PAGED => len >= MIN_MSG,
        REC_ACK | REC_DELIVERED => len == 17,
        REC_PURGE => len == 9,
        _ => false,
    }
}

/// The end of the record at `at` if it is complete and its checksum matches.
fn valid_at(data: &[u8], at: usize) -> Option<usize> {
    let (len, crc) = header(data, at)?;
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let end = at + REC_HEADER + len;
    let payload = data.get(at + REC_HEADER..end)?;
    (crc32c(payload) == crc).then_some(end)
}

/// Whether `at` looks like the start of a record, the end of the data, or
/// the start of a torn or zero-filled tail (cheap, no checksum).
fn boundary_at(data: &[u8], at: usize) -> bool {
    let Some((len, _)) = header(data, at) else {
        return at <= data.len();
    };
    match data.get(at + REC_HEADER) {
        // A zero-filled tail starts with a zero header and kind.
        Some(0) => len == 0 && data.get(at..at + REC_HEADER).is_some_and(|h| h == [0; 8]),
        Some(&kind) => len <= MAX_RECORD && kind_fits(kind, len),
        None => len <= MAX_RECORD,
    }
}

/// Where scanning resumes after the bad record at `bad`: the first later
/// offset holding a valid record, or None when nothing valid follows.
///
/// One exception: when the bad record's own length leads past that offset
/// to a valid record (or exactly to the end), and its checksum does not
/// match the bytes up to that offset (so its length field was not what was
/// hit), that offset lies inside its payload: a message body that happens
/// to contain records. They are not taken; the scan resumes where the
/// length says (or, at the end, the record is the tail).
fn resync(data: &[u8], bad: usize, budget: &mut usize) -> Option<usize> {
    let first = next_valid(data, bad, budget)?;
    let Some((len, crc)) = header(data, bad) else {
        return Some(first);
    };
    let next = bad + REC_HEADER + len.min(MAX_RECORD + 1);
    let length_hit = || {
        data.get(bad + REC_HEADER..first)
            .is_some_and(|b| crc32c(b) == crc)
    };
    if len > MAX_RECORD || next <= first || next > data.len() || length_hit() {
        return Some(first);
    }
    if next == data.len() {
        return None;
    }
    Some(if valid_at(data, next).is_some() {
        next
    } else {
        first
    })
}

/// The first offset after `bad` holding a valid record.
fn next_valid(data: &[u8], bad: usize, budget: &mut usize) -> Option<usize> {
    let last = data.len().checked_sub(REC_HEADER + 9)?;
    for p in bad + 1..=last {
        let Some((len, _)) = header(data, p) else {
            break;
        };
        let Some(&kind) = data.get(p + REC_HEADER) else {
            break;
        };
        if len > MAX_RECORD || !kind_fits(kind, len) || p + REC_HEADER + len > data.len() {
            continue;
        }
        if len > SMALL && !boundary_at(data, p + REC_HEADER + len) {
            if *budget < len {
                continue;
            }
            *budget -= len;
        }
        if valid_at(data, p).is_some() {
            return Some(p);
        }
    }
    None
}

/// What is wrong with the record at `at` (for the log).
fn describe(data: &[u8], at: usize) -> String {
    match header(data, at) {
        None => format!("a partial header ({} bytes)", data.len() - at),
        Some((0, _)) => "a zero length".into(),
        Some((len, _)) if len > MAX_RECORD => format!("an implausible length {len}"),
        Some((len, _)) if at + REC_HEADER + len > data.len() => {
            format!("a record of {len} bytes running past the end")
        }
        Some(_) => "a checksum mismatch".into(),
    }
}

/// The name of the quarantine copy of the bytes at offset `at` of segment `n`.
fn quarantine_name(n: u32, at: usize) -> String {
    format!("{n:08}.seg.{at}")
}

/// Copy `bytes` (damaged, from segment `n` at offset `at`) to the quarantine
/// directory, durably (at start: the damage is about to be cut or skipped).
/// A copy made earlier is kept as it is.
fn quarantine(disk: &Disk, mdir: &Path, n: u32, at: usize, bytes: &[u8]) -> io::Result<PathBuf> {
    let qdir = mdir.join(QUARANTINE);
    let path = qdir.join(quarantine_name(n, at));
    if disk.read(&path).is_ok_and(|old| old == bytes) {
        return Ok(path);
    }
    let fresh_dir = !disk.is_dir(&qdir);
    disk.create_dir_all(&qdir)?;
    disk.replace(&disk.open_dir(&qdir)?, &path, bytes, 0)?;
    if fresh_dir {
        disk.sync_dir(&disk.open_dir(mdir)?)?;
    }
    Ok(path)
}

/// Quarantine copies made inside the loop are synced at most this often.
const SETTLE_EVERY: Duration = Duration::from_secs(1);

/// Copies of damaged records found while messages are read back, inside
/// the loop. Each is written at once, without a sync; they are synced
/// together at the end of the turn ([`Quarantine::settle`], from the group
/// commit) with one `syncfs`, and at most once a second, instead of an
/// fdatasync of the copy and an fsync of its directory per record. A crash
/// before then may lose the last copies or leave them short: they are a
/// best-effort forensic copy (the message itself is dropped either way,
/// and the log says so), unlike the copies recovery makes at start, which
/// are synced before the damage is cut or skipped.
#[derive(Debug, Default)]
pub(super) struct Quarantine {
    /// Copies written since the last settle.
    unsynced: usize,
    /// The quarantine directory, held open once it exists (to sync it).
    dir: Option<File>,
    /// When the copies were last synced.
    settled: Option<Instant>,
}

impl Quarantine {
    /// Copy `bytes` (the damaged record at offset `at` of segment `n` in
    /// `mdir`) to the quarantine, unsynced. A copy made earlier is kept.
    pub fn copy(
        &mut self,
        disk: &Disk,
        mdir: &Path,
        n: u32,
        at: usize,
        bytes: &[u8],
    ) -> io::Result<PathBuf> {
        let qdir = mdir.join(QUARANTINE);
        let path = qdir.join(quarantine_name(n, at));
        if disk.read(&path).is_ok_and(|old| old == bytes) {
            return Ok(path);
        }
        if self.dir.is_none() {
            disk.create_dir_all(&qdir)?;
            self.dir = Some(disk.open_dir(&qdir)?);
        }
        let f = disk.create(&path, 0).inspect_err(|_| {
            // (The directory may have been removed under us.)
            self.dir = None;
        })?;
        self.unsynced += 1;
        let (n, written) = disk.write_at(&f, bytes, 0, 0);
        if let Err(e) = written {
            drop(f);
            let _ = disk.remove(&path, n as u64);
            return Err(e);
        }
        Ok(path)
    }

    /// Sync the copies made since the last time (their data and directory
    /// entries, and the quarantine directory's own when it was created: all
    /// on the file system of `msgs/`), unless that last time was less than
    /// a second before `now` (`None`: a clean stop, sync now). Best effort:
    /// a failure is logged, and those copies are not synced again.
    pub fn settle(&mut self, disk: &Disk, now: Option<Instant>) {
        if self.unsynced == 0 {
            return;
        }
        if let (Some(now), Some(last)) = (now, self.settled) {
            if now.saturating_duration_since(last) < SETTLE_EVERY {
                return;
            }
        }
        self.settled = now;
        let n = std::mem::take(&mut self.unsynced);
        let Some(dir) = self.dir.as_ref() else {
            return;
        };
        if let Err(e) = disk.sync_fs(dir) {
            warn!(
                "cannot sync {n} quarantine copies of damaged records: {e}; they may not survive a crash"
            );
        }
    }
}

/// Rebuilds the live set from records in log order.
struct Replay<'a> {
    disk: &'a Disk,
    live: LiveMap,
    max_id: u64,
    rec: Recovered,
    /// Exchange names and routing keys seen, shared by the messages that
    /// carry them (most of a backlog repeats a few).
    names: std::collections::HashSet<Bytes>,
}

/// Distinct names [`Replay::name`] shares at most.
const NAMES_MAX: usize = 65_536;

impl Replay<'_> {
    /// `b` as a `Bytes`, shared with the messages that carry the same.
    fn name(&mut self, b: &[u8]) -> Bytes {
        if let Some(n) = self.names.get(b) {
            return n.clone();
        }
        let n = Bytes::copy_from_slice(b);
        if self.names.len() < NAMES_MAX {
            self.names.insert(n.clone());
        }
        n
    }

    /// Apply the valid record `payload` found in segment `n` at [off, end).
    fn apply(&mut self, n: u32, off: usize, end: usize, payload: &Bytes) {
        self.rec.records += 1;
        let mut r = Reader::new(payload);
        match r.u8().unwrap_or(0) {
            REC_MSG => {
                let Some(m) = parse_msg(payload) else {
                    self.rec.damaged += 1;
                    error!(
                        "segment {n:08}: message record at offset {off} does not parse; skipped"
                    );
                    return;
                };
                self.max_id = self.max_id.max(m.msg_id);
                let at = StoreRef {
                    msg_id: m.msg_id,
                    seg: n,
                    offset: off as u32,
                    len: (end - off) as u32,
                    durable: true,
                };
                let exchange = self.name(&m.exchange);
                let routing_key = self.name(&m.routing_key);
                for q in m.queues {
                    self.live.entry(q).or_default().insert(
                        m.msg_id,
                        RecoveredMsg {
                            at,
                            delivered: false,
                            size: m.body.len() as u64,
                            exchange: exchange.clone(),
                            routing_key: routing_key.clone(),
                            timestamp: m.timestamp,
                            ttl: m.ttl,
                            priority: m.priority,
                            place: None,
                        },
                    );
                }
            }
            REC_PAGED => {
                if let Ok(id) = r.u64() {
                    self.max_id = self.max_id.max(id);
                }
            }
            REC_ACK => {
                if let (Ok(q), Ok(id)) = (r.u64(), r.u64()) {
                    let known = self.live.get_mut(&q).and_then(|m| m.remove(&id));
                    if known.is_none() {
                        if let Some(c) = self.rec.spilled.get_mut(&q) {
                            c.skip.insert(id);
                        }
                    }
                }
            }
            REC_DELIVERED => {
                if let (Ok(q), Ok(id)) = (r.u64(), r.u64()) {
                    match self.live.get_mut(&q).and_then(|m| m.get_mut(&id)) {
                        Some(m) => m.delivered = true,
                        None => {
                            if let Some(c) = self.rec.spilled.get_mut(&q) {
                                c.seen.insert(id);
                            }
                        }
                    }
                }
            }
            REC_PURGE => {
                if let Ok(q) = r.u64() {
                    self.live.remove(&q);
                    if let Some(c) = self.rec.spilled.get_mut(&q) {
                        c.spills.clear();
                        c.skip.clear();
                        c.seen.clear();
                    }
                }
            }
            k => {
                self.rec.damaged += 1;
                warn!("segment {n:08}: unknown record kind {k} at offset {off}; skipped");
            }
        }
    }

    /// Bytes [from, to) of segment `n` are damage with a valid record at
    /// `to`: skip them, keeping a copy.
    fn damage(&mut self, mdir: &Path, n: u32, data: &[u8], from: usize, to: usize) {
        let bytes = data.get(from..to).unwrap_or_default();
        self.rec.damaged += 1;
        self.rec.damaged_bytes += bytes.len() as u64;
        if bytes.iter().all(|b| *b == 0) {
            warn!(
                "segment {n:08}: {} zero bytes at offset {from}; skipped, resumed at the valid record at offset {to}",
                bytes.len()
            );
            return;
        }
        let why = describe(data, from);
        match quarantine(self.disk, mdir, n, from, bytes) {
            Ok(q) => error!(
                "segment {n:08}: {} damaged bytes at offset {from} ({why}); skipped, resumed at the valid record at offset {to}; copy in {}",
                bytes.len(),
                q.display()
            ),
            Err(e) => error!(
                "segment {n:08}: {} damaged bytes at offset {from} ({why}); skipped, resumed at the valid record at offset {to}; cannot copy them to the quarantine: {e}",
                bytes.len()
            ),
        }
    }

    /// Nothing valid follows offset `from` of segment `n`: a tail. The
    /// newest segment's tail is cut (after any non-zero bytes are copied to
    /// the quarantine); an older segment is left as it is.
    fn tail(
        &mut self,
        mdir: &Path,
        n: u32,
        data: &[u8],
        from: usize,
        newest: bool,
    ) -> io::Result<()> {
        let bytes = data.get(from..).unwrap_or_default();
        self.rec.damaged += 1;
        self.rec.damaged_bytes += bytes.len() as u64;
        let zeros = bytes.iter().all(|b| *b == 0);
        // What a crash leaves: a header or record cut off by the end of the
        // file, or zeros; anything else is damage at the end.
        let torn = zeros
            || match header(data, from) {
                None => true,
                Some((len, _)) => len <= MAX_RECORD && from + REC_HEADER + len > data.len(),
            };
        let why = if zeros {
            format!("{} zero bytes", bytes.len())
        } else {
            format!("{} bytes with {}", bytes.len(), describe(data, from))
        };
        let copy = if zeros {
            None
        } else {
            match quarantine(self.disk, mdir, n, from, bytes) {
                Ok(q) => Some(format!("copy in {}", q.display())),
                Err(e) => {
                    error!(
                        "segment {n:08}: cannot copy the tail at offset {from} to the quarantine: {e}; leaving it in place"
                    );
                    return Ok(());
                }
            }
        };
        let copy = copy.map_or(String::new(), |c| format!("; {c}"));
        let what = if torn { "torn tail" } else { "damaged tail" };
        if newest {
            let f = self.disk.open_rw(&seg_path(mdir, n))?;
            self.disk.truncate(&f, from as u64, 0)?;
            if torn {
                warn!("segment {n:08}: {what} at offset {from} ({why}); truncated{copy}");
            } else {
                error!("segment {n:08}: {what} at offset {from} ({why}); truncated{copy}");
            }
        } else if torn {
            warn!("segment {n:08}: {what} at offset {from} ({why}); skipped{copy}");
        } else {
            error!("segment {n:08}: {what} at offset {from} ({why}); skipped{copy}");
        }
        Ok(())
    }
}

/// Read every segment in order and rebuild the live messages. A bad record
/// followed by valid ones is skipped (the scan resynchronises); a tail with
/// nothing valid in it is cut from the newest segment and skipped elsewhere.
pub(super) fn scan(
    disk: &Disk,
    mdir: &Path,
    numbers: &[u32],
) -> io::Result<(LiveMap, u64, Recovered)> {
    scan_from(
        disk,
        mdir,
        numbers,
        None,
        BTreeMap::new(),
        0,
        Recovered::default(),
    )
}

/// Replay the log from `start` (segment, offset; None: from the first
/// record) onto `live`, the state a checkpoint left (see [`scan`]). Acks
/// and delivery marks of messages not in `live` (spilled ones, read back
/// and settled after the checkpoint) are collected in the result's
/// `spilled` entries (see [`CleanQueue::skip`]); a purge empties a queue's
/// spills too.
pub(super) fn scan_from(
    disk: &Disk,
    mdir: &Path,
    numbers: &[u32],
    start: Option<(u32, u64)>,
    live: LiveMap,
    max_id: u64,
    rec: Recovered,
) -> io::Result<(LiveMap, u64, Recovered)> {
    let mut st = Replay {
        disk,
        live,
        max_id,
        rec,
        names: Default::default(),
    };
    let last = numbers.last().copied();
    for &n in numbers {
        let mut off = 0usize;
        if let Some((seg, at)) = start {
            if n < seg {
                continue;
            }
            if n == seg {
                off = at as usize;
            }
        }
        let data = Bytes::from(disk.read(&seg_path(mdir, n))?);
        st.rec.bytes += data.len().saturating_sub(off) as u64;
        let damaged_before = st.rec.damaged;
        let mut budget = data.len().saturating_mul(2);
        let mut after_damage = 0u64;
        while off < data.len() {
            if let Some(end) = valid_at(&data, off) {
                let payload = data.slice(off + REC_HEADER..end);
                st.apply(n, off, end, &payload);
                if st.rec.damaged > damaged_before {
                    after_damage += 1;
                }
                off = end;
                continue;
            }
            match resync(&data, off, &mut budget) {
                Some(next) => {
                    st.damage(mdir, n, &data, off, next);
                    off = next;
                }
                None => {
                    st.tail(mdir, n, &data, off, Some(n) == last)?;
                    break;
                }
            }
        }
        let regions = st.rec.damaged - damaged_before;
        if regions > 0 && after_damage > 0 {
            error!(
                "segment {n:08}: {regions} damaged region(s) skipped; {after_damage} valid records after the first one kept"
            );
        }
    }
    if st.rec.damaged > 0 {
        error!(
            "store recovery skipped {} damaged or torn region(s), {} bytes in all; every valid record around them was kept (damaged bytes are copied to {})",
            st.rec.damaged,
            st.rec.damaged_bytes,
            mdir.join(QUARANTINE).display()
        );
    }
    Ok((st.live, st.max_id, st.rec))
}

/// The error for the record of stored message `r`: `what` is wrong.
pub(super) fn bad_record(r: &StoreRef, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "record of message {} at offset {} of segment {:08}: {what}",
            r.msg_id, r.offset, r.seg
        ),
    )
}

/// Read the record of stored message `r` (`len` bytes) from its segment
/// `file`; an error says what is wrong with the record.
pub(super) fn read_at(disk: &Disk, file: &File, r: &StoreRef, len: usize) -> io::Result<Bytes> {
    let mut data = vec![0u8; len];
    disk.read_at(file, &mut data, u64::from(r.offset))
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => bad_record(r, "the segment ends before it".into()),
            _ => bad_record(r, format!("cannot read it: {e}")),
        })?;
    Ok(Bytes::from(data))
}

/// The length a stored message's record claims, if a message could be that long.
pub(super) fn plausible_len(r: &StoreRef) -> io::Result<usize> {
    let len = r.len as usize;
    if !(REC_HEADER + MIN_MSG..=REC_HEADER + MAX_RECORD).contains(&len) {
        return Err(bad_record(r, format!("implausible length {len}")));
    }
    Ok(len)
}

/// Check that `data` is the whole record of stored message `r`: length,
/// checksum, kind, id; or say what is wrong with it.
pub(super) fn check_record(data: &Bytes, r: &StoreRef) -> Result<MsgRecord, String> {
    let (hlen, crc) = header(data, 0).ok_or("no header")?;
    let payload = data.slice(REC_HEADER..);
    if hlen != payload.len() {
        return Err(format!(
            "its length field says {hlen}, not {}",
            payload.len()
        ));
    }
    if crc != crc32c(&payload) {
        return Err("checksum mismatch".into());
    }
    let kind = if r.durable { REC_MSG } else { REC_PAGED };
    if payload.first() != Some(&kind) {
        return Err(format!("kind {:?}, not {kind}", payload.first()));
    }
    let m = parse_msg(&payload).ok_or("does not parse")?;
    if m.msg_id != r.msg_id {
        return Err(format!("it holds message {}", m.msg_id));
    }
    Ok(m)
}

pub(super) const CLEAN: &str = "CLEAN";
/// The index of the last checkpoint (see `Store::checkpoint`).
pub(super) const CHECKPOINT: &str = "CHECKPOINT";
/// First bytes of a clean-stop index with places and spills (older ones,
/// which start with a message id, are not used: the store is scanned).
pub(super) const CLEAN_MAGIC: &[u8; 8] = b"WCLEAN2\0";

/// The index a clean shutdown left, if any (and valid). It is removed as it
/// is read, so a crash after this start scans again. Every record it points
/// at must lie within its segment (`sizes`: segment number to file size),
/// else the segments changed after the clean stop and the caller scans;
/// the records themselves are verified when they are read back.
pub(super) fn load_clean(
    disk: &Disk,
    mdir: &Path,
    sizes: &BTreeMap<u32, u64>,
    spill_dir: &Path,
    name: &str,
) -> Option<Index> {
    let path = mdir.join(name);
    let data = disk.read(&path).ok()?;
    if name == CLEAN {
        let _ = disk.remove(&path, data.len() as u64);
        let _ = disk.open_dir(mdir).and_then(|d| disk.sync_dir(&d));
    }
    let crc = u32::from_be_bytes(data.get(..4)?.try_into().ok()?);
    let body = Bytes::copy_from_slice(data.get(4..)?);
    if crc32c(&body) != crc {
        warn!("clean shutdown marker fails its checksum; scanning the store");
        return None;
    }
    if !body.starts_with(CLEAN_MAGIC) {
        warn!("clean shutdown index of an older version; scanning the store");
        return None;
    }
    let mut r = Reader::new(&body);
    r.take(CLEAN_MAGIC.len()).ok()?;
    let from_seg = r.u32().ok()?;
    let from_off = r.u64().ok()?;
    let replay_from = (from_seg != u32::MAX).then_some((from_seg, from_off));
    let max_id = r.u64().ok()?;
    let n = r.u64().ok()?;
    let mut live: LiveMap = BTreeMap::new();
    for _ in 0..n {
        let q = r.u64().ok()?;
        let msg_id = r.u64().ok()?;
        let seg = r.u32().ok()?;
        let offset = r.u32().ok()?;
        let len = r.u32().ok()?;
        let delivered = r.u8().ok()? != 0;
        let size = r.u64().ok()?;
        let timestamp = r.u64().ok()?;
        let ttl = Some(r.u64().ok()?).filter(|t| *t != u64::MAX);
        let priority = r.u8().ok()?;
        let exchange = Bytes::copy_from_slice(&r.shortstr().ok()?);
        let routing_key = Bytes::copy_from_slice(&r.shortstr().ok()?);
        let seq = r.u64().ok()?;
        let behind = r.u8().ok()? != 0;
        let fits = (REC_HEADER + MIN_MSG..=REC_HEADER + MAX_RECORD).contains(&(len as usize))
            && sizes
                .get(&seg)
                .is_some_and(|size| u64::from(offset) + u64::from(len) <= *size);
        if !fits {
            error!(
                "clean shutdown index: message {msg_id} at offset {offset} (+{len} bytes) of segment {seg:08} lies outside the segment ({}); the store changed after the clean stop: scanning it instead",
                sizes
                    .get(&seg)
                    .map_or("missing".to_string(), |s| format!("{s} bytes"))
            );
            return None;
        }
        let at = StoreRef {
            msg_id,
            seg,
            offset,
            len,
            durable: true,
        };
        live.entry(q).or_default().insert(
            msg_id,
            RecoveredMsg {
                at,
                delivered,
                size,
                exchange,
                routing_key,
                timestamp,
                ttl,
                priority,
                place: (seq != u64::MAX).then_some((seq, behind)),
            },
        );
    }
    let mut spilled = HashMap::new();
    let nq = r.u64().ok()?;
    for _ in 0..nq {
        let q = r.u64().ok()?;
        let next_seq = r.u64().ok()?;
        let mut c = CleanQueue {
            next_seq,
            ..CleanQueue::default()
        };
        for _ in 0..r.u32().ok()? {
            let level = r.u8().ok()?;
            let mut sp = Spill {
                durable_only: true,
                ..Spill::default()
            };
            for _ in 0..r.u32().ok()? {
                let mut f = SpillFile {
                    id: r.u64().ok()?,
                    read: r.u64().ok()?,
                    len: r.u64().ok()?,
                    batches: Default::default(),
                    refs: Default::default(),
                };
                for _ in 0..r.u32().ok()? {
                    let b = Batch {
                        len: r.u32().ok()?,
                        count: r.u32().ok()?,
                        bytes: r.u64().ok()?,
                        durable: (0, 0),
                    };
                    sp.count += u64::from(b.count);
                    sp.bytes += b.bytes;
                    f.batches.push_back(Batch {
                        durable: (b.count, b.bytes),
                        ..b
                    });
                }
                for _ in 0..r.u32().ok()? {
                    let seg = r.u32().ok()?;
                    let n = r.u32().ok()?;
                    if !sizes.contains_key(&seg) {
                        error!("clean shutdown index: spilled messages refer to segment {seg:08}, which is missing: scanning the store instead");
                        return None;
                    }
                    f.refs.push_back((seg, true, n));
                }
                let on_disk = disk.size(&spill_path(spill_dir, f.id)).unwrap_or(0);
                if on_disk < f.len {
                    error!(
                        "clean shutdown index: spill file {:016} has {on_disk} bytes, not {}: scanning the store instead",
                        f.id, f.len
                    );
                    return None;
                }
                sp.files.push_back(f);
            }
            c.spills.push((level, sp));
        }
        spilled.insert(q, c);
    }
    Some(Index {
        live,
        max_id,
        spilled,
        replay_from,
    })
}

/// What an index (clean stop or checkpoint) holds.
pub(super) struct Index {
    /// Durable messages in memory (or unacknowledged), by queue.
    pub live: LiveMap,
    /// The highest message id then.
    pub max_id: u64,
    /// Durable queues with spills.
    pub spilled: HashMap<u64, CleanQueue>,
    /// A checkpoint: the log from here on is to be replayed.
    pub replay_from: Option<(u32, u64)>,
}

/// Name of the file naming the process that holds the data directory.
const LOCK: &str = "LOCK";
/// Name of the format version file.
const VERSION: &str = "VERSION";

/// Holds a data directory for this process while it lives: an exclusive
/// `flock` on the directory itself (which cannot be deleted under a running
/// broker, unlike a file in it), and one on the `LOCK` file, which is what
/// older versions lock and where the holder's pid is written for humans.
#[derive(Debug)]
pub(super) struct DirLock {
    _dir: File,
    _file: Option<File>,
}

/// Create (if needed) and lock the data directory `dir` for this process,
/// and check (or, on first start, write) its format `VERSION`.
pub(super) fn claim_dir(disk: &Disk, dir: &Path) -> io::Result<DirLock> {
    let ctx = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("data directory {}: {what}: {e}", dir.display()),
        )
    };
    disk.create_dir_all(dir)
        .map_err(|e| ctx("cannot create it", e))?;
    let in_use = || {
        let pid = disk
            .read(&dir.join(LOCK))
            .ok()
            .and_then(|s| String::from_utf8_lossy(&s).trim().parse::<u32>().ok())
            .map_or(String::new(), |p| format!(" (pid {p})"));
        io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "data directory {} is in use by another broker{pid}; refusing to start a second broker on it",
                dir.display()
            ),
        )
    };
    let dir_file = disk.open_dir(dir).map_err(|e| ctx("cannot open it", e))?;
    match dir_file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(in_use()),
        // Some file systems cannot lock a directory; the LOCK file still does.
        Err(std::fs::TryLockError::Error(e)) => {
            warn!(
                "cannot lock data directory {} itself ({e}); relying on its LOCK file",
                dir.display()
            )
        }
    }
    let lock_path = dir.join(LOCK);
    let file = match disk.open_or_create(&lock_path) {
        Ok(f) => {
            if f.try_lock().is_err() {
                return Err(in_use());
            }
            // For humans only: best effort (the disk may be full).
            let pid = format!("{}\n", std::process::id());
            let old = disk.size(&lock_path).unwrap_or(0);
            if disk.truncate(&f, 0, old).is_ok() {
                let (n, written) = disk.write_at(&f, pid.as_bytes(), 0, 0);
                if written.is_err() {
                    let _ = disk.truncate(&f, 0, n as u64);
                }
            }
            Some(f)
        }
        Err(e) => {
            warn!("cannot create {}: {e}", dir.join(LOCK).display());
            None
        }
    };
    check_version(disk, dir, &dir_file)?;
    Ok(DirLock {
        _dir: dir_file,
        _file: file,
    })
}

/// Whether `dir` holds anything a broker wrote beyond its lock and version:
/// a non-empty segment or definitions file.
fn holds_data(disk: &Disk, dir: &Path) -> io::Result<bool> {
    let any = |d: &Path, f: &dyn Fn(&str) -> bool| -> io::Result<bool> {
        match disk.list(d) {
            Ok(files) => Ok(files.iter().any(|(name, len)| *len > 0 && f(name))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    };
    Ok(any(dir, &|n| n.starts_with("definitions"))?
        || any(&dir.join("msgs"), &|n| n.ends_with(".seg"))?)
}

/// Check the data directory's format; a directory with no data and no (or
/// an empty) `VERSION` is new: write it, atomically.
fn check_version(disk: &Disk, dir: &Path, dir_file: &File) -> io::Result<()> {
    let path = dir.join(VERSION);
    let found = match disk.read(&path) {
        Ok(v) => Some(v),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    let text = found
        .as_ref()
        .map(|v| String::from_utf8_lossy(v).trim().to_string());
    match text.as_deref() {
        Some(v) if v == FORMAT_VERSION => return Ok(()),
        Some(v) if !v.is_empty() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "data directory {} has format '{v}', not '{FORMAT_VERSION}'",
                    dir.display()
                ),
            ))
        }
        _ => {}
    }
    let state = if found.is_some() { "empty" } else { "missing" };
    if holds_data(disk, dir)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "data directory {} holds messages or definitions but its VERSION file is {state}; if this version of warren wrote them, put the line '{FORMAT_VERSION}' into {} and start again",
                dir.display(),
                path.display()
            ),
        ));
    }
    if found.is_some() {
        warn!(
            "{} is empty and the directory holds no data (an interrupted first start): starting it as a new data directory",
            path.display()
        );
    }
    // Atomically: a temporary file, fsynced, renamed over it, and the
    // directory fsynced.
    let replaced = found.map_or(0, |v| v.len() as u64);
    disk.replace(
        dir_file,
        &path,
        format!("{FORMAT_VERSION}\n").as_bytes(),
        replaced,
    )
    .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}
