"""Client endpoints over a real Flower ``ClientApp`` running fedcrypt's ``secagg_mod`` (extra ``flower``).

:class:`FlowerClients` builds the messages :class:`~fedcrypt.integrations.flower.SecAggWorkflow`
would send (the setup fields at ``ADVERTISE_KEYS``, the strategy's train records at
``MASKED_INPUT``), passes each through Flower's protobuf serialisation, and calls the
ClientApp with one persistent ``Context`` per node, as a SuperNode does: the malicious
server and the dropout state machine of :mod:`fedcrypt.testing` then test the mod, its
record checks and its sealed state, not just the protocol objects.

Invariants: a ``FedcryptError`` raised in the ClientApp reaches the caller unchanged; a
Flower error reply (an app that caught the error itself) is raised as
:class:`~fedcrypt.errors.LocalProtocolError` naming the reason.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import numpy as np

from fedcrypt.errors import LocalProtocolError, MalformedMessageError
from fedcrypt.secagg import SecAggConfig, Stage, decode_message
from fedcrypt.secagg.setup import dump_config, round_binding, weight_bytes

from ._common import pack_nodes
from .secagg import RECORD, kept_stage, secagg_mod, train_digest

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict  # noqa: E402

__all__ = ["FlowerClients", "example_client_app", "example_train_content"]


def _wire(message: Message) -> Message:
    try:
        from flwr.common.serde import message_from_proto, message_to_proto
    except ImportError:  # pragma: no cover - older/newer Flower: skip the protobuf hop
        return message
    return message_from_proto(message_to_proto(message))


class FlowerClients:
    """The clients of one round as Flower ClientApp calls (see the module docstring).

    Args:
        client_app: a ``flwr.clientapp.ClientApp`` whose mods include ``secagg_mod``.
        config: the round's SecAgg parameters.
        train_content: ``client_id -> RecordDict`` of the strategy's train records sent at
            MASKED_INPUT (the setup's ``model`` field is their digest, as the workflow sends it).
        round_id, run_id: the server round and the Flower run id (bound into the round).
        node_ids: the nodes' ids, sorted ascending (default ``1000, 2000, ...``).
        max_weight: the workflow's ``max_weight``.
        run_config: the run config every node's Context carries.
        dp: the setup's distributed-DP settings bytes (``b""``: none).

    :attr:`associated_data` is client 0's round binding.
    """

    def __init__(
        self, client_app: Any, config: SecAggConfig, train_content: Callable[[int], RecordDict], *, round_id: int = 1,
        run_id: int = 4242, node_ids: list[int] | None = None, max_weight: float = 1000.0,
        run_config: dict[str, Any] | None = None, dp: bytes = b"",
    ) -> None:
        n = config.num_clients
        self.client_app, self.config, self.round_id, self.run_id, self.dp = client_app, config, round_id, run_id, bytes(dp)
        self.node_ids = sorted(node_ids) if node_ids is not None else [1000 * (i + 1) for i in range(n)]
        if len(self.node_ids) != n or len(set(self.node_ids)) != n:
            raise ValueError(f"node_ids must be {n} distinct ids")
        self.nodes_bytes = pack_nodes(self.node_ids)
        self.train_content = train_content
        self.max_weight = float(max_weight)
        self.associated_data = round_binding(run_id, round_id, self.nodes_bytes, self.dp, self._model(0), b"",
                                             weight_bytes(self.max_weight))
        self.inputs = None  # the app computes them when it trains
        self.contexts = {
            i: Context(run_id, node, {"partition-id": i, "num-partitions": n}, RecordDict(), dict(run_config or {}))
            for i, node in enumerate(self.node_ids)
        }

    def __repr__(self) -> str:
        return f"FlowerClients(n={self.config.num_clients}, round={self.round_id}, run={self.run_id})"

    def _call(self, client_id: int, fields: dict[str, Any], extra: RecordDict | None = None) -> bytes:
        content = RecordDict({RECORD: ConfigRecord(fields)})
        for name, value in extra.items() if extra is not None else ():
            content[name] = value
        metadata = Metadata(
            run_id=self.run_id, message_id=uuid.uuid4().hex, src_node_id=0, dst_node_id=self.node_ids[client_id],
            reply_to_message_id="", group_id=str(self.round_id), created_at=time.time(), ttl=3600.0, message_type="train",
        )
        reply = _wire(self.client_app(_wire(Message(content=content, metadata=metadata)), self.contexts[client_id]))
        if reply.has_error():
            raise LocalProtocolError(f"the ClientApp replied with an error: {reply.error.reason}", party=client_id)
        payload = reply.content[RECORD]["payload"]
        if not isinstance(payload, bytes):
            raise MalformedMessageError("the ClientApp's reply has no payload bytes", party=client_id)
        return payload

    def _model(self, client_id: int) -> bytes:
        return train_digest(self.train_content(client_id))

    def advertise(self, client_id: int) -> bytes:
        """Send the setup message (config, node list, client id, round, max weight)."""
        return self._call(client_id, {
            "stage": Stage.ADVERTISE_KEYS.name, "payload": b"", "config": dump_config(self.config), "nodes": self.nodes_bytes,
            "client-id": client_id, "round": self.round_id, "max-weight": self.max_weight, "dp": self.dp,
            "model": self._model(client_id), "members": b"",
        })

    def deliver(self, client_id: int, request: bytes) -> bytes:
        """Send one protocol request (with the train records at the masked-input stage)."""
        try:
            stage = decode_message(request).STAGE
        except MalformedMessageError:  # let the mod see undecodable bytes too, labelled with the client's stage
            stage = kept_stage(self.contexts[client_id]) or Stage.ADVERTISE_KEYS
        extra = self.train_content(client_id) if stage is Stage.MASKED_INPUT else None
        return self._call(client_id, {"stage": stage.name, "payload": bytes(request)}, extra)


def example_client_app() -> Any:
    """A minimal ClientApp with ``secagg_mod`` whose ``train`` moves a model ``w`` by 0.01 * (partition + 1)
    (for trying :class:`FlowerClients` and the attacks without an app of your own)."""
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[secagg_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        model = msg.content["arrays"]["w"].numpy()
        update = (model + 0.01 * (int(context.node_config["partition-id"]) + 1)).astype(np.float32)
        content = RecordDict({"arrays": ArrayRecord({"w": Array(update)}), "metrics": MetricRecord({"num-examples": 10})})
        return Message(content=content, reply_to=msg)

    return app


def example_train_content(value: float = 0.0, size: int = 16, server_round: int = 1) -> Callable[[int], RecordDict]:
    """``client_id -> RecordDict`` with a global model ``w`` (all ``value``) and the round config."""

    def content(client_id: int) -> RecordDict:  # noqa: ARG001 - the same model for every client
        arrays = ArrayRecord({"w": Array(np.full(size, value, dtype=np.float32))})
        return RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})})

    return content
