//! S3: ping-pong between two processes, the round trip: through two Events
//! (set / wait / clear) and through two Semaphores (release / acquire) (and, on
//! one core, through one Condition: notify / wait), against a pure spin on one shared cache line (the hardware
//! floor), a raw futex wait/wake without spinning, std channels between two threads,
//! and CPython's Event and Semaphore. Also with both processes pinned to one CPU
//! (the cores oversubscribed: the partner cannot run while one spins), against
//! the raw futex and a raw `sched_yield` ping-pong (the floor of a one-core
//! hand-off: one system call and one context switch per move).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Condition, Event, RawValue, Semaphore};
use rustix::thread::futex;

use super::{Ctx, Goal, Scenario, ns_since, samples_from_children};

pub const SCENARIO: Scenario = Scenario {
    id: "S3",
    title: "ping-pong between two processes, round trip",
    steps: 10,
    run,
    python: python_script!("s3_pingpong.py"),
    goals: &[
        Goal {
            metric: EVENT,
            processes: 2,
            reference: "floor",
            at_least: 0.1,
            text: "within 10x of the spin floor",
        },
        Goal {
            metric: EVENT,
            processes: 2,
            reference: "cpython",
            at_least: 100.0,
            text: ">= 100x faster than CPython Event",
        },
        Goal {
            metric: SEMAPHORE,
            processes: 2,
            reference: "floor",
            at_least: 0.1,
            text: "within 10x of the spin floor",
        },
        Goal {
            metric: SEMAPHORE,
            processes: 2,
            reference: "cpython",
            at_least: 100.0,
            text: ">= 100x faster than CPython Semaphore",
        },
        Goal {
            metric: SEMAPHORE_BUSY,
            processes: 2,
            reference: "futex",
            at_least: 2.0,
            text: ">= 2x faster than a raw futex ping-pong on one core",
        },
        Goal {
            metric: EVENT_BUSY,
            processes: 2,
            reference: "futex",
            at_least: 2.0,
            text: ">= 2x faster than a raw futex ping-pong on one core",
        },
        Goal {
            metric: SEMAPHORE_BUSY,
            processes: 2,
            reference: "yield",
            at_least: 0.8,
            text: "within 1.25x of a raw sched_yield ping-pong (the one-core floor)",
        },
        Goal {
            metric: EVENT_BUSY,
            processes: 2,
            reference: "yield",
            at_least: 0.8,
            text: "within 1.25x of a raw sched_yield ping-pong (the one-core floor)",
        },
    ],
};

const EVENT: &str = "event round trip";
const EVENT_BUSY: &str = "event round trip, both on one core";
const SEMAPHORE: &str = "semaphore round trip";
const SEMAPHORE_BUSY: &str = "semaphore round trip, both on one core";
const CONDITION_BUSY: &str = "condition round trip, both on one core";
/// How long one side waits for the other before the measurement fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// Two processes passing the turn back and forth.
trait PingPong: Clone + Send + 'static {
    /// The initiator: `n` round trips.
    fn ping(&self, n: u64);
    /// The responder: answers until [`stop`](Self::stop).
    fn serve(&self);
    /// Tells the responder to return (called by the initiator).
    fn stop(&self);
}

/// Two Events: ping and pong; each side waits for its event, clears it, sets the
/// other one.
#[derive(Clone)]
struct Events {
    ping: Event,
    pong: Event,
    stop: RawValue<u32>,
}

impl PingPong for Events {
    fn ping(&self, n: u64) {
        for _ in 0..n {
            self.ping.set();
            assert!(self.pong.wait(Some(PATIENCE)).unwrap(), "no pong");
            self.pong.clear();
        }
    }
    fn serve(&self) {
        loop {
            assert!(self.ping.wait(Some(PATIENCE)).unwrap(), "no ping");
            self.ping.clear();
            if self.stop.load() != 0 {
                return;
            }
            self.pong.set();
        }
    }
    fn stop(&self) {
        self.stop.store(1);
        self.ping.set();
    }
}

/// Two Semaphores starting at 0: each side releases the other's and acquires its
/// own.
#[derive(Clone)]
struct Semaphores {
    ping: Semaphore,
    pong: Semaphore,
    stop: RawValue<u32>,
}

impl PingPong for Semaphores {
    fn ping(&self, n: u64) {
        for _ in 0..n {
            self.ping.release().unwrap();
            assert!(self.pong.acquire(true, Some(PATIENCE)).unwrap(), "no pong");
        }
    }
    fn serve(&self) {
        loop {
            assert!(self.ping.acquire(true, Some(PATIENCE)).unwrap(), "no ping");
            if self.stop.load() != 0 {
                return;
            }
            self.pong.release().unwrap();
        }
    }
    fn stop(&self) {
        self.stop.store(1);
        self.ping.release().unwrap();
    }
}

/// One Condition (over its default RLock) and a turn word it guards: each side
/// holds the lock except inside `wait`, moves the turn (odd: the responder's,
/// even: the initiator's), notifies, and waits until the turn is its own again
/// (Python's `with cond: ... cond.notify(); cond.wait_for(...)` ping-pong).
#[derive(Clone)]
struct Conditions {
    cond: Condition,
    turn: RawValue<u64>,
}

const TURN_STOP: u64 = u64::MAX;

impl Conditions {
    /// Waits (the lock held) while the turn is `turn`; returns the new one.
    fn wait_while(&self, turn: u64) -> u64 {
        let end = Instant::now() + PATIENCE;
        loop {
            let t = self.turn.load();
            if t != turn {
                return t;
            }
            let notified = self.cond.wait(Some(PATIENCE)).unwrap();
            assert!(notified || Instant::now() < end, "no notify");
        }
    }
}

impl PingPong for Conditions {
    fn ping(&self, n: u64) {
        let _g = self.cond.lock().unwrap();
        let mut t = self.turn.load();
        for _ in 0..n {
            self.turn.store(t + 1);
            self.cond.notify(1).unwrap();
            t = self.wait_while(t + 1);
        }
    }
    fn serve(&self) {
        let _g = self.cond.lock().unwrap();
        let mut t = self.turn.load();
        loop {
            if t == TURN_STOP {
                return;
            }
            if t % 2 == 1 {
                t += 1;
                self.turn.store(t);
                self.cond.notify(1).unwrap();
            }
            t = self.wait_while(t);
        }
    }
    fn stop(&self) {
        let _g = self.cond.lock().unwrap();
        self.turn.store(TURN_STOP);
        self.cond.notify(1).unwrap();
    }
}

/// The floor: one 64-bit word on its own cache line; the initiator makes it odd,
/// the responder even, both spin.
#[derive(Clone)]
struct Spin {
    value: RawValue<u64>,
}

const SPIN_STOP: u64 = u64::MAX;

impl PingPong for Spin {
    fn ping(&self, n: u64) {
        let word: &AtomicU64 = self.value.as_atomic();
        let mut seq = word.load(Ordering::Acquire);
        for _ in 0..n {
            word.store(seq + 1, Ordering::Release);
            while word.load(Ordering::Acquire) != seq + 2 {
                std::hint::spin_loop();
            }
            seq += 2;
        }
    }
    fn serve(&self) {
        let word: &AtomicU64 = self.value.as_atomic();
        loop {
            let w = word.load(Ordering::Acquire);
            if w == SPIN_STOP {
                return;
            }
            if w % 2 == 1 {
                word.store(w + 1, Ordering::Release);
            } else {
                std::hint::spin_loop();
            }
        }
    }
    fn stop(&self) {
        self.value.as_atomic().store(SPIN_STOP, Ordering::Release);
    }
}

/// The floor of a hand-off between two processes on one CPU: the same odd/even
/// word, and every wait a bare `sched_yield` loop (on one CPU the partner runs
/// only when this side gives the core up; one system call and one context switch
/// per move, nothing else). Measured only with both pinned to one CPU: on two it
/// would be a busy wait.
#[derive(Clone)]
struct Yield {
    value: RawValue<u32>,
}

impl Yield {
    fn word(&self) -> &AtomicU32 {
        self.value.as_atomic()
    }

    /// Yields until the word is not `value` (panics after [`PATIENCE`]).
    fn yield_while(&self, value: u32) -> u32 {
        let mut deadline = None;
        let mut yielded = false;
        loop {
            let w = self.word().load(Ordering::Acquire);
            if w != value {
                return w;
            }
            // The clock only after a yield that brought no answer: the first
            // yield is the hand-off, and the look right after it is all a
            // hand-off costs here.
            if yielded {
                let end = *deadline.get_or_insert_with(|| Instant::now() + PATIENCE);
                assert!(Instant::now() < end, "no answer to the yield");
            }
            rustix::thread::sched_yield();
            yielded = true;
        }
    }
}

impl PingPong for Yield {
    fn ping(&self, n: u64) {
        let mut seq = self.word().load(Ordering::Acquire);
        for _ in 0..n {
            self.word().store(seq + 1, Ordering::Release);
            self.yield_while(seq + 1);
            seq += 2;
        }
    }
    fn serve(&self) {
        let mut w = self.word().load(Ordering::Acquire);
        loop {
            if w == FUTEX_STOP {
                return;
            }
            if w % 2 == 1 {
                self.word().store(w + 1, Ordering::Release);
                w += 1;
            }
            w = self.yield_while(w);
        }
    }
    fn stop(&self) {
        self.word().store(FUTEX_STOP, Ordering::Release);
    }
}

/// A raw futex ping-pong: the same odd/even word, but every wait is a futex wait
/// and every move a futex wake, with no spinning at all.
#[derive(Clone)]
struct Futex {
    value: RawValue<u32>,
}

const FUTEX_STOP: u32 = u32::MAX;

impl Futex {
    fn word(&self) -> &AtomicU32 {
        self.value.as_atomic()
    }

    fn wait_while(&self, value: u32, deadline: Instant) {
        let second = rustix::time::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // The futex system call itself, as the floor: EAGAIN (the word moved),
        // EINTR and a timeout all just return to the caller's re-check.
        let _ = futex::wait(self.word(), futex::Flags::empty(), value, Some(&second));
        assert!(Instant::now() < deadline, "no answer on the futex");
    }
}

impl PingPong for Futex {
    fn ping(&self, n: u64) {
        let mut seq = self.word().load(Ordering::Acquire);
        for _ in 0..n {
            self.word().store(seq + 1, Ordering::Release);
            let _ = futex::wake(self.word(), futex::Flags::empty(), 1);
            let deadline = Instant::now() + PATIENCE;
            while self.word().load(Ordering::Acquire) != seq + 2 {
                self.wait_while(seq + 1, deadline);
            }
            seq += 2;
        }
    }
    fn serve(&self) {
        let mut deadline = Instant::now() + PATIENCE;
        loop {
            let w = self.word().load(Ordering::Acquire);
            if w == FUTEX_STOP {
                return;
            }
            if w % 2 == 1 {
                self.word().store(w + 1, Ordering::Release);
                let _ = futex::wake(self.word(), futex::Flags::empty(), 1);
                deadline = Instant::now() + PATIENCE;
            } else {
                self.wait_while(w, deadline);
            }
        }
    }
    fn stop(&self) {
        self.word().store(FUTEX_STOP, Ordering::Release);
        let _ = futex::wake(self.word(), futex::Flags::empty(), 1);
    }
}

/// How many round trips one timed batch takes: about `target` long.
fn calibrate(pair: &impl PingPong, target: Duration) -> u64 {
    let probe = 50;
    let t = Instant::now();
    pair.ping(probe);
    let per = (ns_since(t) / probe).max(1);
    (target.as_nanos() as u64 / per).clamp(20, 2_000_000)
}

/// Pins the calling process to the first CPU it may run on (the same one in both
/// partners, since they inherit the bench's affinity).
fn pin_to_first_allowed_cpu() {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    let allowed = sched_getaffinity(None).expect("reading the CPU affinity");
    let first = (0..CpuSet::MAX_CPU)
        .find(|&c| allowed.is_set(c))
        .expect("some CPU is allowed");
    let mut one = CpuSet::new();
    one.set(first);
    sched_setaffinity(None, &one).expect("pinning to one CPU");
}

/// Round-trip times (ns) over `reps` batches, between two fresh processes; both
/// pinned to the same CPU when `one_core`.
fn measure(
    pair: impl PingPong,
    reps: usize,
    target: Duration,
    one_core: bool,
) -> multiproc::Result<Vec<f64>> {
    // Slots: `reps` batch durations, then the batch size.
    let out = samples_from_children(2, reps + 1, move |i, out| {
        if one_core {
            pin_to_first_allowed_cpu();
        }
        if i == 1 {
            pair.serve();
            return;
        }
        let n = calibrate(&pair, target);
        out.set(reps, n).unwrap();
        for r in 0..reps {
            let t = Instant::now();
            pair.ping(n);
            out.set(r, ns_since(t)).unwrap();
        }
        pair.stop();
    })?;
    let n = out[reps].max(1) as f64;
    Ok(out[..reps].iter().map(|&ns| ns as f64 / n).collect())
}

fn events() -> multiproc::Result<Events> {
    Ok(Events {
        ping: Event::new()?,
        pong: Event::new()?,
        stop: RawValue::new(0)?,
    })
}

fn semaphores() -> multiproc::Result<Semaphores> {
    Ok(Semaphores {
        ping: Semaphore::new(0)?,
        pong: Semaphore::new(0)?,
        stop: RawValue::new(0)?,
    })
}

fn conditions() -> multiproc::Result<Conditions> {
    Ok(Conditions {
        cond: Condition::new()?,
        turn: RawValue::new(0)?,
    })
}

fn spin() -> multiproc::Result<Spin> {
    // The word sits in its own arena block: alone on its cache line, or sharing
    // it with that block's header only.
    Ok(Spin {
        value: RawValue::new(0)?,
    })
}

fn raw_futex() -> multiproc::Result<Futex> {
    Ok(Futex {
        value: RawValue::new(0)?,
    })
}

fn raw_yield() -> multiproc::Result<Yield> {
    Ok(Yield {
        value: RawValue::new(0)?,
    })
}

/// std channels between two threads: the in-process reference.
fn threads(reps: usize, target: Duration) -> Vec<f64> {
    use std::sync::mpsc::channel;
    let (to_b, from_a) = channel::<u64>();
    let (to_a, from_b) = channel::<u64>();
    let b = std::thread::spawn(move || {
        while let Ok(x) = from_a.recv() {
            if x == u64::MAX || to_a.send(x).is_err() {
                return;
            }
        }
    });
    let batch = |n: u64| {
        for i in 0..n {
            to_b.send(i).unwrap();
            from_b.recv().unwrap();
        }
    };
    let t = Instant::now();
    batch(50);
    let n = (target.as_nanos() as u64 / (ns_since(t) / 50).max(1)).clamp(20, 2_000_000);
    let out = (0..reps)
        .map(|_| {
            let t = Instant::now();
            batch(n);
            ns_since(t) as f64 / n as f64
        })
        .collect();
    to_b.send(u64::MAX).unwrap();
    b.join().expect("the echo thread panicked");
    out
}

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let reps = ctx.pick(5, 15);
    let target = ctx.pick(Duration::from_millis(30), Duration::from_millis(100));
    let us = |v: Vec<f64>| v.into_iter().map(|ns| ns / 1e3).collect::<Vec<f64>>();

    ctx.step("multiproc Event ping-pong");
    let v = us(measure(events()?, reps, target, false)?);
    ctx.record("multiproc", EVENT, 2, "us", &v);

    ctx.step("multiproc Semaphore ping-pong");
    let v = us(measure(semaphores()?, reps, target, false)?);
    ctx.record("multiproc", SEMAPHORE, 2, "us", &v);

    ctx.step("floor: spin on one cache line");
    let floor = us(measure(spin()?, reps, target, false)?);
    ctx.step("raw futex ping-pong");
    let fx = us(measure(raw_futex()?, reps, target, false)?);

    ctx.step("multiproc Event, both on one core");
    let busy_reps = ctx.pick(3, 7);
    let v = us(measure(events()?, busy_reps, target, true)?);
    ctx.record("multiproc", EVENT_BUSY, 2, "us", &v);
    ctx.step("multiproc Semaphore, both on one core");
    let v = us(measure(semaphores()?, busy_reps, target, true)?);
    ctx.record("multiproc", SEMAPHORE_BUSY, 2, "us", &v);
    ctx.step("multiproc Condition, both on one core");
    let v = us(measure(conditions()?, busy_reps, target, true)?);
    ctx.record("multiproc", CONDITION_BUSY, 2, "us", &v);
    ctx.step("raw futex, both on one core");
    let v = us(measure(raw_futex()?, busy_reps, target, true)?);
    ctx.record("futex", EVENT_BUSY, 2, "us", &v);
    ctx.record("futex", SEMAPHORE_BUSY, 2, "us", &v);
    ctx.record("futex", CONDITION_BUSY, 2, "us", &v);
    ctx.step("raw sched_yield, both on one core");
    let v = us(measure(raw_yield()?, busy_reps, target, true)?);
    ctx.record("yield", EVENT_BUSY, 2, "us", &v);
    ctx.record("yield", SEMAPHORE_BUSY, 2, "us", &v);
    ctx.record("yield", CONDITION_BUSY, 2, "us", &v);

    ctx.step("threads: std mpsc channels");
    // After every fork of this scenario: the echo thread is joined before the next.
    let th = us(threads(reps, target));
    for metric in [EVENT, SEMAPHORE] {
        ctx.record("floor", metric, 2, "us", &floor);
        ctx.record("futex", metric, 2, "us", &fx);
        ctx.record("threads", metric, 2, "us", &th);
    }
    Ok(())
}
