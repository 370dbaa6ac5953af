"""A site that stops answering at chosen stages, and a server that swaps a site's view of its
peers' advertised keys, for FLARE jobs (imports nvflare)."""

from __future__ import annotations

import os
import time

from nvflare.collab import collab

import fedcrypt.integrations.nvflare.secagg as flare_secagg
from fedcrypt.crypto import X25519KeyPair
from fedcrypt.integrations.nvflare import SecAggClient, SecAggServer
from fedcrypt.secagg.messages import AdvertiseKeys, KeyDirectory


class DroppingClient(SecAggClient):
    """A site that stops answering at one stage of one round (``drops``: ``"site:round:STAGE"``
    entries): it raises, as a site whose process fails there does to the server."""

    def __init__(self, train: str | None = None, drops: str = "", identity: str | None = None, roster: str | None = None,
                 roster_digest: str | None = None) -> None:
        super().__init__(train, identity=identity, roster=roster, roster_digest=roster_digest)
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


class KeySwapServer(SecAggServer):
    """A malicious server (a man in the middle): at SHARE_KEYS it shows ``victim`` a peer's advert
    with a cipher key of its own in place of the peer's (the peer's signature kept), so that the
    victim would encrypt its shares for that peer to the server. Everything else is SecAggServer's."""

    def __init__(self, initial_model: str, num_rounds: int = 1, neighbours: int | None = None, threshold: float = 0.67,
                 clip: float = 4.0, stage_timeout: float = 60.0, roster: str | None = None, victim: str = "site-1") -> None:
        super().__init__(initial_model, num_rounds=num_rounds, neighbours=neighbours, threshold=threshold, clip=clip,
                         stage_timeout=stage_timeout, roster=roster)
        self.victim = victim

    def _round(self, *args, **kwargs):
        honest = flare_secagg.exchange

        def swapping(method: str, requests: dict, **options):
            request = requests.get(self.victim)
            if options["stage"] == "SHARE_KEYS" and request is not None:
                directory = KeyDirectory.from_bytes(request["payload"])
                adverts = list(directory.adverts)
                peer = next(i for i, a in enumerate(adverts) if a.sender != directory.recipient)
                a = adverts[peer]
                adverts[peer] = AdvertiseKeys(a.round_id, a.sender, X25519KeyPair.generate().public_bytes, a.mask_public_key,
                                              a.context, a.signature)
                request["payload"] = KeyDirectory(directory.round_id, directory.recipient, tuple(adverts)).to_bytes()
            return honest(method, requests, **options)

        flare_secagg.exchange = swapping
        try:
            return super()._round(*args, **kwargs)
        finally:
            flare_secagg.exchange = honest
