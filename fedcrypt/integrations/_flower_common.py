"""What the three Flower adapters share (private): round bookkeeping, one stage's exchange, the app's train call.

:mod:`fedcrypt.integrations.flower` (SecAgg), :mod:`~fedcrypt.integrations.flower_he`
(single-key CKKS) and :mod:`~fedcrypt.integrations.flower_threshold` (threshold CKKS) each
keep their own wire format, stages and protocol decisions; this module holds only the
plumbing that is the same in all of them. It imports neither TenSEAL nor OpenFHE, so every
adapter (and its missing-extra error) imports as before.

Invariants:

* a round's id is the strategy's ``server-round`` when it sends one, else a per-workflow
  counter; every round gets a report appended before anything can fail;
* in :meth:`StagedWorkflow.exchange` a reply is used only if it answers a request of this
  stage (a late or duplicate reply is ignored), carries exactly the stage's record and
  fields, and names the stage it answers; anything else is refused (recorded in the report,
  logged without secrets) and the node counts as dropped at that stage;
* a round that hits :class:`Abort` or :class:`~fedcrypt.errors.RoundAbortedError` returns
  no reply and its report says why, as ``"ErrorType: why"``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import struct
import time
from typing import Any, Callable, Iterable

from fedcrypt._optional import require
from fedcrypt.errors import (
    FedcryptError,
    LocalProtocolError,
    MalformedMessageError,
    RecordMismatchError,
    RoundAbortedError,
    UnexpectedMessageError,
)

require("flwr", "flower")

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402 - after the extra check
from flwr.serverapp import Grid  # noqa: E402

TRAIN = "train"

#: What a strategy's train function reply splits into (see :func:`~fedcrypt.integrations.flower.split_train_reply`).
TrainReply = tuple[str, str, dict[str, Any], Any, Any]


# ============================================================================ wire helpers
def pack_list(items: list[bytes]) -> bytes:
    """``>I``-length-prefixed items, concatenated."""
    return b"".join(struct.pack(">I", len(item)) + item for item in items)


def unpack_list(data: bytes, count: int, where: str, *, limit: int | None = None) -> list[bytes]:
    """The ``count`` items of :func:`pack_list`'s output; ``limit`` (if set) bounds ``count``.

    Raises:
        MalformedMessageError: truncated, trailing bytes, or ``count`` outside ``[0, limit]``.
    """
    if limit is not None and not 0 <= count <= limit:
        raise MalformedMessageError(f"{where}: a list of {count} items")
    items, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise MalformedMessageError(f"{where}: truncated list")
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + size > len(data):
            raise MalformedMessageError(f"{where}: truncated list item")
        items.append(data[pos : pos + size])
        pos += size
    if pos != len(data):
        raise MalformedMessageError(f"{where}: {len(data) - pos} trailing bytes in a list of {count}")
    return items


def int_field(record: ConfigRecord, name: str, where: str) -> int:
    """A non-negative integer field of a record, or :class:`MalformedMessageError`."""
    value = record[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedMessageError(f"{where}: field {name!r} must be a non-negative integer")
    return value


def max_weight_field(record: ConfigRecord, where: str, **context: Any) -> float:
    """The request's ``max-weight`` (a positive finite float), or :class:`MalformedMessageError`.

    ``context``: ``party``, ``stage``... carried by the error.
    """
    max_weight = record["max-weight"]
    if not isinstance(max_weight, float) or not (math.isfinite(max_weight) and max_weight > 0):
        raise MalformedMessageError(f"{where}: max-weight must be a positive float", **context)
    return max_weight


# ============================================================================ node side
def staged_request(
    msg: "Message",
    record_name: str,
    stages: Any,
    *,
    party: int,
    allow_plaintext: bool,
    sends: str,
    where: str,
) -> tuple[ConfigRecord, Any] | None:
    """The fedcrypt record of a train message and the stage it names; ``None``: pass it to the app.

    Args:
        msg: a ``train`` message from the server.
        record_name: the adapter's record.
        stages: the adapter's stage Enum.
        party: this node (carried by the errors).
        allow_plaintext: a message without the record goes to the app (else it is refused).
        sends: what this node uploads, for the refusal ("this client only sends masked updates").
        where: who sent what, for the messages ("server message to node 7").

    Raises:
        RecordMismatchError: no fedcrypt record (and no ``allow_plaintext``), or not a ConfigRecord.
        MalformedMessageError: the record names no known stage.
    """
    if record_name not in msg.content.keys():
        if allow_plaintext:
            return None
        raise RecordMismatchError(
            f"train message without the {record_name!r} record: {sends}", missing=(record_name,), party=party
        )
    record = msg.content[record_name]
    if not isinstance(record, ConfigRecord):
        raise RecordMismatchError(
            f"{where}: record {record_name!r} is a {type(record).__name__}, expected a ConfigRecord", party=party
        )
    stage_name = record.get("stage")
    if not isinstance(stage_name, str) or stage_name not in stages.__members__:
        raise MalformedMessageError(f"{where}: unknown stage {stage_name!r}", party=party)
    return record, stages[stage_name]


def run_app_train(
    msg: "Message",
    ctxt: "Context",
    call_next: Callable[["Message", "Context"], "Message"],
    record_name: str,
    *,
    party: int | str | None,
    round_id: int | None,
    stage: object,
    error_round: bool = True,
) -> TrainReply:
    """Run the app's own train function on the strategy's records (all but ``record_name``); split its reply.

    Returns:
        What :func:`~fedcrypt.integrations.flower.split_train_reply` returns.

    Raises:
        LocalProtocolError: the app's reply is an error (with ``round_id`` unless ``error_round`` is False).
        RecordMismatchError: the reply is not one ArrayRecord and one MetricRecord.
    """
    from .flower import split_train_reply  # flower.py imports this module

    train_msg = Message(
        content=RecordDict({name: msg.content[name] for name in msg.content.keys() if name != record_name}),
        metadata=msg.metadata,
    )
    reply = call_next(train_msg, ctxt)
    if reply.has_error():
        raise LocalProtocolError(
            f"the app's train function failed: {reply.error.reason}",
            party=party, round=round_id if error_round else None, stage=stage,
        )
    return split_train_reply(reply.content, party=party, round_id=round_id, stage=stage)


class StagedMod:
    """The request handling of a ClientApp mod whose stages are one ConfigRecord each (the CKKS ones).

    :meth:`__call__` passes non-train messages (and, with ``allow_plaintext``, train
    messages without the record) to the app, checks the request's records and fields
    against the wire format, and answers with the stage's handler. A subclass sets
    ``RECORD``, ``STAGES`` (its stage Enum), ``REQUEST_FIELDS`` (stage -> fields),
    ``SENDS`` (what it uploads, for the refusal), ``TRAIN_STAGE`` (the stage that carries
    the strategy's train records besides the record) and ``HANDLERS`` (stage -> method
    name; a handler takes ``(msg, ctxt, record, round_id, payload, call_next)`` and returns
    the reply's fields but ``stage``).
    """

    RECORD: str
    STAGES: Any
    REQUEST_FIELDS: dict[Any, frozenset[str]]
    SENDS: str
    TRAIN_STAGE: Any
    HANDLERS: dict[Any, str]
    allow_plaintext: bool

    def _node(self, msg: "Message", ctxt: "Context") -> int:
        """This node's id (for errors): the message's destination."""
        return msg.metadata.dst_node_id

    def _check_train_records(self, msg: "Message", node: int, stage: Any, where: str) -> None:
        """At ``TRAIN_STAGE``: refuse a request without the strategy's train records."""
        if not [name for name in msg.content.keys() if name != self.RECORD]:
            raise RecordMismatchError(
                f"{where}: the encrypt stage carries no train records", missing=("<train records>",), party=node, stage=stage
            )

    def __call__(self, msg: "Message", ctxt: "Context", call_next: Callable[["Message", "Context"], "Message"]) -> "Message":
        """Answer one stage of the protocol, or pass a non-train message to the app."""
        from .flower import bytes_field, check_fields, check_records  # flower.py imports this module

        if msg.metadata.message_type.split(".")[0] != TRAIN:
            return call_next(msg, ctxt)
        node = self._node(msg, ctxt)
        where = f"server message to node {node}"
        request = staged_request(
            msg, self.RECORD, self.STAGES, party=node, allow_plaintext=self.allow_plaintext, sends=self.SENDS, where=where
        )
        if request is None:
            return call_next(msg, ctxt)
        record, stage = request
        if stage is self.TRAIN_STAGE:
            self._check_train_records(msg, node, stage, where)
        else:
            check_records(msg.content, [self.RECORD], party=node, stage=stage, where=where)
        check_fields(record, self.REQUEST_FIELDS[stage], party=node, stage=stage, where=where, record_name=self.RECORD)
        round_id = int_field(record, "round", where)
        payload = bytes_field(record, "payload", where)
        fields = getattr(self, self.HANDLERS[stage])(msg, ctxt, record, round_id, payload, call_next)
        fields["stage"] = stage.name
        return Message(content=RecordDict({self.RECORD: ConfigRecord(fields)}), reply_to=msg)


# ============================================================================ server side
class Abort(Exception):
    """Internal: end the round with this typed error in the report."""

    def __init__(self, error: FedcryptError) -> None:
        super().__init__(str(error))
        self.error = error


class ReportDict:
    """Mixin of the round-report dataclasses: :meth:`to_dict`, field by field."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (dict keys as strings, lists and dicts copied)."""
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if isinstance(value, dict):
                value = {str(k): v for k, v in value.items()}
            elif isinstance(value, list):
                value = list(value)
            out[item.name] = value
        return out


def distinct_nodes(train_messages: list["Message"]) -> tuple[list[int], dict[int, "Message"]]:
    """The train messages' nodes, ascending, and the message of each.

    Raises:
        ValueError: two messages go to the same node.
    """
    nodes = [m.metadata.dst_node_id for m in train_messages]
    if len(set(nodes)) != len(nodes):
        raise ValueError("train messages must go to distinct nodes")
    return sorted(nodes), {m.metadata.dst_node_id: m for m in train_messages}


class RoundWorkflow:
    """Round bookkeeping of every fedcrypt Flower workflow: round ids, reports, timeouts.

    A subclass sets ``stage_timeout``, ``train_timeout``, ``reports`` and
    ``_round_counter = 0`` in its ``__init__``.
    """

    stage_timeout: float
    train_timeout: float | None
    reports: list[Any]
    _round_counter: int

    def _round_id(self, train_messages: list["Message"]) -> int:
        self._round_counter += 1
        for message in train_messages:
            for record in message.content.config_records.values():
                value = record.get("server-round")
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    return value
        return self._round_counter

    def _train_timeout(self, timeout: float | None) -> float:
        """Never wait forever: the train timeout, else the strategy's, else the stage timeout."""
        train_timeout = self.train_timeout if self.train_timeout is not None else timeout
        return self.stage_timeout if train_timeout is None else train_timeout

    def _open_round(self, train_messages: list["Message"], nodes: list[int], report_type: Callable[..., Any]) -> tuple[int, Any]:
        """The round id and its (appended) report."""
        round_id = self._round_id(train_messages)
        report = report_type(round=round_id, nodes=list(nodes))
        self.reports.append(report)
        return round_id, report


class StagedWorkflow(RoundWorkflow):
    """A workflow whose stages are requests in one ConfigRecord, answered by the nodes (the CKKS ones).

    A subclass sets the class attributes ``RECORD`` (the record's name), ``REPLY_FIELDS``
    (stage -> the reply's fields), ``REPORT`` (its round-report dataclass), ``LABEL``
    (``"ckks"``...: log lines) and ``LOG`` (its module's logger), and implements
    :meth:`_round`.
    """

    REPORT: Callable[..., Any]
    RECORD: str
    REPLY_FIELDS: dict[Any, frozenset[str]]
    LABEL: str
    LOG: logging.Logger

    min_clients: int

    def aggregate(self, grid: "Grid", train_messages: list["Message"], timeout: float | None = None) -> list["Message"]:
        """Run one round of this workflow's protocol for the strategy's train messages.

        Args:
            grid: the ServerApp's grid.
            train_messages: the strategy's ``train`` messages, one per sampled node.
            timeout: the strategy's timeout (used at the encrypt stage unless ``train_timeout`` is set).

        Returns:
            ``[reply]`` with the weighted average and total weight, or ``[]`` when the round
            failed (see :attr:`reports`).

        Raises:
            ValueError: the messages are not one train message per distinct node.
        """
        nodes, by_node = distinct_nodes(train_messages)
        round_id, report = self._open_round(train_messages, nodes, self.REPORT)
        train_timeout = self._train_timeout(timeout)
        try:
            if len(nodes) < self.min_clients:
                raise Abort(RoundAbortedError(f"{len(nodes)} nodes sampled, fewer than min_clients={self.min_clients}"))
            reply = self._round(grid, nodes, by_node, round_id, report, train_timeout)
        except Abort as exc:
            report.aborted = f"{type(exc.error).__name__}: {exc.error}"
        except RoundAbortedError as exc:
            report.aborted = f"{type(exc).__name__}: {exc}"
        if report.aborted is not None:
            self.LOG.warning("fedcrypt %s round %s failed: %s", self.LABEL, round_id, report.aborted)
            return []
        return [reply]

    def _round(
        self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: Any, train_timeout: float
    ) -> "Message":
        """The stages of one round (at least ``min_clients`` nodes); raises :class:`Abort` to end it with no reply."""
        raise NotImplementedError

    def _replies(self, grid: "Grid", messages: list["Message"], timeout: float) -> Iterable["Message"]:
        """The replies to ``messages`` (default: ``grid.send_and_receive``)."""
        return list(grid.send_and_receive(messages, timeout=timeout)) if messages else []

    def _exchange(
        self,
        grid: "Grid",
        stage: Any,
        requests: dict[int, dict[str, Any]],
        round_id: int,
        report: Any,
        timeout: float,
        extra: dict[int, "RecordDict"] | None = None,
        accept: Callable[[int, ConfigRecord], Any] | None = None,
    ) -> dict[int, Any]:
        """Send one stage's requests; return the well-formed replies by node (others are recorded).

        Each reply is checked as it arrives; ``accept(node, record)`` (if given) then
        processes it, and what it returns is kept instead of the record (so an upload can
        be folded into a sum and dropped). A :class:`FedcryptError` from ``accept``
        refuses the reply.
        """
        from .flower import bytes_field, check_fields, check_records  # flower.py imports this module

        started = time.perf_counter()
        messages = []
        for node, fields in requests.items():
            content = RecordDict({self.RECORD: ConfigRecord({**fields, "stage": stage.name, "round": round_id})})
            report.bytes_down += len(fields["payload"])
            if extra is not None:
                for name in extra[node].keys():
                    content[name] = extra[node][name]
            messages.append(Message(content, node, TRAIN, group_id=str(round_id)))
        received: dict[int, Any] = {}
        replies = self._replies(grid, messages, timeout)
        del messages
        for reply in replies:
            node = reply.metadata.src_node_id
            if node not in requests or node in received:
                continue  # a late reply to another round's message, or a duplicate: never ours to use
            where = f"reply from node {node}"
            try:
                if reply.has_error():
                    raise LocalProtocolError(f"{where} is an error: {reply.error.reason}", party=node, stage=stage)
                check_records(reply.content, [self.RECORD], party=node, round_id=round_id, stage=stage, where=where)
                record = reply.content[self.RECORD]
                check_fields(
                    record, self.REPLY_FIELDS[stage], party=node, round_id=round_id, stage=stage, where=where,
                    record_name=self.RECORD,
                )
                if record["stage"] != stage.name:
                    raise UnexpectedMessageError(f"{where} is for stage {record['stage']!r}", party=node, stage=stage)
                report.bytes_up += len(bytes_field(record, "payload", where))
                received[node] = accept(node, record) if accept is not None else record
            except FedcryptError as exc:
                self._refuse(report, node, stage, exc)
            except Exception as exc:  # noqa: BLE001 - one peer's bytes must never end the run
                # every decoder raises only FedcryptError on bad bytes (fuzzed); should a parser
                # still fail untyped, the node is dropped like any other bad reply
                refused = MalformedMessageError(f"{where}: unparseable ({type(exc).__name__})", party=node, stage=stage)
                self._refuse(report, node, stage, refused)
        for node in requests:
            if node not in received and node not in report.dropped:
                report.dropped[node] = stage.name
        report.stage_seconds[stage.name] = report.stage_seconds.get(stage.name, 0.0) + time.perf_counter() - started
        return received

    def _refuse(self, report: Any, node: int, stage: Any, exc: FedcryptError) -> None:
        report.refused[node] = f"{type(exc).__name__}: {exc}"
        report.dropped.setdefault(node, stage.name)
        self.LOG.warning("fedcrypt %s: node %s refused at %s: %s", self.LABEL, node, stage.name, exc)
