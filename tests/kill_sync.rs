//! Kill tests for the primitives built on shared state that other processes wait on:
//! a process SIGKILLed inside `Barrier.wait`, before reaching a Barrier it
//! registered with, inside `Condition.wait`, holding a Condition's lock, or asleep in
//! `Semaphore.acquire`, leaves the others working (a broken barrier for everyone,
//! a re-delivered notification, a lock passed on with `OwnerDied`).
//!
//! Victims say "I am in position" through an Event or a state the parent can check
//! (a Condition's lock that a waiter releases only inside `wait`); every wait is
//! bounded by `BOUND`. Each test ends by checking that `/dev/shm` holds nothing new
//! made by its processes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{BOUND, dev_shm, join_ok};
use multiproc::shm::clean;
use multiproc::{Barrier, Condition, Error, Event, Process, RawValue, Semaphore};

thread_local! {
    static PIDS: std::cell::RefCell<HashSet<u32>> =
        std::cell::RefCell::new(HashSet::from([std::process::id()]));
}

/// Starts a child running `f`, remembering its pid for [`nothing_new_in_dev_shm`].
fn spawn(f: impl FnOnce() + Send + 'static) -> Process {
    let p = common::spawn(f);
    PIDS.with(|s| s.borrow_mut().extend(p.pid()));
    p
}

/// Checks that no `/dev/shm` entry absent from `before` was made by this test's
/// processes (other tests may create entries meanwhile).
fn nothing_new_in_dev_shm(before: &[String]) {
    let pids = PIDS.with(|s| s.borrow().clone());
    let ours: Vec<String> = clean::scan()
        .unwrap()
        .into_iter()
        .filter(|s| pids.contains(&s.creator_pid) && !before.contains(&s.name))
        .map(|s| s.name)
        .collect();
    assert_eq!(ours, Vec::<String>::new());
}

const OK: u32 = 1;
const BROKEN: u32 = 2;
const DIED: u32 = 3;
const OTHER: u32 = 4;

fn kill(mut p: Process) {
    p.kill().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(-9));
}

/// Spins (yielding) until `n` parties wait in `b`'s current round; panics after
/// `BOUND`. `n_waiting` is the barrier's own count, so this is not a sleep.
fn until_waiting(b: &Barrier, n: usize) {
    let deadline = Instant::now() + BOUND;
    while b.n_waiting() < n {
        assert!(Instant::now() < deadline, "parties never arrived");
        std::thread::yield_now();
    }
}

/// How long a surviving party waits in the barrier: 4x the parent's join bound, so
/// that only the death, noticed by the barrier, can end its wait in time. (Its own
/// timeout would break the barrier too, and a dead internal-lock holder is then
/// reported as "a party died" anyway: with equal bounds such a test cannot fail.)
const SURVIVOR_WAIT: Option<Duration> = Some(Duration::from_secs(4 * BOUND.as_secs()));

fn barrier_outcome(r: multiproc::Result<usize>) -> u32 {
    match r {
        Ok(_) => OK,
        Err(Error::BrokenBarrier("a party died")) => DIED,
        Err(Error::BrokenBarrier(_)) => BROKEN,
        Err(_) => OTHER,
    }
}

#[test]
fn a_party_killed_inside_barrier_wait_breaks_it_for_everyone() {
    let before = dev_shm();
    let barrier = Barrier::new(3).unwrap();
    let b = barrier.clone();
    let victim = spawn(move || {
        let _ = b.wait(Some(BOUND));
        panic!("the victim left the barrier");
    });
    until_waiting(&barrier, 1);
    let outcome = RawValue::new(0u32).unwrap();
    let (b, o) = (barrier.clone(), outcome.clone());
    let survivor = spawn(move || o.set(barrier_outcome(b.wait(SURVIVOR_WAIT))));
    until_waiting(&barrier, 2);
    kill(victim);
    join_ok(survivor);
    assert_eq!(outcome.get(), DIED, "the sleeping party saw the death");
    assert!(barrier.broken());
    assert!(matches!(
        barrier.wait(Some(BOUND)),
        Err(Error::BrokenBarrier(_))
    ));
    // After a reset, live parties meet again.
    barrier.reset();
    let parties: Vec<Process> = (0..2)
        .map(|_| {
            let b = barrier.clone();
            spawn(move || {
                b.wait(Some(BOUND)).unwrap();
            })
        })
        .collect();
    barrier.wait(Some(BOUND)).unwrap();
    parties.into_iter().for_each(join_ok);
    nothing_new_in_dev_shm(&before);
}

#[test]
fn a_registered_party_killed_before_arriving_breaks_the_barrier() {
    let before = dev_shm();
    let barrier = Barrier::new(3).unwrap();
    let registered = Event::new().unwrap();
    let (b, r) = (barrier.clone(), registered.clone());
    let never = Event::new().unwrap();
    let victim = spawn(move || {
        b.register().unwrap();
        r.set();
        let _ = never.wait(Some(BOUND));
        panic!("not killed in time");
    });
    assert!(registered.wait(Some(BOUND)).unwrap());
    let outcome = RawValue::new(0u32).unwrap();
    let (b, o) = (barrier.clone(), outcome.clone());
    let survivor = spawn(move || o.set(barrier_outcome(b.wait(SURVIVOR_WAIT))));
    until_waiting(&barrier, 1);
    kill(victim);
    // This process arrives too: 2 of 3, the third is dead.
    assert!(matches!(
        barrier.wait(Some(BOUND)),
        Err(Error::BrokenBarrier("a party died"))
    ));
    join_ok(survivor);
    assert_eq!(outcome.get(), DIED);
    nothing_new_in_dev_shm(&before);
}

#[test]
fn the_last_party_killed_inside_the_barrier_action_breaks_the_round() {
    let before = dev_shm();
    let barrier = Barrier::new(2).unwrap();
    let outcome = RawValue::new(0u32).unwrap();
    let (b, o) = (barrier.clone(), outcome.clone());
    let survivor = spawn(move || o.set(barrier_outcome(b.wait(SURVIVOR_WAIT))));
    until_waiting(&barrier, 1);
    // The last to arrive runs the action, holding the barrier's internal lock.
    let in_action = Event::new().unwrap();
    let (ia, never) = (in_action.clone(), Event::new().unwrap());
    let b = barrier.clone().with_action(move || {
        ia.set();
        let _ = never.wait(Some(BOUND));
    });
    let victim = spawn(move || {
        let _ = b.wait(Some(BOUND));
        panic!("the victim left the barrier");
    });
    assert!(in_action.wait(Some(BOUND)).unwrap());
    kill(victim);
    join_ok(survivor);
    assert_eq!(outcome.get(), DIED);
    // The internal lock passed on; after a reset, live parties meet again.
    barrier.reset();
    let b = barrier.clone();
    let party = spawn(move || {
        b.wait(Some(BOUND)).unwrap();
    });
    barrier.wait(Some(BOUND)).unwrap();
    join_ok(party);
    nothing_new_in_dev_shm(&before);
}

/// Starts a process that takes `cond`'s lock, sets `ready`, and calls
/// `wait(BOUND)`; once the parent can take the lock, that process sits in `wait`.
fn waiter(cond: &Condition, ready: &Event, outcome: &RawValue<u32>) -> Process {
    let (c, r, o) = (cond.clone(), ready.clone(), outcome.clone());
    let p = spawn(move || {
        let g = c.lock().unwrap_or_else(|d| d.into_inner());
        r.set();
        o.set(match c.wait(Some(BOUND)) {
            Ok(true) => OK,
            Ok(false) => OTHER,
            Err(Error::OwnerDied) => {
                g.mark_consistent();
                DIED
            }
            Err(_) => OTHER,
        });
        drop(g);
    });
    assert!(ready.wait(Some(BOUND)).unwrap());
    // The waiter releases the lock only inside wait(), after registering.
    drop(cond.lock().unwrap());
    p
}

#[test]
fn a_process_killed_inside_condition_wait_does_not_swallow_a_notification() {
    let before = dev_shm();
    let cond = Condition::new().unwrap();
    let (dead_out, live_out) = (RawValue::new(0u32).unwrap(), RawValue::new(0u32).unwrap());
    // The victim waits first: FIFO, so notify(1) chooses it.
    let victim = waiter(&cond, &Event::new().unwrap(), &dead_out);
    let survivor = waiter(&cond, &Event::new().unwrap(), &live_out);
    kill(victim);
    {
        let _g = cond.lock().unwrap();
        cond.notify(1).unwrap();
    }
    join_ok(survivor);
    assert_eq!(
        live_out.get(),
        OK,
        "the notification reached the live waiter"
    );
    // And the condition keeps working.
    let again = RawValue::new(0u32).unwrap();
    let w = waiter(&cond, &Event::new().unwrap(), &again);
    {
        let _g = cond.lock().unwrap();
        cond.notify_all().unwrap();
    }
    join_ok(w);
    assert_eq!(again.get(), OK);
    nothing_new_in_dev_shm(&before);
}

#[test]
fn a_process_killed_holding_a_condition_s_lock_passes_it_on_to_a_waiter() {
    let before = dev_shm();
    let cond = Condition::new().unwrap();
    let out = RawValue::new(0u32).unwrap();
    let survivor = waiter(&cond, &Event::new().unwrap(), &out);
    // The victim notifies, then dies with the lock held: the woken waiter must get
    // the lock back with OwnerDied.
    let held = Event::new().unwrap();
    let (c, h) = (cond.clone(), held.clone());
    let never = Event::new().unwrap();
    let victim = spawn(move || {
        let g = c.lock().unwrap();
        c.notify_all().unwrap();
        std::mem::forget(g);
        h.set();
        let _ = never.wait(Some(BOUND));
        panic!("not killed in time");
    });
    assert!(held.wait(Some(BOUND)).unwrap());
    kill(victim);
    join_ok(survivor);
    assert_eq!(out.get(), DIED);
    // Repaired by the survivor: clean for the next one.
    let g = cond.lock().expect("marked consistent by the survivor");
    drop(g);
    nothing_new_in_dev_shm(&before);
}

#[test]
fn a_process_killed_asleep_in_semaphore_acquire_leaves_it_working() {
    let before = dev_shm();
    let sem = Semaphore::new(0).unwrap();
    let about = Event::new().unwrap();
    let (s, a) = (sem.clone(), about.clone());
    let victim = spawn(move || {
        a.set();
        let _ = s.acquire(true, Some(BOUND));
        panic!("the victim got a permit nobody released");
    });
    assert!(about.wait(Some(BOUND)).unwrap());
    kill(victim);
    let got = RawValue::new(0u32).unwrap();
    let (s, g) = (sem.clone(), got.clone());
    let taker = spawn(move || {
        if s.acquire(true, Some(BOUND)).unwrap() {
            g.set(OK);
        }
    });
    sem.release().unwrap();
    join_ok(taker);
    assert_eq!(got.get(), OK);
    assert_eq!(sem.get_value(), 0);
    nothing_new_in_dev_shm(&before);
}
