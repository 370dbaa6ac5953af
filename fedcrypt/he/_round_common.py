"""What the CKKS round protocols share: message framing, signed-statement helpers and the
checks a node applies to a set of uploads it is asked to confirm.

:mod:`fedcrypt.he.round` (single key) and :mod:`fedcrypt.he.threshold.round` (threshold key)
frame their messages alike (each with its own magic, version and type numbers), sign
their statements alike (each under its own label) and confirm the summed set alike; this
module is that common part, so the two protocols read, sign and check in one way.

Wire header of every round message (big-endian)::

    magic (4) | version (1) | type (1) | round (8) | node (8) | body

Invariants:

* a :class:`WireMessage` decoder checks magic, version and type before the body, every
  length against a cap and the bytes left before it reads or allocates, and that no byte
  is left over; any failure is a :class:`~fedcrypt.errors.MalformedMessageError`;
* ``repr`` of a message shows sizes and public fields only (each class's ``_summary``);
* every signed statement starts with a label naming the protocol and its purpose, so no
  statement of one kind, protocol, roster or round verifies as another;
* the set digest is canonical: SHA-256 over the entries in increasing member order,
  whatever order a message lists them in.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import struct
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.crypto import ed25519_verify
from fedcrypt.errors import EncodingError, FedcryptError, InvalidSignature, MalformedMessageError
from fedcrypt.identity import Roster
from fedcrypt.vectors import TensorSpec, check_float_vector

__all__ = [
    "HEADER",
    "KEY_BYTES",
    "DIGEST_BYTES",
    "SIGNATURE_BYTES",
    "MAX_MEMBER",
    "MAX_NODES",
    "WireMessage",
    "EncryptRequestBody",
    "ConfirmRequestBody",
    "ConfirmationBody",
    "ConfirmedUploadBase",
    "DecryptRequestBody",
    "SumPartBody",
    "SumAckBody",
    "check_part",
    "uploads_body",
    "read_uploads",
    "decode_by_type",
    "name_bytes",
    "set_digest",
    "verify",
    "check_confirm_entries",
    "verify_confirmations",
    "peer_bytes",
    "layout_digest",
    "weighted_input",
]

HEADER = struct.Struct(">4sBBQQ")
KEY_BYTES = 32
DIGEST_BYTES = 32
SIGNATURE_BYTES = 64
#: the longest member name (as :class:`~fedcrypt.identity.Roster` allows)
MAX_MEMBER = 64
#: the most entries (peers, uploads, backups) one message may list
MAX_NODES = 1 << 20
U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
_LAYOUT_LABEL = b"fedcrypt/he/round-layout/v1"


# ------------------------------------------------------------------------------ field checks
def check_id(value: object, name: str) -> None:
    """``value`` is an int in ``[0, 2^64)`` (not a bool), else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
        raise ValueError(f"{name} must be an integer in [0, 2^64), got {value!r}")


def check_bytes(value: object, sizes: tuple[int, ...], name: str) -> None:
    """``value`` is bytes of one of ``sizes``."""
    if not isinstance(value, bytes) or len(value) not in sizes:
        raise ValueError(f"{name} must be bytes of length {' or '.join(map(str, sizes))}")


def check_blob(value: object, name: str) -> None:
    """``value`` is bytes (any length)."""
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


def check_member(value: object) -> None:
    """``value`` is an ASCII member name of at most :data:`MAX_MEMBER` characters (or empty)."""
    if not isinstance(value, str) or len(value) > MAX_MEMBER or not value.isascii():
        raise ValueError(f"member must be an ASCII string of at most {MAX_MEMBER} characters")


def check_tuple(value: object, kind: type, name: str) -> None:
    """``value`` is a tuple of ``kind`` with at most :data:`MAX_NODES` entries."""
    if not isinstance(value, tuple) or not all(isinstance(v, kind) for v in value):
        raise TypeError(f"{name} must be a tuple of {kind.__name__}")
    if len(value) > MAX_NODES:
        raise ValueError(f"{name} lists more than {MAX_NODES} entries")


# ------------------------------------------------------------------------------ encoders
def name_bytes(member: str) -> bytes:
    """A member name behind its one-byte length."""
    raw = member.encode("ascii")
    return struct.pack(">B", len(raw)) + raw


def short(value: bytes) -> bytes:
    """``value`` behind its one-byte length."""
    return struct.pack(">B", len(value)) + value


def sized(value: bytes) -> bytes:
    """``value`` behind its eight-byte length."""
    return U64.pack(len(value)) + value


# ------------------------------------------------------------------------------ readers
def read_member(reader: Reader) -> str:
    """A member name written by :func:`name_bytes`."""
    raw = reader.sized(MAX_MEMBER, "member name", width=1, allow_empty=True)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise reader.error("a member name is ASCII") from None


def read_short(reader: Reader, sizes: tuple[int, ...], label: str) -> bytes:
    """A byte string written by :func:`short` whose length is one of ``sizes``."""
    size = reader.u8()
    if size not in sizes:
        raise reader.error(f"{label} of {size} bytes (expected {' or '.join(map(str, sizes))})")
    return reader.take(size)


def read_sized(reader: Reader, label: str, cap: int | None = None) -> bytes:
    """A byte string written by :func:`sized`, at most ``cap`` bytes (default: what is left)."""
    limit = reader.remaining if cap is None else cap
    return reader.take(reader.length(limit, label, width=8, allow_empty=True))


def as_view(data: object) -> memoryview:
    """``data`` as a flat byte view, or a TypeError for anything that is not bytes-like."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


# ------------------------------------------------------------------------------ messages
class WireMessage:
    """What every round message shares: id checks, ``repr`` (sizes only), ``to_bytes`` /
    ``from_bytes`` (the header, then :meth:`_body`). A protocol subclasses it once with its
    ``MAGIC`` and ``VERSION``; its messages are dataclasses with ``repr=False``."""

    __slots__ = ()
    MAGIC: ClassVar[bytes]
    VERSION: ClassVar[int]
    TYPE: ClassVar[int]
    STAGE: ClassVar[Any]
    round_id: int
    node: int

    def __post_init__(self) -> None:
        check_id(self.round_id, "round_id")
        check_id(self.node, "node")
        self._check()

    def _check(self) -> None:
        """Check the body's fields (constructor arguments: ``ValueError`` / ``TypeError``)."""

    def _summary(self) -> str:
        """The body for ``repr``: sizes and public fields only."""
        return ""

    def __repr__(self) -> str:
        summary = self._summary()
        return f"{type(self).__name__}(round={self.round_id}, node={self.node}{', ' + summary if summary else ''})"

    def _body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> Any:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Canonical bytes: the header, then the body."""
        return HEADER.pack(self.MAGIC, self.VERSION, self.TYPE, self.round_id, self.node) + self._body()

    @classmethod
    def from_bytes(cls, data: bytes) -> Any:
        """Strictly decode one message of this type.

        Raises:
            MalformedMessageError: truncated, extended, bad magic, version, type or field.
        """
        reader = Reader(as_view(data), cls.__name__)
        if reader.remaining < HEADER.size:
            raise reader.error(f"shorter than the {HEADER.size}-byte header")
        magic, version, code, round_id, node = reader.unpack(HEADER)
        if magic != cls.MAGIC:
            raise reader.error("bad magic")
        if version != cls.VERSION:
            raise reader.error(f"unsupported version {version}")
        if code != cls.TYPE:
            raise reader.error(f"type byte {code}, expected {int(cls.TYPE)}")
        try:
            message = cls._read(reader, round_id, node)
        except (ValueError, TypeError) as exc:  # a decoded field its constructor refuses
            raise MalformedMessageError(f"{cls.__name__}: {exc}") from None
        reader.expect_end()
        return message


def check_entries(entries: object) -> None:
    """A tuple of ``(member, node, SHA-256 of an upload blob)`` triples (constructor check)."""
    check_tuple(entries, tuple, "entries")
    assert isinstance(entries, tuple)
    for entry in entries:
        if len(entry) != 3:
            raise TypeError("entries are (member, node, digest) triples")
        check_member(entry[0])
        check_id(entry[1], "an entry's node")
        check_bytes(entry[2], (DIGEST_BYTES,), "an entry's digest")


def entries_body(entries: tuple[tuple[str, int, bytes], ...]) -> bytes:
    """Wire form of a set's entries: u32 count, (member | node u64 | digest 32) each."""
    body = b"".join(name_bytes(member) + U64.pack(node) + digest for member, node, digest in entries)
    return struct.pack(">I", len(entries)) + body


def read_entries(reader: Reader) -> tuple[tuple[str, int, bytes], ...]:
    """Read :func:`entries_body` (at most ``MAX_NODES`` entries, each checked against the bytes left)."""
    count = reader.count(1 + 8 + DIGEST_BYTES, MAX_NODES, "entry count")
    return tuple((read_member(reader), reader.u64(), reader.take(DIGEST_BYTES)) for _ in range(count))


class EncryptRequestBody:
    """The body of a protocol's ``EncryptRequest`` (server -> key holder): the ``fingerprint``
    of the key to encrypt under. Wire: fingerprint (32)."""

    __slots__ = ()
    fingerprint: bytes

    def _check(self) -> None:
        """Check the body's fields (constructor arguments)."""
        check_bytes(self.fingerprint, (DIGEST_BYTES,), "fingerprint")

    def _body(self) -> bytes:
        """The body's wire bytes."""
        return self.fingerprint

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> Any:
        """Read the body (strict: every length checked before it is read)."""
        return cls(round_id, node, reader.take(DIGEST_BYTES))  # type: ignore[call-arg]

    def _summary(self) -> str:
        """The body for ``repr``: sizes and public fields only."""
        return f"fingerprint={self.fingerprint.hex()[:16]}"


class ConfirmRequestBody:
    """The body of a protocol's ``ConfirmRequest`` (server -> uploader, with a roster): the
    set of uploads the round sums, ``entries`` of ``(member, node, SHA-256 of the upload
    blob)``. Wire: :func:`entries_body`. A protocol's message class lists this mixin before
    its framing class."""

    __slots__ = ()
    entries: tuple[tuple[str, int, bytes], ...]

    def _check(self) -> None:
        check_entries(self.entries)

    def _body(self) -> bytes:
        return entries_body(self.entries)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> Any:
        return cls(round_id, node, read_entries(reader))  # type: ignore[call-arg]

    def _summary(self) -> str:
        return f"entries={len(self.entries)}"


class ConfirmationBody:
    """The body of a protocol's ``Confirmation`` (uploader -> server): its ``member`` name and
    its ``signature`` of the confirm statement over the summed set. Wire: member | signature (64)."""

    __slots__ = ()
    member: str
    signature: bytes

    def _check(self) -> None:
        check_member(self.member)
        check_bytes(self.signature, (SIGNATURE_BYTES,), "signature")

    def _body(self) -> bytes:
        return name_bytes(self.member) + self.signature

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> Any:
        return cls(round_id, node, read_member(reader), reader.take(SIGNATURE_BYTES))  # type: ignore[call-arg]

    def _summary(self) -> str:
        return f"member={self.member!r}"


# ------------------------------------------------------------------------------ the summed set, streamed
def check_part(index: object, limit: int = MAX_NODES) -> None:
    """``index`` is a part index: an int in ``[0, limit)`` (not a bool), else a ValueError."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < limit:
        raise ValueError(f"a part index is an integer in [0, {limit}), got {index!r}")


class ConfirmedUploadBase:
    """What a protocol's ``ConfirmedUpload`` (one signed upload as a node receives it to sum,
    with its node's ``confirmation`` of the set: empty or 64 bytes) shares. A protocol's
    frozen dataclass lists this mixin and sets ``UPLOAD`` (its ``Upload`` class) and
    ``MIN_BYTES`` (the fewest bytes one item takes on the wire: :func:`read_uploads` checks
    the count against it before it reads)."""

    __slots__ = ()
    UPLOAD: ClassVar[type]
    MIN_BYTES: ClassVar[int]
    upload: Any
    confirmation: bytes

    def __post_init__(self) -> None:
        """Check the upload's type and the confirmation's length."""
        if not isinstance(self.upload, self.UPLOAD):
            raise TypeError(f"upload must be an {self.UPLOAD.__name__}, got {type(self.upload).__name__}")
        check_bytes(self.confirmation, (0, SIGNATURE_BYTES), "confirmation")

    def __repr__(self) -> str:
        """The upload's repr and whether it is confirmed."""
        return f"{type(self).__name__}({self.upload!r}, confirmed={bool(self.confirmation)})"


def uploads_body(uploads: tuple[ConfirmedUploadBase, ...]) -> bytes:
    """Wire form of confirmed uploads: u32 count, (u64-sized upload message | u8-sized confirmation) each."""
    return U32.pack(len(uploads)) + b"".join(sized(item.upload.to_bytes()) + short(item.confirmation) for item in uploads)


def read_uploads(reader: Reader, confirmed: Any) -> tuple[Any, ...]:
    """Read :func:`uploads_body` into ``confirmed`` items (a :class:`ConfirmedUploadBase` class):
    at most ``MAX_NODES``, the count checked against the bytes left (``confirmed.MIN_BYTES`` each),
    each upload strictly decoded by its own ``from_bytes``."""
    count = reader.count(confirmed.MIN_BYTES, MAX_NODES, "upload count")
    uploads = []
    for _ in range(count):
        upload = confirmed.UPLOAD.from_bytes(read_sized(reader, "upload"))
        uploads.append(confirmed(upload, read_short(reader, (0, SIGNATURE_BYTES), "confirmation")))
    return tuple(uploads)


class DecryptRequestBody:
    """The body of a protocol's ``DecryptRequest`` (server -> decrypting node): ``aggregate``
    (without a roster), ``uploads`` (its ``CONFIRMED`` items, with a roster) and ``part`` (0:
    the whole set; k > 0: the last part of a stream). Wire: aggregate (u64-sized) |
    :func:`uploads_body` | part u32."""

    __slots__ = ()
    CONFIRMED: ClassVar[Any]
    aggregate: bytes
    uploads: tuple[Any, ...]
    part: int

    def _check(self) -> None:
        """Check the body's fields (constructor arguments)."""
        check_blob(self.aggregate, "aggregate")
        check_tuple(self.uploads, self.CONFIRMED, "uploads")
        check_part(self.part)

    def _body(self) -> bytes:
        """The body's wire bytes."""
        return sized(self.aggregate) + uploads_body(self.uploads) + U32.pack(self.part)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> Any:
        """Read the body (strict: every length checked before it is read)."""
        aggregate = read_sized(reader, "aggregate")
        uploads = read_uploads(reader, cls.CONFIRMED)
        return cls(round_id, node, aggregate, uploads, reader.u32())  # type: ignore[call-arg]

    def _summary(self) -> str:
        """The body for ``repr``: sizes and public fields only."""
        return f"aggregate=<{len(self.aggregate)} bytes>, uploads={len(self.uploads)}, part={self.part}"


class SumPartBody:
    """The body of a protocol's ``SumPart`` (server -> decrypting node, with a roster): part
    ``index`` of the confirmed set; part 0, and only part 0, names the set's ``entries``.
    Wire: index u32 | :func:`entries_body` | :func:`uploads_body`."""

    __slots__ = ()
    CONFIRMED: ClassVar[Any]
    index: int
    entries: tuple[tuple[str, int, bytes], ...]
    uploads: tuple[Any, ...]

    def _check(self) -> None:
        """Check the body's fields (constructor arguments)."""
        check_part(self.index)
        check_entries(self.entries)
        check_tuple(self.uploads, self.CONFIRMED, "uploads")
        if bool(self.entries) != (self.index == 0):
            raise ValueError("part 0, and only part 0, names the set's entries")

    def _body(self) -> bytes:
        """The body's wire bytes."""
        return U32.pack(self.index) + entries_body(self.entries) + uploads_body(self.uploads)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> Any:
        """Read the body (strict: every length checked before it is read)."""
        index = reader.u32()
        return cls(round_id, node, index, read_entries(reader), read_uploads(reader, cls.CONFIRMED))  # type: ignore[call-arg]

    def _summary(self) -> str:
        """The body for ``repr``: sizes and public fields only."""
        return f"index={self.index}, entries={len(self.entries)}, uploads={len(self.uploads)}"


class SumAckBody:
    """The body of a protocol's ``SumAck`` (decrypting node -> server): part ``index`` is
    checked and added. Wire: index u32."""

    __slots__ = ()
    index: int

    def _check(self) -> None:
        """Check the body's fields (constructor arguments)."""
        check_part(self.index)

    def _body(self) -> bytes:
        """The body's wire bytes."""
        return U32.pack(self.index)

    @classmethod
    def _read(cls, reader: Reader, round_id: int, node: int) -> Any:
        """Read the body (strict: every length checked before it is read)."""
        return cls(round_id, node, reader.u32())  # type: ignore[call-arg]

    def _summary(self) -> str:
        """The body for ``repr``: sizes and public fields only."""
        return f"index={self.index}"


def decode_by_type(data: object, by_type: dict[int, Any], what: str) -> Any:
    """Decode any message of one protocol by its type byte (``by_type``: type -> class).

    Raises:
        MalformedMessageError: truncated, unknown type, or a body that does not decode.
    """
    view = as_view(data)
    if len(view) < HEADER.size:
        raise MalformedMessageError(f"{what}: shorter than the {HEADER.size}-byte header")
    cls = by_type.get(view[5])
    if cls is None:
        raise MalformedMessageError(f"{what}: unknown type {view[5]}")
    return cls.from_bytes(view)


# ------------------------------------------------------------------------------ statements
def set_digest(entries: Iterable[tuple[str, int, bytes]]) -> bytes:
    """SHA-256 over ``(member, node, upload digest)`` in increasing member order."""
    ordered = sorted(entries, key=lambda e: e[0])
    body = b"".join(name_bytes(member) + U64.pack(node) + digest for member, node, digest in ordered)
    return hashlib.sha256(struct.pack(">I", len(ordered)) + body).digest()


def verify(roster: Roster, member: str, signature: bytes, statement: bytes, what: str) -> None:
    """Check ``signature`` of ``statement`` under the roster key of ``member``.

    Raises:
        IdentityError: ``member`` is not on the roster.
        InvalidSignature: the signature does not verify (the message names ``what`` and the member).
    """
    key = roster.key(member)
    try:
        ed25519_verify(key, signature, statement)
    except InvalidSignature:
        raise InvalidSignature(f"{what} does not carry the signature of roster member {member!r}") from None


def check_confirm_entries(
    entries: tuple[tuple[str, int, bytes], ...],
    *,
    roster: Roster,
    member: str,
    node: int,
    own_digest: bytes,
    confirmed: tuple[int, bytes] | None,
    round_id: int,
    violation: Any,
    unexpected: Any,
) -> bytes:
    """A node's checks of a set it is asked to confirm; returns the set's :func:`set_digest`.

    The set repeats no member, node or upload; every member is on the roster; it carries
    this node's own upload unchanged; and this node confirmed no other set for this round.
    ``violation`` / ``unexpected`` build the caller's typed errors from a text.

    Raises:
        ProtocolViolationError: a repeated entry, or this node's upload missing or changed.
        IdentityError: a member not on the roster.
        UnexpectedMessageError: another set was already confirmed for this round.
    """
    count = len(entries)
    if not len({e[0] for e in entries}) == len({e[1] for e in entries}) == len({e[2] for e in entries}) == count:
        raise violation("the set repeats a member, a node or an upload")
    for name in sorted({e[0] for e in entries}):
        roster.key(name)  # IdentityError: not a member
    own = [e for e in entries if e[0] == member]
    if not own or own[0][1] != node or not hmac.compare_digest(own[0][2], own_digest):
        raise violation("the set does not carry this node's upload unchanged")
    summed = set_digest(entries)
    if confirmed is not None and confirmed[0] == round_id and not hmac.compare_digest(confirmed[1], summed):
        raise unexpected(f"this node already confirmed another set for round {round_id}")
    return summed


def verify_confirmations(roster: Roster, statement: bytes, uploads: tuple[Any, ...], part: tuple[tuple[str, int, bytes], ...]) -> None:
    """A node's check that each of ``uploads`` (confirmed uploads, entries ``part`` of the set)
    carries its member's confirmation: that member's signature of ``statement``, the protocol's
    confirm statement of exactly this set (so a round's decrypted sets are equal or disjoint).

    Raises:
        InvalidSignature: an upload without a confirmation, or one that does not verify.
        IdentityError: a member not on the roster.
    """
    for item, (member, node, _) in zip(uploads, part):
        if not item.confirmation:
            raise InvalidSignature(f"node {node} did not confirm the set")
        verify(roster, member, item.confirmation, statement, f"the confirmation of node {node}")


@contextlib.contextmanager
def peer_bytes(node: int, stage: object, round_id: int) -> Iterator[None]:
    """Only :class:`FedcryptError` comes out of a node's bytes (the original text may quote them)."""
    try:
        yield
    except FedcryptError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes reached a parser that raised untyped
        raise MalformedMessageError(f"unparseable ({type(exc).__name__})", party=node, round=round_id, stage=stage) from None


# ------------------------------------------------------------------------------ inputs
def layout_digest(layout: TensorSpec | bytes | None, length: int) -> bytes:
    """The 32-byte layout digest an upload carries and its signature binds.

    Args:
        layout: a :class:`~fedcrypt.vectors.TensorSpec` (its digest), a transport's own
            32-byte digest of its layout, or ``None`` (a digest of the length alone).
        length: the length of the plain vector ``x`` (without the weight slot).
    """
    if layout is None:
        return hashlib.sha256(_LAYOUT_LABEL + struct.pack(">Q", length)).digest()
    if isinstance(layout, TensorSpec):
        if layout.size != length:
            raise ValueError(f"the layout describes {layout.size} values, the vector has {length}")
        return layout.digest()
    if isinstance(layout, (bytes, bytearray)) and len(layout) == 32:
        return bytes(layout)
    raise TypeError("layout must be a TensorSpec, a 32-byte digest or None")


def weighted_input(
    vector: np.ndarray, weight: float, max_weight: float, layout: TensorSpec | bytes | None, max_values: int
) -> tuple[np.ndarray, bytes]:
    """A node's update ``x`` with FedAvg weight ``w`` as the vector it uploads, ``w/M * [x, 1]``
    (float64), and the layout digest (:func:`layout_digest`).

    Raises:
        TypeError / EncodingError: not a 1-D float vector, or NaN in it.
        ValueError: a weight outside ``(0, max_weight]``, or a vector of ``max_values`` or more values.
    """
    check_float_vector(vector)
    length = int(vector.shape[0])
    if not 1 <= length < max_values:
        raise ValueError(f"the vector must have 1 to {max_values - 1} values (one slot holds the weight)")
    if np.isnan(vector).any():
        raise EncodingError("vector contains NaN")
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)):
        raise TypeError(f"weight must be a number, got {type(weight).__name__}")
    if not (math.isfinite(float(weight)) and 0 < float(weight) <= max_weight):
        raise ValueError(f"weight must be in (0, max_weight={max_weight:g}], got {weight!r}")
    digest = layout_digest(layout, length)
    factor = float(weight) / max_weight
    scaled = np.empty(length + 1, dtype=np.float64)
    np.multiply(vector, factor, out=scaled[:length], casting="unsafe")
    scaled[length] = factor
    return scaled, digest
