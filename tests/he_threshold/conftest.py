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
