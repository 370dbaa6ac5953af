"""SecAgg over Flower with a roster: the malicious-server mode through real Flower messages.

Every node holds an identity key file and the federation's roster pinned by digest (node
config ``fedcrypt-identity``, ``fedcrypt-roster``, ``fedcrypt-roster-digest``); the
workflow holds the roster. A server that substitutes a key, tells nodes different survivor
sets, downgrades the round to honest-but-curious or lets an impostor in is refused with a
typed error, and no share leaves a node.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.identity import NodeIdentity, Roster
from fedcrypt.secagg import setup as secagg_setup
from fedcrypt.integrations.flower import (
    IDENTIFY_RECORD,
    NODE_IDENTITY,
    NODE_MAX_COLLUDERS,
    NODE_ROSTER,
    NODE_ROSTER_DIGEST,
    RECORD,
    SecAggWorkflow,
    secagg_mod,
)
from fedcrypt.secagg import AdvertiseKeys, KeyDirectory, Stage, UnmaskRequest, decode_message

from ._inprocess import InProcessGrid
from .test_flower_adapter import fedavg_tolerance, make_app, plaintext_fedavg, run_rounds, weight_of


def federation(tmp_path, num_nodes: int, *, tamper=None, fault=None, members=None, mods=None):
    """A grid whose nodes (ClientApps with ``mods``, default SecAgg's) each hold an identity and
    the pinned roster; the roster; the identities by member name."""
    grid = InProcessGrid(make_app(mods or [secagg_mod]), num_nodes, {}, tamper=tamper, fault=fault)
    identities = {}
    for i, node in enumerate(grid.node_ids):
        identity = NodeIdentity.generate()
        identity.save(tmp_path / f"node-{i}.pem")
        identities[f"node-{i}"] = identity
    roster = Roster({name: identity.public_bytes for name, identity in identities.items()})
    roster.save(tmp_path / "roster.txt")
    for i, node in enumerate(grid.node_ids):
        if members is not None and i not in members:
            continue
        grid.contexts[node].node_config.update(
            {
                NODE_IDENTITY: str(tmp_path / f"node-{i}.pem"),
                NODE_ROSTER: str(tmp_path / "roster.txt"),
                NODE_ROSTER_DIGEST: roster.digest().hex(),
            }
        )
    return grid, roster, identities


def payload_of(message: Message):
    if RECORD not in message.content.keys() or not message.content[RECORD]["payload"]:
        return None  # the identification and the setup carry no protocol message
    return decode_message(message.content[RECORD]["payload"])


def with_payload(message: Message, new) -> Message:
    message.content[RECORD]["payload"] = new.to_bytes()
    return message


@pytest.mark.parametrize("neighbours", [None, 4], ids=["secagg", "secagg+"])
def test_a_roster_round_equals_plaintext_fedavg_and_names_are_asked_once(tmp_path, neighbours) -> None:
    n = 6
    grid, roster, _ = federation(tmp_path, n)
    workflow = SecAggWorkflow(clip=8.0, roster=roster, neighbours=neighbours)
    result = run_rounds(grid, workflow, rounds=2)
    assert workflow.config_for(n).verify_survivors and workflow.config_for(n).threat_model == "malicious-server"
    expected, _ = plaintext_fedavg([list(range(n))] * 2)
    tol = fedavg_tolerance(workflow, n, [weight_of(p) for p in range(n)], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)
    assert all(not r.refused and not r.dropped and r.aborted is None for r in workflow.reports)
    # one identification per node, then cached: 2 rounds x 5 stages + 1
    assert grid.calls == n * (2 * 5 + 1)


def test_a_node_dropping_at_the_consistency_check_leaves_the_survivors_average(tmp_path) -> None:
    n = 6  # quorum max(t=5, floor(6/2)+1) = 5: one node may drop
    def fault(node, request):
        record = request.content[RECORD] if RECORD in request.content.keys() else None
        if node == grid.node_ids[5] and record is not None and record["stage"] == Stage.CONSISTENCY_CHECK.name:
            return "drop"
        return None

    grid, roster, _ = federation(tmp_path, n, fault=fault)
    workflow = SecAggWorkflow(clip=8.0, roster=roster)
    result = run_rounds(grid, workflow, rounds=1)
    (report,) = workflow.reports
    assert report.aborted is None and len(report.survivors) == n  # its masked input is in the sum
    expected, _ = plaintext_fedavg([list(range(n))])
    tol = fedavg_tolerance(workflow, n, [weight_of(p) for p in range(n)], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)


def test_key_substitution_is_refused(tmp_path) -> None:
    def swap_keys(node, message):
        request = payload_of(message)
        if node == grid.node_ids[0] and isinstance(request, KeyDirectory):
            adverts = list(request.adverts)
            victim = adverts[1]
            forged = AdvertiseKeys(
                victim.round_id, victim.sender, X25519KeyPair.generate().public_bytes,
                X25519KeyPair.generate().public_bytes, victim.context, victim.signature,
            )
            adverts[1] = forged
            return with_payload(message, KeyDirectory(request.round_id, request.recipient, tuple(adverts)))
        return message

    grid, roster, _ = federation(tmp_path, 5, tamper=swap_keys)
    workflow = SecAggWorkflow(clip=8.0, roster=roster)
    run_rounds(grid, workflow, rounds=1)
    (report,) = workflow.reports
    # the node shown a substituted key refuses before it shares anything; the others finish
    assert grid.errors == [e for e in grid.errors if e.startswith("InvalidSignature")] and grid.errors
    assert report.dropped.get(grid.node_ids[0]) == Stage.SHARE_KEYS.name
    assert report.aborted is None and grid.node_ids[0] not in report.survivors


def test_different_survivor_sets_to_different_nodes_are_refused(tmp_path) -> None:
    def split(node, message):
        request = payload_of(message)
        if node == grid.node_ids[0] and isinstance(request, UnmaskRequest):
            fewer = tuple(v for v in request.survivors if v != 3)
            lie = UnmaskRequest(request.round_id, request.recipient, fewer, tuple(sorted(request.dropped + (3,))),
                                request.signatures, tuple(a for a in request.attestations if a[0] != 3))
            return with_payload(message, lie)
        return message

    grid, roster, _ = federation(tmp_path, 5, tamper=split)
    workflow = SecAggWorkflow(clip=8.0, roster=roster)
    run_rounds(grid, workflow, rounds=1)
    (report,) = workflow.reports
    # the node shown another survivor set answers nothing: no share of either kind leaves it
    assert len(grid.errors) == 1 and "differs from the one this client signed" in grid.errors[0]
    assert report.dropped.get(grid.node_ids[0]) == Stage.UNMASK.name


def test_a_node_with_a_roster_refuses_an_honest_but_curious_round(tmp_path) -> None:
    grid, roster, _ = federation(tmp_path, 4)
    workflow = SecAggWorkflow()  # the server offers no roster: a downgrade
    run_rounds(grid, workflow, rounds=1)
    (report,) = workflow.reports
    assert report.aborted is not None
    assert grid.errors and all("downgrade" in e for e in grid.errors)


def test_nodes_that_cannot_prove_membership_are_left_out(tmp_path) -> None:
    grid, roster, identities = federation(tmp_path, 5, members={0, 1, 2, 3})  # node 4 has no credentials
    workflow = SecAggWorkflow(clip=8.0, roster=roster)
    run_rounds(grid, workflow, rounds=1)
    (report,) = workflow.reports
    outsider = grid.node_ids[4]
    assert report.dropped.get(outsider) == "IDENTIFY" and outsider in report.refused
    assert report.aborted is None and sorted(report.survivors) == sorted(grid.node_ids[:4])


def test_an_impostor_claiming_a_member_name_is_refused(tmp_path) -> None:
    grid, roster, identities = federation(tmp_path, 4)
    impostor = NodeIdentity.generate()
    impostor.save(tmp_path / "impostor.pem")
    grid.contexts[grid.node_ids[3]].node_config[NODE_IDENTITY] = str(tmp_path / "impostor.pem")
    workflow = SecAggWorkflow(clip=8.0, roster=roster)
    run_rounds(grid, workflow, rounds=1)
    (report,) = workflow.reports
    assert report.dropped.get(grid.node_ids[3]) == "IDENTIFY"
    assert any("not on the roster" in e for e in grid.errors)


def test_the_identity_key_never_enters_the_context_state(tmp_path) -> None:
    grid, roster, identities = federation(tmp_path, 4)
    node = grid.node_ids[0]
    secret = identities["node-0"].signing_key.private_bytes().reveal()
    seen = []

    def snoop(node_id, message):
        seen.append(repr(grid.contexts[node].state))
        for record in grid.contexts[node].state.values():
            for value in record.values() if hasattr(record, "values") else ():
                if isinstance(value, bytes):
                    assert secret not in value
        return None

    grid.fault = snoop
    run_rounds(grid, SecAggWorkflow(clip=8.0, roster=roster), rounds=1)
    assert seen and all(secret.hex() not in text for text in seen)


def test_identification_record_is_strict(tmp_path) -> None:
    grid, roster, _ = federation(tmp_path, 2)
    node = grid.node_ids[0]
    bad = Message(RecordDict({IDENTIFY_RECORD: ConfigRecord({"challenge": b"short"})}), node, "train", group_id="x")
    from fedcrypt.errors import MalformedMessageError

    with pytest.raises(MalformedMessageError, match="32 bytes"):
        grid.client_app(bad, grid.contexts[node])


def test_nodes_refuse_a_round_declaring_fewer_colluders_than_they_assume(tmp_path) -> None:
    # attacker review: a server that declares max_colluders=0 while it holds two members'
    # keys split n=5 nodes into two groups of 3 signatures each and recovered an input;
    # nodes that assume two colluders refuse that round before they advertise anything
    grid, roster, _ = federation(tmp_path, 5)
    for node in grid.node_ids:
        grid.contexts[node].node_config[NODE_MAX_COLLUDERS] = 2
    lowered = SecAggWorkflow(clip=8.0, roster=roster)  # declares c=0
    run_rounds(grid, lowered, rounds=1)
    assert lowered.reports[0].aborted is not None
    assert len(grid.errors) == 5 and all("requires at least 2" in e for e in grid.errors)
    honest = SecAggWorkflow(clip=8.0, roster=roster, max_colluders=2)  # t=4, quorum 4
    result = run_rounds(grid, honest, rounds=1)
    assert honest.reports[0].aborted is None and honest.config_for(5).consistency_quorum == 4
    expected, _ = plaintext_fedavg([list(range(5))])
    tol = fedavg_tolerance(honest, 5, [weight_of(p) for p in range(5)], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)


def test_a_server_chosen_secagg_plus_graph_seed_is_refused(tmp_path, monkeypatch) -> None:
    # the server runs its own seed instead of the one every node derives (roster, round, members);
    # the nodes check with membership.graph_seed, which this patch leaves alone
    grid, roster, _ = federation(tmp_path, 6)
    workflow = SecAggWorkflow(clip=8.0, roster=roster, neighbours=3)
    monkeypatch.setattr(secagg_setup, "graph_seed", lambda *args: b"the server's pick")
    run_rounds(grid, workflow, rounds=1)
    assert workflow.reports[0].aborted is not None
    assert len(grid.errors) == 6 and all("graph seed" in e for e in grid.errors)
    monkeypatch.undo()
    honest = SecAggWorkflow(clip=8.0, roster=roster, neighbours=3)
    run_rounds(grid, honest, rounds=1)
    assert honest.reports[0].aborted is None and not honest.reports[0].refused


def test_half_configured_credentials_plaintext_and_bool_fields_are_refused(tmp_path) -> None:
    from fedcrypt.errors import IdentityError, MalformedMessageError, ProtocolViolationError
    from fedcrypt.integrations.flower import SecAggMod

    from .test_flower_adapter import _setup_message

    grid, roster, _ = federation(tmp_path, 3)
    node = grid.node_ids[0]
    context = grid.contexts[node]
    del context.node_config[NODE_IDENTITY], context.node_config[NODE_ROSTER]  # only the digest left
    with pytest.raises(IdentityError, match="go together"):
        grid.client_app(_setup_message(grid, node), context)
    node = grid.node_ids[1]
    plaintext = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), node, "train", group_id="1")
    mod = SecAggMod(allow_plaintext=True)
    with pytest.raises(ProtocolViolationError, match="never trains in plaintext"):
        mod(plaintext, grid.contexts[node], lambda m, c: m)
    with pytest.raises(MalformedMessageError, match="must be integers"):
        grid.client_app(_setup_message(grid, grid.node_ids[2], **{"client-id": True}), grid.contexts[grid.node_ids[2]])
