//! Timeouts from Python, sliced interruptible waits, and the signal check of the
//! waits that cannot be sliced.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::to_py;

/// The longest a blocked call waits without the GIL before it checks for
/// signals (Ctrl-C): its worst-case KeyboardInterrupt latency.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// A Python timeout (float seconds, `None` forever) as a `Duration`: negative is
/// 0 (as CPython's semaphores), NaN is a `ValueError`, past what a `Duration` or
/// the clock holds is forever.
pub(crate) fn timeout_of(t: Option<f64>) -> PyResult<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) if s.is_nan() => Err(PyValueError::new_err("timeout must not be NaN")),
        Some(s) if s <= 0.0 => Ok(Some(Duration::ZERO)),
        Some(s) => Ok(Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| Instant::now().checked_add(*d).is_some())),
    }
}

/// Runs `attempt(slice)` until it gives `Some` or `timeout` passes (`None` then),
/// each attempt waiting at most one [`SLICE`] with the GIL released, and checking
/// for signals between attempts (a KeyboardInterrupt ends the wait with it).
/// `attempt` must not leave anything half-done when its slice passes.
pub(crate) fn sliced<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: impl FnMut(Duration) -> multiproc::Result<Option<T>> + Send,
) -> PyResult<Option<T>> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let forever = timeout.is_none() || deadline.is_none();
    loop {
        let slice = match deadline {
            Some(d) if !forever => d.saturating_duration_since(Instant::now()).min(SLICE),
            _ => SLICE,
        };
        if let Some(v) = py.detach(|| attempt(slice)).map_err(to_py)? {
            return Ok(Some(v));
        }
        if !forever && deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}

/// The `check` of multiproc's interruptible waits (`Condition::wait_interruptible`,
/// `Barrier::wait_interruptible`), which run it after a signal interrupted their
/// futex wait (CPython installs its handlers without `SA_RESTART`): takes the GIL
/// back and runs the Python signal handlers. An exception they raise (Ctrl-C's
/// KeyboardInterrupt) is kept in `raised`, for the caller to raise once the wait
/// has ended cleanly, and stops the wait (true).
pub(crate) fn signal_raised(raised: &mut Option<PyErr>) -> bool {
    match Python::attach(|py| py.check_signals()) {
        Ok(()) => false,
        Err(e) => {
            *raised = Some(e);
            true
        }
    }
}
