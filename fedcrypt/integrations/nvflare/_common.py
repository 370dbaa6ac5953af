"""What the FLARE adapters share: the report, strict fields, the model and its layout, the user's
functions, the rounds' loop and one stage's exchange: a call of every site's published method
with its own request (bytes, ints; the model's arrays at the training stage), replies handed to
the round core as they arrive; a site that fails, times out or is refused is dropped. No crypto."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from fedcrypt._optional import require
from fedcrypt.errors import FedcryptError, MalformedMessageError
from fedcrypt.integrations._report import RoundReport as BaseReport, check_number, save_arrays, site_floor  # noqa: F401 (secagg's)
from fedcrypt.secagg.membership import pack_members, unpack_members
from fedcrypt.vectors import TensorSpec

require("nvflare.collab", "nvflare")

from nvflare.collab import collab  # noqa: E402

log = logging.getLogger("fedcrypt.integrations.nvflare")

#: Files the server writes into its run directory after the last round.
MODEL_FILE, REPORT_FILE = "fedcrypt_model.npz", "fedcrypt_rounds.json"
Model = dict[str, np.ndarray]


@dataclass
class RoundReport(BaseReport):
    """One round (:class:`fedcrypt.integrations._report.RoundReport`; its ``nodes`` are site names,
    also :attr:`sites`, the key of the report file) with the survivors' total weight and average
    metrics; with distributed DP, its noise."""

    weight: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    dp: dict[str, Any] | None = None

    @property
    def sites(self) -> list[str]:
        """The round's sites (``nodes``)."""
        return self.nodes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy, ``nodes`` named ``sites``."""
        return {"sites" if k == "nodes" else k: v for k, v in super().to_dict().items()}


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
    """The 64-bit run id every party of this FLARE job derives from the job id."""
    job_id = str(collab.fl_ctx.get_job_id()).encode("utf-8")
    return int.from_bytes(hashlib.sha256(b"fedcrypt/nvflare-job/v1" + job_id).digest()[:8], "big")


def model_digest(model: Mapping[str, np.ndarray]) -> bytes:
    """SHA-256 of a model (names in order, dtype, shape and bytes of each array)."""
    digest = hashlib.sha256(b"fedcrypt/nvflare-model/v1")
    for name in sorted(model):
        value = np.ascontiguousarray(model[name])
        for part in (name.encode("utf-8"), f"{value.dtype.str}|{value.shape}".encode("ascii"), value.tobytes()):
            digest.update(struct.pack(">Q", len(part)) + part)
    return digest.digest()


def check_model(model: Any, where: str) -> Model:
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
    return functools.reduce(getattr, attribute.split("."), importlib.import_module(module))


def flat(params: Model, metrics: dict[str, float]) -> tuple[np.ndarray, tuple[bytes, bytes]]:
    """``[x, metrics]`` (metrics in name order, float64) and its layout: the spec's and the names' bytes."""
    spec, names = TensorSpec.from_tensors(params), tuple(sorted(metrics))
    values = np.concatenate([spec.flatten(params).astype(np.float64), [metrics[n] for n in names]])
    return values, (spec.to_bytes(), pack_members(names))


def unflat(layout: tuple[bytes, bytes], average: np.ndarray, report: RoundReport) -> Model:
    """The model of an averaged ``[x, metrics]`` (the metrics into the report)."""
    spec, names = TensorSpec.from_bytes(layout[0]), unpack_members(layout[1])
    report.metrics = {name: float(v) for name, v in zip(names, average[spec.size:])}
    return spec.unflatten(average[: spec.size].astype(np.float32))


def reply_layout(reply: Mapping[str, Any], layouts: list[tuple[bytes, bytes]], where: str) -> tuple[tuple[bytes, bytes], int]:
    """A training reply's layout (the others' one, if ``layouts`` names it) and the length of its ``[x, metrics]``."""
    layout = (take(reply, "spec", bytes, where), take(reply, "metrics", bytes, where))
    if layouts and layout != layouts[0]:
        raise MalformedMessageError(f"{where}: its model layout differs from the other sites'")
    return layout, TensorSpec.from_bytes(layout[0]).size + len(unpack_members(layout[1]))


def _size(message: Any) -> int:
    return sum(len(v) for v in message.values() if isinstance(v, bytes)) if isinstance(message, dict) else 0


def exchange(method: str, requests: dict[str, dict[str, Any]], *, timeout: float, accept: Callable[[str, Any], None],
             report: RoundReport, stage: str) -> None:
    """Call ``method`` of every site with its request in parallel; hand each reply to ``accept`` in this thread
    as it arrives. A failed call drops the site; a reply ``accept`` raises on is refused (and dropped)."""
    proxies, start = {proxy.name: proxy for proxy in collab.clients}, time.monotonic()
    report.bytes_down += sum(_size(r) for r in requests.values())
    with ThreadPoolExecutor(max_workers=max(1, len(requests)), thread_name_prefix="fedcrypt-nvflare") as pool:
        futures = {pool.submit(lambda s, r: getattr(proxies[s](timeout=timeout), method)(request=r), site, request): site
                   for site, request in requests.items()}
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
            except Exception as exc:  # refused by the core, or malformed
                log.warning("fedcrypt %s: the reply of site %s was refused: %s", stage, site, type(exc).__name__)
                report.refused.setdefault(site, f"{type(exc).__name__}: {exc}")
                report.dropped.setdefault(site, stage)
    report.stage_seconds[stage] = report.stage_seconds.get(stage, 0.0) + time.monotonic() - start


class RoundsServer:
    """A server object's ``@collab.main``: ``num_rounds`` rounds (``_round``) over every connected site; then
    the model and reports go to the run directory (:data:`MODEL_FILE`, :data:`REPORT_FILE`), :attr:`model`, :attr:`reports`."""

    model: Model | None = None

    def _settings(self, initial_model: str, num_rounds: int, max_weight: float, stage_timeout: float,
                  train_timeout: float | None) -> None:
        if not isinstance(initial_model, str):
            raise TypeError("initial_model names a function: 'package.module:function'")
        check_number("num_rounds", num_rounds, minimum=1)
        check_number("max_weight", max_weight)
        check_number("stage_timeout", stage_timeout)
        check_number("train_timeout", train_timeout, optional=True)
        # FLARE exports a component's constructor arguments from the attributes of the same names
        self.initial_model, self.num_rounds, self.max_weight = initial_model, num_rounds, max_weight
        self.stage_timeout, self.train_timeout = stage_timeout, train_timeout
        self.reports: list[RoundReport] = []

    @collab.main
    def run(self) -> list[dict[str, Any]]:
        """Run the rounds; save the final model and the reports; return the reports."""
        model = check_model(load(self.initial_model)(), "initial_model")
        sites, run_id, self.reports = sorted(proxy.name for proxy in collab.clients), job_run_id(), []
        if getattr(self, "_roster", None) is None:
            log.warning("fedcrypt %s: no roster: the rounds run honest-but-curious", type(self).__name__)
        for round_id in range(1, self.num_rounds + 1):
            self.reports.append(report := RoundReport(round_id, list(sites)))
            try:
                model = self._round(model, sites, round_id, run_id, report)  # type: ignore[attr-defined]
            except (FedcryptError, ValueError) as exc:  # the round cannot finish: the model stays
                report.aborted = f"{type(exc).__name__}: {exc}"
                log.warning("fedcrypt round %d aborted: %s", round_id, report.aborted)
        self.model = model
        run_dir = collab.workspace.get_run_dir(collab.fl_ctx.get_job_id())
        os.makedirs(run_dir, exist_ok=True)
        save_arrays(os.path.join(run_dir, MODEL_FILE), model)  # np.savez(**model) loses a layer named 'allow_pickle'
        with open(os.path.join(run_dir, REPORT_FILE), "w", encoding="utf-8") as out:
            json.dump([r.to_dict() for r in self.reports], out, indent=1)
        return [r.to_dict() for r in self.reports]


class TrainingClient:
    """A site object's local update: ``train`` names ``function(model, info)`` (``info``: round
    and site) returning ``(params, weight)`` or ``(params, weight, metrics)``; or override :meth:`fit`."""

    train: str | None

    def fit(self, model: Model, info: dict[str, Any]) -> tuple:
        """The local update: the ``train`` function's (override to train here instead)."""
        if self.train is None:
            raise TypeError(f"{type(self).__name__} needs train='package.module:function' or a subclass overriding fit()")
        return load(self.train)(model, info)

    def update(self, model: Model, round_id: int, max_weight: float, where: str) -> tuple[Model, float, dict[str, float]]:
        """Train on the global model; the checked ``(params, weight, metrics)``."""
        reply = self.fit(check_model(model, where), {"round": round_id, "site": collab.site_name})
        if not isinstance(reply, tuple) or len(reply) not in (2, 3):
            raise TypeError(f"{where}: train must return (params, weight) or (params, weight, metrics)")
        params, weight, metrics = check_model(reply[0], where), reply[1], reply[2] if len(reply) == 3 else {}
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= max_weight:
            raise ValueError(f"{where}: the weight must be a number in (0, max_weight={max_weight}], got {weight!r}")
        if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
            raise TypeError(f"{where}: metrics must be a dict of names to numbers")
        return params, float(weight), {str(k): float(v) for k, v in metrics.items()}
