"""Fuzzing the other decoders: TensorSpec, CKKS blobs/contexts/parameters/key transport,
the Flower adapter's persisted client state and layout, DP event JSON.

Each gets random, truncated, bit-flipped, extended and inflated inputs; only typed errors
may come out (FedcryptError; ``ValueError`` where the decoder documents it, as the DP
event JSON does), with no hang (pytest-timeout) and a bounded peak allocation.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcrypt.errors import FedcryptError
from fedcrypt.testing import lora_specs, malformed, mutations
from fedcrypt.vectors import TensorSpec

from ._fuzz import FUZZ_COUNTS, typed_only

pytestmark = pytest.mark.timeout(300)

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------ TensorSpec
@FAST
@given(spec=lora_specs(max_layers=3), data=st.data())
def test_tensor_spec_decoder(spec: TensorSpec, data) -> None:
    valid = spec.to_bytes()
    assert TensorSpec.from_bytes(valid) == spec
    blob = data.draw(malformed(valid), label="input")
    result = typed_only("TensorSpec", TensorSpec.from_bytes, blob)
    if isinstance(result, TensorSpec):
        assert result.to_bytes() == blob


def _peak(fn, blob: bytes) -> int:
    tracemalloc.start()
    try:
        fn(blob)
    except FedcryptError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_tensor_spec_inflated_fields_allocate_nothing_large() -> None:
    spec = TensorSpec.from_tensors({"a.lora_A": np.zeros((4, 8), np.float32), "a.lora_B": np.zeros((8, 4), np.float32)})
    valid = spec.to_bytes()
    for width in (4, 8):
        for at in range(len(valid) - width + 1):
            blob = valid[:at] + b"\xff" * width + valid[at + width :]
            FUZZ_COUNTS["TensorSpec.inflated"] += 1
            assert _peak(lambda b: typed_only("TensorSpec", TensorSpec.from_bytes, b), blob) < 1 << 20


# ------------------------------------------------------------------------ CKKS
@pytest.fixture(scope="module")
def ckks():
    he = pytest.importorskip("tenseal") and __import__("fedcrypt.he", fromlist=["KeyOwner"])
    owner = he.KeyOwner.generate(he.CkksParams.preset("compact", num_clients=4))
    server = he.AggregatorContext.from_bytes(owner.aggregator_context().to_bytes())
    rng = np.random.default_rng(3)  # test data, not secrets
    upload = owner.encrypt(rng.uniform(-1, 1, 300))
    total = server.start()
    total.add(upload, 2)
    return he, owner, server, upload, total.finish()


def test_ckks_decoders(ckks) -> None:
    he, owner, server, upload, aggregate = ckks
    from fedcrypt.he.blob import decode_blob, peek_header

    params_bytes = owner.params.to_bytes()
    public = owner.aggregator_context().to_bytes()
    secret = owner.to_bytes(include_secret_key=True)

    def add(blob: bytes) -> None:
        total = server.start()
        try:
            total.add(blob, 1)
        except FedcryptError:
            assert total.count == 0
            raise

    targets = [
        ("ckks.peek_header", peek_header, aggregate),
        ("ckks.decode_blob", lambda b: decode_blob(b, owner.params, owner.fingerprint, kinds=(1, 2)), upload),
        ("ckks.KeyOwner.decrypt(aggregate)", owner.decrypt, aggregate),
        ("ckks.KeyOwner.decrypt(upload)", owner.decrypt, upload),
        ("ckks.EncryptedSum.add", add, upload),
        ("ckks.CkksParams.from_bytes", he.CkksParams.from_bytes, params_bytes),
        ("ckks.AggregatorContext.from_bytes", he.AggregatorContext.from_bytes, public),
        ("ckks.KeyOwner.from_bytes", he.KeyOwner.from_bytes, secret),
    ]
    for name, decoder, valid in targets:

        @settings(max_examples=40, deadline=None, database=None)
        @given(blob=malformed(valid, max_random=256))
        def fuzz(blob: bytes) -> None:
            typed_only(name, decoder, blob, allowed=(FedcryptError,))

        fuzz()


def test_ckks_inflated_header_fields_allocate_nothing_large(ckks) -> None:
    he, owner, server, upload, aggregate = ckks
    from fedcrypt.he.blob import HEADER_BYTES

    for valid in (upload, aggregate):
        for width in (4, 8):
            for at in range(0, HEADER_BYTES + 8 - width + 1):
                blob = valid[:at] + b"\xff" * width + valid[at + width :]
                FUZZ_COUNTS["ckks.inflated"] += 1
                peak = _peak(lambda b: typed_only("ckks.inflated", owner.decrypt, b), blob)
                # the decoder may hold views of the input; never a multiple of the claimed sizes
                assert peak < (1 << 20) + 2 * len(blob)


def test_ckks_key_transport(ckks) -> None:
    he, owner, *_ = ckks
    from fedcrypt.crypto import X25519KeyPair
    from fedcrypt.he.keyshare import open_key_from_peer, seal_key_for_peer

    dealer, peer = X25519KeyPair.generate(), X25519KeyPair.generate()
    valid = seal_key_for_peer(owner, sender=dealer, sender_id=0, recipient_id=1, recipient_public=peer.public_bytes)

    def open_(blob: bytes):
        return open_key_from_peer(blob, recipient=peer, recipient_id=1, sender_id=0, sender_public=dealer.public_bytes)

    @settings(max_examples=40, deadline=None, database=None)
    @given(blob=malformed(valid, max_random=256))
    def fuzz(blob: bytes) -> None:
        result = typed_only("ckks.open_key_from_peer", open_, blob)
        if not isinstance(result, FedcryptError):
            assert blob == valid  # AES-GCM: any change is refused

    fuzz()


# ------------------------------------------------------------------------ Flower adapter state
def test_secagg_client_state_and_flower_config_decoders() -> None:
    from fedcrypt.secagg.setup import dump_config, load_config
    from fedcrypt.secagg import ClientProtocol, SecAggConfig
    from fedcrypt.testing import InProcessClients

    config = SecAggConfig(4, 3)
    endpoints = InProcessClients(config, round_id=1, length=4)
    for client in range(4):
        endpoints.advertise(client)
    state = endpoints.clients[0].to_state_bytes()
    for name, decoder, valid in (
        ("secagg.ClientProtocol.from_state_bytes", ClientProtocol.from_state_bytes, state),
        ("flower.load_config", load_config, dump_config(config)),
    ):

        @settings(max_examples=80, deadline=None, database=None)
        @given(blob=malformed(valid))
        def fuzz(blob: bytes) -> None:
            typed_only(name, decoder, blob)

        fuzz()


def test_flower_layout_decoder() -> None:
    pytest.importorskip("flwr")
    from fedcrypt.integrations.flower import Layout as _Layout

    spec = TensorSpec.from_tensors({"w": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.float32)})
    valid = _Layout("arrays", "metrics", spec, ("loss",), "num-examples").to_bytes()

    @settings(max_examples=80, deadline=None, database=None)
    @given(blob=malformed(valid))
    def fuzz(blob: bytes) -> None:
        typed_only("flower._Layout", _Layout.from_bytes, blob)

    fuzz()


# ------------------------------------------------------------------------ DP event JSON
def test_dp_event_json_decoder() -> None:
    pytest.importorskip("dp_accounting")
    import dp_accounting

    from fedcrypt.dp.events import event_from_json, event_to_json

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), 500
    )
    valid = event_to_json(event)

    @settings(max_examples=80, deadline=None, database=None)
    @given(blob=mutations(valid.encode()) | st.text(max_size=200))
    def fuzz(blob) -> None:
        text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
        # documented: ValueError on malformed JSON (the dp module's contract)
        typed_only("dp.event_from_json", event_from_json, text, allowed=(FedcryptError, ValueError))

    fuzz()
    deep = "[" * 100_000 + "]" * 100_000
    typed_only("dp.event_from_json", event_from_json, deep, allowed=(FedcryptError, ValueError))


# ------------------------------------------------------------------------ privacy ledger records
def test_privacy_ledger_records(tmp_path) -> None:
    pytest.importorskip("dp_accounting")
    import sqlite3

    import dp_accounting

    from fedcrypt.dp import PrivacyLedger

    path = tmp_path / "ledger.sqlite"
    with PrivacyLedger(path, 10.0, 1e-5) as ledger:
        ledger.spend(dp_accounting.GaussianDpEvent(8.0))
        ledger.spend(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(2.0)))
    valid = sqlite3.connect(path).execute("SELECT event FROM spends WHERE round = 2").fetchone()[0]

    def reopen_with(event_text: str) -> float:
        conn = sqlite3.connect(path)
        conn.execute("UPDATE spends SET event = ? WHERE round = 2", (event_text,))
        conn.commit()
        conn.close()
        with PrivacyLedger.open(path) as reopened:
            reopened.verify()
            return reopened.spent

    @settings(max_examples=10, deadline=None, database=None)  # each example fsyncs twice
    @given(blob=mutations(valid.encode()))
    def fuzz(blob: bytes) -> None:
        text = blob.decode("utf-8", "replace")
        result = typed_only("dp.PrivacyLedger.record", reopen_with, text)
        if not isinstance(result, FedcryptError):
            assert result <= 10.0

    fuzz()
    reopen_with(valid)  # restored: readable again

    @settings(max_examples=6, deadline=None, database=None)
    @given(blob=st.binary(max_size=4096) | mutations(path.read_bytes()[:4096]))
    def not_a_ledger(blob: bytes) -> None:
        other = tmp_path / "other.sqlite"
        other.write_bytes(blob)
        for suffix in ("-wal", "-shm"):
            Path(str(other) + suffix).unlink(missing_ok=True)
        typed_only("dp.PrivacyLedger.open", open_and_verify, other)

    def open_and_verify(target: Path) -> None:
        with PrivacyLedger.open(target) as reopened:
            reopened.verify()

    fuzz()
    not_a_ledger()
