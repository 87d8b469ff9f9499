//! The tutorial's scenarios under spawn and forkserver, with real children that
//! are fresh images of this test binary: every shared object reaches them as a
//! token (`multiproc::token`) in their serde arguments, with its descriptors over
//! the child's private socket. And death is handled as with fork: a SIGKILLed
//! spawned child holding a Lock gives the next acquirer `OwnerDied`, a killed
//! Barrier party breaks the Barrier.

mod common;

use common::{BOUND, T, join_all_ok};
use multiproc::{
    Barrier, Condition, Error, Event, Lock, Process, Queue, RawValue, Semaphore, StartMethod,
    Value, get_context,
};

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Forkserver];

fn start<A>(method: StartMethod, f: fn(A), args: A) -> Process
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut p = get_context(method).process(f, args);
    p.start().expect("start");
    p
}

/// Every thread of `pid` is asleep (a spawned test child has libtest's main
/// thread besides the test's: `until_asleep` looks at the first only).
fn until_all_asleep(pid: u32) {
    common::poll_until("every thread of the child asleep", || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.filter_map(|t| t.ok()).all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('S'))
                })
                .unwrap_or(false)
        })
    });
}

fn value_incr((v, n): (Value<i64>, u32)) {
    for _ in 0..n {
        *v.lock().unwrap() += 1;
    }
}

fn lock_incr((lock, c, n): (Lock, RawValue<i64>, u32)) {
    for _ in 0..n {
        let _g = lock.lock().unwrap();
        c.set(c.get() + 1);
    }
}

#[test]
fn counters_under_a_value_lock_and_a_separate_lock() {
    multiproc::spawn::init();
    for method in METHODS {
        let v = Value::new(0i64).unwrap();
        let kids = (0..3)
            .map(|_| start(method, value_incr, (v.clone(), 2000)))
            .collect();
        join_all_ok(kids);
        assert_eq!(v.get().unwrap(), 6000, "{method}: Value counter");
        let (lock, c) = (Lock::new().unwrap(), RawValue::new(0i64).unwrap());
        let kids = (0..2)
            .map(|_| start(method, lock_incr, (lock.clone(), c.clone(), 5000)))
            .collect();
        // The parent's own copies may go: the children hold the objects.
        drop(lock);
        join_all_ok(kids);
        assert_eq!(c.get(), 10_000, "{method}: Lock counter");
    }
}

fn event_waiter((go, done): (Event, Event)) {
    assert!(go.wait(Some(BOUND)).unwrap(), "go never came");
    done.set();
}

#[test]
fn an_event_wakes_a_spawned_waiter() {
    multiproc::spawn::init();
    for method in METHODS {
        let (go, done) = (Event::new().unwrap(), Event::new().unwrap());
        let p = start(method, event_waiter, (go.clone(), done.clone()));
        assert!(!done.is_set());
        go.set();
        assert!(
            done.wait(Some(BOUND)).unwrap(),
            "{method}: the waiter never answered"
        );
        join_all_ok(vec![p]);
    }
}

fn sem_worker((sem, inside, max): (Semaphore, Value<u32>, Value<u32>)) {
    for _ in 0..200 {
        let _g = sem.lock().unwrap();
        let now = {
            let mut i = inside.lock().unwrap();
            *i += 1;
            *i
        };
        {
            let mut m = max.lock().unwrap();
            *m = (*m).max(now);
        }
        *inside.lock().unwrap() -= 1;
    }
}

#[test]
fn a_semaphore_admits_at_most_its_value() {
    multiproc::spawn::init();
    for method in METHODS {
        let sem = Semaphore::new(2).unwrap();
        let (inside, max) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
        let kids = (0..4)
            .map(|_| {
                start(
                    method,
                    sem_worker,
                    (sem.clone(), inside.clone(), max.clone()),
                )
            })
            .collect();
        join_all_ok(kids);
        assert!(
            (1..=2).contains(&max.get().unwrap()),
            "{method}: {} inside at once",
            max.get().unwrap()
        );
        assert_eq!(inside.get().unwrap(), 0);
        assert_eq!(sem.get_value(), 2);
    }
}

fn producer((cond, count, n): (Condition, RawValue<u32>, u32)) {
    for _ in 0..n {
        let _g = cond.lock().unwrap();
        count.set(count.get() + 1);
        cond.notify(1).unwrap();
    }
}

fn consumer((cond, count, total, seen): (Condition, RawValue<u32>, u32, RawValue<u32>)) {
    let _g = cond.lock().unwrap();
    assert!(
        cond.wait_for(|| count.get() == total, T).unwrap(),
        "not all items came"
    );
    seen.set(count.get());
}

#[test]
fn a_condition_carries_producer_consumer() {
    multiproc::spawn::init();
    for method in METHODS {
        let cond = Condition::new().unwrap();
        let (count, seen) = (RawValue::new(0u32).unwrap(), RawValue::new(0u32).unwrap());
        let c = start(
            method,
            consumer,
            (cond.clone(), count.clone(), 10, seen.clone()),
        );
        let p = start(method, producer, (cond.clone(), count.clone(), 10));
        join_all_ok(vec![p, c]);
        assert_eq!(seen.get(), 10, "{method}");
    }
}

fn barrier_party((b, arrived, n): (Barrier, Value<u32>, u32)) {
    for round in 0..n {
        *arrived.lock().unwrap() += 1;
        b.wait(T).unwrap();
        // Everyone of this round arrived before anyone passed.
        assert!(arrived.get().unwrap() >= (round + 1) * 3);
        b.wait(T).unwrap();
    }
}

#[test]
fn a_barrier_lets_parties_pass_only_together() {
    multiproc::spawn::init();
    for method in METHODS {
        let b = Barrier::new(3).unwrap();
        let arrived = Value::new(0u32).unwrap();
        let kids = (0..3)
            .map(|_| start(method, barrier_party, (b.clone(), arrived.clone(), 20)))
            .collect();
        join_all_ok(kids);
        assert_eq!(arrived.get().unwrap(), 60, "{method}");
    }
}

/// (producer, sequence number), or `None`: that producer is done.
type Msgs = Queue<Option<(u32, u32)>>;

fn produce((q, id, n): (Msgs, u32, u32)) {
    for seq in 0..n {
        q.put(&Some((id, seq)), T).unwrap();
    }
    q.put(&None, T).unwrap();
}

fn consume((q, producers, got, ordered): (Msgs, u32, RawValue<u32>, RawValue<u32>)) {
    let mut next = vec![0u32; producers as usize];
    let mut ends = 0;
    let mut in_order = true;
    while ends < producers {
        match q.get(T).unwrap() {
            None => ends += 1,
            Some((id, seq)) => {
                in_order &= next[id as usize] == seq;
                next[id as usize] = seq + 1;
                got.set(got.get() + 1);
            }
        }
    }
    ordered.set(u32::from(in_order));
}

#[test]
fn a_queue_carries_producers_to_a_consumer() {
    multiproc::spawn::init();
    for method in METHODS {
        let q = Queue::new().unwrap();
        let (got, ordered) = (RawValue::new(0u32).unwrap(), RawValue::new(0u32).unwrap());
        let c = start(
            method,
            consume,
            (q.clone(), 2, got.clone(), ordered.clone()),
        );
        let ps: Vec<Process> = (0..2)
            .map(|id| start(method, produce, (q.clone(), id, 2000)))
            .collect();
        drop(q);
        let mut kids = ps;
        kids.push(c);
        join_all_ok(kids);
        assert_eq!(got.get(), 4000, "{method}");
        assert_eq!(
            ordered.get(),
            1,
            "{method}: each producer's messages in order"
        );
    }
}

fn hold_and_hang((lock, held): (Lock, Event)) {
    let _g = lock.lock().unwrap();
    held.set();
    Event::new().unwrap().wait(Some(BOUND)).unwrap();
}

#[test]
fn a_killed_spawned_lock_holder_gives_owner_died() {
    multiproc::spawn::init();
    let before = common::dev_shm();
    for method in METHODS {
        let (lock, held) = (Lock::new().unwrap(), Event::new().unwrap());
        let p = start(method, hold_and_hang, (lock.clone(), held.clone()));
        assert!(held.wait(Some(BOUND)).unwrap(), "{method}: never held");
        common::kill(p);
        match lock.lock() {
            Err(died) => drop(died.into_inner()),
            Ok(_) => panic!("{method}: a dead holder's lock came without OwnerDied"),
        }
    }
    assert_eq!(common::dev_shm(), before, "nothing new in /dev/shm");
}

fn wait_at_barrier((b, about): (Barrier, Event)) {
    about.set();
    let _ = b.wait(Some(BOUND));
}

#[test]
fn a_killed_spawned_barrier_party_breaks_the_barrier() {
    multiproc::spawn::init();
    for method in METHODS {
        let (b, about) = (Barrier::new(3).unwrap(), Event::new().unwrap());
        let p = start(method, wait_at_barrier, (b.clone(), about.clone()));
        assert!(about.wait(Some(BOUND)).unwrap());
        until_all_asleep(p.pid().unwrap());
        common::kill(p);
        match b.wait(Some(BOUND)) {
            Err(Error::BrokenBarrier(why)) => assert_eq!(why, "a party died", "{method}"),
            other => panic!("{method}: {other:?}"),
        }
    }
}
