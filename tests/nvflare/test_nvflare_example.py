"""examples/nvflare_job runs as its README says: ``job.py`` in FLARE's simulator (3 sites, 1 round)
gives the plaintext FedAvg of the example's task (a small torch classifier, its state_dict
averaged) within the codec's documented bound, and
``job.py --export`` writes a job folder that ships the task file to the server and the sites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedcrypt.secagg.setup import config_for

from test_nvflare_adapter import ROOT, needs_nvflare  # this folder is not a package: 'nvflare' would shadow FLARE

EXAMPLE = ROOT / "examples" / "nvflare_job"
pytestmark = needs_nvflare


def _run(tmp_path: Path, *args: str, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NVFLARE_SIMULATOR_WORKSPACE_ROOT"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep), HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, str(EXAMPLE / "job.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def test_the_example_exports_a_job_folder_with_its_task(tmp_path: Path) -> None:
    _run(tmp_path, "--export", str(tmp_path / "jobs"), "--clients", "3")
    job = tmp_path / "jobs" / "fedcrypt_secagg_example"
    assert json.loads((job / "meta.json").read_text())["min_clients"] == 3
    assert list(job.glob("**/custom/fedcrypt_example_task.py"))
    server = json.loads(next(job.glob("**/config_fed_server.json")).read_text())
    assert "fedcrypt_example_task:initial_model" in json.dumps(server)


@pytest.mark.slow
def test_the_example_job_in_the_simulator_equals_plaintext_fedavg(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    _run(tmp_path, "--clients", "3", "--rounds", "1", "--workspace", str(tmp_path / "ws"))
    run_dir = tmp_path / "ws" / "fedcrypt_secagg_example" / "server" / "simulate_job"
    with np.load(run_dir / "fedcrypt_model.npz") as saved:
        model = {name: saved[name] for name in saved.files}
    reports = json.loads((run_dir / "fedcrypt_rounds.json").read_text())

    sys.path.insert(0, str(EXAMPLE))
    try:
        import fedcrypt_example_task as task
    finally:
        sys.path.remove(str(EXAMPLE))
    sites = ["site-1", "site-2", "site-3"]
    updates = [task.train(task.initial_model(), {"site": s, "round": 1}) for s in sites]
    weights = np.array([u[1] for u in updates], np.float64)
    expected = {k: sum(w * u[0][k].astype(np.float64) for w, u in zip(weights, updates)) / weights.sum() for k in model}
    # the codec's documented sum error E on w/M-scaled values: |A/B - S/W| <= E (W + |S|) / (W (W - E)), plus float32
    magnitude = max(max(float(np.max(np.abs(v))) for v in u[0].values()) for u in updates) + 1.0
    e, w = config_for(3, clip=8.0).codec.error_bound(3), weights.sum() / 1000.0
    tol = e * (w + w * magnitude) / (w * (w - e)) + magnitude * 2.0**-22
    error = max(float(np.max(np.abs(model[k].astype(np.float64) - expected[k]))) for k in expected)
    print(f"example: max error {error:.2e}, bound {tol:.2e}")
    assert set(model) == set(task.initial_model()) and error <= tol
    assert all(model[k].shape == v.shape for k, v in task.initial_model().items())
    assert reports[0]["survivors"] == sites and reports[0]["aborted"] is None
    assert reports[0]["weight"] == pytest.approx(weights.sum(), rel=1e-4)
    accuracy = np.dot(weights, [u[2]["accuracy"] for u in updates]) / weights.sum()
    assert reports[0]["metrics"]["accuracy"] == pytest.approx(accuracy, abs=tol)
