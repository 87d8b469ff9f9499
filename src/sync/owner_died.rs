//! The outcome shapes of guard-returning lock calls, after `std::sync`'s poisoning.
//!
//! Where std reports that a *thread panicked* holding a Mutex, multiproc reports that
//! a *process died* holding a lock. Unlike std's poison, the state is repairable: the
//! new holder fixes the data and calls `mark_consistent()`. The rule:
//!
//! 1. The first acquirer after the death gets `Err(OwnerDied(guard))`: it holds the
//!    lock.
//! 2. If it calls `mark_consistent()` before releasing, later acquirers get `Ok`.
//! 3. If it does not, the lock stays usable but every later acquirer also gets
//!    `Err(OwnerDied(guard))`, until someone marks it consistent.

use std::fmt;

use crate::error::Error;

/// The lock was acquired, but a previous owner died holding it.
///
/// Holds the guard: the caller owns the lock. Repair the protected data, call
/// `mark_consistent()` on the guard, and carry on with [`into_inner`](Self::into_inner).
///
/// ```
/// use multiproc::Lock;
/// let lock = Lock::new()?;
/// let guard = match lock.lock() {
///     Ok(g) => g,
///     Err(died) => {
///         let g = died.into_inner();
///         // ... repair what the lock protects ...
///         g.mark_consistent();
///         g
///     }
/// };
/// drop(guard);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct OwnerDied<G> {
    guard: G,
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(guard: G) -> Self {
        OwnerDied { guard }
    }

    /// The guard: the lock is held.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Lock, Process, TryLockError};
    /// let lock = Lock::new()?;
    /// let l = lock.clone();
    /// let mut p = Process::new(move || std::mem::forget(l.lock().unwrap())); // dies holding it
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// let Err(died) = lock.lock() else { unreachable!("the holder died") };
    /// let guard = died.into_inner();
    /// assert!(lock.is_locked()); // held by this process now
    /// drop(guard);
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// A reference to the guard.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Lock, Process, TryLockError};
    /// let lock = Lock::new()?;
    /// let l = lock.clone();
    /// let mut p = Process::new(move || std::mem::forget(l.lock().unwrap())); // dies holding it
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// let Err(died) = lock.lock() else { unreachable!("the holder died") };
    /// assert!(std::ptr::eq(died.get_ref().lock(), &lock));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// A mutable reference to the guard: repair through it without unwrapping.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Process, Value};
    /// let v = Value::new(0i32)?;
    /// let v2 = v.clone();
    /// let mut p = Process::new(move || {
    ///     let mut g = v2.lock().unwrap();
    ///     *g = -1; // a half-done update
    ///     std::mem::forget(g); // and the process ends holding the lock
    /// });
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// let Err(mut died) = v.lock() else { unreachable!("the holder died") };
    /// **died.get_mut() = 0; // repair
    /// died.get_ref().mark_consistent();
    /// drop(died);
    /// assert_eq!(v.get()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied { .. }")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Error::OwnerDied, f)
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

/// `?` on an `OwnerDied` gives [`Error::OwnerDied`], dropping the guard: the lock is
/// released and stays marked inconsistent for the next acquirer.
impl<G> From<OwnerDied<G>> for Error {
    fn from(_: OwnerDied<G>) -> Error {
        Error::OwnerDied
    }
}

/// What a blocking guard-returning acquire gives: the guard, or the guard wrapped in
/// [`OwnerDied`].
///
/// ```
/// use multiproc::{Lock, LockGuard, LockResult};
/// fn take(lock: &Lock) -> LockResult<LockGuard<'_>> {
///     lock.lock()
/// }
/// let lock = Lock::new()?;
/// let guard = take(&lock).unwrap_or_else(|died| died.into_inner());
/// assert!(guard.lock().is_locked());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type LockResult<G> = Result<G, OwnerDied<G>>;

/// Why a non-blocking or timed acquire gave no clean guard.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Lock, TryLockError};
/// let lock = Lock::new()?;
/// let held = lock.lock().unwrap();
/// assert!(matches!(lock.try_lock_for(Duration::from_millis(5)), Err(TryLockError::WouldBlock)));
/// drop(held);
/// // A timeout past what the clock can represent is refused, not waited for.
/// assert!(matches!(lock.try_lock_for(Duration::MAX), Err(TryLockError::Invalid(_))));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum TryLockError<G> {
    /// The lock stayed held by a live owner until the timeout (or at once, for
    /// `try_lock`).
    WouldBlock,
    /// Acquired, but a previous owner died holding it (see [`OwnerDied`]).
    OwnerDied(OwnerDied<G>),
    /// The arguments were refused (a timeout too large for the clock).
    Invalid(Error),
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.write_str("WouldBlock"),
            TryLockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            TryLockError::Invalid(e) => write!(f, "Invalid({e:?})"),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.write_str("the lock is held by another owner"),
            TryLockError::OwnerDied(d) => fmt::Display::fmt(d, f),
            TryLockError::Invalid(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> std::error::Error for TryLockError<G> {}

/// What a non-blocking or timed guard-returning acquire gives.
///
/// ```
/// use multiproc::{RLock, RLockGuard, TryLockResult};
/// let rlock = RLock::new()?;
/// let first: TryLockResult<RLockGuard<'_>> = rlock.try_lock();
/// assert!(first.is_ok());
/// assert!(rlock.try_lock().is_ok()); // recursive: the owner gets another level
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type TryLockResult<G> = Result<G, TryLockError<G>>;
