"""Differential privacy: clipping, central and distributed noise, accounting, a budget ledger.

Extra ``dp`` (dp-accounting). What each part is:

* :mod:`~fedcrypt.dp.clipping` - per-client L2 clipping, adaptive clipping (Andrew et al.);
* :mod:`~fedcrypt.dp.central` - the central Gaussian mechanism on the aggregate;
* :mod:`~fedcrypt.dp.distributed` - distributed discrete Gaussian / Skellam under secure
  aggregation (client ``encode`` into the ring, server ``decode`` of the ring sum);
* :mod:`~fedcrypt.dp.samplers` - exact integer samplers on a cryptographic source;
* :mod:`~fedcrypt.dp.accounting` - :func:`epsilon`, :func:`calibrate`, any DpEvent's cost;
* :mod:`~fedcrypt.dp.events` - DpEvents of the distributed mechanisms, canonical JSON;
* :mod:`~fedcrypt.dp.ledger` - :class:`PrivacyLedger`, a durable budget that cannot overspend.

Invariants: importing this package is cheap (names resolve lazily on first use) and
never imports torch or flwr; a missing dp-accounting raises
:class:`~fedcrypt.errors.MissingExtraError` naming the ``dp`` extra when accounting is
first used. Privacy noise is drawn only from :class:`~fedcrypt.dp._random.CryptoRandom`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "epsilon": "fedcrypt.dp.accounting",
    "calibrate": "fedcrypt.dp.accounting",
    "event_epsilon": "fedcrypt.dp.accounting",
    "gaussian_rounds_event": "fedcrypt.dp.accounting",
    "clip_l2": "fedcrypt.dp.clipping",
    "clip_l2_with_report": "fedcrypt.dp.clipping",
    "AdaptiveClipper": "fedcrypt.dp.clipping",
    "GaussianMechanism": "fedcrypt.dp.central",
    "DistributedDpConfig": "fedcrypt.dp.distributed",
    "DistributedDp": "fedcrypt.dp.distributed",
    "DistributedDiscreteGaussianDpEvent": "fedcrypt.dp.events",
    "SkellamDpEvent": "fedcrypt.dp.events",
    "PrivacyLedger": "fedcrypt.dp.ledger",
    "CryptoRandom": "fedcrypt.dp._random",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedcrypt.dp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
