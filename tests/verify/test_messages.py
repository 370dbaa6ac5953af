"""Every verify message: canonical round trips, strict decoding of damaged bytes (hypothesis)."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import MalformedMessageError
from fedcrypt.verify import (
    HELPER,
    AggregateRequest,
    AggregateShare,
    LeaderPrep,
    PrepareEntry,
    PrepareRequest,
    PrepareResponse,
    PrepareResult,
    Report,
    Status,
    UploadRequest,
    decode_message,
)
from fedcrypt.verify.messages import HEADER, SEALED_BYTES

from ._kit import CONFIG, Round, config


def _messages():
    """One real message of every type, from a round run to the end."""
    r = Round.start(2)
    report = r.report(0)
    r.leader.receive(report)
    r.leader.receive(r.report(1))
    batch = r.leader.end_stage()[HELPER]
    response = r.helper.handle(batch)
    r.leader.receive(response)
    agg = r.leader.end_stage()[HELPER]
    share = r.helper.handle(agg)
    return [r.requests[0], report, batch, response, agg, share]


MESSAGES = _messages()
IDS = [type(m).__name__ for m in MESSAGES]


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_round_trip_is_canonical(message):
    data = message.to_bytes()
    back = decode_message(data, CONFIG)
    assert back == message and back.to_bytes() == data
    assert type(message).__name__ in repr(message)


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_truncated_extended_or_foreign_bytes_are_malformed(message):
    data = message.to_bytes()
    bads = [data[:-1], data + b"\x00", b"", b"XXXX" + data[4:], data[:4] + b"\x02" + data[5:], data[:5] + b"\x07" + data[6:]]
    if len(data) > HEADER.size:
        bads.append(data[: HEADER.size])
    for bad in bads:
        with pytest.raises(MalformedMessageError):
            decode_message(bad, CONFIG)
    if isinstance(message, (Report, PrepareResponse, AggregateRequest, AggregateShare)):
        with pytest.raises(MalformedMessageError):  # lengths come from the config
            decode_message(data, config(dimension=CONFIG.dimension + 1))


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_damage_decodes_to_a_valid_message_or_is_malformed(message, data):
    raw = bytearray(message.to_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    blob = bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw)
    try:
        back = decode_message(blob, CONFIG)
    except MalformedMessageError:
        return
    assert back.to_bytes() == blob  # accepted bytes are the canonical encoding of what they decode to


def _set_u32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack(">I", value) + data[offset + 4 :]


@pytest.mark.parametrize("message", [m for m in MESSAGES if hasattr(m, "entries") or hasattr(m, "results")], ids=lambda m: type(m).__name__)
def test_counts_beyond_the_cap_or_the_bytes_are_malformed(message):
    data = message.to_bytes()
    for value in (CONFIG.max_reports + 1, 0xFFFFFFFF, 3):
        with pytest.raises(MalformedMessageError):
            decode_message(_set_u32(data, HEADER.size, value), CONFIG)


def test_field_elements_status_and_flags_are_checked():
    report, response, agg, share = MESSAGES[1], MESSAGES[3], MESSAGES[4], MESSAGES[5]
    data = report.to_bytes()
    start = HEADER.size + 16 + 128
    with pytest.raises(MalformedMessageError):  # the leader share's first element >= q
        decode_message(data[:start] + b"\xff" * 5 + data[start + 5 :], CONFIG)
    data = share.to_bytes()
    with pytest.raises(MalformedMessageError):
        decode_message(data[:-5] + b"\xff" * 5, CONFIG)
    data = response.to_bytes()
    status_at = HEADER.size + 4 + 8 + 16
    with pytest.raises(MalformedMessageError):  # unknown status
        decode_message(data[:status_at] + b"\x09" + data[status_at + 1 :], CONFIG)
    with pytest.raises(MalformedMessageError):  # status SEAL with a share following: trailing bytes
        decode_message(data[:status_at] + b"\x01" + data[status_at + 1 :], CONFIG)
    data = agg.to_bytes()
    with pytest.raises(MalformedMessageError):  # accepted flag 2
        decode_message(data[:status_at] + b"\x02" + data[status_at + 1 :], CONFIG)
    with pytest.raises(MalformedMessageError):  # party field must be 0
        decode_message(data[: HEADER.size - 1] + b"\x01" + data[HEADER.size :], CONFIG)


def test_constructors_refuse_what_the_wire_cannot_carry():
    with pytest.raises(ValueError):
        UploadRequest(-1, 0)
    with pytest.raises(ValueError):
        UploadRequest(0, True)
    with pytest.raises(ValueError):
        Report(0, 0, bytes(15), bytes(128), b"", bytes(SEALED_BYTES))
    with pytest.raises(ValueError):
        PrepareResult(0, bytes(16), Status.OK)
    with pytest.raises(ValueError):
        PrepareResult(0, bytes(16), Status.SEAL, b"x")
    with pytest.raises(TypeError):
        PrepareRequest(0, 0, [PrepareEntry(0, bytes(16), bytes(128), bytes(SEALED_BYTES))])
    with pytest.raises(TypeError):
        LeaderPrep(0, bytes(16), 1, b"x")
    with pytest.raises(ValueError):
        AggregateShare(0, -1, bytes(32), b"")
    empty = PrepareResponse(3, 1, ())
    assert decode_message(empty.to_bytes(), CONFIG) == empty
    assert dataclasses.replace(empty, batch=2).party == 2
