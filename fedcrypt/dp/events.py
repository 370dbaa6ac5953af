"""DpEvents for the distributed mechanisms, and a canonical JSON codec for events.

The distributed discrete Gaussian and Skellam mechanisms are described by two new
dp_accounting ``DpEvent`` subclasses; :mod:`fedcrypt.dp.accounting` knows what they
cost. Every event the ledger stores goes through :func:`event_to_json` /
:func:`event_from_json`.

Invariants:

* the encoding is canonical: sorted keys, no whitespace, floats written with Python's
  shortest round-tripping ``repr``; ``event_from_json(event_to_json(e)) == e`` and
  ``event_to_json(event_from_json(s)) == s`` for every accepted ``s``;
* the decoder is strict: unknown types, missing or extra fields, wrong JSON types
  (``true`` is not an integer), NaN/infinity, out-of-range values, nesting deeper than
  :data:`MAX_DEPTH` or text longer than :data:`MAX_JSON_CHARS` raise ``ValueError``
  before any event is built.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from fedcrypt._optional import require

# The extra 'dp' (dp-accounting and attrs): without it, importing this module raises
# MissingExtraError naming the extra, never a bare ModuleNotFoundError.
if TYPE_CHECKING:
    import attr
    import dp_accounting
else:
    dp_accounting = require("dp_accounting", "dp")
    attr = require("attr", "dp")

__all__ = [
    "DistributedDiscreteGaussianDpEvent",
    "SkellamDpEvent",
    "event_to_json",
    "event_from_json",
    "SUPPORTED_EVENTS",
    "MAX_DEPTH",
    "MAX_JSON_CHARS",
]

MAX_DEPTH = 16
MAX_JSON_CHARS = 1 << 16


@attr.define(frozen=True)
class DistributedDiscreteGaussianDpEvent(dp_accounting.DpEvent):
    """One round of the distributed discrete Gaussian (Kairouz, Liu, Steinke, ICML 2021).

    Each of ``num_clients`` clients adds ``N_Z(0, local_stddev^2)`` per coordinate to its
    scaled, rotated, conditionally rounded integer vector; secure aggregation reveals only
    the sum. In the integer domain, one client's contribution has L2 norm at most
    ``l2_sensitivity`` and L1 norm at most ``l1_sensitivity``.

    Math (Kairouz et al., Theorem 1 and Proposition 14): with ``n = num_clients``,
    ``d = dimension``, ``sigma^2 = n * local_stddev^2`` (the variance of the summed noise),
    ``tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 local_stddev^2 k/(k+1))``,
    ``a2 = l2_sensitivity / sigma`` and ``a1 = l1_sensitivity / sigma``, the round is
    ``(alpha, eps(alpha))``-RDP for every integer ``alpha > 1`` with::

        eps(alpha) = min( alpha/2 * a2^2 + tau * d,
                          alpha/2 * (a2^2 + 2 a1 tau + tau^2 d),
                          alpha/2 * (a2 + sqrt(d) tau)^2 ).

    Threat model: honest-but-curious server and clients that follow the protocol; the
    noise of clients that drop out is missing from the sum, so the event must be built
    with the number of clients that actually *survived* (dropout-aware accounting).
    """

    l2_sensitivity: float
    l1_sensitivity: float
    local_stddev: float
    num_clients: int
    dimension: int


@attr.define(frozen=True)
class SkellamDpEvent(dp_accounting.DpEvent):
    """One round of the (distributed) Skellam mechanism (Agarwal, Kairouz, Liu, NeurIPS 2021).

    The summed noise per coordinate is ``Sk(mu, mu) = Poisson(mu) - Poisson(mu)`` with
    variance ``2 mu`` (``mu`` = sum of the surviving clients' local ``mu``; Skellam is
    closed under sums, so there is no ``tau`` term). One client's integer contribution
    has norms at most ``l2_sensitivity`` (L2) and ``l1_sensitivity`` (L1).

    Math (Agarwal et al., Theorem 3.5): for every ``alpha > 1``::

        eps(alpha) = alpha * l2^2 / (4 mu)
                     + min( ((2 alpha - 1) l2^2 + 6 l1) / (16 mu^2),  3 l1 / (4 mu) ).

    Threat model: as :class:`DistributedDiscreteGaussianDpEvent`; ``mu`` must count only
    the survivors' noise.
    """

    l2_sensitivity: float
    l1_sensitivity: float
    mu: float
    dimension: int


# ----------------------------------------------------------------------------- codec
def _finite(value: Any, name: str, *, low: float = 0.0, low_open: bool = True, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite")
    if value < low or (low_open and value == low) or value > high:
        raise ValueError(f"{name} out of range")
    return value


def _int(value: Any, name: str, *, low: int = 1, high: int = 1 << 62) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} out of range")
    return value


def _fields(obj: dict, expected: set[str], kind: str) -> None:
    if set(obj) != expected:
        raise ValueError(f"{kind} event has fields {sorted(obj)}, expected {sorted(expected)}")


def _encode(event: dp_accounting.DpEvent, depth: int) -> dict:
    if depth > MAX_DEPTH:
        raise ValueError(f"event nesting deeper than {MAX_DEPTH}")
    if isinstance(event, dp_accounting.NoOpDpEvent):
        return {"type": "noop"}
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return {"type": "gaussian", "noise_multiplier": float(event.noise_multiplier)}
    if isinstance(event, dp_accounting.LaplaceDpEvent):
        return {"type": "laplace", "noise_multiplier": float(event.noise_multiplier)}
    if isinstance(event, dp_accounting.PoissonSampledDpEvent):
        return {
            "type": "poisson_sampled",
            "sampling_probability": float(event.sampling_probability),
            "event": _encode(event.event, depth + 1),
        }
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return {"type": "self_composed", "count": int(event.count), "event": _encode(event.event, depth + 1)}
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return {"type": "composed", "events": [_encode(e, depth + 1) for e in event.events]}
    if isinstance(event, DistributedDiscreteGaussianDpEvent):
        return {
            "type": "distributed_discrete_gaussian",
            "l2_sensitivity": float(event.l2_sensitivity),
            "l1_sensitivity": float(event.l1_sensitivity),
            "local_stddev": float(event.local_stddev),
            "num_clients": int(event.num_clients),
            "dimension": int(event.dimension),
        }
    if isinstance(event, SkellamDpEvent):
        return {
            "type": "skellam",
            "l2_sensitivity": float(event.l2_sensitivity),
            "l1_sensitivity": float(event.l1_sensitivity),
            "mu": float(event.mu),
            "dimension": int(event.dimension),
        }
    raise TypeError(f"unsupported DpEvent type {type(event).__name__}; supported: {', '.join(sorted(SUPPORTED_EVENTS))}")


def _decode(obj: Any, depth: int) -> dp_accounting.DpEvent:
    if depth > MAX_DEPTH:
        raise ValueError(f"event nesting deeper than {MAX_DEPTH}")
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ValueError("an event is a JSON object with a string 'type'")
    kind = obj["type"]
    if kind == "noop":
        _fields(obj, {"type"}, kind)
        return dp_accounting.NoOpDpEvent()
    if kind in ("gaussian", "laplace"):
        _fields(obj, {"type", "noise_multiplier"}, kind)
        z = _finite(obj["noise_multiplier"], "noise_multiplier", low_open=False)
        cls = dp_accounting.GaussianDpEvent if kind == "gaussian" else dp_accounting.LaplaceDpEvent
        return cls(z)
    if kind == "poisson_sampled":
        _fields(obj, {"type", "sampling_probability", "event"}, kind)
        q = _finite(obj["sampling_probability"], "sampling_probability", low_open=False, high=1.0)
        return dp_accounting.PoissonSampledDpEvent(q, _decode(obj["event"], depth + 1))
    if kind == "self_composed":
        _fields(obj, {"type", "count", "event"}, kind)
        count = _int(obj["count"], "count", low=0)
        return dp_accounting.SelfComposedDpEvent(_decode(obj["event"], depth + 1), count)
    if kind == "composed":
        _fields(obj, {"type", "events"}, kind)
        if not isinstance(obj["events"], list):
            raise ValueError("composed.events must be a list")
        return dp_accounting.ComposedDpEvent([_decode(e, depth + 1) for e in obj["events"]])
    if kind == "distributed_discrete_gaussian":
        _fields(obj, {"type", "l2_sensitivity", "l1_sensitivity", "local_stddev", "num_clients", "dimension"}, kind)
        return DistributedDiscreteGaussianDpEvent(
            _finite(obj["l2_sensitivity"], "l2_sensitivity"),
            _finite(obj["l1_sensitivity"], "l1_sensitivity"),
            _finite(obj["local_stddev"], "local_stddev"),
            _int(obj["num_clients"], "num_clients"),
            _int(obj["dimension"], "dimension"),
        )
    if kind == "skellam":
        _fields(obj, {"type", "l2_sensitivity", "l1_sensitivity", "mu", "dimension"}, kind)
        return SkellamDpEvent(
            _finite(obj["l2_sensitivity"], "l2_sensitivity"),
            _finite(obj["l1_sensitivity"], "l1_sensitivity"),
            _finite(obj["mu"], "mu"),
            _int(obj["dimension"], "dimension"),
        )
    raise ValueError(f"unknown event type {kind[:40]!r}")


#: event classes the codec (and so the ledger) accepts
SUPPORTED_EVENTS = {
    "NoOpDpEvent",
    "GaussianDpEvent",
    "LaplaceDpEvent",
    "PoissonSampledDpEvent",
    "SelfComposedDpEvent",
    "ComposedDpEvent",
    "DistributedDiscreteGaussianDpEvent",
    "SkellamDpEvent",
}


def event_to_json(event: dp_accounting.DpEvent) -> str:
    """The canonical JSON text of ``event``.

    Raises:
        TypeError: an event type outside :data:`SUPPORTED_EVENTS`.
        ValueError: a non-finite or out-of-range parameter.
    """
    text = json.dumps(_encode(event, 0), sort_keys=True, separators=(",", ":"), allow_nan=False)
    # Validate what we wrote with the strict decoder, so nothing unreadable is ever stored.
    _decode(json.loads(text), 0)
    return text


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name} in event JSON")


def event_from_json(text: str) -> dp_accounting.DpEvent:
    """Decode canonical event JSON strictly.

    Raises:
        ValueError: malformed, non-canonical, oversized or out-of-range input.
    """
    if not isinstance(text, str):
        raise TypeError(f"event JSON must be str, got {type(text).__name__}")
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"event JSON longer than {MAX_JSON_CHARS} characters")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"event JSON does not parse: {type(exc).__name__}") from None
    event = _decode(obj, 0)
    if json.dumps(_encode(event, 0), sort_keys=True, separators=(",", ":"), allow_nan=False) != text:
        raise ValueError("event JSON is not in canonical form")
    return event
