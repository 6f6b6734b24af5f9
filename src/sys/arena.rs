//! Chunks that queued messages are packed into, and the account of the
//! memory they take.
//!
//! A [`Writer`] carves a chunk into [`Slice`]s, one per message; each slice
//! holds a reference to its chunk, and the chunk is freed when its last
//! slice goes. What counts for the memory budget is the chunks, not the
//! slices: a chunk of 32 KiB with one live slice in it still takes 32 KiB.
//! Every writer adds the size of each chunk it allocates to its [`Account`]
//! and the chunk takes it off again when it is freed, so the account is
//! exact and costs nothing per message.
//!
//! Slices that live about as long as each other should share chunks, and
//! slices that do not should not: a paged-out message's small stub (its
//! store reference, exchange and routing key) may stay queued for a long
//! time after the content packed next to it was delivered; in one chunk it
//! would keep all of it alive. The [`Arena`] has one writer per kind of
//! slice: published messages, content read back from the store for
//! delivery, and stubs (see [`crate::broker::message`]).
//!
//! This is `bytes::BytesMut::split().freeze()` with a refcount the broker
//! can see: a chunk is one allocation (a header, then the data), slices
//! point into it, and the bytes a slice covers are written once, by the
//! writer, before the slice exists, and never again.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of chunks currently allocated by the writers that share it.
#[derive(Debug, Default)]
pub struct Account(AtomicU64);

impl Account {
    /// Bytes allocated now.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The start of every chunk; the data follows.
#[repr(C)]
struct Header {
    /// Slices, plus one while the chunk is its writer's current chunk.
    refs: AtomicUsize,
    /// Size of the allocation, header included.
    size: usize,
    /// Where the size is counted.
    account: Arc<Account>,
}

const HEADER: usize = std::mem::size_of::<Header>();
const ALIGN: usize = std::mem::align_of::<Header>();

/// Drop one reference to a chunk; the last one frees it.
///
/// # Safety
/// `chunk` is a live chunk and the caller owns one of its references.
unsafe fn release(chunk: NonNull<Header>) {
    // SAFETY: the chunk is live while the caller's reference is.
    let h = unsafe { chunk.as_ref() };
    if h.refs.fetch_sub(1, Ordering::Release) != 1 {
        return;
    }
    // The last reference: every other owner's use happened before (as for
    // `Arc`).
    fence(Ordering::Acquire);
    let size = h.size;
    h.account.0.fetch_sub(size as u64, Ordering::Relaxed);
    // SAFETY: nobody else refers to the chunk; the header was written by
    // `Writer::grow` and the layout is the one it was allocated with.
    unsafe {
        std::ptr::drop_in_place(chunk.as_ptr());
        std::alloc::dealloc(
            chunk.as_ptr().cast(),
            Layout::from_size_align_unchecked(size, ALIGN),
        );
    }
}

/// Bytes written into a chunk: shared, immutable, cheap to clone (one
/// atomic increment). Empty slices refer to no chunk.
pub struct Slice {
    chunk: Option<NonNull<Header>>,
    off: u32,
    len: u32,
}

// SAFETY: the bytes a slice covers are never written again once it exists,
// and the chunk's refcount is atomic: a slice may be sent and shared like
// an `Arc<[u8]>`.
unsafe impl Send for Slice {}
// SAFETY: as above.
unsafe impl Sync for Slice {}

impl Slice {
    /// A slice of nothing.
    pub const fn empty() -> Slice {
        Slice {
            chunk: None,
            off: 0,
            len: 0,
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self.chunk {
            // SAFETY: `off..off + len` of the chunk's data was written before
            // the slice was made and is not written again; the chunk lives
            // at least as long as `self`.
            Some(c) => unsafe {
                std::slice::from_raw_parts(
                    c.as_ptr().cast::<u8>().add(HEADER + self.off as usize),
                    self.len as usize,
                )
            },
            None => &[],
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// The chunk it is in (its address) and the chunk's size; `None` for an
    /// empty slice. For checking the account (see `Core::check_invariants`).
    pub fn chunk(&self) -> Option<(usize, u64)> {
        self.chunk.map(|c| {
            // SAFETY: the chunk lives at least as long as `self`.
            let size = unsafe { c.as_ref() }.size;
            (c.as_ptr() as usize, size as u64)
        })
    }
}

impl std::ops::Deref for Slice {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Clone for Slice {
    fn clone(&self) -> Slice {
        if let Some(c) = self.chunk {
            // SAFETY: the chunk lives at least as long as `self`.
            let old = unsafe { c.as_ref() }.refs.fetch_add(1, Ordering::Relaxed);
            if old > isize::MAX as usize {
                // As `Arc`: a count this high means clones are being leaked.
                std::process::abort();
            }
        }
        Slice {
            chunk: self.chunk,
            off: self.off,
            len: self.len,
        }
    }
}

impl Drop for Slice {
    fn drop(&mut self) {
        if let Some(c) = self.chunk {
            // SAFETY: `self` owns one reference to a live chunk.
            unsafe { release(c) }
        }
    }
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slice({} bytes)", self.len)
    }
}

/// Writes slices into chunks of one size, taking a new chunk when the
/// current one has no room left (a slice larger than a chunk gets a chunk of
/// its own size).
pub struct Writer {
    /// The current chunk (the writer holds one reference to it).
    chunk: Option<NonNull<Header>>,
    /// Data bytes of the current chunk handed out.
    used: usize,
    /// Data bytes the current chunk has.
    cap: usize,
    /// Size of the chunks to allocate, header included.
    chunk_size: usize,
    account: Arc<Account>,
}

// SAFETY: the writer is the only one that writes into its chunk, through
// `&mut self`, and only bytes no slice covers yet; see `Slice`.
unsafe impl Send for Writer {}
// SAFETY: `&Writer` gives access to nothing.
unsafe impl Sync for Writer {}

impl Writer {
    /// A writer of `chunk_size`-byte chunks counted in `account`.
    pub fn new(chunk_size: usize, account: Arc<Account>) -> Writer {
        Writer {
            chunk: None,
            used: 0,
            cap: 0,
            chunk_size: chunk_size.max(HEADER + 64),
            account,
        }
    }

    /// Start a new chunk with room for at least `len` bytes.
    fn grow(&mut self, len: usize) {
        if let Some(c) = self.chunk.take() {
            // SAFETY: the writer owns a reference to its current chunk.
            unsafe { release(c) }
        }
        self.used = 0;
        self.cap = 0;
        let size = (HEADER + len).max(self.chunk_size);
        let Ok(layout) = Layout::from_size_align(size, ALIGN) else {
            return;
        };
        // SAFETY: the layout is not zero-sized.
        let p = unsafe { std::alloc::alloc(layout) }.cast::<Header>();
        let Some(chunk) = NonNull::new(p) else {
            std::alloc::handle_alloc_error(layout);
        };
        // SAFETY: freshly allocated, aligned for the header and large enough.
        unsafe {
            chunk.as_ptr().write(Header {
                refs: AtomicUsize::new(1),
                size,
                account: Arc::clone(&self.account),
            });
        }
        self.account.0.fetch_add(size as u64, Ordering::Relaxed);
        self.chunk = Some(chunk);
        self.cap = size - HEADER;
    }

    /// Write a slice of exactly `len` bytes with `fill`, which is given a
    /// [`Cursor`] over them (bytes it leaves unwritten are zero).
    pub fn write(&mut self, len: usize, fill: impl FnOnce(&mut Cursor<'_>)) -> Slice {
        if len == 0 {
            return Slice::empty();
        }
        let (Ok(off), Ok(len32)) = (u32::try_from(self.used), u32::try_from(len)) else {
            return Slice::empty();
        };
        if self.cap - self.used < len || off > u32::MAX - len32 {
            self.grow(len);
            return self.write_at(0, len, fill);
        }
        self.write_at(off, len, fill)
    }

    fn write_at(&mut self, off: u32, len: usize, fill: impl FnOnce(&mut Cursor<'_>)) -> Slice {
        let Some(c) = self.chunk.filter(|_| self.cap - self.used >= len) else {
            return Slice::empty();
        };
        // SAFETY: `used..used + len` is within the chunk's data and no slice
        // covers it yet; it is written here and then only read.
        let buf = unsafe {
            let p = c.as_ptr().cast::<u8>().add(HEADER + self.used);
            p.write_bytes(0, len);
            std::slice::from_raw_parts_mut(p, len)
        };
        fill(&mut Cursor { buf, at: 0 });
        self.used += len;
        // SAFETY: the writer holds a reference, so the chunk is live.
        unsafe { c.as_ref() }.refs.fetch_add(1, Ordering::Relaxed);
        Slice {
            chunk: Some(c),
            off,
            len: len as u32,
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// The current chunk (address, size), for checking the account.
    pub fn current(&self) -> Option<(usize, u64)> {
        self.chunk.map(|c| {
            // SAFETY: the writer holds a reference, so the chunk is live.
            let size = unsafe { c.as_ref() }.size;
            (c.as_ptr() as usize, size as u64)
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(c) = self.chunk.take() {
            // SAFETY: the writer owns a reference to its current chunk.
            unsafe { release(c) }
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Writer({} of {} bytes used, {} bytes allocated)",
            self.used,
            self.cap,
            self.account.bytes()
        )
    }
}

/// Sequential writes into a slice being made; writes past its end are
/// dropped (the caller sized it, see [`Writer::write`]).
pub struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    /// Append bytes.
    pub fn put_slice(&mut self, s: &[u8]) {
        let end = self.at.saturating_add(s.len());
        if let Some(d) = self.buf.get_mut(self.at..end) {
            d.copy_from_slice(s);
        }
        debug_assert!(end <= self.buf.len(), "slice overrun");
        self.at = end;
    }

    /// Append a byte.
    pub fn put_u8(&mut self, v: u8) {
        self.put_slice(&[v]);
    }

    /// Append a big-endian u32.
    pub fn put_u32(&mut self, v: u32) {
        self.put_slice(&v.to_be_bytes());
    }

    /// Append a big-endian u64.
    pub fn put_u64(&mut self, v: u64) {
        self.put_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_hold_their_chunk_and_the_account_follows() {
        let account = Arc::new(Account::default());
        let mut w = Writer::new(4096, account.clone());
        assert_eq!(account.bytes(), 0);
        let a = w.write(5, |c| c.put_slice(b"hello"));
        assert_eq!(&a[..], b"hello");
        assert_eq!(account.bytes(), 4096);
        let b = w.write(8, |c| c.put_u64(0x0102_0304_0506_0708));
        assert_eq!(&b[..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(a.chunk(), b.chunk());
        assert_eq!(w.current(), a.chunk());
        // Larger than a chunk: a chunk of its own, and the writer moves on.
        let big = w.write(10_000, |c| c.put_slice(&[7; 10_000]));
        assert_eq!(big.len(), 10_000);
        assert!(big.iter().all(|x| *x == 7));
        assert_eq!(account.bytes(), 4096 + 10_000 + HEADER as u64);
        // The first chunk lives while a slice of it does.
        let a2 = a.clone();
        drop((a, b));
        assert_eq!(&a2[..], b"hello");
        assert_eq!(account.bytes(), 4096 + 10_000 + HEADER as u64);
        drop(a2);
        assert_eq!(account.bytes(), 10_000 + HEADER as u64);
        drop(w);
        assert_eq!(account.bytes(), 10_000 + HEADER as u64);
        drop(big);
        assert_eq!(account.bytes(), 0);
    }

    #[test]
    fn short_writes_are_zero_filled_and_overruns_dropped() {
        let mut w = Writer::new(4096, Arc::default());
        let s = w.write(4, |c| c.put_u8(9));
        assert_eq!(&s[..], &[9, 0, 0, 0]);
        assert!(w.write(0, |_| {}).is_empty());
        assert_eq!(Slice::empty().chunk(), None);
    }

    #[test]
    fn slices_outlive_their_writer_across_threads() {
        let account = Arc::new(Account::default());
        let mut w = Writer::new(1024, account.clone());
        let slices: Vec<Slice> = (0..1000u32).map(|i| w.write(4, |c| c.put_u32(i))).collect();
        drop(w);
        let t = std::thread::spawn(move || {
            for (i, s) in slices.iter().enumerate() {
                assert_eq!(&s[..], &(i as u32).to_be_bytes());
            }
            let copies: Vec<Slice> = slices.to_vec();
            drop(slices);
            copies
        });
        let copies = t.join().expect("thread");
        assert!(account.bytes() > 0);
        drop(copies);
        assert_eq!(account.bytes(), 0);
    }
}
