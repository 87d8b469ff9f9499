//! Semaphore and BoundedSemaphore between real processes.

mod common;

use std::time::Duration;

use common::{T, join_ok, kill, late_move, pin_to_one_cpu, spawn};
use multiproc::{BoundedSemaphore, Error, Event, RawValue, Semaphore, TryLockError};

/// Semaphore(2) under contention from 4 processes: never more than 2 holders at
/// once, counted in shared memory by every holder.
#[test]
fn at_most_n_holders_under_contention_from_4_processes() {
    let sem = Semaphore::new(2).unwrap();
    let inside = RawValue::new(0u32).unwrap();
    let max_seen = RawValue::new(0u32).unwrap();
    let entries = RawValue::new(0u32).unwrap();
    let kids: Vec<_> = (0..4)
        .map(|_| {
            let (sem, inside, max_seen, entries) = (
                sem.clone(),
                inside.clone(),
                max_seen.clone(),
                entries.clone(),
            );
            spawn(move || {
                for i in 0..2000 {
                    // Alternate the guard API and Python's acquire/release.
                    let guard = if i % 2 == 0 {
                        Some(sem.lock().unwrap())
                    } else {
                        assert!(sem.acquire(true, T).unwrap());
                        None
                    };
                    let now = inside.fetch_add(1) + 1;
                    assert!(now <= 2, "{now} holders of a Semaphore(2)");
                    let mut m = max_seen.load();
                    while now > m {
                        match max_seen.compare_exchange(m, now) {
                            Ok(_) => break,
                            Err(x) => m = x,
                        }
                    }
                    entries.fetch_add(1);
                    std::hint::spin_loop();
                    inside.fetch_add(u32::MAX); // -1
                    match guard {
                        Some(g) => drop(g),
                        None => sem.release().unwrap(),
                    }
                }
            })
        })
        .collect();
    for k in kids {
        join_ok(k);
    }
    assert!(max_seen.load() <= 2);
    assert_eq!(entries.load(), 8000);
    assert_eq!(inside.load(), 0);
    assert_eq!(sem.get_value(), 2);
}

/// A semaphore at 0 grants nothing, however often it is asked: while the parent
/// holds every permit, processes poll it many times (non-blocking, through the
/// guard API, and with short timeouts) and are never granted one.
#[test]
fn an_empty_semaphore_never_grants_a_permit_to_polling_processes() {
    let sem = Semaphore::new(2).unwrap();
    assert!(sem.acquire(false, None).unwrap());
    assert!(sem.acquire(false, None).unwrap());
    let granted = RawValue::new(0u32).unwrap();
    let kids: Vec<_> = (0..3)
        .map(|_| {
            let (sem, granted) = (sem.clone(), granted.clone());
            spawn(move || {
                for i in 0..20_000 {
                    let got = match i % 100 {
                        0 => sem.acquire(true, Some(Duration::from_micros(50))).unwrap(),
                        1 => sem.try_lock().map(std::mem::forget).is_ok(),
                        _ => sem.acquire(false, None).unwrap(),
                    };
                    if got {
                        granted.fetch_add(1);
                    }
                }
            })
        })
        .collect();
    for k in kids {
        join_ok(k);
    }
    assert_eq!(granted.load(), 0, "permits granted by a semaphore at 0");
    assert_eq!(sem.get_value(), 0);
    sem.release_n(2).unwrap();
    assert_eq!(sem.get_value(), 2);
}

/// Two processes on one CPU pass the turn through two Semaphore(0)s (the
/// one-core hand-off, where each acquire yields the core to the releaser): every
/// acquire returns only after the matching release, checked by the turn counter
/// each side writes before it releases, with all three blocking APIs. Every
/// fifth move is late (the mover yields once first), so that the waiter's first
/// hand-off finds no permit and its wait goes on.
#[test]
fn one_cpu_ping_pong_grants_each_permit_once() {
    let (ping, pong) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let turn = RawValue::new(0u32).unwrap();
    const ROUNDS: u32 = 3000;
    let take = |sem: &Semaphore, i: u32| match i % 3 {
        0 => assert!(sem.acquire(true, T).unwrap()),
        1 => std::mem::forget(sem.lock().unwrap()),
        _ => std::mem::forget(sem.try_lock_for(T.unwrap()).unwrap()),
    };
    let (p2, q2, t2) = (ping.clone(), pong.clone(), turn.clone());
    let responder = spawn(move || {
        pin_to_one_cpu();
        for i in 0..ROUNDS {
            take(&p2, i);
            assert_eq!(t2.load(), 2 * i + 1, "acquired before the release");
            late_move(i);
            t2.store(2 * i + 2);
            q2.release().unwrap();
        }
    });
    let (p1, q1, t1) = (ping.clone(), pong.clone(), turn.clone());
    let initiator = spawn(move || {
        pin_to_one_cpu();
        for i in 0..ROUNDS {
            late_move(i);
            t1.store(2 * i + 1);
            p1.release().unwrap();
            take(&q1, i);
            assert_eq!(t1.load(), 2 * i + 2, "acquired before the release");
        }
    });
    join_ok(initiator);
    join_ok(responder);
    assert_eq!((ping.get_value(), pong.get_value()), (0, 0));
}

/// A release in one process wakes a process blocked in acquire.
#[test]
fn release_wakes_a_blocked_process() {
    let sem = Semaphore::new(0).unwrap();
    let waiting = Event::new().unwrap();
    let (s, w) = (sem.clone(), waiting.clone());
    let kid = spawn(move || {
        w.set();
        assert!(s.acquire(true, T).unwrap());
    });
    assert!(waiting.wait(T).unwrap());
    sem.release().unwrap();
    join_ok(kid);
    assert_eq!(sem.get_value(), 0);
}

/// release_n(3) lets three blocked processes through at once.
#[test]
fn release_n_wakes_n_processes() {
    let sem = Semaphore::new(0).unwrap();
    let kids: Vec<_> = (0..3)
        .map(|_| {
            let s = sem.clone();
            spawn(move || assert!(s.acquire(true, T).unwrap()))
        })
        .collect();
    sem.release_n(3).unwrap();
    for k in kids {
        join_ok(k);
    }
    assert_eq!(sem.get_value(), 0);
    assert!(matches!(sem.release_n(0), Err(Error::InvalidArgument(_))));
}

/// Non-blocking and timed acquire return false when no permit comes.
#[test]
fn nonblocking_and_timeout() {
    let sem = Semaphore::new(1).unwrap();
    assert!(sem.acquire(false, None).unwrap());
    assert!(!sem.acquire(false, None).unwrap());
    assert!(!sem.acquire(true, Some(Duration::from_millis(10))).unwrap());
    assert!(matches!(sem.try_lock(), Err(TryLockError::WouldBlock)));
    assert!(matches!(
        sem.try_lock_for(Duration::from_millis(10)),
        Err(TryLockError::WouldBlock)
    ));
    assert!(matches!(
        sem.try_lock_for(Duration::MAX),
        Err(TryLockError::Invalid(Error::TimeoutOverflow(_)))
    ));
    assert!(matches!(
        sem.acquire(true, Some(Duration::MAX)),
        Err(Error::TimeoutOverflow(_))
    ));
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 1);
}

/// Over-releasing a BoundedSemaphore is an error that changes nothing, from any
/// process; an unbounded one may grow past its initial value.
#[test]
fn bounded_over_release_is_an_error() {
    let b = BoundedSemaphore::new(2).unwrap();
    assert!(matches!(
        b.release(),
        Err(Error::OverRelease {
            value: 2,
            n: 1,
            bound: 2
        })
    ));
    assert!(b.acquire(true, T).unwrap());
    let c = b.clone();
    join_ok(spawn(move || {
        assert!(matches!(c.release_n(2), Err(Error::OverRelease { .. })));
        c.release().unwrap();
        assert!(matches!(c.release(), Err(Error::OverRelease { .. })));
    }));
    assert_eq!(b.get_value(), 2);

    let s = Semaphore::new(0).unwrap();
    s.release_n(5).unwrap();
    assert_eq!(s.get_value(), 5);
}

/// Values beyond i32::MAX (POSIX SEM_VALUE_MAX) are refused, at creation and on
/// release.
#[test]
fn value_limit() {
    assert!(matches!(
        Semaphore::new(i32::MAX as u32 + 1),
        Err(Error::SizeOverflow { .. })
    ));
    let s = Semaphore::new(i32::MAX as u32).unwrap();
    let err = s.release().unwrap_err();
    assert!(matches!(
        err,
        Error::SemaphoreFull {
            value: 0x7fff_ffff,
            n: 1,
            max: 0x7fff_ffff
        }
    ));
    // The message talks about releasing, not about sizes.
    let text = err.to_string();
    assert!(text.contains("Semaphore::release"), "{text}");
    assert!(!text.contains("split the data"), "{text}");
    assert_eq!(s.get_value(), i32::MAX as u32);
}

/// A process killed while holding a permit keeps it (as in Python); the others go
/// on with the remaining permits, and a killed sleeper blocks nobody.
#[test]
fn killed_holder_and_killed_waiter_do_not_wedge_it() {
    let sem = Semaphore::new(2).unwrap();
    let holding = Event::new().unwrap();
    let (s, h) = (sem.clone(), holding.clone());
    let holder = spawn(move || {
        let _p = s.lock().unwrap();
        h.set();
        std::thread::sleep(Duration::from_secs(3600));
    });
    assert!(holding.wait(T).unwrap());
    kill(holder);
    assert_eq!(sem.get_value(), 1);

    // A sleeper killed inside acquire.
    assert!(sem.acquire(true, T).unwrap());
    let s = sem.clone();
    let sleeper = spawn(move || {
        s.acquire(true, None).unwrap();
    });
    kill(sleeper);
    // Permits still flow between live processes.
    let s = sem.clone();
    let kid = spawn(move || assert!(s.acquire(true, T).unwrap()));
    sem.release().unwrap();
    join_ok(kid);
    assert_eq!(sem.get_value(), 0);
}
