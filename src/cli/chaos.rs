//! `multiproc chaos --seconds N [--processes P]`: worker processes hammer shared
//! objects while a supervisor kills random ones with SIGKILL and starts
//! replacements; at the end the survivors finish, and the command checks that the
//! counter equals the number of increments that completed, that nothing hung and
//! that nothing leaked. It ends with one line:
//!
//! ```text
//! chaos: K kills, H hangs, counter C of E, leaked L
//! ```
//! and exits non-zero unless H = 0, C = E and L = 0.
//!
//! ## What the workers do
//! Each worker owns a *slot* (a replacement takes over the slot of the worker it
//! replaces) and runs cycles until the stop Event is set. A cycle is:
//! - increments of the shared `Value<u64>` under its lock (the journal protocol
//!   below) for [`INCREMENT_PHASE`], with, every few increments, a nested
//!   (two-level) section under an `RLock` that moves two words in step
//!   (`pair[0] == pair[1]` between sections);
//! - a `Condition` section: alternately produce (take the lock, bump a
//!   ticket, `notify(1)`) or consume (take the lock, `wait_for` a new ticket, at
//!   most 5 ms). Workers are killed inside `wait` and holding the lock; an
//!   `OwnerDied` on the Condition's lock is marked consistent (the ticket is one
//!   atomic word: nothing to repair);
//! - an `Event` and `Semaphore` section for [`SIGNAL_PHASE`]: alternately pulse
//!   the shared Event (`set(); clear()`) or `wait(None)` on it, and release then
//!   `acquire(None)` the shared Semaphore (initially 0). So workers are killed
//!   between a set or release and its wake call. Nothing here may hang: the
//!   supervisor pulses the Event every few milliseconds (a `wait` returns after
//!   any set, even one cleared at once), and every acquirer released one permit
//!   before, while a kill only removes acquirers or leaves a permit over, so
//!   `value >= acquirers waiting` always. A sleeper stranded by a killed setter or
//!   releaser shows as a hang;
//! - a `Barrier` round of all the workers (each worker `register()`s,
//!   so one killed before arriving breaks the round too). A broken round is counted
//!   and the worker goes on; the supervisor `reset()`s a broken barrier, and
//!   `abort()`s it at the end so that no survivor waits for a dead party;
//! - a heartbeat: its slot's `beat` word, bumped after each of these steps.
//!
//! Workers of odd slots also run a busy thread that does increments and RLock
//! sections (sharing the slot's journal: its entries are written only under the
//! counter's lock), so that SIGKILL lands in multi-threaded processes holding
//! locks. The worker stops and joins it before it exits.
//!
//! ## The journal: exact counts although workers die mid-critical-section
//! An increment *completes* when its worker records it in its slot's `done` word.
//! Per slot, shared memory holds `pending`, `from` and `done_before`. Under the
//! Value's lock, a worker:
//! 1. reads `v = counter` and `d = done[slot]`;
//! 2. writes `from = v`, `done_before = d`, then `pending = 1` (the journal entry);
//! 3. writes `counter = v + 1`;
//! 4. writes `done[slot] = d + 1` (the increment is now recorded: it completed);
//! 5. writes `pending = 0`, then releases the lock.
//!
//! All of these are sequentially consistent atomic stores, so they reach shared
//! memory in this order, and SIGKILL can only cut the sequence between two of them.
//! A `pending` entry therefore exists only while its worker holds the lock, or after
//! it died holding it, in which case the next acquirer gets `OwnerDied` and
//! *repairs*: for every slot with `pending = 1`, if `done == done_before + 1` the
//! increment was recorded and `counter = from + 1`; otherwise it was not and the
//! counter is rolled back to `from`; then `pending = 0`, and `mark_consistent()`.
//! Repair is idempotent (the entry is cleared last), so a repairer that is itself
//! killed mid-repair leaves the lock inconsistent and the next one repairs again.
//! Hence, at the end, `counter == sum(done)` exactly: C = E.
//!
//! ## Hangs and leaks
//! A worker whose heartbeat does not move for [`HANG_BOUND`] hangs (it is counted
//! and killed); so does one that does not exit within the bound after the stop, or
//! a final acquire of the counter's lock that does not succeed within it. The
//! supervisor itself never waits without a timeout. `leaked` counts new `/dev/shm`
//! entries created by the run's processes plus processes still mapping the run's
//! shared memory after every worker was reaped (an orphan would keep it alive).

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use multiproc::shm::clean;
use multiproc::{
    Barrier, Condition, Error, Event, Process, RLock, RawValue, Semaphore, TryLockError, Value,
};

/// A worker whose heartbeat stays still this long is hung.
const HANG_BOUND: Duration = Duration::from_secs(5);
/// The RLock section runs every this many rounds.
const RLOCK_EVERY: u64 = 8;
/// Each cycle of a worker: increments (and RLock sections) for this long, then one
/// Condition section, then one Barrier round.
const INCREMENT_PHASE: Duration = Duration::from_millis(5);
/// Each cycle's Event and Semaphore section lasts this long.
const SIGNAL_PHASE: Duration = Duration::from_millis(2);
/// The longest a consumer waits for a ticket.
const CONSUME_TIMEOUT: Duration = Duration::from_millis(5);

/// One slot's words in shared memory.
#[derive(Clone)]
struct Slot {
    pending: RawValue<u64>,
    from: RawValue<u64>,
    done_before: RawValue<u64>,
    done: RawValue<u64>,
    beat: RawValue<u64>,
}

impl Slot {
    fn new() -> multiproc::Result<Slot> {
        Ok(Slot {
            pending: RawValue::new(0)?,
            from: RawValue::new(0)?,
            done_before: RawValue::new(0)?,
            done: RawValue::new(0)?,
            beat: RawValue::new(0)?,
        })
    }
}

/// Everything the workers share.
#[derive(Clone)]
struct Shared {
    counter: Value<u64>,
    slots: Vec<Slot>,
    rlock: RLock,
    pair: [RawValue<u64>; 2],
    barrier: Barrier,
    cond: Condition,
    tickets: RawValue<u64>,
    /// Pulsed (`set(); clear()`) by workers and the supervisor, waited for.
    pulse: Event,
    /// Released then acquired by workers: starts at 0, never below the waiters.
    sem: Semaphore,
    /// Event waits and Semaphore acquires that returned.
    pulses_seen: RawValue<u64>,
    acquired: RawValue<u64>,
    stop: Event,
    /// Barrier rounds passed and broken (as seen by workers).
    passed: RawValue<u64>,
    broken: RawValue<u64>,
    /// Condition waits that were notified, timed out, or saw OwnerDied.
    notified: RawValue<u64>,
    timed_out: RawValue<u64>,
    cond_died: RawValue<u64>,
    /// Statistics: `OwnerDied` takeovers of the counter's lock, and journal entries
    /// found pending whose increment was recorded (kept) or not (rolled back).
    takeovers: RawValue<u64>,
    kept: RawValue<u64>,
    rolled_back: RawValue<u64>,
}

impl Shared {
    /// Fixes the counter from the journal (call holding the counter's lock after
    /// `OwnerDied`); returns how many entries were pending.
    fn repair_counter(&self, counter: &mut u64) -> u32 {
        let mut fixed = 0;
        for s in &self.slots {
            if s.pending.load() == 1 {
                let from = s.from.load();
                let recorded = s.done.load() == s.done_before.load() + 1;
                *counter = if recorded { from + 1 } else { from };
                s.pending.store(0);
                if recorded {
                    self.kept.fetch_add(1);
                } else {
                    self.rolled_back.fetch_add(1);
                }
                fixed += 1;
            }
        }
        fixed
    }

    fn increment(&self, slot: &Slot) {
        let mut guard = match self.counter.lock() {
            Ok(g) => g,
            Err(died) => {
                let mut g = died.into_inner();
                self.takeovers.fetch_add(1);
                self.repair_counter(&mut g);
                g.mark_consistent();
                g
            }
        };
        let v = *guard;
        let d = slot.done.load();
        slot.from.store(v);
        slot.done_before.store(d);
        slot.pending.store(1);
        *guard = v + 1;
        slot.done.store(d + 1);
        slot.pending.store(0);
        drop(guard);
    }

    fn rlock_section(&self) {
        let outer = match self.rlock.lock() {
            Ok(g) => g,
            Err(died) => {
                let g = died.into_inner();
                // Repair: the second word follows the first.
                self.pair[1].store(self.pair[0].load());
                g.mark_consistent();
                g
            }
        };
        let inner = self.rlock.lock().unwrap_or_else(|d| d.into_inner());
        self.pair[0].fetch_add(1);
        self.pair[1].fetch_add(1);
        drop(inner);
        drop(outer);
    }

    fn barrier_section(&self) {
        match self.barrier.wait(None) {
            Ok(_) => self.passed.fetch_add(1),
            Err(Error::BrokenBarrier(_)) => self.broken.fetch_add(1),
            Err(e) => panic!("Barrier::wait: {e}"),
        };
    }

    fn condition_section(&self, produce: bool) {
        let guard = match self.cond.lock() {
            Ok(g) => g,
            Err(died) => {
                let g = died.into_inner();
                self.cond_died.fetch_add(1);
                g.mark_consistent();
                g
            }
        };
        if produce {
            self.tickets.fetch_add(1);
            self.cond.notify(1).expect("holding the lock");
        } else {
            let seen = self.tickets.load();
            match self
                .cond
                .wait_for(|| self.tickets.load() != seen, Some(CONSUME_TIMEOUT))
            {
                Ok(true) => self.notified.fetch_add(1),
                Ok(false) => self.timed_out.fetch_add(1),
                Err(Error::OwnerDied) => {
                    // The lock is held again: nothing to repair.
                    guard.mark_consistent();
                    self.cond_died.fetch_add(1)
                }
                Err(e) => panic!("Condition::wait_for: {e}"),
            };
        }
        drop(guard);
    }

    fn signal_section(&self, k: &mut u64) {
        let phase_end = Instant::now() + SIGNAL_PHASE;
        while Instant::now() < phase_end && !self.stop.is_set() {
            *k += 1;
            if *k % 2 == 0 {
                self.pulse.set();
                self.pulse.clear();
            } else {
                self.pulse.wait(None).expect("no timeout");
                self.pulses_seen.fetch_add(1);
            }
            self.sem.release().expect("far below VALUE_MAX");
            assert!(self.sem.acquire(true, None).expect("no timeout"));
            self.acquired.fetch_add(1);
        }
    }

    /// The busy thread of a multi-threaded worker: increments and RLock sections.
    fn busy(&self, me: &Slot, quit: &AtomicBool) {
        let mut n = 0u64;
        while !quit.load(Ordering::Relaxed) {
            self.increment(me);
            n += 1;
            if n % RLOCK_EVERY == 0 {
                self.rlock_section();
            }
        }
    }

    fn work(&self, slot: usize) {
        if slot % 2 == 1 {
            let quit = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| self.busy(&self.slots[slot], &quit));
                self.work_cycles(slot);
                quit.store(true, Ordering::Relaxed);
            });
        } else {
            self.work_cycles(slot);
        }
    }

    fn work_cycles(&self, slot: usize) {
        let me = &self.slots[slot];
        // Registered, a worker killed before arriving breaks the round at once. A
        // barrier takes at most 32 registrations (dead workers' are reused); past
        // that, a worker runs unregistered and its replacement completes the round.
        let _ = self.barrier.register();
        let mut cycle = 0u64;
        let mut n = 0u64;
        let mut k = slot as u64;
        while !self.stop.is_set() {
            // Time-boxed phases, so that kills (random in time) land in each kind
            // of section, not only in the slowest one.
            let phase_end = Instant::now() + INCREMENT_PHASE;
            while Instant::now() < phase_end {
                self.increment(me);
                n += 1;
                if n % RLOCK_EVERY == 0 {
                    self.rlock_section();
                }
            }
            me.beat.fetch_add(1);
            self.condition_section((cycle + slot as u64) % 2 == 0);
            me.beat.fetch_add(1);
            self.signal_section(&mut k);
            me.beat.fetch_add(1);
            self.barrier_section();
            me.beat.fetch_add(1);
            cycle += 1;
        }
        self.barrier.unregister();
    }
}

/// A tiny xorshift generator: which worker to kill and when.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let mut b = [0u8; 8];
        let seed = if getrandom::fill(&mut b).is_ok() {
            u64::from_le_bytes(b)
        } else {
            Instant::now().elapsed().as_nanos() as u64
        };
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

struct Worker {
    process: Process,
    last_beat: u64,
    since: Instant,
}

fn start(shared: &Shared, slot: usize, pids: &mut HashSet<u32>) -> multiproc::Result<Worker> {
    let s = shared.clone();
    // Daemon: killed if the supervisor dies, so no worker outlives a run.
    let mut process = Process::new(move || s.work(slot))
        .with_name(format!("chaos-worker-{slot}"))
        .daemon(true);
    process.start()?;
    pids.extend(process.pid());
    Ok(Worker {
        process,
        last_beat: shared.slots[slot].beat.load(),
        since: Instant::now(),
    })
}

/// Kills a worker and reaps it; false if it could not be reaped within the bound.
fn kill(w: &mut Worker) -> bool {
    let _ = w.process.kill();
    matches!(w.process.join(Some(HANG_BOUND)), Ok(Some(_)))
}

/// Inodes of the multiproc memfds that process `pid` maps.
fn memfd_inodes(pid: &str) -> HashSet<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/memfd:multiproc"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

/// Processes other than this one that map one of `inodes`.
fn processes_mapping(inodes: &HashSet<u64>) -> usize {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| pid != me && !memfd_inodes(&pid.to_string()).is_disjoint(inodes))
                .count()
        })
        .unwrap_or(0)
}

fn dev_shm() -> HashSet<String> {
    std::fs::read_dir(clean::SHM_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What a run found.
struct Outcome {
    kills: u64,
    hangs: u64,
    counter: u64,
    expected: u64,
    leaked: usize,
    rlock_ok: bool,
}

fn run(seconds: f64, processes: usize, kill_every: Duration) -> multiproc::Result<Outcome> {
    let before = dev_shm();
    let shared = Shared {
        counter: Value::new(0)?,
        slots: (0..processes)
            .map(|_| Slot::new())
            .collect::<multiproc::Result<_>>()?,
        rlock: RLock::new()?,
        pair: [RawValue::new(0)?, RawValue::new(0)?],
        barrier: Barrier::new(processes)?,
        cond: Condition::new()?,
        tickets: RawValue::new(0)?,
        pulse: Event::new()?,
        sem: Semaphore::new(0)?,
        pulses_seen: RawValue::new(0)?,
        acquired: RawValue::new(0)?,
        stop: Event::new()?,
        passed: RawValue::new(0)?,
        broken: RawValue::new(0)?,
        notified: RawValue::new(0)?,
        timed_out: RawValue::new(0)?,
        cond_died: RawValue::new(0)?,
        takeovers: RawValue::new(0)?,
        kept: RawValue::new(0)?,
        rolled_back: RawValue::new(0)?,
    };
    let mut pids: HashSet<u32> = HashSet::from([std::process::id()]);
    let mut workers: Vec<Worker> = (0..processes)
        .map(|slot| start(&shared, slot, &mut pids))
        .collect::<multiproc::Result<_>>()?;
    let mut rng = Rng::new();
    let (mut kills, mut hangs) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let period = kill_every.as_micros() as u64;
    let mut next_kill = Instant::now() + Duration::from_micros(period / 2 + rng.below(period));

    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5).min(kill_every));
        // The pulse every Event waiter returns after, whoever died mid-pulse.
        shared.pulse.set();
        shared.pulse.clear();
        // A round broken by a death: open a fresh one for the live workers.
        if shared.barrier.broken() {
            shared.barrier.reset();
        }
        let now = Instant::now();
        // Hang watch: every live worker's heartbeat must move.
        for (slot, w) in workers.iter_mut().enumerate() {
            let beat = shared.slots[slot].beat.load();
            if beat != w.last_beat {
                w.last_beat = beat;
                w.since = now;
            } else if now.duration_since(w.since) > HANG_BOUND {
                eprintln!("chaos: worker in slot {slot} made no progress for {HANG_BOUND:?}");
                hangs += 1;
                if !kill(w) {
                    hangs += 1;
                }
                *w = start(&shared, slot, &mut pids)?;
            }
        }
        if now >= next_kill {
            let slot = rng.below(processes as u64) as usize;
            kills += 1;
            if !kill(&mut workers[slot]) {
                eprintln!("chaos: a killed worker was not reaped within {HANG_BOUND:?}");
                hangs += 1;
            }
            workers[slot] = start(&shared, slot, &mut pids)?;
            next_kill = Instant::now() + Duration::from_micros(period / 2 + rng.below(period));
        }
    }

    // The survivors finish; abort the barrier so that none waits for a party that
    // has already left.
    shared.stop.set();
    shared.pulse.set();
    shared.barrier.abort();
    for (slot, mut w) in workers.into_iter().enumerate() {
        match w.process.join(Some(HANG_BOUND)) {
            Ok(Some(0)) => {}
            Ok(Some(code)) => {
                eprintln!("chaos: worker in slot {slot} exited with {code}");
                hangs += 1;
            }
            _ => {
                eprintln!("chaos: worker in slot {slot} did not finish within {HANG_BOUND:?}");
                hangs += 1;
                kill(&mut w);
            }
        }
    }

    // Final reading, repairing if the last holder was killed inside.
    let counter = match shared.counter.try_lock_for(HANG_BOUND) {
        Ok(g) => *g,
        Err(TryLockError::OwnerDied(died)) => {
            let mut g = died.into_inner();
            shared.repair_counter(&mut g);
            g.mark_consistent();
            *g
        }
        Err(_) => {
            eprintln!("chaos: the counter's lock stayed held after every worker ended");
            hangs += 1;
            0
        }
    };
    let expected: u64 = shared.slots.iter().map(|s| s.done.load()).sum();
    let rlock_ok = match shared.rlock.try_lock_for(HANG_BOUND) {
        Ok(_) => shared.pair[0].load() == shared.pair[1].load(),
        Err(TryLockError::OwnerDied(died)) => {
            let _g = died.into_inner();
            shared.pair[1].store(shared.pair[0].load());
            true
        }
        Err(_) => {
            hangs += 1;
            false
        }
    };

    // Leaks: new /dev/shm entries made by this run, and other processes that
    // still map this run's shared memory.
    let ours: HashSet<String> = clean::scan()?
        .into_iter()
        .filter(|s| pids.contains(&s.creator_pid))
        .flat_map(|s| [s.name, s.record])
        .collect();
    let leaked_files = dev_shm()
        .difference(&before)
        .filter(|n| ours.contains(*n))
        .count();
    let leaked = leaked_files + processes_mapping(&memfd_inodes("self"));
    println!(
        "chaos: barrier: {} passes, {} broken waits; condition: {} notified, {} timed out, {} OwnerDied",
        shared.passed.load(),
        shared.broken.load(),
        shared.notified.load(),
        shared.timed_out.load(),
        shared.cond_died.load()
    );
    println!(
        "chaos: event: {} waits returned; semaphore: {} acquires",
        shared.pulses_seen.load(),
        shared.acquired.load()
    );
    println!(
        "chaos: {} takeovers of the counter's lock with OwnerDied; journal: {} increments confirmed, {} rolled back",
        shared.takeovers.load(),
        shared.kept.load(),
        shared.rolled_back.load()
    );
    Ok(Outcome {
        kills,
        hangs,
        counter,
        expected,
        leaked,
        rlock_ok,
    })
}

/// Runs `multiproc chaos`.
pub fn main(seconds: f64, processes: usize, kill_every_ms: u64) -> ExitCode {
    if !(seconds.is_finite() && seconds > 0.0) || processes == 0 || kill_every_ms == 0 {
        eprintln!("chaos: --seconds, --processes and --kill-every-ms must be positive");
        return ExitCode::FAILURE;
    }
    println!(
        "chaos: {processes} worker processes for {seconds} s (Value + Lock with a journal, RLock, Barrier, Condition, Event, Semaphore; odd slots multi-threaded), \
         SIGKILL to a random one every ~{kill_every_ms} ms"
    );
    let o = match run(seconds, processes, Duration::from_millis(kill_every_ms)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chaos: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !o.rlock_ok {
        println!("chaos: the RLock-protected pair was left out of step");
    }
    println!(
        "chaos: {} kills, {} hangs, counter {} of {}, leaked {}",
        o.kills, o.hangs, o.counter, o.expected, o.leaked
    );
    if o.hangs == 0 && o.counter == o.expected && o.leaked == 0 && o.rlock_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
