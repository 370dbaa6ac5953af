"""Threshold CKKS (fedcrypt.he.threshold, OpenFHE) beside single-key CKKS (fedcrypt.he).

Usage (the threshold backend needs CPython 3.10: ``scripts/setup_py310.sh``)::

    .venv310/bin/python -m benchmarks.he_threshold [--d 1126400] [--clients 10]
        [--repeats 3] [--baseline-python .venv/bin/python] [--presets wide compact]
        [--holders 10 3]

One run measures, for ``--clients`` clients and each committee size of ``--holders`` key
holders (n-of-n; the default is the clients themselves, then a 3-holder committee):

* key generation: the whole chain (sum of the holders' times) and the joint key's bytes;
* per-client encryption time of a d-value vector (bytes out) and upload bytes per value,
  for each preset;
* server weighted sum, one holder's partial decryption, fusion, share bytes per value;
* the max absolute error of the decrypted weighted sum and weighted mean against float64
  arithmetic, with the he benchmark's weights 1..1000 (preset ``wide``) and with weights
  1..12 (preset ``compact``, whose capacity is 128); every client applies its weight before
  it encrypts, the server only adds, and the flooding is sized from fresh ciphertexts;
  beside it the error model's bound (``ThresholdParams.sum_error_bound``) and standard
  deviation, and the measured standard deviation.

Baseline, same run: the single-key backend (``fedcrypt.he`` ``KeyOwner.encrypt``, preset
``compact``) lives on the project's default Python (TenSEAL), so it runs in a child process
of ``--baseline-python`` before, between and after the threshold presets; the ratio is the
threshold median over the median of those baseline medians (target <= 3), for wall time
and for process CPU time (steadier on a shared machine). One thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import time_call, write_result

ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds(fn: Any, repeats: int) -> dict[str, float]:
    """Process CPU time (user + system) per call: less sensitive than wall time to other
    processes on a shared CPU (every timed code path here is single-threaded)."""
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples), "repeats": repeats}


def _single_key(d: int, repeats: int) -> dict[str, Any]:
    """Child-process mode: the single-key backend's encryption of a d-value vector."""
    from fedcrypt.he import CkksParams, KeyOwner

    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=10))
    vector = np.random.default_rng(0).uniform(-1.0, 1.0, d)  # benchmark data, not secret
    blob = owner.encrypt(vector)
    timing = time_call(lambda: owner.encrypt(vector), repeats=repeats, warmup=0)
    cpu = _cpu_seconds(lambda: owner.encrypt(vector), repeats)
    return {"bytes_per_value": len(blob) / d, "encrypt": timing, "encrypt_cpu": cpu, "python": sys.version.split()[0]}


def _run_baseline(python: str, d: int, repeats: int) -> dict[str, Any]:
    out = subprocess.run(
        [python, "-m", "benchmarks.he_threshold", "--single-key-child", "--d", str(d), "--repeats", str(repeats)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _once(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _threshold(preset: str, clients: int, parties: int, d: int, repeats: int, max_weight: int) -> dict[str, Any]:
    from fedcrypt.he.threshold import KeyHolder, ThresholdParams, ThresholdServer

    params, estimate_s = _once(
        lambda: ThresholdParams.preset(preset, num_parties=parties, num_clients=clients, max_weight=max_weight)
    )
    server = ThresholdServer(params)
    holders = [KeyHolder(params, p, server.session) for p in range(parties)]
    keygen_s = 0.0
    joint = None
    for holder in holders:
        link, seconds = _once(lambda: holder.generate_key_share(server.key_input_for(holder.party)))
        keygen_s += seconds
        joint = server.receive_key_share(link.to_bytes())
    assert joint is not None
    for holder in holders:
        holder.receive_joint_key(joint.to_bytes())
    rng = np.random.default_rng(1)  # benchmark data, not secret
    vectors = [rng.uniform(-1.0, 1.0, d) for _ in range(clients)]
    weights = [int(w) for w in rng.integers(1, max_weight + 1, clients)]
    encrypt = time_call(lambda: holders[0].encrypt(vectors[0], weights[0]), repeats=repeats, warmup=0)
    encrypt_cpu = _cpu_seconds(lambda: holders[0].encrypt(vectors[0], weights[0]), repeats)
    # Clients need only the joint key; a holder's encrypt is that operation.
    uploads = [holders[i % parties].encrypt(v, w) for i, (v, w) in enumerate(zip(vectors, weights))]
    upload_bpv = len(uploads[0]) / d
    aggregate, sum_s = _once(lambda: server.weighted_sum(zip(uploads, weights)))
    del uploads
    decryption = server.start_decryption(aggregate)
    partial_times = []
    share_bytes = 0
    for holder in holders:
        share, seconds = _once(lambda: holder.partial_decrypt(aggregate))
        partial_times.append(seconds)
        raw = share.to_bytes()
        share_bytes = len(raw)
        decryption.receive_share(raw)
    result, fuse_s = _once(decryption.fuse)
    exact = sum(w * v for w, v in zip(weights, vectors))
    sum_error = float(np.max(np.abs(result - exact)))
    total_weight = decryption.total_weight
    mean_error = float(np.max(np.abs(result / total_weight - exact / sum(weights))))
    return {
        "preset": preset,
        "key_holders": parties,
        "params": {
            "ring_degree": params.ring_degree,
            "first_mod_bits": params.first_mod_bits,
            "scale_bits": params.scale_bits,
            "upload_level": params.upload_level,
            "num_parties": params.num_parties,
            "max_weight": params.max_weight,
            "flooding": params.flooding,
            "statistical_security": params.statistical_security,
            "noise_estimate_bits": params.noise_estimate_bits,
        },
        "noise_estimation_s": estimate_s,
        "keygen_chain_total_s": keygen_s,
        "joint_key_bytes": len(joint.public_key),
        "encrypt": encrypt,
        "encrypt_cpu": encrypt_cpu,
        "upload_bytes_per_value": upload_bpv,
        "weighted_sum_s": sum_s,
        "partial_decrypt_s": {"median": statistics.median(partial_times), "max": max(partial_times)},
        "share_bytes_per_value": share_bytes / d,
        "fusion_s": fuse_s,
        "weights": weights,
        "weighted_sum_max_abs_error": sum_error,
        "weighted_sum_error_std": float(np.std(result - exact)),
        "model_slot_error_std": params.slot_error_stddev(),
        "headroom_bits": params.headroom_bits(),
        "model_value_error_std": params.value_error_stddev(),
        "model_sum_error_bound": params.sum_error_bound(),
        "weighted_mean_max_abs_error": mean_error,
        "model_mean_error_bound": params.mean_error_bound(weights),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--d", type=int, default=1_126_400)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["wide", "compact"], choices=["wide", "compact"])
    parser.add_argument(
        "--holders", nargs="+", type=int, default=None, help="key-holder committee sizes (default: --clients, then 3)"
    )
    parser.add_argument("--baseline-python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--single-key-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single_key_child:
        print(json.dumps(_single_key(args.d, args.repeats)))
        return 0

    # The baseline runs before, between and after the threshold presets (shared CPUs drift).
    committees = args.holders or sorted({args.clients, 3}, reverse=True)
    baselines = [_run_baseline(args.baseline_python, args.d, args.repeats)]
    rows = []
    for parties in committees:
        for preset in args.presets:
            max_weight = 1000 if preset == "wide" else 12
            rows.append(_threshold(preset, args.clients, parties, args.d, args.repeats, max_weight))
        baselines.append(_run_baseline(args.baseline_python, args.d, args.repeats))
    before, after = baselines[0], baselines[-1]
    baseline_s = statistics.median([b["encrypt"]["median_s"] for b in baselines])
    baseline_cpu = statistics.median([b["encrypt_cpu"]["median_s"] for b in baselines])
    for row in rows:
        row["encrypt_ratio_vs_single_key"] = row["encrypt"]["median_s"] / baseline_s
        row["encrypt_cpu_ratio_vs_single_key"] = row["encrypt_cpu"]["median_s"] / baseline_cpu

    runs = ", ".join(f"{b['encrypt']['median_s']:.3f}" for b in baselines)
    print(f"d = {args.d:,}, {args.clients} clients; key holders {committees} (n-of-n)\n")
    print(f"{'system':<44}{'B/value':>9}{'wall s':>9}{'ratio':>7}{'cpu s':>9}{'ratio':>7}")
    print(
        f"{'single-key fedcrypt.he compact':<44}{before['bytes_per_value']:>9.2f}{baseline_s:>9.3f}{1.0:>7.2f}"
        f"{baseline_cpu:>9.3f}{1.0:>7.2f}   (Python {before['python']}; wall runs: {runs} s)"
    )
    for row in rows:
        label = f"threshold {row['preset']} (L={row['params']['upload_level']}, {row['key_holders']} holders)"
        print(
            f"{label:<44}{row['upload_bytes_per_value']:>9.2f}{row['encrypt']['median_s']:>9.3f}"
            f"{row['encrypt_ratio_vs_single_key']:>7.2f}{row['encrypt_cpu']['median_s']:>9.3f}"
            f"{row['encrypt_cpu_ratio_vs_single_key']:>7.2f}"
        )
    print()
    for row in rows:
        print(
            f"threshold {row['preset']}, {row['key_holders']} holders (estimate "
            f"{row['params']['noise_estimate_bits']} bits): keygen chain {row['keygen_chain_total_s']:.2f} s, joint key "
            f"{row['joint_key_bytes'] / 1e6:.2f} MB, weighted sum {row['weighted_sum_s']:.2f} s, partial decryption "
            f"{row['partial_decrypt_s']['median']:.2f} s (share {row['share_bytes_per_value']:.1f} B/value), fusion "
            f"{row['fusion_s']:.2f} s; weights 1..{row['params']['max_weight']}: max |error| sum "
            f"{row['weighted_sum_max_abs_error']:.3g} (std {row['weighted_sum_error_std']:.3g}, headroom "
            f"2^{row['headroom_bits']}, model flooding std {row['model_value_error_std']:.3g}, bound "
            f"{row['model_sum_error_bound']:.3g}), mean "
            f"{row['weighted_mean_max_abs_error']:.3g}"
        )
    mean_ok = all(r["weighted_mean_max_abs_error"] <= 1e-6 for r in rows)
    sum_ok = {f"{r['preset']}_{r['key_holders']}_holders": r["weighted_sum_max_abs_error"] <= 1e-6 for r in rows}
    ratio_ok = all(r["encrypt_ratio_vs_single_key"] <= 3.0 for r in rows)
    cpu_ratio_ok = all(r["encrypt_cpu_ratio_vs_single_key"] <= 3.0 for r in rows)
    path = write_result(
        "he_threshold",
        {
            "d": args.d,
            "clients": args.clients,
            "single_key_baseline": {"runs": baselines, "median_s": baseline_s, "median_cpu_s": baseline_cpu},
            "threshold": rows,
            "acceptance": {
                "weighted_mean_error_le_1e-6": mean_ok,
                "weighted_sum_error_le_1e-6": sum_ok,
                "encrypt_within_3x_single_key": ratio_ok,
                "encrypt_cpu_within_3x_single_key": cpu_ratio_ok,
            },
        },
        command="python -m benchmarks.he_threshold " + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    print(f"wrote {path}")
    return 0 if (mean_ok and ratio_ok) else 1


if __name__ == "__main__":
    sys.exit(main())
