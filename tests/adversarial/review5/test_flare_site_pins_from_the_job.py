"""Attacker review 5, FLARE adapter: a site's safety floors come from the job, i.e. from the server's side.

``SecAggClient``'s ``max_colluders`` (the colluders the site assumes: rounds declaring fewer are
refused), ``min_noise_multiplier`` (its distributed-DP floor) and ``min_clients`` are
constructor arguments, which FLARE exports into the job, and "the job's arguments come from
whoever submits the job, who may be the server's operator" (docs/integrations/nvflare.md). For
the roster the adapter lets the site's operator override the job (``FEDCRYPT_IDENTITY``,
``FEDCRYPT_ROSTER``, ``FEDCRYPT_ROSTER_DIGEST`` in the site's environment take precedence, "so that
a job cannot turn the roster off"); for these floors there is no such override, so the server's
operator sets them: ``max_colluders=0`` reopens the break SECURITY.md records for Flower ("a
server holding two members' keys recovered an input from five nodes by declaring
``max_colluders=0``"; there the floor is node config, out of the server's reach), and
``min_noise_multiplier=None`` lets a round run without the DP noise the site's operator requires.

Tests: with the site's operator pinning ``FEDCRYPT_MAX_COLLUDERS=1`` /
``FEDCRYPT_MIN_NOISE_MULTIPLIER=0.5`` in the environment (names in the adapter's existing
convention; a fix that picks other names updates them here) and the job saying 0 / None, a
round declaring ``max_colluders=0`` / no DP should be refused by the sites (strict xfail: it
completes). Positive control: the same rounds are refused when the job's own arguments carry
the floors (the refusal mechanism works; only who sets it is wrong). Severity: medium-high
where the job submitter is the server's operator (the docs' own premise). Fix: read every floor
(``max_colluders``, ``min_noise_multiplier``, ``min_clients``) from the site's environment first,
as the roster paths are, and document it beside them.

FIXED: every floor is the stricter of the job's argument and ``FEDCRYPT_<NAME>`` in the site's
environment (``fedcrypt.integrations._report.site_floor``); the test below is its regression
test, and the environment's value can only raise a floor (tested in tests/nvflare).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nvflare.collab")

from fedcrypt.integrations.nvflare import SecAggClient, SecAggServer  # noqa: E402

from ._flare import Harness, install  # noqa: E402

SITES = ["site-1", "site-2", "site-3", "site-4"]
TRAIN = "tests.adversarial.review5._flare:train"
INITIAL = "tests.adversarial.review5._flare:initial"


def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, site_kwargs: dict) -> dict:
    sites = {site: SecAggClient(train=TRAIN, **site_kwargs) for site in SITES}
    install(monkeypatch, Harness(sites, tmp_path))
    return SecAggServer(INITIAL, num_rounds=1, clip=8.0, max_colluders=0).run()[0]  # declares 0 colluders, no DP


def test_positive_control_floors_in_the_job_arguments_are_enforced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for kwargs in ({"max_colluders": 1}, {"min_noise_multiplier": 0.5}):
        report = run(monkeypatch, tmp_path, kwargs)
        assert report["aborted"] is not None and report["survivors"] == [], kwargs


@pytest.mark.parametrize("variable,value", [("FEDCRYPT_MAX_COLLUDERS", "1"), ("FEDCRYPT_MIN_NOISE_MULTIPLIER", "0.5")])
def test_a_floor_pinned_by_the_site_operator_beats_the_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str,
                                                             value: str) -> None:
    monkeypatch.setenv(variable, value)
    report = run(monkeypatch, tmp_path, {})  # the job's arguments: the defaults (0 colluders, no DP floor)
    assert report["aborted"] is not None and report["survivors"] == [], report
