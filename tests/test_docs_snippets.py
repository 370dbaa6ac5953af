"""Every ```python block of README.md and docs/**/*.md runs as written.

Each block runs in a fresh namespace (as its own ``__main__``), in an empty temporary
directory, with a timeout, in a worker interpreter separate from the test process. The
worker is shared by the blocks (so torch, transformers and flwr are imported once, which
keeps the whole set quick); it is restarted after a block that times out.

Info-string markers, after ``python`` on the opening fence (GitHub and MkDocs ignore them):

* ``requires="mod1 mod2"``: the block is skipped (not failed) when one of these modules
  cannot be imported here, e.g. ``openfhe``, whose wheels exist for CPython 3.10 only;
* ``norun="why"``: the block is never run; only for code that genuinely cannot run in a
  test (a deployment, a long job). Keep these few, and the reason in the string.

A snippet must stay small and fast: together they are part of the default test run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    code: str

    @property
    def options(self) -> dict[str, str]:
        words = shlex.split(self.info)
        return dict(w.split("=", 1) for w in words[1:] if "=" in w)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def extract(path: Path) -> list[Snippet]:
    """The fenced code blocks of a Markdown file whose language is ``python``."""
    snippets: list[Snippet] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent, info = match["fence"], len(match["indent"]), match["info"].strip()
        start, body = i, []
        i += 1
        while i < len(lines):
            closing = _FENCE.match(lines[i])
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            body.append(lines[i][indent:] if not lines[i][:indent].strip() else lines[i].lstrip())
            i += 1
        i += 1
        if info.split()[:1] == ["python"]:
            snippets.append(Snippet(path, start + 1, info, "\n".join(body) + "\n"))
    return snippets


SNIPPETS = [s for doc in _documents() for s in extract(doc)]


def test_snippets_found():
    assert len(SNIPPETS) >= 10, [s.id for s in SNIPPETS]
    for snippet in SNIPPETS:
        if "norun" in snippet.options:
            assert snippet.options["norun"].strip(), f"{snippet.id}: norun needs a reason"


_MARK = "@@snippet-result@@ "
_WORKER = f"""
import contextlib, io, json, os, sys, traceback
for line in sys.stdin:
    request = json.loads(line)
    os.chdir(request["cwd"])
    out = io.StringIO()
    try:
        code = compile(request["code"], request["name"], "exec")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            exec(code, {{"__name__": "__main__", "__file__": request["name"]}})
        error = None
    except BaseException:
        error = traceback.format_exc()
    sys.stdout.write({_MARK!r} + json.dumps({{"error": error, "output": out.getvalue()[-5000:]}}) + "\\n")
    sys.stdout.flush()
"""


class _Worker:
    """One interpreter that runs snippets on request; restarted after a timeout."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FLWR_DISABLE_UPDATE_CHECK": "1",
               "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        return subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=ROOT)

    def run(self, snippet: Snippet, cwd: Path) -> tuple[str | None, str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin and self.proc.stdout
        request = {"code": snippet.code, "cwd": str(cwd), "name": snippet.id}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        deadline, stray = time.monotonic() + TIMEOUT_S, []
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.close()
                return f"timed out after {TIMEOUT_S} s", "".join(stray)
            line = self.proc.stdout.readline()
            if not line:  # the worker died (os._exit, a crash in native code)
                self.close()
                return f"the worker exited ({self.proc.returncode})", "".join(stray)
            if line.startswith(_MARK):
                result = json.loads(line[len(_MARK):])
                return result["error"], "".join(stray) + result["output"]
            stray.append(line)  # written by a child process straight to the pipe

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker():
    w = _Worker()
    yield w
    w.close()


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_runs(snippet: Snippet, worker: _Worker, tmp_path: Path):
    options = snippet.options
    if "norun" in options:
        pytest.skip(f"not run: {options['norun']}")
    for module in options.get("requires", "").split():
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:  # a bare directory on sys.path (tests/nvflare/) is no package
            pytest.skip(f"needs {module}")
    error, output = worker.run(snippet, tmp_path)
    assert error is None, f"{snippet.id} failed:\n{snippet.code}\n--- output\n{output}\n--- error\n{error}"
