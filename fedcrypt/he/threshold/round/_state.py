"""The state encoding of :class:`~fedcrypt.he.threshold.round.ThresholdClient` (its
``to_state_bytes`` / ``from_state_bytes``).

A transport that handles every message in a fresh process keeps the node between messages
as these bytes. They hold the node's key share (inside the key holder's own state bytes,
:meth:`~fedcrypt.he.threshold.KeyHolder.to_state_bytes`: the share, the joint key, the
Shamir pieces of other holders' shares, the transport key) and the node's next input: they
belong in the node's private storage only, sealed if that storage is shared.

Layout, version 2 (big-endian; ``?x`` is a presence byte 0/1 followed by ``x`` if 1)::

    "FCTC" | version (1)
    config digest (32)                      ThresholdConfig.digest() the node was built with
    node u64 | member (u8 length, ASCII) | identity's public key (u8 length 0 or 32)
    key state u8
    holder       u32 length | KeyHolder.to_state_bytes()      (length 0 in NO_KEY only)
    committee    u16 count | node u64 each                     (num_parties unless NO_KEY)
    members      u16 count | member each                       (num_parties from AWAITING_BACKUPS on)
    link         ?(KeyLink bytes)                              (unless NO_KEY)
    guards       ?encrypted round u64 | ?decrypted round u64
                 | recovered: u16 count, (party u16 | round u64) each, in increasing party order
    upload       ?(round u64 | blob digest (32) | layout digest (32))
    confirmed    ?(round u64 | set digest (32))
    input        ?(layout digest (32) | count u64 | count float64 little-endian)
    stream       ?(round u64 | entries (u32 count, (member | node u64 | digest 32) each)
                   | layout digest (32) | next part u32 | u64-sized ThresholdSum.to_state_bytes())
    kept         ?(round u64 | set digest (32) | u64-sized aggregate)   (with a roster: the last
                   partial decryption's own sum, which a stand-in decrypts at RECOVER)

Invariants:

* canonical: one state, one encoding; :func:`decode` refuses bytes that do not re-encode
  to themselves;
* strict: truncated, extended or garbled bytes, or fields that contradict each other (a
  holder in another stage than the key state says, a holder of other parameters, a
  committee without this node at the holder's index, ...) raise
  :class:`~fedcrypt.errors.MalformedMessageError`; lengths are checked against caps and
  the bytes left before anything is read;
* the identity key is never in the bytes, only its public half: decoding needs the same
  identity again (:class:`~fedcrypt.errors.IdentityError` otherwise), and the config whose
  digest they carry (:class:`~fedcrypt.errors.ContextMismatchError` otherwise).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from fedcrypt._wire import Reader
from fedcrypt.errors import FedcryptError
from fedcrypt.he._round_common import entries_body, name_bytes, read_entries, read_member
from fedcrypt.he._round_roles import optional, present, read_state_head, read_state_tail, state_head, state_tail
from fedcrypt.identity import NodeIdentity

from .._blob import decode_blob
from .._common import MAX_VALUES
from ..client import KeyHolder
from ..messages import BlobKind
from ..messages import Stage as HolderStage
from ..server import ThresholdSum
from ._framing import MAX_KEY_MESSAGE, MAX_PARTIES, KeyLink
from .config import ThresholdConfig

if TYPE_CHECKING:  # pragma: no cover
    from .client import ThresholdClient

__all__ = ["MAGIC", "VERSION", "FIELDS", "encode", "decode"]

MAGIC = b"FCTC"
VERSION = 2
#: The ThresholdClient attributes this encoding carries (a test checks it against ``__slots__``).
FIELDS = frozenset(
    {
        "config",
        "node",
        "member",
        "_identity",
        "_key_state",
        "_holder",
        "_committee",
        "_members",
        "_link",
        "_encrypted_round",
        "_decrypted_round",
        "_recovered",
        "_upload",
        "_confirmed",
        "_input",
        "_stream",
        "_kept",
    }
)
_WHAT = "threshold node state"
#: a key holder's state: its parameters, share, own and joint key, transport key, n - 1 backup pieces, answers
_MAX_HOLDER = (4 + MAX_PARTIES) * MAX_KEY_MESSAGE


def _round(value: int | None) -> bytes:
    return optional(None if value is None else struct.pack(">Q", value))


def encode(client: "ThresholdClient") -> bytes:
    """The canonical state bytes of ``client`` (KEY SHARE INCLUDED; the identity key excluded)."""
    holder: KeyHolder | None = client._holder
    held = holder.to_state_bytes() if holder is not None else b""
    link: KeyLink | None = client._link
    recovered = sorted(client._recovered.items())
    parts = [
        state_head(MAGIC, VERSION, client),
        struct.pack(">BI", int(client._key_state), len(held)),
        held,
        struct.pack(">H", len(client._committee)),
        b"".join(struct.pack(">Q", n) for n in client._committee),
        struct.pack(">H", len(client._members)),
        b"".join(name_bytes(m) for m in client._members),
        optional(None if link is None else link.to_bytes()),
        _round(client._encrypted_round),
        _round(client._decrypted_round),
        struct.pack(">H", len(recovered)),
        b"".join(struct.pack(">HQ", party, rnd) for party, rnd in recovered),
        state_tail(client._upload, client._confirmed, client._input),
        optional(_stream_bytes(client._stream)),
        optional(None if client._kept is None else struct.pack(">Q", client._kept[0]) + client._kept[1] + _sized(client._kept[2])),
    ]
    return b"".join(parts)


def _sized(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def _stream_bytes(stream: Any) -> bytes | None:
    if stream is None:
        return None
    round_id, entries, layout, part, summed = stream
    return struct.pack(">Q", round_id) + entries_body(entries) + layout + struct.pack(">I", part) + _sized(summed.to_state_bytes())


def _read_round(reader: Reader, label: str) -> int | None:
    return reader.u64() if present(reader, label) else None


def decode(cls: Any, data: bytes, config: ThresholdConfig, identity: NodeIdentity | None) -> "ThresholdClient":
    """Rebuild a client from :func:`encode`'s bytes (see the module docstring for the checks)."""
    from .client import KeyState

    if not isinstance(config, ThresholdConfig):
        raise TypeError(f"config must be a ThresholdConfig, got {type(config).__name__}")
    reader = Reader(data, _WHAT)
    node, member = read_state_head(reader, MAGIC, VERSION, config, identity)
    code = reader.u8()
    if code not in {int(s) for s in KeyState}:
        raise reader.error(f"unknown key state {code}")
    key_state = KeyState(code)
    held = reader.sized(_MAX_HOLDER, "key holder", allow_empty=True)
    committee = tuple(reader.u64() for _ in range(_count(reader, 8, "committee")))
    members = tuple(read_member(reader) for _ in range(_count(reader, 1, "members")))
    link = KeyLink.read(reader) if present(reader, "the link") else None
    encrypted_round = _read_round(reader, "the encrypted round")
    decrypted_round = _read_round(reader, "the decrypted round")
    recovered: dict[int, int] = {}
    previous = -1
    for _ in range(_count(reader, 10, "recovered")):
        party, rnd = reader.u16(), reader.u64()
        if party <= previous:
            raise reader.error("the recovered holders are not in increasing order")
        recovered[party], previous = rnd, party
    upload, confirmed, given = read_state_tail(reader, MAX_VALUES)
    stream: Any = None
    if present(reader, "the stream"):
        stream_round, entries, layout, part = reader.u64(), read_entries(reader), reader.take(32), reader.u32()
        stream = (stream_round, entries, layout, part, reader.sized(1 << 40, "the stream's sum", width=8))
    kept: Any = None
    if present(reader, "the kept sum"):
        kept = (reader.u64(), reader.take(32), reader.sized(1 << 40, "the kept sum", width=8))
    reader.expect_end()
    holder = KeyHolder.from_state_bytes(held) if held else None  # MalformedMessageError: bytes OpenFHE refuses
    _check_consistent(reader, config, key_state, holder, node, committee, members, link, encrypted_round, upload, confirmed)
    stream = _check_sums(reader, config, key_state, holder, decrypted_round, stream, kept)
    client = cls.__new__(cls)
    client.config = config
    client.node = node
    client.member = member
    client._identity = identity
    client._key_state = key_state
    client._holder = holder
    client._committee = committee
    client._members = members
    client._link = link
    client._encrypted_round = encrypted_round
    client._decrypted_round = decrypted_round
    client._recovered = recovered
    client._upload = upload
    client._confirmed = confirmed
    client._input = given
    client._stream = stream
    client._kept = kept
    if encode(client) != bytes(data):
        raise reader.error("not in canonical form")
    return client


def _check_sums(
    reader: Reader, config: ThresholdConfig, key_state: Any, holder: KeyHolder | None, decrypted: int | None, stream: Any, kept: Any
) -> Any:
    """The stream (its sum resumed) and the kept sum fit the key, the roster and the decrypted round."""
    from .client import KeyState

    if stream is None and kept is None:
        return None
    if config.roster is None or key_state is not KeyState.READY or holder is None:
        raise reader.error("a streamed or kept sum without a roster or a key")
    if kept is not None and kept[0] != decrypted:
        raise reader.error("the kept sum is not of the last decrypted round")
    if stream is not None and (stream[3] < 1 or len(stream[1]) < 2 or (decrypted is not None and stream[0] <= decrypted)):
        raise reader.error("a streamed set before its first part, or of a round already decrypted")
    try:
        if kept is not None:
            decode_blob(kept[2], config.params, holder.fingerprint, (BlobKind.AGGREGATE,))
        if stream is None:
            return None
        summed = ThresholdSum.resume(config.params, holder.fingerprint, holder.key_tag, stream[4])
    except FedcryptError as exc:
        raise reader.error(f"a streamed or kept sum does not decode ({exc})") from None
    if not 1 <= summed.count < len(stream[1]):
        raise reader.error("the streamed sum does not fit its set")
    return (*stream[:4], summed)


def _count(reader: Reader, entry_bytes: int, label: str) -> int:
    """A u16 count of entries of at least ``entry_bytes`` each, at most MAX_PARTIES and the bytes left."""
    value = reader.u16()
    if value > MAX_PARTIES or value * entry_bytes > reader.remaining:
        raise reader.error(f"{label} count {value} exceeds the cap {MAX_PARTIES} or the data")
    return value


def _check_consistent(
    reader: Reader,
    config: ThresholdConfig,
    key_state: Any,
    holder: KeyHolder | None,
    node: int,
    committee: tuple[int, ...],
    members: tuple[str, ...],
    link: KeyLink | None,
    encrypted_round: int | None,
    upload: tuple[int, bytes, bytes] | None,
    confirmed: tuple[int, bytes] | None,
) -> None:
    """Fields that contradict each other, or a holder that does not fit the config."""
    from .client import KeyState

    n = config.params.num_parties
    if holder is None:
        if key_state is not KeyState.NO_KEY or committee or members or link is not None:
            raise reader.error("a committee, members or a link without a key holder, or a key state without one")
    else:
        expected = HolderStage.AWAIT_JOINT_KEY if key_state is KeyState.AWAITING_JOINT_KEY else HolderStage.READY
        if key_state is KeyState.NO_KEY or holder.stage is not expected:
            raise reader.error("the key holder's stage does not match the key state")
        if holder.params != config.params or holder.min_contributions != config.min_contributions:
            raise reader.error("the key holder was made under other parameters than the config's")
        if len(committee) != n or len(set(committee)) != n or committee[holder.party] != node or link is None:
            raise reader.error("the committee does not hold this node at its holder's index")
        if len(members) != (n if key_state in (KeyState.AWAITING_BACKUPS, KeyState.READY) else 0):
            raise reader.error("the members do not match the key state")
        if members and members[holder.party] != link.member:
            raise reader.error("the members do not name this node's own link")
    if (upload is None) != (encrypted_round is None) or (upload is not None and upload[0] != encrypted_round):
        raise reader.error("the last upload is not of the last encrypted round")
    if confirmed is not None and (upload is None or confirmed[0] > upload[0]):
        raise reader.error("a confirmation without an upload of its round")
