"""CkksParams: 128-bit security bounds, capacity and precision guards, strict bytes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import MalformedMessageError
from fedcrypt.he import PRESETS, SECURITY_BOUNDS, CkksParams


def test_security_bounds_are_the_he_standard() -> None:
    assert SECURITY_BOUNDS == {4096: 109, 8192: 218, 16384: 438, 32768: 881}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_within_the_bound(name: str) -> None:
    params = CkksParams.preset(name)
    assert sum(params.coeff_modulus_bits) <= SECURITY_BOUNDS[params.poly_modulus_degree]
    assert params.mean_error_bound([1.0] * params.num_clients, float_weights=params.upload_level > 0, flooded=False) <= 1e-6
    # the released (flooded) bound is larger, and documented
    assert params.mean_error_bound([1.0] * params.num_clients, float_weights=params.upload_level > 0) > 1e-6
    assert CkksParams.from_bytes(params.to_bytes()) == params


@given(
    n=st.sampled_from(sorted(SECURITY_BOUNDS)),
    bits=st.lists(st.integers(20, 60), min_size=2, max_size=18),
)
@settings(max_examples=200)
def test_total_modulus_above_the_bound_is_refused(n: int, bits: list[int]) -> None:
    total = sum(bits)
    try:
        params = CkksParams(n, tuple(bits), scale_bits=min(bits[0] - 1, 40), num_clients=1, max_weight=1.0)
    except ValueError as exc:
        if total > SECURITY_BOUNDS[n]:
            assert "128-bit security bound" in str(exc)
        else:
            assert "128-bit" not in str(exc)
        return
    assert total <= SECURITY_BOUNDS[n]
    assert params.coeff_modulus_bits == tuple(bits)


@pytest.mark.parametrize(
    ("n", "bits"),
    [(4096, (40, 30, 40)), (8192, (60, 40, 60, 60)), (16384, (60,) * 7 + (60,)), (32768, (60,) * 14 + (60,))],
)
def test_each_ring_degree_refuses_one_bit_too_many(n: int, bits: tuple[int, ...]) -> None:
    assert sum(bits) == SECURITY_BOUNDS[n] + 1 or sum(bits) > SECURITY_BOUNDS[n]
    with pytest.raises(ValueError, match=rf"exceeds {SECURITY_BOUNDS[n]} bits for N={n}"):
        CkksParams(n, bits, scale_bits=30, num_clients=1, max_weight=1.0)


def test_the_tempting_small_preset_is_refused_for_its_error() -> None:
    # N=4096 [40, 20, 40] at scale 2^20 is compact but its error is about 1e-3..2e-2.
    with pytest.raises(ValueError, match="precision guard"):
        CkksParams(4096, (40, 20, 40), scale_bits=20, num_clients=10, max_weight=1000.0)
    params = CkksParams(4096, (40, 20, 40), scale_bits=20, num_clients=10, max_weight=1000.0, precision=1.0)
    assert params.mean_error_bound([1.0]) > 1e-4


def test_capacity_guard_names_the_bound() -> None:
    with pytest.raises(ValueError, match="capacity guard"):
        CkksParams.preset("compact", num_clients=1000, max_weight=1000.0)
    with pytest.raises(ValueError, match="capacity guard"):
        CkksParams.preset("compact", num_clients=10, clip=1e5, max_weight=1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"poly_modulus_degree": 2048}, ValueError, "poly_modulus_degree must be one of"),
        ({"coeff_modulus_bits": ()}, ValueError, "at least one prime"),
        ({"coeff_modulus_bits": (61, 40, 60)}, ValueError, "20..60 bits"),
        ({"coeff_modulus_bits": [60, 40, 60]}, TypeError, "tuple of ints"),
        ({"scale_bits": 60}, ValueError, "scale_bits must be in"),
        ({"upload_level": 2}, ValueError, "upload_level must be in"),
        ({"num_clients": 0}, ValueError, r"num_clients must be in \[1, 1048576\]"),
        ({"clip": float("nan")}, ValueError, "clip must be a positive finite number"),
        ({"max_weight": -1.0}, ValueError, "max_weight must be a positive"),
        ({"num_clients": True}, TypeError, "num_clients must be an int"),
    ],
)
def test_bad_fields_raise_exact_messages(kwargs, error, message) -> None:
    base = dict(poly_modulus_degree=8192, coeff_modulus_bits=(60, 40, 60), scale_bits=40)
    base.update(kwargs)
    with pytest.raises(error, match=message):
        CkksParams(**base)


def test_unknown_preset_and_policy() -> None:
    with pytest.raises(ValueError, match="unknown CKKS preset 'fast'"):
        CkksParams.preset("fast")
    with pytest.raises(ValueError, match="preset policy takes"):
        CkksParams.preset("compact", scale_bits=30)


@given(
    num_clients=st.integers(1, 100),
    clip=st.floats(0.01, 10.0),
    max_weight=st.floats(0.5, 100.0),
    name=st.sampled_from(sorted(PRESETS)),
)
@settings(max_examples=100)
def test_bytes_round_trip_and_strict_decoder(num_clients: int, clip: float, max_weight: float, name: str) -> None:
    params = CkksParams.preset(name, num_clients=num_clients, clip=clip, max_weight=max_weight)
    raw = params.to_bytes()
    assert CkksParams.from_bytes(raw) == params
    for cut in (0, 3, len(raw) - 1):
        with pytest.raises(MalformedMessageError):
            CkksParams.from_bytes(raw[:cut])
    with pytest.raises(MalformedMessageError):
        CkksParams.from_bytes(raw + b"\x00")


def test_decoder_refuses_insecure_parameters() -> None:
    raw = bytearray(CkksParams.preset("compact").to_bytes())
    raw[10:13] = bytes([60, 60, 60])  # 180 bits is fine for N=8192 ...
    CkksParams.from_bytes(bytes(raw))
    raw[5:9] = (4096).to_bytes(4, "big")  # ... but not for N=4096
    with pytest.raises(MalformedMessageError, match="128-bit security bound"):
        CkksParams.from_bytes(bytes(raw))


def test_import_is_cheap_and_tenseal_is_lazy() -> None:
    code = (
        "import json, sys\n"
        "import fedcrypt.he\n"
        "p = fedcrypt.he.CkksParams.preset('compact')\n"
        "print(json.dumps(sorted(m for m in ('tenseal', 'torch', 'flwr') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_missing_tenseal_raises_missing_extra_naming_he() -> None:
    code = (
        "import sys\n"
        "sys.modules['tenseal'] = None  # makes 'import tenseal' fail as if it were not installed\n"
        "from fedcrypt.errors import MissingExtraError\n"
        "from fedcrypt.he import CkksParams, KeyOwner\n"
        "try:\n"
        "    KeyOwner.generate(CkksParams.preset('compact'))\n"
        "except MissingExtraError as exc:\n"
        "    print('extra=' + exc.extra)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "extra=he"


def test_known_answer_encodings() -> None:
    """Pinned bytes: a refactor that changes the wire format or the fingerprint is caught."""
    from fedcrypt.he import AggregatorContext
    from fedcrypt.he.blob import HEADER_BYTES

    params = CkksParams.preset("compact")
    assert params.to_bytes().hex() == (
        "46434350" "02" "00002000" "03" "3c283c" "28" "00" "00000064"
        "3ff0000000000000" "408f400000000000" "3eb0c6f7a0b5ed8d" "02"  # packing: complex
    )
    server = AggregatorContext(params, bytes(range(32)))
    assert server.fingerprint.hex() == "e28bb67e4b1db1474213d3fe0825343503cec518e9f85e858acb17cf16cb1f84"
    assert server.to_bytes() == b"FCHC\x03\x01\x00\x2c" + params.to_bytes() + bytes(range(32))
    real = CkksParams.preset("compact", packing="real")
    assert real.to_bytes() == params.to_bytes()[:-1] + b"\x01"
    assert AggregatorContext(real, bytes(range(32))).fingerprint != server.fingerprint
    assert HEADER_BYTES == 4 + 1 + 1 + 32 + 8 + 1 + 32 + 4 + 8 + 4


def test_packing_is_validated_and_round_trips() -> None:
    assert CkksParams.preset("compact").packing == "complex"
    assert CkksParams.preset("compact").values_per_ciphertext == 8192
    assert CkksParams.preset("compact", packing="real").values_per_ciphertext == 4096
    with pytest.raises(ValueError, match="packing must be one of"):
        CkksParams.preset("compact", packing="quaternion")
    with pytest.raises(TypeError, match="packing must be a str"):
        CkksParams(8192, (60, 40, 60), 40, packing=2)  # type: ignore[arg-type]
    raw = bytearray(CkksParams.preset("compact").to_bytes())
    raw[-1] = 3
    with pytest.raises(MalformedMessageError, match="unknown packing 3"):
        CkksParams.from_bytes(bytes(raw))


def test_version_1_parameters_are_refused_with_a_clear_error() -> None:
    raw = bytearray(CkksParams.preset("compact").to_bytes()[:-1])
    raw[4] = 1
    with pytest.raises(MalformedMessageError, match=r"version 1 \(one real per CKKS slot\) is no longer accepted"):
        CkksParams.from_bytes(bytes(raw))


def test_complex_packing_costs_the_float_weight_term_sqrt2() -> None:
    """A complex slot's modulus is up to sqrt(2) clip: the float-weight rounding term of the
    noise bound grows by sqrt(2); everything else in the error model is per value."""
    complex_, real = CkksParams.preset("weighted"), CkksParams.preset("weighted", packing="real")
    assert complex_.slot_modulus_factor == pytest.approx(2**0.5) and real.slot_modulus_factor == 1.0
    assert complex_.noise_norm_bound(3, 3.0, float_weights=True) > real.noise_norm_bound(3, 3.0, float_weights=True)
    assert complex_.noise_norm_bound(3, 3.0, float_weights=False) == real.noise_norm_bound(3, 3.0, float_weights=False)
    assert complex_.sum_error_bound([1, 2], flooded=False) == real.sum_error_bound([1, 2], flooded=False)
