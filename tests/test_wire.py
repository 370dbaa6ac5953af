"""fedcrypt._wire: the one bounds-checked reader, and the decoders built on it.

The reader alone: every read, cap and end check raises the decoder's own typed error and
leaves the position where it was; a schema-driven codec round-trips and refuses every
truncation and extension (hypothesis). Then every pure-Python decoder that reads through it
(no SEAL or OpenFHE needed) refuses every truncation and extension of a valid encoding with
its own error.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt._wire import Reader
from fedcrypt.errors import FedcryptError, HEError, InvalidShare, MalformedMessageError

# ------------------------------------------------------------------------------ unit


def test_fixed_fields_are_big_endian() -> None:
    data = bytes([0xAB]) + struct.pack(">HIQ", 0x0102, 0x03040506, 0x0708090A0B0C0D0E)
    reader = Reader(data, "t")
    assert (reader.u8(), reader.u16(), reader.u32(), reader.u64()) == (0xAB, 0x0102, 0x03040506, 0x0708090A0B0C0D0E)
    assert reader.pos == reader.size == len(data) and reader.remaining == 0
    reader.expect_end()


def test_unpack_reads_any_layout() -> None:
    little = struct.Struct("<HQ")
    reader = Reader(little.pack(7, 9) + b"\x00\x05", "t")
    assert reader.unpack(little) == (7, 9)
    assert reader.unpack(">H") == (5,)


def test_take_copies_and_view_does_not() -> None:
    buffer = bytearray(b"abcdef")
    reader = Reader(buffer, "t")
    taken, viewed = reader.take(3), reader.view(3)
    buffer[0] = buffer[3] = ord("z")
    assert taken == b"abc" and isinstance(taken, bytes)
    assert bytes(viewed) == b"zef" and isinstance(viewed, memoryview)


def test_a_failed_read_names_the_decoder_and_moves_nothing() -> None:
    reader = Reader(b"\x01\x02\x03", "widget")
    for read in (reader.u32, reader.u64, lambda: reader.take(4), lambda: reader.view(9), lambda: reader.unpack(">I")):
        with pytest.raises(MalformedMessageError, match=r"^widget: truncated \(needed \d+ bytes, 3 left\)"):
            read()
        assert reader.pos == 0
    with pytest.raises(MalformedMessageError, match="truncated"):
        reader.take(-1)
    assert reader.u16() == 0x0102 and reader.remaining == 1


def test_length_prefixes_are_capped() -> None:
    for width, fmt in ((1, ">B"), (2, ">H"), (4, ">I"), (8, ">Q")):
        data = struct.pack(fmt, 3) + b"xyz"
        assert Reader(data, "t").sized(3, "field", width=width) == b"xyz"
        with pytest.raises(MalformedMessageError, match=r"^t: field of 3 bytes \(cap 2\)$"):
            Reader(data, "t").sized(2, "field", width=width)
    empty = struct.pack(">I", 0)
    with pytest.raises(MalformedMessageError, match="field of 0 bytes"):
        Reader(empty, "t").sized(5, "field")
    assert Reader(empty, "t").sized(5, "field", allow_empty=True) == b""
    reader = Reader(struct.pack(">I", 10) + b"short", "t")
    assert reader.length(10, "body") == 10
    with pytest.raises(MalformedMessageError, match="truncated"):
        reader.take(10)
    for read in (Reader.sized, Reader.sized_view):
        with pytest.raises(MalformedMessageError, match=r"^t: truncated inside body \(needed 10 bytes, 5 left\)$"):
            read(Reader(struct.pack(">I", 10) + b"short", "t"), 10, "body")
    buffer = bytearray(struct.pack(">H", 2) + b"ab")
    viewed = Reader(buffer, "t").sized_view(2, "body", width=2)
    buffer[2] = ord("z")
    assert bytes(viewed) == b"zb"
    with pytest.raises(ValueError, match="width"):
        Reader(empty, "t").length(5, "field", width=3)


def test_counts_are_checked_against_the_cap_and_the_data() -> None:
    assert Reader(struct.pack(">I", 2) + bytes(8), "t").count(4, 2) == 2
    with pytest.raises(MalformedMessageError, match=r"^t: count 3 exceeds the cap 2 or the data$"):
        Reader(struct.pack(">I", 3) + bytes(12), "t").count(4, 2)
    with pytest.raises(MalformedMessageError, match="entries 3 exceeds the cap 100 or the data"):
        Reader(struct.pack(">I", 3) + bytes(11), "t").count(4, 100, "entries")
    with pytest.raises(MalformedMessageError, match="exceeds the cap"):
        Reader(struct.pack(">I", 2**32 - 1), "t").count(1, 2**40)


def test_trailing_bytes_are_refused() -> None:
    reader = Reader(b"\x00\x01\x02", "t", start=1)
    assert reader.pos == 1
    with pytest.raises(MalformedMessageError, match=r"^t: 2 trailing bytes$"):
        reader.expect_end()


@pytest.mark.parametrize("error", [MalformedMessageError, InvalidShare, HEError])
def test_every_failure_is_the_decoders_error(error: type[FedcryptError]) -> None:
    reader = Reader(b"\x00", "t", error=error)
    with pytest.raises(error):
        reader.u16()
    with pytest.raises(error):
        reader.expect_end()
    assert isinstance(reader.error("x"), error) and str(reader.error("x")) == "t: x"


def test_inputs_and_misuse() -> None:
    with pytest.raises(TypeError, match="expected bytes, got str"):
        Reader("text", "t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start"):
        Reader(b"ab", "t", start=3)
    words = memoryview(np.array([1, 2], dtype=">u4"))  # a memoryview of another format reads as bytes
    assert Reader(words, "t").unpack(">II") == (1, 2)
    assert "secret" not in repr(Reader(b"secret", "t"))


# ------------------------------------------------------------------------------ schema codec
#: (kind, value): a field of a synthetic format; ``sizedN`` is a length prefix of N bytes
FIELDS = st.lists(
    st.one_of(
        st.tuples(st.just("u8"), st.integers(0, 2**8 - 1)),
        st.tuples(st.just("u16"), st.integers(0, 2**16 - 1)),
        st.tuples(st.just("u32"), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("u64"), st.integers(0, 2**64 - 1)),
        st.tuples(st.just("take"), st.binary(max_size=24)),
        st.tuples(st.sampled_from(["sized1", "sized2", "sized4", "sized8"]), st.binary(min_size=1, max_size=24)),
        st.tuples(st.just("count"), st.lists(st.integers(0, 2**32 - 1), max_size=6).map(tuple)),
    ),
    min_size=1,
    max_size=10,
)
_FIXED = {"u8": ">B", "u16": ">H", "u32": ">I", "u64": ">Q"}
CAP = 24


def _encode(fields: list[tuple[str, Any]]) -> bytes:
    out = []
    for kind, value in fields:
        if kind in _FIXED:
            out.append(struct.pack(_FIXED[kind], value))
        elif kind == "take":
            out.append(value)
        elif kind.startswith("sized"):
            out.append(struct.pack(_FIXED[f"u{8 * int(kind[5:])}"], len(value)) + value)
        else:
            out.append(struct.pack(f">I{len(value)}I", len(value), *value))
    return b"".join(out)


def _decode(data: bytes, fields: list[tuple[str, Any]], error: type[FedcryptError]) -> list[Any]:
    reader = Reader(data, "schema", error=error)
    values: list[Any] = []
    for kind, value in fields:
        if kind in _FIXED:
            values.append(getattr(reader, kind)())
        elif kind == "take":
            values.append(reader.take(len(value)))
        elif kind.startswith("sized"):
            values.append(reader.sized(CAP, kind, width=int(kind[5:])))
        else:
            values.append(reader.unpack(f">{reader.count(4, 6)}I"))
    reader.expect_end()
    return values


errors = st.sampled_from([MalformedMessageError, InvalidShare, HEError])


@settings(max_examples=200)
@given(FIELDS, errors)
def test_schema_round_trip(fields: list[tuple[str, Any]], error: type[FedcryptError]) -> None:
    assert _decode(_encode(fields), fields, error) == [value for _, value in fields]


@settings(max_examples=200)
@given(FIELDS, errors, st.data())
def test_schema_truncation_and_extension_raise_the_typed_error(fields, error, data) -> None:
    encoded = _encode(fields)
    if encoded:
        cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
        with pytest.raises(error):
            _decode(encoded[:cut], fields, error)
    extra = data.draw(st.binary(min_size=1, max_size=16), label="extra")
    with pytest.raises(error):
        _decode(encoded + extra, fields, error)


@settings(max_examples=200)
@given(FIELDS, errors, st.binary(max_size=64))
def test_schema_decoder_raises_only_the_typed_error(fields, error, garbage: bytes) -> None:
    try:
        _decode(garbage, fields, error)
    except error:
        pass


# ------------------------------------------------------------------------------ the decoders on it
def _decoders() -> dict[str, tuple[bytes, Callable[[bytes], object]]]:
    """One valid encoding and its strict decoder for every pure-Python decoder on the reader."""
    from fedcrypt.he.blob import BlobHeader, BlobKind, decode_blob, encode_blob
    from fedcrypt.he.params import CkksParams
    from fedcrypt.he.threshold import (
        DecryptionShare,
        KeyBackupMessage,
        KeyShareMessage,
        RosterMessage,
        ThresholdParams,
    )
    from fedcrypt.secagg import MaskedInput, UnmaskRequest
    from fedcrypt.vectors import TensorSpec

    ckks = CkksParams(8192, (60, 40, 60), 40)
    fingerprint = bytes(range(32))
    header = BlobHeader(BlobKind.UPLOAD, fingerprint, 9000, None, 1, 1.0, 2)
    threshold = ThresholdParams(16384, 60, 50, 0, 3, flooding=False)
    backup = ThresholdParams(16384, 60, 50, 0, 3, flooding=False, recovery_threshold=2)
    session = bytes(range(32, 64))
    spec = TensorSpec.from_tensors({"a.lora_A": np.zeros((4, 8), np.float32), "b": np.zeros(3, np.float16)})
    return {
        "TensorSpec": (spec.to_bytes(), TensorSpec.from_bytes),
        "CkksParams": (ckks.to_bytes(), CkksParams.from_bytes),
        "encrypted vector": (
            encode_blob(header, [b"c" * 40, b"d" * 7]),
            lambda b: decode_blob(b, ckks, fingerprint, kinds=(BlobKind.UPLOAD,)),
        ),
        "SecAgg MaskedInput": (
            MaskedInput(3, 1, np.arange(5, dtype=np.uint32), bytes(32), (2, 4), b"s" * 64).to_bytes(),
            MaskedInput.from_bytes,
        ),
        "SecAgg UnmaskRequest": (
            UnmaskRequest(3, 1, (0, 1), (2,), ((0, b"g" * 64),), ((0, (2,), b"a" * 64),)).to_bytes(),
            UnmaskRequest.from_bytes,
        ),
        "ThresholdParams": (threshold.to_bytes(), ThresholdParams.from_bytes),
        "threshold key share": (
            KeyShareMessage(session, 1, b"k" * 50, b"t" * 32).to_bytes(),
            lambda b: KeyShareMessage.from_bytes(b, backup),
        ),
        "threshold decryption share": (
            DecryptionShare(session, 2, bytes(32), (b"p" * 9, b"q" * 3)).to_bytes(),
            lambda b: DecryptionShare.from_bytes(b, threshold, ciphertext_count=2),
        ),
        "threshold roster": (
            RosterMessage(session, (b"a" * 32, b"b" * 32, b"c" * 32)).to_bytes(),
            lambda b: RosterMessage.from_bytes(b, backup),
        ),
        "threshold key backup": (
            KeyBackupMessage(session, 0, 1, 0, b"e" * 60).to_bytes(),
            lambda b: KeyBackupMessage.from_bytes(b, backup),
        ),
    }


DECODERS = _decoders()


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_valid_encodings_decode_and_re_encode(name: str) -> None:
    encoded, decode = DECODERS[name]
    decoded = decode(encoded)
    if hasattr(decoded, "to_bytes"):
        assert decoded.to_bytes() == encoded


@settings(max_examples=60)
@given(name=st.sampled_from(sorted(DECODERS)), data=st.data())
def test_any_truncation_or_extension_of_a_valid_encoding_is_a_malformed_message(name: str, data) -> None:
    encoded, decode = DECODERS[name]
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(MalformedMessageError):
        decode(encoded[:cut])
    extra = data.draw(st.binary(min_size=1, max_size=16), label="extra")
    with pytest.raises(MalformedMessageError):
        decode(encoded + extra)
