"""The bytes a node signs in the malicious-server mode of the CKKS round (Ed25519, RFC 8032).

Every statement starts with a label naming the protocol and the statement's purpose, then
the roster digest and the round id, then its own fields, each of fixed size or length
prefixed: no statement of one kind (or of another round, roster or key) verifies as
another.

    advert   node, member, x25519 public key | context fingerprint
    deal     dealer node, dealer member, dealer x25519 public key, fingerprint, peers digest
    upload   fingerprint, node, member, SHA-256 of the upload blob, layout digest
    confirm  fingerprint, layout digest, set digest

The *peers digest* is SHA-256 over the dealt peers ``(node, member, x25519)`` in increasing
node order; the *set digest* is SHA-256 over the summed set's ``(member, node, upload
digest)`` entries in increasing member order: both are canonical whatever order a message
lists them in.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable

from fedcrypt.he._round_common import name_bytes as _name
from fedcrypt.he._round_common import set_digest, verify

__all__ = [
    "advert_bytes",
    "deal_bytes",
    "upload_bytes",
    "confirm_bytes",
    "peers_digest",
    "set_digest",
    "verify",
]

_LABEL = b"fedcrypt/he/round/v1/"
_ADVERT_KEY, _ADVERT_CONTEXT = 1, 2


def _head(purpose: bytes, roster_digest: bytes, round_id: int) -> bytes:
    return _LABEL + purpose + b"\x00" + roster_digest + struct.pack(">Q", round_id)


def advert_bytes(*, roster_digest: bytes, round_id: int, node: int, member: str, x25519: bytes, fingerprint: bytes) -> bytes:
    """A node's CONTEXT reply: its fresh X25519 key (no CKKS key yet) or its key's fingerprint."""
    kind, value = (_ADVERT_KEY, x25519) if x25519 else (_ADVERT_CONTEXT, fingerprint)
    return _head(b"advert", roster_digest, round_id) + struct.pack(">Q", node) + _name(member) + bytes([kind]) + value


def peers_digest(peers: Iterable[tuple[int, str, bytes]]) -> bytes:
    """SHA-256 over ``(node, member, x25519)`` in increasing node order."""
    ordered = sorted(peers, key=lambda p: p[0])
    body = b"".join(struct.pack(">Q", node) + _name(member) + key for node, member, key in ordered)
    return hashlib.sha256(struct.pack(">I", len(ordered)) + body).digest()


def deal_bytes(*, roster_digest: bytes, round_id: int, dealer: int, member: str, x25519: bytes, fingerprint: bytes, peers: bytes) -> bytes:
    """The dealer's statement: its X25519 key, the key's fingerprint and whom it sealed the key to."""
    return _head(b"deal", roster_digest, round_id) + struct.pack(">Q", dealer) + _name(member) + x25519 + fingerprint + peers


def upload_bytes(*, roster_digest: bytes, round_id: int, fingerprint: bytes, node: int, member: str, blob_digest: bytes, layout: bytes) -> bytes:
    """A node's statement that the blob of this SHA-256 is its upload of this round."""
    return _head(b"upload", roster_digest, round_id) + fingerprint + struct.pack(">Q", node) + _name(member) + blob_digest + layout


def confirm_bytes(*, roster_digest: bytes, round_id: int, fingerprint: bytes, layout: bytes, summed: bytes) -> bytes:
    """A node's statement that this set (by its :func:`set_digest`) is the one summed this round."""
    return _head(b"confirm", roster_digest, round_id) + fingerprint + layout + summed
