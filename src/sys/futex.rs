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
    /// Woken by [`wake`], or spuriously: re-check the word.
    Woken,
    /// A signal handler ran (`EINTR`): re-check the word, and whatever the
    /// handler may have asked for (the interruptible waits call their check).
    /// Every multiproc wait has a timeout slice, so a handler interrupts it even
    /// when installed with `SA_RESTART` (Linux restarts an interrupted futex
    /// wait only when it has no timeout).
    Interrupted,
    /// The word did not hold the expected value when the call was made.
    Changed,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `word == expected`, for at most `timeout` (forever when `None`).
///
/// The check and the sleep are atomic with respect to [`wake`]: a wake that follows
/// a store making `word != expected` cannot be lost. Callers loop: re-check the
/// condition after every return.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => Wake::Woken,
        Err(Errno::AGAIN) => Wake::Changed,
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        Err(Errno::INTR) => Wake::Interrupted,
        // Any other error (none is expected for a valid word): re-check.
        Err(_) => Wake::Woken,
    }
}

/// Wakes at most `n` processes or threads sleeping on `word`; returns how many woke.
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32)).unwrap_or(0)
}

/// Wakes every sleeper on `word`; returns how many woke.
///
/// The futexes are shared: sleepers in other processes that map the word wake too.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    #[test]
    fn wake_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::futex::{Wake, wait};
        use std::sync::atomic::AtomicU32;
        use std::time::Duration;
        let word = AtomicU32::new(5);
        assert_eq!(wait(&word, 4, None), Wake::Changed); // not 4: no sleep at all
        assert_eq!(
            wait(&word, 5, Some(Duration::from_millis(1))),
            Wake::TimedOut
        );
        Ok(())
    }

    #[test]
    fn wait_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::futex::{wait, wake};
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::time::Duration;
        let ready = AtomicU32::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                ready.store(1, Ordering::SeqCst);
                wake(&ready, 1);
            });
            while ready.load(Ordering::SeqCst) == 0 {
                wait(&ready, 0, Some(Duration::from_secs(10)));
            }
        });
        assert_eq!(ready.load(Ordering::SeqCst), 1);
        Ok(())
    }

    #[test]
    fn wake_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::futex::{wait, wake, wake_all};
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::time::{Duration, Instant};
        let word = AtomicU32::new(0);
        assert_eq!(wake(&word, 1), 0); // nobody sleeps on it
        std::thread::scope(|s| {
            s.spawn(|| {
                while word.load(Ordering::SeqCst) == 0 {
                    wait(&word, 0, Some(Duration::from_secs(10)));
                }
            });
            // Once the thread sleeps, a wake reaches it and counts it.
            let give_up = Instant::now() + Duration::from_secs(10);
            while wake(&word, 1) == 0 {
                assert!(Instant::now() < give_up);
                std::thread::yield_now();
            }
            word.store(1, Ordering::SeqCst);
            wake_all(&word);
        });
        Ok(())
    }

    #[test]
    fn wake_all_4() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Process;
        use crate::sys::{
            futex,
            mem::{Mapping, memfd},
        };
        use std::sync::{Arc, atomic::Ordering};
        use std::time::Duration;
        let fd = memfd("doc-futex", 4).unwrap();
        let map = Arc::new(Mapping::new(&fd, 4).unwrap());
        let mut kids = Vec::new();
        for _ in 0..2 {
            let m = Arc::clone(&map);
            let mut p = Process::new(move || {
                let word = m.atomic_u32(0);
                while word.load(Ordering::SeqCst) == 0 {
                    futex::wait(word, 0, Some(Duration::from_secs(10)));
                }
            });
            p.start()?;
            kids.push(p);
        }
        let word = map.atomic_u32(0);
        word.store(1, Ordering::SeqCst);
        futex::wake_all(word);
        for mut p in kids {
            assert_eq!(p.join(Some(Duration::from_secs(20)))?, Some(0));
        }
        Ok(())
    }
}
