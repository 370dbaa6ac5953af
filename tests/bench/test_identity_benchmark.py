"""``python -m benchmarks.identity``: the verification counts it reports are the protocol's, and
``--doc`` rewrites only its marked block (docs/performance.md's identity figures come from it)."""

from __future__ import annotations

from pathlib import Path

import pytest

import benchmarks._common as common
import fedcrypt.crypto
import fedcrypt.secagg.client
import fedcrypt.secagg.server
from benchmarks import identity
from fedcrypt.secagg import SecAggConfig


def test_counts_are_the_protocols_and_the_doc_block_is_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    doc = tmp_path / "performance.md"
    doc.write_text("# title\n\nbefore\n<!-- BEGIN bench:identity -->\nstale\n<!-- END bench:identity -->\nafter\n")
    n = 5
    record = identity.main(["--clients", str(n), "--dimension", "1000", "--repeats", "2", "--doc", str(doc)])
    q = SecAggConfig(num_clients=n, threshold=n // 2 + 1, verify_survivors=True).consistency_quorum
    # SecAgg, complete graph: the n - 1 other adverts, a quorum of survivor sets and the other
    # n - 1 holders' attestations per client; advert, attestation and survivor set of each client at the server
    assert record["counts"] == {"client_verifies_per_client": 2 * n - 2 + q, "server_verifies": 3 * n, "signs_per_client": 3}
    assert record["ratio_round"] > 0 and record["ratio_round_unchecked"] > 0 and record["verify_seconds"] > 0
    text = doc.read_text()
    assert "stale" not in text and text.startswith("# title\n\nbefore\n<!-- BEGIN bench:identity -->\n")
    assert text.endswith("<!-- END bench:identity -->\nafter\n")
    assert f"{2 * n - 2 + q} Ed25519 verifications and 3 signatures per client, {3 * n} verifications at the server" in text
    assert (tmp_path / "results" / "identity.json").exists()
    # the analysis device (verifications skipped) is undone: the protocol verifies again
    assert fedcrypt.secagg.client.ed25519_verify is fedcrypt.crypto.ed25519_verify
    assert fedcrypt.secagg.server.ed25519_verify is fedcrypt.crypto.ed25519_verify


def test_doc_without_markers_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="bench:identity"):
        identity.write_doc(doc, {})
