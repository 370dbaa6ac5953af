"""fedcrypt CKKS aggregation for Flower's Message API (single-key TenSEAL backend, extra ``he``).

The CKKS counterpart of :mod:`fedcrypt.integrations.flower`, as thin: it moves bytes
between Flower messages and the sans-IO :mod:`fedcrypt.he` objects
(:class:`~fedcrypt.he.KeyOwner` on the nodes, :class:`~fedcrypt.he.AggregatorContext` on
the server) and decides nothing about the cryptography.

* :class:`CkksMod` (instance :data:`ckks_mod`): a ClientApp mod. It keeps the node's CKKS
  key in ``Context.state`` (sealed under the node's state key, which never enters the
  Context: :mod:`~fedcrypt.integrations._flower_state`), runs the app's own ``@app.train``
  function at the encrypt stage, flattens and weights its reply
  (:func:`~fedcrypt.integrations.flower.weighted_update`) and uploads only the CKKS ciphertext; on request it decrypts one aggregate per round.
* :class:`CkksGrid` (with :class:`CkksWorkflow` inside): wraps the ServerApp's ``Grid`` so
  that any strategy's train round becomes a CKKS round; the strategy receives one reply
  holding the weighted average and total weight, as with :class:`~fedcrypt.integrations.flower.SecAggGrid`.

One round (all messages are Flower ``train`` messages carrying one ``ConfigRecord`` named
:data:`CKKS_RECORD`)::

    CONTEXT   server -> nodes     stage, round, payload=b""
              nodes -> server     stage, payload=public context (b"" without a key), x25519 (b"" with a key)
    DEAL      server -> dealer    stage, round, payload=CkksParams bytes (b"" if it holds the key), peers, keys
                                  (peers: the node ids, 8 bytes each, ascending; keys: their X25519 keys, 32 bytes each)
              dealer -> server    stage, payload=public context, x25519, sealed (one per peer)
    INSTALL   server -> peer      stage, round, payload=sealed key, dealer, dealer-key, fingerprint
              peer -> server      stage, payload=public context
    ENCRYPT   server -> holders   stage, round, payload=b"", fingerprint, max-weight  (+ the strategy's train records)
              holders -> server   stage, payload=upload blob, layout
    DECRYPT   server -> decryptor stage, round, payload=aggregate blob
              decryptor -> server stage, payload=decrypted sum (float64, little-endian)

DEAL and INSTALL run only in the in-band dealer key setup, and only for nodes that have no
key yet (normally the first round). A message whose records or fields differ from this
table raises :class:`~fedcrypt.errors.RecordMismatchError` naming what differed, on the
side that received it.

Key setup, two ways:

* **out of band** (the secure option): each node loads a key file written by
  ``KeyOwner.to_bytes(include_secret_key=True)``, whose path is the node config's (or else
  the run config's) ``ckks-key-path``, or ``CkksMod(key_path=...)``; nodes upload only the
  public context and the server checks that every node reports the same fingerprint. A
  node with a key file refuses DEAL and INSTALL.
* **in-band dealer** (convenient): nodes without a key answer CONTEXT with a fresh X25519
  public key; the dealer (the lowest-id key holder, else the lowest-id node) generates a
  :class:`~fedcrypt.he.KeyOwner` with the server's public parameters and seals it to each
  peer with :func:`fedcrypt.he.seal_key_for_peer` (X25519 + HKDF + AES-GCM, bound to the
  sender, recipient, round and fingerprint); the server relays the sealed keys and gets
  the public context only.

Weighting (the weight stays hidden, as in the SecAgg mode): a node with weight ``w`` (its
``num-examples`` metric, at most ``max_weight`` ``M``) encrypts ``w/M * [x, metrics, 1]``;
the server adds the uploads with weight 1 each; a decryptor returns the decrypted sum and
the server divides: ``sum(w x) / sum(w)``, plus ``M * sum(w/M)`` as the total weight. The
error is within :meth:`CkksParams.sum_error_bound` of the sum (see :func:`fedavg_error_bound`).

Trust model (also in SECURITY.md): honest-but-curious server only. The server never holds
the secret key, so by RLWE it learns nothing about one upload from the ciphertexts, and
the decryptors tell it only the sum. But: (1) without authenticated X25519 keys a
malicious server can man-in-the-middle the in-band dealer setup and learn the key; (2)
single-key CKKS means any key holder colluding with the server decrypts any upload
(threshold CKKS is the fix); (3) blob headers are unauthenticated, so a malicious server
can present one node's upload as an "aggregate" to a decryptor; the decryptor's checks
(one decryption per round, at least ``min_clients`` contributions in the header, an
aggregate-kind blob) do not prevent that. The SecAgg mode is the one with protections
against a malicious server.

Invariants:

* the server never holds, receives or builds a secret key (it loads public contexts only,
  and :meth:`AggregatorContext.from_bytes` refuses anything carrying a secret key);
* uploads are folded into one :class:`~fedcrypt.he.EncryptedSum` as the replies are
  processed (memory: one aggregate plus one upload), each validated before it is added;
* a node encrypts at most once per round id, and releases at most one decryption per upload
  it made itself (counted in its own state, not by the server's round ids); every release
  is flooded (:meth:`~fedcrypt.he.KeyOwner.decrypt`, Li-Micciancio 2021), and an aggregate
  whose header's total weight is not its number of weight-1 uploads is refused;
* a node that holds a key never deals it (DEAL runs once, at set-up, on a node without a key);
* nothing a node sends ends the run: a bad reply (malformed, wrong type, or a parser that
  raised an untyped exception) drops that node and is reported as a typed error;
* with more than one decryptor the server requires bit-identical results (CKKS decryption
  is deterministic); otherwise the round returns no reply and its report says why;
* nothing secret is logged, put in an error message or in a ``repr``.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import logging
import math
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from fedcrypt._optional import require
from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import (
    ContextMismatchError,
    FedcryptError,
    MalformedMessageError,
    ProtocolViolationError,
    RoundAbortedError,
    SecretKeyError,
    UnexpectedMessageError,
)
from fedcrypt.he import AggregatorContext, BlobKind, CkksParams, KeyOwner, open_key_from_peer, peek_header, seal_key_for_peer

from .flower import (
    Layout,
    SecAggGrid,
    average_reply,
    bytes_field,
    pack_nodes,
    unpack_nodes,
    weighted_update,
)

require("flwr", "flower")

from flwr.app import ConfigRecord, Context, Message  # noqa: E402 - after the extra check
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
    unpack_list as _unpack_list,
)
from ._flower_state import StateKey, node_state_key, open_record, seal_record  # noqa: E402

__all__ = [
    "CKKS_RECORD",
    "CKKS_STATE",
    "CkksStage",
    "CkksMod",
    "ckks_mod",
    "CkksWorkflow",
    "CkksGrid",
    "CkksRoundReport",
    "fedavg_error_bound",
]

log = logging.getLogger(__name__)

#: Name of the ConfigRecord that carries the CKKS messages.
CKKS_RECORD = "fedcrypt.ckks"
#: Name of the ConfigRecord in ``Context.state`` with the node's key and its replay guards.
CKKS_STATE = "fedcrypt.ckks.state"

_TRAIN = "train"
_X25519_BYTES = 32
_KEY_PATH = "ckks-key-path"
_COUNTERS = struct.Struct(">qQQ")  # last round encrypted (-1: none), uploads made, decryptions released


class CkksStage(enum.Enum):
    """The stages of a CKKS round over Flower (see the module docstring)."""

    CONTEXT = "CONTEXT"
    DEAL = "DEAL"
    INSTALL = "INSTALL"
    ENCRYPT = "ENCRYPT"
    DECRYPT = "DECRYPT"


#: Fields of the server's message, per stage.
_REQUEST_FIELDS: dict[CkksStage, frozenset[str]] = {
    CkksStage.CONTEXT: frozenset({"stage", "round", "payload"}),
    CkksStage.DEAL: frozenset({"stage", "round", "payload", "peers", "keys"}),
    CkksStage.INSTALL: frozenset({"stage", "round", "payload", "dealer", "dealer-key", "fingerprint"}),
    CkksStage.ENCRYPT: frozenset({"stage", "round", "payload", "fingerprint", "max-weight"}),
    CkksStage.DECRYPT: frozenset({"stage", "round", "payload"}),
}
#: Fields of a node's reply, per stage.
_REPLY_FIELDS: dict[CkksStage, frozenset[str]] = {
    CkksStage.CONTEXT: frozenset({"stage", "payload", "x25519"}),
    CkksStage.DEAL: frozenset({"stage", "payload", "x25519", "sealed"}),
    CkksStage.INSTALL: frozenset({"stage", "payload"}),
    CkksStage.ENCRYPT: frozenset({"stage", "payload", "layout"}),
    CkksStage.DECRYPT: frozenset({"stage", "payload"}),
}


@contextlib.contextmanager
def _peer_bytes(where: str, node: int, stage: "CkksStage") -> Iterator[None]:
    """Parse a peer's bytes: only :class:`FedcryptError` comes out (anything else becomes
    :class:`MalformedMessageError`, without the original text, which may quote the bytes)."""
    try:
        yield
    except FedcryptError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes reached a parser that raised untyped
        raise MalformedMessageError(f"{where}: unparseable ({type(exc).__name__})", party=node, stage=stage) from None


def _typed(exc: Exception, where: str, node: int, stage: "CkksStage") -> FedcryptError:
    """A peer's bad bytes as a typed error (see :func:`_peer_bytes`)."""
    if isinstance(exc, FedcryptError):
        return exc
    return MalformedMessageError(f"{where}: unparseable ({type(exc).__name__})", party=node, stage=stage)


def _layout_digest(layout: Layout) -> bytes:
    return hashlib.sha256(b"fedcrypt/flower-ckks-layout/v1" + layout.to_bytes()).digest()


def fedavg_error_bound(params: CkksParams, weights: Iterable[float], max_weight: float) -> float:
    """Worst-case error of the FedAvg average of one CKKS round (per coordinate, ``|x| <= clip``).

    The decrypted numerator ``A = S + e1`` and denominator ``B = W + e2`` (``S = sum w/M x``,
    ``W = sum w/M``) each carry at most ``E = params.sum_error_bound(n unit weights)``, so
    ``|A/B - S/W| <= E (W + |S|) / (W (W - E))`` with ``|S| <= W clip``; float32 rounding
    of the result adds ``clip * 2^-23`` relative (here ``2^-22``).
    """
    ws = [float(w) / max_weight for w in weights]
    e = params.sum_error_bound([1.0] * len(ws))
    w = sum(ws)
    return e * (w + w * params.clip) / (w * (w - e)) + params.clip * 2.0**-22


# ============================================================================ client side
class CkksMod(StagedMod):
    """A Flower ClientApp mod that runs the node side of fedcrypt CKKS aggregation.

    Math: symmetric RLWE encryption of ``w/M * [x, metrics, 1]`` under the group's CKKS key
    (Cheon-Kim-Kim-Song 2017; :class:`~fedcrypt.he.KeyOwner`); decryption of the server's
    homomorphic sum on request. Key transport in the dealer setup: AES-256-GCM under
    ``HKDF(X25519(dealer, peer))`` (:mod:`fedcrypt.he.keyshare`).

    Threat model: honest-but-curious server (see the module docstring). What the mod
    enforces whatever the server does: records and fields exactly as the wire format
    says; one encryption and one decryption per round id; no decryption of an upload-kind
    blob or of an aggregate whose header counts fewer than ``min_clients``
    contributions; no key from a dealer when the node has a key file or
    ``allow_dealer=False``; no cleartext update unless ``allow_plaintext=True``.

    Args:
        key_path: a key file (``KeyOwner.to_bytes(include_secret_key=True)``) used when
            neither the node config nor the run config names ``ckks-key-path``.
        allow_dealer: accept a key sent by a dealer node through the server (when the node
            has no key file).
        allow_plaintext: pass a ``train`` message without fedcrypt's record to the app.
        min_clients: the fewest contributions an aggregate must claim to be decrypted.
        weight_key: the MetricRecord key of the FedAvg weight.
        state_key_path: the key file that seals the node's CKKS key and counters in
            ``Context.state`` (node config ``fedcrypt-state-key`` takes precedence, then the
            identity key ``fedcrypt-identity``, then the default key file: see
            :mod:`fedcrypt.integrations._flower_state`).
    """

    RECORD = CKKS_RECORD
    STAGES = CkksStage
    REQUEST_FIELDS = _REQUEST_FIELDS
    SENDS = "this client only sends encrypted updates"
    TRAIN_STAGE = CkksStage.ENCRYPT
    HANDLERS = {
        CkksStage.CONTEXT: "_context",
        CkksStage.DEAL: "_deal",
        CkksStage.INSTALL: "_install",
        CkksStage.ENCRYPT: "_encrypt",
        CkksStage.DECRYPT: "_decrypt",
    }

    def __init__(
        self,
        *,
        key_path: str | os.PathLike[str] | None = None,
        allow_dealer: bool = True,
        allow_plaintext: bool = False,
        min_clients: int = 2,
        weight_key: str = "num-examples",
        state_key_path: str | os.PathLike[str] | None = None,
    ) -> None:
        for name, value in (("allow_dealer", allow_dealer), ("allow_plaintext", allow_plaintext)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 2:
            raise ValueError(f"min_clients must be an integer >= 2, got {min_clients!r}")
        for name, path in (("key_path", key_path), ("state_key_path", state_key_path)):
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path or None, got {type(path).__name__}")
        self.key_path = None if key_path is None else os.fspath(key_path)
        self.state_key_path = None if state_key_path is None else os.fspath(state_key_path)
        self.allow_dealer = allow_dealer
        self.allow_plaintext = allow_plaintext
        self.min_clients = min_clients
        self.weight_key = weight_key

    def __repr__(self) -> str:
        return (
            f"CkksMod(key_path={'<set>' if self.key_path else None}, allow_dealer={self.allow_dealer}, "
            f"allow_plaintext={self.allow_plaintext}, min_clients={self.min_clients})"
        )

    # ------------------------------------------------------------------ state
    def _configured_key_path(self, ctxt: "Context") -> str | None:
        for source in (ctxt.node_config, ctxt.run_config):
            value = source.get(_KEY_PATH) if source is not None else None
            if isinstance(value, str) and value:
                return value
        return self.key_path or None

    def _state_key(self, ctxt: "Context") -> StateKey:
        return node_state_key(ctxt, key_path=self.state_key_path)

    def _state(self, ctxt: "Context") -> dict[str, Any]:
        """The node's key, pending X25519 key and replay counters, opened from ``Context.state``."""
        if CKKS_STATE not in ctxt.state.keys():
            return {"key": b"", "pending": b"", "encrypted": -1, "uploads": 0, "decryptions": 0}
        where = f"{CKKS_STATE} of node {ctxt.node_id}"
        key, pending, counters = _unpack_list(open_record(ctxt, self._state_key(ctxt), CKKS_STATE), 3, where)
        if len(pending) not in (0, _X25519_BYTES) or len(counters) != _COUNTERS.size:
            raise MalformedMessageError(f"{where}: bad field lengths", party=ctxt.node_id)
        encrypted, uploads, decryptions = _COUNTERS.unpack(counters)
        return {"key": key, "pending": pending, "encrypted": encrypted, "uploads": uploads, "decryptions": decryptions}

    def _save(self, ctxt: "Context", state: dict[str, Any]) -> None:
        """Seal the node's state into ``Context.state`` (see :mod:`~fedcrypt.integrations._flower_state`)."""
        counters = _COUNTERS.pack(int(state["encrypted"]), int(state["uploads"]), int(state["decryptions"]))
        plain = _pack_list([state["key"], state["pending"], counters])
        ctxt.state[CKKS_STATE] = ConfigRecord(seal_record(ctxt, self._state_key(ctxt), CKKS_STATE, plain))

    def _owner(self, ctxt: "Context", node: int, stage: CkksStage) -> KeyOwner:
        state = self._state(ctxt)
        if not state["key"]:
            raise SecretKeyError(
                f"node {node} holds no CKKS key at stage {stage.name} (no key file and no key from a dealer)"
            )
        return KeyOwner.from_bytes(state["key"])

    # ------------------------------------------------------------------ stages
    def _context(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: Any
    ) -> dict[str, Any]:
        node = msg.metadata.dst_node_id
        if payload:
            raise MalformedMessageError(f"server message to node {node}: CONTEXT carries no payload", party=node)
        state = self._state(ctxt)
        path = self._configured_key_path(ctxt)
        if path is not None:
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as exc:
                raise SecretKeyError(f"node {node}: cannot read its CKKS key file ({type(exc).__name__})") from None
            owner = KeyOwner.from_bytes(data)
            state.update(key=owner.to_bytes(include_secret_key=True), pending=b"")
            self._save(ctxt, state)
            return {"payload": owner.aggregator_context().to_bytes(), "x25519": b""}
        if state["key"]:
            owner = KeyOwner.from_bytes(state["key"])
            return {"payload": owner.aggregator_context().to_bytes(), "x25519": b""}
        if not self.allow_dealer:
            raise SecretKeyError(f"node {node} has no CKKS key file and does not accept a key from a dealer")
        pair = X25519KeyPair.generate()
        state["pending"] = pair.private_bytes().reveal()
        self._save(ctxt, state)
        return {"payload": b"", "x25519": pair.public_bytes}

    def _check_dealer_allowed(self, ctxt: "Context", node: int, stage: CkksStage) -> None:
        if self._configured_key_path(ctxt) is not None or not self.allow_dealer:
            raise ProtocolViolationError(
                f"node {node} takes part in no in-band key setup (it uses an out-of-band key or allow_dealer=False)",
                party=node,
                stage=stage,
            )

    def _deal(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: Any
    ) -> dict[str, Any]:
        node = msg.metadata.dst_node_id
        where = f"server message to node {node}"
        self._check_dealer_allowed(ctxt, node, CkksStage.DEAL)
        raw_peers = bytes_field(record, "peers", where)
        peers = unpack_nodes(raw_peers) if raw_peers else []
        keys = bytes_field(record, "keys", where)
        if node in peers:
            raise MalformedMessageError(f"{where}: the dealer is among its own peers", party=node, stage=CkksStage.DEAL)
        if len(keys) != _X25519_BYTES * len(peers):
            raise MalformedMessageError(f"{where}: {len(keys)} bytes of keys for {len(peers)} peers", party=node)
        state = self._state(ctxt)
        if state["key"]:
            # Review break 3: a DEAL after set-up made a key holder seal the group key to
            # X25519 keys the server chose. A node deals only the key it generates now.
            raise UnexpectedMessageError(
                f"{where}: this node already holds a CKKS key and never deals it (a DEAL after key set-up)",
                party=node, stage=CkksStage.DEAL,
            )
        owner = KeyOwner.generate(CkksParams.from_bytes(payload))
        pair = X25519KeyPair.generate()
        sealed = [
            seal_key_for_peer(
                owner,
                sender=pair,
                sender_id=node,
                recipient_id=peer,
                recipient_public=keys[i * _X25519_BYTES : (i + 1) * _X25519_BYTES],
                round_id=round_id,
            )
            for i, peer in enumerate(peers)
        ]
        state.update(key=owner.to_bytes(include_secret_key=True), pending=b"")
        self._save(ctxt, state)
        return {"payload": owner.aggregator_context().to_bytes(), "x25519": pair.public_bytes, "sealed": _pack_list(sealed)}

    def _install(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: Any
    ) -> dict[str, Any]:
        node = msg.metadata.dst_node_id
        where = f"server message to node {node}"
        self._check_dealer_allowed(ctxt, node, CkksStage.INSTALL)
        state = self._state(ctxt)
        if state["key"]:
            raise UnexpectedMessageError(f"{where}: this node already holds a CKKS key", party=node, stage=CkksStage.INSTALL)
        if not state["pending"]:
            raise UnexpectedMessageError(
                f"{where}: a key for a node that never asked for one (no CONTEXT exchange)", party=node, stage=CkksStage.INSTALL
            )
        dealer = _int_field(record, "dealer", where)
        dealer_key = bytes_field(record, "dealer-key", where)
        fingerprint = bytes_field(record, "fingerprint", where)
        if len(dealer_key) != _X25519_BYTES or len(fingerprint) != 32:
            raise MalformedMessageError(f"{where}: dealer-key and fingerprint must be 32 bytes each", party=node)
        owner = open_key_from_peer(
            payload,
            recipient=X25519KeyPair.from_private_bytes(state["pending"]),
            recipient_id=node,
            sender_id=dealer,
            sender_public=dealer_key,
            round_id=round_id,
            expected_fingerprint=fingerprint,
        )
        state.update(key=owner.to_bytes(include_secret_key=True), pending=b"")
        self._save(ctxt, state)
        return {"payload": owner.aggregator_context().to_bytes()}

    def _encrypt(
        self,
        msg: "Message",
        ctxt: "Context",
        record: ConfigRecord,
        round_id: int,
        payload: bytes,
        call_next: Callable[["Message", "Context"], "Message"],
    ) -> dict[str, Any]:
        node = msg.metadata.dst_node_id
        where = f"server message to node {node}"
        stage = CkksStage.ENCRYPT
        if payload:
            raise MalformedMessageError(f"{where}: ENCRYPT carries no payload", party=node, stage=stage)
        owner = self._owner(ctxt, node, stage)
        if not hmac.compare_digest(bytes_field(record, "fingerprint", where), owner.fingerprint):
            raise ContextMismatchError(f"{where}: the round is under another CKKS key than this node's")
        max_weight = max_weight_field(record, where, party=node, stage=stage)
        state = self._state(ctxt)
        if round_id <= int(state["encrypted"]):
            raise UnexpectedMessageError(
                f"{where}: an encrypt request for round {round_id}, but this node already encrypted for round "
                f"{int(state['encrypted'])} (replay)",
                party=node, round=round_id, stage=stage,
            )
        arrays_name, metrics_name, tensors, metric_record, spec = run_app_train(
            msg, ctxt, call_next, CKKS_RECORD, party=node, round_id=round_id, stage=stage
        )
        layout, vector = weighted_update(
            arrays_name, metrics_name, tensors, metric_record, spec,
            weight_key=self.weight_key, max_weight=max_weight, party=node, round_id=round_id, stage=stage,
        )
        blob = owner.encrypt(vector, spec=_layout_digest(layout))
        state["encrypted"] = round_id
        state["uploads"] = int(state["uploads"]) + 1
        self._save(ctxt, state)
        return {"payload": blob, "layout": layout.to_bytes()}

    def _decrypt(
        self, msg: "Message", ctxt: "Context", record: ConfigRecord, round_id: int, payload: bytes, call_next: Any
    ) -> dict[str, Any]:
        node = msg.metadata.dst_node_id
        where = f"server message to node {node}"
        stage = CkksStage.DECRYPT
        owner = self._owner(ctxt, node, stage)
        header = peek_header(payload)
        if header.kind != BlobKind.AGGREGATE:
            raise ProtocolViolationError(f"{where}: asked to decrypt a single upload, not an aggregate", party=node, stage=stage)
        if header.contributions < self.min_clients:
            raise ProtocolViolationError(
                f"{where}: the aggregate claims {header.contributions} contributions, fewer than this node's "
                f"minimum {self.min_clients}",
                party=node, round=round_id, stage=stage,
            )
        if header.total_weight != header.contributions:
            # Every upload is added with weight 1 (the FedAvg weight is encrypted in the
            # last slot), so a header whose total weight differs was tampered with; it also
            # sizes the flooding, so it is refused rather than trusted.
            raise ProtocolViolationError(
                f"{where}: the aggregate's header claims total weight {header.total_weight!r} for "
                f"{header.contributions} uploads of weight 1 (tampered header)",
                party=node, round=round_id, stage=stage,
            )
        state = self._state(ctxt)
        # Review break 3: the guard was keyed by the server's round id (any new id bought a
        # new decryption). A node now releases at most one (flooded) decryption per upload it
        # made itself, counted in its own state, whatever ids the server sends.
        if int(state["decryptions"]) >= int(state["uploads"]):
            raise UnexpectedMessageError(
                f"{where}: this node made {int(state['uploads'])} uploads and already released "
                f"{int(state['decryptions'])} decryptions (one per upload)",
                party=node, round=round_id, stage=stage,
            )
        total = owner.decrypt(payload)
        state["decryptions"] = int(state["decryptions"]) + 1
        self._save(ctxt, state)
        return {"payload": total.astype("<f8").tobytes()}


#: The default mod: ``ClientApp(mods=[ckks_mod])`` (dealer setup allowed, or a key file via ``ckks-key-path``).
ckks_mod = CkksMod()


# ============================================================================ server side
@dataclass
class CkksRoundReport(ReportDict):
    """What happened in one CKKS round (public information only).

    Attributes:
        round: the strategy's server round.
        nodes: the round's node ids, ascending.
        survivors: nodes whose encrypted updates are in the aggregate.
        dropped: node id -> the stage it stopped answering in (or was refused in).
        refused: node id -> why its message was refused (a typed error's text).
        decryptors: nodes whose decryption was used.
        dealt: nodes that received the key from a dealer in this round (the dealer first).
        fingerprint: hex of the CKKS context fingerprint (public).
        stage_seconds: wall time per stage name.
        aborted: ``"ErrorType: why"`` when the round returned no reply, else ``None``.
        bytes_down: payload bytes the server sent (train records excluded).
        bytes_up: payload bytes the server received.
    """

    round: int
    nodes: list[int]
    survivors: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    decryptors: list[int] = field(default_factory=list)
    dealt: list[int] = field(default_factory=list)
    fingerprint: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    aborted: str | None = None
    bytes_down: int = 0
    bytes_up: int = 0


class CkksWorkflow(StagedWorkflow):
    """The server side of fedcrypt CKKS aggregation over a Flower ``Grid``.

    Math: the server computes ``sum_u ct_u`` homomorphically (:class:`~fedcrypt.he.EncryptedSum`,
    weight 1 per upload, since each upload already carries ``w_u/M``); one or more key
    holders decrypt the sum; the strategy gets ``sum(w x) / sum(w)``.

    Threat model: honest-but-curious server (see the module docstring and SECURITY.md):
    this class never holds a secret key. It moves bytes, pins the round's CKKS context
    (the first fingerprint every node agrees on; nodes under another key are refused),
    treats silent nodes as dropped after ``stage_timeout`` seconds, and fails a round whose
    decryptors disagree or are too few.

    Args:
        key_setup: ``"dealer"`` (in-band key setup for nodes without a key) or ``"file"``
            (every node must have a key file; nodes without one are refused).
        params: the CKKS parameters a dealer generates its key with; default the
            ``compact`` preset (N=8192, 128-bit security) for up to ``capacity`` uploads
            with ``|w/M x| <= clip``. Out-of-band keys carry their own parameters.
        clip: L-infinity clip of a weighted coordinate ``w/M * x`` (default parameters).
        capacity: the most uploads one aggregate may hold (default parameters).
        max_weight: ``M``, the largest FedAvg weight a node may claim.
        decryptors: how many nodes decrypt each aggregate (fewer if fewer hold the key);
            with more than one, their results must be identical.
        stage_timeout: seconds to wait for the replies of one stage.
        train_timeout: seconds to wait at the encrypt stage (nodes train then); default the
            strategy's timeout, else ``stage_timeout``.
        min_clients: rounds with fewer sampled nodes or fewer uploads return no reply.
        poll_interval: seconds between two pulls of replies (Flower's own
            ``send_and_receive`` pulls every 3 seconds).
    """

    RECORD = CKKS_RECORD
    REPLY_FIELDS = _REPLY_FIELDS
    REPORT = CkksRoundReport
    LABEL = "ckks"
    LOG = log

    def __init__(
        self,
        *,
        key_setup: str = "dealer",
        params: CkksParams | None = None,
        clip: float = 4.0,
        capacity: int = 100,
        max_weight: float = 1000.0,
        decryptors: int = 2,
        stage_timeout: float = 60.0,
        train_timeout: float | None = None,
        min_clients: int = 2,
        poll_interval: float = 3.0,
    ) -> None:
        if key_setup not in ("dealer", "file"):
            raise ValueError(f"key_setup must be 'dealer' or 'file', got {key_setup!r}")
        if params is not None and not isinstance(params, CkksParams):
            raise TypeError(f"params must be CkksParams or None, got {type(params).__name__}")
        if (
            not isinstance(max_weight, (int, float))
            or isinstance(max_weight, bool)
            or not (math.isfinite(max_weight) and max_weight > 0)
        ):
            raise ValueError(f"max_weight must be a positive finite number, got {max_weight!r}")
        if not isinstance(decryptors, int) or isinstance(decryptors, bool) or decryptors < 1:
            raise ValueError(f"decryptors must be an integer >= 1, got {decryptors!r}")
        timeouts = (("stage_timeout", stage_timeout), ("train_timeout", train_timeout), ("poll_interval", poll_interval))
        for name, value in timeouts:
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(min_clients, int) or isinstance(min_clients, bool) or min_clients < 2:
            raise ValueError(f"min_clients must be an integer >= 2, got {min_clients!r}")
        if params is None:
            params = CkksParams.preset("compact", num_clients=capacity, clip=clip, max_weight=1.0)
        self.key_setup = key_setup
        self.params = params
        self.max_weight = float(max_weight)
        self.decryptors = decryptors
        self.stage_timeout = float(stage_timeout)
        self.train_timeout = None if train_timeout is None else float(train_timeout)
        self.min_clients = min_clients
        self.poll_interval = float(poll_interval)
        self.reports: list[CkksRoundReport] = []
        self._context: bytes | None = None
        self._aggregator: AggregatorContext | None = None
        self._round_counter = 0

    def __repr__(self) -> str:
        return (
            f"CkksWorkflow(key_setup={self.key_setup!r}, decryptors={self.decryptors}, max_weight={self.max_weight}, "
            f"stage_timeout={self.stage_timeout}, min_clients={self.min_clients})"
        )

    @property
    def aggregator(self) -> AggregatorContext | None:
        """The pinned public CKKS context (``None`` before the first key setup)."""
        return self._aggregator

    # ------------------------------------------------------------------ one round
    def _round(
        self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: CkksRoundReport,
        train_timeout: float,
    ) -> "Message":
        """One CKKS round over at least ``min_clients`` nodes (see :meth:`aggregate`)."""
        holders = self._key_setup(grid, nodes, round_id, report)
        layout, aggregate, survivors = self._encrypt(grid, holders, by_node, round_id, report, train_timeout)
        report.survivors = survivors
        total = self._decrypt(grid, aggregate, layout, survivors, holders, round_id, report)
        return average_reply(
            layout, total, max_weight=self.max_weight, run_id=grid.run.run_id, group=str(round_id), stage=CkksStage.DECRYPT
        )

    def _replies(self, grid: "Grid", messages: list["Message"], timeout: float) -> Iterator["Message"]:
        """The replies to ``messages`` one by one as they arrive, for at most ``timeout`` seconds.

        Pushes the messages and pulls the replies every ``poll_interval`` seconds (what
        ``Grid.send_and_receive`` does, but handing each reply over as soon as it is
        pulled); a grid without push/pull falls back to ``send_and_receive``.
        """
        if not messages:
            return
        try:
            pending = set(grid.push_messages(messages))
        except NotImplementedError:
            yield from grid.send_and_receive(messages, timeout=timeout)
            return
        del messages
        deadline = time.monotonic() + timeout
        while pending:
            for reply in grid.pull_messages(pending):
                pending.discard(reply.metadata.reply_to_message_id)
                yield reply
            if not pending or time.monotonic() >= deadline:
                return
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------ key setup
    def _pin(self, context_bytes: bytes) -> AggregatorContext:
        aggregator = AggregatorContext.from_bytes(context_bytes)
        self._context, self._aggregator = bytes(context_bytes), aggregator
        return aggregator

    def _key_setup(self, grid: "Grid", nodes: list[int], round_id: int, report: CkksRoundReport) -> list[int]:
        """CONTEXT (and DEAL/INSTALL for nodes without a key); returns the nodes holding the round's key."""
        stage = CkksStage.CONTEXT
        replies = self._exchange(grid, stage, {n: {"payload": b""} for n in nodes}, round_id, report, self.stage_timeout)
        contexts: dict[int, AggregatorContext] = {}
        needing: dict[int, bytes] = {}
        for node, record in replies.items():
            where = f"reply from node {node}"
            try:
                context_bytes = bytes_field(record, "payload", where)
                x25519 = bytes_field(record, "x25519", where)
                if bool(context_bytes) == bool(x25519):
                    raise MalformedMessageError(f"{where}: exactly one of a public context and an X25519 key expected", party=node)
                if context_bytes:
                    contexts[node] = AggregatorContext.from_bytes(context_bytes)
                elif len(x25519) != _X25519_BYTES:
                    raise MalformedMessageError(f"{where}: an X25519 public key is 32 bytes", party=node)
                else:
                    needing[node] = x25519
            except Exception as exc:  # noqa: BLE001 - a peer's bytes never end the run
                self._refuse(report, node, stage, _typed(exc, where, node, stage))
        if self._aggregator is None and contexts:
            fingerprints = {c.fingerprint for c in contexts.values()}
            if len(fingerprints) > 1:
                raise _Abort(ContextMismatchError(
                    f"the nodes report {len(fingerprints)} different CKKS keys; give every node the same key file"
                ))
            self._pin(next(iter(contexts.values())).to_bytes())
        holders = []
        for node, context in sorted(contexts.items()):
            assert self._aggregator is not None
            if hmac.compare_digest(context.fingerprint, self._aggregator.fingerprint):
                holders.append(node)
            else:
                self._refuse(report, node, stage, ContextMismatchError(f"node {node} holds another CKKS key than the round's"))
        if needing:
            if self.key_setup == "file":
                for node in sorted(needing):
                    self._refuse(report, node, stage, SecretKeyError(f"node {node} has no CKKS key file (key_setup='file')"))
            elif holders:
                # a key holder never deals its key again (review break 3): late joiners need a key file
                for node in sorted(needing):
                    self._refuse(report, node, stage, SecretKeyError(
                        f"node {node} has no CKKS key and the key set-up is done (key holders never deal again); "
                        "give it the key file out of band"
                    ))
            else:
                holders = sorted(self._deal(grid, holders, needing, round_id, report))
        if self._aggregator is not None:
            report.fingerprint = self._aggregator.fingerprint.hex()
        if len(holders) < self.min_clients:
            raise _Abort(RoundAbortedError(f"{len(holders)} nodes hold the round's CKKS key, fewer than min_clients={self.min_clients}"))
        return holders

    def _deal(self, grid: "Grid", holders: list[int], needing: dict[int, bytes], round_id: int, report: CkksRoundReport) -> list[int]:
        """The dealer seals the key to every node in ``needing``; returns the nodes that installed it."""
        dealer = min(holders) if holders else min(needing)
        peers = sorted(n for n in needing if n != dealer)
        fields = {
            "payload": b"" if holders else self.params.to_bytes(),
            "peers": pack_nodes(peers) if peers else b"",
            "keys": b"".join(needing[p] for p in peers),
        }
        replies = self._exchange(grid, CkksStage.DEAL, {dealer: fields}, round_id, report, self.stage_timeout)
        if dealer not in replies:
            for node in peers:
                report.dropped.setdefault(node, CkksStage.DEAL.name)
            return []
        record, where = replies[dealer], f"reply from node {dealer}"
        try:
            context = AggregatorContext.from_bytes(bytes_field(record, "payload", where))
            dealer_key = bytes_field(record, "x25519", where)
            sealed = _unpack_list(bytes_field(record, "sealed", where), len(peers), where)
            if len(dealer_key) != _X25519_BYTES:
                raise MalformedMessageError(f"{where}: an X25519 public key is 32 bytes", party=dealer)
            if self._aggregator is None:
                if context.params != self.params:
                    raise ContextMismatchError(f"{where}: the dealer's key has other parameters than the server asked for")
                self._pin(context.to_bytes())
            elif not hmac.compare_digest(context.fingerprint, self._aggregator.fingerprint):
                raise ContextMismatchError(f"{where}: the dealer holds another CKKS key than the round's")
        except Exception as exc:  # noqa: BLE001 - a peer's bytes never end the run
            self._refuse(report, dealer, CkksStage.DEAL, _typed(exc, where, dealer, CkksStage.DEAL))
            for node in peers:
                report.dropped.setdefault(node, CkksStage.DEAL.name)
            return []
        assert self._aggregator is not None
        installed = [] if holders else [dealer]
        report.dealt.append(dealer)
        requests = {
            peer: {
                "payload": sealed[i],
                "dealer": dealer,
                "dealer-key": dealer_key,
                "fingerprint": self._aggregator.fingerprint,
            }
            for i, peer in enumerate(peers)
        }
        for node, record in self._exchange(grid, CkksStage.INSTALL, requests, round_id, report, self.stage_timeout).items():
            where = f"reply from node {node}"
            try:
                context = AggregatorContext.from_bytes(bytes_field(record, "payload", where))
                if not hmac.compare_digest(context.fingerprint, self._aggregator.fingerprint):
                    raise ContextMismatchError(f"{where}: the installed key is not the round's")
            except Exception as exc:  # noqa: BLE001 - a peer's bytes never end the run
                self._refuse(report, node, CkksStage.INSTALL, _typed(exc, where, node, CkksStage.INSTALL))
                continue
            installed.append(node)
            report.dealt.append(node)
        return installed

    # ------------------------------------------------------------------ encrypt + sum
    def _encrypt(
        self,
        grid: "Grid",
        holders: list[int],
        by_node: dict[int, "Message"],
        round_id: int,
        report: CkksRoundReport,
        timeout: float,
    ) -> tuple[Layout, bytes, list[int]]:
        assert self._aggregator is not None
        stage = CkksStage.ENCRYPT
        requests = {
            node: {"payload": b"", "fingerprint": self._aggregator.fingerprint, "max-weight": self.max_weight}
            for node in holders
        }
        extra = {node: by_node[node].content for node in holders}
        total = self._aggregator.start()
        layouts: list[Layout] = []

        def fold(node: int, record: ConfigRecord) -> None:
            with _peer_bytes(f"reply from node {node}", node, stage):
                fold_checked(node, record)

        def fold_checked(node: int, record: ConfigRecord) -> None:
            where = f"reply from node {node}"
            node_layout = Layout.from_bytes(bytes_field(record, "layout", where))
            if layouts and node_layout != layouts[0]:
                raise UnexpectedMessageError(f"{where}: its model layout differs from the other nodes'", party=node, stage=stage)
            blob = bytes_field(record, "payload", where)
            header = peek_header(blob)
            if header.spec_digest is None or not hmac.compare_digest(header.spec_digest, _layout_digest(node_layout)):
                raise UnexpectedMessageError(f"{where}: the upload is not bound to the layout it came with", party=node, stage=stage)
            if header.length != node_layout.dimension:
                raise UnexpectedMessageError(
                    f"{where}: the upload has {header.length} values, its layout {node_layout.dimension}", party=node, stage=stage
                )
            total.add(blob, 1)  # validate, then apply: a refused upload leaves the sum as it was
            if not layouts:
                layouts.append(node_layout)
            record["payload"] = b""  # folded in: the upload need not stay in memory

        survivors = sorted(self._exchange(grid, stage, requests, round_id, report, timeout, extra, accept=fold))
        layout = layouts[0] if layouts else None
        if len(survivors) < self.min_clients or layout is None:
            raise _Abort(RoundAbortedError(f"{len(survivors)} encrypted updates arrived, fewer than min_clients={self.min_clients}"))
        return layout, total.finish(), survivors

    # ------------------------------------------------------------------ decrypt
    def _decrypt(
        self,
        grid: "Grid",
        aggregate: bytes,
        layout: Layout,
        survivors: list[int],
        holders: list[int],
        round_id: int,
        report: CkksRoundReport,
    ) -> np.ndarray:
        stage = CkksStage.DECRYPT
        candidates = [n for n in survivors if n not in report.refused] + [
            n for n in holders if n not in survivors and n not in report.dropped
        ]
        needed = min(self.decryptors, len(candidates))
        if needed == 0:
            raise _Abort(RoundAbortedError("no node is left to decrypt the aggregate"))
        results: dict[int, bytes] = {}
        while len(results) < needed and candidates:
            batch, candidates = candidates[: needed - len(results)], candidates[needed - len(results) :]
            replies = self._exchange(grid, stage, {n: {"payload": aggregate} for n in batch}, round_id, report, self.stage_timeout)
            for node, record in replies.items():
                where = f"reply from node {node}"
                try:
                    payload = bytes_field(record, "payload", where)
                    if len(payload) != 8 * layout.dimension:
                        raise MalformedMessageError(
                            f"{where}: {len(payload)} bytes, expected {layout.dimension} float64 values", party=node, stage=stage
                        )
                    if not np.isfinite(np.frombuffer(payload, dtype="<f8")).all():
                        raise MalformedMessageError(f"{where}: the decrypted sum is not finite", party=node, stage=stage)
                except Exception as exc:  # noqa: BLE001 - a peer's bytes never end the run
                    self._refuse(report, node, stage, _typed(exc, where, node, stage))
                    continue
                results[node] = payload
        report.decryptors = sorted(results)
        if len(results) < needed:
            raise _Abort(RoundAbortedError(f"{len(results)} of the {needed} decryptions needed arrived"))
        values = list(results.values())
        if any(v != values[0] for v in values[1:]):
            raise _Abort(ProtocolViolationError(
                f"the decryptors {sorted(results)} returned different sums (CKKS decryption is deterministic)",
                round=round_id, stage=stage,
            ))
        return np.frombuffer(values[0], dtype="<f8").astype(np.float64)


class CkksGrid(SecAggGrid):
    """A ``Grid`` that turns a strategy's train round into a fedcrypt CKKS round.

    Every other call goes to the wrapped grid unchanged.
    ``strategy.start(grid=CkksGrid(grid, CkksWorkflow()), ...)`` is the whole change a
    ServerApp needs; the ClientApp adds :data:`ckks_mod`.

    Args:
        grid: the ServerApp's grid.
        workflow: the CKKS settings; default ``CkksWorkflow()``.
    """

    def __init__(self, grid: "Grid", workflow: CkksWorkflow | None = None) -> None:
        if workflow is not None and not isinstance(workflow, CkksWorkflow):
            raise TypeError(f"workflow must be a CkksWorkflow, got {type(workflow).__name__}")
        super().__init__(grid, workflow if workflow is not None else CkksWorkflow())  # type: ignore[arg-type]
