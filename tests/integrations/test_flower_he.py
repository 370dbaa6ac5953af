"""CKKS through fedcrypt's Flower adapter, in process: the real ClientApp, mod, strategy and TenSEAL.

Every message crosses Flower's protobuf serialisation (the in-process grid of
``tests/flower/_inprocess.py``). The real Flower processes (Ray simulation, SuperLink +
SuperNodes) are in ``test_flower_he_processes``.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tenseal")
pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from fedcrypt.errors import RecordMismatchError  # noqa: E402
from fedcrypt.he import CkksParams, KeyOwner  # noqa: E402
from fedcrypt.integrations.flower import pack_nodes  # noqa: E402
from fedcrypt.integrations.flower_he import (  # noqa: E402
    CKKS_RECORD,
    CKKS_STATE,
    CkksGrid,
    CkksMod,
    CkksWorkflow,
    ckks_mod,
    fedavg_error_bound,
)
from flower._inprocess import InProcessGrid  # noqa: E402  (tests/flower, on the test path)
from flower.test_flower_adapter import initial, make_app, plaintext_fedavg, weight_of  # noqa: E402


def run_rounds(grid: InProcessGrid, workflow: CkksWorkflow, rounds: int = 2):
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    return strategy.start(grid=CkksGrid(grid, workflow), initial_arrays=initial(), num_rounds=rounds, timeout=30)


def assert_fedavg(result, workflow: CkksWorkflow, partitions_by_round: list[list[int]]) -> None:
    """The result equals plaintext FedAvg of those partitions within the documented CKKS bound."""
    expected, expected_metrics = plaintext_fedavg(partitions_by_round)
    tol = max(fedavg_error_bound(workflow.params, [weight_of(p) for p in parts], workflow.max_weight) for parts in partitions_by_round)
    # the flooded bound (default workflow: capacity 100, clip 4, M=1000, weights ~30-60) is ~4e-3;
    # it still means something (updates are of size ~1)
    assert tol < 1e-2
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)
    final = result.train_metrics_clientapp[len(partitions_by_round)]
    assert final["loss"] == pytest.approx(expected_metrics["loss"], abs=tol * 10)


def assert_unchanged(result) -> None:
    for name, value in result.arrays.items():
        np.testing.assert_array_equal(value.numpy(), initial()[name].numpy())


def stage_of(request: Message) -> str | None:
    if CKKS_RECORD not in request.content.keys():
        return None
    return request.content[CKKS_RECORD]["stage"]


def tampered(mutate):
    def action(reply: Message) -> Message:
        content = RecordDict({name: reply.content[name] for name in reply.content.keys()})
        mutate(content)
        return Message(content=content, metadata=reply.metadata)

    return action


def send(grid: InProcessGrid, node: int, fields: dict, extra: RecordDict | None = None, message_type: str = "train") -> Message:
    """One crafted server message to one node's ClientApp; its (wire-crossed) reply."""
    content = RecordDict({CKKS_RECORD: ConfigRecord(fields)})
    for name in (extra.keys() if extra is not None else []):
        content[name] = extra[name]
    (reply,) = grid.send_and_receive([Message(content, node, message_type, group_id="x")], timeout=5)
    return reply


def kept_state(grid: InProcessGrid, node: int) -> dict:
    """The node's opened state (its sealed record in Context.state, opened with the node's own
    state key: the test's privilege, not the server's)."""
    return CkksMod()._state(grid.contexts[node])


def held_key(grid: InProcessGrid, node: int) -> KeyOwner:
    """The node's CKKS key, read from its Context.state."""
    return KeyOwner.from_bytes(kept_state(grid, node)["key"])


def train_records(server_round: int = 1) -> RecordDict:
    return RecordDict({"arrays": initial(), "config": ConfigRecord({"server-round": server_round})})


# ============================================================================ happy paths
@settings(max_examples=4, deadline=None)
@given(num_nodes=st.integers(2, 5), decryptors=st.integers(1, 3))
def test_ckks_fedavg_equals_plaintext_fedavg_with_a_dealer(num_nodes: int, decryptors: int) -> None:
    grid = InProcessGrid(make_app([ckks_mod]), num_nodes, {})
    workflow = CkksWorkflow(decryptors=decryptors)
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [list(range(num_nodes))] * 2)
    first, second = workflow.reports
    nodes = sorted(grid.node_ids)
    assert first.survivors == second.survivors == nodes
    assert first.dealt == nodes and second.dealt == []  # the key is set up once, by the lowest node id
    assert len(first.decryptors) == len(second.decryptors) == min(decryptors, num_nodes)
    assert first.fingerprint == second.fingerprint == held_key(grid, nodes[0]).fingerprint.hex()
    assert all(held_key(grid, n).fingerprint == held_key(grid, nodes[0]).fingerprint for n in nodes)
    assert all(not r.dropped and not r.refused and r.aborted is None for r in workflow.reports)
    assert "DEAL" in first.stage_seconds and "DEAL" not in second.stage_seconds


def test_out_of_band_key_files(tmp_path: Path) -> None:
    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=10, clip=4.0, max_weight=1.0))
    key_file = tmp_path / "group.ckks"
    key_file.write_bytes(owner.to_bytes(include_secret_key=True))
    grid = InProcessGrid(make_app([ckks_mod]), 3, {"ckks-key-path": str(key_file)})
    workflow = CkksWorkflow(key_setup="file")
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [[0, 1, 2]] * 2)
    assert workflow.aggregator is not None and workflow.aggregator.fingerprint == owner.fingerprint
    assert "secret" not in type(workflow.aggregator).__name__.lower()
    assert all(r.dealt == [] and set(r.stage_seconds) == {"CONTEXT", "ENCRYPT", "DECRYPT"} for r in workflow.reports)


def test_nodes_with_different_key_files_fail_the_round(tmp_path: Path) -> None:
    params = CkksParams.preset("compact", num_clients=10, clip=4.0, max_weight=1.0)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / name
        path.write_bytes(KeyOwner.generate(params).to_bytes(include_secret_key=True))
        paths.append(str(path))
    grid = InProcessGrid(make_app([ckks_mod]), 3, {"ckks-key-path": paths[0]})
    grid.contexts[grid.node_ids[2]].node_config["ckks-key-path"] = paths[1]  # the node config wins
    workflow = CkksWorkflow(key_setup="file")
    result = run_rounds(grid, workflow, rounds=1)
    assert workflow.reports[0].aborted.startswith("ContextMismatchError: the nodes report 2 different CKKS keys")
    assert_unchanged(result)


def test_a_node_without_a_key_file_is_refused_in_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(KeyOwner.generate(CkksParams.preset("compact", num_clients=10, clip=4.0, max_weight=1.0)).to_bytes(include_secret_key=True))
    grid = InProcessGrid(make_app([ckks_mod]), 4, {})
    for node in grid.node_ids[:3]:
        grid.contexts[node].node_config["ckks-key-path"] = str(path)
    workflow = CkksWorkflow(key_setup="file")
    result = run_rounds(grid, workflow, rounds=1)
    outsider = grid.node_ids[3]
    assert workflow.reports[0].refused[outsider].startswith("SecretKeyError")
    assert workflow.reports[0].survivors == sorted(grid.node_ids[:3])
    assert_fedavg(result, workflow, [[0, 1, 2]])


def test_a_late_node_without_a_key_is_refused_and_no_holder_deals_again() -> None:
    """Review break 3: a DEAL after set-up made a holder seal the key to a server-chosen X25519 key."""

    def fault(node, request):
        if grid.partition_of(node) == 3 and request.metadata.group_id == "1":
            return "drop"  # partition 3 is away for all of round 1
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 4, {}, fault=fault)
    workflow = CkksWorkflow()
    result = run_rounds(grid, workflow)
    assert_fedavg(result, workflow, [[0, 1, 2], [0, 1, 2]])
    first, second = workflow.reports
    late = grid.node_ids[3]
    assert first.dropped == {late: "CONTEXT"} and second.dealt == []
    assert "SecretKeyError" in second.refused[late] and "key set-up is done" in second.refused[late]
    assert first.fingerprint == second.fingerprint


def test_a_key_holder_refuses_a_deal_after_set_up() -> None:
    grid = InProcessGrid(make_app([ckks_mod]), 2, {})
    workflow = CkksWorkflow()
    run_rounds(grid, workflow, rounds=1)
    holder = grid.node_ids[0]
    before = dict(grid.contexts[holder].state[CKKS_STATE])
    attacker = bytes(range(32))  # the server's own X25519 public key
    reply = send(grid, holder, {"stage": "DEAL", "round": 9, "payload": b"", "peers": pack_nodes([123]), "keys": attacker})
    assert reply.has_error() and "UnexpectedMessageError" in reply.error.reason
    assert "never deals it" in reply.error.reason
    assert dict(grid.contexts[holder].state[CKKS_STATE]) == before  # nothing sealed, nothing changed


class PullGrid(InProcessGrid):
    """Push/pull like a deployment's grid: replies wait at the "SuperLink" and come back one per pull."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: dict[str, Message] = {}
        self.pulled: list[Message] = []
        self.pulls = 0

    def push_messages(self, messages):  # noqa: D102
        ids = []
        for message in messages:
            replies = InProcessGrid.send_and_receive(self, [message], timeout=0)
            ids.append(message.metadata.message_id)
            for reply in replies:
                self.inbox[message.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids):  # noqa: D102
        self.pulls += 1
        for message_id in message_ids:
            if message_id in self.inbox:
                reply = self.inbox.pop(message_id)
                self.pulled.append(reply)
                return [reply]
        return []

    def send_and_receive(self, messages, *, timeout=None):  # noqa: D102
        if list(messages):  # the strategy's empty evaluate round is fine
            raise AssertionError("the CKKS workflow streams replies with push/pull")
        return []


def test_replies_are_pulled_one_by_one_and_uploads_folded_as_they_arrive() -> None:
    def fault(node, request):
        return "drop" if grid.partition_of(node) == 2 and stage_of(request) == "ENCRYPT" else None

    grid = PullGrid(make_app([ckks_mod]), 4, {}, fault=fault)
    workflow = CkksWorkflow(poll_interval=0.01, stage_timeout=0.5, train_timeout=0.5)
    result = run_rounds(grid, workflow, rounds=1)
    assert_fedavg(result, workflow, [[0, 1, 3]])
    assert workflow.reports[0].dropped == {grid.node_ids[2]: "ENCRYPT"}  # waited for until the timeout, then dropped
    uploads = [r for r in grid.pulled if r.content[CKKS_RECORD]["stage"] == "ENCRYPT"]
    assert len(uploads) == 3 and grid.pulls > len(grid.pulled)
    assert all(r.content[CKKS_RECORD]["payload"] == b"" for r in uploads)  # folded into the sum, not kept


# ============================================================================ dropouts
def test_a_node_dropping_before_its_upload_is_not_in_the_sum() -> None:
    def fault(node, request):
        if grid.partition_of(node) == 1 and stage_of(request) == "ENCRYPT" and request.metadata.group_id == "1":
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
    victim_partition = 0  # the lowest node id: the first decryptor chosen

    def fault(node, request):
        if grid.partition_of(node) == victim_partition and stage_of(request) == "DECRYPT":
            return "drop"
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 4, {}, fault=fault)
    workflow = CkksWorkflow(decryptors=2)
    result = run_rounds(grid, workflow)
    # its ciphertext arrived before it dropped: nothing more is needed from it
    assert_fedavg(result, workflow, [[0, 1, 2, 3]] * 2)
    victim = grid.node_ids[victim_partition]
    for report in workflow.reports:
        assert victim in report.survivors and report.dropped == {victim: "DECRYPT"}
        assert len(report.decryptors) == 2 and victim not in report.decryptors


def test_too_few_decryptors_fail_the_round_and_keep_the_model() -> None:
    def fault(node, request):
        if grid.partition_of(node) == 1 and stage_of(request) == "DECRYPT":
            return "drop"
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 2, {}, fault=fault)
    workflow = CkksWorkflow(decryptors=2)
    result = run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    assert report.aborted.startswith("RoundAbortedError: 1 of the 2 decryptions needed arrived")
    assert report.decryptors == [grid.node_ids[0]]
    assert_unchanged(result)


def test_too_few_uploads_fail_the_round() -> None:
    def fault(node, request):
        if grid.partition_of(node) in (1, 2) and stage_of(request) == "ENCRYPT":
            return "drop"
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 3, {}, fault=fault)
    workflow = CkksWorkflow()
    result = run_rounds(grid, workflow, rounds=1)
    assert workflow.reports[0].aborted.startswith("RoundAbortedError: 1 encrypted updates arrived")
    assert "DECRYPT" not in workflow.reports[0].stage_seconds  # nothing was sent for decryption
    assert_unchanged(result)


@settings(max_examples=8, deadline=None)
@given(drops=st.lists(st.sampled_from([None, "CONTEXT", "INSTALL", "ENCRYPT", "DECRYPT"]), min_size=3, max_size=5))
def test_dropouts_at_any_stage_give_fedavg_of_the_uploaders_or_no_reply(drops: list[str | None]) -> None:
    """Invariant: the sum holds exactly the nodes whose upload arrived; the round fails iff too few remain."""

    def fault(node, request):
        return "drop" if stage_of(request) == drops[grid.partition_of(node)] else None

    grid = InProcessGrid(make_app([ckks_mod]), len(drops), {}, fault=fault)
    workflow = CkksWorkflow(decryptors=2)
    result = run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    keyed = [p for p, d in enumerate(drops) if d != "CONTEXT"]
    dealer = min(keyed, key=lambda p: grid.node_ids[p]) if keyed else None
    # the dealer gets no INSTALL message, so "dropping at INSTALL" does not affect it
    uploaders = sorted(p for p in keyed if drops[p] in (None, "DECRYPT") or (p == dealer and drops[p] == "INSTALL"))
    decryptors = [p for p in uploaders if drops[p] != "DECRYPT"]
    if len(uploaders) >= 2 and len(decryptors) >= min(2, len(uploaders)):
        assert report.aborted is None
        assert report.survivors == sorted(grid.node_ids[p] for p in uploaders)
        assert_fedavg(result, workflow, [uploaders])
    else:
        assert report.aborted is not None
        assert_unchanged(result)


# ============================================================================ decryptors
def test_decryptors_that_disagree_fail_the_round() -> None:
    def shift_last_value(content: RecordDict) -> None:
        payload = bytearray(content[CKKS_RECORD]["payload"])
        payload[-1] ^= 0x01  # the lowest mantissa bit of the last float64 (little-endian: byte 7)
        content[CKKS_RECORD]["payload"] = bytes(payload)

    def fault(node, request):
        if grid.partition_of(node) == 1 and stage_of(request) == "DECRYPT":
            return tampered(shift_last_value)
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 3, {}, fault=fault)
    workflow = CkksWorkflow(decryptors=2)
    result = run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    assert report.aborted.startswith("ProtocolViolationError: the decryptors")
    assert "returned different sums" in report.aborted
    assert_unchanged(result)


def test_decryptors_refuse_an_aggregate_of_too_few_contributions() -> None:
    grid = InProcessGrid(make_app([CkksMod(min_clients=3)]), 2, {})
    workflow = CkksWorkflow(decryptors=2)
    result = run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    assert report.aborted is not None and report.decryptors == []
    for node in grid.node_ids:
        assert "ProtocolViolationError" in report.refused[node]
        assert "claims 2 contributions, fewer than this node's minimum 3" in report.refused[node]
    assert_unchanged(result)


def test_a_decryptor_releases_one_decryption_per_own_upload_whatever_the_round_ids() -> None:
    """Review break 3: relabelled uploads decrypted with server-chosen round ids 1000-1002."""
    grid = InProcessGrid(make_app([ckks_mod]), 3, {})
    workflow = CkksWorkflow(decryptors=1)
    run_rounds(grid, workflow, rounds=1)
    (decryptor,) = workflow.reports[0].decryptors
    owner = held_key(grid, decryptor)
    rng = np.random.default_rng(1)  # test data
    uploads = [owner.encrypt(rng.uniform(-1, 1, 8)) for _ in range(6)]
    aggregates = []
    for i in range(3):  # three "aggregates", each of two relabelled uploads
        total = workflow.aggregator.start()
        total.add(uploads[2 * i], 1)
        total.add(uploads[2 * i + 1], 1)
        aggregates.append(total.finish())
    before = dict(grid.contexts[decryptor].state[CKKS_STATE])
    for round_id, aggregate in zip((1000, 1001, 1002), aggregates):
        reply = send(grid, decryptor, {"stage": "DECRYPT", "round": round_id, "payload": aggregate})
        assert reply.has_error() and "UnexpectedMessageError" in reply.error.reason
        assert "one per upload" in reply.error.reason
    single = send(grid, decryptor, {"stage": "DECRYPT", "round": 7, "payload": uploads[0]})
    assert single.has_error() and "ProtocolViolationError" in single.error.reason and "single upload" in single.error.reason
    assert dict(grid.contexts[decryptor].state[CKKS_STATE]) == before  # refusals change nothing


def test_a_decryptor_refuses_a_tampered_total_weight() -> None:
    """Review break 3: a tampered total weight in the header gave a wrong mean silently."""
    import struct

    from fedcrypt.he.blob import HEADER_BYTES

    grid = InProcessGrid(make_app([ckks_mod]), 3, {})
    workflow = CkksWorkflow(decryptors=1)
    run_rounds(grid, workflow, rounds=1)
    (decryptor,) = workflow.reports[0].decryptors
    owner = held_key(grid, decryptor)
    total = workflow.aggregator.start()
    for _ in range(3):
        total.add(owner.encrypt(np.ones(8)), 1)
    forged = bytearray(total.finish())
    forged[HEADER_BYTES - 12 : HEADER_BYTES - 4] = struct.pack(">d", 30.0)  # total weight 3 -> 30
    before = dict(grid.contexts[decryptor].state[CKKS_STATE])
    reply = send(grid, decryptor, {"stage": "DECRYPT", "round": 2, "payload": bytes(forged)})
    assert reply.has_error() and "ProtocolViolationError" in reply.error.reason and "tampered header" in reply.error.reason
    assert dict(grid.contexts[decryptor].state[CKKS_STATE]) == before


def test_the_key_is_kept_sealed_and_a_swapped_record_decrypts_nothing() -> None:
    """Context.state holds one sealed record per node, with no secret-key bytes in the clear;
    two nodes' records swapped (under the shared default state key) are refused before any
    decryption, and the refusal changes nothing."""
    grid = InProcessGrid(make_app([ckks_mod]), 3, {})
    workflow = CkksWorkflow(decryptors=1)
    run_rounds(grid, workflow, rounds=1)
    (decryptor,) = workflow.reports[0].decryptors
    other = next(node for node in grid.node_ids if node != decryptor)
    key = kept_state(grid, decryptor)["key"]
    secret_part = key[len(KeyOwner.from_bytes(key).aggregator_context().to_bytes()) :]
    for node in grid.node_ids:
        record = grid.contexts[node].state[CKKS_STATE]
        assert set(record.keys()) == {"sealed"}
        assert all(secret_part[i : i + 32] not in record["sealed"] for i in range(0, len(secret_part) - 32, 997))
    owner = held_key(grid, decryptor)
    total = workflow.aggregator.start()
    for _ in range(3):
        total.add(owner.encrypt(np.ones(8)), 1)
    aggregate = total.finish()
    mine, theirs = grid.contexts[decryptor].state[CKKS_STATE], grid.contexts[other].state[CKKS_STATE]
    grid.contexts[decryptor].state[CKKS_STATE], grid.contexts[other].state[CKKS_STATE] = theirs, mine
    reply = send(grid, decryptor, {"stage": "DECRYPT", "round": 2, "payload": aggregate})
    assert reply.has_error() and "DecryptionError" in reply.error.reason and "moved from another" in reply.error.reason
    assert dict(grid.contexts[decryptor].state[CKKS_STATE]) == dict(theirs)


def test_a_node_encrypts_once_per_round() -> None:
    grid = InProcessGrid(make_app([ckks_mod]), 2, {})
    workflow = CkksWorkflow()
    run_rounds(grid, workflow, rounds=1)
    node = grid.node_ids[0]
    before = dict(grid.contexts[node].state[CKKS_STATE])
    fields = {"stage": "ENCRYPT", "round": 1, "payload": b"", "fingerprint": workflow.aggregator.fingerprint, "max-weight": 1000.0}
    replay = send(grid, node, fields, train_records(1))
    assert replay.has_error() and "UnexpectedMessageError" in replay.error.reason and "(replay)" in replay.error.reason
    assert dict(grid.contexts[node].state[CKKS_STATE]) == before
    other_key = send(grid, node, {**fields, "round": 2, "fingerprint": bytes(32)}, train_records(2))
    assert other_key.has_error() and "ContextMismatchError" in other_key.error.reason


# ============================================================================ records
def _add_record(content: RecordDict) -> None:
    content["surprise"] = ConfigRecord({"x": 1})


def _add_field(content: RecordDict) -> None:
    content[CKKS_RECORD]["surplus"] = b"x"


def _drop_field(content: RecordDict) -> None:
    del content[CKKS_RECORD]["layout"]


@pytest.mark.parametrize(
    "mutate, missing, extra",
    [(_add_record, (), ("surprise",)), (_add_field, (), ("surplus",)), (_drop_field, ("layout",), ())],
)
def test_server_refuses_a_reply_with_missing_or_extra_records(mutate, missing, extra) -> None:
    def fault(node, request):
        if grid.partition_of(node) == 0 and stage_of(request) == "ENCRYPT":
            return tampered(mutate)
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 4, {}, fault=fault)
    workflow = CkksWorkflow()
    result = run_rounds(grid, workflow, rounds=1)
    node = grid.node_ids[0]
    report = workflow.reports[0]
    assert report.refused[node].startswith("RecordMismatchError")
    assert repr(CKKS_RECORD) in report.refused[node] or "records differ" in report.refused[node]
    for name in missing + extra:
        assert repr(name) in report.refused[node]
    assert node not in report.survivors
    assert_fedavg(result, workflow, [[1, 2, 3]])


@pytest.mark.parametrize(
    "fields, extra, named",
    [
        ({"stage": "CONTEXT", "round": 1, "payload": b""}, RecordDict({"surprise": ConfigRecord({"x": 1})}), "'surprise'"),
        ({"stage": "CONTEXT", "payload": b""}, None, "'round'"),
        ({"stage": "CONTEXT", "round": 1, "payload": b"", "spare": 1}, None, "'spare'"),
        ({"stage": "ENCRYPT", "round": 1, "payload": b"", "fingerprint": bytes(32), "max-weight": 1.0}, None, "carries no train records"),
        ({"stage": "DECRYPT", "round": 1}, None, "'payload'"),
    ],
)
def test_client_refuses_a_message_with_missing_or_extra_records(fields, extra, named) -> None:
    grid = InProcessGrid(make_app([ckks_mod]), 2, {})
    reply = send(grid, grid.node_ids[0], fields, extra)
    assert reply.has_error()
    assert reply.error.reason.startswith("RecordMismatchError") and named in reply.error.reason
    assert CKKS_STATE not in grid.contexts[grid.node_ids[0]].state.keys()  # nothing was kept


def test_client_refuses_a_plaintext_train_message_and_passes_other_messages() -> None:
    grid = InProcessGrid(make_app([ckks_mod]), 2, {})
    (reply,) = grid.send_and_receive([Message(train_records(), grid.node_ids[0], "train", group_id="p")], timeout=5)
    assert reply.has_error() and reply.error.reason.startswith("RecordMismatchError")
    assert repr(CKKS_RECORD) in reply.error.reason
    relaxed = InProcessGrid(make_app([CkksMod(allow_plaintext=True)]), 2, {})
    (plain,) = relaxed.send_and_receive([Message(train_records(), relaxed.node_ids[0], "train", group_id="p")], timeout=5)
    assert not plain.has_error() and "arrays" in plain.content.keys()


def test_a_node_with_a_key_file_takes_no_key_from_a_dealer(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(KeyOwner.generate(CkksParams.preset("compact", num_clients=10)).to_bytes(include_secret_key=True))
    grid = InProcessGrid(make_app([ckks_mod]), 2, {"ckks-key-path": str(path)})
    node = grid.node_ids[0]
    assert not send(grid, node, {"stage": "CONTEXT", "round": 1, "payload": b""}).has_error()
    install = {"stage": "INSTALL", "round": 1, "payload": b"x", "dealer": 5, "dealer-key": bytes(32), "fingerprint": bytes(32)}
    reply = send(grid, node, install)
    assert reply.has_error() and "ProtocolViolationError" in reply.error.reason and "out-of-band key" in reply.error.reason
    no_dealer = InProcessGrid(make_app([CkksMod(allow_dealer=False)]), 2, {})
    refused = send(no_dealer, no_dealer.node_ids[0], {"stage": "CONTEXT", "round": 1, "payload": b""})
    assert refused.has_error() and "SecretKeyError" in refused.error.reason


def test_a_sealed_key_opens_only_for_its_recipient() -> None:
    """A server that relays a peer's sealed key to another node gets a decryption error, not a key."""
    grid = InProcessGrid(make_app([ckks_mod]), 3, {})
    a, b, c = grid.node_ids
    publics = {}
    for node in (b, c):
        reply = send(grid, node, {"stage": "CONTEXT", "round": 1, "payload": b""})
        publics[node] = reply.content[CKKS_RECORD]["x25519"]
    params = CkksParams.preset("compact", num_clients=10, clip=4.0, max_weight=1.0)
    deal = send(grid, a, {"stage": "DEAL", "round": 1, "payload": params.to_bytes(), "peers": np.array([b, c], ">u8").tobytes(), "keys": publics[b] + publics[c]})
    assert not deal.has_error()
    record = deal.content[CKKS_RECORD]
    sealed = record["sealed"]
    first_len = int.from_bytes(sealed[:4], "big")
    for_b = sealed[4 : 4 + first_len]
    fingerprint = held_key(grid, a).fingerprint
    wrong = send(grid, c, {"stage": "INSTALL", "round": 1, "payload": for_b, "dealer": a, "dealer-key": record["x25519"], "fingerprint": fingerprint})
    assert wrong.has_error() and "DecryptionError" in wrong.error.reason
    right = send(grid, b, {"stage": "INSTALL", "round": 1, "payload": for_b, "dealer": a, "dealer-key": record["x25519"], "fingerprint": fingerprint})
    assert not right.has_error() and held_key(grid, b).fingerprint == fingerprint


def test_workflow_and_mod_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"^key_setup must be 'dealer' or 'file', got 'pki'$"):
        CkksWorkflow(key_setup="pki")
    with pytest.raises(ValueError, match=r"^decryptors must be an integer >= 1, got 0$"):
        CkksWorkflow(decryptors=0)
    with pytest.raises(ValueError, match=r"^min_clients must be an integer >= 2, got 1$"):
        CkksWorkflow(min_clients=1)
    with pytest.raises(TypeError, match=r"^params must be CkksParams or None, got str$"):
        CkksWorkflow(params="compact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^poll_interval must be a positive number of seconds, got 0$"):
        CkksWorkflow(poll_interval=0)
    with pytest.raises(ValueError, match=r"^capacity guard"):
        CkksWorkflow(clip=1e6)
    with pytest.raises(ValueError, match=r"^min_clients must be an integer >= 2, got 1$"):
        CkksMod(min_clients=1)
    with pytest.raises(TypeError, match=r"^allow_dealer must be a bool, got int$"):
        CkksMod(allow_dealer=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^workflow must be a CkksWorkflow, got str$"):
        CkksGrid(InProcessGrid(make_app([ckks_mod]), 2, {}), "x")  # type: ignore[arg-type]


# ============================================================================ secrets
def _forms(secret: bytes) -> set[str]:
    out = {secret.hex(), secret.hex().upper(), repr(secret)[2:-1]}
    for offset in range(3):
        out.add(base64.b64encode(secret[offset:]).decode()[:-4])
    return {f for f in out if len(f) >= 12}


def test_no_key_material_in_logs_reports_reprs_or_contexts(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """The node's CKKS secret key, pending X25519 key and state key: never in a log line, a
    report, a repr, ``repr``/``str`` of a Context, or the serialised ``Context.state`` in the clear."""
    from flwr.common.serde import recorddict_to_proto

    from fedcrypt.integrations._flower_state import node_state_key

    caplog.set_level(logging.DEBUG)
    secrets: dict[str, bytes] = {}
    contexts: list[str] = []
    raw: list[bytes] = []

    def harvest(node, request):  # before every delivery, the node's key material so far
        ctxt = grid.contexts[node]
        contexts.extend((repr(ctxt), str(ctxt)))
        raw.append(recorddict_to_proto(ctxt.state).SerializeToString())
        if CKKS_STATE in grid.contexts[node].state.keys():
            secrets[f"state-key.{node}"] = node_state_key(ctxt)._key.reveal()
            kept = kept_state(grid, node)
            if kept["pending"]:
                secrets[f"x25519.{node}"] = kept["pending"]
            if kept["key"]:
                owner = KeyOwner.from_bytes(kept["key"])
                secret_part = kept["key"][len(owner.aggregator_context().to_bytes()) :]
                for start in range(0, len(secret_part) - 32, 4099):
                    secrets[f"sk.{node}.{start}"] = secret_part[start : start + 32]
        if grid.partition_of(node) == 2 and stage_of(request) == "DECRYPT":
            return tampered(lambda c: c[CKKS_RECORD].__setitem__("payload", b"\x00" * 8))  # a refusal to log
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 4, {}, fault=harvest)
    workflow = CkksWorkflow(decryptors=3)
    run_rounds(grid, workflow, rounds=2)
    assert all(r.aborted is None and len(r.decryptors) == 3 for r in workflow.reports)
    for node in grid.node_ids:
        harvest(node, Message(RecordDict(), node, "query", group_id="z"))
    assert sum(name.startswith("x25519") for name in secrets) == 4 and sum(name.startswith("sk") for name in secrets) > 20
    # a few typed errors raised on purpose, with key material in play
    errors = [
        send(grid, grid.node_ids[0], {"stage": "INSTALL", "round": 9, "payload": b"x" * 64, "dealer": 1, "dealer-key": bytes(32), "fingerprint": bytes(32)}).error.reason,
    ]
    assert workflow.reports[0].refused  # the tampered decryption was refused and logged
    texts = [caplog.text, *errors, repr(workflow), repr(ckks_mod), repr(workflow.aggregator)]
    texts += [str(r.to_dict()) for r in workflow.reports] + [repr(r) for r in workflow.reports]
    texts += [repr(held_key(grid, n)) for n in grid.node_ids] + contexts
    haystack = "\n".join(texts)
    for label, secret in secrets.items():
        for form in _forms(secret):
            assert form not in haystack, f"secret {label} appears"
    state_bytes = b"".join(raw)
    assert b"FCSL" in state_bytes
    for label, secret in secrets.items():
        assert secret not in state_bytes, f"secret {label} is in Context.state in the clear"
    assert "<held>" in repr(held_key(grid, grid.node_ids[0]))
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
    header = peek_header(content[CKKS_RECORD]["payload"])
    forged = BlobHeader(BlobKind.UPLOAD, header.fingerprint, header.length, header.spec_digest, 1, 1.0, header.ciphertext_count)
    content[CKKS_RECORD]["payload"] = encode_blob(forged, [empty] * header.ciphertext_count)


def test_bad_replies_drop_their_node_and_never_end_the_run() -> None:
    """A 0-polynomial upload and a garbage context reply: typed refusals, the others' FedAvg."""

    def garbage_context(content: RecordDict) -> None:
        content[CKKS_RECORD]["payload"] = b"FCHC\x02\x01\xff\xff" + b"\x00" * 7

    def fault(node, request):
        part, stage = grid.partition_of(node), stage_of(request)
        if part == 3 and stage == "ENCRYPT":
            return tampered(lambda content: _zero_polynomial_upload(content, held_key(grid, node)))
        if part == 4 and stage == "CONTEXT" and request.metadata.group_id == "2":
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
