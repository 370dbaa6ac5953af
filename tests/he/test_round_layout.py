"""The round's layout is the one most uploads name (attacker review 5's layout race).

Before, the first upload's layout became the round's: one node answering first with another
layout got every honest upload refused and the round aborted. Now every layout is summed
apart and the most common one is the round's; the others' uploaders are refused; a tie ends
the round. Checked with and without a roster, the odd node answering first.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedcrypt.errors import SpecMismatchError
from fedcrypt.he.round import Stage, fedavg_error_bound, layout_digest

from ._round_harness import MAX_WEIGHT, PARAMS, Federation


def _round(fed: Federation, round_id: int, odd: dict[int, bytes]) -> object:
    """Drive a round with the nodes in ``odd`` uploading under another layout digest, odd nodes first."""
    server = fed.server(round_id)
    requests = server.begin()
    while requests:
        stage = server.stage
        for node in sorted(requests, key=lambda n: (n not in odd, n)):
            if stage is Stage.ENCRYPT:
                fed.clients[node].set_input(fed.inputs[node], fed.weights[node], layout=odd.get(node, layout_digest(None, len(fed.inputs[node]))))
            server.receive(fed.clients[node].handle(requests[node]).to_bytes(), sender=node)
        requests = server.end_stage()
    return server


@pytest.mark.parametrize("roster", [False, True], ids=["no-roster", "roster"])
def test_one_node_answering_first_with_another_layout_is_refused_alone(roster: bool) -> None:
    fed = Federation(4, roster=roster, min_contributions=3, key_setup="file", seed=4)
    odd = min(fed.clients)
    server = _round(fed, 1, {odd: hashlib.sha256(b"another layout").digest()})
    honest = sorted(n for n in fed.clients if n != odd)
    assert server.stage is Stage.DONE and list(server.result.contributors) == honest
    assert "another layout than the most uploads'" in server.report.refused[odd]
    assert server.result.layout == layout_digest(None, len(fed.inputs[odd]))
    bound = fedavg_error_bound(PARAMS, [fed.weights[n] for n in honest], MAX_WEIGHT)
    assert np.max(np.abs(server.result.mean - fed.expected_mean(honest))) <= bound


def test_a_tie_between_layouts_ends_the_round() -> None:
    fed = Federation(4, roster=False, min_contributions=2, key_setup="file", seed=4)
    nodes = sorted(fed.clients)
    with pytest.raises(SpecMismatchError, match="none by more nodes"):
        _round(fed, 1, {nodes[0]: b"\x01" * 32, nodes[1]: b"\x01" * 32})
