"""S3 for `multiproc bench`: ping-pong round trip between two processes (fork)
through two Events (set / wait / clear) and through two Semaphores.

Prints one JSON row per primitive (the bench schema). `--quick` takes fewer
repetitions.
"""
import json
import multiprocessing
import sys
import time
from multiprocessing import Array, Event, Process, Semaphore, Value

PATIENCE = 20


def event_initiator(ping, pong, stop, n, reps, out):
    for r in range(reps):
        t = time.perf_counter_ns()
        for _ in range(n):
            ping.set()
            assert pong.wait(PATIENCE)
            pong.clear()
        out[r] = (time.perf_counter_ns() - t) / n
    stop.value = 1
    ping.set()


def event_responder(ping, pong, stop):
    while True:
        assert ping.wait(PATIENCE)
        ping.clear()
        if stop.value:
            return
        pong.set()


def sem_initiator(ping, pong, stop, n, reps, out):
    for r in range(reps):
        t = time.perf_counter_ns()
        for _ in range(n):
            ping.release()
            assert pong.acquire(timeout=PATIENCE)
        out[r] = (time.perf_counter_ns() - t) / n
    stop.value = 1
    ping.release()


def sem_responder(ping, pong, stop):
    while True:
        assert ping.acquire(timeout=PATIENCE)
        if stop.value:
            return
        pong.release()


def measure(kind, n, reps):
    if kind == "event":
        ping, pong = Event(), Event()
        initiator, responder = event_initiator, event_responder
    else:
        ping, pong = Semaphore(0), Semaphore(0)
        initiator, responder = sem_initiator, sem_responder
    stop = Value('i', 0, lock=False)
    out = Array('d', reps, lock=False)
    a = Process(target=initiator, args=(ping, pong, stop, n, reps, out))
    b = Process(target=responder, args=(ping, pong, stop))
    b.start()
    a.start()
    a.join()
    b.join()
    assert a.exitcode == 0 and b.exitcode == 0
    samples = sorted(ns / 1e3 for ns in out)
    print(json.dumps({"scenario": "S3", "impl": "cpython", "metric": kind + " round trip",
                      "median": samples[len(samples) // 2], "min": samples[0],
                      "max": samples[-1], "unit": "us", "processes": 2}), flush=True)


def main():
    multiprocessing.set_start_method("fork")
    quick = "--quick" in sys.argv
    n, reps = (200, 3) if quick else (1000, 7)
    measure("event", n, reps)
    measure("semaphore", n, reps)


if __name__ == "__main__":
    main()
