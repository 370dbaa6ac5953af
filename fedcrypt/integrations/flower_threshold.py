"""fedcrypt threshold CKKS for Flower's Message API (extras ``threshold`` and ``flower``).

The threshold counterpart of :mod:`fedcrypt.integrations.flower`, as thin: it moves the
canonical bytes of the sans-IO :mod:`fedcrypt.he.threshold` objects between Flower
messages (:class:`~fedcrypt.he.threshold.KeyHolder` on the nodes,
:class:`~fedcrypt.he.threshold.ThresholdServer` on the server) and decides nothing about
the cryptography. OpenFHE's wheels are CPython 3.10 only (see ``scripts/setup_py310.sh``);
on that Python the index serves ``flwr`` up to 1.30, which this module is tested with.

* :class:`ThresholdMod` (instance :data:`threshold_mod`): a ClientApp mod. The node is a
  key holder and a client: it runs its link of the key chain, keeps its
  :class:`~fedcrypt.he.threshold.KeyHolder` (key share included) in ``Context.state``,
  sealed under the node's state key (:mod:`~fedcrypt.integrations._flower_state`),
  between messages (every Flower message may run in a fresh process), runs the app's own
  ``@app.train`` at the encrypt stage, flattens and weights its reply
  (:func:`~fedcrypt.integrations.flower.weighted_update`) and uploads only the ciphertext;
  it partially decrypts each aggregate at most once.
* :class:`ThresholdGrid` (with :class:`ThresholdWorkflow` inside): wraps the ServerApp's
  ``Grid`` so that any strategy's train round becomes a threshold-CKKS round; the strategy
  receives one reply with the weighted average and the total weight.

Messages (Flower ``train`` messages with one ``ConfigRecord`` named :data:`RECORD`)::

    KEYGEN   server -> holder i (one at a time, i = 0..n-1)
                 stage, round, payload = holder i-1's KeyShareMessage (b"" for i = 0),
                 params = ThresholdParams bytes, session, party = i, nodes = the committee
             holder -> server   stage, payload = its KeyShareMessage
    JOINT    server -> holders  stage, round, payload = the joint key (holder n-1's message),
                                roster = RosterMessage (b"" without recovery_threshold)
             holder -> server   stage, payload = its KeyBackupMessages (t-of-n, else b""), count
    BACKUP   server -> holder   stage, round, payload = the backups addressed to it, count
             holder -> server   stage, payload = b""
    ENCRYPT  server -> holders  stage, round, payload = b"", fingerprint, max-weight
                                (+ the strategy's train records)
             holder -> server   stage, payload = upload blob, layout
    DECRYPT  server -> holders  stage, round, payload = aggregate blob
             holder -> server   stage, payload = DecryptionShare
    RELEASE  server -> helper   stage, round, payload = b"", dropped, stand-in      (t-of-n only)
             helper -> server   stage, payload = KeyBackupMessage to the stand-in
    RECOVER  server -> stand-in stage, round, payload = released KeyBackupMessages, count,
                                dropped, aggregate
             stand-in -> server stage, payload = the dropped holder's DecryptionShare

KEYGEN, JOINT and BACKUP run once per session (the first round: the committee is the nodes
that round samples). Lists are ``>I``-length-prefixed items. A message whose records or
fields differ from this table raises :class:`~fedcrypt.errors.RecordMismatchError` naming
what is missing and what is extra, on the side that received it.

Weighting: a node with weight ``w`` (its ``num-examples`` metric, at most ``max_weight``
``M``) flattens ``v = w/M * [x, metrics, 1]``
(:func:`~fedcrypt.integrations.flower.weighted_update`), clips each coordinate to
``clip`` and encrypts ``M * v = w * [x, metrics, 1]`` (``KeyHolder.encrypt(v, weight=M)``:
the decryption error is absolute, so the larger scale makes the average ``M`` times more
precise). The server only adds ciphertexts, so the flooding of the partial decryptions is
sized from fresh ciphertexts (see :class:`~fedcrypt.he.threshold.ThresholdParams`); the
fused sum divided by ``M`` is ``sum(w/M [x, metrics, 1])`` and the strategy gets
``sum(w x) / sum(w)``, within :func:`fedavg_error_bound`.

Dropouts: a node that does not upload only leaves the sum. A key holder that does not
answer DECRYPT: with ``recovery_threshold = t`` and at most ``n - t`` of them gone, a
surviving holder stands in for each (RELEASE to ``t - 1`` other survivors, RECOVER to the
stand-in); otherwise the round is aborted: the strategy gets no reply and the round's
report carries the :class:`~fedcrypt.errors.RoundAbortedError`. A key holder missing
during key generation aborts the round and the next round starts a fresh session.

Threat model (semi-honest server and holders, as :mod:`fedcrypt.he.threshold`): no key
holder, and no coalition of fewer than ``n`` holders (``t`` with recovery) with the
server, decrypts an upload. Holders refuse aggregates claiming fewer than ``min_clients``
uploads and answer each aggregate once, but blob headers are the server's claim: a
malicious server can present one upload as an aggregate (the flooding still protects the
key shares, not that upload).

Invariants:

* the server never holds a key share: it relays public keys, ciphertexts and flooded
  partial decryptions only; the t-of-n backup pieces it routes are AES-GCM-encrypted to
  their recipient;
* a node's :class:`~fedcrypt.he.threshold.KeyHolder` state is written back to
  ``Context.state`` only after a message was handled successfully: a refused message
  changes nothing on the node;
* a node uploads at most once per round id and partially decrypts each aggregate at most
  once (both survive a restart through ``Context.state``);
* sessions are the server's choice: a KEYGEN for the session a node already holds is a
  replay and refused; one for a new session replaces the node's key share (a server can
  always end a session; it cannot make a node reuse one). The committee is fixed for the
  session: nodes sampled later that are not in it are refused at ENCRYPT, and a committee
  that lost more key holders than it can stand in for aborts every round (start a new
  workflow for a new committee);
* nothing secret is logged, put in an error message or a ``repr``.
"""

from __future__ import annotations

import enum
import hmac
import logging
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from fedcrypt.errors import (
    ContextMismatchError,
    FedcryptError,
    MalformedMessageError,
    ProtocolViolationError,
    RecordMismatchError,
    RoundAbortedError,
    UnexpectedMessageError,
)
from fedcrypt.he.threshold import (
    PRESETS,
    DecryptionShare,
    KeyBackupMessage,
    KeyHolder,
    KeyShareMessage,
    ThresholdDecryption,
    ThresholdParams,
    ThresholdServer,
    load_openfhe,
)

load_openfhe()  # MissingExtraError naming 'threshold' and the Pythons

from .flower import (  # noqa: E402 - after the extra check (it requires flwr itself)
    Layout,
    SecAggGrid,
    average_reply,
    bytes_field,
    pack_nodes,
    unpack_nodes,
    weighted_update,
)

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

from ._flower_common import (  # noqa: E402
    Abort as _Abort,
    ReportDict,
    StagedMod,
    StagedWorkflow,
    int_field as _int_field,
    max_weight_field,
    pack_list as _pack_list,
    run_app_train,
    unpack_list,
)
from ._flower_state import node_state_key, open_record, seal_record  # noqa: E402

__all__ = [
    "RECORD",
    "STATE",
    "ThresholdStage",
    "ThresholdMod",
    "threshold_mod",
    "ThresholdWorkflow",
    "ThresholdGrid",
    "ThresholdRoundReport",
    "fedavg_error_bound",
]

log = logging.getLogger(__name__)

#: Name of the ConfigRecord that carries the threshold-CKKS messages.
RECORD = "fedcrypt.threshold"
#: Name of the ConfigRecord in ``Context.state`` with the node's key holder (SECRET) and replay guard.
STATE = "fedcrypt.threshold.state"

_TRAIN = "train"
_Next = Callable[["Message", "Context"], "Message"]
_ENCRYPTED = struct.Struct(">q")  # the last round this node uploaded for (-1: none)


class ThresholdStage(enum.Enum):
    """The stages of threshold CKKS over Flower (see the module docstring)."""

    KEYGEN = "KEYGEN"
    JOINT = "JOINT"
    BACKUP = "BACKUP"
    ENCRYPT = "ENCRYPT"
    DECRYPT = "DECRYPT"
    RELEASE = "RELEASE"
    RECOVER = "RECOVER"


_REQUEST_FIELDS: dict[ThresholdStage, frozenset[str]] = {
    ThresholdStage.KEYGEN: frozenset({"stage", "round", "payload", "params", "session", "party", "nodes"}),
    ThresholdStage.JOINT: frozenset({"stage", "round", "payload", "roster"}),
    ThresholdStage.BACKUP: frozenset({"stage", "round", "payload", "count"}),
    ThresholdStage.ENCRYPT: frozenset({"stage", "round", "payload", "fingerprint", "max-weight"}),
    ThresholdStage.DECRYPT: frozenset({"stage", "round", "payload"}),
    ThresholdStage.RELEASE: frozenset({"stage", "round", "payload", "dropped", "stand-in"}),
    ThresholdStage.RECOVER: frozenset({"stage", "round", "payload", "count", "dropped", "aggregate"}),
}
_REPLY_FIELDS: dict[ThresholdStage, frozenset[str]] = {
    ThresholdStage.KEYGEN: frozenset({"stage", "payload"}),
    ThresholdStage.JOINT: frozenset({"stage", "payload", "count"}),
    ThresholdStage.BACKUP: frozenset({"stage", "payload"}),
    ThresholdStage.ENCRYPT: frozenset({"stage", "payload", "layout"}),
    ThresholdStage.DECRYPT: frozenset({"stage", "payload"}),
    ThresholdStage.RELEASE: frozenset({"stage", "payload"}),
    ThresholdStage.RECOVER: frozenset({"stage", "payload"}),
}
_MAX_LIST = 1 << 16


def _unpack_list(data: bytes, count: int, where: str) -> list[bytes]:
    return unpack_list(data, count, where, limit=_MAX_LIST)


def fedavg_error_bound(params: ThresholdParams, weights: Iterable[float], max_weight: float) -> float:
    """Worst-case error of one round's FedAvg average (per coordinate, ``|w/M x| <= clip``).

    The fused numerator ``A = S + e1`` and denominator ``B = W + e2`` (``S = sum w/M x``,
    ``W = sum w/M``) each carry at most ``E = params.sum_error_bound() / M`` (the nodes
    encrypt ``M`` times these sums), so
    ``|A/B - S/W| <= E (W + |S|) / (W (W - E))`` with ``|S| <= n clip``; float32 rounding of
    the result adds ``2^-22`` relative to the average's magnitude (at most ``n clip / W``).
    """
    ws = [float(w) / max_weight for w in weights]
    e = params.sum_error_bound() / max_weight
    w = math.fsum(ws)
    s = len(ws) * params.clip
    if not w > e:
        raise ValueError("the total weight is below the decryption error: no bound")
    return e * (w + s) / (w * (w - e)) + (s / w) * 2.0**-22


# ============================================================================ client side
class ThresholdMod(StagedMod):
    """A Flower ClientApp mod: the node side of threshold CKKS (key holder and client).

    Math and threat model: those of :class:`~fedcrypt.he.threshold.KeyHolder` (OpenFHE's
    threshold CKKS: Asharov et al. EUROCRYPT 2012 key chain, flooded partial decryptions
    after Li and Micciancio 2021). The mod adds what a transport owes the protocol: records
    and fields exactly as the wire format says, this node really at its claimed position
    of the committee, one upload per round id, state written back only on success.

    Args:
        allow_plaintext: pass a ``train`` message without fedcrypt's record straight to the
            app; ``False`` (default) refuses it, so a server cannot quietly collect a
            cleartext update.
        min_clients: this holder decrypts only aggregates claiming at least this many
            uploads (a server's claim, see the module docstring).
        weight_key: the MetricRecord key of the FedAvg weight.
        require_flooding: refuse parameters without noise flooding (default ``True``: an
            unflooded partial decryption leaks the key share).
        state_key_path: the key file that seals the key holder (key share included) in
            ``Context.state`` (node config ``fedcrypt-state-key`` takes precedence, then the
            identity key ``fedcrypt-identity``, then the default key file: see
            :mod:`fedcrypt.integrations._flower_state`).
    """

    RECORD = RECORD
    STAGES = ThresholdStage
    REQUEST_FIELDS = _REQUEST_FIELDS
    SENDS = "this node only sends encrypted updates"
    TRAIN_STAGE = ThresholdStage.ENCRYPT
    HANDLERS = {
        ThresholdStage.KEYGEN: "_keygen",
        ThresholdStage.JOINT: "_joint",
        ThresholdStage.BACKUP: "_backup",
        ThresholdStage.ENCRYPT: "_encrypt",
        ThresholdStage.DECRYPT: "_decrypt",
        ThresholdStage.RELEASE: "_release",
        ThresholdStage.RECOVER: "_recover",
    }

    def __init__(
        self,
        *,
        allow_plaintext: bool = False,
        min_clients: int = 2,
        weight_key: str = "num-examples",
        require_flooding: bool = True,
        state_key_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(allow_plaintext, bool):
            raise TypeError(f"allow_plaintext must be a bool, got {type(allow_plaintext).__name__}")
        if not isinstance(require_flooding, bool):
            raise TypeError(f"require_flooding must be a bool, got {type(require_flooding).__name__}")
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 2:
            raise ValueError(f"min_clients must be an integer >= 2, got {min_clients!r}")
        self.allow_plaintext = allow_plaintext
        self.min_clients = min_clients
        self.weight_key = weight_key
        self.require_flooding = require_flooding
        if state_key_path is not None and not isinstance(state_key_path, (str, os.PathLike)):
            raise TypeError(f"state_key_path must be a path or None, got {type(state_key_path).__name__}")
        self.state_key_path = None if state_key_path is None else os.fspath(state_key_path)

    def __repr__(self) -> str:
        return (
            f"ThresholdMod(allow_plaintext={self.allow_plaintext}, min_clients={self.min_clients}, "
            f"require_flooding={self.require_flooding})"
        )

    def _node(self, msg: "Message", ctxt: "Context") -> int:
        return ctxt.node_id

    def _check_train_records(self, msg: "Message", node: int, stage: ThresholdStage, where: str) -> None:
        """Checked in :meth:`_encrypt`, after the request's own fields."""

    # ------------------------------------------------------------------ state
    def _load(self, ctxt: "Context", stage: ThresholdStage) -> tuple[KeyHolder, int]:
        """The node's key holder and last upload round, opened from ``Context.state``."""
        if STATE not in ctxt.state.keys():
            raise UnexpectedMessageError(
                f"a {stage.name} message to a node that holds no threshold key share", party=ctxt.node_id, stage=stage
            )
        where = f"{STATE} of node {ctxt.node_id}"
        key = node_state_key(ctxt, key_path=self.state_key_path)
        holder, encrypted = unpack_list(open_record(ctxt, key, STATE), 2, where)
        if len(encrypted) != _ENCRYPTED.size:
            raise MalformedMessageError(f"{where}: bad field lengths", party=ctxt.node_id)
        return KeyHolder.from_state_bytes(holder), _ENCRYPTED.unpack(encrypted)[0]

    def _save(self, ctxt: "Context", holder: KeyHolder, encrypted: int) -> None:
        """Seal the key holder (key share included) into ``Context.state`` under the node's state key."""
        key = node_state_key(ctxt, key_path=self.state_key_path)
        plain = _pack_list([holder.to_state_bytes(), _ENCRYPTED.pack(encrypted)])
        ctxt.state[STATE] = ConfigRecord(seal_record(ctxt, key, STATE, plain))

    # ------------------------------------------------------------------ stages
    def _keygen(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: _Next
    ) -> dict[str, Any]:
        where = f"key generation message to node {ctxt.node_id}"
        params = ThresholdParams.from_bytes(bytes_field(record, "params", where))
        if self.require_flooding and not params.flooding:
            raise ProtocolViolationError(f"{where}: parameters without noise flooding are refused", party=ctxt.node_id)
        session = bytes_field(record, "session", where)
        party = _int_field(record, "party", where)
        nodes = unpack_nodes(bytes_field(record, "nodes", where))
        if len(nodes) != params.num_parties or not 0 <= party < len(nodes) or nodes[party] != msg.metadata.dst_node_id:
            raise UnexpectedMessageError(
                f"{where}: this node is not key holder {party} of the {len(nodes)}-node committee",
                party=ctxt.node_id, stage=ThresholdStage.KEYGEN,
            )
        if STATE in ctxt.state.keys():
            current, _ = self._load(ctxt, ThresholdStage.KEYGEN)
            if hmac.compare_digest(current.session, session):
                raise UnexpectedMessageError(f"{where}: this node already ran key generation for this session (replay)", party=ctxt.node_id)
        try:
            holder = KeyHolder(params, party, session, min_contributions=self.min_clients)
        except ValueError as exc:
            raise MalformedMessageError(f"{where}: {exc}", party=ctxt.node_id) from None
        link = holder.generate_key_share(payload or None)
        self._save(ctxt, holder, -1)
        return {"payload": link.to_bytes()}

    def _joint(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: _Next
    ) -> dict[str, Any]:
        holder, encrypted = self._load(ctxt, ThresholdStage.JOINT)
        roster = bytes_field(record, "roster", f"joint key message to node {ctxt.node_id}")
        holder.receive_joint_key(payload)
        backups: list[bytes] = []
        if holder.params.recovery_threshold:
            holder.receive_roster(roster)
            backups = [m.to_bytes() for m in holder.backup_key()]
        elif roster:
            raise ProtocolViolationError("a roster for parameters without recovery_threshold", party=ctxt.node_id)
        self._save(ctxt, holder, encrypted)
        return {"payload": _pack_list(backups), "count": len(backups)}

    def _backup(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: _Next
    ) -> dict[str, Any]:
        holder, encrypted = self._load(ctxt, ThresholdStage.BACKUP)
        where = f"backup message to node {ctxt.node_id}"
        for item in _unpack_list(payload, _int_field(record, "count", where), where):
            holder.receive_backup(item)
        self._save(ctxt, holder, encrypted)
        return {"payload": b""}

    def _encrypt(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: _Next
    ) -> dict[str, Any]:
        holder, encrypted = self._load(ctxt, ThresholdStage.ENCRYPT)
        node, stage = ctxt.node_id, ThresholdStage.ENCRYPT
        where = f"encrypt message to node {node}"
        if payload:
            raise MalformedMessageError(f"{where}: the payload must be empty", party=node)
        if not hmac.compare_digest(bytes_field(record, "fingerprint", where), holder.fingerprint):
            raise ContextMismatchError(f"{where}: the round's key fingerprint is not this node's joint key")
        max_weight = max_weight_field(record, where, party=node)
        if round_id <= encrypted:
            raise UnexpectedMessageError(
                f"{where}: an upload for round {round_id}, but this node already uploaded for round {encrypted} (replay)",
                party=node, round=round_id, stage=stage,
            )
        train_names = [name for name in msg.content.keys() if name != RECORD]
        if not train_names:
            raise RecordMismatchError(f"{where}: no train records", missing=("<train records>",), party=node, stage=stage)
        arrays_name, metrics_name, tensors, metric_record, spec = run_app_train(
            msg, ctxt, call_next, RECORD, party=node, round_id=round_id, stage=stage, error_round=False
        )
        layout, vector = weighted_update(
            arrays_name, metrics_name, tensors, metric_record, spec,
            weight_key=self.weight_key, max_weight=max_weight, party=node, round_id=round_id, stage=stage,
        )
        if max_weight > holder.params.max_weight:
            raise ProtocolViolationError(
                f"{where}: max-weight {max_weight} exceeds the session's bound {holder.params.max_weight}", party=node
            )
        blob = holder.encrypt(vector, max_weight)  # M * w/M [x, metrics, 1], clipped before scaling
        self._save(ctxt, holder, round_id)
        return {"payload": blob, "layout": layout.to_bytes()}

    def _decrypt(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: _Next
    ) -> dict[str, Any]:
        holder, encrypted = self._load(ctxt, ThresholdStage.DECRYPT)
        share = holder.partial_decrypt(payload)
        self._save(ctxt, holder, encrypted)
        return {"payload": share.to_bytes()}

    def _release(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: _Next
    ) -> dict[str, Any]:
        holder, encrypted = self._load(ctxt, ThresholdStage.RELEASE)
        where = f"release message to node {ctxt.node_id}"
        if payload:
            raise MalformedMessageError(f"{where}: the payload must be empty", party=ctxt.node_id)
        released = holder.release_backup(_int_field(record, "dropped", where), _int_field(record, "stand-in", where))
        self._save(ctxt, holder, encrypted)
        return {"payload": released.to_bytes()}

    def _recover(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: _Next
    ) -> dict[str, Any]:
        holder, encrypted = self._load(ctxt, ThresholdStage.RECOVER)
        where = f"recover message to node {ctxt.node_id}"
        released = _unpack_list(payload, _int_field(record, "count", where), where)
        share = holder.recover_share(_int_field(record, "dropped", where), bytes_field(record, "aggregate", where), released)
        self._save(ctxt, holder, encrypted)
        return {"payload": share.to_bytes()}


#: The default mod: ``ClientApp(mods=[threshold_mod])``.
threshold_mod = ThresholdMod()


# ============================================================================ server side
@dataclass
class ThresholdRoundReport(ReportDict):
    """What happened in one threshold-CKKS round (public information only).

    Attributes:
        round: the strategy's server round.
        nodes: the round's node ids, ascending.
        committee: the key holders' node ids, in party order.
        survivors: nodes whose encrypted updates are in the aggregate.
        dropped: node id -> the stage it stopped answering in (or was refused in).
        refused: node id -> why its message was refused (a typed error's text).
        stood_in: dropped key holder's node id -> the node that stood in for it (t-of-n).
        stage_seconds: wall time per stage name.
        aborted: ``"ErrorType: why"`` when the round returned no reply, else ``None``.
        bytes_down: payload bytes the server sent (train records excluded).
        bytes_up: payload bytes the server received.
    """

    round: int
    nodes: list[int]
    committee: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    stood_in: dict[int, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    aborted: str | None = None
    bytes_down: int = 0
    bytes_up: int = 0


class ThresholdWorkflow(StagedWorkflow):
    """The server side of threshold CKKS over a Flower ``Grid``.

    Math: the server relays the key chain, computes ``sum_u ct_u`` (each upload already
    carries ``w_u/M``), collects one flooded partial decryption per key holder and fuses
    them (:class:`~fedcrypt.he.threshold.ThresholdServer`); the strategy gets
    ``sum(w x) / sum(w)``.

    Threat model: see the module docstring; this class never holds a key share. It treats
    silent nodes as dropped after ``stage_timeout`` seconds and aborts a round it cannot
    finish safely (no reply; the report says why).

    Args:
        preset: the :class:`~fedcrypt.he.threshold.ThresholdParams` preset (``"wide"``:
            capacity ``capacity * clip <= 2^57``; ``"compact"``: ``<= 128``, half the bytes).
        clip: L-infinity clip of a weighted coordinate ``w/M * x``.
        capacity: the most uploads one aggregate may hold.
        max_weight: ``M``, the largest FedAvg weight a node may claim.
        recovery_threshold: ``t`` of the t-of-n key backup (0: n-of-n, a key-holder
            dropout aborts the round); must be in ``(n/2, n)`` for the ``n``-node committee.
        stage_timeout: seconds to wait for the replies of one stage.
        train_timeout: seconds to wait at the encrypt stage (nodes train then); default the
            strategy's timeout, else ``stage_timeout``.
        min_clients: rounds with fewer sampled nodes or fewer uploads return no reply.
    """

    RECORD = RECORD
    REPLY_FIELDS = _REPLY_FIELDS
    REPORT = ThresholdRoundReport
    LABEL = "threshold"
    LOG = log

    def __init__(
        self,
        *,
        preset: str = "wide",
        clip: float = 4.0,
        capacity: int = 100,
        max_weight: float = 1000.0,
        recovery_threshold: int = 0,
        stage_timeout: float = 60.0,
        train_timeout: float | None = None,
        min_clients: int = 2,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown threshold CKKS preset {preset!r}; known: {sorted(PRESETS)}")
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {clip!r}")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 2:
            raise ValueError(f"capacity must be an integer >= 2, got {capacity!r}")
        if isinstance(max_weight, bool) or not isinstance(max_weight, (int, float)) or not (math.isfinite(max_weight) and max_weight > 0):
            raise ValueError(f"max_weight must be a positive finite number, got {max_weight!r}")
        if not isinstance(recovery_threshold, int) or isinstance(recovery_threshold, bool) or recovery_threshold < 0:
            raise ValueError(f"recovery_threshold must be a non-negative integer, got {recovery_threshold!r}")
        for name, value in (("stage_timeout", stage_timeout), ("train_timeout", train_timeout)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 2:
            raise ValueError(f"min_clients must be an integer >= 2, got {min_clients!r}")
        # fail now, not in round 1, on a capacity the preset cannot hold
        ThresholdParams(
            *PRESETS[preset], num_parties=2, num_clients=capacity, clip=float(clip),
            max_weight=math.ceil(max_weight), flooding=False,
        )
        self.preset = preset
        self.clip = float(clip)
        self.capacity = capacity
        self.max_weight = float(max_weight)
        self.recovery_threshold = recovery_threshold
        self.stage_timeout = float(stage_timeout)
        self.train_timeout = None if train_timeout is None else float(train_timeout)
        self.min_clients = min_clients
        self.reports: list[ThresholdRoundReport] = []
        self._server: ThresholdServer | None = None
        self._committee: list[int] = []
        self._round_counter = 0

    def __repr__(self) -> str:
        return (
            f"ThresholdWorkflow(preset={self.preset!r}, clip={self.clip}, capacity={self.capacity}, "
            f"max_weight={self.max_weight}, recovery_threshold={self.recovery_threshold}, "
            f"committee={len(self._committee)})"
        )

    @property
    def params(self) -> ThresholdParams | None:
        """The session's parameters (``None`` before key generation)."""
        return None if self._server is None else self._server.params

    @property
    def committee(self) -> tuple[int, ...]:
        """The key holders' node ids, in party order (empty before key generation)."""
        return tuple(self._committee)

    # ------------------------------------------------------------------ one round
    def _round(
        self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: ThresholdRoundReport,
        train_timeout: float,
    ) -> "Message":
        """One threshold-CKKS round over at least ``min_clients`` nodes (see :meth:`aggregate`)."""
        if self._server is None:
            self._key_generation(grid, nodes, round_id, report)
        assert self._server is not None
        report.committee = list(self._committee)
        layout, aggregate, survivors = self._encrypt(grid, by_node, round_id, report, train_timeout)
        report.survivors = survivors
        total = self._decrypt(grid, aggregate, round_id, report)
        return average_reply(
            layout, total, max_weight=self.max_weight, run_id=grid.run.run_id, group=str(round_id),
            stage=ThresholdStage.DECRYPT,
        )

    # ------------------------------------------------------------------ key generation
    def _key_generation(self, grid: "Grid", nodes: list[int], round_id: int, report: ThresholdRoundReport) -> None:
        """KEYGEN (one holder at a time), JOINT, and BACKUP (t-of-n) with the round's nodes."""
        t = self.recovery_threshold
        if t and not len(nodes) // 2 < t < len(nodes):
            raise _Abort(RoundAbortedError(
                f"recovery_threshold={t} does not fit a committee of {len(nodes)} nodes "
                f"(t must be in [{len(nodes) // 2 + 1}, {len(nodes) - 1}])", round=round_id
            ))
        params = ThresholdParams.preset(
            self.preset, num_parties=len(nodes), num_clients=self.capacity, clip=self.clip,
            max_weight=math.ceil(self.max_weight), recovery_threshold=t,
        )
        server = ThresholdServer(params)
        common = {"params": params.to_bytes(), "session": server.session, "nodes": pack_nodes(nodes)}
        stage = ThresholdStage.KEYGEN
        joint: KeyShareMessage | None = None
        for party, node in enumerate(nodes):
            previous = server.key_input_for(party)
            request = {**common, "party": party, "payload": b"" if previous is None else previous.to_bytes()}
            replies = self._exchange(grid, stage, {node: request}, round_id, report, self.stage_timeout)
            if node not in replies:
                raise _Abort(RoundAbortedError(
                    f"key holder {party} (node {node}) did not complete key generation; the next round starts a new session",
                    party=party, round=round_id, stage=stage,
                ))
            try:
                joint = server.receive_key_share(bytes_field(replies[node], "payload", f"reply from node {node}"))
            except FedcryptError as exc:
                self._refuse(report, node, stage, exc)
                raise _Abort(RoundAbortedError(f"key generation failed at holder {party}: {exc}", round=round_id, stage=stage)) from None
        assert joint is not None
        stage = ThresholdStage.JOINT
        roster = server.roster_message().to_bytes() if t else b""
        requests = {node: {"payload": joint.to_bytes(), "roster": roster} for node in nodes}
        replies = self._exchange(grid, stage, requests, round_id, report, self.stage_timeout)
        missing = [node for node in nodes if node not in replies]
        if missing:
            raise _Abort(RoundAbortedError(f"key holders {missing} did not accept the joint key", round=round_id, stage=stage))
        if t:
            self._route_backups(grid, server, nodes, replies, round_id, report)
        self._server, self._committee = server, list(nodes)

    def _route_backups(
        self, grid: "Grid", server: ThresholdServer, nodes: list[int], replies: dict[int, ConfigRecord],
        round_id: int, report: ThresholdRoundReport,
    ) -> None:
        params = server.params
        inbox: dict[int, list[bytes]] = {node: [] for node in nodes}
        for party, node in enumerate(nodes):
            where = f"reply from node {node}"
            try:
                items = _unpack_list(bytes_field(replies[node], "payload", where), _int_field(replies[node], "count", where), where)
                if len(items) != len(nodes) - 1:
                    raise MalformedMessageError(f"{where}: {len(items)} backups, expected {len(nodes) - 1}")
                for item in items:
                    message = KeyBackupMessage.from_bytes(item, params)
                    if message.sender != party or message.subject != party:
                        raise UnexpectedMessageError(f"{where}: a backup of holder {message.subject} sent as holder {party}")
                    inbox[nodes[message.recipient]].append(item)
            except FedcryptError as exc:
                self._refuse(report, node, ThresholdStage.JOINT, exc)
                raise _Abort(RoundAbortedError(f"key backup failed at holder {party}: {exc}", round=round_id)) from None
        stage = ThresholdStage.BACKUP
        requests = {node: {"payload": _pack_list(items), "count": len(items)} for node, items in inbox.items()}
        replies = self._exchange(grid, stage, requests, round_id, report, self.stage_timeout)
        missing = [node for node in nodes if node not in replies]
        if missing:
            raise _Abort(RoundAbortedError(f"key holders {missing} did not store their backups", round=round_id, stage=stage))

    # ------------------------------------------------------------------ upload and sum
    def _encrypt(
        self, grid: "Grid", by_node: dict[int, "Message"], round_id: int, report: ThresholdRoundReport, timeout: float
    ) -> tuple[Layout, bytes, list[int]]:
        server = self._server
        assert server is not None
        stage = ThresholdStage.ENCRYPT
        members = [node for node in sorted(by_node) if node in self._committee]
        for node in sorted(by_node):
            if node not in self._committee:
                self._refuse(report, node, stage, UnexpectedMessageError(f"node {node} is not a key holder of this session"))
        requests = {node: {"payload": b"", "fingerprint": server.fingerprint, "max-weight": self.max_weight} for node in members}
        extra = {node: RecordDict({name: by_node[node].content[name] for name in by_node[node].content.keys()}) for node in members}
        replies = self._exchange(grid, stage, requests, round_id, report, timeout, extra)
        total = server.start()
        layout: Layout | None = None
        survivors = []
        for node in members:
            if node not in replies:
                continue
            where = f"reply from node {node}"
            try:
                node_layout = Layout.from_bytes(bytes_field(replies[node], "layout", where))
                if node_layout.ring_length:
                    raise MalformedMessageError(f"{where}: a distributed-DP layout is not accepted here")
                if layout is not None and node_layout != layout:
                    raise UnexpectedMessageError(f"{where}: its model layout differs from the other nodes'")
                total.add(bytes_field(replies[node], "payload", where), self.max_weight)
                if layout is None:
                    layout = node_layout
                survivors.append(node)
            except FedcryptError as exc:
                self._refuse(report, node, stage, exc)
        if layout is None or len(survivors) < self.min_clients:
            raise _Abort(RoundAbortedError(
                f"{len(survivors)} uploads, fewer than min_clients={self.min_clients}", round=round_id, stage=stage
            ))
        return layout, total.finish(), survivors

    # ------------------------------------------------------------------ decryption
    def _decrypt(self, grid: "Grid", aggregate: bytes, round_id: int, report: ThresholdRoundReport) -> np.ndarray:
        server = self._server
        assert server is not None
        stage = ThresholdStage.DECRYPT
        committee = self._committee
        decryption = server.start_decryption(aggregate)
        replies = self._exchange(grid, stage, {node: {"payload": aggregate} for node in committee}, round_id, report, self.stage_timeout)
        for party, node in enumerate(committee):
            if node in replies and not self._take_share(decryption, replies[node], party, node, stage, report):
                del replies[node]
        gone = [party for party, node in enumerate(committee) if node not in replies]
        if gone:
            decryption.mark_dropped(gone)  # RoundAbortedError unless t-of-n can stand in
            self._stand_in(grid, decryption, aggregate, gone, round_id, report)
        return decryption.fuse() / self.max_weight

    def _take_share(
        self, decryption: ThresholdDecryption, record: ConfigRecord, party: int, node: int, stage: ThresholdStage,
        report: ThresholdRoundReport,
    ) -> bool:
        where = f"reply from node {node}"
        try:
            raw = bytes_field(record, "payload", where)
            share = DecryptionShare.from_bytes(raw, decryption.params, ciphertext_count=decryption.ciphertext_count)
            if share.party != party:
                raise UnexpectedMessageError(f"{where}: a share of holder {share.party}, expected holder {party}")
            decryption.receive_share(share)
            return True
        except FedcryptError as exc:
            self._refuse(report, node, stage, exc)
            return False

    def _stand_in(
        self, grid: "Grid", decryption: ThresholdDecryption, aggregate: bytes, gone: list[int], round_id: int,
        report: ThresholdRoundReport,
    ) -> None:
        """t-of-n: a surviving holder rebuilds each dropped holder's share (RELEASE, RECOVER)."""
        params = decryption.params
        committee = self._committee
        alive = [party for party in range(params.num_parties) if party not in gone]
        stand_in, helpers = alive[0], alive[1 : params.recovery_threshold]
        for dropped in gone:
            stage = ThresholdStage.RELEASE
            requests = {committee[h]: {"payload": b"", "dropped": dropped, "stand-in": stand_in} for h in helpers}
            replies = self._exchange(grid, stage, requests, round_id, report, self.stage_timeout)
            released = []
            for helper in helpers:
                node = committee[helper]
                if node not in replies:
                    raise _Abort(RoundAbortedError(f"helper {helper} did not release its backup of holder {dropped}", round=round_id, stage=stage))
                released.append(bytes_field(replies[node], "payload", f"reply from node {node}"))
            stage = ThresholdStage.RECOVER
            request = {"payload": _pack_list(released), "count": len(released), "dropped": dropped, "aggregate": aggregate}
            node = committee[stand_in]
            replies = self._exchange(grid, stage, {node: request}, round_id, report, self.stage_timeout)
            if node not in replies or not self._take_share(decryption, replies[node], dropped, node, stage, report):
                raise _Abort(RoundAbortedError(f"the stand-in for holder {dropped} did not deliver its share", round=round_id, stage=stage))
            report.stood_in[committee[dropped]] = node


class ThresholdGrid(SecAggGrid):
    """A ``Grid`` that turns a strategy's train round into a fedcrypt threshold-CKKS round.

    Every other call goes to the wrapped grid unchanged.
    ``strategy.start(grid=ThresholdGrid(grid, ThresholdWorkflow()), ...)`` is the whole
    change a ServerApp needs; the ClientApp adds :data:`threshold_mod`.

    Args:
        grid: the ServerApp's grid.
        workflow: the threshold-CKKS settings; default ``ThresholdWorkflow()``.
    """

    def __init__(self, grid: "Grid", workflow: ThresholdWorkflow | None = None) -> None:
        if workflow is not None and not isinstance(workflow, ThresholdWorkflow):
            raise TypeError(f"workflow must be a ThresholdWorkflow, got {type(workflow).__name__}")
        super().__init__(grid, workflow if workflow is not None else ThresholdWorkflow())  # type: ignore[arg-type]
