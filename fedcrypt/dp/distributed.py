"""Distributed DP under secure aggregation: distributed discrete Gaussian and Skellam.

Client side, :meth:`DistributedDp.encode`: clip to ``C`` (L2), zero-pad to a power of two
``d``, rotate with the randomized Hadamard transform ``H D / sqrt(d)`` (``D`` random
signs from a *shared, public* rotation seed), scale by ``s``, round each coordinate to an
integer by conditional randomized rounding (retry until the L2 norm is at most the bound
``Delta_2`` that holds with probability ``1 - beta``), add this client's share of
integer noise, reduce mod ``2^bits``. Server side, :meth:`DistributedDp.decode`: reduce
the ring sum mod ``2^bits``, centre into ``[-2^(bits-1), 2^(bits-1))``, unscale, undo the
rotation, drop the padding.

Invariants:

* the ring vectors are uint32 in ``[0, 2^bits)``; summing them in ``Z_2^32`` (secure
  aggregation) and reducing mod ``2^bits`` gives the sum mod ``2^bits`` exactly, because
  ``2^bits`` divides ``2^32``;
* the noise of one round's *sum* has variance ``(m / n) (z C)^2`` per coordinate in the
  float domain for ``m`` surviving of ``n`` expected clients; the privacy event of a round
  is built with the survivors' count, so fewer survivors cost more epsilon;
* the scale is chosen so that the probability that any coordinate of the noisy sum
  leaves the ring (modular clipping) is at most ``modclip_prob`` (union bound over a
  sub-Gaussian tail; see :meth:`DistributedDpConfig.scale`);
* noise and rounding bits come from :class:`~fedcrypt.dp._random.CryptoRandom`; the
  rotation signs are public and derived from ``rotation_seed`` (shared by all parties);
* the noise is sampled with ``method="auto"`` of :mod:`fedcrypt.dp.samplers`: exact
  inversion sampling of ``N_Z`` / ``Sk`` (exact in distribution) whenever its table fits
  (local ``sigma`` up to about 5.5e4, e.g. every 16- and 20-bit ring of the examples),
  the float64-decision rejection samplers beyond that, for every local noise any
  accepted configuration yields (Skellam's above ``2^52`` as a sum of smaller Skellams);
* a configuration whose ring is too small for its clients at every vector length is
  refused when it is built, one too small for a given length when that length becomes
  known (``DistributedDp(config, dim)`` or the first :meth:`DistributedDp.encode`),
  before anything is sampled.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fedcrypt.dp._random import CryptoRandom
from fedcrypt.dp.clipping import _l2_report, _positive, clip_l2
from fedcrypt.dp.samplers import discrete_gaussian, skellam
from fedcrypt.errors import EncodingError
from fedcrypt.vectors import ClipReport

if TYPE_CHECKING:  # dp_accounting is the optional extra 'dp'
    from dp_accounting import DpEvent

__all__ = ["DistributedDpConfig", "DistributedDp", "hadamard", "MECHANISMS"]

MECHANISMS: tuple[Literal["ddgauss", "skellam"], ...] = ("ddgauss", "skellam")
_MAX_ROUNDING_TRIES = 1000


def _padded(dim: int) -> int:
    return 1 << max(0, (int(dim) - 1).bit_length())


def hadamard(vector: np.ndarray) -> np.ndarray:
    """The orthonormal Walsh-Hadamard transform ``H x / sqrt(d)`` (self-inverse), float64.

    ``len(vector)`` must be a power of two; O(d log d), vectorised per butterfly level.
    """
    a = np.array(vector, dtype=np.float64)
    d = a.size
    if d & (d - 1) or d == 0:
        raise ValueError(f"the Hadamard transform needs a power-of-two length, got {d}")
    h = 1
    while h < d:
        blocks = a.reshape(-1, 2, h)
        top = blocks[:, 0, :] + blocks[:, 1, :]
        bottom = blocks[:, 0, :] - blocks[:, 1, :]
        a = np.stack((top, bottom), axis=1).reshape(d)
        h *= 2
    return a / math.sqrt(d)


@dataclass(frozen=True)
class DistributedDpConfig:
    """Parameters of distributed DP: the noise, the clip, the ring and the rounding.

    Math: ``n = expected_clients`` clients each clip to ``C = clip``. In the integer
    domain (after scaling by ``s``) the summed noise has variance
    ``(z C s)^2``, shared as ``(z C s)^2 / n`` per client: ``N_Z(0, (z C s)^2 / n)`` for
    ``"ddgauss"`` (Kairouz, Liu, Steinke, ICML 2021), ``Sk(mu, mu)`` with
    ``mu = (z C s)^2 / (2 n)`` for ``"skellam"`` (Agarwal, Kairouz, Liu, NeurIPS 2021).
    One client's rounded vector has L2 norm at most
    ``Delta_2 = min(Cs + sqrt(d), sqrt((Cs)^2 + d/4 + sqrt(2 ln(1/beta)) (Cs + sqrt(d)/2)))``
    (Kairouz et al., Theorem 2, conditional rounding with ``beta``) and L1 norm at most
    ``Delta_2 min(sqrt(d), Delta_2)`` (integer coordinates).

    Attributes:
        noise_multiplier: ``z > 0``: the summed noise has std ``z C`` in the float domain.
        clip: ``C > 0``.
        expected_clients: ``n >= 1``, the clients whose noise shares make up the target.
        bits: ring width, ``2..32``; vectors are uint32 in ``[0, 2^bits)``.
        beta: conditional-rounding parameter in ``[0, 1)`` (0: plain rounding).
        modclip_prob: bound on the probability that the noisy sum wraps the ring.
        mechanism: ``"ddgauss"`` or ``"skellam"``.
    """

    noise_multiplier: float
    clip: float
    expected_clients: int
    bits: int = 16
    beta: float = math.exp(-0.5)
    modclip_prob: float = 1e-4
    mechanism: Literal["ddgauss", "skellam"] = "ddgauss"

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", _positive(self.noise_multiplier, "noise_multiplier"))
        object.__setattr__(self, "clip", _positive(self.clip, "clip"))
        for name in ("expected_clients", "bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if self.expected_clients < 1:
            raise ValueError(f"expected_clients must be >= 1, got {self.expected_clients}")
        if not 2 <= self.bits <= 32:
            raise ValueError(f"bits must be in [2, 32], got {self.bits}")
        beta = float(self.beta)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        object.__setattr__(self, "beta", beta)
        p = float(self.modclip_prob)
        if not 0.0 < p < 1.0:
            raise ValueError(f"modclip_prob must be in (0, 1), got {p!r}")
        object.__setattr__(self, "modclip_prob", p)
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        self.scale(1)  # refuses a ring too small for these clients at every vector length

    # ------------------------------------------------------------------ parameters
    def padded_dim(self, dim: int) -> int:
        """The rotated dimension: the next power of two ``>= dim``."""
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        return _padded(int(dim))

    def scale(self, dim: int) -> float:
        """The scale ``s`` (1 / granularity) for vectors of length ``dim``.

        Each coordinate of the rotated noisy sum is sub-Gaussian with variance proxy
        ``v = s^2 C^2 (n^2 / d + z^2) + n / 4`` (signal: the sum has norm at most ``n C``
        and the random rotation spreads it, Kairouz et al. Lemma 29 with flatness 1;
        noise: ``(z C s)^2``; rounding: ``n`` errors bounded in an interval of length 1).
        With ``k = sqrt(2 ln(2 d / modclip_prob))`` the union bound gives
        ``P(any |coordinate| >= k sqrt(v)) <= modclip_prob``, so ``s`` is the largest value
        with ``k sqrt(v) <= 2^(bits-1) - 1``.

        Raises:
            ValueError: ``bits`` is too small for ``expected_clients`` and ``modclip_prob``,
                or ``noise_multiplier`` and ``clip`` are so extreme that ``s``, the local
                noise or the largest decoded value is not a positive finite float64.
        """
        d = self.padded_dim(dim)
        n = self.expected_clients
        k = math.sqrt(2.0 * math.log(2.0 * d / self.modclip_prob))
        room = ((2.0 ** (self.bits - 1) - 1) / k) ** 2 - n / 4.0
        if room <= 0:
            raise ValueError(
                f"bits={self.bits} is too small for expected_clients={n} at modclip_prob={self.modclip_prob:g} "
                f"and {d} padded coordinates: the ring's half-width 2^{self.bits - 1} - 1 must exceed "
                f"{k:.3g} sqrt(expected_clients / 4)"
            )
        z, c = self.noise_multiplier, self.clip
        s = math.sqrt(room) / (c * math.hypot(n / math.sqrt(d), z))
        local = (z * c * s) ** 2 / n if math.isfinite(s) else math.inf
        decoded_max = 2.0 ** (self.bits - 1) * math.sqrt(d) / s if s > 0 else math.inf
        if not (0.0 < s < math.inf and 0.0 < local < math.inf and decoded_max < math.inf):
            raise ValueError(
                f"noise_multiplier={z:g} with clip={c:g} cannot be scaled into a {self.bits}-bit ring with "
                f"{d} padded coordinates in float64: the scale s={s:g}, the local noise variance "
                f"(z C s)^2 / n={local:g} and the largest decoded value 2^{self.bits - 1} sqrt(d) / s="
                f"{decoded_max:g} must be finite and positive"
            )
        return s

    def l2_sensitivity(self, dim: int) -> float:
        """``Delta_2`` in the integer domain (see the class docstring)."""
        d = self.padded_dim(dim)
        c = self.clip * self.scale(dim)
        bound = c + math.sqrt(d)
        if self.beta > 0:
            bound = min(bound, math.sqrt(c * c + d / 4 + math.sqrt(2 * math.log(1 / self.beta)) * (c + math.sqrt(d) / 2)))
        return bound

    def l1_sensitivity(self, dim: int) -> float:
        """``Delta_1 = Delta_2 min(sqrt(d), Delta_2)`` in the integer domain."""
        l2 = self.l2_sensitivity(dim)
        return l2 * min(math.sqrt(self.padded_dim(dim)), l2)

    def local_noise(self, dim: int) -> float:
        """One client's noise parameter in the integer domain.

        ``"ddgauss"``: the discrete Gaussian's ``sigma^2 = (z C s)^2 / n``;
        ``"skellam"``: the Poisson mean ``mu = (z C s)^2 / (2 n)`` of each side.
        """
        total = (self.noise_multiplier * self.clip * self.scale(dim)) ** 2
        return total / self.expected_clients / (2.0 if self.mechanism == "skellam" else 1.0)

    def event(self, dim: int, survivors: int | None = None) -> DpEvent:
        """The dp_accounting event of one round whose noise came from ``survivors`` clients.

        Args:
            dim: the (unpadded) vector length.
            survivors: clients whose noise share reached the sum (default: all expected).
        """
        from fedcrypt.dp.events import DistributedDiscreteGaussianDpEvent, SkellamDpEvent

        m = self.expected_clients if survivors is None else survivors
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
            raise TypeError(f"survivors must be an int, got {type(m).__name__}")
        if m < 1:
            raise ValueError(f"survivors must be >= 1, got {m}")
        d = self.padded_dim(dim)
        l2, l1, local = self.l2_sensitivity(dim), self.l1_sensitivity(dim), self.local_noise(dim)
        if self.mechanism == "ddgauss":
            return DistributedDiscreteGaussianDpEvent(l2, l1, math.sqrt(local), int(m), d)
        return SkellamDpEvent(l2, l1, local * int(m), d)

    def epsilon(self, dim: int, sampling_rate: float, steps: int, delta: float, survivors: int | None = None) -> float:
        """Epsilon after ``steps`` rounds, each with ``survivors`` noise shares (RDP).

        Dropout-aware: with ``survivors < expected_clients`` the summed noise is smaller
        and the returned epsilon is larger.
        """
        from fedcrypt.dp.accounting import _check_real, _check_steps, _dpa, event_epsilon

        dpa = _dpa()
        q = _check_real(sampling_rate, "sampling_rate", low=0.0, high=1.0)
        steps = _check_steps(steps)
        event: Any = self.event(dim, survivors)
        if q < 1.0:
            event = dpa.PoissonSampledDpEvent(q, event)
        return event_epsilon(dpa.SelfComposedDpEvent(event, steps), delta, "rdp")


@dataclass
class DistributedDp:
    """Client encoding and server decoding of one distributed-DP aggregation.

    Threat model (Kairouz et al. 2021, Sec. 3): the server sees only the secure-aggregation
    sum, which carries the noise of every surviving client; no party sees a sum with
    less noise unless clients drop out (accounted through ``survivors``). Clients must
    sample their noise honestly. The rotation is public: it needs no secrecy, only
    agreement, so every party of a round must use the same ``rotation_seed`` (create one
    per round and send it with the round's configuration).

    Args:
        config: the :class:`DistributedDpConfig`.
        dim: the vector length; fixed by the first :meth:`encode` if ``None``.
        rotation_seed: 32 public bytes shared by all parties (fresh random if ``None``).
    """

    config: DistributedDpConfig
    dim: int | None = None
    rotation_seed: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _signs: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.config, DistributedDpConfig):
            raise TypeError(f"config must be a DistributedDpConfig, got {type(self.config).__name__}")
        if not isinstance(self.rotation_seed, (bytes, bytearray)) or len(self.rotation_seed) != 32:
            raise ValueError("rotation_seed must be 32 bytes")
        if self.dim is not None:
            self.config.scale(self.dim)  # refuses a ring too small for vectors of this length

    # ------------------------------------------------------------------ helpers
    def _fix_dim(self, dim: int) -> int:
        if self.dim is None:
            self.config.scale(dim)
            self.dim = int(dim)
        elif dim != self.dim:
            raise ValueError(f"vector length {dim} differs from this mechanism's dim {self.dim}")
        return self.dim

    def _rotation_signs(self) -> np.ndarray:
        assert self.dim is not None
        d = self.config.padded_dim(self.dim)
        if self._signs is None or self._signs.size != d:
            bits = CryptoRandom(bytes(self.rotation_seed)).bits(d)
            self._signs = np.where(bits, 1.0, -1.0)
        return self._signs

    @property
    def scale(self) -> float:
        """The scale ``s`` for this mechanism's dim."""
        if self.dim is None:
            raise ValueError("dim is not known yet: pass dim= or encode a vector first")
        return self.config.scale(self.dim)

    @property
    def ring_length(self) -> int:
        """Length of the ring vectors (the padded dimension)."""
        if self.dim is None:
            raise ValueError("dim is not known yet: pass dim= or encode a vector first")
        return self.config.padded_dim(self.dim)

    # ------------------------------------------------------------------ client
    def encode(self, vector: np.ndarray, rng: CryptoRandom | None = None) -> np.ndarray:
        """A client's ring vector: clipped, rotated, scaled, rounded, noised, mod ``2^bits``.

        Args:
            vector: the flat float update (1-D).
            rng: randomness for rounding and noise (a fresh :class:`CryptoRandom` if None;
                a seeded one only in tests).

        Returns:
            uint32 array of length :attr:`ring_length`, entries in ``[0, 2^bits)``.
        """
        return self.encode_with_report(vector, rng)[0]

    def encode_with_report(self, vector: np.ndarray, rng: CryptoRandom | None = None) -> tuple[np.ndarray, ClipReport]:
        """:meth:`encode`, and the :class:`~fedcrypt.vectors.ClipReport` of its L2 clipping.

        The report (``kind="l2"``) gives the update's norm before clipping, whether it was
        clipped to ``config.clip`` and by what ``factor``; ``str(report)`` is one line to log
        on the client (the norm describes the client's data: do not send it to the server).
        """
        cfg = self.config
        arr = np.asarray(vector)
        if arr.ndim != 1:
            raise ValueError(f"vector must be 1-D, got shape {arr.shape}")
        dim = self._fix_dim(arr.size)
        rng = CryptoRandom() if rng is None else rng
        clipped, norm = clip_l2(arr.astype(np.float64) if arr.dtype != np.float64 else arr, cfg.clip)
        report = _l2_report(arr, norm, cfg.clip)
        d = cfg.padded_dim(dim)
        padded = np.zeros(d)
        padded[:dim] = clipped
        scaled = hadamard(padded * self._rotation_signs()) * cfg.scale(dim)
        bound = cfg.l2_sensitivity(dim)
        floor = np.floor(scaled)
        frac = scaled - floor
        for _ in range(_MAX_ROUNDING_TRIES):
            rounded = floor + rng.bernoulli(frac)
            if float(np.linalg.norm(rounded)) <= bound:
                break
        else:  # probability beta^1000
            raise EncodingError("conditional randomized rounding did not meet the norm bound")
        local = cfg.local_noise(dim)
        if cfg.mechanism == "ddgauss":
            noise = discrete_gaussian(local, d, rng, method="auto")
        else:
            noise = skellam(local, d, rng, method="auto")
        total = rounded.astype(np.int64) + noise
        return np.mod(total, np.int64(1) << cfg.bits).astype(np.uint32), report

    # ------------------------------------------------------------------ server
    def decode(self, ring_sum: np.ndarray, num_survivors: int | None = None) -> np.ndarray:
        """The float sum of the clipped updates (plus the noise) from the ring sum.

        Args:
            ring_sum: the sum of the survivors' ring vectors in ``Z_2^32`` (or already
                mod ``2^bits``), uint32/uint64/int64 of length :attr:`ring_length`.
            num_survivors: accepted for the caller's bookkeeping and checked to be in
                ``[1, 2^bits)``; the decoded sum does not depend on it.

        Returns:
            float64 vector of length ``dim``.
        """
        cfg = self.config
        arr = np.asarray(ring_sum)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError("ring_sum must be a 1-D integer array")
        if self.dim is None:
            raise ValueError("dim is not known yet: pass dim= or encode a vector first")
        d = cfg.padded_dim(self.dim)
        if arr.size != d:
            raise ValueError(f"ring_sum has length {arr.size}, expected {d}")
        if num_survivors is not None and not 1 <= int(num_survivors) < (1 << cfg.bits):
            raise ValueError(f"num_survivors must be in [1, 2^{cfg.bits}), got {num_survivors}")
        modulus = 1 << cfg.bits
        values = np.mod(arr.astype(np.int64) if arr.dtype != np.uint64 else arr, modulus).astype(np.int64)
        values = np.where(values >= modulus // 2, values - modulus, values).astype(np.float64)
        rotated_back = hadamard(values / cfg.scale(self.dim)) * self._rotation_signs()
        return rotated_back[: self.dim]

    def event(self, survivors: int | None = None) -> DpEvent:
        """This round's dp_accounting event (see :meth:`DistributedDpConfig.event`)."""
        if self.dim is None:
            raise ValueError("dim is not known yet: pass dim= or encode a vector first")
        return self.config.event(self.dim, survivors)

    def noise_stddev(self, survivors: int | None = None) -> float:
        """Std of the decoded sum's noise per coordinate (float domain) with ``survivors``."""
        m = self.config.expected_clients if survivors is None else int(survivors)
        return self.config.noise_multiplier * self.config.clip * math.sqrt(m / self.config.expected_clients)
