"""The distributed events' accounting against independent references, and properties.

The RDP curves of the distributed discrete Gaussian (Kairouz et al. Prop. 14) and of the
Skellam mechanism (Agarwal et al. Thm. 3.5) reduce to the Gaussian mechanism's
``alpha / (2 z^2)`` in limits where the reduction is exact or tight; there they are
compared with dp-accounting's own RDP accountant. The generic subsampling bound
(Zhu & Wang 2019) must never be tighter than dp-accounting's exact subsampled-Gaussian
RDP, and not much looser.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import dp_accounting as dpa
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.dp import DistributedDp, DistributedDpConfig, PrivacyLedger, event_epsilon
from fedcrypt.dp._random import CryptoRandom
from fedcrypt.dp.events import DistributedDiscreteGaussianDpEvent, SkellamDpEvent
from fedcrypt.errors import BudgetExceededError


#: fedcrypt evaluates the distributed curves at integer orders (a fractional order is
#: bounded by the next integer one); the references use the same integer orders.
INTEGER_ORDERS = sorted({max(2, math.ceil(o)) for o in dpa.rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS})


def _gaussian_rdp_epsilon(z: float, q: float, steps: int, delta: float) -> float:
    acc = dpa.rdp.RdpAccountant(orders=INTEGER_ORDERS)
    event = dpa.GaussianDpEvent(z) if q == 1 else dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z))
    acc.compose(event, steps)
    return acc.get_epsilon(delta)


@pytest.mark.parametrize("sigma,l2,steps", [(10.0, 10.0, 1), (30.0, 12.0, 100), (5.0, 8.0, 10)])
def test_single_client_discrete_gaussian_is_the_gaussian_curve(sigma: float, l2: float, steps: int) -> None:
    """n = 1: tau = 0 and Prop. 14 is exactly alpha/2 (l2/sigma)^2, the Gaussian's RDP."""
    event = DistributedDiscreteGaussianDpEvent(l2, l2 * 3, sigma, 1, 64)
    ours = event_epsilon(dpa.SelfComposedDpEvent(event, steps), 1e-5, "rdp")
    assert ours == pytest.approx(_gaussian_rdp_epsilon(sigma / l2, 1.0, steps, 1e-5), rel=1e-9)


def test_many_clients_tau_is_negligible_for_large_local_noise() -> None:
    """n = 50 shares of stddev 20 each: tau ~ 10 n e^(-2 pi^2 400 / 2) underflows to 0."""
    event = DistributedDiscreteGaussianDpEvent(100.0, 100.0 * 8, 20.0, 50, 64)
    sigma = 20.0 * math.sqrt(50)
    assert event_epsilon(event, 1e-5, "rdp") == pytest.approx(_gaussian_rdp_epsilon(sigma / 100.0, 1.0, 1, 1e-5),
                                                             rel=1e-9)


def test_skellam_approaches_the_gaussian_with_the_same_variance() -> None:
    """mu large: the Skellam's extra term vanishes; variance 2 mu <-> z = sqrt(2 mu) / l2."""
    l2 = 1000.0
    mu = 0.5 * (1.2 * l2) ** 2  # z = 1.2
    event = SkellamDpEvent(l2, l2 * 32, mu, 1024)
    ours = event_epsilon(dpa.SelfComposedDpEvent(event, 20), 1e-5, "rdp")
    gauss = _gaussian_rdp_epsilon(1.2, 1.0, 20, 1e-5)
    assert gauss <= ours <= gauss * 1.01


@pytest.mark.parametrize("q", [0.01, 0.1, 0.5])
def test_generic_subsampling_bound_is_sound_and_reasonable(q: float) -> None:
    event = DistributedDiscreteGaussianDpEvent(10.0, 30.0, 12.0, 1, 64)  # the Gaussian z = 1.2
    ours = event_epsilon(dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, event), 100), 1e-5, "rdp")
    exact = _gaussian_rdp_epsilon(1.2, q, 100, 1e-5)
    assert exact <= ours * (1 + 1e-9)
    assert ours <= 1.6 * exact


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(2, 200), survivors=st.integers(1, 200), dim=st.integers(1, 1 << 16),
    z=st.floats(0.3, 5.0), mechanism=st.sampled_from(["ddgauss", "skellam"]),
)
def test_fewer_survivors_never_cost_less(n: int, survivors: int, dim: int, z: float, mechanism: str) -> None:
    cfg = DistributedDpConfig(noise_multiplier=z, clip=1.0, expected_clients=n, bits=24, mechanism=mechanism)  # type: ignore[arg-type]
    m = min(survivors, n)
    assert cfg.epsilon(dim, 1.0, 1, 1e-5, survivors=m) >= cfg.epsilon(dim, 1.0, 1, 1e-5) * (1 - 1e-12)


@settings(max_examples=25, deadline=None)
@given(
    dim=st.integers(1, 300), bits=st.integers(12, 32), n=st.integers(1, 50), clip=st.floats(0.01, 100.0),
    scale_input=st.floats(0.0, 1e3), mechanism=st.sampled_from(["ddgauss", "skellam"]), seed=st.binary(min_size=32, max_size=32),
)
def test_encode_outputs_ring_elements_and_decode_inverts_the_transform(dim, bits, n, clip, scale_input, mechanism, seed) -> None:
    cfg = DistributedDpConfig(noise_multiplier=1.0, clip=clip, expected_clients=n, bits=bits, mechanism=mechanism)
    try:
        cfg.scale(dim)
    except ValueError:
        return  # bits too small for n: refused at configuration (tested elsewhere)
    mech = DistributedDp(cfg, dim, rotation_seed=seed)
    vector = np.linspace(-1.0, 1.0, dim) * scale_input
    ring = mech.encode(vector, CryptoRandom(seed))
    assert ring.dtype == np.uint32 and ring.size == mech.ring_length and int(ring.max()) < (1 << bits)
    decoded = mech.decode(ring, 1)
    clipped = vector * min(1.0, clip / max(np.linalg.norm(vector), 1e-300))
    # one client's noise (std z C / sqrt(n)) plus rounding (<= sqrt(d)/s in norm); 8 sigma
    d = mech.ring_length
    tolerance = 8 * (clip / math.sqrt(n)) * math.sqrt(d) + math.sqrt(d) / mech.scale
    assert np.linalg.norm(decoded - clipped) <= tolerance


EVENTS = st.sampled_from([
    dpa.GaussianDpEvent(3.0),
    dpa.PoissonSampledDpEvent(0.2, dpa.GaussianDpEvent(1.5)),
    DistributedDiscreteGaussianDpEvent(50.0, 400.0, 20.0, 10, 64),
    SkellamDpEvent(50.0, 400.0, 3000.0, 64),
])


@settings(max_examples=6, deadline=None)
@given(budget=st.floats(0.5, 6.0), events=st.lists(EVENTS, min_size=1, max_size=8))
def test_ledger_never_overspends_and_refusals_change_nothing(budget: float, events) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = PrivacyLedger(Path(tmp) / "l.db", budget, 1e-5, accountant="rdp")
        accepted = []
        for event in events:
            before = [e.event_json for e in ledger]
            try:
                spent = ledger.spend(event)
            except BudgetExceededError:
                assert [e.event_json for e in ledger] == before
                assert event_epsilon(accepted + [event], 1e-5, "rdp") > budget
            else:
                accepted.append(event)
                assert spent <= budget
        assert [e.event for e in ledger] == accepted
        assert ledger.spent <= budget
        ledger.close()
