"""Every refusal of the CKKS round's nodes, with real messages: key substitution at DEAL and
INSTALL, a relabelled upload, too few signers, a duplicate signer, a wrong round, a replayed
upload, another key or layout, a missing confirmation, a second decryption. Each refusal is a
typed error, releases nothing (no reply), leaves the node's state bytes unchanged, and the
right message still works afterwards. The honest-but-curious mode's known gaps are shown too
(the positive controls: the same tampering succeeds where no signature is checked)."""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import pytest

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.errors import (
    ContextMismatchError,
    FedcryptError,
    HonestButCuriousWarning,
    IdentityError,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessageError,
    ProtocolViolationError,
    SpecMismatchError,
    UnexpectedMessageError,
)
from fedcrypt.he import AggregatorContext, KeyOwner, open_key_from_peer, seal_key_for_peer
from fedcrypt.he.blob import HEADER_BYTES, BlobKind, decode_blob, encode_blob
from fedcrypt.he.round import (
    CkksClient,
    ConfirmRequest,
    DealReply,
    DealRequest,
    Decryption,
    DecryptRequest,
    EncryptRequest,
    InstallReply,
    InstallRequest,
    KeyState,
    Stage,
    Upload,
    fedavg_error_bound,
    layout_digest,
)
from fedcrypt.he.round import _statements
from fedcrypt.identity import NodeIdentity

from ._round_harness import D, MAX_WEIGHT, PARAMS, Federation, confirmed


def refused(client: CkksClient, message: Any, error: type[FedcryptError], match: str | None = None) -> None:
    """``client`` refuses ``message`` (object and bytes) with ``error``, and its state does not change."""
    before = client.to_state_bytes()
    for form in (message, message.to_bytes()):
        with pytest.raises(error, match=match):
            client.handle(form)
        assert client.to_state_bytes() == before


# ============================================================================ key set-up
def test_key_substitution_at_deal_is_refused_and_nothing_is_sealed() -> None:
    fed = Federation(3, roster=True)
    _, log = fed.run(1, until=Stage.DEAL)
    deal = log.requests[Stage.DEAL][100]
    dealer = fed.clients[100]
    victim = deal.peers[0]
    attacker = X25519KeyPair.generate()
    rest = deal.peers[1:]
    # the server swaps the victim's X25519 key for its own, keeping the victim's signature
    refused(dealer, DealRequest(1, 100, (replace(victim, x25519=attacker.public_bytes),) + rest), InvalidSignature)
    # ... or signs the swapped advert itself with a key that is not on the roster
    impostor = NodeIdentity.generate()
    statement = _statements.advert_bytes(
        roster_digest=fed.config.roster_digest, round_id=1, node=victim.node, member=victim.member,
        x25519=attacker.public_bytes, fingerprint=b"",
    )
    forged = replace(victim, x25519=attacker.public_bytes, signature=impostor.signing_key.sign(statement))
    refused(dealer, DealRequest(1, 100, (forged,) + rest), InvalidSignature)
    # ... or drops the signature, or names a member who is not on the roster
    refused(dealer, DealRequest(1, 100, (replace(victim, signature=b""),) + rest), InvalidSignature, "not signed")
    refused(dealer, DealRequest(1, 100, (replace(victim, member="mallory"),) + rest), IdentityError)
    # ... or replays the victim's advert from another round
    refused(dealer, DealRequest(1, 100, (replace(victim, round_id=0),) + rest), UnexpectedMessageError)
    refused(dealer, DealRequest(1, 100, (victim, victim)), ProtocolViolationError, "repeats")
    itself = replace(victim, node=100, member="node-0")
    refused(dealer, DealRequest(1, 100, (itself,) + rest), ProtocolViolationError, "among its own peers")
    assert dealer.key_state is KeyState.AWAITING_KEY
    # the honest request still works
    reply = dealer.handle(deal)
    assert isinstance(reply, DealReply) and dealer.key_state is KeyState.READY
    assert [node for node, _ in reply.sealed] == [victim.node] + [p.node for p in rest]


def test_without_a_roster_the_same_substitution_hands_the_server_the_key() -> None:
    """Positive control: the honest-but-curious mode's documented gap."""
    fed = Federation(3, roster=False)
    _, log = fed.run(1, until=Stage.DEAL)
    deal = log.requests[Stage.DEAL][100]
    victim = deal.peers[0]
    attacker = X25519KeyPair.generate()
    reply = fed.clients[100].handle(DealRequest(1, 100, (replace(victim, x25519=attacker.public_bytes),) + deal.peers[1:]))
    stolen = open_key_from_peer(
        dict(reply.sealed)[victim.node], recipient=attacker, recipient_id=victim.node, sender_id=100,
        sender_public=reply.x25519, round_id=1,
    )
    assert stolen.fingerprint == fed.clients[100].fingerprint


def _server_key(request: InstallRequest, node: int) -> tuple[KeyOwner, X25519KeyPair, bytes]:
    """A key the server made, sealed to ``node``'s advertised X25519 key under the server's own X25519 key."""
    evil, pair = KeyOwner.generate(PARAMS), X25519KeyPair.generate()
    peer_key = next(p.x25519 for p in request.peers if p.node == node)
    sealed = seal_key_for_peer(evil, sender=pair, sender_id=request.dealer, recipient_id=node, recipient_public=peer_key, round_id=request.round_id)
    return evil, pair, sealed


def test_key_substitution_at_install_is_refused_and_nothing_is_installed() -> None:
    fed = Federation(3, roster=True)
    _, log = fed.run(1, until=Stage.INSTALL)
    request = log.requests[Stage.INSTALL][101]
    peer = fed.clients[101]
    evil, pair, sealed = _server_key(request, 101)
    swapped = replace(request, dealer_x25519=pair.public_bytes, fingerprint=evil.fingerprint, sealed=sealed)
    refused(peer, swapped, InvalidSignature, "dealer's key transport")
    impostor = NodeIdentity.generate()
    statement = _statements.deal_bytes(
        roster_digest=fed.config.roster_digest, round_id=1, dealer=request.dealer, member=request.dealer_member,
        x25519=pair.public_bytes, fingerprint=evil.fingerprint,
        peers=_statements.peers_digest((p.node, p.member, p.x25519) for p in request.peers),
    )
    refused(peer, replace(swapped, signature=impostor.signing_key.sign(statement)), InvalidSignature)
    refused(peer, replace(swapped, signature=b""), InvalidSignature, "not signed")
    refused(peer, replace(request, dealer_member="node-1"), ProtocolViolationError, "this node's member")
    refused(peer, replace(request, dealer_member="mallory"), IdentityError)
    # the peer list must carry this node's own advert unchanged (the dealer signed the list)
    others = tuple(p for p in request.peers if p.node != 101)
    refused(peer, replace(request, peers=others), ProtocolViolationError, "does not name this node")
    mine = next(p for p in request.peers if p.node == 101)
    changed = tuple(replace(p, x25519=X25519KeyPair.generate().public_bytes) if p.node == 101 else p for p in request.peers)
    refused(peer, replace(request, peers=changed), ProtocolViolationError, "own advert unchanged")
    refused(peer, replace(request, round_id=2), UnexpectedMessageError, "this node asked in round 1")
    refused(peer, replace(request, sealed=request.sealed[:-1] + bytes([request.sealed[-1] ^ 1])), FedcryptError)
    assert peer.key_state is KeyState.AWAITING_KEY and mine.node == 101
    reply = peer.handle(request)
    assert isinstance(reply, InstallReply) and peer.fingerprint == fed.clients[100].fingerprint


def test_without_a_roster_a_peer_installs_the_servers_key() -> None:
    """Positive control: with no dealer signature a peer cannot tell the server's key from the dealer's."""
    fed = Federation(3, roster=False)
    _, log = fed.run(1, until=Stage.INSTALL)
    request = log.requests[Stage.INSTALL][101]
    evil, pair, sealed = _server_key(request, 101)
    fed.clients[101].handle(replace(request, dealer_x25519=pair.public_bytes, fingerprint=evil.fingerprint, sealed=sealed))
    assert fed.clients[101].fingerprint == evil.fingerprint


def test_a_key_holder_never_installs_and_deals_its_own_key_only_with_a_roster() -> None:
    fed = Federation(3, roster=True)
    _, log = fed.run(1, until=Stage.INSTALL)
    holder = fed.clients[100]  # the dealer holds the key now
    refused(holder, replace(log.requests[Stage.INSTALL][101], node=100), UnexpectedMessageError, "READY")
    before = holder.to_state_bytes()
    again = holder.handle(log.requests[Stage.DEAL][100])  # the signed adverts of roster members: it seals the key it holds
    assert AggregatorContext.from_bytes(again.context).fingerprint == holder.fingerprint
    assert holder.to_state_bytes() == before
    plain = Federation(3, roster=False)
    _, log = plain.run(1, until=Stage.INSTALL)
    refused(plain.clients[100], log.requests[Stage.DEAL][100], UnexpectedMessageError, "without a roster a key holder never deals")


def test_a_node_with_key_setup_file_and_no_key_refuses_to_advertise() -> None:
    fed = Federation(2, roster=False, key_setup="file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HonestButCuriousWarning)
        keyless = CkksClient(fed.config, 7)
    from fedcrypt.errors import SecretKeyError
    from fedcrypt.he.round import ContextRequest

    refused(keyless, ContextRequest(0, 7), SecretKeyError, "key_setup is 'file'")
    refused(keyless, ContextRequest(0, 8), UnexpectedMessageError, "addressed to node 8")


# ============================================================================ uploads and confirmations
@pytest.fixture(scope="module")
def round_two() -> tuple[Federation, dict[str, Any]]:
    """Four nodes with a roster (min_contributions=3): round 1 ran, round 2 stops before DECRYPT."""
    fed = Federation(4, roster=True, min_contributions=3, key_setup="file")
    first_server, first = fed.run(1)
    _, second = fed.run(2, until=Stage.DECRYPT)
    return fed, {
        "old": first.replies[Stage.ENCRYPT], "old_confirmations": first.replies[Stage.CONFIRM],
        "old_result": first_server.result,
        "uploads": second.replies[Stage.ENCRYPT], "confirmations": second.replies[Stage.CONFIRM],
        "decrypt": second.requests[Stage.DECRYPT], "confirm": second.requests[Stage.CONFIRM],
    }


def _signatures(replies: dict[int, Any]) -> dict[int, bytes]:
    return {node: reply.signature for node, reply in replies.items()}


def _request(node: int, uploads: list[Upload], confirmations: dict[int, bytes], round_id: int = 2) -> DecryptRequest:
    return DecryptRequest(round_id, node, b"", confirmed(uploads, confirmations))


def test_encrypt_refusals(round_two) -> None:
    fed, log = round_two
    client = fed.clients[102]
    fingerprint = client.fingerprint
    client.set_input(fed.inputs[102], 1.0)
    refused(client, EncryptRequest(2, 102, fingerprint), UnexpectedMessageError, "already encrypted for round 2")
    refused(client, EncryptRequest(1, 102, fingerprint), UnexpectedMessageError, "replay")
    refused(client, EncryptRequest(3, 102, bytes(32)), ContextMismatchError)


def test_encrypt_without_input_is_a_local_error() -> None:
    fed = Federation(2, roster=False, key_setup="file")
    client = fed.clients[100]
    refused(client, EncryptRequest(0, 100, client.fingerprint), LocalProtocolError, "no input")


def test_confirm_refusals_and_one_set_per_round(round_two) -> None:
    fed, log = round_two
    client = fed.clients[103]
    honest: ConfirmRequest = log["confirm"][103]
    entries = honest.entries
    own = next(e for e in entries if e[1] == 103)
    others = tuple(e for e in entries if e[1] != 103)
    refused(client, replace(honest, entries=others), ProtocolViolationError, "does not carry this node's upload")
    altered = tuple((m, n, bytes(32)) if n == 103 else (m, n, d) for m, n, d in entries)
    refused(client, replace(honest, entries=altered), ProtocolViolationError, "unchanged")
    refused(client, replace(honest, entries=(own,) + others[:1]), ProtocolViolationError, "fewer than min_contributions=3")
    refused(client, replace(honest, entries=(own,) + others[:1] + (("mallory", 9, bytes(32)),)), IdentityError)
    refused(client, replace(honest, entries=entries + (entries[0],)), ProtocolViolationError, "repeats")
    refused(client, replace(honest, round_id=1), UnexpectedMessageError, "no upload in round 1")
    # the same set again gets the same signature; another set for the same round is refused
    again = client.handle(honest)
    assert again.signature == log["confirmations"][103].signature
    subset = (own,) + others[:2]
    refused(client, replace(honest, entries=subset), UnexpectedMessageError, "already confirmed another set")


def test_without_a_roster_there_is_nothing_to_confirm() -> None:
    fed = Federation(3, roster=False, key_setup="file")
    _, log = fed.run(1, until=Stage.DECRYPT)
    uploads = log.replies[Stage.ENCRYPT]
    entries = tuple(("", n, hashlib.sha256(u.blob).digest()) for n, u in sorted(uploads.items()))
    refused(fed.clients[100], ConfirmRequest(1, 100, entries), ProtocolViolationError, "without a roster")


# ============================================================================ decryption with a roster
def test_one_upload_relabelled_as_an_aggregate_is_refused(round_two) -> None:
    fed, log = round_two
    client = fed.clients[102]
    upload = log["uploads"][100]
    refused(client, DecryptRequest(2, 102, upload.blob), ProtocolViolationError, "sums the signed uploads itself")
    # ... also when the server dresses it up as an aggregate of three uploads
    one = AggregatorContext.from_bytes(fed.context).start()
    one.add(upload.blob, 1)
    dressed = bytearray(one.finish())
    struct.pack_into(">Id", dressed, HEADER_BYTES - 16, 3, 3.0)
    everything = confirmed(list(log["uploads"].values()), _signatures(log["confirmations"]))
    refused(client, DecryptRequest(2, 102, bytes(dressed), everything), ProtocolViolationError)
    refused(client, DecryptRequest(2, 102, bytes(dressed)), ProtocolViolationError)


def test_without_a_roster_a_relabelled_upload_is_refused() -> None:
    """One upload dressed as a 3-upload aggregate: its provenance lists one summand (refused),
    and seeds made up to pad it change the second polynomial (refused)."""
    fed = Federation(3, roster=False, key_setup="file")
    server, log = fed.run(1, until=Stage.DECRYPT)
    upload = log.replies[Stage.ENCRYPT][100]
    one = AggregatorContext.from_bytes(server.context).start()
    one.add(upload.blob, 1)
    dressed = bytearray(one.finish())
    struct.pack_into(">Id", dressed, HEADER_BYTES - 16, 3, 3.0)
    refused(fed.clients[101], DecryptRequest(1, 101, bytes(dressed)), MalformedMessageError, "provenance")
    fingerprint = AggregatorContext.from_bytes(server.context).fingerprint
    header, pieces = decode_blob(_one_sum(server, upload), PARAMS, fingerprint, kinds=(BlobKind.AGGREGATE,))
    padded = replace(header, contributions=3, total_weight=3.0, provenance=header.provenance + tuple(
        (1.0, tuple(b"\x02" + os.urandom(64) for _ in pieces)) for _ in range(2)
    ))
    forged = encode_blob(padded, [bytes(p) for p in pieces])
    refused(fed.clients[101], DecryptRequest(1, 101, forged), MalformedMessageError, "forged aggregate")


def _one_sum(server: Any, upload: Upload) -> bytes:
    total = AggregatorContext.from_bytes(server.context).start()
    total.add(upload.blob, 1)
    return total.finish()


def test_without_a_roster_an_earlier_rounds_uploads_isolate_one_upload() -> None:
    """Positive control, the honest-but-curious mode's documented gap: a server that adds all
    uploads of an earlier round (whose sum it was released) beside one new upload gets that
    upload: the provenance is genuine, only the round binding is missing (a roster closes it)."""
    fed = Federation(3, roster=False, key_setup="file")
    server1, log1 = fed.run(1)
    old = [log1.replies[Stage.ENCRYPT][n].blob for n in sorted(log1.replies[Stage.ENCRYPT])]
    old_sum = sum(fed.weights[n] / MAX_WEIGHT * np.append(fed.inputs[n], 1.0) for n in sorted(log1.replies[Stage.ENCRYPT]))
    server2, log2 = fed.run(2, until=Stage.DECRYPT)
    victim = log2.replies[Stage.ENCRYPT][100]
    total = AggregatorContext.from_bytes(server2.context).start()
    for blob in [victim.blob, *old]:
        total.add(blob, 1)
    released = fed.clients[101].handle(DecryptRequest(2, 101, total.finish())).values - old_sum
    factor = fed.weights[100] / MAX_WEIGHT
    assert np.abs(released[:-1] / factor - fed.inputs[100]).max() < 1e-3
    assert abs(released[-1] - factor) < 1e-6


def test_decryptor_refusals_with_real_messages(round_two) -> None:
    fed, log = round_two
    client = fed.clients[103]  # never a decryptor so far: two uploads, no decryption
    uploads: dict[int, Upload] = log["uploads"]
    signatures = _signatures(log["confirmations"])
    a, b, c, d = (uploads[n] for n in (100, 101, 102, 103))
    honest: DecryptRequest = replace(log["decrypt"][min(log["decrypt"])], node=103)
    # relabelled: A's blob under B's name, node and signature
    relabel = Upload(2, 101, a.blob, b.member, b.signature)
    refused(client, _request(103, [relabel, c, d], signatures), InvalidSignature, "upload of node 101")
    # too few uploads (each with its genuine confirmation of the full set)
    refused(client, _request(103, [a, b], signatures), ProtocolViolationError, "fewer than min_contributions=3")
    refused(client, _request(103, [a], signatures), ProtocolViolationError, "fewer than min_contributions=3")
    # a subset of the confirmed set: the confirmations are for the full set
    refused(client, _request(103, [a, b, c], signatures), InvalidSignature, "confirmation")
    # a duplicate signer: the same upload twice, or one member's two rounds
    refused(client, _request(103, [a, a, b], signatures), ProtocolViolationError, "two uploads from member")
    old_a = replace(log["old"][100], round_id=2)
    refused(client, _request(103, [a, old_a, b, c], signatures), ProtocolViolationError, "two uploads")
    # a replayed upload of the previous round: as it was, or relabelled with this round
    refused(client, _request(103, [log["old"][100], b, c, d], signatures), UnexpectedMessageError, "upload of round 1")
    refused(client, _request(103, [old_a, b, c, d], signatures), InvalidSignature, "upload of node 100")
    # the whole request for another round
    refused(client, replace(honest, round_id=3), UnexpectedMessageError, "upload of round 2 in a request for round 3")
    moved = tuple(replace(item, upload=replace(item.upload, round_id=3)) for item in honest.uploads)
    refused(client, DecryptRequest(3, 103, b"", moved), InvalidSignature)
    # missing or foreign confirmations
    refused(client, _request(103, [a, b, c, d], {**signatures, 102: b""}), InvalidSignature, "did not confirm")
    refused(client, _request(103, [a, b, c, d], {**signatures, 102: signatures[101]}), InvalidSignature, "confirmation of node 102")
    # an unsigned upload in a round with a roster; a stranger's upload
    refused(client, _request(103, [replace(a, signature=b""), b, c, d], signatures), InvalidSignature, "not signed")
    refused(client, _request(103, [replace(a, member="mallory"), b, c, d], signatures), IdentityError)
    # none of it released anything; the honest request still decrypts
    assert client.decryptions == 0
    total = client.handle(honest.to_bytes())
    assert isinstance(total, Decryption) and client.decryptions == 1
    mean = total.values[:-1] / total.values[-1]
    bound = fedavg_error_bound(PARAMS, [fed.weights[n] for n in uploads], MAX_WEIGHT)
    assert np.abs(mean - fed.expected_mean(sorted(uploads))).max() <= bound


def _signed_upload(fed: Federation, node: int, blob: bytes, *, round_id: int, fingerprint: bytes, layout: bytes) -> Upload:
    """What node ``node``'s identity signs for ``blob`` (the test holds the identities: a node fooled or buggy)."""
    statement = _statements.upload_bytes(
        roster_digest=fed.config.roster_digest, round_id=round_id, fingerprint=fingerprint, node=node,
        member=fed.member(node), blob_digest=hashlib.sha256(blob).digest(), layout=layout,
    )
    return Upload(round_id, node, blob, fed.member(node), fed.identity(node).signing_key.sign(statement))


def test_uploads_under_another_key_or_layout_are_refused(round_two) -> None:
    fed, log = round_two
    client = fed.clients[102]
    uploads, signatures = log["uploads"], _signatures(log["confirmations"])
    layout = layout_digest(None, D)
    key = KeyOwner.from_bytes(fed.key_file)
    stranger_key = KeyOwner.generate(PARAMS)
    vector = np.append(fed.inputs[100] * 0.1, 0.1)
    foreign = _signed_upload(
        fed, 100, stranger_key.encrypt(vector, spec=layout), round_id=2, fingerprint=stranger_key.fingerprint, layout=layout
    )
    refused(client, _request(102, [foreign, uploads[101], uploads[102]], signatures), ContextMismatchError, "another CKKS key")
    other_layout = hashlib.sha256(b"another model").digest()
    reshaped = _signed_upload(
        fed, 100, key.encrypt(vector, spec=other_layout), round_id=2, fingerprint=key.fingerprint, layout=other_layout
    )
    refused(client, _request(102, [reshaped, uploads[101], uploads[102]], signatures), SpecMismatchError, "another layout")


def test_a_node_releases_one_decryption_per_own_upload(round_two) -> None:
    fed, log = round_two
    decryptor = min(log["decrypt"])  # decrypted in round 1 as well
    client = fed.clients[decryptor]
    request = log["decrypt"][decryptor]
    first = client.handle(request)
    assert client.decryptions == client.uploads == 2
    refused(client, request, UnexpectedMessageError, "one per upload")
    # the old round's confirmed set, sent again, is also a decryption (and would give nothing new)
    old = DecryptRequest(1, decryptor, b"", confirmed(list(log["old"].values()), _signatures(log["old_confirmations"])))
    refused(client, old, UnexpectedMessageError, "one per upload")
    assert isinstance(first, Decryption)


def test_an_old_confirmed_set_decrypts_to_exactly_the_old_release(round_two) -> None:
    """A replayed, fully confirmed set of an earlier round gives nothing new: flooding is deterministic."""
    fed, log = round_two
    client = CkksClient.from_state_bytes(fed.clients[103].to_state_bytes(), config=fed.config, identity=fed.identity(103))
    old = DecryptRequest(1, 103, b"", confirmed(list(log["old"].values()), _signatures(log["old_confirmations"])))
    again = client.handle(old)
    assert again.total == log["old_result"].weighted_sum.astype("<f8").tobytes()


def test_mode_confusion_is_refused() -> None:
    fed = Federation(3, roster=False, key_setup="file")
    _, log = fed.run(1, until=Stage.DECRYPT)
    uploads = list(log.replies[Stage.ENCRYPT].values())
    refused(fed.clients[100], DecryptRequest(1, 100, b"", confirmed(uploads, {})), ProtocolViolationError, "not a list of uploads")
    server, _ = fed.run(2, until=Stage.ENCRYPT)
    signed = replace(log.replies[Stage.ENCRYPT][101], round_id=2, member="node-1", signature=bytes(64))
    with pytest.raises(ProtocolViolationError, match="without a roster"):
        server.receive(signed)
    assert server.report.refused[101].startswith("ProtocolViolationError")
    assert server.received == frozenset()


# ============================================================================ the honest-but-curious decryptor's own checks
@pytest.fixture(scope="module")
def hbc_round() -> tuple[Federation, Any, Any]:
    fed = Federation(3, roster=False, key_setup="file")
    server, log = fed.run(1, until=Stage.DECRYPT)
    return fed, server, log


def _aggregate(server: Any, uploads: list[Upload]) -> bytearray:
    total = AggregatorContext.from_bytes(server.context).start()
    for upload in uploads:
        total.add(upload.blob, 1)
    return bytearray(total.finish())


@pytest.mark.parametrize(
    "tamper, match",
    [
        (lambda blob, uploads: uploads[0].blob, "a single upload"),
        (lambda blob, uploads: bytes(struct.pack_into(">Id", blob, HEADER_BYTES - 16, 1, 1.0) or blob), "fewer than min_contributions=2"),
        (lambda blob, uploads: bytes(struct.pack_into(">d", blob, HEADER_BYTES - 12, 2.5) or blob), "tampered header"),
    ],
)
def test_honest_but_curious_decryptor_checks_the_header(hbc_round, tamper: Callable[..., bytes], match: str) -> None:
    fed, server, log = hbc_round
    uploads = list(log.replies[Stage.ENCRYPT].values())
    blob = tamper(_aggregate(server, uploads[:2]), uploads)
    refused(fed.clients[102], DecryptRequest(1, 102, blob), ProtocolViolationError, match)
