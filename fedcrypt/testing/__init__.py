"""Reusable adversarial and property-based tests for fedcrypt deployments (public API).

What is here, and what to point it at:

* :mod:`~fedcrypt.testing.transport` - :class:`ClientEndpoints`, the client side of a
  round as bytes in / bytes out, and :class:`InProcessClients` (real client objects);
  :class:`fedcrypt.integrations.flower.testing.FlowerClients` wraps a Flower ``ClientApp`` (extra
  ``flower``); implement the two methods for your own transport;
* :mod:`~fedcrypt.testing.malicious` - :class:`MaliciousServer`, a server test double
  that rewrites, repeats, withholds and forges requests, and the attacks of SECURITY.md
  (:data:`ATTACKS`, :class:`ReplayPreviousRound`, :class:`InconsistentModels`);
* :mod:`~fedcrypt.testing.dropout` - :func:`dropout_state_machine`, a hypothesis
  RuleBasedStateMachine with dropouts, replays and corrupted messages at every stage;
* :mod:`~fedcrypt.testing.strategies` - hypothesis strategies: flat vectors, LoRA specs,
  SecAgg configs, dropout schedules, malformed bytes.

Invariants: importing ``fedcrypt.testing`` is cheap and never imports torch, flwr or
hypothesis; names resolve on first use. The strategies and the state machine need
hypothesis: without it they raise :class:`~fedcrypt.errors.MissingExtraError` naming the
``testing`` extra (``pip install 'fedcrypt[testing]'``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClientEndpoints": "fedcrypt.testing.transport",
    "InProcessClients": "fedcrypt.testing.transport",
    "MaliciousServer": "fedcrypt.testing.malicious",
    "AttackReport": "fedcrypt.testing.malicious",
    "Refusal": "fedcrypt.testing.malicious",
    "ATTACKS": "fedcrypt.testing.malicious",
    "run_attack": "fedcrypt.testing.malicious",
    "BothSharesDirect": "fedcrypt.testing.malicious",
    "BothSharesSplit": "fedcrypt.testing.malicious",
    "SplitSurvivorViews": "fedcrypt.testing.malicious",
    "WithholdVictimShares": "fedcrypt.testing.malicious",
    "ReplayPreviousRound": "fedcrypt.testing.malicious",
    "KeySwapMitm": "fedcrypt.testing.malicious",
    "InconsistentModels": "fedcrypt.testing.malicious",
    "dropout_state_machine": "fedcrypt.testing.dropout",
    "flat_vectors": "fedcrypt.testing.strategies",
    "ring_vectors": "fedcrypt.testing.strategies",
    "lora_specs": "fedcrypt.testing.strategies",
    "secagg_configs": "fedcrypt.testing.strategies",
    "dropout_schedules": "fedcrypt.testing.strategies",
    "malformed": "fedcrypt.testing.strategies",
    "mutations": "fedcrypt.testing.strategies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedcrypt.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
