//! Every system call warren makes through `libc` rather than `std`, behind
//! safe functions, and (in `arena.rs`) the refcounted chunk allocator queued
//! messages are packed into: the only module where `unsafe` is allowed.
//! Each block has a SAFETY comment saying why it is sound.

pub(crate) mod arena;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Read at most `max` bytes from `fd` straight into `buf`'s spare capacity
/// (no zero-filling, no copy through a scratch buffer). Retries on EINTR.
pub fn read_into(fd: &impl AsRawFd, buf: &mut bytes::BytesMut, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    let n = loop {
        // SAFETY: `spare` is writable memory of at least `len` bytes owned
        // by `buf`; read(2) writes at most `len` bytes into it.
        let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), len) };
        if n >= 0 {
            break (n as usize).min(len);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: read(2) initialised the first `n` bytes of the spare capacity.
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
    // SAFETY: fallocate(2) on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len as i64) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Give back the space of `file` from `from` to `to`, keeping its size.
/// Failing only leaves the space reserved.
pub fn punch_hole(file: &File, from: u64, to: u64) {
    if to <= from {
        return;
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate(2) on a file descriptor we own; no memory is passed.
    unsafe {
        libc::fallocate(file.as_raw_fd(), mode, from as i64, (to - from) as i64);
    }
}

/// Free bytes (for unprivileged users) on the file system holding `path`.
pub fn free_disk(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The host's name (up to 255 bytes), if it can be had.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // (or truncates) within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(buf.get(..end).unwrap_or(&[])).into_owned())
}

/// The memory page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    page.max(1) as u64
}

/// The process's soft limit of open file descriptors.
pub fn nofile_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (rc == 0).then_some(r.rlim_cur)
}

/// Write back every dirty page and inode of the file system holding `file`,
/// and wait (syncfs(2)): one call for many new files, instead of one
/// fdatasync each.
pub fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: syncfs(2) on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
