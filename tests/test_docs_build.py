"""The documentation site builds with ``mkdocs build --strict`` (mkdocs.yml, docs/).

Strict mode fails on a broken link or anchor between pages, a page missing from the nav, and
a docstring that mkdocstrings cannot render, so a renamed API or a moved heading shows up
here. Skipped when the ``dev`` extra's documentation tools are not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings_handlers")),
    reason="mkdocs, mkdocs-material or mkdocstrings[python] not installed (extra 'dev')",
)
def test_mkdocs_build_strict(tmp_path: Path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert (tmp_path / "site" / "reference" / "secagg" / "index.html").is_file()
    security = (tmp_path / "site" / "security" / "index.html").read_text(encoding="utf-8")
    assert "Reporting a vulnerability" in security  # SECURITY.md is included, not copied
