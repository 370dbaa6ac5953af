"""What the framework adapters read of a CKKS round's config, for code generic over both round
protocols (:class:`~fedcrypt.he.round.CkksConfig` and
:class:`~fedcrypt.he.threshold.round.ThresholdConfig`). Types only: nothing here runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, TypeVar

from fedcrypt.identity import Roster

__all__ = ["RoundConfig", "ConfigT"]


class RoundConfig(Protocol):
    """A round's config: a dataclass (``dataclasses.replace`` gives it a roster) with these fields."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def roster(self) -> Roster | None: ...

    @property
    def min_contributions(self) -> int: ...

    @property
    def max_weight(self) -> float: ...

    @property
    def threat_model(self) -> str: ...


#: one round protocol's config type (an adapter class is generic in it)
ConfigT = TypeVar("ConfigT", bound=RoundConfig)
