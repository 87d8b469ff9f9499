//! Messages: a queue of byte strings (the Python layer pickles), the two ends of
//! a `Pipe`, and `SharedMemory`'s checks.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::{Empty, Full, to_py};
use crate::fds;
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

/// How many objects the plain encoder takes in one message before it gives up
/// (the general pickler then takes it: only slower, never wrong).
const PLAIN_BUDGET: u32 = 64;
/// The longest message the plain encoder writes: one pickle frame (CPython
/// writes bigger payloads in several frames).
const PLAIN_MAX: usize = 60_000;

/// The pickle opcodes (protocol 5) the plain encoder writes.
mod op {
    pub(super) const PROTO: u8 = 0x80;
    pub(super) const FRAME: u8 = 0x95;
    pub(super) const STOP: u8 = b'.';
    pub(super) const NONE: u8 = b'N';
    pub(super) const NEWTRUE: u8 = 0x88;
    pub(super) const NEWFALSE: u8 = 0x89;
    pub(super) const BININT1: u8 = b'K';
    pub(super) const BININT2: u8 = b'M';
    pub(super) const BININT: u8 = b'J';
    pub(super) const LONG1: u8 = 0x8a;
    pub(super) const BINFLOAT: u8 = b'G';
    pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
    pub(super) const BINUNICODE: u8 = b'X';
    pub(super) const SHORT_BINBYTES: u8 = b'C';
    pub(super) const BINBYTES: u8 = b'B';
    pub(super) const MEMOIZE: u8 = 0x94;
    pub(super) const MARK: u8 = b'(';
    pub(super) const EMPTY_TUPLE: u8 = b')';
    pub(super) const TUPLE: u8 = b't';
    pub(super) const TUPLE1: u8 = 0x85;
    pub(super) const EMPTY_LIST: u8 = b']';
    pub(super) const APPEND: u8 = b'a';
    pub(super) const APPENDS: u8 = b'e';
    pub(super) const EMPTY_DICT: u8 = b'}';
    pub(super) const SETITEM: u8 = b's';
    pub(super) const SETITEMS: u8 = b'u';
}

/// The plain encoder: writes the pickle `pickle.dumps(obj, 5)` writes, byte for
/// byte, for messages made only of `None`, `bool`, `int` (64-bit), `float`,
/// `str`, `bytes` (exact types) in exact tuples, lists and dicts, each of the
/// str, bytes and containers appearing once (a repeated one is a memo reference
/// in a pickle: left to the pickler). For those types the C pickler consults no
/// dispatch table, so this is also what `ForkingPickler` writes; anything else
/// (or more than [`PLAIN_BUDGET`] objects, or [`PLAIN_MAX`] bytes) is not plain
/// and goes to the pickler. No Python code runs while it encodes.
struct Plain<'a> {
    out: &'a mut Vec<u8>,
    budget: u32,
    /// The memoized objects written so far (by address, while they are alive).
    seen: Vec<usize>,
}

impl Plain<'_> {
    /// Encodes `obj` as a whole pickle into `out` (cleared first); `false` (and
    /// `out` meaningless) if it is not plain.
    fn encode(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> bool {
        out.clear();
        out.extend_from_slice(&[op::PROTO, 5, op::FRAME, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut p = Plain {
            out,
            budget: PLAIN_BUDGET,
            seen: Vec::new(),
        };
        if !p.save(obj) || p.out.len() >= PLAIN_MAX {
            return false;
        }
        out.push(op::STOP);
        // The frame header holds the payload's length; CPython leaves it out
        // when the payload is under 4 bytes.
        let payload = out.len() - 11;
        if payload >= 4 {
            out[3..11].copy_from_slice(&(payload as u64).to_le_bytes());
        } else {
            out.drain(2..11);
        }
        true
    }

    fn memoized(&mut self, obj: &Bound<'_, PyAny>) -> bool {
        let at = obj.as_ptr() as usize;
        if self.seen.contains(&at) {
            return false;
        }
        self.seen.push(at);
        true
    }

    fn sized(&mut self, short: u8, long: u8, data: &[u8]) {
        match u8::try_from(data.len()) {
            Ok(n) => self.out.extend_from_slice(&[short, n]),
            Err(_) => {
                self.out.push(long);
                self.out
                    .extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
        }
        self.out.extend_from_slice(data);
        self.out.push(op::MEMOIZE);
    }

    fn int(&mut self, x: i64) {
        if let Ok(b) = u8::try_from(x) {
            self.out.extend_from_slice(&[op::BININT1, b]);
        } else if let Ok(h) = u16::try_from(x) {
            self.out.push(op::BININT2);
            self.out.extend_from_slice(&h.to_le_bytes());
        } else if let Ok(w) = i32::try_from(x) {
            self.out.push(op::BININT);
            self.out.extend_from_slice(&w.to_le_bytes());
        } else {
            // Two's complement, little-endian, in as few bytes as keep the sign.
            let bytes = x.to_le_bytes();
            let mut n = 8;
            while n > 1 {
                let (top, next) = (bytes[n - 1], bytes[n - 2]);
                if (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0) {
                    n -= 1;
                } else {
                    break;
                }
            }
            self.out.extend_from_slice(&[op::LONG1, n as u8]);
            self.out.extend_from_slice(&bytes[..n]);
        }
    }

    /// Writes the items of a list or dict batch (CPython: one item alone with
    /// APPEND/SETITEM, else MARK ... APPENDS/SETITEMS; batches of 1000, more
    /// than the budget allows).
    fn batch(
        &mut self,
        n: usize,
        one: u8,
        many: u8,
        items: impl FnOnce(&mut Self) -> bool,
    ) -> bool {
        if n == 0 {
            return true;
        }
        if n > 1 {
            self.out.push(op::MARK);
        }
        if !items(self) {
            return false;
        }
        self.out.push(if n == 1 { one } else { many });
        true
    }

    fn save(&mut self, obj: &Bound<'_, PyAny>) -> bool {
        if self.budget == 0 || self.out.len() >= PLAIN_MAX {
            return false;
        }
        self.budget -= 1;
        if obj.is_none() {
            self.out.push(op::NONE);
        } else if obj.is_exact_instance_of::<PyBool>() {
            self.out.push(if obj.is_truthy().unwrap_or(false) {
                op::NEWTRUE
            } else {
                op::NEWFALSE
            });
        } else if obj.is_exact_instance_of::<PyInt>() {
            let Ok(x) = obj.extract::<i64>() else {
                return false;
            };
            self.int(x);
        } else if obj.is_exact_instance_of::<PyFloat>() {
            let Ok(x) = obj.extract::<f64>() else {
                return false;
            };
            self.out.push(op::BINFLOAT);
            self.out.extend_from_slice(&x.to_be_bytes());
        } else if let Ok(s) = obj.cast_exact::<PyString>() {
            // A str with lone surrogates has no UTF-8: the pickler's case.
            let Ok(text) = s.to_str() else {
                return false;
            };
            if !self.memoized(obj) {
                return false;
            }
            self.sized(op::SHORT_BINUNICODE, op::BINUNICODE, text.as_bytes());
        } else if let Ok(b) = obj.cast_exact::<PyBytes>() {
            if !self.memoized(obj) {
                return false;
            }
            self.sized(op::SHORT_BINBYTES, op::BINBYTES, b.as_bytes());
        } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
            let n = t.len();
            if n == 0 {
                self.out.push(op::EMPTY_TUPLE);
                return true;
            }
            if !self.memoized(obj) {
                return false;
            }
            if n > 3 {
                self.out.push(op::MARK);
            }
            if !t.iter().all(|o| self.save(&o)) {
                return false;
            }
            self.out.push(if n > 3 {
                op::TUPLE
            } else {
                op::TUPLE1 + n as u8 - 1
            });
            self.out.push(op::MEMOIZE);
        } else if let Ok(l) = obj.cast_exact::<PyList>() {
            if !self.memoized(obj) {
                return false;
            }
            self.out.extend_from_slice(&[op::EMPTY_LIST, op::MEMOIZE]);
            return self.batch(l.len(), op::APPEND, op::APPENDS, |p| {
                l.iter().all(|o| p.save(&o))
            });
        } else if let Ok(d) = obj.cast_exact::<PyDict>() {
            if !self.memoized(obj) {
                return false;
            }
            self.out.extend_from_slice(&[op::EMPTY_DICT, op::MEMOIZE]);
            return self.batch(d.len(), op::SETITEM, op::SETITEMS, |p| {
                d.iter().all(|(k, v)| p.save(&k) && p.save(&v))
            });
        } else {
            return false;
        }
        true
    }
}

thread_local! {
    /// The plain encoder's buffer (taken out while in use, so a signal handler
    /// that puts while a put waits gets a buffer of its own).
    static PLAIN_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Calls `f` with the message of `obj`: the plain encoder's bytes when it is
/// plain (no Python object made), else `multiproc.queues._dumps(obj)`'s (the
/// `ForkingPickler` of this thread, which sees every `copyreg` and
/// `ForkingPickler.register` reducer).
fn with_message<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<R>) -> PyResult<R> {
    static GENERAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let mut buf = PLAIN_BUF.with(|b| b.take());
    let r = if Plain::encode(obj, &mut buf) {
        f(&buf)
    } else {
        let py = obj.py();
        let data = GENERAL
            .import(py, "multiproc.queues", "_dumps")?
            .call1((obj,))?
            .cast_into::<PyBytes>()?;
        f(data.as_bytes())
    };
    if buf.capacity() <= 4 * PLAIN_MAX {
        PLAIN_BUF.with(|b| b.set(buf));
    }
    r
}

/// `_plain_dumps(obj)`: the plain encoder's pickle of `obj`, `None` if it is not
/// plain (for the tests, which compare it with `pickle.dumps(obj, 5)`).
#[pyfunction]
pub(crate) fn _plain_dumps<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
    let mut buf = Vec::new();
    Plain::encode(obj, &mut buf).then(|| PyBytes::new(obj.py(), &buf))
}

/// An item of the plain decoder's stack.
enum Item<'py> {
    Obj(Bound<'py, PyAny>),
    Mark,
}

/// The plain decoder: reads the pickles the plain encoder writes (protocol 5,
/// one frame or none, the opcodes of [`op`]; no memo references) and makes
/// the objects `pickle.loads` would. Anything else, malformed or not, is `None`:
/// `pickle.loads` then reads it (and raises what it raises). No Python code runs
/// while it decodes (it builds only str, bytes, int, float and containers of
/// them, whose hashes are built-in).
struct PlainReader<'a, 'py> {
    py: Python<'py>,
    b: &'a [u8],
    at: usize,
    stack: Vec<Item<'py>>,
}

impl<'a, 'py> PlainReader<'a, 'py> {
    fn decode(py: Python<'py>, b: &'a [u8]) -> Option<Bound<'py, PyAny>> {
        let mut r = PlainReader {
            py,
            b,
            at: 0,
            stack: Vec::new(),
        };
        if r.take(2)? != [op::PROTO, 5] {
            return None;
        }
        if r.b.get(2) == Some(&op::FRAME) {
            r.at = 3;
            let len = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
            if len != (b.len() - 11) as u64 {
                return None;
            }
        }
        r.run()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn push(&mut self, o: Bound<'py, PyAny>) {
        self.stack.push(Item::Obj(o));
    }

    fn pop(&mut self) -> Option<Bound<'py, PyAny>> {
        match self.stack.pop()? {
            Item::Obj(o) => Some(o),
            Item::Mark => None,
        }
    }

    /// The objects above the topmost mark (which goes too).
    fn pop_mark(&mut self) -> Option<Vec<Bound<'py, PyAny>>> {
        let at = self.stack.iter().rposition(|i| matches!(i, Item::Mark))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        items
            .into_iter()
            .map(|i| match i {
                Item::Obj(o) => Some(o),
                Item::Mark => None,
            })
            .collect()
    }

    fn top(&self) -> Option<&Bound<'py, PyAny>> {
        match self.stack.last()? {
            Item::Obj(o) => Some(o),
            Item::Mark => None,
        }
    }

    fn sized(&mut self, long: bool) -> Option<&'a [u8]> {
        let n = if long {
            u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize
        } else {
            usize::from(self.byte()?)
        };
        self.take(n)
    }

    fn run(mut self) -> Option<Bound<'py, PyAny>> {
        let py = self.py;
        loop {
            let code = self.byte()?;
            match code {
                op::STOP => {
                    let done = self.at == self.b.len() && self.stack.len() == 1;
                    return if done { self.pop() } else { None };
                }
                op::MEMOIZE => {
                    self.top()?;
                }
                op::NONE => self.push(py.None().into_bound(py)),
                op::NEWTRUE => self.push(PyBool::new(py, true).to_owned().into_any()),
                op::NEWFALSE => self.push(PyBool::new(py, false).to_owned().into_any()),
                op::BININT1 => {
                    let v = self.byte()?;
                    self.push(v.into_pyobject(py).ok()?.into_any());
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
                    self.push(v.into_pyobject(py).ok()?.into_any());
                }
                op::BININT => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().ok()?);
                    self.push(v.into_pyobject(py).ok()?.into_any());
                }
                op::LONG1 => {
                    let n = usize::from(self.byte()?);
                    if n > 8 {
                        return None;
                    }
                    let bytes = self.take(n)?;
                    let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    };
                    let mut all = [fill; 8];
                    all[..n].copy_from_slice(bytes);
                    let v = i64::from_le_bytes(all);
                    self.push(v.into_pyobject(py).ok()?.into_any());
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().ok()?);
                    self.push(PyFloat::new(py, v).into_any());
                }
                op::SHORT_BINUNICODE | op::BINUNICODE => {
                    let raw = self.sized(code == op::BINUNICODE)?;
                    // Surrogates (pickle's "surrogatepass") are not UTF-8: not plain.
                    let text = std::str::from_utf8(raw).ok()?;
                    self.push(PyString::new(py, text).into_any());
                }
                op::SHORT_BINBYTES | op::BINBYTES => {
                    let raw = self.sized(code == op::BINBYTES)?;
                    self.push(PyBytes::new(py, raw).into_any());
                }
                op::MARK => self.stack.push(Item::Mark),
                op::EMPTY_TUPLE => self.push(PyTuple::empty(py).into_any()),
                op::TUPLE1 | 0x86 | 0x87 => {
                    let n = usize::from(code - op::TUPLE1) + 1;
                    let at = self.stack.len().checked_sub(n)?;
                    let items = self
                        .stack
                        .split_off(at)
                        .into_iter()
                        .map(|i| match i {
                            Item::Obj(o) => Some(o),
                            Item::Mark => None,
                        })
                        .collect::<Option<Vec<_>>>()?;
                    self.push(PyTuple::new(py, items).ok()?.into_any());
                }
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(PyTuple::new(py, items).ok()?.into_any());
                }
                op::EMPTY_LIST => self.push(PyList::empty(py).into_any()),
                op::APPEND => {
                    let v = self.pop()?;
                    self.top()?.cast_exact::<PyList>().ok()?.append(v).ok()?;
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    let list = self.top()?.cast_exact::<PyList>().ok()?;
                    for v in items {
                        list.append(v).ok()?;
                    }
                }
                op::EMPTY_DICT => self.push(PyDict::new(py).into_any()),
                op::SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.top()?
                        .cast_exact::<PyDict>()
                        .ok()?
                        .set_item(k, v)
                        .ok()?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return None;
                    }
                    let dict = self.top()?.cast_exact::<PyDict>().ok()?;
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        dict.set_item(k, v).ok()?;
                    }
                }
                _ => return None,
            }
        }
    }
}

/// `_plain_loads(data)`: the plain decoder's object of `data`, `None` if it
/// leaves `data` to `pickle.loads` (for the tests; a pickle of `None` is not
/// told apart from that, which they do not need).
#[pyfunction]
pub(crate) fn _plain_loads<'py>(py: Python<'py>, data: &[u8]) -> Option<Bound<'py, PyAny>> {
    PlainReader::decode(py, data)
}

/// The object of a message: `pickle.loads` (what `ForkingPickler.loads` is).
fn loads<'py>(data: &Bound<'py, PyBytes>) -> PyResult<Bound<'py, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOADS.import(data.py(), "pickle", "loads")?.call1((data,))
}

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
