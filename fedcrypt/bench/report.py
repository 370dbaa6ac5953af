"""Output of a benchmark run: terminal table, CSV, JSON and PNG plots.

Invariants: every file of a run is written into one output directory and the JSON carries
the exact command line, the machine, its load averages before and after, and every row,
so that any figure quoted elsewhere can be traced to the run that produced it. Plots are
drawn only from the rows and the fitted model of that same run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from .costmodel import QUANTITIES, FittedModel, sweep, traffic_expansion
from .matrix import COLUMNS

__all__ = ["machine", "print_table", "table_lines", "write_csv", "write_json", "plot_all"]


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how loaded it was."""
    import numpy

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": numpy.__version__,
    }
    for name in ("cryptography", "tenseal", "flwr"):
        try:
            from importlib.metadata import version

            info[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            info[name] = None
    return info


def load_average() -> list[float] | None:
    """``os.getloadavg()`` where the platform has it."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _fmt(value: Any, kind: str) -> str:
    if value == "" or value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "s":
        v = float(value)
        if v < 1e-3:
            return f"{v * 1e6:.0f}us"
        return f"{v * 1e3:.1f}ms" if v < 1 else f"{v:.2f}s"
    if kind == "B":
        v = float(value)
        for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if v >= size:
                return f"{v / size:.1f}{unit}"
        return f"{v:.0f}B"
    if kind == "x":
        v = float(value)
        return f"{v:.1f}x" if v < 100 else f"{v:,.0f}x"
    if kind == "e":
        return f"{float(value):.1e}"
    return str(value)


#: a ratio against plaintext is printed only where plaintext's time reaches this: against a few
#: microseconds it measures Python call overhead, not the protection
RATIO_MIN_BASELINE_S = 1e-3

#: (title, width) of the terminal table's columns; the CSV and JSON keep every column
_TABLE = (
    ("protection", 15),
    ("n", 6),
    ("d", 10),
    ("k", 5),
    ("drop", 5),
    ("ring", 6),
    ("client", 9),
    ("server", 9),
    ("up", 8),
    ("down", 8),
    ("B/par", 6),
    ("srv mem", 8),
    ("max err", 9),
    ("cl/pt", 7),
    ("sv/pt", 7),
)


def _ratio(row: Mapping[str, Any], side: str) -> str:
    ratio = row.get(f"{side}_ratio_vs_plaintext")
    if ratio in ("", None) or not math.isfinite(float(ratio)) or float(ratio) <= 0:
        return "-"
    baseline = float(row[f"{side}_s_median"]) / float(ratio)
    return _fmt(ratio, "x") if baseline >= RATIO_MIN_BASELINE_S else "-"


def _line(cells: Sequence[str]) -> str:
    return "".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, (_, w)) in enumerate(zip(cells, _TABLE)))


def table_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The terminal table's lines (header, rule, one line per cell, the legend), each under 120 columns.

    Times are wall-clock medians per step; ``ring`` is the bits of the ring (``+dp`` with
    distributed DP); ``max err`` ends in ``!`` when it broke its documented bound;
    ``cl/pt`` and ``sv/pt`` compare with the plaintext cell of the same n and d, shown
    only where plaintext took at least :data:`RATIO_MIN_BASELINE_S`; failed cells say why.
    """
    header = _line([title for title, _ in _TABLE])
    lines = [header, "-" * len(header)]
    for r in rows:
        k = "-" if r["k"] in ("", None) else str(r["k"])
        ring = f"{r['bits'] or '-'}{'+dp' if r['dp'] == 'on' else ''}"
        head = [str(r["protection"]), str(r["n"]), f"{r['d']:,}", k, f"{float(r['dropout']):.2g}", ring]
        if r["status"] != "ok":
            lines.append(_line(head) + f"  {r['status']}")
            continue
        error = _fmt(r["error"], "e") + ("" if r["error_within_bound"] else "!")
        lines.append(
            _line(
                head
                + [
                    _fmt(r["client_s_median"], "s"),
                    _fmt(r["server_s_median"], "s"),
                    _fmt(r["bytes_up"], "B"),
                    _fmt(r["bytes_down"], "B"),
                    f"{float(r['bytes_up_per_param']):.2f}",
                    _fmt(r["server_peak_bytes"], "B"),
                    error,
                    _ratio(r, "client"),
                    _ratio(r, "server"),
                ]
            )
        )
    lines.append("times: wall-clock medians per step; cl/pt, sv/pt: over plaintext at the same n and d, where")
    lines.append(f"plaintext takes >= {RATIO_MIN_BASELINE_S * 1e3:g} ms ('-' otherwise); '!': error above its bound")
    return lines


def print_table(rows: Sequence[Mapping[str, Any]], file: Any = None) -> None:
    """Print :func:`table_lines`."""
    for line in table_lines(rows):
        print(line, file=file or sys.stdout)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``rows`` as CSV with :data:`~fedcrypt.bench.matrix.COLUMNS` in order."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def write_json(payload: Mapping[str, Any], path: Path) -> Path:
    """The whole run (command, machine, load, rows, model) as JSON (NaN written as null)."""
    path.write_text(json.dumps(_jsonable(dict(payload)), indent=2, sort_keys=True))
    return path


#: one colour and one marker per protection, none shared (colour-blind-safe tab10 hues)
_STYLE = {
    "plaintext": ("black", "o"),
    "secagg": ("tab:blue", "s"),
    "secagg+": ("tab:green", "^"),
    "flower-secagg+": ("tab:orange", "v"),
    "ckks": ("tab:purple", "D"),
    "tenseal": ("tab:red", "X"),
    "verified": ("tab:brown", "P"),
}
#: line styles that tell apart the series of one protection (one per value of n or d)
_DASHES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
_AXIS_LABELS = {"d": "d, parameters per client update", "n": "n, clients"}


def _style(protection: str) -> tuple[str, str]:
    return _STYLE.get(protection, ("grey", "."))


def _ok(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r["status"] == "ok" and r["dp"] == "off" and str(r["bits"]) in ("", "32")]


def _series(rows: Sequence[Mapping[str, Any]], axis: str, fixed: str) -> dict[tuple[str, Any], list[Mapping[str, Any]]]:
    out: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
    for r in _ok(rows):
        if float(r["dropout"]) != 0.0:
            continue
        out.setdefault((str(r["protection"]), r[fixed]), []).append(r)
    return {key: sorted(v, key=lambda r: r[axis]) for key, v in out.items() if len({r[axis] for r in v}) >= 1}


def model_points(rows: Sequence[Mapping[str, Any]], models: Mapping[str, FittedModel], quantity: str) -> dict[str, tuple[list[float], list[float]]]:
    """protection -> (measured, model) for ``quantity`` over every cell the model was fitted to
    (status ok, DP off, a positive measurement: every ring size and dropout rate)."""
    from .costmodel import predict

    column = QUANTITIES[quantity]
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        model = models.get(str(r["protection"]))
        if model is None or r["status"] != "ok" or r["dp"] != "off" or float(r[column] or 0) <= 0:
            continue
        k = None if r["k"] in ("", None) else float(r["k"])
        predicted = predict(model, n=float(r["n"]), d=float(r["d"]), k=k, dropout=float(r["dropout"]), bits=int(r["bits"] or 32))[quantity]
        measured, modelled = out.setdefault(str(r["protection"]), ([], []))
        measured.append(float(r[column]))
        modelled.append(predicted)
    return out


def plot_all(
    rows: Sequence[Mapping[str, Any]],
    models: Mapping[str, FittedModel],
    out: Path,
    *,
    extrapolate_n: int = 10_000,
    extrapolate_d: float = 4e7,
) -> list[Path]:
    """Write the PNG plots; returns their paths (none when matplotlib is missing).

    Every plot: one colour and marker per protection, a line style per value of the
    variable held fixed, log axes (the values span decades), labelled axes with units, and
    legends outside the axes.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError:
        return []
    paths = []

    def save(fig: Any, name: str) -> None:
        path = out / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)

    def protection_handles(protections: Sequence[str], line: bool = True) -> list[Any]:
        return [Line2D([], [], color=_style(p)[0], marker=_style(p)[1], linestyle="-" if line else "none", label=p) for p in protections]

    def log_axes(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)

    # measured time vs d (one line per n) and vs n (one line per d), log-log
    for axis, fixed, name in (("d", "n", "time_vs_d.png"), ("n", "d", "time_vs_n.png")):
        series = _series(rows, axis, fixed)
        if not series:
            continue
        protections = sorted({p for p, _ in series}, key=lambda p: list(_STYLE).index(p) if p in _STYLE else 99)
        fixed_values = sorted({v for _, v in series})
        dash = {v: _DASHES[i % len(_DASHES)] for i, v in enumerate(fixed_values)}
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        for (protection, fixed_value), group in series.items():
            colour, marker = _style(protection)
            xs = [r[axis] for r in group]
            for ax, side in zip(axes, ("client", "server")):
                ax.plot(
                    xs,
                    [r[f"{side}_s_median"] for r in group],
                    marker=marker,
                    color=colour,
                    linestyle=dash[fixed_value],
                    markersize=5,
                    alpha=0.9,
                )
        measured_at = sorted({r[axis] for group in series.values() for r in group})
        for ax, side in zip(axes, ("client", "server")):
            log_axes(ax, _AXIS_LABELS[axis], "wall-clock seconds per step (median)", f"{side}: time per aggregation step")
            if len(measured_at) <= 8:  # label the measured sizes themselves, not powers of ten
                ax.set_xticks(measured_at, [f"{v:,}" for v in measured_at])
                ax.set_xticks([], minor=True)
        fig.legend(handles=protection_handles(protections), title="protection", loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8)
        fixed_handles = [Line2D([], [], color="dimgrey", linestyle=dash[v], label=f"{fixed} = {v:,}") for v in fixed_values]
        fig.legend(handles=fixed_handles, title="line style", loc="lower left", bbox_to_anchor=(1.0, 0.05), fontsize=8)
        fig.tight_layout()
        save(fig, name)

    # bytes per parameter by protection (measured), upload and download
    ok = [r for r in _ok(rows) if float(r["dropout"]) == 0.0]
    if ok:
        largest = max(r["d"] for r in ok)
        at: dict[str, Mapping[str, Any]] = {}
        for r in ok:
            if r["d"] == largest:
                at.setdefault(r["protection"], r)
        fig, ax = plt.subplots(figsize=(8, 4.2))
        names = list(at)
        up = [float(at[p]["bytes_up_per_param"]) for p in names]
        down = [float(at[p]["bytes_down"]) / largest for p in names]
        xs = list(range(len(names)))
        colours = [_style(p)[0] for p in names]
        ax.bar([x - 0.2 for x in xs], up, width=0.4, color=colours)
        ax.bar([x + 0.2 for x in xs], down, width=0.4, color=colours, alpha=0.45, hatch="//", edgecolor="white")
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("bytes per parameter (log)")
        ax.set_title(f"traffic per client at d = {largest:,}, n = {at[names[0]]['n']}", fontsize=10)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.set_axisbelow(True)
        for x, value in zip(xs, down):
            if value <= 0:  # nothing to draw on a log axis: say so
                ax.annotate("0", (x + 0.2, 0), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=8, color="dimgrey")
        fig.legend(
            handles=[
                Patch(color="dimgrey", label="upload"),
                Patch(facecolor="dimgrey", alpha=0.45, hatch="//", edgecolor="white", label="download"),
            ],
            loc="upper left",
            bbox_to_anchor=(1.0, 0.9),
            fontsize=8,
        )
        fig.tight_layout()
        save(fig, "bytes_per_param.png")

    # cost model: measured vs model (every fitted cell), and extrapolation
    if models:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        shown: list[str] = []
        for ax, side in zip(axes, ("client", "server")):
            points = model_points(rows, models, f"{side}_s")
            for protection, (measured, modelled) in points.items():
                colour, marker = _style(protection)
                ax.scatter(measured, modelled, color=colour, marker=marker, s=22, alpha=0.85)
                if protection not in shown:
                    shown.append(protection)
            values = [v for m, p in points.values() for v in (*m, *p)]
            if values:
                lo, hi = min(values) / 1.5, max(values) * 1.5
                ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
                ax.plot([lo, hi], [lo * 1.25, hi * 1.25], "k:", lw=0.6)
                ax.plot([lo, hi], [lo * 0.75, hi * 0.75], "k:", lw=0.6)
                ax.set_xlim(lo, hi)
                ax.set_ylim(lo, hi)
            log_axes(
                ax,
                f"measured {side} CPU seconds per step (median)",
                f"cost model's {side} CPU seconds",
                f"{side}: cost model vs measured (dashed: equal; dotted: +-25%)",
            )
        fig.legend(
            handles=protection_handles(shown, line=False),
            title="protection",
            loc="upper left",
            bbox_to_anchor=(1.0, 0.95),
            fontsize=8,
        )
        fig.tight_layout()
        save(fig, "model_vs_measured.png")

        ns = sorted({int(round(10 ** (x / 4))) for x in range(4, 4 * int(math.log10(extrapolate_n)) + 1)})
        ds = [10 ** (x / 4) for x in range(16, 4 * int(math.ceil(math.log10(extrapolate_d))) + 1)]
        ds = sorted({*(min(v, extrapolate_d) for v in ds), extrapolate_d})
        by_n = sweep(models, "n", ns, n=0, d=extrapolate_d)
        by_d = sweep(models, "d", ds, n=1000, d=0)
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
        for i, protection in enumerate(models):
            colour, marker = _style(protection)
            # markers at staggered points, so that lines drawn on top of each other stay told apart
            style = {"color": colour, "marker": marker, "markevery": (i % 4, 4), "markersize": 5}
            axes[0].plot([p["n"] for p in by_n[protection]], [p["server_s"] for p in by_n[protection]], **style)
            axes[1].plot([p["d"] for p in by_d[protection]], [p["client_s"] for p in by_d[protection]], **style)
            axes[2].plot([p["n"] for p in by_n[protection]], [p["bytes_up"] / extrapolate_d for p in by_n[protection]], **style)
        log_axes(axes[0], _AXIS_LABELS["n"], "server CPU seconds per step", f"model: server time vs n (d = {extrapolate_d:.0e})")
        log_axes(axes[1], _AXIS_LABELS["d"], "client CPU seconds per step", "model: client time vs d (n = 1000)")
        log_axes(axes[2], _AXIS_LABELS["n"], "upload bytes per parameter", f"model: client upload vs n (d = {extrapolate_d:.0e})")
        fig.legend(
            handles=protection_handles(list(models)),
            title="protection (fitted model)",
            loc="upper left",
            bbox_to_anchor=(1.0, 0.95),
            fontsize=8,
        )
        fig.tight_layout()
        save(fig, "model_extrapolation.png")
    return paths


def model_summary(models: Mapping[str, FittedModel]) -> dict[str, Any]:
    """Fitted formulas, deviations, the extrapolated points and the papers' comparable figures."""
    summary: dict[str, Any] = {p: m.to_json() for p, m in models.items()}
    points = []
    for protection, model in models.items():
        from .costmodel import predict

        for n, d in ((1000, 4e7), (10_000, 4e7), (10_000, 4_194_304)):
            points.append({"protection": protection, "n": n, "d": d, **predict(model, n=n, d=d)})
    bonawitz = {}
    for protection in ("secagg", "secagg+", "flower-secagg+"):
        if protection in models:
            bonawitz[protection] = {
                "n": 1024,
                "d": 1 << 20,
                "expansion_vs_32bit_input": traffic_expansion(models[protection], 1024, 1 << 20, 32),
            }
    return {"models": summary, "extrapolated": points, "bonawitz_2017_expansion_at_2^10_users_2^20_dims": bonawitz}
