"""The byte format of encrypted vectors (client uploads and aggregates), strictly decoded.

Layout, big-endian::

    magic "FCHE" (4) | version (1) | kind (1: upload, 2: aggregate)
    context fingerprint (32)                  SHA-256 of the parameters and the key id
    length (8)                                number of values d of the plain vector
    flags (1) | TensorSpec digest (32)        flag bit 0: a digest is present (else zeros)
    contributions (4) | total weight (8, float64)
    ciphertext count (4)
    count x [ size (4) | SEAL ciphertext (size bytes, uncompressed; see fedcrypt.he._seal) ]
    aggregate only, its provenance: contributions x [ weight (8, float64) | count x seed (65) ]

An upload's ciphertexts are seeded (their second polynomial ``a`` is stored as the 65-byte
PRNG record SEAL expands it from). An aggregate lists, for every upload summed in, the
weight it was added with and its ciphertexts' seed records: a decryptor recomputes the
aggregate's second polynomials from them (``sum_i w_i a_i``) and decrypts only if they
match, so nobody without the key can choose what the secret key is multiplied by
(:mod:`fedcrypt.he._provenance`; SECURITY.md, attacker review 3).

Invariants:

* :func:`decode_blob` checks magic, version, kind, flags and every length against caps
  derived from the parameters *before* it slices anything: the ciphertext count must be
  exactly ``ceil(d / params.values_per_ciphertext)`` (``N`` values with complex packing,
  ``N/2`` with real packing), each ciphertext at most the size of a full (unseeded)
  ciphertext at its level, the total size exactly the sum of the parts;
* the fingerprint is compared in constant time and a mismatch raises
  :class:`~fedcrypt.errors.ContextMismatchError` before any ciphertext is parsed;
* an aggregate's contributions are at most ``params.num_clients`` and its provenance is
  exactly ``contributions * (8 + count * 65)`` bytes, every weight positive and finite;
* the decoder never allocates more than a small constant beyond the input it was given
  (the provenance's seeds are copies of at most that many input bytes);
* each ciphertext's bytes are then checked field by field by
  :func:`fedcrypt.he._seal.check_seal_bytes` before SEAL loads them (compressed SEAL objects
  are refused).
"""

from __future__ import annotations

import hmac
import math
import struct
from dataclasses import dataclass, replace

from fedcrypt._wire import Reader
from fedcrypt.errors import ContextMismatchError
from fedcrypt.he._seal import SEED_BYTES  # a SEAL seed record: prng_type (1) | seed (64)
from fedcrypt.he.params import CkksParams

__all__ = ["BlobHeader", "BlobKind", "encode_blob", "decode_blob", "peek_header", "MAX_VALUES", "HEADER_BYTES", "SEED_BYTES"]

_MAGIC = b"FCHE"
_WHAT = "encrypted vector"
#: 3: aggregates carry their provenance (weights and seeds); 2: complex packing
#: (``params.values_per_ciphertext`` values per ciphertext). Older blobs are refused with a
#: message that says so.
_VERSION = 3
_WEIGHT = struct.Struct(">d")

_HEADER = struct.Struct(">4sBB32sQB32sIdI")
#: bytes of the fixed header
HEADER_BYTES = _HEADER.size
#: the longest vector a blob may describe (2^32 values)
MAX_VALUES = 1 << 32
_SIZE = struct.Struct(">I")
#: Room for SEAL's headers and metadata (outer, DynArray, seed: under 200 bytes) with margin.
_SEAL_SLACK = 16 + 4096


class BlobKind:
    """Kinds of blob: a client's upload or a server's aggregate."""

    UPLOAD = 1
    AGGREGATE = 2


@dataclass(frozen=True, slots=True)
class BlobHeader:
    """The public header of an encrypted vector.

    Attributes:
        kind: :attr:`BlobKind.UPLOAD` or :attr:`BlobKind.AGGREGATE`.
        fingerprint: the context fingerprint it was made under.
        length: number of plain values d.
        spec_digest: the TensorSpec digest the client declared, or None.
        contributions: number of uploads summed in (1 for an upload).
        total_weight: sum of the weights applied (1.0 for an upload).
        ciphertext_count: ``ceil(length / params.values_per_ciphertext)``.
        provenance: an aggregate's summands in the order they were added: ``(weight,
            seed records of the upload's ciphertexts)`` each; empty for an upload (and for
            :func:`peek_header`, which reads the fixed header only).
    """

    kind: int
    fingerprint: bytes
    length: int
    spec_digest: bytes | None
    contributions: int
    total_weight: float
    ciphertext_count: int
    provenance: tuple[tuple[float, tuple[bytes, ...]], ...] = ()


def max_ciphertext_bytes(params: CkksParams, kind: int) -> int:
    """Cap on one serialised ciphertext: two full polynomials at the blob's level."""
    primes = params.upload_level + 1 if kind == BlobKind.UPLOAD else 1
    return 2 * params.poly_modulus_degree * primes * 8 + _SEAL_SLACK


def encode_blob(header: BlobHeader, ciphertexts: list[bytes]) -> bytes:
    """Serialise a header and its SEAL ciphertexts."""
    if len(ciphertexts) != header.ciphertext_count:
        raise ValueError("ciphertext count does not match the header")
    if header.kind == BlobKind.AGGREGATE:
        if len(header.provenance) != header.contributions or any(
            len(seeds) != header.ciphertext_count or any(len(seed) != SEED_BYTES for seed in seeds) for _, seeds in header.provenance
        ):
            raise ValueError("an aggregate's provenance needs one entry per contribution, one seed per ciphertext")
    elif header.provenance:
        raise ValueError("an upload has no provenance")
    parts = [
        _HEADER.pack(
            _MAGIC,
            _VERSION,
            header.kind,
            header.fingerprint,
            header.length,
            1 if header.spec_digest is not None else 0,
            header.spec_digest if header.spec_digest is not None else bytes(32),
            header.contributions,
            header.total_weight,
            header.ciphertext_count,
        )
    ]
    for ct in ciphertexts:
        parts.append(_SIZE.pack(len(ct)))
        parts.append(ct)
    for weight, seeds in header.provenance:
        parts.append(_WEIGHT.pack(weight))
        parts.extend(seeds)
    return b"".join(parts)


def peek_header(blob: bytes) -> BlobHeader:
    """Decode only the fixed header (no parameters needed); checks magic, version, flags.

    Raises:
        MalformedMessageError: truncated, wrong magic or version, unknown kind or flags.
    """
    return _read_header(Reader(blob, _WHAT))


def _read_header(reader: Reader) -> BlobHeader:
    """The fixed header at the front of a blob, every field checked (the reader moves past it)."""
    if reader.remaining < HEADER_BYTES:
        raise reader.error(f"truncated header ({reader.remaining} < {HEADER_BYTES} bytes)")
    magic, version, kind, fingerprint, length, flags, digest, contributions, total_weight, count = reader.unpack(_HEADER)
    if magic != _MAGIC:
        raise reader.error("bad magic")
    if version in (1, 2):
        raise reader.error(
            f"version {version} (made before {'complex packing' if version == 1 else 'aggregate provenance'}) "
            "is no longer accepted; re-encrypt under a context of this version"
        )
    if version != _VERSION:
        raise reader.error(f"unsupported version {version}")
    if kind not in (BlobKind.UPLOAD, BlobKind.AGGREGATE):
        raise reader.error(f"unknown kind {kind}")
    if flags not in (0, 1) or (flags == 0 and digest != bytes(32)):
        raise reader.error(f"bad flags {flags}")
    if not 1 <= length <= MAX_VALUES:
        raise reader.error(f"length {length} outside [1, {MAX_VALUES}]")
    if contributions < 1 or (kind == BlobKind.UPLOAD and (contributions != 1 or total_weight != 1.0)):
        raise reader.error("bad contribution count or weight")
    if not (math.isfinite(total_weight) and total_weight > 0):
        raise reader.error("total weight is not a positive finite number")
    return BlobHeader(kind, fingerprint, length, digest if flags else None, contributions, total_weight, count)


def decode_blob(blob: bytes, params: CkksParams, fingerprint: bytes, *, kinds: tuple[int, ...]) -> tuple[BlobHeader, list[memoryview]]:
    """Strictly split a blob into its header and ciphertext byte ranges.

    Args:
        blob: the bytes.
        params: the parameters the receiver expects (slot count, size caps).
        fingerprint: the receiver's context fingerprint.
        kinds: blob kinds the receiver accepts.

    Raises:
        ContextMismatchError: the blob was made under another context.
        MalformedMessageError: anything else wrong with the framing.
    """
    reader = Reader(blob, _WHAT)
    header = _read_header(reader)
    if not hmac.compare_digest(header.fingerprint, fingerprint):
        raise ContextMismatchError("encrypted vector was made under another CKKS context (fingerprint mismatch)")
    if header.kind not in kinds:
        raise reader.error(f"kind {header.kind} is not accepted here (expected {kinds})")
    expected_count = -(-header.length // params.values_per_ciphertext)
    if header.ciphertext_count != expected_count:
        raise reader.error(f"{header.ciphertext_count} ciphertexts for {header.length} values (expected {expected_count})")
    aggregate = header.kind == BlobKind.AGGREGATE
    if aggregate and header.contributions > params.num_clients:
        raise reader.error(f"{header.contributions} contributions, beyond num_clients={params.num_clients}")
    trailer = header.contributions * (_WEIGHT.size + expected_count * SEED_BYTES) if aggregate else 0
    cap = max_ciphertext_bytes(params, header.kind)
    if reader.size > HEADER_BYTES + expected_count * (_SIZE.size + cap) + trailer:
        raise reader.error(f"{reader.size} bytes exceed the cap for {expected_count} ciphertexts")
    pieces = [reader.sized_view(cap, f"ciphertext {index}") for index in range(expected_count)]
    if aggregate:
        if reader.remaining != trailer:
            raise reader.error(f"provenance of {reader.remaining} bytes, expected {trailer}")
        provenance = []
        for _ in range(header.contributions):
            (weight,) = reader.unpack(_WEIGHT)
            if not (math.isfinite(weight) and weight > 0):
                raise reader.error("a provenance weight is not a positive finite number")
            provenance.append((weight, tuple(reader.take(SEED_BYTES) for _ in range(expected_count))))
        header = replace(header, provenance=tuple(provenance))
    reader.expect_end()
    return header, pieces
