"""Attacker review 6: 46d18cf's receipt check is not wired into the Flower workflow.

46d18cf fixed "one site with a bad signature ends a roster round" in the core (``ServerProtocol(
verify_keys=...)``) and wired it into FLARE; its message says the Flower ``SecAggWorkflow`` does
not pass the keys yet ("there the old behaviour stays"). Searched here through real Flower
messages (``InProcessGrid``, roster on every node and in the workflow): one node whose ClientApp
flips one bit of its signed advert's signature. Every honest node refuses the key directory
(``InvalidSignature``) and the round aborts: one bad node still ends every Flower roster round.
Severity: medium (availability, one node, malicious-server mode over Flower). Fix: the workflow
builds ``ServerProtocol(..., verify_keys=roster.verify_keys(member names in client-id order))``
as the FLARE server does.

FIXED: the workflow passes ``verify_keys=roster.verify_keys(member names)``; the bad signer is
refused at the server on receipt and the round completes with the five others (regression test).
"""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

from fedcrypt.integrations.flower import RECORD, SecAggWorkflow, secagg_mod  # noqa: E402
from fedcrypt.secagg import AdvertiseKeys, decode_message  # noqa: E402

from flower.test_flower_adapter import run_rounds  # noqa: E402
from flower.test_flower_roster import federation  # noqa: E402

BAD = 2


def _bad_signer(grid_ref: dict):
    def mod(message, context, call_next):
        reply = call_next(message, context)
        if context.node_id != grid_ref["grid"].node_ids[BAD] or RECORD not in reply.content.keys():
            return reply
        payload = reply.content[RECORD]["payload"]
        if not payload:
            return reply
        advert = decode_message(payload)
        if isinstance(advert, AdvertiseKeys):
            flipped = advert.signature[:-1] + bytes([advert.signature[-1] ^ 1])
            forged = AdvertiseKeys(advert.round_id, advert.sender, advert.cipher_public_key, advert.mask_public_key,
                                   advert.context, flipped)
            reply.content[RECORD]["payload"] = forged.to_bytes()
        return reply

    return mod


def _play(tmp_path, bad: bool):
    ref: dict = {}
    mods = [_bad_signer(ref), secagg_mod] if bad else [secagg_mod]
    grid, roster, _ = federation(tmp_path, 6, mods=mods)
    ref["grid"] = grid
    workflow = SecAggWorkflow(clip=8.0, roster=roster)
    run_rounds(grid, workflow, rounds=1)
    (report,) = workflow.reports
    return grid, report


def test_one_bad_signer_does_not_end_a_flower_roster_round(tmp_path) -> None:
    grid, report = _play(tmp_path, bad=True)
    assert report.aborted is None, (report.aborted, grid.errors[:3])
    bad = grid.node_ids[BAD]
    assert set(report.survivors) == {node for node in grid.node_ids if node != bad}
    assert bad in report.refused and "InvalidSignature" in report.refused[bad]  # refused at the server, on receipt


def test_control_the_flower_roster_round_without_the_bad_signer(tmp_path) -> None:
    grid, report = _play(tmp_path, bad=False)
    assert report.aborted is None and len(report.survivors) == 6 and not grid.errors
