"""SecAgg with a roster over NVIDIA FLARE (the malicious-server mode: ``verify_survivors``, signed
adverts, the consistency round), in FLARE's simulator: every site has its own Ed25519 identity
file and the roster pinned by its digest, named in the job with ``{site}``; the roster's member
names are the FLARE site names. A dropout still gives the FedAvg of the survivors; a server that
swaps a peer's advertised key in a site's key directory is refused by that site (and, without a
roster, the same swap goes through: the refusal is the roster's doing)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fedcrypt.identity import NodeIdentity, Roster

from _nvflare_apps import plaintext_fedavg  # this folder is not a package: 'nvflare' would shadow FLARE
from test_nvflare_adapter import fedavg_tolerance, needs_nvflare, run_simulator

pytestmark = [needs_nvflare, pytest.mark.slow]

SITES = ["site-1", "site-2", "site-3", "site-4"]
SECAGG_PLUS = {"clip": 8.0, "neighbours": 2, "threshold": 0.6, "stage_timeout": 30.0}


def credentials(tmp_path: Path) -> dict[str, str]:
    """Identity files for the four sites and their roster; the site object's arguments."""
    folder = tmp_path / "identities"
    folder.mkdir()
    identities = {site: NodeIdentity.generate() for site in SITES}
    for site, identity in identities.items():
        identity.save(folder / f"{site}.key")
    Roster({site: identity.public_bytes for site, identity in identities.items()}).save(folder / "roster")
    digest = hashlib.sha256((folder / "roster").read_bytes()).hexdigest()
    return {"identity": str(folder / "{site}.key"), "roster": str(folder / "roster"), "roster_digest": digest}


def test_secagg_plus_with_a_roster_equals_fedavg_of_the_survivors(tmp_path: Path) -> None:
    # 4 sites, 2 rounds of SecAgg+ with a roster; site-4 drops at round 1's MASKED_INPUT
    creds = credentials(tmp_path)
    server_kwargs = {**SECAGG_PLUS, "num_rounds": 2, "roster": creds["roster"]}
    client_kwargs = {"train": "tests.nvflare._nvflare_apps:train", "drops": "site-4:1:MASKED_INPUT", **creds}
    model, reports = run_simulator(tmp_path, 4, server_kwargs, "tests.nvflare._dropping:DroppingClient", client_kwargs)
    survivors = [SITES[:3], SITES]
    expected, _ = plaintext_fedavg(survivors)
    tol = fedavg_tolerance(server_kwargs, survivors, magnitude=4.0)
    for name, value in model.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=tol)
    assert [r["survivors"] for r in reports] == survivors
    assert [r["dropped"] for r in reports] == [{"site-4": "MASKED_INPUT"}, {}]
    assert all(not r["refused"] and r["aborted"] is None for r in reports)
    # the malicious-server mode ran: the survivors signed the survivor set before unmasking
    assert list(reports[0]["stage_seconds"]) == ["ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_INPUT", "CONSISTENCY_CHECK", "UNMASK"]


def test_a_swapped_advertised_key_is_refused_with_a_roster_and_not_without(tmp_path: Path) -> None:
    # the server shows site-1 a peer's advert with a server-made cipher key (the peer's signature kept)
    creds = credentials(tmp_path)
    server = "tests.nvflare._dropping:KeySwapServer"
    server_kwargs = {**SECAGG_PLUS, "num_rounds": 1, "victim": "site-1"}
    client = "tests.nvflare._dropping:DroppingClient"
    (tmp_path / "roster").mkdir()
    (tmp_path / "plain").mkdir()

    model, reports = run_simulator(tmp_path / "roster", 4, {**server_kwargs, "roster": creds["roster"]}, client,
                                   {"train": "tests.nvflare._nvflare_apps:train", **creds}, server=server)
    # site-1 checked the advert's signature against the roster and refused the directory: it never
    # encrypted a share to the server's key, and the round finished without it
    assert reports[0]["dropped"] == {"site-1": "SHARE_KEYS"} and reports[0]["survivors"] == SITES[1:]
    expected, _ = plaintext_fedavg([SITES[1:]])
    tol = fedavg_tolerance(server_kwargs, [SITES[1:]], magnitude=4.0)
    for name, value in model.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=tol)
    site_log = next((tmp_path / "roster" / "ws").glob("**/site-1/**/log.txt")).read_text(errors="replace")
    assert "InvalidSignature" in site_log

    # control: without a roster the same swap is accepted (honest-but-curious mode: outside its threat model)
    _, reports = run_simulator(tmp_path / "plain", 4, server_kwargs, client, {"train": "tests.nvflare._nvflare_apps:train"},
                               server=server)
    assert reports[0]["dropped"].get("site-1") != "SHARE_KEYS"
