"""``Value``, ``RawValue``, ``Array``, ``RawArray``: ctypes objects in shared memory.

The same typecodes, ctypes types and wrappers as CPython's ``sharedctypes``; the
bytes live in memfd arenas (``heap``), the lock is a multiproc ``RLock`` (or the
``lock=`` given). ``get_obj()`` is a plain ctypes object over the shared bytes, so
``numpy.frombuffer(arr.get_obj(), dtype)`` shares them without a copy. Unlike
CPython's, these objects pickle at any time (into a Queue, as a Pool argument).
"""

import ctypes

from . import _native
from . import heap as _heap

typecode_to_type = {
    "c": ctypes.c_char,
    "u": ctypes.c_wchar,
    "b": ctypes.c_byte,
    "B": ctypes.c_ubyte,
    "h": ctypes.c_short,
    "H": ctypes.c_ushort,
    "i": ctypes.c_int,
    "I": ctypes.c_uint,
    "l": ctypes.c_long,
    "L": ctypes.c_ulong,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float,
    "d": ctypes.c_double,
}


def _new(type_):
    size = ctypes.sizeof(type_)
    arena, offset = _heap.heap.malloc(size)
    return _at(type_, arena, offset)


def _at(type_, arena, offset):
    obj = type_.from_buffer(arena.buffer, offset)
    obj._mp_place = (arena, offset)
    return obj


def _reduce_ctype(obj):
    place = getattr(obj, "_mp_place", None)
    if place is None:  # a ctypes object of the same type, not in shared memory
        return obj.__reduce_ex__(4)
    arena, offset = place
    return _rebuild_ctype, (type(obj)._type_ if isinstance(obj, ctypes.Array) else type(obj),
                            len(obj) if isinstance(obj, ctypes.Array) else None,
                            arena, offset)


def _rebuild_ctype(type_, length, arena, offset):
    if length is not None:
        type_ = type_ * length
    obj = _at(type_, arena, offset)
    return obj


def _shareable(obj):
    """Registers the pickling of a shared ctypes object's type (once per type)."""
    import copyreg

    copyreg.pickle(type(obj), _reduce_ctype)
    return obj


def RawValue(typecode_or_type, *args):
    """A ctypes object in shared memory (no lock)."""
    type_ = typecode_to_type.get(typecode_or_type, typecode_or_type)
    obj = _new(type_)
    obj.__init__(*args)
    return _shareable(obj)


def RawArray(typecode_or_type, size_or_initializer):
    """A ctypes array in shared memory (no lock)."""
    type_ = typecode_to_type.get(typecode_or_type, typecode_or_type)
    if isinstance(size_or_initializer, int):
        obj = _new(type_ * size_or_initializer)
    else:
        init = list(size_or_initializer) if not hasattr(size_or_initializer, "__len__") \
            else size_or_initializer
        obj = _new(type_ * len(init))
        obj.__init__(*init)
    return _shareable(obj)


def _lock_of(lock, ctx):
    if lock is True or lock is None:
        from .synchronize import RLock

        return RLock()
    if not hasattr(lock, "acquire"):
        raise AttributeError("%r has no method 'acquire'" % lock)
    return lock


def Value(typecode_or_type, *args, lock=True, ctx=None):
    """A synchronized ctypes object in shared memory (``lock=False``: a raw one)."""
    obj = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    return synchronized(obj, _lock_of(lock, ctx))


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None):
    """A synchronized ctypes array in shared memory (``lock=False``: a raw one)."""
    obj = RawArray(typecode_or_type, size_or_initializer)
    if lock is False:
        return obj
    return synchronized(obj, _lock_of(lock, ctx))


def copy(obj):
    new_obj = _new(type(obj))
    ctypes.pointer(new_obj)[0] = obj
    return _shareable(new_obj)


def synchronized(obj, lock=None, ctx=None):
    if lock is None:
        from .synchronize import RLock

        lock = RLock()
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized(obj, lock)
    if isinstance(obj, ctypes.Array):
        if obj._type_ is ctypes.c_char:
            return SynchronizedString(obj, lock)
        return SynchronizedArray(obj, lock)
    return SynchronizedStruct(obj, lock)


def _rebuild_synchronized(cls, obj, lock):
    return cls(obj, lock)


class SynchronizedBase:
    def __init__(self, obj, lock=None, ctx=None):
        self._obj = obj
        if lock is None:
            from .synchronize import RLock

            lock = RLock()
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *args):
        return self._lock.__exit__(*args)

    def __reduce__(self):
        return _rebuild_synchronized, (type(self), self._obj, self._lock)

    def get_obj(self):
        return self._obj

    def get_lock(self):
        return self._lock

    def __repr__(self):
        return "<%s wrapper for %s>" % (type(self).__name__, self._obj)


class Synchronized(_native.SynchronizedValue, SynchronizedBase):
    """``.value``, ``get_lock()`` and ``get_obj()`` are native (one call each)."""

    def __init__(self, obj, lock=None, ctx=None):
        SynchronizedBase.__init__(self, obj, lock)


class SynchronizedArray(SynchronizedBase):
    def __len__(self):
        return len(self._obj)

    def __getitem__(self, i):
        with self._lock:
            return self._obj[i]

    def __setitem__(self, i, value):
        with self._lock:
            self._obj[i] = value

    def __getslice__(self, start, stop):
        with self._lock:
            return self._obj[start:stop]

    def __setslice__(self, start, stop, values):
        with self._lock:
            self._obj[start:stop] = values


class SynchronizedString(SynchronizedArray):
    @property
    def value(self):
        with self._lock:
            return self._obj.value

    @value.setter
    def value(self, value):
        with self._lock:
            self._obj.value = value

    @property
    def raw(self):
        with self._lock:
            return self._obj.raw

    @raw.setter
    def raw(self, value):
        with self._lock:
            self._obj.raw = value


class SynchronizedStruct(SynchronizedBase):
    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        with self._lock:
            return getattr(self._obj, name)
