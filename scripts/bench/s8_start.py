"""S8 for `multiproc bench`: start and join one process that does nothing, with
each start method (fork, spawn, forkserver).

Prints one JSON row per method (the bench schema): microseconds per start+join, the
median of batches. `--quick` takes fewer repetitions. Spawn and forkserver are timed
in smaller batches (a CPython spawn takes tens of milliseconds); the forkserver is
started (by a first, untimed process) before timing, as multiproc's is.
"""
import json
import multiprocessing
import sys
import time


# The target: a builtin that does nothing useful, so that spawn's children (which
# re-import by reference, and cannot import `-c`'s __main__) find it.
nothing = int


def measure(method, batch, reps):
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        p = ctx.Process(target=nothing)
        p.start()
        p.join()
    samples = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        for _ in range(batch):
            p = ctx.Process(target=nothing)
            p.start()
            p.join()
            assert p.exitcode == 0
        samples.append((time.perf_counter_ns() - t) / batch / 1e3)
    samples.sort()
    print(json.dumps({"scenario": "S8", "impl": "cpython", "metric": f"start+join ({method})",
                      "median": samples[len(samples) // 2], "min": samples[0],
                      "max": samples[-1], "unit": "us", "processes": 1}), flush=True)


def main():
    quick = "--quick" in sys.argv
    measure("fork", *((20, 3) if quick else (100, 7)))
    measure("spawn", *((5, 3) if quick else (20, 5)))
    measure("forkserver", *((10, 3) if quick else (50, 5)))


if __name__ == "__main__":
    main()
