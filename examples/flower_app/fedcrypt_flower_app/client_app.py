"""The ClientApp: an ordinary ``@app.train`` function; fedcrypt's mod does the masking."""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcrypt_flower_app.task import from_record, local_update, num_examples, to_record

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally and reply with the new model and its weight (num-examples)."""
    partition_id = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"]["server-round"])
    arrays = from_record(msg.content["arrays"])
    updated = local_update(dict(context.run_config), arrays, partition_id, server_round)
    content = RecordDict(
        {
            "arrays": to_record({name: updated[name] for name in arrays}),
            "metrics": MetricRecord({"num-examples": num_examples(partition_id)}),
        }
    )
    return Message(content=content, reply_to=msg)
