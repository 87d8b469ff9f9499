//! S4: one Barrier round (every party calls `wait`) with 2 and 4 processes, against
//! `std::sync::Barrier` with threads and CPython's `multiprocessing.Barrier`.

use std::sync::{Arc, Barrier as StdBarrier};
use std::time::{Duration, Instant};

use multiproc::Barrier;

use super::{Ctx, Goal, Scenario, ns_since, samples_from_children};

pub const SCENARIO: Scenario = Scenario {
    id: "S4",
    title: "Barrier round with 2 and 4 processes",
    steps: 4,
    run,
    python: python_script!("s4_barrier.py"),
    goals: &[
        Goal {
            metric: METRIC,
            processes: 2,
            reference: "threads",
            at_least: 2.0,
            text: ">= 2x faster than std::sync::Barrier",
        },
        Goal {
            metric: METRIC,
            processes: 4,
            reference: "threads",
            at_least: 1.0,
            text: "no slower than std::sync::Barrier",
        },
        Goal {
            metric: METRIC,
            processes: 2,
            reference: "cpython",
            at_least: 100.0,
            text: ">= 100x faster than CPython",
        },
        Goal {
            metric: METRIC,
            processes: 4,
            reference: "cpython",
            at_least: 100.0,
            text: ">= 100x faster than CPython",
        },
    ],
};

const METRIC: &str = "barrier round";

/// Round times (us) of `reps` batches of `rounds`, `n` threads on std's Barrier,
/// timed by thread 0.
fn threads(n: usize, reps: usize, rounds: u64) -> Vec<f64> {
    let barrier = Arc::new(StdBarrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let b = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for _ in 0..reps {
                    b.wait();
                    let t = Instant::now();
                    for _ in 0..rounds {
                        b.wait();
                    }
                    if i == 0 {
                        out.push(ns_since(t) as f64 / rounds as f64 / 1e3);
                    }
                }
                out
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.append(&mut h.join().expect("a barrier thread panicked"));
    }
    out
}

/// Round times (us) of `reps` batches of `rounds`, `n` processes on one
/// multiproc Barrier, timed by process 0.
fn processes(n: usize, reps: usize, rounds: u64) -> multiproc::Result<Vec<f64>> {
    let barrier = Barrier::new(n)?;
    let patience = Some(Duration::from_secs(20));
    let ns = samples_from_children(n, reps, move |i, out| {
        for r in 0..reps {
            barrier.wait(patience).expect("barrier round");
            let t = Instant::now();
            for _ in 0..rounds {
                barrier.wait(patience).expect("barrier round");
            }
            if i == 0 {
                out.set(r, ns_since(t)).unwrap();
            }
        }
    })?;
    Ok(ns
        .into_iter()
        .map(|ns| ns as f64 / rounds as f64 / 1e3)
        .collect())
}

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let reps = ctx.pick(5, 15);
    let rounds = ctx.pick(1_000, 5_000);
    for n in [2usize, 4] {
        ctx.step(&format!("multiproc Barrier x {n} processes"));
        let v = processes(n, reps, rounds)?;
        ctx.record("multiproc", METRIC, n as u32, "us", &v);
    }
    // Threads only after every fork of this scenario.
    for n in [2usize, 4] {
        ctx.step(&format!("threads: std::sync::Barrier x {n}"));
        let v = threads(n, reps, rounds);
        ctx.record("threads", METRIC, n as u32, "us", &v);
    }
    Ok(())
}
