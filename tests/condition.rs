//! Condition between real processes.

mod common;

use std::time::Duration;

use common::{T, join_ok, kill, late_move, pin_to_one_cpu, spawn};
use multiproc::{Condition, Error, Event, Lock, RLock, RawArray, RawValue, TryLockError};

/// Starts `k` children that each wait once on `cond` (recording in `woken` when
/// notified) and returns once all `k` are inside `wait`.
fn start_waiters(
    cond: &Condition,
    k: u32,
    woken: &RawValue<u32>,
    progress: &Condition,
) -> Vec<multiproc::Process> {
    let waiting = RawValue::new(0u32).unwrap();
    let all_waiting = Event::new().unwrap();
    let kids = (0..k)
        .map(|_| {
            let (cond, woken, progress) = (cond.clone(), woken.clone(), progress.clone());
            let (waiting, all_waiting) = (waiting.clone(), all_waiting.clone());
            spawn(move || {
                let _g = cond.lock().unwrap();
                if waiting.fetch_add(1) + 1 == k {
                    all_waiting.set();
                }
                // The lock is held from the count above until wait registers.
                assert!(cond.wait(T).unwrap(), "wait timed out instead of a notify");
                woken.fetch_add(1);
                let _p = progress.lock().unwrap();
                progress.notify_all().unwrap();
            })
        })
        .collect();
    assert!(all_waiting.wait(T).unwrap());
    // Once we hold the lock, the last child to count itself is inside wait.
    drop(cond.lock().unwrap());
    kids
}

fn wait_woken(progress: &Condition, woken: &RawValue<u32>, n: u32) {
    let _p = progress.lock().unwrap();
    assert!(progress.wait_for(|| woken.load() >= n, T).unwrap());
}

/// notify(1) wakes exactly one of 4 waiting processes, each time; notify(2) two;
/// notify_all the rest.
/// Two processes on one CPU pass a turn through one Condition (the one-core
/// hand-off, where each wait yields the core to the notifier), over an RLock
/// and over a Lock: every wait returns true only once the partner moved the
/// turn and notified, and with the lock held again (the notify that follows
/// needs it). Every fifth move is late (the mover yields once first, holding
/// the lock), so that the waiter's first hand-off finds no notification and
/// its wait goes on (one in 35 past its yield phase, to the futex sleep).
#[test]
fn one_cpu_ping_pong_waits_for_each_notify() {
    for cond in [
        Condition::new().unwrap(),
        Condition::with_lock(Lock::new().unwrap()).unwrap(),
    ] {
        let turn = RawValue::new(0u32).unwrap();
        const ROUNDS: u32 = 3000;
        // Waits (the lock held) until the turn is `want`.
        let wait_for = |c: &Condition, t: &RawValue<u32>, want: u32| {
            while t.load() != want {
                assert!(c.wait(T).unwrap(), "wait timed out");
                assert_eq!(t.load(), want, "a wait returned before the notify");
                assert!(c.is_owned(), "a wait returned without the lock");
            }
        };
        // After the last move nobody notifies: a wait (still on one CPU, whose
        // hand-off and yield phase find nothing) times out with `false`.
        let nobody_notifies = |c: &Condition| {
            let short = Some(Duration::from_millis(20));
            assert!(
                !c.wait(short).unwrap(),
                "a wait nobody notified said notified"
            );
            assert!(c.is_owned());
        };
        let (c2, t2) = (cond.clone(), turn.clone());
        let responder = spawn(move || {
            pin_to_one_cpu();
            let _g = c2.lock().unwrap();
            for i in 0..ROUNDS {
                wait_for(&c2, &t2, 2 * i + 1);
                late_move(i);
                t2.store(2 * i + 2);
                c2.notify(1).unwrap();
            }
            nobody_notifies(&c2);
        });
        let (c1, t1) = (cond.clone(), turn.clone());
        let initiator = spawn(move || {
            pin_to_one_cpu();
            let _g = c1.lock().unwrap();
            for i in 0..ROUNDS {
                late_move(i);
                t1.store(2 * i + 1);
                c1.notify(1).unwrap();
                wait_for(&c1, &t1, 2 * i + 2);
            }
            nobody_notifies(&c1);
        });
        join_ok(initiator);
        join_ok(responder);
        assert_eq!(turn.load(), 2 * ROUNDS);
    }
}

#[test]
fn notify_one_wakes_exactly_one_of_several_processes() {
    let cond = Condition::new().unwrap();
    let progress = Condition::new().unwrap();
    let woken = RawValue::new(0u32).unwrap();
    let kids = start_waiters(&cond, 6, &woken, &progress);
    for step in 1..=2 {
        {
            let _g = cond.lock().unwrap();
            cond.notify(1).unwrap();
        }
        wait_woken(&progress, &woken, step);
        let _g = cond.lock().unwrap();
        assert_eq!(woken.load(), step, "notify(1) woke more than one");
    }
    {
        let _g = cond.lock().unwrap();
        cond.notify(2).unwrap();
    }
    wait_woken(&progress, &woken, 4);
    assert_eq!(woken.load(), 4, "notify(2) woke more than two");
    {
        let _g = cond.lock().unwrap();
        cond.notify_all().unwrap();
    }
    wait_woken(&progress, &woken, 6);
    for k in kids {
        join_ok(k);
    }
    assert_eq!(woken.load(), 6);
}

/// A Condition over an RLock held 3 levels deep releases all of them in wait (the
/// notifier could take the lock) and restores all 3 when it wakes.
#[test]
fn condition_over_rlock_restores_the_recursion_count() {
    let rlock = RLock::new().unwrap();
    let cond = Condition::with_rlock(rlock.clone()).unwrap();
    let flag = RawValue::new(0u32).unwrap();
    let about_to_wait = Event::new().unwrap();
    let (c, r, f, a) = (
        cond.clone(),
        rlock.clone(),
        flag.clone(),
        about_to_wait.clone(),
    );
    let kid = spawn(move || {
        let g1 = c.lock().unwrap();
        let g2 = c.lock().unwrap();
        let g3 = c.lock().unwrap();
        assert_eq!(r.recursion_count(), 3);
        a.set();
        assert!(c.wait_for(|| f.load() == 1, T).unwrap());
        assert!(r.is_owned());
        assert_eq!(r.recursion_count(), 3);
        drop((g3, g2, g1));
        assert!(!r.is_locked());
    });
    assert!(about_to_wait.wait(T).unwrap());
    {
        // Only possible once the child released all 3 levels inside wait.
        let _g = cond.lock().unwrap();
        flag.store(1);
        cond.notify(1).unwrap();
    }
    join_ok(kid);
    assert!(!rlock.is_locked());
}

/// Waiting or notifying without holding the lock is NotOwner, also when another
/// process holds it; a timed-out wait returns false with the lock held again.
#[test]
fn wait_and_notify_need_the_lock() {
    for cond in [
        Condition::new().unwrap(),
        Condition::with_lock(Lock::new().unwrap()).unwrap(),
    ] {
        assert!(matches!(cond.wait(T), Err(Error::NotOwner { .. })));
        assert!(matches!(cond.notify(1), Err(Error::NotOwner { .. })));
        assert!(matches!(cond.notify_all(), Err(Error::NotOwner { .. })));
        let held = Event::new().unwrap();
        let done = Event::new().unwrap();
        let (c, h, d) = (cond.clone(), held.clone(), done.clone());
        let kid = spawn(move || {
            let _g = c.lock().unwrap();
            h.set();
            assert!(d.wait(T).unwrap());
        });
        assert!(held.wait(T).unwrap());
        assert!(matches!(cond.wait(T), Err(Error::NotOwner { .. })));
        assert!(matches!(cond.notify(1), Err(Error::NotOwner { .. })));
        done.set();
        join_ok(kid);

        let _g = cond.lock().unwrap();
        assert!(!cond.wait(Some(Duration::from_millis(10))).unwrap());
        assert!(cond.is_owned());
        assert!(
            !cond
                .wait_for(|| false, Some(Duration::from_millis(10)))
                .unwrap()
        );
        assert!(matches!(
            cond.wait(Some(Duration::MAX)),
            Err(Error::TimeoutOverflow(_))
        ));
    }
}

/// Producer/consumer over a plain Lock: 200 items in shared memory, two consumers,
/// every item received exactly once.
#[test]
fn producer_consumer_over_a_lock() {
    const N: u32 = 200;
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let items = RawArray::<u32>::new(N as usize).unwrap();
    let produced = RawValue::new(0u32).unwrap();
    let consumed = RawValue::new(0u32).unwrap();
    let sum = RawValue::new(0u64).unwrap();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let (cond, items, produced, consumed, sum) = (
                cond.clone(),
                items.clone(),
                produced.clone(),
                consumed.clone(),
                sum.clone(),
            );
            spawn(move || {
                loop {
                    let _g = cond.lock().unwrap();
                    assert!(
                        cond.wait_for(
                            || consumed.load() < produced.load() || consumed.load() == N,
                            T
                        )
                        .unwrap()
                    );
                    let c = consumed.load();
                    if c == N {
                        cond.notify_all().unwrap();
                        return;
                    }
                    sum.fetch_add(items.get(c as usize).unwrap() as u64);
                    consumed.store(c + 1);
                    if c + 1 == N {
                        cond.notify_all().unwrap();
                    }
                }
            })
        })
        .collect();
    let (c, i, p) = (cond.clone(), items.clone(), produced.clone());
    let producer = spawn(move || {
        for k in 0..N {
            let _g = c.lock().unwrap();
            i.set(k as usize, k + 1).unwrap();
            p.store(k + 1);
            c.notify(1).unwrap();
        }
    });
    join_ok(producer);
    for k in consumers {
        join_ok(k);
    }
    assert_eq!(consumed.load(), N);
    assert_eq!(sum.load(), (N as u64) * (N as u64 + 1) / 2);
}

/// A waiter killed inside wait cannot swallow a notification: notify(1) chooses
/// it (it waited longest), and the live waiter still wakes.
#[test]
fn killed_waiter_does_not_swallow_a_notify() {
    let cond = Condition::new().unwrap();
    let spawn_waiter = |ready: &Event| {
        let (c, r) = (cond.clone(), ready.clone());
        spawn(move || {
            let _g = c.lock().unwrap();
            r.set();
            assert!(c.wait(T).unwrap());
        })
    };
    let a_ready = Event::new().unwrap();
    let victim = spawn_waiter(&a_ready);
    assert!(a_ready.wait(T).unwrap());
    let b_ready = Event::new().unwrap();
    let survivor = spawn_waiter(&b_ready);
    assert!(b_ready.wait(T).unwrap());
    let g = cond.lock().unwrap(); // both are inside wait now
    kill(victim);
    cond.notify(1).unwrap();
    drop(g);
    join_ok(survivor);
}

/// A process killed holding the condition's lock: the next locker gets OwnerDied
/// with the lock, repairs, notifies, and the waiter wakes normally.
#[test]
fn killed_lock_holder_leaves_the_others_working() {
    // Over an RLock and over a Lock (whose taker thread is recorded: the
    // process that takes it over from the dead must own it, per thread).
    for cond in [
        Condition::new().unwrap(),
        Condition::with_lock(Lock::new().unwrap()).unwrap(),
    ] {
        let w_ready = Event::new().unwrap();
        let (c, r) = (cond.clone(), w_ready.clone());
        let waiter = spawn(move || {
            let _g = c.lock().unwrap();
            r.set();
            assert!(c.wait(T).unwrap());
        });
        assert!(w_ready.wait(T).unwrap());
        let holding = Event::new().unwrap();
        let (c, h) = (cond.clone(), holding.clone());
        let holder = spawn(move || {
            let _g = c.lock().unwrap();
            h.set();
            std::thread::sleep(Duration::from_secs(3600));
        });
        assert!(holding.wait(T).unwrap());
        kill(holder);
        let g = match cond.lock() {
            Ok(_) => panic!("the lock's owner died: expected OwnerDied"),
            Err(died) => died.into_inner(),
        };
        assert!(cond.is_owned());
        g.mark_consistent();
        cond.notify(1).unwrap();
        drop(g);
        join_ok(waiter);
    }
}

/// A notified waiter whose notifier dies holding the lock gets Err(OwnerDied) from
/// wait, with the lock held.
#[test]
fn wait_reports_owner_died_with_the_lock_held() {
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let w_ready = Event::new().unwrap();
    let (c, r) = (cond.clone(), w_ready.clone());
    let waiter = spawn(move || {
        let g = c.lock().unwrap();
        r.set();
        assert!(matches!(c.wait(T), Err(Error::OwnerDied)));
        assert!(c.is_owned());
        g.mark_consistent();
    });
    assert!(w_ready.wait(T).unwrap());
    let notified = Event::new().unwrap();
    let (c, n) = (cond.clone(), notified.clone());
    let notifier = spawn(move || {
        let _g = c.lock().unwrap();
        c.notify(1).unwrap();
        n.set();
        std::thread::sleep(Duration::from_secs(3600));
    });
    assert!(notified.wait(T).unwrap());
    kill(notifier);
    join_ok(waiter);
    assert!(cond.acquire(true, T).unwrap());
    cond.release().unwrap();
}

/// notify(1) wakes the longest-waiting process first (FIFO, as CPython), and a
/// thread that starts waiting after a notify never takes that notification.
#[test]
fn notify_is_fifo_and_late_waiters_do_not_steal() {
    let cond = Condition::new().unwrap();
    let order = RawArray::<u32>::new(2).unwrap();
    let woken = RawValue::new(0u32).unwrap();
    let start = |id: u32, ready: &Event| {
        let (c, r, o, w) = (cond.clone(), ready.clone(), order.clone(), woken.clone());
        spawn(move || {
            let _g = c.lock().unwrap();
            r.set();
            assert!(c.wait(T).unwrap());
            let slot = w.fetch_add(1);
            o.set(slot as usize, id).unwrap();
        })
    };
    let a_ready = Event::new().unwrap();
    let a = start(1, &a_ready);
    assert!(a_ready.wait(T).unwrap());
    let b_ready = Event::new().unwrap();
    let b = start(2, &b_ready);
    assert!(b_ready.wait(T).unwrap());

    let g = cond.lock().unwrap(); // A, then B, are inside wait
    cond.notify(1).unwrap();
    // We start waiting after the notify: it is A's, never ours.
    assert!(!cond.wait(Some(Duration::from_millis(50))).unwrap());
    drop(g);
    join_ok(a);
    assert_eq!(order.get(0).unwrap(), 1, "the oldest waiter wakes first");
    {
        let _g = cond.lock().unwrap();
        cond.notify(1).unwrap();
    }
    join_ok(b);
    assert_eq!(order.to_vec().unwrap(), vec![1, 2]);
}

/// 1,001 threads wait at once (250 threads in each of 4 processes, plus one in a
/// process SIGKILLed while waiting, the oldest): formerly the 255th waiter got an
/// error. `notify(n)` wakes exactly n live waiters each time (each woken thread
/// records the phase it was woken in, under the lock, so one extra wake makes some
/// phase's count wrong), and the dead waiter's notification (it is the oldest, so
/// the first `notify(300)` picks it) is re-delivered to a live one.
#[test]
fn a_thousand_waiters_over_several_processes() {
    const PROCS: usize = 4;
    const PER_PROC: usize = 250;
    const N: usize = PROCS * PER_PROC;
    // What each phase notifies; the last is notify_all (the rest).
    const STEPS: [usize; 3] = [300, 200, 1];
    let cond = Condition::new().unwrap();
    let waiting = RawValue::new(0usize).unwrap(); // all under the cond's lock
    let phase = RawValue::new(0usize).unwrap();
    let per_phase = RawArray::<u32>::new(STEPS.len() + 1).unwrap();
    let woken = RawValue::new(0usize).unwrap();

    let (c, w) = (cond.clone(), waiting.clone());
    let dead = spawn(move || {
        let _g = c.lock().unwrap();
        w.set(w.get() + 1);
        let _ = c.wait(None);
        unreachable!("killed while waiting");
    });
    common::poll_until("the doomed waiter waiting", || {
        let _g = cond.lock().unwrap();
        waiting.get() == 1
    });
    common::until_asleep(dead.pid().unwrap());
    kill(dead);

    let kids: Vec<_> = (0..PROCS)
        .map(|_| {
            let (cond, waiting, phase) = (cond.clone(), waiting.clone(), phase.clone());
            let (per_phase, woken) = (per_phase.clone(), woken.clone());
            spawn(move || {
                let threads: Vec<_> = (0..PER_PROC)
                    .map(|_| {
                        let (c, w, ph) = (cond.clone(), waiting.clone(), phase.clone());
                        let (pp, wk) = (per_phase.clone(), woken.clone());
                        std::thread::Builder::new()
                            .stack_size(64 << 10)
                            .spawn(move || {
                                let _g = c.lock().unwrap();
                                w.set(w.get() + 1);
                                assert!(c.wait(Some(common::BOUND * 4)).unwrap(), "not notified");
                                let k = ph.get();
                                pp.set(k, pp.get(k).unwrap() + 1).unwrap();
                                wk.set(wk.get() + 1);
                            })
                            .unwrap()
                    })
                    .collect();
                for t in threads {
                    t.join().unwrap();
                }
            })
        })
        .collect();
    common::poll_until("all 1,001 waiting", || {
        let _g = cond.lock().unwrap();
        waiting.get() == N + 1
    });
    let mut total = 0;
    for (k, &n) in STEPS.iter().chain(&[usize::MAX]).enumerate() {
        {
            let _g = cond.lock().unwrap();
            phase.set(k);
            cond.notify(n).unwrap();
        }
        total = (total + n).min(N);
        common::poll_until("the notified woken", || {
            let _g = cond.lock().unwrap();
            woken.get() >= total
        });
    }
    common::join_all_ok(kids);
    assert_eq!(woken.get(), N);
    assert_eq!(per_phase.to_vec().unwrap(), vec![300, 200, 1, 499]);
}

/// Over a Lock, ownership is per thread (CPython's `_is_mine`): another thread of
/// the holding process gets NotOwner from wait, wait_for, notify and release, and
/// its failed release leaves the holder's lock held. Also when the holder took the
/// Lock itself (`lock.acquire`), not through the Condition.
#[test]
fn over_a_lock_another_thread_of_the_holder_is_not_the_owner() {
    let lock = Lock::new().unwrap();
    let cond = Condition::with_lock(lock.clone()).unwrap();
    for through_the_lock in [false, true] {
        let g = if through_the_lock {
            assert!(lock.acquire(true, T).unwrap());
            None
        } else {
            Some(cond.lock().unwrap())
        };
        assert!(cond.is_owned());
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(!cond.is_owned());
                let not_owner = |r: multiproc::Result<_>, what: &str| match r {
                    Err(Error::NotOwner { what: w }) => assert_eq!(w, what),
                    other => panic!("{what}: expected NotOwner, got {other:?}"),
                };
                not_owner(cond.wait(T).map(|_| ()), "Condition::wait");
                not_owner(
                    cond.wait_for(|| panic!("ran without the lock"), T)
                        .map(|_| ()),
                    "Condition::wait_for",
                );
                not_owner(cond.notify(1), "Condition::notify");
                not_owner(cond.notify_all(), "Condition::notify");
                not_owner(cond.release(), "Condition::release");
                assert!(lock.is_locked(), "the holder's lock was released");
            });
        });
        // Still the holder's: it waits (times out, nobody notifies) and releases.
        assert!(cond.is_owned());
        assert!(!cond.wait(Some(Duration::from_millis(5))).unwrap());
        assert!(cond.is_owned());
        match g {
            Some(g) => drop(g),
            None => cond.release().unwrap(),
        }
        assert!(!lock.is_locked());
        assert!(!cond.is_owned());
    }
}

/// Condition has the lockable vocabulary: try_lock, try_lock_for (WouldBlock while
/// another process holds it), and acquire, which says Ok(true) after a dead owner
/// and leaves the news to is_consistent.
#[test]
fn condition_try_lock_and_acquire_after_a_dead_owner() {
    for cond in [
        Condition::new().unwrap(),
        Condition::with_lock(Lock::new().unwrap()).unwrap(),
    ] {
        let c = cond.clone();
        // Exits holding the lock: a dead owner for the next acquirer.
        join_ok(spawn(move || std::mem::forget(c.lock().unwrap())));
        assert!(cond.acquire(true, T).unwrap());
        assert!(cond.is_owned());
        assert!(!cond.is_consistent());
        cond.mark_consistent();
        cond.release().unwrap();
        assert!(cond.is_consistent());

        let held = Event::new().unwrap();
        let done = Event::new().unwrap();
        let (c, h, d) = (cond.clone(), held.clone(), done.clone());
        let kid = spawn(move || {
            let _g = c.try_lock().unwrap();
            h.set();
            assert!(d.wait(T).unwrap());
        });
        assert!(held.wait(T).unwrap());
        assert!(matches!(cond.try_lock(), Err(TryLockError::WouldBlock)));
        assert!(matches!(
            cond.try_lock_for(Duration::from_millis(5)),
            Err(TryLockError::WouldBlock)
        ));
        done.set();
        join_ok(kid);
        let g = cond.try_lock_for(common::BOUND).unwrap();
        assert!(cond.is_owned());
        drop(g);
        assert!(!cond.is_owned());
    }
}
