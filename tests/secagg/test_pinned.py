"""Pinned outputs of the SecAgg layer: message encodings, the neighbour graph, the round context.

All parties of a round must compute these identically; a refactor that changes any of them
breaks interoperability between versions and must be deliberate (bump the wire version).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedcrypt.secagg import AdvertiseKeys, MaskedInput, SecAggConfig, UnmaskRequest, decode_message, harary_graph
from fedcrypt.secagg.keyschedule import round_context

PINNED = json.loads((Path(__file__).parent.parent / "vectors" / "secagg_pinned.json").read_text())


def test_pinned_message_encodings() -> None:
    encodings = PINNED["encodings"]
    advert = AdvertiseKeys(7, 3, bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96)))
    masked = MaskedInput(7, 3, np.arange(4, dtype=np.uint32), bytes(range(96, 128)), (1, 4), b"a" * 64)
    request = UnmaskRequest(7, 2, (0, 2, 5), (1,), ((0, b"s" * 64),), ((0, (3,), b"t" * 64), (5, (), b"u" * 64)))
    for message in (advert, masked, request):
        assert message.to_bytes().hex() == encodings[type(message).__name__]
        assert decode_message(bytes.fromhex(encodings[type(message).__name__])) == message


def test_pinned_harary_graph() -> None:
    case = PINNED["harary_graph"]
    graph = harary_graph(case["num_clients"], case["degree"], bytes.fromhex(case["graph_seed"]), case["round_id"])
    assert [sorted(neighbours) for neighbours in graph] == case["neighbours"]


def test_pinned_round_context() -> None:
    case = PINNED["round_context"]
    config = SecAggConfig(num_clients=case["num_clients"], threshold=case["threshold"], clip=case["clip"])
    context = round_context(config, case["round_id"], bytes.fromhex(case["associated_data"]))
    assert context.hex() == case["context"]
    assert round_context(config, case["round_id"], b"other model").hex() != case["context"]
