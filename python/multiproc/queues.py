"""``Queue``, ``SimpleQueue``, ``JoinableQueue``: pickled objects through multiproc's
ring in shared memory (no feeder thread, no pipe).

``put`` pickles the object at once (CPython pickles it later, in its feeder thread,
so an unpicklable object fails there, silently); the bytes are in the queue when
``put`` returns, so ``qsize``/``empty`` are exact and a process may exit right after
``put`` without losing the message. A producer killed inside ``put`` leaves no part of
its message; a consumer killed inside ``get`` loses at most the message it was taking.
"""

import collections
import copyreg
import io
import pickle
import queue as _queue
import threading
import weakref

from multiprocessing.reduction import ForkingPickler

from . import _native
from . import reduction

Empty = _queue.Empty
Full = _queue.Full

#: What ``get`` unpickles with (``ForkingPickler.loads`` is ``pickle.loads``).
_loads = ForkingPickler.loads


class _Dumper(threading.local):
    """One pickler per thread, reused: making a ``ForkingPickler`` per message (as
    CPython does) costs more than pickling a small object. Its dispatch table is
    a live view of ``ForkingPickler``'s (``ForkingPickler.register``, then
    ``copyreg``), so a reducer registered after the pickler was made is used too
    (a ``ForkingPickler`` copies both tables when it is made)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.pickler = ForkingPickler(self.buf, pickle.HIGHEST_PROTOCOL)
        self.pickler.dispatch_table = collections.ChainMap(
            ForkingPickler._extra_reducers, copyreg.dispatch_table)
        self.busy = False


_dumper = _Dumper()


def _dumps(obj):
    """The message of ``obj`` (``bytes``): what ``Queue.put`` sends for an object
    that is not plain data (plain data, the native ``put`` pickles with
    ``pickle.dumps``: the same bytes, faster)."""
    d = _dumper
    if d.busy:
        # Pickling inside pickling (a reducer that puts into a queue): the
        # thread's pickler is mid-message.
        return bytes(ForkingPickler.dumps(obj, pickle.HIGHEST_PROTOCOL))
    d.busy = True
    buf = d.buf
    try:
        d.pickler.dump(obj)
        return buf.getvalue()
    finally:
        buf.seek(0)
        buf.truncate()
        d.pickler.clear_memo()
        d.busy = False

# Every native queue of this process, to count a fork child as a holder of each.
_live = weakref.WeakSet()


def _after_fork_in_child():
    for q in list(_live):
        q._after_fork_child()


class _Base(_native.Queue):
    __slots__ = ("__weakref__",)

    def __init__(self, *args, **kwargs):
        _live.add(self)

    def __reduce__(self):
        return reduction.reduce_native(self, maxsize=self._maxsize, joinable=self._joinable)

    def _after_import(self):
        _live.add(self)


class Queue(_Base):
    """``multiprocessing.Queue(maxsize=0)``. ``put``, ``get``, ``put_nowait`` and
    ``get_nowait`` are native: one call each, pickling included."""

    __slots__ = ()

    def __new__(cls, maxsize=0, *, ctx=None):
        return super().__new__(cls, maxsize, False)

    def join_thread(self):
        """Nothing to join: there is no feeder thread."""

    def cancel_join_thread(self):
        """Nothing to cancel: there is no feeder thread."""

    def close(self):
        """CPython's ``close`` only stops this process's feeder thread; there is none,
        so this does nothing (the queue stays usable, as CPython's ``get`` does)."""

    def __repr__(self):
        return "<multiproc.Queue(qsize=%d)>" % self.qsize()


class JoinableQueue(_Base):
    """``multiprocessing.JoinableQueue(maxsize=0)``: ``task_done()`` and ``join()``."""

    __slots__ = ()

    def __new__(cls, maxsize=0, *, ctx=None):
        return super().__new__(cls, maxsize, True)

    join_thread = Queue.join_thread
    cancel_join_thread = Queue.cancel_join_thread
    close = Queue.close

    def join(self):
        _native.Queue.join(self, None)


class SimpleQueue(_Base):
    """``multiprocessing.SimpleQueue()``: ``put``, ``get``, ``empty``, ``close``."""

    __slots__ = ()

    def __new__(cls, *, ctx=None):
        return super().__new__(cls, 0, False)

    def put(self, obj):
        _native.Queue.put(self, obj, True, None)

    def get(self):
        return _native.Queue.get(self, True, None)

    def close(self):
        """Nothing to release early; the ring is freed with its last holder."""
