//! Deadlines on the monotonic clock.
//!
//! Every timeout in multiproc becomes a [`Deadline`] once, at the start of the call,
//! so that loops that wake spuriously or in slices never extend it. `Instant` is
//! `CLOCK_MONOTONIC` on Linux: changing the wall clock moves no deadline.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A point on the monotonic clock, or never.
///
/// A wait loop computes its deadline once and sleeps in bounded slices:
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: wait forever.
    pub const NEVER: Deadline = Deadline(None);

    /// The deadline `timeout` from now; `None` means never.
    ///
    /// A timeout too large for the clock is [`Error::TimeoutOverflow`].
    pub fn after(timeout: Option<Duration>) -> Result<Deadline> {
        match timeout {
            None => Ok(Deadline::NEVER),
            Some(d) => Instant::now()
                .checked_add(d)
                .map(|t| Deadline(Some(t)))
                .ok_or(Error::TimeoutOverflow(d)),
        }
    }

    /// Checks that `timeout` can become a deadline, reading the clock only for
    /// timeouts too large to be sure of (over ~146 years): fast paths that may not
    /// need a deadline at all call this first, so that they report
    /// [`Error::TimeoutOverflow`] exactly as [`after`](Self::after) would, without its
    /// clock read.
    #[inline]
    pub fn check(timeout: Option<Duration>) -> Result<()> {
        if Deadline::surely_fits(timeout) {
            return Ok(());
        }
        Deadline::after(timeout).map(|_| ())
    }

    /// Whether [`check`](Self::check) passes without a look at the clock: no
    /// timeout, or one below half the clock's range (a fast path's test, a bool
    /// instead of a `Result`).
    #[inline(always)]
    pub fn surely_fits(timeout: Option<Duration>) -> bool {
        // The monotonic clock counts seconds since boot in an i64: below half its
        // range, now + timeout cannot overflow.
        timeout.is_none_or(|d| d.as_secs() <= (i64::MAX as u64) / 2)
    }

    /// Time left: `None` when there is no deadline, zero once it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Time left, but at most `slice`: how long one bounded sleep may last.
    pub fn slice(&self, slice: Duration) -> Duration {
        self.remaining().map_or(slice, |r| r.min(slice))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.0.is_some_and(|t| Instant::now() >= t)
    }
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    #[test]
    fn deadline_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::time::Deadline;
        use std::time::{Duration, Instant};
        let start = Instant::now();
        let deadline = Deadline::after(Some(Duration::from_millis(20)))?;
        while !deadline.expired() {
            std::thread::sleep(deadline.slice(Duration::from_millis(5)));
        }
        assert!(start.elapsed() >= Duration::from_millis(20));
        Ok(())
    }

    #[test]
    fn never_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::time::Deadline;
        use std::time::Duration;
        assert!(!Deadline::NEVER.expired());
        assert_eq!(Deadline::NEVER.remaining(), None);
        assert_eq!(
            Deadline::NEVER.slice(Duration::from_millis(20)),
            Duration::from_millis(20)
        );
        Ok(())
    }

    #[test]
    fn after_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::{Error, sys::time::Deadline};
        use std::time::Duration;
        let soon = Deadline::after(Some(Duration::from_secs(60)))?;
        assert!(soon.remaining().unwrap() <= Duration::from_secs(60));
        assert_eq!(Deadline::after(None)?.remaining(), None); // never
        assert!(matches!(
            Deadline::after(Some(Duration::MAX)),
            Err(Error::TimeoutOverflow(_))
        ));
        Ok(())
    }

    #[test]
    fn check_4() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::time::Deadline;
        use std::time::Duration;
        assert!(Deadline::check(Some(Duration::from_secs(30))).is_ok());
        assert!(Deadline::check(None).is_ok());
        assert!(Deadline::check(Some(Duration::MAX)).is_err());
        Ok(())
    }

    #[test]
    fn remaining_5() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::time::Deadline;
        use std::time::Duration;
        let now = Deadline::after(Some(Duration::ZERO))?;
        assert_eq!(now.remaining(), Some(Duration::ZERO));
        let later = Deadline::after(Some(Duration::from_secs(60)))?;
        assert!(later.remaining().unwrap() > Duration::from_secs(59));
        Ok(())
    }

    #[test]
    fn slice_6() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::time::Deadline;
        use std::time::Duration;
        let ms = Duration::from_millis;
        let far = Deadline::after(Some(Duration::from_secs(60)))?;
        assert_eq!(far.slice(ms(20)), ms(20));
        let passed = Deadline::after(Some(Duration::ZERO))?;
        assert_eq!(passed.slice(ms(20)), Duration::ZERO);
        Ok(())
    }

    #[test]
    fn expired_7() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::time::Deadline;
        use std::time::Duration;
        assert!(Deadline::after(Some(Duration::ZERO))?.expired());
        assert!(!Deadline::after(Some(Duration::from_secs(60)))?.expired());
        Ok(())
    }
}
