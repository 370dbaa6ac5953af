"""CKKS homomorphic aggregation through TenSEAL's bundled SEAL (extra ``he``).

Clients share one CKKS secret key (:class:`KeyOwner`); each encrypts its flat update into a
compact blob (seeded symmetric encryption at the last modulus level, two reals in every
complex CKKS slot: about 2x the size of float32); the server (:class:`AggregatorContext`, no secret key) computes a weighted sum of
the blobs; any client decrypts the aggregate. The key travels among clients through the
server encrypted under pairwise X25519 + HKDF + AES-GCM keys (:mod:`fedcrypt.he.keyshare`).

Example::

    owner = KeyOwner.generate(CkksParams.preset("compact"))
    server = AggregatorContext.from_bytes(owner.aggregator_context().to_bytes())
    total = server.weighted_sum([(owner.encrypt(x1), 30), (owner.encrypt(x2), 12)])
    owner.decrypt(total)                                      # 30 * x1 + 12 * x2

Invariants: importing this package is cheap (no TenSEAL, torch or flwr); TenSEAL is
imported on first use, and a missing extra raises
:class:`~fedcrypt.errors.MissingExtraError` naming ``he``.
"""

from fedcrypt.he.blob import BlobHeader, BlobKind, peek_header
from fedcrypt.he.context import AggregatorContext, EncryptedSum, KeyOwner
from fedcrypt.he.keyshare import distribute_key, open_key_from_peer, seal_key_for_peer
from fedcrypt.he.params import PRESETS, SECURITY_BOUNDS, CkksParams

__all__ = [
    "CkksParams",
    "KeyOwner",
    "AggregatorContext",
    "EncryptedSum",
    "BlobHeader",
    "BlobKind",
    "peek_header",
    "PRESETS",
    "SECURITY_BOUNDS",
    "distribute_key",
    "open_key_from_peer",
    "seal_key_for_peer",
]
