"""Issue #16: the server's memory does not grow with the nodes. Each request is built (its payload
serialised) only as it is pushed, one message per push, so a stage's n large requests (a DECRYPT
aggregate) are never all in memory at once. Real ClientApps, mods and Flower messages, in process."""

from __future__ import annotations

from typing import Iterable

import pytest

from flwr.app import Message
from flwr.serverapp.strategy import FedAvg

from ._inprocess import PullGrid
from .test_flower_adapter import initial, make_app

pytest.importorskip("tenseal")

from fedcrypt.integrations.flower.ckks import CKKS_RECORD, CkksGrid, CkksWorkflow, ckks_mod, default_config  # noqa: E402


class _CountingGrid(PullGrid):
    """Records, at every push, its stage, how many messages it carries and the round's bytes sent so far."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.workflow: CkksWorkflow | None = None
        self.pushes: list[tuple[str, int, int, int]] = []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        assert self.workflow is not None
        for message in messages:
            record = message.content[CKKS_RECORD]
            self.pushes.append((record["stage"], len(messages), self.workflow.reports[-1].bytes_down, len(record["payload"])))
        return super().push_messages(messages)


def test_requests_are_made_and_pushed_one_at_a_time() -> None:
    grid = _CountingGrid(make_app([ckks_mod]), 4, {})
    workflow = grid.workflow = CkksWorkflow(default_config(decryptors=4), stage_timeout=5.0, poll_interval=0.01)
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    strategy.start(grid=CkksGrid(grid, workflow), initial_arrays=initial(), num_rounds=1, timeout=30)
    report = workflow.reports[0]
    assert report.aborted is None and len(report.survivors) == 4
    assert all(count == 1 for _, count, _, _ in grid.pushes)  # one message per push, every stage
    decrypt = [(sent, size) for stage, _, sent, size in grid.pushes if stage == "DECRYPT"]
    assert len(decrypt) == 4 and all(size > 10_000 for _, size in decrypt)  # each carries the aggregate
    # when the k-th DECRYPT request is pushed, only k of them have been made (bytes_down counts each as it is made)
    before = decrypt[0][0] - decrypt[0][1]
    assert [sent - before for sent, _ in decrypt] == [sum(size for _, size in decrypt[: k + 1]) for k in range(4)]
    assert report.bytes_down == sum(size for *_, size in grid.pushes)
