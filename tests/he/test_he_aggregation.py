"""Encrypt -> weighted sum on the server -> decrypt: packing, precision, compactness.

Error bounds are the documented 8-sigma bounds of :class:`CkksParams` (a slot exceeds it
with probability ~1e-15, so the false-failure rate of these tests is below 1e-9 per run);
the acceptance bound 1e-6 on the weighted mean of 10 clients is checked as well.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import EncodingError, SpecMismatchError
from fedcrypt.he import AggregatorContext, BlobKind, CkksParams, KeyOwner, peek_header
from fedcrypt.vectors import TensorSpec

SLOTS = 4096  # N/2 for the presets under test
PER_CT = 2 * SLOTS  # values per ciphertext with complex packing (the default)


def _lengths() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([1, 2, 3, SLOTS - 1, SLOTS, SLOTS + 1, PER_CT - 1, PER_CT, PER_CT + 1]),
        st.integers(1, 2 * PER_CT + 3),
    )


def _clipped_vectors(draw, n: int, length: int) -> list[np.ndarray]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)  # test data, not secret
    kind = draw(st.sampled_from(["uniform", "extremes", "tiny"]))
    out = []
    for _ in range(n):
        if kind == "uniform":
            v = rng.uniform(-1.0, 1.0, length)
        elif kind == "extremes":
            v = rng.choice([-1.0, 1.0, 0.0], length)
        else:
            v = rng.standard_normal(length) * 1e-7
        out.append(v.astype(np.float32))
    return out


@st.composite
def integer_rounds(draw):
    length = draw(_lengths())
    n = draw(st.integers(1, 10))
    weights = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    return _clipped_vectors(draw, n, length), weights


@given(integer_rounds())
@settings(max_examples=80, deadline=None)
def test_integer_weighted_mean_is_within_bound(
    compact_owner: KeyOwner, compact_server: AggregatorContext, case
) -> None:
    vectors, weights = case
    blobs = [compact_owner.encrypt(v) for v in vectors]
    total = compact_server.weighted_sum(list(zip(blobs, weights)))
    header = peek_header(total)
    assert header.kind == BlobKind.AGGREGATE and header.contributions == len(vectors)
    assert header.total_weight == sum(weights)
    result = compact_owner.decrypt(total)
    assert result.shape == vectors[0].shape and result.dtype == np.float64
    exact_sum = sum(w * v.astype(np.float64) for w, v in zip(weights, vectors))
    params = compact_owner.params
    assert np.max(np.abs(result - exact_sum)) <= params.sum_error_bound(weights)
    mean = compact_owner.decrypt_mean(total)
    mean_error = np.max(np.abs(mean - exact_sum / sum(weights)))
    assert mean_error <= params.mean_error_bound(weights)
    # Server-side weights up to max_weight=1000 leave 2 bits of headroom: the flooding of a
    # released decryption dominates (documented); the 1e-6 acceptance bound is met with
    # client-side weights (test_client_weighted_mean_of_ten_clients_meets_1e-6).


@pytest.fixture(scope="module")
def unit_owner() -> KeyOwner:
    return KeyOwner.generate(CkksParams.preset("compact", num_clients=10, max_weight=1.0, clip=1.0))


@st.composite
def client_weighted_rounds(draw):
    length = draw(_lengths())
    n = draw(st.integers(2, 10))
    weights = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    return _clipped_vectors(draw, n, length), weights


@given(client_weighted_rounds())
@settings(max_examples=40, deadline=None)
def test_client_weighted_mean_of_ten_clients_meets_1e_6(unit_owner: KeyOwner, case) -> None:
    """Clients encrypt ``w/M * [x, 1]`` (as in Flower); the server adds with weight 1.

    13 bits of headroom: the released (flooded) mean ``sum(w/M x) / sum(w/M)`` is within
    its documented bound and, when the total weight ``sum(w/M)`` is at least 5 (the
    acceptance case: 10 clients with weights >= 500 of M=1000), within 1e-6.
    """
    vectors, weights = case
    big_m = 1000.0
    server = unit_owner.aggregator_context()
    blobs = [unit_owner.encrypt(np.append(w / big_m * v.astype(np.float64), w / big_m)) for w, v in zip(weights, vectors)]
    total = server.weighted_sum([(b, 1) for b in blobs])
    released = unit_owner.decrypt(total)
    exact = unit_owner._decrypt_exact(total)
    params = unit_owner.params
    exact_sum = np.append(sum(w / big_m * v.astype(np.float64) for w, v in zip(weights, vectors)), sum(weights) / big_m)
    bound = params.sum_error_bound([1.0] * len(weights))
    assert np.max(np.abs(released - exact_sum)) <= bound
    assert np.max(np.abs(exact - exact_sum)) <= params.sum_error_bound([1.0] * len(weights), flooded=False)
    if released.size > 64:  # the flooding is there, at the documented size (not a no-op)
        noise = released - exact
        stddev = params.flooding_stddev(len(weights), float(len(weights)), float_weights=False)
        assert 0.5 * stddev < np.std(noise) < 2 * stddev
    total_weight = sum(weights) / big_m
    mean_error = np.max(np.abs(released[:-1] / released[-1] - exact_sum[:-1] / total_weight))
    if total_weight >= 5:
        assert mean_error <= 1e-6


@st.composite
def float_rounds(draw):
    length = draw(_lengths())
    n = draw(st.integers(1, 10))
    weights = draw(
        st.lists(st.one_of(st.floats(0.05, 1000.0), st.integers(1, 1000)), min_size=n, max_size=n)
    )
    return _clipped_vectors(draw, n, length), weights


@given(float_rounds())
@settings(max_examples=40, deadline=None)
def test_float_weighted_mean_is_within_bound(
    weighted_owner: KeyOwner, weighted_server: AggregatorContext, case
) -> None:
    vectors, weights = case
    blobs = [weighted_owner.encrypt(v) for v in vectors]
    total = weighted_server.weighted_sum(list(zip(blobs, weights)))
    result = weighted_owner.decrypt(total)
    exact_sum = sum(float(w) * v.astype(np.float64) for w, v in zip(weights, vectors))
    params = weighted_owner.params
    assert np.max(np.abs(result - exact_sum)) <= params.sum_error_bound(weights, float_weights=True)
    mean_error = np.max(np.abs(weighted_owner.decrypt_mean(total) - exact_sum / sum(map(float, weights))))
    assert mean_error <= params.mean_error_bound(weights, float_weights=True)


def test_float_weights_on_the_compact_preset_are_refused(compact_owner, compact_server) -> None:
    blob = compact_owner.encrypt(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"non-integer weight 0.5 needs parameters with upload_level >= 1"):
        compact_server.weighted_sum([(blob, 0.5)])
    # an integral float is an integer weight
    total = compact_server.weighted_sum([(blob, 3.0)])
    assert np.allclose(compact_owner.decrypt(total), 3.0, atol=compact_owner.params.sum_error_bound([3]))


@pytest.mark.parametrize("length", [1, 2, 3, SLOTS - 1, SLOTS, SLOTS + 1, PER_CT - 1, PER_CT, PER_CT + 1, 3 * PER_CT])
def test_packing_uses_as_few_ciphertexts_as_slots_allow(compact_owner, compact_server, length: int) -> None:
    vector = np.linspace(-1, 1, length, dtype=np.float32)
    blob = compact_owner.encrypt(vector)
    header = peek_header(blob)
    assert header.ciphertext_count == -(-length // PER_CT) and header.length == length
    total = compact_server.weighted_sum([(blob, 2)])
    assert peek_header(total).ciphertext_count == header.ciphertext_count
    out = compact_owner.decrypt(total)
    assert out.shape == (length,)
    assert np.max(np.abs(out - 2 * vector.astype(np.float64))) <= compact_owner.params.sum_error_bound([2])


def test_upload_is_compact_and_the_aggregate_is_at_the_last_level(compact_owner, weighted_owner) -> None:
    full = np.random.default_rng(1).uniform(-1, 1, 4 * PER_CT).astype(np.float32)
    compact = compact_owner.encrypt(full)
    assert len(compact) / full.size <= 8.3  # one 60-bit prime, second polynomial as a seed, two reals a slot
    from fedcrypt.he.blob import HEADER_BYTES

    seal_header = compact[HEADER_BYTES + 4 : HEADER_BYTES + 20]
    assert seal_header[:2] == b"\x5e\xa1" and seal_header[5] == 0  # SEAL magic; compr_mode none (peers refuse others)
    weighted = weighted_owner.encrypt(full)
    assert 16.0 <= len(weighted) / full.size <= 16.5  # two primes, uncompressed
    aggregate = weighted_owner.aggregator_context().weighted_sum([(weighted, 0.25)])
    # a full ciphertext (two polynomials) over one prime: 16 bytes per value, not 32
    assert len(aggregate) / full.size <= 16.5


def test_values_beyond_clip_are_clipped(compact_owner, compact_server) -> None:
    vector = np.array([-5.0, -1.0, 0.5, 1.0, np.inf], dtype=np.float64)
    out = compact_owner.decrypt(compact_owner.encrypt(vector))
    assert np.allclose(out, [-1.0, -1.0, 0.5, 1.0, 1.0], atol=compact_owner.params.sum_error_bound([1]))


@pytest.mark.parametrize(
    ("vector", "error", "message"),
    [
        (np.zeros(0, np.float32), EncodingError, "vector length 0 outside"),
        (np.zeros((2, 2), np.float32), EncodingError, "expected a 1-D vector"),
        (np.zeros(3, np.int32), EncodingError, "expected a float vector"),
        (np.array([1.0, np.nan], np.float32), EncodingError, "vector contains NaN"),
        ([1.0, 2.0], TypeError, "expected a numpy vector, got list"),
    ],
)
def test_encrypt_refuses_bad_vectors(compact_owner, vector, error, message) -> None:
    with pytest.raises(error, match=message):
        compact_owner.encrypt(vector)


def test_spec_digest_travels_and_is_checked(compact_owner, compact_server) -> None:
    update = {"a": np.ones((3, 4), np.float32), "b": np.zeros(5, np.float32)}
    spec = TensorSpec.from_tensors(update)
    vector = spec.flatten(update)
    blob = compact_owner.encrypt(vector, spec=spec)
    assert peek_header(blob).spec_digest == spec.digest()
    total = compact_server.weighted_sum([(blob, 1)], spec=spec)
    restored = spec.unflatten(compact_owner.decrypt(total, spec=spec).astype(np.float32))
    bound = compact_owner.params.sum_error_bound([1]) + 1e-7  # + float32 rounding
    assert np.allclose(restored["a"], 1.0, atol=bound) and np.allclose(restored["b"], 0.0, atol=bound)
    other = TensorSpec.from_tensors({"c": np.ones(16, np.float32)})
    with pytest.raises(SpecMismatchError, match="TensorSpec digest differs"):
        compact_owner.decrypt(total, spec=other)
    with pytest.raises(SpecMismatchError, match="vector has length 17, the spec needs 16"):
        compact_owner.encrypt(vector, spec=other)


def test_public_api_block_of_the_issue() -> None:
    from fedcrypt.he import CkksParams

    owner = KeyOwner.generate(CkksParams.preset("compact"))
    peer = KeyOwner.from_bytes(owner.to_bytes(include_secret_key=True))
    server = AggregatorContext.from_bytes(owner.aggregator_context().to_bytes())
    rng = np.random.default_rng(7)
    vector, vector2 = rng.uniform(-1, 1, 1000), rng.uniform(-1, 1, 1000)
    blob, blob2 = peer.encrypt(vector), owner.encrypt(vector2)
    total = server.weighted_sum([(blob, 30), (blob2, 12)])
    assert isinstance(total, bytes)
    weighted_sum = owner.decrypt(total)
    assert isinstance(weighted_sum, np.ndarray) and weighted_sum.shape == (1000,)
    assert np.max(np.abs(weighted_sum - (30 * vector + 12 * vector2))) <= owner.params.sum_error_bound([30, 12])
    np.testing.assert_array_equal(peer.decrypt(total), weighted_sum)  # same key, same ciphertext: same flooding


@pytest.mark.slow
def test_ten_clients_at_lora_size_meet_the_acceptance_bound(unit_owner) -> None:
    """d = 1.13e6 (a LoRA adapter), 10 clients, client-side weights w/M: mean error <= 1e-6."""
    d = 1_130_000
    rng = np.random.default_rng(2024)  # test data, not secret
    vectors = [rng.uniform(-1, 1, d).astype(np.float32) for _ in range(10)]
    weights = [int(w) for w in rng.integers(500, 1001, 10)]
    blobs = [unit_owner.encrypt(np.append(w / 1000 * v.astype(np.float64), w / 1000)) for w, v in zip(weights, vectors)]
    assert all(len(b) / d <= 8.3 for b in blobs)
    running = unit_owner.aggregator_context().start(length=d + 1)
    for blob in blobs:
        running.add(blob, 1)
    released = unit_owner.decrypt(running.finish())
    mean = released[:-1] / released[-1]
    exact = sum(w * v.astype(np.float64) for w, v in zip(weights, vectors)) / sum(weights)
    error = np.max(np.abs(mean - exact))
    assert error <= 1e-6


@pytest.mark.parametrize("packing", ["complex", "real"])
@pytest.mark.parametrize("length", [1, 2, 3, 4095, 4097, 8191, 8193])
def test_both_packings_give_the_same_sum_within_the_bound(packing: str, length: int) -> None:
    """Real packing (the layout before wire version 2) stays available; both packings decrypt
    the same weighted sum within the same documented bound, real and imaginary parts alike."""
    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=4, packing=packing))
    server = owner.aggregator_context()
    rng = np.random.default_rng(length)  # test data, not secret
    vectors = [rng.choice([-1.0, 1.0], length) for _ in range(3)]  # extremes: largest slot modulus sqrt(2)
    weights = [3, 1, 7]
    blobs = [owner.encrypt(v) for v in vectors]
    per_ct = 8192 if packing == "complex" else 4096
    assert peek_header(blobs[0]).ciphertext_count == -(-length // per_ct)
    total = server.weighted_sum(list(zip(blobs, weights)))
    exact = sum(w * v for w, v in zip(weights, vectors))
    released = owner.decrypt(total)
    assert released.shape == (length,)
    assert np.max(np.abs(released - exact)) <= owner.params.sum_error_bound(weights)
    assert np.max(np.abs(owner._decrypt_exact(total) - exact)) <= owner.params.sum_error_bound(weights, flooded=False)


def test_complex_packing_floods_real_and_imaginary_parts() -> None:
    """Every released value carries flooding: the imaginary parts (odd indices) as much as the
    real parts (even indices), each with the documented standard deviation."""
    params = CkksParams.preset("compact", num_clients=4, max_weight=1.0)
    owner = KeyOwner.generate(params)
    vector = np.zeros(8192)
    blob = owner.encrypt(vector)
    flood = owner.decrypt(blob) - owner._decrypt_exact(blob)
    stddev = params.flooding_stddev(1, 1.0, float_weights=False)
    for part in (flood[0::2], flood[1::2]):
        assert 0.9 * stddev <= float(np.std(part)) <= 1.1 * stddev
    assert abs(float(np.corrcoef(flood[0::2], flood[1::2])[0, 1])) < 0.1
