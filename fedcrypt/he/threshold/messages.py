"""Threshold-CKKS messages: stages, blob kinds, and one frozen, slotted dataclass per message
of the key set-up and the decryption, each with canonical, versioned bytes and a strict decoder.

Invariants:

* ``from_bytes`` checks magic, version, party ids and every length against a cap derived
  from the parameters before OpenFHE parses anything; any failure is a
  :class:`~fedcrypt.errors.MalformedMessageError`;
* ``repr`` never shows a key, a partial decryption or a backup share.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from fedcrypt._wire import Reader
from fedcrypt.errors import MalformedMessageError

from ._common import VERSION, as_bytes, backup_cap, ciphertext_cap, length_prefixed, public_key_cap
from .params import ThresholdParams

__all__ = [
    "Stage",
    "BlobKind",
    "KeyShareMessage",
    "DecryptionShare",
    "RosterMessage",
    "KeyBackupMessage",
]

_KEYSHARE_MAGIC = b"FCTK"
_SHARE_MAGIC = b"FCTD"


class Stage(enum.Enum):
    """Stages of a :class:`~fedcrypt.he.threshold.KeyHolder` and of a
    :class:`~fedcrypt.he.threshold.ThresholdServer`."""

    KEYGEN = "keygen"
    AWAIT_JOINT_KEY = "await_joint_key"
    READY = "ready"


class BlobKind(enum.IntEnum):
    """Kinds of encrypted vector."""

    UPLOAD = 1
    AGGREGATE = 2


@dataclass(frozen=True, slots=True)
class KeyShareMessage:
    """One link of the key-generation chain: holder ``party``'s running public key.

    The message of party ``num_parties - 1`` is the joint public key. It carries no secret.

    Attributes:
        session: the server's 32-byte session id.
        party: index of the key holder that produced it (0-based).
        public_key: OpenFHE binary serialisation of the running public key.
        transport_key: the holder's X25519 public key for the key backup (32 bytes) when
            ``recovery_threshold`` is set, else empty.
    """

    session: bytes = field(repr=False)
    party: int
    public_key: bytes = field(repr=False)
    transport_key: bytes = field(default=b"", repr=False)

    def to_bytes(self) -> bytes:
        """Canonical bytes: magic, version, session, party, sized public key, transport key."""
        head = struct.pack(">4sB32sH", _KEYSHARE_MAGIC, VERSION, self.session, self.party)
        return head + length_prefixed(self.public_key) + struct.pack(">B", len(self.transport_key)) + self.transport_key

    @classmethod
    def from_bytes(cls, data: bytes, params: ThresholdParams) -> "KeyShareMessage":
        """Strictly decode; the public key's size is capped by ``params``.

        Raises:
            MalformedMessageError: truncated, oversized, bad magic/version/party.
        """
        reader = Reader(data, "key share")
        magic, version, session, party = reader.unpack(">4sB32sH")
        if magic != _KEYSHARE_MAGIC or version != VERSION:
            raise MalformedMessageError("key share: bad magic or version")
        if party >= params.num_parties:
            raise MalformedMessageError(f"key share: party {party} outside [0, {params.num_parties})")
        key = reader.sized(public_key_cap(params), "public key")
        size = reader.u8()
        expected = 32 if params.recovery_threshold else 0
        if size != expected:
            raise MalformedMessageError(f"key share: transport key of {size} bytes, expected {expected}")
        transport = reader.take(size)
        reader.expect_end()
        return cls(session, party, key, transport)

    def __repr__(self) -> str:
        return f"KeyShareMessage(party={self.party}, public_key=<{len(self.public_key)} bytes>)"


@dataclass(frozen=True, slots=True)
class DecryptionShare:
    """Holder ``party``'s partial decryption of one aggregate (flooded, see ThresholdParams).

    Attributes:
        session: the session id.
        party: the key holder (0 is the lead: its share includes ``c0``).
        aggregate_digest: SHA-256 of the aggregate blob it decrypts.
        partials: one OpenFHE ciphertext (one polynomial) per ciphertext of the aggregate.
    """

    session: bytes = field(repr=False)
    party: int
    aggregate_digest: bytes
    partials: tuple[bytes, ...] = field(repr=False)

    def to_bytes(self) -> bytes:
        """Canonical bytes: magic, version, session, party, digest, count, sized partials."""
        head = struct.pack(">4sB32sH32sI", _SHARE_MAGIC, VERSION, self.session, self.party, self.aggregate_digest, len(self.partials))
        return head + b"".join(length_prefixed(p) for p in self.partials)

    @classmethod
    def from_bytes(cls, data: bytes, params: ThresholdParams, *, ciphertext_count: int) -> "DecryptionShare":
        """Strictly decode a share of an aggregate made of ``ciphertext_count`` ciphertexts.

        Raises:
            MalformedMessageError: truncated, oversized, bad magic/version/party/count.
        """
        data = as_bytes(data)
        cap = ciphertext_cap(params, 1)
        if len(data) > 75 + ciphertext_count * (4 + cap):
            raise MalformedMessageError("decryption share: oversized")
        reader = Reader(data, "decryption share")
        magic, version, session, party, digest, count = reader.unpack(">4sB32sH32sI")
        if magic != _SHARE_MAGIC or version != VERSION:
            raise MalformedMessageError("decryption share: bad magic or version")
        if party >= params.num_parties:
            raise MalformedMessageError(f"decryption share: party {party} outside [0, {params.num_parties})")
        if count != ciphertext_count:
            raise MalformedMessageError(f"decryption share: {count} partials, expected {ciphertext_count}")
        partials = tuple(reader.sized(cap, f"partial {i}") for i in range(count))
        reader.expect_end()
        return cls(session, party, digest, partials)

    def __repr__(self) -> str:
        return f"DecryptionShare(party={self.party}, partials=<{len(self.partials)} ciphertexts>)"


_ROSTER_MAGIC = b"FCTR"
_BACKUP_MAGIC = b"FCTS"


@dataclass(frozen=True, slots=True)
class RosterMessage:
    """Every key holder's X25519 transport key, in party order (broadcast by the server).

    Attributes:
        session: the session id.
        transport_keys: one 32-byte X25519 public key per holder.
    """

    session: bytes = field(repr=False)
    transport_keys: tuple[bytes, ...] = field(repr=False)

    def to_bytes(self) -> bytes:
        """Canonical bytes: magic, version, session, count, keys."""
        head = struct.pack(">4sB32sH", _ROSTER_MAGIC, VERSION, self.session, len(self.transport_keys))
        return head + b"".join(self.transport_keys)

    @classmethod
    def from_bytes(cls, data: bytes, params: ThresholdParams) -> "RosterMessage":
        """Strictly decode.

        Raises:
            MalformedMessageError: truncated, wrong count, bad magic or version.
        """
        reader = Reader(data, "roster")
        magic, version, session, count = reader.unpack(">4sB32sH")
        if magic != _ROSTER_MAGIC or version != VERSION:
            raise MalformedMessageError("roster: bad magic or version")
        if count != params.num_parties:
            raise MalformedMessageError(f"roster: {count} keys for {params.num_parties} holders")
        keys = tuple(reader.take(32) for _ in range(count))
        reader.expect_end()
        return cls(session, keys)

    def __repr__(self) -> str:
        return f"RosterMessage(holders={len(self.transport_keys)})"


@dataclass(frozen=True, slots=True)
class KeyBackupMessage:
    """A Shamir share of holder ``subject``'s key share, AES-GCM-encrypted to ``recipient``.

    Sent by ``subject`` itself in the backup round (``sender == subject``) and, when
    ``subject`` dropped, by another holder to the holder that stands in for it.

    Attributes:
        session: the session id.
        sender: the holder that encrypted it.
        recipient: the holder that can decrypt it.
        subject: the holder whose key share it is a Shamir share of.
        ciphertext: ``nonce || AES-256-GCM(share) || tag`` under the pairwise key.
    """

    session: bytes = field(repr=False)
    sender: int
    recipient: int
    subject: int
    ciphertext: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        """Canonical bytes: magic, version, session, sender, recipient, subject, sized body."""
        head = struct.pack(">4sB32sHHH", _BACKUP_MAGIC, VERSION, self.session, self.sender, self.recipient, self.subject)
        return head + length_prefixed(self.ciphertext)

    @classmethod
    def from_bytes(cls, data: bytes, params: ThresholdParams) -> "KeyBackupMessage":
        """Strictly decode.

        Raises:
            MalformedMessageError: truncated, oversized, bad ids, magic or version.
        """
        reader = Reader(data, "key backup")
        magic, version, session, sender, recipient, subject = reader.unpack(">4sB32sHHH")
        if magic != _BACKUP_MAGIC or version != VERSION:
            raise MalformedMessageError("key backup: bad magic or version")
        n = params.num_parties
        if max(sender, recipient, subject) >= n or sender == recipient or recipient == subject:
            raise MalformedMessageError("key backup: bad sender, recipient or subject")
        body = reader.sized(backup_cap(params), "share")
        reader.expect_end()
        return cls(session, sender, recipient, subject, body)

    def associated_data(self) -> bytes:
        """What the AEAD binds: the session and the three ids."""
        return b"fedcrypt threshold-ckks key backup v1" + self.session + struct.pack(">HHH", self.sender, self.recipient, self.subject)

    def __repr__(self) -> str:
        return (
            f"KeyBackupMessage(sender={self.sender}, recipient={self.recipient}, subject={self.subject}, ciphertext=<{len(self.ciphertext)} bytes>)"
        )
