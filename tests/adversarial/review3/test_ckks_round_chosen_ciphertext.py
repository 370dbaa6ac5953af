"""Attacker review 3, CKKS round (fedcrypt.he.round): chosen ciphertexts defeat the flooding.

``KeyOwner.decrypt`` floods a release with noise sized from the *header's* contribution
count and total weight (``CkksParams.flooding_stddev``): enough to hide the noise of honest
uploads, nothing for a ciphertext whose "noise" the attacker chose. The ciphertext
``(c0, c1) = (0, K)`` needs no key to write (its NTT words are the constant ``K``) and
decrypts to ``K * s``; with ``K = 2^57`` the flooding (about ``2^25`` per coefficient) is
rounded away and one release gives every coefficient of the secret ``s``. The attacker
then rebuilds the group's ``KeyOwner`` from ``s`` and the public context and decrypts every
upload of every round.

* Without a roster (the honest-but-curious mode, key from a key file) the server alone
  sends that ciphertext as an aggregate: its header passes every check of the decryptor
  (aggregate kind, ``min_contributions`` contributions, total weight equal to the count),
  and the header's length is the server's to choose, so one release covers a whole
  ciphertext whatever the nodes' vector length. SECURITY.md says a deviating server gets
  "that upload to the precision above (not the key)" and, in a key-file round, lists only
  the relabelled upload.
* With a roster, one colluding roster member that holds no key (the claim's condition is
  "colluding with no key holder": e.g. a member left out of a key file's distribution or a
  rotation, or a late joiner in a dealer round, since holders never deal again) signs the
  forged ciphertext as its upload and confirms the set; an honest node confirms the set
  (its own upload is in it unchanged) and an honest decryptor sums and decrypts it. With a
  vector of at least one ciphertext's worth of values (8192 for ``compact``) the server gets
  the key; at any length, a forged zero upload next to one honest upload gives the server
  that single upload.

Fixed: the secret key multiplies only PRG outputs. Uploads must be seeded (their ``c1`` is
the expansion of a seed), and an aggregate carries its provenance (each summand's weight and
seeds), from which the decryptor recomputes ``c1`` word for word
(:mod:`fedcrypt.he._provenance`). Each attack below is now refused with a typed error and
leaves the node's state as it was; each has a positive control: the same attack against a
node with that check switched off still takes the key (or the upload), so the tests would
see a regression.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest

import fedcrypt.he._seal as seal_module
import fedcrypt.he.context as context_module
from fedcrypt.errors import FedcryptError, HonestButCuriousWarning, MalformedMessageError
from fedcrypt.he import CkksParams, KeyOwner
from fedcrypt.he.blob import peek_header
from fedcrypt.he.round import (
    CkksClient,
    CkksConfig,
    Confirmation,
    ConfirmedUpload,
    ConfirmRequest,
    DecryptRequest,
    EncryptRequest,
    Upload,
)
from fedcrypt.he.round import _statements
from fedcrypt.identity import NodeIdentity, Roster

from . import _ckks_forge as forge

PARAMS = CkksParams.preset("compact", num_clients=8, clip=4.0, max_weight=1.0)
MAX_WEIGHT = 10.0
N = PARAMS.poly_modulus_degree
K = 1 << 57
ROUND = 7


def _nodes(names: list[str], *, roster: bool, dim: int, seed: int = 3):
    identities = {name: NodeIdentity.generate() for name in names}
    rost = Roster({name: ident.public_bytes for name, ident in identities.items()}) if roster else None
    config = CkksConfig(PARAMS, min_contributions=2, max_weight=MAX_WEIGHT, key_setup="file", roster=rost)
    rng = np.random.default_rng(seed)
    inputs = {name: rng.uniform(-1.0, 1.0, dim) for name in names}
    return config, identities, inputs


def _upload(client: CkksClient, vector: np.ndarray, weight: float, round_id: int) -> Upload:
    client.set_input(vector, weight)
    return client.handle(EncryptRequest(round_id, client.node, client.fingerprint).to_bytes())


def _scaled(vector: np.ndarray, weight: float) -> np.ndarray:
    return np.append(vector * (weight / MAX_WEIGHT), weight / MAX_WEIGHT)


def weaken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-fix decryptor: no provenance check, unseeded uploads accepted."""
    monkeypatch.setattr(context_module, "check_aggregate", lambda *args: None)
    loader = seal_module.load_from_bytes
    monkeypatch.setattr(seal_module, "load_from_bytes", lambda *args, seeded=None: loader(*args, seeded=None))


def _steal_without_roster() -> tuple[bool, str]:
    """The server alone sends ``(0, K)`` as an aggregate: ``(key stolen, refusal or '')``."""
    key = KeyOwner.generate(PARAMS)
    key_file = key.to_bytes(include_secret_key=True)
    config, _, inputs = _nodes(["a", "b", "c"], roster=False, dim=N - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        clients = {name: CkksClient(config, 100 + i, key=KeyOwner.from_bytes(key_file)) for i, name in enumerate(inputs)}
    uploads = {name: _upload(c, inputs[name], 2.0, ROUND) for name, c in clients.items()}
    ctx = clients["a"]._owner.aggregator_context()  # public: the server's AggregatorContext
    template = forge.template_ciphertext(ctx, uploads["a"].blob)
    header = peek_header(uploads["a"].blob)
    # the server's "aggregate": (0, K), one ciphertext of a's layout, 2 made-up summands of weight 1
    crafted = forge.forge_blob(
        ctx, forge.key_times(ctx, template, K), kind=forge.BlobKind.AGGREGATE, length=header.length,
        spec_digest=header.spec_digest, contributions=2,
    )
    before = clients["a"].to_state_bytes()
    try:
        reply = clients["a"].handle(DecryptRequest(ROUND, 100, aggregate=crafted).to_bytes())
    except MalformedMessageError as exc:
        assert clients["a"].to_state_bytes() == before
        return False, str(exc)
    thief = forge.recover_key(reply.values, ctx, K)
    stolen = thief.decrypt(uploads["b"].blob) if thief is not None else None
    return stolen is not None and np.allclose(stolen, _scaled(inputs["b"], 2.0), atol=1e-4), ""


def test_no_roster_server_cannot_get_the_key_from_one_decryption() -> None:
    stolen, refusal = _steal_without_roster()
    assert not stolen and "forged aggregate" in refusal


def test_no_roster_forged_aggregate_takes_the_key_from_a_weakened_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive control: without the provenance check the same aggregate gives the key."""
    weaken(monkeypatch)
    assert _steal_without_roster() == (True, "")


def _roster_round(dim: int):
    """Honest members a and b hold the key file; member m is on the roster, holds no key, and colludes."""
    key = KeyOwner.generate(PARAMS)
    key_file = key.to_bytes(include_secret_key=True)
    config, identities, inputs = _nodes(["a", "b", "m"], roster=True, dim=dim)
    clients = {
        name: CkksClient(config, 100 + i, identity=identities[name], key=KeyOwner.from_bytes(key_file))
        for i, name in enumerate(["a", "b"])
    }
    uploads = {name: _upload(c, inputs[name], 4.0, ROUND) for name, c in clients.items()}
    return config, identities, inputs, clients, uploads


def _colluder_upload(config: CkksConfig, identity: NodeIdentity, ciphertext: bytes, honest: Upload, ctx) -> Upload:
    header = peek_header(honest.blob)
    blob = forge.forge_blob(ctx, ciphertext, kind=forge.BlobKind.UPLOAD, length=header.length, spec_digest=header.spec_digest)
    signature = identity.signing_key.sign(_statements.upload_bytes(
        roster_digest=config.roster_digest, round_id=ROUND, fingerprint=ctx.fingerprint, node=102, member="m",
        blob_digest=hashlib.sha256(blob).digest(), layout=header.spec_digest,
    ))
    return Upload(ROUND, 102, blob, "m", signature)


def _decrypt_with_colluder(config, identities, clients, uploads, forged: Upload) -> np.ndarray:
    """a confirms {a, m}; the server signs m's confirmation; b (never in the set) decrypts it."""
    entries = tuple((u.member, u.node, hashlib.sha256(u.blob).digest()) for u in (uploads["a"], forged))
    confirmation: Confirmation = clients["a"].handle(ConfirmRequest(ROUND, 100, entries).to_bytes())
    statement = _statements.confirm_bytes(
        roster_digest=config.roster_digest, round_id=ROUND, fingerprint=clients["a"].fingerprint,
        layout=_statements_layout(uploads["a"]), summed=_statements.set_digest(entries),
    )
    forged_confirmation = identities["m"].signing_key.sign(statement)
    request = DecryptRequest(ROUND, 101, uploads=(
        ConfirmedUpload(uploads["a"], confirmation.signature), ConfirmedUpload(forged, forged_confirmation),
    ))
    return clients["b"].handle(request.to_bytes()).values


def _statements_layout(upload: Upload) -> bytes:
    return peek_header(upload.blob).spec_digest


def _colluder_attack(make_ciphertext) -> tuple[dict, np.ndarray | str]:
    config, identities, inputs, clients, uploads = _roster_round(N - 1)  # N - 1 values + the weight slot
    ctx = clients["a"]._owner.aggregator_context()
    template = forge.template_ciphertext(ctx, uploads["a"].blob)
    forged = _colluder_upload(config, identities["m"], make_ciphertext(ctx, template), uploads["a"], ctx)
    before = clients["b"].to_state_bytes()
    try:
        released = _decrypt_with_colluder(config, identities, clients, uploads, forged)
    except MalformedMessageError as exc:
        assert clients["b"].to_state_bytes() == before
        return {"ctx": ctx, "inputs": inputs, "uploads": uploads}, str(exc)
    return {"ctx": ctx, "inputs": inputs, "uploads": uploads}, released


def _key_from(outcome: tuple[dict, np.ndarray | str]) -> bool:
    world, released = outcome
    if isinstance(released, str):
        return False
    thief = forge.recover_key(released, world["ctx"], K)
    stolen = thief.decrypt(world["uploads"]["b"].blob) if thief is not None else None
    return stolen is not None and np.allclose(stolen, _scaled(world["inputs"]["b"], 4.0), atol=1e-4)


def _isolates_a(outcome: tuple[dict, np.ndarray | str]) -> bool:
    world, released = outcome
    return not isinstance(released, str) and np.allclose(released, _scaled(world["inputs"]["a"], 4.0), atol=1e-4)


def test_roster_keyless_colluder_cannot_get_the_key() -> None:
    outcome = _colluder_attack(lambda ctx, template: forge.key_times(ctx, template, K))
    assert not _key_from(outcome) and "not in seeded form" in outcome[1]


def test_roster_keyless_colluder_cannot_isolate_one_upload() -> None:
    outcome = _colluder_attack(lambda ctx, template: forge.zero(template))
    assert not _isolates_a(outcome) and "not in seeded form" in outcome[1]


def test_roster_colluders_seeded_forgery_masks_the_honest_upload() -> None:
    """What a keyless colluder *can* send, a seeded ``(c0, seed)`` with ``c0 = 0``, is
    accepted; it adds ``PRG(seed) * s`` to the sum, which hides a's upload and the key."""
    rt = seal_module.runtime(PARAMS)
    seeded = seal_module.seeded_zero_bytes(rt.context, rt.upload_parms_id, PARAMS.encoding_scale, b"\x01" + bytes(64))
    outcome = _colluder_attack(lambda ctx, template: seeded)
    assert not isinstance(outcome[1], str)
    assert not _isolates_a(outcome) and not _key_from(outcome)


def test_roster_colluder_takes_the_key_and_the_upload_from_a_weakened_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive controls: with unseeded uploads accepted, both forgeries work."""
    weaken(monkeypatch)
    assert _key_from(_colluder_attack(lambda ctx, template: forge.key_times(ctx, template, K)))
    assert _isolates_a(_colluder_attack(lambda ctx, template: forge.zero(template)))
