"""Shared pytest configuration: hypothesis profiles, and the seed of a random CI run.

``HYPOTHESIS_PROFILE=ci`` (set by .ci/run) draws fresh random examples on every CI run, so
CI keeps exploring instead of replaying the same examples. .ci/run draws one seed per run
and passes it as ``--hypothesis-seed``; pytest's header names it and, when a test failed,
the summary's last lines say how to replay it; every failure also prints its
``@reproduce_failure`` blob. The profile stores nothing (no example database on a
throwaway machine) and runs as many examples as the default profile (each test's own
``max_examples`` where it sets one), so it costs CI no time beyond the derandomised
profile it replaced.

The default profile (``dev``) keeps hypothesis' own randomness and its example database,
so a failure found locally is replayed first on the next run.

Under pytest-xdist (``.ci/run`` runs its slow steps with ``-n 2 --dist loadgroup``), every
test that starts processes, binds fixed ports or compares timings against a baseline goes to
one group (``_SERIAL``), so those run one at a time on one worker while the other worker
takes the CPU-bound searches and fuzzers; every other module is a group of its own, so its
module-scoped fixtures (OpenFHE key set-ups, searches' scenes) are made once, not per worker.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=False,
    database=None,
    print_blob=True,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


#: path prefixes (relative to the repository root) of tests run one at a time under xdist
_SERIAL = (
    "tests/bench/",
    "tests/faults/test_flower_supernode_killed.py",
    "tests/flower/",
    "tests/integrations/test_demo.py",
    "tests/integrations/test_flower_he_processes.py",
    "tests/he_threshold/test_flower_threshold_loopback.py",
    "tests/nvflare/",
    "tests/adversarial/review5/test_flare_layout_race_simulator.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """xdist groups (see the module docstring): the process-starting and timing tests in one,
    every other module in its own, so a module's fixtures (key set-ups) are made once."""
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else str(item.path)
        serial = path.startswith(_SERIAL) or item.get_closest_marker("flower") is not None
        item.add_marker(pytest.mark.xdist_group("serial" if serial else path))


def _hypothesis_seed(config: pytest.Config) -> str | None:
    seed = config.getoption("hypothesis_seed", default=None)
    return None if seed is None else str(seed)


def pytest_report_header(config: pytest.Config) -> str | None:
    """Name the hypothesis profile and seed at the top of the run."""
    seed = _hypothesis_seed(config)
    profile = settings.get_current_profile_name()
    return f"hypothesis: profile {profile!r}, seed {seed if seed is not None else 'drawn per test'}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """After a failing run, say how to replay hypothesis' examples."""
    seed = _hypothesis_seed(config)
    if exitstatus == 0 or seed is None:
        return
    terminalreporter.write_line(
        f"hypothesis seed {seed}: replay with "
        f"HYPOTHESIS_PROFILE={settings.get_current_profile_name()} python -m pytest --hypothesis-seed={seed} "
        "<failing tests> (or use the @reproduce_failure line printed with a failure)"
    )


@pytest.fixture(autouse=True, scope="session")
def _scratch_flower_home(tmp_path_factory: pytest.TempPathFactory):
    """Flower's home (the default state key, fedcrypt's journal) in a scratch folder for the
    session, never the user's ``~/.flwr``; a ``FLWR_HOME`` set by the caller is kept."""
    if "FLWR_HOME" in os.environ:
        yield
        return
    os.environ["FLWR_HOME"] = str(tmp_path_factory.mktemp("flwr-home"))
    try:
        yield
    finally:
        os.environ.pop("FLWR_HOME", None)
