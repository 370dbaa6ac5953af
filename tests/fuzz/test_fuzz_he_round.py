"""Fuzzing the single-key CKKS round's decoders (fedcrypt.he.round) from a real round's bytes:
every message decoder, a node fed mutated requests, the server fed mutated replies, and the
node's state bytes. Only typed errors (or a valid decode) may come out; a node that refuses
keeps its state."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from fedcrypt.errors import FedcryptError
from fedcrypt.testing import malformed

from ._fuzz import FUZZ_COUNTS, typed_only

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def corpus() -> dict[str, Any]:
    """One real round with a roster and an in-band dealer, every message recorded as bytes."""
    pytest.importorskip("tenseal")
    from fedcrypt.he import CkksParams
    from fedcrypt.he.round import CkksClient, CkksConfig, CkksServer, Stage
    from fedcrypt.identity import NodeIdentity, Roster

    identities = [NodeIdentity.generate() for _ in range(3)]
    roster = Roster({f"n{i}": ident.public_bytes for i, ident in enumerate(identities)})
    config = CkksConfig(CkksParams.preset("compact", num_clients=4, clip=4.0, max_weight=1.0), roster=roster)
    clients = {10 + i: CkksClient(config, 10 + i, identity=identities[i]) for i in range(3)}
    requests: dict[str, tuple[int, bytes]] = {}
    replies: dict[str, tuple[int, bytes]] = {}
    server = CkksServer(config, sorted(clients), round_id=1)
    pending = server.begin()
    rng = np.random.default_rng(2)  # test data, not secrets
    while pending:
        stage = server.stage
        for node, request in sorted(pending.items()):
            if stage is Stage.ENCRYPT:
                clients[node].set_input(rng.uniform(-1, 1, 12), 3.0)
            requests[type(request).__name__] = (node, request.to_bytes())
            reply = clients[node].handle(request)
            replies.setdefault(type(reply).__name__, (node, reply.to_bytes()))
            server.receive(reply, sender=node)
        pending = server.end_stage()
    return {
        "config": config, "identities": identities, "clients": clients, "requests": requests, "replies": replies,
        "context": server.result.context,
    }


def test_every_round_message_decoder(corpus) -> None:
    from fedcrypt.he.round import decode_message

    blobs = [raw for _, raw in corpus["requests"].values()] + [raw for _, raw in corpus["replies"].values()]
    assert len(blobs) == 12  # every message type
    for valid in blobs:
        name = f"he.round.{type(decode_message(valid)).__name__}"

        @settings(max_examples=40, deadline=None, database=None)
        @given(blob=malformed(valid, max_random=256))
        def fuzz(blob: bytes) -> None:
            result = typed_only(name, decode_message, blob)
            if not isinstance(result, FedcryptError):
                assert result.to_bytes() == blob  # canonical

        fuzz()


def test_nodes_fed_mutated_requests(corpus) -> None:
    from fedcrypt.he.round import CkksClient

    config, identities, clients = corpus["config"], corpus["identities"], corpus["clients"]
    for kind, (node, valid) in sorted(corpus["requests"].items()):
        if kind in ("DealRequest", "InstallRequest"):
            continue  # the nodes hold the key now: refused whatever the bytes (covered by the message decoders)
        state = clients[node].to_state_bytes()
        name = f"he.round.CkksClient.handle({kind})"

        @settings(max_examples=25, deadline=None, database=None)
        @given(blob=malformed(valid, max_random=256))
        def fuzz(blob: bytes) -> None:
            client = CkksClient.from_state_bytes(state, config=config, identity=identities[node - 10])
            result = typed_only(name, client.handle, blob)
            if isinstance(result, FedcryptError):
                assert client.to_state_bytes() == state

        fuzz()


def test_server_fed_mutated_replies_and_state_bytes(corpus) -> None:
    from fedcrypt.he.round import CkksClient, CkksServer

    config, identities, clients = corpus["config"], corpus["identities"], corpus["clients"]
    node, upload = corpus["replies"]["Upload"]

    def encrypt_stage() -> CkksServer:
        server = CkksServer(config, sorted(clients), round_id=1, context=corpus["context"])
        for peer, request in server.begin().items():
            server.receive(clients[peer].handle(request), sender=peer)
        server.end_stage()
        return server

    @settings(max_examples=40, deadline=None, database=None)
    @given(blob=malformed(upload, max_random=256))
    def fuzz_upload(blob: bytes) -> None:
        server = encrypt_stage()
        result = typed_only("he.round.CkksServer.receive(Upload)", lambda b: server.receive(b, sender=node), blob)
        assert server.received == (frozenset() if isinstance(result, FedcryptError) else {node})

    fuzz_upload()
    state = clients[10].to_state_bytes()

    @settings(max_examples=40, deadline=None, database=None)
    @given(blob=malformed(state, max_random=256))
    def fuzz_state(blob: bytes) -> None:
        result = typed_only(
            "he.round.CkksClient.from_state_bytes",
            lambda b: CkksClient.from_state_bytes(b, config=config, identity=identities[0]),
            blob,
        )
        if not isinstance(result, FedcryptError):
            assert result.to_state_bytes() == blob

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fuzz_state()
    assert FUZZ_COUNTS["he.round.CkksClient.from_state_bytes"] >= 40
