//! Pool with real worker processes: every method, ordering, chunks,
//! maxtasksperchild, the initializer, panicking tasks, workers SIGKILLed while they
//! hold a task (only that task fails, a replacement starts, many times in a row),
//! retries, terminate during work, and drop leaving no worker and nothing in
//! /dev/shm. Every wait is bounded.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{BOUND, T, multiproc_shm};
use multiproc::{Error, Event, Pool, Value};

fn square(x: u64) -> u64 {
    x * x
}

fn pid_of(_: u32) -> u32 {
    std::process::id()
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn boom(x: u32) -> u32 {
    if x == 3 {
        panic!("item {x} exploded");
    }
    x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Where a task tells the test it has started (pid) and then blocks.
struct Holder {
    pid: Value<u32>,
    started: Event,
    attempts: Value<u32>,
}

impl Holder {
    fn new() -> Holder {
        Holder {
            pid: Value::new(0).unwrap(),
            started: Event::new().unwrap(),
            attempts: Value::new(0).unwrap(),
        }
    }

    /// In a worker: count the attempt, say which worker holds the task, block.
    fn hold(&self) {
        *self.attempts.lock().unwrap() += 1;
        self.pid.set(std::process::id()).unwrap();
        self.started.set();
        std::thread::sleep(Duration::from_secs(120));
    }

    /// In the test: wait for a worker to hold the task, SIGKILL it, return its pid.
    fn kill_holder(&self) -> u32 {
        assert!(self.started.wait(T).unwrap(), "no worker took the task");
        self.started.clear();
        let pid = self.pid.get().unwrap();
        let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(p, rustix::process::Signal::KILL).unwrap();
        pid
    }
}

/// Bounds the calls that wait without a timeout (`map`, `apply`, `Iterator::next`,
/// which have timeout twins): if the test is not done within twice [`BOUND`], the
/// watchdog fails it by exiting the test process, instead of letting it hang.
struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

fn watchdog() -> Watchdog {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let name = std::thread::current().name().unwrap_or("?").to_string();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(2 * BOUND) {
            eprintln!("test {name} hung: a pool call did not return");
            std::process::exit(101);
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.take().map(|tx| tx.send(()));
    }
}

/// Collects an imap iterator with a bounded wait for each result.
fn collect_bounded<R: serde::de::DeserializeOwned>(
    mut it: multiproc::IMapIterator<'_, R>,
) -> Vec<multiproc::Result<R>> {
    let mut out = Vec::new();
    while let Some(r) = it.next_timeout(T) {
        assert!(
            !matches!(r, Err(Error::Timeout { .. })),
            "result {} timed out",
            out.len()
        );
        out.push(r);
    }
    out
}

fn gone(pid: u32) -> bool {
    let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::test_kill_process(p).is_err()
}

#[test]
fn map_returns_results_in_order_for_every_length_and_chunksize() {
    let _w = watchdog();
    let pool = Pool::new(3).unwrap();
    for len in [0u64, 1, 2, 7, 100, 1001] {
        let want: Vec<u64> = (0..len).map(square).collect();
        assert_eq!(pool.map(square, 0..len).unwrap(), want, "map, length {len}");
        for chunk in [1, 3, 64, 5000] {
            assert_eq!(
                pool.map_chunked(square, 0..len, chunk).unwrap(),
                want,
                "length {len}, chunksize {chunk}"
            );
            let r = pool.map_async(square, 0..len, Some(chunk)).unwrap();
            assert_eq!(r.get(T).unwrap(), want);
        }
    }
    assert!(matches!(
        pool.map_chunked(square, 0..3, 0),
        Err(Error::ZeroSize { .. })
    ));
}

#[test]
fn imap_is_ordered_and_imap_unordered_gives_every_result() {
    let _w = watchdog();
    let pool = Pool::new(3).unwrap();
    for chunk in [None, Some(1), Some(4), Some(1000)] {
        let want: Vec<u64> = (0..50).map(square).collect();
        let it = pool.imap(square, 0..50, chunk).unwrap();
        // 50 results, one more if the input failed (while it is not all taken,
        // the iterator cannot know it will not).
        let (lo, hi) = it.size_hint();
        assert!(
            lo == 50 && (hi == Some(50) || hi == Some(51)),
            "{lo} {hi:?}"
        );
        let got: Vec<u64> = it.map(|r| r.unwrap()).collect();
        assert_eq!(got, want, "imap chunksize {chunk:?}");
        let mut got: Vec<u64> = pool
            .imap_unordered(square, 0..50, chunk)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        got.sort();
        assert_eq!(got, want, "imap_unordered chunksize {chunk:?}");
    }
    // A slow first item: unordered yields the fast ones first; ordered waits.
    let mut it = pool.imap_unordered(sleep_ms, [3000, 0, 0], None).unwrap();
    assert_eq!(it.next_timeout(T).unwrap().unwrap(), 0);
    let mut ordered = pool.imap(sleep_ms, [2000, 0], None).unwrap();
    assert!(matches!(
        ordered.next_timeout(Some(Duration::from_millis(1))),
        Some(Err(Error::Timeout { .. }))
    ));
    assert_eq!(ordered.next_timeout(T).unwrap().unwrap(), 2000);
    assert_eq!(ordered.next_timeout(T).unwrap().unwrap(), 0);
    assert!(ordered.next_timeout(T).is_none());
}

fn negate(a: i64) -> i64 {
    -a
}

/// Not symmetric in any two arguments: a swap or a dropped argument shows.
fn affine3(a: i64, b: i64, c: i64) -> i64 {
    100 * a + 10 * b + c
}

fn mixed4(a: u8, b: String, c: i64, d: bool) -> String {
    format!("{a}-{b}-{c}-{d}")
}

/// An endless input that counts the items taken.
static TAKEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn imap_takes_its_input_lazily_and_an_endless_input_works() {
    let _w = watchdog();
    let pool = Pool::new(2).unwrap();
    let endless = (0u64..).inspect(|_| {
        TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let it = pool.imap(square, endless, None).unwrap();
    let first: Vec<u64> = it.take(10).map(|r| r.unwrap()).collect();
    assert_eq!(first, (0..10).map(square).collect::<Vec<_>>());
    // Bounded look-ahead: 10 handed out, at most 4 chunks per worker beyond.
    let taken = TAKEN.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (10..=10 + Pool::IMAP_LOOKAHEAD * 2).contains(&taken),
        "took {taken} items"
    );
    let mut got: Vec<u64> = pool
        .imap_unordered(square, (0u64..).step_by(3), Some(4))
        .unwrap()
        .take(40)
        .map(|r| r.unwrap())
        .collect();
    got.sort();
    // Any 40 results of the first chunks: each a square of a multiple of 3.
    assert_eq!(got.len(), 40);
    assert!(
        got.iter()
            .all(|&v| v % 9 == 0 && ((v as f64).sqrt() as u64).pow(2) == v)
    );
    // The iterator may move to another thread.
    let moved = pool.imap(square, 0u64..6, None).unwrap();
    let got: Vec<u64> = std::thread::spawn(move || moved.map(|r| r.unwrap()).collect())
        .join()
        .unwrap();
    assert_eq!(got, [0, 1, 4, 9, 16, 25]);
    // A borrowed input (not 'static) works too.
    let data: Vec<u64> = (0..25).collect();
    let got: Vec<u64> = collect_bounded(pool.imap(square, data.iter().copied(), Some(4)).unwrap())
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got, data.iter().map(|&x| square(x)).collect::<Vec<_>>());
    // An iterator dropped half way does not keep a closed pool from finishing.
    let mut half = pool.imap(square, 0u64.., None).unwrap();
    assert_eq!(half.next_timeout(T).unwrap().unwrap(), 0);
    drop(half);
    pool.close();
    assert!(pool.join(T).unwrap());
}

#[test]
fn a_lazy_imap_goes_on_after_close_and_the_pool_finishes_after_it() {
    let _w = watchdog();
    let pool = Pool::new(2).unwrap();
    let mut it = pool.imap(square, 0u64..30, Some(2)).unwrap();
    assert_eq!(it.next_timeout(T).unwrap().unwrap(), 0);
    pool.close();
    // Accepted before close: its input still runs to the end.
    let rest: Vec<u64> = collect_bounded(it)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rest, (1..30).map(square).collect::<Vec<_>>());
    assert!(pool.join(T).unwrap());
}

#[test]
fn a_panicking_input_iterator_is_an_error_not_a_hang() {
    let _w = watchdog();
    let pool = Pool::new(2).unwrap();
    for ordered in [true, false] {
        let input = (0u64..).inspect(|&x| {
            if x == 7 {
                panic!("input {x} broke");
            }
        });
        let it = if ordered {
            pool.imap(square, input, Some(3)).unwrap()
        } else {
            pool.imap_unordered(square, input, Some(3)).unwrap()
        };
        let got = collect_bounded(it);
        // The 7 items before the panic, then the error, then the end.
        assert_eq!(got.len(), 8, "ordered {ordered}: {got:?}");
        let mut ok: Vec<u64> = got[..7].iter().map(|r| *r.as_ref().unwrap()).collect();
        ok.sort();
        assert_eq!(ok, (0..7).map(square).collect::<Vec<_>>());
        match &got[7] {
            Err(Error::TaskPanicked { task, message }) => {
                assert_eq!(message, "input 7 broke");
                assert!(task.contains("input iterator"), "{task}");
            }
            other => panic!("ordered {ordered}: {other:?}"),
        }
    }
    // The pool is whole, and closes.
    assert_eq!(pool.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
    pool.close();
    assert!(pool.join(T).unwrap());
}

#[test]
fn starmap_takes_one_to_four_arguments_in_order() {
    let _w = watchdog();
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.starmap(negate as fn(i64) -> i64, [(1,), (-2,), (3,)])
            .unwrap(),
        [-1, 2, -3]
    );
    assert_eq!(
        pool.starmap(
            affine3 as fn(i64, i64, i64) -> i64,
            (0..7).map(|i| (i, i + 1, i + 2))
        )
        .unwrap(),
        (0..7)
            .map(|i| 100 * i + 10 * (i + 1) + i + 2)
            .collect::<Vec<_>>()
    );
    let r = pool
        .starmap_async(
            mixed4 as fn(u8, String, i64, bool) -> String,
            [
                (1, "x".to_string(), -3, true),
                (2, "yy".to_string(), 4, false),
            ],
            Some(1),
        )
        .unwrap();
    assert_eq!(r.get(T).unwrap(), ["1-x--3-true", "2-yy-4-false"]);
}

#[test]
fn starmap_apply_and_async_results() {
    let _w = watchdog();
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.starmap(add as fn(i64, i64) -> i64, [(1, 2), (3, 4), (-5, 5)])
            .unwrap(),
        [3, 7, 0]
    );
    let r = pool
        .starmap_async(add as fn(i64, i64) -> i64, (0..10).map(|i| (i, i)), Some(3))
        .unwrap();
    assert_eq!(
        r.get(T).unwrap(),
        (0..10).map(|i| 2 * i).collect::<Vec<_>>()
    );
    assert_eq!(pool.apply(square, 12).unwrap(), 144);

    let slow = pool.apply_async(sleep_ms, 1500).unwrap();
    assert!(!slow.ready());
    assert!(matches!(slow.successful(), Err(Error::NotReady { .. })));
    assert!(matches!(
        slow.get(Some(Duration::from_millis(1))),
        Err(Error::Timeout { .. })
    ));
    assert!(!slow.wait(Some(Duration::from_millis(1))).unwrap());
    assert!(slow.wait(T).unwrap());
    assert!(slow.ready());
    assert!(slow.successful().unwrap());
    assert_eq!(slow.get(None).unwrap(), 1500);
    assert_eq!(slow.get(None).unwrap(), 1500, "get can be asked again");
}

#[test]
fn a_panicking_task_fails_alone_and_its_worker_goes_on() {
    let _w = watchdog();
    let pool = Pool::new(1).unwrap();
    let before = pool.worker_pids();
    let r = pool.apply_async(boom, 3).unwrap();
    match r.get(T) {
        Err(Error::TaskPanicked { message, task }) => {
            assert_eq!(message, "item 3 exploded");
            assert!(task.contains("apply"), "{task}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!r.successful().unwrap());
    match pool.map_chunked(boom, 0..10, 2) {
        Err(Error::TaskPanicked { message, task }) => {
            assert_eq!(message, "item 3 exploded");
            assert!(task.starts_with("item 3 of map"), "{task}");
        }
        other => panic!("{other:?}"),
    }
    // imap: only the failed chunk's items are errors.
    let got = collect_bounded(pool.imap(boom, 0..6, Some(2)).unwrap());
    let oks: Vec<u32> = got
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(oks, [0, 1, 4, 5]);
    assert!(matches!(got[2], Err(Error::TaskPanicked { .. })));
    assert!(matches!(got[3], Err(Error::TaskPanicked { .. })));
    assert_eq!(pool.worker_pids(), before, "the worker survived its panics");
    assert_eq!(pool.apply(pid_of, 0).unwrap(), before[0]);
}

#[test]
fn maxtasksperchild_replaces_workers() {
    let _w = watchdog();
    // Exactly 2 tasks per worker, also with tasks sent ahead: a worker is never
    // sent a task past its last (that task would be lost when it exits).
    for (max, tasks) in [(2usize, 12u32), (3, 30), (1, 5)] {
        let pool = Pool::builder()
            .processes(2)
            .maxtasksperchild(max)
            .build()
            .unwrap();
        let pids = pool.map_chunked(pid_of, 0..tasks, 1).unwrap();
        let live = pool.worker_pids();
        let mut distinct = pids.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() >= tasks as usize / max,
            "{max} per worker: {pids:?}"
        );
        for p in &distinct {
            let ran = pids.iter().filter(|q| *q == p).count();
            // At most `max` each; a worker that was replaced ran exactly `max`.
            assert!(ran <= max, "{max} per worker: {pids:?}");
            assert!(ran == max || live.contains(p), "{max} per worker: {pids:?}");
        }
    }
    assert!(matches!(
        Pool::builder().processes(1).maxtasksperchild(0).build(),
        Err(Error::ZeroSize { .. })
    ));
}

static INIT_MARK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn init_mark(_: u8) -> u32 {
    INIT_MARK.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn the_initializer_runs_once_in_each_worker_before_its_tasks() {
    let _w = watchdog();
    let runs = Value::<u32>::new(0).unwrap();
    let r = runs.clone();
    let pool = Pool::builder()
        .processes(3)
        .initializer(move || {
            *r.lock().unwrap() += 1;
            INIT_MARK.store(77, std::sync::atomic::Ordering::Relaxed);
        })
        .build()
        .unwrap();
    let marks = pool.map_chunked(init_mark, vec![0u8; 30], 1).unwrap();
    assert!(marks.iter().all(|&m| m == 77), "{marks:?}");
    pool.close();
    assert!(pool.join(T).unwrap());
    assert_eq!(runs.get().unwrap(), 3);
    assert_eq!(
        INIT_MARK.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "not in the parent"
    );
}

#[test]
fn a_panicking_initializer_breaks_the_pool_instead_of_respawning_forever() {
    let _w = watchdog();
    let pool = Pool::builder()
        .processes(1)
        .initializer(|| panic!("no setup"))
        .build()
        .unwrap();
    let r = pool.apply_async(square, 2).unwrap();
    match r.get(T) {
        Err(Error::PoolBroken { reason }) => assert!(reason.contains("no setup"), "{reason}"),
        other => panic!("{other:?}"),
    }
    common::poll_until("the broken pool refusing tasks", || {
        matches!(pool.apply_async(square, 1), Err(Error::PoolBroken { .. }))
    });
}

static KILLED: OnceLock<Holder> = OnceLock::new();

fn hold_13(x: u32) -> u32 {
    if x == 13 {
        KILLED.get().unwrap().hold();
    }
    x
}

#[test]
fn a_worker_killed_in_map_fails_only_its_task_and_is_replaced() {
    let _w = watchdog();
    let holder = KILLED.get_or_init(Holder::new);
    let pool = Pool::new(3).unwrap();
    let it = pool.imap(hold_13, 0..40, Some(1)).unwrap();
    // imap takes its input as it is iterated: kill item 13's worker meanwhile.
    let killer = std::thread::spawn(|| KILLED.get().unwrap().kill_holder());
    let got = collect_bounded(it);
    let pid = killer.join().unwrap();
    for (i, r) in got.iter().enumerate() {
        if i == 13 {
            match r {
                Err(Error::WorkerLost {
                    pid: p,
                    signal,
                    exitcode,
                    task,
                    attempts,
                }) => {
                    assert_eq!(*p, pid);
                    assert_eq!(*signal, Some(9));
                    assert_eq!(*exitcode, Some(-9));
                    assert_eq!(*attempts, 1);
                    assert!(task.starts_with("item 13 of imap"), "{task}");
                }
                other => panic!("item 13: {other:?}"),
            }
        } else {
            assert_eq!(r.as_ref().unwrap(), &(i as u32), "item {i}");
        }
    }
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3, "a replacement was started: {pids:?}");
    assert!(!pids.contains(&pid));
    // map_async fails at the lost task; the next batch maps fine.
    let r = pool.map_async(hold_13, 0..20, Some(1)).unwrap();
    let pid2 = holder.kill_holder();
    assert!(matches!(r.get(T), Err(Error::WorkerLost { pid, .. }) if pid == pid2));
    assert_eq!(
        pool.map(square, 0..100).unwrap(),
        (0..100).map(square).collect::<Vec<_>>()
    );
}

/// Items of the prefetch test: how many times each ran, and the holder of item 0.
struct Ahead {
    holder: Holder,
    runs: multiproc::Array<u32>,
}

static AHEAD: OnceLock<Ahead> = OnceLock::new();
const AHEAD_ITEMS: usize = 12;

fn count_hold_0(x: u32) -> u32 {
    let a = AHEAD.get().unwrap();
    {
        let mut runs = a.runs.lock().unwrap();
        runs[x as usize] += 1;
    }
    if x == 0 {
        a.holder.hold();
    }
    x
}

#[test]
fn a_worker_killed_with_a_task_sent_ahead_loses_only_the_running_one() {
    let _w = watchdog();
    let a = AHEAD.get_or_init(|| Ahead {
        holder: Holder::new(),
        runs: multiproc::Array::new(AHEAD_ITEMS).unwrap(),
    });
    // One worker: it runs item 0 (which blocks) and is sent item 1 ahead.
    let pool = Pool::new(1).unwrap();
    let it = pool
        .imap(count_hold_0, 0..AHEAD_ITEMS as u32, Some(1))
        .unwrap();
    let pid = a.holder.kill_holder();
    let got = collect_bounded(it);
    assert_eq!(got.len(), AHEAD_ITEMS);
    match &got[0] {
        Err(Error::WorkerLost {
            pid: p,
            signal,
            attempts,
            task,
            ..
        }) => {
            assert_eq!((*p, *signal, *attempts), (pid, Some(9), 1));
            assert!(task.starts_with("item 0 of imap"), "{task}");
        }
        other => panic!("item 0: {other:?}"),
    }
    for (i, r) in got.iter().enumerate().skip(1) {
        assert_eq!(r.as_ref().unwrap(), &(i as u32), "item {i}");
    }
    // No task ran twice, none was skipped: the task sent ahead went back to the
    // queue unstarted and ran once on the replacement.
    assert_eq!(a.runs.to_vec().unwrap(), vec![1; AHEAD_ITEMS]);
    assert!(!pool.worker_pids().contains(&pid));
}

static LOOPED: OnceLock<Holder> = OnceLock::new();

fn hold_always(x: u32) -> u32 {
    LOOPED.get().unwrap().hold();
    x
}

#[test]
fn many_kills_in_a_row_never_hang_the_pool() {
    let _w = watchdog();
    let holder = LOOPED.get_or_init(Holder::new);
    let pool = Pool::new(2).unwrap();
    for round in 0..15 {
        let r = pool.apply_async(hold_always, round).unwrap();
        let pid = holder.kill_holder();
        match r.get(T) {
            Err(Error::WorkerLost { pid: p, signal, .. }) => {
                assert_eq!((p, signal), (pid, Some(9)), "round {round}");
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert!(gone(pid), "round {round}: the dead worker was reaped");
    }
    assert_eq!(pool.worker_pids().len(), 2);
    assert_eq!(
        pool.map(square, 0..10).unwrap(),
        (0..10).map(square).collect::<Vec<_>>()
    );
}

static RETRIED: OnceLock<Holder> = OnceLock::new();

fn hold_first_attempt(x: u32) -> u32 {
    let h = RETRIED.get().unwrap();
    if h.attempts.get().unwrap() == 0 {
        h.hold();
    }
    x + 1
}

static RETRIED_TWICE: OnceLock<Holder> = OnceLock::new();

fn hold_twice(x: u32) -> u32 {
    RETRIED_TWICE.get().unwrap().hold();
    x
}

#[test]
fn retries_run_a_lost_task_again_then_give_up() {
    let _w = watchdog();
    // Both statics exist before the fork, so that the workers have them.
    let once = RETRIED.get_or_init(Holder::new);
    let twice = RETRIED_TWICE.get_or_init(Holder::new);
    let pool = Pool::builder().processes(2).retries(1).build().unwrap();
    let r = pool.apply_async(hold_first_attempt, 41).unwrap();
    once.kill_holder();
    assert_eq!(r.get(T).unwrap(), 42, "run again after the kill");
    assert_eq!(once.attempts.get().unwrap(), 1, "the retry did not block");

    let r = pool.apply_async(hold_twice, 0).unwrap();
    let first = twice.kill_holder();
    let second = twice.kill_holder();
    assert_ne!(first, second);
    match r.get(T) {
        Err(Error::WorkerLost { pid, attempts, .. }) => assert_eq!((pid, attempts), (second, 2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(twice.attempts.get().unwrap(), 2);
}

#[test]
fn terminate_during_work_fails_unfinished_tasks_and_reaps_the_workers() {
    let _w = watchdog();
    let pool = Pool::new(2).unwrap();
    let pids = pool.worker_pids();
    let r = pool
        .map_async(sleep_ms, [60_000, 60_000, 60_000], Some(1))
        .unwrap();
    pool.terminate().unwrap();
    assert!(matches!(r.get(T), Err(Error::PoolTerminated { .. })));
    assert!(pool.worker_pids().is_empty());
    for p in pids {
        assert!(gone(p), "worker {p} is gone");
    }
    assert!(matches!(
        pool.apply_async(square, 1),
        Err(Error::PoolClosed { .. })
    ));
    assert!(pool.join(T).unwrap());
    pool.terminate().unwrap(); // twice: nothing to do
}

#[test]
fn close_lets_queued_tasks_finish_and_join_is_bounded() {
    let _w = watchdog();
    let pool = Pool::new(1).unwrap();
    assert!(matches!(
        pool.join(Some(Duration::ZERO)),
        Err(Error::PoolState { .. })
    ));
    let slow = pool.apply_async(sleep_ms, 1000).unwrap();
    let queued = pool.map_async(square, 0..5, None).unwrap();
    pool.close();
    assert!(matches!(
        pool.map(square, 0..2),
        Err(Error::PoolClosed { .. })
    ));
    assert!(!pool.join(Some(Duration::from_millis(1))).unwrap());
    assert!(pool.join(T).unwrap());
    assert_eq!(slow.get(Some(Duration::ZERO)).unwrap(), 1000);
    assert_eq!(queued.get(Some(Duration::ZERO)).unwrap(), [0, 1, 4, 9, 16]);
    assert!(pool.worker_pids().is_empty());
}

/// Mappings of forked workers' task slots (`worker::Slots`, a memfd) in this
/// process.
fn slot_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:multiproc-pool-slots"))
        .count()
}

static MID_CHUNK: OnceLock<Holder> = OnceLock::new();

fn hold_700(x: u32) -> u32 {
    if x == 700 {
        MID_CHUNK.get().unwrap().hold();
    }
    x * 3
}

/// Forked workers' chunks travel through shared slots: one memfd mapping per
/// live worker in the pool's process. A worker SIGKILLed in the middle of a
/// chunk of 1,000 items fails that chunk only, and its mapping goes with it: after
/// every kill, as many mappings as live workers; after the drop, none; nothing in
/// /dev/shm. Run in a child, so that other tests' pools do not count.
#[test]
fn slots_go_with_their_workers_also_killed_mid_chunk() {
    let _w = watchdog();
    let holder = MID_CHUNK.get_or_init(Holder::new);
    let shm_before = multiproc_shm();
    let child = common::spawn(move || {
        let before = slot_mappings();
        let pool = Pool::new(2).unwrap();
        assert_eq!(slot_mappings(), before + 2, "one slot mapping per worker");
        for round in 0..6 {
            let r = pool.map_async(hold_700, 0..3_000u32, Some(1_000)).unwrap();
            let pid = holder.kill_holder();
            match r.get(T) {
                Err(Error::WorkerLost { pid: p, task, .. }) => {
                    assert_eq!(p, pid, "round {round}");
                    assert!(task.contains("items 0..1000"), "round {round}: {task}");
                }
                other => panic!("round {round}: {other:?}"),
            }
            assert_eq!(slot_mappings(), before + 2, "round {round}");
            // The pool is whole: a map through the replacements' slots.
            let got = pool.map(square, 0..20_000u64).unwrap();
            assert!(got.iter().enumerate().all(|(i, &y)| y == square(i as u64)));
        }
        // Chunks whose items sit in different slots of one worker, many times.
        let one = Pool::new(1).unwrap();
        let got = one.map_chunked(negate, 0..50_000i64, 7).unwrap();
        assert_eq!(got, (0..50_000).map(negate).collect::<Vec<_>>());
        assert_eq!(slot_mappings(), before + 3);
        drop(one);
        drop(pool);
        assert_eq!(slot_mappings(), before, "the slots went with the pool");
    });
    common::join_ok(child);
    assert_eq!(multiproc_shm(), shm_before);
}

fn echo(v: Vec<u8>) -> Vec<u8> {
    v
}

/// Items and results too big for a slot (512 KiB) go through the socket, beside
/// chunks that use the slots, in both orders.
#[test]
fn items_and_results_too_big_for_a_slot_go_through_the_socket() {
    let _w = watchdog();
    let pool = Pool::new(2).unwrap();
    let items: Vec<Vec<u8>> = [10usize, 700_000, 3, 1 << 20, 600_000, 0]
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![i as u8; n])
        .collect();
    assert_eq!(pool.map(echo, items.clone()).unwrap(), items);
    assert_eq!(pool.map_chunked(echo, items.clone(), 2).unwrap(), items);
}

#[test]
fn drop_leaves_no_worker_and_nothing_in_dev_shm() {
    let _w = watchdog();
    let before = multiproc_shm();
    let pool = Pool::builder()
        .processes(3)
        .maxtasksperchild(3)
        .build()
        .unwrap();
    assert_eq!(pool.map(square, 0..50).unwrap().len(), 50);
    let busy = pool.apply_async(sleep_ms, 60_000).unwrap();
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3);
    let start = std::time::Instant::now();
    drop(pool);
    assert!(start.elapsed() < BOUND, "drop is bounded");
    for p in pids {
        assert!(gone(p), "worker {p} is gone");
    }
    assert!(matches!(busy.get(T), Err(Error::PoolTerminated { .. })));
    assert_eq!(multiproc_shm(), before);
}

#[test]
fn a_forked_copy_of_the_pool_refuses_calls_instead_of_hanging() {
    let _w = watchdog();
    let pool = std::sync::Arc::new(Pool::new(1).unwrap());
    let refused = Value::<u32>::new(0).unwrap();
    let (p2, r2) = (std::sync::Arc::clone(&pool), refused.clone());
    let child = common::spawn(move || {
        if matches!(p2.apply_async(square, 2), Err(Error::PoolState { .. }))
            && matches!(p2.join(T), Err(Error::PoolState { .. }))
        {
            r2.set(1).unwrap();
        }
        drop(p2); // does nothing here
    });
    common::join_ok(child);
    assert_eq!(refused.get().unwrap(), 1);
    assert_eq!(pool.apply_async(square, 3).unwrap().get(T).unwrap(), 9);
}
