"""Layers point one way (design.md): import direction between fedcrypt's packages, no reach into
another package's private modules, and heavy frameworks only where the design allows, lazily."""

import json
import subprocess
import sys

import pytest

FORBIDDEN = ["torch", "peft", "transformers", "flwr", "nvflare", "grpc", "ray"]


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
        "fedcrypt.verify",
        "fedcrypt.testing",
        "fedcrypt.testing.modelcheck",
        "fedcrypt.testing.rulecheck",
        "fedcrypt.bench",
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


# ---------------------------------------------------------------- import direction (AST)
import ast  # noqa: E402
from pathlib import Path  # noqa: E402

PACKAGE = Path(__file__).resolve().parent.parent / "fedcrypt"
#: design.md: crypto, vectors, identity -> secagg / he / dp / verify -> testing, bench -> integrations -> cli
LEVELS = {"secagg": 1, "he": 1, "dp": 1, "verify": 1, "testing": 2, "bench": 2, "integrations": 3, "cli": 4, "__main__": 4}
#: third-party packages and the fedcrypt packages that may import them (all others: never)
FRAMEWORKS = {
    "tenseal": ("he", "bench"),
    "openfhe": ("he.threshold", "bench"),
    "flwr": ("integrations", "bench", "cli"),
    "torch": ("integrations", "bench", "cli"),
    "peft": ("integrations", "bench", "cli"),
    "transformers": ("integrations", "bench", "cli"),
    "nvflare": ("integrations", "cli"),
}
#: where a framework may appear outside those packages, and why (keep this short)
FRAMEWORK_EXCEPTIONS = {
    ("fedcrypt.vectors", "torch"): "TensorSpec.unflatten(framework='torch') converts lazily, on request only",
    ("fedcrypt.integrations.aggregators", "tenseal"): "require() names the 'he' extra; TenSEAL is used through fedcrypt.he",
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("fedcrypt",) + path.relative_to(PACKAGE).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        yield (".".join(parts[:-1]) if is_package else ".".join(parts)), path, is_package


def _imports(module: str, path: Path, is_package: bool):
    """(imported dotted name, line, inside a function) for every import and require() in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lazy_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lazy_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names = [f"{stem}.{alias.name}" for alias in node.names] or [stem]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "require"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            yield name, node.lineno, node.lineno in lazy_lines


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _owner_of_private(name: str) -> str | None:
    """The package whose private module or name ``name`` reaches into (None: nothing private)."""
    parts = name.split(".")
    for i in range(2, len(parts)):
        if parts[i].startswith("_") and not parts[i].startswith("__"):
            return ".".join(parts[:2])
    return None


def test_fedcrypt_imports_point_one_way_and_never_into_another_packages_private_modules() -> None:
    upward, private = [], []
    for module, path, is_package in _modules():
        level = LEVELS.get(_package(module), 0)
        for name, line, _ in _imports(module, path, is_package):
            if not name.startswith("fedcrypt."):
                continue
            target = _package(name)
            if LEVELS.get(target, 0) > level:
                upward.append(f"{module}:{line} imports {name}")
            owner = _owner_of_private(name)
            if owner is not None and not (module == owner or module.startswith(owner + ".")):
                private.append(f"{module}:{line} imports {name}")
    assert not upward, upward
    assert not private, private


def test_frameworks_are_imported_only_where_the_design_allows_and_lazily_outside_integrations() -> None:
    misplaced, eager = [], []
    for module, path, is_package in _modules():
        within = module[len("fedcrypt.") :]
        for name, line, lazy in _imports(module, path, is_package):
            top = name.split(".")[0]
            if top not in FRAMEWORKS:
                continue
            allowed = any(within == p or within.startswith(p + ".") for p in FRAMEWORKS[top])
            if not allowed and (module, top) not in FRAMEWORK_EXCEPTIONS:
                misplaced.append(f"{module}:{line} imports {name}")
            if not lazy and _package(module) != "integrations":
                eager.append(f"{module}:{line} imports {name} at import time")
    assert not misplaced, misplaced
    assert not eager, eager


def test_the_layer_checks_catch_what_they_are_meant_to(tmp_path) -> None:
    # negative controls on synthetic modules: an upward import, a private reach and an eager framework
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import flwr\nfrom fedcrypt.integrations import flower\nfrom fedcrypt.secagg import _state\n"
        "def f():\n    import tenseal\n"
    )
    found = list(_imports("fedcrypt.secagg.probe", probe, False))
    names = {name: lazy for name, _, lazy in found}
    assert names["flwr"] is False and names["tenseal"] is True
    assert LEVELS[_package("fedcrypt.integrations.flower")] > LEVELS[_package("fedcrypt.secagg.probe")]
    assert _owner_of_private("fedcrypt.secagg._state") == "fedcrypt.secagg"
    assert _owner_of_private("fedcrypt._wire.Reader") is None  # the root's shared infrastructure


def test_no_module_over_800_lines_and_the_flower_adapters_within_1800() -> None:
    # issue #16: adapters are transports; a module past 800 lines is doing more than one thing
    sizes = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in PACKAGE.rglob("*.py")}
    assert not {str(p.relative_to(PACKAGE)): n for p, n in sizes.items() if n > 800}
    flower = sum(n for p, n in sizes.items() if (PACKAGE / "integrations" / "flower") in p.parents)
    assert 0 < flower <= 1800, flower
