"""``fedcrypt privacy PATH [--plot out.png] [--verify-all]``: show a privacy ledger.

Prints the ledger's settings, one line per round (the event, the epsilon after it) and
the spent and remaining epsilon; ``--plot`` draws epsilon over rounds (extra ``ui``).
The ledger is only read: nothing is written to it.

The total is recomputed from all the events and checked against the last round's stored
epsilon (one composition: a 1,000-round ledger takes seconds); ``--verify-all``
recomputes every round's, with a progress bar on a terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # dp_accounting is the optional extra 'dp'
    from dp_accounting import DpEvent

__all__ = ["add_arguments", "check", "run", "describe_event", "OUTPUT_PATHS"]

#: output paths the CLI creates (or refuses) before the ledger is read
OUTPUT_PATHS = {"plot": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the subcommand's arguments."""
    parser.add_argument("path", metavar="PATH", help="the privacy ledger (SQLite file)")
    parser.add_argument(
        "--plot",
        metavar="OUT.png",
        default=None,
        help="write a plot of epsilon over rounds (.png added to a name without an extension)",
    )
    parser.add_argument(
        "--verify-all",
        action="store_true",
        help="recompute every round's epsilon, not only the total (one composition per round)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar for --verify-all (there is none when stderr is not a terminal)",
    )


def check(args: argparse.Namespace) -> list[str]:
    """Check the extras and the plot's file name before the ledger is read.

    A plot name without an extension gets ``.png`` (what matplotlib would write anyway),
    so the path printed is the file written.

    Raises:
        MissingExtraError: dp-accounting (extra ``dp``), or matplotlib for ``--plot``
            (extra ``ui``), is not installed.
        ValueError: the plot's extension is not an image format matplotlib writes.
    """
    from fedcrypt._optional import require

    require("dp_accounting", "dp")
    require("attr", "dp")
    if args.plot is None:
        return []
    require("matplotlib", "ui")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    plot = str(args.plot)
    suffix = Path(plot).suffix.lower().lstrip(".")
    if not suffix:
        args.plot = plot + ".png"
    elif suffix not in formats:
        raise ValueError(f"--plot {plot}: matplotlib cannot write .{suffix} files; use one of {', '.join('.' + f for f in sorted(formats))}")
    return []


def describe_event(event: DpEvent) -> str:
    """A short human description of a dp_accounting event."""
    import dp_accounting as dpa

    from fedcrypt.dp.events import DistributedDiscreteGaussianDpEvent, SkellamDpEvent

    if isinstance(event, dpa.PoissonSampledDpEvent):
        return f"q={event.sampling_probability:g} x {describe_event(event.event)}"
    if isinstance(event, dpa.SelfComposedDpEvent):
        return f"{event.count} x {describe_event(event.event)}"
    if isinstance(event, dpa.ComposedDpEvent):
        return " + ".join(describe_event(e) for e in event.events) or "nothing"
    if isinstance(event, dpa.GaussianDpEvent):
        return f"Gaussian z={event.noise_multiplier:.4g}"
    if isinstance(event, dpa.LaplaceDpEvent):
        return f"Laplace b={event.noise_multiplier:.4g}"
    if isinstance(event, DistributedDiscreteGaussianDpEvent):
        return f"distributed discrete Gaussian, {event.num_clients} clients, d={event.dimension}"
    if isinstance(event, SkellamDpEvent):
        return f"Skellam mu={event.mu:.4g}, d={event.dimension}"
    return type(event).__name__


def _progress_bar(total: int) -> Any:
    """A tqdm bar on stderr, or None without the ``ui`` extra."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="verifying", unit="round", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Print the ledger; return 0, or 1 if it cannot be read."""
    from fedcrypt.dp.ledger import PrivacyLedger
    from fedcrypt.errors import FedcryptError

    try:
        ledger = PrivacyLedger.open(args.path)
    except FedcryptError as exc:
        print(f"fedcrypt privacy: {exc}", file=sys.stderr)
        return 1
    bar = _progress_bar(len(ledger)) if args.verify_all and not args.no_progress else None
    try:
        entries = ledger.entries()
        ledger.verify(every_round=args.verify_all, progress=None if bar is None else (lambda done, total: bar.update(1)))
    except FedcryptError as exc:
        ledger.close()
        print(f"fedcrypt privacy: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    spent = entries[-1].epsilon if entries else 0.0
    print(f"ledger: {args.path}")
    print(f"budget: epsilon={ledger.epsilon_budget:g} at delta={ledger.delta:g} ({ledger.accountant} accountant)")
    print(f"{'round':>6}  {'epsilon':>10}  event")
    for entry in entries:
        print(f"{entry.round:>6}  {entry.epsilon:>10.4f}  {describe_event(entry.event)}")
    print(f"spent: {spent:.4f}  remaining: {max(0.0, ledger.epsilon_budget - spent):.4f}  rounds: {len(entries)}")
    if entries:
        what = "every round's epsilon" if args.verify_all else f"the total from all {len(entries)} events"
        print(f"verified: {what} recomputed ({ledger.accountant}), as stored")
    ledger.close()
    if args.plot:
        from fedcrypt._optional import require

        matplotlib = require("matplotlib", "ui")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([e.round for e in entries], [e.epsilon for e in entries], marker=".", label="spent")
        ax.axhline(ledger.epsilon_budget, color="red", linestyle="--", label="budget")
        ax.set_xlabel("round")
        ax.set_ylabel(f"epsilon (delta={ledger.delta:g})")
        ax.set_title("privacy spent over rounds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        plt.close(fig)
        print(f"plot: {args.plot}")
    return 0
