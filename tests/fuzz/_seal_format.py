"""SEAL byte layouts for crafting and mutating test inputs (see fedcrypt/he/_seal.py).

Offsets of the fields of an *uncompressed* SEAL 4.x ``Ciphertext`` and ``SecretKey``
(``serialization.h``, ``ciphertext.cpp``, ``plaintext.cpp``, ``dynarray.h``), all
little-endian. :func:`plain` turns SEAL's zstd-compressed output (what TenSEAL writes, and
what fedcrypt wrote before it stopped compressing) into the uncompressed form, so the
crafted inputs are the same before and after the fix.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import sys

HEADER = struct.Struct("<HBBBBHQ")  # magic, header_size, major, minor, compr_mode, reserved, size
CT_META = struct.Struct("<32sBQQQdQ")  # parms_id, ntt, size, N, k, scale, correction_factor

# field offsets inside a ciphertext (after its 16-byte outer header)
CT_PARMS = 16
CT_NTT = 48
CT_SIZE = 49
CT_N = 57
CT_K = 65
CT_SCALE = 73
CT_CORRECTION = 81
CT_ARRAY = 89  # nested DynArray header
CT_COUNT = 105
CT_WORDS = 113
# inside a secret key
SK_PARMS, SK_COUNT, SK_SCALE, SK_ARRAY, SK_WORDS_COUNT, SK_WORDS = 16, 48, 56, 64, 80, 88


def _zstd():
    import tenseal.sealapi  # noqa: F401 - loads the module that links libzstd

    for name in (getattr(sys.modules.get("_sealapi_cpp"), "__file__", None), ctypes.util.find_library("zstd")):
        if name:
            lib = ctypes.CDLL(name)
            lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
            lib.ZSTD_decompress.restype = ctypes.c_size_t
            return lib
    raise RuntimeError("no libzstd")


def plain(obj: bytes) -> bytes:
    """The uncompressed form of a SEAL object (unchanged if it already is)."""
    magic, hsize, major, minor, compr, reserved, size = HEADER.unpack_from(obj, 0)
    if compr == 0:
        return bytes(obj)
    assert compr == 2, compr
    lib = _zstd()
    body = bytes(obj[16:])
    n = lib.ZSTD_getFrameContentSize(body, len(body))
    out = ctypes.create_string_buffer(n)
    assert lib.ZSTD_decompress(out, n, body, len(body)) == n
    return HEADER.pack(magic, hsize, major, minor, 0, reserved, 16 + n) + out.raw


def put_header(obj: bytes, at: int, **fields: int) -> bytes:
    """``obj`` with some fields of the SEALHeader at ``at`` replaced."""
    names = ("magic", "header_size", "major", "minor", "compr", "reserved", "size")
    values = dict(zip(names, HEADER.unpack_from(obj, at)))
    values.update(fields)
    return obj[:at] + HEADER.pack(*(values[n] for n in names)) + obj[at + 16 :]


def put(obj: bytes, at: int, fmt: str, value) -> bytes:
    raw = struct.pack("<" + fmt, value)
    return obj[:at] + raw + obj[at + len(raw) :]


def headers_of(obj: bytes, secret_key: bool = False) -> list[int]:
    """Offsets of every SEALHeader in a ciphertext (outer, DynArray, PRNG) or secret key."""
    if secret_key:
        return [0, SK_ARRAY]
    (count,) = struct.unpack_from("<Q", obj, CT_COUNT)
    out = [0, CT_ARRAY]
    prng = CT_WORDS + 8 * count
    if prng + 16 <= len(obj):
        out.append(prng)
    return out


def zstd(obj: bytes) -> bytes:
    """``obj`` (uncompressed) with its payload zstd-compressed, as SEAL's default save writes it."""
    lib = _zstd()
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compress.restype = ctypes.c_size_t
    body = bytes(obj[16:])
    cap = lib.ZSTD_compressBound(ctypes.c_size_t(len(body)))
    out = ctypes.create_string_buffer(cap)
    n = lib.ZSTD_compress(out, ctypes.c_size_t(cap), body, ctypes.c_size_t(len(body)), 3)
    magic, hsize, major, minor, _compr, reserved, _size = HEADER.unpack_from(obj, 0)
    return HEADER.pack(magic, hsize, major, minor, 2, reserved, 16 + n) + out.raw[:n]
