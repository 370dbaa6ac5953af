"""KeyHolder state bytes: the round trip a transport needs when every message may run in a
fresh process (Flower's ``Context.state``). Real OpenFHE (CPython 3.10; skipped elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import MalformedMessageError, UnexpectedMessageError
from fedcrypt.he.threshold import KeyHolder, Stage, ThresholdParams, ThresholdServer

pytestmark = pytest.mark.usefixtures("openfhe")


@pytest.fixture(scope="module")
def recovery_params(openfhe: object) -> ThresholdParams:
    return ThresholdParams.preset("compact", num_parties=3, num_clients=4, max_weight=4, recovery_threshold=2)


def restore(holder: KeyHolder) -> KeyHolder:
    data = holder.to_state_bytes()
    again = KeyHolder.from_state_bytes(data)
    assert again.to_state_bytes() == data and again.stage is holder.stage and again.party == holder.party
    return again


@pytest.fixture(scope="module")
def restored_session(recovery_params: ThresholdParams) -> tuple[ThresholdServer, list[KeyHolder]]:
    """Key chain, joint key, roster and backups with every holder restored from bytes between steps."""
    server = ThresholdServer(recovery_params)
    holders = [restore(KeyHolder(recovery_params, p, server.session)) for p in range(3)]
    joint = None
    for i in range(3):
        joint = server.receive_key_share(holders[i].generate_key_share(server.key_input_for(i)).to_bytes())
        holders[i] = restore(holders[i])
    assert joint is not None
    roster = server.roster_message().to_bytes()
    for i in range(3):
        holders[i].receive_joint_key(joint.to_bytes())
        holders[i].receive_roster(roster)
        holders[i] = restore(holders[i])
    backups = [m for h in holders for m in h.backup_key()]
    holders = [restore(h) for h in holders]
    for message in backups:
        holders[message.recipient].receive_backup(message.to_bytes())
    return server, [restore(h) for h in holders]


def test_restored_holders_decrypt_recover_and_remember(restored_session: tuple[ThresholdServer, list[KeyHolder]]) -> None:
    server, holders = restored_session
    assert all(h.stage is Stage.READY and h.fingerprint == server.fingerprint for h in holders)
    rng = np.random.default_rng(9)  # test data, not secret
    vectors = [rng.uniform(-1, 1, 300) for _ in range(2)]
    aggregate = server.weighted_sum([holders[0].encrypt(vectors[0], 2.5), holders[1].encrypt(vectors[1], 1.0)])
    decryption = server.start_decryption(aggregate)
    decryption.receive_share(holders[0].partial_decrypt(aggregate))
    decryption.receive_share(holders[1].partial_decrypt(aggregate))
    decryption.mark_dropped([2])
    helper = restore(holders[1])
    released = helper.release_backup(2, 0)
    stand_in = restore(holders[0])
    decryption.receive_share(stand_in.recover_share(2, aggregate, [released]))
    exact = 2.5 * vectors[0] + vectors[1]
    assert np.max(np.abs(decryption.fuse() - exact)) <= server.params.sum_error_bound()
    # what a holder answered survives the round trip: no second share of the same aggregate
    with pytest.raises(UnexpectedMessageError, match="already partially decrypted"):
        restore(holders[1]).partial_decrypt(aggregate)
    assert restore(helper)._released == {2}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10**6), junk=st.binary(min_size=1, max_size=8))
def test_state_decoder_is_strict(restored_session: tuple[ThresholdServer, list[KeyHolder]], cut: int, junk: bytes) -> None:
    _, holders = restored_session
    data = holders[2].to_state_bytes()
    with pytest.raises(MalformedMessageError):
        KeyHolder.from_state_bytes(data[: cut % len(data)])
    with pytest.raises(MalformedMessageError, match="trailing|canonical"):
        KeyHolder.from_state_bytes(data + junk)
    with pytest.raises(MalformedMessageError, match="bad magic or version"):
        KeyHolder.from_state_bytes(b"XXXX" + data[4:])


def test_state_bytes_never_print(restored_session: tuple[ThresholdServer, list[KeyHolder]]) -> None:
    _, holders = restored_session
    holder = holders[0]
    secret = holder._secret_bytes.reveal()  # type: ignore[union-attr]
    text = repr(holder) + str(holder) + repr(holder._secret_bytes) + repr(holder._backups)
    assert secret[-64:].hex() not in text and "secret_key_share=<held>" in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(holder)
