"""The functions a test job names (``"tests.nvflare._nvflare_apps:train"``), imported by FLARE's server
and site processes (no pytest, no FLARE): deterministic, non-secret updates, so plaintext
FedAvg can be recomputed."""

from __future__ import annotations

import numpy as np


def initial() -> dict[str, np.ndarray]:
    return {"a": np.zeros((3, 7), np.float32), "b": np.zeros(16, np.float32)}


def initial_vector() -> dict[str, np.ndarray]:
    return {"a": np.zeros(1024, np.float32)}


def site_index(site: str) -> int:
    return int(site.rsplit("-", 1)[1])


def update_of(site: str, round_id: int, model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([site_index(site), round_id])
    return {name: (value + rng.uniform(-1, 1, value.shape)).astype(np.float32) for name, value in model.items()}


def weight_of(site: str) -> int:
    return 10 * site_index(site)


def train(model: dict[str, np.ndarray], info: dict) -> tuple:
    site = info["site"]
    return update_of(site, info["round"], model), weight_of(site), {"loss": float(site_index(site))}


def plaintext_fedavg(survivors_by_round: list[list[str]]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """FedAvg recomputed in float64 (each round's updates from the float32 model, as the sites see it)."""
    model = {name: value.astype(np.float64) for name, value in initial().items()}
    metrics: dict[str, float] = {}
    for round_id, sites in enumerate(survivors_by_round, start=1):
        weights = np.array([weight_of(s) for s in sites], dtype=np.float64)
        ups = [update_of(s, round_id, {k: v.astype(np.float32) for k, v in model.items()}) for s in sites]
        model = {k: sum(w * u[k].astype(np.float64) for w, u in zip(weights, ups)) / weights.sum() for k in model}
        metrics = {"loss": float(np.dot(weights, [site_index(s) for s in sites]) / weights.sum())}
    return model, metrics
