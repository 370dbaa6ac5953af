"""Attacks on verified aggregation (PINE, :mod:`fedcrypt.verify`) and the honest control.

Each attack plays one malicious party against honest aggregators (a real
:class:`~fedcrypt.verify.Leader` and :class:`~fedcrypt.verify.Helper`, every message through
its bytes) and reports, per trial, what the leader did with the attacker's report:

* ``ACCEPTED`` -- the leader put it in the sum: **the attack succeeded**;
* ``REJECTED`` -- the report was verified and failed (a proof, the joint randomness, or the
  helper's status: a seal that does not open, a replay);
* ``REFUSED`` -- the leader refused the bytes before verification (malformed, a replay of
  a client or report id), with a typed :class:`~fedcrypt.errors.FedcryptError`.

The attacks (:data:`ATTACKS`), each drawing one of its strategies per trial:

* ``norm-1.01B`` -- a client whose encoded vector has L2 norm about ``1.01 B`` lies about
  its squared norm (claims ``B^2``; or the field value of its squared norm, truncated; or
  random bits);
* ``scaled-1000x`` -- a vector of norm ``B`` scaled by 1000 (its squared norm wraps the
  field), with lying norm bits and wraparound checks claimed as passed;
* ``field-wraparound`` -- a vector crafted so that its squared norm is ``q + r`` with
  ``0 <= r <= B^2``: the norm check passes in the field, the wraparound checks must catch
  it; the client claims every check passed, or drops the failing ones, or grinds fresh
  randomness first ([ROCT23] Section 3);
* ``malformed-proof`` -- an honest report with its leader proof share changed (one element,
  all elements, an element ``>= q``, truncated), its measurement share changed, or its
  sealed helper share damaged;
* ``replayed-proof`` -- a report sent twice, a report of an earlier round replayed, another
  report's proof share grafted on, a report relabelled as another client's, a public share
  swapped;
* ``lying-helper`` -- the helper changes its verifier share (one element, zeroed, random,
  negated) or its joint-randomness part, on honest reports and on norm-1.01B reports.

:func:`run_attack` runs trials and returns an :class:`AttackTally`; :func:`run_honest` runs
honest clients with vectors of norm at most the bound (some exactly at it) and counts how
many were *not* accepted. fedcrypt's acceptance figures (issue #20): no attack accepted in
``10^4`` trials each, no honest report rejected in ``10^5``: ``benchmarks/verify.py
--attacks`` runs them; the default test suite runs small counts.

The attacker's choices (vectors, strategies) come from a numpy generator: they are not
secrets. Every secret of the honest parties comes from ``os.urandom`` inside
:mod:`fedcrypt.verify`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import FedcryptError
from fedcrypt.verify import (
    HELPER,
    Helper,
    Leader,
    MeasurementEncoder,
    PrepareResponse,
    PrepareResult,
    Report,
    Status,
    VerifyConfig,
    make_report,
)
from fedcrypt.verify.encoding import encode_vector, to_field
from fedcrypt.verify.pine import encode_norm, encode_wraparound
from fedcrypt.verify.vdaf import InputShare, PrepShare

__all__ = [
    "Outcome",
    "AttackTally",
    "AttackEnv",
    "LyingEncoder",
    "ATTACKS",
    "run_attack",
    "run_honest",
]


class Outcome(enum.Enum):
    """What the leader did with the attacker's report."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REFUSED = "refused"


@dataclass
class AttackTally:
    """Counts of one attack's trials.

    Attributes:
        name: the attack.
        trials: trials run.
        outcomes: outcome -> count.
        reasons: ``"strategy: outcome: why"`` -> count (the first line of the reason).
    """

    name: str
    trials: int = 0
    outcomes: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return self.outcomes[Outcome.ACCEPTED]

    def add(self, strategy: str, outcome: Outcome, why: str) -> None:
        self.trials += 1
        self.outcomes[outcome] += 1
        self.reasons[f"{strategy}: {outcome.value}: {why.split(' [')[0][:90]}"] += 1

    def summary(self) -> str:
        parts = ", ".join(f"{o.value} {self.outcomes[o]}" for o in Outcome)
        return f"{self.name}: {self.trials} trials: {parts}"


@dataclass
class AttackEnv:
    """The honest side of every trial: a config with ``min_reports=1``, the aggregators'
    verification key and the helper's key pair.

    Args:
        dimension: vector length.
        l2_norm_bound: the float bound.
        config_kwargs: more :class:`~fedcrypt.verify.VerifyConfig` arguments.
    """

    dimension: int = 8
    l2_norm_bound: float = 1.0
    config_kwargs: dict = field(default_factory=dict)
    config: VerifyConfig = field(init=False, repr=False)
    verify_key: bytes = field(init=False, repr=False)
    helper_key: X25519KeyPair = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.helper_key = X25519KeyPair.generate()
        self.verify_key = os.urandom(32)
        kwargs = {"min_reports": 1, **self.config_kwargs}
        self.config = VerifyConfig.for_dimension(self.dimension, self.l2_norm_bound, self.helper_key.public_bytes, **kwargs)

    @property
    def bound(self) -> int:
        return self.config.bound

    def honest_ints(self, rng: np.random.Generator, norm_fraction: float = 0.5) -> np.ndarray:
        """An encoded vector of L2 norm about ``norm_fraction * B`` (at most ``B``)."""
        c = self.config
        x = rng.normal(size=c.dimension)
        x *= norm_fraction * c.l2_norm_bound / max(float(np.linalg.norm(x)), 1e-300)
        return encode_vector(x, bound=c.l2_norm_bound, frac_bits=c.params.num_frac_bits, bound_int=c.bound)

    def report(self, round_id: int, client: int, ints: np.ndarray, encoder: MeasurementEncoder | None = None) -> Report:
        return make_report(self.config, round_id, client, to_field(self.config.params.field, ints), encoder=encoder)

    def judge(
        self,
        reports: list[Report | bytes],
        target: int,
        *,
        round_id: int = 1,
        lie: Callable[[PrepareResponse, VerifyConfig], PrepareResponse] | None = None,
    ) -> tuple[Outcome, str]:
        """Run one round over ``reports`` (clients ``0 .. len - 1``); the outcome of the
        report at position ``target`` (the attacker's)."""
        c = self.config
        leader = Leader(c, self.verify_key, range(len(reports)), round_id=round_id)
        # every trial is a fresh deployment: no round of this helper was released before
        helper = Helper(c, self.verify_key, self.helper_key, round_id=round_id, last_released_round=None)
        leader.begin()
        refused: dict[int, str] = {}
        for i, report in enumerate(reports):
            try:
                leader.receive(report if isinstance(report, bytes) else report.to_bytes())
            except FedcryptError as exc:
                refused[i] = f"{type(exc).__name__}: {exc}"
        if target in refused:
            return Outcome.REFUSED, refused[target]
        try:
            out = leader.end_stage()
        except FedcryptError as exc:  # nothing left to verify
            return Outcome.REJECTED, leader.report.rejected.get(target, f"{type(exc).__name__}: {exc}")
        response = helper.handle(out[HELPER].to_bytes())
        assert isinstance(response, PrepareResponse)  # the helper answers a PrepareRequest with its prep shares
        if lie is not None:
            response = lie(response, c)
        leader.receive(response.to_bytes())
        if target in leader.report.accepted:
            return Outcome.ACCEPTED, "in the sum"
        return Outcome.REJECTED, leader.report.rejected.get(target, "not accepted")


# ---------------------------------------------------------------------------- dishonest encoders
class LyingEncoder(MeasurementEncoder):
    """A client that builds its norm and wraparound bits as it likes.

    Args:
        norm: ``"honest"``, ``"claim-bound"`` (``v = B^2``, ``u = 0``), ``"field"`` (the
            field value of its squared norm and of ``B^2 - sq``, truncated to the bit width),
            or ``"random"``.
        wraparound: ``"honest"``, ``"claim-all"`` (every check claimed passed, value bits
            truncated), ``"drop-failed"`` (checks out of range marked failed), or
            ``"zero-bits"`` (every check claimed passed with value bits 0).
        rng: the attacker's randomness (for ``"random"``).
    """

    def __init__(self, norm: str = "honest", wraparound: str = "honest", rng: np.random.Generator | None = None) -> None:
        self.norm = norm
        self.wraparound = wraparound
        self.rng = rng or np.random.default_rng()

    def norm_bits(self, params, gradient):
        F = params.field
        nb = params.num_bits_for_sq_norm
        mask = (1 << nb) - 1
        if self.norm == "honest":
            return encode_norm(params, gradient)
        if self.norm == "claim-bound":
            v, u = params.sq_norm_bound, 0
        elif self.norm == "field":
            sq = F.dot(gradient, gradient)
            v, u = sq & mask, ((params.sq_norm_bound - sq) % F.modulus) & mask
        elif self.norm == "random":
            return F.vec(self.rng.integers(0, 2, size=2 * nb).tolist())
        else:
            raise ValueError(f"unknown norm strategy {self.norm!r}")
        return np.concatenate([F.encode_into_bit_vector(v & mask, nb), F.encode_into_bit_vector(u, nb)]).astype(F.dtype)

    def wraparound_bits(self, params, wr_results):
        F = params.field
        if self.wraparound == "honest":
            return encode_wraparound(params, wr_results)
        nw = params.num_bits_for_wr_check
        wrb = params.wr_check_bound
        rows = np.zeros((params.num_wr_checks, nw + 1), dtype=np.int64)
        for k, result in enumerate(F.to_ints(wr_results)):
            v = (result + wrb - 1) % F.modulus
            in_range = v <= 2 * wrb - 1
            if self.wraparound == "zero-bits":
                rows[k, nw] = 1
                continue
            rows[k, :nw] = [((v & ((1 << nw) - 1)) >> i) & 1 for i in range(nw)]
            if self.wraparound == "claim-all" or in_range:
                rows[k, nw] = 1
            elif self.wraparound != "drop-failed":
                raise ValueError(f"unknown wraparound strategy {self.wraparound!r}")
        return F.vec(rows.reshape(-1).tolist())


# ---------------------------------------------------------------------------- the attacks
def _over_norm_ints(env: AttackEnv, rng: np.random.Generator, factor: float) -> np.ndarray:
    x = rng.normal(size=env.dimension)
    ints = np.rint(x * (factor * env.bound / float(np.linalg.norm(x)))).astype(np.int64)
    while int(np.dot(ints, ints)) <= env.bound**2:  # rounding must not bring it back in
        ints[int(np.argmax(np.abs(ints)))] += 1 if ints[int(np.argmax(np.abs(ints)))] >= 0 else -1
    return ints


def _wrapping_ints(env: AttackEnv, rng: np.random.Generator) -> np.ndarray:
    """Integers with ``sum(v^2) = q + r``, ``0 <= r <= B^2``: wraps the field into range."""
    q = env.config.params.field.modulus
    d = env.dimension
    while True:
        x = rng.normal(size=d - 1) if d > 1 else np.zeros(0)
        scale = math.sqrt(q * rng.uniform(0.2, 0.9)) / max(float(np.linalg.norm(x)), 1e-300) if d > 1 else 0.0
        head = np.rint(x * scale).astype(np.int64)
        rest = q - int(np.dot(head, head))
        if rest <= 0:
            continue
        last = math.isqrt(rest)
        if last * last < rest:
            last += 1
        ints = np.concatenate([head, np.array([last * (1 if rng.random() < 0.5 else -1)], dtype=np.int64)])
        r = int(np.dot(ints, ints)) - q
        if 0 <= r <= env.bound**2:
            return ints


def _norm_attack(env: AttackEnv, rng: np.random.Generator, strategy: str) -> tuple[str, Outcome, str]:
    ints = _over_norm_ints(env, rng, 1.01)
    report = env.report(1, 0, ints, LyingEncoder(norm=strategy, rng=rng))
    return (strategy, *env.judge([report], 0))


def _scaled_attack(env: AttackEnv, rng: np.random.Generator, wr: str) -> tuple[str, Outcome, str]:
    norm = str(rng.choice(["claim-bound", "field"]))
    ints = env.honest_ints(rng, 1.0) * 1000
    report = env.report(1, 0, ints, LyingEncoder(norm=norm, wraparound=wr, rng=rng))
    return (f"{norm}/{wr}", *env.judge([report], 0))


def _wraparound_attack(env: AttackEnv, rng: np.random.Generator, strategy: str) -> tuple[str, Outcome, str]:
    ints = _wrapping_ints(env, rng)
    if strategy == "grind":  # honest wraparound bits with fresh randomness, 4 draws, then claim-all
        try:
            report = make_report(env.config, 1, 0, to_field(env.config.params.field, ints), max_tries=4)
        except FedcryptError:
            report = env.report(1, 0, ints, LyingEncoder(wraparound="claim-all"))
    else:
        report = env.report(1, 0, ints, LyingEncoder(wraparound=strategy, rng=rng))
    return (strategy, *env.judge([report], 0))


def _with_leader_share(env: AttackEnv, report: Report, share: InputShare) -> Report:
    return dataclasses.replace(report, leader_share=share.to_bytes(env.config.vdaf))


def _malformed_attack(env: AttackEnv, rng: np.random.Generator, strategy: str) -> tuple[str, Outcome, str]:
    c = env.config
    F = c.params.field
    report = env.report(1, 0, env.honest_ints(rng))
    share = report.decoded_leader_share(c)
    # the leader's (id 0) input share holds field vectors, never seeds
    assert isinstance(share.meas_share, np.ndarray) and isinstance(share.proofs_share, np.ndarray)
    blob: Report | bytes
    if strategy == "proof-delta":
        proofs = share.proofs_share.copy()
        i = int(rng.integers(len(proofs)))
        proofs[i] = (int(proofs[i]) + int(rng.integers(1, F.modulus))) % F.modulus
        blob = _with_leader_share(env, report, dataclasses.replace(share, proofs_share=proofs))
    elif strategy == "proof-random":
        proofs = F.vec(rng.integers(0, F.modulus, size=len(share.proofs_share)).tolist())
        blob = _with_leader_share(env, report, dataclasses.replace(share, proofs_share=proofs))
    elif strategy == "meas-delta":
        meas = share.meas_share.copy()
        i = int(rng.integers(len(meas)))
        meas[i] = (int(meas[i]) + int(rng.integers(1, F.modulus))) % F.modulus
        blob = _with_leader_share(env, report, dataclasses.replace(share, meas_share=meas))
    elif strategy == "out-of-field":
        raw = bytearray(report.to_bytes())
        start = len(raw) - 188 - 64 - F.encoded_size * (1 + int(rng.integers(len(share.proofs_share))))
        raw[start : start + F.encoded_size] = b"\xff" * F.encoded_size
        blob = bytes(raw)
    elif strategy == "truncated":
        blob = report.to_bytes()[: -int(rng.integers(1, 64))]
    else:
        sealed = bytearray(report.sealed_helper_share)
        sealed[int(rng.integers(len(sealed)))] ^= 1 << int(rng.integers(8))
        blob = dataclasses.replace(report, sealed_helper_share=bytes(sealed))
    return (strategy, *env.judge([blob], 0))


def _replay_attack(env: AttackEnv, rng: np.random.Generator, strategy: str) -> tuple[str, Outcome, str]:
    c = env.config
    a = env.report(1, 0, env.honest_ints(rng))
    if strategy == "same-report":
        return (strategy, *env.judge([a, a], 1))
    if strategy == "previous-round":
        old = env.report(0, 1, env.honest_ints(rng))
        return (strategy, *env.judge([a, dataclasses.replace(old, round_id=1)], 1))
    b = env.report(1, 1, env.honest_ints(rng))
    if strategy == "grafted-proof":
        share_b = b.decoded_leader_share(c)
        share_a = a.decoded_leader_share(c)
        forged = _with_leader_share(env, b, dataclasses.replace(share_b, proofs_share=share_a.proofs_share))
        return (strategy, *env.judge([a, forged], 1))
    if strategy == "relabelled":
        c2 = env.report(1, 2, env.honest_ints(rng))
        return (strategy, *env.judge([a, dataclasses.replace(c2, client=1)], 1))
    return (strategy, *env.judge([a, dataclasses.replace(b, public_share=a.public_share)], 1))


def _lie(strategy: str, rng: np.random.Generator) -> Callable[[PrepareResponse, VerifyConfig], PrepareResponse]:
    def lie(response: PrepareResponse, config: VerifyConfig) -> PrepareResponse:
        F = config.params.field
        vdaf = config.vdaf
        results = []
        for r in response.results:
            if r.status is not Status.OK:
                results.append(r)
                continue
            share = r.decoded_prep_share(config)
            v = share.verifiers_share.copy()
            part = share.vf_part
            if strategy == "delta":
                i = int(rng.integers(len(v)))
                v[i] = (int(v[i]) + int(rng.integers(1, F.modulus))) % F.modulus
            elif strategy == "zero":
                v = F.zeros(len(v))
            elif strategy == "random":
                v = F.vec(rng.integers(0, F.modulus, size=len(v)).tolist())
            elif strategy == "negate":
                v = F.neg(v)
            else:  # a lying joint-randomness part
                part = bytes(rng.integers(0, 256, size=len(part), dtype=np.uint8))
            forged = PrepShare(v, share.wr_part, part).to_bytes(vdaf)
            results.append(PrepareResult(r.client, r.report_id, Status.OK, forged))
        return dataclasses.replace(response, results=tuple(results))

    return lie


def _lying_helper_attack(env: AttackEnv, rng: np.random.Generator, strategy: str) -> tuple[str, Outcome, str]:
    if rng.random() < 0.5:
        kind, report = "honest", env.report(1, 0, env.honest_ints(rng))
    else:
        ints = _over_norm_ints(env, rng, 1.01)
        kind, report = "over-norm", env.report(1, 0, ints, LyingEncoder(norm="claim-bound"))
    return (f"{kind}/{strategy}", *env.judge([report], 0, lie=_lie(strategy, rng)))


Trial = Callable[[AttackEnv, np.random.Generator, str], "tuple[str, Outcome, str]"]

#: attack name -> (one trial: runs one round with the strategy given, returns what happened;
#: the attack's strategies)
ATTACKS: dict[str, tuple[Trial, tuple[str, ...]]] = {
    "norm-1.01B": (_norm_attack, ("claim-bound", "field", "random")),
    "scaled-1000x": (_scaled_attack, ("claim-all", "zero-bits", "drop-failed")),
    "field-wraparound": (_wraparound_attack, ("claim-all", "drop-failed", "zero-bits", "grind")),
    "malformed-proof": (_malformed_attack, ("proof-delta", "proof-random", "meas-delta", "out-of-field", "truncated", "seal")),
    "replayed-proof": (_replay_attack, ("same-report", "previous-round", "grafted-proof", "relabelled", "public-share")),
    "lying-helper": (_lying_helper_attack, ("delta", "zero", "random", "negate", "joint-rand-part")),
}


def run_attack(
    name: str,
    trials: int,
    *,
    strategy: str | None = None,
    env: AttackEnv | None = None,
    seed: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> AttackTally:
    """Run ``trials`` trials of the attack ``name`` (a key of :data:`ATTACKS`), each with
    ``strategy`` or, by default, one of the attack's strategies drawn at random.

    A trial's report reaching the sum is counted ``ACCEPTED``; :attr:`AttackTally.accepted`
    must be 0. A non-fedcrypt exception propagates.
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {sorted(ATTACKS)}")
    trial, strategies = ATTACKS[name]
    if strategy is not None and strategy not in strategies:
        raise ValueError(f"unknown strategy {strategy!r} of {name}; known: {strategies}")
    env = env or AttackEnv()
    rng = np.random.default_rng(seed)
    tally = AttackTally(name)
    for i in range(trials):
        chosen = strategy if strategy is not None else str(rng.choice(strategies))
        label, outcome, why = trial(env, rng, chosen)
        tally.add(label, outcome, why)
        if progress is not None:
            progress(i + 1)
    return tally


def run_honest(trials: int, *, env: AttackEnv | None = None, seed: int | None = None, progress: Callable[[int], None] | None = None) -> AttackTally:
    """Honest clients with vectors of norm in ``[0, 1] * l2_norm_bound`` (one in eight
    exactly at the bound, clipped): every trial must be ``ACCEPTED``."""
    env = env or AttackEnv()
    rng = np.random.default_rng(seed)
    tally = AttackTally("honest")
    for i in range(trials):
        fraction = 1.0 if rng.random() < 0.125 else float(rng.uniform(0.0, 1.0))
        kind = "at-bound" if fraction == 1.0 else "within"
        report = env.report(1, 0, env.honest_ints(rng, fraction))
        tally.add(kind, *env.judge([report], 0))
        if progress is not None:
            progress(i + 1)
    return tally
