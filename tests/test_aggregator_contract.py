"""One contract every aggregator passes: same inputs -> the same weighted mean, within its bound.

Each subclass of :class:`AggregatorContract` names how to build its aggregator and how many
dropouts it tolerates; the tests are shared. The reference is the exactly rounded float64
weighted mean of the survivors (``math.fsum`` per coordinate), so a test fails only if an
aggregator's result leaves its own documented error bound.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.integrations.aggregators import (
    AggregateResult,
    Aggregator,
    CkksAggregator,
    PlainAggregator,
    SecAggAggregator,
    VerifiedAggregator,
    auto_neighbours,
    make_aggregator,
)

CLIP = 1.0


def reference_mean(vectors, weights, survivors) -> np.ndarray:
    """Exactly rounded weighted sums (fsum), one division: the float64 FedAvg."""
    total_weight = math.fsum(weights[i] for i in survivors)
    return np.array(
        [math.fsum(weights[i] * float(vectors[i][j]) for i in survivors) / total_weight for j in range(len(vectors[0]))]
    )


@st.composite
def rounds(draw, num_clients: int, max_dropouts: int, max_length: int = 48, weighted: bool = True):
    length = draw(st.integers(1, max_length))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)  # non-secret test data
    scale = draw(st.sampled_from([1e-4, 1e-2, 1.0]))
    vectors = [(rng.uniform(-1, 1, length) * scale * CLIP).astype(np.float32) for _ in range(num_clients)]
    if draw(st.booleans()):
        vectors[0][0] = np.float32(CLIP)  # the clip bound itself is a valid input
    weights = draw(st.none() | st.lists(st.integers(1, 500), min_size=num_clients, max_size=num_clients)) if weighted else None
    dropouts = draw(st.sets(st.integers(0, num_clients - 1), max_size=max_dropouts))
    return vectors, weights, dropouts


class AggregatorContract:
    """Shared tests; subclasses set ``num_clients``, ``max_dropouts`` and :meth:`make`."""

    num_clients = 5
    max_dropouts = 2
    examples = 50
    #: whether the aggregator takes unequal (FedAvg) weights
    weighted = True
    #: the largest documented error bound accepted on unit-scale data
    bound_limit = 1e-6

    def make(self) -> Aggregator:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def aggregator(cls) -> Aggregator:
        return cls().make()

    def check(self, aggregator, vectors, weights, dropouts) -> AggregateResult:
        result = aggregator.aggregate(vectors, weights, dropouts=dropouts)
        survivors = tuple(i for i in range(len(vectors)) if i not in dropouts)
        assert result.survivors == survivors
        w = [1.0] * len(vectors) if weights is None else [float(x) for x in weights]
        expected = reference_mean(vectors, w, survivors)
        assert result.vector.dtype == np.float64 and result.vector.shape == expected.shape
        error = float(np.abs(result.vector - expected).max())
        assert error <= result.error_bound, (error, result.error_bound)
        assert result.total_weight == pytest.approx(math.fsum(w[i] for i in survivors))
        assert result.bytes_up > 0 and result.bytes_down >= 0
        assert result.client_seconds >= 0 and result.server_seconds >= 0
        return result

    def test_same_weighted_mean_within_bound(self, aggregator) -> None:
        @settings(max_examples=self.examples, deadline=None)
        @given(rounds(self.num_clients, self.max_dropouts, weighted=self.weighted))
        def run(case) -> None:
            self.check(aggregator, *case)

        run()

    def test_dropped_client_does_not_count(self, aggregator) -> None:
        rng = np.random.default_rng(1)
        vectors = [rng.uniform(-0.5, 0.5, 32).astype(np.float32) for _ in range(self.num_clients)]
        vectors[-1] = np.full(32, CLIP, np.float32)  # an outlier that would move the mean
        result = self.check(aggregator, vectors, None, {self.num_clients - 1})
        assert self.num_clients - 1 not in result.survivors
        with_outlier = self.check(aggregator, vectors, None, set())
        assert np.abs(with_outlier.vector - result.vector).min() > 10 * (result.error_bound + with_outlier.error_bound)

    def test_error_bound_is_small_against_the_data(self, aggregator) -> None:
        vectors = [np.full(8, 0.25, np.float32) for _ in range(self.num_clients)]
        weights = list(range(1, self.num_clients + 1)) if self.weighted else [3] * self.num_clients
        result = self.check(aggregator, vectors, weights, set())
        assert 0 <= result.error_bound < self.bound_limit

    def test_bad_inputs_are_refused(self, aggregator) -> None:
        good = [np.zeros(4, np.float32) for _ in range(self.num_clients)]
        with pytest.raises(ValueError, match=r"vectors\[1\] has length 5, vectors\[0\] has 4"):
            aggregator.aggregate([good[0], np.zeros(5, np.float32)] + good[2:])
        with pytest.raises(ValueError, match=r"vectors\[0\] has non-finite entries"):
            aggregator.aggregate([np.array([np.nan, 0, 0, 0], np.float32)] + good[1:])
        with pytest.raises(ValueError, match="weights must be positive finite numbers"):
            aggregator.aggregate(good, [0.0] + [1.0] * (self.num_clients - 1))
        with pytest.raises(ValueError, match=rf"got 1 weights for {self.num_clients} vectors"):
            aggregator.aggregate(good, [1.0])
        with pytest.raises(ValueError, match=r"dropout id 99 is not a client id"):
            aggregator.aggregate(good, None, dropouts={99})
        with pytest.raises(TypeError, match=r"vectors\[0\] is a list"):
            aggregator.aggregate([[0.0] * 4] + good[1:])
        with pytest.raises(ValueError, match="every client dropped out"):
            aggregator.aggregate(good, None, dropouts=set(range(self.num_clients)))


class TestPlain(AggregatorContract):
    examples = 60

    def make(self) -> Aggregator:
        return PlainAggregator()


class TestSecAgg(AggregatorContract):
    def make(self) -> Aggregator:
        return SecAggAggregator(self.num_clients, clip=CLIP)


class TestSecAgg64(AggregatorContract):
    examples = 10

    def make(self) -> Aggregator:
        return SecAggAggregator(self.num_clients, clip=CLIP, bits=64, verify_survivors=True)


class TestSecAggPlus(AggregatorContract):
    num_clients = 8
    max_dropouts = 1  # k=3 neighbours, threshold 3 of 4 holders: one dropout always survivable
    examples = 15

    def make(self) -> Aggregator:
        aggregator = make_aggregator("secagg+", self.num_clients, clip=CLIP)
        assert isinstance(aggregator, SecAggAggregator) and aggregator.config.neighbours == 3
        return aggregator


class TestCkks(AggregatorContract):
    examples = 25
    # the released decryption is noise-flooded (Li-Micciancio): with server-side weights up
    # to max_weight=1000 the compact preset keeps 2 bits of headroom, and the flooded bound
    # of this mean is about 3e-4 (the exact decryption's was below 1e-9)
    bound_limit = 1e-3

    def make(self) -> Aggregator:
        pytest.importorskip("tenseal")
        return CkksAggregator(self.num_clients, clip=CLIP)


class TestVerified(AggregatorContract):
    examples = 15
    weighted = False  # equal weights only: the proof bounds each update, not a claimed weight
    # PINE's fixed point: the L2 bound must hold every input (up to sqrt(48) here), so
    # Field40's B <= 7532 leaves f = 10 fractional bits: a bound of 3 units per summand
    bound_limit = 2e-2

    def make(self) -> Aggregator:
        return VerifiedAggregator(self.num_clients, clip=CLIP * math.sqrt(48))


def test_verified_aggregator_clips_to_its_l2_bound_and_refuses_unequal_weights() -> None:
    """The L2 bound is enforced on every update: a scaled update moves the mean by at most ``clip / m``."""
    aggregator = make_aggregator("verified", 3, clip=1.0)
    assert isinstance(aggregator, VerifiedAggregator)
    vectors = [np.zeros(16, np.float32), np.zeros(16, np.float32), np.full(16, 1000.0, np.float32)]
    result = aggregator.aggregate(vectors)
    assert result.survivors == (0, 1, 2)
    # the 1000x update arrives clipped to norm 1: the mean's norm is at most 1/3 (+ rounding)
    assert float(np.linalg.norm(result.vector)) <= 1 / 3 + 4 * result.error_bound
    assert float(np.linalg.norm(result.vector)) >= 1 / 3 - 4 * result.error_bound
    # a claimed weight is not in the proof (attacker review 5): FedAvg weights are refused
    with pytest.raises(ValueError, match="verified aggregation needs equal weights"):
        aggregator.aggregate(vectors, [1.0, 1.0, 3.0])
    assert aggregator.aggregate(vectors, [7.0, 7.0, 7.0]).total_weight == 21.0
    with pytest.raises(ValueError, match="clip must be a positive finite number"):
        VerifiedAggregator(3, clip=float("nan"))


def test_auto_neighbours() -> None:
    assert auto_neighbours(4) == 2
    assert auto_neighbours(5) is None  # ceil(log2 5)=3, 5*3 odd -> 4 = n-1: complete graph
    assert auto_neighbours(8) == 3
    assert auto_neighbours(100) == 7  # ceil(log2 100)=7 and 100*7 is even
    assert auto_neighbours(9) == 4  # ceil(log2 9)=4, 9*4 even, 4 < 8
    with pytest.raises(ValueError, match="num_clients must be an int >= 2, got 1"):
        auto_neighbours(1)


def test_make_aggregator_names() -> None:
    assert isinstance(make_aggregator("none", 3), PlainAggregator)
    assert make_aggregator("secagg", 3).name == "secagg"
    with pytest.raises(ValueError, match=r"protection must be one of \['none', 'secagg', 'secagg\+', 'ckks', 'verified'\], got 'rsa'"):
        make_aggregator("rsa", 3)


def test_distributed_dp_aggregate_is_fedavg_plus_the_documented_noise() -> None:
    """SecAgg + distributed discrete Gaussian: unbiased, with the stated noise and bound.

    Statistical: the sample std of 8,192 noise coordinates has relative standard error
    ~0.8%; the 5% tolerance is ~6 standard errors (false-failure rate ~1e-9). The noise is
    drawn from the dp package's cryptographic source, so it is not seeded.
    """
    pytest.importorskip("dp_accounting")
    from fedcrypt.integrations.aggregators import DistributedDpAggregator

    rng = np.random.default_rng(5)
    vectors = [(rng.standard_normal(8192) * 0.004).astype(np.float32) for _ in range(5)]
    aggregator = DistributedDpAggregator(5, noise_multiplier=0.8, clip=1.0)
    result = aggregator.aggregate(vectors, dropouts={4})
    assert result.survivors == (0, 1, 2, 3) and aggregator.name == "secagg/ddp"
    deviation = result.vector - reference_mean(vectors, [1.0] * 5, result.survivors)
    expected_std = 0.8 * 1.0 * math.sqrt(4 / 5) / 4
    assert result.noise_stddev == pytest.approx(expected_std)
    assert abs(float(deviation.std()) - expected_std) <= 0.05 * expected_std
    assert abs(float(deviation.mean())) <= 6 * expected_std / math.sqrt(deviation.size)
    assert float(np.abs(deviation).max()) <= result.error_bound
    with pytest.raises(ValueError, match="distributed DP needs equal weights"):
        aggregator.aggregate(vectors, [1, 2, 3, 4, 5])
