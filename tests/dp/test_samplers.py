"""Samplers, clipping, the central Gaussian mechanism and distributed DP's encoding: statistics
and exactness, with the core dependencies only (no dp-accounting: the core-only CI job runs
this file; the events, epsilons and the ledger are in test_noise.py).

Statistical tests use fixed (non-secret) test seeds through the AES-CTR source, so they
are deterministic; the bounds are set at >= 6 standard errors of the estimator, i.e. a
false-failure rate below 1e-8 per assertion if the seed were drawn at random.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.dp import DistributedDp, DistributedDpConfig, GaussianMechanism, clip_l2
from fedcrypt.dp._random import CryptoRandom
from fedcrypt.dp.distributed import hadamard
from fedcrypt.dp.samplers import discrete_gaussian, discrete_laplace, gaussian, poisson, skellam

N = 200_000


def rng(tag: int) -> CryptoRandom:
    return CryptoRandom(tag.to_bytes(32, "big"))


def _dg_moments(sigma2: float) -> tuple[float, float]:
    """Exact variance and 4th moment of N_Z(0, sigma2) by summing the pmf."""
    k = np.arange(-int(40 * math.sqrt(sigma2)) - 40, int(40 * math.sqrt(sigma2)) + 41, dtype=np.float64)
    w = np.exp(-(k**2) / (2 * sigma2))
    w /= w.sum()
    return float((w * k**2).sum()), float((w * k**4).sum())


def _assert_mean_var(x: np.ndarray, var: float, m4: float) -> None:
    n = x.size
    assert abs(x.mean()) <= 6 * math.sqrt(var / n)
    # standard error of the sample variance: sqrt((m4 - var^2) / n)
    assert abs(x.var() - var) <= 6 * math.sqrt((m4 - var**2) / n)


@pytest.mark.parametrize("method", ["cks", "auto"])
@pytest.mark.parametrize("sigma2", [0.3, 1.0, 7.5, 1e4, 1e8])
def test_discrete_gaussian_moments(sigma2: float, method: str) -> None:
    var, m4 = _dg_moments(sigma2) if sigma2 < 1e5 else (sigma2, 3 * sigma2**2)
    _assert_mean_var(discrete_gaussian(sigma2, N, rng(1), method=method).astype(np.float64), var, m4)


@pytest.mark.parametrize("method", ["cks", "inversion"])
def test_discrete_gaussian_pmf_small_sigma(method: str) -> None:
    """Frequencies of -3..3 for sigma2 = 1 against the exact pmf (6 standard errors)."""
    x = discrete_gaussian(1.0, N, rng(2), method=method)
    k = np.arange(-60, 61)
    pmf = np.exp(-(k**2) / 2.0)
    pmf /= pmf.sum()
    for value in range(-3, 4):
        p = pmf[value + 60]
        assert abs(np.mean(x == value) - p) <= 6 * math.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("t", [1, 3, 50])
def test_discrete_laplace_moments(t: int) -> None:
    a = math.exp(-1 / t)
    var = 2 * a / (1 - a) ** 2
    m4 = 2 * a * (1 + 10 * a + a * a) / (1 - a) ** 4
    _assert_mean_var(discrete_laplace(t, N, rng(3)).astype(np.float64), var, m4)


@pytest.mark.parametrize("lam", [0.2, 3.0, 9.9, 10.0, 250.0, 1e7, 1e12, 1e15, 2.0**52])
def test_poisson_moments(lam: float) -> None:
    """Regression above 1e12: the float log-pmf and candidate lost precision (mean off by
    11 standard errors at 2^52)."""
    x = poisson(lam, N, rng(4)).astype(np.float64)
    assert x.min() >= 0
    assert abs(x.mean() - lam) <= 6 * math.sqrt(lam / N)
    # Poisson: Var(sample variance) ~ (lam + 2 lam^2) / N
    assert abs(x.var() - lam) <= 6 * math.sqrt((lam + 2 * lam**2) / N)


@pytest.mark.parametrize("method", ["poisson", "inversion"])
def test_skellam_and_gaussian_moments(method: str) -> None:
    mu = 40.0
    x = skellam(mu, N, rng(5), method=method).astype(np.float64)
    _assert_mean_var(x, 2 * mu, 2 * mu + 3 * (2 * mu) ** 2)
    g = gaussian(2.5, N, rng(6))
    _assert_mean_var(g, 6.25, 3 * 6.25**2)


@pytest.mark.parametrize("mu", [2.0**52, 1e17, 1.6e18])
def test_skellam_beyond_the_poisson_range_is_a_sum_of_parts(mu: float) -> None:
    """Above 2^52 Sk(mu, mu) is summed from parts within the Poisson sampler's range."""
    n = 50_000
    x = skellam(mu, n, rng(13)).astype(np.float64)
    var = 2 * mu
    assert abs(x.mean()) <= 6 * math.sqrt(var / n)
    assert abs(x.var() - var) <= 6 * math.sqrt((2 * mu + 2 * var**2) / n)


def test_seeded_source_is_reproducible_and_unseeded_is_not() -> None:
    assert np.array_equal(discrete_gaussian(5.0, 100, rng(7)), discrete_gaussian(5.0, 100, rng(7)))
    assert not np.array_equal(discrete_gaussian(50.0, 100), discrete_gaussian(50.0, 100))
    assert "CryptoRandom" in repr(rng(7)) and "00" not in repr(rng(7))
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(rng(7))


@pytest.mark.parametrize(
    "call,exc,message",
    [
        (lambda: discrete_gaussian(0.0, 3), ValueError, r"sigma2 must be finite and in \(0, 2\^62\], got 0.0"),
        (lambda: discrete_laplace(0, 3), ValueError, r"t must be in \[1, 2\^32\), got 0"),
        (lambda: poisson(-1.0, 3), ValueError, r"lam must be finite and in \[0, 2\^52\], got -1.0"),
        (lambda: gaussian(1.0, -1), ValueError, r"size must be >= 0, got -1"),
        (lambda: discrete_gaussian(1.0, 3, rng=np.random.default_rng(0)), TypeError, r"rng must be a CryptoRandom"),
        (lambda: CryptoRandom(b"short"), ValueError, r"seed must be 32 bytes, got 5"),
    ],
)
def test_sampler_misuse(call, exc, message) -> None:
    with pytest.raises(exc, match=message):
        call()


def test_randbelow_is_uniform() -> None:
    x = rng(8).randbelow(7, size=70_000)
    counts = np.bincount(x, minlength=7)
    assert x.min() >= 0 and x.max() <= 6
    assert np.all(np.abs(counts - 10_000) <= 6 * math.sqrt(10_000 * 6 / 7))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40), st.floats(1e-3, 1e3))
def test_clip_bounds_norm_and_keeps_direction(values, clip) -> None:
    v = np.array(values, dtype=np.float32)
    out, norm = clip_l2(v, clip)
    assert np.linalg.norm(out.astype(np.float64)) <= clip * (1 + 1e-9)
    if norm <= clip:
        assert np.array_equal(out, v)
    else:
        assert np.allclose(out * (norm / clip), v, rtol=1e-4, atol=1e-3 * norm / clip)


def test_clip_refuses_nan() -> None:
    with pytest.raises(ValueError, match="vector contains NaN or infinity"):
        clip_l2(np.array([1.0, np.nan]), 1.0)


def test_central_gaussian_noise_variance() -> None:
    mech = GaussianMechanism(noise_multiplier=1.5, clip=2.0)
    updates = [np.full(N // 4, 10.0, np.float32) for _ in range(3)]  # norms far above clip
    released = mech.aggregate(updates, rng(10))
    clipped_sum = 3 * 2.0 / math.sqrt(N // 4) * 1.0
    noise = released - clipped_sum
    _assert_mean_var(noise, 9.0, 3 * 81.0)


def test_hadamard_is_orthonormal_and_self_inverse() -> None:
    x = gaussian(1.0, 1024, rng(11))
    y = hadamard(x)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x))
    assert np.allclose(hadamard(y), x)


def _ring_sum(vectors: list[np.ndarray]) -> np.ndarray:
    total = np.zeros(vectors[0].size, dtype=np.uint64)
    for v in vectors:
        total += v
    return (total % (1 << 32)).astype(np.uint32)  # the Z_2^32 sum secure aggregation returns


@pytest.mark.parametrize("mechanism", ["ddgauss", "skellam"])
@pytest.mark.parametrize("survivors", [8, 5])
def test_distributed_sum_noise_variance_matches_target(mechanism: str, survivors: int) -> None:
    """Zero updates: the decoded sum is pure noise with variance (m/n) (z C)^2."""
    dim = 1 << 15
    cfg = DistributedDpConfig(noise_multiplier=0.8, clip=3.0, expected_clients=8, bits=20, mechanism=mechanism)
    mech = DistributedDp(cfg, dim, rotation_seed=bytes(32))
    rings = [mech.encode(np.zeros(dim, np.float32), rng(100 + i)) for i in range(survivors)]
    noise = mech.decode(_ring_sum(rings), survivors)
    var = (0.8 * 3.0) ** 2 * survivors / 8
    assert mech.noise_stddev(survivors) ** 2 == pytest.approx(var)
    _assert_mean_var(noise, var, 3 * var**2)


def test_distributed_config_misuse() -> None:
    with pytest.raises(ValueError, match=r"bits must be in \[2, 32\], got 40"):
        DistributedDpConfig(1.0, 1.0, 10, bits=40)
    with pytest.raises(ValueError, match=r"mechanism must be one of \('ddgauss', 'skellam'\), got 'x'"):
        DistributedDpConfig(1.0, 1.0, 10, mechanism="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"bits=4 is too small for expected_clients=100"):
        DistributedDpConfig(1.0, 1.0, 100, bits=4).scale(1000)
    mech = DistributedDp(DistributedDpConfig(1.0, 1.0, 10), dim=10)
    with pytest.raises(ValueError, match=r"vector length 11 differs from this mechanism's dim 10"):
        mech.encode(np.zeros(11))


def test_geometric_tail_matches_exp_minus_j() -> None:
    """CKS Algorithm 2's loop count: P(V >= j) = e^-j (6 standard errors per j)."""
    from fedcrypt.dp.samplers import _geometric_exp_m1

    v = _geometric_exp_m1(N, rng(12))
    for j in range(1, 8):
        p = math.exp(-j)
        assert abs(np.mean(v >= j) - p) <= 6 * math.sqrt(p * (1 - p) / N)
    assert v.min() == 0


def test_aligned_clients_do_not_wrap_the_16_bit_ring() -> None:
    """Worst case for modular clipping: 40 clients send the same vector of norm C (one
    spike coordinate, the hardest to spread). The scale keeps the noisy sum inside the
    ring, so the decoded sum is 40 x the vector up to the noise."""
    n, dim = 40, 1000
    cfg = DistributedDpConfig(noise_multiplier=0.5, clip=1.0, expected_clients=n, bits=16)
    mech = DistributedDp(cfg, dim, rotation_seed=bytes([7]) * 32)
    spike = np.zeros(dim, np.float32)
    spike[3] = 1.0
    rings = [mech.encode(spike, rng(500 + i)) for i in range(n)]
    decoded = mech.decode(_ring_sum(rings), n)
    residual = decoded - n * spike
    # noise std 0.5 plus rounding (each client <= 1/(2 s) per rotated coordinate): 8 sigma
    rounding = math.sqrt(n) / (2 * mech.scale)
    assert np.max(np.abs(residual)) <= 8 * math.hypot(0.5, rounding)
    assert decoded[3] == pytest.approx(n, abs=8 * math.hypot(0.5, rounding))


# --------------------------------------------------------------------------- clip reports
def test_clip_l2_with_report_says_whether_and_how_much() -> None:
    from fedcrypt.dp import clip_l2_with_report

    out, report = clip_l2_with_report(np.array([3.0, 0.0, 4.0], np.float32), 1.0)
    assert np.array_equal(out, clip_l2(np.array([3.0, 0.0, 4.0], np.float32), 1.0)[0])
    assert (report.kind, report.size, report.clipped, report.norm) == ("l2", 3, 2, 5.0)
    assert report.factor == pytest.approx(0.2) and report.any
    assert str(report) == "L2 norm 5 clipped to 1: 2 of 3 coordinates scaled by 0.2"
    _, inside = clip_l2_with_report(np.array([0.3, 0.4]), 1.0)
    assert not inside.any and inside.factor == 1.0 and inside.clipped == 0
    assert str(inside) == "L2 norm 0.5 within the clip 1: nothing clipped"


def test_distributed_encode_with_report_is_encode_plus_the_l2_report() -> None:
    mech = DistributedDp(DistributedDpConfig(noise_multiplier=1.0, clip=2.0, expected_clients=4, bits=20), 100,
                         rotation_seed=bytes(32))
    update = np.full(100, 0.5, np.float32)  # norm 5 > clip 2
    ring, report = mech.encode_with_report(update, rng(600))
    assert np.array_equal(ring, mech.encode(update, rng(600)))
    assert report.kind == "l2" and report.norm == pytest.approx(5.0) and report.factor == pytest.approx(0.4)
    assert report.clipped == 100
    _, small = mech.encode_with_report(update / 10, rng(601))
    assert not small.any and small.norm == pytest.approx(0.5)


def test_central_aggregate_with_report_reports_each_update() -> None:
    mech = GaussianMechanism(noise_multiplier=1.0, clip=1.0)
    updates = [np.array([3.0, 4.0]), np.array([0.3, 0.4])]
    released, reports = mech.aggregate_with_report(updates, rng(700))
    assert np.array_equal(released, mech.aggregate(updates, rng(700)))
    assert [r.any for r in reports] == [True, False] and reports[0].factor == pytest.approx(0.2)
