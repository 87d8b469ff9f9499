"""CPython's own multiprocessing test classes, run unchanged against multiproc.

``test._test_multiprocessing`` (shipped with CPython) takes every primitive from a
mixin (``self.Lock()``, ``self.Queue()``, ...). ``MultiprocMixin`` supplies
multiproc's; each class below runs under fork, spawn and forkserver, with that
start method's ``Process``. ``docs/cpython-suite.md`` (python/CPYTHON_SUITE.md)
lists which classes and tests pass and why the others do not; the tests that
cannot pass are skipped here by name, with the reason.
"""

import multiprocessing
import sys
import unittest

import pytest

import multiproc

base = pytest.importorskip("test._test_multiprocessing")

CLASSES = ["_TestLock", "_TestSemaphore", "_TestCondition", "_TestEvent", "_TestBarrier",
           "_TestValue", "_TestArray", "_TestQueue", "_TestConnection", "_TestPoll",
           "_TestPicklingConnections", "_TestPool"]

# test name -> why it cannot pass against multiproc (see CPYTHON_SUITE.md).
SKIP = {
    "_TestQueue.test_queue_feeder_donot_stop_onexc":
        "multiproc's put pickles at once and raises; CPython's feeder thread fails "
        "later and prints (there is no feeder thread)",
}

METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in multiprocessing.get_all_start_methods()]


def _mixin(method):
    ctx = multiproc.get_context(method)

    class MultiprocMixin(base.ProcessesMixin):
        TYPE = "processes"

        # As CPython's runner does per module: the suite's own helpers (such as
        # _DummyList) make CPython objects in the default context.
        @classmethod
        def setUpClass(cls):
            cls._old_method = multiprocessing.get_start_method(allow_none=True)
            multiprocessing.set_start_method(method, force=True)
            super().setUpClass()

        @classmethod
        def tearDownClass(cls):
            super().tearDownClass()
            multiprocessing.set_start_method(cls._old_method, force=True)
        Process = ctx.Process
        Pool = staticmethod(ctx.Pool)
        Pipe = staticmethod(ctx.Pipe)
        Queue = staticmethod(ctx.Queue)
        JoinableQueue = staticmethod(ctx.JoinableQueue)
        Lock = staticmethod(ctx.Lock)
        RLock = staticmethod(ctx.RLock)
        Semaphore = staticmethod(ctx.Semaphore)
        BoundedSemaphore = staticmethod(ctx.BoundedSemaphore)
        Condition = staticmethod(ctx.Condition)
        Event = staticmethod(ctx.Event)
        Barrier = staticmethod(ctx.Barrier)
        Value = staticmethod(ctx.Value)
        Array = staticmethod(ctx.Array)
        RawValue = staticmethod(ctx.RawValue)
        RawArray = staticmethod(ctx.RawArray)

    return MultiprocMixin


def _install():
    module = sys.modules[__name__]
    for method in METHODS:
        mixin = _mixin(method)
        for name in CLASSES:
            cls = getattr(base, name)
            if "processes" not in cls.ALLOWED_TYPES:
                continue
            new = "TestMultiproc" + method.capitalize() + name[5:]
            attrs = {"__module__": __name__, "__qualname__": new}
            for test, why in SKIP.items():
                cname, _, tname = test.partition(".")
                if cname == name and hasattr(cls, tname):
                    attrs[tname] = unittest.skip(why)(getattr(cls, tname))
            setattr(module, new, type(new, (cls, mixin, unittest.TestCase), attrs))


_install()
