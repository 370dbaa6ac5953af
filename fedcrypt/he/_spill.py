"""Uploads a round server keeps until DECRYPT, on disk instead of in memory.

With a roster the CKKS and threshold-CKKS servers relay the signed uploads themselves to
the decryptors (who sum them: a server-made sum cannot be told from one relabelled upload),
so they keep every upload of the round until it is streamed at DECRYPT. :class:`SpillFile`
keeps those bytes in an anonymous temporary file (unlinked on creation where the platform
allows, so nothing is left behind when the process dies), and the server's memory stays one
upload in flight plus the streamed part, whatever the number of nodes.

The bytes are ciphertexts and public headers, what the server receives anyway; a local
file is no channel to a peer, so the round objects stay sans-IO as far as the network is
concerned.
"""

from __future__ import annotations

import tempfile
from typing import IO, Iterable

from fedcrypt.errors import LocalProtocolError

__all__ = ["SpillFile"]


class SpillFile:
    """An append-only store of byte strings in an anonymous temporary file.

    Args:
        directory: where the file goes (default: the platform's temporary directory).
    """

    __slots__ = ("_file", "_size", "_spans", "_directory", "_closed")

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        self._file: IO[bytes] | None = None  # made at the first put
        self._closed = False
        self._size = 0
        self._spans: dict[int, tuple[int, int]] = {}

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SpillFile(items={len(self._spans)}, bytes={self._size}, closed={self._closed})"

    def __len__(self) -> int:
        return len(self._spans)

    def __contains__(self, key: object) -> bool:
        return key in self._spans

    def _open(self) -> IO[bytes]:
        if self._closed:
            raise LocalProtocolError("the spill file is closed", party="server")
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="fedcrypt-uploads-", dir=self._directory)
        return self._file

    def put(self, key: int, data: bytes) -> None:
        """Keep ``data`` under ``key`` (a new key: a store never overwrites)."""
        if key in self._spans:
            raise LocalProtocolError(f"item {key} is already kept", party="server")
        handle = self._open()
        handle.seek(self._size)
        handle.write(data)
        self._spans[key] = (self._size, len(data))
        self._size += len(data)

    def get(self, key: int) -> bytes:
        """The bytes kept under ``key`` (KeyError for an unknown key)."""
        offset, length = self._spans[key]
        handle = self._open()
        handle.flush()
        handle.seek(offset)
        data = handle.read(length)
        if len(data) != length:
            raise LocalProtocolError(f"the spill file lost item {key}", party="server")
        return data

    def size(self, key: int) -> int:
        """How many bytes are kept under ``key``."""
        return self._spans[key][1]

    def parts(self, keys: Iterable[int], part_bytes: int) -> list[tuple[int, ...]]:
        """``keys`` in order, cut into parts of at most ``part_bytes`` kept bytes (each at least one item)."""
        parts: list[tuple[int, ...]] = []
        part: list[int] = []
        size = 0
        for key in keys:
            if part and size + self.size(key) > part_bytes:
                parts.append(tuple(part))
                part, size = [], 0
            part.append(key)
            size += self.size(key)
        if part:
            parts.append(tuple(part))
        return parts

    def close(self) -> None:
        """Drop the file and everything in it (idempotent)."""
        self._closed = True
        if getattr(self, "_file", None) is not None:
            assert self._file is not None
            self._file.close()
            self._file = None
        self._spans = {}
        self._size = 0
