"""Layers point one way: the core and the protocol packages never import heavy frameworks."""

import json
import subprocess
import sys

import pytest

FORBIDDEN = ["torch", "peft", "transformers", "flwr", "grpc", "ray"]


@pytest.mark.parametrize(
    "module",
    [
        "fedcrypt",
        "fedcrypt.vectors",
        "fedcrypt.crypto",
        "fedcrypt.identity",
        "fedcrypt.secagg",
        "fedcrypt.he",
        "fedcrypt.dp",
        "fedcrypt.testing.modelcheck",
        "fedcrypt.cli",
    ],
)
def test_import_does_not_pull_frameworks(module: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_missing_extra_names_the_extra() -> None:
    from fedcrypt._optional import require
    from fedcrypt.errors import MissingExtraError

    with pytest.raises(MissingExtraError, match=r"pip install 'fedcrypt\[he\]'") as info:
        require("a_module_that_does_not_exist_xyz", "he")
    assert isinstance(info.value, ImportError)
