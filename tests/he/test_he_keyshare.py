"""Key distribution through an untrusted relay: X25519 + HKDF + AES-GCM from fedcrypt.crypto."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import ContextMismatchError, DecryptionError, MalformedMessageError
from fedcrypt.he import CkksParams, KeyOwner
from fedcrypt.he.keyshare import distribute_key, open_key_from_peer, seal_key_for_peer


@pytest.fixture(scope="module")
def parties() -> dict[int, X25519KeyPair]:
    return {i: X25519KeyPair.generate() for i in range(4)}


def test_every_peer_gets_a_working_key_and_the_relay_sees_no_secret(compact_owner, parties) -> None:
    dealer = 0
    relayed = distribute_key(
        compact_owner,
        sender=parties[dealer],
        sender_id=dealer,
        peers={i: kp.public_bytes for i, kp in parties.items()},
        round_id=7,
    )
    assert sorted(relayed) == [1, 2, 3]
    secret = compact_owner.to_bytes(include_secret_key=True)
    key_part = secret[-2048:]
    for message in relayed.values():
        assert key_part not in message  # the relay holds only AES-GCM ciphertext
    vector = np.linspace(-1, 1, 100)
    blob = compact_owner.encrypt(vector)
    for peer_id, message in relayed.items():
        peer = open_key_from_peer(
            message,
            recipient=parties[peer_id],
            recipient_id=peer_id,
            sender_id=dealer,
            sender_public=parties[dealer].public_bytes,
            round_id=7,
            expected_fingerprint=compact_owner.fingerprint,
        )
        assert peer.fingerprint == compact_owner.fingerprint
        bound = compact_owner.params.sum_error_bound([1])
        assert np.max(np.abs(peer.decrypt(blob) - vector)) <= bound
        assert np.max(np.abs(compact_owner.decrypt(peer.encrypt(vector)) - vector)) <= bound
        np.testing.assert_array_equal(peer.decrypt(blob), compact_owner.decrypt(blob))


@given(
    field=st.sampled_from(["recipient", "recipient_id", "sender_id", "sender_public", "round_id", "byte"]),
    position=st.integers(0, 10_000),
)
@settings(max_examples=20, deadline=None)
def test_anything_out_of_place_fails_to_decrypt(compact_owner, parties, field: str, position: int) -> None:
    message = seal_key_for_peer(
        compact_owner, sender=parties[0], sender_id=0, recipient_id=1, recipient_public=parties[1].public_bytes
    )
    kwargs = dict(recipient=parties[1], recipient_id=1, sender_id=0, sender_public=parties[0].public_bytes, round_id=0)
    if field == "recipient":
        kwargs["recipient"] = parties[2]
    elif field == "recipient_id":
        kwargs["recipient_id"] = 2
    elif field == "sender_id":
        kwargs["sender_id"] = 3  # also the reflection case: (1 -> 0) is not (0 -> 1)
    elif field == "sender_public":
        kwargs["sender_public"] = parties[3].public_bytes
    elif field == "round_id":
        kwargs["round_id"] = 1
    else:
        index = 5 + position % (len(message) - 5)  # fingerprint, nonce, body or tag
        message = message[:index] + bytes([message[index] ^ 0x01]) + message[index + 1 :]
    with pytest.raises(DecryptionError) as info:
        open_key_from_peer(message, **kwargs)
    assert str(info.value) == "authenticated decryption failed"  # names nothing secret


def test_reflected_message_fails(compact_owner, parties) -> None:
    message = seal_key_for_peer(
        compact_owner, sender=parties[0], sender_id=0, recipient_id=1, recipient_public=parties[1].public_bytes
    )
    with pytest.raises(DecryptionError):  # the dealer reading its own message as if from peer 1
        open_key_from_peer(message, recipient=parties[0], recipient_id=0, sender_id=1, sender_public=parties[1].public_bytes)


def test_expected_fingerprint_and_framing(compact_owner, weighted_owner, parties) -> None:
    message = seal_key_for_peer(
        compact_owner, sender=parties[0], sender_id=0, recipient_id=1, recipient_public=parties[1].public_bytes
    )
    kwargs = dict(recipient=parties[1], recipient_id=1, sender_id=0, sender_public=parties[0].public_bytes)
    with pytest.raises(ContextMismatchError, match="another CKKS context than expected"):
        open_key_from_peer(message, expected_fingerprint=weighted_owner.fingerprint, **kwargs)
    with pytest.raises(MalformedMessageError, match="bad magic"):
        open_key_from_peer(b"XXXX" + message[4:], **kwargs)
    with pytest.raises(MalformedMessageError, match="unsupported version"):
        open_key_from_peer(message[:4] + b"\x02" + message[5:], **kwargs)
    with pytest.raises(MalformedMessageError, match="truncated"):
        open_key_from_peer(message[:10], **kwargs)
    with pytest.raises(ValueError, match="sender_id and recipient_id must differ"):
        seal_key_for_peer(compact_owner, sender=parties[0], sender_id=1, recipient_id=1, recipient_public=parties[1].public_bytes)


def test_a_key_sent_under_a_false_fingerprint_is_refused(parties) -> None:
    """A dealer (or anyone holding the pairwise key) cannot pass one key off as another context's."""
    from fedcrypt.crypto import aead_encrypt, derive_key
    from fedcrypt.he import keyshare

    real = KeyOwner.generate(CkksParams.preset("compact"))
    claimed = KeyOwner.generate(CkksParams.preset("compact")).fingerprint
    key = derive_key(
        parties[0].exchange(parties[1].public_bytes),
        protocol="fedcrypt.he", purpose="ckks-secret-key", round_id=0, party_a=0, party_b=1,
    )
    body = aead_encrypt(key, real.to_bytes(include_secret_key=True), keyshare._associated_data(0, 1, 0, claimed))
    message = b"FCKT\x01" + claimed + body
    with pytest.raises(ContextMismatchError, match="does not match the fingerprint"):
        open_key_from_peer(message, recipient=parties[1], recipient_id=1, sender_id=0, sender_public=parties[0].public_bytes)
