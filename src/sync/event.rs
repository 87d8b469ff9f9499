//! `Event`: a flag that processes wait for.
//!
//! ## Layout (arena block, 4 bytes used; all-zero = clear, no waiter, generation 0)
//! ```text
//! 0 u32 word  gen << 2 | WAITERS (2) | SET (1)
//! ```
//! - `SET`: the flag. `is_set` reads only this bit.
//! - `WAITERS`: someone may sleep on the word. A waiter sets it (compare-exchange
//!   on a clear word) before it sleeps; `set` keeps it, so that every later `set`
//!   makes the wake call again (a setter killed between its store and its wake
//!   strands nobody past the next `set`); `clear` drops it (nobody can start to
//!   sleep on a set word, and the sleepers of the last set were woken).
//! - `gen` (30 bits, wrapping): bumped by a `set` that finds WAITERS on a clear
//!   word, in the same compare-exchange. A sleeper remembers the generation it saw
//!   first; a different one means "a set happened, maybe cleared already": it
//!   returns the flag as it is now (Python: `wait` returns after `notify_all`, with
//!   the flag's value then), so `set(); clear()` wakes sleepers with `false`.
//!
//! States of the word (g = any generation):
//! - `g | 0`: clear, nobody sleeps. `set` -> `g | SET`, no system call.
//! - `g | WAITERS`: clear, someone may sleep on this value. `set` ->
//!   `g+1 | WAITERS | SET` and wakes all.
//! - `g | SET`: set, nobody waits. `set`: nothing. `clear` -> `g | 0`.
//! - `g | WAITERS | SET`: set after sleepers came. `set`: wakes all again (cheap
//!   insurance against a killed setter). `clear` -> `g | 0`.
//!
//! So setting an Event nobody waits for costs one compare-exchange. There is no
//! internal lock, so a process killed anywhere in these calls leaves the Event
//! working; and sleepers sleep in bounded slices (the owner-check interval, 20 ms,
//! for the first ten, then growing to 100 ms: `spin::sleep_slice`) and look at the
//! word again, so a setter killed between its store and its wake delays them by at
//! most one slice, not forever.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::spin::{self, AdaptiveSpin};
use crate::error::Result;
use crate::shm::arena::Block;
use crate::sys::futex;
use crate::sys::time::Deadline;

const SET: u32 = 1;
const WAITERS: u32 = 2;
const GEN: u32 = 4;
const GEN_MASK: u32 = !(SET | WAITERS);

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
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
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
        Ok(Event::in_block(Block::alloc(4)?))
    }

    /// The Event whose word is the payload of `block` (all-zero: clear).
    pub(crate) fn in_block(block: Block) -> Event {
        let map = block.arena_map();
        Event {
            word: map.atomic_u32(block.offset()),
            spin: AdaptiveSpin::new(),
            _block: block,
        }
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
        self.word.load(Ordering::Acquire) & SET != 0
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
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            if w & SET != 0 {
                // Already set. WAITERS still there: sleepers came before some set,
                // whose setter may have died before its wake; wake them now.
                if w & WAITERS != 0 {
                    futex::wake_all(self.word);
                }
                return;
            }
            let new = if w & WAITERS != 0 {
                w.wrapping_add(GEN) | SET
            } else {
                w | SET
            };
            match self
                .word
                .compare_exchange_weak(w, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if w & WAITERS != 0 {
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
        // Only a set word changes: it drops SET and WAITERS, keeps its generation.
        // A clear word (maybe with WAITERS: sleepers of this generation) stays.
        let mut w = self.word.load(Ordering::Relaxed);
        while w & SET != 0 {
            match self.word.compare_exchange_weak(
                w,
                w & GEN_MASK,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => w = now,
            }
        }
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
    #[inline]
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        if self.is_set() {
            return Ok(true);
        }
        Deadline::check(timeout)?;
        // The generation of the first look: another one means a set came (and
        // maybe went): return the flag as it is then, as Python does. Taken before
        // the hand-off and the spin, so that a set and clear during them or the
        // yield phase ends the wait too.
        let first_gen = self.word.load(Ordering::Acquire) & GEN_MASK;
        // On one CPU, the first hand-off inline (`spin::hand_off`: a yield to the
        // partner, which sets; inline, since a return across that context switch
        // would cost a quarter of it); the rest of the wait is out of line.
        if spin::hand_off(|| self.answered(first_gen)) {
            return Ok(self.is_set());
        }
        self.wait_after_look(first_gen, timeout)
    }

    /// Whether a wait whose first look saw generation `first_gen` is over: the
    /// flag is set, or a set came (and maybe went).
    #[inline]
    fn answered(&self, first_gen: u32) -> bool {
        let w = self.word.load(Ordering::Acquire);
        w & SET != 0 || w & GEN_MASK != first_gen
    }

    /// The rest of [`wait`](Self::wait) after its first look (and the one-core
    /// hand-off) found the flag clear in generation `first_gen`.
    fn wait_after_look(&self, first_gen: u32, timeout: Option<Duration>) -> Result<bool> {
        // A short adaptive spin first (see `sync::spin`): the setter is often
        // running on the other core right now; when it is not, the budget shrinks
        // so that waiting costs little more than a futex sleep. The timeout counts
        // from the end of the spin (at most `spin::MAX` pauses, microseconds, and
        // the bounded yield phase).
        if self.spin.spin(|| self.answered(first_gen), 2) {
            return Ok(self.is_set());
        }
        let deadline = Deadline::after(timeout)?;
        let mut first = true;
        let mut tick = 0;
        loop {
            let w = self.word.load(Ordering::Acquire);
            if w & SET != 0 {
                if first {
                    self.spin.answered_late();
                }
                return Ok(true);
            }
            if w & GEN_MASK != first_gen {
                return Ok(false); // set, then cleared before we looked
            }
            if w & WAITERS == 0
                && self
                    .word
                    .compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            if deadline.expired() {
                return Ok(self.is_set());
            }
            // One slice at most: a setter killed between its store and its wake
            // (or any lost wake) costs this sleeper one slice, not forever.
            let slice = Some(deadline.slice(spin::sleep_slice(tick)));
            if futex::wait(self.word, w | WAITERS, slice) == futex::Wake::Changed && first {
                self.spin.answered_late();
            }
            first = false;
            tick += 1;
        }
    }
}

/// An Event travels as a token ([`crate::token`]).
impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::Event, || {
            crate::token::At::of(&self._block, self._block.offset())
        })
    }
}

impl<'de> serde::Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Event, D::Error> {
        crate::token::deserialize(d, crate::token::Tag::Event, |at: crate::token::At| {
            let (block, offset) = at.import(4, "Event")?;
            if offset != block.offset() {
                return Err(crate::Error::BadToken {
                    what: "Event",
                    reason: "an Event starts its block".into(),
                });
            }
            Ok(Event::in_block(block))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::spin::test_procs::{join, poll_until, spawn, until_asleep};

    /// What a setter killed between its compare-exchange and its wake leaves: the
    /// word says set (a new generation, WAITERS kept), and nobody was woken.
    fn set_without_wake(e: &Event) {
        let w = e.word.load(Ordering::Relaxed);
        assert_eq!(w & (SET | WAITERS), WAITERS, "a sleeper announced itself");
        e.word.store(w.wrapping_add(GEN) | SET, Ordering::Release);
    }

    /// A child asleep in `wait(None)`; returns it once it sleeps.
    fn sleeper(e: &Event) -> crate::Process {
        let e2 = e.clone();
        let p = spawn(move || assert!(e2.wait(None).unwrap()));
        until_asleep(p.pid().unwrap());
        poll_until("WAITERS", || e.word.load(Ordering::Relaxed) & WAITERS != 0);
        p
    }

    #[test]
    fn a_setter_killed_before_its_wake_strands_no_sleeper() {
        let e = Event::new().unwrap();
        let p = sleeper(&e);
        set_without_wake(&e);
        // Nobody wakes the child: it must find the flag at its next slice.
        assert_eq!(join(p), Some(0), "the sleeper stayed asleep on a set Event");
    }

    #[test]
    fn a_later_set_wakes_sleepers_a_killed_setter_left() {
        let e = Event::new().unwrap();
        let p = sleeper(&e);
        set_without_wake(&e);
        // The word already says SET; this set must still make the wake call.
        e.set();
        assert_eq!(join(p), Some(0), "a later set did not wake the sleeper");
    }

    #[test]
    fn set_without_waiters_keeps_one_compare_exchange_and_all_zero_is_clear() {
        let e = Event::new().unwrap();
        assert_eq!(e.word.load(Ordering::Relaxed), 0);
        assert!(!e.is_set());
        e.set();
        assert_eq!(
            e.word.load(Ordering::Relaxed),
            SET,
            "no generation, no WAITERS"
        );
        e.clear();
        assert_eq!(e.word.load(Ordering::Relaxed), 0);
    }
}
