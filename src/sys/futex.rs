//! Shared futexes on words in shared memory.
//!
//! Linux futexes identify a waiter by the *physical page* and offset of the word when
//! `FUTEX_PRIVATE_FLAG` is absent, so a wake from any process that maps the same page
//! reaches it. Rust std and parking_lot pass the private flag and therefore cannot be
//! used between processes; that is why multiproc has its own.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Woken by [`wake`], by a signal, or spuriously: re-check the word.
    Woken,
    /// The word did not hold the expected value when the call was made.
    Changed,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `word == expected`, for at most `timeout` (forever when `None`).
///
/// The check and the sleep are atomic with respect to [`wake`]: a wake that follows
/// a store making `word != expected` cannot be lost.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => Wake::Woken,
        Err(Errno::AGAIN) => Wake::Changed,
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        // EINTR: a signal arrived; the caller re-checks its condition.
        Err(_) => Wake::Woken,
    }
}

/// Wakes at most `n` processes or threads sleeping on `word`; returns how many woke.
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32)).unwrap_or(0)
}

/// Wakes every sleeper on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}
