"""The model-inconsistency attack fails: clients bind the global model into the SecAgg round.

A malicious server sends client 3 a different global model than clients 0-2 (Pasquini et
al., CCS 2022). Every client puts ``round_binding(model_fingerprint(model), layout)`` into
the round's associated data, so the adverts carry different round contexts: the honest
server logic refuses client 3, and when a malicious server forwards all adverts anyway,
every client refuses the key directory before it shares a key or masks an input.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedcrypt.errors import ProtocolError, ProtocolViolationError
from fedcrypt.integrations.aggregators import SecAggAggregator
from fedcrypt.integrations.peft import LoraLayout, model_fingerprint, round_binding
from fedcrypt.secagg import ClientProtocol, KeyDirectory, SecAggConfig, ServerProtocol, Stage

from .conftest import tiny_llama, torch


def _bindings(tamper: bool) -> tuple[list[bytes], LoraLayout]:
    models = [tiny_llama(seed=0) for _ in range(4)]
    if tamper:  # the server hands client 3 a global model with one changed base weight
        with torch.no_grad():
            dict(models[3].named_parameters())["base_model.model.lm_head.weight"][0, 0] += 1e-3
    layout = LoraLayout.from_model(models[0])
    return [round_binding(model_fingerprint(m), layout, round_number=1) for m in models], layout


def test_same_global_model_completes_the_round() -> None:
    bindings, layout = _bindings(tamper=False)
    assert len(set(bindings)) == 1
    aggregator = SecAggAggregator(4, associated_data=bindings[0])
    vectors = [np.full(layout.spec.size, 0.01 * (i + 1), np.float32) for i in range(4)]
    result = aggregator.aggregate(vectors)
    assert result.survivors == (0, 1, 2, 3)
    assert np.abs(result.vector - 0.025).max() <= result.error_bound


def test_different_global_model_makes_the_round_fail() -> None:
    bindings, layout = _bindings(tamper=True)
    assert bindings[3] != bindings[0] and len(set(bindings[:3])) == 1
    config = SecAggConfig(num_clients=4, threshold=3)
    clients = [ClientProtocol(config, i, round_id=1, associated_data=bindings[i]) for i in range(4)]
    adverts = [c.advertise() for c in clients]

    # the honest server logic (bound to the majority's model) refuses client 3's advert
    server = ServerProtocol(config, round_id=1, associated_data=bindings[0], dimension=layout.spec.size)
    for advert in adverts[:3]:
        server.receive(advert.to_bytes())
    with pytest.raises(ProtocolError):
        server.receive(adverts[3].to_bytes())

    # a malicious server forwards every advert anyway: each client refuses the directory
    directory = tuple(sorted(adverts, key=lambda a: a.sender))
    for client in clients:
        with pytest.raises(ProtocolViolationError, match="different round context"):
            client.handle(KeyDirectory(1, client.client_id, directory).to_bytes())
        assert client.stage is Stage.SHARE_KEYS  # nothing was shared; the client can still abort cleanly
