"""Threshold CKKS in a real Flower deployment on 127.0.0.1 (flwr 1.30, CPython 3.10).

A SuperLink and three SuperNodes as real processes (``LoopbackFederation``, with the
flwr 1.30 command lines below), ``flwr run`` of ``_loopback_app`` (Flower's FedAvg on a
``ThresholdGrid``; the ClientApp with ``threshold_mod``): the SuperNodes run the ClientApp
in their own subprocesses and the mod keeps nothing in memory, so the key holders live only
in ``Context.state``, which the SuperNode keeps between messages. Round 1
loses key holder 2 before its partial decryption and recovers it t-of-n (t = 2); round 2
runs with everyone. Marked slow (about a minute on two cores).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("FEDCRYPT_REQUIRE_OPENFHE") != "1":  # CI's 3.10 run: never skip (see conftest.py)
    pytest.importorskip("openfhe", reason="threshold CKKS needs openfhe (CPython 3.10: scripts/setup_py310.sh)")
    pytest.importorskip("flwr", reason="the Flower adapter needs flwr (CPython 3.10: flwr==1.30.0)")

import flwr  # noqa: E402

from fedcrypt.he.threshold import ThresholdParams  # noqa: E402
from flower._loopback import _CONNECTION, LoopbackFederation, free_port  # noqa: E402  (tests/flower, on the test path)
from fedcrypt.integrations.flower.threshold import fedavg_error_bound  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.flower, pytest.mark.usefixtures("openfhe")]

APP = Path(__file__).parent / "_loopback_app"
SIZE = 16


class Flower130Federation(LoopbackFederation):
    """``LoopbackFederation`` with flwr 1.30's command lines (explicit API addresses on
    127.0.0.1 instead of 1.42's ``--host``/``--port``; no runtime-dependency flag, which
    1.30 leaves off by default)."""

    def start(self) -> "Flower130Federation":
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.superlink_port = free_port()  # the Control API, which the flwr CLI talks to
        self.fleet_port = free_port()
        args = [
            self._exe("flower-superlink"), "--insecure",
            "--control-api-address", f"127.0.0.1:{self.superlink_port}",
            "--fleet-api-address", f"127.0.0.1:{self.fleet_port}",
            "--serverappio-api-address", f"127.0.0.1:{free_port()}",
            "--health-server-address", f"127.0.0.1:{free_port()}",
        ]
        self._superlink = self._spawn("superlink", args)
        self._wait_port(self.superlink_port, self._superlink, "superlink")
        self._wait_port(self.fleet_port, self._superlink, "superlink")
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{_CONNECTION}"\n\n[superlink.{_CONNECTION}]\n'
            f'address = "127.0.0.1:{self.superlink_port}"\ninsecure = true\n',
            encoding="utf-8",
        )
        for partition in range(self.num_supernodes):
            self.start_supernode(partition)
        return self

    def start_supernode(self, partition: int) -> subprocess.Popen[bytes]:
        name = f"supernode-{partition}"
        proc = self._spawn(name, [
            self._exe("flower-supernode"), "--insecure",
            "--superlink", f"127.0.0.1:{self.fleet_port}",
            "--clientappio-api-address", f"127.0.0.1:{free_port()}",
            "--node-config", f"partition-id={partition} num-partitions={self.num_supernodes}",
        ])
        self.supernodes[partition] = proc
        return proc


@pytest.mark.timeout(420)
@pytest.mark.skipif(not flwr.__version__.startswith("1.30"), reason="these command lines are flwr 1.30's")
def test_loopback_deployment_recovers_a_dropped_key_holder(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    params = ThresholdParams.preset("wide", num_parties=3, num_clients=8, clip=1.0, max_weight=100, recovery_threshold=2)
    config = {
        "num-server-rounds": 2, "min-nodes": 3, "stage-timeout": 60.0, "threshold-params": params.to_bytes().hex(),
        "drop-partition": 2, "drop-round": 1, "result-path": str(result),
    }
    with Flower130Federation(3, workdir=tmp_path / "fed") as fed:
        outcome = fed.run(APP, config, timeout=360)
        assert outcome.completed, fed.run_log(outcome.run_id)[-4000:] + fed.log_tail("superlink")
    summary = json.loads(result.read_text())
    first, second = summary["rounds"]
    assert summary["flooding"] is True
    assert first["aborted"] is None and second["aborted"] is None
    assert len(first["committee"]) == 3 and first["committee"] == second["committee"]
    assert len(first["survivors"]) == 3  # the dropped holder's upload is in; its share was rebuilt
    (dropped,) = first["stood_in"]
    assert first["dropped"] == {dropped: "DECRYPT"} and "dropout demo" in first["refused"][dropped]
    assert int(first["stood_in"][dropped]) != int(dropped)
    assert second["stood_in"] == {} and second["dropped"] == {} and "KEYGEN" not in second["stage_seconds"]
    # two rounds of FedAvg with weights 10, 20, 30: w moves by sum(w_i 0.01 (i+1)) / sum(w_i) each round
    step = (10 * 0.01 + 20 * 0.02 + 30 * 0.03) / 60
    bound = fedavg_error_bound(params, [10.0, 20.0, 30.0], 100.0)
    got = np.asarray(summary["arrays"]["w"])
    assert got.shape == (SIZE,)
    np.testing.assert_allclose(got, 2 * step, rtol=0, atol=2 * bound + 4e-8)
