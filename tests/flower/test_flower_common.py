"""The shared plumbing of the three Flower adapters (``fedcrypt.integrations.flower._common``).

The adapters' own tests (``test_flower_adapter.py``, ``tests/integrations/test_flower_he.py``,
``tests/he_threshold/test_flower_threshold.py``) run every piece through real rounds; these
tests pin the pieces' contracts directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402

from fedcrypt.errors import MalformedMessageError, RecordMismatchError, RoundAbortedError  # noqa: E402
from fedcrypt.integrations.flower._common import (  # noqa: E402
    Abort,
    ReportDict,
    RoundWorkflow,
    StagedMod,
    distinct_nodes,
    int_field,
    pack_list,
    unpack_list,
)

from ._inprocess import RUN_ID, SERVER_NODE, TaskIdentity  # noqa: E402


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    """flwr 1.42 builds a Message only inside a task (the in-process grid sets the same)."""
    if TaskIdentity is not None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SERVER_NODE, 1


_items = st.lists(st.binary(max_size=40), max_size=12)


@settings(max_examples=60, deadline=None)
@given(_items)
def test_lists_round_trip(items: list[bytes]) -> None:
    assert unpack_list(pack_list(items), len(items), "w") == items


@settings(max_examples=60, deadline=None)
@given(_items.filter(bool), st.data())
def test_truncated_or_padded_lists_are_refused(items: list[bytes], data: st.DataObject) -> None:
    packed = pack_list(items)
    cut = data.draw(st.integers(0, len(packed) - 1))
    with pytest.raises(MalformedMessageError):
        unpack_list(packed[:cut], len(items), "w")
    with pytest.raises(MalformedMessageError, match="trailing bytes"):
        unpack_list(packed + b"\x00", len(items), "w")


def test_list_counts_beyond_the_limit_are_refused_before_reading() -> None:
    with pytest.raises(MalformedMessageError, match="a list of 5 items"):
        unpack_list(pack_list([b"a"] * 5), 5, "w", limit=4)
    assert unpack_list(pack_list([b"a"] * 5), 5, "w") == [b"a"] * 5


@pytest.mark.parametrize("value", [-1, True, 1.0, "3"])
def test_int_fields_must_be_non_negative_integers(value: object) -> None:
    with pytest.raises(MalformedMessageError, match="'n' must be a non-negative integer"):
        int_field(ConfigRecord({"n": value}), "n", "w")
    assert int_field(ConfigRecord({"n": 7}), "n", "w") == 7


@dataclass
class _Report(ReportDict):
    round: int
    nodes: list[int]
    dropped: dict[int, str] = field(default_factory=dict)
    aborted: str | None = None


def test_report_dicts_keep_field_order_and_copy_containers() -> None:
    report = _Report(3, [5, 9], {9: "ENCRYPT"})
    out = report.to_dict()
    assert list(out) == ["round", "nodes", "dropped", "aborted"]
    assert out == {"round": 3, "nodes": [5, 9], "dropped": {"9": "ENCRYPT"}, "aborted": None}
    out["nodes"].append(1)
    assert report.nodes == [5, 9]


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

    workflow = Workflow()
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
