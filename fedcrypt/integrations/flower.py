"""fedcrypt secure aggregation for Flower's Message API (flwr >= 1.20; tested with 1.42).

Two pieces, both thin: they move protocol bytes between Flower messages and the sans-IO
:mod:`fedcrypt.secagg` objects and make no protocol decision of their own.

* :class:`SecAggMod` (instance :data:`secagg_mod`): a ClientApp mod,
  ``ClientApp(mods=[secagg_mod])``. It answers the protocol stages itself, keeps the client
  protocol object in ``Context.state`` between stages (every Flower message may run in a
  fresh process), sealed under a node-local state key that never enters the Context
  (:mod:`fedcrypt.integrations._flower_state`), and at the masked-input stage calls the app's own ``@app.train``
  function, flattens its reply (one ArrayRecord and one MetricRecord), weights it and
  uploads only the masked ring vector.
* :class:`SecAggGrid` (with :class:`SecAggWorkflow` inside): wraps the ServerApp's
  ``Grid``. Any Flower strategy (``FedAvg``, ``FedProx``...) runs unchanged on it; when the
  strategy sends its train messages, the wrapper runs the SecAgg / SecAgg+ stages through
  ``grid.send_and_receive`` instead and hands the strategy one reply that holds the
  weighted average of the survivors' updates (and their total weight), so FedAvg's own
  weighted averaging returns exactly that average.

Wire format (one Flower ``ConfigRecord`` named :data:`RECORD` per message, fields by stage)::

    server -> client   stage, payload                        (+ config, nodes, client-id, round, max-weight, dp,
                                                                model at ADVERTISE_KEYS)
                                                             (+ the strategy's own train records at MASKED_INPUT)
    client -> server   stage, payload                        (+ layout at MASKED_INPUT)

``payload`` is the canonical ``to_bytes()`` of the protocol message. A message whose records
or fields differ from this table raises :class:`~fedcrypt.errors.RecordMismatchError` naming
the missing and extra names, on the side that received it.

Weighting (the FedAvg weight is secret-shared too): a client with weight ``w`` (its
``num-examples`` metric, at most ``max_weight`` ``M``) uploads the encoding of
``[w/M * x, w/M * metrics, w/M]``. The server decodes the survivors' sums and divides:
``sum(w x) / sum(w)``, the FedAvg average, plus ``M * sum(w/M)`` as the total weight.
Every coordinate ``w/M * x`` is clipped to ``[-clip, clip]`` by the fixed-point codec.

With distributed DP (``SecAggWorkflow(dp_noise_multiplier=...)``) the masked vector is
instead the ring encoding of :class:`~fedcrypt.dp.distributed.DistributedDp`: the
client's update delta against the global model, L2-clipped, rotated, rounded and noised
with its share of discrete Gaussian (or Skellam) noise; the strategy receives the global
model plus the noisy mean delta. The DP settings and their public rotation seed are part
of the round's associated data, so clients shown different settings fail the round.

Invariants:

* the server never sees one client's update; it sees the ring sum of the survivors, as
  :class:`~fedcrypt.secagg.ServerProtocol` guarantees;
* dropouts are explicit: each stage waits at most its timeout; nodes that did not reply,
  replied with a Flower error, or sent something the protocol refuses are dropped from
  the round (recorded in :attr:`SecAggWorkflow.reports`), never waited on again;
* the sender of a protocol message is the Flower node it came from: a payload naming
  another client id is refused;
* every node of a round gets the same train records (model and config): their digest
  (:func:`train_digest`, the setup's ``model`` field) is bound into the round's associated
  data, and a client refuses masked-input records with another digest;
* a node joins each round id once: a setup for a round it already joined (a replay, or
  a rerun of the same round over other nodes) is refused and changes nothing;
* a round that cannot finish safely returns no reply (the strategy keeps its model) and
  its report says why; it never returns a wrong sum;
* ``Context.state`` holds the client only sealed (AES-256-GCM, bound to record, run and
  node): a record that does not open under the node's state key is refused before any
  protocol step, so the node releases nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import math
import os
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from fedcrypt._optional import require
from fedcrypt.dp.distributed import MECHANISMS, DistributedDp, DistributedDpConfig
from fedcrypt.errors import (
    EncodingError,
    FedcryptError,
    IdentityError,
    LocalProtocolError,
    MalformedMessageError,
    ProtocolViolationError,
    RecordMismatchError,
    RoundAbortedError,
    SpecMismatchError,
    UnexpectedMessageError,
)
from fedcrypt.crypto import ed25519_verify
from fedcrypt.identity import NodeIdentity, Roster
from fedcrypt.secagg import ClientProtocol, SecAggConfig, ServerProtocol, Stage, decode_message
from fedcrypt.secagg.membership import graph_seed, pack_members, round_keys, unpack_members
from fedcrypt.secagg.messages import MaskedInput, ShareBundle
from fedcrypt.vectors import TensorSpec

from ._flower_state import NODE_IDENTITY, NODE_STATE_KEY, dump_config, load_config, node_state_key, open_record, seal_record

require("flwr", "flower")

from flwr.app import (  # noqa: E402 - after the extra check
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid  # noqa: E402

from ._flower_common import (  # noqa: E402
    ReportDict,
    RoundWorkflow,
    distinct_nodes,
    pack_list,
    run_app_train,
    staged_request,
    unpack_list,
)

__all__ = [
    "RECORD",
    "STATE",
    "JOINED",
    "train_digest",
    "SecAggMod",
    "secagg_mod",
    "SecAggWorkflow",
    "SecAggGrid",
    "SecAggRoundReport",
    "check_records",
    "check_fields",
    "round_binding",
    "Layout",
    "split_train_reply",
    "weighted_update",
    "average_reply",
    "strategy_reply",
    "pack_nodes",
    "unpack_nodes",
    "bytes_field",
    "kept_stage",
    "NODE_IDENTITY",
    "NODE_STATE_KEY",
]

log = logging.getLogger(__name__)

#: Name of the ConfigRecord that carries fedcrypt's protocol messages.
RECORD = "fedcrypt.secagg"
#: Name of the ConfigRecord in ``Context.state`` that keeps the client protocol between stages.
STATE = "fedcrypt.secagg.state"
#: Name of the ConfigRecord in ``Context.state`` that remembers the last round this node joined.
JOINED = "fedcrypt.secagg.joined"

_TRAIN = "train"
_SETUP_FIELDS = frozenset(
    {"stage", "payload", "config", "nodes", "client-id", "round", "max-weight", "dp", "model", "members"}
)
#: The record of the identification exchange (rounds with a roster): server -> node
#: ``challenge``; node -> server ``name`` and ``signature``.
IDENTIFY_RECORD = "fedcrypt-identify"
#: Node-config keys of the malicious-server mode: the node's identity key file, the roster
#: file and the roster's SHA-256 digest (hex), which pins it.
#: (``NODE_IDENTITY`` and ``NODE_STATE_KEY``, the state key file, come from the state module.)
NODE_ROSTER, NODE_ROSTER_DIGEST = "fedcrypt-roster", "fedcrypt-roster-digest"
#: Node-config key: how many colluding clients this node assumes (rounds declaring fewer are refused).
NODE_MAX_COLLUDERS = "fedcrypt-max-colluders"


def identify_bytes(run_id: int, node_id: int, challenge: bytes, name: str) -> bytes:
    """What a node signs to tell the server which roster member it is (fresh per challenge)."""
    return b"fedcrypt/flower/identify/v1" + struct.pack(">QQ", run_id, node_id) + challenge + name.encode("ascii")
_STAGE_FIELDS = frozenset({"stage", "payload"})
_MASKED_REPLY_FIELDS = frozenset({"stage", "payload", "layout"})
_LAYOUT_MAGIC = b"FCFL\x02"
_DP_FORMAT = struct.Struct(">ddBB32s")  # noise multiplier, clip, bits, mechanism, rotation seed


# ============================================================================ record checks
def check_records(
    content: "RecordDict",
    expected: Iterable[str],
    *,
    party: int | str | None = None,
    round_id: int | None = None,
    stage: object | None = None,
    where: str = "message",
) -> None:
    """Raise :class:`RecordMismatchError` unless ``content`` holds exactly the ``expected`` records.

    Args:
        content: the Flower message content.
        expected: record names that must be present, and the only ones allowed.
        party, round_id, stage: where this happened (carried by the error).
        where: what the content is, for the message ("reply from node 7"...).
    """
    expected_set = set(expected)
    present = set(content.keys())
    missing, extra = tuple(sorted(expected_set - present)), tuple(sorted(present - expected_set))
    if missing or extra:
        raise RecordMismatchError(
            f"{where}: records differ from the fedcrypt wire format (missing {list(missing)}, extra {list(extra)})",
            missing=missing,
            extra=extra,
            party=party,
            round=round_id,
            stage=stage,
        )


def check_fields(
    record: Any,
    expected: Iterable[str],
    *,
    party: int | str | None = None,
    round_id: int | None = None,
    stage: object | None = None,
    where: str = "message",
    record_name: str = RECORD,
) -> None:
    """Raise :class:`RecordMismatchError` unless the fedcrypt record has exactly ``expected`` fields.

    ``record_name`` is the record's name, for the message (default :data:`RECORD`).
    """
    if not isinstance(record, ConfigRecord):
        raise RecordMismatchError(
            f"{where}: record {record_name!r} is a {type(record).__name__}, expected a ConfigRecord",
            party=party,
            round=round_id,
            stage=stage,
        )
    expected_set = set(expected)
    present = set(record.keys())
    missing, extra = tuple(sorted(expected_set - present)), tuple(sorted(present - expected_set))
    if missing or extra:
        raise RecordMismatchError(
            f"{where}: fields of record {record_name!r} differ (missing {list(missing)}, extra {list(extra)})",
            missing=missing,
            extra=extra,
            party=party,
            round=round_id,
            stage=stage,
        )


def train_digest(content: "RecordDict") -> bytes:
    """SHA-256 of a strategy's train records (everything but fedcrypt's record), canonical.

    Records are taken in name order; arrays in their record's order with name, dtype,
    shape and bytes; config and metric entries in key order with their type and value.
    Bound into the round, it makes a server that sends different models (or configs) to
    different clients fail the round (the model-inconsistency attack, Pasquini et al.
    CCS 2022).
    """
    digest = hashlib.sha256(b"fedcrypt/flower-train-records/v1")

    def put(data: bytes) -> None:
        digest.update(struct.pack(">Q", len(data)) + data)

    for name in sorted(k for k in content.keys() if k != RECORD):
        record = content[name]
        put(name.encode("utf-8"))
        put(type(record).__name__.encode("ascii"))
        if isinstance(record, ArrayRecord):
            for key, array in record.items():
                value = np.ascontiguousarray(array.numpy())
                put(key.encode("utf-8"))
                put(str(value.dtype).encode("ascii") + b"|" + repr(tuple(value.shape)).encode("ascii"))
                put(value.tobytes())
        else:
            for key in sorted(record.keys()):
                value = record[key]
                put(key.encode("utf-8"))
                put(type(value).__name__.encode("ascii"))
                put(value if isinstance(value, bytes) else repr(value).encode("utf-8"))
    return digest.digest()


def round_binding(run_id: int, round_id: int, nodes: bytes) -> bytes:
    """The associated data every party binds into a round: run, round and the node list."""
    return hashlib.sha256(
        b"fedcrypt/flower-round/v1" + struct.pack(">QQ", run_id & ((1 << 64) - 1), round_id) + nodes
    ).digest()


def _pack_nodes(nodes: list[int]) -> bytes:
    return struct.pack(f">{len(nodes)}Q", *nodes)


def _unpack_nodes(data: bytes) -> list[int]:
    if not isinstance(data, bytes) or len(data) % 8 or not data:
        raise MalformedMessageError("node list must be a non-empty multiple of 8 bytes")
    nodes = list(struct.unpack(f">{len(data) // 8}Q", data))
    if nodes != sorted(set(nodes)):
        raise MalformedMessageError("node list must be sorted and without repeats")
    return nodes


def _bytes_field(record: ConfigRecord, name: str, where: str) -> bytes:
    value = record[name]
    if not isinstance(value, bytes):
        raise MalformedMessageError(f"{where}: field {name!r} must be bytes, got {type(value).__name__}")
    return value


def _pack_dp(noise_multiplier: float, clip: float, bits: int, mechanism: str, rotation_seed: bytes) -> bytes:
    return _DP_FORMAT.pack(noise_multiplier, clip, bits, MECHANISMS.index(mechanism), rotation_seed)


def _unpack_dp(data: bytes, num_clients: int, dim: int | None = None) -> DistributedDp | None:
    """The round's distributed-DP mechanism from its setup bytes (``b""``: none)."""
    if data == b"":
        return None
    if len(data) != _DP_FORMAT.size:
        raise MalformedMessageError(f"dp settings must be {_DP_FORMAT.size} bytes, got {len(data)}")
    noise_multiplier, clip, bits, mechanism, seed = _DP_FORMAT.unpack(data)
    try:
        config = DistributedDpConfig(
            noise_multiplier=noise_multiplier,
            clip=clip,
            expected_clients=num_clients,
            bits=bits,
            mechanism=MECHANISMS[mechanism],
        )
        return DistributedDp(config, dim=dim, rotation_seed=seed)
    except (IndexError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"invalid dp settings: {exc}") from None


# ============================================================================ layout
@dataclass(frozen=True)
class _Layout:
    """What the masked vector holds (public): record names, tensor spec, metric names.

    ``ring_length == 0``: the fixed-point encoding of ``w/M * [x, metrics, 1]``.
    ``ring_length > 0``: a distributed-DP ring vector of that length (the clipped, rotated,
    noised update delta; no metrics, no weights).
    """

    arrays_record: str
    metrics_record: str
    spec: TensorSpec
    metric_names: tuple[str, ...]
    weight_key: str
    ring_length: int = 0

    def to_bytes(self) -> bytes:
        parts = [self.arrays_record, self.metrics_record, self.weight_key, *self.metric_names]
        encoded = [p.encode("utf-8") for p in parts]
        spec = self.spec.to_bytes()
        return b"".join(
            [_LAYOUT_MAGIC, struct.pack(">III", len(encoded), len(spec), self.ring_length), spec]
            + [struct.pack(">H", len(e)) + e for e in encoded]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "_Layout":
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
                pos += 2
                if pos + size > len(data):
                    raise MalformedMessageError("layout: truncated name")
                parts.append(data[pos : pos + size].decode("utf-8"))
                pos += size
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
        """Length of the masked vector."""
        if self.ring_length:
            return self.ring_length
        return self.spec.size + len(self.metric_names) + 1


def split_train_reply(
    content: "RecordDict", *, party: int | str | None = None, round_id: int | None = None, stage: object | None = None
) -> tuple[str, str, dict[str, np.ndarray], "MetricRecord", TensorSpec]:
    """Split an app's train reply into its one ArrayRecord and one MetricRecord.

    Returns:
        ``(arrays record name, metrics record name, tensors, metric record, TensorSpec of the tensors)``.

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


def weighted_update(
    arrays_name: str,
    metrics_name: str,
    tensors: dict[str, np.ndarray],
    metric_record: "MetricRecord",
    spec: TensorSpec,
    *,
    weight_key: str,
    max_weight: float,
    party: int | str | None = None,
    round_id: int | None = None,
    stage: object | None = None,
) -> tuple[_Layout, np.ndarray]:
    """The vector ``w/M * [x, metrics, 1]`` of a train reply and its public :class:`Layout`.

    ``w`` is the metric ``weight_key`` (in ``(0, max_weight]``), ``M`` is ``max_weight``,
    ``x`` the flattened tensors and ``metrics`` the other scalar metrics in name order.

    Raises:
        RecordMismatchError: the metrics lack ``weight_key``.
        EncodingError: a list metric, or a weight outside ``(0, max_weight]``.
    """
    if weight_key not in metric_record:
        raise RecordMismatchError(
            f"the app's train metrics lack the weight {weight_key!r}",
            missing=(weight_key,), party=party, round=round_id, stage=stage,
        )
    metric_names = tuple(sorted(k for k in metric_record.keys() if k != weight_key))
    for name in metric_names:
        if not isinstance(metric_record[name], (int, float)):
            raise EncodingError(f"metric {name!r} is a list: only scalar metrics can be aggregated securely")
    weight = float(metric_record[weight_key])
    if not 0 < weight <= max_weight:
        raise EncodingError(f"weight {weight_key}={weight} outside (0, max_weight={max_weight}]")
    factor = weight / max_weight
    flat = spec.flatten(tensors).astype(np.float64)
    vector = np.concatenate(
        [flat * factor, np.array([float(metric_record[n]) for n in metric_names]) * factor, [factor]]
    )
    return _Layout(arrays_name, metrics_name, spec, metric_names, weight_key), vector


def average_reply(
    layout: _Layout, total: np.ndarray, *, max_weight: float, run_id: int, group: str, stage: object = Stage.DONE
) -> "Message":
    """The strategy's reply from the decoded sum ``sum_u w_u/M * [x_u, metrics_u, 1]``.

    It holds the weighted average ``sum(w x) / sum(w)`` of the tensors and metrics, and
    ``M * sum(w/M)`` as the total weight (``layout.weight_key``).

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
    content = RecordDict({layout.arrays_record: arrays, layout.metrics_record: MetricRecord(metrics)})
    return _strategy_reply(content, run_id, group)


#: Public names of the wire helpers (the CKKS and threshold adapters build on them).
Layout = _Layout
pack_nodes = _pack_nodes
unpack_nodes = _unpack_nodes
bytes_field = _bytes_field


# ============================================================================ client side
class SecAggMod:
    """A Flower ClientApp mod that runs the client side of fedcrypt SecAgg / SecAgg+.

    Math and threat model: those of :class:`~fedcrypt.secagg.ClientProtocol` (Bonawitz et
    al. 2017, Fig. 4; Bell et al. 2020): the client uploads
    ``y = encode(w/M * [x, metrics, 1]) + PRG(b) + sum of signed pairwise masks`` and the
    server can remove the masks only for the sum over surviving clients. The mod adds the
    checks a transport owes the protocol: records and fields exactly as the wire format
    says, this node really at its claimed position of the round's node list, the
    round's associated data recomputed locally from the run id and the node list.

    Args:
        allow_plaintext: pass a ``train`` message without fedcrypt's record straight to the
            app (the server did not ask for secure aggregation). ``False`` (default)
            refuses it, so a server cannot quietly collect a cleartext update.
        min_clients: refuse rounds with fewer clients (a sum over two clients reveals a lot
            to either of them).
        weight_key: the MetricRecord key of the FedAvg weight.
        min_noise_multiplier: refuse rounds without distributed DP of at least this noise
            multiplier (the server chooses the DP settings; this is the client's floor).
        identity_path, roster_path, roster_digest: the node's identity key file
            (:class:`~fedcrypt.identity.NodeIdentity`), the federation's roster file and its
            SHA-256 digest (hex) that pins it. The node config keys ``fedcrypt-identity``,
            ``fedcrypt-roster`` and ``fedcrypt-roster-digest`` take precedence. With them
            the node runs only the malicious-server mode (signed keys, attestations and
            survivor sets checked against the roster; a round without it is refused as a
            downgrade); without them only the honest-but-curious mode, which it logs once.
        max_colluders: how many colluding clients this node assumes (node config key
            ``fedcrypt-max-colluders`` takes precedence): a round whose config declares
            fewer is refused, since the threshold and the quorum follow from it and the
            server chooses the config.
        state_key_path: the key file that seals this node's protocol state in
            ``Context.state`` (node config ``fedcrypt-state-key`` takes precedence; created
            if missing). Without one the key is derived from the identity key, else the
            default key file is used (see :mod:`fedcrypt.integrations._flower_state`).
    """

    def __init__(
        self,
        *,
        allow_plaintext: bool = False,
        min_clients: int = 2,
        weight_key: str = "num-examples",
        min_noise_multiplier: float | None = None,
        identity_path: str | None = None,
        roster_path: str | None = None,
        roster_digest: str | None = None,
        max_colluders: int = 0,
        state_key_path: str | None = None,
    ) -> None:
        if state_key_path is not None and not isinstance(state_key_path, (str, os.PathLike)):
            raise TypeError(f"state_key_path must be a path or None, got {type(state_key_path).__name__}")
        if isinstance(max_colluders, bool) or not isinstance(max_colluders, int) or max_colluders < 0:
            raise ValueError(f"max_colluders must be a non-negative integer, got {max_colluders!r}")
        if not isinstance(allow_plaintext, bool):
            raise TypeError(f"allow_plaintext must be a bool, got {type(allow_plaintext).__name__}")
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 2:
            raise ValueError(f"min_clients must be an integer >= 2, got {min_clients!r}")
        if min_noise_multiplier is not None and (
            isinstance(min_noise_multiplier, bool)
            or not isinstance(min_noise_multiplier, (int, float))
            or not min_noise_multiplier > 0
        ):
            raise ValueError(f"min_noise_multiplier must be None or a positive number, got {min_noise_multiplier!r}")
        if min_noise_multiplier is not None and allow_plaintext:
            raise ValueError("min_noise_multiplier and allow_plaintext=True contradict each other")
        self.allow_plaintext = allow_plaintext
        self.min_clients = min_clients
        self.weight_key = weight_key
        self.min_noise_multiplier = None if min_noise_multiplier is None else float(min_noise_multiplier)
        self.identity_path, self.roster_path, self.roster_digest = identity_path, roster_path, roster_digest
        self.max_colluders = max_colluders
        self.state_key_path = None if state_key_path is None else os.fspath(state_key_path)
        self._warned = False

    def __repr__(self) -> str:
        return (
            f"SecAggMod(allow_plaintext={self.allow_plaintext}, min_clients={self.min_clients}, "
            f"min_noise_multiplier={self.min_noise_multiplier}, roster={'<set>' if self.roster_path else None})"
        )

    def _credentials(self, ctxt: "Context") -> tuple[Roster | None, NodeIdentity | None]:
        """The node's roster and identity, from its node config or this mod's arguments."""

        def setting(key: str, default: str | None) -> str | None:
            value = ctxt.node_config.get(key) if ctxt.node_config is not None else None
            return value if isinstance(value, str) and value else default

        for key in (NODE_IDENTITY, NODE_ROSTER, NODE_ROSTER_DIGEST):
            value = ctxt.node_config.get(key) if ctxt.node_config is not None else None
            if value is not None and not isinstance(value, str):
                raise IdentityError(f"node config {key} must be a string, got {type(value).__name__}")
        identity_path = setting(NODE_IDENTITY, self.identity_path)
        roster_path = setting(NODE_ROSTER, self.roster_path)
        digest = setting(NODE_ROSTER_DIGEST, self.roster_digest)
        if identity_path is None and roster_path is None and digest is None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "fedcrypt secagg: no roster on this node: it runs honest-but-curious, secure only against a "
                    "server that follows the protocol (set %s, %s and %s for the malicious-server mode)",
                    NODE_IDENTITY, NODE_ROSTER, NODE_ROSTER_DIGEST,
                )
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

    def __call__(self, msg: "Message", ctxt: "Context", call_next: Callable[["Message", "Context"], "Message"]) -> "Message":
        """Answer one protocol stage, or pass a non-train message to the app."""
        category = msg.metadata.message_type.split(".")[0]
        if category != _TRAIN:
            return call_next(msg, ctxt)
        if IDENTIFY_RECORD in msg.content.keys():
            return self._identify(msg, ctxt)
        request = staged_request(
            msg, RECORD, Stage, party=ctxt.node_id, allow_plaintext=self.allow_plaintext,
            sends="this client only sends masked updates", where="server message",
        )
        if request is None:
            if self._credentials(ctxt)[0] is not None:
                raise ProtocolViolationError(
                    "a node with a roster never trains in plaintext (allow_plaintext is ignored)", party=ctxt.node_id
                )
            return call_next(msg, ctxt)
        record, stage = request
        if stage is Stage.ADVERTISE_KEYS:
            return self._setup(msg, ctxt, record)
        kept = self._load(ctxt, stage)
        client = kept.client
        where = f"server message to node {ctxt.node_id}"
        if stage is Stage.MASKED_INPUT:
            train_records = [name for name in msg.content.keys() if name != RECORD]
            if not train_records:
                raise RecordMismatchError(
                    f"{where}: the masked-input stage carries no train records", missing=("<train records>",),
                    party=client.client_id, round=client.round_id, stage=stage,
                )
            if not hmac.compare_digest(train_digest(msg.content), kept.model):
                raise ProtocolViolationError(
                    f"{where}: the train records differ from those the round was set up with "
                    "(a server may not send different models to different clients)",
                    party=client.client_id, round=client.round_id, stage=stage,
                )
        else:
            check_records(msg.content, [RECORD], party=client.client_id, round_id=client.round_id, stage=stage, where=where)
        check_fields(record, _STAGE_FIELDS, party=client.client_id, round_id=client.round_id, stage=stage, where=where)
        if client.stage is not stage:
            raise UnexpectedMessageError(
                f"server message for stage {stage.name}", party=client.client_id, round=client.round_id, stage=client.stage
            )
        request = decode_message(_bytes_field(record, "payload", where))
        fields: dict[str, Any] = {}
        if stage is Stage.MASKED_INPUT:
            if not isinstance(request, ShareBundle):
                raise UnexpectedMessageError(
                    f"{type(request).__name__} is not accepted in this stage",
                    party=client.client_id, round=client.round_id, stage=stage,
                )
            layout, vector = self._train(msg, ctxt, kept, call_next)
            client.set_input(vector)
            fields["layout"] = layout.to_bytes()
        reply = client.handle(request)
        self._save(ctxt, _Kept(client, kept.max_weight, kept.dp, kept.model))
        fields.update({"stage": stage.name, "payload": reply.to_bytes()})
        return Message(content=RecordDict({RECORD: ConfigRecord(fields)}), reply_to=msg)

    # ------------------------------------------------------------------ stages
    def _required_colluders(self, ctxt: "Context") -> int:
        value = ctxt.node_config.get(NODE_MAX_COLLUDERS) if ctxt.node_config is not None else None
        if value is None:
            return self.max_colluders
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise IdentityError(f"node config {NODE_MAX_COLLUDERS} must be a non-negative integer, got {value!r}")
        return value

    def _identify(self, msg: "Message", ctxt: "Context") -> "Message":
        """Tell the server which roster member this node is, signed over a fresh challenge."""
        where = f"server message to node {ctxt.node_id}"
        check_records(msg.content, [IDENTIFY_RECORD], party=ctxt.node_id, where=where)
        record = msg.content[IDENTIFY_RECORD]
        check_fields(record, frozenset({"challenge"}), party=ctxt.node_id, where=where, record_name=IDENTIFY_RECORD)
        challenge = _bytes_field(record, "challenge", where)
        if len(challenge) != 32:
            raise MalformedMessageError(f"{where}: the challenge is 32 bytes", party=ctxt.node_id)
        roster, identity = self._credentials(ctxt)
        if roster is None or identity is None:
            raise ProtocolViolationError(f"{where}: asked who it is, but this node has no roster", party=ctxt.node_id)
        name = roster.name_of(identity.public_bytes)
        signature = identity.signing_key.sign(identify_bytes(msg.metadata.run_id, ctxt.node_id, challenge, name))
        reply = ConfigRecord({"name": name, "signature": signature})
        return Message(content=RecordDict({IDENTIFY_RECORD: reply}), reply_to=msg)

    def _setup(self, msg: "Message", ctxt: "Context", record: ConfigRecord) -> "Message":
        where = f"server message to node {ctxt.node_id}"
        check_records(msg.content, [RECORD], party=ctxt.node_id, stage=Stage.ADVERTISE_KEYS, where=where)
        check_fields(record, _SETUP_FIELDS, party=ctxt.node_id, stage=Stage.ADVERTISE_KEYS, where=where)
        config = load_config(_bytes_field(record, "config", where))
        nodes_bytes = _bytes_field(record, "nodes", where)
        nodes = _unpack_nodes(nodes_bytes)
        client_id, round_id, max_weight = record["client-id"], record["round"], record["max-weight"]
        if isinstance(client_id, bool) or isinstance(round_id, bool):
            raise MalformedMessageError(f"{where}: client-id and round must be integers", party=ctxt.node_id)
        if not isinstance(client_id, int) or not isinstance(round_id, int) or round_id < 0:
            raise MalformedMessageError(f"{where}: client-id and round must be integers", party=ctxt.node_id)
        if not isinstance(max_weight, float) or not (math.isfinite(max_weight) and max_weight > 0):
            raise MalformedMessageError(f"{where}: max-weight must be a positive float", party=ctxt.node_id)
        if len(nodes) != config.num_clients or not 0 <= client_id < len(nodes) or nodes[client_id] != msg.metadata.dst_node_id:
            raise UnexpectedMessageError(
                f"{where}: this node is not client {client_id} of the round's {len(nodes)} nodes",
                party=ctxt.node_id, round=round_id, stage=Stage.ADVERTISE_KEYS,
            )
        model = _bytes_field(record, "model", where)
        if len(model) != 32:
            raise MalformedMessageError(f"{where}: model must be a 32-byte digest", party=ctxt.node_id)
        if JOINED in ctxt.state.keys() and round_id <= int(ctxt.state[JOINED]["round"]):
            raise UnexpectedMessageError(
                f"{where}: a setup for round {round_id}, but this node already joined round "
                f"{int(ctxt.state[JOINED]['round'])} (replay)",
                party=ctxt.node_id, round=round_id, stage=Stage.ADVERTISE_KEYS,
            )
        if config.num_clients < self.min_clients:
            raise RoundAbortedError(
                f"{config.num_clients} clients is fewer than this client's minimum {self.min_clients}",
                party=client_id, round=round_id, stage=Stage.ADVERTISE_KEYS,
            )
        dp_bytes = _bytes_field(record, "dp", where)
        dp = _unpack_dp(dp_bytes, config.num_clients)
        if dp is not None and config.bits != 32:
            raise MalformedMessageError(f"{where}: distributed DP needs the 32-bit ring")
        if self.min_noise_multiplier is not None and (dp is None or dp.config.noise_multiplier < self.min_noise_multiplier):
            offered = "no distributed DP" if dp is None else f"noise multiplier {dp.config.noise_multiplier}"
            raise ProtocolViolationError(
                f"{where}: the round offers {offered}; this client requires at least {self.min_noise_multiplier}",
                party=client_id, round=round_id, stage=Stage.ADVERTISE_KEYS,
            )
        members_bytes = _bytes_field(record, "members", where)
        members = unpack_members(members_bytes) if members_bytes else ()
        roster, identity = self._credentials(ctxt)
        signing_key, verify_keys = round_keys(
            config, client_id, members, roster, identity, required_colluders=self._required_colluders(ctxt), round_id=round_id
        )
        client = ClientProtocol(
            config,
            client_id,
            round_id=round_id,
            associated_data=round_binding(msg.metadata.run_id, round_id, nodes_bytes + dp_bytes + model + members_bytes),
            signing_key=signing_key,
            verify_keys=verify_keys,
        )
        advert = client.advertise()
        self._save(ctxt, _Kept(client, max_weight, dp_bytes, model))
        ctxt.state[JOINED] = ConfigRecord({"round": round_id})
        fields = {"stage": Stage.ADVERTISE_KEYS.name, "payload": advert.to_bytes()}
        return Message(content=RecordDict({RECORD: ConfigRecord(fields)}), reply_to=msg)

    def _train(
        self,
        msg: "Message",
        ctxt: "Context",
        kept: "_Kept",
        call_next: Callable[["Message", "Context"], "Message"],
    ) -> tuple[_Layout, np.ndarray]:
        """Run the app's train function on the strategy's records; flatten and weight its reply."""
        client = kept.client
        arrays_name, metrics_name, tensors, metric_record, spec = run_app_train(
            msg, ctxt, call_next, RECORD, party=client.client_id, round_id=client.round_id, stage=Stage.MASKED_INPUT
        )
        dp = _unpack_dp(kept.dp, client.config.num_clients, spec.size)
        if dp is not None:
            return self._train_dp(msg, client, dp, arrays_name, metrics_name, spec, tensors)
        return weighted_update(
            arrays_name,
            metrics_name,
            tensors,
            metric_record,
            spec,
            weight_key=self.weight_key,
            max_weight=kept.max_weight,
            party=client.client_id,
            round_id=client.round_id,
            stage=Stage.MASKED_INPUT,
        )

    def _train_dp(
        self,
        msg: "Message",
        client: ClientProtocol,
        dp: DistributedDp,
        arrays_name: str,
        metrics_name: str,
        spec: TensorSpec,
        tensors: dict[str, np.ndarray],
    ) -> tuple[_Layout, np.ndarray]:
        """Distributed DP: the update delta against the global model, clipped, noised, in the ring."""
        where = f"server message to client {client.client_id}"
        if arrays_name not in msg.content.keys() or not isinstance(msg.content[arrays_name], ArrayRecord):
            raise RecordMismatchError(
                f"{where}: distributed DP needs the global model in ArrayRecord {arrays_name!r}",
                missing=(arrays_name,), party=client.client_id, round=client.round_id, stage=Stage.MASKED_INPUT,
            )
        global_tensors = {name: array.numpy() for name, array in msg.content[arrays_name].items()}
        if TensorSpec.from_tensors(global_tensors).digest() != spec.digest():
            raise SpecMismatchError(f"{where}: the trained model's layout differs from the global model's")
        delta = spec.flatten(tensors).astype(np.float64) - spec.flatten(global_tensors).astype(np.float64)
        ring = dp.encode(delta)
        layout = _Layout(arrays_name, metrics_name, spec, (), self.weight_key, dp.ring_length)
        return layout, ring.astype(client.config.codec.ring_dtype)

    # ------------------------------------------------------------------ state
    def _load(self, ctxt: "Context", stage: Stage) -> "_Kept":
        """The kept client and round settings, opened (refused if tampered, swapped or under another key)."""
        if STATE not in ctxt.state.keys():
            raise UnexpectedMessageError(
                f"a {stage.name} message before this node joined a round (it never advertised keys)",
                party=ctxt.node_id, stage=stage,
            )
        _, identity = self._credentials(ctxt)
        key = node_state_key(ctxt, key_path=self.state_key_path, identity_path=self.identity_path)
        fields = unpack_list(open_record(ctxt, key, STATE), 4, f"{STATE} of node {ctxt.node_id}")
        client_bytes, max_weight, dp, model = fields
        if len(max_weight) != 8 or len(model) != 32:
            raise MalformedMessageError(f"{STATE} of node {ctxt.node_id}: bad round settings", party=ctxt.node_id)
        client = ClientProtocol.from_state_bytes(client_bytes, signing_key=None if identity is None else identity.signing_key)
        return _Kept(client, struct.unpack(">d", max_weight)[0], dp, model)

    def _save(self, ctxt: "Context", kept: "_Kept") -> None:
        """Seal the client and the round settings into ``Context.state`` (dropped once the client is done)."""
        if kept.client.stage in (Stage.DONE, Stage.ABORTED):
            if STATE in ctxt.state.keys():
                del ctxt.state[STATE]
            return
        key = node_state_key(ctxt, key_path=self.state_key_path, identity_path=self.identity_path)
        state = pack_list([kept.client.to_state_bytes(), struct.pack(">d", kept.max_weight), kept.dp, kept.model])
        record = seal_record(ctxt, key, STATE, state)
        ctxt.state[STATE] = ConfigRecord({**record, "stage": kept.client.stage.name})


@dataclass(frozen=True)
class _Kept:
    """What a node keeps between two SecAgg messages (sealed in ``Context.state``)."""

    client: ClientProtocol
    max_weight: float
    dp: bytes
    model: bytes

    def __repr__(self) -> str:
        return f"_Kept(client={self.client!r})"


def kept_stage(context: "Context") -> Stage | None:
    """The stage of the SecAgg client a node keeps, from its record's public ``stage`` field (no key needed).

    ``None`` when the node keeps no client. A hint for tools and tests: the mod itself
    trusts only the sealed state.
    """
    if STATE not in context.state.keys():
        return None
    name = context.state[STATE].get("stage")
    if not isinstance(name, str) or name not in Stage.__members__:
        raise MalformedMessageError(f"{STATE} names no stage")
    return Stage[name]


#: The default mod: ``ClientApp(mods=[secagg_mod])``.
secagg_mod = SecAggMod()


# ============================================================================ server side
@dataclass
class SecAggRoundReport(ReportDict):
    """What happened in one secure-aggregation round (public information only).

    Attributes:
        round: the protocol round id (the strategy's server round).
        nodes: the node ids of the round, in client-id order.
        survivors: node ids whose updates are in the aggregate.
        dropped: node id -> the stage it stopped answering in (or was refused in).
        refused: node id -> why its message was refused (a typed error's text).
        stage_seconds: wall time per stage name.
        aborted: why the round was aborted, or ``None``.
        bytes_down: protocol payload bytes the server sent (train records excluded).
        bytes_up: protocol payload bytes the server received.
        dp: with distributed DP, the mechanism and the noise of this round's average
            (``noise_stddev``: per coordinate, with the survivors' count).
    """

    round: int
    nodes: list[int]
    survivors: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    aborted: str | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    dp: dict[str, Any] | None = None


class SecAggWorkflow(RoundWorkflow):
    """The server side of fedcrypt SecAgg / SecAgg+ over a Flower ``Grid``.

    Math and threat model: those of :class:`~fedcrypt.secagg.ServerProtocol` (Bonawitz et
    al. 2017, Fig. 4; SecAgg+ neighbour graphs of Bell et al. 2020, Sec. 3): the server
    learns ``sum_{u in survivors} w_u/M * [x_u, metrics_u, 1]`` and nothing about a single
    client. This class only moves bytes: it builds the :class:`~fedcrypt.secagg.SecAggConfig`
    from its arguments, sends each protocol request in a Flower message, feeds each reply
    to the protocol object, and tells it which nodes went silent (``end_stage``) after at
    most ``stage_timeout`` seconds.

    Args:
        threshold: Shamir threshold as a fraction of the share holders (rounded up, and at
            least a strict majority as the protocol requires).
        neighbours: SecAgg+ degree ``k``; ``None`` or anything ``>= n-1`` is the complete
            graph (classic SecAgg).
        bits: ring size, 32 or 64.
        clip: L-infinity clip of an encoded coordinate ``w/M * x``.
        max_weight: ``M``, the largest FedAvg weight a client may claim.
        stage_timeout: seconds to wait for the replies of one protocol stage.
        train_timeout: seconds to wait at the masked-input stage, where clients train;
            default the timeout the strategy passes to ``send_and_receive``.
        min_clients: rounds with fewer sampled nodes are refused (RoundAbortedError).
        rounding: fixed-point rounding, ``"stochastic"`` or ``"nearest"``.
        dp_noise_multiplier: ``z``; set it to switch on distributed DP (Kairouz et al. 2021,
            :mod:`fedcrypt.dp.distributed`): each client uploads its clipped update delta
            with its share of discrete Gaussian (or Skellam) noise, so the decoded sum of
            ``n`` clients carries noise of std ``z * dp_clip``; the strategy gets
            ``global + noisy mean delta``, unweighted, with ``num-examples`` = survivors.
            Needs ``bits=32``. Client metrics are not uploaded in this mode.
        dp_clip: L2 clip ``C`` of one client's update delta.
        dp_bits: ring width of the DP encoding (at most 32).
        dp_mechanism: ``"ddgauss"`` or ``"skellam"``.
        roster: the federation's :class:`~fedcrypt.identity.Roster`: rounds then run the
            malicious-server mode (``verify_survivors``); each node is asked once which
            member it is (a signed answer over a fresh challenge) and the round's member
            names go to every node, which checks them against its own pinned roster.
        max_colluders: ``c``, nodes that may collude with the server; the threshold is
            raised to ``max(floor((m + c)/2) + 1, c + 2)`` where the fraction gives less
            (:class:`~fedcrypt.secagg.SecAggConfig`), and a round whose ``m`` share holders
            cannot meet it is aborted.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.67,
        neighbours: int | None = None,
        bits: int = 32,
        clip: float = 4.0,
        max_weight: float = 1000.0,
        stage_timeout: float = 60.0,
        train_timeout: float | None = None,
        min_clients: int = 2,
        rounding: str = "stochastic",
        dp_noise_multiplier: float | None = None,
        dp_clip: float = 1.0,
        dp_bits: int = 20,
        dp_mechanism: str = "ddgauss",
        max_colluders: int = 0,
        roster: Roster | None = None,
    ) -> None:
        if roster is not None and not isinstance(roster, Roster):
            raise TypeError(f"roster must be a fedcrypt.identity.Roster, got {type(roster).__name__}")
        if not isinstance(max_colluders, int) or isinstance(max_colluders, bool) or max_colluders < 0:
            raise ValueError(f"max_colluders must be a non-negative integer, got {max_colluders!r}")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0.5 < threshold <= 1.0:
            raise ValueError(f"threshold must be a fraction in (0.5, 1], got {threshold!r}")
        if neighbours is not None and (not isinstance(neighbours, int) or isinstance(neighbours, bool) or neighbours < 0):
            raise ValueError(f"neighbours must be None or a non-negative integer, got {neighbours!r}")
        if not isinstance(max_weight, (int, float)) or not math.isfinite(max_weight) or max_weight <= 0:
            raise ValueError(f"max_weight must be a positive finite number, got {max_weight!r}")
        for name, value in (("stage_timeout", stage_timeout), ("train_timeout", train_timeout)):
            if value is not None and (not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 2:
            raise ValueError(f"min_clients must be an integer >= 2, got {min_clients!r}")
        # fail now, not in round 1, on a bad bits/clip/rounding or DP setting
        SecAggConfig(num_clients=2, threshold=2, bits=bits, clip=clip, rounding=rounding)
        if dp_noise_multiplier is not None:
            DistributedDpConfig(dp_noise_multiplier, dp_clip, 2, bits=dp_bits, mechanism=dp_mechanism)  # type: ignore[arg-type]
            if bits != 32:
                raise ValueError(f"distributed DP needs bits=32 (the DP ring divides 2^32), got {bits}")
        self.dp_noise_multiplier = None if dp_noise_multiplier is None else float(dp_noise_multiplier)
        self.dp_clip = float(dp_clip)
        self.dp_bits = dp_bits
        self.dp_mechanism = dp_mechanism
        self.threshold = float(threshold)
        self.neighbours = neighbours or None
        self.bits = bits
        self.clip = float(clip)
        self.max_weight = float(max_weight)
        self.stage_timeout = float(stage_timeout)
        self.train_timeout = None if train_timeout is None else float(train_timeout)
        self.min_clients = min_clients
        self.rounding = rounding
        self.max_colluders = max_colluders
        self.roster = roster
        self._names: dict[int, str] = {}  # node id -> roster member, as the node proved it
        self.reports: list[SecAggRoundReport] = []
        self._round_counter = 0

    def __repr__(self) -> str:
        return (
            f"SecAggWorkflow(threshold={self.threshold}, neighbours={self.neighbours}, bits={self.bits}, "
            f"clip={self.clip}, max_weight={self.max_weight}, stage_timeout={self.stage_timeout})"
        )

    def config_for(self, num_clients: int) -> SecAggConfig:
        """The SecAggConfig of a round with ``num_clients`` clients."""
        k = self.neighbours
        if k is not None and k >= num_clients - 1:
            k = None
        holders = num_clients if k is None else k + 1
        c = self.max_colluders
        threshold = min(holders, max((holders + c) // 2 + 1, c + 2, math.ceil(self.threshold * holders)))
        return SecAggConfig(
            num_clients=num_clients,
            threshold=threshold,
            neighbours=k,
            bits=self.bits,
            clip=self.clip,
            rounding=self.rounding,
            max_colluders=c,
            verify_survivors=self.roster is not None,
        )

    # ------------------------------------------------------------------ one round
    def aggregate(self, grid: "Grid", train_messages: list["Message"], timeout: float | None = None) -> list["Message"]:
        """Run one secure-aggregation round for the strategy's train messages.

        Args:
            grid: the ServerApp's grid.
            train_messages: the strategy's ``train`` messages, one per sampled node.
            timeout: how long to wait at the masked-input stage (clients train then);
                ``train_timeout`` takes precedence, ``stage_timeout`` applies if both are None.

        Returns:
            ``[reply]``: one reply holding the survivors' weighted average and total weight,
            or ``[]`` when the round was aborted (see :attr:`reports`).

        Raises:
            ValueError: the messages are not one train message per distinct node.
        """
        nodes, by_node = distinct_nodes(train_messages)
        digests = {train_digest(m.content) for m in train_messages}
        if len(digests) != 1:
            raise ValueError(
                "secure aggregation needs the same train records (model and config) for every node; "
                f"the strategy sent {len(digests)} different ones"
            )
        (model,) = digests
        round_id, report = self._open_round(train_messages, nodes, SecAggRoundReport)
        if len(nodes) < self.min_clients:
            report.aborted = f"{len(nodes)} nodes sampled, fewer than min_clients={self.min_clients}"
            log.warning("fedcrypt secagg round %s aborted: %s", round_id, report.aborted)
            return []
        members = b""
        if self.roster is not None:
            names = self._identify(grid, nodes, report, round_id)
            nodes = [node for node in nodes if node in names]
            report.nodes = list(nodes)
            if len(nodes) < self.min_clients:
                report.aborted = f"{len(nodes)} nodes identified as roster members, fewer than min_clients={self.min_clients}"
                log.warning("fedcrypt secagg round %s aborted: %s", round_id, report.aborted)
                return []
            members = pack_members([names[node] for node in nodes])
        try:
            config = self.config_for(len(nodes))
        except ValueError as exc:
            report.aborted = f"no safe configuration for {len(nodes)} nodes: {exc}"
            log.warning("fedcrypt secagg round %s aborted: %s", round_id, report.aborted)
            return []
        if self.roster is not None and not config.complete_graph:
            # every node derives the SecAgg+ graph seed itself and refuses any other
            seed = graph_seed(self.roster, round_id, unpack_members(members))
            config = dataclasses.replace(config, graph_seed=seed)
        nodes_bytes = _pack_nodes(nodes)
        dp_bytes = b""
        if self.dp_noise_multiplier is not None:
            # public, fresh per round: the rotation needs agreement, not secrecy
            dp_bytes = _pack_dp(self.dp_noise_multiplier, self.dp_clip, self.dp_bits, self.dp_mechanism, secrets.token_bytes(32))
        run_id = grid.run.run_id
        server = ServerProtocol(
            config,
            round_id=round_id,
            associated_data=round_binding(run_id, round_id, nodes_bytes + dp_bytes + model + members),
        )
        group = str(round_id)
        train_timeout = self._train_timeout(timeout)
        layouts: dict[int, _Layout] = {}

        # ADVERTISE_KEYS: the setup message
        setup_common = {
            "config": dump_config(config),
            "nodes": nodes_bytes,
            "round": round_id,
            "payload": b"",
            "max-weight": self.max_weight,
            "dp": dp_bytes,
            "model": model,
            "members": members,
        }
        requests = {
            cid: {**setup_common, "client-id": cid, "stage": Stage.ADVERTISE_KEYS.name} for cid in range(len(nodes))
        }
        try:
            stage = Stage.ADVERTISE_KEYS
            while stage not in (Stage.DONE, Stage.ABORTED):
                started = time.perf_counter()
                messages = []
                for cid, fields in requests.items():
                    content = RecordDict({RECORD: ConfigRecord(fields)})
                    report.bytes_down += len(fields["payload"])
                    if stage is Stage.MASKED_INPUT:
                        for name in by_node[nodes[cid]].content.keys():
                            content[name] = by_node[nodes[cid]].content[name]
                    messages.append(Message(content, nodes[cid], _TRAIN, group_id=group))
                wait = train_timeout if stage is Stage.MASKED_INPUT else self.stage_timeout
                replies = list(grid.send_and_receive(messages, timeout=wait)) if messages else []
                for reply in replies:
                    self._receive(server, reply, nodes, stage, report, layouts)
                for cid in requests:
                    if cid not in server.received and nodes[cid] not in report.dropped:
                        report.dropped[nodes[cid]] = stage.name
                outgoing = server.end_stage()
                report.stage_seconds[stage.name] = time.perf_counter() - started
                stage = server.stage
                requests = {cid: {"stage": stage.name, "payload": msg.to_bytes()} for cid, msg in outgoing.items()}
        except RoundAbortedError as exc:
            report.aborted = str(exc)
            log.warning("fedcrypt secagg round %s aborted: %s", round_id, exc)
            return []
        result = server.result
        report.survivors = [nodes[cid] for cid in result.survivors]
        if dp_bytes:
            return [self._reply_dp(dp_bytes, config, result.ring_sum, result.survivors, layouts, by_node, report, group)]
        return [self._reply(config, result.ring_sum, result.survivors, layouts, run_id, group)]

    def _receive(
        self,
        server: ServerProtocol,
        reply: "Message",
        nodes: list[int],
        stage: Stage,
        report: SecAggRoundReport,
        layouts: dict[int, _Layout],
    ) -> None:
        node = reply.metadata.src_node_id
        if node not in nodes:
            return  # a late reply from another round's message; never ours to feed
        cid = nodes.index(node)
        where = f"reply from node {node}"
        try:
            if reply.has_error():
                raise LocalProtocolError(f"{where} is an error: {reply.error.reason}", party=cid, stage=stage)
            check_records(reply.content, [RECORD], party=cid, round_id=server.round_id, stage=stage, where=where)
            record = reply.content[RECORD]
            expected = _MASKED_REPLY_FIELDS if stage is Stage.MASKED_INPUT else _STAGE_FIELDS
            check_fields(record, expected, party=cid, round_id=server.round_id, stage=stage, where=where)
            if record["stage"] != stage.name:
                raise UnexpectedMessageError(f"{where} is for stage {record['stage']!r}", party=cid, stage=stage)
            payload = _bytes_field(record, "payload", where)
            if stage is Stage.MASKED_INPUT:
                layout = _Layout.from_bytes(_bytes_field(record, "layout", where))
                reference = next(iter(layouts.values()), None)
                if reference is not None and layout != reference:
                    raise UnexpectedMessageError(f"{where}: its model layout differs from the other clients'", party=cid, stage=stage)
                message = MaskedInput.from_bytes(payload, expected_length=layout.dimension)
            else:
                message = decode_message(payload)
            if message.party != cid:
                raise UnexpectedMessageError(f"{where} claims to be client {message.party}", party=cid, stage=stage)
            server.receive(message)
            if stage is Stage.MASKED_INPUT:
                layouts[cid] = layout
            report.bytes_up += len(payload)
        except FedcryptError as exc:
            report.refused[node] = f"{type(exc).__name__}: {exc}"
            log.warning("fedcrypt secagg: %s refused: %s", where, exc)
        except Exception as exc:  # noqa: BLE001 - one peer's bytes must never end the run
            # decoders raise only FedcryptError on bad bytes (fuzzed); an untyped parser
            # failure still only refuses this node, which then counts as dropped
            report.refused[node] = f"MalformedMessageError: {where}: unparseable ({type(exc).__name__})"
            log.warning("fedcrypt secagg: %s refused: unparseable (%s)", where, type(exc).__name__)

    def _identify(self, grid: "Grid", nodes: list[int], report: SecAggRoundReport, round_id: int) -> dict[int, str]:
        """Roster members of the round's nodes: known ones from earlier rounds, the others asked now."""
        assert self.roster is not None
        unknown = [node for node in nodes if node not in self._names]
        if unknown:
            challenge = secrets.token_bytes(32)
            run_id = grid.run.run_id
            messages = [
                Message(
                    RecordDict({IDENTIFY_RECORD: ConfigRecord({"challenge": challenge})}), node, _TRAIN,
                    group_id=f"{round_id}-identify",
                )
                for node in unknown
            ]
            for reply in grid.send_and_receive(messages, timeout=self.stage_timeout):
                node = reply.metadata.src_node_id
                if node not in unknown or node in self._names:
                    continue
                where = f"identification reply from node {node}"
                try:
                    if reply.has_error():
                        raise LocalProtocolError(f"{where} is an error: {reply.error.reason}", party=node)
                    check_records(reply.content, [IDENTIFY_RECORD], party=node, where=where)
                    record = reply.content[IDENTIFY_RECORD]
                    check_fields(record, frozenset({"name", "signature"}), party=node, where=where, record_name=IDENTIFY_RECORD)
                    name = record["name"]
                    if not isinstance(name, str):
                        raise MalformedMessageError(f"{where}: name must be a string", party=node)
                    signature = _bytes_field(record, "signature", where)
                    ed25519_verify(self.roster.key(name), signature, identify_bytes(run_id, node, challenge, name))
                except FedcryptError as exc:
                    report.refused[node] = f"{type(exc).__name__}: {exc}"
                    log.warning("fedcrypt secagg: %s refused: %s", where, exc)
                    continue
                for other in [n for n, member in self._names.items() if member == name]:
                    del self._names[other]  # the member came back under another node id
                self._names[node] = name
        for node in nodes:
            if node not in self._names:
                report.dropped.setdefault(node, "IDENTIFY")
        return {node: self._names[node] for node in nodes if node in self._names}

    def _reply(
        self,
        config: SecAggConfig,
        ring_sum: np.ndarray,
        survivors: tuple[int, ...],
        layouts: dict[int, _Layout],
        run_id: int,
        group: str,
    ) -> "Message":
        layout = layouts[survivors[0]]
        total = config.codec.decode_sum(ring_sum, len(survivors))
        return average_reply(layout, total, max_weight=self.max_weight, run_id=run_id, group=group)

    def _reply_dp(
        self,
        dp_bytes: bytes,
        config: SecAggConfig,
        ring_sum: np.ndarray,
        survivors: tuple[int, ...],
        layouts: dict[int, _Layout],
        by_node: dict[int, "Message"],
        report: SecAggRoundReport,
        group: str,
    ) -> "Message":
        layout = layouts[survivors[0]]
        dp = _unpack_dp(dp_bytes, config.num_clients, layout.spec.size)
        assert dp is not None
        count = len(survivors)
        mean_delta = dp.decode(ring_sum, count) / count
        global_record = next(iter(by_node.values())).content[layout.arrays_record]
        global_tensors = {name: array.numpy() for name, array in global_record.items()}
        new = layout.spec.flatten(global_tensors).astype(np.float64) + mean_delta
        tensors = layout.spec.unflatten(new.astype(np.float32))
        arrays = ArrayRecord({name: Array(np.asarray(value)) for name, value in tensors.items()})
        metrics = MetricRecord({layout.weight_key: float(count)})
        report.dp = {
            "mechanism": dp.config.mechanism,
            "noise_multiplier": dp.config.noise_multiplier,
            "clip": dp.config.clip,
            "expected_clients": dp.config.expected_clients,
            "survivors": count,
            "noise_stddev": dp.noise_stddev(count) / count,
        }
        content = RecordDict({layout.arrays_record: arrays, layout.metrics_record: metrics})
        return _strategy_reply(content, next(iter(by_node.values())).metadata.run_id, group)


def _strategy_reply(content: "RecordDict", run_id: int, group: str) -> "Message":
    """A reply-shaped message for the strategy (it does not come from one node)."""
    metadata = Metadata(
        run_id=run_id,
        message_id="",
        src_node_id=0,
        dst_node_id=0,
        reply_to_message_id="",
        group_id=group,
        created_at=time.time(),
        ttl=3600.0,
        message_type=_TRAIN,
    )
    return Message(content=content, metadata=metadata)


class SecAggGrid(Grid):
    """A ``Grid`` that turns a strategy's train round into a fedcrypt secure-aggregation round.

    Every other call (evaluate and query messages, node lists, push/pull) goes to the
    wrapped grid unchanged. ``strategy.start(grid=SecAggGrid(grid, workflow), ...)`` is the
    whole change a ServerApp needs; the ClientApp adds :data:`secagg_mod`.

    Args:
        grid: the ServerApp's grid.
        workflow: the secure-aggregation settings; default ``SecAggWorkflow()``.
    """

    def __init__(self, grid: "Grid", workflow: SecAggWorkflow | None = None) -> None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a flwr Grid, got {type(grid).__name__}")
        self.grid = grid
        self.workflow = workflow if workflow is not None else SecAggWorkflow()
        self._max_weight_sent = False

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
        """Train messages go through secure aggregation; all others straight through."""
        messages = list(messages)
        if messages and all(m.metadata.message_type.split(".")[0] == _TRAIN for m in messages):
            return self.workflow.aggregate(self.grid, messages, timeout)
        return self.grid.send_and_receive(messages, timeout=timeout)


#: Public name of the strategy-reply builder.
strategy_reply = _strategy_reply
