"""Totality: every (stage, message type) pair either advances or raises a typed error, unchanged."""

from __future__ import annotations

import pytest

from fedcrypt.errors import FedcryptError, UnexpectedMessageError
from fedcrypt.secagg import SecAggConfig, Stage, decode_message
from fedcrypt.secagg.messages import MESSAGE_CLASSES

from .harness import Round

CONFIG = SecAggConfig(num_clients=4, threshold=3, verify_survivors=True)
CLIENT_STAGES = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK, Stage.DONE]
SERVER_STAGES = CLIENT_STAGES


def _samples() -> dict[type, object]:
    """One instance of every message type, from a complete round of their own."""
    run = Round(CONFIG)
    found: dict[type, object] = {}
    while run.server.stage is not Stage.DONE:
        requests = run.step()
        for message in requests.values():
            found.setdefault(type(message), message)
    for blobs in run.sent.values():
        for blob in blobs:
            message = decode_message(blob)
            found.setdefault(type(message), message)
    assert set(found) == set(MESSAGE_CLASSES)
    return found


SAMPLES = _samples()
ACCEPTED_BY_CLIENT = {
    Stage.SHARE_KEYS: "KeyDirectory",
    Stage.MASKED_INPUT: "ShareBundle",
    Stage.CONSISTENCY_CHECK: "SurvivorList",
    Stage.UNMASK: "UnmaskRequest",
}
ACCEPTED_BY_SERVER = {
    Stage.ADVERTISE_KEYS: "AdvertiseKeys",
    Stage.SHARE_KEYS: "EncryptedShares",
    Stage.MASKED_INPUT: "MaskedInput",
    Stage.CONSISTENCY_CHECK: "ConsistencySignature",
    Stage.UNMASK: "UnmaskShares",
}


def _advance(stage: Stage) -> Round:
    """A fresh round whose clients and server are at ``stage`` (requests for it pending)."""
    run = Round(CONFIG)
    order = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK, Stage.DONE]
    for _ in range(order.index(stage)):
        run.step()
    return run


def _client_state(client) -> tuple:
    return (client.stage, sorted(client._directory), sorted(client._shares), client._u2, client._u3, client._input is None)


def _server_state(server) -> tuple:
    acc = None if server._accumulator is None else server._accumulator.tobytes()
    acc = (acc, sorted((label, total.tobytes()) for label, total in server._groups.items()))
    return (server.stage, server.received, acc, sorted(server._seed_shares), sorted(server._key_shares))


@pytest.mark.parametrize("stage", CLIENT_STAGES, ids=lambda s: s.name)
@pytest.mark.parametrize("kind", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_client_totality(stage: Stage, kind: type) -> None:
    run = _advance(stage)
    client = run.clients[0]
    if stage is Stage.DONE:
        # clients answered the unmask request inside _advance
        assert client.stage is Stage.DONE
    elif stage is Stage.ADVERTISE_KEYS:
        assert client.stage is Stage.ADVERTISE_KEYS
    genuine = run.requests.get(0) if run.requests else None
    if genuine is not None and type(genuine) is kind and ACCEPTED_BY_CLIENT.get(stage) == kind.__name__:
        # a well-formed sample from another round either advances or is refused unchanged
        before = _client_state(client)
        try:
            reply = client.handle(SAMPLES[kind].to_bytes())
        except FedcryptError:
            assert _client_state(client) == before
            reply = client.handle(genuine.to_bytes())
        assert reply.STAGE is stage and client.stage is not stage
        return
    before = _client_state(client)
    with pytest.raises(UnexpectedMessageError):
        client.handle(SAMPLES[kind].to_bytes())
    assert _client_state(client) == before


@pytest.mark.parametrize("stage", SERVER_STAGES, ids=lambda s: s.name)
@pytest.mark.parametrize("kind", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_server_totality(stage: Stage, kind: type) -> None:
    run = _advance(stage)
    server = run.server
    assert server.stage is stage
    if ACCEPTED_BY_SERVER.get(stage) == kind.__name__:
        if stage is Stage.ADVERTISE_KEYS:
            genuine = run.clients[0].advertise()
        else:
            genuine = run.clients[0].handle(run.requests[0])
        before = _server_state(server)
        server.receive(genuine.to_bytes())
        assert server.received == {0} and _server_state(server) != before
        return
    before = _server_state(server)
    with pytest.raises(UnexpectedMessageError):
        server.receive(SAMPLES[kind].to_bytes())
    assert _server_state(server) == before


@pytest.mark.parametrize("kind", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_aborted_server_refuses_everything(kind: type) -> None:
    from fedcrypt.errors import LocalProtocolError, RoundAbortedError

    run = Round(CONFIG)
    run.server.receive(run.clients[0].advertise())
    with pytest.raises(RoundAbortedError):
        run.server.end_stage()
    assert run.server.stage is Stage.ABORTED
    before = _server_state(run.server)
    with pytest.raises(UnexpectedMessageError):
        run.server.receive(SAMPLES[kind].to_bytes())
    with pytest.raises(LocalProtocolError):
        run.server.end_stage()
    assert _server_state(run.server) == before
