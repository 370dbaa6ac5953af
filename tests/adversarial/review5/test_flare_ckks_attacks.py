"""Attacker review 5, FLARE adapter, single-key CKKS (``fedcrypt.integrations.nvflare.ckks``).

1. **A failed DEAL strands the run** (break, the core's dealer rule; found by the malicious-site
   search, ``test_flare_malicious_site_search.py``). The dealer is the lowest keyless node
   (``site_node`` hashes the site name: the same site every run). It generates the key when it
   handles the DealRequest; if its reply never arrives (a malicious dealer, or an honest one
   whose reply is lost or later than ``stage_timeout``) round 1 aborts ("the dealer did not
   deal the key"), and from round 2 on the dealer *holds* a key while no other site does:
   ``CkksServer._end_context`` refuses every keyless site ("key holders never deal again; give
   it the key file") and every later round aborts ("1 nodes hold the round's CKKS key, fewer
   than min_contributions"). One failure at one stage ends the federation's progress for good;
   only new key files recover. Severity: medium-high (availability; needs no attacker, a lost
   reply does it). FIXED (``CkksServer._end_context``): while no context is pinned, keyless
   sites that outnumber the holders of the most reported key are dealt a new key by the lowest
   of them; the stranded dealer alone is refused (with a roster, holders also deal the pinned
   key to late joiners).
2. **The FLARE path runs the key holder's checks** (no break): after an honest key-file round a
   server sends a site that still has a decryption left (a) the forged aggregate ``(0, K)``
   (attacker review 3), (b) the site's own upload as the aggregate, (c) another site's upload
   as the aggregate; each is refused with a typed error and nothing is released. Positive
   control: with the provenance check removed (review 3's ``weaken``), (a) releases ``K s``.
3. **One site claiming another key ends every round** (break, the core's ``_end_context``): before
   a context is pinned (round 1, and every round after while none completes), a site that
   answers CONTEXT with the public context of a key of its own makes the server abort the round:
   with key files "the nodes report 2 different CKKS keys" (it cannot tell which is right), with
   the dealer set-up the honest keyless sites are refused ("key holders never deal again").
   Nothing completes, so nothing is ever pinned: every round aborts. Severity: medium
   (availability, one malicious site). FIXED: the key most sites report is the round's (a tie
   still ends the round) and the others' holders are refused; in dealer mode the keyless
   majority is dealt a new key and the claimer refused.
4. **No secret in logs, errors, reports or reprs** (no break): a dealer-mode CKKS job and a
   roster SecAgg job over the FLARE objects, with every logger at DEBUG and a malicious server
   sending garbage to every site: the sites' CKKS secret keys and identity keys appear in no
   log record, exception message (the sites' and the server's report), report or repr.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nvflare.collab")
pytest.importorskip("tenseal")

from fedcrypt.errors import FedcryptError  # noqa: E402
from fedcrypt.he import KeyOwner  # noqa: E402
from fedcrypt.he.blob import BlobKind, peek_header  # noqa: E402
from fedcrypt.he.round import DecryptRequest, Decryption, Upload, decode_message  # noqa: E402
from fedcrypt.identity import NodeIdentity  # noqa: E402
from fedcrypt.integrations.nvflare import CkksClient, CkksServer, SecAggClient, SecAggServer  # noqa: E402
from fedcrypt.integrations.nvflare.ckks import ckks_config, site_node  # noqa: E402

from ..review3 import _ckks_forge as forge  # noqa: E402
from ..review3.test_ckks_round_chosen_ciphertext import weaken  # noqa: E402
from ._flare import Harness, fedavg, initial, install  # noqa: E402
from .test_flare_malicious_site_search import BY_NODE, Recording, credentials  # noqa: E402

SITES = ["site-1", "site-2", "site-3", "site-4"]
TRAIN = "tests.adversarial.review5._flare:train"
INITIAL = "tests.adversarial.review5._flare:initial"
K = 1 << 57


class LostDealReply:
    """The dealer: handles every request with its real site object, but its DEAL reply of round 1 is lost."""

    def __init__(self, real: CkksClient) -> None:
        self.real = real

    def __call__(self, method: str, request: Any) -> Any:
        reply = getattr(self.real, method)(request=request)
        message = decode_message(request["payload"])
        if message.STAGE.name == "DEAL" and message.round_id == 1:
            raise TimeoutError("the DEAL reply was lost")
        return reply


def dealer_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, lose_deal: bool, rounds: int = 3) -> list[dict]:
    ckks = {"clip": 4.0}
    sites: dict[str, Any] = {site: CkksClient(train=TRAIN, ckks=ckks) for site in SITES}
    if lose_deal:
        sites[BY_NODE[0]] = LostDealReply(sites[BY_NODE[0]])
    with monkeypatch.context() as patch:
        install(patch, Harness(sites, tmp_path))
        return CkksServer(INITIAL, num_rounds=rounds, ckks=ckks, stage_timeout=30.0).run()


def test_control_an_honest_dealer_job_runs_every_round(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reports = dealer_job(monkeypatch, tmp_path, lose_deal=False)
    assert [r["aborted"] for r in reports] == [None, None, None]
    assert [r["survivors"] for r in reports] == [SITES] * 3


def test_a_lost_deal_reply_does_not_end_every_later_round(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # fixed (CkksServer._end_context): round 1 aborts at DEAL; from round 2 the keyless sites outnumber the one
    # holder of a key nobody pinned, so the lowest of them deals a new key; the stranded dealer alone is refused
    reports = dealer_job(monkeypatch, tmp_path, lose_deal=True)
    assert reports[0]["aborted"].startswith("RoundAbortedError: the dealer did not deal the key")
    others = [s for s in SITES if s != BY_NODE[0]]
    for report in reports[1:]:
        assert report["aborted"] is None and report["survivors"] == others, report
        assert list(report["refused"]) == [BY_NODE[0]] and "ContextMismatchError" in report["refused"][BY_NODE[0]]
    assert "nobody pinned" in reports[1]["refused"][BY_NODE[0]]


# ----------------------------------------------------------------------------- 2. the key holder's checks
def _key_file_round(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Recording, KeyOwner, str, dict]:
    """One honest key-file round, one decryptor; the harness (recording), the key, a site with a decryption left,
    and every site's upload."""
    ckks = {"clip": 4.0, "key_setup": "file", "decryptors": 1}
    key = KeyOwner.generate(ckks_config(**ckks).params)
    (tmp_path / "ckks.key").write_bytes(key.to_bytes(include_secret_key=True))
    sites = {site: CkksClient(train=TRAIN, ckks=ckks, key_path=str(tmp_path / "ckks.key")) for site in SITES}
    harness = Recording(sites, tmp_path)
    from .test_flare_malicious_site_search import ckks_stage
    harness.stage_of = ckks_stage
    install(monkeypatch, harness)
    report = CkksServer(INITIAL, num_rounds=1, ckks=ckks, stage_timeout=30.0).run()[0]
    assert report["aborted"] is None and report["survivors"] == SITES
    decryptors = {site for site, (stage, _), _ in harness.replies if stage == "DECRYPT"}
    victim = next(site for site in SITES if site not in decryptors)
    uploads = {site: decode_message(reply["payload"]) for site, (stage, _), reply in harness.replies if stage == "ENCRYPT"}
    return harness, key, victim, uploads


def _ask(harness: Harness, victim: str, aggregate: bytes) -> tuple[np.ndarray | None, BaseException | None]:
    request = {"payload": DecryptRequest(1, site_node(victim), aggregate).to_bytes()}
    try:
        reply = harness.call(victim, "fedcrypt_ckks", request)
    except Exception as exc:  # noqa: BLE001 - what the site raises is the point
        return None, exc
    return Decryption.from_bytes(reply["payload"]).values, None


def _forged(key: KeyOwner, uploads: dict[str, Upload]) -> bytes:
    ctx = key.aggregator_context()
    scratch = KeyOwner.generate(key.params)  # the server's own key: only for SEAL's byte layout
    template = forge.template_ciphertext(scratch.aggregator_context(), scratch.encrypt(np.zeros(4)))
    header = peek_header(next(iter(uploads.values())).blob)
    return forge.forge_blob(ctx, forge.key_times(ctx, template, K), kind=BlobKind.AGGREGATE, length=header.length,
                            spec_digest=header.spec_digest, contributions=2)


def test_the_flare_site_refuses_forged_and_relabelled_aggregates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # searched: the forged (0, K) aggregate, the victim's own upload and each other site's upload as "the aggregate"
    harness, key, victim, uploads = _key_file_round(monkeypatch, tmp_path)
    plans = {"forged (0, K)": _forged(key, uploads), **{f"upload of {s}": u.blob for s, u in uploads.items()}}
    for plan, aggregate in plans.items():
        released, error = _ask(harness, victim, aggregate)
        assert released is None and isinstance(error, FedcryptError), (plan, error)
    # nothing was spent: the victim still decrypts the genuine aggregate of the round's uploads once
    total = key.aggregator_context().start()
    for upload in uploads.values():
        total.add(upload.blob, 1)
    released, error = _ask(harness, victim, total.finish())
    assert error is None and released is not None


def test_positive_control_a_weakened_flare_site_releases_k_times_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    harness, key, victim, uploads = _key_file_round(monkeypatch, tmp_path)
    weaken(monkeypatch)
    forged = _forged(key, uploads)
    released, error = _ask(harness, victim, forged)
    assert error is None and released is not None
    key_times_s = key._decrypt_exact(forged)
    assert np.abs(released - key_times_s).max() < 1e-3 * np.abs(key_times_s).max() and np.abs(key_times_s).max() > 1e3


# ----------------------------------------------------------------------------- 3. secrets
def _forms(secret: bytes) -> set[str]:
    import base64

    out = {secret.hex(), secret.hex().upper(), repr(secret)[2:-1]}
    for offset in range(3):
        out.add(base64.b64encode(secret[offset:]).decode()[:-4])
    return {f for f in out if len(f) >= 12}


def test_no_secret_in_logs_errors_reports_or_reprs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    # a dealer-mode CKKS job, then a malicious server sends every site garbage and replays
    ckks = {"clip": 4.0}
    sites = {site: CkksClient(train=TRAIN, ckks=ckks) for site in SITES}
    harness = install(monkeypatch, Harness(sites, tmp_path))
    reports = CkksServer(INITIAL, num_rounds=2, ckks=ckks, stage_timeout=30.0).run()
    garbage = [None, {}, {"payload": b""}, {"payload": b"\x00" * 64}]
    garbage += [request for _, _, request in harness.calls]  # every request again (replays)
    for site in SITES:
        for request in garbage:
            try:
                harness.call(site, "fedcrypt_ckks", request)
            except Exception as exc:  # noqa: BLE001
                texts.append(f"{type(exc).__name__}: {exc}")
    secrets = {}
    for site, client in sites.items():
        owner = client._core._owner
        full, public = owner.to_bytes(include_secret_key=True), owner.aggregator_context().to_bytes()
        part = full[len(public):]
        for start in range(0, len(part) - 32, 997):
            secrets[f"{site}.sk[{start}]"] = part[start:start + 32]
        texts += [repr(client), str(client), repr(client._core), repr(owner)]
    # a roster SecAgg job: the identity keys
    creds = credentials(tmp_path / "ids")
    secagg_sites = {site: SecAggClient(train=TRAIN, **creds) for site in SITES}
    harness.sites.clear()
    harness.sites.update(secagg_sites)
    reports += SecAggServer(INITIAL, num_rounds=1, clip=8.0, roster=creds["roster"]).run()
    for site in SITES:
        identity = NodeIdentity.load(Path(creds["identity"].replace("{site}", site)))
        secrets[f"{site}.identity"] = identity.signing_key.private_bytes().reveal()
        texts += [repr(secagg_sites[site]), repr(identity)]
    for errors in harness.errors.values():
        texts += [f"{type(e).__name__}: {e}" for e in errors]
    texts += [repr(reports), *(record.getMessage() for record in caplog.records)]
    haystack = "\n".join(texts)
    assert len(secrets) > 20 and len(caplog.records) >= 5 and len(texts) > 100
    for label, raw in secrets.items():
        for form in _forms(bytes(raw)):
            assert form not in haystack, f"secret {label} appears as {form[:8]}..."


# ----------------------------------------------------------------------------- 4. one site claims another key
class ClaimsAKey:
    """A site that answers every CONTEXT request with the public context of a key of its own (one it made up,
    of the round's parameters); everything else as its real site object."""

    def __init__(self, real: CkksClient, params: Any) -> None:
        self.real, self.context = real, KeyOwner.generate(params).aggregator_context().to_bytes()

    def __call__(self, method: str, request: Any) -> Any:
        from fedcrypt.he.round import ContextReply

        message = decode_message(request["payload"])
        if message.STAGE.name == "CONTEXT":
            return {"payload": ContextReply(message.round_id, message.node, self.context, b"", "", b"").to_bytes()}
        return getattr(self.real, method)(request=request)


def claims_a_key_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key_setup: str) -> list[dict]:
    ckks = {"clip": 4.0, "key_setup": key_setup}
    kwargs: dict = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    if key_setup == "file":
        key = KeyOwner.generate(ckks_config(**ckks).params)
        (tmp_path / "ckks.key").write_bytes(key.to_bytes(include_secret_key=True))
        kwargs = {"key_path": str(tmp_path / "ckks.key")}
    sites: dict[str, Any] = {site: CkksClient(train=TRAIN, ckks=ckks, **kwargs) for site in SITES}
    sites["site-2"] = ClaimsAKey(sites["site-2"], ckks_config(**ckks).params)
    with monkeypatch.context() as patch:
        install(patch, Harness(sites, tmp_path))
        return CkksServer(INITIAL, num_rounds=3, ckks=ckks, stage_timeout=30.0).run()


@pytest.mark.parametrize("key_setup", ["file", "dealer"])
def test_one_site_claiming_another_key_does_not_end_every_round(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                key_setup: str) -> None:
    # fixed (CkksServer._end_context): the key most sites report is the round's (file), or the keyless sites
    # outnumber the claimer and are dealt a new key (dealer); the claimer alone is refused, every round completes
    reports = claims_a_key_job(monkeypatch, tmp_path, key_setup)
    for report in reports:
        assert report["aborted"] is None and report["survivors"] == [s for s in SITES if s != "site-2"], report
        assert list(report["refused"]) == ["site-2"] and report["refused"]["site-2"].startswith("ContextMismatchError")
