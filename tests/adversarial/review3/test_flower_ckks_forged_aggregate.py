"""Attacker review 3, CKKS through Flower (``ckks_mod``): one forged aggregate, one reply, the key.

The same chosen ciphertext as ``test_ckks_round_chosen_ciphertext`` against the Flower
adapter's decryptor (key file mode, so no dealer key swap is involved): after an honest
round, a node that uploaded and was not asked to decrypt still has its one decryption. The
server sends it an aggregate-kind blob holding ``(0, K)``, with a header of
``min_clients`` contributions of total weight ``min_clients`` and a length of one full
ciphertext (the decryptor checks neither the length nor the layout against the round's
uploads). The reply is ``K * s`` plus flooding sized for honest noise; rounding gives ``s``,
and the server decrypts the node's uploads with the rebuilt key. SECURITY.md (CKKS) says
that a deviating server gets one upload "to the precision above (not the key)".

Fixed by the aggregate's provenance (:mod:`fedcrypt.he._provenance`): the node refuses a
ciphertext whose second polynomial is not the weighted sum of its summands' seeded
polynomials. The positive control runs the same attack on a node without that check.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

pytest.importorskip("tenseal")
pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402

import fedcrypt.he.context as context_module  # noqa: E402
from fedcrypt.he import KeyOwner  # noqa: E402
from fedcrypt.he.blob import peek_header  # noqa: E402
from fedcrypt.he.round import Decryption, DecryptRequest, decode_message  # noqa: E402
from fedcrypt.integrations.flower.ckks import CKKS_RECORD, CkksGrid, CkksWorkflow, ckks_mod, default_config  # noqa: E402
from flower._inprocess import InProcessGrid  # noqa: E402  (tests/flower, on the test path)
from flower.test_flower_adapter import initial, make_app  # noqa: E402

from . import _ckks_forge as forge  # noqa: E402
from .test_ckks_round_chosen_ciphertext import weaken  # noqa: E402

K = 1 << 57


def _attack(tmp_path) -> tuple[np.ndarray | None, str, np.ndarray]:
    """One honest round, then the forged aggregate to a node that has a decryption left:
    ``(released values or None, the node's error or '', K * s decoded at those slots)``."""
    from flwr.serverapp.strategy import FedAvg

    workflow = CkksWorkflow(default_config(decryptors=1))
    key = KeyOwner.generate(workflow.config.params)
    key_file = tmp_path / "ckks.key"
    key_file.write_bytes(key.to_bytes(include_secret_key=True))
    layouts: list[tuple[int, bytes | None]] = []  # what the server sees of every upload's header

    def capture(node, request):
        if CKKS_RECORD in request.content.keys() and request.content[CKKS_RECORD]["stage"] == "ENCRYPT":
            def keep(reply):
                header = peek_header(decode_message(reply.content[CKKS_RECORD]["payload"]).blob)
                layouts.append((header.length, header.spec_digest))
                return reply
            return keep
        return None

    grid = InProcessGrid(make_app([ckks_mod]), 3, {"ckks-key-path": str(key_file)}, fault=capture)
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    strategy.start(grid=CkksGrid(grid, workflow), initial_arrays=initial(), num_rounds=1, timeout=30)
    (decryptor,) = workflow.reports[0].decryptors
    victim = next(node for node in grid.node_ids if node != decryptor)  # uploaded, has not decrypted

    ctx = workflow.aggregator  # the server's public AggregatorContext
    scratch = KeyOwner.generate(workflow.config.params)  # the server's own key: only for SEAL's byte layout
    template = forge.template_ciphertext(scratch.aggregator_context(), scratch.encrypt(np.zeros(4)))
    length, layout = layouts[0]  # the nodes' layout; the model (a few values) fits one ciphertext
    forged = forge.forge_blob(
        ctx, forge.key_times(ctx, template, K), kind=forge.BlobKind.AGGREGATE, length=length, spec_digest=layout,
        contributions=ckks_mod.config.min_contributions,
    )
    request = DecryptRequest(1, victim, forged).to_bytes()
    content = RecordDict({CKKS_RECORD: ConfigRecord({"stage": "DECRYPT", "payload": request})})
    (reply,) = grid.send_and_receive([Message(content, victim, "train", group_id="1")], timeout=5)
    with mock.patch.object(context_module, "check_aggregate", lambda *args: None):
        key_times_s = key._decrypt_exact(forged)  # what the forged aggregate is: K * s (the test holds the key)
    if reply.has_error():
        return None, reply.error.reason, key_times_s
    return Decryption.from_bytes(reply.content[CKKS_RECORD]["payload"]).values, "", key_times_s


def test_flower_ckks_decryptor_does_not_release_the_key(tmp_path) -> None:
    released, error, _ = _attack(tmp_path)
    assert released is None and error.startswith("MalformedMessageError") and "forged aggregate" in error


def test_flower_ckks_weakened_decryptor_releases_the_key(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive control: without the provenance check the reply is ``K * s`` at the layout's
    slots (the flooding is rounded away). Here the model has fewer values than a ciphertext's
    ``N``, so the node's layout check limits one release to those slots; with a model of ``N``
    values or more (any LoRA adapter), rounding gives every coefficient of ``s``, as
    ``test_ckks_round_chosen_ciphertext`` shows through the sans-IO round."""
    weaken(monkeypatch)
    released, error, key_times_s = _attack(tmp_path)
    assert error == "" and released is not None
    assert np.abs(released - key_times_s).max() < 1e-3 * np.abs(key_times_s).max()
    assert np.abs(key_times_s).max() > 1e3  # a key-dependent release of size K / scale, not an honest sum
