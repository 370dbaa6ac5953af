"""Attacker review 5, FLARE adapter, SecAgg with a roster (the malicious-server mode): a server
that shows different sites different ADVERTISE_KEYS setups.

fedcrypt.secagg.setup's docstring: "a transport's server ... sends every node the same setup:
the config, the node list, the round id, the largest FedAvg weight, any transport data ...
every party binds the round's associated data (round_binding: run, round and the setup's
bytes), so nodes shown different setups fail the round." The FLARE adapter
(``fedcrypt.integrations.nvflare.secagg``) binds ``sites + dp + model digest`` (and the core
binds the config into the round context), but **not ``max-weight``**, which each site uses to
scale its own input: it uploads ``w/M [x, metrics, 1]`` with the ``M`` of *its* request.

**The break** (search below): the server sends the victim ``max-weight = 1000`` and every
other site ``max-weight = 1e30``. Every site checks ``0 < w <= M``, the adverts' contexts
agree, the survivors sign one survivor set, the round completes with all four sites as
survivors, and the "sum" is ``w_v/1000 [x_v, m_v, 1] + O(1e-27)``: the server decodes the
victim's update exactly. This is the very thing the malicious-server mode claims impossible
("the server cannot remove every mask of y_v ... never one input alone"). The same
``round_binding`` without max-weight is in the Flower SecAgg adapter
(``fedcrypt/integrations/flower/secagg.py``), which this file does not test (another
engineer's tree).

Search (a server that also skips its own check of the adverts' contexts, so that what the
other sites were shown reaches the victim): every field of the setup request (config: scale / clip / threshold / neighbours /
max_colluders / rounding; sites; client-id; round; dp; model digest with and without the
matching arrays; max-weight) x a few alternative values, sent to every site but the victim,
a real 4-site roster round each; a plan is *isolating* when the round finishes with the
victim and another site among the survivors and the server's model equals the victim's
update alone. Positive control: with the round context weakened so that it no longer binds
the config, the same search finds the config's ``scale`` (non-victims encode to zero).

Fix: bind max-weight (better: the whole setup request, every field but ``client-id``) into
``round_binding`` in both adapters, or have ``fedcrypt.secagg.setup`` own one canonical setup
encoding that the transports bind, so a new field cannot be forgotten.

Fixed in the FLARE adapter (its server and sites bind ``sites + dp + model digest + max-weight``,
every setup field but ``client-id``): the search's strict xfail is now a regression test, and the
replay checks that a per-site max-weight fails the round. The Flower adapter is not tested here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

pytest.importorskip("nvflare.collab")

import fedcrypt.secagg.keyschedule as keyschedule  # noqa: E402
from fedcrypt.identity import NodeIdentity, Roster  # noqa: E402
from fedcrypt.integrations.nvflare import SecAggClient, SecAggServer  # noqa: E402
from fedcrypt.integrations.nvflare._common import model_digest  # noqa: E402
import fedcrypt.secagg.server as secagg_server  # noqa: E402
from fedcrypt.secagg import ServerProtocol  # noqa: E402
from fedcrypt.secagg.messages import AdvertiseKeys  # noqa: E402
from fedcrypt.secagg.membership import pack_members  # noqa: E402
from fedcrypt.secagg.setup import config_for, dp_to_bytes, dump_config, load_config  # noqa: E402

from ._flare import Harness, fedavg, initial, install, update_of  # noqa: E402

SITES = ["site-1", "site-2", "site-3", "site-4"]
VICTIM = "site-1"
TRAIN = "tests.adversarial.review5._flare:train"
INITIAL = "tests.adversarial.review5._flare:initial"


def credentials(folder: Path) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    identities = {site: NodeIdentity.generate() for site in SITES}
    for site, identity in identities.items():
        identity.save(folder / f"{site}.key")
    Roster({site: identity.public_bytes for site, identity in identities.items()}).save(folder / "roster")
    digest = hashlib.sha256((folder / "roster").read_bytes()).hexdigest()
    return {"identity": str(folder / "{site}.key"), "roster": str(folder / "roster"), "roster_digest": digest}


def _config(change: dict[str, Any]) -> Callable[[dict], None]:
    def edit(request: dict) -> None:
        request["config"] = dump_config(dataclasses.replace(load_config(request["config"]), **change))
    return edit


def _set(name: str, value: Any) -> Callable[[dict], None]:
    def edit(request: dict) -> None:
        request[name] = value
    return edit


OTHER_MODEL = {"a": np.full((3, 7), 50.0, np.float32), "b": np.full(16, 50.0, np.float32)}

#: what a malicious server can show the sites other than the victim (field, value) -> edit of the setup
SETUP_EDITS: dict[str, Callable[[dict], None]] = {
    "config.scale=2^-12": _config({"scale": 2.0**-12}),
    "config.clip=1e-6": _config({"clip": 1e-6}),
    "config.threshold=4": _config({"threshold": 4}),
    "config.rounding=nearest": _config({"rounding": "nearest"}),
    "config.max_colluders=1": _config({"max_colluders": 1}),
    "sites=reversed": _set("sites", pack_members(sorted(SITES, reverse=True))),
    "round=+1": lambda r: r.__setitem__("round", r["round"] + 1),
    "dp=ddgauss z=0.5": _set("dp", dp_to_bytes(0.5, 1.0, 20, "ddgauss", b"\x01" * 32)),
    "model=other digest": _set("model", model_digest(OTHER_MODEL)),
    "max-weight=1e30": _set("max-weight", 1e30),
    "max-weight=1e300": _set("max-weight", 1e300),
}
#: at MASKED_INPUT: the other model's arrays with the other digest
TRAIN_EDITS = {"model=other digest": _set("arrays", OTHER_MODEL)}


def run_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, creds: dict[str, str], plan: str) -> dict[str, Any]:
    """One real 4-site roster round whose setup shows every site but the victim ``SETUP_EDITS[plan]``."""
    sites = {site: SecAggClient(train=TRAIN, **creds) for site in SITES}

    def rewrite(stage: str, requests: dict[str, dict]) -> None:
        edits = {"ADVERTISE_KEYS": SETUP_EDITS, "MASKED_INPUT": TRAIN_EDITS}.get(stage, {})
        if plan in edits:
            for site, request in requests.items():
                if site != VICTIM:
                    edits[plan](request)

    with monkeypatch.context() as patch:
        install(patch, Harness(sites, tmp_path, rewrite=rewrite))
        patch.setitem(secagg_server._HANDLERS, AdvertiseKeys, _lenient(ServerProtocol._on_advertise))
        server = SecAggServer(INITIAL, num_rounds=1, clip=8.0, roster=creds["roster"], stage_timeout=30.0)
        report = server.run()[0]
    return {"report": report, "model": server.model}


def _lenient(check: Callable) -> Callable:
    """The malicious server does not refuse an advert of another round context (its own check skipped):
    whatever the sites are shown, their adverts reach the victim, whose client must refuse them."""
    def on_advertise(self: ServerProtocol, message: Any) -> None:
        saved, self._context = self._context, message.context
        try:
            check(self, message)
        finally:
            self._context = saved
    return on_advertise


def isolates_victim(outcome: dict[str, Any]) -> bool:
    report, model = outcome["report"], outcome["model"]
    if report["aborted"] is not None or VICTIM not in report["survivors"] or len(report["survivors"]) < 2:
        return False
    alone = update_of(VICTIM, 1, initial())
    return all(np.allclose(model[k], alone[k], rtol=0, atol=1e-3) for k in alone)


def search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, plans: list[str]) -> dict[str, dict]:
    creds = credentials(tmp_path / "ids")
    found = {}
    for plan in plans:
        outcome = run_plan(monkeypatch, tmp_path, creds, plan)
        if isolates_victim(outcome):
            found[plan] = outcome["report"]
    return found


def test_the_harness_runs_an_honest_roster_round_to_the_fedavg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    outcome = run_plan(monkeypatch, tmp_path, credentials(tmp_path / "ids"), "none")
    report = outcome["report"]
    assert report["survivors"] == SITES and report["aborted"] is None and "CONSISTENCY_CHECK" in report["stage_seconds"]
    expected = fedavg(SITES, 1, initial())
    for k, v in expected.items():
        np.testing.assert_allclose(outcome["model"][k], v, rtol=0, atol=1e-4)
    assert not isolates_victim(outcome)


def test_setups_other_than_max_weight_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # searched: every setup field but max-weight, shown to every site but the victim; none isolates it
    # (the config is in the round context, sites/dp/model/round in the associated data, client-id checked)
    plans = [p for p in SETUP_EDITS if not p.startswith("max-weight")]
    assert search(monkeypatch, tmp_path, plans) == {}


def test_no_setup_a_server_can_show_the_sites_isolates_one_update(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    found = search(monkeypatch, tmp_path, list(SETUP_EDITS))
    assert found == {}, f"isolating setups: {sorted(found)}; survivors {[r['survivors'] for r in found.values()]}"


def test_per_site_max_weight_fails_the_round(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the break, fixed (the adapter binds max-weight into the round): the sites' adverts carry different
    # round contexts, every site refuses the key directory, the round aborts and the model stays the initial one
    outcome = run_plan(monkeypatch, tmp_path, credentials(tmp_path / "ids"), "max-weight=1e30")
    report = outcome["report"]
    assert report["aborted"] is not None and report["survivors"] == []
    assert report["dropped"] == {site: "SHARE_KEYS" for site in SITES}
    assert all(np.array_equal(outcome["model"][k], v) for k, v in initial().items())


def test_positive_control_the_search_finds_a_config_change_when_the_context_ignores_the_config(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # weakened core: the round context binds only the round and the associated data, not the config
    honest, fixed = keyschedule.round_context, config_for(4)
    monkeypatch.setattr(keyschedule, "round_context", lambda config, round_id, ad: honest(fixed, round_id, ad))
    found = search(monkeypatch, tmp_path, ["config.scale=2^-12", "config.threshold=4"])
    assert "config.scale=2^-12" in found
