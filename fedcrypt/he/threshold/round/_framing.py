"""The framing of the threshold round's messages (see :mod:`.messages`, which re-exports
these names): the stages and type bytes, the wire base class, and the parts shared by
several messages (key-chain links, signed key backups, committees).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

from fedcrypt._wire import Reader
from fedcrypt.he._round_common import (
    DIGEST_BYTES,
    KEY_BYTES,
    SIGNATURE_BYTES,
    WireMessage,
    check_blob,
    check_bytes,
    check_id,
    check_member,
    check_tuple,
    name_bytes,
    read_member,
    read_short,
    short,
)

__all__ = [
    "MAGIC",
    "VERSION",
    "SESSION_BYTES",
    "MAX_KEY_MESSAGE",
    "MAX_PARTIES",
    "Stage",
    "MessageType",
    "KeyLink",
    "SignedBackup",
]

MAGIC = b"FCTM"
VERSION = 1
SESSION_BYTES = 32
#: the most bytes of one OpenFHE public key message or key backup under any ThresholdParams
#: (ring 32768, two towers: about 1 MiB, with framing)
MAX_KEY_MESSAGE = 1 << 21
#: the most key holders (ThresholdParams allows 1024)
MAX_PARTIES = 1024
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class Stage(enum.IntEnum):
    """The stages of a round, in order. KEYGEN, JOINT and BACKUP run once per session (the
    first round; BACKUP only with ``recovery_threshold``), CONFIRM only with a roster,
    RELEASE and RECOVER only for key holders that drop at DECRYPT (t-of-n). A node listed
    under a stage in :func:`~fedcrypt.he.threshold.round.simulate`'s ``dropouts`` drops
    before it answers that stage's request."""

    KEYGEN = 1
    JOINT = 2
    BACKUP = 3
    ENCRYPT = 4
    CONFIRM = 5
    DECRYPT = 6
    RELEASE = 7
    RECOVER = 8
    DONE = 9
    ABORTED = 10


class MessageType(enum.IntEnum):
    """Wire type byte."""

    KEYGEN_REQUEST = 1
    KEYGEN_REPLY = 2
    JOINT_REQUEST = 3
    JOINT_REPLY = 4
    BACKUP_REQUEST = 5
    BACKUP_REPLY = 6
    ENCRYPT_REQUEST = 7
    UPLOAD = 8
    CONFIRM_REQUEST = 9
    CONFIRMATION = 10
    DECRYPT_REQUEST = 11
    PARTIAL_DECRYPTION = 12
    RELEASE_REQUEST = 13
    RELEASE_REPLY = 14
    RECOVER_REQUEST = 15
    SUM_PART = 16
    SUM_ACK = 17


class _Wire(WireMessage):
    """The threshold round's framing (magic ``FCTM``, version 1); see :class:`WireMessage`."""

    __slots__ = ()
    MAGIC: ClassVar[bytes] = MAGIC
    VERSION: ClassVar[int] = VERSION
    TYPE: ClassVar[MessageType]
    STAGE: ClassVar[Stage]


def _check_party(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_PARTIES:
        raise ValueError(f"{name} must be a key holder index in [0, {MAX_PARTIES}), got {value!r}")


def _check_committee(committee: object) -> None:
    check_tuple(committee, int, "committee")
    assert isinstance(committee, tuple)  # check_tuple raised TypeError otherwise
    if len(committee) > MAX_PARTIES:
        raise ValueError(f"a committee has at most {MAX_PARTIES} nodes")
    for node in committee:
        check_id(node, "a committee node")


def _committee_body(committee: tuple[int, ...]) -> bytes:
    return _U32.pack(len(committee)) + b"".join(struct.pack(">Q", n) for n in committee)


def _read_committee(reader: Reader) -> tuple[int, ...]:
    count = reader.count(8, MAX_PARTIES, "committee size")
    return tuple(reader.u64() for _ in range(count))


# ------------------------------------------------------------------------------ parts
@dataclass(frozen=True, slots=True)
class KeyLink:
    """One holder's signed link of the key chain, without the public key itself.

    Attributes:
        member: the holder's roster name (empty without a roster).
        previous: SHA-256 of the running public key it extended (zeros for party 0).
        key: SHA-256 of the running public key it produced (the joint key's, for the last holder).
        transport: its X25519 key for the key backup (32 bytes with ``recovery_threshold``, else empty).
        signature: with a roster, its signature of the link statement.
    """

    member: str
    previous: bytes
    key: bytes
    transport: bytes = b""
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_member(self.member)
        check_bytes(self.previous, (DIGEST_BYTES,), "previous")
        check_bytes(self.key, (DIGEST_BYTES,), "key")
        check_bytes(self.transport, (0, KEY_BYTES), "transport")
        check_bytes(self.signature, (0, SIGNATURE_BYTES), "signature")

    def to_bytes(self) -> bytes:
        """Canonical bytes (see the module docstring)."""
        return name_bytes(self.member) + self.previous + self.key + short(self.transport) + short(self.signature)

    @classmethod
    def read(cls, reader: Reader) -> "KeyLink":
        """Read one link from ``reader``."""
        member = read_member(reader)
        previous, key = reader.take(DIGEST_BYTES), reader.take(DIGEST_BYTES)
        transport = read_short(reader, (0, KEY_BYTES), "transport key")
        return cls(member, previous, key, transport, read_short(reader, (0, SIGNATURE_BYTES), "signature"))

    def __repr__(self) -> str:
        return f"KeyLink(member={self.member!r}, key={self.key.hex()[:16]}, signed={bool(self.signature)})"


@dataclass(frozen=True, slots=True)
class SignedBackup:
    """A :class:`~fedcrypt.he.threshold.KeyBackupMessage` (AES-GCM-sealed to its recipient)
    with its sender's roster name and signature.

    Attributes:
        backup: the KeyBackupMessage bytes.
        member: the sender's roster name (empty without a roster).
        signature: with a roster, the sender's signature of the backup statement.
    """

    backup: bytes
    member: str = ""
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_blob(self.backup, "backup")
        if not 0 < len(self.backup) <= MAX_KEY_MESSAGE:
            raise ValueError(f"a key backup is 1 to {MAX_KEY_MESSAGE} bytes")
        check_member(self.member)
        check_bytes(self.signature, (0, SIGNATURE_BYTES), "signature")

    def to_bytes(self) -> bytes:
        """Canonical bytes (see the module docstring)."""
        return _U32.pack(len(self.backup)) + self.backup + name_bytes(self.member) + short(self.signature)

    @classmethod
    def read(cls, reader: Reader) -> "SignedBackup":
        """Read one signed backup from ``reader``."""
        backup = reader.sized(MAX_KEY_MESSAGE, "key backup")
        member = read_member(reader)
        return cls(backup, member, read_short(reader, (0, SIGNATURE_BYTES), "signature"))

    def __repr__(self) -> str:
        return f"SignedBackup(<{len(self.backup)} bytes>, member={self.member!r}, signed={bool(self.signature)})"


def _backups_body(backups: tuple[SignedBackup, ...]) -> bytes:
    return _U32.pack(len(backups)) + b"".join(b.to_bytes() for b in backups)


def _read_backups(reader: Reader) -> tuple[SignedBackup, ...]:
    count = reader.count(4 + 1 + 1, MAX_PARTIES, "backup count")
    return tuple(SignedBackup.read(reader) for _ in range(count))


def _check_backups(backups: object) -> None:
    check_tuple(backups, SignedBackup, "backups")
    assert isinstance(backups, tuple)  # check_tuple raised TypeError otherwise
    if len(backups) > MAX_PARTIES:
        raise ValueError(f"at most {MAX_PARTIES} backups")
