"""Attacker review 4, single-key CKKS (fedcrypt.he): two aggregates a server can send make the
new provenance check (:func:`fedcrypt.he._provenance.check_aggregate`) raise an *untyped*
exception out of ``KeyOwner.decrypt`` and out of a round node's ``CkksClient.handle``.

SECURITY.md: "Every peer byte string is checked in Python before SEAL sees it ... Anything
else raises a ``FedcryptError``", and the fuzz table lists ``ckks.KeyOwner.decrypt(aggregate)``
as "typed errors only". Neither aggregate gets anything from the key holder (no value is
released, the node's state is unchanged), so this is a robustness break of a stated
contract, not a leak; a caller that catches ``FedcryptError`` to drop one peer's message (as
the round drivers and the Flower mods do) sees its node crash instead.

* **A provenance weight that rounds to zero** (``weighted`` preset, non-integer weights):
  ``check_weight`` accepts any positive finite weight up to ``max_weight``, e.g. ``1e-300``;
  ``weigh`` encodes it at the scale of the level's last prime (``round(1e-300 * q1) = 0``)
  and SEAL's ``multiply_plain`` by the zero plaintext throws ``RuntimeError("result
  ciphertext is transparent")``, which ``check_aggregate`` does not catch. In a round the
  weights still add up to the header's total (``[1e-300, 2.0]`` is ``2.0``), so the node's
  header checks pass first.
* **An aggregate ciphertext in seeded form**: ``KeyOwner._load`` checks an aggregate with
  ``seeded=False``, which *allows* the seeded form (only an upload must be seeded), and SEAL
  loads it; ``polynomial_words`` then raises ``ValueError("polynomial_words needs a
  checked, unseeded ciphertext")``. With the ``compact`` preset an upload's ciphertext is at
  the aggregate's level, so an upload's own bytes are such a piece.

Each test asserts the secure behaviour (a ``MalformedMessageError``, nothing released, the
node's state unchanged). Fixed: weights below ``fedcrypt.he._provenance.MIN_WEIGHT`` are
refused and SEAL's refusals inside the check become typed; an aggregate's ciphertexts must
not be in seeded form.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fedcrypt.errors import HonestButCuriousWarning, MalformedMessageError
from fedcrypt.he import CkksParams, KeyOwner
from fedcrypt.he.blob import BlobHeader, BlobKind, decode_blob, encode_blob
from fedcrypt.he.round import CkksClient, CkksConfig, DecryptRequest, EncryptRequest

ROUND = 3
MAX_WEIGHT = 10.0


def _outcome(call) -> BaseException | None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test is about which exception comes out
        return exc
    return None


def _round(preset: str) -> tuple[dict[str, CkksClient], dict[str, bytes], KeyOwner]:
    """Two no-roster nodes with one key file, each with its upload of round ``ROUND``."""
    params = CkksParams.preset(preset, num_clients=8, clip=4.0, max_weight=4.0)
    key = KeyOwner.generate(params)
    key_file = key.to_bytes(include_secret_key=True)
    config = CkksConfig(params, min_contributions=2, max_weight=MAX_WEIGHT, key_setup="file")
    rng = np.random.default_rng(5)
    clients, uploads = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        for i, name in enumerate(("a", "b")):
            clients[name] = CkksClient(config, 100 + i, key=KeyOwner.from_bytes(key_file))
    for name, client in clients.items():
        client.set_input(rng.uniform(-1.0, 1.0, 6), 2.0)
        uploads[name] = client.handle(EncryptRequest(ROUND, client.node, client.fingerprint).to_bytes()).blob
    return clients, uploads, key


def _honest_aggregate(key: KeyOwner, uploads: dict[str, bytes]) -> tuple[BlobHeader, list[bytes]]:
    ctx = key.aggregator_context()
    total = ctx.start()
    for blob in uploads.values():
        total.add(blob, 1)
    header, pieces = decode_blob(total.finish(), key.params, key.fingerprint, kinds=(BlobKind.AGGREGATE,))
    return header, [bytes(p) for p in pieces]


def _tiny_weight_aggregate(key: KeyOwner, uploads: dict[str, bytes]) -> bytes:
    """The honest sum's bytes, its provenance's weights changed to ``[1e-300, 2.0]`` (total 2.0)."""
    header, pieces = _honest_aggregate(key, uploads)
    (_, seeds_a), (_, seeds_b) = header.provenance
    provenance = ((1e-300, seeds_a), (2.0, seeds_b))
    assert 1e-300 + 2.0 == header.total_weight == 2.0
    return encode_blob(BlobHeader(header.kind, header.fingerprint, header.length, header.spec_digest,
                                  header.contributions, header.total_weight, header.ciphertext_count, provenance), pieces)


def _seeded_piece_aggregate(key: KeyOwner, uploads: dict[str, bytes]) -> bytes:
    """The honest sum's header and provenance around upload a's own (seeded) ciphertext bytes."""
    header, _ = _honest_aggregate(key, uploads)
    _, upload_pieces = decode_blob(uploads["a"], key.params, key.fingerprint, kinds=(BlobKind.UPLOAD,))
    return encode_blob(header, [bytes(p) for p in upload_pieces])


CASES = {
    "weight rounding to zero": ("weighted", _tiny_weight_aggregate),
    "seeded aggregate ciphertext": ("compact", _seeded_piece_aggregate),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_key_owner_decrypt_refuses_the_aggregate_with_a_typed_error(case: str) -> None:
    preset, build = CASES[case]
    _, uploads, key = _round(preset)
    error = _outcome(lambda: key.decrypt(build(key, uploads)))
    assert isinstance(error, MalformedMessageError), f"{case}: {type(error).__name__}: {error}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_node_refuses_the_aggregate_with_a_typed_error_and_keeps_its_state(case: str) -> None:
    preset, build = CASES[case]
    clients, uploads, key = _round(preset)
    node = clients["a"]
    before = node.to_state_bytes()
    error = _outcome(lambda: node.handle(DecryptRequest(ROUND, node.node, aggregate=build(key, uploads)).to_bytes()))
    assert node.to_state_bytes() == before  # nothing released either way
    assert isinstance(error, MalformedMessageError), f"{case}: {type(error).__name__}: {error}"
