"""The bench report a reader sees: a table under 120 columns with no 'nan' and no ratio against
microseconds, and plots that keep every fitted protection (issue #18). Synthetic rows, no
measurement: fast, and the figures are known."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedcrypt.bench import _percent, costmodel, report

pytest.importorskip("scipy")  # the cost model's fit (extra 'bench')


def _row(protection: str, n: int, d: int, *, dropout: float = 0.0, bits: int | str = "", client_s: float,
         server_s: float, baseline_s: float) -> dict:
    k = n - 1 if protection in ("secagg", "secagg+") else 0
    up = d * (int(bits) // 8 if bits else 4) + 100 * k
    return {
        "protection": protection, "n": n, "d": d, "k": k, "dropout": dropout, "bits": bits, "dp": "off",
        "status": "ok", "survivors": n - round(dropout * n),
        "client_s_median": client_s, "server_s_median": server_s,
        "client_cpu_s_median": client_s, "server_cpu_s_median": server_s,
        "bytes_up": up, "bytes_down": 32 * n, "bytes_up_per_param": up / d, "server_peak_bytes": 8 * d,
        "error": 1e-8, "error_within_bound": True,
        "client_ratio_vs_plaintext": client_s / baseline_s, "server_ratio_vs_plaintext": server_s / baseline_s,
    }


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    out = []
    for n in (4, 8, 16):
        for d in (8192, 32768, 1 << 22):
            base = 1e-9 * d  # plaintext: microseconds, then milliseconds at 4M
            out.append(_row("plaintext", n, d, client_s=base, server_s=base * n, baseline_s=base))
            for bits in (32, 64):  # secagg's 64-bit ring and dropout rows are fitted too
                for dropout in (0.0, 0.25):
                    s = 1e-8 * d * (1 + n / 10) * (bits / 32) * (1 + dropout)
                    out.append(_row("secagg", n, d, dropout=dropout, bits=bits, client_s=s, server_s=s * n,
                                    baseline_s=base))
            out.append(_row("ckks", n, d, client_s=2e-7 * d + 0.01, server_s=1e-7 * d * n, baseline_s=base))
    out.append({**out[0], "status": "skipped: the he extra is not installed", "protection": "tenseal"})
    return out


def test_table_is_under_120_columns_without_nan_or_microsecond_ratios(rows: list[dict]) -> None:
    lines = report.table_lines(rows)
    assert max(len(line) for line in lines) <= 120
    text = "\n".join(lines)
    assert "nan" not in text.lower() and "skipped: the he extra is not installed" in text
    for row, line in zip(rows, lines[2:]):
        if row["status"] != "ok" or row["protection"] == "plaintext":
            continue
        ratios = line.split()[-2:]
        baseline = row["client_s_median"] / row["client_ratio_vs_plaintext"]
        if baseline < report.RATIO_MIN_BASELINE_S:
            assert ratios == ["-", "-"], line
        else:
            assert all(r.endswith("x") for r in ratios), line


def test_deviation_percentages_never_print_nan() -> None:
    assert _percent(math.nan) == "-" and _percent(0.123) == "12%"


def test_model_vs_measured_keeps_every_fitted_cell(rows: list[dict]) -> None:
    models = costmodel.fit(rows, holdout=False)
    for quantity in ("client_s", "server_s"):
        points = report.model_points(rows, models, quantity)
        assert set(points) == set(models) == {"plaintext", "secagg", "ckks"}
        for protection, (measured, modelled) in points.items():
            assert len(measured) == len(modelled) == models[protection].cells
            assert all(m > 0 for m in measured)


def test_every_protection_has_its_own_colour_and_marker() -> None:
    colours = [c for c, _ in report._STYLE.values()]
    markers = [m for _, m in report._STYLE.values()]
    assert len(set(colours)) == len(colours) and len(set(markers)) == len(markers)
    from fedcrypt.bench.cells import PROTECTIONS

    assert set(PROTECTIONS) <= set(report._STYLE)


def test_plots_are_written(rows: list[dict], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = report.plot_all(rows, costmodel.fit(rows, holdout=False), tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        ["time_vs_d.png", "time_vs_n.png", "bytes_per_param.png", "model_vs_measured.png", "model_extrapolation.png"])
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
