"""multiproc's Pool under fork, spawn and forkserver: CPython's API, and a worker
killed while it holds a task fails only that task (CPython's would hang)."""

import multiprocessing
import os
import select
import signal
import struct
import sys
import threading

import pytest

import multiproc
from multiproc.pool import MapResult, Pool
from conftest import T


def _shm():
    # CPython's semaphores (sem.mp-*) live there for a moment while other programs
    # on the machine create them; nothing here makes one.
    return {n for n in os.listdir("/dev/shm") if not n.startswith("sem.mp-")}


@pytest.fixture(autouse=True)
def no_leaks():
    before = _shm()
    children = set(multiprocessing.active_children())
    yield
    assert _shm() - before == set()
    assert set(multiprocessing.active_children()) - children == set()


def bounded(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a thread: its result, or a failure after ``T``
    seconds (a blocking call of the pool API never hangs a test)."""
    out = []

    def run():
        try:
            out.append((True, fn(*args, **kwargs)))
        except BaseException as e:
            out.append((False, e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(T)
    assert out, f"{fn!r} did not return within {T} s"
    ok, value = out[0]
    if ok:
        return value
    raise value


class Bounded:
    """A pool whose blocking calls (``apply``, ``map``, ``starmap``, ``terminate``,
    the end of a ``with`` block) fail after ``T`` seconds instead of hanging."""

    BLOCKING = {"apply", "map", "starmap", "terminate"}

    def __init__(self, pool):
        self.pool = pool

    def __getattr__(self, name):
        attr = getattr(self.pool, name)
        if name in self.BLOCKING:
            return lambda *a, **k: bounded(attr, *a, **k)
        return attr

    def __enter__(self):
        self.pool.__enter__()
        return self

    def __exit__(self, *exc):
        bounded(self.pool.__exit__, *exc)


@pytest.fixture
def pools(ctx):
    """``make(n, ...)``: a (Bounded) pool of ``ctx`` that is terminated and joined
    after the test even if it fails."""
    made = []

    def make(*args, **kwargs):
        p = Bounded(ctx.Pool(*args, **kwargs))
        made.append(p)
        return p

    yield make
    for p in made:
        p.terminate()
        assert p.join(T)
        for w in p._pool:
            assert w.exitcode is not None


def closed_ok(p):
    procs = p._pool
    p.close()
    assert p.join(T), "the pool's workers did not exit"
    for w in procs:
        assert w.exitcode == 0, f"{w} exit code {w.exitcode}"
    assert p._pool == []


# --- module-level functions, importable by spawn and forkserver children --------

def sqr(x):
    return x * x


def mul(x, y):
    return x * y


def pid(_=None):
    return os.getpid()


def fail(x):
    raise ValueError(f"bad {x}")


def wait_then(ev, x):
    assert ev.wait(T), "the test did not set the event"
    return x


def wait_then_star(args):
    return wait_then(*args)


def unpicklable(_=None):
    return lambda: 42


class NeedsTwo(Exception):
    """Pickles, but does not unpickle (its __init__ wants two arguments)."""

    def __init__(self, a, b):
        super().__init__(f"{a} {b}")


def raise_needs_two():
    raise NeedsTwo(1, 2)


_initialized = None


def init(q, token):
    global _initialized
    _initialized = token
    q.put(os.getpid())


def initialized(_=None):
    return _initialized, os.getpid()


def mark_or_hang(x, seen, stuck, q, never):
    """Counts ``x`` in ``seen``; item ``stuck`` tells its pid and waits (to be
    killed)."""
    with seen.get_lock():
        seen[x] += 1
    if x == stuck:
        q.put(os.getpid())
        never.wait(T)
    return x * x


def _worker_conn():
    f = sys._getframe(1)
    while f.f_code.co_name != "_worker":
        f = f.f_back
    return f.f_locals["conn"]


def half_result_then_die(_=None):
    """Writes the first part of a result message (a frame of 1000 bytes, 120 sent)
    into the worker's connection, then dies: a worker killed mid-send."""
    fd = _worker_conn().fileno()
    os.write(fd, struct.pack("!i", 1000) + b"\x00" * 120)
    os.kill(os.getpid(), signal.SIGKILL)


def exit_with(code):
    os._exit(code)


# --- the API ----------------------------------------------------------------------

def test_ctx_pool_is_multiprocs(ctx, pools):
    p = pools(2)
    assert isinstance(p.pool, Pool)
    assert len(p._pool) == 2
    assert all(w.is_alive() for w in p._pool)
    d = multiproc.Pool(1)  # the default context
    assert isinstance(d, Pool)
    d.terminate()
    assert d.join(T)


def test_apply_and_apply_async(ctx, pools):
    p = pools(2)
    assert p.apply(sqr, (5,)) == 25
    assert p.apply(mul, (), {"x": 3, "y": 4}) == 12
    got, errs = [], []
    r = p.apply_async(sqr, (6,), callback=got.append, error_callback=errs.append)
    assert r.get(T) == 36
    assert r.ready() and r.successful()
    assert got == [36] and errs == []
    r = p.apply_async(fail, (1,), callback=got.append, error_callback=errs.append)
    r.wait(T)
    assert r.ready() and not r.successful()
    with pytest.raises(ValueError, match="bad 1"):
        r.get(T)
    assert len(errs) == 1 and isinstance(errs[0], ValueError)
    closed_ok(p)


def test_map_family_in_order(ctx, pools):
    p = pools(3)
    xs = list(range(100))
    assert p.map(sqr, xs) == [x * x for x in xs]
    assert p.map(sqr, xs, chunksize=7) == [x * x for x in xs]
    assert p.map(sqr, iter(xs)) == [x * x for x in xs]  # no len(): listed
    pairs = list(zip(range(50), range(50, 0, -1)))
    assert p.starmap(mul, pairs) == [a * b for a, b in pairs]
    assert p.starmap_async(mul, pairs, 4).get(T) == [a * b for a, b in pairs]
    done = []
    r = p.map_async(sqr, xs, callback=done.append)
    assert isinstance(r, MapResult)
    assert r.get(T) == [x * x for x in xs]
    assert done == [[x * x for x in xs]]
    assert p.map(sqr, []) == []
    assert p.map_async(sqr, [], chunksize=1).get(T) == []
    closed_ok(p)


def test_imap_in_order_and_unordered_gets_all(ctx, pools):
    p = pools(3)
    assert bounded(list, p.imap(sqr, range(50))) == [x * x for x in range(50)]
    assert bounded(list, p.imap(sqr, range(50), chunksize=6)) == [x * x for x in range(50)]
    assert bounded(list, p.imap(sqr, (x for x in range(20)))) == [x * x for x in range(20)]
    assert bounded(sorted, p.imap_unordered(sqr, range(50))) == [x * x for x in range(50)]
    assert bounded(sorted, p.imap_unordered(sqr, range(50), 5)) == [x * x for x in range(50)]
    assert bounded(list, p.imap(sqr, [])) == [] and bounded(list, p.imap_unordered(sqr, [])) == []
    it = p.imap(sqr, range(3))
    assert [it.next(T) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(StopIteration):
        it.next(T)
    # A long input is read lazily, a bounded number of tasks ahead.
    assert bounded(sum, p.imap_unordered(sqr, range(3000), 10)) == sum(x * x for x in range(3000))
    closed_ok(p)


def test_chunksize_default_is_cpythons(ctx, pools):
    p = pools(2)
    r = p.map_async(sqr, range(100))  # ceil(100 / (4 * 2)) = 13
    assert r._chunksize == 13
    assert r.get(T) == [x * x for x in range(100)]
    closed_ok(p)


def test_timeouts(ctx, pools):
    p = pools(2)
    ev = ctx.Event()
    r = p.apply_async(wait_then, (ev, 7))
    with pytest.raises(multiprocessing.TimeoutError):
        r.get(timeout=0.05)
    assert not r.ready()
    with pytest.raises(ValueError, match="not ready"):
        r.successful()
    it = p.imap(wait_then_star, [(ev, 8)])
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    ev.set()
    assert r.get(T) == 7
    assert it.next(T) == 8
    closed_ok(p)


def test_task_exceptions_come_back(ctx, pools):
    p = pools(2)
    with pytest.raises(ValueError, match="bad 3") as e:
        p.apply(fail, (3,))
    assert type(e.value.__cause__) is multiprocessing.pool.RemoteTraceback
    assert 'raise ValueError(f"bad {x}")' in e.value.__cause__.tb
    with pytest.raises(ValueError, match="bad"):
        p.map(fail, range(10))
    it = p.imap(fail, range(2))
    for _ in range(2):
        with pytest.raises(ValueError):
            it.next(T)
    assert p.map(sqr, range(10)) == [x * x for x in range(10)]  # still usable
    closed_ok(p)


def test_unpicklable_results_and_arguments(ctx, pools):
    p = pools(2)
    for _ in range(5):  # no worker is lost to it
        with pytest.raises(multiprocessing.pool.MaybeEncodingError):
            p.apply_async(unpicklable).get(T)
    with pytest.raises(multiprocessing.pool.MaybeEncodingError):
        p.map(unpicklable, range(4))
    with pytest.raises(Exception):  # the argument (a lambda) cannot be pickled
        p.apply_async(sqr, (lambda: 1,)).get(T)
    # A result that pickles but fails to unpickle in the parent fails its own task.
    with pytest.raises(multiprocessing.pool.MaybeEncodingError, match="NeedsTwo|argument"):
        p.apply_async(raise_needs_two).get(T)
    assert p.map(sqr, range(10)) == [x * x for x in range(10)]
    closed_ok(p)


def test_close_terminate_and_states(ctx, pools):
    p = pools(1)
    with pytest.raises(ValueError, match="still running"):
        p.join(T)
    p.close()
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply_async(sqr, (1,))
    with pytest.raises(ValueError, match="Pool not running"):
        p.imap(sqr, [1])
    assert p.join(T)
    with pools(1) as q:
        assert q.apply(sqr, (4,)) == 16
        procs = q._pool
    assert q.join(T)  # __exit__ terminated it
    assert all(w.exitcode is not None for w in procs)
    with pytest.raises(ValueError):
        with q:
            pass


def test_initializer_runs_in_each_worker_and_replacements(ctx, pools):
    q = ctx.Queue()
    p = pools(3, init, (q, "ready"))
    pids = sorted(q.get(timeout=T) for _ in range(3))
    assert pids == sorted(w.pid for w in p._pool)
    seen = {pid for tok, pid in p.map(initialized, range(30), chunksize=1)
            if tok == "ready"}
    assert seen <= set(pids) and seen
    assert all(tok == "ready" for tok, _ in p.map(initialized, range(30)))
    victim = p._pool[0]
    with pytest.raises(multiproc.WorkerLostError):
        p.apply_async(exit_with, (3,)).get(T)
    new = q.get(timeout=T)  # the replacement ran the initializer too
    assert new not in pids
    assert p.apply_async(initialized).get(T)[0] == "ready"
    del victim
    closed_ok(p)


def failing_init(q):
    q.put(os.getpid())
    raise RuntimeError("no database")


def test_an_initializer_that_raises_breaks_the_pool(ctx, pools):
    q = ctx.Queue()
    p = pools(2, failing_init, (q,))
    with pytest.raises(multiproc.PoolBrokenError) as e:
        p.apply_async(pid).get(T)
    assert "no database" in str(e.value)
    assert isinstance(e.value.__cause__, RuntimeError)
    # Later tasks fail at once, every method the same way.
    with pytest.raises(multiproc.PoolBrokenError):
        p.map(pid, range(10))
    with pytest.raises(multiproc.PoolBrokenError):
        list(p.imap(pid, range(10)))
    p.close()
    assert p.join(T), "the pool's workers did not exit"
    # No worker was started again and again: at most the two of the start, each
    # of which ran the initializer once.
    started = []
    while True:
        try:
            started.append(q.get(timeout=0))
        except Exception:
            break
    assert 1 <= len(started) <= 2, started


def test_maxtasksperchild(ctx, pools):
    p = pools(2, maxtasksperchild=3)
    rs = [p.apply_async(pid) for _ in range(20)]
    pids = [r.get(T) for r in rs]
    for x in set(pids):
        assert pids.count(x) <= 3
    assert len(set(pids)) >= 7
    assert p.map(sqr, range(40), chunksize=1) == [x * x for x in range(40)]
    closed_ok(p)
    for bad in (0, -1, 0.5, "12"):
        with pytest.raises(ValueError):
            ctx.Pool(1, maxtasksperchild=bad)
    with pytest.raises(ValueError):
        ctx.Pool(0)


def test_maxtasksperchild_early_close(ctx, pools):
    p = pools(3, maxtasksperchild=1)
    rs = [p.apply_async(sqr, (i,)) for i in range(8)]
    closed_ok(p)  # CPython issue 10332: join() must not hang
    assert [r.get(T) for r in rs] == [i * i for i in range(8)]


# --- death ------------------------------------------------------------------------

def test_worker_killed_in_map_fails_only_its_chunk(ctx, pools):
    p = pools(3)
    q, never = ctx.Queue(), ctx.Event()
    for round in range(4):  # many times in a row; the pool stays usable
        n, stuck = 24, 9 + round
        seen = ctx.Array("i", n)
        r = p.starmap_async(mark_or_hang, [(x, seen, stuck, q, never) for x in range(n)],
                            chunksize=4)
        victim = q.get(timeout=T)
        before = {w.pid for w in p._pool}
        assert victim in before
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(multiproc.WorkerLostError) as e:
            r.get(T)
        err = e.value
        assert err.pid == victim and err.exitcode == -signal.SIGKILL
        assert err.signal == "SIGKILL"
        lo = stuck // 4 * 4
        assert f"chunk {stuck // 4} (items {lo}..{lo + 3})" in str(err)
        assert str(victim) in str(err) and "SIGKILL" in str(err)
        # Every other chunk ran, once; the lost chunk ran up to its stuck item.
        for x in range(n):
            want = 1 if not lo <= x < lo + 4 or x <= stuck else 0
            assert seen[x] == want, (x, seen[:])
        assert p.map(sqr, range(30)) == [x * x for x in range(30)]
        after = {w.pid for w in p._pool}
        assert len(after) == 3 and victim not in after
    closed_ok(p)


def hang_on(x, stuck, q, never):
    if x == stuck:
        q.put(os.getpid())
        never.wait(T)
    return x


def test_worker_killed_in_imap_fails_only_its_item(ctx, pools):
    p = pools(2)
    q, never = ctx.Queue(), ctx.Event()
    it = p.imap(hang_on_star, [(x, 5, q, never) for x in range(12)])
    os.kill(q.get(timeout=T), signal.SIGKILL)
    out = []
    for _ in range(12):
        try:
            out.append(it.next(T))
        except multiproc.WorkerLostError as e:
            out.append(type(e))
    assert out == [0, 1, 2, 3, 4, multiproc.WorkerLostError, 6, 7, 8, 9, 10, 11]
    with pytest.raises(StopIteration):
        it.next(T)
    closed_ok(p)


def hang_on_star(args):
    return hang_on(*args)


def test_worker_killed_mid_result_send(ctx, pools):
    p = pools(2)
    for _ in range(3):
        r = p.apply_async(half_result_then_die)
        with pytest.raises(multiproc.WorkerLostError, match="SIGKILL"):
            r.get(T)
        assert p.map(sqr, range(20)) == [x * x for x in range(20)]
    closed_ok(p)


def test_worker_exit_code_named(ctx, pools):
    p = pools(1)
    with pytest.raises(multiproc.WorkerLostError, match="exited with code 7") as e:
        p.apply(exit_with, (7,))
    assert e.value.exitcode == 7 and e.value.signal is None
    assert "exit_with()" in e.value.task
    assert p.apply(sqr, (3,)) == 9
    closed_ok(p)


def test_terminate_during_work(ctx, pools):
    p = pools(2)
    never = ctx.Event()
    r = p.starmap_async(wait_then, [(never, i) for i in range(50)], chunksize=1)
    it = p.imap(hang_on_star, [(x, 0, ctx.Queue(), never) for x in range(3)])
    procs = p._pool
    p.terminate()
    assert p.join(T)
    for w in procs:
        assert w.exitcode is not None
    with pytest.raises(multiproc.PoolTerminatedError):
        r.get(T)
    with pytest.raises(multiproc.PoolTerminatedError):
        it.next(T)


def test_many_kills_in_a_row(ctx, pools):
    """A worker dies in every round; every round's other tasks complete."""
    p = pools(2)
    for i in range(6):
        rs = [p.apply_async(sqr, (x,)) for x in range(5)]
        lost = p.apply_async(exit_with, (1,)) if i % 2 else \
            p.apply_async(half_result_then_die)
        rs += [p.apply_async(sqr, (x,)) for x in range(5, 10)]
        assert [r.get(T) for r in rs] == [x * x for x in range(10)]
        with pytest.raises(multiproc.WorkerLostError):
            lost.get(T)
    assert len(p._pool) == 2
    closed_ok(p)


def _two_pools_owner(q, method):
    ctx = multiproc.get_context(method)
    a, b = ctx.Pool(1), ctx.Pool(2)
    try:
        a.apply_async(exit_with, (1,)).get(T)  # a's replacement: forked after b
    except multiproc.WorkerLostError:
        pass
    q.put([w.pid for w in a._pool + b._pool])
    threading.Event().wait(T)  # killed here


def test_workers_exit_when_the_parent_is_killed(ctx):
    q = ctx.Queue()
    owner = ctx.Process(target=_two_pools_owner, args=(q, ctx.get_start_method()))
    owner.start()
    pids = q.get(timeout=T)
    fds = [os.pidfd_open(pid) for pid in pids]
    try:
        os.kill(owner.pid, signal.SIGKILL)
        owner.join(T)
        for fd in fds:  # readable when the worker has exited
            assert select.select([fd], [], [], T)[0], "a worker outlived its parent"
    finally:
        for fd in fds:
            os.close(fd)
