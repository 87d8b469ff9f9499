//! `Condition`: wait until notified, over a [`Lock`] or an [`RLock`] (Python's
//! `multiprocessing.Condition`, which defaults to an RLock).
//!
//! ## Design: one slot per waiter
//! Each waiter takes a *slot* (registered while it holds the condition's lock) and
//! sleeps on the slot's own futex word; `notify(n)` marks the `n` oldest waiting
//! slots NOTIFIED and wakes exactly those processes. So `notify(1)` wakes exactly one
//! waiter (FIFO, like CPython's waiter deque), a waiter that arrives after a notify
//! can never take it, and nobody wakes for a notification that is not theirs.
//!
//! ## Layout (the waiter table: a memfd mapping of 16 + 16 x [`MAX_WAITERS`] bytes,
//! sparse; all-zero = no waiter)
//! ```text
//! 0   u32 registered   slots not FREE (a fast "nobody waits" test for notify)
//! 4   u32 high         slots 0..high may be in use (only grows; bounds scans)
//! 8   u32 next_ticket  arrival counter (wrapping): orders waiters FIFO
//! 12  u32 sleepers     waiters inside their futex-sleeping loop (a notify
//!                      makes the wake call only when it is not 0)
//! 16  SLOTS x 16 bytes, slot i at 16 + 16 i:
//!     0  u32 state     futex word: gen << 2 | FREE (0) / WAITING (1) / NOTIFIED (2)
//!     4  u32 owner     the waiter's owner word (`ident::thread()`)
//!     8  u32 ticket    its arrival ticket
//!     12 u32 horizon   its own `ticket` until notified ("no horizon yet"),
//!                      then `next_ticket` when it was notified
//! ```
//!
//! ## Slot states (the generation `gen` changes at every registration, so a stale
//! compare-exchange on a reused slot fails)
//! - `FREE`: unused. Becomes `WAITING` only by a waiter registering under the lock.
//! - `WAITING`: its owner sleeps on `state`. Becomes `NOTIFIED` (notify, under the
//!   lock; or a re-delivery, see below), or `FREE` by its owner timing out (or
//!   being interrupted: `wait_interruptible`).
//! - `NOTIFIED`: its owner was chosen by a notify; the owner re-takes the lock and
//!   then frees the slot. Every change is one compare-exchange on `state`, so a
//!   notifier and a timing-out waiter agree on the outcome: `wait` returns `true`
//!   exactly when its slot was notified. An owner interrupted just as it was
//!   chosen frees the slot at once and re-delivers the notification, as for a
//!   dead owner (below), so the others do not lose it.
//!
//! Invariants: slots change from FREE to WAITING only under the condition's lock
//! (so registrations never race), and `ticket`, `owner` are written before the
//! slot's state becomes WAITING. `registered` >= the number of non-FREE slots: it
//! is raised before a slot is taken and lowered after one is freed, so it is equal
//! except after a process died between the two steps, which only costs later
//! notifies a scan of the table (they skip it when `registered` is 0). Scans stop at
//! `high`, so they cost what the most simultaneous waiters so far used. The table
//! has a slot for every task Linux can run ([`MAX_WAITERS`]), so a registration
//! never runs out of slots; it is a mapping of its own rather than an arena block
//! (at most 4080 bytes, 254 slots), because blocks allocated after a fork are not
//! shared with the processes forked before, so the table cannot grow later.
//!
//! ## Death of a process
//! - Killed holding the condition's lock (also inside `wait` or `notify`): the lock
//!   passes to the next acquirer with `OwnerDied` (see `raw_lock`). `wait` reports
//!   that as `Err(Error::OwnerDied)`, **with the lock held** (re-acquired): `wait`
//!   never changes whether its caller holds the lock.
//! - Killed while WAITING: the slot stays WAITING and a later notify may choose it.
//!   Then it is NOTIFIED but never consumed. Sleepers wake every
//!   the owner-check interval (20 ms); a sleeper that
//!   sees the same NOTIFIED slot of another waiter at two checks in a row asks
//!   `/proc` whether that owner is gone, and if so frees the slot and re-delivers
//!   the notification to the oldest live waiter that was already waiting at notify
//!   time (`ticket` before `horizon`). So a dead waiter delays a notification by
//!   at most about two slices per dead slot on the way, and never swallows it.
//!   `/proc` is read only for slots that stay NOTIFIED across a whole slice, so
//!   the normal paths make no such reads, even with a thousand waiters woken at
//!   once.
//!   The check runs when a slice has *elapsed*, not only when the futex wait timed
//!   out: a stream of signals (EINTR) or spurious wakes cuts every slice short.
//!
//! ## The horizon and racing deliverers
//! Notifiers (under the lock) and re-deliverers (sleepers, without the lock) may
//! pick the same WAITING slot at once. Formerly each stored its horizon *before*
//! its compare-exchange on `state`, so the loser's store could land after the
//! winner's: the NOTIFIED slot then carried the loser's horizon. If its owner was
//! dead, the re-delivery used that wrong horizon: an older one (a re-delivery with
//! horizon h1 losing to a `notify` with h2 > h1) excluded the waiters that the
//! notify was meant for, and the notification was swallowed; a newer one let a
//! waiter that arrived after the notify take it. Now only the winner of the
//! `state` compare-exchange writes the horizon, after winning, and only by a
//! compare-exchange from the registration's own ticket (its "no horizon yet"
//! value, which no real horizon equals: a horizon is a ticket handed out later),
//! so a winner preempted there cannot write into a later registration of the slot
//! either. A re-deliverer that finds a NOTIFIED slot still without horizon leaves
//! it for the next slice (the winner is between two instructions); if it is still
//! so one slice later (the winner died there), it uses `next_ticket` of that
//! moment: a possible extra wake-up, never a lost notification.
//! - A registration that finds the table full first frees the slots of dead owners.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::ident;
use super::owner_died::{LockResult, OwnerDied, TryLockError, TryLockResult};
use super::raw_lock::{Acquired, OWNER_CHECK_INTERVAL};
use super::spin;
use super::{Lock, RLock};
use crate::error::{Error, Result};
use crate::sys::futex;
use crate::sys::mem::{self, Mapping};
use crate::sys::time::Deadline;

/// How many threads (of all processes) may wait on one Condition at once: one slot
/// per waiting thread, and Linux never runs more than `PID_MAX_LIMIT` (2^22) tasks,
/// so the table cannot fill. It is a sparse memfd mapping: only the pages of slots
/// that were ever used take memory (16 bytes per simultaneous waiter).
///
/// ```
/// assert_eq!(multiproc::sync::condition::MAX_WAITERS, 1 << 22);
/// ```
pub const MAX_WAITERS: usize = 1 << 22;
const HEADER: usize = 16;
const SLOT: usize = 16;

const FREE: u32 = 0;
const WAITING: u32 = 1;
const NOTIFIED: u32 = 2;
const STATE_MASK: u32 = 3;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Inner {
    Lock(Lock),
    RLock(RLock),
}

/// A condition variable shared between processes: Python's
/// `multiprocessing.Condition`.
///
/// Hold the condition's lock ([`lock`](Self::lock) or [`acquire`](Self::acquire)),
/// check the shared state, and [`wait`](Self::wait) while it is not what you need;
/// whoever changes the state notifies while holding the lock.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Condition, Process, RawValue};
/// let cond = Condition::new()?;
/// let ready = RawValue::new(0u32)?;
/// let (c, r) = (cond.clone(), ready.clone());
/// let mut child = Process::new(move || {
///     let _g = c.lock().unwrap();
///     r.set(1);
///     c.notify_all().unwrap();
/// });
/// let g = cond.lock().unwrap();
/// child.start()?;
/// assert!(cond.wait_for(|| ready.get() == 1, Some(Duration::from_secs(30)))?);
/// drop(g);
/// assert_eq!(child.join(None)?, Some(0));
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token (its lock and its waiter table go with it): see
/// [`token::export`](crate::token::export).
#[derive(Debug, Clone)]
pub struct Condition {
    inner: Inner,
    // The waiter table (see the module): a memfd mapping of its own, shared with
    // forked children.
    table: Arc<Mapping>,
    // Its descriptor, kept for tokens (the one thing an import needs): one open
    // file per Condition, shared by its clones.
    table_fd: Arc<std::os::fd::OwnedFd>,
}

/// Holds one level of a [`Condition`]'s lock; releases it when dropped.
///
/// ```
/// let cond = multiproc::Condition::new()?;
/// let g = cond.lock().unwrap();
/// assert!(cond.is_owned());
/// drop(g);
/// assert!(!cond.is_owned());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    // An RLock level belongs to the thread that took it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        let _ = self.cond.release();
    }
}

impl ConditionGuard<'_> {
    /// Declares the protected data repaired after an [`OwnerDied`].
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let g = match cond.lock() {
    ///     Ok(g) => g,
    ///     Err(died) => {
    ///         let g = died.into_inner();
    ///         // ... repair the shared state ...
    ///         g.mark_consistent();
    ///         g
    ///     }
    /// };
    /// drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.cond.mark_consistent();
    }
}

struct Slot<'a> {
    state: &'a AtomicU32,
    owner: &'a AtomicU32,
    ticket: &'a AtomicU32,
    horizon: &'a AtomicU32,
}

/// What a sleeper remembers between its checks of the other slots (see
/// `check_notified_slots`).
#[derive(Default)]
struct Watch {
    seen: Vec<(usize, u32)>,
    pending: Option<(usize, u32)>,
}

/// Whether ticket `t` was handed out before `horizon` (wrapping).
fn before(t: u32, horizon: u32) -> bool {
    let d = horizon.wrapping_sub(t);
    d != 0 && d < 1 << 31
}

impl Condition {
    /// A Condition over a new [`RLock`] (Python's default).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let _a = cond.lock().unwrap();
    /// let _b = cond.lock().unwrap(); // an RLock: recursion is fine
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Condition> {
        Condition::build(Inner::RLock(RLock::new()?))
    }

    /// A Condition over an existing [`Lock`] (Python's `Condition(lock)`).
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let cond = multiproc::Condition::with_lock(lock.clone())?;
    /// let _g = cond.lock().unwrap();
    /// assert!(lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        Condition::build(Inner::Lock(lock))
    }

    /// A Condition over an existing [`RLock`].
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// let cond = multiproc::Condition::with_rlock(rlock.clone())?;
    /// let _g = cond.lock().unwrap();
    /// assert!(rlock.is_owned());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_rlock(rlock: RLock) -> Result<Condition> {
        Condition::build(Inner::RLock(rlock))
    }

    fn build(inner: Inner) -> Result<Condition> {
        let len = HEADER + SLOT * MAX_WAITERS;
        // Zero-filled (all-zero = no waiter); pages are allocated on first touch.
        let fd = mem::memfd("multiproc-condition", len as u64)
            .map_err(|e| Error::io("creating a Condition's waiter table (memfd)", e))?;
        let table = Mapping::new(&fd, len)
            .map_err(|e| Error::io("mapping a Condition's waiter table", e))?;
        Ok(Condition {
            inner,
            table: Arc::new(table),
            table_fd: Arc::new(fd),
        })
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        self.table.atomic_u32(off)
    }
    fn registered(&self) -> &AtomicU32 {
        self.word(0)
    }
    fn high(&self) -> &AtomicU32 {
        self.word(4)
    }
    fn next_ticket(&self) -> &AtomicU32 {
        self.word(8)
    }
    fn sleepers(&self) -> &AtomicU32 {
        self.word(12)
    }
    fn slot(&self, i: usize) -> Slot<'_> {
        let o = HEADER + SLOT * i;
        Slot {
            state: self.word(o),
            owner: self.word(o + 4),
            ticket: self.word(o + 8),
            horizon: self.word(o + 12),
        }
    }
    fn used(&self) -> usize {
        (self.high().load(Ordering::Acquire) as usize).min(MAX_WAITERS)
    }

    // ---- the lock -------------------------------------------------------------
    //
    // Over a Lock, "held by the calling thread" is the Lock's process owner plus
    // the thread it records (`Lock::is_held_by_this_thread`), as CPython's
    // `_is_mine`: another thread of the holding process neither waits, notifies
    // nor releases through the Condition.

    fn guard(&self) -> ConditionGuard<'_> {
        ConditionGuard {
            cond: self,
            _not_send: std::marker::PhantomData,
        }
    }

    /// The inner lock's guard `g`, as a ConditionGuard holding the same level.
    fn adopt<G>(&self, g: G) -> ConditionGuard<'_> {
        // The level stays taken; the ConditionGuard's drop gives it back.
        std::mem::forget(g);
        self.guard()
    }

    fn adopt_result<G>(&self, r: TryLockResult<G>) -> TryLockResult<ConditionGuard<'_>> {
        match r {
            Ok(g) => Ok(self.adopt(g)),
            Err(TryLockError::OwnerDied(d)) => Err(TryLockError::OwnerDied(OwnerDied::new(
                self.adopt(d.into_inner()),
            ))),
            Err(TryLockError::WouldBlock) => Err(TryLockError::WouldBlock),
            Err(TryLockError::Invalid(e)) => Err(TryLockError::Invalid(e)),
        }
    }

    /// Python's `acquire(block=True, timeout=None)` on the condition's lock: as
    /// [`Lock::acquire`] / [`RLock::acquire`], `Ok(true)` also when a previous
    /// owner died holding it ([`is_consistent`](Self::is_consistent) then says
    /// false); never an `Err` with the lock taken.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// assert!(cond.acquire(true, None)?);
    /// assert!(cond.is_consistent());
    /// cond.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> Result<bool> {
        match &self.inner {
            Inner::Lock(l) => l.acquire(block, timeout),
            Inner::RLock(r) => r.acquire(block, timeout),
        }
    }

    /// Python's `release()` on the condition's lock (one level of an RLock). Only
    /// the thread that holds it may: anyone else gets [`Error::NotOwner`] (over a
    /// Lock too, as CPython's Condition; the Lock itself may still be released by
    /// anyone with [`Lock::release`]).
    ///
    /// ```
    /// use multiproc::Error;
    /// let cond = multiproc::Condition::new()?;
    /// let err = cond.release().unwrap_err();
    /// assert!(matches!(err, Error::NotOwner { what: "Condition::release" }));
    /// assert!(cond.acquire(true, None)?);
    /// cond.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.check_owned("Condition::release")?;
        match &self.inner {
            Inner::Lock(l) => {
                l.unlock();
                Ok(())
            }
            Inner::RLock(r) => r.release().map_err(|e| match e {
                Error::NotOwner { .. } => Error::NotOwner {
                    what: "Condition::release",
                },
                e => e,
            }),
        }
    }

    /// Takes the condition's lock (Python's `with cond:`); the guard releases it.
    /// The shapes are those of [`Lock::lock`].
    ///
    /// `Err(OwnerDied(guard))` also holds the lock: see [`OwnerDied`].
    ///
    /// # Panics
    /// Over an RLock, if this thread already holds it `u32::MAX` times (as
    /// [`RLock::lock`]).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.lock().unwrap();
    /// cond.notify(1)?;
    /// drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<ConditionGuard<'_>> {
        match &self.inner {
            Inner::Lock(l) => match l.lock() {
                Ok(g) => Ok(self.adopt(g)),
                Err(d) => Err(OwnerDied::new(self.adopt(d.into_inner()))),
            },
            Inner::RLock(r) => match r.lock() {
                Ok(g) => Ok(self.adopt(g)),
                Err(d) => Err(OwnerDied::new(self.adopt(d.into_inner()))),
            },
        }
    }

    /// Takes the condition's lock if it is free now (or already this thread's, over
    /// an RLock), as [`Lock::try_lock`].
    ///
    /// ```
    /// use multiproc::{Condition, Lock, TryLockError};
    /// let cond = Condition::with_lock(Lock::new()?)?;
    /// let g = cond.try_lock().unwrap();
    /// assert!(matches!(cond.try_lock(), Err(TryLockError::WouldBlock)));
    /// drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> TryLockResult<ConditionGuard<'_>> {
        match &self.inner {
            Inner::Lock(l) => self.adopt_result(l.try_lock()),
            Inner::RLock(r) => self.adopt_result(r.try_lock()),
        }
    }

    /// Waits at most `timeout` for the condition's lock, as [`Lock::try_lock_for`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Condition, TryLockError};
    /// let cond = Condition::new()?;
    /// let g = cond.try_lock_for(Duration::from_millis(10)).unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let r = cond.try_lock_for(Duration::from_millis(5));
    ///         assert!(matches!(r, Err(TryLockError::WouldBlock)));
    ///     });
    /// });
    /// drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<ConditionGuard<'_>> {
        match &self.inner {
            Inner::Lock(l) => self.adopt_result(l.try_lock_for(timeout)),
            Inner::RLock(r) => self.adopt_result(r.try_lock_for(timeout)),
        }
    }

    /// Whether the calling thread holds the condition's lock (over a [`Lock`]:
    /// took it, and its process holds it now).
    ///
    /// ```
    /// let cond = multiproc::Condition::with_lock(multiproc::Lock::new()?)?;
    /// assert!(!cond.is_owned());
    /// let _g = cond.lock().unwrap();
    /// assert!(cond.is_owned());
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert!(!cond.is_owned())); // held, but by another thread
    /// });
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_owned(&self) -> bool {
        match &self.inner {
            Inner::Lock(l) => l.is_held_by_this_thread(),
            Inner::RLock(r) => r.is_owned(),
        }
    }

    /// Whether no owner has died holding the condition's lock since the last
    /// [`mark_consistent`](Self::mark_consistent) (what [`acquire`](Self::acquire)
    /// users check after taking it).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// assert!(cond.is_consistent());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_consistent(&self) -> bool {
        match &self.inner {
            Inner::Lock(l) => l.is_consistent(),
            Inner::RLock(r) => r.is_consistent(),
        }
    }

    /// Declares the shared state repaired after an owner died holding the lock;
    /// call it while holding the lock.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// assert!(cond.acquire(true, None)?);
    /// if !cond.is_consistent() {
    ///     // ... repair the shared state ...
    ///     cond.mark_consistent();
    /// }
    /// cond.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        match &self.inner {
            Inner::Lock(l) => l.mark_consistent(),
            Inner::RLock(r) => r.mark_consistent(),
        }
    }

    fn check_owned(&self, what: &'static str) -> Result<()> {
        if self.is_owned() {
            Ok(())
        } else {
            Err(Error::NotOwner { what })
        }
    }

    /// Releases the lock completely; returns what `relock` needs.
    fn unlock_all(&self) -> u32 {
        match &self.inner {
            Inner::Lock(l) => {
                l.unlock();
                1
            }
            Inner::RLock(r) => r.release_all().expect("ownership was checked"),
        }
    }

    fn relock(&self, count: u32) -> Acquired {
        let how = match &self.inner {
            Inner::Lock(l) => l.take(Some(Deadline::NEVER)),
            Inner::RLock(r) => r.reacquire(count, Deadline::NEVER),
        };
        how.expect("a wait without deadline ends only with the lock held")
    }

    // ---- waiting --------------------------------------------------------------

    /// Takes a slot for the calling thread (the lock is held).
    fn register(&self) -> Result<(usize, u32)> {
        let me = ident::thread();
        let mut found = self.find_free();
        if found.is_none() {
            self.free_dead_waiters();
            found = self.find_free();
        }
        let Some((i, state)) = found else {
            return Err(Error::InvalidArgument(format!(
                "more than {MAX_WAITERS} threads are waiting on this Condition: use notify_all and fewer waiters, or several Conditions"
            )));
        };
        let slot = self.slot(i);
        let ticket = self.next_ticket().load(Ordering::Relaxed);
        self.next_ticket()
            .store(ticket.wrapping_add(1), Ordering::Relaxed);
        slot.owner.store(me, Ordering::Relaxed);
        slot.ticket.store(ticket, Ordering::Relaxed);
        // "No horizon yet": only the winning deliverer replaces it.
        slot.horizon.store(ticket, Ordering::Relaxed);
        let mine = ((state >> 2).wrapping_add(1) << 2) | WAITING;
        self.registered().fetch_add(1, Ordering::Relaxed);
        if i as u32 >= self.high().load(Ordering::Relaxed) {
            self.high().store(i as u32 + 1, Ordering::Release);
        }
        // Release: owner and ticket are visible to whoever sees WAITING.
        slot.state.store(mine, Ordering::Release);
        Ok((i, mine))
    }

    fn find_free(&self) -> Option<(usize, u32)> {
        // Slots past `high` are FREE (never used): the first of them ends the scan.
        let used = self.used();
        (0..(used + 1).min(MAX_WAITERS)).find_map(|i| {
            let s = self.slot(i).state.load(Ordering::Acquire);
            (s & STATE_MASK == FREE).then_some((i, s))
        })
    }

    /// Frees the slots of waiters that are gone (rare: only when the table is full).
    fn free_dead_waiters(&self) {
        for i in 0..self.used() {
            let slot = self.slot(i);
            let s = slot.state.load(Ordering::Acquire);
            if s & STATE_MASK != FREE && ident::is_gone(slot.owner.load(Ordering::Relaxed)) {
                self.reclaim(i, s);
            }
        }
    }

    /// Frees slot `i` of a dead owner if it is still in state `s`; a notification it
    /// held goes to the oldest live waiter that was waiting when it was sent.
    /// Returns false (and changes nothing) for a NOTIFIED slot whose deliverer has
    /// not written the horizon yet (see the module).
    fn reclaim(&self, i: usize, s: u32) -> bool {
        let slot = self.slot(i);
        // Both belong to the registration of `s` if the compare-exchange below
        // succeeds (the state stayed `s` meanwhile, and `gen` never repeats).
        let ticket = slot.ticket.load(Ordering::Relaxed);
        let horizon = slot.horizon.load(Ordering::Acquire);
        if s & STATE_MASK == NOTIFIED && horizon == ticket {
            return false;
        }
        if slot
            .state
            .compare_exchange(s, s & !STATE_MASK, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return true;
        }
        self.registered().fetch_sub(1, Ordering::Relaxed);
        if s & STATE_MASK == NOTIFIED {
            self.redeliver(horizon);
        }
        true
    }

    /// Gives a notification sent at `horizon` that its waiter did not take (it
    /// died, or was interrupted) to the oldest live waiter that was already
    /// waiting then; with none left, it is dropped, as a notify with no waiter.
    fn redeliver(&self, horizon: u32) {
        while let Some((j, sj)) = self.oldest_waiting(Some(horizon)) {
            let owner = self.slot(j).owner.load(Ordering::Relaxed);
            if ident::is_gone(owner) {
                self.reclaim(j, sj);
            } else if self.deliver(j, sj, horizon) {
                return;
            }
        }
    }

    /// Frees the calling waiter's slot `i` (its registration `mine`) as a timeout
    /// does: true if it was still WAITING; false if a notify chose it first (then
    /// it is NOTIFIED and still this waiter's to free).
    fn leave(&self, i: usize, mine: u32) -> bool {
        match self.slot(i).state.compare_exchange(
            mine,
            mine & !STATE_MASK,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.registered().fetch_sub(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Frees the calling waiter's NOTIFIED slot `i` (registration `mine`) without
    /// taking its notification (the waiter was interrupted): it is re-delivered as
    /// a dead waiter's would be. A deliverer that has not written the horizon
    /// yet (it is between its two steps, or died there) leaves `next_ticket` as
    /// the horizon: a possible extra wake-up of a later waiter, never a lost one
    /// (the oldest waiter is served first, and those waiting at notify time are
    /// older than the rest).
    fn hand_on(&self, i: usize, mine: u32) {
        let slot = self.slot(i);
        let ticket = slot.ticket.load(Ordering::Relaxed);
        let mut horizon = slot.horizon.load(Ordering::Acquire);
        if horizon == ticket {
            horizon = self.next_ticket().load(Ordering::Relaxed);
        }
        slot.state
            .store((mine & !STATE_MASK) | FREE, Ordering::Release);
        self.registered().fetch_sub(1, Ordering::Relaxed);
        self.redeliver(horizon);
    }

    /// The WAITING slot with the oldest ticket (before `horizon`, if given).
    fn oldest_waiting(&self, horizon: Option<u32>) -> Option<(usize, u32)> {
        let now = self.next_ticket().load(Ordering::Relaxed);
        let mut best: Option<(usize, u32, u32)> = None;
        for i in 0..self.used() {
            let slot = self.slot(i);
            let s = slot.state.load(Ordering::Acquire);
            if s & STATE_MASK != WAITING {
                continue;
            }
            let t = slot.ticket.load(Ordering::Relaxed);
            if horizon.is_some_and(|h| !before(t, h)) {
                continue;
            }
            let age = now.wrapping_sub(t);
            if best.is_none_or(|(_, _, a)| age > a) {
                best = Some((i, s, age));
            }
        }
        best.map(|(i, s, _)| (i, s))
    }

    /// Marks WAITING slot `i` (state `s`) notified and wakes its owner.
    fn deliver(&self, i: usize, s: u32, horizon: u32) -> bool {
        let slot = self.slot(i);
        // The ticket of the registration of `s` if the compare-exchange succeeds.
        let ticket = slot.ticket.load(Ordering::Relaxed);
        let notified = (s & !STATE_MASK) | NOTIFIED;
        // SeqCst: pairs with the sleeper's count-then-look (see `sleepers`).
        if slot
            .state
            .compare_exchange(s, notified, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return false; // lost: another deliverer (or a timeout) won; write nothing
        }
        // Won: the horizon is ours to write, over this registration's "no
        // horizon yet" only (see the module: the loser never writes).
        let _ =
            slot.horizon
                .compare_exchange(ticket, horizon, Ordering::Release, Ordering::Relaxed);
        self.wake(slot.state);
        true
    }

    /// Wakes the owner of a slot whose `state` was just changed, if any waiter
    /// may sleep: a waiter still in its hand-off or yield phase (on one CPU)
    /// sees the change by itself, and the wake call of a futex nobody sleeps on
    /// costs a system call (a quarter of a one-core hand-off here). Returns how
    /// many woke.
    ///
    /// The Dekker handshake: a sleeper counts itself in `sleepers`, then looks at
    /// its `state`, both SeqCst, before each futex sleep (which checks `state`
    /// again); a deliverer changes `state` (SeqCst), then reads `sleepers`
    /// (SeqCst). So either the sleeper sees the change and does not sleep, or
    /// the deliverer sees it counted and wakes it. A waiter killed while counted
    /// leaves the count one too high for good: later notifies just make the wake
    /// call (as before the count existed).
    fn wake(&self, state: &AtomicU32) -> usize {
        if self.sleepers().load(Ordering::SeqCst) == 0 {
            return 0;
        }
        futex::wake(state, 1)
    }

    /// Between slices of sleep: re-deliver notifications held by dead waiters.
    ///
    /// `seen`: the NOTIFIED slots of others (index, state) at this waiter's previous
    /// check, by index. Only a slot found so at two checks in a row is asked about
    /// (`/proc`): a live woken waiter frees its slot as soon as it has the lock, so
    /// with many waiters woken at once the sleepers do not read `/proc` for each of
    /// them (formerly every sleeper did, every slice: O(waiters^2) reads).
    /// `pending`: a dead waiter's NOTIFIED slot found without a horizon at the
    /// previous check; found so again, its deliverer died between its two steps,
    /// and the horizon becomes `next_ticket` now.
    fn check_notified_slots(&self, mine: usize, watch: &mut Watch) {
        let was_pending = watch.pending.take();
        let before = std::mem::take(&mut watch.seen);
        for i in 0..self.used() {
            if i == mine {
                continue;
            }
            let slot = self.slot(i);
            let s = slot.state.load(Ordering::Acquire);
            if s & STATE_MASK != NOTIFIED {
                continue;
            }
            watch.seen.push((i, s));
            if before.binary_search(&(i, s)).is_err()
                || !ident::is_gone(slot.owner.load(Ordering::Relaxed))
            {
                continue;
            }
            if was_pending == Some((i, s)) {
                let ticket = slot.ticket.load(Ordering::Relaxed);
                let now = self.next_ticket().load(Ordering::Relaxed);
                let _ = slot.horizon.compare_exchange(
                    ticket,
                    now,
                    Ordering::Release,
                    Ordering::Relaxed,
                );
            }
            if !self.reclaim(i, s) {
                watch.pending = Some((i, s));
            }
        }
    }

    /// Python's `wait(timeout=None)`: releases the lock (all levels of an RLock),
    /// sleeps until notified or until `timeout` passed, takes the lock back (with
    /// the RLock's full recursion count), and returns whether it was notified.
    ///
    /// `wait` never changes whether the caller holds the lock: calling it without
    /// holding the lock (over a Lock: held by another thread of this process
    /// counts as not holding it) is [`Error::NotOwner`] and changes nothing, and
    /// every other return, `Ok` or `Err`, comes with the lock held again. If a
    /// process died holding the lock while this one waited, the result is
    /// `Err(Error::OwnerDied)`, lock held: repair the data and call
    /// [`mark_consistent`](Self::mark_consistent), or propagate the error and let
    /// the guard release it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Condition, Error};
    /// let cond = Condition::new()?;
    /// assert!(matches!(cond.wait(None), Err(Error::NotOwner { .. })));
    /// let _g = cond.lock().unwrap();
    /// assert!(!cond.wait(Some(Duration::from_millis(5)))?); // nobody notifies
    /// assert!(cond.is_owned());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        self.wait_checked(timeout, None)
    }

    /// [`wait`](Self::wait) that a signal can end: after every futex wait that a
    /// signal handler interrupted (`EINTR`), `check` runs in the waiting thread,
    /// lock not held; when it returns true, the wait ends with
    /// [`Error::Interrupted`], cleanly: the waiter leaves its slot as a timeout
    /// does, except that a notification which had just chosen it goes on to the
    /// oldest other waiter that was waiting when it was sent (it is not lost for
    /// them), and the lock is taken back (all levels of an RLock), as CPython's
    /// `Condition.wait` does in its `finally`. When `check` returns false, the
    /// wait goes on, still registered (its place in the FIFO order kept).
    /// Otherwise as `wait`; `Interrupted` is returned even if the lock's previous
    /// owner died meanwhile (`is_consistent()` still says so).
    ///
    /// This is how the Python package lets Ctrl-C interrupt `Condition.wait`:
    /// CPython's handlers are installed without `SA_RESTART`, its `check`
    /// takes the GIL and runs the Python signal handlers. A signal that arrives
    /// while the waiter is between two futex waits (a few microseconds every
    /// slice) interrupts nothing; as with CPython's own lock waits, the next
    /// signal does.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let _g = cond.lock().unwrap();
    /// // Without a signal, `check` never runs: this wait times out as `wait` does.
    /// let mut check = || true;
    /// assert!(!cond.wait_interruptible(Some(Duration::from_millis(5)), &mut check)?);
    /// assert!(cond.is_owned());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_interruptible(
        &self,
        timeout: Option<Duration>,
        check: &mut dyn FnMut() -> bool,
    ) -> Result<bool> {
        self.wait_checked(timeout, Some(check))
    }

    /// `wait`, with `check` run after every interrupted futex wait (none: `wait`).
    ///
    /// Inline, with its two halves out of line: on one CPU, the first hand-off
    /// (`spin::hand_off`: a yield to the notifier, and a look at the slot) runs in
    /// the caller's frame, since a return across that context switch would cost a
    /// quarter of it (see `spin::hand_off`); the calls after it cost nothing.
    #[inline]
    fn wait_checked(
        &self,
        timeout: Option<Duration>,
        check: Option<&mut dyn FnMut() -> bool>,
    ) -> Result<bool> {
        let what = if check.is_some() {
            "Condition::wait_interruptible"
        } else {
            "Condition::wait"
        };
        let (i, mine, count, deadline) = self.enter_wait(what, timeout)?;
        let slot = self.slot(i);
        let handed_off = spin::hand_off(|| slot.state.load(Ordering::Acquire) != mine);
        self.finish_wait(what, (i, mine, count, deadline), handed_off, check)
    }

    /// The first half of a wait: checks, registers a slot, releases the lock;
    /// returns the slot, its registration, what `relock` needs and the deadline.
    #[inline(never)]
    fn enter_wait(
        &self,
        what: &'static str,
        timeout: Option<Duration>,
    ) -> Result<(usize, u32, u32, Deadline)> {
        self.check_owned(what)?;
        if let Inner::RLock(r) = &self.inner {
            // Waiting releases every level: refused while a Value or Array guard
            // holds one (its `&mut` would outlive the lock).
            r.check_unpinned(what)?;
        }
        let deadline = Deadline::after(timeout)?;
        let (i, mine) = self.register()?;
        let count = self.unlock_all();
        Ok((i, mine, count, deadline))
    }

    /// The rest of a wait after [`enter_wait`](Self::enter_wait) and the inline
    /// hand-off (`handed_off`: it found the slot notified): the yield phase on
    /// one CPU, the sleep in slices, then the relock.
    #[inline(never)]
    fn finish_wait(
        &self,
        what: &'static str,
        (i, mine, count, deadline): (usize, u32, u32, Deadline),
        handed_off: bool,
        mut check: Option<&mut dyn FnMut() -> bool>,
    ) -> Result<bool> {
        let slot = self.slot(i);
        // Confined to one CPU, the notifier runs only when this waiter gives the
        // core up: hand it over (the bounded yield phase, `spin::yield_until`)
        // before the futex sleep. The notifier's wake then finds nobody asleep,
        // and its release of the lock comes before this waiter's relock; a sleeper
        // woken by `notify` instead preempted the notifier while it still held
        // the lock, and went on to wait for that lock too (a one-core ping-pong
        // took 4x a raw futex one). On several CPUs the notifier may be running
        // elsewhere: no yield (a yield among busy processes costs a time slice).
        let ready = || slot.state.load(Ordering::Acquire) != mine;
        let handed_off = handed_off || spin::yield_phase_on_one_cpu(ready);
        let mut watch = Watch::default();
        // When the dead waiters' notifications were last checked: every elapsed
        // slice, however often signals cut the futex wait short.
        let mut checked = std::time::Instant::now();
        // Counted before the looks of the sleeping loop (SeqCst), so that a
        // notify after a look makes its wake call (see `wake`).
        // Uncounted when the guard drops, also if the caller's `check` panics.
        let counted = (!handed_off).then(|| Counted::new(self.sleepers()));
        // Some(notified), or None: interrupted (the slot is left, see below).
        // NOTIFIED already when a yield saw it: only a notify changes the state.
        let notified = if handed_off {
            Some(true)
        } else {
            loop {
                let s = slot.state.load(Ordering::SeqCst);
                if s != mine {
                    break Some(true); // NOTIFIED: only a notify (or re-delivery) changes it
                }
                if deadline.expired() {
                    // Notified just as the timeout hit: the notification is taken.
                    break Some(!self.leave(i, mine));
                }
                let woke =
                    futex::wait(slot.state, mine, Some(deadline.slice(OWNER_CHECK_INTERVAL)));
                if woke == futex::Wake::Interrupted && check.as_mut().is_some_and(|c| c()) {
                    // Notified just as the check said stop: not taken, passed on.
                    if !self.leave(i, mine) {
                        self.hand_on(i, mine);
                    }
                    break None;
                }
                if woke == futex::Wake::TimedOut || checked.elapsed() >= OWNER_CHECK_INTERVAL {
                    self.check_notified_slots(i, &mut watch);
                    checked = std::time::Instant::now();
                }
            }
        };
        drop(counted);
        let how = self.relock(count);
        let Some(notified) = notified else {
            return Err(Error::Interrupted { what });
        };
        if notified {
            // Ours until we free it: only we touch a NOTIFIED slot of a live owner.
            slot.state
                .store((mine & !STATE_MASK) | FREE, Ordering::Release);
            self.registered().fetch_sub(1, Ordering::Relaxed);
        }
        match how {
            Acquired::Clean => Ok(notified),
            Acquired::OwnerDied => Err(Error::OwnerDied),
        }
    }

    /// Python's `wait_for(predicate, timeout=None)`: waits until `predicate()` is
    /// true, at most `timeout` in all; returns the predicate's last value. The lock
    /// must be held; the predicate runs with it held. Errors are those of
    /// [`wait`](Self::wait) (after `Err(Error::OwnerDied)` the lock is held).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let _g = cond.lock().unwrap();
    /// assert!(cond.wait_for(|| true, None)?);
    /// assert!(!cond.wait_for(|| false, Some(Duration::from_millis(5)))?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        // Before the predicate runs: it reads state the lock protects.
        self.check_owned("Condition::wait_for")?;
        let deadline = Deadline::after(timeout)?;
        loop {
            if predicate() {
                return Ok(true);
            }
            let left = deadline.remaining();
            if left == Some(Duration::ZERO) {
                return Ok(false);
            }
            self.wait(left)?;
        }
    }

    /// Python's `notify(n=1)`: wakes at most `n` waiting threads, the longest
    /// waiting first. The lock must be held ([`Error::NotOwner`] otherwise).
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// assert!(cond.notify(1).is_err());
    /// let _g = cond.lock().unwrap();
    /// cond.notify(1)?; // nobody waits: nothing happens
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify(&self, n: usize) -> Result<()> {
        self.check_owned("Condition::notify")?;
        if n == 0 || self.registered().load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let horizon = self.next_ticket().load(Ordering::Relaxed);
        if n == 1 {
            // The common case: one scan for the oldest, no allocation.
            while let Some((i, s)) = self.oldest_waiting(None) {
                if self.deliver(i, s, horizon) {
                    break;
                }
            }
            return Ok(());
        }
        // The WAITING slots, oldest first. No slot becomes WAITING meanwhile (that
        // needs the lock we hold); one may leave WAITING (its owner timed out, or a
        // re-deliverer chose it): its delivery fails and the next one is tried.
        let now = self.next_ticket().load(Ordering::Relaxed);
        let mut waiting: Vec<(u32, usize, u32)> = (0..self.used())
            .filter_map(|i| {
                let slot = self.slot(i);
                let s = slot.state.load(Ordering::Acquire);
                (s & STATE_MASK == WAITING)
                    .then(|| (now.wrapping_sub(slot.ticket.load(Ordering::Relaxed)), i, s))
            })
            .collect();
        if n < waiting.len() {
            waiting.sort_unstable_by_key(|&(age, _, _)| std::cmp::Reverse(age));
        }
        let mut woken = 0;
        for (_, i, s) in waiting {
            if woken == n {
                break;
            }
            if self.deliver(i, s, horizon) {
                woken += 1;
            }
        }
        Ok(())
    }

    /// Python's `notify_all()`: wakes every waiting thread.
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let _g = cond.lock().unwrap();
    /// cond.notify_all()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_all(&self) -> Result<()> {
        self.notify(usize::MAX)
    }
}

/// A Condition travels as a token ([`crate::token`]): its lock (a whole Lock or
/// RLock token) and its waiter table's descriptor. Imported, it is the same
/// condition: a notify in one process wakes a waiter in the other.
impl serde::Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::Condition, || {
            use std::os::fd::AsFd;
            let id = crate::sys::transfer::file_id(&*self.table_fd)
                .map_err(|e| Error::io("fstat on a Condition's waiter table", e))?;
            let fd = crate::sys::transfer::add_fd(id, self.table_fd.as_fd())?;
            Ok((&self.inner, fd, id.1))
        })
    }
}

impl<'de> serde::Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::Condition,
            |(inner, fd, inode): (Inner, u32, u64)| {
                let bad = |reason: String| Error::BadToken {
                    what: "Condition",
                    reason,
                };
                let fd = crate::sys::transfer::take_fd(fd, "Condition")?;
                let st = rustix::fs::fstat(&fd)
                    .map_err(|e| Error::io("fstat on a received waiter table", e))?;
                let len = HEADER + SLOT * MAX_WAITERS;
                if st.st_ino != inode || st.st_size as u64 != len as u64 {
                    return Err(bad(format!(
                        "the waiter table is inode {} of {} bytes, expected inode {inode} of {len}",
                        st.st_ino, st.st_size
                    )));
                }
                // A table that could shrink would fault (SIGBUS) under its mappings:
                // only the sealed memfds that `build` makes are accepted.
                let seals = rustix::fs::fcntl_get_seals(&fd)
                    .map_err(|_| bad("the waiter table is not a sealed memfd".into()))?;
                if !seals.contains(rustix::fs::SealFlags::SHRINK) {
                    return Err(bad("the waiter table can shrink (not sealed)".into()));
                }
                let table = Mapping::new(&fd, len)
                    .map_err(|e| Error::io("mapping a received Condition's waiter table", e))?;
                Ok(Condition {
                    inner,
                    table: Arc::new(table),
                    table_fd: Arc::new(fd),
                })
            },
        )
    }
}

/// A waiter counted in the table's `sleepers` while it lives (see `wake`).
struct Counted<'a>(&'a AtomicU32);

impl<'a> Counted<'a> {
    /// Counts one more sleeper (SeqCst: the first half of the Dekker handshake
    /// with a deliverer's state change, then `sleepers` read).
    fn new(sleepers: &'a AtomicU32) -> Self {
        sleepers.fetch_add(1, Ordering::SeqCst);
        Counted(sleepers)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::spin::test_procs::{
        BOUND, interrupt_until, join, poll_until, spawn, until_asleep,
    };
    use crate::sys::signal;

    /// The slots in state `want`, as (index, state).
    fn slots_in(c: &Condition, want: u32) -> Vec<(usize, u32)> {
        (0..c.used())
            .map(|i| (i, c.slot(i).state.load(Ordering::Acquire)))
            .filter(|&(_, s)| s & STATE_MASK == want)
            .collect()
    }

    /// A child that waits on `c` and must be notified (its exit code says); it is
    /// asleep, the `waiting`-th WAITING slot, once this returns.
    fn waiter(c: &Condition, waiting: usize, timeout: Option<Duration>) -> crate::Process {
        let c2 = c.clone();
        let p = spawn(move || {
            let _g = c2.lock().unwrap();
            assert!(c2.wait(timeout).unwrap(), "not notified");
        });
        poll_until("the waiter registered", || {
            slots_in(c, WAITING).len() == waiting
        });
        until_asleep(p.pid().unwrap());
        p
    }

    /// A sleeper counts itself in `sleepers` while in its sleeping loop, so that
    /// a notify wakes it; with nobody counted, the wake call is skipped.
    #[test]
    fn a_sleeper_is_counted_and_woken_and_a_wake_with_no_sleeper_is_skipped() {
        let c = Condition::new().unwrap();
        let word = AtomicU32::new(0);
        assert_eq!(c.sleepers().load(Ordering::SeqCst), 0);
        assert_eq!(c.wake(&word), 0, "nobody counted: no wake call");
        // Bounded: a failing assertion below leaves no child waiting for good.
        let p = waiter(&c, 1, Some(BOUND));
        assert_eq!(
            c.sleepers().load(Ordering::SeqCst),
            1,
            "an asleep waiter uncounted"
        );
        let (i, _) = slots_in(&c, WAITING)[0];
        // Counted: the wake call is made, and finds the sleeper (which, not
        // notified, looks and sleeps again).
        poll_until("the wake to find the sleeper", || {
            c.wake(c.slot(i).state) == 1
        });
        {
            let _g = c.lock().unwrap();
            c.notify(1).unwrap();
        }
        assert_eq!(join(p), Some(0));
        assert_eq!(
            c.sleepers().load(Ordering::SeqCst),
            0,
            "a woken waiter still counted"
        );
    }

    /// A waits and is SIGKILLed; B waits. Returns (A's slot and WAITING state, B).
    fn dead_then_live(c: &Condition) -> ((usize, u32), crate::Process) {
        let mut a = waiter(c, 1, None);
        let a_slot = slots_in(c, WAITING)[0];
        a.kill().unwrap();
        assert_eq!(a.join(Some(BOUND)).unwrap(), Some(-9));
        // Longer than the join bound: a notification that only its last slice
        // would re-deliver fails the test.
        let b = waiter(c, 2, Some(BOUND * 4));
        (a_slot, b)
    }

    /// `notify(1)` picks the dead A (the oldest); a re-deliverer that picked A's
    /// slot too, with an older horizon (1: only A was waiting then), loses the
    /// compare-exchange. Formerly it had stored its horizon first, over the
    /// notify's: A's notification then went to nobody (B's ticket 1 is not before
    /// 1), and B was never notified.
    #[test]
    fn a_losing_deliverer_does_not_change_the_winner_s_horizon() {
        let c = Condition::new().unwrap();
        let ((ai, a_state), b) = dead_then_live(&c);
        {
            let _g = c.lock().unwrap();
            c.notify(1).unwrap();
            assert_eq!(
                slots_in(&c, NOTIFIED),
                vec![(ai, (a_state & !STATE_MASK) | NOTIFIED)]
            );
            assert!(!c.deliver(ai, a_state, 1), "the slot was delivered already");
            assert_eq!(c.slot(ai).horizon.load(Ordering::Relaxed), 2);
        }
        assert_eq!(join(b), Some(0), "B never got the dead A's notification");
    }

    /// A dead waiter's notification is re-delivered although the live waiter's
    /// slices are all cut short: two processes wake its futex over and over, as a
    /// stream of signals would (EINTR and a wake take the same path: the wait
    /// returns early, not `TimedOut`).
    #[test]
    fn re_delivery_is_not_postponed_by_a_stream_of_early_wakes() {
        let c = Condition::new().unwrap();
        let ((ai, _), b) = dead_then_live(&c);
        let (bi, _) = *slots_in(&c, WAITING)
            .iter()
            .find(|&&(i, _)| i != ai)
            .unwrap();
        let done = crate::Event::new().unwrap();
        let wakers: Vec<_> = (0..2)
            .map(|_| {
                let (c, done) = (c.clone(), done.clone());
                spawn(move || {
                    let word = c.slot(bi).state;
                    while !done.is_set() {
                        futex::wake(word, 1);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        {
            let _g = c.lock().unwrap();
            c.notify(1).unwrap();
            assert_eq!(slots_in(&c, NOTIFIED)[0].0, ai);
        }
        let code = join(b);
        done.set();
        for w in wakers {
            assert_eq!(join(w), Some(0));
        }
        assert_eq!(code, Some(0), "B never got the dead A's notification");
    }

    /// An interruptible waiter, asleep, gets SIGUSR1 (its handler installed
    /// without SA_RESTART) and its check says stop: the wait ends with
    /// `Interrupted`, lock held, its slot left as a timeout leaves it.
    #[test]
    fn an_interrupted_wait_leaves_its_slot_and_holds_the_lock() {
        let c = Condition::new().unwrap();
        let calls = crate::RawValue::new(0u32).unwrap();
        let (c2, calls2) = (c.clone(), calls.clone());
        let p = spawn(move || {
            signal::interrupt_with(libc::SIGUSR1);
            let _g = c2.lock().unwrap();
            let mut check = || {
                calls2.set(calls2.get() + 1);
                true
            };
            let r = c2.wait_interruptible(Some(BOUND * 2), &mut check);
            assert!(matches!(r, Err(Error::Interrupted { .. })), "{r:?}");
            assert!(c2.is_owned(), "the lock was not taken back");
            assert!(signal::CAUGHT.load(Ordering::SeqCst) >= 1);
        });
        poll_until("the waiter registered", || slots_in(&c, WAITING).len() == 1);
        until_asleep(p.pid().unwrap());
        interrupt_until(p.pid().unwrap(), "the check", || calls.get() > 0);
        assert_eq!(join(p), Some(0));
        assert_eq!(calls.get(), 1, "the check ran again after it said stop");
        assert!(slots_in(&c, WAITING).is_empty() && slots_in(&c, NOTIFIED).is_empty());
        assert_eq!(c.registered().load(Ordering::Relaxed), 0);
        drop(c.try_lock().expect("the child released the lock"));
    }

    /// A check that says "go on" keeps the waiter registered: a notify sent after
    /// the interruption still reaches it.
    #[test]
    fn a_check_that_says_go_on_keeps_the_registration() {
        let c = Condition::new().unwrap();
        let calls = crate::RawValue::new(0u32).unwrap();
        let (c2, calls2) = (c.clone(), calls.clone());
        let p = spawn(move || {
            signal::interrupt_with(libc::SIGUSR1);
            let _g = c2.lock().unwrap();
            let mut check = || {
                calls2.set(calls2.get() + 1);
                false
            };
            assert!(
                c2.wait_interruptible(Some(BOUND), &mut check).unwrap(),
                "not notified"
            );
        });
        poll_until("the waiter registered", || slots_in(&c, WAITING).len() == 1);
        until_asleep(p.pid().unwrap());
        interrupt_until(p.pid().unwrap(), "the check", || calls.get() > 0);
        assert_eq!(
            slots_in(&c, WAITING).len(),
            1,
            "the interrupted waiter left"
        );
        {
            let _g = c.lock().unwrap();
            c.notify(1).unwrap();
        }
        assert_eq!(join(p), Some(0));
    }

    /// `notify(1)` chooses the oldest waiter A while A's check runs (a signal
    /// interrupted it); the check then says stop. A's notification must go to
    /// the other waiter B, not be lost with A.
    #[test]
    fn a_notification_that_chose_an_interrupted_waiter_goes_on_to_the_next() {
        let c = Condition::new().unwrap();
        let (asked, go) = (crate::Event::new().unwrap(), crate::Event::new().unwrap());
        let (c2, asked2, go2) = (c.clone(), asked.clone(), go.clone());
        let a = spawn(move || {
            signal::interrupt_with(libc::SIGUSR1);
            let _g = c2.lock().unwrap();
            let mut check = || {
                asked2.set();
                assert!(go2.wait(Some(BOUND)).unwrap());
                true
            };
            let r = c2.wait_interruptible(Some(BOUND * 2), &mut check);
            assert!(matches!(r, Err(Error::Interrupted { .. })), "{r:?}");
            assert!(c2.is_owned());
        });
        poll_until("A registered", || slots_in(&c, WAITING).len() == 1);
        until_asleep(a.pid().unwrap());
        let (ai, _) = slots_in(&c, WAITING)[0];
        // B's wait ends well before its join's bound: not notified fails it.
        let b = waiter(&c, 2, Some(BOUND / 2));
        interrupt_until(a.pid().unwrap(), "A's check", || asked.is_set());
        {
            let _g = c.lock().unwrap();
            c.notify(1).unwrap();
            assert_eq!(slots_in(&c, NOTIFIED).len(), 1);
            assert_eq!(
                slots_in(&c, NOTIFIED)[0].0,
                ai,
                "notify(1) did not choose A"
            );
        }
        go.set();
        assert_eq!(join(a), Some(0));
        assert_eq!(join(b), Some(0), "B never got the notification A passed on");
        assert_eq!(c.registered().load(Ordering::Relaxed), 0);
    }
}
