"""The ServerApp: Flower's own FedAvg, with fedcrypt secure aggregation underneath.

The only fedcrypt line is ``SecAggGrid(grid, workflow)`` (or ``CkksGrid(grid, workflow)``
for CKKS): FedAvg runs unchanged and receives the survivors' weighted average instead of
individual updates.
"""

from __future__ import annotations

import json
import time

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedcrypt.integrations.flower import SecAggGrid, SecAggWorkflow
from fedcrypt.integrations.flower.ckks import CkksGrid, CkksWorkflow
from fedcrypt_flower_app.task import ckks_config, initial_arrays

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of FedAvg; write a JSON summary if asked."""
    cfg = context.run_config
    min_nodes = int(cfg["min-nodes"])
    timeout = float(cfg["stage-timeout"])
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )
    workflow = None
    if cfg["aggregation"] == "secagg":
        neighbours = int(cfg["secagg-neighbours"])
        workflow = SecAggWorkflow(
            threshold=float(cfg["secagg-threshold"]),
            neighbours=neighbours if neighbours > 0 else None,
            clip=float(cfg["secagg-clip"]),
            max_weight=float(cfg["secagg-max-weight"]),
            stage_timeout=timeout,
            dp_noise_multiplier=float(cfg["dp-noise-multiplier"]) or None,
            dp_clip=float(cfg["dp-clip"]),
        )
        grid = SecAggGrid(grid, workflow)
    elif cfg["aggregation"] == "ckks":
        workflow = CkksWorkflow(ckks_config(dict(cfg)), stage_timeout=timeout)
        grid = CkksGrid(grid, workflow)
    elif cfg["aggregation"] != "plain":
        raise ValueError(f"aggregation must be 'secagg', 'ckks' or 'plain', got {cfg['aggregation']!r}")
    started = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=initial_arrays(dict(cfg)),
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=timeout,
    )
    elapsed = time.perf_counter() - started
    if cfg["result-path"]:
        summary = {
            "aggregation": cfg["aggregation"],
            "seconds": elapsed,
            "arrays": {name: arr.numpy().tolist() for name, arr in result.arrays.items()},
            "train_metrics": {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
            "rounds": [report.to_dict() for report in workflow.reports] if workflow else [],
        }
        with open(str(cfg["result-path"]), "w", encoding="utf-8") as handle:
            json.dump(summary, handle)
