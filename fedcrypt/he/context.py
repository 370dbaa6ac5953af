"""Key roles as types: the clients' :class:`KeyOwner` and the server's :class:`AggregatorContext`.

Invariants:

* an :class:`AggregatorContext` never holds, loads or constructs a secret key, a decryptor
  or a key generator; it is built from public bytes only, and building it from anything
  that carries a secret key raises :class:`~fedcrypt.errors.SecretKeyError`;
* :meth:`KeyOwner.to_bytes` writes the secret key only when called with
  ``include_secret_key=True``; without it the bytes are the public context;
* every blob carries the context fingerprint ``SHA-256(label || params || key id)``; a blob
  from another context raises :class:`~fedcrypt.errors.ContextMismatchError` before any
  ciphertext is parsed;
* :meth:`EncryptedSum.add` validates the weight, the framing, the length, the TensorSpec
  digest and every ciphertext's level, size, form and scale, and computes the weighted
  ciphertexts, *before* it touches the running sum: a rejected blob leaves the aggregate
  exactly as it was;
* the aggregate is always at the last level (one prime), whatever the upload level;
* uploads are encoded at ``params.encoding_scale`` (``2^(scale_bits + headroom)``);
* with ``params.packing == "complex"`` (the default) value ``2j`` of a ciphertext's block
  is the real part and value ``2j+1`` the imaginary part of slot ``j``; an odd tail leaves
  the last imaginary part zero, and it is never released;
* no decryption leaves a :class:`KeyOwner` unflooded: :meth:`KeyOwner.decrypt` adds
  Gaussian noise sized by :meth:`CkksParams.flooding_stddev` (Li and Micciancio,
  EUROCRYPT 2021), drawn from AES-256-CTR keyed by HKDF of the secret key and the
  ciphertext, so every holder of the key releases the same value for the same ciphertext
  and asking twice gives nothing new; with complex packing every released value, real part
  or imaginary part of a slot, carries its own flooding.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from fedcrypt._wire import Reader
from fedcrypt.crypto import Secret, hkdf_sha256, mask_prg
from fedcrypt.errors import (
    ContextMismatchError,
    EncodingError,
    LocalProtocolError,
    MalformedMessageError,
    OverflowRiskError,
    SecretKeyError,
    SpecMismatchError,
    UnexpectedMessageError,
)
from fedcrypt.he import _seal
from fedcrypt.he._provenance import check_aggregate, check_weight, weigh
from fedcrypt.he.blob import MAX_VALUES, BlobHeader, BlobKind, decode_blob, encode_blob
from fedcrypt.he.params import CkksParams
from fedcrypt.vectors import TensorSpec, check_float_vector

__all__ = ["KeyOwner", "AggregatorContext", "EncryptedSum"]

_CTX_MAGIC = b"FCHC"
#: 2: uploads at the headroom scale and flooded decryption (version 1 contexts and keys
#: were used with exact decryption, which leaks the key: they are refused).
#: 3: the parameters name the packing (two reals per slot by default); version 2 contexts
#: (one real per slot) are refused.
_CTX_VERSION = 3
_CTX_PUBLIC, _CTX_SECRET = 1, 2
_KEY_ID_BYTES = 32
_FINGERPRINT_LABEL = b"fedcrypt/he/context/v3"
_FLOODING_KEY_INFO = b"fedcrypt/he/flooding-key/v1"
_FLOODING_SEED_INFO = b"fedcrypt/he/flooding-seed/v1"
_MAX_PARAMS_BYTES = 256


def _fingerprint(params: CkksParams, key_id: bytes) -> bytes:
    raw = params.to_bytes()
    return hashlib.sha256(_FINGERPRINT_LABEL + struct.pack(">H", len(raw)) + raw + key_id).digest()


def _spec_digest(spec: TensorSpec | bytes | None) -> bytes | None:
    if spec is None:
        return None
    if isinstance(spec, TensorSpec):
        return spec.digest()
    if isinstance(spec, (bytes, bytearray)) and len(spec) == 32:
        return bytes(spec)
    raise TypeError("spec must be a TensorSpec, its 32-byte digest, or None")


@dataclass(frozen=True, slots=True)
class _PublicPart:
    params: CkksParams
    key_id: bytes


def _encode_context(part: _PublicPart, secret_key: bytes | None) -> bytes:
    raw = part.params.to_bytes()
    kind = _CTX_SECRET if secret_key is not None else _CTX_PUBLIC
    out = [_CTX_MAGIC, struct.pack(">BBH", _CTX_VERSION, kind, len(raw)), raw, part.key_id]
    if secret_key is not None:
        out += [struct.pack(">I", len(secret_key)), secret_key]
    return b"".join(out)


def _decode_context(data: bytes) -> tuple[_PublicPart, memoryview | None]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    reader = Reader(bytes(data), "CKKS context")  # a snapshot: the bytes checked are the bytes SEAL loads
    if reader.remaining < 8 or reader.take(4) != _CTX_MAGIC:
        raise reader.error("bad magic or truncated")
    version, kind, params_len = reader.unpack(">BBH")
    if version == 1:
        raise reader.error(
            "version 1 (exact decryption, which leaks the secret key to whoever sees a decrypted "
            "value; Li-Micciancio 2021) is no longer accepted: generate a new key with this version"
        )
    if version == 2:
        raise reader.error(
            "version 2 (one real per CKKS slot, before complex packing) is no longer accepted: "
            "generate a new key with this version (two reals per slot by default; packing='real' keeps one)"
        )
    if version != _CTX_VERSION:
        raise reader.error(f"unsupported version {version}")
    if kind not in (_CTX_PUBLIC, _CTX_SECRET):
        raise reader.error(f"unknown kind {kind}")
    if params_len > _MAX_PARAMS_BYTES or reader.remaining < params_len + _KEY_ID_BYTES:
        raise reader.error("truncated parameters or key id")
    params = CkksParams.from_bytes(reader.view(params_len))
    part = _PublicPart(params, reader.take(_KEY_ID_BYTES))
    if kind == _CTX_PUBLIC:
        reader.expect_end()
        return part, None
    if reader.remaining < 4:
        raise reader.error("truncated secret-key length")
    size = reader.u32()
    cap = params.poly_modulus_degree * len(params.coeff_modulus_bits) * 8 + 4096
    if size == 0 or size > cap or size != reader.remaining:
        raise reader.error(f"secret key of {size} bytes does not fit (cap {cap})")
    return part, reader.view(size)


def _check_ciphertext(ct: Any, runtime: _seal.SealRuntime, parms_ids: Sequence[list[int]], scale: float, what: str) -> None:
    if ct.size() != 2:
        raise MalformedMessageError(f"{what}: a ciphertext has {ct.size()} polynomials (expected 2)")
    if list(ct.parms_id()) not in [list(p) for p in parms_ids]:
        raise MalformedMessageError(f"{what}: a ciphertext is at an unexpected modulus level")
    if not ct.is_ntt_form():
        raise MalformedMessageError(f"{what}: a ciphertext is not in NTT form")
    if ct.scale != scale:
        raise MalformedMessageError(f"{what}: a ciphertext has scale {ct.scale!r}, expected {scale!r}")


def _load_ciphertexts(
    pieces: list[memoryview],
    runtime: _seal.SealRuntime,
    parms_ids: Sequence[list[int]],
    scale: float,
    what: str,
    *,
    seeded: bool | None = None,
) -> list[Any]:
    seal = runtime.seal
    result = []
    for piece in pieces:
        ct = _seal.load_from_bytes(seal.Ciphertext(runtime.context), runtime.context, piece, what, seeded=seeded)
        _check_ciphertext(ct, runtime, parms_ids, scale, what)
        result.append(ct)
    return result


# ====================================================================== key owner
class KeyOwner:
    """A client's CKKS context: parameters plus the group's secret key.

    Math: symmetric RLWE encryption ``ct = (-a*s + m + e, a)`` with ``a`` uniform, ``s``
    the ternary secret and ``e`` Gaussian (sigma 3.2); ``a`` is expanded from a 64-byte PRNG
    seed that SEAL stores instead of the polynomial (``Encryptor.encrypt_symmetric``
    returning a ``Serializable<Ciphertext>``), and the plaintext is encoded at the upload
    level, so one upload is one polynomial over ``upload_level + 1`` primes plus a seed.
    With complex packing (the default) slot ``j`` of a ciphertext carries
    ``x[2j] + i x[2j+1]``: about 8 bytes per value for the ``compact`` preset, 2x float32
    (16 with ``packing="real"``).

    Threat model: every client that holds the key can decrypt every other client's upload;
    the server, which holds only an :class:`AggregatorContext`, learns nothing about any
    upload under RLWE (IND-CPA) and gets the aggregate only in encrypted form. A key holder
    colluding with the server therefore learns single uploads: threshold CKKS removes that
    (another issue). The key is sent among clients with :mod:`fedcrypt.he.keyshare`.

    Use :meth:`generate` (one client) and :meth:`from_bytes` (the others).
    """

    __slots__ = ("_part", "_fingerprint", "_runtime", "_secret_key", "_encryptor", "_decryptor", "_flooding_key")

    def __init__(self, part: _PublicPart, secret_key: Any) -> None:
        self._part = part
        self._fingerprint = _fingerprint(part.params, part.key_id)
        self._runtime = _seal.runtime(part.params)
        seal = self._runtime.seal
        self._secret_key = secret_key
        self._encryptor = seal.Encryptor(self._runtime.context, secret_key)
        self._decryptor = seal.Decryptor(self._runtime.context, secret_key)
        self._flooding_key: Secret = hkdf_sha256(_seal.save_bytes(secret_key), salt=self._fingerprint, info=_FLOODING_KEY_INFO)

    # ------------------------------------------------------------------ building
    @classmethod
    def generate(cls, params: CkksParams) -> "KeyOwner":
        """A fresh secret key (SEAL's key generator, seeded from the OS) and a fresh key id."""
        if not isinstance(params, CkksParams):
            raise TypeError(f"params must be CkksParams, got {type(params).__name__}")
        runtime = _seal.runtime(params)
        secret_key = runtime.seal.KeyGenerator(runtime.context).secret_key()
        return cls(_PublicPart(params, secrets.token_bytes(_KEY_ID_BYTES)), secret_key)

    @classmethod
    def from_bytes(cls, data: bytes) -> "KeyOwner":
        """Load :meth:`to_bytes` output made with ``include_secret_key=True``.

        Raises:
            SecretKeyError: the bytes are a public context (no secret key in them).
            MalformedMessageError: the bytes do not decode, or SEAL refuses the key.
        """
        part, raw_key = _decode_context(data)
        if raw_key is None:
            raise SecretKeyError("these bytes carry no secret key; load them with AggregatorContext.from_bytes")
        runtime = _seal.runtime(part.params)
        secret_key = _seal.load_from_bytes(runtime.seal.SecretKey(), runtime.context, raw_key, "CKKS secret key")
        return cls(part, secret_key)

    def to_bytes(self, *, include_secret_key: bool = False) -> bytes:
        """The context as bytes; the secret key only if ``include_secret_key=True``.

        The bytes with the secret key are secret: send them only encrypted (see
        :func:`fedcrypt.he.keyshare.seal_key_for_peer`).
        """
        if not isinstance(include_secret_key, bool):
            raise TypeError("include_secret_key must be a bool")
        key = _seal.save_bytes(self._secret_key) if include_secret_key else None
        return _encode_context(self._part, key)

    def aggregator_context(self) -> "AggregatorContext":
        """A new server-side context with the same parameters and key id, no secret."""
        return AggregatorContext(self._part.params, self._part.key_id)

    # ------------------------------------------------------------------ properties
    @property
    def params(self) -> CkksParams:
        """The parameters."""
        return self._part.params

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the parameters and key id; every blob carries it."""
        return self._fingerprint

    def __repr__(self) -> str:
        p = self._part.params
        return (
            f"KeyOwner(N={p.poly_modulus_degree}, primes={list(p.coeff_modulus_bits)}, scale=2^{p.scale_bits}, "
            f"fingerprint={self._fingerprint.hex()[:16]}, secret_key=<held>)"
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("KeyOwner cannot be pickled; use to_bytes(include_secret_key=True) and send it encrypted")

    # ------------------------------------------------------------------ encrypt
    def encrypt(self, vector: np.ndarray, spec: TensorSpec | bytes | None = None) -> bytes:
        """Encrypt a flat vector into an upload blob (compact: seeded, at the upload level).

        Values are clipped to ``[-clip, clip]`` (the bound the capacity guard assumes).

        Args:
            vector: 1-D float array of any length >= 1.
            spec: the TensorSpec (or its digest) the vector was flattened with; its digest
                goes into the header and the length must match it.

        Raises:
            EncodingError: not 1-D, not float, empty, too long or containing NaN.
            SpecMismatchError: the length differs from ``spec.size``.
        """
        check_float_vector(vector)
        length = int(vector.shape[0])
        if not 1 <= length <= MAX_VALUES:
            raise EncodingError(f"vector length {length} outside [1, {MAX_VALUES}]")
        digest = _spec_digest(spec)
        if isinstance(spec, TensorSpec) and spec.size != length:
            raise SpecMismatchError(f"vector has length {length}, the spec needs {spec.size}")
        if np.isnan(vector).any():
            raise EncodingError("vector contains NaN")
        params, runtime = self._part.params, self._runtime
        values = np.clip(vector.astype(np.float64), -params.clip, params.clip)
        per_ct, scale = params.values_per_ciphertext, params.encoding_scale
        encoder, encryptor, parms_id = runtime.encoder, self._encryptor, runtime.upload_parms_id
        complex_packing = params.packing == "complex"
        plain = runtime.seal.Plaintext()
        pieces = []
        for start in range(0, length, per_ct):
            block = values[start : start + per_ct]
            if complex_packing:
                if block.shape[0] % 2:
                    block = np.append(block, 0.0)
                slots = block[0::2] + 1j * block[1::2]  # x[2j] + i x[2j+1]
                encoder.encode(slots.tolist(), parms_id, scale, plain)
            else:
                encoder.encode(block.tolist(), parms_id, scale, plain)
            pieces.append(_seal.save_bytes(encryptor.encrypt_symmetric(plain)))
        header = BlobHeader(BlobKind.UPLOAD, self._fingerprint, length, digest, 1, 1.0, len(pieces))
        return encode_blob(header, pieces)

    # ------------------------------------------------------------------ decrypt
    def decrypt(self, blob: bytes, spec: TensorSpec | bytes | None = None) -> np.ndarray:
        """Decrypt an aggregate (or an upload) into a flooded float64 vector of its original length.

        For an aggregate the result is the weighted sum ``sum_i w_i * clip(x_i)``, within
        :meth:`CkksParams.sum_error_bound` (flooding included).

        Math: the exact decryption ``p = c0 + c1 s = Delta' m + e`` reveals ``e``, and from
        ``e`` and the public ``(c0, c1)`` the secret ``s`` (Li and Micciancio, "On the
        Security of Homomorphic Encryption on Approximate Numbers", EUROCRYPT 2021: two
        released decryptions give a linear system over ``R_q`` whose solution is ``s``).
        So every value this method returns carries independent Gaussian flooding of
        standard deviation :meth:`CkksParams.flooding_stddev` per slot, sized ``2^15``
        times a bound on ``||e||_2`` from the public parameters and the header's
        contribution count and total weight (see there for the security statement and the
        precision it costs: for 10 clients with weights 1, clip 1 and ``num_clients=10``
        the ``compact`` preset's flooding is 3.6e-7 per value of the sum).

        The noise is a deterministic function of the secret key and the ciphertext
        (AES-256-CTR keyed by ``HKDF(secret key, SHA-256(ciphertext))``, Box-Muller): an
        adversary without the key cannot tell it from fresh randomness, every key holder
        releases bit-identical values for the same aggregate, and asking again for the same
        ciphertext reveals nothing new.

        Threat model: whoever receives the result (the server, other nodes). A malicious
        server that understates the header's contributions or total weight shrinks the
        flooding; the header is bounded by ``num_clients`` and ``num_clients * max_weight``
        here, and :mod:`fedcrypt.he.round` checks it further. The noise is sized for honestly
        formed ciphertexts: a forged one (say ``(0, K)``) is decrypted to ``K s`` and reveals
        the key (SECURITY.md, attacker review 3); only decrypt what honest parties encrypted.

        Raises:
            ContextMismatchError: the blob was made under another context.
            MalformedMessageError: the blob does not decode, or its header claims more
                contributions or weight than the parameters allow.
            SpecMismatchError: ``spec`` is given and differs from the blob's digest.
        """
        return self._release(*self._load(blob, spec))

    def decrypt_sum(self, total: "EncryptedSum") -> np.ndarray:
        """Finish a sum this node built itself and decrypt it, as :meth:`decrypt` would.

        Every summand of an :class:`EncryptedSum` was checked seeded when it was added, so the
        aggregate's provenance holds by construction and is not recomputed (half the work of
        ``decrypt(total.finish())`` for a decryptor that sums the uploads itself).

        Raises:
            ContextMismatchError: the sum is under another context.
            LocalProtocolError: the sum is empty or already finished.
        """
        if not isinstance(total, EncryptedSum):
            raise TypeError(f"decrypt_sum takes an EncryptedSum, got {type(total).__name__}")
        if not secrets.compare_digest(total._ctx.fingerprint, self._fingerprint):
            raise ContextMismatchError("the sum was made under another CKKS context")
        return self._release(*self._load(total.finish(), None, provenance=False))

    def _release(self, header: BlobHeader, cts: list[Any]) -> np.ndarray:
        """The flooded decryption of loaded ciphertexts (see :meth:`decrypt`)."""
        params = self._part.params
        if header.contributions > params.num_clients or header.total_weight > params.num_clients * params.max_weight:
            raise MalformedMessageError(
                f"encrypted vector: the header claims {header.contributions} contributions of total weight "
                f"{header.total_weight:g}, beyond num_clients={params.num_clients} and max_weight={params.max_weight:g}"
            )
        stddev = params.flooding_stddev(header.contributions, header.total_weight, float_weights=params.upload_level >= 1)
        out = self._decrypt_exact_loaded(header, cts)
        per_ct = params.values_per_ciphertext
        for index, ct in enumerate(cts):  # every released value: real and imaginary parts alike
            start = index * per_ct
            count = min(per_ct, header.length - start)
            out[start : start + count] += stddev * self._flooding_noise(ct, count)
        return out

    def decrypt_mean(self, blob: bytes, spec: TensorSpec | bytes | None = None) -> np.ndarray:
        """Decrypt an aggregate and divide by its header's total weight: the weighted mean.

        The header is not authenticated: use it only where whoever built the aggregate is
        trusted to report the weight (in Flower, nodes encrypt the weight with the update).
        """
        header = _peek(blob)
        return self.decrypt(blob, spec) / header.total_weight

    def _decrypt_exact(self, blob: bytes, spec: TensorSpec | bytes | None = None) -> np.ndarray:
        """The exact (UNFLOODED) decryption: never release it (it gives away the key)."""
        header, cts = self._load(blob, spec)
        return self._decrypt_exact_loaded(header, cts)

    def _decrypt_exact_loaded(self, header: BlobHeader, cts: list[Any]) -> np.ndarray:
        runtime, decryptor = self._runtime, self._decryptor
        params = self._part.params
        per_ct, complex_packing = params.values_per_ciphertext, params.packing == "complex"
        out = np.empty(header.length, dtype=np.float64)
        plain = runtime.seal.Plaintext()
        for index, ct in enumerate(cts):
            decryptor.decrypt(ct, plain)
            start = index * per_ct
            count = min(per_ct, header.length - start)
            if complex_packing:
                slots = np.asarray(runtime.encoder.decode_complex(plain), dtype=np.complex128)
                out[start : start + count] = slots.view(np.float64)[:count]  # re0, im0, re1, im1, ...
            else:
                out[start : start + count] = runtime.encoder.decode_double(plain)[:count]
        return out

    def _flooding_noise(self, ct: Any, count: int) -> np.ndarray:
        """``count`` standard normal values from AES-256-CTR keyed by HKDF(key, SHA-256(ct))."""
        digest = hashlib.sha256(_seal.save_bytes(ct)).digest()
        seed = hkdf_sha256(self._flooding_key, salt=None, info=_FLOODING_SEED_INFO + digest)
        pairs = (count + 1) // 2
        words = mask_prg(seed, 2 * pairs, bits=64)
        uniform = ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # in (0, 1]
        radius = np.sqrt(-2.0 * np.log(uniform[:pairs]))
        angle = 2.0 * np.pi * uniform[pairs:]
        return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]

    def _load(self, blob: bytes, spec: TensorSpec | bytes | None, *, provenance: bool = True) -> tuple[BlobHeader, list[Any]]:
        params, runtime = self._part.params, self._runtime
        header, pieces = decode_blob(blob, params, self._fingerprint, kinds=(BlobKind.UPLOAD, BlobKind.AGGREGATE))
        _check_spec(header, spec)
        upload = header.kind == BlobKind.UPLOAD
        level = runtime.upload_parms_id if upload else runtime.last_parms_id
        cts = _load_ciphertexts(pieces, runtime, [level], params.encoding_scale, "encrypted vector", seeded=upload)
        if not upload and provenance:
            check_aggregate(header, pieces, params, runtime)  # c1 = sum_i w_i PRG(seed_i), or refused
        return header, cts


def _peek(blob: bytes) -> BlobHeader:
    from fedcrypt.he.blob import peek_header

    return peek_header(blob)


def _check_spec(header: BlobHeader, spec: TensorSpec | bytes | None) -> None:
    digest = _spec_digest(spec)
    if digest is None:
        return
    if header.spec_digest is None or not secrets.compare_digest(header.spec_digest, digest):
        raise SpecMismatchError("the encrypted vector's TensorSpec digest differs from the expected spec")
    if isinstance(spec, TensorSpec) and spec.size != header.length:
        raise SpecMismatchError(f"the encrypted vector has {header.length} values, the spec needs {spec.size}")


# ====================================================================== aggregator
class AggregatorContext:
    """The server's CKKS context: parameters and key id, nothing secret.

    Math: the server computes ``sum_i w_i * ct_i`` homomorphically. An integer weight is a
    constant plaintext at scale 1 (``multiply_plain``; the scale stays ``2^scale_bits``, no
    rescale, no evaluation key); a non-integer weight needs ``upload_level >= 1``: it is
    encoded at scale ``q1`` and the product is rescaled by ``q1``, which restores the scale
    exactly. Every summand is then at the last level (one prime) and the sum is returned.

    Threat model: honest-but-curious server. It never holds a secret key (construction from
    anything that carries one raises :class:`SecretKeyError`), so by RLWE it learns nothing
    about any upload; it does learn the lengths, weights, TensorSpec digests and the number
    of contributions, which are in the clear in each header.

    Args:
        params: the public parameters.
        key_id: the 32-byte key id of the group's key (from a :class:`KeyOwner`).
    """

    __slots__ = ("_part", "_fingerprint", "_runtime")

    def __init__(self, params: CkksParams, key_id: bytes) -> None:
        if isinstance(params, KeyOwner) or isinstance(key_id, KeyOwner):
            raise SecretKeyError("an AggregatorContext cannot be built from a KeyOwner; use owner.aggregator_context()")
        if not isinstance(params, CkksParams):
            raise TypeError(f"params must be CkksParams, got {type(params).__name__}")
        if not isinstance(key_id, bytes) or len(key_id) != _KEY_ID_BYTES:
            raise ValueError(f"key_id must be {_KEY_ID_BYTES} bytes")
        self._part = _PublicPart(params, key_id)
        self._fingerprint = _fingerprint(params, key_id)
        self._runtime = _seal.runtime(params)

    @classmethod
    def from_bytes(cls, data: bytes) -> "AggregatorContext":
        """Load a public context.

        Raises:
            SecretKeyError: the bytes carry a secret key (the server must never get one).
            MalformedMessageError: the bytes do not decode.
        """
        part, raw_key = _decode_context(data)
        if raw_key is not None:
            raise SecretKeyError("these bytes carry a secret key; the aggregator accepts public contexts only")
        return cls(part.params, part.key_id)

    def to_bytes(self) -> bytes:
        """The public context as bytes."""
        return _encode_context(self._part, None)

    @property
    def params(self) -> CkksParams:
        """The parameters."""
        return self._part.params

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the parameters and key id; every blob carries it."""
        return self._fingerprint

    def __repr__(self) -> str:
        p = self._part.params
        return (
            f"AggregatorContext(N={p.poly_modulus_degree}, primes={list(p.coeff_modulus_bits)}, "
            f"scale=2^{p.scale_bits}, fingerprint={self._fingerprint.hex()[:16]})"
        )

    def start(self, *, length: int | None = None, spec: TensorSpec | bytes | None = None) -> "EncryptedSum":
        """Begin a streaming weighted sum.

        Args:
            length: the expected vector length; default ``spec.size`` or the first upload's.
            spec: the expected TensorSpec (or digest); default the first upload's, if any.
        """
        if isinstance(spec, TensorSpec):
            if length is not None and length != spec.size:
                raise ValueError(f"length {length} differs from spec.size {spec.size}")
            length = spec.size
        if length is not None and (not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= MAX_VALUES):
            raise ValueError(f"length must be an int in [1, {MAX_VALUES}], got {length!r}")
        return EncryptedSum(self, length, _spec_digest(spec))

    def resume(self, state: bytes) -> "EncryptedSum":
        """The running sum of :meth:`EncryptedSum.to_state_bytes`, to add further uploads to.

        The bytes are the node's own (kept with its sealed state): framing, key, level and
        scale are checked, the provenance is taken as it was recorded.

        Raises:
            MalformedMessageError: bytes that do not decode, or a sum under another key.
        """
        reader = Reader(bytes(state), "encrypted sum state")
        blob = reader.sized(1 << 40, "aggregate", width=8)
        count = reader.count(32, MAX_VALUES, "replay guard")
        seen = [reader.take(32) for _ in range(count)]
        reader.expect_end()
        params, runtime = self._part.params, self._runtime
        try:
            header, pieces = decode_blob(blob, params, self._fingerprint, kinds=(BlobKind.AGGREGATE,))
        except ContextMismatchError:
            raise MalformedMessageError("encrypted sum state: made under another CKKS context") from None
        if count != header.contributions or seen != sorted(set(seen)):
            raise MalformedMessageError("encrypted sum state: the replay guard does not match the sum")
        total = EncryptedSum(self, header.length, header.spec_digest)
        total._acc = _load_ciphertexts(pieces, runtime, [runtime.last_parms_id], params.encoding_scale, "encrypted sum", seeded=False)
        total._count, total._total_weight = header.contributions, header.total_weight
        total._provenance = list(header.provenance)
        total._seeds = {seed for _, seeds in header.provenance for seed in seeds}
        total._seen = set(seen)
        return total

    def weighted_sum(
        self,
        items: Iterable[tuple[bytes, float]],
        *,
        length: int | None = None,
        spec: TensorSpec | bytes | None = None,
    ) -> bytes:
        """``sum_i w_i * x_i`` over encrypted uploads, as an aggregate blob.

        Args:
            items: ``(blob, weight)`` pairs; weights are example counts (ints) or floats.

        Raises:
            see :meth:`EncryptedSum.add`; LocalProtocolError if ``items`` is empty.
        """
        total = self.start(length=length, spec=spec)
        for item in items:
            if not isinstance(item, tuple) or len(item) != 2:
                raise TypeError("items must be (blob, weight) pairs")
            total.add(item[0], item[1])
        return total.finish()


class EncryptedSum:
    """A running encrypted weighted sum (create with :meth:`AggregatorContext.start`).

    Validate, then apply: :meth:`add` raises on a bad blob or weight and leaves the sum
    exactly as it was. Memory is one aggregate plus one upload, whatever the number of
    clients. A blob added twice (a replay) is refused.
    """

    __slots__ = (
        "_ctx",
        "_length",
        "_digest",
        "_digest_fixed",
        "_acc",
        "_count",
        "_total_weight",
        "_seen",
        "_seeds",
        "_provenance",
        "_done",
    )

    def __init__(self, ctx: AggregatorContext, length: int | None, digest: bytes | None) -> None:
        self._ctx = ctx
        self._length = length
        self._digest = digest
        self._digest_fixed = digest is not None
        self._acc: list[Any] | None = None
        self._count = 0
        self._total_weight = 0.0
        self._seen: set[bytes] = set()
        self._seeds: set[bytes] = set()
        self._provenance: list[tuple[float, tuple[bytes, ...]]] = []
        self._done = False

    @property
    def count(self) -> int:
        """Uploads summed so far."""
        return self._count

    @property
    def total_weight(self) -> float:
        """Sum of the weights applied so far."""
        return self._total_weight

    @property
    def length(self) -> int | None:
        """The vector length (None until the first upload when not given)."""
        return self._length

    def __repr__(self) -> str:
        return f"EncryptedSum(count={self._count}, total_weight={self._total_weight!r}, length={self._length})"

    def add(self, blob: bytes, weight: float) -> None:
        """Add ``weight * upload`` to the sum.

        Raises:
            TypeError / ValueError: a weight that is not a positive finite number up to
                ``max_weight``, or a non-integer weight without ``upload_level >= 1``.
            OverflowRiskError: the sum would exceed ``num_clients`` contributions.
            ContextMismatchError: the blob was made under another context.
            MalformedMessageError: the blob does not decode (truncated, oversized, bad
                ciphertext level, size or scale), a ciphertext is not seeded, or a seed was
                already added.
            SpecMismatchError: wrong length or TensorSpec digest.
            UnexpectedMessageError: the same blob was already added.
            LocalProtocolError: :meth:`finish` was already called.
        """
        if self._done:
            raise LocalProtocolError("this sum is finished; start a new one", stage="finished")
        ctx = self._ctx
        params, runtime = ctx._part.params, ctx._runtime
        integral = check_weight(weight, params)
        if self._count >= params.num_clients:
            raise OverflowRiskError(f"the sum already has num_clients={params.num_clients} contributions (the capacity guard's bound)")
        header, pieces = decode_blob(blob, params, ctx._fingerprint, kinds=(BlobKind.UPLOAD,))
        if self._length is not None and header.length != self._length:
            raise SpecMismatchError(f"upload has {header.length} values, the sum has {self._length}")
        if self._digest_fixed or (self._count > 0):
            if (header.spec_digest is None) != (self._digest is None) or (
                header.spec_digest is not None and not secrets.compare_digest(header.spec_digest, self._digest or b"")
            ):
                raise SpecMismatchError("upload's TensorSpec digest differs from the sum's")
        tag = hashlib.sha256(blob).digest()
        if tag in self._seen:
            raise UnexpectedMessageError("this upload was already added (replay)")
        cts = _load_ciphertexts(pieces, runtime, [runtime.upload_parms_id], params.encoding_scale, "upload", seeded=True)
        seeds = tuple(_seal.seed_of(piece) for piece in pieces)
        if len(set(seeds)) != len(seeds) or not self._seeds.isdisjoint(seeds):
            raise MalformedMessageError("upload: a ciphertext's seed repeats one already in the sum")
        weighted = [weigh(ct, weight, integral, runtime) for ct in cts]
        # ---- everything checked: apply
        evaluator = runtime.evaluator
        if self._acc is None:
            self._acc = weighted
        else:
            for acc, term in zip(self._acc, weighted):
                evaluator.add_inplace(acc, term)
        self._length = header.length
        self._digest = header.spec_digest
        self._count += 1
        self._total_weight += float(weight)
        self._seen.add(tag)
        self._seeds.update(seeds)
        self._provenance.append((float(weight), seeds))

    def merge(self, other: "EncryptedSum") -> None:
        """Add the summands of ``other`` (a sum under the same context) to this sum.

        Validate, then apply: both sums are left as they were on an error, ``other`` is
        finished on success. For a node that checks a batch of uploads into a sum of its own
        before it commits them to its running sum.

        Raises:
            ContextMismatchError: another context.
            SpecMismatchError: another length or TensorSpec digest.
            UnexpectedMessageError / MalformedMessageError: an upload or a seed in both sums.
            OverflowRiskError: more than ``num_clients`` contributions together.
            LocalProtocolError: either sum is finished, or ``other`` is empty.
        """
        if not isinstance(other, EncryptedSum):
            raise TypeError(f"merge takes an EncryptedSum, got {type(other).__name__}")
        if self._done or other._done or other is self:
            raise LocalProtocolError("a finished sum (or the sum itself) cannot be merged", stage="finished")
        if other._acc is None:
            raise LocalProtocolError("the sum to merge is empty", stage="empty")
        if not secrets.compare_digest(other._ctx._fingerprint, self._ctx._fingerprint):
            raise ContextMismatchError("the sum to merge was made under another CKKS context")
        if self._acc is not None and (other._length != self._length or other._digest != self._digest):
            raise SpecMismatchError("the sum to merge has another length or TensorSpec digest")
        if not self._seen.isdisjoint(other._seen):
            raise UnexpectedMessageError("an upload is in both sums (replay)")
        if not self._seeds.isdisjoint(other._seeds):
            raise MalformedMessageError("upload: a ciphertext's seed repeats one already in the sum")
        if self._count + other._count > self._ctx._part.params.num_clients:
            raise OverflowRiskError(f"the sums together exceed num_clients={self._ctx._part.params.num_clients} contributions")
        # ---- everything checked: apply
        if self._acc is None:
            self._acc, self._length, self._digest = other._acc, other._length, other._digest
        else:
            for acc, term in zip(self._acc, other._acc):
                self._ctx._runtime.evaluator.add_inplace(acc, term)
        self._count += other._count
        self._total_weight += other._total_weight
        self._seen |= other._seen
        self._seeds |= other._seeds
        self._provenance += other._provenance
        other._done, other._acc, other._provenance = True, None, []

    def finish(self) -> bytes:
        """The aggregate blob (at the last level); the sum cannot be added to afterwards."""
        blob = self._aggregate("finished")
        self._done = True
        self._acc = None
        self._provenance = []
        return blob

    def to_state_bytes(self) -> bytes:
        """A snapshot of the running sum, to go on adding after :meth:`AggregatorContext.resume`.

        For a node that sums in several messages and keeps its state between them (a
        decryptor folding a streamed set of uploads): the aggregate so far, with its
        provenance, and the digests of the blobs added (the replay guard). Public
        ciphertexts only, but keep the bytes with the node's state: :meth:`resume` trusts
        them (it does not recheck provenance) as the node's own.

        Layout: u64-sized aggregate blob | u32 count | count SHA-256 digests, sorted.

        Raises:
            LocalProtocolError: the sum is empty or finished.
        """
        blob = self._aggregate("snapshot")
        return struct.pack(">Q", len(blob)) + blob + struct.pack(">I", len(self._seen)) + b"".join(sorted(self._seen))

    def _aggregate(self, what: str) -> bytes:
        if self._done:
            raise LocalProtocolError(f"this sum is already finished (no {what})", stage="finished")
        if self._acc is None or self._length is None:
            raise LocalProtocolError("no upload was added to this sum", stage="empty")
        ctx = self._ctx
        pieces = [_seal.save_bytes(ct) for ct in self._acc]
        header = BlobHeader(
            BlobKind.AGGREGATE,
            ctx._fingerprint,
            self._length,
            self._digest,
            self._count,
            self._total_weight,
            len(pieces),
            tuple(self._provenance),
        )
        return encode_blob(header, pieces)
