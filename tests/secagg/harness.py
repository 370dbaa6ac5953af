"""In-memory harness: clients and a server of one round, every message through its bytes."""

from __future__ import annotations

import numpy as np

from fedcrypt.crypto import Ed25519KeyPair
from fedcrypt.secagg import ClientProtocol, SecAggConfig, ServerProtocol, Stage


class Round:
    """One round with ring inputs; :meth:`step` runs a stage with chosen clients answering."""

    def __init__(self, config: SecAggConfig, length: int = 16, seed: int = 0, associated_data: bytes = b"ad") -> None:
        self.config = config
        n = config.num_clients
        rng = np.random.default_rng(seed)  # inputs are test data, not secrets
        ring = config.codec.ring_dtype
        self.inputs = [rng.integers(0, np.iinfo(ring).max, size=length, dtype=ring, endpoint=True) for _ in range(n)]
        self.signing = [Ed25519KeyPair.generate() for _ in range(n)] if config.verify_survivors else None
        verify = {i: k.public_bytes for i, k in enumerate(self.signing)} if self.signing else None
        self.clients = [
            ClientProtocol(
                config,
                i,
                round_id=3,
                associated_data=associated_data,
                vector=self.inputs[i],
                signing_key=self.signing[i] if self.signing else None,
                verify_keys=verify,
            )
            for i in range(n)
        ]
        self.server = ServerProtocol(config, round_id=3, associated_data=associated_data, dimension=length, verify_keys=verify)
        self.requests: dict[int, object] | None = None
        self.sent: dict[int, list[bytes]] = {i: [] for i in range(n)}

    def step(self, drop: set[int] | frozenset[int] = frozenset()) -> dict[int, object]:
        """Every client that is asked and not in ``drop`` answers; the server ends the stage."""
        if self.requests is None:
            for i, client in enumerate(self.clients):
                if i not in drop:
                    self._send(i, client.advertise().to_bytes())
        else:
            for i, request in self.requests.items():
                if i not in drop:
                    self._send(i, self.clients[i].handle(request.to_bytes()).to_bytes())  # type: ignore[attr-defined]
        self.requests = self.server.end_stage()
        return self.requests

    def _send(self, i: int, blob: bytes) -> None:
        self.sent[i].append(blob)
        self.server.receive(blob)

    def run(self, drops: dict[Stage, set[int]] | None = None) -> None:
        drops = drops or {}
        stages = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT]
        if self.config.verify_survivors:
            stages.append(Stage.CONSISTENCY_CHECK)
        stages.append(Stage.UNMASK)
        gone: set[int] = set()
        for stage in stages:
            gone |= drops.get(stage, set())
            self.step(gone)

    def expected_sum(self, survivors) -> np.ndarray:
        total = np.zeros_like(self.inputs[0])
        for i in survivors:
            total += self.inputs[i]
        return total
