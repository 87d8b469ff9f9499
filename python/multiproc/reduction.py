"""Pickling multiproc objects: through multiproc's tokens (bytes + descriptors).

A native object exports itself as ``(kind, bytes, fds)``; the descriptors travel
wrapped in ``multiprocessing.reduction.DupFd``, so spawn and forkserver children
get them through CPython's own ``duplicate_for_child``, and any other receiver (a
Queue, a Pipe, a Pool task) through CPython's resource sharer. Unlike CPython's,
these objects may be pickled at any time.
"""

import os

from multiprocessing import context as _mpcontext
from multiprocessing import reduction as _mpreduction

from . import _native


class _Fds:
    """Descriptors exported for a child being spawned: kept open until the child has
    them (its Popen object holds this), closed when it is collected."""

    def __init__(self):
        self.fds = []

    def __del__(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _dupfd(fd):
    """``DupFd`` of a descriptor this module owns (``fd`` is closed or handed over)."""
    popen = _mpcontext.get_spawning_popen()
    if popen is not None:
        # Spawn/forkserver: CPython passes the descriptor when it starts the child;
        # it must stay open until then.
        keep = getattr(popen, "_multiproc_fds", None)
        if keep is None:
            keep = _Fds()
            popen._multiproc_fds = keep
        keep.fds.append(fd)
        return _mpreduction.DupFd(fd)
    try:
        return _mpreduction.DupFd(fd)  # the resource sharer dups it
    finally:
        os.close(fd)


def reduce_native(obj):
    exported = getattr(obj, "_export", None)
    if exported is None:
        raise TypeError(
            f"{type(obj).__name__} cannot be pickled by this build of multiproc"
        )
    kind, data, fds, extra = exported()
    return _rebuild, (type(obj), kind, data, [_dupfd(fd) for fd in fds], extra)


def _rebuild(cls, kind, data, dupfds, extra):
    fds = [d.detach() for d in dupfds]
    return _native.import_object(cls, kind, data, fds, extra)
