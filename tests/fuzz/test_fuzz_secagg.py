"""Fuzzing every SecAgg decoder and both state machines with malformed bytes.

Inputs: random bytes, random bytes behind a valid header prefix, and mutations of real
messages (truncated, bit-flipped, extended, spliced, length fields inflated to 2^32-1 or
2^64-1). Every input must decode, or be refused with a FedcryptError; a client or server
that refuses keeps its state and still accepts the valid message afterwards.
"""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import FedcryptError
from fedcrypt.secagg import SecAggConfig, ServerProtocol, Stage, decode_message
from fedcrypt.secagg.messages import MESSAGE_CLASSES, MaskedInput
from fedcrypt.testing import InProcessClients, malformed

from ._fuzz import FUZZ_COUNTS, secagg_corpus, typed_only

pytestmark = pytest.mark.timeout(120)

CORPUS = {False: secagg_corpus(False), True: secagg_corpus(True)}
KINDS = sorted({(name, verify) for verify, corpus in CORPUS.items() for name in corpus})


@pytest.mark.parametrize("name,verify", KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decoders_raise_only_typed_errors(name: str, verify: bool, data) -> None:
    valid = CORPUS[verify][name]
    blob = data.draw(malformed(valid), label="input")
    result = typed_only(f"secagg.{name}", decode_message, blob)
    if not isinstance(result, FedcryptError):
        assert result.to_bytes() == blob, "a decoded message must have exactly one encoding"
    cls = next(c for c in MESSAGE_CLASSES if c.__name__ == name)
    typed_only(f"secagg.{name}.from_bytes", cls.from_bytes, blob)


def _round_at(stage: Stage, verify: bool) -> tuple[InProcessClients, ServerProtocol, dict]:
    config = SecAggConfig(4, 3, verify_survivors=verify)
    endpoints = InProcessClients(config, round_id=5, length=8)
    server = ServerProtocol(config, round_id=5, associated_data=b"", dimension=8)
    requests: dict = {}
    current = Stage.ADVERTISE_KEYS
    while current is not stage:
        for client in range(4):
            reply = endpoints.advertise(client) if current is Stage.ADVERTISE_KEYS else endpoints.deliver(client, requests[client].to_bytes())
            server.receive(reply)
        requests = server.end_stage()
        current = server.stage
    return endpoints, server, requests


CLIENT_STAGES = [(s, v) for v in (False, True) for s in (Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK)] + [
    (Stage.CONSISTENCY_CHECK, True)
]


@pytest.mark.parametrize("stage,verify", CLIENT_STAGES, ids=lambda v: getattr(v, "name", str(v)))
def test_client_refuses_corrupted_requests_and_keeps_its_state(stage: Stage, verify: bool) -> None:
    endpoints, _, requests = _round_at(stage, verify)
    client = endpoints.clients[0]
    valid = requests[0].to_bytes()

    @settings(max_examples=60, deadline=None, database=None)
    @given(blob=malformed(valid))
    def fuzz(blob: bytes) -> None:
        if blob == valid or client.stage is not stage:
            return
        outcome = typed_only(f"client.{stage.name}", client.handle, blob)
        if isinstance(outcome, FedcryptError):
            assert client.stage is stage, "a refused request moved the client"

    fuzz()
    if client.stage is stage:  # nothing a refused input did can stop the valid request
        client.handle(valid)


@pytest.mark.parametrize("stage,verify", [(s, False) for s in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK)] + [(Stage.CONSISTENCY_CHECK, True)], ids=lambda v: getattr(v, "name", str(v)))
def test_server_refuses_corrupted_replies_and_keeps_its_state(stage: Stage, verify: bool) -> None:
    endpoints, server, requests = _round_at(stage, verify)
    valid = endpoints.advertise(0) if stage is Stage.ADVERTISE_KEYS else endpoints.deliver(0, requests[0].to_bytes())

    @settings(max_examples=60, deadline=None, database=None)
    @given(blob=malformed(valid))
    def fuzz(blob: bytes) -> None:
        if blob == valid or 0 in server.received:
            return
        before = server.received
        outcome = typed_only(f"server.{stage.name}", server.receive, blob)
        if isinstance(outcome, FedcryptError):
            assert server.received == before

    fuzz()
    if 0 not in server.received:
        server.receive(valid)
    assert 0 in server.received


@pytest.mark.parametrize("width", [4, 8])
def test_inflated_length_fields_allocate_nothing_large(width: int) -> None:
    """Every 4- or 8-byte window of every message set to all-ones: < 1 MiB peak, typed error."""
    for verify, corpus in CORPUS.items():
        for name, valid in corpus.items():
            for at in range(0, len(valid) - width + 1, 3 if len(valid) > 400 else 1):
                blob = valid[:at] + b"\xff" * width + valid[at + width :]
                tracemalloc.start()
                try:
                    typed_only(f"secagg.{name}.inflated", decode_message, blob)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                assert peak < (1 << 20) + 4 * len(blob), f"{name}: {peak} bytes peak for a {len(blob)}-byte input"


def test_masked_input_claiming_2_to_the_40_elements_is_refused_before_allocation() -> None:
    valid = bytearray(CORPUS[False]["MaskedInput"])
    # header (18) | commitment (32) | bits (1) | length (8)
    valid[51:59] = (1 << 40).to_bytes(8, "big")
    tracemalloc.start()
    try:
        with pytest.raises(FedcryptError):
            MaskedInput.from_bytes(bytes(valid))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    FUZZ_COUNTS["secagg.MaskedInput.huge"] += 1
    assert peak < 1 << 20


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name,verify", KINDS)
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decoders_raise_only_typed_errors_long(name: str, verify: bool, data) -> None:
    blob = data.draw(malformed(CORPUS[verify][name]), label="input")
    typed_only(f"secagg.{name}", decode_message, blob)
