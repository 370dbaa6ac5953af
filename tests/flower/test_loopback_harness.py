"""The loopback-federation harness: argument checks and teardown bookkeeping (no Flower process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from . import _loopback as loopback
from ._loopback import LoopbackFederation, free_port


def test_arguments_and_run_config_values_are_checked(tmp_path) -> None:
    with pytest.raises(ValueError, match="num_supernodes must be a positive integer, got 0"):
        LoopbackFederation(0)
    with pytest.raises(TypeError, match="run-config values must be bool, int, float or str, got list"):
        loopback._toml_value([1])
    assert [loopback._toml_value(v) for v in (True, 3, 0.5, 'a"b')] == ["true", "3", "0.5", '"a\\"b"']
    fed = LoopbackFederation(2, workdir=tmp_path)
    assert fed.env["FLWR_HOME"] == str(tmp_path / "flwr-home")
    assert fed.env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert fed.env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    with pytest.raises(RuntimeError, match="a simulation federation has no SuperNodes"):
        LoopbackFederation(2, simulation=True, workdir=tmp_path).start_supernode(0)


def test_free_port_is_bindable_on_loopback() -> None:
    import socket

    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="descendant discovery reads /proc (Linux)")
def test_descendants_in_other_sessions_are_found_and_stopped() -> None:
    """A grandchild that detaches into its own session (as Flower's SuperExec does) is still stopped."""
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        found: list[int] = []
        while time.monotonic() < deadline and not found:
            found = loopback._descendants([parent.pid])
            time.sleep(0.05)
        assert len(found) == 1
        (child,) = found
        assert os.getsid(child) != os.getsid(parent.pid)  # really detached
        for pid in found:
            loopback._signal_pid(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while loopback._alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not loopback._alive(child)
    finally:
        loopback._signal_group(parent, signal.SIGKILL)
        parent.wait(timeout=10)


def test_node_config_reaches_flowers_parser_unchanged(tmp_path) -> None:
    from flwr.common.config import parse_config_args

    extra = {"fedcrypt-identity": str(tmp_path / "node 1.pem"), "fedcrypt-max-colluders": 1, "flag": True, "share": 0.5}
    fed = LoopbackFederation(2, workdir=tmp_path, node_config={1: extra})
    assert fed.node_config_arg(0) == "partition-id=0 num-partitions=2"
    assert parse_config_args([fed.node_config_arg(1)]) == {"partition-id": 1, "num-partitions": 2, **extra}
    for bad in ({"path": 'a"b'}, {"path": "a\\b"}, {"a key": 1}, {"k=v": 1}):
        with pytest.raises(ValueError, match="cannot cross Flower's --node-config parser"):
            LoopbackFederation(2, workdir=tmp_path, node_config={0: bad}).node_config_arg(0)
