"""Attacker review 6: one bad share *ciphertext* or *plaintext* at SHARE_KEYS (client side).

Review 5 found that an honest recipient refuses a whole ShareBundle when one sender's share
ciphertext does not decrypt (``DecryptionError``) and so drops: one site corrupting its
ciphertexts to everyone ends the round; the proposed fix is to treat the sender of an
undecryptable share as dropped. The sender owns the share key, so it can equally send a
ciphertext that *does* decrypt, to a plaintext no honest client sends: other party ids, shares
at another evaluation point, a share value out of range. Each makes ``_on_share_bundle`` raise
(``ProtocolViolationError`` / ``InvalidShare``) in every honest recipient. The rule searched:
one bad peer never ends the round; whatever a fix does for undecryptable ciphertexts must also
cover every other reason a recipient cannot use the sender's shares.

Plans (sender 2 sends each to every recipient; SecAgg and SecAgg+, both modes): ``garbage`` (a
ciphertext that does not decrypt), ``names`` (sender/recipient ids swapped in the plaintext),
``point`` (both shares at x = recipient + 2), ``range`` (share y = 2^521 - 1, out of range).
Severity: medium (availability, one client; no confidentiality loss). Fix: any share bundle
entry the recipient cannot turn into its two valid shares (decryption, ids, points, ranges)
makes the recipient treat that sender as not having shared keys (skip its pairwise mask, name it
in the signed ``skipped`` set), and the server and the other holders must then agree that the
sender is out of ``U3`` (with ``verify_survivors`` the attestation rule already refuses to reveal
the self-mask share of a survivor that skipped a member of ``U3``).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedcrypt.crypto import SHARE_BYTES, Share, aead_encrypt
from fedcrypt.errors import FedcryptError
from fedcrypt.secagg import EncryptedShares, SecAggConfig, Stage
from fedcrypt.secagg import keyschedule

from ._round import AD, ROUND, Round

BAD = 2
CONFIGS = {
    "secagg": dict(num_clients=6, threshold=4),
    "secagg-roster": dict(num_clients=6, threshold=4, verify_survivors=True),
    "secagg+": dict(num_clients=8, threshold=4, neighbours=4),
    "secagg+-roster": dict(num_clients=8, threshold=4, neighbours=4, verify_survivors=True),
}


def _plaintext(plan: str, sender: int, recipient: int) -> bytes:
    x = recipient + 1
    share = Share(x, 12345).to_bytes()
    if plan == "names":
        return recipient.to_bytes(4, "big") + sender.to_bytes(4, "big") + share + share
    if plan == "point":
        other = Share(x + 1, 12345).to_bytes()
        return sender.to_bytes(4, "big") + recipient.to_bytes(4, "big") + other + other
    if plan == "range":
        bad = x.to_bytes(2, "big") + b"\xff" * (SHARE_BYTES - 2)
        return sender.to_bytes(4, "big") + recipient.to_bytes(4, "big") + bad + bad
    raise AssertionError(plan)


def _tamper(run: Round, plan: str):
    def tamper(stage: Stage, i: int, message):
        if stage is not Stage.SHARE_KEYS or i != BAD:
            return message
        client = run.clients[BAD]
        out = []
        for v, blob in message.ciphertexts:
            if plan == "garbage":
                out.append((v, blob[:-1] + bytes([blob[-1] ^ 1])))
                continue
            key = client._share_keys[v]  # the sender's own share key: it may encrypt anything
            ad = keyschedule.share_associated_data(round_id=ROUND, sender=BAD, recipient=v, context=client.context)
            out.append((v, aead_encrypt(key, _plaintext(plan, BAD, v), ad)))
        return EncryptedShares(message.round_id, message.sender, tuple(out))

    return tamper


PLANS = ["garbage", "names", "point", "range"]


def _play(config_name: str, plan: str) -> Round:
    run = Round(SecAggConfig(**CONFIGS[config_name]))
    run.run(tamper=_tamper(run, plan))
    return run


@pytest.mark.xfail(strict=True, raises=FedcryptError,
                   reason="break: one sender's bad share ciphertext or plaintext makes every honest recipient refuse its bundle; the round ends")
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_one_bad_share_sender_does_not_end_the_round(config_name: str, plan: str) -> None:
    run = _play(config_name, plan)
    result = run.server.result
    honest = set(range(run.config.num_clients)) - {BAD}
    assert result is not None and honest <= set(result.survivors), (run.client_errors, result)
    assert np.array_equal(result.ring_sum, run.expected_sum(result.survivors))


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_the_bad_share_plans_today(config_name: str, plan: str) -> None:
    # pinned: the recipients of the bad sender refuse their bundles with a typed error, and the round aborts
    run = Round(SecAggConfig(**CONFIGS[config_name]))
    with pytest.raises(FedcryptError):
        run.run(tamper=_tamper(run, plan))
    recipients = run.config.holders(BAD, ROUND) - {BAD}
    assert recipients <= set(run.client_errors)
    assert all(isinstance(exc, FedcryptError) for exc in run.client_errors.values())
