"""SecAgg / SecAgg+ costs side by side with Flower's SecAgg+ primitives and raw AES-256-CTR.

Usage: python -m benchmarks.secagg [--repeats 5] [--quick]

Every comparison is measured in this one run on this machine. The CPU may be shared, so
the contenders of one comparison are timed in interleaved rounds and every ratio reported
is the median over rounds of the per-round ratio (a load spike then hits both sides);
absolute times are medians and only indicative:

1. client masking, seeds given: fedcrypt's fused ``mask_accumulate`` (self mask + k pairwise
   masks into the client's own copy of its encoded input, in place, as ``ClientProtocol``
   does) against (a) the raw AES-256-CTR keystream of `cryptography` for the same number of
   bytes, generated into one reused cache-sized buffer (never touches DRAM: the strictest
   baseline), (a') the same keystream written to a full-length buffer, and (b)
   Flower's per-client masking: ``quantize`` + ``pseudo_rand_gen`` for the self mask and each
   pairwise mask + ``parameters_addition/subtraction`` + ``parameters_mod``. fedcrypt's
   figure "with encoding" adds ``FixedPointCodec.encode`` (Flower's includes ``quantize``).
2. server unmasking at (n, k, d, dropouts): the UNMASK ``end_stage`` of a real
   ``ServerProtocol`` round (Shamir reconstruction, self masks of survivors, pairwise masks
   of dropped clients) plus ``decode_sum``, against Flower's server unmask (``combine_shares``,
   ``generate_shared_key``, ``pseudo_rand_gen``, arithmetic, ``dequantize``) on the same
   shapes; Flower's secrets are shared with its own ``create_shares``.
3. upload bytes per parameter (MaskedInput encoding; Flower sends int64 arrays: 8 bytes).
4. server peak memory at n=10 and n=100, d=1e6: the server runs alone in a child process
   fed message bytes through a pipe; peak Python-traced memory (tracemalloc) and peak RSS.
5. ``simulate_ring`` at n=1000, SecAgg+ k=20 (2 ceil(log2 n)), d=1e5, 5% dropout at
   SHARE_KEYS and 5% at MASKED_INPUT: per-client and server costs.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import sys
import time
import tracemalloc
from typing import Callable

import numpy as np

from benchmarks._common import write_result
from fedcrypt.crypto import mask_accumulate, random_seed
from fedcrypt.secagg import SecAggConfig, Stage, simulate_ring

DIMENSIONS = (100_000, 1_130_000, 4_194_304)


# ----------------------------------------------------------------------------- paired timing
def paired(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Time several functions in interleaved rounds (order rotated each round).

    On a shared, noisy CPU a load spike then hits every contender of a round alike, so
    the per-round ratios are steadier than ratios of separately taken medians. Returns,
    per name, the median/min/max seconds and the per-round times (for ratios).
    """
    names = list(fns)
    for name in names:  # warm-up
        fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": float(np.median(v)), "min_s": min(v), "max_s": max(v), "repeats": repeats, "samples": v}
        for name, v in samples.items()
    }


def round_ratio(timings: dict[str, dict], numerator: str, denominator: str) -> float:
    """Median over rounds of numerator_time / denominator_time."""
    a, b = timings[numerator]["samples"], timings[denominator]["samples"]
    return float(np.median([x / y for x, y in zip(a, b)]))


# ----------------------------------------------------------------------------- raw keystream
def raw_keystream(nbytes: int, seeds: list[bytes]) -> None:
    """AES-256-CTR keystream of ``nbytes`` in total over ``seeds``, into one reused 64 KiB buffer."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    chunk = 1 << 16
    zeros = bytes(chunk)
    out = bytearray(chunk + 15)
    per_seed = nbytes // len(seeds)
    for seed in seeds:
        enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
        for start in range(0, per_seed, chunk):
            n = min(chunk, per_seed - start)
            enc.update_into(zeros[:n] if n < chunk else zeros, out)


def raw_keystream_to_memory(per_seed_bytes: int, seeds: list[bytes], sink: bytearray) -> None:
    """The same keystream written to a full-length buffer (as ``mask_prg`` does), 256 KiB per call."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    chunk = 1 << 18
    zeros = bytes(chunk)
    view = memoryview(sink)
    for seed in seeds:
        enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
        for start in range(0, per_seed_bytes, chunk):
            n = min(chunk, per_seed_bytes - start)
            enc.update_into(zeros[:n] if n < chunk else zeros, view[start : start + n + 15])


# ----------------------------------------------------------------------------- Flower side
def flower_client_masking(params: np.ndarray, seeds: list[bytes], my_id: int, ids: list[int]) -> list[np.ndarray]:
    """Flower SecAgg+ client masking (secaggplus_mod._collect_masked_vectors), seeds given."""
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_combine,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    mod_range = 1 << 32
    quantized = factor_combine(1, quantize([params], 8.0, 1 << 22))
    dims = [a.shape for a in quantized]
    quantized = parameters_addition(quantized, pseudo_rand_gen(seeds[0], mod_range, dims))
    for seed, peer in zip(seeds[1:], ids):
        mask = pseudo_rand_gen(seed, mod_range, dims)
        quantized = parameters_addition(quantized, mask) if my_id > peer else parameters_subtraction(quantized, mask)
    return parameters_mod(quantized, mod_range)


def flower_server_setup(n: int, k: int, d: int, dropped: list[int], threshold: int) -> dict:
    """Shares and keys, made with Flower's own primitives, for its server unmask."""
    from flwr.common.secure_aggregation.crypto.shamir import create_shares
    from flwr.supercore.primitives.asymmetric import generate_key_pairs, private_key_to_bytes, public_key_to_bytes

    keys = [generate_key_pairs() for _ in range(n)]
    neighbours = {i: [(i + j) % n for j in range(-(k // 2), k // 2 + 1)] for i in range(n)}
    shares = {}
    for i in range(n):
        secret = private_key_to_bytes(keys[i][0]) if i in dropped else os.urandom(32)
        shares[i] = create_shares(secret, threshold, k + 1)[:threshold]
    return {
        "aggregate": [np.array([n]), np.zeros(d, dtype=np.int64)],
        "shares": shares,
        "public": {i: public_key_to_bytes(keys[i][1]) for i in range(n)},
        "neighbours": neighbours,
        "dropped": set(dropped),
    }


def flower_server_unmask(state: dict) -> list[np.ndarray]:
    """Flower SecAgg+ server unmask (secaggplus_workflow.unmask_stage) on prepared shares."""
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

    mod_range = 1 << 32
    masked = list(state["aggregate"])
    for nid, share_list in state["shares"].items():
        secret = combine_shares(share_list)
        if nid not in state["dropped"]:
            masked = parameters_subtraction(masked, pseudo_rand_gen(secret, mod_range, get_parameters_shape(masked)))
        else:
            for peer in state["neighbours"][nid]:
                if peer == nid:
                    continue
                shared = generate_shared_key(bytes_to_private_key(secret), bytes_to_public_key(state["public"][peer]))
                mask = pseudo_rand_gen(shared, mod_range, get_parameters_shape(masked))
                masked = parameters_addition(masked, mask) if nid > peer else parameters_subtraction(masked, mask)
    recon = parameters_mod(masked, mod_range)
    _, recon = factor_extract(recon)
    return dequantize(recon, 8.0, 1 << 22)


# ----------------------------------------------------------------------------- fedcrypt side
def secagg_threshold(holders: int) -> int:
    return holders // 2 + 1


def run_round_to_unmask(config: SecAggConfig, d: int, dropped: set[int]):
    """Drive clients and a server through bytes up to (not including) the UNMASK end_stage."""
    from fedcrypt.secagg import ClientProtocol, ServerProtocol

    n = config.num_clients
    rng = np.random.default_rng(1)  # benchmark inputs, not secret
    ring = config.codec.ring_dtype
    clients = [ClientProtocol(config, i) for i in range(n)]
    server = ServerProtocol(config, dimension=d)
    for c in clients:
        server.receive(c.advertise().to_bytes())
    requests = server.end_stage()
    for stage in (Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK):
        for i, request in requests.items():
            if stage is Stage.MASKED_INPUT:
                if i in dropped:
                    continue
                clients[i].set_input(rng.integers(0, 1 << 32, size=d, dtype=np.uint64).astype(ring))
            server.receive(clients[i].handle(request.to_bytes()).to_bytes())
        if stage is not Stage.UNMASK:
            requests = server.end_stage()
    return server


# ----------------------------------------------------------------------------- memory child
def _server_child(conn, config_kwargs: dict, d: int) -> None:
    from fedcrypt.secagg import ServerProtocol

    config = SecAggConfig(**config_kwargs)
    tracemalloc.start()
    server = ServerProtocol(config, dimension=d)
    while True:
        kind, payload = conn.recv()
        if kind == "receive":
            server.receive(payload)
            del payload
        elif kind == "end":
            requests = server.end_stage()
            conn.send({i: m.to_bytes() for i, m in requests.items()})
            del requests
        elif kind == "stop":
            _, peak = tracemalloc.get_traced_memory()
            rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            conn.send({"traced_peak_bytes": peak, "peak_rss_bytes": rss_kib * 1024,
                       "survivors": len(server.result.survivors)})
            return


def server_memory(n: int, k: int | None, d: int, dropped: set[int]) -> dict:
    from fedcrypt.secagg import ClientProtocol

    holders = n if k is None else k + 1
    kwargs = dict(num_clients=n, threshold=secagg_threshold(holders), neighbours=k)
    config = SecAggConfig(**kwargs)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_server_child, args=(child, kwargs, d))
    proc.start()
    clients = [ClientProtocol(config, i) for i in range(n)]
    rng = np.random.default_rng(2)  # benchmark inputs, not secret
    for c in clients:
        parent.send(("receive", c.advertise().to_bytes()))
    parent.send(("end", None))
    requests = parent.recv()
    for stage in (Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK):
        for i, blob in requests.items():
            if stage is Stage.MASKED_INPUT:
                if i in dropped:
                    continue
                clients[i].set_input(rng.integers(0, 1 << 32, size=d, dtype=np.uint64).astype(np.uint32))
            parent.send(("receive", clients[i].handle(blob).to_bytes()))
        parent.send(("end", None))
        requests = parent.recv()
    parent.send(("stop", None))
    report = parent.recv()
    proc.join()
    return {"n": n, "k": k, "d": d, "dropped": len(dropped), **report}


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    args = parser.parse_args(argv)
    repeats = args.repeats
    dims = (100_000,) if args.quick else DIMENSIONS
    results: dict = {"masking": [], "unmasking": [], "upload": [], "memory": [], "simulate_1000": None}

    # 1. client masking
    cases = [(10, 2, d) for d in dims] + ([] if args.quick else [(50, 49, 1_000_000)])
    print(f"{'client masking':<28}{'raw AES ms':>11}{'fedcrypt ms':>12}{'+encode ms':>11}{'Flower ms':>11}"
          f"{'raw/ours':>9}{'rawmem/ours':>12}{'Flower/ours':>12}{'Flower/(ours+enc)':>18}")
    rng = np.random.default_rng(0)  # benchmark data, not secret
    for n, k, d in cases:
        params = rng.uniform(-1, 1, size=d).astype(np.float32)
        config = SecAggConfig(num_clients=max(n, 2), threshold=max(n, 2) // 2 + 1, clip=8.0)
        seeds = [random_seed().reveal() for _ in range(k + 1)]
        signs = [1] + [1 if j % 2 else -1 for j in range(k)]
        ring = config.codec.encode(params)

        masked = ring.copy()  # the client's own input copy (made by set_input), masked in place

        def ours() -> None:
            mask_accumulate(masked, list(zip(seeds, signs)))

        def ours_with_encoding() -> None:
            acc = config.codec.encode(params)
            mask_accumulate(acc, list(zip(seeds, signs)))

        def flower() -> None:
            flower_client_masking(params, seeds, 0, list(range(1, k + 1)))

        def flower_quantize_only() -> None:
            from flwr.common.secure_aggregation.quantization import quantize

            quantize([params], 8.0, 1 << 22)

        nbytes = (k + 1) * d * 4
        sink = bytearray(d * 4 + 15)
        timing = paired(
            {
                "raw": lambda: raw_keystream(nbytes, seeds),
                "raw_to_memory": lambda: raw_keystream_to_memory(d * 4, seeds, sink),
                "ours": ours,
                "ours_enc": ours_with_encoding,
                "encode": lambda: config.codec.encode(params),
                "quantize": flower_quantize_only,
                "flower": flower,
            },
            repeats,
        )
        raw, mine, mine_enc, flwr_t = timing["raw"], timing["ours"], timing["ours_enc"], timing["flower"]
        encode_only, quantize_only = timing["encode"], timing["quantize"]
        row = {
            "n": n, "k": k, "d": d, "keystream_bytes": nbytes,
            "raw_aes_ctr": raw, "fedcrypt_mask": mine, "fedcrypt_encode_and_mask": mine_enc, "flower_mask": flwr_t,
            "fraction_of_raw_throughput": round_ratio(timing, "raw", "ours"),
            "raw_aes_ctr_to_memory": timing["raw_to_memory"],
            "fraction_of_raw_to_memory_throughput": round_ratio(timing, "raw_to_memory", "ours"),
            "speedup_vs_flower": round_ratio(timing, "flower", "ours"),
            "speedup_vs_flower_with_encoding": round_ratio(timing, "flower", "ours_enc"),
            "raw_aes_gb_per_s": nbytes / raw["median_s"] / 1e9,
            "fedcrypt_encode_only": encode_only, "flower_quantize_only": quantize_only,
        }
        results["masking"].append(row)
        print(f"n={n:<4}k={k:<3}d={d:<12,}{raw['median_s'] * 1e3:>10.1f}{mine['median_s'] * 1e3:>12.1f}"
              f"{mine_enc['median_s'] * 1e3:>11.1f}{flwr_t['median_s'] * 1e3:>11.1f}"
              f"{row['fraction_of_raw_throughput']:>9.2f}{row['fraction_of_raw_to_memory_throughput']:>12.2f}"
              f"{row['speedup_vs_flower']:>12.1f}"
              f"{row['speedup_vs_flower_with_encoding']:>18.1f}"
              f"   (encode alone {encode_only['median_s'] * 1e3:.1f} ms, Flower quantize alone "
              f"{quantize_only['median_s'] * 1e3:.1f} ms)")

    # 2. server unmasking, n=10, k=4 (the smallest degree our Bell bound accepts at n=10), 2 dropped
    print(f"\n{'server unmasking':<34}{'fedcrypt ms':>12}{'Flower ms':>11}{'Flower/ours':>12}"
          f"{'Flower k=2 ms':>14}{'Flower k=2/ours':>16}")
    n, k, dropped = 10, 4, {3, 7}
    for d in dims:
        config = SecAggConfig(num_clients=n, threshold=secagg_threshold(k + 1), neighbours=k, clip=8.0)
        state = flower_server_setup(n, k, d, sorted(dropped), secagg_threshold(k + 1))
        # Flower's own reference setting (n=10, k=2), which our Bell bound refuses at n=10
        state_k2 = flower_server_setup(n, 2, d, sorted(dropped), secagg_threshold(3))
        rounds = max(3, repeats // 2)
        samples: dict[str, list[float]] = {"ours": [], "flower": [], "flower_k2": []}
        flower_server_unmask(state)  # warm-up
        for _ in range(rounds):  # interleaved: a load spike hits all three of a round
            server = run_round_to_unmask(config, d, dropped)  # untimed set-up
            start = time.perf_counter()
            server.end_stage()
            config.codec.decode_sum(server.result.ring_sum, len(server.result.survivors))
            samples["ours"].append(time.perf_counter() - start)
            del server
            for name, st in (("flower", state), ("flower_k2", state_k2)):
                start = time.perf_counter()
                flower_server_unmask(st)
                samples[name].append(time.perf_counter() - start)
        del state, state_k2
        timing = {
            name: {"median_s": float(np.median(v)), "min_s": min(v), "max_s": max(v), "repeats": rounds, "samples": v}
            for name, v in samples.items()
        }
        mine, flwr_t, flwr_k2 = timing["ours"], timing["flower"], timing["flower_k2"]
        row = {"n": n, "k": k, "d": d, "dropped": len(dropped), "fedcrypt_unmask": mine, "flower_unmask": flwr_t,
               "speedup_vs_flower": round_ratio(timing, "flower", "ours"), "flower_unmask_k2": flwr_k2,
               "speedup_vs_flower_k2": round_ratio(timing, "flower_k2", "ours")}
        results["unmasking"].append(row)
        print(f"n={n} k={k} d={d:<12,}drop=2   {mine['median_s'] * 1e3:>12.1f}{flwr_t['median_s'] * 1e3:>11.1f}"
              f"{row['speedup_vs_flower']:>12.1f}{flwr_k2['median_s'] * 1e3:>14.1f}{row['speedup_vs_flower_k2']:>16.1f}")

    # 3. upload per parameter
    from fedcrypt.secagg import MaskedInput

    for bits in (32, 64):
        for d in dims:
            vector = np.zeros(d, dtype=np.uint32 if bits == 32 else np.uint64)
            size = len(MaskedInput(0, 0, vector, bytes(32)).to_bytes())
            results["upload"].append({"bits": bits, "d": d, "bytes": size, "bytes_per_parameter": size / d,
                                      "constant_bytes": size - d * bits // 8, "flower_bytes_per_parameter": 8})
    print("\nupload: " + ", ".join(f"bits={u['bits']} d={u['d']:,}: {u['bytes_per_parameter']:.6f} B/param "
                                   f"(+{u['constant_bytes']} B)" for u in results["upload"]))

    # 4. server memory
    if not args.quick:
        d = 1_000_000
        small = server_memory(10, 4, d, {3, 7})
        large = server_memory(100, 8, d, set(range(0, 100, 20)))
        results["memory"] = [small, large]
        ratio = large["traced_peak_bytes"] / small["traced_peak_bytes"]
        rss_ratio = large["peak_rss_bytes"] / small["peak_rss_bytes"]
        results["memory_ratio_traced"] = ratio
        results["memory_ratio_rss"] = rss_ratio
        print(f"\nserver peak memory d=1e6: n=10 traced {small['traced_peak_bytes'] / 1e6:.1f} MB, "
              f"RSS {small['peak_rss_bytes'] / 1e6:.1f} MB; n=100 traced {large['traced_peak_bytes'] / 1e6:.1f} MB, "
              f"RSS {large['peak_rss_bytes'] / 1e6:.1f} MB; ratio traced {ratio:.2f}, RSS {rss_ratio:.2f} (target <= 1.5)")

    # 5. n = 1000
    if not args.quick:
        n, d = 1000, 100_000
        k = 2 * math.ceil(math.log2(n))
        config = SecAggConfig(num_clients=n, threshold=secagg_threshold(k + 1), neighbours=k)
        ring_inputs = [rng.integers(0, 1 << 32, size=d, dtype=np.uint64).astype(np.uint32) for _ in range(n)]
        drops = {Stage.SHARE_KEYS: set(range(0, n, 20)), Stage.MASKED_INPUT: set(range(7, n, 20))}
        start = time.perf_counter()
        outcome = simulate_ring(ring_inputs, config, drops)
        wall = time.perf_counter() - start
        expected = np.zeros(d, dtype=np.uint32)
        for i in outcome.survivors:
            expected += ring_inputs[i]
        exact = bool(np.array_equal(expected, outcome.ring_sum))
        results["simulate_1000"] = {
            "n": n, "k": k, "threshold": config.threshold, "d": d, "dropouts": {s.name: len(v) for s, v in drops.items()},
            "survivors": len(outcome.survivors), "exact_sum": exact, "wall_s": wall,
            "client_seconds_mean": outcome.client_seconds, "client_seconds_max": outcome.max_client_seconds,
            "server_seconds": outcome.server_seconds, "server_stage_seconds": outcome.stage_seconds,
            "bytes_up_per_client": outcome.bytes_up_per_client, "bytes_down_per_client": outcome.bytes_down_per_client,
        }
        s = results["simulate_1000"]
        print(f"\nsimulate n=1000 k={k} t={config.threshold} d=1e5, 5%+5% dropout: exact={exact}, "
              f"{s['survivors']} survivors, wall {wall:.1f} s; per client {s['client_seconds_mean'] * 1e3:.1f} ms "
              f"(max {s['client_seconds_max'] * 1e3:.1f}), up {s['bytes_up_per_client'] / 1e3:.1f} kB, "
              f"down {s['bytes_down_per_client'] / 1e3:.1f} kB; server {s['server_seconds']:.2f} s {s['server_stage_seconds']}")

    command = "python -m benchmarks.secagg" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    path = write_result("secagg" if not args.quick else "secagg_quick", results, command)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
