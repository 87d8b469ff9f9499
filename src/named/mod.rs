//! Objects opened by name from other programs: a [`Directory`] of named objects
//! inside one named shared memory segment.
//!
//! A program creates a directory (`Directory::create("my-app", bytes)`), puts
//! objects in it under names (`Lock::create_in(&dir, "counter_lock")`), and any
//! other program of the same user opens the directory and the objects by name
//! (`Lock::open_in(&Directory::open("my-app")?, "counter_lock")`), with their type
//! checked: opening a Lock as a Barrier, or a `Value<u32>` as a `Value<u64>`, is
//! [`Error::ObjectTypeMismatch`].
//!
//! The byte layout, which another implementation (the Python bindings) follows
//! to interoperate, is in `docs/LAYOUT.md`; the summary:
//!
//! ## Segment layout
//! ```text
//!    0  64   segment header (`shm::header`): magic, layout version 2, kind 4
//!            (directory), size = file length - 64, creator pid and start time
//!   64  16   the creators' lock: a RawLock (`sync::raw_lock`), process-owned
//!   80  u32  format: the directory format version, 1 ([`FORMAT_VERSION`])
//!   84  u32  capacity: entry slots ([`ENTRIES`])
//!   88  u32  count: published entries; entries 0..count are complete, immutable
//!   92  u32  reserved, 0
//!   96  u64  bump: offset (from the start of the file) of the first object byte
//!            never handed out; a multiple of 64
//!  104  u64  end: the file's length, where the object area ends
//!  112  16   reserved, 0
//!  128  capacity x 256  entries
//!  128 + 256 x capacity  the object area (64-byte aligned objects)
//! ```
//! ## Entry (256 bytes)
//! ```text
//!    0 u32 tag       object type ([`ObjectKind`]: 1 Lock .. 12 Queue)
//!    4 u32 version   the layout version of that type ([`ObjectKind::version`])
//!    8 u64 offset    the object's first byte, from the start of the file
//!   16 u64 length    the object's bytes
//!   24 u64 param     type-specific (Array: elements; Barrier: parties; Queue:
//!                    ring bytes; others 0)
//!   32 u32 elem size   Value/Array/Raw*: size of one element; 0 otherwise
//!   36 u32 elem align  its alignment; 0 otherwise
//!   40 u32 name length (1..=128)
//!   44 u32 type length (0..=64)
//!   48 16  reserved, 0
//!   64 128 name (UTF-8, `name length` bytes, then zeros)
//!  192 64  element type (Value/Array/Raw*: the element type; Queue: the
//!          message type; see [`type_key`]), then zeros
//! ```
//! All integers little-endian (the native order of every supported target).
//!
//! ## Creation: the state machine of one entry slot
//! Creators take the creators' lock (a `RawLock`, so a creator killed holding
//! it passes it on with `OwnerDied` within about 20 ms); readers never take it.
//! Only the lock's holder writes `count`, `bump` and the slot `count` (the next
//! one), so a slot is in one of three states:
//! - **free** (index >= count, never written): nobody reads it.
//! - **being filled** (index == count, by the lock's holder): the holder (1)
//!   checks that no published entry has the name ([`Error::ObjectExists`]), (2)
//!   takes `length` bytes at `bump` and stores the new `bump` *before* touching
//!   them, (3) lays the object out in those bytes (they are zero: the file was
//!   created zeroed and no range is handed out twice), (4) writes every field of
//!   the slot, (5) stores `count + 1` with release ordering, then unlocks. A
//!   reader that loads `count` with acquire ordering sees every write of (3) and
//!   (4) for the slots below it.
//! - **published** (index < count): complete and never written again, so readers
//!   read it without a lock.
//!
//! A creator killed anywhere before (5) leaves `count` unchanged: no entry
//! (its slot is overwritten whole by the next creator; the bytes it took at (2)
//! are lost, never reused). Killed after (5): a complete, usable entry. Killed
//! holding the lock: the next creator takes it with `OwnerDied` and has nothing
//! to repair (the only trace is the lost bytes).
//!
//! ## Lifetime
//! Objects live as long as the segment: there is no per-object holder count and
//! no delete, because their memory is never reused: no handle can see its bytes
//! change owner (no ABA). The segment lives until [`Directory::unlink`] (Python's
//! rule for named segments) and `multiproc clean` knows it through its owner
//! record (`shm::clean`), like a named [`SharedMemory`](crate::SharedMemory).
//! Each process maps a directory once (per file: same device and inode) and every
//! handle opened from it shares that mapping, which is never unmapped (the
//! objects hand out `'static` words, as arena chunks do); its memory goes back to
//! the system when the name is unlinked and the last process that maps it exits.
//!
//! ## Trust
//! The file is mode 0600, created `O_EXCL` (a name that exists is
//! [`Error::AlreadyExists`]), and checked on open like a `SharedMemory` (owner,
//! mode, regular file) and an arena segment (magic, layout version, kind, size).
//! Shared words are untrusted: an entry whose bounds, lengths or alignment are
//! impossible is [`Error::DirectoryCorrupt`], never an access outside the file.
//! Like every file in `/dev/shm`, it can be truncated by a process of the same
//! user; touching the lost pages then raises SIGBUS (see
//! [`SharedMemory`](crate::SharedMemory)): do not truncate a directory in use.

mod objects;

use std::io;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::shm::clean;
use crate::shm::header::{HEADER_SIZE, Header, Kind};
use crate::shm::segment::{self, MAX_PAYLOAD};
use crate::shm::shared_memory::{inode, link, open_checked, unnamed_file};
use crate::sync::ident;
use crate::sync::raw_lock::{Acquired, RawLock};
use crate::sys::mem::{self, Mapping};
use crate::sys::time::Deadline;

/// The directory format version this build writes and reads (offset 80).
///
/// ```
/// assert_eq!(multiproc::named::FORMAT_VERSION, 1);
/// ```
pub const FORMAT_VERSION: u32 = 1;
/// Entry slots of a directory: at most this many objects.
///
/// ```
/// assert_eq!(multiproc::named::ENTRIES, 64);
/// ```
pub const ENTRIES: usize = 64;
/// The longest object name, in bytes.
///
/// ```
/// let dir = multiproc::Directory::create("mp-doc-max-name", 4096)?;
/// let long = "x".repeat(multiproc::named::MAX_NAME + 1);
/// assert!(multiproc::Lock::create_in(&dir, &long).is_err());
/// dir.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub const MAX_NAME: usize = 128;

const LOCK: usize = 64;
const FORMAT: usize = 80;
const CAPACITY: usize = 84;
const COUNT: usize = 88;
const BUMP: usize = 96;
const END: usize = 104;
const TABLE: usize = 128;
const ENTRY: usize = 256;
const ALIGN: u64 = 64;
const MAX_TYPE: usize = 64;

const E_TAG: usize = 0;
const E_VERSION: usize = 4;
const E_OFFSET: usize = 8;
const E_LEN: usize = 16;
const E_PARAM: usize = 24;
const E_ELEM_SIZE: usize = 32;
const E_ELEM_ALIGN: usize = 36;
const E_NAME_LEN: usize = 40;
const E_TYPE_LEN: usize = 44;
const E_NAME: usize = 64;
const E_TYPE: usize = 192;

/// How long a creator waits for the creators' lock (held only while one object
/// is laid out, or about 20 ms after its holder died) before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The type of a named object (the entry's `tag`).
///
/// ```
/// use multiproc::named::ObjectKind;
/// assert_eq!(ObjectKind::Lock as u32, 1);
/// assert_eq!(ObjectKind::Queue.name(), "Queue");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ObjectKind {
    /// [`Lock`](crate::Lock): 16 bytes, a RawLock.
    Lock = 1,
    /// [`RLock`](crate::RLock): 16 bytes, a thread-owned RawLock.
    RLock = 2,
    /// [`Semaphore`](crate::Semaphore): 16 bytes.
    Semaphore = 3,
    /// [`BoundedSemaphore`](crate::BoundedSemaphore): 16 bytes.
    BoundedSemaphore = 4,
    /// [`Event`](crate::Event): one u32.
    Event = 5,
    /// Reserved for [`Condition`](crate::Condition), which directories do not
    /// hold yet (see `docs/LAYOUT.md`).
    Condition = 6,
    /// [`Barrier`](crate::Barrier).
    Barrier = 7,
    /// [`Value`](crate::Value): an RLock, then the element.
    Value = 8,
    /// [`RawValue`](crate::RawValue): the element.
    RawValue = 9,
    /// [`Array`](crate::Array): an RLock, then the elements.
    Array = 10,
    /// [`RawArray`](crate::RawArray): the elements.
    RawArray = 11,
    /// [`Queue`](crate::Queue): the ring's control words, role tables and frames.
    Queue = 12,
}

impl ObjectKind {
    fn from_u32(v: u32) -> Option<ObjectKind> {
        use ObjectKind::*;
        [
            Lock,
            RLock,
            Semaphore,
            BoundedSemaphore,
            Event,
            Condition,
            Barrier,
            Value,
            RawValue,
            Array,
            RawArray,
            Queue,
        ]
        .into_iter()
        .find(|k| *k as u32 == v)
    }

    /// The type's name, as in Rust.
    ///
    /// ```
    /// assert_eq!(multiproc::named::ObjectKind::BoundedSemaphore.name(), "BoundedSemaphore");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Lock => "Lock",
            ObjectKind::RLock => "RLock",
            ObjectKind::Semaphore => "Semaphore",
            ObjectKind::BoundedSemaphore => "BoundedSemaphore",
            ObjectKind::Event => "Event",
            ObjectKind::Condition => "Condition",
            ObjectKind::Barrier => "Barrier",
            ObjectKind::Value => "Value",
            ObjectKind::RawValue => "RawValue",
            ObjectKind::Array => "Array",
            ObjectKind::RawArray => "RawArray",
            ObjectKind::Queue => "Queue",
        }
    }

    /// The layout version of this type's bytes that this build writes and
    /// reads (the entry's `version`): raised whenever that layout changes, so an
    /// old program never misreads a new object.
    ///
    /// ```
    /// use multiproc::named::ObjectKind;
    /// assert_eq!(ObjectKind::Lock.version(), 1);
    /// assert_eq!(ObjectKind::Barrier.version(), 2);
    /// assert_eq!(ObjectKind::Queue.version(), 3);
    /// ```
    pub fn version(self) -> u32 {
        match self {
            // 2: the reason word also holds the ANNOUNCE flag of armed sleepers.
            ObjectKind::Barrier => 2,
            // 2: the producer lock moved to its own cache line (offset 384).
            // 3: both side locks are biased locks (64 bytes each, at 384 and
            // 448, thread-owned words): the control block grew to 512 bytes.
            ObjectKind::Queue => 3,
            _ => 1,
        }
    }
}

/// The element (or message) type of an entry: at most 64 bytes of
/// `std::any::type_name::<T>()`. A longer name is cut to its first 47 bytes (at
/// a character boundary), then `#` and the 16 hex digits of the FNV-1a 64 hash
/// of the whole name, so that long names still differ.
///
/// ```
/// use multiproc::named::type_key;
/// assert_eq!(type_key::<u64>(), "u64");
/// assert_eq!(type_key::<[f32; 3]>(), "[f32; 3]");
/// assert!(type_key::<(String, Vec<(u8, u16)>, Option<i64>)>().len() <= 64);
/// ```
pub fn type_key<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    if full.len() <= MAX_TYPE {
        return full.to_string();
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in full.bytes() {
        hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut cut = 47;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}#{hash:016x}", &full[..cut])
}

/// One published object of a directory, as [`Directory::objects`] lists it.
///
/// ```
/// use multiproc::{Directory, Value, named::ObjectKind};
/// let dir = Directory::create("mp-doc-info", 4096)?;
/// Value::create_in(&dir, "hits", 0u64)?;
/// let info = &dir.objects()?[0];
/// assert_eq!((info.name.as_str(), info.kind), ("hits", ObjectKind::Value));
/// assert_eq!(info.type_name(), "Value<u64>");
/// dir.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its name in the directory.
    pub name: String,
    /// Its type.
    pub kind: ObjectKind,
    /// The element type (Value, Array and their raw twins) or message type
    /// (Queue), as [`type_key`] gives it; empty for the others.
    pub elem: String,
    /// Bytes it takes in the segment.
    pub len: u64,
    /// The type-specific parameter (Array: elements; Barrier: parties; Queue:
    /// ring bytes; 0 otherwise).
    pub param: u64,
}

impl ObjectInfo {
    /// The full type, as in Rust: `Lock`, `Value<u64>`, `Queue<alloc::string::String>`.
    ///
    /// ```
    /// use multiproc::{Directory, Lock};
    /// let dir = Directory::create("mp-doc-type-name", 4096)?;
    /// Lock::create_in(&dir, "l")?;
    /// assert_eq!(dir.objects()?[0].type_name(), "Lock");
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn type_name(&self) -> String {
        display(self.kind, &self.elem)
    }
}

fn display(kind: ObjectKind, elem: &str) -> String {
    if elem.is_empty() {
        kind.name().to_string()
    } else {
        format!("{}<{elem}>", kind.name())
    }
}

/// What a `create_in` / `open_in` asks for: the type, and the element type with
/// its size and alignment for the typed ones.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) kind: ObjectKind,
    pub(crate) elem: String,
    pub(crate) elem_size: u32,
    pub(crate) elem_align: u32,
}

impl Spec {
    pub(crate) fn plain(kind: ObjectKind) -> Spec {
        Spec {
            kind,
            elem: String::new(),
            elem_size: 0,
            elem_align: 0,
        }
    }

    pub(crate) fn of<T>(kind: ObjectKind) -> Spec {
        Spec {
            kind,
            elem: type_key::<T>(),
            elem_size: std::mem::size_of::<T>() as u32,
            elem_align: std::mem::align_of::<T>() as u32,
        }
    }

    /// A message type (Queue): checked by name only (its size is not its
    /// encoding's).
    pub(crate) fn message<T>(kind: ObjectKind) -> Spec {
        Spec {
            elem_size: 0,
            elem_align: 0,
            ..Spec::of::<T>(kind)
        }
    }
}

/// Where a created or opened object lives: `len` bytes at `off` of the
/// directory's `'static` mapping, and its entry's parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed {
    pub(crate) map: &'static Mapping,
    pub(crate) off: usize,
    pub(crate) len: usize,
    pub(crate) param: u64,
}

/// This process's mapping of one directory file.
#[derive(Debug)]
struct Mapped {
    map: Mapping,
    /// The name it was first created or opened under (normalized).
    name: String,
    dev: u64,
    ino: u64,
}

/// Every directory file this process maps, once each (see the module docs).
/// Leaked on purpose: never unmapped, so objects hold `'static` words.
static MAPPED: Mutex<Vec<&'static Mapped>> = Mutex::new(Vec::new());

fn mapped() -> std::sync::MutexGuard<'static, Vec<&'static Mapped>> {
    // Poisoned only by a panic between a lookup and a push: the list is intact.
    MAPPED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A directory of named objects in a named shared memory segment (see the
/// [module](self)). Cloning gives another handle on the same mapping.
///
/// ```
/// use multiproc::{Directory, Lock, Value};
/// let dir = Directory::create("mp-doc-directory", 64 * 1024)?;
/// let lock = Lock::create_in(&dir, "counter_lock")?;
/// let counter = Value::create_in(&dir, "counter", 0u64)?;
/// // Another program (or this one) opens them by name:
/// let there = Directory::open("mp-doc-directory")?;
/// let (l, c) = (Lock::open_in(&there, "counter_lock")?, Value::<u64>::open_in(&there, "counter")?);
/// {
///     let _g = l.lock().unwrap();
///     c.set(c.get()? + 1)?;
/// }
/// assert_eq!(counter.get()?, 1);
/// assert!(lock.try_lock().is_ok());
/// dir.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Directory {
    seg: &'static Mapped,
}

impl Directory {
    /// Creates the directory `name` (with or without a leading `/`) with room for
    /// [`ENTRIES`] objects and `bytes` bytes of them (each object takes its size
    /// rounded up to 64; a Lock 64, a default Queue 1 MiB + 2.5 KiB). Pages are
    /// allocated only when touched. An existing name is [`Error::AlreadyExists`].
    ///
    /// ```
    /// use multiproc::{Directory, Error};
    /// let dir = Directory::create("/mp-doc-create", 4096)?;
    /// assert_eq!(dir.name(), "mp-doc-create");
    /// assert!(matches!(Directory::create("mp-doc-create", 4096), Err(Error::AlreadyExists { .. })));
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create(name: &str, bytes: usize) -> Result<Directory> {
        let name = segment::normalize_name(name)?;
        if bytes == 0 {
            return Err(Error::ZeroSize {
                what: "directory size",
            });
        }
        let data = (TABLE + ENTRY * ENTRIES) as u64;
        let max = MAX_PAYLOAD - data;
        let total = (bytes as u64)
            .checked_next_multiple_of(4096)
            .filter(|b| *b <= max)
            .ok_or(Error::SizeOverflow {
                what: "directory size",
                requested: bytes as u128,
                max: max as u128,
            })?
            + data;
        // Unnamed until its last step, as a SharedMemory: a creator killed before
        // `link` leaves nothing, and no one ever opens a half-written header.
        let fd = unnamed_file(&format!("directory {name:?}"))?;
        mem::set_len(&fd, total)
            .map_err(|e| Error::io(format!("sizing directory {name:?} to {total} bytes"), e))?;
        let map = Mapping::new(&fd, total as usize)
            .map_err(|e| Error::io(format!("mapping directory {name:?}"), e))?;
        map.write::<u32>(FORMAT, FORMAT_VERSION);
        map.write::<u32>(CAPACITY, ENTRIES as u32);
        map.write::<u64>(BUMP, data);
        map.write::<u64>(END, total);
        segment::creator_header(Kind::Directory, total - HEADER_SIZE as u64).write(&map);
        let st = rustix::fs::fstat(&fd).map_err(|e| {
            Error::io(
                format!("reading the inode of directory {name:?}"),
                io::Error::from(e),
            )
        })?;
        let ino = inode(&fd)
            .map_err(|e| Error::io(format!("reading the inode of directory {name:?}"), e))?;
        clean::write_record(&name, ino)?;
        if let Err(e) = link(&fd, &name) {
            clean::remove_record(&name, ino);
            return Err(match e.kind() {
                io::ErrorKind::AlreadyExists => Error::AlreadyExists { name },
                _ => Error::io(
                    format!("naming directory {name:?} (linkat through /proc/self/fd)"),
                    e,
                ),
            });
        }
        let seg: &'static Mapped = Box::leak(Box::new(Mapped {
            map,
            name,
            dev: st.st_dev,
            ino,
        }));
        mapped().push(seg);
        Ok(Directory { seg })
    }

    /// Opens the existing directory `name`, mapping it if this process does not
    /// map that file yet. Errors: a missing name is [`Error::NotFound`]; a file of
    /// another user or whose mode lets others in is [`Error::Permission`]; a
    /// segment of another kind is [`Error::KindMismatch`], of another layout or
    /// directory format version [`Error::VersionMismatch`]; anything else that is
    /// not a directory is [`Error::Foreign`], [`Error::Truncated`] or
    /// [`Error::DirectoryCorrupt`]; a file this process holds as a
    /// [`SharedMemory`](crate::SharedMemory) is [`Error::KindMismatch`] (its byte
    /// writes would reach the objects' guarded memory).
    ///
    /// ```
    /// use multiproc::{Directory, Error, SharedMemory};
    /// assert!(matches!(Directory::open("mp-doc-no-such-dir"), Err(Error::NotFound { .. })));
    /// let shm = SharedMemory::create_named("mp-doc-not-a-dir", 4096)?;
    /// assert!(Directory::open("mp-doc-not-a-dir").is_err()); // no directory header
    /// shm.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Directory> {
        let name = segment::normalize_name(name)?;
        let (fd, st) = open_checked(&name)?;
        // Held across the check and the push: one mapping per file per process.
        let mut all = mapped();
        if let Some(seg) = all
            .iter()
            .find(|m| m.dev == st.st_dev && m.ino == st.st_ino)
        {
            return Ok(Directory { seg });
        }
        let len = st.st_size as u64;
        let needed = (TABLE + ENTRY) as u64;
        if len < needed {
            return Err(Error::Truncated {
                name,
                actual: len,
                needed,
            });
        }
        if len > MAX_PAYLOAD {
            return Err(Error::Foreign {
                name,
                reason: format!("{len} bytes do not fit in memory"),
            });
        }
        let map = Mapping::new(&fd, len as usize)
            .map_err(|e| Error::io(format!("mapping directory {name:?}"), e))?;
        let header = Header::read(&map, &name, len)?;
        if header.kind != Kind::Directory {
            return Err(Error::KindMismatch {
                name,
                expected: Kind::Directory.name().to_string(),
                found: header.kind.name().to_string(),
            });
        }
        check_layout(&map, &name)?;
        // Checked last, so that what is not a directory says so first.
        if crate::shm::shared_memory::held_as_shared_memory((st.st_dev, st.st_ino)) {
            return Err(Error::KindMismatch {
                name,
                expected: Kind::Directory.name().to_string(),
                found: "a segment this process holds as SharedMemory (whose byte writes would \
                        reach the directory's objects)"
                    .to_string(),
            });
        }
        let seg: &'static Mapped = Box::leak(Box::new(Mapped {
            map,
            name,
            dev: st.st_dev,
            ino: st.st_ino,
        }));
        all.push(seg);
        Ok(Directory { seg })
    }

    /// Opens the directory `name`, or creates it with `bytes` bytes if there is
    /// none: of several processes racing, exactly one creates it and the others
    /// open that one.
    ///
    /// ```
    /// use multiproc::Directory;
    /// let a = Directory::open_or_create("mp-doc-open-or-create", 4096)?;
    /// let b = Directory::open_or_create("mp-doc-open-or-create", 4096)?;
    /// multiproc::Lock::create_in(&a, "l")?;
    /// assert_eq!(b.names()?, vec!["l".to_string()]);
    /// a.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_or_create(name: &str, bytes: usize) -> Result<Directory> {
        loop {
            match Directory::open(name) {
                Err(Error::NotFound { .. }) => {}
                other => return other,
            }
            match Directory::create(name, bytes) {
                // Created by another process between the two: open that one.
                Err(Error::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// The segment's name, without a leading `/` (what [`open`](Self::open) takes).
    ///
    /// ```
    /// let dir = multiproc::Directory::create("mp-doc-dir-name", 4096)?;
    /// assert_eq!(dir.name(), "mp-doc-dir-name");
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.seg.name
    }

    /// Removes the directory's name from `/dev/shm` (and its owner record): no
    /// one can open it any more, while handles already open keep working; its
    /// memory is freed when the last process that maps it exits.
    ///
    /// ```
    /// use multiproc::{Directory, Error, Lock};
    /// let dir = Directory::create("mp-doc-unlink", 4096)?;
    /// let lock = Lock::create_in(&dir, "l")?;
    /// dir.unlink()?;
    /// assert!(matches!(Directory::open("mp-doc-unlink"), Err(Error::NotFound { .. })));
    /// assert!(lock.try_lock().is_ok()); // still usable
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unlink(&self) -> Result<()> {
        let name = &self.seg.name;
        // Only the file this handle maps: a directory created anew under the name
        // after an unlink is someone else's.
        let same = std::fs::symlink_metadata(format!("{}/{name}", clean::SHM_DIR))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == self.seg.ino)
            .unwrap_or(false);
        if !same {
            return Err(Error::NotFound { name: name.clone() });
        }
        let unlinked = mem::shm_unlink(&format!("/{name}")).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound { name: name.clone() },
            _ => Error::io(format!("unlinking directory {name:?}"), e),
        });
        clean::remove_record(name, self.seg.ino);
        unlinked
    }

    /// The names of the published objects, in creation order.
    ///
    /// ```
    /// use multiproc::{Directory, Event, Lock};
    /// let dir = Directory::create("mp-doc-names", 4096)?;
    /// Lock::create_in(&dir, "a")?;
    /// Event::create_in(&dir, "b")?;
    /// assert_eq!(dir.names()?, vec!["a".to_string(), "b".to_string()]);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.objects()?.into_iter().map(|o| o.name).collect())
    }

    /// The published objects with their types, in creation order.
    ///
    /// ```
    /// use multiproc::{Array, Directory, named::ObjectKind};
    /// let dir = Directory::create("mp-doc-objects", 4096)?;
    /// Array::<f64>::create_in(&dir, "samples", 10)?;
    /// let o = &dir.objects()?[0];
    /// assert_eq!((o.kind, o.param, o.type_name()), (ObjectKind::Array, 10, "Array<f64>".to_string()));
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn objects(&self) -> Result<Vec<ObjectInfo>> {
        let count = self.count()?;
        (0..count).map(|i| self.entry(i).map(|e| e.info)).collect()
    }

    fn map(&self) -> &'static Mapping {
        &self.seg.map
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::DirectoryCorrupt {
            dir: self.seg.name.clone(),
            reason,
        }
    }

    /// Published entries (acquire: their slots and objects are complete).
    fn count(&self) -> Result<usize> {
        let count = self.map().atomic_u32(COUNT).load(Ordering::Acquire) as usize;
        let capacity = self.map().read::<u32>(CAPACITY) as usize;
        if count > capacity {
            return Err(self.corrupt(format!(
                "{count} entries published in a table of {capacity}"
            )));
        }
        Ok(count)
    }

    /// Reads and checks published entry `i` (shared words are untrusted).
    fn entry(&self, i: usize) -> Result<Entry> {
        let map = self.map();
        let at = TABLE + ENTRY * i;
        let bad = |what: String| self.corrupt(format!("entry {i}: {what}"));
        let tag = map.read::<u32>(at + E_TAG);
        let kind =
            ObjectKind::from_u32(tag).ok_or_else(|| bad(format!("unknown type tag {tag}")))?;
        let (off, len) = (map.read::<u64>(at + E_OFFSET), map.read::<u64>(at + E_LEN));
        let data = (TABLE + ENTRY * map.read::<u32>(CAPACITY) as usize) as u64;
        let fits = off >= data
            && off % ALIGN == 0
            && len > 0
            && off.checked_add(len).is_some_and(|e| e <= map.len() as u64);
        if !fits {
            return Err(bad(format!(
                "{len} bytes at {off} are not inside the object area"
            )));
        }
        let name_len = map.read::<u32>(at + E_NAME_LEN) as usize;
        let type_len = map.read::<u32>(at + E_TYPE_LEN) as usize;
        if name_len == 0 || name_len > MAX_NAME || type_len > MAX_TYPE {
            return Err(bad(format!(
                "name length {name_len} or type length {type_len} out of range"
            )));
        }
        let text = |from: usize, n: usize| {
            let mut b = vec![0u8; n];
            map.read_slice(from, &mut b);
            String::from_utf8(b).map_err(|_| bad("a name is not UTF-8".to_string()))
        };
        Ok(Entry {
            info: ObjectInfo {
                name: text(at + E_NAME, name_len)?,
                kind,
                elem: text(at + E_TYPE, type_len)?,
                len,
                param: map.read::<u64>(at + E_PARAM),
            },
            version: map.read::<u32>(at + E_VERSION),
            elem_size: map.read::<u32>(at + E_ELEM_SIZE),
            elem_align: map.read::<u32>(at + E_ELEM_ALIGN),
            off: off as usize,
        })
    }

    fn find(&self, count: usize, name: &str) -> Result<Option<Entry>> {
        for i in 0..count {
            let e = self.entry(i)?;
            if e.info.name == name {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Opens the object `name`, checking that it is what `spec` asks for: its
    /// type, then its layout version, then its element type.
    pub(crate) fn open_object(&self, name: &str, spec: &Spec) -> Result<Placed> {
        let count = self.count()?;
        let e = self
            .find(count, name)?
            .ok_or_else(|| Error::ObjectNotFound {
                dir: self.seg.name.clone(),
                name: name.to_string(),
            })?;
        let mismatch = || Error::ObjectTypeMismatch {
            dir: self.seg.name.clone(),
            name: name.to_string(),
            found: e.info.type_name(),
            expected: display(spec.kind, &spec.elem),
        };
        if e.info.kind != spec.kind {
            return Err(mismatch());
        }
        if e.version != spec.kind.version() {
            return Err(Error::ObjectVersionMismatch {
                dir: self.seg.name.clone(),
                name: name.to_string(),
                kind: spec.kind.name(),
                found: e.version,
                expected: spec.kind.version(),
            });
        }
        if e.info.elem != spec.elem
            || e.elem_size != spec.elem_size
            || e.elem_align != spec.elem_align
        {
            return Err(mismatch());
        }
        Ok(Placed {
            map: self.map(),
            off: e.off,
            len: e.info.len as usize,
            param: e.info.param,
        })
    }

    /// Creates the object `name` of `len` bytes: `build` lays it out in its
    /// fresh (zeroed) bytes and makes the handle; the entry is published only
    /// after `build` returned `Ok` (the state machine in the module docs).
    pub(crate) fn create_object<R>(
        &self,
        name: &str,
        spec: &Spec,
        len: usize,
        param: u64,
        build: impl FnOnce(Placed) -> Result<R>,
    ) -> Result<R> {
        check_name(name)?;
        let map = self.map();
        let lock = RawLock::at(map, LOCK);
        let deadline = Deadline::after(Some(LOCK_WAIT))?;
        match lock.lock(ident::process(), deadline) {
            None => {
                return Err(Error::Timeout {
                    what: "Directory: taking the creators' lock",
                    timeout: LOCK_WAIT,
                });
            }
            // A creator died holding it: what it left is unreachable (see the
            // module docs), so there is nothing to repair.
            Some(Acquired::OwnerDied) => lock.mark_consistent(),
            Some(Acquired::Clean) => {}
        }
        struct Unlock(RawLock);
        impl Drop for Unlock {
            fn drop(&mut self) {
                self.0.unlock();
            }
        }
        let _unlock = Unlock(lock);
        test_point(Stage::Locked);
        let count = self.count()?;
        if let Some(e) = self.find(count, name)? {
            return Err(Error::ObjectExists {
                dir: self.seg.name.clone(),
                name: name.to_string(),
                found: e.info.type_name(),
            });
        }
        let capacity = map.read::<u32>(CAPACITY) as usize;
        if count >= capacity {
            return Err(Error::DirectoryFull {
                dir: self.seg.name.clone(),
                what: format!("all {capacity} entries are taken"),
            });
        }
        // (2) Take the bytes; store the new bump before touching them.
        let bump = map.atomic_u64(BUMP);
        let start = bump.load(Ordering::Relaxed);
        let end = map.read::<u64>(END).min(map.len() as u64);
        let stop = (len as u64)
            .checked_next_multiple_of(ALIGN)
            .and_then(|l| start.checked_add(l))
            .filter(|s| *s <= end && start % ALIGN == 0)
            .ok_or_else(|| Error::DirectoryFull {
                dir: self.seg.name.clone(),
                what: format!(
                    "{name:?} needs {len} bytes, {} are left",
                    end.saturating_sub(start)
                ),
            })?;
        bump.store(stop, Ordering::SeqCst);
        test_point(Stage::Bumped);
        // (3) Lay the object out.
        let placed = Placed {
            map,
            off: start as usize,
            len,
            param,
        };
        let made = build(placed)?;
        test_point(Stage::Built);
        // (4) Write the whole slot.
        let at = TABLE + ENTRY * count;
        map.write_slice::<u64>(at, &[0u64; ENTRY / 8]);
        map.write::<u32>(at + E_TAG, spec.kind as u32);
        map.write::<u32>(at + E_VERSION, spec.kind.version());
        map.write::<u64>(at + E_OFFSET, start);
        map.write::<u64>(at + E_LEN, len as u64);
        map.write::<u64>(at + E_PARAM, param);
        map.write::<u32>(at + E_ELEM_SIZE, spec.elem_size);
        map.write::<u32>(at + E_ELEM_ALIGN, spec.elem_align);
        map.write::<u32>(at + E_NAME_LEN, name.len() as u32);
        map.write::<u32>(at + E_TYPE_LEN, spec.elem.len() as u32);
        map.write_bytes(at + E_NAME, name.as_bytes());
        map.write_bytes(at + E_TYPE, spec.elem.as_bytes());
        test_point(Stage::Written);
        // (5) Publish.
        map.atomic_u32(COUNT)
            .store(count as u32 + 1, Ordering::Release);
        test_point(Stage::Published);
        Ok(made)
    }
}

/// A published entry, read and checked.
struct Entry {
    info: ObjectInfo,
    version: u32,
    elem_size: u32,
    elem_align: u32,
    off: usize,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::InvalidArgument(format!(
            "object name {name:?} must be 1 to {MAX_NAME} bytes long"
        )));
    }
    Ok(())
}

/// Checks the directory words of a freshly mapped directory.
fn check_layout(map: &Mapping, name: &str) -> Result<()> {
    let format = map.read::<u32>(FORMAT);
    if format != FORMAT_VERSION {
        return Err(Error::VersionMismatch {
            name: name.to_string(),
            found: format,
            expected: FORMAT_VERSION,
        });
    }
    let corrupt = |reason: String| Error::DirectoryCorrupt {
        dir: name.to_string(),
        reason,
    };
    let capacity = map.read::<u32>(CAPACITY) as u64;
    let data = TABLE as u64 + ENTRY as u64 * capacity;
    let end = map.read::<u64>(END);
    if capacity == 0 || data > map.len() as u64 || end != map.len() as u64 {
        return Err(corrupt(format!(
            "a table of {capacity} entries, object area ending at {end}, in a file of {} bytes",
            map.len()
        )));
    }
    Ok(())
}

/// The places of `create_object` where a test can kill its process (see the
/// unit tests); nothing outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Stage {
    Locked = 1,
    Bumped = 2,
    Built = 3,
    Written = 4,
    Published = 5,
}

#[cfg(test)]
static DIE_AT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Tests only: a stage at which a creator lingers (yields the CPU for a few
/// milliseconds), widening a race window for the race tests; never a means of
/// synchronization (correct code passes whatever the timing).
#[cfg(test)]
static LINGER_AT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[inline]
fn test_point(_stage: Stage) {
    #[cfg(test)]
    {
        if DIE_AT.load(Ordering::Relaxed) == _stage as u32 {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
        if LINGER_AT.load(Ordering::Relaxed) == _stage as u32 {
            let until = std::time::Instant::now() + Duration::from_millis(5);
            while std::time::Instant::now() < until {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests;
