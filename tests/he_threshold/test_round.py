"""Honest threshold CKKS rounds through the sans-IO core (fedcrypt.he.threshold.round): with and
without a roster, two rounds of one session, dropouts of uploaders and of key holders (the
stand-in path), the aborts, a node outside the committee, nodes rebuilt from their state
bytes at every message. Real OpenFHE (CPython 3.10; skipped elsewhere, see conftest.py)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcrypt.errors import HonestButCuriousWarning, RoundAbortedError
from fedcrypt.he.threshold.round import (
    SessionRecord,
    Stage,
    ThresholdClient,
    ThresholdConfig,
    ThresholdRoundServer,
    fedavg_error_bound,
    simulate,
)
from fedcrypt.identity import NodeIdentity, Roster

pytestmark = pytest.mark.usefixtures("openfhe")
sys.path.insert(0, str(Path(__file__).parent))

from _round_harness import D, M, N, Federation, node_id, params  # noqa: E402


def _vectors(seed: int) -> tuple[list[np.ndarray], list[float]]:
    rng = np.random.default_rng(seed)  # test data, not secret
    return [rng.uniform(-1.0, 1.0, D) for _ in range(N)], [float(w) for w in rng.integers(1, 9, N)]


def _mean(vectors: list[np.ndarray], weights: list[float], nodes: list[int]) -> np.ndarray:
    return sum(weights[i] * vectors[i] for i in nodes) / sum(weights[i] for i in nodes)


def _identities() -> tuple[list[NodeIdentity], Roster]:
    identities = [NodeIdentity.generate() for _ in range(N)]
    return identities, Roster({f"n{i}": ident.public_bytes for i, ident in enumerate(identities)})


def test_without_a_roster_both_sides_warn_and_the_mean_is_within_the_bound() -> None:
    config = ThresholdConfig(params(0), max_weight=M)
    assert config.threat_model == "honest-but-curious"
    with pytest.warns(HonestButCuriousWarning):
        ThresholdClient(config, 1)
    with pytest.warns(HonestButCuriousWarning):
        ThresholdRoundServer(config, [1, 2, 3], round_id=0)
    vectors, weights = _vectors(1)
    outcome = simulate(config, vectors, weights, round_id=3)
    error = np.max(np.abs(outcome.mean - _mean(vectors, weights, [0, 1, 2])))
    assert error <= fedavg_error_bound(config.params, weights, M)
    assert outcome.total_weight == pytest.approx(sum(weights), abs=1e-6)
    assert outcome.contributors == (0, 1, 2) and outcome.result.members == ()
    # the holders get one aggregate, not the uploads
    assert outcome.decrypt_request_bytes < 1.1 * outcome.upload_bytes
    assert set(outcome.report.dropped) == set() and outcome.report.stood_in == {}


def test_with_a_roster_nothing_warns_and_each_holder_downloads_every_upload() -> None:
    identities, roster = _identities()
    config = ThresholdConfig(params(2), max_weight=M, roster=roster)
    assert config.threat_model == "malicious-server"
    vectors, weights = _vectors(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HonestButCuriousWarning)
        outcome = simulate(config, vectors, weights, identities=identities, round_id=9)
    assert np.max(np.abs(outcome.mean - _mean(vectors, weights, [0, 1, 2]))) <= fedavg_error_bound(config.params, weights, M)
    assert outcome.result.members == ("n0", "n1", "n2")
    # the cost of the roster: a holder downloads the three signed uploads instead of one aggregate
    assert outcome.decrypt_request_bytes > 2.9 * outcome.upload_bytes
    assert set(outcome.stage_seconds) == {"KEYGEN", "JOINT", "BACKUP", "ENCRYPT", "CONFIRM", "DECRYPT"}


@pytest.mark.parametrize("roster", [True, False])
def test_two_rounds_of_one_session(roster: bool) -> None:
    fed = Federation(roster=roster, recovery=2, seed=3)
    first, log = fed.run(1)
    assert list(log.requests) == [Stage.KEYGEN, Stage.JOINT, Stage.BACKUP, Stage.ENCRYPT] + (
        [Stage.CONFIRM] if roster else []
    ) + [Stage.DECRYPT]
    assert len(log.keygen) == N  # one holder at a time
    record = SessionRecord.from_bytes(first.result.session)
    assert record.committee == (100, 101, 102)
    assert record.members == (("node-0", "node-1", "node-2") if roster else ("", "", ""))
    fed.inputs = {n: -v for n, v in fed.inputs.items()}  # a new update
    second, log = fed.run(2)
    assert next(iter(log.requests)) is Stage.ENCRYPT  # the session's key serves the later round
    for server in (first, second):
        assert server.stage is Stage.DONE
        assert server.result.fingerprint == first.result.fingerprint
    bound = fedavg_error_bound(fed.config.params, fed.weights.values(), M)
    assert np.max(np.abs(second.result.mean - fed.expected_mean([100, 101, 102]))) <= bound
    assert np.max(np.abs(first.result.mean + fed.expected_mean([100, 101, 102]))) <= bound


def test_dropouts_of_an_uploader_and_of_a_key_holder_are_stood_in_for() -> None:
    identities, roster = _identities()
    config = ThresholdConfig(params(2), max_weight=M, roster=roster)
    vectors, weights = _vectors(4)
    bound = fedavg_error_bound(config.params, weights, M)
    # node 2 does not upload (and, gone, does not decrypt: node 0 stands in for its key share)
    outcome = simulate(config, vectors, weights, dropouts={Stage.ENCRYPT: {2}}, identities=identities, round_id=1)
    assert outcome.contributors == (0, 1)
    assert np.max(np.abs(outcome.mean - _mean(vectors, weights, [0, 1]))) <= bound
    assert outcome.report.stood_in == {2: 0} and outcome.report.dropped == {2: "ENCRYPT"}
    # node 1 uploads, then drops before its partial decryption
    outcome = simulate(config, vectors, weights, dropouts={Stage.DECRYPT: {1}}, identities=identities, round_id=1)
    assert outcome.contributors == (0, 1, 2) and outcome.result.decryptors == (0, 2)
    assert np.max(np.abs(outcome.mean - _mean(vectors, weights, [0, 1, 2]))) <= bound
    assert outcome.report.stood_in == {1: 0}
    # without a roster too
    plain = ThresholdConfig(params(2), max_weight=M)
    outcome = simulate(plain, vectors, weights, dropouts={Stage.DECRYPT: {0}}, round_id=1)
    assert outcome.report.stood_in == {0: 1}  # the first survivor stands in, fed by the next t - 1
    assert np.max(np.abs(outcome.mean - _mean(vectors, weights, [0, 1, 2]))) <= bound


@pytest.mark.parametrize(
    ("recovery", "roster", "dropouts", "why"),
    [
        (0, False, {Stage.DECRYPT: {1}}, "dropped before their decryption share"),
        (0, True, {Stage.ENCRYPT: {2}}, "dropped before their decryption share"),
        (2, True, {Stage.DECRYPT: {0, 1}}, "at most 1 may be stood in for"),
        (2, True, {Stage.CONFIRM: {0}}, "did not confirm"),
        (2, True, {Stage.KEYGEN: {1}}, "did not complete key generation"),
        (2, False, {Stage.JOINT: {2}}, "did not accept the joint key"),
        (2, True, {Stage.BACKUP: {0}}, "did not store their backups"),
        (2, True, {Stage.RELEASE: {2}}, "did not release"),
        (2, False, {Stage.RECOVER: {0}}, "did not deliver its share"),
        (0, True, {Stage.ENCRYPT: {0, 1}}, "fewer than min_contributions"),
    ],
)
def test_rounds_that_cannot_finish_abort_with_a_typed_error(
    recovery: int, roster: bool, dropouts: dict[Stage, set[int]], why: str
) -> None:
    identities, members = _identities()
    config = ThresholdConfig(params(recovery), max_weight=M, roster=members if roster else None)
    if Stage.RELEASE in dropouts or Stage.RECOVER in dropouts:
        dropouts = {Stage.DECRYPT: {1}, **dropouts}
    vectors, weights = _vectors(5)
    with pytest.raises(RoundAbortedError, match=why):
        simulate(config, vectors, weights, dropouts=dropouts, identities=identities if roster else None)


def test_the_server_records_why_a_round_aborted_and_refuses_to_go_on() -> None:
    fed = Federation(roster=True, recovery=0, seed=6)
    server, _ = fed.run(1, until=Stage.DECRYPT)
    with pytest.raises(RoundAbortedError):
        server.end_stage()  # nobody answered DECRYPT: n-of-n cannot decrypt
    assert server.stage is Stage.ABORTED and server.report.aborted.startswith("RoundAbortedError")
    assert server.report.dropped == {100: "DECRYPT", 101: "DECRYPT", 102: "DECRYPT"}
    from fedcrypt.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError):
        server.end_stage()
    with pytest.raises(LocalProtocolError):
        server.result  # noqa: B018


def test_a_later_rounds_node_outside_the_committee_is_refused_and_the_rest_aggregate() -> None:
    fed = Federation(roster=False, recovery=0, seed=7)
    fed.run(1)
    server, log = fed.run(2, nodes=[100, 101, 102, 999])
    assert set(log.requests[Stage.ENCRYPT]) == {100, 101, 102}
    assert "not a key holder of this session" in server.report.refused[999]
    assert server.result.contributors == (100, 101, 102)
    # a first round's nodes are the committee: as many as the parameters' key holders
    with pytest.raises(ValueError, match="num_parties"), warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        ThresholdRoundServer(fed.config, [1, 2], round_id=0)


def test_nodes_rebuilt_from_their_state_bytes_before_every_message_finish_the_round() -> None:
    fed = Federation(roster=True, recovery=2, seed=8)
    server = fed.server(1)
    requests: dict[int, Any] = server.begin()
    states = {node: client.to_state_bytes() for node, client in fed.clients.items()}
    stages = []
    while requests:
        stages.append(server.stage)
        for node in sorted(requests):
            if server.stage is Stage.DECRYPT and node == 102:
                continue  # a holder drops: the stand-in path runs on rebuilt nodes too
            client = ThresholdClient.from_state_bytes(states[node], config=fed.config, identity=fed.identity(node))
            if server.stage is Stage.ENCRYPT:
                client.set_input(fed.inputs[node], fed.weights[node])
            reply = client.handle(requests[node].to_bytes())
            states[node] = client.to_state_bytes()
            server.receive(reply.to_bytes(), sender=node)
        requests = server.end_stage()
    assert Stage.RELEASE in stages and Stage.RECOVER in stages
    bound = fedavg_error_bound(fed.config.params, fed.weights.values(), M)
    assert np.max(np.abs(server.result.mean - fed.expected_mean([100, 101, 102]))) <= bound
    assert server.report.stood_in == {102: 100}


def test_config_bounds_have_exact_messages() -> None:
    with pytest.raises(ValueError, match="flooding must be on"):
        ThresholdConfig(params(0).__class__.preset("compact", num_parties=3, num_clients=8, max_weight=8, flooding=False))
    with pytest.raises(ValueError, match=r"min_contributions must be in \[2, 3\]"):
        ThresholdConfig(params(0), min_contributions=4)
    with pytest.raises(ValueError, match="exceeds params.max_weight"):
        ThresholdConfig(params(0), max_weight=9.0)
    identities, roster = _identities()
    small = Roster({"a": identities[0].public_bytes, "b": identities[1].public_bytes})
    with pytest.raises(ValueError, match="fewer than the committee"):
        ThresholdConfig(params(0), roster=small)
    with pytest.raises(ValueError, match="one vector per key holder"):
        simulate(ThresholdConfig(params(0), max_weight=M), [np.zeros(4)] * 2)
    assert ThresholdConfig(params(0), max_weight=M).digest() != ThresholdConfig(params(0), max_weight=M, roster=roster).digest()
    assert node_id(0) == 100
