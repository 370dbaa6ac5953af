"""The protocol model checker against the real clients (fedcrypt.testing.modelcheck).

Positive controls: on the weakened client that restores the rule the outside review broke
(tests/secagg/_legacy.py), the checker finds break 1 (SecAgg+ with signatures: two groups
sign different survivor sets) and every plan it reports recovers the victim's input exactly
when replayed with real cryptography. Break 2 (a server that deviates in the
honest-but-curious mode) is found on today's client too: that mode is secure only against a
server that follows the protocol, and it says so with a warning. On the fixed client the
checker finds no plan for the malicious-server mode, and none for an honest-but-curious
server with dropouts and colluders. The grid (SecAgg n <= 7, SecAgg+ n <= 8, every
accepted t, c <= 2, both modes) and SecAgg+ with ten clients run in the slow suite.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fedcrypt.errors import HonestButCuriousWarning
from fedcrypt.secagg import ClientProtocol, SecAggConfig
from fedcrypt.testing.modelcheck import check, configurations, replay

from ._legacy import LegacyClient

pytestmark = pytest.mark.filterwarnings("ignore::fedcrypt.errors.HonestButCuriousWarning")

SECAGG_PLUS = dict(num_clients=8, threshold=3, neighbours=4, graph_seed=b"g")


def _replays_exactly(config: SecAggConfig, result, factory) -> None:
    assert result.plans, "expected a plan"
    recovered, true = replay(config, result.plans[0], factory)
    assert np.array_equal(recovered, true)


def test_break_1_is_found_on_the_weakened_client_and_recovers_the_input() -> None:
    config = SecAggConfig(verify_survivors=True, **SECAGG_PLUS)
    result = check(config, client_factory=LegacyClient)
    _replays_exactly(config, result, LegacyClient)
    groups = result.plans[0].groups
    assert len(groups) == 2 and not (groups[0][1] & groups[1][1])  # two disjoint signing groups


def test_break_1_finds_no_plan_on_the_fixed_client() -> None:
    result = check(SecAggConfig(verify_survivors=True, **SECAGG_PLUS))
    assert result.safe and result.rounds > 0 and result.probes > 0


@pytest.mark.parametrize("kwargs", [dict(num_clients=5, threshold=3), SECAGG_PLUS], ids=["secagg", "secagg+"])
def test_break_2_a_deviating_server_breaks_the_honest_but_curious_mode_which_warns(kwargs) -> None:
    config = SecAggConfig(**kwargs)
    result = check(config, server="malicious")
    _replays_exactly(config, result, ClientProtocol)
    assert len(result.plans[0].masking_set) == config.threshold - 1  # the victim masked with t-1 peers
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ClientProtocol(config, 0)
    assert any(issubclass(w.category, HonestButCuriousWarning) for w in caught)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_clients=5, threshold=3),
        dict(num_clients=5, threshold=4, max_colluders=1),
        dict(num_clients=6, threshold=5, max_colluders=2),
        dict(num_clients=7, threshold=4),
    ],
    ids=["n5-t3", "n5-t4-c1", "n6-t5-c2", "n7-t4"],
)
def test_the_malicious_server_finds_no_plan_against_the_fixed_secagg_client(kwargs) -> None:
    assert check(SecAggConfig(verify_survivors=True, **kwargs)).safe


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_clients=5, threshold=3), dict(num_clients=5, threshold=4, max_colluders=1), SECAGG_PLUS],
    ids=["n5-t3", "n5-t4-c1", "secagg+"],
)
def test_an_honest_but_curious_server_with_dropouts_and_colluders_finds_no_plan(kwargs) -> None:
    result = check(SecAggConfig(**kwargs), server="honest-but-curious")
    assert result.safe and result.rounds > 1  # several dropout patterns were tried


def test_colluders_beyond_the_configured_bound_are_found() -> None:
    # the config promises safety for c = 0; two colluders among the victim's five holders
    # (2t = 6 <= m + c = 7) hand over both of their shares and the search finds a plan
    config = SecAggConfig(num_clients=5, threshold=3, verify_survivors=True)
    result = check(config, colluders=2)
    _replays_exactly(config, result, ClientProtocol)


def test_the_grid_covers_both_modes_and_both_graphs() -> None:
    grid = configurations(max_secagg=4, max_secagg_plus=6, max_colluders=1)
    assert {c.threat_model for c in grid} == {"malicious-server", "honest-but-curious"}
    assert any(c.complete_graph for c in grid) and any(not c.complete_graph for c in grid)
    assert all(2 * c.threshold > c.share_holders + c.max_colluders for c in grid)


@pytest.mark.slow
def test_no_plan_for_any_accepted_configuration_within_the_bounds() -> None:
    # SecAgg n <= 7 and SecAgg+ n <= 8, every accepted t and c <= 2, both modes: 172
    # configurations (about 16 minutes on two shared cores)
    found = []
    for config in configurations(max_secagg=7, max_secagg_plus=8, max_colluders=2):
        server = "malicious" if config.verify_survivors else "honest-but-curious"
        result = check(config, server=server)
        if not result.safe:
            found.append((config, result.plans[0].describe()))
    assert not found, found


@pytest.mark.slow
def test_no_plan_for_secagg_plus_with_ten_clients() -> None:
    config = SecAggConfig(num_clients=10, threshold=3, neighbours=4, verify_survivors=True, graph_seed=b"model-check")
    result = check(config)
    assert result.safe and result.rounds > 0


def _review_break_1(config: SecAggConfig, factory) -> bool:
    """The review's break 1 at its own sizes, too large to enumerate: the victim is shown only
    ``R`` (``t - 1`` of its neighbours); ``{victim} + R`` sign a survivor set without the
    victim's other neighbours, everyone else signs one without ``R``. True if some ``R``
    makes the real clients reveal every mask of the victim's input."""
    from itertools import combinations

    from fedcrypt.testing import modelcheck as mc

    victim, n = 0, config.num_clients
    neighbours = sorted(config.neighbourhood(victim, mc._ROUND))
    for R in combinations(neighbours, config.threshold - 1):
        view = mc._View(config, victim, frozenset(), frozenset(R), frozenset(), factory)
        search = mc._Search(config, "malicious", factory, mc.CheckResult(config, "malicious"))
        search.signed, search.after_sign = {}, {}
        first = tuple(sorted(set(range(n)) - (set(neighbours) - set(R))))
        second = tuple(sorted(set(range(n)) - set(R) - {victim}))
        group1 = search.sign(view, first) & ({victim} | set(R))
        group2 = search.sign(view, second)
        if search.confirm(view, frozenset(), ((first, group1), (second, group2))) is not None:
            return True
    return False


@pytest.mark.parametrize(
    "n, k, t",
    # n=100 (about 9 minutes) is run by hand (-m heavy): CI's 90 minutes are nearly spent
    [(8, 4, 3), (16, 6, 4), pytest.param(100, 10, 6, marks=pytest.mark.heavy)],
    ids=["n8", "n16", "n100"],
)
def test_the_reviews_break_1_at_its_sizes_works_on_the_old_rule_and_not_on_the_fixed_client(n, k, t) -> None:
    config = SecAggConfig(num_clients=n, threshold=t, neighbours=k, verify_survivors=True, graph_seed=b"review")
    assert _review_break_1(config, LegacyClient)
    assert not _review_break_1(config, ClientProtocol)
