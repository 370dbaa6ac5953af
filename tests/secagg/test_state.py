"""ClientProtocol.to_state_bytes / from_state_bytes: round trips at every stage, canonical, strict.

A client rebuilt from its state bytes between every two messages finishes the round with
the same sum; the bytes re-encode to themselves; truncated, extended, bit-flipped or
re-versioned bytes raise a typed error (never anything else), and a bit flip that still
decodes is a different state that re-encodes to exactly those bytes. The identity key
never enters the bytes.
"""

from __future__ import annotations

import warnings


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.crypto import Ed25519KeyPair
from fedcrypt.errors import FedcryptError, HonestButCuriousWarning, IdentityError, MalformedMessageError
from fedcrypt.secagg import ClientProtocol, SecAggConfig, Stage
from fedcrypt.secagg import _state

from .harness import Round

pytestmark = pytest.mark.filterwarnings("ignore::fedcrypt.errors.HonestButCuriousWarning")

CONFIGS = [
    SecAggConfig(5, 3),
    SecAggConfig(5, 4, verify_survivors=True, max_colluders=1),
    SecAggConfig(8, 3, neighbours=4, bits=64, graph_seed=b"seed", rounding="nearest", scale=1024.0),
]


class ReloadingRound(Round):
    """Every client goes through its state bytes before each stage (a fresh process per message)."""

    def __init__(self, config: SecAggConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.states: dict[Stage, list[bytes]] = {}

    def step(self, drop=frozenset()):
        for i, client in enumerate(self.clients):
            data = client.to_state_bytes()
            self.states.setdefault(client.stage, []).append(data)
            key = self.signing[i] if self.signing else None
            restored = ClientProtocol.from_state_bytes(data, signing_key=key)
            assert restored.to_state_bytes() == data  # canonical: the same state, the same bytes
            assert repr(restored) == repr(client)
            self.clients[i] = restored
        return super().step(drop)


@pytest.mark.parametrize("config", CONFIGS, ids=["secagg", "malicious-server", "secagg+64"])
def test_a_client_rebuilt_before_every_message_finishes_the_round(config: SecAggConfig) -> None:
    run = ReloadingRound(config)
    run.run({Stage.MASKED_INPUT: {1}})  # a drop: key shares of client 1, self-mask shares of the others
    result = run.server.result
    assert 1 not in result.survivors and len(result.survivors) == config.num_clients - 1
    assert np.array_equal(result.ring_sum, run.expected_sum(result.survivors))
    expected = {Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK}
    if config.verify_survivors:
        expected.add(Stage.CONSISTENCY_CHECK)
    assert set(run.states) == expected
    done = run.clients[0]
    assert done.stage is Stage.DONE
    key = run.signing[0] if run.signing else None
    assert ClientProtocol.from_state_bytes(done.to_state_bytes(), signing_key=key).to_state_bytes() == done.to_state_bytes()


def test_encoding_is_canonical_and_versioned() -> None:
    run = Round(CONFIGS[2])
    run.step()
    run.step()  # key directory answered: directory, share keys and the own shares are held
    client = run.clients[3]
    data = client.to_state_bytes()
    assert data[:4] == _state.MAGIC and data[4] == _state.VERSION == 1
    assert client.to_state_bytes() == data
    for version in (0, 2, 255):
        with pytest.raises(MalformedMessageError, match="version"):
            ClientProtocol.from_state_bytes(data[:4] + bytes([version]) + data[5:])
    with pytest.raises(MalformedMessageError, match="magic"):
        ClientProtocol.from_state_bytes(b"FCSA" + data[4:])
    with pytest.raises(TypeError):
        ClientProtocol.from_state_bytes("not bytes")  # type: ignore[arg-type]


def test_the_encoding_covers_every_slot() -> None:
    assert _state.FIELDS == set(ClientProtocol.__slots__)


def test_the_identity_key_stays_out_and_is_required_again() -> None:
    run = Round(CONFIGS[1])
    run.step()
    data = run.clients[2].to_state_bytes()
    key = run.signing[2]
    assert key.private_bytes().reveal() not in data and key.public_bytes in data
    with pytest.raises(IdentityError):
        ClientProtocol.from_state_bytes(data)
    with pytest.raises(IdentityError):
        ClientProtocol.from_state_bytes(data, signing_key=Ed25519KeyPair.generate())
    with pytest.raises(TypeError):
        ClientProtocol.from_state_bytes(data, signing_key=key.public_bytes)  # type: ignore[arg-type]
    assert ClientProtocol.from_state_bytes(data, signing_key=key).stage is Stage.SHARE_KEYS


def test_fields_that_contradict_the_stage_are_refused() -> None:
    run = Round(CONFIGS[0])
    fresh = run.clients[0].to_state_bytes()  # ADVERTISE_KEYS: no keys yet
    stage_at = fresh.index(run.clients[0].context) + 32
    assert fresh[stage_at] == Stage.ADVERTISE_KEYS
    for stage in (Stage.SHARE_KEYS, Stage.DONE):
        with pytest.raises(MalformedMessageError, match="stage"):
            ClientProtocol.from_state_bytes(fresh[:stage_at] + bytes([stage]) + fresh[stage_at + 1 :])
    with pytest.raises(MalformedMessageError, match="stage"):
        ClientProtocol.from_state_bytes(fresh[:stage_at] + bytes([Stage.ABORTED]) + fresh[stage_at + 1 :])


def test_a_restored_client_prints_no_secret() -> None:
    run = Round(CONFIGS[0])
    run.step()
    run.step()
    data = run.clients[0].to_state_bytes()
    restored = ClientProtocol.from_state_bytes(data)
    seed = restored._self_mask_seed.reveal()
    assert seed in data  # the bytes hold the secrets: they are for the node's private storage
    for text in (repr(restored), str(restored)):
        assert seed.hex() not in text and "Secret" not in text


# ---------------------------------------------------------------------------- properties
def _states() -> list[tuple[bytes, Ed25519KeyPair | None]]:
    """Two states of every client stage of each config, with the identity key they need."""
    out = []
    for config in CONFIGS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)
            run = ReloadingRound(config, length=5)
            run.run({Stage.MASKED_INPUT: {1}})
        key = run.signing[0] if run.signing else None
        out.extend((datas[0], key) for datas in run.states.values())  # client 0's
    return out


STATES = _states()


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(STATES), st.data())
def test_truncated_or_extended_state_is_refused(state: tuple[bytes, Ed25519KeyPair | None], draw: st.DataObject) -> None:
    data, key = state
    cut = draw.draw(st.integers(0, len(data) - 1))
    with pytest.raises(MalformedMessageError):
        ClientProtocol.from_state_bytes(data[:cut], signing_key=key)
    extra = draw.draw(st.binary(min_size=1, max_size=40))
    with pytest.raises(MalformedMessageError):
        ClientProtocol.from_state_bytes(data + extra, signing_key=key)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(STATES), st.data())
def test_a_bit_flip_is_refused_or_is_another_canonical_state(state: tuple[bytes, Ed25519KeyPair | None], draw: st.DataObject) -> None:
    data, key = state
    position = draw.draw(st.integers(0, 8 * len(data) - 1))
    flipped = bytearray(data)
    flipped[position // 8] ^= 1 << (position % 8)
    try:
        client = ClientProtocol.from_state_bytes(bytes(flipped), signing_key=key)
    except FedcryptError:
        return
    assert client.to_state_bytes() == bytes(flipped)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_typed_errors(blob: bytes) -> None:
    for data in (blob, _state.MAGIC + bytes([_state.VERSION]) + blob):
        with pytest.raises(FedcryptError):
            ClientProtocol.from_state_bytes(data)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 9),
    bits=st.sampled_from([32, 64]),
    length=st.integers(0, 20),
    round_id=st.integers(0, 2**64 - 1),
    ad=st.binary(max_size=16),
)
def test_round_trip_of_fresh_clients(n: int, bits: int, length: int, round_id: int, ad: bytes) -> None:
    config = SecAggConfig(n, n // 2 + 1, bits=bits)
    vector = np.arange(length, dtype=np.float32) / 100
    client = ClientProtocol(config, n - 1, round_id=round_id, associated_data=ad, vector=vector)
    for _ in range(2):
        data = client.to_state_bytes()
        restored = ClientProtocol.from_state_bytes(data)
        assert restored.to_state_bytes() == data and restored.context == client.context
        assert restored.round_id == round_id and restored.config.to_bytes() == config.to_bytes()
        client.advertise() if client.stage is Stage.ADVERTISE_KEYS else None
