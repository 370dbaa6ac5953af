"""Field laws, codec round trips and strict decoding; XOF stream properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import MalformedMessageError
from fedcrypt.verify.field import FIELDS, Field40, next_power_of_2
from fedcrypt.verify.xof import XofHmacSha256Aes128

FIELD_LIST = list(FIELDS.values())


def elems(F, max_size=16):
    return st.lists(st.integers(0, F.modulus - 1), min_size=1, max_size=max_size)


@pytest.mark.parametrize("F", FIELD_LIST, ids=lambda f: f.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_ring_laws_match_python_ints(F, data):
    a = data.draw(elems(F))
    n = len(a)
    b = data.draw(st.lists(st.integers(0, F.modulus - 1), min_size=n, max_size=n))
    q = F.modulus
    A, B = F.vec(a), F.vec(b)
    assert F.to_ints(F.add(A, B)) == [(x + y) % q for x, y in zip(a, b)]
    assert F.to_ints(F.sub(A, B)) == [(x - y) % q for x, y in zip(a, b)]
    assert F.to_ints(F.mul(A, B)) == [(x * y) % q for x, y in zip(a, b)]
    assert F.to_ints(F.neg(A)) == [(-x) % q for x in a]
    assert F.sum(A) == sum(a) % q
    assert F.to_ints(F.add(F.sub(A, B), B)) == a
    assert F.to_ints(F.mul(A, 1)) == a
    for x in a:
        if x:
            assert x * F.inv(x) % q == 1


@pytest.mark.parametrize("F", FIELD_LIST, ids=lambda f: f.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_codec_round_trip_and_canonical(F, data):
    a = data.draw(elems(F, 32))
    blob = F.encode_vec(F.vec(a))
    assert len(blob) == len(a) * F.encoded_size
    assert blob == b"".join(x.to_bytes(F.encoded_size, "little") for x in a)
    back = F.decode_vec(blob, len(a))
    assert F.to_ints(back) == a and back.dtype == F.dtype
    assert F.encode_vec(back) == blob


@pytest.mark.parametrize("F", FIELD_LIST, ids=lambda f: f.name)
def test_decoder_refuses_bad_bytes(F):
    with pytest.raises(MalformedMessageError):
        F.decode_vec(b"\x00" * (F.encoded_size + 1))
    with pytest.raises(MalformedMessageError):
        F.decode_vec(F.modulus.to_bytes(F.encoded_size, "little"))
    with pytest.raises(MalformedMessageError):
        F.decode_vec(b"\x00" * F.encoded_size, length=2)
    top = (F.modulus - 1).to_bytes(F.encoded_size, "little")
    assert F.to_ints(F.decode_vec(top)) == [F.modulus - 1]


@pytest.mark.parametrize("F", FIELD_LIST, ids=lambda f: f.name)
@pytest.mark.parametrize("size", [1, 2, 8, 32])
def test_ntt_matches_naive_evaluation(F, size):
    rng = np.random.default_rng(size)  # not secret: test data
    coeffs = [int(x) % F.modulus for x in rng.integers(0, 2**62, size)]
    w = F.root(size)
    values = F.ntt(F.vec(coeffs), size)
    naive = [sum(c * pow(w, k * i, F.modulus) for i, c in enumerate(coeffs)) % F.modulus for k in range(size)]
    assert F.to_ints(values) == naive
    assert F.to_ints(F.ntt(values, size, inverse=True)) == coeffs


@pytest.mark.parametrize("F", FIELD_LIST, ids=lambda f: f.name)
@settings(max_examples=25, deadline=None)
@given(value=st.integers(0, 2**20 - 1))
def test_bit_vectors(F, value):
    bits = F.encode_into_bit_vector(value, 20)
    assert F.to_ints(bits) == [(value >> i) & 1 for i in range(20)]
    assert F.decode_from_bit_vector(bits) == value
    with pytest.raises(ValueError):
        F.encode_into_bit_vector(2**20, 20)


def test_field_parameters():
    assert Field40.modulus == 2**20 * 1048555 + 1 and Field40.encoded_size == 5
    assert FIELDS["Field64"].modulus == 2**32 * 4294967295 + 1
    assert FIELDS["Field128"].modulus == 2**66 * 4611686018427387897 + 1
    assert next_power_of_2(1) == 1 and next_power_of_2(5) == 8 and next_power_of_2(8) == 8


@settings(max_examples=30, deadline=None)
@given(splits=st.lists(st.integers(0, 70), min_size=1, max_size=8))
def test_xof_is_one_stream(splits):
    seed, dst, binder = bytes(range(32)), b"dst", b"binder"
    whole = XofHmacSha256Aes128(seed, dst, binder).next(sum(splits))
    xof = XofHmacSha256Aes128(seed, dst, binder)
    assert b"".join(xof.next(n) for n in splits) == whole


def test_xof_domain_separation_and_seed_checks():
    seed = bytes(32)
    a = XofHmacSha256Aes128(seed, b"a", b"").next(32)
    assert a != XofHmacSha256Aes128(seed, b"b", b"").next(32)
    assert a != XofHmacSha256Aes128(seed, b"", b"a").next(32)  # dst length is framed
    with pytest.raises(ValueError):
        XofHmacSha256Aes128(bytes(16), b"", b"")
    assert "000000" not in repr(XofHmacSha256Aes128(seed, b"", b""))


@pytest.mark.parametrize("F", FIELD_LIST, ids=lambda f: f.name)
def test_next_vec_is_rejection_sampling_in_stream_order(F):
    seed = bytes(range(32))
    got = XofHmacSha256Aes128(seed, b"t", b"").next_vec(F, 50)
    xof = XofHmacSha256Aes128(seed, b"t", b"")
    mask = next_power_of_2(F.modulus) - 1
    want = []
    while len(want) < 50:
        x = int.from_bytes(xof.next(F.encoded_size), "little") & mask
        if x < F.modulus:
            want.append(x)
    assert F.to_ints(got) == want
