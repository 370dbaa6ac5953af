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

The round protocol around those objects (key from a key file or an in-band dealer, signed
uploads with a roster, decryptor choice and agreement) is :mod:`fedcrypt.he.round`; its
public names are available here too (:class:`CkksConfig`, :class:`CkksClient`,
:class:`CkksServer`, :func:`simulate`, ...), imported on first use.

Invariants: importing this package is cheap (no TenSEAL, torch or flwr; the round
package is imported on first use of one of its names); TenSEAL is imported on first use,
and a missing extra raises :class:`~fedcrypt.errors.MissingExtraError` naming ``he``.
"""

from typing import Any

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

#: names of :mod:`fedcrypt.he.round` exported here, imported on first use
_ROUND_NAMES = (
    "CkksConfig",
    "CkksClient",
    "CkksServer",
    "KeyState",
    "AggregationResult",
    "RoundReport",
    "SimulationResult",
    "simulate",
    "fedavg_error_bound",
)
__all__ += list(_ROUND_NAMES)


def __getattr__(name: str) -> Any:
    if name in _ROUND_NAMES:
        from fedcrypt.he import round as _round

        return getattr(_round, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
