//! `fork(2)`, `_exit(2)` and the fork generation.
//!
//! Caches of "who am I" (pid, tid, start time) go stale in a forked child. Rather
//! than paying a `getpid` system call on every lock acquire, multiproc registers a
//! `pthread_atfork` child handler that bumps [`generation`]; caches compare it with
//! the generation they were filled in.

use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

static GENERATION: AtomicU32 = AtomicU32::new(1);
static INSTALL: Once = Once::new();

extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
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

/// Which side of a fork the caller is on.
pub(crate) enum Forked {
    /// In the parent; the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

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

/// Ends the calling process at once with `code`, running no destructors, `atexit`
/// handlers or stdio flushes (flush what you wrote first).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always sound; it never returns.
    unsafe { libc::_exit(code) }
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
