"""Threshold-CKKS parameters: :class:`ThresholdParams` (validated once, canonical bytes) and
the named presets.

Invariants: parameters are public and agreed by every party; :meth:`ThresholdParams.to_bytes`
is canonical (it is hashed into every fingerprint) and :meth:`ThresholdParams.from_bytes`
accepts only canonical bytes of the current wire version.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Iterable

from fedcrypt.errors import MalformedMessageError

from . import _runtime as _rt
from ._common import OLD_VERSION_MESSAGE, VERSION, as_bytes, check_int

__all__ = ["ThresholdParams", "PRESETS", "PACKINGS"]

#: name -> (ring degree, first prime bits, scale bits, upload level)
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "compact": (16384, 60, 50, 0),
    "wide": (16384, 60, 50, 1),
}

_PARAMS_MAGIC = b"FCTP"
#: packing name <-> its byte in :meth:`ThresholdParams.to_bytes`
PACKINGS: dict[str, int] = {"real": 1, "complex": 2}
_MAX_PARTIES = 1024
_CAPACITY_MARGIN_BITS = 2
#: OpenFHE 1.6.1's CKKS flooding, in slot units, is sqrt(12) 2^(s/2) 2^estimate / 2^52 per
#: share (fitted; see ThresholdParams.slot_error_stddev).
_FLOODING_SLOT_EXPONENT = 52
#: The most bits of modulus headroom spent on precision (beyond it float64 decoding dominates).
_MAX_HEADROOM_BITS = 20
#: Float64 decoding error of a fused value, relative to the largest aggregate magnitude
#: ``num_clients * max_weight * clip`` (2^13 above the 2^-53 rounding: FFT depth and CRT).
_DECODE_RELATIVE_ERROR = 2.0**-40


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
            check_int(name, getattr(self, name))
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
                f"scale_bits must be in [20, {min(59, self.first_mod_bits - 1)}] (below q0's {self.first_mod_bits} bits), got {self.scale_bits}"
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
        allowed = {"num_clients", "clip", "max_weight", "flooding", "statistical_security", "recovery_threshold", "packing"}
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
            VERSION,
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
        data = as_bytes(data)
        if len(data) >= 5 and data[:4] == _PARAMS_MAGIC and data[4] == 2:
            raise MalformedMessageError(OLD_VERSION_MESSAGE.format(what="ThresholdParams"))
        if len(data) != cls._STRUCT.size:
            raise MalformedMessageError(f"ThresholdParams: {len(data)} bytes, expected {cls._STRUCT.size}")
        (magic, version, ring, first, scale, level, parties, clients, clip, weight, recovery, flood, sec, est, pack) = cls._STRUCT.unpack(data)
        if magic != _PARAMS_MAGIC or version != VERSION:
            raise MalformedMessageError("ThresholdParams: bad magic, version or flags")
        names = {code: name for name, code in PACKINGS.items()}
        if pack not in names:
            raise MalformedMessageError(f"ThresholdParams: unknown packing {pack}")
        try:
            params = cls(ring, first, scale, level, parties, clients, clip, weight, bool(flood), sec, est, recovery, names[pack])
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"ThresholdParams: {exc}") from None
        if params.to_bytes() != data:
            raise MalformedMessageError("ThresholdParams: not in canonical form")
        return params


def _replace(params: ThresholdParams, **changes: Any) -> ThresholdParams:
    fields = {name: getattr(params, name) for name in ThresholdParams.__dataclass_fields__}
    fields.update(changes)
    return ThresholdParams(**fields)
