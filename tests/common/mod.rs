//! Helpers shared by the integration tests: start real processes, join with a
//! bounded wait, and a generous timeout for every wait (a bug fails, never hangs).
#![allow(dead_code)]

use std::time::Duration;

use multiproc::Process;

/// The bound of every wait in the tests.
pub const T: Option<Duration> = Some(Duration::from_secs(20));

/// Starts a child process running `f`.
pub fn spawn(f: impl FnOnce() + Send + 'static) -> Process {
    let mut p = Process::new(f);
    p.start().expect("fork");
    p
}

/// Joins `p` (at most 30 s) and asserts that it exited with code 0.
pub fn join_ok(mut p: Process) {
    assert_eq!(
        p.join(Some(Duration::from_secs(30))).expect("join"),
        Some(0),
        "child {} failed",
        p.name()
    );
}

/// Kills `p` with SIGKILL and reaps it.
pub fn kill(mut p: Process) {
    p.kill().expect("kill");
    assert_eq!(
        p.join(Some(Duration::from_secs(30))).expect("join"),
        Some(-9)
    );
}

/// Polls `cond` (yielding the CPU, no sleep) until it holds; panics after 20 s.
pub fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}
