"""Prime fields of the VDAF drafts, vectorised with numpy.

A field vector is a 1-D numpy array of canonical representatives in ``[0, q)``:

* ``dtype=uint64`` when ``q < 2^40`` (Field32, Field40). Addition never overflows
  (``2q < 2^41``); a product is reduced in two steps by splitting one factor into 20-bit
  halves, so every intermediate stays below ``2^61``.
* ``dtype=object`` (Python ints) otherwise (Field64, Field128): correct first, measured later.

Invariants:

* every array a :class:`PrimeField` method returns is canonical (each entry in ``[0, q)``)
  and has the field's dtype;
* :meth:`PrimeField.encode_vec` writes each element little-endian in ``ENCODED_SIZE`` bytes
  (draft-irtf-cfrg-vdaf-11, Section 6.1); :meth:`PrimeField.decode_vec` is its strict
  inverse: a length that is not a multiple of ``ENCODED_SIZE``, or an element ``>= q``,
  raises :class:`~fedcrypt.errors.MalformedMessageError` before anything is built;
* ``decode_vec(encode_vec(v)) == v`` and ``encode_vec(decode_vec(b)) == b`` for every
  accepted ``b`` (one encoding per vector).

The fields (modulus, encoded size, generator of the 2-power subgroup used by the NTT):

=========  =======================  =====  ========================  ==========
name       modulus                  bytes  generator                 GEN_ORDER
=========  =======================  =====  ========================  ==========
Field32    4293918721               4      3925978153                2^20
Field40    2^20 * 1048555 + 1       5      7^1048555                 2^20
Field64    2^32 * 4294967295 + 1    8      7^4294967295              2^32
Field128   2^66 * 4611686018427387897 + 1  16  7^4611686018427387897  2^66
=========  =======================  =====  ========================  ==========

Field64 and Field128 are draft-irtf-cfrg-vdaf-11's (Table 3); Field32 and Field40 are the
PINE draft's (draft-chen-cfrg-vdaf-pine, reference parameters of its ``Pine32`` and
``Pine40`` variants).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence, overload

import numpy as np

from fedcrypt.errors import MalformedMessageError

__all__ = [
    "PrimeField",
    "Field32",
    "Field40",
    "Field64",
    "Field128",
    "FIELDS",
    "next_power_of_2",
    "field_by_name",
]

_SMALL_LIMIT = 1 << 40
_HALF_BITS = 20
_HALF_MASK = (1 << _HALF_BITS) - 1
# Sums of at most this many canonical uint64 entries (< 2^40 each) cannot overflow.
_SUM_BLOCK = 1 << 23
# NTT bit-reversal permutations and twiddles, by (modulus, size, root)
_NTT_CACHE: dict[tuple[int, int, int], tuple[np.ndarray, list[np.ndarray]]] = {}


def next_power_of_2(n: int) -> int:
    """The smallest power of two ``>= n`` (``n >= 1``)."""
    if n < 1:
        raise ValueError(f"next_power_of_2 needs n >= 1, got {n}")
    return 1 << (n - 1).bit_length()


@dataclass(frozen=True, slots=True)
class PrimeField:
    """A prime field GF(q) with an NTT-friendly subgroup, operating on numpy vectors.

    Attributes:
        name: the drafts' name (``"Field40"``).
        modulus: the prime ``q``.
        encoded_size: bytes per element on the wire (little-endian).
        generator: generator of the subgroup of order ``gen_order`` (a power of two).
        gen_order: order of ``generator``.
    """

    name: str
    modulus: int
    encoded_size: int
    generator: int
    gen_order: int
    dtype: np.dtype = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.modulus >= 1 << (8 * self.encoded_size):
            raise ValueError(f"{self.name}: modulus does not fit in {self.encoded_size} bytes")
        if pow(self.generator, self.gen_order, self.modulus) != 1 or (pow(self.generator, self.gen_order // 2, self.modulus) == 1):
            raise ValueError(f"{self.name}: generator does not have order {self.gen_order}")
        dtype = np.dtype(np.uint64) if self.modulus < _SMALL_LIMIT else np.dtype(object)
        object.__setattr__(self, "dtype", dtype)

    # ------------------------------------------------------------------ construction
    @property
    def small(self) -> bool:
        """True when vectors are ``uint64`` arrays (``q < 2^40``)."""
        return self.dtype != np.dtype(object)

    def zeros(self, length: int) -> np.ndarray:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if self.small:
            return np.zeros(length, dtype=np.uint64)
        out = np.empty(length, dtype=object)
        out[:] = 0
        return out

    def vec(self, values: Iterable[int]) -> np.ndarray:
        """A field vector from integers (any sign); each is reduced mod ``q``."""
        ints = [int(v) % self.modulus for v in values]
        if self.small:
            return np.array(ints, dtype=np.uint64)
        out = np.empty(len(ints), dtype=object)
        out[:] = ints
        return out

    def to_ints(self, vec: np.ndarray) -> list[int]:
        return [int(v) for v in vec]

    def check(self, vec: np.ndarray) -> np.ndarray:
        """``vec`` as a canonical vector of this field, or ``ValueError``."""
        if not isinstance(vec, np.ndarray) or vec.ndim != 1:
            raise ValueError(f"{self.name}: expected a 1-D numpy array")
        if vec.dtype != self.dtype:
            raise ValueError(f"{self.name}: expected dtype {self.dtype}, got {vec.dtype}")
        if len(vec) and (vec.max() >= self.modulus or (not self.small and vec.min() < 0)):
            raise ValueError(f"{self.name}: element out of range [0, q)")
        return vec

    # ------------------------------------------------------------------ arithmetic
    def add(self, a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
        q = self.modulus
        if self.small:
            return (a + np.uint64(int(b) % q) if isinstance(b, int) else a + b) % np.uint64(q)
        return (a + b) % q

    def sub(self, a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
        q = self.modulus
        if self.small:
            bb = np.uint64(int(b) % q) if isinstance(b, int) else b
            return (a + (np.uint64(q) - bb)) % np.uint64(q)
        return (a - b) % q

    def neg(self, a: np.ndarray) -> np.ndarray:
        if self.small:
            return (np.uint64(self.modulus) - a) % np.uint64(self.modulus)
        return (-a) % self.modulus

    def mul(self, a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
        """Element-wise product (``b`` may be a scalar)."""
        q = self.modulus
        if not self.small:
            return (a * (int(b) % q if isinstance(b, int) else b)) % q
        qq = np.uint64(q)
        if isinstance(b, int):
            b = np.uint64(b % q)
        b_lo = b & np.uint64(_HALF_MASK)
        b_hi = b >> np.uint64(_HALF_BITS)
        high = (a * b_hi) % qq
        return ((high << np.uint64(_HALF_BITS)) + a * b_lo) % qq

    @overload
    def sum(self, a: np.ndarray, axis: None = None) -> int: ...

    @overload
    def sum(self, a: np.ndarray, axis: int) -> np.ndarray: ...

    def sum(self, a: np.ndarray, axis: int | None = None) -> np.ndarray | int:
        """Sum mod ``q`` (over all entries, or along ``axis`` of a 2-D array)."""
        q = self.modulus
        if not self.small:
            total = a.sum(axis=axis) if a.size else (0 if axis is None else self.zeros(a.shape[1 - axis]))
            return total % q if axis is None else np.asarray(total, dtype=object) % q
        qq = np.uint64(q)
        if axis is None:
            acc = 0
            flat = a.reshape(-1)
            for start in range(0, flat.size, _SUM_BLOCK):
                acc = (acc + int(flat[start : start + _SUM_BLOCK].sum(dtype=np.uint64))) % q
            return acc
        n = a.shape[axis]
        sums = np.zeros(a.shape[1 - axis], dtype=np.uint64)
        for start in range(0, n, _SUM_BLOCK):
            part = a[start : start + _SUM_BLOCK] if axis == 0 else a[:, start : start + _SUM_BLOCK]
            sums = (sums + part.sum(axis=axis, dtype=np.uint64) % qq) % qq
        return sums

    def dot(self, a: np.ndarray, b: np.ndarray) -> int:
        return int(self.sum(self.mul(a, b)))

    def inv(self, x: int) -> int:
        x %= self.modulus
        if x == 0:
            raise ZeroDivisionError(f"{self.name}: zero has no inverse")
        return pow(x, self.modulus - 2, self.modulus)

    def powers(self, base: int, length: int) -> np.ndarray:
        """``[1, base, base^2, ..., base^(length-1)]`` (by doubling: one vector product per
        power of two, so the Python loop runs ``log2(length)`` times)."""
        q = self.modulus
        if length <= 0:
            return self.zeros(0)
        out = self.vec([1])
        step = base % q  # base^len(out)
        while len(out) < length:
            take = min(len(out), length - len(out))
            out = np.concatenate([out, self.mul(out[:take], step)]).astype(self.dtype)
            step = step * step % q
        return out

    def powers_rows(self, bases: Sequence[int], length: int) -> np.ndarray:
        """``[k, length]``: row ``j`` is ``powers(bases[j], length)`` (doubling, all rows at once)."""
        q = self.modulus
        k = len(bases)
        out = self.zeros(k).reshape(k, 1)
        out[:] = 1
        if not self.small:
            out = out.astype(object)
        step = self.vec(int(b) % q for b in bases).reshape(k, 1)
        while out.shape[1] < length:
            take = min(out.shape[1], length - out.shape[1])
            out = np.concatenate([out, self.mul(out[:, :take], step)], axis=1).astype(self.dtype)
            step = self.mul(step, step)
        return out[:, :length]

    def root(self, order: int) -> int:
        """A primitive ``order``-th root of unity (``order`` a power of two <= GEN_ORDER)."""
        if order < 1 or order & (order - 1) or order > self.gen_order:
            raise ValueError(f"{self.name}: no subgroup of order {order}")
        return pow(self.generator, self.gen_order // order, self.modulus)

    # ------------------------------------------------------------------ NTT
    def ntt(self, coeffs: np.ndarray, size: int, inverse: bool = False) -> np.ndarray:
        """Evaluate polynomials at ``root(size)^k``, ``k in [0, size)``.

        ``coeffs`` is one polynomial (1-D) or one per row (2-D), lowest degree first,
        zero-padded to ``size``. With ``inverse=True``: the coefficients of the polynomials of
        degree < ``size`` taking the values ``coeffs`` at those points. Iterative radix-2
        Cooley-Tukey, each butterfly layer one numpy operation over all rows.
        """
        one_d = coeffs.ndim == 1
        rows = coeffs.reshape(1, -1) if one_d else coeffs
        if rows.shape[1] > size:
            raise ValueError("more coefficients than evaluation points")
        w = self.root(size)
        if inverse:
            w = self.inv(w)
        a = np.zeros((rows.shape[0], size), dtype=self.dtype)
        if not self.small:
            a[:] = 0
        a[:, : rows.shape[1]] = rows
        rev, twiddles = self._ntt_tables(size, w)
        if len(rev) > 1:
            a = a[:, rev]
        half = 1
        n_rows = a.shape[0]
        for step in twiddles:
            a3 = a.reshape(n_rows, -1, 2 * half)
            even = a3[:, :, :half]
            odd = self.mul(a3[:, :, half:], step)
            a = np.concatenate([self.add(even, odd), self.sub(even, odd)], axis=2).reshape(n_rows, size)
            half *= 2
        if inverse:
            a = self.mul(a, self.inv(size))
        return a[0] if one_d else a

    def _ntt_tables(self, size: int, w: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Bit-reversal permutation and per-layer twiddles of an NTT of ``size`` at root ``w``
        (cached per field, size and root: they are public constants)."""
        key = (self.modulus, size, w)
        tables = _NTT_CACHE.get(key)
        if tables is None:
            bits = size.bit_length() - 1
            idx = np.arange(size)
            rev = np.zeros(size, dtype=np.int64)
            for b in range(bits):
                rev |= ((idx >> b) & 1) << (bits - 1 - b)
            twiddles = []
            half = 1
            while half < size:
                twiddles.append(self.powers(pow(w, size // (2 * half), self.modulus), half))
                half *= 2
            if len(_NTT_CACHE) > 256:
                _NTT_CACHE.clear()
            tables = _NTT_CACHE[key] = (rev, twiddles)
        return tables

    def poly_eval(self, coeffs: np.ndarray, x: int) -> int:
        """Horner evaluation of ``coeffs`` (lowest degree first) at the point ``x``."""
        if len(coeffs) == 0:
            return 0
        return self.dot(coeffs, self.powers(x % self.modulus, len(coeffs)))

    # ------------------------------------------------------------------ bits
    def encode_into_bit_vector(self, value: int, bits: int) -> np.ndarray:
        """The ``bits`` low-order-first bits of ``0 <= value < 2^bits`` as field elements."""
        if value < 0 or bits < 0 or value >> bits:
            raise ValueError(f"value does not fit in {bits} bits")
        return self.vec((value >> i) & 1 for i in range(bits))

    def decode_from_bit_vector(self, bits: np.ndarray) -> int:
        """``sum_l 2^l * bits[l]`` in the field (the bits need not be 0/1: shares)."""
        if self.modulus >> len(bits) == 0:
            raise ValueError(f"{len(bits)} bits exceed the modulus of {self.name}")
        return self.dot(bits, self.vec(1 << i for i in range(len(bits))))

    # ------------------------------------------------------------------ wire
    def encode_vec(self, vec: np.ndarray) -> bytes:
        """Little-endian, ``encoded_size`` bytes per element (VDAF-11 Section 6.1)."""
        n = self.encoded_size
        if self.small:
            raw = np.ascontiguousarray(vec, dtype="<u8").view(np.uint8).reshape(-1, 8)
            return raw[:, :n].tobytes()
        return b"".join(int(x).to_bytes(n, "little") for x in vec)

    def decode_vec(self, data: bytes, length: int | None = None) -> np.ndarray:
        """Strict inverse of :meth:`encode_vec`; ``length`` (elements) if known."""
        n = self.encoded_size
        if len(data) % n:
            raise MalformedMessageError(f"{self.name}: {len(data)} bytes is not a multiple of {n}")
        if length is not None and len(data) != length * n:
            raise MalformedMessageError(f"{self.name}: expected {length} elements ({length * n} bytes), got {len(data)} bytes")
        count = len(data) // n
        if self.small:
            raw = np.zeros((count, 8), dtype=np.uint8)
            raw[:, :n] = np.frombuffer(data, dtype=np.uint8).reshape(count, n)
            out = raw.view("<u8").reshape(-1).astype(np.uint64)
            if count and int(out.max()) >= self.modulus:
                raise MalformedMessageError(f"{self.name}: element >= modulus")
            return out
        ints = [int.from_bytes(data[i : i + n], "little") for i in range(0, len(data), n)]
        if any(x >= self.modulus for x in ints):
            raise MalformedMessageError(f"{self.name}: element >= modulus")
        out = np.empty(count, dtype=object)
        out[:] = ints
        return out


def _field(name: str, modulus: int, size: int, base: int, exponent: int, order: int) -> PrimeField:
    return PrimeField(name, modulus, size, pow(base, exponent, modulus), order)


Field32 = PrimeField("Field32", 4293918721, 4, 3925978153, 1 << 20)
Field40 = _field("Field40", (1 << 20) * 1048555 + 1, 5, 7, 1048555, 1 << 20)
Field64 = _field("Field64", (1 << 32) * 4294967295 + 1, 8, 7, 4294967295, 1 << 32)
Field128 = _field("Field128", (1 << 66) * 4611686018427387897 + 1, 16, 7, 4611686018427387897, 1 << 66)

#: by name, as the test vectors' ``"field"`` key spells it
FIELDS: dict[str, PrimeField] = {f.name: f for f in (Field32, Field40, Field64, Field128)}


def field_by_name(name: str) -> PrimeField:
    try:
        return FIELDS[name]
    except KeyError:
        raise ValueError(f"unknown field {name!r}; known: {sorted(FIELDS)}") from None
