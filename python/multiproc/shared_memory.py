"""``shared_memory.SharedMemory``: CPython-compatible named segments.

Created and attached with multiproc's checks (exclusive create, mode 0600, an
unpredictable name; attach refuses other users' segments, world-open ones and
symlinks), then mapped with Python's ``mmap``, so ``buf`` is a ``memoryview`` as in
CPython and CPython's ``SharedMemory(name=...)`` attaches to these (and these to
CPython's). No resource tracker: a segment lives until ``unlink()`` (CPython's
documented rule), or until ``multiproc clean`` finds its creator gone.
"""

import mmap
import os

from . import _native

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class SharedMemory:
    """``SharedMemory(name=None, create=False, size=0)``."""

    def __init__(self, name=None, create=False, size=0):
        if not size >= 0:
            raise ValueError("'size' must be a positive integer")
        if create and size == 0:
            raise ValueError("'size' must be a positive number different from zero")
        if name is None and not create:
            raise ValueError("'name' can only be None if create=True")
        self._native = _native.SharedMemory(name, create, size)
        self._name = self._native.name
        path = "/dev/shm/" + self._name.lstrip("/")
        self._fd = os.open(path, os.O_RDWR | _O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._size = os.fstat(self._fd).st_size
            self._mmap = mmap.mmap(self._fd, self._size)
        except BaseException:
            os.close(self._fd)
            raise
        self._buf = memoryview(self._mmap)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __reduce__(self):
        return (self.__class__, (self.name, False, self.size))

    def __repr__(self):
        return f"{self.__class__.__name__}({self.name!r}, size={self.size})"

    @property
    def buf(self):
        return self._buf

    @property
    def name(self):
        return self._name

    @property
    def size(self):
        return self._size

    def close(self):
        if getattr(self, "_buf", None) is not None:
            self._buf.release()
            self._buf = None
        if getattr(self, "_mmap", None) is not None:
            self._mmap.close()
            self._mmap = None
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1
        if getattr(self, "_native", None) is not None:
            self._native.close()

    def unlink(self):
        _native.SharedMemory.unlink(self._native)
