"""S2 for `multiproc bench`: the tutorial's 01_value_counter.py exactly (fork start
method), timed from the first start to the last join.

Prints one JSON row (the bench schema). `--quick` takes fewer repetitions.
"""
import json
import multiprocessing
import sys
import time
from multiprocessing import Process, Value


def increment(counter):
    for _ in range(100000):
        with counter.get_lock():  # 确保原子操作
            counter.value += 1


def start_join_only():
    """The same processes with nothing to do: what starting and joining costs."""
    t = time.perf_counter_ns()
    processes = [Process(target=int) for _ in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    return (time.perf_counter_ns() - t) / 1e6


def row(metric, samples):
    samples = sorted(samples)
    print(json.dumps({"scenario": "S2", "impl": "cpython", "metric": metric,
                      "median": samples[len(samples) // 2], "min": samples[0],
                      "max": samples[-1], "unit": "ms", "processes": 4}), flush=True)


def tutorial():
    counter = Value('i', 0)  # 'i' 表示整数类型,初始值为 0
    t = time.perf_counter_ns()
    processes = []
    for _ in range(4):  # 4个进程同时修改
        p = Process(target=increment, args=(counter,))
        processes.append(p)
        p.start()

    for p in processes:
        p.join()
    ms = (time.perf_counter_ns() - t) / 1e6
    assert counter.value == 400000, counter.value
    return ms


def main():
    multiprocessing.set_start_method("fork")
    reps = 3 if "--quick" in sys.argv else 7
    row("4 x 100k locked increments", [tutorial() for _ in range(reps)])
    row("4 x start+join, no work", [start_join_only() for _ in range(reps)])


if __name__ == "__main__":
    main()
