"""In-process verified-aggregation round: :func:`simulate` runs the clients, the leader and
the helper in one process, every message through its bytes.

Invariants:

* client ids are the positions in the input list, ``0 .. n-1``;
* a client listed under ``Stage.UPLOAD`` in ``dropouts`` never sends its report;
* the result is the sum of the accepted clients' clipped, weighted, fixed-point vectors
  plus the noise, or the round raises a typed error.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from fedcrypt._simulation import check_dropouts
from fedcrypt.crypto import X25519KeyPair

from .client import VerifyClient
from .config import VerifyConfig
from .helper import Helper
from .leader import AggregationResult, Leader, RoundReport
from .messages import HELPER, Stage

__all__ = ["SimulationResult", "simulate"]

_DROPPABLE = (Stage.UPLOAD,)


@dataclass(frozen=True, slots=True, eq=False)
class SimulationResult:
    """Outcome and costs of one simulated round.

    Attributes:
        sum: the accepted clients' summed vectors, with noise (float64).
        count: how many reports are in the sum.
        accepted: their clients.
        result: the leader's :class:`~fedcrypt.verify.AggregationResult`.
        report: the leader's :class:`~fedcrypt.verify.RoundReport`.
        config: the config the round ran under (with the helper key used).
        upload_bytes: bytes of the largest report a client sent.
        request_bytes: bytes of the largest upload request a client received.
        encoded_vector_bytes: bytes of the encoded vector alone (``d`` field elements).
        upload_ratio: ``upload_bytes / encoded_vector_bytes``.
        leader_to_helper_bytes / helper_to_leader_bytes: bytes between the aggregators.
        client_seconds: mean wall time a client spent making its report.
        max_client_seconds: the largest such time.
        leader_seconds / helper_seconds: wall time each aggregator spent in its object.
        stage_seconds: aggregators' wall time per stage name (``"leader:UPLOAD"``, ...).
    """

    sum: np.ndarray = field(repr=False)
    count: int
    accepted: tuple[int, ...]
    result: AggregationResult
    report: RoundReport
    config: VerifyConfig = field(repr=False)
    upload_bytes: int
    request_bytes: int
    encoded_vector_bytes: int
    upload_ratio: float
    leader_to_helper_bytes: int
    helper_to_leader_bytes: int
    client_seconds: float
    max_client_seconds: float
    leader_seconds: float
    helper_seconds: float
    stage_seconds: dict[str, float]

    def __repr__(self) -> str:
        return (
            f"SimulationResult(count={self.count}, length={self.sum.shape[0]}, upload_bytes={self.upload_bytes}, "
            f"upload_ratio={self.upload_ratio:.4f}, client_seconds={self.client_seconds:.3f}, "
            f"leader_seconds={self.leader_seconds:.3f}, helper_seconds={self.helper_seconds:.3f})"
        )


def simulate(
    config: VerifyConfig,
    vectors: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    *,
    dropouts: Mapping[Stage, Any] | None = None,
    round_id: int = 0,
    helper_key: X25519KeyPair | None = None,
    verify_key: bytes | None = None,
    batch_size: int | None = None,
    last_released_round: int | None = None,
) -> SimulationResult:
    """Run one verified-aggregation round in process, every message through its bytes.

    Args:
        config: the round configuration.
        vectors: one flat float vector per client (the spec's length).
        weights: one weight per client in ``(0, config.max_weight]`` (default 1): client
            ``i`` contributes ``w_i / M * clip(x_i)``.
        dropouts: ``{Stage.UPLOAD: client ids}``: those clients never report.
        round_id: the round id.
        helper_key: the helper's X25519 key pair; ``None``: a fresh one, and the round runs
            under ``config`` with its public key (``result.config``).
        verify_key: the aggregators' shared verification key (default: 32 fresh random bytes).
        batch_size: the leader sends a PrepareRequest every ``batch_size`` reports during
            UPLOAD (default: one batch at the end).
        last_released_round: the helper's release record (see :class:`~fedcrypt.verify.Helper`;
            ``None``: a helper that never released a round, as a simulation's usually is).

    Raises:
        RoundAbortedError: fewer than ``min_reports`` reports received or accepted.
        SpecMismatchError / EncodingError: a vector or weight that does not fit.
        ValueError / TypeError: arguments that do not fit.
    """
    if not isinstance(config, VerifyConfig):
        raise TypeError(f"config must be a VerifyConfig, got {type(config).__name__}")
    n = len(vectors)
    if n < 1:
        raise ValueError("need at least one vector")
    checked = [1.0] * n if weights is None else list(weights)
    if len(checked) != n:
        raise ValueError(f"got {len(checked)} weights for {n} vectors")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    drops = check_dropouts(dropouts, n, _DROPPABLE, party="client")
    if helper_key is None:
        helper_key = X25519KeyPair.generate()
        config = dataclasses.replace(config, helper_key=helper_key.public_bytes)
    key = os.urandom(config.vdaf.verify_key_size) if verify_key is None else verify_key

    clients = [VerifyClient(config, i) for i in range(n)]
    leader = Leader(config, key, range(n), round_id=round_id)
    helper = Helper(config, key, helper_key, round_id=round_id, last_released_round=last_released_round)
    busy = [0.0] * n
    upload = request_bytes = 0
    to_helper = from_helper = 0
    seconds = {"leader": 0.0, "helper": 0.0}
    stage_seconds: dict[str, float] = {}

    def timed(party: str, fn: Any, *args: Any) -> Any:
        stage = f"{party}:{leader.stage.name}"
        start = time.perf_counter()
        value = fn(*args)
        elapsed = time.perf_counter() - start
        seconds[party] += elapsed
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + elapsed
        return value

    def to_the_helper(request: Any) -> None:
        nonlocal to_helper, from_helper
        data = request.to_bytes()
        to_helper += len(data)
        reply = timed("helper", helper.handle, data).to_bytes()
        from_helper += len(reply)
        timed("leader", leader.receive, reply)

    requests = timed("leader", leader.begin)
    taken = 0
    for client in sorted(requests):
        if client in drops.get(Stage.UPLOAD, frozenset()):
            continue
        data = requests[client].to_bytes()
        request_bytes = max(request_bytes, len(data))
        start = time.perf_counter()
        clients[client].set_input(vectors[client], checked[client])
        report = clients[client].handle(data).to_bytes()
        busy[client] = time.perf_counter() - start
        upload = max(upload, len(report))
        timed("leader", leader.receive, report)
        taken += 1
        if batch_size is not None and taken % batch_size == 0:
            batch = leader.flush()
            if batch is not None:
                to_the_helper(batch)
    outgoing = timed("leader", leader.end_stage)
    while outgoing:
        to_the_helper(outgoing[HELPER])
        outgoing = timed("leader", leader.end_stage)
    result = leader.result
    active = [b for b in busy if b > 0]
    return SimulationResult(
        sum=result.sum,
        count=result.count,
        accepted=result.accepted,
        result=result,
        report=leader.report,
        config=config,
        upload_bytes=upload,
        request_bytes=request_bytes,
        encoded_vector_bytes=config.encoded_vector_bytes,
        upload_ratio=upload / config.encoded_vector_bytes,
        leader_to_helper_bytes=to_helper,
        helper_to_leader_bytes=from_helper,
        client_seconds=float(np.mean(active)) if active else 0.0,
        max_client_seconds=max(busy),
        leader_seconds=seconds["leader"],
        helper_seconds=seconds["helper"],
        stage_seconds=stage_seconds,
    )
