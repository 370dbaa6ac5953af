"""Every configuration that DistributedDpConfig accepts encodes (hypothesis over the space).

Regression: ``DistributedDpConfig(1.0, 1.0, 1, bits=31, mechanism="skellam")`` was accepted,
then its first ``encode`` asked the Poisson sampler for ``mu`` above 2^52 and raised.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedcrypt.dp import DistributedDp, DistributedDpConfig
from fedcrypt.dp._random import CryptoRandom

# mostly usable values, sometimes any positive float (subnormal to 1.8e308)
positive = st.one_of(
    st.floats(min_value=1e-3, max_value=1e3),
    st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False),
)


def _check_encoding(cfg: DistributedDpConfig, dim: int, vector: np.ndarray, seed: int) -> None:
    mech = DistributedDp(cfg, dim, rotation_seed=bytes(32))
    ring = mech.encode(vector, CryptoRandom(seed.to_bytes(32, "big")))
    assert ring.dtype == np.uint32 and ring.size == mech.ring_length
    assert int(ring.max()) < (1 << cfg.bits)
    decoded = mech.decode(ring, 1)
    assert decoded.shape == (dim,) and np.all(np.isfinite(decoded))
    event = mech.event(1)
    assert all(math.isfinite(v) and v > 0 for v in (event.l2_sensitivity, event.l1_sensitivity))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    noise_multiplier=positive,
    clip=positive,
    expected_clients=st.one_of(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=1 << 40)),
    bits=st.integers(min_value=2, max_value=32),
    beta=st.one_of(st.just(0.0), st.just(math.exp(-0.5)), st.floats(min_value=0.0, max_value=1.0, exclude_max=True)),
    modclip_prob=st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True),
    mechanism=st.sampled_from(["ddgauss", "skellam"]),
    dim=st.integers(min_value=1, max_value=64),
    magnitude=st.floats(min_value=-1e6, max_value=1e6),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_accepted_config_encodes(noise_multiplier, clip, expected_clients, bits, beta, modclip_prob,
                                       mechanism, dim, magnitude, seed) -> None:
    try:
        cfg = DistributedDpConfig(noise_multiplier, clip, expected_clients, bits=bits, beta=beta,
                                  modclip_prob=modclip_prob, mechanism=mechanism)
        DistributedDp(cfg, dim)
    except ValueError:
        assume(False)  # refused up front, with a message naming the bound (tests below)
    _check_encoding(cfg, dim, np.full(dim, magnitude), seed)


@pytest.mark.parametrize("mechanism", ["skellam", "ddgauss"])
@pytest.mark.parametrize(("bits", "clients"), [(31, 1), (32, 1), (32, 2), (32, 3)])
def test_wide_rings_with_few_clients_encode(bits: int, clients: int, mechanism: str) -> None:
    """The issue's cases: local noise above 2^52 (Skellam's mu up to about 6e16)."""
    cfg = DistributedDpConfig(noise_multiplier=1.0, clip=1.0, expected_clients=clients, bits=bits, mechanism=mechanism)
    _check_encoding(cfg, 1, np.zeros(1), 7)
    _check_encoding(cfg, 1000, np.ones(1000), 8)


def test_a_ring_too_small_is_refused_when_built_with_the_bound_named() -> None:
    with pytest.raises(ValueError, match=r"bits=4 is too small for expected_clients=100 .*half-width 2\^3 - 1"):
        DistributedDpConfig(1.0, 1.0, 100, bits=4)
    cfg = DistributedDpConfig(1.0, 1.0, 6, bits=4)  # fits short vectors only
    with pytest.raises(ValueError, match=r"bits=4 is too small .* and 1024 padded coordinates"):
        DistributedDp(cfg, 1000)
    mech = DistributedDp(cfg)
    with pytest.raises(ValueError, match=r"bits=4 is too small"):
        mech.encode(np.zeros(1000))
    assert mech.dim is None  # nothing was fixed by the refused call


@pytest.mark.parametrize(
    ("noise_multiplier", "clip"),
    [(1.0, 5e-324), (1e-200, 1.0), (1e300, 1e10), (1.0, 1.3e307)],
)
def test_extreme_noise_and_clip_are_refused_when_built(noise_multiplier: float, clip: float) -> None:
    with pytest.raises(ValueError, match=r"cannot be scaled into a 16-bit ring .* must be finite and positive"):
        DistributedDpConfig(noise_multiplier, clip, 10, bits=16)


@pytest.mark.parametrize(
    ("entry", "norm"),
    [(5.8e-214, 5.8e-214 * math.sqrt(2)), (1e200, 1e200 * math.sqrt(2)), (1.7e308, math.inf)],
)
def test_clip_l2_takes_the_true_norm_of_tiny_and_huge_vectors(entry: float, norm: float) -> None:
    """The plain norm of [1e-214, 1e-214] underflows to 0 (nothing was clipped) and that of
    [1e200, 1e200] overflows (it was refused as non-finite)."""
    from fedcrypt.dp.clipping import clip_l2

    clip = 1e-214 if entry < 1 else 1.0
    clipped, measured = clip_l2(np.array([entry, entry]), clip)
    assert measured == pytest.approx(norm, rel=1e-12) if math.isfinite(norm) else measured == norm
    assert clipped[0] == clipped[1] == pytest.approx(clip / math.sqrt(2), rel=1e-12)
