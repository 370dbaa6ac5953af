"""In-process aggregators behind one interface: plain FedAvg, SecAgg, SecAgg+, CKKS, verified.

The demo, the contract test (``tests/test_aggregator_contract.py``), the Flower adapter
and the benchmarks use the same call::

    result = aggregator.aggregate(vectors, weights, dropouts=...)
    result.vector        # float64 weighted mean of the survivors' vectors
    result.error_bound   # documented per-coordinate bound of |vector - exact mean|

Each aggregator runs the whole protocol in one process (all clients and the server), so
it is a simulator and a reference, not a deployment: in a deployment the same protocol
objects talk over a transport. The wrappers hold no cryptography and make no protocol
decision: they only encode, call the protocol package, and decode.

What is exact (per coordinate, against the float64 weighted mean ``m = sum_i w_i x_i /
sum_i w_i`` over the surviving clients ``i``, inputs within the clip bound):

* :class:`PlainAggregator`: float64 arithmetic only; bound ``4 n max|x| 2^-52``.
* :class:`SecAggAggregator` (SecAgg and SecAgg+): the ring sum is *exact* (the masks
  cancel exactly in ``Z_2^bits`` and the codec's overflow guard rules out wrap-around).
  The only error is the fixed-point rounding of each input, at most ``1/scale`` per
  summand, so with ``delta = codec.error_bound(n)`` the mean is within ``2 delta / W``
  where ``W = sum_i w_i / w_max`` is the survivors' normalised weight (derivation in the
  class docstring).
* :class:`CkksAggregator`: CKKS is approximate; the bound is the he package's documented
  8-sigma bound (``CkksParams.mean_error_bound``), exceeded with probability ~1e-15 per
  coordinate.
* :class:`VerifiedAggregator` (equal weights only): the field sum is exact; each input is
  rounded to PINE's fixed point (``2^-f``, ``f`` as large as the field allows for the L2
  bound); the bound is ``VerifyConfig.sum_error_bound`` scaled to the mean.
* :class:`DistributedDpAggregator`: not exact by design (privacy noise is added inside the
  SecAgg sum); the bound is a high-probability one (failure 1e-6) that includes the noise.

Invariants:

* the returned vector is a new float64 array of the inputs' length;
* ``survivors`` lists the clients whose inputs are in the mean, in increasing order;
* input vectors and weights are validated (length, dtype, finiteness, positivity) before
  any protocol runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Sequence

import numpy as np

__all__ = [
    "AggregateResult",
    "Aggregator",
    "PlainAggregator",
    "SecAggAggregator",
    "CkksAggregator",
    "DistributedDpAggregator",
    "VerifiedAggregator",
    "make_aggregator",
    "PROTECTIONS",
]

#: names accepted by :func:`make_aggregator` (and ``fedcrypt demo --protection``).
PROTECTIONS = ("none", "secagg", "secagg+", "ckks", "verified")

Dropouts = Collection[int] | Mapping[Any, Collection[int]] | None


@dataclass(frozen=True)
class AggregateResult:
    """The outcome of one aggregation and what it cost.

    Attributes:
        vector: float64 weighted mean of the survivors' vectors.
        survivors: ids of the clients whose inputs are in the mean (increasing).
        total_weight: the survivors' summed weight (known to the server in every protocol).
        bytes_up: mean bytes one participating client sent for the aggregation.
        bytes_down: mean bytes one participating client received for it (the plaintext
            model broadcast, common to every method, is not counted).
        client_seconds: mean seconds of protocol work per participating client.
        server_seconds: seconds of protocol work at the server.
        error_bound: documented per-coordinate bound of ``|vector - exact mean|`` (for a
            DP aggregator a high-probability bound that includes the privacy noise).
        name: the aggregator's name.
        noise_stddev: standard deviation of the privacy noise per coordinate of
            ``vector`` (0 without DP).
    """

    vector: np.ndarray = field(repr=False)
    survivors: tuple[int, ...]
    total_weight: float
    bytes_up: float
    bytes_down: float
    client_seconds: float
    server_seconds: float
    error_bound: float
    name: str = ""
    noise_stddev: float = 0.0


def _check_inputs(vectors: Sequence[np.ndarray], weights: Sequence[float] | None) -> tuple[list[np.ndarray], np.ndarray]:
    if not isinstance(vectors, Sequence) or isinstance(vectors, (str, bytes)) or len(vectors) == 0:
        raise ValueError("vectors must be a non-empty sequence of 1-D float numpy arrays")
    checked = []
    length = None
    for index, vector in enumerate(vectors):
        if not isinstance(vector, np.ndarray):
            raise TypeError(f"vectors[{index}] is a {type(vector).__name__}, expected a numpy array")
        if vector.ndim != 1 or not np.issubdtype(vector.dtype, np.floating):
            raise ValueError(f"vectors[{index}] must be a 1-D float array, got {vector.ndim}-D {vector.dtype}")
        if length is None:
            length = vector.shape[0]
        elif vector.shape[0] != length:
            raise ValueError(f"vectors[{index}] has length {vector.shape[0]}, vectors[0] has {length}")
        if not np.isfinite(vector).all():
            raise ValueError(f"vectors[{index}] has non-finite entries")
        checked.append(vector)
    if weights is None:
        w = np.ones(len(checked), dtype=np.float64)
    else:
        w = np.asarray(list(weights), dtype=np.float64)
        if w.shape != (len(checked),):
            raise ValueError(f"got {w.shape[0] if w.ndim == 1 else w.shape} weights for {len(checked)} vectors")
        if not (np.isfinite(w).all() and (w > 0).all()):
            raise ValueError("weights must be positive finite numbers")
    return checked, w


def _dropped(dropouts: Dropouts, num_clients: int) -> set[int]:
    if dropouts is None:
        return set()
    groups = dropouts.values() if isinstance(dropouts, Mapping) else [dropouts]
    ids: set[int] = set()
    for group in groups:
        for cid in group:
            if not isinstance(cid, (int, np.integer)) or isinstance(cid, bool) or not 0 <= cid < num_clients:
                raise ValueError(f"dropout id {cid!r} is not a client id in [0, {num_clients})")
            ids.add(int(cid))
    if len(ids) == num_clients:
        raise ValueError("every client dropped out: there is nothing to aggregate")
    return ids


class Aggregator:
    """The common interface: a weighted mean of client vectors, with costs and error bound.

    Subclasses implement :meth:`aggregate`. ``weights`` are FedAvg weights (e.g. example
    counts), default 1 each; ``dropouts`` is either a collection of client ids that drop
    out, or, for SecAgg, a mapping ``{fedcrypt.secagg.Stage: ids}`` saying when each
    drops (a plain collection means after sharing keys, before sending its masked input).
    """

    name = "abstract"

    def aggregate(
        self,
        vectors: Sequence[np.ndarray],
        weights: Sequence[float] | None = None,
        dropouts: Dropouts = None,
    ) -> AggregateResult:  # pragma: no cover - interface
        """Return the weighted mean of the surviving clients' vectors."""
        raise NotImplementedError


class PlainAggregator(Aggregator):
    """Plaintext FedAvg (McMahan et al. 2017): ``sum_i w_i x_i / sum_i w_i`` in float64.

    Threat model: none; the server sees every update. It is the baseline every other
    aggregator is compared against (costs and results).
    """

    name = "none"

    def aggregate(
        self,
        vectors: Sequence[np.ndarray],
        weights: Sequence[float] | None = None,
        dropouts: Dropouts = None,
    ) -> AggregateResult:
        """Weighted mean in float64; see :class:`Aggregator`."""
        vectors, w = _check_inputs(vectors, weights)
        dropped = _dropped(dropouts, len(vectors))
        survivors = tuple(i for i in range(len(vectors)) if i not in dropped)
        start = time.perf_counter()
        total = np.zeros(vectors[0].shape[0], dtype=np.float64)
        for i in survivors:
            total += w[i] * vectors[i].astype(np.float64)
        total_weight = float(w[list(survivors)].sum())
        mean = total / total_weight
        seconds = time.perf_counter() - start
        peak = max((float(np.abs(vectors[i]).max(initial=0.0)) for i in survivors), default=0.0)
        return AggregateResult(
            vector=mean,
            survivors=survivors,
            total_weight=total_weight,
            bytes_up=4.0 * vectors[0].shape[0],
            bytes_down=0.0,
            client_seconds=0.0,
            server_seconds=seconds,
            error_bound=4.0 * len(survivors) * max(peak, 1e-300) * 2.0**-52,
            name=self.name,
        )


def _secagg() -> Any:
    """The secagg package's public names (imported on first use: it is core, but heavy-ish)."""
    from fedcrypt import secagg

    return secagg


class SecAggAggregator(Aggregator):
    """Weighted FedAvg under pairwise-masking secure aggregation (SecAgg / SecAgg+).

    Math: with weights ``w_i`` and the public bound ``w_max`` (default the largest weight
    of the call; in a deployment a bound agreed beforehand, e.g. the largest example count
    a client may claim), client ``i`` encodes the vector

        u_i = [ (w_i / w_max) * clip(x_i),  (w_i / w_max) * c ]          (|u_i| <= c)

    with the fixed-point codec of clip ``c`` and runs one round of
    :func:`fedcrypt.secagg.simulate_ring` (Bonawitz et al. CCS 2017 Sec. 4; with
    ``neighbours=k`` SecAgg+, Bell et al. CCS 2020 Sec. 3). The server decodes the ring sum
    ``S`` and returns ``mean = S[:-1] / (S[-1] / c)``. The ring sum is exact: the masks
    cancel and the overflow guard holds. Each decoded coordinate is off by at most
    ``delta = codec.error_bound(n)`` (fixed-point rounding of the ``n`` summands), so with
    ``B = S[-1] / c`` (the survivors' normalised weight as decoded) the mean is off by at most

        |e_x - m * e_w / c| / B  <=  delta * (1 + |m| / c) / B  <=  2 * delta / B

    since ``|m| <= c``; a few float64 ulps of ``|m|`` are added for the final division.
    Pre-multiplying by the weight keeps individual weights hidden; only the survivors'
    total weight is revealed (it is needed for the mean anyway).

    Threat model: an honest-but-curious server (and, with ``verify_survivors=True``, a
    malicious one that lies about survivors) learns only the sum of the survivors' inputs.
    Inputs are L-infinity clipped to ``c``; clip updates (e.g. L2 to ``c``) beforehand if the
    mean must equal the unclipped FedAvg.

    Args:
        num_clients: clients per round (``n``).
        clip: the codec's clip ``c`` (L-infinity bound of each weighted input).
        neighbours: ``None`` for SecAgg (complete graph); ``k`` for SecAgg+; ``"auto"``
            picks the smallest ``k >= ceil(log2 n)`` with ``n*k`` even (or the complete
            graph for small ``n``).
        threshold: Shamir threshold; default the smallest allowed, ``floor(m/2) + 1`` for
            ``m`` share holders (tolerates the most dropouts).
        bits: ring size, 32 or 64.
        verify_survivors: run the consistency check with signatures (malicious server).
        associated_data: bytes bound into every round (e.g.
            :func:`fedcrypt.integrations.peft.round_binding`).
    """

    def __init__(
        self,
        num_clients: int,
        *,
        clip: float = 1.0,
        neighbours: int | str | None = None,
        threshold: int | None = None,
        bits: int = 32,
        verify_survivors: bool = False,
        associated_data: bytes = b"",
    ) -> None:
        secagg = _secagg()
        if neighbours == "auto":
            neighbours = auto_neighbours(num_clients)
        elif isinstance(neighbours, str):
            raise ValueError(f"neighbours must be None, an int or 'auto', got {neighbours!r}")
        holders = num_clients if neighbours is None else neighbours + 1
        if threshold is None:
            threshold = holders // 2 + 1
        self.config = secagg.SecAggConfig(
            num_clients=num_clients,
            threshold=threshold,
            neighbours=neighbours,
            bits=bits,
            clip=clip,
            verify_survivors=verify_survivors,
        )
        if not isinstance(associated_data, bytes):
            raise TypeError(f"associated_data must be bytes, got {type(associated_data).__name__}")
        self.associated_data = associated_data
        self.name = "secagg" if self.config.complete_graph else "secagg+"
        self._round = 0

    def _dropouts(self, dropouts: Dropouts, n: int) -> dict[Any, set[int]]:
        secagg = _secagg()
        if dropouts is None:
            return {}
        if isinstance(dropouts, Mapping):
            return {stage: set(ids) for stage, ids in dropouts.items()}
        return {secagg.Stage.MASKED_INPUT: set(dropouts)}

    def aggregate(
        self,
        vectors: Sequence[np.ndarray],
        weights: Sequence[float] | None = None,
        dropouts: Dropouts = None,
        *,
        round_id: int | None = None,
    ) -> AggregateResult:
        """Weighted mean under SecAgg; see the class docstring for the math and error.

        Raises:
            RoundAbortedError: too many dropouts for the threshold.
            ValueError: inputs that do not fit (count, length, weights).
        """
        secagg = _secagg()
        vectors, w = _check_inputs(vectors, weights)
        n = self.config.num_clients
        if len(vectors) != n:
            raise ValueError(f"this aggregator was built for {n} clients, got {len(vectors)} vectors")
        _dropped(dropouts, n)  # validates ids
        codec = self.config.codec
        c = codec.clip
        relative = w / w.max()
        ring_vectors = []
        encode_seconds = []
        for vector, r in zip(vectors, relative):
            t0 = time.perf_counter()
            augmented = np.empty(vector.shape[0] + 1, dtype=np.float64)
            np.clip(vector, -c, c, out=augmented[:-1])
            augmented[:-1] *= r
            augmented[-1] = r * c
            ring_vectors.append(codec.encode(augmented))
            encode_seconds.append(time.perf_counter() - t0)
        round_id = self._round if round_id is None else round_id
        self._round = round_id + 1
        outcome = secagg.simulate_ring(
            ring_vectors,
            self.config,
            self._dropouts(dropouts, n),
            round_id=round_id,
            associated_data=self.associated_data,
        )
        t0 = time.perf_counter()
        survivors = tuple(int(i) for i in outcome.survivors)
        total = codec.decode_sum(outcome.ring_sum, len(survivors))
        normalised_weight = total[-1] / c
        mean = total[:-1] / normalised_weight
        decode_seconds = time.perf_counter() - t0
        delta = codec.error_bound(len(survivors))
        peak = float(np.abs(mean).max(initial=0.0))
        bound = delta * (1.0 + min(peak, c) / c) / normalised_weight + 8 * peak * 2.0**-52
        return AggregateResult(
            vector=mean,
            survivors=survivors,
            total_weight=float(w[list(survivors)].sum()),
            bytes_up=float(outcome.bytes_up_per_client),
            bytes_down=float(outcome.bytes_down_per_client),
            client_seconds=float(outcome.client_seconds) + float(np.mean(encode_seconds)),
            server_seconds=float(outcome.server_seconds) + decode_seconds,
            error_bound=bound,
            name=self.name,
        )


def auto_neighbours(num_clients: int) -> int | None:
    """The SecAgg+ degree ``k``: the smallest ``k >= ceil(log2 n)`` with ``n*k`` even.

    Returns ``None`` (the complete graph, classic SecAgg) when that ``k`` is ``n - 1`` or
    more, i.e. when SecAgg+ would save nothing.
    """
    if not isinstance(num_clients, int) or isinstance(num_clients, bool) or num_clients < 2:
        raise ValueError(f"num_clients must be an int >= 2, got {num_clients!r}")
    k = max(1, math.ceil(math.log2(num_clients)))
    if (num_clients * k) % 2:
        k += 1
    return None if k >= num_clients - 1 else k


class CkksAggregator(Aggregator):
    """Weighted FedAvg under CKKS homomorphic encryption (TenSEAL's SEAL; extra ``he``).

    Math: every client holds the group's CKKS secret key (:class:`fedcrypt.he.KeyOwner`)
    and uploads ``Enc(clip(x_i))``; the server, holding only an
    :class:`fedcrypt.he.AggregatorContext`, computes ``Enc(sum_i w_i x_i)`` over the
    survivors; a client decrypts it and divides by ``sum_i w_i`` (the weights are known to
    the server: they are its plaintext multipliers). Integer weights (example counts) use
    the ``compact`` preset (no rescale); other weights the ``weighted`` preset. The error
    is CKKS's approximation error, bounded by ``CkksParams.mean_error_bound`` (an 8-sigma
    bound, exceeded with probability ~1e-15 per coordinate).

    Threat model: the server learns nothing about any upload (RLWE, IND-CPA) and not even
    the aggregate; every key holder can decrypt every upload, so a client colluding with the
    server learns single updates (threshold CKKS is out of scope here). Key distribution
    among clients (:mod:`fedcrypt.he.keyshare`) is a one-off set-up cost not counted per
    round.

    Args:
        num_clients: clients per round.
        clip: bound on every input coordinate (inputs are clipped).
        max_weight: the largest weight a client may get.
        preset: force a preset (default: by the weights of each call).
    """

    name = "ckks"

    def __init__(self, num_clients: int, *, clip: float = 1.0, max_weight: float = 1000.0, preset: str | None = None) -> None:
        self.he = require_he()
        self.num_clients = num_clients
        self.clip = float(clip)
        self.max_weight = float(max_weight)
        self.preset = preset
        self._owners: dict[str, Any] = {}

    def _owner(self, preset: str) -> Any:
        owner = self._owners.get(preset)
        if owner is None:
            params = self.he.CkksParams.preset(preset, num_clients=self.num_clients, clip=self.clip, max_weight=self.max_weight)
            owner = self.he.KeyOwner.generate(params)
            self._owners[preset] = owner
        return owner

    def aggregate(
        self,
        vectors: Sequence[np.ndarray],
        weights: Sequence[float] | None = None,
        dropouts: Dropouts = None,
    ) -> AggregateResult:
        """Weighted mean under CKKS; see the class docstring."""
        vectors, w = _check_inputs(vectors, weights)
        if len(vectors) > self.num_clients:
            raise ValueError(f"this aggregator was built for {self.num_clients} clients, got {len(vectors)} vectors")
        dropped = _dropped(dropouts, len(vectors))
        survivors = tuple(i for i in range(len(vectors)) if i not in dropped)
        integral = all(float(x).is_integer() for x in w)
        preset = self.preset or ("compact" if integral else "weighted")
        owner = self._owner(preset)
        server = self.he.AggregatorContext.from_bytes(owner.aggregator_context().to_bytes())
        uploads, client_seconds, sizes = {}, [], []
        for i in survivors:
            t0 = time.perf_counter()
            uploads[i] = owner.encrypt(np.asarray(vectors[i], dtype=np.float64))
            client_seconds.append(time.perf_counter() - t0)
            sizes.append(len(uploads[i]))
        t0 = time.perf_counter()
        items = [(uploads[i], int(w[i]) if integral else float(w[i])) for i in survivors]
        aggregate_blob = server.weighted_sum(items)
        server_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        total_weight = float(w[list(survivors)].sum())
        mean = owner.decrypt(aggregate_blob) / total_weight
        decrypt_seconds = time.perf_counter() - t0
        bound = owner.params.mean_error_bound([w[i] for i in survivors], float_weights=not integral)
        return AggregateResult(
            vector=mean,
            survivors=survivors,
            total_weight=total_weight,
            bytes_up=float(np.mean(sizes)),
            bytes_down=float(len(aggregate_blob)),
            client_seconds=float(np.mean(client_seconds)) + decrypt_seconds,
            server_seconds=server_seconds,
            error_bound=float(bound),
            name=self.name,
        )


class VerifiedAggregator(Aggregator):
    """FedAvg with equal weights under verified aggregation (PINE): every update proven L2-bounded.

    Math (:mod:`fedcrypt.verify`; Rothblum, Omri, Chen, Talwar, arXiv 2311.10237): client
    ``i`` clips ``x_i`` to L2 norm ``clip``, encodes ``round(clip(x_i) 2^f)`` in PINE's field,
    proves that the encoding's L2 norm is at most ``B = floor(clip 2^f)`` and secret-shares
    vector and proof between two aggregators (the leader and the helper); they check the
    proof on their shares, sum the ``m`` reports that pass, and the leader decodes the sum.
    The mean is ``sum / m``; its error is ``VerifyConfig.sum_error_bound(m) / m`` (rounding
    only: the field sum is exact). ``f`` is the largest the field allows for ``clip`` (in
    Field40 ``B <= 7532``: ``clip = 1`` gets ``f = 12``), so this is the coarsest fixed point
    of the in-process aggregators.

    Equal weights only, as under DP: the proof bounds the vector a client encodes, not a
    weight it claims, so FedAvg's ``sum_i w_i x_i / sum_i w_i`` with client-claimed weights
    would let a client that claims a small ``w`` but encodes a full-weight vector move the
    mean by up to ``max_weight / sum w`` times ``clip`` (attacker review 5). With equal
    weights each accepted report moves the mean by at most ``clip / m``.

    Threat model: neither aggregator alone sees an update (non-colluding leader and helper);
    no accepted report has norm above ``clip`` (the proofs' soundness, at most ``2^-64`` per
    report at the default config), so no client moves the mean by more than ``clip / m``: a
    model-replacement update is rejected, not averaged. Here both aggregators run in this
    process (a simulator of the round, every message through its bytes); in a deployment the
    helper is another party.

    Args:
        num_clients: clients per round.
        clip: the L2 bound every update is clipped to and proven within.
        noise_multiplier: ``z``: each aggregator adds half of discrete Gaussian noise of
            standard deviation ``z clip`` to the sum (0: none).
    """

    name = "verified"

    def __init__(self, num_clients: int, *, clip: float = 1.0, noise_multiplier: float = 0.0) -> None:
        if not isinstance(num_clients, int) or isinstance(num_clients, bool) or num_clients < 2:
            raise ValueError(f"num_clients must be an int >= 2, got {num_clients!r}")
        if not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {clip!r}")
        from fedcrypt import verify
        from fedcrypt.crypto import X25519KeyPair

        self._verify = verify
        self.num_clients = num_clients
        self.clip = float(clip)
        self.noise_multiplier = float(noise_multiplier)
        self._helper_key = X25519KeyPair.generate()
        self._configs: dict[int, Any] = {}
        self._round = 0

    def config(self, dimension: int) -> Any:
        """The round's :class:`~fedcrypt.verify.VerifyConfig` for vectors of ``dimension``."""
        if dimension not in self._configs:
            self._configs[dimension] = self._verify.VerifyConfig.for_dimension(
                dimension,
                self.clip,
                self._helper_key.public_bytes,
                noise_multiplier=self.noise_multiplier,
                max_reports=max(self.num_clients, 2),
            )
        return self._configs[dimension]

    def aggregate(
        self,
        vectors: Sequence[np.ndarray],
        weights: Sequence[float] | None = None,
        dropouts: Dropouts = None,
    ) -> AggregateResult:
        """Mean of the accepted reports; see the class docstring.

        Raises:
            ValueError: unequal weights (the proof does not cover a weight), or inputs that
                do not fit.
            fedcrypt.errors.RoundAbortedError: fewer than two reports accepted.
        """
        vectors, w = _check_inputs(vectors, weights)
        if not np.all(w == w[0]):
            raise ValueError("verified aggregation needs equal weights: the proof bounds each update, not a claimed weight")
        if len(vectors) > self.num_clients:
            raise ValueError(f"this aggregator was built for {self.num_clients} clients, got {len(vectors)} vectors")
        dropped = _dropped(dropouts, len(vectors))
        config = self.config(vectors[0].shape[0])
        outcome = self._verify.simulate(
            config,
            vectors,
            dropouts={self._verify.Stage.UPLOAD: sorted(dropped)},
            round_id=self._round,
            helper_key=self._helper_key,
        )
        self._round += 1
        t0 = time.perf_counter()
        survivors = tuple(sorted(int(i) for i in outcome.accepted))
        m = len(survivors)
        mean = outcome.sum / m
        decode_seconds = time.perf_counter() - t0
        return AggregateResult(
            vector=mean,
            survivors=survivors,
            total_weight=float(w[list(survivors)].sum()),
            bytes_up=float(outcome.upload_bytes),
            bytes_down=float(outcome.request_bytes),
            client_seconds=outcome.client_seconds,
            server_seconds=outcome.leader_seconds + outcome.helper_seconds + decode_seconds,
            error_bound=config.sum_error_bound(m) / m,
            name=self.name,
            noise_stddev=outcome.result.noise_stddev / m,
        )


class DistributedDpAggregator(Aggregator):
    """FedAvg with distributed DP under SecAgg: the server only ever sees a noised sum.

    Math (Kairouz, Liu, Steinke, ICML 2021, Algorithm 1 and Sec. 4): each client L2-clips
    its update to ``C``, rotates it (randomized Hadamard, public seed), scales by ``s``,
    rounds to integers, adds its share ``N_Z(0, (z C s)^2 / n)`` of discrete Gaussian noise
    and reduces mod ``2^bits`` (:class:`fedcrypt.dp.DistributedDp`); the uint32 vectors are
    summed by one SecAgg round (:func:`fedcrypt.secagg.simulate_ring`, ``2^bits`` divides
    ``2^32``); the server decodes the ring sum and divides by the ``m`` survivors. The
    result is ``mean_i clip(x_i) + noise``: the noise of ``m`` shares has standard deviation
    ``z C sqrt(m/n)`` on the sum (:meth:`DistributedDp.noise_stddev`), ``/ m`` on the mean.

    Error bound (a high-probability one, not a worst case): per coordinate the decoded sum
    minus the exact sum of clipped inputs is sub-Gaussian with variance proxy
    ``v = (z C)^2 m / n + m / (4 s^2)`` (noise plus rounding, as in
    :meth:`DistributedDpConfig.scale`); with ``k = sqrt(2 ln(2 d / 1e-6))`` the union bound
    over the ``d`` coordinates gives ``|mean - exact| <= k sqrt(v) / m`` except with
    probability ``1e-6`` (modular wrap-around adds the config's ``modclip_prob``).

    Threat model: the server, honest-but-curious, sees only the noised SecAgg sum, so the
    released aggregate is (epsilon, delta)-DP against it too (unlike central DP); clients
    must add their noise honestly; dropouts remove noise shares and are accounted through
    ``survivors`` (:meth:`DistributedDpConfig.epsilon`).

    Args:
        num_clients: ``n``, clients per round (and the noise shares expected).
        noise_multiplier: ``z``.
        clip: ``C``, the L2 clip of every update.
        bits: the DP ring width (<= 32).
        neighbours: as for :class:`SecAggAggregator`.
        associated_data: bytes bound into every round.
    """

    name = "secagg/ddp"

    def __init__(
        self,
        num_clients: int,
        *,
        noise_multiplier: float,
        clip: float = 1.0,
        bits: int = 20,
        neighbours: int | str | None = None,
        associated_data: bytes = b"",
    ) -> None:
        from fedcrypt._optional import require

        require("dp_accounting", "dp")
        from fedcrypt import dp

        self.dp = dp
        self.dp_config = dp.DistributedDpConfig(noise_multiplier, clip, num_clients, bits=bits)
        self.secagg = SecAggAggregator(num_clients, neighbours=neighbours, associated_data=associated_data)
        self.name = f"{self.secagg.name}/ddp"
        self._round = 0

    @property
    def associated_data(self) -> bytes:
        """The bytes bound into every SecAgg round."""
        return self.secagg.associated_data

    @associated_data.setter
    def associated_data(self, value: bytes) -> None:
        self.secagg.associated_data = value

    def aggregate(
        self,
        vectors: Sequence[np.ndarray],
        weights: Sequence[float] | None = None,
        dropouts: Dropouts = None,
    ) -> AggregateResult:
        """Noised mean of the survivors' clipped vectors; see the class docstring.

        Raises:
            ValueError: unequal weights (one client's influence must be bounded by ``C``),
                or inputs that do not fit.
        """
        secagg = _secagg()
        vectors, w = _check_inputs(vectors, weights)
        if not np.all(w == w[0]):
            raise ValueError("distributed DP needs equal weights: each client's influence is bounded by the clip")
        n = self.secagg.config.num_clients
        if len(vectors) != n:
            raise ValueError(f"this aggregator was built for {n} clients, got {len(vectors)} vectors")
        _dropped(dropouts, n)
        mechanism = self.dp.DistributedDp(self.dp_config, vectors[0].shape[0])  # fresh public rotation seed
        rings, encode_seconds = [], []
        for vector in vectors:
            t0 = time.perf_counter()
            rings.append(mechanism.encode(np.asarray(vector, dtype=np.float64)))
            encode_seconds.append(time.perf_counter() - t0)
        round_id = self._round
        self._round += 1
        outcome = secagg.simulate_ring(
            rings,
            self.secagg.config,
            self.secagg._dropouts(dropouts, n),
            round_id=round_id,
            associated_data=self.secagg.associated_data,
        )
        t0 = time.perf_counter()
        survivors = tuple(int(i) for i in outcome.survivors)
        m = len(survivors)
        mean = mechanism.decode(outcome.ring_sum, m) / m
        decode_seconds = time.perf_counter() - t0
        d = mechanism.ring_length
        noise_sum = mechanism.noise_stddev(m)
        variance = noise_sum**2 + m / (4.0 * mechanism.scale**2)
        k = math.sqrt(2.0 * math.log(2.0 * d / 1e-6))
        return AggregateResult(
            vector=mean,
            survivors=survivors,
            total_weight=float(w[list(survivors)].sum()),
            bytes_up=float(outcome.bytes_up_per_client),
            bytes_down=float(outcome.bytes_down_per_client),
            client_seconds=float(outcome.client_seconds) + float(np.mean(encode_seconds)),
            server_seconds=float(outcome.server_seconds) + decode_seconds,
            error_bound=k * math.sqrt(variance) / m,
            name=self.name,
            noise_stddev=noise_sum / m,
        )


def require_he() -> Any:
    """The ``fedcrypt.he`` package, failing with the ``he`` extra named if TenSEAL is missing."""
    from fedcrypt._optional import require

    require("tenseal", "he")
    from fedcrypt import he

    return he


def make_aggregator(
    protection: str,
    num_clients: int,
    *,
    clip: float = 1.0,
    max_weight: float = 1000.0,
    associated_data: bytes = b"",
) -> Aggregator:
    """Build the aggregator named by ``protection`` (one of :data:`PROTECTIONS`).

    ``secagg`` is the complete graph, ``secagg+`` the sparse graph of :func:`auto_neighbours`
    (the complete graph when ``num_clients`` is too small for a sparser one); ``verified``
    takes ``clip`` as its L2 bound and needs equal weights (``max_weight`` is CKKS's).
    """
    if protection == "none":
        return PlainAggregator()
    if protection == "secagg":
        return SecAggAggregator(num_clients, clip=clip, associated_data=associated_data)
    if protection == "secagg+":
        aggregator = SecAggAggregator(num_clients, clip=clip, neighbours="auto", associated_data=associated_data)
        aggregator.name = "secagg+"
        return aggregator
    if protection == "ckks":
        return CkksAggregator(num_clients, clip=clip, max_weight=max_weight)
    if protection == "verified":
        return VerifiedAggregator(num_clients, clip=clip)
    raise ValueError(f"protection must be one of {list(PROTECTIONS)}, got {protection!r}")
