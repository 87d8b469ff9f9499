//! Owner identities: who holds a lock, in one 32-bit word, checkable for death.
//!
//! An owner word is `id | tag << 22`:
//! - `id` (bits 0..22) is a pid (for [`Lock`](super::Lock), owned by a process) or a
//!   tid (for [`RLock`](super::RLock), owned by a thread). Linux caps pids at
//!   `PID_MAX_LIMIT` = 2^22, so every id fits and none is 0.
//! - `tag` (bits 22..31) says which task with that id:
//!   - `1..=511`: a hash of the owner's *start time*. When the owner dies and its pid
//!     is reused, the new process almost surely (510 in 511) has another tag, so the
//!     dead owner is still recognized as dead.
//!   - `0` ([`TAG_UNKNOWN`]): the owner could not read its start time (at the fd
//!     limit, say) when it named itself. Such an owner is gone only when no task has
//!     its id or that task has finished; a reused pid passes for it.
//! - Bit 31 is left to the lock word's `CONTENDED` flag.
//!
//! Unknown is not dead: a check that cannot read `/proc` (any error but `ENOENT` or
//! `ESRCH`) says the owner lives, so a failing `/proc` costs owner-death detection,
//! never mutual exclusion. Even `ENOENT` means "gone" only while `/proc` speaks for
//! this pid namespace (`procfs::answers`: `/proc/self` is this pid), checked again
//! in every forked child, which may have been forked into a new pid namespace.
//!
//! ## The identity caches (per process image, and per thread)
//! Computing an identity reads `/proc`, so each process (and thread) computes its
//! own and caches it as `generation << 32 | word`, keyed by the fork generation so
//! that a forked child never uses its parent's. The states of a cache:
//! - generation not the current one, or word 0: not computed in this process image.
//! - a word with tag `1..=511`: final; returned from then on without a system call.
//! - a word with [`TAG_UNKNOWN`]: provisional, the read failed. The read is retried
//!   on a call at least [`RETRY`] after the last failure (not before, so that a
//!   process without `/proc` does not pay an `open` per lock operation), and the
//!   first success makes the word final.
//!
//! A provisional word may still be held somewhere after the upgrade (a lock taken
//! under it), so "is this word mine" is [`is_this_process`] / [`is_this_thread`],
//! which accept both forms of the caller's own id, never `==` on the word.
//! [`prime`] computes both identities now, while `/proc` can be read (at the start of
//! a child process, before the user's code can exhaust the fd table).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::sys::alarm::Alarm;
use crate::sys::fork;
use crate::sys::procfs::{self, Probe};

/// Bits holding the pid or tid.
pub const ID_MASK: u32 = (1 << 22) - 1;
const TAG_SHIFT: u32 = 22;
const TAG_MASK: u32 = 0x1ff;
/// The tag of an owner that could not read its own start time.
pub const TAG_UNKNOWN: u32 = 0;
/// Bits of a lock word that name the owner (id and tag).
pub const OWNER_MASK: u32 = (1 << 31) - 1;
/// How long a provisional identity is used before `/proc` is read again.
pub const RETRY: Duration = Duration::from_millis(10);

/// The tag of a start time: `1..=511`, never [`TAG_UNKNOWN`].
fn tag_of(start_time: u64) -> u32 {
    // Fibonacci hashing spreads consecutive start times; the top 32 bits are then
    // scaled onto 0..511 (multiply-shift) and moved up by one.
    let h = start_time.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    ((h * TAG_MASK as u64) >> 32) as u32 + 1
}

/// The owner word of `id` with a start time, or with [`TAG_UNKNOWN`] for `None`.
fn word(id: u32, start_time: Option<u64>) -> u32 {
    (id & ID_MASK) | start_time.map_or(TAG_UNKNOWN, tag_of) << TAG_SHIFT
}

fn tag_in(owner: u32) -> u32 {
    (owner >> TAG_SHIFT) & TAG_MASK
}

/// The id part of an owner word: a pid (Lock) or a tid (RLock).
pub fn id_of(owner: u32) -> u32 {
    owner & ID_MASK
}

/// `generation << 32 | word`: the states are in the module documentation.
static PROCESS: AtomicU64 = AtomicU64::new(0);
/// While PROCESS is provisional: the monotonic time (ns) of the next read.
static PROCESS_RETRY: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// As PROCESS, for the calling thread.
    static THREAD: AtomicU64 = const { AtomicU64::new(0) };
    /// As PROCESS_RETRY, for the calling thread.
    static THREAD_RETRY: AtomicU64 = const { AtomicU64::new(0) };
}

/// The final word of a cache value, if it is one of this generation.
#[inline]
fn cached(v: u64, generation: u32) -> Option<u32> {
    let w = v as u32;
    ((v >> 32) as u32 == generation && w != 0 && tag_in(w) != TAG_UNKNOWN).then_some(w)
}

fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The identity of `id` from the cache `slot`, reading the start time with `read`
/// when the cache holds no final word and a read is due; see the module
/// documentation for the states. Only a successful read is cached as final.
/// `now_ns` is called only when a provisional word is involved: the first read
/// in a fresh child (the common case) needs no clock, whose first use in a
/// process image also sets up rustix's vDSO lookup (a `prctl` and page faults).
fn identity(
    slot: &AtomicU64,
    retry: &AtomicU64,
    generation: u32,
    id: u32,
    now_ns: impl Fn() -> u64,
    read: impl FnOnce() -> Option<u64>,
) -> u32 {
    let v = slot.load(Ordering::Relaxed);
    if let Some(w) = cached(v, generation) {
        return w;
    }
    let provisional = (v >> 32) as u32 == generation && v as u32 != 0;
    if provisional && now_ns() < retry.load(Ordering::Relaxed) {
        return v as u32;
    }
    match read() {
        Some(start_time) => {
            let w = word(id, Some(start_time));
            slot.store((generation as u64) << 32 | w as u64, Ordering::Relaxed);
            w
        }
        None => {
            let w = word(id, None);
            retry.store(now_ns() + RETRY.as_nanos() as u64, Ordering::Relaxed);
            // Never over a final word another thread stored meanwhile.
            let _ = slot.compare_exchange(
                v,
                (generation as u64) << 32 | w as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            w
        }
    }
}

/// This process's owner word.
#[inline]
pub fn process() -> u32 {
    match cached(PROCESS.load(Ordering::Relaxed), fork::generation()) {
        Some(w) => w,
        None => process_slow(),
    }
}

#[cold]
fn process_slow() -> u32 {
    fork::install_hooks();
    let pid = fork::pid() as u32;
    identity(
        &PROCESS,
        &PROCESS_RETRY,
        fork::generation(),
        pid,
        now_ns,
        procfs::read_process_start_time,
    )
}

/// The calling thread's owner word.
#[inline]
pub fn thread() -> u32 {
    THREAD.with(
        |c| match cached(c.load(Ordering::Relaxed), fork::generation()) {
            Some(w) => w,
            None => thread_slow(c),
        },
    )
}

#[cold]
fn thread_slow(slot: &AtomicU64) -> u32 {
    fork::install_hooks();
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    // The main thread (tid == pid) is the process's first task: same id, same
    // start time (`/proc/<tid>/stat` is then `/proc/<pid>/stat`), so its word is
    // the process's, read once instead of twice (a forked child primes both
    // before running its target: one `/proc` read less per process start).
    if tid == fork::pid() as u32 {
        let generation = fork::generation();
        let w = process();
        if cached((generation as u64) << 32 | w as u64, generation).is_some() {
            slot.store((generation as u64) << 32 | w as u64, Ordering::Relaxed);
            return w;
        }
    }
    THREAD_RETRY.with(|retry| {
        identity(
            slot,
            retry,
            fork::generation(),
            tid,
            now_ns,
            procfs::read_thread_start_time,
        )
    })
}

crate::sys::fork::child_path! {
    /// Computes this process's and this thread's identities now, while `/proc` can be
    /// read. A child process calls it before running user code, so that its identity
    /// is final before the user can exhaust the fd table.
    pub fn prime() {
        let _ = process();
        let _ = thread();
    }
}

crate::sys::fork::child_path! {
    /// [`prime`] in a forked child that knows its start time already (its parent
    /// bracketed the fork with clock readings: `procfs::start_ticks_between`): the
    /// same final words, with no `/proc` read (a fresh child's first read of `/proc`
    /// costs it about 25 us here: path lookup, the kernel's formatting, and faults
    /// on the code it runs). Call it only with the start time `/proc` would show,
    /// and only on a forked child's one thread (before it starts others).
    pub(crate) fn prime_started_at(start_time: u64) {
        let generation = fork::generation();
        let pid = fork::pid() as u32;
        let w = word(pid, Some(start_time));
        let v = (generation as u64) << 32 | w as u64;
        PROCESS.store(v, Ordering::Relaxed);
        // A forked child's one thread is its main thread (tid == pid, the same first
        // task): it takes the process's word, as `thread_slow` would give it, without
        // asking the kernel for the tid.
        THREAD.with(|c| c.store(v, Ordering::Relaxed));
    }
}

/// Whether `owner` names the calling process: its owner word, or its pid with
/// [`TAG_UNKNOWN`] (what it was called before its start time could be read).
pub fn is_this_process(owner: u32) -> bool {
    is_this(owner & OWNER_MASK, process())
}

/// Whether `owner` names the calling thread: its owner word, or its tid with
/// [`TAG_UNKNOWN`]. Use it, not `==`, to compare a stored word with
/// [`thread()`]: a lock taken under a provisional identity stays the thread's.
#[inline]
pub fn is_this_thread(owner: u32) -> bool {
    is_this(owner & OWNER_MASK, thread())
}

/// Whether `owner` names `me` (an identity of [`thread()`] or [`process()`]).
#[inline]
pub(crate) fn is_this(owner: u32, me: u32) -> bool {
    owner == me || owner == word(id_of(me), None)
}

/// The owner word that the running process `pid` computes for itself with
/// [`process`] (its start time read from `/proc/<pid>/stat`; [`TAG_UNKNOWN`] when
/// that cannot be read). Lets a parent name a child it just forked, as the message
/// queues do when they hand a role over to it.
pub(crate) fn process_of(pid: u32) -> u32 {
    let start = match procfs::probe(pid) {
        Probe::Found(stat) => Some(stat.start_time),
        Probe::Gone | Probe::Unknown => None,
    };
    word(pid, start)
}

/// What an owner word names: a whole process (Lock, Barrier slots) or one thread
/// (RLock, Condition slots). It decides what a zombie means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    /// The id is a pid and the owner is its thread group: it runs while any of its
    /// threads runs, even after the leader (main thread) exited with `pthread_exit`
    /// and shows as a zombie.
    Process,
    /// The id is a tid and the owner is that one task.
    Thread,
}

impl OwnerKind {
    /// Whether the owner named by `owner` no longer runs, by this kind's rules.
    pub fn is_gone(self, owner: u32) -> bool {
        gone_by(owner, self, procfs::probe, procfs::answers)
    }
}

/// Whether the thread named by `owner` (an owner word) no longer runs: no task with
/// its id, a zombie, or a task with that id but another start time (pid reuse).
///
/// "No task with its id" counts only when `/proc` answers at all (this process can
/// read its own entry): without a mounted `/proc` every owner would look gone, and
/// waiters would take live owners' locks. Then nothing is ever declared gone:
/// owner death is not detected, but mutual exclusion holds. A read that fails for
/// any other reason (fd limit, no memory, no permission) says nothing either: the
/// owner is taken to be alive.
pub fn is_gone(owner: u32) -> bool {
    OwnerKind::Thread.is_gone(owner)
}

/// Whether the process named by `owner` no longer runs: as [`is_gone`], except that
/// a zombie leader whose other threads still run is a running process.
pub fn is_process_gone(owner: u32) -> bool {
    OwnerKind::Process.is_gone(owner)
}

/// Death checks of the same few processes, slice after slice, for one long wait
/// (a Barrier sleeper): a `/proc` read each slice costs tens of microseconds, and
/// at 50 slices a second that was most of an idle waiter's CPU time.
///
/// The first check of an owner opens a pidfd on its pid *first*, then asks
/// [`is_process_gone`] (the `/proc` check, with the start-time tag that guards
/// against a reused pid). If that says the owner runs, the pidfd refers to the
/// owner itself (a pid reused before the open would have failed the tag check),
/// and later checks only poll it: a pidfd becomes readable once the whole thread
/// group has exited, zombie or reaped, which is exactly [`OwnerKind::Process`]'s
/// "gone". A failed open (the fd limit, say) or a failed poll falls back to the
/// `/proc` check: Unknown is not dead. At most [`Watcher::CAPACITY`] pidfds are
/// kept; they close with the watcher, at the end of the wait.
///
/// [`arm`](Watcher::arm) goes further: it hands the pidfds to this process's
/// alarm thread (`sys::alarm`), which wakes the waiter's futex word when one of
/// them fires, so that the waiter can sleep without timed slices.
#[derive(Debug, Default)]
pub(crate) struct Watcher {
    // The alarm keeps its own copies of the pidfds it armed.
    alarm: Option<Alarm>,
    no_alarm: bool,
    armed: Vec<u32>,
    known: Vec<(u32, OwnedFd)>,
}

impl Watcher {
    /// Most pidfds one watcher keeps open.
    pub(crate) const CAPACITY: usize = 64;

    /// [`is_process_gone`], answered by a poll of a cached pidfd when it can be.
    pub(crate) fn is_process_gone(&mut self, owner: u32) -> bool {
        if let Some((_, fd)) = self.known.iter().find(|(o, _)| *o == owner) {
            return procfs::pidfd_exited(fd).unwrap_or_else(|| is_process_gone(owner));
        }
        let pidfd = procfs::open_pidfd(id_of(owner & OWNER_MASK));
        let gone = is_process_gone(owner);
        if let Some(fd) = pidfd {
            if !gone && self.known.len() < Self::CAPACITY {
                self.known.push((owner, fd));
            }
        }
        gone
    }

    /// Arms an alarm on each of `owners` (each already found alive by
    /// [`is_process_gone`](Self::is_process_gone)): when one exits, the alarm
    /// thread clears the bits `clear` in `word` and wakes its sleepers. True if
    /// every one of them is armed (now or before); false if one could not be (no
    /// pidfd kept for it, no alarm in this process): the caller keeps its slices.
    /// The word and the bits must be the same at every call on one watcher.
    pub(crate) fn arm(&mut self, owners: &[u32], word: &'static AtomicU32, clear: u32) -> bool {
        for &owner in owners {
            if self.armed.contains(&owner) {
                continue;
            }
            let Some((_, fd)) = self.known.iter().find(|(o, _)| *o == owner) else {
                return false;
            };
            if self.alarm.is_none() && !self.no_alarm {
                self.alarm = Alarm::new(word, clear);
                self.no_alarm = self.alarm.is_none();
            }
            let Some(alarm) = self.alarm.as_mut() else {
                return false;
            };
            if !alarm.arm(fd.as_fd()) {
                return false;
            }
            self.armed.push(owner);
        }
        true
    }

    /// Whether one of `owners` whose pidfd this watcher keeps has exited (a poll
    /// of each; a poll that fails says nothing).
    pub(crate) fn any_gone(&self, owners: &[u32]) -> bool {
        self.known
            .iter()
            .filter(|(o, _)| owners.contains(o))
            .any(|(_, fd)| procfs::pidfd_exited(fd) == Some(true))
    }

    /// The owners armed so far.
    pub(crate) fn armed(&self) -> &[u32] {
        &self.armed
    }
}

fn gone_by(
    owner: u32,
    kind: OwnerKind,
    probe: impl Fn(u32) -> Probe,
    proc_answers: impl Fn() -> bool,
) -> bool {
    let owner = owner & OWNER_MASK;
    match probe(id_of(owner)) {
        Probe::Unknown => false,
        Probe::Gone => proc_answers(),
        Probe::Found(stat) => {
            let finished = match kind {
                OwnerKind::Thread => stat.is_dead(),
                // The leader's stat counts the whole group: more than itself means
                // other threads run.
                OwnerKind::Process => stat.is_dead() && stat.threads <= 1,
            };
            let tag = tag_in(owner);
            finished || (tag != TAG_UNKNOWN && tag_of(stat.start_time) != tag)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watcher polls a pidfd after its first check: it still sees a child's
    /// death (by SIGKILL, while the child runs), and a word naming a reused pid
    /// (right pid, wrong start-time tag) is gone at the first check.
    #[test]
    fn a_watcher_sees_death_through_its_pidfd_and_refuses_a_reused_pid() {
        use crate::sync::spin::test_procs::{BOUND, join, poll_until, spawn};
        let gate = crate::Event::new().unwrap();
        let g = gate.clone();
        let child = spawn(move || {
            let _ = g.wait(Some(BOUND));
        });
        let pid = child.pid().unwrap();
        let owner = process_of(pid);
        let mut watcher = Watcher::default();
        assert!(!watcher.is_process_gone(owner), "a running child");
        assert_eq!(watcher.known.len(), 1, "its pidfd is kept");
        assert!(!watcher.is_process_gone(owner), "still running");
        child.kill().unwrap();
        poll_until("the pidfd to show the death", || {
            watcher.is_process_gone(owner)
        });
        assert_eq!(join(child), Some(-9));

        let me = std::process::id();
        let real = process_of(me);
        let reused = (1..)
            .map(|t| word(me, Some(t)))
            .find(|&w| w != real)
            .unwrap();
        let mut watcher = Watcher::default();
        assert!(watcher.is_process_gone(reused), "another start time: gone");
        assert!(watcher.known.is_empty(), "no pidfd kept for a gone owner");
        assert!(!watcher.is_process_gone(real));
    }

    #[test]
    fn process_of_names_a_process_as_it_names_itself() {
        assert_eq!(process_of(std::process::id()), process());
    }
    use std::cell::Cell;

    const LIVE: procfs::TaskStat = procfs::TaskStat {
        state: b'S',
        start_time: 1234,
        threads: 1,
    };

    fn found(stat: procfs::TaskStat) -> impl Fn(u32) -> Probe {
        move |_| Probe::Found(stat)
    }

    #[test]
    fn own_identity_is_alive_and_distinct_per_thread() {
        let p = process();
        let t = thread();
        assert_ne!(p, 0);
        assert_ne!(tag_in(p), TAG_UNKNOWN);
        assert!(!is_gone(p));
        assert!(!is_gone(t));
        assert!(!is_process_gone(p));
        let other = std::thread::spawn(thread).join().unwrap();
        assert_ne!(other, t);
        // The thread has exited: its identity is gone.
        assert!(is_gone(other));
        // Same pid, another start time: a reused pid is not the old owner.
        let stranger = id_of(p) | (tag_in(p) % TAG_MASK + 1) << TAG_SHIFT;
        assert_ne!(tag_in(stranger), TAG_UNKNOWN);
        assert!(is_gone(stranger));
        assert!(is_process_gone(stranger));
    }

    #[test]
    fn tags_of_start_times_are_never_unknown() {
        let mut seen = [false; 512];
        for t in 0..100_000u64 {
            let tag = tag_of(t);
            assert!((1..=TAG_MASK).contains(&tag), "tag {tag} of {t}");
            seen[tag as usize] = true;
        }
        assert_eq!(seen.iter().filter(|&&s| s).count(), 511);
    }

    /// Regression: with no `/proc` (a container without it mounted), every owner
    /// looked gone, so a waiter took a live owner's lock after one slice.
    #[test]
    fn without_proc_no_owner_is_declared_gone() {
        let owner = word(77, Some(1234));
        let absent = |_: u32| Probe::Gone;
        for kind in [OwnerKind::Thread, OwnerKind::Process] {
            assert!(!gone_by(owner, kind, absent, || false), "no /proc: alive");
            assert!(gone_by(owner, kind, absent, || true), "/proc works: gone");
            assert!(!gone_by(owner, kind, found(LIVE), || true));
            let zombie = procfs::TaskStat {
                state: b'Z',
                ..LIVE
            };
            assert!(gone_by(owner, kind, found(zombie), || true));
            // Pid reused by a process with another start time (and tag).
            let reused = procfs::TaskStat {
                start_time: (0..).find(|&t| tag_of(t) != tag_of(1234)).unwrap(),
                ..LIVE
            };
            assert!(gone_by(owner, kind, found(reused), || true));
        }
        assert!(procfs::answers());
    }

    /// Regression: any failed read of `/proc/<pid>/stat` (EMFILE at the fd limit,
    /// ENOMEM, EACCES, a parse failure) counted as "no such process", so a waiter
    /// at the fd limit took a live owner's lock with OwnerDied.
    #[test]
    fn an_unreadable_owner_is_alive() {
        let owner = word(77, Some(1234));
        let unknown = |_: u32| Probe::Unknown;
        for kind in [OwnerKind::Thread, OwnerKind::Process] {
            assert!(!gone_by(owner, kind, unknown, || true));
            assert!(!gone_by(word(77, None), kind, unknown, || true));
        }
    }

    /// Regression: a leader that called `pthread_exit` is a zombie while its other
    /// threads run, and its process's Lock was taken over as if it had died.
    #[test]
    fn a_zombie_leader_with_running_threads_is_a_live_process_not_a_live_thread() {
        let owner = word(77, Some(1234));
        let leader_gone = procfs::TaskStat {
            state: b'Z',
            threads: 2,
            ..LIVE
        };
        assert!(!gone_by(
            owner,
            OwnerKind::Process,
            found(leader_gone),
            || true
        ));
        assert!(gone_by(
            owner,
            OwnerKind::Thread,
            found(leader_gone),
            || true
        ));
        // The last thread exited too: the process is gone.
        let all_gone = procfs::TaskStat {
            threads: 1,
            ..leader_gone
        };
        assert!(gone_by(owner, OwnerKind::Process, found(all_gone), || true));
    }

    /// An owner that could not read its start time is gone only by absence or by
    /// finishing, never by a tag mismatch (it has no tag to match).
    #[test]
    fn an_unknown_tag_is_gone_only_when_absent_or_finished() {
        let owner = word(77, None);
        assert_eq!(tag_in(owner), TAG_UNKNOWN);
        let any_start = procfs::TaskStat {
            start_time: 987_654,
            ..LIVE
        };
        for kind in [OwnerKind::Thread, OwnerKind::Process] {
            assert!(!gone_by(owner, kind, found(any_start), || true));
            assert!(gone_by(owner, kind, |_| Probe::Gone, || true));
            let zombie = procfs::TaskStat {
                state: b'Z',
                ..any_start
            };
            assert!(gone_by(owner, kind, found(zombie), || true));
        }
    }

    /// Regression: an identity first computed while the start time could not be
    /// read got start time 0 for life: a tag that never matched `/proc`, so other
    /// processes took its locks as a dead owner's.
    #[test]
    fn a_failed_read_gives_a_provisional_identity_that_is_retried_then_final() {
        let slot = AtomicU64::new(0);
        let retry = AtomicU64::new(0);
        let reads = Cell::new(0);
        let read = |r: Option<u64>| {
            reads.set(reads.get() + 1);
            r
        };
        let step = RETRY.as_nanos() as u64;
        let generation = 5;
        let t0 = 1_000_000;
        let provisional = identity(&slot, &retry, generation, 77, || t0, || read(None));
        assert_eq!(provisional, word(77, None));
        assert!(cached(slot.load(Ordering::Relaxed), generation).is_none());
        // Before RETRY: the same provisional word, no read.
        let again = identity(
            &slot,
            &retry,
            generation,
            77,
            || t0 + step - 1,
            || read(Some(1)),
        );
        assert_eq!((again, reads.get()), (provisional, 1));
        // After RETRY: read again; still failing, still provisional.
        let again = identity(&slot, &retry, generation, 77, || t0 + step, || read(None));
        assert_eq!((again, reads.get()), (provisional, 2));
        // The read works: the final word, cached, never read again.
        let t1 = t0 + 2 * step;
        let fin = identity(&slot, &retry, generation, 77, || t1, || read(Some(1234)));
        assert_eq!(fin, word(77, Some(1234)));
        assert_eq!(cached(slot.load(Ordering::Relaxed), generation), Some(fin));
        let same = identity(
            &slot,
            &retry,
            generation,
            77,
            || t1 + 9 * step,
            || read(None),
        );
        assert_eq!((same, reads.get()), (fin, 3));
        // Locks taken under the provisional word are still the owner's own.
        assert!(is_this(provisional, fin));
        assert!(is_this(fin, fin));
        assert!(!is_this(word(78, None), fin));
        assert!(!is_this(word(77, Some(987_654)), fin) || tag_of(987_654) == tag_of(1234));
        // A forked child (next generation) computes its own.
        let child = identity(&slot, &retry, generation + 1, 78, || t1, || read(Some(99)));
        assert_eq!(child, word(78, Some(99)));
    }

    #[test]
    fn own_provisional_word_names_this_process_and_thread() {
        assert!(is_this_process(word(id_of(process()), None)));
        assert!(is_this_thread(word(id_of(thread()), None)));
        let other = std::thread::spawn(thread).join().unwrap();
        assert!(!is_this_thread(word(id_of(other), None)));
        prime();
        assert_ne!(tag_in(process()), TAG_UNKNOWN);
        assert_ne!(tag_in(thread()), TAG_UNKNOWN);
    }
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    #[test]
    fn id_mask_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident::{self, ID_MASK};
        let me = ident::process();
        assert_eq!(me & ID_MASK, std::process::id());
        assert!(std::process::id() <= ID_MASK); // every pid fits (PID_MAX_LIMIT is 2^22)
        Ok(())
    }

    #[test]
    fn tag_unknown_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident::{self, TAG_UNKNOWN};
        // Read now (as every identity is when /proc can be read): a real tag.
        assert_ne!(ident::process() >> 22, TAG_UNKNOWN);
        // This pid, start time unknown: alive, since this process runs...
        let provisional = std::process::id() | TAG_UNKNOWN << 22;
        assert!(!ident::is_process_gone(provisional));
        // ...and taken for this process itself.
        assert!(ident::is_this_process(provisional));
        Ok(())
    }

    #[test]
    fn owner_mask_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident::{self, OWNER_MASK};
        // Owner words never use bit 31: it stays free for the lock word's CONTENDED flag.
        assert_eq!(ident::process() & !OWNER_MASK, 0);
        assert_eq!(ident::thread() & !OWNER_MASK, 0);
        Ok(())
    }

    #[test]
    fn retry_4() -> Result<(), Box<dyn std::error::Error>> {
        assert!(crate::sync::ident::RETRY.as_millis() > 0);
        Ok(())
    }

    #[test]
    fn id_of_5() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident;
        let me = ident::process();
        assert_eq!(ident::id_of(me), std::process::id());
        // Neither the CONTENDED bit nor the tag is part of the id.
        assert_eq!(ident::id_of(me | (1 << 31)), std::process::id());
        assert_eq!(ident::id_of(me ^ (1 << 22)), std::process::id());
        Ok(())
    }

    #[test]
    fn process_6() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident;
        use crate::{Process, RawValue};
        use std::time::Duration;
        let me = ident::process();
        assert_eq!(ident::process(), me); // cached
        assert_eq!(ident::id_of(me), std::process::id());
        assert!(!ident::is_gone(me));

        // A forked child computes its own identity, not its parent's.
        let seen = RawValue::<u32>::new(0)?;
        let s = seen.clone();
        let mut child = Process::new(move || s.set(ident::process()));
        child.start()?;
        assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
        assert_ne!(seen.get(), me);
        assert_eq!(Some(ident::id_of(seen.get())), child.pid());
        Ok(())
    }

    #[test]
    fn thread_7() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident;
        let t = ident::thread();
        assert_eq!(ident::thread(), t); // cached
        assert!(!ident::is_gone(t));
        // Another thread of this process has another id (its tid).
        let other = std::thread::spawn(ident::thread).join().unwrap();
        assert_ne!(ident::id_of(other), ident::id_of(t));
        Ok(())
    }

    #[test]
    fn main_thread_word_is_read_like_any_thread() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident;
        use crate::sys::procfs;
        use crate::{Process, RawValue};
        use std::time::Duration;
        // In a child, the main thread's word (taken from the process's) is the
        // word a read of its own start time gives, and differs from the parent's
        // threads (0: unequal, 1: equal).
        let parent_thread = ident::thread();
        let seen = RawValue::<u32>::new(0)?;
        let s = seen.clone();
        let mut child = Process::new(move || {
            let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
            let read = super::word(tid, procfs::read_thread_start_time());
            let t = ident::thread();
            let ok = t == read && t == ident::process() && t != parent_thread;
            s.set(u32::from(ok));
        });
        child.start()?;
        assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
        assert_eq!(seen.get(), 1);
        Ok(())
    }

    #[test]
    fn prime_8() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident;
        ident::prime();
        assert_ne!(ident::process() >> 22, ident::TAG_UNKNOWN);
        assert_ne!(ident::thread() >> 22, ident::TAG_UNKNOWN);
        Ok(())
    }

    #[test]
    fn is_this_process_9() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident;
        assert!(ident::is_this_process(ident::process()));
        assert!(ident::is_this_process(ident::process() | 1 << 31)); // CONTENDED ignored
        assert!(!ident::is_this_process(0));
        Ok(())
    }

    #[test]
    fn is_this_thread_10() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident;
        assert!(ident::is_this_thread(ident::thread()));
        let other = std::thread::spawn(ident::thread).join().unwrap();
        assert!(!ident::is_this_thread(other));
        Ok(())
    }

    #[test]
    fn ownerkind_11() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident::{self, OwnerKind};
        assert!(!OwnerKind::Process.is_gone(ident::process()));
        assert!(!OwnerKind::Thread.is_gone(ident::thread()));
        Ok(())
    }

    #[test]
    fn is_gone_12() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident::{self, OwnerKind};
        let other = std::thread::spawn(ident::thread).join().unwrap();
        assert!(OwnerKind::Thread.is_gone(other)); // exited
        Ok(())
    }

    #[test]
    fn is_gone_13() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident;
        use crate::{Process, RawValue};
        use std::time::Duration;
        let me = ident::process();
        assert!(!ident::is_gone(me));

        // A child that has exited (and been reaped) is gone.
        let word = RawValue::<u32>::new(0)?;
        let w = word.clone();
        let mut child = Process::new(move || w.set(ident::process()));
        child.start()?;
        assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
        assert!(ident::is_gone(word.get()));

        // This pid with another start-time tag (1..=511): what a dead owner looks like
        // once its pid is reused by a live process (here, this one). Gone too.
        let other_tag = (me >> 22) % 511 + 1;
        let stranger = ident::id_of(me) | other_tag << 22;
        assert!(ident::is_gone(stranger));
        Ok(())
    }

    #[test]
    fn is_process_gone_14() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::ident;
        assert!(!ident::is_process_gone(ident::process()));
        // A pid no process has (above any pid_max is impossible: ids have 22 bits, so
        // take a child that exited and was reaped).
        let mut child = crate::Process::new(|| {});
        child.start()?;
        let pid = child.pid().unwrap();
        child.join(Some(std::time::Duration::from_secs(10)))?;
        assert!(ident::is_process_gone(pid | 1 << 22));
        Ok(())
    }
}
