"""Fixed-point encoding of a float vector into PINE's integers, and decoding of a sum.

A client's flat float vector (laid out by the config's :class:`~fedcrypt.vectors.TensorSpec`)
becomes integers ``round(w/M * clip(x) * 2^f)`` whose L2 norm is at most
``B = floor(l2_norm_bound * 2^f)``; the aggregators verify exactly that bound.

Invariants:

* :func:`encode_vector` returns int64 integers with ``sum(v^2) <= B^2``, computed exactly
  (each ``|v_i| <= B < 2^31``, so the squares and their sum fit int64), or raises
  :class:`~fedcrypt.errors.EncodingError`: a NaN or infinite entry, or (``clip=False``) a
  vector whose norm exceeds ``l2_norm_bound``;
* rounding is to nearest (ties to even) after clipping to ``B / 2^f``; when rounding
  pushes the integer norm above ``B`` (at most by ``sqrt(d)/2``), the scaled vector is
  rounded toward zero instead (``|trunc(y)| <= |y|``), and any excess left by float error
  is removed one unit at a time from the largest entries: deterministic, and the result is
  within one unit per entry of the scaled vector (two where float error forced such a step,
  which needs ``B^2`` near ``2^53``);
* :func:`decode_sum` maps field elements above ``floor(q/2)`` to negative integers and
  divides by ``2^f``; it is exact for sums whose integers lie in ``(-q/2, q/2)``, which the
  config guarantees for ``max_reports`` reports and the noise.
"""

from __future__ import annotations

import math

import numpy as np

from fedcrypt.dp.clipping import clip_l2
from fedcrypt.errors import EncodingError
from fedcrypt.vectors import check_float_vector

from .field import PrimeField

__all__ = ["encode_vector", "to_field", "decode_sum", "squared_norm"]


def squared_norm(ints: np.ndarray) -> int:
    """``sum(v^2)`` of an int64 vector, exactly (as a Python int)."""
    v = ints.astype(np.int64, copy=False)
    if len(v) == 0:
        return 0
    peak = int(np.max(np.abs(v)))
    if peak < 1 << 31 and peak * peak * len(v) < 1 << 63:
        return int(np.dot(v, v))
    return sum(int(x) * int(x) for x in v)


def encode_vector(vector: np.ndarray, *, bound: float, frac_bits: int, bound_int: int, weight: float = 1.0, clip: bool = True) -> np.ndarray:
    """``round(weight * clip(x) * 2^f)`` as int64 with L2 norm at most ``bound_int``.

    Args:
        vector: 1-D float vector.
        bound: the L2 bound in floats (``l2_norm_bound``).
        frac_bits: ``f``.
        bound_int: ``B = floor(bound * 2^f)``.
        weight: a factor in ``(0, 1]`` applied after clipping.
        clip: clip to ``B / 2^f``; with ``False`` a norm above ``bound`` is refused.

    Raises:
        EncodingError: a NaN or infinite entry, a weight outside ``(0, 1]``, or (without
            ``clip``) a norm above the bound.
    """
    x = check_float_vector(vector).astype(np.float64)
    if not np.isfinite(x).all():
        raise EncodingError("the vector has a NaN or infinite entry")
    if not (0.0 < weight <= 1.0):
        raise EncodingError(f"the weight factor must be in (0, 1], got {weight!r}")
    target = math.ldexp(bound_int, -frac_bits)  # <= bound, exactly representable
    if len(x):
        clipped, norm = clip_l2(x, target)
        if not clip and norm > bound:
            raise EncodingError("the vector's L2 norm exceeds l2_norm_bound (clip=False)")
        x = clipped
    scaled = np.ldexp(x * weight, frac_bits)
    ints = np.rint(scaled).astype(np.int64)
    limit = bound_int * bound_int
    if squared_norm(ints) > limit:
        ints = np.trunc(scaled).astype(np.int64)
        excess = squared_norm(ints) - limit
        while excess > 0:  # float error only: a few units at most
            i = int(np.argmax(np.abs(ints)))
            step = -1 if ints[i] > 0 else 1
            excess -= 2 * abs(int(ints[i])) - 1
            ints[i] += step
    return ints


def to_field(field: PrimeField, ints: np.ndarray) -> np.ndarray:
    """Signed int64 integers as canonical field elements (negatives wrap mod ``q``)."""
    if field.small:
        return (ints.astype(np.int64) % np.int64(field.modulus)).astype(np.uint64)
    return field.vec(int(v) for v in ints)


def decode_sum(field: PrimeField, values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Field elements to float64: above ``floor(q/2)`` negative; divided by ``2^f``."""
    q = field.modulus
    if field.small:
        v = values.astype(np.uint64)
        signed = v.astype(np.int64) - np.where(v > np.uint64(q // 2), np.int64(q), np.int64(0))
        return np.ldexp(signed.astype(np.float64), -frac_bits)
    ints = [int(v) - q if int(v) > q // 2 else int(v) for v in values]
    return np.array([math.ldexp(float(v), -frac_bits) for v in ints], dtype=np.float64)
