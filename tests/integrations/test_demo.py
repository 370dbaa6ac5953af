"""``fedcrypt demo``: real runs of the main job (tiny model fast, the default run slow)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from fedcrypt.integrations.demo import DemoConfig, client_texts, run_demo

pytest.importorskip("torch")
pytest.importorskip("peft")

TINY = ["--model", "tiny", "--clients", "3", "--rounds", "2", "--local-steps", "3", "--batch-size", "4", "--seq-len", "32"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HF_HUB_OFFLINE", None)  # the demo must switch the hub off by itself
    return env


def test_tiny_demo_cli_prints_the_table_and_writes_csv_and_plot(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fedcrypt", "demo", *TINY, "--no-progress", "--out", str(tmp_path)],
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "tiny LLaMA" in text and "protection: secagg (complete graph, threshold 2 of 3" in text
    assert "round | eval loss | train loss" in text
    assert "updates clipped to L2 norm 1 (--clip): " in text  # clipping is never silent
    assert "secure aggregate == plaintext FedAvg within the documented error in every round: OK" in text
    for protection in ("none", "secagg", "secagg+", "ckks", "verified"):
        assert any(line.strip().startswith(f"{protection} |") for line in text.splitlines()), protection
    with (tmp_path / "rounds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["round"] for row in rows] == ["0", "1", "2"]
    losses = [float(row["eval_loss"]) for row in rows]
    assert all(np.isfinite(losses))
    # the loss falls: deterministic for this seed (data order and weights are seeded)
    assert losses[-1] < losses[0]
    for row in rows[1:]:
        assert row["matches"] == "True" and row["protection"] == "secagg"
        assert float(row["max_error"]) <= float(row["error_bound"]) < 1e-6
        assert float(row["bytes_up"]) > 4 * 3584  # more than the plain float32 update
        assert int(row["survivors"]) == 3
        assert 0 <= int(row["clipped"]) <= 3
    with (tmp_path / "protections.csv").open() as handle:
        compared = {row["protection"]: row for row in csv.DictReader(handle)}
    assert list(compared) == ["none", "secagg", "secagg+", "ckks", "verified"]
    assert all(row["match"] == "True" for row in compared.values())
    # the overhead the demo reports: CKKS uploads are larger than SecAgg's, SecAgg's than plain
    assert float(compared["ckks"]["bytes_up"]) > float(compared["secagg"]["bytes_up"]) > float(compared["none"]["bytes_up"])
    png = (tmp_path / "rounds.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_demo_counts_the_updates_it_clips() -> None:
    """A clip far below the updates' norms clips every one, and the table and summary say so."""
    lines: list[str] = []
    config = DemoConfig(model="tiny", clients=3, rounds=1, local_steps=1, batch_size=2, seq_len=32, clip=1e-6,
                        compare=False, progress=False)
    outcome = run_demo(config, emit=lines.append)
    assert [record.clipped for record in outcome.records] == [3]
    assert any("updates clipped to L2 norm 1e-06 (--clip): 3 of the 3 aggregated" in line for line in lines)


def test_tiny_demo_with_dropouts_under_ckks_and_secagg_plus() -> None:
    lines: list[str] = []
    for protection in ("ckks", "secagg+"):
        config = DemoConfig(
            model="tiny", clients=4, rounds=2, local_steps=1, batch_size=2, seq_len=32, protection=protection,
            dropout=0.6, seed=3, compare=False, progress=False,
        )
        outcome = run_demo(config, emit=lines.append)
        assert all(record.matches for record in outcome.records)
        assert min(record.survivors for record in outcome.records) < 4  # someone dropped
        assert all(record.survivors >= 3 for record in outcome.records) or protection == "ckks"
    assert any("ckks (TenSEAL CKKS" in line for line in lines)


def test_tiny_demo_under_verified_aggregation_matches_fedavg_with_dropouts() -> None:
    """``--protection verified``: PINE's proofs on every update, the mean within its fixed-point bound."""
    lines: list[str] = []
    config = DemoConfig(
        model="tiny", clients=4, rounds=2, local_steps=1, batch_size=2, seq_len=32, protection="verified",
        dropout=0.6, seed=3, compare=False, progress=False,
    )
    outcome = run_demo(config, emit=lines.append)
    assert any("protection: verified (PINE: every update proven to have L2 norm <= 1" in line for line in lines)
    assert all(record.matches and record.max_error <= record.error_bound for record in outcome.records)
    # the fixed point is PINE's (2^-12 at clip 1 in Field40): coarser than SecAgg's, still a small error
    assert all(0 < record.error_bound < 1e-2 for record in outcome.records)
    assert min(record.survivors for record in outcome.records) < 4  # someone dropped
    assert all(record.survivors >= 2 for record in outcome.records)  # the helper's minimum


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match=r"protection must be one of \['none', 'secagg', 'secagg\+', 'ckks', 'verified'\], got 'rot13'"):
        DemoConfig(protection="rot13")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        DemoConfig(dropout=1.0)
    with pytest.raises(ValueError, match="seq_len must be at most 512 for minilm"):
        DemoConfig(seq_len=1024)
    with pytest.raises(ValueError, match="clients must be at least 2, got 1"):
        DemoConfig(clients=1)
    out = subprocess.run([sys.executable, "-m", "fedcrypt", "demo", "--clients", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and "clients must be a positive integer, got 0" in out.stderr


def test_clients_get_disjoint_topics() -> None:
    groups = client_texts(4)
    assert len(groups) == 4 and all(groups)
    from pydoc_data.topics import topics

    assert sum(map(len, groups)) == len(topics)  # every topic, each to one client
    # non-IID: contiguous ranges of topic names, so the first client starts with "assert"
    names = sorted(topics)
    assert groups[0][0] == topics[names[0]] and groups[-1][-1] == topics[names[-1]]
    with pytest.raises(ValueError, match="at most"):
        client_texts(10_000)


@pytest.mark.slow
def test_default_demo_runs_and_loss_falls(tmp_path) -> None:
    """The README's first command (after set-up): the pretrained MiniLM with SecAgg."""
    out = subprocess.run(
        [sys.executable, "-m", "fedcrypt", "demo", "--no-progress", "--out", str(tmp_path)],
        capture_output=True, text=True, env=_env(), timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "73,728 trainable" in out.stdout
    assert "(fell by " in out.stdout
    assert "every protection matched plaintext FedAvg on the last round: OK" in out.stdout
    with (tmp_path / "rounds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[-1]["eval_loss"]) < float(rows[0]["eval_loss"]) - 0.5


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_tiny_demo_with_dp_spends_the_target_epsilon(mode) -> None:
    pytest.importorskip("dp_accounting")
    lines: list[str] = []
    config = DemoConfig(
        model="tiny", clients=3, rounds=2, local_steps=1, batch_size=2, seq_len=32, protection="secagg",
        dp_epsilon=3.0, dp_mode=mode, compare=False, progress=False,
    )
    outcome = run_demo(config, emit=lines.append)
    epsilons = [record.epsilon for record in outcome.records]
    assert 0 < epsilons[0] < epsilons[1] <= 3.0 * (1 + 1e-6)
    assert epsilons[1] >= 3.0 * (0.99 if mode == "central" else 0.8)  # calibrated, not wasteful
    assert all(record.matches for record in outcome.records)
    assert any(f"DP: epsilon=3, delta=1e-05, {mode}" in line for line in lines)


def test_distributed_dp_needs_secure_aggregation() -> None:
    with pytest.raises(ValueError, match="distributed DP adds its noise inside SecAgg"):
        DemoConfig(protection="ckks", dp_epsilon=1.0, dp_mode="distributed")


def test_adapters_and_cli_import_no_framework_until_used() -> None:
    """``fedcrypt --help`` and importing the adapters stay light: frameworks load on use."""
    code = (
        "import sys, json\n"
        "import fedcrypt.integrations.demo, fedcrypt.integrations.aggregators\n"
        "import fedcrypt.integrations.peft, fedcrypt.integrations.torch\n"
        "from fedcrypt.cli import build_parser; build_parser()\n"
        "heavy = ['torch', 'peft', 'transformers', 'flwr', 'tenseal', 'dp_accounting', 'matplotlib']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_tiny_demo_ffa_lora_aggregates_only_b() -> None:
    lines: list[str] = []
    config = DemoConfig(model="tiny", clients=3, rounds=1, local_steps=2, batch_size=2, seq_len=32,
                        lora_mode="ffa", compare=False, progress=False)
    outcome = run_demo(config, emit=lines.append)
    assert outcome.trainable == 1536  # the B half of 3,584 LoRA parameters
    assert all(record.matches for record in outcome.records)
    assert outcome.records[0].bytes_up < 4 * 3584  # only B travels
    assert any("ffa (only B; the mean of updates is exact)" in line for line in lines)
    with pytest.raises(ValueError, match="lora_mode must be 'fedit' or 'ffa', got 'stacking'"):
        DemoConfig(lora_mode="stacking")


@pytest.mark.parametrize("dp", [False, True])
def test_rounds_plot_reads_without_the_code(dp: bool) -> None:
    """rounds.png: legends below the panels (off the data), seconds on a log axis (the protocol
    is often 100x below training), integer rounds, and with DP a panel of the epsilon spent."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedcrypt.integrations._demo_plots import plot_rounds
    from fedcrypt.integrations.demo import DemoOutcome, RoundRecord

    records = [RoundRecord(round=r, eval_loss=5.0 - r / 10, train_loss=5.1 - r / 10, survivors=3, bytes_up=2048.0,
                           bytes_down=0.0, train_seconds=2.0, crypto_seconds=0.004 * r,
                           epsilon=2.0 * r if dp else float("nan"), max_error=0.0, error_bound=1e-9)
               for r in (1, 2, 3)]
    config = DemoConfig(model="tiny", dp_epsilon=6.0 if dp else None)
    fig = plot_rounds(plt, 5.2, DemoOutcome(records), config)
    try:
        axes = fig.get_axes()
        assert len(axes) == (3 if dp else 2)
        assert axes[1].get_yscale() == "log"
        assert all(ax.get_xlabel() == "round" and ax.get_ylabel() for ax in axes)
        fig.canvas.draw()
        for ax in axes:  # each legend lies wholly below its panel's data area
            assert ax.get_legend().get_window_extent().y1 < ax.get_window_extent().y0
        if dp:
            assert list(axes[2].get_lines()[0].get_ydata()) == [2.0, 4.0, 6.0]
    finally:
        plt.close(fig)
