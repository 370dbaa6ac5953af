"""PINE's norm-equality proof is never amplified: its soundness error is 2^-23 .. 2^-32 per report.

The claim under test (``fedcrypt.verify`` threat model, ``flp`` module docstring): "no client can
push a vector whose encoded L2 norm exceeds ``B`` into the sum except with the proofs'
soundness error"; "a small field needs several proofs (PINE's ``num_proofs``)".

Only the *main* circuit gets ``num_proofs`` proofs (4 in Field40, 5 in Field32). The circuit
that actually binds the claimed squared norm to the gradient,
``PineNormEqualityCircuit`` (``sq_norm_v - sum_i x_i^2`` through ``ParallelSum(PolyEval(x^2),
c)`` called ``M = ceil(d / c)`` times), is proved once in every variant
(``PineVariant.num_proofs_norm_equality`` defaults to 1 and ``VerifyConfig`` has no way to
raise it). Its only randomness is the query point ``t`` (not grindable, but one shot per
report): a cheating client sends the honest gadget polynomial plus a difference polynomial of
degree ``2 (P - 1)`` (``P = next_power_of_2(M + 1)``) that changes one gadget output (so
``sq_norm_v`` equals the value of honest bits ``<= B^2`` while ``sum x_i^2`` is larger) and
vanishes on the other ``M - 1`` output points; it keeps ``2 (P - 1) - (M - 1) >= M + 1`` free
roots, and the aggregators accept iff ``t`` hits one of them. For ``d = 10^5`` that is
about ``2^-24`` (Pine32) and ``2^-32`` (Pine40, the default) per report (``2^-23`` / ``2^-31`` at ``d = 10^6``) -- against
``2^-107`` / ``2^-116`` for the amplified main circuit. A client who submits ``2^24`` reports
(a botnet over a few rounds) gets a report whose gradient never satisfied the norm equality
into the sum; the wraparound checks then still let through a sparse vector of L1 norm up to
``wr_check_bound`` (``16 B`` at the default alpha), i.e. an L2 norm up to ``16 B``, which also
breaks the DP sensitivity the round reports (``l2_sensitivity = B``).

Secure behaviour asserted: the norm-equality proof's soundness error (after its proofs'
amplification) is at most ``2^-64`` per report, for the library's own variants at a realistic
dimension.

Fixed (a0cbed8): the norm-equality proof is tested at ``s = norm_equality_queries`` independent
points (``VerifyConfig.soundness_bits``, default 64), so the cheat above must place a root at
every point: ``(free_roots / q)^s`` with ``P = next_power_of_2(M + s)``. A second review found
the multi-query FLP sound and zero-knowledge for this circuit (exhaustive search over a toy
field reaches the bound exactly).
"""

from __future__ import annotations

import math

import pytest

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.verify import VerifyConfig
from fedcrypt.verify.field import next_power_of_2

_KEY = X25519KeyPair.generate().public_bytes


def _norm_equality_cheat_log2(config: VerifyConfig) -> float:
    """log2 of the probability that a cheating norm-equality proof is accepted (one report)."""
    p = config.params
    q = p.field.modulus
    calls = -(-p.dimension // p.chunk_length_norm_equality)
    points = p.norm_equality_queries
    big_p = next_power_of_2(calls + points)
    free_roots = 2 * (big_p - 1) - (calls - 1)  # roots a cheater can place, one output changed
    per_proof = (free_roots / q) ** points  # every tested point must be one of them
    return p.num_proofs_norm_equality * math.log2(per_proof)


@pytest.mark.parametrize("variant", ["Pine32HmacSha256Aes128", "Pine40HmacSha256Aes128"])
def test_verify_norm_equality_proof_soundness_is_amplified(variant: str) -> None:
    config = VerifyConfig.for_dimension(100_000, 1.0, _KEY, variant=variant)
    assert config.params.num_proofs >= 2  # the main circuit *is* amplified
    log2_err = _norm_equality_cheat_log2(config)
    assert log2_err <= config.norm_equality_error_log2 + 1e-9  # the cheat stays within the stated bound
    assert log2_err <= -64, (
        f"{variant}: a cheating norm-equality proof is accepted with probability 2^{log2_err:.1f} per report "
        f"({config.params.num_proofs_norm_equality} proof(s); the main circuit has {config.params.num_proofs})"
    )
