"""Single-key CKKS for Flower's Message API (extras ``flower`` and ``he``): a transport over the
sans-IO round of :mod:`fedcrypt.he.round` (:class:`~._common.CoreMod`, :class:`~._common.CoreWorkflow`).

:class:`CkksMod` (instance :data:`ckks_mod`) keeps the node's
:class:`~fedcrypt.he.round.CkksClient` (the CKKS key with it) sealed in ``Context.state``;
:class:`CkksGrid` (with :class:`CkksWorkflow`) runs each strategy train round as one
:class:`~fedcrypt.he.round.CkksServer` round; the strategy receives one reply with
``sum(w x) / sum(w)`` (within :func:`fedavg_error_bound`) and ``M * sum(w/M)``. Wire format:
one ConfigRecord :data:`CKKS_RECORD` per message, ``stage`` and ``payload`` (a round message:
CONTEXT, DEAL, INSTALL, ENCRYPT, CONFIRM, DECRYPT), with the strategy's train records on
ENCRYPT requests and ``layout`` on their replies.

Nodes and server each hold a :class:`~fedcrypt.he.round.CkksConfig` (default
:func:`default_config`; a node's minimum of contributions is its own floor). The key comes
from a key file (``KeyOwner.to_bytes(include_secret_key=True)``, named by node or run config
``ckks-key-path`` or ``CkksMod(key_path=...)``) or, with ``key_setup="dealer"``, from a
dealer node in band. A roster (the node's credentials, :class:`~._common.CoreMod`;
``CkksConfig(roster=...)`` on the server) runs the malicious-server mode; without one, mod
and workflow log once that they run honest-but-curious (SECURITY.md: what each defends).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from fedcrypt.errors import SecretKeyError
from fedcrypt.he import AggregatorContext, CkksParams, KeyOwner, peek_header
from fedcrypt.he.round import CkksClient, CkksConfig, CkksServer, Stage, Upload, decode_message, fedavg_error_bound
from fedcrypt.identity import NodeIdentity

from ._common import CoreMod, CoreWorkflow, RoundReport, WorkflowGrid

from flwr.app import Context  # noqa: E402

__all__ = [
    "CKKS_RECORD", "CKKS_STATE", "default_config", "CkksMod", "ckks_mod", "CkksWorkflow", "CkksGrid", "CkksRoundReport",
    "fedavg_error_bound",
]

#: Name of the ConfigRecord that carries the CKKS round's messages.
CKKS_RECORD = "fedcrypt.ckks"
#: Name of the sealed record in ``Context.state`` with the node's client (its key included).
CKKS_STATE = "fedcrypt.ckks.state"
_KEY_PATH = "ckks-key-path"


def default_config(**changes: Any) -> CkksConfig:
    """The config :class:`CkksMod` and :class:`CkksWorkflow` use when given none: the ``compact``
    preset (N=8192, 128-bit security) for up to 100 uploads with ``|w/M x| <= 4``, ``M = 1000``,
    two decryptors, the dealer key set-up; ``changes`` replaces config fields."""
    return dataclasses.replace(CkksConfig(CkksParams.preset("compact", num_clients=100, clip=4.0, max_weight=1.0)), **changes)


class CkksMod(CoreMod[CkksConfig]):
    """A Flower ClientApp mod: the node side of fedcrypt's single-key CKKS round.

    Math and threat model: those of :class:`~fedcrypt.he.round.CkksClient` (symmetric RLWE
    encryption of ``w/M * [x, metrics, 1]``, flooded decryption of a sum; with a roster,
    signed key transport and uploads, and decryptors that sum the confirmed uploads).

    Args:
        config: the round's config on this node (default :func:`default_config`).
        key_path: a key file used when neither node nor run config names ``ckks-key-path``.
        allow_plaintext, weight_key, state_key_path, identity_path, roster_path,
            roster_digest: see :class:`~._common.CoreMod`.
    """

    RECORD, STATE, STAGES, TRAIN_STAGE, LABEL = CKKS_RECORD, CKKS_STATE, Stage, Stage.ENCRYPT, "ckks"
    SENDS = "this client only sends encrypted updates"
    CLIENT, CONFIG, DECODE = CkksClient, CkksConfig, decode_message

    def __init__(self, config: CkksConfig | None = None, *, key_path: str | os.PathLike[str] | None = None, **options: Any) -> None:
        super().__init__(config if config is not None else default_config(), **options)
        if key_path is not None and not isinstance(key_path, (str, os.PathLike)):
            raise TypeError(f"key_path must be a path or None, got {type(key_path).__name__}")
        self.key_path = None if key_path is None else os.fspath(key_path)

    def __repr__(self) -> str:
        return (f"CkksMod(key_path={'<set>' if self.key_path else None}, key_setup={self.config.key_setup!r}, "
                f"min_contributions={self.config.min_contributions}, allow_plaintext={self.allow_plaintext})")

    def _new_client(self, ctxt: "Context", config: CkksConfig, identity: NodeIdentity | None) -> CkksClient:
        """A new client, with the key file's key (node config, run config, then ``key_path``) if there is one."""
        path = self.key_path
        for source in (ctxt.run_config, ctxt.node_config):
            value = source.get(_KEY_PATH) if source is not None else None
            path = value if isinstance(value, str) and value else path
        key = None
        if path is not None:
            try:
                with open(path, "rb") as handle:
                    key = KeyOwner.from_bytes(handle.read(1 << 26))  # bounded: a key file is far smaller
            except OSError as exc:
                raise SecretKeyError(f"node {ctxt.node_id}: cannot read its CKKS key file ({type(exc).__name__})") from None
        return CkksClient(config, ctxt.node_id, identity=identity, key=key)


#: The default mod: ``ClientApp(mods=[ckks_mod])`` (a key file via ``ckks-key-path``, else a dealer).
ckks_mod = CkksMod()


@dataclass
class CkksRoundReport(RoundReport):
    """A CKKS round's :class:`~._common.RoundReport`, with the core round's public facts: the
    nodes that held the key at ENCRYPT (``holders``), the decryptors used, the dealer then
    the installers when the key was dealt (``dealt``) and the key's fingerprint (hex)."""

    holders: list[int] = field(default_factory=list)
    decryptors: list[int] = field(default_factory=list)
    dealt: list[int] = field(default_factory=list)
    fingerprint: str = ""


class CkksWorkflow(CoreWorkflow[CkksConfig]):
    """The server side of fedcrypt's single-key CKKS round over a Flower ``Grid``.

    Math and threat model: those of :class:`~fedcrypt.he.round.CkksServer` (it never holds
    the secret key); the public context pinned by one round goes to the next.

    Args:
        config: the round's config (default :func:`default_config`); ``config.roster`` runs
            the malicious-server mode.
        stage_timeout: seconds to wait for the replies of one stage.
        train_timeout: seconds to wait at ENCRYPT (nodes train then); default the strategy's
            timeout, else ``stage_timeout``.
        poll_interval: seconds between two pulls of replies.
    """

    RECORD, REPORT, LABEL, SERVER, DECODE, CARRY = CKKS_RECORD, CkksRoundReport, "ckks", CkksServer, decode_message, "context"
    CONFIG, DEFAULT = CkksConfig, staticmethod(default_config)

    @property
    def aggregator(self) -> AggregatorContext | None:
        """The public CKKS context pinned by the rounds so far (``None`` before the key set-up)."""
        return None if self._carried is None else AggregatorContext.from_bytes(self._carried)

    def _upload_layout(self, upload: Upload) -> tuple[bytes | None, int | None]:
        header = peek_header(upload.blob)
        return header.spec_digest, header.length


class CkksGrid(WorkflowGrid):
    """A ``Grid`` whose train rounds are fedcrypt CKKS rounds (see :class:`~._common.WorkflowGrid`):
    ``strategy.start(grid=CkksGrid(grid, CkksWorkflow(...)), ...)``; the ClientApp adds :data:`ckks_mod`."""

    WORKFLOW = CkksWorkflow
