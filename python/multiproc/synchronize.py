"""The synchronization primitives: multiproc's futex words, with CPython's names.

The classes subclass the native ones (``multiproc._native``), so every call is one
native method call; this module adds pickling (``__reduce__``, see ``reduction``)
and CPython's pure-Python helpers (``Condition.wait_for``).

Owner death (what CPython cannot do: its Lock is an ownerless semaphore and a dead
holder makes everyone wait forever): a lock whose holder died is handed to the next
acquirer. ``acquire()`` returns ``True`` as for any acquisition — so ``with lock:``
holds it and its ``__exit__`` releases it: the recovery can never leak the lock —
``lock.owner_died`` is ``True`` and an ``OwnerDiedWarning`` is issued. The holder
repairs the data, calls ``lock.mark_consistent()``, then releases; until then every
acquirer is told again, so nobody takes half-updated data for sound. (Raising an
exception from ``__enter__`` instead would skip ``__exit__`` and leak the lock;
raising inside the block is not something a context manager can do.) If warnings
are turned into errors, the lock is released before the exception propagates.
"""

import time

from . import _native
from . import reduction

OwnerDiedWarning = _native.OwnerDiedWarning


class Lock(_native.Lock):
    """``multiprocessing.Lock()``: a non-recursive lock of any thread of any process."""

    __slots__ = ()

    def __reduce__(self):
        return reduction.reduce_native(self)


class RLock(_native.RLock):
    """``multiprocessing.RLock()``: recursive, owned by (process, thread)."""

    __slots__ = ()

    def __reduce__(self):
        return reduction.reduce_native(self)


class Semaphore(_native.Semaphore):
    """``multiprocessing.Semaphore(value=1)``."""

    __slots__ = ()

    def __reduce__(self):
        return reduction.reduce_native(self, bounded=self._bounded)


class BoundedSemaphore(Semaphore):
    """``multiprocessing.BoundedSemaphore(value=1)``: releasing past the initial
    value is a ``ValueError``."""

    __slots__ = ()

    def __new__(cls, value=1, *args, **kwargs):
        return super().__new__(cls, value, bounded=True)


class Event(_native.Event):
    """``multiprocessing.Event()``."""

    __slots__ = ()

    def __repr__(self):
        state = "set" if self.is_set() else "unset"
        return f"<{type(self).__qualname__} at {id(self):#x} {state}>"

    def __reduce__(self):
        return reduction.reduce_native(self)


class Condition(_native.Condition):
    """``multiprocessing.Condition(lock=None)``: over a new ``RLock`` by default."""

    __slots__ = ()

    def __new__(cls, lock=None, *args, **kwargs):
        if lock is None:
            lock = RLock()
        return super().__new__(cls, lock)

    def __init__(self, lock=None, *args, **kwargs):
        pass

    def __reduce__(self):
        # The lock travels as its own object, so the child's `_lock` is a Lock too.
        return reduction.reduce_native(self, lock=self._lock)

    def wait_for(self, predicate, timeout=None):
        """Waits until ``predicate()`` is true (CPython's loop); returns its last value."""
        result = predicate()
        if result:
            return result
        if timeout is not None:
            endtime = time.monotonic() + timeout
        else:
            endtime = None
            waittime = None
        while not result:
            if endtime is not None:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
            self.wait(waittime)
            result = predicate()
        return result

    # CPython's implementation counters, which the CPython test suite reads when
    # present; multiproc has none (its waiters are a table in shared memory).
    @property
    def _sleeping_count(self):
        raise NotImplementedError("multiproc's Condition has no sleeping count")

    _woken_count = _wait_semaphore = _sleeping_count

    def notifyAll(self):
        return self.notify_all()

    def __repr__(self):
        return "<multiproc.Condition(%r)>" % (self._lock,)


class Barrier(_native.Barrier):
    """``multiprocessing.Barrier(parties, action=None, timeout=None)``: a timeout, an
    ``abort()`` or a party's death breaks it with ``threading.BrokenBarrierError``.
    The action travels pickled (as CPython's does), beside the barrier's token."""

    __slots__ = ()

    def __reduce__(self):
        return reduction.reduce_native(self, parties=self.parties, action=self._action,
                                       timeout=self._timeout)
