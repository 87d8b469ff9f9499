"""S6 for `multiproc bench`: a 64 MiB multiprocessing.Array('d'): one process
(fork) fills it, another sums it, in GB/s.

Pure CPython, no numpy: the fill is a buffer-protocol copy (memoryview slice
assignment, memcpy speed), the sum is `sum()` over a memoryview of doubles; both
under the Array's lock. Prints one JSON row per metric. `--quick` takes fewer
repetitions.
"""
import array
import json
import multiprocessing
import sys
import time
from multiprocessing import Array, Process

LEN = 8 << 20
BYTES = LEN * 8


def filler(arr, reps, out):
    src = array.array('d', range(LEN))
    for r in range(reps + 1):
        t = time.perf_counter_ns()
        with arr.get_lock():
            memoryview(arr.get_obj()).cast('B')[:] = memoryview(src).cast('B')
        if r:
            out[r - 1] = BYTES / (time.perf_counter_ns() - t)


def summer(arr, reps, out):
    for r in range(reps + 1):
        t = time.perf_counter_ns()
        with arr.get_lock():
            s = sum(memoryview(arr.get_obj()).cast('B').cast('d'))
        assert s == LEN * (LEN - 1) / 2
        if r:
            out[r - 1] = BYTES / (time.perf_counter_ns() - t)


def row(metric, samples):
    samples = sorted(samples)
    print(json.dumps({"scenario": "S6", "impl": "cpython", "metric": metric,
                      "median": samples[len(samples) // 2], "min": samples[0],
                      "max": samples[-1], "unit": "GB/s", "processes": 1}), flush=True)


def main():
    multiprocessing.set_start_method("fork")
    reps = 3 if "--quick" in sys.argv else 5
    arr = Array('d', LEN)
    fill = Array('d', reps, lock=False)
    summed = Array('d', reps, lock=False)
    for target, out in ((filler, fill), (summer, summed)):
        p = Process(target=target, args=(arr, reps, out))
        p.start()
        p.join()
        assert p.exitcode == 0
    row("fill 64 MiB", fill)
    row("sum 64 MiB", summed)


if __name__ == "__main__":
    main()
