"""fedcrypt.crypto: known-answer vectors, the mask PRG and its fused accumulation, Shamir, AEAD."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.crypto import (
    SHAMIR_PRIME,
    Ed25519KeyPair,
    Share,
    X25519KeyPair,
    aead_decrypt,
    aead_encrypt,
    derive_key,
    ed25519_verify,
    hkdf_sha256,
    mask_accumulate,
    mask_prg,
    random_seed,
    shamir_combine,
    shamir_split,
    x25519_secret_matches,
)
from fedcrypt.errors import CryptoError, DecryptionError, InvalidShare, InvalidSignature

VECTORS = Path(__file__).parent / "vectors"


def _load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


# ----------------------------------------------------------------------------- KATs
@pytest.mark.parametrize("case", _load("hkdf_rfc5869.json")["cases"], ids=lambda c: c["name"])
def test_hkdf_rfc5869(case: dict) -> None:
    okm = hkdf_sha256(
        bytes.fromhex(case["ikm"]),
        salt=bytes.fromhex(case["salt"]) or None,
        info=bytes.fromhex(case["info"]),
        length=case["length"],
    )
    assert okm.reveal().hex() == case["okm"]


@pytest.mark.parametrize("case", _load("x25519_rfc7748.json")["scalar_mult"], ids=["5.2-1", "5.2-2"])
def test_x25519_rfc7748_scalar_mult(case: dict) -> None:
    pair = X25519KeyPair.from_private_bytes(bytes.fromhex(case["scalar"]))
    assert pair.exchange(bytes.fromhex(case["u"])).reveal().hex() == case["output"]


def test_x25519_rfc7748_diffie_hellman() -> None:
    dh = _load("x25519_rfc7748.json")["diffie_hellman"]
    alice = X25519KeyPair.from_private_bytes(bytes.fromhex(dh["alice_private"]))
    bob = X25519KeyPair.from_private_bytes(bytes.fromhex(dh["bob_private"]))
    assert alice.public_bytes.hex() == dh["alice_public"]
    assert bob.public_bytes.hex() == dh["bob_public"]
    assert alice.exchange(bob.public_bytes).reveal().hex() == dh["shared"]
    assert bob.exchange(alice.public_bytes).reveal().hex() == dh["shared"]


@settings(max_examples=50)
@given(flips=st.integers(1, 31))
def test_x25519_generated_keys_are_clamped_and_the_only_secret_that_matches(flips: int) -> None:
    # the 5 bits clamping overwrites (bits 0-2, 254, 255): any non-empty flip keeps the public
    # key and is refused by x25519_secret_matches (Shamir blame rests on one value passing)
    pair = X25519KeyPair.generate()
    raw = pair.private_bytes().reveal()
    assert raw[0] & 7 == 0 and raw[31] & 0xC0 == 0x40
    assert x25519_secret_matches(raw, pair.public_bytes) and x25519_secret_matches(pair.private_bytes(), pair.public_bytes)
    flipped = bytearray(raw)
    flipped[0] ^= flips & 7
    flipped[31] ^= ((flips >> 3) & 3) << 6
    assert X25519KeyPair.from_private_bytes(bytes(flipped)).public_bytes == pair.public_bytes
    assert not x25519_secret_matches(bytes(flipped), pair.public_bytes)
    assert not x25519_secret_matches(raw, X25519KeyPair.generate().public_bytes)
    assert not x25519_secret_matches(raw[:31], pair.public_bytes)


def test_x25519_rfc7748_keys_match_only_in_clamped_form() -> None:
    dh = _load("x25519_rfc7748.json")["diffie_hellman"]
    raw = bytes.fromhex(dh["alice_private"])  # RFC 7748's vector is not stored clamped
    clamped = bytearray(raw)
    clamped[0] &= 248
    clamped[31] = (clamped[31] & 127) | 64
    assert bytes(clamped) != raw
    assert not x25519_secret_matches(raw, bytes.fromhex(dh["alice_public"]))
    assert x25519_secret_matches(bytes(clamped), bytes.fromhex(dh["alice_public"]))


def test_x25519_refuses_low_order_point() -> None:
    with pytest.raises(CryptoError, match="low-order"):
        X25519KeyPair.generate().exchange(bytes(32))


def test_pinned_mask_prg() -> None:
    for case in _load("secagg_pinned.json")["mask_prg"]:
        got = mask_prg(bytes.fromhex(case["seed"]), case["length"], case["bits"])
        assert [int(v) for v in got] == case["elements"]


def test_mask_prg_is_aes256_ctr_from_counter_zero() -> None:
    # Independent construction: AES-256-ECB of the big-endian counter blocks 0, 1, 2, ...
    seed = bytes(range(32))
    blocks = b"".join(i.to_bytes(16, "big") for i in range(4))
    ecb = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    expected = np.frombuffer(ecb.update(blocks) + ecb.finalize(), dtype="<u4")
    assert np.array_equal(mask_prg(seed, 16, 32), expected)


def test_pinned_derive_key() -> None:
    case = _load("secagg_pinned.json")["derive_key"]
    key = derive_key(
        bytes.fromhex(case["shared"]),
        protocol=case["protocol"],
        purpose=case["purpose"],
        round_id=case["round_id"],
        party_a=case["party_a"],
        party_b=case["party_b"],
        salt=bytes.fromhex(case["salt"]),
    )
    assert key.reveal().hex() == case["key"]


def test_pinned_shamir_shares() -> None:
    case = _load("secagg_pinned.json")["shamir"]
    shares = [Share.from_bytes(bytes.fromhex(s)) for s in case["shares"]]
    for subset in (shares[:3], shares[2:], [shares[0], shares[2], shares[4]], shares):
        assert shamir_combine(subset, case["threshold"]).reveal().hex() == case["secret"]


# ----------------------------------------------------------------------------- KDF binding
def test_derive_key_binds_pair_round_purpose_and_is_symmetric() -> None:
    shared = random_seed()
    base = dict(protocol="p", purpose="mask", round_id=1, party_a=2, party_b=5)
    key = derive_key(shared, **base)
    assert key.equals(derive_key(shared, **{**base, "party_a": 5, "party_b": 2}))
    for change in ({"round_id": 2}, {"purpose": "share"}, {"party_b": 6}, {"protocol": "q"}):
        assert not key.equals(derive_key(shared, **{**base, **change}))
    assert not key.equals(derive_key(shared, **base, salt=b"other context"))


# ----------------------------------------------------------------------------- mask PRG
@settings(max_examples=25)
@given(
    length=st.integers(0, 70_000),
    bits=st.sampled_from([32, 64]),
    signs=st.lists(st.sampled_from([1, -1]), min_size=0, max_size=4),
)
def test_mask_accumulate_equals_sum_of_masks(length: int, bits: int, signs: list[int]) -> None:
    seeds = [random_seed() for _ in signs]
    dtype = np.uint32 if bits == 32 else np.uint64
    start = np.arange(length, dtype=dtype)
    acc = start.copy()
    mask_accumulate(acc, list(zip(seeds, signs)))
    expected = start.copy()
    for seed, sign in zip(seeds, signs):
        mask = mask_prg(seed, length, bits)
        expected = expected + mask if sign == 1 else expected - mask
    assert np.array_equal(acc, expected)


def test_mask_accumulate_validates_before_writing() -> None:
    acc = np.arange(10, dtype=np.uint32)
    with pytest.raises(ValueError, match="sign must be"):
        mask_accumulate(acc, [(random_seed(), 1), (random_seed(), 2)])
    with pytest.raises(ValueError, match="32 bytes"):
        mask_accumulate(acc, [(random_seed(), 1), (b"short", 1)])
    assert np.array_equal(acc, np.arange(10, dtype=np.uint32))
    with pytest.raises(TypeError, match="uint32 or uint64"):
        mask_accumulate(np.zeros(4, np.int64), [])


def test_mask_prg_bits_look_uniform() -> None:
    # 2^20 bits of keystream: each bit position of the 32-bit words is set with
    # frequency 1/2 +- 6 sigma (sigma = 0.5/sqrt(32768) ~ 0.0028); false-failure rate < 1e-8.
    words = mask_prg(random_seed(), 1 << 15, 32)
    bits = (words[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    freq = bits.mean(axis=0)
    assert np.all(np.abs(freq - 0.5) < 6 * 0.5 / np.sqrt(1 << 15))


# ----------------------------------------------------------------------------- Shamir
@settings(max_examples=30)
@given(data=st.data(), holders=st.integers(1, 12))
def test_shamir_any_threshold_subset_recovers(data, holders: int) -> None:
    threshold = data.draw(st.integers(1, holders))
    secret = random_seed()
    points = data.draw(st.lists(st.integers(1, 65535), min_size=holders, max_size=holders, unique=True))
    shares = shamir_split(secret, threshold, points)
    subset = data.draw(st.permutations(shares)).__getitem__(slice(0, data.draw(st.integers(threshold, holders))))
    assert shamir_combine(subset, threshold).equals(secret)
    if threshold > 1:
        with pytest.raises(InvalidShare, match="needed"):
            shamir_combine(subset[: threshold - 1], threshold)


def test_shamir_detects_inconsistent_and_duplicate_shares() -> None:
    shares = shamir_split(random_seed(), 3, [1, 2, 3, 4])
    forged = Share(shares[3].x, (shares[3].y + 1) % SHAMIR_PRIME)
    with pytest.raises(InvalidShare, match="inconsistent"):
        shamir_combine(shares[:3] + [forged], 3)
    with pytest.raises(InvalidShare, match="duplicate"):
        shamir_combine([shares[0], shares[0], shares[1]], 3)
    with pytest.raises(InvalidShare):
        Share.from_bytes(b"\x00" * 68)  # point 0 is never a share
    with pytest.raises(InvalidShare):
        Share.from_bytes(b"\x00\x01" * 10)


# ----------------------------------------------------------------------------- AEAD, signatures
def test_aead_binds_associated_data_and_key() -> None:
    key = random_seed()
    blob = aead_encrypt(key, b"share", b"sender=1;recipient=2")
    assert aead_decrypt(key, blob, b"sender=1;recipient=2") == b"share"
    with pytest.raises(DecryptionError):
        aead_decrypt(key, blob, b"sender=2;recipient=1")
    with pytest.raises(DecryptionError):
        aead_decrypt(random_seed(), blob, b"sender=1;recipient=2")
    with pytest.raises(DecryptionError):
        aead_decrypt(key, blob[:-1] + bytes([blob[-1] ^ 1]), b"sender=1;recipient=2")
    with pytest.raises(DecryptionError):
        aead_decrypt(key, blob[:10], b"")


def test_ed25519_sign_verify() -> None:
    pair = Ed25519KeyPair.generate()
    signature = pair.sign(b"survivors")
    ed25519_verify(pair.public_bytes, signature, b"survivors")
    with pytest.raises(InvalidSignature):
        ed25519_verify(pair.public_bytes, signature, b"survivor")
    with pytest.raises(InvalidSignature):
        ed25519_verify(Ed25519KeyPair.generate().public_bytes, signature, b"survivors")


def test_secrets_never_print() -> None:
    secret = random_seed()
    pair = X25519KeyPair.generate()
    share = shamir_split(secret, 2, [1, 2])[0]
    raw = secret.reveal()
    for text in (repr(secret), str(secret), repr(pair), repr(share), str(share)):
        assert raw.hex() not in text and str(share.y) not in text
    assert pair.private_bytes().reveal().hex() not in repr(pair)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)
