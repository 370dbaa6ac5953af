"""Exact inversion samplers: certified boundaries, the lazy-bits tie path, statistics.

* Boundaries are checked against an independent computation with mpmath (a dependency
  of dp-accounting) at 60 significant digits: direct summation of ``exp`` terms for the
  discrete Gaussian and ``besseli`` for the Skellam, none of the fixed-point recurrences
  of the sampler.
* The tie path is exercised with :class:`ScriptedRandom`, a :class:`CryptoRandom` whose
  ``words32`` returns chosen words first (then the real AES-CTR keystream): the only way
  to force a tie, which real keystream produces with probability about ``2^-20`` per
  sample. The sampler itself is the real one.
* Statistical tests use fixed (non-secret) test seeds through the AES-CTR source, so they
  are deterministic; mean and variance bounds are 6 standard errors (a false-failure
  rate below 2e-9 per assertion if the seed were drawn at random), the chi-square test
  rejects at a false-failure rate of 1e-6 (scipy's chi2 quantile).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from fedcrypt.dp._inversion import (
    TABLE_BITS,
    InversionSampler,
    _dg_tails,
    _skellam_tails,
    discrete_gaussian_sampler,
    skellam_sampler,
)
from fedcrypt.dp._random import CryptoRandom
from fedcrypt.dp.distributed import DistributedDpConfig
from fedcrypt.dp.samplers import MAX_TABLE_SUPPORT, discrete_gaussian, skellam

N = 200_000
TWO32 = 1 << 32
#: Local noise of the realistic configuration (16-bit ring, 100 clients, z = 1, d = 1e6).
REALISTIC = DistributedDpConfig(1.0, 1.0, 100, bits=16).local_noise(1_000_000)


def rng(tag: int) -> CryptoRandom:
    return CryptoRandom(tag.to_bytes(32, "big"))


class ScriptedRandom(CryptoRandom):
    """A CryptoRandom whose 32-bit words come from ``script`` first, then from AES-CTR."""

    __slots__ = ("script",)

    def __init__(self, script: list[int]) -> None:
        super().__init__(bytes(32))
        self.script = list(script)

    def words32(self, size: int) -> np.ndarray:
        take = self.script[:size]
        del self.script[:size]
        rest = super().words32(size - len(take))
        return np.concatenate([np.array(take, dtype=np.uint32), rest]).astype("<u4")


# --------------------------------------------------------------------------- reference
@functools.lru_cache(maxsize=32)
def _ref_dg_cdf(sigma2: float, ks: range) -> dict[int, mpmath.mpf]:
    """F(k) of N_Z(0, sigma2) by direct summation at 60 digits."""
    with mpmath.workdps(60):
        s2 = mpmath.mpf(sigma2)
        reach = int(40 * math.sqrt(sigma2)) + 40 + max(abs(ks.start), abs(ks.stop))
        weights = {j: mpmath.exp(-mpmath.mpf(j * j) / (2 * s2)) for j in range(-reach, reach + 1)}
        z = mpmath.fsum(weights.values())
        out, acc = {}, mpmath.mpf(0)
        for j in range(-reach, ks.stop):
            acc += weights[j]
            if j in ks:
                out[j] = acc / z
        return out


@functools.lru_cache(maxsize=32)
def _ref_skellam_cdf(mu: float, ks: range) -> dict[int, mpmath.mpf]:
    """F(k) of Sk(mu, mu) with mpmath's besseli at 60 digits."""
    with mpmath.workdps(60):
        x = 2 * mpmath.mpf(mu)
        reach = int(40 * math.sqrt(2 * mu)) + 80 + max(abs(ks.start), abs(ks.stop))
        pmf = {j: mpmath.exp(-x) * mpmath.besseli(abs(j), x) for j in range(-reach, reach + 1)}
        out, acc = {}, mpmath.mpf(0)
        for j in range(-reach, ks.stop):
            acc += pmf[j]
            if j in ks:
                out[j] = acc
        return out


def _check_boundaries(sampler: InversionSampler, cdf: dict[int, mpmath.mpf]) -> None:
    b64 = [int(v) for v in sampler.boundaries64]
    assert all(a <= b for a, b in zip(b64, b64[1:]))  # monotone
    assert np.array_equal(sampler.boundaries32, (sampler.boundaries64 >> np.uint64(32)).astype(np.uint32))
    assert int(sampler.boundaries32[-1]) == TWO32 - 1
    with mpmath.workdps(60):
        scale = mpmath.mpf(2) ** TABLE_BITS
        for k, value in cdf.items():
            if not sampler.kmin <= k <= -sampler.kmin:
                continue
            exact = value * scale
            # 60 digits leave >= 1e-30 of slack: no boundary here is that close to an integer
            assert abs(exact - mpmath.nint(exact)) > mpmath.mpf(10) ** -30
            assert b64[k - sampler.kmin] == int(mpmath.floor(exact)), k
        # the table stops where the remaining mass drops below 2^-64, not earlier
        kmax = -sampler.kmin
        assert cdf[-kmax - 1] < mpmath.mpf(2) ** -64
        if kmax > 0:
            assert cdf[-kmax] >= mpmath.mpf(2) ** -64 - mpmath.mpf(2) ** -90


@settings(max_examples=12, deadline=None)
@given(st.floats(0.05, 400.0))
def test_discrete_gaussian_boundaries_match_mpmath(sigma2: float) -> None:
    sampler = discrete_gaussian_sampler.__wrapped__(Fraction(sigma2))  # uncached
    kmax = -sampler.kmin
    _check_boundaries(sampler, _ref_dg_cdf(sigma2, range(-kmax - 1, kmax + 1)))


@settings(max_examples=8, deadline=None)
@given(st.floats(0.01, 60.0))
def test_skellam_boundaries_match_mpmath(mu: float) -> None:
    sampler = skellam_sampler.__wrapped__(Fraction(mu))  # uncached
    kmax = -sampler.kmin
    _check_boundaries(sampler, _ref_skellam_cdf(mu, range(-kmax - 1, kmax + 1)))


@pytest.mark.parametrize("tails_fn,param", [(_dg_tails, Fraction(7.25)), (_skellam_tails, Fraction(3.5))])
@pytest.mark.parametrize("precision", [96, 200])
def test_tail_sums_are_within_their_bound(tails_fn, param, precision: int) -> None:
    """|P(X >= m) - suffix[m] / total| <= 2^-precision, checked with mpmath at 100 digits."""
    tails = tails_fn(param, precision)
    with mpmath.workdps(100):
        if tails_fn is _dg_tails:
            s2 = mpmath.mpf(param.numerator) / param.denominator
            reach = 400
            pmf = [mpmath.exp(-mpmath.mpf(j * j) / (2 * s2)) for j in range(reach)]
            z = pmf[0] + 2 * mpmath.fsum(pmf[1:])
            pmf = [p / z for p in pmf]
        else:
            x = 2 * mpmath.mpf(param.numerator) / param.denominator
            pmf = [mpmath.exp(-x) * mpmath.besseli(j, x) for j in range(400)]
        bound = mpmath.mpf(2) ** -precision
        for m in (1, 2, 5, 10, len(tails.suffix) - 2, len(tails.suffix) - 1, len(tails.suffix) + 3):
            tail = mpmath.fsum(pmf[m:])
            approx = mpmath.mpf(tails.suffix[m] if m < len(tails.suffix) else 0) / tails.total
            assert abs(tail - approx) <= bound, m


# --------------------------------------------------------------------------- fast path
@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, TWO32 - 1), min_size=1, max_size=200), st.sampled_from([0.3, 30.0, REALISTIC]))
def test_guide_table_agrees_with_binary_search(words: list[int], sigma2: float) -> None:
    """Whatever the words, the sample is min{k : u < c_k} (no tie) from a plain search."""
    sampler = discrete_gaussian_sampler(Fraction(sigma2))
    b32 = sampler.boundaries32
    # add the edges of guide cells, and avoid exact ties (tested below)
    shift = 32 - sampler.guide_bits
    words = words + [(w >> shift) << shift for w in words] + [w | ((1 << shift) - 1) for w in words]
    words = [w for w in words if not np.any(b32 == w)]
    out = sampler.sample(len(words), ScriptedRandom(words))
    expected = np.searchsorted(b32, np.array(words, dtype=np.uint32), side="left") + sampler.kmin
    assert np.array_equal(out, expected)


# --------------------------------------------------------------------------- tie path
def _truth(cdf_fn, param: float, prefix: int, bits: int, around: range) -> int | None:
    """min{k : U < F(k)} if U's first ``bits`` bits ``prefix`` decide it, else None."""
    reach = int(12 * math.sqrt(2 * param)) + 80
    values = cdf_fn(param, range(-reach, reach))
    with mpmath.workdps(60):
        low = mpmath.mpf(prefix) / mpmath.mpf(2) ** bits
        high = mpmath.mpf(prefix + 1) / mpmath.mpf(2) ** bits
        for k in around:
            if values[k - 1] <= low and high <= values[k]:
                return k
    return None


@pytest.mark.parametrize(
    "make,cdf_fn,param",
    [
        (discrete_gaussian_sampler, _ref_dg_cdf, 30.0),
        (skellam_sampler, _ref_skellam_cdf, 12.5),
    ],
)
def test_ties_resolve_exactly_with_more_bits(make, cdf_fn, param: float) -> None:
    """u == c_k forces the slow path; the next words decide at 64 and at 96 bits."""
    sampler = make(Fraction(param))
    b32, b64 = sampler.boundaries32, sampler.boundaries64
    checked = 0
    for i in range(0, b32.size, max(1, b32.size // 12)):
        k = i + sampler.kmin
        c64 = int(b64[i])
        c96 = sampler._cdf.floor_scaled(k, 96)
        assert c96 >> 32 == c64  # the 96-bit boundary extends the 64-bit one
        low = c64 & 0xFFFFFFFF
        scripts = []
        if low > 0:
            scripts.append([c64 >> 32, low - 1])  # U < F(k) at 64 bits
        if low < TWO32 - 1:
            scripts.append([c64 >> 32, low + 1])  # U >= F(k) at 64 bits
        third = c96 & 0xFFFFFFFF
        scripts.append([c64 >> 32, low, max(third, 1) - 1])  # tie at 64 bits, decided at 96
        scripts.append([c64 >> 32, low, min(third + 1, TWO32 - 1)])
        for script in scripts:
            prefix = 0
            for word in script:
                prefix = (prefix << 32) | word
            got = int(sampler.sample(1, ScriptedRandom(script))[0])
            truth = _truth(cdf_fn, param, prefix, 32 * len(script), range(k - 3, k + 4))
            if truth is not None:
                assert got == truth, (k, script)
                checked += 1
    assert checked >= 30


@pytest.mark.parametrize("make,cdf_fn,param", [(discrete_gaussian_sampler, _ref_dg_cdf, 2.0),
                                                (skellam_sampler, _ref_skellam_cdf, 1.5)])
@pytest.mark.parametrize("side", ["left", "right"])
def test_support_extends_beyond_the_table(make, cdf_fn, param: float, side: str) -> None:
    """A U within 2^-96 of 0 or 1 (probability 2^-95) lands beyond the table's 2^-64 tail."""
    sampler = make(Fraction(param))
    word = 0 if side == "left" else TWO32 - 1
    script = [word, word, word, 0x80000000]
    prefix = 0
    for w in script:
        prefix = (prefix << 32) | w
    got = int(sampler.sample(1, ScriptedRandom(script))[0])
    kmax = -sampler.kmin
    assert (got < -kmax) if side == "left" else (got > kmax)
    assert got == _truth(cdf_fn, param, prefix, 128, range(-kmax - 40, kmax + 40))


# --------------------------------------------------------------------------- statistics
def _chi_square_ok(x: np.ndarray, support: np.ndarray, pmf: np.ndarray) -> None:
    """Pearson chi-square on the values of expected count >= 50, the tails pooled into
    the two edge bins; rejects at a false-failure rate of 1e-6."""
    n = x.size
    keep = np.flatnonzero(pmf * n >= 50)
    lo, hi = int(support[keep[0]]), int(support[keep[-1]])
    observed = np.bincount(np.clip(x, lo, hi) - lo, minlength=hi - lo + 1).astype(np.float64)
    expected = pmf[(support >= lo) & (support <= hi)].copy()
    expected[0] = pmf[support <= lo].sum()
    expected[-1] = pmf[support >= hi].sum()
    expected *= n
    statistic = float(((observed - expected) ** 2 / expected).sum())
    assert statistic <= stats.chi2.ppf(1 - 1e-6, observed.size - 1), statistic


def _dg_pmf(sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    reach = int(12 * math.sqrt(sigma2)) + 12
    k = np.arange(-reach, reach + 1)
    w = np.exp(-(k.astype(np.float64) ** 2) / (2 * sigma2))
    return k, w / w.sum()


def _skellam_pmf(mu: float) -> tuple[np.ndarray, np.ndarray]:
    reach = int(12 * math.sqrt(2 * mu)) + 40
    k = np.arange(-reach, reach + 1)
    p = special.ive(np.abs(k), 2 * mu)  # e^{-2 mu} I_|k|(2 mu)
    return k, p / p.sum()


@pytest.mark.parametrize("sigma2", [0.3, 1.0, 30.0, REALISTIC])
def test_inversion_discrete_gaussian_statistics(sigma2: float) -> None:
    k, pmf = _dg_pmf(sigma2)
    x = discrete_gaussian(sigma2, N, rng(21), method="inversion")
    var = float((pmf * k**2).sum())
    m4 = float((pmf * k.astype(np.float64) ** 4).sum())
    assert abs(x.mean()) <= 6 * math.sqrt(var / N)
    assert abs(x.astype(np.float64).var() - var) <= 6 * math.sqrt((m4 - var**2) / N)
    _chi_square_ok(x, k, pmf)


@pytest.mark.parametrize("mu", [0.5, 20.0, REALISTIC / 2])
def test_inversion_skellam_statistics(mu: float) -> None:
    k, pmf = _skellam_pmf(mu)
    x = skellam(mu, N, rng(22), method="inversion")
    var = 2 * mu
    m4 = 2 * mu + 3 * var**2  # Skellam: excess kurtosis 1 / (2 mu)
    assert abs(x.mean()) <= 6 * math.sqrt(var / N)
    assert abs(x.astype(np.float64).var() - var) <= 6 * math.sqrt((m4 - var**2) / N)
    _chi_square_ok(x, k, pmf)


def test_auto_uses_inversion_while_the_table_fits() -> None:
    """auto == inversion (same words, same samples) for the realistic sigma; cks beyond."""
    assert np.array_equal(discrete_gaussian(REALISTIC, 5000, rng(23)),
                          discrete_gaussian(REALISTIC, 5000, rng(23), method="inversion"))
    assert np.array_equal(skellam(REALISTIC / 2, 5000, rng(24)),
                          skellam(REALISTIC / 2, 5000, rng(24), method="inversion"))
    assert not np.array_equal(discrete_gaussian(REALISTIC, 5000, rng(23), method="cks"),
                              discrete_gaussian(REALISTIC, 5000, rng(23)))
    huge = 1e12
    assert np.array_equal(discrete_gaussian(huge, 100, rng(25)), discrete_gaussian(huge, 100, rng(25), method="cks"))
    assert np.array_equal(skellam(huge, 100, rng(26)), skellam(huge, 100, rng(26), method="poisson"))


@pytest.mark.parametrize("mechanism", ["ddgauss", "skellam"])
def test_distributed_encode_draws_its_noise_from_the_exact_sampler(mechanism: str) -> None:
    """A zero update: encode = rounding draws (one 64-bit word per coordinate, nothing
    rounds) then exactly the inversion sampler's noise from the same keystream."""
    from fedcrypt.dp.distributed import DistributedDp

    cfg = DistributedDpConfig(1.0, 1.0, 100, bits=16, mechanism=mechanism)
    dim = 4096
    mech = DistributedDp(cfg, dim, rotation_seed=bytes(32))
    ring = mech.encode(np.zeros(dim, np.float32), rng(29))
    source = rng(29)
    source.words64(dim)  # the conditional rounding's Bernoulli(0) trials
    local = cfg.local_noise(dim)
    if mechanism == "ddgauss":
        noise = discrete_gaussian(local, dim, source, method="inversion")
    else:
        noise = skellam(local, dim, source, method="inversion")
    assert np.array_equal(ring, np.mod(noise, 1 << 16).astype(np.uint32))


def test_inversion_draws_one_word_per_sample() -> None:
    """The keystream position after n samples is exactly n words when no word ties."""
    a, b = rng(27), rng(27)
    x = discrete_gaussian(REALISTIC, 100_000, a, method="inversion")
    words = b.words32(100_000)
    sampler = discrete_gaussian_sampler(Fraction(REALISTIC))
    assert not np.isin(words, sampler.boundaries32).any()  # this seed has no tie
    assert np.array_equal(x, np.searchsorted(sampler.boundaries32, words, side="left") + sampler.kmin)
    assert np.array_equal(a.words32(8), b.words32(8))


@pytest.mark.parametrize(
    "call,exc,message",
    [
        (lambda: discrete_gaussian(1.0, 3, method="table"), ValueError,
         r"method must be one of \('auto', 'inversion', 'cks'\), got 'table'"),
        (lambda: skellam(1.0, 3, method="cks"), ValueError,
         r"method must be one of \('auto', 'inversion', 'poisson'\), got 'cks'"),
        (lambda: discrete_gaussian(1e12, 3, method="inversion"), ValueError,
         r"sigma2 is too large for method='inversion' \(a table of about \d+ > 1048576 boundaries\)"),
        (lambda: skellam(-1.0, 3), ValueError, r"mu must be finite and in \[0, 2\^62\], got -1.0"),
        (lambda: skellam(float("nan"), 3), ValueError, r"mu must be finite and in \[0, 2\^62\], got nan"),
    ],
)
def test_method_misuse(call, exc, message) -> None:
    with pytest.raises(exc, match=message):
        call()


def test_zero_mu_and_empty_sizes() -> None:
    assert np.array_equal(skellam(0.0, 4, rng(28)), np.zeros(4, np.int64))
    assert discrete_gaussian(REALISTIC, 0, rng(28)).shape == (0,)
    assert MAX_TABLE_SUPPORT == 1 << 20


# --------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_realistic_boundaries_match_mpmath() -> None:
    """Every boundary of the realistic discrete Gaussian, and 150 of the realistic Skellam's."""
    sampler = discrete_gaussian_sampler.__wrapped__(Fraction(REALISTIC))
    kmax = -sampler.kmin
    _check_boundaries(sampler, _ref_dg_cdf(REALISTIC, range(-kmax - 1, kmax + 1)))
    # Skellam (mpmath's besseli does not converge at x = 2 mu ~ 2.2e5): the upper tail as
    # P(K >= j) = sum_n P(A = n) P(B >= n + j) over two Poisson(mu), exp/loggamma at 60 digits
    mu = REALISTIC / 2
    sk = skellam_sampler.__wrapped__(Fraction(mu))
    kmax = -sk.kmin
    with mpmath.workdps(60):
        m = mpmath.mpf(mu)
        lo, hi = int(mu) - 6000, int(mu) + 6000 + kmax
        pois = [mpmath.exp(i * mpmath.log(m) - m - mpmath.loggamma(i + 1)) for i in range(lo, hi + 1)]
        suffix = [mpmath.mpf(0)] * (len(pois) + 1)
        for i in range(len(pois) - 1, -1, -1):
            suffix[i] = suffix[i + 1] + pois[i]
        checked = 0
        for j in range(1, kmax + 1, 29):
            tail = mpmath.fsum(pois[i] * suffix[i + j] for i in range(len(pois) - j))
            exact = tail * mpmath.mpf(2) ** 64  # F(-j) 2^64
            assert abs(exact - mpmath.nint(exact)) > mpmath.mpf(10) ** -20
            assert int(sk.boundaries64[-j - sk.kmin]) == int(mpmath.floor(exact)), j
            checked += 1
        assert checked >= 140


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["ddgauss", "skellam"])
def test_realistic_chi_square_with_5e6_samples(mechanism: str) -> None:
    n = 5_000_000
    if mechanism == "ddgauss":
        k, pmf = _dg_pmf(REALISTIC)
        x = discrete_gaussian(REALISTIC, n, rng(31), method="inversion")
    else:
        k, pmf = _skellam_pmf(REALISTIC / 2)
        x = skellam(REALISTIC / 2, n, rng(32), method="inversion")
    var = float((pmf * k.astype(np.float64) ** 2).sum())
    assert abs(x.mean()) <= 6 * math.sqrt(var / n)
    assert abs(x.astype(np.float64).var() - var) <= 6 * math.sqrt(2 * var**2 / n)
    _chi_square_ok(x, k, pmf)
