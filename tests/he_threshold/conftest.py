"""Fixtures of the threshold-CKKS tests.

Only ``test_threshold_openfhe.py`` needs OpenFHE (CPython 3.10, ``.venv310``, see
``scripts/setup_py310.sh``); it requests :func:`openfhe` through ``pytestmark``, so under the
project's default Python it is skipped with the reason below, and every other module here
runs everywhere. With ``FEDCRYPT_REQUIRE_OPENFHE=1`` (CI's 3.10 run) a missing
``openfhe`` is an error, not a skip.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest


@pytest.fixture(scope="session")
def openfhe() -> Any:
    if os.environ.get("FEDCRYPT_REQUIRE_OPENFHE") == "1":  # CI's 3.10 run: never skip
        return importlib.import_module("openfhe")
    return pytest.importorskip("openfhe", reason="threshold CKKS needs openfhe (CPython 3.10: scripts/setup_py310.sh)")


@pytest.fixture(scope="session")
def compact_params(openfhe: Any) -> Any:
    from fedcrypt.he.threshold import ThresholdParams

    return ThresholdParams.preset("compact", num_parties=3, num_clients=8, max_weight=8)


@pytest.fixture(scope="session")
def four_party_params(openfhe: Any) -> Any:
    from fedcrypt.he.threshold import ThresholdParams

    return ThresholdParams.preset("compact", num_parties=4, num_clients=8, max_weight=8)


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ARG001 - pytest hook signature
    """Write the native fuzzer's input counts (test_threshold_fuzz_native.py) when
    ``FEDCRYPT_FUZZ_REPORT`` names a file, as tests/fuzz/conftest.py does (unless it ran too)."""
    import json
    import sys
    from pathlib import Path

    counts = getattr(sys.modules.get("fuzz._fuzz"), "FUZZ_COUNTS", None)
    target = os.environ.get("FEDCRYPT_FUZZ_REPORT")
    if not counts or not target or "fuzz.conftest" in sys.modules:
        return
    path = Path(target)
    previous = json.loads(path.read_text()) if path.exists() else {}
    for name, count in counts.items():
        previous[name] = previous.get(name, 0) + count
    path.write_text(json.dumps(previous, indent=1, sort_keys=True))
