"""fedcrypt.secagg.setup: how a round starts over a transport (the rules a transport applies, sans-IO).

The Flower adapter runs them over real messages (tests/flower); these pin each rule directly.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import MalformedMessageError, ProtocolViolationError, RoundAbortedError, UnexpectedMessageError
from fedcrypt.identity import NodeIdentity, Roster
from fedcrypt.secagg import SecAggConfig
from fedcrypt.secagg.membership import graph_seed
from fedcrypt.secagg.setup import (
    check_join,
    config_for,
    dp_from_bytes,
    dp_to_bytes,
    dump_config,
    identify_bytes,
    load_config,
    round_binding,
    weight_bytes,
)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 40), fraction=st.floats(0.51, 1.0), colluders=st.integers(0, 3), k=st.sampled_from([None, 4, 8]))
def test_the_threshold_is_the_largest_of_the_fraction_a_majority_plus_colluders_and_c_plus_2(n, fraction, colluders, k) -> None:
    try:
        config = config_for(n, threshold=fraction, neighbours=k, max_colluders=colluders)
    except ValueError:
        return  # no safe config (the message names the bound; the adapter aborts the round)
    holders = config.share_holders
    assert config.neighbours is None or config.neighbours < n - 1  # k >= n - 1 is the complete graph
    assert config.threshold == min(holders, max((holders + colluders) // 2 + 1, colluders + 2, math.ceil(fraction * holders)))
    assert not config.verify_survivors and config.max_colluders == colluders


def test_a_roster_turns_on_the_malicious_server_mode_and_derives_the_graph_seed() -> None:
    roster = Roster({f"m{i}": NodeIdentity.generate().public_bytes for i in range(8)})
    members = tuple(f"m{i}" for i in range(8))
    plus = config_for(8, neighbours=4, roster=roster, round_id=3, members=members)
    assert plus.verify_survivors and plus.graph_seed == graph_seed(roster, 3, members)
    assert config_for(8, neighbours=4, roster=roster, round_id=4, members=members).graph_seed != plus.graph_seed
    full = config_for(8, roster=roster, round_id=3, members=members)
    assert full.verify_survivors and full.graph_seed == b""  # the complete graph needs no seed


def test_a_node_joins_only_at_its_own_position_once_per_round_with_enough_clients() -> None:
    config = SecAggConfig(num_clients=3, threshold=2)
    nodes = [10, 20, 30]
    check_join(config, nodes=nodes, client_id=1, node=20, round_id=5, last_round=4, min_clients=3)
    with pytest.raises(UnexpectedMessageError, match="this node is not client 0"):
        check_join(config, nodes=nodes, client_id=0, node=20, round_id=5, last_round=None, min_clients=2)
    with pytest.raises(UnexpectedMessageError, match="this node is not client 1 of the round's 2 nodes"):
        check_join(config, nodes=[10, 20], client_id=1, node=20, round_id=5, last_round=None, min_clients=2)
    with pytest.raises(UnexpectedMessageError, match=r"already joined round 5 \(replay\)"):
        check_join(config, nodes=nodes, client_id=1, node=20, round_id=5, last_round=5, min_clients=2)
    with pytest.raises(RoundAbortedError, match="3 clients is fewer than this client's minimum 4"):
        check_join(config, nodes=nodes, client_id=1, node=20, round_id=5, last_round=None, min_clients=4)


def test_the_dp_settings_round_trip_and_a_node_holds_its_noise_floor() -> None:
    config = SecAggConfig(num_clients=3, threshold=2)
    raw = dp_to_bytes(1.0, 2.0, 20, "ddgauss", bytes(range(32)))
    dp = dp_from_bytes(raw, 3)
    assert dp.config.noise_multiplier == 1.0 and dp.config.clip == 2.0 and dp.rotation_seed == bytes(range(32))
    assert dp_from_bytes(b"", 3) is None
    for bad in (raw[:-1], raw + b"\x00", raw[:17] + b"\x09" + raw[18:]):  # truncated, extended, unknown mechanism
        with pytest.raises(MalformedMessageError):
            dp_from_bytes(bad, 3)
    where = {"nodes": [10, 20, 30], "client_id": 0, "node": 10, "round_id": 1, "last_round": None, "min_clients": 2}
    check_join(config, dp=dp, min_noise_multiplier=1.0, **where)
    with pytest.raises(ProtocolViolationError, match="offers noise multiplier 1.0; this client requires at least 1.5"):
        check_join(config, dp=dp, min_noise_multiplier=1.5, **where)
    with pytest.raises(ProtocolViolationError, match="offers no distributed DP"):
        check_join(config, dp=None, min_noise_multiplier=0.5, **where)
    with pytest.raises(MalformedMessageError, match="32-bit ring"):
        check_join(SecAggConfig(num_clients=3, threshold=2, bits=64), dp=dp, **where)


def test_bindings_and_statements_separate_what_they_bind() -> None:
    base = round_binding(1, 2, b"setup")
    assert len({base, round_binding(2, 2, b"setup"), round_binding(1, 3, b"setup"), round_binding(1, 2, b"setup!")}) == 4
    # every field is length-prefixed: no two field lists share a binding (attacker review 5's max-weight)
    assert round_binding(1, 2, b"ab", b"c") != round_binding(1, 2, b"a", b"bc") != round_binding(1, 2, b"abc")
    assert round_binding(1, 2, b"abc") != round_binding(1, 2, b"abc", b"")
    assert round_binding(1, 2, b"n", weight_bytes(1000.0)) != round_binding(1, 2, b"n", weight_bytes(1e30))
    assert weight_bytes(1000.0) == struct.pack(">d", 1000.0)
    signed = identify_bytes(1, 7, bytes(32), "m0")
    assert signed != identify_bytes(1, 8, bytes(32), "m0") and signed != identify_bytes(1, 7, bytes(32), "m1")


def test_config_bytes_round_trip_and_refuse_garbage() -> None:
    config = SecAggConfig(num_clients=5, threshold=4, neighbours=None, max_colluders=1, verify_survivors=True)
    assert load_config(dump_config(config)) == config
    with pytest.raises(MalformedMessageError):
        load_config(dump_config(config)[:-1])
