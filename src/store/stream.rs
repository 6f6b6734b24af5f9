//! A stream's log: an append-only sequence of segment files in
//! `data_dir/streams/<queue store id>/`, each named by the offset of its
//! first message (`00000000000000000000.seg`), or the same segments held in
//! memory when the broker has no data directory.
//!
//! Record layout: `len u32 | crc32c u32 | payload[len]`, payload =
//! `flags u8 | offset u64 | timestamp u64 (ms) | filter shortstr |
//! exchange shortstr | routing key shortstr | header longstr | body`.
//! Flag bit 0 marks the first record of a chunk: the records appended in one
//! loop turn, written and fdatasynced by one group commit (a stream's
//! `last` attaches to the start of the last chunk, as RabbitMQ's does).
//!
//! Readers never hold messages in memory: a [`Cursor`] reads ahead one block
//! (64 KiB, or one record if larger) from its position with `pread`, so
//! readers share the page cache and a 100 GB stream costs no more memory
//! than a small one. Per segment the log keeps a few numbers and a sparse
//! index (one entry per MiB) to find an offset or a timestamp.
//!
//! Retention drops whole segments, oldest first, when a segment rolls over
//! (as RabbitMQ evaluates it): while the log is over `x-max-length-bytes`,
//! or while its oldest segment's newest message is older than `x-max-age`.
//! The segment being written is never dropped.
//!
//! Recovery scans the segments once: a record that does not check out in
//! the last segment is a torn tail from a crash and is cut off; in an older
//! segment the rest of that segment is dropped (logged).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use log::{error, warn};

use super::crc::crc32c;
use super::disk::{Disk, Faults};

/// Bytes before a record's payload: length and checksum.
const REC_HEADER: usize = 8;
/// Fixed part of the payload: flags, offset, timestamp.
const FIXED: usize = 17;
/// Largest record accepted (a message is at most 128 MiB).
const MAX_RECORD: u32 = 256 << 20;
/// A reader's read-ahead block.
const READ_BLOCK: usize = 64 << 10;
/// One sparse-index entry per this many bytes of a segment.
const INDEX_EVERY: u64 = 1 << 20;
/// Flag: the first record of a chunk.
const F_CHUNK: u8 = 1;

/// RabbitMQ's default `x-stream-max-segment-size-bytes` (500 MB).
pub const DEFAULT_SEGMENT: u64 = 500_000_000;

/// A message read from the log: its record's payload (a slice of the
/// reader's read-ahead block, shared, not copied) and where its parts lie
/// in it. Reading one costs one reference to the block, whatever the
/// number of parts.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its offset.
    pub offset: u64,
    /// When it was appended (ms since the epoch).
    pub timestamp: u64,
    payload: Bytes,
    filter: Range<usize>,
    exchange: Range<usize>,
    routing_key: Range<usize>,
    header: Range<usize>,
    body: Range<usize>,
}

impl Record {
    fn part(&self, r: &Range<usize>) -> &[u8] {
        self.payload.get(r.clone()).unwrap_or_default()
    }

    /// Its `x-stream-filter-value`, if any.
    pub fn filter(&self) -> Option<&[u8]> {
        Some(self.part(&self.filter)).filter(|f| !f.is_empty())
    }

    /// Exchange it was published to.
    pub fn exchange(&self) -> &[u8] {
        self.part(&self.exchange)
    }

    /// Routing key.
    pub fn routing_key(&self) -> &[u8] {
        self.part(&self.routing_key)
    }

    /// Raw content header payload.
    pub fn header(&self) -> &[u8] {
        self.part(&self.header)
    }

    /// Body.
    pub fn body(&self) -> &[u8] {
        self.part(&self.body)
    }

    /// Body, as a shared slice of the block (to send a large one without
    /// copying it).
    pub fn body_bytes(&self) -> Bytes {
        if self.body.end <= self.payload.len() && self.body.start <= self.body.end {
            self.payload.slice(self.body.clone())
        } else {
            Bytes::new()
        }
    }
}

/// Where a reader attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// The first message still in the log.
    First,
    /// The start of the last chunk.
    Last,
    /// The next message appended.
    Next,
    /// This offset (clamped to what the log holds).
    Offset(u64),
    /// The first message appended at or after this time (ms since the
    /// epoch).
    Time(u64),
}

/// A reader's position in the log.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    /// The offset of the next message it reads.
    pub offset: u64,
    /// First offset of the segment it reads (its name).
    seg: u64,
    /// Byte position of the next record in that segment.
    pos: u64,
    /// Read-ahead: bytes of the segment from `buf_at`.
    buf: Bytes,
    buf_at: u64,
}

impl Cursor {
    /// Bytes of its read-ahead block.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    offset: u64,
    timestamp: u64,
    pos: u64,
}

/// One segment.
#[derive(Debug)]
struct Segment {
    /// Offset of its first message (its name).
    first: u64,
    /// Offset after its last message, written or pending.
    end: u64,
    /// Bytes written (and, after a commit, synced).
    size: u64,
    /// Records appended this turn, written by the next commit.
    pending: BytesMut,
    /// Timestamp of its newest message.
    last_ts: u64,
    /// The file, held open while it is written to or read at recovery
    /// (None in memory, and for a sealed, indexed segment: readers open
    /// it for each block they read, so a long stream holds no descriptor
    /// per segment).
    file: Option<File>,
    /// The bytes, for a log in memory.
    mem: Vec<u8>,
    /// Sparse index: offset, time and position of a record every MiB.
    index: Vec<IndexEntry>,
    /// The last chunk that starts in it: offset and position.
    chunk: Option<(u64, u64)>,
    /// No more records go to it (a later segment was started): its index
    /// file is written once its records are.
    sealed: bool,
    /// Its index file is on disk.
    indexed: bool,
}

impl Segment {
    fn new(first: u64, file: Option<File>) -> Segment {
        Segment {
            first,
            end: first,
            size: 0,
            pending: BytesMut::new(),
            last_ts: 0,
            file,
            mem: Vec::new(),
            index: Vec::new(),
            chunk: None,
            sealed: false,
            indexed: false,
        }
    }

    /// Its index file's contents: what recovery would learn by reading it
    /// (see [`Segment::load_index`]).
    fn index_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.index.len() * 24);
        b.extend_from_slice(IDX_MAGIC);
        for n in [self.first, self.end, self.size, self.last_ts] {
            b.extend_from_slice(&n.to_be_bytes());
        }
        let (co, cp) = self.chunk.unwrap_or((u64::MAX, u64::MAX));
        b.extend_from_slice(&co.to_be_bytes());
        b.extend_from_slice(&cp.to_be_bytes());
        b.extend_from_slice(&(self.index.len() as u64).to_be_bytes());
        for e in &self.index {
            for n in [e.offset, e.timestamp, e.pos] {
                b.extend_from_slice(&n.to_be_bytes());
            }
        }
        let crc = crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Take what an index file says, if it checks out and describes a
    /// segment of `len` bytes named `first`.
    fn load_index(&mut self, data: &[u8], len: u64) -> bool {
        let Some((body, crc)) = data.split_last_chunk::<4>() else {
            return false;
        };
        if crc32c(body) != u32::from_be_bytes(*crc) || !body.starts_with(IDX_MAGIC) {
            return false;
        }
        let mut words = body
            .get(IDX_MAGIC.len()..)
            .unwrap_or_default()
            .chunks_exact(8)
            .filter_map(|w| Some(u64::from_be_bytes(w.try_into().ok()?)));
        let mut next = || words.next();
        let (Some(first), Some(end), Some(size), Some(last_ts), Some(co), Some(cp), Some(n)) =
            (next(), next(), next(), next(), next(), next(), next())
        else {
            return false;
        };
        if first != self.first || size != len || end < first {
            return false;
        }
        let mut index = Vec::new();
        for _ in 0..n {
            let (Some(offset), Some(timestamp), Some(pos)) = (next(), next(), next()) else {
                return false;
            };
            index.push(IndexEntry {
                offset,
                timestamp,
                pos,
            });
        }
        self.end = end;
        self.size = size;
        self.last_ts = last_ts;
        self.chunk = (co != u64::MAX).then_some((co, cp));
        self.index = index;
        self.sealed = true;
        self.indexed = true;
        true
    }

    fn total(&self) -> u64 {
        self.size + self.pending.len() as u64
    }
}

/// A stream's log (see the module documentation).
#[derive(Debug)]
pub struct StreamLog {
    /// Segment directory; None: in memory.
    dir: Option<PathBuf>,
    dir_file: Option<File>,
    disk: Disk,
    segs: VecDeque<Segment>,
    /// The next offset to hand out.
    next: u64,
    /// Offsets below this are written and synced: readable.
    committed: u64,
    /// Largest segment (`x-stream-max-segment-size-bytes`).
    max_segment: u64,
    /// `x-max-length-bytes`.
    max_bytes: Option<u64>,
    /// `x-max-age` in milliseconds.
    max_age: Option<u64>,
    /// Start of the last committed chunk: offset, segment, position.
    last_chunk: Option<(u64, u64, u64)>,
    /// Start of the chunk being appended.
    open_chunk: Option<(u64, u64, u64)>,
    /// Files were created or removed since the last commit.
    dir_dirty: bool,
    /// Bytes of every segment, written and pending.
    bytes: u64,
    /// Records found damaged (recovery, reads).
    pub damaged: u64,
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn idx_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.idx"))
}

/// First bytes of an index file.
const IDX_MAGIC: &[u8] = b"warren-stream-index 1\n";

/// Limits of a stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `x-stream-max-segment-size-bytes`.
    pub max_segment: u64,
    /// `x-max-length-bytes`.
    pub max_bytes: Option<u64>,
    /// `x-max-age`, milliseconds.
    pub max_age: Option<u64>,
}

/// A record's payload, parsed: flags, offset, timestamp and where its
/// parts lie (filter, exchange, routing key, header, body).
struct Parsed {
    flags: u8,
    offset: u64,
    timestamp: u64,
    parts: [Range<usize>; 5],
}

/// Parse one record's payload (checked already).
fn parse(p: &[u8]) -> Option<Parsed> {
    let flags = *p.first()?;
    let offset = u64::from_be_bytes(p.get(1..9)?.try_into().ok()?);
    let timestamp = u64::from_be_bytes(p.get(9..17)?.try_into().ok()?);
    let mut at = FIXED;
    let mut short = || -> Option<Range<usize>> {
        let n = usize::from(*p.get(at)?);
        let r = at + 1..at + 1 + n;
        p.get(r.clone())?;
        at += 1 + n;
        Some(r)
    };
    let filter = short()?;
    let exchange = short()?;
    let routing_key = short()?;
    let hl = u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
    at += 4;
    p.get(at..at + hl)?;
    let header = at..at + hl;
    let body = at + hl..p.len();
    Some(Parsed {
        flags,
        offset,
        timestamp,
        parts: [filter, exchange, routing_key, header, body],
    })
}

impl Parsed {
    /// The record, its parts in `payload` (the bytes parsed).
    fn record(self, payload: Bytes) -> Record {
        let [filter, exchange, routing_key, header, body] = self.parts;
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            payload,
            filter,
            exchange,
            routing_key,
            header,
            body,
        }
    }
}

/// Check the record at the start of `buf`: `Ok(Some(total length))` when
/// it is whole and its checksum holds, `Ok(None)` when `buf` holds only its
/// beginning (of `need` bytes), `Err` when it is damaged.
fn frame(buf: &[u8]) -> Result<Result<usize, usize>, ()> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
    };
    let (Some(len), Some(crc)) = (word(0), word(4)) else {
        return Ok(Err(REC_HEADER));
    };
    if len > MAX_RECORD || (len as usize) < FIXED + 7 {
        return Err(());
    }
    let total = REC_HEADER + len as usize;
    let Some(payload) = buf.get(REC_HEADER..total) else {
        return Ok(Err(total));
    };
    if crc32c(payload) != crc {
        return Err(());
    }
    Ok(Ok(total))
}

impl StreamLog {
    /// Open (or create) the log in `dir`, recovering its segments; in
    /// memory when `dir` is None.
    pub fn open(
        dir: Option<PathBuf>,
        faults: Option<std::sync::Arc<Faults>>,
        limits: Limits,
    ) -> io::Result<StreamLog> {
        let disk = Disk::new(faults);
        let mut log = StreamLog {
            dir: dir.clone(),
            dir_file: None,
            disk,
            segs: VecDeque::new(),
            next: 0,
            committed: 0,
            max_segment: limits.max_segment.max(1),
            max_bytes: limits.max_bytes,
            max_age: limits.max_age,
            last_chunk: None,
            open_chunk: None,
            dir_dirty: false,
            bytes: 0,
            damaged: 0,
        };
        let Some(dir) = dir else {
            log.segs.push_back(Segment::new(0, None));
            return Ok(log);
        };
        log.disk.create_dir_all(&dir)?;
        log.dir_file = Some(log.disk.open_dir(&dir)?);
        let mut names: Vec<(u64, u64)> = log
            .disk
            .list(&dir)?
            .into_iter()
            .filter_map(|(name, len)| {
                let first = name.strip_suffix(".seg")?.parse::<u64>().ok()?;
                Some((first, len))
            })
            .collect();
        names.sort_unstable();
        let count = names.len();
        for (i, (first, len)) in names.into_iter().enumerate() {
            let path = seg_path(&dir, first);
            let file = log.disk.open_rw(&path)?;
            let mut seg = Segment::new(first.max(log.next), Some(file));
            let last = i + 1 == count;
            // A sealed segment's index file saves reading it whole; the
            // last segment is always read (its tail may be torn).
            let known = !last
                && seg.first == first
                && log
                    .disk
                    .read(&idx_path(&dir, first))
                    .is_ok_and(|data| seg.load_index(&data, len));
            if known {
                seg.file = None;
            } else {
                log.scan(&mut seg, len, last)?;
                seg.sealed = !last;
            }
            if let Some((o, p)) = seg.chunk {
                log.last_chunk = Some((o, seg.first, p));
            }
            log.next = seg.end;
            log.bytes += seg.size;
            log.segs.push_back(seg);
        }
        log.committed = log.next;
        if log.segs.is_empty() {
            let file = log.disk.create(&seg_path(&dir, 0), 0)?;
            log.segs.push_back(Segment::new(0, Some(file)));
            log.dir_dirty = true;
        }
        Ok(log)
    }

    /// Recovery: read segment `seg` (`len` bytes on disk) record by record,
    /// building its index; cut what does not check out.
    fn scan(&mut self, seg: &mut Segment, len: u64, last: bool) -> io::Result<()> {
        let mut pos = 0u64;
        let mut buf = Vec::new();
        let mut buf_at = 0u64;
        let mut next_index = 0u64;
        let mut expect: Option<u64> = None;
        let good_end = loop {
            if pos >= len {
                break pos;
            }
            let rel = (pos - buf_at) as usize;
            let framed = match buf.get(rel..) {
                Some(b) => frame(b),
                None => Ok(Err(REC_HEADER)),
            };
            let total = match framed {
                Ok(Ok(total)) => total,
                Ok(Err(need)) => {
                    if pos + need as u64 > len {
                        break pos;
                    }
                    let want = (need.max(READ_BLOCK) as u64).min(len - pos) as usize;
                    buf.resize(want, 0);
                    self.read_seg(seg, &mut buf, pos)?;
                    buf_at = pos;
                    continue;
                }
                Err(()) => break pos,
            };
            let rel = (pos - buf_at) as usize;
            let Some(payload) = buf.get(rel + REC_HEADER..rel + total) else {
                break pos;
            };
            let Some(rec) = parse(payload) else {
                break pos;
            };
            let flags = rec.flags;
            if expect.is_some_and(|e| rec.offset != e) || rec.offset < seg.first {
                break pos;
            }
            if expect.is_none() {
                seg.first = rec.offset;
            }
            expect = Some(rec.offset + 1);
            if pos >= next_index {
                seg.index.push(IndexEntry {
                    offset: rec.offset,
                    timestamp: rec.timestamp,
                    pos,
                });
                next_index = pos + INDEX_EVERY;
            }
            if flags & F_CHUNK != 0 {
                seg.chunk = Some((rec.offset, pos));
            }
            seg.last_ts = rec.timestamp;
            seg.end = rec.offset + 1;
            pos += total as u64;
        };
        seg.size = good_end;
        if good_end < len {
            self.damaged += 1;
            if last {
                warn!(
                    "stream segment {}: cutting a torn tail of {} bytes at {good_end}",
                    seg.first,
                    len - good_end
                );
            } else {
                error!(
                    "stream segment {}: damaged record at {good_end}; {} bytes after it dropped",
                    seg.first,
                    len - good_end
                );
            }
            match &seg.file {
                Some(file) => self.disk.truncate(file, good_end, 0)?,
                None => seg.mem.truncate(good_end as usize),
            }
        }
        if expect.is_none() {
            seg.end = seg.first;
        }
        Ok(())
    }

    /// Fill `buf` from segment `seg` at byte `pos` (its file, or its
    /// bytes in memory).
    fn read_seg(&self, seg: &Segment, buf: &mut [u8], pos: u64) -> io::Result<()> {
        match (&seg.file, &self.dir) {
            (Some(f), _) => self.disk.read_at(f, buf, pos),
            (None, Some(dir)) => {
                let f = self.disk.open(&seg_path(dir, seg.first))?;
                self.disk.read_at(&f, buf, pos)
            }
            (None, None) => {
                let from = usize::try_from(pos).ok();
                let src = from.and_then(|p| seg.mem.get(p..p.checked_add(buf.len())?));
                match src {
                    Some(b) => {
                        buf.copy_from_slice(b);
                        Ok(())
                    }
                    None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                }
            }
        }
    }

    /// Offset of the first message held.
    pub fn first_offset(&self) -> u64 {
        self.segs.front().map_or(self.committed, |s| s.first)
    }

    /// The next offset to be handed out.
    #[cfg(test)]
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Offsets below this are readable.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Readable messages.
    pub fn message_count(&self) -> u64 {
        self.committed.saturating_sub(self.first_offset())
    }

    /// Bytes of the log (written and pending).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// Appended records wait for a commit.
    pub fn has_pending(&self) -> bool {
        self.next > self.committed
    }

    /// Memory held besides the segments' fixed costs: pending records and
    /// indexes (and, in memory, the log itself).
    pub fn memory(&self) -> u64 {
        self.segs
            .iter()
            .map(|s| {
                (s.pending.capacity()
                    + s.mem.capacity()
                    + s.index.capacity() * std::mem::size_of::<IndexEntry>()) as u64
            })
            .sum()
    }

    /// New limits (a policy changed): retention applies them at the next
    /// roll-over, a segment size to the next segment.
    pub fn set_limits(&mut self, limits: Limits) {
        self.max_segment = limits.max_segment.max(1);
        self.max_bytes = limits.max_bytes;
        self.max_age = limits.max_age;
    }

    /// Append a message at time `now` (ms since the epoch); returns its
    /// offset. It becomes readable after the next [`StreamLog::commit`].
    pub fn append(
        &mut self,
        now: u64,
        filter: Option<&[u8]>,
        exchange: &[u8],
        routing_key: &[u8],
        header: &[u8],
        body: &[u8],
    ) -> u64 {
        let filter = filter.unwrap_or_default();
        let short = |s: &[u8]| s.get(..255).unwrap_or(s).len();
        let len = FIXED
            + 3
            + short(filter)
            + short(exchange)
            + short(routing_key)
            + 4
            + header.len()
            + body.len();
        let full = self.segs.back().is_some_and(|s| {
            s.end > s.first && s.total() + (REC_HEADER + len) as u64 > self.max_segment
        });
        if full || self.segs.is_empty() {
            self.roll(now);
        }
        let offset = self.next;
        let mut flags = 0;
        let Some(seg) = self.segs.back_mut() else {
            return offset;
        };
        let pos = seg.total();
        if self.open_chunk.is_none() {
            flags |= F_CHUNK;
            self.open_chunk = Some((offset, seg.first, pos));
            seg.chunk = Some((offset, pos));
        }
        if seg.index.last().is_none_or(|e| pos >= e.pos + INDEX_EVERY) {
            seg.index.push(IndexEntry {
                offset,
                timestamp: now,
                pos,
            });
        }
        let out = &mut seg.pending;
        out.reserve(REC_HEADER + len);
        out.put_u32(len as u32);
        let crc_at = out.len();
        out.put_u32(0);
        let start = out.len();
        out.put_u8(flags);
        out.put_u64(offset);
        out.put_u64(now);
        for s in [filter, exchange, routing_key] {
            let s = s.get(..255).unwrap_or(s);
            out.put_u8(s.len() as u8);
            out.put_slice(s);
        }
        out.put_u32(header.len() as u32);
        out.put_slice(header);
        out.put_slice(body);
        let crc = crc32c(out.get(start..).unwrap_or_default());
        if let Some(c) = out.get_mut(crc_at..crc_at + 4) {
            c.copy_from_slice(&crc.to_be_bytes());
        }
        seg.end = offset + 1;
        seg.last_ts = now;
        self.bytes += (REC_HEADER + len) as u64;
        self.next += 1;
        offset
    }

    /// Start a new segment (the last one is full); then apply retention.
    fn roll(&mut self, now: u64) {
        let first = self.next;
        let file = match &self.dir {
            None => None,
            Some(dir) => match self.disk.create(&seg_path(dir, first), 0) {
                Ok(f) => Some(f),
                Err(e) => {
                    // Keep appending to the segment we have.
                    error!("stream: cannot start segment {first}: {e}");
                    if !self.segs.is_empty() {
                        return;
                    }
                    None
                }
            },
        };
        self.dir_dirty = true;
        if let Some(prev) = self.segs.back_mut() {
            prev.sealed = true;
            // It takes no more appends: the capacity its append buffer
            // kept goes (with records still to write, the commit lets it
            // go).
            if prev.pending.is_empty() {
                prev.pending = BytesMut::new();
            }
        }
        self.segs.push_back(Segment::new(first, file));
        self.apply_retention(now);
    }

    /// Drop whole segments, oldest first, while the log is over its size
    /// limit or its oldest segment is past the age limit. Never the
    /// segment being written, nor one with records not yet written.
    pub fn apply_retention(&mut self, now: u64) {
        while self.segs.len() > 1 {
            let Some(old) = self.segs.front() else { break };
            if !old.pending.is_empty() {
                break;
            }
            let over = self.max_bytes.is_some_and(|m| self.bytes > m);
            let aged = self
                .max_age
                .is_some_and(|a| old.last_ts.saturating_add(a) < now);
            if !over && !aged {
                break;
            }
            let Some(old) = self.segs.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(old.size);
            if let Some(dir) = &self.dir {
                drop(old.file);
                if let Err(e) = self.disk.remove(&seg_path(dir, old.first), old.size) {
                    error!("stream: cannot remove segment {}: {e}", old.first);
                }
                if old.indexed {
                    let _ = self.disk.remove(&idx_path(dir, old.first), 0);
                }
                self.dir_dirty = true;
            }
            if self
                .last_chunk
                .is_some_and(|(o, _, _)| o < self.first_offset())
            {
                self.last_chunk = None;
            }
        }
    }

    /// Write the appended records and fdatasync them; then they are
    /// readable. Returns whether anything became readable. On an error
    /// nothing becomes readable and the records stay pending: the next
    /// commit writes them again, at the same place, and syncs again (after
    /// a failed fdatasync the kernel may have dropped the pages).
    pub fn commit(&mut self) -> io::Result<bool> {
        if !self.has_pending() {
            return Ok(false);
        }
        for seg in self.segs.iter().filter(|s| !s.pending.is_empty()) {
            if let Some(f) = &seg.file {
                let (_, res) = self.disk.write_at(f, &seg.pending, seg.size, 0);
                res?;
            }
        }
        for seg in self.segs.iter().filter(|s| !s.pending.is_empty()) {
            if let Some(f) = &seg.file {
                self.disk.sync_data(f)?;
            }
        }
        if self.dir_dirty {
            if let Some(d) = &self.dir_file {
                self.disk.sync_dir(d)?;
            }
            self.dir_dirty = false;
        }
        let in_memory = self.dir.is_none();
        let last = self.segs.len().saturating_sub(1);
        for (i, seg) in self.segs.iter_mut().enumerate() {
            if seg.pending.is_empty() {
                continue;
            }
            if in_memory {
                seg.mem.extend_from_slice(&seg.pending);
            }
            seg.size += seg.pending.len() as u64;
            if i == last {
                seg.pending.clear();
            } else {
                // A full segment takes no more appends: its buffer (as
                // large as the largest turn's appends) goes.
                seg.pending = BytesMut::new();
            }
        }
        self.committed = self.next;
        if let Some(c) = self.open_chunk.take() {
            self.last_chunk = Some(c);
        }
        self.write_indexes();
        Ok(true)
    }

    /// Write the index files of sealed segments whose records are all
    /// written. Not synced: one that is missing, torn or stale after a
    /// crash only means recovery reads that segment instead.
    fn write_indexes(&mut self) {
        let Some(dir) = &self.dir else {
            return;
        };
        for seg in self.segs.iter_mut() {
            if !seg.sealed || seg.indexed || !seg.pending.is_empty() {
                continue;
            }
            seg.indexed = true;
            let path = idx_path(dir, seg.first);
            let data = seg.index_bytes();
            let written = self.disk.create(&path, 0).and_then(|f| {
                let (_, r) = self.disk.write_at(&f, &data, 0, 0);
                r
            });
            match written {
                // Written and complete: readers open it when they read.
                Ok(()) => seg.file = None,
                Err(e) => warn!(
                    "stream: cannot write the index of segment {}: {e}",
                    seg.first
                ),
            }
        }
    }

    /// A cursor at `at`.
    pub fn attach(&mut self, at: Attach) -> Cursor {
        let first = self.first_offset();
        let at = match at {
            Attach::Offset(n) if n <= first => Attach::First,
            Attach::Offset(n) if n >= self.committed => Attach::Next,
            Attach::Last if self.last_chunk.is_none() => Attach::Next,
            other => other,
        };
        match at {
            Attach::First => self.cursor_at_segment(0),
            Attach::Next => self.end_cursor(),
            Attach::Last => match self.last_chunk {
                Some((offset, seg, pos)) => Cursor {
                    offset,
                    seg,
                    pos,
                    ..Cursor::default()
                },
                None => self.end_cursor(),
            },
            Attach::Offset(n) => self.seek(|e| e.offset <= n, |r| r.offset >= n),
            Attach::Time(t) => self.seek(|e| e.timestamp < t, |r| r.timestamp >= t),
        }
    }

    fn cursor_at_segment(&self, i: usize) -> Cursor {
        match self.segs.get(i) {
            Some(s) => Cursor {
                offset: s.first,
                seg: s.first,
                pos: 0,
                ..Cursor::default()
            },
            None => self.end_cursor(),
        }
    }

    /// A cursor after the last readable message.
    fn end_cursor(&self) -> Cursor {
        // The segment holding the committed end, at its written end.
        let seg = self
            .segs
            .iter()
            .rev()
            .find(|s| s.first <= self.committed && s.size > 0)
            .or_else(|| self.segs.front());
        match seg {
            Some(s) => Cursor {
                offset: self.committed,
                seg: s.first,
                pos: s.size,
                ..Cursor::default()
            },
            None => Cursor {
                offset: self.committed,
                ..Cursor::default()
            },
        }
    }

    /// A cursor at the first readable record for which `found` holds:
    /// starting from the last index entry (in the first segment that may
    /// hold it) for which `before` holds.
    fn seek(
        &mut self,
        before: impl Fn(&IndexEntry) -> bool,
        found: impl Fn(&Record) -> bool,
    ) -> Cursor {
        // The last segment whose first index entry is still "before".
        let mut si = 0;
        for (i, s) in self.segs.iter().enumerate() {
            if s.index.first().is_some_and(&before) {
                si = i;
            }
        }
        let Some(seg) = self.segs.get(si) else {
            return self.end_cursor();
        };
        let start = seg
            .index
            .iter()
            .rev()
            .find(|e| before(e))
            .copied()
            .unwrap_or(IndexEntry {
                offset: seg.first,
                timestamp: 0,
                pos: 0,
            });
        let mut c = Cursor {
            offset: start.offset,
            seg: seg.first,
            pos: start.pos,
            ..Cursor::default()
        };
        loop {
            let here = c.clone();
            match self.read(&mut c) {
                Ok(Some(r)) if found(&r) => {
                    return Cursor {
                        buf: Bytes::new(),
                        buf_at: 0,
                        ..here
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return self.end_cursor(),
            }
        }
    }

    /// The next readable message at `c`, advancing it; None when it has
    /// read everything committed. A cursor left behind by retention moves
    /// to the first message held.
    pub fn read(&mut self, c: &mut Cursor) -> io::Result<Option<Record>> {
        loop {
            if c.offset >= self.committed {
                return Ok(None);
            }
            let first = self.first_offset();
            if c.offset < first || c.seg < first {
                *c = self.cursor_at_segment(0);
                continue;
            }
            let Some(i) = self.segs.iter().position(|s| s.first == c.seg) else {
                *c = self.cursor_at_segment(0);
                continue;
            };
            let Some(seg) = self.segs.get(i) else {
                return Ok(None);
            };
            if c.pos >= seg.size {
                // Its end: the next segment.
                match self.segs.get(i + 1) {
                    Some(n) => {
                        c.seg = n.first;
                        c.pos = 0;
                        c.buf = Bytes::new();
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let size = seg.size;
            let in_buf = c.pos >= c.buf_at && c.pos < c.buf_at + c.buf.len() as u64;
            let rel = if in_buf {
                (c.pos - c.buf_at) as usize
            } else {
                usize::MAX
            };
            let framed = match c.buf.get(rel..) {
                Some(b) => frame(b),
                None => Ok(Err(REC_HEADER)),
            };
            match framed {
                Ok(Ok(total)) => {
                    let parsed = c.buf.get(rel + REC_HEADER..rel + total).and_then(parse);
                    let Some(parsed) = parsed else {
                        self.skip_damaged(c, i);
                        continue;
                    };
                    let rec = parsed.record(c.buf.slice(rel + REC_HEADER..rel + total));
                    c.pos += total as u64;
                    c.offset = rec.offset + 1;
                    return Ok(Some(rec));
                }
                Ok(Err(need)) => {
                    if c.pos + need as u64 > size {
                        self.skip_damaged(c, i);
                        continue;
                    }
                    let want = (need.max(READ_BLOCK) as u64).min(size - c.pos) as usize;
                    let mut buf = vec![0u8; want];
                    self.read_seg(seg, &mut buf, c.pos)?;
                    c.buf = Bytes::from(buf);
                    c.buf_at = c.pos;
                }
                Err(()) => {
                    self.skip_damaged(c, i);
                }
            }
        }
    }

    /// A damaged record where `c` reads in segment `i`: the rest of that
    /// segment is skipped.
    fn skip_damaged(&mut self, c: &mut Cursor, i: usize) {
        self.damaged += 1;
        error!(
            "stream: damaged record at offset {} (segment {}, byte {}); skipping the rest of the segment",
            c.offset, c.seg, c.pos
        );
        match self.segs.get(i + 1) {
            Some(n) => {
                c.offset = n.first;
                c.seg = n.first;
                c.pos = 0;
            }
            None => {
                c.offset = self.committed;
                if let Some(s) = self.segs.get(i) {
                    c.pos = s.size;
                }
            }
        }
        c.buf = Bytes::new();
    }

    /// Delete the log's files (the stream was deleted).
    pub fn destroy(mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        let sizes: Vec<(u64, u64)> = self.segs.iter().map(|s| (s.first, s.size)).collect();
        self.segs.clear();
        // Every file in its directory: segments, index files, and any a
        // crash left half made.
        for (name, len) in self.disk.list(&dir).unwrap_or_default() {
            let freed = sizes
                .iter()
                .find(|(f, _)| name == format!("{f:020}.seg"))
                .map_or(len, |&(_, s)| s);
            if let Err(e) = self.disk.remove(&dir.join(&name), freed) {
                warn!("stream: cannot remove {name}: {e}");
            }
        }
        drop(self.dir_file.take());
        if let Err(e) = std::fs::remove_dir(&dir) {
            warn!("stream: cannot remove {}: {e}", dir.display());
        }
    }
}

/// The `stream_log` fuzz target's entry point and its seeds: `data` is a
/// segment's bytes as a crash or a damaged disk may leave them. Recovery
/// never panics and keeps a prefix of whole, checked records with
/// consecutive offsets; readers attached anywhere read only those, in
/// order.
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzzing {
    // As in `codec::fuzzing`: a broken invariant is meant to panic here.
    #![allow(clippy::expect_used, clippy::panic)]

    use super::*;

    /// Recover a segment holding `data`, then read it.
    pub fn fuzz_segment(data: &[u8]) {
        let limits = Limits {
            max_segment: DEFAULT_SEGMENT,
            max_bytes: None,
            max_age: None,
        };
        let mut log = StreamLog::open(None, None, limits).expect("in memory");
        let mut seg = Segment::new(0, None);
        seg.mem = data.to_vec();
        log.segs.clear();
        log.scan(&mut seg, data.len() as u64, true)
            .expect("in memory");
        assert!(seg.size as usize <= data.len());
        assert_eq!(seg.mem.len() as u64, seg.size);
        log.next = seg.end;
        log.committed = seg.end;
        log.bytes = seg.size;
        let (first, end) = (seg.first, seg.end);
        log.segs.push_back(seg);
        let at = [
            Attach::First,
            Attach::Last,
            Attach::Next,
            Attach::Offset(first.saturating_add(data.len() as u64 % 7)),
            Attach::Time(data.len() as u64),
        ];
        for a in at {
            let mut c = log.attach(a);
            let mut prev: Option<u64> = None;
            while let Some(r) = log.read(&mut c).expect("in memory") {
                assert!(
                    r.offset >= first && r.offset < end,
                    "{} outside {first}..{end}",
                    r.offset
                );
                if let Some(p) = prev {
                    assert_eq!(r.offset, p + 1);
                }
                prev = Some(r.offset);
            }
            if a == Attach::First {
                assert_eq!(prev.map_or(first, |p| p + 1), end, "first reads everything");
            }
        }
        // Appending after recovery goes on from the end.
        let o = log.append(1, None, b"", b"k", b"", b"x");
        assert_eq!(o, end);
    }

    /// Named seeds: valid segments (filters, large records, several
    /// chunks) and damaged ones.
    pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let seg = |chunks: &[usize], body: usize| -> Vec<u8> {
            let limits = Limits {
                max_segment: DEFAULT_SEGMENT,
                max_bytes: None,
                max_age: None,
            };
            let mut log = StreamLog::open(None, None, limits).expect("in memory");
            let mut n = 0u64;
            for &k in chunks {
                for _ in 0..k {
                    let filter = n.is_multiple_of(3).then_some(&b"red"[..]);
                    let b = vec![b'a' + (n % 26) as u8; body];
                    log.append(1000 + n, filter, b"amq.direct", b"key", b"\x00\x3c", &b);
                    n += 1;
                }
                log.commit().expect("in memory");
            }
            log.segs.front().map(|s| s.mem.clone()).unwrap_or_default()
        };
        let good = seg(&[3, 1, 4], 10);
        let mut torn = good.clone();
        torn.truncate(good.len() - 5);
        let mut flipped = good.clone();
        if let Some(b) = flipped.get_mut(30) {
            *b ^= 0x40;
        }
        let mut huge_len = good.clone();
        if let Some(b) = huge_len.get_mut(0) {
            *b = 0xff;
        }
        vec![
            ("chunks", good),
            ("one-large", seg(&[1], 70_000)),
            ("empty", Vec::new()),
            ("torn-tail", torn),
            ("flipped-byte", flipped),
            ("huge-length", huge_len),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(seg: u64) -> Limits {
        Limits {
            max_segment: seg,
            max_bytes: None,
            max_age: None,
        }
    }

    fn all(log: &mut StreamLog, c: &mut Cursor) -> Vec<u64> {
        let mut v = Vec::new();
        while let Some(r) = log.read(c).unwrap() {
            v.push(r.offset);
        }
        v
    }

    fn put(log: &mut StreamLog, now: u64, n: usize) {
        for i in 0..n {
            let body = format!("m{i}");
            log.append(now, None, b"", b"s", b"hdr", body.as_bytes());
        }
        log.commit().unwrap();
    }

    #[test]
    fn append_commit_read_in_memory() {
        let mut log = StreamLog::open(None, None, limits(DEFAULT_SEGMENT)).unwrap();
        let mut c = log.attach(Attach::First);
        log.append(5, Some(b"f"), b"x", b"rk", b"H", b"body");
        assert_eq!(log.read(&mut c).unwrap().map(|r| r.offset), None);
        log.commit().unwrap();
        let r = log.read(&mut c).unwrap().unwrap();
        assert_eq!(
            (
                r.offset,
                r.timestamp,
                r.filter(),
                r.exchange(),
                r.routing_key(),
                r.header(),
                r.body()
            ),
            (
                0,
                5,
                Some(&b"f"[..]),
                &b"x"[..],
                &b"rk"[..],
                &b"H"[..],
                &b"body"[..]
            )
        );
        assert_eq!(&r.body_bytes()[..], b"body");
        assert!(log.read(&mut c).unwrap().is_none());
        // No filter, the default exchange, an empty body.
        log.append(6, None, b"", b"q", b"HH", b"");
        log.commit().unwrap();
        let r = log.read(&mut c).unwrap().unwrap();
        assert_eq!(
            (
                r.offset,
                r.filter(),
                r.exchange(),
                r.routing_key(),
                r.header()
            ),
            (1, None, &b""[..], &b"q"[..], &b"HH"[..])
        );
        assert!(r.body().is_empty() && r.body_bytes().is_empty());
    }

    #[test]
    fn attach_points_and_segments() {
        let mut log = StreamLog::open(None, None, limits(200)).unwrap();
        put(&mut log, 1000, 10);
        put(&mut log, 2000, 10);
        assert!(log.segment_count() > 2);
        let mut c = log.attach(Attach::First);
        assert_eq!(all(&mut log, &mut c), (0..20).collect::<Vec<_>>());
        let mut c = log.attach(Attach::Last);
        assert_eq!(all(&mut log, &mut c), (10..20).collect::<Vec<_>>());
        let mut c = log.attach(Attach::Offset(7));
        assert_eq!(all(&mut log, &mut c), (7..20).collect::<Vec<_>>());
        let mut c = log.attach(Attach::Time(1500));
        assert_eq!(all(&mut log, &mut c), (10..20).collect::<Vec<_>>());
        let mut c = log.attach(Attach::Next);
        assert!(all(&mut log, &mut c).is_empty());
        put(&mut log, 3000, 2);
        assert_eq!(all(&mut log, &mut c), vec![20, 21]);
        let mut c = log.attach(Attach::Offset(1000));
        assert_eq!(c.offset, 22);
        assert!(all(&mut log, &mut c).is_empty());
    }

    #[test]
    fn retention_drops_whole_segments() {
        let mut log = StreamLog::open(
            None,
            None,
            Limits {
                max_segment: 200,
                max_bytes: Some(500),
                max_age: None,
            },
        )
        .unwrap();
        let mut c = log.attach(Attach::First);
        for _ in 0..10 {
            put(&mut log, 1, 10);
        }
        assert!(log.bytes() <= 500 + 200);
        assert!(log.first_offset() > 0);
        let first = log.first_offset();
        assert_eq!(all(&mut log, &mut c).first(), Some(&first));
        let mut c = log.attach(Attach::Offset(0));
        assert_eq!(c.offset, first);
        assert_eq!(all(&mut log, &mut c).len() as u64, 100 - first);
    }

    #[test]
    fn full_segments_keep_no_append_buffer() {
        let dir = std::env::temp_dir().join(format!("warren-stream-mem-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = StreamLog::open(Some(dir.clone()), None, limits(4096)).unwrap();
        let body = [7u8; 1000];
        // Turns of 3 KiB and 9 KiB: segments roll inside a turn and between
        // turns; each commit's buffer is as large as its turn.
        for turn in 0..200u64 {
            for _ in 0..(if turn % 2 == 0 { 3 } else { 9 }) {
                log.append(turn, None, b"", b"s", b"hdr", &body);
            }
            log.commit().unwrap();
        }
        assert!(log.segment_count() > 100);
        // What is left: the last segment's buffer and the indexes.
        let bound = 16 * 1024 + log.segment_count() as u64 * 4 * 24;
        assert!(log.memory() < bound, "{} >= {bound}", log.memory());
        let mut c = log.attach(Attach::First);
        assert_eq!(all(&mut log, &mut c).len(), 1200);
        log.destroy();
    }

    #[test]
    fn files_survive_reopen_and_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("warren-stream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut log = StreamLog::open(Some(dir.clone()), None, limits(300)).unwrap();
            put(&mut log, 10, 20);
            put(&mut log, 20, 5);
        }
        // A torn tail: half a record after the last one.
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let last = names.last().unwrap().clone();
        let mut bytes = std::fs::read(&last).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 40, 1, 2]);
        std::fs::write(&last, &bytes).unwrap();
        let mut log = StreamLog::open(Some(dir.clone()), None, limits(300)).unwrap();
        assert_eq!(log.next_offset(), 25);
        let mut c = log.attach(Attach::First);
        assert_eq!(all(&mut log, &mut c), (0..25).collect::<Vec<_>>());
        let mut c = log.attach(Attach::Last);
        assert_eq!(all(&mut log, &mut c), (20..25).collect::<Vec<_>>());
        put(&mut log, 30, 1);
        assert_eq!(all(&mut log, &mut c), vec![25]);
        log.destroy();
        assert!(!dir.exists());
    }

    #[test]
    fn fuzz_seeds_hold() {
        for (name, data) in fuzzing::seeds() {
            fuzzing::fuzz_segment(&data);
            let _ = name;
        }
    }

    #[test]
    fn sealed_segments_recover_from_their_index_files() {
        let dir = std::env::temp_dir().join(format!("warren-stream-idx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut log = StreamLog::open(Some(dir.clone()), None, limits(300)).unwrap();
            for i in 0..10 {
                put(&mut log, 100 + i, 3);
            }
        }
        let idx: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "idx"))
            .collect();
        assert!(idx.len() >= 3, "{idx:?}");
        let check = |dir: &PathBuf| {
            let mut log = StreamLog::open(Some(dir.clone()), None, limits(300)).unwrap();
            assert_eq!(log.next_offset(), 30);
            let mut c = log.attach(Attach::First);
            assert_eq!(all(&mut log, &mut c), (0..30).collect::<Vec<_>>());
            let mut c = log.attach(Attach::Last);
            assert_eq!(all(&mut log, &mut c), vec![27, 28, 29]);
            let mut c = log.attach(Attach::Time(105));
            assert_eq!(all(&mut log, &mut c), (15..30).collect::<Vec<_>>());
        };
        check(&dir);
        // A damaged or stale index file: the segment is read instead.
        let mut b = std::fs::read(&idx[0]).unwrap();
        b[30] ^= 1;
        std::fs::write(&idx[0], &b).unwrap();
        std::fs::write(&idx[1], b"short").unwrap();
        check(&dir);
        let log = StreamLog::open(Some(dir.clone()), None, limits(300)).unwrap();
        log.destroy();
        assert!(!dir.exists());
    }

    #[test]
    fn flipped_byte_is_skipped_not_delivered() {
        let mut log = StreamLog::open(None, None, limits(DEFAULT_SEGMENT)).unwrap();
        put(&mut log, 1, 3);
        if let Some(s) = log.segs.front_mut() {
            let n = s.mem.len();
            s.mem[n - 2] ^= 0xff;
        }
        let mut c = log.attach(Attach::First);
        assert_eq!(all(&mut log, &mut c), vec![0, 1]);
        assert_eq!(log.damaged, 1);
    }
}
