"""S9: Python-level benchmarks of multiproc against CPython's multiprocessing,
threading.Lock and zooparallel (PyPI; skipped if not installed).

    python python/bench/s9.py            # full
    python python/bench/s9.py --quick    # a few seconds, for CI (figures noisy)

Each figure is the median of --repeat runs (min and max in brackets). Rows:
  lock     acquire()+release() in one process (and `with lock:`), ns per pair
  counter  the tutorial's counter: P processes x N `with v.get_lock(): v.value += 1`,
           ns per step (wall time / (P*N)); also one process alone
  event    Event ping-pong between two processes, us per round trip
  queue    small objects (i, "x") from a child to the parent, ns per message
  pool     Pool(2).map(trivial, range(N)) (default chunksize), ns per item; and
           Pool(2).apply(trivial, (1,)) round trips, us per call (pool started
           outside the timing)
"""

import argparse
import multiprocessing
import os
import pickle
import statistics
import sys
import threading
import time

import multiproc

try:
    import zooparallel
except ImportError:  # pragma: no cover
    zooparallel = None

CTX_METHOD = "fork"


def med(samples):
    return statistics.median(samples), min(samples), max(samples)


def timed(fn, repeat):
    out = []
    for _ in range(repeat):
        out.append(fn())
    return med(out)


# --- lock --------------------------------------------------------------------

def lock_pairs(lock, n):
    acq, rel = lock.acquire, lock.release
    t0 = time.perf_counter_ns()
    for _ in range(n):
        acq()
        rel()
    return (time.perf_counter_ns() - t0) / n


def lock_with(lock, n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        with lock:
            pass
    return (time.perf_counter_ns() - t0) / n


def loop_floor(n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        pass
    return (time.perf_counter_ns() - t0) / n


# --- counter -----------------------------------------------------------------

def _increment(counter, n, go):
    go.wait()
    for _ in range(n):
        with counter.get_lock():
            counter.value += 1


def counter_run(mod, procs, n):
    ctx = mod.get_context(CTX_METHOD)
    v = ctx.Value("i", 0)
    go = ctx.Event()
    ps = [ctx.Process(target=_increment, args=(v, n, go)) for _ in range(procs)]
    for p in ps:
        p.start()
    t0 = time.perf_counter_ns()
    go.set()
    for p in ps:
        p.join(600)
    dt = time.perf_counter_ns() - t0
    assert v.value == procs * n, (v.value, procs * n)
    return dt / (procs * n)


def counter_alone(mod, n):
    v = mod.Value("i", 0)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    dt = time.perf_counter_ns() - t0
    assert v.value == n
    return dt / n


# --- event ping-pong ----------------------------------------------------------

def _pong(e1, e2, rounds):
    for _ in range(rounds):
        e1.wait()
        e1.clear()
        e2.set()


def event_run(mod, rounds):
    ctx = mod.get_context(CTX_METHOD)
    e1, e2 = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_pong, args=(e1, e2, rounds))
    p.start()
    t0 = time.perf_counter_ns()
    for _ in range(rounds):
        e1.set()
        e2.wait()
        e2.clear()
    dt = time.perf_counter_ns() - t0
    p.join(600)
    return dt / rounds / 1000


# --- queue -------------------------------------------------------------------

def _produce(q, n, ready, go):
    ready.set()
    go.wait()
    for i in range(n):
        q.put((i, "x"))


def queue_run(mod, n):
    ctx = mod.get_context(CTX_METHOD)
    q, ready, go = ctx.Queue(), ctx.Event(), ctx.Event()
    p = ctx.Process(target=_produce, args=(q, n, ready, go))
    p.start()
    ready.wait()
    t0 = time.perf_counter_ns()
    go.set()
    for i in range(n):
        assert q.get()[0] == i
    dt = time.perf_counter_ns() - t0
    p.join(600)
    return dt / n


def _zoo_produce(name, n, ready, go):
    q = zooparallel.ZooQueue(name, 10)
    ready.set()
    go.wait()
    dumps = pickle.dumps
    for i in range(n):
        q.put_bytes(dumps((i, "x")))


def zoo_queue_run(n):
    name = f"mpbench-q-{os.getpid()}"
    q = zooparallel.ZooQueue(name, 10)
    ctx = multiprocessing.get_context(CTX_METHOD)
    ready, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_zoo_produce, args=(name, n, ready, go))
    p.start()
    ready.wait()
    t0 = time.perf_counter_ns()
    go.set()
    loads = pickle.loads
    for i in range(n):
        assert loads(q.get_bytes())[0] == i
    dt = time.perf_counter_ns() - t0
    p.join(600)
    zooparallel.ZooQueue.unlink(name)
    return dt / n


# --- pool --------------------------------------------------------------------

def _trivial(x):
    return x


def pool_map_run(mod, n):
    with mod.get_context(CTX_METHOD).Pool(2) as pool:
        pool.map(_trivial, range(100))  # both workers up
        t0 = time.perf_counter_ns()
        out = pool.map(_trivial, range(n))
        dt = time.perf_counter_ns() - t0
    assert out[-1] == n - 1
    return dt / n


def pool_apply_run(mod, n):
    with mod.get_context(CTX_METHOD).Pool(2) as pool:
        pool.map(_trivial, range(100))
        t0 = time.perf_counter_ns()
        for i in range(n):
            assert pool.apply(_trivial, (i,)) == i
        dt = time.perf_counter_ns() - t0
    return dt / n / 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args()
    q = args.quick
    repeat = args.repeat or (2 if q else 5)
    n_lock = 100_000 if q else 1_000_000
    n_count = 10_000 if q else 100_000
    n_event_mp, n_event_cp = (2_000, 200) if q else (20_000, 2_000)
    n_queue_mp, n_queue_cp = (20_000, 5_000) if q else (200_000, 50_000)
    n_map = 20_000 if q else 1_000_000
    n_apply = 200 if q else 5_000

    rows = []

    def row(bench, impl, fig, unit, lower_better=True):
        rows.append((bench, impl, fig, unit))
        m, lo, hi = fig
        print(f"{bench:<8} {impl:<28} {m:>10.1f} {unit:<4} [{lo:.1f} - {hi:.1f}]", flush=True)

    print(f"S9 (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, start method "
          f"{CTX_METHOD}; median of {repeat})")
    row("lock", "loop floor (empty for)", timed(lambda: loop_floor(n_lock), repeat), "ns")
    row("lock", "multiproc.Lock", timed(lambda: lock_pairs(multiproc.Lock(), n_lock), repeat), "ns")
    row("lock", "threading.Lock", timed(lambda: lock_pairs(threading.Lock(), n_lock), repeat), "ns")
    row("lock", "multiprocessing.Lock", timed(lambda: lock_pairs(multiprocessing.Lock(), n_lock), repeat), "ns")
    if zooparallel is not None:
        name = f"mpbench-l-{os.getpid()}"
        zl = zooparallel.ZooLock(name)
        row("lock", "zooparallel.ZooLock", timed(lambda: lock_pairs(zl, n_lock), repeat), "ns")
        zooparallel.ZooLock.unlink(name)
    row("lock", "with multiproc.Lock", timed(lambda: lock_with(multiproc.Lock(), n_lock), repeat), "ns")
    row("lock", "with threading.Lock", timed(lambda: lock_with(threading.Lock(), n_lock), repeat), "ns")
    row("lock", "with multiprocessing.Lock", timed(lambda: lock_with(multiprocessing.Lock(), n_lock), repeat), "ns")

    row("counter", "multiproc, 1 process", timed(lambda: counter_alone(multiproc, n_count), repeat), "ns")
    row("counter", "multiprocessing, 1 process", timed(lambda: counter_alone(multiprocessing, n_count), repeat), "ns")
    row("counter", "multiproc, 4 processes", timed(lambda: counter_run(multiproc, 4, n_count), repeat), "ns")
    row("counter", "multiprocessing, 4 processes", timed(lambda: counter_run(multiprocessing, 4, n_count), repeat), "ns")

    row("event", "multiproc ping-pong", timed(lambda: event_run(multiproc, n_event_mp), repeat), "us")
    row("event", "multiprocessing ping-pong", timed(lambda: event_run(multiprocessing, n_event_cp), repeat), "us")

    row("queue", "multiproc.Queue", timed(lambda: queue_run(multiproc, n_queue_mp), repeat), "ns")
    row("queue", "multiprocessing.Queue", timed(lambda: queue_run(multiprocessing, n_queue_cp), repeat), "ns")
    if zooparallel is not None:
        row("queue", "zooparallel.ZooQueue+pickle", timed(lambda: zoo_queue_run(n_queue_mp), repeat), "ns")

    row("pool", "multiproc Pool.map", timed(lambda: pool_map_run(multiproc, n_map), repeat), "ns")
    row("pool", "multiprocessing Pool.map", timed(lambda: pool_map_run(multiprocessing, n_map), repeat), "ns")
    row("pool", "multiproc Pool.apply", timed(lambda: pool_apply_run(multiproc, n_apply), repeat), "us")
    row("pool", "multiprocessing Pool.apply", timed(lambda: pool_apply_run(multiprocessing, n_apply), repeat), "us")


if __name__ == "__main__":
    main()
