//! Twin of the tutorial's act 3, `09_parallel_processing.py`: square every item of
//! the data, first sequentially, then split across worker processes that write their
//! results into one shared array — and check that both agree.
//!
//! Done right, where the original is not:
//! - **No lock per write.** The original takes a Lock around every store into
//!   `shared_results`, although each process writes only its own slots. Here
//!   [`Array::chunks`](multiproc::Array::chunks) hands each worker a disjoint chunk that it
//!   writes without any lock.
//! - **Every item is processed.** The original computes `chunk_size = len // n` and
//!   slices from `range(0, len, chunk_size)`: for 1,000 items and 4 processes that
//!   happens to work, but for 999 items it makes 5 chunks of sizes 249, 249, 249, 249,
//!   3 and starts 5 processes, and for fewer items than processes `chunk_size` is 0 and
//!   `range` raises. Here the chunks differ in size by at most one and cover every
//!   item, for any length, including 0 and 1.
//! - **A real process target.** The original passes a nested function as the
//!   target, which only works with the `fork` start method; a Rust closure moved into
//!   [`Process::new`](multiproc::Process::new) is the fork equivalent, done safely.
//! - **CPU-bound work.** The original "works" by sleeping, which measures nothing but
//!   the sleep; here each item costs real computation, so the speedup is the cores'.
//!
//! Run: `cargo run --release --example 09_parallel_processing`

use std::hint::black_box;
use std::time::Instant;

use multiproc::{Array, Process};

/// Iterations of busy work per item.
pub const WORK: u32 = 100_000;

/// The per-item work: burns CPU, then returns `x * x` as the original does.
pub fn process_data(x: i64) -> i64 {
    let mut h = x as u64;
    for _ in 0..WORK {
        h = black_box(
            h.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    black_box(h);
    x * x
}

/// Sequential reference.
pub fn sequential(data: &[i64]) -> Vec<i64> {
    data.iter().map(|&x| process_data(x)).collect()
}

/// Splits `data` over `processes` worker processes; each writes its chunk of the
/// shared result array with no lock.
pub fn parallel(data: &[i64], processes: usize) -> multiproc::Result<Vec<i64>> {
    let results = Array::<i64>::new(data.len())?;
    let mut workers = Vec::new();
    for mut chunk in results.chunks(processes)? {
        if chunk.is_empty() {
            continue;
        }
        // The child gets a copy of the parent's memory, `data` included.
        let input = data[chunk.start()..chunk.start() + chunk.len()].to_vec();
        let mut p = Process::new(move || {
            for (slot, &x) in chunk.as_mut_slice().iter_mut().zip(&input) {
                *slot = process_data(x);
            }
        });
        p.start()?;
        workers.push(p);
    }
    for mut p in workers {
        let code = p.join(None)?;
        if code != Some(0) {
            return Err(multiproc::Error::InvalidArgument(format!(
                "worker {} exited with {code:?}",
                p.name()
            )));
        }
    }
    results.to_vec()
}

/// Runs the scenario on 1,000 items; returns whether parallel equals sequential.
pub fn run() -> multiproc::Result<bool> {
    let data: Vec<i64> = (0..1000).collect();
    let processes = std::thread::available_parallelism().map_or(2, |n| n.get());

    let start = Instant::now();
    let expected = sequential(&data);
    let t_seq = start.elapsed();
    println!(
        "Sequential processing time: {:.4} seconds",
        t_seq.as_secs_f64()
    );

    let start = Instant::now();
    let got = parallel(&data, processes)?;
    let t_par = start.elapsed();
    println!(
        "Parallel processing time (shared memory, {processes} processes): {:.4} seconds",
        t_par.as_secs_f64()
    );
    println!(
        "speedup: {:.2}x on {processes} cores",
        t_seq.as_secs_f64() / t_par.as_secs_f64()
    );
    let same = got == expected;
    println!("parallel result equals sequential: {same}");
    Ok(same)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
