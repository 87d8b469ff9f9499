//! `_TestValue`: `Value` and `RawValue` of each of CPython's codes, set by a child
//! process; `get_lock` of a default and of a given lock.

use multiproc::{Process, RLock, RawValue, TryLockError, Value};

use crate::common::{BOUND, join_ok, spawn};

// CPython's `codes_values`: ('i', 4343, 24234), ('d', 3.625, -4.25),
// ('h', -232, 234), ('q', 2 ** 33, 2 ** 34), ('c', b'x', b'y').
const I: (i32, i32) = (4343, 24234);
const D: (f64, f64) = (3.625, -4.25);
const H: (i16, i16) = (-232, 234);
const Q: (i64, i64) = (1 << 33, 1 << 34);
const C: (u8, u8) = (b'x', b'y');

/// Starts a daemon child running `f` and joins it (CPython's
/// `proc.daemon = True; proc.start(); proc.join()`), bounded.
fn run_daemon(f: impl FnOnce() + Send + 'static) {
    let mut p = Process::new(f).daemon(true);
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
}

#[test]
fn test_value() {
    let (i, d, h, q, c) = (
        Value::new(I.0).unwrap(),
        Value::new(D.0).unwrap(),
        Value::new(H.0).unwrap(),
        Value::new(Q.0).unwrap(),
        Value::new(C.0).unwrap(),
    );
    assert_eq!(i.get().unwrap(), I.0);
    assert_eq!(d.get().unwrap(), D.0);
    assert_eq!(h.get().unwrap(), H.0);
    assert_eq!(q.get().unwrap(), Q.0);
    assert_eq!(c.get().unwrap(), C.0);

    let (ci, cd, ch, cq, cc) = (i.clone(), d.clone(), h.clone(), q.clone(), c.clone());
    run_daemon(move || {
        ci.set(I.1).unwrap();
        cd.set(D.1).unwrap();
        ch.set(H.1).unwrap();
        cq.set(Q.1).unwrap();
        cc.set(C.1).unwrap();
    });

    assert_eq!(i.get().unwrap(), I.1);
    assert_eq!(d.get().unwrap(), D.1);
    assert_eq!(h.get().unwrap(), H.1);
    assert_eq!(q.get().unwrap(), Q.1);
    assert_eq!(c.get().unwrap(), C.1);
}

#[test]
fn test_rawvalue() {
    let (i, d, h, q, c) = (
        RawValue::new(I.0).unwrap(),
        RawValue::new(D.0).unwrap(),
        RawValue::new(H.0).unwrap(),
        RawValue::new(Q.0).unwrap(),
        RawValue::new(C.0).unwrap(),
    );
    assert_eq!(i.get(), I.0);
    assert_eq!(d.get(), D.0);
    assert_eq!(h.get(), H.0);
    assert_eq!(q.get(), Q.0);
    assert_eq!(c.get(), C.0);

    let (ci, cd, ch, cq, cc) = (i.clone(), d.clone(), h.clone(), q.clone(), c.clone());
    run_daemon(move || {
        ci.set(I.1);
        cd.set(D.1);
        ch.set(H.1);
        cq.set(Q.1);
        cc.set(C.1);
    });

    assert_eq!(i.get(), I.1);
    assert_eq!(d.get(), D.1);
    assert_eq!(h.get(), H.1);
    assert_eq!(q.get(), Q.1);
    assert_eq!(c.get(), C.1);
}

/// Whether `lock` is held by another process while this child runs: a child tries
/// it (an `RLock` is reentrant in the thread that holds it, so the check must come
/// from elsewhere).
fn held_elsewhere(lock: &RLock) -> bool {
    let busy = RawValue::new(0u32).unwrap();
    let (l, b) = (lock.clone(), busy.clone());
    join_ok(spawn(move || {
        if matches!(l.try_lock(), Err(TryLockError::WouldBlock)) {
            b.set(1);
        }
    }));
    busy.get() == 1
}

#[test]
fn test_getobj_getlock() {
    // val1 = Value('i', 5): a lock of its own; get_obj is the guard.
    let val1 = Value::new(5i32).unwrap();
    let lock1 = val1.get_lock();
    let obj1 = val1.lock().unwrap();
    assert_eq!(*obj1, 5);
    drop(obj1);
    {
        let _held = lock1.lock().unwrap();
        assert!(held_elsewhere(val1.get_lock()));
    }

    // val2 = Value('i', 5, lock=None): the same as the default.
    let val2 = Value::new(5i32).unwrap();
    assert_eq!(*val2.lock().unwrap(), 5);
    assert!(!held_elsewhere(val2.get_lock()));

    // val3 = Value('i', 5, lock=lock): get_lock() is that lock.
    let lock = RLock::new().unwrap();
    let val3 = Value::with_lock(5i32, lock.clone()).unwrap();
    let lock3 = val3.get_lock();
    assert_eq!(*val3.lock().unwrap(), 5);
    {
        let _held = lock.lock().unwrap();
        assert!(held_elsewhere(lock3), "lock3 is the lock given");
    }
    {
        let _held = lock3.lock().unwrap();
        assert!(held_elsewhere(&lock), "and the other way round");
    }
    assert!(!held_elsewhere(&lock));

    // arr4 = Value('i', 5, lock=False) and arr5 = RawValue('i', 5) have no
    // get_lock/get_obj: RawValue has neither method (checked by the compiler);
    // lock='navalue' is a type error. What is left to run: a RawValue works.
    let arr5 = RawValue::new(5i32).unwrap();
    assert_eq!(arr5.get(), 5);
}
