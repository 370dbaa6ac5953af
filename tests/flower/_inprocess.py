"""An in-process Flower grid: ClientApps called directly, every message through Flower's protobuf.

Like h11's ConnectionPair: the real ClientApp, mods and protocol objects, with the network
replaced by Flower's own message serialisation (``message_to_proto``/``message_from_proto``),
so byte fields, record types and metadata cross the "wire" as they do in a deployment.
Faults (a node that stops answering, a tampered reply) are injected per (node, message).
The threshold-CKKS tests (flwr 1.30 on CPython 3.10) build their grid on this one.
"""

from __future__ import annotations

import itertools
import uuid
from types import SimpleNamespace
from typing import Any, Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid

try:  # flwr 1.42; the threshold tests' flwr 1.30 (CPython 3.10) has no task identity and needs none
    from flwr.supercore.task_identity import TaskIdentity
except ImportError:  # pragma: no cover - flwr < 1.42
    TaskIdentity = None

RUN_ID = 4242
SERVER_NODE = 0

#: fault(node_id, request) -> None (deliver), "drop" (no reply), or a function reply -> reply
Fault = Callable[[int, Message], Any]


def wire(message: Message) -> Message:
    """One hop through Flower's protobuf encoding."""
    return message_from_proto(message_to_proto(message))


_wire = wire


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process (one Context per node)."""

    def __init__(
        self,
        client_app: Any,
        num_nodes: int,
        run_config: dict[str, Any],
        *,
        fault: Fault | None = None,
        tamper: Callable[[int, Message], Message] | None = None,
        first_node_id: int = 10_000_000_000,
    ) -> None:
        if TaskIdentity is not None:
            TaskIdentity.run_id = RUN_ID
            TaskIdentity.node_id = SERVER_NODE
            TaskIdentity.task_id = 1
        self.client_app = client_app
        # large, unordered node ids like Flower's (64-bit)
        self.node_ids = [first_node_id * (i + 1) + 7919 * ((i * 5) % num_nodes) for i in range(num_nodes)]
        self.contexts = {
            node: Context(
                RUN_ID,
                node,
                {"partition-id": i, "num-partitions": num_nodes},
                RecordDict(),
                dict(run_config),
            )
            for i, node in enumerate(self.node_ids)
        }
        self.fault = fault
        self.tamper = tamper
        self.calls = 0
        self.errors: list[str] = []  # the ClientApp exceptions, as "Type: message"
        self._ids = itertools.count()
        self._run = SimpleNamespace(run_id=RUN_ID)

    def partition_of(self, node: int) -> int:
        """The partition id of a node."""
        return self.node_ids.index(node)

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
            delivered = _wire(request)
            if self.tamper is not None:  # a malicious server changes what one node receives
                delivered = _wire(self.tamper(node, delivered))
            self.calls += 1
            try:
                reply = self.client_app(delivered, self.contexts[node])
            except Exception as exc:  # noqa: BLE001 - Flower turns ClientApp exceptions into error replies
                self.errors.append(f"{type(exc).__name__}: {exc}")
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=delivered)
            if callable(action):
                reply = action(reply)
            replies.append(_wire(reply))
        return replies


class PullGrid(InProcessGrid):
    """Push/pull like a deployment's grid: replies wait at the "SuperLink" and come back one per
    pull; ``send_and_receive`` of train messages fails (a workflow must stream its replies)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: dict[str, Message] = {}
        self.pulled: list[Message] = []
        self.pulls = 0

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        ids = []
        for message in messages:
            replies = InProcessGrid.send_and_receive(self, [message], timeout=0)
            ids.append(message.metadata.message_id)
            for reply in replies:
                self.inbox[message.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        self.pulls += 1
        for message_id in message_ids:
            if message_id in self.inbox:
                reply = self.inbox.pop(message_id)
                self.pulled.append(reply)
                return [reply]
        return []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:  # noqa: D102
        if list(messages):  # the strategy's empty evaluate round is fine
            raise AssertionError("the workflow streams replies with push/pull")
        return []
