"""Clipping is visible on a FLARE site (issue #18): each SecAgg site logs what the codec's clip did
to its own input, on the site, never sent. Driven through the in-process stand-in of FLARE's
Collab runtime (``tests/adversarial/review5/_flare.py``): the real server and site objects."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("nvflare.collab")

from fedcrypt.integrations.nvflare import SecAggClient, SecAggServer  # noqa: E402

from tests.adversarial.review5._flare import Harness, install  # noqa: E402

SITES = ["site-1", "site-2", "site-3"]
TRAIN = "tests.adversarial.review5._flare:train"
INITIAL = "tests.adversarial.review5._flare:initial"


@pytest.mark.parametrize("clip,clipped", [(8.0, False), (1e-3, True)])
def test_each_site_logs_its_own_clipping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog, clip: float,
                                         clipped: bool) -> None:
    install(monkeypatch, Harness({site: SecAggClient(train=TRAIN) for site in SITES}, tmp_path))
    with caplog.at_level(logging.INFO, logger="fedcrypt.integrations.nvflare"):
        (report,) = SecAggServer(INITIAL, num_rounds=1, clip=clip).run()
    assert report["aborted"] is None and sorted(report["survivors"]) == SITES
    lines = [r.getMessage() for r in caplog.records if "own input, never sent" in r.getMessage()]
    assert sorted(line.split()[2] for line in lines) == SITES  # one line per site
    # the sites' weighted updates are far above 1e-3 per coordinate and within 8
    assert all(("clipped 0 of" in line) != clipped for line in lines), lines
