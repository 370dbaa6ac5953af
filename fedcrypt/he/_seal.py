"""Private bridge to SEAL through ``tenseal.sealapi``: contexts, byte (de)serialisation.

TenSEAL's bundled SEAL bindings save and load objects only through file paths. This module
turns that into bytes with one private scratch directory per thread (mode 0700, on a RAM
file system where the OS has one) whose single file is overwritten, read back and removed;
the directory is deleted at exit. Secret keys pass through it briefly: on a system without
``/dev/shm`` they touch the temporary directory's disk.

Invariants:

* TenSEAL is imported on first use only, through :func:`fedcrypt._optional.require`;
* one :class:`SealRuntime` per distinct :class:`~fedcrypt.he.params.CkksParams` modulus
  chain (cached), holding only public objects (context, encoder, evaluator);
* every byte string from a peer passes :func:`check_seal_bytes` (every header, count, size,
  level and coefficient, in Python) before SEAL's loader sees it; compressed SEAL objects
  are refused, and :func:`save_bytes` never writes one;
* every SEAL exception raised while loading untrusted bytes becomes
  :class:`~fedcrypt.errors.MalformedMessageError`.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import math
import os
import shutil
import struct
import sys
import tempfile
import threading
import zlib
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np

from fedcrypt._optional import require
from fedcrypt._wire import Reader
from fedcrypt.errors import HEError, MalformedMessageError
from fedcrypt.he.params import CkksParams

__all__ = ["sealapi", "SealRuntime", "runtime", "save_bytes", "load_from_bytes", "check_seal_bytes"]


def sealapi() -> ModuleType:
    """``tenseal.sealapi``, or :class:`MissingExtraError` naming the ``he`` extra."""
    return require("tenseal.sealapi", "he")


# ---------------------------------------------------------------------------- scratch
_local = threading.local()
_dirs: list[str] = []
_dirs_lock = threading.Lock()


def _scratch_path() -> str:
    path = getattr(_local, "path", None)
    if path is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        directory = tempfile.mkdtemp(prefix="fedcrypt-he-", dir=base)  # created 0700
        with _dirs_lock:
            _dirs.append(directory)
        path = os.path.join(directory, "object.bin")
        _local.path = path
    return path


@atexit.register
def _cleanup() -> None:
    with _dirs_lock:
        for directory in _dirs:
            shutil.rmtree(directory, ignore_errors=True)
        _dirs.clear()


def save_bytes(obj: Any) -> bytes:
    """Serialise a SEAL object (or a ``Serializable``) to SEAL's format, uncompressed.

    TenSEAL's bindings always save with SEAL's default compression (zstd). The payload is
    decompressed here (our own bytes, from our own SEAL) and the header rewritten with
    compression mode ``none``: every byte a peer receives is then a plain SEAL object that
    :func:`check_seal_bytes` can read field by field, and the loaders refuse compressed
    input, so no decompressor ever runs on a peer's bytes (no decompression bomb). CKKS
    coefficients are uniform modulo 40-60-bit primes, so zstd saved nothing on a seeded
    60-bit upload and 12% on a two-prime (60 + 40 bits) upload.
    """
    path = _scratch_path()
    try:
        obj.save(path)
        with open(path, "rb") as handle:
            raw = handle.read()
    finally:
        _remove(path)
    return _uncompressed(raw)


def load_from_bytes(obj: Any, context: Any, data: bytes | memoryview, what: str, *, seeded: bool | None = None) -> Any:
    """Validate SEAL bytes in Python, then load them into ``obj``; returns ``obj``.

    ``obj`` is a fresh ``Ciphertext`` or ``SecretKey``; the bytes are checked with
    :func:`check_seal_bytes` against ``context`` (every header, count, size, level and
    coefficient) before SEAL's own loader sees them. With ``seeded=True`` a ciphertext must
    be in seeded form (its second polynomial stored as the PRNG seed it is expanded from),
    with ``seeded=False`` it must not be; ``None`` allows either.

    Raises:
        MalformedMessageError: the bytes are not a valid uncompressed SEAL object of this
            context (the message names the field), or SEAL refused them.
        TypeError: ``obj`` is neither a ``Ciphertext`` nor a ``SecretKey`` (a caller's bug).
    """
    seal = sealapi()
    if isinstance(obj, seal.Ciphertext):
        kind = "ciphertext"
    elif isinstance(obj, seal.SecretKey):
        kind = "secret_key"
    else:
        raise TypeError(f"load_from_bytes loads a Ciphertext or a SecretKey, got {type(obj).__name__}")
    check_seal_bytes(kind, data, _layout(context), what, seeded=seeded)
    path = _scratch_path()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            obj.load(context, path)
        except (RuntimeError, ValueError, TypeError, MemoryError, IndexError) as exc:
            raise MalformedMessageError(f"{what}: SEAL refused the bytes ({type(exc).__name__})") from None
    finally:
        _remove(path)
    return obj


# ---------------------------------------------------------------------------- format
#: ``SEALHeader`` (SEAL 4.x ``serialization.h``), 16 bytes, little-endian:
#: magic u16 (0xA15E) | header_size u8 (16) | version_major u8 | version_minor u8 |
#: compr_mode u8 (0 none, 1 zlib, 2 zstd) | reserved u16 | size u64 (whole object, header included)
_HEADER = struct.Struct("<HBBBBHQ")
SEAL_MAGIC = 0xA15E
HEADER_BYTES = _HEADER.size
COMPR_NONE = 0
#: ``Ciphertext::save_members`` (SEAL 4.x ``ciphertext.cpp``): parms_id 4 x u64 | is_ntt_form u8 |
#: size u64 | poly_modulus_degree u64 | coeff_modulus_size u64 | scale f64 | correction_factor u64
_CT_META = struct.Struct("<32sBQQQdQ")
#: ``Plaintext::save_members`` (the body of a ``SecretKey``): parms_id | coeff_count u64 | scale f64
_PT_META = struct.Struct("<32sQd")
_COUNT = struct.Struct("<Q")
#: ``UniformRandomGeneratorInfo::save_members``: prng_type u8 (1 blake2xb, 2 shake256) | seed 64 bytes
_PRNG_BODY = 1 + 64
_PRNG_TYPES = (1, 2)
#: fedcrypt's ciphertexts are fresh encryptions and linear combinations: always 2 polynomials
MAX_POLYS = 2


class _Layout:
    """What a context allows: the data levels' parms_ids and primes, the key level's, N, version."""

    __slots__ = ("degree", "levels", "key_parms_id", "key_primes", "version")

    def __init__(self, context: Any) -> None:
        self.degree = int(context.key_context_data().parms().poly_modulus_degree())
        self.levels: dict[bytes, tuple[tuple[int, ...], int]] = {}
        data = context.first_context_data()
        while data is not None:
            primes = tuple(int(m.value()) for m in data.parms().coeff_modulus())
            self.levels[_parms_id_bytes(data.parms_id())] = (primes, int(data.total_coeff_modulus_bit_count()))
            data = data.next_context_data()
        key = context.key_context_data()
        self.key_parms_id = _parms_id_bytes(key.parms_id())
        self.key_primes = tuple(int(m.value()) for m in key.parms().coeff_modulus())
        header = sealapi().Serialization.SEALHeader()
        self.version = (int(header.version_major), int(header.version_minor))


def _parms_id_bytes(parms_id: Any) -> bytes:
    return struct.pack("<4Q", *(int(word) for word in parms_id))


_layouts: dict[int, tuple[Any, _Layout]] = {}


def _layout(context: Any) -> _Layout:
    entry = _layouts.get(id(context))
    if entry is None or entry[0] is not context:
        entry = (context, _Layout(context))  # the context is kept alive, so its id stays unique
        if len(_layouts) > 64:
            _layouts.clear()
        _layouts[id(context)] = entry
    return entry[1]


def _read_header(reader: Reader, layout: _Layout, label: str) -> int:
    """Read one ``SEALHeader``; return the size of the object it frames (header included),
    checked against the bytes from the header's start."""
    left = reader.remaining
    if left < HEADER_BYTES:
        raise reader.error(f"truncated {label} header")
    magic, header_size, major, minor, compr, reserved, size = reader.unpack(_HEADER)
    if magic != SEAL_MAGIC or header_size != HEADER_BYTES:
        raise reader.error(f"{label} header has bad magic or header size")
    if (major, minor) != layout.version:
        raise reader.error(f"{label} header says SEAL {major}.{minor}, this SEAL reads {layout.version[0]}.{layout.version[1]}")
    if compr != COMPR_NONE:
        raise reader.error(f"{label} compression mode {compr} is refused (only 0, none)")
    if reserved != 0:
        raise reader.error(f"{label} header has non-zero reserved bits")
    if size < HEADER_BYTES or size > left:
        raise reader.error(f"{label} header claims {size} bytes, {left} are left")
    return int(size)


def _read_array_head(reader: Reader, layout: _Layout) -> tuple[int, int]:
    """Read a nested ``DynArray<u64>``'s header and word count: ``(framed size, stored count)``."""
    if reader.remaining < HEADER_BYTES + _COUNT.size:
        raise reader.error("truncated coefficient array header")
    size = _read_header(reader, layout, "coefficient array")
    (stored,) = reader.unpack(_COUNT)
    return size, int(stored)


def _read_array_words(reader: Reader, size: int, stored: int, count: int) -> memoryview:
    """The array's words (zero-copy) once its size and count are exactly ``count`` words."""
    expected = HEADER_BYTES + _COUNT.size + 8 * count
    if size != expected:
        raise reader.error(f"coefficient array of {size} bytes, expected {expected}")
    if stored != count:
        raise reader.error(f"coefficient array holds {stored} words, expected {count}")
    return reader.view(8 * count)


def _check_coefficients(reader: Reader, words: memoryview, polys: int, primes: tuple[int, ...], degree: int) -> None:
    """Every word of ``polys`` RNS polynomials must lie below its prime (SEAL's is_data_valid_for)."""
    values = np.frombuffer(words, dtype="<u8", count=polys * len(primes) * degree)
    bounds = np.asarray(primes, dtype=np.uint64)[None, :, None]
    if not (values.reshape(polys, len(primes), degree) < bounds).all():
        raise reader.error("a coefficient is not reduced modulo its prime")


def check_seal_bytes(kind: str, data: bytes | memoryview, layout: _Layout, what: str, *, seeded: bool | None = None) -> None:
    """Validate an uncompressed SEAL ``Ciphertext`` or ``SecretKey`` against a context's layout.

    Format (SEAL 4.x as bundled by TenSEAL 0.3.x; ``serialization.h``, ``ciphertext.cpp``,
    ``plaintext.cpp``, ``dynarray.h``, ``randomgen.cpp``; checked against bytes TenSEAL
    writes, see tests/fuzz/_seal_format.py), all little-endian::

        ciphertext = SEALHeader | parms_id (32) | is_ntt_form (1) | size (8) | N (8) | k (8)
                     | scale (f64) | correction_factor (8)
                     | DynArray: SEALHeader | count (8) | count x u64
                     [ | UniformRandomGeneratorInfo: SEALHeader | prng_type (1) | seed (64) ]
        secret key = SEALHeader | parms_id (32) | coeff_count (8) | scale (f64)
                     | DynArray: SEALHeader | count (8) | count x u64

    A ciphertext's DynArray holds ``size * N * k`` words, or ``N * k`` (the first polynomial)
    followed by the seed of the second ("seeded", only for size 2).

    Checked: every header's magic, header size, version (this SEAL's own), compression mode
    (none only), reserved bits and size (exactly the bytes it frames); the parms_id is a data
    level of the context (the key level for a secret key), NTT form, ``2 <= size <= MAX_POLYS``,
    N and k match that level, the scale is finite, positive and below the level's modulus,
    correction_factor 1, the PRNG type known, no trailing bytes, every coefficient reduced;
    with ``seeded=True`` the ciphertext is in seeded form, with ``seeded=False`` it is not.

    Raises:
        MalformedMessageError: the first broken rule, named (never a coefficient's value).
    """
    reader = Reader(data, what)
    end = _read_header(reader, layout, "object")
    if end != reader.size:
        raise reader.error(f"header claims {end} bytes, got {reader.size}")
    degree = layout.degree
    if kind == "ciphertext":
        if reader.remaining < _CT_META.size:
            raise reader.error("truncated ciphertext metadata")
        parms_id, ntt, polys, n, k, scale, correction = reader.unpack(_CT_META)
        level = layout.levels.get(parms_id)
        if level is None:
            raise reader.error("ciphertext parms_id is not a level of this context")
        primes, modulus_bits = level
        if ntt != 1:
            raise reader.error("ciphertext is not in NTT form")
        if not 2 <= polys <= MAX_POLYS:
            raise reader.error(f"ciphertext has {polys} polynomials (expected 2..{MAX_POLYS})")
        if n != degree or k != len(primes):
            raise reader.error(f"ciphertext claims N={n}, {k} primes; its level has N={degree}, {len(primes)}")
        if not (math.isfinite(scale) and scale > 0 and math.log2(scale) < modulus_bits):
            raise reader.error("ciphertext scale is not finite, positive and below the modulus")
        if correction != 1:
            raise reader.error(f"ciphertext correction factor {correction} (CKKS uses 1)")
        size, stored = _read_array_head(reader, layout)
        is_seeded = stored == degree * k and polys == 2
        if seeded is not None and seeded != is_seeded:
            raise reader.error(
                "ciphertext is not in seeded form (its second polynomial must be a PRNG seed)"
                if seeded
                else "ciphertext is in seeded form (a sum has both polynomials)"
            )
        count = degree * k * (1 if is_seeded else polys)
        words = _read_array_words(reader, size, stored, count)
        if is_seeded:
            size = _read_header(reader, layout, "PRNG seed")
            if size != HEADER_BYTES + _PRNG_BODY:
                raise reader.error(f"PRNG seed of {size} bytes, expected {HEADER_BYTES + _PRNG_BODY}")
            prng_type = reader.u8()
            if prng_type not in _PRNG_TYPES:
                raise reader.error(f"unknown PRNG type {prng_type}")
            reader.view(_PRNG_BODY - 1)  # the seed
        if reader.remaining:
            raise reader.error(f"{reader.remaining} bytes after the ciphertext")
        _check_coefficients(reader, words, count // (degree * k), primes, degree)
        return
    if kind == "secret_key":
        if reader.remaining < _PT_META.size:
            raise reader.error("truncated secret-key metadata")
        parms_id, count, scale = reader.unpack(_PT_META)
        primes = layout.key_primes
        if parms_id != layout.key_parms_id:
            raise reader.error("secret key is not at this context's key level")
        if count != degree * len(primes) or scale != 1.0:
            raise reader.error("secret key metadata does not match the key level")
        size, stored = _read_array_head(reader, layout)
        words = _read_array_words(reader, size, stored, count)
        if reader.remaining:
            raise reader.error(f"{reader.remaining} bytes after the secret key")
        _check_coefficients(reader, words, 1, primes, degree)
        return
    raise ValueError(f"unknown SEAL object kind {kind!r}")


#: bytes of a seeded ciphertext's seed record at its end: prng_type (1) | seed (64)
SEED_BYTES = _PRNG_BODY


def seed_of(data: bytes | memoryview) -> bytes:
    """The seed record (``prng_type | seed``, :data:`SEED_BYTES`) of a seeded ciphertext.

    ``data`` must already have passed :func:`check_seal_bytes` with ``seeded=True``: the
    record is then the ciphertext's last bytes.
    """
    return bytes(data[len(data) - _PRNG_BODY :])


def polynomial_words(data: bytes | memoryview, index: int) -> memoryview:
    """The RNS words of polynomial ``index`` of an unseeded ciphertext (zero-copy).

    ``data`` must already have passed :func:`check_seal_bytes` (unseeded): the words follow
    the fixed-size object header, metadata and array header.
    """
    view = memoryview(data)
    _, _, polys, degree, k, _, _ = _CT_META.unpack_from(view, HEADER_BYTES)
    if not 0 <= index < polys or len(view) != _CT_WORDS + 8 * polys * degree * k:
        raise ValueError("polynomial_words needs a checked, unseeded ciphertext")
    start = _CT_WORDS + 8 * index * degree * k
    return view[start : start + 8 * degree * k]


def seeded_zero_bytes(context: Any, parms_id: Any, scale: float, seed: bytes) -> bytes:
    """SEAL bytes of the seeded ciphertext ``(0, a)``: ``a`` expanded from ``seed`` by SEAL.

    Loading them makes SEAL expand ``seed`` (a :data:`SEED_BYTES` record from
    :func:`seed_of`) into the uniform polynomial ``a`` exactly as for the upload the seed
    came from, at the level ``parms_id`` with the given scale.
    """
    layout = _layout(context)
    key = _parms_id_bytes(parms_id)
    primes, _ = layout.levels[key]
    if len(seed) != _PRNG_BODY:
        raise ValueError(f"a seed record is {_PRNG_BODY} bytes")
    degree, k = layout.degree, len(primes)
    major, minor = layout.version
    words = 8 * degree * k
    array = _HEADER.pack(SEAL_MAGIC, HEADER_BYTES, major, minor, COMPR_NONE, 0, HEADER_BYTES + _COUNT.size + words)
    array += _COUNT.pack(degree * k) + bytes(words)
    prng = _HEADER.pack(SEAL_MAGIC, HEADER_BYTES, major, minor, COMPR_NONE, 0, HEADER_BYTES + _PRNG_BODY) + seed
    meta = _CT_META.pack(key, 1, 2, degree, k, scale, 1)
    size = HEADER_BYTES + len(meta) + len(array) + len(prng)
    return _HEADER.pack(SEAL_MAGIC, HEADER_BYTES, major, minor, COMPR_NONE, 0, size) + meta + array + prng


def load_seeded_zero(context: Any, parms_id: Any, scale: float, seed: bytes) -> Any:
    """The ciphertext ``(0, a)`` with ``a`` expanded from ``seed`` by SEAL, loaded.

    The same as loading :func:`seeded_zero_bytes` through :func:`load_from_bytes`, faster:
    the bytes are written once per thread, level and scale to a scratch file of their own,
    and only the 65-byte seed record is rewritten before each load. The record is checked
    here (its PRNG type); every other byte is this module's own.

    Raises:
        MalformedMessageError: an unknown PRNG type, or SEAL refused the seed.
    """
    if len(seed) != _PRNG_BODY or seed[0] not in _PRNG_TYPES:
        raise MalformedMessageError("a seed record has an unknown PRNG type or size")
    templates = getattr(_local, "zero_templates", None)
    if templates is None:
        templates = _local.zero_templates = {}
    key = (id(context), _parms_id_bytes(parms_id), scale)
    entry = templates.get(key)
    if entry is None or entry[0] is not context:
        data = seeded_zero_bytes(context, parms_id, scale, bytes([_PRNG_TYPES[0]]) + bytes(64))
        path = f"{_scratch_path()}.zero{len(templates)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        entry = templates[key] = (context, path, len(data) - _PRNG_BODY)
    _, path, offset = entry
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, seed, offset)
    finally:
        os.close(fd)
    ct = sealapi().Ciphertext(context)
    try:
        ct.load(context, path)
    except (RuntimeError, ValueError, TypeError, MemoryError, IndexError) as exc:
        raise MalformedMessageError(f"SEAL refused a seed ({type(exc).__name__})") from None
    return ct


#: offset of the first coefficient word in a ciphertext's bytes
_CT_WORDS = HEADER_BYTES + _CT_META.size + HEADER_BYTES + _COUNT.size


# ---------------------------------------------------------------------------- own output
def _uncompressed(raw: bytes) -> bytes:
    """Our own SEAL output with its payload decompressed and the header's mode set to none."""
    if len(raw) < HEADER_BYTES:
        raise HEError("SEAL wrote a truncated object")
    magic, header_size, major, minor, compr, reserved, size = _HEADER.unpack_from(raw, 0)
    if magic != SEAL_MAGIC or header_size != HEADER_BYTES or size != len(raw):
        raise HEError("SEAL wrote an object with an unexpected header")
    if compr == COMPR_NONE:
        return raw
    payload = raw[HEADER_BYTES:]
    if compr == 1:
        body = zlib.decompress(payload)
    elif compr == 2:
        body = _zstd_decompress(payload)
    else:
        raise HEError(f"SEAL wrote compression mode {compr}")
    return _HEADER.pack(magic, header_size, major, minor, COMPR_NONE, reserved, HEADER_BYTES + len(body)) + body


_ZSTD_CONTENTSIZE_ERRORS = (2**64 - 1, 2**64 - 2)


@lru_cache(maxsize=1)
def _zstd() -> Any:
    """libzstd's one-shot decoder: the copy linked into TenSEAL's SEAL bindings, else the system's."""
    candidates = []
    module = sys.modules.get("_sealapi_cpp")
    if module is not None and getattr(module, "__file__", None):
        candidates.append(module.__file__)
    found = ctypes.util.find_library("zstd")
    if found:
        candidates.append(found)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            decompress, content_size, is_error = lib.ZSTD_decompress, lib.ZSTD_getFrameContentSize, lib.ZSTD_isError
        except (OSError, AttributeError):
            continue
        content_size.restype = ctypes.c_ulonglong
        content_size.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        decompress.restype = ctypes.c_size_t
        decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
        is_error.restype = ctypes.c_uint
        is_error.argtypes = [ctypes.c_size_t]
        return lib
    raise HEError("SEAL compressed its output with zstd and no libzstd decoder was found to undo it")


def _zstd_decompress(payload: bytes) -> bytes:
    """Decompress one zstd frame that SEAL itself just wrote (never a peer's bytes)."""
    lib = _zstd()
    size = lib.ZSTD_getFrameContentSize(payload, len(payload))
    if size in _ZSTD_CONTENTSIZE_ERRORS or size > 1 << 34:
        raise HEError("SEAL wrote a zstd frame without a usable content size")
    out = ctypes.create_string_buffer(max(int(size), 1))
    got = lib.ZSTD_decompress(out, int(size), payload, len(payload))
    if lib.ZSTD_isError(got) or got != size:
        raise HEError("SEAL's zstd frame did not decompress")
    return out.raw[:got]


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------- runtime
class SealRuntime:
    """The public SEAL objects for one parameter set (no key of any kind)."""

    __slots__ = ("seal", "context", "encoder", "evaluator", "upload_parms_id", "last_parms_id", "primes")

    def __init__(self, poly_modulus_degree: int, coeff_modulus_bits: tuple[int, ...], upload_level: int) -> None:
        seal = sealapi()
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(poly_modulus_degree)
        parms.set_coeff_modulus(seal.CoeffModulus.Create(poly_modulus_degree, list(coeff_modulus_bits)))
        context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
        if not context.parameters_set():
            raise ValueError(f"SEAL refused the parameters: {context.parameters_error_message()}")
        self.seal = seal
        self.context = context
        self.encoder = seal.CKKSEncoder(context)
        self.evaluator = seal.Evaluator(context)
        self.last_parms_id = context.last_parms_id()
        data = context.last_context_data()
        for _ in range(upload_level):
            data = data.prev_context_data()
        self.upload_parms_id = data.parms_id()
        self.primes = tuple(int(m.value()) for m in parms.coeff_modulus())


@lru_cache(maxsize=16)
def _runtime(poly_modulus_degree: int, coeff_modulus_bits: tuple[int, ...], upload_level: int) -> SealRuntime:
    return SealRuntime(poly_modulus_degree, coeff_modulus_bits, upload_level)


def runtime(params: CkksParams) -> SealRuntime:
    """The cached :class:`SealRuntime` of ``params``' modulus chain and upload level."""
    return _runtime(params.poly_modulus_degree, params.coeff_modulus_bits, params.upload_level)
