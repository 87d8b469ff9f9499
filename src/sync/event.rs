//! `Event`: a flag that processes wait for.
//!
//! ## Layout (arena block, 4 bytes used; all-zero = clear, no waiter)
//! ```text
//! 0 u32 word  0 = clear; SET (1) = set; WAITERS (2) = clear, and someone may sleep
//! ```
//! `set` stores SET and makes the wake system call only when WAITERS was there, so
//! setting an Event nobody waits for costs one atomic swap. There is no internal
//! lock, so a process killed anywhere in these calls leaves the Event working.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::spin::AdaptiveSpin;
use crate::error::Result;
use crate::shm::arena::Block;
use crate::sys::futex;
use crate::sys::time::Deadline;

const SET: u32 = 1;
const WAITERS: u32 = 2;

/// A process-shared event flag: Python's `multiprocessing.Event`.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Event, Process};
/// let ready = Event::new()?;
/// let r = ready.clone();
/// let mut waiter = Process::new(move || {
///     assert!(r.wait(Some(Duration::from_secs(30))).unwrap());
/// });
/// waiter.start()?;
/// ready.set();
/// assert_eq!(waiter.join(None)?, Some(0));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Event {
    word: &'static AtomicU32,
    // Process-local: how long waits through this handle spin before sleeping.
    spin: AdaptiveSpin,
    _block: Block,
}

impl Event {
    /// A new, clear Event.
    ///
    /// ```
    /// let e = multiproc::Event::new()?;
    /// assert!(!e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Event> {
        let block = Block::alloc(4)?;
        let map = block.arena_map();
        Ok(Event {
            word: map.atomic_u32(block.offset()),
            spin: AdaptiveSpin::new(),
            _block: block,
        })
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// let e = multiproc::Event::new()?;
    /// assert!(!e.is_set());
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn is_set(&self) -> bool {
        self.word.load(Ordering::Acquire) == SET
    }

    /// Sets the flag and wakes every waiter in every process.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Event, Process};
    /// let e = Event::new()?;
    /// let e2 = e.clone();
    /// let mut p = Process::new(move || e2.set());
    /// p.start()?;
    /// assert!(e.wait(Some(Duration::from_secs(30)))?);
    /// p.join(None)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn set(&self) {
        if self.word.swap(SET, Ordering::Release) == WAITERS {
            futex::wake_all(self.word);
        }
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = multiproc::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn clear(&self) {
        // Only SET becomes clear; a clear word (maybe with WAITERS) stays as it is.
        let _ = self
            .word
            .compare_exchange(SET, 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Waits until the flag is set, at most `timeout`; returns whether it is set
    /// (Python's `wait`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = multiproc::Event::new()?;
    /// assert!(!e.wait(Some(Duration::from_millis(1)))?);
    /// e.set();
    /// assert!(e.wait(None)?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        if self.is_set() {
            return Ok(true);
        }
        Deadline::check(timeout)?;
        // A short adaptive spin first (see `sync::spin`): the setter is often
        // running on the other core right now; when it is not, the budget shrinks
        // so that waiting costs little more than a futex sleep. The timeout counts
        // from the end of the spin (at most `spin::MAX` pauses, microseconds).
        if self.spin.spin(|| self.is_set()) {
            return Ok(true);
        }
        let deadline = Deadline::after(timeout)?;
        let mut first = true;
        loop {
            let w = self.word.load(Ordering::Acquire);
            if w == SET {
                if first {
                    self.spin.answered_late();
                }
                return Ok(true);
            }
            if w == 0
                && self
                    .word
                    .compare_exchange(0, WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            if deadline.expired() {
                return Ok(self.is_set());
            }
            if futex::wait(self.word, WAITERS, deadline.remaining()) == futex::Wake::Changed
                && first
            {
                self.spin.answered_late();
            }
            first = false;
        }
    }
}
