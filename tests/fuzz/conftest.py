"""Write the fuzz input counts when FEDCRYPT_FUZZ_REPORT names a file (see _fuzz.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ._fuzz import FUZZ_COUNTS


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ARG001 - pytest hook signature
    target = os.environ.get("FEDCRYPT_FUZZ_REPORT")
    if target:
        path = Path(target)
        previous = json.loads(path.read_text()) if path.exists() else {}
        for name, count in FUZZ_COUNTS.items():
            previous[name] = previous.get(name, 0) + count
        path.write_text(json.dumps(previous, indent=1, sort_keys=True))
