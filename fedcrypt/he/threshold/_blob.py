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

from fedcrypt.errors import ContextMismatchError, MalformedMessageError

from ._common import MAX_VALUES, OLD_VERSION_MESSAGE, VERSION, _Reader, as_bytes, ciphertext_cap, length_prefixed
from .messages import BlobKind
from .params import ThresholdParams

_BLOB_MAGIC = b"FCTB"
_BLOB_HEAD = struct.Struct(">4sBB32sQIdI")


@dataclass(frozen=True, slots=True)
class BlobHeader:
    kind: BlobKind
    fingerprint: bytes
    length: int
    contributions: int
    total_weight: float
    count: int


def encode_blob(header: BlobHeader, pieces: Sequence[bytes]) -> bytes:
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
    data: object, params: ThresholdParams, fingerprint: bytes, kinds: tuple[BlobKind, ...]
) -> tuple[BlobHeader, list[bytes]]:
    blob = as_bytes(data)
    if len(blob) < _BLOB_HEAD.size:
        raise MalformedMessageError("encrypted vector: truncated header")
    magic, version, kind, fp, length, contributions, total_weight, count = _BLOB_HEAD.unpack_from(blob, 0)
    if magic == _BLOB_MAGIC and version == 2:
        raise MalformedMessageError(OLD_VERSION_MESSAGE.format(what="encrypted vector"))
    if magic != _BLOB_MAGIC or version != VERSION:
        raise MalformedMessageError("encrypted vector: bad magic or version")
    if kind not in (BlobKind.UPLOAD, BlobKind.AGGREGATE):
        raise MalformedMessageError(f"encrypted vector: unknown kind {kind}")
    if not hmac.compare_digest(fp, fingerprint):
        raise ContextMismatchError("encrypted vector was made under another threshold key (fingerprint mismatch)")
    if BlobKind(kind) not in kinds:
        raise MalformedMessageError(f"encrypted vector: kind {BlobKind(kind).name} is not accepted here")
    if not 1 <= length <= MAX_VALUES:
        raise MalformedMessageError(f"encrypted vector: length {length} outside [1, {MAX_VALUES}]")
    if contributions < 1 or not (math.isfinite(total_weight) and total_weight > 0):
        raise MalformedMessageError("encrypted vector: bad contribution count or total weight")
    if contributions > params.num_clients or total_weight > contributions * params.max_weight:
        raise MalformedMessageError("encrypted vector: more contributions or weight than the parameters allow")
    if kind == BlobKind.UPLOAD and contributions != 1:
        raise MalformedMessageError("encrypted vector: an upload has one contribution")
    expected = -(-length // params.values_per_ciphertext)
    if count != expected:
        raise MalformedMessageError(f"encrypted vector: {count} ciphertexts for {length} values (expected {expected})")
    cap = ciphertext_cap(params, 2)
    if len(blob) > _BLOB_HEAD.size + count * (4 + cap):
        raise MalformedMessageError("encrypted vector: oversized")
    reader = _Reader(blob, "encrypted vector")
    reader.pos = _BLOB_HEAD.size
    pieces = [reader.sized(cap, f"ciphertext {i}") for i in range(count)]
    reader.end()
    return BlobHeader(BlobKind(kind), fp, length, contributions, total_weight, count), pieces
