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

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from fedcrypt._simulation import check_dropouts
from fedcrypt.errors import HonestButCuriousWarning
from fedcrypt.he._round_roles import SimulationResult, check_simulation_inputs, run_simulation
from fedcrypt.he.context import KeyOwner
from fedcrypt.identity import NodeIdentity

from .client import CkksClient
from .config import CkksConfig
from .messages import Stage
from .server import CkksServer

__all__ = ["SimulationResult", "simulate"]

_DROPPABLE = (Stage.CONTEXT, Stage.DEAL, Stage.INSTALL, Stage.ENCRYPT, Stage.CONFIRM, Stage.DECRYPT)


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
    weights = check_simulation_inputs(config, CkksConfig, vectors, weights, identities)
    n = len(vectors)
    drops = check_dropouts(dropouts, n, _DROPPABLE)

    shared_key = None
    if config.key_setup == "file":
        shared_key = KeyOwner.generate(config.params).to_bytes(include_secret_key=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)  # the config says which mode runs
        clients = [
            CkksClient(
                config,
                i,
                identity=identities[i] if identities is not None else None,
                key=KeyOwner.from_bytes(shared_key) if shared_key is not None else None,
            )
            for i in range(n)
        ]
        server = CkksServer(config, range(n), round_id=round_id)

    return run_simulation(server, clients, vectors, weights, drops, encrypt=Stage.ENCRYPT, decrypt=Stage.DECRYPT)
