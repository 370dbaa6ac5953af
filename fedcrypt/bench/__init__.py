"""``fedcrypt bench``: what privacy costs, side by side with plaintext, Flower SecAgg+ and TenSEAL.

A matrix over protection (plaintext, fedcrypt SecAgg, SecAgg+, Flower's SecAgg+, fedcrypt
CKKS, TenSEAL ``ckks_vector``, distributed DP on/off), number of clients ``n``, vector
length ``d`` (named after real LoRA sizes), dropout rate and ring bits. Each cell reports
client and server time per step (median, min, max over repeats), bytes up and down per
client, the server's peak memory, the aggregate's error against the float sum (and the
protocol's documented bound) and the overhead ratios against plaintext measured in the
same run. A cost model fitted to the cells extrapolates to n = 10,000 and d = 4e7.

Output: a table on the terminal, ``results.csv``, ``results.json`` (with the command, the
machine and its load averages) and PNG plots in ``--out``.

Invariants: importing this module imports neither torch nor flwr nor tenseal (the CLI
builds its parser from it); the measurement code lives in :mod:`fedcrypt.bench.cells`,
which only moves bytes between the protocols' own objects.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["add_arguments", "check", "run", "main", "OUTPUT_PATHS"]

_DEFAULT_OUT = Path("benchmarks") / "results"

#: output paths the CLI creates (or refuses) before any cell runs
OUTPUT_PATHS = {"out": "dir"}


def _size(text: str) -> int:
    from .matrix import SIZES

    if text in SIZES:
        return SIZES[text]
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size or a preset name ({', '.join(SIZES)}): {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"d must be positive, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``fedcrypt bench``'s options on ``parser``."""
    from .cells import PROTECTIONS

    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="preset",
        help="small matrix, under two minutes on a quiet 2-core machine",
    )
    preset.add_argument(
        "--full",
        action="store_const",
        const="full",
        dest="preset",
        help="every protection at n in {10,50,100} and every LoRA size up to 39,976,960 (hours)",
    )
    preset.add_argument(
        "--preset",
        choices=["quick", "doc", "full", "custom"],
        dest="preset",
        help="a named matrix (doc: the one docs/performance.md shows)",
    )
    parser.add_argument(
        "--protections",
        nargs="+",
        choices=sorted(PROTECTIONS),
        metavar="P",
        help=f"protections to run (default all): {', '.join(PROTECTIONS)}",
    )
    parser.add_argument("--n", type=int, nargs="+", dest="ns", metavar="N", help="numbers of clients")
    parser.add_argument(
        "--d",
        type=_size,
        nargs="+",
        dest="ds",
        metavar="D",
        help="vector lengths or LoRA size names: gpt2-r8, tinyllama-r8, llama2-7b-r8, llama2-7b-r16-all",
    )
    parser.add_argument(
        "--dropout",
        type=float,
        nargs="+",
        dest="dropouts",
        metavar="RATE",
        help="fractions of clients that drop after sharing keys",
    )
    parser.add_argument("--bits", type=int, nargs="+", choices=[32, 64], help="ring bits of the masking protocols")
    parser.add_argument("--dp", choices=["off", "on", "both"], help="distributed DP (under SecAgg/SecAgg+)")
    parser.add_argument("--k", type=int, help="SecAgg+ degree (default 2 ceil(log2 n))")
    parser.add_argument("--repeats", type=int, help="timed repeats per cell (median, min, max reported)")
    parser.add_argument("--memory-max-s", type=float, help="measure server memory only for cells whose step takes at most this long")
    parser.add_argument("--out", type=Path, help="output directory (default benchmarks/results/bench-<UTC time>)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr (there is none when stderr is not a terminal)")


def check(args: argparse.Namespace) -> list[str]:
    """Validate every option before any cell runs; fill in the default ``--out``.

    Raises:
        ValueError: a value out of range, or a dropout rate a protocol of the matrix cannot
            survive (a usage error).
        MissingExtraError: scipy (the cost model, extra ``bench``) is not installed.

    Returns:
        Notes on what the options change (plots skipped for a missing matplotlib).
    """
    from fedcrypt._optional import require

    from .matrix import plan_for

    for n in args.ns or ():
        if n < 2:
            raise ValueError(f"--n must be at least 2 (a sum of one client's update is that update), got {n}")
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    for rate in args.dropouts or ():
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"--dropout rates must be in [0, 1), got {rate:g}")
    if args.k is not None and args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    if args.memory_max_s is not None and not args.memory_max_s >= 0:
        raise ValueError(f"--memory-max-s must be >= 0, got {args.memory_max_s:g}")
    args.preset = args.preset or ("custom" if any(getattr(args, a, None) for a in ("ns", "ds")) else "quick")
    dp = None if args.dp is None else {"off": (False,), "on": (True,), "both": (False, True)}[args.dp]
    args.plan = plan_for(
        args.preset,
        protections=args.protections,
        ns=args.ns,
        ds=args.ds,
        dropouts=args.dropouts,
        bits=args.bits,
        dp=dp,
        k=args.k,
        repeats=args.repeats,
    )
    for cell in args.plan.cells:
        dropped = len(cell.dropped)
        tolerated = cell.share_holders - cell.threshold if cell.threshold > 1 else cell.n - 1
        if dropped > tolerated:
            why = (
                f"{cell.protection} needs {cell.threshold} of every {cell.share_holders} share holders to survive"
                if cell.threshold > 1
                else "one client must survive"
            )
            raise ValueError(
                f"--dropout {cell.dropout:g} drops {dropped} of n={cell.n} clients, more than {cell.protection} "
                f"survives ({why}): use --dropout {tolerated / cell.n:.3g} or less at n={cell.n}"
            )
    require("scipy", "bench")  # the cost model's fit; before measuring, not after
    if args.out is None:
        args.out = _DEFAULT_OUT / f"bench-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    notes = []
    if not args.no_plots:
        try:
            require("matplotlib", "ui")
        except ImportError as exc:
            notes.append(f"no plots: {exc}")
            args.no_plots = True
    return notes


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run the matrix that ``args`` describe; write the table and the files. Returns 0 or 1.

    Runs :func:`check` first unless the ``fedcrypt`` CLI (or :func:`main`) already did.
    Returns 1 when a cell's aggregate error exceeds its protocol's documented bound.
    """
    from . import costmodel, report
    from .matrix import run_matrix

    if getattr(args, "plan", None) is None:
        for note in check(args):
            print(f"fedcrypt bench: note: {note}", file=sys.stderr)
    plan = args.plan
    if args.memory_max_s is not None:
        plan.memory_max_s = args.memory_max_s
    out = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    command = "fedcrypt bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[2:]))
    print(f"{command}\n{len(plan.cells)} cells, {plan.repeats} repeats each, preset {plan.name}; output in {out}", flush=True)
    load_before = report.load_average()
    start = time.perf_counter()
    rows = run_matrix(plan, progress=not args.no_progress)
    wall = time.perf_counter() - start
    load_after = report.load_average()
    models = costmodel.fit(rows)
    summary = report.model_summary(models)
    report.print_table(rows)
    files = [report.write_csv(rows, out / "results.csv")]
    files.append(
        report.write_json(
            {
                "command": command.strip(),
                "preset": plan.name,
                "repeats": plan.repeats,
                "machine": report.machine(),
                "load_average_before": load_before,
                "load_average_after": load_after,
                "utc": stamp,
                "wall_s": wall,
                "rows": rows,
                "cost_model": summary,
            },
            out / "results.json",
        )
    )
    if not args.no_plots:
        files += report.plot_all(rows, models, out)
    print("\ncost model (max |model/measured - 1| per quantity, in sample / leave-one-out; '-': too few cells to tell):")
    for protection, model in models.items():
        devs = ", ".join(f"{q} {_percent(model.max_abs_deviation(q))}/{_percent(model.max_abs_holdout_deviation(q))}" for q in costmodel.QUANTITIES)
        print(f"  {protection:<15}{model.cells:>3} cells: {devs}")
    print(f"\nload average before {load_before}, after {load_after}; wall {wall:.1f} s")
    for path in files:
        print(f"wrote {path}")
    bad = [r for r in rows if r["status"] == "ok" and not r["error_within_bound"]]
    for r in bad:
        print(
            f"ERROR above bound: {r['protection']} n={r['n']} d={r['d']}: {r['error']:.3g} > {r['error_bound']:.3g}",
            file=sys.stderr,
        )
    return 1 if bad else 0


def _percent(value: float) -> str:
    """A deviation as a percentage; ``-`` when there is none (no cell, or no held-out fit)."""
    return "-" if not math.isfinite(value) else f"{value:.0%}"


def main(argv: Sequence[str] | None = None, prog: str = "fedcrypt bench") -> int:
    """Parse ``argv`` and run (``python -m benchmarks`` calls this)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        notes = check(args)
    except ValueError as exc:
        parser.error(str(exc))
    except ImportError as exc:  # MissingExtraError: one line naming the extra
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"{prog}: note: {note}", file=sys.stderr)
    if not sys.stderr.isatty():
        args.no_progress = True
    return run(args, argv)
