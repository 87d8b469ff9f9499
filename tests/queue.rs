//! Queue with real processes: every method, the timeouts, order per producer,
//! messages larger than the ring, Disconnected on drop, on close and on death, the
//! fork hand-over of roles, and SIGKILLs inside `put` and `get` (no hang, no half
//! message, nothing new in /dev/shm).
//!
//! Every wait is bounded; nothing sleeps to synchronize: children say where they
//! are through shared counters, Events or the queue itself.

mod common;

#[allow(dead_code)]
#[path = "../examples/10_queue_producers_consumers.rs"]
mod demo;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{BOUND, T, join_all_ok, join_ok, poll_until, spawn};
use multiproc::shm::clean;
use multiproc::{Error, Event, Process, Queue, RawValue, SimpleQueue};

/// Longer than any other wait in a test: only the mechanism under test (a death
/// noticed, a disconnection) can end a wait this long in time.
const LONG: Option<Duration> = Some(Duration::from_secs(4 * BOUND.as_secs()));

fn nothing_new_in_dev_shm(before: &[String], pids: &HashSet<u32>) {
    let ours: Vec<String> = clean::scan()
        .unwrap()
        .into_iter()
        .filter(|s| pids.contains(&s.creator_pid) && !before.contains(&s.name))
        .map(|s| s.name)
        .collect();
    assert_eq!(ours, Vec::<String>::new());
}

fn names_before() -> Vec<String> {
    clean::scan().unwrap().into_iter().map(|s| s.name).collect()
}

#[test]
fn every_method_in_one_process() {
    let q = Queue::<u64>::with_maxsize(3).unwrap();
    assert_eq!(q.maxsize(), 3);
    assert!(q.empty() && !q.full());
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    q.put(&1, None).unwrap();
    q.put_nowait(&2).unwrap();
    q.put(&3, T).unwrap();
    assert_eq!(q.qsize(), 3);
    assert!(q.full());
    assert!(matches!(q.put_nowait(&4), Err(Error::Full)));
    assert_eq!(q.get(None).unwrap(), 1);
    assert_eq!(q.get_nowait().unwrap(), 2);
    assert_eq!(q.get_many(10, T).unwrap(), vec![3]);
    assert!(q.empty());
    q.put_many(&[10, 11, 12], T).unwrap();
    assert_eq!(q.get_many(2, T).unwrap(), vec![10, 11]);
    assert_eq!(q.get(T).unwrap(), 12);
    assert_eq!(q.get_many(0, T).unwrap(), Vec::<u64>::new());

    let raw = Queue::<Vec<u8>>::new().unwrap();
    raw.put_bytes(b"hello", None).unwrap();
    raw.put_bytes_nowait(b"").unwrap();
    raw.put(&vec![1, 2, 3], None).unwrap();
    assert_eq!(raw.get_bytes(T).unwrap(), b"hello");
    let mut buf = vec![9; 100];
    assert_eq!(raw.get_bytes_into(&mut buf, T).unwrap(), 0);
    assert!(buf.is_empty());
    assert_eq!(raw.get(T).unwrap(), vec![1, 2, 3]);
    assert!(matches!(raw.get_bytes_nowait(), Err(Error::Empty)));

    let h = q.clone();
    h.close();
    assert!(h.is_closed() && !q.is_closed());
    assert!(matches!(h.put(&1, None), Err(Error::Closed(_))));
    assert!(matches!(h.get(T), Err(Error::Closed(_))));
    h.close(); // twice: nothing more
    q.put(&5, None).unwrap();
    assert_eq!(q.get(T).unwrap(), 5);
}

#[test]
fn typed_messages_cross_processes_both_ways() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Job {
        id: u32,
        name: String,
        data: Vec<f64>,
    }
    let jobs = Queue::<Job>::new().unwrap();
    let done = Queue::<(u32, f64)>::new().unwrap();
    let (rx, tx) = (jobs.receiver(), done.sender());
    let p = spawn(move || {
        loop {
            match rx.get(LONG) {
                Ok(job) => tx.put(&(job.id, job.data.iter().sum()), None).unwrap(),
                Err(Error::Disconnected(_)) => return,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let tx = jobs.sender();
    drop(jobs); // only `tx` produces now
    for id in 0..50 {
        let job = Job {
            id,
            name: format!("job {id}"),
            data: vec![id as f64; id as usize],
        };
        tx.put(&job, None).unwrap();
    }
    for id in 0..50 {
        assert_eq!(done.get(T).unwrap(), (id, (id * id) as f64));
    }
    drop(tx); // the child sees Disconnected and exits
    join_ok(p);
}

#[test]
fn timeouts_end_waits_that_nothing_ends() {
    let q = Queue::<u8>::with_maxsize(1).unwrap();
    let start = Instant::now();
    let e = q.get(Some(Duration::from_millis(50))).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                what: "Queue.get",
                ..
            }
        ),
        "{e}"
    );
    assert!(start.elapsed() >= Duration::from_millis(50));
    q.put(&1, None).unwrap();
    let start = Instant::now();
    let e = q.put(&2, Some(Duration::from_millis(50))).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                what: "Queue.put",
                ..
            }
        ),
        "{e}"
    );
    assert!(start.elapsed() >= Duration::from_millis(50));
    // A child holding the consumer lock while it waits: another get times out on
    // the lock.
    let q2 = Queue::<u8>::new().unwrap();
    let c = q2.clone();
    let asleep = Event::new().unwrap();
    let a = asleep.clone();
    let p = spawn(move || {
        a.set();
        assert_eq!(c.get(LONG).unwrap(), 7);
    });
    assert!(asleep.wait(T).unwrap());
    common::until_asleep(p.pid().unwrap());
    assert!(matches!(
        q2.get(Some(Duration::from_millis(30))),
        Err(Error::Timeout { .. })
    ));
    q2.put(&7, None).unwrap();
    join_ok(p);
}

/// A message's value: producer, sequence number, and a checksum of both.
fn msg(producer: u64, seq: u64) -> [u64; 3] {
    [
        producer,
        seq,
        (producer * 1_000_003) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    ]
}

fn check(m: &[u64; 3]) -> bool {
    *m == msg(m[0], m[1])
}

#[test]
fn four_producers_two_consumers_every_message_once_in_order_per_producer() {
    const PRODUCERS: u64 = 4;
    const PER: u64 = 20_000;
    let q = Queue::<[u64; 3]>::with_maxsize(64).unwrap();
    let counts = multiproc::RawArray::<u64>::new(4).unwrap(); // per consumer: count, sum
    let mut kids = Vec::new();
    for c in 0..2usize {
        let (rx, counts) = (q.receiver(), counts.clone());
        kids.push(spawn(move || {
            let mut last: HashMap<u64, u64> = HashMap::new();
            let (mut n, mut sum) = (0u64, 0u64);
            loop {
                match rx.get_many(16, LONG) {
                    Ok(batch) => {
                        for m in batch {
                            assert!(check(&m), "torn message {m:?}");
                            if let Some(&prev) = last.get(&m[0]) {
                                assert!(m[1] > prev, "producer {} out of order", m[0]);
                            }
                            last.insert(m[0], m[1]);
                            n += 1;
                            sum = sum.wrapping_add(m[0] * PER + m[1]);
                        }
                    }
                    Err(Error::Disconnected(_)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            counts.set(2 * c, n).unwrap();
            counts.set(2 * c + 1, sum).unwrap();
        }));
    }
    for p in 0..PRODUCERS {
        let tx = q.sender();
        kids.push(spawn(move || {
            for s in 0..PER {
                if s % 2 == 0 {
                    tx.put(&msg(p, s), None).unwrap();
                } else {
                    tx.put_many(&[msg(p, s)], None).unwrap();
                }
            }
        }));
    }
    drop(q); // producers' and consumers' handles are the children's now
    join_all_ok(kids);
    let v = counts.to_vec().unwrap();
    let total = PRODUCERS * PER;
    assert_eq!(v[0] + v[2], total, "every message received once");
    let expect = (0..total).fold(0u64, |a, x| a.wrapping_add(x));
    assert_eq!(v[1].wrapping_add(v[3]), expect);
}

#[test]
fn messages_larger_than_the_ring_arrive_whole() {
    let q = Queue::<Vec<u8>>::with_bounds(0, 256).unwrap();
    let tx1 = q.sender();
    let tx2 = q.sender();
    let big = |k: u8, n: usize| {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(k))
            .collect::<Vec<u8>>()
    };
    let a = spawn(move || {
        for n in [1000, 200_000, 7, 4096] {
            tx1.put(&big(3, n), None).unwrap();
        }
    });
    let b = spawn(move || {
        for n in [300_000, 1, 10_000] {
            tx2.put_bytes(&big(5, n), None).unwrap();
        }
    });
    let mut seen = Vec::new();
    for _ in 0..7 {
        let bytes = q.get_bytes(T).unwrap();
        seen.push(bytes);
    }
    join_all_ok(vec![a, b]);
    // Typed ones are postcard's encoding of a Vec<u8>: a length prefix then the bytes.
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for s in seen {
        if let Ok(v) = postcard::from_bytes::<Vec<u8>>(&s) {
            if v == big(3, v.len()) && [1000, 200_000, 7, 4096].contains(&v.len()) {
                from_a.push(v.len());
                continue;
            }
        }
        assert_eq!(
            s,
            big(5, s.len()),
            "a message of {} bytes is not whole",
            s.len()
        );
        from_b.push(s.len());
    }
    assert_eq!(from_a, [1000, 200_000, 7, 4096]);
    assert_eq!(from_b, [300_000, 1, 10_000]);
    assert!(q.empty());
}

#[test]
fn get_is_disconnected_when_the_last_producer_drops_or_closes() {
    let q = Queue::<u8>::new().unwrap();
    let rx = q.receiver();
    let tx = q.sender();
    let started = Event::new().unwrap();
    let s = started.clone();
    let p = spawn(move || {
        s.set();
        assert_eq!(rx.get(LONG).unwrap(), 1);
        match rx.get(LONG) {
            Err(Error::Disconnected(_)) => {}
            other => panic!("expected Disconnected, got {other:?}"),
        }
    });
    assert!(started.wait(T).unwrap());
    drop(q);
    tx.put(&1, None).unwrap();
    // The child now waits in get (or is about to): the close wakes it.
    tx.close();
    join_ok(p);
}

#[test]
fn put_is_disconnected_when_every_consumer_is_gone() {
    let q = Queue::<u8>::with_maxsize(1).unwrap();
    let tx = q.sender();
    let rx = q.receiver();
    drop(q);
    let p = spawn(move || {
        tx.put(&1, None).unwrap();
        match tx.put(&2, LONG) {
            Err(Error::Disconnected(_)) => {}
            other => panic!("expected Disconnected, got {other:?}"),
        }
    });
    poll_until("the first message", || rx.qsize() == 1);
    drop(rx);
    join_ok(p);
    // Dropped (not dead) consumers are noticed at once, even with room.
    let q = Queue::<u8>::new().unwrap();
    let tx = q.sender();
    drop(q);
    assert!(matches!(tx.put_nowait(&1), Err(Error::Disconnected(_))));
    assert!(matches!(tx.put(&1, None), Err(Error::Disconnected(_))));
}

#[test]
fn a_dead_producer_disconnects_and_a_dead_consumer_too() {
    let before = names_before();
    let mut pids = HashSet::from([std::process::id()]);
    // A producer killed while it holds a Sender and does nothing.
    let q = Queue::<u8>::new().unwrap();
    let (tx, rx) = (q.sender(), q.receiver());
    drop(q);
    let ready = Event::new().unwrap();
    let r = ready.clone();
    let never = Event::new().unwrap();
    let n = never.clone();
    let p = spawn(move || {
        tx.put(&9, None).unwrap();
        r.set();
        n.wait(LONG).unwrap();
    });
    pids.insert(p.pid().unwrap());
    assert!(ready.wait(T).unwrap());
    common::kill(p);
    assert_eq!(rx.get(T).unwrap(), 9, "its message stays");
    let start = Instant::now();
    assert!(matches!(rx.get(LONG), Err(Error::Disconnected(_))));
    assert!(start.elapsed() < BOUND);

    // A consumer killed while it waits in get: a put that must wait says so.
    let q = Queue::<u8>::with_maxsize(1).unwrap();
    let (tx, rx) = (q.sender(), q.receiver());
    drop(q);
    let ready = Event::new().unwrap();
    let r = ready.clone();
    let p = spawn(move || {
        r.set();
        let _ = rx.get(LONG);
        panic!("no message comes");
    });
    pids.insert(p.pid().unwrap());
    assert!(ready.wait(T).unwrap());
    common::kill(p);
    tx.put(&1, None).unwrap(); // room: succeeds
    assert!(matches!(tx.put(&2, LONG), Err(Error::Disconnected(_))));
    nothing_new_in_dev_shm(&before, &pids);
}

#[test]
fn a_child_that_did_not_capture_a_sender_does_not_hold_it() {
    let q = Queue::<u8>::new().unwrap();
    let tx = q.sender(); // held by the parent, not captured by the child
    let rx = q.receiver();
    drop(q);
    let p = spawn(move || match rx.get(LONG) {
        Err(Error::Disconnected(_)) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    });
    drop(tx);
    join_ok(p);
}

#[test]
fn a_sender_handed_to_a_child_keeps_counting_until_the_child_is_done() {
    let q = Queue::<u32>::new().unwrap();
    let rx = q.receiver();
    let tx = q.sender();
    drop(q);
    let go = Event::new().unwrap();
    let g = go.clone();
    // The parent's only producer handle moves into the child: the hand-over must
    // not look like the last producer leaving.
    let p = spawn(move || {
        assert!(g.wait(LONG).unwrap());
        tx.put(&3, None).unwrap();
    });
    assert!(matches!(
        rx.get(Some(Duration::from_millis(30))),
        Err(Error::Timeout { .. })
    ));
    go.set();
    assert_eq!(rx.get(T).unwrap(), 3);
    join_ok(p);
    assert!(matches!(rx.get(LONG), Err(Error::Disconnected(_))));
}

/// The producer under fire: puts checked messages of every size (some larger than
/// the ring) until killed, counting the puts that returned.
fn hammer(tx: multiproc::Sender<Vec<u64>>, done: RawValue<u64>, id: u64) {
    let mut seq = 0u64;
    loop {
        let len = [1usize, 3, 40, 700, 5][seq as usize % 5];
        let mut v: Vec<u64> = (0..len as u64).map(|i| id << 48 | seq << 16 | i).collect();
        let sum = v
            .iter()
            .fold(0u64, |a, x| a.wrapping_add(x.wrapping_mul(31)));
        v.push(sum);
        tx.put(&v, LONG).unwrap();
        done.fetch_add(1);
        seq += 1;
    }
}

fn whole(v: &[u64]) -> bool {
    let (body, sum) = v.split_at(v.len() - 1);
    !body.is_empty()
        && body
            .iter()
            .fold(0u64, |a, x| a.wrapping_add(x.wrapping_mul(31)))
            == sum[0]
        && body.iter().enumerate().all(|(i, x)| x & 0xffff == i as u64)
}

#[test]
fn producers_killed_inside_put_leave_no_half_message() {
    const KILLS: u64 = 30;
    let before = names_before();
    let mut pids = HashSet::from([std::process::id()]);
    // 2 KiB of ring: the 700-word messages go in pieces.
    let q = Queue::<Vec<u64>>::with_bounds(0, 2048).unwrap();
    let rx = q.receiver();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut rng = 0x1234_5678u64;
    for k in 0..KILLS {
        let done = RawValue::<u64>::new(0).unwrap();
        let (tx, d) = (q.sender(), done.clone());
        let mut p = Process::new(move || hammer(tx, d, k));
        p.start().unwrap();
        pids.insert(p.pid().unwrap());
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = 1 + rng % 20;
        // Drain while it works; kill it at a random count of puts.
        let deadline = Instant::now() + BOUND;
        while done.get() < target {
            assert!(Instant::now() < deadline, "the producer made no progress");
            if let Ok(v) = rx.get_nowait() {
                assert!(whole(&v), "a half or torn message: {} words", v.len());
                assert!(
                    seen.insert((v[0] >> 48, v[0] >> 16 & 0xffff_ffff)),
                    "a duplicate"
                );
            }
        }
        p.kill().unwrap();
        assert_eq!(p.join(Some(BOUND)).unwrap(), Some(-9));
        let put = done.get();
        // Everything it put is there, whole; nothing of the one it was putting.
        loop {
            match rx.get(Some(Duration::from_millis(1))) {
                Ok(v) => {
                    assert!(whole(&v), "a half or torn message: {} words", v.len());
                    assert!(seen.insert((v[0] >> 48, v[0] >> 16 & 0xffff_ffff)));
                }
                Err(Error::Timeout { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let mine = seen.iter().filter(|(id, _)| *id == k).count() as u64;
        assert!(
            mine == put || mine == put + 1,
            "producer {k}: {put} puts returned, {mine} messages arrived"
        );
    }
    // Still usable.
    q.put(&vec![7, 7 * 31], None).unwrap();
    assert_eq!(rx.get(T).unwrap(), vec![7, 7 * 31]);
    nothing_new_in_dev_shm(&before, &pids);
}

#[test]
fn consumers_killed_inside_get_lose_at_most_the_message_they_took() {
    const KILLS: u64 = 30;
    const LOG: usize = 1 << 20;
    let before = names_before();
    let mut pids = HashSet::from([std::process::id()]);
    // 2 KiB of ring: the 300-word messages go in pieces.
    let q = Queue::<Vec<u64>>::with_bounds(0, 2048).unwrap();
    let tx = q.sender();
    let finish = Event::new().unwrap();
    let put = RawValue::<u64>::new(0).unwrap();
    let (f, n) = (finish.clone(), put.clone());
    // Puts until the kills are over (so no consumer sees Disconnected or runs dry).
    let mut producer = spawn(move || {
        let mut s = 0u64;
        while !f.is_set() {
            let len = [1usize, 2, 300, 9][s as usize % 4];
            let mut v: Vec<u64> = (0..len as u64).map(|i| 1 << 48 | s << 16 | i).collect();
            let sum = v
                .iter()
                .fold(0u64, |a, x| a.wrapping_add(x.wrapping_mul(31)));
            v.push(sum);
            tx.put(&v, LONG).unwrap();
            s += 1;
            n.set(s);
        }
    });
    pids.insert(producer.pid().unwrap());
    let mut rng = 0x8765_4321u64;
    let mut received: HashSet<u64> = HashSet::new();
    for _ in 0..KILLS {
        // The consumer logs each message it received in shared memory.
        let log = multiproc::RawArray::<u64>::new(LOG + 1).unwrap();
        let (rx, l) = (q.receiver(), log.clone());
        let mut p = Process::new(move || {
            let mut n = 0usize;
            loop {
                let v = rx.get(LONG).unwrap();
                assert!(whole(&v), "a half message");
                l.set(1 + n, v[0] >> 16 & 0xffff_ffff).unwrap();
                n += 1;
                l.set(0, n as u64).unwrap();
            }
        });
        p.start().unwrap();
        pids.insert(p.pid().unwrap());
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = 1 + rng % 100;
        poll_until("the consumer's progress", || log.get(0).unwrap() >= target);
        p.kill().unwrap();
        assert_eq!(p.join(Some(BOUND)).unwrap(), Some(-9));
        let n = log.get(0).unwrap() as usize;
        for i in 0..n {
            let seq = log.get(1 + i).unwrap();
            assert!(received.insert(seq), "received twice: {seq}");
        }
    }
    finish.set();
    // The parent takes the rest: all whole, none twice, in order.
    let mut last = None;
    loop {
        match q.get(Some(Duration::from_millis(200))) {
            Ok(v) => {
                assert!(whole(&v), "a half message after a consumer's death");
                let seq = v[0] >> 16 & 0xffff_ffff;
                assert!(last < Some(seq), "out of order");
                last = Some(seq);
                assert!(received.insert(seq), "received twice: {seq}");
            }
            Err(Error::Timeout { .. }) if producer_done(&mut producer) => break,
            Err(Error::Timeout { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    join_ok(producer);
    let lost = put.get() - received.len() as u64;
    assert!(lost <= KILLS, "{lost} messages lost in {KILLS} kills");
    q.put(&vec![1, 31], T).unwrap();
    assert_eq!(q.get(T).unwrap(), vec![1, 31]);
    nothing_new_in_dev_shm(&before, &pids);
}

fn producer_done(p: &mut Process) -> bool {
    !p.is_alive()
}

#[test]
fn simple_queue_between_processes() {
    let q = SimpleQueue::<String>::new().unwrap();
    let back = SimpleQueue::<usize>::new().unwrap();
    let (c, b) = (q.clone(), back.clone());
    let p = spawn(move || {
        for _ in 0..3 {
            let s = c.get().unwrap();
            b.put(&s.len()).unwrap();
        }
    });
    for s in ["a", "bb", "ccc"] {
        q.put(&s.to_string()).unwrap();
    }
    assert_eq!(
        [
            back.get().unwrap(),
            back.get().unwrap(),
            back.get().unwrap()
        ],
        [1, 2, 3]
    );
    join_ok(p);
    assert!(q.empty());
    q.close();
    assert!(matches!(q.put(&"x".into()), Err(Error::Closed(_))));
}

#[test]
fn the_demo_scenario_delivers_every_message_once_in_order() {
    assert!(demo::run().unwrap());
}

#[test]
fn a_lock_holder_killed_while_it_waits_passes_both_locks_on() {
    let before = names_before();
    let mut pids = HashSet::from([std::process::id()]);
    // A consumer asleep in get (empty queue) holds the consumer lock.
    let q = Queue::<u32>::new().unwrap();
    let (c, about) = (q.clone(), Event::new().unwrap());
    let a = about.clone();
    let consumer = spawn(move || {
        a.set();
        let _ = c.get(LONG);
        panic!("nothing should come");
    });
    assert!(about.wait(T).unwrap());
    common::until_asleep(consumer.pid().unwrap());
    pids.insert(consumer.pid().unwrap());
    common::kill(consumer);
    q.put(&1, T).unwrap();
    assert_eq!(q.get(T).unwrap(), 1, "the consumer lock passed on");

    // A producer asleep in put (full queue) holds the producer lock.
    let q = Queue::<u32>::with_maxsize(1).unwrap();
    q.put(&1, T).unwrap();
    let (p, about) = (q.clone(), Event::new().unwrap());
    let a = about.clone();
    let producer = spawn(move || {
        a.set();
        let _ = p.put(&2, LONG);
        panic!("no room should come");
    });
    assert!(about.wait(T).unwrap());
    common::until_asleep(producer.pid().unwrap());
    pids.insert(producer.pid().unwrap());
    common::kill(producer);
    assert_eq!(q.get(T).unwrap(), 1);
    q.put(&3, T).unwrap();
    assert_eq!(
        q.get(T).unwrap(),
        3,
        "the producer lock passed on; 2 was never put"
    );
    assert!(q.empty());
    nothing_new_in_dev_shm(&before, &pids);
}

#[test]
fn handles_are_shared_between_threads() {
    let q = Queue::<u64>::with_maxsize(8).unwrap();
    let total: u64 = std::thread::scope(|s| {
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut sum = 0;
                    loop {
                        match q.get(T).unwrap() {
                            0 => return sum,
                            n => sum += n,
                        }
                    }
                })
            })
            .collect();
        for n in 1..=1000 {
            q.put(&n, T).unwrap();
        }
        q.put_many(&[0, 0], T).unwrap();
        consumers.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(total, 500_500);
}

#[test]
fn children_forked_from_several_threads_at_once_all_start() {
    // Each fork's handshake pipe is open in the parent while other threads fork:
    // their children inherit its writing end. A child must not wait for that end
    // to close: here every child stays alive until all have reported in, so a
    // child waiting for a sibling's exit would never report.
    let q = Queue::<u32>::new().unwrap();
    let rx = q.receiver();
    let done = Event::new().unwrap();
    let kids: Vec<Process> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let (q, done) = (&q, &done);
                s.spawn(move || {
                    (0..10u32)
                        .map(|i| {
                            let (tx, d) = (q.sender(), done.clone());
                            spawn(move || {
                                tx.put(&(t * 10 + i), T).unwrap();
                                assert!(d.wait(LONG).unwrap());
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let got: Result<Vec<u32>, _> = (0..40).map(|_| rx.get(T)).collect();
    done.set();
    join_all_ok(kids);
    let mut got = got.expect("every child reports in");
    got.sort_unstable();
    assert_eq!(got, (0..40).collect::<Vec<_>>());
}

/// Typed gets of small messages take them through a buffer on the stack, and of
/// anything else the general way: here both kinds interleave, with messages of a
/// few bytes between messages carried in pieces of 16 bytes (each piece smaller
/// than that stack buffer, so only the frame kind tells them apart), and every
/// message must arrive whole, in order, and once.
#[test]
fn typed_gets_of_small_and_pieced_messages_interleaved_arrive_whole() {
    let q = Queue::<Vec<u8>>::with_bounds(0, 64).unwrap();
    let tx = q.sender();
    let sizes = [3usize, 100, 0, 500, 7, 129, 40, 1, 2000, 5];
    let msg = |i: usize, n: usize| (0..n).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>();
    let kid = spawn(move || {
        for round in 0..20 {
            for (i, &n) in sizes.iter().enumerate() {
                tx.put(&msg(round * 100 + i, n), None).unwrap();
            }
        }
    });
    for round in 0..20 {
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(
                q.get(T).unwrap(),
                msg(round * 100 + i, n),
                "round {round}, message {i}"
            );
        }
    }
    join_ok(kid);
    assert!(q.empty());
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Sample {
    id: u64,
    pair: [u32; 2],
    x: f64,
}

#[test]
fn pod_messages_cross_processes_and_byte_arrays_meet_serde() {
    const N: u64 = 1000;
    let q = Queue::<Sample>::new().unwrap();
    let bytes = Queue::<[u8; 8]>::new().unwrap();
    let (tx, btx) = (q.sender(), bytes.clone());
    let p = spawn(move || {
        for i in 0..N {
            let s = Sample {
                id: i,
                pair: [i as u32, !(i as u32)],
                x: i as f64 / 3.0,
            };
            tx.put_pod(&s, T).unwrap();
        }
        // A byte array's raw bytes are its postcard encoding: each path reads the
        // other's.
        btx.put_pod(&[1, 2, 3, 4, 5, 6, 7, 8], T).unwrap();
        btx.put(&[8, 7, 6, 5, 4, 3, 2, 1], T).unwrap();
    });
    let rx = q.receiver();
    for i in 0..N {
        let s = rx.get_pod(T).unwrap();
        assert_eq!(
            s,
            Sample {
                id: i,
                pair: [i as u32, !(i as u32)],
                x: i as f64 / 3.0,
            }
        );
    }
    assert_eq!(bytes.get(T).unwrap(), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(bytes.get_pod(T).unwrap(), [8, 7, 6, 5, 4, 3, 2, 1]);
    join_ok(p);
    // A message of another length is refused as a Codec error, and taken.
    bytes.put_bytes(&[0; 5], None).unwrap();
    assert!(matches!(bytes.get_pod(T), Err(Error::Codec { .. })));
    assert!(bytes.empty());
}

/// A 4 KiB plain-old-data message: words `id << 48 | seq << 16 | i`, the last one
/// their checksum (as `whole` checks).
fn pod_msg(id: u64, seq: u64) -> [u64; 512] {
    let mut m = [0u64; 512];
    for (i, w) in m.iter_mut().enumerate().take(511) {
        *w = id << 48 | seq << 16 | i as u64;
    }
    m[511] = m[..511]
        .iter()
        .fold(0u64, |a, x| a.wrapping_add(x.wrapping_mul(31)));
    m
}

#[test]
fn producers_killed_inside_put_pod_leave_no_half_message() {
    const KILLS: u64 = 12;
    let before = names_before();
    let mut pids = HashSet::from([std::process::id()]);
    // 2 KiB of ring: every 4 KiB message goes in pieces.
    let q = Queue::<[u64; 512]>::with_bounds(0, 2048).unwrap();
    let rx = q.receiver();
    let mut rng = 0x9e37_79b9u64;
    for k in 0..KILLS {
        let done = RawValue::<u64>::new(0).unwrap();
        let (tx, d) = (q.sender(), done.clone());
        let mut p = Process::new(move || {
            for seq in 0.. {
                tx.put_pod(&pod_msg(k, seq), LONG).unwrap();
                d.fetch_add(1);
            }
        });
        p.start().unwrap();
        pids.insert(p.pid().unwrap());
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = 1 + rng % 8;
        let mut next = 0u64;
        let mut take = |m: [u64; 512]| {
            assert!(whole(&m), "a half or torn message");
            assert_eq!((m[0] >> 48, m[0] >> 16 & 0xffff_ffff), (k, next));
            next += 1;
        };
        let deadline = Instant::now() + BOUND;
        while done.get() < target {
            assert!(Instant::now() < deadline, "the producer made no progress");
            if let Ok(m) = rx.get_pod(Some(Duration::from_millis(1))) {
                take(m);
            }
        }
        p.kill().unwrap();
        assert_eq!(p.join(Some(BOUND)).unwrap(), Some(-9));
        let put = done.get();
        loop {
            match rx.get_pod(Some(Duration::from_millis(1))) {
                Ok(m) => take(m),
                Err(Error::Timeout { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            next == put || next == put + 1,
            "producer {k}: {put} puts returned, {next} messages arrived"
        );
    }
    // Still usable (a 4 KiB message needs a consumer while it is put in pieces).
    let tx = q.sender();
    let p = spawn(move || tx.put_pod(&pod_msg(99, 0), T).unwrap());
    assert_eq!(rx.get_pod(T).unwrap(), pod_msg(99, 0));
    join_ok(p);
    nothing_new_in_dev_shm(&before, &pids);
}

/// The put's look for a consumer starts at the slot where it last found one:
/// consumers that move between processes (slots) are found wherever they are,
/// and the last one leaving is seen at once.
#[test]
fn put_follows_consumers_from_slot_to_slot_and_sees_the_last_leave() {
    let q = Queue::<u8>::new().unwrap();
    let tx = q.sender();
    // This process's consumer slot: the first put finds it there.
    tx.put(&1, None).unwrap();
    let rx = q.receiver();
    let (ready, done) = (Event::new().unwrap(), Event::new().unwrap());
    let (r, d) = (ready.clone(), done.clone());
    let p = spawn(move || {
        assert_eq!(rx.get(T).unwrap(), 1);
        r.set();
        assert!(d.wait(T).unwrap());
        // The child's consumer role goes with `rx` when it returns.
    });
    // Only the child consumes now: its slot, not this process's.
    drop(q);
    assert!(ready.wait(T).unwrap());
    tx.put(&2, None).unwrap();
    done.set();
    join_ok(p);
    // Every consumer is gone: the put is refused at once, room or not.
    assert!(matches!(tx.put_nowait(&3), Err(Error::Disconnected(_))));
    assert!(matches!(tx.put(&3, None), Err(Error::Disconnected(_))));
}

/// A timeout too long for the clock is refused by put and get, before anything
/// is put or taken, even when room or a message is there at once (the fast
/// paths test it without reading the clock).
#[test]
fn a_timeout_the_clock_cannot_hold_is_refused_before_any_put_or_get() {
    let q = Queue::<u64>::new().unwrap();
    let huge = Some(Duration::MAX);
    assert!(matches!(q.put(&1, huge), Err(Error::TimeoutOverflow(_))));
    assert!(matches!(
        q.put_bytes(&[1; 8], huge),
        Err(Error::TimeoutOverflow(_))
    ));
    assert!(matches!(
        q.put_pod(&1, huge),
        Err(Error::TimeoutOverflow(_))
    ));
    assert_eq!(q.qsize(), 0);
    q.put(&7, None).unwrap();
    assert!(matches!(q.get(huge), Err(Error::TimeoutOverflow(_))));
    assert!(matches!(q.get_pod(huge), Err(Error::TimeoutOverflow(_))));
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get(None).unwrap(), 7);
}
