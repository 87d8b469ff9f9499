//! The worker side of a [`Pool`](crate::Pool): the messages on a worker's
//! connection, the trampolines that run a task's plain function, and the loop a
//! worker process runs.
//!
//! # Protocol (one duplex connection per worker)
//!
//! - Worker → pool, once at start: nothing if the initializer ran, or
//!   [`FromWorker::InitPanicked`] (then it exits).
//! - Pool → worker: [`ToWorker::Run`] while the worker holds fewer than two tasks
//!   (the one it runs, and one sent ahead that waits unread in the connection),
//!   never more than `maxtasksperchild` in all; or [`ToWorker::Stop`] when it
//!   holds none. The worker reads and runs them in order, and reads the next only
//!   after it has sent the `Done` of the one before: so the pool knows that of the
//!   tasks a dead worker held, only the first can have started.
//! - Worker → pool: [`FromWorker::Done`] for the task it held, with `last` set when
//!   it reached `maxtasksperchild` and exits right after (so the pool never gives
//!   it another task).
//!
//! End of file on the connection in the worker means the pool is gone: the worker
//! exits. End of file in the pool means the worker is gone (see `pool.rs`).
//!
//! # Slots (forked workers)
//!
//! A forked worker shares [`Slots`] with the pool: a memfd of [`SLOTS`] areas of
//! [`SLOT_BYTES`], one per task it may hold, mapped before the fork. A task names
//! its slot ([`ToWorkerRef::Run`]'s `slot`, never the slot of the other task the
//! worker holds); its items go there instead of through the socket when they fit
//! ([`ArgsRef::InSlot`]), and its results come back there when they fit
//! ([`Outcome::InSlot`]), so that the socket carries only a few bytes per task:
//! no kernel copies, no blocking rounds for big chunks. A slot has one user at a
//! time: the pool writes the items before it sends the task and reads the
//! results after the `Done` arrives; the worker reads the items (into its own
//! memory) before it runs them and writes the results before it sends `Done`.
//! The pool gives the slot to another task only after that `Done`, or after the
//! worker is dead and reaped. The socket's send and receive order the writes.
//! Items or results too big for a slot go through the socket as before.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::msg::Connection;
use crate::spawn::wire::{self, Call, Exported};
use crate::sys::mem::Mapping;
use crate::sys::task::{EntryToken, FnToken};

/// Areas of a worker's [`Slots`]: one per task it may hold (the pool's `HELD_MAX`).
pub(crate) const SLOTS: usize = 2;

/// Bytes of one slot: room for the items of a default chunk (at most 128 KiB,
/// see the pool's `Chunker`) and results up to four times as big. Pages are
/// touched only as far as a task uses them.
pub(crate) const SLOT_BYTES: usize = 512 * 1024;

/// The shared areas of one forked worker and its pool (see the module). An
/// anonymous memfd, mapped before the fork: nothing in `/dev/shm`, and its memory
/// goes with the last mapping (the pool drops its own when it buries the worker).
#[derive(Clone)]
pub(crate) struct Slots(Arc<Mapping>);

impl Slots {
    pub(crate) fn new() -> std::io::Result<Slots> {
        let len = SLOTS * SLOT_BYTES;
        let fd = crate::sys::mem::memfd("multiproc-pool-slots", len as u64)?;
        // The mapping outlives the descriptor, which is closed here.
        Ok(Slots(Arc::new(Mapping::new(&fd, len)?)))
    }

    /// Whether `len` bytes fit in a slot.
    pub(crate) fn fits(len: usize) -> bool {
        len <= SLOT_BYTES
    }

    /// Writes `bytes` (which fit) at the start of slot `slot`.
    pub(crate) fn write(&self, slot: u8, bytes: &[u8]) {
        debug_assert!(Self::fits(bytes.len()) && (slot as usize) < SLOTS);
        self.0.write_bytes(slot as usize * SLOT_BYTES, bytes);
    }

    /// The first `len` bytes of slot `slot`, into `out` (resized to `len`), or
    /// `None` for a slot or length out of range.
    pub(crate) fn read(&self, slot: u8, len: usize, out: &mut Vec<u8>) -> Option<()> {
        if (slot as usize) >= SLOTS || !Self::fits(len) {
            return None;
        }
        out.clear();
        out.resize(len, 0);
        self.0.read_bytes(slot as usize * SLOT_BYTES, out);
        Some(())
    }
}

/// The initializer closure a forked worker runs once, before its first task.
pub(crate) type Initializer = Arc<dyn Fn() + Send + Sync + 'static>;

/// A pool's initializer, as its builder was given it.
#[derive(Clone)]
pub(crate) enum Init {
    /// A closure ([`PoolBuilder::initializer`](crate::PoolBuilder::initializer)):
    /// fork only, copied into each worker by the fork.
    Closure(Initializer),
    /// A plain function and serde arguments
    /// ([`PoolBuilder::initializer_fn`](crate::PoolBuilder::initializer_fn)):
    /// every start method.
    Named(Arc<dyn NamedInit>),
}

/// A by-name initializer, its argument type erased.
pub(crate) trait NamedInit: Send + Sync {
    /// The call, for a forked worker.
    fn closure(&self) -> Initializer;
    /// The whole worker process (its initializer, then its loop on `conn`), for a
    /// worker started by spawn or forkserver.
    fn worker_call(&self, conn: Connection, maxtasks: Option<usize>) -> Box<dyn Call>;
}

/// `f(args)`, a by-name initializer.
pub(crate) struct InitFn<A> {
    pub(crate) f: fn(A),
    pub(crate) args: A,
}

impl<A> NamedInit for InitFn<A>
where
    A: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn closure(&self) -> Initializer {
        let (f, args) = (self.f, self.args.clone());
        Arc::new(move || f(args.clone()))
    }

    fn worker_call(&self, conn: Connection, maxtasks: Option<usize>) -> Box<dyn Call> {
        Box::new(InitWorker {
            init: self.f,
            args: self.args.clone(),
            conn,
            maxtasks,
        })
    }
}

/// The process of a worker with a by-name initializer, started by spawn or
/// forkserver. Its entry token names the initializer itself, run through
/// [`init_worker_trampoline`]: the child resolves the initializer (checked
/// against the executable and its type, as any spawn entry) and imports its
/// arguments before it says it is ready, so an initializer it cannot run fails
/// the worker's start (`PoolBuilder::build`'s error), never a task.
struct InitWorker<A> {
    init: fn(A),
    args: A,
    conn: Connection,
    maxtasks: Option<usize>,
}

impl<A> Call for InitWorker<A>
where
    A: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn token(&self) -> std::io::Result<EntryToken> {
        EntryToken::of(init_worker_trampoline::<A> as wire::Trampoline, self.init)
    }

    fn export(&self) -> crate::Result<Exported> {
        crate::token::export(&(&self.conn, self.maxtasks, &self.args))
    }

    fn into_closure(self: Box<Self>) -> Box<dyn FnOnce() + Send> {
        let InitWorker {
            init,
            args,
            conn,
            maxtasks,
        } = *self;
        Box::new(move || run(conn, Some(Box::new(move || init(args))), maxtasks, None))
    }
}

/// In a worker started by spawn or forkserver: resolves the initializer `token`
/// names and imports the worker's connection, `maxtasksperchild` and the
/// initializer's arguments; the worker then runs [`run`] with them.
fn init_worker_trampoline<A: DeserializeOwned + 'static>(
    token: EntryToken,
    exported: Exported,
) -> std::result::Result<Box<dyn FnOnce()>, String> {
    let init = token
        .func::<fn(A)>()
        .map_err(|why| format!("the Pool initializer: {why}"))?;
    let (conn, maxtasks, args): (Connection, Option<usize>, A) = crate::token::import(exported)
        .map_err(|e| {
            format!("importing the Pool worker's connection and initializer arguments: {e}")
        })?;
    Ok(Box::new(move || {
        run(conn, Some(Box::new(move || init(args))), maxtasks, None)
    }))
}

/// How a worker finds the code of a task. With fork, a function's address (see
/// `sys::task`); a spawn start method would add a variant naming a registered
/// entry, which needs no shared image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Entry {
    /// `trampoline` is a [`Trampoline`]; it decodes `func` as the plain function
    /// its type parameters name, and runs it on each item of the arguments.
    Fork {
        /// The monomorphized trampoline.
        trampoline: FnToken,
        /// The user's plain function.
        func: FnToken,
    },
    /// For workers started by spawn or forkserver (new images of the
    /// executable): an [`ExecTrampoline`] and the user's function as offsets in
    /// the executable (see `sys::task::EntryToken`).
    Exec {
        /// The trampoline and the function.
        token: EntryToken,
    },
}

/// A trampoline for workers that are new images: like [`Trampoline`], with the
/// function named by an [`EntryToken`].
pub(crate) type ExecTrampoline = fn(EntryToken, Vec<u8>) -> Outcome;

/// A trampoline: decodes the function, deserializes the chunk's items, calls the
/// function on each (catching panics), serializes the results.
pub(crate) type Trampoline = fn(FnToken, Vec<u8>) -> Outcome;

/// Where a task's serialized items are (as the pool sends it, borrowed).
#[derive(Serialize)]
pub(crate) enum ArgsRef<'a> {
    /// In the message.
    Inline(#[serde(with = "super::codec::as_bytes")] &'a [u8]),
    /// The first this many bytes of the task's slot.
    InSlot(u32),
}

/// [`ArgsRef`] as the worker receives it (same encoding).
#[derive(Deserialize)]
pub(crate) enum Args {
    Inline(#[serde(with = "super::codec::as_bytes")] Vec<u8>),
    InSlot(u32),
}

/// What the pool sends (borrowing the arguments, which the pool keeps for a retry).
#[derive(Serialize)]
pub(crate) enum ToWorkerRef<'a> {
    /// Run the task `(job, chunk)`; `slot`: the task's slot (see the module), if
    /// the worker has slots.
    Run {
        job: u64,
        chunk: u32,
        entry: Entry,
        slot: Option<u8>,
        args: ArgsRef<'a>,
    },
    /// Exit (the pool is closing and has no more tasks).
    #[allow(dead_code)] // sent through `ToWorkerRef::Stop`, received as `ToWorker::Stop`
    Stop,
}

/// What the worker receives: [`ToWorkerRef`] with owned arguments (same encoding).
#[derive(Deserialize)]
pub(crate) enum ToWorker {
    Run {
        job: u64,
        chunk: u32,
        entry: Entry,
        slot: Option<u8>,
        args: Args,
    },
    Stop,
}

/// What a worker sends to the pool.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The initializer panicked with this message; the worker exits.
    InitPanicked(String),
    /// The task `(job, chunk)` is done; `last`: the worker exits now.
    Done {
        job: u64,
        chunk: u32,
        outcome: Outcome,
        last: bool,
    },
}

/// The result of one task (a chunk of items).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The results, a postcard `Vec<R>`, one per item.
    Ok(#[serde(with = "super::codec::as_bytes")] Vec<u8>),
    /// As `Ok`, the results being the first this many bytes of the task's slot.
    InSlot(u32),
    /// Item `index` of the chunk panicked (the rest of the chunk was not run).
    Panicked { index: u64, message: String },
    /// The worker could not run the task: why.
    Refused(String),
}

/// A panic payload's message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// Runs `call` on every item of `args` (a postcard `Vec<I>`), stopping at the first
/// panic. Each item is decoded just before its call and its result encoded just
/// after (into the bytes of a postcard `Vec<R>`): no vector of items nor of
/// results in between (two passes over a chunk's memory fewer per item).
fn run_items<I: DeserializeOwned, R: Serialize>(
    args: Vec<u8>,
    call: impl FnMut(I) -> R,
) -> Outcome {
    let mut de = postcard::Deserializer::from_bytes(&args);
    let run = RunEach {
        call,
        _types: std::marker::PhantomData,
    };
    match serde::de::DeserializeSeed::deserialize(run, &mut de) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Refused(format!("could not decode the task's arguments: {e}")),
    }
}

/// The serde seed of [`run_items`]: visits the sequence of items.
struct RunEach<I, R, F> {
    call: F,
    _types: std::marker::PhantomData<fn(I) -> R>,
}

impl<'de, I: DeserializeOwned, R: Serialize, F: FnMut(I) -> R> serde::de::DeserializeSeed<'de>
    for RunEach<I, R, F>
{
    type Value = Outcome;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Outcome, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, I: DeserializeOwned, R: Serialize, F: FnMut(I) -> R> serde::de::Visitor<'de>
    for RunEach<I, R, F>
{
    type Value = Outcome;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence of items")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<Outcome, A::Error> {
        // Room for results the size of the items in memory (bounded: the length
        // comes from the bytes).
        // (postcard's hint is the sequence's length)
        let len = seq.size_hint().unwrap_or(0);
        let n = len.min(1 << 16);
        let mut out = super::codec::ExactSeq::new(len, n * std::mem::size_of::<R>().clamp(1, 16));
        let mut index = 0u64;
        while let Some(item) = seq.next_element::<I>()? {
            match catch_unwind(AssertUnwindSafe(|| (self.call)(item))) {
                Ok(r) => {
                    if let Err(e) = out.push(&r) {
                        return Ok(Outcome::Refused(format!(
                            "could not encode the task's results: {e}"
                        )));
                    }
                }
                Err(p) => {
                    return Ok(Outcome::Panicked {
                        index,
                        message: panic_message(&*p),
                    });
                }
            }
            index += 1;
        }
        Ok(Outcome::Ok(out.finish()))
    }
}

fn refused_token() -> Outcome {
    Outcome::Refused(
        "the task's function does not belong to this worker's program image (not a fork of the pool's process, or another type)".into(),
    )
}

/// The trampoline for `fn(T) -> R` over items `T`.
pub(crate) fn map_trampoline<T, R>(func: FnToken, args: Vec<u8>) -> Outcome
where
    T: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    match func.resolve::<fn(T) -> R>() {
        Some(f) => run_items::<T, R>(args, f),
        None => refused_token(),
    }
}

/// The trampoline of a `starmap` task: `F` is the plain function (`fn(A) -> R` to
/// `fn(A, B, C, D) -> R`, see [`StarFn`](super::StarFn)), called on each item's
/// tuple of arguments.
pub(crate) fn star_trampoline<F: super::star::StarFn>(func: FnToken, args: Vec<u8>) -> Outcome {
    match func.resolve::<F>() {
        Some(f) => run_items::<F::Args, F::Output>(args, |a| f.call(a)),
        None => refused_token(),
    }
}

/// [`map_trampoline`] for workers that are new images.
pub(crate) fn map_exec_trampoline<T, R>(token: EntryToken, args: Vec<u8>) -> Outcome
where
    T: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    match token.func::<fn(T) -> R>() {
        Ok(f) => run_items::<T, R>(args, f),
        Err(why) => Outcome::Refused(why),
    }
}

/// [`star_trampoline`] for workers that are new images.
pub(crate) fn star_exec_trampoline<F: super::star::StarFn>(
    token: EntryToken,
    args: Vec<u8>,
) -> Outcome {
    match token.func::<F>() {
        Ok(f) => run_items::<F::Args, F::Output>(args, |a| f.call(a)),
        Err(why) => Outcome::Refused(why),
    }
}

/// The entry of a worker started by spawn or forkserver with no initializer: its
/// connection to the pool (a token) and `maxtasksperchild` (with a by-name
/// initializer, the worker is an [`InitWorker`] instead).
pub(crate) fn exec_worker((conn, maxtasks): (Connection, Option<usize>)) {
    run(conn, None, maxtasks, None);
}

/// A worker process's whole life: the initializer, then tasks until `Stop`, the
/// pool's end of file, or `maxtasks` tasks. `slots`: the areas it shares with the
/// pool (forked workers).
pub(crate) fn run(
    conn: Connection,
    init: Option<Box<dyn FnOnce()>>,
    maxtasks: Option<usize>,
    slots: Option<Slots>,
) {
    if let Some(init) = init {
        if let Err(p) = catch_unwind(AssertUnwindSafe(init)) {
            let _ = conn.send(&FromWorker::InitPanicked(panic_message(&*p)));
            return;
        }
    }
    let mut done = 0usize;
    loop {
        let Ok(msg) = conn.recv::<ToWorker>() else {
            return; // the pool is gone (or its message was cut): nothing to do
        };
        let (job, chunk, entry, slot, args) = match msg {
            ToWorker::Stop => return,
            ToWorker::Run {
                job,
                chunk,
                entry,
                slot,
                args,
            } => (job, chunk, entry, slot, args),
        };
        let args = match (args, slot, &slots) {
            (Args::Inline(bytes), _, _) => Some(bytes),
            (Args::InSlot(len), Some(slot), Some(slots)) => {
                let mut items = Vec::new();
                slots.read(slot, len as usize, &mut items).map(|()| items)
            }
            (Args::InSlot(_), _, _) => None,
        };
        let mut outcome = match (args, entry) {
            (None, _) => {
                Outcome::Refused("the task's items are in a slot this worker does not have".into())
            }
            (Some(args), Entry::Fork { trampoline, func }) => {
                match trampoline.resolve::<Trampoline>() {
                    Some(t) => t(func, args),
                    None => refused_token(),
                }
            }
            (Some(args), Entry::Exec { token }) => match token.trampoline::<ExecTrampoline>() {
                Ok(t) => t(token, args),
                Err(why) => Outcome::Refused(why),
            },
        };
        if let (Outcome::Ok(bytes), Some(slot), Some(slots)) = (&outcome, slot, &slots) {
            if Slots::fits(bytes.len()) {
                slots.write(slot, bytes);
                outcome = Outcome::InSlot(bytes.len() as u32);
            }
        }
        done += 1;
        let last = maxtasks.is_some_and(|m| done >= m);
        let reply = FromWorker::Done {
            job,
            chunk,
            outcome,
            last,
        };
        if conn.send(&reply).is_err() || last {
            return;
        }
    }
}
