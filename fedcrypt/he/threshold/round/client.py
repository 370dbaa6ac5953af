"""The node side of the threshold CKKS round: a sans-IO object fed messages, returning messages.

One :class:`ThresholdClient` lives as long as the node takes part: it is a key holder of
the session's committee (its :class:`~fedcrypt.he.threshold.KeyHolder`, key share included,
outlives a round) and a client that uploads. Every message names its round. Transition
table (key state -> the server message it accepts -> reply, next key state)::

    any            KeygenRequest   -> KeygenReply (its link of the chain)  AWAITING_JOINT_KEY
                                      (a new session replaces the old one; the same session is a replay)
    AWAITING_JOINT_KEY JointRequest -> JointReply (its backups, t-of-n)     AWAITING_BACKUPS (t-of-n) / READY
    AWAITING_BACKUPS BackupRequest -> BackupReply                          READY
    READY          EncryptRequest  -> Upload                               READY
    READY          ConfirmRequest  -> Confirmation (with a roster only)    READY
    READY          SumPart         -> SumAck (with a roster: a part of the set)  READY
    READY          DecryptRequest  -> PartialDecryption (its own share)    READY
    READY          ReleaseRequest  -> ReleaseReply (t-of-n)                READY
    READY          RecoverRequest  -> PartialDecryption (a dropped holder's share, t-of-n)  READY

Invariants:

* any other (key state, message) pair raises :class:`~fedcrypt.errors.UnexpectedMessageError`;
  so does a message addressed to another node;
* every handler validates all of its input and computes its reply *before* it changes the
  object (JOINT and BACKUP work on a copy of the key holder): a refused message leaves the
  client exactly as it was, and nothing secret (no backup piece, no partial decryption)
  leaves it;
* the key chain: a holder extends only the previous holder's link of this session and
  committee, and accepts a joint key only at the end of a chain of ``num_parties`` links
  that links every key to the one before it (by SHA-256), carries its own link unchanged,
  and ends in the joint key; with a roster every link (and every key backup) must carry
  the signature of its committee member, bound to the roster, the session, the parameters,
  the committee and the holder's index;
* a node uploads at most once per round id, for increasing round ids; it releases its own
  partial decryption at most once per round id, for increasing round ids, and stands in
  for each dropped holder at most once per round id, for increasing round ids (across
  sessions: round ids keep increasing); every partial decryption is flooded (the
  parameters must flood);
* with a roster: an upload is signed; the node confirms one set of uploads per round, one
  that carries its own upload unchanged; a holder and a stand-in sum the signed uploads
  themselves and partially decrypt only a set of at least ``min_contributions`` uploads of
  distinct committee members, each signed for this round, this joint key and one layout,
  and each confirmed by its node for exactly this set; a set streamed in parts
  (:class:`~fedcrypt.he.threshold.round.SumPart`) is checked upload by upload against the
  entries of part 0 and decrypted only once every entry is in the sum (one stream per node:
  a new part 0 starts it again); after its own partial decryption the holder keeps that sum
  (until it uploads for a later round) and stands in for a dropped holder only with it;
* without a roster: a holder partially decrypts the server's aggregate when its header
  claims at least ``min_contributions`` uploads, each aggregate once, and emits
  :class:`~fedcrypt.errors.HonestButCuriousWarning`;
* no key share, backup piece, transport key or input is reachable through ``repr``/``str``
  or an error.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from dataclasses import replace
from typing import Callable

import numpy as np

from fedcrypt.errors import (
    InvalidSignature,
    SpecMismatchError,
)
from fedcrypt.he._round_common import check_confirm_entries, set_digest, verify_confirmations, weighted_input
from fedcrypt.he._round_roles import RoundClient, node_member
from fedcrypt.identity import NodeIdentity
from fedcrypt.vectors import TensorSpec

from .._blob import decode_blob
from .._common import MAX_VALUES
from ..client import KeyHolder
from ..messages import BlobKind, KeyBackupMessage, KeyShareMessage, RosterMessage
from ..server import ThresholdSum
from . import _state, _statements
from .config import ThresholdConfig
from .messages import (
    MESSAGE_CLASSES,
    BackupReply,
    BackupRequest,
    Confirmation,
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
    SumAck,
    SumPart,
    Upload,
    decode_message,
)

__all__ = ["ThresholdClient", "KeyState"]


class KeyState(enum.IntEnum):
    """Where a node stands with the session's threshold key."""

    NO_KEY = 0
    AWAITING_JOINT_KEY = 1
    AWAITING_BACKUPS = 2
    READY = 3


class ThresholdClient(RoundClient):
    """One node of threshold CKKS aggregation, sans-IO: a key holder and a client.

    Math: the node holds an additive share ``s_i`` of the joint key (OpenFHE's key chain,
    Asharov et al. EUROCRYPT 2012), uploads the public-key encryption of
    ``M * (w/M [x, 1])`` under the joint key, and returns flooded partial decryptions
    ``c1 s_i + flood_i`` of a sum (Li-Micciancio 2021 flooding, as OpenFHE implements it);
    with ``recovery_threshold = t`` it Shamir-shares ``s_i`` among the other holders and
    can stand in for a dropped one (OpenFHE ``ShareKeys`` / ``RecoverSharedKey``). Key
    backups travel under AES-256-GCM with ``HKDF(X25519)`` keys.

    Threat model: see :mod:`fedcrypt.he.threshold.round`. With ``config.roster``
    (malicious-server mode) the node needs its identity; without one it emits
    :class:`~fedcrypt.errors.HonestButCuriousWarning`.

    Args:
        config: the round configuration (the same on every node and the server).
        node: this node's transport id (``[0, 2^64)``).
        identity: this node's roster identity (required with a roster, refused without).

    Raises:
        IdentityError: the identity is not on the roster.
        ValueError / TypeError: arguments that do not fit the config.
    """

    __slots__ = (
        "config",
        "node",
        "member",
        "_identity",
        "_key_state",
        "_holder",
        "_committee",
        "_members",
        "_link",
        "_encrypted_round",
        "_decrypted_round",
        "_recovered",
        "_upload",
        "_confirmed",
        "_input",
        "_stream",
        "_kept",
    )

    def __init__(self, config: ThresholdConfig, node: int, *, identity: NodeIdentity | None = None) -> None:
        if not isinstance(config, ThresholdConfig):
            raise TypeError(f"config must be a ThresholdConfig, got {type(config).__name__}")
        if not isinstance(node, int) or isinstance(node, bool) or not 0 <= node < 1 << 64:
            raise ValueError(f"node must be an integer in [0, 2^64), got {node!r}")
        member = node_member(
            config,
            identity,
            "the threshold CKKS round runs honest-but-curious (no roster): secure only against a server that "
            "follows the protocol; a deviating server can present one upload (or a ciphertext of its own) as an "
            "aggregate, or substitute keys in the key chain",
        )
        self.config = config
        self.node = node
        self.member = member
        self._identity = identity
        self._key_state = KeyState.NO_KEY
        self._holder: KeyHolder | None = None
        #: the committee's node ids, in party order (from KEYGEN on)
        self._committee: tuple[int, ...] = ()
        #: the committee's member names, in party order (from JOINT on; empty names without a roster)
        self._members: tuple[str, ...] = ()
        #: this node's own signed link of the chain (from KEYGEN on)
        self._link: KeyLink | None = None
        self._encrypted_round: int | None = None
        self._decrypted_round: int | None = None
        #: dropped holder's party -> the last round this node stood in for it
        self._recovered: dict[int, int] = {}
        #: (round, SHA-256 of the blob, layout digest) of the last upload
        self._upload: tuple[int, bytes, bytes] | None = None
        #: (round, set digest) of the last confirmation
        self._confirmed: tuple[int, bytes] | None = None
        #: (w/M * [x, 1], layout digest) until the next ENCRYPT
        self._input: tuple[np.ndarray, bytes] | None = None
        #: the set being streamed to this holder: (round, entries, layout digest, next part, sum so far)
        self._stream: tuple[int, tuple[tuple[str, int, bytes], ...], bytes, int, ThresholdSum] | None = None
        #: with a roster, the sum of its last partial decryption: (round, set digest, aggregate) (for RECOVER)
        self._kept: tuple[int, bytes, bytes] | None = None

    # ------------------------------------------------------------------ public
    @property
    def key_state(self) -> KeyState:
        """Where the node stands with the session's key."""
        return self._key_state

    @property
    def session(self) -> bytes | None:
        """The session id of the key share it holds (public), or None."""
        return self._holder.session if self._holder is not None else None

    @property
    def party(self) -> int | None:
        """This node's index in the session's committee, or None."""
        return self._holder.party if self._holder is not None else None

    @property
    def committee(self) -> tuple[int, ...]:
        """The session's committee (node ids in party order; empty before key generation)."""
        return self._committee

    @property
    def fingerprint(self) -> bytes | None:
        """The joint key's fingerprint (public), or None before the joint key."""
        if self._holder is None or self._key_state in (KeyState.NO_KEY, KeyState.AWAITING_JOINT_KEY):
            return None
        return self._holder.fingerprint

    def __repr__(self) -> str:
        return (
            f"ThresholdClient(node={self.node}, member={self.member!r}, key_state={self._key_state.name}, "
            f"party={self.party}, committee={len(self._committee)})"
        )

    __str__ = __repr__

    def to_state_bytes(self) -> bytes:
        """The node's whole state as canonical, versioned bytes, THE KEY SHARE INCLUDED.

        For a transport that handles every message in a fresh process: keep the bytes in the
        node's private storage only (sealed, if anyone else can read it) and rebuild the
        node with :meth:`from_state_bytes`. The identity key is not in them, only its
        public half. Layout and checks: :mod:`fedcrypt.he.threshold.round._state`.
        """
        return _state.encode(self)

    @classmethod
    def from_state_bytes(cls, data: bytes, *, config: ThresholdConfig, identity: NodeIdentity | None = None) -> "ThresholdClient":
        """Rebuild the node of :meth:`to_state_bytes` (needs ``openfhe``); it answers every
        later message as the original would.

        Raises:
            MalformedMessageError: truncated, extended, garbled or non-canonical bytes.
            ContextMismatchError: the state was made under another config.
            IdentityError: another identity (or none) than the state's.
        """
        return _state.decode(cls, data, config, identity)

    def set_input(self, vector: np.ndarray, weight: float, *, layout: TensorSpec | bytes | None = None) -> None:
        """Give this round's update ``x`` and FedAvg weight ``w``; the upload encrypts ``M * (w/M [x, 1])``.

        Args:
            vector: 1-D float vector ``x`` (values of ``w/M x`` beyond ``params.clip`` are
                clipped at encryption).
            weight: ``w`` in ``(0, max_weight]``.
            layout: the layout ``x`` was flattened with (a TensorSpec or a transport's
                32-byte digest; default a digest of the length): bound into the upload.

        Raises:
            TypeError / EncodingError: not a 1-D float vector, or NaN in it.
            ValueError: a weight outside ``(0, max_weight]``, or a vector too long.
        """
        self._input = weighted_input(vector, weight, self.config.max_weight, layout, MAX_VALUES)

    # ------------------------------------------------------------------ helpers
    def _check_signer(self, member: str, signature: bytes, statement: Callable[[], bytes], what: str, message: Message) -> None:
        """With a roster: a member name and its roster signature of ``statement()``; without: neither."""
        roster = self.config.roster
        if roster is None:
            if member or signature:
                raise self._violation(f"{what} carries an identity in a round without a roster", message)
            return
        if not member or not signature:
            raise InvalidSignature(f"{what} is not signed (the round has a roster)")
        _statements.verify(roster, member, signature, statement(), what)

    def _require_holder(self) -> KeyHolder:
        assert self._holder is not None  # any state but NO_KEY
        return self._holder

    def _key_share(self, raw: bytes, session: bytes, party: int, message: Message) -> KeyShareMessage:
        """A relayed KeyShareMessage, decoded under the round's parameters, of ``party`` in ``session``."""
        share = KeyShareMessage.from_bytes(raw, self.config.params)
        if not hmac.compare_digest(share.session, session) or share.party != party:
            raise self._unexpected(f"a key of holder {share.party} or of another session, expected holder {party}", message)
        return share

    def _check_link(self, link: KeyLink, share: KeyShareMessage | None, session: bytes, party: int, message: KeygenRequest | JointRequest) -> None:
        """``link`` is holder ``party``'s (its key digest is ``share``'s key, with a roster signed by its member)."""
        if share is not None:
            if not hmac.compare_digest(hashlib.sha256(share.public_key).digest(), link.key):
                raise self._violation(f"the link of holder {party} does not name its key's digest", message)
            if share.transport_key != link.transport:
                raise self._violation(f"the link of holder {party} does not name its transport key", message)
        config = self.config
        self._check_signer(
            link.member,
            link.signature,
            lambda: _statements.link_bytes(
                roster_digest=config.roster_digest,
                session=session,
                params=config.params_digest,
                committee=_statements.committee_digest(self._committee_of(message)),
                party=party,
                node=self._committee_of(message)[party],
                member=link.member,
                previous=link.previous,
                key=link.key,
                transport=link.transport,
            ),
            f"the key-chain link of holder {party}",
            message,
        )

    @staticmethod
    def _committee_of(message: KeygenRequest | JointRequest) -> tuple[int, ...]:
        return message.committee

    def _sign_backup(self, backup: KeyBackupMessage) -> SignedBackup:
        raw = backup.to_bytes()
        signature = (
            self._sign(
                _statements.backup_bytes(
                    roster_digest=self.config.roster_digest,
                    session=backup.session,
                    committee=_statements.committee_digest(self._committee),
                    node=self.node,
                    member=self.member,
                    backup=hashlib.sha256(raw).digest(),
                )
            )
            if self._identity is not None
            else b""
        )
        return SignedBackup(raw, self.member, signature)

    def _open_backup(self, signed: SignedBackup, message: Message) -> KeyBackupMessage:
        """A signed backup, decoded under the round's parameters: this session, to this holder,
        from a committee member who signed it (with a roster)."""
        holder = self._require_holder()
        backup = KeyBackupMessage.from_bytes(signed.backup, self.config.params)
        if not hmac.compare_digest(backup.session, holder.session):
            raise self._unexpected("a key backup of another session", message)
        if backup.recipient != holder.party:
            raise self._violation(f"a key backup for holder {backup.recipient}", message)
        node = self._committee[backup.sender]
        if self.config.roster is not None and signed.member != self._members[backup.sender]:
            raise self._violation(f"the backup of holder {backup.sender} is signed by another member", message)
        self._check_signer(
            signed.member,
            signed.signature,
            lambda: _statements.backup_bytes(
                roster_digest=self.config.roster_digest,
                session=backup.session,
                committee=_statements.committee_digest(self._committee),
                node=node,
                member=signed.member,
                backup=hashlib.sha256(signed.backup).digest(),
            ),
            f"the key backup of holder {backup.sender}",
            message,
        )
        return backup

    def _copy_holder(self) -> KeyHolder:
        """A copy of the key holder to change (validate, then apply: the original stays as it was)."""
        return KeyHolder.from_state_bytes(self._require_holder().to_state_bytes())

    # ------------------------------------------------------------------ KEYGEN
    def _on_keygen_request(self, message: KeygenRequest) -> KeygenReply:
        params, roster = self.config.params, self.config.roster
        n = params.num_parties
        if self._holder is not None and hmac.compare_digest(message.session, self._holder.session):
            raise self._unexpected("this node already ran key generation for this session (replay)", message)
        committee, party = message.committee, message.party
        if len(committee) != n or len(set(committee)) != n:
            raise self._violation(f"a committee of {len(committee)} nodes; the parameters need {n} distinct ones", message)
        if party >= n or committee[party] != self.node:
            raise self._violation(f"this node is not holder {party} of the committee", message)
        previous_share: KeyShareMessage | None = None
        previous_digest = _statements.NO_PREVIOUS
        if party == 0:
            if message.previous is not None:
                raise self._violation("holder 0 starts the chain: no previous link", message)
        else:
            previous = message.previous
            if previous is None:
                raise self._violation(f"holder {party} extends holder {party - 1}'s link, and none was sent", message)
            if previous.round_id != message.round_id or previous.node != committee[party - 1]:
                raise self._unexpected(f"the previous link is not holder {party - 1}'s of this round", message)
            previous_share = self._key_share(previous.share, message.session, party - 1, message)
            self._check_link(previous.link, previous_share, message.session, party - 1, message)
            if roster is not None and previous.link.member == self.member:
                raise self._violation("the previous link names this node's member", message)
            previous_digest = previous.link.key
        holder = KeyHolder(params, party, message.session, min_contributions=self.config.min_contributions)
        own = holder.generate_key_share(previous_share)
        link = KeyLink(self.member, previous_digest, hashlib.sha256(own.public_key).digest(), own.transport_key)
        if self._identity is not None:
            link = replace(
                link,
                signature=self._sign(
                    _statements.link_bytes(
                        roster_digest=self.config.roster_digest,
                        session=message.session,
                        params=self.config.params_digest,
                        committee=_statements.committee_digest(committee),
                        party=party,
                        node=self.node,
                        member=self.member,
                        previous=link.previous,
                        key=link.key,
                        transport=link.transport,
                    )
                ),
            )
        reply = KeygenReply(message.round_id, self.node, link, own.to_bytes())
        # apply (a new session replaces the old one: a server can always end a session; the old key's sums go with it)
        self._holder, self._committee, self._members, self._link, self._stream, self._kept = holder, committee, (), link, None, None
        self._key_state = KeyState.AWAITING_JOINT_KEY
        return reply

    # ------------------------------------------------------------------ JOINT
    def _on_joint_request(self, message: JointRequest) -> JointReply:
        params, roster = self.config.params, self.config.roster
        holder = self._require_holder()
        n, party = params.num_parties, holder.party
        if not hmac.compare_digest(message.session, holder.session):
            raise self._unexpected("a joint key of another session", message)
        if message.committee != self._committee:
            raise self._violation("another committee than at key generation", message)
        if len(message.links) != n:
            raise self._violation(f"a chain of {len(message.links)} links for {n} holders", message)
        if message.links[party] != self._link:
            raise self._violation("the chain does not carry this node's own link unchanged", message)
        members = tuple(link.member for link in message.links)
        if roster is not None and len(set(members)) != n:
            raise self._violation("two links name one member", message)
        previous = _statements.NO_PREVIOUS
        for index, link in enumerate(message.links):
            if not hmac.compare_digest(link.previous, previous):
                raise self._violation(f"the link of holder {index} does not extend the key of holder {index - 1}", message)
            previous = link.key
            if index != party:
                self._check_link(link, None, holder.session, index, message)
        joint = self._key_share(message.joint, holder.session, n - 1, message)
        last = message.links[-1]
        if not hmac.compare_digest(hashlib.sha256(joint.public_key).digest(), last.key) or joint.transport_key != last.transport:
            raise self._violation("the joint key is not the key of the chain's last link", message)
        transports = tuple(link.transport for link in message.links)
        if params.recovery_threshold and (any(len(k) != 32 for k in transports) or len(set(transports)) != n):
            raise self._violation("the links do not name one distinct transport key per holder", message)
        if not params.recovery_threshold and any(transports):
            raise self._violation("transport keys in a session without recovery_threshold", message)
        draft = self._copy_holder()
        draft.receive_joint_key(joint)
        backups: tuple[SignedBackup, ...] = ()
        if params.recovery_threshold:
            draft.receive_roster(RosterMessage(holder.session, transports))
            backups = tuple(self._sign_backup(backup) for backup in draft.backup_key())
        reply = JointReply(message.round_id, self.node, backups)
        # apply
        self._holder, self._members = draft, members
        self._key_state = KeyState.AWAITING_BACKUPS if params.recovery_threshold else KeyState.READY
        return reply

    # ------------------------------------------------------------------ BACKUP
    def _on_backup_request(self, message: BackupRequest) -> BackupReply:
        n, party = self.config.params.num_parties, self._require_holder().party
        backups = [self._open_backup(signed, message) for signed in message.backups]
        if sorted(b.sender for b in backups) != [p for p in range(n) if p != party]:
            raise self._violation("the backups are not one from each other holder", message)
        if any(b.subject != b.sender for b in backups):
            raise self._violation("a backup of another holder's key share than its sender's", message)
        draft = self._copy_holder()
        for backup in backups:
            draft.receive_backup(backup)  # DecryptionError: a tampered or misdirected piece
        reply = BackupReply(message.round_id, self.node)
        # apply
        self._holder, self._key_state = draft, KeyState.READY
        return reply

    # ------------------------------------------------------------------ ENCRYPT
    def _on_encrypt_request(self, message: EncryptRequest) -> Upload:
        holder = self._require_holder()
        vector, layout = self._encrypt_input(message, holder.fingerprint, "joint key")
        blob = holder.encrypt(vector, self.config.max_weight)  # M * w/M [x, 1], clipped before scaling
        blob_digest = hashlib.sha256(blob).digest()
        signature = (
            self._sign(
                _statements.upload_bytes(
                    roster_digest=self.config.roster_digest,
                    round_id=message.round_id,
                    fingerprint=holder.fingerprint,
                    node=self.node,
                    member=self.member,
                    blob_digest=blob_digest,
                    layout=layout,
                )
            )
            if self._identity is not None
            else b""
        )
        reply = Upload(message.round_id, self.node, blob, layout, self.member, signature)
        # apply
        self._encrypted_round = message.round_id
        self._upload = (message.round_id, blob_digest, layout)
        self._input = None
        self._kept = None if self._kept is None or self._kept[0] < message.round_id else self._kept  # no RECOVER of it is due
        return reply

    # ------------------------------------------------------------------ CONFIRM
    def _check_count(self, count: int, message: Message) -> None:
        if count < self.config.min_contributions:
            raise self._violation(f"a set of {count} uploads, fewer than min_contributions={self.config.min_contributions}", message)
        capacity = min(self.config.params.num_clients, self.config.params.num_parties)
        if count > capacity:
            raise self._violation(f"a set of {count} uploads, more than the committee or the capacity {capacity}", message)

    def _check_committee_entry(self, member: str, node: int, message: Message) -> None:
        if dict(zip(self._committee, self._members)).get(node) != member or node not in self._committee:
            raise self._violation(f"node {node} ({member!r}) is not that member of the session's committee", message)

    def _on_confirm_request(self, message: ConfirmRequest) -> Confirmation:
        roster = self.config.roster
        if roster is None:
            raise self._violation("a confirm request in a round without a roster", message)
        if self._upload is None or self._upload[0] != message.round_id:
            raise self._unexpected(f"this node made no upload in round {message.round_id}", message)
        _, own_digest, layout = self._upload
        self._check_count(len(message.entries), message)
        for member, node, _ in message.entries:
            self._check_committee_entry(member, node, message)
        summed = check_confirm_entries(
            message.entries,
            roster=roster,
            member=self.member,
            node=self.node,
            own_digest=own_digest,
            confirmed=self._confirmed,
            round_id=message.round_id,
            violation=lambda text: self._violation(text, message),
            unexpected=lambda text: self._unexpected(text, message),
        )
        signature = self._sign(
            _statements.confirm_bytes(
                roster_digest=self.config.roster_digest,
                round_id=message.round_id,
                fingerprint=self._require_holder().fingerprint,
                layout=layout,
                summed=summed,
            )
        )
        reply = Confirmation(message.round_id, self.node, self.member, signature)
        # apply (a second request for the same set gets the same, deterministic, signature)
        self._confirmed = (message.round_id, summed)
        return reply

    # ------------------------------------------------------------------ DECRYPT
    def _check_decrypt_round(self, message: Message) -> None:
        if self._decrypted_round is not None and message.round_id <= self._decrypted_round:
            raise self._unexpected(
                f"a partial decryption for round {message.round_id}, but this node already released one for round "
                f"{self._decrypted_round} (one per round, increasing)",
                message,
            )

    def _on_decrypt_request(self, message: DecryptRequest) -> PartialDecryption:
        holder = self._require_holder()
        self._check_decrypt_round(message)
        kept = None
        if self.config.roster is None:
            if message.uploads or not message.aggregate or message.part:
                raise self._violation("a round without a roster decrypts the server's aggregate, not a list of uploads", message)
            aggregate = message.aggregate
        else:
            if message.aggregate or not message.uploads:
                raise self._violation(
                    "with a roster a key holder sums the signed uploads itself; an aggregate made by the server is refused",
                    message,
                )
            entries, summed = self._set_sum(message)
            aggregate = summed.finish()
            kept = (message.round_id, set_digest(entries), aggregate)
        share = holder.partial_decrypt(aggregate)  # flooded; each aggregate at most once
        reply = PartialDecryption(message.round_id, self.node, share.to_bytes())
        # apply
        self._decrypted_round = message.round_id
        if kept is not None:
            self._stream, self._kept = None, kept
        return reply

    def _on_sum_part(self, message: SumPart) -> SumAck:
        """With a roster: check one streamed part of a confirmed set and add it to this node's sum."""
        if self.config.roster is None:
            raise self._violation("a streamed set in a round without a roster", message)
        self._check_decrypt_round(message)
        stream = self._stream_part(message)
        reply = SumAck(message.round_id, self.node, message.index)
        # apply
        self._stream = stream
        return reply

    def _merged(self, summed: ThresholdSum, batch: ThresholdSum) -> ThresholdSum:
        """``batch`` added to a copy of the stream's sum: the stream stays as it was should the request be refused."""
        summed = summed.copy()
        summed.merge(batch)
        return summed

    def _open_set(self, message: Message, entries: tuple[tuple[str, int, bytes], ...]) -> tuple[tuple[str, int, bytes], ...]:
        """With a roster: a set of at least ``min_contributions`` uploads of distinct committee members and nodes."""
        self._check_count(len(entries), message)
        if not len({e[0] for e in entries}) == len({e[1] for e in entries}) == len(entries):
            raise self._violation("two uploads from one member or node in the set", message)
        for member, node, _ in entries:
            self._check_committee_entry(member, node, message)
        return entries

    def _fold(
        self, message: SumPart | DecryptRequest, entries: tuple[tuple[str, int, bytes], ...], start: int, layout: bytes | None
    ) -> tuple[ThresholdSum, bytes]:
        """Check ``message.uploads`` as entries ``start, start + 1, ...`` of the set and sum them (a new sum; nothing changes).

        Each upload is the entry's (member, node, SHA-256 of the blob), of this round, an upload-kind
        blob under the joint key with weight ``M`` and the set's one layout, signed by its member for
        all of that, with its member's confirmation of exactly this set. Cheap checks first, then
        the signatures, then the ciphertexts.
        """
        params, weight = self.config.params, self.config.max_weight
        holder = self._require_holder()
        if start + len(message.uploads) > len(entries):
            raise self._violation(f"{start + len(message.uploads)} uploads for a set of {len(entries)}", message)
        part = entries[start : start + len(message.uploads)]
        length: int | None = None
        for item, (member, node, digest) in zip(message.uploads, part):
            upload = item.upload
            if upload.round_id != message.round_id:
                raise self._unexpected(f"an upload of round {upload.round_id} in a request for round {message.round_id}", message)
            if upload.member != member or upload.node != node or not hmac.compare_digest(hashlib.sha256(upload.blob).digest(), digest):
                raise self._violation(f"the upload of node {upload.node} is not the set's entry for node {node}", message)
            header, _ = decode_blob(upload.blob, params, holder.fingerprint, (BlobKind.UPLOAD,))  # ContextMismatchError: another key
            if header.total_weight != weight:
                raise self._violation(f"the upload of node {node} was not encrypted with weight M={weight:g}", message)
            if layout is None:
                layout = upload.layout
            if not hmac.compare_digest(upload.layout, layout) or header.length != (length or header.length):
                raise SpecMismatchError(f"the upload of node {node} has another layout than the others")
            length = header.length
        assert layout is not None
        self._verify_uploads(message, part, layout)
        self._verify_confirmations(message, set_digest(entries), part, layout)
        summed = ThresholdSum.under(params, holder.fingerprint, holder.key_tag, length=length)
        for item in message.uploads:
            summed.add(item.upload.blob, weight)  # full check of framing, level and scale; a repeated blob is refused
        return summed, layout

    def _verify_uploads(self, message: SumPart | DecryptRequest, entries: tuple[tuple[str, int, bytes], ...], layout: bytes) -> None:
        """Each upload signed by its member for this round, this joint key and this layout."""
        fingerprint = self._require_holder().fingerprint
        for item, (member, node, digest) in zip(message.uploads, entries):
            # partial binds this entry now (_check_signer calls the statement before it returns anyway)
            self._check_signer(
                member,
                item.upload.signature,
                functools.partial(
                    _statements.upload_bytes,
                    roster_digest=self.config.roster_digest,
                    round_id=message.round_id,
                    fingerprint=fingerprint,
                    node=node,
                    member=member,
                    blob_digest=digest,
                    layout=layout,
                ),
                f"the upload of node {node}",
                message,
            )

    def _verify_confirmations(
        self, message: SumPart | DecryptRequest, summed: bytes, entries: tuple[tuple[str, int, bytes], ...], layout: bytes
    ) -> None:
        """Each member's confirmation of exactly this set (so the round's decrypted sets are equal or disjoint)."""
        assert self.config.roster is not None
        statement = _statements.confirm_bytes(
            roster_digest=self.config.roster_digest,
            round_id=message.round_id,
            fingerprint=self._require_holder().fingerprint,
            layout=layout,
            summed=summed,
        )
        verify_confirmations(self.config.roster, statement, message.uploads, entries)

    # ------------------------------------------------------------------ RELEASE / RECOVER (t-of-n)
    def _check_dropped(self, dropped: int, message: Message) -> KeyHolder:
        holder = self._require_holder()
        if not self.config.params.recovery_threshold:
            raise self._violation("the session has no recovery_threshold: no holder is stood in for", message)
        if dropped >= self.config.params.num_parties or dropped == holder.party:
            raise self._violation(f"holder {dropped} is not another holder of the committee", message)
        return holder

    def _on_release_request(self, message: ReleaseRequest) -> ReleaseReply:
        holder = self._check_dropped(message.dropped, message)
        if message.stand_in >= self.config.params.num_parties or message.stand_in in (message.dropped, holder.party):
            raise self._violation(f"holder {message.stand_in} cannot stand in for holder {message.dropped}", message)
        backup = holder.release_backup(message.dropped, message.stand_in)  # at most n - t dropped holders per session
        return ReleaseReply(message.round_id, self.node, self._sign_backup(backup))

    def _on_recover_request(self, message: RecoverRequest) -> PartialDecryption:
        holder = self._check_dropped(message.dropped, message)
        last = self._recovered.get(message.dropped)
        if last is not None and message.round_id <= last:
            raise self._unexpected(
                f"this node already stood in for holder {message.dropped} in round {last} (once per round, increasing)",
                message,
            )
        released = [self._open_backup(signed, message) for signed in message.released]
        if any(b.subject != message.dropped or b.sender == message.dropped for b in released):
            raise self._violation(f"a released backup is not another holder's piece of holder {message.dropped}", message)
        if self.config.roster is None:
            if not message.aggregate:
                raise self._violation("a round without a roster decrypts the server's aggregate", message)
            aggregate = message.aggregate
        elif message.aggregate:
            raise self._violation("with a roster a stand-in decrypts the sum it made itself; an aggregate made by the server is refused", message)
        elif self._kept is None or self._kept[0] != message.round_id:
            raise self._unexpected(f"this node kept no sum of round {message.round_id}: it stands in only for the set it decrypted itself", message)
        else:
            aggregate = self._kept[2]  # the set this node partially decrypted with its own share this round
        share = holder.recover_share(message.dropped, aggregate, released)  # InvalidShare: fewer than t pieces
        reply = PartialDecryption(message.round_id, self.node, share.to_bytes())
        # apply
        self._recovered[message.dropped] = message.round_id
        return reply


ThresholdClient._MESSAGES = MESSAGE_CLASSES
ThresholdClient._DECODE = staticmethod(decode_message)
ThresholdClient._TRANSITIONS = {
    **{(state, KeygenRequest): ThresholdClient._on_keygen_request for state in KeyState},
    (KeyState.AWAITING_JOINT_KEY, JointRequest): ThresholdClient._on_joint_request,
    (KeyState.AWAITING_BACKUPS, BackupRequest): ThresholdClient._on_backup_request,
    (KeyState.READY, EncryptRequest): ThresholdClient._on_encrypt_request,
    (KeyState.READY, ConfirmRequest): ThresholdClient._on_confirm_request,
    (KeyState.READY, DecryptRequest): ThresholdClient._on_decrypt_request,
    (KeyState.READY, SumPart): ThresholdClient._on_sum_part,
    (KeyState.READY, ReleaseRequest): ThresholdClient._on_release_request,
    (KeyState.READY, RecoverRequest): ThresholdClient._on_recover_request,
}
