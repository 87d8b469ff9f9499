//! [`Pool`] and [`PoolBuilder`]: worker processes that run plain functions on
//! items, Python's `multiprocessing.Pool`, and a pool that never hangs when a
//! worker dies.
//!
//! # Design
//!
//! Each worker is a daemon [`Process`] with its own duplex [`Connection`] (and,
//! when forked, two shared-memory slots through which its tasks' items and
//! results travel, the connection carrying a few bytes per task: see
//! `worker::Slots`). A
//! manager thread in the pool's process owns the workers and gives each at most
//! two tasks (chunks of items) at a time — the one it runs and a small one sent
//! ahead, so that it goes on without waiting for the manager — and knows exactly
//! which tasks each worker holds, and that only the first can have started. It sleeps in one [`wait`] over a wake-up pipe (new tasks, close,
//! terminate), every worker's connection and every worker's sentinel (pidfd): no
//! polling, and a worker's death is seen as soon as the kernel reports it. A dead
//! worker's running task — only that one — fails with [`Error::WorkerLost`] (or
//! is run again, up to [`PoolBuilder::retries`] times), the task sent ahead to it
//! (never started) goes back to the front of the queue, and a replacement is
//! forked at once.
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
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::pipe::{PipeFlags, pipe_with};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::async_result::{
    AsyncResult, Failure, Fed, Feed, IMapIterator, Job, collect_in_order, decode_all, decode_one,
};
use super::star::StarFn;
use super::worker::{
    self, ArgsRef, Entry, FromWorker, Init, InitFn, Outcome, Slots, ToWorkerRef, Trampoline,
};
use crate::connection::{Waitable, wait};
use crate::error::{Error, Result};
use crate::msg::{Connection, Pipe};
use crate::process::Process;
use crate::spawn::StartMethod;
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
    /// Its first item's index in the job.
    start: usize,
    entry: Entry,
    /// The serialized items (a postcard `Vec`) are `args[from..]`.
    args: Vec<u8>,
    from: usize,
    /// Times it was given to a worker that then died.
    attempts: u32,
    /// Its slot in the worker that holds it (see `worker::Slots`), if any.
    slot: Option<u8>,
}

impl Task {
    /// Its serialized items.
    fn args(&self) -> &[u8] {
        &self.args[self.from..]
    }
}

/// What the callers and the manager share, under one lock.
struct Core {
    queue: VecDeque<Task>,
    /// Lazy imap jobs that may still queue tasks (their feeders are alive): a
    /// closed pool waits for them before it stops its workers.
    feeding: usize,
    phase: Phase,
    /// Set when the pool can run no more tasks (see [`Error::PoolBroken`]).
    broken: Option<String>,
    /// Pids of the live workers.
    pids: Vec<u32>,
}

/// A lazy imap's registration in [`Core::feeding`], dropped with its feeder.
struct Feeding(Arc<Shared>);

impl Drop for Feeding {
    fn drop(&mut self) {
        self.0.lock().feeding -= 1;
        self.0.wake();
    }
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
    initializer: Option<Init>,
    maxtasksperchild: Option<usize>,
    retries: u32,
    method: StartMethod,
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
    initializer: Option<Init>,
    maxtasksperchild: Option<usize>,
    retries: u32,
    method: Option<StartMethod>,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("initializer", &self.initializer.is_some())
            .field("maxtasksperchild", &self.maxtasksperchild)
            .field("retries", &self.retries)
            .field("method", &self.method)
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

    /// How the workers start (Python's `get_context(method).Pool()`; default:
    /// fork, whatever [`set_start_method`](crate::set_start_method) says, since an
    /// [`initializer`](Self::initializer) closure needs fork). Under spawn and
    /// forkserver each worker is a new image of this executable (the binary calls
    /// [`spawn::init`](crate::spawn::init) first in `main`): its connection to the
    /// pool travels as a token and each task's function as an offset checked
    /// against the executable. An initializer closure is then refused by `build`:
    /// give a plain function and its arguments to
    /// [`initializer_fn`](Self::initializer_fn) instead.
    ///
    /// ```
    /// use multiproc::{Pool, StartMethod};
    /// // A closure initializer cannot cross an exec:
    /// let b = Pool::builder().start_method(StartMethod::Spawn).initializer(|| {});
    /// assert!(b.build().is_err());
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> PoolBuilder {
        self.method = Some(method);
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
        self.initializer = Some(Init::Closure(Arc::new(init)));
        self
    }

    /// A plain function each worker runs once, as `f(args)`, when it starts and
    /// before its first task, under every start method (Python's `initializer`
    /// and `initargs`, a function found by name); replaces an
    /// [`initializer`](Self::initializer) closure. As with tasks, `f` must be a
    /// plain `fn` of this program (no captures): under spawn and forkserver it
    /// travels as its offset in the executable, checked against the worker's
    /// executable and its type, and `args` travel through serde, so shared objects
    /// ([`Value`](crate::Value), [`Queue`](crate::Queue), ...) go as tokens. Each
    /// worker gets its own copy of `args` (replacements from
    /// [`maxtasksperchild`](Self::maxtasksperchild) too).
    ///
    /// A worker that cannot run it (an executable or type that does not match,
    /// arguments that do not import) fails to start: `build` returns
    /// [`Error::Start`] with the reason. If `f` panics, the pool breaks, as with a
    /// closure: unfinished and later tasks fail with [`Error::PoolBroken`] naming
    /// the worker and the panic's message, no worker is started again, and
    /// `close`/`join`/`terminate` work as usual (CPython starts a new worker
    /// forever, each failing the same way, and the pool's calls never return).
    ///
    /// ```
    /// use multiproc::{Pool, Value};
    /// static LEVEL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    /// fn setup((level, started): (u32, Value<u32>)) {
    ///     LEVEL.store(level, std::sync::atomic::Ordering::Relaxed);
    ///     *started.lock().unwrap() += 1;
    /// }
    /// fn level(_: u8) -> u32 { LEVEL.load(std::sync::atomic::Ordering::Relaxed) }
    ///
    /// let started = Value::<u32>::new(0)?;
    /// let pool = Pool::builder()
    ///     .processes(2)
    ///     .initializer_fn(setup, (3, started.clone()))
    ///     .build()?;
    /// assert_eq!(pool.map(level, [0, 0, 0])?, [3, 3, 3]);
    /// pool.close();
    /// assert!(pool.join(Some(std::time::Duration::from_secs(30)))?);
    /// assert_eq!(started.get()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn initializer_fn<A>(mut self, f: fn(A), args: A) -> PoolBuilder
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.initializer = Some(Init::Named(Arc::new(InitFn { f, args })));
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
    /// [`Error::ProcessState`] in a daemon process (daemons have no children);
    /// [`Error::StartMethod`] for an initializer closure under spawn or
    /// forkserver, or a binary that did not call [`spawn::init`](crate::spawn::init);
    /// [`Error::Start`] if a spawn or forkserver worker refused to start (its
    /// initializer or arguments do not resolve in it).
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
        let method = self.method.unwrap_or(StartMethod::Fork);
        if method != StartMethod::Fork && matches!(self.initializer, Some(Init::Closure(_))) {
            return Err(Error::StartMethod(format!(
                "a Pool initializer closure cannot cross an exec into {method} workers: \
                 give a plain fn and its arguments to PoolBuilder::initializer_fn instead"
            )));
        }
        let config = Config {
            processes,
            initializer: self.initializer,
            maxtasksperchild: self.maxtasksperchild,
            retries: self.retries,
            method,
        };
        FnToken::prime();
        let (wake_r, wake_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(|e| Error::io("Pool: creating the manager's wake-up pipe", e))?;
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                queue: VecDeque::new(),
                feeding: 0,
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
            method,
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
/// and results travel through serde (postcard). For per-worker state, use an
/// initializer and statics, or shared objects: a closure
/// ([`initializer`](PoolBuilder::initializer), copied by the fork) or, under
/// every start method, a plain function and its arguments
/// ([`initializer_fn`](PoolBuilder::initializer_fn)).
///
/// **Chunks.** `map`-like calls split the items into chunks (tasks) of
/// `chunksize` items (by default as CPython, about four chunks per worker, but
/// no chunk above about 128 KiB of serialized items — 16 KiB for spawn and
/// forkserver workers — and smaller ones at the end
/// of a job of many chunks, so that the workers end together: see `Chunker`); a
/// worker runs one chunk at a time and sends back its results together, and a
/// busy worker is sent its next small chunk ahead, so that it does not wait for
/// the pool between chunks. [`imap`](Self::imap) takes its items lazily.
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
    /// How its workers start: tasks name their function for it.
    method: StartMethod,
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

/// A `map`'s chunks are queued in batches of this many bytes of serialized items
/// or this many tasks, whichever comes first (see `Pool::submit`).
const SUBMIT_BATCH_BYTES: usize = 64 * 1024;
const SUBMIT_BATCH_TASKS: usize = 256;

/// A job's chunks as `Pool::submit` cuts them: pushed to the job, batched, and
/// queued by [`Cut::flush`].
struct Cut<'a> {
    job: &'a Arc<Job>,
    entry: Entry,
    /// The next chunk's first item.
    start: usize,
    /// Chunks cut so far.
    chunks: usize,
    batch: Vec<Task>,
    batch_bytes: usize,
    feeding: Option<Feeding>,
}

impl Cut<'_> {
    /// Adds `chunk` to the job and the batch.
    fn push(&mut self, chunk: super::codec::SeqWriter) {
        let n = chunk.count();
        let (args, from) = chunk.finish();
        let index = self.job.push_chunk(self.start..self.start + n);
        self.batch_bytes += args.len() - from;
        self.batch.push(Task {
            job: Arc::clone(self.job),
            chunk: index,
            start: self.start,
            entry: self.entry,
            args,
            from,
            attempts: 0,
            slot: None,
        });
        self.start += n;
        self.chunks += 1;
    }

    /// Queues the batch, or fails its tasks if the pool was terminated meanwhile;
    /// the first batch checks that the pool takes the job and registers it as
    /// `feeding`.
    fn flush(&mut self, pool: &Pool, op: &'static str) -> Result<()> {
        let mut core = pool.shared.lock();
        if self.feeding.is_none() {
            accepting(&core, op)?;
            core.feeding += 1;
            self.feeding = Some(Feeding(Arc::clone(&pool.shared)));
        }
        if core.phase == Phase::Finished {
            // Terminated meanwhile: the manager is gone, nothing would run them.
            drop(core);
            for t in self.batch.drain(..) {
                t.job.resolve(t.chunk, Err(Failure::Terminated));
            }
        } else {
            core.queue.extend(self.batch.drain(..));
            drop(core);
            pool.shared.wake();
        }
        self.batch_bytes = 0;
        Ok(())
    }
}

/// Whether the pool takes new calls: [`Error::PoolClosed`] or
/// [`Error::PoolBroken`] if not.
fn accepting(core: &Core, op: &'static str) -> Result<()> {
    if core.phase != Phase::Running {
        return Err(Error::PoolClosed { op });
    }
    match &core.broken {
        Some(why) => Err(Error::PoolBroken {
            reason: why.clone(),
        }),
        None => Ok(()),
    }
}

/// Where a `map`'s items are cut into chunks (tasks), as they are serialized.
///
/// With a `chunksize`, every chunk has that many items (the last one fewer).
/// By default, as CPython, about four chunks per worker, but a chunk of two items
/// or more takes at most a cap of bytes serialized, so that it can be sent
/// ahead (the bytes are counted as the items are written: no estimate, so items
/// bigger than the first ones do not make chunks too big to send ahead). The cap
/// is [`AHEAD_MAX_BYTES`] for workers fed through their sockets, and
/// [`SLOT_CHUNK_BYTES`] for forked workers, whose chunks go through their slots
/// (see `worker::Slots`): a chunk in a slot is sent ahead as a message of a few
/// bytes, whatever its size, and fewer chunks are fewer wake-ups of the manager
/// and the workers. Measured
/// on S7 (1,000,000 items of 0.4 us, 2 workers, a busy machine): 8 chunks of
/// 125,000 items ran at 0.87x the sequential speed, chunks of 2,048 at 1.67x —
/// big chunks go through the sockets in many blocking rounds (a 1 MB message
/// against a buffer of about 200 KB) while the other side may be descheduled, are
/// never sent ahead, and leave a worker idle for up to a whole chunk at the end.
///
/// **Guided tail.** When the byte cap is what sizes the chunks (a job of many
/// chunks), the last ones get smaller, as OpenMP's `guided` schedule: a chunk
/// takes at most 1/(2 x workers) of the items left, but no fewer than the items
/// of [`TAIL_BYTES`] (a quarter of a chunk sent through a socket, 1/32 of one
/// in a slot). The last chunk to end then runs that little alone instead of up
/// to a whole chunk, while the other workers wait, for a few more chunks (about
/// 2 x workers x ln(cap / [`TAIL_BYTES`])). Jobs cut by CPython's rule (few
/// chunks, small items) keep its sizes.
#[derive(Debug, Clone)]
struct Chunker {
    /// Items expected (the input's exact size).
    len: usize,
    processes: usize,
    /// The `chunksize` given.
    fixed: Option<usize>,
    /// Items and bytes of items cut into chunks so far (the mean item size).
    items: usize,
    bytes: usize,
    /// The most bytes of items in a chunk of two items or more.
    cap: usize,
}

/// The bytes of items of the smallest chunk of the guided tail.
const TAIL_BYTES: usize = 4 * 1024;

/// The bytes of items in a default chunk for forked workers (through their
/// slots; see `Chunker`). Measured on S7 (1,000,000 items of 0.4 us, 2 workers):
/// the parent's CPU per map fell from about 22 ms at 16 KiB to about 15 ms.
const SLOT_CHUNK_BYTES: usize = 128 * 1024;

impl Chunker {
    /// `cap`: the most bytes of items in a default chunk of two items or more.
    fn new(len: usize, processes: usize, fixed: Option<usize>, cap: usize) -> Chunker {
        Chunker {
            len,
            processes: processes.max(1),
            fixed,
            items: 0,
            bytes: 0,
            cap,
        }
    }

    /// CPython's default chunk size: about four chunks per worker.
    fn cpython(&self) -> usize {
        self.len.div_ceil(self.processes * 4).max(1)
    }

    /// The most items the chunk that starts at item `start` takes.
    fn items_at(&self, start: usize) -> usize {
        if let Some(n) = self.fixed {
            return n;
        }
        let cpython = self.cpython();
        if self.bytes == 0 {
            return cpython;
        }
        // A full chunk at the mean item size so far.
        let full = (self.cap as u128 * self.items as u128 / self.bytes as u128).max(1);
        let full = usize::try_from(full).unwrap_or(usize::MAX);
        if full >= cpython {
            return cpython; // cut by CPython's rule: no taper
        }
        let rest = self.len.saturating_sub(start);
        rest.div_ceil(2 * self.processes)
            .clamp((full * TAIL_BYTES / self.cap).max(1), full)
    }

    /// Whether a chunk whose items take `bytes` is too big for two items or more.
    fn over_bytes(&self, bytes: usize) -> bool {
        self.fixed.is_none() && bytes > self.cap
    }

    /// Records a chunk cut of `items` items taking `bytes`.
    fn cut(&mut self, items: usize, bytes: usize) {
        self.items += items;
        self.bytes += bytes;
    }
}

/// Serializes `items` into chunks cut where `chunker` says, in order, and gives
/// each to `sink` as it is cut (`codec` names a serialization error).
fn cut_items<T: Serialize>(
    items: impl Iterator<Item = T>,
    chunker: &mut Chunker,
    codec: impl Fn(postcard::Error) -> Error,
    mut sink: impl FnMut(super::codec::SeqWriter) -> Result<()>,
) -> Result<()> {
    use super::codec::SeqWriter;
    let room = if chunker.fixed.is_some() {
        0
    } else {
        chunker.cap
    };
    let mut chunk = SeqWriter::new(room);
    let mut start = 0usize;
    let mut limit = chunker.items_at(0);
    for item in items {
        let at = chunk.end();
        chunk.push(&item).map_err(&codec)?;
        let carry = if chunk.count() >= 2 && chunker.over_bytes(chunk.item_bytes()) {
            // Too big: the item starts the next chunk.
            chunk.split_last(at, room)
        } else if chunk.count() >= limit {
            SeqWriter::new(room)
        } else {
            continue;
        };
        let full = std::mem::replace(&mut chunk, carry);
        chunker.cut(full.count(), full.item_bytes());
        start += full.count();
        sink(full)?;
        limit = chunker.items_at(start);
        if chunk.count() >= limit {
            // A carried item alone makes a full chunk (a limit of one).
            let full = std::mem::replace(&mut chunk, SeqWriter::new(room));
            chunker.cut(full.count(), full.item_bytes());
            start += full.count();
            sink(full)?;
            limit = chunker.items_at(start);
        }
    }
    if chunk.count() > 0 {
        chunker.cut(chunk.count(), chunk.item_bytes());
        sink(chunk)?;
    }
    Ok(())
}

/// The bytes of items in a chunk sent ahead (its length prefix aside).
const AHEAD_PAYLOAD: usize = AHEAD_MAX_BYTES - super::codec::PREFIX;

/// The entry of a task for workers started by `method`.
fn task_entry<F: crate::sys::task::FnPtr>(
    method: StartMethod,
    trampoline: Trampoline,
    exec: worker::ExecTrampoline,
    func: F,
) -> Result<Entry> {
    if method == StartMethod::Fork {
        return Ok(Entry::Fork {
            trampoline: FnToken::of(trampoline),
            func: FnToken::of(func),
        });
    }
    let token = crate::sys::task::EntryToken::of(exec, func)
        .map_err(|e| Error::io("Pool: reading /proc/self/exe to name a task", e))?;
    Ok(Entry::Exec { token })
}

/// The entry of a `map`-family task (`fn(T) -> R` over items `T`: map, map_async,
/// imap, imap_unordered) for workers started by `method`.
fn map_entry<T, R>(method: StartMethod, f: fn(T) -> R) -> Result<Entry>
where
    T: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    task_entry(
        method,
        worker::map_trampoline::<T, R> as Trampoline,
        worker::map_exec_trampoline::<T, R> as worker::ExecTrampoline,
        f,
    )
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

    /// Cuts `items` into chunks (see [`Chunker`]) as it serializes them, and
    /// queues them as one job. The chunks are queued in batches as they are cut,
    /// the first ones at once, so that the workers start on the first while the
    /// caller serializes the rest (for a big `map`, the serialization would
    /// otherwise all come before any work). An input of exact size (a slice's
    /// iterator, a range, a `Vec`) is taken item by item, never gathered into a
    /// vector of its own (for S7's 1,000,000 items, 8 MB of fresh pages: about
    /// 5 ms of page faults here before the first task could start); any other
    /// input is gathered first, to know its length.
    fn submit<T: Serialize>(
        &self,
        op: &'static str,
        kind: &'static str,
        entry: Entry,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
        collect: bool,
    ) -> Result<Arc<Job>> {
        self.check_creator(op)?;
        if chunksize == Some(0) {
            return Err(Error::ZeroSize { what: "chunksize" });
        }
        let items = items.into_iter();
        match items.size_hint() {
            (lo, Some(hi)) if lo == hi => {
                self.submit_exact(op, kind, entry, items, lo, chunksize, collect)
            }
            _ => {
                let items: Vec<T> = items.collect();
                let len = items.len();
                self.submit_exact(op, kind, entry, items.into_iter(), len, chunksize, collect)
            }
        }
    }

    /// [`submit`](Self::submit) of an input of `len` items (if it says more or
    /// fewer, only the chunk sizes suffer).
    #[allow(clippy::too_many_arguments)]
    fn submit_exact<T: Serialize>(
        &self,
        op: &'static str,
        kind: &'static str,
        entry: Entry,
        items: impl Iterator<Item = T>,
        len: usize,
        chunksize: Option<usize>,
        collect: bool,
    ) -> Result<Arc<Job>> {
        let codec = |e: postcard::Error| Error::Codec {
            op,
            what: "serialize the items",
            reason: e.to_string(),
        };
        let cap = if self.method == StartMethod::Fork {
            SLOT_CHUNK_BYTES
        } else {
            AHEAD_PAYLOAD
        };
        let mut chunker = Chunker::new(len, self.processes, chunksize, cap);

        let id = self.shared.next_job.fetch_add(1, Ordering::Relaxed);
        // `collect`: read in order as it resolves, by `collect_in_order`, woken
        // about 32 times (the number of chunks is known after the first).
        let every = |chunks: usize| {
            if collect {
                Job::collect_every(chunks)
            } else {
                0
            }
        };
        let job = Arc::new(Job::open(
            id,
            kind,
            every(chunksize.map_or(1, |c| len.div_ceil(c))),
        ));
        let mut cut = Cut {
            job: &job,
            entry,
            start: 0,
            chunks: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            // Registered as feeding from the first batch to the end, so that a
            // pool closed meanwhile still runs the whole job (it was accepted).
            feeding: None,
        };
        cut_items(items, &mut chunker, codec, |chunk| {
            if cut.chunks == 0 && collect && chunksize.is_none() {
                job.set_notify_every(every(len.div_ceil(chunk.count())));
            }
            cut.push(chunk);
            // The first chunks go together, one per worker, as soon as they are
            // cut, then in batches. Together: flushed one at a time, the
            // manager woke for the first while this thread cut the second, and
            // was woken again while this thread and the first worker held both
            // CPUs (S7 on 2 CPUs: the second worker started about 2.5 ms after
            // the first).
            if cut.chunks == self.processes
                || (cut.chunks > self.processes
                    && (cut.batch_bytes >= SUBMIT_BATCH_BYTES
                        || cut.batch.len() >= SUBMIT_BATCH_TASKS))
            {
                cut.flush(self, op)?;
            }
            Ok(())
        })?;
        if cut.batch.is_empty() && cut.feeding.is_none() {
            // No item: the call is still refused by a closed pool.
            accepting(&self.shared.lock(), op)?;
        } else if !cut.batch.is_empty() {
            cut.flush(self, op)?;
        }
        job.seal();
        drop(cut);
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
        let entry = map_entry(self.method, f)?;
        let job = self.submit("apply_async", "apply", entry, vec![arg], Some(1), false)?;
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
        self.map_collect(f, items, None)
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
        self.map_collect(f, items, Some(chunksize))
    }

    /// The blocking map: its results decoded as they come (see
    /// `collect_in_order`).
    fn map_collect<T, R>(
        &self,
        f: fn(T) -> R,
        items: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = map_entry(self.method, f)?;
        let job = self.submit("map", "map", entry, items, chunksize, true)?;
        collect_in_order(&job)
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
        let entry = map_entry(self.method, f)?;
        let job = self.submit("map_async", "map", entry, items, chunksize, false)?;
        Ok(AsyncResult::new(job, decode_all::<R>))
    }

    /// `f` on every item, as an iterator of results in the items' order (Python's
    /// `imap`); `chunksize` `None` is 1, as in Python. The items are taken
    /// lazily, a chunk at a time, as the iterator is advanced and workers free
    /// up, at most [`IMAP_LOOKAHEAD`](Self::IMAP_LOOKAHEAD) chunks per worker
    /// ahead of the results handed out: an endless input works. A panic in the
    /// input iterator is an error after the results of the items before it. The
    /// input iterator must be `Send` (the returned iterator holds it, and may move
    /// to another thread); it may borrow.
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`], [`Error::PoolBroken`], [`Error::ZeroSize`]; then,
    /// from the iterator, each item's failure, [`Error::Codec`] for an item that
    /// does not serialize and [`Error::TaskPanicked`] if the input panicked (both
    /// end the iteration).
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// let mut it = pool.imap(square, 0..4, Some(3))?;
    /// assert_eq!(it.next().unwrap()?, 0);
    /// let rest: Vec<u64> = it.collect::<Result<_, _>>()?;
    /// assert_eq!(rest, [1, 4, 9]);
    /// // An endless input: only what is needed is taken.
    /// let first: Vec<u64> = pool.imap(square, 0.., None)?.take(5).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4, 9, 16]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<'a, T, R>(
        &self,
        f: fn(T) -> R,
        items: impl IntoIterator<Item = T, IntoIter: Send + 'a>,
        chunksize: Option<usize>,
    ) -> Result<IMapIterator<'a, R>>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = map_entry(self.method, f)?;
        self.lazy("imap", "imap", entry, items, chunksize, true)
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
    pub fn imap_unordered<'a, T, R>(
        &self,
        f: fn(T) -> R,
        items: impl IntoIterator<Item = T, IntoIter: Send + 'a>,
        chunksize: Option<usize>,
    ) -> Result<IMapIterator<'a, R>>
    where
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = map_entry(self.method, f)?;
        self.lazy(
            "imap_unordered",
            "imap_unordered",
            entry,
            items,
            chunksize,
            false,
        )
    }

    /// Chunks of input an [`imap`](Self::imap) keeps queued ahead of the results
    /// handed out, per worker.
    ///
    /// ```
    /// assert!(multiproc::Pool::IMAP_LOOKAHEAD >= 1);
    /// ```
    pub const IMAP_LOOKAHEAD: usize = 4;

    /// A lazy imap job: an iterator that queues the input a chunk at a time.
    fn lazy<'a, T: Serialize + 'static, R: DeserializeOwned>(
        &self,
        op: &'static str,
        kind: &'static str,
        entry: Entry,
        items: impl IntoIterator<Item = T, IntoIter: Send + 'a>,
        chunksize: Option<usize>,
        ordered: bool,
    ) -> Result<IMapIterator<'a, R>> {
        self.check_creator(op)?;
        let chunksize = match chunksize {
            Some(0) => return Err(Error::ZeroSize { what: "chunksize" }),
            Some(n) => n,
            None => 1,
        };
        let id = self.shared.next_job.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job::new(id, kind, Vec::new(), 1));
        {
            let mut core = self.shared.lock();
            accepting(&core, op)?;
            core.feeding += 1;
        }
        let feed = LazyFeed {
            items: items.into_iter().fuse(),
            shared: Feeding(Arc::clone(&self.shared)),
            job: Arc::clone(&job),
            entry,
            chunksize,
            start: 0,
            failed: None,
            op,
            kind,
        };
        Ok(IMapIterator::new(
            job,
            ordered,
            Box::new(feed),
            Self::IMAP_LOOKAHEAD * self.processes,
        ))
    }

    /// `f(a, b, ..)` for every tuple of arguments, results in order (Python's
    /// `starmap`), for plain functions of one to four arguments ([`StarFn`]):
    /// write the function as a pointer, `f as fn(_, _) -> _` (one `_` per
    /// argument; with untyped integer literals in the items, name the types:
    /// `f as fn(u64, u32) -> u64`).
    ///
    /// # Errors
    ///
    /// As [`map`](Self::map).
    ///
    /// ```
    /// fn pow(base: u64, exp: u32) -> u64 { base.pow(exp) }
    /// fn clamp(x: i32, lo: i32, hi: i32) -> i32 { x.clamp(lo, hi) }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap(pow as fn(_, _) -> _, [(2u64, 3u32), (3, 2), (10, 0)])?, [8u64, 9, 1]);
    /// assert_eq!(pool.starmap(clamp as fn(i32, i32, i32) -> i32, [(5, 0, 3), (-1, 0, 3)])?, [3, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<F: StarFn>(
        &self,
        f: F,
        items: impl IntoIterator<Item = F::Args>,
    ) -> Result<Vec<F::Output>> {
        let entry = self.star_entry(f)?;
        let job = self.submit("starmap", "starmap", entry, items, None, true)?;
        collect_in_order(&job)
    }

    /// The entry of a `starmap` task of `f`.
    fn star_entry<F: StarFn>(&self, f: F) -> Result<Entry> {
        task_entry(
            self.method,
            worker::star_trampoline::<F> as Trampoline,
            worker::star_exec_trampoline::<F> as worker::ExecTrampoline,
            f,
        )
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
    /// let r = pool.starmap_async(add as fn(i32, i32) -> i32, [(1, 2), (3, 4)], Some(1))?;
    /// assert_eq!(r.get(Some(Duration::from_secs(30)))?, [3, 7]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_async<F: StarFn>(
        &self,
        f: F,
        items: impl IntoIterator<Item = F::Args>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<F::Output>>> {
        let entry = self.star_entry(f)?;
        let job = self.submit("starmap_async", "starmap", entry, items, chunksize, false)?;
        Ok(AsyncResult::new(job, decode_all::<F::Output>))
    }

    /// Takes no more tasks; the queued ones still run, then the workers exit
    /// (Python's `close`). Does not wait: [`join`](Self::join) does. An
    /// [`imap`](Self::imap) started before goes on taking its input: the workers
    /// exit once its input has ended or its iterator is dropped.
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

/// Tasks a worker may hold at once: the one it runs and one sent ahead, waiting
/// in its connection, so that it starts the next task without a round trip
/// through the manager.
const HELD_MAX: usize = 2;

/// The largest task (its serialized items) sent ahead to a worker that already
/// holds one. Both sides send blocking: a worker that sends a big result while the
/// manager sends it a big second task would wait for the manager, which waits for
/// the worker to read — a deadlock. A task this small fits in the socket's buffer
/// (over 100 KiB) beside nothing else (the worker has read its first task whole
/// before it runs it), so sending it never blocks. Big tasks have work enough to
/// hide the round trip.
const AHEAD_MAX_BYTES: usize = 16 * 1024;

/// A lazy imap's input: takes a chunk of items at a time and queues it as a task
/// of the job (see [`Feed`]).
struct LazyFeed<I> {
    items: std::iter::Fuse<I>,
    /// Its registration: a closed pool does not finish while it lives.
    shared: Feeding,
    job: Arc<Job>,
    entry: Entry,
    chunksize: usize,
    /// The next item's index.
    start: usize,
    /// The input's failure, given after the chunk taken before it.
    failed: Option<Error>,
    op: &'static str,
    kind: &'static str,
}

impl<I: Iterator<Item: Serialize>> Feed for LazyFeed<I> {
    fn feed(&mut self) -> Fed {
        if let Some(e) = self.failed.take() {
            return Fed::Failed(e);
        }
        let mut chunk = Vec::with_capacity(self.chunksize);
        while chunk.len() < self.chunksize {
            // The caller's iterator may panic: that ends the input with an
            // error (the caller's thread must not unwind through the pool).
            match catch_unwind(AssertUnwindSafe(|| self.items.next())) {
                Ok(Some(x)) => chunk.push(x),
                Ok(None) => break,
                Err(p) => {
                    self.failed = Some(Error::TaskPanicked {
                        task: format!(
                            "the input iterator of {} job {}, at item {}",
                            self.kind,
                            self.job.id,
                            self.start + chunk.len()
                        ),
                        message: worker::panic_message(&*p),
                    });
                    break;
                }
            }
        }
        if chunk.is_empty() {
            return self.failed.take().map_or(Fed::End, Fed::Failed);
        }
        let args = match super::codec::encode(&chunk) {
            Ok(a) => a,
            Err(e) => {
                return Fed::Failed(Error::Codec {
                    op: self.op,
                    what: "serialize the items",
                    reason: e.to_string(),
                });
            }
        };
        let range = self.start..self.start + chunk.len();
        self.start = range.end;
        let index = self.job.push_chunk(range.clone());
        let task = Task {
            job: Arc::clone(&self.job),
            chunk: index,
            start: range.start,
            entry: self.entry,
            args,
            from: 0,
            attempts: 0,
            slot: None,
        };
        let shared = &self.shared.0;
        let mut core = shared.lock();
        if core.phase == Phase::Finished {
            // The manager is gone: nothing would run it.
            drop(core);
            self.job.resolve(index, Err(Failure::Terminated));
        } else {
            core.queue.push_back(task);
            drop(core);
            shared.wake();
        }
        Fed::Chunk(range.len())
    }

    fn input_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

/// A worker as the manager sees it.
struct Worker {
    process: Process,
    conn: Connection,
    /// The tasks sent to it, in the order sent, which is the order it runs and
    /// answers them (at most [`HELD_MAX`]): the first is the one it runs (or
    /// reads), the others wait unread in its connection. A worker starts a task
    /// only after it has sent the `Done` of the one before, so when it dies with
    /// all its messages read, only the first can have been started.
    held: VecDeque<Task>,
    /// The areas it shares with the pool (forked workers): a held task's items
    /// and results go through its slot when they fit.
    slots: Option<Slots>,
    /// Tasks it may still be sent: `maxtasksperchild` minus those sent (`None`:
    /// unlimited). It exits right after its last one, so it is never sent a task
    /// it will not run.
    budget: Option<usize>,
    /// It will exit without another task (it was told to stop, reached
    /// `maxtasksperchild`, or its initializer panicked): give it nothing.
    leaving: bool,
}

impl Worker {
    /// Whether it may be sent `t` when it holds `held` tasks and may be sent
    /// `budget` more.
    fn may_take(&self, held: usize, budget: Option<usize>, t: &Task) -> bool {
        !self.leaving
            && budget != Some(0)
            && (held == 0 || (held < HELD_MAX && self.sends_small(t)))
    }

    /// Whether sending `t` never blocks: its items go in a slot (the message is a
    /// few bytes) or are at most [`AHEAD_MAX_BYTES`].
    fn sends_small(&self, t: &Task) -> bool {
        let len = t.args().len();
        (self.slots.is_some() && Slots::fits(len)) || len <= AHEAD_MAX_BYTES
    }

    /// Sends it `t` (through a free slot when it has one and the items fit) and
    /// holds `t`. A send that fails means the worker is gone: the task stays held,
    /// and its end of file buries the worker.
    fn send(&mut self, mut t: Task) {
        t.slot = self.slots.as_ref().and_then(|_| {
            (0..worker::SLOTS as u8).find(|s| !self.held.iter().any(|h| h.slot == Some(*s)))
        });
        let args = match (&self.slots, t.slot) {
            (Some(slots), Some(slot)) if Slots::fits(t.args().len()) => {
                slots.write(slot, t.args());
                ArgsRef::InSlot(t.args().len() as u32)
            }
            _ => ArgsRef::Inline(t.args()),
        };
        let _ = self.conn.send(&ToWorkerRef::Run {
            job: t.job.id,
            chunk: t.chunk as u32,
            entry: t.entry,
            slot: t.slot,
            args,
        });
        if let Some(b) = &mut self.budget {
            *b -= 1;
        }
        self.held.push_back(t);
    }
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
        let max = self.config.maxtasksperchild;
        self.started += 1;
        let mut slots = None;
        let mut process = match (self.config.method, &self.config.initializer) {
            (StartMethod::Fork, init) => {
                let init = match init {
                    None => None,
                    Some(Init::Closure(c)) => Some(Arc::clone(c)),
                    Some(Init::Named(n)) => Some(n.closure()),
                };
                // Mapped before the fork: the worker inherits the mapping.
                let theirs_slots = Slots::new()
                    .map_err(|e| Error::io("Pool: creating a worker's task slots", e))?;
                slots = Some(theirs_slots.clone());
                Process::new(move || {
                    worker::run(
                        theirs,
                        init.map(|i| Box::new(move || i()) as _),
                        max,
                        Some(theirs_slots),
                    )
                })
                .with_name(format!("ForkPoolWorker-{}", self.started))
            }
            (m, init) => match init {
                Some(Init::Named(n)) => Process::from_call(n.worker_call(theirs, max)),
                // (`build` refuses a closure for these methods.)
                _ => Process::entry(worker::exec_worker, (theirs, max)),
            }
            .with_start_method(m)
            .with_name(format!(
                "{}PoolWorker-{}",
                if m == StartMethod::Spawn {
                    "Spawn"
                } else {
                    "Forkserver"
                },
                self.started
            )),
        }
        .daemon(true);
        process.start()?;
        Ok(Worker {
            process,
            conn: ours,
            held: VecDeque::with_capacity(HELD_MAX),
            slots,
            budget: max,
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
            // 1. Under the lock: the phase, and tasks for the workers: first one
            // to each idle worker, then one ahead to each busy one (an idle worker
            // never waits while a busy one is given a second task).
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
                // What each worker will hold and may still be sent, this round's
                // tasks included.
                let mut load: Vec<(usize, Option<usize>)> = self
                    .workers
                    .iter()
                    .map(|w| (w.held.len(), w.budget))
                    .collect();
                for depth in 0..HELD_MAX {
                    for (i, w) in self.workers.iter().enumerate() {
                        let Some(t) = core.queue.front() else { break };
                        let (held, budget) = &mut load[i];
                        if *held == depth && w.may_take(*held, *budget, t) {
                            *held += 1;
                            if let Some(b) = budget {
                                *b -= 1;
                            }
                            assigned.extend(core.queue.pop_front().map(|t| (i, t)));
                        }
                    }
                }
                core.phase == Phase::Closed && core.queue.is_empty() && core.feeding == 0
            };
            // 2. Hand them out (in the order assigned: a worker's first task
            // before its second; see `Worker::send`).
            for (i, t) in assigned {
                self.workers[i].send(t);
            }
            if closing {
                for w in &mut self.workers {
                    if w.held.is_empty() && !w.leaving {
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
                // Tasks given to it before this message arrived never ran.
                for t in w.held.drain(..) {
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
                // It answers its tasks in the order they were sent.
                let first = w.held.front();
                if !first.is_some_and(|t| t.job.id == job && t.chunk == chunk as usize) {
                    return; // not the task it runs: ignore (never sent by our workers)
                }
                let Some(t) = w.held.pop_front() else { return };
                let result = match outcome {
                    Outcome::Ok(bytes) => Ok(bytes),
                    Outcome::InSlot(len) => {
                        let mut bytes = Vec::new();
                        match (&w.slots, t.slot) {
                            (Some(slots), Some(slot))
                                if slots.read(slot, len as usize, &mut bytes).is_some() =>
                            {
                                Ok(bytes)
                            }
                            _ => Err(Failure::Refused(format!(
                                "worker {} said its {len} bytes of results were in a slot it does not have",
                                w.process.pid().unwrap_or(0)
                            ))),
                        }
                    }
                    Outcome::Panicked { index, message } => Err(Failure::Panicked {
                        item: t.start + index as usize,
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
            // Those sent ahead were never started (see `Worker::held`): back to the
            // front of the queue, in their order, with no attempt counted.
            while w.held.len() > 1 {
                if let Some(t) = w.held.pop_back() {
                    core.queue.push_front(t);
                }
            }
            if let Some(mut t) = w.held.pop_front() {
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
                    Phase::Closed => !core.queue.is_empty() || core.feeding > 0,
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
        // Its slots go now: a caller woken by `WorkerLost` finds only the live
        // workers' slots mapped.
        drop(w);
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
            for t in w.held.drain(..) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks `cut_items` makes of `items` for `processes` workers: each
    /// chunk's items, decoded from its bytes, checked to be postcard's `Vec`.
    fn chunks_of<T>(items: &[T], processes: usize, chunksize: Option<usize>) -> Vec<(Vec<T>, usize)>
    where
        T: Serialize + DeserializeOwned + Clone,
    {
        chunks_capped(items, processes, chunksize, AHEAD_PAYLOAD)
    }

    /// [`chunks_of`] with default chunks of at most `cap` bytes.
    fn chunks_capped<T>(
        items: &[T],
        processes: usize,
        chunksize: Option<usize>,
        cap: usize,
    ) -> Vec<(Vec<T>, usize)>
    where
        T: Serialize + DeserializeOwned + Clone,
    {
        let mut chunker = Chunker::new(items.len(), processes, chunksize, cap);
        let mut out = Vec::new();
        let codec = |e: postcard::Error| Error::Codec {
            op: "test",
            what: "serialize",
            reason: e.to_string(),
        };
        cut_items(items.iter().cloned(), &mut chunker, codec, |chunk| {
            let (bytes, from) = chunk.finish();
            let v: Vec<T> = postcard::from_bytes(&bytes[from..]).unwrap();
            out.push((v, bytes.len() - from));
            Ok(())
        })
        .unwrap();
        out
    }

    /// Every item once, in order, in chunks of at least one item.
    fn assert_cover<T: PartialEq + std::fmt::Debug + Clone>(
        items: &[T],
        chunks: &[(Vec<T>, usize)],
    ) {
        assert!(chunks.iter().all(|(c, _)| !c.is_empty()));
        let all: Vec<T> = chunks.iter().flat_map(|(c, _)| c.iter().cloned()).collect();
        assert_eq!(all, items);
    }

    /// S7's items: by default, chunks of two items or more fit the cap (the
    /// bytes are counted, so the small first items do not make them too big),
    /// full ones fill most of it, and the last ones taper as `guided`: never
    /// longer than the one before, down to about [`TAIL_BYTES`] of items. For
    /// both caps: the socket's send-ahead one and the slots' one.
    #[test]
    fn default_chunks_fit_the_cap_and_taper_at_the_end() {
        for (cap, len) in [
            (AHEAD_PAYLOAD, 200_000usize),
            (AHEAD_PAYLOAD, 200_001),
            (AHEAD_PAYLOAD, 999_999),
            (SLOT_CHUNK_BYTES, 999_999),
            (SLOT_CHUNK_BYTES, 1_000_000),
        ] {
            assert!(worker::Slots::fits(
                SLOT_CHUNK_BYTES + super::super::codec::PREFIX
            ));
            let items: Vec<i64> = (0..len as i64).map(|x| x * 7 - 3).collect();
            let chunks = chunks_capped(&items, 2, None, cap);
            assert_cover(&items, &chunks);
            for (c, bytes) in &chunks {
                assert!(
                    c.len() == 1 || *bytes <= cap + super::super::codec::PREFIX,
                    "{} items, {bytes} B",
                    c.len()
                );
            }
            // Full chunks fill the cap (to within an item); after the last one,
            // the tail.
            let is_full = |b: usize| b + 16 > cap;
            let last_full = chunks.iter().rposition(|(_, b)| is_full(*b)).unwrap();
            let full = chunks[last_full].0.len();
            let tail: Vec<usize> = chunks[last_full + 1..]
                .iter()
                .map(|(c, _)| c.len())
                .collect();
            assert!(tail.len() >= 4, "{len}: no taper: {tail:?}");
            assert!(tail.windows(2).all(|w| w[1] <= w[0]), "{len}: {tail:?}");
            assert!(tail[0] < full, "{len}: {full} then {tail:?}");
            // Down to about TAIL_BYTES (the mean item size is the whole input's).
            let smallest = tail[..tail.len() - 1].iter().min().unwrap();
            let least = full * TAIL_BYTES / cap;
            assert!(
                *smallest <= least * 4 / 3 && *smallest >= least * 4 / 5,
                "{len}: {full} then {tail:?}"
            );
        }
        // Items whose first ones are small (2 bytes, the rest 5): still within the cap.
        let items: Vec<u64> = (0..200_000u64)
            .map(|i| if i < 1_000 { i % 100 } else { 1 << 30 })
            .collect();
        let chunks = chunks_of(&items, 2, None);
        assert_cover(&items, &chunks);
        assert!(
            chunks
                .iter()
                .all(|(c, b)| c.len() == 1 || *b <= AHEAD_MAX_BYTES)
        );
    }

    /// Few items: CPython's sizes, about four chunks per worker, no taper; an
    /// item bigger than the cap goes alone; a chunksize given is kept exactly.
    #[test]
    fn small_jobs_get_cpythons_chunks_and_a_chunksize_is_kept() {
        let items: Vec<u64> = (0..20_000).collect();
        let sizes: Vec<usize> = chunks_of(&items, 2, None)
            .iter()
            .map(|(c, _)| c.len())
            .collect();
        assert_eq!(sizes, [2_500; 8]);
        for len in [0usize, 1, 2, 7, 9] {
            let items: Vec<u32> = (0..len as u32).collect();
            let chunks = chunks_of(&items, 2, None);
            assert_cover(&items, &chunks);
            let cpython = len.div_ceil(8).max(1);
            assert!(chunks.iter().all(|(c, _)| c.len() <= cpython), "{len}");
            assert_eq!(chunks.len(), len.div_ceil(cpython), "{len}");
        }
        let big = vec![
            vec![7u8; AHEAD_MAX_BYTES],
            vec![1],
            vec![2],
            vec![9u8; AHEAD_MAX_BYTES * 2],
        ];
        let chunks = chunks_of(&big, 1, None);
        assert_cover(&big, &chunks);
        assert!(
            chunks
                .iter()
                .all(|(c, b)| c.len() == 1 || *b <= AHEAD_MAX_BYTES)
        );
        let items: Vec<i64> = (0..100_000).collect();
        for cs in [1usize, 3, 4_096, 30_000, 100_000, 200_000] {
            let chunks = chunks_of(&items, 2, Some(cs));
            assert_cover(&items, &chunks);
            let (last, rest) = chunks.split_last().unwrap();
            assert!(rest.iter().all(|(c, _)| c.len() == cs), "{cs}");
            assert_eq!(last.0.len(), items.len() - cs * rest.len(), "{cs}");
        }
    }

    fn no_setup(_: u32) {}

    /// A by-name initializer a worker cannot resolve (here: a forged type) fails
    /// the worker's start, so `build` returns the reason instead of a pool whose
    /// calls would hang or fail later.
    #[test]
    fn an_initializer_fn_a_worker_cannot_resolve_fails_build() {
        crate::spawn::init();
        for method in [StartMethod::Spawn, StartMethod::Forkserver] {
            crate::spawn::launch::FORGE.with(|f| f.set(2));
            let r = Pool::builder()
                .processes(1)
                .start_method(method)
                .initializer_fn(no_setup, 5)
                .build();
            crate::spawn::launch::FORGE.with(|f| f.set(0));
            match r {
                Err(Error::Start { reason, .. }) => assert!(
                    reason.contains("Pool initializer") && reason.contains("type fingerprint"),
                    "{method}: {reason}"
                ),
                other => panic!("{method}: {other:?}"),
            }
        }
    }
}
