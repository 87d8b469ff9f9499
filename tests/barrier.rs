//! Barrier between real processes.

mod common;

use std::time::Duration;

use common::{BOUND, T, join_ok, kill, late_move, pin_to_one_cpu, poll_until, spawn};
use multiproc::{Barrier, Error, Event, RawArray, RawValue};

/// Two and three parties on one CPU (the one-core hand-off, where each waiting
/// party yields the core to those still to come): no party leaves a round before
/// every party arrived in it, checked by the round each party writes before it
/// arrives. Late arrivals (`late_move`: one yield first, or 300) send the waiting
/// parties past their first hand-off, and past their yield phase to the futex.
/// At the end one party waits alone: its wait times out (breaking the barrier).
#[test]
fn one_cpu_rounds_release_only_when_all_arrived() {
    for parties in [2, 3] {
        const ROUNDS: u32 = 3000;
        let barrier = Barrier::new(parties).unwrap();
        let arrived = RawArray::<u32>::new(parties).unwrap();
        let kids: Vec<_> = (0..parties)
            .map(|p| {
                let (b, arrived) = (barrier.clone(), arrived.clone());
                spawn(move || {
                    pin_to_one_cpu();
                    for r in 1..=ROUNDS {
                        if p == r as usize % parties {
                            late_move(r);
                        }
                        arrived.set(p, r).unwrap();
                        b.wait(T).unwrap();
                        for q in 0..parties {
                            let at = arrived.get(q).unwrap();
                            assert!(at >= r, "left round {r} before party {q} arrived");
                        }
                    }
                    if p == 0 {
                        let r = b.wait(Some(Duration::from_millis(20)));
                        assert!(matches!(r, Err(Error::BrokenBarrier("timed out"))));
                    }
                })
            })
            .collect();
        for k in kids {
            join_ok(k);
        }
    }
}

/// 4 processes x 10,000 rounds: every round releases all 4 with the indices 0..4,
/// the action runs exactly once per round, in the last arriver (index 3), before
/// anyone is released.
#[test]
fn four_processes_10000_rounds_action_once_per_round() {
    const ROUNDS: usize = 10_000;
    const P: usize = 4;
    let actions = RawValue::new(0u32).unwrap();
    let runner = RawArray::<u32>::new(ROUNDS).unwrap();
    let indices = RawArray::<u8>::new(ROUNDS * P).unwrap();
    let (a, r) = (actions.clone(), runner.clone());
    let barrier = Barrier::new(P).unwrap().with_action(move || {
        let round = a.fetch_add(1) as usize;
        r.set(round, std::process::id()).unwrap();
    });
    let kids: Vec<_> = (0..P)
        .map(|p| {
            let (b, actions, runner, indices) = (
                barrier.clone(),
                actions.clone(),
                runner.clone(),
                indices.clone(),
            );
            spawn(move || {
                for round in 0..ROUNDS {
                    let i = b.wait(T).unwrap();
                    assert!(i < P);
                    // This round's action ran; the next cannot run before we arrive.
                    assert_eq!(actions.load() as usize, round + 1);
                    if i == P - 1 {
                        assert_eq!(runner.get(round).unwrap(), std::process::id());
                    }
                    indices.set(round * P + p, i as u8).unwrap();
                }
            })
        })
        .collect();
    for k in kids {
        join_ok(k);
    }
    assert_eq!(actions.load() as usize, ROUNDS);
    let all = indices.to_vec().unwrap();
    for round in all.chunks(P) {
        let mut seen = round.to_vec();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3]);
    }
    assert_eq!(barrier.n_waiting(), 0);
    assert!(!barrier.broken());
}

/// A timeout breaks the barrier for every waiter; reset() makes it usable again.
#[test]
fn timeout_breaks_all_waiters_and_reset_repairs() {
    let barrier = Barrier::new(4).unwrap();
    let kids: Vec<_> = (0..2)
        .map(|_| {
            let b = barrier.clone();
            spawn(move || assert!(matches!(b.wait(T), Err(Error::BrokenBarrier(_)))))
        })
        .collect();
    poll_until("2 waiters", || barrier.n_waiting() == 2);
    assert!(matches!(
        barrier.wait(Some(Duration::from_millis(50))),
        Err(Error::BrokenBarrier("timed out"))
    ));
    for k in kids {
        join_ok(k);
    }
    assert!(barrier.broken());
    assert!(matches!(
        barrier.wait(T),
        Err(Error::BrokenBarrier("timed out"))
    ));
    barrier.reset();
    assert!(!barrier.broken());
    let kids: Vec<_> = (0..3)
        .map(|_| {
            let b = barrier.clone();
            spawn(move || assert!(b.wait(T).unwrap() < 4))
        })
        .collect();
    assert!(barrier.wait(T).unwrap() < 4);
    for k in kids {
        join_ok(k);
    }
}

/// The default timeout set with `with_timeout` applies when `wait(None)`.
#[test]
fn default_timeout_applies() {
    let b = Barrier::new(2)
        .unwrap()
        .with_timeout(Duration::from_millis(20));
    assert!(matches!(
        b.wait(None),
        Err(Error::BrokenBarrier("timed out"))
    ));
    assert!(b.broken());
}

/// abort() breaks the barrier for the processes waiting on it, and for later ones.
#[test]
fn abort_breaks_waiters() {
    let barrier = Barrier::new(3).unwrap();
    let kids: Vec<_> = (0..2)
        .map(|_| {
            let b = barrier.clone();
            spawn(move || assert!(matches!(b.wait(T), Err(Error::BrokenBarrier("aborted")))))
        })
        .collect();
    poll_until("2 waiters", || barrier.n_waiting() == 2);
    barrier.abort();
    for k in kids {
        join_ok(k);
    }
    assert!(barrier.broken());
    assert!(matches!(
        barrier.wait(T),
        Err(Error::BrokenBarrier("aborted"))
    ));
}

/// reset() while parties wait: they get BrokenBarrier("reset"), and the barrier
/// fills a fresh round afterwards.
#[test]
fn reset_breaks_waiters_then_the_barrier_is_reusable() {
    let barrier = Barrier::new(2).unwrap();
    let b = barrier.clone();
    let kid = spawn(move || assert!(matches!(b.wait(T), Err(Error::BrokenBarrier("reset")))));
    poll_until("1 waiter", || barrier.n_waiting() == 1);
    barrier.reset();
    join_ok(kid);
    assert!(!barrier.broken());
    let b = barrier.clone();
    let kid = spawn(move || {
        b.wait(T).unwrap();
    });
    barrier.wait(T).unwrap();
    join_ok(kid);
}

/// A party killed while waiting breaks the barrier for everyone ("a party died").
#[test]
fn killed_waiting_party_breaks_the_barrier() {
    let barrier = Barrier::new(3).unwrap();
    let b = barrier.clone();
    let victim = spawn(move || {
        let _ = b.wait(None);
    });
    poll_until("the victim waiting", || barrier.n_waiting() == 1);
    let b = barrier.clone();
    let survivor = spawn(move || {
        assert!(matches!(
            b.wait(T),
            Err(Error::BrokenBarrier("a party died"))
        ))
    });
    poll_until("2 waiters", || barrier.n_waiting() == 2);
    kill(victim);
    join_ok(survivor);
    assert!(barrier.broken());
    // reset forgets the dead party: a fresh round of 3 completes.
    barrier.reset();
    let kids: Vec<_> = (0..2)
        .map(|_| {
            let b = barrier.clone();
            spawn(move || {
                b.wait(T).unwrap();
            })
        })
        .collect();
    barrier.wait(T).unwrap();
    for k in kids {
        join_ok(k);
    }
}

/// A registered process that exits without unregister() (or dies) before arriving
/// breaks the barrier for those waiting.
#[test]
fn registered_party_that_is_gone_breaks_the_barrier() {
    let barrier = Barrier::new(2).unwrap();
    let registered = Event::new().unwrap();
    let (b, r) = (barrier.clone(), registered.clone());
    let quitter = spawn(move || {
        b.register().unwrap();
        r.set();
    });
    assert!(registered.wait(T).unwrap());
    join_ok(quitter);
    assert!(matches!(
        barrier.wait(T),
        Err(Error::BrokenBarrier("a party died"))
    ));

    // A registered party that unregisters breaks nothing.
    barrier.reset();
    barrier.register().unwrap();
    barrier.unregister();
    barrier.register().unwrap();
    let b = barrier.clone();
    let kid = spawn(move || {
        b.register().unwrap();
        b.wait(T).unwrap();
        b.unregister();
    });
    barrier.wait(T).unwrap();
    join_ok(kid);
    barrier.unregister();
}

/// The last arriver dies inside the action, holding the barrier's internal lock:
/// the waiting party breaks out instead of hanging.
#[test]
fn party_killed_inside_the_action_breaks_the_barrier() {
    let barrier = Barrier::new(2).unwrap();
    let in_action = Event::new().unwrap();
    let ia = in_action.clone();
    let b = barrier.clone().with_action(move || {
        ia.set();
        std::thread::sleep(Duration::from_secs(3600));
    });
    let b0 = barrier.clone();
    // Waits 4x longer than join_ok: a timeout of this wait would also report "a
    // party died" (the timed-out party then takes the dead holder's lock), so only
    // a wait that outlasts the join shows that the death itself was noticed.
    let first = spawn(move || {
        assert!(matches!(
            b0.wait(Some(BOUND * 4)),
            Err(Error::BrokenBarrier("a party died"))
        ))
    });
    poll_until("the first party waiting", || barrier.n_waiting() == 1);
    let last = spawn(move || {
        let _ = b.wait(T);
    });
    assert!(in_action.wait(T).unwrap());
    kill(last);
    join_ok(first);
    assert!(barrier.broken());
}

/// An action that panics: the party that ran it (the last to arrive, here this
/// process) gets BarrierActionPanicked with the panic's message, as CPython raises
/// the action's exception out of its `wait`; the other party, and a later
/// arrival, get BrokenBarrier("action failed"). Both payload kinds (`&str`, a
/// formatted `String`) keep their message.
#[test]
fn panicking_action_breaks_the_barrier() {
    for formatted in [false, true] {
        let barrier = Barrier::new(2).unwrap().with_action(move || {
            if formatted {
                panic!("action number {} fails on purpose", 7)
            } else {
                panic!("action fails on purpose")
            }
        });
        let b = barrier.clone();
        let kid = spawn(move || {
            assert!(matches!(
                b.wait(T),
                Err(Error::BrokenBarrier("action failed"))
            ))
        });
        common::poll_until("the child arrived", || barrier.n_waiting() == 1);
        match barrier.wait(T) {
            Err(Error::BarrierActionPanicked { message }) => {
                let want = if formatted {
                    "action number 7 fails on purpose"
                } else {
                    "action fails on purpose"
                };
                assert_eq!(message, want);
            }
            other => panic!("expected BarrierActionPanicked, got {other:?}"),
        }
        join_ok(kid);
        assert!(barrier.broken());
        assert!(matches!(
            barrier.wait(T),
            Err(Error::BrokenBarrier("action failed"))
        ));
    }
}

/// Barrier(0) is an error; parties and n_waiting report the configuration.
#[test]
fn zero_parties_is_an_error() {
    assert!(matches!(Barrier::new(0), Err(Error::ZeroSize { .. })));
    let b = Barrier::new(5).unwrap();
    assert_eq!(b.parties(), 5);
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.broken());
    assert!(matches!(
        b.wait(Some(Duration::MAX)),
        Err(Error::TimeoutOverflow(_))
    ));
}

/// Two of three waiting parties killed, including the watcher of the first: the
/// ring of watchers still notices, and the survivor breaks out.
#[test]
fn two_killed_parties_still_break_the_barrier() {
    let barrier = Barrier::new(4).unwrap();
    let mut victims = Vec::new();
    for n in 1..=2 {
        let b = barrier.clone();
        victims.push(spawn(move || {
            let _ = b.wait(None);
        }));
        poll_until("victims waiting", || barrier.n_waiting() == n);
    }
    let b = barrier.clone();
    let survivor = spawn(move || {
        assert!(matches!(
            b.wait(T),
            Err(Error::BrokenBarrier("a party died"))
        ))
    });
    poll_until("3 waiters", || barrier.n_waiting() == 3);
    for v in victims {
        kill(v);
    }
    join_ok(survivor);
    assert!(barrier.broken());
}
