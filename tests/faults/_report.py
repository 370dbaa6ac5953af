"""Fault tests record what they measured when FEDCRYPT_FAULT_REPORT names a JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def record(name: str, **fields: Any) -> None:
    """Merge ``{name: fields}`` into the report file (no-op without the variable)."""
    target = os.environ.get("FEDCRYPT_FAULT_REPORT")
    if not target:
        return
    path = Path(target)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = fields
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
