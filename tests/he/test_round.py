"""The single-key CKKS round (fedcrypt.he.round): honest rounds with and without a roster,
dropouts, key set-up, decryptor agreement, config bounds and the lazy export."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from fedcrypt.errors import (
    ContextMismatchError,
    HonestButCuriousWarning,
    LocalProtocolError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)
from fedcrypt.he import CkksParams, KeyOwner
from fedcrypt.he.round import (
    CkksClient,
    CkksConfig,
    CkksServer,
    Decryption,
    KeyState,
    Stage,
    fedavg_error_bound,
    simulate,
)
from fedcrypt.identity import NodeIdentity, Roster

from ._round_harness import MAX_WEIGHT, PARAMS, Federation

LENGTH = 48


def _vectors(count: int, seed: int = 7) -> tuple[list[np.ndarray], list[float]]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 1.0, LENGTH) for _ in range(count)], [float(w) for w in rng.integers(1, 11, count)]


def _fedavg(vectors: list[np.ndarray], weights: list[float], nodes: list[int]) -> np.ndarray:
    return sum(weights[i] * vectors[i] for i in nodes) / sum(weights[i] for i in nodes)


def _identities(count: int) -> tuple[list[NodeIdentity], Roster]:
    identities = [NodeIdentity.generate() for _ in range(count)]
    return identities, Roster({f"m{i}": ident.public_bytes for i, ident in enumerate(identities)})


def _check(outcome, vectors, weights, contributors) -> None:
    assert outcome.contributors == tuple(contributors)
    bound = fedavg_error_bound(PARAMS, [weights[i] for i in contributors], MAX_WEIGHT)
    error = np.abs(outcome.mean - _fedavg(vectors, weights, contributors)).max()
    assert error <= bound, (error, bound)
    assert error > 0  # flooded, not exact
    weight_error = MAX_WEIGHT * PARAMS.sum_error_bound([1.0] * len(contributors))
    assert abs(outcome.total_weight - sum(weights[i] for i in contributors)) <= weight_error


@pytest.mark.parametrize("key_setup", ["dealer", "file"])
def test_honest_round_without_a_roster_is_the_fedavg_mean(key_setup: str) -> None:
    vectors, weights = _vectors(4)
    config = CkksConfig(PARAMS, max_weight=MAX_WEIGHT, key_setup=key_setup)
    outcome = simulate(config, vectors, weights)
    _check(outcome, vectors, weights, [0, 1, 2, 3])
    assert outcome.report.dealt == ([0, 1, 2, 3] if key_setup == "dealer" else [])
    assert len(outcome.result.decryptors) == 2
    assert outcome.decrypt_request_bytes < 3 * outcome.upload_bytes  # one aggregate


def test_honest_round_with_a_roster_is_the_fedavg_mean() -> None:
    vectors, weights = _vectors(4)
    identities, roster = _identities(4)
    config = CkksConfig(PARAMS, max_weight=MAX_WEIGHT, roster=roster, min_contributions=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HonestButCuriousWarning)  # the malicious-server mode never warns
        outcome = simulate(config, vectors, weights, identities=identities)
    _check(outcome, vectors, weights, [0, 1, 2, 3])
    assert outcome.result.members == ("m0", "m1", "m2", "m3")
    # the decryptor downloads every signed upload (the cost of summing what it decrypts)
    assert outcome.decrypt_request_bytes > 4 * outcome.upload_bytes


@pytest.mark.parametrize("roster", [False, True])
def test_dropouts_at_encrypt_and_decrypt(roster: bool) -> None:
    vectors, weights = _vectors(5, seed=3)
    identities, members = _identities(5) if roster else (None, None)
    config = CkksConfig(PARAMS, max_weight=MAX_WEIGHT, roster=members, decryptors=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        outcome = simulate(
            config, vectors, weights, identities=identities, dropouts={Stage.ENCRYPT: {1, 3}, Stage.DECRYPT: {0}}
        )
    _check(outcome, vectors, weights, [0, 2, 4])
    assert outcome.report.dropped == {1: "ENCRYPT", 3: "ENCRYPT", 0: "DECRYPT"}
    assert outcome.result.decryptors == (2, 4)  # the next candidates stood in for node 0


def test_a_drop_at_install_leaves_the_others_holding_the_key() -> None:
    vectors, weights = _vectors(4)
    config = CkksConfig(PARAMS, max_weight=MAX_WEIGHT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        outcome = simulate(config, vectors, weights, dropouts={Stage.INSTALL: {2}})
    _check(outcome, vectors, weights, [0, 1, 3])
    assert outcome.report.dealt == [0, 1, 3]


def test_with_a_roster_a_drop_at_confirm_ends_the_round_without_a_decryption() -> None:
    vectors, weights = _vectors(4)
    identities, roster = _identities(4)
    config = CkksConfig(PARAMS, max_weight=MAX_WEIGHT, roster=roster)
    with pytest.raises(RoundAbortedError, match=r"nodes \[2\] did not confirm"):
        simulate(config, vectors, weights, identities=identities, dropouts={Stage.CONFIRM: {2}})


@pytest.mark.parametrize(
    "dropouts, match",
    [
        ({Stage.ENCRYPT: {0, 1, 2}}, "1 uploads arrived, fewer than min_contributions=2"),
        ({Stage.DEAL: {0}}, "the dealer did not deal the key"),
        ({Stage.DECRYPT: {0, 1, 2, 3}}, "0 of the 2 decryptions needed arrived"),
        ({Stage.CONTEXT: {0, 1, 2}}, "1 nodes ask for a key, fewer than min_contributions=2"),
    ],
)
def test_too_many_dropouts_abort_with_a_typed_error(dropouts, match: str) -> None:
    vectors, weights = _vectors(4)
    config = CkksConfig(PARAMS, max_weight=MAX_WEIGHT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        with pytest.raises(RoundAbortedError, match=match):
            simulate(config, vectors, weights, dropouts=dropouts)


def test_objects_without_identities_warn_honest_but_curious() -> None:
    config = CkksConfig(PARAMS, max_weight=MAX_WEIGHT)
    with pytest.warns(HonestButCuriousWarning, match="honest-but-curious"):
        CkksClient(config, 1)
    with pytest.warns(HonestButCuriousWarning, match="honest-but-curious"):
        CkksServer(config, [1, 2], round_id=0)
    assert config.threat_model == "honest-but-curious"


def test_identities_must_match_the_mode() -> None:
    identities, roster = _identities(2)
    with pytest.raises(ValueError, match="needs this node's identity"):
        CkksClient(CkksConfig(PARAMS, roster=roster), 1)
    with pytest.raises(ValueError, match="without a roster"), warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        CkksClient(CkksConfig(PARAMS), 1, identity=identities[0])
    from fedcrypt.errors import IdentityError

    with pytest.raises(IdentityError, match="not on the roster"):
        CkksClient(CkksConfig(PARAMS, roster=roster), 1, identity=NodeIdentity.generate())
    assert CkksConfig(PARAMS, roster=roster).threat_model == "malicious-server"


def test_several_rounds_with_state_bytes_between_every_message() -> None:
    """Like a transport that runs every message in a fresh process: the node is rebuilt from its state each time."""
    fed = Federation(4, roster=True)
    for round_id in (1, 2):
        server = fed.server(round_id)
        requests = server.begin()
        while requests:
            stage = server.stage
            for node, request in sorted(requests.items()):
                client = CkksClient.from_state_bytes(
                    fed.clients[node].to_state_bytes(), config=fed.config, identity=fed.identity(node)
                )
                if stage is Stage.ENCRYPT:
                    client.set_input(fed.inputs[node], fed.weights[node])
                    client = CkksClient.from_state_bytes(client.to_state_bytes(), config=fed.config, identity=fed.identity(node))
                server.receive(client.handle(request.to_bytes()).to_bytes(), sender=node)
                fed.clients[node] = client
            requests = server.end_stage()
        result = server.result
        bound = fedavg_error_bound(PARAMS, list(fed.weights.values()), MAX_WEIGHT)
        assert np.abs(result.mean - fed.expected_mean(sorted(fed.clients))).max() <= bound
        assert server.report.dealt == ([100, 101, 102, 103] if round_id == 1 else [])
        fed.context = result.context
    assert all(c.uploads == 2 for c in fed.clients.values())


def test_late_joiner_without_a_key_is_refused_and_nobody_deals_again() -> None:
    fed = Federation(3, roster=False)
    fed.run(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        late = CkksClient(fed.config, 999)
    server = fed.server(2, sorted(fed.clients) + [999])
    requests = server.begin()
    for node, request in requests.items():
        client = late if node == 999 else fed.clients[node]
        server.receive(client.handle(request).to_bytes(), sender=node)
    requests = server.end_stage()
    assert server.stage is Stage.ENCRYPT and sorted(requests) == [100, 101, 102]
    assert "key set-up is done" in server.report.refused[999]


def test_with_a_roster_a_holder_deals_the_key_to_a_late_joiner_and_a_holder_that_does_not_ends_nothing() -> None:
    fed = Federation(4, roster=True)
    late = fed.clients.pop(103)  # a roster member that joins after the key set-up
    fed.run(1)
    for round_id, silent in ((2, True), (3, False)):  # the holder asked to deal drops, then one deals
        server = fed.server(round_id, sorted(fed.clients) + [103])
        requests = server.begin()
        while requests:
            stage = server.stage
            for node, request in sorted(requests.items()):
                if stage is Stage.DEAL and silent:
                    continue
                client = late if node == 103 else fed.clients[node]
                if stage is Stage.ENCRYPT:
                    client.set_input(fed.inputs[node], fed.weights[node])
                server.receive(client.handle(request).to_bytes(), sender=node)
            requests = server.end_stage()
        assert server.stage is Stage.DONE
        if silent:
            assert "did not" in server.report.refused[103] and 103 not in server.result.contributors
        else:
            assert server.report.dealt[-1:] == [103] and 103 in server.result.contributors
            assert late.fingerprint == fed.clients[100].fingerprint


def test_a_node_with_another_key_file_is_refused_and_a_tie_ends_the_round() -> None:
    """Attacker review 5: one node reporting another key ended every round; the key most nodes report wins."""
    fed = Federation(2, roster=False, key_setup="file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        other = CkksClient(fed.config, 500, key=KeyOwner.generate(PARAMS))
    for nodes, outcome in (([100, 101, 500], "outvoted"), ([100, 500], "tie")):
        server = fed.server(0, nodes)
        for node, request in server.begin().items():
            client = other if node == 500 else fed.clients[node]
            server.receive(client.handle(request).to_bytes(), sender=node)
        if outcome == "tie":
            with pytest.raises(ContextMismatchError, match="2 different CKKS keys, none by more nodes"):
                server.end_stage()
            assert server.stage is Stage.ABORTED and server.report.aborted.startswith("ContextMismatchError")
        else:
            assert sorted(server.end_stage()) == [100, 101] and server.stage is Stage.ENCRYPT
            assert "another CKKS key than the one most nodes report" in server.report.refused[500]


def test_a_decryptor_that_disagrees_is_outvoted_by_another_candidate() -> None:
    fed = Federation(3, roster=False)
    server, log = fed.run(1, until=Stage.DECRYPT)
    requests = log.requests[Stage.DECRYPT]
    first, second = sorted(requests)
    server.receive(fed.clients[first].handle(requests[first]))
    honest = fed.clients[second].handle(requests[second]).values.copy()
    honest[0] += 1e-3
    server.receive(Decryption.of(1, second, honest))
    (third, request), = server.end_stage().items()  # one more candidate breaks the tie
    assert third not in (first, second) and server.stage is Stage.DECRYPT
    server.receive(fed.clients[third].handle(request))
    assert server.end_stage() == {} and server.stage is Stage.DONE
    assert server.result.decryptors == (first, third) and "differs" in server.report.refused[second]


def test_decryptors_that_disagree_with_no_candidate_left_end_the_round() -> None:
    fed = Federation(2, roster=False)
    server, log = fed.run(1, until=Stage.DECRYPT)
    requests = log.requests[Stage.DECRYPT]
    first, second = sorted(requests)
    server.receive(fed.clients[first].handle(requests[first]))
    honest = fed.clients[second].handle(requests[second]).values.copy()
    honest[0] += 1e-3
    server.receive(Decryption.of(1, second, honest))
    with pytest.raises(ProtocolViolationError, match="2 different sums"):
        server.end_stage()
    assert server.stage is Stage.ABORTED


def test_server_refuses_replays_strangers_and_wrong_stages() -> None:
    fed = Federation(3, roster=True)
    server, log = fed.run(1, until=Stage.ENCRYPT)
    requests = log.requests[Stage.ENCRYPT]
    node = min(requests)
    fed.clients[node].set_input(fed.inputs[node], fed.weights[node])
    upload = fed.clients[node].handle(requests[node])
    server.receive(upload)
    with pytest.raises(UnexpectedMessageError, match="replay"):
        server.receive(upload)
    with pytest.raises(UnexpectedMessageError, match="came from node"):
        server.receive(upload, sender=node + 1)
    with pytest.raises(UnexpectedMessageError, match="not accepted in this stage"):
        server.receive(Decryption.of(1, node, np.zeros(LENGTH)))
    with pytest.raises(LocalProtocolError):
        server.result
    assert server.received == {node}


def test_config_bounds_name_what_was_broken() -> None:
    with pytest.raises(ValueError, match=r"min_contributions must be in \[2, params.num_clients=8\]"):
        CkksConfig(PARAMS, min_contributions=9)
    with pytest.raises(ValueError, match="min_contributions must be in"):
        CkksConfig(PARAMS, min_contributions=1)
    with pytest.raises(ValueError, match="max_weight must be a positive finite number"):
        CkksConfig(PARAMS, max_weight=float("inf"))
    with pytest.raises(ValueError, match="key_setup must be one of"):
        CkksConfig(PARAMS, key_setup="magic")
    with pytest.raises(ValueError, match="decryptors must be at least 1"):
        CkksConfig(PARAMS, decryptors=0)
    with pytest.raises(ValueError, match="clip and params.max_weight must be at least 1"):
        CkksConfig(CkksParams.preset("compact", num_clients=8, clip=0.5, max_weight=1.0))
    _, roster = _identities(2)
    with pytest.raises(ValueError, match="fewer than min_contributions=3"):
        CkksConfig(PARAMS, roster=roster, min_contributions=3)
    with pytest.raises(TypeError, match="params must be CkksParams"):
        CkksConfig("compact")  # type: ignore[arg-type]


def test_set_input_checks_the_weight_and_the_vector() -> None:
    fed = Federation(2, roster=False, key_setup="file")
    client = fed.clients[100]
    with pytest.raises(ValueError, match=r"weight must be in \(0, max_weight=10\]"):
        client.set_input(np.zeros(4), 11.0)
    with pytest.raises(ValueError, match="weight must be in"):
        client.set_input(np.zeros(4), 0.0)
    from fedcrypt.errors import EncodingError

    with pytest.raises(EncodingError, match="NaN"):
        client.set_input(np.array([0.0, np.nan]), 1.0)
    with pytest.raises(TypeError):
        client.set_input([0.0, 1.0], 1.0)  # type: ignore[arg-type]
    assert client.key_state is KeyState.READY


def test_importing_fedcrypt_he_stays_cheap_and_exports_the_round_lazily() -> None:
    code = (
        "import json, sys\n"
        "import fedcrypt.he\n"
        "before = sorted(m for m in ('tenseal', 'fedcrypt.he.round') if m in sys.modules)\n"
        "config = fedcrypt.he.CkksConfig(fedcrypt.he.CkksParams.preset('compact'))\n"
        "after = sorted(m for m in ('tenseal', 'fedcrypt.he.round') if m in sys.modules)\n"
        "print(json.dumps([before, after, fedcrypt.he.simulate.__module__]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after, module = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == [] and after == ["fedcrypt.he.round"] and module == "fedcrypt.he.round.simulate"
