//! The biased lock: a [`RawLock`] that a lone user keeps between calls and enters
//! and leaves with plain stores (no locked instruction), until another user revokes
//! the bias. It is the lock of each side of a queue (`msg::ring`), where one
//! producer and one consumer are the common case and each locked instruction is a
//! full barrier that waits for the frame stores in flight to the other core.
//!
//! ## Layout (64 bytes, all-zero = free and never biased)
//! ```text
//!  0 RawLock (16)  the lock word (thread-owned owner words), flags, an unused u64
//! 16 u64 bias      0, or holder | slot bit 0 << 31 | revoker << 32 | slot bit 1 << 63
//!                  (holder, revoker: thread owner words; revoker 0 = none)
//! 24 u32 grants    slots handed out so far (0..=SLOTS); written under the lock
//! 28 u32 credit    normal holds to go before the next grant; written under the lock
//! 32 u32 busy[4]   busy[s] is 1 while the holder of slot s is inside; only that
//!                  holder stores it (plain stores)
//! 48 u32 wakes     bumped (and futex-woken) when a revocation ends or is undone
//! ```
//!
//! ## States (`word`, `bias`)
//! - **Free** `(0, 0)` and **held** `(x, 0)`: the raw lock's states, unchanged.
//! - **Biased** `(t, H(s, t))`: thread `t` keeps the lock between calls. It enters
//!   with `busy[s] = 1`, a compiler fence, and a load of `bias`: still `H(s, t)`,
//!   it is inside; else it stores `busy[s] = 0` and takes the slow way. It leaves
//!   with `busy[s] = 0`, a compiler fence, and a load of `bias`: changed, it wakes
//!   `busy[s]` (a revoker may sleep there).
//! - **Revoking** `(t, R(s, t, r))`: thread `r` marked the bias with a
//!   compare-exchange, then runs the heavy barrier (`sys::membarrier`), then waits
//!   until `busy[s]` is 0 or `t` is gone; then it takes `word` (`t -> r`, keeping
//!   CONTENDED) and stores `bias = 0`: **held** by `r` (Clean; OwnerDied if `t` died
//!   inside). A revoker that may not wait (`try_lock`, or its deadline passed)
//!   undoes its mark instead (`R -> H`): **biased** again, nothing lost.
//!
//! Transitions into **biased**: a normal unlock by `x` finds `credit` 0, a slot
//! left, no waiter announced (`word == x`) and this process registered for the
//! heavy barrier; it stores `bias = H(grants, x)`, counts the slot, and keeps the
//! word. A revocation sets `credit` to [`PENALTY`]; each normal unlock counts it
//! down, so contended locks stop being biased, and after [`SLOTS`] grants a lock
//! is never biased again.
//!
//! ## Why it is sound
//! - **The asymmetric Dekker.** The holder's store of `busy[s]` and its load of
//!   `bias` are only compiler-ordered; the revoker's store (the mark, a locked
//!   instruction) and its load of `busy[s]` are split by the heavy barrier, which
//!   runs a full barrier on every CPU running a thread of a registered process (the
//!   holder's is: bias is granted only there). So either the holder's store came
//!   before the barrier (the revoker sees `busy[s] = 1` and waits) or its load came
//!   after (it sees the mark and does not enter). If the barrier call fails, the
//!   revoker instead waits until `/proc` shows the holder off its CPU (a context
//!   switch is a full barrier) or gone.
//! - **Slots are never reused.** A thread that read a bias naming it, then was
//!   preempted while that bias was revoked and another granted, stores to its old
//!   slot's `busy` only, which nobody reads once the slot is retired. Bias values
//!   never repeat (the slot differs), so no compare-exchange on `bias` can be
//!   fooled by an old value.
//! - **Death.** A holder killed *idle* (`busy[s] = 0`) is revoked at once: it was
//!   inside nothing, the lock comes back Clean. A holder killed *inside*
//!   (`busy[s] = 1`) is found gone by its revoker (at most a slice,
//!   [`OWNER_CHECK_INTERVAL`]), which takes the lock with INCONSISTENT set
//!   (OwnerDied), as the raw lock does. A revoker killed before taking the word
//!   leaves its mark: the next user finds the revoker gone and clears the mark (the
//!   bias then revoked anew). Whoever takes the raw word while a bias is still
//!   recorded (the raw lock's own takeover of a dead holder) finishes the
//!   revocation before entering. Unknown is not dead: a holder or revoker that
//!   `/proc` cannot tell about is waited for.
//!
//! Written by hand: a lock whose uncontended holder pays no atomic read-modify-write
//! and which survives a SIGKILL of any party is the product here; no crate offers
//! one between processes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, compiler_fence, fence};
use std::time::{Duration, Instant};

use super::ident::{self, OwnerKind};
use super::raw_lock::{Acquired, OWNER_CHECK_INTERVAL, RawLock};
use crate::sys::futex;
use crate::sys::mem::Mapping;
use crate::sys::membarrier;
use crate::sys::procfs::{self, Probe};
use crate::sys::time::Deadline;

/// Bytes a BiasedLock takes in shared memory (one cache line).
pub(crate) const SIZE: usize = 64;
/// Biases a lock may ever grant.
pub(crate) const SLOTS: u32 = 4;
/// Normal holds after a revocation before the lock may be biased again.
pub(crate) const PENALTY: u32 = 1024;

const BIAS: usize = 16;
const GRANTS: usize = 24;
const CREDIT: usize = 28;
const BUSY: usize = 32;
const WAKES: usize = 48;
/// How long a waiter sleeps while someone else's revocation is in progress, or
/// between two looks when the heavy barrier failed.
const SHORT: Duration = Duration::from_millis(1);
const OWNER: u64 = ident::OWNER_MASK as u64;

thread_local! {
    /// When this thread may next ask `/proc` whether a holder found inside is gone
    /// (`try_lock`, which may be polled).
    static NEXT_CHECK: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Whether a `try_lock` of this thread may read `/proc` now (once per interval).
fn death_check_due() -> bool {
    let now = Instant::now();
    NEXT_CHECK.with(|c| {
        if c.get().is_some_and(|t| now < t) {
            return false;
        }
        c.set(Some(now + OWNER_CHECK_INTERVAL));
        true
    })
}

fn holder(b: u64) -> u32 {
    (b & OWNER) as u32
}

fn revoker(b: u64) -> u32 {
    ((b >> 32) & OWNER) as u32
}

fn slot(b: u64) -> usize {
    ((b >> 31) & 1 | (b >> 62) & 2) as usize
}

fn bias_of(slot: usize, holder: u32) -> u64 {
    let s = slot as u64;
    u64::from(holder) | (s & 1) << 31 | (s & 2) << 62
}

fn with_revoker(b: u64, r: u32) -> u64 {
    b & !(OWNER << 32) | u64::from(r) << 32
}

/// How a lock is held, to hand back to [`BiasedLock::unlock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Hold {
    /// The raw word is ours.
    Normal,
    /// Entered under this thread's bias, in this slot.
    Biased(usize),
}

/// A handle on the 64 bytes of one biased lock; copying it copies the references.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BiasedLock {
    raw: RawLock,
    word: &'static AtomicU32,
    bias: &'static AtomicU64,
    grants: &'static AtomicU32,
    credit: &'static AtomicU32,
    busy: [&'static AtomicU32; SLOTS as usize],
    wakes: &'static AtomicU32,
}

/// What one revocation attempt ended with.
enum Revoked {
    Took(Acquired),
    /// Undone (try_lock found the holder inside, or the deadline passed).
    Gave,
    /// Someone else changed the state: look again.
    Again,
}

impl BiasedLock {
    /// The lock at `offset` (64-byte aligned, zeroed when new) of an arena mapping.
    pub(crate) fn at(map: &'static Mapping, offset: usize) -> BiasedLock {
        let w = |i: usize| map.atomic_u32(offset + i);
        BiasedLock {
            raw: RawLock::at_thread_owned(map, offset),
            word: w(0),
            bias: map.atomic_u64(offset + BIAS),
            grants: w(GRANTS),
            credit: w(CREDIT),
            busy: [w(BUSY), w(BUSY + 4), w(BUSY + 8), w(BUSY + 12)],
            wakes: w(WAKES),
        }
    }

    /// Enters under this thread's bias if it has one: no locked instruction.
    #[inline]
    pub(crate) fn enter(&self, me: u32) -> Option<Hold> {
        let b = self.bias.load(Ordering::Relaxed);
        if holder(b) != me || revoker(b) != 0 {
            return None;
        }
        self.enter_as(b)
    }

    /// The entry's handshake, for a bias `b` read before (by [`enter`](Self::enter)):
    /// inside if `bias` is still `b` after `busy` is stored.
    #[inline(always)]
    fn enter_as(&self, b: u64) -> Option<Hold> {
        let s = slot(b);
        let busy = self.busy[s];
        busy.store(1, Ordering::Relaxed);
        // The light side of the handshake (module docs): only the compiler may not
        // move the load above the store; the revoker's heavy barrier orders them.
        compiler_fence(Ordering::SeqCst);
        if self.bias.load(Ordering::Acquire) == b {
            return Some(Hold::Biased(s));
        }
        self.leave_revoked(busy);
        None
    }

    #[cold]
    #[inline(never)]
    fn leave_revoked(&self, busy: &AtomicU32) {
        busy.store(0, Ordering::Release);
        futex::wake(busy, 1);
    }

    /// Takes the lock if no one is inside it now (revoking an idle bias); never
    /// waits for a holder that is inside.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<(Acquired, Hold)> {
        let me = ident::thread();
        if let Some(h) = self.enter(me) {
            return Some((Acquired::Clean, h));
        }
        self.slow(me, Deadline::NEVER, true)
    }

    /// One compare-exchange of the raw word when it is free, after the biased
    /// entry: no revocation, no look for a dead holder (a fast path's first try).
    #[inline]
    pub(crate) fn try_free(&self) -> Option<(Acquired, Hold)> {
        let me = ident::thread();
        if let Some(h) = self.enter(me) {
            return Some((Acquired::Clean, h));
        }
        match self.raw.try_exchange(me) {
            Ok(how) if self.bias.load(Ordering::Acquire) == 0 => Some((how, Hold::Normal)),
            Ok(how) => Some((self.settle_held(me, how), Hold::Normal)),
            Err(_) => None,
        }
    }

    /// Takes the lock, waiting until `deadline`; `None` when it passed.
    #[inline]
    pub(crate) fn lock(&self, deadline: Deadline) -> Option<(Acquired, Hold)> {
        let me = ident::thread();
        if let Some(h) = self.enter(me) {
            return Some((Acquired::Clean, h));
        }
        self.slow(me, deadline, false)
    }

    #[cold]
    #[inline(never)]
    fn slow(&self, me: u32, deadline: Deadline, try_only: bool) -> Option<(Acquired, Hold)> {
        // When a revoker found at work may next be asked whether it is gone (the
        // clock is read only then: a contended raw lock never needs it).
        let mut next_check: Option<Instant> = None;
        loop {
            let b = self.bias.load(Ordering::Acquire);
            let w = self.word.load(Ordering::Relaxed);
            if b == 0 || w & ident::OWNER_MASK != holder(b) {
                // Not biased, or the word is no longer the holder's (a revoker took
                // it, or the raw lock's takeover did): the raw lock, in a bounded
                // slice so that a bias granted meanwhile is seen; whoever takes the
                // word with a bias still recorded finishes its revocation.
                // (Each begins with its compare-exchange: no other one first, a
                // second transfer of a contended line.)
                let how = if try_only {
                    self.raw.try_lock(me)
                } else {
                    // Asleep, it would miss a bias granted meanwhile: it looks at
                    // `bias` after announcing itself, the granter at `word` after
                    // storing the bias (`unlock_normal`), both with full fences.
                    self.raw.lock_unless(me, deadline, &|| {
                        b == 0 && self.bias.load(Ordering::SeqCst) != 0
                    })
                };
                match how {
                    Some(how) => return Some((self.settle_held(me, how), Hold::Normal)),
                    None if try_only || deadline.expired() => return None,
                    None => continue,
                }
            }
            let (t, r, s) = (holder(b), revoker(b), slot(b));
            if t == me && r == 0 {
                if let Some(h) = self.enter(me) {
                    return Some((Acquired::Clean, h));
                }
                continue;
            }
            if r != 0 && r != me {
                // Someone else's revocation: a dead revoker's mark is dropped (the
                // bias is revoked anew next round), a live one is waited for.
                let now = Instant::now();
                if next_check.is_none_or(|t| now >= t) {
                    next_check = Some(now + OWNER_CHECK_INTERVAL);
                    if OwnerKind::Thread.is_gone(r) {
                        let _ = self.bias.compare_exchange(
                            b,
                            with_revoker(b, 0),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                        continue;
                    }
                }
                if try_only || deadline.expired() {
                    return None;
                }
                let seq = self.wakes.load(Ordering::Acquire);
                if self.bias.load(Ordering::Acquire) == b {
                    futex::wait(self.wakes, seq, Some(deadline.slice(SHORT)));
                }
                continue;
            }
            // Revoke (`r` is 0, or a mark of ours that a failed word step left).
            if try_only
                && self.busy[s].load(Ordering::Acquire) != 0
                && !(death_check_due() && OwnerKind::Thread.is_gone(t))
            {
                return None; // the holder is inside (and alive, or not checked now)
            }
            let marked = with_revoker(b, me);
            if self
                .bias
                .compare_exchange(b, marked, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            match self.revoke(me, marked, deadline, try_only, false) {
                Revoked::Took(how) => return Some((how, Hold::Normal)),
                Revoked::Gave => return None,
                Revoked::Again => continue,
            }
        }
    }

    /// The revocation after the mark `marked` (ours) is set: the heavy barrier, the
    /// wait for the holder to be outside or gone, then the word (unless `held`: we
    /// already hold it) and `bias = 0`.
    fn revoke(
        &self,
        me: u32,
        marked: u64,
        deadline: Deadline,
        try_only: bool,
        held: bool,
    ) -> Revoked {
        let (t, s) = (holder(marked), slot(marked));
        let busy = self.busy[s];
        let covered = membarrier::heavy();
        let mut died = false;
        // The first look at a holder found inside asks whether it is gone.
        let mut next_check = Instant::now();
        loop {
            // Without the barrier, the holder's stores are known to be visible
            // only once it has been off its CPU (or is gone).
            let ordered = covered || off_cpu(t);
            if ordered && busy.load(Ordering::Acquire) == 0 {
                break;
            }
            let now = Instant::now();
            if now >= next_check {
                next_check = now + OWNER_CHECK_INTERVAL;
                if OwnerKind::Thread.is_gone(t) {
                    died = busy.load(Ordering::Acquire) != 0;
                    break;
                }
            }
            if (try_only || deadline.expired()) && !held {
                // Undo the mark: biased again, the holder not disturbed.
                let _ = self.bias.compare_exchange(
                    marked,
                    with_revoker(marked, 0),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                self.wake_waiters();
                return Revoked::Gave;
            }
            let slice = if ordered {
                deadline.slice(OWNER_CHECK_INTERVAL)
            } else {
                deadline.slice(SHORT)
            };
            futex::wait(busy, 1, Some(slice));
        }
        if !held {
            // The word holds `t` (with CONTENDED maybe): ours now. It held anything
            // else only if the raw lock's death takeover took it (then that taker
            // finishes this revocation).
            let mut w = self.word.load(Ordering::Relaxed);
            loop {
                if w & ident::OWNER_MASK != t {
                    return Revoked::Again;
                }
                let mine = me | (w & !ident::OWNER_MASK);
                match self
                    .word
                    .compare_exchange_weak(w, mine, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => break,
                    Err(now) => w = now,
                }
            }
        }
        if died {
            self.raw.set_inconsistent();
        }
        self.bias.store(0, Ordering::Release);
        self.credit.store(PENALTY, Ordering::Relaxed);
        self.wake_waiters();
        Revoked::Took(if self.raw.is_consistent() {
            Acquired::Clean
        } else {
            Acquired::OwnerDied
        })
    }

    /// After the raw word was taken (`how`): if a bias is still recorded, revoke it
    /// (we hold the word: its holder died, or its revoker did), then report.
    fn settle_held(&self, me: u32, how: Acquired) -> Acquired {
        loop {
            let b = self.bias.load(Ordering::Acquire);
            if b == 0 {
                return how;
            }
            let marked = with_revoker(b, me);
            if self
                .bias
                .compare_exchange(b, marked, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            match self.revoke(me, marked, Deadline::NEVER, false, true) {
                Revoked::Took(how) => return how,
                Revoked::Gave | Revoked::Again => continue,
            }
        }
    }

    fn wake_waiters(&self) {
        self.wakes.fetch_add(1, Ordering::Release);
        futex::wake_all(self.wakes);
    }

    /// Releases the lock as `hold` says it is held. A normal hold may become a bias
    /// of the calling thread (module docs) instead of being released.
    #[inline]
    pub(crate) fn unlock(&self, hold: Hold) {
        match hold {
            Hold::Biased(s) => {
                let busy = self.busy[s];
                busy.store(0, Ordering::Release);
                // The light side again: a revoker that saw us inside sleeps on
                // `busy` after its mark; the mark is seen here, or our store there.
                compiler_fence(Ordering::SeqCst);
                let b = self.bias.load(Ordering::Relaxed);
                if revoker(b) != 0 || b == 0 {
                    futex::wake(busy, 1);
                }
            }
            Hold::Normal => self.unlock_normal(),
        }
    }

    fn unlock_normal(&self) {
        let grants = self.grants.load(Ordering::Relaxed);
        let credit = self.credit.load(Ordering::Relaxed);
        if grants >= SLOTS {
            // Never biased again: the raw lock alone.
        } else if credit > 0 {
            self.credit.store(credit - 1, Ordering::Relaxed);
        } else {
            let me = ident::thread();
            if self.word.load(Ordering::Relaxed) == me && membarrier::light() {
                // A fresh slot (its busy word was never stored): keep the word.
                self.grants.store(grants + 1, Ordering::Relaxed);
                let b = bias_of(grants as usize, me);
                self.bias.store(b, Ordering::SeqCst);
                // A waiter that announced itself (CONTENDED) before it could see
                // the bias may sleep: take the bias back and release (its slot
                // stays used). Unless a revoker already marked it: it takes the
                // word from us, idle, as from any holder.
                fence(Ordering::SeqCst);
                if self.word.load(Ordering::Relaxed) == me
                    || self
                        .bias
                        .compare_exchange(b, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_err()
                {
                    return;
                }
            }
        }
        self.raw.unlock();
    }

    /// Clears INCONSISTENT (while holding the lock, after repairing the data).
    pub(crate) fn mark_consistent(&self) {
        self.raw.mark_consistent();
    }

    /// The thread this lock is biased to, if any (tests).
    #[cfg(test)]
    pub(crate) fn biased_to(&self) -> Option<u32> {
        let b = self.bias.load(Ordering::Acquire);
        (b != 0).then_some(holder(b))
    }
}

/// Whether thread `t` is known to have been off its CPU since this call began (not
/// running now, per `/proc`), or is gone: its stores are then visible and its
/// next loads see ours. Unknown is "may be running".
fn off_cpu(t: u32) -> bool {
    match procfs::probe(ident::id_of(t)) {
        Probe::Found(stat) => stat.state != b'R' || OwnerKind::Thread.is_gone(t),
        Probe::Gone => OwnerKind::Thread.is_gone(t),
        Probe::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::shm::arena::Block;
    use crate::{Event, Process, RawValue};

    const PATIENCE: Option<Duration> = Some(Duration::from_secs(30));

    fn fresh() -> (BiasedLock, Block) {
        let block = Block::alloc(SIZE + 64).unwrap();
        let off = block.offset().next_multiple_of(64);
        (BiasedLock::at(block.static_map().unwrap(), off), block)
    }

    fn patience() -> Deadline {
        Deadline::after(PATIENCE).unwrap()
    }

    /// A child that takes the lock, lets it become its bias, enters once more
    /// (staying inside when `inside`), sets `ready` and waits for `go`; then it
    /// leaves, and takes the lock once more, expecting a biased hold when
    /// `still_biased` (the bias survived), a normal one otherwise, after it sets
    /// `tried` with a try_lock that must fail (the parent holds the lock) unless
    /// `still_biased`.
    fn child_holding(
        lock: BiasedLock,
        inside: bool,
        still_biased: bool,
        [ready, go, tried]: [Event; 3],
    ) -> Process {
        let mut p = Process::new(move || {
            let (how, hold) = lock.lock(patience()).unwrap();
            assert_eq!((how, hold), (Acquired::Clean, Hold::Normal));
            lock.unlock(hold);
            assert_eq!(lock.biased_to(), Some(ident::thread()), "not biased");
            let (_, hold) = lock.lock(patience()).unwrap();
            assert!(matches!(hold, Hold::Biased(_)));
            if !inside {
                lock.unlock(hold);
            }
            ready.set();
            assert!(go.wait(PATIENCE).unwrap());
            if inside {
                lock.unlock(hold);
            }
            if still_biased {
                let (_, hold) = lock.lock(patience()).unwrap();
                assert!(matches!(hold, Hold::Biased(_)), "the bias was lost");
                lock.unlock(hold);
            } else {
                assert!(lock.try_lock().is_none(), "taken while the parent holds it");
                tried.set();
                let (_, hold) = lock.lock(patience()).unwrap();
                assert_eq!(hold, Hold::Normal);
                lock.unlock(hold);
            }
        });
        p.start().unwrap();
        p
    }

    /// A fresh lock and a [`child_holding`] it (`inside`, `still_biased`) that has
    /// set its `ready` event: the lock, its block, the events, the child.
    fn holder_ready(inside: bool, still_biased: bool) -> (BiasedLock, Block, [Event; 3], Process) {
        let (lock, block) = fresh();
        let ev = events();
        let child = child_holding(lock, inside, still_biased, ev.clone());
        assert!(ev[0].wait(PATIENCE).unwrap());
        (lock, block, ev, child)
    }

    fn events() -> [Event; 3] {
        [(); 3].map(|_| Event::new().unwrap())
    }

    fn supported() -> bool {
        // Bias is granted only in a process registered for the heavy barrier.
        membarrier::light()
    }

    #[test]
    fn an_idle_bias_of_a_live_process_is_revoked_not_waited_for() {
        if !supported() {
            return;
        }
        for blocking in [false, true] {
            let (lock, _block, ev, mut child) = holder_ready(false, false);
            let (how, hold) = if blocking {
                lock.lock(patience())
            } else {
                lock.try_lock()
            }
            .expect("an idle bias held the lock");
            assert_eq!((how, hold), (Acquired::Clean, Hold::Normal));
            assert_eq!(lock.biased_to(), None);
            ev[1].set();
            // The child's try_lock failed while we hold it; then it waits for us.
            assert!(ev[2].wait(PATIENCE).unwrap());
            lock.unlock(hold);
            assert_eq!(child.join(PATIENCE).unwrap(), Some(0));
        }
    }

    #[test]
    fn a_revoker_leaves_a_holder_inside_alone_and_gives_up_cleanly() {
        if !supported() {
            return;
        }
        let (lock, _block, ev, mut child) = holder_ready(true, true);
        assert!(
            lock.try_lock().is_none(),
            "taken while the holder is inside"
        );
        let soon = Deadline::after(Some(OWNER_CHECK_INTERVAL * 2)).unwrap();
        assert!(
            lock.lock(soon).is_none(),
            "taken while the holder is inside"
        );
        // Both gave up: the child keeps its bias (its next entry is biased).
        assert!(lock.biased_to().is_some());
        ev[1].set();
        assert_eq!(child.join(PATIENCE).unwrap(), Some(0));
    }

    #[test]
    fn an_idle_bias_holder_killed_passes_the_lock_on_clean() {
        if !supported() {
            return;
        }
        let (lock, _block, _ev, mut child) = holder_ready(false, false);
        child.kill().unwrap();
        assert_eq!(child.join(PATIENCE).unwrap(), Some(-9));
        let (how, hold) = lock.lock(patience()).expect("the dead bias held the lock");
        assert_eq!((how, hold), (Acquired::Clean, Hold::Normal));
        lock.unlock(hold);
    }

    #[test]
    fn a_bias_holder_killed_inside_passes_the_lock_on_with_owner_died() {
        if !supported() {
            return;
        }
        for blocking in [false, true] {
            let (lock, _block, _ev, mut child) = holder_ready(true, true);
            child.kill().unwrap();
            assert_eq!(child.join(PATIENCE).unwrap(), Some(-9));
            let (how, hold) = if blocking {
                lock.lock(patience())
                    .expect("the dead holder kept the lock")
            } else {
                let deadline = patience();
                loop {
                    if let Some(got) = lock.try_lock() {
                        break got;
                    }
                    assert!(!deadline.expired(), "try_lock never saw the holder dead");
                    std::thread::yield_now();
                }
            };
            assert_eq!((how, hold), (Acquired::OwnerDied, Hold::Normal));
            lock.mark_consistent();
            lock.unlock(hold);
            let (how, hold) = lock.lock(patience()).unwrap();
            assert_eq!(how, Acquired::Clean);
            lock.unlock(hold);
        }
    }

    /// Two threads adding to `counter` `ADDS` times each with a plain load and
    /// store under the lock (every third time through try_lock).
    fn hammer(lock: BiasedLock, counter: &RawValue<u64>) {
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for i in 0..ADDS {
                        let (_, hold) = if i % 3 == 0 {
                            loop {
                                if let Some(got) = lock.try_lock() {
                                    break got;
                                }
                                std::hint::spin_loop();
                            }
                        } else {
                            lock.lock(patience()).expect("lock")
                        };
                        counter.set(counter.get() + 1);
                        lock.unlock(hold);
                    }
                });
            }
        });
    }

    const ADDS: u64 = 20_000;

    /// Two processes of two threads each add to a counter under the lock, on
    /// fresh locks (each biased, revoked, biased again up to its slots): no
    /// increment is lost.
    #[test]
    fn excludes_across_threads_and_processes_through_every_state() {
        for _ in 0..3 {
            let (lock, _block) = fresh();
            let counter = RawValue::<u64>::new(0).unwrap();
            let c = counter.clone();
            let mut child = Process::new(move || hammer(lock, &c));
            child.start().unwrap();
            hammer(lock, &counter);
            assert_eq!(child.join(PATIENCE).unwrap(), Some(0));
            assert_eq!(counter.get(), 4 * ADDS);
        }
    }

    /// The step the heavy barrier orders: a holder that read its bias before a
    /// revoker marked it, and stores `busy` after, must see the mark and stay out
    /// (its `busy` back to 0), whatever the interleaving (here: the mark lands
    /// between the two, in one thread).
    #[test]
    fn an_entry_that_read_its_bias_before_a_revocation_stays_out() {
        if !supported() {
            return;
        }
        let (lock, _block) = fresh();
        let (_, hold) = lock.lock(patience()).unwrap();
        lock.unlock(hold); // biased to this thread
        let b = lock.bias.load(Ordering::Acquire);
        assert_eq!(holder(b), ident::thread());
        let revoker_word = ident::process_of(1);
        lock.bias
            .store(with_revoker(b, revoker_word), Ordering::SeqCst);
        assert_eq!(lock.enter_as(b), None, "entered a bias being revoked");
        assert_eq!(lock.busy[slot(b)].load(Ordering::Acquire), 0);
        // Undone, the bias is this thread's again.
        lock.bias.store(b, Ordering::SeqCst);
        let hold = lock.enter(ident::thread()).expect("the bias is ours again");
        lock.unlock(hold);
    }
}
