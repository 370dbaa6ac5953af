"""Per-client L2 clipping, fixed and adaptive (Andrew et al., NeurIPS 2021).

Invariants:

* :func:`clip_l2` never returns a vector of L2 norm above ``clip`` (up to float rounding
  of the scaling, a relative 1e-6 for float32) and returns the input unchanged when it is
  already inside the ball; non-finite input is refused, never clipped to NaN;
* :class:`AdaptiveClipper` changes its clip only in :meth:`AdaptiveClipper.update`, after
  validating the input; the noise on the clip count is accounted for in
  :meth:`AdaptiveClipper.round_event`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedcrypt.dp._random import CryptoRandom
from fedcrypt.dp.samplers import gaussian
from fedcrypt.vectors import ClipReport

if TYPE_CHECKING:  # dp_accounting is the optional extra 'dp'
    from dp_accounting import DpEvent

__all__ = ["clip_l2", "clip_l2_with_report", "l2_norm", "AdaptiveClipper"]


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


def clip_l2(vector: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """Scale ``vector`` into the L2 ball of radius ``clip``.

    Args:
        vector: 1-D float array (the flat update).
        clip: the L2 bound ``C > 0``.

    Returns:
        ``(clipped, norm)``: a new array of the input's float dtype equal to
        ``vector * min(1, C / ||vector||)``, and the original norm ``||vector||``.

    The norm is taken without overflow or underflow (:func:`l2_norm`): a vector of
    entries near 1e-200 is clipped by its true norm, not by a norm of 0.

    Raises:
        ValueError: ``vector`` is not 1-D, not floating point, or not finite.
    """
    clip = _positive(clip, "clip")
    arr = np.asarray(vector)
    if arr.ndim != 1:
        raise ValueError(f"vector must be 1-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"vector must be floating point, got {arr.dtype}")
    values = arr.astype(np.float64)
    norm = l2_norm(values)
    if norm <= clip:
        return arr.copy(), norm
    # Scale in float64, then make sure float32 rounding cannot push the norm over clip.
    if math.isinf(norm):  # finite entries whose norm passes float64's range
        peak = float(np.max(np.abs(values)))
        out64 = values / peak
        out64 *= clip / l2_norm(out64)
    else:
        out64 = values * (clip / norm)
    out = out64.astype(arr.dtype)
    while l2_norm(out.astype(np.float64)) > clip:
        out = (out.astype(np.float64) * (1 - 1e-7)).astype(arr.dtype)
    return out, norm


def clip_l2_with_report(vector: np.ndarray, clip: float) -> tuple[np.ndarray, ClipReport]:
    """:func:`clip_l2`, returning a :class:`~fedcrypt.vectors.ClipReport` instead of the bare norm.

    The report's ``norm`` is the norm before clipping, ``factor`` the scale applied
    (``min(1, clip / norm)``) and ``clipped`` the coordinates it changed (the nonzero ones
    when the norm was above ``clip``, else 0); ``str(report)`` is one line to log.
    """
    clipped, norm = clip_l2(vector, clip)
    return clipped, _l2_report(np.asarray(vector), norm, float(clip))


def _l2_report(vector: np.ndarray, norm: float, clip: float) -> ClipReport:
    changed = int(np.count_nonzero(vector)) if norm > clip else 0
    return ClipReport("l2", int(vector.size), changed, clip, float(norm))


#: below this, squares of the largest entries may have underflowed in the plain norm
_NORM_SAFE_LOW = 1e-140


def l2_norm(values: np.ndarray) -> float:
    """The L2 norm of a float64 vector, without overflow or underflow of the squares.

    The plain ``sqrt(sum x^2)`` (one pass) whenever it lies in ``[1e-140, inf)``;
    otherwise rescaled by the largest ``|x|`` first, so entries near 1e-200 or 1e200 get
    their true norm (``inf`` only when the norm itself passes float64's range).

    Raises:
        ValueError: the vector holds NaN or infinity.
    """
    with np.errstate(over="ignore", under="ignore"):
        norm = float(np.linalg.norm(values))
    if _NORM_SAFE_LOW <= norm < math.inf:
        return norm
    peak = float(np.max(np.abs(values), initial=0.0))
    if not math.isfinite(peak):
        raise ValueError("vector contains NaN or infinity")
    if peak == 0.0:
        return 0.0
    return peak * float(np.linalg.norm(values / peak))


@dataclass
class AdaptiveClipper:
    """Quantile-tracking clip norm (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021, Alg. 1).

    Each round every participating client reports the centred bit
    ``b_i - 1/2`` where ``b_i = [||update_i|| <= C]``; the server receives the (securely
    aggregated) sum, adds ``N(0, count_stddev^2)``, estimates the unclipped fraction
    ``b = noisy_sum / m + 1/2`` over the expected number of clients ``m`` and updates
    the clip geometrically::

        C <- C * exp(-learning_rate * (b - target_quantile)).

    Privacy (the paper's Theorem 1): the centred bit sum has L2 sensitivity 1/2, so it is
    a Gaussian mechanism with noise multiplier ``2 * count_stddev``; released together
    with the update sum (noise multiplier ``z_update``) the round is one Gaussian
    mechanism with ``z_eff = (z_update^-2 + (2 count_stddev)^-2)^(-1/2)``.
    :meth:`update_noise_multiplier` inverts this so that the round costs exactly a
    chosen ``z_eff``.

    Threat model: the server is trusted with the noisy count only; the per-client bits
    reach it only summed (through secure aggregation, or a trusted aggregator).
    """

    initial_clip: float
    expected_clients: int
    count_stddev: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    _clip: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.initial_clip = _positive(self.initial_clip, "initial_clip")
        self.count_stddev = _positive(self.count_stddev, "count_stddev")
        self.learning_rate = _positive(self.learning_rate, "learning_rate")
        if isinstance(self.expected_clients, bool) or not isinstance(self.expected_clients, int):
            raise TypeError("expected_clients must be an int")
        if self.expected_clients < 1:
            raise ValueError(f"expected_clients must be >= 1, got {self.expected_clients}")
        q = float(self.target_quantile)
        if not 0.0 < q < 1.0:
            raise ValueError(f"target_quantile must be in (0, 1), got {q!r}")
        self.target_quantile = q
        self._clip = self.initial_clip

    @property
    def clip(self) -> float:
        """The current clip norm."""
        return self._clip

    def client_bit(self, norm: float) -> float:
        """The centred bit a client with update norm ``norm`` contributes: +1/2 or -1/2."""
        norm = float(norm)
        if not (math.isfinite(norm) and norm >= 0):
            raise ValueError(f"norm must be finite and >= 0, got {norm!r}")
        return 0.5 if norm <= self._clip else -0.5

    def update(self, bit_sum: float, rng: CryptoRandom | None = None) -> float:
        """Noise the aggregated centred bits, update and return the clip.

        Raises:
            ValueError: ``bit_sum`` is not finite or outside ``[-m/2, m/2]`` for the
                expected ``m`` clients (the clip is left unchanged).
        """
        bit_sum = float(bit_sum)
        half = self.expected_clients / 2
        if not (math.isfinite(bit_sum) and -half <= bit_sum <= half):
            raise ValueError(f"bit_sum must be finite and in [{-half:g}, {half:g}], got {bit_sum!r}")
        noisy = bit_sum + float(gaussian(self.count_stddev, 1, rng)[0])
        fraction = noisy / self.expected_clients + 0.5
        self._clip = self._clip * math.exp(-self.learning_rate * (fraction - self.target_quantile))
        return self._clip

    def effective_noise_multiplier(self, update_noise_multiplier: float) -> float:
        """``z_eff`` of one round given the update sum's noise multiplier."""
        z = _positive(update_noise_multiplier, "update_noise_multiplier")
        return (z**-2 + (2 * self.count_stddev) ** -2) ** -0.5

    def update_noise_multiplier(self, effective_noise_multiplier: float) -> float:
        """The update sum's noise multiplier for which a round costs ``effective_noise_multiplier``.

        Raises:
            ValueError: ``2 * count_stddev <= z_eff`` (the count alone already costs more).
        """
        z_eff = _positive(effective_noise_multiplier, "effective_noise_multiplier")
        rest = z_eff**-2 - (2 * self.count_stddev) ** -2
        if rest <= 0:
            raise ValueError(
                f"count_stddev={self.count_stddev:g} is too small for an effective noise multiplier of {z_eff:g}: need 2 * count_stddev > {z_eff:g}"
            )
        return rest**-0.5

    def round_event(self, update_noise_multiplier: float, sampling_rate: float = 1.0) -> DpEvent:
        """The dp_accounting event of one round: update sum and clip count together."""
        from fedcrypt.dp.accounting import gaussian_rounds_event

        return gaussian_rounds_event(self.effective_noise_multiplier(update_noise_multiplier), sampling_rate, 1).event
