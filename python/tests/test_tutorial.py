"""The tutorial's nine examples, with ``import multiprocessing`` changed to
multiproc's context, under fork, spawn and forkserver; each result checked.

Copied scenarios (not the files): the printing and the sleeps that simulate work
are left out. Two originals are wrong in CPython too and run here as corrected:
07 shares a plain list (each process has its own copy: the consumer waits
forever), and 09 passes a nested function as the target (only fork can start it)
and splits the data so that some lengths lose items.
"""

from conftest import T, join_ok, start


def _increment(counter):
    for _ in range(100_000):
        with counter.get_lock():
            counter.value += 1


def test_01_value_counter(ctx):
    counter = ctx.Value("i", 0)
    ps = [start(ctx, _increment, counter) for _ in range(4)]
    join_ok(*ps)
    assert counter.value == 400_000


def _update_array(arr):
    for i in range(len(arr)):
        with arr.get_lock():
            arr[i] += 1


def test_02_array_update(ctx):
    shared = ctx.Array("i", [0, 0, 0, 0, 0])
    join_ok(*[start(ctx, _update_array, shared) for _ in range(3)])
    assert shared[:] == [3, 3, 3, 3, 3]


def _lock_worker(lock, counter):
    for _ in range(100_000):
        with lock:
            counter.value += 1


def test_03_lock_counter(ctx):
    lock, counter = ctx.Lock(), ctx.Value("i", 0)
    join_ok(*[start(ctx, _lock_worker, lock, counter) for _ in range(2)])
    assert counter.value == 200_000


def _recursive(lock, depth, log):
    with lock:
        if depth > 0:
            log.put(("acquire", depth))
            _recursive(lock, depth - 1, log)
        log.put(("release", depth))


def test_04_rlock_recursive(ctx):
    lock, log = ctx.RLock(), ctx.Queue()
    join_ok(start(ctx, _recursive, lock, 3, log))
    got = [log.get(timeout=T) for _ in range(7)]
    assert got == [("acquire", 3), ("acquire", 2), ("acquire", 1), ("release", 0),
                   ("release", 1), ("release", 2), ("release", 3)]
    assert lock.acquire(timeout=0)  # released all the way
    lock.release()


def _sem_worker(semaphore, worker_id, inside, peak, guard, log):
    with semaphore:
        with guard:
            inside.value += 1
            peak.value = max(peak.value, inside.value)
        log.put(worker_id)
        with guard:
            inside.value -= 1


def test_05_semaphore_workers(ctx):
    sem, guard, log = ctx.Semaphore(2), ctx.Lock(), ctx.Queue()
    inside, peak = ctx.RawValue("i", 0), ctx.RawValue("i", 0)
    join_ok(*[start(ctx, _sem_worker, sem, i, inside, peak, guard, log) for i in range(5)])
    assert sorted(log.get(timeout=T) for _ in range(5)) == [0, 1, 2, 3, 4]
    assert 1 <= peak.value <= 2


def _waiter(event, out):
    out.put(event.wait(T))


def _signaler(event):
    event.set()


def test_06_event_signal(ctx):
    event, out = ctx.Event(), ctx.Queue()
    w = start(ctx, _waiter, event, out)
    s = start(ctx, _signaler, event)
    assert out.get(timeout=T) is True
    join_ok(w, s)


def _consumer(condition, items, count, out):
    got = []
    with condition:
        while len(got) < 5:
            while count.value == 0:
                assert condition.wait(T), "no notification"
            count.value -= 1
            got.append(items[count.value])
    out.put(sorted(got))


def _producer(condition, items, count):
    for i in range(5):
        with condition:
            items[count.value] = i
            count.value += 1
            condition.notify()


def test_07_condition_producer_consumer(ctx):
    # Corrected: the items live in shared memory (the original's plain list is
    # copied into each process, so its consumer waits forever).
    condition, out = ctx.Condition(), ctx.Queue()
    items, count = ctx.RawArray("i", 5), ctx.RawValue("i", 0)
    c = start(ctx, _consumer, condition, items, count, out)
    p = start(ctx, _producer, condition, items, count)
    assert out.get(timeout=T) == [0, 1, 2, 3, 4]
    join_ok(c, p)


def _barrier_worker(barrier, worker_id, out):
    out.put(("arrived", worker_id))
    barrier.wait(T)
    out.put(("passed", worker_id))


def test_08_barrier_workers(ctx):
    barrier, out = ctx.Barrier(3), ctx.Queue()
    ps = [start(ctx, _barrier_worker, barrier, i, out) for i in range(3)]
    events = [out.get(timeout=T) for _ in range(6)]
    join_ok(*ps)
    # No worker passes before every worker has arrived.
    first_pass = min(i for i, e in enumerate(events) if e[0] == "passed")
    assert sorted(e[1] for e in events[:first_pass]) == [0, 1, 2]


def _process_data(x):
    return x * x


def _chunk_worker(chunk, start_index, shared, lock):
    for i, item in enumerate(chunk):
        result = _process_data(item)
        with lock:
            shared[start_index + i] = result


def test_09_parallel_processing(ctx):
    # Corrected: a module-level worker (the original's nested one starts only
    # under fork) and chunks that cover every item for any length.
    for n in (1000, 999, 3):
        data = list(range(n))
        sequential = [_process_data(x) for x in data]
        shared, lock = ctx.Array("i", [0] * len(data)), ctx.Lock()
        parts = 4
        bounds = [len(data) * k // parts for k in range(parts + 1)]
        ps = [start(ctx, _chunk_worker, data[bounds[k]:bounds[k + 1]], bounds[k], shared, lock)
              for k in range(parts)]
        join_ok(*ps)
        assert list(shared) == sequential
