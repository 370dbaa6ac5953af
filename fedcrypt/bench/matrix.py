"""The benchmark matrix: presets, interleaved repeats, medians, spreads and ratios to plaintext.

Invariants:

* Cells that share ``(n, d, dropout)`` form a group; a group always contains the plaintext
  cell, and its repeats are *interleaved* (repeat 1 of every protection, then repeat 2, ...)
  so that a change in the machine's load hits every protection of the group alike. The
  overhead ratios of a cell are its medians over the plaintext medians of its own group.
* Every cell reports the median, min and max over its repeats; the first run of each
  protection in a process (imports, key set-up, caches) is a discarded warm-up.
* Server memory is measured in one extra, separate run per cell (tracemalloc slows the
  timed code), and only for cells whose median step is below ``memory_max_s``.
* A cell that cannot run (missing extra, unsupported combination, estimated memory above
  ``max_memory_bytes``, a round aborted because too few clients survived) is kept as a row
  with ``status`` saying why; nothing is dropped silently.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

from fedcrypt.errors import RoundAbortedError

from .cells import PROTECTIONS, CellSpec, Inputs, StepCost, is_available, run_step

__all__ = ["SIZES", "ALL_PROTECTIONS", "Plan", "plan_for", "run_matrix", "COLUMNS"]

#: named vector lengths: LoRA adapters of real models (r = rank; q,v unless "-all").
SIZES: dict[str, int] = {
    "gpt2-r8": 294_912,
    "tinyllama-r8": 1_126_400,
    "llama2-7b-r8": 4_194_304,
    "llama2-7b-r16-all": 39_976_960,
}

ALL_PROTECTIONS = tuple(PROTECTIONS)


@dataclass
class Plan:
    """A set of cells with how to run them."""

    name: str
    cells: list[CellSpec]
    repeats: int
    memory_max_s: float = 10.0
    max_memory_bytes: float = 6e9


def _grid(
    protections: Iterable[str],
    ns: Iterable[int],
    ds: Iterable[int],
    dropouts: Iterable[float],
    bits: Iterable[int] = (32,),
    dp: Iterable[bool] = (False,),
    k: int | None = None,
) -> list[CellSpec]:
    cells = []
    for n in ns:
        for d in ds:
            for dropout in dropouts:
                for protection in protections:
                    masking = protection in ("secagg", "secagg+", "flower-secagg+")
                    for b in bits if masking and protection != "flower-secagg+" else (32,):
                        for noise in dp if protection in ("secagg", "secagg+") and b == 32 else (False,):
                            cells.append(CellSpec(protection, n, d, dropout, b, k if protection != "secagg" else None, noise))
    return cells


def plan_for(
    preset: str,
    *,
    protections: Sequence[str] | None = None,
    ns: Sequence[int] | None = None,
    ds: Sequence[int] | None = None,
    dropouts: Sequence[float] | None = None,
    bits: Sequence[int] | None = None,
    dp: Sequence[bool] | None = None,
    k: int | None = None,
    repeats: int | None = None,
) -> Plan:
    """The cells of a preset, with any axis overridden.

    Presets:

    * ``quick``: n in {4, 8, 16}, d in {8,192, 32,768}, dropout 0, plus dropout 0.25 at
      n = 8, bits 64 for fedcrypt's masking and distributed DP under SecAgg+ at n = 8, 3 repeats — under two minutes on a
      quiet two-core machine. Small d, so CKKS packs 2 or 8 ciphertexts.
    * ``doc``: what docs/performance.md shows: n = 10, d in the three LoRA sizes up to
      LLaMA-2-7B r=8, dropout 0 and 0.1, the masking protocols and plaintext (and n = 5,
      dropout 0 and 0.2 on the two smaller sizes, and distributed DP under SecAgg+ at n = 5 on
      those sizes); CKKS and TenSEAL at n = 2 (their
      per-client cost does not depend on n) and n = 4 on the smallest size; 2 repeats.
    * ``full``: n in {10, 50, 100}, d in every named LoRA size up to 39,976,960, dropout in
      {0, 0.1}, bits 32 and 64, every protection; 3 repeats (hours; cells whose estimated
      memory exceeds the limit are reported as skipped).
    """
    if preset == "quick":
        base = list(protections or ALL_PROTECTIONS)
        cells = _grid(base, ns or (4, 8, 16), ds or (8_192, 32_768), dropouts or (0.0,), bits or (32,), dp or (False,), k)
        if ns is None and dropouts is None:
            cells += _grid(base, (8,), ds or (8_192, 32_768), (0.25,), (32,), (False,), k)
        if ns is None and bits is None:
            cells += [replace(c, bits=64) for c in cells if c.n == 8 and c.dropout == 0.0 and c.protection in ("secagg", "secagg+")]
        if ns is None and dp is None and "secagg+" in base:
            cells += [replace(c, dp=True) for c in cells if c.n == 8 and c.dropout == 0.0 and c.protection == "secagg+" and c.bits == 32]
        return Plan("quick", _dedupe(cells), repeats or 3)
    if preset == "doc":
        masking = [p for p in (protections or ALL_PROTECTIONS) if p in ("plaintext", "secagg", "secagg+", "flower-secagg+")]
        he = [p for p in (protections or ALL_PROTECTIONS) if p in ("ckks", "tenseal")]
        sizes = ds or (SIZES["gpt2-r8"], SIZES["tinyllama-r8"], SIZES["llama2-7b-r8"])
        cells = _grid(masking, ns or (10,), sizes, dropouts or (0.0, 0.1), bits or (32,), dp or (False,), k)
        if ns is None:  # a second n on the smaller sizes, so that the cost model sees n vary
            cells += _grid(masking, (5,), [d for d in sizes if d < 2_000_000], dropouts or (0.0, 0.2), bits or (32,), dp or (False,), k)
            if dp is None and "secagg+" in masking:  # distributed DP's cost, on the smallest cell
                cells += [CellSpec("secagg+", 5, d, 0.0, 32, k, True) for d in sizes if d < 2_000_000]
        if he:
            cells += _grid(["plaintext", *he], (2,), sizes, (0.0,), (32,), (False,), k)
            cells += _grid(["plaintext", *he], (4,), [min(sizes)], (0.0,), (32,), (False,), k)
        return Plan("doc", _dedupe(cells), repeats or 2, memory_max_s=8.0)
    if preset == "full":
        cells = _grid(
            protections or ALL_PROTECTIONS,
            ns or (10, 50, 100),
            ds or tuple(SIZES.values()),
            dropouts or (0.0, 0.1),
            bits or (32, 64),
            dp or (False, True),
            k,
        )
        return Plan("full", _dedupe(cells), repeats or 3, memory_max_s=60.0)
    if preset == "custom":
        cells = _grid(protections or ALL_PROTECTIONS, ns or (4,), ds or (16_384,), dropouts or (0.0,), bits or (32,), dp or (False,), k)
        return Plan("custom", _dedupe(cells), repeats or 3)
    raise ValueError(f"unknown preset {preset!r}; known: quick, doc, full, custom")


def _dedupe(cells: list[CellSpec]) -> list[CellSpec]:
    seen: dict[CellSpec, None] = {}
    for cell in cells:
        seen.setdefault(cell, None)
    return list(seen)


def estimated_peak_bytes(spec: CellSpec) -> float:
    """A rough upper estimate of the process's memory for a cell (to skip what cannot fit)."""
    d, n = spec.d, spec.n
    inputs = min(n * d * 4, 1 << 28) + 2 * d * 4
    per = {
        "plaintext": 8 * d + 4 * d,
        "secagg": 16 * d * (spec.bits // 32) + 8 * d,
        "secagg+": 16 * d * (spec.bits // 32) + 8 * d,
        "flower-secagg+": 8 * d * 6,
        "ckks": 16 * d * 6,
        "tenseal": 82 * d * 4,
        "verified": 1024 * d,  # the aggregators hold every report and the verification temporaries
    }[spec.protection]
    return inputs + per + 8 * d  # + the float64 reference sum


#: the columns of the CSV file, in order.
COLUMNS = [
    "protection",
    "n",
    "d",
    "k",
    "dropout",
    "bits",
    "dp",
    "survivors",
    "repeats",
    "status",
    "client_s_median",
    "client_s_min",
    "client_s_max",
    "server_s_median",
    "server_s_min",
    "server_s_max",
    "bytes_up",
    "bytes_down",
    "bytes_up_per_param",
    "expansion_vs_plaintext",
    "server_peak_bytes",
    "error",
    "error_bound",
    "error_within_bound",
    "client_ratio_vs_plaintext",
    "server_ratio_vs_plaintext",
    "encrypt_s_median",
    "client_cpu_s_median",
    "client_cpu_s_min",
    "server_cpu_s_median",
    "server_cpu_s_min",
]


def _skip_reason(spec: CellSpec, plan: Plan) -> str | None:
    if not is_available(spec.protection):
        return f"skipped: optional package for {spec.protection} is not installed"
    if spec.dp:
        try:
            from fedcrypt import dp as _dp

            _dp.DistributedDp  # noqa: B018 - the distributed mechanism (dp issue)
        except (AttributeError, ImportError):
            return "skipped: fedcrypt.dp.DistributedDp is not available in this version"
    if spec.protection in ("secagg+", "flower-secagg+"):
        k = spec.degree
        if k < spec.n - 1 and ((spec.n * k) % 2 or k < math.ceil(math.log2(spec.n))):
            return f"skipped: no valid SecAgg+ graph for n={spec.n}, k={k}"
    if estimated_peak_bytes(spec) > plan.max_memory_bytes:
        return f"skipped: estimated memory {estimated_peak_bytes(spec) / 1e9:.1f} GB > limit {plan.max_memory_bytes / 1e9:.1f} GB"
    return None


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    return float(statistics.median(values)), float(min(values)), float(max(values))


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = None
        self._done = 0
        self._total = total
        self._enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def step(self, label: str) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.set_description(label[:40])
            self._bar.update(1)
        elif self._enabled:
            print(f"[{self._done}/{self._total}] {label}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_matrix(plan: Plan, *, progress: bool = True, on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every cell of ``plan``; one row (a dict with :data:`COLUMNS` and more) per cell.

    Args:
        plan: the cells, repeats and limits.
        progress: draw a progress bar on stderr.
        on_row: called with each finished row (for streaming output).
    """
    groups: dict[tuple[int, int, float], list[CellSpec]] = {}
    for cell in plan.cells:
        groups.setdefault((cell.n, cell.d, cell.dropout), []).append(cell)
    for key, cells in groups.items():
        if not any(c.protection == "plaintext" for c in cells):
            cells.insert(0, CellSpec("plaintext", key[0], key[1], key[2]))
    total = sum(len(cells) for cells in groups.values()) * (plan.repeats + 1)
    bar = _Progress(total, progress)
    rows: list[dict[str, Any]] = []
    warmed: set[tuple[str, int, bool]] = set()
    try:
        for (n, d, _dropout), cells in groups.items():
            inputs = Inputs(n, d)
            runnable = []
            skipped = {}
            for cell in cells:
                reason = _skip_reason(cell, plan)
                if reason is None:
                    runnable.append(cell)
                else:
                    skipped[cell] = reason
            for cell in runnable:
                if (cell.protection, cell.bits, cell.dp) not in warmed:
                    try:
                        run_step(CellSpec(cell.protection, 4, 4096, 0.0, cell.bits, None, cell.dp), Inputs(4, 4096))
                    except NotImplementedError:
                        pass  # reported by the cell itself below
                    warmed.add((cell.protection, cell.bits, cell.dp))
            samples: dict[CellSpec, list[StepCost]] = {c: [] for c in runnable}
            failed: dict[CellSpec, str] = {}
            for repeat in range(plan.repeats):
                for cell in runnable:
                    if cell in failed:
                        bar.step(f"{cell.protection} n={n} d={d}")
                        continue
                    try:
                        samples[cell].append(run_step(cell, inputs))
                    except NotImplementedError as exc:
                        failed[cell] = f"skipped: {exc}"
                    except RoundAbortedError as exc:  # e.g. a SecAgg+ neighbourhood lost too many
                        failed[cell] = f"aborted: {exc}"
                    bar.step(f"{cell.protection} n={n} d={d} r{repeat + 1}")
            memory: dict[CellSpec, float] = {}
            for cell in runnable:
                if cell not in failed and samples[cell]:
                    wall = statistics.median(s.client_s * n + s.server_s for s in samples[cell])
                    if wall <= plan.memory_max_s:
                        memory[cell] = run_step(cell, inputs, memory=True).server_peak_bytes
                bar.step(f"{cell.protection} memory")
            for cell in skipped:
                for _ in range(plan.repeats + 1):
                    bar.step(f"{cell.protection} skipped")
            base = samples.get(next((c for c in runnable if c.protection == "plaintext"), None), [])  # type: ignore[arg-type]
            base_client = statistics.median(s.client_s for s in base) if base else math.nan
            base_server = statistics.median(s.server_s for s in base) if base else math.nan
            base_up = base[0].bytes_up if base else math.nan
            for cell in cells:
                row = _row(
                    cell,
                    samples.get(cell, []),
                    skipped.get(cell) or failed.get(cell),
                    memory.get(cell, math.nan),
                    base_client,
                    base_server,
                    base_up,
                )
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            del inputs
    finally:
        bar.close()
    return rows


def _row(
    cell: CellSpec,
    samples: list[StepCost],
    reason: str | None,
    memory: float,
    base_client: float,
    base_server: float,
    base_up: float,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "protection": cell.protection,
        "n": cell.n,
        "d": cell.d,
        "k": cell.degree,
        "dropout": cell.dropout,
        "bits": cell.bits if cell.protection in ("secagg", "secagg+", "flower-secagg+") else "",
        "dp": "on" if cell.dp else "off",
        "repeats": len(samples),
    }
    if reason is not None or not samples:
        row["status"] = reason or "skipped: no sample"
        for column in COLUMNS:
            row.setdefault(column, "")
        return row
    client = _stats([s.client_s for s in samples])
    server = _stats([s.server_s for s in samples])
    last = samples[-1]
    encrypt = [s.extra["encrypt_s"] for s in samples if "encrypt_s" in s.extra]
    row.update(
        {
            "status": "ok",
            "survivors": last.survivors,
            "client_s_median": client[0],
            "client_s_min": client[1],
            "client_s_max": client[2],
            "server_s_median": server[0],
            "server_s_min": server[1],
            "server_s_max": server[2],
            "bytes_up": last.bytes_up,
            "bytes_down": last.bytes_down,
            "bytes_up_per_param": last.bytes_up / cell.d,
            "expansion_vs_plaintext": last.bytes_up / base_up if base_up else math.nan,
            "server_peak_bytes": memory,
            "error": max(s.error for s in samples),
            "error_bound": last.error_bound,
            "error_within_bound": all(s.error <= s.error_bound for s in samples),
            "client_ratio_vs_plaintext": client[0] / base_client if base_client else math.nan,
            "server_ratio_vs_plaintext": server[0] / base_server if base_server else math.nan,
            "encrypt_s_median": statistics.median(encrypt) if encrypt else "",
            "client_cpu_s_median": statistics.median(s.client_cpu_s for s in samples),
            "client_cpu_s_min": min(s.client_cpu_s for s in samples),
            "server_cpu_s_median": statistics.median(s.server_cpu_s for s in samples),
            "server_cpu_s_min": min(s.server_cpu_s for s in samples),
        }
    )
    return row
