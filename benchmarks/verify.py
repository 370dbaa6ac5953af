"""Verified aggregation (PINE): upload size and speed at d = 1e5 and 1e6, and the attack counts.

Usage:
    python -m benchmarks.verify [--dims 100000 1000000] [--repeats 3]
    python -m benchmarks.verify --attacks [--trials 10000] [--honest 100000]
    python -m benchmarks.verify --report

Speed and size (issue #20's figures): one client with a vector of L2 norm 0.8 (bound 1.0,
``Pine40HmacSha256Aes128``, the config's defaults), a round with ``min_reports=1`` so one
report goes through every stage, every message through its bytes. Measured per report:

* ``upload bytes`` -- the client's Report; ``ratio`` against the encoded vector alone
  (``d`` Field40 elements, 5 bytes each); targets 1.05 at d = 1e5 and 1.01 at d = 1e6;
* ``client s`` -- clip, encode, prove, share and seal (target 10 s at d = 1e6, one core);
* ``leader s`` -- decode the report and ``prep_init`` (UPLOAD), then decide with the
  helper's prep share (PREPARE); ``helper s`` -- open, expand and ``prep_init`` (PREPARE),
  then decide and re-expand its output share (AGGREGATE); target 10 s each at d = 1e6.

The process pins itself to one CPU (``os.sched_setaffinity``) and numpy's BLAS to one
thread, so "one core" holds; each figure is the median of ``--repeats`` runs (the
measurements of a loaded shared machine vary; the minimum is printed too).

``--attacks`` runs :mod:`fedcrypt.testing.verify_attacks`: every attack ``--trials`` times
(none may be accepted) and ``--honest`` honest reports (all must be accepted), at d = 8.

Results go to ``benchmarks/results/verify.json`` (``verify_attacks.json`` for attacks only,
``verify_honest.json`` for honest reports only) with the command. ``--report`` rewrites the
verified-aggregation section of ``docs/performance.md`` (between its ``verify`` markers)
from those files.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from fedcrypt.crypto import X25519KeyPair  # noqa: E402
from fedcrypt.verify import HELPER, Helper, Leader, VerifyClient, VerifyConfig  # noqa: E402

TARGET_RATIO = {100_000: 1.05, 1_000_000: 1.01}
TARGET_SECONDS = 10.0


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "not pinned"


def one_report(config: VerifyConfig, helper_key: X25519KeyPair, x: np.ndarray) -> dict[str, float]:
    """One report through a whole round; seconds per party and the upload size."""
    verify_key = os.urandom(32)
    client = VerifyClient(config, 0)
    leader = Leader(config, verify_key, [0])
    helper = Helper(config, verify_key, helper_key, last_released_round=None)
    request = leader.begin()[0].to_bytes()
    t0 = time.perf_counter()
    client.set_input(x)
    report = client.handle(request).to_bytes()
    t1 = time.perf_counter()
    leader.receive(report)
    batch = leader.end_stage()[HELPER].to_bytes()
    t2 = time.perf_counter()
    response = helper.handle(batch).to_bytes()
    t3 = time.perf_counter()
    leader.receive(response)
    aggregate = leader.end_stage()[HELPER].to_bytes()
    t4 = time.perf_counter()
    share = helper.handle(aggregate).to_bytes()
    t5 = time.perf_counter()
    leader.receive(share)
    leader.end_stage()
    t6 = time.perf_counter()
    error = float(np.max(np.abs(leader.result.sum - x)))
    return {
        "upload_bytes": len(report),
        "client_s": t1 - t0,
        "leader_s": (t2 - t1) + (t4 - t3) + (t6 - t5),
        "helper_s": (t3 - t2) + (t5 - t4),
        "max_error": error,
    }


def measure(dims: list[int], repeats: int) -> list[dict[str, Any]]:
    helper_key = X25519KeyPair.generate()
    rows = []
    for d in dims:
        config = VerifyConfig.for_dimension(d, 1.0, helper_key.public_bytes, min_reports=1)
        rng = np.random.default_rng(d)
        x = rng.normal(size=d)
        x = (x * (0.8 / np.linalg.norm(x))).astype(np.float32)
        runs = [one_report(config, helper_key, x) for _ in range(repeats)]
        row: dict[str, Any] = {
            "d": d,
            "field": config.params.field.name,
            "num_frac_bits": config.params.num_frac_bits,
            "chunk_length": config.params.chunk_length,
            "chunk_length_norm_equality": config.params.chunk_length_norm_equality,
            "encoded_vector_bytes": config.encoded_vector_bytes,
            "upload_bytes": runs[0]["upload_bytes"],
            "ratio": runs[0]["upload_bytes"] / config.encoded_vector_bytes,
            "target_ratio": TARGET_RATIO.get(d),
            "max_error": max(r["max_error"] for r in runs),
        }
        for key in ("client_s", "leader_s", "helper_s"):
            values = [r[key] for r in runs]
            row[key] = statistics.median(values)
            row[key + "_min"] = min(values)
        rows.append(row)
        target = "" if row["target_ratio"] is None else f" (target {row['target_ratio']})"
        print(
            f"d={d:>9,}  upload {row['upload_bytes']:>10,} B  ratio {row['ratio']:.4f}{target}"
            f"  client {row['client_s']:.2f} s (min {row['client_s_min']:.2f})"
            f"  leader {row['leader_s']:.2f} s (min {row['leader_s_min']:.2f})"
            f"  helper {row['helper_s']:.2f} s (min {row['helper_s_min']:.2f})",
            flush=True,
        )
    return rows


def attacks(trials: int, honest: int) -> dict[str, Any]:
    from fedcrypt.testing.verify_attacks import ATTACKS, AttackEnv, Outcome, run_attack, run_honest

    env = AttackEnv()
    out: dict[str, Any] = {"trials": trials, "honest_trials": honest, "attacks": {}}
    for name in ATTACKS:
        start = time.perf_counter()
        tally = run_attack(name, trials, env=env, seed=2020)
        out["attacks"][name] = {o.value: tally.outcomes[o] for o in Outcome}
        print(f"{tally.summary()}  ({time.perf_counter() - start:.0f} s)", flush=True)
        for reason, count in sorted(tally.reasons.items()):
            print(f"    {count:>6}  {reason}")
    if honest:
        start = time.perf_counter()
        tally = run_honest(honest, env=env, seed=2020)
        out["honest"] = {o.value: tally.outcomes[o] for o in Outcome}
        print(f"{tally.summary()}  ({time.perf_counter() - start:.0f} s)", flush=True)
    out["ok"] = all(v["accepted"] == 0 for v in out["attacks"].values()) and (
        not honest or out["honest"]["accepted"] == honest
    )
    return out


_START, _END = "<!-- verify:start -->", "<!-- verify:end -->"


def report() -> str:
    """The Markdown section of docs/performance.md, from the result files of the runs."""
    import json

    from benchmarks._common import RESULTS_DIR

    def load(name: str) -> dict[str, Any] | None:
        path = RESULTS_DIR / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def when(run: dict[str, Any]) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run["unix_time"]))

    speed = load("verify")
    if speed is None:
        raise SystemExit("no benchmarks/results/verify.json: run python -m benchmarks.verify first")
    lines = [
        f"One report through a whole round (`{speed['command'].strip()}`, {when(speed)}, pinned to "
        f"{speed['pinned']} of {speed['machine']['cpus']}, shared), medians of the repeats:",
        "",
        "| d | upload | upload / field-encoded vector | client | leader | helper | max abs error |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in speed["rows"]:
        lines.append(
            f"| {row['d']:,} | {row['upload_bytes']:,} B | {row['ratio']:.4f} | {row['client_s']:.2f} s | "
            f"{row['leader_s']:.2f} s | {row['helper_s']:.2f} s | {row['max_error']:.2e} |"
        )
    if speed["rows"]:
        first = speed["rows"][0]
        lines += ["", f"({first['field']}, {first['num_frac_bits']} fractional bits at L2 bound 1.)"]
    attack = load("verify_attacks")
    if attack is not None and attack["trials"]:
        counts = ", ".join(f"{name} {v['accepted']} accepted" for name, v in attack["attacks"].items())
        lines += ["", f"Attacks (`{attack['command'].strip()}`, {when(attack)}), {attack['trials']:,} trials each: "
                      f"{counts}."]
    honest = load("verify_honest")
    if honest is not None and honest["honest_trials"]:
        lines += ["", f"Honest reports (`{honest['command'].strip()}`, {when(honest)}): "
                      f"{honest['honest']['accepted']:,} of {honest['honest_trials']:,} accepted."]
    return "\n".join(lines)


def write_report(doc: Any) -> None:
    """Replace the section between the verify markers of ``doc`` (a path) with :func:`report`."""
    text = doc.read_text()
    if _START not in text or _END not in text:
        raise SystemExit(f"{doc} has no {_START} ... {_END} section")
    head, rest = text.split(_START, 1)
    _, tail = rest.split(_END, 1)
    doc.write_text(f"{head}{_START}\n{report()}\n{_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.verify", description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attacks", action="store_true", help="run the attack suite instead")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--honest", type=int, default=100_000)
    parser.add_argument("--report", action="store_true", help="rewrite docs/performance.md's section from the results")
    args = parser.parse_args(argv)
    if args.report:
        from pathlib import Path

        write_report(Path(__file__).resolve().parent.parent / "docs" / "performance.md")
        return 0
    command = "python -m benchmarks.verify " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    pinned = _pin_one_core()
    print(f"$ {command.strip()}   ({pinned}, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']})")
    if args.attacks:
        result = attacks(args.trials, args.honest)
        name = "verify_attacks" if not args.honest else "verify_honest" if not args.trials else "verify_attacks_honest"
        write_result(name, result, command)
        return 0 if result["ok"] else 1
    rows = measure(args.dims, args.repeats)
    write_result("verify", {"rows": rows, "pinned": pinned}, command)
    ok = all(
        (r["target_ratio"] is None or r["ratio"] <= r["target_ratio"])
        and (r["d"] != 1_000_000 or max(r["client_s"], r["leader_s"], r["helper_s"]) <= TARGET_SECONDS)
        for r in rows
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
