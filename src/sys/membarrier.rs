//! Asymmetric memory barriers between processes: `membarrier(2)`.
//!
//! A sleeper handshake (the waiter stores its flag, then loads the other side's
//! word; the waker stores the word, then loads the flag) needs a full fence on
//! both sides, or both loads may return the old values and the waiter sleeps
//! through the change. When one side runs often (a queue publishing a message)
//! and the other rarely (a waiter about to sleep), the fence can move to the rare
//! side: the frequent side (the *light* side) orders its store and load only
//! against the compiler, and the rare side (the *heavy* side) calls
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which the kernel answers once
//! every CPU running a thread of a *registered* process has executed a full
//! memory barrier (a thread not running then passes one when it is switched in).
//! Each light-side store-load pair is then split by that barrier: either the
//! store was before it (and the heavy side's later load sees it), or the load is
//! after it (and sees the heavy side's earlier store).
//!
//! A process takes the light side only once it is registered
//! (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`, which [`light`] does once per
//! process; the fork generation tells a forked child to register for itself). A
//! process that cannot register (an old kernel, a seccomp filter) keeps full
//! fences on both sides; a heavy side whose call fails must not trust light sides
//! and sleeps in short slices instead (see `msg::ring`).

use std::sync::atomic::{AtomicU64, Ordering};

use rustix::thread::{MembarrierCommand, membarrier};

use super::fork;

/// `generation << 2 | OK | TRIED`, for the generation it was filled in.
static STATE: AtomicU64 = AtomicU64::new(0);
const TRIED: u64 = 1;
const OK: u64 = 2;

/// Whether this process may take the light side: it is registered for the heavy
/// side's barriers (registering on the first call in each process).
#[inline(always)]
pub(crate) fn light() -> bool {
    let s = STATE.load(Ordering::Relaxed);
    if s >> 2 == u64::from(fork::generation()) && s & TRIED != 0 {
        return s & OK != 0;
    }
    register()
}

#[cold]
#[inline(never)]
fn register() -> bool {
    // Children forked after this point must see a new generation and register
    // again (registration is per process).
    fork::install_hooks();
    let generation = u64::from(fork::generation());
    let ok = membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok();
    STATE.store(
        generation << 2 | TRIED | if ok { OK } else { 0 },
        Ordering::Relaxed,
    );
    ok
}

/// The heavy side: a full memory barrier on every running thread of every
/// registered process, this one included. False when the kernel refused (then
/// light sides are not ordered against the caller).
pub(crate) fn heavy() -> bool {
    membarrier(MembarrierCommand::GlobalExpedited).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_and_the_heavy_side_answers() {
        let first = light();
        assert_eq!(light(), first, "the answer is cached");
        if first {
            assert!(heavy(), "registered, yet the heavy barrier failed");
        }
    }
}
