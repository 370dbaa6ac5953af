"""Noise sampling for 1e6 coordinates against masking the same vector, in the same run.

Usage: python -m benchmarks.dp [--size 1000000] [--repeats 5] [--clients 100]
       python -m benchmarks.dp --accounting-grid     (writes results/dp_accounting.json)
       python -m benchmarks.dp --sampler-stats       (writes results/dp_sampler_stats.json)

``--accounting-grid`` instead measures the accounting acceptance figures: the maximum
relative deviation of ``fedcrypt.dp.epsilon`` from dp-accounting's own accountants over
q x z x T x delta (the reference of ``tests/dp/test_accounting.py``), and of
``calibrate(epsilon(z))`` from ``z`` on a sub-grid. It takes about 15 minutes.

Baselines (measured in this run, on this machine, on the same ``size`` coordinates):

* ``mask x1``: ``fedcrypt.crypto.mask_prg(seed, size, 32)`` plus one ``np.add`` into the
  vector: one AES-CTR expansion, the cheapest possible masking (a self mask only);
* ``SecAgg+ client``: ``fedcrypt.crypto.mask_accumulate`` (the secagg client's masking
  routine) with the self mask and ``k = ceil(log2(clients))`` pairwise masks, the
  smallest degree SecAgg+ accepts for that many clients;
* ``SecAgg client``: the same with ``clients - 1`` pairwise masks (complete graph).

Each cell is timed twice: wall clock (``time.perf_counter``, median) and CPU time of this
process (``time.process_time``, minimum). On a shared, oversubscribed machine a long
operation is preempted more often than a 2 ms one, which inflates wall-clock ratios
against the short baseline; CPU time is immune to that, so the ratios against the
baselines are computed from CPU time (every operation here is single-threaded).

Measured: the exact discrete Gaussian (local sigma as in a 16-bit, 100-client config),
Skellam (Poisson pair) and the central Box-Muller Gaussian, all on the AES-CTR source.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

import time

from benchmarks._common import time_call, write_result
from fedcrypt.crypto import mask_accumulate, mask_prg, random_seed
from fedcrypt.dp._random import CryptoRandom
from fedcrypt.dp.distributed import DistributedDpConfig
from fedcrypt.dp.samplers import discrete_gaussian, gaussian, skellam


def cpu_time_call(fn, repeats: int = 5) -> dict[str, float]:
    """CPU seconds of this process per call: minimum and median over ``repeats`` (one warm-up)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    samples.sort()
    return {"cpu_min_s": samples[0], "cpu_median_s": samples[len(samples) // 2]}


def accounting_grid(argv: list[str] | None) -> int:
    """Max relative deviations of epsilon (full grid) and calibrate (sub-grid)."""
    import itertools

    from fedcrypt.dp import calibrate, epsilon
    from tests.dp.test_accounting import QS, TS, ZS, reference_epsilons

    result: dict[str, dict] = {}
    for accountant in ("rdp", "pld"):
        worst, where = 0.0, None
        for q, z, steps in itertools.product(QS, ZS, TS):
            for delta, ref in reference_epsilons(z, q, steps, accountant).items():
                dev = abs(epsilon(z, q, steps, delta, accountant) - ref) / ref
                if dev >= worst:
                    worst, where = dev, {"q": q, "z": z, "steps": steps, "delta": delta}
        result[f"epsilon_{accountant}"] = {"max_relative_deviation": worst, "at": where, "points": 200}
        print(f"epsilon ({accountant}) vs dp-accounting: max relative deviation {worst:.2e} at {where}", flush=True)
    for accountant in ("rdp", "pld"):
        worst, where, count = 0.0, None, 0
        for q, z, steps in itertools.product(QS, [0.7, 2.0, 10.0], [1, 100, 10000]):
            if accountant == "pld" and q == 0.1 and z < 1 and steps == 10000:
                continue  # epsilon ~ 800; a PLD calibration there needs > 10 GB
            eps = epsilon(z, q, steps, 1e-5, accountant)
            dev = abs(calibrate(eps, 1e-5, q, steps, accountant) - z) / z
            count += 1
            if dev >= worst:
                worst, where = dev, {"q": q, "z": z, "steps": steps}
        result[f"calibrate_{accountant}"] = {"max_relative_deviation": worst, "at": where, "points": count}
        print(f"calibrate(epsilon(z)) ({accountant}): max relative deviation {worst:.2e} at {where}", flush=True)
    path = write_result("dp_accounting", result, command="python -m benchmarks.dp " + " ".join(argv or sys.argv[1:]))
    print(f"wrote {path}")
    return 0


def sampler_stats(argv: list[str] | None) -> int:
    """Empirical mean and variance / theory for 1e6 samples, and the distributed sum's noise."""
    from fedcrypt.dp import DistributedDp
    from fedcrypt.dp.samplers import poisson

    n = 1_000_000
    rng = CryptoRandom()
    rows: dict[str, dict[str, float]] = {}
    for sigma2 in (1.0, 100.0, 2.237e5):
        x = discrete_gaussian(sigma2, n, rng).astype(np.float64)
        rows[f"discrete_gaussian sigma2={sigma2:g}"] = {"mean": x.mean(), "var_over_theory": x.var() / sigma2}
    for mu in (0.5, 40.0, 1.119e5):
        x = skellam(mu, n, rng).astype(np.float64)
        rows[f"skellam mu={mu:g}"] = {"mean": x.mean(), "var_over_theory": x.var() / (2 * mu)}
    for lam in (3.0, 1e4):
        x = poisson(lam, n, rng).astype(np.float64)
        rows[f"poisson lam={lam:g}"] = {"mean": x.mean() - lam, "var_over_theory": x.var() / lam}
    dim = 1 << 16
    for mechanism in ("ddgauss", "skellam"):
        cfg = DistributedDpConfig(0.8, 3.0, 8, bits=20, mechanism=mechanism)
        mech = DistributedDp(cfg, dim)
        for survivors in (8, 5):
            total = np.zeros(mech.ring_length, dtype=np.uint64)
            for _ in range(survivors):
                total += mech.encode(np.zeros(dim, np.float32))
            noise = mech.decode((total % (1 << 32)).astype(np.uint32), survivors)
            rows[f"{mechanism} sum, {survivors}/8 survivors"] = {
                "mean": noise.mean(), "var_over_theory": noise.var() / ((0.8 * 3.0) ** 2 * survivors / 8)}
    print(f"{'samples (1e6 each; sums: 65536 coordinates)':<48}{'mean':>10}{'var / theory':>14}")
    for label, row in rows.items():
        print(f"{label:<48}{row['mean']:>+10.4f}{row['var_over_theory']:>14.4f}")
    path = write_result("dp_sampler_stats", {"rows": rows}, command="python -m benchmarks.dp " + " ".join(argv or sys.argv[1:]))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    if "--sampler-stats" in (argv if argv is not None else sys.argv[1:]):
        return sampler_stats(argv)
    if "--accounting-grid" in (argv if argv is not None else sys.argv[1:]):
        return accounting_grid(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args(argv)
    n = args.size
    k = max(1, math.ceil(math.log2(args.clients)))
    vector = np.zeros(n, dtype=np.uint32)
    seeds = [random_seed() for _ in range(args.clients)]

    def mask_one() -> None:
        np.add(vector, mask_prg(seeds[0], n, 32), out=vector)

    def mask_secagg_plus() -> None:
        mask_accumulate(vector, [(seed, 1 if i % 2 else -1) for i, seed in enumerate(seeds[: k + 1])])

    def mask_secagg() -> None:
        mask_accumulate(vector, [(seed, 1 if i % 2 else -1) for i, seed in enumerate(seeds)])

    cfg = DistributedDpConfig(noise_multiplier=1.0, clip=1.0, expected_clients=args.clients, bits=16)
    cfg_sk = DistributedDpConfig(noise_multiplier=1.0, clip=1.0, expected_clients=args.clients, bits=16,
                                 mechanism="skellam")
    sigma2 = cfg.local_noise(n)
    mu = cfg_sk.local_noise(n)
    rng = CryptoRandom()
    operations = {
        "mask x1 (baseline)": (mask_one, args.repeats),
        f"SecAgg+ client masking (k={k})": (mask_secagg_plus, args.repeats),
        f"SecAgg client masking (k={args.clients - 1})": (mask_secagg, max(1, args.repeats // 2)),
        "discrete Gaussian": (lambda: discrete_gaussian(sigma2, n, rng), args.repeats),
        "Skellam": (lambda: skellam(mu, n, rng), args.repeats),
        "Gaussian (central, float)": (lambda: gaussian(1.0, n, rng), args.repeats),
    }
    cells = {}
    for label, (fn, repeats) in operations.items():
        cells[label] = {**time_call(fn, repeats=repeats), **cpu_time_call(fn, repeats=repeats)}
    base = cells["mask x1 (baseline)"]["cpu_min_s"]
    plus = cells[f"SecAgg+ client masking (k={k})"]["cpu_min_s"]
    full = cells[f"SecAgg client masking (k={args.clients - 1})"]["cpu_min_s"]
    print(f"coordinates: {n:,}; local sigma^2 = {sigma2:.4g}, Skellam mu = {mu:.4g}")
    print(f"{'operation':<36}{'wall med ms':>12}{'cpu min ms':>11}{'/ mask x1':>11}{'/ SecAgg+':>11}{'/ SecAgg':>10}")
    ratios = {}
    for label, cell in cells.items():
        c = cell["cpu_min_s"]
        ratios[label] = {"vs_mask_x1": c / base, "vs_secagg_plus": c / plus, "vs_secagg": c / full}
        print(f"{label:<36}{cell['median_s'] * 1e3:>12.2f}{c * 1e3:>11.2f}"
              f"{c / base:>11.2f}{c / plus:>11.2f}{c / full:>10.2f}")
    print("ratios use CPU time (see the module docstring)")
    path = write_result(
        "dp",
        {"size": n, "clients": args.clients, "secagg_plus_degree": k, "local_sigma2": sigma2, "skellam_mu": mu,
         "cells": cells, "ratios": ratios},
        command="python -m benchmarks.dp " + " ".join(argv or sys.argv[1:]),
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
