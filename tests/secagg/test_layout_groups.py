"""Masked inputs labelled by layout (``ServerProtocol.receive(..., group=...)``): the most common
label is the round's, the others' senders are set aside as dropped after masking (attacker
review 5's layout race: the first reply's layout no longer decides).

Invariant (hypothesis, SecAgg and SecAgg+, with and without verify_survivors): for any labels
with one most common label, the result is the exact ring sum of that label's senders, the
set-aside clients are :attr:`ServerProtocol.excluded`, and the server never holds a self-mask
share of a set-aside client (its input stays hidden under its self mask); a tie ends the round.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import RoundAbortedError
from fedcrypt.secagg import SecAggConfig, Stage

from .harness import Round

CONFIGS = {
    "secagg": SecAggConfig(num_clients=6, threshold=4),
    "secagg-verify": SecAggConfig(num_clients=6, threshold=4, verify_survivors=True),
    "secagg+": SecAggConfig(num_clients=6, threshold=4, neighbours=5, graph_seed=b"g"),
}


def _labelled_run(run: Round, labels: list[bytes]) -> None:
    """Run the round, each masked input sent with its client's label."""
    run.step()
    run.step()
    assert run.server.stage is Stage.MASKED_INPUT and run.requests is not None
    for i, request in run.requests.items():
        reply = run.clients[i].handle(request.to_bytes())  # type: ignore[attr-defined]
        run.server.receive(reply.to_bytes(), group=labels[i])
    run.requests = run.server.end_stage()
    while run.server.stage not in (Stage.DONE, Stage.ABORTED):
        run.step()


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(sorted(CONFIGS)), labels=st.lists(st.sampled_from([b"A", b"B", b"C"]), min_size=6, max_size=6))
def test_the_most_common_label_is_summed_and_the_others_stay_hidden(name: str, labels: list[bytes]) -> None:
    config = CONFIGS[name]
    counts = sorted((labels.count(x) for x in set(labels)), reverse=True)
    chosen = max(set(labels), key=labels.count)
    run = Round(config, seed=len(labels))
    if len(counts) > 1 and counts[0] == counts[1]:
        with pytest.raises(RoundAbortedError, match="none by more clients"):
            _labelled_run(run, labels)
        assert run.server.stage is Stage.ABORTED
        return
    if counts[0] < config.threshold:
        with pytest.raises(RoundAbortedError):
            _labelled_run(run, labels)
        return
    _labelled_run(run, labels)
    group = tuple(i for i in range(6) if labels[i] == chosen)
    result = run.server.result
    assert result.survivors == group
    assert run.server.excluded == frozenset(i for i in range(6) if labels[i] != chosen)
    assert np.array_equal(result.ring_sum, run.expected_sum(group))
    for i in run.server.excluded:
        assert "self_mask" not in run.server.share_kinds_revealed().get(i, set())


def test_one_client_answering_first_with_another_label_is_set_aside() -> None:
    run = Round(CONFIGS["secagg"])
    _labelled_run(run, [b"odd", b"", b"", b"", b"", b""])
    assert run.server.excluded == {0} and run.server.result.survivors == (1, 2, 3, 4, 5)
    assert np.array_equal(run.server.result.ring_sum, run.expected_sum((1, 2, 3, 4, 5)))
