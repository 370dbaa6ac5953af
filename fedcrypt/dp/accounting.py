"""Privacy accounting over dp_accounting (Google): epsilon, calibration, any DpEvent.

The mechanisms describe *what noise* they add as a ``DpEvent``; this module says what
that costs. For the standard events it only chooses and drives dp_accounting's own
accountants (``PLDAccountant``, ``RdpAccountant``, ``get_epsilon_gaussian``,
``calibrate_dp_mechanism``); it adds RDP curves only for the two events dp_accounting
does not know (:mod:`fedcrypt.dp.events`).

Invariants:

* ``epsilon`` is an *upper bound* in every code path: PLD is pessimistic, RDP bounds are
  upper bounds, and the only rewrites of an event are exact identities (``T``
  compositions of a Gaussian with noise multiplier ``z`` are one Gaussian with
  ``z / sqrt(T)``; Gaussians on the same neighbouring pair compose to one Gaussian with
  ``z^-2`` summed);
* ``epsilon`` is non-decreasing in ``steps`` and ``sampling_rate`` and non-increasing in
  ``noise_multiplier`` (tested with hypothesis);
* dp_accounting is imported lazily: a missing ``dp`` extra raises
  :class:`~fedcrypt.errors.MissingExtraError` naming it;
* a composition is the multiset of its leaf events (:class:`Composition`), so composing
  one more event never revisits the others; the work for one leaf (its PLD at a
  discretization interval, its RDP vector) is cached per process, and the epsilon is the
  one dp_accounting's own accountants return for the same leaves, bit for bit (tested).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from fedcrypt._optional import require

if TYPE_CHECKING:  # dp_accounting is the optional extra 'dp'
    from dp_accounting import DpEvent

__all__ = [
    "epsilon",
    "calibrate",
    "gaussian_rounds_event",
    "event_epsilon",
    "Composition",
    "extended_rdp_accountant",
    "ACCOUNTANTS",
    "DEFAULT_PLD_INTERVAL",
]

Accountant = Literal["pld", "rdp"]
#: the accountants :func:`epsilon` and :func:`calibrate` accept
ACCOUNTANTS = ("pld", "rdp")
#: dp_accounting's default PLD discretization; we only ever refine it
DEFAULT_PLD_INTERVAL = 1e-4


def _dpa() -> Any:
    return require("dp_accounting", "dp")


# ----------------------------------------------------------------------------- checks
def _check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    return accountant


def _check_real(value: Any, name: str, *, low: float, high: float = math.inf, low_open: bool = True, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    bad_low = value < low or (low_open and value == low)
    bad_high = value > high or (high_open and value == high)
    if not math.isfinite(value) or bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name} must be in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return value


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return int(steps)


# ----------------------------------------------------------------------------- events
def gaussian_rounds_event(noise_multiplier: float, sampling_rate: float, steps: int) -> DpEvent:
    """``steps`` rounds of the Poisson-subsampled Gaussian as one dp_accounting event.

    ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), steps)``; with
    ``q = 1`` the sampling wrapper is left out (it is the identity).
    """
    dpa = _dpa()
    z = _check_real(noise_multiplier, "noise_multiplier", low=0.0)
    q = _check_real(sampling_rate, "sampling_rate", low=0.0, high=1.0)
    steps = _check_steps(steps)
    inner: Any = dpa.GaussianDpEvent(z)
    if q < 1.0:
        inner = dpa.PoissonSampledDpEvent(q, inner)
    return dpa.SelfComposedDpEvent(inner, steps)


def _flatten(event: Any, count: int, out: Counter) -> None:
    """Composition tree -> multiset of leaf events (exact: composition is commutative)."""
    dpa = _dpa()
    if isinstance(event, dpa.SelfComposedDpEvent):
        _flatten(event.event, count * event.count, out)
    elif isinstance(event, dpa.ComposedDpEvent):
        for sub in event.events:
            _flatten(sub, count, out)
    elif isinstance(event, dpa.NoOpDpEvent) or count == 0:
        return
    elif isinstance(event, dpa.PoissonSampledDpEvent) and event.sampling_probability == 1.0:
        _flatten(event.event, count, out)
    else:
        out[event] += count


def _split(counter: Counter) -> tuple[float, list[tuple[Any, int]]]:
    """Split leaves into the combined pure-Gaussian precision ``sum count / z^2`` and the rest."""
    dpa = _dpa()
    precision = 0.0
    rest = []
    for leaf, count in counter.items():
        if isinstance(leaf, dpa.GaussianDpEvent):
            if leaf.noise_multiplier == 0:
                precision = math.inf
            else:
                precision += count / leaf.noise_multiplier**2
        else:
            rest.append((leaf, count))
    return precision, rest


# ----------------------------------------------------------------------------- RDP extension
def _log_comb(n: int, k: np.ndarray) -> np.ndarray:
    from math import lgamma

    lg = np.vectorize(lgamma, otypes=[float])
    return lg(n + 1) - lg(k + 1) - lg(n - k + 1)


def _ddg_rdp(event: Any, alphas: np.ndarray) -> np.ndarray:
    """Kairouz et al. Proposition 14 (see :class:`DistributedDiscreteGaussianDpEvent`)."""
    n, d = event.num_clients, event.dimension
    local_var = event.local_stddev**2
    k = np.arange(1, n)
    tau = 10.0 * float(np.sum(np.exp(-2.0 * math.pi**2 * local_var * k / (k + 1)))) if n > 1 else 0.0
    sigma = math.sqrt(n * local_var)
    a2 = event.l2_sensitivity / sigma
    a1 = event.l1_sensitivity / sigma
    half = alphas / 2.0
    return np.minimum.reduce(
        [
            half * a2**2 + tau * d,
            half * (a2**2 + 2 * a1 * tau + tau**2 * d),
            half * (a2 + math.sqrt(d) * tau) ** 2,
        ]
    )


def _skellam_rdp(event: Any, alphas: np.ndarray) -> np.ndarray:
    """Agarwal et al. Theorem 3.5 (see :class:`SkellamDpEvent`)."""
    l2, l1, mu = event.l2_sensitivity, event.l1_sensitivity, event.mu
    return alphas * l2**2 / (4 * mu) + np.minimum(((2 * alphas - 1) * l2**2 + 6 * l1) / (16 * mu**2), 3 * l1 / (4 * mu))


def _subsampled_rdp(curve, q: float, alpha: int) -> float:
    """Zhu & Wang (ICML 2019) Theorem 9: RDP of the Poisson-subsampled mechanism, integer alpha.

    ``eps'(a) <= 1/(a-1) log( (1-q)^(a-1) (a q - q + 1) + C(a,2) q^2 (1-q)^(a-2) e^eps(2)
    + 3 sum_{l=3}^a C(a,l) (1-q)^(a-l) q^l e^((l-1) eps(l)) )``, also capped by ``eps(a)``.
    """
    plain = float(curve(np.array([float(alpha)]))[0])
    if q == 1.0:
        return plain
    ls = np.arange(2, alpha + 1)
    eps_l = curve(ls.astype(float))
    log_terms = [(alpha - 1) * math.log1p(-q) + math.log(alpha * q - q + 1)]
    coef = _log_comb(alpha, ls) + (alpha - ls) * math.log1p(-q) + ls * math.log(q) + (ls - 1) * eps_l
    coef[1:] += math.log(3.0)
    log_terms.extend(coef.tolist())
    m = max(log_terms)
    total = m + math.log(sum(math.exp(t - m) for t in log_terms))
    return min(plain, total / (alpha - 1))


def extended_rdp_accountant(orders: Any = None) -> Any:
    """dp_accounting's ``RdpAccountant`` that also composes the distributed events.

    Returns an instance of a (lazily built, cached) subclass of
    ``dp_accounting.rdp.RdpAccountant`` whose ``_maybe_compose`` adds the RDP curves of
    :class:`~fedcrypt.dp.events.DistributedDiscreteGaussianDpEvent` and
    :class:`~fedcrypt.dp.events.SkellamDpEvent`, plain or inside a
    ``PoissonSampledDpEvent`` (Zhu & Wang 2019 amplification), and defers every other
    event to dp_accounting. Fractional orders use the next integer order: Renyi
    divergence is non-decreasing in the order, so that is an upper bound.

    Args:
        orders: RDP orders (dp_accounting's defaults if ``None``).
    """
    global _EXTENDED_RDP
    if _EXTENDED_RDP is None:
        _EXTENDED_RDP = _build_extended_rdp()
    accountant = _EXTENDED_RDP(orders)
    accountant._default_orders = orders is None
    return accountant


@functools.lru_cache(maxsize=64)
def _unit_rdp(leaf: Any) -> np.ndarray:
    """The RDP vector of one ``leaf`` at the default orders (read-only, cached)."""
    accountant = extended_rdp_accountant()
    accountant.compose(leaf, 1)
    vector = np.array(accountant._rdp, dtype=np.float64)
    vector.setflags(write=False)
    return vector


_EXTENDED_RDP: Any = None


def _build_extended_rdp() -> type:
    dpa = _dpa()
    from dp_accounting.rdp import rdp_privacy_accountant as rdp_mod

    from fedcrypt.dp.events import DistributedDiscreteGaussianDpEvent, SkellamDpEvent

    def curve_of(event: Any):
        if isinstance(event, DistributedDiscreteGaussianDpEvent):
            return lambda a: _ddg_rdp(event, a)
        if isinstance(event, SkellamDpEvent):
            return lambda a: _skellam_rdp(event, a)
        return None

    class _Extended(rdp_mod.RdpAccountant):
        def _rdp_vector(self, curve, q: float) -> np.ndarray:
            out = np.empty(len(self._orders))
            cache: dict[int, float] = {}
            for i, order in enumerate(self._orders):
                alpha = max(2, math.ceil(order))
                if alpha not in cache:
                    cache[alpha] = _subsampled_rdp(curve, q, alpha)
                out[i] = cache[alpha]
            return out

        def compose_leaf(self, leaf: Any, count: int) -> None:
            """``compose(leaf, count)``, from a cached RDP vector of one ``leaf``.

            For leaves whose RDP adds up linearly (``_rdp += count * vector(leaf)``, as
            dp_accounting and :meth:`_maybe_compose` do), the vector is computed once per
            leaf (default orders only); the sum is the same floating-point operation, so the
            result is identical to ``compose``. Other leaves are composed directly.
            """
            linear = isinstance(leaf, (dpa.GaussianDpEvent, DistributedDiscreteGaussianDpEvent, SkellamDpEvent)) or (
                isinstance(leaf, dpa.PoissonSampledDpEvent)
                and isinstance(leaf.event, (dpa.GaussianDpEvent, DistributedDiscreteGaussianDpEvent, SkellamDpEvent))
            )
            if not linear or not getattr(self, "_default_orders", False):
                self.compose(leaf, count)
                return
            self._rdp += count * _unit_rdp(leaf)

        def _maybe_compose(self, event, count, do_compose):
            curve = curve_of(event)
            q = 1.0
            if curve is None and isinstance(event, dpa.PoissonSampledDpEvent):
                curve = curve_of(event.event)
                q = event.sampling_probability
            if curve is None:
                return super()._maybe_compose(event, count, do_compose)
            if do_compose and count and q > 0:
                self._rdp += count * self._rdp_vector(curve, q)
            return None

    return _Extended


# ----------------------------------------------------------------------------- epsilon
def _pld_interval(rough_epsilon: float) -> float:
    """A discretization fine enough for 1% accuracy at small epsilon (default otherwise)."""
    if not math.isfinite(rough_epsilon) or rough_epsilon <= 0:
        return DEFAULT_PLD_INTERVAL
    return min(DEFAULT_PLD_INTERVAL, max(1e-6, rough_epsilon * 1e-3))


def _rdp_epsilon(precision: float, rest: list[tuple[Any, int]], delta: float) -> float:
    dpa = _dpa()
    acc = extended_rdp_accountant()
    if precision:
        acc.compose_leaf(dpa.GaussianDpEvent(precision**-0.5), 1)
    for leaf, count in rest:
        acc.compose_leaf(leaf, count)
    return float(acc.get_epsilon(delta))


def _pld_cached(leaf: Any) -> bool:
    """Whether :func:`_base_pld` builds this leaf's PLD (as PLDAccountant would)."""
    dpa = _dpa()
    plain = (dpa.GaussianDpEvent, dpa.LaplaceDpEvent)
    return isinstance(leaf, plain) or (isinstance(leaf, dpa.PoissonSampledDpEvent) and isinstance(leaf.event, plain))


@functools.lru_cache(maxsize=16)
def _base_pld(leaf: Any, interval: float) -> Any:
    """The PLD of one ``leaf`` at ``interval``, as ``dp_accounting.pld.PLDAccountant`` builds it.

    ``None`` when the leaf adds no privacy loss (sampling probability 0); cached, because
    building it is most of a ledger spend's cost (about 1.6 s for a Poisson-subsampled
    Gaussian at interval 1e-4). The objects are never mutated: ``compose`` and
    ``self_compose`` return new distributions.
    """
    dpa = _dpa()
    pld = dpa.pld.privacy_loss_distribution
    relation = dpa.NeighboringRelation.ADD_OR_REMOVE_ONE  # PLDAccountant's default
    sampled = isinstance(leaf, dpa.PoissonSampledDpEvent)
    inner, q = (leaf.event, leaf.sampling_probability) if sampled else (leaf, 1.0)
    if q == 0:
        return None
    if isinstance(inner, dpa.GaussianDpEvent):
        if not sampled:  # PLDAccountant: standard_deviation = z / sqrt(count), count = 1
            return pld.from_gaussian_mechanism(
                standard_deviation=inner.noise_multiplier / math.sqrt(1),
                value_discretization_interval=interval,
                neighboring_relation=relation,
            )
        return pld.from_gaussian_mechanism(
            standard_deviation=inner.noise_multiplier,
            value_discretization_interval=interval,
            sampling_prob=q,
            neighboring_relation=relation,
        )
    if not sampled:
        return pld.from_laplace_mechanism(parameter=inner.noise_multiplier, value_discretization_interval=interval)
    return pld.from_laplace_mechanism(parameter=inner.noise_multiplier, value_discretization_interval=interval, sampling_prob=q)


def _pld_epsilon(precision: float, rest: list[tuple[Any, int]], interval: float, delta: float) -> float:
    """What ``PLDAccountant(interval)`` composing the merged Gaussian, then every
    ``(leaf, count)`` of ``rest``, returns for ``get_epsilon(delta)``, from cached PLDs."""
    dpa = _dpa()
    if not all(_pld_cached(leaf) for leaf, _ in rest):  # another event type: dp_accounting composes it
        acc = dpa.pld.PLDAccountant(value_discretization_interval=interval)
        if precision:
            acc.compose(dpa.GaussianDpEvent(precision**-0.5))
        for leaf, count in rest:
            acc.compose(leaf, count)
        return float(acc.get_epsilon(delta))
    if any(_leaf_noise(leaf) == 0 and _leaf_q(leaf) > 0 for leaf, _ in rest):
        return math.inf  # a non-private event
    composed = dpa.pld.privacy_loss_distribution.identity(value_discretization_interval=interval)
    if precision:
        composed = composed.compose(_base_pld(dpa.GaussianDpEvent(precision**-0.5), interval))
    for leaf, count in rest:
        base = _base_pld(leaf, interval)
        if base is not None:
            # PLDAccountant self-composes every leaf but a plain Gaussian (none is left in rest)
            composed = composed.compose(base.self_compose(count))
    return float(composed.get_epsilon_for_delta(delta))


def _leaf_q(leaf: Any) -> float:
    return float(getattr(leaf, "sampling_probability", 1.0))


def _leaf_noise(leaf: Any) -> float:
    return float(getattr(leaf, "event", leaf).noise_multiplier)


def _epsilon_of_leaves(precision: float, rest: list[tuple[Any, int]], delta: float, accountant: str) -> float:
    dpa = _dpa()
    if precision == math.inf:
        return math.inf
    if any(_pld_cached(leaf) and _leaf_noise(leaf) == 0 and _leaf_q(leaf) > 0 for leaf, _ in rest):
        return math.inf  # a noiseless Laplace (or sampled) release: both accountants divide by its scale
    if not rest:
        if precision == 0:
            return 0.0
        if accountant == "pld":
            # Exact epsilon of one Gaussian (Balle & Wang 2018), dp_accounting's own.
            return float(dpa.get_epsilon_gaussian(precision**-0.5, delta))
        return _rdp_epsilon(precision, rest, delta)
    if accountant == "rdp":
        return _rdp_epsilon(precision, rest, delta)
    pld = dpa.pld.PLDAccountant
    events = ([dpa.GaussianDpEvent(precision**-0.5)] if precision else []) + [leaf for leaf, _ in rest]
    probe = pld()
    if not all(probe.supports(e) for e in events):
        return _rdp_epsilon(precision, rest, delta)
    rough = _rdp_epsilon(precision, rest, delta)
    return _pld_epsilon(precision, rest, _pld_interval(rough), delta)


def event_epsilon(event: DpEvent | Sequence[DpEvent], delta: float, accountant: Accountant = "pld") -> float:
    """Epsilon at ``delta`` of any supported dp_accounting event (or list of events).

    ``"pld"`` uses dp_accounting's PLD accountant where it supports every leaf event
    (and the exact analytic Gaussian when all leaves are Gaussian); otherwise, and for
    ``"rdp"``, the RDP accountant extended with the distributed events.

    Args:
        event: a ``DpEvent`` or a list of them (composed).
        delta: target delta in (0, 1).
        accountant: ``"pld"`` or ``"rdp"``.
    """
    events = event if isinstance(event, (list, tuple)) else [event]
    return Composition.of(events).epsilon(delta, accountant)


class Composition:
    """The composition ``E_1 o ... o E_k`` of DpEvents, kept as the multiset of its leaves.

    Composition is commutative, so the composed event is determined by its leaf events and
    how often each occurs (self-compositions and compositions flattened, a sampling
    probability of 1 dropped, no-ops left out); :func:`event_epsilon` is this class's
    :meth:`epsilon` of the list it is given. Composing one more event costs the size of that
    event, never the size of the history; :meth:`epsilon` costs one evaluation of the
    multiset (it grows with the number of *distinct* leaves, and, for PLD, with the support
    of the composed privacy loss, not with the number of events composed). This is what
    lets :class:`~fedcrypt.dp.ledger.PrivacyLedger` spend round 1,000 at the cost of
    round 1, with the epsilon of a from-scratch composition.

    The single-leaf work (a leaf's PLD, its RDP vector) is cached per process, so repeated
    evaluations with the same kinds of events cost a fraction of the first.
    """

    def __init__(self) -> None:
        self._leaves: Counter = Counter()

    @classmethod
    def of(cls, events: DpEvent | Sequence[DpEvent]) -> "Composition":
        """The composition of every event of ``events`` (a list), in order."""
        composition = cls()
        for event in events:
            composition.compose(event)
        return composition

    def compose(self, event: DpEvent, count: int = 1) -> None:
        """Add ``count`` times ``event`` (a ``DpEvent``)."""
        if not isinstance(event, _dpa().DpEvent):
            raise TypeError(f"event must be a dp_accounting DpEvent, got {type(event).__name__}")
        _flatten(event, _check_steps(count), self._leaves)

    def copy(self) -> "Composition":
        """An independent copy (composing into it leaves this one unchanged)."""
        other = Composition()
        other._leaves = self._leaves.copy()
        return other

    def epsilon(self, delta: float, accountant: Accountant = "pld") -> float:
        """Epsilon at ``delta`` of the whole composition (see :func:`event_epsilon`)."""
        _check_accountant(accountant)
        delta = _check_real(delta, "delta", low=0.0, high=1.0, high_open=True)
        precision, rest = _split(self._leaves)
        return _epsilon_of_leaves(precision, rest, delta, accountant)

    def __len__(self) -> int:
        """The number of distinct leaf events."""
        return len(self._leaves)


def epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: Accountant = "pld",
) -> float:
    """Epsilon of ``steps`` rounds of the Poisson-subsampled Gaussian mechanism.

    Each round releases a sum of clipped updates (L2 sensitivity ``C``) plus
    ``N(0, (noise_multiplier * C)^2)``, every client taking part independently with
    probability ``sampling_rate`` (add/remove-one adjacency).

    Args:
        noise_multiplier: ``z > 0``.
        sampling_rate: ``q`` in (0, 1].
        steps: number of rounds ``T >= 0``.
        delta: target delta in (0, 1).
        accountant: ``"pld"`` (tight, dp_accounting's PLD accountant; exact analytic
            Gaussian when ``q = 1``) or ``"rdp"`` (dp_accounting's RDP accountant).

    Returns:
        The smallest epsilon the accountant certifies at ``delta``.
    """
    _check_accountant(accountant)
    delta = _check_real(delta, "delta", low=0.0, high=1.0, high_open=True)
    value = event_epsilon(gaussian_rounds_event(noise_multiplier, sampling_rate, steps), delta, accountant)
    if float(sampling_rate) < 1.0:
        # Subsampling never costs privacy (joint convexity of the hockey-stick divergence),
        # so the unsampled epsilon is also an upper bound; taking the minimum removes the
        # non-monotonicity dp_accounting's RDP shows near q = 1, where it drops fractional
        # orders that fail to converge.
        value = min(value, event_epsilon(gaussian_rounds_event(noise_multiplier, 1.0, steps), delta, accountant))
    return value


def calibrate(
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    accountant: Accountant = "pld",
) -> float:
    """The smallest noise multiplier whose :func:`epsilon` is at most ``target_epsilon``.

    Uses dp_accounting: ``get_sigma_gaussian`` (exact) when ``q = 1`` with ``"pld"``,
    otherwise ``calibrate_dp_mechanism`` (Brent's method) over fresh accountants, with a
    relative tolerance of 1e-4.

    Raises:
        ValueError: out-of-range arguments, or ``steps == 0`` (no noise is needed).
    """
    _check_accountant(accountant)
    target = _check_real(target_epsilon, "target_epsilon", low=0.0)
    delta = _check_real(delta, "delta", low=0.0, high=1.0, high_open=True)
    q = _check_real(sampling_rate, "sampling_rate", low=0.0, high=1.0)
    steps = _check_steps(steps)
    if steps == 0:
        raise ValueError("steps must be >= 1 to calibrate a noise multiplier")
    dpa = _dpa()
    if q == 1.0 and accountant == "pld":
        return float(dpa.get_sigma_gaussian(target, delta)) * math.sqrt(steps)

    def rdp_event(z: float) -> Any:
        return gaussian_rounds_event(z, q, steps)

    z_rdp = float(
        dpa.calibrate_dp_mechanism(
            dpa.rdp.RdpAccountant,
            rdp_event,
            target,
            delta,
            bracket_interval=dpa.LowerEndpointAndGuess(1e-3, 1.0),
        )
    )
    if accountant == "rdp":
        return z_rdp
    interval = _pld_interval(target)

    def make_pld() -> Any:
        return dpa.pld.PLDAccountant(value_discretization_interval=interval)

    def pld_epsilon(z: float) -> float:
        acc = make_pld()
        acc.compose(rdp_event(z))
        return float(acc.get_epsilon(delta))

    # PLD is tighter than RDP, so the answer lies at or below z_rdp: halve down from
    # z_rdp until epsilon passes the target, never evaluating far below the answer
    # (a tiny z with a fine discretization would need an enormous PLD).
    high = z_rdp * 1.001
    low = z_rdp / 2
    for _ in range(40):
        if pld_epsilon(low) > target:
            break
        high, low = low, low / 2
    else:  # pragma: no cover - epsilon(z) -> inf as z -> 0
        raise ValueError("could not bracket the noise multiplier")
    return float(
        dpa.calibrate_dp_mechanism(
            make_pld,
            rdp_event,
            target,
            delta,
            bracket_interval=dpa.ExplicitBracketInterval(low, high),
            tol=low * 1e-3,
        )
    )
