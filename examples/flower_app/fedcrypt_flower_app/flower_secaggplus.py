"""The same app on Flower's own SecAgg+ (legacy API), for the overhead comparison only.

Flower's ``SecAggPlusWorkflow`` runs only under its legacy ``LegacyContext`` /
``DefaultWorkflow`` API with a ``client_fn`` ClientApp and ``secaggplus_mod``; it cannot
wrap an ``@app.train`` function. This module rebuilds the same model, local training and
weights on that API so ``benchmarks/flower.py`` can time both on one federation.
Components: ``fedcrypt_flower_app.flower_secaggplus:server_app`` and ``...:client_app``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from flwr.app import Context
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ndarrays_to_parameters
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from fedcrypt_flower_app.task import from_record, initial_arrays, local_update, num_examples


class _Client(NumPyClient):
    def __init__(self, context: Context, names: list[str]) -> None:
        self.context = context
        self.names = names

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        partition_id = int(self.context.node_config["partition-id"])
        arrays = dict(zip(self.names, parameters))
        updated = local_update(dict(self.context.run_config), arrays, partition_id, int(config["server-round"]))
        return [updated[name] for name in self.names], num_examples(partition_id), {}


def _names(run_config: dict[str, Any]) -> list[str]:
    return list(initial_arrays(run_config).keys())


def _client_fn(context: Context) -> Any:
    return _Client(context, _names(dict(context.run_config))).to_client()


client_app = ClientApp(client_fn=_client_fn, mods=[secaggplus_mod])

server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg with Flower's SecAgg+ fit workflow; writes the same JSON summary as server_app."""
    cfg = context.run_config
    min_nodes = int(cfg["min-nodes"])
    rounds = int(cfg["num-server-rounds"])
    initial = from_record(initial_arrays(dict(cfg)))
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=min_nodes,
        min_available_clients=min_nodes,
        initial_parameters=ndarrays_to_parameters(list(initial.values())),
        on_fit_config_fn=lambda server_round: {"server-round": server_round},
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=min_nodes,
            reconstruction_threshold=max(2, min_nodes // 2 + 1),
            max_weight=float(cfg["secagg-max-weight"]),
            clipping_range=float(cfg["secagg-clip"]),
            timeout=float(cfg["stage-timeout"]),
        )
    )
    started = time.perf_counter()
    workflow(grid, legacy)
    elapsed = time.perf_counter() - started
    if cfg["result-path"]:
        final = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
        summary = {
            "aggregation": "flower-secaggplus",
            "seconds": elapsed,
            "rounds": [],
            "arrays": {name: value.tolist() for name, value in zip(initial, final)},
        }
        with open(str(cfg["result-path"]), "w", encoding="utf-8") as handle:
            json.dump(summary, handle)
