"""Attacker review 5: the per-site max-weight isolation (``test_flare_secagg_setup_search.py``) in the
**Flower** SecAgg adapter, with a roster (malicious-server mode), over real Flower messages.

``fedcrypt/integrations/flower/secagg.py`` binds ``nodes + dp + model digest + members`` into
``round_binding`` (both the workflow and ``secagg_mod``), not ``max-weight``, which each node
uses to scale its input (``w / max_weight [x, metrics, 1]``). A server that sends the victim
``max-weight = 1000`` and every other node ``1e30`` gets a completed roster round whose
"FedAvg" is the victim's update alone (the others' inputs encode to zero). Same fix as FLARE's:
bind max-weight (every setup field but ``client-id``) into the round; better, one canonical
setup encoding owned by ``fedcrypt.secagg.setup``.

Positive control: the honest roster round (no tampering) is the FedAvg of all nodes.
FIXED: ``fedcrypt.secagg.setup.round_binding`` takes every setup field (length-prefixed) and
both adapters pass the max weight (``weight_bytes``); the test below is its regression test.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from fedcrypt.integrations.flower import RECORD, SecAggWorkflow  # noqa: E402

from flower.test_flower_adapter import initial, plaintext_fedavg, run_rounds, update_of  # noqa: E402
from flower.test_flower_roster import federation  # noqa: E402

N = 4


def _round(tmp_path, max_weight_for_others: float | None):
    victim: list[int] = []

    def tamper(node, message):
        record = message.content[RECORD] if RECORD in message.content.keys() else None
        if max_weight_for_others is not None and record is not None and "max-weight" in record.keys():
            if not victim:
                victim.append(node)  # the first node the setup goes to
            if node != victim[0]:
                record["max-weight"] = float(max_weight_for_others)
        return message

    grid, roster, _ = federation(tmp_path, N, tamper=tamper)
    workflow = SecAggWorkflow(clip=8.0, roster=roster)
    result = run_rounds(grid, workflow, rounds=1)
    model = {name: value.numpy() for name, value in result.arrays.items()}
    return grid, workflow, model, (grid.partition_of(victim[0]) if victim else None)


def test_positive_control_the_honest_roster_round_is_the_fedavg(tmp_path) -> None:
    _, _, model, _ = _round(tmp_path, None)
    expected, _ = plaintext_fedavg([list(range(N))])
    for name, value in model.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-3)


def test_per_node_max_weight_does_not_isolate_one_update(tmp_path) -> None:
    """Fixed: every party binds the max weight (``round_binding(..., weight_bytes(M))``), so the
    tampered nodes' round context differs from the victim's and the round fails instead."""
    _, workflow, model, victim = _round(tmp_path, 1e30)
    alone = update_of(victim, 1, {k: v.numpy() for k, v in initial().items()})
    assert not all(k in model and np.allclose(model[k], alone[k], rtol=0, atol=1e-3) for k in alone)
    (report,) = workflow.reports  # the round failed: no aggregate left the workflow
    assert report.aborted is not None and not report.survivors
