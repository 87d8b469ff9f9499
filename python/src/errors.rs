//! multiproc's errors as the exceptions CPython's `multiprocessing` raises.

use pyo3::exceptions::{
    PyAssertionError, PyBrokenPipeError, PyEOFError, PyKeyboardInterrupt, PyOSError,
    PyRuntimeError, PyRuntimeWarning, PyValueError,
};
use pyo3::prelude::*;

pyo3::import_exception!(queue, Empty);
pyo3::import_exception!(queue, Full);
pyo3::import_exception!(threading, BrokenBarrierError);

pyo3::create_exception!(
    multiproc,
    OwnerDiedWarning,
    PyRuntimeWarning,
    "A lock was taken over from a process that died holding it: the data it \
     guards may be half-updated. The lock is held; repair the data, then call \
     `mark_consistent()` (until then every acquirer is told again)."
);
pyo3::create_exception!(
    multiproc,
    TasksAbandonedError,
    PyRuntimeError,
    "JoinableQueue.join: every task is done except those taken by consumers that \
     died (written off; args[1] is their count)."
);

/// The exception CPython raises for the same situation.
pub(crate) fn to_py(e: multiproc::Error) -> PyErr {
    use multiproc::Error as E;
    let msg = e.to_string();
    match e {
        E::Full => Full::new_err(()),
        E::Empty => Empty::new_err(()),
        E::BrokenBarrier(_) => BrokenBarrierError::new_err(msg),
        E::NotHeld { .. } | E::OverRelease { .. } | E::SemaphoreFull { .. } => {
            PyValueError::new_err("semaphore or lock released too many times")
        }
        E::NotOwner { .. } => PyAssertionError::new_err(msg),
        E::InvalidArgument(_) | E::ZeroSize { .. } | E::SizeOverflow { .. } => {
            PyValueError::new_err(msg)
        }
        E::TimeoutOverflow(_) => pyo3::exceptions::PyOverflowError::new_err(msg),
        E::NotFound { .. } => pyo3::exceptions::PyFileNotFoundError::new_err(msg),
        E::AlreadyExists { .. } => pyo3::exceptions::PyFileExistsError::new_err(msg),
        E::Permission { .. } => pyo3::exceptions::PyPermissionError::new_err(msg),
        E::Eof | E::MessageCut { .. } => PyEOFError::new_err(msg),
        E::BrokenPipe => PyBrokenPipeError::new_err(msg),
        E::ConnectionClosed { .. } => PyOSError::new_err(format!("handle is closed ({msg})")),
        E::WrongEnd { .. } => PyOSError::new_err(msg),
        E::MessageTooLong { .. } | E::ConnectionBroken { .. } => PyOSError::new_err(msg),
        E::TasksAbandoned { count } => TasksAbandonedError::new_err((msg, count)),
        E::Io { .. } => PyOSError::new_err(msg),
        // The waits' checks keep the handlers' own exception and raise that; this
        // is only a fallback.
        E::Interrupted { .. } => PyKeyboardInterrupt::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// Warns that a lock was taken from a dead owner. If the warning is an error
/// (`-W error`, `warnings.simplefilter("error")`), `release` runs first, so the
/// exception never leaves the lock held (the next acquirer is told again).
pub(crate) fn warn_owner_died(
    py: Python<'_>,
    what: &str,
    release: impl FnOnce() -> multiproc::Result<()>,
) -> PyResult<()> {
    let msg = format!(
        "{what} acquired from a process that died holding it: repair the data it \
         guards, then call mark_consistent()"
    );
    let cat = py.get_type::<OwnerDiedWarning>();
    let cmsg = std::ffi::CString::new(msg).unwrap_or_default();
    if let Err(e) = PyErr::warn(py, &cat, &cmsg, 1) {
        let _ = release();
        return Err(e);
    }
    Ok(())
}
