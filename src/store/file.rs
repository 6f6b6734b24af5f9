//! An append-only file written in group commits, used by the message segments
//! and the definitions log. Records are appended to a buffer, written without
//! syncing when convenient, and made durable by [`LogFile::sync`]. Everything
//! from the last successful sync on stays in the buffer, so a failed write or
//! fdatasync never loses or duplicates bytes: the file is cut back to what was
//! synced and the same bytes are written again, at the same offsets, by the
//! next attempt (after a failed fdatasync the kernel may have dropped the
//! dirty pages, so they cannot be trusted; rewriting them can).
//!
//! Space is reserved ahead with `fallocate(FALLOC_FL_KEEP_SIZE)`: writes inside
//! the reservation cannot fail for lack of space, and the file's size is still
//! exactly what was written, so recovery sees no padding. [`Faults`] lets tests
//! simulate a small disk and failing calls without a real one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::sys::{fallocate_keep_size, punch_hole as punch};

/// Fault injection for tests: a simulated disk size and failing calls. Shared
/// (`Arc`) between a test and the store it drives; atomics, because a test may
/// hold it on another thread than the broker's.
#[derive(Debug)]
pub struct Faults {
    /// Bytes the simulated disk has free: reservations and writes beyond a
    /// file's reservation take from it, cutting and deleting files give back.
    free: AtomicU64,
    /// The next N fdatasync calls fail with EIO.
    fail_syncs: AtomicU32,
    /// The next N writes fail with EIO after writing half of what they were
    /// given (a short write, then an error).
    fail_writes: AtomicU32,
    /// The next N opens of a segment for reading fail with EMFILE (out of
    /// file descriptors).
    fail_opens: AtomicU32,
}

impl Faults {
    /// A simulated disk with `free` bytes free and no failing calls.
    pub fn with_free(free: u64) -> Arc<Faults> {
        Arc::new(Faults {
            free: AtomicU64::new(free),
            fail_syncs: AtomicU32::new(0),
            fail_writes: AtomicU32::new(0),
            fail_opens: AtomicU32::new(0),
        })
    }

    /// Free bytes of the simulated disk.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::SeqCst)
    }

    /// Give the simulated disk `n` more free bytes (an operator cleaned up).
    pub fn add_free(&self, n: u64) {
        self.free.fetch_add(n, Ordering::SeqCst);
    }

    /// Make the next `n` fdatasync calls fail with EIO.
    pub fn fail_syncs(&self, n: u32) {
        self.fail_syncs.store(n, Ordering::SeqCst);
    }

    /// Make the next `n` writes fail with EIO after a short write.
    pub fn fail_writes(&self, n: u32) {
        self.fail_writes.store(n, Ordering::SeqCst);
    }

    /// Make the next `n` opens of a segment for reading fail with EMFILE.
    pub fn fail_opens(&self, n: u32) {
        self.fail_opens.store(n, Ordering::SeqCst);
    }

    /// Open `path` for reading, or fail as told.
    pub(crate) fn open_for_reading(faults: Option<&Faults>, path: &Path) -> io::Result<File> {
        if faults.is_some_and(|f| Faults::trip(&f.fail_opens)) {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        File::open(path)
    }

    /// Take up to `want` bytes of free space; returns how many were granted.
    fn take(&self, want: u64) -> u64 {
        let mut cur = self.free.load(Ordering::SeqCst);
        loop {
            let got = want.min(cur);
            match self
                .free
                .compare_exchange(cur, cur - got, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return got,
                Err(now) => cur = now,
            }
        }
    }

    /// Consume one pending failure of `counter`, if any.
    fn trip(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// An append-only file written in group commits (see the module docs).
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    /// Bytes known durable (the file's length after the last good sync).
    synced: u64,
    /// Bytes in the file (`synced` plus what was written since).
    written: u64,
    /// Every byte from `synced` on: `buf[..written - synced]` is in the
    /// file (not yet durable), the rest not written yet.
    buf: Vec<u8>,
    /// Space allocated to the file: its reservation, or what was written
    /// beyond it.
    allocated: u64,
    /// The reservation asked for (re-asked after the file is cut back).
    reserve: u64,
    /// A write or sync failed: cut the file back to `synced` before writing.
    cut_pending: bool,
    faults: Option<Arc<Faults>>,
}

impl LogFile {
    /// Create `path` (it must not exist, or be empty) and reserve `reserve`
    /// bytes for it. A failed reservation (no space) removes the file and is
    /// an error; a file system without `fallocate` just gets no reservation.
    pub fn create(path: &Path, reserve: u64, faults: Option<Arc<Faults>>) -> io::Result<LogFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        let mut f = LogFile {
            path: path.to_path_buf(),
            file,
            synced: 0,
            written: 0,
            buf: Vec::new(),
            allocated: 0,
            reserve,
            cut_pending: false,
            faults,
        };
        if let Err(e) = f.reserve_space() {
            drop(f.file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(f)
    }

    /// Open an existing file to append after its first `len` bytes (what
    /// recovery found good; anything after is cut off).
    pub fn open_at(
        path: &Path,
        len: u64,
        reserve: u64,
        faults: Option<Arc<Faults>>,
    ) -> io::Result<LogFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
        }
        let mut f = LogFile {
            path: path.to_path_buf(),
            file,
            synced: len,
            written: len,
            buf: Vec::new(),
            allocated: len,
            reserve,
            cut_pending: false,
            faults,
        };
        // Best effort: without a reservation, writes still work while the
        // disk has room.
        let _ = f.reserve_space();
        Ok(f)
    }

    /// Reserve space up to `self.reserve` (no-op when already allocated).
    fn reserve_space(&mut self) -> io::Result<()> {
        if self.reserve <= self.allocated {
            return Ok(());
        }
        if let Some(fx) = &self.faults {
            let want = self.reserve - self.allocated;
            let got = fx.take(want);
            if got < want {
                fx.add_free(got);
                return Err(enospc());
            }
        }
        match fallocate_keep_size(&self.file, self.reserve) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => {
                if let Some(fx) = &self.faults {
                    fx.add_free(self.reserve - self.allocated);
                }
                return Err(e);
            }
        }
        self.allocated = self.reserve;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logical length: synced bytes plus everything buffered.
    pub fn len(&self) -> u64 {
        self.synced + self.buf.len() as u64
    }

    /// Bytes appended since the last successful sync.
    pub fn unsynced(&self) -> usize {
        self.buf.len()
    }

    /// Space allocated to the file on disk.
    pub fn allocated(&self) -> u64 {
        self.allocated.max(self.written)
    }

    /// The buffer to append records to (they land at offset [`LogFile::len`]).
    pub fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// `len` bytes at `offset` if they are still in the buffer (not yet
    /// synced), so they can be read back even while the disk fails.
    pub fn buffered(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let at = offset.checked_sub(self.synced)? as usize;
        self.buf.get(at..at.checked_add(len)?)
    }

    /// Cut the file back to what was synced after a failure (the bytes stay
    /// buffered and are written again).
    fn cut_back(&mut self) -> io::Result<()> {
        if !self.cut_pending {
            return Ok(());
        }
        self.file.set_len(self.synced)?;
        if let Some(fx) = &self.faults {
            fx.add_free(self.allocated().saturating_sub(self.synced));
        }
        // Cutting a file also frees its reservation on most file systems.
        self.allocated = self.synced;
        self.written = self.synced;
        self.cut_pending = false;
        let _ = self.reserve_space();
        Ok(())
    }

    /// A write or sync failed: nothing after `synced` can be trusted.
    fn failed(&mut self, e: io::Error) -> io::Error {
        self.cut_pending = true;
        // Cut at once when possible (gives the space back); else before the
        // next write.
        let _ = self.cut_back();
        e
    }

    /// Write what is buffered and not yet written (no sync).
    pub fn write(&mut self) -> io::Result<()> {
        self.cut_back()?;
        while self.written < self.len() {
            let from = (self.written - self.synced) as usize;
            let mut chunk = self.buf.get(from..).unwrap_or_default();
            let mut injected = None;
            if let Some(fx) = &self.faults {
                if Faults::trip(&fx.fail_writes) {
                    chunk = chunk.get(..chunk.len() / 2).unwrap_or_default();
                    injected = Some(eio());
                }
                let end = self.written + chunk.len() as u64;
                let beyond = end.saturating_sub(self.allocated.max(self.written));
                let grant = fx.take(beyond);
                if grant < beyond {
                    let keep = chunk.len() as u64 - (beyond - grant);
                    chunk = chunk.get(..keep as usize).unwrap_or_default();
                    injected.get_or_insert_with(enospc);
                }
            }
            let res = if chunk.is_empty() {
                Ok(0)
            } else {
                self.file.write_at(chunk, self.written)
            };
            match res {
                Ok(n) => {
                    self.written += n as u64;
                    self.allocated = self.allocated.max(self.written);
                    if let Some(e) = injected {
                        return Err(self.failed(e));
                    }
                    if n == 0 {
                        return Err(self.failed(io::Error::from(io::ErrorKind::WriteZero)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failed(e)),
            }
        }
        Ok(())
    }

    /// Write everything and fdatasync it. On success every byte appended so
    /// far is durable and the buffer is emptied; on failure the file is cut
    /// back to the last synced length and the bytes stay buffered.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.buf.is_empty() && !self.cut_pending {
            // Nothing since the last sync.
            return Ok(());
        }
        self.write()?;
        if let Some(fx) = &self.faults {
            if Faults::trip(&fx.fail_syncs) {
                return Err(self.failed(eio()));
            }
        }
        if let Err(e) = self.file.sync_data() {
            return Err(self.failed(e));
        }
        self.synced = self.written;
        self.buf.clear();
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Give back the reservation beyond what was written (the file is
    /// finished, or the broker stops).
    pub fn trim(&mut self) {
        punch(&self.file, self.written, self.allocated);
        if let Some(fx) = &self.faults {
            fx.add_free(self.allocated.saturating_sub(self.written));
        }
        self.allocated = self.written;
        self.reserve = 0;
    }

    /// Forget the file (it is being deleted): the simulated disk gets its
    /// space back.
    pub fn release_space(&self) {
        if let Some(fx) = &self.faults {
            fx.add_free(self.allocated());
        }
    }

    /// The open file, for positioned reads of what is synced.
    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("warren-logfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn failed_write_is_rewritten_at_the_same_offsets() {
        let d = dir("rewrite");
        let fx = Faults::with_free(1 << 20);
        let path = d.join("f");
        let mut f = LogFile::create(&path, 4096, Some(fx.clone())).unwrap();
        f.buf_mut().extend_from_slice(b"first record;");
        f.sync().unwrap();
        f.buf_mut().extend_from_slice(&[7u8; 10_000]);
        fx.fail_writes(1);
        assert!(f.sync().is_err());
        // Cut back to what was synced; the bytes are still buffered.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 13);
        assert_eq!(f.len(), 13 + 10_000);
        assert_eq!(f.buffered(13, 3), Some(&[7u8, 7, 7][..]));
        f.sync().unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 13 + 10_000);
        assert_eq!(&data[..13], b"first record;");
        assert!(data[13..].iter().all(|b| *b == 7));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_sync_keeps_the_bytes_and_a_full_disk_cuts_back() {
        let d = dir("full");
        let fx = Faults::with_free(8192);
        let path = d.join("f");
        let mut f = LogFile::create(&path, 4096, Some(fx.clone())).unwrap();
        assert_eq!(fx.free(), 4096);
        f.buf_mut().extend_from_slice(&[1u8; 100]);
        fx.fail_syncs(1);
        assert!(f.sync().is_err());
        f.sync().unwrap();
        // Beyond the reservation and the free space: a short write, ENOSPC.
        f.buf_mut().extend_from_slice(&[2u8; 10_000]);
        let e = f.sync().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100);
        fx.add_free(1 << 20);
        f.sync().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10_100);
        let free_before = fx.free();
        f.release_space();
        assert_eq!(fx.free(), free_before + 10_100);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_reservation_that_does_not_fit_fails_and_leaves_no_file() {
        let d = dir("reserve");
        let fx = Faults::with_free(1000);
        let path = d.join("f");
        let e = LogFile::create(&path, 4096, Some(fx.clone())).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(!path.exists());
        assert_eq!(fx.free(), 1000);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
