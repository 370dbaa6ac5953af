"""The state encoding of :class:`~fedcrypt.he.round.CkksClient` (its ``to_state_bytes`` / ``from_state_bytes``).

A transport that handles every message in a fresh process keeps the node between messages
as these bytes. They hold the group's CKKS secret key (or the pending X25519 private key of
a node waiting for it) and the node's next input: they belong in the node's private storage
only, sealed if that storage is shared (the transport seals them, e.g. AES-GCM under a
node-local key).

Layout, version 2 (big-endian; ``?x`` is a presence byte 0/1 followed by ``x`` if 1)::

    "FCHS" | version (1)
    config digest (32)                     CkksConfig.digest() the node was built with
    node u64 | member (u8 length, ASCII) | identity's public key (u8 length 0 or 32)
    key state u8
    key          u32 length | KeyOwner.to_bytes(include_secret_key=True)   (length 0 unless READY)
    pending      ?(X25519 private key (32) | round u64)                     (AWAITING_KEY only)
    guards       ?encrypted round u64 | uploads u64 | decryptions u64
    upload       ?(round u64 | blob digest (32) | layout digest (32))
    confirmed    ?(round u64 | set digest (32))
    input        ?(layout digest (32) | count u64 | count float64 little-endian)
    stream       ?(round u64 | entries (u32 count, (member | node u64 | digest 32) each)
                   | layout digest (32) | next part u32 | u64-sized EncryptedSum.to_state_bytes())

Invariants:

* canonical: one state, one encoding; :func:`decode` refuses bytes that do not re-encode to
  themselves;
* strict: truncated, extended or garbled bytes, or fields that contradict each other
  (a key without READY, more decryptions than uploads, ...) raise
  :class:`~fedcrypt.errors.MalformedMessageError`; lengths are checked against caps and the
  bytes left before anything is read;
* the identity key is never in the bytes, only its public half: decoding needs the same
  identity again (:class:`~fedcrypt.errors.IdentityError` otherwise), and the config whose
  digest they carry (:class:`~fedcrypt.errors.ContextMismatchError` otherwise).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from fedcrypt._wire import Reader
from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import FedcryptError, MalformedMessageError
from fedcrypt.he._round_common import entries_body, read_entries
from fedcrypt.he._round_roles import optional, present, read_state_head, read_state_tail, state_head, state_tail
from fedcrypt.he.blob import MAX_VALUES
from fedcrypt.he.context import KeyOwner
from fedcrypt.he.keyshare import MAX_MESSAGE_BYTES
from fedcrypt.identity import NodeIdentity

from .config import CkksConfig

if TYPE_CHECKING:  # pragma: no cover
    from .client import CkksClient

__all__ = ["MAGIC", "VERSION", "FIELDS", "encode", "decode"]

MAGIC = b"FCHS"
VERSION = 2
#: The CkksClient attributes this encoding carries (a test checks it against ``__slots__``).
FIELDS = frozenset(
    {
        "config",
        "node",
        "member",
        "_identity",
        "_key_state",
        "_owner",
        "_pending",
        "_pending_round",
        "_encrypted_round",
        "_uploads",
        "_decryptions",
        "_upload",
        "_confirmed",
        "_input",
        "_stream",
    }
)
_WHAT = "CKKS node state"


def encode(client: "CkksClient") -> bytes:
    """The canonical state bytes of ``client`` (SECRET KEY INCLUDED; the identity key excluded)."""
    from .client import KeyState

    owner: KeyOwner | None = client._owner
    key = owner.to_bytes(include_secret_key=True) if owner is not None else b""
    pending = None
    if client._key_state is KeyState.AWAITING_KEY:
        assert client._pending is not None
        pending = client._pending.private_bytes().reveal() + struct.pack(">Q", client._pending_round)
    parts = [
        state_head(MAGIC, VERSION, client),
        struct.pack(">BI", int(client._key_state), len(key)),
        key,
        optional(pending),
        optional(None if client._encrypted_round is None else struct.pack(">Q", client._encrypted_round)),
        struct.pack(">QQ", client._uploads, client._decryptions),
        state_tail(client._upload, client._confirmed, client._input),
        optional(_stream_bytes(client._stream)),
    ]
    return b"".join(parts)


def _stream_bytes(stream: Any) -> bytes | None:
    if stream is None:
        return None
    round_id, entries, layout, part, summed = stream
    total = summed.to_state_bytes()
    return struct.pack(">Q", round_id) + entries_body(entries) + layout + struct.pack(">IQ", part, len(total)) + total


def decode(cls: Any, data: bytes, config: CkksConfig, identity: NodeIdentity | None) -> "CkksClient":
    """Rebuild a client from :func:`encode`'s bytes (see the module docstring for the checks)."""
    from .client import KeyState

    if not isinstance(config, CkksConfig):
        raise TypeError(f"config must be a CkksConfig, got {type(config).__name__}")
    reader = Reader(data, _WHAT)
    node, member = read_state_head(reader, MAGIC, VERSION, config, identity)
    code = reader.u8()
    if code not in {int(s) for s in KeyState}:
        raise reader.error(f"unknown key state {code}")
    key_state = KeyState(code)
    key = reader.sized(MAX_MESSAGE_BYTES, "key", width=4, allow_empty=True)
    if bool(key) != (key_state is KeyState.READY):
        raise reader.error("a key without the READY state, or READY without a key")
    pending = pending_round = None
    if present(reader, "the pending key"):
        pending, pending_round = reader.take(32), reader.u64()
    if (pending is not None) != (key_state is KeyState.AWAITING_KEY):
        raise reader.error("a pending X25519 key without AWAITING_KEY, or AWAITING_KEY without one")
    encrypted_round = reader.u64() if present(reader, "the encrypted round") else None
    uploads, decryptions = reader.u64(), reader.u64()
    upload, confirmed, given = read_state_tail(reader, MAX_VALUES)
    stream: Any = None
    if present(reader, "the stream"):
        stream_round, entries, layout, part = reader.u64(), read_entries(reader), reader.take(32), reader.u32()
        stream = (stream_round, entries, layout, part, reader.sized(reader.remaining, "the stream's sum", width=8))
    reader.expect_end()
    if decryptions > uploads or (uploads > 0) != (encrypted_round is not None) or (upload is not None) != (uploads > 0):
        raise reader.error("the replay guards contradict each other")
    if upload is not None and upload[0] != encrypted_round:
        raise reader.error("the last upload is not of the last encrypted round")
    if confirmed is not None and (upload is None or confirmed[0] > upload[0]):
        raise reader.error("a confirmation without an upload of its round")
    if key_state is not KeyState.READY and uploads:
        raise reader.error("uploads without a key")
    if stream is not None and (key_state is not KeyState.READY or stream[3] < 1 or len(stream[1]) < 2):
        raise reader.error("a streamed set without a key, or before its first part")
    try:
        owner = KeyOwner.from_bytes(key) if key else None
        pair = X25519KeyPair.from_private_bytes(pending) if pending is not None else None
        if stream is not None:
            assert owner is not None
            summed = owner.aggregator_context().resume(stream[4])
            if not 1 <= summed.count < len(stream[1]):
                raise reader.error("the streamed sum does not fit its set")
            stream = (*stream[:4], summed)
    except FedcryptError:
        raise
    except Exception as exc:  # noqa: BLE001 - stored bytes that a loader refused untyped
        raise MalformedMessageError(f"{_WHAT}: a key does not load ({type(exc).__name__})") from None
    client = cls.__new__(cls)
    client.config = config
    client.node = node
    client.member = member
    client._identity = identity
    client._key_state = key_state
    client._owner = owner
    client._pending = pair
    client._pending_round = pending_round if pending_round is not None else 0
    client._encrypted_round = encrypted_round
    client._uploads = uploads
    client._decryptions = decryptions
    client._upload = upload
    client._confirmed = confirmed
    client._input = given
    client._stream = stream
    if encode(client) != bytes(data):
        raise reader.error("not in canonical form")
    return client
