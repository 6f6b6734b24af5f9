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
//! exactly what was written, so recovery sees no padding. Every call goes
//! through the store's [`Disk`].

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::disk::Disk;

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
    disk: Disk,
}

impl LogFile {
    /// Create `path` (an old file there, which took `freed` bytes, is
    /// truncated) and reserve `reserve` bytes for it. A failed reservation
    /// (no space) removes the file and is an error; a file system without
    /// `fallocate` just gets no reservation.
    pub fn create(disk: &Disk, path: &Path, reserve: u64, freed: u64) -> io::Result<LogFile> {
        let file = disk.create(path, freed)?;
        let mut f = LogFile {
            path: path.to_path_buf(),
            file,
            synced: 0,
            written: 0,
            buf: Vec::new(),
            allocated: 0,
            reserve,
            cut_pending: false,
            disk: disk.clone(),
        };
        if let Err(e) = f.reserve_space() {
            drop(f.file);
            let _ = disk.remove(path, 0);
            return Err(e);
        }
        Ok(f)
    }

    /// Open an existing file to append after its first `len` bytes (what
    /// recovery found good; anything after is cut off).
    pub fn open_at(disk: &Disk, path: &Path, len: u64, reserve: u64) -> io::Result<LogFile> {
        let file = disk.open_rw(path)?;
        if disk.size(path)? != len {
            disk.truncate(&file, len, 0)?;
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
            disk: disk.clone(),
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
        self.disk
            .reserve(&self.file, self.reserve, self.allocated)?;
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
        let freed = self.allocated().saturating_sub(self.synced);
        self.disk.truncate(&self.file, self.synced, freed)?;
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
        let from = (self.written - self.synced) as usize;
        let chunk = self.buf.get(from..).unwrap_or_default();
        if chunk.is_empty() {
            return Ok(());
        }
        let (n, res) = self
            .disk
            .write_at(&self.file, chunk, self.written, self.allocated);
        self.written += n as u64;
        self.allocated = self.allocated.max(self.written);
        res.map_err(|e| self.failed(e))
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
        if let Err(e) = self.disk.sync_data(&self.file) {
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
        self.disk.punch(&self.file, self.written, self.allocated);
        self.allocated = self.written;
        self.reserve = 0;
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
    use crate::store::disk::Faults;

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
        let mut f = LogFile::create(&Disk::new(Some(fx.clone())), &path, 4096, 0).unwrap();
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
        let mut f = LogFile::create(&Disk::new(Some(fx.clone())), &path, 4096, 0).unwrap();
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
        Disk::new(Some(fx.clone()))
            .remove(&path, f.allocated())
            .unwrap();
        assert_eq!(fx.free(), free_before + 10_100);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_reservation_that_does_not_fit_fails_and_leaves_no_file() {
        let d = dir("reserve");
        let fx = Faults::with_free(1000);
        let path = d.join("f");
        let e = LogFile::create(&Disk::new(Some(fx.clone())), &path, 4096, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(!path.exists());
        assert_eq!(fx.free(), 1000);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
