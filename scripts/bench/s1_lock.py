"""S1 for `multiproc bench`: uncontended multiprocessing.Lock acquire+release.

Prints one JSON row (the bench schema). `--quick` takes fewer repetitions.
"""
import json
import sys
import time
from multiprocessing import Lock


def main():
    quick = "--quick" in sys.argv
    iters = 200_000 if quick else 1_000_000
    reps = 5 if quick else 11
    lock = Lock()
    samples = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        for _ in range(iters):
            with lock:
                pass
        samples.append((time.perf_counter_ns() - t) / iters)
    samples.sort()
    print(json.dumps({"scenario": "S1", "impl": "cpython", "metric": "lock+unlock",
                      "median": samples[len(samples) // 2], "min": samples[0],
                      "max": samples[-1], "unit": "ns", "processes": 1}))


if __name__ == "__main__":
    main()
