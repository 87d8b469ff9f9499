//! The crate's one error type.
//!
//! Every fallible operation in multiproc returns [`Result<T>`]. Each variant names
//! what went wrong and its message says what to do about it, so that a user who sees
//! only the `Display` text can fix the call. Nothing in the library panics on bad
//! input.

use std::io;
use std::time::Duration;

/// `Result` with the crate's [`Error`].
///
/// ```
/// fn make() -> multiproc::Result<multiproc::Lock> {
///     multiproc::Lock::new()
/// }
/// assert!(make().is_ok());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in multiproc.
///
/// ```
/// use multiproc::{Error, Array};
/// let a = Array::<i32>::new(3).unwrap();
/// match a.get(7) {
///     Err(Error::IndexOutOfRange { index: 7, len: 3 }) => {}
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size of zero was given where at least one byte or element is needed.
    #[error("{what} must not be zero: pass a size of at least 1")]
    ZeroSize {
        /// What was sized.
        what: &'static str,
    },

    /// A size or count that does not fit in memory or in the shared layout.
    #[error(
        "{what} of {requested} is too large (at most {max}): split the data or use a smaller size"
    )]
    SizeOverflow {
        /// What was sized.
        what: &'static str,
        /// The size asked for.
        requested: u128,
        /// The largest size accepted.
        max: u128,
    },

    /// An invalid argument, with the reason.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A named segment that does not exist.
    #[error("no shared memory segment named {name:?}: check the name, or create it first")]
    NotFound {
        /// The name looked up.
        name: String,
    },

    /// A named segment that already exists when creating one.
    #[error(
        "a shared memory segment named {name:?} already exists: attach to it, or pick another name"
    )]
    AlreadyExists {
        /// The name asked for.
        name: String,
    },

    /// A segment name that is not valid.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A file that cannot be a shared memory segment (a FIFO, an empty file, a
    /// symbolic link), or a segment whose multiproc header is corrupt.
    #[error("{name:?} is not a usable shared memory segment: {reason}")]
    Foreign {
        /// The segment's name.
        name: String,
        /// What was wrong with it.
        reason: String,
    },

    /// A segment made by another layout version of multiproc.
    #[error(
        "segment {name:?} has layout version {found}, this multiproc reads version {expected}: use the same multiproc version on both sides"
    )]
    VersionMismatch {
        /// The segment's name.
        name: String,
        /// The version found in the header.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },

    /// A segment holding another kind of object than the one asked for.
    #[error("segment {name:?} holds a {found}, not a {expected}: attach with the matching type")]
    KindMismatch {
        /// The segment's name.
        name: String,
        /// The kind asked for.
        expected: String,
        /// The kind found.
        found: String,
    },

    /// A segment whose file is shorter than its header says.
    #[error(
        "segment {name:?} is truncated: {actual} bytes where {needed} are needed; it was damaged or is still being created"
    )]
    Truncated {
        /// The segment's name.
        name: String,
        /// Its size on disk.
        actual: u64,
        /// The size it must have.
        needed: u64,
    },

    /// A segment owned by another user, or one whose mode lets others read it.
    #[error("segment {name:?} is not safe to attach: {reason}")]
    Permission {
        /// The segment's name.
        name: String,
        /// What was wrong.
        reason: String,
    },

    /// An index outside `0..len`.
    #[error("index {index} is out of range for length {len}")]
    IndexOutOfRange {
        /// The index given.
        index: usize,
        /// The length of the array.
        len: usize,
    },

    /// Shared data that this process is already using in a way that excludes the
    /// access asked for: a second guard on a Value or Array in one thread, a copy
    /// while a guard or chunks are alive, chunks split twice, or a lock release
    /// that would leave a live guard unprotected.
    #[error("{what} is in use in this process by {by}: {hint}")]
    InUse {
        /// What was accessed.
        what: &'static str,
        /// What holds it.
        by: &'static str,
        /// What to do.
        hint: &'static str,
    },

    /// A byte range that runs past the end of a [`SharedMemory`](crate::SharedMemory).
    #[error(
        "{len} bytes at offset {offset} run past the end of a {size}-byte shared memory segment: keep offset + length <= size()"
    )]
    RangeOutOfBounds {
        /// The offset asked for.
        offset: usize,
        /// The number of bytes asked for.
        len: usize,
        /// The segment's size.
        size: usize,
    },

    /// A named segment that another process truncated after this one mapped it:
    /// the bytes past its new end are gone (touching them would raise SIGBUS).
    #[error(
        "shared memory segment {name:?} shrank: another process truncated it to {available} of its {size} bytes, and this access needs {needed}; its data is lost: stop using it and create a new segment"
    )]
    Shrunk {
        /// The segment's name.
        name: String,
        /// The bytes still there (its payload now, header not counted).
        available: u64,
        /// The size it was created with.
        size: u64,
        /// The end of the range asked for.
        needed: u64,
    },

    /// A timeout so large that the deadline cannot be represented.
    #[error("timeout of {0:?} overflows the monotonic clock: pass None to wait without a timeout")]
    TimeoutOverflow(Duration),

    /// Releasing a lock that is not held: it was never acquired, or was released
    /// already.
    #[error(
        "{what}: the lock is not held (never acquired, or already released): release only what was acquired"
    )]
    NotHeld {
        /// What was called.
        what: &'static str,
    },

    /// Releasing a Semaphore whose value would pass [`VALUE_MAX`](crate::sync::semaphore::VALUE_MAX),
    /// the most a semaphore holds (POSIX `SEM_VALUE_MAX`); nothing was released.
    #[error(
        "Semaphore::release of {n} permit(s) at value {value} would pass the most a semaphore holds ({max}): release only permits that were acquired"
    )]
    SemaphoreFull {
        /// The value before the release.
        value: u32,
        /// How many permits the release gives back.
        n: u32,
        /// The most a semaphore holds.
        max: u32,
    },

    /// Releasing an RLock, or waiting on a Condition, from a thread that does not own it.
    #[error("{what}: the calling thread does not hold the lock; acquire it first")]
    NotOwner {
        /// What was attempted.
        what: &'static str,
    },

    /// The previous owner of a lock died while holding it: the data it protects may
    /// be half-updated. Repair it while holding the lock, then call
    /// `mark_consistent()` on the lock or guard; until someone does, every later
    /// acquirer is told too.
    ///
    /// Where it comes from, and whether the lock is held then:
    /// - `Condition::wait` / `wait_for`: held again, as before the call (the
    ///   caller's guard, or its `release()`, gives it back);
    /// - `?` on an [`OwnerDied`](crate::OwnerDied) guard: the guard was dropped, so
    ///   the lock is released (still marked inconsistent);
    /// - `Value::get`, `Array::get` and friends: nothing is held.
    ///
    /// Python-style `acquire` never returns it: it returns `Ok(true)`, lock held,
    /// and `is_consistent()` says false.
    #[error(
        "the previous owner of this lock died while holding it: the data it protects may be half-updated; repair it while holding the lock, then call mark_consistent()"
    )]
    OwnerDied,

    /// A recursion count that would overflow.
    #[error("{what} recursion count overflows: release before acquiring again")]
    RecursionOverflow {
        /// Which primitive.
        what: &'static str,
    },

    /// A BoundedSemaphore released above its initial value.
    #[error(
        "BoundedSemaphore released too many times: value {value} + {n} would exceed its bound {bound}"
    )]
    OverRelease {
        /// The value before the release.
        value: u32,
        /// How many releases were asked for.
        n: u32,
        /// The bound (initial value).
        bound: u32,
    },

    /// A Barrier that is broken (aborted, timed out, reset, a party died, or the
    /// action of another party panicked).
    #[error("the barrier is broken ({0}): call reset() before using it again")]
    BrokenBarrier(&'static str),

    /// The Barrier's action panicked in this party (the last to arrive, which ran
    /// it); the barrier is broken, and the other parties get
    /// [`BrokenBarrier`](Self::BrokenBarrier)`("action failed")`. CPython raises the
    /// action's exception out of `wait` the same way.
    #[error(
        "the barrier action panicked: {message}; the barrier is broken: call reset() before using it again"
    )]
    BarrierActionPanicked {
        /// The panic's message (its `&str` or `String` payload, else a placeholder).
        message: String,
    },

    /// An operation on a Process in the wrong state.
    #[error("process {name:?}: {reason}")]
    ProcessState {
        /// The process's name.
        name: String,
        /// What was wrong.
        reason: &'static str,
    },

    /// A shared object would be held by more processes than its shared count can
    /// record: `start` refuses the fork (as `Arc` refuses to count past `isize::MAX`).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::HoldersOverflow { max: 7 };
    /// assert!(e.to_string().contains("join"));
    /// ```
    #[error(
        "a shared object is already held by {max} processes, the most its count records: join some processes before starting more"
    )]
    HoldersOverflow {
        /// The most holders a shared count records.
        max: u32,
    },

    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] from a rustix or std error, with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}
