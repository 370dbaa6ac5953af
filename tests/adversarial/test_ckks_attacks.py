"""A malicious server sends crafted aggregates to a CKKS key holder.

The key holder (:class:`~fedcrypt.he.KeyOwner`) must refuse, with a typed error, every
aggregate that is not a well-formed ciphertext of its own context at the aggregate level.
What CKKS with a shared client key cannot stop is documented in SECURITY.md and shown
here: a server that relabels one client's upload as "the aggregate" gets it decrypted
(the blob header is not authenticated and the key holder decrypts what it is given), and
a server can shift the decrypted result (no integrity of the aggregate).
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

pytest.importorskip("tenseal")

from fedcrypt.errors import ContextMismatchError, MalformedMessageError, SpecMismatchError  # noqa: E402
from fedcrypt.he import AggregatorContext, CkksParams, KeyOwner  # noqa: E402
from fedcrypt.he.blob import HEADER_BYTES, BlobKind, decode_blob, encode_blob, peek_header  # noqa: E402
from fedcrypt.vectors import TensorSpec  # noqa: E402

CONTRIBUTIONS_AT = 4 + 1 + 1 + 32 + 8 + 1 + 32  # magic, version, kind, fingerprint, length, flags, digest


@pytest.fixture(scope="module")
def federation():
    params = CkksParams.preset("compact", num_clients=4)
    owner = KeyOwner.generate(params)
    server = AggregatorContext.from_bytes(owner.aggregator_context().to_bytes())
    rng = np.random.default_rng(11)  # test data, not secrets
    updates = [rng.uniform(-1, 1, 500) for _ in range(3)]
    uploads = [owner.encrypt(u) for u in updates]
    return owner, server, updates, uploads


def honest_aggregate(server: AggregatorContext, uploads: list[bytes]) -> bytes:
    total = server.start()
    for blob in uploads:
        total.add(blob, 1)
    return total.finish()


def test_aggregate_under_another_context_is_refused(federation) -> None:
    owner, _, updates, _ = federation
    other = KeyOwner.generate(CkksParams.preset("compact", num_clients=4))
    other_server = AggregatorContext.from_bytes(other.aggregator_context().to_bytes())
    crafted = honest_aggregate(other_server, [other.encrypt(updates[0])])
    with pytest.raises(ContextMismatchError):
        owner.decrypt(crafted)


def test_aggregate_with_upload_level_ciphertexts_is_refused() -> None:
    # the "weighted" preset uploads at level 1 and aggregates at level 0 ("compact" uses
    # level 0 for both: there an upload *is* a valid aggregate, see the documented attack)
    owner = KeyOwner.generate(CkksParams.preset("weighted", num_clients=4))
    uploads = [owner.encrypt(np.linspace(-1, 1, 100))]
    header, pieces = decode_blob(uploads[0], owner.params, owner.fingerprint, kinds=(BlobKind.UPLOAD,))
    made_up = tuple((1.0, tuple(b"\x01" + os.urandom(64) for _ in pieces)) for _ in range(3))
    relabelled = encode_blob(
        type(header)(BlobKind.AGGREGATE, header.fingerprint, header.length, None, 3, 3.0, header.ciphertext_count, made_up),
        [bytes(p) for p in pieces],
    )
    with pytest.raises(MalformedMessageError, match="modulus level|seeded"):
        owner.decrypt(relabelled)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -1.0, 0.0])
def test_aggregate_with_a_forged_total_weight_is_refused(federation, weight: float) -> None:
    owner, server, _, uploads = federation
    blob = bytearray(honest_aggregate(server, uploads))
    blob[CONTRIBUTIONS_AT + 4 : CONTRIBUTIONS_AT + 12] = struct.pack(">d", weight)
    with pytest.raises(MalformedMessageError):
        owner.decrypt_mean(bytes(blob))


def test_aggregate_for_another_tensor_spec_is_refused(federation) -> None:
    owner, server, _, _ = federation
    spec = TensorSpec.from_tensors({"lora_A": np.zeros((10, 50), np.float32)})
    other = TensorSpec.from_tensors({"lora_B": np.zeros((50, 10), np.float32)})
    total = server.start(spec=spec)
    total.add(owner.encrypt(np.zeros(500), spec), 1)
    with pytest.raises(SpecMismatchError):
        owner.decrypt(total.finish(), other)


def test_truncated_or_padded_aggregates_are_refused(federation) -> None:
    owner, server, _, uploads = federation
    blob = honest_aggregate(server, uploads)
    for crafted in (blob[:HEADER_BYTES], blob[:-1], blob + b"\x00", blob[:HEADER_BYTES] + b"\xff" * 8):
        with pytest.raises(MalformedMessageError):
            owner.decrypt(crafted)


def test_relabelled_single_upload_is_refused(federation) -> None:
    """The server "aggregates" only the victim's upload and forges the header to claim three
    contributions: the aggregate's provenance lists one summand, so the key holder refuses
    (before the provenance, the unauthenticated header let this through)."""
    owner, server, updates, uploads = federation
    blob = bytearray(honest_aggregate(server, [uploads[1]]))
    blob[CONTRIBUTIONS_AT : CONTRIBUTIONS_AT + 12] = struct.pack(">Id", 3, 3.0)
    assert peek_header(bytes(blob)).contributions == 3
    with pytest.raises(MalformedMessageError, match="provenance"):
        owner.decrypt(bytes(blob))
    np.testing.assert_allclose(owner.decrypt(honest_aggregate(server, [uploads[1]])), updates[1], atol=1e-3)


def test_server_can_shift_the_aggregate_as_documented(federation) -> None:
    """CKKS here gives confidentiality, not integrity: adding an upload twice is refused,
    but the server may weight uploads as it likes within max_weight (SECURITY.md)."""
    owner, server, updates, uploads = federation
    total = server.start()
    total.add(uploads[0], 1)
    with pytest.raises(Exception) as info:
        total.add(uploads[0], 1)
    assert type(info.value).__name__ == "UnexpectedMessageError"
    total.add(uploads[1], 2)
    np.testing.assert_allclose(owner.decrypt(total.finish()), updates[0] + 2 * updates[1], atol=1e-3)
