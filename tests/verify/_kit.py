"""Shared set-up of the verify round tests: one small config, a helper key, a driver."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.verify import HELPER, Helper, Leader, VerifyClient, VerifyConfig
from fedcrypt.verify.encoding import encode_vector

DIM = 12
HELPER_KEY = X25519KeyPair.generate()
VERIFY_KEY = os.urandom(32)


def config(**kw) -> VerifyConfig:
    kw.setdefault("dimension", DIM)
    dimension = kw.pop("dimension")
    return VerifyConfig.for_dimension(dimension, kw.pop("l2_norm_bound", 1.0), HELPER_KEY.public_bytes, **kw)


CONFIG = config()


def expected_sum(cfg: VerifyConfig, vectors, weights=None) -> np.ndarray:
    """The exact float sum the round must return without noise: sum of the encoded integers."""
    weights = [1.0] * len(vectors) if weights is None else weights
    total = np.zeros(cfg.dimension, dtype=np.int64)
    for v, w in zip(vectors, weights):
        total += encode_vector(
            np.asarray(v), bound=cfg.l2_norm_bound, frac_bits=cfg.params.num_frac_bits, bound_int=cfg.bound,
            weight=w / cfg.max_weight, clip=cfg.clip,
        )
    return np.ldexp(total.astype(np.float64), -cfg.params.num_frac_bits)


def vectors(n: int, dim: int = DIM, scale: float = 0.2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=dim) * scale).astype(np.float32) for _ in range(n)]


@dataclass
class Round:
    """Every party of one round, driven by hand (messages through bytes where the test says)."""

    config: VerifyConfig
    leader: Leader
    helper: Helper
    clients: list[VerifyClient]
    requests: dict

    @classmethod
    def start(cls, n: int = 3, cfg: VerifyConfig = CONFIG, round_id: int = 0) -> "Round":
        leader = Leader(cfg, VERIFY_KEY, range(n), round_id=round_id)
        helper = Helper(cfg, VERIFY_KEY, HELPER_KEY, round_id=round_id, last_released_round=None)
        clients = [VerifyClient(cfg, i) for i in range(n)]
        return cls(cfg, leader, helper, clients, leader.begin())

    def report(self, i: int, vector=None):
        self.clients[i].set_input(vectors(1, self.config.dimension, seed=i)[0] if vector is None else vector)
        return self.clients[i].handle(self.requests[i].to_bytes())

    def upload_all(self) -> None:
        for i in range(len(self.clients)):
            self.leader.receive(self.report(i).to_bytes())

    def finish(self):
        """Close UPLOAD and run the aggregator exchanges to the end; the leader's result."""
        out = self.leader.end_stage()
        while out:
            reply = self.helper.handle(out[HELPER].to_bytes())
            self.leader.receive(reply.to_bytes())
            out = self.leader.end_stage()
        return self.leader.result
