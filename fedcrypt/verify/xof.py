"""Extendable-output functions (XOFs) of the VDAF drafts.

The interface is draft-irtf-cfrg-vdaf-11, Section 6.2: an XOF is built from a seed, a domain
separation tag ``dst`` and a binder string, and then streams bytes with ``next(n)``; the derived
operations ``next_vec`` (rejection sampling of field elements), ``derive_seed`` and
``expand_into_vec`` are defined once on :class:`Xof`.

Implemented here:

* :class:`XofHmacSha256Aes128` (the PINE draft's XOF, ``SEED_SIZE = 32``)::

      h = HMAC-SHA256(key=seed, msg=len(dst) as one byte || dst || binder)
      stream = AES-128-CTR(key=h[0:16], initial counter block=h[16:32]) over zero bytes

  from ``cryptography``'s HMAC and AES-CTR. The 16-byte counter block is ``h[16:24]``
  (nonce) followed by ``h[24:32]`` (initial value of a big-endian block counter).
  ``cryptography`` carries a counter overflow into the nonce half where the PINE reference
  (PyCryptodome, 8-byte counter) refuses to wrap; the streams differ only past
  ``2^64 - int(h[24:32])`` blocks, which no PINE parameter set reaches with more than
  negligible probability (see :data:`MAX_STREAM_BYTES`).

Not implemented: ``XofTurboShake128`` (the VDAF draft's default, used by the PINE variants
``Pine64`` and ``Pine128``). TurboSHAKE128 (Keccak-p[1600, 12 rounds]) is neither in
``hashlib`` nor in ``cryptography``; those variants are therefore not offered, and their test
vectors are not checked. :data:`XOFS` names what is available.

Invariants: a seed of the wrong length raises ``ValueError``; the seed is never stored (only
the derived AES key inside the cipher context) and never appears in ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedcrypt.crypto import Secret

from .field import PrimeField, next_power_of_2

__all__ = ["Xof", "XofHmacSha256Aes128", "XOFS", "MAX_STREAM_BYTES"]

#: A single XOF instance refuses to stream more than this (2^40 bytes).
MAX_STREAM_BYTES = 1 << 40


def _raw(seed: bytes | Secret) -> bytes:
    return seed.reveal() if isinstance(seed, Secret) else bytes(seed)


class Xof:
    """Base class: ``next`` is the primitive; the rest is derived (VDAF-11 Section 6.2)."""

    SEED_SIZE: int = 0
    NAME: str = ""

    def next(self, length: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def next_vec(self, field: PrimeField, length: int) -> np.ndarray:
        """The next ``length`` field elements by rejection sampling.

        Each candidate is the next ``field.encoded_size`` bytes, little-endian, masked to
        ``next_power_of_2(q) - 1`` bits; candidates ``>= q`` are dropped. Candidates are drawn
        in batches of exactly the number still missing, so the bytes consumed are those of the
        one-at-a-time algorithm.
        """
        n = field.encoded_size
        mask = next_power_of_2(field.modulus) - 1
        parts: list[np.ndarray] = []
        missing = length
        while missing > 0:
            data = self.next(missing * n)
            if field.small:
                raw = np.zeros((missing, 8), dtype=np.uint8)
                raw[:, :n] = np.frombuffer(data, dtype=np.uint8).reshape(missing, n)
                cand = raw.view("<u8").reshape(-1).astype(np.uint64) & np.uint64(mask)
                kept = cand[cand < np.uint64(field.modulus)]
            else:
                ints = [int.from_bytes(data[i : i + n], "little") & mask for i in range(0, len(data), n)]
                kept = field.vec(x for x in ints if x < field.modulus)
            parts.append(kept)
            missing -= len(kept)
        if not parts:
            return field.zeros(0)
        return np.concatenate(parts).astype(field.dtype)

    @classmethod
    def derive_seed(cls, seed: bytes | Secret, dst: bytes, binder: bytes) -> bytes:
        return cls(seed, dst, binder).next(cls.SEED_SIZE)

    @classmethod
    def expand_into_vec(cls, field: PrimeField, seed: bytes | Secret, dst: bytes, binder: bytes, length: int) -> np.ndarray:
        return cls(seed, dst, binder).next_vec(field, length)

    def __init__(self, seed: bytes | Secret, dst: bytes, binder: bytes) -> None:  # pragma: no cover
        raise NotImplementedError


class XofHmacSha256Aes128(Xof):
    """HMAC-SHA256 to derive an AES-128-CTR key and counter block, then the keystream.

    The PINE draft's ``XofHmacSha256Aes128`` (draft-chen-cfrg-vdaf-pine, reference
    parameters), a faster alternative to TurboSHAKE128 where AES is in hardware.
    """

    SEED_SIZE = 32
    NAME = "HmacSha256Aes128"
    __slots__ = ("_encryptor", "_consumed")

    def __init__(self, seed: bytes | Secret, dst: bytes, binder: bytes) -> None:
        raw = _raw(seed)
        if len(raw) != self.SEED_SIZE:
            raise ValueError(f"XofHmacSha256Aes128 seed must be {self.SEED_SIZE} bytes, got {len(raw)}")
        if len(dst) > 255:
            raise ValueError("domain separation tag longer than 255 bytes")
        mac = hmac.new(raw, digestmod=hashlib.sha256)
        mac.update(bytes([len(dst)]))
        mac.update(dst)
        mac.update(binder)
        digest = mac.digest()
        cipher = Cipher(algorithms.AES(digest[:16]), modes.CTR(digest[16:32]))
        self._encryptor = cipher.encryptor()
        self._consumed = 0

    def next(self, length: int) -> bytes:
        if length < 0:
            raise ValueError("length must be >= 0")
        if self._consumed + length > MAX_STREAM_BYTES:
            raise ValueError("XOF stream limit reached")
        self._consumed += length
        return self._encryptor.update(bytes(length))

    def __repr__(self) -> str:
        return f"<XofHmacSha256Aes128 consumed={self._consumed}>"


#: XOFs available here, by the name used in the PINE variant names.
XOFS: dict[str, type[Xof]] = {XofHmacSha256Aes128.NAME: XofHmacSha256Aes128}
