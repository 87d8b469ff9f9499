//! `_TestCondition` from CPython's `Lib/test/_test_multiprocessing.py`.
//!
//! As in CPython, the waiters are a mix of processes and threads of the test
//! process; `Semaphore`s count the sleeping and the woken. A Python `timeout=None`
//! on a wait that another party ends is [`T`] here, so a bug fails instead of
//! hanging. CPython's `time.sleep(DELTA)` before "no one has woken up" is a timed
//! `acquire` of `woken` that must time out (it fails if a wake comes within DELTA,
//! as the sleep-then-look does). `check_invariant` reads CPython's private
//! counters and has no equivalent (see README.md).

use std::time::{Duration, Instant};

use crate::common::{BOUND, T, join_ok, poll_until, spawn};
use multiproc::{Condition, Semaphore, Value};

const TIMEOUT1: Duration = Duration::from_millis(100);
const DELTA: Duration = Duration::from_millis(100);

/// CPython's `f`: take the lock, say "sleeping", wait, say "woken", release.
fn f(cond: &Condition, sleeping: &Semaphore, woken: &Semaphore, timeout: Option<Duration>) {
    assert!(cond.acquire(true, None).unwrap());
    sleeping.release().unwrap();
    cond.wait(timeout.or(T)).unwrap();
    woken.release().unwrap();
    cond.release().unwrap();
}

/// A worker running `f` in a new process or in a new thread of this one.
enum Worker {
    Process(multiproc::Process),
    Thread(std::thread::JoinHandle<()>),
}

impl Worker {
    fn start(
        process: bool,
        cond: &Condition,
        sleeping: &Semaphore,
        woken: &Semaphore,
        timeout: Option<Duration>,
    ) -> Worker {
        let (c, s, w) = (cond.clone(), sleeping.clone(), woken.clone());
        let run = move || f(&c, &s, &w, timeout);
        if process {
            Worker::Process(spawn(run))
        } else {
            Worker::Thread(std::thread::spawn(run))
        }
    }

    fn join(self) {
        match self {
            Worker::Process(p) => join_ok(p),
            Worker::Thread(t) => t.join().unwrap(),
        }
    }
}

/// `assertReachesEventually(lambda: get_value(woken), value)`.
fn reaches_eventually(woken: &Semaphore, value: u32) {
    poll_until("the woken count", || woken.get_value() == value);
    assert_eq!(woken.get_value(), value);
}

/// `time.sleep(DELTA)` then "nobody has woken": no permit comes within DELTA.
fn nobody_wakes_within_delta(woken: &Semaphore) {
    assert!(!woken.acquire(true, Some(DELTA)).unwrap(), "a waiter woke");
    assert_eq!(woken.get_value(), 0);
}

/// Three processes and three threads running `f` (process, thread, in turn).
fn start_six(
    cond: &Condition,
    sleeping: &Semaphore,
    woken: &Semaphore,
    timeout: Option<Duration>,
) -> Vec<Worker> {
    (0..3)
        .flat_map(|_| [true, false])
        .map(|process| Worker::start(process, cond, sleeping, woken, timeout))
        .collect()
}

fn acquire_n(sem: &Semaphore, n: usize) {
    for _ in 0..n {
        assert!(sem.acquire(true, T).unwrap());
    }
}

#[test]
fn test_notify() {
    let cond = Condition::new().unwrap();
    let sleeping = Semaphore::new(0).unwrap();
    let woken = Semaphore::new(0).unwrap();

    let p = Worker::start(true, &cond, &sleeping, &woken, None);
    let t = Worker::start(false, &cond, &sleeping, &woken, None);

    // wait for both children to start sleeping
    acquire_n(&sleeping, 2);

    // check no process/thread has woken up
    reaches_eventually(&woken, 0);

    // wake up one process/thread
    assert!(cond.acquire(true, None).unwrap());
    cond.notify(1).unwrap();
    cond.release().unwrap();

    // check one process/thread has woken up
    reaches_eventually(&woken, 1);

    // wake up another
    assert!(cond.acquire(true, None).unwrap());
    cond.notify(1).unwrap();
    cond.release().unwrap();

    // check other has woken up
    reaches_eventually(&woken, 2);

    t.join();
    p.join();
}

#[test]
fn test_notify_all() {
    let cond = Condition::new().unwrap();
    let sleeping = Semaphore::new(0).unwrap();
    let woken = Semaphore::new(0).unwrap();

    // start some threads/processes which will timeout
    let mut workers = start_six(&cond, &sleeping, &woken, Some(TIMEOUT1));

    // wait for them all to sleep
    acquire_n(&sleeping, 6);

    // check they have all timed out
    acquire_n(&woken, 6);
    assert_eq!(woken.get_value(), 0);

    // start some more threads/processes
    workers.extend(start_six(&cond, &sleeping, &woken, None));

    // wait for them to all sleep
    acquire_n(&sleeping, 6);

    // check no process/thread has woken up
    nobody_wakes_within_delta(&woken);

    // wake them all up
    assert!(cond.acquire(true, None).unwrap());
    cond.notify_all().unwrap();
    cond.release().unwrap();

    // check they have all woken
    acquire_n(&woken, 6);
    assert_eq!(woken.get_value(), 0);

    for w in workers {
        w.join();
    }
}

#[test]
fn test_notify_n() {
    let cond = Condition::new().unwrap();
    let sleeping = Semaphore::new(0).unwrap();
    let woken = Semaphore::new(0).unwrap();

    // start some threads/processes
    let workers = start_six(&cond, &sleeping, &woken, None);

    // wait for them to all sleep
    acquire_n(&sleeping, 6);

    // check no process/thread has woken up
    nobody_wakes_within_delta(&woken);

    // wake some of them up
    assert!(cond.acquire(true, None).unwrap());
    cond.notify(2).unwrap();
    cond.release().unwrap();

    // check 2 have woken
    reaches_eventually(&woken, 2);

    // wake the rest of them
    assert!(cond.acquire(true, None).unwrap());
    cond.notify(4).unwrap();
    cond.release().unwrap();

    reaches_eventually(&woken, 6);

    // doesn't do anything more
    assert!(cond.acquire(true, None).unwrap());
    cond.notify(3).unwrap();
    cond.release().unwrap();

    assert_eq!(woken.get_value(), 6);

    for w in workers {
        w.join();
    }
}

#[test]
fn test_timeout() {
    let cond = Condition::new().unwrap();
    assert!(cond.acquire(true, None).unwrap());
    let res = cond.wait(Some(TIMEOUT1)).unwrap();
    cond.release().unwrap();
    assert!(!res);
}

/// `_test_waitfor_f`: exits 1 unless `wait_for` saw the state reach 4.
#[test]
fn test_waitfor() {
    let cond = Condition::new().unwrap();
    let state = Value::new(-1i32).unwrap();

    let (c, s) = (cond.clone(), state.clone());
    let p = spawn(move || {
        let _with = c.lock().unwrap();
        s.set(0).unwrap();
        c.notify(1).unwrap();
        let result = c.wait_for(|| s.get().unwrap() == 4, T).unwrap();
        if !result || s.get().unwrap() != 4 {
            std::process::exit(1);
        }
    });

    {
        let _with = cond.lock().unwrap();
        let result = cond.wait_for(|| state.get().unwrap() == 0, T).unwrap();
        assert!(result);
        assert_eq!(state.get().unwrap(), 0);
    }

    // CPython sleeps 10 ms before each step, to pace it; the steps need no pause.
    for _ in 0..4 {
        let _with = cond.lock().unwrap();
        state.set(state.get().unwrap() + 1).unwrap();
        cond.notify(1).unwrap();
    }

    join_ok(p); // and exitcode 0
}

/// `_test_waitfor_timeout_f`: success if `wait_for` gave up (state never reaches 4)
/// and not before its timeout. A lower bound only: a loaded machine makes the
/// wait longer, never shorter, so it cannot fail from load.
#[test]
fn test_waitfor_timeout() {
    let cond = Condition::new().unwrap();
    let state = Value::new(0i32).unwrap();
    let success = Value::new(0i32).unwrap();
    let sem = Semaphore::new(0).unwrap();

    let (c, st, su, se) = (cond.clone(), state.clone(), success.clone(), sem.clone());
    let p = spawn(move || {
        se.release().unwrap();
        let _with = c.lock().unwrap();
        let expected = Duration::from_millis(100);
        let dt = Instant::now();
        let result = c
            .wait_for(|| st.get().unwrap() == 4, Some(expected))
            .unwrap();
        if !result && dt.elapsed() >= expected {
            su.set(1).unwrap();
        }
    });
    assert!(sem.acquire(true, Some(BOUND)).unwrap());

    // Only increment 3 times, so state == 4 is never reached.
    for _ in 0..3 {
        let _with = cond.lock().unwrap();
        state.set(state.get().unwrap() + 1).unwrap();
        cond.notify(1).unwrap();
    }

    join_ok(p);
    assert_eq!(success.get().unwrap(), 1);
}

/// The part without SIGINT (a Python `KeyboardInterrupt` out of `wait` has no Rust
/// equivalent: see README.md).
#[test]
fn test_wait_result() {
    let c = Condition::new().unwrap();
    let _with = c.lock().unwrap();
    assert!(!c.wait(Some(Duration::ZERO)).unwrap());
    assert!(!c.wait(Some(Duration::from_millis(100))).unwrap());

    let c2 = c.clone();
    let p = spawn(move || {
        let _with = c2.lock().unwrap();
        c2.notify(1).unwrap();
    });

    assert!(c.wait(Some(Duration::from_secs(60))).unwrap());
    join_ok(p);
}
