"""multiproc: ``multiprocessing``'s primitives on futex words in shared memory.

Change one import (``import multiproc as mp``, or ``ctx = multiproc.get_context(m)``)
and ``Lock``, ``RLock``, ``Semaphore``, ``BoundedSemaphore``, ``Event``,
``Condition``, ``Barrier``, ``Value``, ``Array``, ``Queue``, ``SimpleQueue``,
``JoinableQueue``, ``Pipe`` and ``Pool`` become multiproc's: faster, and no process
waits forever because another died (a pool worker's death fails only its task, with
``WorkerLostError``). ``Process`` is CPython's (under fork, spawn and forkserver).
"""

import multiprocessing as _mp
import os as _os

from . import _native
from .context import MultiprocContext
from .synchronize import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    OwnerDiedWarning,
    RLock,
    Semaphore,
)
from .queues import JoinableQueue, Queue, SimpleQueue
from .connection import Pipe
from .sharedctypes import Array, RawArray, RawValue, Value
from . import shared_memory
from . import pool
from .pool import PoolBrokenError, PoolTerminatedError, WorkerLostError
from . import queues as _queues

TasksAbandonedError = _native.TasksAbandonedError

# The multiprocessing names multiproc does not replace.
from multiprocessing import (  # noqa: E402
    AuthenticationError,
    BufferTooShort,
    ProcessError,
    TimeoutError,
    active_children,
    allow_connection_pickling,
    cpu_count,
    current_process,
    freeze_support,
    get_all_start_methods,
    get_logger,
    log_to_stderr,
    parent_process,
)

__all__ = [
    "Array", "AuthenticationError", "Barrier", "BoundedSemaphore", "BufferTooShort",
    "Condition", "Event", "JoinableQueue", "Lock", "OwnerDiedWarning", "Pipe", "Pool",
    "PoolBrokenError", "PoolTerminatedError", "Process", "ProcessError", "Queue", "RLock", "RawArray", "RawValue", "Semaphore",
    "SimpleQueue", "TasksAbandonedError", "TimeoutError", "Value", "WorkerLostError", "active_children",
    "allow_connection_pickling", "cpu_count", "current_process", "freeze_support",
    "get_all_start_methods", "get_context", "get_logger", "get_start_method",
    "log_to_stderr", "parent_process", "set_start_method", "shared_memory",
]

Process = _mp.Process


def Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None):
    """multiproc's :class:`multiproc.pool.Pool` in the default context (its start
    method): CPython's API, and a worker's death fails only the task it held."""
    return pool.Pool(processes, initializer, initargs, maxtasksperchild,
                     context=get_context())


def get_context(method=None):
    """multiproc's context for ``method`` (``"fork"``, ``"spawn"``,
    ``"forkserver"``; ``None``: the default start method)."""
    return MultiprocContext(method)


get_start_method = _mp.get_start_method
set_start_method = _mp.set_start_method


def _after_fork_in_child():
    _native.after_fork_in_child()
    _queues._after_fork_in_child()


# A child forked by os.fork (multiprocessing's fork start method, or the forkserver
# forking its children) counts as a holder of every shared object of its parent.
_os.register_at_fork(
    before=_native.before_fork,
    after_in_parent=_native.after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
