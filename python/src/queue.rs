//! Messages: the Queue (its `put` and `get` pickle, through `pickle`'s plain
//! pickler when they can), the two ends of a `Pipe`, and `SharedMemory`'s checks.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{Empty, Full, to_py};
use crate::fds;
use crate::pickle::{PlainReader, loads, with_message};
use crate::wait::{sliced, timeout_of};

enum Q {
    Plain(multiproc::Queue<()>),
    Joinable(multiproc::JoinableQueue<()>),
}

macro_rules! on {
    ($q:expr, $h:ident => $e:expr) => {
        match $q {
            Q::Plain($h) => $e,
            Q::Joinable($h) => $e,
        }
    };
}

/// Messages bigger than this are put in one wait (no slices): a message in
/// pieces that timed out would start again from its first piece.
const SLICED_PUT_MAX: usize = 64 << 10;

/// A queue of byte strings in shared memory (multiproc's ring): both a producer
/// and a consumer, as every CPython `Queue` is.
#[pyclass(subclass, module = "multiproc._native")]
pub(crate) struct Queue {
    inner: Q,
    maxsize: usize,
}

impl Queue {
    /// The next message's bytes; `queue.Empty` if none came.
    fn message(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<Vec<u8>> {
        match on!(&self.inner, q => q.get_bytes_nowait()) {
            Ok(v) => return Ok(v),
            Err(multiproc::Error::Empty | multiproc::Error::Disconnected(_)) => {}
            Err(e) => return Err(to_py(e)),
        }
        let t = timeout_of(timeout)?;
        if !block || t == Some(Duration::ZERO) {
            return Err(Empty::new_err(()));
        }
        let q = &self.inner;
        let r = sliced(py, t, |s| match on!(q, q => q.get_bytes(Some(s))) {
            Ok(v) => Ok(Some(v)),
            Err(multiproc::Error::Timeout { .. }) => Ok(None),
            // Every producer gone: this process may still put (see `put`).
            Err(multiproc::Error::Disconnected(_)) => {
                std::thread::sleep(s);
                Ok(None)
            }
            Err(e) => Err(e),
        })?;
        r.ok_or_else(|| Empty::new_err(()))
    }
}

#[pymethods]
impl Queue {
    /// `Queue(maxsize=0, joinable=False)`: `maxsize` messages at most (0: bound
    /// only by the 1 MiB ring).
    #[new]
    #[pyo3(signature = (maxsize = 0, joinable = false, *, _token = None))]
    fn new(maxsize: i64, joinable: bool, _token: Option<(Vec<u8>, Vec<i32>)>) -> PyResult<Self> {
        let m = maxsize.max(0) as usize;
        if let Some(t) = _token {
            let inner = if joinable {
                Q::Joinable(fds::import(t)?)
            } else {
                Q::Plain(fds::import(t)?)
            };
            return Ok(Queue { inner, maxsize: m });
        }
        let inner = if joinable {
            Q::Joinable(multiproc::JoinableQueue::with_maxsize(m).map_err(to_py)?)
        } else {
            Q::Plain(multiproc::Queue::with_maxsize(m).map_err(to_py)?)
        };
        Ok(Queue { inner, maxsize: m })
    }

    #[getter]
    fn _maxsize(&self) -> usize {
        self.maxsize
    }

    #[getter]
    fn _joinable(&self) -> bool {
        matches!(self.inner, Q::Joinable(_))
    }

    fn _export(&self) -> PyResult<(Vec<u8>, Vec<i32>)> {
        on!(&self.inner, q => fds::export(q))
    }

    /// `put(obj, block=True, timeout=None)`: pickles `obj` (see [`dumps`]) and
    /// puts it; `queue.Full` if no room came. One native call: the bytes go to
    /// the ring straight from the pickle's `bytes` object.
    #[pyo3(signature = (obj, block = true, timeout = None))]
    fn put(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        with_message(obj, |data| self._put_bytes(py, data, block, timeout))
    }

    /// `put_nowait(obj)`: `put(obj, False)`.
    fn put_nowait(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        self.put(py, obj, false, None)
    }

    /// `get(block=True, timeout=None)`: the next object (unpickled here);
    /// `queue.Empty` if none came.
    #[pyo3(signature = (block = true, timeout = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let msg = self.message(py, block, timeout)?;
        match PlainReader::decode(py, &msg) {
            Some(obj) => Ok(obj),
            None => loads(&PyBytes::new(py, &msg)),
        }
    }

    /// `get_nowait()`: `get(False)`.
    fn get_nowait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.get(py, false, None)
    }

    /// `_put_bytes(data, block=True, timeout=None)`: puts a message already
    /// pickled; `queue.Full` if no room came.
    #[pyo3(signature = (data, block = true, timeout = None))]
    fn _put_bytes(
        &self,
        py: Python<'_>,
        data: &[u8],
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        match on!(&self.inner, q => q.put_bytes_nowait(data)) {
            Ok(()) => return Ok(()),
            Err(multiproc::Error::Full | multiproc::Error::Disconnected(_)) => {}
            Err(e) => return Err(to_py(e)),
        }
        let t = timeout_of(timeout)?;
        if !block || t == Some(Duration::ZERO) {
            return Err(Full::new_err(()));
        }
        let q = &self.inner;
        if data.len() > SLICED_PUT_MAX {
            return match py.detach(|| on!(q, q => q.put_bytes(data, t))) {
                Ok(()) => Ok(()),
                Err(multiproc::Error::Timeout { .. }) => Err(Full::new_err(())),
                Err(e) => Err(to_py(e)),
            };
        }
        let r = sliced(py, t, |s| match on!(q, q => q.put_bytes(data, Some(s))) {
            Ok(()) => Ok(Some(())),
            Err(multiproc::Error::Timeout { .. }) => Ok(None),
            // Every consumer gone (only seen when it would wait): in Python a
            // queue's holder is a consumer too, so wait on as CPython does.
            Err(multiproc::Error::Disconnected(_)) => {
                std::thread::sleep(s);
                Ok(None)
            }
            Err(e) => Err(e),
        })?;
        r.ok_or_else(|| Full::new_err(()))
    }

    /// `_get_bytes(block=True, timeout=None)`: the next message's bytes (not
    /// unpickled); `queue.Empty` if none came.
    #[pyo3(signature = (block = true, timeout = None))]
    fn _get_bytes<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.message(py, block, timeout)?))
    }

    fn qsize(&self) -> usize {
        on!(&self.inner, q => q.qsize())
    }

    fn empty(&self) -> bool {
        on!(&self.inner, q => q.empty())
    }

    fn full(&self) -> bool {
        on!(&self.inner, q => q.full())
    }

    fn close(&self) {
        on!(&self.inner, q => q.close())
    }

    fn _is_closed(&self) -> bool {
        on!(&self.inner, q => q.is_closed())
    }

    /// `JoinableQueue.task_done()`: `ValueError` if called more times than
    /// there were items (CPython's message).
    fn task_done(&self) -> PyResult<()> {
        match &self.inner {
            Q::Joinable(q) => match q.task_done() {
                Ok(()) => Ok(()),
                Err(multiproc::Error::TaskDoneTooMany) => Err(
                    pyo3::exceptions::PyValueError::new_err("task_done() called too many times"),
                ),
                Err(e) => Err(to_py(e)),
            },
            Q::Plain(_) => Err(pyo3::exceptions::PyAttributeError::new_err(
                "task_done: not a JoinableQueue",
            )),
        }
    }

    /// `JoinableQueue.join()`: waits until every task put is done (in slices, so
    /// Ctrl-C interrupts it); `TasksAbandonedError` if the rest were taken by
    /// consumers that died.
    #[pyo3(signature = (timeout = None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let Q::Joinable(q) = &self.inner else {
            return Err(pyo3::exceptions::PyAttributeError::new_err(
                "join: not a JoinableQueue",
            ));
        };
        let t = timeout_of(timeout)?;
        let r = sliced(py, t, |s| match q.join(Some(s)) {
            Ok(()) => Ok(Some(())),
            Err(multiproc::Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        })?;
        Ok(r.is_some())
    }

    /// After a fork by `os.fork` (multiprocessing's fork start method): counts
    /// this process as a producer and consumer of the queue, as a handle made in
    /// it would (the inherited handle is the parent's count).
    fn _after_fork_child(&mut self) {
        let fresh = match &self.inner {
            Q::Plain(q) => Q::Plain(q.clone()),
            Q::Joinable(q) => Q::Joinable(q.clone()),
        };
        // The inherited handle is the parent's: dropping it here would take a
        // count this process never had.
        std::mem::forget(std::mem::replace(&mut self.inner, fresh));
    }
}

/// One end of a `Pipe` (multiproc's `Connection`: CPython's framing).
#[pyclass(subclass, module = "multiproc._native")]
pub(crate) struct Connection {
    /// `None` only in an object whose end was moved out (`_from`).
    inner: Option<multiproc::Connection>,
}

impl Connection {
    fn c(&self) -> PyResult<&multiproc::Connection> {
        self.inner
            .as_ref()
            .ok_or_else(|| pyo3::exceptions::PyOSError::new_err("handle is closed"))
    }
}

#[pymethods]
impl Connection {
    /// `Connection(_from=end)`: moves the end out of `end` (which is left
    /// closed) into a new object of this (sub)class.
    #[new]
    #[pyo3(signature = (*, _from = None, _token = None))]
    fn new(
        _from: Option<&Bound<'_, Connection>>,
        _token: Option<(Vec<u8>, Vec<i32>)>,
    ) -> PyResult<Self> {
        if let Some(t) = _token {
            return Ok(Connection {
                inner: Some(fds::import(t)?),
            });
        }
        let Some(src) = _from else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "Connection objects come from Pipe()",
            ));
        };
        let inner = src.borrow_mut().inner.take();
        Ok(Connection { inner })
    }

    fn _export(&self) -> PyResult<(Vec<u8>, Vec<i32>)> {
        fds::export(self.c()?)
    }

    /// `send_bytes(buf, offset=0, size=None)` of a `bytes` (the Python layer
    /// turns other buffers into bytes).
    #[pyo3(signature = (buf, offset = 0, size = None))]
    fn _send_bytes(
        &self,
        py: Python<'_>,
        buf: &[u8],
        offset: usize,
        size: Option<usize>,
    ) -> PyResult<()> {
        let c = self.c()?;
        py.detach(|| c.send_bytes(buf, offset, size)).map_err(to_py)
    }

    /// `recv_bytes(maxlength=None)`: waits in slices (Ctrl-C interrupts it).
    #[pyo3(signature = (maxlength = None))]
    fn recv_bytes<'py>(
        &self,
        py: Python<'py>,
        maxlength: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(m) = maxlength
            && m < 0
        {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "negative maxlength",
            ));
        }
        let c = self.c()?;
        if !c.poll(Some(Duration::ZERO)).map_err(to_py)? {
            sliced(py, None, |s| c.poll(Some(s)).map(|r| r.then_some(())))?;
        }
        let v = py
            .detach(|| c.recv_bytes(maxlength.map(|m| m as usize)))
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &v))
    }

    /// `poll(timeout=0.0)`: whether a message (or EOF) is there to read.
    #[pyo3(signature = (timeout = 0.0))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let t = timeout_of(timeout)?;
        let c = self.c()?;
        if c.poll(Some(Duration::ZERO)).map_err(to_py)? {
            return Ok(true);
        }
        if t == Some(Duration::ZERO) {
            return Ok(false);
        }
        Ok(sliced(py, t, |s| c.poll(Some(s)).map(|r| r.then_some(())))?.is_some())
    }

    fn close(&mut self) {
        if let Some(c) = self.inner.as_mut() {
            c.close()
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.as_ref().is_none_or(|c| c.closed())
    }

    #[getter]
    fn readable(&self) -> bool {
        self.inner.as_ref().is_some_and(|c| c.readable())
    }

    #[getter]
    fn writable(&self) -> bool {
        self.inner.as_ref().is_some_and(|c| c.writable())
    }

    fn fileno(&self) -> PyResult<i32> {
        self.c()?.fileno().map_err(to_py)
    }
}

/// `Pipe(duplex=True)`: two connected `Connection`s (`(reader, writer)` when
/// not duplex).
#[pyfunction]
#[pyo3(signature = (duplex = true))]
pub(crate) fn pipe(py: Python<'_>, duplex: bool) -> PyResult<(Py<Connection>, Py<Connection>)> {
    #[allow(non_snake_case)]
    let (a, b) = multiproc::Pipe(duplex).map_err(to_py)?;
    Ok((
        Py::new(py, Connection { inner: Some(a) })?,
        Py::new(py, Connection { inner: Some(b) })?,
    ))
}

/// multiproc's `SharedMemory` checks (exclusive create with mode 0600 and an
/// unpredictable name; attach refuses other users', world-open segments and
/// symlinks); the Python layer maps the file with `mmap`.
#[pyclass(module = "multiproc._native")]
pub(crate) struct SharedMemory {
    inner: Option<multiproc::SharedMemory>,
    name: String,
    size: usize,
}

#[pymethods]
impl SharedMemory {
    #[new]
    #[pyo3(signature = (name = None, create = false, size = 0))]
    fn new(name: Option<&str>, create: bool, size: usize) -> PyResult<Self> {
        let shm = multiproc::SharedMemory::new(name, create, size).map_err(to_py)?;
        Ok(SharedMemory {
            name: shm.name().to_string(),
            size: shm.size(),
            inner: Some(shm),
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    fn close(&mut self) {
        self.inner = None;
    }

    fn unlink(&self) -> PyResult<()> {
        match &self.inner {
            Some(s) => s.unlink().map_err(to_py),
            None => multiproc::SharedMemory::attach(&self.name)
                .and_then(|s| s.unlink())
                .map_err(to_py),
        }
    }
}
