//! Persistence beside the core: an append-only log of segment files holding
//! persistent messages (and paged-out transient ones), acknowledgements and
//! delivery marks, plus the durable definitions. Knows messages as bytes, not
//! AMQP. Record layout: `len u32 | crc32c u32 | payload[len]`, payload =
//! `kind u8 | fields`. Group commit: records are buffered during a loop turn;
//! [`Store::sync`] writes them and runs one `fdatasync` for all of them.
//! Every disk operation (here, in the definitions log, in recovery) goes
//! through one `disk::Disk`, where tests inject [`Faults`].

pub mod crc;
pub mod definitions;
pub mod delayed;
mod disk;
mod file;
mod recover;
pub mod retained;
pub mod spill;
pub mod stream;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use log::{error, info, warn};

use crate::codec::reader::Reader;
use crc::crc32c;
use disk::Disk;
#[cfg(any(test, feature = "testing"))]
pub use disk::DiskOp;
pub use disk::Faults;
use file::LogFile;
use recover::{load_clean, scan, DirLock, Quarantine, CHECKPOINT, CLEAN};

/// Format version written to `VERSION`; bump with a migration when the
/// on-disk layout changes.
pub const FORMAT_VERSION: &str = "warren-store 2";

const REC_MSG: u8 = 1;
const REC_PAGED: u8 = 2;
const REC_ACK: u8 = 3;
const REC_DELIVERED: u8 = 4;
const REC_PURGE: u8 = 5;

/// Header of each record: length and checksum.
const REC_HEADER: usize = 8;
/// Largest record accepted when scanning (a message is at most 128 MiB).
const MAX_RECORD: usize = 256 << 20;

/// Where a stored message lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreRef {
    /// Message id (unique, increasing).
    pub msg_id: u64,
    /// Segment number.
    pub seg: u32,
    /// Offset of the record in the segment.
    pub offset: u32,
    /// Record length including its header.
    pub len: u32,
    /// A persistent message of durable queues (recovered after restart), as
    /// opposed to a paged-out transient copy.
    pub durable: bool,
}

/// A message found by recovery.
#[derive(Debug, Clone)]
pub struct RecoveredMsg {
    /// Where it is.
    pub at: StoreRef,
    /// Delivered before the restart.
    pub delivered: bool,
    /// Body size.
    pub size: u64,
    /// Exchange it was published to.
    pub exchange: Bytes,
    /// Routing key it was published with.
    pub routing_key: Bytes,
    /// Publish time (ms since the epoch).
    pub timestamp: u64,
    /// Per-message TTL.
    pub ttl: Option<u64>,
    /// Priority property.
    pub priority: u8,
    /// Its place in its queue, kept by a clean stop for queues that had
    /// spilled: (sequence number, behind the spilled messages).
    pub place: Option<(u64, bool)>,
}

/// What a clean stop kept of a durable queue that had messages spilled:
/// its next sequence number and its spills (priority level, what a restart
/// keeps of the spill: see [`spill::Spill::durable_view`]).
#[derive(Debug, Default, Clone)]
pub struct CleanQueue {
    /// The queue's next sequence number.
    pub next_seq: u64,
    /// Its spills, by priority level.
    pub spills: Vec<(u8, spill::Spill)>,
    /// Spilled messages acknowledged after the checkpoint this comes from
    /// (message ids): dropped as they are read back.
    pub skip: std::collections::HashSet<u64>,
    /// Spilled messages delivered after that checkpoint: redelivered.
    pub seen: std::collections::HashSet<u64>,
}

impl CleanQueue {
    /// The files of its spills.
    pub fn files(&self) -> impl Iterator<Item = &spill::SpillFile> {
        self.spills.iter().flat_map(|(_, sp)| sp.files.iter())
    }
}

/// The lowest segment number among `from` and those that the messages
/// `msgs` and the spills of `queues` refer to: what an index needs kept.
fn first_segment<'a>(
    msgs: impl Iterator<Item = &'a RecoveredMsg>,
    queues: impl Iterator<Item = &'a CleanQueue>,
    from: u32,
) -> u32 {
    let spilled = queues
        .flat_map(CleanQueue::files)
        .flat_map(|f| f.refs.iter().map(|r| r.0));
    msgs.map(|m| m.at.seg).chain(spilled).fold(from, u32::min)
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Surviving messages per durable queue id, in publish order.
    pub queues: HashMap<u64, Vec<RecoveredMsg>>,
    /// Records read.
    pub records: u64,
    /// Bytes scanned.
    pub bytes: u64,
    /// Damaged regions skipped and torn tails cut (or skipped).
    pub damaged: u64,
    /// Bytes in them.
    pub damaged_bytes: u64,
    /// Durable queues that had spilled at a clean stop, by store id.
    pub spilled: HashMap<u64, CleanQueue>,
}

#[derive(Debug, Default)]
struct Seg {
    /// References from queues to messages in this segment.
    live: u64,
    /// Bytes it takes on disk (set when it is finished).
    size: u64,
}

/// Counters for metrics and the benchmark report.
#[derive(Debug, Default, Clone)]
pub struct StoreStats {
    /// fdatasync calls.
    pub syncs: u64,
    /// Time spent in them.
    pub sync_time: Duration,
    /// Bytes appended.
    pub bytes_written: u64,
    /// Writes, syncs or segment reservations that failed.
    pub failures: u64,
    /// Stored messages that could not be read back (record missing,
    /// truncated or damaged): each was dropped.
    pub unreadable: u64,
    /// Log bytes read by the recovery at start (none after a clean stop;
    /// what follows the last checkpoint after a crash).
    pub recovery_scanned: u64,
}

/// Records not yet synced beyond this many bytes ask for a sync at the end
/// of the turn even if nobody waits for one (they are kept in memory until
/// synced, see [`file`]).
const RETAIN_MAX: usize = 4 << 20;

/// How long after a failed write or sync (or a failed segment reservation)
/// the store tries again, unless space is freed first.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Why the store cannot write.
#[derive(Debug)]
struct Failure {
    /// The error, as the OS reported it.
    kind: io::ErrorKind,
    raw: Option<i32>,
    text: String,
    /// When to try again.
    retry_at: Instant,
}

impl Failure {
    fn error(&self) -> io::Error {
        match self.raw {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.text.clone()),
        }
    }
}

/// The message store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: DirLock,
    seg_size: u64,
    segs: BTreeMap<u32, Seg>,
    /// Number of the segment being appended to.
    cur: u32,
    /// The segment being appended to; its unsynced records stay buffered.
    seg: LogFile,
    /// The directory gained or lost files since the last sync.
    dir_dirty: bool,
    /// The segment directory, held open: syncing it must not need a new
    /// file descriptor (out of them, a sync would fail and block every
    /// publisher on a disk that is fine).
    dir_file: File,
    readers: HashMap<u32, File>,
    /// Next message id.
    next_msg_id: u64,
    /// The last write or sync failed: nothing is durable until a retry works.
    failure: Option<Failure>,
    /// The next segment could not be reserved (no space): retried at this time.
    roll_retry: Option<Instant>,
    /// A segment was started since [`Store::take_rolled`] last looked.
    rolled: bool,
    /// The current turn's time (as last given to [`Store::sync`] / [`Store::flush`]).
    now: Instant,
    /// Repeated identical errors are logged once a second.
    log_throttle: Throttle,
    /// Copies of damaged records found while reading back, synced in a
    /// batch at the end of the turn (see [`Quarantine`]).
    quarantine: Quarantine,
    /// Every disk operation goes through it.
    disk: Disk,
    /// The spill files of deep queues.
    pub spill: spill::Spiller,
    /// Segments from this number on are kept even when nothing refers to
    /// them any more: the last checkpoint may (see [`Store::checkpoint`]).
    pinned: Option<u32>,
    /// `stats.bytes_written` at the last checkpoint.
    checkpoint_at: u64,
    /// Counters.
    pub stats: StoreStats,
}

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// Out of file descriptors (or of the kernel memory for one): a passing
/// condition, not a damaged record.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    )
}

/// An error reading a message back that says nothing about the record (out
/// of file descriptors): the message stays where it is and is read later.
/// Every other read error means the record is damaged or gone.
pub fn read_error_is_passing(e: &io::Error) -> bool {
    e.kind() != io::ErrorKind::InvalidData
}

fn frame_record(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&header_bytes(payload.len(), crc32c(payload)));
    out.extend_from_slice(payload);
}

/// A record's header: the payload's length and CRC-32C, big-endian.
fn header_bytes(len: usize, crc: u32) -> [u8; REC_HEADER] {
    (u64::from(len as u32) << 32 | u64::from(crc)).to_be_bytes()
}

/// Length and checksum of the record header at `at`, if all 8 bytes exist.
pub(super) fn header(data: &[u8], at: usize) -> Option<(usize, u32)> {
    let h: [u8; REC_HEADER] = data.get(at..at.checked_add(REC_HEADER)?)?.try_into().ok()?;
    let v = u64::from_be_bytes(h);
    Some(((v >> 32) as usize, v as u32))
}

/// What the store keeps of a message.
#[derive(Debug, Clone, Copy)]
pub struct MsgMeta<'a> {
    /// Exchange it was published to.
    pub exchange: &'a [u8],
    /// Routing key.
    pub routing_key: &'a [u8],
    /// Raw content header payload.
    pub header: &'a [u8],
    /// Body.
    pub body: &'a [u8],
    /// Publish time, ms since the epoch (TTLs count from it).
    pub timestamp: u64,
    /// Per-message TTL in ms.
    pub ttl: Option<u64>,
    /// Priority property.
    pub priority: u8,
}

fn put_short(out: &mut Vec<u8>, s: &[u8]) {
    let s = s.get(..255).unwrap_or(s);
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// Parsed fields of a message record.
pub struct MsgRecord {
    /// Message id.
    pub msg_id: u64,
    /// Durable queue ids (empty for paged records).
    pub queues: Vec<u64>,
    /// Publish time (ms since the epoch).
    pub timestamp: u64,
    /// Per-message TTL.
    pub ttl: Option<u64>,
    /// Priority property.
    pub priority: u8,
    /// Exchange.
    pub exchange: Bytes,
    /// Routing key.
    pub routing_key: Bytes,
    /// Raw content header payload.
    pub header: Bytes,
    /// Body.
    pub body: Bytes,
}

fn parse_msg(payload: &Bytes) -> Option<MsgRecord> {
    let mut r = Reader::new(payload);
    let _kind = r.u8().ok()?;
    let msg_id = r.u64().ok()?;
    let n = r.u16().ok()?;
    let mut queues = Vec::with_capacity(n as usize);
    for _ in 0..n {
        queues.push(r.u64().ok()?);
    }
    let timestamp = r.u64().ok()?;
    let ttl = Some(r.u64().ok()?).filter(|t| *t != u64::MAX);
    let priority = r.u8().ok()?;
    let exchange = r.shortstr().ok()?;
    let routing_key = r.shortstr().ok()?;
    let header = r.longstr().ok()?;
    let body = r.longstr().ok()?;
    Some(MsgRecord {
        msg_id,
        queues,
        timestamp,
        ttl,
        priority,
        exchange,
        routing_key,
        header,
        body,
    })
}

impl Store {
    /// Open (creating if needed) the store in `dir/msgs`, lock the data
    /// directory, and recover what it holds.
    pub fn open(
        dir: &Path,
        seg_size: u64,
        faults: Option<Arc<Faults>>,
    ) -> io::Result<(Store, Recovered)> {
        let disk = Disk::new(faults);
        let lock = recover::claim_dir(&disk, dir)?;
        let mdir = dir.join("msgs");
        disk.create_dir_all(&mdir)?;
        let started = Instant::now();
        // Segment number to file size.
        let sizes: BTreeMap<u32, u64> = disk
            .list(&mdir)?
            .into_iter()
            .filter_map(|(name, len)| Some((name.strip_suffix(".seg")?.parse().ok()?, len)))
            .collect();
        let numbers: Vec<u32> = sizes.keys().copied().collect();
        let spill_dir = dir.join("spill");
        let clean = load_clean(&disk, &mdir, &sizes, &spill_dir, CLEAN);
        let checkpoint_path = mdir.join(CHECKPOINT);
        if clean.is_some() {
            if let Ok(n) = disk.size(&checkpoint_path) {
                let _ = disk.remove(&checkpoint_path, n);
            }
        }
        let index = clean.or_else(|| load_clean(&disk, &mdir, &sizes, &spill_dir, CHECKPOINT));
        let mut pinned = None;
        let (live, max_id, mut rec) = match index {
            Some(ix) if ix.replay_from.is_none() => {
                info!("clean shutdown marker found: skipping the store scan");
                let rec = Recovered {
                    spilled: ix.spilled,
                    ..Recovered::default()
                };
                (ix.live, ix.max_id, rec)
            }
            Some(ix) => {
                let from = ix.replay_from.unwrap_or((0, 0));
                info!(
                    "checkpoint found: replaying the log from offset {} of segment {:08}",
                    from.1, from.0
                );
                // The checkpoint stays valid (and in place) until the next.
                pinned = Some(first_segment(
                    ix.live.values().flat_map(|m| m.values()),
                    ix.spilled.values(),
                    from.0,
                ));
                let mut live = ix.live;
                let spilled = ix.spilled;
                // Queues the checkpoint knows, so that the replay can tell
                // their acks of spilled messages.
                for q in spilled.keys() {
                    live.entry(*q).or_default();
                }
                let rec = Recovered {
                    spilled,
                    ..Recovered::default()
                };
                recover::scan_from(&disk, &mdir, &numbers, Some(from), live, ix.max_id, rec)?
            }
            None => scan(&disk, &mdir, &numbers)?,
        };
        let last = numbers.last().copied();
        let mut segs: BTreeMap<u32, Seg> = numbers.iter().map(|&n| (n, Seg::default())).collect();
        for (q, msgs) in live {
            for (_, m) in msgs.iter() {
                if let Some(s) = segs.get_mut(&m.at.seg) {
                    s.live += 1;
                }
            }
            rec.queues.insert(q, msgs.into_values().collect());
        }
        let mut kept = std::collections::HashSet::new();
        for f in rec.spilled.values().flat_map(CleanQueue::files) {
            kept.insert(f.id);
            for &(seg, _, n) in &f.refs {
                if let Some(s) = segs.get_mut(&seg) {
                    s.live += u64::from(n);
                }
            }
        }
        let cur = last.map_or(0, |n| n + 1);
        let path = seg_path(&mdir, cur);
        // A full disk must not stop the start: without a reservation the
        // store still works while there is room, and publishers are blocked
        // (disk alarm) until the next segment can be reserved.
        let (seg, roll_retry) = match LogFile::create(&disk, &path, seg_size, 0) {
            Ok(f) => (f, None),
            Err(e) => {
                warn!("store: cannot reserve {seg_size} bytes for a new segment: {e}");
                (LogFile::create(&disk, &path, 0, 0)?, Some(started))
            }
        };
        segs.insert(cur, Seg::default());
        for (n, s) in segs.iter_mut() {
            if *n != cur {
                // (The scan may have cut the newest one's tail.)
                s.size = disk.size(&seg_path(&mdir, *n)).unwrap_or(0);
            }
        }
        let dir_file = disk.open_dir(&mdir)?;
        let spill = spill::Spiller::open(&disk, &spill_dir, &|id| kept.contains(&id))?;
        let mut spill = spill;
        spill.keep_retired = pinned.is_some();
        let mut store = Store {
            spill,
            pinned,
            checkpoint_at: 0,
            dir_file,
            dir: mdir,
            _lock: lock,
            // Offsets within a segment are 32-bit.
            seg_size: seg_size.clamp(4096, 1 << 30),
            segs,
            cur,
            seg,
            // The new segment's directory entry is made durable by the first
            // sync (nothing in it needs to survive before then); start-up
            // does no fsync at all.
            dir_dirty: true,
            readers: HashMap::new(),
            next_msg_id: max_id + 1,
            failure: None,
            roll_retry,
            rolled: false,
            now: started,
            log_throttle: Throttle::default(),
            quarantine: Quarantine::default(),
            disk,
            stats: StoreStats::default(),
        };
        store.stats.recovery_scanned = rec.bytes;
        store.collect_garbage();
        let n: usize = rec.queues.values().map(|v| v.len()).sum();
        info!(
            "store recovered {} messages in {} queues ({} records, {} bytes scanned, {} damaged ({} bytes)) in {:?}",
            n,
            rec.queues.len(),
            rec.records,
            rec.bytes,
            rec.damaged,
            rec.damaged_bytes,
            started.elapsed()
        );
        Ok((store, rec))
    }

    /// Start a new segment when the current one is full (before appending).
    fn maybe_roll(&mut self) {
        if self.seg.len() >= self.seg_size && self.roll_retry.is_none() && self.failure.is_none() {
            self.roll();
        }
    }

    /// Finish the current segment (sync it) and start the next, reserving its
    /// space. Without space for the reservation, appends go on in the current
    /// segment (publishers are blocked, see [`Store::space_short`]) and the
    /// roll is tried again later.
    fn roll(&mut self) {
        let now = self.now;
        if let Err(e) = self.sync_segment() {
            self.fail(now, e);
            return;
        }
        let next = self.cur + 1;
        let path = seg_path(&self.dir, next);
        match LogFile::create(&self.disk, &path, self.seg_size, 0) {
            Ok(file) => {
                let mut old = std::mem::replace(&mut self.seg, file);
                old.trim();
                if let Some(s) = self.segs.get_mut(&self.cur) {
                    s.size = old.len();
                }
                self.cur = next;
                self.segs.insert(next, Seg::default());
                self.dir_dirty = true;
                self.rolled = true;
                if self.roll_retry.take().is_some() {
                    info!("store: space for a new segment is back");
                }
            }
            Err(e) => {
                self.roll_retry = Some(now + RETRY_AFTER);
                self.stats.failures += 1;
                if let Some(n) = self.log_throttle.hit(now) {
                    error!(
                        "store: cannot reserve {} bytes for segment {next:08}: {e}{}",
                        self.seg_size,
                        repeats(n)
                    );
                }
            }
        }
    }

    fn append(&mut self, payload: &[u8]) -> (u32, u32, u32) {
        self.maybe_roll();
        let offset = self.seg.len() as u32;
        let len = (payload.len() + REC_HEADER) as u32;
        frame_record(self.seg.buf_mut(), payload);
        self.stats.bytes_written += len as u64;
        (self.cur, offset, len)
    }

    /// Append a persistent message for durable queues `queues`.
    pub fn append_msg(&mut self, queues: &[u64], m: &MsgMeta<'_>) -> StoreRef {
        self.append_message(REC_MSG, queues, m)
    }

    /// Append a paged-out copy of a message (not recovered after restart).
    pub fn append_paged(&mut self, m: &MsgMeta<'_>) -> StoreRef {
        self.append_message(REC_PAGED, &[], m)
    }

    fn append_message(&mut self, kind: u8, queues: &[u64], m: &MsgMeta<'_>) -> StoreRef {
        self.maybe_roll();
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        let offset = self.seg.len() as u32;
        // Encoded straight into the write buffer: no per-message allocation.
        let p = self.seg.buf_mut();
        let start = p.len();
        p.extend_from_slice(&[0u8; REC_HEADER]);
        p.put_u8(kind);
        p.put_u64(id);
        p.put_u16(queues.len() as u16);
        for q in queues {
            p.put_u64(*q);
        }
        p.put_u64(m.timestamp);
        p.put_u64(m.ttl.unwrap_or(u64::MAX));
        p.put_u8(m.priority);
        put_short(p, m.exchange);
        put_short(p, m.routing_key);
        p.put_u32(m.header.len() as u32);
        p.put_slice(m.header);
        p.put_u32(m.body.len() as u32);
        p.put_slice(m.body);
        let payload_len = p.len() - start - REC_HEADER;
        let crc = crc32c(p.get(start + REC_HEADER..).unwrap_or_default());
        if let Some(h) = p.get_mut(start..start + REC_HEADER) {
            h.copy_from_slice(&header_bytes(payload_len, crc));
        }
        let len = (payload_len + REC_HEADER) as u32;
        self.stats.bytes_written += len as u64;
        let seg = self.cur;
        let refs = if kind == REC_MSG {
            queues.len() as u64
        } else {
            1
        };
        if let Some(s) = self.segs.get_mut(&seg) {
            s.live += refs;
        }
        StoreRef {
            msg_id: id,
            seg,
            offset,
            len,
            durable: kind == REC_MSG,
        }
    }

    fn append_small(&mut self, kind: u8, a: u64, b: Option<u64>) {
        let mut p = [0u8; 17];
        p[0] = kind;
        p[1..9].copy_from_slice(&a.to_be_bytes());
        let n = match b {
            Some(b) => {
                p[9..17].copy_from_slice(&b.to_be_bytes());
                17
            }
            None => 9,
        };
        self.append(p.get(..n).unwrap_or(&p));
    }

    /// A message left durable queue `queue` (acked, dropped, rejected):
    /// record it and release the reference.
    pub fn ack(&mut self, queue: u64, r: &StoreRef) {
        if r.durable {
            self.append_small(REC_ACK, queue, Some(r.msg_id));
        }
        self.release(r);
    }

    /// Drop one reference to a stored message without a record (paged copies,
    /// or messages of a queue whose purge/delete is recorded).
    pub fn release(&mut self, r: &StoreRef) {
        if let Some(s) = self.segs.get_mut(&r.seg) {
            s.live = s.live.saturating_sub(1);
        }
    }

    /// Drop the references `runs` holds (spilled messages purged or lost).
    pub fn release_runs(&mut self, runs: &spill::Runs) {
        for &(seg, _, n) in runs {
            if let Some(s) = self.segs.get_mut(&seg) {
                s.live = s.live.saturating_sub(u64::from(n));
            }
        }
    }

    /// Record the first delivery of a durable message (redelivered after restart).
    pub fn delivered(&mut self, queue: u64, r: &StoreRef) {
        if r.durable {
            self.append_small(REC_DELIVERED, queue, Some(r.msg_id));
        }
    }

    /// Record that every message of durable queue `queue` so far is gone
    /// (purge or delete). The caller releases their references.
    pub fn purge(&mut self, queue: u64) {
        self.append_small(REC_PURGE, queue, None);
    }

    /// Read a stored message back: (header, body). A record that is missing,
    /// truncated, damaged or not the message `r` names is an error (counted
    /// in [`StoreStats::unreadable`]; the caller drops the message).
    pub fn read(&mut self, r: &StoreRef) -> io::Result<(Bytes, Bytes)> {
        let m = self.read_record(r)?;
        Ok((m.header, m.body))
    }

    /// Read and verify the whole record of a stored message.
    pub fn read_record(&mut self, r: &StoreRef) -> io::Result<MsgRecord> {
        let read = self.read_checked(r);
        if read.as_ref().is_err_and(|e| !read_error_is_passing(e)) {
            self.stats.unreadable += 1;
        }
        read
    }

    /// The record from the buffer while it is not yet synced (so it can be
    /// read back even while the disk fails), else from its segment file. A
    /// damaged record is copied to the quarantine (its segment may be
    /// collected once the message is dropped).
    fn read_checked(&mut self, r: &StoreRef) -> io::Result<MsgRecord> {
        let len = recover::plausible_len(r)?;
        let data = match self.seg.buffered(r.offset as u64, len) {
            Some(b) if r.seg == self.cur => Bytes::copy_from_slice(b),
            _ => {
                self.open_reader(r)?;
                let file = match self.readers.get(&r.seg) {
                    Some(f) => f,
                    None if r.seg == self.cur => self.seg.file(),
                    None => return Err(io::Error::other("segment reader vanished")),
                };
                recover::read_at(&self.disk, file, r, len)?
            }
        };
        recover::check_record(&data, r).map_err(|why| {
            let q = &mut self.quarantine;
            let kept = match q.copy(&self.disk, &self.dir, r.seg, r.offset as usize, &data) {
                Ok(q) => format!("copy in {}", q.display()),
                Err(e) => format!("cannot copy it to the quarantine: {e}"),
            };
            recover::bad_record(r, format!("{why}; {kept}"))
        })
    }

    /// Open the segment of `r` for reading (unless it is the current one,
    /// or open already).
    fn open_reader(&mut self, r: &StoreRef) -> io::Result<()> {
        if r.seg != self.cur && !self.readers.contains_key(&r.seg) {
            let path = seg_path(&self.dir, r.seg);
            let mut opened = self.disk.open(&path);
            if opened.as_ref().is_err_and(out_of_descriptors) && !self.readers.is_empty() {
                // Give back the segments held open for reading, then try again.
                self.readers.clear();
                opened = self.disk.open(&path);
            }
            let f = opened.map_err(|e| {
                if out_of_descriptors(&e) {
                    // Not the record's fault: it stays, and is read later.
                    io::Error::other(format!("cannot open segment {:08}: {e}", r.seg))
                } else {
                    recover::bad_record(r, format!("cannot open the segment: {e}"))
                }
            })?;
            if self.readers.len() > 64 {
                self.readers.clear();
            }
            self.readers.insert(r.seg, f);
        }
        Ok(())
    }

    #[cfg(any(test, feature = "testing"))]
    /// True when records are buffered or written but not yet synced.
    pub fn needs_sync(&self) -> bool {
        self.seg.unsynced() > 0 || self.dir_dirty
    }

    /// True when the store wants a sync at the end of this turn even if no
    /// confirm waits for one: much is buffered, or a failed write or segment
    /// reservation is due to be tried again.
    pub fn wants_sync(&self, now: Instant) -> bool {
        self.seg.unsynced() > RETAIN_MAX
            || self.failure.as_ref().is_some_and(|f| now >= f.retry_at)
            || self.roll_retry.is_some_and(|t| now >= t)
    }

    /// False while the last write or sync failed (nothing new is durable).
    pub fn healthy(&self) -> bool {
        self.failure.is_none()
    }

    /// True while the store cannot write, or has no space reserved for its
    /// next segment: publishers must be blocked (disk alarm).
    pub fn space_short(&self) -> bool {
        self.failure.is_some() || self.roll_retry.is_some()
    }

    /// Bytes appended and not yet durable (kept in memory until synced).
    pub fn backlog(&self) -> usize {
        self.seg.unsynced()
    }

    #[cfg(any(test, feature = "testing"))]
    /// The last write or sync error, while the store is failing.
    pub fn failure(&self) -> Option<io::Error> {
        self.failure.as_ref().map(Failure::error)
    }

    /// True once after a new segment was started (its space was just
    /// reserved: a good moment to look at free space).
    pub fn take_rolled(&mut self) -> bool {
        std::mem::take(&mut self.rolled)
    }

    /// Free bytes on the file system holding the store (or the simulated
    /// disk's, under fault injection).
    pub fn free_space(&self) -> io::Result<u64> {
        self.disk.free_space(&self.dir)
    }

    /// Write buffered records without syncing (acks, delivery marks): they
    /// reach the page cache; they are kept in memory until a sync.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        self.now = now;
        let res = match &self.failure {
            Some(f) => Err(f.error()),
            None => self.seg.write().map_err(|e| {
                let keep = e.raw_os_error().map(io::Error::from_raw_os_error);
                self.fail(now, e);
                keep.unwrap_or_else(|| io::Error::other("store write failed"))
            }),
        };
        self.quarantine.settle(&self.disk, Some(now));
        res
    }

    fn sync_segment(&mut self) -> io::Result<()> {
        let started = Instant::now();
        self.seg.sync()?;
        self.stats.syncs += 1;
        self.stats.sync_time += started.elapsed();
        Ok(())
    }

    /// Write everything buffered and `fdatasync` it: after `Ok`, every record
    /// appended so far survives a crash. After a failure the segment is cut
    /// back to what was synced and the records stay buffered; until `now`
    /// reaches the retry time this answers the same error without touching
    /// the disk.
    pub fn sync(&mut self, now: Instant) -> io::Result<()> {
        self.now = now;
        let res = match self.failure.as_ref().filter(|f| now < f.retry_at) {
            Some(f) => Err(f.error()),
            None => self.try_sync(),
        };
        self.quarantine.settle(&self.disk, Some(now));
        res
    }

    fn try_sync(&mut self) -> io::Result<()> {
        let now = self.now;
        let res = self.sync_segment().and_then(|()| {
            if self.dir_dirty {
                self.disk.sync_dir(&self.dir_file)?;
                self.dir_dirty = false;
            }
            Ok(())
        });
        if let Err(e) = res {
            let keep = e.raw_os_error().map(io::Error::from_raw_os_error);
            self.fail(now, e);
            return Err(keep.unwrap_or_else(|| io::Error::other("store sync failed")));
        }
        if self.failure.take().is_some() {
            info!("store: writes and syncs work again");
            self.log_throttle = Throttle::default();
        }
        self.collect_garbage();
        if self.roll_retry.is_some_and(|t| now >= t) {
            self.roll();
        }
        Ok(())
    }

    /// A write or sync failed: remember it (the store answers with it until
    /// the retry time) and log it, once a second at most.
    fn fail(&mut self, now: Instant, e: io::Error) {
        self.stats.failures += 1;
        if let Some(n) = self.log_throttle.hit(now) {
            error!(
                "store: writing {} failed: {e}; nothing new is confirmed until a retry succeeds{}",
                self.seg.path().display(),
                repeats(n)
            );
        }
        self.failure = Some(Failure {
            kind: e.kind(),
            raw: e.raw_os_error(),
            text: e.to_string(),
            retry_at: now + RETRY_AFTER,
        });
    }

    /// Delete the oldest segments while nothing in them is referenced, and
    /// report whether any went. Only a prefix may go: a later segment may
    /// hold acks for messages in an earlier one, and deleting it alone would
    /// bring those messages back. Safe before the acks are synced: a crash
    /// then loses only messages that were acknowledged. A failing store
    /// tries writing again at once when space was freed.
    pub fn collect_garbage(&mut self) -> bool {
        let dead: Vec<u32> = self
            .segs
            .iter()
            .take_while(|(n, s)| {
                **n != self.cur && s.live == 0 && self.pinned.is_none_or(|p| **n < p)
            })
            .map(|(n, _)| *n)
            .collect();
        let freed = !dead.is_empty();
        for n in dead {
            let size = self.segs.remove(&n).map_or(0, |s| s.size);
            self.readers.remove(&n);
            match self.disk.remove(&seg_path(&self.dir, n), size) {
                Ok(()) => self.dir_dirty = true,
                Err(e) => warn!("store: cannot delete segment {n:08}: {e}"),
            }
        }
        if freed {
            // Space came back: retry a failed write or reservation now.
            let now = self.now;
            if let Some(f) = self.failure.as_mut() {
                f.retry_at = now;
            }
            if let Some(t) = self.roll_retry.as_mut() {
                *t = now;
            }
        }
        // The current segment is fully dead and big: start afresh so it can go.
        let cur_dead =
            self.segs.len() == 1 && self.segs.get(&self.cur).is_some_and(|s| s.live == 0);
        if cur_dead && self.seg.len() >= self.seg_size / 2 && self.failure.is_none() {
            self.roll();
        }
        freed
    }

    /// Clean shutdown: sync everything and write the index of live durable
    /// messages (queue store id, message, redelivered flag), so the next
    /// start skips the scan. Nothing is written unless the sync works.
    ///
    /// Durable queues that have messages spilled are kept as they are:
    /// their spill files are synced and named in the index (`spilled`: by
    /// queue store id), with the place of each message kept in memory
    /// (before or behind the spilled ones), so that the next start reads
    /// neither the spilled messages nor the message log.
    pub fn close_clean(
        &mut self,
        live: &[(u64, RecoveredMsg)],
        spilled: &[(u64, CleanQueue)],
    ) -> io::Result<()> {
        self.now = Instant::now();
        self.quarantine.settle(&self.disk, None);
        self.try_sync()?;
        self.seg.trim();
        self.write_index(CLEAN, live, spilled, None)?;
        self.spill.forget_retired();
        self.spill.keep_retired = false;
        // A checkpoint is older than the clean index: not needed any more,
        // nor are the segments it kept (the index holds what is live).
        let cp = self.dir.join(CHECKPOINT);
        if let Ok(n) = self.disk.size(&cp) {
            let _ = self.disk.remove(&cp, n);
        }
        if self.pinned.take().is_some() {
            self.collect_garbage();
            let _ = self.try_sync();
        }
        Ok(())
    }

    /// A checkpoint while running (see `Engine::checkpoint`): like the
    /// clean index, with every durable message in memory or
    /// unacknowledged (`live`) and the spills of durable queues
    /// (`spilled`), and the log position they reflect. A restart after a
    /// crash loads it and replays only the log from that position on.
    /// Everything it names is synced first (the log, the spill files);
    /// spill files read to their end since the last checkpoint are deleted
    /// only after this one is on disk, and log segments it refers to are
    /// kept until the next (see [`Store::collect_garbage`]).
    pub fn checkpoint(
        &mut self,
        live: &[(u64, RecoveredMsg)],
        spilled: &[(u64, CleanQueue)],
    ) -> io::Result<()> {
        self.try_sync()?;
        let from = (self.cur, self.seg.len());
        self.write_index(CHECKPOINT, live, spilled, Some(from))?;
        self.pinned = Some(first_segment(
            live.iter().map(|(_, m)| m),
            spilled.iter().map(|(_, c)| c),
            self.cur,
        ));
        self.spill.forget_retired();
        self.spill.keep_retired = true;
        self.checkpoint_at = self.stats.bytes_written;
        Ok(())
    }

    /// Bytes appended to the log since the last checkpoint.
    pub fn since_checkpoint(&self) -> u64 {
        self.stats.bytes_written - self.checkpoint_at
    }

    /// Write an index (see [`Store::close_clean`], [`Store::checkpoint`]):
    /// the spill files it names synced first, then the index itself,
    /// atomically.
    fn write_index(
        &mut self,
        name: &str,
        live: &[(u64, RecoveredMsg)],
        spilled: &[(u64, CleanQueue)],
        replay_from: Option<(u32, u64)>,
    ) -> io::Result<()> {
        for (_, c) in spilled {
            for (_, sp) in &c.spills {
                self.spill.sync(sp)?;
            }
        }
        if !spilled.is_empty() {
            self.spill.sync_dir()?;
        }
        let mut p = BytesMut::with_capacity(40 + live.len() * 48);
        p.put_slice(recover::CLEAN_MAGIC);
        let (seg, off) = replay_from.unwrap_or((u32::MAX, 0));
        p.put_u32(seg);
        p.put_u64(off);
        p.put_u64(self.next_msg_id.saturating_sub(1));
        p.put_u64(live.len() as u64);
        for (q, m) in live {
            p.put_u64(*q);
            p.put_u64(m.at.msg_id);
            p.put_u32(m.at.seg);
            p.put_u32(m.at.offset);
            p.put_u32(m.at.len);
            p.put_u8(m.delivered as u8);
            p.put_u64(m.size);
            p.put_u64(m.timestamp);
            p.put_u64(m.ttl.unwrap_or(u64::MAX));
            p.put_u8(m.priority);
            crate::codec::writer::put_shortstr(&mut p, &m.exchange);
            crate::codec::writer::put_shortstr(&mut p, &m.routing_key);
            let (seq, behind) = m.place.unwrap_or((u64::MAX, false));
            p.put_u64(seq);
            p.put_u8(behind as u8);
        }
        p.put_u64(spilled.len() as u64);
        for (q, c) in spilled {
            p.put_u64(*q);
            p.put_u64(c.next_seq);
            p.put_u32(c.spills.len() as u32);
            for (level, sp) in &c.spills {
                p.put_u8(*level);
                p.put_u32(sp.files.len() as u32);
                for f in &sp.files {
                    p.put_u64(f.id);
                    p.put_u64(f.read);
                    p.put_u64(f.len);
                    p.put_u32(f.batches.len() as u32);
                    for b in &f.batches {
                        p.put_u32(b.len);
                        p.put_u32(b.count);
                        p.put_u64(b.bytes);
                    }
                    p.put_u32(f.refs.len() as u32);
                    for &(seg, _, n) in &f.refs {
                        p.put_u32(seg);
                        p.put_u32(n);
                    }
                }
            }
        }
        let mut data = Vec::with_capacity(4 + p.len());
        data.extend_from_slice(&crc32c(&p).to_be_bytes());
        data.extend_from_slice(&p);
        let path = self.dir.join(name);
        let old = self.disk.size(&path).unwrap_or(0);
        self.disk.replace(&self.dir_file, &path, &data, old)
    }

    /// Bytes on disk in segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.segs
            .keys()
            .filter_map(|n| self.disk.size(&seg_path(&self.dir, *n)).ok())
            .sum()
    }

    #[cfg(any(test, feature = "testing"))]
    /// Number of segment files.
    pub fn segments(&self) -> usize {
        self.segs.len()
    }
}

#[cfg(any(test, feature = "testing"))]
pub use crate::sys::free_disk;

/// Rate limit for a repeated log line: at most one a second, saying how many
/// were held back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// Another occurrence at `now`: `Some(held back since the last line)`
    /// when it should be logged, `None` when it is held back.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

/// " (N more like it)" for a throttled log line.
pub fn repeats(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like it since the last report)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Damaged records read back inside the loop are copied to the
    /// quarantine at once; syncing the copies is best effort: when it
    /// fails, the store's own sync still works.
    #[test]
    fn quarantine_copies_are_kept_and_their_failed_sync_harms_nothing() {
        let dir = std::env::temp_dir().join(format!("warren-store-q-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fx = Faults::with_free(1 << 30);
        let (mut st, _) = Store::open(&dir, 1 << 20, Some(fx.clone())).unwrap();
        let meta = MsgMeta {
            exchange: b"x",
            routing_key: b"k",
            header: b"h",
            body: &[7u8; 100],
            timestamp: 1,
            ttl: None,
            priority: 0,
        };
        let refs: Vec<StoreRef> = (0..3).map(|_| st.append_msg(&[1], &meta)).collect();
        let now = Instant::now();
        st.sync(now).unwrap();
        // Damage the first two records' bodies on disk.
        let path = seg_path(&dir.join("msgs"), refs[0].seg);
        let mut data = std::fs::read(&path).unwrap();
        for r in &refs[..2] {
            data[(r.offset + r.len - 1) as usize] ^= 0xff;
        }
        std::fs::write(&path, &data).unwrap();
        for r in &refs[..2] {
            let e = st.read(r).unwrap_err();
            assert!(!read_error_is_passing(&e), "{e}");
            assert!(e.to_string().contains("copy in"), "{e}");
            let copy = dir
                .join("msgs")
                .join(recover::QUARANTINE)
                .join(format!("{:08}.seg.{}", r.seg, r.offset));
            let want = &data[r.offset as usize..(r.offset + r.len) as usize];
            assert_eq!(std::fs::read(copy).unwrap(), want);
        }
        assert!(st.read(&refs[2]).is_ok());
        assert_eq!(st.stats.unreadable, 2);
        fx.fail(DiskOp::SyncFs, 1);
        st.append_msg(&[1], &meta);
        st.sync(now).unwrap();
        assert!(st.healthy());
        drop(st);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
