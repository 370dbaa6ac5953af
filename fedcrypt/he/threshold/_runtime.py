"""Private glue between :mod:`fedcrypt.he.threshold` and OpenFHE's Python package.

Everything that touches ``openfhe`` lives here, so the public module imports without it.

Invariants:

* :func:`load_openfhe` is the only import of ``openfhe``; without it (or on a Python for
  which the index has no ``openfhe`` wheel) it raises
  :class:`~fedcrypt.errors.MissingExtraError` naming the extra ``threshold`` and the
  supported Python versions;
* one :class:`Runtime` per distinct parameter set and process (OpenFHE builds the same
  primes from the same parameters, so every party's context is the same context);
* :func:`deserialize` checks every byte string against this context's :class:`Layout` of
  its kind (exact length, every metadata byte) before OpenFHE parses it, and turns every
  OpenFHE parse failure into :class:`~fedcrypt.errors.MalformedMessageError`; it never
  returns a half-built object.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

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
            f"threshold CKKS needs OpenFHE's Python package, whose wheels support CPython {', '.join(SUPPORTED_PYTHONS)} only; this is Python {here}",
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
    if params.packing == "complex" and not estimation:
        p.SetCKKSDataType(ofhe.COMPLEX)  # keep the imaginary parts: two reals per slot
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
    are added. Nothing here depends on a real key or real data. The estimation context is
    real-packed whatever ``params.packing`` (the estimate reads the noise from the imaginary
    parts, which complex packing fills with data): the ciphertext noise, from the key, the
    encryption and the encoding rounding, has the same distribution for any message.
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
    """Check OpenFHE binary bytes against this context's layout, then parse them as ``kind``.

    ``kind`` is ``"ciphertext"`` (two elements: an upload or aggregate; one element: a
    partial decryption or a key-backup polynomial), ``"public_key"`` or ``"private_key"``.
    The bytes must first match one of :func:`layouts` of that kind (:class:`Layout`: the
    exact length and every metadata byte), so OpenFHE's cereal reader never sees a count,
    a length, a type name or a version a peer chose.

    Raises:
        MalformedMessageError: the bytes do not have a layout of this context, or OpenFHE
            cannot parse them.
    """
    ofhe = runtime_.openfhe
    loaders: dict[str, Callable[[bytes, Any], Any]] = {
        "ciphertext": ofhe.DeserializeCiphertextString,
        "public_key": ofhe.DeserializePublicKeyString,
        "private_key": ofhe.DeserializePrivateKeyString,
    }
    loader = loaders[kind]
    raw = bytes(data)
    if not any(layout.matches(raw) for layout in layouts(runtime_)[kind]):
        raise MalformedMessageError(f"{what}: the {kind} ({len(raw)} bytes) does not have this context's layout")
    try:
        obj = loader(raw, ofhe.BINARY)
    except Exception:  # OpenFHE raises RuntimeError (cereal) or TypeError on garbage
        raise MalformedMessageError(f"{what}: OpenFHE cannot parse the {kind}") from None
    if obj is None:
        raise MalformedMessageError(f"{what}: OpenFHE returned no {kind}")
    return obj


@dataclass(frozen=True)
class Layout:
    """The byte layout of one kind of OpenFHE object under one context (binary cereal).

    OpenFHE 1.x's binary serialisation of a ``Ciphertext``, ``PublicKey`` or
    ``PrivateKey`` (cereal's binary archive: little-endian scalars, u64 length before every
    string and vector, u32 class versions and polymorphic ids, the crypto context's
    parameters inlined, then each ``DCRTPoly`` as its towers of ``N`` u64 words) has a
    fixed length and fixed metadata for a given context and kind; only the key tag (32
    bytes) and the coefficient words differ between objects. A :class:`Layout` is learnt
    from :data:`_SAMPLES` objects made with throw-away keys: ``variable`` is where any of
    them differs from ``reference`` (rounded up to whole 8-byte words; five samples make
    a chance agreement at a region's edge a 2^-32 event). Peer bytes must have the same
    length and equal ``reference`` everywhere else. ``text`` are the variable regions that
    held hex digits in every sample (the key tag); a peer's bytes there must be hex digits
    too, so the binding's ``GetKeyTag`` never decodes a byte a peer chose as UTF-8.
    Coefficient words are not range-checked.
    """

    reference: bytes
    variable: tuple[tuple[int, int], ...]
    text: tuple[tuple[int, int], ...] = ()

    def fixed_digest(self) -> bytes:
        """SHA-256 of the bytes outside the variable regions (equal layouts, equal digests)."""
        h, pos = hashlib.sha256(), 0
        for start, stop in self.variable:
            h.update(self.reference[pos:start])
            pos = stop
        h.update(self.reference[pos:])
        return h.digest()

    def matches(self, data: bytes) -> bool:
        if len(data) != len(self.reference):
            return False
        view, ref, pos = memoryview(data), memoryview(self.reference), 0
        for start, stop in self.variable:
            if view[pos:start] != ref[pos:start]:
                return False
            pos = stop
        if view[pos:] != ref[pos:]:
            return False
        return all(not data[start:stop].translate(None, _HEX_DIGITS) for start, stop in self.text)


_SAMPLES = 5
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_layouts: dict[int, tuple[Any, dict[str, tuple[Layout, ...]]]] = {}


def _learn(samples: list[bytes]) -> Layout:
    reference = samples[0]
    if any(len(sample) != len(reference) for sample in samples):
        raise RuntimeError("OpenFHE serialised objects of one kind at different lengths")
    ref = np.frombuffer(reference, dtype=np.uint8)
    differs = np.zeros(len(reference), dtype=bool)
    for sample in samples[1:]:
        differs |= np.frombuffer(sample, dtype=np.uint8) != ref
    positions = np.flatnonzero(differs)
    regions: list[tuple[int, int]] = []
    if positions.size:
        breaks = np.flatnonzero(np.diff(positions) > 16)  # a region ends after 16 equal bytes
        starts = np.concatenate(([positions[0]], positions[breaks + 1]))
        lasts = np.concatenate((positions[breaks], [positions[-1]]))
        for first, last in zip(starts.tolist(), lasts.tolist()):
            stop = min(first + -(-(last + 1 - first) // 8) * 8, len(reference))
            if regions and first <= regions[-1][1]:
                regions[-1] = (regions[-1][0], max(stop, regions[-1][1]))
            else:
                regions.append((first, stop))
    text = tuple((a, b) for a, b in regions if all(not sample[a:b].translate(None, _HEX_DIGITS) for sample in samples))
    if not text:  # every kind carries a key tag: a layout without one is an OpenFHE this code does not know
        raise RuntimeError("OpenFHE serialised an object without a hex key tag")
    return Layout(reference, tuple(regions), text)


def layouts(runtime_: Runtime) -> dict[str, tuple[Layout, ...]]:
    """The accepted :class:`Layout` of each kind under ``runtime_``'s context (learnt once)."""
    entry = _layouts.get(id(runtime_.context))
    if entry is not None and entry[0] is runtime_.context:
        return entry[1]
    context, ofhe = runtime_.context, runtime_.openfhe
    loaders = {
        "public_key": ofhe.DeserializePublicKeyString,
        "private_key": ofhe.DeserializePrivateKeyString,
        "ciphertext": ofhe.DeserializeCiphertextString,
    }

    def again(obj: Any, kind: str) -> Any:  # what a peer's object is after the wire (our own bytes)
        return loaders[kind](serialize(runtime_, obj), ofhe.BINARY)

    # key holders 0, 1, 2 of a chain (1 and 2 run MultipartyKeyGen on a deserialised key)
    chains = [[context.KeyGen() for _ in range(_SAMPLES)]]
    for _ in range(2):
        chains.append([context.MultipartyKeyGen(again(pair.publicKey, "public_key")) for pair in chains[-1]])
    plain = context.MakeCKKSPackedPlaintext([0.5, -0.25])
    groups: dict[str, list[list[Any]]] = {"public_key": [], "private_key": [], "ciphertext": []}
    for pairs in chains:
        groups["public_key"].append([pair.publicKey for pair in pairs])
        groups["private_key"].append([pair.secretKey for pair in pairs])
        groups["private_key"].append([again(pair.secretKey, "private_key") for pair in pairs])
        for joint in ([pair.publicKey for pair in pairs], [again(pair.publicKey, "public_key") for pair in pairs]):
            uploads = [context.Encrypt(key, plain) for key in joint]
            wired = [again(ct, "ciphertext") for ct in uploads]
            sums = [context.EvalAdd(a, again(context.Encrypt(key, plain), "ciphertext")) for a, key in zip(wired, joint)]
            groups["ciphertext"] += [uploads, wired, sums, [again(ct, "ciphertext") for ct in sums]]
            for secrets_ in ([pair.secretKey for pair in pairs], [again(pair.secretKey, "private_key") for pair in pairs]):
                for decrypt in (context.MultipartyDecryptLead, context.MultipartyDecryptMain):
                    groups["ciphertext"].append([decrypt([ct], sk)[0] for ct, sk in zip(sums, secrets_)])
                holders = []
                for ct, sk in zip(uploads, secrets_):
                    holder = ct.Clone()
                    holder.SetElements([context.ShareKeys(sk, 3, 2, 1, "shamir")[2]])
                    holders.append(holder)
                groups["ciphertext"].append(holders)

    table: dict[str, tuple[Layout, ...]] = {}
    for kind, object_groups in groups.items():
        learnt: dict[tuple[int, tuple[tuple[int, int], ...], bytes], Layout] = {}
        for objects in object_groups:
            layout = _learn([serialize(runtime_, obj) for obj in objects])
            learnt.setdefault((len(layout.reference), layout.variable, layout.fixed_digest()), layout)
        table[kind] = tuple(learnt.values())
    if len(_layouts) > 16:
        _layouts.clear()
    _layouts[id(context)] = (context, table)  # the context is kept alive: its id stays unique
    return table


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
