"""The central Gaussian mechanism: a trusted aggregator noises the sum of clipped updates.

Invariants: the noise is ``N(0, (noise_multiplier * clip)^2)`` per coordinate, drawn from
:class:`~fedcrypt.dp._random.CryptoRandom`; every update is clipped to ``clip`` before it
is summed, so one client changes the sum by at most ``clip`` in L2 (add/remove-one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np

from fedcrypt.dp._random import CryptoRandom
from fedcrypt.dp.clipping import _positive, clip_l2_with_report
from fedcrypt.dp.samplers import gaussian
from fedcrypt.vectors import ClipReport

if TYPE_CHECKING:  # dp_accounting is the optional extra 'dp'
    from dp_accounting import DpEvent

    from fedcrypt.dp.accounting import Accountant

__all__ = ["GaussianMechanism"]


@dataclass(frozen=True)
class GaussianMechanism:
    """Central DP-FedAvg noise (McMahan et al., ICLR 2018; Abadi et al., CCS 2016).

    Math: ``release = sum_i clip(x_i, C) + N(0, (z C)^2 I)``. With Poisson sampling of
    clients at rate ``q`` this is the event
    ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``, accounted by
    :func:`fedcrypt.dp.epsilon`.

    Threat model: the aggregator sees the clipped updates (it is trusted); everyone else
    sees only the noised sum. Use :mod:`fedcrypt.dp.distributed` when the aggregator is
    not trusted.

    Attributes:
        noise_multiplier: ``z > 0``.
        clip: ``C > 0``.
    """

    noise_multiplier: float
    clip: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", _positive(self.noise_multiplier, "noise_multiplier"))
        object.__setattr__(self, "clip", _positive(self.clip, "clip"))

    @property
    def stddev(self) -> float:
        """Standard deviation of the noise per coordinate: ``z * C``."""
        return self.noise_multiplier * self.clip

    def add_noise(self, vector_sum: np.ndarray, rng: CryptoRandom | None = None) -> np.ndarray:
        """``vector_sum + N(0, (z C)^2)`` per coordinate, as float64 (a new array)."""
        arr = np.asarray(vector_sum, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"vector_sum must be 1-D, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("vector_sum contains NaN or infinity")
        return arr + gaussian(self.stddev, arr.size, rng)

    def aggregate(self, updates: Iterable[np.ndarray], rng: CryptoRandom | None = None) -> np.ndarray:
        """Clip every update to ``C``, sum, and add the noise once."""
        return self.aggregate_with_report(updates, rng)[0]

    def aggregate_with_report(self, updates: Iterable[np.ndarray], rng: CryptoRandom | None = None) -> tuple[np.ndarray, list[ClipReport]]:
        """:meth:`aggregate`, and one :class:`~fedcrypt.vectors.ClipReport` per update, in order
        (central DP: the server holds the updates in the clear anyway), so that it can say how
        many were clipped and by how much."""
        total: np.ndarray | None = None
        reports = []
        for update in updates:
            clipped, report = clip_l2_with_report(update, self.clip)
            reports.append(report)
            if total is None:
                total = clipped.astype(np.float64)
            elif clipped.shape != total.shape:
                raise ValueError(f"updates differ in length: {clipped.shape[0]} != {total.shape[0]}")
            else:
                total += clipped
        if total is None:
            raise ValueError("aggregate needs at least one update")
        return self.add_noise(total, rng), reports

    def event(self, sampling_rate: float = 1.0) -> DpEvent:
        """The dp_accounting event of one round."""
        from fedcrypt.dp.accounting import gaussian_rounds_event

        return gaussian_rounds_event(self.noise_multiplier, sampling_rate, 1).event

    def epsilon(self, sampling_rate: float, steps: int, delta: float, accountant: Accountant = "pld") -> float:
        """Epsilon after ``steps`` rounds (see :func:`fedcrypt.dp.epsilon`)."""
        from fedcrypt.dp.accounting import epsilon

        return epsilon(self.noise_multiplier, sampling_rate, steps, delta, accountant)
