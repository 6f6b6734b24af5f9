//! The system calls warren makes beyond `std`, behind plain functions:
//! through `rustix` (safe bindings: `read` into spare capacity, `fallocate`,
//! `statvfs`, `uname` for the host name, `getrlimit`, the page size,
//! `syncfs`), and through raw `libc` only `malloc_trim`, glibc's allocator
//! call that `rustix` has no binding for. Also (in `arena.rs`) the
//! refcounted chunk allocator queued messages are packed into. The only
//! module where `unsafe` is allowed; each block has a SAFETY comment
//! saying why it is sound.

pub(crate) mod arena;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{self, FallocateFlags};

/// Read at most `max` bytes from `fd` straight into `buf`'s spare capacity
/// (no zero-filling, no copy through a scratch buffer). Retries on EINTR.
pub fn read_into(fd: &impl AsFd, buf: &mut bytes::BytesMut, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    let spare = spare.get_mut(..len).unwrap_or_default();
    let n = loop {
        match rustix::io::read(fd, &mut *spare) {
            Ok((filled, _)) => break filled.len(),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // SAFETY: read(2) initialised the first `n` (at most `len`) bytes of
    // the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Hand free heap pages back to the system (glibc keeps them otherwise).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reserve `len` bytes of `file` from offset 0 without changing its size.
pub fn fallocate_keep_size(file: &File, len: u64) -> io::Result<()> {
    Ok(fs::fallocate(file, FallocateFlags::KEEP_SIZE, 0, len)?)
}

/// Give back the space of `file` from `from` to `to`, keeping its size.
/// Failing only leaves the space reserved.
pub fn punch_hole(file: &File, from: u64, to: u64) {
    if to <= from {
        return;
    }
    let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    let _ = fs::fallocate(file, mode, from, to - from);
}

/// Free bytes (for unprivileged users) on the file system holding `path`.
pub fn free_disk(path: &Path) -> io::Result<u64> {
    let st = fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The host's name (`uname`'s node name, what gethostname(2) returns).
pub fn hostname() -> Option<String> {
    let uts = rustix::system::uname();
    let name = uts.nodename().to_string_lossy();
    (!name.is_empty()).then(|| name.into_owned())
}

/// The memory page size in bytes.
pub fn page_size() -> u64 {
    rustix::param::page_size().max(1) as u64
}

/// The process's soft limit of open file descriptors (`u64::MAX` when
/// unlimited).
pub fn nofile_limit() -> Option<u64> {
    let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    Some(r.current.unwrap_or(u64::MAX))
}

/// Write back every dirty page and inode of the file system holding `file`,
/// and wait (syncfs(2)): one call for many new files, instead of one
/// fdatasync each.
pub fn syncfs(file: &File) -> io::Result<()> {
    Ok(fs::syncfs(file)?)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn host_limits_and_disk() {
        let name = super::hostname().unwrap();
        assert!(!name.is_empty() && !name.contains('\0'));
        assert!(super::nofile_limit().unwrap() >= 16);
        let page = super::page_size();
        assert!(page >= 4096 && page.is_power_of_two());
        let dir = std::env::temp_dir();
        assert!(super::free_disk(&dir).unwrap() > 0);
        assert!(super::free_disk(std::path::Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn files_reads_and_space() {
        let dir = std::env::temp_dir().join(format!("warren-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&[7u8; 10_000]).unwrap();
        // Reserving keeps the size; punching keeps it too.
        if super::fallocate_keep_size(&f, 1 << 20).is_ok() {
            assert_eq!(f.metadata().unwrap().len(), 10_000);
        }
        super::punch_hole(&f, 4096, 8192);
        assert_eq!(f.metadata().unwrap().len(), 10_000);
        super::syncfs(&f).unwrap();
        drop(f);
        let f = std::fs::File::open(&path).unwrap();
        let mut buf = bytes::BytesMut::new();
        let mut total = 0;
        loop {
            let n = super::read_into(&f, &mut buf, 3000).unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= 3000);
            total += n;
        }
        assert_eq!((total, buf.len()), (10_000, 10_000));
        assert!(buf[..4096].iter().all(|&b| b == 7));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
