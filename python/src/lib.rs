//! `multiproc._native`: the Rust core of the Python package `multiproc`.
//!
//! Small and fast on purpose (the PyO3-guide / pydantic-core split): each class
//! wraps one multiproc handle and does the blocking, GIL and error work; the
//! Python layer (`multiproc/*.py`) adds what is simpler in Python — pickling
//! (`__reduce__`), ctypes types, contexts, queues of pickles.
//!
//! ## Python manners, everywhere here
//! - A call that may block first tries without waiting, holding the GIL (an
//!   uncontended `acquire` costs no GIL switch). If it must wait, it releases the
//!   GIL (`py.detach`) and waits in slices of [`SLICE`]; between slices it takes
//!   the GIL back and runs `py.check_signals()`, so Ctrl-C (KeyboardInterrupt)
//!   interrupts it as it does CPython's, within one slice.
//! - Two waits cannot be sliced: `Condition.wait` (a slice that timed out while a
//!   `notify` ran would miss it) and `Barrier.wait` (a party would leave its
//!   round). They wait in one piece with multiproc's `wait_interruptible`: a
//!   signal cuts the futex wait short (EINTR; CPython installs its handlers
//!   without `SA_RESTART`), and the check (`wait::signal_raised`) takes the GIL
//!   and runs `py.check_signals()`. Its KeyboardInterrupt ends the wait cleanly
//!   (the Condition's lock taken back, a notification that had chosen the waiter
//!   passed on; the Barrier broken for the other parties) and is then raised.
//! - Timeouts are float seconds; `None` waits forever; a negative timeout is 0
//!   (CPython's semaphores clamp it so); NaN is a `ValueError`.
//! - Errors are CPython's exceptions (see [`errors`]).
//!
//! One `unsafe`, in `fds` (taking descriptors Python hands over); shared memory is
//! reached through multiproc's safe handles, and the bytes of `Value`/`Array`
//! through Python's own `mmap` (see `multiproc/heap.py`).

use pyo3::prelude::*;

mod errors;
mod fds;
mod pickle;
mod queue;
mod sync;
mod wait;

/// The module `multiproc._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<sync::Lock>()?;
    m.add_class::<sync::RLock>()?;
    m.add_class::<sync::Semaphore>()?;
    m.add_class::<sync::Event>()?;
    m.add_class::<sync::Condition>()?;
    m.add_class::<sync::Barrier>()?;
    m.add_class::<sync::SynchronizedValue>()?;
    m.add_class::<queue::Queue>()?;
    m.add_class::<queue::Connection>()?;
    m.add_class::<queue::SharedMemory>()?;
    m.add_function(wrap_pyfunction!(queue::pipe, m)?)?;
    m.add_function(wrap_pyfunction!(pickle::_plain_dumps, m)?)?;
    m.add_function(wrap_pyfunction!(pickle::_plain_loads, m)?)?;
    m.add_function(wrap_pyfunction!(sync::before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(sync::after_fork_in_parent, m)?)?;
    m.add_function(wrap_pyfunction!(sync::after_fork_in_child, m)?)?;
    m.add(
        "OwnerDiedWarning",
        py.get_type::<errors::OwnerDiedWarning>(),
    )?;
    m.add(
        "TasksAbandonedError",
        py.get_type::<errors::TasksAbandonedError>(),
    )?;
    m.add("SLICE_SECONDS", wait::SLICE.as_secs_f64())?;
    Ok(())
}
