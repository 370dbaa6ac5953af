"""Threshold (multi-party) CKKS through OpenFHE (extra ``threshold``, CPython 3.10).

In single-key CKKS (:mod:`fedcrypt.he`) every client holds the secret key, so one client
colluding with the server decrypts anyone's upload. Here no party ever holds the key:

1. **key generation** (a chain, OpenFHE's ``MultipartyKeyGen``): key holder 0 runs
   ``KeyGen``; key holder ``i`` runs ``MultipartyKeyGen`` on holder ``i-1``'s public key
   and forwards the result; holder ``n-1``'s public key is the joint key
   ``(b, a) = (-a * (s_0 + ... + s_{n-1}) + e, a)`` and the server broadcasts it;
   optionally (``recovery_threshold = t``) each holder then Shamir-shares its ``s_i``
   among the others, so that up to ``n - t`` dropped holders can be stood in for;
2. **upload**: client ``i`` multiplies its clipped vector by its own (float) weight
   ``w_i`` in plaintext (it knows its number of examples) and encrypts ``w_i x_i`` under
   the joint key; the upload's header carries ``w_i`` for bookkeeping;
3. **aggregation**: the server computes ``sum_i ct_i`` (``EvalAdd`` only: no scale
   change, no level used) and sums the claimed ``w_i``. The aggregate's noise is that of
   ``num_clients`` fresh ciphertexts whatever the weights, and so is the decryption
   flooding sized from it (a server-side ``w_i * ct_i`` would multiply both by ``w_i``);
4. **partial decryption**: holder 0 runs ``MultipartyDecryptLead``
   (``c0 + c1 s_0 + flood_0``), every other holder ``MultipartyDecryptMain``
   (``c1 s_i + flood_i``), each on the aggregate only and once;
5. **fusion** (``MultipartyDecryptFusion``): the sum of all ``n`` shares is
   ``c0 + c1 s + e'`` and decodes to the weighted sum.

The module is sans-IO like :mod:`fedcrypt.secagg`: :class:`KeyHolder` and
:class:`ThresholdServer` take and return bytes or frozen messages; a transport moves them.

Invariants:

* importing this module never imports ``openfhe``; the first use without it raises
  :class:`~fedcrypt.errors.MissingExtraError` naming ``threshold`` and the supported
  Python versions;
* every message has a canonical, versioned byte encoding; its decoder checks magic,
  version, lengths and caps derived from the parameters before OpenFHE parses anything;
* every handler validates all of its input before it changes state: a rejected message
  leaves the object as it was;
* a key holder answers at most one partial decryption per aggregate and never decrypts an
  upload, and fusion needs a share for *each* of the ``n`` key shares: a missing one aborts
  with :class:`~fedcrypt.errors.RoundAbortedError`, unless ``recovery_threshold = t`` is
  set and at most ``n - t`` holders dropped, whose shares stand-ins rebuild (t-of-n, see
  :class:`ThresholdServer`); a holder releases backup shares for at most ``n - t`` others;
* a key share never leaves its :class:`KeyHolder` except as Shamir pieces of the t-of-n
  backup, each AES-GCM-encrypted to one other holder, and in the holder's own state bytes
  (:meth:`KeyHolder.to_state_bytes`, for the node's private storage between messages);
  no secret appears in a repr.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from fedcrypt.he import _openfhe_runtime as _rt
from fedcrypt.he._openfhe_runtime import SUPPORTED_PYTHONS
from fedcrypt.crypto import Secret, X25519KeyPair, aead_decrypt, aead_encrypt, derive_key
from fedcrypt.errors import (
    ContextMismatchError,
    DecryptionError,
    InvalidShare,
    EncodingError,
    LocalProtocolError,
    MalformedMessageError,
    OverflowRiskError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)
from fedcrypt.vectors import check_float_vector

__all__ = [
    "ThresholdParams",
    "KeyShareMessage",
    "DecryptionShare",
    "RosterMessage",
    "KeyBackupMessage",
    "KeyHolder",
    "ThresholdServer",
    "ThresholdDecryption",
    "ThresholdSum",
    "SimulationResult",
    "simulate",
    "fuse_partials",
    "Stage",
    "BlobKind",
    "SUPPORTED_PYTHONS",
    "PRESETS",
]


#: name -> (ring degree, first prime bits, scale bits, upload level)
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "compact": (16384, 60, 50, 0),
    "wide": (16384, 60, 50, 1),
}

_PARAMS_MAGIC = b"FCTP"
_KEYSHARE_MAGIC = b"FCTK"
_BLOB_MAGIC = b"FCTB"
_SHARE_MAGIC = b"FCTD"
#: 2: client-side weights and the headroom factor (uploads of version 1 differ).
#: 3: the parameters name the packing, two reals per complex slot by default (version 2 had
#: one real per slot); every message of version 2 is refused, the blob with a message that says so.
_VERSION = 3
#: packing name <-> its byte in :meth:`ThresholdParams.to_bytes`
PACKINGS: dict[str, int] = {"real": 1, "complex": 2}
_SESSION_BYTES = 32
_DIGEST_BYTES = 32
_MAX_VALUES = 1 << 32
_MAX_PARTIES = 1024
#: OpenFHE's binary framing around the polynomials (context parameters, tags, lengths).
_OPENFHE_SLACK = 8192
_CAPACITY_MARGIN_BITS = 2
#: OpenFHE 1.6.1's CKKS flooding, in slot units, is sqrt(12) 2^(s/2) 2^estimate / 2^52 per
#: share (fitted; see ThresholdParams.slot_error_stddev).
_FLOODING_SLOT_EXPONENT = 52
#: The most bits of modulus headroom spent on precision (beyond it float64 decoding dominates).
_MAX_HEADROOM_BITS = 20
#: Float64 decoding error of a fused value, relative to the largest aggregate magnitude
#: ``num_clients * max_weight * clip`` (2^13 above the 2^-53 rounding: FFT depth and CRT).
_DECODE_RELATIVE_ERROR = 2.0**-40


def _check_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


# ====================================================================== parameters
@dataclass(frozen=True, slots=True)
class ThresholdParams:
    """Validated threshold-CKKS parameters, agreed by every party (they are public).

    Math (CKKS, Cheon-Kim-Kim-Song 2017, RNS, OpenFHE ``FIXEDMANUAL`` scaling): values are
    encoded at scale ``2^scale_bits`` into ``N/2`` complex slots of ``Z_Q[X]/(X^N+1)``, with
    ``Q = q_0 * q_1 ... q_L`` (``q_0`` of ``first_mod_bits``, the others of ``scale_bits``,
    ``L = upload_level``). With ``packing="complex"`` (the default; OpenFHE's
    ``CKKSDataType.COMPLEX``) slot ``j`` carries ``x[2j] + i x[2j+1]``, so a ciphertext
    holds ``N`` reals; with ``packing="real"`` it holds ``N/2`` (imaginary parts zero).
    Sums act on both parts alike, so this is an encoding change only. Public-key encryption
    under the joint key gives two polynomials over ``Q``: ``(upload_level + 1) * 8`` bytes
    per value (complex packing; twice that with real packing). Threshold decryption follows
    Asharov et al. (EUROCRYPT 2012) as implemented by OpenFHE: additive key shares
    ``s = sum_i s_i``, partial decryptions ``c1 s_i + flood_i``.

    Noise flooding (``flooding=True``, the default): CKKS decryption shares leak the key
    share otherwise (Li and Micciancio, EUROCRYPT 2021; the threshold variant in OpenFHE's
    ``Threshold_FHE.md``). OpenFHE 1.6.1 refuses ``SetMultipartyMode`` for CKKS; its CKKS
    flooding is ``SetDecryptionNoiseMode(NOISE_FLOODING_DECRYPT)`` with
    ``SetExecutionMode(EXEC_EVALUATION)``, ``SetNoiseEstimate(noise_estimate_bits)`` and
    ``SetStatisticalSecurity(statistical_security)``, and it then floods every partial
    decryption with a discrete Gaussian of standard deviation
    ``sigma = sqrt(12 tau) 2^(s/2) 2^noise_estimate_bits`` (Li, Micciancio, Schultz,
    Sorrell, CRYPTO 2022, as OpenFHE's ``CKKS_NOISE_FLOODING.md`` states it), where ``tau``
    is OpenFHE's default number of adversarial queries (``SetNumAdversarialQueries`` is
    refused for CKKS in 1.6.1, and so is any ``statistical_security`` other than its
    default 30: its parameter validation allows changing it only with
    ``NOISE_FLOODING_MULTIPARTY``, which CKKS refuses). ``noise_estimate_bits`` comes
    from OpenFHE's static estimation (``EXEC_NOISE_ESTIMATION``) on throw-away keys and
    the worst-case public input (``num_clients`` fresh uploads with every slot at
    ``2^h * max_weight * clip``, summed; ``h`` below); :meth:`preset` runs it. Because
    clients weight in plaintext, the aggregate is a sum of fresh ciphertexts and the estimate (about 10 bits
    for 10 uploads, plus ``log2(n)/2`` for the joint key) does not grow with the weights.
    With ``flooding=False`` OpenFHE adds its fixed 20-bit noise only (IND-CPA, not
    IND-CPA-D). The flooding is added to the coefficients of every partial decryption, so it
    covers the whole canonical embedding, the imaginary parts of the slots as much as the
    real parts: with complex packing every released value (either part of a slot) carries
    the same flooding error (:meth:`slot_error_stddev`). The noise estimate is run on a
    real-packed estimation context: the ciphertext noise (encryption noise, key error,
    encoding rounding) has the same distribution whatever the message and its packing.

    Capacity guard (no wrap-around modulo ``Q``)::

        num_clients * max_weight * clip <= 2^(first_mod_bits + upload_level * scale_bits
                                                - 1 - 2 - scale_bits)

    A plaintext coefficient is at most the largest slot modulus times the scale. With complex
    packing a slot's modulus is ``|x + iy| <= sqrt(2) clip`` per unit weight, which spends half
    a bit of the 2-bit margin (coefficients stay below ``Q / 2^2.5``; decoding needs ``Q / 2``).

    Headroom (precision): the flooding is sized relative to the scale, so one decrypted slot
    carries an error of fixed size whatever the magnitude of the values. Where the
    capacity guard leaves ``h`` spare bits (:meth:`headroom_bits`, at most 20), every
    client encrypts ``2^h * weight * x`` and fusion divides by ``2^h`` (exact: a power of
    two), so the error of a decrypted weighted sum is ``2^-h`` times the slot error while
    the largest aggregate still fits under ``Q``. The ciphertext noise does not depend on
    the message, so the flooding (and its protection) is unchanged; ``h`` is derived from
    the public parameters, so every party agrees on it.

    Threat model: semi-honest key holders and server; the server sees uploads, the
    aggregate and the shares, never a key share. Fewer than ``num_parties`` colluding key
    holders (with the server) learn nothing about an upload under RLWE: decryption needs
    every share. 128-bit security comes from OpenFHE's ``HEStd_128_classic`` check.

    Args:
        ring_degree: ``N``; 8192, 16384 or 32768.
        first_mod_bits: bits of ``q_0`` (30..60).
        scale_bits: bits of the scale and of ``q_1..q_L`` (20..59, below ``first_mod_bits``).
        upload_level: ``L``, primes above ``q_0`` kept in an upload (0 or 1).
        num_parties: number of key holders ``n`` (2..1024); all of them must decrypt.
        num_clients: the most uploads one aggregate combines.
        clip: bound on the absolute value of every input coordinate (inputs are clipped).
        max_weight: the largest weight a client may apply (weights are floats in
            ``(0, max_weight]``; the bound is an integer).
        flooding: noise flooding of partial decryptions (see above).
        statistical_security: ``s`` of the flooding, in bits (20..128; OpenFHE 1.6.1
            accepts only its default 30 for CKKS and refuses the context otherwise).
        noise_estimate_bits: OpenFHE's log2 noise estimate of the worst-case aggregate;
            required (finite, 0..50) when ``flooding`` is on.
        recovery_threshold: ``t`` of the key backup (0: none, decryption is n-of-n).
            With ``t`` in ``(n/2, n)`` every holder Shamir-shares its key share among the
            others (OpenFHE's ``ShareKeys``, "threshold FHE with aborts"), and up to
            ``n - t`` holders that drop can be stood in for (:meth:`KeyHolder.recover_share`).
        packing: ``"complex"`` (two reals per slot, the default) or ``"real"`` (one real per
            slot, the layout of wire version 2; kept for comparison).

    Raises:
        ValueError: a bound is broken; the message names it.
        TypeError: a field has the wrong type.
    """

    ring_degree: int
    first_mod_bits: int
    scale_bits: int
    upload_level: int
    num_parties: int
    num_clients: int = 100
    clip: float = 1.0
    max_weight: int = 1
    flooding: bool = True
    statistical_security: int = 30
    noise_estimate_bits: float = 0.0
    recovery_threshold: int = 0
    packing: str = "complex"

    def __post_init__(self) -> None:
        for name in (
            "ring_degree",
            "first_mod_bits",
            "scale_bits",
            "upload_level",
            "num_parties",
            "num_clients",
            "max_weight",
            "statistical_security",
            "recovery_threshold",
        ):
            _check_int(name, getattr(self, name))
        if not isinstance(self.flooding, bool):
            raise TypeError("flooding must be a bool")
        if not isinstance(self.packing, str):
            raise TypeError(f"packing must be a str, got {type(self.packing).__name__}")
        if self.packing not in PACKINGS:
            raise ValueError(f"packing must be one of {sorted(PACKINGS)}, got {self.packing!r}")
        for name in ("clip", "noise_estimate_bits"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            object.__setattr__(self, name, float(value))
        if self.ring_degree not in (8192, 16384, 32768):
            raise ValueError(f"ring_degree must be one of [8192, 16384, 32768], got {self.ring_degree}")
        if not 30 <= self.first_mod_bits <= 60:
            raise ValueError(f"first_mod_bits must be in [30, 60], got {self.first_mod_bits}")
        if not 20 <= self.scale_bits <= min(59, self.first_mod_bits - 1):
            raise ValueError(
                f"scale_bits must be in [20, {min(59, self.first_mod_bits - 1)}] (below q0's "
                f"{self.first_mod_bits} bits), got {self.scale_bits}"
            )
        if self.upload_level not in (0, 1):
            raise ValueError(f"upload_level must be 0 or 1, got {self.upload_level}")
        if not 2 <= self.num_parties <= _MAX_PARTIES:
            raise ValueError(f"num_parties must be in [2, {_MAX_PARTIES}], got {self.num_parties}")
        if self.num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {self.num_clients}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {self.clip!r}")
        if self.max_weight < 1:
            raise ValueError(f"max_weight must be >= 1, got {self.max_weight}")
        if not 20 <= self.statistical_security <= 128:
            raise ValueError(f"statistical_security must be in [20, 128], got {self.statistical_security}")
        if not math.isfinite(self.noise_estimate_bits) or not 0.0 <= self.noise_estimate_bits <= 50.0:
            raise ValueError(f"noise_estimate_bits must be in [0, 50], got {self.noise_estimate_bits!r}")
        if self.flooding and self.noise_estimate_bits == 0.0:
            raise ValueError(
                "flooding needs noise_estimate_bits (OpenFHE's static noise estimate); build the "
                "parameters with ThresholdParams.preset(...) or .with_noise_estimate()"
            )
        t = self.recovery_threshold
        if t != 0 and not (self.num_parties // 2 < t < self.num_parties):
            raise ValueError(
                f"recovery_threshold must be 0 (n-of-n) or in [{self.num_parties // 2 + 1}, {self.num_parties - 1}] "
                f"(a majority of the {self.num_parties} holders, below all of them), got {t}"
            )
        needed = self.num_clients * self.max_weight * self.clip
        if needed > self.capacity():
            raise ValueError(
                f"capacity guard: num_clients * max_weight * clip = {needed:g} exceeds "
                f"{self.capacity():g} = 2^(bits(Q)-1-{_CAPACITY_MARGIN_BITS}-scale_bits); lower "
                f"clip, max_weight or num_clients, or use upload_level=1"
            )

    # ------------------------------------------------------------------ building
    @classmethod
    def preset(cls, name: str, *, num_parties: int, **policy: Any) -> "ThresholdParams":
        """A named preset, with OpenFHE's noise estimate for the policy (needs ``openfhe``).

        Presets (128-bit security, ``N = 16384``, 16384 values per ciphertext with complex
        packing, 8192 with real packing, scale 2^50):

        * ``"compact"``: upload level 0 (one 60-bit prime): 16 bytes per value (32 with
          ``packing="real"``); capacity ``num_clients * max_weight * clip <= 128``.
        * ``"wide"``: upload level 1 (60 + 50 bits): 32 bytes per value (64 with real
          packing); capacity 2^57.

        Args:
            name: the preset.
            num_parties: number of key holders.
            **policy: ``num_clients``, ``clip``, ``max_weight``, ``flooding``,
                ``statistical_security``, ``recovery_threshold``, ``packing``.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown threshold CKKS preset {name!r}; known: {sorted(PRESETS)}")
        allowed = {
            "num_clients", "clip", "max_weight", "flooding", "statistical_security", "recovery_threshold", "packing"
        }
        unknown = set(policy) - allowed
        if unknown:
            raise ValueError(
                "preset policy takes num_clients, clip, max_weight, flooding, statistical_security, "
                f"recovery_threshold, packing; got {sorted(unknown)}"
            )
        ring, first, scale, level = PRESETS[name]
        flooding = policy.pop("flooding", True)
        base = cls(ring, first, scale, level, num_parties, flooding=False, **policy)
        return base.with_noise_estimate() if flooding else base

    def with_noise_estimate(self) -> "ThresholdParams":
        """These parameters with flooding on and OpenFHE's noise estimate (needs ``openfhe``).

        The estimate is rounded up to 1/16 bit so that it is a short, canonical number.
        """
        probe = _replace(self, flooding=False, noise_estimate_bits=0.0)
        bits = math.ceil(max(_rt.estimate_noise_bits(probe), 1.0) * 16) / 16
        return _replace(self, flooding=True, noise_estimate_bits=bits)

    # ------------------------------------------------------------------ derived
    @property
    def slot_count(self) -> int:
        """Slots per ciphertext (``N/2``)."""
        return self.ring_degree // 2

    @property
    def values_per_ciphertext(self) -> int:
        """Reals per ciphertext: ``N`` with complex packing, ``N/2`` with real packing."""
        return self.ring_degree if self.packing == "complex" else self.ring_degree // 2

    @property
    def slot_modulus_factor(self) -> float:
        """The largest slot modulus per unit of ``clip``: ``sqrt(2)`` (complex packing) or 1."""
        return math.sqrt(2.0) if self.packing == "complex" else 1.0

    def modulus_bits(self) -> int:
        """Nominal bits of the upload modulus ``Q``."""
        return self.first_mod_bits + self.upload_level * self.scale_bits

    def capacity(self) -> float:
        """The largest ``sum(weights) * clip`` the modulus holds with the margin."""
        return math.ldexp(1.0, self.modulus_bits() - 1 - _CAPACITY_MARGIN_BITS - self.scale_bits)

    def headroom_bits(self) -> int:
        """Spare modulus bits spent on precision: the largest ``h <= 20`` with
        ``2^h * num_clients * max_weight * clip <= capacity()`` (see the class docstring)."""
        needed = self.num_clients * self.max_weight * self.clip
        bits = 0
        while bits < _MAX_HEADROOM_BITS and math.ldexp(needed, bits + 1) <= self.capacity():
            bits += 1
        return bits

    def value_error_stddev(self) -> float:
        """Standard deviation of the flooding error of one decrypted value of a weighted sum.

        :meth:`slot_error_stddev` divided by ``2^headroom_bits()``.
        """
        return math.ldexp(self.slot_error_stddev(), -self.headroom_bits())

    def slot_error_stddev(self) -> float:
        """Standard deviation of one decrypted value's error (flooding on), calibrated model:
        the real part of a slot, and, with complex packing, its imaginary part alike.

        ``sigma = sqrt(12 n) 2^(s/2) 2^noise_estimate_bits / 2^52`` with ``n`` key holders
        and ``s`` the statistical security: OpenFHE's flooding standard deviation per share,
        summed over ``n`` independent shares, in slot units. The constant ``2^-52`` was
        fitted on OpenFHE 1.6.1 (N=16384; n = 3, 5, 10; noise estimates 5 to 21.7 bits):
        the measured standard deviation matched the model within 0.3 bits. OpenFHE sizes
        the flooding relative to the scaling factor, so the slot error does not depend on
        ``scale_bits`` (measured identical at 2^40, 2^45, 2^50, 2^55 and 2^59). The
        flooding noise dominates the encryption noise by ``2^(s/2)``, so the error does
        not depend on the data or the weights either.

        Raises:
            ValueError: flooding is off (OpenFHE's fixed 20-bit share noise has no
                documented bound here).
        """
        if not self.flooding:
            raise ValueError("no documented error model without flooding")
        return (
            math.sqrt(12 * self.num_parties)
            * 2.0 ** (self.statistical_security / 2 + self.noise_estimate_bits)
            / math.ldexp(1.0, _FLOODING_SLOT_EXPONENT)
        )

    def sum_error_bound(self) -> float:
        """Per-value bound on the error of a decrypted weighted sum.

        ``10 * value_error_stddev() + 2^-40 * num_clients * max_weight * clip``: ten
        standard deviations of the flooding leave room for a 0.3-bit error of the calibrated
        model (it is then 8 true standard deviations: a value exceeds it with probability
        about 1e-15); the second term bounds float64 decoding, relative to the largest
        aggregate slot modulus (times ``sqrt(2)`` with complex packing). It holds for real
        and imaginary parts alike.
        """
        decode = _DECODE_RELATIVE_ERROR * self.num_clients * self.max_weight * self.clip * self.slot_modulus_factor
        return 10.0 * self.value_error_stddev() + decode

    def mean_error_bound(self, weights: Iterable[float]) -> float:
        """:meth:`sum_error_bound` divided by the total weight."""
        total = math.fsum(float(w) for w in weights)
        if not (math.isfinite(total) and total > 0):
            raise ValueError("weights must be non-empty with a positive total")
        return self.sum_error_bound() / total

    def bytes_per_value(self) -> float:
        """Nominal upload bytes per value (two polynomials over ``Q``, no framing)."""
        return 2 * 8 * (self.upload_level + 1) * self.ring_degree / self.values_per_ciphertext

    # ------------------------------------------------------------------ bytes
    _STRUCT = struct.Struct(">4sBIBBBIIdIH?HdB")

    def to_bytes(self) -> bytes:
        """Canonical, versioned encoding (hashed into every fingerprint)."""
        return ThresholdParams._STRUCT.pack(
            _PARAMS_MAGIC,
            _VERSION,
            self.ring_degree,
            self.first_mod_bits,
            self.scale_bits,
            self.upload_level,
            self.num_parties,
            self.num_clients,
            self.clip,
            self.max_weight,
            self.recovery_threshold,
            self.flooding,
            self.statistical_security,
            self.noise_estimate_bits,
            PACKINGS[self.packing],
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "ThresholdParams":
        """Strictly decode :meth:`to_bytes` output.

        Raises:
            MalformedMessageError: wrong magic, version, length or invalid values.
        """
        data = _as_bytes(data)
        if len(data) >= 5 and data[:4] == _PARAMS_MAGIC and data[4] == 2:
            raise MalformedMessageError(_OLD_VERSION_MESSAGE.format(what="ThresholdParams"))
        if len(data) != cls._STRUCT.size:
            raise MalformedMessageError(f"ThresholdParams: {len(data)} bytes, expected {cls._STRUCT.size}")
        (magic, version, ring, first, scale, level, parties, clients, clip, weight, recovery, flood, sec, est, pack) = (
            cls._STRUCT.unpack(data)
        )
        if magic != _PARAMS_MAGIC or version != _VERSION:
            raise MalformedMessageError("ThresholdParams: bad magic, version or flags")
        names = {code: name for name, code in PACKINGS.items()}
        if pack not in names:
            raise MalformedMessageError(f"ThresholdParams: unknown packing {pack}")
        try:
            params = cls(
                ring, first, scale, level, parties, clients, clip, weight, bool(flood), sec, est, recovery, names[pack]
            )
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"ThresholdParams: {exc}") from None
        if params.to_bytes() != data:
            raise MalformedMessageError("ThresholdParams: not in canonical form")
        return params


_OLD_VERSION_MESSAGE = (
    "{what}: version 2 (one real per CKKS slot, before complex packing) is no longer accepted; "
    "run the key set-up again with this version (two reals per slot by default; packing='real' keeps one)"
)


def _replace(params: ThresholdParams, **changes: Any) -> ThresholdParams:
    fields = {name: getattr(params, name) for name in ThresholdParams.__dataclass_fields__}
    fields.update(changes)
    return ThresholdParams(**fields)


def _as_bytes(data: object) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    return bytes(data)


def _runtime(params: ThresholdParams) -> Any:
    return _rt.runtime(params)


def _public_key_cap(params: ThresholdParams) -> int:
    return 2 * params.ring_degree * 8 * (params.upload_level + 1) + _OPENFHE_SLACK


def _ciphertext_cap(params: ThresholdParams, elements: int) -> int:
    return elements * params.ring_degree * 8 * (params.upload_level + 1) + _OPENFHE_SLACK


# ====================================================================== framing helpers
class _Reader:
    """Bounds-checked reader over a message's bytes."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise MalformedMessageError(f"{self.what}: truncated")
        out = self.data[self.pos : self.pos + count]
        self.pos += count
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        st = struct.Struct(fmt)
        return st.unpack(self.take(st.size))

    def sized(self, cap: int, label: str) -> bytes:
        (size,) = self.unpack(">I")
        if size == 0 or size > cap:
            raise MalformedMessageError(f"{self.what}: {label} of {size} bytes (cap {cap})")
        return self.take(size)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedMessageError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


def _sized(blob: bytes) -> bytes:
    return struct.pack(">I", len(blob)) + blob


# ====================================================================== messages
@dataclass(frozen=True, slots=True)
class KeyShareMessage:
    """One link of the key-generation chain: holder ``party``'s running public key.

    The message of party ``num_parties - 1`` is the joint public key. It carries no secret.

    Attributes:
        session: the server's 32-byte session id.
        party: index of the key holder that produced it (0-based).
        public_key: OpenFHE binary serialisation of the running public key.
        transport_key: the holder's X25519 public key for the key backup (32 bytes) when
            ``recovery_threshold`` is set, else empty.
    """

    session: bytes = field(repr=False)
    party: int
    public_key: bytes = field(repr=False)
    transport_key: bytes = field(default=b"", repr=False)

    def to_bytes(self) -> bytes:
        """Canonical bytes: magic, version, session, party, sized public key, transport key."""
        head = struct.pack(">4sB32sH", _KEYSHARE_MAGIC, _VERSION, self.session, self.party)
        return head + _sized(self.public_key) + struct.pack(">B", len(self.transport_key)) + self.transport_key

    @classmethod
    def from_bytes(cls, data: bytes, params: ThresholdParams) -> "KeyShareMessage":
        """Strictly decode; the public key's size is capped by ``params``.

        Raises:
            MalformedMessageError: truncated, oversized, bad magic/version/party.
        """
        reader = _Reader(_as_bytes(data), "key share")
        magic, version, session, party = reader.unpack(">4sB32sH")
        if magic != _KEYSHARE_MAGIC or version != _VERSION:
            raise MalformedMessageError("key share: bad magic or version")
        if party >= params.num_parties:
            raise MalformedMessageError(f"key share: party {party} outside [0, {params.num_parties})")
        key = reader.sized(_public_key_cap(params), "public key")
        (size,) = reader.unpack(">B")
        expected = 32 if params.recovery_threshold else 0
        if size != expected:
            raise MalformedMessageError(f"key share: transport key of {size} bytes, expected {expected}")
        transport = reader.take(size)
        reader.end()
        return cls(session, party, key, transport)

    def __repr__(self) -> str:
        return f"KeyShareMessage(party={self.party}, public_key=<{len(self.public_key)} bytes>)"


@dataclass(frozen=True, slots=True)
class DecryptionShare:
    """Holder ``party``'s partial decryption of one aggregate (flooded, see ThresholdParams).

    Attributes:
        session: the session id.
        party: the key holder (0 is the lead: its share includes ``c0``).
        aggregate_digest: SHA-256 of the aggregate blob it decrypts.
        partials: one OpenFHE ciphertext (one polynomial) per ciphertext of the aggregate.
    """

    session: bytes = field(repr=False)
    party: int
    aggregate_digest: bytes
    partials: tuple[bytes, ...] = field(repr=False)

    def to_bytes(self) -> bytes:
        """Canonical bytes: magic, version, session, party, digest, count, sized partials."""
        head = struct.pack(
            ">4sB32sH32sI", _SHARE_MAGIC, _VERSION, self.session, self.party, self.aggregate_digest, len(self.partials)
        )
        return head + b"".join(_sized(p) for p in self.partials)

    @classmethod
    def from_bytes(cls, data: bytes, params: ThresholdParams, *, ciphertext_count: int) -> "DecryptionShare":
        """Strictly decode a share of an aggregate made of ``ciphertext_count`` ciphertexts.

        Raises:
            MalformedMessageError: truncated, oversized, bad magic/version/party/count.
        """
        data = _as_bytes(data)
        cap = _ciphertext_cap(params, 1)
        if len(data) > 75 + ciphertext_count * (4 + cap):
            raise MalformedMessageError("decryption share: oversized")
        reader = _Reader(data, "decryption share")
        magic, version, session, party, digest, count = reader.unpack(">4sB32sH32sI")
        if magic != _SHARE_MAGIC or version != _VERSION:
            raise MalformedMessageError("decryption share: bad magic or version")
        if party >= params.num_parties:
            raise MalformedMessageError(f"decryption share: party {party} outside [0, {params.num_parties})")
        if count != ciphertext_count:
            raise MalformedMessageError(f"decryption share: {count} partials, expected {ciphertext_count}")
        partials = tuple(reader.sized(cap, f"partial {i}") for i in range(count))
        reader.end()
        return cls(session, party, digest, partials)

    def __repr__(self) -> str:
        return f"DecryptionShare(party={self.party}, partials=<{len(self.partials)} ciphertexts>)"


_ROSTER_MAGIC = b"FCTR"
_BACKUP_MAGIC = b"FCTS"


@dataclass(frozen=True, slots=True)
class RosterMessage:
    """Every key holder's X25519 transport key, in party order (broadcast by the server).

    Attributes:
        session: the session id.
        transport_keys: one 32-byte X25519 public key per holder.
    """

    session: bytes = field(repr=False)
    transport_keys: tuple[bytes, ...] = field(repr=False)

    def to_bytes(self) -> bytes:
        """Canonical bytes: magic, version, session, count, keys."""
        head = struct.pack(">4sB32sH", _ROSTER_MAGIC, _VERSION, self.session, len(self.transport_keys))
        return head + b"".join(self.transport_keys)

    @classmethod
    def from_bytes(cls, data: bytes, params: ThresholdParams) -> "RosterMessage":
        """Strictly decode.

        Raises:
            MalformedMessageError: truncated, wrong count, bad magic or version.
        """
        reader = _Reader(_as_bytes(data), "roster")
        magic, version, session, count = reader.unpack(">4sB32sH")
        if magic != _ROSTER_MAGIC or version != _VERSION:
            raise MalformedMessageError("roster: bad magic or version")
        if count != params.num_parties:
            raise MalformedMessageError(f"roster: {count} keys for {params.num_parties} holders")
        keys = tuple(reader.take(32) for _ in range(count))
        reader.end()
        return cls(session, keys)

    def __repr__(self) -> str:
        return f"RosterMessage(holders={len(self.transport_keys)})"


@dataclass(frozen=True, slots=True)
class KeyBackupMessage:
    """A Shamir share of holder ``subject``'s key share, AES-GCM-encrypted to ``recipient``.

    Sent by ``subject`` itself in the backup round (``sender == subject``) and, when
    ``subject`` dropped, by another holder to the holder that stands in for it.

    Attributes:
        session: the session id.
        sender: the holder that encrypted it.
        recipient: the holder that can decrypt it.
        subject: the holder whose key share it is a Shamir share of.
        ciphertext: ``nonce || AES-256-GCM(share) || tag`` under the pairwise key.
    """

    session: bytes = field(repr=False)
    sender: int
    recipient: int
    subject: int
    ciphertext: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        """Canonical bytes: magic, version, session, sender, recipient, subject, sized body."""
        head = struct.pack(
            ">4sB32sHHH", _BACKUP_MAGIC, _VERSION, self.session, self.sender, self.recipient, self.subject
        )
        return head + _sized(self.ciphertext)

    @classmethod
    def from_bytes(cls, data: bytes, params: ThresholdParams) -> "KeyBackupMessage":
        """Strictly decode.

        Raises:
            MalformedMessageError: truncated, oversized, bad ids, magic or version.
        """
        reader = _Reader(_as_bytes(data), "key backup")
        magic, version, session, sender, recipient, subject = reader.unpack(">4sB32sHHH")
        if magic != _BACKUP_MAGIC or version != _VERSION:
            raise MalformedMessageError("key backup: bad magic or version")
        n = params.num_parties
        if max(sender, recipient, subject) >= n or sender == recipient or recipient == subject:
            raise MalformedMessageError("key backup: bad sender, recipient or subject")
        body = reader.sized(_backup_cap(params), "share")
        reader.end()
        return cls(session, sender, recipient, subject, body)

    def associated_data(self) -> bytes:
        """What the AEAD binds: the session and the three ids."""
        return b"fedcrypt threshold-ckks key backup v1" + self.session + struct.pack(
            ">HHH", self.sender, self.recipient, self.subject
        )

    def __repr__(self) -> str:
        return (
            f"KeyBackupMessage(sender={self.sender}, recipient={self.recipient}, subject={self.subject}, "
            f"ciphertext=<{len(self.ciphertext)} bytes>)"
        )


def _backup_cap(params: ThresholdParams) -> int:
    return params.ring_degree * 8 * (params.upload_level + 4) + _OPENFHE_SLACK


class BlobKind(enum.IntEnum):
    """Kinds of encrypted vector."""

    UPLOAD = 1
    AGGREGATE = 2


_BLOB_HEAD = struct.Struct(">4sBB32sQIdI")


@dataclass(frozen=True, slots=True)
class _BlobHeader:
    kind: BlobKind
    fingerprint: bytes
    length: int
    contributions: int
    total_weight: float
    count: int


def _encode_blob(header: _BlobHeader, pieces: Sequence[bytes]) -> bytes:
    head = _BLOB_HEAD.pack(
        _BLOB_MAGIC,
        _VERSION,
        int(header.kind),
        header.fingerprint,
        header.length,
        header.contributions,
        header.total_weight,
        header.count,
    )
    return head + b"".join(_sized(p) for p in pieces)


def _decode_blob(
    data: object, params: ThresholdParams, fingerprint: bytes, kinds: tuple[BlobKind, ...]
) -> tuple[_BlobHeader, list[bytes]]:
    blob = _as_bytes(data)
    if len(blob) < _BLOB_HEAD.size:
        raise MalformedMessageError("encrypted vector: truncated header")
    magic, version, kind, fp, length, contributions, total_weight, count = _BLOB_HEAD.unpack_from(blob, 0)
    if magic == _BLOB_MAGIC and version == 2:
        raise MalformedMessageError(_OLD_VERSION_MESSAGE.format(what="encrypted vector"))
    if magic != _BLOB_MAGIC or version != _VERSION:
        raise MalformedMessageError("encrypted vector: bad magic or version")
    if kind not in (BlobKind.UPLOAD, BlobKind.AGGREGATE):
        raise MalformedMessageError(f"encrypted vector: unknown kind {kind}")
    if not hmac.compare_digest(fp, fingerprint):
        raise ContextMismatchError("encrypted vector was made under another threshold key (fingerprint mismatch)")
    if BlobKind(kind) not in kinds:
        raise MalformedMessageError(f"encrypted vector: kind {BlobKind(kind).name} is not accepted here")
    if not 1 <= length <= _MAX_VALUES:
        raise MalformedMessageError(f"encrypted vector: length {length} outside [1, {_MAX_VALUES}]")
    if contributions < 1 or not (math.isfinite(total_weight) and total_weight > 0):
        raise MalformedMessageError("encrypted vector: bad contribution count or total weight")
    if contributions > params.num_clients or total_weight > contributions * params.max_weight:
        raise MalformedMessageError("encrypted vector: more contributions or weight than the parameters allow")
    if kind == BlobKind.UPLOAD and contributions != 1:
        raise MalformedMessageError("encrypted vector: an upload has one contribution")
    expected = -(-length // params.values_per_ciphertext)
    if count != expected:
        raise MalformedMessageError(f"encrypted vector: {count} ciphertexts for {length} values (expected {expected})")
    cap = _ciphertext_cap(params, 2)
    if len(blob) > _BLOB_HEAD.size + count * (4 + cap):
        raise MalformedMessageError("encrypted vector: oversized")
    reader = _Reader(blob, "encrypted vector")
    reader.pos = _BLOB_HEAD.size
    pieces = [reader.sized(cap, f"ciphertext {i}") for i in range(count)]
    reader.end()
    return _BlobHeader(BlobKind(kind), fp, length, contributions, total_weight, count), pieces


def _fingerprint(params: ThresholdParams, session: bytes, joint_key: bytes) -> bytes:
    h = hashlib.sha256(b"fedcrypt threshold-ckks v1\x00")
    h.update(params.to_bytes())
    h.update(session)
    h.update(hashlib.sha256(joint_key).digest())
    return h.digest()


def _load_ciphertexts(runtime: Any, pieces: Sequence[bytes], params: ThresholdParams, *, elements: int, what: str) -> list[Any]:
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
        out.append(ct)
    return out


# ====================================================================== key holder
class Stage(enum.Enum):
    """Stages of a :class:`KeyHolder` and of a :class:`ThresholdServer`."""

    KEYGEN = "keygen"
    AWAIT_JOINT_KEY = "await_joint_key"
    READY = "ready"


_STAGES = (Stage.KEYGEN, Stage.AWAIT_JOINT_KEY, Stage.READY)
_STATE_MAGIC = b"FCTH"


class KeyHolder:
    """One key holder (a client): an additive share ``s_i`` of the threshold secret key.

    Math: see the module docstring; holder ``i`` samples its share in ``KeyGen`` or
    ``MultipartyKeyGen`` (OpenFHE's ternary secret and Gaussian error, from OpenFHE's
    CSPRNG seeded by the OS) and extends the running public key by ``-a s_i + e_i``.

    Threat model: semi-honest. The share leaves this object only in
    :meth:`to_state_bytes`, the holder's whole state for its own private storage (a
    transport that runs each message in a fresh process, like Flower's ``Context.state``);
    a holder lives for one federation session. It answers at most one partial
    decryption per aggregate digest, never one of an upload, and only of an aggregate
    claiming at least ``min_contributions`` uploads (a claim by the server: against a
    malicious server that relabels one upload as an aggregate this is not a defence; the
    flooding still hides the key share).

    Args:
        params: the agreed parameters.
        party: this holder's index in ``[0, num_parties)``.
        session: the server's session id (32 bytes).
        min_contributions: the fewest uploads an aggregate must claim to be decrypted.
    """

    __slots__ = (
        "_params",
        "_party",
        "_session",
        "_runtime",
        "_stage",
        "_secret_key",
        "_secret_bytes",
        "_own_public",
        "_joint_key",
        "_joint_bytes",
        "_fingerprint",
        "_answered",
        "_min_contributions",
        "_transport",
        "_roster",
        "_backups",
        "_backed_up",
        "_released",
    )

    def __init__(self, params: ThresholdParams, party: int, session: bytes, *, min_contributions: int = 2) -> None:
        if not isinstance(params, ThresholdParams):
            raise TypeError(f"params must be ThresholdParams, got {type(params).__name__}")
        _check_int("party", party)
        if not 0 <= party < params.num_parties:
            raise ValueError(f"party must be in [0, {params.num_parties}), got {party}")
        if not isinstance(session, bytes) or len(session) != _SESSION_BYTES:
            raise ValueError(f"session must be {_SESSION_BYTES} bytes")
        _check_int("min_contributions", min_contributions)
        if min_contributions < 1:
            raise ValueError(f"min_contributions must be >= 1, got {min_contributions}")
        self._params = params
        self._party = party
        self._session = session
        self._runtime = _runtime(params)
        self._stage = Stage.KEYGEN
        self._secret_key: Any = None
        self._secret_bytes: Secret | None = None  # its OpenFHE serialisation (state bytes)
        self._own_public: bytes | None = None
        self._joint_key: Any = None
        self._joint_bytes: bytes | None = None
        self._fingerprint: bytes | None = None
        self._answered: set[bytes] = set()
        self._min_contributions = min_contributions
        self._transport = X25519KeyPair.generate() if params.recovery_threshold else None
        self._roster: tuple[bytes, ...] | None = None
        self._backups: dict[int, Secret] = {}  # subject -> our Shamir share of its key share
        self._backed_up = False
        self._released: set[int] = set()  # subjects whose share we released for a stand-in

    @property
    def party(self) -> int:
        """This holder's index."""
        return self._party

    @property
    def params(self) -> ThresholdParams:
        """The agreed parameters."""
        return self._params

    @property
    def session(self) -> bytes:
        """The session id this holder's key share belongs to."""
        return self._session

    @property
    def stage(self) -> Stage:
        """Where this holder is."""
        return self._stage

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of parameters, session and joint key (after key generation)."""
        if self._fingerprint is None:
            raise LocalProtocolError("the joint key is not known yet", party=self._party, stage=self._stage)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"KeyHolder(party={self._party}, stage={self._stage.name}, secret_key_share=<held>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("KeyHolder holds a secret key share and cannot be pickled")

    # ------------------------------------------------------------------ state bytes
    def to_state_bytes(self) -> bytes:
        """This holder's whole state, SECRET KEY SHARE INCLUDED, as canonical bytes.

        For a transport that runs every message in a fresh process (a Flower node keeps it
        in its ``Context.state``): store it where only this node can read it, never log it.
        Everything a holder remembers travels with it: the key share, the joint key, the
        Shamir pieces of the t-of-n backup, and the aggregates it already answered, so a
        restored holder still answers each aggregate at most once.
        """
        params = self._params
        out = [
            _STATE_MAGIC,
            struct.pack(">B", _VERSION),
            _sized(params.to_bytes()),
            struct.pack(">H32sBI", self._party, self._session, _STAGES.index(self._stage), self._min_contributions),
        ]
        secret = b"" if self._secret_bytes is None else self._secret_bytes.reveal()
        transport = b"" if self._transport is None else self._transport.private_bytes().reveal()
        for blob in (secret, self._own_public or b"", self._joint_bytes or b"", transport):
            out.append(struct.pack(">I", len(blob)) + blob)
        roster = self._roster or ()
        out.append(struct.pack(">BH", self._roster is not None, len(roster)) + b"".join(roster))
        out.append(struct.pack(">H", len(self._backups)))
        for subject in sorted(self._backups):
            out.append(struct.pack(">H", subject) + _sized(self._backups[subject].reveal()))
        out.append(struct.pack(">BH", self._backed_up, len(self._released)))
        out.extend(struct.pack(">H", subject) for subject in sorted(self._released))
        answered = sorted(self._answered)
        out.append(struct.pack(">I", len(answered)) + b"".join(answered))
        return b"".join(out)

    @classmethod
    def from_state_bytes(cls, data: bytes) -> "KeyHolder":
        """Restore a holder from :meth:`to_state_bytes` (strict; needs ``openfhe``).

        Raises:
            MalformedMessageError: the bytes do not decode, are not canonical, or OpenFHE
                cannot parse a key.
        """
        reader = _Reader(_as_bytes(data), "key holder state")
        if reader.take(4) != _STATE_MAGIC or reader.unpack(">B")[0] != _VERSION:
            raise MalformedMessageError("key holder state: bad magic or version")
        params = ThresholdParams.from_bytes(reader.sized(ThresholdParams._STRUCT.size, "parameters"))
        party, session, stage_index, min_contributions = reader.unpack(">H32sBI")
        if stage_index >= len(_STAGES):
            raise MalformedMessageError("key holder state: unknown stage")
        try:
            holder = cls(params, party, session, min_contributions=min_contributions)
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"key holder state: {exc}") from None
        blobs = []
        for cap in (_backup_cap(params), _public_key_cap(params), _public_key_cap(params), 32):
            (size,) = reader.unpack(">I")
            if size > cap:
                raise MalformedMessageError(f"key holder state: a field of {size} bytes (cap {cap})")
            blobs.append(reader.take(size))
        secret, own_public, joint_bytes, transport = blobs
        stage = _STAGES[stage_index]
        expected_transport = 32 if params.recovery_threshold else 0
        if (
            bool(secret) != (stage is not Stage.KEYGEN)
            or bool(own_public) != bool(secret)
            or bool(joint_bytes) != (stage is Stage.READY)
            or len(transport) != expected_transport
        ):
            raise MalformedMessageError("key holder state: fields do not match its stage")
        has_roster, count = reader.unpack(">BH")
        if has_roster > 1 or (not has_roster and count) or (has_roster and count != params.num_parties):
            raise MalformedMessageError("key holder state: bad roster")
        roster = tuple(reader.take(32) for _ in range(count)) if has_roster else None
        (count,) = reader.unpack(">H")
        backups: dict[int, Secret] = {}
        for _ in range(count):
            (subject,) = reader.unpack(">H")
            if subject >= params.num_parties or subject == party or subject in backups:
                raise MalformedMessageError("key holder state: bad backup subject")
            backups[subject] = Secret(reader.sized(_backup_cap(params), "backup"))
        backed_up, released_count = reader.unpack(">BH")
        released = {reader.unpack(">H")[0] for _ in range(released_count)}
        (count,) = reader.unpack(">I")
        if count > 1 << 20:
            raise MalformedMessageError("key holder state: too many answered aggregates")
        answered = {reader.take(35) for _ in range(count)}
        reader.end()
        if backed_up > 1 or len(released) != released_count or any(r >= params.num_parties for r in released):
            raise MalformedMessageError("key holder state: bad backup bookkeeping")
        runtime = holder._runtime
        if secret:
            holder._secret_key = _rt.deserialize(runtime, "private_key", secret, "key holder state")
            holder._secret_bytes = Secret(secret)
            holder._own_public = own_public
        if joint_bytes:
            holder._joint_key = _rt.deserialize(runtime, "public_key", joint_bytes, "key holder state")
            holder._joint_bytes = joint_bytes
            holder._fingerprint = _fingerprint(params, session, joint_bytes)
        if transport:
            try:
                holder._transport = X25519KeyPair.from_private_bytes(transport)
            except ValueError:
                raise MalformedMessageError("key holder state: bad transport key") from None
        holder._stage = stage
        holder._roster = roster
        holder._backups = backups
        holder._backed_up = bool(backed_up)
        holder._released = released
        holder._answered = answered
        if holder.to_state_bytes() != _as_bytes(data):
            raise MalformedMessageError("key holder state: not in canonical form")
        return holder

    # ------------------------------------------------------------------ key generation
    def generate_key_share(self, previous: KeyShareMessage | bytes | None = None) -> KeyShareMessage:
        """Run this holder's link of the key-generation chain.

        Args:
            previous: holder ``party - 1``'s message (``None`` for holder 0).

        Raises:
            LocalProtocolError: called twice.
            UnexpectedMessageError: ``previous`` is from another session or party.
            MalformedMessageError: ``previous`` does not decode.
        """
        if self._stage is not Stage.KEYGEN:
            raise LocalProtocolError("this holder already generated its key share", party=self._party, stage=self._stage)
        context = self._runtime.context
        if self._party == 0:
            if previous is not None:
                raise ProtocolViolationError("holder 0 starts the chain: no previous key", party=0, stage=self._stage)
            pair = context.KeyGen()
        else:
            if previous is None:
                raise LocalProtocolError("holder >0 needs the previous holder's key", party=self._party, stage=self._stage)
            message = self._decode_keyshare(previous)
            if message.party != self._party - 1:
                raise UnexpectedMessageError(
                    f"expected the key of holder {self._party - 1}, got holder {message.party}",
                    party=self._party,
                    stage=self._stage,
                )
            running = _rt.deserialize(self._runtime, "public_key", message.public_key, "key share")
            try:
                pair = context.MultipartyKeyGen(running)
            except Exception:
                raise MalformedMessageError("key share: OpenFHE refuses the running public key", party=self._party) from None
        public = _rt.serialize(self._runtime, pair.publicKey)
        secret_bytes = Secret(_rt.serialize(self._runtime, pair.secretKey))
        transport = self._transport.public_bytes if self._transport is not None else b""
        # ---- apply
        self._secret_key = pair.secretKey
        self._secret_bytes = secret_bytes
        self._own_public = public
        self._stage = Stage.AWAIT_JOINT_KEY
        return KeyShareMessage(self._session, self._party, public, transport)

    def receive_joint_key(self, message: KeyShareMessage | bytes) -> None:
        """Accept the joint public key (the last holder's key-share message).

        Raises:
            LocalProtocolError: out of order.
            UnexpectedMessageError: wrong session, not the last holder's key, or (for the
                last holder) not the key it produced itself.
        """
        if self._stage is not Stage.AWAIT_JOINT_KEY:
            raise LocalProtocolError("not waiting for the joint key", party=self._party, stage=self._stage)
        message = self._decode_keyshare(message)
        last = self._params.num_parties - 1
        if message.party != last:
            raise UnexpectedMessageError(f"the joint key comes from holder {last}", party=self._party, stage=self._stage)
        if self._party == last and not hmac.compare_digest(message.public_key, self._own_public or b""):
            raise UnexpectedMessageError("the joint key is not the key this holder produced", party=self._party)
        joint = _rt.deserialize(self._runtime, "public_key", message.public_key, "joint key")
        # ---- apply
        self._joint_key = joint
        self._joint_bytes = message.public_key
        self._fingerprint = _fingerprint(self._params, self._session, message.public_key)
        self._stage = Stage.READY

    def _decode_keyshare(self, message: KeyShareMessage | bytes) -> KeyShareMessage:
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = KeyShareMessage.from_bytes(bytes(message), self._params)
        if not isinstance(message, KeyShareMessage):
            raise TypeError(f"expected a KeyShareMessage or bytes, got {type(message).__name__}")
        if not hmac.compare_digest(message.session, self._session):
            raise UnexpectedMessageError("key share from another session", party=self._party, stage=self._stage)
        return message

    # ------------------------------------------------------------------ key backup (t-of-n)
    def receive_roster(self, message: RosterMessage | bytes) -> None:
        """Accept every holder's transport key (needed for the key backup).

        Raises:
            LocalProtocolError: no ``recovery_threshold`` in the parameters, or out of order.
            UnexpectedMessageError: another session, or our own key is not at our index.
        """
        self._require_recovery()
        self._require_ready()
        if self._roster is not None:
            raise LocalProtocolError("the roster was already received", party=self._party)
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = RosterMessage.from_bytes(bytes(message), self._params)
        if not isinstance(message, RosterMessage):
            raise TypeError(f"expected a RosterMessage or bytes, got {type(message).__name__}")
        if not hmac.compare_digest(message.session, self._session):
            raise UnexpectedMessageError("roster from another session", party=self._party)
        assert self._transport is not None
        if len(message.transport_keys) != self._params.num_parties or not hmac.compare_digest(
            message.transport_keys[self._party], self._transport.public_bytes
        ):
            raise UnexpectedMessageError("the roster does not hold this holder's transport key", party=self._party)
        self._roster = tuple(message.transport_keys)

    def backup_key(self) -> tuple[KeyBackupMessage, ...]:
        """Shamir-share this holder's key share among the others (OpenFHE ``ShareKeys``).

        Returns one message per other holder, each encrypted to it (X25519 + HKDF +
        AES-256-GCM, the session and ids as associated data). Runs once.

        Raises:
            LocalProtocolError: no recovery threshold, no roster yet, or already done.
        """
        self._require_recovery()
        roster = self._require_roster()
        if self._backed_up:
            raise LocalProtocolError("this holder's key is already backed up", party=self._party)
        params, runtime = self._params, self._runtime
        n, t = params.num_parties, params.recovery_threshold
        polys = runtime.context.ShareKeys(self._secret_key, n, t, self._party + 1, "shamir")
        if sorted(polys) != [j + 1 for j in range(n) if j != self._party]:
            raise RuntimeError("OpenFHE ShareKeys returned shares for unexpected holders")
        template = self._template()
        out = []
        for recipient in range(n):
            if recipient == self._party:
                continue
            plain = _rt.serialize_poly(runtime, template, polys[recipient + 1])
            out.append(self._seal(recipient, self._party, plain, roster))
        self._backed_up = True
        return tuple(out)

    def receive_backup(self, message: KeyBackupMessage | bytes) -> None:
        """Store a Shamir share of another holder's key share (the backup round).

        Raises:
            UnexpectedMessageError: not for us, another session, not from its subject, or
                a second backup from the same holder.
            DecryptionError: the AEAD check fails (tampered, wrong key or ids).
        """
        self._require_recovery()
        roster = self._require_roster()
        message = self._decode_backup(message)
        if message.sender != message.subject:
            raise UnexpectedMessageError("a backup share comes from its subject", party=self._party)
        if message.subject in self._backups:
            raise UnexpectedMessageError(f"a second backup from holder {message.subject}", party=self._party)
        plain = self._open(message, roster)
        self._backups[message.subject] = Secret(plain)

    def release_backup(self, dropped: int, stand_in: int) -> KeyBackupMessage:
        """Give our share of a dropped holder's key share to the holder standing in for it.

        An honest holder answers for at most ``n - t`` distinct dropped holders over the
        whole session: then no coalition below ``t`` holders plus the server can collect
        all ``n`` key shares by declaring honest holders dropped.

        Raises:
            ProtocolViolationError: ``dropped`` is ourselves or ``stand_in``, or answering
                would exceed ``n - t`` dropped holders.
            LocalProtocolError: we hold no backup of ``dropped``.
        """
        self._require_recovery()
        roster = self._require_roster()
        n, t = self._params.num_parties, self._params.recovery_threshold
        _check_int("dropped", dropped)
        _check_int("stand_in", stand_in)
        if not (0 <= dropped < n and 0 <= stand_in < n):
            raise ValueError(f"holders are in [0, {n})")
        if dropped in (self._party, stand_in) or stand_in == self._party:
            raise ProtocolViolationError("a share is released only for another, dropped holder to a third one", party=self._party)
        if dropped not in self._released and len(self._released) >= n - t:
            raise ProtocolViolationError(
                f"already released shares for {len(self._released)} dropped holders (n - t = {n - t})", party=self._party
            )
        share = self._backups.get(dropped)
        if share is None:
            raise LocalProtocolError(f"no backup of holder {dropped} was received", party=self._party)
        message = self._seal(stand_in, dropped, share.reveal(), roster)
        self._released.add(dropped)
        return message

    def recover_share(
        self, dropped: int, aggregate: bytes, released: Sequence[KeyBackupMessage | bytes]
    ) -> DecryptionShare:
        """Stand in for a dropped holder: rebuild its key share, make its decryption share.

        Uses our own backup of ``dropped`` plus ``t - 1`` released shares from other holders
        (OpenFHE ``RecoverSharedKey``); the rebuilt key share is used once and dropped.

        Raises:
            InvalidShare: fewer than ``t`` distinct shares, or shares of another holder.
            DecryptionError: a released share fails its AEAD check.
            (and everything :meth:`partial_decrypt` raises.)
        """
        self._require_recovery()
        roster = self._require_roster()
        params, runtime = self._params, self._runtime
        n, t = params.num_parties, params.recovery_threshold
        _check_int("dropped", dropped)
        if not 0 <= dropped < n or dropped == self._party:
            raise ValueError(f"dropped must be another holder in [0, {n})")
        own = self._backups.get(dropped)
        if own is None:
            raise LocalProtocolError(f"no backup of holder {dropped} was received", party=self._party)
        shares: dict[int, bytes] = {self._party + 1: own.reveal()}
        for raw in released:
            message = self._decode_backup(raw)
            if message.subject != dropped:
                raise InvalidShare(f"a released share is of holder {message.subject}, not {dropped}")
            if message.sender == dropped or message.sender + 1 in shares:
                raise InvalidShare(f"a duplicate or invalid released share from holder {message.sender}")
            shares[message.sender + 1] = self._open(message, roster)
        if len(shares) < t:
            raise InvalidShare(f"{len(shares)} shares of holder {dropped}'s key; recovery needs t = {t}")
        header, pieces, digest = self._check_aggregate(aggregate, tag=dropped)
        cts = _load_ciphertexts(runtime, pieces, params, elements=2, what="aggregate")
        polys = {index: _rt.deserialize_poly(runtime, data) for index, data in shares.items()}
        key = runtime.context.KeyGen().secretKey  # a container; RecoverSharedKey overwrites it
        runtime.context.RecoverSharedKey(key, polys, n, t, "shamir")
        decrypt = runtime.context.MultipartyDecryptLead if dropped == 0 else runtime.context.MultipartyDecryptMain
        encoded = tuple(_rt.serialize(runtime, p) for p in decrypt(cts, key))
        del key, polys
        # ---- apply
        self._answered.add(digest)
        return DecryptionShare(self._session, dropped, hashlib.sha256(_as_bytes(aggregate)).digest(), encoded)

    def _require_recovery(self) -> None:
        if not self._params.recovery_threshold:
            raise LocalProtocolError("these parameters have no recovery_threshold (n-of-n)", party=self._party)

    def _require_roster(self) -> tuple[bytes, ...]:
        if self._roster is None:
            raise LocalProtocolError("the roster of transport keys is not known yet", party=self._party)
        return self._roster

    def _template(self) -> Any:
        context = self._runtime.context
        return context.Encrypt(self._joint_key, context.MakeCKKSPackedPlaintext([0.0]))

    def _pair_key(self, peer: int, roster: tuple[bytes, ...]) -> Secret:
        assert self._transport is not None
        shared = self._transport.exchange(roster[peer])
        return derive_key(
            shared,
            protocol="threshold-ckks",
            purpose="key-backup",
            round_id=0,
            party_a=self._party,
            party_b=peer,
            salt=self._session,
        )

    def _seal(self, recipient: int, subject: int, plain: bytes, roster: tuple[bytes, ...]) -> KeyBackupMessage:
        draft = KeyBackupMessage(self._session, self._party, recipient, subject, b"")
        body = aead_encrypt(self._pair_key(recipient, roster), plain, draft.associated_data())
        return KeyBackupMessage(self._session, self._party, recipient, subject, body)

    def _open(self, message: KeyBackupMessage, roster: tuple[bytes, ...]) -> bytes:
        return aead_decrypt(self._pair_key(message.sender, roster), message.ciphertext, message.associated_data())

    def _decode_backup(self, message: KeyBackupMessage | bytes) -> KeyBackupMessage:
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = KeyBackupMessage.from_bytes(bytes(message), self._params)
        if not isinstance(message, KeyBackupMessage):
            raise TypeError(f"expected a KeyBackupMessage or bytes, got {type(message).__name__}")
        if not hmac.compare_digest(message.session, self._session):
            raise UnexpectedMessageError("key backup from another session", party=self._party)
        if message.recipient != self._party:
            raise UnexpectedMessageError(f"key backup for holder {message.recipient}", party=self._party)
        return message

    # ------------------------------------------------------------------ upload
    def encrypt(self, vector: np.ndarray, weight: float = 1.0) -> bytes:
        """Encrypt ``weight * clip(vector)`` under the joint key (an upload).

        The client applies its own FedAvg weight (e.g. its number of examples) in plaintext,
        so that the server only adds ciphertexts (see the module docstring); the upload's
        header carries ``weight`` and the server sums it into the aggregate's total weight.

        Args:
            vector: a flat float vector; values are clipped to ``[-clip, clip]``.
            weight: this client's weight, a finite number in ``(0, max_weight]``.

        Raises:
            LocalProtocolError: the joint key is not known yet.
            EncodingError: not a 1-D float vector, empty, too long, or containing NaN.
            TypeError / ValueError: ``weight`` is not a number in ``(0, max_weight]``.
        """
        self._require_ready()
        values = _check_vector(vector, self._params)
        weight = _check_weight(weight, self._params)
        runtime, params = self._runtime, self._params
        return _encrypt_with_public_key(runtime, params, self._joint_key, self.fingerprint, values, weight)

    # ------------------------------------------------------------------ decryption
    def partial_decrypt(self, aggregate: bytes) -> DecryptionShare:
        """This holder's (flooded) partial decryption of an aggregate, answered once.

        Raises:
            LocalProtocolError: the joint key is not known yet.
            ContextMismatchError: the aggregate is under another key.
            MalformedMessageError: it does not decode, or is an upload.
            ProtocolViolationError: fewer contributions than ``min_contributions``.
            UnexpectedMessageError: this aggregate was already answered.
        """
        params, runtime = self._params, self._runtime
        header, pieces, tag = self._check_aggregate(aggregate, tag=self._party)
        digest = hashlib.sha256(_as_bytes(aggregate)).digest()
        cts = _load_ciphertexts(runtime, pieces, params, elements=2, what="aggregate")
        context = runtime.context
        decrypt = context.MultipartyDecryptLead if self._party == 0 else context.MultipartyDecryptMain
        partials = decrypt(cts, self._secret_key)
        encoded = tuple(_rt.serialize(runtime, p) for p in partials)
        # ---- apply
        self._answered.add(tag)
        return DecryptionShare(self._session, self._party, digest, encoded)

    def _check_aggregate(self, aggregate: bytes, *, tag: int) -> tuple[_BlobHeader, list[bytes], bytes]:
        """Validate an aggregate for a partial decryption made as holder ``tag``."""
        self._require_ready()
        header, pieces = _decode_blob(aggregate, self._params, self.fingerprint, (BlobKind.AGGREGATE,))
        if header.contributions < self._min_contributions:
            raise ProtocolViolationError(
                f"aggregate of {header.contributions} uploads; this holder decrypts only aggregates of at least "
                f"{self._min_contributions}",
                party=self._party,
            )
        answered = hashlib.sha256(_as_bytes(aggregate)).digest() + bytes([0]) + struct.pack(">H", tag)
        if answered in self._answered:
            raise UnexpectedMessageError("this aggregate was already partially decrypted", party=self._party)
        return header, pieces, answered

    def _require_ready(self) -> None:
        if self._stage is not Stage.READY:
            raise LocalProtocolError("the joint key is not known yet", party=self._party, stage=self._stage)


def _check_vector(vector: object, params: ThresholdParams) -> np.ndarray:
    check_float_vector(vector)
    if not 1 <= vector.shape[0] <= _MAX_VALUES:
        raise EncodingError(f"vector length {vector.shape[0]} outside [1, {_MAX_VALUES}]")
    if np.isnan(vector).any():
        raise EncodingError("vector contains NaN")
    return np.clip(vector.astype(np.float64), -params.clip, params.clip)


def _check_weight(weight: object, params: ThresholdParams) -> float:
    """A client weight: a real number in ``(0, max_weight]``, as a float."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)):
        raise TypeError(f"weight must be a number, got {type(weight).__name__}")
    value = float(weight)
    if not (math.isfinite(value) and 0 < value <= params.max_weight):
        raise ValueError(f"weight must be in (0, {params.max_weight}] (max_weight), got {weight!r}")
    return value


def _encrypt_with_public_key(
    runtime: Any, params: ThresholdParams, public_key: Any, fingerprint: bytes, values: np.ndarray, weight: float
) -> bytes:
    """Encrypt ``2^h * weight * values`` (checked, clipped; ``h = params.headroom_bits()``)
    under an OpenFHE public key: an upload."""
    context, per_ct = runtime.context, params.values_per_ciphertext
    factor = math.ldexp(weight, params.headroom_bits())  # 2^h * weight: see ThresholdParams
    if factor != 1.0:
        values = values * factor
    complex_packing = params.packing == "complex"
    pieces = []
    for start in range(0, values.shape[0], per_ct):
        block = values[start : start + per_ct]
        if complex_packing:
            if block.shape[0] % 2:
                block = np.append(block, 0.0)
            block = np.ascontiguousarray(block).view(np.complex128)  # x[2j] + i x[2j+1]
        plain = context.MakeCKKSPackedPlaintext(block)
        pieces.append(_rt.serialize(runtime, context.Encrypt(public_key, plain)))
    header = _BlobHeader(BlobKind.UPLOAD, fingerprint, int(values.shape[0]), 1, weight, len(pieces))
    return _encode_blob(header, pieces)


# ====================================================================== server
class ThresholdServer:
    """The server: relays the key chain, sums uploads, collects shares, fuses.

    Math: see the module docstring. The server never holds a key share; it learns the
    aggregate when it fuses the ``n`` shares (as in plain FedAvg), nothing about an upload.

    Dropouts: the threshold key is an ``n``-of-``n`` additive sharing. Clients that drop
    before uploading only leave the sum. A key holder that drops before key generation
    completes ends the session (start a new one). A key holder that drops before it sends
    its decryption share:

    * without ``recovery_threshold`` (the default): nobody can decrypt the aggregate; the
      server aborts the decryption with :class:`~fedcrypt.errors.RoundAbortedError`
      (:meth:`ThresholdDecryption.mark_dropped`; nothing is decrypted);
    * with ``recovery_threshold = t`` (OpenFHE's "threshold FHE with aborts", Asharov et al.
      2012 section 5 as cited by OpenFHE, ``ShareKeys`` / ``RecoverSharedKey`` with Shamir
      sharing, ``t > n/2``): after key generation every holder Shamir-shares its key share
      among the others (:meth:`KeyHolder.backup_key`, encrypted pairwise under X25519 +
      HKDF + AES-256-GCM; the binding cannot serialise ``DCRTPoly``, so a share travels
      as a one-element OpenFHE ciphertext container). For up to ``n - t`` dropped holders
      a surviving holder collects ``t - 1`` released shares, rebuilds the dropped key share
      and sends its decryption share (:meth:`KeyHolder.recover_share`). Any ``t`` holders
      together can then rebuild every key share: the scheme is t-of-n, not n-of-n.

    Args:
        params: the agreed parameters.
        session: the session id (32 bytes); a fresh random one if ``None``.
    """

    def __init__(self, params: ThresholdParams, session: bytes | None = None) -> None:
        if not isinstance(params, ThresholdParams):
            raise TypeError(f"params must be ThresholdParams, got {type(params).__name__}")
        if session is None:
            session = secrets.token_bytes(_SESSION_BYTES)
        if not isinstance(session, bytes) or len(session) != _SESSION_BYTES:
            raise ValueError(f"session must be {_SESSION_BYTES} bytes")
        self._params = params
        self._session = session
        self._runtime = _runtime(params)
        self._chain: list[KeyShareMessage] = []
        self._joint: KeyShareMessage | None = None
        self._fingerprint: bytes | None = None

    @property
    def params(self) -> ThresholdParams:
        """The parameters."""
        return self._params

    @property
    def session(self) -> bytes:
        """The session id."""
        return self._session

    @property
    def stage(self) -> Stage:
        """KEYGEN until the last holder's key arrived, then READY."""
        return Stage.READY if self._joint is not None else Stage.KEYGEN

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of parameters, session and joint key."""
        if self._fingerprint is None:
            raise LocalProtocolError("key generation is not finished", stage=self.stage)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"ThresholdServer(parties={self._params.num_parties}, stage={self.stage.name}, links={len(self._chain)})"

    # ------------------------------------------------------------------ key generation
    @property
    def next_key_holder(self) -> int | None:
        """The holder whose key-share message is expected next (``None`` when done)."""
        return None if self._joint is not None else len(self._chain)

    def key_input_for(self, party: int) -> KeyShareMessage | None:
        """What holder ``party`` needs to run its link: holder ``party - 1``'s message."""
        _check_int("party", party)
        if party != self.next_key_holder:
            raise LocalProtocolError(f"holder {party} is not next in the key chain", stage=self.stage)
        return self._chain[-1] if self._chain else None

    def receive_key_share(self, data: KeyShareMessage | bytes) -> KeyShareMessage | None:
        """Accept the next link; returns the joint key message once the chain is complete.

        Raises:
            UnexpectedMessageError: wrong session, or not the next holder in the chain.
            MalformedMessageError: does not decode, or OpenFHE cannot parse the key.
        """
        if self._joint is not None:
            raise UnexpectedMessageError("key generation is already finished", stage=self.stage)
        message = data if isinstance(data, KeyShareMessage) else KeyShareMessage.from_bytes(_as_bytes(data), self._params)
        if not hmac.compare_digest(message.session, self._session):
            raise UnexpectedMessageError("key share from another session", party=message.party, stage=self.stage)
        if message.party != len(self._chain):
            raise UnexpectedMessageError(
                f"key share of holder {message.party}, expected holder {len(self._chain)}",
                party=message.party,
                stage=self.stage,
            )
        _rt.deserialize(self._runtime, "public_key", message.public_key, "key share")
        # ---- apply
        self._chain.append(message)
        if len(self._chain) == self._params.num_parties:
            self._joint = message
            self._fingerprint = _fingerprint(self._params, self._session, message.public_key)
        return self._joint

    def roster_message(self) -> RosterMessage:
        """Every holder's transport key (parameters with a ``recovery_threshold`` only)."""
        if self._joint is None:
            raise LocalProtocolError("key generation is not finished", stage=self.stage)
        if not self._params.recovery_threshold:
            raise LocalProtocolError("these parameters have no recovery_threshold (n-of-n)")
        return RosterMessage(self._session, tuple(m.transport_key for m in self._chain))

    def joint_key_message(self) -> KeyShareMessage:
        """The joint public key, to broadcast to every key holder and client."""
        if self._joint is None:
            raise LocalProtocolError("key generation is not finished", stage=self.stage)
        return self._joint

    # ------------------------------------------------------------------ aggregation
    def start(self, *, length: int | None = None) -> "ThresholdSum":
        """A new streaming weighted sum."""
        return ThresholdSum(self, length)

    def weighted_sum(self, uploads: Iterable[bytes | tuple[bytes, float]]) -> bytes:
        """The aggregate blob of ``uploads`` (each already weighted by its client).

        Args:
            uploads: upload blobs, or ``(blob, weight)`` pairs whose ``weight`` must equal
                the weight the client encrypted with (see :meth:`ThresholdSum.add`).
        """
        total = self.start()
        for item in uploads:
            if isinstance(item, tuple):
                total.add(*item)
            else:
                total.add(item)
        return total.finish()

    def start_decryption(self, aggregate: bytes) -> "ThresholdDecryption":
        """Collect the key holders' shares of ``aggregate`` and fuse them."""
        return ThresholdDecryption(self, aggregate)


class ThresholdSum:
    """A streaming encrypted weighted sum (server memory: one accumulator).

    Every upload is ``Enc(w_i clip(x_i))``, weighted by its client; the sum is
    ``sum_i ct_i`` (``EvalAdd``) and the total weight ``sum_i w_i`` of the claimed weights.
    """

    def __init__(self, server: ThresholdServer, length: int | None) -> None:
        self._server = server
        self._params = server.params
        self._fingerprint = server.fingerprint
        self._length = length
        self._acc: list[Any] | None = None
        self._count = 0
        self._weights: list[float] = []
        self._seen: set[bytes] = set()
        self._done = False

    @property
    def count(self) -> int:
        """Uploads added so far."""
        return self._count

    @property
    def total_weight(self) -> float:
        """The summed weights of the uploads added so far."""
        return math.fsum(self._weights)

    def __repr__(self) -> str:
        return f"ThresholdSum(count={self._count}, total_weight={self.total_weight}, length={self._length})"

    def add(self, blob: bytes, weight: float | None = None) -> None:
        """Add an upload (already weighted by its client); validates before touching the sum.

        Args:
            blob: the upload.
            weight: the weight the server expects this client to have used (its
                ``num_examples``, say); ``None`` accepts the weight in the upload's header.

        Raises:
            TypeError / ValueError: ``weight`` is not a number in ``(0, max_weight]``.
            ProtocolViolationError: the upload was encrypted with another weight.
            OverflowRiskError: already ``num_clients`` uploads.
            ContextMismatchError: under another key.
            MalformedMessageError: does not decode.
            UnexpectedMessageError: the same upload twice (replay).
            LocalProtocolError: the sum is finished.
        """
        if self._done:
            raise LocalProtocolError("this sum is finished; start a new one", stage="finished")
        params = self._params
        expected = None if weight is None else _check_weight(weight, params)
        if self._count >= params.num_clients:
            raise OverflowRiskError(f"the sum already has num_clients={params.num_clients} uploads")
        header, pieces = _decode_blob(blob, params, self._fingerprint, (BlobKind.UPLOAD,))
        if self._length is not None and header.length != self._length:
            raise EncodingError(f"upload has {header.length} values, the sum has {self._length}")
        if expected is not None and header.total_weight != expected:
            raise ProtocolViolationError(
                f"the upload was encrypted with weight {header.total_weight!r}, the server expects {expected!r}"
            )
        tag = hashlib.sha256(_as_bytes(blob)).digest()
        if tag in self._seen:
            raise UnexpectedMessageError("this upload was already added (replay)")
        runtime = self._server._runtime
        cts = _load_ciphertexts(runtime, pieces, params, elements=2, what="upload")
        context = runtime.context
        try:
            if self._acc is not None:
                summed = [context.EvalAdd(acc, ct) for acc, ct in zip(self._acc, cts)]
            else:
                summed = cts
        except Exception:
            raise ContextMismatchError("OpenFHE refuses to add this upload (another crypto context)") from None
        # ---- apply
        self._acc = summed
        self._length = header.length
        self._count += 1
        self._weights.append(header.total_weight)
        self._seen.add(tag)

    def finish(self) -> bytes:
        """The aggregate blob; the sum cannot be added to afterwards."""
        if self._done:
            raise LocalProtocolError("this sum is already finished", stage="finished")
        if self._acc is None or self._length is None:
            raise LocalProtocolError("no upload was added to this sum", stage="empty")
        runtime = self._server._runtime
        pieces = [_rt.serialize(runtime, ct) for ct in self._acc]
        header = _BlobHeader(
            BlobKind.AGGREGATE, self._fingerprint, self._length, self._count, self.total_weight, len(pieces)
        )
        self._done = True
        self._acc = None
        return _encode_blob(header, pieces)


class ThresholdDecryption:
    """Collects one decryption share per key holder for one aggregate, then fuses.

    All ``num_parties`` shares are required. :meth:`mark_dropped` with a holder whose share
    has not arrived aborts (:meth:`fuse` then raises
    :class:`~fedcrypt.errors.RoundAbortedError`), unless the parameters have a
    ``recovery_threshold`` ``t`` and at most ``n - t`` holders are gone: then a surviving
    holder stands in for each (:meth:`KeyHolder.recover_share`, fed with ``t - 1``
    :meth:`KeyHolder.release_backup` messages) and its share counts for the dropped one.
    """

    def __init__(self, server: ThresholdServer, aggregate: bytes) -> None:
        params = server.params
        header, pieces = _decode_blob(aggregate, params, server.fingerprint, (BlobKind.AGGREGATE,))
        self._server = server
        self._params = params
        self._header = header
        self._digest = hashlib.sha256(_as_bytes(aggregate)).digest()
        self._shares: dict[int, list[Any]] = {}
        self._dropped: set[int] = set()
        self._standing_in: set[int] = set()

    @property
    def params(self) -> ThresholdParams:
        """The parameters."""
        return self._params

    @property
    def ciphertext_count(self) -> int:
        """Ciphertexts in the aggregate (each share holds one partial per ciphertext)."""
        return self._header.count

    @property
    def total_weight(self) -> float:
        """The aggregate's total weight (the sum of the weights its uploads claim)."""
        return self._header.total_weight

    @property
    def contributions(self) -> int:
        """How many uploads the aggregate sums."""
        return self._header.contributions

    @property
    def missing(self) -> tuple[int, ...]:
        """Holders whose share has not arrived."""
        return tuple(p for p in range(self._params.num_parties) if p not in self._shares)

    @property
    def standing_in(self) -> tuple[int, ...]:
        """Dropped holders whose share a stand-in must deliver (t-of-n)."""
        return tuple(sorted(self._standing_in))

    @property
    def aborted(self) -> bool:
        """Whether a holder dropped before sending its share."""
        return bool(self._dropped)

    def __repr__(self) -> str:
        return f"ThresholdDecryption(received={sorted(self._shares)}, dropped={sorted(self._dropped)})"

    def receive_share(self, data: DecryptionShare | bytes) -> None:
        """Accept one holder's share.

        Raises:
            RoundAbortedError: the decryption was aborted.
            UnexpectedMessageError: wrong session or aggregate, or a second share of a holder.
            MalformedMessageError: does not decode or OpenFHE cannot parse it.
        """
        if self._dropped:
            raise RoundAbortedError("the decryption was aborted after a dropout", stage="decrypt")
        count = self._header.count
        share = data if isinstance(data, DecryptionShare) else DecryptionShare.from_bytes(data, self._params, ciphertext_count=count)
        if len(share.partials) != count:
            raise MalformedMessageError(f"decryption share: {len(share.partials)} partials, expected {count}")
        if not 0 <= share.party < self._params.num_parties:
            raise MalformedMessageError(f"decryption share: party {share.party} out of range")
        if not hmac.compare_digest(share.session, self._server.session):
            raise UnexpectedMessageError("decryption share from another session", party=share.party)
        if not hmac.compare_digest(share.aggregate_digest, self._digest):
            raise UnexpectedMessageError("decryption share of another aggregate", party=share.party)
        if share.party in self._shares:
            raise UnexpectedMessageError("a second decryption share from this holder", party=share.party)
        runtime = self._server._runtime
        partials = _load_ciphertexts(runtime, share.partials, self._params, elements=1, what="decryption share")
        # ---- apply
        self._shares[share.party] = partials

    def mark_dropped(self, parties: Iterable[int]) -> None:
        """Declare holders gone; if one of them has not sent its share, abort.

        Raises:
            RoundAbortedError: a dropped holder's share is missing (n-of-n: nobody can
                decrypt this aggregate any more).
        """
        gone = {_check_int("party", p) for p in parties}
        bad = [p for p in gone if not 0 <= p < self._params.num_parties]
        if bad:
            raise ValueError(f"unknown key holders {sorted(bad)}")
        lost = sorted(p for p in gone if p not in self._shares)
        n, t = self._params.num_parties, self._params.recovery_threshold
        if lost and t and len(self._standing_in | set(lost)) <= n - t:
            # t-of-n: surviving holders stand in (KeyHolder.recover_share); the stand-in's
            # share arrives with the dropped holder's index.
            self._standing_in.update(lost)
            return
        if lost:
            self._dropped.update(lost)
            raise RoundAbortedError(
                f"key holders {lost} dropped before their decryption share; with {n} key holders and "
                f"recovery_threshold={t} at most {n - t if t else 0} may be stood in for, the aggregate cannot be "
                f"decrypted",
                stage="decrypt",
            )

    def fuse(self) -> np.ndarray:
        """Fuse all shares into the float64 weighted sum of the uploads.

        Raises:
            RoundAbortedError: a share is missing or a holder dropped.
            DecryptionError: OpenFHE cannot decode the fused result.
        """
        if self._dropped or self.missing:
            raise RoundAbortedError(
                f"decryption needs all {self._params.num_parties} shares; missing {list(self.missing)}",
                stage="decrypt",
            )
        ordered = [self._shares[p] for p in range(self._params.num_parties)]
        return fuse_partials(self._server._runtime, self._params, ordered, self._header.length)


def fuse_partials(runtime: Any, params: ThresholdParams, shares: Sequence[Sequence[Any]], length: int) -> np.ndarray:
    """OpenFHE fusion of the given partial decryptions (one list per holder), decoded and
    divided by ``2^params.headroom_bits()`` (the uploads' precision factor).

    This does not check that every holder contributed (``ThresholdDecryption`` does):
    with fewer shares the fused value is ``c0 + c1 * (part of s)``, a uniformly random
    polynomial to anyone without the missing shares, and decoding fails or yields noise.

    Raises:
        DecryptionError: OpenFHE refuses to decode (the approximation error is too high).
    """
    context, per_ct = runtime.context, params.values_per_ciphertext
    complex_packing = params.packing == "complex"
    out = np.empty(length, dtype=np.float64)
    for index in range(len(shares[0])):
        count = min(per_ct, length - index * per_ct)
        try:
            plain = context.MultipartyDecryptFusion([share[index] for share in shares])
            if complex_packing:
                plain.SetLength((count + 1) // 2)
                values = np.asarray(plain.GetCKKSPackedValue(), dtype=np.complex128).view(np.float64)[:count]
            else:
                plain.SetLength(count)
                values = plain.GetRealPackedValue()
        except Exception:
            raise DecryptionError("threshold decryption failed: the fused shares do not decode") from None
        out[index * per_ct : index * per_ct + count] = values
    return np.ldexp(out, -params.headroom_bits())  # exact: undo the uploads' 2^h


# ====================================================================== in-process harness
@dataclass(frozen=True)
class SimulationResult:
    """The outcome of :func:`simulate`.

    Attributes:
        weighted_sum: the decrypted ``sum_i w_i clip(x_i)`` over the uploaders (float64).
        uploaders: the clients whose uploads are in the sum (increasing).
        total_weight: their summed weight (from the aggregate's header).
        params: the parameters the round ran with.
        upload_bytes: bytes of one upload.
        share_bytes: bytes of one decryption share.
        joint_key_bytes: bytes of the joint-key message.
        client_seconds: mean seconds of one client's encryption.
        holder_seconds: mean seconds of one key holder's work (its key link and its share).
        server_seconds: seconds of the server's work (key relay, sum, fusion).
    """

    weighted_sum: np.ndarray = field(repr=False)
    uploaders: tuple[int, ...]
    total_weight: float
    params: ThresholdParams
    upload_bytes: int
    share_bytes: int
    joint_key_bytes: int
    client_seconds: float
    holder_seconds: float
    server_seconds: float


def simulate(
    params: ThresholdParams,
    vectors: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    *,
    dropouts: Iterable[int] = (),
    holder_dropouts: Iterable[int] = (),
) -> SimulationResult:
    """Run one threshold-CKKS round in process: all messages go through bytes.

    ``params.num_parties`` key holders (a committee, separate from the clients) run the key
    chain; every client not in ``dropouts`` encrypts its weighted vector under the joint
    key; the server sums them; every holder not in
    ``holder_dropouts`` sends its share; with a ``recovery_threshold`` (and the key backup
    run after key generation) the first surviving holder stands in for each dropped one,
    fed by the next ``t - 1`` survivors; the server fuses.

    Args:
        params: the parameters (``num_clients`` >= the number of vectors).
        vectors: one 1-D float vector per client, all of one length.
        weights: one weight per client, in ``(0, max_weight]`` (default 1).
        dropouts: clients that never upload (their vectors are ignored).
        holder_dropouts: key holders that drop before sending their decryption share.

    Raises:
        RoundAbortedError: a key holder dropped (n-of-n) or more than ``n - t`` did, or
            every client dropped.
        ValueError / TypeError: bad arguments.
    """
    if not isinstance(params, ThresholdParams):
        raise TypeError(f"params must be ThresholdParams, got {type(params).__name__}")
    count = len(vectors)
    if not 1 <= count <= params.num_clients:
        raise ValueError(f"need 1..{params.num_clients} vectors (num_clients), got {count}")
    weights = [1.0] * count if weights is None else list(weights)
    if len(weights) != count:
        raise ValueError(f"got {len(weights)} weights for {count} vectors")
    gone = set(dropouts)
    lost = set(holder_dropouts)
    if any(not (isinstance(c, int) and 0 <= c < count) for c in gone):
        raise ValueError("dropouts must be client indices")
    if any(not (isinstance(p, int) and 0 <= p < params.num_parties) for p in lost):
        raise ValueError("holder_dropouts must be key-holder indices")
    uploaders = tuple(i for i in range(count) if i not in gone)
    if not uploaders:
        raise RoundAbortedError("every client dropped out; nothing to aggregate", stage="upload")

    server_s = holder_s = client_s = 0.0

    def timed(fn: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    server, seconds = timed(lambda: ThresholdServer(params))
    server_s += seconds
    holders = [KeyHolder(params, p, server.session) for p in range(params.num_parties)]
    joint: KeyShareMessage | None = None
    for holder in holders:
        previous = server.key_input_for(holder.party)
        raw_previous = None if previous is None else previous.to_bytes()
        link, seconds = timed(lambda: holder.generate_key_share(raw_previous).to_bytes())
        holder_s += seconds
        joint, seconds = timed(lambda: server.receive_key_share(link))
        server_s += seconds
    assert joint is not None
    joint_bytes = joint.to_bytes()
    for holder in holders:
        holder.receive_joint_key(joint_bytes)
    if params.recovery_threshold:
        roster = server.roster_message().to_bytes()
        backups = []
        for holder in holders:
            holder.receive_roster(roster)
            messages, seconds = timed(lambda: [m.to_bytes() for m in holder.backup_key()])
            holder_s += seconds
            backups.extend(messages)
        for raw in backups:
            recipient = KeyBackupMessage.from_bytes(raw, params).recipient
            _, seconds = timed(lambda: holders[recipient].receive_backup(raw))
            holder_s += seconds
    # Clients are not key holders: they only need the public joint key and the fingerprint,
    # which a holder object in READY stage provides; any holder's encrypt is that operation.
    encryptor = holders[0]
    uploads = []
    for i in uploaders:
        blob, seconds = timed(lambda: encryptor.encrypt(vectors[i], weights[i]))
        client_s += seconds
        uploads.append(blob)
    aggregate, seconds = timed(lambda: server.weighted_sum(uploads))
    server_s += seconds
    decryption = server.start_decryption(aggregate)
    share_bytes = 0
    for holder in holders:
        if holder.party in lost:
            continue
        raw, seconds = timed(lambda: holder.partial_decrypt(aggregate).to_bytes())
        holder_s += seconds
        share_bytes = len(raw)
        _, seconds = timed(lambda: decryption.receive_share(raw))
        server_s += seconds
    if lost:
        decryption.mark_dropped(sorted(lost))  # raises RoundAbortedError unless t-of-n
        alive = [h for h in holders if h.party not in lost]
        stand_in, helpers = alive[0], alive[1 : params.recovery_threshold]
        for dropped in decryption.standing_in:
            released = [h.release_backup(dropped, stand_in.party).to_bytes() for h in helpers]
            raw, seconds = timed(lambda: stand_in.recover_share(dropped, aggregate, released).to_bytes())
            holder_s += seconds
            _, seconds = timed(lambda: decryption.receive_share(raw))
            server_s += seconds
    result, seconds = timed(decryption.fuse)
    server_s += seconds
    return SimulationResult(
        weighted_sum=result,
        uploaders=uploaders,
        total_weight=decryption.total_weight,
        params=params,
        upload_bytes=len(uploads[0]),
        share_bytes=share_bytes,
        joint_key_bytes=len(joint_bytes),
        client_seconds=client_s / len(uploaders),
        holder_seconds=holder_s / params.num_parties,
        server_seconds=server_s,
    )
