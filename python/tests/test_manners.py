"""Python manners: blocking calls release the GIL, Ctrl-C (a real SIGINT)
interrupts them, timeouts are float seconds."""

import os
import signal
import threading
import time

import pytest

import multiproc
from conftest import T, join_ok, start


def _blocked(kind, obj, ready, out):
    try:
        ready.set()
        if kind == "lock":
            obj.acquire()
        elif kind == "rlock":
            obj.acquire(timeout=T * 3)
        elif kind == "semaphore":
            obj.acquire()
        elif kind == "event":
            obj.wait()
        elif kind == "condition":
            with obj:
                obj.wait()
        elif kind == "queue":
            obj.get()
        elif kind == "joinable":
            obj.join()
        elif kind == "pipe":
            obj.recv()
        out.put("returned")
    except KeyboardInterrupt:
        out.put("interrupted")


def _make(ctx, kind):
    if kind == "lock":
        l = ctx.Lock()
        l.acquire()
        return l
    if kind == "rlock":
        l = ctx.RLock()
        l.acquire()
        return l
    if kind == "semaphore":
        return ctx.Semaphore(0)
    if kind == "event":
        return ctx.Event()
    if kind == "condition":
        return ctx.Condition()
    if kind == "queue":
        return ctx.Queue()
    if kind == "joinable":
        q = ctx.JoinableQueue()
        q.put(1)
        return q
    if kind == "pipe":
        return ctx.Pipe()


# Not "condition": Condition.wait is one unsliced wait, and Barrier.wait likewise;
# a signal interrupts them through EINTR (test_interrupt.py tests them).
@pytest.mark.parametrize("kind", ["lock", "rlock", "semaphore", "event",
                                  "queue", "joinable", "pipe"])
def test_sigint_interrupts_a_blocked_child(ctx, kind):
    obj = _make(ctx, kind)
    keep = obj
    if kind == "pipe":
        keep, obj = obj  # the child blocks on the other end
    ready, out = ctx.Event(), ctx.Queue()
    p = start(ctx, _blocked, kind, obj, ready, out)
    assert ready.wait(T)
    time.sleep(0.05)  # let it block (not synchronization: either way it is interrupted)
    os.kill(p.pid, signal.SIGINT)
    assert out.get(timeout=T) == "interrupted"
    join_ok(p)
    del keep


def test_blocked_acquire_releases_the_gil():
    lock = multiproc.Lock()
    lock.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=T)))
    t.start()
    # This thread runs Python code while the other is blocked: if the blocked
    # call held the GIL, nothing here would run until its timeout.
    deadline = time.monotonic() + T
    n = 0
    while n < 1000 and time.monotonic() < deadline:
        n += 1
    lock.release()
    t.join(T)
    assert got == [True]


def test_timeouts_are_float_seconds():
    e = multiproc.Event()
    t0 = time.monotonic()
    assert e.wait(0.15) is False
    assert time.monotonic() - t0 >= 0.14
    assert e.wait(-5) is False
    with pytest.raises(ValueError):
        e.wait(float("nan"))
    q = multiproc.Queue()
    with pytest.raises(multiproc.queues.Empty):
        q.get(timeout=-1)
    lock = multiproc.Lock()
    assert lock.acquire(timeout=1e30)  # past the clock: forever, taken at once
    lock.release()


def test_a_token_naming_one_descriptor_twice_is_refused():
    # Two owners of one descriptor would close it twice; the import refuses the
    # token before taking any descriptor, so the caller still owns them all.
    from multiproc.reduction import _native_base

    lock = multiproc.Lock()
    data, fds = lock._export()
    assert fds, "a lock's token carries its segment's descriptor"
    try:
        with pytest.raises(ValueError, match="listed twice"):
            _native_base(type(lock)).__new__(type(lock), _token=(data, [fds[0]] + fds))
        for fd in fds:
            os.fstat(fd)  # still open: nothing was taken
    finally:
        for fd in fds:
            os.close(fd)
