//! S6: a 64 MiB `Array<f64>`: one process fills it (copies 64 MiB in), another sums
//! it, in GB/s; against the same copy (`memcpy`) and the same sum in one process on
//! private memory, and CPython (buffer-protocol copy and `sum`, no numpy).

use std::hint::black_box;
use std::time::Instant;

use multiproc::Array;

use super::{Ctx, Goal, Scenario, ns_since, samples_from_children};

pub const SCENARIO: Scenario = Scenario {
    id: "S6",
    title: "64 MiB Array of f64: one process fills, another sums",
    steps: 2,
    run,
    python: python_script!("s6_array.py"),
    goals: &[
        Goal {
            metric: FILL,
            processes: 1,
            reference: "memcpy",
            at_least: 0.9,
            text: ">= 0.9x of in-process memcpy",
        },
        Goal {
            metric: SUM,
            processes: 1,
            reference: "memcpy",
            at_least: 0.9,
            text: ">= 0.9x of the in-process sum",
        },
    ],
};

const FILL: &str = "fill 64 MiB";
const SUM: &str = "sum 64 MiB";
const LEN: usize = 8 << 20;
const BYTES: f64 = (LEN * 8) as f64;

/// The sum both sides use: eight independent accumulators, so that it runs at
/// memory speed rather than at the latency of one chain of additions.
#[inline(never)]
fn sum(x: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f64>() + rest
}

fn source() -> Vec<f64> {
    (0..LEN).map(|i| i as f64).collect()
}

const EXPECTED: f64 = (LEN as f64) * (LEN as f64 - 1.0) / 2.0;

fn gbps(ns: u64) -> f64 {
    BYTES / ns.max(1) as f64
}

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let reps = ctx.pick(5, 15);

    ctx.step("multiproc: a child fills the Array, another sums it");
    let arr = Array::<f64>::new(LEN)?;
    let a = arr.clone();
    // One untimed pass first in each child: it maps the pages into that process.
    let fill = samples_from_children(1, reps, move |_, out| {
        let src = source();
        for r in 0..=reps {
            let t = Instant::now();
            a.lock()
                .expect("no owner died")
                .copy_from_slice(black_box(&src));
            if r > 0 {
                out.set(r - 1, ns_since(t)).unwrap();
            }
        }
    })?;
    let a = arr.clone();
    let summed = samples_from_children(1, reps, move |_, out| {
        for r in 0..=reps {
            let t = Instant::now();
            let s = sum(black_box(&a.lock().expect("no owner died")));
            assert_eq!(s, EXPECTED, "the sum of what the other process wrote");
            if r > 0 {
                out.set(r - 1, ns_since(t)).unwrap();
            }
        }
    })?;
    drop(arr);
    ctx.record(
        "multiproc",
        FILL,
        1,
        "GB/s",
        &fill.into_iter().map(gbps).collect::<Vec<_>>(),
    );
    ctx.record(
        "multiproc",
        SUM,
        1,
        "GB/s",
        &summed.into_iter().map(gbps).collect::<Vec<_>>(),
    );

    ctx.step("in-process memcpy and sum on private memory");
    let src = source();
    let mut dst = vec![0.0f64; LEN];
    let mut copy = Vec::new();
    for r in 0..=reps {
        let t = Instant::now();
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
        if r > 0 {
            copy.push(gbps(ns_since(t)));
        }
    }
    let mut sums = Vec::new();
    for r in 0..=reps {
        let t = Instant::now();
        let s = sum(black_box(&dst));
        assert_eq!(s, EXPECTED);
        if r > 0 {
            sums.push(gbps(ns_since(t)));
        }
    }
    ctx.record("memcpy", FILL, 1, "GB/s", &copy);
    ctx.record("memcpy", SUM, 1, "GB/s", &sums);
    Ok(())
}
