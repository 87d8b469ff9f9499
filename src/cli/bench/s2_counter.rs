//! S2: the tutorial's counter (`01_value_counter.py`) exactly: 4 processes each add
//! 1 to a shared `Value` 100,000 times under its lock, timed from the first start
//! to the last join; against 4 threads on `std::sync::Mutex` and CPython (fork).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use multiproc::{Process, Value};

use super::{Ctx, Goal, Scenario, join_all, ns_since};

pub const SCENARIO: Scenario = Scenario {
    id: "S2",
    title: "the seed counter: 4 processes x 100,000 locked increments",
    steps: 2,
    run,
    python: python_script!("s2_counter.py"),
    goals: &[
        Goal {
            metric: METRIC,
            processes: 4,
            reference: "cpython",
            at_least: 100.0,
            text: ">= 100x faster than CPython",
        },
        Goal {
            metric: METRIC,
            processes: 4,
            reference: "threads",
            at_least: 1.0,
            text: "no slower than 4 threads on std::sync::Mutex",
        },
    ],
};

const METRIC: &str = "4 x 100k locked increments";
/// The same with no increments: the cost of starting and joining the workers.
const START_ONLY: &str = "4 x start+join, no work";
const WORKERS: usize = 4;
const INCREMENTS: i32 = 100_000;

/// The tutorial's program, timed from the first start to the last join (ms);
/// `increments` = 0 times starting and joining the processes alone.
fn tutorial(increments: i32) -> multiproc::Result<f64> {
    let counter = Value::<i32>::new(0)?;
    let t = Instant::now();
    let mut processes = Vec::new();
    for _ in 0..WORKERS {
        let c = counter.clone();
        let mut p = Process::new(move || {
            for _ in 0..increments {
                *c.lock().expect("no process dies here") += 1;
            }
        });
        p.start()?;
        processes.push(p);
    }
    join_all(processes)?;
    let ms = ns_since(t) as f64 / 1e6;
    let value = counter.get()?;
    if value != WORKERS as i32 * increments {
        return Err(multiproc::Error::InvalidArgument(format!(
            "counter ended at {value}, not {}",
            WORKERS as i32 * increments
        )));
    }
    Ok(ms)
}

fn threads(increments: i32) -> f64 {
    let counter = Arc::new(Mutex::new(0i32));
    let t = Instant::now();
    let handles: Vec<_> = (0..WORKERS)
        .map(|_| {
            let c = Arc::clone(&counter);
            std::thread::spawn(move || {
                for _ in 0..increments {
                    *c.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a counting thread panicked");
    }
    let ms = ns_since(t) as f64 / 1e6;
    assert_eq!(*counter.lock().unwrap(), WORKERS as i32 * increments);
    ms
}

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let reps = ctx.pick(7, 21);
    ctx.step("multiproc: 4 processes x 100k under Value's lock");
    let ms = (0..reps)
        .map(|_| tutorial(INCREMENTS))
        .collect::<multiproc::Result<Vec<f64>>>()?;
    ctx.record("multiproc", METRIC, WORKERS as u32, "ms", &ms);
    // What the start and join of the 4 workers alone cost, for the analysis.
    let ms = (0..reps)
        .map(|_| tutorial(0))
        .collect::<multiproc::Result<Vec<f64>>>()?;
    ctx.record("multiproc", START_ONLY, WORKERS as u32, "ms", &ms);

    ctx.step("threads: 4 x 100k on std::sync::Mutex");
    // Threads are started only after every fork of this scenario, and joined.
    let ms: Vec<f64> = (0..reps).map(|_| threads(INCREMENTS)).collect();
    ctx.record("threads", METRIC, WORKERS as u32, "ms", &ms);
    let ms: Vec<f64> = (0..reps).map(|_| threads(0)).collect();
    ctx.record("threads", START_ONLY, WORKERS as u32, "ms", &ms);
    Ok(())
}
