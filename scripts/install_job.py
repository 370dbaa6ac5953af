"""Install fedcrypt with one extra (or none) in a fresh virtual environment and test it there.

Usage::

    python scripts/install_job.py core            # the core alone: no torch, no extra
    python scripts/install_job.py dp he bench     # each extra alone, one after the other
    python scripts/install_job.py --list          # the jobs in tests/install_jobs.toml

A job (a table of tests/install_jobs.toml) is, in order:

1. a fresh venv (a temporary folder, removed afterwards unless ``--keep``) with
   fedcrypt's wheel (built once from the working tree, as ``pip install .`` would; not
   editable) with ``[extra]`` (none for core) and the test runner (pytest,
   pytest-timeout, hypothesis, as the dev extra pins them); ``torch==2.13.0`` first for
   ``peft``, since a looser request downloads a multi-GB CUDA build;
2. fedcrypt is imported from the venv, not from the source tree;
3. which extras are importable: exactly the job's extra, its ``also_present`` and
   ``testing`` (hypothesis is the runner's); anything else (torch in a core install) fails;
4. every absent extra names itself: each of its PROBES (a CLI command: exit 1 and one
   line on stderr naming ``pip install 'fedcrypt[extra]'``; or Python code: raises
   MissingExtraError naming it in one line);
5. the job's tests (less its ``deselect`` node ids), run against the installed package: all
   pass and none skips (strict xfails aside), so a core test cannot quietly skip because
   torch is absent.

Exit status 0 when every job passed, 1 otherwise; the time of each step is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS_FILE = ROOT / "tests" / "install_jobs.toml"
TORCH = "torch==2.13.0"  # the local CPU wheel; anything looser pulls a CUDA build
RUNNER = ("pytest", "pytest-timeout", "hypothesis")  # taken from the dev extra, with its pins

#: distribution -> the module it installs (every distribution of every extra must be here)
IMPORTS = {
    "tenseal": "tenseal",
    "openfhe": "openfhe",
    "dp-accounting": "dp_accounting",
    "attrs": "attr",
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "ml-dtypes": "ml_dtypes",
    "flwr": "flwr",
    "nvflare": "nvflare",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "scipy": "scipy",
    "hypothesis": "hypothesis",
}

#: extra -> how a user meets it missing: ("cli", argv) or ("python", code), and the
#: extras that must be present for the probe to reach it (the ledger plot needs dp first)
PROBES: dict[str, list[tuple[str, object, tuple[str, ...]]]] = {
    "dp": [
        ("cli", ["privacy", "{tmp}/ledger.db"], ()),
        ("python", "from fedcrypt.dp import DistributedDp, DistributedDpConfig\n"
                   "DistributedDp(DistributedDpConfig(1.0, 1.0, 10), 100).event()", ()),
    ],
    "ui": [("cli", ["privacy", "{tmp}/ledger.db", "--plot", "{tmp}/epsilon.png"], ("dp",))],
    "bench": [("cli", ["bench", "--n", "4", "--out", "{tmp}/bench"], ())],
    "peft": [
        ("cli", ["demo", "--model", "tiny", "--out", "{tmp}/demo"], ()),
        ("python", "import numpy as np\nfrom fedcrypt.vectors import TensorSpec\n"
                   "spec = TensorSpec.from_tensors({'w': np.zeros(3, np.float32)})\n"
                   "spec.unflatten(np.zeros(3, np.float32), framework='torch')", ()),
    ],
    "he": [("python", "from fedcrypt.he import CkksParams, KeyOwner\nKeyOwner.generate(CkksParams.preset('compact'))", ())],
    "threshold": [("python", "from fedcrypt.he.threshold import load_openfhe\nload_openfhe()", ())],
    "flower": [("python", "import fedcrypt.integrations.flower", ())],
    "nvflare": [("python", "import fedcrypt.integrations.nvflare", ())],
}

_PYTHON_PROBE = """\
from fedcrypt.errors import MissingExtraError
try:
{code}
except MissingExtraError as exc:
    print(exc)
else:
    raise SystemExit("no MissingExtraError")
"""


def load_jobs() -> dict[str, dict]:
    return tomllib.loads(JOBS_FILE.read_text())


def extras() -> dict[str, list[str]]:
    """Runtime extras (name -> distributions) from pyproject.toml; 'all' and 'dev' are bundles."""
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {name: [_dist(r) for r in reqs] for name, reqs in optional.items() if name not in ("all", "dev")}


def _dist(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match is not None, requirement
    return match.group(0).lower().replace("_", "-")


def runner_requirements() -> list[str]:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    wanted = [r for r in dev if _dist(r) in RUNNER]
    assert len(wanted) == len(RUNNER), f"the dev extra must pin {RUNNER}, has {dev}"
    return wanted


class JobFailed(Exception):
    pass


_WHEEL: list[Path] = []


def build_wheel() -> Path:
    """fedcrypt's wheel, built once per run from the working tree (every job installs it)."""
    if not _WHEEL:
        folder = Path(tempfile.mkdtemp(prefix="fedcrypt-wheel-"))
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps",
                               "-w", str(folder), "."], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise JobFailed(f"pip wheel . failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        _WHEEL.extend(folder.glob("fedcrypt-*.whl"))
        if len(_WHEEL) != 1:
            raise JobFailed(f"pip wheel . wrote {sorted(folder.iterdir())}, expected one fedcrypt wheel")
    return _WHEEL[0]


class Job:
    def __init__(self, name: str, spec: dict, keep: bool) -> None:
        self.name, self.spec, self.keep = name, spec, keep
        self.extra: str = spec.get("extra", "")
        self.venv = Path(tempfile.mkdtemp(prefix=f"fedcrypt-install-{name}-"))
        self.scratch = Path(tempfile.mkdtemp(prefix=f"fedcrypt-probe-{name}-"))
        self.python = self.venv / "bin" / "python"
        self.times: list[tuple[str, float]] = []

    def step(self, label: str, fn) -> object:
        start = time.monotonic()
        try:
            return fn()
        finally:
            self.times.append((label, time.monotonic() - start))
            print(f"[{self.name}] {label}: {self.times[-1][1]:.1f} s", flush=True)

    def run(self) -> None:
        try:
            self.step("venv + pip install", self.install)
            self.step("installed package", self.check_installed_package)
            present = self.step("extras present", self.check_extras_present)
            self.step("missing extras named", lambda: self.check_probes(present))
            if self.spec.get("tests"):
                self.step("tests", self.run_tests)
        finally:
            if not self.keep:
                shutil.rmtree(self.venv, ignore_errors=True)
            shutil.rmtree(self.scratch, ignore_errors=True)
        total = sum(t for _, t in self.times)
        print(f"[{self.name}] passed in {total:.1f} s", flush=True)

    # ------------------------------------------------------------------------ steps
    def _pip(self, *args: str) -> None:
        cmd = [str(self.python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise JobFailed(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")

    def install(self) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(self.venv)], check=True)
        if self.extra == "peft":
            self._pip(TORCH)
        wheel = build_wheel()
        self._pip(f"{wheel}[{self.extra}]" if self.extra else str(wheel), *runner_requirements())

    def _python(self, code: str, *, check: bool = True) -> subprocess.CompletedProcess:
        # -P: the source tree (the current directory) is not on sys.path
        proc = subprocess.run([str(self.python), "-P", "-c", code], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        if check and proc.returncode != 0:
            raise JobFailed(f"python -c {code!r} failed:\n{proc.stderr[-3000:]}")
        return proc

    def check_installed_package(self) -> None:
        where = self._python("import fedcrypt; print(fedcrypt.__file__)").stdout.strip()
        if not Path(where).resolve().is_relative_to(self.venv.resolve()):
            raise JobFailed(f"fedcrypt was imported from {where}, not from the job's venv")

    def check_extras_present(self) -> set[str]:
        table = extras()
        unknown = sorted({d for dists in table.values() for d in dists} - set(IMPORTS))
        if unknown:
            raise JobFailed(f"add {unknown} to IMPORTS in {Path(__file__).name}")
        modules = sorted({IMPORTS[d] for dists in table.values() for d in dists})
        code = ("import importlib.util, json\n"
                f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {modules!r}}}))")
        found = json.loads(self._python(code).stdout)
        present = {name for name, dists in table.items() if all(found[IMPORTS[d]] for d in dists)}
        expected = {self.extra} - {""} | set(self.spec.get("also_present", ())) | {"testing"}
        if present != expected:
            extra_found = sorted(m for m, ok in found.items() if ok)
            raise JobFailed(f"extras importable: {sorted(present)}, expected {sorted(expected)} "
                            f"(modules found: {extra_found})")
        print(f"[{self.name}] extras importable: {sorted(present)}; modules: "
              f"{sorted(m for m, ok in found.items() if ok) or 'none'}", flush=True)
        return present

    def check_probes(self, present: set[str]) -> None:
        problems = []
        for extra, probes in PROBES.items():
            if extra in present:
                continue
            for kind, what, needs in probes:
                if not set(needs) <= present:
                    continue
                wanted = f"pip install 'fedcrypt[{extra}]'"
                if kind == "cli":
                    argv = [str(a).format(tmp=self.scratch) for a in what]  # type: ignore[union-attr]
                    proc = subprocess.run([str(self.venv / "bin" / "fedcrypt"), *argv], cwd=self.scratch,
                                          capture_output=True, text=True, timeout=300)
                    lines = proc.stderr.strip().splitlines()
                    ok = (proc.returncode == 1 and len(lines) == 1 and wanted in lines[0]
                          and "Traceback" not in proc.stderr)
                    shown = f"fedcrypt {' '.join(argv)}"
                    got = f"exit {proc.returncode}, stderr {proc.stderr.strip()[-600:]!r}"
                else:
                    code = _PYTHON_PROBE.format(code=textwrap.indent(str(what), "    "))
                    proc = self._python(code, check=False)
                    lines = proc.stdout.strip().splitlines()
                    ok = proc.returncode == 0 and len(lines) == 1 and wanted in lines[0]
                    shown = str(what).replace("\n", "; ")
                    got = f"exit {proc.returncode}, stdout {proc.stdout.strip()!r}, stderr {proc.stderr.strip()[-600:]!r}"
                if not ok:
                    problems.append(f"{extra} missing: {shown}: expected one line naming {wanted!r}; {got}")
                else:
                    print(f"[{self.name}] {extra} missing -> {lines[0]}", flush=True)
        if problems:
            raise JobFailed("\n".join(problems))

    def run_tests(self) -> None:
        junit = self.scratch / "junit.xml"
        cmd = [str(self.python), "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
               f"--junitxml={junit}", *self.spec["tests"]]
        cmd += [f"--deselect={node}" for node in self.spec.get("deselect", ())]
        print(f"[{self.name}] {' '.join(cmd[3:])}", flush=True)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        proc = subprocess.run(cmd, cwd=ROOT, env=env)
        if proc.returncode != 0:
            raise JobFailed(f"tests failed (exit {proc.returncode})")
        skipped = []
        for case in ET.parse(junit).getroot().iter("testcase"):
            for skip in case.findall("skipped"):
                if skip.get("type") != "pytest.xfail":
                    skipped.append(f"{case.get('classname')}::{case.get('name')}: {skip.get('message')}")
        if skipped:
            raise JobFailed(f"{len(skipped)} tests skipped in the {self.name} install (none may):\n"
                            + "\n".join(skipped))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", nargs="*", help="job names from tests/install_jobs.toml")
    parser.add_argument("--list", action="store_true", help="list the jobs and exit")
    parser.add_argument("--keep", action="store_true", help="keep each job's venv (its path is printed)")
    args = parser.parse_args(argv)
    jobs = load_jobs()
    if args.list or not args.jobs:
        for name, spec in jobs.items():
            print(f"{name}: extra {spec.get('extra') or '(none)'}, {len(spec.get('tests', []))} test paths")
        return 0 if args.list else 2
    unknown = [name for name in args.jobs if name not in jobs]
    if unknown:
        print(f"install_job: unknown job(s) {unknown}; known: {sorted(jobs)}", file=sys.stderr)
        return 2
    failed = []
    for name in args.jobs:
        job = Job(name, jobs[name], args.keep)
        try:
            job.run()
        except JobFailed as exc:
            print(f"[{name}] FAILED: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
        if args.keep:
            print(f"[{name}] venv kept at {job.venv}")
    if failed:
        print(f"install jobs failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
