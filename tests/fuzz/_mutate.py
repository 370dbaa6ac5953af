"""Deterministic, structure-aware mutation of serialised objects (no fedcrypt import).

An input is described by a :class:`Shape`: its bytes, the fields that matter (offset,
width), the SEAL headers inside it, the coefficient words, and how to repair the framing
after a change (the size prefix of the SEAL object inside a fedcrypt blob or context, and
the SEAL header's own size), so a mutation of an inner field reaches the inner validation
instead of being refused at the first length check. Input ``i`` of a run is a pure
function of ``(seed, decoder, i)``: the parent regenerates a crashing input from its index.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

#: widths and offsets inside a 16-byte SEALHeader: magic, header_size, major, minor, compr, reserved, size
_HEADER_FIELDS = ((0, 2), (2, 1), (3, 1), (4, 1), (5, 1), (6, 2), (8, 8))
_DOUBLES = (float("nan"), float("inf"), -float("inf"), -1.0, 0.0, -0.0, 5e-324, 1e-300, 1e308, 2.0**40, 2.0**200)


@dataclass
class Shape:
    """A valid input and its structure (offsets are absolute in ``data``)."""

    data: bytes
    fields: list[tuple[int, int]] = field(default_factory=list)
    headers: list[int] = field(default_factory=list)
    words: tuple[int, int] = (0, 0)  # first offset and count of 8-byte coefficient words
    object_at: int | None = None  # where the SEAL object starts (its outer header)
    size_prefix: int | None = None  # offset of a big-endian u32 that frames the SEAL object
    doubles: list[int] = field(default_factory=list)  # offsets of f64 fields


def _interesting(rng: random.Random, original: int, width: int) -> int:
    top = (1 << (8 * width)) - 1
    choices = [0, 1, 2, 3, 4, 16, 0xFF, top, top - 1, top >> 1, (top >> 1) + 1, original + 1, original - 1,
               original * 2, original >> 1, original ^ (1 << rng.randrange(8 * width)), rng.randrange(top + 1)]
    if width >= 4:
        choices += [2**31 - 1, 2**32 - 1, 2**32, 2**16, 8192, 8192 * 3, 2**62]
    return rng.choice(choices) & top


def _set(data: bytearray, at: int, width: int, value: int) -> None:
    if at + width <= len(data):
        data[at : at + width] = value.to_bytes(width, "little")


def mutate(shape: Shape, rng: random.Random, others: list[Shape]) -> bytes:
    """One mutated input (1 to 3 operations, then an optional framing repair)."""
    data = bytearray(shape.data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        op = rng.random()
        if op < 0.30 and shape.fields:  # a field set to an interesting value (either byte order)
            at, width = rng.choice(shape.fields)
            if at + width > len(data):
                continue
            original = int.from_bytes(data[at : at + width], "little")
            value = _interesting(rng, original, width)
            order = "little" if rng.random() < 0.7 else "big"
            data[at : at + width] = value.to_bytes(width, order)
        elif op < 0.50 and shape.headers:  # a nested or outer SEAL header field
            base = rng.choice(shape.headers)
            off, width = rng.choice(_HEADER_FIELDS)
            if base + off + width <= len(data):
                original = int.from_bytes(data[base + off : base + off + width], "little")
                _set(data, base + off, width, _interesting(rng, original, width))
        elif op < 0.58 and shape.doubles:
            at = rng.choice(shape.doubles)
            if at + 8 <= len(data):
                data[at : at + 8] = struct.pack("<d" if rng.random() < 0.5 else ">d", rng.choice(_DOUBLES))
        elif op < 0.66 and shape.words[1]:  # a coefficient word out of range, or zero
            first, count = shape.words
            at = first + 8 * rng.randrange(count)
            _set(data, at, 8, rng.choice((0, 2**64 - 1, 2**63, 2**60, 2**40)))
        elif op < 0.76:  # truncation: anywhere, or at a field boundary
            cuts = [at for at, _ in shape.fields] + [len(data) - 1, len(data) - 8, 1]
            cut = rng.choice(cuts) if rng.random() < 0.6 else rng.randrange(len(data) + 1)
            del data[max(cut, 0) :]
        elif op < 0.84:  # extension: random bytes, or a repeated chunk
            if rng.random() < 0.5:
                data += rng.randbytes(rng.choice((1, 7, 8, 16, 65, 4096)))
            elif data:
                start = rng.randrange(len(data))
                data[start:start] = data[start : start + rng.choice((8, 16, 81, 4096))]
        elif op < 0.92 and others:  # splice with another valid input, at the same or a field offset
            other = rng.choice(others).data
            at = rng.choice([a for a, _ in shape.fields] or [0])
            length = rng.choice((8, 16, 32, 73, 128, 4096, len(other)))
            source = at if rng.random() < 0.5 else rng.randrange(max(len(other), 1))
            data[at : at + length] = other[source : source + length]
        else:  # a few bit flips, most of them near the start
            for _ in range(rng.randrange(1, 9)):
                if not data:
                    break
                limit = len(data) if rng.random() < 0.3 else min(len(data), 256)
                pos = rng.randrange(limit)
                data[pos] ^= 1 << rng.randrange(8)
    if shape.object_at is not None and rng.random() < 0.7:  # repair the framing
        obj_len = len(data) - shape.object_at
        if shape.size_prefix is not None and shape.size_prefix + 4 <= len(data) and obj_len >= 0:
            data[shape.size_prefix : shape.size_prefix + 4] = struct.pack(">I", obj_len & 0xFFFFFFFF)
        if rng.random() < 0.6 and shape.object_at + 16 <= len(data):
            _set(data, shape.object_at + 8, 8, obj_len)
        if rng.random() < 0.08 and obj_len >= 16:  # as SEAL's default save writes it: zstd
            try:  # ctypes libzstd; CKKS shapes only (OpenFHE shapes have no object_at)
                from ._seal_format import zstd
            except ImportError:  # imported as a top-level module in the child
                from _seal_format import zstd  # type: ignore[no-redef]

            packed = zstd(bytes(data[shape.object_at :]))
            data[shape.object_at :] = packed
            if shape.size_prefix is not None:
                data[shape.size_prefix : shape.size_prefix + 4] = struct.pack(">I", len(packed))
    return bytes(data)


def input_for(shapes: list[Shape], seed: int, decoder: str, index: int) -> bytes:
    """Input ``index`` of a run: a mutation of one of ``shapes`` (valid ones now and then)."""
    rng = random.Random(f"{seed}:{decoder}:{index}")
    shape = shapes[rng.randrange(len(shapes))]
    if rng.random() < 0.01:
        return shape.data
    return mutate(shape, rng, shapes)
