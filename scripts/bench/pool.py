"""POOL for `multiproc bench`: tasks per second for trivial tasks through a pool
of 2 workers (fork): map with chunksize 1 and the default, apply_async, with
multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor.

Prints one JSON row per metric and implementation (the bench schema).
`--quick` takes fewer tasks.
"""
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def double(x):
    return 2 * x


def rate(fn, n, reps):
    samples = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        fn(n)
        samples.append(n / ((time.perf_counter_ns() - t) / 1e9))
    samples.sort()
    return samples


def row(impl, metric, samples):
    print(json.dumps({"scenario": "POOL", "impl": impl, "metric": metric,
                      "median": samples[len(samples) // 2], "min": samples[0],
                      "max": samples[-1], "unit": "tasks/s", "processes": 2}), flush=True)


def main():
    multiprocessing.set_start_method("fork")
    n, reps = (2_000, 3) if "--quick" in sys.argv else (20_000, 5)
    with multiprocessing.Pool(2) as pool:
        row("cpython", "map, chunksize 1", rate(lambda k: pool.map(double, range(k), chunksize=1), n, reps))
        row("cpython", "map, default chunksize", rate(lambda k: pool.map(double, range(k)), n, reps))
        row("cpython", "apply_async", rate(
            lambda k: [r.get() for r in [pool.apply_async(double, (i,)) for i in range(k)]], n, reps))
    with ProcessPoolExecutor(2) as ex:
        row("executor", "map, chunksize 1", rate(lambda k: list(ex.map(double, range(k))), n, reps))
        row("executor", "apply_async", rate(
            lambda k: [f.result() for f in [ex.submit(double, i) for i in range(k)]], n, reps))


if __name__ == "__main__":
    main()
