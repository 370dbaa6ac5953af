"""t-of-n threshold CKKS: key backup (OpenFHE ShareKeys, Shamir) and stand-ins for dropped holders.

Real OpenFHE (CPython 3.10; skipped elsewhere, see conftest.py). Error tolerances as in
test_threshold_openfhe.py (``ThresholdParams.sum_error_bound``: about 1e-15 per slot).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import (
    DecryptionError,
    InvalidShare,
    LocalProtocolError,
    MalformedMessageError,
    ProtocolViolationError,
    RoundAbortedError,
    UnexpectedMessageError,
)
from fedcrypt.he.threshold import _runtime as _openfhe_runtime
from fedcrypt.he.threshold import (
    KeyBackupMessage,
    KeyHolder,
    RosterMessage,
    ThresholdParams,
    ThresholdServer,
    fuse_partials,
    simulate,
)

pytestmark = pytest.mark.usefixtures("openfhe")

N, T = 5, 3


@pytest.fixture(scope="module")
def params(openfhe: Any) -> ThresholdParams:
    return ThresholdParams.preset("compact", num_parties=N, num_clients=4, max_weight=4, recovery_threshold=T)


def backed_up_session(params: ThresholdParams) -> tuple[ThresholdServer, list[KeyHolder]]:
    server = ThresholdServer(params)
    holders = [KeyHolder(params, p, server.session) for p in range(params.num_parties)]
    joint = None
    for holder in holders:
        joint = server.receive_key_share(holder.generate_key_share(server.key_input_for(holder.party)).to_bytes())
    assert joint is not None
    roster = server.roster_message().to_bytes()
    for holder in holders:
        holder.receive_joint_key(joint.to_bytes())
        holder.receive_roster(roster)
    backups = [m for h in holders for m in h.backup_key()]
    assert len(backups) == N * (N - 1)
    for message in backups:
        holders[message.recipient].receive_backup(message.to_bytes())
    return server, holders


@pytest.fixture(scope="module")
def session(params: ThresholdParams) -> tuple[ThresholdServer, list[KeyHolder]]:
    return backed_up_session(params)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dropped=st.sets(st.integers(0, N - 1), max_size=N - T), seed=st.integers(0, 2**32 - 1))
def test_up_to_n_minus_t_dropped_holders_are_stood_in_for(params: ThresholdParams, dropped: set[int], seed: int) -> None:
    rng = np.random.default_rng(seed)  # test data, not secret
    vectors = [rng.uniform(-1, 1, 5000) for _ in range(3)]
    weights = [int(w) for w in rng.integers(1, 5, 3)]
    result = simulate(params, vectors, weights, holder_dropouts=dropped)
    exact = sum(w * v for w, v in zip(weights, vectors))
    assert np.max(np.abs(result.weighted_sum - exact)) <= params.sum_error_bound()


def test_more_than_n_minus_t_dropped_holders_abort(params: ThresholdParams) -> None:
    with pytest.raises(RoundAbortedError, match=r"key holders \[0, 2, 4\] dropped .* at most 2 may be stood in for"):
        simulate(params, [np.ones(8)] * 2, holder_dropouts={0, 2, 4})


def test_stand_in_needs_t_shares_and_fewer_do_not_rebuild_the_key(
    params: ThresholdParams, session: tuple[ThresholdServer, list[KeyHolder]]
) -> None:
    server, holders = session
    vectors = [np.full(100, 0.25), np.full(100, -0.5)]
    aggregate = server.weighted_sum([(holders[0].encrypt(v), 1) for v in vectors])
    exact = vectors[0] + vectors[1]
    one = holders[1].release_backup(4, 0)
    with pytest.raises(InvalidShare, match=r"2 shares of holder 4's key; recovery needs t = 3"):
        holders[0].recover_share(4, aggregate, [one])
    with pytest.raises(InvalidShare, match="duplicate"):
        holders[0].recover_share(4, aggregate, [one, one])
    # Below the protocol checks: t - 1 Shamir pieces rebuild a wrong key, so its share is junk.
    runtime = _openfhe_runtime.runtime(params)
    own = holders[0]._backups[4].reveal()
    other = holders[0]._open(one, holders[0]._roster)
    polys = {1: _openfhe_runtime.deserialize_poly(runtime, own), 2: _openfhe_runtime.deserialize_poly(runtime, other)}
    wrong = runtime.context.KeyGen().secretKey
    with pytest.raises(RuntimeError, match="less than threshold"):
        runtime.context.RecoverSharedKey(wrong, polys, N, T, "shamir")
    # Interpolating the t - 1 pieces anyway (as a 2-of-3 sharing, the smallest OpenFHE
    # accepts) gives a wrong key share.
    runtime.context.RecoverSharedKey(wrong, polys, 3, T - 1, "shamir")
    cts = [_openfhe_runtime.deserialize(runtime, "ciphertext", p, "t") for p in _pieces(aggregate, params, server.fingerprint)]
    shares = [holders[p].partial_decrypt(aggregate) for p in range(4)]
    loaded = [[_openfhe_runtime.deserialize(runtime, "ciphertext", x, "t") for x in s.partials] for s in shares]
    loaded.append(runtime.context.MultipartyDecryptMain(cts, wrong))
    try:
        got = fuse_partials(runtime, params, loaded, 100)
    except DecryptionError:
        pass
    else:
        assert np.max(np.abs(got - exact)) > 1.0
    # With t pieces the stand-in's share completes the decryption.
    two = holders[2].release_backup(4, 0)
    decryption = server.start_decryption(aggregate)
    for share in shares:
        decryption.receive_share(share)
    decryption.mark_dropped([4])
    assert decryption.standing_in == (4,) and not decryption.aborted
    decryption.receive_share(holders[0].recover_share(4, aggregate, [one, two.to_bytes()]))
    assert np.max(np.abs(decryption.fuse() - exact)) <= params.sum_error_bound()


def _pieces(aggregate: bytes, params: ThresholdParams, fingerprint: bytes) -> list[bytes]:
    from fedcrypt.he.threshold import BlobKind
    from fedcrypt.he.threshold._blob import decode_blob

    return decode_blob(aggregate, params, fingerprint, (BlobKind.AGGREGATE,))[1]


def test_backup_messages_are_authenticated_and_checked(params: ThresholdParams) -> None:
    server = ThresholdServer(params)
    holders = [KeyHolder(params, p, server.session) for p in range(N)]
    joint = None
    for holder in holders:
        joint = server.receive_key_share(holder.generate_key_share(server.key_input_for(holder.party)))
    with pytest.raises(LocalProtocolError, match="joint key is not known"):
        holders[0].receive_roster(server.roster_message())
    for holder in holders:
        holder.receive_joint_key(joint)
    with pytest.raises(LocalProtocolError, match="roster of transport keys"):
        holders[0].backup_key()
    roster = server.roster_message()
    swapped = RosterMessage(roster.session, roster.transport_keys[::-1])
    with pytest.raises(UnexpectedMessageError, match="transport key"):
        holders[0].receive_roster(swapped)
    for holder in holders:
        holder.receive_roster(roster.to_bytes())
    messages = holders[1].backup_key()
    with pytest.raises(LocalProtocolError, match="already backed up"):
        holders[1].backup_key()
    to_zero = next(m for m in messages if m.recipient == 0)
    tampered = KeyBackupMessage(
        to_zero.session, to_zero.sender, to_zero.recipient, to_zero.subject,
        to_zero.ciphertext[:-1] + bytes([to_zero.ciphertext[-1] ^ 1]),
    )
    with pytest.raises(DecryptionError):
        holders[0].receive_backup(tampered)
    relabelled = KeyBackupMessage(to_zero.session, 1, 0, 1, to_zero.ciphertext)
    holders[0].receive_backup(relabelled)  # the same ids: accepted
    with pytest.raises(UnexpectedMessageError, match="second backup"):
        holders[0].receive_backup(to_zero)
    with pytest.raises(UnexpectedMessageError, match="for holder 0"):
        holders[2].receive_backup(to_zero)
    with pytest.raises(MalformedMessageError, match="bad sender, recipient or subject"):
        KeyBackupMessage.from_bytes(KeyBackupMessage(to_zero.session, 0, 0, 1, b"x").to_bytes(), params)
    assert to_zero.ciphertext.hex()[:32] not in repr(to_zero)


def test_holders_release_for_at_most_n_minus_t_others(session: tuple[ThresholdServer, list[KeyHolder]]) -> None:
    _, holders = session
    helper = holders[3]
    with pytest.raises(ProtocolViolationError):
        helper.release_backup(3, 0)
    with pytest.raises(ProtocolViolationError):
        helper.release_backup(1, 3)
    helper.release_backup(1, 0)
    helper.release_backup(2, 0)
    helper.release_backup(1, 4)  # the same dropped holder again: no new key share exposed
    with pytest.raises(ProtocolViolationError, match=r"already released shares for 2 dropped holders \(n - t = 2\)"):
        helper.release_backup(4, 0)


def test_n_of_n_parameters_refuse_the_backup_calls(compact_params: ThresholdParams) -> None:
    server = ThresholdServer(compact_params)
    holder = KeyHolder(compact_params, 0, server.session)
    with pytest.raises(LocalProtocolError, match="no recovery_threshold"):
        holder.backup_key()
    with pytest.raises(ValueError, match=r"recovery_threshold must be 0 \(n-of-n\) or in \[3, 4\]"):
        ThresholdParams(16384, 60, 50, 0, 5, flooding=False, recovery_threshold=2)
