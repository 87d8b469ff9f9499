"""Shared memory for `Value` and `Array`: memfd arenas mapped with Python's `mmap`.

Each arena is an anonymous memfd (nothing in /dev/shm, freed by the kernel with the
last process that maps it or holds its descriptor), mapped with `mmap`, so the
bytes are reached through Python's own buffer protocol: no unsafe code, and
`ctypes.from_buffer` / `numpy.frombuffer` share the memory without a copy.

Invariants:
- Memory is never reused while it may be in use: a block is carved once (bump
  allocation, 16-byte aligned) and never handed out again; an arena is unmapped
  when the last object of this process in it is gone (each ctypes object keeps its
  arena alive), and the kernel frees it when no process maps it any more. A
  program that makes and drops objects forever uses at most its live objects plus
  one partly carved arena.
- Only the process that created an arena carves it: after a fork the child starts
  a new arena (two processes carving the same arena from copies of one bump
  pointer would hand out the same bytes twice). An arena received by pickling is
  never carved.
- An arena travels as its descriptor (`multiprocessing.reduction.DupFd`: spawn and
  forkserver children get it through CPython's own `duplicate_for_child`, any other
  receiver through its resource sharer) plus its size; a process that already maps
  it (same inode) reuses that mapping.
"""

import mmap
import os
import threading
import weakref

ARENA_SIZE = 1 << 20
#: Objects larger than this get an arena of their own.
LARGE = ARENA_SIZE // 4
ALIGN = 16


class Arena:
    """One memfd, mapped whole."""

    def __init__(self, size, fd=-1):
        if fd == -1:
            fd = os.memfd_create("multiproc-heap", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, size)
            except BaseException:
                os.close(fd)
                raise
        self.fd = fd
        self.size = size
        st = os.fstat(fd)
        self.key = (st.st_dev, st.st_ino)
        self.buffer = mmap.mmap(fd, size)
        _by_inode[self.key] = self

    def __del__(self):
        try:
            os.close(self.fd)
        except (OSError, TypeError, AttributeError):
            pass

    def __reduce__(self):
        from multiprocessing import reduction

        return _rebuild_arena, (self.size, reduction.DupFd(self.fd))


# inode -> Arena mapped in this process (weak: an arena lives while objects use it).
_by_inode = weakref.WeakValueDictionary()


def _rebuild_arena(size, dupfd):
    fd = dupfd.detach()
    st = os.fstat(fd)
    known = _by_inode.get((st.st_dev, st.st_ino))
    if known is not None:
        os.close(fd)
        return known
    return Arena(size, fd)


class _Heap:
    def __init__(self):
        self.lock = threading.Lock()
        self.arena = None
        self.used = 0

    def malloc(self, size):
        """(arena, offset) of `size` fresh zeroed bytes."""
        size = max(size, 1)
        if size > LARGE:
            length = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
            return Arena(length), 0
        with self.lock:
            start = (self.used + ALIGN - 1) // ALIGN * ALIGN
            if self.arena is None or start + size > ARENA_SIZE:
                self.arena = Arena(ARENA_SIZE)
                start = 0
            self.used = start + size
            return self.arena, start

    def after_fork_in_child(self):
        # A fresh lock (another thread may have held it at the fork) and a fresh
        # arena: the parent goes on carving its own.
        self.lock = threading.Lock()
        self.arena = None
        self.used = 0


heap = _Heap()
os.register_at_fork(after_in_child=heap.after_fork_in_child)
