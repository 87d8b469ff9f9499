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
