//! POOL: tasks per second for trivial tasks through a `Pool` of 2 workers — `map`
//! with chunksize 1 and the default, `apply_async` — against CPython's
//! `multiprocessing.Pool` and `ProcessPoolExecutor` on the same tasks.

use std::time::Instant;

use multiproc::Pool;

use super::{Ctx, Goal, Scenario, ns_since};

pub const SCENARIO: Scenario = Scenario {
    id: "POOL",
    title: "Pool overhead: trivial tasks through 2 workers",
    steps: 3,
    run,
    python: python_script!("pool.py"),
    goals: &[
        Goal {
            metric: MAP_1,
            processes: 2,
            reference: "cpython",
            at_least: 1.0,
            text: "faster than CPython's Pool",
        },
        Goal {
            metric: APPLY,
            processes: 2,
            reference: "cpython",
            at_least: 1.0,
            text: "faster than CPython's Pool",
        },
    ],
};

const MAP_1: &str = "map, chunksize 1";
const MAP_AUTO: &str = "map, default chunksize";
const APPLY: &str = "apply_async";

fn double(x: u64) -> u64 {
    2 * x
}

/// Tasks per second of `reps` runs of `f(n)`.
fn rate(
    n: u64,
    reps: usize,
    mut f: impl FnMut(u64) -> multiproc::Result<()>,
) -> multiproc::Result<Vec<f64>> {
    let mut v = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        f(n)?;
        v.push(n as f64 / (ns_since(t) as f64 / 1e9));
    }
    Ok(v)
}

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let (n, reps) = (ctx.pick(2_000u64, 20_000), ctx.pick(3, 5));
    let pool = Pool::new(2)?;
    ctx.step("multiproc Pool::map_chunked(.., 1)");
    let v = rate(n, reps, |k| {
        let out = pool.map_chunked(double, 0..k, 1)?;
        assert_eq!(out.len() as u64, k);
        Ok(())
    })?;
    ctx.record("multiproc", MAP_1, 2, "tasks/s", &v);
    ctx.step("multiproc Pool::map");
    let v = rate(n, reps, |k| {
        let out = pool.map(double, 0..k)?;
        assert_eq!(out.len() as u64, k);
        Ok(())
    })?;
    ctx.record("multiproc", MAP_AUTO, 2, "tasks/s", &v);
    ctx.step("multiproc Pool::apply_async");
    let v = rate(n, reps, |k| {
        let pending = (0..k)
            .map(|i| pool.apply_async(double, i))
            .collect::<multiproc::Result<Vec<_>>>()?;
        for (i, r) in pending.into_iter().enumerate() {
            assert_eq!(r.get(None)?, 2 * i as u64);
        }
        Ok(())
    })?;
    ctx.record("multiproc", APPLY, 2, "tasks/s", &v);
    Ok(())
}
