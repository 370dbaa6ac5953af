"""TensorSpec with torch tensors (extra 'peft'): bit-exact round trips of float32, float16 and
bfloat16 tensors mixed with numpy arrays. The numpy-only tests are in test_vectors.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcrypt.vectors import TensorSpec

torch = pytest.importorskip("torch")

names = st.text(min_size=1, max_size=12)
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from(["float32", "float16", "bfloat16"])


@st.composite
def tensor_mappings(draw):
    keys = draw(st.lists(names, min_size=0, max_size=6, unique=True))
    result = {}
    for key in keys:
        shape, dtype = draw(shapes), draw(dtypes)
        n = math.prod(shape)
        values = draw(
            st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=16), min_size=n, max_size=n)
        )
        base = torch.tensor(values, dtype=torch.float32).reshape(shape)
        if draw(st.booleans()) and dtype == "float32":
            result[key] = base.numpy()  # numpy and torch tensors mix in one mapping
        elif dtype == "float16" and draw(st.booleans()):
            result[key] = base.numpy().astype(np.float16)
        else:
            result[key] = base.to(getattr(torch, dtype))
    return result


def _as_torch(value):
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))


@given(tensor_mappings())
def test_spec_round_trip_is_bit_exact(mapping) -> None:
    spec = TensorSpec.from_tensors(mapping)
    vector = spec.flatten(mapping)
    assert vector.dtype == np.float32 and vector.shape == (spec.size,)
    back = spec.unflatten(vector, framework="torch")
    assert list(back) == list(mapping)
    for name, value in mapping.items():
        original = _as_torch(value)
        restored = back[name]
        assert restored.dtype == original.dtype and tuple(restored.shape) == tuple(original.shape)
        assert torch.equal(restored.view(-1).view(torch.int16 if restored.element_size() == 2 else torch.int32),
                           original.reshape(-1).view(torch.int16 if original.element_size() == 2 else torch.int32))
    # bytes and digest
    again = TensorSpec.from_bytes(spec.to_bytes())
    assert again == spec and again.digest() == spec.digest()


