//! `_TestBarrier` from CPython's `Lib/test/_test_multiprocessing.py` (adapted there
//! from `test/lock_tests.py`).
//!
//! As in CPython's process flavour, `run_threads` runs the test function in N - 1
//! child processes (CPython's `Bunch`) and in the test process. CPython's
//! `DummyList` (a counter in shared memory, used as "append" / `len`) is a
//! [`Counter`]. The barrier of `setUp` has CPython's default timeout of 30 s, so a
//! bug fails instead of hanging; `tearDown`'s `abort()` is [`Fixture`]'s drop.

use std::time::Duration;

use crate::common::{BOUND, join_all_ok, poll_until, spawn};
use multiproc::{Array, Barrier, Error, Lock, RawValue};

const N: usize = 5;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// CPython's `_DummyList`: `append` adds one, `len` reads the count.
#[derive(Clone)]
struct Counter(RawValue<u32>);

impl Counter {
    fn new() -> Counter {
        Counter(RawValue::new(0).unwrap())
    }
    fn append(&self) {
        self.0.fetch_add(1);
    }
    fn len(&self) -> usize {
        self.0.load() as usize
    }
}

/// `setUp` / `tearDown`: the barrier of N parties with the default timeout,
/// aborted at the end.
struct Fixture {
    barrier: Barrier,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            barrier: Barrier::new(N).unwrap().with_timeout(DEFAULT_TIMEOUT),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.barrier.abort();
    }
}

/// `run_threads(f, args)`: `f` in N - 1 child processes and in this one; returns
/// once all have finished (each child must exit 0: a failed assertion in `f`
/// fails the test).
fn run_threads(f: impl Fn() + Clone + Send + 'static) {
    let kids: Vec<_> = (0..N - 1)
        .map(|_| {
            let f = f.clone();
            spawn(f)
        })
        .collect();
    f();
    join_all_ok(kids);
}

/// Whether `r` is Python's `BrokenBarrierError`.
fn is_broken(r: &multiproc::Result<usize>) -> bool {
    matches!(r, Err(Error::BrokenBarrier(_)))
}

/// `multipass`: the parties pass the barrier in lockstep, `n` times.
fn multipass(barrier: &Barrier, results: &[Counter; 2], n: usize) {
    let m = barrier.parties();
    assert_eq!(m, N);
    for i in 0..n {
        results[0].append();
        assert_eq!(results[1].len(), i * m);
        barrier.wait(None).unwrap();
        results[1].append();
        assert_eq!(results[0].len(), (i + 1) * m);
        barrier.wait(None).unwrap();
    }
    assert_eq!(barrier.n_waiting(), 0);
    assert!(!barrier.broken());
}

fn barrier_passes(passes: usize) {
    let fx = Fixture::new();
    let results = [Counter::new(), Counter::new()];
    let b = fx.barrier.clone();
    run_threads(move || multipass(&b, &results, passes));
}

/// Test that a barrier is passed in lockstep.
#[test]
fn test_barrier() {
    barrier_passes(1);
}

/// Test that a barrier works for 10 consecutive runs.
#[test]
fn test_barrier_10() {
    barrier_passes(10);
}

/// Test the return value from barrier.wait. CPython's Queue of the results is a
/// shared array counting how often each index came back.
#[test]
fn test_wait_return() {
    let fx = Fixture::new();
    let counts = Array::<u32>::new(N).unwrap();
    let (b, c) = (fx.barrier.clone(), counts.clone());
    run_threads(move || {
        let res = b.wait(None).unwrap();
        c.lock().unwrap()[res] += 1;
    });
    let results = counts.to_vec().unwrap();
    assert_eq!(results.iter().sum::<u32>() as usize, N);
    assert_eq!(results[0], 1); // results.count(0) == 1
}

/// Test the 'action' callback.
#[test]
fn test_action() {
    let results = Counter::new();
    let r = results.clone();
    let barrier = Barrier::new(N)
        .unwrap()
        .with_action(move || r.append())
        .with_timeout(DEFAULT_TIMEOUT);
    let (b, r) = (barrier.clone(), results.clone());
    run_threads(move || {
        b.wait(None).unwrap();
        assert_eq!(r.len(), 1, "RuntimeError");
    });
    assert_eq!(results.len(), 1);
}

/// What a party of `_test_abort_f` did: passed both waits, raised RuntimeError
/// (index N // 2 after the first wait), or got BrokenBarrierError.
enum Abort {
    Passed,
    Raised,
    Broken,
}

/// `_test_abort_f`'s `try` block.
fn abort_f(barrier: &Barrier) -> Abort {
    match barrier.wait(None) {
        Ok(i) if i == N / 2 => Abort::Raised,
        Ok(_) => match barrier.wait(None) {
            Ok(_) => Abort::Passed,
            Err(Error::BrokenBarrier(_)) => Abort::Broken,
            Err(e) => panic!("{e}"),
        },
        Err(Error::BrokenBarrier(_)) => Abort::Broken,
        Err(e) => panic!("{e}"),
    }
}

/// Test that an abort will put the barrier in a broken state.
#[test]
fn test_abort() {
    let fx = Fixture::new();
    let (results1, results2) = (Counter::new(), Counter::new());
    let (b, r1, r2) = (fx.barrier.clone(), results1.clone(), results2.clone());
    run_threads(move || match abort_f(&b) {
        Abort::Passed => r1.append(),
        Abort::Broken => r2.append(),
        Abort::Raised => b.abort(),
    });
    assert_eq!(results1.len(), 0);
    assert_eq!(results2.len(), N - 1);
    assert!(fx.barrier.broken());
}

/// Test that a 'reset' on a barrier frees the waiting threads.
#[test]
fn test_reset() {
    let fx = Fixture::new();
    let results = [Counter::new(), Counter::new(), Counter::new()];
    let (b, r) = (fx.barrier.clone(), results.clone());
    run_threads(move || {
        let i = b.wait(None).unwrap();
        if i == N / 2 {
            // Wait until the other threads are all in the barrier (CPython polls
            // with 1 ms sleeps; this polls yielding, bounded).
            poll_until("the others in the barrier", || b.n_waiting() >= N - 1);
            b.reset();
        } else {
            match b.wait(None) {
                Ok(_) => r[0].append(),
                Err(Error::BrokenBarrier(_)) => r[1].append(),
                Err(e) => panic!("{e}"),
            }
        }
        // Now, pass the barrier again
        b.wait(None).unwrap();
        r[2].append();
    });
    assert_eq!(results[0].len(), 0);
    assert_eq!(results[1].len(), N - 1);
    assert_eq!(results[2].len(), N);
}

/// Test that a barrier can be reset after being broken.
#[test]
fn test_abort_and_reset() {
    let fx = Fixture::new();
    let results = [Counter::new(), Counter::new(), Counter::new()];
    let barrier2 = Barrier::new(N).unwrap();
    let (b, b2, r) = (fx.barrier.clone(), barrier2.clone(), results.clone());
    run_threads(move || {
        match abort_f(&b) {
            Abort::Passed => r[0].append(),
            Abort::Broken => r[1].append(),
            Abort::Raised => b.abort(),
        }
        // Synchronize and reset the barrier.  Must synchronize first so that
        // everyone has left it when we reset, and after so that no one enters it
        // before the reset. (barrier2 has no timeout in CPython: BOUND here.)
        if b2.wait(Some(BOUND)).unwrap() == N / 2 {
            b.reset();
        }
        b2.wait(Some(BOUND)).unwrap();
        b.wait(None).unwrap();
        r[2].append();
    });
    assert_eq!(results[0].len(), 0);
    assert_eq!(results[1].len(), N - 1);
    assert_eq!(results[2].len(), N);
}

/// Test wait(timeout). CPython's late party sleeps 1 s so that the others' 0.5 s
/// waits time out first; here it arrives once the barrier is broken (a bounded
/// poll), the same order without a sleep.
#[test]
fn test_timeout() {
    let fx = Fixture::new();
    let results = Counter::new();
    let (b, r) = (fx.barrier.clone(), results.clone());
    run_threads(move || {
        let i = b.wait(None).unwrap();
        if i == N / 2 {
            // One thread is late!
            poll_until("the barrier broken by a timeout", || b.broken());
        }
        if is_broken(&b.wait(Some(Duration::from_millis(500)))) {
            r.append();
        }
    });
    assert_eq!(results.len(), fx.barrier.parties());
}

/// Test the barrier's default timeout (the late party: as in `test_timeout`).
#[test]
fn test_default_timeout() {
    let barrier = Barrier::new(N)
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let results = Counter::new();
    let (b, r) = (barrier.clone(), results.clone());
    run_threads(move || {
        let i = b.wait(Some(DEFAULT_TIMEOUT)).unwrap();
        if i == N / 2 {
            // One thread is later than the default timeout
            poll_until("the barrier broken by a timeout", || b.broken());
        }
        if is_broken(&b.wait(None)) {
            r.append();
        }
    });
    assert_eq!(results.len(), barrier.parties());
    barrier.abort();
}

#[test]
fn test_single_thread() {
    let b = Barrier::new(1).unwrap();
    b.wait(None).unwrap();
    b.wait(None).unwrap();
}

/// N processes pass the barrier 1000 times; after each pass each sends the pass
/// number under a lock. CPython's Pipe is a shared log here (multiproc has no Pipe
/// yet): entry k must be pass k / N, as the parent's `recv()`s check.
#[test]
fn test_thousand() {
    let fx = Fixture::new();
    let passes = 1000;
    let lock = Lock::new().unwrap();
    let log = Array::<u32>::new(passes * N).unwrap();
    let sent = RawValue::new(0usize).unwrap();
    let kids: Vec<_> = (0..N)
        .map(|_| {
            let (b, l, log, sent) = (fx.barrier.clone(), lock.clone(), log.clone(), sent.clone());
            spawn(move || {
                for i in 0..passes {
                    b.wait(None).unwrap();
                    let _with = l.lock().unwrap();
                    log.set(sent.load(), i as u32).unwrap();
                    sent.store(sent.load() + 1);
                }
            })
        })
        .collect();
    join_all_ok(kids);
    assert_eq!(sent.load(), passes * N);
    let log = log.to_vec().unwrap();
    for i in 0..passes {
        for j in 0..N {
            assert_eq!(log[i * N + j], i as u32);
        }
    }
}
