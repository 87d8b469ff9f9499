"""``Pipe`` and its ``Connection``s: multiproc's connections (CPython's framing), with
``send``/``recv`` of pickles as CPython's.

The other end's close or death is ``EOFError`` (never half a message); a send to a
gone peer is ``BrokenPipeError``. Blocking calls release the GIL and are
interruptible by Ctrl-C.
"""

from multiprocessing import reduction as _mpreduction
from multiprocessing.connection import wait  # noqa: F401  (works on fileno())
from multiprocessing import BufferTooShort

from . import _native

def _dumps(obj, _d=_mpreduction.ForkingPickler.dumps):
    return _d(obj).tobytes()


_loads = _mpreduction.ForkingPickler.loads


class Connection(_native.Connection):
    """One end of a ``Pipe``."""

    __slots__ = ()

    def send_bytes(self, buf, offset=0, size=None):
        m = memoryview(buf)
        if m.itemsize > 1:
            m = m.cast("B")
        n = m.nbytes
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        data = m if isinstance(buf, bytes) else bytes(m[offset:offset + size])
        if isinstance(buf, bytes):
            self._send_bytes(buf, offset, size)
        else:
            self._send_bytes(data, 0, size)

    def send(self, obj):
        self._send_bytes(_dumps(obj), 0, None)

    def recv(self):
        return _loads(self.recv_bytes())

    def recv_bytes_into(self, buf, offset=0):
        with memoryview(buf) as m:
            itemsize = m.itemsize
            bytesize = itemsize * len(m)
            if offset < 0:
                raise ValueError("negative offset")
            elif offset > bytesize:
                raise ValueError("offset too large")
            data = self.recv_bytes()
            size = len(data)
            if bytesize - offset < size:
                raise BufferTooShort(data)
            m.cast("B")[offset:offset + size] = data
            return size

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()

    def __reduce__(self):
        from . import reduction

        return reduction.reduce_native(self)


def Pipe(duplex=True):
    """``multiprocessing.Pipe(duplex=True)``: two Connections (``(reader, writer)``
    when not duplex)."""
    a, b = _native.pipe(duplex)
    return Connection(_from=a), Connection(_from=b)
