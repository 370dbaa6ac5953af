"""Messages of the verified-aggregation round: frozen dataclasses, canonical bytes, strict decoders.

Wire format of every message (big-endian)::

    magic "FCVA" (4) | version (1) | type (1) | round (8) | party (8) | body

``party`` is the client of an :class:`UploadRequest` or a :class:`Report`, the batch index
of a :class:`PrepareRequest` or :class:`PrepareResponse`, and 0 otherwise. Bodies, per type
(``S`` = 32, the XOF seed size; ``E`` = the field's encoded size; ``d``, ``m``, ``p``,
``v`` = the config's dimension, measurement, proofs and verifier lengths)::

    UploadRequest     (empty)
    Report            report id (16) | public share (4S) | leader share (mE + pE + 2S)
                      | sealed helper share (SEALED_BYTES)
    PrepareRequest    count u32, per report: client u64 | report id (16) | public share (4S)
                      | sealed helper share
    PrepareResponse   count u32, per report: client u64 | report id (16) | status u8
                      | helper prep share (vE + 2S), present iff status is OK
    AggregateRequest  count u32, per report: client u64 | report id (16) | accepted u8
                      | leader prep share (vE + 2S)
    AggregateShare    count u32 | set digest (32) | aggregate share (dE)

Shares travel as their canonical encodings (``*_bytes`` attributes); the decoded values
are available from methods that take the config.

Invariants:

* ``decode_message(data, config)`` checks magic, version, type, every count against
  ``config.max_reports`` and against the bytes left, every field element against the
  modulus, every status and flag byte, and that no byte is left over, before it returns;
  any failure is a :class:`~fedcrypt.errors.MalformedMessageError`. Lengths come from the
  config, so a message made under another config does not decode.
* ``decode_message(m.to_bytes(), config) == m`` for every message ``m``, and a message has
  one encoding (field elements are canonical, flags are 0 or 1).
* The decoders check structure only; who may send what (the round, the client, replays,
  the verification itself) is the receiving object's check, so a test can build any
  message a malicious party could send.
* ``repr`` shows sizes and public ids, never a share, seed, blind or verifier value.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Union

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.crypto import AEAD_OVERHEAD
from fedcrypt.errors import MalformedMessageError

from .vdaf import InputShare, PrepShare, PublicShare

if TYPE_CHECKING:  # pragma: no cover
    from .config import VerifyConfig

__all__ = [
    "Stage",
    "MessageType",
    "Status",
    "UploadRequest",
    "Report",
    "PrepareEntry",
    "PrepareRequest",
    "PrepareResult",
    "PrepareResponse",
    "LeaderPrep",
    "AggregateRequest",
    "AggregateShare",
    "Message",
    "decode_message",
    "REPORT_ID_BYTES",
    "SEALED_BYTES",
    "PUBLIC_SHARE_BYTES",
    "HELPER",
]

MAGIC = b"FCVA"
VERSION = 1
HEADER = struct.Struct(">4sBBQQ")
REPORT_ID_BYTES = 16
_SEED = 32
HELPER_SHARE_BYTES = 4 * _SEED
PUBLIC_SHARE_BYTES = 4 * _SEED
#: ephemeral X25519 key, then AES-256-GCM of the helper's four seeds
SEALED_BYTES = 32 + AEAD_OVERHEAD + HELPER_SHARE_BYTES
#: how a leader addresses the helper in the result of ``Leader.end_stage``
HELPER = "helper"
_ENTRY = struct.Struct(">Q16s")


class Stage(enum.IntEnum):
    """The stages of a round, in order. Clients listed under ``UPLOAD`` in
    :func:`~fedcrypt.verify.simulate`'s ``dropouts`` never send their report."""

    UPLOAD = 1
    PREPARE = 2
    AGGREGATE = 3
    DONE = 4
    ABORTED = 5


class MessageType(enum.IntEnum):
    """Wire type byte."""

    UPLOAD_REQUEST = 1
    REPORT = 2
    PREPARE_REQUEST = 3
    PREPARE_RESPONSE = 4
    AGGREGATE_REQUEST = 5
    AGGREGATE_SHARE = 6


class Status(enum.IntEnum):
    """The helper's verdict on a report at PREPARE (anything but OK excludes the report)."""

    OK = 0
    SEAL = 1  # the sealed share does not open: wrong key, config, round, client, report id or tampered
    REPLAY = 2  # a report id or client already prepared in this round
    MALFORMED = 3  # the opened share does not decode
    QUERY = 4  # the query randomness hit a gadget's domain: the report cannot be checked


def _check_id(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ValueError(f"{name} must be an integer in [0, 2^64), got {value!r}")


def _check_bytes(value: object, size: int, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"{name} must be {size} bytes")


def _check_entries(entries: object, kind: type, name: str) -> None:
    if not isinstance(entries, tuple) or any(not isinstance(e, kind) for e in entries):
        raise TypeError(f"{name} must be a tuple of {kind.__name__}")


def prep_share_bytes(config: "VerifyConfig") -> int:
    """Bytes of one encoded :class:`~fedcrypt.verify.vdaf.PrepShare` under ``config``."""
    return config.vdaf.verifiers_len * config.params.field.encoded_size + 2 * _SEED


def leader_share_bytes(config: "VerifyConfig") -> int:
    """Bytes of the leader's encoded input share under ``config``."""
    F = config.params.field
    return (config.params.meas_len + config.vdaf.proofs_len) * F.encoded_size + 2 * _SEED


class _Message:
    """The framing every message shares: the header, then ``_body()``."""

    __slots__ = ()
    TYPE: ClassVar[MessageType]
    round_id: int

    @property
    def party(self) -> int:
        """The header's party field (see the module docstring)."""
        return 0

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        return HEADER.pack(MAGIC, VERSION, self.TYPE, self.round_id, self.party) + self._body()

    def _body(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


# ------------------------------------------------------------------------------ upload
@dataclass(frozen=True, slots=True)
class UploadRequest(_Message):
    """Leader -> client: send your report for this round."""

    round_id: int
    client: int
    TYPE: ClassVar[MessageType] = MessageType.UPLOAD_REQUEST

    def __post_init__(self) -> None:
        _check_id(self.round_id, "round_id")
        _check_id(self.client, "client")

    @property
    def party(self) -> int:
        return self.client

    def _body(self) -> bytes:
        return b""

    @classmethod
    def _read(cls, reader: Reader, config: "VerifyConfig", round_id: int, party: int) -> "UploadRequest":
        return cls(round_id, party)


@dataclass(frozen=True, slots=True)
class Report(_Message):
    """Client -> leader: one PINE report.

    Attributes:
        report_id: 16 random bytes; with the config, round and client it fixes the nonce.
        public_share: both aggregators' joint-randomness parts (public).
        leader_share: the leader's encoded input share (pseudorandom without the helper's seeds).
        sealed_helper_share: the helper's input share sealed to the helper's key.
    """

    round_id: int
    client: int
    report_id: bytes
    public_share: bytes = field(repr=False)
    leader_share: bytes = field(repr=False)
    sealed_helper_share: bytes = field(repr=False)
    TYPE: ClassVar[MessageType] = MessageType.REPORT

    def __post_init__(self) -> None:
        _check_id(self.round_id, "round_id")
        _check_id(self.client, "client")
        _check_bytes(self.report_id, REPORT_ID_BYTES, "report_id")
        _check_bytes(self.public_share, PUBLIC_SHARE_BYTES, "public_share")
        if not isinstance(self.leader_share, bytes):
            raise TypeError("leader_share must be bytes")
        _check_bytes(self.sealed_helper_share, SEALED_BYTES, "sealed_helper_share")

    @property
    def party(self) -> int:
        return self.client

    def _body(self) -> bytes:
        return self.report_id + self.public_share + self.leader_share + self.sealed_helper_share

    def decoded_public_share(self, config: "VerifyConfig") -> PublicShare:
        return PublicShare.from_bytes(self.public_share, config.vdaf)

    def decoded_leader_share(self, config: "VerifyConfig") -> InputShare:
        """The leader's input share (strictly decoded: every element below the modulus)."""
        return InputShare.from_bytes(self.leader_share, config.vdaf, 0)

    @classmethod
    def _read(cls, reader: Reader, config: "VerifyConfig", round_id: int, party: int) -> "Report":
        report_id = reader.take(REPORT_ID_BYTES, "report id")
        public = reader.take(PUBLIC_SHARE_BYTES, "public share")
        leader = reader.take(leader_share_bytes(config), "leader share")
        sealed = reader.take(SEALED_BYTES, "sealed helper share")
        InputShare.from_bytes(leader, config.vdaf, 0)  # every element below the modulus
        return cls(round_id, party, report_id, public, leader, sealed)

    def __repr__(self) -> str:
        return (
            f"Report(round_id={self.round_id}, client={self.client}, report_id={self.report_id.hex()}, leader_share={len(self.leader_share)} bytes)"
        )


# ------------------------------------------------------------------------------ prepare
@dataclass(frozen=True, slots=True)
class PrepareEntry:
    """One report as the helper needs it: who sent it, its id, public share and sealed share."""

    client: int
    report_id: bytes
    public_share: bytes = field(repr=False)
    sealed_helper_share: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_id(self.client, "client")
        _check_bytes(self.report_id, REPORT_ID_BYTES, "report_id")
        _check_bytes(self.public_share, PUBLIC_SHARE_BYTES, "public_share")
        _check_bytes(self.sealed_helper_share, SEALED_BYTES, "sealed_helper_share")

    def to_bytes(self) -> bytes:
        return _ENTRY.pack(self.client, self.report_id) + self.public_share + self.sealed_helper_share


@dataclass(frozen=True, slots=True)
class PrepareRequest(_Message):
    """Leader -> helper: a batch of reports to prepare (the helper answers before it sees
    any of the leader's verifier shares)."""

    round_id: int
    batch: int
    entries: tuple[PrepareEntry, ...]
    TYPE: ClassVar[MessageType] = MessageType.PREPARE_REQUEST

    def __post_init__(self) -> None:
        _check_id(self.round_id, "round_id")
        _check_id(self.batch, "batch")
        _check_entries(self.entries, PrepareEntry, "entries")

    @property
    def party(self) -> int:
        return self.batch

    def _body(self) -> bytes:
        return struct.pack(">I", len(self.entries)) + b"".join(e.to_bytes() for e in self.entries)

    @classmethod
    def _read(cls, reader: Reader, config: "VerifyConfig", round_id: int, party: int) -> "PrepareRequest":
        size = _ENTRY.size + PUBLIC_SHARE_BYTES + SEALED_BYTES
        count = reader.count(size, config.max_reports, "report count")
        entries = []
        for _ in range(count):
            client, report_id = reader.unpack(_ENTRY)
            public = reader.take(PUBLIC_SHARE_BYTES, "public share")
            entries.append(PrepareEntry(client, report_id, public, reader.take(SEALED_BYTES, "sealed helper share")))
        return cls(round_id, party, tuple(entries))

    def __repr__(self) -> str:
        return f"PrepareRequest(round_id={self.round_id}, batch={self.batch}, reports={len(self.entries)})"


@dataclass(frozen=True, slots=True)
class PrepareResult:
    """The helper's answer for one report: a status and, when OK, its prep share."""

    client: int
    report_id: bytes
    status: Status
    prep_share: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _check_id(self.client, "client")
        _check_bytes(self.report_id, REPORT_ID_BYTES, "report_id")
        object.__setattr__(self, "status", Status(self.status))
        if not isinstance(self.prep_share, bytes) or (self.status is Status.OK) != bool(self.prep_share):
            raise ValueError("a prep share is present exactly when the status is OK")

    def to_bytes(self) -> bytes:
        return _ENTRY.pack(self.client, self.report_id) + bytes([self.status]) + self.prep_share

    def decoded_prep_share(self, config: "VerifyConfig") -> PrepShare:
        return PrepShare.from_bytes(self.prep_share, config.vdaf)


@dataclass(frozen=True, slots=True)
class PrepareResponse(_Message):
    """Helper -> leader: one :class:`PrepareResult` per report of the batch, in its order."""

    round_id: int
    batch: int
    results: tuple[PrepareResult, ...]
    TYPE: ClassVar[MessageType] = MessageType.PREPARE_RESPONSE

    def __post_init__(self) -> None:
        _check_id(self.round_id, "round_id")
        _check_id(self.batch, "batch")
        _check_entries(self.results, PrepareResult, "results")

    @property
    def party(self) -> int:
        return self.batch

    def _body(self) -> bytes:
        return struct.pack(">I", len(self.results)) + b"".join(r.to_bytes() for r in self.results)

    @classmethod
    def _read(cls, reader: Reader, config: "VerifyConfig", round_id: int, party: int) -> "PrepareResponse":
        count = reader.count(_ENTRY.size + 1, config.max_reports, "report count")
        share_len = prep_share_bytes(config)
        results = []
        for _ in range(count):
            client, report_id = reader.unpack(_ENTRY)
            code = reader.u8()
            if code not in Status._value2member_map_:
                raise reader.error(f"unknown status {code}")
            share = b""
            if code == Status.OK:
                share = reader.take(share_len, "prep share")
                PrepShare.from_bytes(share, config.vdaf)  # every element below the modulus
            results.append(PrepareResult(client, report_id, Status(code), share))
        return cls(round_id, party, tuple(results))

    def __repr__(self) -> str:
        ok = sum(r.status is Status.OK for r in self.results)
        return f"PrepareResponse(round_id={self.round_id}, batch={self.batch}, reports={len(self.results)}, ok={ok})"


# ------------------------------------------------------------------------------ aggregate
@dataclass(frozen=True, slots=True)
class LeaderPrep:
    """The leader's prep share of one report the helper prepared, and the leader's decision."""

    client: int
    report_id: bytes
    accepted: bool
    prep_share: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_id(self.client, "client")
        _check_bytes(self.report_id, REPORT_ID_BYTES, "report_id")
        if not isinstance(self.accepted, bool):
            raise TypeError("accepted must be a bool")
        if not isinstance(self.prep_share, bytes) or not self.prep_share:
            raise ValueError("prep_share must be non-empty bytes")

    def to_bytes(self) -> bytes:
        return _ENTRY.pack(self.client, self.report_id) + bytes([self.accepted]) + self.prep_share

    def decoded_prep_share(self, config: "VerifyConfig") -> PrepShare:
        return PrepShare.from_bytes(self.prep_share, config.vdaf)


@dataclass(frozen=True, slots=True)
class AggregateRequest(_Message):
    """Leader -> helper: its prep share of every report the helper answered OK, in the
    order of the helper's answers, with the leader's decision on each."""

    round_id: int
    entries: tuple[LeaderPrep, ...]
    TYPE: ClassVar[MessageType] = MessageType.AGGREGATE_REQUEST

    def __post_init__(self) -> None:
        _check_id(self.round_id, "round_id")
        _check_entries(self.entries, LeaderPrep, "entries")

    def _body(self) -> bytes:
        return struct.pack(">I", len(self.entries)) + b"".join(e.to_bytes() for e in self.entries)

    @classmethod
    def _read(cls, reader: Reader, config: "VerifyConfig", round_id: int, party: int) -> "AggregateRequest":
        if party:
            raise reader.error(f"party field {party} (must be 0)")
        share_len = prep_share_bytes(config)
        count = reader.count(_ENTRY.size + 1 + share_len, config.max_reports, "report count")
        entries = []
        for _ in range(count):
            client, report_id = reader.unpack(_ENTRY)
            flag = reader.u8()
            if flag > 1:
                raise reader.error(f"accepted flag {flag}")
            share = reader.take(share_len, "prep share")
            PrepShare.from_bytes(share, config.vdaf)
            entries.append(LeaderPrep(client, report_id, bool(flag), share))
        return cls(round_id, tuple(entries))

    def __repr__(self) -> str:
        accepted = sum(e.accepted for e in self.entries)
        return f"AggregateRequest(round_id={self.round_id}, reports={len(self.entries)}, accepted={accepted})"


@dataclass(frozen=True, slots=True)
class AggregateShare(_Message):
    """Helper -> leader: its (noised) share of the sum of the accepted reports.

    Attributes:
        count: how many reports are in the sum.
        set_digest: SHA-256 of the accepted ``(client, report id)`` list, in request order.
        share: ``d`` encoded field elements.
    """

    round_id: int
    count: int
    set_digest: bytes
    share: bytes = field(repr=False)
    TYPE: ClassVar[MessageType] = MessageType.AGGREGATE_SHARE

    def __post_init__(self) -> None:
        _check_id(self.round_id, "round_id")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 0 <= self.count < 1 << 32:
            raise ValueError("count must be an integer in [0, 2^32)")
        _check_bytes(self.set_digest, 32, "set_digest")
        if not isinstance(self.share, bytes):
            raise TypeError("share must be bytes")

    def _body(self) -> bytes:
        return struct.pack(">I", self.count) + self.set_digest + self.share

    def decoded_share(self, config: "VerifyConfig") -> np.ndarray:
        return config.params.field.decode_vec(self.share, config.dimension)

    @classmethod
    def _read(cls, reader: Reader, config: "VerifyConfig", round_id: int, party: int) -> "AggregateShare":
        if party:
            raise reader.error(f"party field {party} (must be 0)")
        count = reader.u32()
        if count > config.max_reports:
            raise reader.error(f"count {count} exceeds max_reports")
        digest = reader.take(32, "set digest")
        share = reader.take(config.encoded_vector_bytes, "aggregate share")
        config.params.field.decode_vec(share, config.dimension)
        return cls(round_id, count, digest, share)

    def __repr__(self) -> str:
        return f"AggregateShare(round_id={self.round_id}, count={self.count}, share={len(self.share)} bytes)"


Message = Union[UploadRequest, Report, PrepareRequest, PrepareResponse, AggregateRequest, AggregateShare]

_BY_TYPE: dict[int, type[Message]] = {
    MessageType.UPLOAD_REQUEST: UploadRequest,
    MessageType.REPORT: Report,
    MessageType.PREPARE_REQUEST: PrepareRequest,
    MessageType.PREPARE_RESPONSE: PrepareResponse,
    MessageType.AGGREGATE_REQUEST: AggregateRequest,
    MessageType.AGGREGATE_SHARE: AggregateShare,
}


def decode_message(data: bytes | bytearray | memoryview, config: "VerifyConfig") -> Message:
    """Strictly decode any message of the round under ``config``.

    Raises:
        MalformedMessageError: anything but one canonical encoding of a message.
        TypeError: ``data`` is not bytes-like.
    """
    reader = Reader(data, "verify message")
    magic, version, kind, round_id, party = reader.unpack(HEADER)
    if magic != MAGIC:
        raise reader.error("bad magic")
    if version != VERSION:
        raise reader.error(f"unsupported version {version}")
    cls = _BY_TYPE.get(kind)
    if cls is None:
        raise reader.error(f"unknown message type {kind}")
    reader.what = f"verify {cls.__name__}"
    try:
        message = cls._read(reader, config, round_id, party)
    except MalformedMessageError:
        raise
    except ValueError as exc:  # a field's own check (ids, sizes); never content
        raise reader.error(str(exc)) from None
    reader.expect_end()
    return message
