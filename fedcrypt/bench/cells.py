"""One aggregation step per protection, timed per party, with its traffic, memory and error.

Every runner here plays a whole step in one process — the clients one after the other,
the server between them — and streams: a client's message is produced, handed to the
server and dropped, so at most one client's upload is alive at a time, as on a real
server. The runners only move bytes between protocol objects that live elsewhere
(:mod:`fedcrypt.secagg`, :mod:`fedcrypt.he`, TenSEAL, Flower's ``secaggplus_mod``); they
hold no cryptography of their own.

Invariants:

* ``client_s`` is the mean, over the surviving clients (those whose input is in the sum),
  of the wall time each spent in its own protocol code for the whole step (all stages,
  encoding and decryption of the result included); the per-client figure is therefore
  comparable across protocols with different stage counts. ``bytes_up`` and
  ``bytes_down`` are averaged over the same clients.
* ``server_s`` is the wall time of every server call of the step (receive, end of stage,
  decode). Time spent generating benchmark inputs is in neither. ``client_cpu_s`` and
  ``server_cpu_s`` are the process CPU time of the same calls: on a shared machine the
  wall time includes waiting for a core, the CPU time much less so.
* ``bytes_up`` / ``bytes_down`` are the bytes one client sent and received for the
  aggregation, from the messages' own encodings; the broadcast of the model itself (the
  same for every protection) is not counted.
* ``server_peak_bytes`` (measured in a separate pass, ``memory=True``) is the server's
  attributed peak memory: the memory its earlier calls retained plus the rise during a
  call, by :mod:`tracemalloc` (Python and NumPy) and by the kernel's resident high-water
  mark reset before each call (``/proc/self/clear_refs``; native SEAL memory), the larger
  of the two. Both are lower bounds; ``nan`` when not measured.
* ``error`` is the max absolute difference between the protocol's sum and the float64 sum
  of the same survivors' inputs; ``error_bound`` is the protocol's documented bound.
* Inputs come from a NumPy generator: benchmark data, never secret. Keys, seeds, masks and
  encryption randomness come from the protocols' own cryptographic sources.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "PROTECTIONS",
    "StepCost",
    "CellSpec",
    "ServerMeter",
    "run_step",
    "is_available",
    "secagg_plus_degree",
]

#: protection name -> one-line description (the matrix's first axis).
PROTECTIONS: dict[str, str] = {
    "plaintext": "float32 upload, server float64 sum (the baseline)",
    "secagg": "fedcrypt SecAgg, complete graph (Bonawitz et al. 2017)",
    "secagg+": "fedcrypt SecAgg+, k-regular graph (Bell et al. 2020)",
    "flower-secagg+": "Flower's secaggplus_mod client stages + its server unmask (flwr.common.secure_aggregation)",
    "ckks": "fedcrypt CKKS, compact preset (N=8192, [60,40,60], seeded level-0 uploads)",
    "tenseal": "TenSEAL ts.ckks_vector as users write it (N=8192, [60,40,40,60], scale 2^40)",
    "verified": "fedcrypt verified aggregation (PINE, Pine40HmacSha256Aes128): every input proven L2-bounded, "
    "checked by a leader and a helper (server time: both)",
}

#: protections that need an optional extra, and the module that provides it.
_EXTRA_MODULE = {"flower-secagg+": "flwr", "ckks": "tenseal", "tenseal": "tenseal"}


def is_available(protection: str) -> bool:
    """Whether the optional package a protection needs can be imported."""
    module = _EXTRA_MODULE.get(protection)
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


def secagg_plus_degree(n: int) -> int:
    """The SecAgg+ degree used when none is given: ``2 ceil(log2 n)``, even, at most ``n - 1``.

    Bell et al. (2020) need ``k = O(log n)``; ``fedcrypt.secagg`` refuses ``k < ceil(log2 n)``
    and an odd ``n k``. The result is even so that ``n k`` is even for every ``n``.
    """
    k = 2 * math.ceil(math.log2(max(n, 2)))
    if k >= n - 1:
        return n - 1
    return k


@dataclass(frozen=True)
class CellSpec:
    """One point of the matrix.

    Attributes:
        protection: a key of :data:`PROTECTIONS`.
        n: number of clients.
        d: vector length (parameters).
        dropout: fraction of clients that drop after sharing keys, before their upload.
        bits: ring size for the masking protocols (32 or 64); ignored by the others.
        k: SecAgg+ degree (``None``: :func:`secagg_plus_degree`); the complete graph's
            ``n - 1`` for SecAgg; unused by plaintext and CKKS.
        dp: distributed DP on (noise added by the clients in the ring) or off.
        clip: L-infinity bound of the inputs (inputs are drawn in ``[-clip/2, clip/2]``);
            ``verified`` proves the L2 bound ``clip/2 sqrt(d)`` that every such input meets.
    """

    protection: str
    n: int
    d: int
    dropout: float = 0.0
    bits: int = 32
    k: int | None = None
    dp: bool = False
    clip: float = 1.0

    def __post_init__(self) -> None:
        if self.protection not in PROTECTIONS:
            raise ValueError(f"unknown protection {self.protection!r}; known: {sorted(PROTECTIONS)}")
        if not isinstance(self.n, int) or self.n < 2:
            raise ValueError(f"n must be an integer >= 2, got {self.n!r}")
        if not isinstance(self.d, int) or self.d < 1:
            raise ValueError(f"d must be a positive integer, got {self.d!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.bits not in (32, 64):
            raise ValueError(f"bits must be 32 or 64, got {self.bits!r}")

    @property
    def degree(self) -> int:
        """The number of neighbours each client masks with (``k``)."""
        if self.protection == "secagg":
            return self.n - 1
        if self.protection in ("secagg+", "flower-secagg+"):
            return self.k if self.k is not None else secagg_plus_degree(self.n)
        return 0

    @property
    def share_holders(self) -> int:
        """Clients holding shares of each client's secrets in a masking cell: the client and
        its neighbours (all ``n`` in a complete graph); ``n`` for the other protections."""
        if self.protection in ("secagg", "secagg+", "flower-secagg+"):
            return min(self.n, self.degree + 1)
        return self.n

    @property
    def threshold(self) -> int:
        """Survivors each share holder group must keep: a majority of the share holders
        for the masking protocols (the smallest Shamir threshold they accept), else 1."""
        if self.protection in ("secagg", "secagg+", "flower-secagg+"):
            return self.share_holders // 2 + 1
        return 1

    @property
    def dropped(self) -> list[int]:
        """Ids of the clients that drop (evenly spread; deterministic, not secret)."""
        count = int(round(self.dropout * self.n))
        if count == 0:
            return []
        step = self.n / count
        return sorted({int(i * step) for i in range(count)})


@dataclass
class StepCost:
    """What one step of one cell cost (see the module invariants)."""

    client_s: float
    server_s: float
    bytes_up: float
    bytes_down: float
    server_peak_bytes: float
    error: float
    error_bound: float
    survivors: int
    extra: dict[str, float] = field(default_factory=dict)
    client_cpu_s: float = math.nan
    server_cpu_s: float = math.nan


# ----------------------------------------------------------------------------- server meter
class ServerMeter:
    """Times server calls and attributes the memory they allocate (see module doc).

    With ``memory=True`` each call is also measured for memory, two ways, and the larger
    attributed peak is kept: Python/NumPy allocations through :mod:`tracemalloc` (exact for
    them, blind to native heaps) and resident memory through the kernel's high-water mark,
    reset before each call (sees SEAL's native pool; blind to memory the allocator reuses).
    Both are lower bounds of the truth; the timing repeats run without either.
    """

    def __init__(self, memory: bool = False) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.memory = memory
        self._retained = [0, 0]
        self._peak = [0, 0]
        self._can_reset = memory and _reset_hwm()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` as server work."""
        if not self.memory:
            cpu = time.process_time()
            start = time.perf_counter()
            value = fn(*args)
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu
            return value
        import tracemalloc

        if self._can_reset:
            _reset_hwm()
            rss_before = _rss_bytes("VmRSS")
        traced_before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        start = time.perf_counter()
        value = fn(*args)
        self.seconds += time.perf_counter() - start
        traced_after, traced_peak = tracemalloc.get_traced_memory()
        self._account(0, traced_before, traced_after, traced_peak)
        if self._can_reset:
            self._account(1, rss_before, _rss_bytes("VmRSS"), _rss_bytes("VmHWM"))
        return value

    def _account(self, slot: int, before: int, after: int, high: int) -> None:
        self._peak[slot] = max(self._peak[slot], self._retained[slot] + max(high - before, 0))
        self._retained[slot] = max(self._retained[slot] + after - before, 0)

    @property
    def peak_bytes(self) -> float:
        """The attributed peak, or ``nan`` when memory was not measured."""
        return float(max(self._peak)) if self.memory else math.nan


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_bytes(field_name: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


class _ClientClock:
    """Accumulates per-client busy time."""

    def __init__(self, n: int) -> None:
        self.busy = [0.0] * n
        self.cpu = [0.0] * n

    def call(self, client: int, fn: Callable[..., Any], *args: Any) -> Any:
        cpu = time.process_time()
        start = time.perf_counter()
        value = fn(*args)
        self.busy[client] += time.perf_counter() - start
        self.cpu[client] += time.process_time() - cpu
        return value

    def mean(self, clients: Sequence[int]) -> float:
        return float(np.mean([self.busy[i] for i in clients])) if clients else 0.0

    def cpu_mean(self, clients: Sequence[int]) -> float:
        return float(np.mean([self.cpu[i] for i in clients])) if clients else 0.0


def _with_cpu(cost: StepCost, clock: _ClientClock, meter: ServerMeter, survivors: Sequence[int]) -> StepCost:
    """``cost`` with the CPU seconds (``time.process_time``) of the same calls filled in."""
    cost.client_cpu_s = clock.cpu_mean(survivors)
    cost.server_cpu_s = meter.cpu_seconds
    return cost


# ----------------------------------------------------------------------------- plaintext
def _plaintext(spec: CellSpec, inputs: Sequence[np.ndarray]) -> StepCost:
    dropped = set(spec.dropped)
    clock = _ClientClock(spec.n)
    meter = ServerMeter(_MEMORY[0])
    total = meter.call(lambda: np.zeros(spec.d, dtype=np.float64))
    up = []
    survivors = []
    for i in range(spec.n):
        vector = inputs[i]
        if i in dropped:
            continue
        blob = clock.call(i, vector.astype(np.float32).tobytes)
        up.append(len(blob))
        meter.call(lambda b: np.add(total, np.frombuffer(b, dtype=np.float32), out=total), blob)
        survivors.append(i)
        del blob
    exact = _float_sum(inputs, survivors)
    error = float(np.max(np.abs(total - exact)))
    bound = 4 * len(survivors) * spec.clip * 2.0**-52
    return _with_cpu(
        StepCost(clock.mean(survivors), meter.seconds, float(np.mean(up)), 0.0, meter.peak_bytes, error, bound, len(survivors)),
        clock,
        meter,
        survivors,
    )


def _float_sum(inputs: Sequence[np.ndarray], survivors: Sequence[int]) -> np.ndarray:
    exact = np.zeros(inputs[0].shape[0], dtype=np.float64)
    for i in survivors:
        exact += inputs[i]
    return exact


# ----------------------------------------------------------------------------- fedcrypt SecAgg(+)
def _secagg_config(spec: CellSpec) -> Any:
    from fedcrypt.secagg import SecAggConfig

    k = spec.degree
    neighbours = None if k >= spec.n - 1 else k  # SecAgg, or SecAgg+ too small for a sparser graph
    return SecAggConfig(num_clients=spec.n, threshold=spec.threshold, neighbours=neighbours, bits=spec.bits, clip=spec.clip)


def _secagg(spec: CellSpec, inputs: Sequence[np.ndarray]) -> StepCost:
    from fedcrypt.secagg import ClientProtocol, ServerProtocol, Stage

    config = _secagg_config(spec)
    codec = config.codec
    dp = _DistributedNoise(spec, config) if spec.dp else None
    n = spec.n
    dropped = set(spec.dropped)
    clock = _ClientClock(n)
    meter = ServerMeter(_MEMORY[0])
    up = [0] * n
    down = [0] * n
    clients = [clock.call(i, ClientProtocol, config, i) for i in range(n)]
    server = meter.call(lambda: ServerProtocol(config, dimension=dp.ring_length if dp is not None else spec.d))
    for i, client in enumerate(clients):
        blob = clock.call(i, lambda c=client: c.advertise().to_bytes())
        up[i] += len(blob)
        meter.call(server.receive, blob)
    requests = meter.call(server.end_stage)
    rounding = np.random.default_rng(7)  # fixed-point rounding coins: not secret
    for stage in (Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK):
        for i in sorted(requests):
            if stage is not Stage.SHARE_KEYS and i in dropped:
                continue
            request = meter.call(lambda r=requests[i]: r.to_bytes())
            down[i] += len(request)

            def answer(i: int = i, request: bytes = request, stage: Stage = stage) -> bytes:
                if stage is Stage.MASKED_INPUT:
                    ring = dp.encode(inputs[i]) if dp is not None else codec.encode(inputs[i], rng=rounding)
                    clients[i].set_input(ring)
                return clients[i].handle(request).to_bytes()

            blob = clock.call(i, answer)
            up[i] += len(blob)
            meter.call(server.receive, blob)
            del blob
        requests = meter.call(server.end_stage)
    result = server.result
    survivors = list(result.survivors)
    if dp is not None:
        total = meter.call(dp.decode, result.ring_sum, len(survivors))
    else:
        total = meter.call(codec.decode_sum, result.ring_sum, len(survivors))
    exact = _float_sum(inputs, survivors)
    error = float(np.max(np.abs(total - exact)))
    bound = dp.error_bound(len(survivors)) if dp is not None else codec.error_bound(len(survivors))
    return _with_cpu(
        StepCost(
            clock.mean(survivors),
            meter.seconds,
            float(np.mean([up[i] for i in survivors])),
            float(np.mean([down[i] for i in survivors])),
            meter.peak_bytes,
            error,
            bound,
            len(survivors),
            extra={"degree": float(config.share_holders - 1), "threshold": float(config.threshold)},
        ),
        clock,
        meter,
        survivors,
    )


class _DistributedNoise:
    """Distributed DP (``fedcrypt.dp.DistributedDp``, discrete Gaussian) inside the masked vector.

    Noise multiplier 1, ring of 2^20 (the aggregators' default), and the L2 clip set to the
    largest norm the benchmark inputs can have (``clip/2 sqrt(d)``), so nothing is clipped
    and the error against the float sum is the privacy noise plus the rounding; the bound
    is the aggregators' documented high-probability one (``DistributedDpAggregator``):
    ``sqrt(2 ln(2 D / 1e-6)) sqrt((z C)^2 m / n + m / (4 s^2))`` for the sum of ``m``.
    """

    def __init__(self, spec: CellSpec, config: Any) -> None:
        from fedcrypt import dp

        if config.bits != 32:
            raise NotImplementedError("distributed DP runs in the 32-bit SecAgg ring only")
        dp_config = dp.DistributedDpConfig(1.0, spec.clip / 2 * math.sqrt(spec.d), spec.n, bits=20)
        self._mechanism = dp.DistributedDp(dp_config, spec.d)
        self.ring_length = self._mechanism.ring_length

    def encode(self, vector: np.ndarray) -> np.ndarray:
        return self._mechanism.encode(vector.astype(np.float64))

    def decode(self, ring_sum: np.ndarray, count: int) -> np.ndarray:
        return self._mechanism.decode(ring_sum, count)

    def error_bound(self, count: int) -> float:
        variance = self._mechanism.noise_stddev(count) ** 2 + count / (4.0 * self._mechanism.scale**2)
        return math.sqrt(2.0 * math.log(2.0 * self.ring_length / 1e-6)) * math.sqrt(variance)


# ----------------------------------------------------------------------------- CKKS
def _ckks(spec: CellSpec, inputs: Sequence[np.ndarray], owner: Any) -> StepCost:
    from fedcrypt.he import AggregatorContext

    dropped = set(spec.dropped)
    clock = _ClientClock(spec.n)
    meter = ServerMeter(_MEMORY[0])
    server = AggregatorContext.from_bytes(owner.aggregator_context().to_bytes())
    total = meter.call(lambda: server.start(length=spec.d))
    up = []
    survivors = []
    encrypt_s = []
    for i in range(spec.n):
        vector = inputs[i]
        if i in dropped:
            continue
        blob = clock.call(i, owner.encrypt, vector.astype(np.float32))
        encrypt_s.append(clock.busy[i])
        up.append(len(blob))
        meter.call(total.add, blob, 1)
        survivors.append(i)
        del blob
    aggregate = meter.call(total.finish)
    result = None
    for i in survivors:  # every survivor decrypts the aggregate
        result = clock.call(i, owner.decrypt, aggregate)
    exact = _float_sum(inputs, survivors)
    error = float(np.max(np.abs(np.asarray(result, dtype=np.float64) - exact)))
    bound = owner.params.sum_error_bound([1.0] * len(survivors))
    return _with_cpu(
        StepCost(
            clock.mean(survivors),
            meter.seconds,
            float(np.mean(up)),
            float(len(aggregate)),
            meter.peak_bytes,
            error,
            bound,
            len(survivors),
            extra={"encrypt_s": float(np.mean(encrypt_s))},
        ),
        clock,
        meter,
        survivors,
    )


# ----------------------------------------------------------------------------- fedcrypt verified (PINE)
def _verified(spec: CellSpec, inputs: Sequence[np.ndarray]) -> StepCost:
    import os

    from fedcrypt.crypto import X25519KeyPair
    from fedcrypt.verify import HELPER, Helper, Leader, VerifyClient, VerifyConfig

    dropped = set(spec.dropped)
    clock = _ClientClock(spec.n)
    meter = ServerMeter(_MEMORY[0])
    helper_key = X25519KeyPair.generate()
    config = VerifyConfig.for_dimension(spec.d, spec.clip / 2 * math.sqrt(spec.d), helper_key.public_bytes, max_reports=spec.n)
    verify_key = os.urandom(config.vdaf.verify_key_size)
    clients = [VerifyClient(config, i) for i in range(spec.n)]
    leader = meter.call(Leader, config, verify_key, range(spec.n))
    helper = meter.call(lambda: Helper(config, verify_key, helper_key, last_released_round=None))
    requests = meter.call(leader.begin)
    up = [0] * spec.n
    down = [0] * spec.n
    for i in sorted(requests):
        if i in dropped:
            continue
        request = meter.call(requests[i].to_bytes)
        down[i] = len(request)

        def answer(i: int = i, request: bytes = request) -> bytes:
            clients[i].set_input(inputs[i])
            return clients[i].handle(request).to_bytes()

        blob = clock.call(i, answer)
        up[i] = len(blob)
        meter.call(leader.receive, blob)
        del blob
    outgoing = meter.call(leader.end_stage)
    while outgoing:
        reply = meter.call(lambda m=outgoing[HELPER]: helper.handle(m.to_bytes()).to_bytes())
        meter.call(leader.receive, reply)
        outgoing = meter.call(leader.end_stage)
    result = leader.result
    survivors = sorted(result.accepted)
    exact = _float_sum(inputs, survivors)
    error = float(np.max(np.abs(result.sum - exact)))
    return _with_cpu(
        StepCost(
            clock.mean(survivors),
            meter.seconds,
            float(np.mean([up[i] for i in survivors])),
            float(np.mean([down[i] for i in survivors])),
            meter.peak_bytes,
            error,
            config.sum_error_bound(len(survivors)),
            len(survivors),
            extra={
                "frac_bits": math.nan if config.num_frac_bits is None else float(config.num_frac_bits),
                "upload_vs_field_vector": float(np.mean([up[i] for i in survivors])) / config.encoded_vector_bytes,
            },
        ),
        clock,
        meter,
        survivors,
    )


_TENSEAL_POLY = 8192
_TENSEAL_PRIMES = [60, 40, 40, 60]
_TENSEAL_SCALE_BITS = 40


def _tenseal_context() -> Any:
    import tenseal as ts

    context = ts.context(ts.SCHEME_TYPE.CKKS, _TENSEAL_POLY, -1, _TENSEAL_PRIMES, n_threads=1)
    context.global_scale = 2.0**_TENSEAL_SCALE_BITS
    return context


class _QuietStdout:
    """Silences file descriptor 1 (TenSEAL's C++ code warns on std::cout for every long vector)."""

    def __enter__(self) -> None:
        import os
        import sys

        sys.stdout.flush()
        self._saved = os.dup(1)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)

    def __exit__(self, *exc: Any) -> None:
        import os

        os.dup2(self._saved, 1)
        os.close(self._saved)


def _tenseal(spec: CellSpec, inputs: Sequence[np.ndarray], context: Any) -> StepCost:
    with _QuietStdout():
        return _tenseal_step(spec, inputs, context)


def _tenseal_step(spec: CellSpec, inputs: Sequence[np.ndarray], context: Any) -> StepCost:
    import tenseal as ts

    dropped = set(spec.dropped)
    clock = _ClientClock(spec.n)
    meter = ServerMeter(_MEMORY[0])
    public = context.copy()
    public.make_context_public()
    acc: list[Any] = [None]
    up = []
    survivors = []
    encrypt_s = []
    for i in range(spec.n):
        vector = inputs[i]
        if i in dropped:
            continue
        blob = clock.call(i, lambda v=vector: ts.ckks_vector(context, v.astype(np.float64)).serialize())
        encrypt_s.append(clock.busy[i])
        up.append(len(blob))

        def add(blob: bytes = blob) -> None:
            vec = ts.ckks_vector_from(public, blob)
            if acc[0] is None:
                acc[0] = vec
            else:
                acc[0] += vec

        meter.call(add)
        survivors.append(i)
        del blob
    aggregate = meter.call(lambda: acc[0].serialize())
    acc[0] = None
    result = None
    for i in survivors:
        result = clock.call(i, lambda: ts.ckks_vector_from(context, aggregate).decrypt())
    exact = _float_sum(inputs, survivors)
    error = float(np.max(np.abs(np.asarray(result, dtype=np.float64) - exact)))
    # TenSEAL documents no bound; this is a loose 8-sigma model of public-key encryption noise
    # (v e + e0 + s e1 with ternary v, s and sigma = 3.2 errors: coefficient variance about
    # 4N/3 sigma^2, N/2 of them per slot) summed over the survivors, plus the decoding term.
    poly = _TENSEAL_POLY
    fresh = math.sqrt(poly / 2 * (1 / 12 + 4 * poly / 3 * 3.2**2)) / 2.0**_TENSEAL_SCALE_BITS
    bound = 8 * fresh * math.sqrt(len(survivors)) + math.ldexp(1.0, 60 - 53) * math.sqrt(poly) / 2.0**_TENSEAL_SCALE_BITS
    return _with_cpu(
        StepCost(
            clock.mean(survivors),
            meter.seconds,
            float(np.mean(up)),
            float(len(aggregate)),
            meter.peak_bytes,
            error,
            bound,
            len(survivors),
            extra={"encrypt_s": float(np.mean(encrypt_s))},
        ),
        clock,
        meter,
        survivors,
    )


# ----------------------------------------------------------------------------- dispatch
class _Keys:
    """Per-run CKKS key material, made once (key generation is set-up, not a step)."""

    def __init__(self) -> None:
        self._owners: dict[int, Any] = {}
        self._tenseal: Any = None

    def owner(self, n: int) -> Any:
        if n not in self._owners:
            from fedcrypt.he import CkksParams, KeyOwner

            self._owners[n] = KeyOwner.generate(CkksParams.preset("compact", num_clients=n))
        return self._owners[n]

    def tenseal(self) -> Any:
        if self._tenseal is None:
            self._tenseal = _tenseal_context()
        return self._tenseal


_KEYS = _Keys()
_MEMORY = [False]


class Inputs(Sequence[np.ndarray]):
    """The clients' benchmark vectors: ``n`` float32 vectors uniform in ``[-clip/2, clip/2]``.

    Vector ``i`` comes from ``np.random.default_rng((seed, i))`` (benchmark data, not
    secret). Up to ``cache_bytes`` the vectors are kept; above, each is regenerated on
    access so that a 4e7-parameter cell never holds all clients' vectors at once.
    """

    def __init__(self, n: int, d: int, clip: float = 1.0, seed: int = 0, cache_bytes: int = 1 << 28) -> None:
        self.n, self.d, self.clip, self.seed = n, d, clip, seed
        self._cache: list[np.ndarray] | None = None
        if n * d * 4 <= cache_bytes:
            self._cache = [self._make(i) for i in range(n)]

    def _make(self, i: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, i))  # benchmark data, not secret
        half = self.clip / 2
        return rng.uniform(-half, half, self.d).astype(np.float32)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        return self._cache[i] if self._cache is not None else self._make(i)


def make_inputs(spec: CellSpec, seed: int = 0) -> Inputs:
    """Benchmark inputs for ``spec`` (see :class:`Inputs`)."""
    return Inputs(spec.n, spec.d, spec.clip, seed)


def run_step(spec: CellSpec, inputs: Sequence[np.ndarray] | None = None, *, memory: bool = False) -> StepCost:
    """Run one aggregation step of ``spec`` and measure it.

    Args:
        spec: the cell.
        inputs: the clients' vectors (default :func:`make_inputs`).
        memory: measure the server's memory too (slower: tracemalloc is on for the step).

    Raises:
        NotImplementedError: the cell combines things that do not go together (DP on a
            protection other than SecAgg/SecAgg+, or a missing mechanism).
    """
    if inputs is None:
        inputs = make_inputs(spec)
    if memory:
        import tracemalloc

        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        _MEMORY[0] = True
        try:
            return _dispatch(spec, inputs)
        finally:
            _MEMORY[0] = False
            if started:
                tracemalloc.stop()
    return _dispatch(spec, inputs)


def _dispatch(spec: CellSpec, inputs: Sequence[np.ndarray]) -> StepCost:
    if spec.dp and spec.protection not in ("secagg", "secagg+"):
        raise NotImplementedError("distributed DP runs under fedcrypt SecAgg/SecAgg+ only")
    if spec.protection == "plaintext":
        return _plaintext(spec, inputs)
    if spec.protection in ("secagg", "secagg+"):
        return _secagg(spec, inputs)
    if spec.protection == "flower-secagg+":
        from fedcrypt.bench.flower_cell import flower_step

        return flower_step(spec, inputs)
    if spec.protection == "ckks":
        return _ckks(spec, inputs, _KEYS.owner(spec.n))
    if spec.protection == "verified":
        return _verified(spec, inputs)
    return _tenseal(spec, inputs, _KEYS.tenseal())
