"""Issue #18: each workflow logs one line per round through ``fedcrypt.integrations.flower``, and the line
reaches Flower's own console handler (what ``flwr run`` streams). Real ClientApps and Flower messages."""

from __future__ import annotations

import logging
import re

import numpy as np

import pytest

from fedcrypt.integrations.flower import RECORD, SecAggWorkflow, secagg_mod

from ._inprocess import InProcessGrid
from .test_flower_adapter import make_app, run_rounds

LOGGER = "fedcrypt.integrations.flower"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def flower_console():
    """A handler on Flower's logger at its console's level (INFO), as ``flwr run`` has."""
    handler, flwr = _Records(), logging.getLogger("flwr")
    flwr.addHandler(handler)
    yield handler
    flwr.removeHandler(handler)


def _round_lines(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == LOGGER and re.match(r"fedcrypt \S+ round \d+: ", r.getMessage())]


def test_secagg_logs_one_line_per_round_with_the_dropped_node_and_its_stage(caplog, flower_console) -> None:
    def fault(node, request):
        if grid.partition_of(node) == 2 and request.content[RECORD]["stage"] == "MASKED_INPUT" and request.metadata.group_id == "1":
            return "drop"
        return None

    grid = InProcessGrid(make_app([secagg_mod]), 4, {}, fault=fault)
    workflow = SecAggWorkflow(clip=8.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run_rounds(grid, workflow, rounds=2)
    victim, first, second = grid.node_ids[2], *workflow.reports
    lines = _round_lines(caplog.records)
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO]
    assert lines[0].getMessage() == (
        f"fedcrypt secagg round 1: 3/4 survivors, dropped [{victim}@MASKED_INPUT], 0 refused, "
        f"bytes up {first.bytes_up} down {first.bytes_down}")
    assert lines[1].getMessage().startswith("fedcrypt secagg round 2: 4/4 survivors, dropped [], 0 refused, bytes up ")
    assert 0 < first.bytes_up and 0 < first.bytes_down
    # the same records reach Flower's console handlers, once each
    assert [r.getMessage() for r in _round_lines(flower_console.records)] == [r.getMessage() for r in lines]


def test_a_failed_round_logs_one_warning_with_why(caplog, flower_console) -> None:
    def fault(node, request):
        return "drop" if grid.partition_of(node) in (1, 2) and request.content[RECORD]["stage"] == "MASKED_INPUT" else None

    grid = InProcessGrid(make_app([secagg_mod]), 3, {}, fault=fault)
    workflow = SecAggWorkflow()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run_rounds(grid, workflow, rounds=1)
    [line] = _round_lines(caplog.records)
    assert line.levelno == logging.WARNING and workflow.reports[0].aborted
    assert line.getMessage().startswith("fedcrypt secagg round 1: 0/3 survivors, dropped [")
    assert line.getMessage().endswith(f"; failed: {workflow.reports[0].aborted}")
    assert "@MASKED_INPUT" in line.getMessage() and _round_lines(flower_console.records)[0].getMessage() == line.getMessage()


def test_ckks_logs_its_rounds_through_the_same_logger(caplog) -> None:
    pytest.importorskip("tenseal")
    from fedcrypt.integrations.flower.ckks import CkksGrid, CkksWorkflow, ckks_mod, default_config
    from flwr.serverapp.strategy import FedAvg

    from .test_flower_adapter import initial

    def fault(node, request):
        stage = request.content["fedcrypt.ckks"]["stage"]
        return "drop" if grid.partition_of(node) == 1 and stage == "DECRYPT" else None

    grid = InProcessGrid(make_app([ckks_mod]), 3, {}, fault=fault)
    workflow = CkksWorkflow(default_config(decryptors=2))
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        strategy.start(grid=CkksGrid(grid, workflow), initial_arrays=initial(), num_rounds=1, timeout=30)
    [line] = _round_lines(caplog.records)
    report = workflow.reports[0]
    assert line.levelno == logging.INFO and report.aborted is None and len(report.survivors) == 3
    dropped = ", ".join(f"{n}@{s}" for n, s in report.dropped.items())
    assert line.getMessage() == (f"fedcrypt ckks round 1: 3/3 survivors, dropped [{dropped}], 0 refused, "
                                 f"bytes up {report.bytes_up} down {report.bytes_down}")


def _node_lines(records: list[logging.LogRecord]) -> dict[str, str]:
    lines = [r.getMessage() for r in records if r.name == LOGGER and r.getMessage().startswith("fedcrypt secagg node ")]
    return {line.split()[3]: line for line in lines}


def test_each_node_logs_what_clipping_did_to_its_own_input(caplog) -> None:
    from .test_flower_adapter import initial, update_of, weight_of

    grid = InProcessGrid(make_app([secagg_mod]), 3, {})
    workflow = SecAggWorkflow(clip=0.5, max_weight=40.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run_rounds(grid, workflow, rounds=1)
    lines = _node_lines(caplog.records)
    assert sorted(lines) == sorted(str(n) for n in grid.node_ids)
    zeros, counts = {name: array.numpy() for name, array in initial().items()}, []
    for partition, node in enumerate(grid.node_ids):
        scale = weight_of(partition) / 40.0  # the node masks w/M [x, loss, 1]
        values = np.concatenate([v.ravel() for v in update_of(partition, 1, zeros).values()] + [[partition, 1.0]]) * scale
        count = int(np.count_nonzero(np.abs(values) > 0.5))
        counts.append(count)
        assert lines[str(node)] == (f"fedcrypt secagg node {node} round 1: clipped {count:,} of {values.size:,} coordinates "
                                    "to [-0.5, 0.5] (this node's own input: logged here, never sent)")
    assert counts[0] == 0 and 0 < counts[2] < 39  # w/M = 1/4: nothing clipped; 3/4: some coordinates


def test_with_distributed_dp_each_node_logs_its_l2_clipping(caplog) -> None:
    from flwr.app import Array, ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    from fedcrypt.integrations.flower import SecAggGrid

    from .test_flower_adapter import update_of

    dim, clip = 64, 2.0
    grid = InProcessGrid(make_app([secagg_mod]), 3, {})
    workflow = SecAggWorkflow(dp_noise_multiplier=0.5, dp_clip=clip)
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        strategy.start(grid=SecAggGrid(grid, workflow), initial_arrays=ArrayRecord({"a": Array(np.zeros(dim, np.float32))}),
                       num_rounds=1, timeout=30)
    lines = _node_lines(caplog.records)
    for partition, node in enumerate(grid.node_ids):
        norm = float(np.linalg.norm(update_of(partition, 1, {"a": np.zeros(dim, np.float32)})["a"].astype(np.float64)))
        assert norm > clip  # uniform(-1, 1) in 64 coordinates: about 4.6
        assert lines[str(node)].startswith(f"fedcrypt secagg node {node} round 1: L2 norm {norm:.4g} clipped to 2: ")
