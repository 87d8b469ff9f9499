//! The process-wide record of who this process is and which children it started:
//! CPython's `_current_process`, `_process_counter`, `_children` and the parent
//! process of `multiprocessing.process`, kept in one `Mutex` that `Process::start`
//! holds across the fork so that the child finds it consistent and rewrites it.
//!
//! Lock order (process-local): `stdout` → `stderr` → `ARENA` → `sys::inherit`'s
//! registry → [`REGISTRY`] → a [`Child`]'s `code` (see `shm::arena`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};

/// One started child, shared by its [`Process`](crate::Process) handle and
/// [`Registry::children`] (so that `active_children` can reap it while the handle
/// lives, and the handle still sees the exit code).
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: i32,
    /// Readable once the child has exited (the `sentinel`); valid after the reap.
    pub(crate) pidfd: OwnedFd,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// How its exit status is learned.
    pub(crate) reaper: Reaper,
    /// `None` while the child runs (not yet reaped); `Some(code)` once reaped, in
    /// Python's convention (`-signal` when killed). Reaping happens only under this
    /// lock, so exactly one thread collects the status and every other sees it.
    code: Mutex<Option<i32>>,
}

pub(crate) fn exit_code(status: rustix::process::WaitStatus) -> i32 {
    if let Some(code) = status.exit_status() {
        code
    } else if let Some(sig) = status.terminating_signal() {
        -sig
    } else {
        -1
    }
}

/// How a child's exit status reaches this process.
#[derive(Debug)]
pub(crate) enum Reaper {
    /// It is this process's own child (fork, spawn): `waitpid`.
    Wait,
    /// It is a child of the forkserver, which reaps it and sends its status on
    /// this socket (see `spawn::server`).
    Relay(OwnedFd),
}

impl Child {
    pub(crate) fn new(pid: i32, pidfd: OwnedFd, name: String, daemon: bool) -> Child {
        Child::with_reaper(pid, pidfd, name, daemon, Reaper::Wait)
    }

    pub(crate) fn with_reaper(
        pid: i32,
        pidfd: OwnedFd,
        name: String,
        daemon: bool,
        reaper: Reaper,
    ) -> Child {
        Child {
            pid,
            pidfd,
            name,
            daemon,
            reaper,
            code: Mutex::new(None),
        }
    }

    /// The descriptor that becomes readable once [`poll`](Self::poll) can answer
    /// with the exit code: the pidfd, or the forkserver's status socket.
    pub(crate) fn wait_fd(&self) -> BorrowedFd<'_> {
        match &self.reaper {
            Reaper::Wait => self.pidfd.as_fd(),
            Reaper::Relay(sock) => sock.as_fd(),
        }
    }

    /// The exit code if the child was reaped already (no system call).
    pub(crate) fn reaped(&self) -> Option<i32> {
        *self.code.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaps the child if it has exited, without waiting: its exit code, or `None`
    /// while it runs. Only the process that forked it may call this (its
    /// `Process` checks): in another process the `code` lock may be a copy taken
    /// at a fork by another thread, and the pid is not a child.
    pub(crate) fn poll(&self) -> std::io::Result<Option<i32>> {
        let mut code = self.code.lock().unwrap_or_else(|e| e.into_inner());
        if code.is_none() {
            match &self.reaper {
                Reaper::Wait => {
                    let pid = Pid::from_raw(self.pid).expect("fork returns a positive pid");
                    match waitpid(Some(pid), WaitOptions::NOHANG) {
                        Ok(Some((_, status))) => *code = Some(exit_code(status)),
                        Ok(None) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Reaper::Relay(sock) => {
                    if crate::sys::fd::readable_now(sock.as_fd()) {
                        *code = Some(crate::spawn::server::read_status(sock.as_fd())?);
                    }
                }
            }
        }
        Ok(*code)
    }
}

/// The parent of this process, as the child learned it at its fork.
#[derive(Debug)]
pub(crate) struct Parent {
    pub(crate) name: String,
    pub(crate) pid: u32,
    /// The parent's pidfd on itself, inherited through the fork (so it names the
    /// parent even if the parent died before the child ran: no pid race).
    pub(crate) pidfd: Arc<OwnedFd>,
}

/// Who this process is and what it started. Every field is rewritten in a child
/// by [`Registry::become_child`], while `start` holds the lock across the fork.
#[derive(Debug)]
pub(crate) struct Registry {
    /// CPython's `_identity`: empty in the main process; in a child, its parent's
    /// identity plus the child's number among its parent's processes. Names are
    /// `Process-` and this chain joined by `:`, so they are unique across
    /// generations (`Process-1:1` is the first process of `Process-1`).
    pub(crate) identity: Vec<u32>,
    /// The number the next `Process::new` takes (CPython's `_process_counter`),
    /// restarted at 1 in every child.
    pub(crate) next: u32,
    /// This process's name; `None` in the main process (`MainProcess`).
    pub(crate) name: Option<String>,
    /// Whether this process is a daemon: it may then not start processes, and new
    /// `Process`es default to daemonic, as in CPython.
    pub(crate) daemon: bool,
    /// `None` in the main process.
    pub(crate) parent: Option<Parent>,
    /// A pidfd of this process on itself, opened at the first `start` and inherited
    /// by every child as its parent's sentinel.
    pub(crate) self_pidfd: Option<Arc<OwnedFd>>,
    /// Started children not yet seen to exit by `cleanup` (CPython's `_children`):
    /// also those whose `Process` was dropped while they ran, so that they are
    /// reaped later instead of staying zombies.
    pub(crate) children: Vec<Arc<Child>>,
    /// The record of the last child forked, kept by the parent after the fork
    /// and refilled for the next one: freeing it just after the fork would write
    /// the allocator's heap pages, which the child still shares (a copy-on-write
    /// fault in the parent per start).
    pub(crate) spent_record: Option<ChildRecord>,
}

/// What a child's [`Registry`] becomes ([`Registry::become_child`]).
#[derive(Debug, Default)]
pub(crate) struct ChildRecord {
    pub(crate) identity: Vec<u32>,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) parent_name: String,
    pub(crate) parent_pid: u32,
}

/// The registry. Held across every fork by `Process::start` (see the lock order).
pub(crate) static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    identity: Vec::new(),
    next: 1,
    name: None,
    daemon: false,
    parent: None,
    self_pidfd: None,
    children: Vec::new(),
    spent_record: None,
});

/// The name of the main process, as in CPython.
pub(crate) const MAIN_NAME: &str = "MainProcess";

pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// This process's name.
    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(MAIN_NAME)
    }

    /// Reaps the children that have exited and forgets them (CPython's `_cleanup`).
    /// A child this process cannot wait for (reaped by someone else's `waitpid`)
    /// is forgotten too.
    pub(crate) fn cleanup(&mut self) {
        self.children.retain(|c| matches!(c.poll(), Ok(None)));
    }

    /// This process's pidfd on itself, opened once.
    pub(crate) fn self_pidfd(&mut self) -> std::io::Result<Arc<OwnedFd>> {
        if let Some(fd) = &self.self_pidfd {
            return Ok(Arc::clone(fd));
        }
        let fd = Arc::new(pidfd_open(rustix::process::getpid(), PidfdFlags::empty())?);
        self.self_pidfd = Some(Arc::clone(&fd));
        Ok(fd)
    }

    crate::sys::fork::child_path! {
        /// In a child just forked (the lock held across the fork): the child's own
        /// record, from values the parent built before the fork ([`ChildRecord`]:
        /// allocating here would make the child copy the heap pages the allocator
        /// writes, a copy-on-write fault each). `parent_pidfd` is the parent's
        /// `self_pidfd`, inherited.
        pub(crate) fn become_child(&mut self, record: ChildRecord, parent_pidfd: Arc<OwnedFd>) {
            let ChildRecord {
                identity,
                name,
                daemon,
                parent_name,
                parent_pid,
            } = record;
            // The values replaced are the parent's (empty in a main process): in
            // a child of a child they are its parent's own record. Freeing them
            // would write the allocator's heap pages, which the parent shares (a
            // copy-on-write fault each, five or six in all with the pidfd's
            // close); their memory is left as it is, and dies with the process.
            std::mem::forget(std::mem::replace(&mut self.identity, identity));
            self.next = 1;
            std::mem::forget(self.name.replace(name));
            self.daemon = daemon;
            let old = self.parent.replace(Parent {
                name: parent_name,
                pid: parent_pid,
                pidfd: parent_pidfd,
            });
            if let Some(Parent { name, pidfd, .. }) = old {
                std::mem::forget(name);
                // The descriptor is closed all the same (no count written on the
                // heap) when nothing else in this process holds it.
                crate::sys::fork::close_sole(pidfd);
            }
            // The parent's pidfd on itself is now the parent's sentinel (above); this
            // process opens its own when it first starts a process.
            self.self_pidfd = None;
            // The parent's children are not this process's: forget them (their
            // pidfds close here unless a copied `Process` still refers to them).
            self.children.clear();
        }
    }
}

/// Polls `fd` for readability for at most `timeout` (`None`: forever); true if
/// readable. Interrupted polls are retried against the same deadline.
pub(crate) fn wait_readable(
    fd: BorrowedFd<'_>,
    timeout: Option<std::time::Duration>,
) -> crate::Result<bool> {
    let deadline = crate::sys::time::Deadline::after(timeout)?;
    loop {
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = deadline.remaining().map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(n) if n > 0 => return Ok(true),
            Ok(_) | Err(rustix::io::Errno::INTR) => {
                if deadline.expired() {
                    return Ok(false);
                }
            }
            Err(e) => return Err(crate::Error::io("polling a process's pidfd".to_string(), e)),
        }
    }
}
