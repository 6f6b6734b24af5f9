//! Spill files: the middle of a deep queue, on disk. A queue keeps in
//! memory a window at its head (what goes out next) and at its tail (what
//! came in last); what lies between is written here, in batches, and read
//! back a batch at a time, in order, when the head window runs low. A
//! spilled message costs no memory: its entry is on disk (the message
//! whole when its body is small and it was in memory, so that reading it
//! back takes no read of its own; else the stub that names where its
//! content is in the message log, see `broker::message`), and the queue
//! keeps only a summary per spill file (its batches' sizes
//! and counts, and the message-log segments its entries refer to, run
//! length encoded), so that a spilled queue is counted, purged and deleted
//! without reading it.
//!
//! Batch layout: `len u32 | crc32c u32 | entries[len]`; the entries'
//! encoding belongs to `broker::message::QueuedMsg`. Files are
//! `spill/NNNNNNNNNNNNNNNN.spl`, each holding batches of one queue's
//! priority level; a file is removed once read to its end. Spill files are
//! a cache of what the message log holds: they are not synced while the
//! broker runs; a clean stop syncs those of durable queues and names them
//! in its index (see `Store::close_clean`).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use log::{error, info, warn};

use super::crc::crc32c;
use super::disk::Disk;
use super::{repeats, Throttle, RETRY_AFTER};

/// A new file is started once the current one holds this much.
const FILE_MAX: u64 = 16 << 20;
/// Header of a batch: length and checksum (a message log record's).
const BATCH_HEADER: usize = super::REC_HEADER;

/// References to message-log segments, run-length encoded in entry order:
/// (segment, durable, entries).
pub type Runs = VecDeque<(u32, bool, u32)>;

/// The segment of a spilled transient message that is not in the log
/// (whole in its entry): every entry has a reference in its file's runs,
/// so that a batch's are its first `count`; this one pins and releases
/// nothing.
pub const NO_SEGMENT: u32 = u32::MAX;

/// Add one reference to `runs`.
pub fn push_run(runs: &mut Runs, seg: u32, durable: bool) {
    match runs.back_mut() {
        Some((s, d, n)) if *s == seg && *d == durable && *n < u32::MAX => *n += 1,
        _ => runs.push_back((seg, durable, 1)),
    }
}

/// Take the first `n` references off `runs` (read back, or dropped), adding
/// them to `out`.
fn take_runs(runs: &mut Runs, mut n: u64, out: &mut Runs) {
    while n > 0 {
        let Some(front) = runs.front_mut() else {
            return;
        };
        let k = u64::from(front.2).min(n);
        out.push_back((front.0, front.1, k as u32));
        front.2 -= k as u32;
        n -= k;
        if front.2 == 0 {
            runs.pop_front();
        }
    }
}

/// One batch's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Bytes on disk, header included.
    pub len: u32,
    /// Entries in it.
    pub count: u32,
    /// Body bytes of their messages.
    pub bytes: u64,
    /// Entries of persistent messages in durable queues (what a restart
    /// keeps), and their body bytes.
    pub durable: (u32, u64),
}

/// One spill file's unread part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillFile {
    /// File number.
    pub id: u64,
    /// Offset of the first unread batch.
    pub read: u64,
    /// Bytes written (the offset of the next batch).
    pub len: u64,
    /// Unread batches, oldest first.
    pub batches: VecDeque<Batch>,
    /// The segments the unread entries refer to.
    pub refs: Runs,
}

/// The spilled part of a queue level: files, oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Spill {
    /// Its files.
    pub files: VecDeque<SpillFile>,
    /// Entries in them, unread.
    pub count: u64,
    /// Body bytes of those.
    pub bytes: u64,
    /// Restored after a restart: entries of transient messages in its
    /// batches are skipped (they were not counted).
    pub durable_only: bool,
    /// Restored from a checkpoint: messages (ids) acknowledged after it,
    /// dropped as they are read back (they are still counted until then).
    pub skip: std::collections::HashSet<u64>,
    /// Restored from a checkpoint: messages delivered after it, marked
    /// redelivered as they are read back.
    pub seen: std::collections::HashSet<u64>,
}

impl Spill {
    /// Nothing spilled.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.files.is_empty()
    }

    /// Bytes of memory the summary takes (roughly).
    pub fn memory(&self) -> u64 {
        self.files
            .iter()
            .map(|f| 96 + f.batches.len() as u64 * 16 + f.refs.len() as u64 * 12)
            .sum()
    }
}

impl Spill {
    /// What a restart keeps of it: the durable entries' counts, and their
    /// references (see [`Spill::durable_only`]).
    pub fn durable_view(&self) -> Spill {
        let files = self
            .files
            .iter()
            .map(|f| SpillFile {
                id: f.id,
                read: f.read,
                len: f.len,
                batches: f
                    .batches
                    .iter()
                    .map(|b| Batch {
                        count: b.durable.0,
                        bytes: b.durable.1,
                        ..*b
                    })
                    .collect(),
                refs: f.refs.iter().filter(|r| r.1).copied().collect(),
            })
            .filter(|f| f.batches.iter().any(|b| b.count > 0))
            .collect::<VecDeque<_>>();
        let count = files
            .iter()
            .flat_map(|f| f.batches.iter())
            .map(|b| u64::from(b.count))
            .sum();
        let bytes = files
            .iter()
            .flat_map(|f| f.batches.iter())
            .map(|b| b.bytes)
            .sum();
        Spill {
            files,
            count,
            bytes,
            durable_only: true,
            ..Spill::default()
        }
    }
}

/// A batch read back: its entries, and the references they hold.
#[derive(Debug)]
pub struct ReadBatch {
    /// The entries (see `QueuedMsg::from_spill`).
    pub entries: Bytes,
    /// How many.
    pub count: u32,
    /// Body bytes of those.
    pub bytes: u64,
}

/// Why a batch could not be read back.
#[derive(Debug)]
pub enum ReadError {
    /// For now (out of file descriptors): try again later.
    Later(io::Error),
    /// The batch is gone or damaged: its entries are lost; `refs` are the
    /// references they held (for the caller to release), `count` and
    /// `bytes` what they were.
    Lost {
        /// What happened.
        error: io::Error,
        /// Entries lost.
        count: u64,
        /// Their body bytes.
        bytes: u64,
        /// Their references.
        refs: Runs,
    },
}

/// The spill directory.
#[derive(Debug)]
pub struct Spiller {
    dir: PathBuf,
    disk: Disk,
    next_id: u64,
    /// Writing failed: nothing is spilled before this time.
    retry_at: Option<Instant>,
    throttle: Throttle,
    /// Bytes written, read.
    pub written: u64,
    /// Bytes read back.
    pub read: u64,
    /// Files read to their end or dropped, removed at the next checkpoint.
    retired: Vec<(u64, u64)>,
    /// A checkpoint exists (files it may name are kept until the next).
    pub(super) keep_retired: bool,
}

/// The path of spill file `id` in `dir`.
pub(super) fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.spl"))
}

impl Spiller {
    /// The spill directory `dir` (created); files in it that `keep` does
    /// not name are removed (a crash, or queues gone).
    pub(super) fn open(disk: &Disk, dir: &Path, keep: &dyn Fn(u64) -> bool) -> io::Result<Spiller> {
        disk.create_dir_all(dir)?;
        let mut next_id = 0;
        let mut removed = 0u64;
        for (name, len) in disk.list(dir)? {
            let Some(id) = name
                .strip_suffix(".spl")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            next_id = next_id.max(id + 1);
            if !keep(id) && disk.remove(&path(dir, id), len).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            info!("spill: removed {removed} files no queue refers to");
        }
        Ok(Spiller {
            dir: dir.to_path_buf(),
            disk: disk.clone(),
            next_id,
            retry_at: None,
            throttle: Throttle::default(),
            written: 0,
            read: 0,
            retired: Vec::new(),
            keep_retired: false,
        })
    }

    /// True when spilling may be tried at `now` (not right after a failure).
    pub fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    /// Append a batch of entries (`batch` counts them; its `len` is set
    /// here), referring to `refs`, to `spill`. On error nothing changes (the caller keeps the
    /// entries in memory) and spilling pauses for a while.
    pub fn write(
        &mut self,
        spill: &mut Spill,
        entries: &[u8],
        batch: Batch,
        refs: &Runs,
        now: Instant,
    ) -> io::Result<()> {
        let res = self.try_write(spill, entries, batch, refs);
        match &res {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    info!("spill: writing works again");
                }
            }
            Err(e) => {
                self.retry_at = Some(now + RETRY_AFTER);
                if let Some(n) = self.throttle.hit(now) {
                    error!(
                        "spill: cannot write to {}: {e}; the queue keeps its messages in memory{}",
                        self.dir.display(),
                        repeats(n)
                    );
                }
            }
        }
        res
    }

    fn try_write(
        &mut self,
        spill: &mut Spill,
        entries: &[u8],
        batch: Batch,
        refs: &Runs,
    ) -> io::Result<()> {
        let len = BATCH_HEADER + entries.len();
        let mut buf = Vec::with_capacity(len);
        super::frame_record(&mut buf, entries);
        let fresh = spill.files.back().is_none_or(|f| f.len >= FILE_MAX);
        let id = if fresh {
            self.next_id
        } else {
            spill.files.back().map_or(0, |f| f.id)
        };
        let at = if fresh {
            0
        } else {
            spill.files.back().map_or(0, |f| f.len)
        };
        let p = path(&self.dir, id);
        let file = if fresh {
            self.disk.create(&p, 0)?
        } else {
            self.disk.open_rw(&p)?
        };
        let (n, res) = self.disk.write_at(&file, &buf, at, 0);
        if let Err(e) = res {
            drop(file);
            if fresh {
                let _ = self.disk.remove(&p, n as u64);
            } else if let Ok(f) = OpenOptions::new().write(true).open(&p) {
                let _ = self.disk.truncate(&f, at, n as u64);
            }
            return Err(e);
        }
        if fresh {
            self.next_id += 1;
            spill.files.push_back(SpillFile {
                id,
                read: 0,
                len: 0,
                batches: VecDeque::new(),
                refs: VecDeque::new(),
            });
        }
        if let Some(f) = spill.files.back_mut() {
            f.len += len as u64;
            f.batches.push_back(Batch {
                len: len as u32,
                ..batch
            });
            for &(s, d, k) in refs {
                match f.refs.back_mut() {
                    Some((s2, d2, n2)) if *s2 == s && *d2 == d && n2.checked_add(k).is_some() => {
                        *n2 += k
                    }
                    _ => f.refs.push_back((s, d, k)),
                }
            }
        }
        spill.count += u64::from(batch.count);
        spill.bytes += batch.bytes;
        self.written += len as u64;
        Ok(())
    }

    /// Read the oldest batch of `spill` back: it leaves the spill (a file
    /// read to its end is removed), and the references its entries hold go
    /// with them (to the queue's memory, or back to the caller if lost).
    pub fn read(&mut self, spill: &mut Spill) -> Result<ReadBatch, ReadError> {
        // Files emptied by an earlier failure.
        while spill.files.front().is_some_and(|f| f.batches.is_empty()) {
            if let Some(f) = spill.files.pop_front() {
                self.remove(f.id, f.len);
            }
        }
        let Some(f) = spill.files.front_mut() else {
            spill.count = 0;
            spill.bytes = 0;
            return Err(ReadError::Later(io::Error::other("spill summary is empty")));
        };
        let Some(b) = f.batches.front().copied() else {
            return Err(ReadError::Later(io::Error::other("no batch")));
        };
        let p = path(&self.dir, f.id);
        let got = self.disk.open(&p).and_then(|file| {
            let mut data = vec![0u8; b.len as usize];
            self.disk.read_at(&file, &mut data, f.read)?;
            Ok(data)
        });
        let res = match got {
            Err(e) if super::out_of_descriptors(&e) => return Err(ReadError::Later(e)),
            Err(e) => Err(e),
            Ok(data) => check_batch(data, b.len as usize),
        };
        f.batches.pop_front();
        f.read += u64::from(b.len);
        spill.count = spill.count.saturating_sub(u64::from(b.count));
        spill.bytes = spill.bytes.saturating_sub(b.bytes);
        self.read += u64::from(b.len);
        let done = f.batches.is_empty();
        let mut refs = Runs::new();
        take_runs(&mut f.refs, u64::from(b.count), &mut refs);
        let out = match res {
            Ok(entries) => Ok(ReadBatch {
                entries,
                count: b.count,
                bytes: b.bytes,
            }),
            Err(error) => Err(ReadError::Lost {
                error,
                count: u64::from(b.count),
                bytes: b.bytes,
                refs,
            }),
        };
        if done {
            if let Some(f) = spill.files.pop_front() {
                self.remove(f.id, f.len);
            }
        }
        out
    }

    /// Hand every unread batch of `spill` to `f` (its entries), leaving
    /// the spill as it is: a restart rebuilding what a queue keeps of its
    /// spilled messages. A batch that does not check is left out (it is
    /// dropped, and logged, when it is read back for delivery).
    pub fn peek(&self, spill: &Spill, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        for file in &spill.files {
            let handle = self.disk.open(&path(&self.dir, file.id))?;
            let mut at = file.read;
            for b in &file.batches {
                let mut data = vec![0u8; b.len as usize];
                self.disk.read_at(&handle, &mut data, at)?;
                at += u64::from(b.len);
                if let Ok(entries) = check_batch(data, b.len as usize) {
                    f(&entries);
                }
            }
        }
        Ok(())
    }

    /// A file is no longer needed: removed at the next checkpoint (the
    /// last one may name it).
    fn remove(&mut self, id: u64, len: u64) {
        self.retired.push((id, len));
        if !self.keep_retired {
            self.forget_retired();
        }
    }

    /// Bytes of the files retired and not yet removed.
    pub fn retired_bytes(&self) -> u64 {
        self.retired.iter().map(|r| r.1).sum()
    }

    /// Remove the files retired before the last checkpoint (or clean stop),
    /// which no longer names them.
    pub(super) fn forget_retired(&mut self) {
        for (id, len) in std::mem::take(&mut self.retired) {
            if let Err(e) = self.disk.remove(&path(&self.dir, id), len) {
                warn!("spill: cannot remove file {id:016}: {e}");
            }
        }
    }

    /// Drop a whole spill (purge, delete): its files are removed; returns
    /// the references its entries held, for the caller to release.
    pub fn discard(&mut self, spill: Spill) -> Runs {
        let mut refs = Runs::new();
        for f in spill.files {
            refs.extend(f.refs);
            self.remove(f.id, f.len);
        }
        refs
    }

    /// Sync the files of `spill` (a clean stop keeps them).
    pub fn sync(&self, spill: &Spill) -> io::Result<()> {
        for f in &spill.files {
            let file = self.disk.open_rw(&path(&self.dir, f.id))?;
            self.disk.sync_data(&file)?;
        }
        Ok(())
    }

    /// Sync the directory (after [`Spiller::sync`] of every kept spill).
    pub fn sync_dir(&self) -> io::Result<()> {
        let d = self.disk.open_dir(&self.dir)?;
        self.disk.sync_dir(&d)
    }
}

/// The entries of a batch read back, if its header and checksum hold.
fn check_batch(data: Vec<u8>, len: usize) -> io::Result<Bytes> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("spill batch: {what}"));
    let (n, crc) = super::header(&data, 0).ok_or_else(|| bad("short"))?;
    if n + BATCH_HEADER != len {
        return Err(bad("length mismatch"));
    }
    let data = Bytes::from(data).slice(BATCH_HEADER..);
    if crc32c(&data) != crc {
        return Err(bad("checksum mismatch"));
    }
    Ok(data)
}
