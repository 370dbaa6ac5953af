"""Key roles and bad input: the server holds no secret; a rejected blob keeps the aggregate."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.errors import (
    ContextMismatchError,
    LocalProtocolError,
    MalformedMessageError,
    OverflowRiskError,
    SecretKeyError,
    SpecMismatchError,
    UnexpectedMessageError,
)
from fedcrypt.he import AggregatorContext, CkksParams, KeyOwner, peek_header
from fedcrypt.he.blob import HEADER_BYTES, SEED_BYTES
from fedcrypt.vectors import TensorSpec

LENGTH = 4100  # two ciphertexts, the second partial


# ---------------------------------------------------------------------------- roles
def test_server_cannot_be_built_from_anything_with_a_secret_key(compact_owner: KeyOwner) -> None:
    with pytest.raises(SecretKeyError, match="cannot be built from a KeyOwner"):
        AggregatorContext(compact_owner, b"\x00" * 32)  # type: ignore[arg-type]
    with pytest.raises(SecretKeyError, match="carry a secret key"):
        AggregatorContext.from_bytes(compact_owner.to_bytes(include_secret_key=True))


def test_owner_bytes_without_the_secret_by_name_are_public(compact_owner: KeyOwner) -> None:
    public = compact_owner.to_bytes()
    secret = compact_owner.to_bytes(include_secret_key=True)
    assert public == compact_owner.aggregator_context().to_bytes()
    assert len(public) < 200 < 100_000 < len(secret)
    assert secret.startswith(public[:4]) and public[8:] in secret
    with pytest.raises(SecretKeyError, match="carry no secret key"):
        KeyOwner.from_bytes(public)
    with pytest.raises(TypeError, match="include_secret_key must be a bool"):
        compact_owner.to_bytes(include_secret_key="yes")  # type: ignore[arg-type]


def test_reprs_never_show_the_key_and_owners_do_not_pickle(compact_owner, compact_server) -> None:
    secret = compact_owner.to_bytes(include_secret_key=True)
    for obj in (compact_owner, compact_server, compact_server.start()):
        for text in (repr(obj), str(obj)):
            assert len(text) < 300
            assert secret[-64:].hex() not in text
    assert "secret_key=<held>" in repr(compact_owner)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(compact_owner)


def test_server_side_never_constructs_key_material(tmp_path, compact_owner: KeyOwner) -> None:
    """In a fresh process whose SEAL key classes all explode, the server still aggregates."""
    rng = np.random.default_rng(3)
    vectors = [rng.uniform(-1, 1, LENGTH) for _ in range(3)]
    (tmp_path / "ctx.bin").write_bytes(compact_owner.aggregator_context().to_bytes())
    for i, v in enumerate(vectors):
        (tmp_path / f"u{i}.bin").write_bytes(compact_owner.encrypt(v))
    code = textwrap.dedent(
        f"""
        import pathlib, sys
        import tenseal.sealapi as seal
        class Forbidden:
            def __init__(self, *a, **k):
                raise AssertionError("the server touched key material")
        for name in ("SecretKey", "KeyGenerator", "Decryptor", "Encryptor", "PublicKey", "RelinKeys", "GaloisKeys"):
            setattr(seal, name, Forbidden)
        from fedcrypt.he import AggregatorContext
        d = pathlib.Path({str(tmp_path)!r})
        server = AggregatorContext.from_bytes((d / "ctx.bin").read_bytes())
        blobs = [(d / f"u{{i}}.bin").read_bytes() for i in range(3)]
        (d / "sum.bin").write_bytes(server.weighted_sum(list(zip(blobs, [5, 1, 7]))))
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    total = compact_owner.decrypt((tmp_path / "sum.bin").read_bytes())
    expected = 5 * vectors[0] + vectors[1] + 7 * vectors[2]
    assert np.max(np.abs(total - expected)) <= compact_owner.params.sum_error_bound([5, 1, 7])


def test_server_objects_hold_no_secret_key(compact_server: AggregatorContext, compact_owner: KeyOwner) -> None:
    import tenseal.sealapi as seal

    running = compact_server.start()
    running.add(compact_owner.encrypt(np.ones(5)), 2)
    forbidden = (seal.SecretKey, seal.Decryptor, seal.Encryptor, seal.KeyGenerator)
    seen = []
    for obj in (compact_server, running, compact_server._runtime):
        for slot in type(obj).__slots__:
            value = getattr(obj, slot)
            values = value if isinstance(value, (list, tuple, set)) else [value]
            seen.extend(values)
    assert seen and not any(isinstance(v, forbidden) for v in seen)


# ---------------------------------------------------------------------------- bad blobs
@pytest.fixture(scope="module")
def other_owner() -> KeyOwner:
    return KeyOwner.generate(CkksParams.preset("compact", num_clients=20))


@pytest.fixture(scope="module")
def uploads(compact_owner: KeyOwner) -> list[tuple[np.ndarray, bytes]]:
    rng = np.random.default_rng(11)
    vectors = [rng.uniform(-1, 1, LENGTH) for _ in range(6)]
    return [(v, compact_owner.encrypt(v)) for v in vectors]


def _bad_blobs(compact_owner, other_owner, weighted_owner, uploads) -> dict[str, tuple[bytes, type]]:
    vector, good = uploads[0]
    spec = TensorSpec.from_tensors({"w": np.zeros(LENGTH, np.float32)})
    other_spec = TensorSpec.from_tensors({"v": np.zeros(LENGTH, np.float32)})
    aggregate = compact_owner.aggregator_context().weighted_sum([(good, 1)])
    corrupt = bytearray(good)
    corrupt[HEADER_BYTES + 40 : HEADER_BYTES + 48] = b"\xff" * 8  # inside the SEAL header
    return {
        "other context": (other_owner.encrypt(vector), ContextMismatchError),
        "other parameters": (weighted_owner.encrypt(vector), ContextMismatchError),
        "truncated": (good[:-1], MalformedMessageError),
        "truncated header": (good[:20], MalformedMessageError),
        "oversized": (good + b"\x00" * 7, MalformedMessageError),
        "wrong length": (compact_owner.encrypt(vector[:-1]), SpecMismatchError),
        "other spec digest": (compact_owner.encrypt(vector, spec=other_spec), SpecMismatchError),
        "aggregate as upload": (aggregate, MalformedMessageError),
        "corrupt ciphertext": (bytes(corrupt), MalformedMessageError),
        "replay": (good, UnexpectedMessageError),
        "not bytes": ("blob", TypeError),  # type: ignore[dict-item]
        "spec-less upload into a spec'd sum": (compact_owner.encrypt(vector), SpecMismatchError),
        "spec": (compact_owner.encrypt(vector, spec=spec), None),  # marker: the accepted spec
    }


BAD = [
    "other context", "other parameters", "truncated", "truncated header", "oversized",
    "wrong length", "other spec digest", "aggregate as upload",
    "corrupt ciphertext", "replay", "not bytes",
]


@given(data=st.data())
@settings(max_examples=15, deadline=None)
def test_bad_input_raises_and_the_aggregate_so_far_is_kept(
    data, compact_owner, compact_server, other_owner, weighted_owner, uploads
) -> None:
    bad = _bad_blobs(compact_owner, other_owner, weighted_owner, uploads)
    running = compact_server.start(length=LENGTH)
    running.add(uploads[0][1], 1)  # makes "replay" a replay
    expected, weights = uploads[0][0].copy(), [1]
    order = data.draw(st.permutations(list(range(1, len(uploads))) + BAD))
    for step in order:
        if isinstance(step, int):
            weight = data.draw(st.integers(1, 50))
            running.add(uploads[step][1], weight)
            expected += weight * uploads[step][0]
            weights.append(weight)
        else:
            blob, error = bad[step]
            before = (running.count, running.total_weight, running.length)
            with pytest.raises(error):
                running.add(blob, data.draw(st.integers(1, 50)))
            assert (running.count, running.total_weight, running.length) == before
    total = running.finish()
    assert peek_header(total).contributions == len(uploads) == running.count
    result = compact_owner.decrypt(total)
    assert np.max(np.abs(result - expected)) <= compact_owner.params.sum_error_bound(weights)


def test_ciphertext_at_the_wrong_level_is_refused(weighted_owner, weighted_server) -> None:
    """A well-framed upload whose ciphertexts sit at level 0 instead of the upload level 1."""
    good = weighted_owner.encrypt(np.ones(LENGTH))
    aggregate = weighted_server.weighted_sum([(good, 1)])
    trailer = 8 + peek_header(aggregate).ciphertext_count * SEED_BYTES  # one summand's provenance
    forged = bytearray(aggregate[: len(aggregate) - trailer])
    forged[5] = 1  # kind: upload
    forged[HEADER_BYTES - 16 : HEADER_BYTES - 4] = struct.pack(">Id", 1, 1.0)
    running = weighted_server.start()
    with pytest.raises(MalformedMessageError, match="unexpected modulus level|not in seeded form"):
        running.add(bytes(forged), 1)
    assert running.count == 0
    running.add(good, 0.5)
    assert np.allclose(weighted_owner.decrypt(running.finish()), 0.5, atol=weighted_owner.params.sum_error_bound([0.5], float_weights=True))


def test_spec_of_the_first_upload_binds_the_sum(compact_owner, compact_server, other_owner, weighted_owner, uploads):
    bad = _bad_blobs(compact_owner, other_owner, weighted_owner, uploads)
    running = compact_server.start()
    running.add(bad["spec"][0], 2)
    with pytest.raises(SpecMismatchError, match="TensorSpec digest differs"):
        running.add(bad["spec-less upload into a spec'd sum"][0], 1)
    with pytest.raises(SpecMismatchError, match="TensorSpec digest differs"):
        running.add(bad["other spec digest"][0], 1)
    assert running.count == 1
    assert np.allclose(compact_owner.decrypt(running.finish()), 2 * uploads[0][0], atol=compact_owner.params.sum_error_bound([2]))


@pytest.mark.parametrize(
    ("weight", "error", "message"),
    [
        (0, ValueError, "weight must be a positive finite number, got 0"),
        (-3, ValueError, "weight must be a positive finite number, got -3"),
        (float("nan"), ValueError, "weight must be a positive finite number"),
        (True, TypeError, "weight must be an int or a float, got bool"),
        ("2", TypeError, "weight must be an int or a float, got str"),
        (1001, ValueError, "weight 1001 exceeds max_weight=1000"),
        (1e-300, ValueError, "is below 9.5367431640625e-07 .it would encode to nothing"),
    ],
)
def test_bad_weights(compact_server, uploads, weight, error, message) -> None:
    running = compact_server.start()
    running.add(uploads[1][1], 1)
    with pytest.raises(error, match=message):
        running.add(uploads[2][1], weight)
    assert running.count == 1 and running.total_weight == 1.0


def test_more_inputs_than_num_clients_is_refused(uploads) -> None:
    owner = KeyOwner.generate(CkksParams.preset("compact", num_clients=2))
    server = owner.aggregator_context()
    blobs = [owner.encrypt(v) for v, _ in uploads[:3]]
    running = server.start()
    running.add(blobs[0], 1)
    running.add(blobs[1], 1)
    with pytest.raises(OverflowRiskError, match="num_clients=2"):
        running.add(blobs[2], 1)
    assert running.count == 2


def test_finish_rules(compact_server, uploads) -> None:
    with pytest.raises(LocalProtocolError, match="no upload was added"):
        compact_server.start().finish()
    with pytest.raises(LocalProtocolError, match="no upload was added"):
        compact_server.weighted_sum([])
    running = compact_server.start()
    running.add(uploads[3][1], 1)
    running.finish()
    with pytest.raises(LocalProtocolError, match="finished"):
        running.add(uploads[4][1], 1)
    with pytest.raises(LocalProtocolError, match="already finished"):
        running.finish()


def test_start_arguments(compact_server) -> None:
    spec = TensorSpec.from_tensors({"w": np.zeros(3, np.float32)})
    assert compact_server.start(spec=spec).length == 3
    with pytest.raises(ValueError, match="length 4 differs from spec.size 3"):
        compact_server.start(length=4, spec=spec)
    with pytest.raises(ValueError, match=r"length must be an int in \[1, "):
        compact_server.start(length=0)
    with pytest.raises(TypeError, match="spec must be a TensorSpec"):
        compact_server.start(spec=b"short")


def test_decrypt_refuses_other_contexts_and_garbage(compact_owner, other_owner, uploads) -> None:
    with pytest.raises(ContextMismatchError, match="another CKKS context"):
        other_owner.decrypt(uploads[0][1])
    with pytest.raises(MalformedMessageError, match="bad magic"):
        compact_owner.decrypt(b"X" * 200)


@given(st.binary(min_size=0, max_size=300), st.integers(0, 10_000))
@settings(max_examples=100, deadline=None)
def test_context_decoder_is_strict(junk: bytes, cut: int) -> None:
    with pytest.raises(MalformedMessageError):
        AggregatorContext.from_bytes(junk)
    raw = CkksParams.preset("compact").to_bytes()
    framed = b"FCHC" + struct.pack(">BBH", 3, 1, len(raw)) + raw + b"\x01" * 32
    assert AggregatorContext.from_bytes(framed).params == CkksParams.preset("compact")
    with pytest.raises(MalformedMessageError, match="version 2 .one real per CKKS slot"):
        AggregatorContext.from_bytes(b"FCHC" + struct.pack(">BBH", 2, 1, len(raw)) + raw + b"\x01" * 32)
    if cut < len(framed):
        with pytest.raises(MalformedMessageError):
            AggregatorContext.from_bytes(framed[:cut])


def test_version_1_blobs_are_refused_with_a_clear_error(compact_owner) -> None:
    from fedcrypt.he.blob import peek_header as peek

    blob = bytearray(compact_owner.encrypt(np.ones(5)))
    assert peek(bytes(blob)).length == 5
    for version, reason in ((1, "complex packing"), (2, "aggregate provenance")):
        blob[4] = version
        with pytest.raises(MalformedMessageError, match=f"version {version} .made before {reason}"):
            compact_owner.decrypt(bytes(blob))
        with pytest.raises(MalformedMessageError, match=f"version {version} .made before {reason}"):
            compact_owner.aggregator_context().weighted_sum([(bytes(blob), 1)])


def test_decrypt_sum_releases_what_decrypt_releases_for_a_sum_built_here(compact_owner, other_owner) -> None:
    """A decryptor that sums uploads itself skips the provenance recomputation, and gets the
    same flooded values bit for bit (the noise is a function of the key and the ciphertext)."""
    blobs = [compact_owner.encrypt(np.full(LENGTH, value)) for value in (0.25, -0.5, 1.0)]

    def fresh():
        total = compact_owner.aggregator_context().start()
        for blob in blobs:
            total.add(blob, 2)
        return total

    via_blob = compact_owner.decrypt(fresh().finish())
    np.testing.assert_array_equal(compact_owner.decrypt_sum(fresh()), via_blob)
    assert abs(via_blob - 1.5).max() <= compact_owner.params.sum_error_bound([2, 2, 2])
    finished = fresh()
    finished.finish()
    with pytest.raises(LocalProtocolError):
        compact_owner.decrypt_sum(finished)
    with pytest.raises(ContextMismatchError):
        other_owner.decrypt_sum(fresh())
    with pytest.raises(TypeError, match="EncryptedSum"):
        compact_owner.decrypt_sum(fresh().finish())  # type: ignore[arg-type]


def test_load_seeded_zero_is_the_checked_load_of_the_same_bytes(compact_owner) -> None:
    """The decryptor's fast seed expansion gives what the checked loader gives, seed by seed."""
    import os as _os

    from fedcrypt.he import _seal

    rt = _seal.runtime(compact_owner.params)
    scale = compact_owner.params.encoding_scale
    for prng_type in (1, 2):
        for _ in range(2):
            seed = bytes([prng_type]) + _os.urandom(64)
            fast = _seal.load_seeded_zero(rt.context, rt.upload_parms_id, scale, seed)
            data = _seal.seeded_zero_bytes(rt.context, rt.upload_parms_id, scale, seed)
            slow = _seal.load_from_bytes(rt.seal.Ciphertext(rt.context), rt.context, data, "t", seeded=True)
            assert _seal.save_bytes(fast) == _seal.save_bytes(slow)
    for bad in (b"\x00" + bytes(64), b"\x03" + bytes(64), b"\x01" + bytes(63)):
        with pytest.raises(MalformedMessageError, match="PRNG type"):
            _seal.load_seeded_zero(rt.context, rt.upload_parms_id, scale, bad)
