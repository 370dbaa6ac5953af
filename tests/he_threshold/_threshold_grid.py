"""An in-process Flower grid for the threshold-CKKS adapter (flwr 1.30 on CPython 3.10).

The real ClientApp, mods and protocol objects, with the network replaced by Flower's own
message serialisation (``message_to_proto``/``message_from_proto``), so byte fields, record
types and metadata cross the "wire" as in a deployment. One ``Context`` per node persists
between messages, as a SuperNode keeps it; the mod itself rebuilds its key holder from
``Context.state`` on every message, as a fresh process would. Faults (a node that stops
answering, a tampered reply) are injected per (node, message).
"""

from __future__ import annotations

import itertools
import uuid
from types import SimpleNamespace
from typing import Any, Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid

from fedcrypt.integrations.flower_threshold import RECORD, threshold_mod

RUN_ID = 4242

#: fault(node_id, request) -> None (deliver), "drop" (no reply), or a function reply -> reply
Fault = Callable[[int, Message], Any]


def wire(message: Message) -> Message:
    """One hop through Flower's protobuf encoding."""
    return message_from_proto(message_to_proto(message))


def stage_of(message: Message) -> str | None:
    """The threshold stage a request carries (None for other messages)."""
    if RECORD not in message.content.keys():
        return None
    return message.content[RECORD].get("stage")


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process (one Context per node)."""

    def __init__(self, client_app: Any, num_nodes: int, *, fault: Fault | None = None) -> None:
        self.client_app = client_app
        # large, unordered node ids like Flower's (64-bit)
        self.node_ids = [10_000_000_000 * (i + 1) + 7919 * ((i * 5) % num_nodes) for i in range(num_nodes)]
        self.contexts = {
            node: Context(RUN_ID, node, {"partition-id": i, "num-partitions": num_nodes}, RecordDict(), {})
            for i, node in enumerate(self.node_ids)
        }
        self.fault = fault
        self.errors: list[str] = []
        self._run = SimpleNamespace(run_id=RUN_ID)
        self._ids = itertools.count()

    # Grid API
    def set_run(self, run: Any) -> None:  # noqa: D102
        self._run = run

    @property
    def run(self) -> Any:  # noqa: D102
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> Message:  # noqa: D102
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        raise NotImplementedError("use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        raise NotImplementedError("use send_and_receive")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Deliver each message to its node's ClientApp; collect the replies that come back."""
        replies = []
        for request in messages:
            request.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            node = request.metadata.dst_node_id
            action = self.fault(node, request) if self.fault is not None else None
            if action == "drop":
                continue
            delivered = wire(request)
            try:
                reply = self.client_app(delivered, self.contexts[node])
            except Exception as exc:  # noqa: BLE001 - Flower turns ClientApp exceptions into error replies
                self.errors.append(f"{type(exc).__name__}: {exc}")
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=delivered)
            if callable(action):
                reply = action(reply)
            replies.append(wire(reply))
        return replies


def example_app() -> ClientApp:
    """A ClientApp with ``threshold_mod``: ``train`` moves ``w`` by 0.01 * (partition + 1),
    reports ``num-examples`` = 10 * (partition + 1) and a ``loss`` metric."""
    app = ClientApp(mods=[threshold_mod])

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
