//! S8: start and join one process that does nothing, under each start method
//! (fork, spawn, forkserver), against CPython's `Process(target=f).start();
//! join()` with the same start method.

use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod, get_context};

use super::{Ctx, Goal, Scenario, ns_since};

pub const SCENARIO: Scenario = Scenario {
    id: "S8",
    title: "start and join one process that does nothing (fork, spawn, forkserver)",
    steps: 3,
    run,
    python: python_script!("s8_start.py"),
    goals: &[
        Goal {
            metric: "start+join (fork)",
            processes: 1,
            reference: "cpython",
            at_least: 10.0,
            text: ">= 10x faster than CPython's fork start",
        },
        Goal {
            metric: "start+join (spawn)",
            processes: 1,
            reference: "cpython",
            at_least: 10.0,
            text: ">= 10x faster than CPython's spawn start",
        },
        Goal {
            metric: "start+join (forkserver)",
            processes: 1,
            reference: "cpython",
            at_least: 10.0,
            text: ">= 10x faster than CPython's forkserver start",
        },
    ],
};

fn nothing(_: ()) {}

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let (batch, reps) = (ctx.pick(20u32, 100), ctx.pick(3, 7));
    for method in StartMethod::ALL {
        ctx.step(&format!("multiproc: start(); join() ({method})"));
        // The forkserver starts on first use: start it before timing.
        if method == StartMethod::Forkserver {
            let mut p = get_context(method).process(nothing, ());
            p.start()?;
            p.join(Some(Duration::from_secs(60)))?;
        }
        let mut v = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            for _ in 0..batch {
                let mut p = match method {
                    StartMethod::Fork => Process::new(|| {}),
                    m => get_context(m).process(nothing, ()),
                };
                p.start()?;
                assert_eq!(p.join(Some(Duration::from_secs(60)))?, Some(0));
            }
            v.push(ns_since(t) as f64 / f64::from(batch) / 1e3);
        }
        ctx.record("multiproc", &format!("start+join ({method})"), 1, "us", &v);
    }
    Ok(())
}
