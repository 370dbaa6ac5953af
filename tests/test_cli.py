"""The ``fedcrypt`` command line: every argument and path checked before any work.

Each bad input ends in one line on stderr (``fedcrypt <command>: ...``), exit status 2
for a usage error and 1 for a failure, and no traceback; the work itself (training,
measuring, reading the ledger) is replaced by a trap that fails the test if it is reached.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import fedcrypt
from fedcrypt import cli
from fedcrypt.cli import SUBCOMMANDS, main


def test_version_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fedcrypt", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"fedcrypt {fedcrypt.__version__}"


def test_no_command_prints_help_and_fails(capsys) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_every_subcommand_has_help() -> None:
    for name in SUBCOMMANDS:
        out = subprocess.run(
            [sys.executable, "-m", "fedcrypt", name, "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert "usage: fedcrypt " + name in out.stdout


# ----------------------------------------------------------------------------- helpers
class _Reached(AssertionError):
    """The command did work it should have refused to start."""


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trap every subcommand's work: training, measuring, reading a ledger."""
    import fedcrypt.bench as bench
    import fedcrypt.bench.matrix as matrix
    import fedcrypt.integrations.demo as demo
    from fedcrypt.dp.ledger import PrivacyLedger

    def trap(*_args: object, **_kwargs: object) -> None:
        raise _Reached("work started before the arguments were checked")

    monkeypatch.setattr(demo, "run_demo", trap)
    monkeypatch.setattr(demo, "build_model", trap)
    monkeypatch.setattr(matrix, "run_matrix", trap)
    monkeypatch.setattr(bench, "run", trap)
    monkeypatch.setattr(PrivacyLedger, "open", classmethod(lambda cls, *a: trap()))


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fedcrypt {command}: ") and "Traceback" not in err
    return lines[0]


def _exit_status(argv: list[str]) -> int:
    """``main(argv)``'s status, also when argparse exits on its own."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A path no directory can be created at (its parent is a regular file)."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "out"


# ----------------------------------------------------------------------------- demo
TINY = ["demo", "--model", "tiny", "--rounds", "1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--clients", "1000"], r"--clients 1000: at most \d+ clients: there are \d+ pydoc topics"),
        (["--seq-len", "100000"], r"--seq-len 100000 leaves client 0 fewer than 3 blocks .* use --seq-len \d+ or less"),
        (["--clients", "1"], r"clients must be at least 2, got 1"),
        (["--dropout", "1.5"], r"dropout must be in \[0, 1\), got 1.5"),
    ],
)
def test_demo_refuses_bad_values_before_training(argv, message, no_work, capsys) -> None:
    assert _exit_status([*TINY, *argv]) == 2
    assert re.search(message, _one_line_error(capsys, "demo"))


def test_demo_refuses_an_output_directory_it_cannot_create(blocked: Path, no_work, capsys) -> None:
    assert main([*TINY, "--out", str(blocked)]) == 2
    line = _one_line_error(capsys, "demo")
    assert f"--out {blocked}: cannot write there" in line
    assert not blocked.exists()


def test_demo_creates_its_output_directory_first_and_says_what_dropout_is_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import fedcrypt.integrations.demo as demo

    seen = {}

    def fake_run(args) -> int:
        seen["out_exists"] = Path(args.out).is_dir()
        seen["progress"] = args.progress
        return 0

    monkeypatch.setattr(demo, "run", fake_run)
    out = tmp_path / "new" / "dir"
    assert main([*TINY, "--clients", "4", "--dropout", "0.99", "--out", str(out)]) == 0
    assert seen == {"out_exists": True, "progress": False}  # stderr is not a terminal here
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "fedcrypt demo: note: --dropout 0.99 is capped: at most 1 of 4 clients may drop in a round "
        "(secagg needs 3 of every 4 share holders to survive), not about 3.96"
    ]


def test_demo_names_the_missing_extra_in_one_line(monkeypatch: pytest.MonkeyPatch, no_work, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    assert main(TINY) == 1
    assert "pip install 'fedcrypt[peft]'" in _one_line_error(capsys, "demo")


def test_demo_bad_input_end_to_end_has_no_traceback(blocked: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fedcrypt", *TINY, "--out", str(blocked)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"fedcrypt demo: --out {blocked}: cannot write there (Not a directory)"
    assert proc.stdout == ""


# ----------------------------------------------------------------------------- bench
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "0"], "--n must be at least 2"),
        (["--n", "1"], "--n must be at least 2"),
        (["--dropout", "1.5"], r"--dropout rates must be in [0, 1), got 1.5"),
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["--k", "0"], "--k must be at least 1, got 0"),
        (["--n", "4", "--dropout", "0.5", "--protections", "secagg"],
         "--dropout 0.5 drops 2 of n=4 clients, more than secagg survives (secagg needs 3 of every 4 share "
         "holders to survive): use --dropout 0.25 or less at n=4"),
        (["--n", "x"], "argument --n: invalid int value: 'x' (see fedcrypt bench --help)"),
    ],
)
def test_bench_refuses_bad_values_before_measuring(argv, message, no_work, capsys) -> None:
    assert _exit_status(["bench", *argv]) == 2
    assert message in _one_line_error(capsys, "bench")


def test_bench_refuses_an_output_directory_it_cannot_create(blocked: Path, no_work, capsys) -> None:
    assert main(["bench", "--n", "4", "--out", str(blocked)]) == 2
    assert f"--out {blocked}: cannot write there" in _one_line_error(capsys, "bench")


def test_bench_names_a_missing_scipy_before_measuring(monkeypatch: pytest.MonkeyPatch, no_work, capsys) -> None:
    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy now raises ImportError
    assert main(["bench", "--n", "4"]) == 1
    assert "pip install 'fedcrypt[bench]'" in _one_line_error(capsys, "bench")


# ----------------------------------------------------------------------------- privacy
def test_privacy_refuses_a_plot_path_before_reading_the_ledger(blocked: Path, no_work, capsys) -> None:
    assert main(["privacy", "ledger.db", "--plot", str(blocked / "p.png")]) == 2
    assert f"--plot {blocked}: cannot write there" in _one_line_error(capsys, "privacy")


def test_privacy_refuses_a_format_matplotlib_cannot_write(tmp_path: Path, no_work, capsys) -> None:
    assert main(["privacy", "ledger.db", "--plot", str(tmp_path / "eps.xyz")]) == 2
    assert "matplotlib cannot write .xyz files; use one of" in _one_line_error(capsys, "privacy")


def test_privacy_names_a_missing_dp_extra(monkeypatch: pytest.MonkeyPatch, no_work, capsys) -> None:
    monkeypatch.setitem(sys.modules, "dp_accounting", None)
    assert main(["privacy", "ledger.db"]) == 1
    assert "pip install 'fedcrypt[dp]'" in _one_line_error(capsys, "privacy")


def test_privacy_failures_exit_1_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["privacy", str(tmp_path / "missing.db")]) == 1
    assert "no privacy ledger at" in _one_line_error(capsys, "privacy")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    assert main(["privacy", str(junk)]) == 1
    assert "privacy ledger" in _one_line_error(capsys, "privacy")


def test_privacy_plot_without_extension_prints_the_file_written(tmp_path: Path, capsys) -> None:
    import dp_accounting as dpa

    from fedcrypt.dp import PrivacyLedger

    path = tmp_path / "ledger.db"
    with PrivacyLedger(path, epsilon_budget=5.0, delta=1e-5) as ledger:
        ledger.spend(dpa.GaussianDpEvent(3.0))
    assert main(["privacy", str(path), "--plot", str(tmp_path / "eps")]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "eps.png"
    assert f"plot: {written}" in out.splitlines()
    assert written.read_bytes()[:4] == b"\x89PNG"


def test_output_helpers_create_or_refuse(tmp_path: Path, blocked: Path) -> None:
    made = cli.prepare_output_dir(tmp_path / "x" / "y", "--out")
    assert made.is_dir() and list(made.iterdir()) == []  # the write probe leaves nothing
    with pytest.raises(ValueError, match=r"--out .*: cannot write there \(Not a directory\)"):
        cli.prepare_output_dir(blocked, "--out")
    with pytest.raises(ValueError, match=r"--plot .*: is a directory, not a file name"):
        cli.prepare_output_file(tmp_path, "--plot")
