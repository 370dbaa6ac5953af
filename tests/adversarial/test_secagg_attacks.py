"""A malicious server (fedcrypt.testing.malicious) against the real SecAgg client objects.

Every attack of SECURITY.md's table runs in the honest-but-curious configuration and with
``verify_survivors`` (signed keys and survivor sets), on SecAgg and SecAgg+. An attack
inside the threat model must end with the clients refusing with a typed error and the
server holding no client's two secrets; the attacks outside it (key substitution without
a PKI, clients colluding beyond the bound) are run too, to show that the limitation
SECURITY.md states is real and exactly as large as stated.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.secagg import SecAggConfig, Stage
from fedcrypt.testing import (
    BothSharesDirect,
    BothSharesSplit,
    InconsistentModels,
    InProcessClients,
    KeySwapMitm,
    MaliciousServer,
    ReplayPreviousRound,
    SplitSurvivorViews,
    WithholdVictimShares,
    secagg_configs,
)

CONFIGS = {
    "secagg": dict(num_clients=5, threshold=3),
    "secagg+": dict(num_clients=8, threshold=3, neighbours=4),
}


def config(kind: str, verify: bool) -> SecAggConfig:
    return SecAggConfig(**CONFIGS[kind], verify_survivors=verify)


def errors_of(report, clients) -> set[str]:
    found = report.refused_by()
    return set().union(*(found.get(c, set()) for c in clients))


@pytest.mark.parametrize("verify", [False, True], ids=["hbc", "verify"])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_honest_double_completes_with_the_exact_sum(kind: str, verify: bool) -> None:
    report = MaliciousServer(InProcessClients(config(kind, verify), round_id=2)).run()
    assert report.completed and report.sum_correct and not report.refusals and report.defeated


@pytest.mark.parametrize("verify", [False, True], ids=["hbc", "verify"])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_asking_for_both_shares_in_one_request_is_refused_by_every_client(kind: str, verify: bool) -> None:
    cfg = config(kind, verify)
    report = BothSharesDirect(InProcessClients(cfg, round_id=2), victim=1).run()
    holders = cfg.holders(1, 2) - {1}
    assert errors_of(report, holders) == {"ProtocolViolationError"}
    assert all(r.stage is Stage.UNMASK for r in report.refusals)
    assert report.defeated and report.aborted


@pytest.mark.parametrize("verify", [False, True], ids=["hbc", "verify"])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_asking_for_the_other_share_in_a_second_request_is_refused(kind: str, verify: bool) -> None:
    cfg = config(kind, verify)
    attack = BothSharesSplit(InProcessClients(cfg, round_id=2), victim=1)
    report = attack.run()
    askers = [c for c, sent in attack.sent[Stage.UNMASK].items() if len(sent) == 2]
    assert askers, "the attack never sent a second request"
    assert errors_of(report, askers) == {"UnexpectedMessageError"}
    # the first (honest) request was answered: the round completes, only the victim's seed shares revealed
    assert report.completed and report.sum_correct and report.defeated
    assert 1 not in attack.key_shares


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_asking_for_the_two_shares_in_two_rounds_yields_unrelated_secrets(kind: str) -> None:
    """Round 1: the victim survives (self-mask shares); round 2: it 'drops' (mask-key shares).

    Each round draws fresh secrets, so the round-1 seed and the round-2 key do not unmask
    the round-2 (or round-1) masked input of the victim.
    """
    cfg = config(kind, False)
    victim = 1
    first = MaliciousServer(InProcessClients(cfg, round_id=1, length=32))
    assert first.run().completed
    inputs = first.endpoints.inputs
    second = MaliciousServer(InProcessClients(cfg, inputs=inputs, round_id=2), drops={Stage.MASKED_INPUT: {victim}})
    second.run()
    assert victim in first.seed_shares and victim in second.key_shares
    # the attacker now combines them as if they belonged together
    mixed = MaliciousServer(InProcessClients(cfg, inputs=inputs, round_id=2))
    mixed.seed_shares = {victim: first.seed_shares[victim]}
    mixed.key_shares = {victim: second.key_shares[victim]}
    mixed.report.leaked = (victim,)
    for source in (first, second):
        mixed.masked = {victim: source.masked.get(victim, first.masked[victim])}
        mixed.directories, mixed.bundles, mixed.adverts = first.directories, first.bundles, first.adverts
        guesses = mixed.recover()
        assert victim in guesses  # both share sets combine; they just belong to different rounds
        assert not np.array_equal(guesses[victim], inputs[victim])


@pytest.mark.parametrize("verify", [False, True], ids=["hbc", "verify"])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_different_survivor_sets_never_yield_both_secrets(kind: str, verify: bool) -> None:
    cfg = config(kind, verify)
    report = SplitSurvivorViews(InProcessClients(cfg, round_id=2), victim=1).run()
    assert report.defeated
    if verify:  # the clients notice: their signed survivor sets differ
        assert errors_of(report, cfg.holders(1, 2)) <= {"InvalidSignature", "ProtocolViolationError"}
        assert errors_of(report, cfg.holders(1, 2))


@settings(max_examples=15, deadline=None)
@given(cfg=secagg_configs(min_clients=3, max_clients=7, verify_survivors=None), data=st.data())
def test_no_survivor_split_reveals_both_secrets_for_any_admissible_config(cfg: SecAggConfig, data) -> None:
    victim = data.draw(st.integers(0, cfg.num_clients - 1), label="victim")
    report = SplitSurvivorViews(InProcessClients(cfg, round_id=4, length=4), victim=victim).run()
    assert report.defeated, report.outcome()


def test_colluding_clients_beyond_the_bound_expose_the_victim_as_documented() -> None:
    """2t > m holds (6 > 5) but 2t > m + c fails with one colluder: SECURITY.md's bound is tight."""
    exposed = SplitSurvivorViews(InProcessClients(SecAggConfig(5, 3), round_id=2), victim=0, colluders=[4]).run()
    assert exposed.recovered == (0,)
    safe = SplitSurvivorViews(InProcessClients(SecAggConfig(5, 4), round_id=2), victim=0, colluders=[4]).run()
    assert safe.defeated


@pytest.mark.parametrize("verify", [False, True], ids=["hbc", "verify"])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_withholding_the_victims_key_shares_while_claiming_it_survived_is_refused(kind: str, verify: bool) -> None:
    cfg = config(kind, verify)
    report = WithholdVictimShares(InProcessClients(cfg, round_id=2), victim=1).run()
    others = cfg.holders(1, 2) - {1}
    # the victim's neighbours name it as skipped in their masked inputs; the server refuses them
    refused = {r.client for r in report.server_refusals if r.error == "ProtocolViolationError" and "skipped" in r.message}
    assert refused == others
    assert report.defeated and report.aborted and not report.completed


@pytest.mark.parametrize("verify", [False, True], ids=["hbc", "verify"])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_replaying_a_previous_rounds_messages_is_refused_and_changes_nothing(kind: str, verify: bool) -> None:
    cfg = config(kind, verify)
    previous = MaliciousServer(InProcessClients(cfg, round_id=1))
    assert previous.run().completed
    keys = previous.endpoints.signing_keys
    attack = ReplayPreviousRound(InProcessClients(cfg, round_id=2, signing_keys=keys), previous)
    report = attack.run()
    assert attack.replays_sent > 0
    assert len(report.refusals) == attack.replays_sent
    assert {r.error for r in report.refusals} <= {
        "UnexpectedMessageError", "ProtocolViolationError", "DecryptionError", "InvalidSignature",
    }
    assert report.completed and report.sum_correct and report.defeated


def test_key_swap_without_a_pki_exposes_the_victim_as_documented() -> None:
    """Outside the honest-but-curious mode's threat model (SECURITY.md): the server relays keys."""
    report = KeySwapMitm(InProcessClients(config("secagg", False), round_id=2), victim=2).run()
    assert report.recovered == (2,)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_key_swap_is_refused_with_verify_survivors(kind: str) -> None:
    report = KeySwapMitm(InProcessClients(config(kind, True), round_id=2), victim=2).run()
    assert report.refused_by() == {2: {"InvalidSignature"}}
    assert report.defeated
    # the victim is out of the round; the others still finish with their exact sum
    assert report.completed and report.sum_correct


@pytest.mark.parametrize("verify", [False, True], ids=["hbc", "verify"])
def test_different_global_models_make_every_client_refuse(verify: bool) -> None:
    """Clients bind their global model into associated_data; the server forwards every advert."""
    cfg = config("secagg", verify)
    models = {i: (b"model-A" if i != 3 else b"model-B") for i in range(cfg.num_clients)}
    report = InconsistentModels(InProcessClients(cfg, round_id=2, associated_data=models)).run()
    assert set(report.refused_by()) == set(range(cfg.num_clients))
    assert {r.error for r in report.refusals} == {"ProtocolViolationError"}
    assert report.aborted and report.defeated


def test_non_fedcrypt_errors_are_never_swallowed_by_the_double() -> None:
    class Broken(InProcessClients):
        def deliver(self, client_id: int, request: bytes) -> bytes:
            raise RuntimeError("transport bug")

    with pytest.raises(RuntimeError, match="transport bug"):
        MaliciousServer(Broken(config("secagg", False))).run()
    refusals = BothSharesDirect(InProcessClients(config("secagg", False))).run().refusals
    assert refusals and all(r.error == "ProtocolViolationError" for r in refusals)


LOW_ORDER_POINTS = [bytes(32), (1).to_bytes(32, "little"), bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=["zero", "one", "order-8"])
@pytest.mark.parametrize("which", ["cipher", "mask"])
def test_low_order_peer_keys_are_refused_with_a_typed_error(point: bytes, which: str) -> None:
    """A server that puts a small-order X25519 point in place of a peer's key (forcing a known shared secret)."""
    from fedcrypt.secagg import AdvertiseKeys, KeyDirectory

    class LowOrder(MaliciousServer):
        name = "low-order peer key"

        def tamper(self, stage, client, request):
            if isinstance(request, KeyDirectory) and client == 0:
                adverts = tuple(
                    a if a.sender != 1 else AdvertiseKeys(
                        a.round_id, a.sender,
                        point if which == "cipher" else a.cipher_public_key,
                        point if which == "mask" else a.mask_public_key,
                        a.context, a.signature,
                    )
                    for a in request.adverts
                )
                return [KeyDirectory(request.round_id, request.recipient, adverts)]
            return super().tamper(stage, client, request)

    report = LowOrder(InProcessClients(config("secagg", False), round_id=2)).run()
    assert report.refused_by().get(0) == {"CryptoError"}, report.refusals
    assert report.defeated
