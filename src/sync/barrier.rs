//! `Barrier`: `parties` processes meet, then all go on together, round after round
//! (Python's `multiprocessing.Barrier`, which mirrors `threading.Barrier`).
//!
//! ## Layout (arena block; all-zero = round 0, filling, nobody arrived)
//! ```text
//! 0    16 bytes   RawLock: the barrier's internal lock (see raw_lock)
//! 16   u32 word   the futex word: round << 3 | SLEEPERS | state
//!                 state FILLING (0), BROKEN (1), RESETTING (2); SLEEPERS (4) is
//!                 set by a party before it sleeps on the futex, so that a change
//!                 of the word makes the wake system call only when someone sleeps
//! 20   u32 count  parties of the current round inside `wait` (see below)
//! 24   u32 reason why it broke: 0 none, 1 aborted, 2 timed out, 3 a party died,
//!                 4 action failed, 5 reset
//! 28   u32 parties
//! 32   REGISTRY x u32   owner words of `register()`ed processes, 0 = free
//! 160  u32 x tracked    arrival slots: the owner word (`ident::process()`) of the
//!                       party with arrival index i this round, 0 = empty
//! ```
//! `tracked` = min(parties, [`MAX_TRACKED`]). All fields change only under the
//! internal lock, except the SLEEPERS bit of `word`, which a party sets (by
//! compare-exchange, so never on a word that has moved on) just before sleeping;
//! every other change of `word` clears SLEEPERS and, if it was set, wakes all
//! sleepers. Below, "the word" means the word without SLEEPERS.
//!
//! ## States
//! - `FILLING`, round r: parties arrive. Arrival i (0-based) writes slot i and
//!   `count = i + 1`. The last (`count == parties`) runs the action (under the
//!   lock, as Python does), then *releases*: `count = 0`, slots cleared,
//!   `word = (r + 1) << 3 | FILLING`. A sleeper of round r sees the round change
//!   and returns its index without touching shared state, so the next round can
//!   fill at once (no draining phase is needed, unlike CPython's).
//! - `BROKEN`, same round r (abort, timeout, death, failed action): sleepers of
//!   round r see their round with state != FILLING and leave with
//!   [`Error::BrokenBarrier`], each doing `count -= 1` and clearing its slot.
//!   Arrivals fail at once. Only `reset()` leaves this state.
//! - `RESETTING`, same round r (`reset()` while parties of round r are still
//!   inside): they leave as in BROKEN; the last one out (or a `reset()` or an
//!   arrival that finds the rest dead) moves to `(r + 1) << 3 | FILLING`.
//!   Arrivals sleep until then. A round never advances while one of its live
//!   parties is inside, so "my round changed" always means "my round was
//!   released".
//!
//! ## Death of a process
//! A sleeper looks for the dead between sleeps, in two regimes:
//!
//! - **Sliced** (the first 20 ms of a wait): it sleeps in owner-check slices and,
//!   after each, checks the lock's owner and the other parties (below). Short
//!   waits, the common case when parties arrive within microseconds, never pay for
//!   more than that.
//! - **Armed** (after the first slice; from the start when this process's previous
//!   wait on the barrier slept longer than a slice): it checks every arrived party
//!   and every `register()`ed process once (`/proc` at the first check of each,
//!   then a poll of a pidfd, `ident::Watcher`), hands their pidfds to this
//!   process's alarm thread (`sys::alarm`), and sleeps in slices of
//!   `ARMED_SLICE` (5 s). When one of them dies, the alarm thread clears
//!   SLEEPERS and wakes the word; the sleeper wakes, sees the death and breaks the
//!   round. Waiting costs nothing while nobody dies: one wake-up when released
//!   (a timed slice costs a timer wake-up, tens of microseconds of CPU here, and
//!   polling every 20 ms burned 1 to 2 ms of CPU per second of waiting).
//!
//!   An armed sleeper sets `ANNOUNCE` beside the reason. While it is set, an
//!   arrival and a registration wake the sleepers (clearing SLEEPERS first), so
//!   the armed ones look again and watch the newcomer too. A sleeper sets SLEEPERS,
//!   then looks (its pidfds, and whether the parties it watches are still all
//!   there are), then sleeps while SLEEPERS is still set: a death or an
//!   arrival after the look clears it, so the sleep does not start or is woken.
//!   When more than `Watcher::CAPACITY` processes would need watching, or no
//!   alarm can be had (no epoll, no thread), the sleeper stays sliced.
//!
//! In the sliced regime, party i checks the slot of party (i + 1) mod count: the
//! arrived parties form a ring, so as long as one lives, some live party watches a
//! dead one; the `register()`ed processes are split among the sleepers the same
//! way (with up to `Watcher::CAPACITY` to watch, each sleeper checks them all).
//! After ten slices the slice grows to 100 ms (`spin::sleep_slice`). A death breaks the
//! barrier ("a party died") within about one slice. A party that dies before
//! arriving is noticed only if it registered.
//!
//! Death of the internal lock's holder is recovered by the RawLock and breaks the
//! barrier too; sleepers also check the lock's owner after every sleep, since a
//! process killed holding it may have left no slot to watch (killed while
//! releasing a round, after clearing the slots but before the word moved on; or
//! inside `abort`, `reset`, `register`): the first sleeper to see it gone takes the
//! lock, which recovers it and breaks the round ("a party died"). An armed sleeper
//! sees this only at the end of its slice, unless the dead holder was a party or
//! registered (then its alarm fires), or another party arrives (its `hold`
//! recovers the lock). Parties beyond the first [`MAX_TRACKED`] arrivals of a
//! round have no slot: their death is not noticed (use a timeout).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::ident;
use super::raw_lock::{self, Acquired, OWNER_CHECK_INTERVAL, RawLock};
use super::spin::{self, AdaptiveSpin};
use crate::error::{Error, Result};
use crate::shm::arena::{Block, MAX_SMALL};
use crate::sys::futex;
use crate::sys::mem::Mapping;
use crate::sys::time::Deadline;

/// How many processes may be `register()`ed with one Barrier at once.
///
/// ```
/// assert_eq!(multiproc::sync::barrier::REGISTRY, 32);
/// ```
pub const REGISTRY: usize = 32;
const SLOTS_AT: usize = 32 + 4 * REGISTRY;
/// How many arrivals per round have a slot (and so are watched for death).
///
/// ```
/// assert!(multiproc::sync::barrier::MAX_TRACKED >= 900);
/// ```
pub const MAX_TRACKED: usize = (MAX_SMALL - SLOTS_AT) / 4;

const FILLING: u32 = 0;
const BROKEN: u32 = 1;
const RESETTING: u32 = 2;
const STATE_MASK: u32 = 3;
const SLEEPERS: u32 = 4;
const ROUND: u32 = 8;

const ABORTED: u32 = 1;
const TIMED_OUT: u32 = 2;
const DIED: u32 = 3;
const ACTION_FAILED: u32 = 4;
const RESET: u32 = 5;

/// A flag beside the reason, in the same word: some sleeper of this round is
/// armed (sleeps long, woken by its alarm), so an arrival or a registration must
/// wake the sleepers to have them watch the newcomer too. Cleared with the round.
const ANNOUNCE: u32 = 1 << 8;
const REASON_MASK: u32 = 0xff;

/// How long an armed sleeper sleeps between checks: its alarm wakes it when a
/// party or a registered process dies, and arrivals and registrations wake it
/// (see [`ANNOUNCE`]); this slice only bounds what no alarm covers: a process that
/// is neither a party nor registered, killed while it held the internal lock
/// (inside `abort`, `reset` or `register`), is noticed within it (or at once by
/// the next arrival, whose lock recovers). Long enough that a waiter blocked for
/// seconds wakes once, when it is released.
const ARMED_SLICE: Duration = Duration::from_secs(5);

fn reason_text(code: u32) -> &'static str {
    match code & REASON_MASK {
        ABORTED => "aborted",
        TIMED_OUT => "timed out",
        DIED => "a party died",
        ACTION_FAILED => "action failed",
        RESET => "reset",
        _ => "broken",
    }
}

type Action = Arc<dyn Fn() + Send + Sync + 'static>;

/// How one slice of a party's sleep (`Barrier::sleep`) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slept {
    /// The word changed (released, broken or reset).
    Changed,
    /// The slice or the deadline ran out, or a spurious wake.
    Unchanged,
    /// A signal handler cut the futex wait short (`EINTR`), the word unchanged.
    Interrupted,
}

/// The message of a panic payload: what `panic!` was given (a `&str` or a
/// `String`), else a placeholder.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// A reusable barrier for `parties` processes: Python's `multiprocessing.Barrier`.
///
/// The action (if any) is stored in the handle and cloned with it, so every
/// process forked with a clone can run it; it runs in exactly one process per
/// round, the last to arrive, before anyone is released.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Barrier, Process};
/// let barrier = Barrier::new(2)?;
/// let b = barrier.clone();
/// let mut child = Process::new(move || {
///     b.wait(Some(Duration::from_secs(30))).unwrap();
/// });
/// child.start()?;
/// let index = barrier.wait(Some(Duration::from_secs(30)))?;
/// assert!(index < 2);
/// assert_eq!(child.join(None)?, Some(0));
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token with its timeout; a Barrier with an action does not (the closure cannot travel): see
/// [`token::export`](crate::token::export).
#[derive(Clone)]
pub struct Barrier {
    lock: RawLock,
    map: &'static Mapping,
    base: usize,
    tracked: usize,
    action: Option<Action>,
    timeout: Option<Duration>,
    // Process-local: how long this handle spins before sleeping (see `sync::spin`).
    spin: AdaptiveSpin,
    // How long an armed sleeper sleeps ([`ARMED_SLICE`]; tests lengthen it to show
    // that the alarms, not the slice, wake the sleepers).
    armed_slice: Duration,
    // Process-local: whether this process's last wait on this barrier slept for
    // longer than a slice; the next one then arms its alarms at once rather than
    // after a first timed slice (whose timer wake-up costs more than the rest of
    // a long wait). Shared by the clones of this process.
    long: Arc<AtomicBool>,
    _block: Block,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .field("action", &self.action.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The internal lock, held; released on drop.
struct Held<'a>(&'a Barrier);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.lock.unlock();
    }
}

impl Barrier {
    /// A barrier for `parties` processes (or threads). `parties == 0` is
    /// [`Error::ZeroSize`].
    ///
    /// **Death of a party:** a party that dies *inside* [`wait`](Self::wait)
    /// breaks the barrier for the others within about 20 ms. A party that dies
    /// *before it arrives* is noticed only if it called
    /// [`register`](Self::register) (and it must call
    /// [`unregister`](Self::unregister) before a normal exit, or its exit breaks
    /// the barrier too); otherwise the others wait for it until their timeout, so
    /// pass one to `wait` (or [`with_timeout`](Self::with_timeout)) when a party
    /// may die before arriving.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(3)?;
    /// assert_eq!(b.parties(), 3);
    /// assert!(multiproc::Barrier::new(0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(parties: usize) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::ZeroSize {
                what: "Barrier parties",
            });
        }
        if parties > i32::MAX as usize {
            return Err(Error::SizeOverflow {
                what: "Barrier parties",
                requested: parties as u128,
                max: i32::MAX as u128,
            });
        }
        let block = Block::alloc(Barrier::bytes(parties))?;
        Ok(Barrier::in_block(block, parties, true))
    }

    /// Bytes of a barrier of `parties` (1..=i32::MAX) parties.
    pub(crate) fn bytes(parties: usize) -> usize {
        SLOTS_AT + 4 * parties.min(MAX_TRACKED)
    }

    /// The parties word of a barrier laid out at `offset` of `map` (what an
    /// opener reads to know the layout).
    pub(crate) fn parties_at(map: &Mapping, offset: usize) -> u32 {
        map.atomic_u32(offset + 28).load(Ordering::Acquire)
    }

    /// The barrier of `parties` parties at the payload of `block` (at least
    /// [`bytes`](Self::bytes)`(parties)` bytes); `init` writes a fresh one's
    /// parties word, else it is an existing one's.
    pub(crate) fn in_block(block: Block, parties: usize, init: bool) -> Barrier {
        let tracked = parties.min(MAX_TRACKED);
        let map = block.arena_map();
        let base = block.offset();
        let b = Barrier {
            lock: RawLock::at(map, base),
            map,
            base,
            tracked,
            action: None,
            timeout: None,
            spin: AdaptiveSpin::new(),
            armed_slice: ARMED_SLICE,
            long: Arc::default(),
            _block: block,
        };
        if init {
            b.word(28).store(parties as u32, Ordering::Release);
        }
        b
    }

    /// Sets the action, run by the last process to arrive in each round before the
    /// round is released (Python's `action=`). If it panics, the barrier breaks:
    /// the party that ran it gets [`Error::BarrierActionPanicked`] with the panic's
    /// message (CPython raises the action's exception there), the others of that
    /// round (and later arrivals, until [`reset`](Self::reset)) get
    /// [`Error::BrokenBarrier`]`("action failed")`. The action runs while the
    /// barrier's internal lock is held (as in Python): it must not call this
    /// barrier's `wait`, `abort`, `reset`, `register` or `unregister`.
    ///
    /// ```
    /// use multiproc::{Barrier, RawValue};
    /// let rounds = RawValue::new(0u32)?;
    /// let r = rounds.clone();
    /// let b = Barrier::new(1)?.with_action(move || r.set(r.get() + 1));
    /// b.wait(None)?;
    /// b.wait(None)?;
    /// assert_eq!(rounds.get(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_action(mut self, action: impl Fn() + Send + Sync + 'static) -> Barrier {
        self.action = Some(Arc::new(action));
        self
    }

    /// Sets the default timeout of [`wait`](Self::wait) (Python's `timeout=`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::Barrier::new(2)?.with_timeout(Duration::from_millis(5));
    /// assert!(b.wait(None).is_err()); // nobody else comes: times out, breaks
    /// assert!(b.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Barrier {
        self.timeout = Some(timeout);
        self
    }

    fn word(&self, off: usize) -> &'static AtomicU32 {
        self.map.atomic_u32(self.base + off)
    }
    fn state(&self) -> &'static AtomicU32 {
        self.word(16)
    }
    fn count(&self) -> &'static AtomicU32 {
        self.word(20)
    }
    fn reason(&self) -> &'static AtomicU32 {
        self.word(24)
    }
    fn registry(&self, i: usize) -> &'static AtomicU32 {
        self.word(32 + 4 * i)
    }
    fn slot(&self, i: usize) -> &'static AtomicU32 {
        self.word(SLOTS_AT + 4 * i)
    }

    /// Takes the internal lock. If a process died holding it, the barrier's state
    /// may be half-changed: break the barrier (a party died) and carry on.
    fn hold(&self) -> Held<'_> {
        let how = self
            .lock
            .lock(ident::process(), Deadline::NEVER)
            .expect("a wait without deadline ends only with the lock held");
        let held = Held(self);
        if how == Acquired::OwnerDied {
            let w = self.current();
            if w & STATE_MASK == FILLING {
                self.set_broken(w, DIED);
            }
            self.lock.mark_consistent();
        }
        held
    }

    fn set_word(&self, w: u32) {
        if self.state().swap(w, Ordering::Release) & SLEEPERS != 0 {
            futex::wake_all(self.state());
        }
    }

    /// The word without the SLEEPERS bit.
    #[inline]
    fn current(&self) -> u32 {
        self.state().load(Ordering::Acquire) & !SLEEPERS
    }

    /// Breaks the round of `w` (lock held).
    fn set_broken(&self, w: u32, reason: u32) {
        self.reason().store(reason, Ordering::Relaxed);
        self.set_word((w & !STATE_MASK) | BROKEN);
    }

    /// Starts the next round, empty (lock held).
    fn next_round(&self, w: u32) {
        self.count().store(0, Ordering::Relaxed);
        let r = self.reason().load(Ordering::Relaxed);
        if r & ANNOUNCE != 0 {
            self.reason().store(r & !ANNOUNCE, Ordering::Relaxed);
        }
        for i in 0..self.tracked {
            self.slot(i).store(0, Ordering::Relaxed);
        }
        self.set_word(((w & !STATE_MASK).wrapping_add(ROUND)) | FILLING);
    }

    /// Removes the slots of dead parties from `count` (lock held; rare paths).
    fn drop_dead_parties(&self) {
        for i in 0..self.tracked {
            let owner = self.slot(i).load(Ordering::Relaxed);
            if owner != 0 && ident::is_process_gone(owner) {
                self.slot(i).store(0, Ordering::Relaxed);
                let c = self.count().load(Ordering::Relaxed);
                self.count().store(c.saturating_sub(1), Ordering::Relaxed);
            }
        }
    }

    /// A party of the broken round `w` leaves (lock held).
    fn leave_broken(&self, w: u32, index: usize) -> Error {
        if index < self.tracked {
            self.slot(index).store(0, Ordering::Relaxed);
        }
        let c = self.count().load(Ordering::Relaxed).saturating_sub(1);
        self.count().store(c, Ordering::Relaxed);
        let now = self.current();
        if now & STATE_MASK == RESETTING && c == 0 {
            self.next_round(now);
        }
        debug_assert_eq!(now & !STATE_MASK, w & !STATE_MASK);
        Error::BrokenBarrier(reason_text(self.reason().load(Ordering::Relaxed)))
    }

    /// Python's `wait(timeout=None)`: waits until all parties have arrived and
    /// returns this party's arrival index, `0..parties` (the last to arrive gets
    /// `parties - 1` and runs the action). `None` uses the barrier's default
    /// timeout (see [`with_timeout`](Self::with_timeout)), which by default is none.
    ///
    /// [`Error::BrokenBarrier`] when the barrier is or becomes broken while waiting:
    /// `abort()`, `reset()`, a timeout (which breaks it for every party), the
    /// action panicking in another party, or a party that died;
    /// [`Error::BarrierActionPanicked`] when this party ran the action and it
    /// panicked.
    ///
    /// A party that died while waiting is noticed; one that dies **before
    /// arriving** is noticed only if it [`register`](Self::register)ed: without
    /// that, the others wait for it until their timeout (see
    /// [`new`](Self::new)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Barrier, Error};
    /// let b = Barrier::new(2)?;
    /// let r = b.wait(Some(Duration::from_millis(5)));
    /// assert!(matches!(r, Err(Error::BrokenBarrier("timed out"))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn wait(&self, timeout: Option<Duration>) -> Result<usize> {
        self.wait_checked(timeout, None)
    }

    /// [`wait`](Self::wait) that a signal can end: after every futex wait that a
    /// signal handler interrupted (`EINTR`), `check` runs in the waiting party,
    /// internal lock not held; when it returns true, the wait ends with
    /// [`Error::Interrupted`], cleanly: the party breaks the barrier (as
    /// [`abort`](Self::abort): the other parties of the round get
    /// [`Error::BrokenBarrier`]`("aborted")`) and leaves it. If the round was
    /// released first, the result is `Ok(index)` (the party got through); a party
    /// interrupted before it arrived (waiting for a [`reset`](Self::reset) to
    /// finish) breaks nothing. When `check` returns false, the wait goes on, the
    /// party still arrived. Otherwise as `wait`.
    ///
    /// This is how the Python package lets Ctrl-C interrupt `Barrier.wait`:
    /// CPython's handlers are installed without `SA_RESTART`, its `check`
    /// takes the GIL and runs the Python signal handlers. A signal that arrives
    /// while the party is not asleep in the futex (between two slices) interrupts
    /// nothing; as with CPython's own lock waits, the next signal does.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Barrier, Error};
    /// let b = Barrier::new(1)?;
    /// let mut check = || true;
    /// assert_eq!(b.wait_interruptible(None, &mut check)?, 0); // the last party
    /// let b = Barrier::new(2)?;
    /// // Without a signal, `check` never runs: this wait times out as `wait` does.
    /// let r = b.wait_interruptible(Some(Duration::from_millis(5)), &mut check);
    /// assert!(matches!(r, Err(Error::BrokenBarrier("timed out"))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_interruptible(
        &self,
        timeout: Option<Duration>,
        check: &mut dyn FnMut() -> bool,
    ) -> Result<usize> {
        self.wait_checked(timeout, Some(check))
    }

    /// `wait`, with `check` run after every interrupted futex wait (none: `wait`).
    ///
    /// Inline, with its two halves out of line: on one CPU, the first hand-off
    /// (`spin::hand_off`: a yield to the parties still to come, and a look at
    /// the word) runs in the caller's frame, since a return across that context
    /// switch would cost a quarter of it (see `spin::hand_off`). Not when the
    /// last wait here was long: that one arms its alarms at once (see below).
    #[inline]
    fn wait_checked(
        &self,
        timeout: Option<Duration>,
        mut check: Option<&mut dyn FnMut() -> bool>,
    ) -> Result<usize> {
        let (index, w, deadline) = match self.arrive(timeout, &mut check)? {
            Ok(index) => return Ok(index),
            Err(waiting) => waiting,
        };
        let released = || self.current() & !STATE_MASK != w & !STATE_MASK;
        if !self.long.load(Ordering::Relaxed) && spin::hand_off(released) {
            // Released within the first hand-off: not a long wait, as the hint
            // already says.
            return Ok(index);
        }
        self.wait_arrived(index, w, deadline, check)
    }

    /// The first half of a wait: enters (waiting while a reset is in progress)
    /// and arrives. `Ok(index)`: this party was the last and released the round;
    /// `Err((index, word, deadline))`: it arrived and waits for the round `word`.
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn arrive(
        &self,
        timeout: Option<Duration>,
        check: &mut Option<&mut dyn FnMut() -> bool>,
    ) -> Result<std::result::Result<usize, (usize, u32, Deadline)>> {
        let mut stop =
            |slept: Slept| slept == Slept::Interrupted && check.as_mut().is_some_and(|c| c());
        let deadline = Deadline::after(timeout.or(self.timeout))?;
        let me = ident::process();
        let parties = self.parties();
        let held = self.hold();
        // Enter: wait while a reset is in progress.
        let mut w = self.current();
        loop {
            match w & STATE_MASK {
                FILLING => break,
                BROKEN => {
                    return Err(Error::BrokenBarrier(reason_text(
                        self.reason().load(Ordering::Relaxed),
                    )));
                }
                _ => {
                    self.drop_dead_parties();
                    if self.count().load(Ordering::Relaxed) == 0 {
                        self.next_round(w);
                    } else {
                        self.lock.unlock();
                        let slept = if self.spin.spin(|| self.current() != w, parties) {
                            Slept::Changed
                        } else {
                            self.sleep(w, deadline, OWNER_CHECK_INTERVAL, || true)
                        };
                        // The guard `held` still owns the one release.
                        std::mem::forget(self.hold());
                        if stop(slept) {
                            // Interrupted before even arriving: breaks nothing.
                            drop(held);
                            return Err(Error::Interrupted {
                                what: "Barrier::wait_interruptible",
                            });
                        }
                        if deadline.expired() && self.current() == w {
                            // Timed out before even arriving: breaks nothing.
                            drop(held);
                            return Err(Error::BrokenBarrier("timed out"));
                        }
                    }
                    w = self.current();
                }
            }
        }
        let index = self.count().load(Ordering::Relaxed) as usize;
        self.count().store(index as u32 + 1, Ordering::Relaxed);
        if index < self.tracked {
            self.slot(index).store(me, Ordering::Relaxed);
        }
        if index + 1 == parties {
            if let Some(action) = &self.action {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| action())) {
                    // As CPython raises the action's exception out of this party's
                    // `wait`: the others get BrokenBarrier("action failed").
                    self.set_broken(w, ACTION_FAILED);
                    let _ = self.leave_broken(w, index);
                    return Err(Error::BarrierActionPanicked {
                        message: panic_message(payload.as_ref()),
                    });
                }
            }
            self.next_round(w);
            return Ok(Ok(index));
        }
        let announce = self.reason().load(Ordering::Relaxed) & ANNOUNCE != 0;
        drop(held);
        if announce {
            self.announce();
        }
        Ok(Err((index, w, deadline)))
    }

    /// The rest of a wait after [`arrive`](Self::arrive) and the inline hand-off:
    /// party `index` waits for the round `w` to be released, until `deadline`.
    #[inline(never)]
    fn wait_arrived(
        &self,
        index: usize,
        w: u32,
        deadline: Deadline,
        mut check: Option<&mut dyn FnMut() -> bool>,
    ) -> Result<usize> {
        let mut stop =
            |slept: Slept| slept == Slept::Interrupted && check.as_mut().is_some_and(|c| c());
        let me = ident::process();
        let parties = self.parties();
        let mut tick = 0usize;
        let mut watcher = ident::Watcher::default();
        let mut armed = false;
        // When this wait first went to sleep (the spin failed).
        let mut slept_at: Option<Instant> = None;
        loop {
            let now = self.current();
            if now & !STATE_MASK != w & !STATE_MASK {
                let long = slept_at.is_some_and(|t| t.elapsed() >= OWNER_CHECK_INTERVAL);
                if self.long.load(Ordering::Relaxed) != long {
                    self.long.store(long, Ordering::Relaxed);
                }
                return Ok(index); // released
            }
            if now != w {
                let _held = self.hold();
                return Err(self.leave_broken(w, index));
            }
            if deadline.expired() {
                let _held = self.hold();
                if self.current() == w {
                    self.set_broken(w, TIMED_OUT);
                }
                continue;
            }
            if slept_at.is_none() {
                // The first sleep. When the last wait here was long, arm the
                // alarms at once, without a spin (up to 10 us of pauses, likely
                // wasted: if the others come soon after all, this costs one wake-up
                // and clears the hint); else spin, then a first timed slice. Only
                // here: after a slice ran out, an answer in the next microseconds
                // is no likelier than in any others.
                //
                // The other parties often arrive within microseconds on the other
                // core; when they do not (more parties than cores), the adaptive
                // budget shrinks, and a failed spin hands this core over for a
                // bounded time (see `spin::yield_until`): a party that has not
                // arrived may be waiting for it, and a futex wake-up of a halted
                // vCPU costs tens of microseconds, a yield to a runnable party a
                // context switch.
                let long = self.long.load(Ordering::Relaxed);
                if !long && self.spin.spin(|| self.current() != w, parties) {
                    continue;
                }
                slept_at = Some(Instant::now());
                if long {
                    armed = self.watch(w, index, me, tick, &mut watcher);
                    continue;
                }
            }
            let slept = if armed {
                // Set SLEEPERS, then look: a death or an arrival after the look
                // clears SLEEPERS (the alarm thread, `announce`), so the futex
                // sleep that follows does not start or is woken.
                self.sleep(w, deadline, self.armed_slice, || {
                    let now = self.suspects(me);
                    now.iter().all(|o| watcher.armed().contains(o)) && !watcher.any_gone(&now)
                })
            } else {
                self.sleep(w, deadline, spin::sleep_slice(tick), || true)
            };
            if stop(slept) {
                let _held = self.hold();
                let now = self.current();
                if now & !STATE_MASK != w & !STATE_MASK {
                    return Ok(index); // released before the stop
                }
                if now == w {
                    self.set_broken(w, ABORTED);
                }
                let _ = self.leave_broken(w, index);
                return Err(Error::Interrupted {
                    what: "Barrier::wait_interruptible",
                });
            }
            if slept != Slept::Changed {
                tick = tick.wrapping_add(1);
                armed = self.watch(w, index, me, tick, &mut watcher);
            }
        }
    }

    /// Wakes the sleepers so that the armed ones look again (a party arrived or
    /// a process registered): clears SLEEPERS first, as the alarm thread does, so
    /// that a sleeper between its look and its sleep does not sleep.
    fn announce(&self) {
        if self.state().fetch_and(!SLEEPERS, Ordering::AcqRel) & SLEEPERS != 0 {
            futex::wake_all(self.state());
        }
    }

    /// The processes an armed sleeper watches, in a fixed order: the arrived
    /// parties of this round and the registered processes, but itself.
    fn suspects(&self, me: u32) -> Vec<u32> {
        let count = (self.count().load(Ordering::Acquire) as usize).min(self.tracked);
        let mut all = Vec::new();
        let arrived = (0..count).map(|i| self.slot(i));
        for word in arrived.chain((0..REGISTRY).map(|i| self.registry(i))) {
            let o = word.load(Ordering::Relaxed);
            if o != 0 && o != me && !all.contains(&o) {
                all.push(o);
            }
        }
        all
    }

    /// Sleeps one slice while the word is `w`; returns whether the word changed
    /// (else the slice or the deadline ran out, `still` said not to sleep, or a
    /// signal cut the sleep short).
    /// `still` runs after SLEEPERS is set and before the futex sleep.
    fn sleep(
        &self,
        w: u32,
        deadline: Deadline,
        slice: Duration,
        still: impl FnOnce() -> bool,
    ) -> Slept {
        // Announce the sleep; fails (and returns) if the word moved on meanwhile.
        if self
            .state()
            .compare_exchange(w, w | SLEEPERS, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
            && self.current() != w
        {
            self.spin.answered_late();
            return Slept::Changed;
        }
        let woke = if still() {
            futex::wait(self.state(), w | SLEEPERS, Some(deadline.slice(slice)))
        } else {
            futex::Wake::Woken
        };
        if self.current() != w {
            Slept::Changed
        } else if woke == futex::Wake::Interrupted {
            Slept::Interrupted
        } else {
            Slept::Unchanged
        }
    }

    /// Between slices: checks the other parties and the registered processes;
    /// breaks the round if one is gone. Returns whether the caller may sleep
    /// armed: every one of them is watched by an alarm.
    ///
    /// When the watcher can hold them all, all are checked (after the first
    /// check, a poll of a pidfd each) and armed; else, as before alarms, the next
    /// party in the ring and a share of the registered processes, in slices.
    fn watch(
        &self,
        w: u32,
        index: usize,
        me: u32,
        tick: usize,
        watcher: &mut ident::Watcher,
    ) -> bool {
        let lock_owner = self.lock.owner();
        if lock_owner != 0 && lock_owner != me && ident::is_process_gone(lock_owner) {
            // Killed holding the internal lock: taking it recovers it and breaks
            // the round (see `hold`); the caller then sees the word changed.
            drop(self.hold());
            return false;
        }
        let all = self.suspects(me);
        let share;
        let suspects: &[u32] = if all.len() <= ident::Watcher::CAPACITY {
            &all
        } else {
            let count = (self.count().load(Ordering::Relaxed) as usize).clamp(1, self.tracked);
            let mut mine = Vec::new();
            let next = self.slot((index + 1) % count).load(Ordering::Relaxed);
            if next != 0 && next != me {
                mine.push(next);
            }
            let mut j = (index + tick) % count;
            while j < REGISTRY {
                let r = self.registry(j).load(Ordering::Relaxed);
                if r != 0 && r != me {
                    mine.push(r);
                }
                j += count;
            }
            share = mine;
            &share
        };
        let Some(dead) = suspects
            .iter()
            .copied()
            .find(|&o| watcher.is_process_gone(o))
        else {
            if all.len() > ident::Watcher::CAPACITY || !watcher.arm(&all, self.state(), SLEEPERS) {
                return false;
            }
            // Armed: tell arrivals and registrations to wake this sleeper, so that
            // it watches them too (see ANNOUNCE). The flag only changes under the
            // lock; once set this round, later looks need not take it.
            if self.reason().load(Ordering::Relaxed) & ANNOUNCE == 0 {
                let _held = self.hold();
                let r = self.reason().load(Ordering::Relaxed);
                if self.current() == w && r & ANNOUNCE == 0 {
                    self.reason().store(r | ANNOUNCE, Ordering::Relaxed);
                }
            }
            return self.current() == w;
        };
        let _held = self.hold();
        if self.current() != w {
            return false;
        }
        // Forget the dead: its arrival (so a reset can complete) or registration.
        for i in 0..self.tracked {
            if self.slot(i).load(Ordering::Relaxed) == dead {
                self.slot(i).store(0, Ordering::Relaxed);
                let c = self.count().load(Ordering::Relaxed);
                self.count().store(c.saturating_sub(1), Ordering::Relaxed);
            }
        }
        for i in 0..REGISTRY {
            let _ =
                self.registry(i)
                    .compare_exchange(dead, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        self.set_broken(w, DIED);
        false
    }

    /// Python's `abort()`: breaks the barrier; current and future waiters get
    /// [`Error::BrokenBarrier`] (`"aborted"`) until [`reset`](Self::reset).
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.broken());
    /// assert!(b.wait(None).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn abort(&self) {
        let _held = self.hold();
        let w = self.current();
        self.set_broken(w, ABORTED);
    }

    /// Python's `reset()`: returns the barrier to its empty state. Parties waiting
    /// now get [`Error::BrokenBarrier`] (`"reset"`); new arrivals wait until they
    /// have left, then fill a fresh round.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2)?;
    /// b.abort();
    /// b.reset();
    /// assert!(!b.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn reset(&self) {
        let _held = self.hold();
        let w = self.current();
        match w & STATE_MASK {
            FILLING if self.count().load(Ordering::Relaxed) > 0 => {
                self.reason().store(RESET, Ordering::Relaxed);
                self.set_word((w & !STATE_MASK) | RESETTING);
            }
            BROKEN => {
                self.drop_dead_parties();
                if self.count().load(Ordering::Relaxed) > 0 {
                    self.set_word((w & !STATE_MASK) | RESETTING);
                } else {
                    self.next_round(w);
                }
            }
            _ => {}
        }
    }

    /// Python's `broken`: whether the barrier is broken.
    ///
    /// ```
    /// assert!(!multiproc::Barrier::new(2)?.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn broken(&self) -> bool {
        self.current() & STATE_MASK == BROKEN
    }

    /// Python's `n_waiting`: how many parties wait in the current round.
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(2)?.n_waiting(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn n_waiting(&self) -> usize {
        if self.current() & STATE_MASK == FILLING {
            self.count().load(Ordering::Relaxed) as usize
        } else {
            0
        }
    }

    /// Python's `parties`: how many parties a round needs.
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn parties(&self) -> usize {
        self.word(28).load(Ordering::Acquire) as usize
    }

    /// Records the calling process as a party: if it is gone (died, or exited
    /// without [`unregister`](Self::unregister)) while others wait, the barrier
    /// breaks ("a party died") instead of waiting for it. At most [`REGISTRY`]
    /// processes at once.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1)?;
    /// b.register()?;
    /// b.wait(None)?;
    /// b.unregister();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn register(&self) -> Result<()> {
        let me = ident::process();
        let held = self.hold();
        if (0..REGISTRY).any(|i| self.registry(i).load(Ordering::Relaxed) == me) {
            return Ok(());
        }
        for i in 0..REGISTRY {
            let r = self.registry(i).load(Ordering::Relaxed);
            if r == 0 || ident::is_process_gone(r) {
                self.registry(i).store(me, Ordering::Relaxed);
                let announce = self.reason().load(Ordering::Relaxed) & ANNOUNCE != 0;
                drop(held);
                if announce {
                    self.announce();
                }
                return Ok(());
            }
        }
        Err(Error::InvalidArgument(format!(
            "a Barrier registers at most {REGISTRY} processes: unregister() the ones that are done"
        )))
    }

    /// Removes the calling process's registration (no effect if it has none).
    /// Call it before a registered process exits, or the barrier breaks.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2)?;
    /// b.register()?;
    /// b.unregister();
    /// b.unregister(); // nothing left to remove
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unregister(&self) {
        let me = ident::process();
        let _held = self.hold();
        for i in 0..REGISTRY {
            let _ = self
                .registry(i)
                .compare_exchange(me, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

const _: () = assert!(SLOTS_AT >= 32 && raw_lock::SIZE == 16);

/// A Barrier travels as a token ([`crate::token`]) with its default timeout. Its
/// action cannot: a closure has no bytes, so a Barrier with an action fails to
/// export ([`Error::NotTransferable`]); export one without an action and let the
/// process that has the closure set it (CPython pickles the action instead, which
/// a Rust closure cannot be). Any one process's action runs: the last to arrive.
impl serde::Serialize for Barrier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::Barrier, || {
            if self.action.is_some() {
                return Err(Error::NotTransferable {
                    what: "a Barrier with an action",
                    reason: "the action is a closure, which cannot cross into another process; export a clone made before with_action, and set the action in the importing process",
                });
            }
            Ok((crate::token::At::of(&self._block, self.base)?, self.timeout))
        })
    }
}

impl<'de> serde::Deserialize<'de> for Barrier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::Barrier,
            |(at, timeout): (crate::token::At, Option<Duration>)| {
                let (block, base) = at.import(SLOTS_AT, "Barrier")?;
                let map = block.arena_map();
                let parties = map.atomic_u32(base + 28).load(Ordering::Acquire) as usize;
                let tracked = parties.min(MAX_TRACKED);
                if parties == 0 || base != block.offset() || SLOTS_AT + 4 * tracked > block.len() {
                    return Err(Error::BadToken {
                        what: "Barrier",
                        reason: format!("{parties} parties in a {}-byte block", block.len()),
                    });
                }
                // Its slots fill the block (see `shm::arena::Block::use_as`).
                block.use_as(
                    crate::shm::arena::Use::Primitives { end: usize::MAX },
                    "Barrier",
                )?;
                Ok(Barrier {
                    lock: RawLock::at(map, base),
                    map,
                    base,
                    tracked,
                    action: None,
                    timeout,
                    spin: AdaptiveSpin::new(),
                    armed_slice: ARMED_SLICE,
                    long: Arc::default(),
                    _block: block,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::spin::test_procs::{
        BOUND, interrupt_until, join, poll_until, spawn, until_asleep,
    };
    use crate::sys::signal;

    /// The owner word of a process that is gone: this process's pid with another
    /// start time (what a dead owner looks like once its pid is reused).
    fn ghost() -> u32 {
        let me = ident::process();
        let tag = (me >> 22) & 0x1ff;
        // Another tag of 1..=511: 0 means "start time unknown", which is never
        // declared dead by a mismatch (so `(tag + 1) & 0x1ff` hung 1 run in 511).
        (me & ident::ID_MASK) | (tag % 511 + 1) << 22
    }

    /// A party asleep in `wait(None)` that must leave with "a party died".
    fn sleeper(b: &Barrier) -> crate::Process {
        let b2 = b.clone();
        let p = spawn(move || {
            assert!(matches!(
                b2.wait(None),
                Err(Error::BrokenBarrier("a party died"))
            ));
        });
        poll_until("the party arrived", || b.n_waiting() == 1);
        until_asleep(p.pid().unwrap());
        p
    }

    /// The last party killed while releasing the round: it holds the lock and has
    /// cleared `count` and the slots (so no slot names it), but the word still
    /// says "round r, filling". The sleeper must break the barrier.
    #[test]
    fn a_party_killed_while_releasing_the_round_breaks_it_for_the_sleepers() {
        let b = Barrier::new(2).unwrap();
        let p = sleeper(&b);
        assert_eq!(b.lock.try_lock(ghost()), Some(Acquired::Clean));
        b.count().store(0, Ordering::Relaxed);
        for i in 0..b.tracked {
            b.slot(i).store(0, Ordering::Relaxed);
        }
        assert_eq!(join(p), Some(0), "the sleeper did not break the barrier");
        assert!(b.broken());
    }

    /// Killed inside `abort`, `reset` or `register`: the lock held by a dead
    /// process, nothing else changed yet (the arrived party's slot is its own).
    #[test]
    fn a_process_killed_holding_the_internal_lock_breaks_it_for_the_sleepers() {
        let b = Barrier::new(2).unwrap();
        let p = sleeper(&b);
        assert_eq!(b.lock.try_lock(ghost()), Some(Acquired::Clean));
        assert_eq!(join(p), Some(0), "the sleeper did not break the barrier");
        assert!(b.broken());
    }
    /// A sleeper that waited past its first slice is armed: it sleeps without
    /// timed slices (here 10 minutes, past every bound of this test), woken by an
    /// arrival (which it then watches too) and by its alarm when that party dies.
    /// Without the arrival's announce or the alarm's wake, it would sleep on and
    /// the join would time out.
    #[test]
    fn an_armed_sleeper_is_woken_by_an_arrival_and_by_its_death() {
        let mut b = Barrier::new(3).unwrap();
        b.armed_slice = Duration::from_secs(600);
        let a = sleeper(&b);
        poll_until("the first party armed", || {
            b.reason().load(Ordering::Relaxed) & ANNOUNCE != 0
        });
        let b2 = b.clone();
        let second = spawn(move || {
            let _ = b2.wait(None);
        });
        poll_until("the second party arrived", || b.n_waiting() == 2);
        // The second sleeps after its announce woke the first, which then looks,
        // arms an alarm on the second and sleeps again: kill only then, so that
        // only the alarm can tell it.
        until_asleep(second.pid().unwrap());
        until_asleep(a.pid().unwrap());
        second.kill().unwrap();
        assert_eq!(join(second), Some(-9));
        assert_eq!(join(a), Some(0), "the armed sleeper missed the death");
        assert!(b.broken());
        // The round's announce flag does not outlive the round.
        b.reset();
        assert_eq!(b.reason().load(Ordering::Relaxed) & ANNOUNCE, 0);
    }

    /// A party asleep in `wait_interruptible` gets SIGUSR1 (handler without
    /// SA_RESTART) and its check says stop: it breaks the barrier (as `abort`)
    /// and leaves; the other party gets BrokenBarrier("aborted").
    #[test]
    fn an_interrupted_party_breaks_the_barrier_and_leaves() {
        let b = Barrier::new(3).unwrap();
        let calls = crate::RawValue::new(0u32).unwrap();
        let (b2, calls2) = (b.clone(), calls.clone());
        let a = spawn(move || {
            signal::interrupt_with(libc::SIGUSR1);
            let mut check = || {
                calls2.set(calls2.get() + 1);
                true
            };
            let r = b2.wait_interruptible(Some(BOUND * 2), &mut check);
            assert!(matches!(r, Err(Error::Interrupted { .. })), "{r:?}");
        });
        poll_until("A arrived", || b.n_waiting() == 1);
        until_asleep(a.pid().unwrap());
        let b3 = b.clone();
        let other = spawn(move || {
            let r = b3.wait(Some(BOUND * 2));
            assert!(matches!(r, Err(Error::BrokenBarrier("aborted"))), "{r:?}");
        });
        poll_until("the other arrived", || b.n_waiting() == 2);
        until_asleep(other.pid().unwrap());
        interrupt_until(a.pid().unwrap(), "A's check", || calls.get() > 0);
        assert_eq!(join(a), Some(0));
        assert_eq!(
            join(other),
            Some(0),
            "the other party did not see the barrier broken"
        );
        assert_eq!(calls.get(), 1, "the check ran again after it said stop");
        assert!(b.broken());
        assert_eq!(
            b.count().load(Ordering::Relaxed),
            0,
            "a party did not leave"
        );
    }

    /// A check that says "go on" keeps the party in the round: the round is
    /// released when the last party arrives.
    #[test]
    fn a_party_whose_check_says_go_on_stays_in_the_round() {
        let b = Barrier::new(2).unwrap();
        let calls = crate::RawValue::new(0u32).unwrap();
        let (b2, calls2) = (b.clone(), calls.clone());
        let a = spawn(move || {
            signal::interrupt_with(libc::SIGUSR1);
            let mut check = || {
                calls2.set(calls2.get() + 1);
                false
            };
            assert_eq!(b2.wait_interruptible(Some(BOUND), &mut check).unwrap(), 0);
        });
        poll_until("A arrived", || b.n_waiting() == 1);
        until_asleep(a.pid().unwrap());
        interrupt_until(a.pid().unwrap(), "A's check", || calls.get() > 0);
        assert_eq!(b.n_waiting(), 1, "A left the round");
        assert_eq!(b.wait(Some(BOUND)).unwrap(), 1);
        assert_eq!(join(a), Some(0));
        assert!(!b.broken());
    }
}
