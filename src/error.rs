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

    /// An interruptible wait ([`Condition::wait_interruptible`](crate::Condition::wait_interruptible),
    /// [`Barrier::wait_interruptible`](crate::Barrier::wait_interruptible)) ended
    /// because a signal interrupted it and its check then asked it to stop. The
    /// wait left cleanly: a Condition's lock is held again (a notification that
    /// had just chosen this waiter went on to another), and a Barrier is broken
    /// (`"aborted"`) for the other parties of the round.
    ///
    /// ```
    /// let e = multiproc::Error::Interrupted { what: "Condition::wait_interruptible" };
    /// assert!(e.to_string().contains("interrupted by a signal"));
    /// ```
    #[error(
        "{what} was interrupted by a signal and its check asked it to stop: handle what the signal asked for, then wait again if needed"
    )]
    Interrupted {
        /// The wait that was interrupted.
        what: &'static str,
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

    /// A blocking call whose timeout passed first (Python's `TimeoutError`); what
    /// was waited for is unchanged and may be waited for again (`Queue::get`,
    /// `AsyncResult::get`, ...).
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

    /// `recv` on a connection whose other end was closed, or whose process died,
    /// with no message left: Python's `EOFError`. Final: every later `recv` says it
    /// again.
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (a, b) = Pipe(true)?;
    /// drop(b);
    /// assert!(matches!(a.recv::<u32>(), Err(Error::Eof)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error(
        "end of file: the other end of the connection was closed or its process died, and no message is left"
    )]
    Eof,

    /// A message cut short: the other end closed, or its process died, in the
    /// middle of sending it. The partial message is discarded; the connection is at
    /// its end (later reads return [`Error::Eof`]).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::MessageCut { received: 3, expected: 10 };
    /// assert!(e.to_string().contains("3 of its 10 bytes"));
    /// ```
    #[error(
        "the other end of the connection closed or its process died in the middle of a message: {received} of its {expected} bytes arrived, and the partial message was discarded"
    )]
    MessageCut {
        /// Bytes of the message (header included) that arrived.
        received: u64,
        /// Bytes the message has (header included).
        expected: u64,
    },

    /// `send` on a connection whose other end was closed, or whose process died:
    /// nothing was delivered (Python's `BrokenPipeError`). Never a `SIGPIPE`.
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (a, b) = Pipe(true)?;
    /// drop(b);
    /// assert!(matches!(a.send(&1u8), Err(Error::BrokenPipe)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error(
        "the other end of the connection was closed or its process died: the message was not delivered"
    )]
    BrokenPipe,

    /// An operation on a connection that this process closed with `close()`.
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (mut a, _b) = Pipe(true)?;
    /// a.close();
    /// assert!(matches!(a.send(&1u8), Err(Error::ConnectionClosed { op: "send" })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("{op} on a closed connection: close() was called on it in this process")]
    ConnectionClosed {
        /// The operation attempted.
        op: &'static str,
    },

    /// Reading from the write end, or writing to the read end, of a one-way
    /// `Pipe(false)`.
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (reader, writer) = Pipe(false)?;
    /// assert!(matches!(reader.send(&1u8), Err(Error::WrongEnd { .. })));
    /// assert!(matches!(writer.recv::<u8>(), Err(Error::WrongEnd { .. })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("{op}: this connection is {end} (one end of a one-way Pipe(false))")]
    WrongEnd {
        /// The operation attempted.
        op: &'static str,
        /// `"read-only"` or `"write-only"`.
        end: &'static str,
    },

    /// `recv_bytes(maxlength)` found a longer message. As in CPython (`OSError:
    /// bad message length`) the message's body stays unread in the stream, so the
    /// connection can no longer be read: later reads return
    /// [`Error::ConnectionBroken`] (a one-way read end is closed).
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (a, b) = Pipe(true)?;
    /// a.send_bytes(b"twelve bytes", 0, None)?;
    /// assert!(matches!(
    ///     b.recv_bytes(Some(4)),
    ///     Err(Error::MessageTooLong { size: 12, maxlength: 4 })
    /// ));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error(
        "bad message length: the message is {size} bytes, more than maxlength {maxlength}; its body is left unread, so this connection can no longer be read"
    )]
    MessageTooLong {
        /// The message's length.
        size: u64,
        /// The most the caller accepted.
        maxlength: usize,
    },

    /// A read on a connection that an earlier error left mid-message.
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::ConnectionBroken { op: "recv", reason: "bad message length" };
    /// assert!(e.to_string().contains("close it"));
    /// ```
    #[error(
        "{op}: this connection can no longer be read after an earlier error ({reason}): close it"
    )]
    ConnectionBroken {
        /// The operation attempted.
        op: &'static str,
        /// The earlier error.
        reason: &'static str,
    },

    /// `recv_bytes_into` with a buffer too small for the message. The message was
    /// consumed and is carried here whole (Python's `BufferTooShort`, whose argument
    /// is the message); the connection stays usable.
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (a, b) = Pipe(true)?;
    /// a.send_bytes(b"hello", 0, None)?;
    /// let mut small = [0u8; 3];
    /// match b.recv_bytes_into(&mut small, 0) {
    ///     Err(Error::BufferTooShort { message, .. }) => assert_eq!(message, b"hello"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error(
        "the message is {needed} bytes and the buffer has room for {available} after the offset: the message is carried whole in this error"
    )]
    BufferTooShort {
        /// The message's length.
        needed: usize,
        /// Room in the buffer after the offset.
        available: usize,
        /// The whole message.
        message: Vec<u8>,
    },

    /// An `offset`/`size` pair that does not fit in the buffer given.
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (a, _b) = Pipe(true)?;
    /// assert!(matches!(
    ///     a.send_bytes(b"abc", 2, Some(5)),
    ///     Err(Error::BufferRange { offset: 2, size: Some(5), len: 3, .. })
    /// ));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error(
        "{op}: offset {offset} and size {size:?} do not fit in a buffer of {len} bytes: keep offset <= len and offset + size <= len"
    )]
    BufferRange {
        /// The operation.
        op: &'static str,
        /// The offset given.
        offset: usize,
        /// The size given (`None`: the rest of the buffer).
        size: Option<usize>,
        /// The buffer's length.
        len: usize,
    },

    /// A value that postcard cannot serialize (`send`), or a message that is not a
    /// postcard encoding of the type asked for (`recv`; the message was consumed and
    /// the connection stays usable).
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (a, b) = Pipe(true)?;
    /// a.send(&true)?;
    /// assert!(matches!(b.recv::<String>(), Err(Error::Codec { op: "recv", .. })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("{op}: postcard could not {what}: {reason}")]
    Codec {
        /// `"send"` or `"recv"`.
        op: &'static str,
        /// `"serialize the value"` or `"decode the message as the type asked for"`.
        what: &'static str,
        /// postcard's error.
        reason: String,
    },

    /// A message header that no sender of this framing writes (a negative length
    /// other than the 8-byte-length marker): the stream is not Connection framing,
    /// and the connection can no longer be read.
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::BadFrame { header: -7 };
    /// assert!(e.to_string().contains("-7"));
    /// ```
    #[error(
        "bad message header: length {header} (only -1, the 8-byte-length marker, may be negative): the other end does not speak Connection framing"
    )]
    BadFrame {
        /// The 4-byte header read, as a signed big-endian integer.
        header: i32,
    },

    /// A pool worker process died (killed by a signal, or exited) while it held
    /// the task: the task's result is lost (billiard's `WorkerLostError`). Only the
    /// tasks that worker held fail; the pool starts a replacement and goes on. With
    /// [`PoolBuilder::retries`](crate::PoolBuilder::retries) the task is run again
    /// first, and this error comes only when its retries are used up.
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::WorkerLost {
    ///     pid: 1234,
    ///     signal: Some(9),
    ///     exitcode: Some(-9),
    ///     task: "item 3 of map job 1".into(),
    ///     attempts: 1,
    /// };
    /// assert!(e.to_string().contains("worker process 1234 was killed by signal 9"));
    /// ```
    #[error(
        "pool worker process {pid} {} while running {task} (attempt {attempts}): the task's result is lost; the pool started a replacement worker",
        describe_end(*signal, *exitcode)
    )]
    WorkerLost {
        /// The worker's pid.
        pid: u32,
        /// The signal that killed it, if one did (9 for SIGKILL).
        signal: Option<i32>,
        /// Its exit code as [`Process::exitcode`](crate::Process::exitcode) gives it
        /// (`-signal` when killed), if it was reaped.
        exitcode: Option<i32>,
        /// Which task was lost.
        task: String,
        /// How many times the task was started (1 without retries).
        attempts: u32,
    },

    /// A pool task panicked in its worker; the worker goes on with other tasks.
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::TaskPanicked { task: "apply job 2".into(), message: "boom".into() };
    /// assert_eq!(e.to_string(), "pool task apply job 2 panicked: boom");
    /// ```
    #[error("pool task {task} panicked: {message}")]
    TaskPanicked {
        /// Which task (and item) panicked.
        task: String,
        /// The panic message.
        message: String,
    },

    /// A task was given to a pool after [`Pool::close`](crate::Pool::close) or
    /// [`Pool::terminate`](crate::Pool::terminate).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::PoolClosed { op: "map" };
    /// assert!(e.to_string().starts_with("map: the pool is closed"));
    /// ```
    #[error("{op}: the pool is closed (close() or terminate() was called): it takes no new tasks")]
    PoolClosed {
        /// The call that was refused.
        op: &'static str,
    },

    /// A task the pool had not finished when [`Pool::terminate`](crate::Pool::terminate)
    /// (or the pool's drop) stopped its workers.
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::PoolTerminated { task: "item 0 of map job 1".into() };
    /// assert!(e.to_string().contains("terminated"));
    /// ```
    #[error("{task} was not finished: the pool was terminated")]
    PoolTerminated {
        /// Which task.
        task: String,
    },

    /// The pool cannot run tasks any more: its initializer panicked, or it could
    /// not start a worker. Tasks it had not finished fail with this error.
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::PoolBroken { reason: "the initializer panicked: boom".into() };
    /// assert!(e.to_string().contains("boom"));
    /// ```
    #[error("the pool is broken and runs no more tasks: {reason}")]
    PoolBroken {
        /// Why.
        reason: String,
    },

    /// A call on a pool made in the wrong state, with the reason (for example
    /// `join` before `close`, Python's `ValueError`).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::PoolState { op: "join", reason: "the pool is still running" };
    /// assert_eq!(e.to_string(), "join: the pool is still running");
    /// ```
    #[error("{op}: {reason}")]
    PoolState {
        /// The call.
        op: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A result asked about before it is ready (`AsyncResult::successful`,
    /// Python's `ValueError`).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::NotReady { what: "AsyncResult::successful" };
    /// assert!(e.to_string().contains("not ready"));
    /// ```
    #[error("{what}: the result is not ready yet; wait() for it first")]
    NotReady {
        /// The call.
        what: &'static str,
    },

    /// A process started by spawn or forkserver could not run its entry: the
    /// child refused it (another executable, a type mismatch, arguments it could
    /// not import) or died before it had imported its arguments.
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::Start { name: "Process-1".into(), method: "spawn", reason: "died".into() };
    /// assert!(e.to_string().contains("Process-1"));
    /// ```
    #[error("starting process {name:?} by {method}: {reason}")]
    Start {
        /// The process's name.
        name: String,
        /// The start method (`"spawn"` or `"forkserver"`).
        method: &'static str,
        /// What went wrong.
        reason: String,
    },

    /// A start method was asked for in a way it cannot be had: set twice without
    /// `force`, unknown by name, or spawn without [`spawn::init`](crate::spawn::init).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::StartMethod("context has already been set".into());
    /// assert!(e.to_string().contains("already"));
    /// ```
    #[error("start method: {0}")]
    StartMethod(String),
    /// A directory has no object of that name (`open_in`).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::ObjectNotFound { dir: "mp-d".into(), name: "lock".into() };
    /// assert!(e.to_string().contains("create it first"));
    /// ```
    #[error(
        "directory {dir:?} has no object named {name:?}: create it first (create_in), or check the name (Directory::names lists them)"
    )]
    ObjectNotFound {
        /// The directory's segment name.
        dir: String,
        /// The object's name.
        name: String,
    },

    /// A directory already has an object of that name (`create_in`).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::ObjectExists { dir: "mp-d".into(), name: "lock".into(), found: "Lock".into() };
    /// assert!(e.to_string().contains("open it with"));
    /// ```
    #[error(
        "directory {dir:?} already has an object named {name:?} (a {found}): open it with {found}::open_in, or create under another name"
    )]
    ObjectExists {
        /// The directory's segment name.
        dir: String,
        /// The object's name.
        name: String,
        /// The type of the object already there.
        found: String,
    },

    /// An object opened as another type than the one it was created as (a Lock
    /// opened as a Barrier, a `Value<u32>` as a `Value<u64>`).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::ObjectTypeMismatch {
    ///     dir: "mp-d".into(),
    ///     name: "n".into(),
    ///     found: "Value<u32>".into(),
    ///     expected: "Value<u64>".into(),
    /// };
    /// assert!(e.to_string().contains("open it as a Value<u32>"));
    /// ```
    #[error(
        "object {name:?} of directory {dir:?} is a {found}, not a {expected}: open it as a {found}"
    )]
    ObjectTypeMismatch {
        /// The directory's segment name.
        dir: String,
        /// The object's name.
        name: String,
        /// The type it was created as.
        found: String,
        /// The type asked for.
        expected: String,
    },

    /// An object laid out by another version of its type's layout.
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::ObjectVersionMismatch {
    ///     dir: "mp-d".into(), name: "q".into(), kind: "Queue", found: 9, expected: 1,
    /// };
    /// assert!(e.to_string().contains("same multiproc version"));
    /// ```
    #[error(
        "object {name:?} of directory {dir:?} is a {kind} of layout version {found}, this multiproc reads version {expected}: use the same multiproc version in every program"
    )]
    ObjectVersionMismatch {
        /// The directory's segment name.
        dir: String,
        /// The object's name.
        name: String,
        /// Its type.
        kind: &'static str,
        /// The version found in its entry.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },

    /// A directory without room for another object.
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::DirectoryFull { dir: "mp-d".into(), what: "bytes".into() };
    /// assert!(e.to_string().contains("larger"));
    /// ```
    #[error("directory {dir:?} is full ({what}): create it larger, or use another directory")]
    DirectoryFull {
        /// The directory's segment name.
        dir: String,
        /// What ran out.
        what: String,
    },

    /// A directory whose shared words are not a valid directory (damaged, or
    /// written by something else).
    ///
    /// ```
    /// use multiproc::Error;
    /// let e = Error::DirectoryCorrupt { dir: "mp-d".into(), reason: "entry 3 is out of bounds".into() };
    /// assert!(e.to_string().contains("corrupt"));
    /// ```
    #[error("directory {dir:?} is corrupt: {reason}; unlink it and create it again")]
    DirectoryCorrupt {
        /// The directory's segment name.
        dir: String,
        /// What is wrong.
        reason: String,
    },

    /// A handle was serialized or deserialized outside
    /// [`token::export`](crate::token::export) / [`token::import`](crate::token::import):
    /// its shared memory needs descriptors that only those carry.
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let err = serde_json::to_string(&lock).unwrap_err();
    /// assert!(err.to_string().contains("multiproc::token::export"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("a multiproc handle can only be {op} as a token: {hint}")]
    TokenOutside {
        /// "serialized" or "deserialized".
        op: &'static str,
        /// What to call instead.
        hint: &'static str,
    },

    /// A token that cannot be what it claims to be (forged or corrupt): wrong
    /// inode, offset out of range, bad descriptor index, bad bytes.
    ///
    /// ```
    /// let e = multiproc::Error::BadToken { what: "Lock", reason: "x".into() };
    /// assert!(e.to_string().contains("Lock"));
    /// ```
    #[error("invalid {what} token: {reason}")]
    BadToken {
        /// The object kind the token was read as.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A token imported as another kind of object than it was exported as.
    ///
    /// ```
    /// let e = multiproc::Error::TokenKind { expected: "Barrier", found: "Lock".into() };
    /// assert!(e.to_string().contains("Barrier"));
    /// ```
    #[error(
        "the token holds a {found}, not a {expected}: import it as the type it was exported as"
    )]
    TokenKind {
        /// The type asked for.
        expected: &'static str,
        /// What the token holds.
        found: String,
    },

    /// A token written by another token format version.
    ///
    /// ```
    /// let e = multiproc::Error::TokenVersion { found: 9, expected: 1 };
    /// assert!(e.to_string().contains("version 9"));
    /// ```
    #[error(
        "token format version {found}, this build reads version {expected}: export and import with the same multiproc version"
    )]
    TokenVersion {
        /// The version in the token.
        found: u16,
        /// The version this build writes and reads.
        expected: u16,
    },

    /// The object a token names was freed (its memory possibly reused) before the
    /// token was imported.
    ///
    /// ```
    /// let e = multiproc::Error::StaleToken { what: "Lock" };
    /// assert!(e.to_string().contains("keep a handle alive"));
    /// ```
    #[error(
        "the object was freed before the token was imported ({what}): keep a handle alive in the sending process until the receiver has it"
    )]
    StaleToken {
        /// The object kind.
        what: &'static str,
    },

    /// An object (or a part of it) that cannot travel to another process.
    ///
    /// ```
    /// let e = multiproc::Error::NotTransferable { what: "Pool", reason: "x" };
    /// assert!(e.to_string().contains("Pool"));
    /// ```
    #[error("{what} cannot be exported: {reason}")]
    NotTransferable {
        /// The object.
        what: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },

    /// The token bytes could not be encoded or decoded (postcard's message).
    ///
    /// ```
    /// let e = multiproc::Error::TokenEncoding("unexpected end".into());
    /// assert!(e.to_string().contains("unexpected end"));
    /// ```
    #[error("token bytes: {0}")]
    TokenEncoding(String),

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

/// How a process ended, for [`Error::WorkerLost`].
fn describe_end(signal: Option<i32>, exitcode: Option<i32>) -> String {
    match (signal, exitcode) {
        (Some(sig), _) => format!("was killed by signal {sig}"),
        (None, Some(code)) => format!("exited with code {code}"),
        (None, None) => "ended (exit status unknown)".to_string(),
    }
}
