"""How a node with or without a roster joins a round (fedcrypt.secagg.membership)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import IdentityError, MalformedMessageError, ProtocolViolationError
from fedcrypt.identity import NodeIdentity, Roster
from fedcrypt.secagg import SecAggConfig
from fedcrypt.secagg.membership import pack_members, round_keys, unpack_members

NAMES = ["a", "b", "c", "d"]
IDENTITIES = {name: NodeIdentity.generate() for name in NAMES}
ROSTER = Roster({name: identity.public_bytes for name, identity in IDENTITIES.items()})
MALICIOUS = SecAggConfig(num_clients=4, threshold=3, verify_survivors=True)
HONEST_BUT_CURIOUS = SecAggConfig(num_clients=4, threshold=3)


def test_a_member_gets_its_key_and_the_rosters_keys_in_client_id_order() -> None:
    members = ["c", "a", "d", "b"]
    signing, keys = round_keys(MALICIOUS, 1, members, ROSTER, IDENTITIES["a"])
    assert signing is IDENTITIES["a"].signing_key
    assert keys == {i: ROSTER.key(name) for i, name in enumerate(members)}


def test_a_node_with_a_roster_refuses_a_downgrade_and_one_without_refuses_to_pretend() -> None:
    with pytest.raises(ProtocolViolationError, match="downgrade"):
        round_keys(HONEST_BUT_CURIOUS, 0, NAMES, ROSTER, IDENTITIES["a"])
    with pytest.raises(ProtocolViolationError, match="no roster"):
        round_keys(MALICIOUS, 0, NAMES, None, None)
    assert round_keys(HONEST_BUT_CURIOUS, 0, (), None, None) == (None, None)


@pytest.mark.parametrize(
    "members, client_id, message",
    [
        (["b", "a", "c", "d"], 0, "not this node"),  # the server put another member at this node's place
        (["a", "a", "c", "d"], 0, "twice"),
        (["a", "b", "c", "x"], 0, "not a roster member"),
        (["a", "b", "c"], 0, "3 members for 4 clients"),
    ],
)
def test_members_that_do_not_match_the_roster_or_this_node_are_refused(members, client_id, message) -> None:
    with pytest.raises(IdentityError, match=message):
        round_keys(MALICIOUS, client_id, members, ROSTER, IDENTITIES["a"])


@settings(max_examples=50, deadline=None)
@given(names=st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), max_size=8))
def test_members_round_trip_and_truncations_are_typed(names) -> None:
    data = pack_members(names)
    assert unpack_members(data) == tuple(names)
    for cut in range(len(data)):
        with pytest.raises(MalformedMessageError):
            unpack_members(data[:cut])
    with pytest.raises(MalformedMessageError, match="trailing"):
        unpack_members(data + b"\x00")


def test_a_round_declaring_fewer_colluders_than_the_node_assumes_is_refused() -> None:
    with pytest.raises(ProtocolViolationError, match="requires at least 1"):
        round_keys(MALICIOUS, 0, NAMES, ROSTER, IDENTITIES["a"], required_colluders=1)
    safer = SecAggConfig(num_clients=4, threshold=3, verify_survivors=True, max_colluders=1)
    assert round_keys(safer, 0, NAMES, ROSTER, IDENTITIES["a"], required_colluders=1)[0] is not None


SPARSE = SecAggConfig(num_clients=4, threshold=2, neighbours=2, verify_survivors=True)


def test_a_secagg_plus_round_with_a_roster_takes_only_the_graph_seed_every_node_derives() -> None:
    import dataclasses

    from fedcrypt.secagg.membership import graph_seed

    seed = graph_seed(ROSTER, 7, NAMES)
    derived = dataclasses.replace(SPARSE, graph_seed=seed)
    assert round_keys(derived, 0, NAMES, ROSTER, IDENTITIES["a"], round_id=7)[0] is not None
    # the server's own seed, the seed of another round, of another member order: refused
    for config, round_id, members in [
        (SPARSE, 7, NAMES),
        (dataclasses.replace(SPARSE, graph_seed=b"\x00" * 32), 7, NAMES),
        (derived, 8, NAMES),
        (dataclasses.replace(SPARSE, graph_seed=graph_seed(ROSTER, 7, ["a", "b", "d", "c"])), 7, NAMES),
    ]:
        with pytest.raises(ProtocolViolationError, match="graph seed"):
            round_keys(config, 0, members, ROSTER, IDENTITIES["a"], round_id=round_id)
    with pytest.raises(ValueError, match="round_id"):
        round_keys(derived, 0, NAMES, ROSTER, IDENTITIES["a"])
    # the complete graph has no seed to check; seeds differ with every input
    assert round_keys(MALICIOUS, 0, NAMES, ROSTER, IDENTITIES["a"])[0] is not None
    other = Roster({**{n: IDENTITIES[n].public_bytes for n in NAMES}, "e": NodeIdentity.generate().public_bytes})
    assert len({seed, graph_seed(ROSTER, 8, NAMES), graph_seed(other, 7, NAMES), graph_seed(ROSTER, 7, NAMES[::-1])}) == 4
