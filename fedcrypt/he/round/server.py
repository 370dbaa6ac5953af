"""The server side of the single-key CKKS round: a sans-IO object that never blocks or times out.

The transport sends what :meth:`CkksServer.begin` returns, feeds the nodes' replies to
:meth:`CkksServer.receive` and, when it stops waiting, calls :meth:`CkksServer.end_stage`:
every node that has not answered the current stage is dropped from then on, and the
returned mapping says which message goes to which node next. Transition table (stage ->
accepted message -> ``end_stage`` output, next stage)::

    CONTEXT  ContextReply   -> DealRequest to the dealer                   DEAL    (key_setup="dealer", keyless nodes)
                            -> EncryptRequest per key holder               ENCRYPT (otherwise)
    DEAL     DealReply      -> InstallRequest per peer                     INSTALL
    INSTALL  InstallReply   -> EncryptRequest per key holder               ENCRYPT
    ENCRYPT  Upload         -> ConfirmRequest per uploader                 CONFIRM (with a roster)
                            -> DecryptRequest (the aggregate) per decryptor DECRYPT (without)
    CONFIRM  Confirmation   -> DecryptRequest (the signed uploads) per decryptor  DECRYPT (the set fits one part)
                            -> SumPart 0 (entries, first uploads) per decryptor   DECRYPT (larger sets: streamed)
    DECRYPT  SumAck k       -> SumPart k + 1, or DecryptRequest (the last part)   DECRYPT
             Decryption     -> DecryptRequest / SumPart 0 to further nodes        DECRYPT (too few answered)
                            -> {} and :attr:`CkksServer.result`             DONE
    DONE, ABORTED  (nothing)

Invariants:

* the server never holds, receives or builds a secret key: it loads public contexts only
  (:meth:`~fedcrypt.he.AggregatorContext.from_bytes` refuses anything carrying one);
* :meth:`CkksServer.receive` validates a message completely before it stores anything; a
  refused message (wrong stage, type, round or node, a replay, a bad signature, blob or
  context) raises a typed error and changes nothing but the report's ``refused`` entry;
  an untyped failure of a parser on a node's bytes is raised as
  :class:`~fedcrypt.errors.MalformedMessageError`;
* without a roster, uploads are folded into one :class:`~fedcrypt.he.EncryptedSum` as they
  are received (memory: one aggregate plus one upload); with a roster the server computes no
  sum (the decryptors sum the signed uploads): it keeps each checked upload in a temporary
  file (:class:`~fedcrypt.he._spill.SpillFile`) and streams the set to each decryptor in
  parts of at most ``part_bytes`` (or one upload), so its memory is one upload plus one part
  whatever the number of nodes; a decryptor that drops is replaced by one that starts the
  stream again;
* the round's key is the pinned context's or, before one is pinned, the one most nodes
  report (a tie ends the round; holders of another key are refused, one liar never ends a
  round); with ``key_setup="dealer"`` a new key is made by the lowest keyless node while no
  context is pinned and more nodes are keyless than hold the most reported key (whose
  holders are then refused: a lost DEAL reply strands only its dealer), and with a roster
  keyless nodes are dealt the round's key by one of its holders, another each round (late
  joiners need no key file; a holder that does not deal leaves the joiners out of that round
  only); without a roster a holder never deals (review break 3: a deviating server could
  name its own X25519 key as a peer);
* with more than one decryptor the results must be bit-identical (CKKS decryption with
  deterministic flooding is): a decryptor whose result differs is refused and further
  candidates are asked until ``decryptors`` results agree; the round ends without a
  result only when no such majority can be had;
* :meth:`CkksServer.end_stage` raises a typed error (:class:`~fedcrypt.errors.RoundAbortedError`,
  :class:`~fedcrypt.errors.ContextMismatchError` or
  :class:`~fedcrypt.errors.ProtocolViolationError`) and moves to ``ABORTED`` when the
  round cannot finish; it never returns a wrong sum.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from fedcrypt.errors import (
    ContextMismatchError,
    FedcryptError,
    InvalidSignature,
    MalformedMessageError,
    ProtocolViolationError,
    RoundAbortedError,
    SpecMismatchError,
)
from fedcrypt.he._round_roles import RoundServer, check_part_bytes
from fedcrypt.he._spill import SpillFile
from fedcrypt.he.blob import BlobKind, peek_header
from fedcrypt.he.context import AggregatorContext, EncryptedSum

from . import _statements
from .config import CkksConfig
from .messages import (
    MESSAGE_CLASSES,
    Confirmation,
    ConfirmedUpload,
    ConfirmRequest,
    ContextReply,
    ContextRequest,
    DealReply,
    DealRequest,
    Decryption,
    DecryptRequest,
    EncryptRequest,
    InstallReply,
    InstallRequest,
    Message,
    Stage,
    SumAck,
    SumPart,
    Upload,
    decode_message,
)

__all__ = ["CkksServer", "AggregationResult", "RoundReport", "PART_BYTES"]

#: The default cap on the upload bytes of one streamed part (a part holds at least one upload).
PART_BYTES = 16 << 20


@dataclass(frozen=True, slots=True, eq=False)
class AggregationResult:
    """The outcome of a round.

    Attributes:
        weighted_sum: the decrypted ``sum_u w_u/M * [x_u, 1]`` (float64).
        mean: the FedAvg average ``sum(w x) / sum(w)`` (float64, within
            :func:`~fedcrypt.he.round.fedavg_error_bound`).
        total_weight: ``M * sum(w/M)``, the contributors' total weight.
        contributors: the nodes whose uploads are in the sum, increasing.
        members: their roster names in the same order (empty without a roster).
        decryptors: the nodes whose (identical) decryptions were used.
        layout: the layout digest the contributors' uploads name (the most common one).
        fingerprint: the key's context fingerprint.
        context: the pinned public context (give it to the next round's server).
    """

    weighted_sum: np.ndarray = field(repr=False)
    mean: np.ndarray = field(repr=False)
    total_weight: float
    contributors: tuple[int, ...]
    members: tuple[str, ...]
    decryptors: tuple[int, ...]
    fingerprint: bytes = field(repr=False)
    context: bytes = field(repr=False)
    layout: bytes = field(repr=False, default=b"")

    def __repr__(self) -> str:
        return (
            f"AggregationResult(contributors={len(self.contributors)}, length={self.mean.shape[0]}, "
            f"total_weight={self.total_weight:g}, decryptors={list(self.decryptors)})"
        )


@dataclass
class RoundReport:
    """What happened in one round (public information only).

    Attributes:
        round: the round id.
        nodes: the round's nodes, increasing.
        holders: nodes that held the round's key at ENCRYPT.
        contributors: nodes whose uploads are in the sum.
        dropped: node -> the stage it stopped answering in.
        refused: node -> why its last refused message was refused (a typed error's text); an
            upload left out of the sum (another layout than the most uploads') stays refused
            when its node answers later.
        decryptors: nodes whose decryption was used.
        dealt: the dealer, then the nodes that installed its key, when the key was dealt.
        fingerprint: hex of the key's context fingerprint (public).
        aborted: ``"ErrorType: why"`` when the round ended without a result, else ``None``.
    """

    round: int
    nodes: list[int]
    holders: list[int] = field(default_factory=list)
    contributors: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    decryptors: list[int] = field(default_factory=list)
    dealt: list[int] = field(default_factory=list)
    fingerprint: str = ""
    aborted: str | None = None


_EXPECTED: dict[Stage, type[Message] | tuple[type[Message], ...]] = {
    Stage.CONTEXT: ContextReply,
    Stage.DEAL: DealReply,
    Stage.INSTALL: InstallReply,
    Stage.ENCRYPT: Upload,
    Stage.CONFIRM: Confirmation,
    Stage.DECRYPT: (Decryption, SumAck),
}


class CkksServer(RoundServer[CkksConfig, RoundReport]):
    """The server of one single-key CKKS round (see :mod:`fedcrypt.he.round`).

    Math: without a roster the server computes ``sum_u ct_u`` homomorphically (weight 1 per
    upload: each already carries ``w_u/M``); with a roster it relays the signed uploads and
    every decryptor computes the same sum. One or more key holders decrypt it; the result is
    ``sum(w x) / sum(w)`` and ``M * sum(w/M)``.

    Threat model: this object is the honest server's logic and holds no secret; the nodes
    defend themselves against a server that deviates (see :class:`~fedcrypt.he.round.CkksClient`).
    The transport must authenticate which node a message comes from (``sender``).

    Args:
        config: the round configuration.
        nodes: the round's node ids (distinct, in ``[0, 2^64)``).
        round_id: the round id (increasing from round to round: nodes encrypt once per id).
        context: the public context pinned by an earlier round
            (:attr:`AggregationResult.context`), or None before the key set-up.
        part_bytes: with a roster, the most upload bytes in one streamed part of the set
            (a part holds at least one upload; a set that fits one part goes in one
            :class:`~fedcrypt.he.round.DecryptRequest`).
        spill_dir: with a roster, the directory of the temporary file that keeps the
            uploads until DECRYPT (default: the platform's temporary directory).
    """

    __slots__ = (
        "_aggregator",
        "_members",
        "_contexts",
        "_adverts",
        "_dealer",
        "_peers",
        "_deal",
        "_installed",
        "_holders",
        "_by_layout",
        "_uploads",
        "_spill",
        "_part_bytes",
        "_parts",
        "_progress",
        "_confirmations",
        "_aggregate",
        "_candidates",
        "_needed",
        "_results",
    )

    def __init__(
        self,
        config: CkksConfig,
        nodes: Iterable[int],
        *,
        round_id: int,
        context: bytes | None = None,
        part_bytes: int = PART_BYTES,
        spill_dir: str | None = None,
    ) -> None:
        check_part_bytes(part_bytes)
        self._setup(
            config,
            CkksConfig,
            nodes,
            round_id,
            Stage.CONTEXT,
            "the CKKS round runs honest-but-curious (no roster): the nodes trust this server to relay keys and to send them the true aggregate",
        )
        self._aggregator: AggregatorContext | None = None
        if context is not None:
            self._aggregator = AggregatorContext.from_bytes(context)  # SecretKeyError for a key
        self._members: dict[int, str] = {}
        self._contexts: dict[int, ContextReply] = {}
        self._adverts: dict[int, ContextReply] = {}
        self._dealer: int | None = None
        self._peers: tuple[ContextReply, ...] = ()
        self._deal: DealReply | None = None
        self._installed: list[int] = []
        self._holders: list[int] = []
        #: without a roster, one running sum per (layout digest, length) the uploads name
        self._sums: dict[tuple[bytes, int], EncryptedSum] = {}
        #: the uploaders by (layout digest, length): the most common layout is the round's
        self._by_layout: dict[tuple[bytes, int], list[int]] = {}
        #: node -> (member, signature, SHA-256 of the blob) of each signed upload (roster)
        self._uploads: dict[int, tuple[str, bytes, bytes]] = {}
        self._spill = SpillFile(spill_dir) if config.roster is not None else None
        self._part_bytes = part_bytes
        #: the streamed set's parts: node ids in entry order
        self._parts: list[tuple[int, ...]] = []
        #: decryptor -> the part (or the one DECRYPT request, index 0) it was sent last
        self._progress: dict[int, int] = {}
        self._batch: tuple[int, tuple[ConfirmedUpload, ...]] | None = None
        self._layout: bytes | None = None
        self._length: int | None = None
        self._entries: tuple[tuple[str, int, bytes], ...] = ()
        self._confirmations: dict[int, bytes] = {}
        self._aggregate = b""
        self._candidates: list[int] = []
        self._needed = 0
        self._results: dict[int, Decryption] = {}
        self._report = RoundReport(round_id, list(self.nodes))

    # ------------------------------------------------------------------ public
    @property
    def context(self) -> bytes | None:
        """The pinned public context (None before any node reported or dealt a key)."""
        return self._aggregator.to_bytes() if self._aggregator is not None else None

    def __repr__(self) -> str:
        return f"CkksServer(round={self.round_id}, nodes={len(self.nodes)}, stage={self._stage.name})"

    def begin(self) -> dict[int, ContextRequest]:
        """The CONTEXT request for every node (call once, first)."""
        self._begin()
        self._asked = set(self.nodes)
        return {n: ContextRequest(self.round_id, n) for n in self.nodes}

    def _abort(self, error: FedcryptError) -> FedcryptError:
        self._close()
        return super()._abort(error)

    def _ended(self, text: str) -> FedcryptError:
        """The round ends with ``RoundAbortedError(text)``."""
        return self._abort(RoundAbortedError(text))

    def _done(self, result: AggregationResult) -> dict[int, Message]:
        self._close()
        return super()._done(result)

    def _close(self) -> None:
        """The round is over: drop the kept uploads (the spill file with them)."""
        if self._spill is not None:
            self._spill.close()
        self._batch = None

    # ------------------------------------------------------------------ helpers
    def _check_signer(self, message: ContextReply | DealReply | Upload | Confirmation) -> None:
        """With a roster: the node's member (the one it named at CONTEXT) and a signature; without: neither."""
        roster, node = self.config.roster, message.node
        if roster is None:
            if message.member or message.signature:
                raise self._violation("an identity in a round without a roster", node)
            return
        if not message.member or not message.signature:
            raise InvalidSignature(f"the reply of node {node} is not signed (the round has a roster)")
        roster.key(message.member)  # IdentityError: not a member
        known = self._members.get(node)
        if known is not None and known != message.member:
            raise self._violation(f"node {node} named member {known!r} before", node)
        if known is None and message.member in self._members.values():
            raise self._violation(f"member {message.member!r} is another node's", node)

    def _verify(self, member: str, signature: bytes, statement: bytes, node: int) -> None:
        assert self.config.roster is not None
        _statements.verify(self.config.roster, member, signature, statement, f"the reply of node {node}")

    def _public_context(self, raw: bytes, node: int) -> AggregatorContext:
        context = AggregatorContext.from_bytes(raw)
        if self._aggregator is not None and not hmac.compare_digest(context.fingerprint, self._aggregator.fingerprint):
            raise ContextMismatchError(f"node {node} holds another CKKS key than the round's")
        return context

    # ------------------------------------------------------------------ CONTEXT
    def _on_context_reply(self, message: ContextReply) -> None:
        node = message.node
        if bool(message.context) == bool(message.x25519):
            raise self._violation("exactly one of a public context and an X25519 key expected", node)
        self._check_signer(message)
        if message.context:
            context = self._public_context(message.context, node)
            statement_key, fingerprint = b"", context.fingerprint
        else:
            statement_key, fingerprint = message.x25519, b""
        if self.config.roster is not None:
            self._verify(
                message.member,
                message.signature,
                _statements.advert_bytes(
                    roster_digest=self.config.roster_digest,
                    round_id=self.round_id,
                    node=node,
                    member=message.member,
                    x25519=statement_key,
                    fingerprint=fingerprint,
                ),
                node,
            )
        # apply
        (self._contexts if message.context else self._adverts)[node] = message
        if message.member:
            self._members[node] = message.member

    def _end_context(self) -> dict[int, Message]:
        by_key: dict[bytes, list[int]] = {}
        for node, reply in sorted(self._contexts.items()):
            by_key.setdefault(AggregatorContext.from_bytes(reply.context).fingerprint, []).append(node)
        needing = sorted(self._adverts)
        holders: list[int] = []
        if by_key:
            # the key most nodes report (a pinned context already refused every other one at receipt);
            # one node claiming a key of its own must not end the round for the others (attacker review 5)
            counts = sorted((len(nodes) for nodes in by_key.values()), reverse=True)
            # more keyless nodes than holders of any key nobody pinned: deal a new key (the holders may be
            # one liar, or dealers whose DEAL replies were lost), whatever the holders' counts (attacker review 9)
            fresh = self._aggregator is None and self.config.key_setup == "dealer" and len(needing) > counts[0]
            if not fresh and len(counts) > 1 and counts[0] == counts[1]:
                raise self._abort(ContextMismatchError(f"the nodes report {len(by_key)} different CKKS keys, none by more nodes than another"))
            fingerprint, holders = max(by_key.items(), key=lambda item: len(item[1]))
            if fresh:
                holders = []
            for key, nodes in by_key.items():
                if fresh or key != fingerprint:
                    for node in nodes:
                        self._report.refused[node] = (
                            f"ContextMismatchError: node {node} holds another CKKS key than the one most nodes report"
                            if not fresh
                            else f"ContextMismatchError: node {node} holds a CKKS key nobody pinned; more nodes ask for a new one"
                        )
            if holders and self._aggregator is None:
                self._aggregator = AggregatorContext.from_bytes(self._contexts[holders[0]].context)
        if needing and self.config.key_setup == "file":
            for node in needing:
                self._report.refused[node] = f"SecretKeyError: node {node} has no CKKS key file (key_setup='file')"
        elif needing and (holders or self._aggregator is not None) and (self.config.roster is None or not holders):
            why = (
                "the key set-up is done (without a roster key holders never deal again: a deviating server could name "
                "its own X25519 key as a peer); give it the key file"
                if self.config.roster is None
                else "no holder of the round's key answered to deal it"
            )
            for node in needing:
                self._report.refused[node] = f"SecretKeyError: node {node} has no CKKS key and {why}"
        elif needing:
            if not holders and len(needing) < self.config.min_contributions:
                raise self._abort(
                    RoundAbortedError(f"{len(needing)} nodes ask for a key, fewer than min_contributions={self.config.min_contributions}")
                )
            # a new key from the lowest keyless node, or (with a roster) the round's key from one of its
            # holders, a different one each round (one holder that never deals strands no joiner for good)
            dealer = holders[self.round_id % len(holders)] if holders else needing[0]
            self._dealer, self._peers = dealer, tuple(self._adverts[n] for n in needing if n != dealer)
            self._holders = holders
            return self._next(Stage.DEAL, {dealer: DealRequest(self.round_id, dealer, self._peers)})
        return self._start_encrypt(holders)

    # ------------------------------------------------------------------ DEAL / INSTALL
    def _on_deal_reply(self, message: DealReply) -> None:
        node = message.node
        context = AggregatorContext.from_bytes(message.context)
        if context.params != self.config.params:
            raise ContextMismatchError(f"node {node}: the dealt key has other parameters than the config's")
        if self._holders and (self._aggregator is None or not hmac.compare_digest(context.fingerprint, self._aggregator.fingerprint)):
            raise ContextMismatchError(f"node {node} dealt another CKKS key than the one it holds for the round")
        if tuple(n for n, _ in message.sealed) != tuple(p.node for p in self._peers):
            raise self._violation("the sealed keys are not one per peer, in the peers' order", node)
        self._check_signer(message)
        if self.config.roster is not None:
            self._verify(
                message.member,
                message.signature,
                _statements.deal_bytes(
                    roster_digest=self.config.roster_digest,
                    round_id=self.round_id,
                    dealer=node,
                    member=message.member,
                    x25519=message.x25519,
                    fingerprint=context.fingerprint,
                    peers=_statements.peers_digest((p.node, p.member, p.x25519) for p in self._peers),
                ),
                node,
            )
        # apply
        self._aggregator, self._deal = context, message

    def _end_deal(self) -> dict[int, Message]:
        deal = self._deal
        if deal is None and self._holders:  # a holder that did not deal the key to late joiners ends nothing
            for peer in self._peers:
                self._report.refused[peer.node] = f"SecretKeyError: node {peer.node} has no CKKS key; the holder asked to deal it did not"
            return self._start_encrypt([n for n in self._holders if n != self._dealer])
        if deal is None or self._aggregator is None:
            raise self._abort(RoundAbortedError("the dealer did not deal the key"))
        self._report.dealt = [deal.node]
        fingerprint = self._aggregator.fingerprint
        requests = {
            peer.node: InstallRequest(
                self.round_id,
                peer.node,
                deal.node,
                deal.member,
                deal.x25519,
                fingerprint,
                self._peers,
                sealed,
                deal.signature,
            )
            for peer, (_, sealed) in zip(self._peers, deal.sealed)
        }
        return self._next(Stage.INSTALL, requests)

    def _on_install_reply(self, message: InstallReply) -> None:
        self._public_context(message.context, message.node)
        # apply
        self._installed.append(message.node)

    def _end_install(self) -> dict[int, Message]:
        assert self._deal is not None
        installed = sorted(self._installed)
        self._report.dealt += installed
        return self._start_encrypt(sorted(set(self._holders) | {self._deal.node} | set(installed)))

    # ------------------------------------------------------------------ ENCRYPT
    def _start_encrypt(self, holders: list[int]) -> dict[int, Message]:
        if self._aggregator is not None:
            self._report.fingerprint = self._aggregator.fingerprint.hex()
        if len(holders) < self.config.min_contributions or self._aggregator is None:
            raise self._abort(
                RoundAbortedError(f"{len(holders)} nodes hold the round's CKKS key, fewer than min_contributions={self.config.min_contributions}")
            )
        self._holders = holders
        self._report.holders = list(holders)
        fingerprint = self._aggregator.fingerprint
        return self._next(Stage.ENCRYPT, {n: EncryptRequest(self.round_id, n, fingerprint) for n in holders})

    def _on_upload(self, message: Upload) -> None:
        node, aggregator = message.node, self._aggregator
        assert aggregator is not None
        self._check_signer(message)
        header = peek_header(message.blob)
        if header.kind != BlobKind.UPLOAD:
            raise self._violation("an aggregate where an upload was due", node)
        if not hmac.compare_digest(header.fingerprint, aggregator.fingerprint):
            raise ContextMismatchError(f"the upload of node {node} is under another CKKS key than the round's")
        if header.spec_digest is None:
            raise SpecMismatchError(f"the upload of node {node} names no layout")
        # no first-come layout: one node answering first with another layout would get every honest upload
        # refused (attacker review 5); each layout is summed apart and the most common one is the round's
        layout = (header.spec_digest, header.length)
        total = None
        if self.config.roster is None:
            total = self._sums.get(layout) or aggregator.start(length=header.length)
            total.add(message.blob, 1)  # validate, then apply: a refused upload leaves the sum as it was
        else:
            self._verify(
                message.member,
                message.signature,
                _statements.upload_bytes(
                    roster_digest=self.config.roster_digest,
                    round_id=self.round_id,
                    fingerprint=aggregator.fingerprint,
                    node=node,
                    member=message.member,
                    blob_digest=hashlib.sha256(message.blob).digest(),
                    layout=header.spec_digest,
                ),
                node,
            )
            aggregator.start(length=header.length).add(message.blob, 1)  # the decryptors' full check, here first
            assert self._spill is not None
            self._spill.put(node, message.blob)  # apply (a refused upload is never kept)
            self._uploads[node] = (message.member, message.signature, hashlib.sha256(message.blob).digest())
        # apply
        if total is not None:
            self._sums[layout] = total
        self._by_layout.setdefault(layout, []).append(node)

    # ------------------------------------------------------------------ CONFIRM
    def _on_confirmation(self, message: Confirmation) -> None:
        node = message.node
        self._check_signer(message)
        assert self._aggregator is not None and self._layout is not None
        self._verify(
            message.member,
            message.signature,
            _statements.confirm_bytes(
                roster_digest=self.config.roster_digest,
                round_id=self.round_id,
                fingerprint=self._aggregator.fingerprint,
                layout=self._layout,
                summed=_statements.set_digest(self._entries),
            ),
            node,
        )
        # apply
        self._confirmations[node] = message.signature

    def _end_confirm(self) -> dict[int, Message]:
        self._check_confirmed()
        assert self._spill is not None
        self._parts = self._spill.parts((node for _, node, _ in self._entries), self._part_bytes)
        return self._start_decrypt(b"")

    # ------------------------------------------------------------------ DECRYPT
    def _start_decrypt(self, aggregate: bytes) -> dict[int, Message]:
        contributors = self._report.contributors
        uploaded = {n for nodes in self._by_layout.values() for n in nodes}  # an upload of another layout: it would refuse the sum
        self._candidates = [n for n in contributors if n not in self._report.refused] + [
            n for n in self._holders if n not in uploaded and n not in self._report.dropped
        ]
        self._needed = min(self.config.decryptors, len(self._candidates))
        if self._needed == 0:
            raise self._abort(RoundAbortedError("no node is left to decrypt the sum"))
        self._aggregate = aggregate
        return self._ask(self._needed)

    def _ask(self, count: int) -> dict[int, Message]:
        """Requests to ``count`` new decryptors (part 0) and the next part to those mid-stream."""
        batch, self._candidates = self._candidates[:count], self._candidates[count:]
        self._progress.update((n, 0) for n in batch)
        return self._next(Stage.DECRYPT, {n: self._request(n, index) for n, index in sorted(self._progress.items())})

    def _confirmed_upload(self, node: int) -> ConfirmedUpload:
        """The signed upload of ``node`` (its blob from the spill file) with its confirmation."""
        assert self._spill is not None
        member, signature, _ = self._uploads[node]
        return ConfirmedUpload(Upload(self.round_id, node, self._spill.get(node), member, signature), self._confirmations[node])

    def _on_decryption(self, message: Decryption) -> None:
        assert self._length is not None
        if self.config.roster is not None and self._progress.get(message.node) != len(self._parts) - 1:
            raise self._violation("a decryption before the last part of the set was sent", message.node)
        values = message.values
        if values.shape[0] != self._length:
            raise MalformedMessageError(
                f"{values.shape[0]} values, expected {self._length}", party=message.node, round=self.round_id, stage=self._stage
            )
        if not np.isfinite(values).all():
            raise MalformedMessageError("the decrypted sum is not finite", party=message.node, round=self.round_id, stage=self._stage)
        # apply
        self._results[message.node] = message

    def _end_decrypt(self) -> dict[int, Message]:
        self._next_parts(self._results)  # done, or dropped (mid-stream too); the others' next part
        # CKKS decryption with deterministic flooding is: honest decryptors agree bit for bit, so
        # one that differs is outvoted by further candidates instead of ending the round
        groups: dict[bytes, list[int]] = {}
        for node in sorted(self._results):
            groups.setdefault(self._results[node].total, []).append(node)
        agreeing = max(groups.values(), key=len, default=[])
        missing = self._needed - len(agreeing) - len(self._progress)
        if self._progress or (missing > 0 and self._candidates):
            return self._ask(max(missing, 0))
        self._batch = None
        if len(groups) > 1:
            for nodes in groups.values():
                if nodes is not agreeing:
                    for node in nodes:
                        self._report.refused[node] = f"ProtocolViolationError: the decryption of node {node} differs from that of nodes {agreeing}"
        if sum(len(nodes) >= self._needed for nodes in groups.values()) > 1 or (len(groups) > 1 and missing > 0):
            raise self._abort(
                ProtocolViolationError(
                    f"the decryptors {sorted(self._results)} returned {len(groups)} different sums, no {self._needed} of them alike "
                    "(CKKS decryption is deterministic)",
                    round=self.round_id,
                    stage=self._stage,
                )
            )
        decryptors = agreeing
        self._report.decryptors = decryptors
        if missing > 0:
            raise self._abort(RoundAbortedError(f"{len(self._results)} of the {self._needed} decryptions needed arrived"))
        total = self._results[decryptors[0]].values.astype(np.float64)
        weight = float(total[-1])
        if not weight > 0:
            raise self._abort(RoundAbortedError("the contributors' total weight decoded to zero", round=self.round_id, stage=self._stage))
        assert self._aggregator is not None
        contributors = tuple(self._report.contributors)
        return self._done(
            AggregationResult(
                weighted_sum=total,
                mean=total[:-1] / weight,
                total_weight=weight * self.config.max_weight,
                contributors=contributors,
                members=tuple(self._uploads[n][0] for n in contributors) if self._uploads else (),
                decryptors=tuple(decryptors),
                fingerprint=self._aggregator.fingerprint,
                context=self._aggregator.to_bytes(),
                layout=self._layout or b"",
            )
        )


CkksServer._MESSAGES = MESSAGE_CLASSES
CkksServer._DECODE = staticmethod(decode_message)
CkksServer._DECRYPT_REQUEST, CkksServer._SUM_PART = DecryptRequest, SumPart
CkksServer._CONFIRM_REQUEST, CkksServer._CONFIRM = ConfirmRequest, Stage.CONFIRM
CkksServer._EXPECTED = _EXPECTED
CkksServer._HANDLERS = {
    ContextReply: "_on_context_reply",
    DealReply: "_on_deal_reply",
    InstallReply: "_on_install_reply",
    Upload: "_on_upload",
    Confirmation: "_on_confirmation",
    Decryption: "_on_decryption",
    SumAck: "_on_sum_ack",
}
CkksServer._CLOSERS = {
    Stage.CONTEXT: "_end_context",
    Stage.DEAL: "_end_deal",
    Stage.INSTALL: "_end_install",
    Stage.ENCRYPT: "_end_encrypt",
    Stage.CONFIRM: "_end_confirm",
    Stage.DECRYPT: "_end_decrypt",
}
CkksServer._DONE, CkksServer._ABORTED = Stage.DONE, Stage.ABORTED
