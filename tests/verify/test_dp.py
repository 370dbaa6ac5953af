"""Distributed discrete Gaussian noise in the verify round: each aggregator adds half of the
variance to its share of the sum; the verified bound B is the sensitivity; the DpEvents
account for it (the dp extra's accountants and ledger)."""

from __future__ import annotations

import numpy as np
import pytest

from fedcrypt.verify import simulate
from fedcrypt.verify._common import sample_noise

from ._kit import HELPER_KEY, config, expected_sum, vectors

D = 2000


def test_each_aggregator_samples_half_the_variance_as_integers():
    cfg = config(dimension=20_000, noise_multiplier=0.5)
    q = cfg.params.field.modulus
    noise = sample_noise(cfg).astype(np.int64)
    signed = np.where(noise > q // 2, noise - q, noise)
    sigma = cfg.noise_stddev / np.sqrt(2)
    assert sigma == pytest.approx(0.5 * cfg.bound / np.sqrt(2))
    assert abs(signed.std() / sigma - 1) < 0.05
    assert abs(signed.mean()) < 5 * sigma / np.sqrt(len(signed))
    assert sample_noise(config()) is None


def test_the_sum_carries_both_halves_and_nothing_else():
    cfg = config(dimension=D, noise_multiplier=0.5)
    vs = vectors(3, D, scale=0.01)
    out = simulate(cfg, vs, helper_key=HELPER_KEY)
    noise = (out.sum - expected_sum(cfg, vs)) * cfg.scale
    assert np.array_equal(noise, np.rint(noise))  # integer noise in the fixed-point domain
    assert abs(noise.std() / cfg.noise_stddev - 1) < 0.1
    assert out.result.noise_stddev == pytest.approx(0.5 * cfg.l2_norm_bound * cfg.bound / cfg.scale)
    again = simulate(cfg, vs, helper_key=HELPER_KEY)
    assert not np.array_equal(out.sum, again.sum)  # fresh noise every round


def test_large_noise_decodes_without_wrapping_the_field():
    cfg = config(dimension=D, noise_multiplier=1000.0, max_reports=4)
    vs = vectors(2, D, scale=0.01)
    out = simulate(cfg, vs, helper_key=HELPER_KEY)
    noise = out.sum - expected_sum(cfg, vs)
    assert abs(noise.std() / (1000.0 * cfg.bound / cfg.scale) - 1) < 0.1
    with pytest.raises(ValueError, match="wrap"):
        config(noise_multiplier=1e9, max_reports=4, num_frac_bits=12)


def test_the_round_names_its_dp_events_and_a_ledger_spends_them(tmp_path):
    from fedcrypt.dp import PrivacyLedger
    from fedcrypt.dp.accounting import event_epsilon

    cfg = config(dimension=64, noise_multiplier=1.0)
    out = simulate(cfg, vectors(2, 64), helper_key=HELPER_KEY)
    leader_view = out.result.dp_event()
    public = out.result.dp_event(against="public")
    b = float(cfg.bound)
    assert leader_view.l2_sensitivity == b and leader_view.num_clients == 1
    assert leader_view.l1_sensitivity == min(b * b, 8 * b)
    assert leader_view.local_stddev == pytest.approx(cfg.noise_stddev / np.sqrt(2))
    assert public.num_clients == 2 and public.dimension == 64
    eps_leader = event_epsilon(leader_view, 1e-5, "rdp")
    eps_public = event_epsilon(public, 1e-5, "rdp")
    assert eps_public < eps_leader  # the leader knows its own half of the noise
    with PrivacyLedger(tmp_path / "ledger.db", epsilon_budget=100.0, delta=1e-5, accountant="rdp") as ledger:
        assert ledger.spend(leader_view) == pytest.approx(eps_leader, rel=1e-6)
    with pytest.raises(ValueError):
        out.result.dp_event(against="everyone")
    quiet = simulate(config(dimension=64), vectors(2, 64), helper_key=HELPER_KEY)
    with pytest.raises(ValueError, match="no noise"):
        quiet.result.dp_event()
