"""Every refusal of the threshold round's nodes, with real messages: a substituted or forged
key-chain link, joint key or key backup; a relabelled upload presented as an aggregate; too
few signers; a duplicate signer; replays from another round or session; a missing or foreign
confirmation; a second partial decryption; the same checks at a stand-in (RECOVER). Each
refusal is a typed error, releases nothing (no reply), leaves the node's state bytes
unchanged, and the right message still works afterwards. Positive controls show the
honest-but-curious mode's gaps: the same tampering succeeds where no signature is checked.
Real OpenFHE (CPython 3.10; skipped elsewhere, see conftest.py)."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcrypt.errors import (
    ContextMismatchError,
    DecryptionError,
    FedcryptError,
    IdentityError,
    InvalidShare,
    InvalidSignature,
    ProtocolViolationError,
    UnexpectedMessageError,
)
from fedcrypt.he.threshold import KeyHolder, KeyShareMessage
from fedcrypt.he.threshold.round import (
    BackupRequest,
    ConfirmRequest,
    DecryptRequest,
    EncryptRequest,
    JointReply,
    JointRequest,
    KeygenReply,
    KeygenRequest,
    KeyLink,
    KeyState,
    PartialDecryption,
    RecoverRequest,
    ReleaseReply,
    ReleaseRequest,
    SignedBackup,
    Stage,
    ThresholdClient,
    Upload,
    fedavg_error_bound,
)
from fedcrypt.he.threshold.round import _statements
from fedcrypt.identity import NodeIdentity

pytestmark = pytest.mark.usefixtures("openfhe")
sys.path.insert(0, str(Path(__file__).parent))

from _round_harness import M, Federation, confirmed  # noqa: E402


def refused(client: ThresholdClient, message: Any, error: type[FedcryptError], match: str | None = None) -> None:
    """``client`` refuses ``message`` (object and bytes) with ``error``, and its state does not change."""
    before = client.to_state_bytes()
    for form in (message, message.to_bytes()):
        with pytest.raises(error, match=match):
            client.handle(form)
        assert client.to_state_bytes() == before


def relabel(blob: bytes, contributions: int = 3) -> bytes:
    """An upload blob whose header says "aggregate of ``contributions`` uploads" (headers are not authenticated)."""
    head = bytearray(blob)
    head[5] = 2  # BlobKind.AGGREGATE
    struct.pack_into(">I", head, 46, contributions)
    struct.pack_into(">d", head, 50, contributions * M)
    return bytes(head)


def keygen_until(fed: Federation, party: int) -> tuple[Any, KeygenRequest]:
    """Run the key chain honestly up to holder ``party``'s request (not answered)."""
    server = fed.server(1)
    requests = server.begin()
    for _ in range(party):
        (node, request), = requests.items()
        server.receive(fed.clients[node].handle(request.to_bytes()).to_bytes(), sender=node)
        requests = server.end_stage()
    (node, request), = requests.items()
    return server, request


def server_link(fed: Federation, request: KeygenRequest, *, party: int) -> tuple[KeyShareMessage, KeyLink]:
    """A running key the server made itself as holder ``party`` (extending the request's previous
    key, if any), with an unsigned link whose digests are consistent."""
    evil = KeyHolder(fed.config.params, party, request.session)
    previous = KeyShareMessage.from_bytes(request.previous.share, fed.config.params) if party else None
    share = evil.generate_key_share(previous)
    prior = request.previous.link.key if party else _statements.NO_PREVIOUS
    return share, KeyLink(request.previous.link.member if fed.roster else "", prior, hashlib.sha256(share.public_key).digest(), share.transport_key)


# ============================================================================ key chain
def test_keygen_refuses_a_substituted_or_forged_previous_link_and_then_runs() -> None:
    fed = Federation(roster=True)
    _, request = keygen_until(fed, 1)
    victim, previous = fed.clients[101], request.previous
    assert victim.key_state is KeyState.NO_KEY
    share, link = server_link(fed, request, party=0)
    # the server swaps holder 0's key for its own: the signed digest no longer matches ...
    refused(victim, replace(request, previous=replace(previous, share=share.to_bytes())), ProtocolViolationError, "digest")
    # ... and with the digest changed too, holder 0's signature does not cover it
    forged = replace(previous, share=share.to_bytes(), link=replace(link, signature=previous.link.signature))
    refused(victim, replace(request, previous=forged), InvalidSignature)
    # ... signed by a key that is not on the roster, under holder 0's name or another
    impostor = NodeIdentity.generate()
    statement = _statements.link_bytes(
        roster_digest=fed.config.roster_digest, session=request.session, params=fed.config.params_digest,
        committee=_statements.committee_digest(request.committee), party=0, node=100, member="node-0",
        previous=link.previous, key=link.key, transport=link.transport,
    )
    signed = replace(previous, share=share.to_bytes(), link=replace(link, signature=impostor.signing_key.sign(statement)))
    refused(victim, replace(request, previous=signed), InvalidSignature)
    refused(victim, replace(request, previous=replace(signed, link=replace(signed.link, member="mallory"))), IdentityError)
    refused(victim, replace(request, previous=replace(previous, link=replace(previous.link, signature=b""))), InvalidSignature, "not signed")
    # the previous link of another round, another session, or for another position
    refused(victim, replace(request, previous=replace(previous, round_id=0)), UnexpectedMessageError)
    refused(victim, replace(request, session=os.urandom(32)), UnexpectedMessageError, "another session")
    refused(victim, replace(request, party=2), ProtocolViolationError, "not holder 2")
    refused(victim, replace(request, previous=None), ProtocolViolationError)
    refused(victim, replace(request, committee=(100, 101)), ProtocolViolationError)
    assert victim.key_state is KeyState.NO_KEY
    reply = victim.handle(request.to_bytes())
    assert isinstance(reply, KeygenReply) and victim.key_state is KeyState.AWAITING_JOINT_KEY
    assert reply.link.previous == previous.link.key and reply.link.signature
    refused(victim, request, UnexpectedMessageError, "replay")  # the same session again


def test_without_a_roster_a_holder_extends_a_key_the_server_made() -> None:
    """Positive control: the honest-but-curious mode's key chain is the server's to write."""
    fed = Federation(roster=False)
    _, request = keygen_until(fed, 1)
    share, link = server_link(fed, request, party=0)
    reply = fed.clients[101].handle(replace(request, previous=replace(request.previous, share=share.to_bytes(), link=link)))
    assert isinstance(reply, KeygenReply) and reply.link.previous == link.key


def test_joint_refuses_a_substituted_joint_key_or_a_broken_chain_and_then_runs() -> None:
    fed = Federation(roster=True)
    _, log = fed.run(1, until=Stage.JOINT)
    request: JointRequest = log.requests[Stage.JOINT][100]
    holder = fed.clients[100]
    # the server extends holder 1's key itself and presents that as the joint key
    last_request, _ = log.keygen[2]
    share, link = server_link(fed, last_request, party=2)
    links = request.links
    swapped = links[:2] + (replace(link, member="node-2", signature=links[2].signature),)
    refused(holder, replace(request, links=swapped, joint=share.to_bytes()), InvalidSignature)
    refused(holder, replace(request, links=links[:2] + (replace(swapped[2], signature=b""),), joint=share.to_bytes()), InvalidSignature, "not signed")
    refused(holder, replace(request, joint=share.to_bytes()), ProtocolViolationError, "last link")
    refused(holder, replace(request, links=(links[1], links[0], links[2])), ProtocolViolationError)
    refused(holder, replace(request, links=links[:2]), ProtocolViolationError, "2 links")
    refused(holder, replace(request, links=(replace(links[0], transport=os.urandom(32)),) + links[1:]), ProtocolViolationError, "own link")
    refused(holder, replace(request, links=links[:1] + (replace(links[1], member="node-2"),) + links[2:]), ProtocolViolationError, "one member")
    refused(holder, replace(request, committee=(100, 102, 101)), ProtocolViolationError, "committee")
    refused(holder, replace(request, session=os.urandom(32)), UnexpectedMessageError, "another session")
    assert holder.key_state is KeyState.AWAITING_JOINT_KEY
    reply = holder.handle(request.to_bytes())
    assert isinstance(reply, JointReply) and len(reply.backups) == 2 and all(b.signature for b in reply.backups)
    assert holder.key_state is KeyState.AWAITING_BACKUPS


def test_without_a_roster_holders_accept_a_joint_key_the_server_extended() -> None:
    """Positive control: without signatures, the server can replace the last link (and knows that key share)."""
    fed = Federation(roster=False)
    _, log = fed.run(1, until=Stage.JOINT)
    request = log.requests[Stage.JOINT][100]
    share, link = server_link(fed, log.keygen[2][0], party=2)
    reply = fed.clients[100].handle(replace(request, links=request.links[:2] + (link,), joint=share.to_bytes()))
    assert isinstance(reply, JointReply)


def test_backup_refuses_forged_missing_or_repeated_pieces_and_then_stores_them() -> None:
    fed = Federation(roster=True)
    _, log = fed.run(1, until=Stage.BACKUP)
    request: BackupRequest = log.requests[Stage.BACKUP][100]
    holder = fed.clients[100]
    first, second = request.backups
    refused(holder, replace(request, backups=(replace(first, signature=second.signature), second)), InvalidSignature)
    refused(holder, replace(request, backups=(replace(first, member=second.member), second)), ProtocolViolationError)
    tampered = bytearray(first.backup)
    tampered[-1] ^= 1
    refused(holder, replace(request, backups=(replace(first, backup=bytes(tampered)), second)), InvalidSignature)
    refused(holder, replace(request, backups=(first,)), ProtocolViolationError)
    refused(holder, replace(request, backups=(first, first)), ProtocolViolationError)
    refused(holder, replace(request, backups=(replace(first, signature=b""), second)), InvalidSignature, "not signed")
    assert holder.key_state is KeyState.AWAITING_BACKUPS
    holder.handle(request.to_bytes())
    assert holder.key_state is KeyState.READY


def test_without_a_roster_a_tampered_backup_is_still_refused_by_its_seal() -> None:
    fed = Federation(roster=False)
    _, log = fed.run(1, until=Stage.BACKUP)
    request = log.requests[Stage.BACKUP][100]
    tampered = bytearray(request.backups[0].backup)
    tampered[-1] ^= 1
    refused(fed.clients[100], replace(request, backups=(SignedBackup(bytes(tampered)),) + request.backups[1:]), DecryptionError)


# ============================================================================ uploads and sums
@pytest.fixture
def second_round() -> tuple[Federation, Any, Any]:
    """A roster federation (2-of-3) after round 1, with round 2 stopped at DECRYPT."""
    fed = Federation(roster=True, seed=11)
    _, first = fed.run(1)
    _, second = fed.run(2, until=Stage.DECRYPT)
    return fed, first, second


def test_encrypt_refuses_another_key_and_a_replay() -> None:
    fed = Federation(roster=True)
    _, log = fed.run(1, until=Stage.ENCRYPT)
    request: EncryptRequest = log.requests[Stage.ENCRYPT][100]
    client = fed.clients[100]
    client.set_input(fed.inputs[100], fed.weights[100])
    refused(client, replace(request, fingerprint=os.urandom(32)), ContextMismatchError)
    upload = client.handle(request)
    assert isinstance(upload, Upload) and upload.signature
    client.set_input(fed.inputs[100], fed.weights[100])
    refused(client, request, UnexpectedMessageError, "replay")


def test_confirm_refuses_sets_it_must_not_sign(second_round) -> None:
    fed, first, second = second_round
    entries = second.requests[Stage.CONFIRM][100].entries
    # a fresh round 3 with real uploads, stopped at CONFIRM
    _, third = fed.run(3, until=Stage.CONFIRM)
    request: ConfirmRequest = third.requests[Stage.CONFIRM][100]
    client = fed.clients[100]
    own, rest = request.entries[0], request.entries[1:]
    refused(client, replace(request, entries=rest), ProtocolViolationError, "upload unchanged")
    refused(client, replace(request, entries=((own[0], own[1], os.urandom(32)),) + rest), ProtocolViolationError)
    refused(client, replace(request, entries=(own,)), ProtocolViolationError, "fewer than min_contributions")
    refused(client, replace(request, entries=(own, ("node-1", 102, rest[0][2]))), ProtocolViolationError, "committee")
    refused(client, replace(request, entries=(own, ("mallory", 101, rest[0][2]))), ProtocolViolationError, "committee")
    refused(client, replace(request, round_id=2, entries=entries), UnexpectedMessageError)
    refused(client, replace(request, round_id=4), UnexpectedMessageError, "no upload in round 4")
    reply = client.handle(request)
    assert reply.signature
    # one set per round: a second, different set is refused; the same set gets the same signature
    refused(client, replace(request, entries=request.entries[:2]), UnexpectedMessageError, "another set")
    assert client.handle(request).signature == reply.signature


def test_decrypt_refuses_what_a_malicious_server_sends_and_then_decrypts_once(second_round) -> None:
    fed, first, second = second_round
    honest: DecryptRequest = second.requests[Stage.DECRYPT][101]
    holder = fed.clients[101]
    by_node = {item.upload.node: item for item in honest.uploads}
    u0, u1, u2 = (by_node[n].upload for n in (100, 101, 102))
    confirmations = {n: item.confirmation for n, item in by_node.items()}
    old = first.replies[Stage.ENCRYPT]
    old_confirmations = {n: c.signature for n, c in first.replies[Stage.CONFIRM].items()}
    # one upload relabelled as the aggregate: with a roster the holder sums the uploads itself
    refused(holder, DecryptRequest(2, 101, relabel(u0.blob)), ProtocolViolationError, "sums the signed uploads itself")
    refused(holder, replace(honest, aggregate=relabel(u0.blob)), ProtocolViolationError, "sums the signed uploads itself")
    # too few signers, a duplicate signer
    refused(holder, replace(honest, uploads=confirmed([u0], confirmations)), ProtocolViolationError, "fewer than min_contributions")
    refused(holder, replace(honest, uploads=confirmed([u0, u0, u1], confirmations)), ProtocolViolationError, "two uploads")
    # node 100's upload under node 101's name and signature
    relabelled = Upload(2, 101, u0.blob, u0.layout, u1.member, u1.signature)
    refused(holder, replace(honest, uploads=confirmed([u0, relabelled, u2], confirmations)), InvalidSignature)
    refused(holder, replace(honest, uploads=confirmed([relabelled, u2], confirmations)), InvalidSignature)
    # replays: a first-round upload, as it was and relabelled into round 2
    refused(holder, replace(honest, uploads=confirmed([old[100], u1, u2], confirmations)), UnexpectedMessageError, "round 1")
    refused(holder, replace(honest, uploads=confirmed([replace(old[100], round_id=2), u1, u2], confirmations)), InvalidSignature)
    # confirmations: missing, of the first round, or of another set
    refused(holder, replace(honest, uploads=confirmed([u0, u1, u2], {100: confirmations[100], 101: confirmations[101]})), InvalidSignature, "did not confirm")
    refused(holder, replace(honest, uploads=confirmed([u0, u1, u2], old_confirmations)), InvalidSignature)
    refused(holder, replace(honest, uploads=confirmed([u0, u1], confirmations)), InvalidSignature)
    # an upload of a node outside the committee
    outsider = Upload(2, 999, u2.blob, u2.layout, u2.member, u2.signature)
    refused(holder, replace(honest, uploads=confirmed([u0, u1, outsider], confirmations)), ProtocolViolationError, "committee")
    reply = holder.handle(honest.to_bytes())
    assert isinstance(reply, PartialDecryption) and reply.share
    # one partial decryption per round, increasing
    refused(holder, honest, UnexpectedMessageError, "one per round")
    refused(holder, replace(honest, round_id=1, uploads=confirmed(list(old.values()), old_confirmations)), UnexpectedMessageError)


def test_without_a_roster_a_relabelled_upload_is_decrypted_as_an_aggregate() -> None:
    """Positive control: the honest-but-curious mode's gap, end to end (the server learns one upload)."""
    fed = Federation(roster=False, recovery=0, seed=12)
    server, log = fed.run(1, until=Stage.DECRYPT)
    victim = log.replies[Stage.ENCRYPT][100]
    fake = relabel(victim.blob)
    shares = [fed.clients[n].handle(DecryptRequest(1, n, fake)) for n in (100, 101, 102)]
    decryption = server._crypto.start_decryption(fake)  # the server's own fusion, no node checks it
    for share in shares:
        decryption.receive_share(share.share)
    leaked = decryption.fuse() / M
    expected = fed.weights[100] / M * np.append(fed.inputs[100], 1.0)
    assert np.max(np.abs(leaked - expected)) <= fed.config.params.sum_error_bound() / M


# ============================================================================ stand-ins
@pytest.fixture
def stand_in_round() -> tuple[Federation, Any, dict[int, Any]]:
    """Round 2 with holder 102 gone at DECRYPT: returns the federation, the server at RECOVER
    and every request of the round (RELEASE and RECOVER included)."""
    fed = Federation(roster=True, seed=13)
    fed.run(1)
    server, log = fed.run(2, until=Stage.RELEASE, skip={Stage.DECRYPT: {102}})
    (helper, release), = log.requests[Stage.RELEASE].items()
    reply = fed.clients[helper].handle(release)
    server.receive(reply, sender=helper)
    requests = server.end_stage()
    assert server.stage is Stage.RECOVER
    return fed, server, {"decrypt": log.requests[Stage.DECRYPT], "release": release, "recover": requests[100], "released": reply}


def test_release_refuses_requests_no_honest_server_sends(stand_in_round) -> None:
    fed, _, requests = stand_in_round
    release: ReleaseRequest = requests["release"]
    helper = fed.clients[release.node]
    refused(helper, replace(release, dropped=1), ProtocolViolationError, "not another holder")
    refused(helper, replace(release, stand_in=2), ProtocolViolationError, "cannot stand in")
    refused(helper, replace(release, stand_in=1), ProtocolViolationError, "cannot stand in")
    refused(helper, replace(release, dropped=7), ProtocolViolationError)
    reply = helper.handle(release)  # answering the same holder again is allowed (its piece is the same)
    assert isinstance(reply, ReleaseReply) and reply.backup.signature
    n_of_n = Federation(roster=True, recovery=0)
    n_of_n.run(1)
    refused(n_of_n.clients[101], ReleaseRequest(2, 101, 2, 0), ProtocolViolationError, "no recovery_threshold")


def test_a_stand_in_rebuilds_a_key_share_only_for_the_sum_it_kept_from_its_own_decryption(stand_in_round) -> None:
    fed, server, requests = stand_in_round
    recover: RecoverRequest = requests["recover"]
    stand_in = fed.clients[100]
    assert recover.dropped == 2 and len(recover.released) == 1 and recover.aggregate == b""  # no sum for the server to choose
    own = requests["decrypt"][100]
    entries = [(i.upload.member, i.upload.node, hashlib.sha256(i.upload.blob).digest()) for i in own.uploads]
    assert stand_in._kept is not None and stand_in._kept[:2] == (2, _statements.set_digest(entries))
    u0 = next(i.upload for i in own.uploads if i.upload.node == 100)
    released = recover.released[0]
    refused(stand_in, replace(recover, released=()), InvalidShare, "recovery needs t = 2")
    refused(stand_in, replace(recover, released=(replace(released, signature=os.urandom(64)),)), InvalidSignature)
    refused(stand_in, replace(recover, released=(replace(released, member="node-2"),)), ProtocolViolationError)
    refused(stand_in, replace(recover, aggregate=relabel(u0.blob)), ProtocolViolationError, "the sum it made itself")
    refused(stand_in, replace(recover, round_id=3), UnexpectedMessageError, "kept no sum of round 3")
    refused(stand_in, replace(recover, dropped=0), ProtocolViolationError, "not another holder")
    reply = stand_in.handle(recover.to_bytes())
    assert isinstance(reply, PartialDecryption)
    server.receive(reply, sender=100)
    assert server.end_stage() == {} and server.report.stood_in == {102: 100}
    bound = fedavg_error_bound(fed.config.params, fed.weights.values(), M)
    assert np.max(np.abs(server.result.mean - fed.expected_mean([100, 101, 102]))) <= bound
    refused(stand_in, recover, UnexpectedMessageError, "once per round")


# ============================================================================ the server's own checks
def test_the_server_refuses_forged_replies_and_keeps_going() -> None:
    fed = Federation(roster=True, seed=14)
    server = fed.server(1)
    (node, request), = server.begin().items()
    reply = fed.clients[node].handle(request)
    impostor = NodeIdentity.generate()
    with pytest.raises(InvalidSignature):
        server.receive(replace(reply, link=replace(reply.link, signature=impostor.signing_key.sign(b"x"))), sender=node)
    assert "InvalidSignature" in server.report.refused[node] and server.received == frozenset()
    with pytest.raises(UnexpectedMessageError, match="came from node"):
        server.receive(reply, sender=101)
    server.receive(reply.to_bytes(), sender=node)
    assert node not in server.report.refused and server.received == {node}
    with pytest.raises(UnexpectedMessageError, match="replay"):
        server.receive(reply, sender=node)
    # an upload signed by another member, a confirmation of another set
    fed2 = Federation(roster=True, seed=15)
    server2, log = fed2.run(1, until=Stage.CONFIRM)
    upload = log.replies[Stage.ENCRYPT][100]
    with pytest.raises(UnexpectedMessageError, match="not accepted in this stage"):
        server2.receive(upload)  # ENCRYPT is closed
    confirm = fed2.clients[100].handle(log.requests[Stage.CONFIRM][100])
    with pytest.raises(InvalidSignature):
        server2.receive(replace(confirm, signature=os.urandom(64)), sender=100)
    server2.receive(confirm, sender=100)
