"""ClientApp: ``secagg_mod`` (the node's identity and pinned roster come from its node config:
``fedcrypt-identity``, ``fedcrypt-roster``, ``fedcrypt-roster-digest``) over a ``train`` that
adds a fixed per-partition vector to the model and reports ``num-examples`` = 10 * (partition + 1).

``kill_point_mod`` stops one partition at one stage of round 1 (run config ``kill-partition``,
``kill-stage``): it writes ``kill-marker`` and waits, so that the test kills its SuperNode there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcrypt.integrations.flower import RECORD, secagg_mod


def update_of(partition: int, size: int) -> np.ndarray:
    """The vector partition ``partition`` adds to the model (public, deterministic, in [-1, 1])."""
    return np.random.default_rng([partition, 16]).uniform(-1.0, 1.0, size).astype(np.float32)


def weight_of(partition: int) -> int:
    """The FedAvg weight (num-examples) of a partition."""
    return 10 * (partition + 1)


def kill_point_mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Hold the victim at its kill stage (marker written, then sleep until the SuperNode is killed)."""
    cfg, partition = ctxt.run_config, int(ctxt.node_config["partition-id"])
    if RECORD in msg.content.keys() and partition == int(cfg.get("kill-partition", -1)):
        if msg.content[RECORD].get("stage") == cfg.get("kill-stage") and msg.metadata.group_id == "1":
            Path(str(cfg["kill-marker"])).write_text(str(os.getpid()), encoding="utf-8")
            time.sleep(600)
            raise RuntimeError("kill point: this node was meant to be killed here")
    return call_next(msg, ctxt)


app = ClientApp(mods=[kill_point_mod, secagg_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    model = msg.content["arrays"]["w"].numpy()
    update = (model + update_of(partition, model.size)).astype(np.float32)
    content = RecordDict({"arrays": ArrayRecord({"w": Array(update)}), "metrics": MetricRecord({"num-examples": weight_of(partition)})})
    return Message(content=content, reply_to=msg)
