"""An in-process stand-in for FLARE 2.9's Collab runtime, enough to drive the fedcrypt FLARE
adapter's real server and site objects without FLARE's simulator: ``collab.site_name`` per
thread, ``collab.clients`` as proxies whose calls run the site object's published method with a
pickled copy of the request (as FLARE serialises it) and return a pickled copy of the reply,
``collab.fl_ctx.get_job_id()`` and ``collab.workspace.get_run_dir()``.

A test installs it with :func:`install` (monkeypatching the ``collab`` name of the adapter's
modules); a malicious server is the real server object plus a hook that rewrites the requests
of a stage (``Harness.rewrite``); a malicious site is any callable put in place of a site object.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import fedcrypt.integrations.nvflare._common as common
import fedcrypt.integrations.nvflare.ckks as flare_ckks
import fedcrypt.integrations.nvflare.secagg as flare_secagg

JOB_ID = "review5-job"


def copy(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


class _Ctx:
    def get_job_id(self) -> str:
        return JOB_ID


class _Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get_run_dir(self, job_id: str) -> str:
        return str(self.root / job_id)


@dataclass
class Harness:
    """The fake runtime: ``sites`` maps a site name to its site object (or to a callable
    ``(method, request) -> reply`` for a malicious site); ``rewrite(stage_name, requests)`` may
    change the server's requests of a stage before they go out (a malicious server)."""

    sites: dict[str, Any]
    root: Path
    rewrite: Callable[[str, dict[str, dict]], None] | None = None
    calls: list[tuple[str, str, Any]] = field(default_factory=list)  # (site, method, request) as sent
    errors: dict[str, list[BaseException]] = field(default_factory=dict)  # what each site raised

    def __post_init__(self) -> None:
        self._local = threading.local()
        self.fl_ctx = _Ctx()
        self.workspace = _Workspace(self.root)

    # the attributes of nvflare.collab.collab the adapter reads
    @property
    def site_name(self) -> str:
        return self._local.site

    @property
    def clients(self) -> list["_Proxy"]:
        return [_Proxy(self, name) for name in self.sites]

    def call(self, site: str, method: str, request: Any) -> Any:
        target = self.sites[site]
        request = copy(request)
        self.calls.append((site, method, request))
        self._local.site = site
        try:
            if callable(target) and not hasattr(target, method):
                return copy(target(method, request))
            return copy(getattr(target, method)(request=request))
        except BaseException as exc:
            self.errors.setdefault(site, []).append(exc)
            raise
        finally:
            self._local.site = None

    def as_site(self, site: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` with ``collab.site_name`` = ``site`` (a direct call of a site object)."""
        self._local.site = site
        try:
            return fn()
        finally:
            self._local.site = None


class _Proxy:
    def __init__(self, harness: Harness, name: str) -> None:
        self.harness, self.name = harness, name

    def __call__(self, timeout: float | None = None) -> "_Proxy":
        return self

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("__"):
            raise AttributeError(method)
        return lambda request: self.harness.call(self.name, method, request)


def install(monkeypatch: Any, harness: Harness) -> Harness:
    """Make the adapter's modules see ``harness`` as ``collab``; ``harness.rewrite`` hooks each stage."""
    honest = common.exchange

    def exchange(method: str, requests: dict, **options: Any) -> None:
        if harness.rewrite is not None:
            harness.rewrite(options["stage"], requests)
        return honest(method, requests, **options)

    for module in (common, flare_secagg, flare_ckks):
        monkeypatch.setattr(module, "collab", harness)
    for module in (flare_secagg, flare_ckks):
        monkeypatch.setattr(module, "exchange", exchange)
    return harness


# ----------------------------------------------------------------------------- the sites' training
def initial() -> dict[str, np.ndarray]:
    return {"a": np.zeros((3, 7), np.float32), "b": np.zeros(16, np.float32)}


def site_index(site: str) -> int:
    return int(site.rsplit("-", 1)[1])


def update_of(site: str, round_id: int, model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([site_index(site), round_id])
    return {name: (value + rng.uniform(-1, 1, value.shape)).astype(np.float32) for name, value in model.items()}


def weight_of(site: str) -> int:
    return 10 * site_index(site)


def train(model: dict[str, np.ndarray], info: dict) -> tuple:
    site = info["site"]
    return update_of(site, info["round"], model), weight_of(site), {"loss": float(site_index(site))}


def fedavg(sites: list[str], round_id: int, model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Plaintext FedAvg of ``sites``' updates of ``model`` (float64)."""
    weights = np.array([weight_of(s) for s in sites], dtype=np.float64)
    ups = [update_of(s, round_id, model) for s in sites]
    return {k: sum(w * u[k].astype(np.float64) for w, u in zip(weights, ups)) / weights.sum() for k in model}


def slow_train(model: dict[str, np.ndarray], info: dict) -> tuple:
    """:func:`train`, 0.15 s later (honest sites train; a malicious one answers at once)."""
    import time

    time.sleep(0.15)
    return train(model, info)


def renaming_train(model: dict[str, np.ndarray], info: dict) -> tuple:
    """For FLARE simulator jobs: ``site-2`` answers at once with its metric renamed (another layout of the
    same length); every other site trains honestly in 1.5 s."""
    import time

    params, weight, metrics = train(model, info)
    if info["site"] == "site-2":
        return params, weight, {"zzz": metrics["loss"]}
    time.sleep(1.5)
    return params, weight, metrics
