"""A small in-memory federation for the threshold round tests: real nodes, real messages.

Nodes are :class:`~fedcrypt.he.threshold.round.ThresholdClient` objects with transport ids
``100 + i`` (so an index is never mistaken for a node id); with ``roster=True`` node ``i`` is
roster member ``"node-i"``. The honest server (:class:`ThresholdRoundServer`) runs the
stages; tests take the messages it sends and the nodes' replies and tamper with them as a
malicious server would. Parameters: the ``compact`` preset, three key holders, eight
uploads of weight at most ``M = 8`` (OpenFHE learns a parameter set's layouts once per
process, so every test uses one of the two sets below).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import numpy as np

from fedcrypt.errors import HonestButCuriousWarning
from fedcrypt.he.threshold import ThresholdParams
from fedcrypt.he.threshold.round import (
    ConfirmedUpload,
    Message,
    Stage,
    ThresholdClient,
    ThresholdConfig,
    ThresholdRoundServer,
    Upload,
)
from fedcrypt.identity import NodeIdentity, Roster

D = 16
M = 8.0
N = 3


@functools.lru_cache(maxsize=None)
def params(recovery: int = 2) -> ThresholdParams:
    """The test parameters: ``recovery`` = 0 (n-of-n) or 2 (2-of-3 backup)."""
    return ThresholdParams.preset("compact", num_parties=N, num_clients=8, max_weight=8, recovery_threshold=recovery)


def node_id(index: int) -> int:
    return 100 + index


@dataclass
class RoundLog:
    """Every message of one round, by stage: requests sent and replies received, by node
    (KEYGEN, RELEASE and RECOVER may run several times: the last one's are kept, and
    ``keygen`` keeps every KEYGEN request and reply in order)."""

    requests: dict[Stage, dict[int, Message]] = field(default_factory=dict)
    replies: dict[Stage, dict[int, Message]] = field(default_factory=dict)
    keygen: list[tuple[Message, Message]] = field(default_factory=list)


class Federation:
    """``n`` nodes and the round config; :meth:`run` drives rounds through the honest server."""

    def __init__(
        self, n: int = N, *, roster: bool = True, recovery: int = 2, min_contributions: int = 2, seed: int = 0
    ) -> None:
        self.n = n
        self.identities = [NodeIdentity.generate() for _ in range(n)] if roster else None
        self.roster = (
            Roster({f"node-{i}": ident.public_bytes for i, ident in enumerate(self.identities)})
            if self.identities is not None else None
        )
        self.config = ThresholdConfig(params(recovery), min_contributions=min_contributions, max_weight=M, roster=self.roster)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)
            self.clients = {node_id(i): ThresholdClient(self.config, node_id(i), identity=self.identity(node_id(i))) for i in range(n)}
        rng = np.random.default_rng(seed)  # test data, not secret
        self.inputs = {node_id(i): rng.uniform(-1.0, 1.0, D) for i in range(n)}
        self.weights = {node_id(i): float(rng.integers(1, 9)) for i in range(n)}
        self.session: bytes | None = None

    def identity(self, node: int) -> NodeIdentity | None:
        return self.identities[node - 100] if self.identities is not None else None

    def member(self, node: int) -> str:
        return f"node-{node - 100}" if self.roster is not None else ""

    def server(self, round_id: int, nodes: list[int] | None = None) -> ThresholdRoundServer:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)
            return ThresholdRoundServer(self.config, nodes or sorted(self.clients), round_id=round_id, session=self.session)

    def run(
        self, round_id: int, *, until: Stage = Stage.DONE, skip: dict[Stage, set[int]] | None = None,
        nodes: list[int] | None = None,
    ) -> tuple[ThresholdRoundServer, RoundLog]:
        """Drive a round honestly up to (not including the replies of) stage ``until``."""
        server = self.server(round_id, nodes)
        log = RoundLog()
        requests: dict[int, Message] = server.begin()
        while requests:
            stage = server.stage
            log.requests[stage] = dict(requests)
            if stage is until:
                return server, log
            log.replies[stage] = {}
            for node in sorted(requests):
                if node in (skip or {}).get(stage, set()):
                    continue
                if stage is Stage.ENCRYPT:
                    self.clients[node].set_input(self.inputs[node], self.weights[node])
                reply = self.clients[node].handle(requests[node].to_bytes())
                log.replies[stage][node] = reply
                if stage is Stage.KEYGEN:
                    log.keygen.append((requests[node], reply))
                server.receive(reply.to_bytes(), sender=node)
            requests = server.end_stage()
        self.session = server.result.session
        return server, log

    def snapshot(self) -> dict[int, bytes]:
        """Every node's state bytes."""
        return {node: client.to_state_bytes() for node, client in self.clients.items()}

    def restore(self, saved: dict[int, bytes], cls: type[ThresholdClient] = ThresholdClient) -> None:
        """Every node rebuilt from ``saved`` (as ``cls``)."""
        self.clients = {
            node: cls.from_state_bytes(raw, config=self.config, identity=self.identity(node)) for node, raw in saved.items()
        }

    def expected_mean(self, nodes: list[int]) -> np.ndarray:
        """The plaintext FedAvg of ``nodes`` (inputs lie within the clip, so none is clipped)."""
        total = sum(self.weights[n] for n in nodes)
        return sum(self.weights[n] * self.inputs[n] for n in nodes) / total


def confirmed(uploads: list[Upload], confirmations: dict[int, bytes]) -> tuple[ConfirmedUpload, ...]:
    """The uploads with their nodes' confirmations (empty bytes where a node has none)."""
    return tuple(ConfirmedUpload(u, confirmations.get(u.node, b"")) for u in uploads)
