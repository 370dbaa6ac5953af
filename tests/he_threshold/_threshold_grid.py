"""An in-process Flower grid for the threshold-CKKS adapter (flwr 1.30 on CPython 3.10).

The grid of ``tests/flower/_inprocess.py`` (shared with the SecAgg and CKKS tests): the
real ClientApp, mods and protocol objects, with the network replaced by Flower's own
message serialisation (``message_to_proto``/``message_from_proto``), so byte fields, record
types and metadata cross the "wire" as in a deployment. One ``Context`` per node persists
between messages, as a SuperNode keeps it; the mod itself rebuilds its key holder from
``Context.state`` on every message, as a fresh process would. Faults (a node that stops
answering, a tampered reply) are injected per (node, message).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcrypt.integrations.flower.threshold import RECORD, ThresholdMod, default_config
from flower._inprocess import RUN_ID, Fault, wire  # tests/flower, on the test path (tests/conftest.py's folder)
from flower._inprocess import InProcessGrid as _InProcessGrid
from flower._inprocess import PullGrid as _PullGrid

__all__ = ["RUN_ID", "Fault", "InProcessGrid", "PullGrid", "wire", "stage_of", "small_config", "example_app", "train_messages"]


def stage_of(message: Message) -> str | None:
    """The threshold stage a request carries (None for other messages)."""
    if RECORD not in message.content.keys():
        return None
    return message.content[RECORD].get("stage")


class InProcessGrid(_InProcessGrid):
    """``tests/flower``'s in-process grid with an empty run config (``errors`` lists the ClientApp exceptions)."""

    def __init__(self, client_app: Any, num_nodes: int, *, fault: Fault | None = None) -> None:
        super().__init__(client_app, num_nodes, {}, fault=fault)


class PullGrid(_PullGrid):
    """``tests/flower``'s push/pull grid with an empty run config."""

    def __init__(self, client_app: Any, num_nodes: int, *, fault: Fault | None = None) -> None:
        super().__init__(client_app, num_nodes, {}, fault=fault)


def small_config(recovery_threshold: int = 0, num_parties: int = 3) -> Any:
    """The tests' threshold config: a committee of ``num_parties``, clip 1, up to 8 uploads, M = 100
    (built once: OpenFHE's measured noise estimate differs between builds, and every node and
    the server must hold the same config)."""
    return _small_config(recovery_threshold, num_parties)  # one cache key however it is called


@functools.lru_cache(maxsize=None)
def _small_config(recovery_threshold: int, num_parties: int) -> Any:
    return default_config(num_parties, clip=1.0, capacity=8, max_weight=100.0, recovery_threshold=recovery_threshold)


def example_app(config: Any = None, **mod: Any) -> ClientApp:
    """A ClientApp with a ThresholdMod (``config`` default :func:`small_config`): ``train`` moves
    ``w`` by 0.01 * (partition + 1), reports ``num-examples`` = 10 * (partition + 1) and a ``loss`` metric."""
    app = ClientApp(mods=[ThresholdMod(config if config is not None else small_config(), **mod)])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        model = msg.content["arrays"]["w"].numpy()
        update = (model + 0.01 * (partition + 1)).astype(np.float32)
        metrics = MetricRecord({"num-examples": 10 * (partition + 1), "loss": 0.5 + partition})
        return Message(RecordDict({"arrays": ArrayRecord({"w": Array(update)}), "metrics": metrics}), reply_to=msg)

    return app


def train_messages(grid: InProcessGrid, model: np.ndarray, server_round: int, nodes: list[int] | None = None) -> list[Message]:
    """The strategy's train messages: the global model and the round config, one per node."""
    out = []
    for node in nodes if nodes is not None else grid.node_ids:
        content = RecordDict(
            {"arrays": ArrayRecord({"w": Array(model.astype(np.float32))}), "config": ConfigRecord({"server-round": server_round})}
        )
        out.append(Message(content, node, "train", group_id=str(server_round)))
    return out
