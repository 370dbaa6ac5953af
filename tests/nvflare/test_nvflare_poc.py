"""fedcrypt SecAgg+ in a FLARE proof-of-concept deployment on 127.0.0.1: a server and three client
processes (``nvflare poc prepare -n 3`` / ``poc start``), a job submitted with ``nvflare job submit``,
and site-3's processes killed at round 1's MASKED_INPUT, after it shared its keys: both rounds
finish with site-1 and site-2 and equal their plaintext FedAvg. The test starts the POC in a
new session under a scratch HOME and POC workspace and, whatever happens, stops every process
it started (and only those). FLARE's server binds port 8002 (and 8003 for admin) on every
interface: the test skips if either is taken. Marked slow: about a minute on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from _nvflare_apps import plaintext_fedavg  # this folder is not a package: 'nvflare' would shadow FLARE
from test_nvflare_adapter import ROOT, fedavg_tolerance, needs_nvflare

pytestmark = [needs_nvflare, pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]

PORTS = (8002, 8003)  # FLARE POC's server and admin ports, bound on all interfaces
SERVER_KWARGS = {"num_rounds": 2, "clip": 8.0, "neighbours": 2, "threshold": 0.6, "stage_timeout": 8.0}
PAUSE = "site-3:1:MASKED_INPUT"  # after ADVERTISE_KEYS and SHARE_KEYS: site-3's key shares are out

#: exports the job (FLARE's job folder) in its own process
EXPORT = textwrap.dedent(
    """
    import json, sys
    from fedcrypt.integrations.nvflare import SecAggServer, recipe
    from _dropping import PausingClient
    out, server_kwargs, client_kwargs = sys.argv[1], *map(json.loads, sys.argv[2:])
    server = SecAggServer("tests.nvflare._nvflare_apps:initial", **server_kwargs)
    recipe("fedcrypt_poc", server, PausingClient(**client_kwargs), min_clients=3).export(out)
    """
)


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as FLARE's server: a TIME_WAIT is no owner
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, pgid, start time) of every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[19]))
    return table


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class PocDeployment:
    """A POC server and clients this test started: ``track()`` records every process of its
    process group and their descendants (FLARE's job processes take their own groups);
    ``kill(pids)`` and ``stop()`` signal only recorded processes still alive with the same start time."""

    def __init__(self, root: Path, num_clients: int) -> None:
        self.root, self.num_clients, self.started = root, num_clients, {}
        bin_dir = str(Path(sys.executable).parent)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NVFLARE_")}
        self.env.update(HOME=str(root / "home"), NVFLARE_POC_WORKSPACE=str(root / "poc"), PATH=os.pathsep.join([bin_dir, self.env.get("PATH", "")]),
                        PYTHONPATH=os.pathsep.join([str(ROOT), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        (root / "home").mkdir()
        self.cli = shutil.which("nvflare", path=bin_dir) or pytest.skip("no 'nvflare' command next to this Python")
        self.start: subprocess.Popen | None = None

    def run(self, *args: str, timeout: float = 60) -> str:
        proc = subprocess.run([self.cli, *args], env=self.env, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"nvflare {' '.join(args)}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def launch(self) -> None:
        self.run("poc", "prepare", "-n", str(self.num_clients), "--force")
        self.start = subprocess.Popen([self.cli, "poc", "start"], env=self.env, cwd=self.root, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.track()
        try:
            out, _ = self.start.communicate(timeout=90)
        finally:
            self.track()
        assert self.start.returncode == 0 and "Clients ready: 3/3" in out, out[-3000:]

    def track(self) -> dict[int, tuple[int, int, int]]:
        """Record the start command's process group and its descendants; the table of all processes."""
        table = _processes()
        if self.start is not None:
            for pid, (_, pgid, started) in table.items():
                if pgid == self.start.pid:
                    self.started.setdefault(pid, started)
            grew = True
            while grew:
                grew = False
                for pid, (ppid, _, started) in table.items():
                    if ppid in self.started and pid not in self.started:
                        self.started[pid], grew = started, True
        return table

    def kill(self, pids: list[int]) -> None:
        """Freeze, then kill: the processes vanish together, as on a crashed machine (a site's client
        process that outlives its job process reports the job failed, and FLARE fails the whole job)."""
        table = self.track()
        mine = [pid for pid in pids if pid in self.started and pid in table and table[pid][2] == self.started[pid]]
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in mine:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def site_pids(self, site: str) -> list[int]:
        """The recorded processes of one site (its start script, client and job processes)."""
        self.track()
        folder = str(self.root / "poc" / "example_project" / "prod_00" / site)
        return [pid for pid in self.started if any(w == folder or w.startswith(folder + "/") for w in _cmdline(pid).split())]

    def stop(self) -> None:
        self.track()
        if self.start is not None and self.start.poll() is None:
            os.killpg(self.start.pid, signal.SIGKILL)
            self.start.communicate()
        try:  # FLARE's own shutdown first (it waits for its processes), then whatever is left
            subprocess.run([self.cli, "poc", "stop"], env=self.env, cwd=self.root, capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.kill(list(self.started))


@pytest.fixture
def poc(tmp_path: Path) -> Iterator[PocDeployment]:
    taken = [port for port in PORTS if _port_taken(port)]
    if taken:
        pytest.skip(f"FLARE's POC server binds ports {PORTS} on all interfaces; taken here: {taken} (another FLARE deployment?)")
    deployment = PocDeployment(tmp_path, 3)
    try:
        yield deployment
    finally:
        deployment.stop()


def _wait_for(path: Path, timeout: float, what: str, poc: PocDeployment, read=lambda p: p.read_text()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        poc.track()
        if path.is_file():
            try:
                return read(path)
            except (OSError, ValueError):
                pass  # being written
        time.sleep(0.2)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(poc.root.glob("poc/**/server/**/log.txt")))
    pytest.fail(f"no {what} within {timeout} s\n{logs}")


def test_secagg_plus_in_a_poc_deployment_survives_a_killed_site(poc: PocDeployment) -> None:
    started = time.monotonic()
    marker = poc.root / "site-3-paused"
    client_kwargs = {"train": "tests.nvflare._nvflare_apps:train", "pause": PAUSE, "marker": str(marker), "hold": 120.0}
    env = {**poc.env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), poc.env["PYTHONPATH"]])}
    subprocess.run([sys.executable, "-c", EXPORT, str(poc.root / "jobs"), json.dumps(SERVER_KWARGS), json.dumps(client_kwargs)],
                   env=env, cwd=poc.root, check=True, capture_output=True, timeout=120)  # the sites get _dropping in the job
    poc.launch()
    out = poc.run("job", "submit", "-j", str(poc.root / "jobs" / "fedcrypt_poc"))
    job_id = out.rsplit("job_id:", 1)[1].split()[0]

    # site-3 has answered ADVERTISE_KEYS and SHARE_KEYS; it waits in MASKED_INPUT: kill its processes
    paused_pid = int(_wait_for(marker, 90, "pause of site-3 at MASKED_INPUT", poc))
    victims = poc.site_pids("site-3")
    assert paused_pid in victims and len(victims) >= 2, (paused_pid, victims)  # its client and job processes, at least
    poc.kill(victims)
    killed_at = time.monotonic()

    # FLARE keeps the job RUNNING while it waits for the lost site, so wait for the server's output
    run_dir = poc.root / "poc" / "example_project" / "prod_00" / "server" / job_id
    reports = _wait_for(run_dir / "fedcrypt_rounds.json", 90, "round reports", poc, lambda p: json.loads(p.read_text()))
    with np.load(run_dir / "fedcrypt_model.npz") as saved:
        model = {name: saved[name] for name in saved.files}
    assert poc.track().get(paused_pid, (0, 0, None))[2] != poc.started[paused_pid]  # the paused process is gone

    survivors = [["site-1", "site-2"], ["site-1", "site-2"]]
    assert [r["survivors"] for r in reports] == survivors, reports
    assert [r["dropped"] for r in reports] == [{"site-3": "MASKED_INPUT"}, {"site-3": "ADVERTISE_KEYS"}]
    assert all(not r["refused"] and r["aborted"] is None for r in reports)
    expected, metrics = plaintext_fedavg(survivors)
    tol = fedavg_tolerance(SERVER_KWARGS, survivors, magnitude=4.0)  # the simulator tests' bound
    error = max(float(np.max(np.abs(model[n].astype(np.float64) - expected[n]))) for n in expected)
    print(f"POC: kill at round 1 MASKED_INPUT {killed_at - started:.1f} s in, done {time.monotonic() - started:.1f} s in; "
          f"max error {error:.2e}, bound {tol:.2e}")
    assert set(model) == set(expected) and error <= tol
    assert reports[-1]["metrics"]["loss"] == pytest.approx(metrics["loss"], abs=tol)
