"""What the NVIDIA FLARE adapters share: the round report, strict request fields, the job's
run id, the model digest, the user's train and model functions, one stage's exchange with
every site (replies folded as they arrive) and the server's output files. No cryptography.

Transport: FLARE's Collab API (``nvflare.collab``, 2.9). The server object's
``@collab.main`` runs the rounds; each stage calls one published method of every site with
that site's request (a dict of bytes, ints and, at the training stage, the global model's
numpy arrays) and hands each reply to the round core in the order they arrive. FLARE
authenticates the site a reply comes from; nothing a site sends ends the run: a site that
fails, times out or answers something the core refuses is dropped and reported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import math
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from fedcrypt._optional import require
from fedcrypt.errors import MalformedMessageError

require("nvflare.collab", "nvflare")

from nvflare.collab import collab  # noqa: E402

log = logging.getLogger("fedcrypt.integrations.nvflare")

#: Files the server writes into its run directory after the last round.
MODEL_FILE, REPORT_FILE = "fedcrypt_model.npz", "fedcrypt_rounds.json"


@dataclass
class RoundReport:
    """What happened in one round (public information only).

    Attributes:
        round: the round id (1, 2, ...).
        sites: the round's sites, in client-id order.
        survivors: sites whose updates are in the result.
        dropped: site -> the stage it stopped answering in (or was refused in).
        refused: site -> why the core refused its reply (a typed error's text).
        stage_seconds: wall time per stage.
        aborted: ``"ErrorType: why"`` when the round produced no model, else ``None``.
        bytes_down / bytes_up: protocol payload bytes sent / received (the model excluded).
        weight: the survivors' total FedAvg weight; metrics: their weighted average metrics.
    """

    round: int
    sites: list[str]
    survivors: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    aborted: str | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    weight: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    dp: dict[str, Any] | None = None


def check_number(name: str, value: Any, *, minimum: int | None = None, optional: bool = False) -> None:
    """ValueError unless ``value`` is an integer ``>= minimum``, else a positive finite number (or None if ``optional``)."""
    if value is None and optional:
        return
    if minimum is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def fields(request: Any, expected: frozenset[str], where: str) -> dict[str, Any]:
    """``request`` if it is a dict with exactly the ``expected`` keys, else :class:`MalformedMessageError`."""
    if not isinstance(request, dict) or set(request) != expected:
        have = sorted(request) if isinstance(request, dict) else type(request).__name__
        raise MalformedMessageError(f"{where}: expected the fields {sorted(expected)}, got {have}")
    return request


def take(request: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    """A field of the given type (never a bool for an int), else :class:`MalformedMessageError`."""
    value = request[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedMessageError(f"{where}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def job_run_id() -> int:
    """The 64-bit run id every party of this FLARE job derives from the job id (bound into each round)."""
    job_id = str(collab.fl_ctx.get_job_id())
    return int.from_bytes(hashlib.sha256(b"fedcrypt/nvflare-job/v1" + job_id.encode("utf-8")).digest()[:8], "big")


def model_digest(model: Mapping[str, np.ndarray]) -> bytes:
    """SHA-256 of a model: names in order, dtype, shape and bytes of each array. Bound into the
    round, it makes a server that sends different models to different sites fail it."""
    digest = hashlib.sha256(b"fedcrypt/nvflare-model/v1")
    for name in sorted(model):
        value = np.ascontiguousarray(model[name])
        for part in (name.encode("utf-8"), f"{value.dtype.str}|{value.shape}".encode("ascii"), value.tobytes()):
            digest.update(struct.pack(">Q", len(part)) + part)
    return digest.digest()


def check_model(model: Any, where: str) -> dict[str, np.ndarray]:
    """A model: a non-empty dict of names to numeric numpy arrays."""
    if not isinstance(model, dict) or not model or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype.kind in "fiu" for k, v in model.items()):
        raise MalformedMessageError(f"{where}: a model is a non-empty dict of names to numeric numpy arrays")
    return model


def load(path: str) -> Any:
    """The object named ``"package.module:attribute"`` (how a job names the user's functions)."""
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError(f"expected 'package.module:attribute', got {path!r}")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def train_reply(reply: Any, max_weight: float, where: str) -> tuple[dict[str, np.ndarray], float, dict[str, float]]:
    """The user's train function's ``(params, weight)`` or ``(params, weight, metrics)``, checked."""
    if not isinstance(reply, tuple) or len(reply) not in (2, 3):
        raise TypeError(f"{where}: train must return (params, weight) or (params, weight, metrics)")
    params, weight, metrics = check_model(reply[0], where), reply[1], reply[2] if len(reply) == 3 else {}
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= max_weight:
        raise ValueError(f"{where}: the weight must be a number in (0, max_weight={max_weight}], got {weight!r}")
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
        raise TypeError(f"{where}: metrics must be a dict of names to numbers")
    return params, float(weight), {str(k): float(v) for k, v in metrics.items()}


def _size(message: Any) -> int:
    return sum(len(v) for v in message.values() if isinstance(v, bytes)) if isinstance(message, dict) else 0


def exchange(method: str, requests: dict[str, dict[str, Any]], *, timeout: float, accept: Callable[[str, Any], None],
             report: RoundReport, stage: str) -> None:
    """Call ``method`` of every site with its request in parallel; hand each reply to ``accept``
    (in this thread, as it arrives). A failed call is a dropped site; a reply ``accept`` raises
    on is a refused one. Returns once every call answered or timed out."""
    proxies, start = {proxy.name: proxy for proxy in collab.clients}, time.monotonic()

    def call(site: str, request: dict[str, Any]) -> Any:
        return getattr(proxies[site](timeout=timeout), method)(request=request)

    with ThreadPoolExecutor(max_workers=max(1, len(requests)), thread_name_prefix="fedcrypt-nvflare") as pool:
        futures = {pool.submit(call, site, request): site for site, request in requests.items() if site in proxies}
        report.bytes_down += sum(_size(r) for r in requests.values())
        for site in sorted(set(requests) - set(proxies)):
            report.dropped.setdefault(site, stage)
        for future in as_completed(futures):
            site = futures.pop(future)
            try:
                reply = future.result()
            except Exception as exc:  # the site failed, timed out or is gone
                log.warning("fedcrypt %s: site %s did not answer: %s", stage, site, type(exc).__name__)
                report.dropped.setdefault(site, stage)
                continue
            report.bytes_up += _size(reply)
            try:
                accept(site, reply)
            except Exception as exc:  # refused by the core or malformed: the site counts as dropped
                log.warning("fedcrypt %s: the reply of site %s was refused: %s", stage, site, type(exc).__name__)
                report.refused.setdefault(site, f"{type(exc).__name__}: {exc}")
                report.dropped.setdefault(site, stage)
    report.stage_seconds[stage] = report.stage_seconds.get(stage, 0.0) + time.monotonic() - start


def save(model: Mapping[str, np.ndarray], reports: list[RoundReport]) -> str:
    """Write the final model and the rounds' reports into the server's run directory; return it."""
    run_dir = collab.workspace.get_run_dir(collab.fl_ctx.get_job_id())
    os.makedirs(run_dir, exist_ok=True)
    np.savez(os.path.join(run_dir, MODEL_FILE), **dict(model))
    with open(os.path.join(run_dir, REPORT_FILE), "w", encoding="utf-8") as out:
        json.dump([dataclasses.asdict(r) for r in reports], out, indent=1)
    return run_dir
