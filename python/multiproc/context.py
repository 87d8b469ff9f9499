"""Contexts: ``multiproc.get_context(method)`` in place of
``multiprocessing.get_context(method)``.

A context gives multiproc's primitives, queues, pipes, shared ctypes and ``Pool``
(its workers started by this start method), and the matching ``multiprocessing``
context's ``Process``, so one changed line moves a program over.
"""

import multiprocessing as _mp

from . import connection as _connection
from . import pool as _pool
from . import queues as _queues
from . import sharedctypes as _sharedctypes
from . import synchronize as _synchronize


class MultiprocContext:
    """A start method's context: ``ctx.Lock()``, ``ctx.Process(...)``, ..."""

    def __init__(self, method=None):
        self._mp = _mp.get_context(method)
        self._name = self._mp.get_start_method()

    # What CPython's context has and multiproc does not replace.
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._mp, name)

    def __repr__(self):
        return f"<multiproc context {self._name!r}>"

    @property
    def Process(self):
        return self._mp.Process

    def get_start_method(self, allow_none=False):
        return self._name

    def get_context(self, method=None):
        if method is None:
            return self
        return MultiprocContext(method)

    def Pool(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None):
        return _pool.Pool(processes, initializer, initargs, maxtasksperchild, context=self)

    def Lock(self):
        return _synchronize.Lock()

    def RLock(self):
        return _synchronize.RLock()

    def Semaphore(self, value=1):
        return _synchronize.Semaphore(value)

    def BoundedSemaphore(self, value=1):
        return _synchronize.BoundedSemaphore(value)

    def Event(self):
        return _synchronize.Event()

    def Condition(self, lock=None):
        return _synchronize.Condition(lock)

    def Barrier(self, parties, action=None, timeout=None):
        return _synchronize.Barrier(parties, action, timeout)

    def Queue(self, maxsize=0):
        return _queues.Queue(maxsize)

    def JoinableQueue(self, maxsize=0):
        return _queues.JoinableQueue(maxsize)

    def SimpleQueue(self):
        return _queues.SimpleQueue()

    def Pipe(self, duplex=True):
        return _connection.Pipe(duplex)

    def Value(self, typecode_or_type, *args, lock=True):
        return _sharedctypes.Value(typecode_or_type, *args, lock=lock, ctx=self)

    def Array(self, typecode_or_type, size_or_initializer, *, lock=True):
        return _sharedctypes.Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self)

    def RawValue(self, typecode_or_type, *args):
        return _sharedctypes.RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type, size_or_initializer):
        return _sharedctypes.RawArray(typecode_or_type, size_or_initializer)
