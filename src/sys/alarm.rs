//! Death alarms: a futex word woken when a process exits, so that a long waiter
//! need not wake up to look.
//!
//! A waiter that depends on other processes (a Barrier party waits for the others)
//! must notice when one of them dies, and a futex sleep notices nothing. Sleeping
//! in timed slices and checking between them costs a wake-up per slice: about
//! 30 us of CPU each on these VMs, so 20 ms slices burn 1 to 2 ms of CPU per second
//! of waiting, against about 15 us for a sleeper that wakes once. An alarm instead
//! hands the pidfds to one thread per process, blocked in `epoll_wait` on all of
//! them; when one becomes readable (its process exited) the thread wakes the futex
//! word registered with it, and the sleeper wakes, sees the death through the
//! pidfd and acts. Waiting costs nothing while nobody dies.
//!
//! ## Protocol
//! - A waiter claims a **slot** (one of [`SLOTS`] per process): the futex word to
//!   act on and the bit to clear in it. [`Alarm::arm`] adds pidfds to this
//!   process's epoll set, `EPOLLIN | EPOLLONESHOT`, with the slot's index as data
//!   (one shot: a dead process's pidfd stays readable, and the thread must not
//!   act in a loop until the waiter has looked).
//! - The thread, for each event, moves the slot `ARMED -> FIRING`, clears the bit
//!   (`fetch_and`), wakes every sleeper on the word, and moves it back to `ARMED`.
//!   Clearing the bit first is what makes the alarm race-free: a waiter sets that
//!   bit (its "I sleep" flag), then checks its pidfds, then sleeps only while the
//!   word still holds the bit. A death after the check clears the bit, so the
//!   sleep either does not start (the word changed) or is woken.
//! - [`Alarm`]'s drop removes its pidfds from the set (`EPOLL_CTL_DEL`), then frees
//!   the slot `ARMED -> FREE`, waiting out a `FIRING` thread: once the drop
//!   returns, the thread never touches that word again for this waiter. (An event
//!   fetched before the delete may still name the slot after another waiter took
//!   it: that waiter gets a spurious wake, which every futex waiter tolerates.)
//! - The thread starts at the first use in each process; a forked child (told by
//!   [`fork::generation`](super::fork::generation)) starts its own and closes the
//!   inherited epoll descriptor, which still belongs to the parent's set. Slots
//!   claimed by the parent's other threads at the fork stay claimed in the child
//!   (those threads do not exist there): a few slots lost, nothing stuck.
//! - Anything that fails (no epoll, no thread, no free slot, `epoll_wait` failing)
//!   makes the alarm unavailable: the caller keeps its timed slices. Unknown is not
//!   dead, and no alarm is no reason to stop looking.
//!
//! Written by hand because it is the product itself: no crate offers "wake a
//! shared futex when a pidfd fires" without an async runtime.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use rustix::event::epoll;

use super::{fork, futex};

/// This process's epoll set: `generation << 32 | fd`; 0 = none yet; the low half
/// `NO_FD` = alarms failed in this generation.
static SET: AtomicU64 = AtomicU64::new(0);
const NO_FD: u64 = u32::MAX as u64;

/// How many waiters of one process can hold an alarm at once.
pub(crate) const SLOTS: usize = 128;

const FREE: u32 = 0;
/// Claimed by a waiter that is filling in `word` and `clear`.
const CLAIMED: u32 = 1;
const ARMED: u32 = 2;
/// The thread is acting on the slot's word.
const FIRING: u32 = 3;

struct Slot {
    state: AtomicU32,
    word: AtomicPtr<AtomicU32>,
    clear: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    state: AtomicU32::new(FREE),
    word: AtomicPtr::new(std::ptr::null_mut()),
    clear: AtomicU32::new(0),
};
static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];

/// One waiter's alarm: the pidfds it armed wake `word` (clearing `clear`) when
/// their process exits. Disarmed on drop.
#[derive(Debug)]
pub(crate) struct Alarm {
    set: BorrowedFd<'static>,
    slot: usize,
    /// Copies of the pidfds armed: owned here, so that each stays open until it
    /// has been removed from the set.
    armed: Vec<OwnedFd>,
}

impl Alarm {
    /// An alarm that will wake `word`, first clearing the bits `clear` in it;
    /// `None` if alarms do not work in this process now (the caller keeps
    /// polling).
    pub(crate) fn new(word: &'static AtomicU32, clear: u32) -> Option<Alarm> {
        let set = set()?;
        let slot = TABLE.iter().position(|s| {
            s.state
                .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })?;
        let s = &TABLE[slot];
        s.word
            .store((word as *const AtomicU32).cast_mut(), Ordering::Relaxed);
        s.clear.store(clear, Ordering::Relaxed);
        s.state.store(ARMED, Ordering::Release);
        Some(Alarm {
            set,
            slot,
            armed: Vec::new(),
        })
    }

    /// Fires this alarm when the process of `pidfd` exits; false if it could not
    /// be armed. The alarm keeps a copy of the descriptor (one `fcntl`), so the
    /// caller may close its own at any time.
    pub(crate) fn arm(&mut self, pidfd: BorrowedFd<'_>) -> bool {
        let Ok(copy) = rustix::io::fcntl_dupfd_cloexec(pidfd, 0) else {
            return false;
        };
        let data = epoll::EventData::new_u64(self.slot as u64);
        let flags = epoll::EventFlags::IN | epoll::EventFlags::ONESHOT;
        if epoll::add(self.set, &copy, data, flags).is_err() {
            return false;
        }
        self.armed.push(copy);
        true
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        for pidfd in &self.armed {
            // Fails only if the set no longer has it, which changes nothing.
            let _ = epoll::delete(self.set, pidfd);
        }
        let s = &TABLE[self.slot];
        while s
            .state
            .compare_exchange(ARMED, FREE, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // FIRING: the thread is waking the word, a few hundred nanoseconds.
            std::hint::spin_loop();
        }
    }
}

/// This generation's epoll set, made (with its thread) at the first call.
fn set() -> Option<BorrowedFd<'static>> {
    let generation = fork::generation() as u64;
    loop {
        let now = SET.load(Ordering::Acquire);
        if now >> 32 == generation {
            return (now & NO_FD != NO_FD).then(|| {
                // SAFETY: an fd stored with this generation stays open for the rest
                // of the process: the thread owns it and never closes it (on
                // failure it stores NO_FD and leaks the descriptor).
                unsafe { BorrowedFd::borrow_raw((now & NO_FD) as i32) }
            });
        }
        let made = epoll::create(epoll::CreateFlags::CLOEXEC)
            .ok()
            .map(IntoRawFd::into_raw_fd);
        let next = generation << 32 | made.map_or(NO_FD, |fd| fd as u64);
        match SET.compare_exchange(now, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                if now != 0 && now & NO_FD != NO_FD {
                    // SAFETY: the parent's set, a descriptor that fork copied into
                    // this process; its generation is over, so nothing here uses it,
                    // and winning the exchange above makes this the one close.
                    drop(unsafe { OwnedFd::from_raw_fd((now & NO_FD) as i32) });
                }
                if let Some(fd) = made {
                    spawn(fd, generation);
                }
            }
            Err(_) => {
                if let Some(fd) = made {
                    // SAFETY: `fd` came from `into_raw_fd` just above and was never
                    // shared: another thread made this generation's set first.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }
}

/// Starts the thread that serves `fd`, with every signal blocked (it inherits the
/// mask in force while it is made): a signal sent to the process (Ctrl-C's
/// SIGINT, say) must go to a thread that handles it, never to this one. If the
/// thread cannot start, disables alarms.
fn spawn(fd: i32, generation: u64) {
    // SAFETY: `sigfillset` and `pthread_sigmask` only write the two local sets and
    // this thread's signal mask, which is restored right after the spawn.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    let started = std::thread::Builder::new()
        .name("multiproc-alarm".into())
        .stack_size(64 * 1024)
        .spawn(move || run(fd, generation));
    // SAFETY: as above; `old` is the mask this thread had.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if started.is_err() {
        disable(fd, generation);
    }
}

/// Alarms stop working in this generation: later [`Alarm::new`]s return `None`.
/// The descriptor stays open (an `Alarm` may still borrow it).
fn disable(fd: i32, generation: u64) {
    let _ = SET.compare_exchange(
        generation << 32 | fd as u64,
        generation << 32 | NO_FD,
        Ordering::AcqRel,
        Ordering::Relaxed,
    );
}

/// The alarm thread: waits for pidfds to fire and acts on their slots' words.
fn run(fd: i32, generation: u64) {
    // SAFETY: the fd is open for the rest of the process (see `set`).
    let set = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut events = Vec::with_capacity(16);
    loop {
        events.clear();
        match epoll::wait(
            set.as_fd(),
            rustix::buffer::spare_capacity(&mut events),
            None,
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => {
                disable(fd, generation);
                return;
            }
        }
        for event in &events {
            let Some(s) = TABLE.get(event.data.u64() as usize) else {
                continue;
            };
            if s.state
                .compare_exchange(ARMED, FIRING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue; // freed (or being filled in): not this event's waiter
            }
            let word = s.word.load(Ordering::Relaxed).cast_const();
            // SAFETY: a slot's word comes from the `&'static AtomicU32` given to
            // `Alarm::new`, so it is valid and aligned for the rest of the process.
            let word: &'static AtomicU32 = unsafe { &*word };
            word.fetch_and(!s.clear.load(Ordering::Relaxed), Ordering::Release);
            futex::wake_all(word);
            s.state.store(ARMED, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::spin::test_procs::{BOUND, join, spawn as start_child};

    /// A child's death clears the armed bit and wakes a sleeper on the word; the
    /// drop frees the slot. Without the alarm the sleep would last the whole bound
    /// and the bit would stay set.
    #[test]
    fn a_death_clears_the_bit_and_wakes_the_word() {
        static WORD: AtomicU32 = AtomicU32::new(0b110);
        let gate = crate::Event::new().unwrap();
        let g = gate.clone();
        let child = start_child(move || {
            let _ = g.wait(Some(BOUND));
        });
        let pidfd = crate::sys::procfs::open_pidfd(child.pid().unwrap()).unwrap();
        let mut alarm = Alarm::new(&WORD, 0b100).expect("alarms work here");
        let slot = alarm.slot;
        assert!(alarm.arm(pidfd.as_fd()));
        child.kill().unwrap();
        // Only the thread clears the bit: without the alarm each sleep lasts the
        // whole bound and the loop fails (a spurious wake just sleeps again).
        let end = std::time::Instant::now() + BOUND;
        while WORD.load(Ordering::Acquire) & 0b100 != 0 {
            assert!(std::time::Instant::now() < end, "the alarm never fired");
            futex::wait(&WORD, 0b110, Some(BOUND));
        }
        assert_eq!(
            WORD.load(Ordering::Acquire),
            0b010,
            "only the armed bit cleared"
        );
        drop(alarm);
        assert_eq!(TABLE[slot].state.load(Ordering::Acquire), FREE);
        assert_eq!(join(child), Some(-9));
        // The thread blocks SIGINT (and every other signal): Ctrl-C must reach a
        // thread that handles it.
        let blocked = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| t.ok())
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "multiproc-alarm")
            })
            .and_then(|t| std::fs::read_to_string(t.path().join("status")).ok())
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("SigBlk:"))?.to_string();
                u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).ok()
            })
            .expect("the alarm thread and its signal mask");
        assert_ne!(blocked & (1 << (libc::SIGINT - 1)), 0, "SIGINT blocked");
    }
}
