"""The ClientApp: an ordinary ``@app.train`` function; fedcrypt's mods do the masking or encryption.

``app`` (the component in pyproject.toml) answers only fedcrypt rounds, SecAgg or CKKS,
whichever the server runs (``aggregation`` in the run config): a server that asks it for
a cleartext update gets an error. ``plain_app`` is the same training without the mods,
for the plaintext baseline of the benchmark.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcrypt.integrations.flower import RECORD, secagg_mod
from fedcrypt.integrations.flower.ckks import CKKS_RECORD, CkksMod
from fedcrypt_flower_app.task import ckks_config, from_record, local_loss, local_update, num_examples, to_record

_ckks_mods: dict[tuple, CkksMod] = {}


def _ckks_mod(context: Context) -> CkksMod:
    """fedcrypt's CKKS mod with the run's config (one per config, so it logs its mode once)."""
    keys = ("ckks-clip", "secagg-max-weight", "ckks-decryptors", "ckks-key-setup")
    settings = tuple(context.run_config[key] for key in keys)
    if settings not in _ckks_mods:
        _ckks_mods[settings] = CkksMod(ckks_config(dict(context.run_config)))
    return _ckks_mods[settings]


def dropout_demo_mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Fault injection to watch dropout tolerance (off unless ``drop-partition`` >= 0).

    The node whose ``partition-id`` equals the run config's ``drop-partition`` stops at the
    protocol stage ``drop-stage`` of round ``drop-round``: with ``drop-marker`` set it writes
    that file and waits to be killed (a real crash, done by whoever watches the file);
    otherwise it answers with an error reply (no exception, so no traceback in the log), which
    the server refuses with its reason, as it would a node whose ClientApp failed.
    """
    cfg = context.run_config
    record = next((name for name in (RECORD, CKKS_RECORD) if name in msg.content), None)
    if int(cfg.get("drop-partition", -1)) == int(context.node_config["partition-id"]) and record is not None:
        stage = msg.content[record].get("stage")
        if stage == cfg.get("drop-stage") and msg.metadata.group_id == str(cfg.get("drop-round", 1)):
            marker = str(cfg.get("drop-marker", ""))
            if marker:
                Path(marker).write_text(str(os.getpid()), encoding="utf-8")
                time.sleep(600)
            reason = f"dropout demo: partition {context.node_config['partition-id']} drops at {stage}"
            return Message(error=Error(code=0, reason=reason), reply_to=msg)
    return call_next(msg, context)


def fedcrypt_mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Route a message to fedcrypt's CKKS mod if it carries the CKKS record, else to the SecAgg mod.

    Either mod refuses a train message that carries neither record, so the app never
    sends a cleartext update.
    """
    if CKKS_RECORD in msg.content:
        return _ckks_mod(context)(msg, context, call_next)
    return secagg_mod(msg, context, call_next)


def train(msg: Message, context: Context) -> Message:
    """Train locally; reply with the new model, its weight (num-examples) and the loss of the
    model received (train-loss: FedAvg averages it securely with the weights, and Flower
    logs the average per round)."""
    partition_id = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"]["server-round"])
    arrays = from_record(msg.content["arrays"])
    loss = local_loss(dict(context.run_config), arrays, partition_id, server_round)
    updated = local_update(dict(context.run_config), arrays, partition_id, server_round)
    content = RecordDict(
        {
            "arrays": to_record({name: updated[name] for name in arrays}),
            "metrics": MetricRecord({"num-examples": num_examples(partition_id), "train-loss": loss}),
        }
    )
    return Message(content=content, reply_to=msg)


app = ClientApp(mods=[dropout_demo_mod, fedcrypt_mod])
app.train()(train)

plain_app = ClientApp()
plain_app.train()(train)
