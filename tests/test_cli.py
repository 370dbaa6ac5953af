import subprocess
import sys

import fedcrypt
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
