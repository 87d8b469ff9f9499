//! Forking from a multi-threaded parent: another thread of the parent allocates
//! arena objects and prints to stdout while children are started. A child must
//! never hang on a process-local lock (the arena's, stdout's) that the other thread
//! held at the instant of the fork.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use multiproc::{Lock, Process, Value};

/// The bound on joining all children: a hung child fails the test instead of
/// hanging it.
const JOIN: Duration = Duration::from_secs(20);

#[test]
fn children_forked_while_another_thread_allocates_and_prints_finish() {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let busy = {
        let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let locks: Vec<Lock> = (0..64).map(|_| Lock::new().unwrap()).collect();
                let values: Vec<Value<u64>> = (0..64).map(|i| Value::new(i).unwrap()).collect();
                println!(
                    "busy thread: round {n}, {} objects",
                    locks.len() + values.len()
                );
                eprintln!("busy thread: round {n}");
                drop((locks, values));
                n += 1;
                rounds.store(n, Ordering::Relaxed);
            }
        })
    };
    // A second thread prints, holding stdout's and stderr's locks a while each
    // time (formatting a long line), as a logging thread does.
    let printer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let long: String = (0..200)
                    .map(|i| char::from(b'a' + (i % 26) as u8))
                    .collect();
                if n % 64 == 0 {
                    writeln!(std::io::stdout().lock(), "printer: {n} {}", long.len()).unwrap();
                } else {
                    let out = std::io::stdout().lock();
                    let err = std::io::stderr().lock();
                    std::hint::black_box(format!("{long}{n}"));
                    drop((err, out));
                }
                n += 1;
            }
        })
    };
    // Fork only once the other thread is busy (a bounded poll, no sleep).
    let started = std::time::Instant::now();
    while rounds.load(Ordering::Relaxed) == 0 {
        assert!(started.elapsed() < JOIN, "the busy thread never ran");
        std::thread::yield_now();
    }
    let kids: Vec<Process> = (0..40)
        .map(|i| {
            let mut p = Process::new(move || {
                let lock = Lock::new().unwrap();
                drop(lock.lock().unwrap());
                println!("child {i}: allocated a Lock");
            });
            p.start().unwrap();
            p
        })
        .collect();
    // One shared bound for all joins: a hung child fails the test within JOIN.
    let end = std::time::Instant::now() + JOIN;
    let mut failures = Vec::new();
    for (i, mut p) in kids.into_iter().enumerate() {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let code = p.join(Some(left)).unwrap();
        if code.is_none() {
            // Hung: kill it so that it does not outlive the test.
            let _ = p.kill();
            let _ = p.join(Some(JOIN));
        }
        if code != Some(0) {
            failures.push((i, code));
        }
    }
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    printer.join().unwrap();
    assert!(
        failures.is_empty(),
        "children that hung (None) or failed: {failures:?}"
    );
}
