"""``benchmarks.flower_memory`` in its quick mode on tiny sizes (d = 1000, 3 vs 6 nodes).

Only the output's shape is checked (one row per case, a ratio per protection and pull, the
table, the result file): the memory figures themselves are the benchmark's to report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the Flower adapters need the flower extra")

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("traced_peak_bytes", "peak_rss_bytes", "round_rss_bytes", "rss_before_round_bytes")


@pytest.mark.timeout(120)
def test_quick_mode_on_tiny_sizes_reports_every_case_and_the_ratios(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # the spawned server processes inherit the path
    from benchmarks import _common, flower_memory

    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    argv = ["--quick", "--d", "1000", "--nodes", "3", "6", "--protections", "secagg", "ckks", "--pull", "one"]
    assert flower_memory.main(argv) == 0

    payload = json.loads((tmp_path / "flower_memory_quick-secagg-ckks.json").read_text())
    assert payload["command"] == "python -m benchmarks.flower_memory " + " ".join(argv)
    assert payload["d"] == 1000 and payload["nodes"] == [3, 6] and payload["target"] == flower_memory.TARGET
    ran = [r for r in payload["rows"] if "skipped" not in r]
    skipped = {r["protection"] for r in payload["rows"] if "skipped" in r}
    assert "secagg" not in skipped and skipped <= {"ckks"}  # ckks only without TenSEAL
    assert {(r["protection"], r["nodes"], r["pull"]) for r in ran} == {
        (p, n, "one") for p in ("secagg", "ckks") if p not in skipped for n in (3, 6)
    }
    for row in ran:
        assert row["d"] == 1000 and row["survivors"] == row["nodes"] and row["aborted"] is None
        assert row["traced_peak_bytes"] >= 4 * 1000  # at least the global model
        assert row["traced_peak_bytes"] == max(row["traced_peak_by_stage"].values())
        assert row["peak_rss_bytes"] is None or row["peak_rss_bytes"] == max(row["peak_rss_by_stage"].values())
        for name in FIGURES:
            assert row[name] is None or (isinstance(row[name], int) and row[name] >= 0), (name, row[name])
        assert row["pulled"] == row["pushed"] and row["client_errors"] == []
        assert row["max_abs_error"] < 1e-3  # the strategy got the FedAvg of the nodes' updates
    assert [(s["protection"], s["pull"]) for s in payload["summary"]] == [
        (p, "one") for p in ("secagg", "ckks") if p not in skipped
    ]
    for entry in payload["summary"]:
        assert entry["small"] == 3 and entry["large"] == 6
        assert math.isfinite(entry["traced_ratio"]) and entry["traced_ratio"] > 0
        assert isinstance(entry["meets_target"], bool) and entry["streams_by_design"] is True

    out = capsys.readouterr().out
    assert "traced 3" in out and "traced 6" in out and "ratio" in out
    assert f"wrote {tmp_path / 'flower_memory_quick-secagg-ckks.json'}" in out


def test_a_protection_without_its_extra_is_skipped_with_its_reason(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    import importlib.util

    from benchmarks import _common, flower_memory

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openfhe" else find_spec(name, *a))
    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    assert flower_memory.main(["--quick", "--d", "1000", "--nodes", "3", "6", "--protections", "threshold"]) == 0
    payload = json.loads((tmp_path / "flower_memory_quick-threshold.json").read_text())
    assert [r["protection"] for r in payload["rows"]] == ["threshold"] and "OpenFHE" in payload["rows"][0]["skipped"]
    assert payload["summary"] == []
    assert "skipped threshold: OpenFHE is not installed" in capsys.readouterr().out
