"""A Flower federation on the loopback interface, started and stopped from Python.

Used by fedcrypt's tests and benchmarks (and handy for trying an app locally): a
SuperLink and N SuperNodes run as real ``flower-superlink`` / ``flower-supernode``
processes on ``127.0.0.1`` with ``--insecure`` and free ports, and ``flwr run`` submits a
Flower app to them. With ``simulation=True`` the SuperLink runs the Ray simulation
runtime instead and no SuperNode is started.

Invariants:

* every process is started in its own session (process group) and :meth:`close` ends
  each group it started (SIGTERM, then SIGKILL after a bounded wait); the class is a
  context manager so a failing test still tears the federation down;
* nothing leaves the machine: servers bind ``127.0.0.1`` only, the Flower home is a
  private scratch directory, update checks and runtime dependency installation are off;
* every wait is bounded and raises :class:`TimeoutError` naming what it waited for, with
  the tail of the relevant log.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["LoopbackFederation", "RunOutcome", "free_port"]

_CONNECTION = "fedcrypt-loopback"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise TypeError(f"run-config values must be bool, int, float or str, got {type(value).__name__}")


@dataclass
class RunOutcome:
    """How one ``flwr run`` ended."""

    run_id: int
    status: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        """True when Flower reports ``finished:completed``."""
        return self.status == "finished:completed"


class LoopbackFederation:
    """A SuperLink (+ SuperNodes) on 127.0.0.1, as subprocesses, with bounded waits.

    Args:
        num_supernodes: SuperNodes to start (deployment) or to simulate (simulation).
        simulation: run the SuperLink's simulation runtime (Ray) instead of SuperNodes.
        workdir: scratch directory for logs and the Flower home; a new temporary one by
            default (removed by :meth:`close` only if this object made it).
        bin_dir: directory holding the ``flwr`` executables; default the one of the
            running interpreter.
        start_timeout: seconds to wait for a server port to open.
        env: extra environment variables for every process.
        node_config: extra node config of each SuperNode, ``partition -> {key: value}``
            (bool, int, float or str values), e.g. a node's identity and roster files.
    """

    def __init__(
        self,
        num_supernodes: int,
        *,
        simulation: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        node_config: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        if not isinstance(num_supernodes, int) or isinstance(num_supernodes, bool) or num_supernodes < 1:
            raise ValueError(f"num_supernodes must be a positive integer, got {num_supernodes!r}")
        self.num_supernodes = num_supernodes
        self.simulation = simulation
        self.node_config = {int(p): dict(entries) for p, entries in (node_config or {}).items()}
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="fedcrypt-flower-")
            workdir = self._own_tmp.name
        self.workdir = Path(workdir)
        self.bin_dir = Path(bin_dir) if bin_dir is not None else Path(sys.executable).parent
        self.start_timeout = start_timeout
        self.flwr_home = self.workdir / "flwr-home"
        self.logs = self.workdir / "logs"
        self.superlink_port = 0
        self._superlink: subprocess.Popen[bytes] | None = None
        self.supernodes: dict[int, subprocess.Popen[bytes]] = {}
        self.env = dict(os.environ)
        self.env.update(
            {
                "FLWR_HOME": str(self.flwr_home),
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONUNBUFFERED": "1",
                # Flower starts its helpers (flower-superexec, flwr-serverapp...) by name
                "PATH": os.pathsep.join([str(self.bin_dir), os.environ.get("PATH", "")]),
            }
        )
        if env:
            self.env.update(env)

    # ------------------------------------------------------------------ processes
    def _exe(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise FileNotFoundError(f"Flower executable {name!r} not found in {self.bin_dir}")
        return str(path)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        try:
            return subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )
        finally:
            log.close()

    def log_tail(self, name: str, chars: int = 4000) -> str:
        """The last ``chars`` characters of a process log (``superlink``, ``supernode-0``...)."""
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return path.read_text(errors="replace")[-chars:]

    def _wait_port(self, port: int, proc: subprocess.Popen[bytes], name: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            if _port_open(port):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} did not open port {port} in {self.start_timeout}s:\n{self.log_tail(name)}")

    def start(self) -> "LoopbackFederation":
        """Start the SuperLink (and the SuperNodes), write the Flower connection config."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.superlink_port = free_port()
        args = [
            self._exe("flower-superlink"),
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.superlink_port),
            "--disable-runtime-dependency-installation",
        ]
        if self.simulation:
            args.append("--simulation")
        self._superlink = self._spawn("superlink", args)
        self._wait_port(self.superlink_port, self._superlink, "superlink")
        (self.flwr_home / "config.toml").write_text(
            "[superlink]\n"
            f'default = "{_CONNECTION}"\n\n'
            f"[superlink.{_CONNECTION}]\n"
            f'address = "127.0.0.1:{self.superlink_port}"\n'
            "insecure = true\n",
            encoding="utf-8",
        )
        if not self.simulation:
            for partition in range(self.num_supernodes):
                self.start_supernode(partition)
        return self

    def start_supernode(self, partition: int) -> subprocess.Popen[bytes]:
        """Start the SuperNode of ``partition`` (node config ``partition-id``/``num-partitions``)."""
        if self.simulation:
            raise RuntimeError("a simulation federation has no SuperNodes")
        name = f"supernode-{partition}"
        proc = self._spawn(
            name,
            [
                self._exe("flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.superlink_port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--node-config",
                self.node_config_arg(partition),
            ],
        )
        self.supernodes[partition] = proc
        return proc

    def node_config_arg(self, partition: int) -> str:
        """The ``--node-config`` value of a partition's SuperNode: ``partition-id``,
        ``num-partitions`` and the partition's entries of :attr:`node_config`."""
        entries = {"partition-id": partition, "num-partitions": self.num_supernodes, **self.node_config.get(partition, {})}
        for key, value in entries.items():
            if not key or any(c.isspace() or c in "=\"'" for c in key):
                raise ValueError(f"node config key {key!r} cannot cross Flower's --node-config parser")
            if isinstance(value, str) and any(c in value for c in "\"\\\n"):
                raise ValueError(f"node config value {value!r} cannot cross Flower's --node-config parser")
        return " ".join(f"{key}={_toml_value(value)}" for key, value in entries.items())

    def kill_supernode(self, partition: int) -> None:
        """SIGKILL the process group of one SuperNode (its ClientApp processes included)."""
        proc = self.supernodes[partition]
        stragglers = _descendants([proc.pid])
        _signal_group(proc, signal.SIGKILL)
        for pid in stragglers:
            _signal_pid(pid, signal.SIGKILL)
        proc.wait(timeout=10)

    # ------------------------------------------------------------------ runs
    def _flwr(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._exe("flwr"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=timeout,
            check=False,
        )

    def submit(self, app_dir: str | os.PathLike[str], run_config: Mapping[str, Any] | None = None) -> int:
        """``flwr run`` the app at ``app_dir`` on this federation; return the run id."""
        args = ["run", str(Path(app_dir).resolve()), _CONNECTION, "--format", "json"]
        if run_config:
            args += ["--run-config", " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())]
        if self.simulation:
            args += ["--federation-config", f"num-supernodes={self.num_supernodes}"]
        done = self._flwr(args, timeout=120)
        try:
            payload = json.loads(done.stdout[done.stdout.index("{") :])
            return int(payload["run-id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(
                f"flwr run failed (exit {done.returncode}): {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            ) from exc

    def status(self, run_id: int) -> str:
        """Flower's status text of a run (``running``, ``finished:completed``...)."""
        done = self._flwr(["ls", _CONNECTION, "--run-id", str(run_id), "--format", "json"], timeout=60)
        try:
            payload = json.loads(done.stdout[done.stdout.index("{") :])
            return str(payload["runs"][0]["status"])
        except (ValueError, KeyError, IndexError, TypeError):
            return "unknown"

    def run_log(self, run_id: int) -> str:
        """The ServerApp log of a run, as ``flwr log --show`` prints it."""
        done = self._flwr(["log", str(run_id), _CONNECTION, "--show"], timeout=60)
        return done.stdout + done.stderr

    def wait(self, run_id: int, timeout: float, poll: float = 1.0) -> RunOutcome:
        """Wait (at most ``timeout`` s) until the run finishes; raise TimeoutError otherwise."""
        started = time.monotonic()
        status = "unknown"
        while time.monotonic() - started < timeout:
            status = self.status(run_id)
            if status.startswith("finished"):
                return RunOutcome(run_id, status, time.monotonic() - started)
            if self._superlink is not None and self._superlink.poll() is not None:
                raise RuntimeError(f"the SuperLink exited:\n{self.log_tail('superlink')}")
            time.sleep(poll)
        self._flwr(["stop", str(run_id), _CONNECTION], timeout=60)
        raise TimeoutError(
            f"run {run_id} not finished after {timeout}s (last status {status!r}):\n{self.log_tail('superlink')}"
        )

    def run(
        self, app_dir: str | os.PathLike[str], run_config: Mapping[str, Any] | None = None, timeout: float = 300.0
    ) -> RunOutcome:
        """Submit the app and wait for it to finish."""
        started = time.monotonic()
        run_id = self.submit(app_dir, run_config)
        outcome = self.wait(run_id, timeout)
        outcome.seconds = time.monotonic() - started
        return outcome

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop every process this object started (TERM, then KILL), remove its scratch dir."""
        procs = list(self.supernodes.values())
        if self._superlink is not None:
            procs.append(self._superlink)
        # Flower detaches some helpers into their own sessions: find every descendant
        # now, while the parent links still exist.
        stragglers = _descendants([proc.pid for proc in procs])
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        for pid in stragglers:
            _signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # the group may hold children (ServerApp, ClientApp, Ray) that outlive the leader
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while stragglers and time.monotonic() < deadline:
            stragglers = [pid for pid in stragglers if _alive(pid)]
            time.sleep(0.1)
        for pid in stragglers:
            _signal_pid(pid, signal.SIGKILL)
        self.supernodes.clear()
        self._superlink = None
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
            self._own_tmp = None

    def __enter__(self) -> "LoopbackFederation":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """A one-line description for logs."""
        kind = "simulation" if self.simulation else f"{self.num_supernodes} SuperNodes"
        return f"SuperLink 127.0.0.1:{self.superlink_port} ({kind}); FLWR_HOME={shlex.quote(str(self.flwr_home))}"


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(roots: list[int]) -> list[int]:
    """Every live descendant of ``roots`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
