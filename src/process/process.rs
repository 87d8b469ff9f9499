//! `Process`: a closure run in a forked child process.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{
    Pid, PidfdFlags, Signal, WaitOptions, pidfd_open, pidfd_send_signal, waitpid,
};

use crate::error::{Error, Result};
use crate::shm::arena;
use crate::sys::fork::{self, Forked};
use crate::sys::inherit;
use crate::sys::time::Deadline;

type Target = Box<dyn FnOnce() + Send + 'static>;

static COUNTER: AtomicU64 = AtomicU64::new(1);
/// Children whose `Process` was dropped while they ran; reaped on later starts so
/// that they do not stay zombies. Last in the lock order (see `shm::arena`), and
/// held across every fork by `start`.
static UNREAPED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

#[derive(Debug)]
enum State {
    New,
    Running { pid: i32, pidfd: OwnedFd },
    Exited { pid: i32, code: i32 },
}

/// A child process running a closure: Python's `multiprocessing.Process` (fork).
///
/// [`start`](Self::start) forks; the child runs the closure and exits with code 0,
/// or with code 1 after printing the panic message to its stderr (which it shares
/// with the parent) if the closure panics. The child leaves through `_exit`: it never
/// runs the parent's destructors or flushes the parent's buffers a second time (the
/// parent flushes its stdout and stderr before forking). Exit codes follow Python:
/// `Some(n)` after a normal exit, `Some(-signal)` when killed by a signal.
///
/// The closure moves into the child, and `start` drops the parent's copy (as
/// CPython's `Process.start` deletes its target): files, pipe ends and `Arc`s it
/// captured are closed or released in the parent. Shared objects stay right across
/// the fork: `start` counts the child as a holder of every arena block this process
/// holds before it forks, so an object the parent drops after `start` stays
/// allocated while the child lives. The child releases its holds when its closure
/// returns (if it is single-threaded then; a child that spawned threads still
/// running, or that leaves through `exit`/`_exit` itself, keeps them until its
/// memory dies with the last process mapping it).
///
/// Fork copies only the calling thread. `start` holds the locks that multiproc and
/// std own across the fork — `stdout`, `stderr` (in that order: a thread that
/// holds `stderr`'s lock while it waits for `stdout`'s can deadlock with `start`),
/// the arena's, and the process list's — so the child finds each free, even if
/// other threads were printing or creating shared objects. What stays the caller's
/// responsibility: every other lock another thread may hold at the instant of the
/// fork — a `std::sync::Mutex` of yours, another library's locks, a lazy static
/// being initialized — stays held forever in the child, which then hangs if it
/// takes it. As in Python, start processes before starting such threads, or make
/// sure no other thread holds a lock the child's closure will take.
///
/// ```
/// use std::time::Duration;
/// use multiproc::Process;
/// let mut ok = Process::new(|| {});
/// ok.start()?;
/// assert_eq!(ok.join(Some(Duration::from_secs(10)))?, Some(0));
///
/// let mut bad = Process::new(|| panic!("boom"));
/// bad.start()?;
/// assert_eq!(bad.join(None)?, Some(1));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Process {
    name: String,
    daemon: bool,
    target: Option<Target>,
    state: State,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("state", &self.state)
            .finish()
    }
}

fn exit_code(status: rustix::process::WaitStatus) -> i32 {
    if let Some(code) = status.exit_status() {
        code
    } else if let Some(sig) = status.terminating_signal() {
        -sig
    } else {
        -1
    }
}

/// Threads in this process (0 if /proc cannot tell: then the caller assumes many).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn reap_unreaped() {
    let mut list = UNREAPED.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|&pid| {
        let Some(pid) = Pid::from_raw(pid) else {
            return false;
        };
        matches!(waitpid(Some(pid), WaitOptions::NOHANG), Ok(None))
    });
}

impl Process {
    /// A process that will run `target`; named `Process-N` like Python's.
    ///
    /// Nothing runs until [`start`](Self::start).
    ///
    /// ```
    /// use multiproc::Process;
    /// let mut p = Process::new(|| {});
    /// assert!(p.name().starts_with("Process-"));
    /// assert_eq!(p.pid(), None);
    /// assert!(!p.is_alive());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(target: impl FnOnce() + Send + 'static) -> Process {
        Process {
            name: format!("Process-{}", COUNTER.fetch_add(1, Ordering::Relaxed)),
            daemon: false,
            target: Some(Box::new(target)),
            state: State::New,
        }
    }

    /// Sets the name (builder style).
    ///
    /// ```
    /// let p = multiproc::Process::new(|| {}).with_name("worker-1");
    /// assert_eq!(p.name(), "worker-1");
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Process {
        self.name = name.into();
        self
    }

    /// Makes the child a daemon (builder style): it is killed (SIGKILL) when the
    /// thread that started it exits, including when the parent is killed — so a
    /// daemon never outlives its parent. Set before `start`.
    ///
    /// ```
    /// let p = multiproc::Process::new(|| {}).daemon(true);
    /// assert!(p.is_daemon());
    /// ```
    pub fn daemon(mut self, daemon: bool) -> Process {
        self.daemon = daemon;
        self
    }

    /// The name: `Process-N` unless set with [`with_name`](Self::with_name).
    ///
    /// ```
    /// use multiproc::Process;
    /// let a = Process::new(|| {});
    /// let b = Process::new(|| {});
    /// assert!(a.name().starts_with("Process-"));
    /// assert_ne!(a.name(), b.name());
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process is a daemon (`false` unless set with
    /// [`daemon`](Self::daemon)).
    ///
    /// ```
    /// use multiproc::Process;
    /// assert!(!Process::new(|| {}).is_daemon());
    /// assert!(Process::new(|| {}).daemon(true).is_daemon());
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    fn state_error(&self, reason: &'static str) -> Error {
        Error::ProcessState {
            name: self.name.clone(),
            reason,
        }
    }

    /// Forks and runs the closure in the child. A process starts at most once.
    ///
    /// # Errors
    ///
    /// [`Error::ProcessState`] on a second call; [`Error::Io`] if `fork` or
    /// `pidfd_open` fails; [`Error::HoldersOverflow`] if a shared object this
    /// process holds is already held by [`u32::MAX`]` / 2` processes (nothing is
    /// forked then, and the process can be started again later).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Error, Process, Value};
    /// let seen = Value::<u32>::new(0)?;
    /// let s = seen.clone();
    /// let mut p = Process::new(move || s.set(7).unwrap());
    /// p.start()?;
    /// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
    /// assert_eq!(seen.get()?, 7); // written by the child
    /// assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn start(&mut self) -> Result<()> {
        let Some(target) = self.target.take() else {
            return Err(self.state_error("already started; a process can be started only once"));
        };
        reap_unreaped();
        let parent = rustix::process::getpid();
        // Take every process-local lock the child may need, in the lock order
        // stdout -> stderr -> arena -> UNREAPED (see `shm::arena`): no other thread
        // holds one at the fork, and the child's only thread, a copy of this one,
        // owns its copies and releases them. std's stdout and stderr locks are
        // reentrant and owned by this thread's id, which the child's thread keeps.
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        let _ = out.flush();
        let _ = err.flush();
        let mut blocks = arena::lock_for_fork();
        let handles = match inherit::prepare() {
            Ok(h) => h,
            Err(e) => {
                drop((blocks, err, out));
                self.target = Some(target);
                return Err(Error::io(
                    format!("opening the fork handshake of process {:?}", self.name),
                    e,
                ));
            }
        };
        let unreaped = UNREAPED.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = blocks.add_child_holds() {
            drop((unreaped, handles, blocks, err, out));
            self.target = Some(target);
            return Err(e);
        }
        match fork::fork() {
            Err(e) => {
                blocks.fork_failed();
                drop((unreaped, handles, blocks, err, out));
                self.target = Some(target);
                Err(Error::io(format!("forking process {:?}", self.name), e))
            }
            Ok(Forked::Child) => {
                let handles = handles.child();
                drop((unreaped, blocks, err, out));
                // Before any user code: learn which inherited handles the closure
                // captured, and let go of the others (see `sys::inherit`).
                inherit::adopt(handles);
                self.run_child(target, parent)
            }
            Ok(Forked::Parent(pid)) => {
                let handles = handles.parent();
                drop((unreaped, blocks, err, out));
                // The child holds its own copy of everything the closure captured
                // (its shared blocks were counted for it above): drop the parent's,
                // closing its files and releasing its handles, and tell the child
                // which registered handles it captured.
                inherit::capture(handles, inherit::Child { pid }, || drop(target));
                let raw = Pid::from_raw(pid).expect("fork returns a positive pid");
                let pidfd = pidfd_open(raw, PidfdFlags::empty()).map_err(|e| {
                    Error::io(format!("opening a pidfd for process {:?}", self.name), e)
                })?;
                self.state = State::Running { pid, pidfd };
                Ok(())
            }
        }
    }

    fn run_child(&self, target: Target, parent: Pid) -> ! {
        // Read this process's identity now, while nothing of the user's code has
        // used up descriptors, so locks it takes carry its final owner word.
        crate::sync::ident::prime();
        if self.daemon {
            let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
            // The parent may have died before the line above: then no signal comes.
            if rustix::process::getppid() != Some(parent) {
                fork::exit_now(1);
            }
        }
        let code = match catch_unwind(AssertUnwindSafe(target)) {
            Ok(()) => 0,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_string());
                let _ = writeln!(
                    std::io::stderr(),
                    "multiproc: process {:?} (pid {}) panicked: {msg}",
                    self.name,
                    rustix::process::getpid().as_raw_nonzero()
                );
                1
            }
        };
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // The handles still alive here (the parent's, copied by fork) never drop:
        // release this process's holds on their blocks, unless another thread of
        // this child could still be using them.
        arena::release_all_before_exit(thread_count());
        fork::exit_now(code)
    }

    /// The child's pid, once started (kept after it exits).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    /// let mut p = Process::new(|| {});
    /// assert_eq!(p.pid(), None);
    /// p.start()?;
    /// let pid = p.pid().expect("started");
    /// assert_ne!(pid, std::process::id());
    /// p.join(Some(Duration::from_secs(10)))?;
    /// assert_eq!(p.pid(), Some(pid));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        match self.state {
            State::New => None,
            State::Running { pid, .. } | State::Exited { pid, .. } => Some(pid as u32),
        }
    }

    /// Reaps the child if it has exited, without waiting.
    fn poll(&mut self) -> Result<()> {
        if let State::Running { pid, .. } = self.state {
            let raw = Pid::from_raw(pid).expect("positive pid");
            match waitpid(Some(raw), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => {
                    self.state = State::Exited {
                        pid,
                        code: exit_code(status),
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(Error::io(format!("waiting for process {:?}", self.name), e)),
            }
        }
        Ok(())
    }

    /// Waits for the child to exit, at most `timeout` (forever with `None`).
    ///
    /// Returns the exit code, or `None` if the timeout passed first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Event, Process};
    /// let go = Event::new()?;
    /// let g = go.clone();
    /// let mut p = Process::new(move || { g.wait(Some(Duration::from_secs(30))).unwrap(); });
    /// p.start()?;
    /// assert_eq!(p.join(Some(Duration::from_millis(10)))?, None); // still waiting
    /// go.set();
    /// assert_eq!(p.join(Some(Duration::from_secs(30)))?, Some(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&mut self, timeout: Option<Duration>) -> Result<Option<i32>> {
        let deadline = Deadline::after(timeout)?;
        loop {
            self.poll()?;
            let pidfd = match &self.state {
                State::New => {
                    return Err(self.state_error("cannot join a process that was not started"));
                }
                State::Exited { code, .. } => return Ok(Some(*code)),
                State::Running { pidfd, .. } => pidfd,
            };
            if deadline.expired() {
                return Ok(None);
            }
            // A pidfd becomes readable when the process exits.
            let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
            let ts = deadline.remaining().map(|d| rustix::time::Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as _,
            });
            match poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::io(format!("waiting for process {:?}", self.name), e)),
            }
        }
    }

    /// Whether the child has started and not yet exited. Reaps it, without
    /// waiting, if it has exited.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Event, Process};
    /// let go = Event::new()?;
    /// let g = go.clone();
    /// let mut p = Process::new(move || { g.wait(Some(Duration::from_secs(30))).unwrap(); });
    /// assert!(!p.is_alive()); // not started
    /// p.start()?;
    /// assert!(p.is_alive()); // waiting for `go`
    /// go.set();
    /// p.join(Some(Duration::from_secs(30)))?;
    /// assert!(!p.is_alive());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_alive(&mut self) -> bool {
        let _ = self.poll();
        matches!(self.state, State::Running { .. })
    }

    /// The exit code: `None` while running or before start; `Some(-sig)` when killed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    /// let mut p = Process::new(|| panic!("boom"));
    /// assert_eq!(p.exitcode(), None);
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// assert_eq!(p.exitcode(), Some(1)); // a panic exits with 1
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn exitcode(&mut self) -> Option<i32> {
        let _ = self.poll();
        match self.state {
            State::Exited { code, .. } => Some(code),
            _ => None,
        }
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        match &self.state {
            State::Running { pidfd, .. } => match pidfd_send_signal(pidfd, sig) {
                // Exited but not yet reaped: nothing to signal.
                Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
                Err(e) => Err(Error::io(format!("signalling process {:?}", self.name), e)),
            },
            State::New => Err(self.state_error("cannot signal a process that was not started")),
            State::Exited { .. } => Ok(()),
        }
    }

    /// Sends SIGTERM (Python's `terminate`). Through a pidfd: never a reused pid.
    ///
    /// Signalling a process that has already exited does nothing; signalling one
    /// that was never started is an [`Error::ProcessState`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Event, Process};
    /// let never = Event::new()?;
    /// let n = never.clone();
    /// let mut p = Process::new(move || { n.wait(Some(Duration::from_secs(60))).unwrap(); });
    /// assert!(p.terminate().is_err()); // not started
    /// p.start()?;
    /// p.terminate()?;
    /// assert_eq!(p.join(Some(Duration::from_secs(30)))?, Some(-15)); // SIGTERM
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn terminate(&self) -> Result<()> {
        self.signal(Signal::TERM)
    }

    /// Sends SIGKILL (Python's `kill`).
    ///
    /// ```
    /// use multiproc::{Event, Process};
    /// let never = Event::new()?;
    /// let n = never.clone();
    /// let mut p = Process::new(move || { n.wait(None).unwrap(); });
    /// p.start()?;
    /// p.kill()?;
    /// assert_eq!(p.join(None)?, Some(-9));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn kill(&self) -> Result<()> {
        self.signal(Signal::KILL)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let State::Running { pid, .. } = self.state {
            if self.daemon {
                let _ = self.kill();
                let _ = self.join(None);
            } else if self.poll().is_ok() && matches!(self.state, State::Running { .. }) {
                UNREAPED.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
            }
        }
    }
}
