//! `Queue`: a multi-producer, multi-consumer message queue between processes
//! (Python's `multiprocessing.Queue`), in shared memory, with crossbeam-channel's
//! disconnection and no process left waiting because another died.
//!
//! ## Roles
//! A [`Queue`] handle is both ends, as in Python: it can put and get, and it counts
//! as a producer *and* a consumer while it lives. [`Queue::sender`] and
//! [`Queue::receiver`] make single-role handles ([`Sender`], [`Receiver`]), as
//! crossbeam-channel's; give those to processes that only produce or only consume,
//! so that "every producer is gone" can happen:
//! - `get` on an empty queue returns [`Error::Disconnected`] once no process holds
//!   a producer role (a `Queue` or a `Sender`) any more: every such handle was
//!   dropped or closed, or its process died;
//! - `put` returns [`Error::Disconnected`] once no process holds a consumer role:
//!   at once when every consumer handle was dropped or closed; a consumer that
//!   *died* is noticed when the put would have to wait (a put into free room
//!   succeeds, as `/proc` is read only then).
//!
//! Roles are counted per process in shared memory (`msg::roles`); a
//! process that died counts as gone; a child started with
//! [`Process`](crate::Process) holds the roles of the handles its closure
//! captured, and none of the handles it merely inherited.
//!
//! ## Messages
//! Typed messages go through serde in postcard's compact format (`put(&msg)`,
//! `get()`); raw bytes go as they are (`put_bytes`, `get_bytes`), copied once each
//! way; plain-old-data values (`T: bytemuck::Pod`) go as their bytes, with no
//! serde (`put_pod`, `get_pod`; for a byte array those bytes are also its postcard
//! encoding, so either pair reads the other's). A message larger than the queue's byte bound is carried whole, in pieces
//! (a `get` that has begun such a message finishes it, past its timeout, while its
//! producer lives).
//!
//! ## Guarantees under SIGKILL
//! - a producer killed inside `put` leaves no part of its message visible (a
//!   message in pieces is abandoned with an `ABORT` the next producer, or the
//!   waiting consumer, publishes), and the queue keeps working;
//! - a consumer killed inside `get` loses at most the message it was taking (it
//!   is lost only if the kill came after the message left the ring);
//! - a process killed holding either internal lock passes it on (`OwnerDied`),
//!   and the next holder repairs the side it locks (see `msg::ring`).
//!
//! Order: messages of one producer handle are received in the order they were put
//! (one producer lock orders every put); messages of different producers interleave.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::holder::{Holder, Roles};
use super::ring::{Ring, Role, Wait};
use super::roles::Who;
use crate::error::{Error, Result};
use crate::sync::biased::Hold;
use crate::sys::time::Deadline;

/// How long a `*_nowait` call waits for a lock whose holder is busy copying (not
/// sleeping) before it answers `Full` / `Empty`.
const NOWAIT_PATIENCE: Duration = Duration::from_millis(10);

thread_local! {
    /// Encoding and decoding buffers, reused so that small messages allocate nothing.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer (a fresh one if it is in use).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = f(&mut buf);
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new(); // do not keep a huge message's buffer
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

pub(crate) fn encode<T: Serialize>(msg: &T, buf: &mut Vec<u8>) -> Result<()> {
    let v = postcard::to_extend(msg, std::mem::take(buf)).map_err(|e| Error::Codec {
        op: "put",
        what: "serialize the value",
        reason: e.to_string(),
    })?;
    *buf = v;
    Ok(())
}

/// Runs `f` with the postcard encoding of `msg`: on the stack when it is small (no
/// allocation, no thread-local), else in this thread's scratch buffer.
pub(crate) fn with_encoded<T: Serialize, R>(
    msg: &T,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    let mut stack = [0u8; 128];
    match postcard::to_slice(msg, &mut stack) {
        Ok(bytes) => f(bytes),
        Err(postcard::Error::SerializeBufferFull) => with_scratch(|buf| {
            encode(msg, buf)?;
            f(buf)
        }),
        Err(e) => Err(Error::Codec {
            op: "put",
            what: "serialize the value",
            reason: e.to_string(),
        }),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let codec = |reason: String| Error::Codec {
        op: "get",
        what: "decode the message as the type asked for",
        reason,
    };
    let (msg, rest) = postcard::take_from_bytes(bytes).map_err(|e| codec(e.to_string()))?;
    if !rest.is_empty() {
        return Err(codec(format!(
            "{} bytes left over after the value",
            rest.len()
        )));
    }
    Ok(msg)
}

/// A `T` copied from a message's bytes (`get_pod`): exactly `size_of::<T>()` of
/// them, read unaligned (a message's bytes sit at any offset).
fn pod_from<T: bytemuck::Pod>(bytes: &[u8]) -> Result<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return Err(Error::Codec {
            op: "get",
            what: "read the message as the plain-old-data type asked for",
            reason: format!(
                "the message has {} bytes, the type {} (put it with put_pod, or get it with get)",
                bytes.len(),
                std::mem::size_of::<T>()
            ),
        });
    }
    Ok(bytemuck::pod_read_unaligned(bytes))
}

/// Takes the producer lock for a put; false at the deadline, or, when it may not
/// block, when the holder sleeps on a full queue (or stays busy past
/// [`NOWAIT_PATIENCE`]).
#[inline]
fn lock_producer(ring: &Ring, wait: &Wait) -> Option<Hold> {
    if let Some(hold) = ring.try_lock_producer() {
        return Some(hold);
    }
    lock_producer_slow(ring, wait)
}

#[inline(never)]
fn lock_producer_slow(ring: &Ring, wait: &Wait) -> Option<Hold> {
    if wait.block {
        ring.yield_if_crowded();
        return ring.lock_producer(wait.deadline());
    }
    let give_up = Instant::now() + NOWAIT_PATIENCE;
    loop {
        if let Some(hold) = ring.try_lock_producer() {
            return Some(hold);
        }
        if ring.producer_sleeping() || Instant::now() >= give_up {
            return None;
        }
        std::thread::yield_now();
    }
}

fn lock_consumer(ring: &Ring, wait: &Wait) -> Option<Hold> {
    if let Some(hold) = ring.try_lock_consumer() {
        return Some(hold);
    }
    if wait.block {
        ring.yield_if_crowded();
        return ring.lock_consumer(wait.deadline());
    }
    let give_up = Instant::now() + NOWAIT_PATIENCE;
    loop {
        if let Some(hold) = ring.try_lock_consumer() {
            return Some(hold);
        }
        if ring.consumer_sleeping() || Instant::now() >= give_up {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Puts each of `msgs` (already encoded by `each`) under one hold of the producer
/// lock.
pub(crate) fn put_with(
    h: &Holder,
    block: bool,
    timeout: Option<Duration>,
    what: &'static str,
    each: impl FnMut(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
) -> Result<()> {
    put_general(h, block, timeout, what, true, each)
}

/// [`put_with`]; `first_try`: try the lock once before the slow way (false when
/// the caller just did).
fn put_general(
    h: &Holder,
    block: bool,
    timeout: Option<Duration>,
    what: &'static str,
    first_try: bool,
    mut each: impl FnMut(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
) -> Result<()> {
    if h.is_closed() {
        return Err(Error::Closed(what));
    }
    let wait = Wait::new(block, timeout, what)?;
    let ring = &*h.ring;
    // Every consumer dropped or closed its handle: say so at once (a few loads of
    // a line nobody writes meanwhile). Dead consumers are noticed when the put
    // would wait (`/proc` is read only then).
    if !ring.table(Role::Consumer).any() {
        return Err(Error::Disconnected(
            "put: every consumer of the queue is gone (dropped, closed or dead)",
        ));
    }
    let hold = if first_try {
        lock_producer(ring, &wait)
    } else {
        lock_producer_slow(ring, &wait)
    };
    let Some(hold) = hold else {
        return Err(if block { wait.timed_out() } else { Error::Full });
    };
    let r = each(&mut |bytes| ring.put_locked(bytes, &wait));
    ring.unlock_producer(hold);
    r
}

/// Puts one encoded message: the path of every single put. Not generic, so that it
/// is compiled once, in this crate, with the ring's steps inlined into it (a
/// generic caller would be compiled in the user's crate, calling each step out of
/// line).
pub(crate) fn put_one(
    h: &Holder,
    block: bool,
    timeout: Option<Duration>,
    what: &'static str,
    bytes: &[u8],
) -> Result<()> {
    // The common case first: a small message, room at once, the lock ours or
    // free. Its `Ok` is built here, not moved out of the general path's `Result`:
    // moving that (96 bytes) copies it with 16-byte loads over the 8-byte store of
    // its tag, a store-to-load forwarding failure that waits until every earlier
    // store has left the store buffer, the frame's included (a fifth of a put by
    // `perf annotate`).
    match put_now(h, timeout, bytes) {
        Fast::Done(_) => Ok(()),
        // Contended: the slow way, without a second try of the lock's line.
        Fast::Busy => put_general(h, block, timeout, what, false, |put| put(bytes)),
        Fast::Not => put_one_general(h, block, timeout, what, bytes),
    }
}

/// What a fast path did: its work (`Done`, with a length for a get), nothing
/// because the side's lock is held by another thread (`Busy`: the slow path goes
/// straight to waiting for it, without a second try of a contended line), or
/// nothing for another reason (`Not`: the general path says why, or waits).
enum Fast {
    Done(usize),
    Busy,
    Not,
}

/// A put's fast path: puts `bytes` whole if the queue is open, has a consumer, the
/// timeout is one the clock can hold, the producer lock is ours (biased) or free,
/// and there is room now. Otherwise it leaves everything as it was (the lock
/// released) for the slow path, which says why or waits.
///
/// Kept apart from the general path, whose `Result`s and waits would otherwise
/// spill this one's registers to the stack on every put.
#[inline(always)]
fn put_now(h: &Holder, timeout: Option<Duration>, bytes: &[u8]) -> Fast {
    let ring = &*h.ring;
    if h.is_closed() || !Deadline::surely_fits(timeout) || !ring.has_consumers() {
        return Fast::Not;
    }
    let Some(hold) = ring.lock_producer_free() else {
        return Fast::Busy;
    };
    let done = ring.put_now(bytes);
    ring.unlock_producer(hold);
    if done {
        Fast::Done(bytes.len())
    } else {
        Fast::Not
    }
}

/// [`put_one`] when its fast path did not put the message.
#[inline(never)]
fn put_one_general(
    h: &Holder,
    block: bool,
    timeout: Option<Duration>,
    what: &'static str,
    bytes: &[u8],
) -> Result<()> {
    let ring = &*h.ring;
    if h.is_closed() || Deadline::check(timeout).is_err() || !ring.table(Role::Consumer).any() {
        return put_with(h, block, timeout, what, |put| put(bytes)); // says why
    }
    let Some(hold) = ring.try_lock_producer() else {
        // Contended: the slow way, without a second try of the lock's line.
        return put_general(h, block, timeout, what, false, |put| put(bytes));
    };
    // The fast path found no room at once (or the message goes in pieces): the
    // general way, which waits for room, under this hold.
    let r = Wait::new(block, timeout, what).and_then(|wait| ring.put_locked(bytes, &wait));
    ring.unlock_producer(hold);
    r
}

/// Gets one message into `out`: the path of every single get, not generic for the
/// reason given at [`put_one`].
pub(crate) fn get_one(
    h: &Holder,
    block: bool,
    timeout: Option<Duration>,
    what: &'static str,
    out: &mut Vec<u8>,
) -> Result<()> {
    get_with(h, block, timeout, 1, what, out, |_| Ok(())).map(|_| ())
}

/// Messages at most this long are taken into a buffer on the stack by a typed get
/// (no thread-local scratch buffer, no allocation).
const SMALL: usize = 128;

/// A get's fast path: takes the next message into `buf` if the handle is open,
/// the timeout is one the clock can hold, the consumer lock is ours (biased) or
/// free, and a whole message of at most [`SMALL`] bytes is there now (`Done`
/// with its length). Otherwise it leaves everything as it was (the lock
/// released) for [`get_one_general`], which takes, waits for or reports it.
///
/// Not generic and out of line, so that it is compiled once, here, and returns
/// in registers: a typed get decodes from `buf` itself (no closure, no
/// `Result` of the general path moved on the way).
#[inline(never)]
fn get_small(h: &Holder, timeout: Option<Duration>, buf: &mut [u8; SMALL]) -> Fast {
    if h.is_closed() || !Deadline::surely_fits(timeout) {
        return Fast::Not;
    }
    let ring = &*h.ring;
    let Some(hold) = ring.lock_consumer_free() else {
        return Fast::Busy;
    };
    let tasks = h.joinable.then(|| ring.table(Role::Tasks));
    let got = ring.take_small(buf, &mut || {
        if let Some(t) = tasks {
            t.add(Who::Me, 1);
        }
    });
    ring.unlock_consumer(hold);
    match got {
        Some(n) => Fast::Done(n),
        None => Fast::Not,
    }
}

/// Gets one message and hands its bytes to `take` (a typed get decodes there),
/// after [`get_small`] took nothing (`fast`: what it found): under the consumer
/// lock if it is free now, else through [`get_with`], which waits for it. Not
/// generic, for the reason given at [`put_one`].
#[inline(never)]
fn get_one_general(
    h: &Holder,
    block: bool,
    timeout: Option<Duration>,
    what: &'static str,
    fast: Fast,
    take: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let ring = &*h.ring;
    // Busy: the lock's line is contended, not tried a second time. Closed: said
    // by `get_with`.
    let free = match fast {
        Fast::Busy => None,
        _ if h.is_closed() => None,
        _ => ring.lock_consumer_free(),
    };
    if let Some(hold) = free {
        // No whole small message at once (the fast path looked): the general
        // way, which waits for one (and refuses a timeout the clock cannot
        // hold before taking anything), under this hold.
        let r = Wait::new(block, timeout, what)
            .and_then(|wait| with_scratch(|buf| get_held(h, &wait, 1, buf, |b| take(b))));
        ring.unlock_consumer(hold);
        return r.map(|_| ());
    }
    with_scratch(|buf| get_with(h, block, timeout, 1, what, buf, |b| take(b))).map(|_| ())
}

/// A typed get: [`get_small`], whose message `decode` reads from the stack, else
/// [`get_one_general`]. Inline: each message type's `decode` is its own.
#[inline(always)]
pub(crate) fn get_decoded<T>(
    h: &Holder,
    block: bool,
    timeout: Option<Duration>,
    what: &'static str,
    decode: impl Fn(&[u8]) -> Result<T>,
) -> Result<T> {
    let mut small = [0u8; SMALL];
    let fast = match get_small(h, timeout, &mut small) {
        Fast::Done(n) => return decode(&small[..n]),
        other => other,
    };
    let mut msg = None;
    get_one_general(h, block, timeout, what, fast, &mut |b| {
        msg = Some(decode(b)?);
        Ok(())
    })?;
    // Not `ok_or(Error::Empty)`: that builds an `Error` on every get and drops
    // it (an out-of-line call) when a message came, as it nearly always does.
    match msg {
        Some(m) => Ok(m),
        None => Err(Error::Empty),
    }
}

/// Gets up to `max` messages (at least one, waiting for it when `block`), handing
/// each to `each`, under one hold of the consumer lock; returns how many.
pub(crate) fn get_with(
    h: &Holder,
    block: bool,
    timeout: Option<Duration>,
    max: usize,
    what: &'static str,
    out: &mut Vec<u8>,
    each: impl FnMut(&mut Vec<u8>) -> Result<()>,
) -> Result<usize> {
    if h.is_closed() {
        return Err(Error::Closed(what));
    }
    let wait = Wait::new(block, timeout, what)?;
    let ring = &*h.ring;
    let Some(hold) = lock_consumer(ring, &wait) else {
        return Err(if block {
            wait.timed_out()
        } else {
            Error::Empty
        });
    };
    let r = get_held(h, &wait, max, out, each);
    ring.unlock_consumer(hold);
    r
}

/// [`get_with`]'s work once the consumer lock is held (the caller releases it).
fn get_held(
    h: &Holder,
    wait: &Wait,
    max: usize,
    out: &mut Vec<u8>,
    mut each: impl FnMut(&mut Vec<u8>) -> Result<()>,
) -> Result<usize> {
    let ring = &*h.ring;
    let later = Wait::new(false, None, wait.what)?;
    // A JoinableQueue counts the task as the message leaves the ring (see
    // `joinable_queue`).
    let tasks = h.joinable.then(|| ring.table(Role::Tasks));
    let mut on_take = || {
        if let Some(t) = tasks {
            t.add(Who::Me, 1);
        }
    };
    let mut n = 0;
    loop {
        if n == max {
            break Ok(n);
        }
        let first = n == 0;
        match ring.get_locked(out, &mut on_take, if first { wait } else { &later }) {
            Ok(()) => {
                n += 1;
                each(out)?;
            }
            Err(Error::Empty | Error::Disconnected(_)) if !first => break Ok(n),
            Err(e) => break Err(e),
        }
    }
}

macro_rules! producer_api {
    ($ty:ident, $setup:literal) => {
        impl<T: Serialize> $ty<T> {
            /// Puts `msg`, waiting at most `timeout` (forever with `None`) for room
            /// (Python's `put(obj, block=True, timeout)`). A message larger than the
            /// queue's byte bound is carried in pieces.
            ///
            /// [`Error::Timeout`] when no room came in time, [`Error::Disconnected`]
            /// when it would wait and every consumer is gone.
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = $setup]
            /// h.put(&7, None)?;
            /// h.put(&8, Some(Duration::from_secs(1)))?;
            /// assert_eq!(q.get(None)?, 7);
            /// assert_eq!(q.get(None)?, 8);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put(&self, msg: &T, timeout: Option<Duration>) -> Result<()> {
                with_encoded(msg, |bytes| {
                    put_one(&self.holder, true, timeout, "Queue.put", bytes)
                })
            }

            /// Puts `msg` if there is room now, else [`Error::Full`] (Python's
            /// `put_nowait`).
            ///
            /// ```
            #[doc = $setup]
            /// h.put_nowait(&1)?;
            /// assert_eq!(q.get_nowait()?, 1);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_nowait(&self, msg: &T) -> Result<()> {
                with_encoded(msg, |bytes| {
                    put_one(&self.holder, false, None, "Queue.put_nowait", bytes)
                })
            }

            /// Puts every message of `msgs` in order, taking the producer lock once
            /// (faster than one `put` each), waiting at most `timeout` in all. On an
            /// error the messages before the failing one were put.
            ///
            /// ```
            #[doc = $setup]
            /// h.put_many(&[1, 2, 3], None)?;
            /// assert_eq!(q.get_many(10, None)?, vec![1, 2, 3]);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_many(&self, msgs: &[T], timeout: Option<Duration>) -> Result<()> {
                with_scratch(|buf| {
                    put_with(&self.holder, true, timeout, "Queue.put_many", |put| {
                        for m in msgs {
                            buf.clear();
                            encode(m, buf)?;
                            put(buf)?;
                        }
                        Ok(())
                    })
                })
            }

            /// Puts `bytes` as one raw message, copied once, straight into shared
            /// memory; read it back with `get_bytes` (or `get`, if the bytes are a
            /// postcard encoding of a `T`).
            ///
            /// ```
            #[doc = $setup]
            /// h.put_bytes(b"raw", None)?;
            /// assert_eq!(q.get_bytes(None)?, b"raw");
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_bytes(&self, bytes: &[u8], timeout: Option<Duration>) -> Result<()> {
                put_one(&self.holder, true, timeout, "Queue.put_bytes", bytes)
            }

            /// `put_bytes` if there is room now, else [`Error::Full`].
            ///
            /// ```
            #[doc = $setup]
            /// h.put_bytes_nowait(&[1, 2])?;
            /// assert_eq!(q.get_bytes_nowait()?, [1, 2]);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_bytes_nowait(&self, bytes: &[u8]) -> Result<()> {
                put_one(&self.holder, false, None, "Queue.put_bytes_nowait", bytes)
            }
        }
    };
}

macro_rules! consumer_api {
    ($ty:ident, $setup:literal) => {
        impl<T: DeserializeOwned> $ty<T> {
            /// Takes the oldest message, waiting at most `timeout` (forever with
            /// `None`) for one (Python's `get(block=True, timeout)`).
            ///
            /// [`Error::Timeout`] when none came in time, [`Error::Disconnected`]
            /// when the queue is empty and every producer is gone.
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = $setup]
            /// q.put(&5, None)?;
            /// assert_eq!(h.get(Some(Duration::from_secs(1)))?, 5);
            /// assert!(matches!(h.get(Some(Duration::from_millis(1))), Err(multiproc::Error::Timeout { .. })));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get(&self, timeout: Option<Duration>) -> Result<T> {
                self.get_one(true, timeout, "Queue.get")
            }

            /// Takes a message if one is there now, else [`Error::Empty`] (Python's
            /// `get_nowait`; like CPython's, it also answers `Empty` while another
            /// consumer is taking a message).
            ///
            /// ```
            #[doc = $setup]
            /// assert!(matches!(h.get_nowait(), Err(multiproc::Error::Empty)));
            /// q.put(&1, None)?;
            /// assert_eq!(h.get_nowait()?, 1);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_nowait(&self) -> Result<T> {
                self.get_one(false, None, "Queue.get_nowait")
            }

            fn get_one(
                &self,
                block: bool,
                timeout: Option<Duration>,
                what: &'static str,
            ) -> Result<T> {
                get_decoded(&self.holder, block, timeout, what, decode)
            }

            /// Takes up to `max` messages: waits at most `timeout` for the first,
            /// then takes those already there, taking the consumer lock once.
            ///
            /// ```
            #[doc = $setup]
            /// q.put_many(&[1, 2, 3], None)?;
            /// assert_eq!(h.get_many(2, None)?, vec![1, 2]);
            /// assert_eq!(h.get_many(2, None)?, vec![3]);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_many(&self, max: usize, timeout: Option<Duration>) -> Result<Vec<T>> {
                let mut msgs = Vec::new();
                if max == 0 {
                    return Ok(msgs);
                }
                with_scratch(|buf| {
                    get_with(
                        &self.holder,
                        true,
                        timeout,
                        max,
                        "Queue.get_many",
                        buf,
                        |b| {
                            msgs.push(decode(b)?);
                            Ok(())
                        },
                    )
                })?;
                Ok(msgs)
            }

            /// Takes the oldest message as raw bytes (copied once, out of shared
            /// memory), waiting at most `timeout`.
            ///
            /// ```
            #[doc = $setup]
            /// q.put_bytes(&[9; 10_000], None)?;
            /// assert_eq!(h.get_bytes(None)?, vec![9; 10_000]);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_bytes(&self, timeout: Option<Duration>) -> Result<Vec<u8>> {
                let mut out = Vec::new();
                self.get_bytes_into(&mut out, timeout)?;
                Ok(out)
            }

            /// `get_bytes` if a message is there now, else [`Error::Empty`].
            ///
            /// ```
            #[doc = $setup]
            /// q.put_bytes(b"x", None)?;
            /// assert_eq!(h.get_bytes_nowait()?, b"x");
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_bytes_nowait(&self) -> Result<Vec<u8>> {
                let mut out = Vec::new();
                get_one(
                    &self.holder,
                    false,
                    None,
                    "Queue.get_bytes_nowait",
                    &mut out,
                )?;
                Ok(out)
            }

            /// Takes the oldest message into `out` (replacing its contents, reusing
            /// its allocation); returns the message's length.
            ///
            /// ```
            #[doc = $setup]
            /// let mut buf = Vec::with_capacity(64);
            /// q.put_bytes(b"abc", None)?;
            /// assert_eq!(h.get_bytes_into(&mut buf, None)?, 3);
            /// assert_eq!(buf, b"abc");
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_bytes_into(
                &self,
                out: &mut Vec<u8>,
                timeout: Option<Duration>,
            ) -> Result<usize> {
                get_one(&self.holder, true, timeout, "Queue.get_bytes", out)?;
                Ok(out.len())
            }
        }
    };
}

/// The plain-old-data path: a `T: Pod` (bytemuck) copied as its bytes, with no
/// serde on either side. Its bytes are postcard's encoding when `T` is a byte
/// array (`[u8; N]`), so `put_pod` and `get` (or `put` and `get_pod`) agree
/// there; for other types pair `put_pod` with `get_pod`.
macro_rules! pod_producer_api {
    ($ty:ident, $setup:literal) => {
        impl<T: bytemuck::Pod> $ty<T> {
            /// Puts `msg` as its raw bytes (`size_of::<T>()` of them, no serde),
            /// waiting at most `timeout` for room; read it back with
            /// [`get_pod`](Queue::get_pod). For a byte array (`[u8; N]`) these
            /// bytes are also postcard's encoding, so `get` reads it too.
            ///
            /// [`Error::Timeout`] when no room came in time, [`Error::Disconnected`]
            /// when it would wait and every consumer is gone.
            ///
            /// ```
            #[doc = $setup]
            /// h.put_pod(&7, None)?;
            /// assert_eq!(q.get_pod(None)?, 7);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn put_pod(&self, msg: &T, timeout: Option<Duration>) -> Result<()> {
                put_one(
                    &self.holder,
                    true,
                    timeout,
                    "Queue.put_pod",
                    bytemuck::bytes_of(msg),
                )
            }
        }
    };
}

macro_rules! pod_consumer_api {
    ($ty:ident, $setup:literal) => {
        impl<T: bytemuck::Pod> $ty<T> {
            /// Takes the oldest message as a `T` copied from its raw bytes (no
            /// serde), waiting at most `timeout`: the other end of
            /// [`put_pod`](Queue::put_pod), and of `put` for a byte array
            /// (`[u8; N]`, whose postcard encoding is its bytes).
            ///
            /// [`Error::Codec`] (the message is taken) when its length is not
            /// `size_of::<T>()`; [`Error::Timeout`], [`Error::Disconnected`] as
            /// for `get`.
            ///
            /// ```
            #[doc = $setup]
            /// q.put_pod(&5, None)?;
            /// assert_eq!(h.get_pod(None)?, 5);
            /// q.put_bytes(&[1, 2], None)?; // 2 bytes, not a u32's 4
            /// assert!(matches!(h.get_pod(None), Err(multiproc::Error::Codec { .. })));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_pod(&self, timeout: Option<Duration>) -> Result<T> {
                get_decoded(&self.holder, true, timeout, "Queue.get_pod", pod_from)
            }
        }
    };
}

macro_rules! common_api {
    ($ty:ident, $setup:literal) => {
        impl<T> $ty<T> {
            /// Messages in the queue now (Python's `qsize`; exact at the instant it
            /// is read, so only a hint once other processes move on).
            ///
            /// ```
            #[doc = $setup]
            /// q.put(&1, None)?;
            /// assert_eq!(h.qsize(), 1);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn qsize(&self) -> usize {
                self.holder.ring.qsize() as usize
            }

            /// Whether the queue holds no message now.
            ///
            /// ```
            #[doc = $setup]
            /// assert!(h.empty());
            /// q.put(&1, None)?;
            /// assert!(!h.empty());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn empty(&self) -> bool {
                self.qsize() == 0
            }

            /// Whether a put of a small message would have to wait now (`maxsize`
            /// messages queued, or no room in the byte bound).
            ///
            /// ```
            #[doc = $setup]
            /// assert!(!h.full());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn full(&self) -> bool {
                self.holder.ring.full()
            }

            /// The bound on queued messages; 0 means none (Python's `maxsize`).
            ///
            /// ```
            #[doc = $setup]
            /// assert_eq!(h.maxsize(), 0);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn maxsize(&self) -> usize {
                self.holder.ring.maxsize() as usize
            }

            /// Closes this handle (Python's `close`): its roles stop counting now,
            /// as if it were dropped, and its calls then fail with
            /// [`Error::Closed`]. Other handles, and the messages, stay.
            ///
            /// ```
            #[doc = $setup]
            /// h.close();
            /// assert!(h.is_closed());
            /// q.put(&1, None)?; // other handles still work
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn close(&self) {
                self.holder.close();
            }

            /// Whether [`close`](Self::close) was called on this handle.
            ///
            /// ```
            #[doc = $setup]
            /// assert!(!h.is_closed());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_closed(&self) -> bool {
                self.holder.is_closed()
            }
        }

        impl<T> Clone for $ty<T> {
            fn clone(&self) -> Self {
                $ty {
                    holder: Holder::new(
                        Arc::clone(&self.holder.ring),
                        self.holder.roles,
                        self.holder.joinable,
                    ),
                    _msg: PhantomData,
                }
            }
        }

        impl<T> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("qsize", &self.qsize())
                    .field("maxsize", &self.maxsize())
                    .field("closed", &self.is_closed())
                    .finish()
            }
        }
    };
}

/// A message queue between processes; this handle is both a producer and a
/// consumer (see the [module](self) for roles, messages and guarantees).
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Process, Queue};
/// let q = Queue::<String>::new()?;
/// let tx = q.sender();
/// let mut child = Process::new(move || {
///     for i in 0..3 {
///         tx.put(&format!("message {i}"), None).unwrap();
///     }
/// });
/// child.start()?;
/// for i in 0..3 {
///     assert_eq!(q.get(Some(Duration::from_secs(10)))?, format!("message {i}"));
/// }
/// child.join(Some(Duration::from_secs(10)))?;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
pub struct Queue<T> {
    pub(crate) holder: Holder,
    pub(crate) _msg: PhantomData<fn(T) -> T>,
}

/// A producer-only handle on a [`Queue`] (crossbeam-channel's `Sender`): it counts
/// as a producer, not a consumer.
///
/// ```
/// let q = multiproc::Queue::<u32>::new()?;
/// let (tx, rx) = (q.sender(), q.receiver());
/// drop(q);
/// tx.put(&1, None)?;
/// drop(tx); // the last producer
/// assert_eq!(rx.get(None)?, 1);
/// assert!(matches!(rx.get(None), Err(multiproc::Error::Disconnected(_))));
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
pub struct Sender<T> {
    pub(crate) holder: Holder,
    pub(crate) _msg: PhantomData<fn(T) -> T>,
}

/// A consumer-only handle on a [`Queue`] (crossbeam-channel's `Receiver`): it
/// counts as a consumer, not a producer.
///
/// ```
/// let q = multiproc::Queue::<u32>::with_maxsize(1)?;
/// let (tx, rx) = (q.sender(), q.receiver());
/// drop(q);
/// tx.put(&1, None)?;
/// drop(rx); // the last consumer: put says so
/// assert!(matches!(tx.put(&2, None), Err(multiproc::Error::Disconnected(_))));
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
pub struct Receiver<T> {
    pub(crate) holder: Holder,
    pub(crate) _msg: PhantomData<fn(T) -> T>,
}

impl<T> Queue<T> {
    /// A queue with no bound on messages and a 1 MiB ring (Python's `Queue()`);
    /// producers wait only when that much is queued.
    ///
    /// ```
    /// let q = multiproc::Queue::<(u32, String)>::new()?;
    /// q.put(&(1, "one".into()), None)?;
    /// assert_eq!(q.get(None)?, (1, "one".to_string()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Queue<T>> {
        Queue::with_bounds(0, 0)
    }

    /// A queue of at most `maxsize` messages (Python's `Queue(maxsize)`; 0 means
    /// no bound).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::with_maxsize(2)?;
    /// q.put(&1, None)?;
    /// q.put(&2, None)?;
    /// assert!(q.full());
    /// assert!(matches!(q.put_nowait(&3), Err(multiproc::Error::Full)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Queue<T>> {
        Queue::with_bounds(maxsize, 0)
    }

    /// A queue of at most `maxsize` messages (0: no bound) and at most
    /// `max_bytes` bytes of buffered frames (0: 1 MiB; at least 64; each message
    /// takes its length rounded up to 8, plus 8). A message larger than
    /// `max_bytes` is still carried, in pieces.
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<u8>>::with_bounds(0, 4096)?;
    /// let big = vec![7u8; 100_000]; // 25 times the bound
    /// let tx = q.sender();
    /// let mut p = multiproc::Process::new(move || tx.put(&big, None).unwrap());
    /// p.start()?;
    /// assert_eq!(q.get(None)?, vec![7u8; 100_000]);
    /// p.join(None)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_bounds(maxsize: usize, max_bytes: usize) -> Result<Queue<T>> {
        let ring = Arc::new(Ring::new(maxsize as u64, max_bytes as u64)?);
        Ok(Queue {
            holder: Holder::new(ring, Roles::BOTH, false),
            _msg: PhantomData,
        })
    }

    /// A producer-only handle on this queue.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// let tx = q.sender();
    /// tx.put(&1, None)?;
    /// assert_eq!(q.get(None)?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn sender(&self) -> Sender<T> {
        Sender {
            holder: Holder::new(
                Arc::clone(&self.holder.ring),
                Roles::PRODUCER,
                self.holder.joinable,
            ),
            _msg: PhantomData,
        }
    }

    /// A consumer-only handle on this queue.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// let rx = q.receiver();
    /// q.put(&1, None)?;
    /// assert_eq!(rx.get(None)?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn receiver(&self) -> Receiver<T> {
        Receiver {
            holder: Holder::new(
                Arc::clone(&self.holder.ring),
                Roles::CONSUMER,
                self.holder.joinable,
            ),
            _msg: PhantomData,
        }
    }
}

impl<T> Receiver<T> {
    /// Says that one task taken through this receiver is done, when it was made by
    /// [`JoinableQueue::receiver`](super::JoinableQueue::receiver) (see
    /// [`JoinableQueue::task_done`](super::JoinableQueue::task_done)); on a plain
    /// `Queue`'s receiver it is [`Error::InvalidArgument`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// let rx = q.receiver();
    /// let mut worker = multiproc::Process::new(move || {
    ///     rx.get(None).unwrap();
    ///     rx.task_done().unwrap();
    /// });
    /// worker.start()?;
    /// q.put(&1, None)?;
    /// q.join(Some(Duration::from_secs(10)))?;
    /// worker.join(Some(Duration::from_secs(10)))?;
    /// assert!(multiproc::Queue::<u8>::new()?.receiver().task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        super::joinable_queue::task_done(&self.holder)
    }
}

producer_api!(
    Queue,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.clone();"
);
consumer_api!(
    Queue,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.clone();"
);
common_api!(
    Queue,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.clone();"
);
producer_api!(
    Sender,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.sender();"
);
common_api!(
    Sender,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.sender();"
);
consumer_api!(
    Receiver,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.receiver();"
);
common_api!(
    Receiver,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.receiver();"
);

pod_producer_api!(
    Queue,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.clone();"
);
pod_consumer_api!(
    Queue,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.clone();"
);
pod_producer_api!(
    Sender,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.sender();"
);
pod_consumer_api!(
    Receiver,
    "let q = multiproc::Queue::<u32>::new()?;\nlet h = q.receiver();"
);

macro_rules! queue_token {
    ($ty:ident, $tag:ident, $roles:expr, $joinable:expr) => {
        /// Travels as a token ([`crate::token`]); the message type is checked on
        /// import (a fingerprint of its name). The imported handle counts as a
        /// producer/consumer of the importing process exactly as an inherited one.
        impl<T> serde::Serialize for $ty<T> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                crate::token::serialize(s, crate::token::Tag::$tag, || self.holder.token::<T>())
            }
        }

        impl<'de, T> serde::Deserialize<'de> for $ty<T> {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                crate::token::deserialize(
                    d,
                    crate::token::Tag::$tag,
                    |t: super::holder::QueueToken| {
                        Ok($ty {
                            holder: Holder::from_token::<T>(
                                &t,
                                $roles,
                                $joinable,
                                stringify!($ty),
                            )?,
                            _msg: PhantomData,
                        })
                    },
                )
            }
        }
    };
}

queue_token!(Queue, Queue, Roles::BOTH, Some(false));
queue_token!(Sender, Sender, Roles::PRODUCER, None);
queue_token!(Receiver, Receiver, Roles::CONSUMER, None);
