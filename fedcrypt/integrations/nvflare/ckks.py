"""Single-key CKKS over FLARE's Collab API: a transport over :mod:`fedcrypt.he.round`. Each stage of a
:class:`fedcrypt.he.round.CkksServer` is one call of each addressed site's :meth:`CkksClient.fedcrypt_ckks`; the site keeps its
round client (and key) in memory and at ENCRYPT trains and uploads the encryption of ``w/M * [x, metrics, 1]``. Requests:
``payload`` (+ ``arrays`` at ENCRYPT); replies: ``payload`` (+ ``spec``, ``metrics``, whose digest the upload carries). Server and
sites pass the same ``ckks`` settings (:func:`ckks_config`'s)."""

from __future__ import annotations

import hashlib
import warnings
from functools import partial
from pathlib import Path
from typing import Any

from fedcrypt.errors import HonestButCuriousWarning, MalformedMessageError, SpecMismatchError
from fedcrypt.he import CkksParams, KeyOwner, peek_header
from fedcrypt.he import round as core
from fedcrypt.he.round import CkksConfig, Stage, decode_message

from ._common import Model, RoundReport, RoundsServer, TrainingClient, collab, exchange, fields, flat, log, reply_layout, take, unflat

__all__ = ["CkksServer", "CkksClient", "ckks_config", "site_node", "METHOD"]

#: The published site method every stage calls.
METHOD = "fedcrypt_ckks"
_STAGE, _TRAIN = frozenset({"payload"}), frozenset({"payload", "arrays"})


def ckks_config(preset: str = "compact", max_clients: int = 100, clip: float = 4.0, max_weight: float = 1000.0,
                min_contributions: int = 2, decryptors: int = 2, key_setup: str = "dealer") -> CkksConfig:
    """The round's config: a :class:`~fedcrypt.he.CkksParams` preset for up to ``max_clients``
    uploads of ``|w/M x| <= clip``, and the round's own fields (:class:`~fedcrypt.he.round.CkksConfig`)."""
    params = CkksParams.preset(preset, num_clients=max_clients, clip=clip, max_weight=1.0)
    return CkksConfig(params, min_contributions=min_contributions, max_weight=max_weight, decryptors=decryptors, key_setup=key_setup)


def site_node(site: str) -> int:
    """A site's node id in the round: 64 bits of a hash of its FLARE name (stable across rounds)."""
    return int.from_bytes(hashlib.sha256(b"fedcrypt/nvflare-site/v1" + site.encode("utf-8")).digest()[:8], "big")


def _layout_digest(layout: tuple[bytes, bytes]) -> bytes:
    return hashlib.sha256(b"fedcrypt/nvflare-ckks-layout/v1" + len(layout[0]).to_bytes(4, "big") + layout[0] + layout[1]).digest()


class CkksServer(RoundsServer):
    """The server of fedcrypt's single-key CKKS round as a Collab server object (it never holds
    the secret key; the public context pinned by one round goes to the next). Args: as
    :class:`~.secagg.SecAggServer`'s; ``ckks``: :func:`ckks_config`'s arguments (the sites' too)."""

    def __init__(self, initial_model: str, num_rounds: int = 2, ckks: dict | None = None, stage_timeout: float = 60.0,
                 train_timeout: float | None = None) -> None:
        self.ckks, self._config = ckks, ckks_config(**(ckks or {}))
        self._context: bytes | None = None  # the public context the last round pinned
        self._settings(initial_model, num_rounds, self._config.max_weight, stage_timeout, train_timeout)

    def _round(self, model: Model, sites: list[str], round_id: int, run_id: int, report: RoundReport) -> Model:
        nodes = {site_node(site): site for site in sites}
        layouts: dict[bytes, tuple[bytes, bytes]] = {}  # by digest: the core takes the most common one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once at start-up
            server = core.CkksServer(self._config, sorted(nodes), round_id=round_id, context=self._context)
        outgoing = server.begin()
        try:
            while server.stage not in (Stage.DONE, Stage.ABORTED):
                stage, encrypt = server.stage, server.stage is Stage.ENCRYPT
                requests = {nodes[n]: {"payload": m.to_bytes(), **({"arrays": model} if encrypt else {})} for n, m in outgoing.items()}
                exchange(METHOD, requests, timeout=(self.train_timeout or self.stage_timeout) if encrypt else self.stage_timeout,
                         accept=partial(self._accept, server, layouts), report=report, stage=stage.name)
                outgoing = server.end_stage()
        finally:
            self._context = server.context or self._context
            for name in ("dropped", "refused"):
                for node, why in getattr(server.report, name).items():
                    getattr(report, name).setdefault(nodes[node], why)
        result = server.result
        report.survivors, report.weight = sorted(nodes[n] for n in result.contributors), float(result.total_weight)
        return unflat(layouts[result.layout], result.mean, report)

    @staticmethod
    def _accept(server: core.CkksServer, layouts: dict[bytes, tuple[bytes, bytes]], site: str, reply: Any) -> None:
        """Feed one reply to the round; an upload must carry the digest and length of its layout."""
        where, encrypt = f"reply of site {site}", server.stage is Stage.ENCRYPT
        message = decode_message(take(fields(reply, frozenset({"payload", "spec", "metrics"} if encrypt else {"payload"}), where),
                                      "payload", bytes, where))
        if encrypt:
            layout, length = reply_layout(reply, [], where)
            header = peek_header(message.blob) if isinstance(message, core.Upload) else None
            if header is None or header.spec_digest != _layout_digest(layout) or header.length != length + 1:
                raise SpecMismatchError(f"{where}: the upload does not carry its layout's digest and length")
        server.receive(message, sender=site_node(site))
        if encrypt:
            layouts.setdefault(_layout_digest(layout), layout)


class CkksClient(TrainingClient):
    """A site of fedcrypt's single-key CKKS round as a Collab client object (see :class:`~._common.TrainingClient`); ``ckks``: the
    server's settings; ``key_path``: the group's key file (``KeyOwner.to_bytes(include_secret_key=True)``, ``key_setup="file"``);
    without one the site gets the key from a dealer site in band."""

    def __init__(self, train: str | None = None, ckks: dict | None = None, key_path: str | None = None) -> None:
        self.train, self.ckks, self.key_path = train, ckks, key_path
        self._core: core.CkksClient | None = None
        self._config = ckks_config(**(ckks or {}))

    @collab.publish
    def fedcrypt_ckks(self, request: dict) -> dict:
        """Answer one stage of the server's round."""
        where = f"server request to site {(site := collab.site_name)}"
        if not isinstance(request, dict) or not isinstance(request.get("payload"), bytes):
            raise MalformedMessageError(f"{where}: no payload", party=site)
        message = decode_message(request["payload"])
        encrypt, reply = message.STAGE is Stage.ENCRYPT, {}
        fields(request, _TRAIN if encrypt else _STAGE, where)
        if self._core is None:
            key = None if self.key_path is None else KeyOwner.from_bytes(Path(self.key_path).read_bytes())
            log.warning("fedcrypt ckks: site %s has no roster: it runs honest-but-curious", site)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once above
                self._core = core.CkksClient(self._config, site_node(site), key=key)
        if encrypt:
            params, weight, metrics = self.update(request["arrays"], message.round_id, self._config.max_weight, where)
            values, (reply["spec"], reply["metrics"]) = flat(params, metrics)
            self._core.set_input(values, weight, layout=_layout_digest((reply["spec"], reply["metrics"])))
        reply["payload"] = self._core.handle(message).to_bytes()
        return reply
