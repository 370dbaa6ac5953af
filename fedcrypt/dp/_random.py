"""A cryptographic randomness source for privacy noise, vectorised over numpy buffers.

Privacy noise is security-relevant: an adversary who can predict it can subtract it. Every
random bit used by :mod:`fedcrypt.dp` therefore comes from the AES-256-CTR keystream
(through `cryptography`, as :func:`fedcrypt.crypto.mask_prg` does) keyed by a 256-bit
seed from :mod:`secrets`. NumPy's generators are never used here.

Invariants:

* :class:`CryptoRandom` never exposes its key: no attribute holds it, ``repr`` shows
  nothing, and it refuses to be pickled.
* :meth:`CryptoRandom.uniform53` returns ``(k + 0.5) / 2^53`` for ``k`` uniform in
  ``[0, 2^53)``: exactly uniform on that grid, never 0 and never 1.
* :meth:`CryptoRandom.bernoulli` returns ``u < p`` for a 53-bit uniform ``u`` on the
  grid ``k / 2^53``: exactly Bernoulli(``p'``) where ``p'`` is ``p`` rounded *down* to a
  multiple of 2^-53 (so the bias is below 2^-53 per trial).
* :meth:`CryptoRandom.randbelow` is exactly uniform on ``[0, bound)`` (Lemire's
  multiply-and-reject on 32-bit words, no modulo bias).
* A seeded source (``seed=``) is for reproducible tests only; it still runs through
  AES-CTR, so the statistics tested are those of the production path.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CryptoRandom"]

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
_SLACK = 15
_TWO53 = float(1 << 53)


class CryptoRandom:
    """Uniform words, uniforms, Bernoullis and bounded integers from AES-256-CTR.

    The keystream of a 256-bit key (fresh from :func:`secrets.token_bytes` unless a test
    seed is given) is consumed strictly sequentially, so no output bit is ever reused.

    Args:
        seed: ``None`` (production: a fresh key from the OS CSPRNG), or exactly 32 bytes
            for reproducible *tests only*.

    Threat model: the noise is as unpredictable as the AES-256 keystream of an unknown
    key; a party that does not know the key learns nothing about the samples beyond
    their distribution.
    """

    __slots__ = ("_encryptor",)

    def __init__(self, seed: bytes | None = None) -> None:
        if seed is None:
            key = secrets.token_bytes(32)
        else:
            if not isinstance(seed, (bytes, bytearray)):
                raise TypeError(f"seed must be bytes or None, got {type(seed).__name__}")
            if len(seed) != 32:
                raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
            key = bytes(seed)
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()

    def __repr__(self) -> str:
        return "<CryptoRandom AES-256-CTR>"

    __str__ = __repr__

    def __reduce__(self):  # copying the source would replay its noise
        raise TypeError("CryptoRandom objects cannot be pickled")

    # ------------------------------------------------------------------ raw words
    def bytes_array(self, nbytes: int) -> np.ndarray:
        """``nbytes`` keystream bytes as a uint8 array."""
        nbytes = int(nbytes)
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        raw = np.empty(nbytes + _SLACK, dtype=np.uint8)
        out = memoryview(raw.data)
        for start in range(0, nbytes, _CHUNK):
            n = min(_CHUNK, nbytes - start)
            self._encryptor.update_into(_ZEROS[:n] if n < _CHUNK else _ZEROS, out[start : start + n + _SLACK])
        return raw[:nbytes]

    def words64(self, size: int) -> np.ndarray:
        """``size`` uniform uint64 words."""
        return self.bytes_array(8 * int(size)).view("<u8")

    def words32(self, size: int) -> np.ndarray:
        """``size`` uniform uint32 words."""
        return self.bytes_array(4 * int(size)).view("<u4")

    # ------------------------------------------------------------------ derived
    def uniform53(self, size: int) -> np.ndarray:
        """``size`` float64 uniforms on the grid ``(k + 1/2) / 2^53``, in (0, 1)."""
        k = self.words64(size) >> np.uint64(11)
        return (k.astype(np.float64) + 0.5) / _TWO53

    def bernoulli(self, p: np.ndarray | float, size: int | None = None) -> np.ndarray:
        """Boolean array, entry ``i`` true with probability ``p[i]`` (rounded down to 2^-53).

        Args:
            p: probabilities in [0, 1] (scalar or array).
            size: number of trials when ``p`` is a scalar; defaults to ``p``'s size.
        """
        p_arr = np.asarray(p, dtype=np.float64)
        n = p_arr.size if size is None else int(size)
        if p_arr.ndim and p_arr.size != n:
            raise ValueError("size must match the number of probabilities")
        k = self.words64(n) >> np.uint64(11)  # uniform on [0, 2^53)
        # For an integer k: k < p 2^53  <=>  k < ceil(p 2^53); scaling by 2^53 is exact.
        threshold = np.ceil(np.clip(p_arr, 0.0, 1.0) * _TWO53).astype(np.uint64)
        return k < threshold

    @staticmethod
    def thresholds(p: np.ndarray | float) -> np.ndarray:
        """``ceil(p * 2^53)`` as uint64: precomputed thresholds for :meth:`bernoulli_below`."""
        return np.ceil(np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0) * _TWO53).astype(np.uint64)

    def bernoulli_below(self, thresholds: np.ndarray) -> np.ndarray:
        """``bernoulli(p)`` given ``thresholds(p)`` (same trials, the thresholds reused)."""
        return (self.words64(thresholds.size) >> np.uint64(11)) < thresholds

    def bits(self, size: int) -> np.ndarray:
        """``size`` fair coin flips as a boolean array (one keystream bit each)."""
        size = int(size)
        packed = self.bytes_array((size + 7) // 8)
        return np.unpackbits(packed, count=size, bitorder="little").astype(bool)

    def randbelow(self, bound: int | np.ndarray, size: int | None = None) -> np.ndarray:
        """Exactly uniform int64 integers in ``[0, bound)`` (``1 <= bound < 2^32``).

        Lemire's multiply-and-reject on 32-bit words: ``m = w * bound`` (64-bit), the
        result is ``m >> 32``, and a word is rejected when ``m mod 2^32 < 2^32 mod bound``,
        which leaves every result exactly ``floor(2^32 / bound)`` accepted words.
        """
        bound_arr = np.asarray(bound, dtype=np.uint64)
        n = bound_arr.size if size is None else int(size)
        scalar = bound_arr.ndim == 0
        if not scalar and bound_arr.size != n:
            raise ValueError("size must match the number of bounds")
        if n and (bound_arr.min() < 1 or bound_arr.max() >= np.uint64(1 << 32)):
            raise ValueError("bounds must be in [1, 2^32)")
        low_mask = np.uint64(0xFFFFFFFF)
        product = self.words32(n).astype(np.uint64) * bound_arr
        out = (product >> np.uint64(32)).astype(np.int64)
        # Rejections are rare (probability (2^32 mod bound) / 2^32): redraw only those.
        todo = np.flatnonzero((product & low_mask) < (np.uint64(1 << 32) - bound_arr) % bound_arr)
        while todo.size:
            b = bound_arr if scalar else bound_arr[todo]
            m = self.words32(todo.size).astype(np.uint64) * b
            ok = (m & low_mask) >= (np.uint64(1 << 32) - b) % b
            out[todo[ok]] = (m[ok] >> np.uint64(32)).astype(np.int64)
            todo = todo[~ok]
        return out
