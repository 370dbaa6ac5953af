"""Attacker review 5: the layout race (``test_flare_malicious_site_search.py``) in a real FLARE 2.9
simulator job (server and site processes, FOBS serialisation): ``site-2`` trains like the others
but names its metric ``zzz`` and answers MASKED_INPUT first. Before the fix the server adopted
its layout and refused the three honest sites ("its model layout differs from the other
sites'"), and the round aborted; now the core keeps the most common layout and sets ``site-2``
aside. Slow (one simulator job, about 30 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RUNNER = textwrap.dedent(
    """
    import sys
    from nvflare.recipe import SimEnv
    from fedcrypt.integrations.nvflare import SecAggClient, SecAggServer, recipe
    server = SecAggServer("tests.adversarial.review5._flare:initial", num_rounds=1, clip=8.0, stage_timeout=30.0)
    client = SecAggClient(train="tests.adversarial.review5._flare:renaming_train")
    recipe("fedcrypt_secagg", server, client, min_clients=4).execute(SimEnv(num_clients=4, workspace_root=sys.argv[1]))
    """
)


@pytest.mark.slow
def test_one_site_with_another_layout_does_not_abort_a_flare_round(tmp_path: Path) -> None:
    pytest.importorskip("nvflare.collab")
    env = {k: v for k, v in os.environ.items() if k != "NVFLARE_SIMULATOR_WORKSPACE_ROOT"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep), HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path / "ws")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the simulator ran past 240 s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    report = json.loads((tmp_path / "ws" / "fedcrypt_secagg" / "server" / "simulate_job" / "fedcrypt_rounds.json").read_text())[0]
    print(json.dumps(report, indent=1))
    # the secure behaviour: the honest sites are in the round (site-2's reply refused instead)
    assert report["aborted"] is None and report["survivors"] == ["site-1", "site-3", "site-4"], report
    assert "layout" in report["refused"]["site-2"], report
