//! System calls and raw memory: the one layer of multiproc that uses `unsafe`.
//!
//! Everything above this module is safe Rust. Each `unsafe` block here carries a
//! `// SAFETY:` note saying why it is sound. The layer is deliberately thin:
//!
//! - [`futex`]: wait and wake on a 32-bit word in shared memory, with *shared* (not
//!   private) futexes so that a wake in one process reaches a waiter in another.
//! - [`mem`]: `memfd` and POSIX shared memory objects, `mmap`ed `MAP_SHARED`.
//! - [`fork`]: `fork(2)`, `_exit(2)` and the fork-generation counter that lets
//!   per-process caches notice they are in a new child.
//! - `inherit`: which handles a forked child captured, so that inherited copies
//!   it never uses do not count (a fork handshake run by `Process::start`).
//! - `membarrier`: asymmetric fences between processes (a frequent side that
//!   orders only against the compiler, a rare side that pays a system call).
//! - [`procfs`]: who is alive, read from `/proc` (pid and start time, so that a
//!   reused pid is not mistaken for the process that died).
//! - [`time`]: deadlines on the monotonic clock.
//! - `task`: plain functions sent to forked pool workers as checked addresses, and
//!   to spawned children as checked offsets in the executable.
//! - `exec`: a fresh image of this executable with one descriptor inherited
//!   (the spawn start method).
//! - `alarm`: a thread that wakes a futex word when a watched process exits, so
//!   that long waits need not wake up to look.
//! - `signal` (tests only): a handler installed as CPython's are (no
//!   `SA_RESTART`), to interrupt the interruptible waits.
//! - `fd`: pipe writes that cannot raise `SIGPIPE`, and the dead descriptor put in
//!   place of a connection end a forked child did not capture.

pub(crate) mod alarm;
pub(crate) mod exec;
pub(crate) mod fd;
pub mod fork;
pub mod futex;
pub(crate) mod inherit;
pub mod mem;
pub(crate) mod membarrier;
pub mod procfs;
#[cfg(test)]
pub(crate) mod signal;
pub(crate) mod task;
pub mod time;
pub(crate) mod transfer;
