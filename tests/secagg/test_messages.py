"""Message encodings: canonical round trips and a strict decoder (caps checked before allocation)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.crypto import SHARE_BYTES
from fedcrypt.errors import MalformedMessageError
from fedcrypt.secagg import (
    AdvertiseKeys,
    ConsistencySignature,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    ShareBundle,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode_message,
)
from fedcrypt.secagg.messages import HEADER, SHARE_CIPHERTEXT_BYTES, VERSION

rounds = st.integers(0, 2**64 - 1)
ids = st.integers(0, 65533)
id_sets = st.lists(ids, max_size=12, unique=True).map(lambda xs: tuple(sorted(xs)))


def pairs(size: int):
    return st.lists(st.tuples(ids, st.binary(min_size=size, max_size=size)), max_size=6, unique_by=lambda p: p[0]).map(
        lambda xs: tuple(sorted(xs))
    )


@st.composite
def adverts(draw, round_id=None):
    return AdvertiseKeys(
        draw(rounds) if round_id is None else round_id,
        draw(ids),
        draw(st.binary(min_size=32, max_size=32)),
        draw(st.binary(min_size=32, max_size=32)),
        draw(st.binary(min_size=32, max_size=32)),
        draw(st.sampled_from([b"", b"s" * 64])),
    )


@st.composite
def directories(draw):
    round_id = draw(rounds)
    entries = draw(st.lists(adverts(round_id=round_id), max_size=5, unique_by=lambda a: a.sender))
    return KeyDirectory(round_id, draw(ids), tuple(sorted(entries, key=lambda a: a.sender)))


@st.composite
def masked_inputs(draw):
    dtype = draw(st.sampled_from([np.uint32, np.uint64]))
    values = draw(st.lists(st.integers(0, int(np.iinfo(dtype).max)), max_size=20))
    return MaskedInput(draw(rounds), draw(ids), np.array(values, dtype=dtype), draw(st.binary(min_size=32, max_size=32)))


messages = st.one_of(
    adverts(),
    directories(),
    st.builds(EncryptedShares, rounds, ids, pairs(SHARE_CIPHERTEXT_BYTES)),
    st.builds(ShareBundle, rounds, ids, pairs(SHARE_CIPHERTEXT_BYTES)),
    masked_inputs(),
    st.builds(SurvivorList, rounds, ids, id_sets),
    st.builds(ConsistencySignature, rounds, ids, st.binary(min_size=64, max_size=64)),
    st.builds(UnmaskRequest, rounds, ids, id_sets, id_sets, pairs(64)),
    st.builds(UnmaskShares, rounds, ids, pairs(SHARE_BYTES), pairs(SHARE_BYTES)),
)


@settings(max_examples=150)
@given(messages)
def test_round_trip_is_canonical(message) -> None:
    data = message.to_bytes()
    back = type(message).from_bytes(data)
    assert back == message
    assert back.to_bytes() == data
    assert decode_message(data) == message


@settings(max_examples=100)
@given(messages, st.data())
def test_truncated_or_extended_bytes_are_refused(message, data) -> None:
    encoded = message.to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(MalformedMessageError):
        type(message).from_bytes(encoded[:cut])
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(MalformedMessageError):
        type(message).from_bytes(encoded + extra)


@settings(max_examples=60)
@given(messages)
def test_header_fields_are_checked(message) -> None:
    encoded = bytearray(message.to_bytes())
    for position, value in ((0, ord("X")), (4, 1), (5, 0 if encoded[5] != 0 else 1)):  # version 1: before attestations
        bad = bytearray(encoded)
        bad[position] = value
        with pytest.raises(MalformedMessageError):
            type(message).from_bytes(bytes(bad))
    with pytest.raises(MalformedMessageError, match="unknown message type"):
        decode_message(bytes(encoded[:5]) + b"\x63" + bytes(encoded[6:]))


def test_oversized_counts_are_refused_before_allocating() -> None:
    header = HEADER.pack(b"FCSA", VERSION, 3, 0, 1)
    with pytest.raises(MalformedMessageError, match="exceeds the cap"):
        EncryptedShares.from_bytes(header + struct.pack(">I", 2**32 - 1))
    with pytest.raises(MalformedMessageError, match="exceeds the cap"):
        SurvivorList.from_bytes(HEADER.pack(b"FCSA", VERSION, 6, 0, 1) + struct.pack(">I", 1000) + b"\x00" * 8)
    huge = HEADER.pack(b"FCSA", VERSION, 5, 0, 1) + bytes(32) + bytes(5) + struct.pack(">BQ", 32, 2**62)
    with pytest.raises(MalformedMessageError, match="exceeds the cap"):
        MaskedInput.from_bytes(huge)
    short = HEADER.pack(b"FCSA", VERSION, 5, 0, 1) + bytes(32) + bytes(5) + struct.pack(">BQ", 32, 10) + b"\x00" * 39
    with pytest.raises(MalformedMessageError, match="payload bytes"):
        MaskedInput.from_bytes(short)
    with pytest.raises(MalformedMessageError, match="expected length"):
        MaskedInput.from_bytes(MaskedInput(0, 1, np.zeros(4, np.uint32), bytes(32)).to_bytes(), expected_length=5)
    with pytest.raises(MalformedMessageError, match="bits"):
        MaskedInput.from_bytes(HEADER.pack(b"FCSA", VERSION, 5, 0, 1) + bytes(32) + bytes(5) + struct.pack(">BQ", 16, 0))


def test_non_canonical_id_order_is_refused() -> None:
    good = SurvivorList(0, 1, (2, 5)).to_bytes()
    swapped = good[: HEADER.size + 4] + struct.pack(">II", 5, 2)
    with pytest.raises(MalformedMessageError, match="strictly increasing"):
        SurvivorList.from_bytes(swapped)
    with pytest.raises(ValueError, match="strictly increasing"):
        SurvivorList(0, 1, (5, 2))


def test_constructors_validate_fields() -> None:
    with pytest.raises(ValueError, match="cipher_public_key must be 32 bytes"):
        AdvertiseKeys(0, 1, b"short", b"k" * 32, b"c" * 32)
    with pytest.raises(ValueError, match="party id"):
        SurvivorList(0, 70000, ())
    with pytest.raises(TypeError, match="uint32 or uint64"):
        MaskedInput(0, 1, np.zeros(3, np.int32), bytes(32))
    with pytest.raises(TypeError):
        decode_message("text")  # type: ignore[arg-type]
