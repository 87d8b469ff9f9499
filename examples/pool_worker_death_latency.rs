//! Measures how soon a Pool notices a worker's death: the time from the SIGKILL of
//! a worker holding a task to the moment the caller's `AsyncResult` is ready with
//! `Error::WorkerLost` (the death seen by `poll`, the worker reaped, the task
//! failed, the waiter woken), `RUNS` times.
//!
//! Run: `cargo run --release --example pool_worker_death_latency [RUNS]`

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use multiproc::{Error, Event, Pool, Value};

const BOUND: Option<Duration> = Some(Duration::from_secs(20));

struct Holder {
    pid: Value<u32>,
    started: Event,
}

static HOLDER: OnceLock<Holder> = OnceLock::new();

/// The task: says which worker holds it, then blocks until killed.
fn hold(_: u32) -> u32 {
    let h = HOLDER.get().expect("set before the pool forks");
    h.pid.set(std::process::id()).unwrap();
    h.started.set();
    std::thread::sleep(Duration::from_secs(120));
    0
}

fn main() -> multiproc::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let h = HOLDER.get_or_init(|| Holder {
        pid: Value::new(0).unwrap(),
        started: Event::new().unwrap(),
    });
    let pool = Pool::new(2)?;
    let mut lat = Vec::with_capacity(runs);
    for _ in 0..runs {
        h.started.clear();
        let r = pool.apply_async(hold, 0)?;
        assert!(h.started.wait(BOUND)?, "no worker took the task");
        let pid = rustix::process::Pid::from_raw(h.pid.get()? as i32).unwrap();
        let t0 = Instant::now();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill the worker");
        assert!(r.wait(BOUND)?, "the death was not noticed");
        lat.push(t0.elapsed());
        assert!(matches!(
            r.get(None),
            Err(Error::WorkerLost {
                signal: Some(9),
                ..
            })
        ));
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "worker SIGKILL -> WorkerLost, {runs} runs: median {:.3} ms, p90 {:.3} ms, max {:.3} ms",
        ms(lat[runs / 2]),
        ms(lat[runs * 9 / 10]),
        ms(lat[runs - 1])
    );
    Ok(())
}
