"""The shared plumbing of the three Flower adapters (``fedcrypt.integrations.flower._common``).

The adapters' own tests (``test_flower_adapter.py``, ``tests/integrations/test_flower_he.py``,
``tests/he_threshold/test_flower_threshold.py``) run every piece through real rounds; these
tests pin the pieces' contracts directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402

from fedcrypt.errors import MalformedMessageError, RecordMismatchError, RoundAbortedError  # noqa: E402
from fedcrypt.integrations.flower._common import (  # noqa: E402
    Abort,
    RoundReport,
    RoundWorkflow,
    StagedMod,
    distinct_nodes,
)

from ._inprocess import RUN_ID, SERVER_NODE, TaskIdentity  # noqa: E402


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    """flwr 1.42 builds a Message only inside a task (the in-process grid sets the same)."""
    if TaskIdentity is not None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SERVER_NODE, 1


@dataclass
class _Report(RoundReport):
    extra: list[int] = field(default_factory=list)


def test_report_dicts_keep_field_order_and_copy_containers() -> None:
    report = _Report(3, [5, 9], dropped={9: "ENCRYPT"}, extra=[1])
    out = report.to_dict()
    assert list(out) == [
        "round", "nodes", "survivors", "dropped", "refused", "stage_seconds", "aborted", "bytes_down", "bytes_up", "extra",
    ]
    assert out["dropped"] == {"9": "ENCRYPT"} and out["aborted"] is None and out["extra"] == [1]
    out["nodes"].append(1)
    out["extra"].append(2)
    assert report.nodes == [5, 9] and report.extra == [1]


def _train(node: int, config: dict | None = None) -> Message:
    return Message(RecordDict({"config": ConfigRecord(config or {})}), node, "train", group_id="1")


def test_round_ids_come_from_server_round_else_a_counter_and_every_round_is_reported() -> None:
    seen: list[tuple[int, float]] = []

    class Workflow(RoundWorkflow):
        RECORD, REPORT, LABEL = "fc", _Report, "test"
        stage_timeout, train_timeout, min_clients = 5.0, None, 2

        def _round(self, grid, nodes, by_node, round_id, report, train_timeout):
            seen.append((round_id, train_timeout))
            raise Abort(RoundAbortedError("stop"))

    workflow = Workflow(5.0, None, 3.0)
    assert workflow.aggregate(None, [_train(1, {"server-round": 17}), _train(2)], timeout=9.0) == []
    assert workflow.aggregate(None, [_train(1, {"server-round": True}), _train(2)]) == []
    workflow.train_timeout = 2.0
    assert workflow.aggregate(None, [_train(1), _train(2)], timeout=9.0) == []
    assert seen == [(17, 9.0), (2, 5.0), (3, 2.0)]
    assert [r.round for r in workflow.reports] == [17, 2, 3] and workflow.reports[0].aborted == "RoundAbortedError: stop"
    assert workflow.aggregate(None, [_train(1)]) == [] and len(seen) == 3  # one node: refused before any stage
    assert workflow.reports[-1].aborted == "RoundAbortedError: 1 nodes sampled, fewer than min_clients=2"


def test_distinct_nodes_sorted_and_repeats_refused() -> None:
    nodes, by_node = distinct_nodes([_train(9), _train(4)])
    assert nodes == [4, 9] and by_node[9].metadata.dst_node_id == 9
    with pytest.raises(ValueError, match="train messages must go to distinct nodes"):
        distinct_nodes([_train(4), _train(4)])


class _Stage(enum.Enum):
    ONE = "ONE"


class _Mod(StagedMod):
    RECORD, STAGES, SENDS, TRAIN_STAGE, LABEL = "fc", _Stage, "this node only sends encrypted updates", None, "test"

    def _handle(self, msg, ctxt, record, stage, call_next):
        return {"payload": record["payload"] + b"!"}


def test_a_staged_mod_checks_the_request_and_passes_plaintext_only_when_allowed() -> None:
    ctxt = Context(RUN_ID, 3, {}, RecordDict(), {})
    app = lambda msg, context: Message(RecordDict({"app": ConfigRecord({"ran": 1})}), reply_to=msg)  # noqa: E731
    plain = _train(3)
    relaxed = _Mod()
    relaxed.allow_plaintext = True
    assert relaxed(plain, ctxt, app).content["app"]["ran"] == 1
    with pytest.raises(RecordMismatchError, match="without the 'fc' record: this node only sends encrypted") as info:
        _Mod()(plain, ctxt, app)
    assert info.value.missing == ("fc",)
    ok = Message(RecordDict({"fc": ConfigRecord({"stage": "ONE", "payload": b"x"})}), 3, "train", group_id="1")
    assert dict(_Mod()(ok, ctxt, app).content["fc"]) == {"stage": "ONE", "payload": b"x!"}
    bad = Message(RecordDict({"fc": ConfigRecord({"stage": "TWO", "payload": b"x"})}), 3, "train", group_id="1")
    with pytest.raises(MalformedMessageError, match="server message to node 3: unknown stage 'TWO'"):
        _Mod()(bad, ctxt, app)
    extra = Message(RecordDict({"fc": ConfigRecord({"stage": "ONE", "payload": b"x", "more": 1})}), 3, "train", group_id="1")
    with pytest.raises(RecordMismatchError, match=r"missing \[\], extra \['more'\]"):
        _Mod()(extra, ctxt, app)
