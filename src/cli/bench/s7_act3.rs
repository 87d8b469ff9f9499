//! S7: the tutorial's act 3 at full scale — CPU-bound work on many items, done
//! sequentially, by processes writing disjoint `Array` chunks with no lock, and by
//! `Pool::map` — with the code of `examples/12_pool_act3.rs`, against CPython doing
//! the same work the same three ways (`scripts/bench/s7_act3.py`, fewer items:
//! the rows are microseconds per item), plus the speedups over sequential.

use std::sync::Arc;
use std::time::Instant;

use multiproc::Pool;

use super::{Ctx, Goal, Scenario};

// The example's code, as the demo loads it (one module per file).
use crate::cli::demo::pool_act3 as act3;

pub const SCENARIO: Scenario = Scenario {
    id: "S7",
    title: "act 3 at full scale: CPU-bound items, Array chunks and Pool::map",
    steps: 3,
    run,
    python: python_script!("s7_act3.py"),
    goals: &[
        Goal {
            metric: CHUNKS,
            processes: 2,
            reference: "cpython",
            at_least: 50.0,
            text: ">= 50x faster than CPython",
        },
        Goal {
            metric: POOL,
            processes: 2,
            reference: "cpython",
            at_least: 50.0,
            text: ">= 50x faster than CPython",
        },
    ],
};

const SEQ: &str = "sequential, per item";
const CHUNKS: &str = "Array chunks, per item";
const POOL: &str = "Pool.map, per item";
const SPEEDUP_CHUNKS: &str = "Array chunks, speedup over sequential";
const SPEEDUP_POOL: &str = "Pool.map, speedup over sequential";

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    const PROCESSES: usize = 2;
    let n: i64 = ctx.pick(100_000, 1_000_000);
    let reps = ctx.pick(1, 3);
    let data = Arc::new((0..n).map(|x| x * 7 - 3).collect::<Vec<i64>>());
    let pool = Pool::new(PROCESSES)?;
    let per_item = |t: Instant| t.elapsed().as_secs_f64() / n as f64 * 1e6;
    let (mut seq, mut chunks, mut mapped) = (Vec::new(), Vec::new(), Vec::new());
    ctx.step("sequential, Array chunks and Pool::map");
    for _ in 0..reps {
        let t = Instant::now();
        let expected = act3::sequential(&data);
        seq.push(per_item(t));
        let t = Instant::now();
        let by_chunks = act3::with_array_chunks(&data, PROCESSES)?;
        chunks.push(per_item(t));
        let t = Instant::now();
        let by_pool = act3::with_pool(&pool, &data)?;
        mapped.push(per_item(t));
        assert!(
            by_chunks == expected && by_pool == expected,
            "act 3 results differ"
        );
    }
    ctx.record("multiproc", SEQ, 1, "us", &seq);
    ctx.record("multiproc", CHUNKS, PROCESSES as u32, "us", &chunks);
    ctx.record("multiproc", POOL, PROCESSES as u32, "us", &mapped);
    let speedup = |par: &[f64]| -> Vec<f64> { seq.iter().zip(par).map(|(s, p)| s / p).collect() };
    ctx.step("speedups");
    ctx.record(
        "multiproc",
        SPEEDUP_CHUNKS,
        PROCESSES as u32,
        "x",
        &speedup(&chunks),
    );
    ctx.record(
        "multiproc",
        SPEEDUP_POOL,
        PROCESSES as u32,
        "x",
        &speedup(&mapped),
    );
    ctx.step("done");
    Ok(())
}
