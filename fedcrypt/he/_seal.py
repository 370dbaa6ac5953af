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
* every SEAL exception raised while loading untrusted bytes becomes
  :class:`~fedcrypt.errors.MalformedMessageError`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from functools import lru_cache
from types import ModuleType
from typing import Any

from fedcrypt._optional import require
from fedcrypt.errors import MalformedMessageError
from fedcrypt.he.params import CkksParams

__all__ = ["sealapi", "SealRuntime", "runtime", "save_bytes", "load_from_bytes"]


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
    """Serialise a SEAL object (or a ``Serializable``) to bytes with SEAL's own format."""
    path = _scratch_path()
    try:
        obj.save(path)
        with open(path, "rb") as handle:
            return handle.read()
    finally:
        _remove(path)


def load_from_bytes(obj: Any, context: Any, data: bytes, what: str) -> Any:
    """Load SEAL bytes into ``obj`` (validated by SEAL against ``context``); returns ``obj``.

    Raises:
        MalformedMessageError: SEAL refused the bytes (bad header, size, data or params).
    """
    path = _scratch_path()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            obj.load(context, path)
        except (RuntimeError, ValueError, TypeError, MemoryError) as exc:
            raise MalformedMessageError(f"{what}: SEAL refused the bytes ({type(exc).__name__})") from None
    finally:
        _remove(path)
    return obj


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
