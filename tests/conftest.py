"""Shared pytest configuration: hypothesis profiles, and a scratch Flower home.

``HYPOTHESIS_PROFILE=ci`` (set by .ci/run) derandomizes runs so CI is reproducible;
the default profile keeps hypothesis' own randomness and example database.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True, scope="session")
def _scratch_flower_home(tmp_path_factory: pytest.TempPathFactory):
    """fedcrypt's Flower mods create their default state key file under ``FLWR_HOME``
    (``~/.flwr`` without it): the test session uses a scratch directory instead."""
    previous = os.environ.get("FLWR_HOME")
    os.environ["FLWR_HOME"] = str(tmp_path_factory.mktemp("flwr-home"))
    yield
    if previous is None:
        os.environ.pop("FLWR_HOME", None)
    else:
        os.environ["FLWR_HOME"] = previous
