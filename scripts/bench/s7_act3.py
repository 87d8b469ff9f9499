"""S7 for `multiproc bench`: the tutorial's act 3 with CPython — the same per-item
work as `examples/12_pool_act3.rs` (400 rounds of a 64-bit LCG per item), done
sequentially, by processes writing disjoint slices of one shared
`multiprocessing.Array` (no lock), and by `Pool.map`, with 2 processes (fork).

Pure Python is far slower per item than Rust, so it runs fewer items; the rows
are microseconds per item, which the lengths do not change. Prints JSON rows (the
bench schema). `--quick` takes fewer items.
"""
import json
import multiprocessing
import sys
import time
from multiprocessing import Array, Pool, Process

WORK = 400
MASK = (1 << 64) - 1


def process_item(x):
    h = x & MASK
    for _ in range(WORK):
        h = (h * 6364136223846793005 + 1442695040888963407) & MASK
    v = (x * x) ^ (h >> 48)
    return ((v + (1 << 63)) & MASK) - (1 << 63)  # as an i64


def fill(results, start, data):
    for i, x in enumerate(data):
        results[start + i] = process_item(x)


def with_array(data, processes):
    results = Array('q', len(data), lock=False)
    n = len(data)
    bounds = [n * k // processes for k in range(processes + 1)]
    procs = [Process(target=fill, args=(results, bounds[k], data[bounds[k]:bounds[k + 1]]))
             for k in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return list(results)


def row(metric, us_per_item, processes):
    print(json.dumps({"scenario": "S7", "impl": "cpython", "metric": metric,
                      "median": us_per_item, "min": us_per_item, "max": us_per_item,
                      "unit": "us", "processes": processes}), flush=True)


def main():
    multiprocessing.set_start_method("fork")
    n = 2_000 if "--quick" in sys.argv else 20_000
    data = [x * 7 - 3 for x in range(n)]
    t = time.perf_counter()
    expected = [process_item(x) for x in data]
    row("sequential, per item", (time.perf_counter() - t) / n * 1e6, 1)
    t = time.perf_counter()
    got = with_array(data, 2)
    row("Array chunks, per item", (time.perf_counter() - t) / n * 1e6, 2)
    assert got == expected
    with Pool(2) as pool:
        t = time.perf_counter()
        got = pool.map(process_item, data)
        row("Pool.map, per item", (time.perf_counter() - t) / n * 1e6, 2)
    assert got == expected


if __name__ == "__main__":
    main()
