"""PEFT/LoRA adapter: exact round trips, aggregation modes, refusals, typed errors, binding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import AggregationModeError, SpecMismatchError
from fedcrypt.integrations.peft import (
    LoraLayout,
    LoraMode,
    check_mode,
    freeze_lora_a,
    lora_rank,
    lora_state,
    model_fingerprint,
    round_binding,
)

from .conftest import randomize_adapter, tiny_gpt2, tiny_llama, torch


def _bits(tensor) -> bytes:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _assert_same_adapter(a, b) -> None:
    sa, sb = lora_state(a), lora_state(b)
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and sa[name].shape == sb[name].shape
        assert _bits(sa[name]) == _bits(sb[name]), name


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_round_trip_is_bit_exact_from_config(build) -> None:
    source, target = build(seed=1), build(seed=1)
    randomize_adapter(source, seed=7)
    layout = LoraLayout.from_model(source)
    vector = layout.flatten(source)
    assert vector.dtype == np.float32 and vector.shape == (layout.spec.size,)
    assert layout.spec.size == sum(p.numel() for p in source.parameters() if p.requires_grad)
    layout.load(target, vector)
    _assert_same_adapter(source, target)
    np.testing.assert_array_equal(layout.flatten(target), vector)


def test_round_trip_on_pretrained_minilm(minilm) -> None:
    layout = LoraLayout.from_model(minilm)
    assert layout.spec.size == 73_728  # r=8 on query and value of 6 layers of width 384
    original = layout.flatten(minilm)
    rng = np.random.default_rng(3)
    update = rng.standard_normal(layout.spec.size).astype(np.float32)
    try:
        layout.load(minilm, update)
        assert layout.flatten(minilm).tobytes() == update.tobytes()
        # the values really are the model's LoRA parameters
        named = dict(minilm.named_parameters())
        entry = layout.spec.entries[0]
        live = named[entry.name.replace(".weight", ".default.weight")]
        np.testing.assert_array_equal(live.detach().numpy().reshape(-1), update[: entry.size])
    finally:
        layout.load(minilm, original)
    assert layout.flatten(minilm).tobytes() == original.tobytes()


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(list(LoraMode)[:2]))
def test_round_trip_property(seed, mode) -> None:
    model = tiny_llama(seed=0)
    layout = LoraLayout.from_model(model, mode)
    vector = np.random.default_rng(seed).standard_normal(layout.spec.size).astype(np.float32)
    layout.load(model, vector)
    assert layout.flatten(model).tobytes() == vector.tobytes()


def test_half_precision_round_trip() -> None:
    for dtype in (torch.bfloat16, torch.float16):
        source, target = tiny_llama(seed=2, dtype=dtype), tiny_llama(seed=2, dtype=dtype)
        randomize_adapter(source, seed=5)
        layout = LoraLayout.from_model(source)
        assert {e.dtype for e in layout.spec.entries} == {str(dtype).removeprefix("torch.")}
        layout.load(target, layout.flatten(source))
        _assert_same_adapter(source, target)


# ---------------------------------------------------------------------- modes
def test_ffa_layout_holds_only_b_and_is_exact_and_linear() -> None:
    model = tiny_llama(seed=0)
    assert freeze_lora_a(model) == 4
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_A" in n)
    layout = LoraLayout.from_model(model, "ffa")
    assert layout.spec.names and all("lora_B" in n for n in layout.spec.names)
    assert layout.spec.size == sum(p.numel() for p in model.parameters() if p.requires_grad)
    a_before = {n: t.clone() for n, t in lora_state(model).items() if "lora_A" in n}
    # three clients' B matrices; A shared and frozen: mean of B gives the mean update exactly
    rng = np.random.default_rng(0)
    vectors = [rng.standard_normal(layout.spec.size).astype(np.float32) for _ in range(3)]
    mean = (np.sum(np.array(vectors, dtype=np.float64), axis=0) / 3).astype(np.float32)
    layout.load(model, mean)
    state = lora_state(model)
    for name, a in a_before.items():
        assert _bits(state[name]) == _bits(a)  # A untouched by the aggregate
    a_name = next(iter(a_before))
    b_name = a_name.replace("lora_A", "lora_B")
    a = a_before[a_name].double()
    spec_tensors = [layout.spec.unflatten(v, framework="torch")[b_name].double() for v in vectors]
    mean_of_updates = sum(b @ a for b in spec_tensors) / 3
    update_of_mean = state[b_name].double() @ a
    torch.testing.assert_close(update_of_mean, mean_of_updates, rtol=1e-6, atol=1e-6)


def test_fedit_product_of_means_is_not_mean_of_products() -> None:
    """FedIT's documented approximation: it is a property of the mode, not of encryption."""
    generator = torch.Generator().manual_seed(0)
    a = [torch.randn(4, 8, generator=generator, dtype=torch.float64) for _ in range(2)]
    b = [torch.randn(8, 4, generator=generator, dtype=torch.float64) for _ in range(2)]
    product_of_means = (b[0] + b[1]) / 2 @ ((a[0] + a[1]) / 2)
    mean_of_products = (b[0] @ a[0] + b[1] @ a[1]) / 2
    assert (product_of_means - mean_of_products).abs().max() > 1e-3
    assert LoraMode.FEDIT.exact is False and LoraMode.FFA.exact is True


def test_heterogeneous_ranks_pad_to_one_layout_and_keep_the_product() -> None:
    small, large = tiny_llama(rank=4, seed=0), tiny_llama(rank=8, seed=0)
    randomize_adapter(small, seed=1)
    randomize_adapter(large, seed=2)
    assert (lora_rank(small), lora_rank(large)) == (4, 8)
    small_layout = LoraLayout.from_model(small, "heterogeneous", padded_rank=8)
    large_layout = LoraLayout.from_model(large, "heterogeneous", padded_rank=8)
    assert small_layout.spec == large_layout.spec and small_layout.digest() == large_layout.digest()
    padded = small_layout.spec.unflatten(small_layout.flatten(small), framework="torch")
    state = lora_state(small)
    for name, tensor in state.items():
        if "lora_A" in name:
            assert torch.equal(padded[name][:4], tensor) and not padded[name][4:].any()
            b_name = name.replace("lora_A", "lora_B")
            assert torch.equal(padded[b_name][:, :4], state[b_name]) and not padded[b_name][:, 4:].any()
            torch.testing.assert_close(padded[b_name] @ padded[name], state[b_name] @ tensor)
    # round trip through the padded layout is exact for the small rank, truncating on load
    vector = small_layout.flatten(small)
    target = tiny_llama(rank=4, seed=9)
    small_layout.load(target, vector)
    _assert_same_adapter(small, target)
    # an average loaded into a rank-4 client keeps its first 4 components
    mean = (vector.astype(np.float64) + large_layout.flatten(large)) / 2
    small_layout.load(target, mean.astype(np.float32))
    averaged = small_layout.spec.unflatten(mean.astype(np.float32), framework="torch")
    for name, tensor in lora_state(target).items():
        expected = averaged[name][:4] if "lora_A" in name else averaged[name][:, :4]
        assert torch.equal(tensor, expected)


def test_heterogeneous_rank_above_padding_is_refused() -> None:
    with pytest.raises(SpecMismatchError, match=r"rank 8, larger than the padded rank 4"):
        LoraLayout.from_model(tiny_llama(rank=8), "heterogeneous", padded_rank=4)
    with pytest.raises(ValueError, match="heterogeneous mode needs padded_rank"):
        LoraLayout.from_model(tiny_llama(), "heterogeneous")
    with pytest.raises(ValueError, match="padded_rank is only used in heterogeneous mode"):
        LoraLayout.from_model(tiny_llama(), "fedit", padded_rank=8)


def test_stacking_is_refused_under_secure_aggregation() -> None:
    with pytest.raises(AggregationModeError, match="'stacking' needs each client's individual adapter"):
        check_mode("stacking", secure=True)
    with pytest.raises(AggregationModeError):
        LoraLayout.from_model(tiny_llama(), "stacking")
    assert check_mode("stacking", secure=False) is LoraMode.STACKING
    with pytest.raises(ValueError, match=r"unknown LoRA aggregation mode 'fedprox'"):
        check_mode("fedprox", secure=True)


# ---------------------------------------------------------------------- bad input
def test_aggregate_of_wrong_length_names_the_lengths_and_changes_nothing() -> None:
    model = tiny_llama(seed=0)
    randomize_adapter(model, seed=3)
    layout = LoraLayout.from_model(model)
    before = layout.flatten(model)
    with pytest.raises(SpecMismatchError, match=rf"vector has length {layout.spec.size - 1}, the spec needs {layout.spec.size}"):
        layout.load(model, before[:-1])
    with pytest.raises(SpecMismatchError, match="dtype int32"):
        layout.load(model, before.astype(np.int32))
    assert layout.flatten(model).tobytes() == before.tobytes()


def test_model_of_another_shape_or_dtype_names_the_tensor() -> None:
    layout = LoraLayout.from_model(tiny_llama(rank=8))
    first = layout.spec.entries[0].name
    with pytest.raises(SpecMismatchError, match=rf"tensor '{first}' has shape \(4, 32\) in the model, the layout says \(8, 32\)"):
        layout.flatten(tiny_llama(rank=4))
    other_dtype = tiny_llama(rank=8, dtype=torch.float16)
    before = LoraLayout.from_model(other_dtype).flatten(other_dtype)
    with pytest.raises(SpecMismatchError, match=rf"tensor '{first}' has dtype float16 in the model, the layout says float32"):
        layout.load(other_dtype, np.zeros(layout.spec.size, np.float32))
    assert LoraLayout.from_model(other_dtype).flatten(other_dtype).tobytes() == before.tobytes()
    wider = tiny_llama(rank=8, hidden=16)
    with pytest.raises(SpecMismatchError, match="has shape"):
        layout.load(wider, np.zeros(layout.spec.size, np.float32))
    with pytest.raises(SpecMismatchError, match="has no tensor"):
        LoraLayout.from_model(tiny_gpt2()).flatten(tiny_llama())


def test_not_a_peft_model_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expected a peft.PeftModel, got Linear"):
        LoraLayout.from_model(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------- binding
def test_fingerprint_and_binding_detect_a_different_global_model() -> None:
    a, b = tiny_llama(seed=0), tiny_llama(seed=0)
    assert model_fingerprint(a) == model_fingerprint(b)
    layout = LoraLayout.from_model(a)
    assert round_binding(model_fingerprint(a), layout, 3) == round_binding(model_fingerprint(b), layout, 3)
    with torch.no_grad():  # one base weight, one ulp away
        weight = dict(b.named_parameters())["base_model.model.model.layers.1.mlp.down_proj.weight"]
        weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(1.0))
    assert model_fingerprint(a) != model_fingerprint(b)
    assert round_binding(model_fingerprint(a), layout, 3) != round_binding(model_fingerprint(b), layout, 3)
    # a different round or layout also changes the binding
    fp = model_fingerprint(a)
    assert round_binding(fp, layout, 3) != round_binding(fp, layout, 4)
    assert round_binding(fp, layout, 3) != round_binding(fp, LoraLayout.from_model(a, "ffa"), 3)
    with pytest.raises(ValueError, match="32-byte output of model_fingerprint"):
        round_binding(b"short", layout)


# ---------------------------------------------------------------------- under SecAgg
def test_heterogeneous_ranks_aggregate_under_secagg() -> None:
    """Clients of ranks 2, 4 and 8 sum their padded adapters securely; each loads its own rank."""
    from fedcrypt.integrations.aggregators import PlainAggregator, SecAggAggregator

    models = [tiny_llama(rank=r, seed=0) for r in (2, 4, 8)]
    for i, model in enumerate(models):
        randomize_adapter(model, seed=10 + i)
    layouts = [LoraLayout.from_model(m, "heterogeneous", padded_rank=8) for m in models]
    assert len({layout.digest() for layout in layouts}) == 1
    vectors = [0.1 * layout.flatten(m) for layout, m in zip(layouts, models)]
    weights = [3, 1, 2]
    secure = SecAggAggregator(3, clip=1.0).aggregate(vectors, weights)
    plain = PlainAggregator().aggregate(vectors, weights)
    assert np.abs(secure.vector - plain.vector).max() <= secure.error_bound + plain.error_bound
    mean = secure.vector.astype(np.float32)
    for layout, model in zip(layouts, models):
        layout.load(model, mean)
        rank = lora_rank(model)
        padded = layout.spec.unflatten(mean, framework="torch")
        for name, tensor in lora_state(model).items():
            expected = padded[name][:rank] if "lora_A" in name else padded[name][:, :rank]
            assert torch.equal(tensor, expected)


def test_ffa_under_secagg_gives_the_mean_update() -> None:
    """FFA-LoRA: the secure mean of B, with the shared frozen A, is the mean of the updates."""
    from fedcrypt.integrations.aggregators import SecAggAggregator

    models = [tiny_llama(seed=0) for _ in range(4)]  # same A everywhere (same seed)
    layout = LoraLayout.from_model(models[0], "ffa")
    for i, model in enumerate(models):
        freeze_lora_a(model)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(i)))
    vectors = [layout.flatten(m) for m in models]
    result = SecAggAggregator(4, clip=1.0).aggregate(vectors)
    target = tiny_llama(seed=0)
    layout.load(target, result.vector.astype(np.float32))
    a_name = next(n for n in lora_state(target) if "lora_A" in n)
    b_name = a_name.replace("lora_A", "lora_B")
    a = lora_state(target)[a_name].double()
    mean_update = sum(lora_state(m)[b_name].double() @ a for m in models) / 4
    got = lora_state(target)[b_name].double() @ a
    # each entry of B is within the SecAgg bound, plus float32 rounding of the loaded mean
    tolerance = (result.error_bound + 2.0**-24 * float(np.abs(result.vector).max())) * a.abs().sum(dim=0).max().item()
    assert (got - mean_update).abs().max().item() <= tolerance


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_heterogeneous_padding_round_trip_property(rank, seed) -> None:
    """Any rank <= the padded rank: exact round trip, zeros in the padding, same B @ A."""
    model = tiny_llama(rank=rank, seed=0)
    randomize_adapter(model, seed=seed % 1000)
    layout = LoraLayout.from_model(model, "heterogeneous", padded_rank=8)
    vector = layout.flatten(model)
    padded = layout.spec.unflatten(vector, framework="torch")
    state = lora_state(model)
    for name, tensor in state.items():
        if "lora_A" in name:
            b_name = name.replace("lora_A", "lora_B")
            assert not padded[name][rank:].any() and not padded[b_name][:, rank:].any()
            # equal up to the summation order of the matmul (the padded terms are exact zeros)
            torch.testing.assert_close(padded[b_name] @ padded[name], state[b_name] @ tensor, rtol=1e-6, atol=1e-6)
    target = tiny_llama(rank=rank, seed=1)
    layout.load(target, vector)
    assert layout.flatten(target).tobytes() == vector.tobytes()
