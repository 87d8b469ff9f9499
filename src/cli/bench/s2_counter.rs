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
const WORKERS: usize = 4;
const INCREMENTS: i32 = 100_000;

/// The tutorial's program, timed from the first start to the last join (ms).
fn tutorial() -> multiproc::Result<f64> {
    let counter = Value::<i32>::new(0)?;
    let t = Instant::now();
    let mut processes = Vec::new();
    for _ in 0..WORKERS {
        let c = counter.clone();
        let mut p = Process::new(move || {
            for _ in 0..INCREMENTS {
                *c.lock().expect("no process dies here") += 1;
            }
        });
        p.start()?;
        processes.push(p);
    }
    join_all(processes)?;
    let ms = ns_since(t) as f64 / 1e6;
    let value = counter.get()?;
    if value != WORKERS as i32 * INCREMENTS {
        return Err(multiproc::Error::InvalidArgument(format!(
            "counter ended at {value}, not {}",
            WORKERS as i32 * INCREMENTS
        )));
    }
    Ok(ms)
}

fn threads() -> f64 {
    let counter = Arc::new(Mutex::new(0i32));
    let t = Instant::now();
    let handles: Vec<_> = (0..WORKERS)
        .map(|_| {
            let c = Arc::clone(&counter);
            std::thread::spawn(move || {
                for _ in 0..INCREMENTS {
                    *c.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a counting thread panicked");
    }
    let ms = ns_since(t) as f64 / 1e6;
    assert_eq!(*counter.lock().unwrap(), WORKERS as i32 * INCREMENTS);
    ms
}

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let reps = ctx.pick(7, 21);
    ctx.step("multiproc: 4 processes x 100k under Value's lock");
    let ms = (0..reps)
        .map(|_| tutorial())
        .collect::<multiproc::Result<Vec<f64>>>()?;
    ctx.record("multiproc", METRIC, WORKERS as u32, "ms", &ms);

    ctx.step("threads: 4 x 100k on std::sync::Mutex");
    // Threads are started only after every fork of this scenario, and joined.
    let ms: Vec<f64> = (0..reps).map(|_| threads()).collect();
    ctx.record("threads", METRIC, WORKERS as u32, "ms", &ms);
    Ok(())
}
