"""SecAggConfig bounds, the Harary graph and the overflow guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import OverflowRiskError
from fedcrypt.secagg import SecAggConfig, harary_graph


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_clients=1, threshold=1), r"num_clients must be an integer in \[2, 65534\]"),
        (dict(num_clients=True, threshold=1), "num_clients"),
        (dict(num_clients=10, threshold=11), r"threshold must be an integer in \[1, share holders=10\]"),
        (dict(num_clients=10, threshold=5), r"threshold must exceed half of the 10 share holders"),
        (dict(num_clients=10, threshold=6, bits=16), "bits must be 32 or 64"),
        (dict(num_clients=100, threshold=4, neighbours=6), r"neighbours >= ceil\(log2\(num_clients\)\) = 7"),
        (dict(num_clients=101, threshold=5, neighbours=7), "num_clients \\* neighbours must be even"),
        (dict(num_clients=10, threshold=3, neighbours=10), r"neighbours must be None or an integer in \[1, num_clients-1=9\]"),
        (dict(num_clients=20, threshold=3, neighbours=6), r"2\*threshold > 7"),
    ],
)
def test_config_refuses_unsafe_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SecAggConfig(**kwargs)


def test_config_overflow_guard_is_enforced() -> None:
    with pytest.raises(OverflowRiskError, match="overflow guard"):
        SecAggConfig(num_clients=1000, threshold=501, clip=1.0, scale=2.0**22)
    assert SecAggConfig(num_clients=1000, threshold=501, clip=1.0, bits=64, scale=2.0**22).codec.scale == 2.0**22


@settings(max_examples=40)
@given(n=st.integers(2, 65534), bits=st.sampled_from([32, 64]), clip=st.floats(1e-3, 1e3))
def test_overflow_guard_holds_for_every_accepted_n(n: int, bits: int, clip: float) -> None:
    config = SecAggConfig(num_clients=n, threshold=n // 2 + 1, bits=bits, clip=clip)
    codec = config.codec
    assert n * codec.bound <= 2 ** (bits - 1) - 1
    # the extreme sum decodes without wrapping
    top = np.full(3, codec.bound, dtype=np.int64).astype(np.int32 if bits == 32 else np.int64)
    ring = top.view(codec.ring_dtype)
    total = (ring.astype(np.uint64) * np.uint64(n)).astype(codec.ring_dtype)
    assert np.all(codec.decode_sum(total, n) == n * codec.bound / codec.scale)


@settings(max_examples=30)
@given(n=st.integers(4, 300), data=st.data())
def test_harary_graph_is_k_regular_and_symmetric(n: int, data) -> None:
    k = data.draw(st.integers(math.ceil(math.log2(n)), n - 2).filter(lambda k: (n * k) % 2 == 0)) if n > 4 else 2
    seed = data.draw(st.binary(max_size=8))
    graph = harary_graph(n, k, seed, 0)
    assert len(graph) == n
    for u, neighbours in enumerate(graph):
        assert len(neighbours) == k and u not in neighbours
        assert all(u in graph[v] for v in neighbours)
    assert graph == harary_graph(n, k, seed, 0)  # every party computes the same graph


def test_neighbourhoods_depend_on_round_and_seed() -> None:
    config = SecAggConfig(num_clients=64, threshold=5, neighbours=8, graph_seed=b"s")
    one = [config.neighbourhood(u, 1) for u in range(64)]
    two = [config.neighbourhood(u, 2) for u in range(64)]
    assert one != two
    complete = SecAggConfig(num_clients=5, threshold=3)
    assert complete.neighbourhood(2, 0) == {0, 1, 3, 4} and complete.share_holders == 5


def test_harary_graph_refuses_impossible_degrees() -> None:
    with pytest.raises(ValueError, match="no 3-regular graph on 9 vertices"):
        harary_graph(9, 3, b"", 0)
    with pytest.raises(ValueError, match="no 9-regular graph"):
        harary_graph(9, 9, b"", 0)
