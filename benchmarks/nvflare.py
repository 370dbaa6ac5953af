"""fedcrypt against NVIDIA FLARE's own homomorphic encryption, on the same job and sites in FLARE's simulator.

Usage: python -m benchmarks.nvflare [--quick] [--dim 100000] [--sites 4] [--rounds 2] [--timeout 600] [--doc PAGE]
       python -m benchmarks.nvflare --render benchmarks/results/nvflare.json --doc docs/integrations/nvflare.md

Every configuration runs the same FedAvg job in FLARE 2.9's simulator (a server process and one
process per site, every message through FLARE's serialisation and cellnet): the model is one
float32 vector of ``--dim`` values; site ``site-i`` adds ``uniform(-1, 1)`` noise seeded by
``(i, round)`` to the global model it receives and weighs it ``10 i``, so plaintext FedAvg is
recomputed here in float64. The configurations differ only in how the server aggregates:

* ``collab-plain``: plaintext FedAvg over FLARE's Collab API, the transport fedcrypt's adapter
  uses (the baseline of the two fedcrypt rows);
* ``fedcrypt-secagg+``: :class:`fedcrypt.integrations.nvflare.SecAggServer` (SecAgg+, each site
  masking with 2 neighbours: a sparse graph from 4 sites on, the complete one below; 32-bit ring);
* ``fedcrypt-ckks``: :class:`fedcrypt.integrations.nvflare.CkksServer` (single-key CKKS,
  ``compact`` preset, key dealt in band in round 1, 2 decryptors);
* ``flare-fedavg``: FLARE's own PyTorch ``FedAvgRecipe`` (plaintext, Client API script);
* ``flare-he``: FLARE's own ``FedAvgRecipeWithHE`` (TenSEAL CKKS filters of ``nvflare.app_opt.he``:
  ``HEModelEncryptor`` / ``HEModelDecryptor`` on the sites, the HE aggregator, shareable generator
  and serialize filter on the server), with the TenSEAL contexts FLARE's provisioning builder
  (``nvflare.lighter.impl.he.HEBuilder``, its defaults) writes, placed in the simulator's startup
  folder (the recipe refuses ``SimEnv`` only because the simulator provisions no contexts; the
  simulator gives every participant that folder, so this is a measurement set-up, not a deployment).

Measured per configuration:

* bytes per value up and down: what FLARE's cellnet counted in the server process (its
  ``received_stream_sizes`` and ``sent_stream_sizes`` pools, every category: task data,
  results, the download service's array transfers, and FLARE's own control traffic), over
  ``dim * sites * rounds``;
* round time: the server's wall time per round (the fedcrypt reports' stage times; the
  ``collab-plain`` server's own clock; FLARE's ``ROUND_STARTED`` to ``AFTER_AGGREGATION`` events
  for the two recipe jobs, timed by a server component added to the job), job start-up
  excluded; the first round (FLARE's and the sites' warm-up: imports, first task) apart from
  the later rounds' mean, which the ratio to the baseline uses when there is one;
* max error: the largest absolute difference of the final model from plaintext FedAvg (float64).
  ``flare-he``'s final model is the encrypted one its persistor saved, decrypted here with the
  sites' context.

The result goes to ``benchmarks/results/nvflare.json`` (``nvflare_quick.json`` with ``--quick``:
d = 10000, 3 sites, 1 round). Ratios are to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nvflare.app_opt.pt.recipes.fedavg_he import FedAvgRecipeWithHE
from nvflare.recipe.spec import Recipe

from benchmarks._common import write_result
from benchmarks.nvflare_model import FlatModel
from benchmarks.nvflare_job import DIM_VARIABLE, ROUNDS_FILE, PlainClient
from benchmarks.nvflare_job import PlainServer, RoundTimer, dim, plaintext_fedavg, weight_of

ROOT = Path(__file__).resolve().parents[1]
CLIENT_SCRIPT = Path(__file__).resolve().parent / "nvflare_client.py"
CONFIGS = ("collab-plain", "fedcrypt-secagg+", "fedcrypt-ckks", "flare-fedavg", "flare-he")
BASELINE = {"collab-plain": "collab-plain", "fedcrypt-secagg+": "collab-plain", "fedcrypt-ckks": "collab-plain",
            "flare-fedavg": "flare-fedavg", "flare-he": "flare-fedavg"}
CKKS = {"clip": 8.0}
SECAGG_CLIP, MAX_WEIGHT = 8.0, 1000.0


class FedAvgRecipeWithHEInSimulator(FedAvgRecipeWithHE):
    """FLARE's ``FedAvgRecipeWithHE`` unchanged, but allowed in ``SimEnv`` (the run places the
    contexts FLARE's provisioning would have put in the startup kits into the simulator's startup folder)."""

    def process_env(self, env: Any) -> None:
        Recipe.process_env(self, env)


# ---------------------------------------------------------------------------- one configuration (in its own process)
def build(config: str, sites: int, rounds: int) -> Any:
    """The recipe of one configuration (job name: the configuration's)."""
    name = config.replace("+", "-plus")
    if config == "collab-plain":
        from nvflare.collab import CollabRecipe

        return CollabRecipe(job_name=name, server=PlainServer(num_rounds=rounds), client=PlainClient(), min_clients=sites)
    if config.startswith("fedcrypt"):
        from fedcrypt.integrations.nvflare import CkksClient, CkksServer, SecAggClient, SecAggServer, recipe

        common = {"initial_model": "benchmarks.nvflare_job:initial_model", "num_rounds": rounds, "stage_timeout": 300.0}
        if config == "fedcrypt-ckks":
            server, client = CkksServer(**common, ckks=CKKS), CkksClient(train="benchmarks.nvflare_job:train", ckks=CKKS)
        else:
            server = SecAggServer(**common, neighbours=2, threshold=0.6, clip=SECAGG_CLIP)
            client = SecAggClient(train="benchmarks.nvflare_job:train")
        return recipe(name, server, client, min_clients=sites)
    kwargs = {"name": name, "model": FlatModel(dim()), "min_clients": sites, "num_rounds": rounds, "train_script": str(CLIENT_SCRIPT)}
    if config == "flare-he":
        job = FedAvgRecipeWithHEInSimulator(**kwargs)
    else:
        from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe

        job = FedAvgRecipe(**kwargs)
    getattr(job, "_job").to_server(RoundTimer(), id="fedcrypt_round_timer")  # the recipe's FedJob
    return job


def provision_he(startup: Path) -> bytes:
    """FLARE's HE contexts as its provisioning writes them (HEBuilder's defaults); the sites' (secret) one."""
    from nvflare.lighter.impl.he import HEBuilder

    builder = HEBuilder()
    builder.initialize(None, None)  # type: ignore[arg-type]  # the builder uses neither
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "server_context.tenseal").write_bytes(builder.get_serialized_context())
    client = builder.get_serialized_context(is_client=True)
    (startup / "client_context.tenseal").write_bytes(client)
    return client


def stream_bytes(stats_file: Path) -> tuple[int, int]:
    """(down, up): bytes of every stream FLARE's cells in the server process sent and received."""
    stats = json.loads(stats_file.read_text())
    totals = []
    for pool in ("sent_stream_sizes", "received_stream_sizes"):
        mbs = sum(histogram_bin["total"] for name, entry in stats.items() if name.split("@")[0] == pool
                  for bins in entry["pool"]["cat_data"].values() for histogram_bin in bins if histogram_bin)
        totals.append(round(mbs * 2**20))
    return totals[0], totals[1]


def final_model(config: str, run_dir: Path, client_context: bytes | None) -> np.ndarray:
    if config == "collab-plain":
        return np.load(run_dir / "model.npy")
    if config.startswith("fedcrypt"):
        with np.load(run_dir / "fedcrypt_model.npz") as saved:
            return saved["w"]
    saved = torch.load(next(run_dir.rglob("FL_global_model.pt")), weights_only=False)
    value = saved["model"]["w"] if "model" in saved else saved["w"]
    if isinstance(value, (bytes, bytearray)):  # flare-he: the persisted model is the encrypted sum
        import tenseal as ts

        value = ts.ckks_vector_from(ts.context_from(client_context), bytes(value)).decrypt()
    if isinstance(value, torch.Tensor):
        value = value.detach().numpy()
    return np.asarray(value, np.float32).reshape(-1)


def run_one(config: str, workspace: Path, sites: int, rounds: int) -> dict[str, Any]:
    """Run one configuration in FLARE's simulator here; its measurements."""
    from nvflare.recipe import SimEnv

    job = build(config, sites, rounds)
    job_dir = workspace / job.name
    client_context = provision_he(job_dir / "startup") if config == "flare-he" else None
    start = time.monotonic()
    job.execute(SimEnv(num_clients=sites, workspace_root=str(workspace)))
    job_seconds = time.monotonic() - start
    run_dir = job_dir / "server" / "simulate_job"
    extra: dict[str, Any] = {}
    if config.startswith("fedcrypt"):
        reports = json.loads((run_dir / "fedcrypt_rounds.json").read_text())
        if any(r["aborted"] or r["dropped"] for r in reports):
            raise RuntimeError(f"{config}: a round lost a site or aborted: {reports}")
        round_seconds = [sum(r["stage_seconds"].values()) for r in reports]
        extra = {"adapter_bytes_up_per_round": [r["bytes_up"] for r in reports],  # the adapter's count: protocol payloads
                 "adapter_bytes_down_per_round": [r["bytes_down"] for r in reports],  # (the global model's arrays excluded)
                 "stage_seconds_per_round": [r["stage_seconds"] for r in reports],
                 "error_bound": error_bound(config, sites, rounds)}
    else:
        round_seconds = json.loads((run_dir / ROUNDS_FILE).read_text())
    down, up = stream_bytes(job_dir / "server" / "pool_stats" / "simulator_cell_stats.json")
    names = [f"site-{i}" for i in range(1, sites + 1)]
    model = final_model(config, run_dir, client_context).astype(np.float64)
    expected = plaintext_fedavg(names, rounds, dim())
    values = dim() * sites * rounds
    return {"config": config, "bytes_down": down, "bytes_up": up, "bytes_per_value_down": down / values,
            "bytes_per_value_up": up / values, "round_seconds": round_seconds,
            "first_round_seconds": round_seconds[0],  # with FLARE's and the sites' warm-up (imports, first task)
            "later_round_seconds": float(np.mean(round_seconds[1:])) if len(round_seconds) > 1 else None,
            "job_seconds": job_seconds,
            "max_error": float(np.max(np.abs(model - expected))) if model.shape == expected.shape else float("inf"), **extra}


def error_bound(config: str, sites: int, rounds: int) -> float:
    """The documented worst-case error of a fedcrypt configuration's final model (the rounds' bounds
    add up: a round's error passes unchanged into the next round's average), as the adapter's tests use:
    SecAgg, the codec's sum error E on ``w/M``-scaled values, ``|A/B - S/W| <= E (W + |S|) / (W (W - E))``
    plus float32 rounding; CKKS, :func:`fedcrypt.he.round.fedavg_error_bound`."""
    weights = [weight_of(f"site-{i}") for i in range(1, sites + 1)]
    if config == "fedcrypt-ckks":
        from fedcrypt.he.round import fedavg_error_bound
        from fedcrypt.integrations.nvflare.ckks import ckks_config

        ckks = ckks_config(**CKKS)
        return rounds * fedavg_error_bound(ckks.params, weights, ckks.max_weight)
    from fedcrypt.secagg.setup import config_for

    e = config_for(sites, neighbours=2, threshold=0.6, clip=SECAGG_CLIP).codec.error_bound(sites)
    w, magnitude = sum(weights) / MAX_WEIGHT, float(rounds)  # |update| <= rounds: each round adds at most 1
    return rounds * (e * (w + w * magnitude) / (w * (w - e)) + magnitude * 2.0**-22)


# ---------------------------------------------------------------------------- the benchmark
def render(payload: dict[str, Any]) -> str:
    """The Markdown table of a result (what ``--doc`` writes between the page's markers)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(payload["unix_time"]))
    lines = [f"Command: `{payload['command']}` (d = {payload['dim']}, {payload['sites']} sites, {payload['rounds']} "
             f"rounds; {payload['machine']['cpus']} CPUs, {when}; `benchmarks/results/{payload['name']}.json`).", "",
             "| configuration | up (B/value) | down (B/value) | round 1 (s) | later rounds (s) | round / baseline | "
             "max error vs plaintext | documented bound |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for config in [c for c in CONFIGS if c in payload["rows"]]:  # the baselines first (the file's keys are sorted)
        row = payload["rows"][config]
        ratio = f"{row['round_time_ratio']:.2f}x {row['baseline']}" if config != row.get("baseline", config) else "baseline"
        bound = f"{row['error_bound']:.1e}" if "error_bound" in row else ""
        later = f"{row['later_round_seconds']:.2f}" if row["later_round_seconds"] is not None else "-"
        lines.append(f"| {config} | {row['bytes_per_value_up']:.2f} | {row['bytes_per_value_down']:.2f} | "
                     f"{row['first_round_seconds']:.2f} | {later} | {ratio} | {row['max_error']:.1e} | {bound} |")
    if "ckks_upload_vs_flare_he" in payload:
        lines += ["", f"fedcrypt CKKS uploads {payload['ckks_upload_vs_flare_he']:.3f} of the bytes FLARE's HE filters upload "
                      "for the same values (set-up rounds included)."]
    return "\n".join(lines) + "\n"


def write_doc(doc: Path, payload: dict[str, Any]) -> None:
    """Replace the text between ``<!-- BEGIN bench:nvflare -->`` and ``<!-- END bench:nvflare -->`` in ``doc``."""
    text = doc.read_text(encoding="utf-8")
    pattern = re.compile(r"(<!-- BEGIN bench:nvflare -->\n).*?(<!-- END bench:nvflare -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{doc}: no marker pair for bench:nvflare")
    doc.write_text(pattern.sub(lambda m: m[1] + render(payload) + m[2], text), encoding="utf-8")


def _spawn(config: str, workspace: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "NVFLARE_SIMULATOR_WORKSPACE_ROOT"}
    env.update({DIM_VARIABLE: str(args.dim), "HOME": str(workspace),
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    result = workspace / "result.json"
    command = [sys.executable, "-m", "benchmarks.nvflare", "--one", config, "--workspace", str(workspace),
               "--sites", str(args.sites), "--rounds", str(args.rounds), "--dim", str(args.dim)]
    log = (workspace / "log.txt").open("w")
    proc = subprocess.Popen(command, cwd=workspace, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        log.close()
    if proc.returncode != 0 or not result.is_file():
        tail = (workspace / "log.txt").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{config} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(result.read_text())


def _round_time(row: dict[str, Any]) -> float:
    """The round time compared: the later rounds' mean (warm), else the first round's."""
    return row["later_round_seconds"] if row["later_round_seconds"] is not None else row["first_round_seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="d = 10000, 3 sites, 1 round")
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--doc", type=Path, help="rewrite this page's bench:nvflare section from the result")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only rewrite --doc from this earlier result")
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.dim, args.sites, args.rounds = 10_000, 3, 1
    if args.render:
        if not args.doc:
            parser.error("--render needs --doc")
        write_doc(args.doc, {"name": args.render.stem, **json.loads(args.render.read_text())})
        return 0
    if args.one:
        workspace = Path(args.workspace)
        outcome = run_one(args.one, workspace, args.sites, args.rounds)
        (workspace / "result.json").write_text(json.dumps(outcome))
        return 0
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}; choose from {CONFIGS}")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fedcrypt-nvflare-bench-") as scratch:
        for config in configs:
            workspace = Path(scratch) / config.replace("+", "-plus")
            workspace.mkdir()
            rows[config] = _spawn(config, workspace, args)
            row = rows[config]
            bound = f" (bound {row['error_bound']:.1e})" if "error_bound" in row else ""
            print(f"{config:17s} up {row['bytes_per_value_up']:8.2f} B/value  down {row['bytes_per_value_down']:8.2f} B/value  "
                  f"round {_round_time(row):6.2f} s  max error {row['max_error']:.2e}{bound}", flush=True)
    for config, row in rows.items():
        base = rows.get(BASELINE[config])
        if base is not None:
            row["baseline"] = BASELINE[config]
            row["round_time_ratio"] = _round_time(row) / _round_time(base)
            row["bytes_up_ratio"] = row["bytes_up"] / base["bytes_up"]
    comparison = {}
    if "fedcrypt-ckks" in rows and "flare-he" in rows:
        comparison["ckks_upload_vs_flare_he"] = rows["fedcrypt-ckks"]["bytes_up"] / rows["flare-he"]["bytes_up"]
        print(f"fedcrypt CKKS upload / FLARE HE upload: {comparison['ckks_upload_vs_flare_he']:.3f}")
    command = "python -m benchmarks.nvflare" + (" --quick" if args.quick else
                                                 f" --dim {args.dim} --sites {args.sites} --rounds {args.rounds}")
    if args.configs != ",".join(CONFIGS):
        command += f" --configs {args.configs}"
    path = write_result("nvflare_quick" if args.quick else "nvflare",
                        {"dim": args.dim, "sites": args.sites, "rounds": args.rounds, "rows": rows, **comparison}, command)
    print(f"wrote {path}")
    if args.doc:
        write_doc(args.doc, {"name": path.stem, **json.loads(path.read_text())})
        print(f"rewrote the bench:nvflare section of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
