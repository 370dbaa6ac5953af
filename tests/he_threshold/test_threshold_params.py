"""Threshold CKKS without OpenFHE: the missing-extra error, parameters and message codecs.

These run under every Python (the project's default one has no ``openfhe`` wheel).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import FedcryptError, MalformedMessageError, MissingExtraError
from fedcrypt.he.threshold import _runtime as _openfhe_runtime
from fedcrypt.he.threshold import (
    SUPPORTED_PYTHONS,
    DecryptionShare,
    KeyHolder,
    KeyShareMessage,
    ThresholdParams,
    ThresholdServer,
)

HAVE_OPENFHE = importlib.util.find_spec("openfhe") is not None


def _params(**changes: object) -> ThresholdParams:
    fields: dict[str, object] = dict(
        ring_degree=16384, first_mod_bits=60, scale_bits=50, upload_level=0, num_parties=3, flooding=False
    )
    fields.update(changes)
    return ThresholdParams(**fields)  # type: ignore[arg-type]


def _assert_missing_extra(exc: MissingExtraError) -> None:
    message = str(exc)
    assert exc.extra == "threshold"
    assert "fedcrypt[threshold]" in message
    for version in SUPPORTED_PYTHONS:
        assert version in message
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in message
    assert isinstance(exc, ImportError) and isinstance(exc, FedcryptError)


@pytest.mark.skipif(HAVE_OPENFHE, reason="openfhe is installed here: the real absence is tested where it is not")
def test_missing_openfhe_names_the_extra_and_pythons() -> None:
    import fedcrypt.he.threshold  # noqa: F401 - importing works without openfhe

    assert "openfhe" not in sys.modules
    params = _params()
    with pytest.raises(MissingExtraError) as info:
        KeyHolder(params, 0, bytes(32))
    _assert_missing_extra(info.value)
    with pytest.raises(MissingExtraError) as info:
        ThresholdServer(params)
    _assert_missing_extra(info.value)
    with pytest.raises(MissingExtraError) as info:
        ThresholdParams.preset("compact", num_parties=3)
    _assert_missing_extra(info.value)


def test_blocked_openfhe_import_raises_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same error on any Python when the import fails (sys.modules entry None blocks it)."""
    _openfhe_runtime.runtime.cache_clear()
    monkeypatch.setitem(sys.modules, "openfhe", None)
    with pytest.raises(MissingExtraError) as info:
        _openfhe_runtime.load_openfhe()
    _assert_missing_extra(info.value)
    with pytest.raises(MissingExtraError):
        ThresholdServer(_params(num_parties=5))
    _openfhe_runtime.runtime.cache_clear()


@settings(max_examples=60)
@given(
    ring=st.sampled_from([8192, 16384, 32768]),
    level=st.integers(0, 1),
    parties=st.integers(2, 1024),
    clients=st.integers(1, 64),
    clip=st.floats(0.01, 1.0),
    flooding=st.booleans(),
    security=st.integers(20, 128),
    estimate=st.floats(1.0, 50.0),
)
def test_params_round_trip(
    ring: int, level: int, parties: int, clients: int, clip: float, flooding: bool, security: int, estimate: float
) -> None:
    params = _params(
        ring_degree=ring,
        upload_level=level,
        num_parties=parties,
        num_clients=clients,
        clip=clip,
        flooding=flooding,
        statistical_security=security,
        noise_estimate_bits=estimate,
    )
    data = params.to_bytes()
    assert ThresholdParams.from_bytes(data) == params
    assert ThresholdParams.from_bytes(data).to_bytes() == data


@settings(max_examples=60)
@given(data=st.binary(max_size=80), cut=st.integers(0, 200))
def test_params_decoder_is_strict(data: bytes, cut: int) -> None:
    good = _params().to_bytes()
    with pytest.raises(MalformedMessageError):
        ThresholdParams.from_bytes(good[: min(cut, len(good) - 1)])
    with pytest.raises(MalformedMessageError):
        ThresholdParams.from_bytes(good + b"\x00")
    if data != good:
        with pytest.raises(MalformedMessageError):
            ThresholdParams.from_bytes(data)


def test_params_bounds_have_exact_messages() -> None:
    with pytest.raises(ValueError, match=r"capacity guard: num_clients \* max_weight \* clip = 200 exceeds 128"):
        _params(num_clients=100, max_weight=2)
    assert _params(upload_level=1, num_clients=100, max_weight=1000).capacity() == 2.0**57
    with pytest.raises(ValueError, match=r"num_parties must be in \[2, 1024\], got 1"):
        _params(num_parties=1)
    with pytest.raises(ValueError, match=r"flooding needs noise_estimate_bits"):
        _params(flooding=True)
    with pytest.raises(ValueError, match=r"scale_bits must be in \[20, 59\]"):
        _params(scale_bits=60)
    with pytest.raises(ValueError, match=r"ring_degree must be one of"):
        _params(ring_degree=4096)
    with pytest.raises(TypeError, match=r"max_weight must be an int, got float"):
        _params(max_weight=2.0)
    with pytest.raises(TypeError, match=r"flooding must be a bool"):
        _params(flooding=1)
    with pytest.raises(ValueError, match=r"unknown threshold CKKS preset 'huge'"):
        ThresholdParams.preset("huge", num_parties=3)
    with pytest.raises(ValueError, match=r"preset policy takes"):
        ThresholdParams.preset("compact", num_parties=3, scale_bits=40)
    assert _params().bytes_per_value() == 16.0
    assert _params(packing="real").bytes_per_value() == 32.0
    assert _params(upload_level=1).bytes_per_value() == 32.0
    assert _params(upload_level=1, packing="real").bytes_per_value() == 64.0


@settings(max_examples=50)
@given(party=st.integers(0, 2), key=st.binary(min_size=16, max_size=512), session=st.binary(min_size=32, max_size=32))
def test_key_share_message_round_trip_and_truncation(party: int, key: bytes, session: bytes) -> None:
    params = _params()
    message = KeyShareMessage(session, party, key)
    data = message.to_bytes()
    assert KeyShareMessage.from_bytes(data, params) == message
    for cut in (0, 10, len(data) - 1):
        with pytest.raises(MalformedMessageError):
            KeyShareMessage.from_bytes(data[:cut], params)
    with pytest.raises(MalformedMessageError, match="trailing"):
        KeyShareMessage.from_bytes(data + b"x", params)
    assert key.hex() not in repr(message) and session.hex() not in repr(message)


def test_key_share_message_refuses_unknown_party_and_oversize() -> None:
    params = _params()
    with pytest.raises(MalformedMessageError, match=r"party 3 outside \[0, 3\)"):
        KeyShareMessage.from_bytes(KeyShareMessage(bytes(32), 3, b"k").to_bytes(), params)
    huge = bytes(2 * 16384 * 8 + 8193)
    with pytest.raises(MalformedMessageError, match="public key of"):
        KeyShareMessage.from_bytes(KeyShareMessage(bytes(32), 0, huge).to_bytes(), params)


@settings(max_examples=50)
@given(
    party=st.integers(0, 2),
    partials=st.lists(st.binary(min_size=16, max_size=64), min_size=1, max_size=4),
    digest=st.binary(min_size=32, max_size=32),
)
def test_decryption_share_round_trip_and_strictness(party: int, partials: list[bytes], digest: bytes) -> None:
    params = _params()
    share = DecryptionShare(bytes(32), party, digest, tuple(partials))
    data = share.to_bytes()
    assert DecryptionShare.from_bytes(data, params, ciphertext_count=len(partials)) == share
    with pytest.raises(MalformedMessageError, match="partials, expected"):
        DecryptionShare.from_bytes(data, params, ciphertext_count=len(partials) + 1)
    with pytest.raises(MalformedMessageError):
        DecryptionShare.from_bytes(data[:-1], params, ciphertext_count=len(partials))
    assert "partials=<" in repr(share) and partials[0].hex() not in repr(share)


def test_flower_threshold_adapter_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without openfhe the Flower adapter fails at import with the same typed error."""
    import importlib

    _openfhe_runtime.runtime.cache_clear()
    monkeypatch.setitem(sys.modules, "openfhe", None)
    monkeypatch.delitem(sys.modules, "fedcrypt.integrations.flower.threshold", raising=False)
    with pytest.raises(MissingExtraError) as info:
        importlib.import_module("fedcrypt.integrations.flower.threshold")
    _assert_missing_extra(info.value)
    assert "fedcrypt.integrations.flower.threshold" not in sys.modules
    _openfhe_runtime.runtime.cache_clear()


@settings(max_examples=60, deadline=None)
@given(
    level=st.integers(0, 1),
    clients=st.integers(1, 64),
    max_weight=st.integers(1, 2000),
    clip=st.floats(1e-3, 8.0, allow_nan=False),
)
def test_headroom_is_the_largest_power_of_two_that_fits_the_capacity(
    level: int, clients: int, max_weight: int, clip: float
) -> None:
    """``headroom_bits`` is the largest ``h <= 20`` with ``2^h * clients * max_weight * clip``
    within the capacity guard: uploads scaled by ``2^h`` never wrap modulo ``Q``."""
    needed = clients * max_weight * clip
    try:
        params = _params(upload_level=level, num_clients=clients, max_weight=max_weight, clip=clip)
    except ValueError:
        assert needed > 2.0 ** (60 + 50 * level - 3 - 50)
        return
    h = params.headroom_bits()
    assert 0 <= h <= 20
    assert needed * 2.0**h <= params.capacity()
    assert h == 20 or needed * 2.0 ** (h + 1) > params.capacity()


def test_headroom_divides_the_error_bound() -> None:
    """The flooding error of a decrypted value shrinks by ``2^h``; the bound adds the float64
    decoding term relative to the largest aggregate."""
    params = _params(upload_level=1, num_clients=10, max_weight=1000, flooding=True, noise_estimate_bits=12.0)
    assert params.headroom_bits() == 20
    assert params.value_error_stddev() == params.slot_error_stddev() / 2**20
    # float64 decoding relative to the largest slot modulus: sqrt(2) * n * w * clip with complex packing
    assert params.sum_error_bound() == pytest.approx(10 * params.value_error_stddev() + 2.0**-40 * 10 * 1000 * 2**0.5)
    assert params.sum_error_bound() < 1e-6 < 10 * params.slot_error_stddev()
