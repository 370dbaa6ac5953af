"""Sending the group's CKKS secret key from one client to the others through a relay.

One client (the dealer) generates the key with :meth:`KeyOwner.generate` and, for every
other client, encrypts ``owner.to_bytes(include_secret_key=True)`` with AES-256-GCM under
``HKDF(X25519(dealer, peer))`` (:func:`fedcrypt.crypto.derive_key`, purpose
``ckks-secret-key``); the server only relays the bytes and never holds the key.

Message layout::

    magic "FCKT" (4) | version (1) | context fingerprint (32) | AES-GCM blob

with associated data ``label || sender id || recipient id || round || fingerprint``, so a
message moved to another pair, direction, round or context fails to decrypt.

Trust model: the X25519 public keys must be authentic (signed with Ed25519 keys the
clients know, or exchanged out of band): a server that substitutes them can run a
man-in-the-middle and learn the key. Every key holder can decrypt every upload; a key
holder colluding with the server learns single clients' updates (threshold CKKS removes
that; not in this module).

Invariants:

* the fingerprint in the clear is authenticated (it is in the associated data) and must
  equal the fingerprint of the key that decrypts, else
  :class:`~fedcrypt.errors.ContextMismatchError`;
* failures of authentication are :class:`~fedcrypt.errors.DecryptionError`, whose message
  contains no key material.
"""

from __future__ import annotations

import hmac
import struct
from typing import Mapping

from fedcrypt._wire import Reader
from fedcrypt.crypto import X25519KeyPair, aead_decrypt, aead_encrypt, derive_key
from fedcrypt.errors import ContextMismatchError
from fedcrypt.he.context import KeyOwner

__all__ = ["seal_key_for_peer", "open_key_from_peer", "distribute_key"]

_MAGIC = b"FCKT"
_VERSION = 1
_LABEL = b"fedcrypt/he/key-transport/v1"
_PROTOCOL = "fedcrypt.he"
_PURPOSE = "ckks-secret-key"
_PREFIX = 4 + 1 + 32
#: the largest key-transport message accepted (a 32768-degree key with 30 primes and slack)
MAX_MESSAGE_BYTES = 32768 * 30 * 8 + 65536


def _associated_data(sender_id: int, recipient_id: int, round_id: int, fingerprint: bytes) -> bytes:
    return _LABEL + struct.pack(">QQQ", sender_id, recipient_id, round_id) + fingerprint


def _check_ids(**ids: int) -> None:
    for name, value in ids.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
            raise ValueError(f"{name} must be an int in [0, 2^64), got {value!r}")


def seal_key_for_peer(
    owner: KeyOwner,
    *,
    sender: X25519KeyPair,
    sender_id: int,
    recipient_id: int,
    recipient_public: bytes,
    round_id: int = 0,
) -> bytes:
    """Encrypt ``owner``'s secret key for one peer.

    Args:
        owner: the dealer's key owner.
        sender: the dealer's X25519 key pair.
        sender_id, recipient_id: the two parties' ids (distinct).
        recipient_public: the peer's authentic 32-byte X25519 public key.
        round_id: the key-setup round (binds the message to it).
    """
    if not isinstance(owner, KeyOwner):
        raise TypeError(f"owner must be a KeyOwner, got {type(owner).__name__}")
    _check_ids(sender_id=sender_id, recipient_id=recipient_id, round_id=round_id)
    if sender_id == recipient_id:
        raise ValueError("sender_id and recipient_id must differ")
    key = derive_key(
        sender.exchange(recipient_public),
        protocol=_PROTOCOL,
        purpose=_PURPOSE,
        round_id=round_id,
        party_a=sender_id,
        party_b=recipient_id,
    )
    fingerprint = owner.fingerprint
    body = aead_encrypt(key, owner.to_bytes(include_secret_key=True), _associated_data(sender_id, recipient_id, round_id, fingerprint))
    return _MAGIC + bytes([_VERSION]) + fingerprint + body


def open_key_from_peer(
    message: bytes,
    *,
    recipient: X25519KeyPair,
    recipient_id: int,
    sender_id: int,
    sender_public: bytes,
    round_id: int = 0,
    expected_fingerprint: bytes | None = None,
) -> KeyOwner:
    """Decrypt a key sent by :func:`seal_key_for_peer` and load it.

    Raises:
        MalformedMessageError: wrong magic, version or size.
        DecryptionError: wrong keys, ids, round, or a tampered message.
        ContextMismatchError: the key is not the one the fingerprint names, or not
            ``expected_fingerprint``.
    """
    if not isinstance(message, (bytes, bytearray)):
        raise TypeError(f"expected bytes, got {type(message).__name__}")
    _check_ids(sender_id=sender_id, recipient_id=recipient_id, round_id=round_id)
    reader = Reader(message, "key transport")
    if reader.size > MAX_MESSAGE_BYTES:
        raise reader.error(f"{reader.size} bytes exceed the cap {MAX_MESSAGE_BYTES}")
    if reader.remaining < _PREFIX or reader.take(4) != _MAGIC:
        raise reader.error("bad magic or truncated")
    version = reader.u8()
    if version != _VERSION:
        raise reader.error(f"unsupported version {version}")
    fingerprint = reader.take(32)
    if expected_fingerprint is not None and not hmac.compare_digest(fingerprint, expected_fingerprint):
        raise ContextMismatchError("key transport: the key is for another CKKS context than expected")
    key = derive_key(
        recipient.exchange(sender_public),
        protocol=_PROTOCOL,
        purpose=_PURPOSE,
        round_id=round_id,
        party_a=sender_id,
        party_b=recipient_id,
    )
    sealed = reader.take(reader.remaining)
    plain = aead_decrypt(key, sealed, _associated_data(sender_id, recipient_id, round_id, fingerprint))
    owner = KeyOwner.from_bytes(plain)
    if not hmac.compare_digest(owner.fingerprint, fingerprint):
        raise ContextMismatchError("key transport: the key does not match the fingerprint it was sent under")
    return owner


def distribute_key(
    owner: KeyOwner,
    *,
    sender: X25519KeyPair,
    sender_id: int,
    peers: Mapping[int, bytes],
    round_id: int = 0,
) -> dict[int, bytes]:
    """:func:`seal_key_for_peer` for every ``peer id -> X25519 public key`` (the dealer skipped)."""
    return {
        peer_id: seal_key_for_peer(
            owner,
            sender=sender,
            sender_id=sender_id,
            recipient_id=peer_id,
            recipient_public=public,
            round_id=round_id,
        )
        for peer_id, public in peers.items()
        if peer_id != sender_id
    }
