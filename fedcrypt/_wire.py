"""The one bounds-checked byte reader every decoder uses.

A strict decoder reads a peer's bytes front to back through a :class:`Reader`: fixed
fields (:meth:`Reader.u8` .. :meth:`Reader.u64`, :meth:`Reader.unpack`), fixed-length
byte strings (:meth:`Reader.take`, :meth:`Reader.view`), length-prefixed byte strings
with an explicit cap (:meth:`Reader.sized`, :meth:`Reader.sized_view`,
:meth:`Reader.length`), counts bounded by a cap and by the bytes left
(:meth:`Reader.count`), and finally :meth:`Reader.expect_end`.

Invariants:

* every read checks the bytes that remain before it slices or converts anything; a read
  past the end raises and leaves the position where it was;
* a length prefix or a count is checked against an explicit cap (and a count against the
  bytes left) before anything of that size is read or allocated, so a decoder never
  allocates more than a small constant beyond the input it was given;
* every failure raises the decoder's own typed error (``error``, a
  :class:`~fedcrypt.errors.FedcryptError` class, by default
  :class:`~fedcrypt.errors.MalformedMessageError`) whose message starts with the
  decoder's name (``what``) and states sizes and positions only, never the content;
* fixed fields are big-endian (every fedcrypt format is); :meth:`Reader.unpack` reads
  any other layout (SEAL's little-endian headers, say) from a :class:`struct.Struct`;
* :meth:`Reader.take` returns a copy of exactly the bytes read; :meth:`Reader.view`
  returns a zero-copy slice of the input.
"""

from __future__ import annotations

import struct
from typing import Any

from fedcrypt.errors import FedcryptError, MalformedMessageError

__all__ = ["Reader"]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_PREFIXES: dict[int, struct.Struct] = {1: struct.Struct(">B"), 2: _U16, 4: _U32, 8: _U64}


class Reader:
    """A cursor over one encoding that raises ``error`` on any read it cannot serve.

    Args:
        data: the encoding (``bytes``, ``bytearray`` or a contiguous ``memoryview``).
        what: the decoder's name, the first word of every error message.
        error: the typed error to raise (a :class:`~fedcrypt.errors.FedcryptError`
            subclass taking one message argument).
        start: where reading begins (a decoder that checked a fixed header first).

    Raises:
        TypeError: ``data`` is not bytes-like.
        ValueError: ``start`` is outside the data.
    """

    __slots__ = ("_data", "_pos", "what", "_error")

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        what: str,
        *,
        error: type[FedcryptError] = MalformedMessageError,
        start: int = 0,
    ) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes, got {type(data).__name__}")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if not 0 <= start <= len(view):
            raise ValueError(f"start {start} is outside the {len(view)} bytes")
        self._data = view
        self._pos = start
        self.what = what
        self._error = error

    @property
    def size(self) -> int:
        """Bytes in the whole encoding."""
        return len(self._data)

    @property
    def pos(self) -> int:
        """Bytes read so far (the offset of the next read)."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self._pos

    def error(self, detail: str) -> FedcryptError:
        """The decoder's typed error for ``detail``, prefixed with its name (to raise)."""
        return self._error(f"{self.what}: {detail}")

    def _advance(self, count: int, label: str | None = None) -> int:
        """Check that ``count`` bytes remain, move past them, return where they start."""
        if count < 0 or count > self.remaining:
            inside = f" inside {label}" if label else ""
            raise self.error(f"truncated{inside} (needed {count} bytes, {self.remaining} left)")
        start = self._pos
        self._pos = start + count
        return start

    # ------------------------------------------------------------------ fixed length
    def take(self, count: int, label: str | None = None) -> bytes:
        """The next ``count`` bytes, copied (``label`` names them in the error)."""
        start = self._advance(count, label)
        return self._data[start : start + count].tobytes()

    def view(self, count: int, label: str | None = None) -> memoryview:
        """The next ``count`` bytes as a zero-copy slice of the input (``label`` names them)."""
        start = self._advance(count, label)
        return self._data[start : start + count]

    def unpack(self, layout: struct.Struct | str) -> tuple[Any, ...]:
        """The next fields of ``layout`` (a :class:`struct.Struct` or a format string)."""
        if isinstance(layout, str):
            layout = struct.Struct(layout)
        start = self._advance(layout.size)
        return layout.unpack_from(self._data, start)

    def u8(self) -> int:
        """One unsigned byte."""
        start = self._advance(1)
        return self._data[start]

    def u16(self) -> int:
        """A big-endian unsigned 16-bit integer."""
        return _U16.unpack_from(self._data, self._advance(2))[0]

    def u32(self) -> int:
        """A big-endian unsigned 32-bit integer."""
        return _U32.unpack_from(self._data, self._advance(4))[0]

    def u64(self) -> int:
        """A big-endian unsigned 64-bit integer."""
        return _U64.unpack_from(self._data, self._advance(8))[0]

    # ------------------------------------------------------------------ bounded lengths
    def length(self, cap: int, label: str, *, width: int = 4, allow_empty: bool = False) -> int:
        """A big-endian length prefix of ``width`` bytes, at most ``cap`` (and not 0 unless
        ``allow_empty``); the bytes it announces are not read."""
        if width not in _PREFIXES:
            raise ValueError(f"width must be one of {sorted(_PREFIXES)}, got {width}")
        size = _PREFIXES[width].unpack_from(self._data, self._advance(width))[0]
        if size > cap or (size == 0 and not allow_empty):
            raise self.error(f"{label} of {size} bytes (cap {cap})")
        return int(size)

    def sized(self, cap: int, label: str, *, width: int = 4, allow_empty: bool = False) -> bytes:
        """A length-prefixed byte string (see :meth:`length`), copied."""
        return self.take(self.length(cap, label, width=width, allow_empty=allow_empty), label)

    def sized_view(self, cap: int, label: str, *, width: int = 4, allow_empty: bool = False) -> memoryview:
        """A length-prefixed byte string (see :meth:`length`) as a zero-copy slice."""
        return self.view(self.length(cap, label, width=width, allow_empty=allow_empty), label)

    def count(self, entry_bytes: int, cap: int, label: str = "count") -> int:
        """A big-endian 32-bit count of entries of at least ``entry_bytes`` each, at most
        ``cap`` and no more than the bytes left can hold."""
        value = self.u32()
        if value > cap or value * entry_bytes > self.remaining:
            raise self.error(f"{label} {value} exceeds the cap {cap} or the data")
        return int(value)

    # ------------------------------------------------------------------ the end
    def expect_end(self) -> None:
        """Raise unless every byte was read."""
        if self.remaining:
            raise self.error(f"{self.remaining} trailing bytes")

    def __repr__(self) -> str:
        return f"Reader({self.what!r}, pos={self._pos}, remaining={self.remaining})"
