"""What every framework adapter shares: the public report of one round, the strict check of
a numeric setting, and a site's safety floors. No framework, no cryptography: a report holds
public facts only (who took part, who dropped where and why, time and bytes per round), never
a key, a share or a vector.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> None:
    """Write named arrays as an ``.npz`` that ``np.load(path)[name]`` reads back.

    ``np.savez(path, **arrays)`` takes the names as keywords, so a layer named ``file``
    fails and one named ``allow_pickle`` is dropped; this writes each member itself
    (``name.npy``, stored, no pickle). Raises ValueError on a name ``np.load`` would
    not give back (empty, a NUL, or one already ending in ``.npy``).
    """
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            if not isinstance(name, str) or not name or "\0" in name or name.endswith(".npy"):
                raise ValueError(f"array name {name!r} cannot be stored in an .npz")
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)


def check_number(name: str, value: Any, *, minimum: int | None = None, optional: bool = False) -> None:
    """ValueError unless ``value`` is an integer ``>= minimum``, else a positive finite number (or ``None`` if ``optional``)."""
    if value is None and optional:
        return
    if minimum is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        kind = "number of seconds" if name.endswith(("timeout", "interval")) else "finite number"
        raise ValueError(f"{name} must be a positive {kind}, got {value!r}")


def site_floor(name: str, job_value: int | float | None, *, integer: bool) -> int | float | None:
    """A node's safety floor (``max_colluders``, ``min_clients``, ``min_noise_multiplier``): the
    stricter (larger) of the job's value and ``FEDCRYPT_<NAME>`` in the node's environment.

    A job's arguments come from whoever submits it, who may be the server's operator; the
    node's operator pins a floor in the node's environment, which no job can lower (attacker
    review 5: a job declaring ``max_colluders=0`` or no DP floor).

    Raises:
        ValueError: the environment's value is not a number of the floor's kind (named).
    """
    variable = f"FEDCRYPT_{name.upper()}"
    raw = os.environ.get(variable)
    if raw is None or raw.strip() == "":
        return job_value
    try:
        pinned: int | float = int(raw) if integer else float(raw)
    except ValueError:
        raise ValueError(f"{variable} must be {'an integer' if integer else 'a number'}, got {raw!r}") from None
    check_number(variable, pinned, minimum=0 if integer else None)
    return pinned if job_value is None else max(job_value, pinned)


@dataclass
class RoundReport:
    """What happened in one round (public information only); each adapter and protection adds fields.

    Attributes:
        round: the round id.
        nodes: the round's parties (Flower node ids; FLARE site names, its ``sites``).
        survivors: parties whose updates are in the result.
        dropped: party -> the stage it stopped answering in (or was refused in).
        refused: party -> why its message was refused (a typed error's text).
        stage_seconds: wall time per stage name.
        aborted: ``"ErrorType: why"`` when the round produced no result (the model stayed), else ``None``.
        bytes_down / bytes_up: protocol payload bytes sent / received (the model and train records excluded).
    """

    round: int
    nodes: list[Any]
    survivors: list[Any] = field(default_factory=list)
    dropped: dict[Any, str] = field(default_factory=dict)
    refused: dict[Any, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    aborted: str | None = None
    bytes_down: int = 0
    bytes_up: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy in field order (dict keys as strings, lists and dicts copied)."""
        out = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        return {k: {str(a): b for a, b in v.items()} if isinstance(v, dict) else list(v) if isinstance(v, list) else v for k, v in out.items()}
