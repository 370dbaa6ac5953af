"""fedcrypt.dp.epsilon / calibrate against dp-accounting's own accountants, and their laws."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import dp_accounting as dpa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.dp import calibrate, epsilon, event_epsilon

QS = [0.001, 0.01, 0.1, 1.0]
ZS = [0.5, 1.0, 2.0, 5.0, 10.0]
TS = [1, 10, 100, 1000, 10000]
DELTAS = [1e-5, 1e-6]


def reference_epsilons(z: float, q: float, steps: int, accountant: str) -> dict[float, float]:
    """dp-accounting used directly, without any of fedcrypt's rewrites.

    q = 1: the exact analytic Gaussian of T compositions (dp-accounting's
    get_epsilon_gaussian of z / sqrt(T)) for PLD; RDP composes GaussianDpEvent T times.
    q < 1: the accountant composes PoissonSampledDpEvent(q, GaussianDpEvent(z)) T times;
    the PLD reference uses dp-accounting's default discretization (1e-4), refined to
    epsilon / 1000 where epsilon is below 0.1 (where 1e-4 alone would be a >= 0.1%
    error), epsilon estimated by dp-accounting's RDP accountant.
    """
    if accountant == "rdp":
        acc = dpa.rdp.RdpAccountant()
        event = dpa.GaussianDpEvent(z) if q == 1 else dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z))
        acc.compose(event, steps)
        return {d: acc.get_epsilon(d) for d in DELTAS}
    if q == 1:
        return {d: dpa.get_epsilon_gaussian(z / math.sqrt(steps), d) for d in DELTAS}
    rough = dpa.rdp.RdpAccountant().compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), steps)
    interval = min(1e-4, max(1e-6, rough.get_epsilon(1e-6) * 1e-3))
    acc = dpa.pld.PLDAccountant(value_discretization_interval=interval)
    acc.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), steps)
    return {d: acc.get_epsilon(d) for d in DELTAS}


def _check_point(z: float, q: float, steps: int, accountant: str) -> float:
    ref = reference_epsilons(z, q, steps, accountant)
    worst = 0.0
    for delta, expected in ref.items():
        got = epsilon(z, q, steps, delta, accountant)
        worst = max(worst, abs(got - expected) / expected)
    assert worst <= 0.01, (z, q, steps, accountant, worst)
    return worst


# Points chosen to cover the corners cheaply: tiny epsilon, huge epsilon, q = 1, long runs.
FAST_POINTS = [
    (10.0, 0.001, 1), (0.5, 0.001, 1), (1.0, 0.01, 1000), (2.0, 0.1, 100),
    (5.0, 1.0, 10000), (0.5, 1.0, 1), (10.0, 0.1, 10000), (1.0, 1.0, 100),
]


# The PLD reference takes 10-45 s on the points left out here; they run in the slow grid.
PLD_FAST = [p for p in FAST_POINTS if p not in [(0.5, 0.001, 1), (1.0, 0.01, 1000), (2.0, 0.1, 100)]]


@pytest.mark.parametrize("z,q,steps", FAST_POINTS)
def test_epsilon_matches_dp_accounting_rdp(z: float, q: float, steps: int) -> None:
    _check_point(z, q, steps, "rdp")


@pytest.mark.parametrize("z,q,steps", PLD_FAST)
def test_epsilon_matches_dp_accounting_pld(z: float, q: float, steps: int) -> None:
    _check_point(z, q, steps, "pld")


@pytest.mark.slow
@pytest.mark.parametrize("accountant", ["pld", "rdp"])
@pytest.mark.parametrize("q", QS)
def test_epsilon_matches_dp_accounting_full_grid(q: float, accountant: str) -> None:
    """The acceptance grid: q x z x T x delta (deltas checked inside each point)."""
    for z, steps in itertools.product(ZS, TS):
        _check_point(z, q, steps, accountant)


CALIBRATE_FAST = [(0.7, 1.0, 1000, "pld"), (5.0, 0.001, 1, "pld")] + [
    (z, q, steps, "rdp") for z, q, steps in [(1.0, 0.01, 100), (2.0, 0.1, 10), (0.7, 1.0, 1000), (5.0, 0.001, 1)]
]


@pytest.mark.parametrize("z,q,steps,accountant", CALIBRATE_FAST)
def test_calibrate_inverts_epsilon(z: float, q: float, steps: int, accountant: str) -> None:
    eps = epsilon(z, q, steps, 1e-5, accountant)
    z_back = calibrate(eps, 1e-5, q, steps, accountant)
    assert abs(z_back - z) <= 0.01 * z
    # and the calibrated noise really meets the target
    assert epsilon(z_back, q, steps, 1e-5, accountant) <= eps * 1.01


@pytest.mark.slow
@pytest.mark.parametrize("q", QS)
def test_calibrate_round_trip_grid(q: float) -> None:
    """calibrate(epsilon(z)) == z to 1%: PLD at delta 1e-5, RDP at both deltas."""
    for z, steps in itertools.product([0.7, 2.0, 10.0], [1, 100, 10000]):
        if not (q == 0.1 and z < 1 and steps == 10000):  # epsilon ~ 800: PLD needs > 10 GB there
            eps = epsilon(z, q, steps, 1e-5)
            assert abs(calibrate(eps, 1e-5, q, steps) - z) <= 0.01 * z, (z, q, steps)
        for delta in DELTAS:
            eps = epsilon(z, q, steps, delta, "rdp")
            assert abs(calibrate(eps, delta, q, steps, "rdp") - z) <= 0.01 * z, (z, q, steps, delta)


@pytest.mark.slow
def test_calibrate_pld_with_sampling() -> None:
    for z, q, steps in [(2.0, 0.1, 10), (1.0, 0.01, 100)]:
        eps = epsilon(z, q, steps, 1e-5)
        assert abs(calibrate(eps, 1e-5, q, steps) - z) <= 0.01 * z


# --------------------------------------------------------------------------- laws
@settings(max_examples=15, deadline=None)
@given(
    z=st.floats(0.6, 20.0),
    q=st.floats(0.001, 1.0),
    steps=st.integers(1, 2000),
    extra=st.integers(1, 2000),
)
def test_epsilon_monotone_in_steps_rdp(z: float, q: float, steps: int, extra: int) -> None:
    assert epsilon(z, q, steps, 1e-5, "rdp") <= epsilon(z, q, steps + extra, 1e-5, "rdp")


@settings(max_examples=15, deadline=None)
@given(z=st.floats(0.6, 20.0), q=st.floats(0.001, 0.999), factor=st.floats(1.01, 10.0), steps=st.integers(1, 500))
def test_epsilon_monotone_in_sampling_rate_rdp(z: float, q: float, factor: float, steps: int) -> None:
    assert epsilon(z, q, steps, 1e-5, "rdp") <= epsilon(z, min(1.0, q * factor), steps, 1e-5, "rdp")


@settings(max_examples=15, deadline=None)
@given(z=st.floats(0.6, 20.0), factor=st.floats(1.01, 10.0), q=st.floats(0.001, 1.0), steps=st.integers(1, 500))
def test_epsilon_decreasing_in_noise_rdp(z: float, factor: float, q: float, steps: int) -> None:
    assert epsilon(z * factor, q, steps, 1e-5, "rdp") <= epsilon(z, q, steps, 1e-5, "rdp")


@settings(max_examples=2, deadline=None)
@given(
    z=st.floats(1.0, 5.0), q=st.sampled_from([0.05, 0.2, 1.0]), steps=st.integers(1, 20),
    factor=st.floats(1.1, 4.0),
)
def test_pld_epsilon_monotone_in_every_argument(z: float, q: float, steps: int, factor: float) -> None:
    base = epsilon(z, q, steps, 1e-5)
    assert base <= epsilon(z, q, int(steps * factor) + 1, 1e-5) * (1 + 1e-9)
    assert base <= epsilon(z, min(1.0, q * factor), steps, 1e-5) * (1 + 1e-9)
    assert epsilon(z * factor, q, steps, 1e-5) <= base * (1 + 1e-9)


def test_pld_is_never_looser_than_rdp() -> None:
    for z, q, steps in PLD_FAST[:3]:
        assert epsilon(z, q, steps, 1e-5, "pld") <= epsilon(z, q, steps, 1e-5, "rdp")


def test_zero_steps_cost_nothing() -> None:
    assert epsilon(1.0, 0.5, 0, 1e-5) == 0.0
    assert event_epsilon(dpa.NoOpDpEvent(), 1e-5) == 0.0


# Pinned values (known-answer): a refactor that changes an output is caught.
def test_pinned_values() -> None:
    # q = 1, one step: the analytic Gaussian mechanism (Balle & Wang 2018, Thm. 8),
    # delta(eps) = Phi(1/(2s) - eps s) - e^eps Phi(-1/(2s) - eps s), written out here.
    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    eps = epsilon(1.0, 1.0, 1, 1e-5)
    assert eps == pytest.approx(4.377178, rel=1e-5)
    assert phi(0.5 - eps) - math.exp(eps) * phi(-0.5 - eps) == pytest.approx(1e-5, rel=1e-6)
    assert epsilon(1.0, 0.01, 1000, 1e-5, "rdp") == pytest.approx(2.101366525, rel=1e-6)
    assert epsilon(1.0, 0.01, 1000, 1e-5, "pld") == pytest.approx(1.828244, rel=1e-4)
    assert calibrate(1.0, 1e-5, 1.0, 1) == pytest.approx(dpa.get_sigma_gaussian(1.0, 1e-5), rel=1e-9)


# --------------------------------------------------------------------------- misuse
@pytest.mark.parametrize(
    "kwargs,exc,message",
    [
        ({"noise_multiplier": 0.0}, ValueError, r"noise_multiplier must be in \(0, inf\), got 0.0"),
        ({"noise_multiplier": float("nan")}, ValueError, r"noise_multiplier must be in"),
        ({"sampling_rate": 1.5}, ValueError, r"sampling_rate must be in \(0, 1\], got 1.5"),
        ({"sampling_rate": 0.0}, ValueError, r"sampling_rate must be in \(0, 1\]"),
        ({"steps": -1}, ValueError, r"steps must be >= 0, got -1"),
        ({"steps": 1.5}, TypeError, r"steps must be an int, got float"),
        ({"delta": 1.0}, ValueError, r"delta must be in \(0, 1\), got 1.0"),
        ({"accountant": "moments"}, ValueError, r"accountant must be one of \('pld', 'rdp'\), got 'moments'"),
        ({"noise_multiplier": "1"}, TypeError, r"noise_multiplier must be a real number, got str"),
    ],
)
def test_epsilon_refuses_bad_arguments(kwargs, exc, message) -> None:
    args = {"noise_multiplier": 1.0, "sampling_rate": 0.1, "steps": 10, "delta": 1e-5, **kwargs}
    with pytest.raises(exc, match=message):
        epsilon(**args)


def test_calibrate_refuses_zero_steps() -> None:
    with pytest.raises(ValueError, match=r"steps must be >= 1 to calibrate a noise multiplier"):
        calibrate(1.0, 1e-5, 0.1, 0)


def test_missing_dp_extra_names_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['dp_accounting'] = None\n"
        "import fedcrypt.dp as dp\n"
        "from fedcrypt.errors import MissingExtraError\n"
        "try:\n"
        "    dp.epsilon(1.0, 0.1, 10, 1e-5)\n"
        "except MissingExtraError as exc:\n"
        "    print('OK', exc.extra, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("OK dp ") and "pip install 'fedcrypt[dp]'" in out
