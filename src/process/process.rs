//! `Process`: a closure run in a forked child process.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags, eventfd, poll};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions, pidfd_open, pidfd_send_signal};

use super::registry::{self, Child};
use crate::error::{Error, Result};
use crate::shm::arena;
use crate::spawn::StartMethod;
use crate::spawn::wire::{Call, EntryCall};
use crate::sys::fork::{self, Forked};
use crate::sys::inherit;
use crate::sys::time::Deadline;

/// What the child runs.
enum Target {
    /// A closure: fork only (a closure's code and captures exist only in this
    /// image; they cannot cross an exec).
    Closure(Box<dyn FnOnce() + Send + 'static>),
    /// A plain function and serde arguments: every start method.
    Entry(Box<dyn Call>),
}

/// Where a `Process` is in its life. Every transition is made by the process that
/// created the `Process` (`creator`); in any other process the value is an image
/// copied by a fork, and every method refuses or does nothing.
#[derive(Debug)]
enum State {
    /// Created, not started: `target` is `Some` except while `start` runs (a
    /// failed `start` puts it back).
    New,
    /// Forked. Running until `child`'s code is `Some` (the child reaped, by this
    /// `Process` or by `active_children`/`start` through the registry).
    Started(Arc<Child>),
    /// After [`Process::close`]: the pidfd is released; the last pid and exit code
    /// (if it was started) are kept for `pid`/`exitcode`.
    Closed { pid: Option<i32>, code: Option<i32> },
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
/// the arena's, the fork handshake's and the process registry's — so the child
/// finds each free, even if other threads were printing or creating shared
/// objects. What stays the caller's responsibility: every other lock another
/// thread may hold at the instant of the fork — a `std::sync::Mutex` of yours,
/// another library's locks, a lazy static being initialized — stays held forever
/// in the child, which then hangs if it takes it. As in Python, start processes
/// before starting such threads, or make sure no other thread holds a lock the
/// child's closure will take.
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
    /// CPython's `_identity`: the creating process's identity plus this process's
    /// number among its siblings; what the child's own processes are named after.
    identity: Vec<u32>,
    /// The pid of the process that created this `Process` (CPython's
    /// `_parent_pid`): only it may start, join, signal or reap the child.
    creator: u32,
    method: StartMethod,
    target: Option<Target>,
    state: State,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("method", &self.method)
            .field("state", &self.state)
            .finish()
    }
}

crate::sys::fork::child_path! {
    /// Whether the calling thread is the only thread of this process, for a child
    /// about to `_exit` (see `arena::release_all_before_exit`); `stopped` is the tid
    /// of the parent watcher just stopped and joined, if any, which may still be
    /// leaving the kernel and must not count. Asks the kernel in one system call
    /// ([`fork::single_threaded`]); counts `/proc/self/task` only when that cannot
    /// tell, or when the only other thread may be the stopped watcher. Anything
    /// unknown is "not alone": the holds are then kept.
    pub(crate) fn alone_before_exit(stopped: Option<i32>) -> bool {
        match (fork::single_threaded(), stopped) {
            (Some(true), _) => true,
            (Some(false), None) => false,
            (_, Some(w)) => thread_count_except(w) == 1,
            (None, None) => thread_count() == 1,
        }
    }
}

/// Threads in this process (0 if /proc cannot tell: then the caller assumes many).
pub(crate) fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Threads in this process other than the thread `tid` (which may already be
/// gone); 0 if /proc cannot tell.
pub(crate) fn thread_count_except(tid: i32) -> usize {
    let name = tid.to_string();
    std::fs::read_dir("/proc/self/task").map_or(0, |d| {
        d.filter(|e| e.as_ref().map_or(true, |e| e.file_name() != name.as_str()))
            .count()
    })
}

/// A closure a child runs.
type Closure = Box<dyn FnOnce() + Send + 'static>;

/// What `start` holds across the fork: the locks in their order, and what the
/// child's registry becomes.
struct Held {
    out: std::io::StdoutLock<'static>,
    err: std::io::StderrLock<'static>,
    blocks: arena::ForkGuard,
    handles: inherit::ForkGuard,
    server: crate::spawn::server::ForkHold,
    reg: std::sync::MutexGuard<'static, registry::Registry>,
    parent_pidfd: Arc<OwnedFd>,
    record: registry::ChildRecord,
}

/// The pid of the calling process.
fn my_pid() -> u32 {
    fork::pid() as u32
}

impl Process {
    /// A process that will run `target`, named after its place among the processes
    /// of all generations as in Python: the Nth process created by the main process
    /// is `Process-N`, the first one created by `Process-2` is `Process-2:1`.
    ///
    /// It is a daemon if the calling process is one (Python's `daemon=None`), which
    /// makes [`start`](Self::start) refuse: daemons may not have children. Nothing
    /// runs until `start`.
    ///
    /// ```
    /// use multiproc::Process;
    /// let mut p = Process::new(|| {});
    /// assert!(p.name().starts_with("Process-"));
    /// assert_eq!(p.pid(), None);
    /// assert!(!p.is_alive());
    /// assert!(!p.is_daemon()); // the main process is not a daemon
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(target: impl FnOnce() + Send + 'static) -> Process {
        Process::with_target(Target::Closure(Box::new(target)), StartMethod::Fork)
    }

    /// A process that will run `f(args)`, started by the process-wide default
    /// start method ([`get_start_method`](crate::get_start_method); fork unless
    /// set otherwise). Use [`with_start_method`](Self::with_start_method), or a
    /// [`Context`](crate::Context)'s [`process`](crate::Context::process), to
    /// choose another.
    ///
    /// Unlike [`new`](Self::new)'s closure, a plain function and serde arguments
    /// can cross an exec: under spawn and forkserver the child is a fresh image of
    /// this executable, which finds `f` by its offset in the binary (refusing, with
    /// [`Error::Start`], if it is not the same binary) and rebuilds `args` from
    /// their serialized form. The binary must call
    /// [`spawn::init`](crate::spawn::init) first thing in `main`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    /// fn greet(who: String) {
    ///     assert_eq!(who, "world");
    /// }
    /// let mut p = Process::entry(greet, "world".to_string());
    /// p.start()?;
    /// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn entry<A>(f: fn(A), args: A) -> Process
    where
        A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let method = crate::spawn::get_start_method();
        Process::with_target(Target::Entry(Box::new(EntryCall { f, args })), method)
    }

    /// A process running `call` (a pool worker with a by-name initializer: an
    /// entry whose arguments are not one plain function's), by the default start
    /// method.
    pub(crate) fn from_call(call: Box<dyn Call>) -> Process {
        let method = crate::spawn::get_start_method();
        Process::with_target(Target::Entry(call), method)
    }

    /// Sets the start method (builder style; set before `start`). A process made
    /// by [`new`](Self::new) runs a closure and can only be forked: its `start`
    /// refuses any other method with [`Error::ProcessState`].
    ///
    /// ```
    /// use multiproc::{Process, StartMethod};
    /// fn work(_: u32) {}
    /// let p = Process::entry(work, 1).with_start_method(StartMethod::Spawn);
    /// assert_eq!(p.start_method(), StartMethod::Spawn);
    /// ```
    pub fn with_start_method(mut self, method: StartMethod) -> Process {
        self.method = method;
        self
    }

    /// The start method `start` will use (or used).
    ///
    /// ```
    /// use multiproc::{Process, StartMethod};
    /// assert_eq!(Process::new(|| {}).start_method(), StartMethod::Fork);
    /// ```
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    fn with_target(target: Target, method: StartMethod) -> Process {
        let mut reg = registry::registry();
        let mut identity = reg.identity.clone();
        identity.push(reg.next);
        reg.next = reg.next.wrapping_add(1);
        let daemon = reg.daemon;
        drop(reg);
        let digits: Vec<String> = identity.iter().map(|n| n.to_string()).collect();
        Process {
            name: format!("Process-{}", digits.join(":")),
            daemon,
            identity,
            creator: my_pid(),
            method,
            target: Some(target),
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

    /// Makes the child a daemon, or not (builder style; set before `start`).
    ///
    /// A daemon never outlives the process that started it: it is killed (SIGKILL)
    /// when that process ends in any way — returns from `main`, calls `exit`,
    /// panics, or is killed by SIGKILL — whichever of its threads started the
    /// daemon and whether or not that thread still runs. Dropping the `Process`
    /// of a running daemon also kills and reaps it. A daemon may not start
    /// processes of its own ([`Error::ProcessState`], as Python's
    /// "daemonic processes are not allowed to have children").
    ///
    /// How: the daemon's first act, before the closure, is to start a watcher
    /// thread that polls a pidfd of its parent process (inherited through the
    /// fork, so it names the parent even if the parent died first) and kills the
    /// daemon when the parent has ended. A pidfd of a process becomes readable
    /// only once all its threads are gone, unlike `PR_SET_PDEATHSIG`, which fires
    /// when the forking *thread* exits. Where CPython terminates (SIGTERM) and
    /// joins its daemons in an `atexit` hook, multiproc runs no code at the
    /// parent's exit: the kill comes from the daemon's side. The watcher is
    /// stopped and joined when the closure returns. Its cost: starting and
    /// joining an empty daemon took a median 0.21 ms against 0.12 ms for a
    /// non-daemon (1,000 runs on a loaded 2-vCPU VM); the daemon died a median
    /// 0.06-0.15 ms after its parent was SIGKILLed.
    ///
    /// ```
    /// let p = multiproc::Process::new(|| {}).daemon(true);
    /// assert!(p.is_daemon());
    /// ```
    pub fn daemon(mut self, daemon: bool) -> Process {
        self.daemon = daemon;
        self
    }

    /// The name: `Process-N` (`Process-N:M` in a child, ...) unless set with
    /// [`with_name`](Self::with_name).
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

    /// Whether the process is a daemon (the calling process's own flag unless set
    /// with [`daemon`](Self::daemon)).
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

    /// `Ok` in the process that created this `Process`; `what` says what else was
    /// asked (Python's "can only join a child process").
    fn check_creator(&self, what: &'static str) -> Result<()> {
        if self.creator == my_pid() {
            Ok(())
        } else {
            Err(self.state_error(what))
        }
    }

    /// Forks and runs the closure in the child. A process starts at most once.
    ///
    /// # Errors
    ///
    /// [`Error::ProcessState`] on a second call, after [`close`](Self::close), in
    /// a process other than the one that created this `Process`, or in a daemon
    /// (daemons may not have children); [`Error::Io`] if `fork` or `pidfd_open`
    /// fails (a child forked without a pidfd is killed and reaped at once);
    /// [`Error::HoldersOverflow`] if a shared object this process holds is
    /// already held by [`u32::MAX`]` / 2` processes (nothing is forked then, and
    /// the process can be started again later).
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
        if matches!(self.state, State::Closed { .. }) {
            return Err(self.state_error("the process object is closed"));
        }
        let Some(target) = self.target.take() else {
            return Err(self.state_error("already started; a process can be started only once"));
        };
        if let Err(e) =
            self.check_creator("can only start a process object created by the current process")
        {
            self.target = Some(target);
            return Err(e);
        }
        let target = match (target, self.method) {
            (Target::Closure(c), StartMethod::Fork) => c,
            (Target::Entry(call), StartMethod::Fork) => call.into_closure(),
            (Target::Entry(call), method) => return self.start_exec(call, method),
            (t @ Target::Closure(_), _) => {
                self.target = Some(t);
                return Err(self.state_error(
                    "a closure cannot cross an exec: only fork can start Process::new; use Process::entry with a plain fn and serde arguments",
                ));
            }
        };
        let parent = fork::pid();
        {
            let mut reg = registry::registry();
            if reg.daemon {
                drop(reg);
                self.target = Some(Target::Closure(target));
                return Err(self.state_error("daemonic processes are not allowed to have children"));
            }
            reg.cleanup();
            // Opened now if it was not yet (it then stays open in this process);
            // the fork below moves it out of the registry and back.
            if let Err(e) = reg.self_pidfd() {
                drop(reg);
                self.target = Some(Target::Closure(target));
                return Err(Error::io("opening a pidfd of the current process", e));
            }
        }
        // Take every process-local lock the child may need, in the lock order
        // stdout -> stderr -> arena -> inherit -> forkserver state -> registry
        // (see `shm::arena`, `spawn::server::ForkHold`): no other thread
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
                self.target = Some(Target::Closure(target));
                return Err(Error::io(
                    format!("opening the fork handshake of process {:?}", self.name),
                    e,
                ));
            }
        };
        let server = crate::spawn::server::hold_for_fork();
        let mut reg = registry::registry();
        // Taken out of the registry across the fork and put back on each side
        // (the child's copy as its parent's sentinel): a move, where a clone and
        // its drop would write the count on the heap page both processes share
        // (a copy-on-write fault on each side).
        let Some(parent_pidfd) = reg.self_pidfd.take() else {
            // Not expected: opened above, and only a new child's registry lets
            // go of it.
            drop((reg, server, handles, blocks, err, out));
            self.target = Some(Target::Closure(target));
            return Err(self.state_error("this process's own pidfd was not open"));
        };
        // The child's record, built before the fork (the child allocates
        // nothing), in the buffers of the last record (the parent keeps them
        // after the fork rather than free them then: see `spent_record`).
        let mut record = reg.spent_record.take().unwrap_or_default();
        record.identity.clone_from(&self.identity);
        record.name.clone_from(&self.name);
        record.daemon = self.daemon;
        record.parent_name.clear();
        record.parent_name.push_str(reg.name());
        record.parent_pid = parent as u32;
        if let Err(e) = blocks.add_child_holds() {
            reg.self_pidfd = Some(parent_pidfd);
            drop((reg, server, handles, blocks, err, out));
            self.target = Some(Target::Closure(target));
            return Err(e);
        }
        let held = Held {
            out,
            err,
            blocks,
            handles,
            server,
            reg,
            parent_pidfd,
            record,
        };
        match self.fork_child(held, target) {
            (Err(e), mut held, target) => {
                held.blocks.fork_failed();
                let Held {
                    out,
                    err,
                    blocks,
                    handles,
                    server,
                    mut reg,
                    parent_pidfd,
                    ..
                } = held;
                reg.self_pidfd = Some(parent_pidfd);
                drop((reg, server, handles, blocks, err, out));
                self.target = Some(Target::Closure(target));
                Err(Error::io(format!("forking process {:?}", self.name), e))
            }
            (Ok(pid), held, target) => {
                let Held {
                    out,
                    err,
                    blocks,
                    handles,
                    server,
                    mut reg,
                    parent_pidfd,
                    record,
                } = held;
                let handles = handles.parent();
                reg.self_pidfd = Some(parent_pidfd);
                reg.spent_record = Some(record);
                drop((reg, server, blocks, err, out));
                // The child holds its own copy of everything the closure captured
                // (its shared blocks were counted for it above): drop the parent's,
                // closing its files and releasing its handles, and tell the child
                // which registered handles it captured.
                inherit::capture(handles, inherit::Child { pid }, || drop(target));
                let raw = Pid::from_raw(pid).expect("fork returns a positive pid");
                let pidfd = match pidfd_open(raw, PidfdFlags::empty()) {
                    Ok(fd) => fd,
                    Err(e) => {
                        // Without a pidfd the child could be neither waited for
                        // nor signalled safely: kill it (its pid cannot be reused
                        // before this reap), reap it, and report the failure.
                        let _ = rustix::process::kill_process(raw, Signal::KILL);
                        let _ = rustix::process::waitpid(Some(raw), WaitOptions::empty());
                        return Err(Error::io(
                            format!("opening a pidfd for process {:?}", self.name),
                            e,
                        ));
                    }
                };
                let child = Arc::new(Child::new(pid, pidfd, self.name.clone(), self.daemon));
                registry::registry().children.push(Arc::clone(&child));
                self.state = State::Started(child);
                Ok(())
            }
        }
    }

    /// `start` for spawn and forkserver: the child is a new image (see
    /// `spawn::launch`). A child that refuses the entry, or dies before it has
    /// imported its arguments, is still recorded (so that `join` and `exitcode`
    /// report how it ended) and `start` returns [`Error::Start`].
    fn start_exec(&mut self, call: Box<dyn Call>, method: StartMethod) -> Result<()> {
        if registry::registry().daemon {
            self.target = Some(Target::Entry(call));
            return Err(self.state_error("daemonic processes are not allowed to have children"));
        }
        let launch = crate::spawn::launch::Launch {
            name: &self.name,
            identity: &self.identity,
            daemon: self.daemon,
            call: &*call,
        };
        let started = match method {
            StartMethod::Forkserver => crate::spawn::launch::forkserver(&launch),
            _ => crate::spawn::launch::spawn(&launch),
        };
        match started {
            Err(e) => {
                self.target = Some(Target::Entry(call));
                Err(e)
            }
            Ok((child, refused)) => {
                // The child has imported its arguments (or refused them): the
                // parent's copy may go now.
                drop(call);
                registry::registry().children.push(Arc::clone(&child));
                self.state = State::Started(child);
                match refused {
                    None => Ok(()),
                    Some(reason) => Err(Error::Start {
                        name: self.name.clone(),
                        method: method.name(),
                        reason,
                    }),
                }
            }
        }
    }

    crate::sys::fork::child_path! {
        /// `start`'s fork, and the child's side of it up to its `_exit`: in the
        /// parent, the child's pid and what `start` held, given back. The code a
        /// new child runs sits in a section of its own (`sys::fork::child_path!`),
        /// this function's included, so that it faults in few code pages.
        #[inline(never)]
        fn fork_child(
            &self,
            held: Held,
            target: Box<dyn FnOnce() + Send + 'static>,
        ) -> (std::io::Result<i32>, Held, Closure) {
            // Bracket the fork with clock readings: the child can then know its start
            // time (its identity) without reading `/proc` (see `run_child`).
            let ticks_per_second = rustix::param::clock_ticks_per_second();
            let before = crate::sys::procfs::boottime_ns();
            match fork::fork() {
                Err(e) => (Err(e), held, target),
                Ok(Forked::Parent(pid)) => (Ok(pid), held, target),
                Ok(Forked::Child) => {
                    let started = crate::sys::procfs::start_ticks_between(
                        before,
                        crate::sys::procfs::boottime_ns_after_fork(),
                        ticks_per_second,
                    );
                    let Held {
                        out,
                        err,
                        blocks,
                        handles,
                        server,
                        mut reg,
                        parent_pidfd,
                        record,
                    } = held;
                    let handles = handles.child();
                    reg.become_child(record, parent_pidfd);
                    drop(reg);
                    drop(server);
                    drop(blocks);
                    drop(err);
                    drop(out);
                    // Before any user code: learn which inherited handles the closure
                    // captured, and let go of the others (see `sys::inherit`).
                    inherit::adopt(handles);
                    self.run_child(target, started)
                }
            }
        }
    }

    crate::sys::fork::child_path! {
        /// The child's side of `start`. `started`: this process's start time in
        /// clock ticks if the fork's clock readings tell it, `None` if not.
        fn run_child(&self, target: Box<dyn FnOnce() + Send + 'static>, started: Option<u64>) -> ! {
            // Know this process's identity now, while nothing of the user's code has
            // used up descriptors, so locks it takes carry its final owner word:
            // from the fork's clock readings, or else from `/proc`.
            match started {
                Some(ticks) => crate::sync::ident::prime_started_at(ticks),
                None => crate::sync::ident::prime(),
            }
            let watcher = self.daemon.then(ParentWatcher::start);
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
            // stdout's buffer, as CPython's `_flush_std_streams`. Not stderr: std's
            // stderr is unbuffered (its `flush` does nothing but take and release
            // its lock, a write to a page the parent shares: a copy-on-write fault).
            let _ = std::io::stdout().flush();
            // Stop the parent watcher now: a thread still alive at `_exit` would make
            // the exit wait for the kernel to kill and schedule it (measured: 0.25 ms
            // more per daemon, and a tail of milliseconds on a 2-vCPU VM).
            let stopped = watcher.map(|w| w.stop());
            // The handles still alive here (the parent's, copied by fork) never drop:
            // release this process's holds on their blocks, unless another thread of
            // this child could still be using them (the stopped watcher used none).
            // The threads are asked about only if some hold is left.
            arena::release_all_before_exit(|| alone_before_exit(stopped));
            fork::exit_now(code)
        }
    }

    /// The child's pid, once started (kept after it exits and after `close`).
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
        match &self.state {
            State::New => None,
            State::Started(child) => Some(child.pid as u32),
            State::Closed { pid, .. } => pid.map(|p| p as u32),
        }
    }

    /// The exit code once reaped (reaping it now if it has exited, without
    /// waiting); `None` while running, before start, or in a process other than
    /// the creator.
    fn poll(&self) -> Result<Option<i32>> {
        match &self.state {
            State::New => Ok(None),
            State::Closed { code, .. } => Ok(*code),
            State::Started(child) => {
                self.check_creator("can only wait for a child process")?;
                child
                    .poll()
                    .map_err(|e| Error::io(format!("waiting for process {:?}", self.name), e))
            }
        }
    }

    /// Waits for the child to exit, at most `timeout` (forever with `None`).
    ///
    /// Returns the exit code, or `None` if the timeout passed first.
    ///
    /// # Errors
    ///
    /// [`Error::ProcessState`] if the process was not started, was closed, or is
    /// not a child of the calling process (Python's "can only join a child
    /// process": e.g. a `Process` moved into another child's closure);
    /// [`Error::TimeoutOverflow`] for a timeout too large for the clock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Event, Process};
    /// let go = Event::new()?;
    /// let g = go.clone();
    /// let mut p = Process::new(move || { g.wait(Some(Duration::from_secs(30))).unwrap(); });
    /// assert!(p.join(None).is_err()); // not started
    /// p.start()?;
    /// assert_eq!(p.join(Some(Duration::from_millis(10)))?, None); // still waiting
    /// go.set();
    /// assert_eq!(p.join(Some(Duration::from_secs(30)))?, Some(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&mut self, timeout: Option<Duration>) -> Result<Option<i32>> {
        let deadline = Deadline::after(timeout)?;
        let child = match &self.state {
            State::New => {
                return Err(self.state_error("cannot join a process that was not started"));
            }
            State::Closed { .. } => return Err(self.state_error("the process object is closed")),
            State::Started(child) => Arc::clone(child),
        };
        self.check_creator("can only join a child process")?;
        if let Some(code) = child.reaped() {
            return Ok(Some(code));
        }
        loop {
            // A pidfd becomes readable when the process exits (at once if it has
            // already): wait first, then reap, one `waitpid` per join.
            let ready = registry::wait_readable(child.wait_fd(), deadline.remaining())?;
            if let Some(code) = self.poll()? {
                return Ok(Some(code));
            }
            if !ready {
                return Ok(None);
            }
        }
    }

    /// Whether the child has started and not yet exited. Reaps it, without
    /// waiting, if it has exited. `false` after [`close`](Self::close) and in a
    /// process other than the one that created this `Process`.
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
        matches!(self.state, State::Started(_)) && matches!(self.poll(), Ok(None))
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
        self.poll().ok().flatten()
    }

    /// A descriptor that becomes readable when the child ends (Python's
    /// `sentinel`): the child's pidfd, to wait on several processes (and other
    /// descriptors) at once with `poll`. It stays valid, and readable once the
    /// child has ended, until [`close`](Self::close) or drop.
    ///
    /// # Errors
    ///
    /// [`Error::ProcessState`] before `start` (Python's `ValueError`) or after
    /// `close`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Event, Process};
    /// use rustix::event::{PollFd, PollFlags, poll};
    /// let go = Event::new()?;
    /// let g = go.clone();
    /// let mut p = Process::new(move || { g.wait(Some(Duration::from_secs(30))).unwrap(); });
    /// assert!(p.sentinel().is_err()); // not started
    /// p.start()?;
    /// let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
    /// let sentinel = p.sentinel()?;
    /// let mut fds = [PollFd::new(&sentinel, PollFlags::IN)];
    /// assert_eq!(poll(&mut fds, Some(&zero)).unwrap(), 0); // still running
    /// go.set();
    /// let bound = rustix::time::Timespec { tv_sec: 30, tv_nsec: 0 };
    /// assert_eq!(poll(&mut fds, Some(&bound)).unwrap(), 1); // ended
    /// assert_eq!(p.join(None)?, Some(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>> {
        match &self.state {
            State::New => Err(self.state_error("process not started: it has no sentinel")),
            State::Closed { .. } => Err(self.state_error("the process object is closed")),
            State::Started(child) => Ok(child.pidfd.as_fd()),
        }
    }

    /// Releases the process's resources (its pidfd, its entry among the
    /// [`active_children`](super::active_children)), as Python's `close`. After
    /// it, `join`, `terminate`, `kill`, `sentinel` and `start` are
    /// [`Error::ProcessState`] and `is_alive` is `false`; `pid` and `exitcode`
    /// keep their last values. Closing twice does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::ProcessState`] if the child is still running (join or terminate it
    /// first), or in a process other than the creator.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Event, Process};
    /// let go = Event::new()?;
    /// let g = go.clone();
    /// let mut p = Process::new(move || { g.wait(Some(Duration::from_secs(30))).unwrap(); });
    /// p.start()?;
    /// assert!(p.close().is_err()); // still running
    /// go.set();
    /// assert_eq!(p.join(Some(Duration::from_secs(30)))?, Some(0));
    /// p.close()?;
    /// assert!(p.join(None).is_err());
    /// assert_eq!(p.exitcode(), Some(0));
    /// p.close()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&mut self) -> Result<()> {
        let (pid, code) = match &self.state {
            State::Closed { .. } => return Ok(()),
            State::New => (None, None),
            State::Started(child) => match self.poll()? {
                None => {
                    return Err(self.state_error(
                        "cannot close a process while it is still running: join or terminate it first",
                    ));
                }
                Some(code) => {
                    let mut reg = registry::registry();
                    reg.children.retain(|c| !Arc::ptr_eq(c, child));
                    (Some(child.pid), Some(code))
                }
            },
        };
        self.target = None;
        self.state = State::Closed { pid, code };
        Ok(())
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        match &self.state {
            State::Started(child) => {
                self.check_creator("can only signal a child process")?;
                if matches!(self.poll(), Ok(Some(_))) {
                    return Ok(()); // reaped: nothing to signal
                }
                match pidfd_send_signal(&child.pidfd, sig) {
                    // Exited but not yet reaped: nothing to signal.
                    Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
                    Err(e) => Err(Error::io(format!("signalling process {:?}", self.name), e)),
                }
            }
            State::New => Err(self.state_error("cannot signal a process that was not started")),
            State::Closed { .. } => Err(self.state_error("the process object is closed")),
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
        // In another process this is a copied image: the child is not ours.
        if self.creator != my_pid() {
            return;
        }
        // A running non-daemon goes on; the registry keeps its entry, so that a
        // later `start` or `active_children` reaps it (no zombie).
        if self.daemon && self.is_alive() {
            let _ = self.kill();
            let _ = self.join(None);
        }
    }
}

/// In a daemon child, from before its closure until it returns: a thread that
/// kills this process once its parent process has ended (all its threads: a pidfd
/// becomes readable only then), or at once if the parent is already gone. The
/// parent's pidfd was inherited through the fork, so it cannot name a process
/// that reused the pid. (A spawned child received it over its socket instead.)
pub(crate) struct ParentWatcher {
    /// Written once by [`stop`](Self::stop): the thread then returns.
    stop: OwnedFd,
    thread: std::thread::JoinHandle<()>,
    /// The thread's tid, stored by the thread before it polls (0 until then).
    tid: Arc<AtomicI32>,
}

impl ParentWatcher {
    pub(crate) fn start() -> ParentWatcher {
        let refuse = |what: &str| -> ! {
            // Without a watcher the daemon could outlive its parent: refuse to run.
            let _ = writeln!(
                std::io::stderr(),
                "multiproc: daemon (pid {}) could not start its parent watcher: {what}",
                rustix::process::getpid().as_raw_nonzero()
            );
            fork::exit_now(1)
        };
        let Some(pidfd) = registry::registry()
            .parent
            .as_ref()
            .map(|p| Arc::clone(&p.pidfd))
        else {
            refuse("no parent recorded")
        };
        let stop = eventfd(0, EventfdFlags::CLOEXEC).unwrap_or_else(|_| refuse("eventfd"));
        let stop_fd = stop.try_clone().unwrap_or_else(|_| refuse("dup"));
        let tid = Arc::new(AtomicI32::new(0));
        let t = Arc::clone(&tid);
        let thread = std::thread::Builder::new()
            .name("multiproc-daemon-watcher".into())
            .spawn(move || {
                t.store(
                    rustix::thread::gettid().as_raw_nonzero().get(),
                    Ordering::Release,
                );
                loop {
                    let mut fds = [
                        PollFd::new(&*pidfd, PollFlags::IN),
                        PollFd::new(&stop_fd, PollFlags::IN),
                    ];
                    match poll(&mut fds, None) {
                        Err(rustix::io::Errno::INTR) => continue,
                        Ok(_) if !fds[1].revents().is_empty() => return,
                        Ok(_) if fds[0].revents().is_empty() => continue,
                        // The parent has ended, or poll failed (not expected on
                        // valid descriptors): err on the side of never outliving it.
                        _ => {
                            let _ = rustix::process::kill_process(
                                rustix::process::getpid(),
                                Signal::KILL,
                            );
                        }
                    }
                }
            })
            .unwrap_or_else(|_| refuse("thread spawn"));
        ParentWatcher { stop, thread, tid }
    }

    /// Stops and joins the thread; returns its tid.
    pub(crate) fn stop(self) -> i32 {
        // An eventfd write of 1 cannot block (the counter starts at 0).
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
        let _ = self.thread.join();
        self.tid.load(Ordering::Acquire)
    }
}

/// For the identity tests of every start method: what a started child does. It
/// writes its own identity word, says so, and waits for the test to have read
/// `/proc`.
#[cfg(test)]
pub(crate) fn report_identity(
    (word, ready, go): (crate::RawValue<u32>, crate::Event, crate::Event),
) {
    word.set(crate::sync::ident::process());
    ready.set();
    assert!(go.wait(Some(Duration::from_secs(30))).unwrap());
}

/// Starts the child `make` builds (from the word, the ready and the go events it
/// is to pass to [`report_identity`]) and checks that the identity it computed for
/// itself is the one `/proc` gives for its pid.
#[cfg(test)]
pub(crate) fn assert_names_itself_as_proc_names_it(
    make: impl FnOnce(crate::RawValue<u32>, crate::Event, crate::Event) -> Process,
) {
    use crate::sync::ident;
    const BOUND: Duration = Duration::from_secs(30);
    let word = crate::RawValue::<u32>::new(0).unwrap();
    let (ready, go) = (crate::Event::new().unwrap(), crate::Event::new().unwrap());
    let mut p = make(word.clone(), ready.clone(), go.clone());
    p.start().unwrap();
    assert!(ready.wait(Some(BOUND)).unwrap());
    let seen = ident::process_of(p.pid().unwrap());
    go.set();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert_ne!(seen >> 22 & 0x1ff, ident::TAG_UNKNOWN, "/proc was readable");
    assert_eq!(
        word.get(),
        seen,
        "the child's own word differs from /proc's"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::shm::arena::Block;

    const BOUND: Duration = Duration::from_secs(30);

    /// A forked child's identity (taken from the fork's clock readings when they
    /// share a tick) is the word `/proc` gives for it: what every other process
    /// checking it as a lock owner computes. A wrong start time would make it
    /// look dead (its pid reused) to them.
    #[test]
    fn a_forked_child_names_itself_as_proc_names_it() {
        for _ in 0..50 {
            assert_names_itself_as_proc_names_it(|w, r, g| {
                Process::new(move || report_identity((w, r, g)))
            });
        }
    }

    /// The code a forked child runs sits together (`sys::fork::child_path!`):
    /// the functions of its path lie within 16 KiB of one another, where the
    /// crate's code spans megabytes. (What that saves, page faults in each
    /// child, is measured with the S8 benchmark, not here.)
    #[test]
    fn the_child_s_path_sits_in_one_small_code_section() {
        let at: [(&str, usize); 10] = [
            ("fork_child", Process::fork_child as *const () as usize),
            ("run_child", Process::run_child as *const () as usize),
            ("alone_before_exit", alone_before_exit as *const () as usize),
            ("fork", crate::sys::fork::fork as *const () as usize),
            ("exit_now", crate::sys::fork::exit_now as *const () as usize),
            (
                "single_threaded",
                crate::sys::fork::single_threaded as *const () as usize,
            ),
            (
                "become_child",
                registry::Registry::become_child as *const () as usize,
            ),
            (
                "close_sole",
                crate::sys::fork::close_sole as *const () as usize,
            ),
            ("prime", crate::sync::ident::prime as *const () as usize),
            ("adopt", inherit::adopt as *const () as usize),
        ];
        let lo = at.iter().map(|a| a.1).min().unwrap();
        let hi = at.iter().map(|a| a.1).max().unwrap();
        // The layout is what the optimised build (the one that is measured and
        // tested: `cargo test --release`) gets; unoptimised code is several times
        // larger, and its section need not fit the same window.
        let limit = if cfg!(debug_assertions) {
            64 << 10
        } else {
            16 << 10
        };
        assert!(
            hi - lo < limit,
            "the child's path spans {} bytes: {:x?}",
            hi - lo,
            at.map(|(n, a)| (n, a - lo))
        );
    }

    /// A daemon releases its holds on the parent's shared blocks when its closure
    /// returns, as any child does (its parent-watcher thread does not count as a
    /// thread that could still use them): the block's process count falls back
    /// to 1.
    #[test]
    fn a_daemon_releases_its_holds_when_its_closure_returns() {
        let block = Block::alloc(8).unwrap();
        let (go, running) = (Event::new().unwrap(), Event::new().unwrap());
        let (g, r, b) = (go.clone(), running.clone(), block.clone());
        let mut d = Process::new(move || {
            r.set();
            assert!(g.wait(Some(BOUND)).unwrap());
            b.map().write::<u64>(b.offset(), 5);
        })
        .daemon(true);
        d.start().unwrap();
        assert!(running.wait(Some(BOUND)).unwrap());
        assert_eq!(
            block.refcount(),
            2,
            "the daemon holds the block it captured"
        );
        go.set();
        assert_eq!(d.join(Some(BOUND)).unwrap(), Some(0));
        assert_eq!(
            block.refcount(),
            1,
            "the daemon kept its hold on the parent's block after its closure returned"
        );
        assert_eq!(block.map().read::<u64>(block.offset()), 5);
    }
}
