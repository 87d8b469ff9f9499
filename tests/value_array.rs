//! Value, RawValue, Array, RawArray between real processes: locks, atomics, bounds,
//! chunks, sizes.

mod common;

use common::{join_ok, spawn};
use multiproc::{Array, Error, RLock, RawArray, RawValue, Value};

#[test]
fn value_guard_get_set_across_processes() {
    let v = Value::new(0i64).unwrap();
    let kids: Vec<_> = (0..4)
        .map(|_| {
            let v = v.clone();
            spawn(move || {
                for _ in 0..25_000 {
                    *v.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    kids.into_iter().for_each(join_ok);
    assert_eq!(v.get().unwrap(), 100_000);
    v.set(-1).unwrap();
    assert_eq!(*v.lock().unwrap(), -1);
    assert!(!v.get_lock().is_locked());
}

#[test]
fn atomic_ops_across_processes() {
    let v = RawValue::new(0u32).unwrap();
    let raw = RawValue::new(0i16).unwrap();
    let kids: Vec<_> = (0..4)
        .map(|_| {
            let (v, raw) = (v.clone(), raw.clone());
            spawn(move || {
                for _ in 0..10_000 {
                    v.fetch_add(1);
                    raw.fetch_add(-1);
                }
            })
        })
        .collect();
    kids.into_iter().for_each(join_ok);
    assert_eq!(v.load(), 40_000);
    assert_eq!(raw.load(), -(40_000i32 as i16)); // wraps like i16 arithmetic
    assert_eq!(v.compare_exchange(40_000, 1), Ok(40_000));
    assert_eq!(v.compare_exchange(40_000, 2), Err(1));
    v.store(u32::MAX);
    assert_eq!(v.fetch_add(1), u32::MAX);
    assert_eq!(v.load(), 0);
}

#[test]
fn a_compare_exchange_claims_once_across_processes() {
    let winner = RawValue::new(0u32).unwrap();
    let wins = RawValue::new(0u32).unwrap();
    let kids: Vec<_> = (1..=4)
        .map(|id| {
            let (w, n) = (winner.clone(), wins.clone());
            spawn(move || {
                if w.compare_exchange(0, id).is_ok() {
                    n.fetch_add(1);
                }
            })
        })
        .collect();
    kids.into_iter().for_each(join_ok);
    assert_eq!(wins.load(), 1);
    assert!((1..=4).contains(&winner.load()));
}

#[test]
fn shared_lock_between_values() {
    let lock = RLock::new().unwrap();
    let a = Value::with_lock(1u8, lock.clone()).unwrap();
    let b = Value::with_lock(2u8, lock.clone()).unwrap();
    let g = a.lock().unwrap();
    assert!(b.get_lock().is_locked());
    // Another thread cannot take it (this one could: the lock is recursive).
    std::thread::scope(|t| {
        assert!(t.spawn(|| b.get_lock().try_lock().is_err()).join().unwrap());
    });
    drop(g);
    assert_eq!(b.get().unwrap(), 2);
}

#[test]
fn array_bounds_and_sizes() {
    let a = Array::<i32>::new(3).unwrap();
    assert_eq!(a.len(), 3);
    assert!(matches!(
        a.get(3),
        Err(Error::IndexOutOfRange { index: 3, len: 3 })
    ));
    assert!(matches!(
        a.set(usize::MAX, 1),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        Array::<u64>::new(usize::MAX),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        RawArray::<u64>::new(usize::MAX / 4),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(a.chunks(0), Err(Error::ZeroSize { .. })));
    // Zero-length arrays exist, as in Python.
    let empty = Array::<f64>::new(0).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.to_vec().unwrap(), Vec::<f64>::new());
    assert!(empty.get(0).is_err());
}

#[test]
fn large_array_shared_with_children() {
    // 1 MiB of u64: lives in a segment of its own, not in the arena.
    let n = 1 << 17;
    let a = Array::<u64>::new(n).unwrap();
    let b = a.clone();
    join_ok(spawn(move || {
        let mut g = b.lock().unwrap();
        for (i, x) in g.iter_mut().enumerate() {
            *x = i as u64;
        }
    }));
    let v = a.to_vec().unwrap();
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
}

#[test]
fn disjoint_chunks_written_by_processes_without_a_lock() {
    for len in [0usize, 1, 7, 999, 1000, 5000] {
        let a = RawArray::<u32>::new(len).unwrap();
        let chunks = a.chunks(3).unwrap();
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), len);
        let kids: Vec<_> = chunks
            .into_iter()
            .map(|mut c| {
                spawn(move || {
                    let start = c.start();
                    for (i, x) in c.as_mut_slice().iter_mut().enumerate() {
                        *x = (start + i) as u32 * 3;
                    }
                })
            })
            .collect();
        kids.into_iter().for_each(join_ok);
        let expected: Vec<u32> = (0..len as u32).map(|i| i * 3).collect();
        assert_eq!(a.to_vec().unwrap(), expected, "length {len}");
    }
}

#[test]
fn array_locked_updates_from_processes() {
    let a = Array::from_slice(&[0u16; 5]).unwrap();
    let kids: Vec<_> = (0..3)
        .map(|_| {
            let a = a.clone();
            spawn(move || {
                for i in 0..a.len() {
                    a.lock().unwrap()[i] += 1;
                }
            })
        })
        .collect();
    kids.into_iter().for_each(join_ok);
    assert_eq!(a.to_vec().unwrap(), vec![3; 5]);
}

#[test]
fn structs_of_plain_data() {
    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Point {
        x: f32,
        y: f32,
    }
    let p = Value::new(Point { x: 1.0, y: 2.0 }).unwrap();
    let q = p.clone();
    join_ok(spawn(move || q.lock().unwrap().y = 5.0));
    assert_eq!(p.get().unwrap(), Point { x: 1.0, y: 5.0 });
}
