//! `Semaphore` and `BoundedSemaphore`: a counter of permits that processes take and
//! give back (Python's `multiprocessing.Semaphore` / `BoundedSemaphore`).
//!
//! ## Layout (arena block, 16 bytes; all-zero = a Semaphore(0) nobody waits on)
//! ```text
//! 0  u32 value    permits available now (the futex word); at most i32::MAX
//! 4  u32 waiters  processes or threads inside the sleeping part of `acquire`
//! 8  u32 bound    BoundedSemaphore: the initial value, which `release` may not
//!                 exceed; Semaphore: i32::MAX (the largest value, as POSIX's
//!                 SEM_VALUE_MAX)
//! 12 u32          reserved, 0
//! ```
//!
//! ## States and invariants
//! - `value` only changes by compare-exchange: acquire `v -> v - 1` when `v > 0`,
//!   release `v -> v + n` when `v + n <= bound`. So `0 <= value <= bound` always,
//!   and an over-release is refused before anything changes.
//! - A sleeper increments `waiters` *before* its last look at `value` and sleeps
//!   only while `value == 0` (the futex checks that atomically); a releaser adds to
//!   `value` *before* it reads `waiters`. Both are sequentially consistent, so
//!   either the sleeper sees the permit or the releaser sees the sleeper and wakes
//!   it: no wakeup is lost, and a release nobody waits for costs no system call.
//! - A woken sleeper competes for the permit like any newcomer (no hand-off): a
//!   newcomer may take it first, and the sleeper sleeps again.
//!
//! ## Death of a process
//! There is no internal lock, so a process killed anywhere in these calls leaves
//! the semaphore working. A releaser killed between its compare-exchange and its
//! wake (or a woken sleeper killed before it took the permit) leaves a permit
//! nobody is woken for: sleepers sleep in bounded slices (20 ms for the first ten,
//! then growing to 100 ms: `spin::sleep_slice`) and look at `value` again, so that
//! costs them one slice, not forever; and the
//! next release wakes them anyway (`waiters` still counts them). A process killed while holding a permit keeps it (as in
//! Python: a semaphore has no owner). One killed while sleeping leaves `waiters`
//! one too high for good, which only costs later releases a needless wake call.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::owner_died::{LockResult, TryLockError, TryLockResult};
use super::spin::{self, AdaptiveSpin};
use crate::error::{Error, Result};
use crate::shm::arena::Block;
use crate::sys::futex;
use crate::sys::time::Deadline;

/// The largest value a semaphore may hold (POSIX `SEM_VALUE_MAX`, Python's limit).
///
/// ```
/// use multiproc::sync::semaphore::VALUE_MAX;
/// assert!(multiproc::Semaphore::new(VALUE_MAX).is_ok());
/// assert!(multiproc::Semaphore::new(VALUE_MAX + 1).is_err());
/// ```
pub const VALUE_MAX: u32 = i32::MAX as u32;

/// The shared words and the logic common to both kinds.
#[derive(Debug, Clone)]
struct Core {
    value: &'static AtomicU32,
    waiters: &'static AtomicU32,
    bound: &'static AtomicU32,
    bounded: bool,
    // Process-local: how long acquires through this handle spin before sleeping.
    spin: AdaptiveSpin,
    _block: Block,
}

impl Core {
    /// The core whose 16 bytes start the payload of the arena `block`.
    fn in_block(block: Block, bounded: bool) -> Core {
        let map = block.arena_map();
        let off = block.offset();
        Core {
            value: map.atomic_u32(off),
            waiters: map.atomic_u32(off + 4),
            bound: map.atomic_u32(off + 8),
            bounded,
            spin: AdaptiveSpin::new(),
            _block: block,
        }
    }

    fn ser<S: serde::Serializer>(
        &self,
        s: S,
        tag: crate::token::Tag,
    ) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, tag, || {
            crate::token::At::of(&self._block, self._block.offset())
        })
    }

    fn de<'de, D: serde::Deserializer<'de>>(
        d: D,
        tag: crate::token::Tag,
    ) -> std::result::Result<Core, D::Error> {
        crate::token::deserialize(d, tag, |at: crate::token::At| {
            let (block, offset) = at.import(16, tag.name())?;
            if offset != block.offset() {
                return Err(Error::BadToken {
                    what: tag.name(),
                    reason: "a semaphore starts its block".into(),
                });
            }
            Ok(Core::in_block(
                block,
                tag == crate::token::Tag::BoundedSemaphore,
            ))
        })
    }
    fn new(value: u32, bounded: bool) -> Result<Core> {
        if value > VALUE_MAX {
            return Err(Error::SizeOverflow {
                what: "semaphore value",
                requested: value as u128,
                max: VALUE_MAX as u128,
            });
        }
        Ok(Core::in_block(Block::alloc(16)?, bounded).init(Some(value)))
    }

    /// Writes a fresh semaphore's `value` and bound (`None`: an existing one,
    /// left as it is).
    fn init(self, value: Option<u32>) -> Core {
        if let Some(value) = value {
            self.value.store(value, Ordering::Relaxed);
            self.bound.store(
                if self.bounded { value } else { VALUE_MAX },
                Ordering::Release,
            );
        }
        self
    }

    #[inline]
    fn try_take(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            match self
                .value
                .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Takes a permit within `timeout`: the start of every blocking take,
    /// inline in the caller. A free permit, or on one CPU the first hand-off
    /// (`spin::hand_off`: a yield to the partner, which releases; inline, since
    /// a return across that context switch would cost a quarter of it); then the
    /// out-of-line [`take`](Self::take) with its deadline.
    #[inline]
    fn take_within(&self, timeout: Option<Duration>) -> Result<bool> {
        if self.try_take()
            || spin::hand_off(|| self.value.load(Ordering::Relaxed) > 0 && self.try_take())
        {
            return Ok(true);
        }
        Ok(self.take(Deadline::after(timeout)?))
    }

    fn take(&self, deadline: Deadline) -> bool {
        if self.try_take() {
            return true;
        }
        // A short adaptive spin (see `sync::spin`): the holder often releases on
        // the other core right now; when it is not running, the budget shrinks.
        if self.spin.spin(
            || self.value.load(Ordering::Relaxed) > 0 && self.try_take(),
            2,
        ) {
            return true;
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut first = true;
        let mut tick = 0;
        let got = loop {
            // SeqCst pairs with the releaser's add-then-read of `waiters`.
            if self.value.load(Ordering::SeqCst) > 0 && self.try_take() {
                if first {
                    self.spin.answered_late();
                }
                break true;
            }
            first = false;
            if deadline.expired() {
                break false;
            }
            // One slice at most: a permit whose wake was lost (releaser killed
            // before its wake call) is found at the next look.
            futex::wait(self.value, 0, Some(deadline.slice(spin::sleep_slice(tick))));
            tick += 1;
        };
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        got
    }

    #[inline]
    fn acquire(&self, block: bool, timeout: Option<Duration>) -> Result<bool> {
        if !block {
            return Ok(self.try_take());
        }
        // A free permit needs no deadline: the clock is read only after the
        // first look (and the one-core hand-off) found none.
        Deadline::check(timeout)?;
        self.take_within(timeout)
    }

    #[inline]
    fn release(&self, n: u32) -> Result<()> {
        if n == 0 {
            return Err(Error::InvalidArgument(
                "release(0): release at least one permit".into(),
            ));
        }
        let bound = self.bound.load(Ordering::Relaxed);
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            if v.checked_add(n).is_none_or(|sum| sum > bound) {
                return Err(if self.bounded {
                    Error::OverRelease { value: v, n, bound }
                } else {
                    Error::SemaphoreFull {
                        value: v,
                        n,
                        max: bound,
                    }
                });
            }
            match self
                .value
                .compare_exchange_weak(v, v + n, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(self.value, n);
        }
        Ok(())
    }

    fn get_value(&self) -> u32 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A permit taken from a [`Semaphore`] or [`BoundedSemaphore`]; dropping it gives
/// the permit back (Python's `with sem:`).
///
/// ```
/// let sem = multiproc::Semaphore::new(1)?;
/// {
///     let _permit = sem.lock().unwrap();
///     assert_eq!(sem.get_value(), 0);
/// }
/// assert_eq!(sem.get_value(), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "the permit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    core: &'a Core,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // The guard's permit was taken, so value < bound and this cannot fail.
        let _ = self.core.release(1);
    }
}

macro_rules! common_api {
    ($ty:ident, $example_new:literal) => {
        impl $ty {
            /// Python's `acquire(block=True, timeout=None)`: takes a permit, waiting
            /// at most `timeout` (forever with `None`) when `block`; returns whether
            /// a permit was taken.
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = $example_new]
            /// assert!(sem.acquire(true, None)?);
            /// assert!(!sem.acquire(false, None)?);
            /// assert!(!sem.acquire(true, Some(Duration::from_millis(5)))?);
            /// sem.release()?;
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            #[inline]
            pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> Result<bool> {
                self.core.acquire(block, timeout)
            }

            /// Takes a permit, waiting as long as needed; the guard gives it back
            /// (Python's `with sem:`). The shapes are those of
            /// [`Lock::lock`](crate::Lock::lock); a semaphore has no owner, so the
            /// result is always `Ok` (no holder can die holding it).
            ///
            /// ```
            #[doc = $example_new]
            /// let permit = sem.lock().unwrap();
            /// assert_eq!(sem.get_value(), 0);
            /// drop(permit);
            /// assert_eq!(sem.get_value(), 1);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            #[inline]
            pub fn lock(&self) -> LockResult<SemaphoreGuard<'_>> {
                // No timeout: nothing can fail, and the wait ends with a permit.
                let taken = self.core.take_within(None);
                debug_assert!(matches!(taken, Ok(true)));
                Ok(SemaphoreGuard { core: &self.core })
            }

            /// Takes a permit if one is free now; [`TryLockError::WouldBlock`] if
            /// not (as [`Lock::try_lock`](crate::Lock::try_lock)).
            ///
            /// ```
            /// use multiproc::TryLockError;
            #[doc = $example_new]
            /// let a = sem.try_lock();
            /// assert!(a.is_ok());
            /// assert!(matches!(sem.try_lock(), Err(TryLockError::WouldBlock)));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn try_lock(&self) -> TryLockResult<SemaphoreGuard<'_>> {
                if self.core.try_take() {
                    Ok(SemaphoreGuard { core: &self.core })
                } else {
                    Err(TryLockError::WouldBlock)
                }
            }

            /// Waits at most `timeout` for a permit: [`TryLockError::WouldBlock`]
            /// if none came, [`TryLockError::Invalid`] for a timeout the clock
            /// cannot represent (as [`Lock::try_lock_for`](crate::Lock::try_lock_for)).
            ///
            /// ```
            /// use std::time::Duration;
            /// use multiproc::TryLockError;
            #[doc = $example_new]
            /// let _a = sem.try_lock_for(Duration::from_millis(5)).unwrap();
            /// let r = sem.try_lock_for(Duration::from_millis(5));
            /// assert!(matches!(r, Err(TryLockError::WouldBlock)));
            /// assert!(matches!(sem.try_lock_for(Duration::MAX), Err(TryLockError::Invalid(_))));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            #[inline]
            pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<SemaphoreGuard<'_>> {
                if let Err(e) = Deadline::check(Some(timeout)) {
                    return Err(TryLockError::Invalid(e));
                }
                if self
                    .core
                    .take_within(Some(timeout))
                    .map_err(TryLockError::Invalid)?
                {
                    Ok(SemaphoreGuard { core: &self.core })
                } else {
                    Err(TryLockError::WouldBlock)
                }
            }

            /// Python's `release()`: gives back one permit and wakes one waiter.
            ///
            /// ```
            #[doc = $example_new]
            /// assert!(sem.acquire(true, None)?);
            /// sem.release()?;
            /// assert_eq!(sem.get_value(), 1);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            #[inline]
            pub fn release(&self) -> Result<()> {
                self.core.release(1)
            }

            /// `threading`'s `release(n)`: gives back `n` permits at once (all or
            /// none) and wakes up to `n` waiters; `n == 0` is an error.
            ///
            /// ```
            #[doc = $example_new]
            /// assert!(sem.acquire(true, None)?);
            /// sem.release_n(1)?;
            /// assert!(sem.release_n(0).is_err());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn release_n(&self, n: u32) -> Result<()> {
                self.core.release(n)
            }

            /// The number of permits free now (Python's `get_value()`): a snapshot.
            ///
            /// ```
            #[doc = $example_new]
            /// assert_eq!(sem.get_value(), 1);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn get_value(&self) -> u32 {
                self.core.get_value()
            }
        }
    };
}

/// A counting semaphore in shared memory: Python's `multiprocessing.Semaphore`.
///
/// `release` may raise the value above its initial value (up to [`VALUE_MAX`]);
/// use [`BoundedSemaphore`] to make that an error. Clone the handle to share it.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Process, Semaphore};
/// let sem = Semaphore::new(0)?;
/// let s = sem.clone();
/// let mut child = Process::new(move || s.release().unwrap());
/// child.start()?;
/// assert!(sem.acquire(true, Some(Duration::from_secs(30)))?);
/// assert_eq!(child.join(None)?, Some(0));
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
#[derive(Debug, Clone)]
pub struct Semaphore {
    core: Core,
}

impl Semaphore {
    /// A semaphore holding `value` permits; above [`VALUE_MAX`] is
    /// [`Error::SizeOverflow`].
    ///
    /// ```
    /// assert_eq!(multiproc::Semaphore::new(3)?.get_value(), 3);
    /// assert!(multiproc::Semaphore::new(u32::MAX).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            core: Core::new(value, false)?,
        })
    }
}

impl Semaphore {
    /// The semaphore at the payload of `block` (16 bytes): `init` gives a fresh
    /// one's value (checked by the caller against [`VALUE_MAX`]), `None` opens one.
    pub(crate) fn in_block(block: Block, init: Option<u32>) -> Semaphore {
        Semaphore {
            core: Core::in_block(block, false).init(init),
        }
    }
}

common_api!(Semaphore, "let sem = multiproc::Semaphore::new(1)?;");

/// A semaphore that refuses to be released above its initial value: Python's
/// `multiprocessing.BoundedSemaphore`. An over-release is [`Error::OverRelease`]
/// and changes nothing.
///
/// ```
/// use multiproc::{BoundedSemaphore, Error};
/// let sem = BoundedSemaphore::new(1)?;
/// assert!(matches!(sem.release(), Err(Error::OverRelease { value: 1, n: 1, bound: 1 })));
/// assert_eq!(sem.get_value(), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
#[derive(Debug, Clone)]
pub struct BoundedSemaphore {
    core: Core,
}

impl BoundedSemaphore {
    /// A bounded semaphore holding `value` permits, which is also its bound.
    ///
    /// ```
    /// assert_eq!(multiproc::BoundedSemaphore::new(2)?.bound(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            core: Core::new(value, true)?,
        })
    }

    /// The bounded semaphore at the payload of `block` (16 bytes): `init` gives a
    /// fresh one's value and bound, `None` opens one.
    pub(crate) fn in_block(block: Block, init: Option<u32>) -> BoundedSemaphore {
        BoundedSemaphore {
            core: Core::in_block(block, true).init(init),
        }
    }

    /// The bound: the initial value, which the value never exceeds.
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(3)?;
    /// assert_eq!(sem.bound(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn bound(&self) -> u32 {
        self.core.bound.load(Ordering::Relaxed)
    }
}

common_api!(
    BoundedSemaphore,
    "let sem = multiproc::BoundedSemaphore::new(1)?;"
);

/// A Semaphore travels as a token ([`crate::token`]).
impl serde::Serialize for Semaphore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.core.ser(s, crate::token::Tag::Semaphore)
    }
}

impl<'de> serde::Deserialize<'de> for Semaphore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Semaphore {
            core: Core::de(d, crate::token::Tag::Semaphore)?,
        })
    }
}

/// A BoundedSemaphore travels as a token ([`crate::token`]); its bound is shared.
impl serde::Serialize for BoundedSemaphore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.core.ser(s, crate::token::Tag::BoundedSemaphore)
    }
}

impl<'de> serde::Deserialize<'de> for BoundedSemaphore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(BoundedSemaphore {
            core: Core::de(d, crate::token::Tag::BoundedSemaphore)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::spin::test_procs::{join, poll_until, spawn, until_asleep};

    #[test]
    fn a_releaser_killed_before_its_wake_strands_no_sleeper() {
        let sem = Semaphore::new(0).unwrap();
        let s2 = sem.clone();
        let p = spawn(move || assert!(s2.acquire(true, None).unwrap()));
        poll_until("the sleeper counted", || {
            sem.core.waiters.load(Ordering::SeqCst) == 1
        });
        until_asleep(p.pid().unwrap());
        // What a release killed between its compare-exchange and its wake leaves:
        // a permit, and no wake call.
        sem.core.value.fetch_add(1, Ordering::SeqCst);
        assert_eq!(
            join(p),
            Some(0),
            "the sleeper stayed asleep on a free permit"
        );
        assert_eq!(sem.get_value(), 0);
        assert_eq!(sem.core.waiters.load(Ordering::SeqCst), 0);
    }
}
