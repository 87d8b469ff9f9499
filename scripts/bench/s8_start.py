"""S8 for `multiproc bench`: start and join one process that does nothing, with
the fork start method (multiproc's only one so far).

Prints one JSON row (the bench schema): microseconds per start+join, the median of
batches. `--quick` takes fewer repetitions.
"""
import json
import multiprocessing
import sys
import time
from multiprocessing import Process


def nothing():
    pass


def main():
    multiprocessing.set_start_method("fork")
    batch, reps = (20, 3) if "--quick" in sys.argv else (100, 7)
    samples = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        for _ in range(batch):
            p = Process(target=nothing)
            p.start()
            p.join()
            assert p.exitcode == 0
        samples.append((time.perf_counter_ns() - t) / batch / 1e3)
    samples.sort()
    print(json.dumps({"scenario": "S8", "impl": "cpython", "metric": "start+join (fork)",
                      "median": samples[len(samples) // 2], "min": samples[0],
                      "max": samples[-1], "unit": "us", "processes": 1}), flush=True)


if __name__ == "__main__":
    main()
