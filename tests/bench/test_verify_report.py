"""``python -m benchmarks.verify --report``: docs/performance.md's verified section comes from result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks._common as common
from benchmarks import verify


def _write(directory: Path, name: str, payload: dict) -> None:
    payload = {"machine": {"cpus": 2}, "unix_time": 1_796_000_000.0, **payload}
    (directory / f"{name}.json").write_text(json.dumps(payload))


def test_report_renders_every_result_file_into_the_marked_section(tmp_path: Path, monkeypatch) -> None:
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(common, "RESULTS_DIR", results)
    row = {"d": 1000, "upload_bytes": 5432, "ratio": 1.0864, "client_s": 0.25, "leader_s": 0.125, "helper_s": 0.5,
           "max_error": 3.1e-4, "field": "Field40", "num_frac_bits": 12}
    _write(results, "verify", {"command": "python -m benchmarks.verify --dims 1000", "pinned": "cpu 0", "rows": [row]})
    _write(results, "verify_attacks", {"command": "python -m benchmarks.verify --attacks --honest 0", "trials": 7,
                                       "attacks": {"scaled-1000x": {"accepted": 0, "rejected": 7, "refused": 0}}})
    doc = tmp_path / "performance.md"
    doc.write_text("# title\n\nbefore\n<!-- verify:start -->\nstale figures\n<!-- verify:end -->\nafter\n")
    verify.write_report(doc)
    text = doc.read_text()
    assert "stale figures" not in text
    assert text.startswith("# title\n\nbefore\n<!-- verify:start -->\n") and text.endswith("<!-- verify:end -->\nafter\n")
    assert "| 1,000 | 5,432 B | 1.0864 | 0.25 s | 0.12 s | 0.50 s | 3.10e-04 |" in text
    assert "`python -m benchmarks.verify --dims 1000`" in text
    assert "7 trials each: scaled-1000x 0 accepted." in text
    assert "Honest reports" not in text  # no such run: no line


def test_report_refuses_a_doc_without_markers_and_a_missing_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    doc = tmp_path / "performance.md"
    doc.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no benchmarks/results/verify.json"):
        verify.report()
    _write(tmp_path, "verify", {"command": "c", "pinned": "cpu 0", "rows": []})
    with pytest.raises(SystemExit, match="has no <!-- verify:start -->"):
        verify.write_report(doc)
