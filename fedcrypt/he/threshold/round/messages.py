"""Messages of the threshold CKKS round: one frozen, slotted dataclass per protocol step,
canonical bytes, strict decoders.

Wire format of every message (big-endian; the framing of :mod:`fedcrypt.he._round_common`)::

    magic "FCTM" (4) | version (1) | type (1) | round (8) | node (8) | body

``node`` is the sender of a node-to-server message and the recipient of a
server-to-node message (node ids are a transport's 64-bit ids). Bodies, per type::

    KeygenRequest     session (32) | party u16 | committee: u32 count, node u64 each
                      | previous: presence u8, (u32-sized KeygenReply bytes) if 1
    KeygenReply       link (KeyLink) | share (u32-sized KeyShareMessage bytes)
    JointRequest      session (32) | committee | links: u32 count, KeyLink each
                      | joint (u32-sized KeyShareMessage bytes: the last holder's)
    JointReply        backups: u32 count, SignedBackup each (empty without recovery)
    BackupRequest     backups (those addressed to the recipient)
    BackupReply       (empty)
    EncryptRequest    fingerprint (32)
    Upload            blob (u64-sized) | layout digest (32) | member | signature (u8-sized, 0 or 64)
    ConfirmRequest    entries: u32 count, (member | node u64 | upload digest 32) each
    Confirmation      member | signature (64)
    DecryptRequest    aggregate (u64-sized, empty with a roster)
                      | uploads: u32 count, (u64-sized Upload bytes | u8-sized confirmation) each
                      | part u32 (0: the uploads are the whole set; k > 0: the last part of a stream)
    PartialDecryption share (u64-sized DecryptionShare bytes)
    ReleaseRequest    dropped u16 | stand-in u16
    ReleaseReply      backup (SignedBackup)
    RecoverRequest    dropped u16 | released backups | aggregate (u64-sized; empty with a roster:
                      the stand-in decrypts the sum it kept from its own DECRYPT)
    SumPart           index u32 | entries (as in ConfirmRequest; only in part 0)
                      | uploads (as in DecryptRequest)
    SumAck            index u32

    KeyLink           member | previous key digest (32) | key digest (32)
                      | transport key (u8-sized, 0 or 32) | signature (u8-sized, 0 or 64)
    SignedBackup      backup (u32-sized KeyBackupMessage bytes) | member | signature (u8-sized)

Invariants:

* ``from_bytes`` checks magic, version, type, every length against a cap and against the
  bytes that remain before it reads or allocates anything, and that no byte is left over;
  any failure is a :class:`~fedcrypt.errors.MalformedMessageError`. OpenFHE keys,
  ciphertexts, key backups and decryption shares stay opaque bytes here, under caps that
  hold for every :class:`~fedcrypt.he.threshold.ThresholdParams`: the receiving object
  decodes them with its parameters (:class:`~fedcrypt.he.threshold.KeyShareMessage`, the
  blob codec, ...) before OpenFHE sees them.
* ``from_bytes(m.to_bytes()) == m`` for every message ``m``, and a message has one encoding.
* The decoders check structure only; who may send what (the committee, distinct members,
  the right session and round, valid signatures) is the receiving object's check, so a
  test can build any message a malicious server could send.
* ``repr`` shows sizes and public fields, never a key, a backup, a blob or a share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

from fedcrypt._wire import Reader
from fedcrypt.he._round_common import (
    DIGEST_BYTES,
    HEADER,
    SIGNATURE_BYTES,
    ConfirmationBody,
    ConfirmedUploadBase,
    ConfirmRequestBody,
    DecryptRequestBody,
    EncryptRequestBody,
    SumAckBody,
    SumPartBody,
    check_blob,
    check_bytes,
    check_member,
    check_tuple,
    decode_by_type,
    name_bytes,
    read_member,
    read_short,
    read_sized,
    short,
    sized,
)

from ._framing import (
    _U16,
    _U32,
    KeyLink,
    MessageType,
    SignedBackup,
    Stage,
    _backups_body,
    _check_backups,
    _check_committee,
    _check_party,
    _committee_body,
    _read_backups,
    _read_committee,
    _Wire,
)
from ._framing import MAGIC as MAGIC
from ._framing import MAX_KEY_MESSAGE as MAX_KEY_MESSAGE
from ._framing import MAX_PARTIES as MAX_PARTIES
from ._framing import SESSION_BYTES as SESSION_BYTES
from ._framing import VERSION as VERSION

__all__ = [
    "Stage",
    "MessageType",
    "KeyLink",
    "SignedBackup",
    "KeygenRequest",
    "KeygenReply",
    "JointRequest",
    "JointReply",
    "BackupRequest",
    "BackupReply",
    "EncryptRequest",
    "Upload",
    "ConfirmRequest",
    "Confirmation",
    "ConfirmedUpload",
    "DecryptRequest",
    "PartialDecryption",
    "ReleaseRequest",
    "ReleaseReply",
    "RecoverRequest",
    "SumPart",
    "SumAck",
    "Message",
    "decode_message",
]


# ------------------------------------------------------------------------------ key set-up
@dataclass(frozen=True, slots=True, repr=False)
class KeygenReply(_Wire):
    """Holder -> server: its link of the key chain.

    Attributes:
        link: the signed link (digests of the key it extended and of the key it produced).
        share: the :class:`~fedcrypt.he.threshold.KeyShareMessage` bytes with the running
            public key (and the transport key).
    """

    round_id: int
    node: int
    link: KeyLink
    share: bytes
    TYPE: ClassVar[MessageType] = MessageType.KEYGEN_REPLY
    STAGE: ClassVar[Stage] = Stage.KEYGEN

    def _check(self) -> None:
        if not isinstance(self.link, KeyLink):
            raise TypeError(f"link must be a KeyLink, got {type(self.link).__name__}")
        check_blob(self.share, "share")
        if not 0 < len(self.share) <= MAX_KEY_MESSAGE:
            raise ValueError(f"a key share message is 1 to {MAX_KEY_MESSAGE} bytes")

    def _body(self) -> bytes:
        return self.link.to_bytes() + _U32.pack(len(self.share)) + self.share

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "KeygenReply":
        link = KeyLink.read(reader)
        return cls(round_id, node, link, reader.sized(MAX_KEY_MESSAGE, "key share"))

    def _summary(self) -> str:
        return f"link={self.link!r}, share=<{len(self.share)} bytes>"


@dataclass(frozen=True, slots=True, repr=False)
class KeygenRequest(_Wire):
    """Server -> holder ``party``: run your link of the key chain.

    Attributes:
        session: the session id (32 bytes, the server's choice).
        party: the recipient's index in the committee.
        committee: the key holders' node ids, in party order.
        previous: holder ``party - 1``'s reply, relayed (``None`` for party 0).
    """

    round_id: int
    node: int
    session: bytes
    party: int
    committee: tuple[int, ...]
    previous: KeygenReply | None = None
    TYPE: ClassVar[MessageType] = MessageType.KEYGEN_REQUEST
    STAGE: ClassVar[Stage] = Stage.KEYGEN

    def _check(self) -> None:
        check_bytes(self.session, (SESSION_BYTES,), "session")
        _check_party(self.party, "party")
        _check_committee(self.committee)
        if self.previous is not None and not isinstance(self.previous, KeygenReply):
            raise TypeError(f"previous must be a KeygenReply or None, got {type(self.previous).__name__}")

    def _body(self) -> bytes:
        head = self.session + _U16.pack(self.party) + _committee_body(self.committee)
        if self.previous is None:
            return head + b"\x00"
        raw = self.previous.to_bytes()
        return head + b"\x01" + _U32.pack(len(raw)) + raw

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "KeygenRequest":
        session, party = reader.take(SESSION_BYTES), reader.u16()
        committee = _read_committee(reader)
        flag = reader.u8()
        if flag > 1:
            raise reader.error(f"presence byte {flag}")
        previous = None
        if flag:
            previous = KeygenReply.from_bytes(reader.sized(HEADER.size + 2 * MAX_KEY_MESSAGE, "previous link"))
        return cls(round_id, node, session, party, committee, previous)

    def _summary(self) -> str:
        return f"party={self.party}, committee={len(self.committee)}, previous={self.previous is not None}"


@dataclass(frozen=True, slots=True, repr=False)
class JointRequest(_Wire):
    """Server -> every holder: the whole chain's links and the joint public key.

    Attributes:
        session: the session id.
        committee: the key holders' node ids, in party order.
        links: every holder's link, in party order.
        joint: the last holder's KeyShareMessage bytes (the joint public key).
    """

    round_id: int
    node: int
    session: bytes
    committee: tuple[int, ...]
    links: tuple[KeyLink, ...]
    joint: bytes
    TYPE: ClassVar[MessageType] = MessageType.JOINT_REQUEST
    STAGE: ClassVar[Stage] = Stage.JOINT

    def _check(self) -> None:
        check_bytes(self.session, (SESSION_BYTES,), "session")
        _check_committee(self.committee)
        check_tuple(self.links, KeyLink, "links")
        if len(self.links) > MAX_PARTIES:
            raise ValueError(f"at most {MAX_PARTIES} links")
        check_blob(self.joint, "joint")
        if not 0 < len(self.joint) <= MAX_KEY_MESSAGE:
            raise ValueError(f"a key share message is 1 to {MAX_KEY_MESSAGE} bytes")

    def _body(self) -> bytes:
        links = _U32.pack(len(self.links)) + b"".join(link.to_bytes() for link in self.links)
        return self.session + _committee_body(self.committee) + links + _U32.pack(len(self.joint)) + self.joint

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "JointRequest":
        session = reader.take(SESSION_BYTES)
        committee = _read_committee(reader)
        count = reader.count(1 + 2 * DIGEST_BYTES + 2, MAX_PARTIES, "link count")
        links = tuple(KeyLink.read(reader) for _ in range(count))
        return cls(round_id, node, session, committee, links, reader.sized(MAX_KEY_MESSAGE, "joint key"))

    def _summary(self) -> str:
        return f"committee={len(self.committee)}, links={len(self.links)}, joint=<{len(self.joint)} bytes>"


@dataclass(frozen=True, slots=True, repr=False)
class JointReply(_Wire):
    """Holder -> server: its key backups, one sealed to each other holder (t-of-n), else none."""

    round_id: int
    node: int
    backups: tuple[SignedBackup, ...] = ()
    TYPE: ClassVar[MessageType] = MessageType.JOINT_REPLY
    STAGE: ClassVar[Stage] = Stage.JOINT

    def _check(self) -> None:
        _check_backups(self.backups)

    def _body(self) -> bytes:
        return _backups_body(self.backups)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "JointReply":
        return cls(round_id, node, _read_backups(reader))

    def _summary(self) -> str:
        return f"backups={len(self.backups)}"


@dataclass(frozen=True, slots=True, repr=False)
class BackupRequest(_Wire):
    """Server -> holder: the key backups the other holders sealed to it."""

    round_id: int
    node: int
    backups: tuple[SignedBackup, ...]
    TYPE: ClassVar[MessageType] = MessageType.BACKUP_REQUEST
    STAGE: ClassVar[Stage] = Stage.BACKUP

    def _check(self) -> None:
        _check_backups(self.backups)

    def _body(self) -> bytes:
        return _backups_body(self.backups)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "BackupRequest":
        return cls(round_id, node, _read_backups(reader))

    def _summary(self) -> str:
        return f"backups={len(self.backups)}"


@dataclass(frozen=True, slots=True, repr=False)
class BackupReply(_Wire):
    """Holder -> server: the backups are stored."""

    round_id: int
    node: int
    TYPE: ClassVar[MessageType] = MessageType.BACKUP_REPLY
    STAGE: ClassVar[Stage] = Stage.BACKUP

    def _body(self) -> bytes:
        return b""

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "BackupReply":
        return cls(round_id, node)


# ------------------------------------------------------------------------------ uploads
@dataclass(frozen=True, slots=True, repr=False)
class EncryptRequest(EncryptRequestBody, _Wire):
    """Server -> key holder: encrypt your update under the joint key of this fingerprint."""

    round_id: int
    node: int
    fingerprint: bytes
    TYPE: ClassVar[MessageType] = MessageType.ENCRYPT_REQUEST
    STAGE: ClassVar[Stage] = Stage.ENCRYPT


@dataclass(frozen=True, slots=True, repr=False)
class Upload(_Wire):
    """Node -> server: the encryption of ``M * (w/M [x, 1])`` under the joint key (an upload blob).

    Attributes:
        blob: the upload blob (its header names the key fingerprint, the length and the weight ``M``).
        layout: the 32-byte digest of the layout ``x`` was flattened with.
        member, signature: with a roster, the node's name and its signature of the upload
            statement (round, fingerprint, node, SHA-256 of the blob, layout digest).
    """

    round_id: int
    node: int
    blob: bytes
    layout: bytes
    member: str = ""
    signature: bytes = b""
    TYPE: ClassVar[MessageType] = MessageType.UPLOAD
    STAGE: ClassVar[Stage] = Stage.ENCRYPT

    def _check(self) -> None:
        check_blob(self.blob, "blob")
        check_bytes(self.layout, (DIGEST_BYTES,), "layout")
        check_member(self.member)
        check_bytes(self.signature, (0, SIGNATURE_BYTES), "signature")

    def _body(self) -> bytes:
        return sized(self.blob) + self.layout + name_bytes(self.member) + short(self.signature)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "Upload":
        blob = read_sized(reader, "upload blob")
        layout = reader.take(DIGEST_BYTES)
        member = read_member(reader)
        return cls(round_id, node, blob, layout, member, read_short(reader, (0, SIGNATURE_BYTES), "signature"))

    def _summary(self) -> str:
        return f"blob=<{len(self.blob)} bytes>, member={self.member!r}, signed={bool(self.signature)}"


@dataclass(frozen=True, slots=True, repr=False)
class ConfirmRequest(ConfirmRequestBody, _Wire):
    """Server -> uploader (with a roster): the set of uploads the round sums.

    Attributes:
        entries: ``(member, node, SHA-256 of the upload blob)`` per upload in the set.
    """

    round_id: int
    node: int
    entries: tuple[tuple[str, int, bytes], ...]
    TYPE: ClassVar[MessageType] = MessageType.CONFIRM_REQUEST
    STAGE: ClassVar[Stage] = Stage.CONFIRM


@dataclass(frozen=True, slots=True, repr=False)
class Confirmation(ConfirmationBody, _Wire):
    """Uploader -> server: its signature of the confirm statement over the summed set."""

    round_id: int
    node: int
    member: str
    signature: bytes
    TYPE: ClassVar[MessageType] = MessageType.CONFIRMATION
    STAGE: ClassVar[Stage] = Stage.CONFIRM


# ------------------------------------------------------------------------------ decryption
@dataclass(frozen=True, slots=True, repr=False)
class ConfirmedUpload(ConfirmedUploadBase):
    """One signed upload as a key holder receives it, with its node's confirmation of the set."""

    upload: Upload
    confirmation: bytes
    UPLOAD: ClassVar[type[Upload]] = Upload
    #: the fewest bytes one item takes: u64 size | header | u64 blob size | layout | member u8 | signature u8 | confirmation u8
    MIN_BYTES: ClassVar[int] = 8 + HEADER.size + 8 + DIGEST_BYTES + 2 + 1


@dataclass(frozen=True, slots=True, repr=False)
class DecryptRequest(DecryptRequestBody, _Wire):
    """Server -> key holder: what to partially decrypt.

    Without a roster, ``aggregate``: the server's sum (an aggregate blob). With a roster,
    ``uploads``: the signed uploads and their nodes' confirmations; the holder checks and
    sums them itself (a server-made aggregate cannot be told from one relabelled upload).
    ``part`` 0: ``uploads`` are the whole set; ``part`` k > 0: they are the last part of a
    set streamed in :class:`SumPart` messages 0 to k - 1 (the holder adds them, then
    partially decrypts the whole set).
    """

    round_id: int
    node: int
    aggregate: bytes = b""
    uploads: tuple[ConfirmedUpload, ...] = ()
    part: int = 0
    TYPE: ClassVar[MessageType] = MessageType.DECRYPT_REQUEST
    STAGE: ClassVar[Stage] = Stage.DECRYPT
    CONFIRMED: ClassVar[type[ConfirmedUpload]] = ConfirmedUpload


@dataclass(frozen=True, slots=True, repr=False)
class SumPart(SumPartBody, _Wire):
    """Server -> key holder (with a roster): one part of the confirmed set, streamed.

    A set too large for one message goes in parts, so the server holds one part at a time:
    part 0 names the whole set (``entries``, in the order the uploads follow), every part
    carries the next uploads of it with their confirmations, and the last part is a
    :class:`DecryptRequest` with ``part`` set. The holder checks and adds each upload as it
    comes and answers a :class:`SumAck`.
    """

    round_id: int
    node: int
    index: int
    entries: tuple[tuple[str, int, bytes], ...]
    uploads: tuple[ConfirmedUpload, ...]
    TYPE: ClassVar[MessageType] = MessageType.SUM_PART
    STAGE: ClassVar[Stage] = Stage.DECRYPT
    CONFIRMED: ClassVar[type[ConfirmedUpload]] = ConfirmedUpload


@dataclass(frozen=True, slots=True, repr=False)
class SumAck(SumAckBody, _Wire):
    """Key holder -> server: part ``index`` of the set is checked and added."""

    round_id: int
    node: int
    index: int
    TYPE: ClassVar[MessageType] = MessageType.SUM_ACK
    STAGE: ClassVar[Stage] = Stage.DECRYPT


@dataclass(frozen=True, slots=True, repr=False)
class PartialDecryption(_Wire):
    """Holder (or stand-in) -> server: a flooded partial decryption of the sum.

    Attributes:
        share: the :class:`~fedcrypt.he.threshold.DecryptionShare` bytes (its ``party`` is
            the key share it was made with: the holder's own, or the dropped holder's).
    """

    round_id: int
    node: int
    share: bytes
    TYPE: ClassVar[MessageType] = MessageType.PARTIAL_DECRYPTION
    STAGE: ClassVar[Stage] = Stage.DECRYPT

    def _check(self) -> None:
        check_blob(self.share, "share")

    def _body(self) -> bytes:
        return sized(self.share)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "PartialDecryption":
        return cls(round_id, node, read_sized(reader, "decryption share"))

    def _summary(self) -> str:
        return f"share=<{len(self.share)} bytes>"


@dataclass(frozen=True, slots=True, repr=False)
class ReleaseRequest(_Wire):
    """Server -> helper (t-of-n): release your backup piece of holder ``dropped`` to ``stand_in``."""

    round_id: int
    node: int
    dropped: int
    stand_in: int
    TYPE: ClassVar[MessageType] = MessageType.RELEASE_REQUEST
    STAGE: ClassVar[Stage] = Stage.RELEASE

    def _check(self) -> None:
        _check_party(self.dropped, "dropped")
        _check_party(self.stand_in, "stand_in")

    def _body(self) -> bytes:
        return _U16.pack(self.dropped) + _U16.pack(self.stand_in)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "ReleaseRequest":
        return cls(round_id, node, reader.u16(), reader.u16())

    def _summary(self) -> str:
        return f"dropped={self.dropped}, stand_in={self.stand_in}"


@dataclass(frozen=True, slots=True, repr=False)
class ReleaseReply(_Wire):
    """Helper -> server: its backup piece of the dropped holder's key share, sealed to the stand-in."""

    round_id: int
    node: int
    backup: SignedBackup
    TYPE: ClassVar[MessageType] = MessageType.RELEASE_REPLY
    STAGE: ClassVar[Stage] = Stage.RELEASE

    def _check(self) -> None:
        if not isinstance(self.backup, SignedBackup):
            raise TypeError(f"backup must be a SignedBackup, got {type(self.backup).__name__}")

    def _body(self) -> bytes:
        return self.backup.to_bytes()

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "ReleaseReply":
        return cls(round_id, node, SignedBackup.read(reader))

    def _summary(self) -> str:
        return f"backup={self.backup!r}"


@dataclass(frozen=True, slots=True, repr=False)
class RecoverRequest(_Wire):
    """Server -> stand-in (t-of-n): rebuild holder ``dropped``'s key share from the released
    backups and partially decrypt the sum with it. Without a roster the sum is ``aggregate``
    (the server's, as in :class:`DecryptRequest`); with a roster ``aggregate`` is empty and
    the stand-in decrypts the sum it made itself at this round's DECRYPT (the set it
    partially decrypted with its own share), so the request carries no upload."""

    round_id: int
    node: int
    dropped: int
    released: tuple[SignedBackup, ...]
    aggregate: bytes = b""
    TYPE: ClassVar[MessageType] = MessageType.RECOVER_REQUEST
    STAGE: ClassVar[Stage] = Stage.RECOVER

    def _check(self) -> None:
        _check_party(self.dropped, "dropped")
        _check_backups(self.released)
        check_blob(self.aggregate, "aggregate")

    def _body(self) -> bytes:
        return _U16.pack(self.dropped) + _backups_body(self.released) + sized(self.aggregate)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "RecoverRequest":
        dropped = reader.u16()
        released = _read_backups(reader)
        return cls(round_id, node, dropped, released, read_sized(reader, "aggregate"))

    def _summary(self) -> str:
        return f"dropped={self.dropped}, released={len(self.released)}, aggregate=<{len(self.aggregate)} bytes>"


Message = Union[
    KeygenRequest,
    KeygenReply,
    JointRequest,
    JointReply,
    BackupRequest,
    BackupReply,
    EncryptRequest,
    Upload,
    ConfirmRequest,
    Confirmation,
    DecryptRequest,
    PartialDecryption,
    ReleaseRequest,
    ReleaseReply,
    RecoverRequest,
    SumPart,
    SumAck,
]
MESSAGE_CLASSES: tuple[type[Message], ...] = (
    KeygenRequest,
    KeygenReply,
    JointRequest,
    JointReply,
    BackupRequest,
    BackupReply,
    EncryptRequest,
    Upload,
    ConfirmRequest,
    Confirmation,
    DecryptRequest,
    PartialDecryption,
    ReleaseRequest,
    ReleaseReply,
    RecoverRequest,
    SumPart,
    SumAck,
)
_BY_TYPE: dict[int, type[Message]] = {cls.TYPE: cls for cls in MESSAGE_CLASSES}


def decode_message(data: bytes) -> Message:
    """Decode any threshold round message by its type byte.

    Raises:
        MalformedMessageError: truncated, unknown type, or a body that does not decode.
    """
    return decode_by_type(data, _BY_TYPE, "threshold round message")
