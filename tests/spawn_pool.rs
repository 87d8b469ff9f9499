//! A Pool whose workers start by spawn or forkserver: new images of this test
//! binary that receive their connection to the pool as a token and each task's
//! function as an offset checked against the executable.

mod common;

use std::time::Duration;

use common::BOUND;
use multiproc::{Error, Pool, StartMethod};

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn fail(_: u64) -> u64 {
    panic!("bad item")
}

#[test]
fn a_pool_of_spawned_workers_maps_applies_and_survives_a_panic() {
    multiproc::spawn::init();
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .unwrap();
        let want: Vec<u64> = (0..200).map(|x| x * x).collect();
        assert_eq!(pool.map(square, 0..200).unwrap(), want, "{method}");
        assert_eq!(pool.apply(square, 12).unwrap(), 144, "{method}");
        assert_eq!(
            pool.starmap(add as fn(u64, u64) -> u64, vec![(1, 2), (3, 4)])
                .unwrap(),
            [3, 7]
        );
        assert!(matches!(
            pool.apply(fail, 0),
            Err(Error::TaskPanicked { .. })
        ));
        assert_eq!(
            pool.apply(square, 3).unwrap(),
            9,
            "{method}: the pool goes on"
        );
        pool.close();
        assert!(pool.join(Some(BOUND)).unwrap(), "{method}");
    }
}

#[test]
fn a_killed_forkserver_worker_is_replaced() {
    multiproc::spawn::init();
    let pool = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Forkserver)
        .build()
        .unwrap();
    assert_eq!(pool.apply(square, 2).unwrap(), 4);
    let pid = pool.worker_pids()[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // The replacement (another forkserver child) runs the next task.
    common::poll_until("a replacement worker", || {
        pool.worker_pids().first().is_some_and(|&p| p != pid)
    });
    let r = pool.apply_async(square, 5).unwrap();
    assert_eq!(r.get(Some(Duration::from_secs(30))).unwrap(), 25);
}

/// What the initializer stored in this worker: how many times it ran here, and
/// the arguments it was given.
static INIT_RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static INIT_ARGS: std::sync::OnceLock<(String, u32)> = std::sync::OnceLock::new();

fn setup((name, level, started): (String, u32, multiproc::Value<u32>)) {
    INIT_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _ = INIT_ARGS.set((name, level));
    *started.lock().unwrap() += 1;
}

/// A task that reports what the initializer left in its worker.
fn what_init_left(_: u8) -> (u32, Option<(String, u32)>, u32) {
    (
        INIT_RUNS.load(std::sync::atomic::Ordering::SeqCst),
        INIT_ARGS.get().cloned(),
        std::process::id(),
    )
}

#[test]
fn an_initializer_fn_runs_once_in_every_worker_before_its_first_task() {
    multiproc::spawn::init();
    for method in [
        StartMethod::Spawn,
        StartMethod::Forkserver,
        StartMethod::Fork,
    ] {
        let started = multiproc::Value::<u32>::new(0).unwrap();
        // Two tasks per worker: the twelve tasks need at least six workers, four
        // of them replacements.
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .maxtasksperchild(2)
            .initializer_fn(setup, ("config".to_string(), 7, started.clone()))
            .build()
            .unwrap();
        let got = pool.map_chunked(what_init_left, vec![0u8; 12], 1).unwrap();
        let want = Some(("config".to_string(), 7));
        for (runs, args, pid) in &got {
            assert_eq!(
                (*runs, args),
                (1, &want),
                "{method}: worker {pid} ran its initializer once, with its arguments, before the task"
            );
        }
        let mut pids: Vec<u32> = got.iter().map(|g| g.2).collect();
        pids.sort();
        pids.dedup();
        assert!(
            pids.len() >= 6,
            "{method}: replacement workers ran tasks: {pids:?}"
        );
        pool.close();
        assert!(pool.join(Some(BOUND)).unwrap(), "{method}");
        // Every worker started, replacements included, ran it (some may have
        // started after the last task was taken, and run none).
        let n = started.get().unwrap();
        assert!(
            n as usize >= pids.len(),
            "{method}: {n} runs for {} workers",
            pids.len()
        );
        assert_eq!(
            INIT_RUNS.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{method}: not in the pool's process"
        );
    }
}

fn refuse_setup(why: String) {
    panic!("{why}");
}

#[test]
fn a_panicking_initializer_fn_breaks_the_pool_with_its_message() {
    multiproc::spawn::init();
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .initializer_fn(refuse_setup, "no config file".to_string())
            .build()
            .unwrap();
        let r = pool.apply_async(square, 2).unwrap();
        match r.get(Some(BOUND)) {
            Err(Error::PoolBroken { reason }) => {
                assert!(
                    reason.contains("initializer panicked") && reason.contains("no config file"),
                    "{method}: {reason}"
                )
            }
            other => panic!("{method}: {other:?}"),
        }
        // No worker is started again (CPython would start one after another).
        common::poll_until("the broken pool's workers gone", || {
            pool.worker_pids().is_empty()
        });
        assert!(matches!(
            pool.map(square, 0..4),
            Err(Error::PoolBroken { .. })
        ));
        pool.close();
        assert!(pool.join(Some(BOUND)).unwrap(), "{method}");
    }
}

#[test]
fn an_initializer_closure_is_refused_under_spawn_with_the_way_out() {
    multiproc::spawn::init();
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        match Pool::builder()
            .start_method(method)
            .initializer(|| {})
            .build()
        {
            Err(Error::StartMethod(why)) => assert!(why.contains("initializer_fn"), "{why}"),
            other => panic!("{method}: {other:?}"),
        }
    }
}
