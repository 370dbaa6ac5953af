"""ServerApp: Flower's FedAvg on a ``ThresholdGrid``; writes the final model and the round
reports to the run config's ``result-path`` (JSON)."""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedcrypt.he.threshold import ThresholdParams
from fedcrypt.he.threshold.round import ThresholdConfig
from fedcrypt.integrations.flower.threshold import ThresholdGrid, ThresholdWorkflow

SIZE = 16
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    nodes = int(config["min-nodes"])
    params = ThresholdParams.from_bytes(bytes.fromhex(str(config["threshold-params"])))  # the nodes' too
    workflow = ThresholdWorkflow(ThresholdConfig(params, max_weight=100.0), stage_timeout=float(config["stage-timeout"]))
    strategy = FedAvg(min_train_nodes=nodes, min_available_nodes=nodes, min_evaluate_nodes=nodes)
    result = strategy.start(
        grid=ThresholdGrid(grid, workflow),
        initial_arrays=ArrayRecord({"w": Array(np.zeros(SIZE, dtype=np.float32))}),
        num_rounds=int(config["num-server-rounds"]),
    )
    summary = {
        "arrays": {name: array.numpy().tolist() for name, array in result.arrays.items()},
        "rounds": [report.to_dict() for report in workflow.reports],
        "flooding": bool(workflow.params.flooding) if workflow.params is not None else None,
    }
    with open(str(config["result-path"]), "w", encoding="utf-8") as handle:
        json.dump(summary, handle)
