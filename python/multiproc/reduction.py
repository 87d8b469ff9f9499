"""Pickling multiproc objects through multiproc's tokens (bytes + descriptors).

A native object exports itself as ``(bytes, fds)`` (``multiproc::token::export``:
one descriptor per shared-memory file it lives in). The descriptors travel wrapped
in ``multiprocessing.reduction.DupFd``: spawn and forkserver children get them
through CPython's own ``duplicate_for_child`` when the pickle is part of starting
them; any other receiver (a Queue, a Pipe, a Pool task) through CPython's resource
sharer. Unlike CPython's, these objects may be pickled at any time.

A token does not keep its object alive: the sender must hold it until the
receiver has unpickled it, or the import fails (``the object was freed before the
token was imported``: never a wrong object). For a child being started, the
object is kept alive by its ``Popen`` (CPython drops ``Process._args`` right after
``start()``, before the child has unpickled them).
"""

import os

from multiprocessing import context as _mpcontext
from multiprocessing import reduction as _mpreduction

from . import _native


class _Keep:
    """What a child being spawned needs kept until it has it: descriptors (closed
    when this is collected, with the child's Popen) and the exported objects."""

    def __init__(self):
        self.fds = []
        self.objects = []

    def __del__(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _keep_for(popen):
    keep = getattr(popen, "_multiproc_keep", None)
    if keep is None:
        keep = _Keep()
        popen._multiproc_keep = keep
    return keep


def _dupfd(fd, keep):
    """``DupFd`` of a descriptor this module owns (closed here or kept)."""
    if keep is not None:
        # Part of starting a spawn/forkserver child: CPython passes the descriptor
        # when it starts the child, so it must stay open until then.
        keep.fds.append(fd)
        return _mpreduction.DupFd(fd)
    try:
        return _mpreduction.DupFd(fd)  # the resource sharer dups it
    finally:
        os.close(fd)


def _native_base(cls):
    for c in cls.__mro__:
        if c.__module__ == "multiproc._native":
            return c
    raise TypeError(f"{cls!r} is not a multiproc object")


def reduce_native(obj, **kwargs):
    data, fds = obj._export()
    popen = _mpcontext.get_spawning_popen()
    keep = _keep_for(popen) if popen is not None else None
    if keep is not None:
        keep.objects.append(obj)
        if isinstance(obj, _native.Connection):
            # A connection's token is a copy of its socket: passed to a child being
            # started, the copy would stay open here as long as the child's Popen,
            # and the other end would never see EOF after the user closes this
            # one (CPython's test_connection hung on that). Pass the connection's
            # own descriptor instead, as CPython does: closing it closes it.
            for fd in fds:
                os.close(fd)
            return _rebuild, (type(obj), data, [_mpreduction.DupFd(obj.fileno())], kwargs)
    return _rebuild, (type(obj), data, [_dupfd(fd, keep) for fd in fds], kwargs)


def _rebuild(cls, data, dupfds, kwargs):
    fds = [d.detach() for d in dupfds]
    obj = _native_base(cls).__new__(cls, _token=(data, fds), **kwargs)
    after = getattr(obj, "_after_import", None)
    if after is not None:
        after()
    return obj
