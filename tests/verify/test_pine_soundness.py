"""Valid reports are accepted; invalid ones (and tampered shares, proofs, seeds) are rejected."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import EncodingError, MalformedMessageError, VerificationError
from fedcrypt.verify import vdaf as vdaf_module
from fedcrypt.verify.field import Field40, Field64
from fedcrypt.verify.flp import Flp, Mul, ParallelSum, PolyEval
from fedcrypt.verify.pine import PineNormEqualityCircuit, PineParams, PineValidCircuit, WraparoundRetry
from fedcrypt.verify.vdaf import InputShare, PineVdaf, PrepMessage, PrepShare, PublicShare

DIM = 12
BOUND = 1.0
FRAC = 7


def make_vdaf(variant="Pine40HmacSha256Aes128", **kw) -> PineVdaf:
    kw.setdefault("dimension", DIM)
    return PineVdaf.from_variant(
        variant,
        l2_norm_bound=int(BOUND * 2**FRAC),
        num_frac_bits=FRAC,
        chunk_length=40,
        chunk_length_norm_equality=4,
        **kw,
    )


VDAF = make_vdaf()
VERIFY_KEY = bytes(range(32))


def run(vdaf: PineVdaf, nonce, public, shares, tamper=None):
    """Both aggregators from bytes; ``tamper(stage, obj)`` may replace a message."""
    tamper = tamper or (lambda stage, obj: obj)
    public = PublicShare.from_bytes(tamper("public", public).to_bytes(), vdaf)
    states, prep_shares = [], []
    for agg_id, share in enumerate(shares):
        share = InputShare.from_bytes(tamper(("input", agg_id), share).to_bytes(vdaf), vdaf, agg_id)
        state, prep_share = vdaf.prep_init(VERIFY_KEY, agg_id, nonce, public, share)
        states.append(state)
        prep_shares.append(PrepShare.from_bytes(tamper(("prep", agg_id), prep_share).to_bytes(vdaf), vdaf))
    message = PrepMessage.from_bytes(vdaf.prep_shares_to_prep(prep_shares).to_bytes(), vdaf)
    return [vdaf.prep_next(s, tamper("message", message)) for s in states]


def gradients():
    """Float gradients whose fixed-point encoding has L2 norm <= the bound (scaled toward 0)."""
    bound = int(BOUND * 2**FRAC)

    def clip(ints):
        v = np.asarray(ints, dtype=np.int64)
        n = math.sqrt(float(np.sum(v * v)))
        if n > bound:
            v = np.trunc(v * (bound / n)).astype(np.int64)
        return v / 2**FRAC

    return st.lists(st.integers(-bound, bound), min_size=DIM, max_size=DIM).map(clip)


@settings(max_examples=15, deadline=None)
@given(x=gradients())
def test_valid_gradient_accepted_and_summed(x):
    nonce, public, shares = VDAF.shard_random(x)
    outs = run(VDAF, nonce, public, shares)
    got = VDAF.unshard(outs)
    assert np.array_equal(got, np.rint(np.asarray(x) * 2**FRAC) / 2**FRAC)


def test_norm_just_above_bound_is_refused_by_the_client():
    x = np.zeros(DIM)
    x[0] = BOUND * 1.01
    with pytest.raises(EncodingError):
        VDAF.shard_random(x)


def _wrapping_gradient(vdaf: PineVdaf) -> np.ndarray:
    """Integers whose squared norm is q + r (0 <= r <= B^2): it wraps into range mod q."""
    q = vdaf.params.field.modulus
    x0 = math.isqrt(q)
    e = q - x0 * x0
    x1 = math.isqrt(e)
    if x1 * x1 < e:
        x1 += 1
    assert 0 <= x0 * x0 + x1 * x1 - q <= vdaf.params.sq_norm_bound
    v = np.zeros(vdaf.params.dimension)
    v[0], v[1] = x0 / 2**FRAC, x1 / 2**FRAC
    return v


def test_wraparound_gradient_fails_the_honest_wraparound_checks():
    with pytest.raises(WraparoundRetry):
        VDAF.shard(_wrapping_gradient(VDAF), os.urandom(16), os.urandom(VDAF.rand_size))


@pytest.mark.parametrize("trial", range(5))
def test_wraparound_gradient_with_forged_success_bits_rejected(monkeypatch, trial):
    """A client that claims every wraparound check passed is caught by the quadratic check."""
    p = VDAF.params
    F = p.field

    def forged(params, wr_results):
        nw = params.num_bits_for_wr_check
        rows = np.zeros((params.num_wr_checks, nw + 1), dtype=np.int64)
        rows[:, nw] = 1  # claim success everywhere, v bits 0
        return F.vec(rows.reshape(-1).tolist())

    monkeypatch.setattr(vdaf_module, "encode_wraparound", forged)
    nonce = os.urandom(16)
    public, shares = VDAF.shard(_wrapping_gradient(VDAF), nonce, os.urandom(VDAF.rand_size))
    with pytest.raises(VerificationError):
        run(VDAF, nonce, public, shares)


def _flip_leader_meas(index, delta=1):
    def tamper(stage, obj):
        if stage == ("input", 0):
            F = VDAF.params.field
            meas = obj.meas_share.copy()
            meas[index] = (int(meas[index]) + delta) % F.modulus
            return InputShare(0, meas, obj.proofs_share, obj.wr_blind, obj.vf_blind)
        return obj

    return tamper


@pytest.mark.parametrize(
    "index",
    [0, DIM - 1, DIM, DIM + VDAF.params.num_bits_for_sq_norm, VDAF.params.meas_len - 1],
    ids=["gradient0", "gradient_last", "norm_v_bit", "norm_u_bit", "last_success_bit"],
)
def test_tampered_measurement_share_rejected(index):
    nonce, public, shares = VDAF.shard_random(np.full(DIM, 0.1))
    with pytest.raises(VerificationError):
        run(VDAF, nonce, public, shares, _flip_leader_meas(index))


@pytest.mark.parametrize("position", [0, 7, -1])
def test_tampered_proof_share_rejected(position):
    def tamper(stage, obj):
        if stage == ("input", 0):
            proofs = obj.proofs_share.copy()
            proofs[position] = (int(proofs[position]) + 1) % VDAF.params.field.modulus
            return InputShare(0, obj.meas_share, proofs, obj.wr_blind, obj.vf_blind)
        return obj

    nonce, public, shares = VDAF.shard_random(np.full(DIM, 0.1))
    with pytest.raises(VerificationError):
        run(VDAF, nonce, public, shares, tamper)


def test_lying_joint_randomness_part_rejected():
    def tamper(stage, obj):
        if stage == "public":
            return PublicShare(obj.wr_parts, (bytes(32),) + obj.vf_parts[1:])
        return obj

    nonce, public, shares = VDAF.shard_random(np.full(DIM, 0.1))
    with pytest.raises(VerificationError):
        run(VDAF, nonce, public, shares, tamper)


def test_helper_lying_about_its_verifier_share_rejected():
    def tamper(stage, obj):
        if stage == ("prep", 1):
            v = obj.verifiers_share.copy()
            v[0] = (int(v[0]) + 1) % VDAF.params.field.modulus
            return PrepShare(v, obj.wr_part, obj.vf_part)
        return obj

    nonce, public, shares = VDAF.shard_random(np.full(DIM, 0.1))
    with pytest.raises(VerificationError):
        run(VDAF, nonce, public, shares, tamper)


def test_wrong_prep_message_rejected():
    def tamper(stage, obj):
        if stage == "message":
            return PrepMessage(obj.wr_seed, bytes(32))
        return obj

    nonce, public, shares = VDAF.shard_random(np.full(DIM, 0.1))
    with pytest.raises(VerificationError):
        run(VDAF, nonce, public, shares, tamper)


def test_strict_decoders():
    nonce, public, shares = VDAF.shard_random(np.full(DIM, 0.1))
    for blob, decode in [
        (public.to_bytes(), lambda b: PublicShare.from_bytes(b, VDAF)),
        (shares[0].to_bytes(VDAF), lambda b: InputShare.from_bytes(b, VDAF, 0)),
        (shares[1].to_bytes(VDAF), lambda b: InputShare.from_bytes(b, VDAF, 1)),
    ]:
        decode(blob)
        for bad in (blob[:-1], blob + b"\x00", b""):
            with pytest.raises(MalformedMessageError):
                decode(bad)
    leader = bytearray(shares[0].to_bytes(VDAF))
    leader[:5] = b"\xff" * 5  # first element >= q
    with pytest.raises(MalformedMessageError):
        InputShare.from_bytes(bytes(leader), VDAF, 0)


def test_secrets_never_in_repr():
    nonce, public, shares = VDAF.shard_random(np.full(DIM, 0.1))
    state, prep_share = VDAF.prep_init(VERIFY_KEY, 1, nonce, public, shares[1])
    for obj in (*shares, state, prep_share):
        text = repr(obj) + str(obj)
        for secret in (shares[1].meas_share, shares[1].proofs_share, shares[1].wr_blind, shares[1].vf_blind):
            assert secret.hex()[:16] not in text


# ---------------------------------------------------------------------------- the FLP alone
@pytest.mark.parametrize("queries", [1, 3])
@pytest.mark.parametrize("F", [Field40, Field64], ids=lambda f: f.name)
@pytest.mark.parametrize("gadget", [ParallelSum(Mul(), 3), ParallelSum(PolyEval((0, 0, 1)), 2)], ids=["mul", "square"])
def test_flp_accepts_zero_circuit_and_rejects_nonzero(F, gadget, queries):
    from fedcrypt.verify.flp import Circuit

    class SumOfGadgets(Circuit):
        """Output sum(gadget outputs) - meas[-1]: valid iff the last entry is that sum."""

        def __init__(self):
            self.field = F
            self.gadgets = (gadget,)
            self.gadget_calls = (3,)
            self.meas_len = gadget.arity * 3 + 1
            self.joint_rand_len = 0

        def gadget_inputs(self, meas, joint_rand, num_shares):
            return [meas[:-1].reshape(3, gadget.arity).T.copy()]

        def combine(self, meas, joint_rand, num_shares, outs):
            return F.vec([int(F.sum(outs[0])) - int(meas[-1])])

    flp = Flp(SumOfGadgets(), queries=queries)
    inputs = F.vec(range(1, gadget.arity * 3 + 1))
    table = inputs.reshape(3, gadget.arity).T
    total = int(F.sum(gadget.eval(F, table)))
    for claimed, expect in ((total, True), (total + 1, False)):
        meas = np.concatenate([inputs, F.vec([claimed])]).astype(F.dtype)
        prove_rand = F.vec(int.from_bytes(os.urandom(8), "little") for _ in range(flp.prove_rand_len))
        proof = flp.prove(meas, prove_rand, F.zeros(0))
        shares_m = [F.vec(int.from_bytes(os.urandom(16), "little") for _ in meas)]
        shares_m.append(F.sub(meas, shares_m[0]))
        shares_p = [F.vec(int.from_bytes(os.urandom(16), "little") for _ in proof)]
        shares_p.append(F.sub(proof, shares_p[0]))
        query_rand = F.vec([12345 + 7 * i for i in range(queries)])
        verifier = F.add(*[flp.query(m, p, query_rand, F.zeros(0), 2) for m, p in zip(shares_m, shares_p)])
        assert flp.decide(verifier) is expect


def test_params_refuse_infeasible_bounds():
    with pytest.raises(ValueError):
        PineParams(Field40, 2**20, 7, 10, 40, 4, 4, 1)  # B^2 >= q
    with pytest.raises(ValueError):
        PineParams(Field40, 128, 7, 0, 40, 4, 4, 1)
    with pytest.raises(ValueError):
        PineParams(Field40, 128, 7, 10, 40, 4, 0, 1)
    assert PineValidCircuit(PineParams(Field40, 128, 7, 10, 40, 4, 4, 1)).joint_rand_len == 3


def _poly_with_roots(F, roots):
    coeffs = [1]
    for r in roots:  # multiply by (x - r)
        shifted = [0] + coeffs
        scaled = [(-r * c) % F.modulus for c in coeffs] + [0]
        coeffs = [(a + b) % F.modulus for a, b in zip(shifted, scaled)]
    return coeffs


@pytest.mark.parametrize("queries", [1, 2])
def test_a_gadget_polynomial_wrong_off_the_tested_points_needs_every_point_to_hit_a_root(queries):
    """A cheating proof adds D(x) = prod_j (x - alpha^(s+j)) * (x - t_1) to the gadget
    polynomial: the outputs the circuit reads are unchanged and the test at t_1 passes. One
    test point accepts it; a second, independent point rejects it (attacker review 4's
    norm-equality cheat, in miniature)."""
    from fedcrypt.verify.flp import Circuit

    F = Field40
    gadget = ParallelSum(Mul(), 3)

    class SumOfGadgets(Circuit):
        def __init__(self):
            self.field = F
            self.gadgets = (gadget,)
            self.gadget_calls = (3,)
            self.meas_len = gadget.arity * 3 + 1
            self.joint_rand_len = 0

        def gadget_inputs(self, meas, joint_rand, num_shares):
            return [meas[:-1].reshape(3, gadget.arity).T.copy()]

        def combine(self, meas, joint_rand, num_shares, outs):
            return F.vec([int(F.sum(outs[0])) - int(meas[-1])])

    flp = Flp(SumOfGadgets(), queries=queries)
    inputs = F.vec(range(1, gadget.arity * 3 + 1))
    total = int(F.sum(gadget.eval(F, inputs.reshape(3, gadget.arity).T)))
    meas = np.concatenate([inputs, F.vec([total])]).astype(F.dtype)
    proof = flp.prove(meas, F.vec(range(7, 7 + flp.prove_rand_len)), F.zeros(0))
    p = flp._domains[0]
    alpha = F.root(p)
    t = [98765, 4321][:queries]
    d_coeffs = _poly_with_roots(F, [pow(alpha, queries + j, F.modulus) for j in range(3)] + [t[0]])
    start = queries * gadget.arity
    forged = proof.copy()
    forged[start : start + len(d_coeffs)] = F.add(forged[start : start + len(d_coeffs)], F.vec(d_coeffs))
    assert flp.decide(flp.query(meas, proof, F.vec(t), F.zeros(0), 1))
    assert flp.decide(flp.query(meas, forged, F.vec(t), F.zeros(0), 1)) is (queries == 1)
    assert flp.soundness_error() == pytest.approx((2 * (p - 1) / F.modulus) ** queries)


def test_several_queries_are_refused_where_they_would_not_amplify() -> None:
    """``Flp(queries > 1)`` amplifies only the gadget tests: PINE's main circuit (joint
    randomness the client can grind, several outputs) keeps one query; its norm-equality
    circuit (neither) may use several (attacker review 4's FLP reading)."""
    params = VDAF.params
    with pytest.raises(ValueError, match="only circuits without joint randomness"):
        Flp(PineValidCircuit(params), queries=3)
    assert Flp(PineValidCircuit(params)).queries == 1
    assert Flp(PineNormEqualityCircuit(params), queries=3).soundness_error() < Flp(PineNormEqualityCircuit(params)).soundness_error()
