"""TensorSpec and FixedPointCodec: round trips, strict decoding, the overflow guard.

Core tests (numpy only; run by the core-only CI job): torch tensors are in test_vectors_torch.py.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import EncodingError, MalformedMessageError, OverflowRiskError, SpecMismatchError
from fedcrypt.vectors import ClipReport, FixedPointCodec, TensorEntry, TensorSpec

names = st.text(min_size=1, max_size=12)
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


@st.composite
def numpy_mappings(draw):
    """Name -> numpy float32/float16 array (the torch and bfloat16 cases: test_vectors_torch.py)."""
    keys = draw(st.lists(names, min_size=0, max_size=6, unique=True))
    result = {}
    for key in keys:
        shape, dtype = draw(shapes), draw(st.sampled_from([np.float32, np.float16]))
        values = draw(st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=16), min_size=math.prod(shape),
                               max_size=math.prod(shape)))
        result[key] = np.array(values, dtype=dtype).reshape(shape)
    return result


@given(st.lists(st.floats(allow_nan=False, width=32), min_size=0, max_size=50))
def test_float32_numpy_round_trip_bit_exact(values) -> None:
    mapping = {"w": np.array(values, dtype=np.float32).reshape(-1, 1), "s": np.array(3.5, dtype=np.float32)}
    spec = TensorSpec.from_tensors(mapping)
    back = spec.unflatten(spec.flatten(mapping))
    for k in mapping:
        assert back[k].dtype == mapping[k].dtype
        assert back[k].tobytes() == mapping[k].tobytes()


def test_unflatten_returns_independent_copies() -> None:
    mapping = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    spec = TensorSpec.from_tensors(mapping)
    vector = spec.flatten(mapping)
    out = spec.unflatten(vector)
    out["a"][0, 0] = 99
    assert vector[0] == 0


def test_mismatch_names_the_first_difference() -> None:
    spec = TensorSpec.from_tensors({"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float16)})
    with pytest.raises(SpecMismatchError, match=r"'b' is missing"):
        spec.flatten({"a": np.zeros((2, 3), np.float32)})
    with pytest.raises(SpecMismatchError, match=r"'c' is not in the spec"):
        spec.flatten({"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float16), "c": np.zeros(1, np.float32)})
    with pytest.raises(SpecMismatchError, match=r"'a' has shape \(3, 2\), the spec says \(2, 3\)"):
        spec.flatten({"a": np.zeros((3, 2), np.float32), "b": np.zeros(4, np.float16)})
    with pytest.raises(SpecMismatchError, match=r"'b' has dtype float32, the spec says float16"):
        spec.flatten({"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)})
    with pytest.raises(SpecMismatchError, match=r"length 9, the spec needs 10"):
        spec.unflatten(np.zeros(9, np.float32))
    with pytest.raises(TypeError):
        spec.flatten({"a": [1, 2, 3], "b": np.zeros(4, np.float16)})


def test_digest_depends_on_layout() -> None:
    a = TensorSpec((TensorEntry("x", (2, 3), "float32"),))
    b = TensorSpec((TensorEntry("x", (3, 2), "float32"),))
    c = TensorSpec((TensorEntry("x", (2, 3), "float16"),))
    assert len({a.digest(), b.digest(), c.digest()}) == 3


@given(st.binary(max_size=200))
def test_spec_decoder_only_raises_typed_errors(data) -> None:
    try:
        TensorSpec.from_bytes(data)
    except MalformedMessageError:
        pass


@given(numpy_mappings(), st.data())
def test_spec_decoder_rejects_truncation_and_trailing_bytes(mapping, data) -> None:
    blob = TensorSpec.from_tensors(mapping).to_bytes()
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(MalformedMessageError):
        TensorSpec.from_bytes(blob[:cut])
    with pytest.raises(MalformedMessageError):
        TensorSpec.from_bytes(blob + b"\x00")


def test_spec_decoder_refuses_huge_layouts_before_allocating() -> None:
    import struct

    blob = b"FCTS" + struct.pack(">BI", 1, 1) + struct.pack(">H", 1) + b"w" + struct.pack(">BB", 1, 2)
    blob += struct.pack(">2Q", 1 << 32, 1 << 32)
    with pytest.raises(MalformedMessageError, match="more than"):
        TensorSpec.from_bytes(blob)


# ---------------------------------------------------------------- FixedPointCodec
clips = st.floats(1e-3, 1e3, allow_nan=False)


@given(
    clip=clips,
    bits=st.sampled_from([32, 64]),
    num_clients=st.integers(1, 2000),
    k=st.integers(1, 8),
    d=st.integers(0, 64),
    rounding=st.sampled_from(["stochastic", "nearest"]),
    data=st.data(),
)
def test_decoded_sum_within_documented_bound(clip, bits, num_clients, k, d, rounding, data) -> None:
    assume(k <= num_clients)
    codec = FixedPointCodec(clip=clip, bits=bits, num_clients=num_clients, rounding=rounding)
    limit = float(np.float32(4 * clip))
    element = st.floats(-limit, limit, allow_nan=False, width=32)
    vectors = [np.array(data.draw(st.lists(element, min_size=d, max_size=d)), dtype=np.float32) for _ in range(k)]
    ring = np.zeros(d, dtype=codec.ring_dtype)
    for v in vectors:
        ring += codec.encode(v)  # numpy wraps modulo 2^bits: this *is* the ring sum
    decoded = codec.decode_sum(ring, k)
    exact = sum(np.clip(v.astype(np.float64), -clip, clip) for v in vectors) if d else np.zeros(0)
    assert np.all(np.abs(decoded - exact) <= codec.error_bound(k))


def _guard_holds(clip: float, bits: int, n: int, scale: float) -> bool:
    bound = math.floor(Fraction(clip) * Fraction(scale)) + 1
    return n * bound <= (1 << (bits - 1)) - 1 and bound <= (1 << 52)


@given(
    clip=clips,
    bits=st.sampled_from([32, 64]),
    n=st.integers(1, 10**7),
    log_scale=st.floats(-10, 70),
)
def test_guard_rejects_every_overflowing_configuration(clip, bits, n, log_scale) -> None:
    scale = 2.0**log_scale
    if _guard_holds(clip, bits, n, scale):
        codec = FixedPointCodec(clip=clip, bits=bits, num_clients=n, scale=scale)
        assert n * codec.bound <= (1 << (bits - 1)) - 1
    else:
        with pytest.raises(OverflowRiskError):
            FixedPointCodec(clip=clip, bits=bits, num_clients=n, scale=scale)


@given(clip=clips, bits=st.sampled_from([32, 64]), fraction=st.floats(0, 1))
def test_guard_accepts_the_largest_safe_client_count(clip, bits, fraction) -> None:
    limit = (1 << (bits - 1)) - 1
    low, high = math.log2(limit / 1e6), min(math.log2(limit), 51.0)
    scale = 2.0 ** (low + fraction * (high - low)) / clip
    bound = math.floor(Fraction(clip) * Fraction(scale)) + 1
    n_max = limit // bound
    assume(1 <= n_max <= 10**6)
    codec = FixedPointCodec(clip=clip, bits=bits, num_clients=n_max, scale=scale)
    with pytest.raises(OverflowRiskError, match="overflow guard"):
        FixedPointCodec(clip=clip, bits=bits, num_clients=n_max + 1, scale=scale)
    # the largest safe sum really does not wrap: n_max extreme encodings of each sign
    for sign in (1.0, -1.0):
        one = codec.encode(np.full(3, sign * clip, np.float32), rng=np.random.default_rng(0))
        ring = (one.astype(np.uint64) * np.uint64(n_max)).astype(codec.ring_dtype)
        decoded = codec.decode_sum(ring, n_max)
        assert np.all(np.sign(decoded) == sign)
        clipped = min(float(np.float32(clip)), clip)  # the float32 input, then the codec's clip
        assert np.all(np.abs(decoded - sign * n_max * clipped) <= codec.error_bound(n_max))


def test_default_scale_is_the_largest_power_of_two() -> None:
    codec = FixedPointCodec(clip=1.0, bits=32, num_clients=100)
    assert math.log2(codec.scale).is_integer()
    with pytest.raises(OverflowRiskError):
        FixedPointCodec(clip=1.0, bits=32, num_clients=100, scale=codec.scale * 2)


def test_stochastic_rounding_is_unbiased() -> None:
    codec = FixedPointCodec(clip=1.0, bits=32, num_clients=1, scale=4.0)
    x = np.full(200_000, 0.1, np.float32)  # 0.4 units: rounds to 0 or 1
    decoded = codec.decode(codec.encode(x, rng=np.random.default_rng(1)))
    # std of the mean = 0.25 * sqrt(0.4*0.6/2e5) ~ 2.7e-4; 6 sigma: false-failure < 1e-8
    assert abs(decoded.mean() - float(np.float32(0.1))) < 6 * 0.25 * math.sqrt(0.24 / 2e5)


def test_codec_errors() -> None:
    with pytest.raises(ValueError, match="bits must be 32 or 64"):
        FixedPointCodec(clip=1.0, bits=16)
    with pytest.raises(ValueError, match="clip"):
        FixedPointCodec(clip=0.0)
    with pytest.raises(ValueError, match="num_clients"):
        FixedPointCodec(clip=1.0, num_clients=0)
    codec = FixedPointCodec(clip=1.0, num_clients=4)
    with pytest.raises(EncodingError, match="NaN"):
        codec.encode(np.array([np.nan], np.float32))
    with pytest.raises(EncodingError, match="count"):
        codec.decode_sum(np.zeros(3, np.uint32), 5)
    with pytest.raises(EncodingError, match="uint32"):
        codec.decode_sum(np.zeros(3, np.uint64), 1)
    assert "scale" in repr(codec)


@given(
    clip=st.sampled_from([1.0, 0.5, 2.0, 0.125, 3.0]),
    num_clients=st.integers(1, 1000),
    k=st.integers(1, 6),
    rounding=st.sampled_from(["stochastic", "nearest"]),
    data=st.data(),
)
def test_float32_fast_path_within_documented_bound(clip, num_clients, k, rounding, data) -> None:
    """bits=32, power-of-two scale, float32 clip: the chunked float32 encoder."""
    assume(k <= num_clients)
    codec = FixedPointCodec(clip=clip, bits=32, num_clients=num_clients, rounding=rounding)
    assert codec._float32_exact
    element = st.floats(width=32, allow_nan=False)  # includes +-inf and huge values
    d = data.draw(st.integers(0, 40))
    vectors = [np.array(data.draw(st.lists(element, min_size=d, max_size=d)), dtype=np.float32) for _ in range(k)]
    ring = np.zeros(d, dtype=np.uint32)
    for v in vectors:
        encoded = codec.encode(v)
        assert np.all(np.abs(encoded.view(np.int32).astype(np.int64)) <= codec.bound)
        ring += encoded
    exact = sum(np.clip(v.astype(np.float64), -clip, clip) for v in vectors)
    assert np.all(np.abs(codec.decode_sum(ring, k) - exact) <= codec.error_bound(k))


def test_float32_and_float64_paths_agree_in_the_mean() -> None:
    """Both encoders are unbiased: their decoded means of one value match the value."""
    fast = FixedPointCodec(clip=1.0, bits=32, num_clients=1, scale=8.0)
    slow = FixedPointCodec(clip=1.0, bits=64, num_clients=1, scale=8.0)
    x = np.full(100_000, 0.3, np.float32)  # 2.4 quanta: rounds to 2 or 3
    rng = np.random.default_rng(2)
    for codec in (fast, slow):
        mean = codec.decode(codec.encode(x, rng=rng)).mean()
        # std of the mean = sqrt(0.4*0.6/1e5)/8 ~ 1.9e-4; 6 sigma: false-failure < 1e-8
        assert abs(mean - float(np.float32(0.3))) < 6 * math.sqrt(0.24 / 1e5) / 8


# ----------------------------------------------------------------------------- clip reports
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, width=32) | st.sampled_from([np.inf, -np.inf]), min_size=0, max_size=300),
    st.sampled_from([0.5, 1.0, 3.0, 0.1]),  # 0.1 is not a float32 value: the float64 path
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**32 - 1),
)
def test_encode_with_report_counts_exactly_the_clipped_coordinates(values, clip, dtype, seed) -> None:
    codec = FixedPointCodec(clip=clip, bits=32, num_clients=4)
    vector = np.array(values, dtype=dtype)
    ring, report = codec.encode_with_report(vector, rng=np.random.default_rng(seed))
    assert np.array_equal(ring, codec.encode(vector, rng=np.random.default_rng(seed)))  # same encoding
    expected = sum(abs(float(v)) > clip for v in vector)
    assert report == ClipReport("coordinate", len(values), expected, clip) == codec.clip_report(vector)
    assert report.any == (expected > 0) and report.factor == 1.0 and report.norm is None
    assert str(report) == f"clipped {expected:,} of {len(values):,} coordinates to [-{clip:g}, {clip:g}]"


def test_clip_report_in_chunks_and_at_the_bound() -> None:
    codec = FixedPointCodec(clip=1.0, bits=32, num_clients=2)
    vector = np.zeros(100_003, np.float32)  # several encoding chunks
    vector[::1000] = 2.0
    vector[5] = -np.inf
    vector[7] = 1.0  # on the bound: not clipped
    vector[9] = np.nextafter(np.float32(1.0), np.float32(2.0))
    _, report = codec.encode_with_report(vector)
    assert report.clipped == 101 + 1 + 1 and report.fraction == pytest.approx(103 / 100_003)
    with pytest.raises(EncodingError, match="NaN"):
        codec.clip_report(np.array([np.nan], np.float32))
