//! Safe calls can never give two live `&mut` to the same shared data in one
//! process: each way the review found is refused with a prompt error (never a hang,
//! never an alias). Each test failed (or did not compile to a refusal) before the
//! claim words of `shm::storage` and the RLock pin count.

mod common;

use std::time::Duration;

use common::{BOUND, join_ok, spawn};
use multiproc::{Array, Condition, Error, Event, RLock, RawArray, TryLockError, Value};

fn in_use<T: std::fmt::Debug>(r: multiproc::Result<T>) -> bool {
    matches!(r, Err(Error::InUse { .. }))
}

#[test]
fn releasing_the_lock_under_a_live_guard_is_refused() {
    let v = Value::new(1u32).unwrap();
    let mut g = v.lock().unwrap();
    // Before: release() freed the lock and another thread took a second `&mut`.
    assert!(in_use(v.get_lock().release()));
    assert!(v.get_lock().is_owned());
    std::thread::scope(|s| {
        let other = s.spawn(|| matches!(v.try_lock(), Err(TryLockError::WouldBlock)));
        assert!(other.join().unwrap(), "another thread got the value's lock");
    });
    *g += 1;
    drop(g);
    assert_eq!(v.get().unwrap(), 2);
    // With no guard, the levels are the caller's again.
    assert!(v.get_lock().acquire(true, None).unwrap());
    v.get_lock().release().unwrap();
    assert!(!v.get_lock().is_locked());
}

#[test]
fn a_shared_lock_cannot_be_released_under_another_value_s_guard() {
    let lock = RLock::new().unwrap();
    let a = Value::with_lock(1u8, lock.clone()).unwrap();
    let b = Value::with_lock(2u8, lock.clone()).unwrap();
    let g = a.lock().unwrap();
    assert!(in_use(lock.release()));
    // The other value is readable in this thread (the lock is recursive) ...
    assert_eq!(b.get().unwrap(), 2);
    // ... and not the guarded one: a copy under a live `&mut`.
    assert!(in_use(a.get()));
    drop(g);
    assert_eq!(a.get().unwrap(), 1);
}

#[test]
fn condition_wait_on_a_value_s_lock_under_its_guard_is_refused() {
    let v = Value::new(0u64).unwrap();
    let cond = Condition::with_rlock(v.get_lock().clone()).unwrap();
    let g = v.lock().unwrap();
    // Before: the wait released the lock while the guard lived.
    assert!(in_use(cond.wait(Some(Duration::from_millis(1)))));
    assert!(v.get_lock().is_owned());
    drop(g);
    let _c = cond.lock().unwrap();
    assert!(!cond.wait(Some(Duration::from_millis(1))).unwrap());
}

#[test]
fn a_second_guard_in_one_thread_is_an_error_not_a_hang() {
    let a = Array::<u8>::new(4).unwrap();
    let g = a.lock().unwrap();
    assert!(matches!(
        a.try_lock(),
        Err(TryLockError::Invalid(Error::InUse { .. }))
    ));
    assert!(in_use(a.get(0)));
    assert!(in_use(a.to_vec()));
    drop(g);
    // Holding get_lock() (not a guard) leaves the calls usable, as in CPython.
    let _held = a.get_lock().lock().unwrap();
    a.set(0, 9).unwrap();
    assert_eq!(a.get(0).unwrap(), 9);
    assert_eq!(a.lock().unwrap()[0], 9);
}

#[test]
fn chunks_are_claimed_once_and_exclude_guards_and_copies() {
    for raw in [false, true] {
        let arr = Array::<u32>::new(10).unwrap();
        let rawarr = RawArray::<u32>::new(10).unwrap();
        let split = |n| {
            if raw { rawarr.chunks(n) } else { arr.chunks(n) }
        };
        let chunks = split(3).unwrap();
        // Before: a second split (or one on a clone) gave overlapping `&mut`s.
        assert!(in_use(split(2)));
        if raw {
            assert!(in_use(rawarr.clone().chunks(3)));
            assert!(in_use(rawarr.get(0)));
            assert!(in_use(rawarr.set(0, 1)));
            assert!(in_use(rawarr.to_vec()));
        } else {
            assert!(in_use(arr.clone().chunks(3)));
            assert!(matches!(
                arr.try_lock(),
                Err(TryLockError::Invalid(Error::InUse { .. }))
            ));
            assert!(in_use(arr.get(0)));
            assert!(in_use(arr.set(0, 1)));
            assert!(in_use(arr.to_vec()));
        }
        drop(chunks);
        assert!(split(2).is_ok());
    }
}

#[test]
fn chunks_count_per_process_a_moved_chunk_is_the_child_s() {
    let arr = Array::<u64>::new(6).unwrap();
    let written = Event::new().unwrap();
    let mut chunks = arr.chunks(2).unwrap();
    let mut second = chunks.pop().unwrap();
    let mut first = chunks.pop().unwrap();
    let w = written.clone();
    // `start` drops the parent's copy of the closure, so `second` is the child's.
    let child = spawn(move || {
        second.as_mut_slice().fill(7);
        w.set();
    });
    assert!(written.wait(Some(BOUND)).unwrap());
    // The parent still holds `first`: its guards and copies stay refused.
    assert!(in_use(arr.to_vec()));
    assert!(in_use(arr.chunks(2)));
    first.as_mut_slice().fill(1);
    drop(first);
    join_ok(child);
    assert_eq!(arr.to_vec().unwrap(), vec![1, 1, 1, 7, 7, 7]);
    assert!(arr.chunks(3).is_ok());
}
