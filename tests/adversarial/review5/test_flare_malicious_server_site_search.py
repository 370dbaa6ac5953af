"""Attacker review 5, FLARE adapter: a malicious SERVER against the sites' published methods, by search.

After an honest two-round job (SecAgg with a roster; CKKS with the dealer), the server sends
every site every request it sent in the job, each under every mutation of ``MUTATIONS``
(replayed as is, for another round or stage, with another site's payload, a truncated /
flipped / empty payload, another model's arrays, arrays where none belong, missing and extra
fields, and the setup fields out of range: max-weight 0 / -1 / NaN / inf / tiny / bool / int,
client-id -1 / 99 / bool / str, a garbage config, unsorted or repeated sites, a short model
digest). Rules checked:

* every refusal is a ``FedcryptError`` (no untyped error reaches the server, none crashes a site);
* a site answers each (stage, round) at most once, whatever the server replays (SecAgg: one
  advert, one share set, one masked input, one signature, one unmask per round; CKKS: one
  upload per round, and no more decryptions than uploads);
* afterwards the sites still run an honest round (a later round id) to the FedAvg.

Result: no rule broken (a non-break). Positive control: a site that restores its round client from a stale snapshot after each
MASKED_INPUT (weakened) is caught answering MASKED_INPUT twice in one round by the same search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

pytest.importorskip("nvflare.collab")
pytest.importorskip("tenseal")

from fedcrypt.errors import FedcryptError  # noqa: E402
from fedcrypt.integrations.nvflare import CkksClient, CkksServer, SecAggClient, SecAggServer  # noqa: E402
from fedcrypt.secagg.membership import pack_members  # noqa: E402

from ._flare import copy, fedavg, initial, install  # noqa: E402
from .test_flare_malicious_site_search import Recording, ckks_stage, credentials, secagg_stage  # noqa: E402

SITES = ["site-1", "site-2", "site-3", "site-4"]
TRAIN = "tests.adversarial.review5._flare:train"
INITIAL = "tests.adversarial.review5._flare:initial"
OTHER = {"a": np.full((3, 7), 5.0, np.float32), "b": np.full(16, 5.0, np.float32)}


def _set(name: str, value: Any) -> Callable[[dict, dict], dict | None]:
    return lambda r, ctx: {**r, name: value} if name in r else None


def _payload(edit: Callable[[bytes], bytes]) -> Callable[[dict, dict], dict | None]:
    return lambda r, ctx: {**r, "payload": edit(r["payload"])} if isinstance(r.get("payload"), bytes) and r["payload"] else None


MUTATIONS: dict[str, Callable[[dict, dict], dict | None]] = {
    "as is": lambda r, ctx: r,
    "round +1": lambda r, ctx: {**r, "round": r["round"] + 1} if "round" in r else None,
    "round -1": lambda r, ctx: {**r, "round": r["round"] - 1} if "round" in r else None,
    "round +100": lambda r, ctx: {**r, "round": r["round"] + 100} if "round" in r else None,
    "another site's payload": lambda r, ctx: {**r, "payload": ctx["other_payload"]} if ctx.get("other_payload") else None,
    "payload truncated": _payload(lambda p: p[:-1]),
    "payload flipped": _payload(lambda p: p[:len(p) // 2] + bytes([p[len(p) // 2] ^ 1]) + p[len(p) // 2 + 1:]),
    "payload empty": _payload(lambda p: b""),
    "other arrays": _set("arrays", OTHER),
    "arrays added": lambda r, ctx: {**r, "arrays": OTHER} if "arrays" not in r else None,
    "arrays dropped": lambda r, ctx: {k: v for k, v in r.items() if k != "arrays"} if "arrays" in r else None,
    "arrays not a model": _set("arrays", {"a": np.array(["x"], dtype=object)}),
    "extra field": lambda r, ctx: {**r, "extra": 1},
    "not a dict": lambda r, ctx: [r],
    "max-weight 0": _set("max-weight", 0.0),
    "max-weight -1": _set("max-weight", -1.0),
    "max-weight nan": _set("max-weight", float("nan")),
    "max-weight inf": _set("max-weight", float("inf")),
    "max-weight tiny": _set("max-weight", 1e-300),
    "max-weight True": _set("max-weight", True),
    "max-weight int": _set("max-weight", 1000),
    "client-id -1": _set("client-id", -1),
    "client-id 99": _set("client-id", 99),
    "client-id True": _set("client-id", True),
    "client-id str": _set("client-id", "0"),
    "config garbage": _set("config", b"\x00" * 20),
    "sites unsorted": _set("sites", pack_members(tuple(reversed(SITES)))),
    "model digest short": _set("model", b"\x00" * 31),
    "stage swapped": lambda r, ctx: {**r, "stage": ctx["other_stage"]} if "stage" in r and ctx.get("other_stage") else None,
}


def job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, protocol: str) -> tuple[Recording, Any, str]:
    if protocol == "ckks":
        ckks = {"clip": 4.0}
        sites = {site: CkksClient(train=TRAIN, ckks=ckks) for site in SITES}
        make_server = lambda rounds: CkksServer(INITIAL, num_rounds=rounds, ckks=ckks)  # noqa: E731
        harness, method = Recording(sites, tmp_path), "fedcrypt_ckks"
        harness.stage_of = ckks_stage
    else:
        creds = credentials(tmp_path / "ids")
        sites = {site: SecAggClient(train=TRAIN, **creds) for site in SITES}
        make_server = lambda rounds: SecAggServer(INITIAL, num_rounds=rounds, clip=8.0, roster=creds["roster"])  # noqa: E731
        harness, method = Recording(sites, tmp_path), "fedcrypt_secagg"
    install(monkeypatch, harness)
    reports = make_server(2).run()
    assert all(r["aborted"] is None for r in reports)
    return harness, make_server, method


def barrage(harness: Recording, method: str) -> tuple[list[str], dict[tuple, int]]:
    """Send every recorded request under every mutation to every site; untyped refusals, replies per key."""
    untyped: list[str] = []
    answered: dict[tuple, int] = {}
    for site, key, _ in harness.replies:
        answered[(site, key)] = answered.get((site, key), 0) + 1
    sent = [(site, request) for site, _, request in harness.calls]
    stages = sorted({request["stage"] for _, request in sent if isinstance(request, dict) and "stage" in request})
    for target in SITES:
        for site, request in sent:
            others = [r for s, r in sent if s != site and isinstance(r, dict) and _same_stage(r, request)]
            ctx = {"other_payload": others[0].get("payload") if others else None,
                   "other_stage": next((s for s in stages if s != request.get("stage")), None)}
            for name, mutate in MUTATIONS.items():
                mutated = mutate(copy(request), ctx)
                if mutated is None:
                    continue
                before = len(harness.replies)
                try:
                    harness.call(target, method, mutated)
                except FedcryptError:
                    continue
                except Exception as exc:  # noqa: BLE001 - an untyped refusal is the finding
                    untyped.append(f"{target} <- {name} of a {_stage_name(request)} request to {site}: {type(exc).__name__}: {exc}")
                    continue
                for s, key, _ in harness.replies[before:]:
                    answered[(s, key)] = answered.get((s, key), 0) + 1
    return untyped, answered


def _stage_name(request: Any) -> str:
    try:
        return "/".join(map(str, secagg_stage(request))) if "stage" in request else "/".join(map(str, ckks_stage(request)))
    except Exception:  # noqa: BLE001
        return "?"


def _same_stage(a: dict, b: dict) -> bool:
    return _stage_name(a) == _stage_name(b)


def twice(answered: dict[tuple, int], protocol: str) -> dict[tuple, int]:
    """(site, (stage, round)) answered more than once; CKKS CONTEXT is answered per request by design (public)."""
    return {k: n for k, n in answered.items() if n > 1 and not (protocol == "ckks" and k[1][0] == "CONTEXT")}


@pytest.mark.parametrize("protocol", ["secagg", "ckks"])
def test_no_server_request_gets_an_untyped_refusal_or_a_second_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                       protocol: str) -> None:
    harness, make_server, method = job(monkeypatch, tmp_path, protocol)
    untyped, answered = barrage(harness, method)
    assert untyped == [], "\n".join(untyped[:20])
    assert twice(answered, protocol) == {}
    if protocol == "ckks":  # no more decryptions than uploads, per site
        for site, client in harness.sites.items():
            assert client._core.decryptions <= client._core.uploads, site
    # the sites still run an honest round, at a round id above everything the barrage used
    report = _later_round(make_server(1), protocol)
    assert report["aborted"] is None and report["survivors"] == SITES


def _later_round(server: Any, protocol: str) -> dict:
    """One honest round numbered 200 (the barrage used ids up to about 102)."""
    import fedcrypt.integrations.nvflare._common as common

    model = initial()
    report = common.RoundReport(200, list(SITES))
    server._round(model, list(SITES), 200, common.job_run_id(), report)
    return report.to_dict()


def test_positive_control_a_retrying_site_answers_a_masked_input_twice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # weakened site: it snapshots its round client before MASKED_INPUT and, when a later MASKED_INPUT request is
    # refused, answers it from a copy of that snapshot (a "retry-friendly" site): the search sees two answers
    import fedcrypt.integrations.nvflare.secagg as flare_secagg
    from fedcrypt.secagg import ClientProtocol

    real = flare_secagg.SecAggClient.fedcrypt_secagg
    snapshots: dict[int, tuple] = {}

    def retrying(self: Any, request: dict) -> dict:
        masked = isinstance(request, dict) and request.get("stage") == "MASKED_INPUT" and self._kept is not None
        if masked and id(self) not in snapshots:
            snapshots[id(self)] = (self._kept[0].to_state_bytes(), self._kept)
        try:
            return real(self, request)
        except FedcryptError:
            if not masked or id(self) not in snapshots:
                raise
            data, kept = snapshots[id(self)]
            current, self._kept = self._kept, (ClientProtocol.from_state_bytes(data), *kept[1:])  # no roster: no signing key
            try:
                return real(self, request)
            finally:
                self._kept = current

    monkeypatch.setattr(flare_secagg.SecAggClient, "fedcrypt_secagg", retrying)
    harness = Recording({site: SecAggClient(train=TRAIN) for site in SITES}, tmp_path)
    install(monkeypatch, harness)
    assert all(r["aborted"] is None for r in SecAggServer(INITIAL, num_rounds=1, clip=8.0).run())
    _, answered = barrage(harness, "fedcrypt_secagg")
    assert any(key[1][0] == "MASKED_INPUT" for key in twice(answered, "secagg"))
