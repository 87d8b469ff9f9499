"""The primitives between real processes, under every start method."""

import ctypes
import queue
import threading

import pytest

import multiproc
from conftest import T, join_ok, start


# --- children (module level: spawn children import them) --------------------

def _hold_then_release(lock, held, go):
    lock.acquire()
    held.set()
    go.wait(T)
    lock.release()


def _try_lock(lock, out):
    out.put(lock.acquire(timeout=0))


def _counter(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def _contended_counter(v, lock, n, go):
    # Every step contends with three other processes: the lock changes hands
    # through the waiters' spin, yield and sleep paths. Each step also takes the
    # lock a second time inside (recursion while others wait) and a plain
    # Lock, so that both lock kinds' contended acquires run.
    go.wait(T)
    for _ in range(n):
        with v.get_lock():
            with v.get_lock():
                v.value += 1
        with lock:
            pass


def _array_double(a):
    with a.get_lock():
        for i in range(len(a)):
            a[i] = a[i] * 2


def _raw_array_fill(a, x):
    for i in range(len(a)):
        a[i] = x


def _sem_worker(sem, inside, peak, lock, n):
    for _ in range(n):
        with sem:
            with lock:
                inside.value += 1
                peak.value = max(peak.value, inside.value)
            with lock:
                inside.value -= 1


def _set_event(e):
    e.set()


def _condition_consumer(cond, items, out):
    with cond:
        ok = cond.wait_for(lambda: items.value > 0, T)
        out.put(ok and items.value)


def _barrier_party(b, out):
    out.put(b.wait(T))


def _producer(q, lo, hi):
    for i in range(lo, hi):
        q.put(("item", i))


def _echo(inq, outq, n):
    for _ in range(n):
        outq.put(inq.get(timeout=T))


def _set_raw(inq, done):
    raw = inq.get(timeout=T)
    raw.value = 42
    done.set()


class Registered:
    """Pickled through a reducer registered with ForkingPickler at test time."""


class _Str(str):
    """A str subclass: not plain data."""


class Plainish:
    def __init__(self, tag):
        self.tag = tag

    def __eq__(self, other):
        return type(other) is Plainish and other.tag == self.tag


class PutsWhilePickled:
    """Its reduction puts another object into a queue (pickling inside pickling)."""

    def __init__(self, q):
        self.q = q

    def __reduce__(self):
        self.q.put(Plainish("inner"))
        return (str, ("outer",))


def _joinable_consumer(q, n):
    for _ in range(n):
        q.get(timeout=T)
        q.task_done()


def _pipe_echo(conn, other=None):
    if other is not None:
        other.close()  # as in CPython: a forked child holds both ends
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        conn.send(("echo", msg))
        conn.send_bytes(b"raw:" + repr(msg).encode())


def _shm_write(name):
    from multiproc import shared_memory
    s = shared_memory.SharedMemory(name=name)
    s.buf[:5] = b"hello"
    s.close()


# --- tests -------------------------------------------------------------------

def test_lock_blocks_across_processes(ctx):
    lock, held, go, out = ctx.Lock(), ctx.Event(), ctx.Event(), ctx.Queue()
    p = start(ctx, _hold_then_release, lock, held, go)
    assert held.wait(T)
    assert lock.acquire(timeout=0.05) is False
    q = start(ctx, _try_lock, lock, out)
    assert out.get(timeout=T) is False
    join_ok(q)
    go.set()
    assert lock.acquire(timeout=T) is True
    lock.release()
    join_ok(p)


def test_lock_python_semantics():
    lock = multiproc.Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(True, -1) is False      # negative: as 0, as CPython's SemLock
    assert lock.acquire(timeout=0.01) is False
    lock.release()
    with pytest.raises(ValueError):
        lock.release()
    with lock:
        assert lock.acquire(False) is False
    assert lock.acquire(False)
    lock.release()
    assert lock.owner_died is False


def test_rlock_semantics():
    r = multiproc.RLock()
    with r:
        with r:
            assert r._is_owned()
    assert not r._is_owned()
    with pytest.raises(AssertionError):
        r.release()
    r.acquire()
    seen = []
    t = threading.Thread(target=lambda: seen.append(r.acquire(timeout=0.01)))
    t.start()
    t.join(T)
    assert seen == [False]
    r.release()


def test_value_counter(ctx):
    v = ctx.Value("i", 0)
    ps = [start(ctx, _counter, v, 2000) for _ in range(4)]
    join_ok(*ps)
    assert v.value == 8000


def test_contended_counter_is_exact(ctx):
    v = ctx.Value("i", 0)
    lock = ctx.Lock()
    go = ctx.Event()
    ps = [start(ctx, _contended_counter, v, lock, 20_000, go) for _ in range(4)]
    go.set()
    join_ok(*ps)
    assert v.value == 80_000
    assert not v.get_lock()._is_owned() and not lock._is_locked()


class _Index:
    def __index__(self):
        return 7


def _set_or_error(obj, x):
    try:
        obj.value = x
    except Exception as e:  # noqa: BLE001 - the exception's type is compared
        return type(e)
    got = obj.value
    return ("nan",) if got != got else (type(got), got)


def test_value_matches_ctypes():
    # The native .value getter and setter (one call, under the lock): every value
    # must come out as ctypes stores it (wrapping, rounding, errors), for every
    # typecode (a guard for any shortcut past the ctypes attribute).
    from multiproc.sharedctypes import typecode_to_type

    values = [0, 1, -1, 127, 128, -128, -129, 255, 256, 2**15, -2**15 - 1, 2**16,
              2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32, 2**63 - 1, 2**63, -2**63,
              -2**63 - 1, 2**64, 2**100, True, False, 1.5, -0.0, 1e300, -1e-300,
              float("inf"), float("nan"), _Index(), "x", None]
    for code in "bBhHiIlLqQfd":
        for x in values:
            v = multiproc.Value(code, 0)
            ref = typecode_to_type[code]()
            assert _set_or_error(v, x) == _set_or_error(ref, x), (code, x)
            assert bytes(v.get_obj()) == bytes(ref), (code, x)


def test_value_types_and_lock_argument():
    assert multiproc.Value("d", 1.5).value == 1.5
    assert multiproc.Value(ctypes.c_long, 7).value == 7
    raw = multiproc.Value("i", 3, lock=False)
    assert isinstance(raw, ctypes.c_int) and raw.value == 3
    lock = multiproc.Lock()
    v = multiproc.Value("i", 1, lock=lock)
    assert v.get_lock() is lock
    with pytest.raises(AttributeError):
        multiproc.Value("i", 1, lock=42)
    assert isinstance(multiproc.RawValue("b", 5), ctypes.c_byte)
    s = multiproc.Array("c", b"abc")
    assert s.value == b"abc"
    s.value = b"xy"
    assert s.raw[:2] == b"xy"


def test_array_shared_and_sliced(ctx):
    a = ctx.Array("i", range(10))
    assert len(a) == 10 and a[:3] == [0, 1, 2] and a[-1] == 9
    join_ok(start(ctx, _array_double, a))
    assert a[:] == [2 * i for i in range(10)]
    a[2:4] = [100, 101]
    assert a[1:5] == [2, 100, 101, 8]
    raw = ctx.RawArray("d", 5)
    join_ok(start(ctx, _raw_array_fill, raw, 2.5))
    assert list(raw) == [2.5] * 5


def test_numpy_frombuffer_shares_memory(ctx):
    np = pytest.importorskip("numpy")
    a = ctx.Array("d", 100)
    view = np.frombuffer(a.get_obj(), dtype=np.float64)
    view[:] = np.arange(100)
    join_ok(start(ctx, _array_double, a))
    assert view[99] == 198.0 and a[50] == 100.0


def test_semaphore_bounds_concurrency(ctx):
    sem, lock = ctx.Semaphore(2), ctx.Lock()
    inside, peak = ctx.RawValue("i", 0), ctx.RawValue("i", 0)
    ps = [start(ctx, _sem_worker, sem, inside, peak, lock, 200) for _ in range(4)]
    join_ok(*ps)
    assert 1 <= peak.value <= 2
    assert sem.get_value() == 2


def test_bounded_semaphore_over_release():
    s = multiproc.BoundedSemaphore(2)
    assert s.acquire() and s.acquire() and not s.acquire(timeout=0.01)
    s.release()
    s.release()
    with pytest.raises(ValueError):
        s.release()
    with pytest.raises(ValueError):
        multiproc.Semaphore(-1)


def test_event_across_processes(ctx):
    e = ctx.Event()
    assert e.wait(0.01) is False and e.wait(-1) is False
    join_ok(start(ctx, _set_event, e))
    assert e.wait(T) is True and e.is_set()
    e.clear()
    assert not e.is_set()


def test_condition_across_processes(ctx):
    cond, items, out = ctx.Condition(), ctx.RawValue("i", 0), ctx.Queue()
    p = start(ctx, _condition_consumer, cond, items, out)
    with cond:
        items.value = 3
        cond.notify()
    assert out.get(timeout=T) == 3
    join_ok(p)


def test_condition_errors():
    c = multiproc.Condition(multiproc.Lock())
    with pytest.raises(AssertionError):
        c.wait(0.01)
    with pytest.raises(AssertionError):
        c.notify()
    with c:
        assert c.wait(0.01) is False
        assert c.wait_for(lambda: False, 0.01) is False


def test_barrier_across_processes(ctx):
    b, out = ctx.Barrier(3), ctx.Queue()
    ps = [start(ctx, _barrier_party, b, out) for _ in range(2)]
    me = b.wait(T)
    got = sorted([me, out.get(timeout=T), out.get(timeout=T)])
    assert got == [0, 1, 2]
    join_ok(*ps)


def test_barrier_timeout_breaks():
    b = multiproc.Barrier(2)
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(0.05)
    assert b.broken
    b.reset()
    assert not b.broken
    b.abort()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(T)


def test_barrier_action_and_its_exception():
    runs = []
    b = multiproc.Barrier(1, action=lambda: runs.append(1))
    assert b.wait() == 0 and runs == [1]

    def bad():
        raise ZeroDivisionError("in the action")

    b = multiproc.Barrier(1, action=bad)
    with pytest.raises(ZeroDivisionError):
        b.wait(T)
    assert b.broken


def test_queue_producers(ctx):
    q = ctx.Queue()
    ps = [start(ctx, _producer, q, k * 100, (k + 1) * 100) for k in range(3)]
    got = sorted(q.get(timeout=T)[1] for _ in range(300))
    assert got == list(range(300))
    join_ok(*ps)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get_nowait()


# Plain data (the native put's pickle.dumps), objects the general pickler takes,
# and mixtures; each goes to a child and back.
_MESSAGES = [
    None, True, 0, -1, 2**100, 1.5, "x", "\u00e9" * 10, b"", b"\0" * 300,
    (1, "x"), [1, [2, [3, [4]]]], {"k": [1.0, None], 2: (b"v",)}, (),
    list(range(200)),  # past the plain budget: the general pickler
    Plainish(1), [Plainish(2), "a"], {"k": Plainish(3)}, 1j, {1, 2}, frozenset("ab"),
]


def test_queue_messages_round_trip(ctx):
    msgs = list(_MESSAGES)
    shared = [1]
    msgs.append((shared, shared))  # the memo: one list, twice
    inq, outq = ctx.Queue(), ctx.Queue()
    p = start(ctx, _echo, inq, outq, len(msgs))
    for m in msgs:
        inq.put(m)
    got = [outq.get(timeout=T) for _ in msgs]
    join_ok(p)
    assert got == msgs
    assert got[-1][0] is got[-1][1]
    with pytest.raises(TypeError):
        inq.put(threading.Lock())  # unpicklable: fails in put, nothing is queued
    assert inq.empty()


def _plain_samples():
    ints = [0, 1, 255, 256, 65535, 65536, -1, -128, -129, -256, 2**31 - 1, 2**31,
            -2**31, -2**31 - 1, 2**32 - 1, 2**32, -2**32, 2**39, -2**39, 2**40 - 1,
            2**63 - 1, -2**63, 2**47, -2**47 - 1]
    yield from ints
    yield from [None, True, False, 0.0, -0.0, 1.5, float("inf"), float("nan"), 1e-310]
    yield from ["", "x", "\u00e9", "\U0001f600" * 3, "y" * 255, "z" * 256, "w" * 50000]
    yield from [b"", b"\0", b"b" * 255, b"c" * 256, b"d" * 50000]
    yield from [(), (1,), (1, "x"), (1, 2, 3), (1, 2, 3, 4), ((), ((),)), [], [1],
                [1, 2], list(range(63)), {}, {"a": 1},  # 64 objects: the budget
                {"a": [1, {"b": (2.5, None)}], 3: b"v"}, [[], {}, ()], (ints[:10], "s")]


def _not_plain_samples():
    x = [1]
    yield from [(x, x), ("s", "s"), [b"q", b"q"]]  # repeated: memo references
    yield from [2**64, -2**64, 2**100, 1j, {1}, frozenset(), bytearray(b"x"),
                _Str("s"), "\ud800", [Plainish(1)], int,
                list(range(64)), "w" * 70000, b"d" * 70000, [1, 2**64]]


def test_queue_plain_encoder_writes_what_pickle_writes():
    # The native put writes the pickle of plain data itself: byte for byte
    # pickle.dumps(obj, 5), which is also ForkingPickler's for these types; for
    # anything else it answers None (and the pickler takes the message).
    import pickle
    from multiprocessing.reduction import ForkingPickler

    from multiproc import _native

    for m in _plain_samples():
        got = _native._plain_dumps(m)
        assert got == pickle.dumps(m, 5), m
        assert got == bytes(ForkingPickler.dumps(m, 5)), m
    for m in _not_plain_samples():
        assert _native._plain_dumps(m) is None, m


def test_queue_plain_decoder_reads_what_pickle_reads():
    # The native get reads plain pickles itself, else leaves them to
    # pickle.loads: whatever it reads (also from damaged bytes) must be what
    # pickle.loads makes of them (compared by their pickles: types, nan, -0.0).
    import pickle
    import random

    from multiproc import _native

    rng = random.Random(13)
    for m in list(_plain_samples()) + list(_not_plain_samples()):
        for data in [pickle.dumps(m, 5), pickle.dumps(m, 4)]:
            got = _native._plain_loads(data)
            if data[1] == 5 and _native._plain_dumps(m) is not None:
                assert pickle.dumps(got, 5) == pickle.dumps(m, 5), m
            if got is not None:
                assert pickle.dumps(got, 5) == pickle.dumps(pickle.loads(data), 5), m
            if len(data) > 70_000:
                continue
            for _ in range(30):
                bad = bytearray(data)
                i = rng.randrange(len(bad))
                what = rng.randrange(3)
                if what == 0:
                    bad[i] = rng.randrange(256)
                elif what == 1:
                    del bad[i:]
                else:
                    bad.insert(i, rng.randrange(256))
                got = _native._plain_loads(bytes(bad))
                if got is None:
                    continue
                assert pickle.dumps(got, 5) == pickle.dumps(pickle.loads(bytes(bad)), 5)


def test_queue_uses_reducers_registered_after_import(ctx):
    # ForkingPickler.register and copyreg.pickle after the queue module made its
    # pickler (RawValue registers its type when the first one is made).
    from multiprocessing.reduction import ForkingPickler

    ForkingPickler.register(Registered, lambda obj: (str, ("reduced",)))
    try:
        inq, outq, done = ctx.Queue(), ctx.Queue(), ctx.Event()
        p = start(ctx, _echo, inq, outq, 2)
        inq.put(Registered())
        inq.put([Registered(), 1])
        assert outq.get(timeout=T) == "reduced"
        assert outq.get(timeout=T) == ["reduced", 1]
        join_ok(p)
    finally:
        del ForkingPickler._extra_reducers[Registered]
    raw = multiproc.RawValue(ctypes.c_int, 5)
    p = start(ctx, _set_raw, inq, done)
    inq.put(raw)
    assert done.wait(T)
    join_ok(p)
    assert raw.value == 42  # the child's write: the queue carried shared memory


def test_queue_put_inside_pickling():
    inner, outer = multiproc.Queue(), multiproc.Queue()
    outer.put(PutsWhilePickled(inner))
    assert outer.get(timeout=T) == "outer"
    assert inner.get(timeout=T) == Plainish("inner")


def test_queue_maxsize_full():
    q = multiproc.Queue(2)
    q.put(1)
    q.put(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    assert q.get() == 1


def test_joinable_queue(ctx):
    q = ctx.JoinableQueue()
    for i in range(20):
        q.put(i)
    p = start(ctx, _joinable_consumer, q, 20)
    q.join()
    join_ok(p)
    with pytest.raises(ValueError):
        q.task_done()


def test_simple_queue(ctx):
    q = ctx.SimpleQueue()
    assert q.empty()
    join_ok(start(ctx, _producer, q, 0, 5))
    assert [q.get()[1] for _ in range(5)] == list(range(5))
    assert q.empty()


def test_pipe(ctx):
    a, b = ctx.Pipe()
    p = start(ctx, _pipe_echo, b, a if ctx.get_start_method() == "fork" else None)
    b.close()
    for msg in [1, "two", {"three": [3]}, b"x" * 100_000]:
        a.send(msg)
        assert a.poll(T)
        assert a.recv() == ("echo", msg)
        assert a.recv_bytes() == b"raw:" + repr(msg).encode()
    a.close()
    join_ok(p)


def test_pipe_bytes_api():
    r, w = multiproc.Pipe(False)
    assert r.readable and not r.writable and w.writable
    w.send_bytes(b"0123456789", 2, 3)
    assert r.recv_bytes() == b"234"
    w.send_bytes(bytearray(b"abc"))
    buf = bytearray(10)
    assert r.recv_bytes_into(buf, 1) == 3 and buf[1:4] == b"abc"
    w.send_bytes(b"toolong")
    with pytest.raises(multiproc.BufferTooShort):
        r.recv_bytes_into(bytearray(2))
    assert r.poll(0) is False
    w.close()
    with pytest.raises(EOFError):
        r.recv_bytes()


def test_shared_memory(ctx):
    from multiproc import shared_memory
    s = shared_memory.SharedMemory(create=True, size=64)
    try:
        join_ok(start(ctx, _shm_write, s.name))
        assert bytes(s.buf[:5]) == b"hello" and s.size == 64
        from multiprocessing import shared_memory as cpython
        c = cpython.SharedMemory(name=s.name)
        assert bytes(c.buf[:5]) == b"hello"
        c.close()
    finally:
        s.close()
        s.unlink()


def test_context_names():
    for name in ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition",
                 "Barrier", "Queue", "SimpleQueue", "JoinableQueue", "Pipe", "Value",
                 "Array", "RawValue", "RawArray", "Process", "Pool",
                 "current_process", "cpu_count", "active_children", "get_context"]:
        assert hasattr(multiproc, name), name
        assert hasattr(multiproc.get_context("spawn"), name), name
    assert multiproc.get_context("spawn").get_start_method() == "spawn"
    assert multiproc.cpu_count() >= 1
