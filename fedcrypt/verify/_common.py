"""What the client, the leader and the helper derive alike: nonces, the helper-share seal,
the accepted-set digest and the aggregators' noise.

* **Nonce.** ``SHA-256("fedcrypt/verify/nonce/v1" || config digest || round || client ||
  report id)[:16]``: the VDAF nonce binds the report to its config, round and client, so a
  report replayed into another round or under another client id is verified against other
  joint and query randomness and fails.
* **Seal.** The helper's input share (four 32-byte seeds) is sealed to the helper's X25519
  key: a fresh ephemeral key pair ``e``; ``k = HKDF-SHA256(X25519(e, helper),
  salt = e_pub || helper_pub, info = label || config digest)``; AES-256-GCM under ``k``
  with associated data ``label || config digest || round || client || report id || public
  share``. Output ``e_pub || nonce || ciphertext || tag``.
* **Noise.** Each aggregator adds ``N_Z(0, (z B)^2 / 2)`` per coordinate (the exact
  inversion sampler of :mod:`fedcrypt.dp.samplers` on a fresh
  :class:`~fedcrypt.dp.CryptoRandom`) to its share of the sum, so the sum carries the two
  halves of variance ``(z B)^2``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable

import numpy as np

from fedcrypt.crypto import X25519KeyPair, aead_decrypt, aead_encrypt, hkdf_sha256
from fedcrypt.dp import CryptoRandom
from fedcrypt.dp.samplers import discrete_gaussian
from fedcrypt.errors import CryptoError, DecryptionError

from .config import VerifyConfig
from .encoding import to_field

__all__ = ["report_nonce", "seal_helper_share", "open_helper_share", "set_digest", "sample_noise"]

_NONCE_LABEL = b"fedcrypt/verify/nonce/v1"
_SEAL_LABEL = b"fedcrypt/verify/helper-share/v1"
_SET_LABEL = b"fedcrypt/verify/accepted-set/v1"
_IDS = struct.Struct(">QQ")


def report_nonce(config: VerifyConfig, round_id: int, client: int, report_id: bytes) -> bytes:
    """The 16-byte VDAF nonce of a report (see the module docstring)."""
    return hashlib.sha256(_NONCE_LABEL + config.digest() + _IDS.pack(round_id, client) + report_id).digest()[:16]


def _seal_ad(config: VerifyConfig, round_id: int, client: int, report_id: bytes, public_share: bytes) -> bytes:
    return _SEAL_LABEL + config.digest() + _IDS.pack(round_id, client) + report_id + public_share


def _seal_key(config: VerifyConfig, shared, ephemeral: bytes):
    return hkdf_sha256(shared, salt=ephemeral + config.helper_key, info=_SEAL_LABEL + config.digest())


def seal_helper_share(config: VerifyConfig, round_id: int, client: int, report_id: bytes, public_share: bytes, share: bytes) -> bytes:
    """The helper's encoded input share sealed to ``config.helper_key``."""
    ephemeral = X25519KeyPair.generate()
    key = _seal_key(config, ephemeral.exchange(config.helper_key), ephemeral.public_bytes)
    return ephemeral.public_bytes + aead_encrypt(key, share, _seal_ad(config, round_id, client, report_id, public_share))


def open_helper_share(
    config: VerifyConfig, key_pair: X25519KeyPair, round_id: int, client: int, report_id: bytes, public_share: bytes, sealed: bytes
) -> bytes:
    """Inverse of :func:`seal_helper_share` with the helper's key pair.

    Raises:
        DecryptionError: another key, config, round, client, report id or public share, or
            tampered bytes (or a low-order ephemeral key).
    """
    ephemeral = bytes(sealed[:32])
    try:
        shared = key_pair.exchange(ephemeral)
    except CryptoError:
        raise DecryptionError("the sealed helper share has an invalid ephemeral key") from None
    key = _seal_key(config, shared, ephemeral)
    return aead_decrypt(key, bytes(sealed[32:]), _seal_ad(config, round_id, client, report_id, public_share))


def set_digest(config: VerifyConfig, round_id: int, ids: Iterable[tuple[int, bytes]]) -> bytes:
    """SHA-256 of the accepted ``(client, report id)`` list, bound to config and round."""
    h = hashlib.sha256(_SET_LABEL + config.digest() + struct.pack(">Q", round_id))
    for client, report_id in ids:
        h.update(struct.pack(">Q", client) + report_id)
    return h.digest()


def sample_noise(config: VerifyConfig) -> np.ndarray | None:
    """One aggregator's half of the noise as field elements (``None`` without noise)."""
    if config.noise_multiplier == 0.0:
        return None
    sigma2 = config.noise_stddev**2 / 2.0
    ints = discrete_gaussian(sigma2, config.dimension, CryptoRandom())
    return to_field(config.params.field, ints)
