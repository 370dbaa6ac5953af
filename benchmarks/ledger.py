"""Privacy ledger cost against its length: ``spend`` at round N against round 1, ``fedcrypt privacy``.

Usage: python -m benchmarks.ledger [--rounds 1000] [--kinds gaussian distributed sampled]

For each kind of round event a fresh ledger (PLD accountant, the default) is filled by
``rounds`` calls of :meth:`fedcrypt.dp.PrivacyLedger.spend`, each timed (wall clock and
this process's CPU time); then ``python -m fedcrypt privacy LEDGER`` is timed as a user
runs it (a new process: interpreter start, imports, reading and decoding every row, one
recomputation of the total). The kinds:

* ``gaussian``: central DP, ``GaussianDpEvent(z=3)`` every round (the demo's ``--dp``):
  the composition is one Gaussian, dp-accounting's exact analytic epsilon;
* ``distributed``: the distributed discrete Gaussian of
  ``DistributedDpConfig(1, 1, 20, bits=20)`` at ``d = 73,728`` (the demo's LoRA size),
  with 18 to 20 survivors a round: not a PLD event, so the RDP accountant (a few
  distinct leaves, whatever the length);
* ``sampled``: ``PoissonSampledDpEvent(q=0.1, GaussianDpEvent(1.5))`` (DP-SGD/DP-FedAvg
  with client sampling): dp-accounting's PLD at interval 1e-4.

``privacy s`` is the command as a user runs it; most of it is the interpreter importing
dp-accounting (and scipy, about 2.5-3.5 s on a shared 2-core machine), the same for any
ledger length; ``in-process s`` is the same command inside this process with those
imports done and the single-event caches emptied: reading, decoding, printing and one
recomputation of the total. The whole run takes about 10 minutes (``sampled``: 8).

The ratios are against the same run's round 1 (the first spend of a fresh ledger in this
process, what a training job pays first) and, to separate caching from history, against
the median of rounds 2-6 (warm). Round N is the median of the last five rounds. For
``sampled`` the warm ratio measures the growth of the composed privacy-loss distribution
itself (its support widens with the number of rounds, and dp-accounting's
``self_compose`` with it), not a pass over the ledger's rows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks._common import write_result

KINDS = ("gaussian", "distributed", "sampled")


def _events(kind: str, rounds: int) -> Callable[[int], Any]:
    import dp_accounting as dpa

    if kind == "gaussian":
        event = dpa.GaussianDpEvent(3.0)
        return lambda k: event
    if kind == "sampled":
        event = dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.5))
        return lambda k: event
    if kind == "distributed":
        from fedcrypt.dp import DistributedDpConfig

        config = DistributedDpConfig(1.0, 1.0, 20, bits=20)
        by_survivors = {m: config.event(73_728, m) for m in (18, 19, 20)}
        return lambda k: by_survivors[20 - k % 3]
    raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


def measure(kind: str, rounds: int, directory: Path) -> dict[str, Any]:
    """Fill a ledger of ``kind`` for ``rounds`` rounds; time every spend and ``fedcrypt privacy``."""
    from fedcrypt.dp import PrivacyLedger

    path = directory / f"{kind}.db"
    event_of = _events(kind, rounds)
    wall, cpu = [], []
    with PrivacyLedger(path, epsilon_budget=1e9, delta=1e-5) as ledger:
        for k in range(1, rounds + 1):
            event = event_of(k)
            c0, w0 = time.process_time(), time.perf_counter()
            spent = ledger.spend(event)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
            if k % max(1, rounds // 10) == 0:
                print(f"  {kind}: round {k}, epsilon {spent:.4g}, last spend {wall[-1] * 1e3:.1f} ms",
                      file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fedcrypt", "privacy", str(path)],
                          capture_output=True, text=True, check=True)
    privacy_s = time.perf_counter() - start
    assert f"rounds: {rounds}" in proc.stdout and "verified:" in proc.stdout, proc.stdout[-500:]
    # The same command in this process, imports done and the single-event caches emptied:
    # what reading, printing and verifying the ledger cost, without interpreter and scipy start-up.
    from fedcrypt.cli import main as cli_main
    from fedcrypt.dp import accounting

    accounting._base_pld.cache_clear()
    accounting._unit_rdp.cache_clear()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        start = time.perf_counter()
        assert cli_main(["privacy", str(path)]) == 0
        privacy_in_process_s = time.perf_counter() - start
    assert "verified:" in printed.getvalue()
    first, warm, last = wall[0], statistics.median(wall[1:6]), statistics.median(wall[-5:])
    return {
        "kind": kind,
        "rounds": rounds,
        "epsilon": spent,
        "spend_round1_s": first,
        "spend_rounds2to6_median_s": warm,
        "spend_lastN_median_s": last,
        "ratio_last_vs_round1": last / first,
        "ratio_last_vs_warm": last / warm,
        "cpu_round1_s": cpu[0],
        "cpu_lastN_median_s": statistics.median(cpu[-5:]),
        "privacy_command_s": privacy_s,
        "privacy_in_process_s": privacy_in_process_s,
        "spend_wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write ``results/ledger.json``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="rounds per ledger (default %(default)s)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="event kinds")
    args = parser.parse_args(argv)
    if args.rounds < 6:
        parser.error("--rounds must be at least 6 (round 1, rounds 2-6 and the last five)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            rows.append(measure(kind, args.rounds, Path(tmp)))
    print(f"\n{'kind':<12} {'round 1 ms':>10} {'2-6 ms':>8} {f'{args.rounds - 4}-{args.rounds} ms':>12} "
          f"{'/round 1':>8} {'/2-6':>6} {'epsilon':>8} {'privacy s':>9} {'in-process s':>12}")
    for row in rows:
        print(f"{row['kind']:<12} {row['spend_round1_s'] * 1e3:>10.1f} {row['spend_rounds2to6_median_s'] * 1e3:>8.1f} "
              f"{row['spend_lastN_median_s'] * 1e3:>12.1f} {row['ratio_last_vs_round1']:>8.2f} "
              f"{row['ratio_last_vs_warm']:>6.2f} {row['epsilon']:>8.3g} {row['privacy_command_s']:>9.2f} "
              f"{row['privacy_in_process_s']:>12.2f}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"load average at the end: {load}")
    command = "python -m benchmarks.ledger " + " ".join(sys.argv[1:] if argv is None else argv)
    path = write_result("ledger", {"rows": rows, "load_average_end": load}, command.strip())
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
