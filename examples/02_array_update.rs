//! Twin of the tutorial's `02_array_update.py`: three processes each add 1 to every
//! element of a shared `Array` of five zeros, under its lock. The answer must be
//! `[3, 3, 3, 3, 3]`.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 02_array_update`

use multiproc::{Array, Process};

/// A child: adds 1 to each element.
fn update(arr: Array<i32>) {
    for i in 0..arr.len() {
        // Python: `with arr.get_lock(): arr[i] += 1`
        arr.lock().expect("no process dies here")[i] += 1;
    }
}

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let shared = Array::from_slice(&[0i32, 0, 0, 0, 0])?;
    let mut processes = Vec::new();
    for _ in 0..3 {
        let mut p = Process::entry(update, shared.clone());
        p.start()?;
        processes.push(p);
    }
    for mut p in processes {
        p.join(None)?;
    }
    let values = shared.to_vec()?;
    println!("final array: {values:?} (expected [3, 3, 3, 3, 3])");
    Ok(values == [3; 5])
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
