//! [`ForeignFork`]: lets a fork made by other means than [`Process`](crate::Process)
//! (Python's `os.fork`, as `multiprocessing` does; `libc::fork`) count the child as a
//! holder of every shared object, as `Process::start` does.
//!
//! Without it, a child forked by someone else shares the parent's handles but is
//! not counted in their blocks' holders: once the parent drops an object, its block
//! may be freed and reused while the child still uses it. [`ForeignFork::prepare`]
//! locks the arena and adds the child-to-be's holds (the same step as
//! `Process::start`); [`ForeignFork::parent`] and [`ForeignFork::child`] unlock it
//! on each side after the fork. Dropped without either (no fork happened), it takes
//! the holds back.
//!
//! The child of a foreign fork never releases those holds (it leaves without
//! running destructors, as `multiprocessing` children do with `os._exit`): the
//! blocks stay allocated until the chunk dies with the last process mapping it, as
//! for any process that is killed. Memory is never reused while it may be in use.
//!
//! Fork through the C library's `fork()` (`libc::fork`, `nix::unistd::fork`,
//! Python's `os.fork`): it runs the at-fork handlers by which a child renews
//! what multiproc caches per process — its pid, and the owner word its locks
//! carry. A raw `clone` or `SYS_fork` system call, or glibc's `_Fork`, runs no
//! handler: such a child would take locks under its parent's identity, so a
//! death of either could not be told apart from the other's (only
//! [`current_process`](crate::current_process) asks the kernel each time).

use crate::error::Result;
use crate::shm::arena::{self, ForkGuard};

/// The arena locked around a fork made by other means, with the child's holds
/// added. While it lives no other thread of this process allocates or frees a
/// shared object, nor starts a process by forkserver (they wait), so keep it
/// only around the `fork` call.
///
/// ```
/// use multiproc::process::ForeignFork;
/// let lock = multiproc::Lock::new()?;
/// let prep = ForeignFork::prepare()?;          // before fork (os.register_at_fork's `before`)
/// // ... a fork would go here; this example does not fork:
/// drop(prep);                                  // no fork happened: the holds are taken back
/// drop(lock);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "call parent() or child() after the fork; dropping it takes the holds back"]
pub struct ForeignFork {
    guard: ForkGuard,
    /// Set by `parent`/`child`: the fork happened, the child's holds stay.
    forked: bool,
    /// The forkserver state, locked too, so that no other thread holds it at the
    /// fork (released after `guard`: fields drop in order).
    _server: crate::spawn::server::ForkHold,
}

impl std::fmt::Debug for ForeignFork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForeignFork").finish_non_exhaustive()
    }
}

impl ForeignFork {
    /// Locks the arena and counts the child-to-be as a holder of every shared block
    /// this process holds. [`Error::HoldersOverflow`](crate::Error::HoldersOverflow)
    /// if a block is already held by `u32::MAX / 2` processes (nothing is added
    /// then: do not fork).
    ///
    /// ```
    /// let prep = multiproc::process::ForeignFork::prepare()?;
    /// prep.parent(); // as if the fork had happened: the holds stay for the child
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn prepare() -> Result<ForeignFork> {
        let mut guard = arena::lock_for_fork();
        guard.add_child_holds()?;
        Ok(ForeignFork {
            guard,
            forked: false,
            _server: crate::spawn::server::hold_for_fork(),
        })
    }

    /// In the parent, after a successful fork: keeps the child's holds and unlocks
    /// the arena.
    ///
    /// ```
    /// let prep = multiproc::process::ForeignFork::prepare()?;
    /// prep.parent();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn parent(mut self) {
        self.forked = true;
    }

    /// In the child, after the fork: unlocks the child's copy of the arena lock
    /// (the child's only thread is the copy of the one that locked it).
    ///
    /// ```
    /// let prep = multiproc::process::ForeignFork::prepare()?;
    /// prep.child(); // in a real child; here it behaves as `parent()`
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn child(self) {
        self.parent()
    }

    /// The fork failed: takes the child's holds back and unlocks (the same as
    /// dropping it).
    ///
    /// ```
    /// let prep = multiproc::process::ForeignFork::prepare()?;
    /// prep.failed();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn failed(self) {
        drop(self)
    }
}

impl Drop for ForeignFork {
    fn drop(&mut self) {
        if !self.forked {
            self.guard.fork_failed();
        }
        // The guard drops after this, unlocking the arena.
    }
}
