"""The shared plumbing of the three Flower adapters (``fedcrypt.integrations._flower_common``).

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

from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402

from fedcrypt.errors import MalformedMessageError, RecordMismatchError  # noqa: E402
from fedcrypt.integrations._flower_common import (  # noqa: E402
    ReportDict,
    RoundWorkflow,
    distinct_nodes,
    int_field,
    max_weight_field,
    pack_list,
    staged_request,
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


@pytest.mark.parametrize("value", [0.0, -2.0, float("inf"), float("nan"), 3])
def test_max_weight_must_be_a_positive_finite_float(value: object) -> None:
    with pytest.raises(MalformedMessageError, match="max-weight must be a positive float") as info:
        max_weight_field(ConfigRecord({"max-weight": value}), "w", party=4)
    assert info.value.party == 4
    assert max_weight_field(ConfigRecord({"max-weight": 8.0}), "w") == 8.0


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


def test_round_ids_come_from_server_round_else_a_counter() -> None:
    class Workflow(RoundWorkflow):
        def __init__(self) -> None:
            self.stage_timeout, self.train_timeout, self.reports, self._round_counter = 5.0, None, [], 0

    workflow = Workflow()
    assert workflow._round_id([_train(1, {"server-round": 17})]) == 17
    assert workflow._round_id([_train(1, {"server-round": True})]) == 2
    round_id, report = workflow._open_round([_train(1)], [1, 2], _Report)
    assert (round_id, report.nodes, workflow.reports) == (3, [1, 2], [report])
    assert workflow._train_timeout(None) == 5.0 and workflow._train_timeout(9.0) == 9.0
    workflow.train_timeout = 2.0
    assert workflow._train_timeout(9.0) == 2.0


def test_distinct_nodes_sorted_and_repeats_refused() -> None:
    nodes, by_node = distinct_nodes([_train(9), _train(4)])
    assert nodes == [4, 9] and by_node[9].metadata.dst_node_id == 9
    with pytest.raises(ValueError, match="train messages must go to distinct nodes"):
        distinct_nodes([_train(4), _train(4)])


class _Stage(enum.Enum):
    ONE = "ONE"


def test_staged_request_passes_plaintext_only_when_allowed() -> None:
    plain = _train(3)
    kwargs = {"party": 3, "sends": "this node only sends encrypted updates", "where": "server message"}
    assert staged_request(plain, "fc", _Stage, allow_plaintext=True, **kwargs) is None
    with pytest.raises(RecordMismatchError, match="without the 'fc' record: this node only sends encrypted") as info:
        staged_request(plain, "fc", _Stage, allow_plaintext=False, **kwargs)
    assert info.value.missing == ("fc",)
    ok = Message(RecordDict({"fc": ConfigRecord({"stage": "ONE"})}), 3, "train", group_id="1")
    record, stage = staged_request(ok, "fc", _Stage, allow_plaintext=False, **kwargs)
    assert stage is _Stage.ONE and record["stage"] == "ONE"
    bad = Message(RecordDict({"fc": ConfigRecord({"stage": "TWO"})}), 3, "train", group_id="1")
    with pytest.raises(MalformedMessageError, match="server message: unknown stage 'TWO'"):
        staged_request(bad, "fc", _Stage, allow_plaintext=False, **kwargs)
