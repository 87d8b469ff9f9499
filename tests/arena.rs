//! The shared arena: many small objects without many descriptors or mappings.

mod common;

use common::{join_ok, spawn};
use multiproc::{Lock, Value};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The arena's chunks this process maps, from `/proc/self/maps` (each chunk is one
/// mapping of a memfd named after it).
fn chunk_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:multiproc-arena chunk"))
        .count()
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn a_hundred_thousand_locks_and_values_in_one_process() {
    let (fds, maps) = (open_fds(), mappings());
    let locks: Vec<Lock> = (0..100_000).map(|_| Lock::new().unwrap()).collect();
    let values: Vec<Value<u64>> = (0..100_000).map(|i| Value::new(i).unwrap()).collect();
    // Every one works, and is distinct from the others.
    for (i, (l, v)) in locks.iter().zip(&values).enumerate() {
        let g = l.lock().unwrap();
        *v.lock().unwrap() += 1;
        assert!(l.is_locked());
        drop(g);
        assert_eq!(v.get().unwrap(), i as u64 + 1);
    }
    assert!(locks.iter().all(|l| !l.is_locked()));
    let chunks = chunk_count();
    assert!(chunks <= 16, "{chunks} arena chunks for 200,000 objects");
    assert!(
        open_fds() - fds <= 16,
        "descriptors grew by {}",
        open_fds() - fds
    );
    assert!(
        mappings() - maps <= 16,
        "mappings grew by {}",
        mappings() - maps
    );
    // A child sees and uses the same objects.
    let (l, v) = (locks[99_999].clone(), values[99_999].clone());
    join_ok(spawn(move || {
        let _g = l.lock().unwrap();
        *v.lock().unwrap() += 1;
    }));
    assert_eq!(values[99_999].get().unwrap(), 100_001);
}

#[test]
fn freed_blocks_are_reused() {
    let before = chunk_count();
    for _ in 0..10 {
        let batch: Vec<Lock> = (0..50_000).map(|_| Lock::new().unwrap()).collect();
        drop(batch);
    }
    // 500,000 creations, but at most 50,000 alive at once.
    assert!(
        chunk_count() <= before + 3,
        "arena grew to {} chunks",
        chunk_count()
    );
}

#[test]
fn a_block_stays_alive_while_a_child_holds_a_handle() {
    let v = Value::new(7u32).unwrap();
    let in_child = v.clone();
    let go = multiproc::Event::new().unwrap();
    let g = go.clone();
    let child = spawn(move || {
        g.wait(Some(common::BOUND)).unwrap();
        assert_eq!(
            in_child.get().unwrap(),
            7,
            "the block was reused while the child used it"
        );
    });
    drop(v);
    // New allocations must not reuse the child's block.
    let others: Vec<Value<u32>> = (0..1000).map(|_| Value::new(99).unwrap()).collect();
    go.set();
    join_ok(child);
    drop(others);
}

/// A block comes back zeroed when it is reused: 100 Events set and 100 Locks left
/// held by a child are freed, and the next 100 of each, which reuse their blocks,
/// start clear and unlocked.
#[test]
fn a_reused_block_starts_zeroed_after_a_child_wrote_it() {
    let events: Vec<multiproc::Event> =
        (0..100).map(|_| multiproc::Event::new().unwrap()).collect();
    let locks: Vec<Lock> = (0..100).map(|_| Lock::new().unwrap()).collect();
    let (e, l) = (events.clone(), locks.clone());
    join_ok(spawn(move || {
        e.iter().for_each(|e| e.set());
        l.iter().for_each(|l| std::mem::forget(l.lock().unwrap()));
        drop((e, l));
    }));
    assert!(events.iter().all(|e| e.is_set()));
    assert!(locks.iter().all(|l| l.is_locked()));
    let chunks = chunk_count();
    drop((events, locks));
    let events: Vec<multiproc::Event> =
        (0..100).map(|_| multiproc::Event::new().unwrap()).collect();
    let locks: Vec<Lock> = (0..100).map(|_| Lock::new().unwrap()).collect();
    assert_eq!(chunk_count(), chunks, "the freed blocks were reused");
    assert!(events.iter().all(|e| !e.is_set()), "a new Event starts set");
    assert!(
        locks.iter().all(|l| !l.is_locked()),
        "a new Lock starts locked"
    );
}

/// A Value moved into a child and not kept by the parent: `start` drops the
/// parent's copy, yet the block stays the child's. The parent then allocates many
/// blocks of the same size; none of them is the child's (the child's value stays
/// intact, and the child's writes land in no parent object).
#[test]
fn a_value_moved_into_a_child_and_dropped_by_the_parent_stays_the_child_s() {
    let go = multiproc::Event::new().unwrap();
    let done = multiproc::Event::new().unwrap();
    let (g, d) = (go.clone(), done.clone());
    let mine = Value::new(0xC0FFEEu64).unwrap();
    let child = spawn(move || {
        assert!(g.wait(Some(common::BOUND)).unwrap());
        assert_eq!(
            mine.get().unwrap(),
            0xC0FFEE,
            "the child's block was reused by the parent"
        );
        mine.set(1).unwrap();
        d.set();
    });
    // The only parent handle was in the closure, dropped by `start`.
    let others: Vec<Value<u64>> = (0..2000).map(|_| Value::new(99).unwrap()).collect();
    go.set();
    assert!(done.wait(Some(common::BOUND)).unwrap(), "the child failed");
    join_ok(child);
    assert!(
        others.iter().all(|v| v.get().unwrap() == 99),
        "a parent object shares the child's block"
    );
}
