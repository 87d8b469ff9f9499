//! `RLock`: a recursive lock owned by one thread of one process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::ident;
use super::owner_died::{LockResult, OwnerDied, TryLockError, TryLockResult};
use super::raw_lock::{self, Acquired, RawLock};
use crate::error::{Error, Result};
use crate::shm::arena::Block;
use crate::sys::time::Deadline;

/// A recursive lock, Python's `multiprocessing.RLock`.
///
/// Owned by a (process, thread) pair: the owner may acquire it again without
/// blocking, and must release it as many times as it acquired it; no one else may
/// release it. If the owning thread or its process dies, the next acquirer gets it
/// with [`OwnerDied`] and a recursion count of one.
///
/// ```
/// let rlock = multiproc::RLock::new()?;
/// let outer = rlock.lock().unwrap();
/// let inner = rlock.lock().unwrap(); // same thread: no deadlock
/// assert_eq!(rlock.recursion_count(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!rlock.is_locked());
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
#[derive(Debug, Clone)]
pub struct RLock {
    raw: RawLock,
    // The second u64 of the raw lock's 16 bytes, read and written only by the
    // holding thread (the lock orders every change):
    //   bits  0..32  count: how many levels the holder holds (meaningless while
    //                the lock is free: every fresh acquisition writes it);
    //   bits 32..64  pins: how many of those levels belong to Value/Array guards.
    //                `release` never takes those, so a guard's `&mut` cannot
    //                outlive its lock.
    // One word, so that the critical section of a data guard writes the lock's
    // cache line once more than a bare lock does.
    levels: &'static AtomicU64,
    _block: Block,
}

/// The levels word's parts: (count, pins).
#[inline]
fn split(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

#[inline]
fn join(count: u32, pins: u32) -> u64 {
    u64::from(count) | u64::from(pins) << 32
}

/// One level of an [`RLock`] held by this thread; dropping it releases that level.
///
/// ```
/// let rlock = multiproc::RLock::new()?;
/// let g = rlock.lock().unwrap();
/// assert!(rlock.is_owned());
/// drop(g);
/// assert!(!rlock.is_owned());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "the level is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    // A thread owns the RLock: the guard must stay on the thread that took it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl RLock {
    /// A new, unlocked RLock in shared memory.
    ///
    /// ```
    /// assert!(!multiproc::RLock::new()?.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<RLock> {
        let block = Block::alloc(raw_lock::SIZE)?;
        let offset = block.offset();
        Ok(RLock::in_block(block, offset))
    }

    /// The RLock whose 16 bytes are at `offset` of the arena `block` (shared with the
    /// data it protects, so both sit in one cache line).
    pub(crate) fn in_block(block: Block, offset: usize) -> RLock {
        let map = block.arena_map();
        RLock {
            raw: RawLock::at_thread_owned(map, offset),
            levels: map.atomic_u64(offset + 8),
            _block: block,
        }
    }

    /// Marks one of this thread's levels as held by a data guard (call holding it).
    #[inline]
    pub(crate) fn pin(&self) {
        let (count, pins) = split(self.levels.load(Ordering::Relaxed));
        self.levels.store(join(count, pins + 1), Ordering::Relaxed);
    }

    /// [`Error::InUse`] while a data guard holds a level (a full release would
    /// undercut it).
    pub(crate) fn check_unpinned(&self, what: &'static str) -> Result<()> {
        match split(self.levels.load(Ordering::Relaxed)).1 {
            0 => Ok(()),
            _ => Err(pinned_error(what)),
        }
    }

    /// Releases one pinned level: undoes a [`pin`](Self::pin) and releases the level, with
    /// at most one write of the levels word. For a data guard's drop, which proves
    /// that this thread holds the level (guards are not `Send`, and no release takes
    /// a pinned level).
    #[inline]
    pub(crate) fn release_pinned(&self) {
        let (count, pins) = split(self.levels.load(Ordering::Relaxed));
        if count > 1 {
            self.levels
                .store(join(count - 1, pins.saturating_sub(1)), Ordering::Relaxed);
        } else {
            // The last level: the next owner writes a fresh levels word.
            self.raw.unlock();
        }
    }

    /// Takes one level for the calling thread; `None` when the deadline passed.
    #[inline]
    fn take(&self, deadline: Option<Deadline>) -> Result<Option<Acquired>> {
        self.take_with(|me, w| {
            Ok(match deadline {
                Some(d) => self.raw.lock_contended(me, d),
                None => self.raw.try_take_over(me, w),
            })
        })
    }

    /// Takes one level for the calling thread: one exchange, and when another
    /// holds the lock, `contended(me, word found)` (without a second exchange:
    /// each try takes the contended cache line from the holder).
    #[inline]
    fn take_with(
        &self,
        contended: impl FnOnce(u32, u32) -> Result<Option<Acquired>>,
    ) -> Result<Option<Acquired>> {
        let me = ident::thread();
        // The exchange first, the owner check only when it fails: a load of the
        // word before it would move the contended cache line twice.
        let how = match self.raw.try_exchange(me) {
            Ok(how) => Some(how),
            Err(w) if ident::is_this(w & ident::OWNER_MASK, me) => {
                let (count, pins) = split(self.levels.load(Ordering::Relaxed));
                if count == u32::MAX {
                    return Err(Error::RecursionOverflow { what: "RLock" });
                }
                self.levels.store(join(count + 1, pins), Ordering::Relaxed);
                return Ok(Some(Acquired::Clean));
            }
            Err(w) => contended(me, w)?,
        };
        if how.is_some() {
            // A fresh acquisition: no guard of this process holds a level (it would
            // hold the lock); a dead owner's pins are void.
            self.levels.store(join(1, 0), Ordering::Relaxed);
        }
        Ok(how)
    }

    #[inline]
    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            _not_send: std::marker::PhantomData,
        }
    }

    #[inline]
    fn timed(&self, deadline: Option<Deadline>) -> TryLockResult<RLockGuard<'_>> {
        match self.take(deadline) {
            Err(e) => Err(TryLockError::Invalid(e)),
            Ok(None) => Err(TryLockError::WouldBlock),
            Ok(Some(Acquired::Clean)) => Ok(self.guard()),
            Ok(Some(Acquired::OwnerDied)) => {
                Err(TryLockError::OwnerDied(OwnerDied::new(self.guard())))
            }
        }
    }

    /// Blocks until this thread holds the lock (at once if it already does).
    ///
    /// # Panics
    /// If this thread already holds it `u32::MAX` times.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::RLock;
    /// let rlock = RLock::new()?;
    /// let g1 = rlock.lock().unwrap();
    /// let g2 = rlock.lock().unwrap(); // re-entered, no deadlock
    /// assert_eq!(rlock.recursion_count(), 2);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         // Another thread must wait (here: gives up after 5 ms).
    ///         assert!(rlock.try_lock_for(Duration::from_millis(5)).is_err());
    ///     });
    /// });
    /// drop((g2, g1));
    /// assert!(!rlock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        match self.timed(Some(Deadline::NEVER)) {
            Ok(g) => Ok(g),
            Err(TryLockError::OwnerDied(d)) => Err(d),
            Err(TryLockError::Invalid(e)) => panic!("{e}"),
            Err(TryLockError::WouldBlock) => {
                unreachable!("a wait without deadline ends only with the lock held")
            }
        }
    }

    /// Takes a level without waiting.
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// let a = rlock.try_lock().unwrap();
    /// let b = rlock.try_lock().unwrap();
    /// # drop((b, a));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> TryLockResult<RLockGuard<'_>> {
        self.timed(None)
    }

    /// Waits at most `timeout` for a level (at once if this thread holds it).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{RLock, TryLockError};
    /// let rlock = RLock::new()?;
    /// let g = rlock.try_lock_for(Duration::from_millis(10)).unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let r = rlock.try_lock_for(Duration::from_millis(5));
    ///         assert!(matches!(r, Err(TryLockError::WouldBlock)));
    ///     });
    /// });
    /// drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<RLockGuard<'_>> {
        // A free (or already owned) lock needs no deadline: skip the clock read.
        if let Err(e) = Deadline::check(Some(timeout)) {
            return Err(TryLockError::Invalid(e));
        }
        match self.timed(None) {
            Err(TryLockError::WouldBlock) => {}
            done => return done,
        }
        match Deadline::after(Some(timeout)) {
            Ok(d) => self.timed(Some(d)),
            Err(e) => Err(TryLockError::Invalid(e)),
        }
    }

    /// Python's `acquire(block=True, timeout=None)`: whether a level was taken.
    ///
    /// `Ok(true)` always means "taken, release it": also when the previous owner
    /// died holding it. Then [`is_consistent`](Self::is_consistent) is false:
    /// repair the data, then [`mark_consistent`](Self::mark_consistent). (It never
    /// returns an `Err` with a level held, so `rlock.acquire(true, None)?` cannot
    /// leak one.) `Err` only when nothing was taken: a timeout the clock cannot
    /// represent, or a recursion count that would overflow.
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// assert!(rlock.acquire(true, None)?);
    /// assert!(rlock.acquire(false, None)?);
    /// assert!(rlock.is_consistent());
    /// rlock.release()?;
    /// rlock.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> Result<bool> {
        let how = if block {
            // A free (or already owned) lock needs no deadline: the clock is read
            // only once the exchange failed.
            Deadline::check(timeout)?;
            self.take_with(|me, _| Ok(self.raw.lock_contended(me, Deadline::after(timeout)?)))?
        } else {
            self.take(None)?
        };
        // Clean or OwnerDied, the level is ours: `is_consistent` tells which.
        Ok(how.is_some())
    }

    /// Python's `release()`: drops one level. Only the owning thread may call it;
    /// anyone else gets [`Error::NotOwner`].
    ///
    /// ```
    /// use multiproc::{Error, RLock};
    /// let rlock = RLock::new()?;
    /// assert!(matches!(rlock.release(), Err(Error::NotOwner { .. })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn release(&self) -> Result<()> {
        if !self.is_owned() {
            return Err(Error::NotOwner {
                what: "RLock::release",
            });
        }
        let (count, pins) = split(self.levels.load(Ordering::Relaxed));
        if count <= pins {
            return Err(pinned_error("RLock::release"));
        }
        if count > 1 {
            self.levels.store(join(count - 1, pins), Ordering::Relaxed);
        } else {
            // The last level: the next owner writes a fresh levels word.
            self.raw.unlock();
        }
        Ok(())
    }

    /// Whether the calling thread holds the lock.
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// let _g = rlock.lock().unwrap();
    /// assert!(rlock.is_owned());
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert!(!rlock.is_owned())); // held, but not by this thread
    /// });
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn is_owned(&self) -> bool {
        ident::is_this_thread(self.raw.owner())
    }

    /// Whether any thread of any process holds the lock.
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// assert!(!rlock.is_locked());
    /// let _g = rlock.lock().unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert!(rlock.is_locked())); // seen from another thread too
    /// });
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.raw.owner() != 0
    }

    /// How many times the calling thread holds the lock (0 if it does not).
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// assert_eq!(rlock.recursion_count(), 0);
    /// let a = rlock.lock().unwrap();
    /// let b = rlock.lock().unwrap();
    /// assert_eq!(rlock.recursion_count(), 2);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert_eq!(rlock.recursion_count(), 0)); // not the owner
    /// });
    /// drop(b);
    /// assert_eq!(rlock.recursion_count(), 1);
    /// drop(a);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recursion_count(&self) -> u32 {
        if self.is_owned() {
            split(self.levels.load(Ordering::Relaxed)).0
        } else {
            0
        }
    }

    /// Whether no owner has died holding the lock since the last `mark_consistent`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Process, RLock};
    /// let rlock = RLock::new()?;
    /// assert!(rlock.is_consistent());
    /// let r = rlock.clone();
    /// let mut p = Process::new(move || assert!(r.acquire(true, None).unwrap())); // never released
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// assert!(rlock.acquire(true, Some(Duration::from_secs(10)))?); // taken...
    /// assert!(!rlock.is_consistent()); // ...from a dead owner
    /// rlock.mark_consistent();
    /// assert!(rlock.is_consistent());
    /// rlock.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_consistent(&self) -> bool {
        self.raw.is_consistent()
    }

    /// Declares the protected data repaired after an [`OwnerDied`]; call it while
    /// holding the lock.
    ///
    /// A thread that ends holding the lock counts as a dead owner too:
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{RLock, TryLockError};
    /// let rlock = RLock::new()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| std::mem::forget(rlock.lock().unwrap()));
    /// });
    /// match rlock.try_lock_for(Duration::from_secs(10)) {
    ///     Err(TryLockError::OwnerDied(died)) => {
    ///         let _g = died.into_inner();
    ///         assert_eq!(rlock.recursion_count(), 1);
    ///         rlock.mark_consistent();
    ///     }
    ///     other => panic!("expected OwnerDied, got {other:?}"),
    /// }
    /// assert!(rlock.is_consistent());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.raw.mark_consistent();
    }

    /// Releases every level held by the calling thread and returns how many there
    /// were (for Condition.wait); [`Error::NotOwner`] if it holds none.
    pub(crate) fn release_all(&self) -> Result<u32> {
        if !self.is_owned() {
            return Err(Error::NotOwner {
                what: "RLock::release_all",
            });
        }
        let (count, pins) = split(self.levels.load(Ordering::Relaxed));
        if pins != 0 {
            return Err(pinned_error("the RLock (to wait)"));
        }
        self.raw.unlock();
        Ok(count)
    }

    /// Takes the lock back with `count` levels (after [`release_all`](Self::release_all)).
    pub(crate) fn reacquire(&self, count: u32, deadline: Deadline) -> Option<Acquired> {
        let how = self.raw.lock(ident::thread(), deadline)?;
        self.levels.store(join(count.max(1), 0), Ordering::Relaxed);
        Some(how)
    }
}

fn pinned_error(what: &'static str) -> Error {
    Error::InUse {
        what,
        by: "a live Value or Array guard that holds a level of it",
        hint: "drop the guard to release its level",
    }
}

impl<'a> RLockGuard<'a> {
    /// Pins this level for a data guard (see [`RLock::pin`]) and hands it over:
    /// the caller releases it with [`RLock::release_pinned`].
    #[inline]
    pub(crate) fn into_pinned(self) -> &'a RLock {
        let lock = self.lock;
        lock.pin();
        std::mem::forget(self);
        lock
    }

    /// Declares the protected data repaired after an [`OwnerDied`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Process, RLock};
    /// let rlock = RLock::new()?;
    /// let r = rlock.clone();
    /// let mut p = Process::new(move || std::mem::forget(r.lock().unwrap())); // dies holding it
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// let Err(died) = rlock.lock() else { unreachable!("the holder died") };
    /// let guard = died.into_inner();
    /// // ... repair ...
    /// guard.mark_consistent();
    /// drop(guard);
    /// assert!(rlock.lock().is_ok());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.lock.mark_consistent();
    }
}

impl Drop for RLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

/// An RLock travels as a token ([`crate::token`]).
impl serde::Serialize for RLock {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::RLock, || {
            let offset = self.levels as *const AtomicU64 as usize - self._block.map().addr() - 8;
            crate::token::At::of(&self._block, offset)
        })
    }
}

impl<'de> serde::Deserialize<'de> for RLock {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<RLock, D::Error> {
        crate::token::deserialize(d, crate::token::Tag::RLock, |at: crate::token::At| {
            let (block, offset) = at.import(raw_lock::SIZE, "RLock")?;
            Ok(RLock::in_block(block, offset))
        })
    }
}
