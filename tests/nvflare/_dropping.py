"""A site that stops answering at chosen stages, for FLARE jobs (imports nvflare)."""

from __future__ import annotations

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
