"""A small in-memory federation for the CKKS round tests: real nodes, real messages.

Nodes are :class:`~fedcrypt.he.round.CkksClient` objects with transport ids ``100 + i`` (so
an index is never mistaken for a node id); with ``roster=True`` node ``i`` is roster member
``"node-i"``. The honest server (:class:`~fedcrypt.he.round.CkksServer`) runs the stages;
tests take the messages it sends and the nodes' replies and tamper with them as a malicious
server would.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from fedcrypt.errors import HonestButCuriousWarning
from fedcrypt.he import CkksParams, KeyOwner
from fedcrypt.he.round import (
    CkksClient,
    CkksConfig,
    CkksServer,
    ConfirmedUpload,
    Message,
    Stage,
    Upload,
)
from fedcrypt.identity import NodeIdentity, Roster

D = 16
PARAMS = CkksParams.preset("compact", num_clients=8, clip=4.0, max_weight=1.0)
MAX_WEIGHT = 10.0


def node_id(index: int) -> int:
    return 100 + index


@dataclass
class RoundLog:
    """Every message of one round, by stage: requests sent and replies received, by node."""

    requests: dict[Stage, dict[int, Message]] = field(default_factory=dict)
    replies: dict[Stage, dict[int, Message]] = field(default_factory=dict)


class Federation:
    """``n`` nodes and the round config; :meth:`run` drives rounds through the honest server."""

    def __init__(
        self,
        n: int = 3,
        *,
        roster: bool = True,
        min_contributions: int = 2,
        decryptors: int = 2,
        key_setup: str = "dealer",
        seed: int = 0,
    ) -> None:
        self.n = n
        self.identities = [NodeIdentity.generate() for _ in range(n)] if roster else None
        self.roster = (
            Roster({f"node-{i}": ident.public_bytes for i, ident in enumerate(self.identities)})
            if self.identities is not None else None
        )
        self.config = CkksConfig(
            PARAMS, min_contributions=min_contributions, max_weight=MAX_WEIGHT, decryptors=decryptors,
            key_setup=key_setup, roster=self.roster,
        )
        self.key_file = KeyOwner.generate(PARAMS).to_bytes(include_secret_key=True) if key_setup == "file" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)
            self.clients = {node_id(i): self.new_client(i) for i in range(n)}
        rng = np.random.default_rng(seed)
        self.inputs = {node_id(i): rng.uniform(-1.0, 1.0, D) for i in range(n)}
        self.weights = {node_id(i): float(rng.integers(1, 11)) for i in range(n)}
        self.context: bytes | None = None

    def new_client(self, index: int) -> CkksClient:
        key = KeyOwner.from_bytes(self.key_file) if self.key_file is not None else None
        identity = self.identities[index] if self.identities is not None else None
        return CkksClient(self.config, node_id(index), identity=identity, key=key)

    def identity(self, node: int) -> NodeIdentity | None:
        return self.identities[node - 100] if self.identities is not None else None

    def member(self, node: int) -> str:
        return f"node-{node - 100}" if self.roster is not None else ""

    def server(self, round_id: int, nodes: list[int] | None = None) -> CkksServer:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)
            return CkksServer(self.config, nodes or sorted(self.clients), round_id=round_id, context=self.context)

    def run(self, round_id: int, *, until: Stage = Stage.DONE, skip: dict[Stage, set[int]] | None = None) -> tuple[CkksServer, RoundLog]:
        """Drive a round honestly up to (not including the replies of) stage ``until``."""
        server = self.server(round_id)
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
                server.receive(reply.to_bytes(), sender=node)
            requests = server.end_stage()
        self.context = server.result.context
        return server, log

    def expected_mean(self, nodes: list[int]) -> np.ndarray:
        """The plaintext FedAvg of ``nodes`` (inputs lie within the clip, so none is clipped)."""
        total = sum(self.weights[n] for n in nodes)
        return sum(self.weights[n] * self.inputs[n] for n in nodes) / total


def confirmed(uploads: list[Upload], confirmations: dict[int, bytes]) -> tuple[ConfirmedUpload, ...]:
    """The uploads with their nodes' confirmations (empty bytes where a node has none)."""
    return tuple(ConfirmedUpload(u, confirmations.get(u.node, b"")) for u in uploads)
