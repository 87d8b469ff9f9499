//! A job's results as the pool fills them in, and the caller's views of them:
//! [`AsyncResult`] (Python's `AsyncResult`/`MapResult`) and [`IMapIterator`]
//! (Python's `IMapIterator`/`IMapUnorderedIterator`).
//!
//! # A job's state (the invariants)
//!
//! A job is `slots.len()` tasks; chunk `i` covers items `ranges[i]` (a `map`
//! job has all its chunks from the start; a lazy `imap` job gains them, `Pending`,
//! as its input is taken, and never loses one). Each slot is `Pending` until the
//! pool's manager thread resolves it, exactly once, to `Done` (the postcard bytes
//! of its `Vec<R>`) or `Failed`; `resolved` counts resolved slots, `failed` the
//! failed ones, and `order` lists them in the order they were resolved. A `map`
//! job whose chunks are cut as its items are serialized (`Job::open`) gains its
//! chunks the same way and is `sealed` after the last: until then it is not
//! ready, even with every chunk so far resolved. The
//! caller only reads slots (an iterator may move bytes out of a slot it has
//! passed: `Taken`). Every change is made under `state`'s lock and followed by
//! `notify_all` on `cond` when a waiter may care: at every change for a job read
//! slot by slot (`imap`), else when the job becomes ready (what an `AsyncResult`
//! waits for) — so a waiter that sees under the lock that what it waits for has
//! not happened is woken when it does. The manager resolves every slot of every
//! job it accepted (a lost task is failed, a terminated pool fails what it had not
//! finished), so no wait for a slot is forever unless a task itself never ends.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Why a task failed (kept as data: it becomes an [`Error`] each time it is read).
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Item `item` panicked.
    Panicked { item: usize, message: String },
    /// The worker holding it died.
    Lost {
        pid: u32,
        signal: Option<i32>,
        exitcode: Option<i32>,
        attempts: u32,
    },
    /// The worker refused it (see `worker::Outcome::Refused`).
    Refused(String),
    /// The pool was terminated first.
    Terminated,
    /// The pool broke first.
    Broken(String),
}

pub(crate) enum Slot {
    Pending,
    Done(Vec<u8>),
    Failed(Failure),
    Taken,
}

pub(crate) struct Slots {
    /// Items of each chunk (grows with the slots for a lazy `imap`).
    pub(crate) ranges: Vec<Range<usize>>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) resolved: usize,
    /// Slots resolved to `Failed` (so that readiness is O(1), not a scan).
    pub(crate) failed: usize,
    pub(crate) order: Vec<usize>,
    /// Every chunk is known (always, but for a job made by [`Job::open`] until
    /// [`Job::seal`]).
    pub(crate) sealed: bool,
}

/// One call's tasks (see the module's invariants).
pub(crate) struct Job {
    pub(crate) id: u64,
    /// The call, for messages ("map", "apply"...).
    pub(crate) kind: &'static str,
    /// Wake the waiters at every `notify_every`-th resolution, and when the job
    /// becomes ready; 0: only then. An [`IMapIterator`] waits for one slot (1); an
    /// [`AsyncResult`] waits for readiness alone (0: a `map_async` of n tasks
    /// wakes its caller once, not n times); [`collect_in_order`] decodes as chunks
    /// come, woken a bounded number of times ([`Job::collect_every`]).
    notify_every: AtomicUsize,
    state: Mutex<Slots>,
    cond: Condvar,
}

impl Job {
    /// `notify_every`: see the field.
    pub(crate) fn new(
        id: u64,
        kind: &'static str,
        ranges: Vec<Range<usize>>,
        notify_every: usize,
    ) -> Job {
        let slots = ranges.iter().map(|_| Slot::Pending).collect();
        Job {
            id,
            kind,
            notify_every: AtomicUsize::new(notify_every),
            state: Mutex::new(Slots {
                ranges,
                slots,
                resolved: 0,
                failed: 0,
                order: Vec::new(),
                sealed: true,
            }),
            cond: Condvar::new(),
        }
    }

    /// A job with no chunk yet, that gains them by [`push_chunk`](Self::push_chunk)
    /// and is not ready before [`seal`](Self::seal) (a `map` whose chunks are cut
    /// as its items are serialized).
    pub(crate) fn open(id: u64, kind: &'static str, notify_every: usize) -> Job {
        let job = Job::new(id, kind, Vec::new(), notify_every);
        job.lock().sealed = false;
        job
    }

    /// Says that every chunk is pushed; wakes the waiters if that makes it ready.
    pub(crate) fn seal(&self) {
        let mut s = self.lock();
        s.sealed = true;
        let now_ready = ready(&s);
        drop(s);
        if now_ready {
            self.cond.notify_all();
        }
    }

    /// Sets `notify_every` (an open job learns its number of chunks as it goes).
    pub(crate) fn set_notify_every(&self, every: usize) {
        self.notify_every.store(every, Ordering::Relaxed);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Slots> {
        // Every change is one assignment plus counters: a panic elsewhere cannot
        // leave them inconsistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `notify_every` of a job of `chunks` chunks read by
    /// [`collect_in_order`]: its caller wakes about 32 times, not once per chunk
    /// (each wake-up is a context switch; with a chunk per item, one per item
    /// would cost more than the decoding it overlaps).
    pub(crate) fn collect_every(chunks: usize) -> usize {
        (chunks / 32).max(1)
    }

    /// Adds a pending chunk of items `range` (a lazy `imap` grows its job as it
    /// takes items); returns its index.
    pub(crate) fn push_chunk(&self, range: Range<usize>) -> usize {
        let mut s = self.lock();
        s.ranges.push(range);
        s.slots.push(Slot::Pending);
        s.slots.len() - 1
    }

    /// Names chunk `chunk`, of items `r`, in messages.
    pub(crate) fn describe(&self, chunk: usize, r: &Range<usize>) -> String {
        if self.kind == "apply" {
            format!("apply job {}", self.id)
        } else if r.len() == 1 {
            format!("item {} of {} job {}", r.start, self.kind, self.id)
        } else {
            format!(
                "items {}..{} (chunk {chunk}) of {} job {}",
                r.start, r.end, self.kind, self.id
            )
        }
    }

    /// Resolves chunk `chunk` (once; a second resolution is ignored).
    pub(crate) fn resolve(&self, chunk: usize, result: std::result::Result<Vec<u8>, Failure>) {
        let mut s = self.lock();
        let Some(slot) = s.slots.get_mut(chunk) else {
            return;
        };
        if !matches!(slot, Slot::Pending) {
            return;
        }
        let failed = result.is_err();
        *slot = match result {
            Ok(bytes) => Slot::Done(bytes),
            Err(f) => Slot::Failed(f),
        };
        let was_ready = ready(&s);
        s.failed += usize::from(failed);
        s.resolved += 1;
        s.order.push(chunk);
        let every = self.notify_every.load(Ordering::Relaxed);
        let wake = (ready(&s) && !was_ready) || (every > 0 && s.resolved % every == 0);
        drop(s);
        if wake {
            self.cond.notify_all();
        }
    }

    pub(crate) fn error(&self, chunk: usize, r: &Range<usize>, f: &Failure) -> Error {
        let task = self.describe(chunk, r);
        match f {
            Failure::Panicked { item, message } => Error::TaskPanicked {
                task: if self.kind == "apply" {
                    task
                } else {
                    format!("item {item} of {} job {}", self.kind, self.id)
                },
                message: message.clone(),
            },
            Failure::Lost {
                pid,
                signal,
                exitcode,
                attempts,
            } => Error::WorkerLost {
                pid: *pid,
                signal: *signal,
                exitcode: *exitcode,
                task,
                attempts: *attempts,
            },
            Failure::Refused(why) => Error::PoolBroken {
                reason: format!("a worker refused {task}: {why}"),
            },
            Failure::Terminated => Error::PoolTerminated { task },
            Failure::Broken(why) => Error::PoolBroken {
                reason: format!("{task} was not run: {why}"),
            },
        }
    }

    /// Waits until `done(state)` holds or `deadline` passes; returns the guard and
    /// whether it holds.
    fn wait_until(
        &self,
        deadline: Option<Instant>,
        done: impl Fn(&Slots) -> bool,
    ) -> (MutexGuard<'_, Slots>, bool) {
        let mut s = self.lock();
        loop {
            if done(&s) {
                return (s, true);
            }
            match deadline {
                None => s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return (s, false);
                    }
                    s = self
                        .cond
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

fn deadline(timeout: Option<Duration>) -> Result<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) => Instant::now()
            .checked_add(t)
            .map(Some)
            .ok_or(Error::TimeoutOverflow(t)),
    }
}

/// Whether a job is ready: every chunk known and resolved, or one failed (then its
/// result is that failure, as in CPython: a map fails at its first failed task).
fn ready(s: &Slots) -> bool {
    (s.sealed && s.resolved == s.slots.len()) || s.failed > 0
}

/// The result of [`Pool::apply_async`](crate::Pool::apply_async) or
/// [`Pool::map_async`](crate::Pool::map_async) (Python's `AsyncResult`), a `V`
/// once ready. It does not borrow the pool; it stays valid after the pool is
/// dropped (a task the pool did not finish then fails with
/// [`Error::PoolTerminated`]).
///
/// ```
/// use std::time::Duration;
/// use multiproc::Pool;
/// fn square(x: u64) -> u64 { x * x }
/// let pool = Pool::new(2)?;
/// let r = pool.apply_async(square, 7)?;
/// assert!(r.wait(Some(Duration::from_secs(30)))?);
/// assert!(r.ready());
/// assert!(r.successful()?);
/// assert_eq!(r.get(Some(Duration::from_secs(30)))?, 49);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsyncResult<V> {
    job: Arc<Job>,
    decode: fn(&Job, &Slots) -> Result<V>,
    _v: PhantomData<fn() -> V>,
}

impl<V> std::fmt::Debug for AsyncResult<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("job", &self.job.id)
            .field("kind", &self.job.kind)
            .field("ready", &self.ready())
            .finish()
    }
}

/// The first failure in chunk order, as an error.
fn first_failure(job: &Job, s: &Slots) -> Option<Error> {
    s.order.iter().find_map(|&i| match &s.slots[i] {
        Slot::Failed(f) => Some(job.error(i, &s.ranges[i], f)),
        _ => None,
    })
}

fn decode_chunk<R: DeserializeOwned>(
    job: &Job,
    chunk: usize,
    r: &Range<usize>,
    bytes: &[u8],
) -> Result<Vec<R>> {
    let mut v = Vec::new();
    decode_chunk_into(job, chunk, r, bytes, &mut v)?;
    Ok(v)
}

/// Decodes chunk `chunk`'s results (a postcard `Vec<R>` of `r.len()` items)
/// onto the end of `out`, with no vector of its own in between (a `map` of
/// 1,000,000 items would otherwise copy them all once more); on an error `out`
/// is as it was.
fn decode_chunk_into<R: DeserializeOwned>(
    job: &Job,
    chunk: usize,
    r: &Range<usize>,
    bytes: &[u8],
    out: &mut Vec<R>,
) -> Result<()> {
    let before = out.len();
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let got = serde::de::DeserializeSeed::deserialize(Extend(out), &mut de);
    let n = match got {
        Ok(n) => n,
        Err(e) => {
            out.truncate(before);
            return Err(Error::Codec {
                op: "pool result",
                what: "decode a task's results",
                reason: format!("{} ({e})", job.describe(chunk, r)),
            });
        }
    };
    if n != r.len() {
        out.truncate(before);
        return Err(Error::PoolBroken {
            reason: format!(
                "{} came back with {n} results for {} items",
                job.describe(chunk, r),
                r.len()
            ),
        });
    }
    Ok(())
}

/// A serde seed that deserializes a sequence onto the end of a vector and
/// returns how many elements it added.
struct Extend<'a, R>(&'a mut Vec<R>);

impl<'de, R: serde::Deserialize<'de>> serde::de::DeserializeSeed<'de> for Extend<'_, R> {
    type Value = usize;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, R: serde::Deserialize<'de>> serde::de::Visitor<'de> for Extend<'_, R> {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence of results")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<usize, A::Error> {
        // The length comes from the bytes: reserve no more than they can hold.
        self.0.reserve(seq.size_hint().unwrap_or(0).min(1 << 16));
        let mut n = 0;
        while let Some(x) = seq.next_element::<R>()? {
            self.0.push(x);
            n += 1;
        }
        Ok(n)
    }
}

pub(crate) fn decode_all<R: DeserializeOwned>(job: &Job, s: &Slots) -> Result<Vec<R>> {
    if let Some(e) = first_failure(job, s) {
        return Err(e);
    }
    let mut out = Vec::with_capacity(s.ranges.last().map_or(0, |r| r.end));
    for (i, slot) in s.slots.iter().enumerate() {
        match slot {
            Slot::Done(bytes) => decode_chunk_into::<R>(job, i, &s.ranges[i], bytes, &mut out)?,
            _ => unreachable!("a ready job without failures has every slot done"),
        }
    }
    Ok(out)
}

/// The result of a job read in chunk order by the caller that waits on it (the
/// blocking `Pool::map` and `starmap`, whose job notifies every
/// [`Job::collect_every`] resolutions):
/// each chunk's results are decoded, and its bytes freed, as soon as it and the
/// chunks before it are done, while later chunks still run, instead of all at
/// the end while the workers sit idle. The same value and errors as waiting for
/// the job to be ready, then [`decode_all`]: a failed task's error comes first
/// (the first in the order they ended), then the first chunk that does not
/// decode.
pub(crate) fn collect_in_order<R: DeserializeOwned>(job: &Job) -> Result<Vec<R>> {
    let total = job.lock().ranges.last().map_or(0, |r| r.end);
    let mut out = Vec::with_capacity(total);
    let mut next = 0usize;
    let mut undecodable: Option<Error> = None;
    loop {
        let done = |s: &Slots, i: usize| matches!(s.slots.get(i), Some(Slot::Done(_)));
        let (mut s, _) = job.wait_until(None, |s| ready(s) || done(s, next));
        if s.failed > 0 {
            return Err(first_failure(job, &s).expect("a failed slot is found"));
        }
        let mut taken = Vec::new();
        while done(&s, next) {
            let bytes = match std::mem::replace(&mut s.slots[next], Slot::Taken) {
                Slot::Done(bytes) => bytes,
                _ => unreachable!("`done` saw it done"),
            };
            taken.push((next, s.ranges[next].clone(), bytes));
            next += 1;
        }
        let all = s.sealed && next == s.slots.len();
        drop(s);
        for (i, r, bytes) in taken {
            if undecodable.is_none()
                && let Err(e) = decode_chunk_into::<R>(job, i, &r, &bytes, &mut out)
            {
                undecodable = Some(e);
            }
        }
        if all {
            return undecodable.map_or(Ok(out), Err);
        }
    }
}

pub(crate) fn decode_one<R: DeserializeOwned>(job: &Job, s: &Slots) -> Result<R> {
    let mut v = decode_all::<R>(job, s)?;
    v.pop().ok_or_else(|| Error::PoolBroken {
        reason: format!("{} returned no result", job.describe(0, &(0..1))),
    })
}

impl<V> AsyncResult<V> {
    pub(crate) fn new(job: Arc<Job>, decode: fn(&Job, &Slots) -> Result<V>) -> AsyncResult<V> {
        AsyncResult {
            job,
            decode,
            _v: PhantomData,
        }
    }

    /// The result, waiting at most `timeout` for it (`None`: until it is ready).
    /// Can be called again (it decodes the result each time).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if it is not ready in time (it may be asked again);
    /// the task's failure otherwise: [`Error::TaskPanicked`],
    /// [`Error::WorkerLost`], [`Error::PoolTerminated`], [`Error::PoolBroken`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Error, Pool};
    /// fn fail(_: u8) -> u8 { panic!("no luck") }
    /// let pool = Pool::new(1)?;
    /// let r = pool.apply_async(fail, 0)?;
    /// match r.get(Some(Duration::from_secs(30))) {
    ///     Err(Error::TaskPanicked { message, .. }) => assert_eq!(message, "no luck"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, timeout: Option<Duration>) -> Result<V> {
        let (s, ok) = self.job.wait_until(deadline(timeout)?, ready);
        if !ok {
            return Err(Error::Timeout {
                what: "AsyncResult::get",
                timeout: timeout.unwrap_or_default(),
            });
        }
        (self.decode)(&self.job, &s)
    }

    /// Waits at most `timeout` (`None`: until ready); returns whether it is ready
    /// (Python's `wait`, which returns nothing).
    ///
    /// # Errors
    ///
    /// [`Error::TimeoutOverflow`] for a timeout beyond the clock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Pool;
    /// fn id(x: u8) -> u8 { x }
    /// let pool = Pool::new(1)?;
    /// let r = pool.map_async(id, vec![1, 2, 3], None)?;
    /// assert!(r.wait(Some(Duration::from_secs(30)))?);
    /// assert_eq!(r.get(None)?, [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        Ok(self.job.wait_until(deadline(timeout)?, ready).1)
    }

    /// Whether the result is ready (without waiting).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Pool;
    /// fn id(x: u8) -> u8 { x }
    /// let pool = Pool::new(1)?;
    /// let r = pool.apply_async(id, 5)?;
    /// r.wait(Some(Duration::from_secs(30)))?;
    /// assert!(r.ready());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn ready(&self) -> bool {
        ready(&self.job.lock())
    }

    /// Whether the call succeeded (no task failed).
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] before it is ready (Python's `ValueError`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Pool;
    /// fn fail(_: u8) -> u8 { panic!("no") }
    /// let pool = Pool::new(1)?;
    /// let r = pool.apply_async(fail, 0)?;
    /// r.wait(Some(Duration::from_secs(30)))?;
    /// assert!(!r.successful()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn successful(&self) -> Result<bool> {
        let s = self.job.lock();
        if !ready(&s) {
            return Err(Error::NotReady {
                what: "AsyncResult::successful",
            });
        }
        Ok(s.failed == 0)
    }
}

/// The iterator of [`Pool::imap`](crate::Pool::imap) (results in the order of the
/// items) and [`Pool::imap_unordered`](crate::Pool::imap_unordered) (in the order
/// they finish, a chunk's results together): one `Result<R>` per item. A failed
/// task gives an `Err` for each of its items, and the iteration goes on.
///
/// `next` waits until the next result is ready (no task waits forever on a dead
/// worker: its task fails); [`next_timeout`](Self::next_timeout) waits at most a
/// timeout.
///
/// ```
/// use multiproc::Pool;
/// fn double(x: u32) -> u32 { 2 * x }
/// let pool = Pool::new(2)?;
/// let got: Vec<u32> = pool.imap(double, 0..5, None)?.collect::<Result<_, _>>()?;
/// assert_eq!(got, [0, 2, 4, 6, 8]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct IMapIterator<'a, R> {
    job: Arc<Job>,
    ordered: bool,
    /// Chunks handed out so far (in item order, or in completion order).
    next_chunk: usize,
    /// Chunks queued so far (the job's slots).
    pushed: usize,
    /// Items queued so far, and items of the chunks handed out (for `size_hint`).
    pushed_items: usize,
    handed_items: usize,
    /// Chunks queued and not yet handed out at most (the look-ahead).
    lookahead: usize,
    /// Takes and queues the next chunk of the input; `None` once the input ended
    /// or failed.
    feed: Option<Feeder<'a>>,
    /// Why the input failed, given after the results of the items before.
    feed_error: Option<Error>,
    buffer: VecDeque<Result<R>>,
}

/// What a lazy `imap`'s feeder did.
pub(crate) enum Fed {
    /// It queued one more chunk, of this many items.
    Chunk(usize),
    /// The input has no more items.
    End,
    /// The input failed (its iterator panicked, an item would not serialize).
    Failed(Error),
}

/// A lazy `imap`'s input, as the pool wraps it (dropping it tells the pool this
/// job queues no more tasks).
pub(crate) trait Feed {
    /// Takes the next chunk of the input and queues it.
    fn feed(&mut self) -> Fed;
    /// The input's `size_hint`.
    fn input_hint(&self) -> (usize, Option<usize>);
}

/// `Send`, so that an [`IMapIterator`] may move to another thread.
pub(crate) type Feeder<'a> = Box<dyn Feed + Send + 'a>;

impl<R> std::fmt::Debug for IMapIterator<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMapIterator")
            .field("job", &self.job.id)
            .field("ordered", &self.ordered)
            .field("next_chunk", &self.next_chunk)
            .field("pushed", &self.pushed)
            .field("feeding", &self.feed.is_some())
            .finish()
    }
}

impl<'a, R: DeserializeOwned> IMapIterator<'a, R> {
    pub(crate) fn new(
        job: Arc<Job>,
        ordered: bool,
        feed: Feeder<'a>,
        lookahead: usize,
    ) -> IMapIterator<'a, R> {
        let mut it = IMapIterator {
            job,
            ordered,
            next_chunk: 0,
            pushed: 0,
            pushed_items: 0,
            handed_items: 0,
            lookahead: lookahead.max(1),
            feed: Some(feed),
            feed_error: None,
            buffer: VecDeque::new(),
        };
        // Start at once (as CPython's task thread does), `lookahead` chunks.
        it.top_up();
        it
    }

    /// Queues chunks of the input until `lookahead` are queued and not handed
    /// out, or the input ends.
    fn top_up(&mut self) {
        while let Some(feed) = &mut self.feed {
            if self.pushed - self.next_chunk >= self.lookahead {
                break;
            }
            match feed.feed() {
                Fed::Chunk(items) => {
                    self.pushed += 1;
                    self.pushed_items += items;
                }
                Fed::End => self.feed = None,
                Fed::Failed(e) => {
                    self.feed_error = Some(e);
                    self.feed = None;
                }
            }
        }
    }

    /// The next result, waiting at most `timeout` for it (Python's
    /// `next(timeout)`); `None` at the end.
    ///
    /// # Errors
    ///
    /// `Some(Err(Error::Timeout))` if it is not ready in time: the iterator stays
    /// where it was, and may be asked again. `Some(Err(..))` with the task's
    /// failure for each item of a failed task.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Pool;
    /// fn id(x: u8) -> u8 { x }
    /// let pool = Pool::new(1)?;
    /// let mut it = pool.imap_unordered(id, vec![9], None)?;
    /// assert_eq!(it.next_timeout(Some(Duration::from_secs(30))).unwrap()?, 9);
    /// assert!(it.next_timeout(Some(Duration::from_secs(30))).is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Option<Duration>) -> Option<Result<R>> {
        if let Some(r) = self.buffer.pop_front() {
            return Some(r);
        }
        let deadline = match deadline(timeout) {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        let next = self.next_chunk;
        let ordered = self.ordered;
        let target = |s: &Slots| {
            if ordered {
                !matches!(s.slots[next], Slot::Pending)
            } else {
                s.order.len() > next
            }
        };
        let mut s = loop {
            // Take more input while workers may be free; then wait for the
            // result wanted, or (while input remains) for any task to end, which
            // frees a worker for more input.
            self.top_up();
            if next >= self.pushed {
                // The input ended and every result was handed out.
                return self.feed_error.take().map(Err);
            }
            let feeding = self.feed.is_some();
            let seen = self.job.lock().resolved;
            let (s, ok) = self
                .job
                .wait_until(deadline, |s| target(s) || (feeding && s.resolved > seen));
            if !ok {
                return Some(Err(Error::Timeout {
                    what: "IMapIterator::next_timeout",
                    timeout: timeout.unwrap_or_default(),
                }));
            }
            if target(&s) {
                break s;
            }
        };
        let chunk = if ordered { next } else { s.order[next] };
        self.next_chunk += 1;
        let slot = std::mem::replace(&mut s.slots[chunk], Slot::Taken);
        let job = &self.job;
        let range = s.ranges[chunk].clone();
        self.handed_items += range.len();
        match &slot {
            Slot::Done(bytes) => match decode_chunk::<R>(job, chunk, &range, bytes) {
                Ok(v) => self.buffer.extend(v.into_iter().map(Ok)),
                Err(e) => self.buffer.push_back(Err(e)),
            },
            Slot::Failed(f) => {
                for _ in range.clone() {
                    self.buffer.push_back(Err(job.error(chunk, &range, f)));
                }
            }
            Slot::Pending | Slot::Taken => unreachable!("only resolved slots are taken, once"),
        }
        // Keep the failure readable for other views (none today) and free the bytes.
        if let Slot::Failed(f) = slot {
            s.slots[chunk] = Slot::Failed(f);
        }
        drop(s);
        self.buffer.pop_front()
    }
}

impl<R: DeserializeOwned> Iterator for IMapIterator<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_timeout(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Results queued or buffered, then the input's (plus one for the error an
        // input that panics or does not serialize would end with).
        let known = self.pushed_items - self.handed_items + self.buffer.len();
        match &self.feed {
            Some(feed) => {
                let (lo, hi) = feed.input_hint();
                (
                    known.saturating_add(lo),
                    hi.and_then(|h| h.checked_add(known + 1)),
                )
            }
            None => {
                let n = known + usize::from(self.feed_error.is_some());
                (n, Some(n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job whose chunks are still being cut is not ready, even with every chunk
    /// so far done; sealing it makes it ready, and its results are in order.
    #[test]
    fn an_open_job_is_ready_only_once_sealed() {
        let job = Arc::new(Job::open(1, "map", 1));
        let c0 = job.push_chunk(0..2);
        job.resolve(c0, Ok(postcard::to_stdvec(&vec![10u32, 11]).unwrap()));
        let r = AsyncResult::new(Arc::clone(&job), decode_all::<u32>);
        assert!(!r.ready());
        assert!(!r.wait(Some(Duration::ZERO)).unwrap());
        let c1 = job.push_chunk(2..3);
        job.resolve(c1, Ok(postcard::to_stdvec(&vec![12u32]).unwrap()));
        assert!(!r.ready());
        job.seal();
        assert!(r.ready());
        assert_eq!(r.get(Some(Duration::ZERO)).unwrap(), [10, 11, 12]);
        assert_eq!(collect_in_order::<u32>(&job).unwrap(), [10, 11, 12]);
        // No chunk at all: ready once sealed, empty.
        let empty = Job::open(2, "map", 1);
        assert!(!ready(&empty.lock()));
        empty.seal();
        assert!(collect_in_order::<u32>(&empty).unwrap().is_empty());
    }

    /// Results decoded onto the end of the output: a chunk with the wrong number
    /// of results, or bytes that do not decode, leave the output as it was.
    #[test]
    fn a_bad_chunk_leaves_the_output_as_it_was() {
        let job = Job::new(1, "map", vec![0..2, 2..4], 0);
        let mut out = vec![1u32];
        let two = postcard::to_stdvec(&vec![2u32, 3]).unwrap();
        decode_chunk_into(&job, 0, &(0..2), &two, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
        let three = postcard::to_stdvec(&vec![4u32, 5, 6]).unwrap();
        let e = decode_chunk_into(&job, 1, &(2..4), &three, &mut out).unwrap_err();
        assert!(matches!(e, Error::PoolBroken { .. }), "{e:?}");
        assert_eq!(out, [1, 2, 3]);
        let cut = &three[..three.len() - 1];
        let e = decode_chunk_into(&job, 1, &(2..5), cut, &mut out).unwrap_err();
        assert!(matches!(e, Error::Codec { .. }), "{e:?}");
        assert_eq!(out, [1, 2, 3]);
    }
}
