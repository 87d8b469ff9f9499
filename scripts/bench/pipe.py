"""Pipe rows for `multiproc bench`: CPython's multiprocessing.Pipe between two
processes, one way with 8-byte and 4 KiB messages (msg/s) and the 8-byte round
trip (ns), measured as src/cli/bench/pipe.rs measures multiproc's.

Prints JSON rows (the bench schema). `--quick` takes fewer repetitions.
"""
import json
import sys
import time
from multiprocessing import Pipe, Process


def sender(conn, ack, size, n, reps, out):
    msg = b"\x07" * size
    for _ in range(reps):
        t = time.perf_counter_ns()
        for _ in range(n):
            conn.send_bytes(msg)
        ack.recv_bytes()
        out.send(time.perf_counter_ns() - t)


def receiver(conn, ack, n, reps):
    for _ in range(reps):
        for _ in range(n):
            conn.recv_bytes()
        ack.send_bytes(b"1")


def pong(conn, total):
    for _ in range(total):
        conn.send_bytes(conn.recv_bytes())


def row(metric, samples, unit):
    samples.sort()
    return json.dumps({"scenario": "PIPE", "impl": "cpython", "metric": metric,
                       "median": samples[len(samples) // 2], "min": samples[0],
                       "max": samples[-1], "unit": unit, "processes": 2})


def one_way(size, n, reps):
    rx, tx = Pipe()
    ack_rx, ack_tx = Pipe(False)
    res_rx, res_tx = Pipe(False)
    s = Process(target=sender, args=(tx, ack_rx, size, n, reps, res_tx))
    r = Process(target=receiver, args=(rx, ack_tx, n, reps))
    r.start()
    s.start()
    times = [res_rx.recv() for _ in range(reps)]
    s.join()
    r.join()
    return [n * 1e9 / t for t in times]


def round_trip(n, reps):
    a, b = Pipe()
    p = Process(target=pong, args=(b, n * reps))
    p.start()
    out = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        for i in range(n):
            a.send_bytes(b"\x00" * 8)
            a.recv_bytes()
        out.append((time.perf_counter_ns() - t) / n)
    p.join()
    return out


def main():
    quick = "--quick" in sys.argv
    reps = 3 if quick else 7
    print(row("pipe one way, 8 B", one_way(8, 50_000 if quick else 200_000, reps), "msg/s"))
    print(row("pipe one way, 4 KiB", one_way(4096, 20_000 if quick else 100_000, reps), "msg/s"))
    print(row("pipe round trip, 8 B", round_trip(5_000 if quick else 20_000, reps), "ns"))


if __name__ == "__main__":
    main()
