"""The server side of the threshold CKKS round: a sans-IO object that never blocks or times out.

The transport sends what :meth:`ThresholdRoundServer.begin` returns, feeds the nodes'
replies to :meth:`ThresholdRoundServer.receive` and, when it stops waiting, calls
:meth:`ThresholdRoundServer.end_stage`: every node that has not answered the current stage
is dropped from then on, and the returned mapping says which message goes to which node
next. Transition table (stage -> accepted message -> ``end_stage`` output, next stage)::

    KEYGEN   KeygenReply        -> KeygenRequest to the next holder        KEYGEN  (holders 0 .. n-1, one at a time)
                                -> JointRequest per holder                 JOINT   (after the last holder)
    JOINT    JointReply         -> BackupRequest per holder                BACKUP  (recovery_threshold)
                                -> EncryptRequest per key holder           ENCRYPT (otherwise)
    BACKUP   BackupReply        -> EncryptRequest per key holder           ENCRYPT
    ENCRYPT  Upload             -> ConfirmRequest per uploader             CONFIRM (with a roster)
                                -> DecryptRequest (the aggregate) per holder DECRYPT (without)
    CONFIRM  Confirmation       -> DecryptRequest (the signed uploads) per holder DECRYPT (the set fits one part)
                                -> SumPart 0 (entries, first uploads) per holder  DECRYPT (larger sets: streamed)
    DECRYPT  SumAck k           -> SumPart k + 1, or DecryptRequest (the last part)  DECRYPT (holders mid-stream)
             PartialDecryption  -> {} and :attr:`ThresholdRoundServer.result`  DONE (every holder answered)
                                -> ReleaseRequest per helper               RELEASE (t-of-n, a holder dropped)
    RELEASE  ReleaseReply       -> RecoverRequest to the stand-in          RECOVER (with a roster: no sum in it)
    RECOVER  PartialDecryption  -> ReleaseRequest for the next dropped holder  RELEASE
                                -> {} and :attr:`ThresholdRoundServer.result`  DONE
    DONE, ABORTED  (nothing)

KEYGEN, JOINT and BACKUP run in a session's first round (``session=None``), whose nodes
are the committee (party ``i`` is the ``i``-th smallest node id); later rounds get the
first round's :attr:`AggregationResult.session` and start at ENCRYPT. The decisions the
Flower adapter made so far are this object's: the key chain's order, the committee (fixed
per session: a later round's node outside it is refused and reported), backup routing, the
stand-in (the first surviving holder) and its ``t - 1`` helpers (the next survivors), and
when to abort.

Invariants:

* the server never holds or receives a key share: it relays public keys, ciphertexts,
  flooded partial decryptions and key backups sealed to their recipient;
* :meth:`ThresholdRoundServer.receive` validates a message completely before it stores
  anything; a refused message (wrong stage, type, round or node, a replay, a bad
  signature, key, blob or share) raises a typed error and changes nothing but the
  report's ``refused`` entry; an untyped failure of a parser on a node's bytes is raised as
  :class:`~fedcrypt.errors.MalformedMessageError`;
* the round's layout is the one most uploads name (a tie ends the round), never the first
  one's; without a roster, uploads are folded into a :class:`~fedcrypt.he.threshold.ThresholdSum`
  per layout as they are received (memory: one aggregate per layout named); with a roster the server
  keeps each checked upload in a temporary file (:class:`~fedcrypt.he._spill.SpillFile`)
  and only its signature and digest in memory, sums them from the file after CONFIRM (to
  collect the shares of that sum) and streams the set to every holder in parts of at most
  ``part_bytes`` (or one upload), all holders in lockstep sharing one part read from the
  file: its memory is one aggregate, one upload and one part whatever the number of nodes;
* a key holder missing in the key set-up ends the round (the next round starts a new
  session); a holder missing at DECRYPT ends it unless ``recovery_threshold = t`` and at
  most ``n - t`` are missing; with a roster an uploader missing at CONFIRM ends it;
* :meth:`ThresholdRoundServer.end_stage` raises a typed error and moves to ``ABORTED``
  when the round cannot finish; it never returns a wrong sum.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from fedcrypt.errors import (
    DecryptionError,
    FedcryptError,
    InvalidSignature,
    MalformedMessageError,
    RoundAbortedError,
    UnexpectedMessageError,
)
from fedcrypt.he._round_roles import RoundServer, check_part_bytes
from fedcrypt.he._spill import SpillFile

from .._blob import decode_blob
from ..messages import BlobKind, DecryptionShare, KeyBackupMessage, KeyShareMessage
from ..server import ThresholdDecryption, ThresholdServer, ThresholdSum
from . import _statements
from .config import ThresholdConfig
from .messages import (
    MESSAGE_CLASSES,
    BackupReply,
    BackupRequest,
    Confirmation,
    ConfirmedUpload,
    ConfirmRequest,
    DecryptRequest,
    EncryptRequest,
    JointReply,
    JointRequest,
    KeygenReply,
    KeygenRequest,
    KeyLink,
    Message,
    PartialDecryption,
    RecoverRequest,
    ReleaseReply,
    ReleaseRequest,
    SignedBackup,
    Stage,
    SumAck,
    SumPart,
    Upload,
    decode_message,
)
from .session import SessionRecord

__all__ = ["ThresholdRoundServer", "AggregationResult", "RoundReport", "PART_BYTES"]

#: The default cap on the upload bytes of one streamed part (a part holds at least one upload).
PART_BYTES = 32 << 20


@dataclass(frozen=True, slots=True, eq=False)
class AggregationResult:
    """The outcome of a round.

    Attributes:
        weighted_sum: the fused ``sum_u w_u/M * [x_u, 1]`` (float64).
        mean: the FedAvg average ``sum(w x) / sum(w)`` (float64, within
            :func:`~fedcrypt.he.threshold.round.fedavg_error_bound`).
        total_weight: ``M * sum(w/M)``, the contributors' total weight.
        contributors: the nodes whose uploads are in the sum, increasing.
        members: their roster names in the same order (empty without a roster).
        decryptors: the holders whose own partial decryptions were fused (stand-ins
            delivered the others'; see the report).
        fingerprint: the joint key's fingerprint.
        layout: the layout digest the contributors' uploads name (the most common one).
        session: the session's public record (:class:`SessionRecord` bytes; give it to the
            next round's server).
    """

    weighted_sum: np.ndarray = field(repr=False)
    mean: np.ndarray = field(repr=False)
    total_weight: float
    contributors: tuple[int, ...]
    members: tuple[str, ...]
    decryptors: tuple[int, ...]
    fingerprint: bytes = field(repr=False)
    session: bytes = field(repr=False)
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
        committee: the session's key holders, in party order.
        contributors: nodes whose uploads are in the sum.
        dropped: node -> the stage it stopped answering in.
        refused: node -> why its last refused message was refused (a typed error's text); an
            upload left out of the sum (another layout than the most uploads') stays refused
            when its node answers later.
        decryptors: holders whose own partial decryption was fused.
        stood_in: dropped holder -> the node that stood in for it (t-of-n).
        fingerprint: hex of the joint key's fingerprint (public).
        aborted: ``"ErrorType: why"`` when the round ended without a result, else ``None``.
    """

    round: int
    nodes: list[int]
    committee: list[int] = field(default_factory=list)
    contributors: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    decryptors: list[int] = field(default_factory=list)
    stood_in: dict[int, int] = field(default_factory=dict)
    fingerprint: str = ""
    aborted: str | None = None


_EXPECTED: dict[Stage, type[Message] | tuple[type[Message], ...]] = {
    Stage.KEYGEN: KeygenReply,
    Stage.JOINT: JointReply,
    Stage.BACKUP: BackupReply,
    Stage.ENCRYPT: Upload,
    Stage.CONFIRM: Confirmation,
    Stage.DECRYPT: (PartialDecryption, SumAck),
    Stage.RELEASE: ReleaseReply,
    Stage.RECOVER: PartialDecryption,
}


class ThresholdRoundServer(RoundServer[ThresholdConfig, RoundReport]):
    """The server of one threshold CKKS round (see :mod:`fedcrypt.he.threshold.round`).

    Math: the server relays the key chain (first round), computes ``sum_u ct_u`` under the
    joint key (``EvalAdd``; each upload already carries ``M * w_u/M``), collects one flooded
    partial decryption per key share (from its holder or a stand-in) and fuses them
    (OpenFHE ``MultipartyDecryptFusion``): ``sum(w x) / sum(w)`` and ``M * sum(w/M)``.

    Threat model: this object is the honest server's logic and holds no secret; the nodes
    defend themselves against a server that deviates (see
    :class:`~fedcrypt.he.threshold.round.ThresholdClient`). The transport must authenticate
    which node a message comes from (``sender``).

    Args:
        config: the round configuration.
        nodes: the round's node ids (distinct, in ``[0, 2^64)``); in a session's first
            round exactly ``config.params.num_parties`` of them: the committee.
        round_id: the round id (increasing from round to round: nodes upload and decrypt
            once per id).
        session: the session record of an earlier round (:attr:`AggregationResult.session`),
            or None to set up a new session (a fresh random session id).
        part_bytes: with a roster, the most upload bytes in one streamed part of the set
            (a part holds at least one upload; a set that fits one part goes in one
            :class:`~fedcrypt.he.threshold.round.DecryptRequest`).
        spill_dir: with a roster, the directory of the temporary file that keeps the
            uploads until DECRYPT (default: the platform's temporary directory).
    """

    __slots__ = (
        "_crypto",
        "_committee",
        "_members",
        "_record",
        "_links",
        "_last",
        "_backups",
        "_by_layout",
        "_uploads",
        "_spill",
        "_part_bytes",
        "_parts",
        "_progress",
        "_partials",
        "_confirmations",
        "_aggregate",
        "_decryption",
        "_stand_in",
        "_helpers",
        "_pending",
        "_released",
    )

    def __init__(
        self,
        config: ThresholdConfig,
        nodes: Iterable[int],
        *,
        round_id: int,
        session: bytes | None = None,
        part_bytes: int = PART_BYTES,
        spill_dir: str | None = None,
    ) -> None:
        check_part_bytes(part_bytes)
        self._setup(
            config,
            ThresholdConfig,
            nodes,
            round_id,
            Stage.KEYGEN,
            "the threshold CKKS round runs honest-but-curious (no roster): the nodes trust this server to relay "
            "the key chain and to send them the true aggregate",
        )
        params = config.params
        if session is None and len(self.nodes) != params.num_parties:
            raise ValueError(
                f"a session's first round sets up the key with its nodes: {params.num_parties} nodes (params.num_parties), got {len(self.nodes)}"
            )
        self._record: SessionRecord | None = None
        self._members: tuple[str, ...]  # the committee's member names (empty until the session is made)
        if session is None:
            self._crypto = ThresholdServer(params)
            self._committee, self._members = self.nodes, ()
        else:
            record = SessionRecord.from_bytes(session)
            self._check_record(record)
            self._crypto = ThresholdServer.resume(params, record.session, record.joint)
            self._committee, self._members, self._record = record.committee, record.members, record
        self._links: list[KeyLink] = []  # the chain's links (small); of the keys only the last is kept
        self._last: KeygenReply | None = None
        self._backups: dict[int, tuple[tuple[int, SignedBackup], ...]] = {}
        #: without a roster, one running sum per (layout digest, length) the uploads name
        self._sums: dict[tuple[bytes, int], ThresholdSum] = {}
        #: the uploaders by (layout digest, length): the most common layout is the round's
        self._by_layout: dict[tuple[bytes, int], list[int]] = {}
        #: node -> (member, signature, SHA-256 of the blob, layout digest) of each signed upload (roster)
        self._uploads: dict[int, tuple[str, bytes, bytes, bytes]] = {}
        self._spill = SpillFile(spill_dir) if config.roster is not None else None
        self._part_bytes = part_bytes
        #: the streamed set's parts: node ids in entry order
        self._parts: list[tuple[int, ...]] = []
        #: holder -> the part (or the one DECRYPT request, index 0) it was sent last
        self._progress: dict[int, int] = {}
        self._batch: tuple[int, tuple[ConfirmedUpload, ...]] | None = None
        #: holders whose own partial decryption arrived
        self._partials: set[int] = set()
        self._layout: bytes | None = None
        self._length: int | None = None
        self._entries: tuple[tuple[str, int, bytes], ...] = ()
        self._confirmations: dict[int, bytes] = {}
        self._aggregate = b""
        self._decryption: ThresholdDecryption | None = None
        self._stand_in = 0
        self._helpers: list[int] = []
        self._pending: list[int] = []
        self._released: dict[int, SignedBackup] = {}
        self._report = RoundReport(round_id, list(self.nodes), committee=list(self._committee))

    def _ended(self, text: str, stage: Stage | None = None) -> FedcryptError:
        return self._abort(RoundAbortedError(text, round=self.round_id, stage=self._stage if stage is None else stage))

    def _check_record(self, record: SessionRecord) -> None:
        roster = self.config.roster
        if len(record.committee) != self.config.params.num_parties:
            raise ValueError(f"the session's committee has {len(record.committee)} nodes, the parameters {self.config.params.num_parties}")
        if roster is None and any(record.members):
            raise ValueError("the session names members, the config has no roster")
        if roster is not None and not all(m in roster for m in record.members):
            raise ValueError("the session names members that are not on the config's roster")

    # ------------------------------------------------------------------ public
    @property
    def session(self) -> bytes | None:
        """The session record (:class:`SessionRecord` bytes) once the key set-up is done, else None."""
        return self._record.to_bytes() if self._record is not None else None

    @property
    def committee(self) -> tuple[int, ...]:
        """The session's key holders, in party order."""
        return self._committee

    def __repr__(self) -> str:
        return f"ThresholdRoundServer(round={self.round_id}, nodes={len(self.nodes)}, committee={len(self._committee)}, stage={self._stage.name})"

    def begin(self) -> dict[int, Message]:
        """The first requests: holder 0's KEYGEN in a new session, else the ENCRYPT requests (call once, first)."""
        self._begin()
        if self._record is None:
            return self._keygen_request()
        return self._start_encrypt()

    def _abort(self, error: FedcryptError) -> FedcryptError:
        self._close()  # the round is over: drop the kept uploads (the spill file with them)
        return super()._abort(error)

    def _done(self, result: AggregationResult) -> dict[int, Message]:
        self._close()
        return super()._done(result)

    def _close(self) -> None:
        if self._spill is not None:
            self._spill.close()
        self._batch = None

    # ------------------------------------------------------------------ helpers
    def _member_of(self, party: int) -> str:
        """The member of holder ``party`` (named by its own link in the first round)."""
        return self._members[party] if self._members else self._links[party].member

    def _check_signer(self, member: str, signature: bytes, node: int, statement: bytes | None) -> None:
        """With a roster: ``member``'s valid signature of ``statement``; without: no identity."""
        roster = self.config.roster
        if roster is None:
            if member or signature:
                raise self._violation("an identity in a round without a roster", node)
            return
        if not member or not signature:
            raise InvalidSignature(f"the reply of node {node} is not signed (the round has a roster)")
        if statement is not None:
            _statements.verify(roster, member, signature, statement, f"the reply of node {node}")

    def _backup_message(self, signed: SignedBackup, party: int) -> KeyBackupMessage:
        """A holder's signed backup, decoded: this session, from ``party``, signed by its member."""
        node = self._committee[party]
        backup = KeyBackupMessage.from_bytes(signed.backup, self.config.params)
        if not hmac.compare_digest(backup.session, self._crypto.session) or backup.sender != party:
            raise UnexpectedMessageError("a key backup of another session or holder", party=node, round=self.round_id, stage=self._stage)
        if self.config.roster is not None and signed.member != self._member_of(party):
            raise self._violation(f"the backup is signed by {signed.member!r}, not by holder {party}'s member", node)
        self._check_signer(
            signed.member,
            signed.signature,
            node,
            _statements.backup_bytes(
                roster_digest=self.config.roster_digest,
                session=self._crypto.session,
                committee=_statements.committee_digest(self._committee),
                node=node,
                member=signed.member,
                backup=hashlib.sha256(signed.backup).digest(),
            )
            if self.config.roster is not None
            else None,
        )
        return backup

    # ------------------------------------------------------------------ KEYGEN
    def _keygen_request(self) -> dict[int, Message]:
        party = len(self._links)
        node = self._committee[party]
        previous = self._last
        return self._next(
            Stage.KEYGEN,
            {
                node: KeygenRequest(
                    self.round_id,
                    node,
                    self._crypto.session,
                    party,
                    self._committee,
                    previous,
                )
            },
        )

    def _on_keygen_reply(self, message: KeygenReply) -> None:
        party, node, link = len(self._links), message.node, message.link
        share = KeyShareMessage.from_bytes(message.share, self.config.params)
        if not hmac.compare_digest(share.session, self._crypto.session) or share.party != party:
            raise UnexpectedMessageError(f"a key of holder {share.party} or of another session", party=node, round=self.round_id, stage=self._stage)
        if not hmac.compare_digest(hashlib.sha256(share.public_key).digest(), link.key) or share.transport_key != link.transport:
            raise self._violation("the link does not name its key's digest and transport key", node)
        previous = self._links[-1].key if self._links else _statements.NO_PREVIOUS
        if not hmac.compare_digest(link.previous, previous):
            raise self._violation("the link does not extend the previous holder's key", node)
        roster = self.config.roster
        if roster is not None and link.member in {r.member for r in self._links}:
            raise self._violation(f"member {link.member!r} already holds a link of this chain", node)
        self._check_signer(
            link.member,
            link.signature,
            node,
            _statements.link_bytes(
                roster_digest=self.config.roster_digest,
                session=self._crypto.session,
                params=self.config.params_digest,
                committee=_statements.committee_digest(self._committee),
                party=party,
                node=node,
                member=link.member,
                previous=link.previous,
                key=link.key,
                transport=link.transport,
            )
            if roster is not None
            else None,
        )
        self._crypto.receive_key_share(share)  # OpenFHE parses the key (validate, then apply, inside)
        # apply
        self._links.append(link)
        self._last = message

    def _end_keygen(self) -> dict[int, Message]:
        party = len(self._links)
        if self._asked - self._answered:
            raise self._ended(f"key holder {party} did not complete key generation; the next round starts a new session")
        if party < self.config.params.num_parties:
            return self._keygen_request()
        assert self._last is not None
        links, joint = tuple(self._links), self._last.share
        return self._next(
            Stage.JOINT, {node: JointRequest(self.round_id, node, self._crypto.session, self._committee, links, joint) for node in self._committee}
        )

    # ------------------------------------------------------------------ JOINT / BACKUP
    def _on_joint_reply(self, message: JointReply) -> None:
        node, params = message.node, self.config.params
        party = self._committee.index(node)
        if not params.recovery_threshold:
            if message.backups:
                raise self._violation("key backups in a session without recovery_threshold", node)
            return
        backups = [(self._backup_message(signed, party), signed) for signed in message.backups]
        recipients = sorted(b.recipient for b, _ in backups)
        if recipients != [p for p in range(params.num_parties) if p != party] or any(b.subject != party for b, _ in backups):
            raise self._violation("the backups are not one of its own key share for each other holder", node)
        # apply
        self._backups[party] = tuple((b.recipient, signed) for b, signed in backups)

    def _end_joint(self) -> dict[int, Message]:
        missing = sorted(self._asked - self._answered)
        if missing:
            raise self._abort(RoundAbortedError(f"key holders {missing} did not accept the joint key", round=self.round_id, stage=self._stage))
        if not self.config.params.recovery_threshold:
            return self._finish_session()
        inbox: dict[int, list[SignedBackup]] = {party: [] for party in range(len(self._committee))}
        for sender in sorted(self._backups):
            for recipient, signed in self._backups[sender]:
                inbox[recipient].append(signed)
        return self._next(
            Stage.BACKUP,
            {self._committee[party]: BackupRequest(self.round_id, self._committee[party], tuple(items)) for party, items in inbox.items()},
        )

    def _on_backup_reply(self, message: BackupReply) -> None:
        """Nothing to check: the holder stored its backups."""

    def _end_backup(self) -> dict[int, Message]:
        missing = sorted(self._asked - self._answered)
        if missing:
            raise self._abort(RoundAbortedError(f"key holders {missing} did not store their backups", round=self.round_id, stage=self._stage))
        return self._finish_session()

    def _finish_session(self) -> dict[int, Message]:
        assert self._last is not None
        self._members = tuple(link.member for link in self._links)
        self._record = SessionRecord(self._crypto.session, self._committee, self._members, self._last.share)
        self._links, self._last, self._backups = [], None, {}
        return self._start_encrypt()

    # ------------------------------------------------------------------ ENCRYPT
    def _start_encrypt(self) -> dict[int, Message]:
        fingerprint = self._crypto.fingerprint
        self._report.fingerprint = fingerprint.hex()
        holders = [n for n in self.nodes if n in self._committee]
        for node in self.nodes:
            if node not in self._committee:
                self._report.refused[node] = f"UnexpectedMessageError: node {node} is not a key holder of this session"
        if len(holders) < self.config.min_contributions:
            raise self._ended(
                f"{len(holders)} of the round's nodes hold a key share of this session, fewer than min_contributions={self.config.min_contributions}",
                Stage.ENCRYPT,
            )
        return self._next(Stage.ENCRYPT, {n: EncryptRequest(self.round_id, n, fingerprint) for n in holders})

    def _on_upload(self, message: Upload) -> None:
        node, params, weight = message.node, self.config.params, self.config.max_weight
        party = self._committee.index(node)
        if self.config.roster is not None and message.member != self._member_of(party):
            raise self._violation(f"node {node} uploads as {message.member!r}, not as its committee member", node)
        self._check_signer(message.member, message.signature, node, None)
        header, _ = decode_blob(message.blob, params, self._crypto.fingerprint, (BlobKind.UPLOAD,))
        if header.total_weight != weight:
            raise self._violation(f"the upload was not encrypted with weight M={weight:g}", node)
        layout, total = (message.layout, header.length), None  # each layout summed or kept apart: no first-come layout
        if self.config.roster is None:
            total = self._sums.get(layout) or self._crypto.start(length=header.length)
            total.add(message.blob, weight)  # validate, then apply: a refused upload leaves the sum as it was
        else:
            _statements.verify(
                self.config.roster,
                message.member,
                message.signature,
                _statements.upload_bytes(
                    roster_digest=self.config.roster_digest,
                    round_id=self.round_id,
                    fingerprint=self._crypto.fingerprint,
                    node=node,
                    member=message.member,
                    blob_digest=hashlib.sha256(message.blob).digest(),
                    layout=message.layout,
                ),
                f"the upload of node {node}",
            )
            self._crypto.start(length=header.length).add(message.blob, weight)  # the holders' full check, here first
            assert self._spill is not None
            self._spill.put(node, message.blob)  # apply (a refused upload is never kept)
            self._uploads[node] = (message.member, message.signature, hashlib.sha256(message.blob).digest(), message.layout)
        # apply
        if total is not None:
            self._sums[layout] = total
        self._by_layout.setdefault(layout, []).append(node)

    # ------------------------------------------------------------------ CONFIRM
    def _on_confirmation(self, message: Confirmation) -> None:
        node = message.node
        if message.member != self._uploads[node][0]:
            raise self._violation(f"node {node} confirms as {message.member!r}, not as the member it uploaded as", node)
        assert self._layout is not None
        self._check_signer(
            message.member,
            message.signature,
            node,
            _statements.confirm_bytes(
                roster_digest=self.config.roster_digest,
                round_id=self.round_id,
                fingerprint=self._crypto.fingerprint,
                layout=self._layout,
                summed=_statements.set_digest(self._entries),
            ),
        )
        # apply
        self._confirmations[node] = message.signature

    def _end_confirm(self) -> dict[int, Message]:
        self._check_confirmed()
        assert self._spill is not None
        total = self._crypto.start(length=self._length)
        for _, node, _ in self._entries:  # the holders sum in this order too; one upload in memory at a time
            total.add(self._spill.get(node), self.config.max_weight)
        self._parts = self._spill.parts((node for _, node, _ in self._entries), self._part_bytes)
        return self._start_decrypt(total.finish())

    # ------------------------------------------------------------------ DECRYPT
    def _start_decrypt(self, aggregate: bytes) -> dict[int, Message]:
        self._aggregate = aggregate
        self._decryption = self._crypto.start_decryption(aggregate)
        self._progress = dict.fromkeys(self._committee, 0)
        return self._ask()

    def _ask(self) -> dict[int, Message]:
        """The next request of every holder still summing (all in lockstep: one part read for all)."""
        return self._next(Stage.DECRYPT, {n: self._request(n, index) for n, index in sorted(self._progress.items())})

    def _confirmed_upload(self, node: int) -> ConfirmedUpload:
        """The signed upload of ``node`` (its blob from the spill file, its layout digest) with its confirmation."""
        assert self._spill is not None
        member, signature, _, layout = self._uploads[node]
        return ConfirmedUpload(Upload(self.round_id, node, self._spill.get(node), layout, member, signature), self._confirmations[node])

    def _on_partial_decryption(self, message: PartialDecryption) -> None:
        decryption = self._decryption
        assert decryption is not None
        node = message.node
        if self._stage is Stage.DECRYPT and self._parts and self._progress.get(node) != len(self._parts) - 1:
            raise self._violation("a partial decryption before the last part of the set was sent", node)
        party = self._committee.index(node) if self._stage is Stage.DECRYPT else self._pending[0]
        share = DecryptionShare.from_bytes(message.share, self.config.params, ciphertext_count=decryption.ciphertext_count)
        if share.party != party:
            raise self._violation(f"a partial decryption with key share {share.party}, expected {party}", node)
        decryption.receive_share(share)  # session, aggregate digest, one per key share; validate, then apply
        if self._stage is Stage.DECRYPT:  # apply
            self._partials.add(node)

    def _end_decrypt(self) -> dict[int, Message]:
        decryption = self._decryption
        assert decryption is not None
        self._next_parts(self._partials)  # done, or dropped (mid-stream too); the others' next part
        if self._progress:
            return self._ask()
        self._batch = None
        gone = [party for party, node in enumerate(self._committee) if node not in self._partials]
        self._report.decryptors = [node for node in self._committee if node in self._partials]
        if not gone:
            return self._fuse()
        try:
            decryption.mark_dropped(gone)  # RoundAbortedError unless t-of-n can stand in
        except RoundAbortedError as exc:
            raise self._abort(RoundAbortedError(str(exc), round=self.round_id, stage=self._stage)) from None
        alive = [party for party in range(len(self._committee)) if party not in gone]
        t = self.config.params.recovery_threshold
        self._stand_in, self._helpers = alive[0], alive[1:t]
        self._pending = list(decryption.standing_in)
        return self._release()

    # ------------------------------------------------------------------ RELEASE / RECOVER
    def _release(self) -> dict[int, Message]:
        dropped = self._pending[0]
        self._released = {}
        return self._next(
            Stage.RELEASE, {self._committee[h]: ReleaseRequest(self.round_id, self._committee[h], dropped, self._stand_in) for h in self._helpers}
        )

    def _on_release_reply(self, message: ReleaseReply) -> None:
        node = message.node
        backup = self._backup_message(message.backup, self._committee.index(node))
        if backup.recipient != self._stand_in or backup.subject != self._pending[0]:
            raise self._violation("a released backup for another stand-in or another dropped holder", node)
        # apply
        self._released[node] = message.backup

    def _end_release(self) -> dict[int, Message]:
        missing = sorted(self._asked - self._answered)
        if missing:
            raise self._ended(f"helpers {missing} did not release their backups of holder {self._pending[0]}")
        node = self._committee[self._stand_in]
        released = tuple(self._released[self._committee[h]] for h in self._helpers)
        aggregate = self._aggregate if self.config.roster is None else b""  # with a roster: the sum the stand-in kept
        return self._next(Stage.RECOVER, {node: RecoverRequest(self.round_id, node, self._pending[0], released, aggregate)})

    def _end_recover(self) -> dict[int, Message]:
        dropped = self._pending[0]
        if self._asked - self._answered:
            raise self._abort(
                RoundAbortedError(f"the stand-in for holder {dropped} did not deliver its share", round=self.round_id, stage=self._stage)
            )
        self._report.stood_in[self._committee[dropped]] = self._committee[self._stand_in]
        self._pending.pop(0)
        return self._release() if self._pending else self._fuse()

    # ------------------------------------------------------------------ fusion
    def _fuse(self) -> dict[int, Message]:
        decryption = self._decryption
        assert decryption is not None and self._record is not None
        try:
            total = decryption.fuse() / self.config.max_weight
        except (RoundAbortedError, DecryptionError) as exc:
            raise self._abort(exc) from None
        if not np.isfinite(total).all():
            raise self._abort(MalformedMessageError("the fused sum is not finite", round=self.round_id, stage=self._stage))
        weight = float(total[-1])
        if not weight > 0:
            raise self._abort(RoundAbortedError("the contributors' total weight decoded to zero", round=self.round_id, stage=self._stage))
        contributors = tuple(self._report.contributors)
        return self._done(
            AggregationResult(
                weighted_sum=total,
                mean=total[:-1] / weight,
                total_weight=weight * self.config.max_weight,
                contributors=contributors,
                members=tuple(self._uploads[n][0] for n in contributors) if self._uploads else (),
                decryptors=tuple(self._report.decryptors),
                fingerprint=self._crypto.fingerprint,
                session=self._record.to_bytes(),
                layout=self._layout or b"",
            )
        )


ThresholdRoundServer._MESSAGES = MESSAGE_CLASSES
ThresholdRoundServer._DECODE = staticmethod(decode_message)
ThresholdRoundServer._DECRYPT_REQUEST, ThresholdRoundServer._SUM_PART = DecryptRequest, SumPart
ThresholdRoundServer._CONFIRM_REQUEST, ThresholdRoundServer._CONFIRM = ConfirmRequest, Stage.CONFIRM
ThresholdRoundServer._EXPECTED = _EXPECTED
ThresholdRoundServer._HANDLERS = {
    KeygenReply: "_on_keygen_reply",
    JointReply: "_on_joint_reply",
    BackupReply: "_on_backup_reply",
    Upload: "_on_upload",
    Confirmation: "_on_confirmation",
    PartialDecryption: "_on_partial_decryption",
    ReleaseReply: "_on_release_reply",
    SumAck: "_on_sum_ack",
}
ThresholdRoundServer._CLOSERS = {
    Stage.KEYGEN: "_end_keygen",
    Stage.JOINT: "_end_joint",
    Stage.BACKUP: "_end_backup",
    Stage.ENCRYPT: "_end_encrypt",
    Stage.CONFIRM: "_end_confirm",
    Stage.DECRYPT: "_end_decrypt",
    Stage.RELEASE: "_end_release",
    Stage.RECOVER: "_end_recover",
}
ThresholdRoundServer._DONE, ThresholdRoundServer._ABORTED = Stage.DONE, Stage.ABORTED
