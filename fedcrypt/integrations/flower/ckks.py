"""Single-key CKKS for Flower's Message API (extras ``flower`` and ``he``): a transport over the
sans-IO round of :mod:`fedcrypt.he.round`.

* :class:`CkksMod` (instance :data:`ckks_mod`), a ClientApp mod: it keeps the node's
  :class:`~fedcrypt.he.round.CkksClient` (the CKKS key with it) sealed in ``Context.state``
  (:mod:`._state`) and answers each request with the client's reply; at ENCRYPT it runs the
  app's own ``@app.train`` and hands the flattened reply ``[x, metrics]`` and its weight to
  the client, which uploads only the encryption of ``w/M * [x, metrics, 1]``.
* :class:`CkksGrid` (with :class:`CkksWorkflow` inside) wraps the ServerApp's ``Grid``: each
  strategy train round is one :class:`~fedcrypt.he.round.CkksServer` round, each reply is
  fed to it as it arrives, and the strategy receives one reply with the weighted average
  ``sum(w x) / sum(w)`` and the total weight ``M * sum(w/M)``.

Wire format (one ConfigRecord :data:`CKKS_RECORD` per message; the stages and messages are
the round's: CONTEXT, DEAL, INSTALL, ENCRYPT, CONFIRM, DECRYPT)::

    server -> node   stage, payload = the round message's bytes  (+ the strategy's train records at ENCRYPT)
    node -> server   stage, payload = the reply's bytes          (+ layout at ENCRYPT)

Settings: nodes and server each hold a :class:`~fedcrypt.he.round.CkksConfig` (default
:func:`default_config`); a node's minimum of contributions is its own floor. The key comes
from a key file (``KeyOwner.to_bytes(include_secret_key=True)``, named by node or run config
``ckks-key-path`` or ``CkksMod(key_path=...)``) or, with ``key_setup="dealer"``, from a
dealer node in band. A roster (node config ``fedcrypt-identity``, ``fedcrypt-roster``,
``fedcrypt-roster-digest``; ``CkksConfig(roster=...)`` on the server) runs the round's
malicious-server mode; without one the mod and the workflow log once that they run
honest-but-curious. SECURITY.md says what each mode defends.

Invariants:

* no protocol decision here: the dealer, the pinned key, the decryptors, their agreement and
  every guard are :class:`~fedcrypt.he.round.CkksClient`'s and :class:`~fedcrypt.he.round.CkksServer`'s;
* the server never holds a secret key;
* nothing a node sends ends the run: a refused reply drops that node and is reported;
* a node's client is written back only after it handled a message: a refused message
  changes nothing on the node;
* nothing secret is logged, put in an error or a ``repr``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fedcrypt.errors import FedcryptError, HonestButCuriousWarning, SecretKeyError, SpecMismatchError, UnexpectedMessageError
from fedcrypt.he import AggregatorContext, CkksParams, KeyOwner, peek_header
from fedcrypt.he.round import (
    CkksClient,
    CkksConfig,
    CkksServer,
    EncryptRequest,
    RoundReport,
    Stage,
    Upload,
    decode_message,
    fedavg_error_bound,
)

from ._common import (  # first: it checks the 'flower' extra
    Abort,
    Layout,
    ReportDict,
    RoundWorkflow,
    StagedMod,
    WorkflowGrid,
    _Next,
    average_reply,
    bytes_field,
    flat_update,
    log,
    run_app_train,
)
from ._state import keep, kept, node_state_key

from flwr.app import ConfigRecord, Context, Message  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

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
    """The config :class:`CkksMod` and :class:`CkksWorkflow` use when given none.

    The ``compact`` preset (N=8192, 128-bit security) for up to 100 uploads with
    ``|w/M x| <= 4``, ``M = 1000``, two decryptors, the dealer key set-up; ``changes``
    replaces :class:`~fedcrypt.he.round.CkksConfig` fields.
    """
    params = CkksParams.preset("compact", num_clients=100, clip=4.0, max_weight=1.0)
    return dataclasses.replace(CkksConfig(params), **changes)


# ============================================================================ node side
class CkksMod(StagedMod):
    """A Flower ClientApp mod that runs the node side of fedcrypt's single-key CKKS round.

    Math and threat model: those of :class:`~fedcrypt.he.round.CkksClient` (symmetric RLWE
    encryption of ``w/M * [x, metrics, 1]``, flooded decryption of a sum; with a roster,
    signed key transport and uploads and a decryptor that sums the confirmed uploads
    itself). The mod adds records and fields exactly as the wire format says.

    Args:
        config: the round's config on this node (default :func:`default_config`); its
            roster, if any, comes from the node's credentials below, not from here.
        key_path: a key file used when neither node nor run config names ``ckks-key-path``.
        allow_plaintext: pass a train message without :data:`CKKS_RECORD` to the app
            (never with a roster); default ``False``.
        weight_key: the MetricRecord key of the FedAvg weight.
        state_key_path: the key file that seals the node's client (node config
            ``fedcrypt-state-key`` first; see :mod:`._state`).
        identity_path, roster_path, roster_digest: the node's identity key file, the roster
            file and its SHA-256 (hex); node config ``fedcrypt-identity``, ``fedcrypt-roster``
            and ``fedcrypt-roster-digest`` take precedence.
    """

    RECORD = CKKS_RECORD
    STAGES = Stage
    SENDS = "this client only sends encrypted updates"
    TRAIN_STAGE = Stage.ENCRYPT
    LABEL = "ckks"

    def __init__(
        self,
        config: CkksConfig | None = None,
        *,
        key_path: str | os.PathLike[str] | None = None,
        allow_plaintext: bool = False,
        weight_key: str = "num-examples",
        state_key_path: str | os.PathLike[str] | None = None,
        identity_path: str | None = None,
        roster_path: str | None = None,
        roster_digest: str | None = None,
    ) -> None:
        if config is not None and not isinstance(config, CkksConfig):
            raise TypeError(f"config must be a CkksConfig or None, got {type(config).__name__}")
        if config is not None and config.roster is not None:
            raise ValueError("a node's roster comes from its credentials (fedcrypt-roster, pinned by digest), not its CkksConfig")
        if not isinstance(allow_plaintext, bool):
            raise TypeError(f"allow_plaintext must be a bool, got {type(allow_plaintext).__name__}")
        for name, path in (("key_path", key_path), ("state_key_path", state_key_path)):
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path or None, got {type(path).__name__}")
        self.config = config if config is not None else default_config()
        self.key_path = None if key_path is None else os.fspath(key_path)
        self.state_key_path = None if state_key_path is None else os.fspath(state_key_path)
        self.allow_plaintext, self.weight_key = allow_plaintext, weight_key
        self.identity_path, self.roster_path, self.roster_digest = identity_path, roster_path, roster_digest

    def __repr__(self) -> str:
        return (
            f"CkksMod(key_path={'<set>' if self.key_path else None}, key_setup={self.config.key_setup!r}, "
            f"min_contributions={self.config.min_contributions}, allow_plaintext={self.allow_plaintext})"
        )

    def _handle(self, msg: "Message", ctxt: "Context", record: ConfigRecord, stage: Stage, call_next: _Next) -> dict[str, Any]:
        node, where = ctxt.node_id, f"server message to node {ctxt.node_id}"
        request = decode_message(bytes_field(record, "payload", where))
        if request.STAGE is not stage:
            raise UnexpectedMessageError(f"{where}: a {type(request).__name__} in a {stage.name} message", party=node, stage=stage)
        roster, identity = self._credentials(ctxt)
        config = self.config if roster is None else dataclasses.replace(self.config, roster=roster)
        key = node_state_key(ctxt, key_path=self.state_key_path, identity_path=self.identity_path)
        state = kept(ctxt, key, CKKS_STATE)
        client = CkksClient.from_state_bytes(state, config=config, identity=identity) if state is not None else None
        if client is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once by _credentials
                client = CkksClient(config, node, identity=identity, key=self._key_file(ctxt))
        fields: dict[str, Any] = {}
        if isinstance(request, EncryptRequest):
            context = {"party": node, "round_id": request.round_id, "stage": stage}
            reply = run_app_train(msg, ctxt, call_next, CKKS_RECORD, **context)
            layout, values, weight = flat_update(reply, weight_key=self.weight_key, max_weight=config.max_weight, **context)
            client.set_input(values, weight, layout=layout.digest())
            fields["layout"] = layout.to_bytes()
        fields["payload"] = client.handle(request).to_bytes()
        keep(ctxt, key, CKKS_STATE, client.to_state_bytes())
        return fields

    def _key_file(self, ctxt: "Context") -> KeyOwner | None:
        """The key file's key (node config, run config, then ``key_path``), or None."""
        path = self.key_path
        for source in (ctxt.run_config, ctxt.node_config):
            value = source.get(_KEY_PATH) if source is not None else None
            path = value if isinstance(value, str) and value else path
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise SecretKeyError(f"node {ctxt.node_id}: cannot read its CKKS key file ({type(exc).__name__})") from None
        return KeyOwner.from_bytes(data)


#: The default mod: ``ClientApp(mods=[ckks_mod])`` (a key file via ``ckks-key-path``, else a dealer).
ckks_mod = CkksMod()


# ============================================================================ server side
@dataclass
class CkksRoundReport(ReportDict):
    """What happened in one CKKS round (public information only).

    Attributes:
        round: the strategy's server round.
        nodes: the round's node ids, ascending.
        holders: nodes that held the round's key at ENCRYPT.
        survivors: nodes whose uploads are in the sum.
        dropped: node -> the stage it stopped answering in (or was refused in).
        refused: node -> why its message was refused (a typed error's text).
        decryptors: nodes whose decryption was used.
        dealt: the dealer, then the nodes that installed its key, when the key was dealt.
        fingerprint: hex of the key's context fingerprint (public).
        stage_seconds: wall time per stage name.
        aborted: ``"ErrorType: why"`` when the round returned no reply, else ``None``.
        bytes_down / bytes_up: protocol payload bytes sent / received (train records excluded).
    """

    round: int
    nodes: list[int]
    holders: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    decryptors: list[int] = field(default_factory=list)
    dealt: list[int] = field(default_factory=list)
    fingerprint: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    aborted: str | None = None
    bytes_down: int = 0
    bytes_up: int = 0


class CkksWorkflow(RoundWorkflow):
    """The server side of fedcrypt's single-key CKKS round over a Flower ``Grid``.

    Math and threat model: those of :class:`~fedcrypt.he.round.CkksServer` (it never holds
    the secret key). This class moves bytes: one ``CkksServer`` per round with the
    strategy's round id, the public context pinned by the last round, every reply fed as it
    arrives, ``end_stage`` when a stage's replies are in or ``stage_timeout`` passed.

    Args:
        config: the round's config (default :func:`default_config`); ``config.roster`` runs
            the malicious-server mode.
        stage_timeout: seconds to wait for the replies of one stage.
        train_timeout: seconds to wait at ENCRYPT (nodes train then); default the
            strategy's timeout, else ``stage_timeout``.
        poll_interval: seconds between two pulls of replies.
    """

    RECORD = CKKS_RECORD
    REPORT = CkksRoundReport
    LABEL = "ckks"
    REPLY_FIELDS = {Stage.ENCRYPT.name: frozenset({"stage", "payload", "layout"})}

    def __init__(
        self,
        config: CkksConfig | None = None,
        *,
        stage_timeout: float = 60.0,
        train_timeout: float | None = None,
        poll_interval: float = 3.0,
    ) -> None:
        if config is not None and not isinstance(config, CkksConfig):
            raise TypeError(f"config must be a CkksConfig or None, got {type(config).__name__}")
        for name, value in (("stage_timeout", stage_timeout), ("train_timeout", train_timeout), ("poll_interval", poll_interval)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        super().__init__()
        self.config = config if config is not None else default_config()
        self.stage_timeout = float(stage_timeout)
        self.train_timeout = None if train_timeout is None else float(train_timeout)
        self.poll_interval = float(poll_interval)
        self._context: bytes | None = None
        if self.config.roster is None:
            log.warning(
                "fedcrypt ckks: no roster: the workflow runs honest-but-curious (nodes trust the server to relay "
                "keys and aggregates honestly); CkksConfig(roster=...) runs the malicious-server mode"
            )

    def __repr__(self) -> str:
        return (
            f"CkksWorkflow(threat_model={self.config.threat_model!r}, key_setup={self.config.key_setup!r}, "
            f"decryptors={self.config.decryptors}, stage_timeout={self.stage_timeout})"
        )

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        """The fewest nodes and uploads a round needs (``config.min_contributions``)."""
        return self.config.min_contributions

    @property
    def max_weight(self) -> float:
        """``M`` (``config.max_weight``)."""
        return self.config.max_weight

    @property
    def aggregator(self) -> AggregatorContext | None:
        """The public CKKS context pinned by the rounds so far (``None`` before the key set-up)."""
        return None if self._context is None else AggregatorContext.from_bytes(self._context)

    def _round(
        self, grid: "Grid", nodes: list[int], by_node: dict[int, "Message"], round_id: int, report: CkksRoundReport,
        train_timeout: float,
    ) -> "Message":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HonestButCuriousWarning)  # logged once at start-up
            server = CkksServer(self.config, nodes, round_id=round_id, context=self._context)
        layouts: list[Layout] = []
        outgoing = server.begin()
        try:
            while server.stage not in (Stage.DONE, Stage.ABORTED):
                stage = server.stage
                encrypt = stage is Stage.ENCRYPT
                self._exchange(
                    grid, stage, {node: {"stage": stage.name, "payload": m.to_bytes()} for node, m in outgoing.items()}, report,
                    round_id=round_id, timeout=train_timeout if encrypt else None, extra=by_node if encrypt else None,
                    accept=partial(self._receive, server, layouts),
                )
                outgoing = server.end_stage()
        except FedcryptError as exc:  # the round cannot finish (end_stage says why)
            raise Abort(exc) from None
        finally:
            self._context = server.context or self._context
            _copy_report(server.report, report)
        result = server.result
        return average_reply(
            layouts[0], result.weighted_sum, max_weight=self.config.max_weight, run_id=grid.run.run_id, group=str(round_id),
            stage=Stage.DONE,
        )

    @staticmethod
    def _receive(server: CkksServer, layouts: list[Layout], node: int, record: ConfigRecord) -> None:
        """Feed one reply to the round; an upload must be bound to the layout it came with, the others' one."""
        where = f"reply from node {node}"
        message = decode_message(bytes_field(record, "payload", where))
        upload = server.stage is Stage.ENCRYPT and isinstance(message, Upload)
        if upload:
            layout = Layout.from_bytes(bytes_field(record, "layout", where))
            header = peek_header(message.blob)
            if (layouts and layout != layouts[0]) or header.spec_digest != layout.digest() or header.length != layout.dimension:
                raise SpecMismatchError(f"{where}: the upload is not bound to its layout, or its layout differs from the others'")
        server.receive(message, sender=node)
        if upload and not layouts:
            layouts.append(layout)


def _copy_report(core: RoundReport, report: CkksRoundReport) -> None:
    """The core round's report into the Flower round's (its own refusals and drops kept)."""
    report.holders, report.survivors = list(core.holders), list(core.contributors)
    report.decryptors, report.dealt, report.fingerprint = list(core.decryptors), list(core.dealt), core.fingerprint
    for node, why in core.refused.items():
        report.refused.setdefault(node, why)
    for node, stage in core.dropped.items():
        report.dropped.setdefault(node, stage)


class CkksGrid(WorkflowGrid):
    """A ``Grid`` whose train rounds are fedcrypt CKKS rounds (see :class:`~._common.WorkflowGrid`).

    ``strategy.start(grid=CkksGrid(grid, CkksWorkflow(...)), ...)`` is the whole change a
    ServerApp needs; the ClientApp adds :data:`ckks_mod`.
    """

    WORKFLOW = CkksWorkflow
