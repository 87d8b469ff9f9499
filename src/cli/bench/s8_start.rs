//! S8: start and join one process that does nothing, under each start method
//! (fork, spawn, forkserver), against CPython's `Process(target=f).start();
//! join()` with the same start method; and, beside the fork start, the floor of
//! the same process in the same minutes: a bare `fork()`, `_exit(0)`,
//! `waitpid()` ([`multiproc::process::fork_floor`]).

use std::time::{Duration, Instant};

use multiproc::{Process, RawArray, StartMethod, get_context};

use super::{Ctx, Goal, Scenario, join_all, ns_since};

pub const SCENARIO: Scenario = Scenario {
    id: "S8",
    title: "start and join one process that does nothing (fork, spawn, forkserver)",
    steps: 1,
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

/// The measurement itself, run in a process started by spawn: a fresh image of
/// this program, as fresh as the interpreter CPython's script measures from. A
/// fork copies the page tables of the parent's private memory and the child's
/// exit frees them, so the cost grows with what the parent holds: the bench
/// process, after the scenarios before this one, keeps about 12 MB of freed heap
/// resident (the allocator's, not ours), which made its forks 730-870 us against
/// 260 us from a fresh process. Writes `reps` figures (us) per start method into
/// `out`, method by method, then the floor's (`fork_floor`: a bare fork, `_exit`
/// and `waitpid`, timed between the fork batches).
fn measure((batch, reps, out): (u32, u32, RawArray<f64>)) {
    let reps = reps as usize;
    for (m, method) in StartMethod::ALL.into_iter().enumerate() {
        // The forkserver starts on first use: start it before timing.
        if method == StartMethod::Forkserver {
            let mut p = get_context(method).process(nothing, ());
            p.start().expect("starting the forkserver");
            p.join(Some(Duration::from_secs(60))).expect("joining");
        }
        for r in 0..reps {
            let t = Instant::now();
            for _ in 0..batch {
                let mut p = match method {
                    StartMethod::Fork => Process::new(|| {}),
                    m => get_context(m).process(nothing, ()),
                };
                p.start().expect("start");
                assert_eq!(
                    p.join(Some(Duration::from_secs(60))).expect("join"),
                    Some(0)
                );
            }
            let us = ns_since(t) as f64 / f64::from(batch) / 1e3;
            out.set(m * reps + r, us).expect("in bounds");
            // The floor, batch by batch between the fork starts: the same
            // process, the same minutes.
            if method == StartMethod::Fork {
                let t = Instant::now();
                for _ in 0..batch {
                    multiproc::process::fork_floor().expect("fork floor");
                }
                let us = ns_since(t) as f64 / f64::from(batch) / 1e3;
                out.set(FLOOR * reps + r, us).expect("in bounds");
            }
        }
    }
}

/// Where `measure` writes the floor's figures: after the start methods'.
const FLOOR: usize = StartMethod::ALL.len();

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let (batch, reps) = (ctx.pick(20u32, 100), ctx.pick(3usize, 7));
    ctx.step("multiproc: start(); join() (fork, spawn, forkserver), from a fresh process");
    let out = RawArray::<f64>::new((FLOOR + 1) * reps)?;
    let mut p = get_context(StartMethod::Spawn)
        .process(measure, (batch, reps as u32, out.clone()))
        .with_name("bench-S8");
    p.start()?;
    join_all(vec![p])?;
    let all = out.to_vec()?;
    for (m, method) in StartMethod::ALL.into_iter().enumerate() {
        let v = &all[m * reps..(m + 1) * reps];
        ctx.record("multiproc", &format!("start+join ({method})"), 1, "us", v);
    }
    let floor = &all[FLOOR * reps..(FLOOR + 1) * reps];
    ctx.record("floor", "start+join (fork)", 1, "us", floor);
    Ok(())
}
