//! Owner identities: who holds a lock, in one 32-bit word, checkable for death.
//!
//! An owner word is `id | tag << 22`:
//! - `id` (bits 0..22) is a pid (for [`Lock`](super::Lock), owned by a process) or a
//!   tid (for [`RLock`](super::RLock), owned by a thread). Linux caps pids at
//!   `PID_MAX_LIMIT` = 2^22, so every id fits and none is 0.
//! - `tag` (bits 22..31) is 9 bits of a hash of the owner's *start time*. When the
//!   owner dies and its pid is reused, the new process almost surely (511 in 512) has
//!   another tag, so the dead owner is still recognized as dead.
//! - Bit 31 is left to the lock word's `CONTENDED` flag.
//!
//! Computing an identity reads `/proc`, so each process (and thread) computes its
//! own once and caches it, keyed by the fork generation so that a forked child never
//! uses its parent's.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{fork, procfs};

/// Bits holding the pid or tid.
///
/// ```
/// use multiproc::sync::ident::{self, ID_MASK};
/// let me = ident::process();
/// assert_eq!(me & ID_MASK, std::process::id());
/// assert!(std::process::id() <= ID_MASK); // every pid fits (PID_MAX_LIMIT is 2^22)
/// ```
pub const ID_MASK: u32 = (1 << 22) - 1;
const TAG_SHIFT: u32 = 22;
const TAG_MASK: u32 = 0x1ff;
/// Bits of a lock word that name the owner (id and tag).
///
/// ```
/// use multiproc::sync::ident::{self, OWNER_MASK};
/// // Owner words never use bit 31: it stays free for the lock word's CONTENDED flag.
/// assert_eq!(ident::process() & !OWNER_MASK, 0);
/// assert_eq!(ident::thread() & !OWNER_MASK, 0);
/// ```
pub const OWNER_MASK: u32 = (1 << 31) - 1;

fn tag_of(start_time: u64) -> u32 {
    // Fibonacci hashing spreads consecutive start times over all 512 tags.
    ((start_time.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 55) as u32) & TAG_MASK
}

fn word(id: u32, start_time: u64) -> u32 {
    (id & ID_MASK) | tag_of(start_time) << TAG_SHIFT
}

/// The id part of an owner word: a pid (Lock) or a tid (RLock).
///
/// ```
/// use multiproc::sync::ident;
/// let me = ident::process();
/// assert_eq!(ident::id_of(me), std::process::id());
/// // Neither the CONTENDED bit nor the tag is part of the id.
/// assert_eq!(ident::id_of(me | (1 << 31)), std::process::id());
/// assert_eq!(ident::id_of(me ^ (1 << 22)), std::process::id());
/// ```
pub fn id_of(owner: u32) -> u32 {
    owner & ID_MASK
}

static PROCESS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

#[inline]
fn cached(v: u64) -> Option<u32> {
    ((v >> 32) as u32 == fork::generation() && v as u32 != 0).then_some(v as u32)
}

/// This process's owner word.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Process, RawValue};
/// use multiproc::sync::ident;
/// let me = ident::process();
/// assert_eq!(ident::process(), me); // cached
/// assert_eq!(ident::id_of(me), std::process::id());
/// assert!(!ident::is_gone(me));
///
/// // A forked child computes its own identity, not its parent's.
/// let seen = RawValue::<u32>::new(0)?;
/// let s = seen.clone();
/// let mut child = Process::new(move || s.set(ident::process()));
/// child.start()?;
/// assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
/// assert_ne!(seen.get(), me);
/// assert_eq!(Some(ident::id_of(seen.get())), child.pid());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[inline]
pub fn process() -> u32 {
    match cached(PROCESS.load(Ordering::Relaxed)) {
        Some(w) => w,
        None => process_slow(),
    }
}

#[cold]
fn process_slow() -> u32 {
    fork::install_hooks();
    let generation = fork::generation();
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let w = word(pid, procfs::current_process_start_time());
    PROCESS.store((generation as u64) << 32 | w as u64, Ordering::Relaxed);
    w
}

/// The calling thread's owner word.
///
/// ```
/// use multiproc::sync::ident;
/// let t = ident::thread();
/// assert_eq!(ident::thread(), t); // cached
/// assert!(!ident::is_gone(t));
/// // Another thread of this process has another id (its tid).
/// let other = std::thread::spawn(ident::thread).join().unwrap();
/// assert_ne!(ident::id_of(other), ident::id_of(t));
/// ```
#[inline]
pub fn thread() -> u32 {
    THREAD.with(|c| match cached(c.get()) {
        Some(w) => w,
        None => {
            let w = thread_slow();
            c.set((fork::generation() as u64) << 32 | w as u64);
            w
        }
    })
}

#[cold]
fn thread_slow() -> u32 {
    fork::install_hooks();
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    word(tid, procfs::current_thread_start_time())
}

/// Whether the owner named by `owner` (an owner word) no longer runs: no task with
/// its id, a zombie, or a task with that id but another start time (pid reuse).
///
/// "No task with its id" counts only when `/proc` answers at all (this process can
/// read its own entry): without a mounted `/proc` every owner would look gone, and
/// waiters would take live owners' locks. Then nothing is ever declared gone:
/// owner death is not detected, but mutual exclusion holds.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Process, RawValue};
/// use multiproc::sync::ident;
/// let me = ident::process();
/// assert!(!ident::is_gone(me));
///
/// // A child that has exited (and been reaped) is gone.
/// let word = RawValue::<u32>::new(0)?;
/// let w = word.clone();
/// let mut child = Process::new(move || w.set(ident::process()));
/// child.start()?;
/// assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
/// assert!(ident::is_gone(word.get()));
///
/// // This pid with another start-time tag: what a dead owner looks like once its
/// // pid is reused by a live process (here, this one). Gone too.
/// let stranger = me ^ (1 << 22);
/// assert_eq!(ident::id_of(stranger), std::process::id());
/// assert!(ident::is_gone(stranger));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn is_gone(owner: u32) -> bool {
    gone_by(owner, procfs::task_stat, procfs_answers)
}

fn gone_by(
    owner: u32,
    stat: impl Fn(u32) -> Option<procfs::TaskStat>,
    proc_answers: impl Fn() -> bool,
) -> bool {
    let owner = owner & OWNER_MASK;
    match stat(owner & ID_MASK) {
        None => proc_answers(),
        Some(stat) => stat.is_dead() || tag_of(stat.start_time) != (owner >> TAG_SHIFT) & TAG_MASK,
    }
}

/// Whether `/proc` shows this process (checked once per process image).
fn procfs_answers() -> bool {
    static ANSWERS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWERS.get_or_init(|| {
        procfs::task_stat(rustix::process::getpid().as_raw_nonzero().get() as u32).is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_identity_is_alive_and_distinct_per_thread() {
        let p = process();
        let t = thread();
        assert_ne!(p, 0);
        assert!(!is_gone(p));
        assert!(!is_gone(t));
        let other = std::thread::spawn(thread).join().unwrap();
        assert_ne!(other, t);
        // The thread has exited: its identity is gone.
        assert!(is_gone(other));
        // Same pid, another start time: a reused pid is not the old owner.
        let stranger = (p & ID_MASK) | (((p >> TAG_SHIFT) + 1) & TAG_MASK) << TAG_SHIFT;
        assert!(is_gone(stranger));
    }

    /// Regression: with no `/proc` (a container without it mounted), every owner
    /// looked gone, so a waiter took a live owner's lock after one slice.
    #[test]
    fn without_proc_no_owner_is_declared_gone() {
        let live = procfs::TaskStat {
            state: b'S',
            start_time: 1234,
        };
        let owner = word(77, 1234);
        let no_proc = |_: u32| None;
        assert!(!gone_by(owner, no_proc, || false), "no /proc: assume alive");
        assert!(
            gone_by(owner, no_proc, || true),
            "/proc works: absent is gone"
        );
        assert!(!gone_by(owner, |_| Some(live), || true));
        let zombie = procfs::TaskStat {
            state: b'Z',
            ..live
        };
        assert!(gone_by(owner, |_| Some(zombie), || true));
        // Pid reused by a process with another start time (and tag).
        let reused = procfs::TaskStat {
            start_time: (0..).find(|&t| tag_of(t) != tag_of(1234)).unwrap(),
            ..live
        };
        assert!(gone_by(owner, |_| Some(reused), || true));
        assert!(procfs_answers());
    }
}
