"""The public record of a threshold CKKS session: what a server needs to run the session's
later rounds (:class:`SessionRecord`).

The first round of a session runs the key set-up (KEYGEN, JOINT, BACKUP); its server's
:attr:`~fedcrypt.he.threshold.round.AggregationResult.session` is this record's bytes, and
the next round's server is built with them (``ThresholdRoundServer(..., session=...)``),
as a single-key round's server is built with the pinned context.

Layout, version 1 (big-endian)::

    "FCTJ" | version (1) | session (32) | committee: u16 count, (node u64 | member) each
    | joint (u32-sized KeyShareMessage bytes of the last holder)

Invariants: the record holds public data only (ids, names, the joint public key); the
decoder is strict (truncated, extended or non-canonical bytes, repeated nodes or
members raise :class:`~fedcrypt.errors.MalformedMessageError`); the joint key itself is
checked against the parameters by whoever loads it
(:meth:`~fedcrypt.he.threshold.ThresholdServer.resume`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fedcrypt._wire import Reader
from fedcrypt.errors import MalformedMessageError
from fedcrypt.he._round_common import check_bytes, check_id, check_member, name_bytes, read_member

from .messages import MAX_KEY_MESSAGE, MAX_PARTIES, SESSION_BYTES

__all__ = ["SessionRecord"]

_MAGIC = b"FCTJ"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A threshold CKKS session as its later rounds' server needs it (public).

    Attributes:
        session: the session id.
        committee: the key holders' node ids, in party order.
        members: their roster names, in party order (empty names without a roster).
        joint: the last holder's KeyShareMessage bytes (the joint public key).
    """

    session: bytes
    committee: tuple[int, ...]
    members: tuple[str, ...]
    joint: bytes

    def __post_init__(self) -> None:
        check_bytes(self.session, (SESSION_BYTES,), "session")
        if not isinstance(self.committee, tuple) or not isinstance(self.members, tuple):
            raise TypeError("committee and members must be tuples")
        if not 2 <= len(self.committee) <= MAX_PARTIES or len(self.members) != len(self.committee):
            raise ValueError(f"a committee of 2 to {MAX_PARTIES} nodes, one member name each")
        for node in self.committee:
            check_id(node, "a committee node")
        for member in self.members:
            check_member(member)
        if len(set(self.committee)) != len(self.committee) or (any(self.members) and len(set(self.members)) != len(self.members)):
            raise ValueError("the committee repeats a node or a member")
        if not isinstance(self.joint, bytes) or not 0 < len(self.joint) <= MAX_KEY_MESSAGE:
            raise ValueError(f"joint must be 1 to {MAX_KEY_MESSAGE} bytes")

    def to_bytes(self) -> bytes:
        """Canonical bytes (see the module docstring)."""
        committee = b"".join(struct.pack(">Q", node) + name_bytes(m) for node, m in zip(self.committee, self.members))
        return (
            _MAGIC
            + struct.pack(">B", _VERSION)
            + self.session
            + struct.pack(">H", len(self.committee))
            + committee
            + struct.pack(">I", len(self.joint))
            + self.joint
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "SessionRecord":
        """Strictly decode :meth:`to_bytes`.

        Raises:
            MalformedMessageError: truncated, extended, garbled or non-canonical bytes.
        """
        reader = Reader(data, "threshold session record")
        if reader.remaining < 5 or reader.take(4) != _MAGIC or reader.u8() != _VERSION:
            raise reader.error("bad magic or version")
        session = reader.take(SESSION_BYTES)
        count = reader.u16()
        if count > MAX_PARTIES or count * 9 > reader.remaining:
            raise reader.error(f"committee of {count} nodes exceeds the cap or the data")
        entries = [(reader.u64(), read_member(reader)) for _ in range(count)]
        joint = reader.sized(MAX_KEY_MESSAGE, "joint key")
        reader.expect_end()
        try:
            record = cls(session, tuple(n for n, _ in entries), tuple(m for _, m in entries), joint)
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"threshold session record: {exc}") from None
        if record.to_bytes() != bytes(data):
            raise reader.error("not in canonical form")
        return record

    def __repr__(self) -> str:
        return f"SessionRecord(committee={list(self.committee)}, members={list(self.members)}, joint=<{len(self.joint)} bytes>)"
