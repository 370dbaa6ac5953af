"""The state encoding of :class:`~fedcrypt.he.round.CkksClient` (its ``to_state_bytes`` / ``from_state_bytes``).

A transport that handles every message in a fresh process keeps the node between messages
as these bytes. They hold the group's CKKS secret key (or the pending X25519 private key of
a node waiting for it) and the node's next input: they belong in the node's private storage
only, sealed if that storage is shared (the transport seals them, e.g. AES-GCM under a
node-local key).

Layout, version 1 (big-endian; ``?x`` is a presence byte 0/1 followed by ``x`` if 1)::

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

import hmac
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import ContextMismatchError, FedcryptError, IdentityError, MalformedMessageError
from fedcrypt.he.blob import MAX_VALUES
from fedcrypt.he.context import KeyOwner
from fedcrypt.he.keyshare import MAX_MESSAGE_BYTES
from fedcrypt.identity import NodeIdentity

from .config import CkksConfig

if TYPE_CHECKING:  # pragma: no cover
    from .client import CkksClient

__all__ = ["MAGIC", "VERSION", "FIELDS", "encode", "decode"]

MAGIC = b"FCHS"
VERSION = 1
#: The CkksClient attributes this encoding carries (a test checks it against ``__slots__``).
FIELDS = frozenset(
    {
        "config", "node", "member", "_identity", "_key_state", "_owner", "_pending", "_pending_round",
        "_encrypted_round", "_uploads", "_decryptions", "_upload", "_confirmed", "_input",
    }
)
_WHAT = "CKKS node state"


def _optional(value: bytes | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + value


def encode(client: "CkksClient") -> bytes:
    """The canonical state bytes of ``client`` (SECRET KEY INCLUDED; the identity key excluded)."""
    from .client import KeyState

    member = client.member.encode("ascii")
    identity: NodeIdentity | None = client._identity
    public = identity.public_bytes if identity is not None else b""
    owner: KeyOwner | None = client._owner
    key = owner.to_bytes(include_secret_key=True) if owner is not None else b""
    pending = None
    if client._key_state is KeyState.AWAITING_KEY:
        assert client._pending is not None
        pending = client._pending.private_bytes().reveal() + struct.pack(">Q", client._pending_round)
    upload = client._upload
    confirmed = client._confirmed
    given = client._input
    parts = [
        MAGIC,
        struct.pack(">B", VERSION),
        client.config.digest(),
        struct.pack(">QB", client.node, len(member)),
        member,
        struct.pack(">B", len(public)),
        public,
        struct.pack(">BI", int(client._key_state), len(key)),
        key,
        _optional(pending),
        _optional(None if client._encrypted_round is None else struct.pack(">Q", client._encrypted_round)),
        struct.pack(">QQ", client._uploads, client._decryptions),
        _optional(None if upload is None else struct.pack(">Q", upload[0]) + upload[1] + upload[2]),
        _optional(None if confirmed is None else struct.pack(">Q", confirmed[0]) + confirmed[1]),
        _optional(
            None if given is None
            else given[1] + struct.pack(">Q", given[0].shape[0]) + np.ascontiguousarray(given[0], dtype="<f8").tobytes()
        ),
    ]
    return b"".join(parts)


def _present(reader: Reader, label: str) -> bool:
    flag = reader.u8()
    if flag > 1:
        raise reader.error(f"presence byte of {label} is {flag}")
    return flag == 1


def decode(cls: Any, data: bytes, config: CkksConfig, identity: NodeIdentity | None) -> "CkksClient":
    """Rebuild a client from :func:`encode`'s bytes (see the module docstring for the checks)."""
    from .client import KeyState

    if not isinstance(config, CkksConfig):
        raise TypeError(f"config must be a CkksConfig, got {type(config).__name__}")
    if identity is not None and not isinstance(identity, NodeIdentity):
        raise TypeError(f"identity must be a NodeIdentity or None, got {type(identity).__name__}")
    reader = Reader(data, _WHAT)
    if reader.take(4) != MAGIC:
        raise reader.error("bad magic")
    version = reader.u8()
    if version != VERSION:
        raise reader.error(f"unsupported version {version}")
    if not hmac.compare_digest(reader.take(32), config.digest()):
        raise ContextMismatchError("the node state was made under another round config")
    node = reader.u64()
    raw_member = reader.sized(64, "member name", width=1, allow_empty=True)
    public = reader.sized(32, "identity key", width=1, allow_empty=True)
    if len(public) not in (0, 32):
        raise reader.error("an identity key is 32 bytes")
    try:
        member = raw_member.decode("ascii")
    except UnicodeDecodeError:
        raise reader.error("a member name is ASCII") from None
    if config.roster is None:
        if identity is not None or public or member:
            raise IdentityError("the state or the caller names an identity, the round config has no roster")
    else:
        if identity is None or not hmac.compare_digest(identity.public_bytes, public):
            raise IdentityError("the state belongs to another identity than the one given (or none was given)")
        if config.roster.name_of(public) != member:
            raise reader.error("the member name is not the identity's")
    code = reader.u8()
    if code not in {int(s) for s in KeyState}:
        raise reader.error(f"unknown key state {code}")
    key_state = KeyState(code)
    key = reader.sized(MAX_MESSAGE_BYTES, "key", width=4, allow_empty=True)
    if bool(key) != (key_state is KeyState.READY):
        raise reader.error("a key without the READY state, or READY without a key")
    pending = pending_round = None
    if _present(reader, "the pending key"):
        pending, pending_round = reader.take(32), reader.u64()
    if (pending is not None) != (key_state is KeyState.AWAITING_KEY):
        raise reader.error("a pending X25519 key without AWAITING_KEY, or AWAITING_KEY without one")
    encrypted_round = reader.u64() if _present(reader, "the encrypted round") else None
    uploads, decryptions = reader.u64(), reader.u64()
    upload = None
    if _present(reader, "the last upload"):
        upload = (reader.u64(), reader.take(32), reader.take(32))
    confirmed = None
    if _present(reader, "the last confirmation"):
        confirmed = (reader.u64(), reader.take(32))
    given = None
    if _present(reader, "the input"):
        layout = reader.take(32)
        count = reader.u64()
        if not 2 <= count <= MAX_VALUES or 8 * count > reader.remaining:
            raise reader.error(f"an input of {count} values does not fit")
        values = np.frombuffer(reader.take(8 * count), dtype="<f8").astype(np.float64)
        if not np.isfinite(values).all():
            raise reader.error("the input is not finite")
        given = (values, layout)
    reader.expect_end()
    if decryptions > uploads or (uploads > 0) != (encrypted_round is not None) or (upload is not None) != (uploads > 0):
        raise reader.error("the replay guards contradict each other")
    if upload is not None and upload[0] != encrypted_round:
        raise reader.error("the last upload is not of the last encrypted round")
    if confirmed is not None and (upload is None or confirmed[0] > upload[0]):
        raise reader.error("a confirmation without an upload of its round")
    if key_state is not KeyState.READY and uploads:
        raise reader.error("uploads without a key")
    try:
        owner = KeyOwner.from_bytes(key) if key else None
        pair = X25519KeyPair.from_private_bytes(pending) if pending is not None else None
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
    if encode(client) != bytes(data):
        raise reader.error("not in canonical form")
    return client
