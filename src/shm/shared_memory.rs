//! Python's `multiprocessing.shared_memory.SharedMemory`: a named block of bytes
//! that unrelated processes attach to by name.

use std::sync::atomic::{AtomicU8, Ordering};

use super::header::{HEADER_SIZE, Kind};
use super::segment::{self, Segment};
use crate::error::{Error, Result};

/// A named shared memory segment (a file in `/dev/shm`), as in Python.
///
/// Created `O_EXCL` with mode 0600, under an unpredictable name when none is given.
/// The segment outlives every handle until someone calls [`unlink`](Self::unlink)
/// (Python's rule); `multiproc clean` removes ones whose creator is gone.
///
/// # Another process may truncate it
/// A named segment is a file: any process of the same user can shrink it
/// (`ftruncate`, `truncate -s`) while it is mapped, and touching a mapped page past
/// the new end raises SIGBUS (the kernel's rule for shared mappings; memfd-backed
/// `Value`s and `Array`s are sealed against this, files in `/dev/shm` cannot be).
/// What this type does about it:
/// - [`read_at`](Self::read_at), [`write_at`](Self::write_at) and
///   [`to_vec`](Self::to_vec) check the file's current size (`fstat`) before they
///   copy, and return [`Error::Shrunk`] instead of touching lost bytes;
/// - limits that remain: a truncation that lands *during* a copy, after the check,
///   still raises SIGBUS; and [`buf`](Self::buf) hands out references that no check
///   can follow: touching them after a truncation raises SIGBUS. Only processes of
///   the same user can do this (segments are mode 0600); do not truncate a segment
///   that others use.
///
/// Concurrent access is race-free (no undefined behaviour): copies and `buf()` go
/// through byte atomics; a reader sees each byte old or new, and a range being
/// written may be a mix of both: synchronize with a [`Lock`](crate::Lock) or an
/// [`Event`](crate::Event) to see whole updates.
///
/// ```
/// use multiproc::SharedMemory;
/// let shm = SharedMemory::create(16)?;
/// shm.write_at(0, b"hello")?;
/// let other = SharedMemory::attach(shm.name())?;
/// let mut buf = [0u8; 5];
/// other.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// assert_eq!(other.size(), 16);
/// shm.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct SharedMemory {
    seg: Segment,
    size: usize,
}

impl SharedMemory {
    /// Python's constructor: `SharedMemory(name=None, create=False, size=0)`.
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// let a = SharedMemory::new(None, true, 8)?;
    /// let b = SharedMemory::new(Some(a.name()), false, 0)?;
    /// assert_eq!(b.size(), 8);
    /// a.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(name: Option<&str>, create: bool, size: usize) -> Result<SharedMemory> {
        match (name, create) {
            (None, true) => SharedMemory::create(size),
            (Some(n), true) => SharedMemory::create_named(n, size),
            (Some(n), false) => SharedMemory::attach(n),
            (None, false) => Err(Error::InvalidArgument(
                "SharedMemory needs a name to attach to, or create=true".into(),
            )),
        }
    }

    /// Creates a segment of `size` bytes (zeroed) under a fresh random name.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(3)?;
    /// assert!(shm.name().starts_with("mp-")); // multiproc's prefix
    /// assert_eq!(shm.to_vec()?, vec![0, 0, 0]);
    /// shm.unlink()?;
    /// assert!(multiproc::SharedMemory::create(0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create(size: usize) -> Result<SharedMemory> {
        loop {
            match SharedMemory::create_named(&segment::random_name()?, size) {
                Err(Error::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Creates a segment of `size` bytes named `name`; fails if the name is taken.
    ///
    /// ```
    /// use multiproc::{Error, SharedMemory};
    /// let a = SharedMemory::create_named("mp-doc-example", 4)?;
    /// assert!(matches!(SharedMemory::create_named("mp-doc-example", 4), Err(Error::AlreadyExists { .. })));
    /// a.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_named(name: &str, size: usize) -> Result<SharedMemory> {
        let name = segment::normalize_name(name)?;
        let seg = Segment::create_named(&name, Kind::SharedMemory, size as u64)?;
        Ok(SharedMemory { seg, size })
    }

    /// Attaches to the existing segment `name` (with or without a leading `/`).
    ///
    /// A missing, foreign, truncated, other-version or other-user segment is an error.
    ///
    /// ```
    /// use multiproc::{Error, SharedMemory};
    /// assert!(matches!(SharedMemory::attach("mp-no-such-segment"), Err(Error::NotFound { .. })));
    /// ```
    pub fn attach(name: &str) -> Result<SharedMemory> {
        let name = segment::normalize_name(name)?;
        let seg = Segment::open_named(&name, Kind::SharedMemory)?;
        let size = usize::try_from(seg.header().size).map_err(|_| Error::Foreign {
            name: name.clone(),
            reason: "size does not fit in memory".into(),
        })?;
        Ok(SharedMemory { seg, size })
    }

    /// The name, without a leading `/` (pass it to [`attach`](Self::attach)).
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// let shm = SharedMemory::create_named("/mp-doc-name", 1)?;
    /// assert_eq!(shm.name(), "mp-doc-name");
    /// assert_eq!(SharedMemory::attach("/mp-doc-name")?.name(), "mp-doc-name");
    /// shm.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        self.seg.name().unwrap_or_default()
    }

    /// Usable size in bytes (the header is not counted).
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(1000)?;
    /// assert_eq!(shm.size(), 1000);
    /// assert_eq!(shm.buf().len(), 1000);
    /// shm.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.size
    }

    /// The bytes as atomics: safe to read while other processes write.
    ///
    /// No size check can cover these references: if another process truncates the
    /// segment, touching bytes past its new end raises SIGBUS (see
    /// [`SharedMemory`]). Prefer [`read_at`](Self::read_at) and
    /// [`write_at`](Self::write_at), which check.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let shm = multiproc::SharedMemory::create(4)?;
    /// shm.buf()[2].store(9, Ordering::Relaxed);
    /// assert_eq!(shm.to_vec()?, vec![0, 0, 9, 0]);
    /// shm.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn buf(&self) -> &[AtomicU8] {
        self.seg.map().atomic_bytes(HEADER_SIZE, self.size)
    }

    /// Checks that `len` bytes at `offset` are inside the segment
    /// ([`Error::RangeOutOfBounds`]) and still inside its file, which another
    /// process may have truncated ([`Error::Shrunk`]).
    fn check(&self, offset: usize, len: usize) -> Result<()> {
        let end = match offset.checked_add(len) {
            Some(end) if end <= self.size => end,
            _ => {
                return Err(Error::RangeOutOfBounds {
                    offset,
                    len,
                    size: self.size,
                });
            }
        };
        // Mapping::new refused a file shorter than the mapping, so only a later
        // truncation can make this fail.
        let available = self.seg.current_len()?.saturating_sub(HEADER_SIZE as u64);
        if available < end as u64 {
            return Err(Error::Shrunk {
                name: self.name().to_string(),
                available,
                size: self.size as u64,
                needed: end as u64,
            });
        }
        Ok(())
    }

    /// Copies bytes starting at `offset` into `out`.
    ///
    /// [`Error::RangeOutOfBounds`] if they run past the end; [`Error::Shrunk`] if
    /// another process truncated the segment below them (nothing copied in either
    /// case).
    ///
    /// ```
    /// use multiproc::Error;
    /// let shm = multiproc::SharedMemory::create(8)?;
    /// shm.write_at(4, b"abcd")?;
    /// let mut out = [0u8; 2];
    /// shm.read_at(5, &mut out)?;
    /// assert_eq!(&out, b"bc");
    /// assert!(matches!(
    ///     shm.read_at(7, &mut out),
    ///     Err(Error::RangeOutOfBounds { offset: 7, len: 2, size: 8 })
    /// ));
    /// shm.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        self.seg.map().read_slice(HEADER_SIZE + offset, out);
        std::sync::atomic::fence(Ordering::Acquire);
        Ok(())
    }

    /// Copies `data` into the segment starting at `offset`.
    ///
    /// [`Error::RangeOutOfBounds`] if it runs past the end; [`Error::Shrunk`] if
    /// another process truncated the segment below it (nothing written in either
    /// case).
    ///
    /// A child process attaching by name sees the parent's bytes:
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Error, Process, SharedMemory};
    /// let shm = SharedMemory::create(5)?;
    /// shm.write_at(0, b"hello")?;
    /// let name = shm.name().to_string();
    /// let mut p = Process::new(move || {
    ///     let mine = SharedMemory::attach(&name).unwrap();
    ///     assert_eq!(mine.to_vec().unwrap(), b"hello");
    ///     mine.write_at(0, b"J").unwrap();
    /// });
    /// p.start()?;
    /// let code = p.join(Some(Duration::from_secs(10)))?;
    /// let seen = shm.to_vec()?;
    /// shm.unlink()?;
    /// assert_eq!(code, Some(0));
    /// assert_eq!(seen, b"Jello");
    /// assert!(matches!(
    ///     shm.write_at(4, b"xy"),
    ///     Err(Error::RangeOutOfBounds { offset: 4, len: 2, size: 5 })
    /// ));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        std::sync::atomic::fence(Ordering::Release);
        self.seg.map().write_slice(HEADER_SIZE + offset, data);
        Ok(())
    }

    /// A copy of all the bytes; [`Error::Shrunk`] if another process truncated the
    /// segment.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(4)?;
    /// shm.write_at(1, &[1, 2])?;
    /// assert_eq!(shm.to_vec()?, vec![0, 1, 2, 0]);
    /// shm.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        self.check(0, self.size)?;
        let mut v = vec![0; self.size];
        self.seg.map().read_slice(HEADER_SIZE, &mut v);
        std::sync::atomic::fence(Ordering::Acquire);
        Ok(v)
    }

    /// Unmaps this handle (Python's `close`); the segment itself stays.
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// let shm = SharedMemory::create(4)?;
    /// let name = shm.name().to_string();
    /// shm.write_at(0, b"keep")?;
    /// shm.close();
    /// let again = SharedMemory::attach(&name)?; // still there
    /// assert_eq!(again.to_vec()?, b"keep");
    /// again.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(self) {}

    /// Removes the name so no one else can attach; the memory is freed when the
    /// last handle closes. Like Python, call it once, from one process: a second
    /// call is [`Error::NotFound`].
    ///
    /// ```
    /// use multiproc::{Error, SharedMemory};
    /// let shm = SharedMemory::create(4)?;
    /// shm.unlink()?;
    /// assert!(matches!(SharedMemory::attach(shm.name()), Err(Error::NotFound { .. })));
    /// shm.write_at(0, b"ok")?; // this handle still works
    /// assert!(matches!(shm.unlink(), Err(Error::NotFound { .. })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unlink(&self) -> Result<()> {
        crate::sys::mem::shm_unlink(&format!("/{}", self.name())).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                name: self.name().to_string(),
            },
            _ => Error::io(format!("unlinking shared memory {:?}", self.name()), e),
        })
    }
}
