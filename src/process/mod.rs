//! Processes: [`Process`] runs a closure in a forked child, as Python's
//! `multiprocessing.Process` with the `fork` start method, or a plain function
//! with serde arguments under any start method (see [`spawn`](crate::spawn)); [`current_process`],
//! [`parent_process`] and [`active_children`] say who this process is, who
//! started it and which of its children still run.

mod current;
mod foreign_fork;
#[allow(clippy::module_inception)]
pub mod process;
pub(crate) mod registry;

pub use current::{
    ActiveChild, CurrentProcess, ParentProcess, active_children, current_process, parent_process,
};
pub use foreign_fork::ForeignFork;
pub use process::Process;

/// The floor a [`Process`] fork start is measured against: one `fork()` whose
/// child calls `_exit(0)` at once, and a `waitpid` for it, with none of what
/// `start` and `join` do besides (the locks held across the fork, the pidfd,
/// the registry, the child's clock reading and exit path). The benchmark's S8
/// reports it beside `start()`/`join()` under fork, measured in the same
/// minutes, so that what multiproc adds to the kernel's fork, exit and wait is
/// told apart from how fast the host forks at that hour. Not a way to run
/// anything in a child.
///
/// # Errors
///
/// The `fork` or `waitpid` error, or [`std::io::ErrorKind::Other`] if the child
/// did not exit with 0 (reaped by someone else's `waitpid`, say).
///
/// ```
/// multiproc::process::fork_floor()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn fork_floor() -> std::io::Result<()> {
    crate::sys::fork::fork_exit_reap()
}
