//! The calling process, its parent and its live children: Python's
//! `current_process()`, `parent_process()` and `active_children()`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use super::registry::{self, wait_readable};
use crate::error::Result;

/// The calling process, as [`current_process`] saw it: Python's
/// `multiprocessing.current_process()`.
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name(), "MainProcess"); // in the main process
/// assert_eq!(me.pid(), std::process::id());
/// assert!(!me.is_daemon());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentProcess {
    name: String,
    pid: u32,
    daemon: bool,
}

impl CurrentProcess {
    /// `MainProcess` in the main process; in a child, the name of the
    /// [`Process`](crate::Process) that started it.
    ///
    /// ```
    /// assert_eq!(multiproc::current_process().name(), "MainProcess");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    ///
    /// ```
    /// assert_eq!(multiproc::current_process().pid(), std::process::id());
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether this process is a daemon (then it may not start processes).
    ///
    /// ```
    /// assert!(!multiproc::current_process().is_daemon());
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }
}

/// The calling process: its name, pid and daemon flag.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Process, RawValue};
/// let daemon_seen = RawValue::new(0u8)?;
/// let d = daemon_seen.clone();
/// let mut p = Process::new(move || {
///     let me = multiproc::current_process();
///     assert_eq!(me.name(), "worker");
///     d.set(me.is_daemon() as u8 + 1);
/// })
/// .with_name("worker")
/// .daemon(true);
/// p.start()?;
/// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
/// assert_eq!(daemon_seen.get(), 2); // the child knew it was a daemon
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn current_process() -> CurrentProcess {
    let reg = registry::registry();
    CurrentProcess {
        name: reg.name().to_string(),
        // Asked of the kernel, not `sys::fork::pid`'s cache: that cache is right
        // only after forks that run `pthread_atfork` handlers, and a user may fork
        // by other means (a raw `clone`, glibc's `_Fork`). One system call, next
        // to the name's allocation.
        pid: rustix::process::getpid().as_raw_nonzero().get() as u32,
        daemon: reg.daemon,
    }
}

/// The parent of the calling process, as [`parent_process`] returns it: Python's
/// `multiprocessing.parent_process()`. It can tell whether the parent still runs
/// and wait for it to end (through a pidfd the parent opened on itself before the
/// fork: it always names the parent, even after the parent's pid was reused).
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Process, RawValue};
/// let seen = RawValue::new(0u32)?;
/// let s = seen.clone();
/// let mut p = Process::new(move || {
///     let parent = multiproc::parent_process().expect("a child has a parent");
///     assert_eq!(parent.name(), "MainProcess");
///     assert!(parent.is_alive());
///     s.set(parent.pid());
/// });
/// p.start()?;
/// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
/// assert_eq!(seen.get(), std::process::id());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ParentProcess {
    name: String,
    pid: u32,
    pidfd: Arc<OwnedFd>,
}

impl ParentProcess {
    /// The parent's name (its [`current_process`] name at the fork).
    ///
    /// ```
    /// assert!(multiproc::parent_process().is_none()); // the main process has none
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parent's pid.
    ///
    /// ```
    /// // In the main process there is no parent to ask.
    /// assert_eq!(multiproc::parent_process().map(|p| p.pid()), None);
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the parent process still runs (any of its threads).
    ///
    /// ```
    /// assert!(multiproc::parent_process().is_none_or(|p| p.is_alive()));
    /// ```
    pub fn is_alive(&self) -> bool {
        matches!(
            wait_readable(self.pidfd.as_fd(), Some(Duration::ZERO)),
            Ok(false)
        )
    }

    /// Waits at most `timeout` (forever with `None`) for the parent to end; true
    /// if it has ended.
    ///
    /// # Errors
    ///
    /// [`Error::TimeoutOverflow`](crate::Error::TimeoutOverflow) for a timeout too
    /// large for the clock; [`Error::Io`](crate::Error::Io) if `poll` fails.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    /// let mut p = Process::new(|| {
    ///     let parent = multiproc::parent_process().unwrap();
    ///     // The parent is waiting in `join`: it does not end within 10 ms.
    ///     assert!(!parent.join(Some(Duration::from_millis(10))).unwrap());
    /// });
    /// p.start()?;
    /// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self, timeout: Option<Duration>) -> Result<bool> {
        wait_readable(self.pidfd.as_fd(), timeout)
    }

    /// A descriptor that becomes readable when the parent ends (Python's
    /// `parent_process().sentinel`), for `poll` with other descriptors.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    /// use rustix::event::{PollFd, PollFlags, poll};
    /// let mut p = Process::new(|| {
    ///     let parent = multiproc::parent_process().unwrap();
    ///     let sentinel = parent.sentinel();
    ///     let mut fds = [PollFd::new(&sentinel, PollFlags::IN)];
    ///     let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
    ///     assert_eq!(poll(&mut fds, Some(&zero)).unwrap(), 0); // the parent runs
    /// });
    /// p.start()?;
    /// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

/// The parent of the calling process; `None` in the main process (one not started
/// by a multiproc [`Process`](crate::Process)).
///
/// ```
/// assert!(multiproc::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    let reg = registry::registry();
    reg.parent.as_ref().map(|p| ParentProcess {
        name: p.name.clone(),
        pid: p.pid,
        pidfd: Arc::clone(&p.pidfd),
    })
}

/// A live child of the calling process, as [`active_children`] lists it.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Event, Process};
/// let go = Event::new()?;
/// let g = go.clone();
/// let mut p = Process::new(move || { g.wait(Some(Duration::from_secs(30))).unwrap(); })
///     .with_name("waiter");
/// p.start()?;
/// let kids = multiproc::active_children();
/// let me = kids.iter().find(|c| Some(c.pid()) == p.pid()).expect("listed");
/// assert_eq!(me.name(), "waiter");
/// assert!(!me.is_daemon());
/// go.set();
/// p.join(Some(Duration::from_secs(30)))?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveChild {
    name: String,
    pid: u32,
    daemon: bool,
}

impl ActiveChild {
    /// The child's name.
    ///
    /// ```
    /// assert!(multiproc::active_children().iter().all(|c| !c.name().is_empty()));
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid.
    ///
    /// ```
    /// assert!(multiproc::active_children().iter().all(|c| c.pid() != std::process::id()));
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the child is a daemon.
    ///
    /// ```
    /// let daemons = multiproc::active_children().iter().filter(|c| c.is_daemon()).count();
    /// assert!(daemons <= multiproc::active_children().len());
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }
}

/// The children of the calling process that still run, reaping (without waiting)
/// those that have exited, as Python's `active_children()`. Includes children
/// whose [`Process`](crate::Process) was dropped while they ran; their exit codes
/// stay readable through their `Process` when it still exists.
///
/// ```
/// use std::time::Duration;
/// use multiproc::Process;
/// let mut p = Process::new(|| {});
/// assert!(!multiproc::active_children().iter().any(|c| Some(c.pid()) == p.pid()));
/// p.start()?;
/// p.join(Some(Duration::from_secs(10)))?;
/// assert!(!multiproc::active_children().iter().any(|c| Some(c.pid()) == p.pid()));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn active_children() -> Vec<ActiveChild> {
    let mut reg = registry::registry();
    reg.cleanup();
    reg.children
        .iter()
        .map(|c| ActiveChild {
            name: c.name.clone(),
            pid: c.pid as u32,
            daemon: c.daemon,
        })
        .collect()
}
