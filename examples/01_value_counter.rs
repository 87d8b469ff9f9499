//! Twin of the tutorial's `01_value_counter.py`: four processes each add 1 to a
//! shared `Value` 100,000 times under its lock. The answer must be 400000.
//!
//! Run: `cargo run --release --example 01_value_counter`

use multiproc::{Process, Value};

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let counter = Value::<i32>::new(0)?;
    let mut processes = Vec::new();
    for _ in 0..4 {
        let c = counter.clone();
        let mut p = Process::new(move || {
            for _ in 0..100_000 {
                // Python: `with counter.get_lock(): counter.value += 1`
                *c.lock().expect("no process dies here") += 1;
            }
        });
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
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
