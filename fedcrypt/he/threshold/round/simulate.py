"""In-process threshold CKKS round: :func:`simulate` runs the nodes and the server in one
process, every message through its bytes.

Invariants:

* node ids are the positions in the input list, ``0 .. n-1``, and the nodes are the
  session's committee (``n = config.params.num_parties``): the round sets up a new session
  (KEYGEN, JOINT and, with ``recovery_threshold``, BACKUP) before the uploads;
* a node listed under a stage in ``dropouts`` drops before it answers that stage's request
  (and stays gone): a key holder gone at DECRYPT is stood in for (t-of-n) or ends the round;
* the result is the flooded FedAvg of the contributors' vectors, within
  :func:`~fedcrypt.he.threshold.round.fedavg_error_bound`, or the round raises a typed error.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from fedcrypt._simulation import check_dropouts
from fedcrypt.errors import HonestButCuriousWarning
from fedcrypt.he._round_roles import SimulationResult, check_simulation_inputs, run_simulation
from fedcrypt.identity import NodeIdentity

from .client import ThresholdClient
from .config import ThresholdConfig
from .messages import Stage
from .server import ThresholdRoundServer

__all__ = ["SimulationResult", "simulate"]

_DROPPABLE = tuple(s for s in Stage if s not in (Stage.DONE, Stage.ABORTED))


def simulate(
    config: ThresholdConfig,
    vectors: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    *,
    dropouts: Mapping[Stage, Any] | None = None,
    identities: Sequence[NodeIdentity] | None = None,
    round_id: int = 0,
) -> SimulationResult:
    """Run one threshold CKKS round (a new session) in process, every message through its bytes.

    Args:
        config: the round configuration; with a roster, ``identities`` are required.
        vectors: one 1-D float vector ``x`` per node, all of one length; as many as
            ``config.params.num_parties`` (every node holds a key share).
        weights: one FedAvg weight per node in ``(0, max_weight]`` (default 1).
        dropouts: ``{stage: node ids}``; each listed node drops before answering that stage.
        identities: node ``i``'s roster identity, one per vector (with a roster only).
        round_id: the round id.

    Raises:
        RoundAbortedError: the round could not finish (a key holder gone in the key set-up,
            too few uploads, a holder gone at DECRYPT beyond what ``recovery_threshold``
            stands in for; with a roster, a drop at CONFIRM).
        ValueError / TypeError: arguments that do not fit.
    """
    weights = check_simulation_inputs(config, ThresholdConfig, vectors, weights, identities)
    n = len(vectors)
    if n != config.params.num_parties:
        raise ValueError(f"need one vector per key holder: {config.params.num_parties} (params.num_parties), got {n}")
    drops = check_dropouts(dropouts, n, _DROPPABLE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)  # the config says which mode runs
        clients = [ThresholdClient(config, i, identity=identities[i] if identities is not None else None) for i in range(n)]
        server = ThresholdRoundServer(config, range(n), round_id=round_id)
    return run_simulation(server, clients, vectors, weights, drops, encrypt=Stage.ENCRYPT, decrypt=Stage.DECRYPT)
