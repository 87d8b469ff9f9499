//! Adaptive spinning: how long to spin before a futex sleep, learned per handle.
//!
//! Spinning pays when the partner answers within a few hundred nanoseconds on the
//! other core; it wastes the core when the partner is not running (more runnable
//! processes than cores: on 2 cores, spinning while the other side waits for a CPU
//! delays it, and burns the waiter's scheduler credit so that its own wake-up no
//! longer preempts). [`AdaptiveSpin`] keeps a budget of spin iterations:
//!
//! - a spin that succeeds doubles the budget (at least to `4k + MIN` after `k`
//!   iterations, at most [`MAX`]): a large budget costs nothing while spins
//!   succeed early, and rides out the occasional hiccup (an interrupt, a tick)
//!   that would otherwise send both partners to sleep;
//! - a spin that fails (the caller goes to sleep) halves it, down to [`MIN`];
//! - a sleep that found the word already changed (the answer came just after the
//!   spin gave up) doubles it;
//! - one wait in [`PROBE_EVERY`] that had to sleep *probes*: it spins for up to
//!   [`PROBE_TIME`], longer than a futex wake-up takes on a virtual machine whose
//!   idle vCPU is halted (tens of microseconds). Two partners that both sleep
//!   answer each other only as fast as a wake-up (the slow regime); a probe that
//!   outlasts the partner's wake-up catches its answer, resets the budget to
//!   [`MAX`], and the partners fall back into the fast regime where both spin.
//!   A probe that fails doubles the number of sleeps until the next one (up to
//!   [`PROBE_MAX_GAP`]), so that under lasting oversubscription probing costs
//!   next to nothing; one that succeeds brings the gap back to [`PROBE_EVERY`].
//!
//! [`yield_until`] is a **yield phase** to run between a failed spin and the futex
//! sleep, for more runnable processes than cores. The contended path of the raw
//! lock uses it (the holder is often the process it hands the core to), and so
//! does every `AdaptiveSpin` wait whose processes outnumber this thread's CPUs
//! (the caller says how many take part: a Barrier's parties, 2 for an Event or a
//! Semaphore, so those yield only when confined to one CPU, where the partner
//! can run nowhere else). An Event or Semaphore waiter on several CPUs does not:
//! its partner may not be on this core, and a yield among busy processes costs a
//! time slice (measured: 50x fewer Event waits per second in the chaos run, whose
//! workers have busy threads). Waking a
//! futex sleeper costs tens of microseconds on a virtual machine whose idle vCPU
//! halts, while `sched_yield` hands this core straight to a runnable process —
//! often the very partner that will answer. The phase watches what each yield
//! took: one that returns at once (under [`YIELD_QUICK`]) means nobody else wanted
//! this core, so yielding would be a busy wait; after [`QUICK_YIELDS`] of those in
//! a row the caller sleeps. One that took long (over [`YIELD_SLOW`]) ran a busy
//! process rather than a partner that hands the core back: the caller sleeps too,
//! since a futex wake-up preempts a busy process at once while yields would wait
//! for its time slices. Every yield that ran someone else costs this process
//! nothing (the core did that other work), and the whole phase ends after
//! [`YIELD_TIME`] at most, so a long wait still sleeps on the futex, and the
//! owner checks of the sleeping loop follow within that bound.
//!
//! Confined to one CPU, a wait does not spin at all (nor probe): its partner
//! cannot run while it spins, so it goes straight to the yield phase (a
//! contended raw lock's wait too: it skips its own spin). An Event's, a
//! Semaphore's, a Condition's and a Barrier's wait makes its first yield there
//! inline, in the caller's frame ([`hand_off`]), and enters its out-of-line
//! wait (and the yield phase) only when that yield brought no answer: a return
//! across the context switch costs a quarter of the hand-off on this machine
//! (see [`hand_off`]). A Condition has no spin budget: its yield phase is
//! [`yield_phase_on_one_cpu`], and on several CPUs it sleeps at once.
//!
//! The budget is process-local (a field of the handle, not shared memory): it
//! describes how this process and its partners are scheduled, and costs no shared
//! cache line. Relaxed atomics only: it is a hint, races merely blur it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::raw_lock::OWNER_CHECK_INTERVAL;

/// The most iterations one spin takes (a `pause` is 10 to 70 cycles by CPU).
pub(crate) const MAX: u32 = 200;
/// The fewest: a partner on the other core that is already answering is caught
/// (what lets two partners that both slept find the fast regime again; 2 was too
/// few to do so reliably here, 8 cost 3 to 4% when both share one CPU, 4 neither).
pub(crate) const MIN: u32 = 4;
/// One wait in this many that had to sleep probes (spins up to [`PROBE_TIME`]).
pub(crate) const PROBE_EVERY: u32 = 32;
/// The most sleeps between two probes.
pub(crate) const PROBE_MAX_GAP: u32 = 4096;
/// How long a probe spins at most.
pub(crate) const PROBE_TIME: Duration = Duration::from_micros(60);

/// The longest yield phase before a futex sleep.
pub(crate) const YIELD_TIME: Duration = Duration::from_micros(200);
/// A yield that returned in less than this ran nobody else.
pub(crate) const YIELD_QUICK: Duration = Duration::from_micros(2);
/// This many quick yields in a row end the phase: the core is not contended.
pub(crate) const QUICK_YIELDS: u32 = 2;
/// A yield that took longer than this ran a process that did not answer (a busy
/// one, not a partner handing the core back): the phase ends, and the futex sleep
/// lets the kernel's wake-up preemption bring this waiter back as soon as it is
/// answered, instead of after the busy process's time slices.
pub(crate) const YIELD_SLOW: Duration = Duration::from_micros(50);

/// The futex sleep slice of a waiter that has slept `tick` slices already in this
/// wait, when its slices serve to look for what no wake-up reports (a dead party
/// or owner, a wake-up lost with a process killed between its store and its wake
/// call): the owner-check interval for the first ten (what goes wrong early in a
/// wait, the common case in a crash, is seen within 20 ms), then growing to five
/// times it, so that a long wait wakes ten times a second, not fifty (and is
/// still looked at within 100 ms).
pub(crate) fn sleep_slice(tick: usize) -> Duration {
    OWNER_CHECK_INTERVAL * (1 + (tick / 10).min(4) as u32)
}

/// How many calls of [`cores`] one reading of the affinity serves.
const CORES_REFRESH: u32 = 256;

/// The CPUs this thread may run on (the count of its affinity mask). Read by a
/// system call, then cached per thread for [`CORES_REFRESH`] calls: on one CPU,
/// where every wait ends in a yield hand-off, the system call was a sixth of the
/// hand-off. The cache is refilled in a forked child (by the fork generation)
/// and after those calls, so a changed affinity is seen within them; a stale
/// count only picks yield or sleep for those waits, both correct.
///
/// Inline (the cached count, a few instructions): [`hand_off`] runs it in the
/// caller; the refill is out of line.
#[inline]
pub(crate) fn cores() -> usize {
    let generation = crate::sys::fork::generation();
    CORES_CACHE.with(|c| {
        let (g, left, n) = c.get();
        if g == generation && left > 0 {
            c.set((g, left - 1, n));
            return n;
        }
        refill_cores(c, generation)
    })
}

thread_local! {
    // (fork generation, calls left, cores)
    static CORES_CACHE: std::cell::Cell<(u32, u32, usize)> =
        const { std::cell::Cell::new((0, 0, 0)) };
}

/// Reads the affinity into the cache of [`cores`].
#[cold]
#[inline(never)]
fn refill_cores(cache: &std::cell::Cell<(u32, u32, usize)>, generation: u32) -> usize {
    let n = rustix::thread::sched_getaffinity(None).map_or(usize::MAX, |set| set.count() as usize);
    cache.set((generation, CORES_REFRESH - 1, n));
    n
}

/// The first move of a wait confined to one CPU, **inline in the caller**: one
/// `sched_yield` (which runs the partner, the one other runnable process there)
/// and a look at `ready()`; returns whether it became true. `false` at once on
/// several CPUs (no yield then), and when the yield brought no answer: the caller
/// goes on to its out-of-line wait ([`AdaptiveSpin::spin`], which on one CPU
/// starts the yield phase, then the futex sleep).
///
/// Why inline: the first `ret` whose `call` came before a context switch costs
/// about 0.3 us on the machine measured (a PVM guest on AMD EPYC, Linux 6.18:
/// every switch flushes the TLB, and presumably the return predictions), a
/// quarter of a whole one-core hand-off. Measured: a bare `sched_yield`
/// ping-pong gets 30% slower when the yield sits in a function of its own; a
/// second such `ret` costs little more, a call made after the switch nothing,
/// and a clock read or sixteen more pages touched far less. Here the yield and the look
/// after it run in the caller's own frame, which goes on without any `ret`
/// when the partner answered, as the reference `sched_yield` ping-pong does.
#[inline(always)]
pub(crate) fn hand_off(mut ready: impl FnMut() -> bool) -> bool {
    if cores() != 1 {
        return false;
    }
    rustix::thread::sched_yield();
    ready()
}

/// The yield phase ([`yield_until`]) of a wait confined to one CPU, where the
/// process it waits for runs only when this one gives the core up; `false` at
/// once on several CPUs (the partner may be running elsewhere, and a yield among
/// busy processes costs a time slice). For waits that have no [`AdaptiveSpin`]
/// (a Condition's), after their inline [`hand_off`].
#[inline]
pub(crate) fn yield_phase_on_one_cpu(ready: impl FnMut() -> bool) -> bool {
    cores() == 1 && yield_until(ready)
}

/// Yields this core while `ready()` is false, as long as the yields run other
/// processes that hand it back soon, for at most [`YIELD_TIME`]; returns whether
/// it became true.
#[inline]
pub(crate) fn yield_until(mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut quick = 0;
    let mut before = start;
    loop {
        rustix::thread::sched_yield();
        if ready() {
            return true;
        }
        let now = Instant::now();
        if now - before > YIELD_SLOW {
            return false;
        }
        if now - before < YIELD_QUICK {
            quick += 1;
            if quick >= QUICK_YIELDS {
                return false;
            }
        } else {
            quick = 0;
        }
        if now - start >= YIELD_TIME {
            return false;
        }
        before = now;
    }
}

/// A spin budget, adapted to how fast the partner answers (see the module).
#[derive(Debug)]
pub(crate) struct AdaptiveSpin {
    limit: AtomicU32,
    // Sleeps left before the next probe, and the current gap between probes.
    until_probe: AtomicU32,
    gap: AtomicU32,
}

impl Default for AdaptiveSpin {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for AdaptiveSpin {
    /// A new handle starts from what this one has learned.
    fn clone(&self) -> Self {
        AdaptiveSpin {
            limit: AtomicU32::new(self.limit.load(Ordering::Relaxed)),
            until_probe: AtomicU32::new(PROBE_EVERY),
            gap: AtomicU32::new(PROBE_EVERY),
        }
    }
}

impl AdaptiveSpin {
    /// A budget starting at [`MAX`].
    pub(crate) const fn new() -> Self {
        AdaptiveSpin {
            limit: AtomicU32::new(MAX),
            until_probe: AtomicU32::new(PROBE_EVERY),
            gap: AtomicU32::new(PROBE_EVERY),
        }
    }

    /// Spins until `ready()` is true or the budget is spent; returns whether it
    /// became true. A `false` means the caller goes to sleep.
    ///
    /// `processes` take part in what the caller waits for, itself included (2 for
    /// a waiter and its setter, a Barrier's parties). With more of them than the
    /// CPUs this thread may run on, one of them waits for a core, maybe this one:
    /// a failed spin then ends with the yield phase ([`yield_until`]).
    #[inline]
    pub(crate) fn spin(&self, ready: impl FnMut() -> bool, processes: usize) -> bool {
        self.spin_on(cores(), ready, processes)
    }

    /// [`spin`](Self::spin) for a thread that may run on `cores` CPUs.
    #[inline]
    fn spin_on(&self, cores: usize, mut ready: impl FnMut() -> bool, processes: usize) -> bool {
        if cores == 1 {
            // Confined to one CPU, the partner cannot run while this thread spins
            // (nor during a probe): hand the core over at once. The budget is left
            // as it is, for when the affinity widens again.
            return ready() || (processes > 1 && yield_until(ready));
        }
        if self.until_probe.load(Ordering::Relaxed) == 0 {
            return self.probe(ready);
        }
        let limit = self.limit.load(Ordering::Relaxed);
        for k in 0..limit {
            if ready() {
                self.succeeded(k);
                return true;
            }
            std::hint::spin_loop();
        }
        if ready() {
            self.succeeded(limit);
            return true;
        }
        self.failed();
        processes > cores && yield_until(ready)
    }

    #[cold]
    fn probe(&self, mut ready: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        loop {
            for _ in 0..32 {
                if ready() {
                    self.limit.store(MAX, Ordering::Relaxed);
                    self.gap.store(PROBE_EVERY, Ordering::Relaxed);
                    self.until_probe.store(PROBE_EVERY, Ordering::Relaxed);
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= PROBE_TIME {
                let gap = (self.gap.load(Ordering::Relaxed) * 2).min(PROBE_MAX_GAP);
                self.gap.store(gap, Ordering::Relaxed);
                self.until_probe.store(gap, Ordering::Relaxed);
                self.limit.store(MIN, Ordering::Relaxed);
                return false;
            }
        }
    }

    fn succeeded(&self, k: u32) {
        let l = self.limit.load(Ordering::Relaxed);
        let next = (l * 2)
            .max(k.saturating_mul(4).saturating_add(MIN))
            .min(MAX);
        self.limit.store(next, Ordering::Relaxed);
    }

    fn failed(&self) {
        let l = self.limit.load(Ordering::Relaxed);
        self.limit.store((l / 2).max(MIN), Ordering::Relaxed);
        let left = self.until_probe.load(Ordering::Relaxed);
        self.until_probe
            .store(left.saturating_sub(1), Ordering::Relaxed);
    }

    /// The sleep that followed a failed spin found the word already changed: the
    /// answer came just after the spin gave up, so spin longer next time.
    #[inline]
    pub(crate) fn answered_late(&self) {
        let l = self.limit.load(Ordering::Relaxed);
        self.limit.store((l * 2).min(MAX), Ordering::Relaxed);
    }

    /// The current budget in iterations.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yield_phase_ends_on_its_own_and_reports_readiness() {
        assert!(yield_until(|| true));
        // Never ready: the phase still ends (quick yields, or YIELD_TIME), so a
        // caller goes on to its futex sleep.
        let start = Instant::now();
        assert!(!yield_until(|| false));
        // Bounded by the phase's own clock, not by a test sleep: generous margin.
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn shrinks_on_failure_grows_back_on_late_answers_and_success() {
        let s = AdaptiveSpin::new();
        // On two CPUs (whatever this test runs on): on one, a wait skips the spin.
        for _ in 0..10 {
            assert!(!s.spin_on(2, || false, 1));
        }
        assert_eq!(s.limit(), MIN);
        s.answered_late();
        assert_eq!(s.limit(), 2 * MIN);
        let mut n = 0;
        assert!(s.spin_on(
            2,
            || {
                n += 1;
                n > 3
            },
            1
        ));
        assert!(s.limit() >= MIN && s.limit() <= MAX);
        assert_eq!(s.clone().limit(), s.limit());
    }

    #[test]
    fn sleep_slices_grow_from_the_owner_check_interval_to_five_times_it() {
        assert_eq!(sleep_slice(0), OWNER_CHECK_INTERVAL);
        assert_eq!(sleep_slice(9), OWNER_CHECK_INTERVAL);
        assert_eq!(sleep_slice(10), 2 * OWNER_CHECK_INTERVAL);
        assert_eq!(sleep_slice(40), 5 * OWNER_CHECK_INTERVAL);
        assert_eq!(sleep_slice(usize::MAX), 5 * OWNER_CHECK_INTERVAL);
    }

    /// Runs `f` in a fresh thread (whose [`cores`] cache starts empty) allowed
    /// on the first `n` of this thread's CPUs; `None` when fewer are allowed.
    fn on_cpus<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> Option<T> {
        use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
        let allowed = sched_getaffinity(None).unwrap();
        let mut set = CpuSet::new();
        for c in (0..CpuSet::MAX_CPU).filter(|&c| allowed.is_set(c)).take(n) {
            set.set(c);
        }
        if set.count() as usize != n {
            return None;
        }
        Some(std::thread::scope(|s| {
            s.spawn(|| {
                sched_setaffinity(None, &set).unwrap();
                f()
            })
            .join()
            .unwrap()
        }))
    }

    #[test]
    fn the_inline_hand_off_yields_once_and_looks_only_on_one_cpu() {
        let looks = on_cpus(1, || {
            assert_eq!(cores(), 1);
            let mut looks = 0;
            assert!(hand_off(|| {
                looks += 1;
                true
            }));
            assert!(!hand_off(|| {
                looks += 1;
                false
            }));
            looks
        });
        assert_eq!(looks, Some(2), "one look after each yield");
        // On two CPUs the partner may run on the other one: no yield, no look.
        if let Some(n) = on_cpus(2, || (cores(), hand_off(|| panic!("looked")))) {
            assert_eq!(n, (2, false));
        }
    }

    #[test]
    fn the_yield_phase_of_waits_without_a_spin_runs_only_on_one_cpu() {
        let looks = on_cpus(1, || {
            let mut looks = 0;
            assert!(yield_phase_on_one_cpu(|| {
                looks += 1;
                true
            }));
            // Never ready: the phase still ends on its own.
            assert!(!yield_phase_on_one_cpu(|| false));
            looks
        });
        assert_eq!(looks, Some(1));
        if let Some(r) = on_cpus(2, || yield_phase_on_one_cpu(|| panic!("looked"))) {
            assert!(!r, "yielded on two CPUs");
        }
    }

    #[test]
    fn on_one_cpu_a_wait_yields_without_spinning() {
        let s = AdaptiveSpin::new();
        assert!(s.spin_on(1, || true, 2));
        // Never ready: the yield phase ends on its own; the budget is untouched
        // (no spin ran, so none failed).
        assert!(!s.spin_on(1, || false, 2));
        assert_eq!(s.limit(), MAX);
        assert!(!s.spin_on(1, || false, 1), "alone: nobody to yield to");
    }
}

/// Helpers for the unit tests of the primitives that need real processes and the
/// raw words (the integration tests see only the crate-root API).
#[cfg(test)]
pub(crate) mod test_procs {
    use std::time::{Duration, Instant};

    use crate::Process;

    /// The bound on every wait in these tests (a bug fails, never hangs).
    pub(crate) const BOUND: Duration = Duration::from_secs(30);

    /// Starts a child running `f`.
    pub(crate) fn spawn(f: impl FnOnce() + Send + 'static) -> Process {
        let mut p = Process::new(f);
        p.start().expect("fork");
        p
    }

    /// Polls (yielding, no sleep) until `cond` holds; panics after [`BOUND`].
    pub(crate) fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + BOUND;
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    /// Polls until process `pid` is asleep (state `S`); call it once the process
    /// is about to block, so that `S` means it sleeps in that call.
    pub(crate) fn until_asleep(pid: u32) {
        poll_until("the process asleep", || {
            crate::sys::procfs::task_stat(pid).is_some_and(|s| s.state == b'S')
        });
    }

    /// Sends `SIGUSR1` to process `pid` until `done()` (within [`BOUND`]). A
    /// signal that lands while the target is not asleep in a futex (between two
    /// slices) interrupts no wait, so it is sent again after a while.
    pub(crate) fn interrupt_until(pid: u32, what: &str, mut done: impl FnMut() -> bool) {
        use rustix::process::{Pid, Signal, kill_process};
        let end = Instant::now() + BOUND;
        let pid = Pid::from_raw(pid as i32).expect("a started child has a pid");
        loop {
            kill_process(pid, Signal::USR1).expect("kill(SIGUSR1)");
            let again = Instant::now() + Duration::from_millis(100);
            while Instant::now() < again {
                if done() {
                    return;
                }
                std::thread::yield_now();
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
        }
    }

    /// Joins `p` within [`BOUND`] (killing it if it is still running then) and
    /// returns its exit code (`None`: it did not finish in time).
    pub(crate) fn join(mut p: Process) -> Option<i32> {
        let code = p.join(Some(BOUND)).expect("join");
        if code.is_none() {
            let _ = p.kill();
            let _ = p.join(Some(BOUND));
        }
        code
    }
}
