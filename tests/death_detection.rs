//! Death detection fails safe: only "no such process" (or a finished process) is
//! death; an owner whose state cannot be read is alive.

mod common;

use std::time::{Duration, Instant};

use common::{BOUND, T, join_ok, kill, spawn};
use multiproc::{Event, Lock, TryLockError};

/// The state letter of `/proc/<pid>/stat` (field 3, after the last `)`).
fn proc_state(pid: u32) -> Option<u8> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = text.iter().rposition(|&b| b == b')')?;
    text.get(close + 2).copied()
}

/// Regression: at the fd limit `/proc/<pid>/stat` cannot be opened (EMFILE), and
/// that failure counted as "no such process": the waiter took a live owner's lock
/// with OwnerDied.
#[test]
fn at_the_fd_limit_a_live_owner_is_waited_for() {
    // This process has seen an owner die, so it knows (and its children inherit)
    // that /proc answers: an absent owner is then gone.
    let dead = Lock::new().unwrap();
    let d = dead.clone();
    join_ok(spawn(move || std::mem::forget(d.lock().unwrap())));
    assert!(matches!(
        dead.try_lock_for(BOUND),
        Err(TryLockError::OwnerDied(_))
    ));

    let lock = Lock::new().unwrap();
    let _held = lock.lock().unwrap(); // the live owner: this process
    let l = lock.clone();
    let child = spawn(move || {
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(64),
                maximum: hard,
            },
        )
        .unwrap();
        let mut files = Vec::new();
        let full = loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => files.push(f),
                Err(e) => break e.raw_os_error(),
            }
            assert!(files.len() < 64, "the fd limit did not apply");
        };
        let got = l.try_lock_for(Duration::from_millis(100));
        let verdict = match got {
            Err(TryLockError::WouldBlock) => 0,
            Err(TryLockError::OwnerDied(_)) => 1,
            _ => 2,
        };
        drop(files);
        assert_eq!(full, Some(libc::EMFILE));
        assert_eq!(verdict, 0, "a live owner's lock was taken (1: OwnerDied)");
    });
    join_ok(child);
}

/// Regression: the `try_lock` owner check was rate-limited per thread, so a loop
/// polling a live owner's lock and a dead owner's lock in turn spent every check
/// on the live one and never took the dead one's.
#[test]
fn polling_two_locks_takes_the_dead_owner_s() {
    let (a, b) = (Lock::new().unwrap(), Lock::new().unwrap());
    let (a_held, b_held, release) = (
        Event::new().unwrap(),
        Event::new().unwrap(),
        Event::new().unwrap(),
    );
    let (a2, held, rel) = (a.clone(), a_held.clone(), release.clone());
    let alive = spawn(move || {
        let _g = a2.lock().unwrap();
        held.set();
        assert!(rel.wait(T).unwrap());
    });
    let (b2, held) = (b.clone(), b_held.clone());
    let doomed = spawn(move || {
        let _g = b2.lock().unwrap();
        held.set();
        let never = Event::new().unwrap();
        let _ = never.wait(T); // until SIGKILLed
    });
    assert!(a_held.wait(T).unwrap());
    assert!(b_held.wait(T).unwrap());
    kill(doomed);
    // Many polls of A per poll of B: with one check per thread per interval, A's
    // polls take nearly every check.
    let end = Instant::now() + Duration::from_secs(5);
    let outcome = 'poll: loop {
        for _ in 0..10_000 {
            if !matches!(a.try_lock(), Err(TryLockError::WouldBlock)) {
                break 'poll "A taken from its live owner";
            }
        }
        match b.try_lock() {
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::OwnerDied(_)) => break 'poll "B OwnerDied",
            _ => break 'poll "B taken without OwnerDied",
        }
        if Instant::now() >= end {
            break 'poll "B never taken";
        }
    };
    release.set();
    join_ok(alive);
    assert_eq!(outcome, "B OwnerDied");
}

/// Regression: a process whose main thread called `pthread_exit` shows as a zombie
/// while its other threads run, and its Lock was taken over as a dead owner's.
#[test]
fn a_process_whose_main_thread_exited_still_owns_its_lock() {
    let lock = Lock::new().unwrap();
    let (go, ready) = (Event::new().unwrap(), Event::new().unwrap());
    let (l, g, r) = (lock.clone(), go.clone(), ready.clone());
    let child = spawn(move || {
        std::mem::forget(l.lock().unwrap());
        std::thread::spawn(move || {
            let _ = g.wait(T);
        });
        r.set();
        // What `pthread_exit` leaves in the kernel, without its forced unwind
        // (which would abort when it reaches Rust frames): the raw `exit` system
        // call ends the calling (main) thread only. SAFETY: the spawned thread
        // owns everything it uses (nothing on this stack), and when it returns
        // glibc, which still counts this thread, ends it with `exit` too: the
        // last thread's exit ends the process with status 0.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
        unreachable!("the exit system call returned");
    });
    assert!(ready.wait(T).unwrap());
    let pid = child.pid().unwrap();
    common::poll_until("the leader a zombie", || proc_state(pid) == Some(b'Z'));
    let got = lock.try_lock_for(Duration::from_millis(200));
    let what = match &got {
        Err(TryLockError::WouldBlock) => "WouldBlock",
        Err(TryLockError::OwnerDied(_)) => "OwnerDied",
        Ok(_) => "Ok",
        Err(_) => "another error",
    };
    drop(got);
    go.set();
    assert_eq!(what, "WouldBlock", "a running process's lock was taken");
    join_ok(child);
    match lock.try_lock_for(BOUND) {
        Err(TryLockError::OwnerDied(g)) => drop(g),
        other => panic!(
            "expected OwnerDied once the process ended: {:?}",
            other.is_ok()
        ),
    }
}
