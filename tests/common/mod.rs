//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use multiproc::Process;

/// The bound on every wait in the tests: long enough for a loaded CI machine, short
/// enough that a bug fails the test instead of hanging it.
pub const BOUND: Duration = Duration::from_secs(30);

/// Starts a child running `f`.
pub fn spawn(f: impl FnOnce() + Send + 'static) -> Process {
    let mut p = Process::new(f);
    p.start().expect("fork");
    p
}

/// Joins `p` within [`BOUND`] and asserts it exited with code 0.
pub fn join_ok(mut p: Process) {
    let code = p.join(Some(BOUND)).expect("join");
    if code.is_none() {
        let _ = p.kill();
        let _ = p.join(Some(BOUND));
    }
    assert_eq!(code, Some(0), "child {} did not exit cleanly", p.name());
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
