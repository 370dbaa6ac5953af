"""Private codec of an encrypted vector (an upload or an aggregate): a fixed header and the
sized OpenFHE ciphertexts, shared by the key holder and the server.

Invariants: the decoder checks magic, version, kind, the fingerprint (in constant time,
:class:`~fedcrypt.errors.ContextMismatchError` on a mismatch), the length, the claimed
contributions and weight against the parameters, the ciphertext count and every size cap
before any ciphertext is parsed.
"""

from __future__ import annotations

import hmac
import math
import struct
from dataclasses import dataclass
from typing import Sequence

from fedcrypt._wire import Reader
from fedcrypt.errors import ContextMismatchError, MalformedMessageError

from ._common import MAX_VALUES, OLD_VERSION_MESSAGE, VERSION, ciphertext_cap, length_prefixed
from .messages import BlobKind
from .params import ThresholdParams

_BLOB_MAGIC = b"FCTB"
_BLOB_HEAD = struct.Struct(">4sBB32sQIdI")


@dataclass(frozen=True, slots=True)
class BlobHeader:
    """The public header of an encrypted vector (an upload or an aggregate)."""

    kind: BlobKind
    fingerprint: bytes
    length: int
    contributions: int
    total_weight: float
    count: int


def encode_blob(header: BlobHeader, pieces: Sequence[bytes]) -> bytes:
    """Canonical bytes: the fixed header, then every ciphertext behind its length."""
    head = _BLOB_HEAD.pack(
        _BLOB_MAGIC,
        VERSION,
        int(header.kind),
        header.fingerprint,
        header.length,
        header.contributions,
        header.total_weight,
        header.count,
    )
    return head + b"".join(length_prefixed(p) for p in pieces)


def decode_blob(
    data: bytes | bytearray | memoryview, params: ThresholdParams, fingerprint: bytes, kinds: tuple[BlobKind, ...]
) -> tuple[BlobHeader, list[bytes]]:
    """Strictly split an encrypted vector into its header and ciphertext bytes.

    Raises:
        ContextMismatchError: it was made under another threshold key.
        MalformedMessageError: anything else wrong with the framing, or a kind not in ``kinds``.
    """
    reader = Reader(data, "encrypted vector")  # TypeError unless bytes
    if reader.remaining < _BLOB_HEAD.size:
        raise reader.error("truncated header")
    magic, version, kind, fp, length, contributions, total_weight, count = reader.unpack(_BLOB_HEAD)
    if magic == _BLOB_MAGIC and version == 2:
        raise MalformedMessageError(OLD_VERSION_MESSAGE.format(what="encrypted vector"))
    if magic != _BLOB_MAGIC or version != VERSION:
        raise reader.error("bad magic or version")
    if kind not in (BlobKind.UPLOAD, BlobKind.AGGREGATE):
        raise reader.error(f"unknown kind {kind}")
    if not hmac.compare_digest(fp, fingerprint):
        raise ContextMismatchError("encrypted vector was made under another threshold key (fingerprint mismatch)")
    if BlobKind(kind) not in kinds:
        raise reader.error(f"kind {BlobKind(kind).name} is not accepted here")
    if not 1 <= length <= MAX_VALUES:
        raise reader.error(f"length {length} outside [1, {MAX_VALUES}]")
    if contributions < 1 or not (math.isfinite(total_weight) and total_weight > 0):
        raise reader.error("bad contribution count or total weight")
    if contributions > params.num_clients or total_weight > contributions * params.max_weight:
        raise reader.error("more contributions or weight than the parameters allow")
    if kind == BlobKind.UPLOAD and contributions != 1:
        raise reader.error("an upload has one contribution")
    expected = -(-length // params.values_per_ciphertext)
    if count != expected:
        raise reader.error(f"{count} ciphertexts for {length} values (expected {expected})")
    cap = ciphertext_cap(params, 2)
    if reader.size > _BLOB_HEAD.size + count * (4 + cap):
        raise reader.error("oversized")
    pieces = [reader.sized(cap, f"ciphertext {i}") for i in range(count)]
    reader.expect_end()
    return BlobHeader(BlobKind(kind), fp, length, contributions, total_weight, count), pieces
