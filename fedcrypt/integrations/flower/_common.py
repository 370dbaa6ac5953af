"""What the Flower adapters share: record checks, the update's layout, the mods' request
handling, and rounds whose replies are pulled and folded as they arrive (no TenSEAL, no OpenFHE).

Invariants:

* a round's id is the strategy's ``server-round`` when it sends one, else a per-workflow
  counter; every round gets a report appended before anything can fail;
* :meth:`RoundWorkflow._exchange` pushes a stage's requests and hands each reply to the
  protocol as soon as it is pulled (one reply in memory at a time, not one per node); a
  reply is used only if it answers a request of this stage, once, with exactly the stage's
  record and fields; anything else (a Flower error reply and an untyped parser failure
  included) is refused, reported and logged without secrets, and the node counts as
  dropped: nothing a node sends ends the run;
* a round that hits :class:`Abort` or :class:`~fedcrypt.errors.RoundAbortedError` returns
  no reply and its report says why, as ``"ErrorType: why"``;
* without a roster a mod logs once that it runs honest-but-curious; with one, it never
  hands a plaintext train message to the app.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from fedcrypt._optional import require
from fedcrypt.errors import EncodingError, FedcryptError, IdentityError, LocalProtocolError, MalformedMessageError
from fedcrypt.errors import ProtocolViolationError, RecordMismatchError, RoundAbortedError, UnexpectedMessageError
from fedcrypt.identity import NodeIdentity, Roster
from fedcrypt.vectors import TensorSpec

require("flwr", "flower")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

from ._state import NODE_IDENTITY, setting  # noqa: E402

log = logging.getLogger("fedcrypt.integrations.flower")

TRAIN = "train"
#: The fields of most requests and replies: the stage's name and the protocol message's bytes.
PAYLOAD_FIELDS = frozenset({"stage", "payload"})
#: Node-config keys of the malicious-server mode: the roster file and its SHA-256 (hex), which
#: pins it (with ``fedcrypt-identity``, the node's identity key file).
NODE_ROSTER, NODE_ROSTER_DIGEST = "fedcrypt-roster", "fedcrypt-roster-digest"
_LAYOUT_MAGIC = b"FCFL\x02"
_Next = Callable[["Message", "Context"], "Message"]


# ============================================================================ records
def _mismatch(expected: Iterable[str], present: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    want, have = set(expected), set(present)
    return tuple(sorted(want - have)), tuple(sorted(have - want))


def check_records(
    content: "RecordDict", expected: Iterable[str], *, party: int | str | None = None, round_id: int | None = None,
    stage: object | None = None, where: str = "message",
) -> None:
    """Raise :class:`RecordMismatchError` unless ``content`` holds exactly the ``expected`` records."""
    missing, extra = _mismatch(expected, content.keys())
    if missing or extra:
        raise RecordMismatchError(
            f"{where}: records differ from the fedcrypt wire format (missing {list(missing)}, extra {list(extra)})",
            missing=missing, extra=extra, party=party, round=round_id, stage=stage,
        )


def check_fields(
    record: Any, expected: Iterable[str], *, party: int | str | None = None, round_id: int | None = None,
    stage: object | None = None, where: str = "message", record_name: str = "fedcrypt.secagg",
) -> None:
    """Raise :class:`RecordMismatchError` unless ``record`` is a ConfigRecord with exactly ``expected`` fields."""
    if not isinstance(record, ConfigRecord):
        raise RecordMismatchError(
            f"{where}: record {record_name!r} is a {type(record).__name__}, expected a ConfigRecord",
            party=party, round=round_id, stage=stage,
        )
    missing, extra = _mismatch(expected, record.keys())
    if missing or extra:
        raise RecordMismatchError(
            f"{where}: fields of record {record_name!r} differ (missing {list(missing)}, extra {list(extra)})",
            missing=missing, extra=extra, party=party, round=round_id, stage=stage,
        )


def bytes_field(record: ConfigRecord, name: str, where: str) -> bytes:
    """A bytes field of a record, or :class:`MalformedMessageError`."""
    value = record[name]
    if not isinstance(value, bytes):
        raise MalformedMessageError(f"{where}: field {name!r} must be bytes, got {type(value).__name__}")
    return value


def int_field(record: ConfigRecord, name: str, where: str) -> int:
    """A non-negative integer field of a record, or :class:`MalformedMessageError`."""
    value = record[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedMessageError(f"{where}: field {name!r} must be a non-negative integer")
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


def pack_list(items: list[bytes]) -> bytes:
    """``>I``-length-prefixed items, concatenated."""
    return b"".join(struct.pack(">I", len(item)) + item for item in items)


def unpack_list(data: bytes, count: int, where: str, *, limit: int | None = None) -> list[bytes]:
    """The ``count`` items of :func:`pack_list`'s output (``limit``, if set, bounds ``count``).

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
        if pos + 4 + size > len(data):
            raise MalformedMessageError(f"{where}: truncated list item")
        items.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    if pos != len(data):
        raise MalformedMessageError(f"{where}: {len(data) - pos} trailing bytes in a list of {count}")
    return items


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
        return b"".join(
            [_LAYOUT_MAGIC, struct.pack(">III", len(encoded), len(spec), self.ring_length), spec]
            + [struct.pack(">H", len(e)) + e for e in encoded]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "Layout":
        """Strict decoder of :meth:`to_bytes` (:class:`MalformedMessageError`)."""
        try:
            if data[: len(_LAYOUT_MAGIC)] != _LAYOUT_MAGIC:
                raise MalformedMessageError("layout: bad magic")
            pos = len(_LAYOUT_MAGIC)
            count, spec_len, ring_length = struct.unpack_from(">III", data, pos)
            pos += 12
            if count < 3 or count > 1 << 16 or pos + spec_len > len(data):
                raise MalformedMessageError("layout: bad counts")
            spec = TensorSpec.from_bytes(data[pos : pos + spec_len])
            pos += spec_len
            parts = []
            for _ in range(count):
                (size,) = struct.unpack_from(">H", data, pos)
                if pos + 2 + size > len(data):
                    raise MalformedMessageError("layout: truncated name")
                parts.append(data[pos + 2 : pos + 2 + size].decode("utf-8"))
                pos += 2 + size
            if pos != len(data):
                raise MalformedMessageError("layout: trailing bytes")
        except (struct.error, UnicodeDecodeError):
            raise MalformedMessageError("layout does not decode") from None
        layout = cls(parts[0], parts[1], spec, tuple(parts[3:]), parts[2], ring_length)
        if ring_length and (layout.metric_names or ring_length < spec.size):
            raise MalformedMessageError("layout: a distributed-DP layout carries no metrics and covers the model")
        return layout

    @property
    def dimension(self) -> int:
        """Length of the uploaded vector (the weight slot included)."""
        return self.ring_length or self.spec.size + len(self.metric_names) + 1

    def digest(self) -> bytes:
        """SHA-256 of the layout, bound into a CKKS upload."""
        return hashlib.sha256(b"fedcrypt/flower-ckks-layout/v1" + self.to_bytes()).digest()


#: What an app's train reply splits into: arrays record name, metrics record name, tensors,
#: the MetricRecord, and the tensors' TensorSpec.
TrainReply = tuple[str, str, dict[str, np.ndarray], "MetricRecord", TensorSpec]


def split_train_reply(
    content: "RecordDict", *, party: int | str | None = None, round_id: int | None = None, stage: object | None = None
) -> TrainReply:
    """Split an app's train reply into its one ArrayRecord and one MetricRecord.

    Raises:
        RecordMismatchError: the reply does not hold exactly one ArrayRecord and one MetricRecord.
    """
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


def flat_update(
    reply: TrainReply, *, weight_key: str, max_weight: float, party: int | str | None = None,
    round_id: int | None = None, stage: object | None = None,
) -> tuple[Layout, np.ndarray, float]:
    """A train reply as its :class:`Layout`, the float64 vector ``[x, metrics]`` and the weight ``w``.

    ``w`` is the metric ``weight_key``, in ``(0, max_weight]``; ``metrics`` are the other
    scalar metrics in name order.

    Raises:
        RecordMismatchError: the metrics lack ``weight_key``.
        EncodingError: a list metric, or a weight outside ``(0, max_weight]``.
    """
    arrays_name, metrics_name, tensors, metric_record, spec = reply
    if weight_key not in metric_record:
        raise RecordMismatchError(
            f"the app's train metrics lack the weight {weight_key!r}", missing=(weight_key,), party=party,
            round=round_id, stage=stage,
        )
    names = tuple(sorted(k for k in metric_record.keys() if k != weight_key))
    if not all(isinstance(metric_record[name], (int, float)) for name in names):
        raise EncodingError("a metric is a list: only scalar metrics can be aggregated securely")
    weight = float(metric_record[weight_key])
    if not 0 < weight <= max_weight:
        raise EncodingError(f"weight {weight_key}={weight} outside (0, max_weight={max_weight}]")
    values = np.concatenate([spec.flatten(tensors).astype(np.float64), [float(metric_record[n]) for n in names]])
    return Layout(arrays_name, metrics_name, spec, names, weight_key), values, weight


def weighted(values: np.ndarray, weight: float, max_weight: float) -> np.ndarray:
    """``w/M * [values, 1]``: what SecAgg and threshold CKKS upload."""
    factor = weight / max_weight
    return np.append(values * factor, factor)


def average_reply(
    layout: Layout, total: np.ndarray, *, max_weight: float, run_id: int, group: str, stage: object = None
) -> "Message":
    """The strategy's reply from the decoded sum ``sum_u w_u/M * [x_u, metrics_u, 1]``: the
    weighted average of tensors and metrics, and ``M * sum(w/M)`` as the total weight.

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
    metadata = Metadata(
        run_id=run_id, message_id="", src_node_id=0, dst_node_id=0, reply_to_message_id="", group_id=group,
        created_at=time.time(), ttl=3600.0, message_type=TRAIN,
    )
    return Message(content=content, metadata=metadata)


# ============================================================================ node side
def run_app_train(
    msg: "Message", ctxt: "Context", call_next: _Next, record_name: str, *, party: int | str | None,
    round_id: int | None, stage: object,
) -> TrainReply:
    """Run the app's own train function on the strategy's records (all but ``record_name``); split its reply.

    Raises:
        LocalProtocolError: the app's reply is an error.
        RecordMismatchError: the reply is not one ArrayRecord and one MetricRecord.
    """
    names = [name for name in msg.content.keys() if name != record_name]
    train_msg = Message(content=RecordDict({name: msg.content[name] for name in names}), metadata=msg.metadata)
    reply = call_next(train_msg, ctxt)
    if reply.has_error():
        raise LocalProtocolError(f"the app's train function failed: {reply.error.reason}", party=party, round=round_id, stage=stage)
    return split_train_reply(reply.content, party=party, round_id=round_id, stage=stage)


def credentials(
    ctxt: "Context", *, identity_path: str | None, roster_path: str | None, roster_digest: str | None
) -> tuple[Roster | None, NodeIdentity | None]:
    """The node's pinned roster and identity, from its node config (first) or the mod's arguments.

    Raises:
        IdentityError: only some of the three are set, a digest that is not 64 hex digits,
            a roster that does not match it, or a file that does not load.
    """
    identity_path = setting(ctxt, NODE_IDENTITY) or identity_path
    roster_path = setting(ctxt, NODE_ROSTER) or roster_path
    digest = setting(ctxt, NODE_ROSTER_DIGEST) or roster_digest
    if identity_path is None and roster_path is None and digest is None:
        return None, None
    if identity_path is None or roster_path is None or digest is None:
        raise IdentityError(f"{NODE_IDENTITY}, {NODE_ROSTER} and {NODE_ROSTER_DIGEST} go together")
    try:
        pinned = bytes.fromhex(digest)
    except ValueError:
        raise IdentityError(f"{NODE_ROSTER_DIGEST} is not hex") from None
    if len(pinned) != 32:
        raise IdentityError(f"{NODE_ROSTER_DIGEST} is a SHA-256 digest (64 hex digits)")
    return Roster.load(roster_path, expected_digest=pinned), NodeIdentity.load(identity_path)


class StagedMod:
    """The request handling of a fedcrypt ClientApp mod: one ConfigRecord per stage.

    :meth:`__call__` passes non-train messages to the app, refuses a train message without
    the record (unless ``allow_plaintext``, and never with a roster), checks records and
    fields against the wire format and calls :meth:`_handle`, whose fields (but ``stage``)
    make the reply. A subclass sets ``RECORD``, ``STAGES`` (its stage Enum), ``SENDS`` (what
    it uploads, for the refusal), ``TRAIN_STAGE`` (the stage that also carries the
    strategy's train records), ``LABEL`` and, where they differ from
    :data:`PAYLOAD_FIELDS`, ``REQUEST_FIELDS`` (stage name -> fields).
    """

    RECORD: str
    STAGES: Any
    SENDS: str
    TRAIN_STAGE: Any
    LABEL: str
    REQUEST_FIELDS: dict[str, frozenset[str]] = {}
    allow_plaintext = False
    identity_path: str | None = None
    roster_path: str | None = None
    roster_digest: str | None = None
    state_key_path: str | None = None
    _warned = False

    def __call__(self, msg: "Message", ctxt: "Context", call_next: _Next) -> "Message":
        """Answer one stage of the protocol, or pass a non-train message to the app."""
        if msg.metadata.message_type.split(".")[0] != TRAIN:
            return call_next(msg, ctxt)
        node, where = ctxt.node_id, f"server message to node {ctxt.node_id}"
        if self.RECORD not in msg.content.keys():
            if not self.allow_plaintext:
                raise RecordMismatchError(
                    f"train message without the {self.RECORD!r} record: {self.SENDS}", missing=(self.RECORD,), party=node
                )
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
            raise RecordMismatchError(
                f"{where}: the {name} stage carries no train records", missing=("<train records>",), party=node, stage=stage
            )
        fields = self.REQUEST_FIELDS.get(name, PAYLOAD_FIELDS)
        check_fields(record, fields, party=node, stage=stage, where=where, record_name=self.RECORD)
        reply = self._handle(msg, ctxt, record, stage, call_next)
        return Message(content=RecordDict({self.RECORD: ConfigRecord({**reply, "stage": name})}), reply_to=msg)

    def _handle(self, msg: "Message", ctxt: "Context", record: ConfigRecord, stage: Any, call_next: _Next) -> dict[str, Any]:
        raise NotImplementedError

    def _credentials(self, ctxt: "Context") -> tuple[Roster | None, NodeIdentity | None]:
        """The node's roster and identity; without them, say once that this node runs honest-but-curious."""
        roster, identity = credentials(
            ctxt, identity_path=self.identity_path, roster_path=self.roster_path, roster_digest=self.roster_digest
        )
        if roster is None and not self._warned:
            self._warned = True
            log.warning(
                "fedcrypt %s: no roster on this node: it runs honest-but-curious, secure only against a server that "
                "follows the protocol (set %s, %s and %s for the malicious-server mode)",
                self.LABEL, NODE_IDENTITY, NODE_ROSTER, NODE_ROSTER_DIGEST,
            )
        return roster, identity


# ============================================================================ server side
class Abort(Exception):
    """Internal: end the round with this typed error in the report."""

    def __init__(self, error: FedcryptError) -> None:
        super().__init__(str(error))
        self.error = error


class ReportDict:
    """Mixin of the round reports: :meth:`to_dict`."""

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
    """One protection's rounds over a Flower ``Grid``: round ids, reports, timeouts, the exchange.

    A subclass sets ``RECORD``, ``REPORT`` (its report dataclass), ``LABEL`` (log lines),
    ``REPLY_FIELDS`` (stage name -> fields, where they differ from :data:`PAYLOAD_FIELDS`)
    and the attributes ``stage_timeout``, ``train_timeout``, ``poll_interval`` and
    ``min_clients``, and implements :meth:`_round`.
    """

    RECORD: str
    REPORT: Callable[..., Any]
    LABEL: str
    REPLY_FIELDS: dict[str, frozenset[str]] = {}
    stage_timeout: float
    train_timeout: float | None
    poll_interval: float = 3.0
    min_clients: int

    def __init__(self) -> None:
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
        round_id = self._round_id(train_messages)
        report = self.REPORT(round=round_id, nodes=list(nodes))
        self.reports.append(report)
        train_timeout = self.train_timeout if self.train_timeout is not None else timeout
        try:
            if len(nodes) < self.min_clients:
                raise Abort(RoundAbortedError(f"{len(nodes)} nodes sampled, fewer than min_clients={self.min_clients}"))
            reply = self._round(grid, nodes, by_node, round_id, report, self.stage_timeout if train_timeout is None else train_timeout)
        except Abort as exc:
            report.aborted = f"{type(exc.error).__name__}: {exc.error}"
        except RoundAbortedError as exc:
            report.aborted = f"{type(exc).__name__}: {exc}"
        if report.aborted is not None:
            log.warning("fedcrypt %s round %s failed: %s", self.LABEL, round_id, report.aborted)
            return []
        return [reply]

    def _check_train(self, train_messages: list["Message"]) -> None:
        """Refuse train messages the protection cannot run (ValueError); default: any are fine."""

    def _round_id(self, train_messages: list["Message"]) -> int:
        for message in train_messages:
            for record in message.content.config_records.values():
                value = record.get("server-round")
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    return value
        return self._round_counter

    def _round(
        self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: Any, train_timeout: float
    ) -> "Message":
        """The stages of one round (at least ``min_clients`` nodes); raise :class:`Abort` to end it with no reply."""
        raise NotImplementedError

    def _replies(self, grid: "Grid", messages: list["Message"], timeout: float) -> Iterator["Message"]:
        """The replies to ``messages`` one by one as they are pulled, for at most ``timeout`` seconds.

        Pushes the messages and pulls every ``poll_interval`` seconds (what
        ``Grid.send_and_receive`` does, but handing over each reply as soon as it arrives);
        a grid without push/pull falls back to ``send_and_receive``.
        """
        if not messages:
            return
        try:
            pending = set(grid.push_messages(messages))
        except NotImplementedError:
            yield from grid.send_and_receive(messages, timeout=timeout)
            return
        deadline = time.monotonic() + timeout
        while pending:
            for reply in grid.pull_messages(pending):
                pending.discard(reply.metadata.reply_to_message_id)
                yield reply
            if not pending or time.monotonic() >= deadline:
                return
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def _exchange(
        self,
        grid: "Grid",
        stage: Any,
        requests: dict[int, dict[str, Any]],
        report: Any,
        *,
        round_id: int,
        timeout: float | None = None,
        extra: dict[int, "Message"] | None = None,
        accept: Callable[[int, ConfigRecord], Any] | None = None,
        record: str | None = None,
        fields: frozenset[str] | None = None,
    ) -> dict[int, Any]:
        """Send one stage's requests (complete field dicts, by node); the well-formed replies by node.

        ``extra``: the strategy's train messages, whose records go with each request.
        ``accept(node, fields)``, if given, takes each reply as it arrives and what it
        returns is kept instead (so an upload is folded and dropped); any exception it
        raises refuses the reply. ``record`` / ``fields``: another record and its reply
        fields (default ``RECORD`` and the stage's).
        """
        name, label = record or self.RECORD, getattr(stage, "name", str(stage))
        expected = fields or self.REPLY_FIELDS.get(label, PAYLOAD_FIELDS)
        started = time.perf_counter()
        messages = []
        for node, request in requests.items():
            content = RecordDict({name: ConfigRecord(request)})
            report.bytes_down += len(request.get("payload", b""))
            if extra is not None:
                for key in extra[node].content.keys():
                    content[key] = extra[node].content[key]
            messages.append(Message(content, node, TRAIN, group_id=str(round_id)))
        received: dict[int, Any] = {}
        for reply in self._replies(grid, messages, self.stage_timeout if timeout is None else timeout):
            node = reply.metadata.src_node_id
            if node not in requests or node in received:
                continue  # a late reply to another round's message, or a duplicate: never ours to use
            where = f"reply from node {node}"
            try:
                if reply.has_error():
                    raise LocalProtocolError(f"{where} is an error: {reply.error.reason}", party=node, stage=stage)
                check_records(reply.content, [name], party=node, round_id=round_id, stage=stage, where=where)
                answer = reply.content[name]
                check_fields(answer, expected, party=node, round_id=round_id, stage=stage, where=where, record_name=name)
                if "stage" in expected and answer["stage"] != label:
                    raise UnexpectedMessageError(f"{where} is for stage {answer['stage']!r}", party=node, stage=stage)
                if "payload" in expected:
                    report.bytes_up += len(bytes_field(answer, "payload", where))
                received[node] = accept(node, answer) if accept is not None else answer
                if accept is not None and "payload" in expected:
                    answer["payload"] = b""  # handed to the protocol: the reply need not hold it
            except FedcryptError as exc:
                self._refuse(report, node, label, exc)
            except Exception as exc:  # noqa: BLE001 - one node's bytes never end the run
                # every decoder raises only FedcryptError on bad bytes (fuzzed); an untyped parser
                # failure still only refuses this node, without the original text (it may quote bytes)
                self._refuse(report, node, label, MalformedMessageError(f"{where}: unparseable ({type(exc).__name__})", party=node, stage=stage))
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
    call (evaluate and query messages, node lists, push/pull) goes to ``grid`` unchanged. A
    subclass names its workflow class in ``WORKFLOW``.

    Args:
        grid: the ServerApp's grid.
        workflow: the protection's settings; default ``WORKFLOW()``.
    """

    WORKFLOW: type

    def __init__(self, grid: "Grid", workflow: Any = None) -> None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a flwr Grid, got {type(grid).__name__}")
        if workflow is not None and not isinstance(workflow, self.WORKFLOW):
            raise TypeError(f"workflow must be a {self.WORKFLOW.__name__}, got {type(workflow).__name__}")
        self.grid = grid
        self.workflow = workflow if workflow is not None else self.WORKFLOW()

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
