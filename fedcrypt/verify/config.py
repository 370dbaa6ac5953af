"""The verified-aggregation round's parameters (:class:`VerifyConfig`).

One config is shared by the clients, the leader and the helper. It fixes the layout
(:class:`~fedcrypt.vectors.TensorSpec`), the L2 bound, the fixed-point scale, the PINE
variant and every PINE parameter derived from them, the helper's public key (clients seal
the helper's input share to it) and the noise each aggregator adds.

Invariants:

* a :class:`VerifyConfig` that constructs is safe to run: the PINE parameters are feasible
  in the variant's field ([ROCT23] Figure 1 and Lemma 3.3: ``q > 3 B^2 + 2``,
  ``q >= 2600 * wr_check_bound``, ``wr_check_bound^2 <= 4000 q``), the wraparound check is
  sound (:data:`WRAPAROUND_FACTOR`: ``q >= (9 * wr_check_bound)^2``), and the sum of
  ``max_reports`` encoded vectors plus both aggregators' noise stays inside
  ``(-q/2, q/2)`` in every coordinate (a coordinate of one report is at most ``B`` in
  absolute value; the noise is counted up to :data:`NOISE_TAIL` standard deviations, beyond
  which it lies with probability below ``2^-280`` per coordinate);
* :meth:`VerifyConfig.to_bytes` is canonical (one config, one encoding); its digest is
  bound into every report's nonce, every sealed helper share and every client's state.

Chunk lengths (the ParallelSum sizes of the two PINE circuits) are chosen here to minimise
the proof length, which is what a client uploads beyond its encoded vector.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field

from fedcrypt.vectors import TensorEntry, TensorSpec

from .field import next_power_of_2
from .pine import DEFAULT_ALPHA, DEFAULT_NUM_WR_CHECKS, DEFAULT_NUM_WR_SUCCESSES, PineParams
from .vdaf import VARIANTS, PineVdaf

__all__ = ["VerifyConfig", "NOISE_TAIL", "MAX_FRAC_BITS", "WRAPAROUND_FACTOR", "best_chunk_lengths"]

_CONFIG_LABEL = b"fedcrypt/verify/round-config/v1"
#: noise is bounded by this many standard deviations of the summed noise when the config
#: checks that a noisy sum cannot wrap the field (Pr[|N_Z(0, s^2)| > 36 s] < 2^-280)
NOISE_TAIL = 36
#: the wraparound check catches a vector whose squared norm wraps the field (each check
#: passes with probability at most about 1/2) only when ``q >= (9 H)^2`` for the largest
#: accepted dot product ``H`` (draft-chen-cfrg-vdaf-pine, "Wraparound Protocol": ``q >= 81 B
#: ln(2/eta)`` with ``B`` the squared bound and ``alpha^2 = ln(2/eta)``); here ``H`` is
#: ``wr_check_bound``. The weaker conditions PineParams checks (``wr_check_bound^2 <= 4000
#: q``) let a vector of norm ``sqrt(q) = 2^20`` pass every check in Field40 when ``B = 2^19``
#: (found by ``fedcrypt.testing.verify_attacks``' field-wraparound attack).
WRAPAROUND_FACTOR = 9
#: the largest fixed-point scale exponent the config considers
MAX_FRAC_BITS = 40
_FIELD_MAX = 1 << 20  # Field40's 2-power subgroup: NTT sizes up to 2^20


def _int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _real(value: object, name: str, *, low: float, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x) or x < low or (low_open and x == low):
        raise ValueError(f"{name} must be finite and {'>' if low_open else '>='} {low}, got {value!r}")
    return x


def _proof_len(arity: int, degree: int, calls: int) -> int:
    p = next_power_of_2(calls + 1)
    return arity + degree * (p - 1) + 1


def best_chunk_lengths(
    dimension: int,
    bit_checked_len: int,
    num_wr_checks: int,
    num_proofs: int,
    *,
    modulus: int,
    num_proofs_norm_equality: int = 1,
    soundness_bits: int = 0,
) -> tuple[int, int, int]:
    """``(chunk_length, chunk_length_norm_equality, norm_equality_queries)`` minimising the
    proofs' total length, the norm-equality proofs tested at enough points that a false one
    passes with probability at most ``2^-soundness_bits``.

    The norm-equality circuit calls ``ParallelSum(PolyEval(x^2), c)`` ``M = ceil(d / c)``
    times; tested at ``s`` points its proof has ``s c + 2 (P - 1) + 1`` elements
    (``P = next_power_of_2(M + s)``) and error ``(2 (P - 1) / q)^s`` (sent
    ``num_proofs_norm_equality`` times). The main circuit calls ``ParallelSum(Mul, c)``
    ``ceil(bits / c) + ceil(checks / c)`` times (proof length ``2c + 2 (P - 1) + 1``, sent
    ``num_proofs`` times, which the variant fixes for its field). For each ``s`` and power of
    two ``P`` the smallest chunk whose calls fit is the best with that ``P``; ties go to
    fewer points, then the smaller chunk. NTT sizes stay within the field's 2-power subgroup.

    Raises:
        ValueError: no number of points up to 16 reaches ``soundness_bits``.
    """
    best_ne: tuple[int, int, int, int] | None = None  # (length, queries, chunk, -)
    for queries in range(1, 17):
        p = 2
        while 2 * p <= _FIELD_MAX:
            if p > queries:
                c = -(-dimension // (p - queries))
                calls = -(-dimension // c)
                actual = next_power_of_2(calls + queries)
                log2_error = num_proofs_norm_equality * queries * math.log2(2 * (actual - 1) / modulus)
                if log2_error <= -soundness_bits:
                    length = num_proofs_norm_equality * (queries * c + 2 * (actual - 1) + 1)
                    if best_ne is None or (length, queries, c) < best_ne[:3]:
                        best_ne = (length, queries, c, actual)
                if c == 1:
                    break
            p *= 2
    if best_ne is None:
        raise ValueError(f"no norm-equality proof of at most 16 points reaches 2^-{soundness_bits}")
    best_main: tuple[int, int] | None = None
    for c in range(1, bit_checked_len + num_wr_checks + 1):
        calls = -(-bit_checked_len // c) + -(-num_wr_checks // c)
        if 2 * next_power_of_2(calls + 1) > _FIELD_MAX:
            continue
        length = num_proofs * _proof_len(2 * c, 2, calls)
        if best_main is None or length < best_main[0]:
            best_main = (length, c)
    assert best_main is not None
    return best_main[1], best_ne[2], best_ne[1]


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    """Parameters of a verified-aggregation round (PINE, [ROCT23]), shared by every party.

    Every client proves, to two non-colluding aggregators (the *leader*, which runs the
    round and obtains the sum, and the *helper*), that the fixed-point encoding of its
    vector has L2 norm at most ``B = floor(l2_norm_bound * 2^num_frac_bits)``; the
    aggregators check the proof on secret shares and add up only the reports that pass.

    Args:
        spec: the layout of the flat vector (its length is the PINE dimension).
        l2_norm_bound: the L2 bound in the float domain (``> 0``); it is also the DP
            sensitivity of one client's contribution.
        helper_key: the helper's 32-byte X25519 public key: clients seal the helper's input
            share to it, so a leader that relays reports never sees both shares.
        num_frac_bits: fractional bits of the fixed-point encoding; ``None`` (default):
            the largest that keeps every check feasible and sound (at most
            :data:`MAX_FRAC_BITS`). In Field40 the wraparound check's soundness caps ``B``
            at 7532 (``l2_norm_bound = 1`` gets 12 bits: a step of ``2^-12`` of the bound).
        variant: a name in :data:`fedcrypt.verify.VARIANTS` (default
            ``"Pine40HmacSha256Aes128"``, the draft's recommended, vectorised field).
        min_reports: the fewest accepted reports whose sum the helper releases (``>= 1``;
            below 2 a sum is one client's vector).
        max_reports: the most reports one round takes (bounds the sum in the field).
        max_weight: ``M``: a client with weight ``w`` in ``(0, M]`` contributes
            ``w/M * clip(x)``.
        noise_multiplier: ``z >= 0``: the sum carries discrete Gaussian noise of standard
            deviation ``z * B`` in the integer domain (``z * l2_norm_bound`` in floats),
            half of the variance added by each aggregator; 0 turns noise off.
        clip: an honest client clips its vector to ``l2_norm_bound`` (default); with
            ``False`` it refuses a vector above the bound (:class:`~fedcrypt.errors.EncodingError`).
        alpha, num_wr_checks, num_wr_successes: PINE's wraparound-check parameters (the
            draft's defaults).
        soundness_bits: the norm-equality proof (which the draft's variants prove once, about
            ``2^-30`` in Field40) is tested at enough points (``norm_equality_queries``, see
            :class:`~fedcrypt.verify.flp.Flp`) that a false one passes with probability at most
            ``2^-soundness_bits`` per report (default 64; 0: the draft's single point). The
            main circuit's ``num_proofs`` (4 in Field40) and the 100 wraparound checks are
            each far below that.

    Raises:
        TypeError / ValueError: a field out of its bounds, or parameters infeasible in the
            variant's field; the message names which.
    """

    spec: TensorSpec
    l2_norm_bound: float
    helper_key: bytes = field(repr=False)
    num_frac_bits: int | None = None
    variant: str = "Pine40HmacSha256Aes128"
    min_reports: int = 2
    max_reports: int = 1 << 16
    max_weight: float = 1.0
    noise_multiplier: float = 0.0
    clip: bool = True
    alpha: float = DEFAULT_ALPHA
    num_wr_checks: int = DEFAULT_NUM_WR_CHECKS
    num_wr_successes: int = DEFAULT_NUM_WR_SUCCESSES
    soundness_bits: int = 64
    params: PineParams = field(init=False, repr=False, compare=False)
    vdaf: PineVdaf = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, TensorSpec):
            raise TypeError(f"spec must be a TensorSpec, got {type(self.spec).__name__}")
        if self.spec.size < 1:
            raise ValueError("the spec describes no parameter")
        bound = _real(self.l2_norm_bound, "l2_norm_bound", low=0.0, low_open=True)
        object.__setattr__(self, "l2_norm_bound", bound)
        if not isinstance(self.helper_key, (bytes, bytearray)) or len(self.helper_key) != 32:
            raise ValueError("helper_key must be the helper's 32-byte X25519 public key")
        object.__setattr__(self, "helper_key", bytes(self.helper_key))
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        _int(self.max_reports, "max_reports", 1, 1 << 32)
        _int(self.min_reports, "min_reports", 1, self.max_reports)
        object.__setattr__(self, "max_weight", _real(self.max_weight, "max_weight", low=0.0, low_open=True))
        object.__setattr__(self, "noise_multiplier", _real(self.noise_multiplier, "noise_multiplier", low=0.0, low_open=False))
        if not isinstance(self.clip, bool):
            raise TypeError(f"clip must be a bool, got {type(self.clip).__name__}")
        object.__setattr__(self, "alpha", _real(self.alpha, "alpha", low=0.0, low_open=True))
        _int(self.num_wr_checks, "num_wr_checks", 1, 255)
        _int(self.num_wr_successes, "num_wr_successes", 1, self.num_wr_checks)
        _int(self.soundness_bits, "soundness_bits", 0, 128)
        if self.num_frac_bits is None:
            frac = self._largest_frac_bits()
        else:
            frac = _int(self.num_frac_bits, "num_frac_bits", 0, MAX_FRAC_BITS)
            reason = self._infeasible(frac)
            if reason:
                raise ValueError(f"num_frac_bits={frac} is infeasible: {reason}")
        object.__setattr__(self, "num_frac_bits", frac)
        params = self._params(frac)
        object.__setattr__(self, "params", params)
        v = VARIANTS[self.variant]
        object.__setattr__(self, "vdaf", PineVdaf(params, v.xof, v.vdaf_id))

    # ------------------------------------------------------------------ derivation
    def _bound_int(self, frac: int) -> int:
        return math.floor(math.ldexp(self.l2_norm_bound, frac))

    def _base(self, frac: int, chunks: tuple[int, int, int] = (1, 1, 1)) -> PineParams:
        v = VARIANTS[self.variant]
        return PineParams(
            field=v.field,
            l2_norm_bound=self._bound_int(frac),
            num_frac_bits=frac,
            dimension=self.spec.size,
            chunk_length=chunks[0],
            chunk_length_norm_equality=chunks[1],
            num_proofs=v.num_proofs,
            num_proofs_norm_equality=v.num_proofs_norm_equality,
            alpha=self.alpha,
            num_wr_checks=self.num_wr_checks,
            num_wr_successes=self.num_wr_successes,
            norm_equality_queries=chunks[2],
        )

    def _infeasible(self, frac: int) -> str:
        """Why ``frac`` cannot be used ("" when it can)."""
        b = self._bound_int(frac)
        if b < 1:
            return "the encoded bound floor(l2_norm_bound * 2^num_frac_bits) is 0"
        try:
            self._base(frac)
        except ValueError as exc:
            return str(exc)
        q = VARIANTS[self.variant].field.modulus
        wrb = self._base(frac).wr_check_bound
        if (WRAPAROUND_FACTOR * wrb) ** 2 > q:
            return (
                f"the wraparound check is not sound: wr_check_bound={wrb} needs q >= (9 * {wrb})^2 "
                f"(lower l2_norm_bound * 2^num_frac_bits, or a larger field)"
            )
        if b * self.max_reports + math.ceil(NOISE_TAIL * self.noise_multiplier * b) > (q - 1) // 2:
            return f"{self.max_reports} reports of norm B plus the noise could wrap the field"
        return ""

    def _largest_frac_bits(self) -> int:
        for frac in range(MAX_FRAC_BITS, -1, -1):
            if not self._infeasible(frac):
                return frac
        raise ValueError(
            f"no fixed-point scale makes l2_norm_bound={self.l2_norm_bound} feasible in {VARIANTS[self.variant].field.name}: {self._infeasible(0)}"
        )

    def _params(self, frac: int) -> PineParams:
        base = self._base(frac)
        v = VARIANTS[self.variant]
        chunks = best_chunk_lengths(
            base.dimension,
            base.bit_checked_len,
            base.num_wr_checks,
            v.num_proofs,
            modulus=v.field.modulus,
            num_proofs_norm_equality=v.num_proofs_norm_equality,
            soundness_bits=self.soundness_bits,
        )
        return self._base(frac, chunks)

    # ------------------------------------------------------------------ properties
    @classmethod
    def for_dimension(cls, dimension: int, l2_norm_bound: float, helper_key: bytes, **kwargs: object) -> "VerifyConfig":
        """A config for one flat float32 vector of ``dimension`` entries (named ``"vector"``)."""
        _int(dimension, "dimension", 1, 1 << 27)
        spec = TensorSpec((TensorEntry("vector", (dimension,), "float32"),))
        return cls(spec, l2_norm_bound, helper_key, **kwargs)  # type: ignore[arg-type]

    @property
    def dimension(self) -> int:
        """Length of the flat vector."""
        return self.spec.size

    @property
    def bound(self) -> int:
        """``B``: the L2 bound on the encoded integer vector (the sensitivity in integers)."""
        return self.params.l2_norm_bound

    @property
    def scale(self) -> float:
        """``2^num_frac_bits``."""
        return math.ldexp(1.0, self.params.num_frac_bits)

    @property
    def noise_stddev(self) -> float:
        """Standard deviation of the sum's noise in integers (``z * B``); each aggregator
        samples ``N_Z(0, noise_stddev^2 / 2)`` per coordinate."""
        return self.noise_multiplier * self.bound

    @property
    def norm_equality_error_log2(self) -> float:
        """log2 of the bound on a false norm-equality proof passing (one report, all its
        norm-equality proofs): ``num_proofs_norm_equality * log2(Flp.soundness_error())``."""
        return self.params.num_proofs_norm_equality * math.log2(self.vdaf.flp_ne.soundness_error())

    def sum_error_bound(self, count: int) -> float:
        """Per-coordinate bound of ``|decoded sum - sum_i w_i/M x_i|`` over ``count`` reports,
        noise aside, for inputs whose L2 norm is at most ``l2_norm_bound``.

        Each summand is within ``3 / 2^f`` of ``w_i/M x_i`` per coordinate: rounding to the
        encoding's integers moves it by at most two units (:func:`~fedcrypt.verify.encoding.encode_vector`),
        and clipping to ``floor(l2_norm_bound 2^f) / 2^f`` instead of ``l2_norm_bound`` shrinks
        each coordinate by less than one unit (``|x_i| <= ||x|| <= l2_norm_bound``). The sum in
        the field is exact (``max_reports`` keeps it within ``(-q/2, q/2)``).
        """
        _int(count, "count", 0, self.max_reports)
        return count * 3.0 / self.scale

    @property
    def encoded_vector_bytes(self) -> int:
        """Bytes of the encoded vector alone (``d`` field elements): the upload's yardstick."""
        return self.dimension * self.params.field.encoded_size

    def to_bytes(self) -> bytes:
        """Canonical encoding (the spec and the helper key by value)."""
        spec = self.spec.to_bytes()
        variant = self.variant.encode("ascii")
        return b"".join(
            [
                _CONFIG_LABEL,
                struct.pack(">I", len(spec)),
                spec,
                struct.pack(">B", len(variant)),
                variant,
                self.helper_key,
                struct.pack(
                    ">dBIIdd?dBB",
                    self.l2_norm_bound,
                    self.params.num_frac_bits,
                    self.min_reports,
                    self.max_reports,
                    self.max_weight,
                    self.noise_multiplier,
                    self.clip,
                    self.alpha,
                    self.num_wr_checks,
                    self.num_wr_successes,
                ),
                struct.pack(
                    ">IIBB",
                    self.params.chunk_length,
                    self.params.chunk_length_norm_equality,
                    self.params.norm_equality_queries,
                    self.soundness_bits,
                ),
            ]
        )

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).digest()

    def __repr__(self) -> str:
        return (
            f"VerifyConfig(dimension={self.dimension}, l2_norm_bound={self.l2_norm_bound!r}, "
            f"num_frac_bits={self.params.num_frac_bits}, variant={self.variant!r}, "
            f"min_reports={self.min_reports}, noise_multiplier={self.noise_multiplier!r})"
        )
