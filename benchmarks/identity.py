"""What identities cost: a SecAgg round with ``verify_survivors`` on against the same round off.

Usage: python -m benchmarks.identity [--clients 10] [--dimension 1000000] [--repeats 5] [--neighbours K]

Both rounds are ``simulate_ring`` over the same ring vectors (every client and the server in
this process: key agreement, Shamir shares, masking, unmasking). The malicious-server mode
adds Ed25519 signatures on adverts, masking attestations and survivor sets (three signs per
client), their checks (the ``n - 1`` other adverts, a quorum ``q`` of survivor-set signatures
and one attestation per other share holder: ``2n - 2 + q`` Ed25519 verifications per client
in SecAgg, 24 at n=10, and ``3n`` at the server; one verification costs about three signs and they are most of the
difference), a full key directory per client and the consistency round. Two figures per round:

* **round** (the deployment's shape): the busiest client's time in its protocol object plus
  the server's (``max_client_seconds + server_seconds``): clients run in parallel in a
  deployment, so this is what a round waits for, network aside;
* **in-process total**: the wall time of the whole simulation, every client one after
  another (what one machine spends on all parties).

The two modes are run in interleaved rounds (order alternating); each ratio is the median
over rounds of the per-round ratio, so a load spike on a shared CPU hits both alike.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from benchmarks._common import write_result
from benchmarks.secagg import paired, round_ratio
from fedcrypt.errors import HonestButCuriousWarning
from fedcrypt.secagg import SecAggConfig, simulate_ring


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--dimension", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--neighbours", type=int, default=None, help="SecAgg+ degree (default: complete graph)")
    args = parser.parse_args(argv)
    n, d = args.clients, args.dimension
    holders = n if args.neighbours is None else args.neighbours + 1
    threshold = holders // 2 + 1
    configs = {
        mode: SecAggConfig(num_clients=n, threshold=threshold, neighbours=args.neighbours, verify_survivors=mode == "verified")
        for mode in ("honest-but-curious", "verified")
    }
    # inputs are public benchmark data: a NumPy generator is fine here, never for a secret
    vectors = [np.random.default_rng(i).integers(0, 2**32, d, dtype=np.uint32) for i in range(n)]
    expected = np.sum(np.stack(vectors).astype(np.uint64), axis=0).astype(np.uint32)

    rounds: dict[str, list[float]] = {mode: [] for mode in configs}

    def run(mode: str):
        def go() -> None:
            result = simulate_ring(vectors, configs[mode], round_id=1)
            assert np.array_equal(result.ring_sum, expected), "the round's sum is wrong"
            rounds[mode].append(result.max_client_seconds + result.server_seconds)

        return go

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        timings = paired({mode: run(mode) for mode in configs}, args.repeats)
    ratio = round_ratio(timings, "verified", "honest-but-curious")
    for mode in rounds:
        del rounds[mode][0]  # the warm-up run
    round_ratios = [v / h for v, h in zip(rounds["verified"], rounds["honest-but-curious"])]
    critical = float(np.median(round_ratios))
    record = {
        "clients": n,
        "dimension": d,
        "threshold": threshold,
        "neighbours": args.neighbours,
        "repeats": args.repeats,
        "seconds": {mode: {k: v for k, v in t.items() if k != "samples"} for mode, t in timings.items()},
        "round_seconds": {mode: float(np.median(v)) for mode, v in rounds.items()},
        "ratio_round": critical,
        "ratio_in_process_total": ratio,
    }
    print(f"SecAgg round, n={n}, d={d:.0e}, t={threshold}, neighbours={args.neighbours}, {args.repeats} interleaved repeats")
    for mode, t in timings.items():
        print(
            f"  {mode:<19} round {np.median(rounds[mode]):.3f} s (busiest client + server); "
            f"in-process total {t['median_s']:.2f} s (min {t['min_s']:.2f}, max {t['max_s']:.2f})"
        )
    print(f"  verify_survivors on / off: round {critical:.3f}x, in-process total {ratio:.3f}x (medians of per-round ratios)")
    write_result("identity", record, "python -m benchmarks.identity " + " ".join(argv if argv is not None else sys.argv[1:]))
    return record


if __name__ == "__main__":
    main()
