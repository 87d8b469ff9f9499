"""S5 for `multiproc bench`: message throughput between processes through
multiprocessing.Queue (1 producer -> 1 consumer with 8-byte and 4 KiB messages,
4 -> 4 with 8-byte messages) and through multiprocessing.Pipe (1 -> 1, 8 bytes).

Timed as the Rust side is: from a Barrier that releases every party to the last
child's exit. Each producer ends with one end marker per consumer; each consumer
stops after one marker per producer. Prints one JSON row per figure (the bench
schema). `--quick` takes fewer messages and repetitions.
"""
import json
import sys
import time
from multiprocessing import Barrier, Pipe, Process, Queue

END = b"\xff" * 8
PATIENCE = 60


def producer(q, start, n, size, consumers):
    msg = b"\x07" * size
    start.wait(PATIENCE)
    for _ in range(n):
        q.put(msg)
    for _ in range(consumers):
        q.put(END)


def consumer(q, start, producers):
    start.wait(PATIENCE)
    ends = 0
    while ends < producers:
        if q.get(timeout=PATIENCE) == END:
            ends += 1


def queue_run(producers, consumers, total, size):
    q = Queue()
    start = Barrier(producers + consumers + 1)
    per = total // producers
    kids = [Process(target=producer, args=(q, start, per, size, consumers)) for _ in range(producers)]
    kids += [Process(target=consumer, args=(q, start, producers)) for _ in range(consumers)]
    for p in kids:
        p.start()
    start.wait(PATIENCE)
    t = time.perf_counter()
    for p in kids:
        p.join(PATIENCE)
        assert p.exitcode == 0, "a queue child failed"
    return per * producers / (time.perf_counter() - t)


def pipe_sender(conn, start, n):
    msg = b"\x07" * 8
    start.wait(PATIENCE)
    for _ in range(n):
        conn.send_bytes(msg)


def pipe_receiver(conn, start, n):
    start.wait(PATIENCE)
    for _ in range(n):
        conn.recv_bytes()


def pipe_run(total):
    a, b = Pipe(duplex=False)
    start = Barrier(3)
    kids = [Process(target=pipe_receiver, args=(a, start, total)),
            Process(target=pipe_sender, args=(b, start, total))]
    for p in kids:
        p.start()
    start.wait(PATIENCE)
    t = time.perf_counter()
    for p in kids:
        p.join(PATIENCE)
        assert p.exitcode == 0, "a pipe child failed"
    return total / (time.perf_counter() - t)


def row(impl, metric, processes, unit, samples):
    samples = sorted(samples)
    print(json.dumps({"scenario": "S5", "impl": impl, "metric": metric,
                      "median": samples[len(samples) // 2], "min": samples[0],
                      "max": samples[-1], "unit": unit, "processes": processes}))


def main():
    quick = "--quick" in sys.argv
    reps = 1 if quick else 3
    small = 20_000 if quick else 200_000
    large = 5_000 if quick else 50_000
    row("cpython", "1->1, 8 B messages", 2, "msg/s", [queue_run(1, 1, small, 8) for _ in range(reps)])
    v = [queue_run(1, 1, large, 4096) for _ in range(reps)]
    row("cpython", "1->1, 4 KiB messages", 2, "msg/s", v)
    row("cpython", "1->1, 4 KiB messages, bytes", 2, "MB/s", [x * 4096 / 1e6 for x in v])
    row("cpython", "4->4, 8 B messages", 8, "msg/s", [queue_run(4, 4, small, 8) for _ in range(reps)])
    row("cpython Pipe", "1->1, 8 B messages", 2, "msg/s", [pipe_run(small) for _ in range(reps)])


if __name__ == "__main__":
    main()
