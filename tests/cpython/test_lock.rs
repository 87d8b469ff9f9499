//! `_TestLock` from CPython's `Lib/test/_test_multiprocessing.py`: Lock and RLock.
//! Python's `locked()` is `is_locked()`; a Python `ValueError`/`AssertionError`
//! from `release` is `Error::NotHeld` (Lock) / `Error::NotOwner` (RLock).

use crate::common::{T, join_ok, spawn};
use multiproc::{Error, Event, Lock, RLock, RawValue};

#[test]
fn test_lock() {
    let lock = Lock::new().unwrap();
    assert!(lock.acquire(true, None).unwrap());
    assert!(lock.is_locked());
    assert!(!lock.acquire(false, None).unwrap());
    lock.release().unwrap();
    assert!(!lock.is_locked());
    assert!(matches!(lock.release(), Err(Error::NotHeld { .. })));
}

/// `_test_lock_locked_2processes`: the child acquires, records `locked()`, sets the
/// event and exits still holding the lock (as the Python target does).
fn locked_in_a_child(acquire: impl FnOnce() -> bool + Send + 'static, locked: impl Fn() -> bool) {
    let event = Event::new().unwrap();
    let res = RawValue::new(0u8).unwrap();
    let (e, r) = (event.clone(), res.clone());
    let p = spawn(move || {
        r.set(acquire() as u8);
        e.set();
    });
    assert!(event.wait(T).unwrap());
    assert!(locked());
    assert_eq!(res.get(), 1);
    join_ok(p);
}

#[test]
fn test_lock_locked_2processes() {
    let lock = Lock::new().unwrap();
    let l = lock.clone();
    locked_in_a_child(
        move || {
            assert!(l.acquire(true, None).unwrap());
            l.is_locked()
        },
        || lock.is_locked(),
    );
}

#[test]
fn test_rlock() {
    let lock = RLock::new().unwrap();
    assert!(lock.acquire(true, None).unwrap());
    assert!(lock.is_locked());
    assert!(lock.acquire(true, None).unwrap());
    assert!(lock.acquire(true, None).unwrap());
    lock.release().unwrap();
    assert!(lock.is_locked());
    lock.release().unwrap();
    lock.release().unwrap();
    assert!(!lock.is_locked());
    assert!(matches!(lock.release(), Err(Error::NotOwner { .. })));
}

#[test]
fn test_rlock_locked_2processes() {
    let rlock = RLock::new().unwrap();
    let r = rlock.clone();
    locked_in_a_child(
        move || {
            assert!(r.acquire(true, None).unwrap());
            r.is_locked()
        },
        || rlock.is_locked(),
    );
}

/// `with self.Lock() as locked: self.assertTrue(locked)`: the guard is Python's
/// `with` block, and it holds the lock.
#[test]
fn test_lock_context() {
    let lock = Lock::new().unwrap();
    {
        let locked = lock.lock().unwrap();
        assert!(locked.lock().is_locked());
    }
    assert!(!lock.is_locked());
}

#[test]
fn test_rlock_context() {
    let rlock = RLock::new().unwrap();
    {
        let _locked = rlock.lock().unwrap();
        assert!(rlock.is_owned());
        assert!(rlock.is_locked());
    }
    assert!(!rlock.is_locked());
}
