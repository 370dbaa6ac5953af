"""The bytes a node signs in the malicious-server mode of the threshold CKKS round (Ed25519, RFC 8032).

Every statement starts with a label naming the protocol and the statement's purpose and
the roster digest, then the session (key set-up) or the round id (uploads), then its own
fields, each of fixed size or length prefixed: no statement of one kind (or of another
session, round, roster or protocol) verifies as another.

    link     params digest, committee digest, party, node, member, previous key digest,
             key digest, transport key                                   (session)
    backup   committee digest, node, member, SHA-256 of the KeyBackupMessage bytes  (session)
    upload   fingerprint, node, member, SHA-256 of the upload blob, layout digest     (round)
    confirm  fingerprint, layout digest, set digest                                   (round)

The *committee digest* is SHA-256 over the committee's node ids in party order; the *key
digest* of a link is SHA-256 of the running public key it carries, and its *previous key
digest* that of the key it extended (32 zero bytes for party 0), so the signed links of a
session form a hash chain from party 0 to the joint key. The *set digest* is
:func:`fedcrypt.he._round_common.set_digest`.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable

from fedcrypt.he._round_common import name_bytes, set_digest, verify

__all__ = [
    "link_bytes",
    "backup_bytes",
    "upload_bytes",
    "confirm_bytes",
    "committee_digest",
    "set_digest",
    "verify",
    "NO_PREVIOUS",
]

_LABEL = b"fedcrypt/he/threshold/round/v1/"
#: the previous key digest of party 0's link
NO_PREVIOUS = bytes(32)


def _head(purpose: bytes, roster_digest: bytes) -> bytes:
    return _LABEL + purpose + b"\x00" + roster_digest


def committee_digest(committee: Iterable[int]) -> bytes:
    """SHA-256 over the committee's node ids, in party order."""
    nodes = list(committee)
    return hashlib.sha256(struct.pack(">I", len(nodes)) + b"".join(struct.pack(">Q", n) for n in nodes)).digest()


def link_bytes(
    *,
    roster_digest: bytes,
    session: bytes,
    params: bytes,
    committee: bytes,
    party: int,
    node: int,
    member: str,
    previous: bytes,
    key: bytes,
    transport: bytes,
) -> bytes:
    """Holder ``party``'s statement: it extended the key of digest ``previous`` to the key of digest ``key``."""
    return (
        _head(b"link", roster_digest)
        + session
        + params
        + committee
        + struct.pack(">HQ", party, node)
        + name_bytes(member)
        + previous
        + key
        + struct.pack(">B", len(transport))
        + transport
    )


def backup_bytes(*, roster_digest: bytes, session: bytes, committee: bytes, node: int, member: str, backup: bytes) -> bytes:
    """A holder's statement that it sealed (or released) the key backup of this SHA-256."""
    return _head(b"backup", roster_digest) + session + committee + struct.pack(">Q", node) + name_bytes(member) + backup


def upload_bytes(*, roster_digest: bytes, round_id: int, fingerprint: bytes, node: int, member: str, blob_digest: bytes, layout: bytes) -> bytes:
    """A node's statement that the blob of this SHA-256 is its upload of this round under this joint key."""
    return (
        _head(b"upload", roster_digest)
        + struct.pack(">Q", round_id)
        + fingerprint
        + struct.pack(">Q", node)
        + name_bytes(member)
        + blob_digest
        + layout
    )


def confirm_bytes(*, roster_digest: bytes, round_id: int, fingerprint: bytes, layout: bytes, summed: bytes) -> bytes:
    """A node's statement that this set (by its set digest) is the one summed this round."""
    return _head(b"confirm", roster_digest) + struct.pack(">Q", round_id) + fingerprint + layout + summed
