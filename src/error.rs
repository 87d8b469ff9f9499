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

    /// A segment that was not made by multiproc, or whose header is corrupt.
    #[error(
        "segment {name:?} is not a multiproc segment ({reason}): attach only to segments made by multiproc"
    )]
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

    /// Releasing a lock or semaphore that is not held.
    #[error("{what} released too many times: it is not held")]
    NotHeld {
        /// Which primitive.
        what: &'static str,
    },

    /// Releasing an RLock, or waiting on a Condition, from a thread that does not own it.
    #[error("{what}: the calling thread does not hold the lock; acquire it first")]
    NotOwner {
        /// What was attempted.
        what: &'static str,
    },

    /// The previous owner of a lock died while holding it.
    ///
    /// The lock **is now held by the caller**, as with POSIX `EOWNERDEAD`. The data it
    /// protects may be half-updated: repair it, then call `mark_consistent()` on the
    /// lock or guard. Until someone does, every later acquirer gets this error too.
    #[error(
        "the previous owner of this lock died while holding it; the lock is now yours: repair the data it protects, then call mark_consistent()"
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

    /// A Barrier that is broken (aborted, timed out, or a party died).
    #[error("the barrier is broken ({0}): call reset() before using it again")]
    BrokenBarrier(&'static str),

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

    /// A message queue whose other side is gone: every producer (for `get`, once
    /// the queue is empty) or every consumer (for `put`) dropped its handle, closed
    /// it, or died. crossbeam-channel's `Disconnected`.
    ///
    /// ```
    /// let q = multiproc::Queue::<u32>::new()?;
    /// let rx = q.receiver();
    /// drop(q); // the last producer
    /// assert!(matches!(rx.get(None), Err(multiproc::Error::Disconnected(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("{0}")]
    Disconnected(&'static str),

    /// `put_nowait` (or a `put` that may not block) on a full queue (Python's
    /// `queue.Full`).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::with_maxsize(1)?;
    /// q.put_nowait(&1)?;
    /// assert!(matches!(q.put_nowait(&2), Err(multiproc::Error::Full)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("the queue is full: get messages out first, or put with a timeout")]
    Full,

    /// `get_nowait` (or a `get` that may not block) on an empty queue (Python's
    /// `queue.Empty`).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(matches!(q.get_nowait(), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("the queue is empty: put a message first, or get with a timeout")]
    Empty,

    /// A blocking call whose timeout passed first.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<u8>::new()?;
    /// let e = q.get(Some(Duration::from_millis(1))).unwrap_err();
    /// assert!(matches!(e, multiproc::Error::Timeout { what: "Queue.get", .. }));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("{what} timed out after {timeout:?}")]
    Timeout {
        /// The call that timed out.
        what: &'static str,
        /// The timeout it was given.
        timeout: Duration,
    },

    /// A call on a handle after its `close()`.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// q.close();
    /// assert!(matches!(q.put(&1, None), Err(multiproc::Error::Closed(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("{0} on a closed handle: clone an open handle before closing it")]
    Closed(&'static str),

    /// A message that serde could not encode or decode (postcard's format), with
    /// the reason: the types on both sides of a queue must agree.
    ///
    /// ```
    /// let q = multiproc::Queue::<bool>::new()?;
    /// q.put_bytes(&[7], None)?; // not a bool in postcard's format
    /// assert!(matches!(q.get(None), Err(multiproc::Error::Codec { .. })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("{what} a message failed: {reason} (do both sides use the same message type?)")]
    Codec {
        /// `encoding` or `decoding`.
        what: &'static str,
        /// postcard's reason.
        reason: String,
    },

    /// Shared words of a queue that no correct writer leaves (another process wrote
    /// over the queue's memory): the queue refuses to read past them.
    ///
    /// ```
    /// let e = multiproc::Error::Corrupt("a frame longer than the ring".into());
    /// assert!(e.to_string().contains("longer"));
    /// ```
    #[error("the queue's shared memory is corrupt: {0}")]
    Corrupt(String),

    /// `JoinableQueue::task_done` called more often than messages were taken.
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// assert!(matches!(q.task_done(), Err(multiproc::Error::TaskDoneTooMany)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("task_done() called more times than there were tasks taken from the queue")]
    TaskDoneTooMany,

    /// `JoinableQueue::join`: every task is done except `count` that consumers took
    /// and died holding (killed before their `task_done`). Those tasks are written
    /// off by this report: a later `join` does not count them again.
    ///
    /// ```
    /// let e = multiproc::Error::TasksAbandoned { count: 2 };
    /// assert!(e.to_string().contains("2"));
    /// ```
    #[error(
        "join: every task is done but {count} that consumers took and died holding (they are written off)"
    )]
    TasksAbandoned {
        /// Tasks lost with their dead consumers.
        count: u64,
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
