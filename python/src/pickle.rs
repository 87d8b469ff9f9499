//! The plain pickler: pickles of plain data (None, bool, int, float, str, bytes in
//! tuples, lists and dicts) written and read natively, byte for byte what
//! `pickle.dumps(obj, 5)` writes and `pickle.loads` reads.
//!
//! Written by hand because it is the product itself: a Queue message of small
//! objects spent most of its time in `pickle.dumps` and `pickle.loads` (each call
//! makes a Pickler with a 4 KiB buffer; about 200 ns of a 657 ns `put`), and no
//! crate writes CPython's pickles from Python objects without making Python
//! objects on the way (`serde-pickle` pickles Rust values). Anything else, and
//! anything the reader does not recognise, goes to the real pickler, so this is
//! only ever faster, never different (the tests compare both ways).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

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
pub(crate) fn with_message<R>(
    obj: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> PyResult<R>,
) -> PyResult<R> {
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
pub(crate) struct PlainReader<'a, 'py> {
    py: Python<'py>,
    b: &'a [u8],
    at: usize,
    stack: Vec<Item<'py>>,
}

impl<'a, 'py> PlainReader<'a, 'py> {
    pub(crate) fn decode(py: Python<'py>, b: &'a [u8]) -> Option<Bound<'py, PyAny>> {
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
pub(crate) fn loads<'py>(data: &Bound<'py, PyBytes>) -> PyResult<Bound<'py, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOADS.import(data.py(), "pickle", "loads")?.call1((data,))
}
