"""Noise samplers driven by :class:`~fedcrypt.dp._random.CryptoRandom`, vectorised.

Integer samplers (used in the ring, for distributed DP):

* :func:`discrete_gaussian` and :func:`skellam` with ``method="inversion"`` (what
  ``method="auto"``, the default, picks whenever the table fits, and therefore what
  :mod:`fedcrypt.dp.distributed` uses): exact inversion sampling with lazy random bits
  against the exact CDF (:mod:`fedcrypt.dp._inversion`), one 32-bit keystream word per
  sample plus more only on a tie;
* :func:`discrete_gaussian` with ``method="cks"``: Canonne, Kamath, Steinke (NeurIPS
  2020), Algorithm 3 (rejection from a discrete Laplace with scale
  ``t = floor(sigma) + 1``), and :func:`discrete_laplace`, their Algorithm 2;
* :func:`skellam` with ``method="poisson"``: the difference of two independent Poissons
  (Agarwal, Kairouz, Liu 2021), :func:`poisson` being inversion for ``lam < 10`` and
  Hoermann's PTRS transformed rejection (Insurance: Math. and Econ. 1993) above.

and :func:`gaussian` (Box-Muller) for the central mechanism on floats.

Invariants:

* every random bit comes from the caller's :class:`CryptoRandom` (AES-256-CTR); numpy's
  generators are never used;
* ``method="inversion"`` is exact: its output is distributed exactly as
  ``N_Z(0, sigma2)`` / ``Sk(mu, mu)`` for the exact rational value of the float
  parameter (certified integer CDF boundaries, lazy comparison, unbounded support; see
  :mod:`fedcrypt.dp._inversion`). It needs a table of about ``19 sigma`` boundaries, so
  ``"auto"`` uses it while that is at most :data:`MAX_TABLE_SUPPORT` entries
  (``sigma`` up to about 5.5e4; building a table takes about 20-70 ms at ``sigma`` = 473,
  about 1-2 s at ``sigma`` = 3e4, and is cached per parameter);
* the rejection samplers (``"cks"``, ``"poisson"``, and ``"auto"`` beyond that size)
  decide accept/reject in float64: every decision (and each step of the geometric count,
  done by inverting one uniform against ``P(V >= j) = e^-j``) compares a 53-bit uniform
  with a threshold evaluated in float64 (Poisson's log-probability in Loader's
  saddle-point form, whose error does not grow with ``lam``: the textbook
  ``-lam + k log lam - log k!`` is off by up to 5e-6 at ``lam`` = 1e9, 4e-3 at 1e12
  and 6 at 1e15), so
  each such probability is off by at most about 2^-50 and the output is within total
  variation of about
  ``(decisions per sample) * 2^-50`` of the ideal one per coordinate, below 2^-38 for
  ``1e6`` coordinates. ``randbelow`` and the signs are exact. :func:`gaussian` is a
  float sampler (central mechanism only);
* sampling runs in blocks of :data:`BLOCK` coordinates so every temporary stays in cache;
* outputs are int64 arrays of exactly the requested size, vectorised in batches: the
  Python loop runs over blocks and rejection rounds, never over coordinates (the
  inversion sampler's tie path, about ``#support / 2^32`` of the samples, excepted).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal, TypeVar

import numpy as np

from fedcrypt.dp import _inversion
from fedcrypt.dp._random import CryptoRandom

__all__ = [
    "discrete_laplace",
    "discrete_gaussian",
    "poisson",
    "skellam",
    "gaussian",
    "MAX_TABLE_SUPPORT",
    "MAX_POISSON_LAM",
    "MAX_SKELLAM_MU",
]

#: ``method="auto"`` samples exactly by inversion while the table of CDF boundaries
#: would hold at most this many entries (about ``19 sigma``).
MAX_TABLE_SUPPORT = 1 << 20
#: the largest mean :func:`poisson` takes (its float64 arithmetic is exact on integers below 2^53)
MAX_POISSON_LAM = 2.0**52
#: the largest ``mu`` :func:`skellam` takes (larger than any local noise of a 32-bit ring)
MAX_SKELLAM_MU = 2.0**62


_M = TypeVar("_M", bound=str)


def _method(method: _M, choices: tuple[str, ...]) -> _M:
    if method not in choices:
        raise ValueError(f"method must be one of {choices}, got {method!r}")
    return method


def _use_inversion(method: str, std: float, name: str) -> bool:
    """Whether to sample by exact inversion; ``"inversion"`` beyond the size limit raises."""
    fits = _inversion.support_estimate(std) <= MAX_TABLE_SUPPORT
    if method == "inversion" and not fits:
        raise ValueError(
            f"{name} is too large for method='inversion' (a table of about "
            f"{_inversion.support_estimate(std)} > {MAX_TABLE_SUPPORT} boundaries); use method='auto'"
        )
    return method == "inversion" or (method == "auto" and fits)


_EXP_M1 = math.exp(-1.0)


#: Samples are produced in blocks of this many coordinates: every temporary stays small
#: (cache-resident, no fresh page-faulting allocation per numpy call).
BLOCK = 1 << 14


def _blocked(size: int, fill) -> np.ndarray:
    out = np.empty(size, dtype=np.int64)
    for start in range(0, size, BLOCK):
        stop = min(size, start + BLOCK)
        out[start:stop] = fill(stop - start)
    return out


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return int(size)


def _source(rng: CryptoRandom | None) -> CryptoRandom:
    if rng is None:
        return CryptoRandom()
    if not isinstance(rng, CryptoRandom):
        raise TypeError(f"rng must be a CryptoRandom, got {type(rng).__name__}")
    return rng


_GEOMETRIC_DEPTH = 40
#: ceil(e^-j 2^53) for j = DEPTH..1 (ascending): V >= j  <=>  k < threshold_j
_GEOMETRIC_THRESHOLDS = CryptoRandom.thresholds(np.exp(-np.arange(_GEOMETRIC_DEPTH, 0, -1, dtype=np.float64)))


def _geometric_exp_m1(n: int, rng: CryptoRandom) -> np.ndarray:
    """``V`` with ``P(V >= j) = e^-j``: the number of successes of Bernoulli(e^-1) trials
    before the first failure (CKS Algorithm 2's loop), by inversion of one 53-bit uniform.

    ``V = #{j in 1..40 : k < ceil(e^-j 2^53)}`` for a uniform ``k`` on ``[0, 2^53)``, so
    ``P(V >= j)`` is ``e^-j`` up to the 2^-53 grid, like one Bernoulli trial per ``j``; a
    value of 40 continues with a fresh draw (memorylessness), so the support is unbounded.
    """
    k = rng.words64(n) >> np.uint64(11)
    count = _GEOMETRIC_DEPTH - np.searchsorted(_GEOMETRIC_THRESHOLDS, k, side="right").astype(np.int64)
    deep = np.flatnonzero(count == _GEOMETRIC_DEPTH)
    if deep.size:
        count[deep] += _geometric_exp_m1(deep.size, rng)
    return count


_TABLE_LIMIT = 1 << 20  # acceptance-threshold tables up to 8 MiB; larger scales compute per sample


def _laplace_thresholds(t: int) -> np.ndarray | None:
    """Thresholds of D ~ Bernoulli(exp(-U/t)) for U = 0..t-1, or None if t is too large."""
    if t > _TABLE_LIMIT:
        return None
    return CryptoRandom.thresholds(np.exp(-np.arange(t, dtype=np.float64) / t))


def _discrete_laplace_proposals(t: int, n: int, rng: CryptoRandom, table: np.ndarray | None) -> np.ndarray:
    """One round of CKS Algorithm 2 on ``n`` candidates; returns the accepted samples."""
    u = rng.randbelow(t, size=n)
    if table is not None:
        keep = rng.bernoulli_below(table[u])  # D ~ Bernoulli(exp(-U/t)), thresholds precomputed
    else:
        keep = rng.bernoulli(np.exp(-u / t))
    u = u[keep]
    v = _geometric_exp_m1(u.size, rng)
    x = u + t * v
    negative = rng.bits(u.size)
    ok = ~(negative & (x == 0))  # (Y = 1, X = 0) is rejected so that 0 is not counted twice
    return np.where(negative, -x, x)[ok]


def _discrete_laplace(t: int, size: int, rng: CryptoRandom, table: np.ndarray | None) -> np.ndarray:
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        need = size - filled
        got = _discrete_laplace_proposals(t, int(need * 1.6) + 16, rng, table)[:need]
        out[filled : filled + got.size] = got
        filled += got.size
    return out


def discrete_laplace(t: int, size: int, rng: CryptoRandom | None = None) -> np.ndarray:
    """Samples of the discrete Laplace ``P(x) ∝ exp(-|x| / t)`` on the integers.

    Args:
        t: integer scale, ``>= 1``.
        size: number of samples.
        rng: the randomness source (a fresh :class:`CryptoRandom` if ``None``).

    Returns:
        int64 array of shape ``(size,)``.
    """
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
        raise TypeError(f"t must be an int, got {type(t).__name__}")
    if not 1 <= t < 1 << 32:
        raise ValueError(f"t must be in [1, 2^32), got {t}")
    size = _check_size(size)
    rng = _source(rng)
    table = _laplace_thresholds(int(t))
    return _blocked(size, lambda n: _discrete_laplace(int(t), n, rng, table))


def discrete_gaussian(
    sigma2: float,
    size: int,
    rng: CryptoRandom | None = None,
    *,
    method: Literal["auto", "inversion", "cks"] = "auto",
) -> np.ndarray:
    """Samples of the discrete Gaussian ``N_Z(0, sigma2)``: ``P(x) ∝ exp(-x^2 / (2 sigma2))``.

    ``method="inversion"``: exact inversion of the exact CDF with lazy random bits (one
    32-bit word per sample; see :mod:`fedcrypt.dp._inversion`), for tables up to
    :data:`MAX_TABLE_SUPPORT` boundaries. ``method="cks"``: CKS 2020 Algorithm 3: propose
    ``Y`` from the discrete Laplace with ``t = floor(sigma)+1``, accept with probability
    ``exp(-(|Y| - sigma2/t)^2 / (2 sigma2))`` (expected proposals per sample below
    ``1 + 2/sqrt(e)``; float64 decisions, see the module docstring). ``"auto"`` (default):
    inversion when the table fits, otherwise CKS.

    Note: ``sigma2`` is the parameter of the distribution; the variance of ``N_Z(0, s2)``
    is at most ``s2`` and within ``1e-6`` relative of it once ``s2 >= 1`` (CKS Prop. 1.6).

    Args:
        sigma2: ``sigma^2 > 0`` (finite, at most 2^62, so that ``t < 2^32``).
        size: number of samples.
        rng: the randomness source (a fresh :class:`CryptoRandom` if ``None``).
        method: ``"auto"``, ``"inversion"`` or ``"cks"``.

    Returns:
        int64 array of shape ``(size,)``.
    """
    sigma2 = float(sigma2)
    if not (math.isfinite(sigma2) and 0 < sigma2 <= 2.0**62):
        raise ValueError(f"sigma2 must be finite and in (0, 2^62], got {sigma2}")
    method = _method(method, ("auto", "inversion", "cks"))
    size = _check_size(size)
    rng = _source(rng)
    if _use_inversion(method, math.sqrt(sigma2), "sigma2"):
        return _inversion.discrete_gaussian_sampler(Fraction(sigma2)).sample(size, rng)
    t = math.floor(math.sqrt(sigma2)) + 1
    laplace_table = _laplace_thresholds(t)
    # Acceptance thresholds of C for |Y| below a table bound (|Y| beyond it is rare: the
    # proposal's tail; those are computed per sample with the same formula).
    bound = min(_TABLE_LIMIT, 64 * t)
    magnitudes = np.arange(bound, dtype=np.float64)
    accept_table = CryptoRandom.thresholds(np.exp(-((magnitudes - sigma2 / t) ** 2) / (2.0 * sigma2)))

    def block(n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            need = n - filled
            y = _discrete_laplace(t, int(need * 1.35) + 16, rng, laplace_table)
            magnitude = np.abs(y)
            if int(magnitude.max(initial=0)) < bound:
                accept = rng.bernoulli_below(accept_table[magnitude])
            else:
                accept = rng.bernoulli(np.exp(-((magnitude - sigma2 / t) ** 2) / (2.0 * sigma2)))
            got = y[accept][:need]
            out[filled : filled + got.size] = got
            filled += got.size
        return out

    return _blocked(size, block)


# ------------------------------------------------------------------------- Poisson
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
#: Stirling's error ``log(k!) - ((k + 1/2) log k - k + log(2 pi) / 2)`` for k = 1..63 (index 0 unused)
_STIRLERR_TABLE = np.array([0.0] + [math.lgamma(k + 1) - (k + 0.5) * math.log(k) + k - _HALF_LOG_2PI for k in range(1, 64)])
_BD0_TERMS = 12


def _stirlerr(k: np.ndarray) -> np.ndarray:
    """Stirling's error of ``log(k!)`` for float ``k >= 1``: a table below 64, the series above.

    The series truncation error for ``k >= 64`` is below ``1/(1680 k^7) < 1e-15``.
    """
    out = np.empty(k.shape, dtype=np.float64)
    small = k < 64
    out[small] = _STIRLERR_TABLE[k[small].astype(np.int64)]
    inv = 1.0 / k[~small]
    inv2 = inv * inv
    out[~small] = inv * (1 / 12 - inv2 * (1 / 360 - inv2 / 1260))
    return out


def _bd0(x: np.ndarray, delta: np.ndarray, lam: float) -> np.ndarray:
    """``x log(x / lam) + lam - x`` for ``x = lam + delta > 0``, without cancellation.

    Loader (2000), "Fast and accurate computation of binomial probabilities": where
    ``|delta| < 0.1 (x + lam)`` the series ``sum_j 2 x v^(2j+1) / (2j + 1) - delta v`` in
    ``v = delta / (x + lam)`` (|v| < 0.1, so 12 terms reach 1e-24 relative); elsewhere the
    direct form, which has no cancellation there.
    """
    near = np.abs(delta) < 0.1 * (x + lam)
    out = np.empty(delta.shape, dtype=np.float64)
    d, xn = delta[near], x[near]
    v = d / (xn + lam)  # |v| < 0.1
    series = d * v
    term = 2.0 * xn * v
    v2 = v * v
    for j in range(1, _BD0_TERMS + 1):
        term = term * v2
        series = series + term / (2 * j + 1)
    out[near] = series
    d, xf = delta[~near], x[~near]
    out[~near] = xf * np.log(xf / lam) + (lam - xf)
    return out


def _poisson_log_pmf(k: np.ndarray, delta: np.ndarray, lam: float) -> np.ndarray:
    """``log P(X = k)`` for ``X ~ Poisson(lam)``, ``k = lam + delta`` (floats, ``k >= 0``).

    ``-stirlerr(k) - bd0(k, lam) - log(2 pi k) / 2`` (Loader 2000): every term is O(1) to
    O(log lam), so the error stays at a few float64 ulps of O(1) for any ``lam``, where
    the textbook ``-lam + k log lam - log k!`` subtracts numbers near ``lam log lam``.
    """
    out = np.full(k.shape, -lam, dtype=np.float64)  # k = 0
    pos = k > 0
    kp = k[pos]
    out[pos] = -_stirlerr(kp) - _bd0(kp, delta[pos], lam) - 0.5 * np.log(kp) - _HALF_LOG_2PI
    return out


def _poisson_inversion(lam: float, n: int, rng: CryptoRandom) -> np.ndarray:
    """Sequential-search inversion of the Poisson CDF (for ``lam < 10``)."""
    u = rng.uniform53(n)
    k = np.zeros(n, dtype=np.int64)
    p = np.full(n, math.exp(-lam))
    cdf = p.copy()
    active = np.flatnonzero(u > cdf)
    while active.size:
        k[active] += 1
        p[active] *= lam / k[active]
        cdf[active] += p[active]
        still = u[active] > cdf[active]
        # float64 CDF can stall just below 1 in the far tail; p underflows to 0 there.
        still &= p[active] > 0
        active = active[still]
    return k


def _poisson_ptrs(lam: float, n: int, rng: CryptoRandom) -> np.ndarray:
    """Hoermann's PTRS transformed rejection (``lam >= 10``), vectorised over ``n``.

    The candidate ``k = floor(x + lam + 0.43)`` is formed as ``floor(lam) + floor(x + 0.43 +
    frac(lam))``, so it does not lose the fraction once ``lam`` passes 2^40 or so, and the
    acceptance test uses :func:`_poisson_log_pmf`, accurate for every ``lam``.
    """
    slam = math.sqrt(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    log_invalpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2)
    lam_floor = math.floor(lam)
    lam_frac = lam - lam_floor  # exact
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        m = int((n - filled) * 1.15) + 16
        u = rng.uniform53(m) - 0.5
        v = rng.uniform53(m)
        us = 0.5 - np.abs(u)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            offset = np.floor((2 * a / us + b) * u + (0.43 + lam_frac))  # k - floor(lam), integral
        quick = (us >= 0.07) & (v <= vr)
        # k < 0, or k so far out (beyond 2^61) that its probability is below e^-(2^60)
        outside = ~(offset >= -lam_floor) | ~(offset <= 2.0**61)
        reject = outside | ((us < 0.013) & (v > us))
        offset = np.where(outside, 0.0, offset)
        accept = quick & ~outside
        # The exact (slow) test only for the ~15% that are neither quick nor rejected.
        slow = np.flatnonzero(~quick & ~reject)
        off_s, us_s = offset[slow], us[slow]
        accept[slow] = np.log(v[slow]) + log_invalpha - np.log(a / (us_s * us_s) + b) <= _poisson_log_pmf(lam_floor + off_s, off_s - lam_frac, lam)
        got = (offset[accept].astype(np.int64) + lam_floor)[: n - filled]
        out[filled : filled + got.size] = got
        filled += got.size
    return out


def poisson(lam: float, size: int, rng: CryptoRandom | None = None) -> np.ndarray:
    """Samples of Poisson(``lam``) as int64.

    Args:
        lam: mean, ``0 <= lam <= 2^52``.
        size: number of samples.
        rng: the randomness source (a fresh :class:`CryptoRandom` if ``None``).
    """
    lam = float(lam)
    if not (math.isfinite(lam) and 0 <= lam <= MAX_POISSON_LAM):
        raise ValueError(f"lam must be finite and in [0, 2^52], got {lam}")
    size = _check_size(size)
    rng = _source(rng)
    if lam == 0 or size == 0:
        return np.zeros(size, dtype=np.int64)
    if lam < 10:
        return _blocked(size, lambda n: _poisson_inversion(lam, n, rng))
    return _blocked(size, lambda n: _poisson_ptrs(lam, n, rng))


def skellam(
    mu: float,
    size: int,
    rng: CryptoRandom | None = None,
    *,
    method: Literal["auto", "inversion", "poisson"] = "auto",
) -> np.ndarray:
    """Samples of the symmetric Skellam ``Sk(mu, mu) = Poisson(mu) - Poisson(mu)``.

    Mean 0, variance ``2 mu``; the sum of independent ``Sk(mu_i, mu_i)`` is exactly
    ``Sk(sum mu_i, sum mu_i)``, which is what makes it a distributed-DP noise.

    ``method="inversion"``: exact inversion of the exact CDF
    ``P(k) = e^{-2 mu} I_|k|(2 mu)`` with lazy random bits (see
    :mod:`fedcrypt.dp._inversion`), for tables up to :data:`MAX_TABLE_SUPPORT` boundaries.
    ``method="poisson"``: the difference of two :func:`poisson` samples (float64
    decisions). ``"auto"`` (default): inversion when the table fits, otherwise Poisson.

    Above :data:`MAX_POISSON_LAM` (``2^52``, the Poisson sampler's range) the
    ``"poisson"`` method samples ``Sk(mu, mu)`` as the sum of
    ``floor(mu / 2^52) + 1`` independent ``Sk(mu / parts, mu / parts)`` (exact by the
    closure under sums; each part rounded up, so the noise is never below ``mu``).

    Args:
        mu: the mean of each Poisson side, ``0 <= mu <= 2^62`` (every local ``mu`` a
            :class:`~fedcrypt.dp.distributed.DistributedDpConfig` can ask for: at most
            ``2^62 / (4 ln 2)`` for a 32-bit ring).
        size: number of samples.
        rng: the randomness source (a fresh :class:`CryptoRandom` if ``None``).
        method: ``"auto"``, ``"inversion"`` or ``"poisson"``.

    Returns:
        int64 array of shape ``(size,)``.
    """
    mu = float(mu)
    if not (math.isfinite(mu) and 0 <= mu <= MAX_SKELLAM_MU):
        raise ValueError(f"mu must be finite and in [0, 2^62], got {mu}")
    method = _method(method, ("auto", "inversion", "poisson"))
    rng = _source(rng)
    size = _check_size(size)
    if mu == 0:
        return np.zeros(size, dtype=np.int64)
    if _use_inversion(method, math.sqrt(2.0 * mu), "mu"):
        return _inversion.skellam_sampler(Fraction(mu)).sample(size, rng)
    if mu <= MAX_POISSON_LAM:
        return poisson(mu, size, rng) - poisson(mu, size, rng)
    # Sk(mu, mu) is the sum of `parts` independent Sk(mu / parts, mu / parts): each part
    # stays within the Poisson sampler's range, rounded up so the parts add to at least mu.
    parts = int(mu // MAX_POISSON_LAM) + 1
    part = min(math.nextafter(mu / parts, math.inf), MAX_POISSON_LAM)
    total = np.zeros(size, dtype=np.int64)
    for _ in range(parts):
        total += poisson(part, size, rng)
        total -= poisson(part, size, rng)
    return total


def gaussian(stddev: float, size: int, rng: CryptoRandom | None = None) -> np.ndarray:
    """float64 samples of N(0, stddev^2) by Box-Muller on 53-bit crypto uniforms.

    Floating-point Gaussian noise is not exactly Gaussian (Mironov, CCS 2012 showed the
    consequences for Laplace); it is used only for the *central* mechanism on floats.
    The distributed mechanisms use the integer samplers above.
    """
    stddev = float(stddev)
    if not (math.isfinite(stddev) and stddev >= 0):
        raise ValueError(f"stddev must be finite and >= 0, got {stddev}")
    size = _check_size(size)
    rng = _source(rng)
    half = (size + 1) // 2
    u1 = rng.uniform53(half)
    u2 = rng.uniform53(half)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * math.pi * u2
    out = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]
    return out * stddev
