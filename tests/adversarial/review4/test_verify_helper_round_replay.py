"""A malicious leader gets the helper to release a round's aggregate share twice, and differences
the two releases to recover one honest client's vector exactly.

Claims under test: ``fedcrypt.verify`` threat model -- "a client's vector stays hidden from
each aggregator alone ... The leader learns the noised sum of at least ``min_reports``
accepted reports, once per round"; :class:`~fedcrypt.verify.Helper` -- "one aggregate share
per round, of at least ``min_reports`` reports both aggregators accepted" and "a report id or
client seen before in the round is answered ``REPLAY`` and never prepared twice".

Two helper-side gaps combine:

1. *Re-verification of the same reports.* The helper's replay protection (seen report ids
   and clients, batch index, "released" flag) lives only in one :class:`Helper` object.
   Nothing binds a release to state that survives the object: a second ``Helper(config,
   verify_key, key_pair, round_id=r)`` -- a helper restarted, or a second worker of the same
   helper service, which the leader asks to "redo" round ``r`` -- opens the same sealed
   shares again (the seal is bound to config, round, client, report id and public share,
   all of which are identical), prepares them again and releases a second aggregate share
   for round ``r``.
2. *Silent rejection of valid reports.* In ``AggregateRequest`` the helper only refuses a
   report the leader calls accepted but which fails verification; a report that verifies
   and that the leader calls *rejected* is dropped without complaint (honest aggregators
   decide identically, so this is a protocol violation too).

The attack (no made-up clients, three honest clients, ``min_reports = 2``): round 0 with
helper instance 1, everything accepted: the leader learns ``x0 + x1 + x2``; round 0 again
with helper instance 2, the same reports, the leader marks client 0's valid report rejected:
the helper releases a share of ``x1 + x2``. The difference of the two helper shares is the
helper's share of ``x0``; with the leader's own share of ``x0`` (its input share) the leader
has ``x0`` exactly (without noise; with noise it gets a fresh helper noise sample per
release, so repeating the request averages the helper's half away and the only noise
left is the leader's own, which it need not add).

Secure behaviour asserted: a helper never releases a second aggregate share for the same
config and round (the second instance refuses the prepare or the aggregate request), and a
valid report the leader calls rejected is refused as a protocol violation.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import FedcryptError
from fedcrypt.verify import HELPER, AggregateRequest, Helper, LeaderPrep, Leader, VerifyClient, VerifyConfig
from fedcrypt.verify.encoding import decode_sum, encode_vector
from fedcrypt.verify.vdaf import InputShare

DIM = 8


def _setup():
    kp = X25519KeyPair.generate()
    vk = os.urandom(32)
    cfg = VerifyConfig.for_dimension(DIM, 1.0, kp.public_bytes, min_reports=2)
    rng = np.random.default_rng(7)
    vecs = [(rng.normal(size=DIM) * 0.2).astype(np.float32) for _ in range(3)]
    leader = Leader(cfg, vk, range(3), round_id=0)
    requests = leader.begin()
    reports = []
    for i in range(3):
        c = VerifyClient(cfg, i)
        c.set_input(vecs[i])
        reports.append(c.handle(requests[i]))
        leader.receive(reports[i])
    return cfg, vk, kp, vecs, leader, reports


def _run_first_release(cfg, vk, kp, leader):
    helper1 = Helper(cfg, vk, kp, round_id=0, last_released_round=None)
    prep_req = leader.end_stage()[HELPER]
    leader.receive(helper1.handle(prep_req.to_bytes()))
    agg_req = leader.end_stage()[HELPER]
    share1 = helper1.handle(agg_req.to_bytes())
    leader.receive(share1)
    leader.end_stage()
    return prep_req, agg_req, share1


@pytest.mark.parametrize("record", ["persisted", "lost"])
def test_verify_helper_refuses_second_release_of_a_round(record: str) -> None:
    """Fixed (90e6f82): a helper is built with its persisted release record and refuses a round
    at or before it; and, should the record be lost, it refuses a leader decision other than its
    own (a valid report called rejected), so the second release never differs from the first."""
    cfg, vk, kp, vecs, leader, reports = _setup()
    prep_req, agg_req, share1 = _run_first_release(cfg, vk, kp, leader)
    assert leader.result.count == 3

    # The malicious leader asks a restarted helper to redo round 0, dropping client 0.
    forged = AggregateRequest(0, tuple(
        LeaderPrep(e.client, e.report_id, False if e.client == 0 else e.accepted, e.prep_share) for e in agg_req.entries
    ))
    try:
        helper2 = Helper(cfg, vk, kp, round_id=0, last_released_round=0 if record == "persisted" else None)
        helper2.handle(prep_req.to_bytes())
        share2 = helper2.handle(forged.to_bytes())
    except FedcryptError:
        return  # secure: the second release is refused

    # Demonstrate the leak before failing: the leader recovers x0 exactly.
    F = cfg.params.field
    helper_x0 = F.sub(share1.decoded_share(cfg), share2.decoded_share(cfg))
    leader_x0 = InputShare.from_bytes(reports[0].leader_share, cfg.vdaf, 0).meas_share[:DIM]
    recovered = decode_sum(F, F.add(helper_x0, leader_x0), cfg.params.num_frac_bits)
    f = cfg.params.num_frac_bits
    expected = np.ldexp(encode_vector(vecs[0], bound=1.0, frac_bits=f, bound_int=cfg.bound).astype(np.float64), -f)
    assert np.array_equal(recovered, expected)  # client 0's vector, alone
    pytest.fail(f"the helper released round 0 twice (counts {share1.count} and {share2.count}); "
                f"the leader recovered client 0's vector exactly: {recovered}")
