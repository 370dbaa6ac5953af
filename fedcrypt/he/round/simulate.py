"""In-process single-key CKKS round: :func:`simulate` runs the nodes and the server in one
process, every message through its bytes.

Invariants:

* node ids are the positions in the input list, ``0 .. n-1``;
* a node listed under a stage in ``dropouts`` drops before it answers that stage's request
  (and stays gone);
* the result is the flooded FedAvg of the contributors' vectors, within
  :func:`~fedcrypt.he.round.fedavg_error_bound`, or the round raises a typed error.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fedcrypt.errors import HonestButCuriousWarning
from fedcrypt.he.context import KeyOwner
from fedcrypt.identity import NodeIdentity

from .client import CkksClient
from .config import CkksConfig
from .messages import Stage
from .server import AggregationResult, CkksServer, RoundReport

__all__ = ["SimulationResult", "simulate"]

_DROPPABLE = (Stage.CONTEXT, Stage.DEAL, Stage.INSTALL, Stage.ENCRYPT, Stage.CONFIRM, Stage.DECRYPT)


@dataclass(frozen=True, slots=True, eq=False)
class SimulationResult:
    """Outcome and costs of one simulated round.

    Attributes:
        mean: the FedAvg average ``sum(w x) / sum(w)`` of the contributors (float64).
        total_weight: their total weight ``sum(w)``.
        contributors: the nodes whose uploads are in the sum, increasing.
        result: the server's :class:`~fedcrypt.he.round.AggregationResult`.
        report: the server's :class:`~fedcrypt.he.round.RoundReport`.
        upload_bytes: bytes of one upload message.
        decrypt_request_bytes: bytes of the request one decryptor downloads (with a roster:
            every signed upload; without: one aggregate).
        client_seconds: mean wall time a node spent in its protocol object.
        server_seconds: wall time the server spent in its protocol object.
        stage_seconds: server wall time per stage name.
    """

    mean: np.ndarray = field(repr=False)
    total_weight: float
    contributors: tuple[int, ...]
    result: AggregationResult
    report: RoundReport
    upload_bytes: int
    decrypt_request_bytes: int
    client_seconds: float
    server_seconds: float
    stage_seconds: dict[str, float]

    def __repr__(self) -> str:
        return (
            f"SimulationResult(contributors={len(self.contributors)}, length={self.mean.shape[0]}, "
            f"total_weight={self.total_weight:g}, upload_bytes={self.upload_bytes}, "
            f"decrypt_request_bytes={self.decrypt_request_bytes})"
        )


def _check_dropouts(dropouts: Mapping[Stage, Any] | None, n: int) -> dict[Stage, frozenset[int]]:
    if dropouts is None:
        return {}
    if not isinstance(dropouts, Mapping):
        raise TypeError(f"dropouts must be a mapping of Stage to sets of node ids, got {type(dropouts).__name__}")
    checked: dict[Stage, frozenset[int]] = {}
    for stage, ids in dropouts.items():
        if stage not in _DROPPABLE:
            raise ValueError(f"dropouts keys must be stages {[s.name for s in _DROPPABLE]}, got {stage!r}")
        nodes = frozenset(ids)
        if any(not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not 0 <= i < n for i in nodes):
            raise ValueError(f"dropout ids must be node ids in [0, {n})")
        checked[Stage(stage)] = frozenset(int(i) for i in nodes)
    return checked


def simulate(
    config: CkksConfig,
    vectors: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    *,
    dropouts: Mapping[Stage, Any] | None = None,
    identities: Sequence[NodeIdentity] | None = None,
    round_id: int = 0,
) -> SimulationResult:
    """Run one single-key CKKS round in process, every message through its bytes.

    With ``config.key_setup == "dealer"`` node 0 deals the key (the lowest keyless id);
    with ``"file"`` every node loads one freshly generated key from its bytes.

    Args:
        config: the round configuration; with a roster, ``identities`` are required.
        vectors: one 1-D float vector ``x`` per node, all of one length.
        weights: one FedAvg weight per node in ``(0, max_weight]`` (default 1).
        dropouts: ``{stage: node ids}``; each listed node drops before answering that stage.
        identities: node ``i``'s roster identity, one per vector (with a roster only).
        round_id: the round id.

    Raises:
        RoundAbortedError / ContextMismatchError / ProtocolViolationError: the round could
            not finish (too many dropouts; with a roster, a drop at CONFIRM).
        ValueError / TypeError: arguments that do not fit.
    """
    if not isinstance(config, CkksConfig):
        raise TypeError(f"config must be a CkksConfig, got {type(config).__name__}")
    n = len(vectors)
    if n < 1:
        raise ValueError("need at least one vector")
    weights = [1.0] * n if weights is None else list(weights)
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} vectors")
    if (identities is None) != (config.roster is None):
        raise ValueError("identities are given exactly when the config has a roster")
    if identities is not None and len(identities) != n:
        raise ValueError(f"got {len(identities)} identities for {n} vectors")
    drops = _check_dropouts(dropouts, n)

    shared_key = None
    if config.key_setup == "file":
        shared_key = KeyOwner.generate(config.params).to_bytes(include_secret_key=True)
    busy = [0.0] * n
    server_time = 0.0
    stage_seconds: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)  # the config says which mode runs
        clients = [
            CkksClient(
                config, i,
                identity=identities[i] if identities is not None else None,
                key=KeyOwner.from_bytes(shared_key) if shared_key is not None else None,
            )
            for i in range(n)
        ]
        server = CkksServer(config, range(n), round_id=round_id)

    def server_call(stage: Stage, fn: Callable[..., Any], *args: Any) -> Any:
        nonlocal server_time
        start = time.perf_counter()
        value = fn(*args)
        elapsed = time.perf_counter() - start
        server_time += elapsed
        stage_seconds[stage.name] = stage_seconds.get(stage.name, 0.0) + elapsed
        return value

    gone: set[int] = set()
    upload_bytes = decrypt_bytes = 0
    requests = server_call(Stage.CONTEXT, server.begin)
    while requests:
        stage = server.stage
        for node in sorted(requests):
            if node in gone or node in drops.get(stage, frozenset()):
                gone.add(node)
                continue
            data = requests[node].to_bytes()
            if stage is Stage.DECRYPT:
                decrypt_bytes = len(data)
            start = time.perf_counter()
            if stage is Stage.ENCRYPT:
                clients[node].set_input(vectors[node], weights[node])
            reply = clients[node].handle(data).to_bytes()
            busy[node] += time.perf_counter() - start
            if stage is Stage.ENCRYPT:
                upload_bytes = len(reply)
            server_call(stage, server.receive, reply)
        requests = server_call(stage, server.end_stage)
    result = server.result
    active = [busy[i] for i in range(n) if busy[i] > 0]
    return SimulationResult(
        mean=result.mean,
        total_weight=result.total_weight,
        contributors=result.contributors,
        result=result,
        report=server.report,
        upload_bytes=upload_bytes,
        decrypt_request_bytes=decrypt_bytes,
        client_seconds=float(np.mean(active)) if active else 0.0,
        server_seconds=server_time,
        stage_seconds=stage_seconds,
    )
