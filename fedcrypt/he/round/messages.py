"""Messages of the single-key CKKS round: one frozen, slotted dataclass per protocol step,
canonical bytes, strict decoders.

Wire format of every message (big-endian)::

    magic "FCHR" (4) | version (1) | type (1) | round (8) | node (8) | body

``node`` is the sender of a node-to-server message and the recipient of a
server-to-node message (node ids are a transport's 64-bit ids). Bodies, per type::

    ContextRequest   (empty)
    ContextReply     context (u64-sized, empty without a key) | x25519 (u8-sized, 0 or 32)
                     | member (u8-sized ASCII, empty without a roster) | signature (u8-sized, 0 or 64)
    DealRequest      peers: u32 count, (u32-sized ContextReply bytes) each
    DealReply        context (u64-sized) | x25519 (32) | member | signature
                     | sealed: u32 count, (node u64 | u64-sized sealed key) each
    InstallRequest   dealer u64 | dealer member | dealer x25519 (32) | fingerprint (32)
                     | peers (as in DealRequest) | sealed key (u64-sized) | dealer signature (u8-sized)
    InstallReply     context (u64-sized)
    EncryptRequest   fingerprint (32)
    Upload           blob (u64-sized) | member | signature
    ConfirmRequest   entries: u32 count, (member | node u64 | upload digest 32) each
    Confirmation     member | signature (64)
    DecryptRequest   aggregate (u64-sized, empty with a roster)
                     | uploads: u32 count, (u64-sized Upload bytes | u8-sized confirmation) each
                     | part u32 (0: the uploads are the whole set; k > 0: the last part of a stream)
    Decryption       count u64 | count float64 values, little-endian
    SumPart          index u32 | entries (as in ConfirmRequest; only in part 0)
                     | uploads (as in DecryptRequest)
    SumAck           index u32

Invariants:

* ``from_bytes`` checks magic, version, type, every length against a cap and against the
  bytes that remain before it reads or allocates anything, and that no byte is left over;
  any failure is a :class:`~fedcrypt.errors.MalformedMessageError`. Ciphertexts, contexts
  and sealed keys stay opaque bytes here: the receiving object checks them in Python
  (:func:`fedcrypt.he.blob.decode_blob`, :mod:`fedcrypt.he._seal`) before SEAL sees them.
* ``from_bytes(m.to_bytes()) == m`` for every message ``m``, and a message has one encoding.
* The decoders check structure only; who may send what (distinct members, the right round,
  valid signatures) is the receiving object's check, so a test can build any message a
  malicious server could send.
* ``repr`` shows sizes, never a blob, a sealed key or a decrypted value.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Union

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.he._round_common import (
    DIGEST_BYTES,
    HEADER,
    KEY_BYTES,
    MAX_NODES,
    SIGNATURE_BYTES,
    ConfirmationBody,
    ConfirmedUploadBase,
    ConfirmRequestBody,
    DecryptRequestBody,
    EncryptRequestBody,
    SumAckBody,
    SumPartBody,
    WireMessage,
    decode_by_type,
)
from fedcrypt.he._round_common import (
    MAX_MEMBER as _MAX_MEMBER,
)
from fedcrypt.he._round_common import (
    check_blob as _check_blob,
)
from fedcrypt.he._round_common import (
    check_bytes as _check_bytes,
)
from fedcrypt.he._round_common import (
    check_id as _check_id,
)
from fedcrypt.he._round_common import (
    check_member as _check_member,
)
from fedcrypt.he._round_common import (
    check_tuple as _check_tuple,
)
from fedcrypt.he._round_common import (
    name_bytes as _member,
)
from fedcrypt.he._round_common import (
    read_member as _read_member,
)
from fedcrypt.he._round_common import (
    read_short as _read_short,
)
from fedcrypt.he._round_common import (
    read_sized as _read_sized,
)
from fedcrypt.he._round_common import (
    short as _short,
)
from fedcrypt.he._round_common import (
    sized as _sized,
)
from fedcrypt.he.blob import MAX_VALUES

__all__ = [
    "Stage",
    "MessageType",
    "ContextRequest",
    "ContextReply",
    "DealRequest",
    "DealReply",
    "InstallRequest",
    "InstallReply",
    "EncryptRequest",
    "Upload",
    "ConfirmRequest",
    "Confirmation",
    "ConfirmedUpload",
    "DecryptRequest",
    "Decryption",
    "SumPart",
    "SumAck",
    "Message",
    "decode_message",
    "MAX_NODES",
]

MAGIC = b"FCHR"
VERSION = 1
#: a public context: magic, version, kind, sized parameters (at most 256 bytes), key id
_MAX_CONTEXT = 8 + 256 + 32
_MAX_NESTED_REPLY = HEADER.size + 8 + _MAX_CONTEXT + 1 + KEY_BYTES + 1 + _MAX_MEMBER + 1 + SIGNATURE_BYTES
_U64 = struct.Struct(">Q")


class Stage(enum.IntEnum):
    """The stages of a round, in order; DEAL and INSTALL run only in the in-band key set-up,
    CONFIRM only with a roster. A node listed under a stage in :func:`~fedcrypt.he.round.simulate`'s
    ``dropouts`` drops before it answers that stage's request."""

    CONTEXT = 1
    DEAL = 2
    INSTALL = 3
    ENCRYPT = 4
    CONFIRM = 5
    DECRYPT = 6
    DONE = 7
    ABORTED = 8


class MessageType(enum.IntEnum):
    """Wire type byte."""

    CONTEXT_REQUEST = 1
    CONTEXT_REPLY = 2
    DEAL_REQUEST = 3
    DEAL_REPLY = 4
    INSTALL_REQUEST = 5
    INSTALL_REPLY = 6
    ENCRYPT_REQUEST = 7
    UPLOAD = 8
    CONFIRM_REQUEST = 9
    CONFIRMATION = 10
    DECRYPT_REQUEST = 11
    DECRYPTION = 12
    SUM_PART = 13
    SUM_ACK = 14


class _Wire(WireMessage):
    """The single-key round's framing (magic ``FCHR``, version 1); see :class:`WireMessage`."""

    __slots__ = ()
    MAGIC: ClassVar[bytes] = MAGIC
    VERSION: ClassVar[int] = VERSION
    TYPE: ClassVar[MessageType]
    STAGE: ClassVar[Stage]


# ------------------------------------------------------------------------------ key set-up
@dataclass(frozen=True, slots=True, repr=False)
class ContextRequest(_Wire):
    """Server -> node: report your CKKS context, or ask for a key."""

    round_id: int
    node: int
    TYPE: ClassVar[MessageType] = MessageType.CONTEXT_REQUEST
    STAGE: ClassVar[Stage] = Stage.CONTEXT

    def _body(self) -> bytes:
        return b""

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "ContextRequest":
        return cls(round_id, node)


@dataclass(frozen=True, slots=True, repr=False)
class ContextReply(_Wire):
    """Node -> server: the public context of the key it holds, or a fresh X25519 key to receive one.

    Attributes:
        context: :meth:`~fedcrypt.he.AggregatorContext.to_bytes` of the node's key (empty
            when it has none).
        x25519: the node's fresh X25519 public key (empty when it has a key).
        member: the node's roster name (empty without a roster).
        signature: with a roster, the node's Ed25519 signature of the advert statement.
    """

    round_id: int
    node: int
    context: bytes
    x25519: bytes
    member: str = ""
    signature: bytes = b""
    TYPE: ClassVar[MessageType] = MessageType.CONTEXT_REPLY
    STAGE: ClassVar[Stage] = Stage.CONTEXT

    def _check(self) -> None:
        _check_blob(self.context, "context")
        if len(self.context) > _MAX_CONTEXT:
            raise ValueError(f"a public context is at most {_MAX_CONTEXT} bytes")
        _check_bytes(self.x25519, (0, KEY_BYTES), "x25519")
        _check_member(self.member)
        _check_bytes(self.signature, (0, SIGNATURE_BYTES), "signature")

    def _body(self) -> bytes:
        return _sized(self.context) + _short(self.x25519) + _member(self.member) + _short(self.signature)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "ContextReply":
        context = _read_sized(reader, "context", _MAX_CONTEXT)
        x25519 = _read_short(reader, (0, KEY_BYTES), "x25519 key")
        member = _read_member(reader)
        signature = _read_short(reader, (0, SIGNATURE_BYTES), "signature")
        return cls(round_id, node, context, x25519, member, signature)

    def _summary(self) -> str:
        what = f"context=<{len(self.context)} bytes>" if self.context else "x25519=<32 bytes>"
        return f"{what}, member={self.member!r}, signed={bool(self.signature)}"


def _peers_body(peers: tuple[ContextReply, ...]) -> bytes:
    parts = [struct.pack(">I", len(peers))]
    for peer in peers:
        raw = peer.to_bytes()
        parts.append(struct.pack(">I", len(raw)) + raw)
    return b"".join(parts)


def _read_peers(reader: Reader) -> tuple[ContextReply, ...]:
    count = reader.count(4 + HEADER.size, MAX_NODES, "peer count")
    peers = []
    for _ in range(count):
        raw = reader.sized(_MAX_NESTED_REPLY, "peer advert", width=4)
        peers.append(ContextReply.from_bytes(raw))
    return tuple(peers)


@dataclass(frozen=True, slots=True, repr=False)
class DealRequest(_Wire):
    """Server -> dealer: generate the key and seal it to these peers (their CONTEXT replies, relayed)."""

    round_id: int
    node: int
    peers: tuple[ContextReply, ...]
    TYPE: ClassVar[MessageType] = MessageType.DEAL_REQUEST
    STAGE: ClassVar[Stage] = Stage.DEAL

    def _check(self) -> None:
        _check_tuple(self.peers, ContextReply, "peers")

    def _body(self) -> bytes:
        return _peers_body(self.peers)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "DealRequest":
        return cls(round_id, node, _read_peers(reader))

    def _summary(self) -> str:
        return f"peers={len(self.peers)}"


@dataclass(frozen=True, slots=True, repr=False)
class DealReply(_Wire):
    """Dealer -> server: the new key's public context, the dealer's X25519 key, one sealed key per peer.

    Attributes:
        sealed: ``(peer node, sealed key)`` in the order of the request's peers
            (:func:`fedcrypt.he.seal_key_for_peer`).
        signature: with a roster, the dealer's signature of the deal statement (its
            X25519 key, the fingerprint and the peers' adverts).
    """

    round_id: int
    node: int
    context: bytes
    x25519: bytes
    sealed: tuple[tuple[int, bytes], ...]
    member: str = ""
    signature: bytes = b""
    TYPE: ClassVar[MessageType] = MessageType.DEAL_REPLY
    STAGE: ClassVar[Stage] = Stage.DEAL

    def _check(self) -> None:
        _check_blob(self.context, "context")
        if len(self.context) > _MAX_CONTEXT:
            raise ValueError(f"a public context is at most {_MAX_CONTEXT} bytes")
        _check_bytes(self.x25519, (KEY_BYTES,), "x25519")
        _check_tuple(self.sealed, tuple, "sealed")
        for entry in self.sealed:
            if len(entry) != 2:
                raise TypeError("sealed entries are (node, bytes) pairs")
            _check_id(entry[0], "a sealed entry's node")
            _check_blob(entry[1], "a sealed key")
        _check_member(self.member)
        _check_bytes(self.signature, (0, SIGNATURE_BYTES), "signature")

    def _body(self) -> bytes:
        sealed = b"".join(_U64.pack(node) + _sized(blob) for node, blob in self.sealed)
        return _sized(self.context) + self.x25519 + _member(self.member) + _short(self.signature) + struct.pack(">I", len(self.sealed)) + sealed

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "DealReply":
        context = _read_sized(reader, "context", _MAX_CONTEXT)
        x25519 = reader.take(KEY_BYTES)
        member = _read_member(reader)
        signature = _read_short(reader, (0, SIGNATURE_BYTES), "signature")
        count = reader.count(16, MAX_NODES, "sealed count")
        sealed = tuple((reader.u64(), _read_sized(reader, "sealed key")) for _ in range(count))
        return cls(round_id, node, context, x25519, sealed, member, signature)

    def _summary(self) -> str:
        return f"context=<{len(self.context)} bytes>, sealed={len(self.sealed)}, member={self.member!r}, signed={bool(self.signature)}"


@dataclass(frozen=True, slots=True, repr=False)
class InstallRequest(_Wire):
    """Server -> peer: the key the dealer sealed to it, with the dealer's signed statement.

    Attributes:
        dealer, dealer_member, dealer_x25519: who sealed the key, with which X25519 key.
        fingerprint: the key's context fingerprint (the dealer signed it).
        peers: the adverts the dealer sealed to (its statement covers them).
        sealed: this peer's sealed key.
        signature: with a roster, the dealer's signature of the deal statement.
    """

    round_id: int
    node: int
    dealer: int
    dealer_member: str
    dealer_x25519: bytes
    fingerprint: bytes
    peers: tuple[ContextReply, ...]
    sealed: bytes
    signature: bytes = b""
    TYPE: ClassVar[MessageType] = MessageType.INSTALL_REQUEST
    STAGE: ClassVar[Stage] = Stage.INSTALL

    def _check(self) -> None:
        _check_id(self.dealer, "dealer")
        _check_member(self.dealer_member)
        _check_bytes(self.dealer_x25519, (KEY_BYTES,), "dealer_x25519")
        _check_bytes(self.fingerprint, (DIGEST_BYTES,), "fingerprint")
        _check_tuple(self.peers, ContextReply, "peers")
        _check_blob(self.sealed, "sealed")
        _check_bytes(self.signature, (0, SIGNATURE_BYTES), "signature")

    def _body(self) -> bytes:
        return (
            _U64.pack(self.dealer)
            + _member(self.dealer_member)
            + self.dealer_x25519
            + self.fingerprint
            + _peers_body(self.peers)
            + _sized(self.sealed)
            + _short(self.signature)
        )

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "InstallRequest":
        dealer = reader.u64()
        member = _read_member(reader)
        x25519 = reader.take(KEY_BYTES)
        fingerprint = reader.take(DIGEST_BYTES)
        peers = _read_peers(reader)
        sealed = _read_sized(reader, "sealed key")
        signature = _read_short(reader, (0, SIGNATURE_BYTES), "signature")
        return cls(round_id, node, dealer, member, x25519, fingerprint, peers, sealed, signature)

    def _summary(self) -> str:
        return (
            f"dealer={self.dealer}, dealer_member={self.dealer_member!r}, peers={len(self.peers)}, "
            f"sealed=<{len(self.sealed)} bytes>, signed={bool(self.signature)}"
        )


@dataclass(frozen=True, slots=True, repr=False)
class InstallReply(_Wire):
    """Peer -> server: the public context of the key it installed."""

    round_id: int
    node: int
    context: bytes
    TYPE: ClassVar[MessageType] = MessageType.INSTALL_REPLY
    STAGE: ClassVar[Stage] = Stage.INSTALL

    def _check(self) -> None:
        _check_blob(self.context, "context")
        if len(self.context) > _MAX_CONTEXT:
            raise ValueError(f"a public context is at most {_MAX_CONTEXT} bytes")

    def _body(self) -> bytes:
        return _sized(self.context)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "InstallReply":
        return cls(round_id, node, _read_sized(reader, "context", _MAX_CONTEXT))

    def _summary(self) -> str:
        return f"context=<{len(self.context)} bytes>"


# ------------------------------------------------------------------------------ uploads
@dataclass(frozen=True, slots=True, repr=False)
class EncryptRequest(EncryptRequestBody, _Wire):
    """Server -> key holder: encrypt your update under the key of this fingerprint."""

    round_id: int
    node: int
    fingerprint: bytes
    TYPE: ClassVar[MessageType] = MessageType.ENCRYPT_REQUEST
    STAGE: ClassVar[Stage] = Stage.ENCRYPT


@dataclass(frozen=True, slots=True, repr=False)
class Upload(_Wire):
    """Node -> server: the upload blob of ``w/M * [x, 1]`` (:meth:`fedcrypt.he.KeyOwner.encrypt`).

    Attributes:
        blob: the upload blob; its header names the fingerprint and the layout digest.
        member, signature: with a roster, the node's name and its signature of the upload
            statement (round, fingerprint, node, SHA-256 of the blob, layout digest).
    """

    round_id: int
    node: int
    blob: bytes
    member: str = ""
    signature: bytes = b""
    TYPE: ClassVar[MessageType] = MessageType.UPLOAD
    STAGE: ClassVar[Stage] = Stage.ENCRYPT

    def _check(self) -> None:
        _check_blob(self.blob, "blob")
        _check_member(self.member)
        _check_bytes(self.signature, (0, SIGNATURE_BYTES), "signature")

    def _body(self) -> bytes:
        return _sized(self.blob) + _member(self.member) + _short(self.signature)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "Upload":
        blob = _read_sized(reader, "upload blob")
        member = _read_member(reader)
        signature = _read_short(reader, (0, SIGNATURE_BYTES), "signature")
        return cls(round_id, node, blob, member, signature)

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
    """One signed upload as a decryptor receives it, with its node's confirmation of the set."""

    upload: Upload
    confirmation: bytes
    UPLOAD: ClassVar[type[Upload]] = Upload
    #: the fewest bytes one item takes: u64 size | header | u64 blob size | member u8 | signature u8 | confirmation u8
    MIN_BYTES: ClassVar[int] = 8 + HEADER.size + 8 + 2 + 1


@dataclass(frozen=True, slots=True, repr=False)
class DecryptRequest(DecryptRequestBody, _Wire):
    """Server -> decryptor: what to decrypt.

    Without a roster, ``aggregate``: the server's sum (an aggregate blob). With a roster,
    ``uploads``: the signed uploads and their nodes' confirmations; the decryptor checks
    and sums them itself (a server-made aggregate cannot be told from one relabelled upload).
    ``part`` 0: ``uploads`` are the whole set; ``part`` k > 0: they are the last part of a
    set streamed in :class:`SumPart` messages 0 to k - 1 (the decryptor sums them, then
    decrypts the whole set).
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
    """Server -> decryptor (with a roster): one part of the confirmed set, streamed.

    A set too large for one message goes in parts, so the server holds one part at a time:
    part 0 names the whole set (``entries``, in the order the uploads follow), every part
    carries the next uploads of it with their confirmations, and the last part is a
    :class:`DecryptRequest` with ``part`` set. The decryptor checks and adds each upload as
    it comes and answers a :class:`SumAck`.
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
    """Decryptor -> server: part ``index`` of the set is checked and added."""

    round_id: int
    node: int
    index: int
    TYPE: ClassVar[MessageType] = MessageType.SUM_ACK
    STAGE: ClassVar[Stage] = Stage.DECRYPT


@dataclass(frozen=True, slots=True, repr=False)
class Decryption(_Wire):
    """Decryptor -> server: the flooded decryption of the sum, ``sum w/M * [x, 1]``.

    Attributes:
        total: the values as float64 little-endian bytes (:attr:`values` reads them).
    """

    round_id: int
    node: int
    total: bytes
    TYPE: ClassVar[MessageType] = MessageType.DECRYPTION
    STAGE: ClassVar[Stage] = Stage.DECRYPT

    def _check(self) -> None:
        _check_blob(self.total, "total")
        if not 8 <= len(self.total) <= 8 * (MAX_VALUES + 1) or len(self.total) % 8:
            raise ValueError("total must hold 1 to 2^32 + 1 float64 values")

    @classmethod
    def of(cls, round_id: int, node: int, values: np.ndarray) -> "Decryption":
        """The message for a float vector."""
        return cls(round_id, node, np.ascontiguousarray(values, dtype="<f8").tobytes())

    @property
    def values(self) -> np.ndarray:
        """The decrypted values (float64, read-only)."""
        return np.frombuffer(self.total, dtype="<f8")

    def _body(self) -> bytes:
        return _U64.pack(len(self.total) // 8) + self.total

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> "Decryption":
        count = reader.u64()
        if not 1 <= count <= MAX_VALUES + 1 or 8 * count != reader.remaining:
            raise reader.error(f"{count} values do not match the {reader.remaining} bytes left")
        return cls(round_id, node, reader.take(8 * count))

    def _summary(self) -> str:
        return f"values=<{len(self.total) // 8}>"


Message = Union[
    ContextRequest,
    ContextReply,
    DealRequest,
    DealReply,
    InstallRequest,
    InstallReply,
    EncryptRequest,
    Upload,
    ConfirmRequest,
    Confirmation,
    DecryptRequest,
    Decryption,
    SumPart,
    SumAck,
]
MESSAGE_CLASSES: tuple[type[Message], ...] = (
    ContextRequest,
    ContextReply,
    DealRequest,
    DealReply,
    InstallRequest,
    InstallReply,
    EncryptRequest,
    Upload,
    ConfirmRequest,
    Confirmation,
    DecryptRequest,
    Decryption,
    SumPart,
    SumAck,
)
_BY_TYPE: dict[int, type[Message]] = {cls.TYPE: cls for cls in MESSAGE_CLASSES}


def decode_message(data: bytes) -> Message:
    """Decode any round message by its type byte.

    Raises:
        MalformedMessageError: truncated, unknown type, or a body that does not decode.
    """
    return decode_by_type(data, _BY_TYPE, "CKKS round message")
