"""S4 for `multiproc bench`: one multiprocessing.Barrier round with 2 and 4
processes (fork), timed by party 0.

Prints one JSON row per party count (the bench schema). `--quick` takes fewer
repetitions.
"""
import json
import multiprocessing
import sys
import time
from multiprocessing import Array, Barrier, Process


def party(i, barrier, rounds, reps, out):
    for r in range(reps):
        barrier.wait()
        t = time.perf_counter_ns()
        for _ in range(rounds):
            barrier.wait()
        if i == 0:
            out[r] = (time.perf_counter_ns() - t) / rounds


def measure(n, rounds, reps):
    barrier = Barrier(n)
    out = Array('d', reps, lock=False)
    procs = [Process(target=party, args=(i, barrier, rounds, reps, out)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    samples = sorted(ns / 1e3 for ns in out)
    print(json.dumps({"scenario": "S4", "impl": "cpython", "metric": "barrier round",
                      "median": samples[len(samples) // 2], "min": samples[0],
                      "max": samples[-1], "unit": "us", "processes": n}), flush=True)


def main():
    multiprocessing.set_start_method("fork")
    rounds, reps = (100, 3) if "--quick" in sys.argv else (500, 7)
    for n in (2, 4):
        measure(n, rounds, reps)


if __name__ == "__main__":
    main()
