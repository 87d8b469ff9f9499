//! [`Pool`] and [`PoolBuilder`]: worker processes that run plain functions on
//! items, Python's `multiprocessing.Pool`, and a pool that never hangs when a
//! worker dies.
//!
//! # Design
//!
//! Each worker is a daemon [`Process`] with its own duplex [`Connection`]. A
//! manager thread in the pool's process owns the workers and gives each at most
//! one task (a chunk of items) at a time, so it knows exactly which task each
//! worker holds. It sleeps in one [`wait`] over a wake-up pipe (new tasks, close,
//! terminate), every worker's connection and every worker's sentinel (pidfd): no
//! polling, and a worker's death is seen as soon as the kernel reports it. A dead
//! worker's task — only that one — fails with [`Error::WorkerLost`] (or is run
//! again, up to [`PoolBuilder::retries`] times), and a replacement is forked at
//! once.
//!
//! # States (the manager's `Phase`)
//!
//! - `Running`: takes tasks; dead or retiring workers are replaced.
//! - `Closed` (after [`Pool::close`]): takes no new tasks; finishes the queued
//!   ones (replacing workers that die while tasks remain), then stops the idle
//!   workers and waits for them to exit, and becomes `Finished`.
//! - `Terminating` (after [`Pool::terminate`] or drop): kills every worker,
//!   fails every unfinished task with [`Error::PoolTerminated`], becomes
//!   `Finished`.
//! - `Finished`: no worker is left (each was killed or exited, and reaped).
//!
//! Invariants: a task is in exactly one place — the queue, one worker's `held`,
//! or resolved in its job — so every task of every accepted call is resolved
//! exactly once; the manager's drop (also when it panics) resolves whatever is
//! left, so no caller waits forever on a task the pool dropped.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::pipe::{PipeFlags, pipe_with};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::async_result::{AsyncResult, Failure, IMapIterator, Job, decode_all, decode_one};
use super::worker::{self, Entry, FromWorker, Initializer, Outcome, ToWorkerRef, Trampoline};
use crate::connection::{Waitable, wait};
use crate::error::{Error, Result};
use crate::msg::{Connection, Pipe};
use crate::process::Process;
use crate::sys::task::FnToken;

/// How long the manager waits for a killed worker to be reaped.
const REAP_BOUND: Duration = Duration::from_secs(10);
/// How long `terminate` and drop wait for the manager to stop every worker.
const TERMINATE_BOUND: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Closed,
    Terminating,
    Finished,
}

/// One task: a chunk of a job's items, serialized, and how to run it.
struct Task {
    job: Arc<Job>,
    chunk: usize,
    entry: Entry,
    args: Vec<u8>,
    /// Times it was given to a worker that then died.
    attempts: u32,
}

/// What the callers and the manager share, under one lock.
struct Core {
    queue: VecDeque<Task>,
    phase: Phase,
    /// Set when the pool can run no more tasks (see [`Error::PoolBroken`]).
    broken: Option<String>,
    /// Pids of the live workers.
    pids: Vec<u32>,
}

struct Shared {
    core: Mutex<Core>,
    /// Notified when `phase` becomes `Finished`.
    finished: Condvar,
    /// Write end of the manager's wake-up pipe (non-blocking).
    wake: OwnedFd,
    next_job: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // Each critical section leaves `Core` consistent at every panic point
        // (pushes, pops and assignments), so a poisoned lock is still usable.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        // A full pipe already holds a wake-up: nothing is lost on EAGAIN.
        let _ = rustix::io::write(&self.wake, &[1]);
    }
}

#[derive(Clone)]
struct Config {
    processes: usize,
    initializer: Option<Initializer>,
    maxtasksperchild: Option<usize>,
    retries: u32,
}

/// Configures a [`Pool`] (Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild)`, plus retries of tasks lost to a dead worker).
///
/// ```
/// use std::time::Duration;
/// use multiproc::Pool;
/// fn square(x: u64) -> u64 { x * x }
/// let pool = Pool::builder()
///     .processes(2)
///     .maxtasksperchild(10)
///     .retries(1)
///     .initializer(|| { /* once in each worker, before its first task */ })
///     .build()?;
/// assert_eq!(pool.map(square, 0..4)?, [0, 1, 4, 9]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<Initializer>,
    maxtasksperchild: Option<usize>,
    retries: u32,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("initializer", &self.initializer.is_some())
            .field("maxtasksperchild", &self.maxtasksperchild)
            .field("retries", &self.retries)
            .finish()
    }
}

impl PoolBuilder {
    /// Number of worker processes (default: the CPUs this process may run on,
    /// Python's `os.cpu_count()`).
    ///
    /// ```
    /// let pool = multiproc::Pool::builder().processes(3).build()?;
    /// assert_eq!(pool.processes(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn processes(mut self, processes: usize) -> PoolBuilder {
        self.processes = Some(processes);
        self
    }

    /// A closure each worker runs once, when it starts, before its first task
    /// (Python's `initializer` and `initargs`: capture the arguments). It is
    /// copied into each worker by the fork, so unlike tasks it may capture
    /// anything (shared objects too). If it panics, the pool breaks: unfinished
    /// and later tasks fail with [`Error::PoolBroken`] (CPython respawns the worker
    /// forever).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Pool, Value};
    /// let started = Value::<u32>::new(0)?;
    /// let s = started.clone();
    /// let pool = Pool::builder()
    ///     .processes(2)
    ///     .initializer(move || *s.lock().unwrap() += 1)
    ///     .build()?;
    /// pool.close();
    /// assert!(pool.join(Some(Duration::from_secs(30)))?);
    /// assert_eq!(started.get()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn initializer(mut self, init: impl Fn() + Send + Sync + 'static) -> PoolBuilder {
        self.initializer = Some(Arc::new(init));
        self
    }

    /// Tasks (chunks) a worker runs before it exits and is replaced by a fresh one
    /// (Python's `maxtasksperchild`; default: unlimited).
    ///
    /// ```
    /// fn pid(_: u8) -> u32 { std::process::id() }
    /// let pool = multiproc::Pool::builder().processes(1).maxtasksperchild(1).build()?;
    /// let a = pool.apply(pid, 0)?;
    /// let b = pool.apply(pid, 0)?;
    /// assert_ne!(a, b); // a new worker for each task
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxtasksperchild(mut self, tasks: usize) -> PoolBuilder {
        self.maxtasksperchild = Some(tasks);
        self
    }

    /// How many times a task whose worker died is run again on another worker
    /// before it fails with [`Error::WorkerLost`] (default 0: it fails at once,
    /// as billiard's `WorkerLostError`). Only for tasks that may safely run twice.
    ///
    /// ```
    /// let pool = multiproc::Pool::builder().processes(1).retries(2).build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn retries(mut self, retries: u32) -> PoolBuilder {
        self.retries = retries;
        self
    }

    /// Starts the pool: forks its workers and its manager thread.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroSize`] for 0 processes or a `maxtasksperchild` of 0;
    /// [`Error::Io`] if a pipe, fork or thread cannot be made;
    /// [`Error::ProcessState`] in a daemon process (daemons have no children).
    ///
    /// ```
    /// assert!(multiproc::Pool::builder().processes(0).build().is_err());
    /// ```
    pub fn build(self) -> Result<Pool> {
        let processes = match self.processes {
            Some(0) => {
                return Err(Error::ZeroSize {
                    what: "Pool processes",
                });
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.maxtasksperchild == Some(0) {
            return Err(Error::ZeroSize {
                what: "Pool maxtasksperchild",
            });
        }
        let config = Config {
            processes,
            initializer: self.initializer,
            maxtasksperchild: self.maxtasksperchild,
            retries: self.retries,
        };
        FnToken::prime();
        let (wake_r, wake_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(|e| Error::io("Pool: creating the manager's wake-up pipe", e))?;
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                queue: VecDeque::new(),
                phase: Phase::Running,
                broken: None,
                pids: Vec::new(),
            }),
            finished: Condvar::new(),
            wake: wake_w,
            next_job: AtomicU64::new(1),
        });
        let mut manager = Manager {
            shared: Arc::clone(&shared),
            wake: wake_r,
            workers: Vec::new(),
            config,
            started: 0,
        };
        // Fork the first workers here, so that a failure is this call's error (the
        // manager's drop kills those already started).
        for _ in 0..processes {
            let w = manager.spawn()?;
            manager.workers.push(w);
        }
        manager.publish_pids();
        let handle = std::thread::Builder::new()
            .name("multiproc-pool".into())
            .spawn(move || manager.run())
            .map_err(|e| Error::io("Pool: starting the manager thread", e))?;
        Ok(Pool {
            shared,
            manager: Mutex::new(Some(handle)),
            processes,
            creator: std::process::id(),
        })
    }
}

/// A pool of worker processes that run a plain function on items (Python's
/// `multiprocessing.Pool`, fork start method), where a worker's death fails only
/// the task it held.
///
/// **Tasks are plain functions** (`fn` items or pointers, no captures): a
/// worker is a fork of this process, and the task travels as the function's
/// address with a check that the worker shares this program image. This is
/// Python's "the function must be picklable" (a module-level function). Items
/// and results travel through serde (postcard). For per-worker state, use the
/// [`initializer`](PoolBuilder::initializer) (a closure, copied by the fork) and
/// statics, or shared objects.
///
/// **Chunks.** `map`-like calls split the items into chunks (tasks) of
/// `chunksize` items (by default as CPython: about four chunks per worker); a
/// worker runs one chunk at a time and sends back its results together.
///
/// **Failures.** A task that panics fails with [`Error::TaskPanicked`] and the
/// worker goes on. A worker that dies (SIGKILL, OOM killer, `abort`) fails the
/// one task it held with [`Error::WorkerLost`], naming its pid and signal, or
/// has it run again ([`retries`](PoolBuilder::retries)); a replacement is forked
/// at once and the other tasks go on (CPython's Pool hangs forever there).
///
/// **Shutdown.** [`close`](Self::close) then [`join`](Self::join) lets the
/// queued tasks finish; [`terminate`](Self::terminate) (and drop) kills the
/// workers, reaps them and fails what was unfinished. Workers are daemons: a
/// worker whose pool's process dies kills itself.
///
/// ```
/// use multiproc::Pool;
/// fn square(x: u64) -> u64 { x * x }
/// let pool = Pool::new(4)?;
/// assert_eq!(pool.map(square, 0..10)?, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// A Pool does not travel: it has no token ([`token::export`](crate::token::export)
/// does not take it), since its workers are this process's children and its
/// tasks are this process's functions. Give other processes a Queue instead.
pub struct Pool {
    shared: Arc<Shared>,
    manager: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
    /// The pid of the process that made the pool, the only one where its manager
    /// thread runs: a copy of the pool in a forked child refuses every call (its
    /// tasks would wait forever) and its drop does nothing.
    creator: u32,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.shared.lock();
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .field("phase", &core.phase)
            .field("queued", &core.queue.len())
            .field("workers", &core.pids)
            .finish()
    }
}

/// CPython's default chunk size: about four chunks per worker.
fn auto_chunksize(len: usize, processes: usize) -> usize {
    let per = processes * 4;
    let (q, r) = (len / per, len % per);
    (q + usize::from(r != 0)).max(1)
}

fn fork_entry<F: crate::sys::task::FnPtr>(trampoline: Trampoline, func: F) -> Entry {
    Entry::Fork {
        trampoline: FnToken::of(trampoline),
        func: FnToken::of(func),
    }
}

impl Pool {
    /// [`Error::PoolState`] in a process other than the pool's creator.
    fn check_creator(&self, op: &'static str) -> Result<()> {
        if std::process::id() == self.creator {
            Ok(())
        } else {
            Err(Error::PoolState {
                op,
                reason: "a pool can only be used by the process that created it (this is a forked copy)",
            })
        }
    }

    /// A pool of `processes` workers, started now (Python's `Pool(processes)`).
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`].
    ///
    /// ```
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.processes(), 2);
    /// assert_eq!(pool.worker_pids().len(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A [`PoolBuilder`] for the other options.
    ///
    /// ```
    /// let pool = multiproc::Pool::builder().processes(1).build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers the pool keeps.
    ///
    /// ```
    /// assert_eq!(multiproc::Pool::new(3)?.processes(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the live workers now (replacements included; empty once the
    /// pool has finished).
    ///
    /// ```
    /// let pool = multiproc::Pool::new(2)?;
    /// assert!(!pool.worker_pids().contains(&std::process::id()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.lock().pids.clone()
    }

    /// Splits `items` into chunks and queues them as one job.
    fn submit<T: Serialize>(
        &self,
        op: &'static str,
        kind: &'static str,
        entry: Entry,
        items: Vec<T>,
        chunksize: Option<usize>,
    ) -> Result<Arc<Job>> {
        self.check_creator(op)?;
        let chunksize = match chunksize {
            Some(0) => return Err(Error::ZeroSize { what: "chunksize" }),
            Some(n) => n,
            None => auto_chunksize(items.len(), self.processes),
        };
        let ranges: Vec<_> = (0..items.len())
            .step_by(chunksize)
            .map(|s| s..(s + chunksize).min(items.len()))
            .collect();
        let mut args = Vec::with_capacity(ranges.len());
        for r in &ranges {
            args.push(
                postcard::to_stdvec(&items[r.clone()]).map_err(|e| Error::Codec {
                    op,
                    what: "serialize the items",
                    reason: e.to_string(),
                })?,
            );
        }
        let id = self.shared.next_job.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job::new(id, kind, ranges));
        {
            let mut core = self.shared.lock();
            if core.phase != Phase::Running {
                return Err(Error::PoolClosed { op });
            }
            if let Some(why) = &core.broken {
                return Err(Error::PoolBroken {
                    reason: why.clone(),
                });
            }
            for (chunk, args) in args.into_iter().enumerate() {
                core.queue.push_back(Task {
                    job: Arc::clone(&job),
                    chunk,
                    entry,
                    args,
                    attempts: 0,
                });
            }
        }
        self.shared.wake();
        Ok(job)
    }

    /// Runs `f(arg)` in a worker and returns its result (Python's `apply`).
    ///
    /// # Errors
    ///
    /// As [`AsyncResult::get`], and [`Error::PoolClosed`] after close/terminate.
    ///
    /// ```
    /// fn add_one(x: i32) -> i32 { x + 1 }
    /// let pool = multiproc::Pool::new(1)?;
    /// assert_eq!(pool.apply(add_one, 41)?, 42);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply<T, R>(&self, f: fn(T) -> R, arg: T) -> Result<R>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.apply_async(f, arg)?.get(None)
    }

    /// Queues `f(arg)` and returns its [`AsyncResult`] at once (Python's
    /// `apply_async`; no callbacks: wait on the result instead).
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] after close/terminate; [`Error::PoolBroken`];
    /// [`Error::Codec`] if `arg` cannot be serialized; [`Error::PoolState`] in a
    /// forked copy of the pool (a child process that captured it).
    ///
    /// ```
    /// use std::time::Duration;
    /// fn add_one(x: i32) -> i32 { x + 1 }
    /// let pool = multiproc::Pool::new(2)?;
    /// let results: Vec<_> = (0..4).map(|i| pool.apply_async(add_one, i)).collect::<Result<_, _>>()?;
    /// for (i, r) in results.iter().enumerate() {
    ///     assert_eq!(r.get(Some(Duration::from_secs(30)))?, i as i32 + 1);
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async<T, R>(&self, f: fn(T) -> R, arg: T) -> Result<AsyncResult<R>>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = fork_entry(worker::map_trampoline::<T, R> as Trampoline, f);
        let job = self.submit("apply_async", "apply", entry, vec![arg], Some(1))?;
        Ok(AsyncResult::new(job, decode_one::<R>))
    }

    /// `f` on every item, results in the items' order (Python's `map`), with the
    /// default chunk size. The first failed task (in the order the tasks ended)
    /// is the error.
    ///
    /// # Errors
    ///
    /// As [`AsyncResult::get`], and [`Error::PoolClosed`] after close/terminate.
    ///
    /// ```
    /// fn len(s: String) -> usize { s.len() }
    /// let pool = multiproc::Pool::new(2)?;
    /// let words = ["a", "bb", "ccc"].map(String::from);
    /// assert_eq!(pool.map(len, words)?, [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<T, R>(&self, f: fn(T) -> R, items: impl IntoIterator<Item = T>) -> Result<Vec<R>>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.map_async(f, items, None)?.get(None)
    }

    /// [`map`](Self::map) with chunks of `chunksize` items.
    ///
    /// # Errors
    ///
    /// As [`map`](Self::map); [`Error::ZeroSize`] for a chunk size of 0.
    ///
    /// ```
    /// fn neg(x: i64) -> i64 { -x }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.map_chunked(neg, 0..7, 3)?, [0, -1, -2, -3, -4, -5, -6]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_chunked<T, R>(
        &self,
        f: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.map_async(f, items, Some(chunksize))?.get(None)
    }

    /// Queues a [`map`](Self::map) and returns its [`AsyncResult`] at once
    /// (Python's `map_async`); `chunksize` `None` is the default size.
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`], [`Error::PoolBroken`], [`Error::ZeroSize`],
    /// [`Error::Codec`].
    ///
    /// ```
    /// use std::time::Duration;
    /// fn square(x: u32) -> u32 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let r = pool.map_async(square, 1..4, None)?;
    /// assert_eq!(r.get(Some(Duration::from_secs(30)))?, [1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async<T, R>(
        &self,
        f: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = fork_entry(worker::map_trampoline::<T, R> as Trampoline, f);
        let items: Vec<T> = items.into_iter().collect();
        let job = self.submit("map_async", "map", entry, items, chunksize)?;
        Ok(AsyncResult::new(job, decode_all::<R>))
    }

    /// `f` on every item, as an iterator of results in the items' order (Python's
    /// `imap`); `chunksize` `None` is 1, as in Python. The items are taken (and
    /// serialized) at once; results come as their tasks finish.
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`], [`Error::PoolBroken`], [`Error::ZeroSize`],
    /// [`Error::Codec`]; each item's failure comes from the iterator.
    ///
    /// ```
    /// fn square(x: u32) -> u32 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let mut it = pool.imap(square, 0..4, Some(3))?;
    /// assert_eq!(it.next().unwrap()?, 0);
    /// let rest: Vec<u32> = it.collect::<Result<_, _>>()?;
    /// assert_eq!(rest, [1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<T, R>(
        &self,
        f: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<IMapIterator<R>>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = fork_entry(worker::map_trampoline::<T, R> as Trampoline, f);
        let items: Vec<T> = items.into_iter().collect();
        let job = self.submit("imap", "imap", entry, items, Some(chunksize.unwrap_or(1)))?;
        Ok(IMapIterator::new(job, true))
    }

    /// As [`imap`](Self::imap), but results come in the order their tasks finish
    /// (Python's `imap_unordered`).
    ///
    /// # Errors
    ///
    /// As [`imap`](Self::imap).
    ///
    /// ```
    /// fn square(x: u32) -> u32 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let mut got: Vec<u32> = pool.imap_unordered(square, 0..4, None)?.collect::<Result<_, _>>()?;
    /// got.sort();
    /// assert_eq!(got, [0, 1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<T, R>(
        &self,
        f: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<IMapIterator<R>>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = fork_entry(worker::map_trampoline::<T, R> as Trampoline, f);
        let items: Vec<T> = items.into_iter().collect();
        let job = self.submit(
            "imap_unordered",
            "imap_unordered",
            entry,
            items,
            Some(chunksize.unwrap_or(1)),
        )?;
        Ok(IMapIterator::new(job, false))
    }

    /// `f(a, b)` for every pair, results in order (Python's `starmap`, for
    /// two-argument functions; pass a tuple to [`map`](Self::map) for more).
    ///
    /// # Errors
    ///
    /// As [`map`](Self::map).
    ///
    /// ```
    /// fn pow(base: u64, exp: u32) -> u64 { base.pow(exp) }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap(pow, [(2, 3), (3, 2), (10, 0)])?, [8, 9, 1]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        B: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.starmap_async(f, items, None)?.get(None)
    }

    /// Queues a [`starmap`](Self::starmap) and returns its [`AsyncResult`]
    /// (Python's `starmap_async`).
    ///
    /// # Errors
    ///
    /// As [`map_async`](Self::map_async).
    ///
    /// ```
    /// use std::time::Duration;
    /// fn add(a: i32, b: i32) -> i32 { a + b }
    /// let pool = multiproc::Pool::new(2)?;
    /// let r = pool.starmap_async(add, [(1, 2), (3, 4)], Some(1))?;
    /// assert_eq!(r.get(Some(Duration::from_secs(30)))?, [3, 7]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_async<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned + 'static,
        B: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = fork_entry(worker::star_trampoline::<A, B, R> as Trampoline, f);
        let items: Vec<(A, B)> = items.into_iter().collect();
        let job = self.submit("starmap_async", "starmap", entry, items, chunksize)?;
        Ok(AsyncResult::new(job, decode_all::<R>))
    }

    /// Takes no more tasks; the queued ones still run, then the workers exit
    /// (Python's `close`). Does not wait: [`join`](Self::join) does.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Error, Pool};
    /// fn id(x: u8) -> u8 { x }
    /// let pool = Pool::new(1)?;
    /// let r = pool.apply_async(id, 1)?;
    /// pool.close();
    /// assert!(matches!(pool.apply_async(id, 2), Err(Error::PoolClosed { .. })));
    /// assert_eq!(r.get(Some(Duration::from_secs(30)))?, 1); // queued before close: runs
    /// assert!(pool.join(Some(Duration::from_secs(30)))?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        if self.check_creator("Pool::close").is_err() {
            return;
        }
        let mut core = self.shared.lock();
        if core.phase == Phase::Running {
            core.phase = Phase::Closed;
        }
        drop(core);
        self.shared.wake();
    }

    /// Kills every worker now (SIGKILL), reaps them and fails every unfinished
    /// task with [`Error::PoolTerminated`] (Python's `terminate`, which leaves
    /// them waiting forever). Returns once the workers are reaped.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the workers were not all reaped within 20 s (a worker
    /// stuck in the kernel); [`Error::PoolState`] in a forked copy of the pool.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Error, Pool};
    /// fn sleepy(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let pool = Pool::new(1)?;
    /// let r = pool.apply_async(sleepy, 60_000)?;
    /// pool.terminate()?;
    /// assert!(matches!(r.get(Some(Duration::from_secs(30))), Err(Error::PoolTerminated { .. })));
    /// assert!(pool.worker_pids().is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn terminate(&self) -> Result<()> {
        self.check_creator("Pool::terminate")?;
        let mut core = self.shared.lock();
        if core.phase != Phase::Finished {
            core.phase = Phase::Terminating;
        }
        drop(core);
        self.shared.wake();
        if self.join(Some(TERMINATE_BOUND))? {
            Ok(())
        } else {
            Err(Error::Timeout {
                what: "Pool::terminate",
                timeout: TERMINATE_BOUND,
            })
        }
    }

    /// Waits at most `timeout` (`None`: until done) for every worker to exit
    /// after [`close`](Self::close) or [`terminate`](Self::terminate) (Python's
    /// `join`); returns whether they have.
    ///
    /// # Errors
    ///
    /// [`Error::PoolState`] if the pool is still running (Python's `ValueError`),
    /// or in a forked copy of the pool; [`Error::TimeoutOverflow`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::Pool::new(2)?;
    /// assert!(pool.join(Some(Duration::from_secs(1))).is_err()); // not closed
    /// pool.close();
    /// assert!(pool.join(Some(Duration::from_secs(30)))?);
    /// assert!(pool.worker_pids().is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self, timeout: Option<Duration>) -> Result<bool> {
        self.check_creator("Pool::join")?;
        let deadline = match timeout {
            None => None,
            Some(t) => Some(
                Instant::now()
                    .checked_add(t)
                    .ok_or(Error::TimeoutOverflow(t))?,
            ),
        };
        let mut core = self.shared.lock();
        if core.phase == Phase::Running {
            return Err(Error::PoolState {
                op: "Pool::join",
                reason: "the pool is still running: call close() or terminate() first",
            });
        }
        while core.phase != Phase::Finished {
            match deadline {
                None => {
                    core = self
                        .shared
                        .finished
                        .wait(core)
                        .unwrap_or_else(|e| e.into_inner())
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    core = self
                        .shared
                        .finished
                        .wait_timeout(core, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        drop(core);
        // Finished: the manager thread is returning (or has).
        let handle = self
            .manager
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        Ok(true)
    }
}

impl Drop for Pool {
    /// Terminates the pool (as CPython's finalizer): kills and reaps the workers
    /// within a bound, failing unfinished tasks with [`Error::PoolTerminated`].
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// A worker as the manager sees it.
struct Worker {
    process: Process,
    conn: Connection,
    /// The task it is running (at most one; see the module's invariants).
    held: Option<Task>,
    /// It will exit without another task (it was told to stop, reached
    /// `maxtasksperchild`, or its initializer panicked): give it nothing.
    leaving: bool,
}

/// The manager thread's state (see the module's states).
struct Manager {
    shared: Arc<Shared>,
    wake: OwnedFd,
    workers: Vec<Worker>,
    config: Config,
    /// Workers forked so far (names them).
    started: u64,
}

impl Manager {
    /// Forks a worker.
    fn spawn(&mut self) -> Result<Worker> {
        let (ours, theirs) = Pipe(true)?;
        let init = self.config.initializer.clone();
        let max = self.config.maxtasksperchild;
        self.started += 1;
        let mut process = Process::new(move || worker::run(theirs, init, max))
            .with_name(format!("ForkPoolWorker-{}", self.started))
            .daemon(true);
        process.start()?;
        Ok(Worker {
            process,
            conn: ours,
            held: None,
            leaving: false,
        })
    }

    fn publish_pids(&self) {
        let pids = self
            .workers
            .iter()
            .filter_map(|w| w.process.pid())
            .collect();
        self.shared.lock().pids = pids;
    }

    fn run(mut self) {
        loop {
            // 1. Under the lock: the phase, and tasks for idle workers.
            let mut assigned = Vec::new();
            let closing = {
                let mut core = self.shared.lock();
                if core.phase == Phase::Terminating {
                    break;
                }
                if let Some(why) = core.broken.clone() {
                    for t in core.queue.drain(..) {
                        t.job.resolve(t.chunk, Err(Failure::Broken(why.clone())));
                    }
                }
                for (i, w) in self.workers.iter().enumerate() {
                    if w.held.is_none() && !w.leaving {
                        match core.queue.pop_front() {
                            Some(t) => assigned.push((i, t)),
                            None => break,
                        }
                    }
                }
                core.phase == Phase::Closed && core.queue.is_empty()
            };
            // 2. Hand them out. A send that fails means the worker is gone: the task
            // stays held, and its end of file below buries the worker.
            for (i, t) in assigned {
                let w = &mut self.workers[i];
                let _ = w.conn.send(&ToWorkerRef::Run {
                    job: t.job.id,
                    chunk: t.chunk as u32,
                    entry: t.entry,
                    args: &t.args,
                });
                w.held = Some(t);
            }
            if closing {
                for w in &mut self.workers {
                    if w.held.is_none() && !w.leaving {
                        let _ = w.conn.send(&ToWorkerRef::Stop);
                        w.leaving = true;
                    }
                }
                if self.workers.is_empty() {
                    break;
                }
            }
            // 3. Sleep until a wake-up, a message, or a death.
            let ready = {
                let mut objs: Vec<&dyn Waitable> = Vec::with_capacity(1 + 2 * self.workers.len());
                objs.push(&self.wake);
                let sentinels: Result<Vec<_>> = self
                    .workers
                    .iter()
                    .map(|w| w.process.sentinel())
                    .collect::<Result<_>>();
                let Ok(sentinels) = sentinels else {
                    break; // cannot happen: a started, unclosed Process has one
                };
                for (w, s) in self.workers.iter().zip(&sentinels) {
                    objs.push(&w.conn);
                    objs.push(s);
                }
                match wait(&objs, None) {
                    Ok(r) => r,
                    Err(_) => break, // poll itself failed: terminate (drop) rather than spin
                }
            };
            // 4. Handle them: the wake-up pipe, then workers from the last (so a
            // removal does not shift the indices still to handle).
            let mut touched: Vec<(usize, bool)> = Vec::new();
            for &r in &ready {
                if r == 0 {
                    let mut buf = [0u8; 64];
                    while matches!(rustix::io::read(&self.wake, &mut buf), Ok(n) if n > 0) {}
                } else {
                    let i = (r - 1) / 2;
                    let sentinel = (r - 1) % 2 == 1;
                    match touched.last_mut() {
                        Some((j, s)) if *j == i => *s |= sentinel,
                        _ => touched.push((i, sentinel)),
                    }
                }
            }
            for &(i, sentinel) in touched.iter().rev() {
                self.service(i, sentinel);
            }
        }
        // Terminating or finished: the drop stops what is left.
    }

    /// Reads worker `i`'s messages; buries it if it is gone.
    fn service(&mut self, i: usize, sentinel: bool) {
        let mut gone = sentinel;
        loop {
            let w = &mut self.workers[i];
            match w.conn.poll(Some(Duration::ZERO)) {
                Ok(true) => match w.conn.recv::<FromWorker>() {
                    Ok(msg) => self.handle(i, msg),
                    Err(_) => {
                        gone = true;
                        break;
                    }
                },
                Ok(false) => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        if gone {
            self.bury(i);
        }
    }

    fn handle(&mut self, i: usize, msg: FromWorker) {
        let w = &mut self.workers[i];
        match msg {
            FromWorker::InitPanicked(message) => {
                w.leaving = true;
                let pid = w.process.pid().unwrap_or(0);
                let why = format!("the initializer panicked in worker {pid}: {message}");
                // A task given to it before this message arrived never ran.
                if let Some(t) = w.held.take() {
                    t.job.resolve(t.chunk, Err(Failure::Broken(why.clone())));
                }
                self.shared.lock().broken.get_or_insert(why);
            }
            FromWorker::Done {
                job,
                chunk,
                outcome,
                last,
            } => {
                w.leaving |= last;
                let Some(t) = w
                    .held
                    .take_if(|t| t.job.id == job && t.chunk == chunk as usize)
                else {
                    return; // not the task it holds: ignore (never sent by our workers)
                };
                let result = match outcome {
                    Outcome::Ok(bytes) => Ok(bytes),
                    Outcome::Panicked { index, message } => Err(Failure::Panicked {
                        item: t.job.ranges[t.chunk].start + index as usize,
                        message,
                    }),
                    Outcome::Refused(why) => Err(Failure::Refused(why)),
                };
                t.job.resolve(t.chunk, result);
            }
        }
    }

    /// Worker `i` is gone (or going): reap it, fail or requeue its task, and fork a
    /// replacement if tasks may still come or remain.
    fn bury(&mut self, i: usize) {
        let mut w = self.workers.swap_remove(i);
        // It may have closed its connection and still run: make sure it is gone.
        let _ = w.process.kill();
        let code = w.process.join(Some(REAP_BOUND)).ok().flatten();
        let pid = w.process.pid().unwrap_or(0);
        let signal = code.filter(|&c| c < 0).map(|c| -c);
        // A task lost for good is failed only after the replacement is forked and
        // published: a caller woken by `WorkerLost` finds the pool whole again.
        let mut lost = None;
        let need = {
            let mut core = self.shared.lock();
            if let Some(mut t) = w.held.take() {
                t.attempts += 1;
                if t.attempts <= self.config.retries && core.broken.is_none() {
                    core.queue.push_front(t);
                } else {
                    let failure = Failure::Lost {
                        pid,
                        signal,
                        exitcode: code,
                        attempts: t.attempts,
                    };
                    lost = Some((t, failure));
                }
            }
            core.broken.is_none()
                && match core.phase {
                    Phase::Running => true,
                    Phase::Closed => !core.queue.is_empty(),
                    Phase::Terminating | Phase::Finished => false,
                }
        };
        if need && self.workers.len() < self.config.processes {
            match self.spawn() {
                Ok(w) => self.workers.push(w),
                Err(e) => {
                    if self.workers.is_empty() {
                        self.shared.lock().broken.get_or_insert_with(|| {
                            format!("no worker is left and a replacement could not start: {e}")
                        });
                    }
                }
            }
        }
        self.publish_pids();
        if let Some((t, failure)) = lost {
            t.job.resolve(t.chunk, Err(failure));
        }
    }
}

impl Drop for Manager {
    /// Stops every worker left (killed and reaped) and resolves every task not yet
    /// resolved: [`Error::PoolTerminated`], or [`Error::PoolBroken`] if the manager
    /// panicked. Then the pool is `Finished`.
    fn drop(&mut self) {
        let failure = if std::thread::panicking() {
            Failure::Broken("the pool's manager thread panicked".into())
        } else {
            Failure::Terminated
        };
        for w in &self.workers {
            let _ = w.process.kill();
        }
        for mut w in self.workers.drain(..) {
            let _ = w.process.join(Some(REAP_BOUND));
            if let Some(t) = w.held.take() {
                t.job.resolve(t.chunk, Err(failure.clone()));
            }
        }
        let mut core = self.shared.lock();
        for t in core.queue.drain(..) {
            t.job.resolve(t.chunk, Err(failure.clone()));
        }
        core.phase = Phase::Finished;
        core.pids.clear();
        drop(core);
        self.shared.finished.notify_all();
    }
}
