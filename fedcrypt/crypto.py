"""Thin layer over `cryptography`: key agreement, signatures, KDF, AEAD, mask PRG, Shamir.

Nothing here invents a primitive. Randomness comes from ``secrets`` / ``os.urandom``;
NumPy generators never touch secret material.

Invariants:

* :func:`derive_key` binds the protocol label, the round and *both* party ids (in a
  canonical order) into HKDF's ``info``, so a key derived for one pair, round or purpose
  is useless for any other.
* :func:`aead_encrypt` output is ``nonce (12) || ciphertext || tag (16)``; the caller's
  associated data names sender, recipient, round and stage, so a ciphertext moved to
  another context fails with :class:`~fedcrypt.errors.DecryptionError`.
* :func:`mask_prg` output is the AES-256-CTR keystream of a 256-bit seed read as
  little-endian ring elements: uniform over Z_(2^bits) because every bit is a keystream
  bit.
* Secret bytes are wrapped in :class:`Secret` (redacting ``repr``) where they are held in
  objects; they never appear in an exception message.
"""

from __future__ import annotations

import hmac
import os
import secrets
import struct
from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable, Iterable, Sequence

import numpy as np
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcrypt.errors import CryptoError, DecryptionError, InvalidShare, InvalidSignature

__all__ = [
    "Secret",
    "random_seed",
    "constant_time_equal",
    "X25519KeyPair",
    "x25519_exchange",
    "x25519_secret_matches",
    "Ed25519KeyPair",
    "ed25519_verify",
    "hkdf_sha256",
    "derive_key",
    "aead_encrypt",
    "aead_decrypt",
    "AEAD_OVERHEAD",
    "mask_prg",
    "mask_accumulate",
    "SHAMIR_PRIME",
    "Share",
    "shamir_split",
    "shamir_combine",
    "shamir_decode",
]

SEED_BYTES = 32
AEAD_NONCE_BYTES = 12
AEAD_TAG_BYTES = 16
#: bytes added by :func:`aead_encrypt` to a plaintext
AEAD_OVERHEAD = AEAD_NONCE_BYTES + AEAD_TAG_BYTES


# ---------------------------------------------------------------------------- secrets
class Secret:
    """Bytes that must never print: ``repr``/``str`` show only the length.

    Compare with :meth:`equals` (constant time), read with :meth:`reveal`.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"Secret wraps bytes, got {type(value).__name__}")
        self._value = bytes(value)

    def reveal(self) -> bytes:
        """The secret bytes. Do not log them."""
        return self._value

    def equals(self, other: "Secret | bytes") -> bool:
        """Constant-time comparison."""
        other_bytes = other.reveal() if isinstance(other, Secret) else other
        return hmac.compare_digest(self._value, other_bytes)

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"<Secret {len(self._value)} bytes>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Secret, bytes)):
            return self.equals(other)
        return NotImplemented

    def __hash__(self) -> int:  # usable in sets without exposing the value
        return hash(("Secret", len(self._value)))

    def __reduce__(self):  # pickling would copy the secret out silently
        raise TypeError("Secret objects cannot be pickled")


def random_seed(nbytes: int = SEED_BYTES) -> Secret:
    """A fresh uniformly random secret from the OS CSPRNG."""
    return Secret(secrets.token_bytes(nbytes))


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """``hmac.compare_digest`` under a name that says why."""
    return hmac.compare_digest(a, b)


# ---------------------------------------------------------------------------- X25519
@dataclass(frozen=True, slots=True)
class X25519KeyPair:
    """An X25519 key pair (RFC 7748). The private key never prints."""

    private_key: X25519PrivateKey = field(repr=False)
    public_bytes: bytes

    @classmethod
    def generate(cls) -> "X25519KeyPair":
        """A fresh key pair from the OS CSPRNG (through `cryptography`), its private bytes clamped.

        RFC 7748 clamps a scalar before use (clears bits 0-2 and 255, sets bit 254), so 32
        raw private keys share one public key. A key generated here is stored in its clamped
        form, the one :func:`x25519_secret_matches` accepts, so a secret rebuilt from Shamir
        shares is recognised by exactly one value (OpenSSL stores generated keys clamped
        already; the clamp is explicit so no backend can differ).
        """
        private = X25519PrivateKey.generate()
        raw = _x25519_private_raw(private)
        clamped = _x25519_clamp(raw)
        if not hmac.compare_digest(raw, clamped):
            private = X25519PrivateKey.from_private_bytes(clamped)
        return cls(private, _raw_public(private.public_key()))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> "X25519KeyPair":
        """Load a 32-byte raw private key."""
        if len(data) != 32:
            raise ValueError(f"an X25519 private key is 32 bytes, got {len(data)}")
        private = X25519PrivateKey.from_private_bytes(data)
        return cls(private, _raw_public(private.public_key()))

    def private_bytes(self) -> Secret:
        """The raw private key, wrapped so it cannot print."""
        return Secret(_x25519_private_raw(self.private_key))

    def exchange(self, peer_public: bytes) -> Secret:
        """The raw X25519 shared secret with a peer's 32-byte public key."""
        return x25519_exchange(self.private_key, peer_public)


def _x25519_private_raw(private: X25519PrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def _x25519_clamp(raw: bytes) -> bytes:
    """RFC 7748 section 5's decodeScalar25519 on 32 little-endian bytes."""
    out = bytearray(raw)
    out[0] &= 248
    out[31] = (out[31] & 127) | 64
    return bytes(out)


def x25519_secret_matches(secret: Secret | bytes, public_bytes: bytes) -> bool:
    """Whether ``secret`` is *the* private key of ``public_bytes``: 32 bytes in clamped form
    whose X25519 public key is ``public_bytes``.

    The clamped form makes the answer unique: without it, the 32 values that differ in the
    bits clamping overwrites all pass (attacker review 6: a holder shifted its Shamir share so
    the rebuilt key was ``key + 2^248`` and got an honest holder blamed). Among clamped
    scalars (multiples of 8 in ``[2^254, 2^255)``) two with one public key differ by, or sum
    to, a multiple of ``8 * l`` (``l`` the base point's order, ``8 * l > 2^255``): only the
    pairs summing to ``8 * l``, which needs a key within ``2^128`` of ``2^254`` (probability
    under ``2^-125`` for a generated key).
    """
    raw = secret.reveal() if isinstance(secret, Secret) else bytes(secret)
    if len(raw) != 32 or not hmac.compare_digest(raw, _x25519_clamp(raw)):
        return False
    derived = _raw_public(X25519PrivateKey.from_private_bytes(raw).public_key())
    return hmac.compare_digest(derived, bytes(public_bytes))


def _raw_public(public: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def x25519_exchange(private_key: X25519PrivateKey, peer_public: bytes) -> Secret:
    """X25519(private, peer) -> 32-byte shared secret.

    Raises:
        CryptoError: the peer key is malformed or a low-order point (all-zero output).
    """
    if not isinstance(peer_public, (bytes, bytearray)) or len(peer_public) != 32:
        raise CryptoError("an X25519 public key is 32 bytes")
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))
    except ValueError:
        raise CryptoError("X25519 exchange refused the peer public key (low-order point)") from None
    return Secret(shared)


# ---------------------------------------------------------------------------- Ed25519
@dataclass(frozen=True, slots=True)
class Ed25519KeyPair:
    """An Ed25519 signing key pair (RFC 8032). The private key never prints."""

    private_key: Ed25519PrivateKey = field(repr=False)
    public_bytes: bytes

    @classmethod
    def generate(cls) -> "Ed25519KeyPair":
        """A fresh signing key pair."""
        private = Ed25519PrivateKey.generate()
        return cls(private, _raw_public(private.public_key()))

    def sign(self, message: bytes) -> bytes:
        """A 64-byte signature of ``message``."""
        return self.private_key.sign(message)

    @classmethod
    def from_private_bytes(cls, raw: bytes | Secret) -> "Ed25519KeyPair":
        """The key pair of a 32-byte raw private key (RFC 8032 seed).

        Raises:
            CryptoError: not 32 bytes.
        """
        value = raw.reveal() if isinstance(raw, Secret) else bytes(raw)
        if len(value) != 32:
            raise CryptoError("an Ed25519 private key is 32 bytes")
        private = Ed25519PrivateKey.from_private_bytes(value)
        return cls(private, _raw_public(private.public_key()))

    def private_bytes(self) -> Secret:
        """The 32-byte raw private key, wrapped so that it never prints."""
        return Secret(self.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))


def ed25519_verify(public_bytes: bytes, signature: bytes, message: bytes) -> None:
    """Verify an Ed25519 signature.

    Raises:
        InvalidSignature: bad key encoding, bad signature length or a failed check.
    """
    if len(public_bytes) != 32 or len(signature) != 64:
        raise InvalidSignature("Ed25519 keys are 32 bytes and signatures 64 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_bytes)).verify(bytes(signature), bytes(message))
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature("Ed25519 signature does not verify") from None


# ---------------------------------------------------------------------------- HKDF
def hkdf_sha256(ikm: bytes | Secret, *, salt: bytes | None, info: bytes, length: int = 32) -> Secret:
    """HKDF-SHA256 (RFC 5869) extract-and-expand."""
    material = ikm.reveal() if isinstance(ikm, Secret) else bytes(ikm)
    key = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(material)
    return Secret(key)


def _label(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def derive_key(
    shared_secret: Secret | bytes,
    *,
    protocol: str,
    purpose: str,
    round_id: int,
    party_a: int,
    party_b: int,
    salt: bytes | None = None,
    length: int = 32,
) -> Secret:
    """Derive a key bound to (protocol, purpose, round, unordered pair {a, b}).

    The two ids are sorted so both ends of a pair derive the same key. Every field is
    length-prefixed in ``info`` so no two distinct contexts encode to the same bytes.
    """
    low, high = sorted((int(party_a), int(party_b)))
    info = b"".join([b"fedcrypt/v1", _label(protocol), _label(purpose), struct.pack(">QQQ", int(round_id), low, high)])
    return hkdf_sha256(shared_secret, salt=salt, info=info, length=length)


# ---------------------------------------------------------------------------- AEAD
def aead_encrypt(key: Secret | bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM with a fresh random 96-bit nonce: ``nonce || ciphertext || tag``."""
    raw_key = key.reveal() if isinstance(key, Secret) else bytes(key)
    if len(raw_key) != 32:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    nonce = os.urandom(AEAD_NONCE_BYTES)
    return nonce + AESGCM(raw_key).encrypt(nonce, bytes(plaintext), bytes(associated_data))


def aead_decrypt(key: Secret | bytes, blob: bytes, associated_data: bytes) -> bytes:
    """Inverse of :func:`aead_encrypt`.

    Raises:
        DecryptionError: too short, wrong key, wrong associated data or tampered.
    """
    raw_key = key.reveal() if isinstance(key, Secret) else bytes(key)
    if len(raw_key) != 32:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    if len(blob) < AEAD_OVERHEAD:
        raise DecryptionError("ciphertext shorter than nonce and tag")
    nonce, body = bytes(blob[:AEAD_NONCE_BYTES]), bytes(blob[AEAD_NONCE_BYTES:])
    try:
        return AESGCM(raw_key).decrypt(nonce, body, bytes(associated_data))
    except InvalidTag:
        raise DecryptionError("authenticated decryption failed") from None


# ---------------------------------------------------------------------------- mask PRG
_PRG_CHUNK = 1 << 18  # 256 KiB: stays in L2 while it is consumed
_ZEROS = bytes(_PRG_CHUNK)
_BLOCK_SLACK = 15  # `update_into` wants len(data) + block_size - 1 bytes of room
_ACCUMULATE_CHUNK = 1 << 17  # 128 KiB: keystream buffer and accumulator slice share L2


def _ring_dtype(bits: int) -> np.dtype:
    if bits == 32:
        return np.dtype("<u4")
    if bits == 64:
        return np.dtype("<u8")
    raise ValueError(f"bits must be 32 or 64, got {bits!r}")


def _keystream_encryptor(seed: Secret | bytes):
    raw = seed.reveal() if isinstance(seed, Secret) else bytes(seed)
    if len(raw) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes")
    # A fixed zero nonce is safe: every seed is a fresh uniformly random or HKDF-derived
    # key that is expanded exactly once per (round, purpose).
    return Cipher(algorithms.AES(raw), modes.CTR(b"\x00" * 16)).encryptor()


def mask_prg(seed: Secret | bytes, length: int, bits: int = 32) -> np.ndarray:
    """Expand a 256-bit seed into ``length`` uniform ring elements (AES-256-CTR keystream).

    The keystream is written by `cryptography` straight into the numpy buffer in
    ``_PRG_CHUNK`` blocks; there is no per-element Python work.

    Args:
        seed: 32 secret bytes.
        length: number of ring elements.
        bits: 32 (uint32) or 64 (uint64); elements are little-endian.
    """
    dtype = _ring_dtype(bits)
    if length < 0:
        raise ValueError("length must be >= 0")
    nbytes = int(length) * dtype.itemsize
    raw = np.empty(nbytes + _BLOCK_SLACK, dtype=np.uint8)
    encryptor = _keystream_encryptor(seed)
    out = raw.data  # a memoryview of raw's buffer
    for start in range(0, nbytes, _PRG_CHUNK):
        n = min(_PRG_CHUNK, nbytes - start)
        encryptor.update_into(_ZEROS[:n] if n < _PRG_CHUNK else _ZEROS, out[start : start + n + _BLOCK_SLACK])
    return raw[:nbytes].view(dtype)


def mask_accumulate(accumulator: np.ndarray, masks: Sequence[tuple[Secret | bytes, int]]) -> None:
    """Add (sign +1) or subtract (sign -1) the masks of several seeds into a ring vector, in place.

    The result is identical to ``accumulator += sign * mask_prg(seed, len(accumulator), bits)``
    for every ``(seed, sign)`` (mod 2^bits), but PRG expansion and accumulation are fused:
    each keystream is produced chunk by chunk into one reusable cache-sized buffer and
    added to the matching slice of the accumulator while both are still in cache, so no
    full-length mask is ever allocated.

    Args:
        accumulator: a contiguous 1-D ``uint32`` or ``uint64`` vector, modified in place.
        masks: ``(seed, sign)`` pairs; seeds are 32 bytes, signs are +1 or -1.

    Raises:
        TypeError: ``accumulator`` is not a contiguous 1-D uint32/uint64 numpy vector.
        ValueError: a sign other than +1/-1 or a seed of the wrong length (checked for every
            pair before anything is written).
    """
    if not isinstance(accumulator, np.ndarray):
        raise TypeError(f"accumulator must be a numpy vector, got {type(accumulator).__name__}")
    if accumulator.dtype not in (np.uint32, np.uint64) or accumulator.ndim != 1:
        raise TypeError(f"accumulator must be a 1-D uint32 or uint64 vector, got {accumulator.ndim}-D {accumulator.dtype}")
    if not accumulator.flags.c_contiguous or not accumulator.flags.writeable:
        raise TypeError("accumulator must be C-contiguous and writeable")
    streams = []
    for seed, sign in masks:
        if sign not in (1, -1):
            raise ValueError(f"mask sign must be +1 or -1, got {sign!r}")
        streams.append((_keystream_encryptor(seed), sign == 1))
    if not streams or accumulator.shape[0] == 0:
        return
    itemsize = accumulator.dtype.itemsize
    chunk_elems = _ACCUMULATE_CHUNK // itemsize
    raw = np.empty(_ACCUMULATE_CHUNK + _BLOCK_SLACK, dtype=np.uint8)
    out = raw.data  # a memoryview of raw's buffer
    keystream = raw[:_ACCUMULATE_CHUNK].view(accumulator.dtype)
    zeros = _ZEROS[:_ACCUMULATE_CHUNK]
    total = accumulator.shape[0]
    for start in range(0, total, chunk_elems):
        count = min(chunk_elems, total - start)
        target = accumulator[start : start + count]
        if count == chunk_elems:
            source, piece = zeros, keystream
        else:
            source, piece = zeros[: count * itemsize], keystream[:count]
        for encryptor, add in streams:
            encryptor.update_into(source, out)
            if add:
                np.add(target, piece, out=target)
            else:
                np.subtract(target, piece, out=target)


# ---------------------------------------------------------------------------- Shamir
#: The Mersenne prime 2^521 - 1; every 32-byte secret is an element of GF(p).
SHAMIR_PRIME = (1 << 521) - 1
_SHARE_VALUE_BYTES = 66


@dataclass(frozen=True, slots=True)
class Share:
    """One Shamir share: the evaluation point ``x`` (1..2^16-1) and ``y = f(x)`` mod p."""

    x: int
    y: int = field(repr=False)

    def to_bytes(self) -> bytes:
        """``x`` (2 bytes, big-endian) || ``y`` (66 bytes, big-endian)."""
        return struct.pack(">H", self.x) + self.y.to_bytes(_SHARE_VALUE_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> "Share":
        """Strict decoder; raises :class:`InvalidShare` on a bad length or range."""
        if len(data) != 2 + _SHARE_VALUE_BYTES:
            raise InvalidShare(f"a share is {2 + _SHARE_VALUE_BYTES} bytes, got {len(data)}")
        (x,) = struct.unpack(">H", data[:2])
        y = int.from_bytes(data[2:], "big")
        if x == 0 or y >= SHAMIR_PRIME:
            raise InvalidShare("share point out of range")
        return cls(x, y)

    def __repr__(self) -> str:
        return f"Share(x={self.x}, y=<redacted>)"


SHARE_BYTES = 2 + _SHARE_VALUE_BYTES


def shamir_split(secret: Secret | bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Split a secret of at most 64 bytes into shares at points ``xs``, any ``threshold`` recover it.

    The polynomial's non-constant coefficients are drawn with ``secrets.randbelow``.

    Raises:
        ValueError: threshold < 1, threshold > len(xs), a point outside 1..65535 or repeated.
    """
    raw = secret.reveal() if isinstance(secret, Secret) else bytes(secret)
    if len(raw) > 64:
        raise ValueError("Shamir secrets are at most 64 bytes")
    points = [int(x) for x in xs]
    if threshold < 1 or threshold > len(points):
        raise ValueError(f"threshold must be in [1, {len(points)}], got {threshold}")
    if len(set(points)) != len(points) or any(not 0 < x < 1 << 16 for x in points):
        raise ValueError("share points must be distinct integers in 1..65535")
    coefficients = [int.from_bytes(raw, "big")] + [secrets.randbelow(SHAMIR_PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in points:
        y = 0
        for c in reversed(coefficients):
            y = (y * x + c) % SHAMIR_PRIME
        shares.append(Share(x, y))
    return shares


def shamir_combine(shares: Iterable[Share], threshold: int, secret_len: int = SEED_BYTES) -> Secret:
    """Recover the secret from at least ``threshold`` shares (Lagrange interpolation at 0).

    When more than ``threshold`` shares are given, every extra share is checked against the
    polynomial through the first ``threshold``: an inconsistent set raises.

    Raises:
        InvalidShare: fewer than ``threshold`` shares, duplicate points, a share that
            disagrees with the others, or a result that does not fit ``secret_len`` bytes.
    """
    share_list = list(shares)
    if threshold < 1:
        raise ValueError("threshold must be >= 1")
    if len(share_list) < threshold:
        raise InvalidShare(f"{len(share_list)} shares given, {threshold} needed")
    xs = [s.x for s in share_list]
    if len(set(xs)) != len(xs):
        raise InvalidShare("duplicate share points")
    basis, extra = share_list[:threshold], share_list[threshold:]
    inverse = _inverse_denominators([s.x for s in basis])
    value = _interpolate(basis, 0, inverse)
    for share in extra:
        if _interpolate(basis, share.x, inverse) != share.y:
            raise InvalidShare("share set is inconsistent")
    if value >= 1 << (8 * secret_len):
        raise InvalidShare("reconstructed value does not fit the secret length")
    return Secret(value.to_bytes(secret_len, "big"))


def shamir_decode(
    shares: Iterable[Share],
    threshold: int,
    check: Callable[[Secret], bool],
    *,
    secret_len: int = SEED_BYTES,
    max_candidates: int = 1024,
) -> tuple[Secret, frozenset[int]]:
    """Recover a secret from shares some of which may be wrong, and say which are wrong.

    ``check`` recognises the secret and must accept exactly one value (a hash commitment;
    for an X25519 key :func:`x25519_secret_matches`, never a bare public-key comparison:
    clamping gives each public key 32 raw secrets). With ``N`` shares, threshold ``t`` and
    ``b`` wrong shares:

    * ``b <= floor((N - t) / 2)``: Gao's Reed-Solomon decoder (O(N^2) field operations,
      about 0.25 s at N = 300) returns the dealer's polynomial, unique within that radius;
      the result is the secret and the points of exactly the wrong shares.
    * ``b = e = floor((N - t + 1) / 2)`` (one more, when ``N - t`` is odd): the bases
      searched are the ``t``-subsets of the first ``t + r`` shares that leave out ``r`` of
      them, ``r = 0, 1, ...``, at most ``max_candidates``; one of them is clean when the
      wrong shares lie early enough, else InvalidShare. A basis is accepted when its secret
      passes ``check`` and at most ``e`` shares lie off its polynomial. It never blames a
      correct share: a basis with one wrong share interpolates a wrong secret (its Lagrange
      coefficient at 0 is non-zero); a basis with two or more that passes ``check`` has a
      polynomial ``g != f`` with ``g(0) = f(0)``, so it meets at most ``t - 2`` correct
      shares and more than ``e`` lie off it. A Gao result that passes ``check`` is ``f``
      here too (a ``g`` within ``(N - t) / 2`` of the shares is at distance ``N - t + 1``
      from ``f``, the code's minimum, so ``g(0) = f(0)`` would make ``g - f`` have ``t``
      roots).
    * ``b > e``: never a wrong secret (whatever is returned passed ``check``), but the
      blame can be wrong: ``b`` colluding holders can put their shares on a ``g`` with
      ``g(0) = f(0)`` through all but ``e`` correct shares, which then look wrong. Sound
      blame beyond ``e`` needs shares the dealer commits to (verifiable secret sharing).

    Raises:
        InvalidShare: fewer than ``threshold`` shares or repeated points, or no candidate
            passes (more wrong shares than the decoder and the search reach).
    """
    share_list = list(shares)
    t, n, p = threshold, len(share_list), SHAMIR_PRIME
    if t < 1:
        raise ValueError("threshold must be >= 1")
    if n < t:
        raise InvalidShare(f"{n} shares given, {t} needed")
    if len({s.x for s in share_list}) != n:
        raise InvalidShare("duplicate share points")
    limit, tolerated, tried = 1 << (8 * secret_len), (n - t + 1) // 2, 0
    decoded = _gao_decode(share_list, t)
    if decoded is not None and decoded[0][0] < limit:
        secret = Secret(decoded[0][0].to_bytes(secret_len, "big"))
        if check(secret):
            return secret, decoded[1]
    # one more wrong share than Gao corrects (N - t odd), or more than e: the bounded search
    for r in range(min(tolerated, n - t) + 1):
        prefix = share_list[: t + r]
        xs = [s.x for s in prefix]
        inverse = _inverse_denominators(xs)
        negated_inverse = [pow(-x % p, -1, p) for x in xs]
        everything = 1
        for x in xs:
            everything = everything * (-x % p) % p
        # y_i times the Lagrange coefficient at 0 over the whole prefix; leaving out the points K
        # multiplies coefficient i by prod_{j in K} (x_i - x_j) / (-x_j)
        weights = [prefix[i].y * everything % p * negated_inverse[i] % p * inverse[i] % p for i in range(t + r)]
        for removed in combinations(range(t + r), r):
            tried += 1
            if tried > max_candidates:
                raise InvalidShare(f"no {t} of the {n} shares passed the check within {max_candidates} tries")
            value = 0
            for i in range(t + r):
                if i not in removed:
                    term = weights[i]
                    for j in removed:
                        term = term * (xs[i] - xs[j]) % p
                    value += term
            for j in removed:
                value = value % p * negated_inverse[j]
            value %= p
            if value >= limit:
                continue
            secret = Secret(value.to_bytes(secret_len, "big"))
            if not check(secret):
                continue
            basis = [prefix[i] for i in range(t + r) if i not in removed]
            used = {s.x for s in basis}
            basis_inverse = _inverse_denominators([s.x for s in basis])
            wrong = frozenset(s.x for s in share_list if s.x not in used and _interpolate(basis, s.x, basis_inverse) != s.y)
            if len(wrong) <= tolerated:
                return secret, wrong
    raise InvalidShare(f"no {t} of the {n} shares passed the check with at most {tolerated} wrong")


def _poly_eval(coefficients: Sequence[int], at: int) -> int:
    """Horner's rule mod p (``coefficients`` lowest degree first)."""
    p, value = SHAMIR_PRIME, 0
    for c in reversed(coefficients):
        value = (value * at + c) % p
    return value


def _poly_trim(a: list[int]) -> list[int]:
    while a and a[-1] == 0:
        a.pop()
    return a


def _poly_divmod(a: Sequence[int], b: Sequence[int]) -> tuple[list[int], list[int]]:
    """Quotient and remainder of polynomials mod p (``b`` trimmed and non-zero)."""
    p = SHAMIR_PRIME
    rem, db = list(a), len(b) - 1
    if len(rem) <= db:
        return [], _poly_trim(rem)
    inv_lead = pow(b[-1], -1, p)
    quotient = [0] * (len(rem) - db)
    for k in range(len(rem) - 1 - db, -1, -1):
        c = rem[k + db] * inv_lead % p
        quotient[k] = c
        if c:
            for j in range(db + 1):
                rem[k + j] = (rem[k + j] - c * b[j]) % p
    return _poly_trim(quotient), _poly_trim(rem[:db])


def _poly_mul(a: Sequence[int], b: Sequence[int]) -> list[int]:
    p = SHAMIR_PRIME
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        if ai:
            for j, bj in enumerate(b):
                out[i + j] = (out[i + j] + ai * bj) % p
    return _poly_trim(out)


def _gao_decode(shares: Sequence[Share], threshold: int) -> tuple[list[int], frozenset[int]] | None:
    """The polynomial of degree < ``threshold`` within ``floor((N - threshold) / 2)`` of the
    ``N`` shares and the points of the shares off it, or ``None``: Gao's Reed-Solomon decoder (S. Gao, "A new algorithm for
    decoding Reed-Solomon codes", 2003), O(N^2) field operations.

    Interpolate ``g1`` through every share, take ``g0 = prod (X - x_i)``, run the extended
    Euclidean algorithm on ``(g0, g1)`` until the remainder's degree falls below
    ``(N + threshold) / 2``, then ``f = remainder / v``. With at most that many wrong shares
    ``f`` is the dealer's polynomial (unique: the code's minimum distance is ``N - t + 1``);
    the result is checked here (degree, and at most the radius of shares off it) so a
    ``None`` is the only other answer.
    """
    p, n, t = SHAMIR_PRIME, len(shares), threshold
    radius = (n - t) // 2
    xs = [s.x for s in shares]
    g0 = [1]
    for x in xs:  # times (X - x)
        g0 = [(lo - x * hi) % p for lo, hi in zip([0, *g0], [*g0, 0])]
    g1 = [0] * n
    for share, inverse in zip(shares, _inverse_denominators(xs)):
        weight = share.y * inverse % p
        if not weight:
            continue
        carry = 0  # g0 / (X - x_i) by synthetic division, added in with the weight
        for k in range(n, 0, -1):
            carry = (g0[k] + carry * share.x) % p
            g1[k - 1] = (g1[k - 1] + weight * carry) % p
    r_prev, r = _poly_trim(g0), _poly_trim(g1)
    v_prev: list[int] = []
    v = [1]
    while 2 * (len(r) - 1) >= n + t:
        q, rem = _poly_divmod(r_prev, r)
        qv = _poly_mul(q, v)
        width = max(len(v_prev), len(qv))
        v_next = _poly_trim([((v_prev[i] if i < len(v_prev) else 0) - (qv[i] if i < len(qv) else 0)) % p for i in range(width)])
        r_prev, r, v_prev, v = r, rem, v, v_next
    if not v:
        return None
    f, rem = _poly_divmod(r, v)
    if rem or len(f) > t:
        return None
    f = f or [0]
    wrong = frozenset(share.x for share in shares if _poly_eval(f, share.x) != share.y)
    return (f, wrong) if len(wrong) <= radius else None


def _interpolate(shares: Sequence[Share], at: int, inverse_denominators: Sequence[int] | None = None) -> int:
    """Lagrange interpolation of the polynomial through ``shares``, evaluated at ``at``.

    ``f(at) = sum_i y_i * prod_{j != i} (at - x_j) / (x_i - x_j)`` mod p; the numerators come
    from prefix and suffix products, the inverse denominators from :func:`_inverse_denominators`.
    """
    p = SHAMIR_PRIME
    xs = [s.x for s in shares]
    inverse = inverse_denominators if inverse_denominators is not None else _inverse_denominators(xs)
    count = len(xs)
    factors = [(at - x) % p for x in xs]
    prefix = [1] * (count + 1)
    for i, f in enumerate(factors):
        prefix[i + 1] = prefix[i] * f % p
    suffix = 1
    total = 0
    for i in range(count - 1, -1, -1):
        total = (total + shares[i].y * (prefix[i] * suffix % p) % p * inverse[i]) % p
        suffix = suffix * factors[i] % p
    return total


def _inverse_denominators(xs: Sequence[int]) -> list[int]:
    """``1 / prod_{j != i} (x_i - x_j)`` mod p for every i, with one modular inversion."""
    p = SHAMIR_PRIME
    denominators = []
    for i, xi in enumerate(xs):
        d = 1
        for j, xj in enumerate(xs):
            if i != j:
                d = d * (xi - xj) % p
        denominators.append(d)
    # Montgomery's batch inversion
    running = [1] * (len(xs) + 1)
    for i, d in enumerate(denominators):
        running[i + 1] = running[i] * d % p
    inv = pow(running[-1], -1, p)
    result = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        result[i] = inv * running[i] % p
        inv = inv * denominators[i] % p
    return result
