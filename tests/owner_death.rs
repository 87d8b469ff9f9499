//! Owner death: a process (or thread) killed while it holds a Lock, an RLock or the
//! lock of a Value or Array never makes another process wait forever. The next
//! acquirer gets the lock with `OwnerDied`, repairs, marks it consistent, and later
//! acquirers get a clean lock.
//!
//! Every victim is killed with SIGKILL only after it has said "I hold it now"
//! through an Event; every wait is bounded by `BOUND` so a bug fails a test instead
//! of hanging it. No test asserts a duration: the detection latency is measured by
//! `examples/owner_death_latency.rs`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{BOUND, join_ok, spawn};
use multiproc::{Array, Error, Event, Lock, Process, RLock, RawValue, TryLockError, Value};

/// What a waiter process saw when it acquired.
const CLEAN: u32 = 1;
const DIED: u32 = 2;
const TIMED_OUT: u32 = 3;

/// Starts a victim that runs `hold` (which takes some lock and must not release
/// it), then sets `held` and waits until it is killed.
fn victim(held: &Event, hold: impl FnOnce() + Send + 'static) -> Process {
    let held = held.clone();
    let never = Event::new().unwrap();
    spawn(move || {
        hold();
        held.set();
        never.wait(Some(BOUND)).unwrap();
        panic!("the victim was not killed in time");
    })
}

/// Waits for the victim to hold its lock, kills it and checks it died of SIGKILL.
fn kill_when_held(mut victim: Process, held: &Event) {
    assert!(
        held.wait(Some(BOUND)).unwrap(),
        "the victim never took the lock"
    );
    victim.kill().unwrap();
    assert_eq!(victim.join(Some(BOUND)).unwrap(), Some(-9));
}

#[test]
fn lock_holder_killed_passes_the_lock_to_a_waiting_process_with_owner_died() {
    let lock = Lock::new().unwrap();
    // The protected data: two words that must be equal between critical sections.
    let data = RawValue::new([0u64; 2]).unwrap();
    let held = Event::new().unwrap();
    let (l, d) = (lock.clone(), data.clone());
    let v = victim(&held, move || {
        std::mem::forget(l.lock().unwrap());
        d.set([1, 0]); // half-way through an update
    });

    // A waiter in another process, blocked on the lock when the holder dies.
    let outcome = RawValue::new(0u32).unwrap();
    let (l, d, o, h) = (lock.clone(), data.clone(), outcome.clone(), held.clone());
    let waiter = spawn(move || {
        assert!(h.wait(Some(BOUND)).unwrap());
        match l.try_lock_for(BOUND) {
            Ok(_) => o.set(CLEAN),
            Err(TryLockError::OwnerDied(died)) => {
                let guard = died.into_inner();
                let [a, _] = d.get();
                d.set([a, a]); // repair
                guard.mark_consistent();
                o.set(DIED);
            }
            Err(_) => o.set(TIMED_OUT),
        }
    });
    kill_when_held(v, &held);
    join_ok(waiter);
    assert_eq!(outcome.get(), DIED);
    assert_eq!(data.get(), [1, 1]);
    assert!(lock.is_consistent());
    // Repaired and marked: later acquirers get a clean lock.
    let g = lock
        .try_lock_for(BOUND)
        .expect("clean after mark_consistent");
    drop(g);
    assert!(!lock.is_locked());
}

#[test]
fn not_marked_consistent_means_every_later_acquirer_is_told_until_someone_marks_it() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let l = lock.clone();
    let v = victim(&held, move || std::mem::forget(l.lock().unwrap()));
    kill_when_held(v, &held);

    // First acquirer (this process) does not repair.
    match lock.try_lock_for(BOUND) {
        Err(TryLockError::OwnerDied(died)) => drop(died.into_inner()),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(!lock.is_locked(), "dropping the guard released the lock");
    assert!(!lock.is_consistent());

    // A later acquirer in another process is told as well, with Python's API:
    // `acquire` says Ok(true) (it holds the lock) and is_consistent says false.
    let outcome = RawValue::new(0u32).unwrap();
    let (l, o) = (lock.clone(), outcome.clone());
    join_ok(spawn(move || {
        match l.acquire(true, Some(BOUND)) {
            Ok(true) if !l.is_consistent() => {
                assert!(l.is_locked());
                o.set(DIED);
            }
            Ok(true) => o.set(CLEAN),
            _ => o.set(TIMED_OUT),
        }
        l.release().unwrap();
    }));
    assert_eq!(outcome.get(), DIED);

    // `?` on the outcome gives Error::OwnerDied and releases, still unrepaired.
    let through_question_mark = || -> multiproc::Result<()> {
        let _g = lock.lock()?;
        Ok(())
    };
    assert!(matches!(through_question_mark(), Err(Error::OwnerDied)));
    assert!(!lock.is_locked());

    // Someone finally repairs: from then on, clean.
    let g = match lock.lock() {
        Err(died) => died.into_inner(),
        Ok(_) => panic!("still inconsistent: expected OwnerDied"),
    };
    g.mark_consistent();
    drop(g);
    let (l, o) = (lock.clone(), outcome.clone());
    join_ok(spawn(move || {
        o.set(match l.try_lock_for(BOUND) {
            Ok(_) => CLEAN,
            Err(TryLockError::OwnerDied(_)) => DIED,
            Err(_) => TIMED_OUT,
        })
    }));
    assert_eq!(outcome.get(), CLEAN);
}

#[test]
fn of_several_waiting_processes_one_repairs_and_the_others_proceed_cleanly() {
    const WAITERS: usize = 3;
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let l = lock.clone();
    let v = victim(&held, move || std::mem::forget(l.lock().unwrap()));
    let died = RawValue::new(0u32).unwrap();
    let acquired = RawValue::new(0u32).unwrap();
    let waiters: Vec<Process> = (0..WAITERS)
        .map(|_| {
            let (l, d, a, h) = (lock.clone(), died.clone(), acquired.clone(), held.clone());
            spawn(move || {
                assert!(h.wait(Some(BOUND)).unwrap());
                let guard = match l.try_lock_for(BOUND) {
                    Ok(g) => g,
                    Err(TryLockError::OwnerDied(dead)) => {
                        let g = dead.into_inner();
                        d.fetch_add(1);
                        g.mark_consistent();
                        g
                    }
                    Err(e) => panic!("waiter did not get the lock: {e}"),
                };
                a.fetch_add(1);
                drop(guard);
            })
        })
        .collect();
    kill_when_held(v, &held);
    for w in waiters {
        join_ok(w);
    }
    assert_eq!(acquired.get(), WAITERS as u32);
    assert_eq!(
        died.get(),
        1,
        "exactly one waiter saw the death and repaired"
    );
}

#[test]
fn rlock_holder_killed_with_nested_levels_passes_it_on_with_one_level() {
    let rlock = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let r = rlock.clone();
    let v = victim(&held, move || {
        for _ in 0..3 {
            std::mem::forget(r.lock().unwrap());
        }
        assert_eq!(r.recursion_count(), 3);
    });
    kill_when_held(v, &held);
    let outcome = RawValue::new(0u32).unwrap();
    let (r, o) = (rlock.clone(), outcome.clone());
    join_ok(spawn(move || match r.try_lock_for(BOUND) {
        Err(TryLockError::OwnerDied(died)) => {
            let g = died.into_inner();
            assert!(r.is_owned());
            assert_eq!(r.recursion_count(), 1);
            g.mark_consistent();
            o.set(DIED);
        }
        Ok(_) => o.set(CLEAN),
        Err(_) => o.set(TIMED_OUT),
    }));
    assert_eq!(outcome.get(), DIED);
    let g = rlock.try_lock_for(BOUND).expect("clean after the repair");
    assert_eq!(rlock.recursion_count(), 1);
    drop(g);
    assert!(!rlock.is_locked());
}

#[test]
fn rlock_owned_by_a_thread_that_exits_holding_it_passes_on_with_owner_died() {
    let rlock = RLock::new().unwrap();
    let r = rlock.clone();
    std::thread::spawn(move || {
        std::mem::forget(r.lock().unwrap());
        std::mem::forget(r.lock().unwrap());
    })
    .join()
    .unwrap();
    assert!(rlock.is_locked());
    assert!(!rlock.is_owned());
    let g = match rlock.try_lock_for(BOUND) {
        Err(TryLockError::OwnerDied(died)) => died.into_inner(),
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    assert!(rlock.is_owned());
    assert_eq!(rlock.recursion_count(), 1);
    g.mark_consistent();
    drop(g);
    assert!(!rlock.is_locked());
    drop(rlock.try_lock().expect("clean after the repair"));
}

#[test]
fn value_lock_holder_killed_mid_update_is_repaired_by_the_next_acquirer() {
    let value = Value::new([0u64; 2]).unwrap();
    let held = Event::new().unwrap();
    let val = value.clone();
    let v = victim(&held, move || {
        let mut g = val.lock().unwrap();
        g[0] += 1; // the update is half done when the process dies
        std::mem::forget(g);
    });
    kill_when_held(v, &held);
    // A bounded wait sees the death first (`Value::get` waits without a timeout, so
    // with the death undetected it would hang the test); released without
    // mark_consistent, the lock stays inconsistent.
    match value.get_lock().try_lock_for(BOUND) {
        Err(TryLockError::OwnerDied(died)) => drop(died.into_inner()),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    // Value::get takes the lock: it reports the death instead of returning torn data.
    assert!(matches!(value.get(), Err(Error::OwnerDied)));
    let outcome = RawValue::new(0u32).unwrap();
    let (val, o) = (value.clone(), outcome.clone());
    join_ok(spawn(move || match val.lock() {
        Err(died) => {
            let mut g = died.into_inner();
            assert_eq!(*g, [1, 0]);
            g[1] = g[0];
            g.mark_consistent();
            o.set(DIED);
        }
        Ok(_) => o.set(CLEAN),
    }));
    assert_eq!(outcome.get(), DIED);
    assert_eq!(value.get().unwrap(), [1, 1]);
    assert!(value.get_lock().is_consistent());
}

#[test]
fn array_lock_holder_killed_mid_update_is_repaired_by_the_next_acquirer() {
    // Large enough that the elements live in a segment of their own, away from
    // the lock.
    let array = Array::<u64>::new(4096).unwrap();
    let held = Event::new().unwrap();
    let arr = array.clone();
    let v = victim(&held, move || {
        let mut g = arr.lock().unwrap();
        g[..100].fill(7);
        std::mem::forget(g);
    });
    kill_when_held(v, &held);
    let g = match array.get_lock().try_lock_for(BOUND) {
        Err(TryLockError::OwnerDied(died)) => died.into_inner(),
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    g.mark_consistent();
    drop(g);
    let mut g = array.lock().expect("clean after the repair");
    assert_eq!(g[99], 7);
    g.fill(7);
    drop(g);
    assert_eq!(array.get(4095).unwrap(), 7);
}

#[test]
fn a_process_killed_while_waiting_for_a_lock_leaves_it_clean() {
    let lock = Lock::new().unwrap();
    let guard = lock.lock().unwrap();
    let about_to_wait = Event::new().unwrap();
    let (l, a) = (lock.clone(), about_to_wait.clone());
    let mut waiter = spawn(move || {
        a.set();
        let _ = l.try_lock_for(BOUND);
    });
    assert!(about_to_wait.wait(Some(BOUND)).unwrap());
    waiter.kill().unwrap();
    assert_eq!(waiter.join(Some(BOUND)).unwrap(), Some(-9));
    drop(guard);
    let l = lock.clone();
    join_ok(spawn(move || {
        let g = l
            .try_lock_for(BOUND)
            .expect("a dead waiter leaves the lock clean");
        drop(g);
    }));
    assert!(lock.is_consistent());
}

#[test]
fn a_process_killed_inside_event_wait_leaves_the_event_working() {
    let event = Event::new().unwrap();
    let about_to_wait = Event::new().unwrap();
    let (e, a) = (event.clone(), about_to_wait.clone());
    let mut doomed = spawn(move || {
        a.set();
        e.wait(Some(BOUND)).unwrap();
    });
    assert!(about_to_wait.wait(Some(BOUND)).unwrap());
    doomed.kill().unwrap();
    assert_eq!(doomed.join(Some(BOUND)).unwrap(), Some(-9));
    let e = event.clone();
    let survivor = spawn(move || assert!(e.wait(Some(BOUND)).unwrap()));
    event.set();
    join_ok(survivor);
    event.clear();
    assert!(
        !event
            .wait(Some(std::time::Duration::from_millis(1)))
            .unwrap()
    );
}

#[test]
fn a_process_polling_with_non_blocking_acquire_gets_a_dead_owner_s_lock() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let l = lock.clone();
    let v = victim(&held, move || std::mem::forget(l.lock().unwrap()));
    kill_when_held(v, &held);
    let outcome = RawValue::new(0u32).unwrap();
    let (l, o) = (lock.clone(), outcome.clone());
    join_ok(spawn(move || {
        // Python's `while not lock.acquire(False): ...`, bounded for the test.
        let until = std::time::Instant::now() + BOUND;
        let got = loop {
            match l.acquire(false, None) {
                Ok(false) if std::time::Instant::now() < until => std::hint::spin_loop(),
                other => break other,
            }
        };
        o.set(match got {
            Ok(false) => return o.set(TIMED_OUT),
            Ok(true) if l.is_consistent() => CLEAN,
            Ok(true) => {
                l.mark_consistent();
                DIED
            }
            Err(e) => panic!("{e}"),
        });
        l.release().unwrap();
    }));
    assert_eq!(outcome.get(), DIED);
    drop(lock.try_lock().expect("clean after the repair"));
}

static STORM_STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Regression: a waiter whose futex sleeps are cut short by signals more often than
/// the owner-check interval (a profiler's SIGPROF, a timer) used to re-sleep
/// without ever checking the owner, and waited forever on a dead one.
#[test]
fn a_waiter_interrupted_by_signals_every_millisecond_still_sees_the_owner_die() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let l = lock.clone();
    let v = victim(&held, move || std::mem::forget(l.lock().unwrap()));
    let storming = Event::new().unwrap();
    let outcome = RawValue::new(0u32).unwrap();
    let (l, o, s, h) = (
        lock.clone(),
        outcome.clone(),
        storming.clone(),
        held.clone(),
    );
    let mut waiter = spawn(move || {
        assert!(h.wait(Some(BOUND)).unwrap());
        // SAFETY: installs a handler that does nothing (async-signal-safe) for
        // SIGUSR1 in this child process only.
        unsafe {
            libc::signal(
                libc::SIGUSR1,
                ignore_signal as *const () as libc::sighandler_t,
            )
        };
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let target = me as usize;
        let storm = std::thread::spawn(move || {
            while !STORM_STOP.load(Ordering::Relaxed) {
                // SAFETY: `target` is this process's waiting thread, alive until
                // STORM_STOP is set and this thread is joined.
                unsafe { libc::pthread_kill(target as libc::pthread_t, libc::SIGUSR1) };
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        s.set();
        // No timeout: before the fix this never returned.
        match l.lock() {
            Err(died) => {
                died.into_inner().mark_consistent();
                o.set(DIED);
            }
            Ok(_) => o.set(CLEAN),
        }
        STORM_STOP.store(true, Ordering::Relaxed);
        storm.join().unwrap();
    });
    assert!(storming.wait(Some(BOUND)).unwrap());
    kill_when_held(v, &held);
    let code = waiter.join(Some(BOUND)).unwrap();
    if code.is_none() {
        let _ = waiter.kill();
        let _ = waiter.join(Some(BOUND));
    }
    assert_eq!(code, Some(0), "the waiter hung on a dead owner");
    assert_eq!(outcome.get(), DIED);
}
