"""Regression tests for break 4 of the outside security review ("one upload kills or
starves the server"). Each input is one a peer can send; each must end in a typed
:class:`~fedcrypt.errors.FedcryptError`.

The SEAL inputs run in a child process (tests/fuzz/_native_child.py) with an address-space
limit, so an abort (SIGABRT) or an unbounded allocation is a failed test, not a lost run.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from fedcrypt.errors import FedcryptError, MalformedMessageError

from . import _seal_format as fmt
from ._native import CkksChild, ckks_setup

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ckks():
    pytest.importorskip("tenseal")
    setup = ckks_setup()
    child = CkksChild(setup)
    yield setup, child
    child.close()


def _rewrap(setup, blob_name: str, ct: bytes) -> bytes:
    """The corpus blob with its (single) ciphertext replaced and its size prefix fixed."""
    from fedcrypt.he.blob import HEADER_BYTES

    blob = setup.corpus[blob_name]
    return blob[:HEADER_BYTES] + struct.pack(">I", len(ct)) + ct


def _seeded_upload_ct(setup) -> bytes:
    from fedcrypt.he.blob import HEADER_BYTES

    blob = setup.corpus["upload"]
    return fmt.plain(blob[HEADER_BYTES + 4 :])


@pytest.mark.parametrize("decoder", ["EncryptedSum.add", "KeyOwner.decrypt"])
def test_nested_header_version_2_compression_0xff_is_typed(ckks, decoder: str) -> None:
    """Review: 'a seeded ciphertext whose nested SEAL header says version 2 with compression
    mode 0xff aborts the process (SIGABRT)'. The nested header is the seed's
    (UniformRandomGeneratorInfo) inside a zstd-compressed ciphertext, as SEAL wrote them by
    default. Before the fix: the child dies of SIGABRT (std::__ios_failure in a noexcept path)."""
    setup, child = ckks
    ct = _seeded_upload_ct(setup)
    seed_header = fmt.headers_of(ct)[2]
    for compress in (fmt.zstd, bytes):
        bad = compress(fmt.put_header(ct, seed_header, major=2, compr=0xFF))
        result = child.run(decoder, _rewrap(setup, "upload", bad))
        assert result == ("typed", "MalformedMessageError"), (compress.__name__, result)


@pytest.mark.parametrize("decoder", ["EncryptedSum.add", "KeyOwner.decrypt"])
@pytest.mark.parametrize("at", ["outer", "array", "prng"])
def test_any_compressed_or_foreign_version_header_is_typed(ckks, decoder: str, at: str) -> None:
    setup, child = ckks
    ct = _seeded_upload_ct(setup)
    offset = fmt.headers_of(ct)[("outer", "array", "prng").index(at)]
    for fields in ({"compr": 0xFF}, {"compr": 2}, {"compr": 1}, {"major": 2}, {"major": 3, "minor": 4}, {"size": 1 << 62}):
        result = child.run(decoder, _rewrap(setup, "upload", fmt.put_header(ct, offset, **fields)))
        assert result == ("typed", "MalformedMessageError"), (fields, result)


@pytest.mark.parametrize("decoder", ["EncryptedSum.add", "KeyOwner.decrypt"])
def test_ciphertext_with_zero_polynomials_is_typed(ckks, decoder: str) -> None:
    """Review: 'a ciphertext with 0 polynomials raises an untyped IndexError'."""
    setup, child = ckks
    ct = _seeded_upload_ct(setup)
    zero = fmt.put(ct, fmt.CT_SIZE, "Q", 0)
    # also with an empty coefficient array and no seed: a consistent zero-polynomial object
    empty = zero[: fmt.CT_ARRAY] + fmt.HEADER.pack(0xA15E, 16, ct[3], ct[4], 0, 0, 24) + struct.pack("<Q", 0)
    empty = fmt.put_header(empty, 0, size=len(empty))
    for blob in (zero, empty):
        result = child.run(decoder, _rewrap(setup, "upload", blob))
        assert result == ("typed", "MalformedMessageError"), result


def _public_context(setup, num_clients: int, clip: float) -> bytes:
    from fedcrypt.he import CkksParams

    params = CkksParams.from_bytes(setup.corpus["params"])
    raw = bytearray(params.to_bytes())
    count = raw[9]
    struct.pack_into(">I", raw, 10 + count + 2, num_clients)
    struct.pack_into(">d", raw, 16 + count, clip)
    public = setup.corpus["public"]
    return public[:8] + bytes(raw) + public[8 + len(raw) :]


@pytest.mark.parametrize("num_clients", [2**32 - 1, 50_000_000])
def test_public_context_claiming_many_clients_allocates_nothing(ckks, num_clients: int) -> None:
    """Review: 'an 83-byte public context with num_clients = 2^32-1 and a tiny clip makes the
    precision guard allocate [1.0] * num_clients (MemoryError; 5e7 is accepted after 7.7 s
    and 1.25 GiB)'. The child runs under a 1 GiB address-space limit beyond its baseline."""
    setup, child = ckks
    data = _public_context(setup, num_clients, 1e-30)
    assert len(data) == 84  # 83 before the packing byte
    result = child.run("AggregatorContext.from_bytes", data)
    assert result == ("typed", "MalformedMessageError"), result


def test_precision_guard_is_closed_form_and_capped() -> None:
    from fedcrypt.he import CkksParams
    from fedcrypt.he.params import MAX_CLIENTS

    import inspect

    params = CkksParams.preset("weighted", num_clients=64, clip=0.5, max_weight=4.0)
    exact = {"flooded": False} if "flooded" in inspect.signature(params.mean_error_bound).parameters else {}
    assert params.unit_mean_error_bound() == pytest.approx(
        params.mean_error_bound([1.0] * 64, float_weights=True, **exact), rel=1e-12
    )
    CkksParams.preset("compact", num_clients=MAX_CLIENTS, clip=1e-9, precision=1.0)
    with pytest.raises(ValueError, match=r"num_clients must be in \[1, 1048576\]"):
        CkksParams.preset("compact", num_clients=MAX_CLIENTS + 1, clip=1e-9, precision=1.0)


@pytest.mark.parametrize("clip", [5e-324, 1e-320, 2.2e-308, math.nan, math.inf, -math.inf, 1e308, -1.0, 0.0, -0.0])
def test_load_config_with_a_hostile_clip_is_typed(clip: float) -> None:
    """Review: 'load_config with clip = 5e-324 raises an untyped OverflowError'."""
    from fedcrypt.secagg import setup as state
    from fedcrypt.secagg import SecAggConfig

    fields = list(state._decode_all(state.dump_config(SecAggConfig(4, 3)), "config"))
    fields[4] = clip
    data = state._encode(tuple(fields), 0)
    try:
        config = state.load_config(data)
    except MalformedMessageError as exc:
        assert "clip" in str(exc)
    else:  # a huge clip may be valid: then the codec it implies must be exact
        assert math.isfinite(config.clip) and config.clip > 0 and config.codec.scale > 0


@pytest.mark.parametrize("clip", [5e-324, 1e-320, 1e308])
@pytest.mark.parametrize("bits", [32, 64])
def test_fixed_point_codec_with_an_extreme_clip_raises_a_typed_value_error(clip: float, bits: int) -> None:
    from fedcrypt.errors import EncodingError
    from fedcrypt.vectors import FixedPointCodec

    try:
        codec = FixedPointCodec(clip, bits=bits, num_clients=3)
    except EncodingError as exc:  # a FedcryptError and a ValueError: typed for a peer, exact for a caller
        assert isinstance(exc, (FedcryptError, ValueError)) and "clip" in str(exc)
    else:  # where a scale exists it must be exact and keep the guard
        assert codec.scale > 0 and math.isfinite(codec.scale)
        assert 3 * codec.bound <= (1 << (bits - 1)) - 1
        np.testing.assert_array_equal(codec.decode_sum(codec.encode(np.zeros(3, np.float32)), 1), np.zeros(3))
