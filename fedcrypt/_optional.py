"""Lazy imports of optional dependencies, failing with the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from fedcrypt.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``.

    Args:
        module: dotted module name, e.g. ``"tenseal"``.
        extra: the fedcrypt extra that installs it, e.g. ``"he"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and module.split(".")[0] != exc.name.split(".")[0]:
            # The module exists but one of *its* dependencies is broken: say so.
            raise MissingExtraError(module.split(".")[0], extra, f"while importing: {exc}") from exc
        raise MissingExtraError(module.split(".")[0], extra) from exc
