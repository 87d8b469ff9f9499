//! Test support: a signal handler that interrupts system calls, as CPython's are
//! installed (`sigaction` without `SA_RESTART`), for the tests of the
//! interruptible waits.

use std::sync::atomic::{AtomicU32, Ordering};

/// How many signals the handler of [`interrupt_with`] has caught in this process.
pub(crate) static CAUGHT: AtomicU32 = AtomicU32::new(0);

extern "C" fn count(_signal: libc::c_int) {
    // Async-signal-safe: one atomic add.
    CAUGHT.fetch_add(1, Ordering::SeqCst);
}

/// Installs a handler for `signal` that only counts it ([`CAUGHT`]), without
/// `SA_RESTART`: a futex wait it interrupts fails with `EINTR`.
pub(crate) fn interrupt_with(signal: libc::c_int) {
    // SAFETY: `sa` is a zeroed `sigaction` (a valid "no flags, empty mask" value)
    // whose handler is `count`, an `extern "C" fn(c_int)` that only does an
    // atomic add (async-signal-safe); `sigemptyset` and `sigaction` get valid
    // pointers to it, and the old action is not asked for (null).
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = count as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(signal, &sa, std::ptr::null_mut())
    };
    assert_eq!(rc, 0, "sigaction({signal}) failed");
}
