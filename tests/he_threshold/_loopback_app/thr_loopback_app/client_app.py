"""ClientApp: ``train`` moves ``w`` by 0.01 * (partition + 1) and reports ``num-examples`` =
10 * (partition + 1); a ``ThresholdMod`` with the run config's parameters encrypts it. ``drop_mod`` makes one partition fail
its partial decryption in one round (run config ``drop-partition``/``drop-round``)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcrypt.he.threshold import ThresholdParams
from fedcrypt.he.threshold.round import ThresholdConfig
from fedcrypt.integrations.flower.threshold import RECORD, ThresholdMod


def drop_mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Fail the DECRYPT stage of one partition in one round (a key holder that drops)."""
    if RECORD in msg.content.keys():
        record = msg.content[RECORD]
        if (
            record.get("stage") == "DECRYPT"
            and int(ctxt.node_config["partition-id"]) == int(ctxt.run_config["drop-partition"])
            and msg.metadata.group_id == str(ctxt.run_config["drop-round"])
        ):
            raise RuntimeError("dropout demo: this key holder leaves before its partial decryption")
    return call_next(msg, ctxt)


def threshold_mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """fedcrypt's mod with the config every node and the server share (run config ``threshold-params``, hex)."""
    params = ThresholdParams.from_bytes(bytes.fromhex(str(ctxt.run_config["threshold-params"])))
    return ThresholdMod(ThresholdConfig(params, max_weight=100.0))(msg, ctxt, call_next)


app = ClientApp(mods=[drop_mod, threshold_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    model = msg.content["arrays"]["w"].numpy()
    update = (model + 0.01 * (partition + 1)).astype(np.float32)
    metrics = MetricRecord({"num-examples": 10 * (partition + 1)})
    return Message(RecordDict({"arrays": ArrayRecord({"w": Array(update)}), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"num-examples": 1, "loss": float(np.abs(msg.content["arrays"]["w"].numpy()).sum())})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
