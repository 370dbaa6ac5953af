"""Threshold CKKS for Flower's Message API (extras ``threshold`` and ``flower``): a transport
over :mod:`fedcrypt.he.threshold` (:class:`~fedcrypt.he.threshold.KeyHolder` on the nodes,
:class:`~fedcrypt.he.threshold.ThresholdServer` on the server). OpenFHE's wheels are CPython
3.10 only (``scripts/setup_py310.sh``); there the index serves flwr up to 1.30, which this
module is tested with.

* :class:`ThresholdMod` (instance :data:`threshold_mod`): the node is a key holder and a
  client. It runs its link of the key chain, keeps its key holder (key share included)
  sealed in ``Context.state`` (:mod:`._state`), runs the app's own ``@app.train`` at
  ENCRYPT and uploads only the ciphertext, and partially decrypts each aggregate once.
* :class:`ThresholdGrid` (with :class:`ThresholdWorkflow` inside): a strategy's train round
  becomes a threshold-CKKS round; uploads and decryption shares are folded as they arrive;
  the strategy receives one reply with the weighted average and the total weight.

Messages (one ConfigRecord :data:`RECORD`, fields ``stage``, ``round``, ``payload`` and)::

    KEYGEN   server -> holder i (in turn)  previous holder's KeyShareMessage, params, session, party, nodes
             holder -> server              its KeyShareMessage
    JOINT    server -> holders             the joint key, roster (RosterMessage; b"" without recovery)
             holder -> server              its KeyBackupMessages (t-of-n, else none), count
    BACKUP   server -> holder              the backups addressed to it, count;  reply: b""
    ENCRYPT  server -> holders             b"", fingerprint, max-weight (+ the strategy's train records)
             holder -> server              upload blob, layout
    DECRYPT  server -> holders             the aggregate;  reply: its DecryptionShare
    RELEASE  server -> helper              b"", dropped, stand-in;  reply: its backup for the stand-in
    RECOVER  server -> stand-in            released backups, count, dropped, aggregate;  reply: the share

KEYGEN, JOINT and BACKUP run once per session (the committee is the first round's nodes).
Weighting: a node with weight ``w`` encrypts ``M * w/M [x, metrics, 1]`` (``KeyHolder.encrypt(v,
weight=M)``), so the fused sum divided by ``M`` is ``sum(w/M [x, metrics, 1])`` and the
strategy gets ``sum(w x) / sum(w)`` within :func:`fedavg_error_bound`. Dropouts: a node
that does not upload only leaves the sum; a key holder missing at DECRYPT is stood in for
(t-of-n, RELEASE then RECOVER) or the round ends without a reply.

Threat model (semi-honest server and holders, as :mod:`fedcrypt.he.threshold`): no
coalition of fewer than ``n`` holders (``t`` with recovery) and the server decrypts an
upload; blob headers are the server's claim (a malicious server can present one upload as
an aggregate). The threshold round's sans-IO core (:mod:`fedcrypt.he.threshold.round`) is
where stand-ins and backup routing belong once it exists; this module still decides them.

Invariants: the server never holds a key share (backup pieces are AES-GCM-encrypted to their
recipient); a node writes its key holder back only after a message was handled; a node
uploads once per round id and partially decrypts each aggregate once; a KEYGEN for the
session a node holds is a replay; nothing a node sends ends the run; nothing secret is
logged, put in an error or a ``repr``.
"""

from __future__ import annotations

import enum
import hmac
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from fedcrypt.errors import (
    ContextMismatchError,
    MalformedMessageError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)
from fedcrypt.he.threshold import (
    PRESETS,
    DecryptionShare,
    KeyBackupMessage,
    KeyHolder,
    ThresholdDecryption,
    ThresholdParams,
    ThresholdServer,
    load_openfhe,
)

load_openfhe()  # MissingExtraError naming 'threshold' and the Pythons

from ._common import (  # noqa: E402 - after the extra check
    Abort,
    Layout,
    ReportDict,
    RoundWorkflow,
    StagedMod,
    WorkflowGrid,
    _Next,
    average_reply,
    bytes_field,
    flat_update,
    int_field,
    pack_list,
    pack_nodes,
    run_app_train,
    unpack_list,
    unpack_nodes,
    weighted,
)
from ._state import keep, kept, node_state_key  # noqa: E402

from flwr.app import ConfigRecord, Context, Message  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

__all__ = [
    "RECORD", "STATE", "ThresholdStage", "ThresholdMod", "threshold_mod", "ThresholdWorkflow", "ThresholdGrid",
    "ThresholdRoundReport", "fedavg_error_bound",
]

#: Name of the ConfigRecord that carries the threshold-CKKS messages.
RECORD = "fedcrypt.threshold"
#: Name of the sealed record in ``Context.state`` with the node's key holder (SECRET) and replay guard.
STATE = "fedcrypt.threshold.state"

_ENCRYPTED = struct.Struct(">q")  # the last round this node uploaded for (-1: none)
_MAX_LIST = 1 << 16


class ThresholdStage(enum.Enum):
    """The stages of threshold CKKS over Flower (see the module docstring)."""

    KEYGEN = "KEYGEN"
    JOINT = "JOINT"
    BACKUP = "BACKUP"
    ENCRYPT = "ENCRYPT"
    DECRYPT = "DECRYPT"
    RELEASE = "RELEASE"
    RECOVER = "RECOVER"


def _fields(*names: str) -> frozenset[str]:
    return frozenset({"stage", "round", "payload", *names})


_REQUEST_FIELDS = {
    "KEYGEN": _fields("params", "session", "party", "nodes"), "JOINT": _fields("roster"), "BACKUP": _fields("count"),
    "ENCRYPT": _fields("fingerprint", "max-weight"), "DECRYPT": _fields(), "RELEASE": _fields("dropped", "stand-in"),
    "RECOVER": _fields("count", "dropped", "aggregate"),
}


def fedavg_error_bound(params: ThresholdParams, weights: Iterable[float], max_weight: float) -> float:
    """Worst-case error of one round's FedAvg average (per coordinate, ``|w/M x| <= clip``).

    The fused numerator ``A = S + e1`` and denominator ``B = W + e2`` (``S = sum w/M x``,
    ``W = sum w/M``) each carry at most ``E = params.sum_error_bound() / M`` (the nodes
    encrypt ``M`` times these sums), so ``|A/B - S/W| <= E (W + |S|) / (W (W - E))`` with
    ``|S| <= n clip``; float32 rounding adds ``2^-22`` relative to ``n clip / W``.
    """
    ws = [float(w) / max_weight for w in weights]
    e = params.sum_error_bound() / max_weight
    w = math.fsum(ws)
    s = len(ws) * params.clip
    if not w > e:
        raise ValueError("the total weight is below the decryption error: no bound")
    return e * (w + s) / (w * (w - e)) + (s / w) * 2.0**-22


def _list(data: bytes, count: int, where: str) -> list[bytes]:
    return unpack_list(data, count, where, limit=_MAX_LIST)


# ============================================================================ node side
class ThresholdMod(StagedMod):
    """A Flower ClientApp mod: the node side of threshold CKKS (key holder and client).

    Math and threat model: those of :class:`~fedcrypt.he.threshold.KeyHolder` (OpenFHE's
    threshold CKKS: Asharov et al. EUROCRYPT 2012 key chain, flooded partial decryptions
    after Li and Micciancio 2021).

    Args:
        allow_plaintext: pass a train message without :data:`RECORD` to the app; default ``False``.
        min_clients: this holder decrypts only aggregates claiming at least this many uploads.
        weight_key: the MetricRecord key of the FedAvg weight.
        require_flooding: refuse parameters without noise flooding (default ``True``).
        state_key_path: the key file that seals the key holder (node config
            ``fedcrypt-state-key`` first; see :mod:`._state`).
    """

    RECORD = RECORD
    STAGES = ThresholdStage
    SENDS = "this node only sends encrypted updates"
    TRAIN_STAGE = ThresholdStage.ENCRYPT
    LABEL = "threshold"
    REQUEST_FIELDS = _REQUEST_FIELDS

    def __init__(
        self,
        *,
        allow_plaintext: bool = False,
        min_clients: int = 2,
        weight_key: str = "num-examples",
        require_flooding: bool = True,
        state_key_path: str | os.PathLike[str] | None = None,
    ) -> None:
        for name, value in (("allow_plaintext", allow_plaintext), ("require_flooding", require_flooding)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 2:
            raise ValueError(f"min_clients must be an integer >= 2, got {min_clients!r}")
        if state_key_path is not None and not isinstance(state_key_path, (str, os.PathLike)):
            raise TypeError(f"state_key_path must be a path or None, got {type(state_key_path).__name__}")
        self.allow_plaintext, self.min_clients, self.weight_key = allow_plaintext, min_clients, weight_key
        self.require_flooding = require_flooding
        self.state_key_path = None if state_key_path is None else os.fspath(state_key_path)

    def __repr__(self) -> str:
        return (
            f"ThresholdMod(allow_plaintext={self.allow_plaintext}, min_clients={self.min_clients}, "
            f"require_flooding={self.require_flooding})"
        )

    def _handle(self, msg: "Message", ctxt: "Context", record: ConfigRecord, stage: ThresholdStage, call_next: _Next) -> dict[str, Any]:
        where = f"server message to node {ctxt.node_id}"
        round_id, payload = int_field(record, "round", where), bytes_field(record, "payload", where)
        if stage is ThresholdStage.KEYGEN:
            return self._keygen(msg, ctxt, record, payload)
        holder, encrypted = self._load(ctxt, stage)
        if stage is ThresholdStage.ENCRYPT:
            fields = self._encrypt(msg, ctxt, record, round_id, payload, call_next, holder, encrypted)
            encrypted = round_id
        elif stage is ThresholdStage.JOINT:
            holder.receive_joint_key(payload)
            roster, backups = bytes_field(record, "roster", where), []
            if holder.params.recovery_threshold:
                holder.receive_roster(roster)
                backups = [m.to_bytes() for m in holder.backup_key()]
            elif roster:
                raise ProtocolViolationError("a roster for parameters without recovery_threshold", party=ctxt.node_id)
            fields = {"payload": pack_list(backups), "count": len(backups)}
        elif stage is ThresholdStage.BACKUP:
            for item in _list(payload, int_field(record, "count", where), where):
                holder.receive_backup(item)
            fields = {"payload": b""}
        elif stage is ThresholdStage.DECRYPT:
            fields = {"payload": holder.partial_decrypt(payload).to_bytes()}
        elif stage is ThresholdStage.RELEASE:
            if payload:
                raise MalformedMessageError(f"{where}: the payload must be empty", party=ctxt.node_id)
            released = holder.release_backup(int_field(record, "dropped", where), int_field(record, "stand-in", where))
            fields = {"payload": released.to_bytes()}
        else:  # RECOVER
            released_list = _list(payload, int_field(record, "count", where), where)
            share = holder.recover_share(int_field(record, "dropped", where), bytes_field(record, "aggregate", where), released_list)
            fields = {"payload": share.to_bytes()}
        self._save(ctxt, holder, encrypted)
        return fields

    def _load(self, ctxt: "Context", stage: ThresholdStage) -> tuple[KeyHolder, int]:
        """The node's key holder and last upload round, opened from ``Context.state``."""
        state = kept(ctxt, node_state_key(ctxt, key_path=self.state_key_path), STATE)
        if state is None:
            raise UnexpectedMessageError(f"a {stage.name} message to a node that holds no threshold key share", party=ctxt.node_id, stage=stage)
        holder, encrypted = unpack_list(state, 2, f"{STATE} of node {ctxt.node_id}")
        if len(encrypted) != _ENCRYPTED.size:
            raise MalformedMessageError(f"{STATE} of node {ctxt.node_id}: bad field lengths", party=ctxt.node_id)
        return KeyHolder.from_state_bytes(holder), _ENCRYPTED.unpack(encrypted)[0]

    def _save(self, ctxt: "Context", holder: KeyHolder, encrypted: int) -> None:
        """Seal the key holder (key share included) into ``Context.state`` under the node's state key."""
        key = node_state_key(ctxt, key_path=self.state_key_path)
        keep(ctxt, key, STATE, pack_list([holder.to_state_bytes(), _ENCRYPTED.pack(encrypted)]))

    def _keygen(self, msg: "Message", ctxt: "Context", record: ConfigRecord, payload: bytes) -> dict[str, Any]:
        where = f"key generation message to node {ctxt.node_id}"
        params = ThresholdParams.from_bytes(bytes_field(record, "params", where))
        if self.require_flooding and not params.flooding:
            raise ProtocolViolationError(f"{where}: parameters without noise flooding are refused", party=ctxt.node_id)
        session, party = bytes_field(record, "session", where), int_field(record, "party", where)
        nodes = unpack_nodes(bytes_field(record, "nodes", where))
        if len(nodes) != params.num_parties or not 0 <= party < len(nodes) or nodes[party] != msg.metadata.dst_node_id:
            raise UnexpectedMessageError(
                f"{where}: this node is not key holder {party} of the {len(nodes)}-node committee",
                party=ctxt.node_id, stage=ThresholdStage.KEYGEN,
            )
        if STATE in ctxt.state.keys() and hmac.compare_digest(self._load(ctxt, ThresholdStage.KEYGEN)[0].session, session):
            raise UnexpectedMessageError(f"{where}: this node already ran key generation for this session (replay)", party=ctxt.node_id)
        try:
            holder = KeyHolder(params, party, session, min_contributions=self.min_clients)
        except ValueError as exc:
            raise MalformedMessageError(f"{where}: {exc}", party=ctxt.node_id) from None
        link = holder.generate_key_share(payload or None)
        self._save(ctxt, holder, -1)
        return {"payload": link.to_bytes()}

    def _encrypt(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: _Next,
        holder: KeyHolder, encrypted: int,
    ) -> dict[str, Any]:
        node, stage, where = ctxt.node_id, ThresholdStage.ENCRYPT, f"encrypt message to node {ctxt.node_id}"
        if payload:
            raise MalformedMessageError(f"{where}: the payload must be empty", party=node)
        if not hmac.compare_digest(bytes_field(record, "fingerprint", where), holder.fingerprint):
            raise ContextMismatchError(f"{where}: the round's key fingerprint is not this node's joint key")
        max_weight = record["max-weight"]
        if not isinstance(max_weight, float) or not (math.isfinite(max_weight) and max_weight > 0):
            raise MalformedMessageError(f"{where}: max-weight must be a positive float", party=node)
        if round_id <= encrypted:
            raise UnexpectedMessageError(
                f"{where}: an upload for round {round_id}, but this node already uploaded for round {encrypted} (replay)",
                party=node, round=round_id, stage=stage,
            )
        if max_weight > holder.params.max_weight:
            raise ProtocolViolationError(f"{where}: max-weight {max_weight} exceeds the session's bound {holder.params.max_weight}", party=node)
        reply = run_app_train(msg, ctxt, call_next, RECORD, party=node, round_id=None, stage=stage)
        layout, values, weight = flat_update(reply, weight_key=self.weight_key, max_weight=max_weight, party=node, round_id=round_id, stage=stage)
        blob = holder.encrypt(weighted(values, weight, max_weight), max_weight)  # M * w/M [x, metrics, 1], clipped before scaling
        return {"payload": blob, "layout": layout.to_bytes()}


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
        dropped: node -> the stage it stopped answering in (or was refused in).
        refused: node -> why its message was refused (a typed error's text).
        stood_in: dropped key holder's node -> the node that stood in for it (t-of-n).
        stage_seconds: wall time per stage name.
        aborted: ``"ErrorType: why"`` when the round returned no reply, else ``None``.
        bytes_down / bytes_up: payload bytes sent / received (train records excluded).
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


class ThresholdWorkflow(RoundWorkflow):
    """The server side of threshold CKKS over a Flower ``Grid``.

    Math: the server relays the key chain, computes ``sum_u ct_u`` (each upload carries
    ``w_u/M``), collects one flooded partial decryption per key holder and fuses them
    (:class:`~fedcrypt.he.threshold.ThresholdServer`). It never holds a key share.

    Args:
        preset: the :class:`~fedcrypt.he.threshold.ThresholdParams` preset (``"wide"``:
            ``capacity * clip <= 2^57``; ``"compact"``: ``<= 128``, half the bytes).
        clip: L-infinity clip of a weighted coordinate ``w/M * x``.
        capacity: the most uploads one aggregate may hold.
        max_weight: ``M``, the largest FedAvg weight a node may claim.
        recovery_threshold: ``t`` of the t-of-n key backup (0: n-of-n); in ``(n/2, n)``.
        stage_timeout: seconds to wait for the replies of one stage.
        train_timeout: seconds to wait at ENCRYPT; default the strategy's timeout.
        min_clients: rounds with fewer sampled nodes or uploads return no reply.
        poll_interval: seconds between two pulls of replies.
    """

    RECORD = RECORD
    REPORT = ThresholdRoundReport
    LABEL = "threshold"
    REPLY_FIELDS = {"JOINT": frozenset({"stage", "payload", "count"}), "ENCRYPT": frozenset({"stage", "payload", "layout"})}

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
        poll_interval: float = 3.0,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown threshold CKKS preset {preset!r}; known: {sorted(PRESETS)}")
        for name, value in (("clip", clip), ("max_weight", max_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 2:
            raise ValueError(f"capacity must be an integer >= 2, got {capacity!r}")
        if not isinstance(recovery_threshold, int) or isinstance(recovery_threshold, bool) or recovery_threshold < 0:
            raise ValueError(f"recovery_threshold must be a non-negative integer, got {recovery_threshold!r}")
        for name, value in (("stage_timeout", stage_timeout), ("train_timeout", train_timeout), ("poll_interval", poll_interval)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 2:
            raise ValueError(f"min_clients must be an integer >= 2, got {min_clients!r}")
        ThresholdParams(  # fail now, not in round 1, on a capacity the preset cannot hold
            *PRESETS[preset], num_parties=2, num_clients=capacity, clip=float(clip), max_weight=math.ceil(max_weight), flooding=False,
        )
        super().__init__()
        self.preset, self.clip, self.capacity, self.max_weight = preset, float(clip), capacity, float(max_weight)
        self.recovery_threshold, self.min_clients = recovery_threshold, min_clients
        self.stage_timeout, self.poll_interval = float(stage_timeout), float(poll_interval)
        self.train_timeout = None if train_timeout is None else float(train_timeout)
        self._server: ThresholdServer | None = None
        self._committee: list[int] = []

    def __repr__(self) -> str:
        return (
            f"ThresholdWorkflow(preset={self.preset!r}, clip={self.clip}, capacity={self.capacity}, "
            f"max_weight={self.max_weight}, recovery_threshold={self.recovery_threshold}, committee={len(self._committee)})"
        )

    @property
    def params(self) -> ThresholdParams | None:
        """The session's parameters (``None`` before key generation)."""
        return None if self._server is None else self._server.params

    @property
    def committee(self) -> tuple[int, ...]:
        """The key holders' node ids, in party order (empty before key generation)."""
        return tuple(self._committee)

    def _send(
        self, grid: "Grid", stage: ThresholdStage, requests: dict[int, dict[str, Any]], round_id: int,
        report: ThresholdRoundReport, **options: Any,
    ) -> dict[int, Any]:
        """One stage's exchange: ``requests`` plus the stage and round fields."""
        full = {node: {**fields, "stage": stage.name, "round": round_id} for node, fields in requests.items()}
        return self._exchange(grid, stage, full, report, round_id=round_id, **options)

    def _round(
        self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: ThresholdRoundReport,
        train_timeout: float,
    ) -> "Message":
        if self._server is None:
            self._key_generation(grid, nodes, round_id, report)
        report.committee = list(self._committee)
        layout, aggregate = self._encrypt(grid, by_node, round_id, report, train_timeout)
        total = self._decrypt(grid, aggregate, round_id, report)
        return average_reply(layout, total, max_weight=self.max_weight, run_id=grid.run.run_id, group=str(round_id), stage=ThresholdStage.DECRYPT)

    def _key_generation(self, grid: "Grid", nodes: list[int], round_id: int, report: ThresholdRoundReport) -> None:
        """KEYGEN (one holder at a time), JOINT, and BACKUP (t-of-n) with the round's nodes."""
        t = self.recovery_threshold
        if t and not len(nodes) // 2 < t < len(nodes):
            raise Abort(RoundAbortedError(
                f"recovery_threshold={t} does not fit a committee of {len(nodes)} nodes "
                f"(t must be in [{len(nodes) // 2 + 1}, {len(nodes) - 1}])", round=round_id
            ))
        params = ThresholdParams.preset(
            self.preset, num_parties=len(nodes), num_clients=self.capacity, clip=self.clip, max_weight=math.ceil(self.max_weight),
            recovery_threshold=t,
        )
        server = ThresholdServer(params)
        common = {"params": params.to_bytes(), "session": server.session, "nodes": pack_nodes(nodes)}
        joint = None
        for party, node in enumerate(nodes):
            previous = server.key_input_for(party)
            request = {**common, "party": party, "payload": b"" if previous is None else previous.to_bytes()}
            links = self._send(grid, ThresholdStage.KEYGEN, {node: request}, round_id, report,
                               accept=lambda n, r: server.receive_key_share(bytes_field(r, "payload", f"reply from node {n}")))
            if node not in links:
                raise Abort(RoundAbortedError(
                    f"key holder {party} (node {node}) did not complete key generation; the next round starts a new session",
                    party=party, round=round_id, stage=ThresholdStage.KEYGEN,
                ))
            joint = links[node]
        assert joint is not None
        inbox: dict[int, list[bytes]] = {node: [] for node in nodes}

        def route(node: int, record: ConfigRecord) -> None:  # t-of-n: each holder's backups to their recipients
            where, party = f"reply from node {node}", nodes.index(node)
            items = _list(bytes_field(record, "payload", where), int_field(record, "count", where), where)
            if len(items) != (len(nodes) - 1 if t else 0):
                raise MalformedMessageError(f"{where}: {len(items)} backups for a committee of {len(nodes)}")
            messages = [KeyBackupMessage.from_bytes(item, params) for item in items]
            if any(m.sender != party or m.subject != party for m in messages):
                raise UnexpectedMessageError(f"{where}: a backup of another holder than {party}")
            for message, item in zip(messages, items):
                inbox[nodes[message.recipient]].append(item)

        roster = server.roster_message().to_bytes() if t else b""
        requests = {node: {"payload": joint.to_bytes(), "roster": roster} for node in nodes}
        accepted = self._send(grid, ThresholdStage.JOINT, requests, round_id, report, accept=route)
        missing = [node for node in nodes if node not in accepted]
        if missing:
            raise Abort(RoundAbortedError(f"key holders {missing} did not accept the joint key", round=round_id, stage=ThresholdStage.JOINT))
        if t:
            requests = {node: {"payload": pack_list(items), "count": len(items)} for node, items in inbox.items()}
            stored = self._send(grid, ThresholdStage.BACKUP, requests, round_id, report)
            missing = [node for node in nodes if node not in stored]
            if missing:
                raise Abort(RoundAbortedError(f"key holders {missing} did not store their backups", round=round_id, stage=ThresholdStage.BACKUP))
        self._server, self._committee = server, list(nodes)

    def _encrypt(
        self, grid: "Grid", by_node: dict[int, "Message"], round_id: int, report: ThresholdRoundReport, timeout: float
    ) -> tuple[Layout, bytes]:
        """ENCRYPT: each upload is folded into the sum as it arrives."""
        server, stage = self._server, ThresholdStage.ENCRYPT
        assert server is not None
        for node in sorted(by_node):
            if node not in self._committee:
                self._refuse(report, node, stage.name, UnexpectedMessageError(f"node {node} is not a key holder of this session"))
        members = [node for node in sorted(by_node) if node in self._committee]
        total, layouts = server.start(), []

        def fold(node: int, record: ConfigRecord) -> None:
            where = f"reply from node {node}"
            layout = Layout.from_bytes(bytes_field(record, "layout", where))
            if layout.ring_length:
                raise MalformedMessageError(f"{where}: a distributed-DP layout is not accepted here")
            if layouts and layout != layouts[0]:
                raise UnexpectedMessageError(f"{where}: its model layout differs from the other nodes'")
            total.add(bytes_field(record, "payload", where), self.max_weight)  # validate, then apply
            if not layouts:
                layouts.append(layout)

        requests = {node: {"payload": b"", "fingerprint": server.fingerprint, "max-weight": self.max_weight} for node in members}
        report.survivors = sorted(self._send(grid, stage, requests, round_id, report, timeout=timeout, extra=by_node, accept=fold))
        if not layouts or len(report.survivors) < self.min_clients:
            raise Abort(RoundAbortedError(f"{len(report.survivors)} uploads, fewer than min_clients={self.min_clients}", round=round_id, stage=stage))
        return layouts[0], total.finish()

    def _decrypt(self, grid: "Grid", aggregate: bytes, round_id: int, report: ThresholdRoundReport) -> np.ndarray:
        """DECRYPT: each share is taken as it arrives; dropped holders are stood in for (t-of-n) or the round ends."""
        server, committee = self._server, self._committee
        assert server is not None
        decryption = server.start_decryption(aggregate)
        parties = {node: party for party, node in enumerate(committee)}
        shares = self._send(grid, ThresholdStage.DECRYPT, {node: {"payload": aggregate} for node in committee}, round_id, report,
                            accept=lambda node, record: self._take_share(decryption, record, parties[node], node))
        gone = [party for party, node in enumerate(committee) if node not in shares]
        if gone:
            decryption.mark_dropped(gone)  # RoundAbortedError unless t-of-n can stand in
            self._stand_in(grid, decryption, aggregate, gone, round_id, report)
        return decryption.fuse() / self.max_weight

    @staticmethod
    def _take_share(decryption: ThresholdDecryption, record: ConfigRecord, party: int, node: int) -> None:
        share = DecryptionShare.from_bytes(
            bytes_field(record, "payload", f"reply from node {node}"), decryption.params, ciphertext_count=decryption.ciphertext_count
        )
        if share.party != party:
            raise UnexpectedMessageError(f"reply from node {node}: a share of holder {share.party}, expected holder {party}")
        decryption.receive_share(share)

    def _stand_in(
        self, grid: "Grid", decryption: ThresholdDecryption, aggregate: bytes, gone: list[int], round_id: int,
        report: ThresholdRoundReport,
    ) -> None:
        """t-of-n: a surviving holder rebuilds each dropped holder's share (RELEASE, RECOVER)."""
        committee, params = self._committee, decryption.params
        alive = [party for party in range(params.num_parties) if party not in gone]
        stand_in, helpers = alive[0], alive[1 : params.recovery_threshold]
        for dropped in gone:
            stage = ThresholdStage.RELEASE
            requests = {committee[h]: {"payload": b"", "dropped": dropped, "stand-in": stand_in} for h in helpers}
            replies = self._send(grid, stage, requests, round_id, report)
            if any(committee[h] not in replies for h in helpers):
                raise Abort(RoundAbortedError(f"a helper did not release its backup of holder {dropped}", round=round_id, stage=stage))
            released = [bytes_field(replies[committee[h]], "payload", "a release") for h in helpers]
            node, stage = committee[stand_in], ThresholdStage.RECOVER
            request = {"payload": pack_list(released), "count": len(released), "dropped": dropped, "aggregate": aggregate}
            recovered = self._send(grid, stage, {node: request}, round_id, report,
                                   accept=lambda n, record: self._take_share(decryption, record, dropped, n))
            if node not in recovered:
                raise Abort(RoundAbortedError(f"the stand-in for holder {dropped} did not deliver its share", round=round_id, stage=stage))
            report.stood_in[committee[dropped]] = node


class ThresholdGrid(WorkflowGrid):
    """A ``Grid`` whose train rounds are fedcrypt threshold-CKKS rounds (see :class:`~._common.WorkflowGrid`).

    ``strategy.start(grid=ThresholdGrid(grid, ThresholdWorkflow()), ...)``; the ClientApp adds :data:`threshold_mod`.
    """

    WORKFLOW = ThresholdWorkflow
