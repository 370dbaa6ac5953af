"""The code blocks of docs/testing.md run as written (the Flower ones need the extra)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_guide_has_its_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_code_block_runs(index: int) -> None:
    code = BLOCKS[index]
    if "fedcrypt.integrations.flower.testing" in code:
        pytest.importorskip("flwr")
    namespace: dict = {"__name__": f"docs_testing_block_{index}"}
    exec(compile(code, f"{DOC.name}[{index}]", "exec"), namespace)  # noqa: S102 - our own documentation
    machines = [v for k, v in namespace.items() if k.startswith("Test") and hasattr(v, "runTest")]
    for machine in machines:  # run the state machines the examples define, with few examples
        from hypothesis import settings

        machine.settings = settings(max_examples=5, stateful_step_count=15, deadline=None)
        machine("runTest").runTest()
    for name, value in namespace.items():
        if name.startswith("test_") and callable(value):
            value()
