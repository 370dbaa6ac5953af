"""Private helpers shared by the threshold-CKKS modules: the wire version, caps, framing,
checks of client inputs, the fingerprint and OpenFHE ciphertext loading.

Invariants: every cap here is derived from the public :class:`ThresholdParams`, so a decoder
knows the most bytes a field may hold before OpenFHE parses anything; nothing here holds or
logs a secret.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fedcrypt.errors import ContextMismatchError, EncodingError, MalformedMessageError
from fedcrypt.vectors import check_float_vector

from . import _runtime as _rt

if TYPE_CHECKING:
    from .params import ThresholdParams

#: 2: client-side weights and the headroom factor (uploads of version 1 differ).
#: 3: the parameters name the packing, two reals per complex slot by default (version 2 had
#: one real per slot); every message of version 2 is refused, the blob with a message that says so.
VERSION = 3
SESSION_BYTES = 32
MAX_VALUES = 1 << 32
#: OpenFHE's binary framing around the polynomials (context parameters, tags, lengths).
OPENFHE_SLACK = 8192

OLD_VERSION_MESSAGE = (
    "{what}: version 2 (one real per CKKS slot, before complex packing) is no longer accepted; "
    "run the key set-up again with this version (two reals per slot by default; packing='real' keeps one)"
)


def check_int(name: str, value: object) -> int:
    """``value`` if it is an int (not a bool), else a TypeError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def as_bytes(data: object) -> bytes:
    """``data`` as bytes, or a TypeError for anything that is not bytes-like."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    return bytes(data)


def public_key_cap(params: ThresholdParams) -> int:
    """The most bytes an OpenFHE public key may take under ``params``."""
    return 2 * params.ring_degree * 8 * (params.upload_level + 1) + OPENFHE_SLACK


def ciphertext_cap(params: ThresholdParams, elements: int) -> int:
    """The most bytes an OpenFHE ciphertext of ``elements`` polynomials may take."""
    return elements * params.ring_degree * 8 * (params.upload_level + 1) + OPENFHE_SLACK


def backup_cap(params: ThresholdParams) -> int:
    """The most bytes a key share or one Shamir piece of it may take (sealed or in state bytes)."""
    return params.ring_degree * 8 * (params.upload_level + 4) + OPENFHE_SLACK


def length_prefixed(blob: bytes) -> bytes:
    """``blob`` behind its big-endian 32-bit length (what ``Reader.sized`` reads)."""
    return struct.pack(">I", len(blob)) + blob


def session_fingerprint(params: ThresholdParams, session: bytes, joint_key: bytes) -> bytes:
    """SHA-256 of the parameters, the session and the joint key: what every blob is made under."""
    h = hashlib.sha256(b"fedcrypt threshold-ckks v1\x00")
    h.update(params.to_bytes())
    h.update(session)
    h.update(hashlib.sha256(joint_key).digest())
    return h.digest()


def load_ciphertexts(
    runtime: Any, pieces: Sequence[bytes], params: ThresholdParams, *, elements: int, what: str, key_tag: str | None = None
) -> list[Any]:
    """OpenFHE ciphertexts of ``pieces``, each checked for its element count, level, scale and
    ring, and (``key_tag`` given) for the joint key's tag.

    The tag is the one thing OpenFHE compares before it adds or fuses ciphertexts; a peer picks
    it freely (any hex digits pass the layout), so a first upload under another tag would make
    every honest upload after it unaddable (attacker review 7).

    Raises:
        MalformedMessageError: wrong shape, level, scale or ring.
        ContextMismatchError: another key's tag.
    """
    out = []
    for piece in pieces:
        ct = _rt.deserialize(runtime, "ciphertext", piece, what)
        try:
            ok = (
                ct.NumberCiphertextElements() == elements
                and ct.GetLevel() == 0
                and ct.GetNoiseScaleDeg() == 1
                and ct.GetCryptoContext().GetRingDimension() == params.ring_degree
                and abs(float(ct.GetScalingFactor()) - runtime.scale) <= runtime.scale * 1e-12
            )
        except Exception:
            ok = False
        if not ok:
            raise MalformedMessageError(f"{what}: a ciphertext has the wrong shape, level, scale or ring")
        if key_tag is not None and ct.GetKeyTag() != key_tag:  # hex digits: the layout checked them
            raise ContextMismatchError(f"{what}: a ciphertext is under another key (its key tag)")
        out.append(ct)
    return out


def check_vector(vector: object, params: ThresholdParams) -> np.ndarray:
    """A client's vector, checked (1-D float, length, no NaN) and clipped to ``[-clip, clip]``, as float64."""
    values = check_float_vector(vector)  # the same object, now known to be a 1-D float array
    if not 1 <= values.shape[0] <= MAX_VALUES:
        raise EncodingError(f"vector length {values.shape[0]} outside [1, {MAX_VALUES}]")
    if np.isnan(values).any():
        raise EncodingError("vector contains NaN")
    return np.clip(values.astype(np.float64), -params.clip, params.clip)


def check_weight(weight: object, params: ThresholdParams) -> float:
    """A client weight: a real number in ``(0, max_weight]``, as a float."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)):
        raise TypeError(f"weight must be a number, got {type(weight).__name__}")
    value = float(weight)
    if not (math.isfinite(value) and 0 < value <= params.max_weight):
        raise ValueError(f"weight must be in (0, {params.max_weight}] (max_weight), got {weight!r}")
    return value
