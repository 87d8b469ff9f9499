"""Ctrl-C (a real SIGINT) interrupts Condition.wait and Barrier.wait, the two waits
that cannot be sliced: the signal cuts their futex wait short (EINTR, as CPython
installs its handlers without SA_RESTART), the Python handlers run, and their
KeyboardInterrupt ends the wait cleanly."""

import os
import signal
import threading
import time

import pytest

import multiproc
from conftest import T, join_ok, start


@pytest.fixture
def started(ctx):
    """Starts children for a test and kills those still running at its end (a
    failed test must not leave a child blocked forever: the interpreter's exit
    would join it)."""
    procs = []

    def start_one(target, *args):
        procs.append(start(ctx, target, *args))
        return procs[-1]

    yield start_one
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(T)


def _raise_once():
    """SIGINT raises KeyboardInterrupt the first time only (the default handler
    raises it every time): the parent may send it again while this process is
    already out of the wait, since a signal that lands between two futex waits
    (a few microseconds every slice) interrupts nothing."""
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


def _interrupt(p, out):
    """Sends SIGINT to `p` until it reports on `out` (within T); the report."""
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        os.kill(p.pid, signal.SIGINT)
        try:
            return out.get(timeout=0.2)
        except multiproc.queues.Empty:
            pass
    p.kill()
    p.join(T)
    pytest.fail(f"SIGINT did not interrupt {p} within {T}s")


def _until(what, cond):
    deadline = time.monotonic() + T
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def _make_condition(ctx, lock):
    return ctx.Condition(ctx.Lock()) if lock == "lock" else ctx.Condition()


def _cond_waiter(cond, ready, out, interruptible):
    if interruptible:
        _raise_once()
    cond.acquire()
    try:
        ready.put(os.getpid())  # under the lock: see _all_inside_wait
        r = cond.wait(timeout=None if interruptible else T)
        out.put(("returned", r))
    except KeyboardInterrupt:
        owned = cond._is_owned()
        cond.release()  # raises if the lock was not taken back
        out.put(("interrupted", owned))
    else:
        cond.release()


def _all_inside_wait(cond, ready, n):
    """Each waiter reported ready while holding the lock, and releases it only
    inside wait(): once this process holds the lock, all `n` are inside."""
    for _ in range(n):
        ready.get(timeout=T)
    assert cond.acquire(timeout=T)


@pytest.mark.parametrize("lock", ["rlock", "lock"])
def test_sigint_interrupts_condition_wait(ctx, started, lock):
    cond, ready, out = _make_condition(ctx, lock), ctx.Queue(), ctx.Queue()
    p = started(_cond_waiter, cond, ready, out, True)
    _all_inside_wait(cond, ready, 1)
    cond.release()
    # The lock was taken back before the KeyboardInterrupt, and released after.
    assert _interrupt(p, out) == ("interrupted", True)
    join_ok(p)
    assert cond.acquire(timeout=T)
    cond.notify_all()  # nobody waits any more
    cond.release()


@pytest.mark.parametrize("order", ["interrupt_first", "racing"])
def test_notify_all_racing_interrupts_loses_no_wakeup(ctx, started, order):
    """Two waiters are interrupted, two are not; `notify_all` either follows the
    interrupts or races them (sent while the interrupted ones are waking). Every
    waiter that was not interrupted is notified."""
    cond, ready = ctx.Condition(), ctx.Queue()
    hit = [(q, started(_cond_waiter, cond, ready, q, True))
           for q in (ctx.Queue(), ctx.Queue())]
    plain = [(q, started(_cond_waiter, cond, ready, q, False))
             for q in (ctx.Queue(), ctx.Queue())]
    _all_inside_wait(cond, ready, 4)
    if order == "interrupt_first":
        cond.release()
        for q, p in hit:
            assert _interrupt(p, q) == ("interrupted", True)
        assert cond.acquire(timeout=T)
        cond.notify_all()
        cond.release()
    else:
        for _, p in hit:
            os.kill(p.pid, signal.SIGINT)
        cond.notify_all()
        cond.release()
        for q, _ in hit:
            # Interrupted (a notification that had chosen it went on: all were
            # chosen), or notified before the signal landed.
            assert q.get(timeout=T) in (("interrupted", True), ("returned", True))
    for q, _ in plain:
        assert q.get(timeout=T * 2) == ("returned", True), "a wake-up was lost"
    join_ok(*(p for _, p in hit + plain))


def _party(barrier, out, interruptible):
    if interruptible:
        _raise_once()
    try:
        out.put(("passed", barrier.wait(None if interruptible else T * 2)))
    except threading.BrokenBarrierError as e:
        out.put(("broken", "aborted" in str(e)))
    except KeyboardInterrupt:
        out.put(("interrupted", barrier.broken))


def test_sigint_interrupts_barrier_wait_and_breaks_it(ctx, started):
    b = ctx.Barrier(3)
    a_out, other_out = ctx.Queue(), ctx.Queue()
    a = started(_party, b, a_out, True)
    other = started(_party, b, other_out, False)
    _until("both parties inside wait()", lambda: b.n_waiting == 2)
    assert _interrupt(a, a_out) == ("interrupted", True)
    assert other_out.get(timeout=T * 3) == ("broken", True)  # aborted, not timed out
    join_ok(a, other)
    assert b.broken
    b.reset()
    assert not b.broken and b.n_waiting == 0
