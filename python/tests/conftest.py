import os

import pytest

import multiproc

METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in multiproc.get_all_start_methods()]
ONLY = os.environ.get("MULTIPROC_METHODS")
if ONLY:
    METHODS = [m for m in METHODS if m in ONLY.split(",")]

#: Every wait in a test is bounded by this (seconds), so a bug fails, never hangs.
T = 20.0


@pytest.fixture(params=METHODS)
def ctx(request):
    return multiproc.get_context(request.param)


def start(ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def join_ok(*procs):
    for p in procs:
        p.join(T)
        assert not p.is_alive(), f"{p} still running after {T}s"
        assert p.exitcode == 0, f"{p} exit code {p.exitcode}"
