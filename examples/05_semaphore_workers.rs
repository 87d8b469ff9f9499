//! Twin of the tutorial's `05_semaphore_workers.py`: five worker processes share a
//! `Semaphore(2)`, so at most two are inside the critical section at once.
//!
//! Not just printed: every worker counts itself in and out of the section in shared
//! memory, and the highest count seen must be at most 2. The "work" inside is a short
//! sleep (20 ms instead of the original's 2 s); correctness never depends on it.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 05_semaphore_workers`

use std::time::Duration;

use multiproc::{Process, RawValue, Semaphore};

/// A worker: enters the critical section under the semaphore.
fn worker(
    (worker_id, sem, inside, max_inside, entered): (
        u32,
        Semaphore,
        RawValue<u32>,
        RawValue<u32>,
        RawValue<u32>,
    ),
) {
    // Python: `with semaphore:`
    let _permit = sem.lock().expect("a semaphore has no owner to die");
    let now = inside.fetch_add(1) + 1;
    let mut max = max_inside.load();
    while now > max {
        match max_inside.compare_exchange(max, now) {
            Ok(_) => break,
            Err(seen) => max = seen,
        }
    }
    entered.fetch_add(1);
    println!("Worker {worker_id} entering critical section ({now} inside)");
    std::thread::sleep(Duration::from_millis(20)); // simulated work
    println!("Worker {worker_id} leaving critical section");
    inside.fetch_add(u32::MAX); // -1, before the permit is given back
}

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let semaphore = Semaphore::new(2)?; // at most 2 processes inside at once
    let inside = RawValue::new(0u32)?;
    let max_inside = RawValue::new(0u32)?;
    let entered = RawValue::new(0u32)?;
    let mut processes = Vec::new();
    for worker_id in 0..5 {
        let mut p = Process::entry(
            worker,
            (
                worker_id,
                semaphore.clone(),
                inside.clone(),
                max_inside.clone(),
                entered.clone(),
            ),
        );
        p.start()?;
        processes.push(p);
    }
    let mut all_ok = true;
    for mut p in processes {
        all_ok &= p.join(Some(Duration::from_secs(60)))? == Some(0);
    }
    let (max, entered) = (max_inside.load(), entered.load());
    println!(
        "at most {max} workers were inside at once (limit 2); {entered} of 5 entered; permits left: {}",
        semaphore.get_value()
    );
    Ok(all_ok && max <= 2 && entered == 5 && semaphore.get_value() == 2)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
