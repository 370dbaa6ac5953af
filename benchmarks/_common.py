"""Small helpers shared by the benchmark scripts: timing, result files, the machine."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Run ``fn`` ``warmup + repeats`` times; median, min and max of the timed runs (s)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples), "repeats": repeats}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": numpy.__version__,
    }


def write_result(name: str, payload: dict[str, Any], command: str) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the command that produced it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"command": command, "machine": machine(), "unix_time": time.time(), **payload}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path
