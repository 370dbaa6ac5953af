"""Render docs/performance.md's measured sections from one ``fedcrypt bench`` run.

Usage: python -m benchmarks.matrix RESULTS_DIR [--doc docs/performance.md] [--img docs/img]

``RESULTS_DIR`` is the ``--out`` directory of a ``fedcrypt bench`` run (``results.json`` and
the PNG plots). Every table and figure in the document between the markers
``<!-- BEGIN bench:NAME -->`` and ``<!-- END bench:NAME -->`` is rewritten from that JSON,
with the command that produced it; nothing between the markers is typed by hand. The
plots are copied to ``--img``. Prose outside the markers is left as it is.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLOTS = ("time_vs_d.png", "time_vs_n.png", "bytes_per_param.png", "model_vs_measured.png", "model_extrapolation.png")

#: the papers' headline figures quoted beside ours (facts from the papers, not measurements)
BONAWITZ_2017_EXPANSION = 1.73  # 2^10 users, 2^20-dimensional vectors (CCS 2017, Sec. 7)


def _s(value: Any) -> str:
    if value in ("", None):
        return "-"
    v = float(value)
    if math.isnan(v):
        return "-"
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def _b(value: Any) -> str:
    if value in ("", None):
        return "-"
    v = float(value)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.2f} {unit}"
    return f"{v:.0f} B"


def _x(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}x"


def _spread(row: dict, what: str) -> str:
    return f"{_s(row[f'{what}_s_median'])} ({_s(row[f'{what}_s_min'])}–{_s(row[f'{what}_s_max'])})"


def _cpu(theirs: dict, ours: dict, what: str) -> str:
    """The ratio of CPU-time medians (less sensitive to the machine's load than wall time)."""
    a, b = theirs.get(f"{what}_cpu_s_median"), ours.get(f"{what}_cpu_s_median")
    if a in ("", None) or b in ("", None) or not b:
        return "-"
    return _x(a / b)


def _find(rows: list[dict], **match: Any) -> dict | None:
    for row in rows:
        if row["status"] == "ok" and row["dp"] == "off" and all(row[k] == v for k, v in match.items()):
            if row["protection"] in ("secagg", "secagg+", "flower-secagg+") and str(row["bits"]) != "32":
                continue
            return row
    return None


def block_run(data: dict, source: str) -> str:
    m = data["machine"]
    return "\n".join([
        f"Command: `{data['command']}` (UTC {data['utc']}, wall {data['wall_s']:.0f} s, {data['repeats']} timed repeats per cell, median and min–max shown).",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, Python {m['python']}, NumPy {m['numpy']}, "
        f"cryptography {m.get('cryptography')}, TenSEAL {m.get('tenseal')}, Flower {m.get('flwr')}.",
        f"Load average (1, 5, 15 min) before the run: {data['load_average_before']}; after: {data['load_average_after']} "
        "— the machine is shared, so absolute times are inflated by the load; the ratios are measured side by side "
        "(interleaved repeats) and are the figures to read.",
        f"Rendered from `{source}` by `python -m benchmarks.matrix`.",
    ])


def block_secagg(data: dict) -> str:
    rows = data["rows"]
    lines = [
        "| d | dropout | k | fedcrypt SecAgg+ client | Flower SecAgg+ client | Flower/ours (CPU) | fedcrypt server | Flower server | Flower/ours (CPU) | up B/param ours / Flower |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in sorted({r["d"] for r in rows}):
        for dropout in sorted({r["dropout"] for r in rows}):
            ours = _find(rows, protection="secagg+", n=10, d=d, dropout=dropout)
            theirs = _find(rows, protection="flower-secagg+", n=10, d=d, dropout=dropout)
            if not ours or not theirs:
                continue
            lines.append(
                f"| {d:,} | {dropout} | {ours['k']} | {_spread(ours, 'client')} | {_spread(theirs, 'client')} | "
                f"{_x(theirs['client_s_median'] / ours['client_s_median'])} ({_cpu(theirs, ours, 'client')}) | "
                f"{_spread(ours, 'server')} | {_spread(theirs, 'server')} | "
                f"{_x(theirs['server_s_median'] / ours['server_s_median'])} ({_cpu(theirs, ours, 'server')}) | "
                f"{ours['bytes_up_per_param']:.3f} / {theirs['bytes_up_per_param']:.3f} |")
    return "\n".join(lines)


def block_he(data: dict) -> str:
    rows = data["rows"]
    lines = [
        "| d | n | fedcrypt encrypt | TenSEAL encrypt+serialize | TenSEAL/ours | B/value ours / TenSEAL | client step ours / TenSEAL (CPU ratio) | server ours / TenSEAL (CPU ratio) | max error ours (bound) / TenSEAL |",
        "|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for d in sorted({r["d"] for r in rows}):
        for n in sorted({r["n"] for r in rows}):
            ours = _find(rows, protection="ckks", n=n, d=d, dropout=0.0)
            theirs = _find(rows, protection="tenseal", n=n, d=d, dropout=0.0)
            if not ours or not theirs:
                continue
            lines.append(
                f"| {d:,} | {n} | {_s(ours['encrypt_s_median'])} | {_s(theirs['encrypt_s_median'])} | "
                f"{_x(theirs['encrypt_s_median'] / ours['encrypt_s_median'])} | "
                f"{ours['bytes_up_per_param']:.2f} / {theirs['bytes_up_per_param']:.2f} | "
                f"{_s(ours['client_s_median'])} / {_s(theirs['client_s_median'])} ({_cpu(theirs, ours, 'client')}) | "
                f"{_s(ours['server_s_median'])} / {_s(theirs['server_s_median'])} ({_cpu(theirs, ours, 'server')}) | "
                f"{ours['error']:.1e} ({ours['error_bound']:.1e}) / {theirs['error']:.1e} |")
    return "\n".join(lines)


def block_cells(data: dict) -> str:
    lines = [
        "| protection | n | d | k | dropout | bits | DP | client (min–max) | server (min–max) | up | down | B/param | server peak mem | error (bound) | client / plain | server / plain |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in data["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['protection']} | {r['n']} | {r['d']:,} | {r['k']} | {r['dropout']} | {r['bits']} | {r['dp']} | "
                         f"{r['status']} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['protection']} | {r['n']} | {r['d']:,} | {r['k']} | {r['dropout']} | {r['bits'] or '-'} | {r['dp']} | "
            f"{_spread(r, 'client')} | {_spread(r, 'server')} | {_b(r['bytes_up'])} | {_b(r['bytes_down'])} | "
            f"{r['bytes_up_per_param']:.3f} | {_b(r['server_peak_bytes'])} | {r['error']:.1e} ({r['error_bound']:.1e}) | "
            f"{_x(r['client_ratio_vs_plaintext'])} | {_x(r['server_ratio_vs_plaintext'])} |")
    return "\n".join(lines)


def block_model(data: dict) -> str:
    models = data["cost_model"]["models"]
    lines = ["| protection | cells | quantity | fitted formula | max \\|model/measured − 1\\| | within 25% | leave-one-out max |",
             "|---|---:|---|---|---:|---|---:|"]
    for protection, model in models.items():
        for quantity, formula in model["formulas"].items():
            dev = model["max_abs_deviation"].get(quantity)
            loo = model.get("max_abs_holdout_deviation", {}).get(quantity)
            within = "-" if dev is None else ("yes" if dev <= 0.25 else "**no**")
            lines.append(f"| {protection} | {model['cells']} | {quantity} | `{formula}` | "
                         f"{'-' if dev is None else f'{dev:.0%}'} | {within} | {'-' if loo is None else f'{loo:.0%}'} |")
    lines += ["", "Extrapolated by the fitted model (one aggregation step, no dropout):", "",
              "| protection | n | d | client | server | up per client | down per client |", "|---|---:|---:|---:|---:|---:|---:|"]
    for p in data["cost_model"]["extrapolated"]:
        lines.append(f"| {p['protection']} | {p['n']:,} | {p['d']:.3g} | {_s(p['client_s'])} | {_s(p['server_s'])} | "
                     f"{_b(p['bytes_up'])} | {_b(p['bytes_down'])} |")
    return "\n".join(lines)


def block_papers(data: dict) -> str:
    expansion = data["cost_model"]["bonawitz_2017_expansion_at_2^10_users_2^20_dims"]
    lines = ["| figure | paper | ours (fitted model of this run) |", "|---|---|---|"]
    for protection, entry in expansion.items():
        lines.append(f"| upload expansion, n = 2^10, d = 2^20, {protection} (k = {'n−1' if protection == 'secagg' else '2⌈log2 n⌉'}) "
                     f"| {BONAWITZ_2017_EXPANSION}x over sending the data in the clear (Bonawitz et al. 2017) | "
                     f"{entry['expansion_vs_32bit_input']:.4f}x over the 32-bit ring input |")
    points = {(p["protection"], p["n"], p["d"]): p for p in data["cost_model"]["extrapolated"]}
    full, plus = points.get(("secagg", 10_000, 4e7)), points.get(("secagg+", 10_000, 4e7))
    if full and plus:
        lines.append(f"| SecAgg over SecAgg+ cost, n = 10,000, d = 4e7 | Bell et al. 2020: per client O(n + d) "
                     f"communication and O(n^2 + n d) computation for SecAgg vs O(log n + d) and O(log^2 n + d log n) "
                     f"for SecAgg+ | client time {_x(full['client_s'] / plus['client_s'])}, server time "
                     f"{_x(full['server_s'] / plus['server_s'])}, upload {full['bytes_up'] / plus['bytes_up']:.4f}x |")
    return "\n".join(lines)


def _other(name: str) -> dict | None:
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _when(payload: dict) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(payload.get("unix_time", 0)))


def block_targets(data: dict) -> str:
    """The secagg and he issues' targets: this run's figures, and the dedicated benchmarks' (with their commands)."""
    rows = [r for r in data["rows"] if r["status"] == "ok" and r["dp"] == "off"]
    here = f"this run (`{data['command']}`)"
    lines = ["| issue | target | measured | where from |", "|---|---|---|---|"]
    pairs = []
    for r in rows:
        if r["protection"] == "secagg+" and r["n"] == 10 and str(r["bits"]) == "32":
            other = _find(rows, protection="flower-secagg+", n=10, d=r["d"], dropout=r["dropout"])
            if other:
                pairs.append((r, other))
    if pairs:
        client = [o["client_cpu_s_median"] / r["client_cpu_s_median"] for r, o in pairs if r.get("client_cpu_s_median")]
        server = [o["server_cpu_s_median"] / r["server_cpu_s_median"] for r, o in pairs if r.get("server_cpu_s_median")]
        if client and server:
            lines.append(f"| secagg | whole step >= 5x faster than Flower SecAgg+ (the target is set on masking and unmasking; see below) "
                         f"| client {min(client):.1f}x–{max(client):.1f}x, server {min(server):.1f}x–{max(server):.1f}x (CPU time) | {here} |")
    masking = [r for r in rows if r["protection"] in ("secagg", "secagg+") and str(r["bits"]) == "32"]
    if masking:
        worst = max(r["bytes_up_per_param"] for r in masking if r["d"] == max(m["d"] for m in masking))
        lines.append(f"| secagg | upload 4 bytes per parameter at bits=32, plus a constant | {worst:.4f} B/param at d = "
                     f"{max(m['d'] for m in masking):,} | {here} |")
    secagg = _other("secagg")
    if secagg:
        src = f"`{secagg['command']}` ({_when(secagg)})"
        for r in secagg.get("masking", []):
            lines.append(f"| secagg | client masking >= 5x faster than Flower, >= 50% of raw AES-CTR throughput (n={r['n']}, k={r['k']}, d={r['d']:,}) "
                         f"| {r['speedup_vs_flower']:.1f}x faster, {r['fraction_of_raw_throughput']:.0%} of raw | {src} |")
        for r in secagg.get("unmasking", []):
            lines.append(f"| secagg | server unmasking >= 5x faster than Flower (n={r['n']}, k={r['k']}, d={r['d']:,}, {r['dropped']} dropped) "
                         f"| {r['speedup_vs_flower']:.1f}x | {src} |")
        if secagg.get("memory_ratio_traced") is not None:
            lines.append(f"| secagg | server peak memory at n=100 within 1.5x of n=10 (d=1e6) | traced {secagg['memory_ratio_traced']:.2f}x, "
                         f"RSS {secagg['memory_ratio_rss']:.2f}x | {src} |")
    he_pairs = [(r, _find(rows, protection="tenseal", n=r["n"], d=r["d"], dropout=0.0)) for r in rows if r["protection"] == "ckks"]
    he_pairs = [(a, b) for a, b in he_pairs if b]
    if he_pairs:
        lines.append(f"| he | upload <= 8.3 bytes per value | {max(a['bytes_up_per_param'] for a, _ in he_pairs):.2f} B/value "
                     f"(TenSEAL {min(b['bytes_up_per_param'] for _, b in he_pairs):.2f}) | {here} |")
        speed = [b["encrypt_s_median"] / a["encrypt_s_median"] for a, b in he_pairs]
        lines.append(f"| he | encryption >= 2x faster than `ts.ckks_vector` [60,40,40,60] | {min(speed):.1f}x–{max(speed):.1f}x "
                     f"(TenSEAL's includes `serialize()`) | {here} |")
    he = _other("he")
    if he:
        src = f"`{he['command']}` ({_when(he)})"
        for r in he.get("sizes", []):
            lines.append(f"| he | encryption >= 2x faster (without TenSEAL's serialize), <= 8.3 B/value, d={r['d']:,} | "
                         f"{r['encrypt_speedup_vs_tenseal_encrypt']:.1f}x, {r['fedcrypt_bytes_per_value']:.2f} B/value | {src} |")
        err = he.get("weighted_mean_max_abs_error", {})
        if err:
            lines.append(f"| he | max error of a 10-client weighted mean <= 1e-6 | {err['fedcrypt']:.1e} (bound {err['documented_bound']:.1e}; "
                         f"TenSEAL {err['tenseal']:.1e}) | {src} |")
    return "\n".join(lines)


def block_dp(data: dict) -> str:
    lines = ["| n | d | SecAgg+ client, DP off | DP on | on/off (CPU) | server off / on | up B/param off / on | error off / on (bound on) |",
             "|---:|---:|---|---|---:|---|---|---|"]
    for on in data["rows"]:
        if on["status"] != "ok" or on["dp"] != "on":
            continue
        off = _find(data["rows"], protection=on["protection"], n=on["n"], d=on["d"], dropout=on["dropout"])
        if not off:
            continue
        lines.append(f"| {on['n']} | {on['d']:,} | {_spread(off, 'client')} | {_spread(on, 'client')} | {_cpu(on, off, 'client')} | "
                     f"{_s(off['server_s_median'])} / {_s(on['server_s_median'])} | "
                     f"{off['bytes_up_per_param']:.3f} / {on['bytes_up_per_param']:.3f} | "
                     f"{off['error']:.1e} / {on['error']:.3g} ({on['error_bound']:.3g}) |")
    return "\n".join(lines)


def block_plots(data: dict, img: str) -> str:
    return "\n\n".join(f"![{name[:-4].replace('_', ' ')}]({img}/{name})" for name in PLOTS)


def render(results_dir: Path, doc: Path, img: Path) -> None:
    data = json.loads((results_dir / "results.json").read_text())
    try:
        source = str((results_dir / "results.json").resolve().relative_to(ROOT))
    except ValueError:
        source = "results.json of that run"
    img.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:
        if (results_dir / name).exists():
            shutil.copyfile(results_dir / name, img / name)
    rel_img = Path(*([".."] * 0)) / img.relative_to(doc.parent) if img.is_relative_to(doc.parent) else img
    blocks = {
        "run": block_run(data, "results.json"),
        "secagg": block_secagg(data),
        "he": block_he(data),
        "cells": block_cells(data),
        "model": block_model(data),
        "papers": block_papers(data),
        "targets": block_targets(data),
        "dp": block_dp(data),
        "plots": block_plots(data, str(rel_img)),
    }
    text = doc.read_text()
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- BEGIN bench:{name} -->\n).*?(<!-- END bench:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{doc}: no marker pair for bench:{name}")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    doc.write_text(text)
    print(f"rendered {len(blocks)} blocks into {doc} from {source}; plots in {img}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the --out directory of a fedcrypt bench run")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    render(args.results, args.doc.resolve(), args.img.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
