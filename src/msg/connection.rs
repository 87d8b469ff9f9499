//! [`Connection`]: one end of a [`Pipe`](crate::Pipe), Python's
//! `multiprocessing.connection.Connection`, and [`wait`] over connections and
//! process sentinels.
//!
//! # Wire format
//!
//! Each message is a length header and the message's bytes, exactly as CPython's
//! `Connection` frames them, so that a future Python binding can talk to CPython:
//! a 4-byte big-endian signed length for messages below 2 GiB; for larger ones the
//! marker `-1` (4 bytes) followed by an 8-byte big-endian unsigned length. What the
//! bytes are is the caller's: [`send_bytes`](Connection::send_bytes) sends them as
//! they are (byte-compatible with CPython's `send_bytes`/`recv_bytes`), and
//! [`send`](Connection::send) sends a value serialized with
//! [postcard](https://docs.rs/postcard) (compact, stable, `serde`), where CPython
//! pickles.
//!
//! # State of a connection (the invariants)
//!
//! - `open`: `Some` until [`close`](Connection::close); it holds the descriptor and
//!   the descriptor's inherit registration, which live and die together (the
//!   registration is dropped *first*, so a fork racing `close` on another thread
//!   never runs a hook on a number that may already be reused).
//! - The read side is a buffered byte stream: `ReadState::buf[start..end]` holds
//!   bytes read from the descriptor and not yet consumed; a message is consumed only
//!   once it is whole, so a reader never sees half a message. `buffered` mirrors
//!   `end - start` for [`poll`](Connection::poll) and [`wait`] without the lock.
//! - `read_broken`: set when a read stopped in the middle of a message (a
//!   `maxlength` refusal or a bad header): the stream position is lost, and every
//!   later read returns [`Error::ConnectionBroken`]. Never cleared.
//! - Writes hold the write lock for a whole message, so messages from two threads
//!   never interleave; reads hold the read lock for a whole message. The two locks are
//!   separate: one thread may block in `recv` while another sends on the same duplex
//!   connection.
//!
//! # Waiting for a message
//!
//! A read that may block, and a [`poll`](Connection::poll) with a timeout, first
//! look at the descriptor in a short adaptive spin (`spin`, a process-local
//! `sync::spin::AdaptiveSpin` of this handle; one `poll(0)` system call per look), and only
//! then block in the kernel. A partner that answers within microseconds is so
//! caught with this process still running: blocking costs a sleep and a wake-up,
//! and waking a halted vCPU takes 20 to 70 us on the virtual machines measured
//! here, against about 0.3 us per look (a round trip of 8-byte messages between
//! two processes: 63 us blocking, 4.9 us with the spin). The budget grows while
//! spins succeed and shrinks to a few looks while they fail, so a receiver that
//! waits long burns at most one budget per wait (bounded: `spin::MAX` looks, or
//! the probe's `spin::PROBE_TIME`); confined to one CPU it does not spin but
//! yields the core (the partner can run nowhere else), as the primitives' waits
//! do. The read itself is unchanged, so end of file (the writer died) and errors
//! come as before: a dead writer makes the descriptor readable, which ends the
//! spin at once.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::sync::spin::AdaptiveSpin;
use crate::sys::fd::readable_now;
use crate::sys::inherit::Registration;
use crate::sys::time::Deadline;
use crate::sys::{fd as sysfd, time};

pub use super::wait::{Waitable, wait};

/// Bytes the read buffer holds: one `read` takes up to this many, so small messages
/// arrive many per system call when the writer is ahead.
const READ_BUF: usize = 64 * 1024;
/// Largest message length that the 4-byte header carries (CPython's limit too).
const SHORT_MAX: u64 = i32::MAX as u64;
/// The memory a message reserves before its bytes arrive: a header that announces
/// a huge message (or a writer that dies early) never makes the reader allocate
/// more than this ahead of the data.
const RESERVE_AHEAD: usize = 16 * 1024 * 1024;
/// Messages up to this size are copied behind their header and sent with one
/// plain `send` on sockets.
const SMALL: usize = 8192;

/// What the descriptor is, which decides how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Kind {
    /// A Unix stream socket (duplex Pipe): written with `sendmsg(MSG_NOSIGNAL)`.
    Socket,
    /// The read end of a pipe (one-way Pipe).
    PipeReader,
    /// The write end of a pipe (one-way Pipe): written with `SIGPIPE` blocked.
    PipeWriter,
}

/// The open descriptor and its fork registration. Field order is drop order: the
/// registration goes first (see the module's invariants).
struct Open {
    registration: Registration,
    fd: OwnedFd,
}

#[derive(Default)]
struct ReadState {
    /// Bytes read and not consumed: `buf[start..end]`; allocated on first read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// One end of a [`Pipe`](crate::Pipe): sends and receives whole messages, typed
/// ([`send`](Self::send)/[`recv`](Self::recv), serde + postcard) or raw
/// ([`send_bytes`](Self::send_bytes)/[`recv_bytes`](Self::recv_bytes)).
///
/// **Ends and processes.** Move a `Connection` into the [`Process`](crate::Process)
/// that uses it. A child that did not capture an end does not keep it open: when
/// it starts, its inherited copy of every connection it did not capture is replaced
/// by a dead descriptor (reads return [`Error::Eof`], writes
/// [`Error::BrokenPipe`]). So, unlike CPython, the reader sees EOF as soon as every
/// process that *holds* the write end has closed it or died, with no closing of
/// unused ends by hand. (An `Arc<Connection>` clone moved into a child does not
/// move the connection: the child gets the dead copy. Move the connection itself.)
///
/// **Threads.** Every method but [`close`](Self::close) takes `&self`; a connection is
/// `Send + Sync`. A message is written under a write lock and read under a read lock,
/// so two threads sending never interleave their messages, and one thread can block
/// in `recv` while another sends on the same duplex end. `close` takes `&mut self`:
/// no other thread can be using the descriptor when it closes.
///
/// **Errors.** The other end closed or died: [`Error::Eof`] on read (or
/// [`Error::MessageCut`] if it died in the middle of a message: never half a
/// message), [`Error::BrokenPipe`] on write, never a `SIGPIPE`.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Error, Pipe, Process};
/// let (parent, child) = Pipe(true)?;
/// let mut p = Process::new(move || {
///     let n: u64 = child.recv().unwrap();
///     child.send(&(n * 2)).unwrap();
/// }); // `child` moved in: the parent's copy is closed by start
/// p.start()?;
/// parent.send(&21u64)?;
/// assert_eq!(parent.recv::<u64>()?, 42);
/// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
/// assert!(matches!(parent.recv::<u64>(), Err(Error::Eof))); // the child is gone
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token (a duplicate of its descriptor): see
/// [`token::export`](crate::token::export).
pub struct Connection {
    open: Option<Open>,
    kind: Kind,
    read: Mutex<ReadState>,
    write: Mutex<()>,
    buffered: AtomicUsize,
    read_broken: AtomicBool,
    broken_reason: Mutex<&'static str>,
    /// How long a wait for a message looks at the descriptor before it blocks
    /// (see "Waiting for a message"): process-local, learned per handle.
    spin: AdaptiveSpin,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.open.as_ref().map(|o| o.fd.as_raw_fd()))
            .field("kind", &self.kind)
            .field("buffered", &self.buffered.load(Ordering::Relaxed))
            .field("read_broken", &self.read_broken.load(Ordering::Relaxed))
            .finish()
    }
}

fn io_err(op: &'static str) -> impl Fn(Errno) -> Error {
    move |e| Error::io(format!("Connection::{op}"), e)
}

/// Calls `f` until it does not fail with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Polls `fds` for readability until one is ready or `deadline` passes.
/// Returns whether any is ready (their `revents` say which).
pub(crate) fn poll_readable(fds: &mut [PollFd<'_>], deadline: Deadline) -> Result<bool> {
    loop {
        let ts = deadline.remaining().map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        match rustix::event::poll(fds, ts.as_ref()) {
            Ok(0) => {
                if deadline.expired() {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => {
                if deadline.expired() {
                    return Ok(false);
                }
            }
            Err(e) => return Err(Error::io("polling connections for readability", e)),
        }
    }
}

/// The header of a message of `len` bytes: 4 bytes below 2 GiB, else 12.
fn header(len: usize) -> ([u8; 12], usize) {
    let mut h = [0u8; 12];
    if len as u64 <= SHORT_MAX {
        h[..4].copy_from_slice(&(len as i32).to_be_bytes());
        (h, 4)
    } else {
        h[..4].copy_from_slice(&(-1i32).to_be_bytes());
        h[4..].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 12)
    }
}

/// Where a message's bytes go.
enum Sink<'a> {
    /// A new vector (`recv_bytes`, `recv`).
    Vec(Vec<u8>),
    /// The caller's buffer, large enough (`recv_bytes_into`).
    Slice(&'a mut [u8]),
}

impl Connection {
    fn from_fd(fd: OwnedFd, kind: Kind) -> Connection {
        let raw = fd.as_raw_fd();
        // Runs in a forked child that did not capture this connection, before any
        // user code: make the child's copy dead, keeping the number taken (closing
        // it would let a later open reuse the number under this stale handle).
        let registration = Registration::new(Some(Box::new(move || {
            let _ = sysfd::deaden_inherited(raw);
        })));
        Connection {
            open: Some(Open { registration, fd }),
            kind,
            read: Mutex::new(ReadState::default()),
            write: Mutex::new(()),
            buffered: AtomicUsize::new(0),
            read_broken: AtomicBool::new(false),
            broken_reason: Mutex::new(""),
            spin: AdaptiveSpin::new(),
        }
    }

    pub(crate) fn socket(fd: OwnedFd) -> Connection {
        Connection::from_fd(fd, Kind::Socket)
    }

    pub(crate) fn pipe_reader(fd: OwnedFd) -> Connection {
        Connection::from_fd(fd, Kind::PipeReader)
    }

    pub(crate) fn pipe_writer(fd: OwnedFd) -> Connection {
        Connection::from_fd(fd, Kind::PipeWriter)
    }

    /// Whether this end can receive: `false` for the write end of a one-way
    /// `Pipe(false)` and after a read error left the stream mid-message (Python's
    /// `readable`).
    ///
    /// ```
    /// use multiproc::Pipe;
    /// let (reader, writer) = Pipe(false)?;
    /// assert!(reader.readable() && !reader.writable());
    /// assert!(writer.writable() && !writer.readable());
    /// let (a, _b) = Pipe(true)?;
    /// assert!(a.readable() && a.writable());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn readable(&self) -> bool {
        self.kind != Kind::PipeWriter && !self.read_broken.load(Ordering::Relaxed)
    }

    /// Whether this end can send: `false` for the read end of a one-way
    /// `Pipe(false)` (Python's `writable`).
    ///
    /// ```
    /// let (reader, writer) = multiproc::Pipe(false)?;
    /// assert!(!reader.writable());
    /// assert!(writer.writable());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn writable(&self) -> bool {
        self.kind != Kind::PipeReader
    }

    /// Whether [`close`](Self::close) was called (Python's `closed`).
    ///
    /// ```
    /// let (mut a, _b) = multiproc::Pipe(true)?;
    /// assert!(!a.closed());
    /// a.close();
    /// assert!(a.closed());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn closed(&self) -> bool {
        self.open.is_none()
    }

    /// Closes this end now (dropping it does the same). Idempotent. The other end
    /// then reads [`Error::Eof`] once no other process holds this end (a process
    /// that captured it), and its sends fail with [`Error::BrokenPipe`].
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (mut a, b) = Pipe(true)?;
    /// a.send(&"last")?;
    /// a.close();
    /// a.close(); // again: nothing happens
    /// assert_eq!(b.recv::<String>()?, "last"); // what was sent before is kept
    /// assert!(matches!(b.recv::<String>(), Err(Error::Eof)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&mut self) {
        // Drops the registration, then the descriptor (field order of `Open`).
        self.open = None;
    }

    /// The descriptor number (Python's `fileno()`), for use with other event loops.
    /// It stays owned by the connection; [`wait`] and [`poll`](Self::poll) also
    /// account for messages already buffered, which polling the number alone does
    /// not see.
    ///
    /// ```
    /// use multiproc::{Error, Pipe};
    /// let (mut a, _b) = Pipe(true)?;
    /// assert!(a.fileno()? >= 0);
    /// a.close();
    /// assert!(matches!(a.fileno(), Err(Error::ConnectionClosed { op: "fileno" })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fileno(&self) -> Result<RawFd> {
        Ok(self.fd("fileno")?.as_raw_fd())
    }

    fn fd(&self, op: &'static str) -> Result<BorrowedFd<'_>> {
        self.open
            .as_ref()
            .map(|o| o.fd.as_fd())
            .ok_or(Error::ConnectionClosed { op })
    }

    /// False in a forked child that did not capture this connection: its copy is
    /// dead (the hook replaced the descriptor), and its locks may have been copied
    /// held by a parent thread, so operations answer without touching them.
    fn disowned(&self) -> bool {
        self.open.as_ref().is_some_and(|o| !o.registration.owned())
    }

    fn check_readable(&self, op: &'static str) -> Result<BorrowedFd<'_>> {
        let fd = self.fd(op)?;
        if self.kind == Kind::PipeWriter {
            return Err(Error::WrongEnd {
                op,
                end: "write-only",
            });
        }
        if self.disowned() {
            return Err(Error::Eof);
        }
        if self.read_broken.load(Ordering::Acquire) {
            let reason = *self.broken_reason.lock().unwrap_or_else(|e| e.into_inner());
            return Err(Error::ConnectionBroken { op, reason });
        }
        Ok(fd)
    }

    fn check_writable(&self, op: &'static str) -> Result<BorrowedFd<'_>> {
        let fd = self.fd(op)?;
        if self.kind == Kind::PipeReader {
            return Err(Error::WrongEnd {
                op,
                end: "read-only",
            });
        }
        if self.disowned() {
            return Err(Error::BrokenPipe);
        }
        Ok(fd)
    }

    fn break_reads(&self, reason: &'static str) {
        *self.broken_reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        self.read_broken.store(true, Ordering::Release);
    }

    // ---- sending ----

    /// Sends `obj`, serialized with postcard, as one message (Python's `send`).
    /// Blocks while the pipe is full (the reader reads concurrently: a message of
    /// any size goes through).
    ///
    /// # Errors
    ///
    /// [`Error::BrokenPipe`] if the other end is closed or its process died;
    /// [`Error::ConnectionClosed`], [`Error::WrongEnd`]; [`Error::Codec`] if the
    /// value cannot be serialized.
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, PartialEq, Debug)]
    /// struct Job { id: u32, name: String }
    /// let (a, b) = multiproc::Pipe(true)?;
    /// a.send(&Job { id: 7, name: "seven".into() })?;
    /// assert_eq!(b.recv::<Job>()?, Job { id: 7, name: "seven".into() });
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn send<T: Serialize + ?Sized>(&self, obj: &T) -> Result<()> {
        let fd = self.check_writable("send")?;
        let bytes = postcard::to_allocvec(obj).map_err(|e| Error::Codec {
            op: "send",
            what: "serialize the value",
            reason: e.to_string(),
        })?;
        self.send_frame(fd, "send", &bytes)
    }

    /// Sends `buf[offset..offset + size]` (to the end with `None`) as one message of
    /// raw bytes (Python's `send_bytes(buf, offset=0, size=None)`).
    ///
    /// # Errors
    ///
    /// [`Error::BufferRange`] if the range does not fit in `buf`; else as
    /// [`send`](Self::send).
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe(true)?;
    /// a.send_bytes(b"hello world", 6, None)?;
    /// a.send_bytes(b"hello world", 0, Some(5))?;
    /// assert_eq!(b.recv_bytes(None)?, b"world");
    /// assert_eq!(b.recv_bytes(None)?, b"hello");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn send_bytes(&self, buf: &[u8], offset: usize, size: Option<usize>) -> Result<()> {
        let fd = self.check_writable("send_bytes")?;
        let range_err = Error::BufferRange {
            op: "send_bytes",
            offset,
            size,
            len: buf.len(),
        };
        if offset > buf.len() {
            return Err(range_err);
        }
        let end = match size {
            None => buf.len(),
            Some(n) => match offset.checked_add(n) {
                Some(end) if end <= buf.len() => end,
                _ => return Err(range_err),
            },
        };
        self.send_frame(fd, "send_bytes", &buf[offset..end])
    }

    /// Writes header and payload under the write lock, in as few system calls as
    /// the kernel takes (header and payload go in one vectored write, no copy).
    fn send_frame(&self, fd: BorrowedFd<'_>, op: &'static str, payload: &[u8]) -> Result<()> {
        let (h, hlen) = header(payload.len());
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        // A small message on a socket goes as one contiguous `send`: copying a few
        // bytes is cheaper than the kernel's iovec handling in `sendmsg`.
        if self.kind == Kind::Socket && payload.len() <= SMALL {
            let mut frame = [0u8; 4 + SMALL];
            frame[..4].copy_from_slice(&h[..4]);
            frame[4..4 + payload.len()].copy_from_slice(payload);
            let frame = &frame[..4 + payload.len()];
            let mut done = 0;
            while done < frame.len() {
                match retry(|| rustix::net::send(fd, &frame[done..], SendFlags::NOSIGNAL)) {
                    Ok(n) => done += n,
                    Err(Errno::PIPE | Errno::CONNRESET) => return Err(Error::BrokenPipe),
                    Err(e) => return Err(Error::io(format!("Connection::{op}"), e)),
                }
            }
            return Ok(());
        }
        let total = hlen + payload.len();
        let mut done = 0usize;
        while done < total {
            let slices: [IoSlice<'_>; 2];
            let iov: &[IoSlice<'_>] = if done < hlen {
                slices = [IoSlice::new(&h[done..hlen]), IoSlice::new(payload)];
                &slices
            } else {
                slices = [IoSlice::new(&payload[done - hlen..]), IoSlice::new(&[])];
                &slices[..1]
            };
            let r = match self.kind {
                Kind::Socket => retry(|| {
                    rustix::net::sendmsg(
                        fd,
                        iov,
                        &mut SendAncillaryBuffer::default(),
                        SendFlags::NOSIGNAL,
                    )
                })
                .map_err(std::io::Error::from),
                _ => loop {
                    match sysfd::writev_no_sigpipe(fd, iov) {
                        Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                        other => break other,
                    }
                },
            };
            match r {
                Ok(n) => done += n,
                Err(e)
                    if e.raw_os_error() == Some(libc::EPIPE)
                        || e.raw_os_error() == Some(libc::ECONNRESET) =>
                {
                    return Err(Error::BrokenPipe);
                }
                Err(e) => return Err(Error::io(format!("Connection::{op}"), e)),
            }
        }
        Ok(())
    }

    // ---- receiving ----

    /// Receives one message and decodes it as a `T` (Python's `recv`). Blocks until
    /// a whole message has arrived.
    ///
    /// # Errors
    ///
    /// [`Error::Eof`] when the other end is closed or dead and nothing is left;
    /// [`Error::MessageCut`] if it died in the middle of a message;
    /// [`Error::Codec`] if the message is not a `T` (it is consumed; the connection
    /// stays usable); [`Error::ConnectionClosed`], [`Error::WrongEnd`],
    /// [`Error::ConnectionBroken`].
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe(true)?;
    /// a.send(&vec![1u16, 2, 3])?;
    /// a.send(&("tuple", 2.5f64))?;
    /// assert_eq!(b.recv::<Vec<u16>>()?, [1, 2, 3]);
    /// assert_eq!(b.recv::<(String, f64)>()?, ("tuple".to_string(), 2.5));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        let fd = self.check_readable("recv")?;
        let mut st = self.read.lock().unwrap_or_else(|e| e.into_inner());
        // A message is one value: bytes left over mean it was not a `T`.
        let decode = |bytes: &[u8]| {
            let codec = |reason: String| Error::Codec {
                op: "recv",
                what: "decode the message as the type asked for",
                reason,
            };
            match postcard::take_from_bytes::<T>(bytes) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => Err(codec(format!(
                    "{} of the message's {} bytes are left over after the value",
                    rest.len(),
                    bytes.len()
                ))),
                Err(e) => Err(codec(e.to_string())),
            }
        };
        let (size, hlen) = self.read_header(fd, &mut st, None)?;
        // Fast path: the whole message is already buffered; decode it in place.
        if let Ok(n) = usize::try_from(size)
            && st.end - st.start >= hlen + n
        {
            let at = st.start + hlen;
            let result = decode(&st.buf[at..at + n]);
            self.consume(&mut st, hlen + n);
            return result;
        }
        let bytes = match self.read_body(fd, &mut st, size, hlen, Sink::Vec(Vec::new()))? {
            Sink::Vec(v) => v,
            Sink::Slice(_) => unreachable!("a Vec sink comes back a Vec"),
        };
        decode(&bytes)
    }

    /// Receives one message of raw bytes (Python's `recv_bytes(maxlength=None)`).
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLong`] if `maxlength` is given and the message is longer:
    /// as in CPython the connection can no longer be read afterwards (its body is
    /// left unread); else as [`recv`](Self::recv).
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe(true)?;
    /// a.send_bytes(&[1, 2, 3], 0, None)?;
    /// a.send_bytes(&[], 0, None)?; // empty messages are messages too
    /// assert_eq!(b.recv_bytes(Some(3))?, [1, 2, 3]);
    /// assert_eq!(b.recv_bytes(None)?, Vec::<u8>::new());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes(&self, maxlength: Option<usize>) -> Result<Vec<u8>> {
        let fd = self.check_readable("recv_bytes")?;
        let mut st = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let (size, hlen) = self.read_header(fd, &mut st, maxlength)?;
        match self.read_body(fd, &mut st, size, hlen, Sink::Vec(Vec::new()))? {
            Sink::Vec(v) => Ok(v),
            Sink::Slice(_) => unreachable!("a Vec sink comes back a Vec"),
        }
    }

    /// Receives one message of raw bytes into `buf` at `offset` and returns its
    /// length (Python's `recv_bytes_into(buf, offset=0)`).
    ///
    /// # Errors
    ///
    /// [`Error::BufferRange`] if `offset > buf.len()` (nothing is read);
    /// [`Error::BufferTooShort`] if the message does not fit after `offset`: it was
    /// consumed and is carried whole in the error; else as [`recv`](Self::recv).
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe(true)?;
    /// a.send_bytes(b"abc", 0, None)?;
    /// let mut buf = [0u8; 8];
    /// assert_eq!(b.recv_bytes_into(&mut buf, 2)?, 3);
    /// assert_eq!(&buf[..5], b"\0\0abc");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8], offset: usize) -> Result<usize> {
        let fd = self.check_readable("recv_bytes_into")?;
        if offset > buf.len() {
            return Err(Error::BufferRange {
                op: "recv_bytes_into",
                offset,
                size: None,
                len: buf.len(),
            });
        }
        let mut st = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let (size, hlen) = self.read_header(fd, &mut st, None)?;
        let room = buf.len() - offset;
        if size > room as u64 {
            let message = match self.read_body(fd, &mut st, size, hlen, Sink::Vec(Vec::new()))? {
                Sink::Vec(v) => v,
                Sink::Slice(_) => unreachable!("a Vec sink comes back a Vec"),
            };
            return Err(Error::BufferTooShort {
                needed: message.len(),
                available: room,
                message,
            });
        }
        let n = size as usize;
        self.read_body(
            fd,
            &mut st,
            size,
            hlen,
            Sink::Slice(&mut buf[offset..offset + n]),
        )?;
        Ok(n)
    }

    /// Whether a message (or the end of file) can be read without blocking, waiting
    /// up to `timeout` for one (`Some(Duration::ZERO)`: just look, as Python's
    /// default `poll()`; `None`: wait forever).
    ///
    /// `true` means a `recv` will not block for long: a message has started to arrive
    /// or the other end is gone (then `recv` returns [`Error::Eof`]). A wait (any
    /// `timeout` but zero) looks in a short adaptive spin before it sleeps in the
    /// kernel, and its `timeout` counts from the end of that spin (see the module's
    /// "Waiting for a message").
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiproc::Pipe(true)?;
    /// assert!(!b.poll(Some(Duration::ZERO))?);
    /// a.send(&1u8)?;
    /// assert!(b.poll(Some(Duration::from_secs(10)))?);
    /// b.recv::<u8>()?;
    /// drop(a);
    /// assert!(b.poll(None)?); // EOF is readable
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        let fd = match self.check_readable("poll") {
            Err(Error::Eof) => return Ok(true), // a disowned copy: EOF is readable
            other => other?,
        };
        if self.buffered.load(Ordering::Acquire) > 0 {
            return Ok(true);
        }
        if timeout != Some(Duration::ZERO) && self.spin.spin(|| readable_now(fd), 2) {
            return Ok(true);
        }
        // The timeout counts from here, after the spin (bounded: see "Waiting for
        // a message").
        let deadline = time::Deadline::after(timeout)?;
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        poll_readable(&mut fds, deadline)
    }

    /// Bytes buffered and not consumed (for [`wait`]).
    pub(crate) fn has_buffered(&self) -> bool {
        self.buffered.load(Ordering::Acquire) > 0
    }

    pub(crate) fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        self.fd("wait")
    }

    fn consume(&self, st: &mut ReadState, n: usize) {
        st.start += n;
        if st.start == st.end {
            st.start = 0;
            st.end = 0;
        }
        self.buffered.store(st.end - st.start, Ordering::Release);
    }

    /// One `read` into the buffer's free space (moving what is buffered to the
    /// front first if the space is short). Returns the bytes read: 0 at end of file.
    fn fill(&self, fd: BorrowedFd<'_>, st: &mut ReadState) -> Result<usize> {
        if st.buf.is_empty() {
            st.buf = vec![0u8; READ_BUF];
        }
        if st.end == st.buf.len() {
            st.buf.copy_within(st.start..st.end, 0);
            st.end -= st.start;
            st.start = 0;
        }
        debug_assert!(st.end < st.buf.len(), "fill is called with room left");
        let end = st.end;
        // Before a read that may block: the spin of "Waiting for a message" (its
        // result does not matter: the read returns at once or blocks as needed).
        self.spin.spin(|| readable_now(fd), 2);
        let n = retry(|| rustix::io::read(fd, &mut st.buf[end..])).map_err(io_err("recv"))?;
        st.end += n;
        self.buffered.store(st.end - st.start, Ordering::Release);
        Ok(n)
    }

    /// Makes sure `n` (at most [`READ_BUF`]) bytes are buffered. `Ok(false)` at end
    /// of file before that.
    fn fill_to(&self, fd: BorrowedFd<'_>, st: &mut ReadState, n: usize) -> Result<bool> {
        while st.end - st.start < n {
            if self.fill(fd, st)? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads a header (not consuming it) and returns (message length, header length).
    fn read_header(
        &self,
        fd: BorrowedFd<'_>,
        st: &mut ReadState,
        maxlength: Option<usize>,
    ) -> Result<(u64, usize)> {
        if !self.fill_to(fd, st, 4)? {
            let got = st.end - st.start;
            self.consume(st, got);
            return Err(if got == 0 {
                Error::Eof
            } else {
                Error::MessageCut {
                    received: got as u64,
                    expected: 4,
                }
            });
        }
        let head = i32::from_be_bytes(st.buf[st.start..st.start + 4].try_into().expect("4 bytes"));
        let (size, hlen) = match head {
            n if n >= 0 => (n as u64, 4),
            -1 => {
                if !self.fill_to(fd, st, 12)? {
                    let got = st.end - st.start;
                    self.consume(st, got);
                    return Err(Error::MessageCut {
                        received: got as u64,
                        expected: 12,
                    });
                }
                let at = st.start + 4;
                let size = u64::from_be_bytes(st.buf[at..at + 8].try_into().expect("8 bytes"));
                (size, 12)
            }
            header => {
                self.break_reads("bad message header");
                return Err(Error::BadFrame { header });
            }
        };
        if let Some(max) = maxlength
            && size > max as u64
        {
            // As CPython: the header is consumed, the body left in the stream.
            self.consume(st, hlen);
            self.break_reads("bad message length");
            return Err(Error::MessageTooLong {
                size,
                maxlength: max,
            });
        }
        Ok((size, hlen))
    }

    /// Reads the body of the message whose header is buffered, into `sink` (a
    /// `Slice` sink is exactly `size` long). Consumes the message only when whole.
    fn read_body<'a>(
        &self,
        fd: BorrowedFd<'_>,
        st: &mut ReadState,
        size: u64,
        hlen: usize,
        mut sink: Sink<'a>,
    ) -> Result<Sink<'a>> {
        let size = usize::try_from(size).map_err(|_| Error::SizeOverflow {
            what: "message",
            requested: size as u128,
            max: usize::MAX as u128,
        })?;
        let cut = |got: usize| Error::MessageCut {
            received: (hlen + got) as u64,
            expected: (hlen + size) as u64,
        };
        // The header stays buffered until the message is whole, then goes: drop it
        // from the count now, and remember `got` bytes of body delivered.
        self.consume(st, hlen);
        let mut got = 0usize;
        while got < size {
            let avail = st.end - st.start;
            if avail > 0 {
                let take = avail.min(size - got);
                let from = &st.buf[st.start..st.start + take];
                match &mut sink {
                    Sink::Vec(v) => {
                        reserve(v, take, size)?;
                        v.extend_from_slice(from);
                    }
                    Sink::Slice(s) => s[got..got + take].copy_from_slice(from),
                }
                got += take;
                self.consume(st, take);
                continue;
            }
            let left = size - got;
            if left >= READ_BUF {
                // Large remainder: read straight into the destination, no bounce.
                let n = match &mut sink {
                    Sink::Vec(v) => {
                        // Grow at most RESERVE_AHEAD ahead of the data, and read into
                        // a slice that ends at the message's end (never past it).
                        let chunk = left.min(RESERVE_AHEAD);
                        reserve(v, chunk, size)?;
                        let at = v.len();
                        v.resize(at + chunk, 0);
                        let r = retry(|| rustix::io::read(fd, &mut v[at..]));
                        let n = *r.as_ref().unwrap_or(&0);
                        v.truncate(at + n);
                        r.map_err(io_err("recv"))?
                    }
                    Sink::Slice(s) => {
                        retry(|| rustix::io::read(fd, &mut s[got..size])).map_err(io_err("recv"))?
                    }
                };
                if n == 0 {
                    return Err(cut(got));
                }
                got += n;
            } else if self.fill(fd, st)? == 0 {
                return Err(cut(got));
            }
        }
        Ok(sink)
    }
}

/// Reserves room for `more` more bytes in `v`, the buffer of a `size`-byte
/// message: an allocation failure is an error, not an abort.
fn reserve(v: &mut Vec<u8>, more: usize, size: usize) -> Result<()> {
    v.try_reserve(more).map_err(|_| Error::SizeOverflow {
        what: "message (memory for it could not be allocated)",
        requested: size as u128,
        max: v.capacity() as u128,
    })
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// A Connection travels as a token ([`crate::token`]): its kind and its
/// descriptor, duplicated (as CPython's `DupFd` when it pickles one for a spawned
/// child). The sending process keeps its own end open: the peer sees EOF once
/// every process holding the end (the importer included) closed it or died.
/// Refused: a closed connection ([`Error::ConnectionClosed`]), and one holding
/// received bytes not read yet ([`Error::NotTransferable`]: the importer would
/// miss them).
impl serde::Serialize for Connection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::Connection, || {
            let open = self
                .open
                .as_ref()
                .ok_or(Error::ConnectionClosed { op: "export" })?;
            if self.has_buffered() {
                return Err(Error::NotTransferable {
                    what: "a Connection with received bytes not read yet",
                    reason: "recv the buffered messages first (the importer would miss them)",
                });
            }
            let id = crate::sys::transfer::file_id(&open.fd)
                .map_err(|e| Error::io("fstat on a Connection", e))?;
            Ok((
                self.kind,
                crate::sys::transfer::add_fd_as(id, self.kind as u32 + 1, open.fd.as_fd())?,
            ))
        })
    }
}

impl<'de> serde::Deserialize<'de> for Connection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::Connection,
            |(kind, fd): (Kind, u32)| {
                let fd = crate::sys::transfer::take_fd(fd, "Connection")?;
                let st = rustix::fs::fstat(&fd)
                    .map_err(|e| Error::io("fstat on a received Connection", e))?;
                let ty = rustix::fs::FileType::from_raw_mode(st.st_mode);
                let want = match kind {
                    Kind::Socket => rustix::fs::FileType::Socket,
                    Kind::PipeReader | Kind::PipeWriter => rustix::fs::FileType::Fifo,
                };
                if ty != want {
                    return Err(Error::BadToken {
                        what: "Connection",
                        reason: format!("a {kind:?} end whose descriptor is a {ty:?}"),
                    });
                }
                Ok(Connection::from_fd(fd, kind))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pipe;
    use rustix::pipe::{PipeFlags, pipe_with};

    fn raw_pipe() -> (Connection, OwnedFd) {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        (Connection::pipe_reader(r), w)
    }

    #[test]
    fn the_spin_looks_for_bytes_and_for_end_of_file() {
        // The spin before a blocking read ends when a read would return at once:
        // bytes there, or end of file (the writer gone), never on an empty pipe.
        let (r, w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        assert!(!readable_now(r.as_fd()), "an empty pipe is not readable");
        rustix::io::write(&w, b"x").unwrap();
        assert!(readable_now(r.as_fd()), "a byte is there");
        let mut one = [0u8; 1];
        rustix::io::read(&r, &mut one).unwrap();
        assert!(!readable_now(r.as_fd()), "empty again");
        drop(w);
        assert!(readable_now(r.as_fd()), "end of file ends the spin");
    }

    #[test]
    fn messages_sent_after_the_spin_gave_up_still_arrive() {
        // The receiver's spin finds nothing (nobody writes yet), it blocks in the
        // kernel (`poll` with a timeout, then a `recv`), and each message sent
        // once it sleeps still arrives whole.
        use crate::sync::spin::test_procs::{join, spawn, until_asleep};
        let (a, b) = Pipe(true).unwrap();
        let child = spawn(move || {
            assert!(
                b.poll(Some(Duration::from_secs(30))).unwrap(),
                "poll timed out"
            );
            let first: u32 = b.recv().unwrap();
            b.send(&0u8).unwrap();
            let second: u32 = b.recv().unwrap();
            std::process::exit((first + second) as i32);
        });
        let pid = child.pid().expect("started");
        until_asleep(pid);
        a.send(&7u32).unwrap();
        assert_eq!(a.recv::<u8>().unwrap(), 0);
        until_asleep(pid);
        a.send(&5u32).unwrap();
        assert_eq!(join(child), Some(12));
    }

    #[test]
    fn the_wire_format_is_cpythons() {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let writer = Connection::pipe_writer(w);
        writer.send_bytes(b"abc", 0, None).unwrap();
        writer.send(&300u16).unwrap(); // postcard: varint ac 02
        let mut buf = [0u8; 16];
        let n = rustix::io::read(&r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"\0\0\0\x03abc\0\0\0\x02\xac\x02");
        assert_eq!(header(5).1, 4);
        assert_eq!(&header(0x7fff_ffff).0[..4], &[0x7f, 0xff, 0xff, 0xff]);
        let (h, len) = header(0x8000_0000);
        assert_eq!(len, 12);
        assert_eq!(&h, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]);
    }

    #[test]
    fn the_long_header_is_read() {
        let (reader, w) = raw_pipe();
        let mut frame = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 5];
        frame.extend_from_slice(b"hello");
        rustix::io::write(&w, &frame).unwrap();
        assert_eq!(reader.recv_bytes(None).unwrap(), b"hello");
    }

    #[test]
    fn a_bad_header_breaks_reads() {
        let (reader, w) = raw_pipe();
        rustix::io::write(&w, &(-7i32).to_be_bytes()).unwrap();
        assert!(matches!(
            reader.recv_bytes(None),
            Err(Error::BadFrame { header: -7 })
        ));
        assert!(matches!(
            reader.recv::<u8>(),
            Err(Error::ConnectionBroken {
                reason: "bad message header",
                ..
            })
        ));
        assert!(!reader.readable());
    }

    #[test]
    fn a_cut_header_is_a_cut() {
        let (reader, w) = raw_pipe();
        rustix::io::write(&w, &[0, 0]).unwrap();
        drop(w);
        assert!(matches!(
            reader.recv_bytes(None),
            Err(Error::MessageCut {
                received: 2,
                expected: 4
            })
        ));
        assert!(matches!(reader.recv_bytes(None), Err(Error::Eof)));
    }

    #[test]
    fn a_huge_announced_length_reserves_little_and_ends_in_a_cut() {
        // 2^60 bytes announced, 3 delivered: no giant allocation, a clean cut.
        let (reader, w) = raw_pipe();
        let mut frame = vec![0xff, 0xff, 0xff, 0xff];
        frame.extend_from_slice(&(1u64 << 60).to_be_bytes());
        frame.extend_from_slice(b"abc");
        rustix::io::write(&w, &frame).unwrap();
        drop(w);
        match reader.recv_bytes(None) {
            Err(Error::MessageCut { received, expected }) => {
                assert_eq!(received, 15);
                assert_eq!(expected, 12 + (1u64 << 60));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sends_to_a_gone_peer_fail_without_sigpipe() {
        // A SIGPIPE would end the child with -13.
        sysfd::with_default_sigpipe(|| {
            for duplex in [true, false] {
                // For Pipe(false) the first end reads and the second writes.
                let (peer, sender) = Pipe(duplex).unwrap();
                drop(peer);
                assert!(matches!(sender.send(&1u32), Err(Error::BrokenPipe)));
                assert!(matches!(
                    sender.send_bytes(&vec![0u8; 1 << 20], 0, None),
                    Err(Error::BrokenPipe)
                ));
            }
        });
    }
}
