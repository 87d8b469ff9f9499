//! The synchronization primitives: `Lock`, `RLock`, `Semaphore` (bounded or
//! not), `Event`, `Condition`, `Barrier`, and the fork hooks.
//!
//! Owner death, the Python way: `acquire()` returns `True` as for any acquisition
//! (so `with lock:` holds the lock and its `__exit__` runs: the recovery path can
//! never leak it), the lock's `owner_died` is `True` and an `OwnerDiedWarning` is
//! issued; the holder repairs the data and calls `mark_consistent()` before
//! releasing. A holder that releases without it leaves `owner_died` set and the
//! next acquirer is warned again, so no one sees the data as sound by accident.
//! If warnings are errors, the lock is released before the exception propagates
//! (see `errors::warn_owner_died`).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{BrokenBarrierError, to_py, warn_owner_died};
use crate::fds;
use crate::wait::{signal_raised, sliced, timeout_of};

/// Takes a lock-like object: first without waiting (holding the GIL: the
/// uncontended path costs no GIL switch), then in slices.
fn acquire_with(
    py: Python<'_>,
    block: bool,
    timeout: Option<f64>,
    try_now: impl Fn() -> multiproc::Result<bool>,
    wait: impl Fn(Duration) -> multiproc::Result<bool> + Send + Sync,
) -> PyResult<bool> {
    if try_now().map_err(to_py)? {
        return Ok(true);
    }
    if !block {
        return Ok(false);
    }
    let timeout = timeout_of(timeout)?;
    if timeout == Some(Duration::ZERO) {
        return Ok(false);
    }
    Ok(sliced(py, timeout, |slice| Ok(wait(slice)?.then_some(())))?.is_some())
}

/// A lock class (`Lock`, `RLock`): the struct, its owner-death check and every
/// method the two share, plus the `extra` methods of one of them (one macro, so
/// the two classes cannot drift apart; PyO3 allows one `#[pymethods]` block per
/// class without its `multiple-pymethods` feature).
macro_rules! lock_class {
    ($(#[$doc:meta])* $name:ident, $rust:ty, { $($extra:tt)* }) => {
        $(#[$doc])*
        #[pyclass(subclass, frozen, module = "multiproc._native")]
        pub(crate) struct $name {
            pub(crate) inner: $rust,
        }

        impl $name {
            fn after(&self, py: Python<'_>) -> PyResult<()> {
                if self.inner.is_consistent() {
                    return Ok(());
                }
                warn_owner_died(py, stringify!($name), || self.inner.release())
            }
        }

        #[pymethods]
        impl $name {
            /// `Lock()` / `RLock()`; `__new__(cls, _token=(bytes, fds))` imports a
            /// pickled one.
            #[new]
            #[pyo3(signature = (*_args, _token = None, **_kwargs))]
            fn new(
                _args: &Bound<'_, PyTuple>,
                _token: Option<(Vec<u8>, Vec<i32>)>,
                _kwargs: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<Self> {
                let inner = match _token {
                    Some(t) => fds::import(t)?,
                    None => <$rust>::new().map_err(to_py)?,
                };
                Ok($name { inner })
            }

            /// The token of this object: `(bytes, fds)` (the caller owns the fds).
            fn _export(&self) -> PyResult<(Vec<u8>, Vec<i32>)> {
                fds::export(&self.inner)
            }

            /// `acquire(block=True, timeout=None)`: `True` once taken.
            #[pyo3(signature = (block = true, timeout = None))]
            fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
                let l = &self.inner;
                let got = acquire_with(
                    py,
                    block,
                    timeout,
                    || l.acquire(false, None),
                    |s| l.acquire(true, Some(s)),
                )?;
                if got {
                    self.after(py)?;
                }
                Ok(got)
            }

            fn release(&self) -> PyResult<()> {
                self.inner.release().map_err(to_py)
            }

            fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
                self.acquire(py, true, None)
            }

            fn __exit__(
                &self,
                _t: &Bound<'_, PyAny>,
                _v: &Bound<'_, PyAny>,
                _tb: &Bound<'_, PyAny>,
            ) -> PyResult<()> {
                self.inner.release().map_err(to_py)
            }

            /// Whether the lock was taken from a process that died holding it and
            /// not yet marked consistent.
            #[getter]
            fn owner_died(&self) -> bool {
                !self.inner.is_consistent()
            }

            /// Says the data the lock guards was repaired after an owner's death.
            fn mark_consistent(&self) {
                self.inner.mark_consistent()
            }

            /// Whether some thread of some process holds it.
            fn _is_locked(&self) -> bool {
                self.inner.is_locked()
            }

            $($extra)*
        }
    };
}

lock_class!(
    /// Python's `multiprocessing.Lock`.
    Lock,
    multiproc::Lock,
    {
        fn __repr__(&self) -> String {
            let state = if self.inner.is_locked() { "locked" } else { "unlocked" };
            format!("<multiproc.Lock({state})>")
        }
    }
);

lock_class!(
    /// Python's `multiprocessing.RLock`.
    RLock,
    multiproc::RLock,
    {
        /// Whether the calling thread holds it (CPython's `_is_owned`).
        fn _is_owned(&self) -> bool {
            self.inner.is_owned()
        }

        fn _recursion_count(&self) -> u32 {
            if self.inner.is_owned() {
                self.inner.recursion_count()
            } else {
                0
            }
        }

        fn __repr__(&self) -> String {
            format!(
                "<multiproc.RLock(owned={}, count={})>",
                self.inner.is_owned(),
                self._recursion_count()
            )
        }
    }
);

enum Sem {
    Plain(multiproc::Semaphore),
    Bounded(multiproc::BoundedSemaphore),
}

/// Python's `multiprocessing.Semaphore` (`bounded=True`: `BoundedSemaphore`).
#[pyclass(subclass, frozen, module = "multiproc._native")]
pub(crate) struct Semaphore {
    inner: Sem,
}

impl Semaphore {
    fn try_now(&self) -> multiproc::Result<bool> {
        match &self.inner {
            Sem::Plain(s) => s.acquire(false, None),
            Sem::Bounded(s) => s.acquire(false, None),
        }
    }
    fn wait(&self, slice: Duration) -> multiproc::Result<bool> {
        match &self.inner {
            Sem::Plain(s) => s.acquire(true, Some(slice)),
            Sem::Bounded(s) => s.acquire(true, Some(slice)),
        }
    }
}

#[pymethods]
impl Semaphore {
    #[new]
    #[pyo3(signature = (value = 1, *_args, bounded = false, _token = None, **_kwargs))]
    fn new(
        value: i64,
        _args: &Bound<'_, PyTuple>,
        bounded: bool,
        _token: Option<(Vec<u8>, Vec<i32>)>,
        _kwargs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        if let Some(t) = _token {
            let inner = if bounded {
                Sem::Bounded(fds::import(t)?)
            } else {
                Sem::Plain(fds::import(t)?)
            };
            return Ok(Semaphore { inner });
        }
        if value < 0 {
            return Err(PyValueError::new_err(
                "semaphore initial value must be >= 0",
            ));
        }
        let v = u32::try_from(value)
            .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("value too large"))?;
        let inner = if bounded {
            Sem::Bounded(multiproc::BoundedSemaphore::new(v).map_err(to_py)?)
        } else {
            Sem::Plain(multiproc::Semaphore::new(v).map_err(to_py)?)
        };
        Ok(Semaphore { inner })
    }

    #[pyo3(signature = (block = true, timeout = None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        acquire_with(py, block, timeout, || self.try_now(), |s| self.wait(s))
    }

    fn release(&self) -> PyResult<()> {
        match &self.inner {
            Sem::Plain(s) => s.release(),
            Sem::Bounded(s) => s.release(),
        }
        .map_err(to_py)
    }

    fn get_value(&self) -> u32 {
        match &self.inner {
            Sem::Plain(s) => s.get_value(),
            Sem::Bounded(s) => s.get_value(),
        }
    }

    fn _export(&self) -> PyResult<(Vec<u8>, Vec<i32>)> {
        match &self.inner {
            Sem::Plain(s) => fds::export(s),
            Sem::Bounded(s) => fds::export(s),
        }
    }

    #[getter]
    fn _bounded(&self) -> bool {
        matches!(self.inner, Sem::Bounded(_))
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true, None)
    }

    fn __exit__(
        &self,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.release()
    }

    fn __repr__(&self) -> String {
        let name = match self.inner {
            Sem::Plain(_) => "Semaphore",
            Sem::Bounded(_) => "BoundedSemaphore",
        };
        format!("<multiproc.{name}(value={})>", self.get_value())
    }
}

/// Python's `multiprocessing.Event`.
#[pyclass(subclass, frozen, module = "multiproc._native")]
pub(crate) struct Event {
    inner: multiproc::Event,
}

#[pymethods]
impl Event {
    /// `Event()`; `Event.__new__(cls, _token=(bytes, fds))` imports a pickled one.
    #[new]
    #[pyo3(signature = (*_args, _token = None, **_kwargs))]
    fn new(
        _args: &Bound<'_, PyTuple>,
        _token: Option<(Vec<u8>, Vec<i32>)>,
        _kwargs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let inner = match _token {
            Some(t) => fds::import(t)?,
            None => multiproc::Event::new().map_err(to_py)?,
        };
        Ok(Event { inner })
    }

    /// The token of this object: `(bytes, fds)` (the caller owns the fds).
    fn _export(&self) -> PyResult<(Vec<u8>, Vec<i32>)> {
        fds::export(&self.inner)
    }

    fn is_set(&self) -> bool {
        self.inner.is_set()
    }

    fn set(&self) {
        self.inner.set()
    }

    fn clear(&self) {
        self.inner.clear()
    }

    /// `wait(timeout=None)`: `True` once set, `False` on timeout.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if self.inner.is_set() {
            return Ok(true);
        }
        let timeout = timeout_of(timeout)?;
        if timeout == Some(Duration::ZERO) {
            return Ok(false);
        }
        let e = &self.inner;
        Ok(sliced(py, timeout, |s| Ok(e.wait(Some(s))?.then_some(())))?.is_some())
    }
}

/// Python's `multiprocessing.Condition` over a multiproc `Lock` or `RLock`.
#[pyclass(subclass, frozen, module = "multiproc._native")]
pub(crate) struct Condition {
    inner: multiproc::Condition,
    lock: Py<PyAny>,
}

impl Condition {
    fn after(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.is_consistent() {
            return Ok(());
        }
        warn_owner_died(py, "Condition", || self.inner.release())
    }
}

#[pymethods]
impl Condition {
    /// `Condition(lock)`: `lock` is a multiproc `Lock` or `RLock` (the Python
    /// layer makes an `RLock` when given `None`).
    #[new]
    #[pyo3(signature = (lock, *, _token = None))]
    fn new(lock: &Bound<'_, PyAny>, _token: Option<(Vec<u8>, Vec<i32>)>) -> PyResult<Self> {
        if let Some(t) = _token {
            // `lock` is the Python object of the same lock, unpickled beside it.
            return Ok(Condition {
                inner: fds::import(t)?,
                lock: lock.clone().unbind(),
            });
        }
        let inner = if let Ok(l) = lock.cast::<Lock>() {
            multiproc::Condition::with_lock(l.get().inner.clone())
        } else if let Ok(r) = lock.cast::<RLock>() {
            multiproc::Condition::with_rlock(r.get().inner.clone())
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "Condition(lock): lock must be a multiproc Lock or RLock",
            ));
        };
        Ok(Condition {
            inner: inner.map_err(to_py)?,
            lock: lock.clone().unbind(),
        })
    }

    #[getter]
    fn _lock(&self, py: Python<'_>) -> Py<PyAny> {
        self.lock.clone_ref(py)
    }

    fn _export(&self) -> PyResult<(Vec<u8>, Vec<i32>)> {
        fds::export(&self.inner)
    }

    #[pyo3(signature = (block = true, timeout = None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let c = &self.inner;
        let got = acquire_with(
            py,
            block,
            timeout,
            || c.acquire(false, None),
            |s| c.acquire(true, Some(s)),
        )?;
        if got {
            self.after(py)?;
        }
        Ok(got)
    }

    fn release(&self) -> PyResult<()> {
        self.inner.release().map_err(to_py)
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true, None)
    }

    fn __exit__(
        &self,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.release()
    }

    #[getter]
    fn owner_died(&self) -> bool {
        !self.inner.is_consistent()
    }

    fn mark_consistent(&self) {
        self.inner.mark_consistent()
    }

    fn _is_owned(&self) -> bool {
        self.inner.is_owned()
    }

    /// `wait(timeout=None)`: releases the lock, waits for a notification, takes
    /// the lock back; `False` on timeout. One wait, not sliced: a slice that
    /// timed out while a `notify` ran would take the lock back after it and miss
    /// the notification (found by CPython's `test_notify_all`). Ctrl-C still
    /// interrupts it: the signal cuts the futex wait short (EINTR), the Python
    /// handlers run (`wait::signal_raised`), and their KeyboardInterrupt ends the
    /// wait as a timeout would, the lock taken back (as CPython's `finally`);
    /// a notification that had just chosen this waiter goes on to another.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if !self.inner.is_owned() {
            return Err(pyo3::exceptions::PyAssertionError::new_err(
                "must acquire() condition before using wait()",
            ));
        }
        let timeout = timeout_of(timeout)?;
        let c = &self.inner;
        let mut raised = None;
        let r = py.detach(|| c.wait_interruptible(timeout, &mut || signal_raised(&mut raised)));
        if let Some(e) = raised {
            return Err(e); // the lock is held again: `with` releases it
        }
        match r {
            Ok(notified) => Ok(notified),
            Err(multiproc::Error::OwnerDied) => {
                warn_owner_died(py, "Condition", || self.inner.release())?;
                Ok(true)
            }
            Err(e) => Err(to_py(e)),
        }
    }

    #[pyo3(signature = (n = 1))]
    fn notify(&self, n: usize) -> PyResult<()> {
        if !self.inner.is_owned() {
            return Err(pyo3::exceptions::PyAssertionError::new_err(
                "lock is not owned",
            ));
        }
        self.inner.notify(n).map_err(to_py)
    }

    fn notify_all(&self) -> PyResult<()> {
        if !self.inner.is_owned() {
            return Err(pyo3::exceptions::PyAssertionError::new_err(
                "lock is not owned",
            ));
        }
        self.inner.notify_all().map_err(to_py)
    }
}

thread_local! {
    /// The exception a Barrier action raised in this thread, for the `wait` that
    /// ran it to raise (the Rust barrier sees it as a panic).
    static ACTION_ERROR: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// Python's `multiprocessing.Barrier`.
#[pyclass(subclass, frozen, module = "multiproc._native")]
pub(crate) struct Barrier {
    inner: multiproc::Barrier,
    /// The same barrier without the action (what travels: an action is a
    /// closure; the Python action is pickled beside the token).
    plain: multiproc::Barrier,
    action: Option<Py<PyAny>>,
    timeout: Option<f64>,
}

fn with_py_action(b: multiproc::Barrier, action: &Py<PyAny>) -> multiproc::Barrier {
    let a = Arc::new(Mutex::new(Python::attach(|py| action.clone_ref(py))));
    b.with_action(move || {
        let failed = Python::attach(|py| {
            let f = a.lock().unwrap_or_else(|e| e.into_inner()).clone_ref(py);
            match f.call0(py) {
                Ok(_) => false,
                Err(e) => {
                    ACTION_ERROR.with(|s| *s.borrow_mut() = Some(e));
                    true
                }
            }
        });
        if failed {
            // The Rust barrier breaks on a panicking action; the Python
            // exception is raised by the `wait` that ran it.
            std::panic::resume_unwind(Box::new("the barrier action raised"));
        }
    })
}

#[pymethods]
impl Barrier {
    #[new]
    #[pyo3(signature = (parties, action = None, timeout = None, *, _token = None))]
    fn new(
        parties: i64,
        action: Option<Py<PyAny>>,
        timeout: Option<f64>,
        _token: Option<(Vec<u8>, Vec<i32>)>,
    ) -> PyResult<Self> {
        let plain = match _token {
            Some(t) => fds::import(t)?,
            None => {
                if parties < 1 {
                    return Err(PyValueError::new_err("parties must be > 0"));
                }
                let mut b = multiproc::Barrier::new(parties as usize).map_err(to_py)?;
                if let Some(t) = timeout_of(timeout)? {
                    b = b.with_timeout(t);
                }
                b
            }
        };
        let inner = match &action {
            Some(a) => with_py_action(plain.clone(), a),
            None => plain.clone(),
        };
        Ok(Barrier {
            inner,
            plain,
            action,
            timeout,
        })
    }

    fn _export(&self) -> PyResult<(Vec<u8>, Vec<i32>)> {
        fds::export(&self.plain)
    }

    /// `wait(timeout=None)`: the arrival index (0 .. parties-1). A timeout, an
    /// `abort()` or a party's death breaks the barrier:
    /// `threading.BrokenBarrierError`. One wait, not sliced (a party that left
    /// the round between slices would not be one that stays); Ctrl-C still
    /// interrupts it: the signal cuts the futex wait short (EINTR), the Python
    /// handlers run (`wait::signal_raised`), and their KeyboardInterrupt breaks
    /// the barrier (as `abort()`: the others get BrokenBarrierError) and ends
    /// this party's wait.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<usize> {
        let t = timeout_of(timeout)?;
        let b = &self.inner;
        let mut raised = None;
        let r = py.detach(|| b.wait_interruptible(t, &mut || signal_raised(&mut raised)));
        if let Some(e) = raised {
            // Also when the round was released just before: the party got
            // through, and the exception is raised at once, as CPython would
            // right after its wait returned.
            return Err(e);
        }
        match r {
            Ok(i) => Ok(i),
            Err(multiproc::Error::BarrierActionPanicked { .. }) => Err(ACTION_ERROR
                .with(|s| s.borrow_mut().take())
                .unwrap_or_else(|| BrokenBarrierError::new_err("the barrier action failed"))),
            Err(e) => Err(to_py(e)),
        }
    }

    fn abort(&self) {
        self.inner.abort()
    }

    fn reset(&self) {
        self.inner.reset()
    }

    #[getter]
    fn parties(&self) -> usize {
        self.inner.parties()
    }

    #[getter]
    fn n_waiting(&self) -> usize {
        self.inner.n_waiting()
    }

    #[getter]
    fn broken(&self) -> bool {
        self.inner.broken()
    }

    #[getter]
    fn _action(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.action.as_ref().map(|a| a.clone_ref(py))
    }

    #[getter]
    fn _timeout(&self) -> Option<f64> {
        self.timeout
    }
}

thread_local! {
    static FORK: RefCell<Option<multiproc::process::ForeignFork>> = const { RefCell::new(None) };
}

/// `os.register_at_fork(before=...)`: counts the child-to-be as a holder of
/// every shared object (see `multiproc::process::ForeignFork`).
#[pyfunction]
pub(crate) fn before_fork() -> PyResult<()> {
    let prep = multiproc::process::ForeignFork::prepare().map_err(to_py)?;
    FORK.with(|f| *f.borrow_mut() = Some(prep));
    Ok(())
}

#[pyfunction]
pub(crate) fn after_fork_in_parent() {
    if let Some(p) = FORK.with(|f| f.borrow_mut().take()) {
        p.parent();
    }
}

#[pyfunction]
pub(crate) fn after_fork_in_child() {
    if let Some(p) = FORK.with(|f| f.borrow_mut().take()) {
        p.child();
    }
}

/// The lock of a `Synchronized` wrapper: multiproc's `RLock` (the default, with
/// a fast path) or any object with `acquire`/`release`.
enum WrapperLock {
    RLock(Py<RLock>),
    Other,
}

/// `sharedctypes.Synchronized`'s core: `.value` of a ctypes object under its
/// lock, in one native call (CPython's is a Python property around a `with`).
/// When the calling thread already holds the RLock (inside `with
/// v.get_lock():`) it reads and writes without touching the lock again, which
/// is what a recursive acquire would allow anyway.
#[pyclass(subclass, frozen, module = "multiproc._native")]
pub(crate) struct SynchronizedValue {
    obj: Py<PyAny>,
    lock: Py<PyAny>,
    kind: WrapperLock,
}

impl SynchronizedValue {
    fn locked<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<T>,
    ) -> PyResult<T> {
        let obj = self.obj.bind(py);
        match &self.kind {
            WrapperLock::RLock(r) => {
                let r = r.get();
                if r.inner.is_owned() {
                    return f(obj);
                }
                r.acquire(py, true, None)?;
                let out = f(obj);
                r.inner.release().map_err(to_py)?;
                out
            }
            WrapperLock::Other => {
                let lock = self.lock.bind(py);
                lock.call_method0(pyo3::intern!(py, "acquire"))?;
                let out = f(obj);
                lock.call_method0(pyo3::intern!(py, "release"))?;
                out
            }
        }
    }
}

#[pymethods]
impl SynchronizedValue {
    #[new]
    #[pyo3(signature = (obj, lock, *_args, **_kwargs))]
    fn new(
        obj: &Bound<'_, PyAny>,
        lock: &Bound<'_, PyAny>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyAny>>,
    ) -> Self {
        let kind = match lock.cast::<RLock>() {
            Ok(r) => WrapperLock::RLock(r.clone().unbind()),
            Err(_) => WrapperLock::Other,
        };
        SynchronizedValue {
            obj: obj.clone().unbind(),
            lock: lock.clone().unbind(),
            kind,
        }
    }

    #[getter]
    fn value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.locked(py, |o| {
            o.getattr(pyo3::intern!(py, "value")).map(Bound::unbind)
        })
    }

    #[setter]
    fn set_value(&self, py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.locked(py, |o| o.setattr(pyo3::intern!(py, "value"), v))
    }

    fn get_lock(&self, py: Python<'_>) -> Py<PyAny> {
        self.lock.clone_ref(py)
    }

    fn get_obj(&self, py: Python<'_>) -> Py<PyAny> {
        self.obj.clone_ref(py)
    }
}
