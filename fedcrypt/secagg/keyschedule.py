"""The SecAgg key schedule and signed statements, shared by the client and the server.

Public so that an independent implementation, a test double or an auditor derives the same
keys and checks the same statements as :class:`~fedcrypt.secagg.ClientProtocol`:
:func:`consistency_bytes` and :func:`masking_bytes` are exactly what a client signs,
:func:`pairwise_seed` and :func:`mask_sign` exactly how it masks. ``fedcrypt.testing``'s
malicious server and model checker use them to sign as colluding clients and to replay
plans.

Invariants:

* Every derived key binds the protocol label, its purpose, the round, both client ids and
  the round *context* (SHA-256 of the config and the caller's associated data, used as the
  HKDF salt): parties with different models or settings derive unrelated keys.
* Client ids are 0-based; Shamir evaluation points are ``id + 1`` (never 0).
"""

from __future__ import annotations

import hashlib
import struct

from fedcrypt.crypto import Secret, derive_key

from .config import SecAggConfig

PROTOCOL = "fedcrypt/secagg/v1"


def round_context(config: SecAggConfig, round_id: int, associated_data: bytes) -> bytes:
    """SHA-256 over the config, the round and the caller's associated data."""
    if not isinstance(associated_data, (bytes, bytearray)):
        raise TypeError(f"associated_data must be bytes, got {type(associated_data).__name__}")
    return hashlib.sha256(
        b"fedcrypt/secagg-context/v1"
        + struct.pack(">Q", round_id)
        + struct.pack(">I", len(config.to_bytes()))
        + config.to_bytes()
        + struct.pack(">Q", len(associated_data))
        + bytes(associated_data)
    ).digest()


def pairwise_seed(shared: Secret, *, round_id: int, a: int, b: int, context: bytes) -> Secret:
    """The 256-bit seed of the pairwise mask between clients ``a`` and ``b``."""
    return derive_key(shared, protocol=PROTOCOL, purpose="pairwise-mask", round_id=round_id, party_a=a, party_b=b, salt=context)


def share_key(shared: Secret, *, round_id: int, a: int, b: int, context: bytes) -> Secret:
    """The AES-256-GCM key that encrypts shares between clients ``a`` and ``b``."""
    return derive_key(shared, protocol=PROTOCOL, purpose="share-encryption", round_id=round_id, party_a=a, party_b=b, salt=context)


def share_associated_data(*, round_id: int, sender: int, recipient: int, context: bytes) -> bytes:
    """AEAD associated data of a share ciphertext: protocol, stage, round, sender, recipient, context."""
    return b"fedcrypt/secagg/share-keys/v1" + struct.pack(">QII", round_id, sender, recipient) + context


def directory_digest(adverts: list[bytes]) -> bytes:
    """SHA-256 over a key directory (the canonical bytes of each advert, by sender).

    Every signed statement of the malicious-server mode binds it: each advert carries fresh
    keys, so statements an honest client made in another instance of the same round (same
    round id and associated data) never verify in this one.
    """
    digest = hashlib.sha256(b"fedcrypt/secagg/directory/v1" + struct.pack(">I", len(adverts)))
    for advert in adverts:
        digest.update(struct.pack(">I", len(advert)) + advert)
    return digest.digest()


def consistency_bytes(*, round_id: int, context: bytes, directory: bytes, survivors: tuple[int, ...]) -> bytes:
    """What a client signs in the consistency round: the survivor set it was shown, in this
    instance of the round (``directory``: :func:`directory_digest` of the key directory)."""
    return (
        b"fedcrypt/secagg/consistency/v2"
        + struct.pack(">Q", round_id)
        + context
        + directory
        + struct.pack(f">I{len(survivors)}I", len(survivors), *survivors)
    )


def masking_bytes(*, round_id: int, context: bytes, directory: bytes, client: int, skipped: tuple[int, ...]) -> bytes:
    """What a client signs with its masked input: the neighbours it did *not* mask with, in
    this instance of the round (``directory``, as in :func:`consistency_bytes`)."""
    return (
        b"fedcrypt/secagg/masking/v1"
        + struct.pack(">QI", round_id, client)
        + context
        + directory
        + struct.pack(f">I{len(skipped)}I", len(skipped), *skipped)
    )


def mask_sign(owner: int, peer: int) -> int:
    """Sign of the pairwise mask ``PRG(s_{owner,peer})`` in ``owner``'s masked input."""
    return 1 if owner < peer else -1


def self_mask_commitment(seed: Secret, *, round_id: int, client: int, context: bytes) -> bytes:
    """SHA-256 commitment to a self-mask seed, bound to the round context and the client."""
    return hashlib.sha256(b"fedcrypt/secagg/self-mask-commitment/v1" + struct.pack(">QI", round_id, client) + context + seed.reveal()).digest()
