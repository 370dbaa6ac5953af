"""Threshold CKKS over real Flower messages: no sum of fewer than ``min_contributions`` uploads is decrypted.

Real ClientApps with a ``ThresholdMod``, real Flower Message/Context objects through Flower's
protobuf encoding (``tests/flower/_inprocess.InProcessGrid``, whose ``tamper`` is a server
that changes what one node receives), real OpenFHE (flwr 1.30, CPython 3.10; skipped
elsewhere as the other threshold tests are). Three key holders, ``min_contributions = 2``.

* A deviating server asks the holders to partially decrypt a sum of one upload: without a
  roster a well-formed aggregate (``ThresholdSum``) of one genuine upload, with a roster a
  list of one signed, confirmed upload. Every holder refuses with
  :class:`~fedcrypt.errors.ProtocolViolationError`; no partial decryption leaves a node and
  the node's state is unchanged; the round returns nothing to the strategy.
* An honest server whose round gets one upload (two nodes drop at ENCRYPT) refuses the round
  itself with :class:`~fedcrypt.errors.RoundAbortedError` and asks no one to decrypt.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("openfhe")

if os.environ.get("FEDCRYPT_REQUIRE_OPENFHE") != "1":  # CI's 3.10 run: never skip (see conftest.py)
    pytest.importorskip("openfhe", reason="threshold CKKS needs openfhe (CPython 3.10: scripts/setup_py310.sh)")
    pytest.importorskip("flwr", reason="the Flower adapter needs flwr (CPython 3.10: flwr==1.30.0, scripts/setup_py310.sh)")
sys.path.insert(0, str(Path(__file__).parent))

from _threshold_grid import example_app, small_config, stage_of, train_messages  # noqa: E402
from flower._inprocess import InProcessGrid  # noqa: E402  (tests/flower, on the test path)
from flwr.app import Message  # noqa: E402

from fedcrypt.he.threshold import ThresholdSum  # noqa: E402
from fedcrypt.he.threshold import _runtime as rt  # noqa: E402
from fedcrypt.he.threshold._blob import BlobKind, decode_blob  # noqa: E402
from fedcrypt.he.threshold.round import DecryptRequest, EncryptRequest, ThresholdClient, Upload, decode_message  # noqa: E402
from fedcrypt.identity import NodeIdentity, Roster  # noqa: E402
from fedcrypt.integrations.flower._state import kept, node_state_key  # noqa: E402
from fedcrypt.integrations.flower.threshold import RECORD, STATE, ThresholdGrid, ThresholdWorkflow  # noqa: E402

SIZE = 40


def _key_tag_of(params, fingerprint: bytes, blob: bytes) -> str:
    """The joint key's tag as the forging server reads it off a genuine upload."""
    _, pieces = decode_blob(blob, params, fingerprint, (BlobKind.UPLOAD,))
    return rt.deserialize(rt.runtime(params), "ciphertext", pieces[0], "upload").GetKeyTag()


def with_roster(grid: InProcessGrid, tmp_path: Path) -> tuple[Roster, dict[int, NodeIdentity]]:
    """Give every node an identity and the pinned roster (node config); the roster, the identities by node."""
    identities = {f"node-{i}": NodeIdentity.generate() for i in range(len(grid.node_ids))}
    roster = Roster({name: identity.public_bytes for name, identity in identities.items()})
    roster.save(tmp_path / "roster.txt")
    for i, node in enumerate(grid.node_ids):
        identities[f"node-{i}"].save(tmp_path / f"node-{i}.pem")
        grid.contexts[node].node_config.update({
            "fedcrypt-identity": str(tmp_path / f"node-{i}.pem"), "fedcrypt-roster": str(tmp_path / "roster.txt"),
            "fedcrypt-roster-digest": roster.digest().hex(),
        })
    return roster, {node: identities[f"node-{i}"] for i, node in enumerate(grid.node_ids)}


def decrypted_round(grid: InProcessGrid, node: int, config: Any, identity: NodeIdentity | None = None) -> int | None:
    """The last round the node released a partial decryption for (its sealed state, opened
    with its own key: the test's privilege, not the server's)."""
    state = kept(grid.contexts[node], node_state_key(grid.contexts[node]), STATE)
    return ThresholdClient.from_state_bytes(state, config=config, identity=identity)._decrypted_round


@pytest.mark.parametrize("roster", [False, True], ids=["aggregate-without-roster", "uploads-with-roster"])
def test_holders_refuse_to_decrypt_a_sum_of_fewer_than_min_contributions_uploads(tmp_path: Path, roster: bool) -> None:
    config = small_config()
    assert config.min_contributions == 2 and config.params.num_parties == 3
    uploads: dict[int, Upload] = {}
    fingerprints: set[bytes] = set()
    decrypt_replies: list[Message] = []
    forged: list[int] = []

    def fault(node: int, request: Message) -> Any:
        stage = stage_of(request)
        if stage == "ENCRYPT":  # the server sees each upload (it relays them)
            encrypt = decode_message(request.content[RECORD]["payload"])
            assert isinstance(encrypt, EncryptRequest)
            fingerprints.add(encrypt.fingerprint)

            def keep_upload(reply: Message) -> Message:
                uploads[node] = decode_message(reply.content[RECORD]["payload"])
                return reply

            return keep_upload
        if stage == "DECRYPT":
            return lambda reply: decrypt_replies.append(reply) or reply
        return None

    def tamper(node: int, message: Message) -> Message:
        if stage_of(message) != "DECRYPT":
            return message
        request = decode_message(message.content[RECORD]["payload"])
        assert isinstance(request, DecryptRequest)
        if roster:  # one of the signed, confirmed uploads the honest request lists
            assert len(request.uploads) == 3
            lie = dataclasses.replace(request, uploads=request.uploads[:1])
        else:  # a well-formed aggregate of one genuine upload
            (fingerprint,) = fingerprints
            blob = uploads[min(uploads)].blob
            total = ThresholdSum.under(workflow.params, fingerprint, _key_tag_of(workflow.params, fingerprint, blob))
            total.add(blob, workflow.max_weight)
            assert total.count == 1
            lie = DecryptRequest(request.round_id, request.node, total.finish())
        message.content[RECORD]["payload"] = lie.to_bytes()
        forged.append(node)
        return message

    grid = InProcessGrid(example_app(config), 3, {}, fault=fault, tamper=tamper)
    members, identities = with_roster(grid, tmp_path) if roster else (None, {})
    server_config = dataclasses.replace(config, roster=members)  # a node adds its own pinned roster the same way
    workflow = ThresholdWorkflow(server_config, stage_timeout=5.0)
    replies = list(ThresholdGrid(grid, workflow).send_and_receive(train_messages(grid, np.zeros(SIZE, np.float32), 1), timeout=5.0))
    (report,) = workflow.reports
    assert len(uploads) == 3 and sorted(forged) == sorted(grid.node_ids)  # all uploaded; every holder got the lie
    # every holder refused with the typed error, before any decryption
    assert len(grid.errors) == 3, grid.errors
    expected = "a set of 1 uploads, fewer than min_contributions=2" if roster else "aggregate of 1 uploads"
    assert all(e.startswith("ProtocolViolationError") and expected in e for e in grid.errors), grid.errors
    # no partial decryption left a node: each DECRYPT reply is Flower's error reply, with no content
    assert len(decrypt_replies) == 3 and all(r.has_error() and not r.has_content() for r in decrypt_replies)
    for node in grid.node_ids:  # the refusal changed nothing: the node has released no decryption
        assert decrypted_round(grid, node, server_config, identities.get(node)) is None
    # the strategy gets nothing and the report says why
    assert replies == [] and report.aborted is not None and report.aborted.startswith("RoundAbortedError")
    assert report.dropped == {node: "DECRYPT" for node in grid.node_ids}
    assert all("ProtocolViolationError" in report.refused[node] for node in grid.node_ids)


def test_an_honest_server_with_one_upload_refuses_the_round_and_asks_no_decryption() -> None:
    stages: list[tuple[int, str | None]] = []

    def fault(node: int, request: Message) -> Any:
        stages.append((node, stage_of(request)))
        # partitions 1 and 2 drop at ENCRYPT: only partition 0 uploads
        return "drop" if stage_of(request) == "ENCRYPT" and node != grid.node_ids[0] else None

    grid = InProcessGrid(example_app(small_config()), 3, {}, fault=fault)
    workflow = ThresholdWorkflow(small_config(), stage_timeout=5.0)
    replies = list(ThresholdGrid(grid, workflow).send_and_receive(train_messages(grid, np.zeros(SIZE, np.float32), 1), timeout=5.0))
    (report,) = workflow.reports
    assert replies == []
    assert report.aborted == "RoundAbortedError: 1 uploads arrived, fewer than min_contributions=2 [round=1, stage=ENCRYPT]"
    assert report.dropped == {grid.node_ids[1]: "ENCRYPT", grid.node_ids[2]: "ENCRYPT"}
    assert report.survivors == [grid.node_ids[0]]  # the one uploader
    asked = [stage for _, stage in stages]
    assert asked.count("ENCRYPT") == 3 and "DECRYPT" not in asked  # no one was asked to decrypt
    assert grid.errors == []
    assert all(decrypted_round(grid, node, small_config()) is None for node in grid.node_ids)
