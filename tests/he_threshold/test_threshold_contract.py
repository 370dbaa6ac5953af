"""The aggregator contract (tests/test_aggregator_contract.py) on threshold CKKS (OpenFHE).

The adapter below is a test-side translation (inputs -> :func:`fedcrypt.he.threshold.simulate`
-> an ``AggregateResult``), the same shape as ``fedcrypt.integrations.aggregators``'s
``CkksAggregator``; it holds no cryptography. Three key holders form the committee, so client
dropouts (before upload) are tolerated; a key-holder dropout aborts (tested elsewhere).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pytest
from test_aggregator_contract import CLIP, AggregatorContract

from fedcrypt.he.threshold import ThresholdParams, simulate
from fedcrypt.integrations.aggregators import AggregateResult, _check_inputs, _dropped

pytestmark = pytest.mark.usefixtures("openfhe")


class ThresholdCkksAdapter:
    """Weighted FedAvg through threshold CKKS with a 3-holder committee (test adapter)."""

    name = "ckks-threshold"

    def __init__(self, num_clients: int, *, holders: int = 3, clip: float = 1.0) -> None:
        self.num_clients = num_clients
        self.holders = holders
        self.clip = clip
        self._params: dict[tuple[str, int], ThresholdParams] = {}

    def _params_for(self, max_weight: int) -> ThresholdParams:
        preset = "compact" if self.num_clients * max_weight * self.clip <= 128 else "wide"
        key = (preset, max_weight)
        if key not in self._params:
            self._params[key] = ThresholdParams.preset(
                preset, num_parties=self.holders, num_clients=self.num_clients, clip=self.clip, max_weight=max_weight
            )
        return self._params[key]

    def aggregate(self, vectors: Sequence[np.ndarray], weights: Sequence[float] | None = None, dropouts: Any = None) -> AggregateResult:
        vectors, w = _check_inputs(vectors, weights)
        dropped = _dropped(dropouts, len(vectors))
        params = self._params_for(math.ceil(max(w)))
        result = simulate(params, [v.astype(np.float64) for v in vectors], [float(x) for x in w], dropouts=dropped)
        mean = result.weighted_sum / result.total_weight
        bound = params.mean_error_bound([w[i] for i in result.uploaders]) + 4 * np.finfo(np.float64).eps * self.clip
        return AggregateResult(
            vector=mean,
            survivors=result.uploaders,
            total_weight=float(result.total_weight),
            bytes_up=float(result.upload_bytes),
            bytes_down=float(result.joint_key_bytes),
            client_seconds=result.client_seconds,
            server_seconds=result.server_seconds,
            error_bound=float(bound),
            name=self.name,
        )


class TestThresholdCkks(AggregatorContract):
    examples = 6

    def make(self) -> Any:
        return ThresholdCkksAdapter(self.num_clients, clip=CLIP)
