"""Complex packing (two reals per CKKS slot) against real packing (one), measured in one run.

Usage::

    .venv/bin/python -m benchmarks.he_packing single [--sizes 1130000 4190000] [--repeats 3]
    .venv310/bin/python -m benchmarks.he_packing threshold [--d 1130000] [--holders 10]

``single`` (``fedcrypt.he``, preset ``compact``), for each packing in the same process,
interleaved (real, complex, real, complex, ...) so both see the same machine load:

* upload bytes per value at every size, and encryption time per value (wall and process
  CPU, median of ``--repeats``); the ratio is complex over real;
* at the first size, 10 clients: the server's streaming sum of the 10 uploads (wall and
  CPU), and the max absolute error of the released (flooded) weighted mean against float64
  arithmetic, with weights drawn from 500..1000 applied by the clients (``w/1000 * x``, the
  weight itself encrypted in the last value, as the Flower path does; ``max_weight=1``).

``threshold`` (``fedcrypt.he.threshold``, OpenFHE), for each packing:

* upload bytes per value of presets ``compact`` and ``wide`` at ``--d``;
* the server's sum of ``--sum-uploads`` uploads at ``--d`` (preset ``wide``), wall and CPU;
* ``--holders`` key holders, 10 clients with weights 1..1000 (``wide``): the max absolute
  error of the decrypted weighted sum at ``--error-d`` values, beside the error model's bound.

Every figure is printed and written to ``benchmarks/results/he_packing_<part>.json`` with
the command line. One thread. ``report`` prints both results as the Markdown section of
``docs/performance.md`` (between its ``he-packing`` markers), each figure with its command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

from benchmarks._common import write_result

PACKINGS = ("real", "complex")


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds of each function, run in turn ``repeats`` times (after one warm-up)."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {
        name: {"wall_s": statistics.median(wall[name]), "cpu_s": statistics.median(cpu[name]), "repeats": repeats}
        for name in fns
    }


def _single(args: argparse.Namespace) -> dict[str, Any]:
    from fedcrypt.he import CkksParams, KeyOwner

    rng = np.random.default_rng(0)  # benchmark data, not secret
    owners = {p: KeyOwner.generate(CkksParams.preset("compact", num_clients=10, max_weight=1.0, packing=p)) for p in PACKINGS}
    rows: list[dict[str, Any]] = []
    for d in args.sizes:
        vector = rng.uniform(-1.0, 1.0, d)
        sizes = {p: len(owners[p].encrypt(vector)) / d for p in PACKINGS}
        times = _interleaved({p: (lambda p=p: owners[p].encrypt(vector)) for p in PACKINGS}, args.repeats)
        row = {"d": d}
        for p in PACKINGS:
            row[p] = {"bytes_per_value": sizes[p], "encrypt_wall_s": times[p]["wall_s"], "encrypt_cpu_s": times[p]["cpu_s"]}
        row["encrypt_wall_ratio"] = times["complex"]["wall_s"] / times["real"]["wall_s"]
        row["encrypt_cpu_ratio"] = times["complex"]["cpu_s"] / times["real"]["cpu_s"]
        rows.append(row)
    d = args.sizes[0]
    vectors = [rng.uniform(-1.0, 1.0, d) for _ in range(10)]
    weights = [int(w) for w in rng.integers(500, 1001, 10)]
    uploads = {
        p: [owners[p].encrypt(np.append(w / 1000 * v, w / 1000)) for w, v in zip(weights, vectors)] for p in PACKINGS
    }
    servers = {p: owners[p].aggregator_context() for p in PACKINGS}

    def server_sum(p: str) -> bytes:
        running = servers[p].start(length=d + 1)
        for blob in uploads[p]:
            running.add(blob, 1)
        return running.finish()

    sums = _interleaved({p: (lambda p=p: server_sum(p)) for p in PACKINGS}, args.repeats)
    exact = sum(w * v for w, v in zip(weights, vectors)) / sum(weights)
    errors = {}
    for p in PACKINGS:
        released = owners[p].decrypt(server_sum(p))
        errors[p] = float(np.max(np.abs(released[:-1] / released[-1] - exact)))
    aggregate = {
        "d": d,
        "uploads": 10,
        **{p: {"server_sum_wall_s": sums[p]["wall_s"], "server_sum_cpu_s": sums[p]["cpu_s"], "mean_error": errors[p]}
           for p in PACKINGS},
        "server_sum_wall_ratio": sums["complex"]["wall_s"] / sums["real"]["wall_s"],
        "server_sum_cpu_ratio": sums["complex"]["cpu_s"] / sums["real"]["cpu_s"],
    }
    print(f"{'d':>10} {'packing':>8} {'B/value':>8} {'encrypt s':>10} {'CPU s':>8} {'us/value':>9}")
    for row in rows:
        for p in PACKINGS:
            r = row[p]
            print(f"{row['d']:>10} {p:>8} {r['bytes_per_value']:>8.3f} {r['encrypt_wall_s']:>10.3f} "
                  f"{r['encrypt_cpu_s']:>8.3f} {1e6 * r['encrypt_wall_s'] / row['d']:>9.3f}")
        print(f"{'':>10} complex/real encryption time: wall {row['encrypt_wall_ratio']:.3f}, CPU {row['encrypt_cpu_ratio']:.3f}")
    print(f"server sum of 10 uploads at d={d}: real {sums['real']['wall_s']:.3f} s, complex {sums['complex']['wall_s']:.3f} s "
          f"(wall {aggregate['server_sum_wall_ratio']:.3f}x, CPU {aggregate['server_sum_cpu_ratio']:.3f}x)")
    print(f"10-client weighted mean, max abs error (released, flooded): real {errors['real']:.3g}, complex {errors['complex']:.3g}")
    return {"sizes": rows, "aggregate": aggregate}


def _threshold(args: argparse.Namespace) -> dict[str, Any]:
    from fedcrypt.he.threshold import KeyHolder, ThresholdParams, ThresholdServer, simulate

    rng = np.random.default_rng(0)  # benchmark data, not secret
    vector = rng.uniform(-1.0, 1.0, args.d)
    sizes: dict[str, dict[str, float]] = {}
    wide: dict[str, Any] = {}
    for preset in ("compact", "wide"):
        for p in PACKINGS:
            params = ThresholdParams.preset(preset, num_parties=3, num_clients=args.sum_uploads, max_weight=1, packing=p)
            server = ThresholdServer(params)
            holders = [KeyHolder(params, i, server.session) for i in range(params.num_parties)]
            joint = None
            for holder in holders:
                joint = server.receive_key_share(holder.generate_key_share(server.key_input_for(holder.party)).to_bytes())
            for holder in holders:
                holder.receive_joint_key(joint.to_bytes())
            uploads = [holders[0].encrypt(vector)]
            sizes.setdefault(preset, {})[p] = len(uploads[0]) / args.d
            if preset == "wide":
                uploads += [holders[0].encrypt(vector) for _ in range(args.sum_uploads - 1)]
                wide[p] = (server, uploads)
    sums = _interleaved({p: (lambda p=p: wide[p][0].weighted_sum(wide[p][1])) for p in PACKINGS}, args.repeats)
    wide.clear()
    errors: dict[str, dict[str, float]] = {}
    weights = [float(w) for w in rng.integers(1, 1001, 10)]
    vectors = [rng.uniform(-1.0, 1.0, args.error_d) for _ in range(10)]
    exact = sum(w * v for w, v in zip(weights, vectors))
    for p in PACKINGS:
        params = ThresholdParams.preset("wide", num_parties=args.holders, num_clients=10, max_weight=1000, packing=p)
        result = simulate(params, vectors, weights)
        errors[p] = {"sum_error": float(np.max(np.abs(result.weighted_sum - exact))), "bound": params.sum_error_bound()}
    print(f"{'preset':>8} {'packing':>8} {'B/value':>8}  (d={args.d})")
    for preset, row in sizes.items():
        for p in PACKINGS:
            print(f"{preset:>8} {p:>8} {row[p]:>8.3f}")
    ratio_wall = sums["complex"]["wall_s"] / sums["real"]["wall_s"]
    ratio_cpu = sums["complex"]["cpu_s"] / sums["real"]["cpu_s"]
    print(f"wide: server sum of {args.sum_uploads} uploads at d={args.d}: real {sums['real']['wall_s']:.3f} s, "
          f"complex {sums['complex']['wall_s']:.3f} s (wall {ratio_wall:.3f}x, CPU {ratio_cpu:.3f}x)")
    for p in PACKINGS:
        print(f"wide, {args.holders} holders, 10 clients (weights 1..1000), d={args.error_d}, {p}: weighted sum max abs "
              f"error {errors[p]['sum_error']:.3g} (bound {errors[p]['bound']:.3g})")
    return {
        "d": args.d,
        "bytes_per_value": sizes,
        "server_sum": {"uploads": args.sum_uploads, **sums, "wall_ratio": ratio_wall, "cpu_ratio": ratio_cpu},
        "weighted_sum_error": {"holders": args.holders, "d": args.error_d, **errors},
    }


def _report() -> str:
    """The Markdown section of docs/performance.md, from the two result files."""
    import json

    from benchmarks._common import RESULTS_DIR

    single = json.loads((RESULTS_DIR / "he_packing_single.json").read_text())
    thr = json.loads((RESULTS_DIR / "he_packing_threshold.json").read_text())
    when = lambda r: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r["unix_time"]))  # noqa: E731
    lines = [
        f"Single key (`fedcrypt.he`, preset `compact`), real and complex packing interleaved in one process: "
        f"`{single['command']}` ({when(single)}, {single['machine']['cpus']} CPUs, shared).",
        "",
        "| d | B/value real | B/value complex | encrypt real | encrypt complex | complex/real (wall, CPU) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in single["sizes"]:
        r, c = row["real"], row["complex"]
        lines.append(
            f"| {row['d']:,} | {r['bytes_per_value']:.3f} | {c['bytes_per_value']:.3f} | {r['encrypt_wall_s']:.3f} s | "
            f"{c['encrypt_wall_s']:.3f} s | {row['encrypt_wall_ratio']:.3f}, {row['encrypt_cpu_ratio']:.3f} |"
        )
    agg = single["aggregate"]
    lines += [
        "",
        f"Server sum of {agg['uploads']} uploads at d={agg['d']:,}: real {agg['real']['server_sum_wall_s']:.3f} s, "
        f"complex {agg['complex']['server_sum_wall_s']:.3f} s ({agg['server_sum_wall_ratio']:.3f}x wall, "
        f"{agg['server_sum_cpu_ratio']:.3f}x CPU). Max abs error of the released 10-client weighted mean "
        f"(weights 500..1000, flooded): real {agg['real']['mean_error']:.3g}, complex {agg['complex']['mean_error']:.3g}.",
        "",
        f"Threshold (`fedcrypt.he.threshold`, OpenFHE): `{thr['command']}` ({when(thr)}).",
        "",
        f"| preset | B/value real | B/value complex (d={thr['d']:,}) |",
        "| --- | ---: | ---: |",
    ]
    for preset, row in thr["bytes_per_value"].items():
        lines.append(f"| {preset} | {row['real']:.3f} | {row['complex']:.3f} |")
    ss, err = thr["server_sum"], thr["weighted_sum_error"]
    lines += [
        "",
        f"`wide`: server sum of {ss['uploads']} uploads at d={thr['d']:,}: real {ss['real']['wall_s']:.3f} s, "
        f"complex {ss['complex']['wall_s']:.3f} s ({ss['wall_ratio']:.3f}x wall, {ss['cpu_ratio']:.3f}x CPU). "
        f"{err['holders']} key holders, 10 clients with weights 1..1000, d={err['d']:,}: max abs error of the "
        f"weighted sum real {err['real']['sum_error']:.3g} (bound {err['real']['bound']:.3g}), complex "
        f"{err['complex']['sum_error']:.3g} (bound {err['complex']['bound']:.3g}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("part", choices=["single", "threshold", "report"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_130_000, 4_190_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--d", type=int, default=1_130_000)
    parser.add_argument("--sum-uploads", type=int, default=10)
    parser.add_argument("--holders", type=int, default=10)
    parser.add_argument("--error-d", type=int, default=32_768)
    args = parser.parse_args(argv)
    if args.part == "report":
        print(_report())
        return 0
    command = " ".join(["python -m benchmarks.he_packing", *(argv if argv is not None else sys.argv[1:])])
    payload = _single(args) if args.part == "single" else _threshold(args)
    path = write_result(f"he_packing_{args.part}", payload, command)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
