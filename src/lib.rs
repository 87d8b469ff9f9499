//! # multiproc
//!
//! Python's `multiprocessing` shared memory and process synchronization for Rust:
//! real OS processes that share typed memory ([`Value`], [`Array`],
//! [`SharedMemory`]) and coordinate ([`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Event`], [`Condition`], [`Barrier`]), with
//! Python's names and semantics and Rust's idioms — guards, `Result`, `Duration`
//! timeouts.
//!
//! Unlike CPython's, these primitives are futex words in shared memory (an
//! uncontended Lock is one compare-exchange), and **no process waits forever
//! because another died**: a Lock whose holder is killed passes to the next
//! acquirer with [`OwnerDied`], a Condition waiter that is killed cannot swallow a
//! notification, and a Barrier whose party is killed breaks for everyone.
//!
//! ```
//! use multiproc::{Process, Value};
//! let counter = Value::<i32>::new(0)?;
//! let mut workers = Vec::new();
//! for _ in 0..4 {
//!     let c = counter.clone();
//!     let mut p = Process::new(move || {
//!         for _ in 0..1000 {
//!             *c.lock().unwrap() += 1;
//!         }
//!     });
//!     p.start()?;
//!     workers.push(p);
//! }
//! for mut p in workers {
//!     p.join(None)?;
//! }
//! assert_eq!(counter.get()?, 4000);
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! ## Layers, bottom up
//! - `sys` — system calls and raw memory (the only `unsafe`, with `shm`);
//! - [`shm`] — segments, the shared arena, element storage, `SharedMemory`;
//! - [`sync`] — the primitives, one file each;
//! - [`data`] — `Value`, `Array` and their raw twins, above the primitives;
//! - [`msg`] — message passing: `Queue`, `SimpleQueue`, `JoinableQueue` (a ring in
//!   shared memory), `Pipe` and its `Connection`s;
//! - [`process`] — `Process`;
//! - [`pool`] — `Pool` of worker processes, `AsyncResult`.

#![warn(missing_docs)]

pub mod data;
pub mod error;
pub mod msg;
pub mod pool;
pub mod process;
pub mod shm;
pub mod sync;
pub(crate) mod sys;
pub mod token;

pub use error::{Error, Result};
/// Python's `multiprocessing.connection`: [`Connection`], [`wait`](connection::wait).
pub use msg::connection;

// The README's code blocks run as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub use bytemuck::{Pod, Zeroable};
pub use data::{Array, ArrayChunk, ArrayGuard, AtomicInt, RawArray, RawValue, Value, ValueGuard};
pub use msg::{Connection, JoinableQueue, Pipe, Queue, Receiver, Sender, SimpleQueue};
pub use pool::{AsyncResult, IMapIterator, Pool, PoolBuilder};
pub use process::{
    ActiveChild, CurrentProcess, ParentProcess, Process, active_children, current_process,
    parent_process,
};
pub use shm::SharedMemory;
pub use sync::{
    Barrier, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockGuard, LockResult,
    OwnerDied, RLock, RLockGuard, Semaphore, SemaphoreGuard, TryLockError, TryLockResult,
};
