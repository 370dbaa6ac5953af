"""CKKS parameter descriptors: 128-bit security, capacity and a documented error model.

Nothing in this module imports TenSEAL; a :class:`CkksParams` can be built, validated and
serialised on a machine without the ``he`` extra.

Invariants:

* every :class:`CkksParams` that exists satisfies the HomomorphicEncryption.org standard's
  bound on the total coefficient-modulus bits for its ring degree (128-bit classical
  security, ternary secret): N=4096 -> 109, 8192 -> 218, 16384 -> 438, 32768 -> 881;
* the scale leaves room in the last prime ``q0`` for the weighted sum of ``num_clients``
  vectors clipped to ``clip`` with weights up to ``max_weight`` (capacity guard, below);
* the documented error bound of a decrypted weighted mean of ``num_clients`` unit-weight
  inputs is at most ``precision`` (precision guard, below, in closed form);
* ``packing`` is ``"complex"`` (two reals per slot, the default) or ``"real"`` (one);
* ``1 <= num_clients <= MAX_CLIENTS``, checked first; validating parameters takes constant
  time and memory whatever the bytes claim;
* :meth:`CkksParams.to_bytes` is canonical: equal parameters give equal bytes, and the
  context fingerprint of :mod:`fedcrypt.he` hashes these bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Iterable

from fedcrypt._wire import Reader

__all__ = ["CkksParams", "SECURITY_BOUNDS", "PRESETS", "PACKINGS", "NOISE_STDDEV", "CONFIDENCE_SIGMAS", "FLOODING_BITS"]

#: HE standard (Albrecht et al., "Homomorphic Encryption Standard", 2018, table 1, ternary
#: secret, classical 128-bit): the largest total coefficient-modulus bit count per ring degree.
SECURITY_BOUNDS: dict[int, int] = {4096: 109, 8192: 218, 16384: 438, 32768: 881}

#: Standard deviation of SEAL's error distribution (a clipped discrete Gaussian).
NOISE_STDDEV = 3.2
#: The error bounds below are this many standard deviations of a per-slot Gaussian
#: approximation; a slot exceeds it with probability about 1.2e-15 (two-sided).
CONFIDENCE_SIGMAS = 8.0
#: Capacity headroom: the largest plaintext magnitude is kept below q0 / 2^CAPACITY_MARGIN_BITS.
CAPACITY_MARGIN_BITS = 2
#: The most clients one aggregate may combine (2^20), checked before any guard runs: a peer's
#: parameters are decoded on the server, so nothing may scale with a claimed count.
MAX_CLIENTS = 1 << 20

#: ``s`` of the flooding of every released decryption (see :meth:`CkksParams.flooding_stddev`).
FLOODING_BITS = 30
#: The most bits of modulus headroom spent on precision (as in :mod:`fedcrypt.he.threshold`).
MAX_HEADROOM_BITS = 20
#: Square-norm slack of the high-probability bound on the fresh noise (see flooding_stddev).
_NORM_SLACK = 1.5

_MAGIC = b"FCCP"
#: 2: the packing byte (complex or real); version 1 had real packing only and is refused.
_VERSION = 2
#: packing name <-> its byte in :meth:`CkksParams.to_bytes`
PACKINGS: dict[str, int] = {"real": 1, "complex": 2}
_MIN_PRIME_BITS, _MAX_PRIME_BITS = 20, 60


@dataclass(frozen=True, slots=True)
class CkksParams:
    """Validated CKKS parameters and the aggregation policy they were checked for.

    Math (Cheon-Kim-Kim-Song, ASIACRYPT 2017; RNS variant of SEAL): a complex vector of at
    most ``N/2`` slots is encoded as a polynomial of ``Z[X]/(X^N+1)`` whose canonical
    embedding is the vector times ``scale = 2^scale_bits``, rounded to integer coefficients.
    With ``packing="complex"`` (the default) slot ``j`` carries ``x[2j] + i x[2j+1]``, so
    one ciphertext holds ``N`` reals (:attr:`values_per_ciphertext`); with
    ``packing="real"`` it carries ``x[j]`` and the imaginary parts are zero (``N/2`` reals,
    twice the ciphertexts, bytes, server additions and decryptions). Sums and real weights
    act on the real and imaginary parts alike, so the packing is an encoding change only:
    the same ciphertexts, keys and operations, read two ways. A client
    encodes at level ``upload_level`` of the modulus chain (0 = only the first prime ``q0``
    is left) and encrypts symmetrically, so one uploaded ciphertext carries
    ``upload_level + 1`` primes. The server multiplies by integer weights (an integer
    constant plaintext: no scale change) or, when ``upload_level >= 1``, by float weights
    encoded at scale ``q1`` followed by one rescale that divides by ``q1`` again; every
    ciphertext it returns is at level 0.

    Capacity guard (plaintext coefficients must not wrap modulo ``q0``)::

        num_clients * max_weight * clip * 2^scale_bits <= 2^(bits(q0) - 1 - CAPACITY_MARGIN_BITS)

    A coefficient of the plaintext is at most the largest slot modulus times the scale
    (``p_k = (1/N) sum_j z_j zeta_j^-k`` over all ``N`` roots). With real packing a slot's
    modulus is at most ``clip`` per unit weight; with complex packing it is
    ``|x + iy| <= sqrt(2) clip``, which spends half a bit of the 2-bit margin: the largest
    coefficient stays below ``q0 / 2^2.5`` (decoding needs ``q0 / 2``).

    Error model, per decrypted value of a weighted sum (Gaussian approximation of the
    canonical embedding; ``s`` is the ternary secret with about ``2N/3`` nonzero entries).
    A noise polynomial with independent coefficients of variance ``v`` has, in every slot,
    a real part and an imaginary part each of variance ``N v / 2`` (``sum_k cos^2`` and
    ``sum_k sin^2`` of the root's powers are both ``N/2``), so the bound below holds for
    the real and the imaginary part of a slot alike, that is for every value under either
    packing::

        fresh   = sqrt(N/2 * (1/12 + 3.2^2)) / scale      encoding rounding + encryption noise
        rescale = sqrt(N/2 * (1/12) * (1 + 2N/3)) / scale   one per float-weighted input
        decode  = q0 * 2^-53 * sqrt(N) / scale              float64 decoding of coefficients
        |error(sum)| <= 8 * sqrt(fresh^2 * sum(w_i^2) + rescale^2 * n_float) + decode

    and the error of the weighted mean is that divided by ``sum(w_i)``. The precision guard
    requires the mean error for ``num_clients`` inputs of weight 1 to be at most ``precision``.
    For the ``compact`` preset the mean's bound is 1.2e-8 for one input, 1.5e-9 for ten
    and 2.5e-10 for a hundred; the tempting N=4096 [40, 20, 40] with scale 2^20 gives
    1.1e-3 for one input and is refused. Integer weights scale the noise with the weight,
    so the mean's bound never exceeds the one-input bound. Float weights add one rescale
    error per input that does *not* shrink with the weight: the mean's bound grows like
    ``1 / sum(w_i)`` for tiny weights (``weighted`` preset, ten inputs: 4.2e-9 at weight 1,
    4.2e-8 at 0.1, 4.2e-7 at 0.01), so scale float weights to be >= 0.1 when you can (the
    mean does not change).

    Threat model: parameters are public and agreed by every party (they are hashed into the
    context fingerprint); the HE standard bound gives 128-bit security against the known
    lattice attacks for the *largest* modulus the secret key is used with (the whole chain).

    Args:
        poly_modulus_degree: ring degree N, one of 4096, 8192, 16384, 32768.
        coeff_modulus_bits: bit sizes of the primes, first (``q0``) to last (the special
            prime used only for key switching); 20..60 bits each.
        scale_bits: log2 of the encoding scale.
        upload_level: how many primes above ``q0`` an uploaded ciphertext keeps (0 or 1);
            1 allows float weights at the price of twice the upload size.
        packing: ``"complex"`` (two reals per slot, the default) or ``"real"`` (one real
            per slot, the layout before wire version 2; kept for comparison).
        num_clients: the most inputs one aggregate may combine.
        clip: bound on the absolute value of every input coordinate (inputs are clipped).
        max_weight: the largest weight one input may get.
        precision: the largest allowed error bound of an exact (unflooded) decryption of a
            weighted mean of ``num_clients`` unit-weight inputs; a released decryption adds
            the flooding of :meth:`flooding_stddev` (:meth:`sum_error_bound` includes it).

    Raises:
        ValueError: a bound is broken; the message names it.
        TypeError: a field has the wrong type.
    """

    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    scale_bits: int
    upload_level: int = 0
    num_clients: int = 100
    clip: float = 1.0
    max_weight: float = 1000.0
    precision: float = 1e-6
    packing: str = "complex"

    def __post_init__(self) -> None:
        for name in ("poly_modulus_degree", "scale_bits", "upload_level", "num_clients"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not isinstance(self.coeff_modulus_bits, tuple) or not all(isinstance(b, int) and not isinstance(b, bool) for b in self.coeff_modulus_bits):
            raise TypeError("coeff_modulus_bits must be a tuple of ints")
        for name in ("clip", "max_weight", "precision"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.packing, str):
            raise TypeError(f"packing must be a str, got {type(self.packing).__name__}")
        if self.packing not in PACKINGS:
            raise ValueError(f"packing must be one of {sorted(PACKINGS)}, got {self.packing!r}")
        n = self.poly_modulus_degree
        if n not in SECURITY_BOUNDS:
            raise ValueError(f"poly_modulus_degree must be one of {sorted(SECURITY_BOUNDS)}, got {n}")
        bits = self.coeff_modulus_bits
        if not bits:
            raise ValueError("coeff_modulus_bits must name at least one prime")
        if any(not _MIN_PRIME_BITS <= b <= _MAX_PRIME_BITS for b in bits):
            raise ValueError(f"every prime must have {_MIN_PRIME_BITS}..{_MAX_PRIME_BITS} bits, got {list(bits)}")
        total = sum(bits)
        if total > SECURITY_BOUNDS[n]:
            raise ValueError(
                f"128-bit security bound broken: total coefficient modulus {total} bits exceeds {SECURITY_BOUNDS[n]} bits for N={n} (HE standard)"
            )
        data_levels = max(len(bits) - 1, 1)
        if not 0 <= self.upload_level <= min(data_levels - 1, 1):
            raise ValueError(f"upload_level must be in [0, {min(data_levels - 1, 1)}] for {len(bits)} primes, got {self.upload_level}")
        if self.scale_bits < 1 or self.scale_bits >= bits[0]:
            raise ValueError(f"scale_bits must be in [1, {bits[0] - 1}] (below q0's {bits[0]} bits), got {self.scale_bits}")
        if self.upload_level == 1 and bits[1] < self.scale_bits:
            raise ValueError(f"float weights are encoded at q1's scale: q1 ({bits[1]} bits) must have at least scale_bits={self.scale_bits} bits")
        if not 1 <= self.num_clients <= MAX_CLIENTS:
            raise ValueError(f"num_clients must be in [1, {MAX_CLIENTS}], got {self.num_clients}")
        capacity = self.capacity()
        needed = self.num_clients * self.max_weight * self.clip
        if needed > capacity:
            raise ValueError(
                f"capacity guard: num_clients * max_weight * clip = {needed:g} exceeds "
                f"2^(bits(q0)-1-{CAPACITY_MARGIN_BITS}-scale_bits) = {capacity:g}; lower scale_bits, "
                f"clip or max_weight, or use a larger q0"
            )
        unit = self.unit_mean_error_bound()
        if unit > self.precision:
            raise ValueError(
                f"precision guard: the error bound of a weighted mean of {self.num_clients} inputs is "
                f"{unit:.3g} > precision={self.precision:g}; raise scale_bits or lower N"
            )

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **policy: float | int | str) -> "CkksParams":
        """A named preset at 128-bit security, optionally with another aggregation policy.

        Presets:

        * ``"compact"``: N=8192, primes [60, 40, 60], scale 2^40, upload at level 0: one
          polynomial over one 60-bit prime per ciphertext (the second replaced by a seed),
          8 bytes per value with complex packing (16 with ``packing="real"``), plus
          framing. Integer weights (example counts) only.
        * ``"weighted"``: same chain, upload at level 1 (q0 and q1): twice the bytes;
          float weights, applied with one rescale by q1 on the server.

        Args:
            name: the preset's name.
            **policy: any of ``num_clients``, ``clip``, ``max_weight``, ``precision``,
                ``packing``; they are validated like custom parameters.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown CKKS preset {name!r}; known: {sorted(PRESETS)}")
        unknown = set(policy) - {"num_clients", "clip", "max_weight", "precision", "packing"}
        if unknown:
            raise ValueError(f"preset policy takes num_clients, clip, max_weight, precision, packing; got {sorted(unknown)}")
        n, bits, scale_bits, level = PRESETS[name]
        return cls(n, bits, scale_bits, level, **policy)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ derived
    @property
    def slot_count(self) -> int:
        """Slots of one ciphertext (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def values_per_ciphertext(self) -> int:
        """Reals packed into one ciphertext: ``N`` with complex packing, ``N/2`` with real."""
        return self.poly_modulus_degree if self.packing == "complex" else self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        """The encoding scale 2^scale_bits."""
        return math.ldexp(1.0, self.scale_bits)

    def capacity(self) -> float:
        """The largest ``sum(weights) * clip`` the last prime holds with the margin."""
        return math.ldexp(1.0, self.coeff_modulus_bits[0] - 1 - CAPACITY_MARGIN_BITS - self.scale_bits)

    def headroom_bits(self) -> int:
        """Spare modulus bits spent on precision: the largest ``h <= 20`` with
        ``2^h * num_clients * max_weight * clip <= capacity()``.

        Clients encode at :meth:`encoding_scale` ``= 2^(scale_bits + h)`` instead of
        ``2^scale_bits``, so the largest aggregate still fits under ``q0`` with the margin
        while every absolute error (encryption noise, rescaling, flooding) shrinks by ``2^h``
        in value units. ``h`` comes from the public parameters, so every party agrees on it.
        """
        needed = self.num_clients * self.max_weight * self.clip
        bits = 0
        while bits < MAX_HEADROOM_BITS and math.ldexp(needed, bits + 1) <= self.capacity():
            bits += 1
        return bits

    @property
    def encoding_scale(self) -> float:
        """The scale uploads are encoded at: ``2^(scale_bits + headroom_bits())``."""
        return math.ldexp(1.0, self.scale_bits + self.headroom_bits())

    def noise_norm_bound(self, contributions: int, total_weight: float, *, float_weights: bool) -> float:
        """Bound ``E`` on ``||e||_2`` of a decrypted aggregate, in coefficient units.

        ``e = c0 + c1 s - Delta' * sum_i w_i x_i`` is what an exact decryption reveals beyond
        the weighted sum (Li-Micciancio). Per input ``i``: fresh noise ``w_i e_i`` (SEAL's
        centered binomial, standard deviation 3.2), encoding rounding ``w_i r_i``
        (``|r_i| <= 1/2`` per coefficient) and, for a float weight, one rescale
        ``tau_0 + tau_1 s`` plus the weight's own rounding ``m_i delta / q1``::

            E = sqrt(1.5 N 3.2^2 sum w_i^2) + sqrt(N)/2 sum w_i
                + n_float (sqrt(N)/2 + sqrt(1.5 N (2N/3)/12) + c clip Delta' / q1)

        where ``c clip`` bounds a slot's modulus: ``c = 1`` with real packing and
        ``c = sqrt(2)`` with complex packing (``||m_i||_2 <= c clip Delta'`` in coefficients).

        The factor 1.5 on the square norm of the ``N`` independent noise coefficients fails
        with probability below 2^-100 (Bernstein). Only ``contributions`` ``n`` and the total
        weight ``W`` are known to the decryptor, so ``sum w_i^2 <= (W - n + 1)^2 + n - 1``
        for integer weights (each >= 1) and ``<= W min(W, max_weight)`` for float weights.
        """
        n, w = int(contributions), float(total_weight)
        big_n = self.poly_modulus_degree
        if float_weights:
            sum_w2 = w * min(w, self.max_weight)
        else:
            sum_w2 = (w - n + 1) ** 2 + (n - 1) if w >= n else w * w
        bound = math.sqrt(_NORM_SLACK * big_n * NOISE_STDDEV**2 * sum_w2) + math.sqrt(big_n) / 2 * w
        if float_weights:
            q1 = math.ldexp(1.0, self.coeff_modulus_bits[1] - 1) if len(self.coeff_modulus_bits) > 1 else 1.0
            rescale = math.sqrt(big_n) / 2 + math.sqrt(_NORM_SLACK * big_n * (2 * big_n / 3) / 12)
            bound += n * (rescale + self.slot_modulus_factor * self.clip * self.encoding_scale / q1)
        return bound

    @property
    def slot_modulus_factor(self) -> float:
        """The largest slot modulus per unit of ``clip``: ``sqrt(2)`` (complex packing) or 1."""
        return math.sqrt(2.0) if self.packing == "complex" else 1.0

    def flooding_stddev(self, contributions: int, total_weight: float, *, float_weights: bool) -> float:
        """Standard deviation, in value units, of the flooding of one released decrypted value.

        A key holder never releases ``Decode(c0 + c1 s)``: it adds independent Gaussian
        noise (from a CSPRNG) of standard deviation ``sigma_c = 2^(s/2) E`` per coefficient
        (:meth:`noise_norm_bound`, ``s =`` :data:`FLOODING_BITS`). With complex packing what
        is released is the real *and* the imaginary part of every slot: the whole canonical
        embedding ``R^N -> C^(N/2) = R^N``, which is ``sqrt(N/2)`` times an isometry
        (``sum_j |p(zeta_j)|^2 = N/2 ||p||^2`` over one root of each conjugate pair). So
        independent Gaussian flooding of ``sigma_c sqrt(N/2) / Delta'`` (this method's
        value) on *each* released real, real parts and imaginary parts alike, is exactly
        spherical Gaussian flooding of ``sigma_c`` per coefficient pulled through that
        isometry, and the argument below applies unchanged. With real packing only the
        real parts are released, which depend only on the symmetric part
        ``(p + p(X^-1))/2`` of the plaintext, where the same map is again ``sqrt(N/2)``
        times an isometry; the per-value flooding is the same.

        Security (Li and Micciancio, EUROCRYPT 2021; flooding sized by the Renyi divergence
        as in Li, Micciancio, Schultz and Sorrell, CRYPTO 2022, and Bai et al., ASIACRYPT
        2015): one release differs from a release computed from the ideal sum alone by a
        Gaussian shift of norm ``<= E``, so the Renyi divergence of order ``a`` over ``Q``
        releases is ``<= a Q 2^-s / 2``; with ``a = 64`` and ``Q <= 2^(s-6) = 2^24``
        releases, a key-recovery attack that succeeds with probability ``eps`` from the
        ideal outputs succeeds with at most ``(e^0.5 eps)^(63/64)`` from the real ones.
        The statistical distance of one release is ``<= 2^-(s/2) / 2 = 2^-16``: this is the
        search (key-recovery) notion; distance 2^-40 (IND-CPA-D) needs flooding ``2^24``
        times larger, which a 60-bit ``q0`` cannot carry at 1e-6 precision.
        """
        sigma_c = math.ldexp(self.noise_norm_bound(contributions, total_weight, float_weights=float_weights), 0)
        sigma_c *= 2.0 ** (FLOODING_BITS / 2)
        return sigma_c * math.sqrt(self.poly_modulus_degree / 2) / self.encoding_scale

    def unit_mean_error_bound(self) -> float:
        """The precision guard's bound: :meth:`mean_error_bound` of ``num_clients`` unit weights
        (exact decryption), in closed form.

        With ``n`` unit weights ``sum w^2 = sum w = n``, so the bound is
        ``(8 sqrt(n (fresh^2 + [float] rescale^2)) + decode) / n``; it takes constant time and
        memory whatever ``num_clients`` a peer's parameters claim.
        """
        n = self.num_clients
        fresh, rescale, decode = self._stddevs()
        variance = n * (fresh**2 + (rescale**2 if self.upload_level >= 1 else 0.0))
        return (CONFIDENCE_SIGMAS * math.sqrt(variance) + decode) / n

    def _stddevs(self) -> tuple[float, float, float]:
        n = self.poly_modulus_degree
        scale = self.encoding_scale
        fresh = math.sqrt(n / 2 * (1 / 12 + NOISE_STDDEV**2)) / scale
        rescale = math.sqrt(n / 2 * (1 / 12) * (1 + 2 * n / 3)) / scale
        decode = math.ldexp(1.0, self.coeff_modulus_bits[0] - 53) * math.sqrt(n) / scale
        return fresh, rescale, decode

    def sum_error_bound(self, weights: Iterable[float], *, float_weights: bool = False, flooded: bool = True) -> float:
        """Documented per-value bound (real or imaginary part of a slot) on the error of a decrypted weighted sum (see class doc).

        Args:
            weights: the weights of the inputs.
            float_weights: whether the inputs went through the float-weight (rescale) path.
            flooded: include the flooding of a released decryption (what
                :meth:`KeyOwner.decrypt` returns); ``False`` is the exact decryption's
                bound, which the precision guard checks.
        """
        ws = [float(w) for w in weights]
        fresh, rescale, decode = self._stddevs()
        variance = fresh**2 * sum(w * w for w in ws) + (rescale**2 * len(ws) if float_weights else 0.0)
        if flooded and ws:
            variance += self.flooding_stddev(len(ws), math.fsum(ws), float_weights=self.upload_level >= 1) ** 2
        return CONFIDENCE_SIGMAS * math.sqrt(variance) + decode

    def mean_error_bound(self, weights: Iterable[float], *, float_weights: bool = False, flooded: bool = True) -> float:
        """:meth:`sum_error_bound` divided by the total weight."""
        ws = [float(w) for w in weights]
        total = sum(ws)
        if not ws or total <= 0:
            raise ValueError("weights must be non-empty with a positive total")
        return self.sum_error_bound(ws, float_weights=float_weights, flooded=flooded) / total

    # ------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        """Canonical, versioned encoding (hashed into every context fingerprint)."""
        bits = self.coeff_modulus_bits
        return b"".join(
            [
                _MAGIC,
                struct.pack(">BIB", _VERSION, self.poly_modulus_degree, len(bits)),
                bytes(bits),
                struct.pack(">BBI", self.scale_bits, self.upload_level, self.num_clients),
                struct.pack(">ddd", self.clip, self.max_weight, self.precision),
                bytes([PACKINGS[self.packing]]),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> "CkksParams":
        """Strictly decode :meth:`to_bytes` output.

        Raises:
            MalformedMessageError: wrong magic, version or length, or parameters that fail
                validation (the message names the bound).
        """
        reader = Reader(data, "CkksParams")
        if reader.remaining < 10 or reader.take(4) != _MAGIC:
            raise reader.error("bad magic or truncated")
        version, n, count = reader.unpack(">BIB")
        if version == 1:
            raise reader.error(
                "version 1 (one real per CKKS slot) is no longer accepted; this version "
                "names the packing (two reals per slot by default): make new parameters and a new key"
            )
        if version != _VERSION:
            raise reader.error(f"unsupported version {version}")
        expected = 10 + count + 6 + 24 + 1
        if reader.size != expected:
            raise reader.error(f"{reader.size} bytes, expected {expected}")
        bits = tuple(reader.take(count))
        scale_bits, level, num_clients = reader.unpack(">BBI")
        clip, max_weight, precision = reader.unpack(">ddd")
        packing = reader.u8()
        reader.expect_end()
        names = {code: name for name, code in PACKINGS.items()}
        if packing not in names:
            raise reader.error(f"unknown packing {packing}")
        try:
            return cls(n, bits, scale_bits, level, num_clients, clip, max_weight, precision, names[packing])
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise reader.error(str(exc)) from None


#: name -> (N, prime bit sizes, scale bits, upload level)
PRESETS: dict[str, tuple[int, tuple[int, ...], int, int]] = {
    "compact": (8192, (60, 40, 60), 40, 0),
    "weighted": (8192, (60, 40, 60), 40, 1),
}
