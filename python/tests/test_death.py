"""SIGKILL at the places a process can hold shared state: the others carry on
(CPython's would wait forever), and /dev/shm holds nothing new afterwards."""

import os
import pickle
import queue
import signal
import threading
import time
import warnings

import pytest

import multiproc
from conftest import T, join_ok, start


@pytest.fixture(autouse=True)
def no_shm_leak():
    before = set(os.listdir("/dev/shm"))
    yield
    assert set(os.listdir("/dev/shm")) - before == set()


def _kill(p):
    os.kill(p.pid, signal.SIGKILL)
    p.join(T)
    assert p.exitcode == -signal.SIGKILL


def _hold(lock, v, held, never):
    lock.acquire()
    v.value = -1  # half an update
    held.set()
    never.wait(T)


def test_lock_holder_killed(ctx):
    lock, held, never = ctx.Lock(), ctx.Event(), ctx.Event()
    v = ctx.RawValue("i", 7)
    p = start(ctx, _hold, lock, v, held, never)
    assert held.wait(T)
    _kill(p)
    with pytest.warns(multiproc.OwnerDiedWarning):
        with lock:
            assert lock.owner_died
            v.value = 7  # the repair, before anyone else sees the data
            lock.mark_consistent()
    assert not lock.owner_died
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with lock:  # no warning any more
            pass


def test_lock_recovery_never_leaks_the_lock(ctx):
    """With warnings as errors, `with lock:` raises OwnerDiedWarning out of
    __enter__ — and the lock is not left held; the next acquirer is told again."""
    for make in (ctx.Lock, ctx.RLock):
        lock, held, never = make(), ctx.Event(), ctx.Event()
        p = start(ctx, _hold, lock, ctx.RawValue("i", 0), held, never)
        assert held.wait(T)
        _kill(p)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(multiproc.OwnerDiedWarning):
                with lock:
                    pytest.fail("the body must not run")
        # Not leaked: another thread can take it at once (an RLock would be
        # re-entered by this thread, so ask another one).
        got = []
        t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=T)))
        with pytest.warns(multiproc.OwnerDiedWarning):
            t.start()
            t.join(T)
        assert got == [True]
        assert lock.owner_died  # not repaired: still told


def _party(b, arrived):
    arrived.set()
    b.wait(T)


def test_barrier_party_killed(ctx):
    b, arrived = ctx.Barrier(3), ctx.Event()
    p = start(ctx, _party, b, arrived)
    assert arrived.wait(T)
    deadline = time.monotonic() + T
    while b.n_waiting < 1:  # the party is inside wait()
        assert time.monotonic() < deadline
        time.sleep(0.001)
    _kill(p)
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(T)
    assert time.monotonic() - t0 < T / 2  # the death broke it, not the timeout
    assert b.broken


def _flood(q, started):
    payload = b"x" * 1_500_000  # larger than the 1 MiB ring: put in pieces
    started.set()
    i = 0
    while True:
        q.put((i, payload))
        i += 1


def test_queue_producer_killed(ctx):
    q, started = ctx.Queue(), ctx.Event()
    p = start(ctx, _flood, q, started)
    assert started.wait(T)
    seen = [q.get(timeout=T)[0] for _ in range(3)]
    _kill(p)
    while True:  # whatever is left is whole
        try:
            i, payload = q.get(timeout=0.2)
        except queue.Empty:
            break
        assert payload == b"x" * 1_500_000
        seen.append(i)
    assert seen == list(range(len(seen)))
    q.put("after")  # the queue goes on
    assert q.get(timeout=T) == "after"


def _take_and_die(lock, cond, ready):
    with cond:
        ready.set()
        cond.wait(T)
    lock.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


def test_condition_lock_holder_killed(ctx):
    lock = ctx.Lock()
    cond, ready = ctx.Condition(lock), ctx.Event()
    p = start(ctx, _take_and_die, lock, cond, ready)
    assert ready.wait(T)
    with cond:
        cond.notify()
    p.join(T)
    assert p.exitcode == -signal.SIGKILL
    with pytest.warns(multiproc.OwnerDiedWarning):
        assert cond.acquire(timeout=T)
    cond.mark_consistent()
    cond.release()
