"""200 aggregation rounds in one process: memory must not grow.

Each round is a full SecAgg round (fresh keys, shares, masks, a dropout) through the
in-process simulator at d = 50,000, or a CKKS aggregation (encrypt, weighted sum,
decrypt). After every round the test collects garbage and samples the process RSS and
the bytes tracemalloc sees allocated. The first 20 rounds warm up caches and allocator
pools; the growth from the median of rounds 20-40 to the median of the last 20 must stay
under 4 MiB (RSS) and 1 MiB (traced Python/numpy allocations). A leak of one d-vector
per round would add 40 MB (uint32) over the run.
"""

from __future__ import annotations

import gc
import os
import statistics
import tracemalloc

import numpy as np
import pytest

from fedcrypt.secagg import SecAggConfig, Stage, simulate

from ._report import record

ROUNDS = 200
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * PAGE


def growth(samples: list[int]) -> int:
    return int(statistics.median(samples[-20:]) - statistics.median(samples[20:40]))


def run_rounds(one_round) -> tuple[list[int], list[int]]:
    rss, traced = [], []
    tracemalloc.start()
    try:
        for round_id in range(ROUNDS):
            one_round(round_id)
            gc.collect()
            rss.append(rss_bytes())
            traced.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    return rss, traced


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS sampling needs Linux /proc")
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_200_secagg_rounds_do_not_grow_memory() -> None:
    config = SecAggConfig(5, 3, clip=1.0)
    rng = np.random.default_rng(5)  # test data, not secrets
    vectors = [rng.uniform(-0.2, 0.2, 50_000).astype(np.float32) for _ in range(5)]
    expected = np.sum(vectors[:4], axis=0, dtype=np.float64)

    def one_round(round_id: int) -> None:
        total = simulate(vectors, config, {Stage.MASKED_INPUT: {4}}, round_id=round_id, rng=rng)
        assert np.allclose(total, expected, atol=1e-3)

    rss, traced = run_rounds(one_round)
    record("memory.secagg", rounds=ROUNDS, rss_growth_mib=growth(rss) / 2**20, traced_growth_mib=growth(traced) / 2**20,
           rss_mib=rss[-1] / 2**20)
    assert growth(rss) < 4 << 20, f"RSS grew by {growth(rss) / 2**20:.2f} MiB over {ROUNDS} rounds"
    assert growth(traced) < 1 << 20, f"traced allocations grew by {growth(traced) / 2**20:.2f} MiB"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_200_ckks_rounds_do_not_grow_memory() -> None:
    pytest.importorskip("tenseal")
    from fedcrypt.he import AggregatorContext, CkksParams, KeyOwner

    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=4))
    server = AggregatorContext.from_bytes(owner.aggregator_context().to_bytes())
    rng = np.random.default_rng(6)  # test data, not secrets
    vectors = [rng.uniform(-1, 1, 5_000) for _ in range(3)]
    expected = sum(w * v for w, v in zip((1, 2, 3), vectors))

    def one_round(round_id: int) -> None:
        total = server.start()
        for weight, vector in zip((1, 2, 3), vectors):
            total.add(owner.encrypt(vector), weight)
        assert np.allclose(owner.decrypt(total.finish()), expected, atol=1e-3)

    rss, traced = run_rounds(one_round)
    record("memory.ckks", rounds=ROUNDS, rss_growth_mib=growth(rss) / 2**20, traced_growth_mib=growth(traced) / 2**20,
           rss_mib=rss[-1] / 2**20)
    # SEAL allocates from its own memory pool (invisible to tracemalloc): RSS is the check
    assert growth(rss) < 4 << 20, f"RSS grew by {growth(rss) / 2**20:.2f} MiB over {ROUNDS} rounds"
    assert growth(traced) < 1 << 20, f"traced allocations grew by {growth(traced) / 2**20:.2f} MiB"
