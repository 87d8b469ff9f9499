//! S8: start and join one process that does nothing (fork), against CPython's
//! `Process(target=f).start(); join()` with the same start method.

use std::time::{Duration, Instant};

use multiproc::Process;

use super::{Ctx, Goal, Scenario, ns_since};

pub const SCENARIO: Scenario = Scenario {
    id: "S8",
    title: "start and join one process that does nothing (fork)",
    steps: 1,
    run,
    python: python_script!("s8_start.py"),
    goals: &[Goal {
        metric: METRIC,
        processes: 1,
        reference: "cpython",
        at_least: 10.0,
        text: ">= 10x faster than CPython's fork start",
    }],
};

const METRIC: &str = "start+join (fork)";

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let (batch, reps) = (ctx.pick(20u32, 100), ctx.pick(3, 7));
    ctx.step("multiproc: Process::new(|| {}).start(); join()");
    let mut v = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..batch {
            let mut p = Process::new(|| {});
            p.start()?;
            assert_eq!(p.join(Some(Duration::from_secs(60)))?, Some(0));
        }
        v.push(ns_since(t) as f64 / f64::from(batch) / 1e3);
    }
    ctx.record("multiproc", METRIC, 1, "us", &v);
    Ok(())
}
