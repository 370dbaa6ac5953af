"""Real Flower processes: the example app under the Ray simulation runtime and in a loopback deployment.

Each test starts its own SuperLink (and SuperNodes) on 127.0.0.1 with free ports and a
scratch FLWR_HOME, submits ``examples/flower_app`` with ``flwr run``, and stops every
process it started (``LoopbackFederation`` is a context manager). Marked ``slow``: about
a minute each on two cores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ._loopback import LoopbackFederation
from fedcrypt.integrations.flower import SecAggWorkflow

pytestmark = [pytest.mark.slow, pytest.mark.flower]

APP = Path(__file__).resolve().parents[2] / "examples" / "flower_app"
sys.path.insert(0, str(APP))

from fedcrypt_flower_app import task  # noqa: E402

CLIP, MAX_WEIGHT, THRESHOLD, SIZE = 4.0, 1000.0, 0.6, 200


def plaintext_fedavg(survivors_by_round: list[list[int]]) -> dict[str, np.ndarray]:
    """FedAvg of the synthetic task in float64, from the partitions that survived each round."""
    arrays = {n: a.numpy().astype(np.float64) for n, a in task.synthetic_initial(SIZE).items()}
    for server_round, parts in enumerate(survivors_by_round, start=1):
        weights = np.array([task.num_examples(p) for p in parts], dtype=np.float64)
        ups = [task.synthetic_update({k: v.astype(np.float32) for k, v in arrays.items()}, p, server_round) for p in parts]
        arrays = {k: sum(w * u[k].astype(np.float64) for w, u in zip(weights, ups)) / weights.sum() for k in arrays}
    return arrays


def tolerance(survivors: list[int]) -> float:
    """Worst case of sum(w x)/sum(w) from the codec's documented error (|x| <= 1 here), plus float32."""
    config = SecAggWorkflow(threshold=THRESHOLD, clip=CLIP, max_weight=MAX_WEIGHT).config_for(len(survivors))
    e = config.codec.error_bound(len(survivors))
    w = sum(task.num_examples(p) for p in survivors) / MAX_WEIGHT
    return e * (w + w) / (w * (w - e)) + 2.0**-22


def run_config(result: Path, **extra) -> dict:
    config = {
        "aggregation": "secagg",
        "task": "synthetic",
        "model-size": SIZE,
        "secagg-clip": CLIP,
        "secagg-max-weight": MAX_WEIGHT,
        "secagg-threshold": THRESHOLD,
        "result-path": str(result),
    }
    config.update(extra)
    return config


def check_against_plaintext(summary: dict, survivors_by_round: list[list[int]]) -> None:
    expected = plaintext_fedavg(survivors_by_round)
    worst = max(tolerance(parts) for parts in survivors_by_round)
    for name, values in summary["arrays"].items():
        np.testing.assert_allclose(np.asarray(values), expected[name], rtol=0, atol=worst)
    # and the dropped client's update really is out: the average with it differs by far more
    with_everyone = plaintext_fedavg([list(range(max(map(max, survivors_by_round)) + 2))] * len(survivors_by_round))
    assert any(np.abs(np.asarray(summary["arrays"][n]) - with_everyone[n]).max() > 100 * worst for n in expected)


@pytest.mark.timeout(300)
def test_ray_simulation_two_rounds_with_a_client_dropping_mid_round(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    with LoopbackFederation(4, simulation=True, workdir=tmp_path / "fed") as fed:
        config = run_config(
            result,
            **{"num-server-rounds": 2, "min-nodes": 4, "stage-timeout": 60.0,
               "drop-partition": 3, "drop-round": 1, "drop-stage": "MASKED_INPUT"},
        )
        outcome = fed.run(APP, config, timeout=240)
        assert outcome.completed, fed.run_log(outcome.run_id)[-4000:]
    summary = json.loads(result.read_text())
    first, second = summary["rounds"]
    assert len(first["survivors"]) == 3 and list(first["dropped"].values()) == ["MASKED_INPUT"]
    (victim,) = first["dropped"]
    assert "dropout demo" in first["refused"][victim]  # Flower's error reply, refused with its reason
    assert len(second["survivors"]) == 4 and not second["dropped"]
    check_against_plaintext(summary, [[0, 1, 2], [0, 1, 2, 3]])
    # the loss each survivor reports for the model it received, averaged securely like the model
    globals_ = [task.synthetic_initial(SIZE), plaintext_fedavg([[0, 1, 2]])]
    for server_round, (parts, model) in enumerate(zip([[0, 1, 2], [0, 1, 2, 3]], globals_), start=1):
        arrays = {k: (v.numpy() if hasattr(v, "numpy") else v).astype(np.float32) for k, v in model.items()}
        weights = [task.num_examples(p) for p in parts]
        expected = sum(w * task.synthetic_loss(arrays, p) for w, p in zip(weights, parts)) / sum(weights)
        reported = summary["train_metrics"][str(server_round)]["train-loss"]
        assert abs(reported - expected) <= 2 * tolerance(parts), (server_round, reported, expected)
    assert summary["train_metrics"]["2"]["train-loss"] < summary["train_metrics"]["1"]["train-loss"]


@pytest.mark.timeout(300)
def test_loopback_deployment_survives_a_supernode_killed_after_key_sharing(tmp_path: Path) -> None:
    result, marker = tmp_path / "result.json", tmp_path / "victim-reached-masked-input"
    with LoopbackFederation(3, workdir=tmp_path / "fed") as fed:
        config = run_config(
            result,
            **{"num-server-rounds": 1, "min-nodes": 3, "stage-timeout": 30.0,
               "drop-partition": 2, "drop-round": 1, "drop-stage": "MASKED_INPUT", "drop-marker": str(marker)},
        )
        run_id = fed.submit(APP, config)
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert time.monotonic() < deadline, f"the victim never reached the masked-input stage:\n{fed.run_log(run_id)[-4000:]}"
            assert fed.status(run_id) != "finished:failed", fed.run_log(run_id)[-4000:]
            time.sleep(0.5)
        # partition 2 has shared its keys and is at the masked-input stage: kill its SuperNode
        fed.kill_supernode(2)
        outcome = fed.wait(run_id, timeout=180)
        server_log = fed.run_log(run_id)
        assert outcome.completed, server_log[-4000:]
        assert fed.supernodes[0].poll() is None and fed.supernodes[1].poll() is None
    # issue #18: the round's line reaches the ServerApp log that flwr run / flwr log shows
    victim_line = [line for line in server_log.splitlines() if "fedcrypt secagg round 1: 2/3 survivors, dropped [" in line]
    assert len(victim_line) == 1 and "@MASKED_INPUT], 0 refused, bytes up " in victim_line[0], server_log[-4000:]
    summary = json.loads(result.read_text())
    (only,) = summary["rounds"]
    assert len(only["survivors"]) == 2 and list(only["dropped"].values()) == ["MASKED_INPUT"]
    assert only["aborted"] is None
    check_against_plaintext(summary, [[0, 1]])
