//! Micro-benchmarks of the primitives' hot paths (one process, no contention):
//! `cargo bench --bench primitives`. The comparisons with other implementations and
//! between processes are in `multiproc bench`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc::{
    BoundedSemaphore, Condition, Event, Lock, Queue, RLock, RawValue, Semaphore, Value,
};

fn lock(c: &mut Criterion) {
    let lock = Lock::new().unwrap();
    c.bench_function("Lock uncontended lock+unlock", |b| {
        b.iter(|| drop(black_box(&lock).lock()))
    });
    c.bench_function("Lock acquire(timeout)+release", |b| {
        b.iter(|| {
            black_box(&lock)
                .acquire(true, Some(std::time::Duration::from_secs(10)))
                .unwrap();
            black_box(&lock).release().unwrap();
        })
    });
    c.bench_function("Lock try_lock+unlock", |b| {
        b.iter(|| drop(black_box(&lock).try_lock()))
    });
    let mutex = std::sync::Mutex::new(());
    c.bench_function("std Mutex lock+unlock (reference)", |b| {
        b.iter(|| drop(black_box(&mutex).lock()))
    });
}

fn rlock(c: &mut Criterion) {
    let rlock = RLock::new().unwrap();
    c.bench_function("RLock uncontended lock+unlock", |b| {
        b.iter(|| drop(black_box(&rlock).lock()))
    });
    let _outer = rlock.lock().unwrap();
    c.bench_function("RLock recursion: inner lock+unlock", |b| {
        b.iter(|| drop(black_box(&rlock).lock()))
    });
}

fn event(c: &mut Criterion) {
    let event = Event::new().unwrap();
    c.bench_function("Event set (no waiter)", |b| {
        b.iter(|| black_box(&event).set())
    });
    c.bench_function("Event wait (already set)", |b| {
        b.iter(|| black_box(&event).wait(None).unwrap())
    });
    c.bench_function("Event set+clear", |b| {
        b.iter(|| {
            black_box(&event).set();
            black_box(&event).clear();
        })
    });
}

fn semaphore(c: &mut Criterion) {
    let sem = Semaphore::new(1).unwrap();
    c.bench_function("Semaphore acquire+release (permit free)", |b| {
        b.iter(|| {
            black_box(&sem).acquire(true, None).unwrap();
            black_box(&sem).release().unwrap();
        })
    });
    let timeout = Some(std::time::Duration::from_secs(10));
    c.bench_function("Semaphore acquire(timeout)+release (permit free)", |b| {
        b.iter(|| {
            black_box(&sem).acquire(true, timeout).unwrap();
            black_box(&sem).release().unwrap();
        })
    });
    let bounded = BoundedSemaphore::new(1).unwrap();
    c.bench_function("BoundedSemaphore acquire+release", |b| {
        b.iter(|| {
            black_box(&bounded).acquire(true, None).unwrap();
            black_box(&bounded).release().unwrap();
        })
    });
}

fn condition(c: &mut Criterion) {
    let cond = Condition::new().unwrap();
    let _held = cond.lock().unwrap();
    c.bench_function("Condition notify, no waiter (lock held)", |b| {
        b.iter(|| black_box(&cond).notify(1).unwrap())
    });
    c.bench_function("Condition notify_all, no waiter (lock held)", |b| {
        b.iter(|| black_box(&cond).notify_all().unwrap())
    });
}

fn value(c: &mut Criterion) {
    let v = Value::<u64>::new(0).unwrap();
    let atomic = RawValue::<u64>::new(0).unwrap();
    c.bench_function("RawValue fetch_add", |b| {
        b.iter(|| black_box(&atomic).fetch_add(1))
    });
    c.bench_function("Value locked increment", |b| {
        b.iter(|| *black_box(&v).lock().unwrap() += 1)
    });
    let r = RawValue::<u64>::new(0).unwrap();
    c.bench_function("RawValue fetch_add", |b| {
        b.iter(|| black_box(&r).fetch_add(1))
    });
}

fn queue(c: &mut Criterion) {
    let q = Queue::<[u8; 8]>::new().unwrap();
    c.bench_function("Queue put+get, 8 B typed (one process)", |b| {
        b.iter(|| {
            black_box(&q).put(&[7; 8], None).unwrap();
            black_box(black_box(&q).get(None).unwrap());
        })
    });
    let raw = Queue::<()>::new().unwrap();
    let msg = vec![7u8; 4096];
    let mut out = Vec::with_capacity(4096);
    c.bench_function("Queue put_bytes+get_bytes_into, 4 KiB (one process)", |b| {
        b.iter(|| {
            black_box(&raw).put_bytes(&msg, None).unwrap();
            black_box(&raw).get_bytes_into(&mut out, None).unwrap();
        })
    });
    let batch = [[7u8; 8]; 64];
    c.bench_function("Queue put_many+get_many, 64 x 8 B (one process)", |b| {
        b.iter(|| {
            black_box(&q).put_many(&batch, None).unwrap();
            black_box(black_box(&q).get_many(64, None).unwrap());
        })
    });
}

criterion_group!(
    benches, lock, rlock, semaphore, event, condition, value, queue
);
criterion_main!(benches);
