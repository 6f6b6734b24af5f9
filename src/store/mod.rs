//! Persistence beside the core: an append-only log of segment files holding
//! persistent messages (and paged-out transient ones), acknowledgements and
//! delivery marks, plus the durable definitions. Knows messages as bytes, not
//! AMQP. Record layout: `len u32 | crc32c u32 | payload[len]`, payload =
//! `kind u8 | fields`. Group commit: records are buffered during a loop turn;
//! [`Store::sync`] writes them and runs one `fdatasync` for all of them.

pub mod crc;
pub mod definitions;
mod recover;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use log::{error, info, warn};

use crate::codec::reader::Reader;
use crc::crc32c;
use recover::{load_clean, scan, DirLock, CLEAN};

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
}

#[derive(Debug, Default)]
struct Seg {
    /// References from queues to messages in this segment.
    live: u64,
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
    /// Stored messages that could not be read back (record missing,
    /// truncated or damaged): each was dropped.
    pub unreadable: u64,
}

/// The message store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: DirLock,
    seg_size: u64,
    segs: BTreeMap<u32, Seg>,
    cur: u32,
    file: File,
    file_len: u64,
    /// Records appended but not yet written.
    buf: Vec<u8>,
    /// Files written since the last sync (the current one, and any rolled).
    unsynced: Vec<File>,
    /// The directory gained or lost files since the last sync.
    dir_dirty: bool,
    readers: HashMap<u32, File>,
    /// Next message id.
    next_msg_id: u64,
    /// Counters.
    pub stats: StoreStats,
}

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// fsync a directory so renames and new files in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn frame_record(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
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
    pub fn open(dir: &Path, seg_size: u64) -> io::Result<(Store, Recovered)> {
        let lock = recover::claim_dir(dir)?;
        let mdir = dir.join("msgs");
        fs::create_dir_all(&mdir)?;
        let started = Instant::now();
        // Segment number to file size.
        let sizes: BTreeMap<u32, u64> = fs::read_dir(&mdir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n = name.strip_suffix(".seg")?.parse().ok()?;
                Some((n, e.metadata().ok()?.len()))
            })
            .collect();
        let numbers: Vec<u32> = sizes.keys().copied().collect();
        let clean = load_clean(&mdir, &sizes);
        let (live, max_id, mut rec) = match clean {
            Some((live, max_id)) => {
                info!("clean shutdown marker found: skipping the store scan");
                (live, max_id, Recovered::default())
            }
            None => scan(&mdir, &numbers)?,
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
        let cur = last.map_or(0, |n| n + 1);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(seg_path(&mdir, cur))?;
        segs.insert(cur, Seg::default());
        let mut store = Store {
            dir: mdir,
            _lock: lock,
            // Offsets within a segment are 32-bit.
            seg_size: seg_size.clamp(4096, 1 << 30),
            segs,
            cur,
            file,
            file_len: 0,
            buf: Vec::new(),
            unsynced: Vec::new(),
            // The new segment's directory entry is made durable by the first
            // sync (nothing in it needs to survive before then); start-up
            // does no fsync at all.
            dir_dirty: true,
            readers: HashMap::new(),
            next_msg_id: max_id + 1,
            stats: StoreStats::default(),
        };
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

    fn append(&mut self, payload: &[u8]) -> (u32, u32, u32) {
        if self.file_len >= self.seg_size {
            if let Err(e) = self.roll() {
                error!("store: cannot start a new segment: {e}");
            }
        }
        let offset = self.file_len as u32;
        let len = (payload.len() + REC_HEADER) as u32;
        frame_record(&mut self.buf, payload);
        self.file_len += len as u64;
        self.stats.bytes_written += len as u64;
        (self.cur, offset, len)
    }

    fn roll(&mut self) -> io::Result<()> {
        self.write_out()?;
        let next = self.cur + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(seg_path(&self.dir, next))?;
        let old = std::mem::replace(&mut self.file, file);
        self.unsynced.push(old);
        self.cur = next;
        self.file_len = 0;
        self.segs.insert(next, Seg::default());
        self.dir_dirty = true;
        Ok(())
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
        if self.file_len >= self.seg_size {
            if let Err(e) = self.roll() {
                error!("store: cannot start a new segment: {e}");
            }
        }
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        // Encoded straight into the write buffer: no per-message allocation.
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; REC_HEADER]);
        let p = &mut self.buf;
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
        let payload_len = self.buf.len() - start - REC_HEADER;
        let crc = crc32c(&self.buf[start + REC_HEADER..]);
        self.buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_be_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
        let offset = self.file_len as u32;
        let len = (payload_len + REC_HEADER) as u32;
        self.file_len += len as u64;
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
        self.append(&p[..n]);
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
        if read.is_err() {
            self.stats.unreadable += 1;
        }
        read
    }

    fn read_checked(&mut self, r: &StoreRef) -> io::Result<MsgRecord> {
        if r.seg == self.cur {
            self.write_out()?;
        }
        let file = match self.readers.get(&r.seg) {
            Some(f) => f,
            None => {
                let f = File::open(seg_path(&self.dir, r.seg))
                    .map_err(|e| recover::bad_record(r, format!("cannot open the segment: {e}")))?;
                if self.readers.len() > 64 {
                    self.readers.clear();
                }
                self.readers.entry(r.seg).or_insert(f)
            }
        };
        recover::read_verified(file, &self.dir, r)
    }

    fn write_out(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// True when records are buffered or written but not yet synced.
    pub fn needs_sync(&self) -> bool {
        !self.buf.is_empty() || !self.unsynced.is_empty() || self.dir_dirty
    }

    /// Write buffered records without syncing (acks, delivery marks).
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()
    }

    /// Write everything buffered and `fdatasync` it: after this returns, every
    /// record appended so far survives a crash.
    pub fn sync(&mut self) -> io::Result<()> {
        let started = Instant::now();
        self.write_out()?;
        for f in self.unsynced.drain(..) {
            f.sync_data()?;
        }
        self.file.sync_data()?;
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.stats.syncs += 1;
        self.stats.sync_time += started.elapsed();
        self.collect_garbage();
        Ok(())
    }

    /// Delete the oldest segments while nothing in them is referenced. Only a
    /// prefix may go: a later segment may hold acks for messages in an earlier
    /// one, and deleting it alone would bring those messages back.
    pub fn collect_garbage(&mut self) {
        let dead: Vec<u32> = self
            .segs
            .iter()
            .take_while(|(n, s)| **n != self.cur && s.live == 0)
            .map(|(n, _)| *n)
            .collect();
        for n in dead {
            self.segs.remove(&n);
            self.readers.remove(&n);
            match fs::remove_file(seg_path(&self.dir, n)) {
                Ok(()) => self.dir_dirty = true,
                Err(e) => warn!("store: cannot delete segment {n:08}: {e}"),
            }
        }
        // The current segment is fully dead and big: start afresh so it can go.
        let cur_dead =
            self.segs.len() == 1 && self.segs.get(&self.cur).is_some_and(|s| s.live == 0);
        if cur_dead && self.file_len >= self.seg_size / 2 {
            if let Err(e) = self.roll() {
                warn!("store: cannot roll segment: {e}");
            }
        }
    }

    /// Clean shutdown: sync everything and write the index of live durable
    /// messages (queue store id, message, redelivered flag), so the next
    /// start skips the scan.
    pub fn close_clean(&mut self, live: &[(u64, RecoveredMsg)]) -> io::Result<()> {
        self.sync()?;
        let mut p = BytesMut::with_capacity(16 + live.len() * 48);
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
        }
        let tmp = self.dir.join("CLEAN.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&crc32c(&p).to_be_bytes())?;
        f.write_all(&p)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join(CLEAN))?;
        sync_dir(&self.dir)
    }

    /// Bytes on disk in segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.segs
            .keys()
            .filter_map(|n| fs::metadata(seg_path(&self.dir, *n)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        self.segs.len()
    }
}
