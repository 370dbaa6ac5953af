"""A self-contained in-memory SecAgg round for attacker review 6 (every message through its bytes).

``Round(config)`` builds real ``ClientProtocol`` objects (a roster when ``verify_survivors``) and
the real ``ServerProtocol`` (with ``verify_keys``, as simulate and the FLARE server build it).
``step(drop, tamper)`` runs one stage: every asked client not in ``drop`` answers, ``tamper(i,
message)`` may replace client ``i``'s message (the malicious peer), and the server ends the
stage. ``clients`` may be replaced by a subclass of ``ClientProtocol`` before the first step.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from fedcrypt.crypto import Ed25519KeyPair
from fedcrypt.errors import HonestButCuriousWarning
from fedcrypt.secagg import ClientProtocol, SecAggConfig, ServerProtocol, Stage

ROUND = 7
AD = b"review6"


class Round:
    def __init__(self, config: SecAggConfig, length: int = 4, seed: int = 0, client_class=ClientProtocol, bad: int | None = None,
                 bad_class=None) -> None:
        self.config = config
        n = config.num_clients
        rng = np.random.default_rng(seed)  # test inputs, not secrets
        ring = config.codec.ring_dtype
        self.inputs = [rng.integers(0, np.iinfo(ring).max, size=length, dtype=ring, endpoint=True) for _ in range(n)]
        self.signing = [Ed25519KeyPair.generate() for _ in range(n)] if config.verify_survivors else None
        verify = {i: k.public_bytes for i, k in enumerate(self.signing)} if self.signing else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)
            self.clients = [
                (bad_class if i == bad and bad_class is not None else client_class)(
                    config, i, round_id=ROUND, associated_data=AD, vector=self.inputs[i],
                    signing_key=self.signing[i] if self.signing else None, verify_keys=verify)
                for i in range(n)
            ]
        self.server = ServerProtocol(config, round_id=ROUND, associated_data=AD, dimension=length, verify_keys=verify)
        self.requests: dict[int, object] | None = None
        self.refused_at_receive: dict[int, Exception] = {}
        self.client_errors: dict[int, Exception] = {}

    def step(self, drop=frozenset(), tamper: Callable | None = None) -> dict[int, object]:
        if self.requests is None:
            outgoing = {i: (lambda c=c: c.advertise()) for i, c in enumerate(self.clients)}
        else:
            outgoing = {i: (lambda i=i, r=r: self.clients[i].handle(r.to_bytes())) for i, r in self.requests.items()}
        for i, make in sorted(outgoing.items()):
            if i in drop:
                continue
            try:
                message = make()
            except Exception as exc:  # an honest client that refuses what it was sent drops out
                self.client_errors[i] = exc
                continue
            if tamper is not None:
                message = tamper(i, message)
                if message is None:
                    continue
            try:
                self.server.receive(message.to_bytes())
            except Exception as exc:
                self.refused_at_receive[i] = exc
        self.requests = self.server.end_stage()
        return self.requests

    def stages(self) -> list[Stage]:
        out = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT]
        if self.config.verify_survivors:
            out.append(Stage.CONSISTENCY_CHECK)
        return out + [Stage.UNMASK]

    def run(self, drops: dict[Stage, set[int]] | None = None, tamper: Callable | None = None) -> None:
        """Every stage; ``drops[stage]``: who stops answering from that stage on."""
        drops = drops or {}
        gone: set[int] = set()
        for stage in self.stages():
            gone |= drops.get(stage, set())
            stage_tamper = (lambda i, m, s=stage: tamper(s, i, m)) if tamper is not None else None
            self.step(gone, stage_tamper)

    def expected_sum(self, survivors) -> np.ndarray:
        total = np.zeros_like(self.inputs[0])
        for i in survivors:
            total += self.inputs[i]
        return total
