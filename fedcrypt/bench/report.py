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

from .costmodel import FittedModel, QUANTITIES, sweep, traffic_expansion
from .matrix import COLUMNS

__all__ = ["machine", "print_table", "write_csv", "write_json", "plot_all"]


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
        return f"{v * 1e3:.1f}ms" if v < 1 else f"{v:.2f}s"
    if kind == "B":
        v = float(value)
        for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if v >= size:
                return f"{v / size:.1f}{unit}"
        return f"{v:.0f}B"
    if kind == "x":
        return f"{float(value):.1f}x"
    if kind == "e":
        return f"{float(value):.1e}"
    return str(value)


def print_table(rows: Sequence[Mapping[str, Any]], file: Any = None) -> None:
    """The terminal table: one line per cell."""
    out = file or sys.stdout
    header = (f"{'protection':<15}{'n':>5}{'d':>11}{'k':>5}{'drop':>6}{'bits':>5}{'dp':>4}"
              f"{'client':>10}{'(spread)':>17}{'cpu':>9}{'server':>10}{'cpu':>9}{'up':>9}{'down':>9}{'B/param':>8}"
              f"{'mem':>9}{'error':>9}{'ok':>4}{'cl/pt':>9}{'sv/pt':>8}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['protection']:<15}{r['n']:>5}{r['d']:>11,}{r['k']:>5}{r['dropout']:>6}{r['bits']!s:>5}"
                  f"{r['dp']:>4}  {r['status']}", file=out)
            continue
        spread = f"{_fmt(r['client_s_min'], 's')}-{_fmt(r['client_s_max'], 's')}"
        print(f"{r['protection']:<15}{r['n']:>5}{r['d']:>11,}{r['k']:>5}{r['dropout']:>6}{r['bits']!s:>5}{r['dp']:>4}"
              f"{_fmt(r['client_s_median'], 's'):>10}{spread:>17}{_fmt(r['client_cpu_s_median'], 's'):>9}"
              f"{_fmt(r['server_s_median'], 's'):>10}{_fmt(r['server_cpu_s_median'], 's'):>9}"
              f"{_fmt(r['bytes_up'], 'B'):>9}{_fmt(r['bytes_down'], 'B'):>9}{r['bytes_up_per_param']:>8.2f}"
              f"{_fmt(r['server_peak_bytes'], 'B'):>9}{_fmt(r['error'], 'e'):>9}"
              f"{'yes' if r['error_within_bound'] else 'NO':>4}"
              f"{_fmt(r['client_ratio_vs_plaintext'], 'x'):>9}{_fmt(r['server_ratio_vs_plaintext'], 'x'):>8}", file=out)


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


_STYLE = {
    "plaintext": ("black", "o"), "secagg": ("tab:blue", "s"), "secagg+": ("tab:green", "^"),
    "flower-secagg+": ("tab:orange", "v"), "ckks": ("tab:purple", "D"), "tenseal": ("tab:red", "x"),
    "verified": ("tab:brown", "P"),
}


def _ok(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r["status"] == "ok" and r["dp"] == "off" and str(r["bits"]) in ("", "32")]


def _series(rows: Sequence[Mapping[str, Any]], axis: str, fixed: str) -> dict[tuple[str, Any], list[Mapping[str, Any]]]:
    out: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
    for r in _ok(rows):
        if float(r["dropout"]) != 0.0:
            continue
        out.setdefault((str(r["protection"]), r[fixed]), []).append(r)
    return {key: sorted(v, key=lambda r: r[axis]) for key, v in out.items() if len({r[axis] for r in v}) >= 1}


def plot_all(rows: Sequence[Mapping[str, Any]], models: Mapping[str, FittedModel], out: Path, *,
             extrapolate_n: int = 10_000, extrapolate_d: float = 4e7) -> list[Path]:
    """Write the PNG plots; returns their paths (none when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []

    def save(fig: Any, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    # measured time vs d (per n) and vs n (per d), log-log
    for axis, fixed, name in (("d", "n", "time_vs_d.png"), ("n", "d", "time_vs_n.png")):
        series = _series(rows, axis, fixed)
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for (protection, fixed_value), group in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            colour, marker = _STYLE.get(protection, ("grey", "."))
            xs = [r[axis] for r in group]
            label = f"{protection} ({fixed}={fixed_value:,})"
            axes[0].plot(xs, [r["client_s_median"] for r in group], marker=marker, color=colour, label=label, alpha=0.8)
            axes[1].plot(xs, [r["server_s_median"] for r in group], marker=marker, color=colour, label=label, alpha=0.8)
        for ax, title in zip(axes, ("client time per step (median)", "server time per step (median)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(axis)
            ax.set_ylabel("seconds")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
        axes[1].legend(fontsize=6, ncol=2)
        save(fig, name)

    # bytes per parameter by protection (measured)
    ok = [r for r in _ok(rows) if float(r["dropout"]) == 0.0]
    if ok:
        largest = max(r["d"] for r in ok)
        at = {}
        for r in ok:
            if r["d"] == largest:
                at.setdefault(r["protection"], r)
        fig, ax = plt.subplots(figsize=(7, 4))
        names = list(at)
        up = [at[p]["bytes_up_per_param"] for p in names]
        down = [float(at[p]["bytes_down"]) / largest for p in names]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], up, width=0.4, label="up", color=[_STYLE.get(p, ("grey", ""))[0] for p in names])
        ax.bar([x + 0.2 for x in xs], down, width=0.4, label="down", color="lightgrey")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=20)
        ax.set_ylabel("bytes per parameter")
        ax.set_title(f"traffic per client at d={largest:,} (n={at[names[0]]['n']})")
        ax.legend()
        save(fig, "bytes_per_param.png")

    # cost model: measured vs model, and extrapolation
    if models:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for protection, model in models.items():
            colour, marker = _STYLE.get(protection, ("grey", "."))
            for ax, quantity in zip(axes, ("client_s", "server_s")):
                measured = [float(r[QUANTITIES[quantity]]) for r in _ok(rows) if r["protection"] == protection]
                devs = model.deviations.get(quantity, [])
                if len(devs) == len(measured) and measured:
                    ax.scatter(measured, [m * (1 + e) for m, e in zip(measured, devs)], color=colour, marker=marker,
                               label=protection, s=18)
        for ax, quantity in zip(axes, ("client", "server")):
            lo, hi = ax.get_xlim()
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.plot([lo, hi], [lo * 1.25, hi * 1.25], "k:", lw=0.6)
            ax.plot([lo, hi], [lo * 0.75, hi * 0.75], "k:", lw=0.6)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"measured {quantity} CPU s (median)")
            ax.set_ylabel(f"model {quantity} CPU s")
            ax.set_title(f"cost model vs measured ({quantity}); dotted: +-25%")
            ax.legend(fontsize=7)
        save(fig, "model_vs_measured.png")

        ns = sorted({int(round(10 ** (x / 4))) for x in range(4, 4 * int(math.log10(extrapolate_n)) + 1)})
        ds = [10 ** (x / 4) for x in range(16, 4 * int(math.ceil(math.log10(extrapolate_d))) + 1)]
        ds = sorted({*(min(v, extrapolate_d) for v in ds), extrapolate_d})
        by_n = sweep(models, "n", ns, n=0, d=extrapolate_d)
        by_d = sweep(models, "d", ds, n=1000, d=0)
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        for protection in models:
            colour, marker = _STYLE.get(protection, ("grey", "."))
            axes[0].plot([p["n"] for p in by_n[protection]], [p["server_s"] for p in by_n[protection]], color=colour, label=protection)
            axes[1].plot([p["d"] for p in by_d[protection]], [p["client_s"] for p in by_d[protection]], color=colour, label=protection)
            axes[2].plot([p["n"] for p in by_n[protection]], [p["bytes_up"] / extrapolate_d for p in by_n[protection]],
                         color=colour, label=protection)
        axes[0].set_title(f"model: server CPU s per step vs n (d={extrapolate_d:.0e})")
        axes[1].set_title("model: client CPU s per step vs d (n=1000)")
        axes[2].set_title(f"model: upload bytes/param vs n (d={extrapolate_d:.0e})")
        for ax, xl in zip(axes, ("n", "d", "n")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xl)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=7)
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
                "n": 1024, "d": 1 << 20,
                "expansion_vs_32bit_input": traffic_expansion(models[protection], 1024, 1 << 20, 32),
            }
    return {"models": summary, "extrapolated": points, "bonawitz_2017_expansion_at_2^10_users_2^20_dims": bonawitz}
