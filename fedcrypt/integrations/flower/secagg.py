"""SecAgg / SecAgg+ for Flower's Message API (flwr >= 1.20; tested with 1.42): a transport over
:mod:`fedcrypt.secagg`, whose round set-up rules are :mod:`fedcrypt.secagg.setup`'s.

:class:`SecAggMod` (instance :data:`secagg_mod`) keeps the node's
:class:`~fedcrypt.secagg.ClientProtocol` sealed in ``Context.state``, and at MASKED_INPUT runs
the app's own ``@app.train`` and uploads only the masked ``w/M * [x, metrics, 1]`` (with
distributed DP, the noised update delta). :class:`SecAggGrid` (with :class:`SecAggWorkflow`)
turns a strategy's train round into a SecAgg round whose replies are fed to the
:class:`~fedcrypt.secagg.ServerProtocol` as they arrive; the strategy gets one reply with the
survivors' weighted average ``sum(w x) / sum(w)`` and total weight ``M * sum(w/M)``.

Wire format (one ConfigRecord :data:`RECORD` per message; ``payload``: a protocol message)::

    server -> node   stage, payload  (+ config, nodes, client-id, round, max-weight, dp, model, members
                                        at ADVERTISE_KEYS; + the strategy's train records at MASKED_INPUT)
    node -> server   stage, payload  (+ layout at MASKED_INPUT)

With a roster the server first asks each new node which member it is (record
:data:`IDENTIFY_RECORD`: ``challenge`` -> ``name``, ``signature``).

Invariants: the server sees only the survivors' ring sum; nothing a node sends ends the run
(a silent, erroring or refused node is dropped and reported; a round that cannot finish
safely returns no reply); a protocol message's sender is the Flower node it came from; every
node gets the same train records (their :func:`train_digest` is bound into the round); a
node joins each round id once and keeps its client only sealed, each sealed state answering once.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import struct
import warnings
from collections import namedtuple
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np

from fedcrypt.crypto import ed25519_verify
from fedcrypt.dp.distributed import DistributedDpConfig
from fedcrypt.errors import HonestButCuriousWarning, IdentityError, MalformedMessageError, ProtocolViolationError
from fedcrypt.errors import RecordMismatchError, RoundAbortedError, SpecMismatchError, UnexpectedMessageError
from fedcrypt.identity import Roster
from fedcrypt.secagg import ClientProtocol, SecAggConfig, ServerProtocol, Stage, decode_message
from fedcrypt.secagg.membership import pack_members, round_keys, unpack_members
from fedcrypt.secagg.messages import MaskedInput, ShareBundle
from fedcrypt.secagg.setup import check_join, config_for, dp_from_bytes, dp_to_bytes, dump_config, identify_bytes
from fedcrypt.secagg.setup import load_config, round_binding, weight_bytes
from fedcrypt.vectors import TensorSpec

from ._common import Abort, Layout, RoundReport, RoundWorkflow, StagedMod, WorkflowGrid, _Next, average_reply, bytes_field
from ._common import check_fields, check_number, check_records, flat_update, pack_nodes, run_app_train, strategy_reply
from ._common import log, unpack_nodes
from ._state import keep, kept, node_state_key

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

__all__ = [
    "RECORD", "STATE", "JOINED", "IDENTIFY_RECORD", "NODE_MAX_COLLUDERS", "train_digest", "SecAggMod", "secagg_mod",
    "SecAggWorkflow", "SecAggGrid", "SecAggRoundReport", "kept_stage",
]

#: Name of the ConfigRecord that carries the SecAgg messages.
RECORD = "fedcrypt.secagg"
#: Name of the sealed record in ``Context.state`` that keeps the client between stages.
STATE = "fedcrypt.secagg.state"
#: Name of the record in ``Context.state`` with the last round this node joined.
JOINED = "fedcrypt.secagg.joined"
#: The record of the identification exchange (rounds with a roster).
IDENTIFY_RECORD = "fedcrypt-identify"
#: Node-config key: how many colluding clients this node assumes (rounds declaring fewer are refused).
NODE_MAX_COLLUDERS = "fedcrypt-max-colluders"

_KEPT = struct.Struct(">d32sB")  # the kept state: max weight, model digest, DP settings' length; then they and the client
_CLIPPED = "fedcrypt secagg node %s round %s: %s (this node's own input: logged here, never sent)"
_SETUP_FIELDS = frozenset({"stage", "payload", "config", "nodes", "client-id", "round", "max-weight", "dp", "model", "members"})


def train_digest(content: "RecordDict") -> bytes:
    """SHA-256 of a strategy's train records (all but :data:`RECORD`), canonical: records in
    name order; arrays with name, dtype, shape and bytes; config and metric entries in key
    order with type and value. Bound into the round, it makes a server that sends different
    models or configs to different nodes fail it (model inconsistency, Pasquini et al. CCS 2022).
    """
    digest = hashlib.sha256(b"fedcrypt/flower-train-records/v1")

    def put(*parts: bytes) -> None:
        for data in parts:
            digest.update(struct.pack(">Q", len(data)) + data)

    for name in sorted(k for k in content.keys() if k != RECORD):
        record = content[name]
        put(name.encode("utf-8"), type(record).__name__.encode("ascii"))
        if isinstance(record, ArrayRecord):
            for key, array in record.items():
                value = np.ascontiguousarray(array.numpy())
                shape = str(value.dtype).encode("ascii") + b"|" + repr(tuple(value.shape)).encode("ascii")
                put(key.encode("utf-8"), shape, value.tobytes())
        else:
            for key in sorted(record.keys()):
                value = record[key]
                put(key.encode("utf-8"), type(value).__name__.encode("ascii"),
                    value if isinstance(value, bytes) else repr(value).encode("utf-8"))
    return digest.digest()


# ============================================================================ node side
_Kept = namedtuple("_Kept", "client max_weight dp model")  # what a node keeps between two messages (sealed)


class SecAggMod(StagedMod):
    """A Flower ClientApp mod that runs the node side of fedcrypt SecAgg / SecAgg+.

    Math and threat model: those of :class:`~fedcrypt.secagg.ClientProtocol` (Bonawitz et
    al. 2017; Bell et al. 2020): the node uploads
    ``encode(w/M * [x, metrics, 1]) + PRG(b) + sum of signed pairwise masks``; it joins a
    round under :func:`~fedcrypt.secagg.setup.check_join` and
    :func:`~fedcrypt.secagg.membership.round_keys`, with the round's associated data
    recomputed locally.

    Args:
        allow_plaintext: pass a train message without :data:`RECORD` to the app (never with
            a roster); default ``False``, so a server cannot quietly collect a cleartext update.
        min_clients: refuse rounds with fewer clients.
        weight_key: the MetricRecord key of the FedAvg weight.
        min_noise_multiplier: refuse rounds without distributed DP of at least this noise.
        identity_path, roster_path, roster_digest: the identity key file, the roster file and
            its SHA-256 (hex); node config ``fedcrypt-identity``, ``fedcrypt-roster`` and
            ``fedcrypt-roster-digest`` first. With them the node joins only the
            malicious-server mode; without, only honest-but-curious rounds (logged once).
        max_colluders: the colluding clients this node assumes (node config
            ``fedcrypt-max-colluders`` first): a round declaring fewer is refused.
        state_key_path: the key file that seals the node's state (node config
            ``fedcrypt-state-key`` first; see :mod:`._state`).
    """

    RECORD, STAGES, SENDS, TRAIN_STAGE, LABEL = RECORD, Stage, "this client only sends masked updates", Stage.MASKED_INPUT, "secagg"
    REQUEST_FIELDS = {Stage.ADVERTISE_KEYS.name: _SETUP_FIELDS}

    def __init__(
        self, *, allow_plaintext: bool = False, min_clients: int = 2, weight_key: str = "num-examples",
        min_noise_multiplier: float | None = None, identity_path: str | None = None, roster_path: str | None = None,
        roster_digest: str | None = None, max_colluders: int = 0, state_key_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._settings(allow_plaintext=allow_plaintext, weight_key=weight_key, roster_digest=roster_digest,
                       paths={"state_key_path": state_key_path, "identity_path": identity_path, "roster_path": roster_path})
        check_number("max_colluders", max_colluders, minimum=0)
        check_number("min_clients", min_clients, minimum=2)
        check_number("min_noise_multiplier", min_noise_multiplier, optional=True)
        if min_noise_multiplier is not None and allow_plaintext:
            raise ValueError("min_noise_multiplier and allow_plaintext=True contradict each other")
        self.min_clients, self.max_colluders = min_clients, max_colluders
        self.min_noise_multiplier = None if min_noise_multiplier is None else float(min_noise_multiplier)

    def __repr__(self) -> str:
        return (f"SecAggMod(allow_plaintext={self.allow_plaintext}, min_clients={self.min_clients}, "
                f"min_noise_multiplier={self.min_noise_multiplier}, roster={'<set>' if self.roster_path else None})")

    def __call__(self, msg: "Message", ctxt: "Context", call_next: _Next) -> "Message":
        """Answer one protocol stage (or the identification), or pass a non-train message to the app."""
        if msg.metadata.message_type.split(".")[0] == "train" and IDENTIFY_RECORD in msg.content.keys():
            return self._identify(msg, ctxt)
        return super().__call__(msg, ctxt, call_next)

    def _handle(self, msg: "Message", ctxt: "Context", record: ConfigRecord, stage: Stage, call_next: _Next) -> dict[str, Any]:
        if stage is Stage.ADVERTISE_KEYS:
            return self._setup(msg, ctxt, record)
        kept_ = self._load(ctxt, stage)
        client, where = kept_.client, f"server message to node {ctxt.node_id}"
        here = {"party": client.client_id, "round": client.round_id, "stage": stage}
        if stage is Stage.MASKED_INPUT and not hmac.compare_digest(train_digest(msg.content), kept_.model):
            raise ProtocolViolationError(f"{where}: the train records differ from those the round was set up with "
                                         "(a server may not send different models to different clients)", **here)
        if client.stage is not stage:
            raise UnexpectedMessageError(f"server message for stage {stage.name}", **{**here, "stage": client.stage})
        request, fields = decode_message(bytes_field(record, "payload", where)), {}
        if stage is Stage.MASKED_INPUT:
            if not isinstance(request, ShareBundle):
                raise UnexpectedMessageError(f"{type(request).__name__} is not accepted in this stage", **here)
            layout, vector = self._train(msg, ctxt, kept_, call_next)
            client.set_input(vector)
            fields["layout"] = layout.to_bytes()
        fields["payload"] = client.handle(request).to_bytes()
        self._save(ctxt, kept_)
        return fields

    def _identify(self, msg: "Message", ctxt: "Context") -> "Message":
        """Tell the server which roster member this node is, signed over a fresh challenge."""
        where = f"server message to node {ctxt.node_id}"
        check_records(msg.content, [IDENTIFY_RECORD], party=ctxt.node_id, where=where)
        record = msg.content[IDENTIFY_RECORD]
        check_fields(record, frozenset({"challenge"}), party=ctxt.node_id, where=where, record_name=IDENTIFY_RECORD)
        challenge = bytes_field(record, "challenge", where)
        if len(challenge) != 32:
            raise MalformedMessageError(f"{where}: the challenge is 32 bytes", party=ctxt.node_id)
        roster, identity = self._credentials(ctxt)
        if roster is None or identity is None:
            raise ProtocolViolationError(f"{where}: asked who it is, but this node has no roster", party=ctxt.node_id)
        name = roster.name_of(identity.public_bytes)
        signature = identity.signing_key.sign(identify_bytes(msg.metadata.run_id, ctxt.node_id, challenge, name))
        return Message(content=RecordDict({IDENTIFY_RECORD: ConfigRecord({"name": name, "signature": signature})}), reply_to=msg)

    def _setup(self, msg: "Message", ctxt: "Context", record: ConfigRecord) -> dict[str, Any]:
        where, node = f"server message to node {ctxt.node_id}", ctxt.node_id
        config = load_config(bytes_field(record, "config", where))
        nodes_bytes, dp_bytes, model, members_bytes = (bytes_field(record, f, where) for f in ("nodes", "dp", "model", "members"))
        client_id, round_id, max_weight = record["client-id"], record["round"], record["max-weight"]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (client_id, round_id)) or round_id < 0:
            raise MalformedMessageError(f"{where}: client-id and round must be integers", party=node)
        if not isinstance(max_weight, float) or not (math.isfinite(max_weight) and max_weight > 0):
            raise MalformedMessageError(f"{where}: max-weight must be a positive float", party=node)
        if len(model) != 32:
            raise MalformedMessageError(f"{where}: model must be a 32-byte digest", party=node)
        joined = int(ctxt.state[JOINED]["round"]) if JOINED in ctxt.state.keys() else None
        check_join(config, nodes=unpack_nodes(nodes_bytes), client_id=client_id, node=msg.metadata.dst_node_id, round_id=round_id,
                   last_round=joined, min_clients=self.min_clients, dp=dp_from_bytes(dp_bytes, config.num_clients),
                   min_noise_multiplier=self.min_noise_multiplier)
        members = unpack_members(members_bytes) if members_bytes else ()
        roster, identity = self._credentials(ctxt)
        colluders = ctxt.node_config.get(NODE_MAX_COLLUDERS, self.max_colluders) if ctxt.node_config is not None else self.max_colluders
        if isinstance(colluders, bool) or not isinstance(colluders, int) or colluders < 0:
            raise IdentityError(f"node config {NODE_MAX_COLLUDERS} must be a non-negative integer, got {colluders!r}")
        signing_key, verify_keys = round_keys(config, client_id, members, roster, identity, required_colluders=colluders, round_id=round_id)
        binding = round_binding(msg.metadata.run_id, round_id, nodes_bytes, dp_bytes, model, members_bytes, weight_bytes(max_weight))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once by _credentials
            client = ClientProtocol(config, client_id, round_id=round_id, associated_data=binding, signing_key=signing_key,
                                    verify_keys=verify_keys)
        advert = client.advertise()
        ctxt.state.pop(STATE, None)  # an unfinished round's client: replaced, not spent (a new round may start)
        self._save(ctxt, _Kept(client, max_weight, dp_bytes, model))
        ctxt.state[JOINED] = ConfigRecord({"round": round_id})
        return {"payload": advert.to_bytes()}

    def _train(self, msg: "Message", ctxt: "Context", kept_: _Kept, call_next: _Next) -> tuple[Layout, np.ndarray]:
        """Run the app's train function; the layout and the vector to mask."""
        client = kept_.client
        here = {"party": client.client_id, "round_id": client.round_id, "stage": Stage.MASKED_INPUT}
        reply = run_app_train(msg, ctxt, call_next, RECORD, **here)
        arrays_name, metrics_name, tensors, _, spec = reply
        dp = dp_from_bytes(kept_.dp, client.config.num_clients, spec.size)
        if dp is None:
            layout, values, weight = flat_update(reply, weight_key=self.weight_key, max_weight=kept_.max_weight, **here)
            vector = np.append(values, 1.0) * (weight / kept_.max_weight)  # w/M [x, metrics, 1]
            log.info(_CLIPPED, ctxt.node_id, client.round_id, client.config.codec.clip_report(vector))
            return layout, vector
        # distributed DP: the update delta against the global model, clipped, noised, in the ring
        where = f"server message to client {client.client_id}"
        if arrays_name not in msg.content.keys() or not isinstance(msg.content[arrays_name], ArrayRecord):
            raise RecordMismatchError(f"{where}: distributed DP needs the global model in ArrayRecord {arrays_name!r}",
                                      missing=(arrays_name,), party=client.client_id, round=client.round_id, stage=Stage.MASKED_INPUT)
        global_tensors = {name: array.numpy() for name, array in msg.content[arrays_name].items()}
        if TensorSpec.from_tensors(global_tensors).digest() != spec.digest():
            raise SpecMismatchError(f"{where}: the trained model's layout differs from the global model's")
        delta = spec.flatten(tensors).astype(np.float64) - spec.flatten(global_tensors).astype(np.float64)
        ring, clipped = dp.encode_with_report(delta)
        log.info(_CLIPPED, ctxt.node_id, client.round_id, clipped)
        return Layout(arrays_name, metrics_name, spec, (), self.weight_key, dp.ring_length), ring.astype(client.config.codec.ring_dtype)

    def _load(self, ctxt: "Context", stage: Stage) -> _Kept:
        """The kept client and round settings, opened (refused if tampered, swapped or under another key)."""
        state = kept(ctxt, node_state_key(ctxt, key_path=self.state_key_path, identity_path=self.identity_path), STATE)
        if state is None:
            raise UnexpectedMessageError(f"a {stage.name} message before this node joined a round (it never advertised keys)",
                                         party=ctxt.node_id, stage=stage)
        _, identity = self._credentials(ctxt)
        if len(state) < _KEPT.size or len(state) < _KEPT.size + state[_KEPT.size - 1]:
            raise MalformedMessageError(f"{STATE} of node {ctxt.node_id}: bad round settings", party=ctxt.node_id)
        max_weight, model, dp_size = _KEPT.unpack_from(state)
        dp, client_bytes = state[_KEPT.size : _KEPT.size + dp_size], state[_KEPT.size + dp_size :]
        client = ClientProtocol.from_state_bytes(client_bytes, signing_key=None if identity is None else identity.signing_key)
        return _Kept(client, max_weight, dp, model)

    def _save(self, ctxt: "Context", kept_: _Kept) -> None:
        """Seal the client and the round settings into ``Context.state`` (dropped once done), spending the last (:func:`keep`)."""
        client, done = kept_.client, kept_.client.stage in (Stage.DONE, Stage.ABORTED)
        state = None if done else _KEPT.pack(kept_.max_weight, kept_.model, len(kept_.dp)) + kept_.dp + client.to_state_bytes()
        key = node_state_key(ctxt, key_path=self.state_key_path, identity_path=self.identity_path)
        keep(ctxt, key, STATE, state, stage=client.stage.name)


def kept_stage(context: "Context") -> Stage | None:
    """The stage of the SecAgg client a node keeps, from its record's public ``stage`` field
    (``None``: none kept). A hint for tools and tests: the mod trusts only the sealed state."""
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
class SecAggRoundReport(RoundReport):
    """A SecAgg round's :class:`~._common.RoundReport` (``nodes`` in client-id order); ``dp``:
    with distributed DP, the mechanism and the noise of the round's average (``noise_stddev``:
    per coordinate, with the survivors' count)."""

    dp: dict[str, Any] | None = None


class SecAggWorkflow(RoundWorkflow):
    """The server side of fedcrypt SecAgg / SecAgg+ over a Flower ``Grid``.

    Math and threat model: those of :class:`~fedcrypt.secagg.ServerProtocol` (Bonawitz et
    al. 2017; SecAgg+ graphs of Bell et al. 2020): the server learns
    ``sum_{u in survivors} w_u/M * [x_u, metrics_u, 1]`` only. This class moves bytes: the
    config is :func:`~fedcrypt.secagg.setup.config_for`'s, each reply is fed to the protocol
    as it arrives, and silent nodes are dropped after ``stage_timeout``.

    Args:
        threshold: Shamir threshold as a fraction of the share holders.
        neighbours: SecAgg+ degree ``k``; ``None`` or ``>= n-1``: the complete graph.
        bits: ring size, 32 or 64.
        clip: L-infinity clip of an encoded coordinate ``w/M * x``.
        max_weight: ``M``, the largest FedAvg weight a node may claim.
        stage_timeout: seconds to wait for the replies of one stage.
        train_timeout: seconds to wait at MASKED_INPUT; default the strategy's timeout.
        min_clients: rounds with fewer sampled nodes are refused.
        rounding: fixed-point rounding, ``"stochastic"`` or ``"nearest"``.
        dp_noise_multiplier: ``z``; switches on distributed DP (Kairouz et al. 2021): the
            decoded sum carries noise of std ``z * dp_clip`` and the strategy gets
            ``global + noisy mean delta`` with ``num-examples`` = survivors. Needs ``bits=32``.
        dp_clip, dp_bits, dp_mechanism: the L2 clip, ring width and ``"ddgauss"`` / ``"skellam"``.
        max_colluders: ``c``, nodes that may collude with the server (raises the threshold).
        roster: the federation's :class:`~fedcrypt.identity.Roster`: the malicious-server mode;
            each node is asked once which member it is.
        poll_interval: seconds between two pulls of replies.
    """

    RECORD, REPORT, LABEL = RECORD, SecAggRoundReport, "secagg"
    REPLY_FIELDS = {Stage.MASKED_INPUT.name: frozenset({"stage", "payload", "layout"})}

    def __init__(
        self, *, threshold: float = 0.67, neighbours: int | None = None, bits: int = 32, clip: float = 4.0,
        max_weight: float = 1000.0, stage_timeout: float = 60.0, train_timeout: float | None = None, min_clients: int = 2,
        rounding: str = "stochastic", dp_noise_multiplier: float | None = None, dp_clip: float = 1.0, dp_bits: int = 20,
        dp_mechanism: Literal["ddgauss", "skellam"] = "ddgauss", max_colluders: int = 0, roster: Roster | None = None, poll_interval: float = 3.0,
    ) -> None:
        if roster is not None and not isinstance(roster, Roster):
            raise TypeError(f"roster must be a fedcrypt.identity.Roster, got {type(roster).__name__}")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0.5 < threshold <= 1.0:
            raise ValueError(f"threshold must be a fraction in (0.5, 1], got {threshold!r}")
        check_number("max_colluders", max_colluders, minimum=0)
        check_number("neighbours", neighbours, minimum=0, optional=True)
        check_number("max_weight", max_weight)
        check_number("min_clients", min_clients, minimum=2)
        SecAggConfig(num_clients=2, threshold=2, bits=bits, clip=clip, rounding=rounding)  # fail now, not in round 1
        if dp_noise_multiplier is not None:
            DistributedDpConfig(dp_noise_multiplier, dp_clip, 2, bits=dp_bits, mechanism=dp_mechanism)
            if bits != 32:
                raise ValueError(f"distributed DP needs bits=32 (the DP ring divides 2^32), got {bits}")
        super().__init__(stage_timeout, train_timeout, poll_interval)
        self.dp_noise_multiplier = None if dp_noise_multiplier is None else float(dp_noise_multiplier)
        self.dp_clip, self.dp_bits, self.dp_mechanism = float(dp_clip), dp_bits, dp_mechanism
        self.threshold, self.neighbours, self.bits, self.clip = float(threshold), neighbours or None, bits, float(clip)
        self.max_weight, self.min_clients, self.rounding = float(max_weight), min_clients, rounding
        self.max_colluders, self.roster = max_colluders, roster
        self._names: dict[int, str] = {}  # node id -> roster member, as the node proved it

    def __repr__(self) -> str:
        return (f"SecAggWorkflow(threshold={self.threshold}, neighbours={self.neighbours}, bits={self.bits}, "
                f"clip={self.clip}, max_weight={self.max_weight}, stage_timeout={self.stage_timeout})")

    def _protection(self, report: SecAggRoundReport) -> str:
        sparse = self.neighbours is not None and self.neighbours < len(report.nodes) - 1
        return ("secagg+" if sparse else "secagg") + (f"+dp({self.dp_mechanism})" if self.dp_noise_multiplier is not None else "")

    def config_for(self, num_clients: int, *, round_id: int | None = None, members: tuple[str, ...] = ()) -> SecAggConfig:
        """The SecAggConfig of a round of ``num_clients`` clients (:func:`~fedcrypt.secagg.setup.config_for`)."""
        return config_for(num_clients, threshold=self.threshold, neighbours=self.neighbours, bits=self.bits, clip=self.clip,
                          rounding=self.rounding, max_colluders=self.max_colluders, roster=self.roster, round_id=round_id,
                          members=members)

    def _check_train(self, train_messages: list["Message"]) -> None:
        digests = {train_digest(m.content) for m in train_messages}
        if len(digests) != 1:
            raise ValueError("secure aggregation needs the same train records (model and config) for every node; "
                             f"the strategy sent {len(digests)} different ones")

    def _round(
        self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: SecAggRoundReport,
        train_timeout: float,
    ) -> "Message":
        model, names = train_digest(by_node[nodes[0]].content), tuple[str, ...]()  # no member names without a roster
        if self.roster is not None:
            known = self._identify(grid, nodes, report, round_id)
            nodes = report.nodes = [node for node in nodes if node in known]
            if len(nodes) < self.min_clients:
                raise Abort(RoundAbortedError(f"{len(nodes)} nodes identified as roster members, fewer than min_clients={self.min_clients}"))
            names = tuple(known[node] for node in nodes)
        try:
            config = self.config_for(len(nodes), round_id=round_id, members=names)
        except ValueError as exc:
            raise Abort(RoundAbortedError(f"no safe configuration for {len(nodes)} nodes: {exc}")) from None
        dp_bytes = b""  # with DP: a public rotation seed, fresh per round (it needs agreement, not secrecy)
        if self.dp_noise_multiplier is not None:
            dp_bytes = dp_to_bytes(self.dp_noise_multiplier, self.dp_clip, self.dp_bits, self.dp_mechanism, secrets.token_bytes(32))
        nodes_bytes, members, run_id = pack_nodes(nodes), pack_members(names) if names else b"", grid.run.run_id
        binding = round_binding(run_id, round_id, nodes_bytes, dp_bytes, model, members, weight_bytes(self.max_weight))
        keys = None if self.roster is None else self.roster.verify_keys(names)  # the core refuses a bad signature on receipt
        server = ServerProtocol(config, round_id=round_id, associated_data=binding, verify_keys=keys)  # (it never warns: the nodes do)
        setup = {"stage": Stage.ADVERTISE_KEYS.name, "config": dump_config(config), "nodes": nodes_bytes, "round": round_id,
                 "payload": b"", "max-weight": self.max_weight, "dp": dp_bytes, "model": model, "members": members}
        requests = {node: {**setup, "client-id": cid} for cid, node in enumerate(nodes)}
        index, layouts, stage = {node: cid for cid, node in enumerate(nodes)}, dict[int, Layout](), Stage.ADVERTISE_KEYS
        try:
            while stage not in (Stage.DONE, Stage.ABORTED):
                masked = stage is Stage.MASKED_INPUT
                self._exchange(grid, stage, requests, report, round_id=round_id, timeout=train_timeout if masked else None,
                               extra=by_node if masked else None, accept=partial(self._receive, server, index, stage, layouts))
                outgoing, stage = server.end_stage(), server.stage
                requests = {nodes[cid]: {"stage": stage.name, "payload": m.to_bytes()} for cid, m in outgoing.items()}
        except RoundAbortedError as exc:
            raise Abort(exc) from None
        result, layout = server.result, layouts[server.result.survivors[0]]  # the core keeps the most common layout
        report.survivors = [nodes[cid] for cid in result.survivors]
        for cid in server.excluded:
            report.refused[nodes[cid]] = f"SpecMismatchError: node {nodes[cid]}'s layout is not the one most nodes' inputs carry"
        if dp_bytes:
            return self._reply_dp(dp_bytes, config, result.ring_sum, len(result.survivors), layout, by_node, report, str(round_id))
        total = config.codec.decode_sum(result.ring_sum, len(result.survivors))
        return average_reply(layout, total, max_weight=self.max_weight, run_id=run_id, group=str(round_id), stage=Stage.DONE)

    def _receive(self, server: ServerProtocol, index: dict[int, int], stage: Stage, layouts: dict[int, Layout], node: int,
                 record: ConfigRecord) -> None:
        """Feed one reply to the protocol (at MASKED_INPUT labelled with its layout: the core keeps the most common one)."""
        cid, where = index[node], f"reply from node {node}"
        payload = bytes_field(record, "payload", where)
        if stage is not Stage.MASKED_INPUT:
            message = decode_message(payload)
        else:
            layout = Layout.from_bytes(bytes_field(record, "layout", where))
            message = MaskedInput.from_bytes(payload, expected_length=layout.dimension)
        if message.party != cid:
            raise UnexpectedMessageError(f"{where} claims to be client {message.party}", party=cid, stage=stage)
        server.receive(message, group=layout.digest() if stage is Stage.MASKED_INPUT else b"")
        if stage is Stage.MASKED_INPUT:
            layouts[cid] = layout

    def _identify(self, grid: "Grid", nodes: list[int], report: SecAggRoundReport, round_id: int) -> dict[int, str]:
        """Roster members of the round's nodes: known ones from earlier rounds, the others asked now."""
        roster, run_id, challenge = self.roster, grid.run.run_id, secrets.token_bytes(32)
        assert roster is not None

        def verify(node: int, record: ConfigRecord) -> str:
            where, name = f"identification reply from node {node}", record["name"]
            if not isinstance(name, str):
                raise MalformedMessageError(f"{where}: name must be a string", party=node)
            ed25519_verify(roster.key(name), bytes_field(record, "signature", where), identify_bytes(run_id, node, challenge, name))
            return name

        unknown = {node: {"challenge": challenge} for node in nodes if node not in self._names}
        answers = self._exchange(grid, "IDENTIFY", unknown, report, round_id=round_id, accept=verify, record=IDENTIFY_RECORD,
                                 fields=frozenset({"name", "signature"}))
        for node, name in answers.items():
            for other in [n for n, member in self._names.items() if member == name]:
                del self._names[other]  # the member came back under another node id
            self._names[node] = name
        return {node: self._names[node] for node in nodes if node in self._names}

    def _reply_dp(self, dp_bytes: bytes, config: SecAggConfig, ring_sum: np.ndarray, count: int, layout: Layout,
                  by_node: dict[int, "Message"], report: SecAggRoundReport, group: str) -> "Message":
        dp = dp_from_bytes(dp_bytes, config.num_clients, layout.spec.size)
        first = next(iter(by_node.values()))
        global_tensors = {name: array.numpy() for name, array in first.content[layout.arrays_record].items()}
        new = layout.spec.flatten(global_tensors).astype(np.float64) + dp.decode(ring_sum, count) / count
        arrays = ArrayRecord({name: Array(np.asarray(v)) for name, v in layout.spec.unflatten(new.astype(np.float32)).items()})
        report.dp = {
            "mechanism": dp.config.mechanism, "noise_multiplier": dp.config.noise_multiplier, "clip": dp.config.clip,
            "expected_clients": dp.config.expected_clients, "survivors": count, "noise_stddev": dp.noise_stddev(count) / count,
        }
        content = RecordDict({layout.arrays_record: arrays, layout.metrics_record: MetricRecord({layout.weight_key: float(count)})})
        return strategy_reply(content, first.metadata.run_id, group)


class SecAggGrid(WorkflowGrid):
    """A ``Grid`` whose train rounds are fedcrypt SecAgg rounds (see :class:`~._common.WorkflowGrid`):
    ``strategy.start(grid=SecAggGrid(grid, SecAggWorkflow(...)), ...)``; the ClientApp adds :data:`secagg_mod`."""

    WORKFLOW = SecAggWorkflow
