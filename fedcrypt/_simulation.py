"""What every protection's in-process ``simulate`` checks the same way (private, shared)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["check_dropouts"]


def check_dropouts(dropouts: Mapping[Any, Any] | None, n: int, droppable: Sequence[Any], *, party: str = "node") -> dict[Any, frozenset[int]]:
    """``simulate``'s ``dropouts`` argument checked: ``{stage: ids}`` with stages in
    ``droppable`` (one Enum type) and ids integers in ``[0, n)`` (``party`` names them).

    Raises:
        TypeError / ValueError: anything else.
    """
    if dropouts is None:
        return {}
    if not isinstance(dropouts, Mapping):
        raise TypeError(f"dropouts must be a mapping of Stage to sets of {party} ids, got {type(dropouts).__name__}")
    checked: dict[Any, frozenset[int]] = {}
    for stage, ids in dropouts.items():
        if stage not in droppable:
            raise ValueError(f"dropouts keys must be protocol stages {[s.name for s in droppable]}, got {stage!r}")
        members = frozenset(ids)
        if any(not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not 0 <= i < n for i in members):
            raise ValueError(f"dropout ids must be {party} ids in [0, {n})")
        checked[type(droppable[0])(stage)] = frozenset(int(i) for i in members)
    return checked
