"""Real Flower processes with ``aggregation = "ckks"``: the example app under the Ray simulation
runtime and in a loopback deployment.

As in ``tests/flower/test_flower_processes.py``: each test starts its own SuperLink (and
SuperNodes) on 127.0.0.1 with free ports and a scratch FLWR_HOME, submits
``examples/flower_app`` with ``flwr run``, and stops every process it started
(``LoopbackFederation`` is a context manager). The deployment test runs the app twice on
the same federation: with the in-band dealer (one node dropping before its upload) and
with an out-of-band key file on every node. Marked ``slow``: about 35 s and 80 s on two
cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal")

from fedcrypt.he import CkksParams, KeyOwner  # noqa: E402
from flower._loopback import LoopbackFederation  # noqa: E402  (tests/flower, on the test path)
from fedcrypt.integrations.flower.ckks import fedavg_error_bound  # noqa: E402
from flower.test_flower_processes import APP, MAX_WEIGHT, plaintext_fedavg, run_config, task  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.flower]

CKKS_CLIP = 4.0


def check_against_plaintext(summary: dict, survivors_by_round: list[list[int]], dropped_check: bool = True) -> None:
    """The final model equals plaintext FedAvg of the uploaders within the documented CKKS bound."""
    params = CkksParams.preset("compact", num_clients=100, clip=CKKS_CLIP, max_weight=1.0)  # the app's ckks_config
    worst = max(
        fedavg_error_bound(params, [task.num_examples(p) for p in parts], MAX_WEIGHT) for parts in survivors_by_round
    )
    # released decryptions are noise-flooded (Li-Micciancio): with this workflow's defaults
    # (capacity 100, clip 4, max weight 1000) the documented FedAvg bound is about 4e-3,
    # as in the in-process test (tests/integrations/test_flower_he.py::assert_fedavg)
    assert worst < 1e-2
    expected = plaintext_fedavg(survivors_by_round)
    for name, values in summary["arrays"].items():
        np.testing.assert_allclose(np.asarray(values), expected[name], rtol=0, atol=worst)
    if not dropped_check:
        return
    # and the dropped client's update really is out: the average with it differs by far more
    # (2 * worst already separates the two; 10x leaves a margin, with the flooded bound)
    everyone = list(range(max(map(max, survivors_by_round)) + 2))
    with_everyone = plaintext_fedavg([everyone] * len(survivors_by_round))
    assert any(np.abs(np.asarray(summary["arrays"][n]) - with_everyone[n]).max() > 10 * worst for n in expected)


def ckks_config(result: Path, **extra) -> dict:
    return run_config(result, aggregation="ckks", **{"ckks-clip": CKKS_CLIP, "ckks-decryptors": 2, **extra})


@pytest.mark.timeout(300)
def test_ray_simulation_ckks_two_rounds_with_a_client_dropping(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    with LoopbackFederation(4, simulation=True, workdir=tmp_path / "fed") as fed:
        config = ckks_config(
            result,
            **{"num-server-rounds": 2, "min-nodes": 4, "stage-timeout": 60.0,
               "drop-partition": 3, "drop-round": 1, "drop-stage": "ENCRYPT"},
        )
        outcome = fed.run(APP, config, timeout=240)
        assert outcome.completed, fed.run_log(outcome.run_id)[-4000:]
    summary = json.loads(result.read_text())
    first, second = summary["rounds"]
    assert len(first["survivors"]) == 3 and list(first["dropped"].values()) == ["ENCRYPT"]
    (victim,) = first["dropped"]
    assert "dropout demo" in first["refused"][victim]  # Flower's error reply, refused with its reason
    assert len(first["dealt"]) == 4 and second["dealt"] == []  # the key was dealt once, in round 1
    assert len(second["survivors"]) == 4 and not second["dropped"]
    assert len(first["decryptors"]) == len(second["decryptors"]) == 2
    assert first["fingerprint"] == second["fingerprint"] and first["aborted"] is None
    check_against_plaintext(summary, [[0, 1, 2], [0, 1, 2, 3]])


@pytest.mark.timeout(420)
def test_loopback_deployment_ckks_equals_plaintext_fedavg(tmp_path: Path) -> None:
    result, keyed_result = tmp_path / "result.json", tmp_path / "keyed.json"
    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=10, clip=CKKS_CLIP, max_weight=1.0))
    key_file = tmp_path / "group.ckks"
    key_file.write_bytes(owner.to_bytes(include_secret_key=True))
    with LoopbackFederation(3, workdir=tmp_path / "fed") as fed:
        config = ckks_config(
            result,
            **{"num-server-rounds": 2, "min-nodes": 3, "stage-timeout": 30.0,
               "drop-partition": 2, "drop-round": 1, "drop-stage": "ENCRYPT"},
        )
        outcome = fed.run(APP, config, timeout=240)
        assert outcome.completed, fed.run_log(outcome.run_id)[-4000:]
        # the secure option: every node loads the same key file, made out of band
        keyed = ckks_config(
            keyed_result,
            **{"num-server-rounds": 1, "min-nodes": 3, "stage-timeout": 30.0,
               "ckks-key-setup": "file", "ckks-key-path": str(key_file)},
        )
        outcome = fed.run(APP, keyed, timeout=180)
        assert outcome.completed, fed.run_log(outcome.run_id)[-4000:]
        assert all(node.poll() is None for node in fed.supernodes.values())
    (only,) = json.loads(keyed_result.read_text())["rounds"]
    assert only["fingerprint"] == owner.fingerprint.hex() and only["dealt"] == [] and len(only["survivors"]) == 3
    assert "DEAL" not in only["stage_seconds"]
    check_against_plaintext(json.loads(keyed_result.read_text()), [[0, 1, 2]], dropped_check=False)
    summary = json.loads(result.read_text())
    first, second = summary["rounds"]
    assert len(first["survivors"]) == 2 and list(first["dropped"].values()) == ["ENCRYPT"]
    assert len(second["survivors"]) == 3 and first["aborted"] is None and second["aborted"] is None
    assert len(first["dealt"]) == 3 and second["dealt"] == []
    check_against_plaintext(summary, [[0, 1], [0, 1, 2]])
