//! Twin of the tutorial's `03_lock_counter.py`: two processes each add 1 to a shared
//! counter 100,000 times, excluded by a separate `Lock`. The answer must be 200000.
//!
//! The counter is a `RawValue` (no lock of its own): the one `Lock` is what makes the
//! read-modify-write safe, as in the original.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 03_lock_counter`

use multiproc::{Lock, Process, RawValue};

/// A child: 100,000 increments, each under the lock.
fn increment((lock, counter): (Lock, RawValue<i32>)) {
    for _ in 0..100_000 {
        // Python: `with lock: counter.value += 1`
        let _guard = lock.lock().expect("no process dies here");
        counter.set(counter.get() + 1);
    }
}

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let lock = Lock::new()?;
    let counter = RawValue::new(0i32)?;
    let mut processes = Vec::new();
    for _ in 0..2 {
        let mut p = Process::entry(increment, (lock.clone(), counter.clone()));
        p.start()?;
        processes.push(p);
    }
    for mut p in processes {
        p.join(None)?;
    }
    let value = counter.get();
    println!("final counter value: {value} (expected 200000)");
    Ok(value == 200_000)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
