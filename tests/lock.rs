//! Lock and RLock between real processes: exclusion, Python's acquire/release,
//! timeouts, ownership rules, recursion.

mod common;

use std::time::Duration;

use common::{BOUND, T, join_ok, pin_to_one_cpu, spawn};
use multiproc::{Error, Event, Lock, RLock, RawValue, TryLockError};

/// A deliberately non-atomic read-modify-write: without exclusion, increments are lost.
fn bump(v: &RawValue<u64>) {
    let x = v.get();
    std::hint::black_box(&x);
    v.set(x + 1);
}

#[test]
fn lock_excludes_four_processes() {
    let lock = Lock::new().unwrap();
    let counter = RawValue::new(0u64).unwrap();
    let kids: Vec<_> = (0..4)
        .map(|_| {
            let (l, c) = (lock.clone(), counter.clone());
            spawn(move || {
                for _ in 0..50_000 {
                    let _g = l.lock().unwrap();
                    bump(&c);
                }
            })
        })
        .collect();
    kids.into_iter().for_each(join_ok);
    assert_eq!(counter.get(), 200_000);
    assert!(!lock.is_locked());
}

/// Three processes on one CPU share a Lock and an RLock, and every tenth holder
/// yields the core inside (so the others find the lock held: the contended wait
/// confined to one CPU, which yields instead of spinning): no increment is lost,
/// through `lock`, `acquire` and `RLock::lock`.
#[test]
fn one_cpu_contention_excludes() {
    let (lock, rlock) = (Lock::new().unwrap(), RLock::new().unwrap());
    let counter = RawValue::new(0u64).unwrap();
    let rcounter = RawValue::new(0u64).unwrap();
    const EACH: u64 = 6000;
    let kids: Vec<_> = (0..3)
        .map(|_| {
            let (lock, rlock) = (lock.clone(), rlock.clone());
            let (c, r) = (counter.clone(), rcounter.clone());
            spawn(move || {
                pin_to_one_cpu();
                for i in 0..EACH {
                    let inside = || {
                        bump(&c);
                        if i % 10 == 0 {
                            std::thread::yield_now();
                        }
                        bump(&c);
                    };
                    match i % 3 {
                        0 => {
                            let _g = lock.lock().unwrap();
                            inside();
                        }
                        1 => {
                            assert!(lock.acquire(true, T).unwrap());
                            inside();
                            lock.release().unwrap();
                        }
                        _ => {
                            let _g = lock.lock().unwrap();
                            let _r = rlock.lock().unwrap();
                            inside();
                        }
                    }
                }
                // The RLock's own contended wait: it alone guards `r`.
                for i in 0..EACH {
                    let _r = rlock.lock().unwrap();
                    bump(&r);
                    if i % 10 == 0 {
                        std::thread::yield_now();
                    }
                    bump(&r);
                }
            })
        })
        .collect();
    for k in kids {
        join_ok(k);
    }
    assert_eq!(counter.get(), 3 * 2 * EACH);
    assert_eq!(rcounter.get(), 3 * 2 * EACH);
}

#[test]
fn rlock_excludes_processes_and_nests() {
    let lock = RLock::new().unwrap();
    let counter = RawValue::new(0u64).unwrap();
    let kids: Vec<_> = (0..3)
        .map(|_| {
            let (l, c) = (lock.clone(), counter.clone());
            spawn(move || {
                for _ in 0..20_000 {
                    let _a = l.lock().unwrap();
                    let _b = l.lock().unwrap();
                    assert_eq!(l.recursion_count(), 2);
                    bump(&c);
                }
            })
        })
        .collect();
    kids.into_iter().for_each(join_ok);
    assert_eq!(counter.get(), 60_000);
}

#[test]
fn python_acquire_release_and_timeouts() {
    let lock = Lock::new().unwrap();
    assert!(lock.acquire(true, None).unwrap());
    assert!(lock.is_locked());
    assert!(!lock.acquire(false, None).unwrap());
    assert!(!lock.acquire(true, Some(Duration::from_millis(10))).unwrap());
    assert!(!lock.acquire(true, Some(Duration::ZERO)).unwrap());
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    assert!(matches!(
        lock.try_lock_for(Duration::from_millis(5)),
        Err(TryLockError::WouldBlock)
    ));
    assert!(matches!(
        lock.acquire(true, Some(Duration::MAX)),
        Err(Error::TimeoutOverflow(_))
    ));
    assert!(matches!(
        lock.try_lock_for(Duration::MAX),
        Err(TryLockError::Invalid(Error::TimeoutOverflow(_)))
    ));
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(Error::NotHeld { .. })));
    assert!(lock.is_consistent());
}

#[test]
fn a_lock_held_by_a_child_times_out_then_is_released_by_another_process() {
    // Python allows any process to release a Lock: the first child takes it and stays
    // alive, the parent's timed acquire fails, a second child releases it.
    let lock = Lock::new().unwrap();
    let (held, finish) = (Event::new().unwrap(), Event::new().unwrap());
    let (l, h, f) = (lock.clone(), held.clone(), finish.clone());
    let holder = spawn(move || {
        assert!(l.acquire(true, Some(BOUND)).unwrap());
        h.set();
        assert!(f.wait(Some(BOUND)).unwrap());
    });
    assert!(held.wait(Some(BOUND)).unwrap());
    assert!(!lock.acquire(true, Some(Duration::from_millis(30))).unwrap());
    let l = lock.clone();
    join_ok(spawn(move || l.release().unwrap()));
    assert!(
        lock.acquire(true, Some(BOUND)).unwrap(),
        "released by another process: clean"
    );
    finish.set();
    join_ok(holder);
    lock.release().unwrap();
}

#[test]
fn a_lock_left_held_by_an_exited_process_passes_on_with_owner_died() {
    let lock = Lock::new().unwrap();
    let l = lock.clone();
    join_ok(spawn(move || std::mem::forget(l.lock().unwrap())));
    // Taken (Ok(true): `?` cannot leak it), and the death is told by is_consistent.
    assert!(lock.acquire(true, Some(BOUND)).unwrap());
    assert!(lock.is_locked());
    assert!(!lock.is_consistent());
    lock.mark_consistent();
    lock.release().unwrap();
    assert!(lock.acquire(true, Some(BOUND)).unwrap());
}

#[test]
fn a_waiter_blocked_in_another_process_gets_the_lock_when_released() {
    let lock = Lock::new().unwrap();
    let guard = lock.lock().unwrap();
    let waiting = Event::new().unwrap();
    let got = RawValue::new(0u32).unwrap();
    let (l, w, g) = (lock.clone(), waiting.clone(), got.clone());
    let child = spawn(move || {
        w.set();
        assert!(l.acquire(true, Some(BOUND)).unwrap());
        g.set(1);
        l.release().unwrap();
    });
    assert!(waiting.wait(Some(BOUND)).unwrap());
    assert_eq!(got.get(), 0, "the child got a lock the parent holds");
    drop(guard);
    join_ok(child);
    assert_eq!(got.get(), 1);
}

#[test]
fn rlock_ownership_rules() {
    let rlock = RLock::new().unwrap();
    assert!(matches!(rlock.release(), Err(Error::NotOwner { .. })));
    assert!(rlock.acquire(true, None).unwrap());
    assert!(rlock.acquire(false, None).unwrap());
    assert_eq!(rlock.recursion_count(), 2);
    // Another thread of this process does not own it and cannot release it.
    let r = rlock.clone();
    std::thread::spawn(move || {
        assert!(matches!(r.release(), Err(Error::NotOwner { .. })));
        assert!(!r.acquire(true, Some(Duration::from_millis(5))).unwrap());
        assert_eq!(r.recursion_count(), 0);
    })
    .join()
    .unwrap();
    // Another process neither.
    let r = rlock.clone();
    join_ok(spawn(move || {
        assert!(matches!(r.release(), Err(Error::NotOwner { .. })));
        assert!(!r.acquire(false, None).unwrap());
    }));
    rlock.release().unwrap();
    assert!(rlock.is_locked());
    rlock.release().unwrap();
    assert!(!rlock.is_locked());
    assert!(matches!(rlock.release(), Err(Error::NotOwner { .. })));
}

#[test]
fn many_handles_one_lock() {
    let a = Lock::new().unwrap();
    let b = a.clone();
    let _g = a.lock().unwrap();
    assert!(b.is_locked());
    assert!(b.try_lock().is_err());
}

/// Error messages name what was asked (the call) and what went wrong.
#[test]
fn error_messages_name_what_was_asked() {
    let text = |e: Error| e.to_string();
    let lock = Lock::new().unwrap();
    let m = text(lock.release().unwrap_err());
    assert!(m.contains("Lock::release") && m.contains("not held"), "{m}");
    assert!(m.contains("never acquired"), "{m}");

    let cond = multiproc::Condition::new().unwrap();
    let m = text(cond.release().unwrap_err());
    assert!(m.contains("Condition::release"), "{m}");
    let m = text(cond.wait_for(|| true, None).unwrap_err());
    assert!(m.contains("Condition::wait_for"), "{m}");
    let m = text(cond.wait(None).unwrap_err());
    assert!(m.contains("Condition::wait:"), "{m}");
    let m = text(cond.notify(1).unwrap_err());
    assert!(m.contains("Condition::notify"), "{m}");

    let sem = multiproc::Semaphore::new(multiproc::sync::semaphore::VALUE_MAX).unwrap();
    let m = text(sem.release().unwrap_err());
    assert!(
        m.contains("release") && !m.contains("split the data"),
        "{m}"
    );
    let bounded = multiproc::BoundedSemaphore::new(1).unwrap();
    let m = text(bounded.release().unwrap_err());
    assert!(m.contains("released too many times"), "{m}");

    let rlock = RLock::new().unwrap();
    let m = text(rlock.release().unwrap_err());
    assert!(m.contains("RLock::release"), "{m}");
}
