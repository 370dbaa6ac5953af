"""Codecs of the threshold round: every message (and the session record) round-trips, has one
encoding, and refuses every truncation and extension (hypothesis); any bytes decode to a
message or a MalformedMessageError. The node's state bytes round-trip at every key state and
are strict. No secret, blob or key reaches a repr. The codec properties run without OpenFHE;
the state and repr tests need it (CPython 3.10; skipped elsewhere, see conftest.py)."""

from __future__ import annotations

import pickle
import re
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import ContextMismatchError, FedcryptError, HonestButCuriousWarning, IdentityError, MalformedMessageError
from fedcrypt.he.threshold.round import (
    BackupReply,
    BackupRequest,
    Confirmation,
    ConfirmedUpload,
    ConfirmRequest,
    DecryptRequest,
    EncryptRequest,
    JointReply,
    JointRequest,
    KeygenReply,
    KeygenRequest,
    KeyLink,
    KeyState,
    PartialDecryption,
    RecoverRequest,
    ReleaseReply,
    ReleaseRequest,
    SessionRecord,
    SignedBackup,
    Stage,
    SumAck,
    SumPart,
    ThresholdClient,
    ThresholdConfig,
    Upload,
    decode_message,
    simulate,
)
from fedcrypt.he.threshold.round import _state
from fedcrypt.identity import NodeIdentity

sys.path.insert(0, str(Path(__file__).parent))

from _round_harness import M, Federation, params  # noqa: E402

#: a bytes literal in a repr (a quoted member name ending in "b", or a hex digest ending in "b", is not one)
BYTES_LITERAL = re.compile(r"(?:^|[\s(=\[{,:])b'")

# ---------------------------------------------------------------------------- strategies
ids = st.integers(0, 2**64 - 1)
parties = st.integers(0, 1023)
members = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", max_size=64)
digests = st.binary(min_size=32, max_size=32)
signatures = st.one_of(st.just(b""), st.binary(min_size=64, max_size=64))
transports = st.one_of(st.just(b""), st.binary(min_size=32, max_size=32))
blobs = st.binary(max_size=48)
nonempty = st.binary(min_size=1, max_size=48)
committees = st.lists(ids, max_size=4).map(tuple)

links = st.builds(KeyLink, members, digests, digests, transports, signatures)
backups = st.builds(SignedBackup, nonempty, members, signatures)
backup_lists = st.lists(backups, max_size=3).map(tuple)
keygen_replies = st.builds(KeygenReply, ids, ids, links, nonempty)
uploads = st.builds(Upload, ids, ids, blobs, digests, members, signatures)
confirmed_uploads = st.lists(st.builds(ConfirmedUpload, uploads, signatures), max_size=3).map(tuple)
entries = st.lists(st.tuples(members, ids, digests), max_size=3).map(tuple)
part_indexes = st.integers(0, (1 << 20) - 1)
sum_parts = st.one_of(
    st.builds(SumPart, ids, ids, st.just(0), st.lists(st.tuples(members, ids, digests), min_size=1, max_size=3).map(tuple), confirmed_uploads),
    st.builds(SumPart, ids, ids, st.integers(1, (1 << 20) - 1), st.just(()), confirmed_uploads),
)

messages = st.one_of(
    st.builds(KeygenRequest, ids, ids, digests, parties, committees, st.one_of(st.none(), keygen_replies)),
    keygen_replies,
    st.builds(JointRequest, ids, ids, digests, committees, st.lists(links, max_size=3).map(tuple), nonempty),
    st.builds(JointReply, ids, ids, backup_lists),
    st.builds(BackupRequest, ids, ids, backup_lists),
    st.builds(BackupReply, ids, ids),
    st.builds(EncryptRequest, ids, ids, digests),
    uploads,
    st.builds(ConfirmRequest, ids, ids, entries),
    st.builds(Confirmation, ids, ids, members, st.binary(min_size=64, max_size=64)),
    st.builds(DecryptRequest, ids, ids, blobs, confirmed_uploads, part_indexes),
    st.builds(PartialDecryption, ids, ids, blobs),
    st.builds(ReleaseRequest, ids, ids, parties, parties),
    st.builds(ReleaseReply, ids, ids, backups),
    st.builds(RecoverRequest, ids, ids, parties, backup_lists, blobs),
    sum_parts,
    st.builds(SumAck, ids, ids, part_indexes),
)


@settings(max_examples=150, deadline=None)
@given(message=messages, data=st.data())
def test_every_message_round_trips_has_one_encoding_and_refuses_truncation_and_extension(message: Any, data: Any) -> None:
    raw = message.to_bytes()
    assert type(message).from_bytes(raw) == message
    assert decode_message(raw) == message
    assert decode_message(raw).to_bytes() == raw
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    with pytest.raises(MalformedMessageError):
        decode_message(raw[:cut])
    with pytest.raises(MalformedMessageError):
        decode_message(raw + data.draw(st.binary(min_size=1, max_size=8), label="extra"))
    text = repr(message)
    assert "\\x" not in text and not BYTES_LITERAL.search(text)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200), kind=st.integers(0, 20))
def test_any_bytes_decode_to_a_message_or_a_typed_error(raw: bytes, kind: int) -> None:
    for data in (raw, b"FCTM\x01" + bytes([kind]) + raw):
        try:
            message = decode_message(data)
        except MalformedMessageError:
            continue
        assert message.to_bytes() == data


@settings(max_examples=100, deadline=None)
@given(
    session=digests,
    committee=st.lists(ids, min_size=2, max_size=5, unique=True).map(tuple),
    joint=nonempty,
    named=st.booleans(),
    data=st.data(),
)
def test_the_session_record_round_trips_and_is_strict(session: bytes, committee: tuple, joint: bytes, named: bool, data: Any) -> None:
    names = tuple(f"m{i}" for i in range(len(committee))) if named else ("",) * len(committee)
    record = SessionRecord(session, committee, names, joint)
    raw = record.to_bytes()
    assert SessionRecord.from_bytes(raw) == record
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MalformedMessageError):
        SessionRecord.from_bytes(raw[:cut])
    with pytest.raises(MalformedMessageError):
        SessionRecord.from_bytes(raw + b"\x00")
    with pytest.raises(ValueError, match="repeats"):
        SessionRecord(session, committee[:1] * 2, names[:2], joint)


def test_constructors_refuse_fields_no_decoder_would_build() -> None:
    with pytest.raises(ValueError):
        KeyLink("m", b"\x00" * 31, b"\x00" * 32)
    with pytest.raises(ValueError):
        SignedBackup(b"")
    with pytest.raises(ValueError):
        KeygenRequest(0, 0, b"\x00" * 32, 1024, ())
    with pytest.raises(ValueError, match="committee node"):
        KeygenRequest(0, 0, b"\x00" * 32, 0, (True,))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        KeygenRequest(0, 0, b"\x00" * 32, 0, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Upload(0, 2**64, b"", b"\x00" * 32)
    with pytest.raises(ValueError, match="only part 0"):
        SumPart(0, 0, 1, (("m", 1, b"\x00" * 32),), ())
    with pytest.raises(ValueError, match="only part 0"):
        SumPart(0, 0, 0, (), ())
    with pytest.raises(ValueError, match="part index"):
        SumAck(0, 0, 1 << 20)
    with pytest.raises(ValueError, match="part index"):
        DecryptRequest(0, 0, part=-1)


# ---------------------------------------------------------------------------- real nodes
@pytest.fixture(scope="module")
def states(openfhe: Any) -> dict[str, Any]:
    """A roster federation (2-of-3) and one node's state bytes at every key state and guard."""
    fed = Federation(roster=True, seed=21)
    node = 101
    found: dict[str, bytes] = {"no key": fed.clients[node].to_state_bytes()}
    server = fed.server(1)
    requests = server.begin()
    while requests:
        stage = server.stage
        for target in sorted(requests):
            if stage is Stage.DECRYPT and target == 102:
                continue
            client = fed.clients[target]
            if stage is Stage.ENCRYPT:
                client.set_input(fed.inputs[target], fed.weights[target])
                if target == node:
                    found["input"] = client.to_state_bytes()
            server.receive(client.handle(requests[target]), sender=target)
            if target == node:
                found[f"after {stage.name}"] = client.to_state_bytes()
        requests = server.end_stage()
    assert {"after KEYGEN", "after JOINT", "after BACKUP", "after CONFIRM", "after DECRYPT", "after RELEASE"} <= set(found)
    stand_in = fed.clients[100].to_state_bytes()  # it stood in for 102
    return {"fed": fed, "node": node, "found": found, "stand_in": stand_in, "server": server}


def test_state_fields_are_the_slots(openfhe: Any) -> None:
    assert _state.FIELDS == set(ThresholdClient.__slots__)


def test_state_bytes_round_trip_at_every_key_state(states: dict[str, Any]) -> None:
    fed, node = states["fed"], states["node"]
    seen = set()
    for label, raw in list(states["found"].items()) + [("stand-in", states["stand_in"])]:
        who = 100 if label == "stand-in" else node
        client = ThresholdClient.from_state_bytes(raw, config=fed.config, identity=fed.identity(who))
        assert client.to_state_bytes() == raw, label
        seen.add(client.key_state)
    assert seen == set(KeyState)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_state_bytes_refuse_truncation_extension_and_garbled_fields(states: dict[str, Any], data: Any) -> None:
    fed, node = states["fed"], states["node"]
    label = data.draw(st.sampled_from(sorted(states["found"])), label="state")
    raw = states["found"][label]
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    with pytest.raises(MalformedMessageError):
        ThresholdClient.from_state_bytes(raw[:cut], config=fed.config, identity=fed.identity(node))
    with pytest.raises(MalformedMessageError):
        ThresholdClient.from_state_bytes(raw + b"\x00", config=fed.config, identity=fed.identity(node))
    # a flip outside the key holder's own (unauthenticated, privately stored) bytes: the head or the tail
    holder_end = 4 + 1 + 32 + 8 + 1 + len("node-1") + 1 + 32 + 1 + 4 + int.from_bytes(raw[86:90], "big")
    where = data.draw(st.one_of(st.integers(4, 85), st.integers(holder_end, len(raw) - 1)), label="flip")
    garbled = bytearray(raw)
    garbled[where] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    try:
        client = ThresholdClient.from_state_bytes(bytes(garbled), config=fed.config, identity=fed.identity(node))
    except FedcryptError:
        return
    assert client.to_state_bytes() == bytes(garbled)  # a flipped round id or digest is still a canonical state


def test_state_bytes_need_the_same_config_and_identity(states: dict[str, Any]) -> None:
    fed, node = states["fed"], states["node"]
    raw = states["found"]["after DECRYPT"]
    other = ThresholdConfig(fed.config.params, min_contributions=3, max_weight=M, roster=fed.roster)
    with pytest.raises(ContextMismatchError):
        ThresholdClient.from_state_bytes(raw, config=other, identity=fed.identity(node))
    with pytest.raises(IdentityError):
        ThresholdClient.from_state_bytes(raw, config=fed.config, identity=fed.identity(100))
    with pytest.raises(IdentityError):
        ThresholdClient.from_state_bytes(raw, config=fed.config, identity=None)
    with pytest.raises(IdentityError):
        ThresholdClient.from_state_bytes(raw, config=fed.config, identity=NodeIdentity.generate())


def _secret_fragments(fed: Federation) -> list[str]:
    """Hex windows of every secret the nodes hold: key shares, Shamir pieces, transport and identity keys."""
    secrets_: list[bytes] = []
    for node, client in fed.clients.items():
        holder = client._holder
        secret = holder._secret_bytes.reveal()
        secrets_.append(secret[len(secret) // 2 : len(secret) // 2 + 64])
        secrets_ += [piece.reveal()[-64:] for piece in holder._backups.values()]
        secrets_.append(holder._transport.private_bytes().reveal())
        secrets_.append(fed.identity(node).signing_key.private_bytes().reveal())
    return [s.hex()[i : i + 16] for s in secrets_ for i in range(0, len(s) * 2 - 16, 8)]


def test_no_repr_shows_a_secret_a_key_a_blob_or_a_share(states: dict[str, Any]) -> None:
    fed = Federation(roster=True, seed=22)
    server, log = fed.run(1, skip={Stage.DECRYPT: {101}})
    fragments = _secret_fragments(fed)
    assert len(fragments) > 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        outcome = simulate(ThresholdConfig(params(2), max_weight=M), [np.full(8, 0.5)] * 3, [1.0, 2.0, 3.0])
    found = [m for by_node in list(log.requests.values()) + list(log.replies.values()) for m in by_node.values()]
    objects: list[Any] = found + list(fed.clients.values()) + [
        server, server.report, server.result, fed.config, SessionRecord.from_bytes(server.result.session),
        outcome, outcome.result, outcome.report, *[c._holder for c in fed.clients.values()],
    ]
    assert {type(m).__name__ for m in found} >= {"KeygenRequest", "JointReply", "BackupRequest", "RecoverRequest", "PartialDecryption"}
    for obj in objects:
        for text in (repr(obj), str(obj)):
            assert not any(fragment in text for fragment in fragments), type(obj).__name__
            assert not BYTES_LITERAL.search(text) and "\\x" not in text, type(obj).__name__
            assert len(text) < 2000, type(obj).__name__
    assert repr(float(server.result.mean[0]))[:8] not in repr(server.result)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(fed.clients[100])
    with pytest.raises(TypeError):
        pickle.dumps(fed.clients[100]._holder)
    assert replace(log.requests[Stage.ENCRYPT][100]) == log.requests[Stage.ENCRYPT][100]
