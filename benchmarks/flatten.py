"""TensorSpec flatten + unflatten against a bare np.concatenate of the same arrays.

Usage: python -m benchmarks.flatten [--layers 32] [--repeats 7]

The ratio reported against the target is (median flatten + median unflatten) / median
np.concatenate, each operation timed on its own. A round trip in one expression holds two
fresh 16 MB buffers at once, which costs page faults in the allocator; it is reported too,
against the same round trip written in bare numpy (concatenate, split, copy).

The default size is the LoRA adapter of LLaMA-2-7B, r=8 on q and v: 32 layers x
(q, v) x (A: 8x4096, B: 4096x8) = 4,194,304 parameters in 128 tensors.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks._common import time_call, write_result
from fedcrypt.vectors import TensorSpec


def lora_mapping(layers: int = 32, hidden: int = 4096, rank: int = 8) -> dict[str, np.ndarray]:
    """Random float32 tensors shaped like a LoRA adapter on q_proj and v_proj."""
    rng = np.random.default_rng(0)  # benchmark data, not secret
    mapping = {}
    for layer in range(layers):
        for proj in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            mapping[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, hidden), dtype=np.float32)
            mapping[f"{prefix}.lora_B.weight"] = rng.standard_normal((hidden, rank), dtype=np.float32)
    return mapping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    mapping = lora_mapping(layers=args.layers)
    spec = TensorSpec.from_tensors(mapping)
    arrays = list(mapping.values())

    def concat() -> None:
        np.concatenate([a.reshape(-1) for a in arrays])

    vector = spec.flatten(mapping)
    sizes = np.cumsum([a.size for a in arrays])[:-1]

    def numpy_round_trip() -> None:
        flat = np.concatenate([a.reshape(-1) for a in arrays])
        [piece.copy() for piece in np.split(flat, sizes)]

    base = time_call(concat, repeats=args.repeats)
    flatten = time_call(lambda: spec.flatten(mapping), repeats=args.repeats)
    unflatten = time_call(lambda: spec.unflatten(vector), repeats=args.repeats)
    round_trip = time_call(lambda: spec.unflatten(spec.flatten(mapping)), repeats=args.repeats)
    numpy_rt = time_call(numpy_round_trip, repeats=args.repeats)
    ratio = (flatten["median_s"] + unflatten["median_s"]) / base["median_s"]
    rt_ratio = round_trip["median_s"] / numpy_rt["median_s"]
    print(f"parameters: {spec.size:,} in {len(arrays)} tensors")
    print(f"{'operation':<40}{'median ms':>12}{'min ms':>10}")
    for label, cell in [
        ("np.concatenate (baseline)", base),
        ("TensorSpec.flatten", flatten),
        ("TensorSpec.unflatten", unflatten),
        ("flatten -> unflatten, one expression", round_trip),
        ("np.concatenate -> np.split + copy", numpy_rt),
    ]:
        print(f"{label:<40}{cell['median_s'] * 1e3:>12.2f}{cell['min_s'] * 1e3:>10.2f}")
    print(f"(flatten + unflatten) / concatenate = {ratio:.2f}  (target <= 3.0)")
    print(f"round trip / numpy round trip      = {rt_ratio:.2f}")
    path = write_result(
        "flatten",
        {
            "parameters": spec.size,
            "tensors": len(arrays),
            "concatenate": base,
            "flatten": flatten,
            "unflatten": unflatten,
            "round_trip": round_trip,
            "numpy_round_trip": numpy_rt,
            "ratio_vs_concatenate": ratio,
            "round_trip_vs_numpy_round_trip": rt_ratio,
        },
        command="python -m benchmarks.flatten " + " ".join(argv or sys.argv[1:]),
    )
    print(f"wrote {path}")
    return 0 if ratio <= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
