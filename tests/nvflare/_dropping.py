"""A site that stops answering at chosen stages, for FLARE jobs (imports nvflare)."""

from __future__ import annotations

import os
import time

from nvflare.collab import collab

from fedcrypt.integrations.nvflare import SecAggClient


class DroppingClient(SecAggClient):
    """A site that stops answering at one stage of one round (``drops``: ``"site:round:STAGE"``
    entries): it raises, as a site whose process fails there does to the server."""

    def __init__(self, train: str | None = None, drops: str = "") -> None:
        super().__init__(train)
        self.drops = drops

    @collab.publish
    def fedcrypt_secagg(self, request: dict) -> dict:
        here = f"{collab.site_name}:{request.get('round')}:{request.get('stage')}"
        if here in self.drops.split(","):
            time.sleep(0.2)
            raise RuntimeError(f"simulated dropout at {here}")
        return super().fedcrypt_secagg(request)


class PausingClient(SecAggClient):
    """A site that, at one stage of one round (``pause``: ``"site:round:STAGE"``), writes its process
    id to ``marker`` and waits there (up to ``hold`` seconds) for a test to kill its process."""

    def __init__(self, train: str | None = None, pause: str = "", marker: str = "", hold: float = 120.0) -> None:
        super().__init__(train)
        self.pause, self.marker, self.hold = pause, marker, hold

    @collab.publish
    def fedcrypt_secagg(self, request: dict) -> dict:
        if f"{collab.site_name}:{request.get('round')}:{request.get('stage')}" == self.pause:
            with open(self.marker + ".tmp", "w", encoding="utf-8") as out:
                out.write(f"{os.getpid()}\n")
            os.replace(self.marker + ".tmp", self.marker)
            time.sleep(self.hold)
            raise RuntimeError(f"paused past {self.hold} s at {self.pause}")
        return super().fedcrypt_secagg(request)
