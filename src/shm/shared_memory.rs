//! Python's `multiprocessing.shared_memory.SharedMemory`: a named block of bytes
//! that unrelated processes attach to by name — CPython's included.
//!
//! # The layout CPython shares
//! The segment is the file `/dev/shm/<name>` holding the user's bytes from offset 0,
//! nothing else, and its size is the file's size (`fstat`), exactly as CPython's
//! `SharedMemory` makes and reads it on Linux: a segment created here attaches in
//! CPython as `SharedMemory(name=...)` with the same `size` and bytes, and the
//! other way round. (multiproc's own typed objects, in the arena, keep their
//! checked header.)
//!
//! # Owner records
//! `multiproc clean` must find the segments multiproc created whose creator was
//! killed, without a header to read. So `create` also writes an *owner record*
//! (see [`clean`]): `/dev/shm/mp-owner-<inode>`, a header naming
//! the creator and the segment's file, by name and inode. A segment without a
//! record (CPython's, anyone else's) is never listed nor removed by `clean`.
//!
//! Creation leaves no window in which a SIGKILL leaks an unowned file: both files
//! are first made unnamed (`O_TMPFILE` in `/dev/shm`) and get their names with
//! `linkat`, which fails if the name exists (as `O_EXCL` does), the record first.
//! Killed before the record is linked: nothing has a name and the kernel frees
//! the unnamed file. Killed between the two links: a record whose file is absent,
//! which `clean` removes once the creator is gone.
//!
//! # Unlink and CPython's resource tracker
//! `unlink` removes the name and this handle's owner record. CPython 3.11's
//! `SharedMemory` registers *every* segment it opens, created or attached, with
//! its `resource_tracker`, which unlinks it (with a "leaked shared_memory"
//! warning) when that Python program exits: a Python program that merely attaches
//! to a multiproc segment removes it at exit unless it calls
//! `resource_tracker.unregister(shm._name, "shared_memory")` (3.13 adds
//! `SharedMemory(name, track=False)`). The owner record of a segment unlinked by
//! CPython stays until the creator unlinks or `clean` finds the creator gone.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

use super::clean::{self, SHM_DIR};
use super::segment;
use crate::error::{Error, Result};
use crate::sys::mem::{self, Mapping};

/// Largest segment accepted: mappings are limited by `isize::MAX`.
const MAX_SIZE: u64 = isize::MAX as u64;

/// An unnamed file in `/dev/shm` (`O_TMPFILE`), mode 0600 whatever the umask,
/// close-on-exec: nothing to leak until [`link`] names it.
pub(crate) fn unnamed_file(what: &str) -> Result<OwnedFd> {
    let fd = rustix::fs::open(
        SHM_DIR,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(|e| {
        Error::io(
            format!("creating {what} in {SHM_DIR} (O_TMPFILE)"),
            io::Error::from(e),
        )
    })?;
    // The umask may have taken bits away from 0600; never adds any.
    rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR).map_err(|e| {
        Error::io(
            format!("setting the mode of {what} to 0600"),
            io::Error::from(e),
        )
    })?;
    Ok(fd)
}

/// Gives the unnamed file `fd` the name `/dev/shm/<name>`; fails with
/// `AlreadyExists` if the name is taken (never replaces it).
///
/// Through `/proc/self/fd` with `AT_SYMLINK_FOLLOW`, which needs no privilege
/// (`AT_EMPTY_PATH` would need `CAP_DAC_READ_SEARCH`).
pub(crate) fn link(fd: impl AsFd, name: &str) -> io::Result<()> {
    let from = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    rustix::fs::linkat(
        CWD,
        from.as_str(),
        CWD,
        format!("{SHM_DIR}/{name}").as_str(),
        AtFlags::SYMLINK_FOLLOW,
    )?;
    Ok(())
}

/// Inode number of an open file.
pub(crate) fn inode(fd: impl AsFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_ino)
}

/// Opens the existing file `/dev/shm/<name>` (`name` normalized) for a handle that
/// maps it, with the checks every named segment gets: a missing file is
/// [`Error::NotFound`]; one owned by another user, or that other users may open
/// (mode other than 0600-like), is [`Error::Permission`]; a symbolic link, a
/// directory or a FIFO is [`Error::Foreign`]. Returns the descriptor and its
/// `fstat`.
pub(crate) fn open_checked(name: &str) -> Result<(OwnedFd, rustix::fs::Stat)> {
    let fd = mem::shm_open(name).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            name: name.to_string(),
        },
        _ if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EISDIR)) => Error::Foreign {
            name: name.to_string(),
            reason: "a symbolic link or a directory, not a segment".to_string(),
        },
        io::ErrorKind::PermissionDenied => Error::Permission {
            name: name.to_string(),
            reason: "permission denied: it belongs to another user".to_string(),
        },
        _ => Error::io(format!("opening shared memory {name:?}"), e),
    })?;
    let st = check_file(&fd, name)?;
    Ok((fd, st))
}

/// The checks of [`open_checked`] on an open file `fd` named `name`: this
/// user's, no group or other mode bits, a regular file. Returns its `fstat`.
pub(crate) fn check_file(fd: &OwnedFd, name: &str) -> Result<rustix::fs::Stat> {
    let st = rustix::fs::fstat(fd)
        .map_err(|e| Error::io(format!("reading the size of {name:?}"), io::Error::from(e)))?;
    if st.st_uid != mem::euid() {
        return Err(Error::Permission {
            name: name.to_string(),
            reason: format!(
                "it belongs to uid {}, not to this user ({})",
                st.st_uid,
                mem::euid()
            ),
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::Permission {
            name: name.to_string(),
            reason: format!(
                "its mode {mode:o} lets other users in; shared memory segments are 0600"
            ),
        });
    }
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::Foreign {
            name: name.to_string(),
            reason: "not a regular file (a FIFO or a device?)".to_string(),
        });
    }
    Ok(st)
}

/// A named shared memory segment (a file in `/dev/shm`), as in Python.
///
/// Created exclusively (an existing name is [`Error::AlreadyExists`]) with mode
/// 0600, under an unpredictable name when none is given. The segment outlives
/// every handle until someone calls [`unlink`](Self::unlink) (Python's rule);
/// `multiproc clean` removes ones whose creator is gone.
///
/// The file holds exactly the user's bytes, as CPython's does: CPython's
/// `multiprocessing.shared_memory.SharedMemory(name=shm.name())` attaches to a
/// segment made here (same `size`, same bytes), and [`attach`](Self::attach) takes
/// one CPython made (see the module docs for CPython's resource tracker).
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
///
/// Travels to a process that did not inherit it as a token (its descriptor and name): see
/// [`token::export`](crate::token::export).
#[derive(Debug)]
pub struct SharedMemory {
    // Invariant: `map` maps the first `size` bytes of the file `fd`, whose size
    // was `size` when it was mapped (created so, or read with fstat on attach).
    map: Mapping,
    // Kept to read the file's current size (`check`): another process may shrink it.
    fd: OwnedFd,
    // Without the leading '/', checked by `segment::normalize_name`.
    name: String,
    size: usize,
    // The file's inode: names this handle's owner record.
    inode: u64,
    // Counts this handle in `HELD` while it lives.
    _held: Held,
}

/// The files (device, inode) this process maps as SharedMemory, with a count of
/// handles each: `Directory::open` refuses them (see [`held_as_shared_memory`]).
static HELD: std::sync::Mutex<std::collections::BTreeMap<(u64, u64), usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn held() -> std::sync::MutexGuard<'static, std::collections::BTreeMap<(u64, u64), usize>> {
    // Poisoned only by a panic between a lookup and an insert: the map is intact.
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether this process holds the file (device, inode) as SharedMemory now: a
/// Directory there would hand out `&mut` to memory that the SharedMemory's byte
/// writes reach (a segment made into a directory by copying one's bytes in).
pub(crate) fn held_as_shared_memory(id: (u64, u64)) -> bool {
    held().get(&id).is_some_and(|&n| n > 0)
}

/// One SharedMemory handle's count in [`HELD`].
#[derive(Debug)]
struct Held((u64, u64));

impl Held {
    fn new(id: (u64, u64)) -> Held {
        *held().entry(id).or_insert(0) += 1;
        Held(id)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = held();
        if let Some(n) = held.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.0);
            }
        }
    }
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
        if size == 0 {
            return Err(Error::ZeroSize {
                what: "SharedMemory size",
            });
        }
        if size as u64 > MAX_SIZE {
            return Err(Error::SizeOverflow {
                what: "SharedMemory size",
                requested: size as u128,
                max: MAX_SIZE as u128,
            });
        }
        // Unnamed until the last step: nothing is left if this fails or is killed
        // before the owner record has its name (see the module docs).
        let fd = unnamed_file(&format!("shared memory {name:?}"))?;
        mem::set_len(&fd, size as u64)
            .map_err(|e| Error::io(format!("sizing shared memory {name:?} to {size} bytes"), e))?;
        let map = Mapping::new(&fd, size)
            .map_err(|e| Error::io(format!("mapping shared memory {name:?}"), e))?;
        let inode = inode(&fd)
            .map_err(|e| Error::io(format!("reading the inode of shared memory {name:?}"), e))?;
        clean::write_record(&name, inode)?;
        if let Err(e) = link(&fd, &name) {
            clean::remove_record(&name, inode);
            return Err(match e.kind() {
                io::ErrorKind::AlreadyExists => Error::AlreadyExists { name },
                _ => Error::io(
                    format!("naming shared memory {name:?} (linkat through /proc/self/fd)"),
                    e,
                ),
            });
        }
        let id = crate::sys::transfer::file_id(&fd)
            .map_err(|e| Error::io(format!("reading the inode of shared memory {name:?}"), e))?;
        Ok(SharedMemory {
            map,
            fd,
            name,
            size,
            inode,
            _held: Held::new(id),
        })
    }

    /// Attaches to the existing segment `name` (with or without a leading `/`),
    /// whoever made it (multiproc or CPython); its size is the file's size.
    ///
    /// Errors: a missing segment is [`Error::NotFound`]; one owned by another user,
    /// or that other users may open (mode other than 0600-like), is
    /// [`Error::Permission`]; a symbolic link, a directory, a FIFO or an empty file
    /// is [`Error::Foreign`]; a multiproc [`Directory`](crate::Directory) (or any
    /// segment whose header says it holds multiproc's typed objects) is
    /// [`Error::KindMismatch`]: its bytes are Values, Arrays and locks whose
    /// guards hand out `&mut`, which plain byte writes must not reach.
    ///
    /// ```
    /// use multiproc::{Directory, Error, SharedMemory};
    /// assert!(matches!(SharedMemory::attach("mp-no-such-segment"), Err(Error::NotFound { .. })));
    /// let dir = Directory::create("mp-doc-attach-dir", 4096)?;
    /// assert!(matches!(SharedMemory::attach("mp-doc-attach-dir"), Err(Error::KindMismatch { .. })));
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn attach(name: &str) -> Result<SharedMemory> {
        let name = segment::normalize_name(name)?;
        let (fd, _) = open_checked(&name)?;
        SharedMemory::from_open(fd, name)
    }

    /// The handle over an open segment file `fd` named `name` (normalized), with
    /// the checks of [`attach`](Self::attach): this user's, mode 0600, a regular
    /// file, not empty.
    fn from_open(fd: OwnedFd, name: String) -> Result<SharedMemory> {
        let foreign = |reason: String| Error::Foreign {
            name: name.clone(),
            reason,
        };
        let st = check_file(&fd, &name)?;
        let len = st.st_size as u64;
        if len == 0 {
            return Err(foreign(
                "0 bytes: empty, nothing to map (CPython refuses to map an empty segment too)"
                    .to_string(),
            ));
        }
        if len > MAX_SIZE {
            return Err(foreign(format!("{len} bytes do not fit in memory")));
        }
        let size = len as usize;
        let map = Mapping::new(&fd, size)
            .map_err(|e| Error::io(format!("mapping shared memory {name:?}"), e))?;
        // Not multiproc's objects: their memory is reached only through their
        // handles (a byte write here would land under a guard's `&mut`). A
        // plain segment whose first bytes happen to be such a header is refused
        // too; that takes the 8-byte magic and a valid version and kind.
        if let Ok(h) = super::header::Header::read(&map, &name, len) {
            use super::header::Kind;
            if matches!(h.kind, Kind::Directory | Kind::Arena | Kind::Large) {
                return Err(Error::KindMismatch {
                    name,
                    expected: "plain shared memory".to_string(),
                    found: h.kind.name().to_string(),
                });
            }
        }
        Ok(SharedMemory {
            map,
            fd,
            name,
            size,
            inode: st.st_ino,
            _held: Held::new((st.st_dev, st.st_ino)),
        })
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
        &self.name
    }

    /// Size in bytes: the file's size (as CPython's `SharedMemory.size` on Linux).
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
        self.map.atomic_bytes(0, self.size)
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
        let available = mem::stat(&self.fd)
            .map_err(|e| {
                Error::io(
                    format!("reading the size of shared memory {:?}", self.name),
                    e,
                )
            })?
            .0;
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
        self.map.read_slice(offset, out);
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
        self.map.write_slice(offset, data);
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
        self.map.read_slice(0, &mut v);
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
    /// call is [`Error::NotFound`]. The owner record of this handle's file goes
    /// too (even when the name was already gone, removed by CPython say).
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
        let unlinked = mem::shm_unlink(&format!("/{}", self.name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                name: self.name.clone(),
            },
            _ => Error::io(format!("unlinking shared memory {:?}", self.name), e),
        });
        clean::remove_record(&self.name, self.inode);
        unlinked
    }
}

/// A SharedMemory travels as a token ([`crate::token`]): the segment's descriptor
/// (never its name: the import works even after `unlink`) and its name, so that
/// [`name`](SharedMemory::name) answers and [`unlink`](SharedMemory::unlink)
/// works there. The imported handle is an attach, as CPython's unpickled one:
/// closing it unmaps it only; unlink it once, from one process.
impl serde::Serialize for SharedMemory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::SharedMemory, || {
            use std::os::fd::AsFd;
            let id = crate::sys::transfer::file_id(&self.fd)
                .map_err(|e| Error::io("fstat on a SharedMemory", e))?;
            let fd = crate::sys::transfer::add_fd(id, self.fd.as_fd())?;
            Ok((fd, self.inode, self.name.as_str()))
        })
    }
}

impl<'de> serde::Deserialize<'de> for SharedMemory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::SharedMemory,
            |(fd, inode, name): (u32, u64, String)| {
                let name = segment::normalize_name(&name)?;
                let fd = crate::sys::transfer::take_fd(fd, "SharedMemory")?;
                let shm = SharedMemory::from_open(fd, name)?;
                if shm.inode != inode {
                    return Err(Error::BadToken {
                        what: "SharedMemory",
                        reason: format!(
                            "the descriptor is inode {}, the token names {inode}",
                            shm.inode
                        ),
                    });
                }
                Ok(shm)
            },
        )
    }
}
