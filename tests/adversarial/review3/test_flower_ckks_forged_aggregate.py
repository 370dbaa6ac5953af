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
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tenseal")
pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402

from fedcrypt.he import KeyOwner  # noqa: E402
from fedcrypt.he.round import Decryption, DecryptRequest  # noqa: E402
from fedcrypt.integrations.flower.ckks import CKKS_RECORD, CkksGrid, CkksWorkflow, ckks_mod, default_config  # noqa: E402
from flower._inprocess import InProcessGrid  # noqa: E402  (tests/flower, on the test path)
from flower.test_flower_adapter import initial, make_app  # noqa: E402

from . import _ckks_forge as forge  # noqa: E402

K = 1 << 57


@pytest.mark.xfail(strict=True, reason="attacker review 3: a forged (0, K) aggregate makes a Flower CKKS decryptor release the key")
def test_flower_ckks_decryptor_does_not_release_the_key(tmp_path) -> None:
    from flwr.serverapp.strategy import FedAvg

    workflow = CkksWorkflow(default_config(decryptors=1))
    key = KeyOwner.generate(workflow.config.params)
    key_file = tmp_path / "ckks.key"
    key_file.write_bytes(key.to_bytes(include_secret_key=True))
    grid = InProcessGrid(make_app([ckks_mod]), 3, {"ckks-key-path": str(key_file)})
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    strategy.start(grid=CkksGrid(grid, workflow), initial_arrays=initial(), num_rounds=1, timeout=30)
    (decryptor,) = workflow.reports[0].decryptors
    victim = next(node for node in grid.node_ids if node != decryptor)  # uploaded, has not decrypted

    ctx = workflow.aggregator  # the server's public AggregatorContext
    scratch = KeyOwner.generate(workflow.config.params)  # the server's own key: only for SEAL's byte layout
    template = forge.template_ciphertext(scratch.aggregator_context(), scratch.encrypt(np.zeros(4)))
    n = workflow.config.params.poly_modulus_degree
    forged = forge.forge_blob(
        ctx, forge.key_times(ctx, template, K), kind=forge.BlobKind.AGGREGATE, length=n, spec_digest=None,
        contributions=ckks_mod.config.min_contributions,
    )
    request = DecryptRequest(1, victim, forged).to_bytes()
    content = RecordDict({CKKS_RECORD: ConfigRecord({"stage": "DECRYPT", "payload": request})})
    (reply,) = grid.send_and_receive([Message(content, victim, "train", group_id="1")], timeout=5)
    if reply.has_error():
        return  # refused: the attack fails
    released = Decryption.from_bytes(reply.content[CKKS_RECORD]["payload"]).values
    thief = forge.recover_key(released, ctx, K)
    secret = np.random.default_rng(7).uniform(-1, 1, 32)  # the node's next upload
    upload = KeyOwner.from_bytes(key_file.read_bytes()).encrypt(secret)
    stolen = thief.decrypt(upload) if thief is not None else None
    assert stolen is None or not np.allclose(stolen, secret, atol=1e-4), (
        "one DECRYPT reply to a forged aggregate gave the server the CKKS key; the node's uploads decrypt"
    )
