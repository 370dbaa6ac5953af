"""Per-round cost of secure aggregation in a real Flower loopback deployment.

Usage: python -m benchmarks.flower [--nodes 3] [--rounds 2] [--repeats 2] [--model-size 100000] [--task synthetic]

One SuperLink and ``--nodes`` SuperNodes run as processes on 127.0.0.1 (see
``tests/flower/_loopback.py``); the example app (``examples/flower_app``) is
submitted with ``flwr run`` in four variants that share the model, the local training,
the weights and the nodes, and differ only in aggregation:

* ``plain``: Flower's FedAvg on cleartext updates (the baseline);
* ``fedcrypt``: the same FedAvg on ``SecAggGrid`` with ``secagg_mod`` (SecAgg, complete
  graph, 32-bit ring);
* ``fedcrypt-ckks``: the same FedAvg on ``CkksGrid`` with ``ckks_mod`` (single-key CKKS,
  ``compact`` preset, key dealt in band in each run's first round, 2 decryptors);
* ``flower-secaggplus``: Flower's own SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``),
  which runs only under Flower's legacy API, on the same model and training.

The variants run interleaved, ``--repeats`` times each, on the same federation. The time
per round is the ServerApp's strategy time divided by the rounds (ServerApp start-up
excluded); overheads are ratios to ``plain`` measured in the same run. In a Flower
deployment every message starts a ClientApp process and both SuperLink and SuperNodes
poll every few seconds, so a protocol stage costs seconds regardless of the cryptography:
the stage count, not the arithmetic, dominates at this scale.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys

import numpy as np
import tempfile
from pathlib import Path

from benchmarks._common import write_result
from tests.flower._loopback import LoopbackFederation

APP = Path(__file__).resolve().parents[1] / "examples" / "flower_app"

VARIANTS = {
    "plain": ("fedcrypt_flower_app.server_app:app", "fedcrypt_flower_app.client_app:plain_app", "plain"),
    "fedcrypt": ("fedcrypt_flower_app.server_app:app", "fedcrypt_flower_app.client_app:app", "secagg"),
    "fedcrypt-ckks": ("fedcrypt_flower_app.server_app:app", "fedcrypt_flower_app.client_app:app", "ckks"),
    "flower-secaggplus": (
        "fedcrypt_flower_app.flower_secaggplus:server_app",
        "fedcrypt_flower_app.flower_secaggplus:client_app",
        "secagg",
    ),
}


def variant_app(root: Path, name: str) -> Path:
    """A copy of the example app whose components are those of ``name``."""
    server, client, _ = VARIANTS[name]
    target = root / name
    shutil.copytree(APP, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyproject = target / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^serverapp = ".*"$', f'serverapp = "{server}"', text)
    text = re.sub(r'(?m)^clientapp = ".*"$', f'clientapp = "{client}"', text)
    pyproject.write_text(text, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model-size", type=int, default=100_000)
    parser.add_argument("--task", choices=["synthetic", "lora"], default="synthetic")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    if "plain" not in names:
        parser.error("the plain variant is the baseline and must be included")

    samples: dict[str, list[float]] = {name: [] for name in names}
    deviation: dict[str, list[float]] = {name: [] for name in names}
    failures: dict[str, list[str]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="fedcrypt-bench-flower-") as scratch:
        root = Path(scratch)
        apps = {name: variant_app(root, name) for name in names}
        with LoopbackFederation(args.nodes, workdir=root / "fed") as fed:
            for repeat in range(args.repeats):
                finals: dict[str, dict[str, np.ndarray]] = {}
                for name in names:
                    result = root / f"{name}-{repeat}.json"
                    config = {
                        "aggregation": VARIANTS[name][2],
                        "task": args.task,
                        "model-size": args.model_size,
                        "num-server-rounds": args.rounds,
                        "min-nodes": args.nodes,
                        "stage-timeout": 120.0,
                        "result-path": str(result),
                    }
                    outcome = fed.run(apps[name], config, timeout=900)
                    if not outcome.completed or not result.exists():
                        failures[name].append(f"{outcome.status}: {fed.run_log(outcome.run_id)[-1500:]}")
                        print(f"{name}: run {outcome.run_id} {outcome.status}", file=sys.stderr)
                        continue
                    summary = json.loads(result.read_text())
                    seconds = summary["seconds"] / args.rounds
                    samples[name].append(seconds)
                    finals[name] = {k: np.asarray(v) for k, v in summary["arrays"].items()}
                    if name != "plain" and "plain" in finals:
                        # same model, data and rounds: the final models must agree
                        deviation[name].append(
                            max(float(np.abs(finals[name][k] - finals["plain"][k]).max()) for k in finals["plain"])
                        )
                    print(f"repeat {repeat} {name:<18} {seconds:8.2f} s/round", flush=True)

    base = statistics.median(samples["plain"]) if samples["plain"] else float("nan")
    rows = {}
    print(f"\n{args.nodes} SuperNodes, {args.task} model of {args.model_size} parameters, {args.rounds} rounds x {args.repeats} repeats")
    print(f"{'variant':<20}{'s/round (median)':>18}{'overhead vs plain':>20}{'max |model - plain|':>22}")
    for name in names:
        if not samples[name]:
            print(f"{name:<20}{'failed':>18}")
            rows[name] = {"failed": failures[name]}
            continue
        median = statistics.median(samples[name])
        rows[name] = {
            "seconds_per_round_median": median,
            "samples": samples[name],
            "ratio_to_plain": median / base,
            "overhead_seconds_per_round": median - base,
            "max_abs_diff_to_plain_model": max(deviation[name], default=0.0),
        }
        print(f"{name:<20}{median:>18.2f}{median / base:>19.2f}x{max(deviation[name], default=0.0):>22.2e}")
    command = "python -m benchmarks.flower " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result(
        "flower",
        {
            "nodes": args.nodes,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "task": args.task,
            "model_size": args.model_size,
            "variants": rows,
        },
        command.strip(),
    )
    print(f"wrote {path}")
    return 0 if all(samples[name] for name in names) else 1


if __name__ == "__main__":
    raise SystemExit(main())
