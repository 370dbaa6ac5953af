"""The server forwards a quorum of consistency signatures, and clients check what they get.

``ServerProtocol`` sends each client ``q = config.consistency_quorum`` of the signatures on
``U3`` (the lowest other signers; the recipient's own only when exactly ``q`` signed) rather
than every one: a client needs ``q`` and verifies every signature it is sent, so the
honest server saves each client ``|U4| - q`` Ed25519 verifications. The client's checks do
not change: fewer than ``q`` is refused, any forged one is refused, more than ``q`` (a server
that forwards all) is accepted.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import InvalidSignature, RoundAbortedError
from fedcrypt.secagg import ConsistencySignature, SecAggConfig, Stage, UnmaskRequest

from .harness import Round


@st.composite
def verified_rounds(draw):
    """A malicious-server config and the clients that drop before signing ``U3`` (|U4| >= q)."""
    n = draw(st.integers(3, 9))
    c = draw(st.integers(0, max(0, (n - 3) // 2)))
    low = max(c + 2, (n + c) // 2 + 1)
    if low > n:
        c, low = 0, n // 2 + 1
    t = draw(st.integers(low, n))
    config = SecAggConfig(num_clients=n, threshold=t, max_colluders=c, verify_survivors=True)
    spare = n - max(config.consistency_quorum, t)
    drops = draw(st.sets(st.integers(0, n - 1), max_size=spare))
    return config, drops


def _to_unmask_requests(config: SecAggConfig, drop_at_consistency: set[int]) -> tuple[Round, dict]:
    run = Round(config, length=5)
    for _ in range(3):  # ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT
        run.step()
    return run, run.step(drop_at_consistency)


@settings(max_examples=25, deadline=None)
@given(verified_rounds())
def test_each_client_is_sent_the_lowest_quorum_of_other_signers(case) -> None:
    config, drops = case
    run, requests = _to_unmask_requests(config, drops)
    q = config.consistency_quorum
    u4 = sorted(set(range(config.num_clients)) - drops)
    assert sorted(requests) == u4
    for u, request in requests.items():
        signers = [v for v, _ in request.signatures]
        assert len(signers) == q
        assert signers == sorted(signers) and set(signers) <= set(u4)
        expected = [v for v in u4 if v != u][:q] if len(u4) > q else u4
        assert signers == expected
        assert (u in signers) == (len(u4) == q)
    # every client accepts its quorum and the round sums exactly
    run.step()
    assert run.server.stage is Stage.DONE
    assert np.array_equal(run.server.result.ring_sum, run.expected_sum(range(config.num_clients)))


def _all_signatures(run: Round) -> tuple[tuple[int, bytes], ...]:
    """Every consistency signature the clients sent (what a server forwarding all would send)."""
    found = []
    for sender, blobs in run.sent.items():
        for blob in blobs:
            if blob[5] == ConsistencySignature.TYPE:
                found.append((sender, ConsistencySignature.from_bytes(blob).signature))
    return tuple(sorted(found))


def test_a_client_still_accepts_every_signature_and_refuses_fewer_or_forged() -> None:
    config = SecAggConfig(num_clients=7, threshold=4, verify_survivors=True)
    q = config.consistency_quorum
    run, requests = _to_unmask_requests(config, set())
    honest = requests[0]
    everyone = _all_signatures(run)
    assert len(everyone) == 7 and len(honest.signatures) == q < 7

    def variant(signatures):
        return UnmaskRequest(honest.round_id, 0, honest.survivors, honest.dropped, signatures, honest.attestations)

    with pytest.raises(RoundAbortedError, match="confirmed the survivor set"):
        run.clients[0].handle(variant(honest.signatures[: q - 1]))
    # a forged entry among the forwarded ones and one beyond the quorum are both refused
    for position in (0, len(everyone) - 1):
        forged = list(everyone)
        forged[position] = (forged[position][0], bytes(64))
        with pytest.raises(InvalidSignature):
            run.clients[0].handle(variant(tuple(forged)))
    assert run.clients[0].stage is Stage.UNMASK
    # a server that forwards all of them (more than a quorum) is still answered
    assert run.clients[0].handle(variant(everyone)).sender == 0
