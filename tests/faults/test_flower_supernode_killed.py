"""A real Flower deployment (SuperLink + 4 SuperNodes on loopback) with a SuperNode killed mid-round.

The example app runs two rounds of fedcrypt SecAgg. In round 1 the node of partition 3
reaches a protocol stage, writes a marker file and is SIGKILLed there (its whole process
group: SuperNode and ClientApp). The round must complete with the survivors (the sum of
exactly the clients whose masked input arrived) or abort cleanly; the SuperNode is then
restarted (a fresh process, no protocol state) and round 2 must complete with the live
nodes (the dead node, if Flower still lists it, is dropped at the first stage; the
replacement joins if it registered before the round started).

* killed at SHARE_KEYS: its masked input never arrives; round 1 sums partitions 0-2;
* killed at UNMASK: its masked input arrived; the others' shares unmask it, so round 1
  sums all four partitions (Bonawitz et al.: a client that drops after sending its input
  is still aggregated).

Marked ``slow`` and ``flower``: about a minute each on two cores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ._report import record

pytestmark = [pytest.mark.slow, pytest.mark.flower]

APP = Path(__file__).resolve().parents[2] / "examples" / "flower_app"
CLIP, MAX_WEIGHT, THRESHOLD, SIZE = 4.0, 1000.0, 0.6, 200


def fedavg(task, survivors_by_round: list[list[int]]) -> dict[str, np.ndarray]:
    """Plaintext FedAvg of the example task over the given partitions, round by round (float64)."""
    arrays = {n: a.numpy().astype(np.float64) for n, a in task.synthetic_initial(SIZE).items()}
    for server_round, parts in enumerate(survivors_by_round, start=1):
        weights = np.array([task.num_examples(p) for p in parts], dtype=np.float64)
        ups = [task.synthetic_update({k: v.astype(np.float32) for k, v in arrays.items()}, p, server_round) for p in parts]
        arrays = {k: sum(w * u[k].astype(np.float64) for w, u in zip(weights, ups)) / weights.sum() for k in arrays}
    return arrays


@pytest.mark.timeout(420)
@pytest.mark.parametrize("stage", ["SHARE_KEYS", "UNMASK"])
def test_supernode_killed_mid_round_then_next_round_works(tmp_path: Path, stage: str) -> None:
    pytest.importorskip("flwr")
    from flower._loopback import LoopbackFederation  # tests/flower, on the test path

    sys.path.insert(0, str(APP))
    from fedcrypt_flower_app import task

    result, marker = tmp_path / "result.json", tmp_path / "victim-marker"
    config = {
        "aggregation": "secagg", "task": "synthetic", "model-size": SIZE, "secagg-clip": CLIP,
        "secagg-max-weight": MAX_WEIGHT, "secagg-threshold": THRESHOLD, "result-path": str(result),
        "num-server-rounds": 2, "min-nodes": 4, "stage-timeout": 45.0,
        "drop-partition": 3, "drop-round": 1, "drop-stage": stage, "drop-marker": str(marker),
    }
    started = time.monotonic()
    with LoopbackFederation(4, workdir=tmp_path / "fed") as fed:
        run_id = fed.submit(APP, config)
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert time.monotonic() < deadline, f"the victim never reached {stage}:\n{fed.run_log(run_id)[-4000:]}"
            assert fed.status(run_id) != "finished:failed", fed.run_log(run_id)[-4000:]
            time.sleep(0.5)
        fed.kill_supernode(3)
        fed.start_supernode(3)  # the machine comes back: a fresh SuperNode, no protocol state
        outcome = fed.wait(run_id, timeout=300)
        assert outcome.completed, fed.run_log(run_id)[-4000:]
        assert all(fed.supernodes[p].poll() is None for p in range(4))
    summary = json.loads(result.read_text())
    first, second = summary["rounds"]
    shown = json.dumps([{k: v for k, v in r.items() if k != "arrays"} for r in summary["rounds"]])[:3000]
    assert first["aborted"] is None and second["aborted"] is None, shown
    assert list(first["dropped"].values()) == [stage]
    round1 = [0, 1, 2] if stage == "SHARE_KEYS" else [0, 1, 2, 3]
    assert len(first["survivors"]) == len(round1)
    # Flower may still list the killed node (its heartbeat has not expired yet), and round 2
    # may start before the restarted node registers: round 2 then drops the dead node at
    # once and finishes with the live nodes it sampled (3, or 4 with the replacement)
    assert set(second["dropped"]) <= set(first["dropped"]), shown
    assert len(second["survivors"]) in (3, 4), shown
    round2 = [0, 1, 2, 3][: len(second["survivors"])]
    expected = fedavg(task, [round1, round2])
    for name, values in summary["arrays"].items():
        np.testing.assert_allclose(np.asarray(values), expected[name], rtol=0, atol=1e-3)
    record(f"flower.kill.{stage}", completed=True, round1_survivors=len(first["survivors"]),
           round2_survivors=len(second["survivors"]), seconds=round(time.monotonic() - started, 1))
