//! The raw lock: a futex state machine in 16 bytes of shared memory that knows its
//! owner, so that a dead owner is detected instead of waited for.
//!
//! This is the one mutual-exclusion algorithm in multiproc: [`Lock`](super::Lock),
//! [`RLock`](super::RLock), the lock of every Value and Array, and the lock inside
//! Condition and Barrier are all a `RawLock` plus a typed layer (as in lock_api).
//!
//! ## Layout (16 bytes, all-zero = unlocked and consistent)
//! ```text
//! 0  u32 word   0 when unlocked; else OWNER | CONTENDED
//!               OWNER (bits 0..31) = the holder's owner word (see `ident`)
//!               CONTENDED (bit 31) = someone may sleep on the futex: wake on unlock
//! 4  u32 flags  bit 0 INCONSISTENT: an owner died holding the lock and no one has
//!               called mark_consistent() since
//! 8  u64        the holder's own word: RLock keeps its recursion count and pins
//!               there (see `rlock`), a Lock the thread that holds it (see `lock`)
//! ```
//!
//! ## States of `word`
//! - `0`: free. `lock` takes it with one compare-exchange `0 -> me`.
//! - `me`: held, no sleeper. `unlock` stores 0 and makes no system call.
//! - `me | CONTENDED`: held, maybe sleepers. `unlock` stores 0 and wakes one.
//!   A waiter sets CONTENDED before sleeping; a woken waiter takes the lock as
//!   `me | CONTENDED`, since it cannot know whether others still sleep. A
//!   waiter that has not slept (it spun or yielded) takes it as `me`, as the
//!   fast path does: any sleeper the last release woke marks it again.
//!
//! ## Owner death: the mechanism and its trade-offs
//! Waiters never sleep unbounded: they sleep on the futex in slices of
//! [`OWNER_CHECK_INTERVAL`] (growing to five times it after the first ten, so that
//! a wait for a lock held for seconds wakes ten times a second, not fifty: see
//! `spin::sleep_slice`), and when a slice ends with the lock still held by the
//! same word, they ask `/proc` whether the owner still runs (pid *and* start-time tag,
//! so a reused pid does not pass for the dead owner). If it does not, one waiter wins
//! a compare-exchange `dead -> me | CONTENDED`, sets INCONSISTENT, and returns
//! [`Acquired::OwnerDied`]. A waiter also checks when wakes keep cutting its slices
//! short (signals), and a failing `try_lock` checks at most once per interval per
//! owner word (a small per-thread table remembers the owners found alive lately),
//! so neither a sleeper nor a poller waits forever on a dead owner, even one that
//! polls several locks in turn. A
//! blocking acquire makes that same rate-limited check before its first sleep, so a
//! process that comes to an already dead owner's lock usually takes it at once.
//! Detection therefore takes at most one slice (20 ms, or 100 ms once a wait has
//! lasted 200 ms) plus a read of `/proc`, while the
//! uncontended path stays a single compare-exchange, cheaper than a robust pthread
//! mutex (whose kernel robust list must also be updated on every acquire and
//! release) and free of glibc's per-thread robust list, which multiproc could not
//! share. The cost: a process blocked on a long-held lock wakes once per slice (a
//! few microseconds of work), and all processes must share a pid namespace.
//!
//! What "dead" means depends on who owns the lock, fixed per handle: a process
//! ([`RawLock::at`]: Lock, Value, Array, Barrier; a leader that called
//! `pthread_exit` while other threads run is alive) or a thread
//! ([`RawLock::at_thread_owned`]: RLock; exactly that task). An owner whose state
//! `/proc` cannot tell (the fd limit, say) is alive: see `ident`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::ident::{self, OwnerKind};
use super::spin;
use crate::sys::futex;
use crate::sys::mem::Mapping;
use crate::sys::time::Deadline;

/// Bytes a RawLock takes in shared memory.
pub const SIZE: usize = 16;
/// How long a waiter sleeps before checking whether the owner died.
///
/// A live owner passes every check, so its lock is waited for, not taken over:
pub const OWNER_CHECK_INTERVAL: Duration = Duration::from_millis(20);

const CONTENDED: u32 = 1 << 31;
const INCONSISTENT: u32 = 1;
const SPIN_LIMIT: u32 = 100;
/// Owner words a thread remembers having found alive (see [`RawLock::try_lock`]).
const CHECKED_SLOTS: usize = 8;

thread_local! {
    /// The owners this thread found alive lately, each with the instant it may be
    /// checked again. Keys are `owner | THREAD_KEY` for thread-owned locks, the
    /// owner word for process-owned ones (a leader's pid and tid are the same word,
    /// and the kinds disagree about a zombie leader). `None`: an unused slot.
    static CHECKED: RefCell<[Option<(u32, Instant)>; CHECKED_SLOTS]> =
        const { RefCell::new([None; CHECKED_SLOTS]) };
}
/// Marks thread-owned keys in CHECKED (owner words never use bit 31).
const THREAD_KEY: u32 = 1 << 31;

/// Whether the owner `key` is due for a check at `now`: not in the table, or its
/// time has come.
fn check_due(key: u32, now: Instant) -> bool {
    CHECKED.with(|c| {
        c.borrow()
            .iter()
            .flatten()
            .all(|&(k, next)| k != key || now >= next)
    })
}

/// Remembers that `key` was found alive: not checked again before `next`. Takes
/// the key's own slot, else a free or expired one, else the one due soonest (with
/// more than CHECKED_SLOTS live owners polled in turn, some are read more often).
fn checked_alive(key: u32, now: Instant, next: Instant) {
    CHECKED.with(|c| {
        let mut table = c.borrow_mut();
        let slot = table
            .iter()
            .position(|e| e.is_some_and(|(k, _)| k == key))
            .or_else(|| table.iter().position(|e| e.is_none_or(|(_, t)| now >= t)))
            .unwrap_or_else(|| {
                (0..CHECKED_SLOTS)
                    .min_by_key(|&i| table[i].map(|(_, t)| t))
                    .unwrap_or(0)
            });
        table[slot] = Some((key, next));
    });
}

/// How a lock was obtained.
///
/// A process that exits holding the lock does not leave the next acquirer waiting:
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Acquired {
    /// Normally, and the protected data is consistent.
    Clean,
    /// The lock is held, but an owner died holding it (now or earlier) and the data
    /// has not been marked consistent since.
    OwnerDied,
}

/// A handle on the 16 bytes of one raw lock. Copying it copies the reference only.
///
/// The handle does not keep its memory allocated: keep the [`Block`](crate::shm::arena::Block)
/// it lives in alive for as long as the lock is used.
#[derive(Debug, Clone, Copy)]
pub struct RawLock {
    word: &'static AtomicU32,
    flags: &'static AtomicU32,
    /// Whose words `word` holds, hence what counts as the owner's death.
    kind: OwnerKind,
}

impl RawLock {
    /// The lock at `offset` of an arena mapping (16-byte aligned, zeroed when new).
    ///
    /// Panics if the lock's words at `offset` fall outside `map` or are not 4-byte
    /// aligned.
    ///
    /// Its owners are processes (`ident::process()` words): a process whose main
    /// thread exited while others run still owns it. For thread owners use
    /// [`at_thread_owned`](Self::at_thread_owned).
    pub fn at(map: &'static Mapping, offset: usize) -> RawLock {
        RawLock::with_kind(map, offset, OwnerKind::Process)
    }

    /// The lock at `offset` of `map`, owned by threads (`ident::thread()` words, as
    /// RLock): an owner is gone as soon as its own task finished.
    pub fn at_thread_owned(map: &'static Mapping, offset: usize) -> RawLock {
        RawLock::with_kind(map, offset, OwnerKind::Thread)
    }

    fn with_kind(map: &'static Mapping, offset: usize, kind: OwnerKind) -> RawLock {
        RawLock {
            word: map.atomic_u32(offset),
            flags: map.atomic_u32(offset + 4),
            kind,
        }
    }

    #[inline]
    fn after_acquire(&self) -> Acquired {
        if self.flags.load(Ordering::Relaxed) & INCONSISTENT == 0 {
            Acquired::Clean
        } else {
            Acquired::OwnerDied
        }
    }

    /// Takes the lock for `me` if it is free, or if its owner died; never blocks.
    ///
    /// Whether the owner died is checked (a read of `/proc`) at most once per
    /// [`OWNER_CHECK_INTERVAL`] per owner word and thread while that owner is found
    /// alive, so a loop that polls `try_lock` (on one lock or several in turn) takes
    /// a dead owner's lock within about one interval, while a failing `try_lock`
    /// stays a compare-exchange, a clock read and a look in a table of 8 entries
    /// almost every time.
    #[inline]
    pub fn try_lock(&self, me: u32) -> Option<Acquired> {
        match self.try_exchange(me) {
            Ok(how) => Some(how),
            Err(w) => self.try_take_over(me, w),
        }
    }

    /// One compare-exchange `0 -> me`: `Ok` with the lock, or `Err` with the word
    /// found (nothing else is tried). Every way of taking the lock begins with it.
    /// RLock calls it directly to tell "held by me" from "held by another" without
    /// a load of the word before the exchange (under contention that load would
    /// cost a second transfer of the cache line), and `Lock::acquire` to read the
    /// clock for its deadline only once the exchange failed.
    #[inline]
    pub fn try_exchange(&self, me: u32) -> Result<Acquired, u32> {
        match self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Ok(self.after_acquire()),
            Err(w) => Err(w),
        }
    }

    /// A failed `try_lock`: takes the lock over if the owner of `w` is gone and a
    /// check of that owner is due for this thread. For a caller whose own
    /// exchange just failed with `w` (RLock), which need not try the exchange
    /// again: each try takes the contended cache line from the holder.
    #[cold]
    pub(crate) fn try_take_over(&self, me: u32, w: u32) -> Option<Acquired> {
        if w == 0 {
            return None;
        }
        let key = match self.kind {
            OwnerKind::Process => w & ident::OWNER_MASK,
            OwnerKind::Thread => w & ident::OWNER_MASK | THREAD_KEY,
        };
        let now = Instant::now();
        if !check_due(key, now) {
            return None;
        }
        if !self.kind.is_gone(w) {
            // A live owner: do not read `/proc` about it again for a while.
            checked_alive(key, now, now + OWNER_CHECK_INTERVAL);
            return None;
        }
        // Keep CONTENDED: sleepers may be waiting for the wake on unlock.
        if self
            .word
            .compare_exchange(
                w,
                me | (w & CONTENDED),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.flags.fetch_or(INCONSISTENT, Ordering::Relaxed);
            return Some(Acquired::OwnerDied);
        }
        None
    }

    /// Takes the lock for `me`, waiting until `deadline`; `None` when it passed.
    ///
    /// A child process sleeps on the lock until the parent releases it:
    #[inline]
    pub fn lock(&self, me: u32, deadline: Deadline) -> Option<Acquired> {
        match self.try_exchange(me) {
            Ok(how) => Some(how),
            Err(_) => self.lock_contended(me, deadline),
        }
    }

    /// [`lock`](Self::lock), except that a waiter about to sleep first asks `stop`
    /// and returns `None` when it says so (after announcing itself with CONTENDED:
    /// a caller whose `stop` reads a word that others store before they look at
    /// this lock's word gets a Dekker handshake; see `biased`).
    pub(crate) fn lock_unless(
        &self,
        me: u32,
        deadline: Deadline,
        stop: &dyn Fn() -> bool,
    ) -> Option<Acquired> {
        match self.try_exchange(me) {
            Ok(how) => Some(how),
            Err(_) => self.wait_contended(me, deadline, stop),
        }
    }

    /// Spins briefly while the lock is held and no one sleeps, taking it (as the
    /// fast path does) whenever it is seen free: `Ok` with the lock, or `Err`
    /// with the word last seen once it is marked contended or the spin is spent.
    ///
    /// A lost race for a free lock goes on spinning: the holder that took it back
    /// is running (it just released), so the lock will be free again soon; before,
    /// the loser went on to announce itself and sleep, and every release after
    /// that was a futex wake.
    fn spin(&self, me: u32) -> Result<Acquired, u32> {
        let mut left = SPIN_LIMIT;
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                match self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Ok(self.after_acquire()),
                    Err(now) if now & CONTENDED != 0 => return Err(now),
                    Err(_) => {}
                }
            } else if w & CONTENDED != 0 {
                return Err(w);
            }
            if left == 0 {
                return Err(self.word.load(Ordering::Relaxed));
            }
            std::hint::spin_loop();
            left -= 1;
        }
    }

    /// The wait of [`lock`](Self::lock), for a caller whose own exchange just
    /// failed (RLock, `Lock::acquire`): spin, yield, then sleep in slices until
    /// `deadline`.
    #[cold]
    pub(crate) fn lock_contended(&self, me: u32, deadline: Deadline) -> Option<Acquired> {
        self.wait_contended(me, deadline, &|| false)
    }

    /// [`lock_contended`](Self::lock_contended), except that a waiter about to
    /// sleep first asks `stop` (see [`lock_unless`](Self::lock_unless)).
    #[cold]
    fn wait_contended(
        &self,
        me: u32,
        deadline: Deadline,
        stop: &dyn Fn() -> bool,
    ) -> Option<Acquired> {
        // Confined to one CPU, the holder cannot run while this waiter spins: no
        // spin, straight to the owner check and the yield phase below.
        let mut w = if spin::cores() == 1 {
            self.word.load(Ordering::Relaxed)
        } else {
            match self.spin(me) {
                Ok(how) => return Some(how),
                Err(w) => w,
            }
        };
        // Before sleeping, the rate-limited check of `try_lock`: a process that
        // comes to a lock whose owner is already dead takes it now, not after a
        // slice (at most one `/proc` read per interval per owner and thread).
        if w != 0 {
            if let Some(how) = self.try_take_over(me, w) {
                return Some(how);
            }
            // More runnable processes than cores: hand this core to them (the
            // holder among them, maybe) for a bounded time before sleeping (see
            // `spin::yield_until`). Taken as on the fast path: a sleeper that a
            // release woke finds it held and marks it contended again.
            if spin::yield_until(|| self.word.load(Ordering::Relaxed) == 0) {
                match self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Some(self.after_acquire()),
                    Err(now) => w = now,
                }
            }
        }
        let mut next_check = Instant::now() + OWNER_CHECK_INTERVAL;
        // Slices slept so far: they grow after the first ten (`spin::sleep_slice`).
        let mut tick = 0;
        // What a free lock is taken as: `me` until this waiter has slept, as on the
        // fast path (it relied on no wake-up, and a sleeper that a release woke
        // marks the lock contended again when it finds it held); `me | CONTENDED`
        // once it has, since it cannot know whether others still sleep. Taking it
        // contended after a mere spin made every release after a contended
        // acquisition a futex wake with nobody to wake, and sent the next waiters
        // past their spin (which stops at CONTENDED) into the yield phase.
        let mut take_as = me;
        loop {
            if w == 0 {
                match self
                    .word
                    .compare_exchange(0, take_as, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Some(self.after_acquire()),
                    Err(now) => {
                        w = now;
                        continue;
                    }
                }
            }
            if w & CONTENDED == 0 {
                // Announce a sleeper, so that unlock wakes us.
                if let Err(now) = self.word.compare_exchange(
                    w,
                    w | CONTENDED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    w = now;
                    continue;
                }
                w |= CONTENDED;
            }
            if stop() {
                return None;
            }
            let expired = deadline.expired();
            let slice = spin::sleep_slice(tick);
            let timed_out = expired || {
                take_as = me | CONTENDED;
                futex::wait(self.word, w, Some(deadline.slice(slice))) == futex::Wake::TimedOut
            };
            // Check the owner when a slice ended, and also when wakes keep coming
            // without the word changing (EINTR from a signal every few ms would
            // otherwise end every slice early and the owner would never be checked).
            if timed_out || Instant::now() >= next_check {
                next_check = Instant::now() + slice;
                tick += 1;
                if self.word.load(Ordering::Relaxed) == w
                    && self.kind.is_gone(w)
                    && self
                        .word
                        .compare_exchange(w, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    // Set only by the winner, while it holds the lock: a loser must
                    // not set it after the winner repaired and released.
                    self.set_inconsistent();
                    return Some(Acquired::OwnerDied);
                }
                if deadline.expired() {
                    return None;
                }
            }
            w = self.word.load(Ordering::Relaxed);
        }
    }

    /// Releases the lock; returns the word it held (0 if it was not locked).
    ///
    /// It does not check who calls it: the typed layers decide who may release. A
    /// return of 0 is how `Lock::release` knows to report
    /// [`Error::NotHeld`](crate::Error::NotHeld).
    #[inline]
    pub fn unlock(&self) -> u32 {
        let prev = self.word.swap(0, Ordering::Release);
        if prev & CONTENDED != 0 {
            futex::wake(self.word, 1);
        }
        prev
    }

    /// The holder's owner word, or 0 when free.
    #[inline]
    pub fn owner(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & ident::OWNER_MASK
    }

    /// Whether no owner has died with the data inconsistent.
    pub fn is_consistent(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & INCONSISTENT == 0
    }

    /// Sets INCONSISTENT: a holder died inside (call while holding the lock; the
    /// biased lock's revoker calls it too, when it finds the holder died inside).
    pub(crate) fn set_inconsistent(&self) {
        self.flags.fetch_or(INCONSISTENT, Ordering::Relaxed);
    }

    /// Clears INCONSISTENT (call while holding the lock, after repairing the data).
    pub fn mark_consistent(&self) {
        self.flags.fetch_and(!INCONSISTENT, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::arena::Block;

    fn fresh() -> (RawLock, Block) {
        let block = Block::alloc(SIZE).unwrap();
        let raw = RawLock::at(block.static_map().unwrap(), block.offset());
        (raw, block)
    }

    /// The word a process with this pid but another start time would hold: what a
    /// dead owner's word looks like once its pid has been reused by a live process.
    fn same_pid_other_start(me: u32) -> u32 {
        // Real tags are 1..=511 (0 is "start time unknown", never a mismatch).
        let tag = (me >> 22) & 0x1ff;
        (me & ident::ID_MASK) | (tag % 511 + 1) << 22
    }

    #[test]
    fn a_live_owner_with_a_reused_pid_does_not_pass_for_the_dead_one() {
        let (raw, _block) = fresh();
        let me = ident::process();
        let ghost = same_pid_other_start(me);
        // A dead owner whose pid now belongs to a running process (this one).
        assert_eq!(raw.try_lock(ghost), Some(Acquired::Clean));
        let deadline = Deadline::after(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(raw.lock(me, deadline), Some(Acquired::OwnerDied));
        assert_eq!(raw.owner(), me);
        assert!(!raw.is_consistent());
        raw.mark_consistent();
        raw.unlock();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        raw.unlock();
    }

    #[test]
    fn a_live_owner_is_waited_for_not_taken_over() {
        let (raw, _block) = fresh();
        let me = ident::process();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        // Same identity (this live process): the timed wait ends without the lock,
        // after at least one owner check.
        let deadline = Deadline::after(Some(OWNER_CHECK_INTERVAL * 2)).unwrap();
        assert_eq!(raw.lock(me, deadline), None);
        assert!(raw.is_consistent());
        raw.unlock();
    }

    #[test]
    fn try_lock_takes_a_dead_owner_s_lock_at_most_once_per_interval() {
        let (raw, _block) = fresh();
        let me = ident::process();
        let _ = raw.try_lock(same_pid_other_start(me));
        // Polling: within a few intervals one try_lock sees the owner gone.
        let deadline = Deadline::after(Some(Duration::from_secs(20))).unwrap();
        let got = loop {
            if let Some(how) = raw.try_lock(me) {
                break how;
            }
            assert!(!deadline.expired(), "try_lock never noticed the dead owner");
            std::hint::spin_loop();
        };
        assert_eq!(got, Acquired::OwnerDied);
        assert_eq!(raw.owner(), me);
        // Held by a live owner (this process): never taken over.
        assert_eq!(raw.try_lock(me), None);
        raw.mark_consistent();
        raw.unlock();
    }

    #[test]
    fn a_waiter_that_never_slept_takes_the_lock_as_the_fast_path_does() {
        // Not marked contended: its release then makes no futex wake, and the next
        // waiters' spins (which stop at CONTENDED) still run.
        let (raw, _block) = fresh();
        let me = ident::process();
        let deadline = Deadline::after(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(raw.lock_contended(me, deadline), Some(Acquired::Clean));
        assert_eq!(raw.word.load(Ordering::Relaxed), me);
        assert_eq!(raw.unlock(), me);
    }

    #[test]
    fn a_waiter_that_slept_takes_the_lock_marked_contended() {
        // It cannot know whether others still sleep, so its release must wake one.
        let (raw, _block) = fresh();
        let me = ident::process();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let deadline = Deadline::after(Some(Duration::from_secs(20))).unwrap();
                raw.lock(me, deadline)
            });
            // CONTENDED is set by the waiter only just before its futex sleep.
            let end = Instant::now() + Duration::from_secs(20);
            while raw.word.load(Ordering::Relaxed) & CONTENDED == 0 {
                assert!(Instant::now() < end, "the waiter never announced its sleep");
                std::thread::yield_now();
            }
            assert_eq!(raw.unlock(), me | CONTENDED);
            assert_eq!(waiter.join().unwrap(), Some(Acquired::Clean));
        });
        assert_eq!(raw.word.load(Ordering::Relaxed), me | CONTENDED);
        raw.unlock();
    }

    #[test]
    fn inconsistency_persists_until_marked() {
        let (raw, _block) = fresh();
        let me = ident::process();
        let _ = raw.try_lock(same_pid_other_start(me));
        let deadline = Deadline::after(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(raw.lock(me, deadline), Some(Acquired::OwnerDied));
        raw.unlock();
        // Not marked consistent: the next acquirer is told too.
        assert_eq!(raw.try_lock(me), Some(Acquired::OwnerDied));
        raw.mark_consistent();
        raw.unlock();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        raw.unlock();
    }
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    /// A fresh lock in its own arena block (keep the block while using the lock).
    fn fresh() -> crate::Result<(crate::shm::arena::Block, crate::sync::raw_lock::RawLock)> {
        let block = crate::shm::arena::Block::alloc(16)?;
        let raw = crate::sync::raw_lock::RawLock::at(block.static_map().unwrap(), block.offset());
        Ok((block, raw))
    }

    /// A lock that a child took and then died holding (it exits without unlocking).
    fn left_by_a_dead_child() -> Result<
        (crate::shm::arena::Block, crate::sync::raw_lock::RawLock),
        Box<dyn std::error::Error>,
    > {
        let (block, raw) = fresh()?;
        let mut child = crate::Process::new(move || {
            let me = crate::sync::ident::process();
            assert_eq!(
                raw.try_lock(me),
                Some(crate::sync::raw_lock::Acquired::Clean)
            );
        });
        child.start()?;
        assert_eq!(
            child.join(Some(std::time::Duration::from_secs(10)))?,
            Some(0)
        );
        Ok((block, raw))
    }

    #[test]
    fn size_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::Block;
        use crate::sync::raw_lock::{self, RawLock};
        let block = Block::alloc(raw_lock::SIZE)?;
        assert!(block.offset() + raw_lock::SIZE <= block.map().len());
        // All-zero bytes are a free, consistent lock.
        let raw = RawLock::at(block.static_map().unwrap(), block.offset());
        assert_eq!(raw.owner(), 0);
        assert!(raw.is_consistent());
        Ok(())
    }

    #[test]
    fn owner_check_interval_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::{
            ident,
            raw_lock::{Acquired, OWNER_CHECK_INTERVAL},
        };
        use crate::sys::time::Deadline;
        use std::time::Instant;
        let (_block, raw) = fresh()?;
        let me = ident::process();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        let start = Instant::now();
        let deadline = Deadline::after(Some(OWNER_CHECK_INTERVAL * 3))?;
        assert_eq!(raw.lock(me, deadline), None); // checked the owner, kept waiting
        assert!(start.elapsed() >= OWNER_CHECK_INTERVAL * 3);
        assert_eq!(raw.owner(), me);
        raw.unlock();
        Ok(())
    }

    #[test]
    fn acquired_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::{ident, raw_lock::Acquired};
        use crate::sys::time::Deadline;
        use std::time::Duration;
        let (_block, raw) = left_by_a_dead_child()?;

        let deadline = Deadline::after(Some(Duration::from_secs(10)))?;
        assert_eq!(
            raw.lock(ident::process(), deadline),
            Some(Acquired::OwnerDied)
        );
        raw.mark_consistent(); // after repairing the data
        raw.unlock();
        assert_eq!(raw.try_lock(ident::process()), Some(Acquired::Clean));
        raw.unlock();
        Ok(())
    }

    #[test]
    fn rawlock_4() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::{ident, raw_lock::Acquired};
        let (_block, raw) = fresh()?;
        let copy = raw; // the same 16 bytes
        let me = ident::process();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        assert_eq!(copy.owner(), me);
        assert_eq!(copy.try_lock(me), None); // held
        assert_eq!(copy.unlock(), me);
        assert_eq!(raw.owner(), 0);
        Ok(())
    }

    #[test]
    fn at_5() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::Block;
        use crate::sync::{
            ident,
            raw_lock::{Acquired, RawLock},
        };
        let block = Block::alloc(16)?;
        let map = block.static_map().expect("16 bytes come from the arena");
        let raw = RawLock::at(map, block.offset());
        assert_eq!(raw.owner(), 0); // zeroed: free
        // Another handle on the same offset is the same lock.
        let me = ident::process();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        assert_eq!(RawLock::at(map, block.offset()).owner(), me);
        raw.unlock();
        Ok(())
    }

    #[test]
    fn at_thread_owned_6() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::Block;
        use crate::sync::{
            ident,
            raw_lock::{Acquired, RawLock},
        };
        let block = Block::alloc(16)?;
        let raw = RawLock::at_thread_owned(block.static_map().unwrap(), block.offset());
        // A thread that exits holding it leaves it to the next thread.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(raw.try_lock(ident::thread()), Some(Acquired::Clean)));
        });
        let deadline = crate::sys::time::Deadline::after(Some(std::time::Duration::from_secs(10)))?;
        assert_eq!(
            raw.lock(ident::thread(), deadline),
            Some(Acquired::OwnerDied)
        );
        raw.mark_consistent();
        raw.unlock();
        Ok(())
    }

    #[test]
    fn try_lock_7() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Process;

        use crate::sync::{ident, raw_lock::Acquired};
        use std::time::Duration;
        let (_block, raw) = fresh()?;
        let me = ident::process();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        assert_eq!(raw.try_lock(me), None); // held by a live owner (not reentrant)
        raw.unlock();

        // A child exits holding it: polling takes it over, with a bounded wait.
        let mut child = Process::new(move || {
            assert_eq!(raw.try_lock(ident::process()), Some(Acquired::Clean));
        });
        child.start()?;
        assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
        let mut polls = 0;
        let how = loop {
            if let Some(how) = raw.try_lock(me) {
                break how;
            }
            polls += 1;
            assert!(polls < 10_000, "the dead owner was never noticed");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(how, Acquired::OwnerDied);
        raw.mark_consistent();
        raw.unlock();
        Ok(())
    }

    #[test]
    fn lock_8() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Process;

        use crate::sync::{ident, raw_lock::Acquired};
        use crate::sys::time::Deadline;
        use std::time::Duration;
        let (_block, raw) = fresh()?;
        let me = ident::process();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        let mut child = Process::new(move || {
            let deadline = Deadline::after(Some(Duration::from_secs(10))).unwrap();
            assert_eq!(raw.lock(ident::process(), deadline), Some(Acquired::Clean));
            raw.unlock();
        });
        child.start()?;
        std::thread::sleep(Duration::from_millis(50));
        raw.unlock(); // wakes the child
        assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));

        // Held by a live owner until the deadline: `None`.
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        let soon = Deadline::after(Some(Duration::from_millis(30)))?;
        assert_eq!(raw.lock(me, soon), None);
        raw.unlock();
        Ok(())
    }

    #[test]
    fn unlock_9() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::{ident, raw_lock::Acquired};
        let (_block, raw) = fresh()?;
        assert_eq!(raw.unlock(), 0); // was not locked
        let me = ident::process();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        assert_eq!(raw.unlock(), me);
        assert_eq!(raw.owner(), 0);
        Ok(())
    }

    #[test]
    fn owner_10() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::{ident, raw_lock::Acquired};
        let (_block, raw) = fresh()?;
        assert_eq!(raw.owner(), 0);
        let me = ident::process();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        assert_eq!(raw.owner(), me);
        assert_eq!(ident::id_of(raw.owner()), std::process::id());
        raw.unlock();
        Ok(())
    }

    #[test]
    fn is_consistent_11() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Process;

        use crate::sync::{ident, raw_lock::Acquired};
        use crate::sys::time::Deadline;
        use std::time::Duration;
        let (_block, raw) = fresh()?;
        assert!(raw.is_consistent());
        let mut child = Process::new(move || {
            assert_eq!(raw.try_lock(ident::process()), Some(Acquired::Clean));
        }); // exits holding the lock
        child.start()?;
        assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
        let me = ident::process();
        let deadline = Deadline::after(Some(Duration::from_secs(10)))?;
        assert_eq!(raw.lock(me, deadline), Some(Acquired::OwnerDied));
        assert!(!raw.is_consistent());
        raw.unlock();
        // Unlocking does not repair anything: the next acquirer is told too.
        assert!(!raw.is_consistent());
        assert_eq!(raw.try_lock(me), Some(Acquired::OwnerDied));
        raw.mark_consistent();
        raw.unlock();
        Ok(())
    }

    #[test]
    fn mark_consistent_12() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sync::{ident, raw_lock::Acquired};
        use crate::sys::time::Deadline;
        use std::time::Duration;
        let (_block, raw) = left_by_a_dead_child()?;
        let me = ident::process();
        let deadline = Deadline::after(Some(Duration::from_secs(10)))?;
        assert_eq!(raw.lock(me, deadline), Some(Acquired::OwnerDied));
        // ... repair the data the lock protects, then:
        raw.mark_consistent();
        assert!(raw.is_consistent());
        raw.unlock();
        assert_eq!(raw.try_lock(me), Some(Acquired::Clean));
        raw.unlock();
        Ok(())
    }
}
