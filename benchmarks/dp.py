"""Noise sampling for 1e6 coordinates against masking the same vector, in the same run.

Usage: python -m benchmarks.dp [--size 1000000] [--repeats 5] [--neighbours 10]

Baselines (measured in this run, on this machine):

* ``mask x1``: ``fedcrypt.crypto.mask_prg(seed, size, 32)`` plus one ``np.add`` into the
  vector: one AES-CTR expansion, the cheapest possible masking (a self mask only);
* ``mask x(k+1)``: the same for a SecAgg+ client with ``k`` neighbours (self mask plus one
  pairwise mask per neighbour), the masking a client really does per round.

Measured: the exact discrete Gaussian (local sigma as in a 16-bit, 100-client config),
Skellam (Poisson pair) and the central Box-Muller Gaussian, all on the AES-CTR source.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks._common import time_call, write_result
from fedcrypt.crypto import mask_prg, random_seed
from fedcrypt.dp._random import CryptoRandom
from fedcrypt.dp.distributed import DistributedDpConfig
from fedcrypt.dp.samplers import discrete_gaussian, gaussian, skellam


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--neighbours", type=int, default=10)
    args = parser.parse_args(argv)
    n = args.size
    vector = np.zeros(n, dtype=np.uint32)
    seeds = [random_seed() for _ in range(args.neighbours + 1)]

    def mask_one() -> None:
        np.add(vector, mask_prg(seeds[0], n, 32), out=vector)

    def mask_all() -> None:
        for seed in seeds:
            np.add(vector, mask_prg(seed, n, 32), out=vector)

    cfg = DistributedDpConfig(noise_multiplier=1.0, clip=1.0, expected_clients=100, bits=16)
    cfg_sk = DistributedDpConfig(noise_multiplier=1.0, clip=1.0, expected_clients=100, bits=16, mechanism="skellam")
    sigma2 = cfg.local_noise(n)
    mu = cfg_sk.local_noise(n)
    rng = CryptoRandom()
    cells = {
        "mask x1 (baseline)": time_call(mask_one, repeats=args.repeats),
        f"mask x{args.neighbours + 1} (SecAgg+ client, k={args.neighbours})": time_call(mask_all, repeats=args.repeats),
        "discrete Gaussian": time_call(lambda: discrete_gaussian(sigma2, n, rng), repeats=args.repeats),
        "Skellam": time_call(lambda: skellam(mu, n, rng), repeats=args.repeats),
        "Gaussian (central, float)": time_call(lambda: gaussian(1.0, n, rng), repeats=args.repeats),
    }
    base = cells["mask x1 (baseline)"]["median_s"]
    full = cells[f"mask x{args.neighbours + 1} (SecAgg+ client, k={args.neighbours})"]["median_s"]
    print(f"coordinates: {n:,}; local sigma^2 = {sigma2:.4g}, Skellam mu = {mu:.4g}")
    print(f"{'operation':<42}{'median ms':>11}{'min ms':>9}{'/ mask x1':>11}{'/ mask x(k+1)':>15}")
    ratios = {}
    for label, cell in cells.items():
        ratios[label] = {"vs_mask_x1": cell["median_s"] / base, "vs_mask_k_plus_1": cell["median_s"] / full}
        print(f"{label:<42}{cell['median_s'] * 1e3:>11.2f}{cell['min_s'] * 1e3:>9.2f}"
              f"{ratios[label]['vs_mask_x1']:>11.2f}{ratios[label]['vs_mask_k_plus_1']:>15.2f}")
    path = write_result(
        "dp",
        {"size": n, "neighbours": args.neighbours, "local_sigma2": sigma2, "skellam_mu": mu,
         "cells": cells, "ratios": ratios},
        command="python -m benchmarks.dp " + " ".join(argv or sys.argv[1:]),
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
