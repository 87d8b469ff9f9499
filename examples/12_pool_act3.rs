//! The tutorial's act 3 at full scale: 1,000,000 items of CPU-bound work, done
//! sequentially, then two ways over all cores — disjoint [`Array`] chunks written
//! with no lock, and [`Pool::map`] — each checked equal to the sequential result,
//! with the speedup printed, for a length that divides evenly among the workers
//! (1,000,000) and one that does not (999,999).
//!
//! - **Array chunks**: [`Array::chunks`] splits the shared result array into
//!   disjoint parts (sizes differ by at most one); each worker process writes its
//!   part through a plain `&mut [i64]`, no lock per write.
//! - **Pool::map**: the items travel to the workers in chunks (about four per
//!   worker), the results come back in order. The task is a plain `fn`, as
//!   CPython's must be a module-level function.
//!
//! Run: `cargo run --release --example 12_pool_act3`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use multiproc::{Array, Pool, Process};

/// Iterations of busy work per item (about a microsecond).
pub const WORK: u32 = 400;

/// The per-item work: burns CPU, then returns a value that depends on it.
pub fn process_item(x: i64) -> i64 {
    let mut h = x as u64;
    for _ in 0..WORK {
        h = black_box(
            h.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    x.wrapping_mul(x) ^ (h >> 48) as i64
}

/// Sequential reference.
pub fn sequential(data: &[i64]) -> Vec<i64> {
    data.iter().map(|&x| process_item(x)).collect()
}

/// Disjoint chunks of one shared array, one worker process per chunk, no lock.
pub fn with_array_chunks(data: &Arc<Vec<i64>>, processes: usize) -> multiproc::Result<Vec<i64>> {
    let results = Array::<i64>::new(data.len())?;
    let mut workers = Vec::new();
    for mut chunk in results.chunks(processes)? {
        if chunk.is_empty() {
            continue;
        }
        // The child sees the parent's memory (copy-on-write): no copy of the input.
        let input = Arc::clone(data);
        let mut p = Process::new(move || {
            let range = chunk.start()..chunk.start() + chunk.len();
            for (slot, &x) in chunk.as_mut_slice().iter_mut().zip(&input[range]) {
                *slot = process_item(x);
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

/// The same work through `Pool::map`.
pub fn with_pool(pool: &Pool, data: &[i64]) -> multiproc::Result<Vec<i64>> {
    pool.map(process_item, data.iter().copied())
}

/// Runs act 3 on 1,000,000 and 999,999 items; returns whether every result equals
/// the sequential one.
pub fn run() -> multiproc::Result<bool> {
    let processes = std::thread::available_parallelism().map_or(2, |n| n.get());
    // The default start method (`multiproc demo --start-method` sets it).
    let pool = Pool::builder()
        .processes(processes)
        .start_method(multiproc::get_start_method())
        .build()?;
    let mut all = true;
    for len in [1_000_000i64, 999_999] {
        let data = Arc::new((0..len).map(|x| x * 7 - 3).collect::<Vec<i64>>());
        let start = Instant::now();
        let expected = sequential(&data);
        let t_seq = start.elapsed().as_secs_f64();

        let start = Instant::now();
        let by_chunks = with_array_chunks(&data, processes)?;
        let t_chunks = start.elapsed().as_secs_f64();

        let start = Instant::now();
        let by_pool = with_pool(&pool, &data)?;
        let t_pool = start.elapsed().as_secs_f64();

        let (ok_chunks, ok_pool) = (by_chunks == expected, by_pool == expected);
        println!("{len} items, {processes} processes: sequential {t_seq:.3} s");
        println!(
            "  Array chunks, no lock: {t_chunks:.3} s, speedup {:.2}x, equal to sequential: {ok_chunks}",
            t_seq / t_chunks
        );
        println!(
            "  Pool::map:             {t_pool:.3} s, speedup {:.2}x, equal to sequential: {ok_pool}",
            t_seq / t_pool
        );
        all &= ok_chunks && ok_pool;
    }
    Ok(all)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
