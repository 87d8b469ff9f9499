//! `process::ForeignFork`: a child forked by other means than `Process` (here
//! `libc::fork`, as Python's `os.fork` does for `multiprocessing`) is counted as a
//! holder of every shared object. Without that count, the parent dropping its
//! handle frees the block while the child still uses it, and the parent's next
//! allocation reuses it under the child's feet.

use multiproc::process::ForeignFork;
use multiproc::{Event, RawValue};
use std::time::{Duration, Instant};

const T: Option<Duration> = Some(Duration::from_secs(30));
const MINE: u64 = 0xA11C_E000_0000_0001;
const REUSED: u64 = 0xB0B0_B0B0_B0B0_B0B0;

/// Waits for `pid` with a deadline (kills it when the deadline passes): its exit
/// status, or `None` if it did not exit normally.
fn reap(pid: libc::pid_t) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut status = 0;
        // SAFETY: waitpid only writes the status integer we own.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        assert!(r == 0, "waitpid failed");
        if Instant::now() > deadline {
            // SAFETY: kill sends a signal to our own child; no memory involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child did not exit in 30 s");
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_foreign_forks_child_keeps_its_objects_after_the_parent_drops_them() {
    let value = RawValue::<u64>::new(MINE).unwrap();
    let go = Event::new().unwrap();
    let prep = ForeignFork::prepare().unwrap();
    // SAFETY: the test harness may run other threads; the child only touches
    // memory that it inherited (the two handles), waits on a futex and leaves with
    // `_exit`, without running destructors, locks or allocation-heavy code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        prep.child();
        let ok = matches!(go.wait(T), Ok(true)) && value.get() == MINE;
        // SAFETY: ends the child at once, as `multiprocessing` children do.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    prep.parent();
    drop(value);
    // If the child's hold were missing, the block is free now and these reuse it.
    let others: Vec<_> = (0..64)
        .map(|_| RawValue::<u64>::new(REUSED).unwrap())
        .collect();
    go.set();
    assert_eq!(
        reap(pid),
        Some(0),
        "the child saw its value change: its block was reused"
    );
    drop(others);
}
