"""CKKS through fedcrypt's Flower adapter, in process: the real ClientApp, mod, strategy, round and TenSEAL.

Every message crosses Flower's protobuf serialisation (the in-process grid of
``tests/flower/_inprocess.py``). The adapter is a transport over :mod:`fedcrypt.he.round`,
whose every refusal is tested with real messages in ``tests/he``; here: FedAvg over real
Flower messages with and without a roster, dropouts, streaming folds, the wire format's
checks, sealed state, and a malicious server's key substitution and relabelled upload
refused with a roster (and, as positive controls, succeeding without one). The real
Flower processes are in ``test_flower_he_processes``.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tenseal")
pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from fedcrypt.crypto import X25519KeyPair  # noqa: E402
from fedcrypt.errors import RecordMismatchError  # noqa: E402
from fedcrypt.he import CkksParams, KeyOwner, open_key_from_peer  # noqa: E402
from fedcrypt.he.blob import HEADER_BYTES  # noqa: E402
from fedcrypt.he.round import (  # noqa: E402
    CkksClient,
    CkksServer,
    ContextRequest,
    DealReply,
    DealRequest,
    DecryptRequest,
    EncryptRequest,
    InstallRequest,
    Upload,
    decode_message,
)
from fedcrypt.identity import NodeIdentity  # noqa: E402
from fedcrypt.integrations.flower._state import kept, node_state_key  # noqa: E402
from fedcrypt.integrations.flower.ckks import (  # noqa: E402
    CKKS_RECORD,
    CKKS_STATE,
    CkksGrid,
    CkksMod,
    CkksWorkflow,
    ckks_mod,
    default_config,
    fedavg_error_bound,
)
from flower._inprocess import InProcessGrid, PullGrid  # noqa: E402  (tests/flower, on the test path)
from flower.test_flower_adapter import initial, make_app, plaintext_fedavg, update_of, weight_of  # noqa: E402
from flower.test_flower_roster import federation  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::fedcrypt.errors.HonestButCuriousWarning")


def run_rounds(grid: InProcessGrid, workflow: CkksWorkflow, rounds: int = 2):
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    return strategy.start(grid=CkksGrid(grid, workflow), initial_arrays=initial(), num_rounds=rounds, timeout=30)


def assert_fedavg(result, workflow: CkksWorkflow, partitions_by_round: list[list[int]]) -> None:
    """The result equals plaintext FedAvg of those partitions within the documented CKKS bound."""
    expected, expected_metrics = plaintext_fedavg(partitions_by_round)
    params = workflow.config.params
    tol = max(fedavg_error_bound(params, [weight_of(p) for p in parts], workflow.max_weight) for parts in partitions_by_round)
    assert tol < 1e-2  # the flooded bound (capacity 100, clip 4, M=1000, weights ~30-60): updates are of size ~1
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)
    final = result.train_metrics_clientapp[len(partitions_by_round)]
    assert final["loss"] == pytest.approx(expected_metrics["loss"], abs=tol * 10)


def assert_unchanged(result) -> None:
    for name, value in result.arrays.items():
        np.testing.assert_array_equal(value.numpy(), initial()[name].numpy())


def stage_of(request: Message) -> str | None:
    return request.content[CKKS_RECORD]["stage"] if CKKS_RECORD in request.content.keys() else None


def payload_of(message: Message):
    return decode_message(message.content[CKKS_RECORD]["payload"]) if stage_of(message) else None


def with_payload(message: Message, new) -> Message:
    message.content[CKKS_RECORD]["payload"] = new.to_bytes()
    return message


def tampered(mutate):
    def action(reply: Message) -> Message:
        content = RecordDict({name: reply.content[name] for name in reply.content.keys()})
        mutate(content)
        return Message(content=content, metadata=reply.metadata)

    return action


def send(grid: InProcessGrid, node: int, fields: dict, extra: RecordDict | None = None) -> Message:
    """One crafted server message to one node's ClientApp; its (wire-crossed) reply."""
    content = RecordDict({CKKS_RECORD: ConfigRecord(fields)})
    for name in (extra.keys() if extra is not None else []):
        content[name] = extra[name]
    (reply,) = grid.send_and_receive([Message(content, node, "train", group_id="x")], timeout=5)
    return reply


def request(message, extra: RecordDict | None = None) -> tuple[dict, RecordDict | None]:
    return {"stage": message.STAGE.name, "payload": message.to_bytes()}, extra


def opened(grid: InProcessGrid, node: int, config=None, identity: NodeIdentity | None = None) -> CkksClient:
    """The node's client, opened from its sealed record with the node's own state key (the test's privilege)."""
    ctxt = grid.contexts[node]
    state = kept(ctxt, node_state_key(ctxt), CKKS_STATE)
    return CkksClient.from_state_bytes(state, config=config or default_config(), identity=identity)


def train_records(server_round: int = 1) -> RecordDict:
    return RecordDict({"arrays": initial(), "config": ConfigRecord({"server-round": server_round})})


def key_file(tmp_path: Path, name: str = "group.ckks") -> tuple[str, KeyOwner]:
    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=10, clip=4.0, max_weight=1.0))
    path = tmp_path / name
    path.write_bytes(owner.to_bytes(include_secret_key=True))
    return str(path), owner


# ============================================================================ happy paths
@settings(max_examples=4, deadline=None)
@given(num_nodes=st.integers(2, 5), decryptors=st.integers(1, 3))
def test_ckks_fedavg_equals_plaintext_fedavg_with_a_dealer(num_nodes: int, decryptors: int) -> None:
    grid = InProcessGrid(make_app([ckks_mod]), num_nodes, {})
    workflow = CkksWorkflow(default_config(decryptors=decryptors))
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [list(range(num_nodes))] * 2)
    first, second = workflow.reports
    nodes = sorted(grid.node_ids)
    assert first.survivors == second.survivors == nodes
    assert first.dealt == nodes and second.dealt == []  # the key is set up once, by the lowest node id
    assert len(first.decryptors) == len(second.decryptors) == min(decryptors, num_nodes)
    fingerprints = {opened(grid, n).fingerprint for n in nodes}
    assert len(fingerprints) == 1 and first.fingerprint == second.fingerprint == fingerprints.pop().hex()
    assert all(not r.dropped and not r.refused and r.aborted is None for r in workflow.reports)
    assert "DEAL" in first.stage_seconds and "DEAL" not in second.stage_seconds


def test_out_of_band_key_files(tmp_path: Path) -> None:
    path, owner = key_file(tmp_path)
    grid = InProcessGrid(make_app([ckks_mod]), 3, {"ckks-key-path": path})
    workflow = CkksWorkflow(default_config(key_setup="file"))
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [[0, 1, 2]] * 2)
    assert workflow.aggregator is not None and workflow.aggregator.fingerprint == owner.fingerprint
    assert all(r.dealt == [] and set(r.stage_seconds) == {"CONTEXT", "ENCRYPT", "DECRYPT"} for r in workflow.reports)


def test_a_node_with_another_key_file_is_refused_and_a_tie_fails_the_round(tmp_path: Path) -> None:
    (first, _), (second, _) = key_file(tmp_path, "a"), key_file(tmp_path, "b")
    grid = InProcessGrid(make_app([ckks_mod]), 3, {"ckks-key-path": first})
    grid.contexts[grid.node_ids[2]].node_config["ckks-key-path"] = second  # the node config wins
    workflow = CkksWorkflow(default_config(key_setup="file"))
    result = run_rounds(grid, workflow, rounds=1)
    assert "another CKKS key than the one most nodes report" in workflow.reports[0].refused[grid.node_ids[2]]
    assert_fedavg(result, workflow, [[0, 1]])
    grid = InProcessGrid(make_app([ckks_mod]), 2, {"ckks-key-path": first})
    grid.contexts[grid.node_ids[1]].node_config["ckks-key-path"] = second
    workflow = CkksWorkflow(default_config(key_setup="file"))
    assert_unchanged(run_rounds(grid, workflow, rounds=1))
    assert workflow.reports[0].aborted.startswith("ContextMismatchError: the nodes report 2 different CKKS keys, none by more")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_key_file_is_read_bounded_and_refused(tmp_path: Path) -> None:
    """The run config (the server operator's) may name the key path: /dev/zero is read up
    to a bound and refused as a malformed key, not read until the node runs out of memory."""
    path, _ = key_file(tmp_path)
    grid = InProcessGrid(make_app([ckks_mod]), 3, {"ckks-key-path": "/dev/zero"})
    for node in grid.node_ids[:2]:
        grid.contexts[node].node_config["ckks-key-path"] = path
    workflow = CkksWorkflow(default_config(key_setup="file"))
    run_rounds(grid, workflow, rounds=1)
    victim = grid.node_ids[2]
    assert "MalformedMessageError: CKKS context" in workflow.reports[0].refused[victim]
    assert workflow.reports[0].survivors == sorted(grid.node_ids[:2])


def test_a_node_without_a_key_file_is_refused_in_file_mode(tmp_path: Path) -> None:
    path, _ = key_file(tmp_path)
    grid = InProcessGrid(make_app([ckks_mod]), 4, {})
    for node in grid.node_ids[:3]:
        grid.contexts[node].node_config["ckks-key-path"] = path
    workflow = CkksWorkflow(default_config(key_setup="file"))
    result = run_rounds(grid, workflow, rounds=1)
    outsider = grid.node_ids[3]
    assert workflow.reports[0].refused[outsider].startswith("SecretKeyError")
    assert workflow.reports[0].survivors == sorted(grid.node_ids[:3])
    assert_fedavg(result, workflow, [[0, 1, 2]])
    refused = send(grid, outsider, *request(ContextRequest(5, outsider)))  # a node whose config says "file"
    strict = InProcessGrid(make_app([CkksMod(default_config(key_setup="file"))]), 2, {})
    node = strict.node_ids[0]
    refused = send(strict, node, *request(ContextRequest(5, node)))
    assert refused.has_error() and "SecretKeyError" in refused.error.reason and CKKS_STATE not in strict.contexts[node].state.keys()


def test_a_late_node_without_a_key_is_refused_and_no_holder_deals_again() -> None:
    """Review break 3: a DEAL after set-up made a holder seal the key to a server-chosen X25519 key."""

    def fault(node, message):
        return "drop" if grid.partition_of(node) == 3 and message.metadata.group_id == "1" else None

    grid = InProcessGrid(make_app([ckks_mod]), 4, {}, fault=fault)
    workflow = CkksWorkflow()
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [[0, 1, 2], [0, 1, 2]])
    first, second = workflow.reports
    late = grid.node_ids[3]
    assert first.dropped == {late: "CONTEXT"} and second.dealt == []
    assert "SecretKeyError" in second.refused[late] and "key set-up is done" in second.refused[late]
    assert first.fingerprint == second.fingerprint
    holder = grid.node_ids[0]
    before = dict(grid.contexts[holder].state[CKKS_STATE])
    deal = send(grid, holder, *request(DealRequest(9, holder, ())))
    assert deal.has_error() and "UnexpectedMessageError" in deal.error.reason and "key state READY" in deal.error.reason
    assert dict(grid.contexts[holder].state[CKKS_STATE]) == before  # nothing sealed, nothing changed


def test_replies_are_pulled_one_by_one_and_uploads_folded_as_they_arrive() -> None:
    def fault(node, message):
        return "drop" if grid.partition_of(node) == 2 and stage_of(message) == "ENCRYPT" else None

    grid = PullGrid(make_app([ckks_mod]), 4, {}, fault=fault)
    workflow = CkksWorkflow(stage_timeout=0.5, train_timeout=0.5, poll_interval=0.01)
    result = run_rounds(grid, workflow, rounds=1)
    assert_fedavg(result, workflow, [[0, 1, 3]])
    assert workflow.reports[0].dropped == {grid.node_ids[2]: "ENCRYPT"}  # waited for until the timeout, then dropped
    uploads = [r for r in grid.pulled if r.content[CKKS_RECORD]["stage"] == "ENCRYPT"]
    assert len(uploads) == 3 and grid.pulls > len(grid.pulled)
    assert all(r.content[CKKS_RECORD]["payload"] == b"" for r in uploads)  # folded into the sum, not kept


# ============================================================================ dropouts
def test_a_node_dropping_before_its_upload_is_not_in_the_sum() -> None:
    def fault(node, message):
        if grid.partition_of(node) == 1 and stage_of(message) == "ENCRYPT" and message.metadata.group_id == "1":
            return "drop"
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 4, {}, fault=fault)
    workflow = CkksWorkflow()
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [[0, 2, 3], [0, 1, 2, 3]])
    victim = grid.node_ids[1]
    assert workflow.reports[0].dropped == {victim: "ENCRYPT"} and victim not in workflow.reports[0].survivors
    assert workflow.reports[1].survivors == sorted(grid.node_ids)


def test_a_node_dropping_after_its_upload_stays_in_the_sum_and_its_decryption_is_replaced() -> None:
    def fault(node, message):  # partition 0 has the lowest node id: the first decryptor chosen
        return "drop" if grid.partition_of(node) == 0 and stage_of(message) == "DECRYPT" else None

    grid = InProcessGrid(make_app([ckks_mod]), 4, {}, fault=fault)
    workflow = CkksWorkflow(default_config(decryptors=2))
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [[0, 1, 2, 3]] * 2)  # its ciphertext arrived before it dropped
    victim = grid.node_ids[0]
    for report in workflow.reports:
        assert victim in report.survivors and report.dropped == {victim: "DECRYPT"}
        assert len(report.decryptors) == 2 and victim not in report.decryptors


def test_too_few_decryptors_or_uploads_fail_the_round_and_keep_the_model() -> None:
    def fault(node, message):
        return "drop" if grid.partition_of(node) == 1 and stage_of(message) == stage else None

    stage = "DECRYPT"
    grid = InProcessGrid(make_app([ckks_mod]), 2, {}, fault=fault)
    workflow = CkksWorkflow(default_config(decryptors=2))
    assert_unchanged(run_rounds(grid, workflow, rounds=1))
    report = workflow.reports[0]
    assert report.aborted.startswith("RoundAbortedError: 1 of the 2 decryptions needed arrived")
    assert report.decryptors == [grid.node_ids[0]]
    stage = "ENCRYPT"
    grid = InProcessGrid(make_app([ckks_mod]), 2, {}, fault=fault)
    workflow = CkksWorkflow()
    assert_unchanged(run_rounds(grid, workflow, rounds=1))
    assert workflow.reports[0].aborted.startswith("RoundAbortedError: 1 uploads arrived, fewer than min_contributions=2")
    assert "DECRYPT" not in workflow.reports[0].stage_seconds  # nothing was sent for decryption


@settings(max_examples=8, deadline=None)
@given(drops=st.lists(st.sampled_from([None, "CONTEXT", "INSTALL", "ENCRYPT", "DECRYPT"]), min_size=3, max_size=5))
def test_dropouts_at_any_stage_give_fedavg_of_the_uploaders_or_no_reply(drops: list[str | None]) -> None:
    """Invariant: the sum holds exactly the nodes whose upload arrived; the round fails iff too few remain."""

    def fault(node, message):
        return "drop" if stage_of(message) == drops[grid.partition_of(node)] else None

    grid = InProcessGrid(make_app([ckks_mod]), len(drops), {}, fault=fault)
    workflow = CkksWorkflow(default_config(decryptors=2))
    result = run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    keyed = [p for p, d in enumerate(drops) if d != "CONTEXT"]
    dealer = min(keyed, key=lambda p: grid.node_ids[p]) if keyed else None
    # the dealer gets no INSTALL message, so "dropping at INSTALL" does not affect it
    uploaders = sorted(p for p in keyed if drops[p] in (None, "DECRYPT") or (p == dealer and drops[p] == "INSTALL"))
    decryptors = [p for p in uploaders if drops[p] != "DECRYPT"]
    if len(keyed) >= 2 and len(uploaders) >= 2 and len(decryptors) >= min(2, len(uploaders)):
        assert report.aborted is None
        assert report.survivors == sorted(grid.node_ids[p] for p in uploaders)
        assert_fedavg(result, workflow, [uploaders])
    else:
        assert report.aborted is not None
        assert_unchanged(result)


def test_one_node_with_another_layout_is_refused_alone() -> None:
    """Attacker review 5's layout race: the first upload's layout no longer becomes the round's."""
    app = ClientApp(mods=[ckks_mod])

    @app.train()
    def train(msg: Message, context) -> Message:
        partition = int(context.node_config["partition-id"])
        arrays = {name: arr.numpy() for name, arr in msg.content["arrays"].items()}
        new = update_of(partition, int(msg.content["config"]["server-round"]), arrays)
        metrics = {"num-examples": weight_of(partition), "loss": float(partition)}
        if partition == 0:
            metrics["renamed-metric"] = 0.0  # another layout, same arrays
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in new.items()}), "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    grid = InProcessGrid(app, 4, {})
    workflow = CkksWorkflow()
    result = run_rounds(grid, workflow, rounds=1)
    report, odd = workflow.reports[0], grid.node_ids[0]
    assert report.aborted is None and "another layout than the most uploads'" in report.refused[odd]
    assert_fedavg(result, workflow, [[1, 2, 3]])


# ============================================================================ decryptors
def test_a_decryptor_that_disagrees_is_outvoted() -> None:
    def shift_last_value(content: RecordDict) -> None:
        payload = bytearray(content[CKKS_RECORD]["payload"])
        payload[-1] ^= 0x01  # an exponent bit of the last float64 (little-endian)
        content[CKKS_RECORD]["payload"] = bytes(payload)

    def fault(node, message):
        return tampered(shift_last_value) if grid.partition_of(node) == 1 and stage_of(message) == "DECRYPT" else None

    grid = InProcessGrid(make_app([ckks_mod]), 3, {}, fault=fault)
    workflow = CkksWorkflow(default_config(decryptors=2))
    assert_fedavg(run_rounds(grid, workflow, rounds=1), workflow, [[0, 1, 2]])
    report, liar = workflow.reports[0], grid.node_ids[1]
    assert report.aborted is None and liar not in report.decryptors and len(report.decryptors) == 2
    assert "differs" in report.refused[liar]


def test_decryptors_refuse_a_sum_of_fewer_uploads_than_their_own_minimum() -> None:
    grid = InProcessGrid(make_app([CkksMod(default_config(min_contributions=3))]), 2, {})
    workflow = CkksWorkflow(default_config(decryptors=2))
    assert_unchanged(run_rounds(grid, workflow, rounds=1))
    report = workflow.reports[0]
    assert report.aborted is not None and report.decryptors == []
    for node in grid.node_ids:
        assert "ProtocolViolationError" in report.refused[node] and "fewer than min_contributions=3" in report.refused[node]


def test_a_decryptor_releases_one_decryption_per_own_upload_and_refuses_a_tampered_header() -> None:
    """Review break 3: relabelled uploads decrypted with server-chosen round ids 1000-1002."""
    grid = InProcessGrid(make_app([ckks_mod]), 3, {})
    workflow = CkksWorkflow(default_config(decryptors=1))
    run_rounds(grid, workflow, rounds=1)
    (decryptor,) = workflow.reports[0].decryptors
    owner = opened(grid, decryptor)._owner
    other = next(n for n in grid.node_ids if n != decryptor)  # uploaded once, decrypted nothing yet
    layout = opened(grid, other)._upload[2]  # the server knows it: every upload's header names it
    total = workflow.aggregator.start()
    for value in (1.0, 2.0):
        total.add(owner.encrypt(np.full(8, value), layout), 1)
    aggregate = total.finish()
    before = dict(grid.contexts[decryptor].state[CKKS_STATE])
    for round_id in (1000, 1001, 1002):
        reply = send(grid, decryptor, *request(DecryptRequest(round_id, decryptor, aggregate)))
        assert reply.has_error() and "UnexpectedMessageError" in reply.error.reason and "one per upload" in reply.error.reason
    assert dict(grid.contexts[decryptor].state[CKKS_STATE]) == before  # refusals change nothing
    forged = bytearray(aggregate)
    forged[HEADER_BYTES - 12 : HEADER_BYTES - 4] = struct.pack(">d", 20.0)  # total weight 2 -> 20
    reply = send(grid, other, *request(DecryptRequest(2, other, bytes(forged))))
    assert reply.has_error() and "ProtocolViolationError" in reply.error.reason and "tampered header" in reply.error.reason
    single = send(grid, other, *request(DecryptRequest(2, other, owner.encrypt(np.ones(8)))))
    assert single.has_error() and "single upload" in single.error.reason
    assert opened(grid, other).decryptions == 0


# ============================================================================ the node's state and the wire format
def test_the_client_is_kept_sealed_and_a_swapped_record_decrypts_nothing() -> None:
    """Context.state holds one sealed record per node, no secret-key bytes in the clear; two
    nodes' records swapped (under the shared default state key) are refused before anything."""
    grid = InProcessGrid(make_app([ckks_mod]), 3, {})
    workflow = CkksWorkflow(default_config(decryptors=1))
    run_rounds(grid, workflow, rounds=1)
    (decryptor,) = workflow.reports[0].decryptors
    other = next(node for node in grid.node_ids if node != decryptor)
    key = opened(grid, decryptor)._owner.to_bytes(include_secret_key=True)
    secret_part = key[len(opened(grid, decryptor)._owner.aggregator_context().to_bytes()) :]
    for node in grid.node_ids:
        record = grid.contexts[node].state[CKKS_STATE]
        assert set(record.keys()) == {"sealed"}
        assert all(secret_part[i : i + 32] not in record["sealed"] for i in range(0, len(secret_part) - 32, 997))
    mine, theirs = grid.contexts[decryptor].state[CKKS_STATE], grid.contexts[other].state[CKKS_STATE]
    grid.contexts[decryptor].state[CKKS_STATE], grid.contexts[other].state[CKKS_STATE] = theirs, mine
    reply = send(grid, decryptor, *request(DecryptRequest(2, decryptor, b"")))
    assert reply.has_error() and "DecryptionError" in reply.error.reason and "moved from another" in reply.error.reason
    assert dict(grid.contexts[decryptor].state[CKKS_STATE]) == dict(theirs)


def test_a_node_encrypts_once_per_round_and_only_under_its_key() -> None:
    grid = InProcessGrid(make_app([ckks_mod]), 2, {})
    workflow = CkksWorkflow()
    run_rounds(grid, workflow, rounds=1)
    node = grid.node_ids[0]
    before = dict(grid.contexts[node].state[CKKS_STATE])
    fingerprint = workflow.aggregator.fingerprint
    replay = send(grid, node, *request(EncryptRequest(1, node, fingerprint), train_records(1)))
    assert replay.has_error() and "UnexpectedMessageError" in replay.error.reason and "(replay)" in replay.error.reason
    assert dict(grid.contexts[node].state[CKKS_STATE]) == before
    other_key = send(grid, node, *request(EncryptRequest(2, node, bytes(32)), train_records(2)))
    assert other_key.has_error() and "ContextMismatchError" in other_key.error.reason


def _add_record(content: RecordDict) -> None:
    content["surprise"] = ConfigRecord({"x": 1})


def _add_field(content: RecordDict) -> None:
    content[CKKS_RECORD]["surplus"] = b"x"


def _drop_field(content: RecordDict) -> None:
    del content[CKKS_RECORD]["layout"]


@pytest.mark.parametrize(
    "mutate, missing, extra", [(_add_record, (), ("surprise",)), (_add_field, (), ("surplus",)), (_drop_field, ("layout",), ())]
)
def test_server_refuses_a_reply_with_missing_or_extra_records(mutate, missing, extra) -> None:
    def fault(node, message):
        return tampered(mutate) if grid.partition_of(node) == 0 and stage_of(message) == "ENCRYPT" else None

    grid = InProcessGrid(make_app([ckks_mod]), 4, {}, fault=fault)
    workflow = CkksWorkflow()
    result = run_rounds(grid, workflow, rounds=1)
    node, report = grid.node_ids[0], workflow.reports[0]
    assert report.refused[node].startswith("RecordMismatchError")
    for name in missing + extra:
        assert repr(name) in report.refused[node]
    assert node not in report.survivors
    assert_fedavg(result, workflow, [[1, 2, 3]])


def test_client_refuses_a_message_with_missing_or_extra_records_or_another_stage() -> None:
    grid = InProcessGrid(make_app([ckks_mod]), 2, {})
    node = grid.node_ids[0]
    context = ContextRequest(1, node).to_bytes()
    cases = [
        ({"stage": "CONTEXT", "payload": context}, RecordDict({"surprise": ConfigRecord({"x": 1})}), "RecordMismatchError", "'surprise'"),
        ({"stage": "CONTEXT"}, None, "RecordMismatchError", "'payload'"),
        ({"stage": "CONTEXT", "payload": context, "spare": 1}, None, "RecordMismatchError", "'spare'"),
        ({"stage": "ENCRYPT", "payload": context}, None, "RecordMismatchError", "carries no train records"),
        ({"stage": "DECRYPT", "payload": context}, None, "UnexpectedMessageError", "a ContextRequest in a DECRYPT message"),
        ({"stage": "CONTEXT", "payload": b"\x00" * 30}, None, "MalformedMessageError", ""),
    ]
    for fields, extra, error, named in cases:
        reply = send(grid, node, fields, extra)
        assert reply.has_error() and reply.error.reason.startswith(error) and named in reply.error.reason
    assert CKKS_STATE not in grid.contexts[node].state.keys()  # nothing was kept


def test_client_refuses_a_plaintext_train_message_and_passes_other_messages() -> None:
    grid = InProcessGrid(make_app([ckks_mod]), 2, {})
    (reply,) = grid.send_and_receive([Message(train_records(), grid.node_ids[0], "train", group_id="p")], timeout=5)
    assert reply.has_error() and reply.error.reason.startswith("RecordMismatchError") and repr(CKKS_RECORD) in reply.error.reason
    relaxed = InProcessGrid(make_app([CkksMod(allow_plaintext=True)]), 2, {})
    (plain,) = relaxed.send_and_receive([Message(train_records(), relaxed.node_ids[0], "train", group_id="p")], timeout=5)
    assert not plain.has_error() and "arrays" in plain.content.keys()


def test_workflow_and_mod_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"^key_setup must be one of \('dealer', 'file'\), got 'pki'$"):
        default_config(key_setup="pki")
    with pytest.raises(TypeError, match=r"^config must be a CkksConfig, got str$"):
        CkksWorkflow("compact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^poll_interval must be a positive number of seconds, got 0$"):
        CkksWorkflow(poll_interval=0)
    with pytest.raises(TypeError, match=r"^allow_plaintext must be a bool, got int$"):
        CkksMod(allow_plaintext=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="comes from its credentials"):
        CkksMod(default_config(roster=_roster()))
    with pytest.raises(TypeError, match=r"^workflow must be a CkksWorkflow, got str$"):
        CkksGrid(InProcessGrid(make_app([ckks_mod]), 2, {}), "x")  # type: ignore[arg-type]


def _roster():
    from fedcrypt.identity import Roster

    return Roster({f"n{i}": NodeIdentity.generate().public_bytes for i in range(3)})


# ============================================================================ a roster: the malicious-server mode
def _roster_federation(tmp_path, num_nodes: int, **kwargs):
    grid, roster, identities = federation(tmp_path, num_nodes, mods=[ckks_mod], **kwargs)
    by_node = {node: identities[f"node-{i}"] for i, node in enumerate(grid.node_ids)}
    return grid, CkksWorkflow(default_config(roster=roster)), roster, by_node


def test_a_roster_round_equals_plaintext_fedavg(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    grid, workflow, roster, identities = _roster_federation(tmp_path, 4)
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [[0, 1, 2, 3]] * 2)
    assert all(r.aborted is None and not r.refused and not r.dropped for r in workflow.reports)
    assert "CONFIRM" in workflow.reports[0].stage_seconds and workflow.config.threat_model == "malicious-server"
    assert "honest-but-curious" not in caplog.text
    node = grid.node_ids[1]
    client = opened(grid, node, default_config(roster=roster), identities[node])
    assert client.member == "node-1" and client.uploads == 2


class _OneUploadParts(CkksServer):
    """The core server with one upload per streamed part (the default part is 16 MiB)."""

    __slots__ = ()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, part_bytes=1, **kwargs)


class _StreamingWorkflow(CkksWorkflow):
    SERVER = _OneUploadParts


def test_a_roster_round_streams_the_set_to_decryptors_through_flower_messages(tmp_path) -> None:
    """With one upload per part every decryptor gets SumPart 0..n-2 then the last DecryptRequest,
    each through the mod with its sealed state between them; the model is plaintext FedAvg."""
    seen: list[tuple[int, str]] = []

    def watch(node: int, message: Message) -> Message:
        payload = payload_of(message)
        if payload is not None and payload.STAGE.name == "DECRYPT":
            seen.append((node, type(payload).__name__))
        return message

    grid, roster, identities = federation(tmp_path, 4, mods=[ckks_mod], tamper=watch)
    workflow = _StreamingWorkflow(default_config(roster=roster))
    result = run_rounds(grid, workflow, rounds=1)
    assert_fedavg(result, workflow, [[0, 1, 2, 3]])
    report = workflow.reports[0]
    assert report.aborted is None and not report.refused and not report.dropped
    for node in report.decryptors:
        kinds = [kind for dst, kind in seen if dst == node]
        assert kinds == ["SumPart"] * 3 + ["DecryptRequest"], kinds


@pytest.mark.parametrize("roster", [True, False], ids=["roster", "no-roster (positive control)"])
def test_key_substitution_in_the_dealer_is_refused_with_a_roster(tmp_path, roster: bool) -> None:
    """The server swaps a peer's X25519 key for its own in the dealer's request: with a roster the
    dealer refuses (InvalidSignature) and seals nothing; without one it seals the group key to the server."""
    attacker, deals = X25519KeyPair.generate(), []

    def swap(node, message):
        deal = payload_of(message)
        if isinstance(deal, DealRequest):
            peers = (dataclasses.replace(deal.peers[0], x25519=attacker.public_bytes),) + deal.peers[1:]
            return with_payload(message, DealRequest(deal.round_id, deal.node, peers))
        return message

    def capture(node, message):
        return (lambda reply: deals.append(reply) or reply) if stage_of(message) == "DEAL" else None

    if roster:
        grid, workflow, _, _ = _roster_federation(tmp_path, 3, tamper=swap, fault=capture)
    else:
        grid, workflow = InProcessGrid(make_app([ckks_mod]), 3, {}, tamper=swap, fault=capture), CkksWorkflow()
    result = run_rounds(grid, workflow, rounds=1)
    (reply,) = deals
    dealer, victim = sorted(grid.node_ids)[:2]
    if roster:
        assert reply.has_error() and reply.error.reason.startswith("InvalidSignature")
        report = workflow.reports[0]
        assert report.aborted.startswith("RoundAbortedError: the dealer did not deal the key")
        assert report.dealt == [] and report.holders == []  # no key was sealed, none installed
        assert_unchanged(result)
        return
    deal = decode_message(reply.content[CKKS_RECORD]["payload"])
    assert isinstance(deal, DealReply) and deal.sealed[0][0] == victim
    stolen = open_key_from_peer(deal.sealed[0][1], recipient=attacker, recipient_id=victim, sender_id=dealer,
                                sender_public=deal.x25519, round_id=1)
    assert stolen.fingerprint == workflow.aggregator.fingerprint  # the server holds the group's key


def test_a_substituted_dealer_key_at_install_is_refused_with_a_roster(tmp_path) -> None:
    attacker = X25519KeyPair.generate()

    def swap(node, message):
        install = payload_of(message)
        if isinstance(install, InstallRequest):
            return with_payload(message, dataclasses.replace(install, dealer_x25519=attacker.public_bytes))
        return message

    grid, workflow, _, _ = _roster_federation(tmp_path, 3, tamper=swap)
    run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    assert grid.errors and all(e.startswith("InvalidSignature") for e in grid.errors)
    assert report.aborted is not None and report.dealt == [sorted(grid.node_ids)[0]]  # nobody installed a key


@pytest.mark.parametrize("roster", [True, False], ids=["roster", "no-roster"])
def test_one_upload_relabelled_as_an_aggregate_is_refused(tmp_path, roster: bool) -> None:
    """The server sends each decryptor node A's upload dressed as an aggregate of 3: with a
    roster the decryptor refuses (it sums the signed uploads itself); without one it refuses
    too, since the aggregate's provenance lists one summand (the no-roster mode's remaining
    gap, a replay of an earlier round's uploads, is shown in tests/he/test_round_refusals.py)."""
    uploads: dict[int, Upload] = {}

    def capture(node, message):
        if stage_of(message) == "ENCRYPT":
            return lambda reply: uploads.__setitem__(node, decode_message(reply.content[CKKS_RECORD]["payload"])) or reply
        return None

    def relabel(node, message):
        decrypt = payload_of(message)
        if not isinstance(decrypt, DecryptRequest):
            return message
        total = aggregator[0].start()
        total.add(uploads[min(uploads)].blob, 1)
        dressed = bytearray(total.finish())
        struct.pack_into(">Id", dressed, HEADER_BYTES - 16, 3, 3.0)
        return with_payload(message, DecryptRequest(decrypt.round_id, decrypt.node, bytes(dressed)))

    aggregator: list = []  # the group key's public context: the server's own view
    if roster:
        grid, workflow, _, _ = _roster_federation(tmp_path, 3, tamper=relabel, fault=capture)
    else:
        grid, workflow = InProcessGrid(make_app([ckks_mod]), 3, {}, tamper=relabel, fault=capture), CkksWorkflow()
    path, owner = key_file(tmp_path, "shared.ckks")
    for context in grid.contexts.values():
        context.node_config["ckks-key-path"] = path
    aggregator.append(owner.aggregator_context())
    result = run_rounds(grid, workflow, rounds=1)
    assert uploads
    report = workflow.reports[0]
    assert report.aborted is not None and report.decryptors == []
    reason = "sums the signed uploads itself" if roster else "provenance"
    kind = "ProtocolViolationError" if roster else "MalformedMessageError"
    assert grid.errors and all(kind in e and reason in e for e in grid.errors)
    assert_unchanged(result)


# ============================================================================ secrets
def _forms(secret: bytes) -> set[str]:
    out = {secret.hex(), secret.hex().upper(), repr(secret)[2:-1]}
    for offset in range(3):
        out.add(base64.b64encode(secret[offset:]).decode()[:-4])
    return {f for f in out if len(f) >= 12}


def test_no_key_material_in_logs_reports_reprs_or_contexts(caplog: pytest.LogCaptureFixture) -> None:
    """The node's CKKS secret key, pending X25519 key and state key: never in a log line, a
    report, a repr, ``repr``/``str`` of a Context, or the serialised ``Context.state`` in the clear."""
    from flwr.common.serde import recorddict_to_proto

    caplog.set_level(logging.DEBUG)
    secrets: dict[str, bytes] = {}
    contexts: list[str] = []
    raw: list[bytes] = []

    def harvest(node, message):  # before every delivery, the node's key material so far
        ctxt = grid.contexts[node]
        contexts.extend((repr(ctxt), str(ctxt)))
        raw.append(recorddict_to_proto(ctxt.state).SerializeToString())
        if CKKS_STATE in ctxt.state.keys():
            secrets[f"state-key.{node}"] = node_state_key(ctxt)._key.reveal()
            client = opened(grid, node)
            if client._pending is not None:
                secrets[f"x25519.{node}"] = client._pending.private_bytes().reveal()
            if client._owner is not None:
                key = client._owner.to_bytes(include_secret_key=True)
                secret_part = key[len(client._owner.aggregator_context().to_bytes()) :]
                for start in range(0, len(secret_part) - 32, 4099):
                    secrets[f"sk.{node}.{start}"] = secret_part[start : start + 32]
        if grid.partition_of(node) == 2 and stage_of(message) == "DECRYPT":
            return tampered(lambda c: c[CKKS_RECORD].__setitem__("payload", b"\x00" * 8))  # a refusal to log
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 4, {}, fault=harvest)
    workflow = CkksWorkflow(default_config(decryptors=3))
    run_rounds(grid, workflow, rounds=2)
    assert all(r.aborted is None and len(r.decryptors) == 3 for r in workflow.reports)
    for node in grid.node_ids:
        harvest(node, Message(RecordDict(), node, "query", group_id="z"))
    assert sum(name.startswith("x25519") for name in secrets) == 4 and sum(name.startswith("sk") for name in secrets) > 20
    errors = [send(grid, grid.node_ids[0], *request(InstallRequest(9, grid.node_ids[0], 1, "", bytes(32), bytes(32), (), b"x" * 64))).error.reason]
    assert workflow.reports[0].refused  # the tampered decryption was refused and logged
    texts = [caplog.text, *errors, repr(workflow), repr(ckks_mod), repr(workflow.aggregator)]
    texts += [str(r.to_dict()) for r in workflow.reports] + [repr(r) for r in workflow.reports]
    texts += [repr(opened(grid, n)) for n in grid.node_ids] + contexts
    haystack = "\n".join(texts)
    for label, secret in secrets.items():
        for form in _forms(secret):
            assert form not in haystack, f"secret {label} appears"
    state_bytes = b"".join(raw)
    assert b"FCSL" in state_bytes
    for label, secret in secrets.items():
        assert secret not in state_bytes, f"secret {label} is in Context.state in the clear"
    with pytest.raises(RecordMismatchError) as info:  # the error object itself carries no bytes
        from fedcrypt.integrations.flower import check_fields

        check_fields(ConfigRecord({"key": b"\x01" * 40}), ["stage"], record_name=CKKS_RECORD)
    assert "\\x01" not in str(info.value) and "'key'" in str(info.value)


# ============================================================================ review break 4
def _zero_polynomial_upload(content: RecordDict, owner: KeyOwner) -> None:
    from fedcrypt.he import _seal
    from fedcrypt.he.blob import BlobHeader, BlobKind, encode_blob, peek_header

    runtime = _seal.runtime(owner.params)
    empty = _seal.save_bytes(runtime.seal.Ciphertext(runtime.context))  # a ciphertext of 0 polynomials
    upload = decode_message(content[CKKS_RECORD]["payload"])
    header = peek_header(upload.blob)
    forged = BlobHeader(BlobKind.UPLOAD, header.fingerprint, header.length, header.spec_digest, 1, 1.0, header.ciphertext_count)
    blob = encode_blob(forged, [empty] * header.ciphertext_count)
    content[CKKS_RECORD]["payload"] = Upload(upload.round_id, upload.node, blob).to_bytes()


def test_bad_replies_drop_their_node_and_never_end_the_run() -> None:
    """A 0-polynomial upload and a garbage context reply: typed refusals, the others' FedAvg."""

    def garbage_context(content: RecordDict) -> None:
        reply = decode_message(content[CKKS_RECORD]["payload"])
        garbage = b"FCHC\x02\x01\xff\xff" + b"\x00" * 7
        content[CKKS_RECORD]["payload"] = dataclasses.replace(reply, context=garbage).to_bytes()

    def fault(node, message):
        part, stage = grid.partition_of(node), stage_of(message)
        if part == 3 and stage == "ENCRYPT":
            return tampered(lambda content: _zero_polynomial_upload(content, opened(grid, node)._owner))
        if part == 4 and stage == "CONTEXT" and message.metadata.group_id == "2":
            return tampered(garbage_context)
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 5, {}, fault=fault)
    workflow = CkksWorkflow()
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [[0, 1, 2, 4], [0, 1, 2]])
    first, second = workflow.reports
    zero, garbage = grid.node_ids[3], grid.node_ids[4]
    assert "MalformedMessageError" in first.refused[zero]
    assert "MalformedMessageError" in second.refused[garbage]
    assert first.aborted is None and second.aborted is None
