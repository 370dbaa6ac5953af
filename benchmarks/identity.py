"""What identities cost: a SecAgg round with ``verify_survivors`` on against the same round off.

Usage: python -m benchmarks.identity [--clients 10] [--dimension 1000000] [--repeats 5] [--neighbours K] [--doc docs/performance.md]

Both rounds are ``simulate_ring`` over the same ring vectors (every client and the server in
this process: key agreement, Shamir shares, masking, unmasking). The malicious-server mode
adds Ed25519 signatures on adverts, masking attestations and survivor sets (three signs per
client), their checks (the ``n - 1`` other adverts, a quorum ``q`` of survivor-set signatures
and one attestation per other share holder: ``2n - 2 + q`` Ed25519 verifications per client
in SecAgg, 24 at n=10, and ``3n`` at the server), a full key directory per client and the
consistency round. Two figures per round:

* **round** (the deployment's shape): the busiest client's time in its protocol object plus
  the server's (``max_client_seconds + server_seconds``): clients run in parallel in a
  deployment, so this is what a round waits for, network aside;
* **in-process total**: the wall time of the whole simulation, every client one after
  another (what one machine spends on all parties).

Where the difference goes: a third round, ``verified-unchecked``, is the verified round with
every Ed25519 verification replaced by a no-op (an analysis device only: the signatures are
valid, the sum is still checked, no deployment can run so). Its ratio to the honest round is
what identities cost besides the verifications (signing, larger messages, the consistency
stage); the verified round's excess over it is what the verifications cost in place. The
number of verifications and signatures on the round's path is counted in one more, untimed,
verified round.

The modes are run in interleaved rounds (order rotated); each ratio is the median over
rounds of the per-round ratio, so a load spike on a shared CPU hits every mode alike.
``--doc PATH`` rewrites the ``bench:identity`` block of that page with this run's figures.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np

import fedcrypt.secagg.client as _client_module
import fedcrypt.secagg.server as _server_module
from benchmarks._common import write_result
from benchmarks.secagg import paired, round_ratio
from fedcrypt.crypto import Ed25519KeyPair
from fedcrypt.errors import HonestButCuriousWarning
from fedcrypt.secagg import SecAggConfig, simulate_ring

HONEST, VERIFIED, UNCHECKED = "honest-but-curious", "verified", "verified-unchecked"
TARGET = 1.15  # issue "round protocols and identities": verify_survivors on <= 1.15x off, n=10, d=1e6


@contextlib.contextmanager
def _patched_verify(replace: dict[str, object]) -> Iterator[None]:
    """Swap the SecAgg client's and server's ``ed25519_verify`` (analysis only), restored on exit."""
    modules = {"client": _client_module, "server": _server_module}
    saved = {name: modules[name].ed25519_verify for name in replace}
    try:
        for name, fn in replace.items():
            modules[name].ed25519_verify = fn
        yield
    finally:
        for name, fn in saved.items():
            modules[name].ed25519_verify = fn


def count_signatures(vectors: list[np.ndarray], config: SecAggConfig) -> dict[str, float]:
    """Ed25519 verifications (client side, server side) and signatures in one verified round."""
    counts: Counter[str] = Counter()
    originals = {"client": _client_module.ed25519_verify, "server": _server_module.ed25519_verify}

    def counting(side: str):
        def verify(*args: object) -> None:
            counts[side] += 1
            originals[side](*args)  # type: ignore[operator]

        return verify

    sign = Ed25519KeyPair.sign

    def counting_sign(self: Ed25519KeyPair, message: bytes) -> bytes:
        counts["sign"] += 1
        return sign(self, message)

    Ed25519KeyPair.sign = counting_sign  # type: ignore[method-assign]
    try:
        with _patched_verify({"client": counting("client"), "server": counting("server")}):
            simulate_ring(vectors, config, round_id=1)
    finally:
        Ed25519KeyPair.sign = sign  # type: ignore[method-assign]
    n = config.num_clients
    return {"client_verifies_per_client": counts["client"] / n, "server_verifies": counts["server"], "signs_per_client": counts["sign"] / n}


def verify_seconds(count: int = 200) -> float:
    """Seconds per Ed25519 verification, in a hot loop (tables in cache: a lower bound in place)."""
    pair = Ed25519KeyPair.generate()
    message = bytes(200)
    signature = pair.sign(message)
    verify = _client_module.ed25519_verify
    start = time.perf_counter()
    for _ in range(count):
        verify(pair.public_bytes, signature, message)
    return (time.perf_counter() - start) / count


def doc_block(record: dict) -> str:
    """The ``bench:identity`` block of docs/performance.md, from one run's record."""
    n, d = record["clients"], record["dimension"]
    r, c = record["round_seconds"], record["counts"]
    ms = {mode: 1000 * v for mode, v in r.items()}
    lines = [
        f"Command: `{record['command']}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(record['unix_time']))}); "
        f"SecAgg, n = {n}, d = {d:,}, t = {record['threshold']}, {record['repeats']} interleaved repeats.",
        "",
        "| round (busiest client + server) | median | ratio to honest-but-curious |",
        "|---|---|---|",
        f"| honest-but-curious (`verify_survivors=False`) | {ms[HONEST]:.1f} ms | 1 |",
        f"| verified (`verify_survivors=True`) | {ms[VERIFIED]:.1f} ms | **{record['ratio_round']:.3f}x** (target <= {TARGET}x) |",
        f"| verified, verifications skipped (analysis only) | {ms[UNCHECKED]:.1f} ms | {record['ratio_round_unchecked']:.3f}x |",
        "",
        f"On the round's path: {c['client_verifies_per_client']:g} Ed25519 verifications and {c['signs_per_client']:g} signatures "
        f"per client, {c['server_verifies']:g} verifications at the server; one verification takes "
        f"{1e6 * record['verify_seconds']:.0f} µs in a hot loop here. The verifications are "
        f"{record['verification_share']:.0%} of what identities add to the round.",
    ]
    return "\n".join(lines)


def write_doc(path: Path, record: dict) -> None:
    """Replace the ``bench:identity`` block of ``path`` with this run's figures."""
    text = path.read_text()
    pattern = re.compile(r"(<!-- BEGIN bench:identity -->\n).*?(<!-- END bench:identity -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no marker pair for bench:identity")
    path.write_text(pattern.sub(lambda m: m.group(1) + doc_block(record) + "\n" + m.group(2), text))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--dimension", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--neighbours", type=int, default=None, help="SecAgg+ degree (default: complete graph)")
    parser.add_argument("--doc", type=Path, default=None, help="rewrite the bench:identity block of this page")
    args = parser.parse_args(argv)
    n, d = args.clients, args.dimension
    holders = n if args.neighbours is None else args.neighbours + 1
    threshold = holders // 2 + 1
    configs = {
        mode: SecAggConfig(num_clients=n, threshold=threshold, neighbours=args.neighbours, verify_survivors=mode != HONEST)
        for mode in (HONEST, VERIFIED, UNCHECKED)
    }
    # inputs are public benchmark data: a NumPy generator is fine here, never for a secret
    vectors = [np.random.default_rng(i).integers(0, 2**32, d, dtype=np.uint32) for i in range(n)]
    expected = np.sum(np.stack(vectors).astype(np.uint64), axis=0).astype(np.uint32)

    rounds: dict[str, list[float]] = {mode: [] for mode in configs}

    def skip(*_: object) -> None:
        return None

    def run(mode: str):
        def go() -> None:
            with _patched_verify({"client": skip, "server": skip} if mode == UNCHECKED else {}):
                result = simulate_ring(vectors, configs[mode], round_id=1)
            assert np.array_equal(result.ring_sum, expected), "the round's sum is wrong"
            rounds[mode].append(result.max_client_seconds + result.server_seconds)

        return go

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        counts = count_signatures(vectors, configs[VERIFIED])
        timings = paired({mode: run(mode) for mode in configs}, args.repeats)
    per_verify = verify_seconds()
    ratio = round_ratio(timings, VERIFIED, HONEST)
    for mode in rounds:
        del rounds[mode][0]  # the warm-up run
    ratios = {mode: float(np.median([v / h for v, h in zip(rounds[mode], rounds[HONEST])])) for mode in (VERIFIED, UNCHECKED)}
    medians = {mode: float(np.median(v)) for mode, v in rounds.items()}
    added = medians[VERIFIED] - medians[HONEST]
    share = (medians[VERIFIED] - medians[UNCHECKED]) / added if added > 0 else float("nan")
    command = "python -m benchmarks.identity " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {
        "clients": n,
        "dimension": d,
        "threshold": threshold,
        "neighbours": args.neighbours,
        "repeats": args.repeats,
        "seconds": {mode: {k: v for k, v in t.items() if k != "samples"} for mode, t in timings.items()},
        "round_seconds": medians,
        "ratio_round": ratios[VERIFIED],
        "ratio_round_unchecked": ratios[UNCHECKED],
        "ratio_in_process_total": ratio,
        "counts": counts,
        "verify_seconds": per_verify,
        "verification_share": share,
        "target": TARGET,
    }
    print(f"SecAgg round, n={n}, d={d:.0e}, t={threshold}, neighbours={args.neighbours}, {args.repeats} interleaved repeats")
    for mode, t in timings.items():
        print(
            f"  {mode:<19} round {1000 * medians[mode]:.1f} ms (busiest client + server); "
            f"in-process total {t['median_s']:.2f} s (min {t['min_s']:.2f}, max {t['max_s']:.2f})"
        )
    print(
        f"  verify_survivors on / off: round {ratios[VERIFIED]:.3f}x (target <= {TARGET}x), "
        f"in-process total {ratio:.3f}x (medians of per-round ratios)"
    )
    print(f"  verifications skipped (analysis only) / off: round {ratios[UNCHECKED]:.3f}x")
    print(
        f"  on the round's path: {counts['client_verifies_per_client']:g} verifications and {counts['signs_per_client']:g} signatures per client, "
        f"{counts['server_verifies']:g} verifications at the server; {1e6 * per_verify:.0f} us per verification (hot loop); "
        f"verifications are {share:.0%} of what identities add"
    )
    write_result("identity", record, command)
    record["command"], record["unix_time"] = command, time.time()
    if args.doc is not None:
        write_doc(args.doc, record)
        print(f"  wrote the bench:identity block of {args.doc}")
    return record


if __name__ == "__main__":
    main()
