"""fedcrypt's Flower adapter, in process: the real ClientApp, mod, strategy and protocol.

Every message crosses Flower's protobuf serialisation (see ``_inprocess``). The real
Flower processes (Ray simulation, SuperLink + SuperNodes) are in ``test_flower_processes``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fedcrypt.errors import MalformedMessageError, RecordMismatchError, UnexpectedMessageError
from fedcrypt.secagg.setup import dump_config, load_config
from fedcrypt.integrations.flower import (
    RECORD,
    STATE,
    SecAggGrid,
    SecAggMod,
    SecAggWorkflow,
    check_fields,
    check_records,
    kept_stage,
    secagg_mod,
    train_digest,
)
from fedcrypt.secagg import SecAggConfig, Stage

from ._inprocess import InProcessGrid, PullGrid

SIZE = 37


def update_of(partition: int, server_round: int, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A deterministic (non-secret) local update, so plaintext FedAvg can be recomputed."""
    rng = np.random.default_rng([partition, server_round])
    return {name: (value + rng.uniform(-1, 1, value.shape)).astype(np.float32) for name, value in arrays.items()}


def weight_of(partition: int) -> int:
    return 10 * (partition + 1)


def make_app(mods: list | None = None) -> ClientApp:
    app = ClientApp(mods=mods or [])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        arrays = {name: arr.numpy() for name, arr in msg.content["arrays"].items()}
        new = update_of(partition, server_round, arrays)
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in new.items()}),
                "metrics": MetricRecord({"num-examples": weight_of(partition), "loss": float(partition)}),
            }
        )
        return Message(content=content, reply_to=msg)

    return app


def initial() -> ArrayRecord:
    return ArrayRecord({"a": Array(np.zeros((3, 7), np.float32)), "b": Array(np.zeros(SIZE - 21, np.float32))})


def plaintext_fedavg(partitions_by_round: list[list[int]]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """FedAvg recomputed in float64 from the partitions that survived each round."""
    arrays = {name: arr.numpy().astype(np.float64) for name, arr in initial().items()}
    metrics: dict[str, float] = {}
    for server_round, parts in enumerate(partitions_by_round, start=1):
        weights = np.array([weight_of(p) for p in parts], dtype=np.float64)
        ups = [update_of(p, server_round, {k: v.astype(np.float32) for k, v in arrays.items()}) for p in parts]
        arrays = {k: sum(w * u[k].astype(np.float64) for w, u in zip(weights, ups)) / weights.sum() for k in arrays}
        metrics = {"loss": float(np.dot(weights, parts) / weights.sum()), "num-examples": float(weights.sum())}
    return arrays, metrics


def fedavg_tolerance(workflow: SecAggWorkflow, survivors: int, weights: list[int], magnitude: float) -> float:
    """Worst-case error of sum(w x)/sum(w) from the codec's documented sum error.

    A = S + e1, B = W + e2 with |e1|, |e2| <= E (codec.error_bound): |A/B - S/W| <= E (W + |S|) / (W (W - E)).
    Values here are the w/M-scaled ones. float32 rounding of the result adds 2^-23 relative.
    """
    config = workflow.config_for(survivors)
    e = config.codec.error_bound(survivors)
    w = sum(weights) / workflow.max_weight
    s = w * magnitude
    return e * (w + s) / (w * (w - e)) + magnitude * 2.0**-22


def run_rounds(grid, workflow, rounds=2):
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    return strategy.start(grid=SecAggGrid(grid, workflow), initial_arrays=initial(), num_rounds=rounds, timeout=30)


# ============================================================================ happy path
@settings(max_examples=6, deadline=None)
@given(num_nodes=st.integers(2, 6), neighbours=st.sampled_from([None, 4]), bits=st.sampled_from([32, 64]))
def test_secure_fedavg_equals_plaintext_fedavg(num_nodes: int, neighbours: int | None, bits: int) -> None:
    workflow = SecAggWorkflow(neighbours=neighbours, bits=bits, clip=8.0)
    grid = InProcessGrid(make_app([secagg_mod]), num_nodes, {})
    result = run_rounds(grid, workflow)
    expected, expected_metrics = plaintext_fedavg([list(range(num_nodes))] * 2)
    tol = fedavg_tolerance(workflow, num_nodes, [weight_of(p) for p in range(num_nodes)], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)
    final = result.train_metrics_clientapp[2]
    assert final["loss"] == pytest.approx(expected_metrics["loss"], abs=tol)
    assert [r.survivors for r in workflow.reports] == [sorted(grid.node_ids)] * 2
    assert all(not r.dropped and not r.refused and r.aborted is None for r in workflow.reports)
    # the strategy's own records reached the clients once per round, at the masked-input stage only
    assert grid.calls == 2 * 4 * num_nodes


def test_one_node_with_another_layout_is_set_aside_alone() -> None:
    """Attacker review 5's layout race: the first masked input's layout no longer becomes the round's;
    the core sums each layout apart and keeps the most common one (the other node counts as dropped)."""
    app = ClientApp(mods=[secagg_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        arrays = {name: arr.numpy() for name, arr in msg.content["arrays"].items()}
        new = update_of(partition, int(msg.content["config"]["server-round"]), arrays)
        metrics = {"num-examples": weight_of(partition), ("renamed" if partition == 0 else "loss"): float(partition)}
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in new.items()}), "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    workflow = SecAggWorkflow(clip=8.0)
    grid = InProcessGrid(app, 5, {})
    result = run_rounds(grid, workflow, rounds=1)
    report, odd = workflow.reports[0], grid.node_ids[0]
    assert report.aborted is None and report.survivors == sorted(grid.node_ids[1:])
    assert "layout" in report.refused[odd]
    expected, _ = plaintext_fedavg([[1, 2, 3, 4]])
    tol = fedavg_tolerance(workflow, 4, [weight_of(p) for p in range(1, 5)], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)


def test_the_strategy_gets_one_reply_with_the_total_weight() -> None:
    grid = InProcessGrid(make_app([secagg_mod]), 3, {})
    train = [
        Message(RecordDict({"arrays": initial(), "config": ConfigRecord({"server-round": 5})}), n, "train", group_id="5")
        for n in grid.node_ids
    ]
    workflow = SecAggWorkflow()
    (reply,) = SecAggGrid(grid, workflow).send_and_receive(train, timeout=10)
    assert set(reply.content.keys()) == {"arrays", "metrics"}
    assert reply.content["metrics"]["num-examples"] == pytest.approx(10 + 20 + 30, rel=1e-6)
    assert reply.content["metrics"]["loss"] == pytest.approx((0 * 10 + 1 * 20 + 2 * 30) / 60, abs=1e-6)
    assert workflow.reports[0].round == 5
    assert list(reply.content["arrays"].keys()) == ["a", "b"]
    assert reply.content["arrays"]["a"].numpy().shape == (3, 7)


def test_client_state_is_kept_in_context_and_cleared_after_the_round() -> None:
    grid = InProcessGrid(make_app([secagg_mod]), 3, {})
    seen: list[bool] = []

    def spy(node, request):
        seen.append(STATE in grid.contexts[node].state.keys())
        return None

    grid.fault = spy
    run_rounds(grid, SecAggWorkflow(), rounds=1)
    # no state before the setup message, state before every later stage
    assert seen == [False] * 3 + [True] * 9
    assert all(STATE not in ctx.state.keys() for ctx in grid.contexts.values())


# ============================================================================ dropouts
@pytest.mark.parametrize(
    "stage, counted",
    [
        (Stage.ADVERTISE_KEYS, False),
        (Stage.SHARE_KEYS, False),
        (Stage.MASKED_INPUT, False),
        (Stage.UNMASK, True),  # its masked input is already in; its self-mask share comes from others
    ],
)
def test_a_node_dropping_mid_round_leaves_the_survivors_average(stage: Stage, counted: bool) -> None:
    victim_partition = 1

    def fault(node, request):
        rec = request.content[RECORD]
        if grid.partition_of(node) == victim_partition and Stage[rec["stage"]] >= stage and request.metadata.group_id == "1":
            return "drop"
        return None

    grid = InProcessGrid(make_app([secagg_mod]), 4, {}, fault=fault)
    workflow = SecAggWorkflow(clip=8.0)
    result = run_rounds(grid, workflow, rounds=2)
    first = [0, 1, 2, 3] if counted else [0, 2, 3]
    expected, _ = plaintext_fedavg([first, [0, 1, 2, 3]])
    tol = fedavg_tolerance(workflow, 3, [10, 30, 40], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)
    victim = grid.node_ids[victim_partition]
    assert workflow.reports[0].dropped == {victim: stage.name}
    assert (victim in workflow.reports[0].survivors) == counted
    assert workflow.reports[1].survivors == sorted(grid.node_ids)


def test_too_many_dropouts_abort_the_round_and_keep_the_model() -> None:
    def fault(node, request):
        if grid.partition_of(node) in (1, 2) and request.content[RECORD]["stage"] == "MASKED_INPUT":
            return "drop"
        return None

    grid = InProcessGrid(make_app([secagg_mod]), 3, {}, fault=fault)
    workflow = SecAggWorkflow()
    result = run_rounds(grid, workflow, rounds=1)
    assert "stage=MASKED_INPUT" in workflow.reports[0].aborted
    assert workflow.reports[0].survivors == []
    # FedAvg got no reply: the model is the initial one
    for name, value in result.arrays.items():
        np.testing.assert_array_equal(value.numpy(), initial()[name].numpy())


# ============================================================================ records
def _tamper(mutate):
    def action(reply: Message) -> Message:
        content = RecordDict({name: reply.content[name] for name in reply.content.keys()})
        mutate(content)
        return Message(content=content, metadata=reply.metadata)

    return action


def _add_record(content: RecordDict) -> None:
    content["surprise"] = ConfigRecord({"x": 1})


def _add_field(content: RecordDict) -> None:
    content[RECORD]["surplus"] = b"x"


def _drop_field(content: RecordDict) -> None:
    del content[RECORD]["payload"]


@pytest.mark.parametrize(
    "mutate, missing, extra",
    [(_add_record, (), ("surprise",)), (_add_field, (), ("surplus",)), (_drop_field, ("payload",), ())],
)
def test_server_refuses_a_reply_with_missing_or_extra_records(mutate, missing, extra) -> None:
    def fault(node, request):
        if grid.partition_of(node) == 0 and request.content[RECORD]["stage"] == "SHARE_KEYS":
            return _tamper(mutate)
        return None

    grid = InProcessGrid(make_app([secagg_mod]), 4, {}, fault=fault)
    workflow = SecAggWorkflow(clip=8.0)
    run_rounds(grid, workflow, rounds=1)
    report = workflow.reports[0]
    node = grid.node_ids[0]
    assert report.refused[node].startswith("RecordMismatchError")
    for name in missing + extra:
        assert repr(name) in report.refused[node]
    assert report.dropped == {node: "SHARE_KEYS"}
    assert report.survivors == sorted(grid.node_ids[1:])


def _setup_message(grid: InProcessGrid, node: int, **override) -> Message:
    config = SecAggWorkflow().config_for(len(grid.node_ids))
    import struct

    nodes = sorted(grid.node_ids)
    fields = {
        "stage": "ADVERTISE_KEYS",
        "payload": b"",
        "config": dump_config(config),
        "nodes": struct.pack(f">{len(nodes)}Q", *nodes),
        "client-id": nodes.index(node),
        "round": 1,
        "max-weight": 1000.0,
        "dp": b"",
        "model": train_digest(RecordDict({"arrays": initial(), "config": ConfigRecord({"server-round": 1})})),
        "members": b"",
    }
    fields.update(override)
    fields = {k: v for k, v in fields.items() if v is not None}
    return Message(RecordDict({RECORD: ConfigRecord(fields)}), node, "train", group_id="1")


def test_client_refuses_a_message_with_missing_or_extra_records() -> None:
    grid = InProcessGrid(make_app([secagg_mod]), 3, {})
    node = grid.node_ids[0]
    ctx = grid.contexts[node]
    app = grid.client_app
    with pytest.raises(RecordMismatchError, match=r"missing \['nodes'\], extra \[\]") as info:
        app(_setup_message(grid, node, nodes=None), ctx)
    assert info.value.missing == ("nodes",) and info.value.extra == ()
    extra = _setup_message(grid, node)
    extra.content["arrays"] = initial()
    with pytest.raises(RecordMismatchError, match=r"missing \[\], extra \['arrays'\]"):
        app(extra, ctx)
    with pytest.raises(RecordMismatchError, match=r"extra \['bonus'\]"):
        app(_setup_message(grid, node, bonus=3), ctx)
    assert STATE not in ctx.state.keys()  # nothing was accepted
    # a well-formed setup works afterwards: the refusals changed nothing
    reply = app(_setup_message(grid, node), ctx)
    assert set(reply.content[RECORD].keys()) == {"stage", "payload"}
    assert STATE in ctx.state.keys()


def test_client_refuses_a_plaintext_train_message_unless_allowed() -> None:
    plain = RecordDict({"arrays": initial(), "config": ConfigRecord({"server-round": 1})})
    grid = InProcessGrid(make_app([secagg_mod]), 2, {})
    node = grid.node_ids[0]
    with pytest.raises(RecordMismatchError, match=r"without the 'fedcrypt.secagg' record"):
        grid.client_app(Message(plain, node, "train", group_id="1"), grid.contexts[node])
    relaxed = InProcessGrid(make_app([SecAggMod(allow_plaintext=True)]), 2, {})
    node = relaxed.node_ids[0]
    reply = relaxed.client_app(Message(plain, node, "train", group_id="1"), relaxed.contexts[node])
    assert set(reply.content.keys()) == {"arrays", "metrics"}


def test_client_refuses_a_setup_naming_another_node() -> None:
    grid = InProcessGrid(make_app([secagg_mod]), 3, {})
    node = grid.node_ids[0]
    wrong = sorted(grid.node_ids).index(grid.node_ids[1])
    with pytest.raises(UnexpectedMessageError, match="this node is not client"):
        grid.client_app(_setup_message(grid, node, **{"client-id": wrong}), grid.contexts[node])


def test_a_stage_message_before_setup_is_refused() -> None:
    grid = InProcessGrid(make_app([secagg_mod]), 3, {})
    node = grid.node_ids[0]
    msg = Message(RecordDict({RECORD: ConfigRecord({"stage": "UNMASK", "payload": b"x"})}), node, "train", group_id="1")
    with pytest.raises(UnexpectedMessageError, match="never advertised keys"):
        grid.client_app(msg, grid.contexts[node])


def test_check_records_and_fields_name_the_difference() -> None:
    content = RecordDict({"a": ConfigRecord({"x": 1}), "b": ConfigRecord()})
    with pytest.raises(RecordMismatchError, match=r"missing \['c'\], extra \['b'\]") as info:
        check_records(content, ["a", "c"], party=3, stage=Stage.UNMASK)
    assert (info.value.missing, info.value.extra, info.value.party) == (("c",), ("b",), 3)
    assert isinstance(info.value, MalformedMessageError)
    check_records(content, ["a", "b"])
    with pytest.raises(RecordMismatchError, match=r"missing \['y'\], extra \['x'\]"):
        check_fields(content["a"], ["y"])
    with pytest.raises(RecordMismatchError, match="expected a ConfigRecord"):
        check_fields(MetricRecord({"x": 1}), ["x"])


def test_evaluate_messages_pass_through_untouched() -> None:
    app = ClientApp(mods=[secagg_mod])

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"acc": 0.5})}), reply_to=msg)

    grid = InProcessGrid(app, 2, {})
    replies = SecAggGrid(grid).send_and_receive(
        [Message(RecordDict({"config": ConfigRecord()}), n, "evaluate", group_id="1") for n in grid.node_ids]
    )
    assert [r.content["metrics"]["acc"] for r in replies] == [0.5, 0.5]


# ============================================================================ config bytes
def test_config_decoder_is_strict() -> None:
    """(The client's state encoding is ClientProtocol's own: tests/secagg/test_state.py;
    its sealing in Context.state: test_flower_state.py.)"""
    config = SecAggConfig(num_clients=3, threshold=2)
    assert load_config(dump_config(config)) == config
    for bad in (dump_config(config)[:-3], dump_config(config) + b"\x00", b"\x63" + dump_config(config)[1:]):
        with pytest.raises(MalformedMessageError):
            load_config(bad)


def test_workflow_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"threshold must be a fraction in \(0.5, 1\]"):
        SecAggWorkflow(threshold=0.5)
    with pytest.raises(ValueError, match="max_weight must be a positive finite number"):
        SecAggWorkflow(max_weight=0)
    with pytest.raises(ValueError, match="stage_timeout must be a positive number of seconds"):
        SecAggWorkflow(stage_timeout=-1)
    with pytest.raises(ValueError, match="min_clients must be an integer >= 2"):
        SecAggMod(min_clients=1)
    with pytest.raises(TypeError, match="grid must be a flwr Grid"):
        SecAggGrid(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"SecAgg\+ needs neighbours >= ceil\(log2\(num_clients\)\) = 3"):
        SecAggWorkflow(neighbours=2).config_for(5)
    plus = SecAggWorkflow(threshold=0.67, neighbours=4).config_for(8)
    assert (plus.neighbours, plus.share_holders, plus.threshold) == (4, 5, 4)
    full = SecAggWorkflow(threshold=0.51, neighbours=4).config_for(5)  # k >= n-1: the complete graph
    assert (full.neighbours, full.share_holders, full.threshold) == (None, 5, 3)


# ============================================================================ distributed DP
@pytest.mark.parametrize("drop", [False, True])
def test_distributed_dp_round_adds_the_calibrated_noise_to_the_mean_delta(drop: bool) -> None:
    """Statistical: the residual against plaintext mean delta has the documented std.

    1024 coordinates: the sample std of N(0, sigma^2) is within 20% of sigma with
    probability 1 - 1e-15 (about 9 standard errors), so the false-failure rate is
    negligible; noise comes from the OS CSPRNG (no seed: it is privacy noise).
    """
    dim, z, clip = 1024, 0.5, 60.0
    start = ArrayRecord({"a": Array(np.zeros(dim, np.float32))})

    def fault(node, request):
        if drop and grid.partition_of(node) == 3 and request.content[RECORD]["stage"] == "MASKED_INPUT":
            return "drop"
        return None

    grid = InProcessGrid(make_app([secagg_mod]), 4, {}, fault=fault)
    workflow = SecAggWorkflow(dp_noise_multiplier=z, dp_clip=clip)
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    result = strategy.start(grid=SecAggGrid(grid, workflow), initial_arrays=start, num_rounds=1, timeout=30)
    survivors = [0, 1, 2] if drop else [0, 1, 2, 3]
    deltas = [update_of(p, 1, {"a": np.zeros(dim, np.float32)})["a"].astype(np.float64) for p in survivors]
    assert max(np.linalg.norm(d) for d in deltas) < clip  # nothing clipped: the plaintext mean is exact
    residual = result.arrays["a"].numpy().astype(np.float64) - np.mean(deltas, axis=0)
    sigma = z * clip * np.sqrt(len(survivors) / 4) / len(survivors)
    report = workflow.reports[0]
    assert report.dp["noise_stddev"] == pytest.approx(sigma)
    assert report.dp["survivors"] == len(survivors) and report.dp["mechanism"] == "ddgauss"
    assert 0.8 * sigma < residual.std() < 1.2 * sigma
    assert abs(residual.mean()) < 6 * sigma / np.sqrt(dim)
    assert len(report.survivors) == len(survivors)


def test_distributed_dp_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="distributed DP needs bits=32"):
        SecAggWorkflow(dp_noise_multiplier=1.0, bits=64)
    with pytest.raises(ValueError, match="mechanism must be one of"):
        SecAggWorkflow(dp_noise_multiplier=1.0, dp_mechanism="laplace")
    with pytest.raises(TypeError, match="noise_multiplier must be a real number"):
        SecAggWorkflow(dp_noise_multiplier="1")  # type: ignore[arg-type]


def test_a_client_can_require_a_minimum_dp_noise() -> None:
    strict = SecAggMod(min_noise_multiplier=0.8)
    for offered in (None, 0.5):
        grid = InProcessGrid(make_app([strict]), 3, {})
        workflow = SecAggWorkflow(dp_noise_multiplier=offered, dp_clip=60.0)
        run_rounds(grid, workflow, rounds=1)
        report = workflow.reports[0]
        assert report.aborted is not None and report.survivors == []
        assert all("ProtocolViolationError" in why and "this client requires at least 0.8" in why for why in report.refused.values())
        assert len(report.refused) == 3
    grid = InProcessGrid(make_app([strict]), 3, {})
    workflow = SecAggWorkflow(dp_noise_multiplier=1.0, dp_clip=60.0)
    run_rounds(grid, workflow, rounds=1)
    assert len(workflow.reports[0].survivors) == 3
    with pytest.raises(ValueError, match="min_noise_multiplier and allow_plaintext=True contradict"):
        SecAggMod(min_noise_multiplier=1.0, allow_plaintext=True)
    with pytest.raises(ValueError, match="min_noise_multiplier must be a positive finite number, got 0"):
        SecAggMod(min_noise_multiplier=0)


# ============================================================================ malicious server
def test_a_server_sending_different_models_to_different_nodes_fails_the_round() -> None:
    """Model inconsistency (Pasquini et al. CCS 2022): the victim refuses, its update never leaves it."""

    def tamper(node, request):
        if grid.partition_of(node) == 2 and request.content[RECORD]["stage"] == "MASKED_INPUT":
            content = RecordDict({name: request.content[name] for name in request.content.keys()})
            content["arrays"] = ArrayRecord({k: Array(v.numpy() + 1.0) for k, v in request.content["arrays"].items()})
            return Message(content=content, metadata=request.metadata)
        return request

    grid = InProcessGrid(make_app([secagg_mod]), 4, {}, tamper=tamper)
    workflow = SecAggWorkflow(clip=8.0)
    run_rounds(grid, workflow, rounds=1)
    victim = grid.node_ids[2]
    report = workflow.reports[0]
    assert "ProtocolViolationError" in report.refused[victim] and "differ from those the round was set up with" in report.refused[victim]
    assert victim not in report.survivors and report.dropped[victim] == "MASKED_INPUT"


def test_the_server_refuses_to_set_up_a_round_with_different_train_records() -> None:
    grid = InProcessGrid(make_app([secagg_mod]), 3, {})
    train = [
        Message(RecordDict({"arrays": initial(), "config": ConfigRecord({"server-round": 1, "lr": float(i)})}), n, "train", group_id="1")
        for i, n in enumerate(grid.node_ids)
    ]
    with pytest.raises(ValueError, match="needs the same train records .* sent 3 different ones"):
        SecAggWorkflow().aggregate(grid, train, timeout=5)
    assert grid.calls == 0  # refused before anything was sent


def test_a_replayed_setup_is_refused_and_keeps_the_state() -> None:
    grid = InProcessGrid(make_app([secagg_mod]), 3, {})
    node = grid.node_ids[0]
    ctx = grid.contexts[node]
    grid.client_app(_setup_message(grid, node), ctx)
    kept = ctx.state[STATE]["sealed"]
    with pytest.raises(UnexpectedMessageError, match=r"already joined round 1 \(replay\)"):
        grid.client_app(_setup_message(grid, node), ctx)
    assert ctx.state[STATE]["sealed"] == kept
    assert kept_stage(ctx) is Stage.SHARE_KEYS
    # after a whole round, its setup cannot be replayed either; the next round is fine
    fresh = InProcessGrid(make_app([secagg_mod]), 3, {})
    run_rounds(fresh, SecAggWorkflow(), rounds=1)
    node = fresh.node_ids[0]
    with pytest.raises(UnexpectedMessageError, match="already joined round 1"):
        fresh.client_app(_setup_message(fresh, node), fresh.contexts[node])
    fresh.client_app(_setup_message(fresh, node, round=2), fresh.contexts[node])


def test_no_stage_waits_without_a_timeout() -> None:
    waits: list[float | None] = []

    class Recording(InProcessGrid):
        def send_and_receive(self, messages, *, timeout=None):
            waits.append(timeout)
            return super().send_and_receive(messages, timeout=timeout)

    grid = Recording(make_app([secagg_mod]), 3, {})
    train = [
        Message(RecordDict({"arrays": initial(), "config": ConfigRecord({"server-round": 1})}), n, "train", group_id="1")
        for n in grid.node_ids
    ]
    (reply,) = SecAggWorkflow(stage_timeout=7.0).aggregate(grid, train, timeout=None)
    assert waits == [7.0, 7.0, 7.0, 7.0] and "arrays" in reply.content.keys()
    waits.clear()
    SecAggWorkflow(stage_timeout=7.0, train_timeout=99.0).aggregate(Recording(make_app([secagg_mod]), 3, {}), train, timeout=5)
    assert waits == [7.0, 7.0, 99.0, 7.0]


def test_an_untyped_parser_failure_on_one_reply_drops_only_that_node(monkeypatch) -> None:
    # every decoder raises only FedcryptError on bad bytes (fuzzed); this fault cannot be
    # produced with real bytes, so the decoder is made to fail once, untyped
    import fedcrypt.integrations.flower.secagg as adapter

    real = adapter.MaskedInput
    calls = {"n": 0}

    class FailingOnce(real):  # type: ignore[misc, valid-type]
        __slots__ = ()

        @classmethod
        def from_bytes(cls, data, **kwargs):
            calls["n"] += 1
            if calls["n"] == 1:
                raise IndexError("parser bug")
            return real.from_bytes(data, **kwargs)

    monkeypatch.setattr(adapter, "MaskedInput", FailingOnce)
    grid = InProcessGrid(make_app([secagg_mod]), 4, {})
    workflow = SecAggWorkflow(clip=8.0)
    run_rounds(grid, workflow, rounds=1)
    (report,) = workflow.reports
    assert report.aborted is None and len(report.survivors) == 3
    (refusal,) = report.refused.values()
    assert "unparseable (IndexError)" in refusal and "parser bug" not in refusal


def test_max_colluders_raises_the_threshold_reaches_the_nodes_and_aborts_when_unsatisfiable() -> None:
    config = SecAggConfig(num_clients=5, threshold=4, max_colluders=1)
    assert load_config(dump_config(config)) == config and load_config(dump_config(config)).max_colluders == 1
    workflow = SecAggWorkflow(clip=8.0, max_colluders=1)
    assert workflow.config_for(4).threshold == 3 and workflow.config_for(4).max_colluders == 1
    grid = InProcessGrid(make_app([secagg_mod]), 4, {})
    result = run_rounds(grid, workflow, rounds=1)
    expected, _ = plaintext_fedavg([list(range(4))])
    tol = fedavg_tolerance(workflow, 4, [weight_of(p) for p in range(4)], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)
    # two colluders among three nodes: no threshold can be safe, so the round is refused
    strict = SecAggWorkflow(max_colluders=2)
    run_rounds(InProcessGrid(make_app([secagg_mod]), 3, {}), strict, rounds=1)
    assert "no safe configuration for 3 nodes" in strict.reports[0].aborted


def test_replies_are_pulled_one_by_one_and_folded_as_they_arrive() -> None:
    """Streaming: no stage waits for all of its replies (send_and_receive is never used for
    train messages), masked inputs are folded into the protocol as pulled, and a silent node
    is dropped at the timeout."""

    def fault(node, request):
        record = request.content[RECORD] if RECORD in request.content.keys() else None
        return "drop" if grid.partition_of(node) == 3 and record is not None and record["stage"] == "UNMASK" else None

    grid = PullGrid(make_app([secagg_mod]), 5, {}, fault=fault)
    workflow = SecAggWorkflow(clip=8.0, stage_timeout=0.5, poll_interval=0.01)
    result = run_rounds(grid, workflow, rounds=1)
    (report,) = workflow.reports
    assert report.aborted is None and report.dropped == {grid.node_ids[3]: "UNMASK"} and len(report.survivors) == 5
    masked = [r for r in grid.pulled if r.content[RECORD]["stage"] == "MASKED_INPUT"]
    assert len(masked) == 5 and all(r.content[RECORD]["payload"] == b"" for r in masked)  # handed over, not kept
    assert grid.pulls > len(grid.pulled)  # pulled one at a time, waiting for the silent node
    expected, _ = plaintext_fedavg([list(range(5))])
    tol = fedavg_tolerance(workflow, 5, [weight_of(p) for p in range(5)], magnitude=3.0)
    for name, value in result.arrays.items():
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=0, atol=tol)
