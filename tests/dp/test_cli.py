"""``fedcrypt privacy``: prints per-round epsilon, spent and remaining; plots on request."""

from __future__ import annotations

import argparse
from pathlib import Path

import dp_accounting as dpa
import pytest

from fedcrypt.dp import PrivacyLedger, cli


def main(argv: list[str]) -> int:
    """The subcommand as ``fedcrypt privacy`` runs it (add_arguments + run)."""
    parser = argparse.ArgumentParser(prog="fedcrypt privacy")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv[1:]))


def test_privacy_command_prints_rounds_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ledger.db"
    ledger = PrivacyLedger(path, epsilon_budget=8.0, delta=1e-5)
    spends = [ledger.spend(dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.5))) for _ in range(3)]
    ledger.close()
    plot = tmp_path / "eps.png"
    assert main(["privacy", str(path), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    for k, eps in enumerate(spends, start=1):
        assert f"{k:>6}  {eps:>10.4f}  q=0.1 x Gaussian z=1.5" in out
    assert f"spent: {spends[-1]:.4f}  remaining: {8.0 - spends[-1]:.4f}  rounds: 3" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_privacy_command_on_a_missing_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", str(tmp_path / "nope.db")]) == 1
    assert "no privacy ledger at" in capsys.readouterr().err
