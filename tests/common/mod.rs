//! Helpers shared by the integration tests: start real processes, join with a
//! bounded wait, and a generous timeout for every wait (a bug fails, never hangs).
#![allow(dead_code)]

use std::time::Duration;

use multiproc::{Process, RawValue};

/// The bound on every wait in the tests: long enough for a loaded CI machine, short
/// enough that a bug fails the test instead of hanging it.
pub const BOUND: Duration = Duration::from_secs(30);

/// [`BOUND`] as the `Option` the timeout parameters take.
pub const T: Option<Duration> = Some(Duration::from_secs(20));

/// Starts a child process running `f`.
pub fn spawn(f: impl FnOnce() + Send + 'static) -> Process {
    let mut p = Process::new(f);
    p.start().expect("fork");
    p
}

/// Joins `p` within [`BOUND`] and asserts it exited with code 0 (a child still
/// running then is killed, so that it does not outlive the test).
pub fn join_ok(mut p: Process) {
    let code = p.join(Some(BOUND)).expect("join");
    if code.is_none() {
        let _ = p.kill();
        let _ = p.join(Some(BOUND));
    }
    assert_eq!(code, Some(0), "child {} did not exit cleanly", p.name());
}

/// Kills `p` with SIGKILL and reaps it.
pub fn kill(mut p: Process) {
    p.kill().expect("kill");
    assert_eq!(p.join(Some(BOUND)).expect("join"), Some(-9));
}

/// Polls `cond` (yielding the CPU, no sleep) until it holds; panics after [`BOUND`].
pub fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + BOUND;
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// multiproc's entries of /dev/shm (the `mp-` prefix of docs/LAYOUT.md), sorted: what a test checks
/// for leaks. Other programs' entries (CPython's `sem.mp-*` semaphores among them,
/// made by whatever else runs on the machine) come and go on their own.
pub fn multiproc_shm() -> Vec<String> {
    dev_shm()
        .into_iter()
        .filter(|n| n.starts_with("mp-"))
        .collect()
}

/// Entries of /dev/shm, sorted.
pub fn dev_shm() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Polls (yielding, no sleep) until the process `pid` is asleep (state `S` in
/// `/proc`); panics after [`BOUND`]. Call it once the process has said it is about
/// to block: then `S` means it sleeps in that blocking call (a futex), so what
/// follows tests the wake, not a second look before sleeping.
pub fn until_asleep(pid: u32) {
    poll_until("the process asleep", || {
        // The state is the first field after the command name's closing parenthesis.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('S'))
            })
            .unwrap_or(false)
    });
}

/// Joins all of `kids` within one shared [`BOUND`] and asserts each exited with
/// code 0; those still running then are killed first, so that none outlives the
/// test.
pub fn join_all_ok(kids: Vec<Process>) {
    let end = std::time::Instant::now() + BOUND;
    let codes: Vec<Option<i32>> = kids
        .into_iter()
        .map(|mut p| {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let code = p.join(Some(left)).expect("join");
            if code.is_none() {
                let _ = p.kill();
                let _ = p.join(Some(BOUND));
            }
            code
        })
        .collect();
    assert!(
        codes.iter().all(|&c| c == Some(0)),
        "children did not all exit cleanly in time: {codes:?}"
    );
}

/// Carries a segment name (at most 32 bytes) between processes in shared memory.
pub fn put_name(cell: &RawValue<[u8; 32]>, name: &str) {
    let mut b = [0u8; 32];
    b[..name.len()].copy_from_slice(name.as_bytes());
    cell.set(b);
}

/// The name [`put_name`] stored.
pub fn get_name(cell: &RawValue<[u8; 32]>) -> String {
    let b = cell.get();
    let end = b.iter().position(|&c| c == 0).unwrap_or(32);
    String::from_utf8(b[..end].to_vec()).unwrap()
}

/// Pins the calling thread to the first CPU it may run on, as the one-core rows
/// of `multiproc bench` do: processes that all call it share one CPU, where a
/// partner runs only when the others give the core up.
pub fn pin_to_one_cpu() {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    let allowed = sched_getaffinity(None).expect("reading the CPU affinity");
    let first = (0..CpuSet::MAX_CPU)
        .find(|&c| allowed.is_set(c))
        .expect("some CPU is allowed");
    let mut one = CpuSet::new();
    one.set(first);
    sched_setaffinity(None, &one).expect("pinning to one CPU");
}

/// The documented layout of a block in a token (`multiproc::token`'s format),
/// mirrored here to read and forge tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum BlockT {
    Arena {
        fd: u32,
        inode: u64,
        off: u32,
        generation: u32,
        class: u8,
    },
    Large {
        fd: u32,
        inode: u64,
        size: u64,
    },
}

/// A late move of a one-CPU ping-pong: every fifth move (`i % 5 == 0`) the mover
/// yields once first, so that the waiter's first hand-off finds nothing and its
/// wait goes on past it; and one move in 35 (`i % 35 == 7`) comes only after
/// 300 yields, more than a waiter's bounded yield phase lasts (at most 200 us,
/// and it ends sooner when yields come back at once), so that the waiter's
/// wait goes on to its futex sleep.
pub fn late_move(i: u32) {
    if i % 5 == 0 {
        std::thread::yield_now();
    }
    if i % 35 == 7 {
        for _ in 0..300 {
            std::thread::yield_now();
        }
    }
}
