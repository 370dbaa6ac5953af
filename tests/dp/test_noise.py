"""Adaptive clipping, DP events and distributed DP's epsilons and ledger (extra 'dp'); the samplers,
clipping and the mechanisms' statistics with the core alone are in test_samplers.py.

Statistical tests use fixed (non-secret) test seeds through the AES-CTR source, so they
are deterministic; the bounds are set at >= 6 standard errors of the estimator, i.e. a
false-failure rate below 1e-8 per assertion if the seed were drawn at random.
"""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.dp import AdaptiveClipper, DistributedDp, DistributedDpConfig, PrivacyLedger, clip_l2
from fedcrypt.dp._random import CryptoRandom
from fedcrypt.dp.events import DistributedDiscreteGaussianDpEvent, SkellamDpEvent, event_from_json, event_to_json
from fedcrypt.dp.samplers import gaussian

def rng(tag: int) -> CryptoRandom:
    return CryptoRandom(tag.to_bytes(32, "big"))


def _assert_mean_var(x: np.ndarray, var: float, m4: float) -> None:
    n = x.size
    assert abs(x.mean()) <= 6 * math.sqrt(var / n)
    # standard error of the sample variance: sqrt((m4 - var^2) / n)
    assert abs(x.var() - var) <= 6 * math.sqrt((m4 - var**2) / n)


# --------------------------------------------------------------------------- clipping


def test_adaptive_clipper_tracks_quantile_and_accounts_its_noise() -> None:
    clipper = AdaptiveClipper(initial_clip=0.1, expected_clients=1000, count_stddev=5.0, learning_rate=0.5)
    norms = np.linspace(0.0, 2.0, 1000)  # median 1.0
    source = rng(9)
    for _ in range(80):
        clipper.update(sum(clipper.client_bit(x) for x in norms), source)
    assert 0.9 <= clipper.clip <= 1.1
    z_update = clipper.update_noise_multiplier(1.0)
    assert z_update > 1.0
    assert clipper.effective_noise_multiplier(z_update) == pytest.approx(1.0)
    event = clipper.round_event(z_update, 0.1)
    assert event == dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(pytest.approx(1.0)))
    before = clipper.clip
    with pytest.raises(ValueError, match=r"bit_sum must be finite and in \[-500, 500\], got 501.0"):
        clipper.update(501.0)
    assert clipper.clip == before


# --------------------------------------------------------------------------- events
@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.01, 1e6), st.floats(0.01, 1e6), st.floats(0.01, 1e6), st.integers(1, 1000), st.integers(1, 1 << 20),
    st.floats(1e-4, 1.0), st.integers(0, 100),
)
def test_event_json_round_trip(l2, l1, s, n, d, q, count) -> None:
    events = [
        DistributedDiscreteGaussianDpEvent(l2, l1, s, n, d),
        SkellamDpEvent(l2, l1, s, d),
        dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(s)), count),
        dpa.ComposedDpEvent([dpa.LaplaceDpEvent(l1), dpa.NoOpDpEvent()]),
    ]
    for event in events:
        text = event_to_json(event)
        assert event_from_json(text) == event
        assert event_to_json(event_from_json(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        '{"noise_multiplier":1.0,"type":"gaussian","x":1}',
        '{"noise_multiplier":true,"type":"gaussian"}',
        '{"noise_multiplier":NaN,"type":"gaussian"}',
        '{"noise_multiplier":-1.0,"type":"gaussian"}',
        '{"type": "noop"}',
        '{"event":{"type":"noop"},"sampling_probability":1.5,"type":"poisson_sampled"}',
        '{"type":"mystery"}',
        "[" * 100 + "]" * 100,
        '{"count":1,"event":' * 40 + '{"type":"noop"}' + "}" * 40,
    ],
)
def test_event_decoder_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        event_from_json(text)


# --------------------------------------------------------------------------- distributed


def _ring_sum(vectors: list[np.ndarray]) -> np.ndarray:
    total = np.zeros(vectors[0].size, dtype=np.uint64)
    for v in vectors:
        total += v
    return (total % (1 << 32)).astype(np.uint32)  # the Z_2^32 sum secure aggregation returns


def test_distributed_recovers_the_clipped_sum_and_survivors_cost_more() -> None:
    dim = 3000
    cfg = DistributedDpConfig(noise_multiplier=0.5, clip=1.0, expected_clients=10, bits=16)
    mech = DistributedDp(cfg)
    data = [gaussian(1.0, dim, rng(200 + i)).astype(np.float32) for i in range(10)]
    rings = [mech.encode(x, rng(300 + i)) for i, x in enumerate(data)]
    assert all(r.dtype == np.uint32 and r.max() < (1 << 16) for r in rings)
    decoded = mech.decode(_ring_sum(rings), 10)
    exact = np.sum([clip_l2(x, 1.0)[0].astype(np.float64) for x in data], axis=0)
    residual = decoded - exact
    # noise std z C = 0.5 plus rounding (<= 1/(2 s) per client per coordinate)
    assert abs(residual.std() - 0.5) <= 0.05
    eps_all = cfg.epsilon(dim, 1.0, 10, 1e-5)
    eps_drop = cfg.epsilon(dim, 1.0, 10, 1e-5, survivors=6)
    assert eps_drop > eps_all > 0


def test_distributed_epsilon_close_to_central_gaussian_when_unsampled() -> None:
    """With a fine scale the discretization costs little: within 10% of central."""
    from fedcrypt.dp import epsilon

    central = epsilon(1.0, 1.0, 50, 1e-5, "rdp")
    for mech in ("ddgauss", "skellam"):
        cfg_m = DistributedDpConfig(1.0, 1.0, 20, bits=24, mechanism=mech)
        distributed = cfg_m.epsilon(10_000, 1.0, 50, 1e-5)
        assert central <= distributed <= 1.1 * central


def test_pinned_distributed_epsilons() -> None:
    cfg = DistributedDpConfig(noise_multiplier=1.0, clip=1.0, expected_clients=10, bits=16)
    assert cfg.scale(4000) == pytest.approx(5362.839152664605, rel=1e-9)
    assert cfg.epsilon(4000, 0.1, 100, 1e-5) == pytest.approx(9.825937194280602, rel=1e-6)


def test_distributed_dp_through_secure_aggregation_and_ledger(tmp_path) -> None:
    """End to end: clients encode, fedcrypt.secagg.simulate_ring sums (one dropout), the
    server decodes, the noise variance matches the survivors' target, the ledger records
    the survivors' event."""
    from fedcrypt.secagg import SecAggConfig, Stage, simulate_ring

    n, dim = 6, 1 << 13
    cfg = DistributedDpConfig(noise_multiplier=1.0, clip=2.0, expected_clients=n, bits=16)
    mech = DistributedDp(cfg, dim, rotation_seed=bytes(range(32)))
    rings = [mech.encode(np.zeros(dim, np.float32), rng(400 + i)) for i in range(n)]
    result = simulate_ring(rings, SecAggConfig(num_clients=n, threshold=4, bits=32), {Stage.MASKED_INPUT: {5}})
    survivors = len(result.survivors)
    assert survivors == n - 1
    expected = np.sum([rings[i].astype(np.uint64) for i in sorted(result.survivors)], axis=0) % (1 << 32)
    assert np.array_equal(np.asarray(result.ring_sum, dtype=np.uint64) % (1 << 32), expected)
    noise = mech.decode(np.asarray(result.ring_sum), survivors)
    var = (1.0 * 2.0) ** 2 * survivors / n
    _assert_mean_var(noise, var, 3 * var**2)
    ledger = PrivacyLedger(tmp_path / "ddp.db", epsilon_budget=50.0, delta=1e-5)
    spent = ledger.spend(mech.event(survivors))
    assert ledger.entries()[0].event == mech.event(survivors)
    assert spent == pytest.approx(cfg.epsilon(dim, 1.0, 1, 1e-5, survivors=survivors), rel=1e-9)
    assert spent > cfg.epsilon(dim, 1.0, 1, 1e-5)


