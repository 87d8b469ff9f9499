"""``multiproc.Pool``: CPython's ``multiprocessing.Pool`` API, and a worker's death
fails only the task it held.

CPython's pool shares one task pipe and one result pipe among all workers, so it
cannot tell which task a dead worker held, and a worker killed while it holds the
pipe's lock or is half-way through a message wedges every other one: ``get()``
waits forever (bpo-22393). Here every worker has its own socket pair, and the
parent knows which task each worker holds:

- one handler thread in the parent runs an event loop (``selectors``) over every
  worker's socket (non-blocking: it never waits on one peer), every worker's
  ``sentinel`` and a wake-up pipe. It hands the next task to an idle worker, reads
  results as they come, and runs the callbacks (as CPython's result thread does);
- a worker holds at most one task at a time, so when its sentinel fires the parent
  first takes every whole result the worker sent, throws away a half-sent one
  (it only ever lived in that worker's socket), starts a replacement (running the
  initializer), then fails the task the worker still held with
  :class:`WorkerLostError` (naming the pid, the signal or exit code and the task);
  every other task goes on;
- a fork worker closes the parent-side descriptors of every pool of the parent, so
  each worker's socket has one parent end: when the parent dies the workers read
  EOF and exit;
- ``imap``/``imap_unordered`` read their iterable in a feeder thread, a bounded
  number of tasks ahead (CPython's reads it all at once);
- ``terminate()`` ends the workers (SIGTERM, then SIGKILL after a grace period) and
  fails every unfinished result with :class:`PoolTerminatedError` (CPython's leaves
  them waiting forever);
- an initializer that raises breaks the pool: the worker sends the exception and
  exits, no replacement is started, and every unfinished and later task fails with
  :class:`PoolBrokenError` carrying it (CPython's pool starts new workers forever,
  each failing the same way, and its tasks never finish), as the Rust pool's
  ``PoolBroken``.

Messages use CPython's ``Connection`` framing (4-byte big-endian length). A task is
``job, index`` (16 bytes) and the pickled ``(function, args, kwds)``; a result is
``job, index`` and the pickled ``(ok, value)``, so a result that cannot be
unpickled in the parent fails its own task, never the pool.
"""

import collections
import io
import itertools
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import types
import warnings
import weakref
from multiprocessing import TimeoutError
from multiprocessing import get_context as _mp_get_context
from multiprocessing import util as _util
from multiprocessing.connection import Connection as _Connection
from multiprocessing.pool import ExceptionWithTraceback, MaybeEncodingError
from multiprocessing.reduction import ForkingPickler

__all__ = ["AsyncResult", "IMapIterator", "IMapUnorderedIterator", "MapResult", "Pool",
           "PoolBrokenError", "PoolTerminatedError", "WorkerLostError"]

# CPython's state names (its test suite sets ``pool._state`` to them).
INIT = "INIT"
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

_HEAD = struct.Struct("!qq")     # job, index
_LEN = struct.Struct("!i")       # CPython's frame length
_LEN64 = struct.Struct("!Q")     # after a length of -1 (from 2 GiB)
_STOP = -1                       # the job of the message that ends a worker
_INIT_FAILED = -2                # the job of a worker's "my initializer raised"
_READ_MAX = 1 << 18
#: How long terminate() waits for SIGTERM to end a worker before SIGKILL.
TERMINATE_GRACE = 2.0

_job_counter = itertools.count()
# Every pool of this process: a forked worker closes all their parent-side
# descriptors, so no worker keeps another's socket open after the parent died.
_cores = weakref.WeakSet()
# Held while a fork worker's list of those descriptors is made and it is started,
# and while a pool closes one (a number closed and reused in between must not be
# on the list: the child would close its own socket).
_fds_lock = threading.Lock()
_loads = ForkingPickler.loads


class WorkerLostError(Exception):
    """A pool worker died while it held a task: only that task fails.

    ``pid``, ``exitcode`` (negative: the signal), ``signal`` (a name, or ``None``)
    and ``task`` (what the task was) tell which; the pool has already started a
    replacement worker. Run the task again if it may be repeated.
    """

    def __init__(self, message, pid=None, exitcode=None, task=None):
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.task = task

    @property
    def signal(self):
        if self.exitcode is not None and self.exitcode < 0:
            try:
                return signal.Signals(-self.exitcode).name
            except ValueError:
                return f"signal {-self.exitcode}"
        return None

    def __reduce__(self):
        return (type(self), (self.args[0], self.pid, self.exitcode, self.task))


class PoolTerminatedError(Exception):
    """The pool was terminated (``terminate()``, the end of a ``with`` block, or the
    pool was garbage-collected while running) before this task's result came."""


class PoolBrokenError(Exception):
    """The pool's initializer raised in a worker: the pool starts no more workers,
    and its unfinished and later tasks fail with this error (its ``__cause__`` is
    the initializer's exception, with the worker's traceback). ``close()``,
    ``join()`` and ``terminate()`` still work."""


# --- worker side ----------------------------------------------------------------

def _mapstar(func, chunk):
    return list(map(func, chunk))


def _starmapstar(func, chunk):
    return list(itertools.starmap(func, chunk))


def _result_frame(job, i, ok, value):
    buf = io.BytesIO()
    buf.write(_HEAD.pack(job, i))
    ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump((ok, value))
    return buf.getbuffer()


def _worker(conn, initializer, initargs, maxtasks, close_fds):
    """A pool worker's main (importable by name for spawn and forkserver)."""
    for fd in close_fds:  # fork: the parent's pool descriptors, inherited
        try:
            os.close(fd)
        except OSError:
            pass
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as e:
            # Tell the parent, which breaks the pool instead of starting another
            # worker that would fail the same way; then exit as CPython's worker
            # does (the traceback printed, exit code 1).
            try:
                conn.send_bytes(_result_frame(
                    _INIT_FAILED, 0, False, ExceptionWithTraceback(e, e.__traceback__)))
            except Exception:
                pass
            raise
    done = 0
    while maxtasks is None or done < maxtasks:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            break  # the parent is gone
        job, i = _HEAD.unpack_from(msg)
        if job == _STOP:
            break
        try:
            func, args, kwds = _loads(memoryview(msg)[_HEAD.size:])
            del msg
            result = (True, func(*args, **kwds))
        except Exception as e:
            result = (False, ExceptionWithTraceback(e, e.__traceback__))
        func = args = kwds = None
        try:
            frame = _result_frame(job, i, *result)
        except Exception as e:
            frame = _result_frame(job, i, False, MaybeEncodingError(e, result[1]))
        result = None
        try:
            conn.send_bytes(frame)
        except OSError:
            break  # the parent is gone
        frame = None
        done += 1


# --- results --------------------------------------------------------------------

class AsyncResult:
    """The result of ``apply_async`` (CPython's ``ApplyResult``)."""

    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(self, pool, callback=None, error_callback=None):
        self._pool = pool  # keeps the pool alive until the result is set (as CPython)
        self._core = pool._core
        self._event = threading.Event()
        self._job = next(_job_counter)
        self._callback = callback
        self._error_callback = error_callback
        self._success = None
        self._value = None

    def ready(self):
        return self._event.is_set()

    def successful(self):
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout=None):
        self._event.wait(timeout)

    def get(self, timeout=None):
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    def _set(self, i, obj):
        """Returns whether the job is complete (the core drops it then)."""
        self._success, self._value = obj
        _run_callback(self._callback if self._success else self._error_callback,
                      self._value)
        self._event.set()
        self._pool = None
        return True


ApplyResult = AsyncResult


def _run_callback(cb, value):
    if cb is None:
        return
    try:
        cb(value)
    except Exception:
        # CPython's result thread would die of it and the pool hang; report it.
        print("multiproc.Pool: exception in a result callback:", file=sys.stderr)
        traceback.print_exc()


class MapResult(AsyncResult):
    """The result of ``map_async``/``starmap_async``: ready when every chunk is."""

    def __init__(self, pool, chunksize, length, callback, error_callback):
        super().__init__(pool, callback, error_callback)
        self._lock = threading.Lock()
        self._success = True
        self._value = [None] * length
        self._chunksize = chunksize
        if chunksize <= 0:
            self._number_left = 0
            self._event.set()
            self._pool = None
        else:
            self._number_left = length // chunksize + bool(length % chunksize)

    def _set(self, i, obj):
        ok, result = obj
        with self._lock:
            self._number_left -= 1
            if ok and self._success:
                self._value[i * self._chunksize:(i + 1) * self._chunksize] = result
            elif not ok and self._success:
                self._success = False  # the first error is the one raised
                self._value = result
            if self._number_left > 0:
                return False
        _run_callback(self._callback if self._success else self._error_callback,
                      self._value)
        self._event.set()
        self._pool = None
        return True


class IMapIterator:
    """The iterator ``imap`` returns: results in order; ``next(timeout)``."""

    def __init__(self, pool):
        self._pool = pool
        self._core = pool._core
        self._cond = threading.Condition(threading.Lock())
        self._job = next(_job_counter)
        self._items = collections.deque()
        self._index = 0
        self._length = None
        self._unsorted = {}
        self._failed = False  # terminate() failed the rest: later sets are ignored

    def __iter__(self):
        return self

    def next(self, timeout=None):
        with self._cond:
            if not self._items:
                if self._index == self._length:
                    self._pool = None
                    raise StopIteration
                self._cond.wait_for(
                    lambda: self._items or self._index == self._length, timeout)
                if not self._items:
                    if self._index == self._length:
                        self._pool = None
                        raise StopIteration
                    raise TimeoutError
            ok, value = self._items.popleft()
        if ok:
            return value
        raise value

    __next__ = next

    def _set(self, i, obj):
        with self._cond:
            if self._failed:
                return False
            if self._index == i:
                self._items.append(obj)
                self._index += 1
                while self._index in self._unsorted:
                    self._items.append(self._unsorted.pop(self._index))
                    self._index += 1
                self._cond.notify()
            else:
                self._unsorted[i] = obj
            return self._finished()

    def _finished(self):
        if self._index == self._length:
            self._cond.notify_all()
            self._pool = None
            return True
        return False

    def _set_length(self, length):
        with self._cond:
            if self._failed:
                return False
            self._length = length
            return self._finished()

    def _fail_rest(self, exc):
        """terminate(): the results not come yet are ``exc``."""
        with self._cond:
            self._failed = True
            end = self._length
            if end is None:
                end = max([self._index, *self._unsorted]) + 1 if self._unsorted \
                    else self._index + 1
            for j in range(self._index, end):
                if j not in self._unsorted:
                    self._unsorted[j] = (False, exc)
            self._length = end
            while self._index in self._unsorted:
                self._items.append(self._unsorted.pop(self._index))
                self._index += 1
            self._finished()


class IMapUnorderedIterator(IMapIterator):
    """The iterator ``imap_unordered`` returns: results as they come."""

    def _set(self, i, obj):
        with self._cond:
            if self._failed:
                return False
            self._items.append(obj)
            self._index += 1
            self._cond.notify()
            return self._finished()

    def _fail_rest(self, exc):
        with self._cond:
            self._failed = True
            if self._length is None:
                self._length = self._index + 1
            while self._index < self._length:
                self._items.append((False, exc))
                self._index += 1
            self._finished()


# --- the parent's side ----------------------------------------------------------

class _Task:
    __slots__ = ("job", "index", "frame", "keep", "what")

    def __init__(self, job, index, frame, keep, what):
        self.job = job
        self.index = index
        self.frame = frame   # the whole message, framed
        self.keep = keep     # the arguments, alive until the result comes (tokens)
        self.what = what     # for WorkerLostError's message


def _frame(job, i, obj):
    """A framed task message: length, job, index, pickle (one buffer)."""
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    buf.write(_HEAD.pack(job, i))
    ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(obj)
    view = buf.getbuffer()
    n = len(view) - 4
    if n <= 0x7FFFFFFF:
        view[:4] = _LEN.pack(n)
        return view
    return memoryview(_LEN.pack(-1) + _LEN64.pack(n) + bytes(view[4:]))


def _stop_frame():
    return memoryview(_LEN.pack(_HEAD.size) + _HEAD.pack(_STOP, 0))


def _name(func):
    return getattr(func, "__qualname__", None) or repr(func)


class _Worker:
    __slots__ = ("proc", "pid", "fd", "sentinel", "task", "out", "inbuf", "sent",
                 "stopping", "eof")

    def __init__(self, proc, fd):
        self.proc = proc
        self.pid = proc.pid
        self.fd = fd
        self.sentinel = proc.sentinel
        self.task = None        # the task it holds
        self.out = None         # the unsent rest of its task message
        self.inbuf = bytearray()
        self.sent = 0
        self.stopping = False   # sent the stop message
        self.eof = False


class _Core:
    """Everything the handler thread and the pool's methods share (the handler
    thread holds this, not the Pool, so a dropped Pool is collected)."""

    def __init__(self, ctx, processes, initializer, initargs, maxtasks):
        self.ctx = ctx
        self.processes = processes
        self.initializer = initializer
        self.initargs = initargs
        self.maxtasks = maxtasks
        # Reentrant: the Pool's finalizer (terminate) may run in any thread, even in
        # the handler thread while it holds the lock (a garbage collection).
        self.lock = threading.RLock()
        self.room = threading.Condition(self.lock)  # imap feeders wait for room
        self.state = RUN
        self.broken = None       # the PoolBrokenError once the initializer raised
        self.pending = collections.deque()
        self.cache = {}          # job -> result object
        self.feeders = 0         # imap feeders still iterating
        self.workers = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.woken = False
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.thread = None
        self.fork = ctx.get_start_method() == "fork"
        self.names = itertools.count(1)
        _cores.add(self)

    # -- called by the pool's methods (any thread) --

    def wake(self):
        """Lock held."""
        if not self.woken:
            self.woken = True
            try:
                os.write(self.wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass

    def submit(self, result, tasks):
        """Queue tasks (lock not held)."""
        with self.lock:
            if self.register(result):
                self.pending.extend(tasks)
                self.wake()

    def register(self, result):
        """Takes `result` in; false if the pool is broken (it failed at once)."""
        with self.lock:
            if self.state != RUN:
                raise ValueError("Pool not running")
            if self.broken is not None:
                _fail(result, self.broken)
                return False
            self.cache[result._job] = result
            return True

    def finish(self, result, done):
        if done:
            with self.lock:
                self.cache.pop(result._job, None)
                if threading.current_thread() is not self.thread:
                    self.wake()  # close() waits for the cache to empty

    def set_result(self, job, i, obj):
        with self.lock:
            result = self.cache.get(job)
        if result is not None:
            self.finish(result, result._set(i, obj))

    # -- workers --

    def start_worker(self):
        """Starts one worker (constructor, then the handler thread only)."""
        a, b = socket.socketpair()
        fd = a.detach()
        theirs = _Connection(b.detach())  # CPython's: pickles for spawn/forkserver
        with _fds_lock:
            close = []
            if self.fork:
                close = [fd]
                for core in list(_cores):
                    close += [core.wake_r, core.wake_w]
                    close += [w.fd for w in list(core.workers)]
            p = self.ctx.Process(
                target=_worker,
                args=(theirs, self.initializer, self.initargs, self.maxtasks, close),
                name=f"multiproc.PoolWorker-{next(self.names)}", daemon=True)
            try:
                p.start()
            except BaseException:
                os.close(fd)
                raise
            finally:
                theirs.close()
        os.set_blocking(fd, False)
        w = _Worker(p, fd)
        self.workers.append(w)
        self.sel.register(fd, selectors.EVENT_READ, w)
        self.sel.register(w.sentinel, selectors.EVENT_READ, w)
        return w

    def _retire(self, w):
        for fd in (w.fd, w.sentinel):
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass
        with _fds_lock:
            self.workers.remove(w)
            try:
                os.close(w.fd)
            except OSError:
                pass

    # -- the handler thread --

    def run(self):
        try:
            self._loop()
        except BaseException:
            print("multiproc.Pool: the handler thread failed (the pool is terminated):",
                  file=sys.stderr)
            traceback.print_exc()
        finally:
            self._cleanup()

    def _loop(self):
        while True:
            dead = []
            for key, mask in self.sel.select():
                w = key.data
                if w is None:
                    self._drain_wake()
                elif key.fd == w.sentinel:
                    dead.append(w)
                else:
                    if mask & selectors.EVENT_READ:
                        self._read(w)
                    if mask & selectors.EVENT_WRITE:
                        self._flush(w)
                w = key = None
            for w in dead:
                self._lost(w)
            w = dead = None
            with self.lock:
                state = self.state
            if state == TERMINATE:
                self._terminate_workers()
                return
            self._dispatch()
            if state == CLOSE and self._closed_and_done():
                return

    def _drain_wake(self):
        # Read, then clear the flag: cleared first, a wake-up written in between
        # would be read here with the flag left set, and no later one written.
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self.lock:
            self.woken = False

    def _read(self, w):
        """Reads what the worker sent (never waits) and handles whole results."""
        if w.eof:
            return
        buf = w.inbuf
        while True:
            try:
                data = os.read(w.fd, _READ_MAX)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                w.eof = True  # the worker closed its end; its sentinel will fire
                try:
                    self.sel.unregister(w.fd)
                except (KeyError, ValueError):
                    pass
                break
            buf += data
            if len(data) < _READ_MAX:
                break
        data = None
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            head = 4
            if size == -1:
                if n - pos < 12:
                    break
                (size,) = _LEN64.unpack_from(buf, pos + 4)
                head = 12
            if n - pos < head + size:
                break
            with memoryview(buf) as view:
                msg = view[pos + head:pos + head + size].tobytes()
            pos += head + size
            self._result(w, msg)
            msg = None
        if pos:
            del buf[:pos]

    def _result(self, w, msg):
        job, i = _HEAD.unpack_from(msg)
        try:
            with memoryview(msg) as view:
                obj = _loads(view[_HEAD.size:])
        except Exception as e:
            obj = (False, MaybeEncodingError(e, "<a result that could not be unpickled>"))
        if job == _INIT_FAILED:
            self._break(w, obj[1])
            return
        task = w.task
        if task is not None and task.job == job and task.index == i:
            w.task = None
        task = None
        self.set_result(job, i, obj)
        obj = None

    def _flush(self, w):
        while w.out is not None:
            try:
                k = os.write(w.fd, w.out)
            except BlockingIOError:
                break
            except OSError:
                # The worker is gone: its sentinel tells what happened.
                w.out = None
                break
            w.out = w.out[k:] if k < len(w.out) else None
        try:
            self.sel.modify(w.fd, selectors.EVENT_READ | (
                selectors.EVENT_WRITE if w.out is not None else 0), w)
        except (KeyError, ValueError):
            pass

    def _send(self, w, frame):
        w.out = frame
        self._flush(w)

    def _lost(self, w):
        """The worker's sentinel fired: it has exited."""
        self._read(w)  # every whole result it sent first
        w.proc.join(TERMINATE_GRACE)
        code = w.proc.exitcode
        task = w.task
        self._retire(w)
        with self.lock:
            replace = self.broken is None and (
                self.state == RUN or (self.state == CLOSE and self._work_left()))
        if replace:
            # Before the task fails: whoever sees the error finds the pool whole.
            self.start_worker()
        if task is not None:
            w.task = None
            if code is not None and code < 0:
                try:
                    how = f"was killed by signal {-code} ({signal.Signals(-code).name})"
                except ValueError:
                    how = f"was killed by signal {-code}"
            elif code is None:
                how = "stopped answering"
            else:
                how = f"exited with code {code}"
            err = WorkerLostError(
                f"pool worker pid {w.pid} {how} while running {task.what}; only "
                f"this task failed (run it again if it may be repeated), and a "
                f"replacement worker was started",
                pid=w.pid, exitcode=code, task=task.what)
            self.set_result(task.job, task.index, (False, err))
            task = err = None

    def _break(self, w, cause):
        """Worker `w`'s initializer raised `cause`: fail every unfinished task, and
        every later one, with a PoolBrokenError (no worker is started again)."""
        with self.lock:
            first = self.broken is None
            if first:
                err = PoolBrokenError(
                    f"the pool's initializer raised in worker pid {w.pid}: {cause!r}; "
                    f"the pool starts no more workers and its tasks fail (fix the "
                    f"initializer and make a new pool)")
                err.__cause__ = cause
                self.broken = err
            results = list(self.cache.values())
            self.cache.clear()
            self.pending.clear()
            self.room.notify_all()
        for r in results:
            _fail(r, self.broken)

    def _work_left(self):
        """Lock held."""
        return bool(self.pending or self.cache or self.feeders)

    def _dispatch(self):
        for w in self.workers:
            if w.task is not None or w.stopping or w.eof:
                continue
            if self.maxtasks is not None and w.sent >= self.maxtasks:
                continue  # it exits by itself after its last task
            with self.lock:
                if not self.pending:
                    break
                task = self.pending.popleft()
                self.room.notify_all()
            w.task = task
            w.sent += 1
            frame, task.frame = task.frame, None
            self._send(w, frame)
            task = frame = None

    def _closed_and_done(self):
        with self.lock:
            if self._work_left():
                return False
        alive = False
        for w in list(self.workers):
            if not w.stopping:
                w.stopping = True
                if w.out is None and not w.eof:
                    self._send(w, _stop_frame())
            alive = True
        return not alive

    def _terminate_workers(self):
        for w in self.workers:
            if w.proc.exitcode is None:
                try:
                    w.proc.terminate()
                except OSError:
                    pass
        ends = {w.sentinel: w for w in self.workers}
        sel = selectors.DefaultSelector()
        for s in ends:
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + TERMINATE_GRACE
        while ends and time.monotonic() < deadline:
            for key, _ in sel.select(deadline - time.monotonic()):
                sel.unregister(key.fd)
                ends.pop(key.fd, None)
        sel.close()
        for w in ends.values():
            try:
                w.proc.kill()
            except OSError:
                pass
        for w in list(self.workers):
            w.proc.join()
            self._retire(w)

    def _cleanup(self):
        with self.lock:
            self.state = TERMINATE if self.state != CLOSE else CLOSE
            results = list(self.cache.values())
            self.cache.clear()
            self.pending.clear()
            self.room.notify_all()
        err = PoolTerminatedError(
            "the pool was terminated before this task finished (Pool.terminate(), "
            "the end of its with block, or it was garbage-collected while running); "
            "use close() and join() to let the tasks finish")
        for r in results:
            _fail(r, err)
        for w in list(self.workers):  # only after an error in the loop
            try:
                w.proc.kill()
            except OSError:
                pass
            w.proc.join()
            self._retire(w)
        self.sel.close()
        with _fds_lock:
            _cores.discard(self)
            for fd in (self.wake_r, self.wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    # -- close / terminate --

    def close(self):
        with self.lock:
            if self.state == RUN:
                self.state = CLOSE
                self.wake()

    def terminate(self):
        with self.lock:
            self.state = TERMINATE
            self.room.notify_all()
            if self.thread is not None and self.thread.is_alive():
                self.wake()
        t = self.thread
        if t is not None and t is not threading.current_thread():
            t.join()


def _fail(r, err):
    """Fails what is left of result `r` with `err`."""
    if isinstance(r, IMapIterator):
        r._fail_rest(err)
    elif isinstance(r, MapResult):
        _fail_map(r, err)
    else:
        r._set(0, (False, err))


def _fail_map(r, err):
    with r._lock:
        r._number_left = 0
        if r._success:
            r._success = False
            r._value = err
    _run_callback(r._error_callback, r._value)
    r._event.set()
    r._pool = None


def _terminate_core(core):
    core.terminate()


class Pool:
    """``multiprocessing.Pool``: a pool of worker processes where a worker's death
    fails only the task it held (:class:`WorkerLostError`) and a replacement starts.

    ``processes`` workers (default ``os.cpu_count()``), each running
    ``initializer(*initargs)`` first and replaced after ``maxtasksperchild`` tasks.
    ``context``: a ``multiprocessing`` or multiproc context (its start method's
    ``Process`` starts the workers); default: the default context.
    """

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, context=None):
        self._state = INIT
        self._core = None
        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or isinstance(maxtasksperchild, bool) \
                    or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        ctx = context if context is not None else _mp_get_context()
        mp_ctx = getattr(ctx, "_mp", ctx)  # a multiproc context wraps CPython's
        self._processes = processes
        core = _Core(mp_ctx, processes, initializer, initargs, maxtasksperchild)
        try:
            for _ in range(processes):
                core.start_worker()
        except BaseException:
            core.state = TERMINATE
            core._terminate_workers()
            core._cleanup()
            raise
        self._core = core
        core.thread = threading.Thread(target=core.run, name="multiproc.Pool handler",
                                       daemon=True)
        core.thread.start()
        # As CPython: runs when the pool is collected, or at exit before
        # multiprocessing ends its daemonic children.
        self._terminate = _util.Finalize(self, _terminate_core, args=(core,),
                                         exitpriority=15)
        self._state = RUN

    def __del__(self, _warn=warnings.warn, RUN=RUN):
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning,
                  source=self)

    def __repr__(self):
        cls = type(self)
        return (f"<{cls.__module__}.{cls.__qualname__} state={self._state} "
                f"pool_size={len(self._pool)}>")

    def __reduce__(self):
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled")

    @property
    def _pool(self):
        """The worker ``Process`` objects (CPython's attribute)."""
        core = self._core
        return [] if core is None else [w.proc for w in list(core.workers)]

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    # -- tasks --

    def _task(self, result, i, fn, args, kwds, what):
        """One task; a task whose arguments cannot be pickled fails at once
        (returns None) as CPython's does (its error comes out of ``get()``)."""
        try:
            frame = _frame(result._job, i, (fn, args, kwds))
        except Exception as e:
            return e
        return _Task(result._job, i, frame, (fn, args, kwds), what)

    def apply(self, func, args=(), kwds={}):
        """``func(*args, **kwds)`` in a worker; its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        """``func(*args, **kwds)`` in a worker: an :class:`AsyncResult`."""
        self._check_running()
        result = AsyncResult(self, callback, error_callback)
        t = self._task(result, 0, func, args, kwds, f"{_name(func)}() (apply job "
                                                   f"{result._job})")
        if isinstance(t, Exception):
            self._core.register(result)
            self._core.set_result(result._job, 0, (False, t))
        else:
            self._core.submit(result, [t])
        return result

    def map(self, func, iterable, chunksize=None):
        """``list(map(func, iterable))`` in the workers, in chunks."""
        return self._map_async(func, iterable, _mapstar, chunksize).get()

    def starmap(self, func, iterable, chunksize=None):
        """``[func(*args) for args in iterable]`` in the workers, in chunks."""
        return self._map_async(func, iterable, _starmapstar, chunksize).get()

    def map_async(self, func, iterable, chunksize=None, callback=None,
                  error_callback=None):
        """``map`` without waiting: a :class:`MapResult`."""
        return self._map_async(func, iterable, _mapstar, chunksize, callback,
                               error_callback)

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None):
        """``starmap`` without waiting: a :class:`MapResult`."""
        return self._map_async(func, iterable, _starmapstar, chunksize, callback,
                               error_callback)

    def _map_async(self, func, iterable, mapper, chunksize=None, callback=None,
                   error_callback=None):
        self._check_running()
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        n = len(iterable)
        if chunksize is None:
            chunksize, extra = divmod(n, self._processes * 4)
            if extra:
                chunksize += 1
        if n == 0:
            chunksize = 0
        result = MapResult(self, chunksize, n, callback, error_callback)
        if chunksize <= 0:
            return result
        kind = "starmap" if mapper is _starmapstar else "map"
        tasks, failed = [], []
        it = iter(iterable)
        i = 0
        try:
            while True:
                chunk = tuple(itertools.islice(it, chunksize))
                if not chunk:
                    break
                lo = i * chunksize
                t = self._task(result, i, mapper, (func, chunk), {},
                               f"chunk {i} (items {lo}..{lo + len(chunk) - 1}) of "
                               f"{kind}({_name(func)}) job {result._job}")
                (failed if isinstance(t, Exception) else tasks).append((i, t))
                i += 1
        except Exception as e:
            # The iterable failed: its chunk (and those not made) fail with it.
            failed.append((i, e))
            i += 1
        if i < result._number_left:
            # Fewer items than len() said, or the iterable failed: the missing
            # chunks fail too (CPython's map would wait for them forever).
            e = failed[-1][1] if failed and failed[-1][0] == i - 1 else ValueError(
                f"the iterable gave fewer items than its len() ({n})")
            failed.extend((j, e) for j in range(i, result._number_left))
        self._core.submit(result, [t for _, t in tasks])
        for j, e in failed:
            self._core.set_result(result._job, j, (False, e))
        return result

    def imap(self, func, iterable, chunksize=1):
        """An iterator of ``func(x)`` for ``x`` in ``iterable``, in order (the
        iterable is read lazily, a bounded number of tasks ahead)."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func, iterable, chunksize=1):
        """``imap``, its results as they come."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    def _imap(self, cls, func, iterable, chunksize):
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        result = cls(self)
        core = self._core
        core.register(result)
        with core.lock:
            core.feeders += 1
        threading.Thread(target=_feed, args=(self, result, func, iterable, chunksize),
                         name="multiproc.Pool imap feeder", daemon=True).start()
        if chunksize == 1:
            return result
        return (item for chunk in result for item in chunk)

    # -- lifetime --

    def close(self):
        """No more tasks; the workers exit when the queued ones are done."""
        if self._state == RUN:
            self._state = CLOSE
            self._core.close()

    def terminate(self):
        """Ends the workers now; unfinished results fail with
        :class:`PoolTerminatedError`."""
        self._state = TERMINATE
        if self._core is not None:
            self._terminate()

    def join(self, timeout=None):
        """Waits for the workers to exit (after ``close()`` or ``terminate()``);
        ``timeout`` (multiproc's addition): returns ``False`` if they have not."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        t = self._core.thread
        t.join(timeout)
        return not t.is_alive()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()


def _feed(pool, result, func, iterable, chunksize):
    """imap's feeder thread: reads the iterable, a bounded number of tasks ahead."""
    core = pool._core
    limit = max(64, 4 * core.processes)
    i = -1
    what = f"imap({_name(func)}) job {result._job}"
    try:
        if chunksize == 1:
            fn, items = func, iterable
        else:
            fn = _mapstar
            items = _chunks(func, iterable, chunksize)
        try:
            for i, x in enumerate(items):
                args = (x,) if chunksize == 1 else x
                t = pool._task(result, i, fn, args, {}, f"task {i} of {what}")
                args = x = None
                if isinstance(t, Exception):
                    core.set_result(result._job, i, (False, t))
                    continue
                with core.lock:
                    while len(core.pending) >= limit and core.state != TERMINATE:
                        core.room.wait()
                    if core.state == TERMINATE or core.broken is not None:
                        return  # its result has failed (terminate or _break)
                    core.pending.append(t)
                    core.wake()
                t = None
        except Exception as e:
            i += 1
            core.set_result(result._job, i, (False, e))
        core.finish(result, result._set_length(i + 1))
    finally:
        with core.lock:
            core.feeders -= 1
            core.wake()


def _chunks(func, iterable, size):
    it = iter(iterable)
    while True:
        chunk = tuple(itertools.islice(it, size))
        if not chunk:
            return
        yield (func, chunk)
