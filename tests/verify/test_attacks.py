"""The attack suite of fedcrypt.testing.verify_attacks against the verify round.

Default run: every strategy of every attack once, a few honest reports, and a hypothesis
search over single-element changes of a report. ``-m heavy``: issue #20's acceptance
counts (every attack rejected in 10^4 trials, no honest report rejected in 10^5), also
run by ``benchmarks/verify.py --attacks``.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.testing.verify_attacks import ATTACKS, AttackEnv, LyingEncoder, Outcome, run_attack, run_honest

ENV = AttackEnv()
REFUSED_STRATEGIES = {"out-of-field", "truncated", "same-report"}
CASES = [(name, s) for name, (_, strategies) in ATTACKS.items() for s in strategies]


@pytest.mark.parametrize("name,strategy", CASES, ids=[f"{n}:{s}" for n, s in CASES])
def test_every_strategy_of_every_attack_is_stopped(name, strategy):
    tally = run_attack(name, 1, strategy=strategy, env=ENV, seed=7)
    expected = Outcome.REFUSED if strategy in REFUSED_STRATEGIES else Outcome.REJECTED
    assert tally.outcomes == {expected: 1}, tally.reasons


def test_mixed_strategies_and_the_tally():
    tally = run_attack("norm-1.01B", 4, env=ENV, seed=3)
    assert tally.trials == 4 and tally.accepted == 0
    assert "norm-1.01B: 4 trials: accepted 0" in tally.summary()
    with pytest.raises(ValueError):
        run_attack("no-such-attack", 1)
    with pytest.raises(ValueError):
        run_attack("norm-1.01B", 1, strategy="nope")


def test_honest_reports_are_accepted_including_at_the_bound():
    tally = run_honest(6, env=ENV, seed=11)
    assert tally.outcomes == {Outcome.ACCEPTED: 6}, tally.reasons


def test_the_lying_encoder_is_honest_when_asked_to_be():
    import numpy as np

    report = ENV.report(1, 0, ENV.honest_ints(np.random.default_rng(1)), LyingEncoder())
    assert ENV.judge([report], 0)[0] is Outcome.ACCEPTED


@settings(max_examples=12, deadline=None)
@given(where=st.floats(0.0, 1.0, exclude_max=True), delta=st.integers(1, 2**40), part=st.sampled_from(["meas", "proofs"]))
def test_no_single_element_change_of_a_report_is_accepted(where, delta, part):
    import numpy as np

    c = ENV.config
    F = c.params.field
    report = ENV.report(1, 0, ENV.honest_ints(np.random.default_rng(5)))
    share = report.decoded_leader_share(c)
    vec = (share.meas_share if part == "meas" else share.proofs_share).copy()
    i = int(where * len(vec))
    vec[i] = (int(vec[i]) + delta % (F.modulus - 1) + 1) % F.modulus
    forged = dataclasses.replace(share, **{f"{part}_share": vec})
    blob = dataclasses.replace(report, leader_share=forged.to_bytes(c.vdaf))
    assert ENV.judge([blob], 0)[0] is Outcome.REJECTED


@pytest.mark.heavy
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_acceptance_every_attack_rejected_in_ten_thousand_trials(name):
    tally = run_attack(name, 10_000, env=AttackEnv(), seed=2020)
    assert tally.accepted == 0, tally.reasons


@pytest.mark.heavy
def test_acceptance_no_honest_report_rejected_in_a_hundred_thousand():
    tally = run_honest(100_000, env=AttackEnv(), seed=2020)
    assert tally.outcomes[Outcome.ACCEPTED] == 100_000, tally.reasons
