"""The Flower SecAgg+ cell of :mod:`fedcrypt.bench.cells` (Flower's own ``secaggplus_mod`` stages
and workflow arithmetic, timed like every other cell); imported only when that cell runs, so
:mod:`fedcrypt.bench.cells` stays free of flwr (extra ``flower``) and under 800 lines."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fedcrypt.bench.cells import _MEMORY, CellSpec, ServerMeter, StepCost, _ClientClock, _float_sum, _with_cpu

_FLOWER_TARGET_RANGE = 1 << 22  # SecAggPlusWorkflow's default quantization_range


def flower_step(spec: CellSpec, inputs: Sequence[np.ndarray]) -> StepCost:
    """Flower 1.x SecAgg+: ``secaggplus_mod``'s own stage functions, the workflow's server steps.

    The client side calls Flower's ``_setup``, ``_share_keys``, ``_collect_masked_vectors``
    and ``_unmask`` on a ``SecAggPlusState``; the server side routes as
    ``SecAggPlusWorkflow`` does and runs its unmask arithmetic (``combine_shares``,
    ``generate_shared_key``, ``pseudo_rand_gen``, ``dequantize``). Bytes are the payloads
    (keys, ciphertexts, ``ndarray_to_bytes`` arrays, shares, 8 bytes per id); Flower's
    protobuf framing is not counted.
    """
    import importlib

    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    try:
        from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key
    except ImportError:  # older Flower
        from flwr.common.secure_aggregation.crypto.symmetric_encryption import (  # type: ignore
            bytes_to_private_key,
            bytes_to_public_key,
        )

    n, k = spec.n, spec.degree
    share_num = spec.share_holders
    threshold = spec.threshold
    mod_range = 1 << spec.bits
    clip = spec.clip
    dropped_idx = set(spec.dropped)
    nids = list(range(1, n + 1))  # Flower node ids; client i is node i + 1
    neighbours = {nids[i]: {nids[(i + o) % n] for o in range(-(share_num // 2), share_num // 2 + 1)} for i in range(n)}
    clock = _ClientClock(n)
    meter = ServerMeter(_MEMORY[0])
    up = [0] * n
    down = [0] * n
    states = [mod.SecAggPlusState(nid=nid) for nid in nids]
    setup = {
        Key.SAMPLE_NUMBER: n,
        Key.SHARE_NUMBER: share_num,
        Key.THRESHOLD: threshold,
        Key.CLIPPING_RANGE: clip,
        Key.TARGET_RANGE: _FLOWER_TARGET_RANGE,
        Key.MOD_RANGE: mod_range,
        Key.MAX_WEIGHT: 1.0,
    }
    public: dict[int, tuple[bytes, bytes]] = {}
    for i, state in enumerate(states):
        reply = clock.call(i, mod._setup, state, dict(setup))
        up[i] += len(reply[Key.PUBLIC_KEY_1]) + len(reply[Key.PUBLIC_KEY_2])
        public[state.nid] = (reply[Key.PUBLIC_KEY_1], reply[Key.PUBLIC_KEY_2])
    # share keys: each node gets its neighbours' public keys; the server forwards ciphertexts
    forward: dict[int, tuple[list[int], list[bytes]]] = {nid: ([], []) for nid in nids}
    for i, state in enumerate(states):
        keys = meter.call(lambda nid=state.nid: {str(p): public[p] for p in sorted(neighbours[nid])})
        down[i] += sum(len(a) + len(b) + 8 for a, b in keys.values())
        reply = clock.call(i, mod._share_keys, state, keys)
        up[i] += sum(len(c) + 8 for c in reply[Key.CIPHERTEXT_LIST])

        def route(reply: dict = reply, src: int = state.nid) -> None:
            for dst, ct in zip(reply[Key.DESTINATION_LIST], reply[Key.CIPHERTEXT_LIST]):
                forward[dst][0].append(src)
                forward[dst][1].append(ct)

        meter.call(route)
    # masked input
    masked: list[Any] | None = None
    active: list[int] = []
    for i, state in enumerate(states):
        if i in dropped_idx:
            continue
        srcs, cts = forward[state.nid]
        config = {Key.SOURCE_LIST: srcs, Key.CIPHERTEXT_LIST: cts}
        down[i] += sum(len(c) + 8 for c in cts)
        parameters = ndarrays_to_parameters([inputs[i].astype(np.float32)])  # the ClientApp's own work
        reply = clock.call(i, mod._collect_masked_vectors, state, config, 1, parameters)
        blobs = reply[Key.MASKED_PARAMETERS]
        up[i] += sum(len(b) for b in blobs)

        def add(blobs: list[bytes] = blobs) -> None:
            nonlocal masked
            vec = [bytes_to_ndarray(b) for b in blobs]
            masked = vec if masked is None else parameters_addition(masked, vec)

        meter.call(add)
        active.append(state.nid)
        del reply, blobs, parameters
    masked = meter.call(lambda: parameters_mod(masked, mod_range))
    dead = [nids[i] for i in sorted(dropped_idx)]
    collected: dict[int, list[bytes]] = {nid: [] for nid in nids}
    for i, state in enumerate(states):
        if i in dropped_idx:
            continue
        request = {
            Key.ACTIVE_NODE_ID_LIST: sorted(neighbours[state.nid] & set(active)),
            Key.DEAD_NODE_ID_LIST: sorted(neighbours[state.nid] & set(dead)),
        }
        down[i] += 8 * (len(request[Key.ACTIVE_NODE_ID_LIST]) + len(request[Key.DEAD_NODE_ID_LIST]))
        reply = clock.call(i, mod._unmask, state, request)
        up[i] += sum(len(s) + 8 for s in reply[Key.SHARE_LIST])

        def collect(reply: dict = reply) -> None:
            for owner, share in zip(reply[Key.NODE_ID_LIST], reply[Key.SHARE_LIST]):
                collected[owner].append(share)

        meter.call(collect)

    def unmask() -> np.ndarray:
        vector = masked
        for nid, shares in collected.items():
            secret = combine_shares(shares)
            if nid in active:
                vector = parameters_subtraction(vector, pseudo_rand_gen(secret, mod_range, get_parameters_shape(vector)))
            else:
                for peer in sorted(neighbours[nid] - {nid}):
                    shared = generate_shared_key(bytes_to_private_key(secret), bytes_to_public_key(public[peer][0]))
                    mask = pseudo_rand_gen(shared, mod_range, get_parameters_shape(vector))
                    vector = parameters_addition(vector, mask) if nid > peer else parameters_subtraction(vector, mask)
        recon = parameters_mod(vector, mod_range)
        q_total, recon = factor_extract(recon)
        out = dequantize(recon, clip, _FLOWER_TARGET_RANGE)
        offset = -(len(active) - 1) * clip
        # the workflow divides by the summed weight ratio; weights are 1 here, so that is the mean:
        # multiply back by the survivor count to compare sums.
        scale = _FLOWER_TARGET_RANGE / q_total
        return (out[0].astype(np.float64) + offset) * scale * len(active)

    total = meter.call(unmask)
    survivors = [nid - 1 for nid in active]
    exact = _float_sum(inputs, survivors)
    error = float(np.max(np.abs(total - exact)))
    # stochastic rounding to a grid of step 2 clip / (target - 1): one step per summand
    bound = len(survivors) * 2 * clip / (_FLOWER_TARGET_RANGE - 1) * 1.000001 + len(survivors) * clip * 2.0**-40
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
            extra={"degree": float(k), "threshold": float(threshold)},
        ),
        clock,
        meter,
        survivors,
    )
