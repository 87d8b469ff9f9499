//! Measures how long a dead lock owner keeps others waiting: the time from the
//! SIGKILL of a process holding a `Lock` to the moment the next acquirer holds it
//! (with `OwnerDied`).
//!
//! Two cases, `RUNS` times each:
//! - *blocked waiter*: another process already sleeps on the lock when the holder is
//!   killed (it wakes at the end of its current owner-check slice);
//! - *late acquirer*: the holder is killed and reaped first, then a process calls
//!   `lock()` (it sleeps one slice, then checks the owner);
//! - *barrier party*: a process sits in `Barrier::wait` beside another; the time
//!   from the SIGKILL of one to `BrokenBarrier` in the other, killed within the
//!   first 20 ms of the wait (the survivor still sleeps in timed slices);
//! - *barrier, armed*: the same, killed 30 to 50 ms into the wait, when the
//!   survivor sleeps armed (woken by its death alarm, see `sync::barrier`).
//!
//! Times come from `CLOCK_MONOTONIC`, which all processes share.
//!
//! Run: `cargo run --release --example owner_death_latency [RUNS]`

use std::time::Duration;

use multiproc::{Barrier, Error, Event, Lock, Process, RawValue};

const BOUND: Duration = Duration::from_secs(20);

fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Starts a process that takes `lock`, sets `held` and waits to be killed.
fn holder(lock: &Lock, held: &Event) -> multiproc::Result<Process> {
    let (l, h, never) = (lock.clone(), held.clone(), Event::new()?);
    let mut p = Process::new(move || {
        std::mem::forget(l.lock().unwrap_or_else(|d| d.into_inner()));
        h.set();
        let _ = never.wait(Some(BOUND));
    });
    p.start()?;
    if !held.wait(Some(BOUND))? {
        return Err(multiproc::Error::InvalidArgument(
            "holder never took the lock".into(),
        ));
    }
    Ok(p)
}

/// One blocked-waiter run: nanoseconds from kill to acquisition.
fn blocked_waiter() -> multiproc::Result<u64> {
    let (lock, held, waiting) = (Lock::new()?, Event::new()?, Event::new()?);
    let mut victim = holder(&lock, &held)?;
    let acquired_at = RawValue::new(0u64)?;
    let (l, w, a) = (lock.clone(), waiting.clone(), acquired_at.clone());
    let mut waiter = Process::new(move || {
        w.set();
        let g = match l.try_lock_for(BOUND) {
            Err(multiproc::TryLockError::OwnerDied(d)) => d.into_inner(),
            _ => panic!("expected OwnerDied"),
        };
        a.store(now_ns());
        g.mark_consistent();
    });
    waiter.start()?;
    waiting.wait(Some(BOUND))?;
    // Let the waiter reach its futex sleep (not needed for correctness; only so
    // that this measures the blocked case), and kill at a random point of its
    // 20 ms owner-check slice.
    std::thread::sleep(Duration::from_micros(30_000 + now_ns() % 20_000));
    let killed_at = now_ns();
    victim.kill()?;
    victim.join(Some(BOUND))?;
    if waiter.join(Some(BOUND))? != Some(0) {
        return Err(multiproc::Error::InvalidArgument("waiter failed".into()));
    }
    Ok(acquired_at.load() - killed_at)
}

/// One late-acquirer run: nanoseconds from kill to acquisition by this process.
fn late_acquirer() -> multiproc::Result<u64> {
    let (lock, held) = (Lock::new()?, Event::new()?);
    let mut victim = holder(&lock, &held)?;
    let killed_at = now_ns();
    victim.kill()?;
    victim.join(Some(BOUND))?;
    let g = match lock.try_lock_for(BOUND) {
        Err(multiproc::TryLockError::OwnerDied(d)) => d.into_inner(),
        _ => {
            return Err(multiproc::Error::InvalidArgument(
                "expected OwnerDied".into(),
            ));
        }
    };
    let t = now_ns() - killed_at;
    g.mark_consistent();
    Ok(t)
}

/// One barrier run: nanoseconds from the kill of a waiting party to the other
/// party's `BrokenBarrier`.
fn barrier_party(armed: bool) -> multiproc::Result<u64> {
    let barrier = Barrier::new(3)?;
    let b = barrier.clone();
    let mut victim = Process::new(move || {
        let _ = b.wait(Some(BOUND));
    });
    victim.start()?;
    let broken_at = RawValue::new(0u64)?;
    let (b, t) = (barrier.clone(), broken_at.clone());
    let mut survivor = Process::new(move || {
        if let Err(Error::BrokenBarrier(_)) = b.wait(Some(BOUND)) {
            t.store(now_ns());
        }
    });
    survivor.start()?;
    let until = std::time::Instant::now() + BOUND;
    while barrier.n_waiting() < 2 && std::time::Instant::now() < until {
        std::thread::yield_now();
    }
    let base = if armed { 30_000 } else { 0 };
    std::thread::sleep(Duration::from_micros(base + now_ns() % 20_000));
    let killed_at = now_ns();
    victim.kill()?;
    victim.join(Some(BOUND))?;
    survivor.join(Some(BOUND))?;
    match broken_at.load() {
        0 => Err(Error::InvalidArgument("the barrier did not break".into())),
        t => Ok(t - killed_at),
    }
}

fn report(name: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    let ms = |v: u64| v as f64 / 1e6;
    println!(
        "{name:<16} runs {:>3}  min {:>6.2} ms  median {:>6.2} ms  max {:>6.2} ms",
        ns.len(),
        ms(ns[0]),
        ms(ns[ns.len() / 2]),
        ms(ns[ns.len() - 1])
    );
}

fn main() -> multiproc::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20)
        .max(1);
    println!(
        "dead-owner detection latency: SIGKILL of the holder -> next acquirer holds the lock\n(barrier: SIGKILL of a party -> BrokenBarrier in another)"
    );
    report(
        "blocked waiter",
        (0..runs)
            .map(|_| blocked_waiter())
            .collect::<multiproc::Result<_>>()?,
    );
    report(
        "late acquirer",
        (0..runs)
            .map(|_| late_acquirer())
            .collect::<multiproc::Result<_>>()?,
    );
    report(
        "barrier party",
        (0..runs)
            .map(|_| barrier_party(false))
            .collect::<multiproc::Result<_>>()?,
    );
    report(
        "barrier, armed",
        (0..runs)
            .map(|_| barrier_party(true))
            .collect::<multiproc::Result<_>>()?,
    );
    Ok(())
}
