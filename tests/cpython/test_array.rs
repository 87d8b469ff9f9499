//! `_TestArray`: `Array` and `RawArray` of `'i'` (i32) read, sliced, assigned and
//! prefix-summed by a child process; zeroed from a size; `get_lock`.

use multiproc::{Array, Process, RLock, RawArray, RawValue, TryLockError};

use crate::common::{BOUND, join_ok, spawn};

const SEQ: [i32; 10] = [680, 626, 934, 821, 150, 233, 548, 982, 714, 831];

/// CPython's `f`: `for i in range(1, len(seq)): seq[i] += seq[i-1]`.
fn f(seq: &mut [i32]) {
    for i in 1..seq.len() {
        seq[i] += seq[i - 1];
    }
}

fn run_daemon(f: impl FnOnce() + Send + 'static) {
    let mut p = Process::new(f).daemon(true);
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
}

#[test]
fn test_array() {
    let mut seq = SEQ.to_vec();
    let arr = Array::from_slice(&seq).unwrap();

    assert_eq!(arr.len(), seq.len());
    assert_eq!(arr.get(3).unwrap(), seq[3]);
    assert_eq!(arr.to_vec().unwrap()[2..7], seq[2..7]);

    // arr[4:8] = seq[4:8] = array.array('i', [1, 2, 3, 4])
    arr.lock().unwrap()[4..8].copy_from_slice(&[1, 2, 3, 4]);
    seq[4..8].copy_from_slice(&[1, 2, 3, 4]);

    assert_eq!(arr.to_vec().unwrap(), seq);

    f(&mut seq);

    // The child runs f on the shared array, item by item as CPython's
    // synchronized wrapper does (each access takes the lock).
    let a = arr.clone();
    run_daemon(move || {
        for i in 1..a.len() {
            let sum = a.get(i).unwrap() + a.get(i - 1).unwrap();
            a.set(i, sum).unwrap();
        }
    });

    assert_eq!(arr.to_vec().unwrap(), seq);
}

#[test]
fn test_array_from_size() {
    let size = 10;
    // Zeroed each time, even when earlier (non-zero) memory is reused (CPython
    // issue #11675).
    for _ in 0..3 {
        let arr = Array::<i32>::new(size).unwrap();
        assert_eq!(arr.len(), size);
        assert_eq!(arr.to_vec().unwrap(), vec![0; size]);
        let range: Vec<i32> = (0..10).collect();
        arr.lock().unwrap().copy_from_slice(&range);
        assert_eq!(arr.to_vec().unwrap(), range);
        drop(arr);
    }
}

#[test]
fn test_rawarray() {
    let mut seq = SEQ.to_vec();
    let arr = RawArray::from_slice(&seq).unwrap();

    assert_eq!(arr.len(), seq.len());
    assert_eq!(arr.get(3).unwrap(), seq[3]);
    assert_eq!(arr.to_vec().unwrap()[2..7], seq[2..7]);

    for (i, v) in (4..8).zip([1, 2, 3, 4]) {
        arr.set(i, v).unwrap();
    }
    seq[4..8].copy_from_slice(&[1, 2, 3, 4]);

    assert_eq!(arr.to_vec().unwrap(), seq);

    f(&mut seq);

    let a = arr.clone();
    run_daemon(move || {
        for i in 1..a.len() {
            let sum = a.get(i).unwrap() + a.get(i - 1).unwrap();
            a.set(i, sum).unwrap();
        }
    });

    assert_eq!(arr.to_vec().unwrap(), seq);
}

/// Whether `lock` is held by another process (a child tries it: an `RLock` is
/// reentrant in the thread that holds it).
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
fn test_getobj_getlock_obj() {
    let range: Vec<i32> = (0..10).collect();

    // arr1 = Array('i', list(range(10))): its own lock; get_obj is the guard.
    let arr1 = Array::from_slice(&range).unwrap();
    let lock1 = arr1.get_lock();
    let obj1 = arr1.lock().unwrap();
    assert_eq!(&obj1[..], &range[..]);
    drop(obj1);
    {
        let _held = lock1.lock().unwrap();
        assert!(held_elsewhere(arr1.get_lock()));
    }

    // arr2 = Array(..., lock=None): the same as the default.
    let arr2 = Array::from_slice(&range).unwrap();
    assert_eq!(arr2.to_vec().unwrap(), range);
    assert!(!held_elsewhere(arr2.get_lock()));

    // arr3 = Array(..., lock=lock): get_lock() is that lock.
    let lock = RLock::new().unwrap();
    let arr3 = Array::with_lock(range.len(), lock.clone()).unwrap();
    arr3.lock().unwrap().copy_from_slice(&range);
    let lock3 = arr3.get_lock();
    {
        let _held = lock.lock().unwrap();
        assert!(held_elsewhere(lock3), "lock3 is the lock given");
    }
    {
        let _held = lock3.lock().unwrap();
        assert!(held_elsewhere(&lock), "and the other way round");
    }
    assert!(!held_elsewhere(&lock));

    // arr4 (lock=False) and arr5 = RawArray('i', range(10)) have no get_lock or
    // get_obj: RawArray has neither method (checked by the compiler);
    // lock='notalock' is a type error. What is left to run: a RawArray works.
    let arr5 = RawArray::from_slice(&range).unwrap();
    assert_eq!(arr5.to_vec().unwrap(), range);
}
