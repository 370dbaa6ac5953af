"""The threshold round's layout is the one most uploads name (attacker review 5's layout race).

Before, the first upload's layout became the round's: one node answering first with another
layout got every honest upload refused and the round aborted. Now every layout is summed
(no roster) or kept (roster) apart, the most common one is the round's, the others'
uploaders are refused and the result names the layout; a tie ends the round. The odd node
answers first. Real OpenFHE (CPython 3.10; skipped elsewhere, see conftest.py).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from fedcrypt.errors import SpecMismatchError
from fedcrypt.he.threshold.round import Stage, ThresholdRoundServer, Upload, fedavg_error_bound

pytestmark = pytest.mark.usefixtures("openfhe")
sys.path.insert(0, str(Path(__file__).parent))

from _round_harness import M, Federation  # noqa: E402

ODD = hashlib.sha256(b"another layout").digest()


def _round(
    fed: Federation, round_id: int, odd: dict[int, bytes], skip: frozenset[int] = frozenset()
) -> tuple[ThresholdRoundServer, dict[int, Upload], dict[int, str]]:
    """A round with the nodes in ``odd`` uploading under another layout digest, odd nodes first;
    the server, the uploads and the report's refusals at the end of ENCRYPT."""
    server = fed.server(round_id)
    uploads: dict[int, Upload] = {}
    refused: dict[int, str] = {}
    requests = server.begin()
    while requests:
        stage = server.stage
        for node in sorted(requests, key=lambda n: (n not in odd, n)):
            if stage is Stage.ENCRYPT:
                if node in skip:
                    continue
                layout = odd.get(node)
                fed.clients[node].set_input(fed.inputs[node], fed.weights[node], **({"layout": layout} if layout else {}))
            reply = fed.clients[node].handle(requests[node].to_bytes())
            if stage is Stage.ENCRYPT:
                uploads[node] = reply
            server.receive(reply.to_bytes(), sender=node)
        requests = server.end_stage()
        if stage is Stage.ENCRYPT:
            refused = dict(server.report.refused)
    fed.session = server.result.session
    return server, uploads, refused


@pytest.mark.parametrize("roster", [False, True], ids=["no-roster", "roster"])
def test_one_node_answering_first_with_another_layout_is_refused_alone(roster: bool) -> None:
    fed = Federation(roster=roster, recovery=0, min_contributions=2, seed=5)
    odd = min(fed.clients)
    server, uploads, refused = _round(fed, 1, {odd: ODD})
    honest = sorted(n for n in fed.clients if n != odd)
    assert server.stage is Stage.DONE and list(server.result.contributors) == honest
    assert "another layout than the most uploads'" in refused[odd]
    # the odd node is a key holder: its partial decryption is accepted later, and its
    # upload stays refused in the round's report (it was cleared there before)
    assert odd in server.report.decryptors
    assert server.report.refused == refused
    assert server.result.layout == uploads[honest[0]].layout == uploads[honest[1]].layout != ODD
    bound = fedavg_error_bound(fed.config.params, [fed.weights[n] for n in honest], M)
    assert np.max(np.abs(server.result.mean - fed.expected_mean(honest))) <= bound
    # the next round of the session, everyone honest: every upload is in again
    server, _, _ = _round(fed, 2, {})
    assert list(server.result.contributors) == sorted(fed.clients)


def test_a_tie_between_layouts_ends_the_round() -> None:
    fed = Federation(roster=False, recovery=0, min_contributions=2, seed=5)
    nodes = sorted(fed.clients)
    with pytest.raises(SpecMismatchError, match="none by more nodes"):
        _round(fed, 1, {nodes[0]: ODD}, skip=frozenset({nodes[2]}))
