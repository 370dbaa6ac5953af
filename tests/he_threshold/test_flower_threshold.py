"""Threshold CKKS through the Flower adapter (flwr 1.30, CPython 3.10; skipped elsewhere).

Real ClientApps with a ``ThresholdMod``, real Flower Message/Context objects through Flower's
protobuf encoding (``_threshold_grid.InProcessGrid``), real OpenFHE; the adapter is a
transport over :mod:`fedcrypt.he.threshold.round`, whose refusals are tested with real
messages in ``test_round_refusals``. Statistical note: the averages are compared with
:func:`fedavg_error_bound` (built on ``ThresholdParams.sum_error_bound``, 10 modelled
standard deviations: a false failure has probability below 1e-12 over the few hundred
coordinates decrypted here).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("openfhe")

if os.environ.get("FEDCRYPT_REQUIRE_OPENFHE") != "1":  # CI's 3.10 run: never skip (see conftest.py)
    pytest.importorskip("openfhe", reason="threshold CKKS needs openfhe (CPython 3.10: scripts/setup_py310.sh)")
    pytest.importorskip("flwr", reason="the Flower adapter needs flwr (CPython 3.10: flwr==1.30.0, scripts/setup_py310.sh)")
sys.path.insert(0, str(Path(__file__).parent))

from _threshold_grid import InProcessGrid, PullGrid, example_app, small_config, stage_of, train_messages, wire  # noqa: E402
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402

from fedcrypt.errors import ContextMismatchError, MalformedMessageError, RecordMismatchError, UnexpectedMessageError  # noqa: E402
from fedcrypt.he.threshold.round import DecryptRequest, EncryptRequest, ThresholdClient  # noqa: E402
from fedcrypt.integrations.flower._state import kept as opened_state, node_state_key  # noqa: E402
from fedcrypt.integrations.flower.threshold import (  # noqa: E402
    RECORD,
    STATE,
    ThresholdGrid,
    ThresholdMod,
    ThresholdWorkflow,
    default_config,
    fedavg_error_bound,
)

SIZE = 40


def kept(ctxt: Context, config: Any = None) -> ThresholdClient:
    """The node's client (its key holder inside), opened with the node's own state key (the
    test's privilege, not the server's)."""
    state = opened_state(ctxt, node_state_key(ctxt), STATE)
    return ThresholdClient.from_state_bytes(state, config=config or small_config())


def expected_average(grid: InProcessGrid, model: np.ndarray, nodes: list[int] | None = None) -> tuple[np.ndarray, float]:
    """Plaintext FedAvg of the example app's updates (weights 10 * (partition + 1))."""
    nodes = nodes if nodes is not None else grid.node_ids
    weights = [10.0 * (grid.node_ids.index(n) + 1) for n in nodes]
    updates = [model.astype(np.float32) + np.float32(0.01 * (grid.node_ids.index(n) + 1)) for n in nodes]
    average = sum(w * u.astype(np.float64) for w, u in zip(weights, updates)) / sum(weights)
    return average, sum(weights)


def run_rounds(
    workflow: ThresholdWorkflow, rounds: int, *, fault: Any = None, nodes: int = 3, created: Any = None
) -> tuple[InProcessGrid, list[Any]]:
    grid = InProcessGrid(example_app(workflow.config), nodes, fault=fault)
    if created is not None:  # a fault that needs the grid (its contexts) gets it before any message
        created(grid)
    wrapped = ThresholdGrid(grid, workflow)
    model = np.zeros(SIZE, dtype=np.float32)
    results = []
    for server_round in range(1, rounds + 1):
        replies = list(wrapped.send_and_receive(train_messages(grid, model, server_round), timeout=5.0))
        results.append((model, replies))
        if replies:
            model = replies[0].content["arrays"]["w"].numpy()
    return grid, results


def small_workflow(recovery_threshold: int = 0) -> ThresholdWorkflow:
    return ThresholdWorkflow(small_config(recovery_threshold), stage_timeout=5.0)


def test_three_nodes_two_rounds_give_the_weighted_average() -> None:
    workflow = small_workflow()
    grid, results = run_rounds(workflow, 2)
    params = workflow.params
    assert params is not None and params.flooding and params.num_parties == 3
    for (model, replies), report in zip(results, workflow.reports):
        assert report.aborted is None and report.refused == {} and report.dropped == {}
        assert report.survivors == sorted(grid.node_ids) and report.committee == sorted(grid.node_ids)
        (reply,) = replies
        got = reply.content["arrays"]["w"].numpy()
        exact, total = expected_average(grid, model)
        bound = fedavg_error_bound(params, [10.0, 20.0, 30.0], workflow.max_weight)
        assert bound < 1e-5
        assert np.max(np.abs(got - exact)) <= bound + 2.0**-22 * np.max(np.abs(exact))
        metrics = reply.content["metrics"]
        assert abs(metrics["num-examples"] - total) <= bound * total * 10
        assert abs(metrics["loss"] - (10 * 0.5 + 20 * 1.5 + 30 * 2.5) / 60) <= 1e-4
    # key generation ran once; round 2 only encrypted and decrypted
    assert "KEYGEN" in workflow.reports[0].stage_seconds and "KEYGEN" not in workflow.reports[1].stage_seconds
    # every node keeps its holder (secret share included) in Context.state, sealed
    for node, ctxt in grid.contexts.items():
        assert set(ctxt.state[STATE].keys()) == {"sealed"}
        client = kept(ctxt)
        holder = client._holder
        assert client.fingerprint.hex() == workflow.reports[1].fingerprint and client._encrypted_round == 2
        assert "secret_key_share=<held>" in repr(holder)
        secret = holder._secret_bytes.reveal()
        assert all(secret[i : i + 32] not in ctxt.state[STATE]["sealed"] for i in range(0, len(secret) - 32, 509))


def test_key_holder_dropout_aborts_the_round_n_of_n() -> None:
    victim: list[int] = []

    def fault(node: int, request: Message) -> Any:
        if not victim:
            victim.append(node)  # the first node messaged: key holder 0
        return "drop" if node == victim[0] and stage_of(request) == "DECRYPT" else None

    workflow = small_workflow()
    grid, results = run_rounds(workflow, 1, fault=fault)
    (_, replies), report = results[0], workflow.reports[0]
    assert replies == []  # the strategy gets nothing
    assert report.aborted is not None and report.aborted.startswith("RoundAbortedError") and "dropped" in report.aborted
    assert report.dropped == {victim[0]: "DECRYPT"}
    assert report.survivors == sorted(grid.node_ids)  # its upload was in; its share is missing


def test_key_holder_dropout_is_recovered_t_of_n() -> None:
    dropped_node: list[int] = []

    def fault(node: int, request: Message) -> Any:
        if stage_of(request) == "DECRYPT" and not dropped_node:
            dropped_node.append(node)
        return "drop" if dropped_node and node == dropped_node[0] and stage_of(request) == "DECRYPT" else None

    workflow = small_workflow(recovery_threshold=2)
    grid, results = run_rounds(workflow, 1, fault=fault)
    (model, replies), report = results[0], workflow.reports[0]
    assert report.aborted is None, report.aborted
    assert set(report.stood_in) == {dropped_node[0]} and report.stood_in[dropped_node[0]] != dropped_node[0]
    assert {"BACKUP", "RELEASE", "RECOVER"} <= set(report.stage_seconds)
    got = replies[0].content["arrays"]["w"].numpy()
    exact, _ = expected_average(grid, model)
    params = workflow.params
    assert params is not None and params.recovery_threshold == 2
    assert np.max(np.abs(got - exact)) <= fedavg_error_bound(params, [10.0, 20.0, 30.0], workflow.max_weight) + 1e-8


def test_record_mismatch_on_the_node_side_names_the_records() -> None:
    ctxt = Context(1, 77, {"partition-id": 0, "num-partitions": 3}, RecordDict(), {})
    mod = ThresholdMod(small_config())

    def call_next(msg: Message, context: Context) -> Message:
        raise AssertionError("the app must not run")

    def request(content: RecordDict) -> Message:
        return wire(Message(content, 77, "train", group_id="1"))

    good_fields = {"stage": "DECRYPT", "payload": DecryptRequest(1, 77, b"x").to_bytes()}
    with pytest.raises(RecordMismatchError) as info:
        mod(request(RecordDict({RECORD: ConfigRecord(good_fields), "rogue": ConfigRecord({"a": 1})})), ctxt, call_next)
    assert info.value.extra == ("rogue",) and info.value.missing == ()
    with pytest.raises(RecordMismatchError) as info:
        mod(request(RecordDict({RECORD: ConfigRecord({"stage": "DECRYPT", "extra": 1})})), ctxt, call_next)
    assert info.value.missing == ("payload",) and info.value.extra == ("extra",)
    with pytest.raises(RecordMismatchError) as info:
        mod(request(RecordDict({"config": ConfigRecord({"server-round": 1})})), ctxt, call_next)
    assert info.value.missing == (RECORD,)
    with pytest.raises(MalformedMessageError, match="unknown stage 'BOGUS'"):
        mod(request(RecordDict({RECORD: ConfigRecord({**good_fields, "stage": "BOGUS"})})), ctxt, call_next)
    with pytest.raises(UnexpectedMessageError, match="a DecryptRequest in a KEYGEN message"):
        mod(request(RecordDict({RECORD: ConfigRecord({**good_fields, "stage": "KEYGEN"})})), ctxt, call_next)
    with pytest.raises(UnexpectedMessageError, match="key state NO_KEY"):
        mod(request(RecordDict({RECORD: ConfigRecord(good_fields)})), ctxt, call_next)
    assert STATE not in ctxt.state.keys()  # nothing was written
    passed = ThresholdMod(small_config(), allow_plaintext=True)(
        request(RecordDict({"config": ConfigRecord({"server-round": 1})})), ctxt,
        lambda m, c: Message(RecordDict({"metrics": MetricRecord({"ok": 1})}), reply_to=m),
    )
    assert passed.content["metrics"]["ok"] == 1


def test_record_mismatch_on_the_server_side_is_refused_and_reported() -> None:
    """A node whose DECRYPT reply carries an extra record: refused, named; n-of-n aborts."""
    tampered: list[int] = []

    def fault(node: int, request: Message) -> Any:
        if stage_of(request) != "DECRYPT" or tampered:
            return None
        tampered.append(node)

        def add_record(reply: Message) -> Message:
            reply.content["smuggled"] = MetricRecord({"x": 1.0})
            return reply

        return add_record

    workflow = small_workflow()
    _, results = run_rounds(workflow, 1, fault=fault)
    report = workflow.reports[0]
    assert results[0][1] == []
    refusal = report.refused[tampered[0]]
    assert refusal.startswith("RecordMismatchError") and "extra ['smuggled']" in refusal and "missing []" in refusal
    assert report.dropped[tampered[0]] == "DECRYPT"
    assert report.aborted is not None and "RoundAbortedError" in report.aborted


def test_node_refuses_replays_and_another_key() -> None:
    workflow = small_workflow()
    grid, _ = run_rounds(workflow, 1)
    node = grid.node_ids[0]
    ctxt = grid.contexts[node]
    before = ctxt.state[STATE]["sealed"]
    fingerprint = kept(ctxt).fingerprint

    def encrypt_request(round_id: int, key: bytes) -> Message:
        content = train_messages(grid, np.zeros(SIZE, dtype=np.float32), round_id, [node])[0].content
        content[RECORD] = ConfigRecord({"stage": "ENCRYPT", "payload": EncryptRequest(round_id, node, key).to_bytes()})
        return wire(Message(content, node, "train", group_id=str(round_id)))

    app = example_app(workflow.config)  # flwr 1.30's ClientApp lets the mod's typed error through
    with pytest.raises(UnexpectedMessageError, match=r"already encrypted for round 1 \(replay\)"):
        app(encrypt_request(1, fingerprint), ctxt)
    with pytest.raises(ContextMismatchError, match="another joint key"):
        app(encrypt_request(2, bytes(32)), ctxt)
    assert ctxt.state[STATE]["sealed"] == before  # refused messages change nothing


def test_a_swapped_or_tampered_key_share_record_is_refused_before_any_decryption() -> None:
    from fedcrypt.errors import DecryptionError

    workflow = small_workflow()
    grid, _ = run_rounds(workflow, 1)
    first, second = grid.node_ids[:2]
    a, b = grid.contexts[first], grid.contexts[second]
    a.state[STATE], b.state[STATE] = b.state[STATE], a.state[STATE]
    mod = ThresholdMod(workflow.config)
    request = RecordDict({RECORD: ConfigRecord({"stage": "DECRYPT", "payload": DecryptRequest(5, first, b"\x00" * 64).to_bytes()})})
    with pytest.raises(DecryptionError, match="moved from another record, run or node"):
        mod(wire(Message(request, first, "train", group_id="5")), a, lambda m, c: m)
    a.state[STATE], b.state[STATE] = b.state[STATE], a.state[STATE]
    sealed = bytearray(a.state[STATE]["sealed"])
    sealed[40] ^= 0x80
    a.state[STATE]["sealed"] = bytes(sealed)
    with pytest.raises(DecryptionError, match="tampered"):
        mod(wire(Message(request, first, "train", group_id="5")), a, lambda m, c: m)


def test_config_and_workflow_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"capacity guard"):
        default_config(3, preset="compact", clip=4.0, capacity=100, max_weight=1000.0)
    with pytest.raises(ValueError, match=r"recovery_threshold must be 0 \(n-of-n\) or in \[2, 2\]"):
        default_config(3, recovery_threshold=3)
    with pytest.raises(TypeError, match="config must be a ThresholdConfig"):
        ThresholdWorkflow("wide")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="workflow must be a ThresholdWorkflow"):
        ThresholdGrid(InProcessGrid(example_app(), 2), "x")  # type: ignore[arg-type]
    workflow = small_workflow()
    _, results = run_rounds(workflow, 1, nodes=4)  # a new session's first round: exactly the committee
    assert results[0][1] == [] and "3 nodes (params.num_parties), got 4" in (workflow.reports[0].aborted or "")


STAGES = ["KEYGEN", "JOINT", "BACKUP", "ENCRYPT", "DECRYPT", "RELEASE", "RECOVER"]


@settings(max_examples=8, deadline=None)
@given(
    recovery=st.sampled_from([0, 2]),
    drops=st.dictionaries(st.integers(0, 2), st.sampled_from(STAGES), max_size=2),
)
def test_dropouts_at_any_stage_average_exactly_the_uploaders_or_return_nothing(recovery: int, drops: dict[int, str]) -> None:
    """Invariant: the strategy gets the weighted average of exactly the nodes whose uploads
    are in the sum (within the bound), or no reply and a report that says why."""
    holder: dict[str, InProcessGrid] = {}
    fired: dict[int, str] = {}  # the drops that happened (a stage may never be reached)

    def fault(node: int, request: Message) -> Any:
        partition = holder["grid"].node_ids.index(node)
        if drops.get(partition) == stage_of(request):
            fired[partition] = drops[partition]
            return "drop"
        return None

    workflow = small_workflow(recovery_threshold=recovery)
    grid = InProcessGrid(example_app(workflow.config), 3, fault=fault)
    holder["grid"] = grid
    model = np.zeros(SIZE, dtype=np.float32)
    replies = list(ThresholdGrid(grid, workflow).send_and_receive(train_messages(grid, model, 1), timeout=5.0))
    (report,) = workflow.reports
    if not replies:
        assert report.aborted is not None
        if not fired:
            pytest.fail(f"no dropout, yet no reply: {report.aborted}")
        return
    assert report.aborted is None and len(report.survivors) >= 2
    assert set(fired.values()) <= {"ENCRYPT", "DECRYPT"}  # any other loss aborts
    if "DECRYPT" in fired.values():
        assert recovery and len(report.stood_in) == 1  # t-of-n only, one stand-in at most
    assert set(report.dropped) == {grid.node_ids[p] for p in fired}
    uploaders = [n for n in grid.node_ids if fired.get(grid.node_ids.index(n)) != "ENCRYPT"]
    assert sorted(report.survivors) == sorted(uploaders)
    exact, total = expected_average(grid, model, uploaders)
    params = workflow.params
    assert params is not None
    weights = [10.0 * (grid.node_ids.index(n) + 1) for n in uploaders]
    bound = fedavg_error_bound(params, weights, workflow.max_weight)
    got = replies[0].content["arrays"]["w"].numpy()
    assert np.max(np.abs(got - exact)) <= bound + 2.0**-22 * np.max(np.abs(exact))
    assert abs(replies[0].content["metrics"]["num-examples"] - total) <= 10 * bound * total


def test_no_key_material_in_logs_reports_reprs_or_contexts(caplog: pytest.LogCaptureFixture) -> None:
    """A round with a refused node and a stand-in: the warnings, the report, the reprs, every
    Context's ``repr``/``str`` (before each message and at the end) and the serialised
    ``Context.state`` carry no byte of any node's key share, backup pieces or state key."""
    import json
    import logging

    from flwr.common.serde import recorddict_to_proto

    from fedcrypt.integrations.flower._state import node_state_key

    victim: list[int] = []
    contexts: list[str] = []
    raw: list[bytes] = []

    def fault(node: int, request: Message) -> Any:
        ctxt = grid_of[0].contexts[node] if grid_of else None
        if ctxt is not None:
            contexts.extend((repr(ctxt), str(ctxt)))
            raw.append(recorddict_to_proto(ctxt.state).SerializeToString())
        if stage_of(request) == "DECRYPT" and not victim:
            victim.append(node)
        return "drop" if victim and node == victim[0] and stage_of(request) == "DECRYPT" else None

    grid_of: list[InProcessGrid] = []
    workflow = small_workflow(recovery_threshold=2)
    with caplog.at_level(logging.DEBUG):
        grid, results = run_rounds(workflow, 1, fault=fault, created=grid_of.append)
    assert results[0][1] and workflow.reports[0].stood_in
    for ctxt in grid.contexts.values():
        contexts.extend((repr(ctxt), str(ctxt)))
        raw.append(recorddict_to_proto(ctxt.state).SerializeToString())
    text = caplog.text + json.dumps(workflow.reports[0].to_dict()) + repr(workflow) + repr(workflow.reports[0])
    text += "\n".join(contexts)
    state_bytes = b"".join(raw)
    assert "refused" in caplog.text or "dropped" in json.dumps(workflow.reports[0].to_dict())
    assert len(raw) > 10 and b"FCSL" in state_bytes
    for ctxt in grid.contexts.values():
        holder = kept(ctxt, workflow.config)._holder
        assert holder._secret_bytes is not None and len(holder._backups) == 2
        secrets = [holder._secret_bytes.reveal(), *(piece.reveal() for piece in holder._backups.values())]
        for secret in secrets:
            for window in (secret[100:132], secret[-32:]):
                assert window.hex() not in text and repr(window)[2:-1] not in text
                assert window not in state_bytes
        state_key = node_state_key(ctxt)._key.reveal()
        assert state_key.hex() not in text and state_key not in state_bytes


def test_a_roster_round_gives_the_weighted_average(tmp_path: Path) -> None:
    """Malicious-server mode over real Flower messages: signed key chain, signed and confirmed
    uploads, holders that sum the uploads themselves; the strategy gets the same average."""
    import dataclasses

    from fedcrypt.identity import NodeIdentity, Roster

    identities = {f"node-{i}": NodeIdentity.generate() for i in range(3)}
    roster = Roster({name: identity.public_bytes for name, identity in identities.items()})
    roster.save(tmp_path / "roster.txt")
    workflow = ThresholdWorkflow(dataclasses.replace(small_config(), roster=roster), stage_timeout=5.0)
    grid = InProcessGrid(example_app(small_config()), 3)
    for i, node in enumerate(grid.node_ids):
        identities[f"node-{i}"].save(tmp_path / f"node-{i}.pem")
        grid.contexts[node].node_config.update({
            "fedcrypt-identity": str(tmp_path / f"node-{i}.pem"), "fedcrypt-roster": str(tmp_path / "roster.txt"),
            "fedcrypt-roster-digest": roster.digest().hex(),
        })
    model = np.zeros(SIZE, dtype=np.float32)
    (reply,) = ThresholdGrid(grid, workflow).send_and_receive(train_messages(grid, model, 1), timeout=5.0)
    report = workflow.reports[0]
    assert report.aborted is None and not report.refused and "CONFIRM" in report.stage_seconds
    exact, _ = expected_average(grid, model)
    bound = fedavg_error_bound(workflow.params, [10.0, 20.0, 30.0], workflow.max_weight)
    assert np.max(np.abs(reply.content["arrays"]["w"].numpy() - exact)) <= bound + 2.0**-22 * np.max(np.abs(exact))


def test_replies_are_pulled_one_by_one_and_folded_as_they_arrive() -> None:
    """Streaming: uploads and partial decryptions are handed to the round as they are pulled
    (the grid refuses send_and_receive for train messages); a silent uploader is dropped."""

    def fault(node: int, request: Message) -> Any:
        return "drop" if node == grid.node_ids[2] and stage_of(request) == "ENCRYPT" else None

    workflow = ThresholdWorkflow(small_config(), stage_timeout=1.0, poll_interval=0.01)
    grid = PullGrid(example_app(workflow.config), 3, fault=fault)
    model = np.zeros(SIZE, dtype=np.float32)
    (reply,) = ThresholdGrid(grid, workflow).send_and_receive(train_messages(grid, model, 1), timeout=1.0)
    report = workflow.reports[0]
    assert report.aborted is None and report.dropped == {grid.node_ids[2]: "ENCRYPT"}
    uploads = [r for r in grid.pulled if r.content[RECORD]["stage"] == "ENCRYPT"]
    assert len(uploads) == 2 and all(r.content[RECORD]["payload"] == b"" for r in uploads)  # folded, not kept
    exact, _ = expected_average(grid, model, grid.node_ids[:2])
    bound = fedavg_error_bound(workflow.params, [10.0, 20.0], workflow.max_weight)
    assert np.max(np.abs(reply.content["arrays"]["w"].numpy() - exact)) <= bound + 2.0**-22 * np.max(np.abs(exact))


def test_one_node_with_another_layout_is_left_out_alone() -> None:
    """Attacker review 5's layout race: a node answering first with another layout (an extra
    metric) no longer makes its layout the round's; the others' average reaches the strategy."""
    from flwr.app import Array, ArrayRecord
    from flwr.clientapp import ClientApp

    workflow = small_workflow()
    app = ClientApp(mods=[ThresholdMod(workflow.config)])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        update = (msg.content["arrays"]["w"].numpy() + 0.01 * (partition + 1)).astype(np.float32)
        metrics = {"num-examples": 10 * (partition + 1), "loss": 0.5 + partition}
        if partition == 0:
            metrics["renamed-metric"] = 0.0  # another layout, same arrays
        return Message(RecordDict({"arrays": ArrayRecord({"w": Array(update)}), "metrics": MetricRecord(metrics)}), reply_to=msg)

    grid = InProcessGrid(app, 3)
    model = np.zeros(SIZE, dtype=np.float32)
    (reply,) = ThresholdGrid(grid, workflow).send_and_receive(train_messages(grid, model, 1), timeout=5.0)
    report = workflow.reports[0]
    assert report.aborted is None
    assert report.survivors == grid.node_ids[1:]
    # the odd node still decrypts (a key holder), and the report keeps why its upload is out
    assert grid.node_ids[0] in report.decryptors and "another layout" in report.refused[grid.node_ids[0]]
    exact, _ = expected_average(grid, model, grid.node_ids[1:])
    bound = fedavg_error_bound(workflow.params, [20.0, 30.0], workflow.max_weight)
    assert np.max(np.abs(reply.content["arrays"]["w"].numpy() - exact)) <= bound + 2.0**-22 * np.max(np.abs(exact))
    assert abs(reply.content["metrics"]["loss"] - (20 * 1.5 + 30 * 2.5) / 50) <= 1e-4
    assert "renamed-metric" not in reply.content["metrics"]
