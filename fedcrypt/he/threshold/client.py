"""The threshold-CKKS key holder (a client): :class:`KeyHolder`.

Invariants: every handler validates all of its input before it changes state (the
``# ---- apply`` blocks); a key share leaves the holder only as Shamir pieces of the t-of-n
backup, each encrypted to one other holder, and in its own state bytes; it answers at most
one partial decryption per aggregate and never decrypts an upload.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from typing import Any, Sequence

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.crypto import Secret, X25519KeyPair, aead_decrypt, aead_encrypt, derive_key
from fedcrypt.errors import (
    InvalidShare,
    LocalProtocolError,
    MalformedMessageError,
    ProtocolViolationError,
    UnexpectedMessageError,
)

from . import _runtime as _rt
from ._blob import BlobHeader, decode_blob, encode_blob
from ._common import (
    SESSION_BYTES,
    VERSION,
    as_bytes,
    backup_cap,
    check_int,
    check_vector,
    check_weight,
    length_prefixed,
    load_ciphertexts,
    public_key_cap,
    session_fingerprint,
)
from .messages import BlobKind, DecryptionShare, KeyBackupMessage, KeyShareMessage, RosterMessage, Stage
from .params import ThresholdParams

__all__ = ["KeyHolder"]

_STAGES = (Stage.KEYGEN, Stage.AWAIT_JOINT_KEY, Stage.READY)
_STATE_MAGIC = b"FCTH"


class KeyHolder:
    """One key holder (a client): an additive share ``s_i`` of the threshold secret key.

    Math: see the module docstring; holder ``i`` samples its share in ``KeyGen`` or
    ``MultipartyKeyGen`` (OpenFHE's ternary secret and Gaussian error, from OpenFHE's
    CSPRNG seeded by the OS) and extends the running public key by ``-a s_i + e_i``.

    Threat model: semi-honest. The share leaves this object only in
    :meth:`to_state_bytes`, the holder's whole state for its own private storage (a
    transport that runs each message in a fresh process, like Flower's ``Context.state``);
    a holder lives for one federation session. It answers at most one partial
    decryption per aggregate digest, never one of an upload, and only of an aggregate
    claiming at least ``min_contributions`` uploads (a claim by the server: against a
    malicious server that relabels one upload as an aggregate this is not a defence, and
    the flooding hides the key share only in partial decryptions of honestly formed
    ciphertexts; :mod:`fedcrypt.he.threshold.round` with a roster has the holder sum signed,
    confirmed uploads itself).

    Args:
        params: the agreed parameters.
        party: this holder's index in ``[0, num_parties)``.
        session: the server's session id (32 bytes).
        min_contributions: the fewest uploads an aggregate must claim to be decrypted.
    """

    __slots__ = (
        "_params",
        "_party",
        "_session",
        "_runtime",
        "_stage",
        "_secret_key",
        "_secret_bytes",
        "_own_public",
        "_joint_key",
        "_joint_bytes",
        "_fingerprint",
        "_answered",
        "_min_contributions",
        "_transport",
        "_roster",
        "_backups",
        "_backed_up",
        "_released",
    )

    def __init__(self, params: ThresholdParams, party: int, session: bytes, *, min_contributions: int = 2) -> None:
        if not isinstance(params, ThresholdParams):
            raise TypeError(f"params must be ThresholdParams, got {type(params).__name__}")
        check_int("party", party)
        if not 0 <= party < params.num_parties:
            raise ValueError(f"party must be in [0, {params.num_parties}), got {party}")
        if not isinstance(session, bytes) or len(session) != SESSION_BYTES:
            raise ValueError(f"session must be {SESSION_BYTES} bytes")
        check_int("min_contributions", min_contributions)
        if min_contributions < 1:
            raise ValueError(f"min_contributions must be >= 1, got {min_contributions}")
        self._params = params
        self._party = party
        self._session = session
        self._runtime = _rt.runtime(params)
        self._stage = Stage.KEYGEN
        self._secret_key: Any = None
        self._secret_bytes: Secret | None = None  # its OpenFHE serialisation (state bytes)
        self._own_public: bytes | None = None
        self._joint_key: Any = None
        self._joint_bytes: bytes | None = None
        self._fingerprint: bytes | None = None
        self._answered: set[bytes] = set()
        self._min_contributions = min_contributions
        self._transport = X25519KeyPair.generate() if params.recovery_threshold else None
        self._roster: tuple[bytes, ...] | None = None
        self._backups: dict[int, Secret] = {}  # subject -> our Shamir share of its key share
        self._backed_up = False
        self._released: set[int] = set()  # subjects whose share we released for a stand-in

    @property
    def party(self) -> int:
        """This holder's index."""
        return self._party

    @property
    def params(self) -> ThresholdParams:
        """The agreed parameters."""
        return self._params

    @property
    def session(self) -> bytes:
        """The session id this holder's key share belongs to."""
        return self._session

    @property
    def min_contributions(self) -> int:
        """The fewest uploads an aggregate must claim to be partially decrypted."""
        return self._min_contributions

    @property
    def stage(self) -> Stage:
        """Where this holder is."""
        return self._stage

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of parameters, session and joint key (after key generation)."""
        if self._fingerprint is None:
            raise LocalProtocolError("the joint key is not known yet", party=self._party, stage=self._stage)
        return self._fingerprint

    @property
    def key_tag(self) -> str:
        """The joint key's OpenFHE key tag (public; every upload and aggregate must carry it)."""
        if self._joint_key is None:
            raise LocalProtocolError("the joint key is not known yet", party=self._party, stage=self._stage)
        return str(self._joint_key.GetKeyTag())

    def __repr__(self) -> str:
        return f"KeyHolder(party={self._party}, stage={self._stage.name}, secret_key_share=<held>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("KeyHolder holds a secret key share and cannot be pickled")

    # ------------------------------------------------------------------ state bytes
    def to_state_bytes(self) -> bytes:
        """This holder's whole state, SECRET KEY SHARE INCLUDED, as canonical bytes.

        For a transport that runs every message in a fresh process (a Flower node keeps it
        in its ``Context.state``): store it where only this node can read it, never log it.
        Everything a holder remembers travels with it: the key share, the joint key, the
        Shamir pieces of the t-of-n backup, and the aggregates it already answered, so a
        restored holder still answers each aggregate at most once.
        """
        params = self._params
        out = [
            _STATE_MAGIC,
            struct.pack(">B", VERSION),
            length_prefixed(params.to_bytes()),
            struct.pack(">H32sBI", self._party, self._session, _STAGES.index(self._stage), self._min_contributions),
        ]
        secret = b"" if self._secret_bytes is None else self._secret_bytes.reveal()
        transport = b"" if self._transport is None else self._transport.private_bytes().reveal()
        for blob in (secret, self._own_public or b"", self._joint_bytes or b"", transport):
            out.append(struct.pack(">I", len(blob)) + blob)
        roster = self._roster or ()
        out.append(struct.pack(">BH", self._roster is not None, len(roster)) + b"".join(roster))
        out.append(struct.pack(">H", len(self._backups)))
        for subject in sorted(self._backups):
            out.append(struct.pack(">H", subject) + length_prefixed(self._backups[subject].reveal()))
        out.append(struct.pack(">BH", self._backed_up, len(self._released)))
        out.extend(struct.pack(">H", subject) for subject in sorted(self._released))
        answered = sorted(self._answered)
        out.append(struct.pack(">I", len(answered)) + b"".join(answered))
        return b"".join(out)

    @classmethod
    def from_state_bytes(cls, data: bytes) -> "KeyHolder":
        """Restore a holder from :meth:`to_state_bytes` (strict; needs ``openfhe``).

        Raises:
            MalformedMessageError: the bytes do not decode, are not canonical, or OpenFHE
                cannot parse a key.
        """
        reader = Reader(data, "key holder state")
        if reader.take(4) != _STATE_MAGIC or reader.u8() != VERSION:
            raise MalformedMessageError("key holder state: bad magic or version")
        params = ThresholdParams.from_bytes(reader.sized(ThresholdParams._STRUCT.size, "parameters"))
        party, session, stage_index, min_contributions = reader.unpack(">H32sBI")
        if stage_index >= len(_STAGES):
            raise MalformedMessageError("key holder state: unknown stage")
        try:
            holder = cls(params, party, session, min_contributions=min_contributions)
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"key holder state: {exc}") from None
        caps = (backup_cap(params), public_key_cap(params), public_key_cap(params), 32)
        secret, own_public, joint_bytes, transport = (reader.sized(cap, "a field", allow_empty=True) for cap in caps)
        stage = _STAGES[stage_index]
        expected_transport = 32 if params.recovery_threshold else 0
        if (
            bool(secret) != (stage is not Stage.KEYGEN)
            or bool(own_public) != bool(secret)
            or bool(joint_bytes) != (stage is Stage.READY)
            or len(transport) != expected_transport
        ):
            raise MalformedMessageError("key holder state: fields do not match its stage")
        has_roster, count = reader.unpack(">BH")
        if has_roster > 1 or (not has_roster and count) or (has_roster and count != params.num_parties):
            raise MalformedMessageError("key holder state: bad roster")
        roster = tuple(reader.take(32) for _ in range(count)) if has_roster else None
        count = reader.u16()
        backups: dict[int, Secret] = {}
        for _ in range(count):
            subject = reader.u16()
            if subject >= params.num_parties or subject == party or subject in backups:
                raise MalformedMessageError("key holder state: bad backup subject")
            backups[subject] = Secret(reader.sized(backup_cap(params), "backup"))
        backed_up, released_count = reader.unpack(">BH")
        released = {reader.u16() for _ in range(released_count)}
        count = reader.u32()
        if count > 1 << 20:
            raise MalformedMessageError("key holder state: too many answered aggregates")
        answered = {reader.take(35) for _ in range(count)}
        reader.expect_end()
        if backed_up > 1 or len(released) != released_count or any(r >= params.num_parties for r in released):
            raise MalformedMessageError("key holder state: bad backup bookkeeping")
        runtime = holder._runtime
        if secret:
            holder._secret_key = _rt.deserialize(runtime, "private_key", secret, "key holder state")
            holder._secret_bytes = Secret(secret)
            holder._own_public = own_public
        if joint_bytes:
            holder._joint_key = _rt.deserialize(runtime, "public_key", joint_bytes, "key holder state")
            holder._joint_bytes = joint_bytes
            holder._fingerprint = session_fingerprint(params, session, joint_bytes)
        if transport:
            try:
                holder._transport = X25519KeyPair.from_private_bytes(transport)
            except ValueError:
                raise MalformedMessageError("key holder state: bad transport key") from None
        holder._stage = stage
        holder._roster = roster
        holder._backups = backups
        holder._backed_up = bool(backed_up)
        holder._released = released
        holder._answered = answered
        if holder.to_state_bytes() != as_bytes(data):
            raise MalformedMessageError("key holder state: not in canonical form")
        return holder

    # ------------------------------------------------------------------ key generation
    def generate_key_share(self, previous: KeyShareMessage | bytes | None = None) -> KeyShareMessage:
        """Run this holder's link of the key-generation chain.

        Args:
            previous: holder ``party - 1``'s message (``None`` for holder 0).

        Raises:
            LocalProtocolError: called twice.
            UnexpectedMessageError: ``previous`` is from another session or party.
            MalformedMessageError: ``previous`` does not decode.
        """
        if self._stage is not Stage.KEYGEN:
            raise LocalProtocolError("this holder already generated its key share", party=self._party, stage=self._stage)
        context = self._runtime.context
        if self._party == 0:
            if previous is not None:
                raise ProtocolViolationError("holder 0 starts the chain: no previous key", party=0, stage=self._stage)
            pair = context.KeyGen()
        else:
            if previous is None:
                raise LocalProtocolError("holder >0 needs the previous holder's key", party=self._party, stage=self._stage)
            message = self._decode_keyshare(previous)
            if message.party != self._party - 1:
                raise UnexpectedMessageError(
                    f"expected the key of holder {self._party - 1}, got holder {message.party}",
                    party=self._party,
                    stage=self._stage,
                )
            running = _rt.deserialize(self._runtime, "public_key", message.public_key, "key share")
            try:
                pair = context.MultipartyKeyGen(running)
            except Exception:
                raise MalformedMessageError("key share: OpenFHE refuses the running public key", party=self._party) from None
        public = _rt.serialize(self._runtime, pair.publicKey)
        secret_bytes = Secret(_rt.serialize(self._runtime, pair.secretKey))
        transport = self._transport.public_bytes if self._transport is not None else b""
        # ---- apply
        self._secret_key = pair.secretKey
        self._secret_bytes = secret_bytes
        self._own_public = public
        self._stage = Stage.AWAIT_JOINT_KEY
        return KeyShareMessage(self._session, self._party, public, transport)

    def receive_joint_key(self, message: KeyShareMessage | bytes) -> None:
        """Accept the joint public key (the last holder's key-share message).

        Raises:
            LocalProtocolError: out of order.
            UnexpectedMessageError: wrong session, not the last holder's key, or (for the
                last holder) not the key it produced itself.
        """
        if self._stage is not Stage.AWAIT_JOINT_KEY:
            raise LocalProtocolError("not waiting for the joint key", party=self._party, stage=self._stage)
        message = self._decode_keyshare(message)
        last = self._params.num_parties - 1
        if message.party != last:
            raise UnexpectedMessageError(f"the joint key comes from holder {last}", party=self._party, stage=self._stage)
        if self._party == last and not hmac.compare_digest(message.public_key, self._own_public or b""):
            raise UnexpectedMessageError("the joint key is not the key this holder produced", party=self._party)
        joint = _rt.deserialize(self._runtime, "public_key", message.public_key, "joint key")
        # ---- apply
        self._joint_key = joint
        self._joint_bytes = message.public_key
        self._fingerprint = session_fingerprint(self._params, self._session, message.public_key)
        self._stage = Stage.READY

    def _decode_keyshare(self, message: KeyShareMessage | bytes) -> KeyShareMessage:
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = KeyShareMessage.from_bytes(bytes(message), self._params)
        if not isinstance(message, KeyShareMessage):
            raise TypeError(f"expected a KeyShareMessage or bytes, got {type(message).__name__}")
        if not hmac.compare_digest(message.session, self._session):
            raise UnexpectedMessageError("key share from another session", party=self._party, stage=self._stage)
        return message

    # ------------------------------------------------------------------ key backup (t-of-n)
    def receive_roster(self, message: RosterMessage | bytes) -> None:
        """Accept every holder's transport key (needed for the key backup).

        Raises:
            LocalProtocolError: no ``recovery_threshold`` in the parameters, or out of order.
            UnexpectedMessageError: another session, or our own key is not at our index.
        """
        self._require_recovery()
        self._require_ready()
        if self._roster is not None:
            raise LocalProtocolError("the roster was already received", party=self._party)
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = RosterMessage.from_bytes(bytes(message), self._params)
        if not isinstance(message, RosterMessage):
            raise TypeError(f"expected a RosterMessage or bytes, got {type(message).__name__}")
        if not hmac.compare_digest(message.session, self._session):
            raise UnexpectedMessageError("roster from another session", party=self._party)
        assert self._transport is not None
        if len(message.transport_keys) != self._params.num_parties or not hmac.compare_digest(
            message.transport_keys[self._party], self._transport.public_bytes
        ):
            raise UnexpectedMessageError("the roster does not hold this holder's transport key", party=self._party)
        self._roster = tuple(message.transport_keys)

    def backup_key(self) -> tuple[KeyBackupMessage, ...]:
        """Shamir-share this holder's key share among the others (OpenFHE ``ShareKeys``).

        Returns one message per other holder, each encrypted to it (X25519 + HKDF +
        AES-256-GCM, the session and ids as associated data). Runs once.

        Raises:
            LocalProtocolError: no recovery threshold, no roster yet, or already done.
        """
        self._require_recovery()
        roster = self._require_roster()
        if self._backed_up:
            raise LocalProtocolError("this holder's key is already backed up", party=self._party)
        params, runtime = self._params, self._runtime
        n, t = params.num_parties, params.recovery_threshold
        polys = runtime.context.ShareKeys(self._secret_key, n, t, self._party + 1, "shamir")
        if sorted(polys) != [j + 1 for j in range(n) if j != self._party]:
            raise RuntimeError("OpenFHE ShareKeys returned shares for unexpected holders")
        template = self._template()
        out = []
        for recipient in range(n):
            if recipient == self._party:
                continue
            plain = _rt.serialize_poly(runtime, template, polys[recipient + 1])
            out.append(self._seal(recipient, self._party, plain, roster))
        self._backed_up = True
        return tuple(out)

    def receive_backup(self, message: KeyBackupMessage | bytes) -> None:
        """Store a Shamir share of another holder's key share (the backup round).

        Raises:
            UnexpectedMessageError: not for us, another session, not from its subject, or
                a second backup from the same holder.
            DecryptionError: the AEAD check fails (tampered, wrong key or ids).
        """
        self._require_recovery()
        roster = self._require_roster()
        message = self._decode_backup(message)
        if message.sender != message.subject:
            raise UnexpectedMessageError("a backup share comes from its subject", party=self._party)
        if message.subject in self._backups:
            raise UnexpectedMessageError(f"a second backup from holder {message.subject}", party=self._party)
        plain = self._open(message, roster)
        self._backups[message.subject] = Secret(plain)

    def release_backup(self, dropped: int, stand_in: int) -> KeyBackupMessage:
        """Give our share of a dropped holder's key share to the holder standing in for it.

        An honest holder answers for at most ``n - t`` distinct dropped holders over the
        whole session: then no coalition below ``t`` holders plus the server can collect
        all ``n`` key shares by declaring honest holders dropped.

        Raises:
            ProtocolViolationError: ``dropped`` is ourselves or ``stand_in``, or answering
                would exceed ``n - t`` dropped holders.
            LocalProtocolError: we hold no backup of ``dropped``.
        """
        self._require_recovery()
        roster = self._require_roster()
        n, t = self._params.num_parties, self._params.recovery_threshold
        check_int("dropped", dropped)
        check_int("stand_in", stand_in)
        if not (0 <= dropped < n and 0 <= stand_in < n):
            raise ValueError(f"holders are in [0, {n})")
        if dropped in (self._party, stand_in) or stand_in == self._party:
            raise ProtocolViolationError("a share is released only for another, dropped holder to a third one", party=self._party)
        if dropped not in self._released and len(self._released) >= n - t:
            raise ProtocolViolationError(f"already released shares for {len(self._released)} dropped holders (n - t = {n - t})", party=self._party)
        share = self._backups.get(dropped)
        if share is None:
            raise LocalProtocolError(f"no backup of holder {dropped} was received", party=self._party)
        message = self._seal(stand_in, dropped, share.reveal(), roster)
        self._released.add(dropped)
        return message

    def recover_share(self, dropped: int, aggregate: bytes, released: Sequence[KeyBackupMessage | bytes]) -> DecryptionShare:
        """Stand in for a dropped holder: rebuild its key share, make its decryption share.

        Uses our own backup of ``dropped`` plus ``t - 1`` released shares from other holders
        (OpenFHE ``RecoverSharedKey``); the rebuilt key share is used once and dropped.

        Raises:
            InvalidShare: fewer than ``t`` distinct shares, or shares of another holder.
            DecryptionError: a released share fails its AEAD check.
            (and everything :meth:`partial_decrypt` raises.)
        """
        self._require_recovery()
        roster = self._require_roster()
        params, runtime = self._params, self._runtime
        n, t = params.num_parties, params.recovery_threshold
        check_int("dropped", dropped)
        if not 0 <= dropped < n or dropped == self._party:
            raise ValueError(f"dropped must be another holder in [0, {n})")
        own = self._backups.get(dropped)
        if own is None:
            raise LocalProtocolError(f"no backup of holder {dropped} was received", party=self._party)
        shares: dict[int, bytes] = {self._party + 1: own.reveal()}
        for raw in released:
            message = self._decode_backup(raw)
            if message.subject != dropped:
                raise InvalidShare(f"a released share is of holder {message.subject}, not {dropped}")
            if message.sender == dropped or message.sender + 1 in shares:
                raise InvalidShare(f"a duplicate or invalid released share from holder {message.sender}")
            shares[message.sender + 1] = self._open(message, roster)
        if len(shares) < t:
            raise InvalidShare(f"{len(shares)} shares of holder {dropped}'s key; recovery needs t = {t}")
        header, pieces, digest = self._check_aggregate(aggregate, tag=dropped)
        cts = load_ciphertexts(runtime, pieces, params, elements=2, what="aggregate", key_tag=self.key_tag)
        polys = {index: _rt.deserialize_poly(runtime, data) for index, data in shares.items()}
        key = runtime.context.KeyGen().secretKey  # a container; RecoverSharedKey overwrites it
        runtime.context.RecoverSharedKey(key, polys, n, t, "shamir")
        decrypt = runtime.context.MultipartyDecryptLead if dropped == 0 else runtime.context.MultipartyDecryptMain
        encoded = tuple(_rt.serialize(runtime, p) for p in decrypt(cts, key))
        del key, polys
        # ---- apply
        self._answered.add(digest)
        return DecryptionShare(self._session, dropped, hashlib.sha256(as_bytes(aggregate)).digest(), encoded)

    def _require_recovery(self) -> None:
        if not self._params.recovery_threshold:
            raise LocalProtocolError("these parameters have no recovery_threshold (n-of-n)", party=self._party)

    def _require_roster(self) -> tuple[bytes, ...]:
        if self._roster is None:
            raise LocalProtocolError("the roster of transport keys is not known yet", party=self._party)
        return self._roster

    def _template(self) -> Any:
        context = self._runtime.context
        return context.Encrypt(self._joint_key, context.MakeCKKSPackedPlaintext([0.0]))

    def _pair_key(self, peer: int, roster: tuple[bytes, ...]) -> Secret:
        assert self._transport is not None
        shared = self._transport.exchange(roster[peer])
        return derive_key(
            shared,
            protocol="threshold-ckks",
            purpose="key-backup",
            round_id=0,
            party_a=self._party,
            party_b=peer,
            salt=self._session,
        )

    def _seal(self, recipient: int, subject: int, plain: bytes, roster: tuple[bytes, ...]) -> KeyBackupMessage:
        draft = KeyBackupMessage(self._session, self._party, recipient, subject, b"")
        body = aead_encrypt(self._pair_key(recipient, roster), plain, draft.associated_data())
        return KeyBackupMessage(self._session, self._party, recipient, subject, body)

    def _open(self, message: KeyBackupMessage, roster: tuple[bytes, ...]) -> bytes:
        return aead_decrypt(self._pair_key(message.sender, roster), message.ciphertext, message.associated_data())

    def _decode_backup(self, message: KeyBackupMessage | bytes) -> KeyBackupMessage:
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = KeyBackupMessage.from_bytes(bytes(message), self._params)
        if not isinstance(message, KeyBackupMessage):
            raise TypeError(f"expected a KeyBackupMessage or bytes, got {type(message).__name__}")
        if not hmac.compare_digest(message.session, self._session):
            raise UnexpectedMessageError("key backup from another session", party=self._party)
        if message.recipient != self._party:
            raise UnexpectedMessageError(f"key backup for holder {message.recipient}", party=self._party)
        return message

    # ------------------------------------------------------------------ upload
    def encrypt(self, vector: np.ndarray, weight: float = 1.0) -> bytes:
        """Encrypt ``weight * clip(vector)`` under the joint key (an upload).

        The client applies its own FedAvg weight (e.g. its number of examples) in plaintext,
        so that the server only adds ciphertexts (see the module docstring); the upload's
        header carries ``weight`` and the server sums it into the aggregate's total weight.

        Args:
            vector: a flat float vector; values are clipped to ``[-clip, clip]``.
            weight: this client's weight, a finite number in ``(0, max_weight]``.

        Raises:
            LocalProtocolError: the joint key is not known yet.
            EncodingError: not a 1-D float vector, empty, too long, or containing NaN.
            TypeError / ValueError: ``weight`` is not a number in ``(0, max_weight]``.
        """
        self._require_ready()
        values = check_vector(vector, self._params)
        weight = check_weight(weight, self._params)
        runtime, params = self._runtime, self._params
        return _encrypt_with_public_key(runtime, params, self._joint_key, self.fingerprint, values, weight)

    # ------------------------------------------------------------------ decryption
    def partial_decrypt(self, aggregate: bytes) -> DecryptionShare:
        """This holder's (flooded) partial decryption of an aggregate, answered once.

        Raises:
            LocalProtocolError: the joint key is not known yet.
            ContextMismatchError: the aggregate is under another key.
            MalformedMessageError: it does not decode, or is an upload.
            ProtocolViolationError: fewer contributions than ``min_contributions``.
            UnexpectedMessageError: this aggregate was already answered.
        """
        params, runtime = self._params, self._runtime
        header, pieces, tag = self._check_aggregate(aggregate, tag=self._party)
        digest = hashlib.sha256(as_bytes(aggregate)).digest()
        cts = load_ciphertexts(runtime, pieces, params, elements=2, what="aggregate", key_tag=self.key_tag)
        context = runtime.context
        decrypt = context.MultipartyDecryptLead if self._party == 0 else context.MultipartyDecryptMain
        partials = decrypt(cts, self._secret_key)
        encoded = tuple(_rt.serialize(runtime, p) for p in partials)
        # ---- apply
        self._answered.add(tag)
        return DecryptionShare(self._session, self._party, digest, encoded)

    def _check_aggregate(self, aggregate: bytes, *, tag: int) -> tuple[BlobHeader, list[bytes], bytes]:
        """Validate an aggregate for a partial decryption made as holder ``tag``."""
        self._require_ready()
        header, pieces = decode_blob(aggregate, self._params, self.fingerprint, (BlobKind.AGGREGATE,))
        if header.contributions < self._min_contributions:
            raise ProtocolViolationError(
                f"aggregate of {header.contributions} uploads; this holder decrypts only aggregates of at least {self._min_contributions}",
                party=self._party,
            )
        answered = hashlib.sha256(as_bytes(aggregate)).digest() + bytes([0]) + struct.pack(">H", tag)
        if answered in self._answered:
            raise UnexpectedMessageError("this aggregate was already partially decrypted", party=self._party)
        return header, pieces, answered

    def _require_ready(self) -> None:
        if self._stage is not Stage.READY:
            raise LocalProtocolError("the joint key is not known yet", party=self._party, stage=self._stage)


def _encrypt_with_public_key(runtime: Any, params: ThresholdParams, public_key: Any, fingerprint: bytes, values: np.ndarray, weight: float) -> bytes:
    """Encrypt ``2^h * weight * values`` (checked, clipped; ``h = params.headroom_bits()``)
    under an OpenFHE public key: an upload."""
    context, per_ct = runtime.context, params.values_per_ciphertext
    factor = math.ldexp(weight, params.headroom_bits())  # 2^h * weight: see ThresholdParams
    if factor != 1.0:
        values = values * factor
    complex_packing = params.packing == "complex"
    pieces = []
    for start in range(0, values.shape[0], per_ct):
        block = values[start : start + per_ct]
        if complex_packing:
            if block.shape[0] % 2:
                block = np.append(block, 0.0)
            block = np.ascontiguousarray(block).view(np.complex128)  # x[2j] + i x[2j+1]
        plain = context.MakeCKKSPackedPlaintext(block)
        pieces.append(_rt.serialize(runtime, context.Encrypt(public_key, plain)))
    header = BlobHeader(BlobKind.UPLOAD, fingerprint, int(values.shape[0]), 1, weight, len(pieces))
    return encode_blob(header, pieces)
