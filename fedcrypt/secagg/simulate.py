"""In-process simulation of a whole SecAgg round, every message through its byte encoding.

Invariants:

* Client ids are the positions in the input list, ``0 .. n-1``.
* A client listed under a stage in ``dropouts`` drops before it sends that stage's message
  (with ``verify_survivors=False`` there is no consistency message: a client listed under
  ``CONSISTENCY_CHECK`` then drops after its masked input, like one listed under ``UNMASK``).
* The returned ring sum is exactly the sum in Z_(2^bits) of the survivors' ring inputs, or
  the round raises :class:`~fedcrypt.errors.RoundAbortedError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from fedcrypt._simulation import check_dropouts
from fedcrypt.crypto import Ed25519KeyPair

from .client import ClientProtocol
from .config import SecAggConfig
from .messages import Message, Stage
from .server import ServerProtocol

__all__ = ["SimulationResult", "simulate", "simulate_ring"]

_DROPPABLE = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK)


@dataclass(frozen=True, slots=True, eq=False)
class SimulationResult:
    """Outcome and costs of one simulated round.

    Attributes:
        ring_sum: exact ring sum of the survivors' inputs (uint32 or uint64).
        survivors: sorted ids whose inputs are in the sum.
        bytes_up_per_client: mean bytes a client sent (over clients that sent anything).
        bytes_down_per_client: mean bytes a client received (same clients).
        max_bytes_up: the most bytes any one client sent.
        client_seconds: mean CPU-side wall time a client spent in its protocol object.
        max_client_seconds: the largest such time of one client.
        server_seconds: wall time the server spent decoding and in its protocol object.
        stage_seconds: server wall time per stage name.
    """

    ring_sum: np.ndarray = field(repr=False)
    survivors: tuple[int, ...]
    bytes_up_per_client: float
    bytes_down_per_client: float
    max_bytes_up: int
    client_seconds: float
    max_client_seconds: float
    server_seconds: float
    stage_seconds: dict[str, float]

    def __repr__(self) -> str:
        return (
            f"SimulationResult(survivors={len(self.survivors)}, length={self.ring_sum.shape[0]}, "
            f"bytes_up_per_client={self.bytes_up_per_client:.0f}, server_seconds={self.server_seconds:.3f})"
        )


def simulate_ring(
    ring_vectors: list[np.ndarray],
    config: SecAggConfig,
    dropouts: Mapping[Stage, set[int]] | None = None,
    *,
    round_id: int = 0,
    associated_data: bytes = b"",
) -> SimulationResult:
    """Run one round over inputs that are already ring elements.

    Args:
        ring_vectors: one 1-D vector per client, ``uint32`` (bits=32) or ``uint64`` (bits=64),
            all the same length; ``len(ring_vectors)`` must equal ``config.num_clients``.
        config: the round parameters.
        dropouts: ``{stage: client ids}``; each listed client drops before sending that
            stage's message.
        round_id: the round number.
        associated_data: bytes bound into the round (equal for every client here).

    Returns:
        The exact ring sum of the survivors' inputs with costs.

    Raises:
        RoundAbortedError: too many dropouts for the threshold.
        ValueError / TypeError: inputs that do not fit the config.
    """
    if not isinstance(config, SecAggConfig):
        raise TypeError(f"config must be a SecAggConfig, got {type(config).__name__}")
    n = config.num_clients
    if not isinstance(ring_vectors, (list, tuple)) or len(ring_vectors) != n:
        got = len(ring_vectors) if isinstance(ring_vectors, (list, tuple)) else type(ring_vectors).__name__
        raise ValueError(f"expected a list of num_clients={n} vectors, got {got}")
    ring = config.codec.ring_dtype
    lengths = set()
    for vector in ring_vectors:
        if not isinstance(vector, np.ndarray) or vector.ndim != 1 or vector.dtype != ring:
            raise TypeError(f"every ring vector must be a 1-D {ring} numpy array")
        lengths.add(vector.shape[0])
    if len(lengths) != 1:
        raise ValueError(f"all vectors must have the same length, got lengths {sorted(lengths)}")
    (dimension,) = lengths
    drops = check_dropouts(dropouts, n, _DROPPABLE, party="client")

    signing = verify = None
    if config.verify_survivors:
        signing = [Ed25519KeyPair.generate() for _ in range(n)]
        verify = {i: k.public_bytes for i, k in enumerate(signing)}
    clients = [
        ClientProtocol(
            config,
            i,
            round_id=round_id,
            associated_data=associated_data,
            signing_key=signing[i] if signing else None,
            verify_keys=verify,
        )
        for i in range(n)
    ]
    server = ServerProtocol(config, round_id=round_id, associated_data=associated_data, dimension=dimension, verify_keys=verify)
    up = [0] * n
    down = [0] * n
    busy = [0.0] * n
    server_time = 0.0
    stage_seconds: dict[str, float] = {}
    gone: set[int] = set()

    def server_call(stage: Stage, fn, *args):
        nonlocal server_time
        start = time.perf_counter()
        value = fn(*args)
        elapsed = time.perf_counter() - start
        server_time += elapsed
        stage_seconds[stage.name] = stage_seconds.get(stage.name, 0.0) + elapsed
        return value

    def deliver(stage: Stage, requests: dict[int, Message] | None) -> None:
        """Each live client answers; the server receives every answer, then ends the stage."""
        dropping = drops.get(stage, frozenset())
        if stage is Stage.UNMASK and not config.verify_survivors:
            dropping = dropping | drops.get(Stage.CONSISTENCY_CHECK, frozenset())
        targets = range(n) if requests is None else sorted(requests)
        for i in targets:
            if i in gone or i in dropping:
                gone.add(i)
                continue
            start = time.perf_counter()
            reply: Message
            if requests is None:
                reply = clients[i].advertise()
            else:
                data = requests[i].to_bytes()
                down[i] += len(data)
                if stage is Stage.MASKED_INPUT:
                    clients[i].set_input(ring_vectors[i])  # given late: one input copy alive at a time
                reply = clients[i].handle(data)
            blob = reply.to_bytes()
            busy[i] += time.perf_counter() - start
            up[i] += len(blob)
            server_call(stage, server.receive, blob)

    deliver(Stage.ADVERTISE_KEYS, None)
    requests = server_call(Stage.ADVERTISE_KEYS, server.end_stage)
    stages = [Stage.SHARE_KEYS, Stage.MASKED_INPUT]
    if config.verify_survivors:
        stages.append(Stage.CONSISTENCY_CHECK)
    stages.append(Stage.UNMASK)
    for stage in stages:
        deliver(stage, requests)
        requests = server_call(stage, server.end_stage)
    result = server.result
    active = [i for i in range(n) if up[i]]
    return SimulationResult(
        ring_sum=result.ring_sum,
        survivors=result.survivors,
        bytes_up_per_client=float(np.mean([up[i] for i in active])) if active else 0.0,
        bytes_down_per_client=float(np.mean([down[i] for i in active])) if active else 0.0,
        max_bytes_up=max(up),
        client_seconds=float(np.mean([busy[i] for i in active])) if active else 0.0,
        max_client_seconds=max(busy),
        server_seconds=server_time,
        stage_seconds=stage_seconds,
    )


def simulate(
    vectors: list[np.ndarray],
    config: SecAggConfig,
    dropouts: Mapping[Stage, set[int]] | None = None,
    *,
    round_id: int = 0,
    associated_data: bytes = b"",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Encode float vectors with ``config.codec``, run :func:`simulate_ring`, decode the sum.

    Args:
        vectors: one 1-D float vector per client (client id = position).
        config: the round parameters.
        dropouts: ``{stage: client ids}`` as in :func:`simulate_ring`.
        round_id: the round number.
        associated_data: bytes bound into the round.
        rng: source of the fixed-point rounding coins (not secret).

    Returns:
        The float64 sum of the survivors' (clipped, fixed-point rounded) vectors.
    """
    if not isinstance(vectors, (list, tuple)):
        raise TypeError(f"vectors must be a list of numpy vectors, got {type(vectors).__name__}")
    codec = config.codec
    ring = [codec.encode(v, rng=rng) for v in vectors]
    outcome = simulate_ring(ring, config, dropouts, round_id=round_id, associated_data=associated_data)
    return codec.decode_sum(outcome.ring_sum, len(outcome.survivors))
