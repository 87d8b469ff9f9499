//! `Lock`: a non-recursive mutual exclusion lock between processes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::ident;
use super::owner_died::{LockResult, OwnerDied, TryLockError, TryLockResult};
use super::raw_lock::{self, Acquired, RawLock};
use crate::error::{Error, Result};
use crate::shm::arena::Block;
use crate::sys::time::Deadline;

/// A process-shared lock, Python's `multiprocessing.Lock`.
///
/// Owned by a *process*: once it holds the lock, any thread of that process (or any
/// other process, as in Python) may release it. If the holding process dies, the next
/// acquirer gets the lock with [`OwnerDied`] within about 20 ms (see the module
/// `raw_lock` for the mechanism). Cloning a `Lock` gives another handle to the same
/// lock; handles moved into a forked [`Process`](crate::Process) work there.
///
/// Uncontended `lock` + unlock is one compare-exchange and one swap, no system call.
///
/// ```
/// use multiproc::{Lock, Process, RawValue};
/// let lock = Lock::new()?;
/// let total = RawValue::<u64>::new(0)?;
/// let (l, t) = (lock.clone(), total.clone());
/// let mut child = Process::new(move || {
///     for _ in 0..1000 {
///         let _g = l.lock().unwrap();
///         t.store(t.load() + 1);
///     }
/// });
/// child.start()?;
/// for _ in 0..1000 {
///     let _g = lock.lock().unwrap();
///     total.store(total.load() + 1);
/// }
/// child.join(None)?;
/// assert_eq!(total.load(), 2000);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
#[derive(Debug, Clone)]
pub struct Lock {
    raw: RawLock,
    // The third u32 of the raw lock's 16 bytes (the recursion count of an RLock,
    // unused by a Lock): the owner word (`ident::thread()`) of the thread that took
    // the lock, written by it right after taking it and set to 0 by whoever releases
    // it, just before. It only answers "does the calling *thread* hold it" (what a
    // Condition asks, as CPython's `_is_mine`); the lock itself stays owned by the
    // process (`raw`), as in Python any thread or process may release it.
    holder: &'static AtomicU32,
    _block: Block,
}

/// Holds a [`Lock`]; releases it when dropped.
///
/// ```
/// let lock = multiproc::Lock::new()?;
/// {
///     let _guard = lock.lock().unwrap();
///     assert!(lock.try_lock().is_err());
/// }
/// assert!(lock.try_lock().is_ok());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Lock {
    /// A new, unlocked Lock in shared memory.
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Lock> {
        let block = Block::alloc(raw_lock::SIZE)?;
        let offset = block.offset();
        Ok(Lock::in_block(block, offset))
    }

    /// The lock whose 16 bytes are at `offset` of the arena `block` (shared with the
    /// data it protects, so both sit in one cache line).
    pub(crate) fn in_block(block: Block, offset: usize) -> Lock {
        let map = block.arena_map();
        Lock {
            raw: RawLock::at(map, offset),
            holder: map.atomic_u32(offset + 8),
            _block: block,
        }
    }

    /// Takes the lock for the calling process and records the calling thread;
    /// `None` when the deadline passed (`None`: without waiting).
    #[inline]
    pub(crate) fn take(&self, deadline: Option<Deadline>) -> Option<Acquired> {
        let me = ident::process();
        let how = match deadline {
            Some(d) => self.raw.lock(me, d),
            None => self.raw.try_lock(me),
        }?;
        self.holder.store(ident::thread(), Ordering::Relaxed);
        Some(how)
    }

    /// Releases the lock (whoever holds it); returns the word it held, 0 if free.
    #[inline]
    pub(crate) fn unlock(&self) -> u32 {
        self.holder.store(0, Ordering::Relaxed);
        self.raw.unlock()
    }

    /// Whether the calling thread took the lock and holds it now (what a Condition
    /// over this Lock asks; see `holder`).
    pub(crate) fn is_held_by_this_thread(&self) -> bool {
        // If both hold, this thread took the lock and no one released it since: a
        // release clears `holder` before it frees the word, and another taker
        // writes its own thread only after taking the word.
        ident::is_this_process(self.raw.owner())
            && ident::is_this_thread(self.holder.load(Ordering::Relaxed))
    }

    #[inline]
    fn guard(&self, how: Acquired) -> LockResult<LockGuard<'_>> {
        let g = LockGuard { lock: self };
        match how {
            Acquired::Clean => Ok(g),
            Acquired::OwnerDied => Err(OwnerDied::new(g)),
        }
    }

    fn timed(&self, deadline: Deadline) -> TryLockResult<LockGuard<'_>> {
        match self.take(Some(deadline)) {
            None => Err(TryLockError::WouldBlock),
            Some(how) => self.guard(how).map_err(TryLockError::OwnerDied),
        }
    }

    /// Blocks until the lock is held; the guard releases it.
    ///
    /// `Err(OwnerDied(guard))` also holds the lock: see [`OwnerDied`].
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let guard = lock.lock().unwrap();
    /// assert!(lock.is_locked());
    /// drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        let how = self
            .take(Some(Deadline::NEVER))
            .expect("a wait without deadline ends only with the lock held");
        self.guard(how)
    }

    /// Takes the lock if it is free, without waiting. A lock whose holder died is
    /// taken over with [`OwnerDied`] too (the owner is checked at most every 20 ms
    /// per thread), so a loop that polls `try_lock` never spins forever on it.
    ///
    /// ```
    /// use multiproc::TryLockError;
    /// let lock = multiproc::Lock::new()?;
    /// let _held = lock.lock().unwrap();
    /// assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
        match self.take(None) {
            None => Err(TryLockError::WouldBlock),
            Some(how) => self.guard(how).map_err(TryLockError::OwnerDied),
        }
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = multiproc::Lock::new()?;
    /// let g = lock.try_lock_for(Duration::from_millis(10)).unwrap();
    /// assert!(lock.try_lock_for(Duration::from_millis(1)).is_err());
    /// drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
        // A free lock needs no deadline: skip the clock read.
        if let Err(e) = Deadline::check(Some(timeout)) {
            return Err(TryLockError::Invalid(e));
        }
        if let Some(how) = self.take(None) {
            return self.guard(how).map_err(TryLockError::OwnerDied);
        }
        match Deadline::after(Some(timeout)) {
            Ok(deadline) => self.timed(deadline),
            Err(e) => Err(TryLockError::Invalid(e)),
        }
    }

    /// Python's `acquire(block=True, timeout=None)`: whether the lock was taken.
    ///
    /// `Ok(true)` always means "taken, release it": also when a previous owner died
    /// holding it. Then [`is_consistent`](Self::is_consistent) is false: repair the
    /// data, then [`mark_consistent`](Self::mark_consistent). (It never returns an
    /// `Err` with the lock held, so `lock.acquire(true, None)?` cannot leak it.)
    /// `Err` only for a timeout the clock cannot represent, with nothing taken.
    /// Release with [`release`](Self::release).
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = multiproc::Lock::new()?;
    /// assert!(lock.acquire(true, None)?);
    /// assert!(lock.is_consistent()); // nobody died holding it
    /// assert!(!lock.acquire(false, None)?);
    /// assert!(!lock.acquire(true, Some(Duration::from_millis(5)))?);
    /// lock.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> Result<bool> {
        let how = if block {
            // A free lock needs no deadline: the clock is read only once the
            // exchange failed (and the exchange is not tried twice).
            Deadline::check(timeout)?;
            let me = ident::process();
            let how = match self.raw.try_exchange(me) {
                Ok(how) => Some(how),
                Err(_) => self.raw.lock_contended(me, Deadline::after(timeout)?),
            };
            if how.is_some() {
                self.holder.store(ident::thread(), Ordering::Relaxed);
            }
            how
        } else {
            self.take(None)
        };
        // Clean or OwnerDied, the lock is ours: `is_consistent` tells which.
        Ok(how.is_some())
    }

    /// Python's `release()`. Any thread of any process may release a held Lock (as
    /// in Python); releasing one that is not held (never acquired, or released
    /// already) is [`Error::NotHeld`].
    ///
    /// ```
    /// use multiproc::{Error, Lock};
    /// let lock = Lock::new()?;
    /// let err = lock.release().unwrap_err();
    /// assert!(matches!(err, Error::NotHeld { .. }));
    /// assert!(err.to_string().contains("not held"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        if self.raw.owner() == 0 {
            return Err(Error::NotHeld {
                what: "Lock::release",
            });
        }
        if self.unlock() == 0 {
            // Released by someone else between the look and the release.
            return Err(Error::NotHeld {
                what: "Lock::release",
            });
        }
        Ok(())
    }

    /// Whether some process holds the lock now (a snapshot: it may change at once).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Lock, Process};
    /// let lock = Lock::new()?;
    /// let l = lock.clone();
    /// let mut p = Process::new(move || l.release().unwrap()); // any process may release
    /// let g = lock.lock().unwrap();
    /// assert!(lock.is_locked());
    /// std::mem::forget(g); // the child releases it instead
    /// p.start()?;
    /// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.raw.owner() != 0
    }

    /// Whether the data is consistent: no owner died holding the lock since the last
    /// [`mark_consistent`](Self::mark_consistent).
    ///
    /// ```
    /// assert!(multiproc::Lock::new()?.is_consistent());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_consistent(&self) -> bool {
        self.raw.is_consistent()
    }

    /// Declares the protected data repaired after an [`OwnerDied`]; call it while
    /// holding the lock.
    ///
    /// The form for [`acquire`](Self::acquire) users (guards have
    /// [`LockGuard::mark_consistent`]):
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Lock, Process};
    /// let lock = Lock::new()?;
    /// let l = lock.clone();
    /// let mut p = Process::new(move || assert!(l.acquire(true, None).unwrap())); // never released
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// // Taken, but the holder died: repair, then mark.
    /// assert!(lock.acquire(true, Some(Duration::from_secs(10)))?);
    /// assert!(!lock.is_consistent());
    /// lock.mark_consistent();
    /// lock.release()?;
    /// assert!(lock.is_consistent());
    /// assert!(lock.acquire(true, Some(Duration::from_secs(10)))?);
    /// lock.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.raw.mark_consistent();
    }
}

impl LockGuard<'_> {
    /// Declares the protected data repaired after an [`OwnerDied`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Lock, Process, TryLockError};
    /// let lock = Lock::new()?;
    /// let l = lock.clone();
    /// let mut p = Process::new(move || std::mem::forget(l.lock().unwrap())); // dies holding it
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// let guard = match lock.try_lock_for(Duration::from_secs(10)) {
    ///     Err(TryLockError::OwnerDied(died)) => died.into_inner(),
    ///     other => panic!("expected OwnerDied, got {other:?}"),
    /// };
    /// // ... repair the data the lock protects ...
    /// guard.mark_consistent();
    /// drop(guard);
    /// assert!(lock.is_consistent());
    /// assert!(lock.try_lock().is_ok());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.lock.mark_consistent();
    }

    /// The lock this guard holds.
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let guard = lock.lock().unwrap();
    /// assert!(std::ptr::eq(guard.lock(), &lock));
    /// assert!(guard.lock().is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> &Lock {
        self.lock
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

/// A Lock travels as a token ([`crate::token`]): exported handles and imported ones
/// are the same lock.
impl serde::Serialize for Lock {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::Lock, || {
            let offset = self.holder as *const AtomicU32 as usize - self._block.map().addr() - 8;
            crate::token::At::of(&self._block, offset)
        })
    }
}

impl<'de> serde::Deserialize<'de> for Lock {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Lock, D::Error> {
        crate::token::deserialize(d, crate::token::Tag::Lock, |at: crate::token::At| {
            let (block, offset) = at.import(raw_lock::SIZE, "Lock")?;
            Ok(Lock::in_block(block, offset))
        })
    }
}
