"""The CKKS round's wire and state encodings: round trips, strict decoding (truncated,
extended, bit-flipped bytes give typed errors only), state bytes at every key state, and
no secret in any repr."""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import ContextMismatchError, FedcryptError, HonestButCuriousWarning, IdentityError, MalformedMessageError
from fedcrypt.he.round import (
    CkksClient,
    CkksConfig,
    Confirmation,
    ConfirmedUpload,
    ConfirmRequest,
    ContextReply,
    ContextRequest,
    DealReply,
    DealRequest,
    Decryption,
    DecryptRequest,
    EncryptRequest,
    InstallReply,
    InstallRequest,
    KeyState,
    Stage,
    Upload,
    decode_message,
    simulate,
)
from fedcrypt.he.round import _state

from ._round_harness import PARAMS, Federation

# ---------------------------------------------------------------------------- strategies
ids = st.integers(0, 2**64 - 1)
members = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", max_size=64)
signatures = st.one_of(st.just(b""), st.binary(min_size=64, max_size=64))
keys = st.binary(min_size=32, max_size=32)
digests = st.binary(min_size=32, max_size=32)
blobs = st.binary(max_size=96)
context_replies = st.builds(
    ContextReply, ids, ids, st.binary(max_size=40), st.one_of(st.just(b""), keys), members, signatures
)
uploads = st.builds(Upload, ids, ids, blobs, members, signatures)
messages = st.one_of(
    st.builds(ContextRequest, ids, ids),
    context_replies,
    st.builds(DealRequest, ids, ids, st.lists(context_replies, max_size=3).map(tuple)),
    st.builds(
        DealReply, ids, ids, st.binary(max_size=40), keys,
        st.lists(st.tuples(ids, blobs), max_size=3).map(tuple), members, signatures,
    ),
    st.builds(
        InstallRequest, ids, ids, ids, members, keys, digests, st.lists(context_replies, max_size=3).map(tuple),
        blobs, signatures,
    ),
    st.builds(InstallReply, ids, ids, st.binary(max_size=40)),
    st.builds(EncryptRequest, ids, ids, digests),
    uploads,
    st.builds(ConfirmRequest, ids, ids, st.lists(st.tuples(members, ids, digests), max_size=4).map(tuple)),
    st.builds(Confirmation, ids, ids, members, st.binary(min_size=64, max_size=64)),
    st.builds(
        DecryptRequest, ids, ids, blobs,
        st.lists(st.builds(ConfirmedUpload, uploads, signatures), max_size=3).map(tuple),
    ),
    st.builds(
        lambda r, n, values: Decryption.of(r, n, np.array(values)),
        ids, ids, st.lists(st.floats(width=64), min_size=1, max_size=6),
    ),
)


@given(messages)
@settings(max_examples=300, deadline=None)
def test_every_message_round_trips(message: Any) -> None:
    data = message.to_bytes()
    assert type(message).from_bytes(data) == message
    assert decode_message(data) == message
    assert type(message).from_bytes(memoryview(data)) == message
    assert decode_message(bytearray(data)).to_bytes() == data


@given(messages, st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_truncated_or_extended_messages_are_malformed(message: Any, data: st.DataObject) -> None:
    raw = message.to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    extra = data.draw(st.binary(min_size=1, max_size=9), label="extra")
    for bad in (raw[:cut], raw + extra):
        with pytest.raises(MalformedMessageError):
            type(message).from_bytes(bad)
        with pytest.raises(MalformedMessageError):
            decode_message(bad)


@given(messages, st.data())
@settings(max_examples=300, deadline=None)
def test_a_flipped_bit_gives_a_typed_error_or_exactly_those_bytes(message: Any, data: st.DataObject) -> None:
    raw = bytearray(message.to_bytes())
    bit = data.draw(st.integers(0, 8 * len(raw) - 1), label="bit")
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        decoded = decode_message(bytes(raw))
    except FedcryptError:
        return
    assert decoded.to_bytes() == bytes(raw)  # canonical: another valid message, never a lenient parse


def test_decoders_name_what_is_wrong() -> None:
    raw = EncryptRequest(1, 2, bytes(32)).to_bytes()
    with pytest.raises(MalformedMessageError, match="bad magic"):
        decode_message(b"XXXX" + raw[4:])
    with pytest.raises(MalformedMessageError, match="unsupported version 9"):
        decode_message(raw[:4] + b"\x09" + raw[5:])
    with pytest.raises(MalformedMessageError, match="unknown type 99"):
        decode_message(raw[:5] + b"\x63" + raw[6:])
    with pytest.raises(MalformedMessageError, match="type byte 7, expected 8"):
        Upload.from_bytes(raw)
    with pytest.raises(TypeError, match="expected bytes"):
        Upload.from_bytes("text")  # type: ignore[arg-type]
    reply = ContextReply(1, 2, b"", bytes(32), "m", bytes(64)).to_bytes()
    with pytest.raises(MalformedMessageError, match="x25519 key of 31 bytes"):
        ContextReply.from_bytes(reply.replace(b"\x20" + bytes(32), b"\x1f" + bytes(31), 1))
    with pytest.raises(ValueError, match="signature must be bytes of length 0 or 64"):
        Upload(1, 2, b"", "m", bytes(3))


# ---------------------------------------------------------------------------- a real round's messages
@pytest.fixture(scope="module")
def real() -> tuple[Federation, dict[str, Any]]:
    """A roster round with a dealer, stopped before DECRYPT's replies: every message type, for real."""
    fed = Federation(3, roster=True)
    server, log = fed.run(1, until=Stage.DECRYPT)
    decryptor = min(log.requests[Stage.DECRYPT])
    decryption = fed.clients[decryptor].handle(log.requests[Stage.DECRYPT][decryptor])
    collected = [m for by_node in log.requests.values() for m in by_node.values()]
    collected += [m for by_node in log.replies.values() for m in by_node.values()] + [decryption]
    return fed, {"server": server, "log": log, "messages": collected}


def test_a_real_round_has_every_message_type(real) -> None:
    _, found = real
    kinds = {type(m) for m in found["messages"]}
    assert kinds == {
        ContextRequest, ContextReply, DealRequest, DealReply, InstallRequest, InstallReply, EncryptRequest, Upload,
        ConfirmRequest, Confirmation, DecryptRequest, Decryption,
    }
    for message in found["messages"]:
        assert decode_message(message.to_bytes()) == message


@given(st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_real_requests_leave_the_nodes_unchanged(real, data: st.DataObject) -> None:
    """Truncated, extended or bit-flipped server messages: a typed error and no state change, or a reply."""
    fed, found = real
    requests = [m for m in found["messages"] if not isinstance(m, (ContextReply, DealReply, InstallReply, Upload, Confirmation, Decryption))]
    message = data.draw(st.sampled_from(requests), label="message")
    raw = bytearray(message.to_bytes())
    how = data.draw(st.sampled_from(["truncate", "extend", "flip"]), label="how")
    if how == "truncate":
        bad = bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")])
    elif how == "extend":
        bad = bytes(raw) + data.draw(st.binary(min_size=1, max_size=8), label="extra")
    else:
        bit = data.draw(st.integers(0, 8 * len(raw) - 1), label="bit")
        raw[bit // 8] ^= 1 << (bit % 8)
        bad = bytes(raw)
    node = message.node if message.node in fed.clients else min(fed.clients)
    client = CkksClient.from_state_bytes(fed.clients[node].to_state_bytes(), config=fed.config, identity=fed.identity(node))
    before = client.to_state_bytes()
    try:
        client.handle(bad)
    except FedcryptError:
        assert client.to_state_bytes() == before
        return
    assert how == "flip"  # only a flipped bit can still make a message a node accepts


@given(st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_replies_give_the_server_typed_errors(data: st.DataObject) -> None:
    fed = Federation(3, roster=True, key_setup="file", seed=1)
    server, log = fed.run(1, until=Stage.ENCRYPT)
    node = min(log.requests[Stage.ENCRYPT])
    fed.clients[node].set_input(fed.inputs[node], 1.0)
    raw = bytearray(fed.clients[node].handle(log.requests[Stage.ENCRYPT][node]).to_bytes())
    position = data.draw(st.integers(0, len(raw) - 1), label="position")
    if data.draw(st.booleans(), label="truncate"):
        bad = bytes(raw[:position])
    else:
        raw[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        bad = bytes(raw)
    try:
        server.receive(bad, sender=node)
    except FedcryptError:
        assert server.received == frozenset() and node in server.report.refused
        return
    raise AssertionError("a mutated signed upload was accepted")


# ---------------------------------------------------------------------------- state bytes
def test_state_fields_are_the_slots() -> None:
    assert _state.FIELDS == set(CkksClient.__slots__)


def _restored(fed: Federation, node: int) -> CkksClient:
    data = fed.clients[node].to_state_bytes()
    client = CkksClient.from_state_bytes(data, config=fed.config, identity=fed.identity(node))
    assert client.to_state_bytes() == data
    return client


def test_state_round_trips_at_every_key_state_and_the_restored_node_carries_on() -> None:
    fed = Federation(3, roster=True)
    assert fed.clients[101].key_state is KeyState.NO_KEY
    _restored(fed, 101)
    server, log = fed.run(1, until=Stage.INSTALL)
    assert fed.clients[101].key_state is KeyState.AWAITING_KEY
    fed.clients[101] = _restored(fed, 101)  # the pending X25519 key survives: the restored node installs
    fed.clients[101].handle(log.requests[Stage.INSTALL][101])
    assert fed.clients[101].key_state is KeyState.READY
    fed.clients[100].set_input(np.linspace(-1, 1, 16), 2.0)
    restored = _restored(fed, 100)
    request = EncryptRequest(2, 100, fed.clients[100].fingerprint)
    first, second = fed.clients[100].handle(request), restored.handle(request)
    assert first.blob != second.blob and len(first.blob) == len(second.blob)  # the same input, fresh randomness
    _restored(fed, 100)


@pytest.fixture(scope="module")
def ready_state() -> tuple[Federation, bytes]:
    fed = Federation(3, roster=True, key_setup="file")
    fed.run(1)
    fed.clients[100].set_input(np.linspace(-1, 1, 16), 2.0)
    return fed, fed.clients[100].to_state_bytes()


@given(st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_garbled_state_bytes_are_refused_with_typed_errors(ready_state, data: st.DataObject) -> None:
    fed, state = ready_state
    raw = bytearray(state)
    how = data.draw(st.sampled_from(["truncate", "extend", "flip"]), label="how")
    # the key's bytes are most of the state: draw positions outside them as often as inside
    head = 4 + 1 + 32 + 8 + 1 + len("node-0") + 1 + 32 + 1 + 4
    tail_start = len(raw) - 220
    position = data.draw(st.one_of(st.integers(0, head), st.integers(tail_start, len(raw) - 1), st.integers(0, len(raw) - 1)))
    if how == "truncate":
        bad = bytes(raw[:position])
    elif how == "extend":
        bad = bytes(raw) + data.draw(st.binary(min_size=1, max_size=8), label="extra")
    else:
        raw[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        bad = bytes(raw)
    try:
        client = CkksClient.from_state_bytes(bad, config=fed.config, identity=fed.identity(100))
    except FedcryptError:
        return
    assert how == "flip" and client.to_state_bytes() == bad


def test_state_needs_its_config_and_identity(ready_state) -> None:
    fed, state = ready_state
    with pytest.raises(ContextMismatchError, match="another round config"):
        CkksClient.from_state_bytes(state, config=CkksConfig(PARAMS, roster=fed.roster, min_contributions=3), identity=fed.identity(100))
    with pytest.raises(IdentityError, match="another identity"):
        CkksClient.from_state_bytes(state, config=fed.config, identity=fed.identity(101))
    with pytest.raises(IdentityError):
        CkksClient.from_state_bytes(state, config=fed.config)
    with pytest.raises(MalformedMessageError, match="bad magic"):
        CkksClient.from_state_bytes(b"XXXX" + state[4:], config=fed.config, identity=fed.identity(100))
    with pytest.raises(MalformedMessageError, match="unsupported version"):
        CkksClient.from_state_bytes(state[:4] + b"\x01" + state[5:], config=fed.config, identity=fed.identity(100))


# ---------------------------------------------------------------------------- no secret in a repr
def _secret_fragments(fed: Federation) -> list[str]:
    """Hex windows of every secret the federation's nodes hold: CKKS keys, X25519 keys, identities."""
    secrets_ = []
    for node, client in fed.clients.items():
        state = client.to_state_bytes()
        secrets_.append(state[-2000:-1000])  # inside the CKKS secret key (or the input)
        if fed.identity(node) is not None:
            secrets_.append(fed.identity(node).signing_key.private_bytes().reveal())
    return [s.hex()[i : i + 16] for s in secrets_ for i in range(0, min(len(s), 64) * 2 - 16, 8)]


def test_no_repr_shows_a_secret_a_blob_or_a_value(real) -> None:
    fed, found = real
    fragments = _secret_fragments(fed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        outcome = simulate(CkksConfig(PARAMS, max_weight=10.0), [np.full(8, 0.5)] * 2, [1.0, 2.0])
    objects: list[Any] = list(found["messages"]) + list(fed.clients.values()) + [
        found["server"], found["server"].report, fed.config, outcome, outcome.result, outcome.report,
    ]
    for obj in objects:
        for text in (repr(obj), str(obj)):
            assert not any(fragment in text for fragment in fragments), type(obj).__name__
            # no raw bytes at all (a bytes literal; a hex digest ending in "b" before its quote is not one)
            assert not re.search(r"(?<![0-9A-Za-z])b'", text) and "\\x" not in text, type(obj).__name__
            assert len(text) < 2000, type(obj).__name__
    decryption = next(m for m in found["messages"] if isinstance(m, Decryption))
    assert repr(float(decryption.values[0]))[:8] not in repr(decryption)
    with pytest.raises(TypeError, match="not pickled"):
        import pickle

        pickle.dumps(fed.clients[100])
