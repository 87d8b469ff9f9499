//! Twin of the tutorial's `01_value_counter.py`: four processes each add 1 to a
//! shared `Value` 100,000 times under its lock. The answer must be 400000.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 01_value_counter`

use multiproc::{Process, Value};

/// A child: Python's `increment(counter)`.
fn increment(c: Value<i32>) {
    for _ in 0..100_000 {
        // Python: `with counter.get_lock(): counter.value += 1`
        *c.lock().expect("no process dies here") += 1;
    }
}

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let counter = Value::<i32>::new(0)?;
    let mut processes = Vec::new();
    for _ in 0..4 {
        let mut p = Process::entry(increment, counter.clone());
        p.start()?;
        processes.push(p);
    }
    for mut p in processes {
        p.join(None)?;
    }
    let value = counter.get()?;
    println!("final counter value: {value} (expected 400000)");
    Ok(value == 400_000)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
