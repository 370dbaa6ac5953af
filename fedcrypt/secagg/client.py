"""The SecAgg client: a sans-IO state machine (no sockets, threads or clocks).

Transition table (stage -> the one server message it accepts -> reply, next stage)::

    ADVERTISE_KEYS     advertise()                 -> AdvertiseKeys          SHARE_KEYS
    SHARE_KEYS         KeyDirectory                -> EncryptedShares        MASKED_INPUT
    MASKED_INPUT       ShareBundle                 -> MaskedInput            CONSISTENCY_CHECK | UNMASK
    CONSISTENCY_CHECK  SurvivorList                -> ConsistencySignature   UNMASK
    UNMASK             UnmaskRequest               -> UnmaskShares           DONE
    DONE, ABORTED      (nothing)

``CONSISTENCY_CHECK`` is visited only with ``verify_survivors``. A client never enters
``ABORTED``: when it cannot continue safely it raises
:class:`~fedcrypt.errors.RoundAbortedError` and stays where it was; the caller discards it.

Invariants:

* Any other (stage, message) pair raises :class:`~fedcrypt.errors.UnexpectedMessageError`.
* Every handler validates all of its input and computes its reply *before* it changes
  the object; an exception leaves the client exactly as it was (validate, then apply).
* The unmask request is answered at most once, and per peer with either the self-mask
  share (the peer survived) or the mask-key share (it dropped), never both.
* A survivor's self-mask share is revealed only if that survivor keeps ``t`` share holders
  (itself and ``t - 1`` neighbours) among the survivors; with ``verify_survivors`` also only under a
  consistency quorum and the survivor's own signed masking attestation (see
  :class:`ClientProtocol`).
* No key, seed or share is reachable through ``repr``/``str`` or an exception message.
* :meth:`ClientProtocol.to_state_bytes` is the client's one state encoding (canonical,
  versioned, secrets included, the identity key excluded); a client rebuilt with
  :meth:`ClientProtocol.from_state_bytes` answers every later message as the original would.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np

from fedcrypt.crypto import (
    SEED_BYTES,
    Ed25519KeyPair,
    Secret,
    Share,
    X25519KeyPair,
    aead_decrypt,
    aead_encrypt,
    ed25519_verify,
    mask_accumulate,
    random_seed,
    shamir_split,
)
from fedcrypt.errors import (
    CryptoError,
    DecryptionError,
    HonestButCuriousWarning,
    InvalidShare,
    InvalidSignature,
    LocalProtocolError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)

from . import _state, keyschedule
from .config import SecAggConfig
from .messages import (
    MESSAGE_CLASSES,
    SHARE_PLAINTEXT_BYTES,
    AdvertiseKeys,
    ConsistencySignature,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    Message,
    ShareBundle,
    Stage,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode_message,
)

__all__ = ["ClientProtocol"]

_SHARE_SIZE = (SHARE_PLAINTEXT_BYTES - 8) // 2


class ClientProtocol:
    """One client of a SecAgg / SecAgg+ round (Bonawitz et al. 2017, Fig. 4 and Sec. 4; Bell et al. 2020).

    Math: the client holds ``x_u`` in Z_(2^bits) (a fixed-point encoding of its float
    update, or a ring vector given directly) and uploads

        y_u = x_u + PRG(b_u) + sum_{v in N(u) and U2, v > u} PRG(s_uv) - sum_{v in N(u) and U2, v < u} PRG(s_uv)

    where ``b_u`` is a fresh 256-bit self-mask seed and ``s_uv = HKDF(X25519(s_u^SK, s_v^PK))``
    bound to the round, both ids and the round context. ``b_u`` and ``s_u^SK`` are
    Shamir-shared (threshold ``t``) among the holders ``N(u) + {u}``, each share encrypted
    with AES-256-GCM to its holder. Pairwise masks cancel in the sum over survivors; the
    server removes the self masks of survivors and the pairwise masks of dropped clients by
    reconstructing ``b_v`` or ``s_v^SK`` from ``t`` shares.

    Threat model (``config.threat_model``): with ``verify_survivors`` the server may be
    malicious and collude with up to ``c = config.max_colluders`` clients; without it, the
    server must follow the protocol (honest-but-curious: a
    :class:`~fedcrypt.errors.HonestButCuriousWarning` is emitted). In both modes the client
    refuses a key directory that changes its own keys, mixes round contexts
    (``associated_data``), or repeats a key; an unmask request that names a client as both
    survived and dropped; a second unmask request; and it reveals the self-mask share of a
    survivor ``p`` only if ``p`` keeps at least ``t - 1`` neighbours among the survivors
    ``U3`` (else ``p``'s input would lose every pairwise mask with a survivor).

    With ``verify_survivors`` (Bonawitz et al. Sec. 4 and Thm. 6.5, strengthened as below),
    keys are checked against ``verify_keys`` (a PKI), and the client:

    0. accepts a key directory of every client's signed advert, and binds its digest into
       every statement it signs: statements from another instance of the same round (a
       retry with the same round id and associated data) never verify in this one;
    1. signs its masked input's *masking attestation*: the neighbours it did not mask with
       (``skipped``), so its share holders learn whom it really masked with;
    2. signs one survivor set ``U3`` per round, after checking that its own live holders
       are at least ``t`` and all shared keys with it;
    3. unmasks only with valid signatures on the same ``U3`` from a *quorum*
       ``q = max(t, floor((n + c)/2) + 1)`` of survivors, and with, for every survivor
       ``p`` among its neighbours, ``p``'s signed attestation showing that ``p`` masked with
       every neighbour in ``U3`` (``skipped`` disjoint from ``U3``).

    Why that suffices (the argument SECURITY.md states in full): two quorums share more
    than ``c`` clients, so some honest client signed both, and it signs once: every honest
    holder that unmasks uses the same ``U3``. Let ``v`` be honest with masked input ``y_v``.
    To strip ``b_v`` the server needs ``t > c`` shares, so some honest holder revealed one:
    it saw ``v``'s attestation, so ``v`` masked with at least ``t - 1 >= c + 1`` members of
    ``U3``, at least one of them an honest ``w``. The seed ``s_vw`` needs ``s_v^SK`` or
    ``s_w^SK``; both ``v`` and ``w`` are in ``U3``, so no honest holder reveals a key share
    of either, and ``c < t`` colluding shares reveal nothing (Shamir). So the mask
    ``PRG(s_vw)`` stays on ``y_v``. Two runs of the round protocol that broke the earlier
    rule (``t`` signatures, no attestation) are regression tests: disjoint groups signing
    different survivor sets (SecAgg+), and a victim shown only ``t - 1`` neighbours' shares.

    Args:
        config: the round parameters.
        client_id: this client's id, 0-based.
        round_id: the round number, bound into every key and message.
        associated_data: bytes every client of the round must agree on (for example a hash
            of the global model and the TensorSpec digest); a client with other bytes
            derives unrelated keys and is refused by its peers.
        vector: the input, a float vector (encoded with ``config.codec``) or a ring vector of
            the config's dtype; may instead be given later with :meth:`set_input`.
        signing_key: this client's Ed25519 key (required with ``verify_survivors``).
        verify_keys: every client's Ed25519 public key by id (required with
            ``verify_survivors``).
        rng: source of the fixed-point rounding coins (not secret material).
    """

    __slots__ = (
        "config",
        "client_id",
        "round_id",
        "_context",
        "_stage",
        "_signing_key",
        "_verify_keys",
        "_cipher_keys",
        "_mask_keys",
        "_self_mask_seed",
        "_advert",
        "_directory",
        "_directory_digest",
        "_share_keys",
        "_shares",
        "_u2",
        "_u3",
        "_input",
    )

    def __init__(
        self,
        config: SecAggConfig,
        client_id: int,
        *,
        round_id: int = 0,
        associated_data: bytes = b"",
        vector: np.ndarray | None = None,
        signing_key: Ed25519KeyPair | None = None,
        verify_keys: Mapping[int, bytes] | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        if not isinstance(config, SecAggConfig):
            raise TypeError(f"config must be a SecAggConfig, got {type(config).__name__}")
        if not isinstance(client_id, int) or isinstance(client_id, bool) or not 0 <= client_id < config.num_clients:
            raise ValueError(f"client_id must be an integer in [0, {config.num_clients}), got {client_id!r}")
        if not isinstance(round_id, int) or isinstance(round_id, bool) or not 0 <= round_id < 1 << 64:
            raise ValueError(f"round_id must be an integer in [0, 2^64), got {round_id!r}")
        if config.verify_survivors:
            if not isinstance(signing_key, Ed25519KeyPair):
                raise ValueError("verify_survivors needs signing_key (an Ed25519KeyPair)")
            if verify_keys is None or set(verify_keys) != set(range(config.num_clients)):
                raise ValueError("verify_survivors needs verify_keys: one Ed25519 public key per client id")
            if any(not isinstance(k, bytes) or len(k) != 32 for k in verify_keys.values()):
                raise ValueError("verify_keys values must be 32-byte raw Ed25519 public keys")
            if verify_keys[client_id] != signing_key.public_bytes:
                raise ValueError("verify_keys[client_id] is not the public half of signing_key")
        else:
            if signing_key is not None or verify_keys is not None:
                raise ValueError(
                    "identities (signing_key, verify_keys) were given to an honest-but-curious round: "
                    "use SecAggConfig(verify_survivors=True), the malicious-server mode"
                )
            warnings.warn(
                "SecAgg runs honest-but-curious (verify_survivors=False): secure only against a server "
                "that follows the protocol; a deviating server can recover a client's input",
                HonestButCuriousWarning,
                stacklevel=2,
            )
        self.config = config
        self.client_id = client_id
        self.round_id = round_id
        self._context = keyschedule.round_context(config, round_id, associated_data)
        self._stage = Stage.ADVERTISE_KEYS
        self._signing_key = signing_key
        self._verify_keys = dict(verify_keys) if verify_keys is not None else None
        self._cipher_keys: X25519KeyPair | None = None
        self._mask_keys: X25519KeyPair | None = None
        self._self_mask_seed: Secret | None = None
        self._advert: AdvertiseKeys | None = None
        self._directory: dict[int, AdvertiseKeys] = {}
        self._directory_digest = b""
        self._share_keys: dict[int, Secret] = {}
        self._shares: dict[int, tuple[Share, Share]] = {}
        self._u2: frozenset[int] = frozenset()
        self._u3: tuple[int, ...] | None = None
        self._input: np.ndarray | None = None
        if vector is not None:
            self.set_input(vector, rng=rng)

    # ------------------------------------------------------------------ public
    @property
    def stage(self) -> Stage:
        """The stage this client is in (it expects the server's message for this stage)."""
        return self._stage

    @property
    def context(self) -> bytes:
        """SHA-256 of the config, round and associated data (public)."""
        return self._context

    @property
    def directory_digest(self) -> bytes:
        """SHA-256 of the key directory this client accepted (public; empty before that).

        In the malicious-server mode every client sees every client's signed advert, and
        each signed statement binds this digest (one instance of the round)."""
        return self._directory_digest

    def __repr__(self) -> str:
        return f"ClientProtocol(id={self.client_id}, round={self.round_id}, stage={self._stage.name})"

    __str__ = __repr__

    def to_state_bytes(self) -> bytes:
        """This client's whole state as canonical, versioned bytes, SECRETS INCLUDED.

        For a transport that handles every message in a fresh process: keep the bytes in the
        node's private storage only (sealed, if anyone else can read that storage), and
        rebuild the client with :meth:`from_state_bytes`. The identity key (``signing_key``)
        is not in them, only its public half. Layout and checks: :mod:`fedcrypt.secagg._state`.
        """
        return _state.encode(self)

    @classmethod
    def from_state_bytes(cls, data: bytes, *, signing_key: Ed25519KeyPair | None = None) -> "ClientProtocol":
        """Rebuild the client of :meth:`to_state_bytes`; it answers every later message as the original would.

        Args:
            data: the state bytes.
            signing_key: this node's identity key, when the client signs (``verify_survivors``):
                it must be the key the client was built with. Ignored for a client that does
                not sign.

        Raises:
            MalformedMessageError: truncated, extended, garbled or non-canonical bytes, an
                unknown version, or fields that contradict each other or the stage.
            InvalidShare: a held share out of range.
            IdentityError: the state needs the identity key and another (or none) was given.
        """
        return _state.decode(cls, data, signing_key)

    def set_input(self, vector: np.ndarray, *, rng: np.random.Generator | None = None) -> None:
        """Give the input: a float vector (fixed-point encoded now) or a ring vector (copied).

        Raises:
            LocalProtocolError: the masked input was already sent.
            TypeError / EncodingError: not a 1-D float vector or ring vector of the config's dtype.
        """
        if self._stage not in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT):
            raise LocalProtocolError("the input can no longer change", party=self.client_id, round=self.round_id, stage=self._stage)
        if not isinstance(vector, np.ndarray):
            raise TypeError(f"expected a numpy vector, got {type(vector).__name__}")
        ring = self.config.codec.ring_dtype
        if vector.dtype == ring:
            if vector.ndim != 1:
                raise ValueError(f"expected a 1-D ring vector, got shape {vector.shape}")
            encoded = np.array(vector, dtype=ring.newbyteorder("<"), copy=True)
        elif np.issubdtype(vector.dtype, np.floating):
            encoded = self.config.codec.encode(vector, rng=rng).astype(ring.newbyteorder("<"), copy=False)
        else:
            raise TypeError(f"input must be a float vector or a {ring} ring vector, got dtype {vector.dtype}")
        self._input = encoded

    def advertise(self) -> AdvertiseKeys:
        """Round 0: generate two X25519 key pairs and the self-mask seed, advertise the public keys."""
        self._require(Stage.ADVERTISE_KEYS, "advertise")
        cipher_keys, mask_keys = X25519KeyPair.generate(), X25519KeyPair.generate()
        unsigned = AdvertiseKeys(self.round_id, self.client_id, cipher_keys.public_bytes, mask_keys.public_bytes, self._context)
        signature = self._signer().sign(unsigned.signed_bytes()) if self.config.verify_survivors else b""
        advert = AdvertiseKeys(self.round_id, self.client_id, cipher_keys.public_bytes, mask_keys.public_bytes, self._context, signature)
        self._cipher_keys, self._mask_keys = cipher_keys, mask_keys
        self._self_mask_seed = random_seed(SEED_BYTES)
        self._advert = advert
        self._stage = Stage.SHARE_KEYS
        return advert

    def handle(self, message: Message | bytes) -> Message:
        """Feed one server message (object or bytes); return the reply to send.

        Raises:
            MalformedMessageError: bytes that do not decode.
            UnexpectedMessageError: wrong round, recipient, or a message this stage does not accept.
            ProtocolViolationError / CryptoError: a message no honest server sends.
            RoundAbortedError: too few clients remain for this client to continue safely.
            LocalProtocolError: this client has no input when the masked input is due.
        """
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = decode_message(bytes(message))
        elif not isinstance(message, MESSAGE_CLASSES):
            raise TypeError(f"expected a SecAgg message or its bytes, got {type(message).__name__}")
        handler = _TRANSITIONS.get((self._stage, type(message)))
        if handler is None:
            raise UnexpectedMessageError(
                f"{type(message).__name__} is not accepted in this stage",
                party=self.client_id,
                round=self.round_id,
                stage=self._stage,
            )
        if message.round_id != self.round_id:
            raise UnexpectedMessageError(f"message for round {message.round_id}", party=self.client_id, round=self.round_id, stage=self._stage)
        if message.party != self.client_id:
            raise UnexpectedMessageError(f"message addressed to client {message.party}", party=self.client_id, round=self.round_id, stage=self._stage)
        return getattr(self, handler.__name__)(message)  # by name: a subclass may override a handler

    # ------------------------------------------------------------------ helpers
    def _require(self, stage: Stage, what: str) -> None:
        if self._stage is not stage:
            raise LocalProtocolError(f"{what} is not allowed now", party=self.client_id, round=self.round_id, stage=self._stage)

    def _violation(self, text: str) -> ProtocolViolationError:
        return ProtocolViolationError(text, party=self.client_id, round=self.round_id, stage=self._stage)

    def _abort(self, text: str) -> RoundAbortedError:
        return RoundAbortedError(text, party=self.client_id, round=self.round_id, stage=self._stage)

    def _signer(self) -> Ed25519KeyPair:
        assert self._signing_key is not None  # the constructor requires it with verify_survivors, the only mode that signs
        return self._signing_key

    def _verify_key(self, client: int) -> bytes:
        assert self._verify_keys is not None  # the constructor requires them with verify_survivors, the only mode that verifies
        return self._verify_keys[client]

    def _holders(self) -> frozenset[int]:
        return self.config.holders(self.client_id, self.round_id)

    # ------------------------------------------------------------------ round 1
    def _on_key_directory(self, message: KeyDirectory) -> EncryptedShares:
        me, holders, t = self.client_id, self._holders(), self.config.threshold
        adverts = {a.sender: a for a in message.adverts}
        if adverts.get(me) != self._advert:
            raise self._violation("the key directory does not carry this client's own keys unchanged")
        if not self.config.verify_survivors and not set(adverts) <= holders:
            raise self._violation("the key directory lists clients outside this client's neighbourhood")
        keys = [k for a in adverts.values() for k in (a.cipher_public_key, a.mask_public_key)]
        if len(set(keys)) != len(keys):
            raise self._violation("the key directory repeats a public key")
        for advert in adverts.values():
            if advert.context != self._context:
                raise self._violation(f"client {advert.sender} is in a different round context (config or associated data differ)")
            if self.config.verify_survivors:
                if advert.sender == me:  # compared byte for byte with the one it signed, above
                    continue
                if not advert.signature:
                    raise InvalidSignature(f"the keys of client {advert.sender} are not signed")
                try:
                    ed25519_verify(self._verify_key(advert.sender), advert.signature, advert.signed_bytes())
                except InvalidSignature:
                    raise InvalidSignature(f"the keys of client {advert.sender} do not carry its signature") from None
            elif advert.signature:
                raise self._violation("signed keys in a round without verify_survivors")
        digest = b""
        if self.config.verify_survivors:
            # every advert, not only the neighbours': the digest pins this instance of the round
            digest = keyschedule.directory_digest([adverts[v].to_bytes() for v in sorted(adverts)])
            adverts = {v: a for v, a in adverts.items() if v in holders}
        if len(adverts) < t:
            raise self._abort(f"{len(adverts)} share holders advertised keys, threshold is {t}")
        members = sorted(adverts)
        points = [v + 1 for v in members]
        assert self._mask_keys is not None and self._cipher_keys is not None and self._self_mask_seed is not None
        seed_shares = shamir_split(self._self_mask_seed, t, points)
        key_shares = shamir_split(self._mask_keys.private_bytes(), t, points)
        share_keys: dict[int, Secret] = {}
        ciphertexts = []
        own: tuple[Share, Share] | None = None
        for v, seed_share, key_share in zip(members, seed_shares, key_shares):
            if v == me:
                own = (seed_share, key_share)
                continue
            shared = self._cipher_keys.exchange(adverts[v].cipher_public_key)
            key = keyschedule.share_key(shared, round_id=self.round_id, a=me, b=v, context=self._context)
            plaintext = me.to_bytes(4, "big") + v.to_bytes(4, "big") + seed_share.to_bytes() + key_share.to_bytes()
            ad = keyschedule.share_associated_data(round_id=self.round_id, sender=me, recipient=v, context=self._context)
            ciphertexts.append((v, aead_encrypt(key, plaintext, ad)))
            share_keys[v] = key
        assert own is not None
        reply = EncryptedShares(self.round_id, me, tuple(ciphertexts))
        # apply
        self._directory = adverts
        self._directory_digest = digest
        self._share_keys = share_keys
        self._shares = {me: own}
        self._stage = Stage.MASKED_INPUT
        return reply

    # ------------------------------------------------------------------ round 2
    def _on_share_bundle(self, message: ShareBundle) -> MaskedInput:
        me, t = self.client_id, self.config.threshold
        senders = [v for v, _ in message.ciphertexts]
        if me in senders or not set(senders) <= set(self._directory):
            raise self._violation("the share bundle carries ciphertexts from clients that did not advertise keys here")
        if len(senders) + 1 < t:
            raise self._abort(f"{len(senders) + 1} share holders shared keys, threshold is {t}")
        if self._input is None:
            raise LocalProtocolError("no input was given (call set_input)", party=me, round=self.round_id, stage=self._stage)
        received: dict[int, tuple[Share, Share]] = {}
        for v, blob in message.ciphertexts:
            ad = keyschedule.share_associated_data(round_id=self.round_id, sender=v, recipient=me, context=self._context)
            try:
                plaintext = aead_decrypt(self._share_keys[v], blob, ad)
            except DecryptionError:
                raise DecryptionError(f"the share ciphertext from client {v} does not decrypt") from None
            if len(plaintext) != SHARE_PLAINTEXT_BYTES or plaintext[:8] != v.to_bytes(4, "big") + me.to_bytes(4, "big"):
                raise self._violation(f"the share plaintext from client {v} names other parties")
            try:
                seed_share = Share.from_bytes(plaintext[8 : 8 + _SHARE_SIZE])
                key_share = Share.from_bytes(plaintext[8 + _SHARE_SIZE :])
            except InvalidShare:
                raise InvalidShare(f"client {v} sent a malformed share") from None
            if seed_share.x != me + 1 or key_share.x != me + 1:
                raise self._violation(f"client {v} sent shares for another evaluation point")
            received[v] = (seed_share, key_share)
        assert self._mask_keys is not None and self._self_mask_seed is not None
        masks: list[tuple[Secret, int]] = [(self._self_mask_seed, 1)]
        for v in senders:
            try:
                shared = self._mask_keys.exchange(self._directory[v].mask_public_key)
            except CryptoError:
                raise CryptoError(f"the mask key of client {v} is not a valid X25519 key") from None
            seed = keyschedule.pairwise_seed(shared, round_id=self.round_id, a=me, b=v, context=self._context)
            masks.append((seed, keyschedule.mask_sign(me, v)))
        commitment = keyschedule.self_mask_commitment(self._self_mask_seed, round_id=self.round_id, client=me, context=self._context)
        skipped = tuple(sorted(self.config.neighbourhood(me, self.round_id) - set(senders)))
        attestation = b""
        if self.config.verify_survivors:
            statement = keyschedule.masking_bytes(
                round_id=self.round_id, context=self._context, directory=self._directory_digest, client=me, skipped=skipped
            )
            attestation = self._signer().sign(statement)
        # apply: mask our own copy of the input in place (set_input copied or encoded it);
        # mask_accumulate validates every seed before it writes, and nothing below raises
        masked = self._input
        if not (masked.flags.writeable and masked.flags.c_contiguous):  # e.g. restored from storage read-only
            masked = masked.copy()
        mask_accumulate(masked, masks)
        masked.flags.writeable = False
        reply = MaskedInput(self.round_id, me, masked, commitment, skipped, attestation)
        self._shares.update(received)
        self._u2 = frozenset(senders) | {me}
        self._input = None
        self._share_keys = {}
        self._stage = Stage.CONSISTENCY_CHECK if self.config.verify_survivors else Stage.UNMASK
        return reply

    # ------------------------------------------------------------------ round 3
    def _on_survivor_list(self, message: SurvivorList) -> ConsistencySignature:
        survivors = message.survivors
        self._check_survivors(survivors)
        signed = keyschedule.consistency_bytes(round_id=self.round_id, context=self._context, directory=self._directory_digest, survivors=survivors)
        reply = ConsistencySignature(self.round_id, self.client_id, self._signer().sign(signed))
        self._u3 = survivors
        self._stage = Stage.UNMASK
        return reply

    def _check_survivors(self, survivors: tuple[int, ...]) -> None:
        if self.client_id not in survivors:
            raise self._violation("the survivor set omits this client, which sent its masked input")
        live = self._holders() & set(survivors)
        if not live <= self._u2:
            raise self._violation("the survivor set names neighbours that did not share keys")
        live_holders = len(live)
        if live_holders < self.config.threshold:
            raise self._abort(f"{live_holders} share holders survived, threshold is {self.config.threshold}")

    # ------------------------------------------------------------------ round 4
    def _on_unmask_request(self, message: UnmaskRequest) -> UnmaskShares:
        survivors, dropped = set(message.survivors), set(message.dropped)
        both = survivors & dropped
        if both:
            raise self._violation(f"the unmask request names {len(both)} client(s) as both survived and dropped; refusing to answer")
        self._check_survivors(message.survivors)
        holders = self._holders()
        if not (dropped & holders) <= self._u2:
            raise self._violation("the unmask request names as dropped a client that never shared keys here")
        revealed = survivors & set(self._shares)
        t = self.config.threshold
        for p in sorted(revealed):
            live = len(self.config.holders(p, self.round_id) & survivors)
            if live < t:
                raise self._violation(
                    f"survivor {p} keeps {live} share holders among the survivors, threshold is {t}: "
                    f"revealing its self-mask share would strip its input of every pairwise mask"
                )
        if self.config.verify_survivors:
            self._check_consistency(message, survivors, revealed - {self.client_id})
        elif message.signatures or message.attestations:
            raise self._violation("consistency signatures or attestations in a round without verify_survivors")
        self_mask = tuple((v, self._shares[v][0].to_bytes()) for v in sorted(survivors & set(self._shares)))
        mask_key = tuple((v, self._shares[v][1].to_bytes()) for v in sorted(dropped & set(self._shares)))
        reply = UnmaskShares(self.round_id, self.client_id, self_mask, mask_key)
        # apply: answered once, secrets forgotten
        self._shares = {}
        self._self_mask_seed = None
        self._mask_keys = None
        self._cipher_keys = None
        self._stage = Stage.DONE
        return reply

    def _check_consistency(self, message: UnmaskRequest, survivors: set[int], attested: set[int]) -> None:
        """The malicious-server checks of round 4: one quorum-signed ``U3``, and attestations."""
        if message.survivors != self._u3:
            raise self._violation("the unmask request's survivor set differs from the one this client signed")
        signers = [v for v, _ in message.signatures]
        if not set(signers) <= survivors:
            raise self._violation("a consistency signature comes from a client outside the survivor set")
        quorum = self.config.consistency_quorum
        if len(signers) < quorum:
            raise self._abort(f"{len(signers)} clients confirmed the survivor set, the consistency quorum is {quorum}")
        attestations = {p: (skipped, signature) for p, skipped, signature in message.attestations}
        if set(attestations) != attested:
            raise self._violation("the unmask request does not carry exactly the attestations of the survivors it names here")
        signed = keyschedule.consistency_bytes(
            round_id=self.round_id, context=self._context, directory=self._directory_digest, survivors=message.survivors
        )
        for v, signature in message.signatures:
            try:
                ed25519_verify(self._verify_key(v), signature, signed)
            except InvalidSignature:
                raise InvalidSignature(f"client {v} did not sign this survivor set") from None
        for p, (skipped, signature) in sorted(attestations.items()):
            statement = keyschedule.masking_bytes(
                round_id=self.round_id, context=self._context, directory=self._directory_digest, client=p, skipped=skipped
            )
            try:
                ed25519_verify(self._verify_key(p), signature, statement)
            except InvalidSignature:
                raise InvalidSignature(f"client {p} did not sign this masking attestation") from None
            if set(skipped) & survivors:
                raise self._violation(f"survivor {p} did not mask with every survivor among its neighbours")


_TRANSITIONS = {
    (Stage.SHARE_KEYS, KeyDirectory): ClientProtocol._on_key_directory,
    (Stage.MASKED_INPUT, ShareBundle): ClientProtocol._on_share_bundle,
    (Stage.CONSISTENCY_CHECK, SurvivorList): ClientProtocol._on_survivor_list,
    (Stage.UNMASK, UnmaskRequest): ClientProtocol._on_unmask_request,
}
