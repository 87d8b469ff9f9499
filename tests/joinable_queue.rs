//! JoinableQueue with real processes: `task_done` and `join` across processes, the
//! timeout, and consumers killed holding unfinished tasks (join reports them as
//! abandoned instead of waiting forever).

mod common;

use std::time::Duration;

use common::{BOUND, T, join_all_ok, join_ok, spawn};
use multiproc::{Error, Event, JoinableQueue};

const LONG: Option<Duration> = Some(Duration::from_secs(4 * BOUND.as_secs()));

#[test]
fn join_returns_when_workers_finished_every_task() {
    const STOP: u32 = u32::MAX;
    let q = JoinableQueue::<u32>::new().unwrap();
    let results = JoinableQueue::<u32>::new().unwrap();
    let mut kids = Vec::new();
    for _ in 0..3 {
        let (w, out) = (q.clone(), results.sender());
        kids.push(spawn(move || {
            loop {
                let n = w.get(LONG).unwrap();
                if n == STOP {
                    w.task_done().unwrap();
                    return;
                }
                out.put(&(n * 2), None).unwrap();
                w.task_done().unwrap();
            }
        }));
    }
    q.put_many(&(0..300).collect::<Vec<_>>(), T).unwrap();
    q.join(LONG).unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    assert_eq!(results.qsize(), 300);
    let mut sum = 0;
    for _ in 0..300 {
        sum += results.get(T).unwrap();
        results.task_done().unwrap();
    }
    assert_eq!(sum, (0..300).sum::<u32>() * 2);
    results.join(T).unwrap();
    q.put_many(&[STOP; 3], T).unwrap();
    q.join(LONG).unwrap();
    join_all_ok(kids);
}

#[test]
fn task_done_from_another_process_and_too_many() {
    let q = JoinableQueue::<u8>::new().unwrap();
    q.put(&1, None).unwrap();
    assert_eq!(q.get(T).unwrap(), 1);
    assert_eq!(q.unfinished_tasks(), 1);
    let c = q.clone();
    // The parent took the task; the child says it is done (Python allows it).
    let p = spawn(move || c.task_done().unwrap());
    join_ok(p);
    assert_eq!(q.unfinished_tasks(), 0);
    q.join(T).unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooMany)));
}

#[test]
fn join_times_out_while_tasks_are_unfinished() {
    let q = JoinableQueue::<u8>::new().unwrap();
    q.put(&1, None).unwrap();
    assert!(matches!(
        q.join(Some(Duration::from_millis(30))),
        Err(Error::Timeout {
            what: "JoinableQueue.join",
            ..
        })
    ));
    let _ = q.get(T).unwrap();
    assert!(matches!(
        q.join(Some(Duration::from_millis(30))),
        Err(Error::Timeout { .. })
    ));
    q.task_done().unwrap();
    q.join(Some(Duration::from_millis(30))).unwrap();
}

#[test]
fn a_consumer_killed_holding_tasks_does_not_make_join_wait_forever() {
    let q = JoinableQueue::<u32>::new().unwrap();
    q.put_many(&[1, 2, 3, 4], None).unwrap();
    let took = Event::new().unwrap();
    let (rx, t) = (q.receiver(), took.clone());
    let never = Event::new().unwrap();
    let n = never.clone();
    // Takes two tasks, finishes none, and is killed.
    let victim = spawn(move || {
        rx.get(T).unwrap();
        rx.get(T).unwrap();
        t.set();
        n.wait(LONG).unwrap();
    });
    assert!(took.wait(T).unwrap());
    // A live worker finishes the other two.
    let worker_q = q.clone();
    let worker = spawn(move || {
        for _ in 0..2 {
            worker_q.get(T).unwrap();
            worker_q.task_done().unwrap();
        }
    });
    join_ok(worker);
    assert_eq!(q.unfinished_tasks(), 2, "the victim's two, while it lives");
    let joiner_q = q.clone();
    let joiner = spawn(move || match joiner_q.join(LONG) {
        Err(Error::TasksAbandoned { count: 2 }) => {}
        other => panic!("expected TasksAbandoned(2), got {other:?}"),
    });
    common::kill(victim);
    join_ok(joiner);
    // Written off: the next join returns at once.
    q.join(T).unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
}
