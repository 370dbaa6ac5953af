"""The node side of the single-key CKKS round: a sans-IO object fed messages, returning messages.

One :class:`CkksClient` lives as long as the node takes part (its CKKS key outlives a
round); every message names its round. Transition table (key state -> the server message
it accepts -> reply, next key state)::

    NO_KEY        ContextRequest  -> ContextReply (a fresh X25519 key)    AWAITING_KEY
    AWAITING_KEY  ContextRequest  -> ContextReply (a fresh X25519 key)    AWAITING_KEY
    AWAITING_KEY  DealRequest     -> DealReply (generates the key)        READY
    READY         DealRequest     -> DealReply (seals the key it holds)   READY
    AWAITING_KEY  InstallRequest  -> InstallReply (opens the sealed key)  READY
    READY         ContextRequest  -> ContextReply (the public context)    READY
    READY         EncryptRequest  -> Upload                               READY
    READY         ConfirmRequest  -> Confirmation (with a roster only)    READY
    READY         SumPart         -> SumAck (with a roster: a part of the set)  READY
    READY         DecryptRequest  -> Decryption                           READY

Invariants:

* any other (key state, message) pair raises :class:`~fedcrypt.errors.UnexpectedMessageError`;
  so does a message addressed to another node;
* every handler validates all of its input and computes its reply *before* it changes the
  object: a refused message leaves the client exactly as it was, and nothing secret (no
  sealed key, no decryption) leaves it;
* a node that holds a key never installs another (a key file or a dealt key, once held, is
  the node's key); with a roster it deals that key to keyless peers whose adverts are
  signed by roster members for this round, without one it never deals it;
* a node encrypts at most once per round id, and only for increasing round ids;
* a node releases at most one decryption per upload it made itself (counted in its own
  state, whatever round ids the server sends), and every release is flooded
  (:meth:`~fedcrypt.he.KeyOwner.decrypt`);
* with a roster: a DEAL is sealed only to peers whose X25519 keys carry their roster
  signature; an INSTALL is opened only under the dealer's roster signature over its X25519
  key, the key's fingerprint and the peers (this node's own advert among them); an upload is
  signed; the node confirms one set of uploads per round, one that carries its own upload
  unchanged; a decryptor sums the signed uploads itself and decrypts only a set of at
  least ``min_contributions`` uploads of distinct members, each signed for this round, this
  key and one layout, and each confirmed by its node for exactly this set; a set streamed
  in parts (:class:`~fedcrypt.he.round.SumPart`) is checked upload by upload against the
  entries of part 0 and decrypted only once every entry is in the sum (one stream per node:
  a new part 0 starts it again);
* without a roster: the decryptor refuses an upload-kind blob, an aggregate that counts
  fewer than ``min_contributions`` uploads and an aggregate whose header's total weight is
  not its number of weight-1 uploads; it emits :class:`~fedcrypt.errors.HonestButCuriousWarning`;
* no key, pending X25519 key or input is reachable through ``repr``/``str`` or an error.
"""

from __future__ import annotations

import enum
import hashlib
import hmac

import numpy as np

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import (
    ContextMismatchError,
    IdentityError,
    InvalidSignature,
    SecretKeyError,
    SpecMismatchError,
)
from fedcrypt.he._round_common import check_confirm_entries, set_digest, verify_confirmations, weighted_input
from fedcrypt.he._round_roles import RoundClient, node_member
from fedcrypt.he.blob import MAX_VALUES, BlobKind, peek_header
from fedcrypt.he.context import EncryptedSum, KeyOwner
from fedcrypt.he.keyshare import open_key_from_peer, seal_key_for_peer
from fedcrypt.identity import NodeIdentity
from fedcrypt.vectors import TensorSpec

from . import _state, _statements
from .config import CkksConfig
from .messages import (
    MESSAGE_CLASSES,
    Confirmation,
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
    SumAck,
    SumPart,
    Upload,
    decode_message,
)

__all__ = ["CkksClient", "KeyState"]


class KeyState(enum.IntEnum):
    """Where a node stands with the group's CKKS key."""

    NO_KEY = 0
    AWAITING_KEY = 1
    READY = 2


class CkksClient(RoundClient):
    """One node of single-key CKKS aggregation (Cheon-Kim-Kim-Song 2017), sans-IO.

    Math: the node uploads the symmetric RLWE encryption of ``w/M * [x, 1]``
    (:meth:`KeyOwner.encrypt`); a decryptor returns the flooded decryption of a sum of
    uploads (Li-Micciancio 2021: Gaussian noise ``2^15`` times the noise bound, keyed by
    the key and the ciphertext). Key transport in the dealer set-up: AES-256-GCM under
    ``HKDF(X25519(dealer, peer))`` (:mod:`fedcrypt.he.keyshare`).

    Threat model: see :mod:`fedcrypt.he.round`. With ``config.roster`` (malicious-server
    mode) the node needs its identity; without one it emits
    :class:`~fedcrypt.errors.HonestButCuriousWarning`.

    Args:
        config: the round configuration (the same on every node and the server).
        node: this node's transport id (``[0, 2^64)``).
        identity: this node's roster identity (required with a roster, refused without).
        key: the group's key, loaded by the transport from a key file
            (``KeyOwner.from_bytes``); without one the node asks a dealer for it
            (``config.key_setup == "dealer"``).

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
        "_owner",
        "_pending",
        "_pending_round",
        "_encrypted_round",
        "_uploads",
        "_decryptions",
        "_upload",
        "_confirmed",
        "_input",
        "_stream",
    )

    def __init__(
        self,
        config: CkksConfig,
        node: int,
        *,
        identity: NodeIdentity | None = None,
        key: KeyOwner | None = None,
    ) -> None:
        if not isinstance(config, CkksConfig):
            raise TypeError(f"config must be a CkksConfig, got {type(config).__name__}")
        if not isinstance(node, int) or isinstance(node, bool) or not 0 <= node < 1 << 64:
            raise ValueError(f"node must be an integer in [0, 2^64), got {node!r}")
        if key is not None and not isinstance(key, KeyOwner):
            raise TypeError(f"key must be a KeyOwner or None, got {type(key).__name__}")
        member = node_member(
            config,
            identity,
            "the CKKS round runs honest-but-curious (no roster): secure only against a server that follows "
            "the protocol; a deviating server can present one upload as an aggregate or swap dealer keys",
        )
        self.config = config
        self.node = node
        self.member = member
        self._identity = identity
        self._key_state = KeyState.READY if key is not None else KeyState.NO_KEY
        self._owner = key
        self._pending: X25519KeyPair | None = None
        self._pending_round = 0
        self._encrypted_round: int | None = None
        self._uploads = 0
        self._decryptions = 0
        #: (round, SHA-256 of the blob, layout digest) of the last upload
        self._upload: tuple[int, bytes, bytes] | None = None
        #: (round, set digest) of the last confirmation
        self._confirmed: tuple[int, bytes] | None = None
        #: (w/M * [x, 1], layout digest) until the next ENCRYPT
        self._input: tuple[np.ndarray, bytes] | None = None
        #: the set being streamed to this decryptor: (round, entries, layout digest, next part, sum so far)
        self._stream: tuple[int, tuple[tuple[str, int, bytes], ...], bytes, int, EncryptedSum] | None = None

    # ------------------------------------------------------------------ public
    @property
    def key_state(self) -> KeyState:
        """Whether the node holds the key, waits for one, or has none."""
        return self._key_state

    @property
    def fingerprint(self) -> bytes | None:
        """The held key's context fingerprint (public), or None."""
        return self._owner.fingerprint if self._owner is not None else None

    @property
    def uploads(self) -> int:
        """Uploads this node made (each buys at most one decryption)."""
        return self._uploads

    @property
    def decryptions(self) -> int:
        """Decryptions this node released."""
        return self._decryptions

    def __repr__(self) -> str:
        return (
            f"CkksClient(node={self.node}, member={self.member!r}, key_state={self._key_state.name}, "
            f"uploads={self._uploads}, decryptions={self._decryptions})"
        )

    __str__ = __repr__

    def to_state_bytes(self) -> bytes:
        """The node's whole state as canonical, versioned bytes, THE SECRET KEY INCLUDED.

        For a transport that handles every message in a fresh process: keep the bytes in the
        node's private storage only (sealed, if anyone else can read it) and rebuild the
        node with :meth:`from_state_bytes`. The identity key is not in them, only its
        public half. Layout and checks: :mod:`fedcrypt.he.round._state`.
        """
        return _state.encode(self)

    @classmethod
    def from_state_bytes(cls, data: bytes, *, config: CkksConfig, identity: NodeIdentity | None = None) -> "CkksClient":
        """Rebuild the node of :meth:`to_state_bytes`; it answers every later message as the original would.

        Args:
            data: the state bytes.
            config: the config the state was made under (its digest is in the bytes).
            identity: this node's identity, with a roster (the one the state was made with).

        Raises:
            MalformedMessageError: truncated, extended, garbled or non-canonical bytes.
            ContextMismatchError: the state was made under another config.
            IdentityError: another identity (or none) than the state's.
        """
        return _state.decode(cls, data, config, identity)

    def set_input(self, vector: np.ndarray, weight: float, *, layout: TensorSpec | bytes | None = None) -> None:
        """Give this round's update ``x`` and FedAvg weight ``w``; the upload is ``w/M * [x, 1]``.

        Args:
            vector: 1-D float vector ``x`` (values beyond ``params.clip`` after weighting
                are clipped at encryption).
            weight: ``w`` in ``(0, max_weight]``.
            layout: the layout ``x`` was flattened with (a TensorSpec or a transport's
                32-byte digest; default a digest of the length): bound into the upload.

        Raises:
            TypeError / EncodingError: not a 1-D float vector, or NaN in it.
            ValueError: a weight outside ``(0, max_weight]``, or a vector too long.
        """
        scaled, digest = weighted_input(vector, weight, self.config.max_weight, layout, MAX_VALUES)
        self._input = (scaled, digest)

    # ------------------------------------------------------------------ helpers
    def _check_signer(self, member: str, signature: bytes, what: str, message: Message) -> None:
        """A roster needs a member name and a signature; no roster needs neither."""
        if self.config.roster is None:
            if member or signature:
                raise self._violation(f"{what} carries an identity in a round without a roster", message)
            return
        if not member or not signature:
            raise InvalidSignature(f"{what} is not signed (the round has a roster)")

    def _verify(self, member: str, signature: bytes, statement: bytes, what: str) -> None:
        """Check ``signature`` under the roster key of ``member`` (IdentityError if not a member)."""
        assert self.config.roster is not None
        _statements.verify(self.config.roster, member, signature, statement, what)

    def _require_owner(self) -> KeyOwner:
        assert self._owner is not None  # READY
        return self._owner

    # ------------------------------------------------------------------ CONTEXT
    def _on_context_request(self, message: ContextRequest) -> ContextReply:
        digest = self.config.roster_digest
        if self._owner is not None:
            fingerprint = self._owner.fingerprint
            signature = b""
            if self._identity is not None:
                signature = self._sign(
                    _statements.advert_bytes(
                        roster_digest=digest,
                        round_id=message.round_id,
                        node=self.node,
                        member=self.member,
                        x25519=b"",
                        fingerprint=fingerprint,
                    )
                )
            return ContextReply(message.round_id, self.node, self._owner.aggregator_context().to_bytes(), b"", self.member, signature)
        if self.config.key_setup != "dealer":
            raise SecretKeyError(f"node {self.node} holds no CKKS key and the round's key_setup is 'file'")
        pair = X25519KeyPair.generate()
        signature = b""
        if self._identity is not None:
            signature = self._sign(
                _statements.advert_bytes(
                    roster_digest=digest,
                    round_id=message.round_id,
                    node=self.node,
                    member=self.member,
                    x25519=pair.public_bytes,
                    fingerprint=b"",
                )
            )
        reply = ContextReply(message.round_id, self.node, b"", pair.public_bytes, self.member, signature)
        # apply
        self._pending, self._pending_round = pair, message.round_id
        self._key_state = KeyState.AWAITING_KEY
        return reply

    # ------------------------------------------------------------------ DEAL
    def _check_peer_adverts(self, message: DealRequest | InstallRequest, *, own: bool) -> None:
        """The relayed adverts: this round, distinct nodes, members and keys, each signed (with a roster).

        ``own``: this node's advert must be among them (INSTALL) or must not (DEAL).
        """
        own_key = self._pending.public_bytes if self._pending is not None else b""
        nodes: set[int] = set()
        members: set[str] = set()
        keys: set[bytes] = set()
        found = False
        for peer in message.peers:
            if peer.round_id != message.round_id:
                raise self._unexpected(f"the advert of node {peer.node} is for round {peer.round_id}", message)
            if peer.node in nodes or (self.config.roster is not None and peer.member in members) or peer.x25519 in keys:
                raise self._violation("the peer list repeats a node, a member or an X25519 key", message)
            if peer.context or len(peer.x25519) != 32:
                raise self._violation(f"the advert of node {peer.node} carries no X25519 key", message)
            nodes.add(peer.node)
            members.add(peer.member)
            keys.add(peer.x25519)
            mine = peer.node == self.node
            if mine:
                if not own:
                    raise self._violation("the dealer is among its own peers", message)
                if not (peer.member == self.member and hmac.compare_digest(peer.x25519, own_key)):
                    raise self._violation("the peer list does not carry this node's own advert unchanged", message)
                found = True
                continue
            if self.config.roster is not None and peer.member == self.member:
                raise self._violation("another node's advert names this node's member", message)
            if own_key and hmac.compare_digest(peer.x25519, own_key):
                raise self._violation("another node's advert carries this node's X25519 key", message)
            self._check_signer(peer.member, peer.signature, f"the advert of node {peer.node}", message)
            if self.config.roster is not None:
                self._verify(
                    peer.member,
                    peer.signature,
                    _statements.advert_bytes(
                        roster_digest=self.config.roster_digest,
                        round_id=peer.round_id,
                        node=peer.node,
                        member=peer.member,
                        x25519=peer.x25519,
                        fingerprint=b"",
                    ),
                    f"the X25519 key of node {peer.node}",
                )
        if own and not found:
            raise self._violation("the peer list does not name this node", message)

    def _on_deal_request(self, message: DealRequest) -> DealReply:
        """Deal a new key (a keyless node that asked for one), or the key this node holds (READY).

        A holder deals only what any holder may do: seal the group's key to roster members
        (their adverts signed for this round) that asked for it; the key is the node's own,
        the peers install it only under the holder's signature and fingerprint.
        """
        ready = self._owner is not None
        if ready and self.config.roster is None:  # review break 3: the server could name its own X25519 key as a peer
            raise self._unexpected("a DealRequest in key state READY: without a roster a key holder never deals its key", message)
        if not ready and message.round_id != self._pending_round:
            raise self._unexpected(f"a deal for round {message.round_id}; this node asked in round {self._pending_round}", message)
        if not message.peers:
            raise self._violation("a deal for no peer", message)
        self._check_peer_adverts(message, own=False)
        owner = self._owner if self._owner is not None else KeyOwner.generate(self.config.params)
        pair = X25519KeyPair.generate()
        sealed = tuple(
            (
                peer.node,
                seal_key_for_peer(
                    owner,
                    sender=pair,
                    sender_id=self.node,
                    recipient_id=peer.node,
                    recipient_public=peer.x25519,
                    round_id=message.round_id,
                ),
            )
            for peer in message.peers
        )
        signature = b""
        if self._identity is not None:
            signature = self._sign(
                _statements.deal_bytes(
                    roster_digest=self.config.roster_digest,
                    round_id=message.round_id,
                    dealer=self.node,
                    member=self.member,
                    x25519=pair.public_bytes,
                    fingerprint=owner.fingerprint,
                    peers=_statements.peers_digest((p.node, p.member, p.x25519) for p in message.peers),
                )
            )
        reply = DealReply(
            message.round_id,
            self.node,
            owner.aggregator_context().to_bytes(),
            pair.public_bytes,
            sealed,
            self.member,
            signature,
        )
        # apply (a holder's state does not change)
        if not ready:
            self._owner, self._pending, self._pending_round, self._key_state = owner, None, 0, KeyState.READY
        return reply

    # ------------------------------------------------------------------ INSTALL
    def _on_install_request(self, message: InstallRequest) -> InstallReply:
        if message.round_id != self._pending_round:
            raise self._unexpected(f"a key for round {message.round_id}; this node asked in round {self._pending_round}", message)
        if message.dealer == self.node:
            raise self._violation("the dealer named is this node", message)
        self._check_peer_adverts(message, own=True)
        self._check_signer(message.dealer_member, message.signature, "the dealer's statement", message)
        if self.config.roster is not None:
            if message.dealer_member == self.member:
                raise self._violation("the dealer named is this node's member", message)
            self._verify(
                message.dealer_member,
                message.signature,
                _statements.deal_bytes(
                    roster_digest=self.config.roster_digest,
                    round_id=message.round_id,
                    dealer=message.dealer,
                    member=message.dealer_member,
                    x25519=message.dealer_x25519,
                    fingerprint=message.fingerprint,
                    peers=_statements.peers_digest((p.node, p.member, p.x25519) for p in message.peers),
                ),
                "the dealer's key transport",
            )
        assert self._pending is not None
        assert self._pending is not None  # AWAITING_KEY
        owner = open_key_from_peer(
            message.sealed,
            recipient=self._pending,
            recipient_id=self.node,
            sender_id=message.dealer,
            sender_public=message.dealer_x25519,
            round_id=message.round_id,
            expected_fingerprint=message.fingerprint,
        )
        if owner.params != self.config.params:
            raise ContextMismatchError("the dealt key has other parameters than the round's config")
        reply = InstallReply(message.round_id, self.node, owner.aggregator_context().to_bytes())
        # apply
        self._owner, self._pending, self._pending_round, self._key_state = owner, None, 0, KeyState.READY
        return reply

    # ------------------------------------------------------------------ ENCRYPT
    def _on_encrypt_request(self, message: EncryptRequest) -> Upload:
        owner = self._require_owner()
        vector, layout = self._encrypt_input(message, owner.fingerprint, "CKKS key")
        blob = owner.encrypt(vector, spec=layout)
        blob_digest = hashlib.sha256(blob).digest()
        signature = b""
        if self._identity is not None:
            signature = self._sign(
                _statements.upload_bytes(
                    roster_digest=self.config.roster_digest,
                    round_id=message.round_id,
                    fingerprint=owner.fingerprint,
                    node=self.node,
                    member=self.member,
                    blob_digest=blob_digest,
                    layout=layout,
                )
            )
        reply = Upload(message.round_id, self.node, blob, self.member, signature)
        # apply
        self._encrypted_round = message.round_id
        self._uploads += 1
        self._upload = (message.round_id, blob_digest, layout)
        self._input = None
        return reply

    # ------------------------------------------------------------------ CONFIRM
    def _on_confirm_request(self, message: ConfirmRequest) -> Confirmation:
        roster = self.config.roster
        if roster is None:
            raise self._violation("a confirm request in a round without a roster", message)
        if self._upload is None or self._upload[0] != message.round_id:
            raise self._unexpected(f"this node made no upload in round {message.round_id}", message)
        _, own_digest, layout = self._upload
        self._check_count(len(message.entries), message)
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
        owner = self._require_owner()
        signature = self._sign(
            _statements.confirm_bytes(
                roster_digest=self.config.roster_digest,
                round_id=message.round_id,
                fingerprint=owner.fingerprint,
                layout=layout,
                summed=summed,
            )
        )
        reply = Confirmation(message.round_id, self.node, self.member, signature)
        # apply (a second request for the same set gets the same, deterministic, signature)
        self._confirmed = (message.round_id, summed)
        return reply

    def _check_count(self, count: int, message: Message) -> None:
        if count < self.config.min_contributions:
            raise self._violation(f"a set of {count} uploads, fewer than min_contributions={self.config.min_contributions}", message)
        capacity = self._require_owner().params.num_clients
        if count > capacity:
            raise self._violation(f"a set of {count} uploads, more than the key's capacity {capacity}", message)

    # ------------------------------------------------------------------ DECRYPT
    def _on_decrypt_request(self, message: DecryptRequest) -> Decryption:
        owner = self._require_owner()
        # Review break 3 of the Flower mode: a guard keyed by the server's round ids let any
        # new id buy a new decryption. A node releases at most one (flooded) decryption per
        # upload it made itself, counted in its own state.
        if self._decryptions >= self._uploads:
            raise self._unexpected(
                f"this node made {self._uploads} uploads and already released {self._decryptions} decryptions (one per upload)",
                message,
            )
        if self.config.roster is None:
            total = owner.decrypt(self._checked_aggregate(message))
            stream = self._stream
        else:
            if message.aggregate or not message.uploads:
                raise self._violation(
                    "with a roster a decryptor sums the signed uploads itself; an aggregate made by the server is refused",
                    message,
                )
            _, summed = self._set_sum(message)
            stream = self._stream if message.part == 0 else None  # a last part ends the stream
            total = owner.decrypt_sum(summed)
        reply = Decryption.of(message.round_id, self.node, total)
        # apply
        self._decryptions += 1
        self._stream = stream
        return reply

    def _on_sum_part(self, message: SumPart) -> SumAck:
        """With a roster: check one streamed part of a confirmed set and add it to this node's sum."""
        if self.config.roster is None:
            raise self._violation("a streamed set in a round without a roster", message)
        stream = self._stream_part(message)
        reply = SumAck(message.round_id, self.node, message.index)
        # apply
        self._stream = stream
        return reply

    def _merged(self, summed: EncryptedSum, batch: EncryptedSum) -> EncryptedSum:
        """``batch`` added to the stream's sum in place (validated first: the stream moves on or ends with it)."""
        summed.merge(batch)
        return summed

    def _checked_aggregate(self, message: DecryptRequest) -> bytes:
        """Without a roster: the server's aggregate, if its header is plausible (honest-but-curious)."""
        if message.uploads or not message.aggregate or message.part:
            raise self._violation("a round without a roster decrypts the server's aggregate, not a list of uploads", message)
        header = peek_header(message.aggregate)
        if header.kind != BlobKind.AGGREGATE:
            raise self._violation("asked to decrypt a single upload, not an aggregate", message)
        self._check_count(header.contributions, message)
        if self._upload is not None and (header.spec_digest is None or not hmac.compare_digest(header.spec_digest, self._upload[2])):
            raise self._violation("the aggregate has another layout than this node's own upload", message)
        if header.total_weight != header.contributions:
            # every upload is added with weight 1 (the FedAvg weight is encrypted in the last
            # slot); the header also sizes the flooding, so a tampered one is refused
            raise self._violation(
                f"the aggregate's header claims total weight {header.total_weight!r} for {header.contributions} "
                "uploads of weight 1 (tampered header)",
                message,
            )
        return message.aggregate

    def _open_set(self, message: Message, entries: tuple[tuple[str, int, bytes], ...]) -> tuple[tuple[str, int, bytes], ...]:
        """With a roster: a set of at least ``min_contributions`` uploads of distinct roster members and nodes."""
        self._check_count(len(entries), message)
        if not len({e[0] for e in entries}) == len({e[1] for e in entries}) == len(entries):
            raise self._violation("two uploads from member or node of one entry", message)
        assert self.config.roster is not None
        for member in sorted({e[0] for e in entries}):
            if member not in self.config.roster:
                raise IdentityError(f"{member!r} is not a roster member")
        return entries

    def _fold(
        self, message: SumPart | DecryptRequest, entries: tuple[tuple[str, int, bytes], ...], start: int, layout: bytes | None
    ) -> tuple[EncryptedSum, bytes]:
        """Check ``message.uploads`` as entries ``start, start + 1, ...`` of the set and sum them (a new sum; nothing changes).

        Each upload is the entry's (member, node, SHA-256 of the blob), of this round, an
        upload-kind blob under this node's key with the set's one layout, signed by its
        member for all of that, and comes with its member's confirmation of exactly this set.
        Cheap checks of every upload first, then the signatures, then the ciphertexts.
        """
        owner = self._require_owner()
        if start + len(message.uploads) > len(entries):
            raise self._violation(f"{start + len(message.uploads)} uploads for a set of {len(entries)}", message)
        part = entries[start : start + len(message.uploads)]
        for item, (member, node, digest) in zip(message.uploads, part):
            upload = item.upload
            if upload.round_id != message.round_id:
                raise self._unexpected(f"an upload of round {upload.round_id} in a request for round {message.round_id}", message)
            if upload.member != member or upload.node != node or not hmac.compare_digest(hashlib.sha256(upload.blob).digest(), digest):
                raise self._violation(f"the upload of node {upload.node} is not the set's entry for node {node}", message)
            header = peek_header(upload.blob)
            if header.kind != BlobKind.UPLOAD:
                raise self._violation(f"the upload of node {node} is not an upload-kind blob", message)
            if not hmac.compare_digest(header.fingerprint, owner.fingerprint):
                raise ContextMismatchError(f"the upload of node {node} is under another CKKS key")
            if header.spec_digest is None:
                raise SpecMismatchError(f"the upload of node {node} names no layout")
            if layout is None:
                layout = header.spec_digest
            elif not hmac.compare_digest(header.spec_digest, layout):
                raise SpecMismatchError(f"the upload of node {node} has another layout than the others")
        assert layout is not None
        self._verify_uploads(message, part, layout)
        self._verify_confirmations(message, set_digest(entries), part, layout)
        summed = owner.aggregator_context().start()
        for item in message.uploads:
            summed.add(item.upload.blob, 1)  # full check of framing, seeded form, level and scale; no repeats
        return summed, layout

    def _verify_uploads(self, message: SumPart | DecryptRequest, part: tuple[tuple[str, int, bytes], ...], layout: bytes) -> None:
        """Each upload signed by its member for this round, this key and this layout."""
        fingerprint = self._require_owner().fingerprint
        for item, (member, node, digest) in zip(message.uploads, part):
            self._check_signer(member, item.upload.signature, f"the upload of node {node}", message)
            self._verify(
                member,
                item.upload.signature,
                _statements.upload_bytes(
                    roster_digest=self.config.roster_digest,
                    round_id=message.round_id,
                    fingerprint=fingerprint,
                    node=node,
                    member=member,
                    blob_digest=digest,
                    layout=layout,
                ),
                f"the upload of node {node}",
            )

    def _verify_confirmations(
        self, message: SumPart | DecryptRequest, summed: bytes, part: tuple[tuple[str, int, bytes], ...], layout: bytes
    ) -> None:
        """Each member's confirmation of exactly this set (so the round's decrypted sets are equal or disjoint)."""
        assert self.config.roster is not None
        statement = _statements.confirm_bytes(
            roster_digest=self.config.roster_digest,
            round_id=message.round_id,
            fingerprint=self._require_owner().fingerprint,
            layout=layout,
            summed=summed,
        )
        verify_confirmations(self.config.roster, statement, message.uploads, part)


CkksClient._MESSAGES = MESSAGE_CLASSES
CkksClient._DECODE = staticmethod(decode_message)
CkksClient._TRANSITIONS = {
    (KeyState.NO_KEY, ContextRequest): CkksClient._on_context_request,
    (KeyState.AWAITING_KEY, ContextRequest): CkksClient._on_context_request,
    (KeyState.AWAITING_KEY, DealRequest): CkksClient._on_deal_request,
    (KeyState.AWAITING_KEY, InstallRequest): CkksClient._on_install_request,
    (KeyState.READY, ContextRequest): CkksClient._on_context_request,
    (KeyState.READY, DealRequest): CkksClient._on_deal_request,
    (KeyState.READY, EncryptRequest): CkksClient._on_encrypt_request,
    (KeyState.READY, ConfirmRequest): CkksClient._on_confirm_request,
    (KeyState.READY, DecryptRequest): CkksClient._on_decrypt_request,
    (KeyState.READY, SumPart): CkksClient._on_sum_part,
}
