"""Private glue between :mod:`fedcrypt.he.threshold` and OpenFHE's Python package.

Everything that touches ``openfhe`` lives here, so the public module imports without it.

Invariants:

* :func:`load_openfhe` is the only import of ``openfhe``; without it (or on a Python for
  which the index has no ``openfhe`` wheel) it raises
  :class:`~fedcrypt.errors.MissingExtraError` naming the extra ``threshold`` and the
  supported Python versions;
* one :class:`Runtime` per distinct parameter set and process (OpenFHE builds the same
  primes from the same parameters, so every party's context is the same context);
* :func:`deserialize` turns every OpenFHE parse failure into
  :class:`~fedcrypt.errors.MalformedMessageError`; it never returns a half-built object.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from fedcrypt._optional import require
from fedcrypt.errors import MalformedMessageError, MissingExtraError

if TYPE_CHECKING:  # pragma: no cover
    from fedcrypt.he.threshold import ThresholdParams

#: CPython versions for which the package index serves an ``openfhe`` wheel (1.6.1).
SUPPORTED_PYTHONS: tuple[str, ...] = ("3.10",)


#: environment variable: OpenMP threads OpenFHE may use in this process (default 1).
THREADS_ENV = "FEDCRYPT_OPENFHE_THREADS"


def _limit_openmp_threads() -> None:
    """Cap OpenMP's threads before OpenFHE loads (it reads the cap once, at load time).

    OpenFHE parallelises every RNS operation over its towers with OpenMP; on a shared or
    busy CPU the spinning workers make a two-tower ``EvalAdd`` about 300x slower than one
    thread (measured: 38 ms against 0.1 ms at N=16384). Clients and servers parallelise
    across processes anyway, so the default is one thread; set ``FEDCRYPT_OPENFHE_THREADS``
    to change it. Without a loadable ``libgomp.so.1`` nothing is changed.
    """
    if "openfhe" in sys.modules:
        return
    raw = os.environ.get(THREADS_ENV, "1")
    try:
        threads = int(raw)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}") from None
    if threads < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    try:
        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(threads)
    except (OSError, AttributeError):
        pass


def load_openfhe() -> Any:
    """Import ``openfhe`` or raise :class:`MissingExtraError` naming ``threshold``.

    Raises:
        MissingExtraError: ``openfhe`` is not importable here.
    """
    _limit_openmp_threads()
    try:
        return require("openfhe", "threshold")
    except MissingExtraError as exc:
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise MissingExtraError(
            "openfhe",
            "threshold",
            f"threshold CKKS needs OpenFHE's Python package, whose wheels support CPython "
            f"{', '.join(SUPPORTED_PYTHONS)} only; this is Python {here}",
        ) from exc


@dataclass(frozen=True)
class Runtime:
    """An OpenFHE CKKS crypto context built from :class:`ThresholdParams`."""

    openfhe: Any
    context: Any
    slots: int
    scale: float
    modulus_bits: float


def _build_context(ofhe: Any, params: "ThresholdParams", *, estimation: bool) -> Any:
    p = ofhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(params.upload_level)
    p.SetScalingModSize(params.scale_bits)
    p.SetFirstModSize(params.first_mod_bits)
    p.SetRingDim(params.ring_degree)
    p.SetBatchSize(params.ring_degree // 2)
    p.SetScalingTechnique(ofhe.FIXEDMANUAL)
    p.SetSecurityLevel(ofhe.HEStd_128_classic)
    if estimation:
        p.SetDecryptionNoiseMode(ofhe.NOISE_FLOODING_DECRYPT)
        p.SetExecutionMode(ofhe.EXEC_NOISE_ESTIMATION)
    elif params.flooding:
        p.SetDecryptionNoiseMode(ofhe.NOISE_FLOODING_DECRYPT)
        p.SetExecutionMode(ofhe.EXEC_EVALUATION)
        p.SetNoiseEstimate(params.noise_estimate_bits)
        p.SetStatisticalSecurity(params.statistical_security)
    context = ofhe.GenCryptoContext(p)
    for feature in (ofhe.PKE, ofhe.KEYSWITCH, ofhe.LEVELEDSHE, ofhe.MULTIPARTY):
        context.Enable(feature)
    return context


@functools.lru_cache(maxsize=8)
def runtime(params: "ThresholdParams") -> Runtime:
    """The (cached) OpenFHE context of ``params``."""
    ofhe = load_openfhe()
    try:
        context = _build_context(ofhe, params, estimation=False)
    except RuntimeError as exc:  # OpenFHE refuses the parameters
        raise ValueError(f"OpenFHE refuses these threshold CKKS parameters: {exc}") from None
    ring = context.GetRingDimension()
    if ring != params.ring_degree:
        raise ValueError(f"OpenFHE chose ring dimension {ring}, the parameters say {params.ring_degree}")
    modulus_bits = math.log2(float(context.GetModulus()))
    return Runtime(ofhe, context, params.ring_degree // 2, float(context.GetScalingFactorReal(0)), modulus_bits)


def estimate_noise_bits(params: "ThresholdParams") -> float:
    """OpenFHE's static noise estimate (log2) of a worst-case aggregate under ``params``.

    Runs the aggregation once in ``EXEC_NOISE_ESTIMATION`` mode on a throw-away key and a
    public, worst-case input (``num_clients`` fresh uploads of ``2^h * max_weight * clip``
    in every slot, ``h = params.headroom_bits()``, as clients weight and scale in
    plaintext, summed) and reads OpenFHE's estimate from
    the decryption
    (``Plaintext.GetLogError``). The estimate is made with a single key: a multiparty
    decryption in estimation mode adds OpenFHE's fixed 20-bit share noise, which is not
    ciphertext noise. Under the joint key ``s = s_0 + ... + s_{n-1}`` and the summed public
    key error, the encryption noise has ``n`` times the variance, so ``log2(n) / 2`` bits
    are added. Nothing here depends on a real key or real data.
    """
    ofhe = load_openfhe()
    context = _build_context(ofhe, params, estimation=True)
    slots = params.ring_degree // 2
    pair = context.KeyGen()
    worst = math.ldexp(params.clip * params.max_weight, params.headroom_bits())
    plain = context.MakeCKKSPackedPlaintext([worst] * slots)
    total = None
    for _client in range(params.num_clients):
        term = context.Encrypt(pair.publicKey, plain)
        total = term if total is None else context.EvalAdd(total, term)
    decrypted = context.Decrypt(total, pair.secretKey)
    return float(decrypted.GetLogError()) + 0.5 * math.log2(params.num_parties)


def serialize(runtime_: Runtime, obj: Any) -> bytes:
    """OpenFHE binary serialisation of a public key or ciphertext."""
    data = runtime_.openfhe.Serialize(obj, runtime_.openfhe.BINARY)
    return bytes(data)


def deserialize(runtime_: Runtime, kind: str, data: bytes | memoryview, what: str) -> Any:
    """Parse OpenFHE binary bytes as ``kind`` (``"ciphertext"``, ``"public_key"`` or ``"private_key"``).

    Raises:
        MalformedMessageError: OpenFHE cannot parse the bytes.
    """
    ofhe = runtime_.openfhe
    loaders: dict[str, Callable[[bytes, Any], Any]] = {
        "ciphertext": ofhe.DeserializeCiphertextString,
        "public_key": ofhe.DeserializePublicKeyString,
        "private_key": ofhe.DeserializePrivateKeyString,
    }
    loader = loaders[kind]
    try:
        obj = loader(bytes(data), ofhe.BINARY)
    except Exception:  # OpenFHE raises RuntimeError (cereal) or TypeError on garbage
        raise MalformedMessageError(f"{what}: OpenFHE cannot parse the {kind}") from None
    if obj is None:
        raise MalformedMessageError(f"{what}: OpenFHE returned no {kind}")
    return obj


def serialize_poly(runtime_: Runtime, template: Any, poly: Any) -> bytes:
    """Serialise a ``DCRTPoly`` (a Shamir key-share piece from ``ShareKeys``).

    The Python binding exposes no serialiser for ``DCRTPoly``; a ciphertext holding the
    polynomial as its only element is serialised instead (``template`` is a scratch
    ciphertext of this context; it is cloned, not changed).
    """
    holder = template.Clone()
    holder.SetElements([poly])
    return serialize(runtime_, holder)


def deserialize_poly(runtime_: Runtime, data: bytes) -> Any:
    """Inverse of :func:`serialize_poly`.

    Raises:
        MalformedMessageError: not a one-element ciphertext of this ring.
    """
    holder = deserialize(runtime_, "ciphertext", data, "key backup")
    try:
        elements = holder.GetElements()
        ok = len(elements) == 1 and holder.GetCryptoContext().GetRingDimension() == runtime_.slots * 2
    except Exception:
        ok = False
    if not ok:
        raise MalformedMessageError("key backup: not a single polynomial of this ring")
    return elements[0]
