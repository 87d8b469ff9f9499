//! Twin of the tutorial's `08_barrier_workers.py`: three worker processes meet at a
//! `Barrier(3)`; none passes before all have arrived.
//!
//! Checked, not just printed: each worker counts its arrival in shared memory and,
//! once past the barrier, records how many had arrived: all three, every time.
//! The arrival times are staggered by a short sleep (the original's random sleep,
//! at most 30 ms here); correctness never depends on it.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 08_barrier_workers`

use std::time::Duration;

use multiproc::{Barrier, Process, RawArray, RawValue};

const WORKERS: usize = 3;

/// A worker: arrives (staggered), waits at the barrier, records what it saw.
fn worker(
    (worker_id, b, arrived, seen, idx): (
        usize,
        Barrier,
        RawValue<u32>,
        RawArray<u32>,
        RawArray<u32>,
    ),
) {
    println!("Worker {worker_id}: Arrived at barrier");
    std::thread::sleep(Duration::from_millis(10 * worker_id as u64)); // staggered
    arrived.fetch_add(1);
    // Python: `barrier.wait()`; bounded so that a bug fails instead of hangs.
    let index = b
        .wait(Some(Duration::from_secs(30)))
        .expect("barrier broken");
    seen.set(worker_id, arrived.load()).expect("in bounds");
    idx.set(worker_id, index as u32).expect("in bounds");
    println!("Worker {worker_id}: Passed the barrier (arrival index {index})");
}

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let barrier = Barrier::new(WORKERS)?; // 3 processes must arrive
    let arrived = RawValue::new(0u32)?;
    let seen_when_passing = RawArray::<u32>::new(WORKERS)?;
    let indices = RawArray::<u32>::new(WORKERS)?;
    let mut processes = Vec::new();
    for worker_id in 0..WORKERS {
        let mut p = Process::entry(
            worker,
            (
                worker_id,
                barrier.clone(),
                arrived.clone(),
                seen_when_passing.clone(),
                indices.clone(),
            ),
        );
        p.start()?;
        processes.push(p);
    }
    let mut all_ok = true;
    for mut p in processes {
        all_ok &= p.join(Some(Duration::from_secs(60)))? == Some(0);
    }
    let seen = seen_when_passing.to_vec()?;
    let mut idx = indices.to_vec()?;
    idx.sort_unstable();
    println!("arrivals seen by each worker when it passed: {seen:?} (expected all 3)");
    Ok(all_ok && seen.iter().all(|&n| n == WORKERS as u32) && idx == [0, 1, 2])
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
