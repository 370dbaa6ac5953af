"""The streamed DECRYPT of the CKKS round with a roster: the server keeps the signed uploads on
disk and sends the confirmed set to each decryptor in parts (``SumPart`` ... ``DecryptRequest``).

Invariants: a streamed decryption is bit-identical to the one-request decryption of the same
set; a decryptor rebuilt from its state bytes between every part answers as one that was not;
a refused part leaves the decryptor exactly as it was; a decryptor that drops mid-stream is
replaced by one that starts again; the server holds no upload in memory between ENCRYPT and
DECRYPT and drops its spill file when the round ends.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import (
    FedcryptError,
    HonestButCuriousWarning,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)
from fedcrypt.he.round import (
    CkksClient,
    CkksServer,
    Decryption,
    DecryptRequest,
    Stage,
    SumAck,
    SumPart,
    fedavg_error_bound,
)

from ._round_harness import MAX_WEIGHT, PARAMS, Federation


def _server(fed: Federation, round_id: int, part_bytes: int) -> CkksServer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        return CkksServer(fed.config, sorted(fed.clients), round_id=round_id, context=fed.context, part_bytes=part_bytes)


def _drive(fed: Federation, server: CkksServer, *, via_state: bool, drop: dict[int, int] | None = None) -> dict[str, Any]:
    """Run the round; ``drop``: node -> the DECRYPT request (0-based, counted per node) it drops at.
    Returns the DECRYPT requests per node and each decryptor's state before its first part."""
    seen: dict[int, list[Any]] = {}
    before: dict[int, bytes] = {}
    requests = server.begin()
    while requests:
        stage = server.stage
        for node in sorted(requests):
            message = requests[node]
            if stage is Stage.DECRYPT:
                seen.setdefault(node, []).append(message)
                before.setdefault(node, fed.clients[node].to_state_bytes())
                if drop is not None and drop.get(node) == len(seen[node]) - 1:
                    continue
            if stage is Stage.ENCRYPT:
                fed.clients[node].set_input(fed.inputs[node], fed.weights[node])
            client = fed.clients[node]
            if via_state:
                client = CkksClient.from_state_bytes(client.to_state_bytes(), config=fed.config, identity=fed.identity(node))
            reply = client.handle(message.to_bytes())
            fed.clients[node] = client
            server.receive(reply.to_bytes(), sender=node)
        requests = server.end_stage()
    fed.context = server.result.context
    return {"requests": seen, "before": before}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(n=st.integers(3, 5), per_part=st.integers(1, 3), via_state=st.booleans(), seed=st.integers(0, 2**16))
def test_streamed_decryption_equals_the_one_request_decryption(n: int, per_part: int, via_state: bool, seed: int) -> None:
    fed = Federation(n, roster=True, min_contributions=3, decryptors=2, key_setup="file", seed=seed)
    fed.run(1)  # the first round pins the context
    upload_bytes = 65_900  # one upload of D values is about 65.8 kB: ``per_part`` uploads per part
    server = _server(fed, 2, upload_bytes * per_part)
    log = _drive(fed, server, via_state=via_state)
    result = server.result
    parts = (n + per_part - 1) // per_part
    for requests in log["requests"].values():
        assert len(requests) == parts
        assert all(isinstance(r, SumPart) for r in requests[:-1]) and isinstance(requests[-1], DecryptRequest)
        assert requests[-1].part == (parts - 1 if parts > 1 else 0)
        assert sum(len(r.uploads) for r in requests) == n
    # the same set in one request, to the decryptor as it stood before its first part
    node = result.decryptors[0]
    streamed = log["requests"][node]
    whole = DecryptRequest(2, node, b"", tuple(u for r in streamed for u in r.uploads))
    fresh = CkksClient.from_state_bytes(log["before"][node], config=fed.config, identity=fed.identity(node))
    reply = fresh.handle(whole)
    assert isinstance(reply, Decryption)
    np.testing.assert_array_equal(reply.values, result.weighted_sum)
    bound = fedavg_error_bound(PARAMS, list(fed.weights.values()), MAX_WEIGHT)
    assert np.max(np.abs(result.mean - fed.expected_mean(sorted(fed.clients)))) <= bound


def test_a_decryptor_that_drops_mid_stream_is_replaced() -> None:
    fed = Federation(4, roster=True, min_contributions=3, decryptors=1, key_setup="file", seed=3)
    fed.run(1)
    server = _server(fed, 2, 1)  # one upload per part: four parts
    first = min(fed.clients)
    log = _drive(fed, server, via_state=True, drop={first: 2})
    assert server.report.dropped.get(first) == "DECRYPT"
    assert len(log["requests"][first]) == 3
    replacement = server.result.decryptors[0]
    assert replacement != first and len(log["requests"][replacement]) == 4
    assert isinstance(log["requests"][replacement][0], SumPart) and log["requests"][replacement][0].index == 0


@pytest.fixture
def streaming() -> dict[str, Any]:
    """A round stopped at DECRYPT with one upload per part; the decryptors' part-0 requests."""
    fed = Federation(4, roster=True, min_contributions=3, decryptors=2, key_setup="file", seed=9)
    fed.run(1)
    server = _server(fed, 2, 1)
    requests = server.begin()
    while server.stage is not Stage.DECRYPT:
        for node in sorted(requests):
            if server.stage is Stage.ENCRYPT:
                fed.clients[node].set_input(fed.inputs[node], fed.weights[node])
            server.receive(fed.clients[node].handle(requests[node]), sender=node)
        requests = server.end_stage()
    return {"fed": fed, "server": server, "requests": requests}


def _refused(client: CkksClient, message: Any, error: type[FedcryptError], match: str) -> None:
    before = client.to_state_bytes()
    with pytest.raises(error, match=match):
        client.handle(message)
    assert client.to_state_bytes() == before


def test_decryptor_refuses_parts_out_of_order_or_off_the_set(streaming: dict[str, Any]) -> None:
    fed, requests = streaming["fed"], streaming["requests"]
    node, part0 = min(requests.items())
    client = fed.clients[node]
    assert isinstance(part0, SumPart) and len(part0.uploads) == 1
    entries = part0.entries
    # a part before part 0, and part 0 with the whole set in it
    _refused(client, dataclasses.replace(part0, index=1, entries=()), UnexpectedMessageError, "not the next part")
    others = streaming["server"]  # the server reads the rest from its spill file
    all_uploads = tuple(u for i in range(len(entries)) for u in others._request(node, i).uploads)
    _refused(client, dataclasses.replace(part0, uploads=all_uploads), ProtocolViolationError, "carries the whole set")
    # an upload that is not the entry it stands for (the set's order swapped)
    _refused(client, dataclasses.replace(part0, uploads=all_uploads[1:2]), ProtocolViolationError, "not the set's entry")
    # the right part 0, then part 2 before part 1, and a last part that leaves an upload out
    assert isinstance(client.handle(part0), SumAck)
    _refused(client, SumPart(2, node, 2, (), all_uploads[2:3]), UnexpectedMessageError, "not the next part")
    _refused(client, DecryptRequest(2, node, b"", all_uploads[1:3], 1), ProtocolViolationError, "leaves 1 of the set")
    # part 0 again starts the stream again (one decryption per upload still holds)
    assert isinstance(client.handle(part0), SumAck)
    assert isinstance(client.handle(SumPart(2, node, 1, (), all_uploads[1:2])), SumAck)
    assert isinstance(client.handle(SumPart(2, node, 2, (), all_uploads[2:3])), SumAck)
    assert isinstance(client.handle(DecryptRequest(2, node, b"", all_uploads[3:4], 3)), Decryption)
    with pytest.raises(UnexpectedMessageError, match="already released"):
        client.handle(DecryptRequest(2, node, b"", all_uploads))


def test_server_refuses_acknowledgements_and_decryptions_off_its_stream(streaming: dict[str, Any]) -> None:
    fed, server, requests = streaming["fed"], streaming["server"], streaming["requests"]
    node = min(requests)
    with pytest.raises(ProtocolViolationError, match="not the part sent"):
        server.receive(SumAck(2, node, 1), sender=node)
    with pytest.raises(ProtocolViolationError, match="before the last part"):
        server.receive(Decryption.of(2, node, np.zeros(17)), sender=node)
    assert node not in server.received
    server.receive(fed.clients[node].handle(requests[node]), sender=node)  # the honest ack is still taken
    assert node in server.received


def test_server_keeps_no_upload_in_memory_and_drops_its_spill_file(streaming: dict[str, Any]) -> None:
    server = streaming["server"]
    assert all(not isinstance(v, bytes) or len(v) <= 64 for entry in server._uploads.values() for v in entry)
    assert len(server._spill) == 4
    with pytest.raises(RoundAbortedError):
        for _ in range(8):  # nobody answers: every decryptor drops, the candidates run out
            server.end_stage()
    assert server.stage is Stage.ABORTED and len(server._spill) == 0
