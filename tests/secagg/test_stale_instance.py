"""Statements replayed from another instance of the same round (found by the attacker review).

A deployment may build fresh clients for a round id and associated data that an earlier,
abandoned instance already used (a retry after ``RoundAbortedError``). A malicious server
that kept, from the stale instance, one client's consistency signature on each of two
survivor sets and the victim's attestation "skipped nobody" reached the quorum twice in the
live instance and hid that the live victim masked with only ``t - 1`` neighbours: the
victim's input came back exactly (SecAgg+ n=6, k=4, t=3, no colluders). Every signed
statement now binds the digest of the key directory, whose adverts carry each instance's
fresh keys, so the stale statements do not verify. The positive control is a client that
binds no digest: the same replay recovers the input.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedcrypt.crypto import Ed25519KeyPair, Share, X25519KeyPair, mask_accumulate, shamir_combine
from fedcrypt.errors import FedcryptError, InvalidSignature
from fedcrypt.secagg import ClientProtocol, KeyDirectory, SecAggConfig, ShareBundle, SurvivorList, UnmaskRequest
from fedcrypt.secagg import keyschedule

ROUND, AD, LENGTH = 3, b"ad", 16
CONFIG = SecAggConfig(num_clients=6, threshold=3, neighbours=4, verify_survivors=True, graph_seed=b"g")
VICTIM, SHOWN = 0, {2, 3}  # the live victim receives shares from 2 and 3 only
GROUPS = [({0, 1, 2, 3}, [0, 2, 3]), ({0, 1, 4, 5}, [1, 4, 5])]


class UnboundClient(ClientProtocol):
    """The positive control: signs statements that bind no instance (the rule before the fix)."""

    __slots__ = ()

    def _on_key_directory(self, message):
        reply = super()._on_key_directory(message)
        self._directory_digest = b""
        return reply


class Instance:
    """One client object per id for (ROUND, AD); the test plays the server."""

    def __init__(self, factory, signing, inputs) -> None:
        keys = {i: k.public_bytes for i, k in enumerate(signing)}
        n = CONFIG.num_clients
        self.clients = [
            factory(CONFIG, i, round_id=ROUND, associated_data=AD, vector=inputs[i], signing_key=signing[i], verify_keys=keys)
            for i in range(n)
        ]
        self.adverts = [c.advertise() for c in self.clients]
        self.ciphertexts = {}
        for i, client in enumerate(self.clients):
            for recipient, blob in client.handle(KeyDirectory(ROUND, i, tuple(self.adverts))).ciphertexts:
                self.ciphertexts[(i, recipient)] = blob
        self.masked = {}

    def neighbours(self, i: int) -> set[int]:
        return set(CONFIG.neighbourhood(i, ROUND))

    def bundle(self, h: int, senders) -> None:
        bundle = ShareBundle(ROUND, h, tuple((s, self.ciphertexts[(s, h)]) for s in sorted(senders)))
        self.masked[h] = self.clients[h].handle(bundle)

    def sign(self, h: int, survivors) -> bytes:
        return self.clients[h].handle(SurvivorList(ROUND, h, tuple(sorted(survivors)))).signature


def _split_view(live: Instance, stale_signatures, stale_attestation):
    for h in range(CONFIG.num_clients):
        live.bundle(h, SHOWN if h == VICTIM else live.neighbours(h))
    signatures = {frozenset(U): dict(stale_signatures.get(frozenset(U), {})) for U, _ in GROUPS}
    for U, signers in GROUPS:
        for h in signers:
            signatures[frozenset(U)][h] = live.sign(h, U)
    replies = []
    for U, signers in GROUPS:
        U = frozenset(U)
        for h in signers:
            senders = SHOWN if h == VICTIM else live.neighbours(h)
            attestations = []
            for q in sorted(((senders | {h}) & U) - {h}):
                own = (live.masked[q].skipped, live.masked[q].attestation)
                skipped, signature = stale_attestation if q == VICTIM and stale_attestation else own
                attestations.append((q, skipped, signature))
            request = UnmaskRequest(
                ROUND, h, tuple(sorted(U)), tuple(sorted(senders - U)), tuple(sorted(signatures[U].items())), tuple(attestations)
            )
            replies.append(live.clients[h].handle(request))
    return replies


def _strip(live: Instance, replies) -> np.ndarray:
    t = CONFIG.threshold
    seeds, keys = {}, {}
    for reply in replies:
        for owner, blob in reply.self_mask_shares:
            seeds.setdefault(owner, []).append(Share.from_bytes(blob))
        for owner, blob in reply.mask_key_shares:
            keys.setdefault(owner, []).append(Share.from_bytes(blob))
    masks = [(shamir_combine(seeds[VICTIM][:t], t), -1)]
    context = live.clients[VICTIM].context
    for w in sorted(SHOWN):
        pair = X25519KeyPair.from_private_bytes(shamir_combine(keys[w][:t], t).reveal())
        shared = pair.exchange(live.adverts[VICTIM].mask_public_key)
        masks.append((keyschedule.pairwise_seed(shared, round_id=ROUND, a=VICTIM, b=w, context=context), -keyschedule.mask_sign(VICTIM, w)))
    masked = np.array(live.masked[VICTIM].vector, copy=True)
    mask_accumulate(masked, masks)
    return masked


def _attack(factory):
    rng = np.random.default_rng(7)  # inputs are test data
    inputs = [rng.integers(0, 2**32 - 1, size=LENGTH, dtype=np.uint32, endpoint=True) for _ in range(6)]
    signing = [Ed25519KeyPair.generate() for _ in range(6)]
    stale = Instance(factory, signing, [np.zeros(LENGTH, np.uint32)] * 6)
    for h in range(6):
        stale.bundle(h, stale.neighbours(h))
    stale_attestation = (stale.masked[VICTIM].skipped, stale.masked[VICTIM].attestation)
    U1, U2 = frozenset(GROUPS[0][0]), frozenset(GROUPS[1][0])
    stale_signatures = {U1: {1: stale.sign(1, U1)}, U2: {0: stale.sign(0, U2)}}
    live = Instance(factory, signing, inputs)
    return _split_view(live, stale_signatures, stale_attestation), live, inputs


pytestmark = pytest.mark.filterwarnings("ignore::fedcrypt.errors.HonestButCuriousWarning")


def test_positive_control_unbound_statements_from_a_stale_instance_recover_the_victim() -> None:
    assert CONFIG.consistency_quorum == 4
    replies, live, inputs = _attack(UnboundClient)
    assert np.array_equal(_strip(live, replies), inputs[VICTIM])


def test_statements_from_a_stale_instance_do_not_verify_in_the_live_one() -> None:
    with pytest.raises(InvalidSignature):
        _attack(ClientProtocol)


def test_the_live_instance_alone_refuses_the_split_view() -> None:
    rng = np.random.default_rng(8)
    inputs = [rng.integers(0, 2**32 - 1, size=LENGTH, dtype=np.uint32, endpoint=True) for _ in range(6)]
    live = Instance(ClientProtocol, [Ed25519KeyPair.generate() for _ in range(6)], inputs)
    with pytest.raises(FedcryptError):
        # without replays each survivor set gathers 3 signatures, below the quorum of 4,
        # and the victim's own attestation shows the neighbours it skipped
        _split_view(live, {}, None)
