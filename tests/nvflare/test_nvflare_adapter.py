"""fedcrypt SecAgg / SecAgg+ over NVIDIA FLARE 2.9 (Collab API): real FLARE simulator jobs,
a server process and one process per site, every request and reply through FLARE's
serialisation. Without nvflare installed the FLARE tests skip and the adapter names its extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedcrypt.secagg.setup import config_for

from _nvflare_apps import plaintext_fedavg, update_of, weight_of  # this folder is not a package: 'nvflare' would shadow FLARE

ROOT = Path(__file__).resolve().parents[2]


def _has_nvflare() -> bool:
    try:  # the FLARE package (this folder, on pytest's path, can look like a namespace package 'nvflare')
        return importlib.util.find_spec("nvflare.collab") is not None
    except ImportError:
        return False


HAS_NVFLARE = _has_nvflare()
needs_nvflare = pytest.mark.skipif(not HAS_NVFLARE, reason="nvflare is not installed (extra 'nvflare')")

#: runs one simulator job in its own process (FLARE sets up logging and workers for the process)
RUNNER = textwrap.dedent(
    """
    import json, sys
    from nvflare.recipe import SimEnv
    from fedcrypt.integrations.nvflare import recipe
    from fedcrypt.integrations.nvflare._common import load
    workspace, num_clients, server_path, server_kwargs, client_path, client_kwargs = sys.argv[1], int(sys.argv[2]), *map(json.loads, sys.argv[3:])
    server = load(server_path)(**{"initial_model": "tests.nvflare._nvflare_apps:initial", **server_kwargs})
    client = load(client_path)(**client_kwargs)
    recipe("fedcrypt_secagg", server, client, min_clients=num_clients).execute(SimEnv(num_clients=num_clients, workspace_root=workspace))
    """
)


def run_simulator(tmp_path: Path, num_clients: int, server_kwargs: dict, client: str = "fedcrypt.integrations.nvflare:SecAggClient",
                  client_kwargs: dict | None = None, timeout: float = 240, server: str = "fedcrypt.integrations.nvflare:SecAggServer",
                  ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Run a job in FLARE's simulator; the server's saved model and round reports."""
    env = {k: v for k, v in os.environ.items() if k != "NVFLARE_SIMULATOR_WORKSPACE_ROOT"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep), HOME=str(tmp_path))
    args = [sys.executable, "-c", RUNNER, str(tmp_path / "ws"), str(num_clients), json.dumps(server), json.dumps(server_kwargs), json.dumps(client),
            json.dumps(client_kwargs or {"train": "tests.nvflare._nvflare_apps:train"})]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the simulator ran past {timeout} s:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-4000:]
    run_dir = tmp_path / "ws" / "fedcrypt_secagg" / "server" / "simulate_job"
    assert (run_dir / "fedcrypt_model.npz").is_file(), out[-4000:]
    with np.load(run_dir / "fedcrypt_model.npz") as saved:
        model = {name: saved[name] for name in saved.files}
    return model, json.loads((run_dir / "fedcrypt_rounds.json").read_text())


def fedavg_tolerance(server_kwargs: dict, survivors_by_round: list[list[str]], magnitude: float) -> float:
    """Worst-case error of the final model from the codec's documented sum error (one round as in
    tests/flower/test_flower_adapter.fedavg_tolerance): A = S + e1, B = W + e2 with
    |e1|, |e2| <= E: |A/B - S/W| <= E (W + |S|) / (W (W - E)), values w/M-scaled, plus 2^-22
    relative for the float32 model; a round's error passes unchanged into the next round's
    average (each update is the model plus a step), so the rounds' bounds add up."""
    total = 0.0
    for sites in survivors_by_round:
        config = config_for(len(sites), clip=server_kwargs.get("clip", 4.0), bits=server_kwargs.get("bits", 32))
        e = config.codec.error_bound(len(sites))
        w = sum(weight_of(s) for s in sites) / server_kwargs.get("max_weight", 1000.0)
        total += e * (w + w * magnitude) / (w * (w - e)) + magnitude * 2.0**-22
    return total


# ============================================================================ without nvflare
def test_without_nvflare_the_adapter_names_its_extra() -> None:
    # a core install: nvflare cannot be imported, the adapter fails in one typed error naming the extra
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        class NoNvflare(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "nvflare":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoNvflare())
        from fedcrypt.errors import MissingExtraError
        try:
            import fedcrypt.integrations.nvflare
        except MissingExtraError as exc:
            print("missing:", exc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("missing:") and "pip install 'fedcrypt[nvflare]'" in proc.stdout


def test_the_adapter_is_a_transport_within_600_lines() -> None:
    # issue #17: the FLARE adapter only translates; the round cores hold the protocol
    package = ROOT / "fedcrypt" / "integrations" / "nvflare"
    lines = sum(len(path.read_text(encoding="utf-8").splitlines()) for path in package.glob("*.py"))
    assert 0 < lines <= 600, lines


# ============================================================================ FLARE's simulator
@needs_nvflare
@pytest.mark.slow
def test_secagg_in_the_simulator_equals_plaintext_fedavg(tmp_path: Path) -> None:
    # 4 sites, 2 rounds of classic SecAgg (complete graph), every site surviving
    server_kwargs = {"num_rounds": 2, "clip": 8.0, "stage_timeout": 30.0}
    model, reports = run_simulator(tmp_path, 4, server_kwargs)
    sites = ["site-1", "site-2", "site-3", "site-4"]
    expected, metrics = plaintext_fedavg([sites, sites])
    tol = fedavg_tolerance(server_kwargs, [sites, sites], magnitude=4.0)  # |x| <= 2, the loss metric <= 4
    assert set(model) == set(expected)
    for name, value in model.items():
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=tol)
    assert [r["survivors"] for r in reports] == [sites, sites]
    assert all(not r["dropped"] and not r["refused"] and r["aborted"] is None for r in reports)
    assert reports[-1]["metrics"]["loss"] == pytest.approx(metrics["loss"], abs=tol)
    assert reports[-1]["weight"] == pytest.approx(sum(weight_of(s) for s in sites), rel=1e-4)
    assert list(reports[0]["stage_seconds"]) == ["ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_INPUT", "UNMASK"]
    assert 0 < reports[0]["bytes_up"] and 0 < reports[0]["bytes_down"]


@needs_nvflare
@pytest.mark.slow
def test_secagg_plus_in_the_simulator_survives_dropouts(tmp_path: Path) -> None:
    # SecAgg+ (each site masks with 2 neighbours, threshold 2 of 3 holders): round 1 loses
    # site-4 at MASKED_INPUT (its pairwise masks are removed with its key's shares), round 2
    # loses site-2 at UNMASK (its update is in the sum, its self mask removed with its seed's shares)
    server_kwargs = {"num_rounds": 2, "clip": 8.0, "neighbours": 2, "threshold": 0.6, "stage_timeout": 30.0}
    client_kwargs = {"train": "tests.nvflare._nvflare_apps:train", "drops": "site-4:1:MASKED_INPUT,site-2:2:UNMASK"}
    model, reports = run_simulator(tmp_path, 4, server_kwargs, "tests.nvflare._dropping:DroppingClient", client_kwargs)
    survivors = [["site-1", "site-2", "site-3"], ["site-1", "site-2", "site-3", "site-4"]]
    expected, _ = plaintext_fedavg(survivors)
    tol = fedavg_tolerance(server_kwargs, survivors, magnitude=4.0)
    for name, value in model.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=tol)
    assert [r["survivors"] for r in reports] == survivors
    assert [r["dropped"] for r in reports] == [{"site-4": "MASKED_INPUT"}, {"site-2": "UNMASK"}]
    assert all(not r["refused"] and r["aborted"] is None for r in reports)



@needs_nvflare
@pytest.mark.slow
def test_secagg_with_distributed_dp_in_the_simulator_adds_the_configured_noise(tmp_path: Path) -> None:
    # one round of distributed DP (ddgauss, z = 0.5, L2 clip 60): the model moves by the mean
    # delta plus noise of std z * clip / n per coordinate; 1024 coordinates bound the residual's
    # std within 20% and its mean within 6 standard errors (as the Flower adapter's test)
    dim, z, clip = 1024, 0.5, 60.0
    server_kwargs = {"initial_model": "tests.nvflare._nvflare_apps:initial_vector", "num_rounds": 1, "dp_noise_multiplier": z,
                     "dp_clip": clip, "stage_timeout": 30.0}
    model, reports = run_simulator(tmp_path, 4, server_kwargs)
    sites = ["site-1", "site-2", "site-3", "site-4"]
    deltas = [update_of(s, 1, {"a": np.zeros(dim, np.float32)})["a"].astype(np.float64) for s in sites]
    assert max(np.linalg.norm(d) for d in deltas) < clip  # nothing clipped: the plaintext mean is exact
    residual, sigma = model["a"].astype(np.float64) - np.mean(deltas, axis=0), z * clip / len(sites)
    assert reports[0]["dp"]["noise_stddev"] == pytest.approx(sigma) and reports[0]["survivors"] == sites
    assert 0.8 * sigma < residual.std() < 1.2 * sigma
    assert abs(residual.mean()) < 6 * sigma / np.sqrt(dim)


@needs_nvflare
@pytest.mark.slow
def test_ckks_in_the_simulator_equals_plaintext_fedavg(tmp_path: Path) -> None:
    # single-key CKKS through the same transport: site keys dealt in band in round 1 (the
    # dealer is the lowest keyless node), the pinned context carried to round 2
    pytest.importorskip("tenseal")
    from fedcrypt.he.round import fedavg_error_bound
    from fedcrypt.integrations.nvflare.ckks import ckks_config

    ckks = {"clip": 4.0}
    model, reports = run_simulator(tmp_path, 4, {"num_rounds": 2, "ckks": ckks, "stage_timeout": 60.0},
                                   "fedcrypt.integrations.nvflare:CkksClient", {"train": "tests.nvflare._nvflare_apps:train", "ckks": ckks},
                                   server="fedcrypt.integrations.nvflare:CkksServer")
    sites = ["site-1", "site-2", "site-3", "site-4"]
    expected, metrics = plaintext_fedavg([sites, sites])
    config = ckks_config(**ckks)
    tol = 2 * fedavg_error_bound(config.params, [weight_of(s) for s in sites], config.max_weight)  # two rounds' errors add up
    for name, value in model.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=tol)
    assert [r["survivors"] for r in reports] == [sites, sites]
    assert all(not r["dropped"] and not r["refused"] and r["aborted"] is None for r in reports)
    assert reports[-1]["metrics"]["loss"] == pytest.approx(metrics["loss"], abs=tol)
    assert list(reports[0]["stage_seconds"]) == ["CONTEXT", "DEAL", "INSTALL", "ENCRYPT", "DECRYPT"]
    assert list(reports[1]["stage_seconds"]) == ["CONTEXT", "ENCRYPT", "DECRYPT"]  # the key stays with the sites
