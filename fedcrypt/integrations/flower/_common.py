"""What the Flower adapters share: record checks, the update's layout, the mods' request
handling, rounds whose replies are pulled and folded as they arrive, and the transport over
a sans-IO round core (:class:`CoreMod`, :class:`CoreWorkflow`). No TenSEAL, no OpenFHE.

Invariants: a round's id is the strategy's ``server-round`` (else a counter) and its report
is appended before anything can fail; :meth:`RoundWorkflow._exchange` makes each request as
it is pushed and hands each reply to the protocol as it is pulled (one of each in memory) and
uses it only if it answers a request of this stage, once, with exactly the stage's record
and fields; anything else (a Flower error reply, an untyped parser failure) is refused,
reported and logged without secrets, and the node counts as dropped: nothing a node sends
ends the run; a round that cannot finish returns no reply and its report says why
(``"ErrorType: why"``); without a roster a mod logs once that it runs honest-but-curious,
and with one it never hands a plaintext train message to the app."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import struct
import time
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, ClassVar, Generic, Iterable, Iterator

import numpy as np

from fedcrypt._optional import require
from fedcrypt._wire import Reader
from fedcrypt.errors import EncodingError, FedcryptError, HonestButCuriousWarning, LocalProtocolError, MalformedMessageError
from fedcrypt.errors import ProtocolViolationError, RecordMismatchError, RoundAbortedError, SpecMismatchError
from fedcrypt.errors import UnexpectedMessageError
from fedcrypt.identity import NodeIdentity, Roster, load_credentials
from fedcrypt.vectors import TensorSpec

require("flwr", "flower")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

from .._config import ConfigT  # noqa: E402
from .._report import RoundReport, check_number  # noqa: E402
from ._state import NODE_IDENTITY, keep, kept, node_state_key, setting  # noqa: E402

log = logging.getLogger("fedcrypt.integrations.flower")


class _FlowerConsole(logging.Handler):
    """Hands fedcrypt's records to the handlers of Flower's logger (``flwr``: its console, which
    ``flwr run`` streams) and not to its parents (the record still propagates from fedcrypt's logger)."""

    def emit(self, record: logging.LogRecord) -> None:
        for handler in logging.getLogger("flwr").handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


log.addHandler(_FlowerConsole())  # once: a module runs once per process
log.setLevel(log.level or logging.INFO)  # the round lines are INFO, Flower's console's level (a level set before stays)

TRAIN = "train"
#: The fields of most requests and replies: the stage's name and the protocol message's bytes.
PAYLOAD_FIELDS = frozenset({"stage", "payload"})
#: Node-config keys of the malicious-server mode: the roster file and its SHA-256 (hex), which
#: pins it (with ``fedcrypt-identity``, the node's identity key file).
NODE_ROSTER, NODE_ROSTER_DIGEST = "fedcrypt-roster", "fedcrypt-roster-digest"
_LAYOUT_MAGIC = b"FCFL\x02"
_Next = Callable[["Message", "Context"], "Message"]


# ============================================================================ records
def _check_names(present: Iterable[str], expected: Iterable[str], text: str, **where: Any) -> None:
    want, have = set(expected), set(present)
    missing, extra = tuple(sorted(want - have)), tuple(sorted(have - want))
    if missing or extra:
        raise RecordMismatchError(f"{text} (missing {list(missing)}, extra {list(extra)})", missing=missing, extra=extra, **where)


def check_records(
    content: "RecordDict", expected: Iterable[str], *, party: int | str | None = None, round_id: int | None = None,
    stage: object | None = None, where: str = "message",
) -> None:
    """Raise :class:`RecordMismatchError` unless ``content`` holds exactly the ``expected`` records."""
    _check_names(content.keys(), expected, f"{where}: records differ from the fedcrypt wire format", party=party,
                 round=round_id, stage=stage)


def check_fields(
    record: Any, expected: Iterable[str], *, party: int | str | None = None, round_id: int | None = None,
    stage: object | None = None, where: str = "message", record_name: str = "fedcrypt.secagg",
) -> None:
    """Raise :class:`RecordMismatchError` unless ``record`` is a ConfigRecord with exactly ``expected`` fields."""
    if not isinstance(record, ConfigRecord):
        raise RecordMismatchError(f"{where}: record {record_name!r} is a {type(record).__name__}, expected a ConfigRecord",
                                  party=party, round=round_id, stage=stage)
    _check_names(record.keys(), expected, f"{where}: fields of record {record_name!r} differ", party=party, round=round_id,
                 stage=stage)


def bytes_field(record: ConfigRecord, name: str, where: str) -> bytes:
    """A bytes field of a record, or :class:`MalformedMessageError`."""
    value = record[name]
    if not isinstance(value, bytes):
        raise MalformedMessageError(f"{where}: field {name!r} must be bytes, got {type(value).__name__}")
    return value


def pack_nodes(nodes: list[int]) -> bytes:
    """Node ids as big-endian u64s."""
    return struct.pack(f">{len(nodes)}Q", *nodes)


def unpack_nodes(data: bytes) -> list[int]:
    """Strict inverse of :func:`pack_nodes`: non-empty, increasing, no repeats."""
    if not isinstance(data, bytes) or len(data) % 8 or not data:
        raise MalformedMessageError("node list must be a non-empty multiple of 8 bytes")
    nodes = list(struct.unpack(f">{len(data) // 8}Q", data))
    if nodes != sorted(set(nodes)):
        raise MalformedMessageError("node list must be sorted and without repeats")
    return nodes


# ============================================================================ the update
@dataclass(frozen=True)
class Layout:
    """What an uploaded vector holds (public): record names, tensor spec, metric names.

    ``ring_length == 0``: ``[x, metrics, 1]`` (weighted); ``ring_length > 0``: a
    distributed-DP ring vector of that length (no metrics, no weight).
    """

    arrays_record: str
    metrics_record: str
    spec: TensorSpec
    metric_names: tuple[str, ...]
    weight_key: str
    ring_length: int = 0

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        encoded = [p.encode("utf-8") for p in (self.arrays_record, self.metrics_record, self.weight_key, *self.metric_names)]
        spec = self.spec.to_bytes()
        head = _LAYOUT_MAGIC + struct.pack(">III", len(encoded), len(spec), self.ring_length) + spec
        return head + b"".join(struct.pack(">H", len(e)) + e for e in encoded)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Layout":
        """Strict decoder of :meth:`to_bytes` (:class:`MalformedMessageError`)."""
        reader = Reader(data, "layout")
        if reader.take(len(_LAYOUT_MAGIC), "the magic") != _LAYOUT_MAGIC:
            raise reader.error("bad magic")
        count, spec_len, ring_length = reader.unpack(">III")
        if not 3 <= count <= 1 << 16:
            raise reader.error(f"{count} names")
        spec = TensorSpec.from_bytes(reader.take(spec_len, "the spec"))
        try:
            parts = [reader.sized(1 << 16, "a name", width=2, allow_empty=True).decode("utf-8") for _ in range(count)]
        except UnicodeDecodeError:
            raise reader.error("a name is not UTF-8") from None
        reader.expect_end()
        layout = cls(parts[0], parts[1], spec, tuple(parts[3:]), parts[2], ring_length)
        if ring_length and (layout.metric_names or ring_length < spec.size):
            raise reader.error("a distributed-DP layout carries no metrics and covers the model")
        return layout

    @property
    def dimension(self) -> int:
        """Length of the uploaded vector (the weight slot included)."""
        return self.ring_length or self.spec.size + len(self.metric_names) + 1

    def digest(self) -> bytes:
        """SHA-256 of the layout, bound into a CKKS upload."""
        return hashlib.sha256(b"fedcrypt/flower-ckks-layout/v1" + self.to_bytes()).digest()


#: An app's train reply, split: arrays record name, metrics record name, tensors, MetricRecord, TensorSpec.
TrainReply = tuple[str, str, dict[str, np.ndarray], "MetricRecord", TensorSpec]


def split_train_reply(
    content: "RecordDict", *, party: int | str | None = None, round_id: int | None = None, stage: object | None = None
) -> TrainReply:
    """Split an app's train reply into its one ArrayRecord and one MetricRecord (else :class:`RecordMismatchError`)."""
    arrays = [(name, rec) for name, rec in content.items() if isinstance(rec, ArrayRecord)]
    metrics = [(name, rec) for name, rec in content.items() if isinstance(rec, MetricRecord)]
    others = [name for name, rec in content.items() if not isinstance(rec, (ArrayRecord, MetricRecord))]
    if len(arrays) != 1 or len(metrics) != 1 or others:
        raise RecordMismatchError(
            "the app's train reply must hold exactly one ArrayRecord and one MetricRecord "
            f"(got arrays {[n for n, _ in arrays]}, metrics {[n for n, _ in metrics]}, other {others})",
            extra=tuple(others), party=party, round=round_id, stage=stage,
        )
    (arrays_name, array_record), (metrics_name, metric_record) = arrays[0], metrics[0]
    tensors = {name: array.numpy() for name, array in array_record.items()}
    return arrays_name, metrics_name, tensors, metric_record, TensorSpec.from_tensors(tensors)


def flat_update(reply: TrainReply, *, weight_key: str, max_weight: float, **where: Any) -> tuple[Layout, np.ndarray, float]:
    """A train reply as its :class:`Layout`, the float64 vector ``[x, metrics]`` (other metrics
    in name order) and its weight ``w`` (metric ``weight_key``, in ``(0, max_weight]``).

    Raises:
        RecordMismatchError: the metrics lack ``weight_key``.
        EncodingError: a list metric, or a weight outside ``(0, max_weight]``.
    """
    arrays_name, metrics_name, tensors, metric_record, spec = reply
    if weight_key not in metric_record:
        raise RecordMismatchError(f"the app's train metrics lack the weight {weight_key!r}", missing=(weight_key,),
                                  party=where.get("party"), round=where.get("round_id"), stage=where.get("stage"))
    names = tuple(sorted(k for k in metric_record.keys() if k != weight_key))
    if not all(isinstance(metric_record[name], (int, float)) for name in names):
        raise EncodingError("a metric is a list: only scalar metrics can be aggregated securely")
    weight = float(metric_record[weight_key])
    if not 0 < weight <= max_weight:
        raise EncodingError(f"weight {weight_key}={weight} outside (0, max_weight={max_weight}]")
    values = np.concatenate([spec.flatten(tensors).astype(np.float64), [float(metric_record[n]) for n in names]])
    return Layout(arrays_name, metrics_name, spec, names, weight_key), values, weight


def average_reply(layout: Layout, total: np.ndarray, *, max_weight: float, run_id: int, group: str, stage: object = None) -> "Message":
    """The strategy's reply from the decoded ``sum_u w_u/M * [x_u, metrics_u, 1]``: the weighted
    average of tensors and metrics, and ``M * sum(w/M)`` as the total weight.

    Raises:
        RoundAbortedError: the total weight is not positive.
    """
    weight_sum = float(total[-1])
    if not weight_sum > 0:
        raise RoundAbortedError("the survivors' total weight decoded to zero", party="server", stage=stage)
    average = total[:-1] / weight_sum
    tensors = layout.spec.unflatten(average[: layout.spec.size].astype(np.float32))
    arrays = ArrayRecord({name: Array(np.asarray(value)) for name, value in tensors.items()})
    metrics = {name: float(v) for name, v in zip(layout.metric_names, average[layout.spec.size :])}
    metrics[layout.weight_key] = weight_sum * max_weight
    return strategy_reply(RecordDict({layout.arrays_record: arrays, layout.metrics_record: MetricRecord(metrics)}), run_id, group)


def strategy_reply(content: "RecordDict", run_id: int, group: str) -> "Message":
    """A reply-shaped message for the strategy (it does not come from one node)."""
    metadata = Metadata(run_id=run_id, message_id="", src_node_id=0, dst_node_id=0, reply_to_message_id="", group_id=group,
                        created_at=time.time(), ttl=3600.0, message_type=TRAIN)
    return Message(content=content, metadata=metadata)


# ============================================================================ node side
def run_app_train(msg: "Message", ctxt: "Context", call_next: _Next, record_name: str, **where: Any) -> TrainReply:
    """Run the app's own train function on the strategy's records (all but ``record_name``); split its reply.

    ``where``: ``party``, ``round_id``, ``stage`` for the errors.

    Raises:
        LocalProtocolError: the app's reply is an error.
        RecordMismatchError: the reply is not one ArrayRecord and one MetricRecord.
    """
    names = [name for name in msg.content.keys() if name != record_name]
    reply = call_next(Message(content=RecordDict({name: msg.content[name] for name in names}), metadata=msg.metadata), ctxt)
    if reply.has_error():
        raise LocalProtocolError(f"the app's train function failed: {reply.error.reason}", party=where.get("party"),
                                 round=where.get("round_id"), stage=where.get("stage"))
    return split_train_reply(reply.content, **where)


class StagedMod:
    """The request handling of a fedcrypt ClientApp mod: one ConfigRecord per stage.

    :meth:`__call__` passes non-train messages to the app, refuses a train message without
    the record (unless ``allow_plaintext``, and never with a roster), checks records and
    fields against the wire format and calls :meth:`_handle`, whose fields (but ``stage``)
    make the reply. A subclass sets ``RECORD``, ``STAGES`` (its stage Enum), ``SENDS`` (what
    it uploads, for the refusal), ``TRAIN_STAGE`` (the stage that also carries the
    strategy's train records), ``LABEL`` and, where they differ from :data:`PAYLOAD_FIELDS`,
    ``REQUEST_FIELDS`` (stage name -> fields).
    """

    RECORD: str
    STAGES: Any
    SENDS: str
    TRAIN_STAGE: Any
    LABEL: str
    REQUEST_FIELDS: dict[str, frozenset[str]] = {}
    allow_plaintext, _warned = False, False
    identity_path = roster_path = roster_digest = state_key_path = None  # str | None, each set by _settings

    def __call__(self, msg: "Message", ctxt: "Context", call_next: _Next) -> "Message":
        """Answer one stage of the protocol, or pass a non-train message to the app."""
        if msg.metadata.message_type.split(".")[0] != TRAIN:
            return call_next(msg, ctxt)
        node, where = ctxt.node_id, f"server message to node {ctxt.node_id}"
        if self.RECORD not in msg.content.keys():
            if not self.allow_plaintext:
                raise RecordMismatchError(f"train message without the {self.RECORD!r} record: {self.SENDS}",
                                          missing=(self.RECORD,), party=node)
            if self._credentials(ctxt)[0] is not None:
                raise ProtocolViolationError("a node with a roster never trains in plaintext (allow_plaintext is ignored)", party=node)
            return call_next(msg, ctxt)
        record = msg.content[self.RECORD]
        if not isinstance(record, ConfigRecord):
            raise RecordMismatchError(f"{where}: record {self.RECORD!r} is a {type(record).__name__}, expected a ConfigRecord", party=node)
        name = record.get("stage")
        if not isinstance(name, str) or name not in self.STAGES.__members__:
            raise MalformedMessageError(f"{where}: unknown stage {name!r}", party=node)
        stage = self.STAGES[name]
        if stage is not self.TRAIN_STAGE:
            check_records(msg.content, [self.RECORD], party=node, stage=stage, where=where)
        elif not [other for other in msg.content.keys() if other != self.RECORD]:
            raise RecordMismatchError(f"{where}: the {name} stage carries no train records", missing=("<train records>",),
                                      party=node, stage=stage)
        check_fields(record, self.REQUEST_FIELDS.get(name, PAYLOAD_FIELDS), party=node, stage=stage, where=where,
                     record_name=self.RECORD)
        reply = self._handle(msg, ctxt, record, stage, call_next)
        return Message(content=RecordDict({self.RECORD: ConfigRecord({**reply, "stage": name})}), reply_to=msg)

    def _settings(self, *, allow_plaintext: bool, weight_key: str, roster_digest: str | None, paths: dict[str, Any]) -> None:
        """Check and keep the mod's common arguments (``paths``: name -> a path or None)."""
        if not isinstance(allow_plaintext, bool):
            raise TypeError(f"allow_plaintext must be a bool, got {type(allow_plaintext).__name__}")
        for name, path in paths.items():
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path or None, got {type(path).__name__}")
            setattr(self, name, None if path is None else os.fspath(path))
        self.allow_plaintext, self.weight_key, self.roster_digest = allow_plaintext, weight_key, roster_digest

    def _handle(self, msg: "Message", ctxt: "Context", record: ConfigRecord, stage: Any, call_next: _Next) -> dict[str, Any]:
        raise NotImplementedError

    def _credentials(self, ctxt: "Context") -> tuple[Roster | None, NodeIdentity | None]:
        """The node's pinned roster and identity (node config first, then the mod's arguments;
        :func:`~fedcrypt.identity.load_credentials`); without them, say once that it runs honest-but-curious."""
        pair = load_credentials(setting(ctxt, NODE_IDENTITY) or self.identity_path, setting(ctxt, NODE_ROSTER) or self.roster_path,
                                setting(ctxt, NODE_ROSTER_DIGEST) or self.roster_digest)
        if pair[0] is None and not self._warned:
            self._warned = True
            log.warning("fedcrypt %s: no roster on this node: it runs honest-but-curious, secure only against a server "
                        "that follows the protocol (set %s, %s and %s for the malicious-server mode)",
                        self.LABEL, NODE_IDENTITY, NODE_ROSTER, NODE_ROSTER_DIGEST)
        return pair


# ============================================================================ server side
class Abort(Exception):
    """Internal: end the round with this typed error in the report."""

    def __init__(self, error: FedcryptError) -> None:
        super().__init__(str(error))
        self.error = error


def distinct_nodes(train_messages: list["Message"]) -> tuple[list[int], dict[int, "Message"]]:
    """The train messages' nodes, ascending, and the message of each (ValueError: a node twice)."""
    nodes = [m.metadata.dst_node_id for m in train_messages]
    if len(set(nodes)) != len(nodes):
        raise ValueError("train messages must go to distinct nodes")
    return sorted(nodes), {m.metadata.dst_node_id: m for m in train_messages}


class RoundWorkflow:
    """One protection's rounds over a Flower ``Grid``: round ids, reports, timeouts, the exchange.

    A subclass sets ``RECORD``, ``REPORT`` (its :class:`RoundReport`), ``LABEL`` (log lines),
    ``REPLY_FIELDS`` (stage name -> fields, where they differ from :data:`PAYLOAD_FIELDS`)
    and ``min_clients``, and implements :meth:`_round`.
    """

    RECORD: str
    REPORT: Callable[..., Any]
    LABEL: str
    REPLY_FIELDS: dict[str, frozenset[str]] = {}
    min_clients: int

    def __init__(self, stage_timeout: float, train_timeout: float | None, poll_interval: float) -> None:
        for name, value in (("stage_timeout", stage_timeout), ("train_timeout", train_timeout), ("poll_interval", poll_interval)):
            check_number(name, value, optional=True)
        self.stage_timeout, self.poll_interval = float(stage_timeout), float(poll_interval)
        self.train_timeout = None if train_timeout is None else float(train_timeout)
        self.reports: list[Any] = []
        self._round_counter = 0

    def aggregate(self, grid: "Grid", train_messages: list["Message"], timeout: float | None = None) -> list["Message"]:
        """Run one round for the strategy's train messages.

        Args:
            grid: the ServerApp's grid.
            train_messages: the strategy's ``train`` messages, one per sampled node.
            timeout: the strategy's timeout (the train stage's wait unless ``train_timeout`` is set).

        Returns:
            ``[reply]`` with the weighted average and total weight, or ``[]`` when the round
            failed (see :attr:`reports`).

        Raises:
            ValueError: the messages are not one train message per distinct node.
        """
        nodes, by_node = distinct_nodes(train_messages)
        self._check_train(train_messages)
        self._round_counter += 1
        rounds = [r.get("server-round") for m in train_messages for r in m.content.config_records.values()]
        round_id = next((v for v in rounds if isinstance(v, int) and not isinstance(v, bool) and v >= 0), self._round_counter)
        report = self.REPORT(round=round_id, nodes=list(nodes))
        self.reports.append(report)
        train_timeout = next(t for t in (self.train_timeout, timeout, self.stage_timeout) if t is not None)
        try:
            if len(nodes) < self.min_clients:
                raise Abort(RoundAbortedError(f"{len(nodes)} nodes sampled, fewer than min_clients={self.min_clients}"))
            reply = self._round(grid, nodes, by_node, round_id, report, train_timeout)
        except Abort as exc:
            report.aborted = f"{type(exc.error).__name__}: {exc.error}"
        except RoundAbortedError as exc:
            report.aborted = f"{type(exc).__name__}: {exc}"
        self._log_round(report)
        return [] if report.aborted is not None else [reply]

    def _protection(self, report: Any) -> str:
        """The protection's name in the round's log line."""
        return self.LABEL

    def _log_round(self, report: Any) -> None:
        """One line per round (INFO; WARNING if it failed), public facts only: protection, round,
        survivors, dropped nodes with their stage, refused count, protocol bytes each way."""
        dropped = ", ".join(f"{node}@{stage}" for node, stage in report.dropped.items())
        line = (f"fedcrypt {self._protection(report)} round {report.round}: {len(report.survivors)}/{len(report.nodes)} "
                f"survivors, dropped [{dropped}], {len(report.refused)} refused, bytes up {report.bytes_up} down {report.bytes_down}")
        if report.aborted is None:
            log.info("%s", line)
        else:
            log.warning("%s; failed: %s", line, report.aborted)

    def _check_train(self, train_messages: list["Message"]) -> None:
        """Refuse train messages the protection cannot run (ValueError); default: any are fine."""

    def _round(
        self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: Any, train_timeout: float
    ) -> "Message":
        """The stages of one round (at least ``min_clients`` nodes); raise :class:`Abort` to end it with no reply."""
        raise NotImplementedError

    def _replies(self, grid: "Grid", messages: Iterable["Message"], timeout: float) -> Iterator["Message"]:
        """The replies to ``messages``, each as soon as it is pulled, for at most ``timeout`` seconds
        (pulls every ``poll_interval``; a grid without push/pull: ``send_and_receive``). Messages
        are pushed one at a time, each as ``messages`` makes it: one request's bytes at a time."""
        messages, pending = iter(messages), set()
        message = next(messages, None)
        try:
            while message is not None:
                pending.update(grid.push_messages([message]))
                message = next(messages, None)
        except NotImplementedError:
            yield from grid.send_and_receive([message, *messages], timeout=timeout)
            return
        deadline = time.monotonic() + timeout
        while pending:
            for message_id in list(pending):  # a SuperLink returns every reply in: one id per pull
                for reply in grid.pull_messages([message_id]):
                    pending.discard(reply.metadata.reply_to_message_id)
                    yield reply
            if not pending or time.monotonic() >= deadline:
                return
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def _exchange(
        self, grid: "Grid", stage: Any, requests: dict[int, dict[str, Any]], report: Any, *, round_id: int,
        timeout: float | None = None, extra: dict[int, "Message"] | None = None,
        accept: Callable[[int, ConfigRecord], Any] | None = None, record: str | None = None, fields: frozenset[str] | None = None,
    ) -> dict[int, Any]:
        """Send one stage's requests (complete field dicts, by node; a field may be a function that
        makes it, called as its message is pushed); the well-formed replies by node.

        ``extra``: the strategy's train messages, whose records go with each request.
        ``accept(node, fields)``, if given, takes each reply as it arrives and what it returns
        is kept instead (so an upload is folded and dropped); any exception it raises refuses
        the reply. ``record`` / ``fields``: another record and its reply fields.
        """
        name, label = record or self.RECORD, getattr(stage, "name", str(stage))
        expected, started = fields or self.REPLY_FIELDS.get(label, PAYLOAD_FIELDS), time.perf_counter()

        def messages() -> Iterator["Message"]:
            for node, request in requests.items():
                request = {key: value() if callable(value) else value for key, value in request.items()}
                content = RecordDict({name: ConfigRecord(request)})
                report.bytes_down += len(request.get("payload", b""))
                for key, value in extra[node].content.items() if extra is not None else ():
                    content[key] = value
                yield Message(content, node, TRAIN, group_id=str(round_id))

        received: dict[int, Any] = {}
        for reply in self._replies(grid, messages(), self.stage_timeout if timeout is None else timeout):
            node, where = reply.metadata.src_node_id, f"reply from node {reply.metadata.src_node_id}"
            if node not in requests or node in received:
                continue  # a late reply to another round's message, or a duplicate: never ours to use
            try:
                if reply.has_error():
                    raise LocalProtocolError(f"{where} is an error: {reply.error.reason}", party=node, stage=stage)
                check_records(reply.content, [name], party=node, round_id=round_id, stage=stage, where=where)
                answer = reply.content[name]
                check_fields(answer, expected, party=node, round_id=round_id, stage=stage, where=where, record_name=name)
                if "stage" in expected and answer["stage"] != label:
                    raise UnexpectedMessageError(f"{where} is for stage {answer['stage']!r}", party=node, stage=stage)
                report.bytes_up += len(bytes_field(answer, "payload", where)) if "payload" in expected else 0
                received[node] = accept(node, answer) if accept is not None else answer
                if accept is not None and "payload" in expected:
                    answer["payload"] = b""  # handed to the protocol: the reply need not hold it
            except FedcryptError as exc:
                self._refuse(report, node, label, exc)
            except Exception as exc:  # noqa: BLE001 - one node's bytes never end the run
                # decoders raise only FedcryptError on bad bytes (fuzzed); should a parser still fail
                # untyped, only this node is refused, without the original text (it may quote bytes)
                self._refuse(report, node, label, MalformedMessageError(f"{where}: unparseable ({type(exc).__name__})", party=node))
        for node in requests:
            if node not in received:
                report.dropped.setdefault(node, label)
        report.stage_seconds[label] = report.stage_seconds.get(label, 0.0) + time.perf_counter() - started
        return received

    def _refuse(self, report: Any, node: int, stage: str, exc: FedcryptError) -> None:
        report.refused[node] = f"{type(exc).__name__}: {exc}"
        report.dropped.setdefault(node, stage)
        log.warning("fedcrypt %s: node %s refused at %s: %s", self.LABEL, node, stage, exc)


class WorkflowGrid(Grid):
    """A ``Grid`` that turns a strategy's train rounds into rounds of ``workflow``; every other
    call (evaluate and query messages, node lists, push/pull) goes to ``grid`` unchanged.
    A subclass names its workflow class in ``WORKFLOW``.

    Args:
        grid: the ServerApp's grid.
        workflow: the protection's settings; default ``WORKFLOW()``.
    """

    WORKFLOW: type

    def __init__(self, grid: "Grid", workflow: RoundWorkflow | None = None) -> None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a flwr Grid, got {type(grid).__name__}")
        if workflow is not None and not isinstance(workflow, self.WORKFLOW):
            raise TypeError(f"workflow must be a {self.WORKFLOW.__name__}, got {type(workflow).__name__}")
        self.grid, self.workflow = grid, workflow if workflow is not None else self.WORKFLOW()

    def set_run(self, run: Any) -> None:  # noqa: D102 - Grid API
        self.grid.set_run(run)

    @property
    def run(self) -> Any:  # noqa: D102 - Grid API
        return self.grid.run

    def create_message(self, content: "RecordDict", message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> "Message":  # noqa: D102
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102 - Grid API
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable["Message"]) -> Iterable[str]:  # noqa: D102 - Grid API
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable["Message"]:  # noqa: D102 - Grid API
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable["Message"], *, timeout: float | None = None) -> Iterable["Message"]:
        """Train messages go through the workflow's round; all others straight through."""
        messages = list(messages)
        if messages and all(m.metadata.message_type.split(".")[0] == TRAIN for m in messages):
            return self.workflow.aggregate(self.grid, messages, timeout)
        return self.grid.send_and_receive(messages, timeout=timeout)


# ============================================================================ transport over a round core
class CoreMod(StagedMod, Generic[ConfigT]):
    """A mod over a sans-IO round core's node (``CLIENT``: the CKKS or the threshold round's
    client). Each request is decoded with ``DECODE``; the node's client is opened from its
    sealed record ``STATE`` (or made from the node's config, with its roster and identity),
    given the app's update ``[x, metrics]`` and weight at ``TRAIN_STAGE``, and answers; it is
    sealed back (its last state spent: :func:`~._state.keep`) only after it handled the message.
    Every protocol decision is the client's; the transport only keeps its state linear.

    A subclass's arguments: ``config`` (the round's config on this node; its roster comes
    from the credentials); ``allow_plaintext`` (pass a train message without the record to
    the app, never with a roster); ``weight_key`` (the FedAvg weight's metric);
    ``state_key_path`` (the key file that seals the client; node config
    ``fedcrypt-state-key`` first); ``identity_path``, ``roster_path``, ``roster_digest``
    (node config ``fedcrypt-identity``, ``fedcrypt-roster``, ``fedcrypt-roster-digest`` first).
    """

    CLIENT: Any
    CONFIG: type[ConfigT]
    DECODE: ClassVar[Callable[[bytes], Any]]  # a function, read off the class (never bound)
    STATE: str

    def __init__(
        self, config: ConfigT, *, allow_plaintext: bool = False, weight_key: str = "num-examples",
        state_key_path: str | os.PathLike[str] | None = None, identity_path: str | None = None, roster_path: str | None = None,
        roster_digest: str | None = None,
    ) -> None:
        if not isinstance(config, self.CONFIG):
            raise TypeError(f"config must be a {self.CONFIG.__name__}, got {type(config).__name__}")
        if config.roster is not None:
            raise ValueError("a node's roster comes from its credentials (fedcrypt-roster, pinned by digest), not its config")
        self.config, paths = config, {"state_key_path": state_key_path, "identity_path": identity_path, "roster_path": roster_path}
        self._settings(allow_plaintext=allow_plaintext, weight_key=weight_key, roster_digest=roster_digest, paths=paths)

    def _handle(self, msg: "Message", ctxt: "Context", record: ConfigRecord, stage: Any, call_next: _Next) -> dict[str, Any]:
        node, where = ctxt.node_id, f"server message to node {ctxt.node_id}"
        request = type(self).DECODE(bytes_field(record, "payload", where))
        if request.STAGE is not stage:
            raise UnexpectedMessageError(f"{where}: a {type(request).__name__} in a {stage.name} message", party=node, stage=stage)
        roster, identity = self._credentials(ctxt)
        config = self.config if roster is None else dataclasses.replace(self.config, roster=roster)
        key = node_state_key(ctxt, key_path=self.state_key_path, identity_path=self.identity_path)
        state = kept(ctxt, key, self.STATE)
        if state is not None:
            client = self.CLIENT.from_state_bytes(state, config=config, identity=identity)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once by _credentials
                client = self._new_client(ctxt, config, identity)
        fields: dict[str, Any] = {}
        if stage is self.TRAIN_STAGE:
            where_ = {"party": node, "round_id": request.round_id, "stage": stage}
            reply = run_app_train(msg, ctxt, call_next, self.RECORD, **where_)
            layout, values, weight = flat_update(reply, weight_key=self.weight_key, max_weight=config.max_weight, **where_)
            client.set_input(values, weight, layout=layout.digest())
            fields["layout"] = layout.to_bytes()
        fields["payload"] = client.handle(request).to_bytes()
        keep(ctxt, key, self.STATE, client.to_state_bytes())
        return fields

    def _new_client(self, ctxt: "Context", config: Any, identity: NodeIdentity | None) -> Any:
        return self.CLIENT(config, ctxt.node_id, identity=identity)


_BASE_REPORT = {f.name for f in dataclasses.fields(RoundReport)}


class CoreWorkflow(RoundWorkflow, Generic[ConfigT]):
    """The server side over a sans-IO round core (``SERVER``): one server per round with the
    strategy's round id and what the last round left (``CARRY``: the pinned public context,
    or the session record), each reply fed to it as it arrives, ``end_stage`` once a stage's
    replies are in or its timeout passed; the strategy gets one reply with the weighted
    average and the total weight. Every protocol decision is the server object's.
    """

    SERVER: Any
    DECODE: ClassVar[Callable[[bytes], Any]]  # a function, read off the class (never bound)
    CARRY: str
    CONFIG: type[ConfigT]
    DEFAULT: Callable[[], Any] | None = None  # makes the config when none is given (None: one is required)
    REPLY_FIELDS = {"ENCRYPT": frozenset({"stage", "payload", "layout"})}

    def __init__(self, config: ConfigT | None = None, *, stage_timeout: float = 60.0, train_timeout: float | None = None,
                 poll_interval: float = 3.0) -> None:
        config = self.DEFAULT() if config is None and self.DEFAULT is not None else config
        if not isinstance(config, self.CONFIG):
            raise TypeError(f"config must be a {self.CONFIG.__name__}, got {type(config).__name__}")
        super().__init__(stage_timeout, train_timeout, poll_interval)
        self.config, self._carried = config, None
        self.min_clients, self.max_weight = config.min_contributions, config.max_weight  # a round's fewest uploads; M
        if config.roster is None:
            log.warning("fedcrypt %s: no roster: the workflow runs honest-but-curious (nodes trust the server to relay "
                        "keys and aggregates honestly); a config with a roster runs the malicious-server mode", self.LABEL)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threat_model={self.config.threat_model!r}, stage_timeout={self.stage_timeout})"

    def _round(self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: Any,
               train_timeout: float) -> "Message":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once at start-up
            try:
                server = self.SERVER(self.config, nodes, round_id=round_id, **{self.CARRY: self._carried})
            except ValueError as exc:  # e.g. a new session's first round needs exactly the committee's size
                raise Abort(RoundAbortedError(str(exc))) from None
        layouts: dict[bytes, Layout] = {}  # by digest: the core takes the most common one (no first-come layout)
        outgoing = server.begin()
        try:
            while server.stage.name not in ("DONE", "ABORTED"):
                stage = server.stage
                encrypt = stage.name == "ENCRYPT"
                requests = {node: {"stage": stage.name, "payload": m.to_bytes} for node, m in outgoing.items()}  # made as pushed
                self._exchange(grid, stage, requests, report, round_id=round_id, timeout=train_timeout if encrypt else None,
                               extra=by_node if encrypt else None, accept=partial(self._receive, server, layouts))
                outgoing = server.end_stage()
        except FedcryptError as exc:  # the round cannot finish (end_stage says why)
            raise Abort(exc) from None
        finally:
            self._carried = getattr(server, self.CARRY) or self._carried
            core = server.report
            report.survivors = list(core.contributors)
            for item in dataclasses.fields(report):
                if item.name not in _BASE_REPORT and hasattr(core, item.name):
                    value = getattr(core, item.name)
                    setattr(report, item.name, type(value)(value) if isinstance(value, (list, dict)) else value)
            for name in ("refused", "dropped"):
                for node, why in getattr(core, name).items():
                    getattr(report, name).setdefault(node, why)
        total, layout = server.result.weighted_sum, layouts.get(getattr(server.result, "layout", b"")) or next(iter(layouts.values()))
        if total.shape[0] != layout.dimension:
            raise Abort(SpecMismatchError(f"the sum has {total.shape[0]} values, its layout {layout.dimension}"))
        return average_reply(layout, total, max_weight=self.max_weight, run_id=grid.run.run_id, group=str(round_id))

    def _receive(self, server: Any, layouts: dict[bytes, Layout], node: int, record: ConfigRecord) -> None:
        """Feed one reply to the round; an upload must be bound to the layout it came with."""
        where = f"reply from node {node}"
        message = type(self).DECODE(bytes_field(record, "payload", where))
        upload = server.stage.name == "ENCRYPT" and message.STAGE.name == "ENCRYPT"
        if upload:
            layout = Layout.from_bytes(bytes_field(record, "layout", where))
            digest, length = self._upload_layout(message)
            if digest != layout.digest() or length not in (None, layout.dimension):
                raise SpecMismatchError(f"{where}: the upload is not bound to its layout")
        server.receive(message, sender=node)
        if upload:
            layouts.setdefault(layout.digest(), layout)

    def _upload_layout(self, upload: Any) -> tuple[bytes | None, int | None]:
        """The layout digest an upload is bound to, and its length if the transport can read it."""
        raise NotImplementedError
