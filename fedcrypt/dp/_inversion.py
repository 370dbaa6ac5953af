"""Exact inversion sampling of symmetric integer distributions with lazy random bits.

The distributions are the discrete Gaussian ``N_Z(0, sigma^2)`` and the symmetric
Skellam ``Sk(mu, mu)``, both given by their exact CDF ``F``. A sample is
``X = min{k : U < F(k)}`` for ``U`` uniform on ``[0, 1)``, read as an infinite string of
keystream bits of which only as many are revealed as the comparison needs (the
Knuth-Yao / "lazy comparison" argument, Devroye 1986, Ch. XV; Knuth and Yao 1976):

* the first 32 bits ``u`` give ``U`` in ``[u, u + 1) / 2^32``; for the boundary
  ``c_k = floor(F(k) 2^32)``, ``u < c_k`` proves ``U < F(k)`` and ``u > c_k`` proves
  ``U >= F(k)``; only ``u == c_k`` (probability about ``#support / 2^32`` per sample)
  reveals 32 more bits and compares with ``floor(F(k) 2^64)``, then ``2^96``, ... as far
  as needed (the slow path, in Python integers);
* the fast path is a guide table indexed by the top ``g`` bits of ``u``: a cell that
  holds no boundary maps to its answer, a cell that holds one maps to a marker and is
  resolved by a level-2 guide on the next ``h`` bits, then (rarely) by
  ``np.searchsorted`` on the 32-bit boundaries. Samples are produced in chunks of
  ``_WORDS_PER_CALL`` keystream words, looked up in cache-sized blocks of :data:`BLOCK`.

Cost: building a table takes about 20-70 ms at ``sigma = 473`` (the 16-bit ring of a
100-client round) and 1-2 s at ``sigma = 3e4`` to ``5.5e4`` (the size limit of
:data:`fedcrypt.dp.samplers.MAX_TABLE_SUPPORT`), and holds about ``600 sigma`` bytes; at
most four tables per mechanism are cached.

Invariants:

* **exact**: every boundary ``floor(F(k) 2^L)`` is computed in integer arithmetic with a
  rigorous error bound ``|F~ - F| <= 2^-(L + G)`` and accepted only when the whole error
  interval has one floor; otherwise it is recomputed with more guard bits ``G``. No
  float enters ``F``. Given exact boundaries, the output distribution is exactly the
  target: no truncation (the table covers all ``k`` with ``F(k) >= 2^-64`` and
  ``1 - F(k) >= 2^-64``; beyond it the slow path extends the support to all integers),
  no rounding;
* the parameter is the exact rational value of the float given (``Fraction(x)``);
* every random bit comes from the caller's :class:`~fedcrypt.dp._random.CryptoRandom`
  (one ``words32`` word per sample, more words only on a tie), consumed in order and
  never reused;
* tables are cached per parameter (``functools.lru_cache``, small ``maxsize``).

Error bounds (``T(m) = P(X >= m)`` for ``m >= 1``; ``F(k) = T(-k)`` for ``k < 0`` and
``1 - T(k + 1)`` for ``k >= 0`` by symmetry). Each ``_*_tails(param, P)`` returns
integers ``s_m`` and ``Z`` with ``|T(m) - s_m / Z| <= 2^-P`` for every ``m >= 1``:

* discrete Gaussian: ``w_j = exp(-j^2 / (2 sigma^2))`` in fixed point ``2^-M`` by the
  products ``w_{j+1} = w_j r_j``, ``r_{j+1} = r_j q`` (``q = e^{-1/sigma^2}``,
  ``r_0 = e^{-1/(2 sigma^2)}``, both from ``decimal.exp`` to within 2 units). Every
  product is truncated once, so the absolute error of ``w_j`` is below ``2 (j + 1)^2``
  units; the tail beyond ``N`` is below ``w_{N+1} / (1 - r_{N+1})`` (the ratios fall);
  with ``Z >= 1`` the error of ``T / Z`` is below ``4 (A + tail) / 2^M`` where
  ``A = sum of the term errors``, and ``N``, ``M`` are grown until that is ``<= 2^-P``;
* Skellam: ``e^{-x} I_j(x)`` with ``x = 2 mu`` by Miller's backward recurrence
  ``y_{j-1} = y_{j+1} + (2j / x) y_j`` from ``y_{N+1} = 0``, ``y_N = 2^M``, normalised by
  ``y_0 + 2 sum y_j`` (``I_0 + 2 sum I_j = e^x``). The exact recurrence gives
  ``y_j = alpha (I_j - (-1)^{N+1+j} K_j I_{N+1} / K_{N+1})`` and ``K_nu`` grows with
  ``nu``, so ``|y_j / alpha - I_j| <= I_{N+1}``; every step adds positive terms and one
  floor, so the computed values are within relative ``rho = (N + 1) / min(y_N, y_{N-1})``
  of the exact recurrence. With ``B >= P(X > N)`` (Chernoff:
  ``exp(2 mu (cosh t - 1) - t (N + 1))`` for any ``t > 0``, evaluated in 50-digit
  decimal with a margin) the error of ``T / Z`` is below ``3 rho + (4N + 8) B``, and
  ``N``, ``M`` are grown until that is ``<= 2^-P``.
"""

from __future__ import annotations

import decimal
import functools
import math
from fractions import Fraction
from typing import Callable, NamedTuple

import numpy as np

from fedcrypt.dp._random import CryptoRandom

__all__ = ["InversionSampler", "discrete_gaussian_sampler", "skellam_sampler", "support_estimate", "BLOCK"]

#: Samples are produced in blocks of this many coordinates (every temporary in cache).
BLOCK = 1 << 14
#: Bits of the stored boundaries: the fast path uses the top 32, a first tie the rest.
TABLE_BITS = 64
_GUARD = 32
_MAX_GUARD = 4096
_WORD = 32
#: Keystream words drawn per call (one AES-CTR call amortised over several blocks).
_WORDS_PER_CALL = 1 << 18
#: Bits of ``u`` below the guide bits that index a level-2 guide cell.
_LEVEL2_BITS = 4


class _Tails(NamedTuple):
    """``|P(X >= m) - suffix[m] / total| <= 2^-precision`` for every ``m >= 1``.

    ``suffix`` has ``N + 2`` entries (``suffix[m] = 0`` for ``m > N``; index 0 unused).
    """

    suffix: list[int]
    total: int
    precision: int


def _decimal_fixed(value: Fraction, scale_bits: int) -> int:
    """``floor(exp(-value) 2^scale_bits)`` to within 2 units (``value >= 0`` rational)."""
    if value > scale_bits:  # exp(-value) 2^M < (2 / e)^M < 1
        return 0
    digits = int((scale_bits + math.log2(float(value) + 1.0)) * 0.30103) + 12
    with decimal.localcontext() as ctx:
        ctx.prec = digits
        ctx.Emin = -999999999
        arg = decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator)
        # relative error of arg <= 10^(1-digits): exp(-arg) is off by a factor
        # exp(value 10^(1-digits)) <= 1 + 2^-(scale_bits+2), plus half an ulp of exp
        scaled = (-arg).exp() * (decimal.Decimal(2) ** scale_bits)
        return int(scaled)  # truncation: one more unit


def _dg_tails(sigma2: Fraction, precision: int) -> _Tails:
    """Tail sums of ``N_Z(0, sigma2)`` to within ``2^-precision`` (see the module docstring)."""
    n_terms = int(math.sqrt(2.0 * float(sigma2) * (precision + 8) * math.log(2.0))) + 4
    while True:
        err_bits = 3 * max(1, (n_terms + 2).bit_length()) + 4
        scale = precision + err_bits + 4
        one = 1 << scale
        q = _decimal_fixed(1 / sigma2, scale)
        r = _decimal_fixed(1 / (2 * sigma2), scale)
        weights = [one]
        w = one
        for _ in range(n_terms + 1):  # w_1 .. w_{N+1}; r ends as r_{N+1}
            w = (w * r) >> scale
            r = (r * q) >> scale
            weights.append(w)
        # term errors: |w_j err| <= 2 (j+1)^2, |r_j err| <= 4 j + 2 (units 2^-scale)
        term_err = 2 * ((n_terms + 1) * (n_terms + 2) * (2 * n_terms + 3) // 6 - 1)  # sum_{j=1..N} 2 (j+1)^2
        w_next = weights[n_terms + 1] + 2 * (n_terms + 2) ** 2
        r_next = r + 4 * (n_terms + 1) + 2
        if r_next < one:
            tail = -(-w_next * one // (one - r_next)) + 1
            if 4 * (term_err + tail) <= one >> precision:
                break
        n_terms = n_terms + n_terms // 4 + 8
    suffix = [0] * (n_terms + 2)
    acc = 0
    for m in range(n_terms, 0, -1):
        acc += weights[m]
        suffix[m] = acc
    total = one + 2 * acc
    return _Tails(suffix, total, precision)


def _skellam_tail_bound_ok(mu: Fraction, n_terms: int, precision: int) -> bool:
    """Whether ``(4N + 8) P(X > N) <= 2^-(precision + 1)`` by the Chernoff bound."""
    k = n_terms + 1
    log_ratio = math.log(k) - math.log(2.0) - math.log(float(mu))  # log(k / (2 mu)), no overflow
    t = math.asinh(math.exp(log_ratio)) if log_ratio < 700 else log_ratio + math.log(2.0)
    if not (t > 0 and math.isfinite(t)):
        return False
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        D = decimal.Decimal
        t_dec = D(t)  # exact binary value of the float: any t > 0 gives a valid bound
        mu_dec = D(mu.numerator) / D(mu.denominator)
        half = t_dec / 2
        sinh_half = (half.exp() - (-half).exp()) / 2
        exponent = 2 * mu_dec * 2 * sinh_half * sinh_half - t_dec * k  # cosh t - 1 = 2 sinh^2(t/2)
        margin = D("1e-20") * (1 + abs(exponent))
        budget = -(D(precision + 1) * D(2).ln() + D(4 * n_terms + 8).ln())
        return exponent + margin <= budget


def _skellam_tails(mu: Fraction, precision: int) -> _Tails:
    """Tail sums of ``Sk(mu, mu)`` to within ``2^-precision`` (see the module docstring)."""
    a = (precision + 8) * math.log(2.0)
    n_terms = int(math.sqrt(4.0 * float(mu) * a) + a) + 4
    while not _skellam_tail_bound_ok(mu, n_terms, precision):
        n_terms = n_terms + n_terms // 4 + 8
    num, den = mu.numerator, mu.denominator  # 2j / x = j den / num
    extra = max(0, int(math.log2(float(mu) / n_terms + 1.0)) + 2)
    scale = precision + 8 + (n_terms + 2).bit_length() + extra
    while True:
        values = [0] * (n_terms + 2)
        values[n_terms] = 1 << scale
        for j in range(n_terms, 0, -1):
            values[j - 1] = values[j + 1] + (j * den * values[j]) // num
        y_min = min(values[n_terms], values[n_terms - 1]) if n_terms >= 1 else values[0]
        # 3 rho <= 2^-(precision + 1) with rho = (N + 1) / y_min
        if 3 * (n_terms + 1) << (precision + 1) <= y_min:
            break
        scale += 16
    suffix = [0] * (n_terms + 2)
    acc = 0
    for m in range(n_terms, 0, -1):
        acc += values[m]
        suffix[m] = acc
    total = values[0] + 2 * acc
    return _Tails(suffix, total, precision)


def _tail_fixed(tails: _Tails, m: int) -> int:
    """``v = floor(s_m 2^p / Z)``: then ``T(m) 2^p`` lies in ``[v - 1, v + 2)``."""
    suffix = tails.suffix
    s = suffix[m] if m < len(suffix) else 0
    return (s << tails.precision) // tails.total


def _floor_from_tail(v: int, k: int, bits: int, precision: int) -> int | None:
    """``floor(F(k) 2^bits)`` from ``v = _tail_fixed(tails, m)`` (``m = -k`` or ``k + 1``)
    if the interval ``T(m) 2^p in [v - 1, v + 2)`` decides it, else ``None``."""
    guard = precision - bits
    if k < 0:  # F = T(m) in (0, 1)
        lo = max(0, (v - 1) >> guard)
        hi = min((1 << bits) - 1, (v + 2) >> guard)
        return lo if lo == hi else None
    # F = 1 - T(m): floor(2^bits - y) = 2^bits - ceil(y) for y = T 2^bits in (0, 2^bits)
    ceil_lo = max(1, -((1 - v) >> guard))
    ceil_hi = max(1, -((-v - 2) >> guard))
    return (1 << bits) - ceil_lo if ceil_lo == ceil_hi else None


def _certified_floor(tails: _Tails, k: int, bits: int) -> int | None:
    """``floor(F(k) 2^bits)`` if the error interval decides it, else ``None``."""
    m = -k if k < 0 else k + 1
    return _floor_from_tail(_tail_fixed(tails, m), k, bits, tails.precision)


class _ExactCdf:
    """``floor(F(k) 2^bits)`` for every integer ``k`` and ``bits``, exact."""

    def __init__(self, tails_fn: Callable[[int], _Tails]) -> None:
        self._tails_fn = tails_fn
        self._tails: dict[int, _Tails] = {}

    def tails(self, precision: int) -> _Tails:
        found = self._tails.get(precision)
        if found is None:
            found = self._tails_fn(precision)
            if len(self._tails) > 4:
                self._tails.pop(next(iter(self._tails)))
            self._tails[precision] = found
        return found

    def floor_scaled(self, k: int, bits: int, first_guard: int = _GUARD) -> int:
        guard = first_guard
        while guard <= _MAX_GUARD:
            value = _certified_floor(self.tails(bits + guard), k, bits)
            if value is not None:
                return value
            guard *= 2
        # (the candidate k is never named: it is a noise value)
        raise ArithmeticError(f"a CDF boundary at {bits} bits is within 2^-{_MAX_GUARD} of an integer")


def support_estimate(std: float) -> int:
    """About how many boundaries a table holds for a distribution of this std."""
    return 2 * int(std * math.sqrt(2 * (TABLE_BITS + 2) * math.log(2.0))) + 32


class InversionSampler:
    """Exact inversion sampler of a symmetric integer distribution (see the module docstring).

    Math: ``X = min{k : U < F(k)}`` for ``U ~ U[0, 1)`` read lazily 32 bits at a time;
    exact when the boundaries ``floor(F(k) 2^L)`` are, which :class:`_ExactCdf` certifies.

    Threat model: the samples are as unpredictable as the caller's AES-256-CTR keystream.
    The table is public (it depends only on the parameter). Like any rejection sampler,
    the sampling time depends on the noise: on how many of a call's samples take the
    level-2 / search paths (a few percent, mostly values in the tails) and the tie path
    (about ``#support / 2^32`` per sample); a party that can time the call to the
    microsecond learns about that count, not which coordinates or values.

    Attributes:
        kmin: the smallest integer the table holds (``-kmax``).
        boundaries64: ``floor(F(k) 2^64)`` for ``k = kmin..-kmin`` (uint64).
        boundaries32: their top 32 bits, ``floor(F(k) 2^32)`` (uint32).
        guide_bits: ``g``, the number of top bits of ``u`` that index the guide table.
        level2_bits: ``h``, the further bits of ``u`` that index a level-2 cell.
        ambiguous_fraction: the fraction of level-1 cells that hold a boundary.
        searched_fraction: the fraction of level-2 cells that still do.

    Args:
        cdf: the exact CDF.
        guide_bits: ``g`` (default: from the support size, 12..18 for int16 answers,
            up to 20 for int32).
        level2_bits: ``h`` (default 4).
    """

    def __init__(self, cdf: _ExactCdf, guide_bits: int | None = None, level2_bits: int | None = None) -> None:
        self._cdf = cdf
        tails = cdf.tails(TABLE_BITS + _GUARD)
        # kmax: the smallest K with certified T(K + 1) < 2^-64
        s, z, p = tails.suffix, tails.total, tails.precision
        limit = len(s) - 1
        kmax = 0
        for m in range(limit, 0, -1):
            if ((s[m] << p) + z) << TABLE_BITS >= z << p:  # upper bound of T(m) >= 2^-64
                kmax = m
                break
        self.kmin = -kmax
        fixed = [_tail_fixed(tails, m) for m in range(1, kmax + 2)]  # T(m) for m = 1..kmax+1
        values: list[int] = []
        for k in range(-kmax, kmax + 1):
            value = _floor_from_tail(fixed[-k - 1] if k < 0 else fixed[k], k, TABLE_BITS, p)
            if value is None:
                value = cdf.floor_scaled(k, TABLE_BITS, first_guard=2 * _GUARD)
            values.append(value)
        self.boundaries64 = np.array(values, dtype=np.uint64)
        self.boundaries32 = (self.boundaries64 >> np.uint64(TABLE_BITS - _WORD)).astype(np.uint32)
        if int(self.boundaries32[-1]) != (1 << _WORD) - 1:  # F(kmax) > 1 - 2^-64
            raise ArithmeticError("the last boundary must be 2^32 - 1")
        self._build_guide(guide_bits, level2_bits)

    def _build_guide(self, guide_bits: int | None = None, level2_bits: int | None = None) -> None:
        """Two-level guide table over the 32-bit boundaries.

        Level 1 is indexed by the top ``g`` bits of ``u``; a cell without a boundary holds
        its answer, a cell with one holds :attr:`marker` and owns ``2^h`` level-2 cells,
        indexed by the next ``h`` bits, built the same way. A level-2 marker falls back to
        ``np.searchsorted``. Answers are int16 when the support allows (cache footprint).
        """
        b = self.boundaries32.astype(np.uint64)
        size = b.size
        kmax = size - 1 + self.kmin
        dtype = np.int16 if kmax < np.iinfo(np.int16).max else np.int32
        # measured: 2^18 int16 (512 KiB) or 2^20 int32 answers balance cache misses
        # against level-2 lookups best
        cap = 18 if dtype == np.int16 else 20
        g = min(cap, max(12, (size - 1).bit_length() + 6)) if guide_bits is None else guide_bits
        self.marker = int(np.iinfo(dtype).min)  # never an answer: |k| <= kmax < -marker

        def cells(starts: np.ndarray, width_bits: int) -> tuple[np.ndarray, np.ndarray]:
            lo = starts
            hi = lo + np.uint64((1 << width_bits) - 1)
            first = np.searchsorted(b, lo, side="left")  # #boundaries < lo
            past = np.searchsorted(b, hi, side="right")  # #boundaries <= hi
            clean = first == past
            return np.where(clean, first.astype(np.int64) + self.kmin, self.marker).astype(dtype), ~clean

        shift1 = _WORD - g
        level1, ambiguous = cells(np.arange(1 << g, dtype=np.uint64) << np.uint64(shift1), shift1)
        owners = np.flatnonzero(ambiguous)
        h = min(shift1, _LEVEL2_BITS if level2_bits is None else level2_bits)
        shift2 = shift1 - h
        sub = np.arange(1 << h, dtype=np.uint64) << np.uint64(shift2)
        starts2 = ((owners.astype(np.uint64) << np.uint64(shift1))[:, None] + sub[None, :]).reshape(-1)
        level2, ambiguous2 = cells(starts2, shift2)
        offsets = np.zeros(1 << g, dtype=np.int32)
        offsets[owners] = np.arange(owners.size, dtype=np.int32) << h
        self.guide_bits, self.level2_bits = g, h
        self.guide, self.level2, self.level2_offsets = level1, level2, offsets
        self.ambiguous_fraction = float(owners.size) / (1 << g)
        self.searched_fraction = float(np.count_nonzero(ambiguous2)) / (1 << (g + h))
        self._shift = np.uint32(shift1)
        self._shift2 = np.uint32(shift2)
        self._sub_mask = np.uint32((1 << h) - 1)

    # ------------------------------------------------------------------ slow path
    def _floor_scaled(self, k: int, bits: int) -> int:
        if bits <= TABLE_BITS:
            index = k - self.kmin
            if index < 0:
                return 0  # F(k) < 2^-64
            if index >= self.boundaries64.size:
                return (1 << bits) - 1  # 1 - 2^-64 < F(k) < 1
            return int(self.boundaries64[index]) >> (TABLE_BITS - bits)
        return self._cdf.floor_scaled(k, bits)

    def resolve(self, k0: int, prefix: int, rng: CryptoRandom) -> int:
        """The exact sample for a 32-bit ``prefix`` of ``U`` that ties a boundary near ``k0``.

        Reveals further 32-bit words of ``U`` from ``rng`` only while a comparison is
        undecided, then walks ``k`` to ``min{k : U < F(k)}``.
        """
        state = [prefix, _WORD]

        def below(k: int) -> bool:  # U < F(k), exactly
            while True:
                boundary = self._floor_scaled(k, state[1])
                if state[0] != boundary:
                    return state[0] < boundary
                state[0] = (state[0] << _WORD) | int(rng.words32(1)[0])
                state[1] += _WORD

        k = k0
        while below(k - 1):
            k -= 1
        while not below(k):
            k += 1
        return k

    # ------------------------------------------------------------------ fast path
    def sample(self, size: int, rng: CryptoRandom) -> np.ndarray:
        """``size`` int64 samples, drawing one 32-bit word each (more only on ties)."""
        out = np.empty(size, dtype=np.int64)
        guide, marker = self.guide, self.marker
        index = np.empty(min(size, BLOCK), dtype=np.uint32)
        answers = np.empty(min(size, _WORDS_PER_CALL), dtype=guide.dtype)
        for chunk in range(0, size, _WORDS_PER_CALL):
            words = rng.words32(min(size, chunk + _WORDS_PER_CALL) - chunk)
            ans = answers[: words.size]
            for offset in range(0, words.size, BLOCK):  # level 1, cache-sized blocks
                u = words[offset : offset + BLOCK]
                idx = index[: u.size]
                np.right_shift(u, self._shift, out=idx)
                np.take(guide, idx, out=ans[offset : offset + u.size], mode="wrap")  # idx < 2^g: unbuffered
            todo = np.flatnonzero(ans == marker)
            if todo.size:
                self._resolve_level2(words, ans, todo, rng)
            out[chunk : chunk + words.size] = ans
        return out

    def _resolve_level2(self, words: np.ndarray, ans: np.ndarray, todo: np.ndarray, rng: CryptoRandom) -> None:
        u = words[todo]
        slot = self.level2_offsets[u >> self._shift] + ((u >> self._shift2) & self._sub_mask)
        found = self.level2[slot]
        ans[todo] = found
        left = np.flatnonzero(found == self.marker)
        if not left.size:
            return
        b32, kmin = self.boundaries32, self.kmin
        where, ua = todo[left], u[left]
        pos = np.searchsorted(b32, ua, side="left")
        ans[where] = pos + kmin
        for t in np.flatnonzero(b32[pos] == ua):
            ans[where[t]] = self.resolve(int(pos[t]) + kmin, int(ua[t]), rng)


@functools.lru_cache(maxsize=4)
def discrete_gaussian_sampler(sigma2: Fraction) -> InversionSampler:
    """The cached exact sampler of ``N_Z(0, sigma2)``."""
    return InversionSampler(_ExactCdf(functools.partial(_dg_tails, sigma2)))


@functools.lru_cache(maxsize=4)
def skellam_sampler(mu: Fraction) -> InversionSampler:
    """The cached exact sampler of ``Sk(mu, mu)``."""
    return InversionSampler(_ExactCdf(functools.partial(_skellam_tails, mu)))
