"""SecAgg / SecAgg+ for Flower's Message API (flwr >= 1.20; tested with 1.42): a transport
over :mod:`fedcrypt.secagg` (its round set-up rules in :mod:`fedcrypt.secagg.setup`).

* :class:`SecAggMod` (instance :data:`secagg_mod`), a ClientApp mod: it answers the
  protocol stages, keeps the :class:`~fedcrypt.secagg.ClientProtocol` sealed in
  ``Context.state`` between messages (:mod:`._state`), and at the masked-input stage runs
  the app's own ``@app.train``, flattens and weights its reply and uploads only the masked
  vector.
* :class:`SecAggGrid` (with :class:`SecAggWorkflow` inside) wraps the ServerApp's ``Grid``:
  any strategy's train round becomes a SecAgg round whose replies are fed to the
  :class:`~fedcrypt.secagg.ServerProtocol` as they arrive, and the strategy receives one
  reply with the survivors' weighted average and total weight.

Wire format (one ConfigRecord :data:`RECORD` per message)::

    server -> node   stage, payload     (+ config, nodes, client-id, round, max-weight, dp, model,
                                          members at ADVERTISE_KEYS; + the strategy's train records
                                          at MASKED_INPUT)
    node -> server   stage, payload     (+ layout at MASKED_INPUT)

``payload`` is a protocol message's ``to_bytes()``. With a roster the server first asks each
new node which member it is (record :data:`IDENTIFY_RECORD`: ``challenge`` -> ``name``,
``signature`` over :func:`~fedcrypt.secagg.setup.identify_bytes`).

Weighting: a node with weight ``w`` (metric ``num-examples``, at most ``M = max_weight``)
uploads the encoding of ``w/M * [x, metrics, 1]``; the server divides the survivors' sums:
``sum(w x) / sum(w)`` and ``M * sum(w/M)``. With distributed DP (``dp_noise_multiplier``)
the vector is instead :class:`~fedcrypt.dp.distributed.DistributedDp`'s ring encoding of the
clipped, noised update delta, and the strategy gets the global model plus the noisy mean
delta; the DP settings and their rotation seed are bound into the round.

Invariants:

* the server sees only the survivors' ring sum; the protocol objects decide everything;
* nothing a node sends ends the run: a silent, erroring or refused node is dropped from the
  round and reported; a round that cannot finish safely returns no reply;
* the sender of a protocol message is the Flower node it came from (a payload naming
  another client id is refused);
* every node of a round gets the same train records: their digest (:func:`train_digest`)
  is bound into the round, and a node refuses masked-input records with another one;
* a node joins each round id once, and keeps its client only sealed: a record that does
  not open under its state key is refused before any protocol step.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import struct
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from fedcrypt.crypto import ed25519_verify
from fedcrypt.dp.distributed import MECHANISMS, DistributedDp, DistributedDpConfig
from fedcrypt.errors import (
    HonestButCuriousWarning,
    IdentityError,
    MalformedMessageError,
    ProtocolViolationError,
    RecordMismatchError,
    RoundAbortedError,
    SpecMismatchError,
    UnexpectedMessageError,
)
from fedcrypt.identity import Roster
from fedcrypt.secagg import ClientProtocol, SecAggConfig, ServerProtocol, Stage, decode_message
from fedcrypt.secagg.membership import pack_members, round_keys, unpack_members
from fedcrypt.secagg.messages import MaskedInput, ShareBundle
from fedcrypt.secagg.setup import check_join, config_for, dump_config, identify_bytes, load_config, round_binding
from fedcrypt.vectors import TensorSpec

from ._common import (  # first: it checks the 'flower' extra
    Abort,
    Layout,
    ReportDict,
    RoundWorkflow,
    StagedMod,
    WorkflowGrid,
    average_reply,
    bytes_field,
    check_fields,
    check_records,
    flat_update,
    pack_list,
    pack_nodes,
    run_app_train,
    strategy_reply,
    unpack_list,
    unpack_nodes,
    weighted,
)
from ._common import _Next
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

_SETUP_FIELDS = frozenset({"stage", "payload", "config", "nodes", "client-id", "round", "max-weight", "dp", "model", "members"})
_DP_FORMAT = struct.Struct(">ddBB32s")  # noise multiplier, clip, bits, mechanism, rotation seed


def train_digest(content: "RecordDict") -> bytes:
    """SHA-256 of a strategy's train records (all but :data:`RECORD`), canonical.

    Records in name order; arrays in their record's order with name, dtype, shape and bytes;
    config and metric entries in key order with type and value. Bound into the round, it
    makes a server that sends different models or configs to different nodes fail the round
    (the model-inconsistency attack, Pasquini et al. CCS 2022).
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


def _unpack_dp(data: bytes, num_clients: int, dim: int | None = None) -> DistributedDp | None:
    """The round's distributed-DP mechanism from its setup bytes (``b""``: none)."""
    if data == b"":
        return None
    if len(data) != _DP_FORMAT.size:
        raise MalformedMessageError(f"dp settings must be {_DP_FORMAT.size} bytes, got {len(data)}")
    noise_multiplier, clip, bits, mechanism, seed = _DP_FORMAT.unpack(data)
    try:
        config = DistributedDpConfig(noise_multiplier, clip, num_clients, bits=bits, mechanism=MECHANISMS[mechanism])
        return DistributedDp(config, dim=dim, rotation_seed=seed)
    except (IndexError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"invalid dp settings: {exc}") from None


# ============================================================================ node side
@dataclass(frozen=True)
class _Kept:
    """What a node keeps between two SecAgg messages (sealed in ``Context.state``)."""

    client: ClientProtocol
    max_weight: float
    dp: bytes
    model: bytes

    def __repr__(self) -> str:
        return f"_Kept(client={self.client!r})"


class SecAggMod(StagedMod):
    """A Flower ClientApp mod that runs the node side of fedcrypt SecAgg / SecAgg+.

    Math and threat model: those of :class:`~fedcrypt.secagg.ClientProtocol` (Bonawitz et
    al. 2017, Fig. 4; Bell et al. 2020): the node uploads
    ``encode(w/M * [x, metrics, 1]) + PRG(b) + sum of signed pairwise masks``. The mod adds
    what a transport owes the protocol: records and fields exactly as the wire format says,
    the round's associated data recomputed locally, and the join rules of
    :func:`~fedcrypt.secagg.setup.check_join` and :func:`~fedcrypt.secagg.membership.round_keys`.

    Args:
        allow_plaintext: pass a train message without :data:`RECORD` to the app (never
            with a roster); default ``False``, so a server cannot quietly collect a
            cleartext update.
        min_clients: refuse rounds with fewer clients.
        weight_key: the MetricRecord key of the FedAvg weight.
        min_noise_multiplier: refuse rounds without distributed DP of at least this noise
            multiplier (the server chooses the DP settings; this is the node's floor).
        identity_path, roster_path, roster_digest: the node's identity key file, the
            roster file and its SHA-256 (hex); node config ``fedcrypt-identity``,
            ``fedcrypt-roster`` and ``fedcrypt-roster-digest`` take precedence. With them the
            node joins only the malicious-server mode; without, only honest-but-curious
            rounds, which it logs once.
        max_colluders: the colluding clients this node assumes (node config
            ``fedcrypt-max-colluders`` first): a round declaring fewer is refused.
        state_key_path: the key file that seals the node's state (node config
            ``fedcrypt-state-key`` first; see :mod:`._state`).
    """

    RECORD = RECORD
    STAGES = Stage
    SENDS = "this client only sends masked updates"
    TRAIN_STAGE = Stage.MASKED_INPUT
    LABEL = "secagg"
    REQUEST_FIELDS = {Stage.ADVERTISE_KEYS.name: _SETUP_FIELDS}

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
        state_key_path: str | os.PathLike[str] | None = None,
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
            isinstance(min_noise_multiplier, bool) or not isinstance(min_noise_multiplier, (int, float))
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

    def __repr__(self) -> str:
        return (
            f"SecAggMod(allow_plaintext={self.allow_plaintext}, min_clients={self.min_clients}, "
            f"min_noise_multiplier={self.min_noise_multiplier}, roster={'<set>' if self.roster_path else None})"
        )

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
        if stage is Stage.MASKED_INPUT and not hmac.compare_digest(train_digest(msg.content), kept_.model):
            raise ProtocolViolationError(
                f"{where}: the train records differ from those the round was set up with "
                "(a server may not send different models to different clients)",
                party=client.client_id, round=client.round_id, stage=stage,
            )
        if client.stage is not stage:
            raise UnexpectedMessageError(f"server message for stage {stage.name}", party=client.client_id, round=client.round_id, stage=client.stage)
        request = decode_message(bytes_field(record, "payload", where))
        fields: dict[str, Any] = {}
        if stage is Stage.MASKED_INPUT:
            if not isinstance(request, ShareBundle):
                raise UnexpectedMessageError(
                    f"{type(request).__name__} is not accepted in this stage", party=client.client_id, round=client.round_id, stage=stage
                )
            layout, vector = self._train(msg, ctxt, kept_, call_next)
            client.set_input(vector)
            fields["layout"] = layout.to_bytes()
        fields["payload"] = client.handle(request).to_bytes()
        self._save(ctxt, kept_)
        return fields

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
        nodes_bytes = bytes_field(record, "nodes", where)
        nodes = unpack_nodes(nodes_bytes)
        client_id, round_id, max_weight = record["client-id"], record["round"], record["max-weight"]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (client_id, round_id)) or round_id < 0:
            raise MalformedMessageError(f"{where}: client-id and round must be integers", party=node)
        if not isinstance(max_weight, float) or not (math.isfinite(max_weight) and max_weight > 0):
            raise MalformedMessageError(f"{where}: max-weight must be a positive float", party=node)
        model = bytes_field(record, "model", where)
        if len(model) != 32:
            raise MalformedMessageError(f"{where}: model must be a 32-byte digest", party=node)
        joined = int(ctxt.state[JOINED]["round"]) if JOINED in ctxt.state.keys() else None
        check_join(config, nodes=nodes, client_id=client_id, node=msg.metadata.dst_node_id, round_id=round_id,
                   last_round=joined, min_clients=self.min_clients)
        dp_bytes = bytes_field(record, "dp", where)
        dp = _unpack_dp(dp_bytes, config.num_clients)
        if dp is not None and config.bits != 32:
            raise MalformedMessageError(f"{where}: distributed DP needs the 32-bit ring")
        if self.min_noise_multiplier is not None and (dp is None or dp.config.noise_multiplier < self.min_noise_multiplier):
            offered = "no distributed DP" if dp is None else f"noise multiplier {dp.config.noise_multiplier}"
            raise ProtocolViolationError(
                f"{where}: the round offers {offered}; this client requires at least {self.min_noise_multiplier}",
                party=client_id, round=round_id, stage=Stage.ADVERTISE_KEYS,
            )
        members_bytes = bytes_field(record, "members", where)
        members = unpack_members(members_bytes) if members_bytes else ()
        roster, identity = self._credentials(ctxt)
        signing_key, verify_keys = round_keys(
            config, client_id, members, roster, identity, required_colluders=self._required_colluders(ctxt), round_id=round_id
        )
        binding = round_binding(msg.metadata.run_id, round_id, nodes_bytes + dp_bytes + model + members_bytes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once by _credentials
            client = ClientProtocol(
                config, client_id, round_id=round_id, associated_data=binding, signing_key=signing_key, verify_keys=verify_keys
            )
        advert = client.advertise()
        self._save(ctxt, _Kept(client, max_weight, dp_bytes, model))
        ctxt.state[JOINED] = ConfigRecord({"round": round_id})
        return {"payload": advert.to_bytes()}

    def _train(self, msg: "Message", ctxt: "Context", kept_: _Kept, call_next: _Next) -> tuple[Layout, np.ndarray]:
        """Run the app's train function; the layout and the vector to mask."""
        client = kept_.client
        context = {"party": client.client_id, "round_id": client.round_id, "stage": Stage.MASKED_INPUT}
        reply = run_app_train(msg, ctxt, call_next, RECORD, **context)
        arrays_name, metrics_name, tensors, _, spec = reply
        dp = _unpack_dp(kept_.dp, client.config.num_clients, spec.size)
        if dp is None:
            layout, values, weight = flat_update(reply, weight_key=self.weight_key, max_weight=kept_.max_weight, **context)
            return layout, weighted(values, weight, kept_.max_weight)
        # distributed DP: the update delta against the global model, clipped, noised, in the ring
        where = f"server message to client {client.client_id}"
        if arrays_name not in msg.content.keys() or not isinstance(msg.content[arrays_name], ArrayRecord):
            raise RecordMismatchError(
                f"{where}: distributed DP needs the global model in ArrayRecord {arrays_name!r}", missing=(arrays_name,),
                party=client.client_id, round=client.round_id, stage=Stage.MASKED_INPUT,
            )
        global_tensors = {name: array.numpy() for name, array in msg.content[arrays_name].items()}
        if TensorSpec.from_tensors(global_tensors).digest() != spec.digest():
            raise SpecMismatchError(f"{where}: the trained model's layout differs from the global model's")
        delta = spec.flatten(tensors).astype(np.float64) - spec.flatten(global_tensors).astype(np.float64)
        layout = Layout(arrays_name, metrics_name, spec, (), self.weight_key, dp.ring_length)
        return layout, dp.encode(delta).astype(client.config.codec.ring_dtype)

    def _load(self, ctxt: "Context", stage: Stage) -> _Kept:
        """The kept client and round settings, opened (refused if tampered, swapped or under another key)."""
        key = node_state_key(ctxt, key_path=self.state_key_path, identity_path=self.identity_path)
        state = kept(ctxt, key, STATE)
        if state is None:
            raise UnexpectedMessageError(
                f"a {stage.name} message before this node joined a round (it never advertised keys)", party=ctxt.node_id, stage=stage
            )
        _, identity = self._credentials(ctxt)
        client_bytes, max_weight, dp, model = unpack_list(state, 4, f"{STATE} of node {ctxt.node_id}")
        if len(max_weight) != 8 or len(model) != 32:
            raise MalformedMessageError(f"{STATE} of node {ctxt.node_id}: bad round settings", party=ctxt.node_id)
        client = ClientProtocol.from_state_bytes(client_bytes, signing_key=None if identity is None else identity.signing_key)
        return _Kept(client, struct.unpack(">d", max_weight)[0], dp, model)

    def _save(self, ctxt: "Context", kept_: _Kept) -> None:
        """Seal the client and the round settings into ``Context.state`` (dropped once the client is done)."""
        if kept_.client.stage in (Stage.DONE, Stage.ABORTED):
            if STATE in ctxt.state.keys():
                del ctxt.state[STATE]
            return
        key = node_state_key(ctxt, key_path=self.state_key_path, identity_path=self.identity_path)
        state = pack_list([kept_.client.to_state_bytes(), struct.pack(">d", kept_.max_weight), kept_.dp, kept_.model])
        keep(ctxt, key, STATE, state, stage=kept_.client.stage.name)


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
class SecAggRoundReport(ReportDict):
    """What happened in one SecAgg round (public information only).

    Attributes:
        round: the round id (the strategy's server round).
        nodes: the round's node ids, in client-id order.
        survivors: nodes whose updates are in the aggregate.
        dropped: node -> the stage it stopped answering in (or was refused in).
        refused: node -> why its message was refused (a typed error's text).
        stage_seconds: wall time per stage name.
        aborted: ``"ErrorType: why"`` when the round returned no reply, else ``None``.
        bytes_down / bytes_up: protocol payload bytes sent / received (train records excluded).
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
    al. 2017; SecAgg+ graphs of Bell et al. 2020): the server learns
    ``sum_{u in survivors} w_u/M * [x_u, metrics_u, 1]`` only. This class moves bytes: the
    round's config comes from :func:`~fedcrypt.secagg.setup.config_for`, each reply is fed
    to the protocol as it arrives, and silent nodes are dropped after ``stage_timeout``.

    Args:
        threshold: Shamir threshold as a fraction of the share holders.
        neighbours: SecAgg+ degree ``k``; ``None`` or ``>= n-1``: the complete graph.
        bits: ring size, 32 or 64.
        clip: L-infinity clip of an encoded coordinate ``w/M * x``.
        max_weight: ``M``, the largest FedAvg weight a node may claim.
        stage_timeout: seconds to wait for the replies of one stage.
        train_timeout: seconds to wait at the masked-input stage; default the strategy's timeout.
        min_clients: rounds with fewer sampled nodes are refused.
        rounding: fixed-point rounding, ``"stochastic"`` or ``"nearest"``.
        dp_noise_multiplier: ``z``; switches on distributed DP (Kairouz et al. 2021): the
            decoded sum carries noise of std ``z * dp_clip``; the strategy gets
            ``global + noisy mean delta``, with ``num-examples`` = survivors. Needs ``bits=32``.
        dp_clip, dp_bits, dp_mechanism: the L2 clip, ring width and ``"ddgauss"`` / ``"skellam"``.
        max_colluders: ``c``, nodes that may collude with the server (raises the threshold).
        roster: the federation's :class:`~fedcrypt.identity.Roster`: rounds run the
            malicious-server mode; each node is asked once which member it is.
        poll_interval: seconds between two pulls of replies.
    """

    RECORD = RECORD
    REPORT = SecAggRoundReport
    LABEL = "secagg"
    REPLY_FIELDS = {Stage.MASKED_INPUT.name: frozenset({"stage", "payload", "layout"})}

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
        poll_interval: float = 3.0,
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
        for name, value in (("stage_timeout", stage_timeout), ("train_timeout", train_timeout), ("poll_interval", poll_interval)):
            if value is not None and (not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 2:
            raise ValueError(f"min_clients must be an integer >= 2, got {min_clients!r}")
        SecAggConfig(num_clients=2, threshold=2, bits=bits, clip=clip, rounding=rounding)  # fail now, not in round 1
        if dp_noise_multiplier is not None:
            DistributedDpConfig(dp_noise_multiplier, dp_clip, 2, bits=dp_bits, mechanism=dp_mechanism)  # type: ignore[arg-type]
            if bits != 32:
                raise ValueError(f"distributed DP needs bits=32 (the DP ring divides 2^32), got {bits}")
        super().__init__()
        self.dp_noise_multiplier = None if dp_noise_multiplier is None else float(dp_noise_multiplier)
        self.dp_clip, self.dp_bits, self.dp_mechanism = float(dp_clip), dp_bits, dp_mechanism
        self.threshold, self.neighbours, self.bits, self.clip = float(threshold), neighbours or None, bits, float(clip)
        self.max_weight = float(max_weight)
        self.stage_timeout = float(stage_timeout)
        self.train_timeout = None if train_timeout is None else float(train_timeout)
        self.poll_interval = float(poll_interval)
        self.min_clients, self.rounding, self.max_colluders, self.roster = min_clients, rounding, max_colluders, roster
        self._names: dict[int, str] = {}  # node id -> roster member, as the node proved it

    def __repr__(self) -> str:
        return (
            f"SecAggWorkflow(threshold={self.threshold}, neighbours={self.neighbours}, bits={self.bits}, "
            f"clip={self.clip}, max_weight={self.max_weight}, stage_timeout={self.stage_timeout})"
        )

    def config_for(self, num_clients: int, *, round_id: int | None = None, members: tuple[str, ...] = ()) -> SecAggConfig:
        """The SecAggConfig of a round of ``num_clients`` clients (:func:`~fedcrypt.secagg.setup.config_for`)."""
        return config_for(
            num_clients, threshold=self.threshold, neighbours=self.neighbours, bits=self.bits, clip=self.clip,
            rounding=self.rounding, max_colluders=self.max_colluders, roster=self.roster, round_id=round_id, members=members,
        )

    def _check_train(self, train_messages: list["Message"]) -> None:
        digests = {train_digest(m.content) for m in train_messages}
        if len(digests) != 1:
            raise ValueError(
                "secure aggregation needs the same train records (model and config) for every node; "
                f"the strategy sent {len(digests)} different ones"
            )

    def _round(
        self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: SecAggRoundReport,
        train_timeout: float,
    ) -> "Message":
        model = train_digest(by_node[nodes[0]].content)
        names: tuple[str, ...] = ()
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
        dp_bytes = b""
        if self.dp_noise_multiplier is not None:  # a public rotation seed, fresh per round: it needs agreement, not secrecy
            mechanism = MECHANISMS.index(self.dp_mechanism)
            dp_bytes = _DP_FORMAT.pack(self.dp_noise_multiplier, self.dp_clip, self.dp_bits, mechanism, secrets.token_bytes(32))
        nodes_bytes, members = pack_nodes(nodes), pack_members(names) if names else b""
        run_id = grid.run.run_id
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)  # the nodes log their mode
            server = ServerProtocol(config, round_id=round_id, associated_data=round_binding(run_id, round_id, nodes_bytes + dp_bytes + model + members))
        setup = {
            "stage": Stage.ADVERTISE_KEYS.name, "config": dump_config(config), "nodes": nodes_bytes, "round": round_id,
            "payload": b"", "max-weight": self.max_weight, "dp": dp_bytes, "model": model, "members": members,
        }
        requests = {node: {**setup, "client-id": cid} for cid, node in enumerate(nodes)}
        index = {node: cid for cid, node in enumerate(nodes)}
        layouts: list[Layout] = []
        try:
            stage = Stage.ADVERTISE_KEYS
            while stage not in (Stage.DONE, Stage.ABORTED):
                masked = stage is Stage.MASKED_INPUT
                self._exchange(
                    grid, stage, requests, report, round_id=round_id, timeout=train_timeout if masked else None,
                    extra=by_node if masked else None, accept=partial(self._receive, server, index, stage, layouts),
                )
                outgoing = server.end_stage()
                stage = server.stage
                requests = {nodes[cid]: {"stage": stage.name, "payload": m.to_bytes()} for cid, m in outgoing.items()}
        except RoundAbortedError as exc:
            raise Abort(exc) from None
        result = server.result
        report.survivors = [nodes[cid] for cid in result.survivors]
        group = str(round_id)
        if dp_bytes:
            return self._reply_dp(dp_bytes, config, result.ring_sum, len(result.survivors), layouts[0], by_node, report, group)
        total = config.codec.decode_sum(result.ring_sum, len(result.survivors))
        return average_reply(layouts[0], total, max_weight=self.max_weight, run_id=run_id, group=group, stage=Stage.DONE)

    def _receive(
        self, server: ServerProtocol, index: dict[int, int], stage: Stage, layouts: list[Layout], node: int, record: ConfigRecord
    ) -> None:
        """Feed one reply to the protocol (its layout checked against the others' at MASKED_INPUT)."""
        cid, where = index[node], f"reply from node {node}"
        payload = bytes_field(record, "payload", where)
        if stage is Stage.MASKED_INPUT:
            layout = Layout.from_bytes(bytes_field(record, "layout", where))
            if layouts and layout != layouts[0]:
                raise UnexpectedMessageError(f"{where}: its model layout differs from the other clients'", party=cid, stage=stage)
            message = MaskedInput.from_bytes(payload, expected_length=layout.dimension)
        else:
            message = decode_message(payload)
        if message.party != cid:
            raise UnexpectedMessageError(f"{where} claims to be client {message.party}", party=cid, stage=stage)
        server.receive(message)
        if stage is Stage.MASKED_INPUT and not layouts:
            layouts.append(layout)

    def _identify(self, grid: "Grid", nodes: list[int], report: SecAggRoundReport, round_id: int) -> dict[int, str]:
        """Roster members of the round's nodes: known ones from earlier rounds, the others asked now."""
        roster, run_id, challenge = self.roster, grid.run.run_id, secrets.token_bytes(32)
        assert roster is not None

        def verify(node: int, record: ConfigRecord) -> str:
            name = record["name"]
            if not isinstance(name, str):
                raise MalformedMessageError(f"identification reply from node {node}: name must be a string", party=node)
            signature = bytes_field(record, "signature", f"identification reply from node {node}")
            ed25519_verify(roster.key(name), signature, identify_bytes(run_id, node, challenge, name))
            return name

        unknown = {node: {"challenge": challenge} for node in nodes if node not in self._names}
        answers = self._exchange(
            grid, "IDENTIFY", unknown, report, round_id=round_id, accept=verify, record=IDENTIFY_RECORD,
            fields=frozenset({"name", "signature"}),
        )
        for node, name in answers.items():
            for other in [n for n, member in self._names.items() if member == name]:
                del self._names[other]  # the member came back under another node id
            self._names[node] = name
        return {node: self._names[node] for node in nodes if node in self._names}

    def _reply_dp(
        self, dp_bytes: bytes, config: SecAggConfig, ring_sum: np.ndarray, count: int, layout: Layout,
        by_node: dict[int, "Message"], report: SecAggRoundReport, group: str,
    ) -> "Message":
        dp = _unpack_dp(dp_bytes, config.num_clients, layout.spec.size)
        assert dp is not None
        mean_delta = dp.decode(ring_sum, count) / count
        first = next(iter(by_node.values()))
        global_tensors = {name: array.numpy() for name, array in first.content[layout.arrays_record].items()}
        new = layout.spec.flatten(global_tensors).astype(np.float64) + mean_delta
        tensors = layout.spec.unflatten(new.astype(np.float32))
        arrays = ArrayRecord({name: Array(np.asarray(value)) for name, value in tensors.items()})
        report.dp = {
            "mechanism": dp.config.mechanism, "noise_multiplier": dp.config.noise_multiplier, "clip": dp.config.clip,
            "expected_clients": dp.config.expected_clients, "survivors": count, "noise_stddev": dp.noise_stddev(count) / count,
        }
        content = RecordDict({layout.arrays_record: arrays, layout.metrics_record: MetricRecord({layout.weight_key: float(count)})})
        return strategy_reply(content, first.metadata.run_id, group)


class SecAggGrid(WorkflowGrid):
    """A ``Grid`` whose train rounds are fedcrypt SecAgg rounds (see :class:`~._common.WorkflowGrid`).

    ``strategy.start(grid=SecAggGrid(grid, SecAggWorkflow(...)), ...)`` is the whole change a
    ServerApp needs; the ClientApp adds :data:`secagg_mod`.
    """

    WORKFLOW = SecAggWorkflow
