//! S1: uncontended Lock acquire + release in one process, against `std::sync::Mutex`
//! and CPython's `multiprocessing.Lock`.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Instant;

use multiproc::Lock;

use super::{Ctx, Goal, Scenario, ns_since, samples_from_children};

pub const SCENARIO: Scenario = Scenario {
    id: "S1",
    title: "uncontended Lock acquire+release, one process",
    steps: 2,
    run,
    python: python_script!("s1_lock.py"),
    goals: &[
        Goal {
            metric: METRIC,
            processes: 1,
            reference: "threads",
            at_least: 1.0 / 1.5,
            text: "within 1.5x of std::sync::Mutex",
        },
        Goal {
            metric: METRIC,
            processes: 1,
            reference: "cpython",
            at_least: 1.0,
            text: "faster than CPython Lock",
        },
    ],
};

const METRIC: &str = "lock+unlock";

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let iters: u64 = ctx.pick(1_000_000, 5_000_000);
    let reps = ctx.pick(7, 21);

    ctx.step("multiproc Lock (in a child process)");
    let lock = Lock::new()?;
    let ns = samples_from_children(1, reps, move |_, out| {
        for r in 0..reps {
            let t = Instant::now();
            for _ in 0..iters {
                let g = black_box(&lock).lock();
                drop(black_box(g));
            }
            out.set(r, ns_since(t)).expect("slot in range");
        }
    })?;
    let per_op: Vec<f64> = ns.iter().map(|&n| n as f64 / iters as f64).collect();
    ctx.record("multiproc", METRIC, 1, "ns", &per_op);

    ctx.step("std::sync::Mutex");
    let mutex = Mutex::new(());
    let per_op: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                let g = black_box(&mutex).lock();
                drop(black_box(g));
            }
            ns_since(t) as f64 / iters as f64
        })
        .collect();
    ctx.record("threads", METRIC, 1, "ns", &per_op);
    Ok(())
}
