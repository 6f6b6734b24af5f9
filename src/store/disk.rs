//! The store's one way to the disk. Every file operation of the message
//! store and the definitions log (at start and inside the loop: opening,
//! creating, reading, writing, `fdatasync`, `fsync` of a directory,
//! `fallocate` reservations and punched holes, cutting, renaming, removing,
//! `statvfs`) is a method of [`Disk`], and nothing else in `store/` touches
//! files. It is not sans-IO: the calls block, on the broker's loop thread;
//! but they are all here, so a test can fail or fake any of them.
//!
//! [`Faults`] is that test hook: a simulated disk size and, per operation
//! ([`DiskOp`]), a number of calls to fail. It is consulted only by [`Disk`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::sys;

/// A disk operation that [`Faults`] can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    /// Opening an existing file or directory: fails with EMFILE (out of
    /// file descriptors).
    Open,
    /// Creating (or truncating) a file: fails with ENOSPC.
    Create,
    /// Reading a file (a whole file at start, a record read back): EIO.
    Read,
    /// Writing: half of the bytes are written, then EIO (a short write).
    Write,
    /// `fdatasync` of a file: EIO.
    SyncData,
    /// `fsync` of a directory (new, renamed or removed files in it): EIO.
    SyncDir,
    /// `syncfs` of a file system (the quarantine copies of a turn): EIO.
    SyncFs,
    /// Reserving space with `fallocate` (a new segment, the definitions
    /// log): ENOSPC.
    Reserve,
    /// Giving back unused reserved space (`fallocate` punching a hole):
    /// nothing is given back, silently (the space stays reserved).
    Punch,
    /// Cutting a file to a length (after a failed write, a torn tail): EIO.
    Truncate,
    /// Renaming a file (over the definitions snapshot, the clean-shutdown
    /// index, `VERSION`): EIO.
    Rename,
    /// Removing a file (a collected segment, the clean-shutdown index): EIO.
    Remove,
    /// Asking the file system for its free space (`statvfs`): EIO.
    FreeSpace,
    /// Listing a directory or creating one: EIO.
    Dir,
}

impl DiskOp {
    const ALL: usize = 14;

    fn index(self) -> usize {
        self as usize
    }

    /// The error an injected failure of this operation reports.
    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            DiskOp::Open => libc::EMFILE,
            DiskOp::Create | DiskOp::Reserve => libc::ENOSPC,
            _ => libc::EIO,
        })
    }
}

/// Fault injection for tests: a simulated disk size and failing calls.
/// Shared (`Arc`) between a test and the store it drives; atomics, because a
/// test may hold it on another thread than the broker's.
#[derive(Debug)]
pub struct Faults {
    /// Bytes the simulated disk has free: reservations and writes beyond a
    /// file's reservation take from it, cutting and deleting files give back.
    free: AtomicU64,
    /// Per [`DiskOp`]: the next N calls fail.
    fail: [AtomicU32; DiskOp::ALL],
}

impl Faults {
    /// A simulated disk with `free` bytes free and no failing calls.
    pub fn with_free(free: u64) -> Arc<Faults> {
        Arc::new(Faults {
            free: AtomicU64::new(free),
            fail: std::array::from_fn(|_| AtomicU32::new(0)),
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

    /// Set the simulated disk's free bytes (another program filled or
    /// emptied it).
    pub fn set_free(&self, n: u64) {
        self.free.store(n, Ordering::SeqCst);
    }

    /// Make the next `n` calls of `op` fail (see [`DiskOp`] for how); 0
    /// stops failing them.
    pub fn fail(&self, op: DiskOp, n: u32) {
        if let Some(c) = self.fail.get(op.index()) {
            c.store(n, Ordering::SeqCst);
        }
    }

    /// Make the next `n` fdatasync calls fail with EIO.
    pub fn fail_syncs(&self, n: u32) {
        self.fail(DiskOp::SyncData, n);
    }

    /// Make the next `n` writes fail with EIO after a short write.
    pub fn fail_writes(&self, n: u32) {
        self.fail(DiskOp::Write, n);
    }

    /// Make the next `n` opens of an existing file fail with EMFILE.
    pub fn fail_opens(&self, n: u32) {
        self.fail(DiskOp::Open, n);
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

    /// Consume one pending failure of `op`, if any.
    fn trip(&self, op: DiskOp) -> bool {
        self.fail.get(op.index()).is_some_and(|c| {
            c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        })
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// Performs the store's disk operations (see the module docs): the real
/// calls, with [`Faults`] consulted first when a test injected them. Cheap
/// to clone (the store, its files and the definitions log each hold one).
///
/// Space accounting for the simulated disk: the callers say how much space
/// a file already has (`allocated`) or gives back (`freed`); the real disk
/// ignores those arguments.
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    faults: Option<Arc<Faults>>,
}

impl Disk {
    /// The real disk, with `faults` injected when given.
    pub fn new(faults: Option<Arc<Faults>>) -> Disk {
        Disk { faults }
    }

    /// Fail as told, before doing `op`.
    fn check(&self, op: DiskOp) -> io::Result<()> {
        match &self.faults {
            Some(fx) if fx.trip(op) => Err(op.error()),
            _ => Ok(()),
        }
    }

    /// The simulated disk gets `n` bytes back.
    fn give_back(&self, n: u64) {
        if let Some(fx) = &self.faults {
            fx.add_free(n);
        }
    }

    /// Create `dir` and its parents if missing.
    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check(DiskOp::Dir)?;
        fs::create_dir_all(dir)
    }

    /// Whether `dir` exists as a directory.
    pub fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    /// The regular files in `dir` with UTF-8 names: name and length.
    pub fn list(&self, dir: &Path) -> io::Result<Vec<(String, u64)>> {
        self.check(DiskOp::Dir)?;
        Ok(fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let m = e.metadata().ok().filter(|m| m.is_file())?;
                Some((e.file_name().into_string().ok()?, m.len()))
            })
            .collect())
    }

    /// The length of the file at `path`.
    pub fn size(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    /// The whole file at `path`.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.check(DiskOp::Read)?;
        fs::read(path)
    }

    /// Fill `buf` from `file` at `offset` (an early end of the file is
    /// `UnexpectedEof`).
    pub fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(DiskOp::Read)?;
        file.read_exact_at(buf, offset)
    }

    /// Open the existing file `path` for reading.
    pub fn open(&self, path: &Path) -> io::Result<File> {
        self.check(DiskOp::Open)?;
        File::open(path)
    }

    /// Open the existing file `path` for reading and writing.
    pub fn open_rw(&self, path: &Path) -> io::Result<File> {
        self.check(DiskOp::Open)?;
        OpenOptions::new().read(true).write(true).open(path)
    }

    /// Open the directory `path` (to sync it, or to lock it).
    pub fn open_dir(&self, path: &Path) -> io::Result<File> {
        self.check(DiskOp::Open)?;
        File::open(path)
    }

    /// Open `path` for writing, creating it if missing, keeping what is in
    /// it (a lock file).
    pub fn open_or_create(&self, path: &Path) -> io::Result<File> {
        self.check(DiskOp::Create)?;
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
    }

    /// Create `path` empty, for reading and writing; an old file there
    /// (which took `freed` bytes) is truncated.
    pub fn create(&self, path: &Path, freed: u64) -> io::Result<File> {
        self.check(DiskOp::Create)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        self.give_back(freed);
        Ok(f)
    }

    /// Write all of `buf` to `file` at `offset`; the file has `allocated`
    /// bytes of space (what lies beyond takes from the simulated disk).
    /// Returns how many bytes were written, and the error that stopped it
    /// short, if any (a full disk, EIO, an injected short write).
    pub fn write_at(
        &self,
        file: &File,
        buf: &[u8],
        offset: u64,
        allocated: u64,
    ) -> (usize, io::Result<()>) {
        let mut chunk = buf;
        let mut injected = None;
        if let Some(fx) = &self.faults {
            if fx.trip(DiskOp::Write) {
                chunk = chunk.get(..chunk.len() / 2).unwrap_or_default();
                injected = Some(DiskOp::Write.error());
            }
            let end = offset + chunk.len() as u64;
            let beyond = end.saturating_sub(allocated.max(offset));
            let grant = fx.take(beyond);
            if grant < beyond {
                let keep = chunk.len() as u64 - (beyond - grant);
                chunk = chunk.get(..keep as usize).unwrap_or_default();
                injected.get_or_insert_with(enospc);
            }
        }
        let mut done = 0usize;
        while let Some(rest) = chunk.get(done..).filter(|r| !r.is_empty()) {
            match file.write_at(rest, offset + done as u64) {
                Ok(0) => return (done, Err(io::Error::from(io::ErrorKind::WriteZero))),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (done, Err(e)),
            }
        }
        (done, injected.map_or(Ok(()), Err))
    }

    /// `fdatasync` `file`.
    pub fn sync_data(&self, file: &File) -> io::Result<()> {
        self.check(DiskOp::SyncData)?;
        file.sync_data()
    }

    /// `fsync` the directory `dir` (held open: syncing it needs no new file
    /// descriptor), so that files created, renamed or removed in it are.
    pub fn sync_dir(&self, dir: &File) -> io::Result<()> {
        self.check(DiskOp::SyncDir)?;
        dir.sync_all()
    }

    /// Sync everything written to the file system holding `file` (`syncfs`):
    /// many new small files at the cost of about one journal commit.
    pub fn sync_fs(&self, file: &File) -> io::Result<()> {
        self.check(DiskOp::SyncFs)?;
        sys::syncfs(file)
    }

    /// Reserve space for `file` up to `len` bytes, keeping its size; it has
    /// `allocated` already. A file system without `fallocate` just gets no
    /// reservation (`Ok`).
    pub fn reserve(&self, file: &File, len: u64, allocated: u64) -> io::Result<()> {
        let want = len.saturating_sub(allocated);
        if want == 0 {
            return Ok(());
        }
        self.check(DiskOp::Reserve)?;
        if let Some(fx) = &self.faults {
            let got = fx.take(want);
            if got < want {
                fx.add_free(got);
                return Err(enospc());
            }
        }
        match sys::fallocate_keep_size(file, len) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            Err(e) => {
                self.give_back(want);
                Err(e)
            }
        }
    }

    /// Give back the space of `file` from `from` to `to` (a reservation not
    /// used), keeping its size. Failing only leaves the space reserved.
    pub fn punch(&self, file: &File, from: u64, to: u64) {
        if to <= from || self.check(DiskOp::Punch).is_err() {
            return;
        }
        sys::punch_hole(file, from, to);
        self.give_back(to - from);
    }

    /// Cut (or extend) `file` to `len` bytes, which frees `freed` bytes.
    pub fn truncate(&self, file: &File, len: u64, freed: u64) -> io::Result<()> {
        self.check(DiskOp::Truncate)?;
        file.set_len(len)?;
        self.give_back(freed);
        Ok(())
    }

    /// Rename `from` to `to`, replacing a file there that took `freed` bytes.
    pub fn rename(&self, from: &Path, to: &Path, freed: u64) -> io::Result<()> {
        self.check(DiskOp::Rename)?;
        fs::rename(from, to)?;
        self.give_back(freed);
        Ok(())
    }

    /// Remove the file `path`, which took `freed` bytes.
    pub fn remove(&self, path: &Path, freed: u64) -> io::Result<()> {
        self.check(DiskOp::Remove)?;
        fs::remove_file(path)?;
        self.give_back(freed);
        Ok(())
    }

    /// Free bytes on the file system holding `path` (the simulated disk's,
    /// under fault injection).
    pub fn free_space(&self, path: &Path) -> io::Result<u64> {
        self.check(DiskOp::FreeSpace)?;
        match &self.faults {
            Some(fx) => Ok(fx.free()),
            None => sys::free_disk(path),
        }
    }

    /// Write `bytes` as the file `path` atomically and durably: to
    /// `path.tmp`, `fdatasync`ed, renamed over `path` (whose old version
    /// took `replaced` bytes), and the directory `dir` holding both synced.
    /// On error the temporary file is removed; `path` is either the old
    /// file or the new one.
    pub fn replace(&self, dir: &File, path: &Path, bytes: &[u8], replaced: u64) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let f = self.create(&tmp, 0)?;
        let (n, written) = self.write_at(&f, bytes, 0, 0);
        let synced = written.and_then(|()| self.sync_data(&f));
        drop(f);
        if let Err(e) = synced.and_then(|()| self.rename(&tmp, path, replaced)) {
            let _ = self.remove(&tmp, n as u64);
            return Err(e);
        }
        self.sync_dir(dir)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("warren-disk-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    type Call<'a> = dyn Fn() -> io::Result<()> + 'a;

    #[test]
    fn every_operation_can_be_failed_once() {
        let d = dir("ops");
        let fx = Faults::with_free(1 << 20);
        let disk = Disk::new(Some(fx.clone()));
        let path = d.join("f");
        let dir_file = disk.open_dir(&d).unwrap();
        let f = disk.create(&path, 0).unwrap();
        let code = |r: io::Result<()>| r.unwrap_err().raw_os_error();
        let cases: [(DiskOp, &Call, i32); 10] = [
            (DiskOp::Open, &|| disk.open(&path).map(drop), libc::EMFILE),
            (
                DiskOp::Create,
                &|| disk.create(&path, 0).map(drop),
                libc::ENOSPC,
            ),
            (DiskOp::Read, &|| disk.read(&path).map(drop), libc::EIO),
            (DiskOp::SyncData, &|| disk.sync_data(&f), libc::EIO),
            (DiskOp::SyncDir, &|| disk.sync_dir(&dir_file), libc::EIO),
            (DiskOp::SyncFs, &|| disk.sync_fs(&dir_file), libc::EIO),
            (DiskOp::Reserve, &|| disk.reserve(&f, 4096, 0), libc::ENOSPC),
            (DiskOp::Truncate, &|| disk.truncate(&f, 0, 0), libc::EIO),
            (
                DiskOp::FreeSpace,
                &|| disk.free_space(&d).map(drop),
                libc::EIO,
            ),
            (DiskOp::Dir, &|| disk.list(&d).map(drop), libc::EIO),
        ];
        for (op, call, errno) in cases {
            fx.fail(op, 1);
            assert_eq!(code(call()), Some(errno), "{op:?}");
            call().unwrap();
        }
        // A short write: half of it, then EIO.
        fx.fail(DiskOp::Write, 1);
        let (n, r) = disk.write_at(&f, &[1u8; 100], 0, 0);
        assert_eq!((n, code(r)), (50, Some(libc::EIO)));
        // A failed rename or sync leaves the old file and no temporary one.
        disk.replace(&dir_file, &path, b"old", 0).unwrap();
        for op in [DiskOp::Rename, DiskOp::SyncData, DiskOp::Write] {
            fx.fail(op, 1);
            assert!(disk.replace(&dir_file, &path, b"new", 3).is_err(), "{op:?}");
            assert_eq!(fs::read(&path).unwrap(), b"old", "{op:?}");
            assert!(!d.join("f.tmp").exists(), "{op:?}");
        }
        fx.fail(DiskOp::Remove, 1);
        assert_eq!(code(disk.remove(&path, 3)), Some(libc::EIO));
        disk.remove(&path, 3).unwrap();
        fs::remove_dir_all(&d).unwrap();
    }
}
