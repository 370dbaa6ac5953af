"""Plain PyTorch adapter: flat parameters, updates, clipping, applying an aggregate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedcrypt.errors import SpecMismatchError
from fedcrypt.integrations.aggregators import PlainAggregator
from fedcrypt.integrations.torch import FlatParameters, clip_l2

from .conftest import torch


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_get_set_round_trip_is_bit_exact() -> None:
    net = _net()
    flat = FlatParameters(net)
    assert flat.size == 4 * 3 + 3 + 3 * 2 + 2
    vector = flat.get()
    other = FlatParameters(_net(seed=1))
    other.set(vector)
    assert other.get().tobytes() == vector.tobytes()
    for a, b in zip(net.parameters(), other.module.parameters()):
        assert torch.equal(a, b)


def test_only_trainable_parameters_by_default() -> None:
    net = _net()
    net[0].weight.requires_grad_(False)
    flat = FlatParameters(net)
    assert flat.spec.names == ("0.bias", "2.weight", "2.bias")
    assert FlatParameters(net, names=["0.weight"]).size == 12
    with pytest.raises(ValueError, match="'nope' is not a parameter of the module"):
        FlatParameters(net, names=["nope"])
    with pytest.raises(TypeError, match="expected a torch.nn.Module, got list"):
        FlatParameters([1, 2])


def test_update_and_apply_is_fedavg() -> None:
    """Two clients train from one global model; applying the mean delta is FedAvg."""
    global_net = _net()
    flat = FlatParameters(global_net)
    w_global = flat.get()
    locals_ = []
    for seed in (1, 2):
        client = _net()
        client.load_state_dict(global_net.state_dict())
        optimizer = torch.optim.SGD(client.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(seed)
        x, y = torch.randn(8, 4, generator=generator), torch.randn(8, 2, generator=generator)
        loss = torch.nn.functional.mse_loss(client(x), y)
        loss.backward()
        optimizer.step()
        locals_.append(FlatParameters(client))
    updates = [f.update(w_global) for f in locals_]
    assert all(np.abs(u).max() > 0 for u in updates)
    result = PlainAggregator().aggregate(updates, weights=[1.0, 3.0])
    flat.apply(w_global, result.vector.astype(np.float32))
    expected = (locals_[0].get().astype(np.float64) + 3 * locals_[1].get()) / 4
    np.testing.assert_allclose(flat.get(), expected, rtol=0, atol=1e-6)


def test_update_is_clipped() -> None:
    net = _net()
    flat = FlatParameters(net)
    w_global = flat.get()
    flat.set(w_global + 1.0)
    update = flat.update(w_global, max_norm=0.5)
    assert np.linalg.norm(update.astype(np.float64)) <= 0.5
    assert np.linalg.norm(update.astype(np.float64)) > 0.5 * (1 - 1e-6)
    np.testing.assert_allclose(update / np.linalg.norm(update), np.ones(flat.size) / np.sqrt(flat.size), rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 40), elements=st.floats(-1e6, 1e6, width=32)),
    st.floats(1e-3, 1e3),
)
def test_clip_l2_never_exceeds_and_keeps_small_vectors(vector, max_norm) -> None:
    clipped, norm = clip_l2(vector, max_norm)
    assert norm == pytest.approx(float(np.linalg.norm(vector.astype(np.float64))))
    assert float(np.linalg.norm(clipped.astype(np.float64))) <= max_norm
    if norm <= max_norm:
        assert clipped.tobytes() == vector.tobytes()
    else:  # direction kept
        np.testing.assert_allclose(clipped * (norm / max_norm), vector, rtol=1e-4, atol=1e-4 * norm)


def test_clip_l2_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="clip must be finite and > 0, got -1.0"):
        clip_l2(np.ones(3, np.float32), -1)
    with pytest.raises(ValueError, match=r"vector must be 1-D, got shape \(2, 2\)"):
        clip_l2(np.ones((2, 2), np.float32), 1.0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        clip_l2(np.array([np.inf], np.float32), 1.0)


def test_wrong_length_or_changed_model_is_refused_before_writing() -> None:
    net = _net()
    flat = FlatParameters(net)
    before = flat.get()
    with pytest.raises(SpecMismatchError, match=rf"vector has length {flat.size + 1}, the spec needs {flat.size}"):
        flat.set(np.zeros(flat.size + 1, np.float32))
    with pytest.raises(SpecMismatchError, match="vector has length 3"):
        flat.apply(before, np.zeros(3, np.float32))
    assert flat.get().tobytes() == before.tobytes()
    net.half()  # the model changed dtype since the layout was taken
    with pytest.raises(SpecMismatchError, match="tensor '0.weight' has dtype float16, the spec says float32"):
        flat.set(before)


def test_example_loop_learns_the_model_under_secagg() -> None:
    """examples/torch_secagg_loop.py runs end to end and recovers the true weights."""
    import pathlib
    import re
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[2] / "examples" / "torch_secagg_loop.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out.stdout)]
    assert len(losses) == 10 and losses[-1] < losses[0] / 10
    learned = re.search(r"learned \[\[\s*(\S+)\s+(\S+)\s+(\S+)\s*\]\]", out.stdout)
    assert learned is not None
    np.testing.assert_allclose([float(v) for v in learned.groups()], [2.0, -3.0, 0.5], atol=0.05)
