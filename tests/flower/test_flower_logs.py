"""Issue #18: each workflow logs one line per round through ``fedcrypt.integrations.flower``, and the line
reaches Flower's own console handler (what ``flwr run`` streams). Real ClientApps and Flower messages."""

from __future__ import annotations

import logging

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
    return [r for r in records if r.name == LOGGER and " round " in r.getMessage()]


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
