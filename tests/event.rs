//! Event between real processes.

mod common;

use std::time::Duration;

use common::{
    BOUND, T, join_all_ok, join_ok, kill, late_move, pin_to_one_cpu, poll_until, spawn,
    until_asleep,
};
use multiproc::{Event, RawValue};

/// Three processes that run `wait` on `ev`, returned once each is asleep in it.
fn asleep_in_wait(ev: &Event, wait: fn(&Event)) -> Vec<multiproc::Process> {
    let about_to_wait = RawValue::new(0u32).unwrap();
    let kids: Vec<_> = (0..3)
        .map(|_| {
            let (ev, a) = (ev.clone(), about_to_wait.clone());
            spawn(move || {
                a.fetch_add(1);
                wait(&ev);
            })
        })
        .collect();
    poll_until("3 waiters", || about_to_wait.load() == 3);
    for k in &kids {
        until_asleep(k.pid().unwrap());
    }
    kids
}

/// Two processes on one CPU pass the turn through two Events (the one-core
/// hand-off, where each wait yields the core to the setter): every wait returns
/// true only once its Event was set, checked by the turn counter each side
/// writes before it sets. Every fifth move is late (the mover yields once
/// first), so that the waiter's first hand-off finds the Event clear and its
/// wait goes on.
#[test]
fn one_cpu_ping_pong_waits_for_each_set() {
    let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
    let turn = RawValue::new(0u32).unwrap();
    const ROUNDS: u32 = 3000;
    let (p2, q2, t2) = (ping.clone(), pong.clone(), turn.clone());
    let responder = spawn(move || {
        pin_to_one_cpu();
        for i in 0..ROUNDS {
            assert!(p2.wait(T).unwrap(), "no ping");
            assert_eq!(t2.load(), 2 * i + 1, "a wait returned before the set");
            p2.clear();
            late_move(i);
            t2.store(2 * i + 2);
            q2.set();
        }
    });
    let (p1, q1, t1) = (ping.clone(), pong.clone(), turn.clone());
    let initiator = spawn(move || {
        pin_to_one_cpu();
        for i in 0..ROUNDS {
            late_move(i);
            t1.store(2 * i + 1);
            p1.set();
            assert!(q1.wait(T).unwrap(), "no pong");
            assert_eq!(t1.load(), 2 * i + 2, "a wait returned before the set");
            q1.clear();
        }
    });
    join_ok(initiator);
    join_ok(responder);
    assert!(!ping.is_set() && !pong.is_set());
}

/// set() in one process wakes waiters in several others.
#[test]
fn set_wakes_all_waiting_processes() {
    let ev = Event::new().unwrap();
    let arrived = RawValue::new(0u32).unwrap();
    let all_in = Event::new().unwrap();
    let kids: Vec<_> = (0..3)
        .map(|_| {
            let (ev, arrived, all_in) = (ev.clone(), arrived.clone(), all_in.clone());
            spawn(move || {
                if arrived.fetch_add(1) + 1 == 3 {
                    all_in.set();
                }
                assert!(ev.wait(T).unwrap());
                assert!(ev.is_set());
            })
        })
        .collect();
    assert!(all_in.wait(T).unwrap());
    ev.set();
    for k in kids {
        join_ok(k);
    }
}

/// set() wakes processes asleep in wait. Their timeout is 4x the join bound: a
/// waiter that was not woken would only notice the flag when its timeout ends (and
/// then return true), so with shorter waits this test could not fail.
#[test]
fn set_wakes_processes_asleep_in_wait_long_before_their_timeout() {
    let ev = Event::new().unwrap();
    let kids = asleep_in_wait(&ev, |ev| assert!(ev.wait(Some(BOUND * 4)).unwrap()));
    ev.set();
    join_all_ok(kids);
}

/// wait returns false on timeout; clear() makes later waits block again.
#[test]
fn timeout_and_clear() {
    let ev = Event::new().unwrap();
    assert!(!ev.wait(Some(Duration::from_millis(10))).unwrap());
    ev.set();
    assert!(ev.wait(Some(Duration::ZERO)).unwrap());
    ev.clear();
    assert!(!ev.is_set());
    assert!(!ev.wait(Some(Duration::from_millis(10))).unwrap());
    assert!(ev.wait(Some(Duration::MAX)).is_err());
}

/// A child sets the event, the parent sees it; the flag is shared, not copied.
#[test]
fn set_in_child_is_seen_by_parent() {
    let ev = Event::new().unwrap();
    let e = ev.clone();
    let kid = spawn(move || e.set());
    assert!(ev.wait(T).unwrap());
    join_ok(kid);
    assert!(ev.is_set());
}

/// A waiter killed inside wait leaves the Event working for everyone else.
#[test]
fn killed_waiter_leaves_it_working() {
    let ev = Event::new().unwrap();
    let started = Event::new().unwrap();
    let (e, s) = (ev.clone(), started.clone());
    let victim = spawn(move || {
        s.set();
        e.wait(None).unwrap();
    });
    assert!(started.wait(T).unwrap());
    kill(victim);
    let e = ev.clone();
    let kid = spawn(move || assert!(e.wait(T).unwrap()));
    ev.set();
    join_ok(kid);
}

/// set(); clear() wakes processes asleep in wait(None): each returns, with the
/// flag as it is when it looks (Python's wait returns after notify_all and reports
/// the flag: false once cleared, true for one that ran before the clear). Before
/// the generation counter, a waiter that looked after the clear slept for good.
#[test]
fn set_then_clear_wakes_waiters() {
    let ev = Event::new().unwrap();
    let kids = asleep_in_wait(&ev, |ev| {
        // What it returns is the flag when it looks (as multiprocessing's Event
        // does): true if it woke before `clear()`, false after. Either is right;
        // what must not happen is sleeping on (the join below bounds it).
        let _flag_then = ev.wait(None).unwrap();
    });
    ev.set();
    ev.clear();
    join_all_ok(kids);
    // A later wait sees the cleared flag.
    assert!(!ev.wait(Some(Duration::from_millis(1))).unwrap());
}
