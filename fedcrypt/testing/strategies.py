"""Hypothesis strategies for fedcrypt's inputs and for malformed bytes (extra ``testing``).

Use them in your own property tests: flat update vectors, LoRA adapter layouts, SecAgg
configurations, dropout schedules, and every way a decoder's input can be wrong (random,
truncated, bit-flipped, extended, or with a length field inflated to claim a huge size).

Invariants:

* every strategy draws only valid values unless its name says otherwise
  (:func:`malformed` and :func:`mutations` draw invalid bytes);
* nothing here uses randomness outside hypothesis (examples shrink and replay).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcrypt._optional import require
from fedcrypt.secagg import SecAggConfig, Stage
from fedcrypt.vectors import TensorEntry, TensorSpec

require("hypothesis", "testing")

from hypothesis import strategies as st  # noqa: E402 - after the extra check
from hypothesis.extra import numpy as hnp  # noqa: E402

__all__ = [
    "flat_vectors",
    "ring_vectors",
    "lora_specs",
    "secagg_configs",
    "dropout_schedules",
    "mutations",
    "malformed",
    "DROPPABLE_STAGES",
]

#: stages before which a client can drop (the stage's message is never sent)
DROPPABLE_STAGES = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK)


def flat_vectors(*, min_size: int = 1, max_size: int = 256, clip: float = 1.0) -> st.SearchStrategy[np.ndarray]:
    """1-D float32 update vectors with every value in ``[-clip, clip]`` (no NaN or infinity)."""
    elements = st.floats(-clip, clip, allow_nan=False, allow_infinity=False, width=32)
    return st.integers(min_size, max_size).flatmap(lambda n: hnp.arrays(np.float32, n, elements=elements))


def ring_vectors(config: SecAggConfig, length: int) -> st.SearchStrategy[np.ndarray]:
    """Vectors of ``length`` uniform ring elements of the config's dtype (SecAgg inputs)."""
    dtype = config.codec.ring_dtype
    return hnp.arrays(dtype, length, elements=st.integers(0, int(np.iinfo(dtype).max)))


@st.composite
def lora_specs(draw: Any, *, max_layers: int = 4, max_rank: int = 16, max_dim: int = 64) -> TensorSpec:
    """TensorSpecs of LoRA adapters: per layer and target an ``A`` (r x d_in) and ``B`` (d_out x r).

    Ranks may differ between layers (heterogeneous ranks); names follow PEFT's
    ``base_model.model.layers.{i}.{target}.lora_{A,B}.default.weight``.
    """
    entries = []
    for layer in range(draw(st.integers(1, max_layers))):
        for target in draw(st.lists(st.sampled_from(["q_proj", "k_proj", "v_proj", "o_proj"]), min_size=1, max_size=4, unique=True)):
            rank = draw(st.integers(1, max_rank))
            d_in, d_out = draw(st.integers(1, max_dim)), draw(st.integers(1, max_dim))
            prefix = f"base_model.model.layers.{layer}.{target}"
            entries.append(TensorEntry(f"{prefix}.lora_A.default.weight", (rank, d_in), "float32"))
            entries.append(TensorEntry(f"{prefix}.lora_B.default.weight", (d_out, rank), "float32"))
    return TensorSpec(tuple(entries))


@st.composite
def secagg_configs(
    draw: Any, *, min_clients: int = 3, max_clients: int = 8, verify_survivors: bool | None = False, bits: int | None = None
) -> SecAggConfig:
    """Valid SecAgg (complete graph) or SecAgg+ configurations with any admissible threshold.

    Args:
        min_clients, max_clients: range of ``num_clients``.
        verify_survivors: fixed value, or ``None`` to draw it.
        bits: 32 or 64, or ``None`` to draw it.
    """
    n = draw(st.integers(min_clients, max_clients))
    neighbours = None
    candidates = [k for k in range(max(1, int(np.ceil(np.log2(n)))), n - 1) if (n * k) % 2 == 0]
    if candidates and draw(st.booleans()):
        neighbours = draw(st.sampled_from(candidates))
    holders = n if neighbours is None else neighbours + 1
    threshold = draw(st.integers(holders // 2 + 1, holders))
    verify = draw(st.booleans()) if verify_survivors is None else verify_survivors
    return SecAggConfig(
        n,
        threshold,
        neighbours=neighbours,
        bits=draw(st.sampled_from([32, 64])) if bits is None else bits,
        verify_survivors=verify,
        graph_seed=draw(st.binary(max_size=8)),
    )


@st.composite
def dropout_schedules(draw: Any, config: SecAggConfig, *, max_dropped: int | None = None) -> dict[Stage, set[int]]:
    """``{stage: client ids}``: each chosen client drops before that stage (at most once).

    The schedule may leave fewer than ``threshold`` clients: a round must then abort with
    :class:`~fedcrypt.errors.RoundAbortedError`, never return a wrong sum.
    """
    n = config.num_clients
    limit = n if max_dropped is None else max_dropped
    dropped = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=limit))
    stages = [s for s in DROPPABLE_STAGES if config.verify_survivors or s is not Stage.CONSISTENCY_CHECK]
    schedule: dict[Stage, set[int]] = {}
    for client in dropped:
        schedule.setdefault(draw(st.sampled_from(stages)), set()).add(client)
    return schedule


@st.composite
def mutations(draw: Any, valid: bytes) -> bytes:
    """One corruption of ``valid``: truncated, bit-flipped, extended, a byte replaced, or a
    4- or 8-byte field inflated to its maximum (a length that claims a huge allocation)."""
    kind = draw(st.sampled_from(["truncate", "flip", "extend", "replace", "inflate4", "inflate8", "splice"]))
    data = bytearray(valid)
    if kind == "truncate" or not data:
        return bytes(data[: draw(st.integers(0, max(0, len(data) - 1)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            bit = draw(st.integers(0, 8 * len(data) - 1))
            data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)
    if kind == "extend":
        return bytes(data) + draw(st.binary(min_size=1, max_size=64))
    if kind == "replace":
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "splice":
        start = draw(st.integers(0, len(data)))
        stop = draw(st.integers(start, len(data)))
        return bytes(data[:start]) + draw(st.binary(max_size=64)) + bytes(data[stop:])
    width = 4 if kind == "inflate4" else 8
    if len(data) < width:
        return bytes(data) + b"\xff"
    at = draw(st.integers(0, len(data) - width))
    data[at : at + width] = draw(st.sampled_from([b"\xff" * width, b"\x7f" + b"\xff" * (width - 1)]))
    return bytes(data)


def malformed(valid: bytes, *, max_random: int = 512) -> st.SearchStrategy[bytes]:
    """Bytes that a strict decoder of ``valid``'s format must refuse or decode to a valid value:
    random bytes, random bytes behind ``valid``'s first 6 bytes (magic, version, type), or
    one of :func:`mutations`."""
    return st.one_of(
        st.binary(max_size=max_random),
        st.binary(max_size=max_random).map(lambda tail: bytes(valid[:6]) + tail),
        mutations(valid),
    )
