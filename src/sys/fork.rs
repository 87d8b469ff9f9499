//! `fork(2)`, `_exit(2)` and the fork generation.
//!
//! Caches of "who am I" (pid, tid, start time) go stale in a forked child. Rather
//! than paying a `getpid` system call on every lock acquire, multiproc registers a
//! `pthread_atfork` child handler that bumps [`generation`]; caches compare it with
//! the generation they were filled in.

use std::sync::Once;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Puts the function it wraps into the code section `multiproc_fork_child`,
/// with the rest of the code a child forked by `Process::start` runs between
/// the fork and its `_exit`.
///
/// Why: a fork copies no page-table entry of the program's code (file-backed
/// mappings with no private page are left for the child to fault in, and the
/// kernel maps up to 16 pages around each fault: one fault per 64 KiB window of
/// code touched). The child's path, spread over the crate's code, touched about
/// six such windows besides libc's and std's, a fault each, and as many page
/// tables to fill and tear down again at its exit. Gathered in one section
/// (under 16 KiB; the linker keeps a section it has no rule for in one piece),
/// it takes one or two. Functions inlined into others are placed with them;
/// only the functions on that path belong here (the parent's side of `start`
/// does not).
///
/// `link_section` is an unsafe attribute (a section the loader treats
/// specially could change a program's meaning); this section is an ordinary
/// code section of a name no loader or runtime knows, so it changes nothing
/// but where the code sits.
macro_rules! child_path {
    ($(#[$attr:meta])* $vis:vis extern "C" fn $($rest:tt)*) => {
        #[unsafe(link_section = "multiproc_fork_child")]
        $(#[$attr])*
        $vis extern "C" fn $($rest)*
    };
    ($(#[$attr:meta])* $vis:vis fn $($rest:tt)*) => {
        #[unsafe(link_section = "multiproc_fork_child")]
        $(#[$attr])*
        $vis fn $($rest)*
    };
}
pub(crate) use child_path;

static GENERATION: AtomicU32 = AtomicU32::new(1);
static INSTALL: Once = Once::new();

child_path! {
    extern "C" fn after_fork_in_child() {
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
}

/// Registers the fork handler (once per process image; forks inherit it).
///
/// Every fork made through [`Process`](crate::Process) calls it; call it yourself before forking by other means, so that the
/// generation still changes in those children.
pub fn install_hooks() {
    INSTALL.call_once(|| {
        // SAFETY: `pthread_atfork` only records the function pointer; the handler is
        // async-signal-safe (one relaxed atomic add) as a fork child handler must be.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        debug_assert_eq!(rc, 0);
    });
}

/// A number that changes in every forked child: compare it to detect a new process.
#[inline]
pub fn generation() -> u32 {
    GENERATION.load(Ordering::Relaxed)
}

/// `generation << 32 | pid`, filled by [`pid`] once the fork hooks are installed
/// (so that every later fork that runs the at-fork handlers — glibc's `fork`,
/// and `fork_sibling`, which calls the handler itself — changes the generation
/// and makes it stale; a raw `clone` or glibc's `_Fork` does not: see
/// `process::ForeignFork`).
static PID: AtomicU64 = AtomicU64::new(0);

/// The calling process's pid, cached per fork [`generation`]: `getpid` is a real
/// system call (glibc caches nothing since 2.25), and starting and joining one
/// process asked it about ten times.
#[inline]
pub(crate) fn pid() -> i32 {
    let v = PID.load(Ordering::Relaxed);
    if (v >> 32) as u32 == generation() && v as u32 != 0 {
        return v as u32 as i32;
    }
    pid_slow()
}

child_path! {
    #[cold]
    fn pid_slow() -> i32 {
        // Installed before the value is cached: from then on every fork (through
        // glibc's `fork`, which runs the handler) moves the generation on.
        install_hooks();
        let generation = generation();
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        PID.store(
            u64::from(generation) << 32 | u64::from(pid as u32),
            Ordering::Relaxed,
        );
        pid
    }
}

child_path! {
    /// Closes the descriptor `fd` holds, for a child just forked, without writing
    /// the `Arc`'s count on its heap page (shared with the parent: a copy-on-write
    /// fault): if this `Arc` is its only reference, the descriptor is closed and
    /// the allocation left as it is; otherwise the `Arc` is dropped as usual.
    pub(crate) fn close_sole(fd: std::sync::Arc<std::os::fd::OwnedFd>) {
        use std::os::fd::AsRawFd;
        if std::sync::Arc::strong_count(&fd) != 1 || std::sync::Arc::weak_count(&fd) != 0 {
            drop(fd);
            return;
        }
        let raw = fd.as_raw_fd();
        std::mem::forget(fd);
        // SAFETY: the `Arc` was the only owner of the `OwnedFd` (one strong
        // reference, no weak one that could upgrade; no other thread can make one
        // meanwhile, since it would need a reference it does not have), and it is
        // forgotten: nothing will use or close `raw` again. Closing it is the
        // `OwnedFd`'s own drop, done without freeing its memory.
        unsafe { rustix::io::close(raw) };
    }
}

/// Which side of a fork the caller is on.
pub(crate) enum Forked {
    /// In the parent; the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

child_path! {
    /// Forks the calling process.
    ///
    /// The child has one thread, a copy of the parent's memory and every shared
    /// mapping. It should run its work and leave through [`exit_now`], so that it never
    /// runs the parent's destructors, `atexit` handlers or stdio flushes.
    ///
    /// Crate-private on purpose: a child forked from a multi-threaded parent may only
    /// call async-signal-safe functions until it execs, which a safe public `fork` could
    /// not promise. Users fork through [`Process`](crate::Process), which runs only the
    /// user's closure in the child and documents that caveat.
    pub(crate) fn fork() -> std::io::Result<Forked> {
        install_hooks();
        // SAFETY: fork is sound to call; its hazard is in what the child does next with a
        // single thread (locks held by other parent threads stay held). Callers run only
        // their own closure in the child and leave with `_exit`, as `Process` does, and
        // the docs of `Process` state the multi-threaded-parent caveat Python also has.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(std::io::Error::last_os_error()),
            0 => Ok(Forked::Child),
            pid => Ok(Forked::Parent(pid)),
        }
    }
}

/// The kernel's `struct clone_args` up to `tls` (`CLONE_ARGS_SIZE_VER0`, Linux
/// 5.3): every field a `u64`, the same on every architecture (unlike `clone`'s
/// argument order).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// Forks the calling process *as its sibling*: the child's parent is the
/// caller's own parent (`CLONE_PARENT`), which therefore waits for it
/// (`waitpid`, its exit code and signal) as for any child of its own, and gets
/// `SIGCHLD` for it. In the parent, the child's pid and a pidfd of it, made by
/// the kernel in the same call (`CLONE_PIDFD`: no window in which the pid could
/// be reaped and reused). For the forkserver, whose children then belong to the
/// process that asked for them: its exit needs no relay through the server.
///
/// It is the fork glibc makes (`clone` with `CLONE_CHILD_SETTID |
/// CLONE_CHILD_CLEARTID` on the thread's own tid word, which glibc's `pthread`
/// functions read on the calling thread; the robust-mutex list registered again
/// in the child, since the kernel clears it at every fork; multiproc's fork
/// generation bumped), plus `CLONE_PARENT`; glibc has no call for that, so it is
/// `clone3` made here. What glibc's `fork` does besides, and this does not:
/// resetting its internal locks (malloc's, stdio's, the loader's) and running
/// the `pthread_atfork` handlers of other libraries (glibc itself resets those
/// locks only when the caller has several threads). Hence only for a
/// single-threaded caller that holds none of those locks and has run no code
/// that registers such handlers (the forkserver, between requests: it runs
/// nothing but `spawn::init`, the first line of `main`, and its loop, so only a
/// handler registered by a static constructor before `main` is skipped in its
/// children): refused with `Unsupported` if another thread exists. In the parent the pidfd is always
/// `Some`. Also `Unsupported` when the kernel
/// does not give the tid word's address (`PR_GET_TID_ADDRESS` needs
/// `CONFIG_CHECKPOINT_RESTORE`) or refuses `clone3` (before Linux 5.3, some
/// seccomp filters): the caller then forks the usual way.
pub(crate) fn fork_sibling() -> std::io::Result<(Forked, Option<std::os::fd::OwnedFd>)> {
    use std::io::{Error, ErrorKind};
    use std::os::fd::{FromRawFd, OwnedFd};
    install_hooks();
    if single_threaded() != Some(true) {
        return Err(Error::new(ErrorKind::Unsupported, "not single-threaded"));
    }
    let mut tid_word: *mut libc::c_int = std::ptr::null_mut();
    // SAFETY: `PR_GET_TID_ADDRESS` writes one pointer (the thread's
    // `clear_child_tid`) into the location given, a live local here.
    let rc = unsafe { libc::prctl(libc::PR_GET_TID_ADDRESS, &mut tid_word as *mut _, 0, 0, 0) };
    if rc != 0 || tid_word.is_null() {
        return Err(Error::new(ErrorKind::Unsupported, "PR_GET_TID_ADDRESS"));
    }
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    // SAFETY: the kernel clears this word when the thread exits, so glibc points
    // it at a field of this (running) thread's descriptor: valid and aligned for
    // the thread's life. Read-only here; the check makes sure it is the word that
    // holds this thread's tid before the kernel is told to write the child's tid
    // into the child's copy of it.
    if unsafe { std::ptr::read_volatile(tid_word) } != tid {
        return Err(Error::new(ErrorKind::Unsupported, "tid word"));
    }
    let (mut head, mut len): (usize, usize) = (0, 0);
    // SAFETY: `get_robust_list` of the calling thread (pid 0) writes one pointer
    // and one length into the two live locals.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut usize,
            &mut len as *mut usize,
        )
    };
    if rc != 0 {
        return Err(Error::new(ErrorKind::Unsupported, "get_robust_list"));
    }
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_PARENT
            | libc::CLONE_PIDFD
            | libc::CLONE_CHILD_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        child_tid: tid_word as u64,
        // With `CLONE_PARENT` the child's exit signal is the caller's own (the
        // kernel requires 0 here).
        exit_signal: 0,
        ..CloneArgs::default()
    };
    // SAFETY: `clone3` without `CLONE_VM` and with no stack is a fork: the child
    // gets a copy of this single-threaded process (checked above, so no lock of
    // another thread is held in the copy) and returns here on the same stack.
    // The kernel writes the pidfd into `pidfd` (a live local) in the parent and
    // the child's tid into the child's copy of `tid_word` (checked above).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match pid {
        -1 => {
            let e = Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EPERM | libc::E2BIG | libc::EINVAL) => {
                    Err(Error::new(ErrorKind::Unsupported, e))
                }
                _ => Err(e),
            }
        }
        0 => {
            // SAFETY: re-registers this thread's robust list (the kernel cleared
            // the registration in the new process) at the same address and
            // length the parent thread had, as glibc's `fork` does; the list
            // head lives in the thread's descriptor, copied with the memory.
            unsafe { libc::syscall(libc::SYS_set_robust_list, head, len) };
            after_fork_in_child();
            Ok((Forked::Child, None))
        }
        pid => {
            let pid = pid as i32;
            let fd = if pidfd >= 0 {
                // SAFETY: with `CLONE_PIDFD` the kernel stored a new descriptor,
                // owned by nobody else, into `pidfd`.
                unsafe { OwnedFd::from_raw_fd(pidfd) }
            } else {
                // Not expected (the kernel sets it whenever the call succeeds);
                // the child cannot be reaped by anyone but our parent yet.
                let raw =
                    rustix::process::Pid::from_raw(pid).expect("clone3 returns a positive pid");
                rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())?
            };
            Ok((Forked::Parent(pid), Some(fd)))
        }
    }
}

child_path! {
    /// Whether the calling process has a single thread: `Some(true)` if so,
    /// `Some(false)` if it has others, `None` if the kernel would not say.
    ///
    /// One system call and no allocation, so that a forked child can ask just before
    /// `_exit` without copying heap pages (a count of `/proc/self/task` opens a
    /// directory, allocates its buffers and took about a fifth of an empty child's
    /// time). `unshare(CLONE_THREAD)` changes nothing: the kernel implements the flag
    /// only as a check, and fails it with `EINVAL` when the thread group has another
    /// thread (`check_unshare_flags`, `thread_group_empty`). A thread that has exited
    /// but is not yet released still counts: the answer errs towards "others". Any
    /// other error (a seccomp filter refusing `unshare`, say) is `None`.
    pub(crate) fn single_threaded() -> Option<bool> {
        // SAFETY: `unshare` with `CLONE_THREAD` alone unshares nothing (neither the
        // descriptor table nor any namespace): it only checks that the caller is the
        // sole thread of its group, so no other thread's view of this process changes.
        let r = unsafe {
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::from_bits_retain(
                libc::CLONE_THREAD as u32,
            ))
        };
        match r {
            Ok(()) => Some(true),
            Err(rustix::io::Errno::INVAL) => Some(false),
            Err(_) => None,
        }
    }
}

child_path! {
    /// Ends the calling process at once with `code`, running no destructors, `atexit`
    /// handlers or stdio flushes (flush what you wrote first).
    pub fn exit_now(code: i32) -> ! {
        // SAFETY: `_exit` is always sound; it never returns.
        unsafe { libc::_exit(code) }
    }
}

/// A fork start's floor: `fork()`, `_exit(0)` at once in the child, `waitpid`
/// in the parent, as a C program's loop does it, and nothing of `Process`'s (no
/// lock held across the fork, no pidfd, no registry, no clock reading). For the
/// benchmark's reference row ([`fork_floor`](crate::process::fork_floor)).
pub(crate) fn fork_exit_reap() -> std::io::Result<()> {
    // SAFETY: the child calls nothing but `_exit`, which is async-signal-safe,
    // so it is sound even if another thread of the parent held a lock at the
    // fork; the parent only waits for that child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        0 => exit_now(0),
        pid => {
            let pid = rustix::process::Pid::from_raw(pid).expect("fork returns a positive pid");
            loop {
                match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
                    Ok(Some((_, status))) if status.exit_status() == Some(0) => return Ok(()),
                    Ok(other) => {
                        return Err(std::io::Error::other(format!(
                            "the floor's child ended unexpectedly: {other:?}"
                        )));
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    #[test]
    fn install_hooks_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::fork::{exit_now, generation, install_hooks};
        use rustix::process::{Pid, WaitOptions, waitpid};
        install_hooks();
        install_hooks(); // idempotent
        let before = generation();
        // SAFETY: the child only reads an atomic and leaves through `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            exit_now(if generation() != before { 0 } else { 1 });
        }
        let (_, status) = waitpid(Pid::from_raw(pid), WaitOptions::empty())
            .unwrap()
            .unwrap();
        assert_eq!(status.exit_status(), Some(0)); // the hook ran in the child
        assert_eq!(generation(), before); // and not in the parent
        Ok(())
    }

    #[test]
    fn generation_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::fork::generation;
        use crate::{Process, RawValue};
        use std::time::Duration;
        let parent = generation();
        let seen = RawValue::new(parent)?;
        let s = seen.clone();
        let mut p = Process::new(move || s.set(generation()));
        p.start()?;
        p.join(Some(Duration::from_secs(10)))?;
        assert_ne!(seen.get(), parent); // a new process, a new generation
        assert_eq!(generation(), parent);
        Ok(())
    }

    /// One thread, then two: the kernel's answer follows, in a forked child
    /// (the test process itself has libtest's threads).
    #[test]
    fn single_threaded_tells_one_thread_from_several() {
        use crate::sys::fork::single_threaded;
        use crate::{Process, RawValue};
        use std::time::Duration;
        let seen = RawValue::new(0u32).unwrap();
        let s = seen.clone();
        let mut p = Process::new(move || {
            let alone = single_threaded();
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let t = std::thread::spawn(move || {
                let _ = rx.recv();
            });
            let two = single_threaded();
            drop(tx);
            t.join().unwrap();
            s.set(match (alone, two) {
                (Some(true), Some(false)) => 1,
                _ => 2,
            });
        });
        p.start().unwrap();
        assert_eq!(p.join(Some(Duration::from_secs(30))).unwrap(), Some(0));
        assert_eq!(seen.get(), 1, "alone, then not alone");
    }

    /// `fork_sibling` from a single-threaded process (a forked child of the
    /// test): the grandchild is the test process's own child, and glibc's view
    /// of its thread is right (the tid word holds its tid; its robust-mutex list
    /// is registered at the address the forking thread had).
    #[test]
    fn fork_sibling_makes_a_child_of_the_parent_with_glibc_state_right() {
        use crate::sys::fork::{Forked, exit_now, fork_sibling};
        use crate::{Process, RawValue};
        use rustix::process::{Pid, WaitOptions, waitpid};
        use std::time::Duration;
        /// Exit code 0 if the tid word and the robust list are this thread's.
        fn check(head: usize) -> i32 {
            let mut word: *mut libc::c_int = std::ptr::null_mut();
            // SAFETY: writes one pointer into the live local.
            if unsafe { libc::prctl(libc::PR_GET_TID_ADDRESS, &mut word as *mut _, 0, 0, 0) } != 0 {
                return 10;
            }
            // SAFETY: the kernel's clear_child_tid of this live thread (glibc's tid
            // field in its thread descriptor).
            if word.is_null() || unsafe { *word } != rustix::thread::gettid().as_raw_nonzero().get()
            {
                return 11;
            }
            let (mut h, mut len) = (0usize, 0usize);
            // SAFETY: writes a pointer and a length into the live locals.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_get_robust_list,
                    0,
                    &mut h as *mut usize,
                    &mut len as *mut usize,
                )
            };
            if rc != 0 || h != head || h == 0 {
                return 12;
            }
            0
        }
        let me = rustix::process::getpid();
        let grandchild = RawValue::new(0i32).unwrap();
        let g = grandchild.clone();
        let mut p = Process::new(move || {
            let (mut head, mut len) = (0usize, 0usize);
            // SAFETY: as in `check`.
            unsafe {
                libc::syscall(
                    libc::SYS_get_robust_list,
                    0,
                    &mut head as *mut usize,
                    &mut len as *mut usize,
                )
            };
            match fork_sibling() {
                Ok((Forked::Child, _)) => {
                    let code = match check(head) {
                        0 if rustix::process::getppid() == Some(me) => 0,
                        0 => 13,
                        c => c,
                    };
                    exit_now(code)
                }
                Ok((Forked::Parent(pid), Some(_pidfd))) => g.set(pid),
                other => panic!("fork_sibling: {:?}", other.err()),
            }
        });
        p.start().unwrap();
        assert_eq!(p.join(Some(Duration::from_secs(30))).unwrap(), Some(0));
        let pid = Pid::from_raw(grandchild.get()).expect("the child forked");
        // Ours to wait for: the child's sibling, not its child.
        let (_, status) = waitpid(Some(pid), WaitOptions::empty()).unwrap().unwrap();
        assert_eq!(status.exit_status(), Some(0), "{status:?}");
    }

    #[test]
    fn exit_now_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Process;
        use crate::sys::fork::exit_now;
        use std::time::Duration;
        let mut p = Process::new(|| exit_now(42)); // nothing after this runs in the child
        p.start()?;
        assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(42));
        Ok(())
    }
}
