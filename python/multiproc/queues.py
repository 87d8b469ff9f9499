"""``Queue``, ``SimpleQueue``, ``JoinableQueue``: pickled objects through multiproc's
ring in shared memory (no feeder thread, no pipe).

``put`` pickles the object at once (CPython pickles it later, in its feeder thread,
so an unpicklable object fails there, silently); the bytes are in the queue when
``put`` returns, so ``qsize``/``empty`` are exact and a process may exit right after
``put`` without losing the message. A producer killed inside ``put`` leaves no part of
its message; a consumer killed inside ``get`` loses at most the message it was taking.
"""

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

_loads = ForkingPickler.loads


class _Dumper(threading.local):
    """One ForkingPickler per thread, reused: making one per message costs more
    than pickling a small object."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.pickler = ForkingPickler(self.buf, pickle.HIGHEST_PROTOCOL)


_dumper = _Dumper()


def _dumps(obj):
    d = _dumper
    buf = d.buf
    try:
        d.pickler.dump(obj)
        return buf.getvalue()
    finally:
        buf.seek(0)
        buf.truncate()
        d.pickler.clear_memo()

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
    """``multiprocessing.Queue(maxsize=0)``."""

    __slots__ = ()

    def __new__(cls, maxsize=0, *, ctx=None):
        return super().__new__(cls, maxsize, False)

    def put(self, obj, block=True, timeout=None):
        _native.Queue.put(self, _dumps(obj), block, timeout)

    def get(self, block=True, timeout=None):
        return _loads(_native.Queue.get(self, block, timeout))

    def put_nowait(self, obj):
        return self.put(obj, False)

    def get_nowait(self):
        return self.get(False)

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

    put = Queue.put
    get = Queue.get
    put_nowait = Queue.put_nowait
    get_nowait = Queue.get_nowait
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
        _native.Queue.put(self, _dumps(obj), True, None)

    def get(self):
        return _loads(_native.Queue.get(self, True, None))

    def close(self):
        """Nothing to release early; the ring is freed with its last holder."""
