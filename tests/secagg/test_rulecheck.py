"""The bit-set model of the client's rule (fedcrypt.testing.rulecheck): conformance, then search."""

from __future__ import annotations

import pytest

from fedcrypt.secagg import ClientProtocol, SecAggConfig
from fedcrypt.testing import modelcheck
from fedcrypt.testing.rulecheck import Rule, check_honest_rule, check_rule, conformance, grid, honest_grid

from ._legacy import LegacyClient

pytestmark = pytest.mark.filterwarnings("ignore::fedcrypt.errors.HonestButCuriousWarning")

LEGACY = Rule(quorum=False, attestations=False, survivor_holders=False)
CONFIGS = {
    "secagg": dict(num_clients=5, threshold=3),
    "secagg+": dict(num_clients=8, threshold=3, neighbours=4, graph_seed=b"g"),
    "secagg+c1": dict(num_clients=6, threshold=4, neighbours=4, max_colluders=1, graph_seed=b"g"),
}


@pytest.mark.parametrize("verify", [True, False], ids=["malicious-server", "honest-but-curious"])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_the_model_agrees_with_the_real_client_and_with_the_weakened_one(kind, verify) -> None:
    config = SecAggConfig(verify_survivors=verify, **CONFIGS[kind])
    assert conformance(config, trials=20, seed=1) == []
    assert conformance(config, trials=20, seed=2, client_factory=LegacyClient, rule=LEGACY) == []


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_the_model_agrees_with_the_real_client_when_clients_drop_before_sharing_keys(kind) -> None:
    # the honest server's views: random early dropouts, the victim masks with every neighbour that shared
    config = SecAggConfig(verify_survivors=False, **CONFIGS[kind])
    assert conformance(config, trials=25, seed=5, dropouts=True) == []
    assert conformance(config, trials=25, seed=6, client_factory=LegacyClient, rule=LEGACY, dropouts=True) == []


@pytest.mark.parametrize("kind", ["secagg", "secagg+c1"])
def test_the_honest_server_search_on_the_model_agrees_with_the_real_client_search(kind) -> None:
    config = SecAggConfig(verify_survivors=False, **CONFIGS[kind])
    model = check_honest_rule(config, conformance_trials=10)
    real = modelcheck.check(config, server="honest-but-curious")
    assert model.safe and real.safe and model.rounds == real.rounds > 0
    # positive control: t - 1 colluders plus the victim's own share give its self-mask seed, and
    # both searches find the plan that drops every honest neighbour after it shared keys
    too_many = config.threshold - 1
    model = check_honest_rule(config, colluders=too_many, conformance_trials=5)
    real = modelcheck.check(config, server="honest-but-curious", colluders=too_many)
    assert model.plans and real.plans  # the model's plan was replayed with real clients
    recovered, true = modelcheck.replay(config, model.plans[0])
    assert (recovered == true).all()


def test_conformance_finds_a_client_that_breaks_the_model() -> None:
    # negative control: today's model against the pre-fix client must disagree somewhere
    config = SecAggConfig(verify_survivors=True, **CONFIGS["secagg+"])
    assert conformance(config, trials=60, seed=3, client_factory=LegacyClient)


def test_the_search_on_the_model_finds_break_1_on_the_weakened_rule_and_none_today() -> None:
    config = SecAggConfig(verify_survivors=True, **CONFIGS["secagg+"])
    weakened = check_rule(config, rule=LEGACY, client_factory=LegacyClient, conformance_trials=20)
    assert weakened.plans and len(weakened.plans[0].groups) == 2  # replayed exactly before reported
    today = check_rule(config, conformance_trials=20)
    assert today.safe and today.rounds > 0


def test_the_grid_is_every_accepted_secagg_plus_configuration_up_to_ten_clients() -> None:
    configs = grid()
    assert {c.num_clients for c in configs} == set(range(4, 11)) - {5}  # n=5 has no SecAgg+ degree
    assert all(c.verify_survivors and not c.complete_graph for c in configs)
    assert {c.max_colluders for c in configs} == {0, 1, 2}


@pytest.mark.slow
def test_no_plan_for_any_secagg_plus_configuration_with_nine_clients() -> None:
    found = [(config, check_rule(config).plans) for config in grid() if config.num_clients == 9]
    assert len(found) == 17 and not [f for f in found if f[1]], found


@pytest.mark.slow
def test_no_plan_for_an_honest_server_in_any_honest_but_curious_secagg_plus_configuration_with_nine_or_ten_clients() -> None:
    # modelcheck's real-client search covers n <= 8 (tests/secagg/test_modelcheck.py)
    configs = honest_grid(9, 10)
    assert {c.num_clients for c in configs} == {9, 10} and not any(c.verify_survivors for c in configs)
    found = [(config, check_honest_rule(config, conformance_trials=10).plans) for config in configs]
    assert not [f for f in found if f[1]], found


@pytest.mark.heavy
def test_no_plan_for_any_secagg_plus_configuration_up_to_ten_clients() -> None:
    found = [(config, check_rule(config).plans) for config in grid()]
    assert not [f for f in found if f[1]], found
