"""PINE's parameters, measurement encoding and its two validity circuits.

Reference: Rothblum, Omri, Chen, Talwar, "PINE: Efficient Norm-Bound Verification for
Secret-Shared Vectors" (arXiv 2311.10237, [ROCT23]); draft-chen-cfrg-vdaf-pine-02. Where the
draft text is still a TODO (float encoding, layout, constants) the behaviour follows the
draft's published test vectors (``tests/vectors/pine/``), which this module reproduces.

Encoded measurement (what is secret shared), ``MEAS_LEN = d + bit_checked_len``::

    gradient (d)  |  sq_norm_v bits (b)  |  sq_norm_u bits (b)  |
    for each wraparound check k < num_wr_checks:  v_k bits (w)  |  success bit g_k

with ``b = bitlen(B^2)``, ``w = bitlen(2 * wr_check_bound - 1)``. The circuit input appends
the ``num_wr_checks`` wraparound dot products, which each party computes itself from its
gradient share and the wraparound joint randomness (they are linear in the gradient).

Gradient entries: ``round_half_even(x * 2^f)`` (``f = num_frac_bits``) as a field element
(negative values wrap mod q); NaN, infinities and subnormals are refused. ``B`` is the L2
bound *already encoded* (the bound on the integer vector, e.g. ``1.0 -> 2^f``).

Checks, each a field identity that holds for an honest client:

* **norm equality** (circuit :class:`PineNormEqualityCircuit`, no joint randomness): the
  squared norm ``sum x_i^2`` computed from the gradient equals the value of the ``v`` bits;
* **bits** (joint randomness ``r_bit``): ``sum_i r_bit^i b_i (b_i - 1) = 0`` over every
  bit-checked entry;
* **norm range** ([ROCT23] Figure 1): ``v + u = B^2`` with ``v, u`` both of ``b`` bits, so
  ``0 <= sq_norm <= B^2`` over the integers *modulo q*;
* **wraparound** ([ROCT23] Figure 2, Remark 3.2): for random ``z_k in {-1,0,1}^d``
  (Pr = 1/4, 1/2, 1/4) the dot product ``<z_k, x>`` is, when ``g_k = 1``, equal to
  ``v_k - (wr_check_bound - 1)`` with ``v_k`` of ``w`` bits, i.e. in
  ``[-wr_check_bound + 1, wr_check_bound]``; checked as
  ``sum_k r_wr^k (<z_k,x> - v_k + wr_check_bound - 1) g_k = 0``;
* **success count**: ``sum_k g_k = num_wr_successes``.

The main circuit :class:`PineValidCircuit` returns
``bits + r_final * range + r_final^2 * wraparound + r_final^3 * count``. A gradient whose
integer squared norm exceeds ``B^2`` but wraps mod q into range passes the range check; the
wraparound tests catch it: each fails with probability about 1/2 for such a gradient
([ROCT23] Lemma 3.3), and an honest gradient (norm <= B) passes each with probability
depending on ``alpha`` (the ZK error).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from dataclasses import field as dataclass_field  # the class below has a `field` attribute

import numpy as np

from fedcrypt.errors import EncodingError

from .field import PrimeField, next_power_of_2
from .flp import Circuit, Mul, ParallelSum, PolyEval

__all__ = [
    "PineParams",
    "PineNormEqualityCircuit",
    "PineValidCircuit",
    "WraparoundRetry",
    "encode_gradient",
    "decode_gradient",
    "DEFAULT_ALPHA",
    "DEFAULT_NUM_WR_CHECKS",
    "DEFAULT_NUM_WR_SUCCESSES",
]

DEFAULT_ALPHA = 8.7
DEFAULT_NUM_WR_CHECKS = 100
DEFAULT_NUM_WR_SUCCESSES = 100
MAX_DIMENSION = 1 << 27
MAX_PROOFS = 255


class WraparoundRetry(EncodingError):
    """Fewer than ``num_wr_successes`` wraparound checks passed with this randomness.

    An honest client draws fresh randomness and shards again (the probability is the ZK
    error, small for a gradient within the bound).
    """


def _chunks(length: int, chunk: int) -> int:
    return -(-length // chunk)


@dataclass(frozen=True, slots=True)
class PineParams:
    """PINE's parameters, validated once.

    Attributes:
        field: the prime field.
        l2_norm_bound: ``B``, the bound on the encoded integer vector's L2 norm.
        num_frac_bits: fractional bits of the fixed-point encoding.
        dimension: gradient length ``d``.
        chunk_length: ParallelSum chunk of the main circuit (``Mul`` gadgets per call).
        chunk_length_norm_equality: ParallelSum chunk of the norm-equality circuit.
        num_proofs: proofs of the main circuit (soundness amplification for small fields).
        num_proofs_norm_equality: proofs of the norm-equality circuit.
        alpha: wraparound-check parameter (larger: smaller ZK error, larger field needed).
        num_wr_checks: wraparound checks run.
        num_wr_successes: checks an honest client must pass (exactly this many are claimed).
        num_shares: number of aggregators.
        norm_equality_queries: points at which each norm-equality proof is tested (an
            extension, see :class:`~fedcrypt.verify.flp.Flp`; 1 is the draft's FLP).
    """

    field: PrimeField
    l2_norm_bound: int
    num_frac_bits: int
    dimension: int
    chunk_length: int
    chunk_length_norm_equality: int
    num_proofs: int
    num_proofs_norm_equality: int
    alpha: float = DEFAULT_ALPHA
    num_wr_checks: int = DEFAULT_NUM_WR_CHECKS
    num_wr_successes: int = DEFAULT_NUM_WR_SUCCESSES
    num_shares: int = 2
    norm_equality_queries: int = 1

    sq_norm_bound: int = dataclass_field(init=False)
    num_bits_for_sq_norm: int = dataclass_field(init=False)
    wr_check_bound: int = dataclass_field(init=False)
    num_bits_for_wr_check: int = dataclass_field(init=False)
    bit_checked_len: int = dataclass_field(init=False)
    meas_len: int = dataclass_field(init=False)

    def __post_init__(self) -> None:
        q = self.field.modulus
        B = self.l2_norm_bound
        if not isinstance(B, int) or B <= 0 or 2 * B > q:
            raise ValueError(f"l2_norm_bound must be an int in [1, q/2], got {B!r}")
        if not 0 <= self.num_frac_bits < 128:
            raise ValueError(f"num_frac_bits must be in [0, 128), got {self.num_frac_bits}")
        if not 0 < self.dimension <= MAX_DIMENSION:
            raise ValueError(f"dimension must be in [1, {MAX_DIMENSION}], got {self.dimension}")
        for name in ("chunk_length", "chunk_length_norm_equality"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("num_proofs", "num_proofs_norm_equality"):
            if not 1 <= getattr(self, name) <= MAX_PROOFS:
                raise ValueError(f"{name} must be in [1, {MAX_PROOFS}]")
        if isinstance(self.norm_equality_queries, bool) or not 1 <= self.norm_equality_queries <= 16:
            raise ValueError(f"norm_equality_queries must be in [1, 16], got {self.norm_equality_queries!r}")
        if not 2 <= self.num_shares < 256:
            raise ValueError(f"num_shares must be in [2, 256), got {self.num_shares}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError("alpha must be a positive finite float")
        if not 1 <= self.num_wr_successes <= self.num_wr_checks:
            raise ValueError("need 1 <= num_wr_successes <= num_wr_checks")
        if B * B >= q:
            raise ValueError("squared L2-norm bound exceeds the field modulus")
        sq = B * B
        wrb = next_power_of_2(math.ceil(self.alpha * B) + 1)
        # [ROCT23] Figure 1: q > 3 * B^2 + 2 for the norm range check.
        if q - 2 <= 3 * sq:
            raise ValueError(f"range check infeasible: need q > 3*B^2 + 2 in {self.field.name}")
        # [ROCT23] Lemma 3.3, in terms of wr_check_bound: q >= 2*num_wr_checks,
        # q >= 2600*wr_check_bound, wr_check_bound^2 <= 4000*q.
        if q < 2 * self.num_wr_checks or q < 2600 * wrb or wrb * wrb > 4000 * q:
            raise ValueError(f"wraparound check infeasible for B={B}, alpha={self.alpha} in {self.field.name}")
        nb = sq.bit_length()
        nw = (2 * wrb - 1).bit_length()
        bcl = 2 * nb + (nw + 1) * self.num_wr_checks
        for name, value in (
            ("sq_norm_bound", sq),
            ("num_bits_for_sq_norm", nb),
            ("wr_check_bound", wrb),
            ("num_bits_for_wr_check", nw),
            ("bit_checked_len", bcl),
            ("meas_len", self.dimension + bcl),
        ):
            object.__setattr__(self, name, value)

    @property
    def gradient_and_norm_len(self) -> int:
        """Length of the prefix bound into the wraparound joint randomness."""
        return self.dimension + 2 * self.num_bits_for_sq_norm

    @property
    def flp_meas_len(self) -> int:
        """Circuit input length: the encoded measurement and the wraparound dot products."""
        return self.meas_len + self.num_wr_checks

    # ------------------------------------------------------------------ layout
    def unpack(self, meas: np.ndarray) -> dict[str, np.ndarray]:
        """Split a circuit input (or a share of one) into its named parts."""
        d, nb, nw, n = self.dimension, self.num_bits_for_sq_norm, self.num_bits_for_wr_check, self.num_wr_checks
        bits = meas[d : d + self.bit_checked_len]
        wr = bits[2 * nb :].reshape(n, nw + 1)
        return {
            "gradient": meas[:d],
            "bit_checked": bits,
            "sq_norm_v": bits[:nb],
            "sq_norm_u": bits[nb : 2 * nb],
            "wr_v": wr[:, :nw],
            "wr_g": wr[:, nw],
            "wr_results": meas[d + self.bit_checked_len :],
        }


# ---------------------------------------------------------------------------- encoding
def encode_gradient(params: PineParams, gradient: np.ndarray | list[float]) -> np.ndarray:
    """Fixed-point encode a float64 gradient (round half to even) into field elements."""
    F = params.field
    x = np.asarray(gradient, dtype=np.float64).reshape(-1)
    if len(x) != params.dimension:
        raise EncodingError(f"gradient has {len(x)} entries, expected {params.dimension}")
    if not np.all(np.isfinite(x)):
        raise EncodingError("gradient has a NaN or infinite entry")
    if np.any((x != 0.0) & (np.abs(x) < sys.float_info.min)):
        raise EncodingError("gradient has a subnormal entry")
    scaled = np.rint(np.ldexp(x, params.num_frac_bits))
    if not np.all(np.isfinite(scaled)):
        raise EncodingError("gradient entry overflows the fixed-point scale")
    if len(scaled) and float(np.max(np.abs(scaled))) < 2.0**62:
        ints = scaled.astype(np.int64)
        if F.small:
            q = np.int64(F.modulus)
            return (ints % q).astype(np.uint64)
        return F.vec(int(v) for v in ints)
    return F.vec(int(v) for v in scaled)


def decode_gradient(params: PineParams, values: np.ndarray) -> np.ndarray:
    """Field elements to float64: values above ``floor(q/2)`` are negative; divide by ``2^f``."""
    q = params.field.modulus
    half = q // 2
    ints = [int(v) - q if int(v) > half else int(v) for v in values]
    return np.array([v / (1 << params.num_frac_bits) for v in ints], dtype=np.float64)


def sample_wraparound_signs(xof, params: PineParams) -> tuple[np.ndarray, np.ndarray]:
    """Masks ``(plus, minus)`` of shape ``[num_wr_checks, d]`` for the ``{-1,0,1}`` vectors.

    Each check reads ``ceil(d/4)`` XOF bytes; entry ``j`` takes bits ``2(j mod 4)`` and
    ``2(j mod 4)+1`` of byte ``j // 4``: ``00 -> -1``, ``01``/``10 -> 0``, ``11 -> 1``.
    """
    d, n = params.dimension, params.num_wr_checks
    per = _chunks(d, 4)
    raw = np.frombuffer(xof.next(per * n), dtype=np.uint8).reshape(n, per)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    pairs = ((raw[:, :, None] >> shifts) & np.uint8(3)).reshape(n, per * 4)[:, :d]
    return pairs == 3, pairs == 0


#: per XOF byte, the four ``{-1, 0, 1}`` entries it encodes (bits 2i, 2i+1: ``00 -> -1``,
#: ``01``/``10 -> 0``, ``11 -> 1``), as float64 for the BLAS product below
_SIGN_TABLE = np.array([[{0: -1.0, 3: 1.0}.get((byte >> (2 * i)) & 3, 0.0) for i in range(4)] for byte in range(256)])
_WR_BLOCK = 1 << 15  # gradient entries per block: the block's sign matrix stays near L2 size
_LIMB = 20


def wraparound_dot_products(params: PineParams, gradient: np.ndarray, xof) -> np.ndarray:
    """``<z_k, gradient>`` for every check ``k`` (on a share: a share of the dot products).

    The ``{-1,0,1}`` vectors are read as :func:`sample_wraparound_signs` reads them. For
    the vectorised fields the products are one float64 matrix product per block of
    :data:`_WR_BLOCK` entries against the gradient split into two 20-bit limbs: every
    partial sum is an integer of magnitude below ``d * 2^20 <= 2^47 < 2^53``, so float64
    computes it exactly; the limbs are recombined and reduced mod ``q`` in integers.
    Memory: the XOF bytes (``num_wr_checks * d / 4``) and one block's signs.
    """
    F = params.field
    d, n = params.dimension, params.num_wr_checks
    if not F.small:
        plus, minus = sample_wraparound_signs(xof, params)
        out = []
        for k in range(n):
            out.append((int(F.sum(gradient[plus[k]])) - int(F.sum(gradient[minus[k]]))) % F.modulus)
        return F.vec(out)
    per = _chunks(d, 4)
    raw = np.frombuffer(xof.next(per * n), dtype=np.uint8).reshape(n, per)
    g = gradient.astype(np.uint64)
    limbs = np.empty((d, 2), dtype=np.float64)
    limbs[:, 0] = g & np.uint64((1 << _LIMB) - 1)
    limbs[:, 1] = g >> np.uint64(_LIMB)
    sums = np.zeros((n, 2), dtype=np.float64)
    for start in range(0, d, _WR_BLOCK):
        stop = min(d, start + _WR_BLOCK)
        signs = _SIGN_TABLE[raw[:, start // 4 : _chunks(stop, 4)]].reshape(n, -1)[:, : stop - start]
        sums += signs @ limbs[start:stop]
    lo = sums[:, 0].astype(np.int64)
    hi = sums[:, 1].astype(np.int64)
    q = np.int64(F.modulus)
    total = ((hi % q) * np.int64(1 << _LIMB) + lo) % q  # (hi mod q) * 2^20 < 2^60
    return total.astype(np.uint64)


def encode_norm(params: PineParams, gradient: np.ndarray) -> np.ndarray:
    """The ``v`` and ``u`` bits of the squared norm (refuses a norm above the bound)."""
    F = params.field
    sq = F.dot(gradient, gradient)
    v, u = sq, (params.sq_norm_bound - sq) % F.modulus
    nb = params.num_bits_for_sq_norm
    if v >> nb or u >> nb:
        raise EncodingError("the gradient's L2 norm exceeds l2_norm_bound")
    return np.concatenate([F.encode_into_bit_vector(v, nb), F.encode_into_bit_vector(u, nb)])


def encode_wraparound(params: PineParams, wr_results: np.ndarray) -> np.ndarray:
    """Per check: the ``w`` bits of ``v_k = result + wr_check_bound - 1`` and the success bit.

    The first ``num_wr_successes`` checks in range get ``g = 1``; checks out of range get
    ``g = 0`` and all-zero ``v`` bits. Raises :class:`WraparoundRetry` when too few pass.
    """
    F = params.field
    q = F.modulus
    nw = params.num_bits_for_wr_check
    wrb = params.wr_check_bound
    rows = np.zeros((params.num_wr_checks, nw + 1), dtype=np.int64)
    passed = 0
    for k, result in enumerate(F.to_ints(wr_results)):
        v = (result + wrb - 1) % q
        if v <= 2 * wrb - 1:
            rows[k, :nw] = [(v >> i) & 1 for i in range(nw)]
            if passed < params.num_wr_successes:
                rows[k, nw] = 1
                passed += 1
    if passed < params.num_wr_successes:
        raise WraparoundRetry(
            f"{passed} of {params.num_wr_checks} wraparound checks passed, {params.num_wr_successes} needed; shard again with fresh randomness"
        )
    return F.vec(rows.reshape(-1).tolist())


# ---------------------------------------------------------------------------- circuits
def _parallel_sum_table(F: PrimeField, flat: np.ndarray, arity: int) -> np.ndarray:
    """Zero-pad ``flat`` to whole calls; column ``k`` is call ``k``'s inputs."""
    calls = _chunks(len(flat), arity)
    padded = F.zeros(calls * arity)
    padded[: len(flat)] = flat
    return padded.reshape(calls, arity).T


def _table_rows(F: PrimeField, flat: np.ndarray, arity: int) -> np.ndarray:
    """:func:`_parallel_sum_table` of each row of ``flat`` (``[k, m]`` -> ``[k, arity, calls]``)."""
    k, m = flat.shape
    calls = _chunks(m, arity)
    padded = F.zeros(k * calls * arity).reshape(k, calls * arity)
    padded[:, :m] = flat
    return padded.reshape(k, calls, arity).transpose(0, 2, 1)


class PineNormEqualityCircuit(Circuit):
    """``sq_norm_v - sum_i x_i^2`` with gadget ``ParallelSum(PolyEval([0, 0, 1]), chunk)``."""

    def __init__(self, params: PineParams) -> None:
        self.params = params
        self.field = params.field
        chunk = params.chunk_length_norm_equality
        self.gadgets = (ParallelSum(PolyEval((0, 0, 1)), chunk),)
        self.gadget_calls = (_chunks(params.dimension, chunk),)
        self.meas_len = params.flp_meas_len
        self.joint_rand_len = 0

    def gadget_inputs(self, meas, joint_rand, num_shares):
        return [_parallel_sum_table(self.field, meas[: self.params.dimension], self.gadgets[0].arity)]

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):
        F = self.field
        v = F.decode_from_bit_vector(self.params.unpack(meas)["sq_norm_v"])
        return F.vec([v - int(F.sum(gadget_outputs[0]))])


class PineValidCircuit(Circuit):
    """Bit, norm-range, wraparound and success-count checks; gadget ``ParallelSum(Mul, chunk)``.

    Joint randomness ``[r_bit, r_wr, r_final]``. Constants are scaled by ``1/num_shares``
    so that each share's output sums to the circuit output.
    """

    def __init__(self, params: PineParams) -> None:
        self.params = params
        self.field = params.field
        chunk = params.chunk_length
        self.gadgets = (ParallelSum(Mul(), chunk),)
        self.gadget_calls = (_chunks(params.bit_checked_len, chunk) + _chunks(params.num_wr_checks, chunk),)
        self.meas_len = params.flp_meas_len
        self.joint_rand_len = 3

    def _wr_terms(self, parts, num_shares):
        """Per check: ``result - (v - (wr_check_bound - 1)/num_shares)`` (before ``r_wr^k``)."""
        F = self.field
        p = self.params
        shift = (p.wr_check_bound - 1) * F.inv(num_shares) % F.modulus
        weights = F.vec(1 << i for i in range(p.num_bits_for_wr_check))
        v = np.asarray(F.sum(F.mul(parts["wr_v"], weights), axis=1), dtype=F.dtype)
        return F.sub(parts["wr_results"], F.sub(v, shift))

    def gadget_inputs(self, meas, joint_rand, num_shares):
        F = self.field
        p = self.params
        r_bit, r_wr = int(joint_rand[0]), int(joint_rand[1])
        parts = p.unpack(meas)
        shares_inv = F.inv(num_shares)
        bits = parts["bit_checked"]
        bit_pairs = np.stack([F.mul(F.powers(r_bit, len(bits)), bits), F.sub(bits, shares_inv)], axis=1)
        wr_pairs = np.stack(
            [F.mul(F.powers(r_wr, p.num_wr_checks), self._wr_terms(parts, num_shares)), parts["wr_g"]],
            axis=1,
        )
        arity = self.gadgets[0].arity
        table = np.concatenate(
            [
                _parallel_sum_table(F, bit_pairs.reshape(-1).astype(F.dtype), arity),
                _parallel_sum_table(F, wr_pairs.reshape(-1).astype(F.dtype), arity),
            ],
            axis=1,
        )
        return [table]

    def gadget_inputs_many(self, meas, joint_rands, num_shares):
        """:meth:`gadget_inputs` for ``k`` joint randomnesses at once (``[k, arity, calls]``)."""
        F = self.field
        p = self.params
        k = joint_rands.shape[0]
        parts = p.unpack(meas)
        shares_inv = F.inv(num_shares)
        bits = parts["bit_checked"]
        r_bit = F.powers_rows([int(r) for r in joint_rands[:, 0]], len(bits))
        r_wr = F.powers_rows([int(r) for r in joint_rands[:, 1]], p.num_wr_checks)
        bit_pairs = np.empty((k, len(bits), 2), dtype=F.dtype)
        bit_pairs[:, :, 0] = F.mul(r_bit, bits)
        bit_pairs[:, :, 1] = F.sub(bits, shares_inv)
        wr_pairs = np.empty((k, p.num_wr_checks, 2), dtype=F.dtype)
        wr_pairs[:, :, 0] = F.mul(r_wr, self._wr_terms(parts, num_shares))
        wr_pairs[:, :, 1] = parts["wr_g"]
        arity = self.gadgets[0].arity
        return [np.concatenate([_table_rows(F, bit_pairs.reshape(k, -1), arity), _table_rows(F, wr_pairs.reshape(k, -1), arity)], axis=2)]

    def combine_many(self, meas, joint_rands, num_shares, gadget_outputs):
        F = self.field
        q = F.modulus
        p = self.params
        parts = p.unpack(meas)
        shares_inv = F.inv(num_shares)
        calls_bits = _chunks(p.bit_checked_len, p.chunk_length)
        outs = gadget_outputs[0]
        bit_checks = F.sum(outs[:, :calls_bits], axis=1)
        wr_checks = F.sum(outs[:, calls_bits:], axis=1)
        range_check = (F.decode_from_bit_vector(parts["sq_norm_v"]) + F.decode_from_bit_vector(parts["sq_norm_u"]) - p.sq_norm_bound * shares_inv) % q
        count_check = (int(F.sum(parts["wr_g"])) - p.num_wr_successes * shares_inv) % q
        rows = []
        for r, b, w in zip(joint_rands[:, 2], bit_checks, wr_checks):
            r = int(r)
            rows.append((int(b) + r * range_check + pow(r, 2, q) * int(w) + pow(r, 3, q) * count_check) % q)
        return F.vec(rows).reshape(-1, 1)

    def combine(self, meas, joint_rand, num_shares, gadget_outputs):
        F = self.field
        q = F.modulus
        p = self.params
        r_final = int(joint_rand[2])
        parts = p.unpack(meas)
        shares_inv = F.inv(num_shares)
        calls_bits = _chunks(p.bit_checked_len, p.chunk_length)
        outs = gadget_outputs[0]
        bit_check = int(F.sum(outs[:calls_bits]))
        wr_check = int(F.sum(outs[calls_bits:]))
        range_check = (F.decode_from_bit_vector(parts["sq_norm_v"]) + F.decode_from_bit_vector(parts["sq_norm_u"]) - p.sq_norm_bound * shares_inv) % q
        count_check = (int(F.sum(parts["wr_g"])) - p.num_wr_successes * shares_inv) % q
        result = (bit_check + r_final * range_check + pow(r_final, 2, q) * wr_check + pow(r_final, 3, q) * count_check) % q
        return F.vec([result])
