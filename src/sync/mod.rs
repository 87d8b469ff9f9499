//! Synchronization primitives between processes, one per file, each named as in
//! Python's `multiprocessing`.
//!
//! All of them live in shared memory (arena blocks, so creating one costs no file
//! descriptor) and wait on shared futexes. `raw_lock` is the single mutual-exclusion
//! state machine underneath (`biased` keeps one for a lone user between calls); `ident` names owners so that their death is noticed.

pub mod barrier;
pub(crate) mod biased;
pub mod condition;
pub mod event;
pub(crate) mod ident;
pub mod lock;
pub mod owner_died;
pub(crate) mod raw_lock;
pub mod rlock;
pub mod semaphore;
pub(crate) mod spin;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use owner_died::{LockResult, OwnerDied, TryLockError, TryLockResult};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
