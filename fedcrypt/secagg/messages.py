"""SecAgg messages: one frozen, slotted dataclass per protocol step, canonical bytes, strict decoders.

Wire format of every message (big-endian)::

    magic "FCSA" (4) | version (1) | type (1) | round (8) | party (4) | body

``party`` is the sender of a client-to-server message and the recipient of a
server-to-client message. Id lists in a body are strictly increasing, so every message
has exactly one encoding.

Invariants:

* ``from_bytes`` checks magic, version, type, every count against a cap *and* against the
  bytes that remain before it allocates anything, every id range, and that no byte is
  left over; any failure is a :class:`~fedcrypt.errors.MalformedMessageError`.
* ``from_bytes(m.to_bytes()) == m`` for every message ``m``.
* ``repr`` never shows a key share, ciphertext body or masked vector content.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Union

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.crypto import AEAD_OVERHEAD, SHARE_BYTES
from fedcrypt.errors import MalformedMessageError
from fedcrypt.vectors import MAX_PARAMETERS

from .config import MAX_CLIENTS

__all__ = [
    "Stage",
    "MessageType",
    "AdvertiseKeys",
    "KeyDirectory",
    "EncryptedShares",
    "ShareBundle",
    "MaskedInput",
    "SurvivorList",
    "ConsistencySignature",
    "UnmaskRequest",
    "UnmaskShares",
    "Message",
    "decode_message",
    "SHARE_PLAINTEXT_BYTES",
    "SHARE_CIPHERTEXT_BYTES",
]

MAGIC = b"FCSA"
#: 2: masked inputs carry the masking attestation, unmask requests forward them.
VERSION = 2
HEADER = struct.Struct(">4sBBQI")
KEY_BYTES = 32
CONTEXT_BYTES = 32
SIGNATURE_BYTES = 64
COMMITMENT_BYTES = 32
#: owner id (4) | holder id (4) | self-mask-seed share | mask-key share
SHARE_PLAINTEXT_BYTES = 8 + 2 * SHARE_BYTES
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + AEAD_OVERHEAD


class Stage(enum.IntEnum):
    """The protocol steps of Bonawitz et al. 2017 (Fig. 4), plus two terminal states.

    A client listed under a stage in :func:`~fedcrypt.secagg.simulate`'s ``dropouts`` drops
    before it sends that stage's message.
    """

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CONSISTENCY_CHECK = 3
    UNMASK = 4
    DONE = 5
    ABORTED = 6


class MessageType(enum.IntEnum):
    """Wire type byte."""

    ADVERTISE_KEYS = 1
    KEY_DIRECTORY = 2
    ENCRYPTED_SHARES = 3
    SHARE_BUNDLE = 4
    MASKED_INPUT = 5
    SURVIVOR_LIST = 6
    CONSISTENCY_SIGNATURE = 7
    UNMASK_REQUEST = 8
    UNMASK_SHARES = 9


# ------------------------------------------------------------------------------ helpers
def _check_ids(values: tuple[int, ...], what: str, limit: int = MAX_CLIENTS) -> None:
    if values and (values[-1] >= limit or not all(a < b for a, b in zip(values, values[1:]))):
        raise MalformedMessageError(f"{what}: client ids must be strictly increasing and below {limit}")


def _header(kind: MessageType, round_id: int, party: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, round_id, party)


def _open(data: bytes | bytearray | memoryview, kind: MessageType, what: str) -> tuple[Reader, int, int]:
    reader = Reader(data, what)  # TypeError for anything but bytes
    if reader.remaining < HEADER.size:
        raise reader.error(f"shorter than the {HEADER.size}-byte header")
    magic, version, code, round_id, party = reader.unpack(HEADER)
    if magic != MAGIC:
        raise reader.error("bad magic")
    if version != VERSION:
        raise reader.error(f"unsupported version {version}")
    if code != kind:
        raise reader.error(f"type byte {code}, expected {int(kind)}")
    if party >= MAX_CLIENTS:
        raise reader.error(f"party id {party} out of range")
    return reader, round_id, party


def _read_ids(reader: Reader) -> tuple[int, ...]:
    """A counted list of strictly increasing client ids."""
    count = reader.count(4, MAX_CLIENTS)
    values: tuple[int, ...] = reader.unpack(f">{count}I")
    _check_ids(values, reader.what)
    return values


def _check_common(round_id: int, party: int) -> None:
    if not isinstance(round_id, int) or isinstance(round_id, bool) or not 0 <= round_id < 1 << 64:
        raise ValueError(f"round_id must be an integer in [0, 2^64), got {round_id!r}")
    if not isinstance(party, int) or isinstance(party, bool) or not 0 <= party < MAX_CLIENTS:
        raise ValueError(f"party id must be an integer in [0, {MAX_CLIENTS}), got {party!r}")


def _check_bytes(value: object, size: int, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"{name} must be {size} bytes")


def _check_sorted(values: tuple[int, ...], name: str) -> None:
    if not isinstance(values, tuple):
        raise TypeError(f"{name} must be a tuple")
    if not values:
        return
    if not all(type(v) is int for v in values) or values[0] < 0 or values[-1] >= MAX_CLIENTS or not all(a < b for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly increasing client ids below {MAX_CLIENTS}")


def _check_pairs(pairs: tuple[tuple[int, bytes], ...], size: int, name: str) -> None:
    if not isinstance(pairs, tuple) or any(not isinstance(p, tuple) or len(p) != 2 for p in pairs):
        raise TypeError(f"{name} must be a tuple of (client id, bytes) pairs")
    _check_sorted(tuple(p[0] for p in pairs), f"{name} ids")
    for _, blob in pairs:
        _check_bytes(blob, size, f"each entry of {name}")


def _pairs_bytes(pairs: tuple[tuple[int, bytes], ...]) -> bytes:
    return struct.pack(">I", len(pairs)) + b"".join(struct.pack(">I", i) + blob for i, blob in pairs)


def _read_keyed(reader: Reader, entry_bytes: int, label: str, read_value: Callable[[Reader], Any]) -> list[tuple[int, Any]]:
    """A counted list of (strictly increasing client id, value) entries of at least ``entry_bytes`` each."""
    count = reader.count(entry_bytes, MAX_CLIENTS)
    entries = []
    previous = -1
    for _ in range(count):
        ident = reader.u32()
        if ident <= previous or ident >= MAX_CLIENTS:
            raise reader.error(f"{label} ids must be strictly increasing")
        previous = ident
        entries.append((ident, read_value(reader)))
    return entries


def _read_pairs(reader: Reader, size: int) -> tuple[tuple[int, bytes], ...]:
    """A counted list of (strictly increasing client id, ``size`` bytes) entries.

    The entries have one fixed size, so the count is checked against the bytes left, the
    block is taken at once and split by ``struct`` (one pass, not two reads per entry)."""
    count = reader.count(4 + size, MAX_CLIENTS)
    entries = tuple(struct.iter_unpack(f">I{size}s", reader.view(count * (4 + size))))
    previous = -1
    for ident, _ in entries:
        if ident <= previous or ident >= MAX_CLIENTS:
            raise reader.error("client ids must be strictly increasing")
        previous = ident
    return entries


def _ids_bytes(ids: tuple[int, ...]) -> bytes:
    return struct.pack(f">I{len(ids)}I", len(ids), *ids)


#: One survivor's masking attestation as an unmask request forwards it:
#: ``(client, skipped neighbours, Ed25519 signature)``.
Attestation = tuple[int, tuple[int, ...], bytes]


def _check_attestations(entries: tuple[Attestation, ...]) -> None:
    if not isinstance(entries, tuple) or any(not isinstance(e, tuple) or len(e) != 3 for e in entries):
        raise TypeError("attestations must be a tuple of (client id, skipped ids, signature) triples")
    _check_sorted(tuple(e[0] for e in entries), "attestation ids")
    for _, skipped, signature in entries:
        _check_sorted(skipped, "skipped")
        _check_bytes(signature, SIGNATURE_BYTES, "each attestation signature")


def _attestations_bytes(entries: tuple[Attestation, ...]) -> bytes:
    return struct.pack(">I", len(entries)) + b"".join(struct.pack(">I", i) + _ids_bytes(skipped) + signature for i, skipped, signature in entries)


def _read_attestations(reader: Reader) -> tuple[Attestation, ...]:
    entries = _read_keyed(reader, 4 + 4 + SIGNATURE_BYTES, "attestation", lambda r: (_read_ids(r), r.take(SIGNATURE_BYTES)))
    return tuple((ident, skipped, signature) for ident, (skipped, signature) in entries)


# ------------------------------------------------------------------------------ messages
@dataclass(frozen=True, slots=True)
class AdvertiseKeys:
    """Round 0, client -> server: two X25519 public keys, the round context, an optional signature.

    ``cipher_public_key`` encrypts shares (``c^PK``), ``mask_public_key`` derives pairwise
    masks (``s^PK``). ``context`` is SHA-256 of the config and the caller's associated data;
    ``signature`` (Ed25519, empty unless ``verify_survivors``) covers all of the above.
    """

    round_id: int
    sender: int
    cipher_public_key: bytes
    mask_public_key: bytes
    context: bytes
    signature: bytes = b""

    STAGE: ClassVar[Stage] = Stage.ADVERTISE_KEYS
    TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_KEYS
    FROM_CLIENT: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self.round_id, self.sender)
        _check_bytes(self.cipher_public_key, KEY_BYTES, "cipher_public_key")
        _check_bytes(self.mask_public_key, KEY_BYTES, "mask_public_key")
        _check_bytes(self.context, CONTEXT_BYTES, "context")
        if self.signature != b"":
            _check_bytes(self.signature, SIGNATURE_BYTES, "signature")

    @property
    def party(self) -> int:
        """The sender."""
        return self.sender

    def signed_bytes(self) -> bytes:
        """What the Ed25519 signature covers: everything but the signature."""
        return _header(self.TYPE, self.round_id, self.sender) + self._keys()

    def _keys(self) -> bytes:
        return self.cipher_public_key + self.mask_public_key + self.context

    def _entry(self) -> bytes:
        return struct.pack(">I", self.sender) + self._keys() + struct.pack(">B", len(self.signature)) + self.signature

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return _header(self.TYPE, self.round_id, self.sender) + self._keys() + struct.pack(">B", len(self.signature)) + self.signature

    @classmethod
    def _read_entry(cls, reader: Reader, round_id: int, sender: int | None = None) -> "AdvertiseKeys":
        if sender is None:
            sender = reader.u32()
            if sender >= MAX_CLIENTS:
                raise reader.error("client id out of range")
        cipher, mask, context = reader.take(KEY_BYTES), reader.take(KEY_BYTES), reader.take(CONTEXT_BYTES)
        sig_len = reader.u8()
        if sig_len not in (0, SIGNATURE_BYTES):
            raise reader.error(f"signature length {sig_len}")
        return cls(round_id, sender, cipher, mask, context, reader.take(sig_len))

    @classmethod
    def from_bytes(cls, data: bytes) -> "AdvertiseKeys":
        """Strict decoder."""
        reader, round_id, sender = _open(data, cls.TYPE, cls.__name__)
        message = cls._read_entry(reader, round_id, sender)
        reader.expect_end()
        return message

    def __repr__(self) -> str:
        return f"AdvertiseKeys(round={self.round_id}, sender={self.sender}, signed={bool(self.signature)})"


_ADVERT_ENTRY_MIN = 4 + 2 * KEY_BYTES + CONTEXT_BYTES + 1


@dataclass(frozen=True, slots=True)
class KeyDirectory:
    """Round 1 request, server -> client: the advertised keys of the recipient's neighbourhood."""

    round_id: int
    recipient: int
    adverts: tuple[AdvertiseKeys, ...]

    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    TYPE: ClassVar[MessageType] = MessageType.KEY_DIRECTORY
    FROM_CLIENT: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_common(self.round_id, self.recipient)
        if not isinstance(self.adverts, tuple) or any(not isinstance(a, AdvertiseKeys) for a in self.adverts):
            raise TypeError("adverts must be a tuple of AdvertiseKeys")
        _check_sorted(tuple(a.sender for a in self.adverts), "adverts senders")
        if any(a.round_id != self.round_id for a in self.adverts):
            raise ValueError("every advert must be for the directory's round")

    @property
    def party(self) -> int:
        """The recipient."""
        return self.recipient

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return b"".join(
            [_header(self.TYPE, self.round_id, self.recipient), struct.pack(">I", len(self.adverts))] + [a._entry() for a in self.adverts]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "KeyDirectory":
        """Strict decoder."""
        reader, round_id, recipient = _open(data, cls.TYPE, cls.__name__)
        count = reader.count(_ADVERT_ENTRY_MIN, MAX_CLIENTS)
        adverts = tuple(AdvertiseKeys._read_entry(reader, round_id) for _ in range(count))
        reader.expect_end()
        _check_ids(tuple(a.sender for a in adverts), cls.__name__)
        return cls(round_id, recipient, adverts)

    def __repr__(self) -> str:
        return f"KeyDirectory(round={self.round_id}, recipient={self.recipient}, adverts={len(self.adverts)})"


@dataclass(frozen=True, slots=True)
class EncryptedShares:
    """Round 1 reply, client -> server: AES-GCM ciphertexts of the sender's shares, one per holder."""

    round_id: int
    sender: int
    ciphertexts: tuple[tuple[int, bytes], ...]

    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    TYPE: ClassVar[MessageType] = MessageType.ENCRYPTED_SHARES
    FROM_CLIENT: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self.round_id, self.sender)
        _check_pairs(self.ciphertexts, SHARE_CIPHERTEXT_BYTES, "ciphertexts")

    @property
    def party(self) -> int:
        """The sender."""
        return self.sender

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return _header(self.TYPE, self.round_id, self.sender) + _pairs_bytes(self.ciphertexts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "EncryptedShares":
        """Strict decoder."""
        reader, round_id, sender = _open(data, cls.TYPE, cls.__name__)
        pairs = _read_pairs(reader, SHARE_CIPHERTEXT_BYTES)
        reader.expect_end()
        return cls(round_id, sender, pairs)

    def __repr__(self) -> str:
        return f"EncryptedShares(round={self.round_id}, sender={self.sender}, ciphertexts={len(self.ciphertexts)})"


@dataclass(frozen=True, slots=True)
class ShareBundle:
    """Round 2 request, server -> client: the ciphertexts addressed to the recipient, by sender.

    The set of senders is the recipient's view of ``U2``, the clients that shared keys.
    """

    round_id: int
    recipient: int
    ciphertexts: tuple[tuple[int, bytes], ...]

    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    TYPE: ClassVar[MessageType] = MessageType.SHARE_BUNDLE
    FROM_CLIENT: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_common(self.round_id, self.recipient)
        _check_pairs(self.ciphertexts, SHARE_CIPHERTEXT_BYTES, "ciphertexts")

    @property
    def party(self) -> int:
        """The recipient."""
        return self.recipient

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return _header(self.TYPE, self.round_id, self.recipient) + _pairs_bytes(self.ciphertexts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ShareBundle":
        """Strict decoder."""
        reader, round_id, recipient = _open(data, cls.TYPE, cls.__name__)
        pairs = _read_pairs(reader, SHARE_CIPHERTEXT_BYTES)
        reader.expect_end()
        return cls(round_id, recipient, pairs)

    def __repr__(self) -> str:
        return f"ShareBundle(round={self.round_id}, recipient={self.recipient}, ciphertexts={len(self.ciphertexts)})"


@dataclass(frozen=True, slots=True, eq=False)
class MaskedInput:
    """Round 2 reply, client -> server: ``y_u = x_u + PRG(b_u) + sum_v +-PRG(s_uv)`` in Z_(2^bits).

    ``vector`` is a read-only little-endian uint32/uint64 array; ``self_mask_commitment`` is
    SHA-256 of ``b_u`` bound to the round context and the sender, so the server can check
    the self-mask seed it reconstructs from shares (a corrupted share set then aborts the
    round instead of yielding a wrong sum).

    ``skipped`` are the sender's neighbours it did *not* mask with (their share ciphertexts
    never reached it); with ``verify_survivors``, ``attestation`` is the sender's Ed25519
    signature over (round, context, sender, ``skipped``), which the server forwards to the
    sender's share holders: they reveal its self-mask share only if the attestation shows
    that it masked with at least ``t - 1`` survivors (the *masking attestation*, see
    :class:`~fedcrypt.secagg.ClientProtocol`). Upload: ``bits/8`` bytes per parameter plus
    a 64-byte constant (128 with the attestation) and 4 bytes per skipped neighbour.
    """

    round_id: int
    sender: int
    vector: np.ndarray = field(repr=False)
    self_mask_commitment: bytes = field(repr=False)
    skipped: tuple[int, ...] = ()
    attestation: bytes = field(default=b"", repr=False)

    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    TYPE: ClassVar[MessageType] = MessageType.MASKED_INPUT
    FROM_CLIENT: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self.round_id, self.sender)
        v = self.vector
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype not in (np.dtype("<u4"), np.dtype("<u8")):
            raise TypeError("vector must be a 1-D little-endian uint32 or uint64 numpy array")
        _check_bytes(self.self_mask_commitment, COMMITMENT_BYTES, "self_mask_commitment")
        _check_sorted(self.skipped, "skipped")
        if not isinstance(self.attestation, bytes) or len(self.attestation) not in (0, SIGNATURE_BYTES):
            raise ValueError(f"attestation must be empty or {SIGNATURE_BYTES} bytes")

    @property
    def party(self) -> int:
        """The sender."""
        return self.sender

    @property
    def bits(self) -> int:
        """32 or 64."""
        return self.vector.dtype.itemsize * 8

    def to_bytes(self) -> bytes:
        """Canonical encoding: header, commitment (32), skipped ids, attestation length (1) and
        bytes, bits (1), length (8), the raw little-endian elements."""
        head = (
            _header(self.TYPE, self.round_id, self.sender)
            + self.self_mask_commitment
            + _ids_bytes(self.skipped)
            + struct.pack(">B", len(self.attestation))
            + self.attestation
            + struct.pack(">BQ", self.bits, self.vector.shape[0])
        )
        body = np.ascontiguousarray(self.vector).data.cast("B")  # .data: the array's buffer as a memoryview
        return b"".join((head, body))  # one copy of the vector, not two

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_length: int | None = None) -> "MaskedInput":
        """Strict decoder; the vector is a read-only zero-copy view of ``data``.

        Args:
            data: the encoding.
            expected_length: if given, any other length is refused before anything else.
        """
        reader, round_id, sender = _open(data, cls.TYPE, cls.__name__)
        commitment = reader.take(COMMITMENT_BYTES)
        skipped = _read_ids(reader)
        signature_length = reader.u8()
        if signature_length not in (0, SIGNATURE_BYTES):
            raise reader.error(f"attestation of {signature_length} bytes")
        attestation = reader.take(signature_length)
        bits, length = reader.unpack(">BQ")
        if bits not in (32, 64):
            raise reader.error(f"bits {bits} not in (32, 64)")
        if length > MAX_PARAMETERS or (expected_length is not None and length != expected_length):
            raise reader.error(f"length {length} is not the expected length or exceeds the cap")
        if reader.remaining != length * (bits // 8):
            raise reader.error(f"{reader.remaining} payload bytes for {length} elements of {bits} bits")
        vector = np.frombuffer(reader.view(reader.remaining), dtype="<u4" if bits == 32 else "<u8", count=length)
        vector.flags.writeable = False
        return cls(round_id, sender, vector, commitment, skipped, attestation)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskedInput):
            return NotImplemented
        return (
            self.round_id == other.round_id
            and self.sender == other.sender
            and self.self_mask_commitment == other.self_mask_commitment
            and self.skipped == other.skipped
            and self.attestation == other.attestation
            and self.vector.dtype == other.vector.dtype
            and np.array_equal(self.vector, other.vector)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MaskedInput(round={self.round_id}, sender={self.sender}, bits={self.bits}, length={self.vector.shape[0]})"


@dataclass(frozen=True, slots=True)
class SurvivorList:
    """Round 3 request (``verify_survivors``), server -> client: ``U3``, who sent a masked input."""

    round_id: int
    recipient: int
    survivors: tuple[int, ...]

    STAGE: ClassVar[Stage] = Stage.CONSISTENCY_CHECK
    TYPE: ClassVar[MessageType] = MessageType.SURVIVOR_LIST
    FROM_CLIENT: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_common(self.round_id, self.recipient)
        _check_sorted(self.survivors, "survivors")

    @property
    def party(self) -> int:
        """The recipient."""
        return self.recipient

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return _header(self.TYPE, self.round_id, self.recipient) + _ids_bytes(self.survivors)

    @classmethod
    def from_bytes(cls, data: bytes) -> "SurvivorList":
        """Strict decoder."""
        reader, round_id, recipient = _open(data, cls.TYPE, cls.__name__)
        survivors = _read_ids(reader)
        reader.expect_end()
        return cls(round_id, recipient, survivors)


@dataclass(frozen=True, slots=True)
class ConsistencySignature:
    """Round 3 reply, client -> server: Ed25519 signature of (round, context, ``U3``)."""

    round_id: int
    sender: int
    signature: bytes = field(repr=False)

    STAGE: ClassVar[Stage] = Stage.CONSISTENCY_CHECK
    TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_SIGNATURE
    FROM_CLIENT: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self.round_id, self.sender)
        _check_bytes(self.signature, SIGNATURE_BYTES, "signature")

    @property
    def party(self) -> int:
        """The sender."""
        return self.sender

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return _header(self.TYPE, self.round_id, self.sender) + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> "ConsistencySignature":
        """Strict decoder."""
        reader, round_id, sender = _open(data, cls.TYPE, cls.__name__)
        signature = reader.take(SIGNATURE_BYTES)
        reader.expect_end()
        return cls(round_id, sender, signature)


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    """Round 4 request, server -> client: who survived (self-mask shares wanted; the whole
    survivor set ``U3``) and who dropped (mask-key shares wanted), with, if
    ``verify_survivors``, consistency signatures on ``U3`` (the honest server sends a quorum
    of them, other signers' first; the client needs and verifies at least a quorum) and the
    masking attestation of every survivor among the recipient's neighbours."""

    round_id: int
    recipient: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: tuple[tuple[int, bytes], ...] = ()
    attestations: tuple[Attestation, ...] = ()

    STAGE: ClassVar[Stage] = Stage.UNMASK
    TYPE: ClassVar[MessageType] = MessageType.UNMASK_REQUEST
    FROM_CLIENT: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_common(self.round_id, self.recipient)
        _check_sorted(self.survivors, "survivors")
        _check_sorted(self.dropped, "dropped")
        _check_pairs(self.signatures, SIGNATURE_BYTES, "signatures")
        _check_attestations(self.attestations)

    @property
    def party(self) -> int:
        """The recipient."""
        return self.recipient

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return (
            _header(self.TYPE, self.round_id, self.recipient)
            + _ids_bytes(self.survivors)
            + _ids_bytes(self.dropped)
            + _pairs_bytes(self.signatures)
            + _attestations_bytes(self.attestations)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "UnmaskRequest":
        """Strict decoder."""
        reader, round_id, recipient = _open(data, cls.TYPE, cls.__name__)
        survivors = _read_ids(reader)
        dropped = _read_ids(reader)
        signatures = _read_pairs(reader, SIGNATURE_BYTES)
        attestations = _read_attestations(reader)
        reader.expect_end()
        return cls(round_id, recipient, survivors, dropped, signatures, attestations)

    def __repr__(self) -> str:
        return (
            f"UnmaskRequest(round={self.round_id}, recipient={self.recipient}, survivors={len(self.survivors)}, "
            f"dropped={len(self.dropped)}, signatures={len(self.signatures)}, attestations={len(self.attestations)})"
        )


@dataclass(frozen=True, slots=True)
class UnmaskShares:
    """Round 4 reply, client -> server: self-mask-seed shares of survivors, mask-key shares of
    dropped clients (each a 68-byte :class:`~fedcrypt.crypto.Share`), never both for one owner."""

    round_id: int
    sender: int
    self_mask_shares: tuple[tuple[int, bytes], ...] = field(repr=False)
    mask_key_shares: tuple[tuple[int, bytes], ...] = field(repr=False)

    STAGE: ClassVar[Stage] = Stage.UNMASK
    TYPE: ClassVar[MessageType] = MessageType.UNMASK_SHARES
    FROM_CLIENT: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self.round_id, self.sender)
        _check_pairs(self.self_mask_shares, SHARE_BYTES, "self_mask_shares")
        _check_pairs(self.mask_key_shares, SHARE_BYTES, "mask_key_shares")

    @property
    def party(self) -> int:
        """The sender."""
        return self.sender

    def to_bytes(self) -> bytes:
        """Canonical encoding."""
        return _header(self.TYPE, self.round_id, self.sender) + _pairs_bytes(self.self_mask_shares) + _pairs_bytes(self.mask_key_shares)

    @classmethod
    def from_bytes(cls, data: bytes) -> "UnmaskShares":
        """Strict decoder."""
        reader, round_id, sender = _open(data, cls.TYPE, cls.__name__)
        self_mask = _read_pairs(reader, SHARE_BYTES)
        mask_key = _read_pairs(reader, SHARE_BYTES)
        reader.expect_end()
        return cls(round_id, sender, self_mask, mask_key)

    def __repr__(self) -> str:
        return (
            f"UnmaskShares(round={self.round_id}, sender={self.sender}, self_mask_shares={len(self.self_mask_shares)}, "
            f"mask_key_shares={len(self.mask_key_shares)})"
        )


Message = Union[
    AdvertiseKeys,
    KeyDirectory,
    EncryptedShares,
    ShareBundle,
    MaskedInput,
    SurvivorList,
    ConsistencySignature,
    UnmaskRequest,
    UnmaskShares,
]

MESSAGE_CLASSES: tuple[type[Message], ...] = (
    AdvertiseKeys,
    KeyDirectory,
    EncryptedShares,
    ShareBundle,
    MaskedInput,
    SurvivorList,
    ConsistencySignature,
    UnmaskRequest,
    UnmaskShares,
)
_BY_TYPE: dict[int, type[Message]] = {cls.TYPE: cls for cls in MESSAGE_CLASSES}


def decode_message(data: bytes) -> Message:
    """Decode any SecAgg message by its type byte.

    Raises:
        MalformedMessageError: unknown type or any decoder check.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    if len(data) < HEADER.size:
        raise MalformedMessageError(f"message shorter than the {HEADER.size}-byte header")
    code = data[5]
    if code not in _BY_TYPE:
        raise MalformedMessageError(f"unknown message type {code}")
    return _BY_TYPE[code].from_bytes(data)
