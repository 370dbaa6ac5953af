"""The benchmark job of ``benchmarks.nvflare`` (its own module: FLARE ships the module of a job's
components to every site as ``custom/<module file>``, so it must not be called ``nvflare``): the
model, the sites' deterministic updates and plaintext FedAvg; the Collab objects of the plaintext
baseline; a server component that times FLARE's rounds. Every server and site process imports it
(numpy and FLARE only: the fedcrypt sites' first round does not pay for importing torch); the
model's size comes from ``FEDCRYPT_NVFLARE_BENCH_DIM``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_component import FLComponent
from nvflare.app_common.app_event_type import AppEventType
from nvflare.collab import collab

DIM_VARIABLE = "FEDCRYPT_NVFLARE_BENCH_DIM"
ROUNDS_FILE = "benchmark_rounds.json"


def dim() -> int:
    return int(os.environ.get(DIM_VARIABLE, "1000"))


def initial_model() -> dict[str, np.ndarray]:
    return {"w": np.zeros(dim(), np.float32)}


def site_index(site: str) -> int:
    return int(site.rsplit("-", 1)[1])


def weight_of(site: str) -> int:
    return 10 * site_index(site)


def update_of(site: str, round_id: int, model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The site's local update: the global model plus noise seeded by (site, round) (not secret)."""
    rng = np.random.default_rng([site_index(site), round_id])
    return {name: (value + rng.uniform(-1, 1, value.shape)).astype(np.float32) for name, value in model.items()}


def train(model: dict[str, np.ndarray], info: dict) -> tuple:
    """The fedcrypt site function (``"benchmarks.nvflare:train"``)."""
    return update_of(info["site"], info["round"], model), weight_of(info["site"])


def plaintext_fedavg(sites: list[str], rounds: int, size: int) -> np.ndarray:
    """FedAvg recomputed in float64, each round's updates from the float32 model the sites see."""
    model = np.zeros(size, np.float64)
    weights = np.array([weight_of(s) for s in sites], np.float64)
    for round_id in range(1, rounds + 1):
        updates = [update_of(s, round_id, {"w": model.astype(np.float32)})["w"].astype(np.float64) for s in sites]
        model = sum(w * u for w, u in zip(weights, updates)) / weights.sum()
    return model


class PlainServer:
    """Plaintext FedAvg as a Collab server object: the baseline on fedcrypt's transport."""

    def __init__(self, num_rounds: int = 1, timeout: float = 300.0) -> None:
        self.num_rounds, self.timeout = num_rounds, timeout

    @collab.main
    def run(self) -> None:
        model, times = initial_model(), []
        for round_id in range(1, self.num_rounds + 1):
            start = time.monotonic()
            results = collab.clients(timeout=self.timeout).benchmark_train(model=model, round_id=round_id)
            pairs = [reply for _, reply in (results.items() if isinstance(results, dict) else results)]
            weights = np.array([weight for _, weight in pairs], np.float64)
            total = sum(w * update["w"].astype(np.float64) for w, (update, _) in zip(weights, pairs))
            model = {"w": (total / weights.sum()).astype(np.float32)}
            times.append(time.monotonic() - start)
        run_dir = collab.workspace.get_run_dir(collab.fl_ctx.get_job_id())
        os.makedirs(run_dir, exist_ok=True)
        np.save(os.path.join(run_dir, "model.npy"), model["w"])
        with open(os.path.join(run_dir, ROUNDS_FILE), "w", encoding="utf-8") as out:
            json.dump(times, out)


class PlainClient:
    """The site of :class:`PlainServer`."""

    @collab.publish
    def benchmark_train(self, model: dict, round_id: int) -> tuple:
        return train(model, {"site": collab.site_name, "round": round_id})


class RoundTimer(FLComponent):
    """A server component timing FLARE's rounds into the run directory: ``ROUND_STARTED`` to
    ``AFTER_AGGREGATION`` (every result received and aggregated; both FLARE workflows fire them)."""

    def __init__(self) -> None:
        super().__init__()
        self._started, self._times = 0.0, []

    def handle_event(self, event_type: str, fl_ctx: Any) -> None:
        if event_type == AppEventType.ROUND_STARTED:
            self._started = time.monotonic()
        elif event_type == AppEventType.AFTER_AGGREGATION:
            self._times.append(time.monotonic() - self._started)
        elif event_type == EventType.END_RUN:
            run_dir = fl_ctx.get_engine().get_workspace().get_run_dir(fl_ctx.get_job_id())
            with open(os.path.join(run_dir, ROUNDS_FILE), "w", encoding="utf-8") as out:
                json.dump(self._times, out)
