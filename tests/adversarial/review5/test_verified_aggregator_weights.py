"""Attacker review 5, the demo's ``VerifiedAggregator`` (``fedcrypt/integrations/aggregators.py``):
does it keep ``fedcrypt.verify``'s robustness when clients have weights?

``fedcrypt.verify`` proves ``||y_i|| <= B`` for the vector ``y_i`` a client encodes, where an
honest client encodes ``y_i = w_i/M clip(x_i)``; the weight itself is **not** in the report
(the leader and helper never see it, ``VerifyClient.set_input`` folds it into the vector).
``VerifiedAggregator.aggregate`` then returns ``mean = sum_i y_i * M / sum_i w_i`` with the
weights the *server* was told (the caller's ``weights``). A client that claims ``w_a`` but
encodes as if its weight were ``M`` (``y_a = clip(x_a)``, which the proof accepts) moves the
mean by ``M clip / sum w`` instead of ``w_a clip / sum w``: ``M / w_a`` times its weighted
influence, and, when ``M > sum w`` (a deployment fixes ``M`` ahead of the round, as the
docstring asks; the demo's default ``max_weight=None`` takes the largest weight of the call,
so ``M <= sum w`` there), **more than ``clip``**. The class docstring claims "no client can
push an update of norm above ``clip`` into the mean ... a model-replacement update is rejected,
not averaged": with ``max_weight=1000`` and four clients of weight 10, one client moves the
mean by 25 ``clip`` (a model-replacement factor of 25), every report accepted.

The lie is modelled faithfully: the malicious client's report is a real ``VerifyClient``
report of ``y_a`` with a valid proof (``verify.simulate`` with weight ``M`` for that client);
only the weight the server is told differs. Search: claimed weight x encoded weight x
``max_weight`` (fixed 1000, or ``None``), the influence on the mean measured against the same
round without the attacker's vector. Positive control: the honest client (encoded weight =
claimed) stays within ``w_a clip / sum w``; a search with the lie finds the excess.

Severity: medium (robustness of the verified mode with weights; no privacy loss; the DP
sensitivity in the sum domain is still ``clip``). FIXED: ``VerifiedAggregator`` takes equal
weights only (unequal ones are refused, as under DP) and returns ``sum / m``, so an accepted
report moves the mean by at most ``clip / m``; the tests below are its regression tests, the
search now runs over what a client can still choose (the vector it encodes, any weight factor
the proof accepts), and the positive control rebuilds the old weighted normalisation to show
the search finds the excess there. A weighted verified mode would bind the weight into what is proven
(the aggregators learn the claimed ``w_i`` and check ``||y_i|| <= w_i/M B``, e.g. a per-report
bound, or a proof over the unweighted clipped ``x_i`` with the aggregators applying the public
integer weights to the shares) or drop weights from the verified mode (``mean = sum / n``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedcrypt import verify
from fedcrypt.integrations.aggregators import VerifiedAggregator

DIM, CLIP, CLIENTS = 8, 1.0, 4
ATTACKER = 0


class _WeightedAsBefore(VerifiedAggregator):
    """The weakened aggregator (the positive control): FedAvg with the claimed weights, each
    client encoding ``w_i / M x_i`` with ``M`` fixed ahead of the round, as before the fix."""

    def __init__(self, *args: Any, max_weight: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_weight = max_weight

    def config(self, dimension: int) -> Any:
        import dataclasses

        return dataclasses.replace(super().config(dimension), max_weight=self.max_weight)

    def weighted(self, vectors: list[np.ndarray], claimed: list[float], encoded: list[float]) -> np.ndarray:
        outcome = verify.simulate(self.config(DIM), vectors, encoded, helper_key=self._helper_key)
        return outcome.sum * self.max_weight / sum(claimed)


def _lying_round(monkeypatch: pytest.MonkeyPatch, factor: float) -> Any:
    """verify.simulate with the attacker's report made at weight ``factor`` (of max_weight): a real
    VerifyClient report of ``factor * x``, with a valid proof whenever ``factor <= max_weight``."""
    real = verify.simulate

    def lying(config: Any, vectors: Any, weights: Any = None, **kw: Any) -> Any:
        ws = [1.0] * len(vectors) if weights is None else list(weights)
        ws[ATTACKER] = factor * config.max_weight
        return real(config, vectors, ws, **kw)

    monkeypatch.setattr(verify, "simulate", lying)


def influence_now(monkeypatch: pytest.MonkeyPatch, factor: float, claimed: float) -> float:
    direction = np.zeros(DIM)
    direction[0] = CLIP  # norm exactly clip: the proof accepts it
    honest = [np.zeros(DIM)] * (CLIENTS - 1)
    means = []
    for vector in (direction, np.zeros(DIM)):
        with monkeypatch.context() as patch:
            _lying_round(patch, factor)
            result = VerifiedAggregator(CLIENTS, clip=CLIP).aggregate([vector, *honest], [claimed] * CLIENTS)
        assert result.survivors == tuple(range(CLIENTS))  # every report accepted
        means.append(result.vector)
    return float(np.linalg.norm(means[0] - means[1]))


def test_unequal_claimed_weights_are_refused_before_any_round() -> None:
    aggregator = VerifiedAggregator(CLIENTS, clip=CLIP)
    vectors = [np.zeros(DIM)] * CLIENTS
    for claimed in ([1.0, 10.0, 10.0, 10.0], [1000.0, 1.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match="verified aggregation needs equal weights"):
            aggregator.aggregate(vectors, claimed)
    assert aggregator._round == 0  # nothing ran


def test_search_no_client_moves_the_mean_beyond_clip_over_m(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every weight factor the proof accepts (at most 1 of max_weight) and every equal claimed weight."""
    found = {}
    for factor in (0.01, 0.5, 1.0):
        for claimed in (1.0, 10.0, 1000.0):
            effect = influence_now(monkeypatch, factor, claimed)
            if effect > CLIP / CLIENTS * 1.01 + 1e-3:
                found[(factor, claimed)] = effect
    assert found == {}, found


def test_positive_control_the_old_weighted_mean_lets_a_client_replace_the_model() -> None:
    """The search's question against the weakened aggregator finds the break: 25 clip, as the review did."""
    weak = _WeightedAsBefore(CLIENTS, clip=CLIP, max_weight=1000.0)
    direction = np.zeros(DIM)
    direction[0] = CLIP
    vectors = [direction] + [np.zeros(DIM)] * (CLIENTS - 1)
    claimed = [10.0] * CLIENTS
    honest = weak.weighted(vectors, claimed, claimed)
    lying = weak.weighted(vectors, claimed, [1000.0] + claimed[1:])  # claims 10, encodes as 1000
    assert float(np.linalg.norm(honest)) == pytest.approx(0.25, rel=0.02)
    assert float(np.linalg.norm(lying)) == pytest.approx(25.0, rel=0.01)
